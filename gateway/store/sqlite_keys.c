/*
 * sqlite_keys.c - the SQLite engine's keys operations (store.h, section
 * "keys"): on the store thread inside the batch's transaction like every other
 * operation, or on a connection of their own for `gateway keys` (the _sync
 * calls), which write the file beside a running gateway: WAL lets the
 * gateway's readers go on, the busy timeout waits for its write lock, and
 * keys_version tells its poll that something changed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sqlite_int.h"

#define BUSY_TIMEOUT_MS 5000 /* a sync call waits this long for the gateway's write lock */

#define KEY_COLS                                                                            \
    "name, sha256, rpm, burst, concurrency, daily_seconds, models, expires_at, created_at, " \
    "updated_at, revoked_at"

enum kstmt {
    K_PUT = 0,
    K_BUMP,
    K_GET,
    K_PATCH,
    K_REVOKE,
    K_LIST,
    K_VERSION,
    K_LAST_USED,
    K_RECENT_KEY,
    K_RECENT_ALL,
    K_COUNT,
};

_Static_assert(K_COUNT <= SQ_KEYS_STMTS, "SQ_KEYS_STMTS holds every statement");

static const char *const ksql[K_COUNT] = {
    [K_PUT] = "INSERT INTO keys(" KEY_COLS ") "
              "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, 0)",
    [K_BUMP] = "UPDATE keys_version SET version = version + 1 WHERE id = 1",
    [K_GET] = "SELECT " KEY_COLS " FROM keys WHERE name = ?1",
    /* ?2 is the patch's bit set: each column changes only if its bit is in it */
    [K_PATCH] = "UPDATE keys SET "
                "rpm = CASE WHEN ?2 & 1 THEN ?3 ELSE rpm END, "
                "burst = CASE WHEN ?2 & 2 THEN ?4 ELSE burst END, "
                "concurrency = CASE WHEN ?2 & 4 THEN ?5 ELSE concurrency END, "
                "daily_seconds = CASE WHEN ?2 & 8 THEN ?6 ELSE daily_seconds END, "
                "models = CASE WHEN ?2 & 16 THEN ?7 ELSE models END, "
                "expires_at = CASE WHEN ?2 & 32 THEN ?8 ELSE expires_at END, "
                "updated_at = ?9 WHERE name = ?1 AND revoked_at = 0",
    [K_REVOKE] = "UPDATE keys SET revoked_at = ?2, updated_at = ?2 "
                 "WHERE name = ?1 AND revoked_at = 0",
    [K_LIST] = "SELECT " KEY_COLS " FROM keys ORDER BY name",
    [K_VERSION] = "SELECT version FROM keys_version WHERE id = 1",
    /* jobs_by_key (key_name, created_at): one seek */
    [K_LAST_USED] = "SELECT max(created_at) FROM jobs WHERE key_name = ?1",
    /* after "SELECT <sq_job_cols>" (kstmt) */
    [K_RECENT_KEY] = " FROM jobs WHERE key_name = ?1 AND (?2 IS NULL OR status = ?2) "
                     "ORDER BY created_at DESC, seq DESC LIMIT ?3",
    [K_RECENT_ALL] = " FROM jobs WHERE (?2 IS NULL OR status = ?2) "
                     "ORDER BY seq DESC LIMIT ?3",
};

enum { /* the columns of KEY_COLS */
    KC_NAME = 0, KC_SHA, KC_RPM, KC_BURST, KC_CONC, KC_DAILY, KC_MODELS, KC_EXPIRES,
    KC_CREATED, KC_UPDATED, KC_REVOKED,
};

/* A statement of ours, prepared on first use (the file has the tables by then:
 * open migrated it), reset with its bindings cleared. NULL with op failed. */
static sqlite3_stmt *kstmt(struct sqlite_store *s, struct gw_store_op *op, enum kstmt id)
{
    sqlite3_stmt **st = &s->keys_st[id];

    if (*st == NULL) {
        char sql[1024];
        snprintf(sql, sizeof(sql), "SELECT %s%s", sq_job_cols, ksql[id]);
        if (sqlite3_prepare_v3(s->db, id >= K_RECENT_KEY ? sql : ksql[id], -1,
                               SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK) {
            gw_store_op_fail(op, "the job store failed: %s", sqlite3_errmsg(s->db));
            return NULL;
        }
    }
    sqlite3_reset(*st);
    sqlite3_clear_bindings(*st);
    return *st;
}

void sq_keys_finalize(struct sqlite_store *s)
{
    for (int i = 0; i < SQ_KEYS_STMTS; i++) {
        sqlite3_finalize(s->keys_st[i]);
        s->keys_st[i] = NULL;
    }
}

/* Step a statement that returns no row (or one we ignore). */
static int kdone(struct sqlite_store *s, struct gw_store_op *op, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);

    sqlite3_reset(st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW)
        return GW_OK;
    gw_store_op_fail(op, "the job store failed: %s", sqlite3_errmsg(s->db));
    return GW_ERR;
}

static int bump(struct sqlite_store *s, struct gw_store_op *op)
{
    sqlite3_stmt *st = kstmt(s, op, K_BUMP);

    return st != NULL ? kdone(s, op, st) : GW_ERR;
}

/* A row of KEY_COLS into k, its strings owned by op. */
static int row_key(struct gw_store_op *op, sqlite3_stmt *st, struct gw_store_key *k)
{
    const void *sha = sqlite3_column_blob(st, KC_SHA);

    memset(k, 0, sizeof(*k));
    k->name = gw_store_op_strdup(op, (const char *)sqlite3_column_text(st, KC_NAME),
                                 (size_t)sqlite3_column_bytes(st, KC_NAME));
    k->models = gw_store_op_strdup(op, (const char *)sqlite3_column_text(st, KC_MODELS),
                                   (size_t)sqlite3_column_bytes(st, KC_MODELS));
    if (k->name == NULL || k->models == NULL)
        return GW_ERR; /* op failed: out of memory */
    if (sha != NULL && sqlite3_column_bytes(st, KC_SHA) == (int)sizeof(k->sha256))
        memcpy(k->sha256, sha, sizeof(k->sha256));
    k->rpm = sqlite3_column_int64(st, KC_RPM);
    k->burst = sqlite3_column_int64(st, KC_BURST);
    k->concurrency = sqlite3_column_int64(st, KC_CONC);
    k->daily_seconds = sqlite3_column_int64(st, KC_DAILY);
    k->expires_at = sqlite3_column_int64(st, KC_EXPIRES);
    k->created_at = sqlite3_column_int64(st, KC_CREATED);
    k->updated_at = sqlite3_column_int64(st, KC_UPDATED);
    k->revoked_at = sqlite3_column_int64(st, KC_REVOKED);
    return GW_OK;
}

/* res->key = the row of name (NULL if none). */
static int load_key(struct sqlite_store *s, struct gw_store_op *op, const char *name)
{
    sqlite3_stmt *st = kstmt(s, op, K_GET);
    struct gw_store_key *k;
    int rc;

    if (st == NULL)
        return GW_ERR;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(st);
        op->res.key = NULL;
        return GW_OK;
    }
    if (rc != SQLITE_ROW)
        return kdone(s, op, st);
    k = gw_store_op_alloc(op, sizeof(*k));
    rc = k != NULL ? row_key(op, st, k) : GW_ERR;
    sqlite3_reset(st);
    if (k == NULL)
        gw_store_op_fail(op, "out of memory");
    op->res.key = rc == GW_OK ? k : NULL;
    return rc;
}

static int op_key_put(struct sqlite_store *s, struct gw_store_op *op)
{
    const struct gw_store_key *k = &op->key;
    sqlite3_stmt *st = kstmt(s, op, K_PUT);
    int rc;

    if (st == NULL)
        return GW_ERR;
    sqlite3_bind_text(st, 1, k->name, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, k->sha256, sizeof(k->sha256), SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, k->rpm);
    sqlite3_bind_int64(st, 4, k->burst);
    sqlite3_bind_int64(st, 5, k->concurrency);
    sqlite3_bind_int64(st, 6, k->daily_seconds);
    sqlite3_bind_text(st, 7, k->models, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, k->expires_at);
    sqlite3_bind_int64(st, 9, k->created_at);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
        op->res.key_exists = 1; /* data: the caller answers 409 */
        return GW_OK;
    }
    if (rc != SQLITE_DONE) {
        gw_store_op_fail(op, "the job store failed: %s", sqlite3_errmsg(s->db));
        return GW_ERR;
    }
    if (bump(s, op) != GW_OK)
        return GW_ERR;
    return load_key(s, op, k->name);
}

static int op_key_patch(struct sqlite_store *s, struct gw_store_op *op)
{
    const struct gw_store_key_patch *p = &op->patch;
    sqlite3_stmt *st = kstmt(s, op, K_PATCH);

    if (st == NULL)
        return GW_ERR;
    sqlite3_bind_text(st, 1, p->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, p->set);
    sqlite3_bind_int64(st, 3, p->rpm);
    sqlite3_bind_int64(st, 4, p->burst);
    sqlite3_bind_int64(st, 5, p->concurrency);
    sqlite3_bind_int64(st, 6, p->daily_seconds);
    sqlite3_bind_text(st, 7, p->models, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, p->expires_at);
    sqlite3_bind_int64(st, 9, p->now);
    if (kdone(s, op, st) != GW_OK)
        return GW_ERR;
    if (sqlite3_changes(s->db) == 0) { /* none, or revoked */
        op->res.key = NULL;
        return GW_OK;
    }
    if (bump(s, op) != GW_OK)
        return GW_ERR;
    return load_key(s, op, p->name);
}

static int op_key_revoke(struct sqlite_store *s, struct gw_store_op *op)
{
    sqlite3_stmt *st = kstmt(s, op, K_REVOKE);

    if (st == NULL)
        return GW_ERR;
    sqlite3_bind_text(st, 1, op->key.name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, op->t1);
    if (kdone(s, op, st) != GW_OK)
        return GW_ERR;
    op->res.key_revoked = sqlite3_changes(s->db) == 1;
    if (op->res.key_revoked && bump(s, op) != GW_OK)
        return GW_ERR;
    return load_key(s, op, op->key.name);
}

static int read_version(struct sqlite_store *s, struct gw_store_op *op)
{
    sqlite3_stmt *st = kstmt(s, op, K_VERSION);
    int rc;

    if (st == NULL)
        return GW_ERR;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        op->res.keys_version = (uint64_t)sqlite3_column_int64(st, 0);
    return kdone(s, op, st);
}

static int op_keys_list(struct sqlite_store *s, struct gw_store_op *op)
{
    sqlite3_stmt *st;
    struct gw_store_key *keys = NULL;
    size_t n = 0, cap = 0;
    int rc;

    if (read_version(s, op) != GW_OK || (st = kstmt(s, op, K_LIST)) == NULL)
        return GW_ERR;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) { /* grown in the op's memory: the old block goes with the op */
            size_t ncap = cap ? cap * 2 : 16;
            struct gw_store_key *k = gw_store_op_alloc(op, ncap * sizeof(*k));
            if (k == NULL) {
                sqlite3_reset(st);
                gw_store_op_fail(op, "out of memory");
                return GW_ERR;
            }
            if (n > 0)
                memcpy(k, keys, n * sizeof(*k));
            keys = k;
            cap = ncap;
        }
        if (row_key(op, st, &keys[n]) != GW_OK) {
            sqlite3_reset(st);
            return GW_ERR;
        }
        n++;
    }
    if (rc != SQLITE_DONE)
        return kdone(s, op, st);
    sqlite3_reset(st);
    op->res.keys = keys;
    op->res.nkeys = n;
    for (size_t i = 0; i < n; i++) {
        if ((st = kstmt(s, op, K_LAST_USED)) == NULL)
            return GW_ERR;
        sqlite3_bind_text(st, 1, keys[i].name, -1, SQLITE_STATIC);
        keys[i].last_used_at = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
        if (kdone(s, op, st) != GW_OK)
            return GW_ERR;
    }
    if (op->nnames == 0)
        return GW_OK;
    int64_t *last = gw_store_op_alloc(op, op->nnames * sizeof(*last));
    if (last == NULL)
        return GW_ERR; /* op failed: out of memory */
    for (size_t i = 0; i < op->nnames; i++) {
        if ((st = kstmt(s, op, K_LAST_USED)) == NULL)
            return GW_ERR;
        sqlite3_bind_text(st, 1, op->names[i], -1, SQLITE_STATIC);
        last[i] = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
        if (kdone(s, op, st) != GW_OK)
            return GW_ERR;
    }
    op->res.last_used = last;
    return GW_OK;
}

static int op_jobs_recent(struct sqlite_store *s, struct gw_store_op *op)
{
    const struct gw_jobs_recent_query *q = &op->recent;
    sqlite3_stmt *st = kstmt(s, op, q->key_name != NULL ? K_RECENT_KEY : K_RECENT_ALL);
    struct gw_job *jobs = gw_store_op_alloc(op, q->limit * sizeof(*jobs));
    size_t n = 0;
    int rc = SQLITE_DONE;

    if (st == NULL)
        return GW_ERR;
    if (jobs == NULL)
        return GW_ERR; /* op failed: out of memory */
    if (q->key_name != NULL)
        sqlite3_bind_text(st, 1, q->key_name, -1, SQLITE_STATIC);
    if (q->status >= 0)
        sqlite3_bind_text(st, 2, gw_job_status_name((enum gw_job_status)q->status), -1,
                          SQLITE_STATIC);
    sqlite3_bind_int(st, 3, (int)q->limit);
    while (n < q->limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sq_row_job(op, st, &jobs[n]) != GW_OK) {
            sqlite3_reset(st);
            return GW_ERR;
        }
        n++;
    }
    if (n < q->limit && rc != SQLITE_DONE)
        return kdone(s, op, st);
    sqlite3_reset(st);
    op->res.jobs = jobs;
    op->res.njobs = n;
    return GW_OK;
}

int sq_keys_run(struct sqlite_store *s, struct gw_store_op *op)
{
    switch (op->kind) {
    case GW_OP_KEY_PUT:
        return op_key_put(s, op);
    case GW_OP_KEY_PATCH:
        return op_key_patch(s, op);
    case GW_OP_KEY_REVOKE:
        return op_key_revoke(s, op);
    case GW_OP_KEYS_LIST:
        return op_keys_list(s, op);
    case GW_OP_KEYS_VERSION:
        return read_version(s, op);
    case GW_OP_JOBS_RECENT:
        return op_jobs_recent(s, op);
    default:
        break;
    }
    gw_store_op_fail(op, "unknown store operation");
    return GW_ERR;
}

/* ------------------------------------------------------------ synchronous */

/*
 * One operation on a connection of its own: the file is created and migrated
 * if it must be (as the gateway does at start, in one transaction), never
 * touched otherwise (the in-flight idempotency records stay: a gateway may be
 * running on it).
 */
int gw_store_sqlite_run_sync(const struct gw_store_options *o, struct gw_store_op *op,
                             struct gw_error *err)
{
    struct sqlite_store s;
    int64_t version;
    int rc = GW_ERR;

    memset(&s, 0, sizeof(s));
    s.path = (char *)o->path;
    if (sqlite3_open_v2(o->path, &s.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                            SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        sq_open_error(err, o->path, s.db, "open it");
        goto out;
    }
    sqlite3_extended_result_codes(s.db, 1);
    sqlite3_busy_timeout(s.db, BUSY_TIMEOUT_MS);
    if (sq_schema_version(s.db, o->path, &version, err) != GW_OK)
        goto out;
    if (version < GW_STORE_SCHEMA_VERSION) {
        if (sq_query_int(s.db, "PRAGMA journal_mode = WAL", &(int64_t){ 0 }) != GW_OK) {
            sq_open_error(err, o->path, s.db, "switch it to WAL mode");
            goto out;
        }
        if (sq_migrate(s.db, o->path, err) != GW_OK)
            goto out;
    }
    if (sqlite3_exec(s.db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        sq_open_error(err, o->path, s.db, "write it (is it locked?)");
        goto out;
    }
    if (sq_keys_run(&s, op) != GW_OK) {
        sqlite3_exec(s.db, "ROLLBACK", NULL, NULL, NULL);
        *err = op->err;
        goto out;
    }
    if (sqlite3_exec(s.db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        sq_open_error(err, o->path, s.db, "write it");
        sqlite3_exec(s.db, "ROLLBACK", NULL, NULL, NULL);
        goto out;
    }
    rc = GW_OK;

out:
    sq_keys_finalize(&s);
    sqlite3_close(s.db);
    return rc;
}
