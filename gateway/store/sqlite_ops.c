/*
 * sqlite_ops.c - the SQLite engine's operations: the SQL of each call of
 * store.h, run on the store thread inside the batch's transaction (each in
 * its own savepoint: store_sqlite.c). Usage counts are noted per operation and
 * written once per batch (sq_usage_flush).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite_int.h"

#define PRUNE_STEP 500      /* rows a prune deletes per table and transaction (and team
                             * keys it visits) */

/* -------------------------------------------------------------- statements */

#define JOB_COLS                                                                            \
    "id, key_name, upstream_key, kind, model_asked, model_sent, seconds, size, status, "   \
    "created_at, updated_at, refreshed_at, deleted_at, refunded, object"

/* what a read selects: the row and where it is (seq) */
#define JOB_SEL JOB_COLS ", seq"

enum { /* the columns of JOB_SEL */
    C_ID = 0, C_KEY, C_UPKEY, C_KIND, C_ASKED, C_SENT, C_SECONDS, C_SIZE, C_STATUS,
    C_CREATED, C_UPDATED, C_REFRESHED, C_DELETED, C_REFUNDED, C_OBJECT, C_SEQ,
};

const char *const sq_stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT op",
    [ST_RELEASE] = "RELEASE op",
    [ST_ROLLBACK_TO] = "ROLLBACK TO op",
    [ST_JOB_INSERT] = "INSERT INTO jobs(" JOB_COLS ") "
                      "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0, 0, ?13)",
    /* one delta for any of the four counters of a (day, key, model) */
    [ST_USAGE_ADD] = "INSERT INTO usage_daily(day, key_name, model, jobs, seconds, failed, "
                     "refunded_seconds) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) "
                     "ON CONFLICT(day, key_name, model) DO UPDATE SET "
                     "jobs = jobs + excluded.jobs, seconds = seconds + excluded.seconds, "
                     "failed = failed + excluded.failed, "
                     "refunded_seconds = refunded_seconds + excluded.refunded_seconds",
    /* a job is found by its seq, which the id index (idindex.h) gives */
    [ST_JOB_GET] = "SELECT " JOB_SEL " FROM jobs WHERE seq = ?1",
    [ST_JOB_ID] = "SELECT id FROM jobs WHERE seq = ?1",
    [ST_JOB_UPDATE] = "UPDATE jobs SET status = ?2, object = coalesce(?3, object), "
                      "updated_at = ?4, refreshed_at = max(refreshed_at, ?4) WHERE seq = ?1",
    [ST_JOB_DELETE] = "UPDATE jobs SET deleted_at = ?2 WHERE seq = ?1 AND deleted_at = 0",
    [ST_JOB_CURSOR] = "SELECT created_at, seq FROM jobs WHERE seq = ?1 AND key_name = ?2",
    /* row values: (created_at, seq) is the order (jobs_by_key's), and the cursor's
     * position in it */
    [ST_JOB_LIST_DESC] = "SELECT " JOB_SEL " FROM jobs WHERE key_name = ?1 AND deleted_at = 0 "
                         "AND (created_at, seq) < (?2, ?3) "
                         "ORDER BY created_at DESC, seq DESC LIMIT ?4",
    [ST_JOB_LIST_ASC] = "SELECT " JOB_SEL " FROM jobs WHERE key_name = ?1 AND deleted_at = 0 "
                        "AND (created_at, seq) > (?2, ?3) "
                        "ORDER BY created_at ASC, seq ASC LIMIT ?4",
    [ST_JOB_CLAIM] = "SELECT " JOB_SEL " FROM jobs "
                     "WHERE status IN ('queued', 'in_progress') AND deleted_at = 0 "
                     "AND refreshed_at <= ?1 ORDER BY refreshed_at, seq LIMIT ?2",
    [ST_JOB_TOUCH] = "UPDATE jobs SET refreshed_at = ?2 WHERE seq = ?1",
    [ST_JOB_REFUND] = "UPDATE jobs SET refunded = 1 "
                      "WHERE seq = ?1 AND status = 'failed' AND refunded = 0",
    /* prune: jobs_by_key, one key at a time (no index on created_at alone: one
     * B-tree less to write per create) */
    [ST_PRUNE_KEY] = "SELECT key_name FROM jobs WHERE key_name > ?1 ORDER BY key_name LIMIT 1",
    [ST_PRUNE_JOBS] = "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs "
                      "WHERE key_name = ?1 AND created_at < ?2 LIMIT ?3) RETURNING seq, id",
    [ST_PRUNE_IDEM] = "DELETE FROM idempotency WHERE rowid IN "
                      "(SELECT rowid FROM idempotency WHERE created_at <= ?1 LIMIT ?2)",
    [ST_IDEM_GET] = "SELECT state, status, body, created_at FROM idempotency "
                    "WHERE key_name = ?1 AND idem_key = ?2",
    [ST_IDEM_NEW] = "INSERT OR REPLACE INTO idempotency(key_name, idem_key, state, status, "
                    "body, created_at) VALUES(?1, ?2, 'in_flight', 0, NULL, ?3)",
    [ST_IDEM_FINISH] = "UPDATE idempotency SET state = 'done', status = ?3, body = ?4 "
                       "WHERE key_name = ?1 AND idem_key = ?2 AND state = 'in_flight'",
    [ST_IDEM_PUT_DONE] = "INSERT INTO idempotency(key_name, idem_key, state, status, body, "
                         "created_at) VALUES(?1, ?2, 'done', 200, ?3, ?4) "
                         "ON CONFLICT(key_name, idem_key) DO UPDATE SET state = 'done', "
                         "status = 200, body = excluded.body",
    [ST_IDEM_ABORT] = "DELETE FROM idempotency "
                      "WHERE key_name = ?1 AND idem_key = ?2 AND state = 'in_flight'",
    [ST_USAGE] = "SELECT day, key_name, model, jobs, seconds, failed, refunded_seconds "
                 "FROM usage_daily WHERE day >= ?1 AND day <= ?2 "
                 "AND (?3 IS NULL OR key_name = ?3) ORDER BY key_name, model, day",
    /* characters (issue 9) */
    [ST_CHARACTER_INSERT] = "INSERT INTO characters(id, key_name, upstream_key, name, "
                            "created_at, object) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_CHARACTER_GET] = "SELECT id, key_name, upstream_key, name, created_at, object "
                         "FROM characters WHERE id = ?1",
    /* usage per kind of job (issue 9): the same counters, one more key column */
    [ST_USAGE_KIND_ADD] = "INSERT INTO usage_daily_kind(day, key_name, model, kind, jobs, "
                          "seconds, failed, refunded_seconds) "
                          "VALUES(?1, ?2, ?3, ?8, ?4, ?5, ?6, ?7) "
                          "ON CONFLICT(day, key_name, model, kind) DO UPDATE SET "
                          "jobs = jobs + excluded.jobs, seconds = seconds + excluded.seconds, "
                          "failed = failed + excluded.failed, "
                          "refunded_seconds = refunded_seconds + excluded.refunded_seconds",
    [ST_USAGE_KIND] = "SELECT day, key_name, model, jobs, seconds, failed, refunded_seconds, "
                      "kind FROM usage_daily_kind WHERE day >= ?1 AND day <= ?2 "
                      "AND (?3 IS NULL OR key_name = ?3) ORDER BY key_name, model, kind, day",
};

/* ------------------------------------------------------- statement helpers */

/* A statement, reset and with its bindings cleared, ready to bind. */
static sqlite3_stmt *stmt(struct sqlite_store *s, enum stmt_id id)
{
    sqlite3_stmt *st = s->st[id];

    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* Bindings borrow the operation's strings: they live until it is freed. */
static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v != NULL)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* Run a statement that returns no row. GW_OK, or GW_ERR with op failed (if op). */
static int exec_done(struct sqlite_store *s, sqlite3_stmt *st, struct gw_store_op *op)
{
    int rc = sqlite3_step(st);

    sqlite3_reset(st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW)
        return GW_OK;
    if (op != NULL)
        gw_store_op_fail(op, "the job store failed: %s", sqlite3_errmsg(s->db));
    return GW_ERR;
}

/* A step of st failed: reset it (not stepped again: that would run it again)
 * and fail op. GW_ERR. */
static int step_failed(struct sqlite_store *s, sqlite3_stmt *st, struct gw_store_op *op)
{
    gw_store_op_fail(op, "the job store failed: %s", sqlite3_errmsg(s->db));
    sqlite3_reset(st);
    return GW_ERR;
}

int sq_exec_simple(struct sqlite_store *s, enum stmt_id id)
{
    return exec_done(s, stmt(s, id), NULL);
}

/* A row of JOB_SEL into j, its strings in one block owned by op. */
static int row_job(struct gw_store_op *op, sqlite3_stmt *st, struct gw_job *j)
{
    static const int text_cols[] = { C_ID, C_KEY, C_UPKEY, C_ASKED, C_SENT, C_SIZE, C_OBJECT };
    const char **dst[] = { &j->id, &j->key_name, &j->upstream_key, &j->model_asked,
                           &j->model_sent, &j->size, &j->object };
    const unsigned char *txt[GW_ARRAY_LEN(text_cols)];
    size_t len[GW_ARRAY_LEN(text_cols)], total = 0;
    const unsigned char *status = sqlite3_column_text(st, C_STATUS);
    const unsigned char *kind = sqlite3_column_text(st, C_KIND);

    memset(j, 0, sizeof(*j));
    if (status == NULL || kind == NULL ||
        gw_job_status_parse((const char *)status, strlen((const char *)status), &j->status) !=
            GW_OK ||
        gw_job_kind_parse((const char *)kind, strlen((const char *)kind), &j->kind) != GW_OK) {
        gw_store_op_fail(op, "the job store holds a job with an unknown status or kind");
        return GW_ERR;
    }
    for (size_t i = 0; i < GW_ARRAY_LEN(text_cols); i++) {
        txt[i] = sqlite3_column_text(st, text_cols[i]); /* then bytes: the text's length */
        len[i] = (size_t)sqlite3_column_bytes(st, text_cols[i]);
        total += len[i] + 1;
    }
    char *p = gw_store_op_alloc(op, total);
    if (p == NULL)
        return GW_ERR; /* op failed: out of memory */
    for (size_t i = 0; i < GW_ARRAY_LEN(text_cols); i++) {
        if (len[i] > 0)
            memcpy(p, txt[i], len[i]);
        p[len[i]] = '\0';
        *dst[i] = p;
        p += len[i] + 1;
    }
    j->object_len = len[GW_ARRAY_LEN(text_cols) - 1];
    j->seconds = sqlite3_column_int(st, C_SECONDS);
    j->created_at = sqlite3_column_int64(st, C_CREATED);
    j->updated_at = sqlite3_column_int64(st, C_UPDATED);
    j->refreshed_at = sqlite3_column_int64(st, C_REFRESHED);
    j->deleted_at = sqlite3_column_int64(st, C_DELETED);
    j->refunded = sqlite3_column_int(st, C_REFUNDED);
    return GW_OK;
}

const char sq_job_cols[] = JOB_SEL;

int sq_row_job(struct gw_store_op *op, sqlite3_stmt *st, struct gw_job *j)
{
    return row_job(op, st, j);
}

/* --------------------------------------------------------------- the id index */

/* Check later, after this transaction, whether (hash, seq) still points at a
 * row with an id of that hash; remove it if not (sq_ids_recheck). Not now: the
 * transaction may yet be rolled back and the row come back. */
static void ids_suspect(struct sqlite_store *s, uint64_t hash, int64_t seq)
{
    if (s->nsuspect == s->capsuspect) {
        size_t cap = s->capsuspect ? s->capsuspect * 2 : 64;
        void *p = realloc(s->suspect, cap * sizeof(*s->suspect));
        if (p == NULL)
            return; /* a stale hint stays: harmless, found again later */
        s->suspect = p;
        s->capsuspect = cap;
    }
    s->suspect[s->nsuspect].hash = hash;
    s->suspect[s->nsuspect].seq = seq;
    s->nsuspect++;
}

void sq_ids_recheck(struct sqlite_store *s)
{
    for (size_t i = 0; i < s->nsuspect; i++) {
        sqlite3_stmt *st = stmt(s, ST_JOB_ID);
        sqlite3_bind_int64(st, 1, s->suspect[i].seq);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE ||
            (rc == SQLITE_ROW &&
             gw_idindex_hash((const char *)sqlite3_column_text(st, 0),
                             (size_t)sqlite3_column_bytes(st, 0)) != s->suspect[i].hash))
            gw_idindex_remove(&s->ids, s->suspect[i].hash, s->suspect[i].seq);
        sqlite3_reset(st);
    }
    s->nsuspect = 0;
    if (s->capsuspect > 4096) { /* after a large prune: give the memory back */
        free(s->suspect);
        s->suspect = NULL;
        s->capsuspect = 0;
    }
}

int sq_ids_load(struct sqlite_store *s, char *msg, size_t msgcap)
{
    sqlite3_stmt *st;
    int rc;

    if (sqlite3_prepare_v2(s->db, "SELECT seq, id FROM jobs", -1, &st, NULL) != SQLITE_OK) {
        snprintf(msg, msgcap, "cannot read its jobs: %s", sqlite3_errmsg(s->db));
        return GW_ERR;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (gw_idindex_add(&s->ids,
                           gw_idindex_hash((const char *)sqlite3_column_text(st, 1),
                                           (size_t)sqlite3_column_bytes(st, 1)),
                           sqlite3_column_int64(st, 0)) != GW_OK) {
            snprintf(msg, msgcap, "out of memory indexing its jobs");
            break;
        }
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        snprintf(msg, msgcap, "cannot read its jobs: %s", sqlite3_errmsg(s->db));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? GW_OK : GW_ERR;
}

/* *seq = the row holding id, 0 if none: the index's candidates, each checked
 * against the row's id. GW_ERR: the database failed (op failed). */
static int find_job(struct sqlite_store *s, struct gw_store_op *op, const char *id,
                    int64_t *seq)
{
    size_t len = strlen(id), pos = 0;
    uint64_t hash = gw_idindex_hash(id, len);
    int64_t cand;

    *seq = 0;
    while ((cand = gw_idindex_next(&s->ids, hash, &pos)) != 0) {
        sqlite3_stmt *st = stmt(s, ST_JOB_ID);
        sqlite3_bind_int64(st, 1, cand);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return step_failed(s, st, op);
        int same = rc == SQLITE_ROW && (size_t)sqlite3_column_bytes(st, 0) == len &&
                   memcmp(sqlite3_column_text(st, 0), id, len) == 0;
        sqlite3_reset(st);
        if (same) {
            *seq = cand;
            return GW_OK;
        }
        ids_suspect(s, hash, cand);
    }
    return GW_OK;
}

/* res->job = the row at seq (NULL if seq is 0: no such job). */
static int load_job(struct sqlite_store *s, struct gw_store_op *op, int64_t seq)
{
    sqlite3_stmt *st;
    int rc;

    if (seq == 0) {
        op->res.job = NULL;
        return GW_OK;
    }
    st = stmt(s, ST_JOB_GET);
    sqlite3_bind_int64(st, 1, seq);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        op->res.job = NULL;
        return GW_OK;
    }
    if (rc != SQLITE_ROW)
        return step_failed(s, st, op);
    struct gw_job *j = gw_store_op_alloc(op, sizeof(*j));
    if (j == NULL)
        return GW_ERR; /* op failed: out of memory */
    rc = row_job(op, st, j);
    sqlite3_reset(st);
    op->res.job = rc == GW_OK ? j : NULL;
    return rc;
}

/* One upsert of a (day, key, model)'s counters. GW_OK, or GW_ERR with op
 * failed (if op). */
static int usage_write(struct sqlite_store *s, struct gw_store_op *op,
                       const struct usage_delta *d, int by_kind)
{
    sqlite3_stmt *st = stmt(s, by_kind ? ST_USAGE_KIND_ADD : ST_USAGE_ADD);

    if (by_kind)
        bind_text(st, 8, d->kind);
    sqlite3_bind_text(st, 1, d->day, -1, SQLITE_STATIC);
    bind_text(st, 2, d->key_name);
    bind_text(st, 3, d->model);
    sqlite3_bind_int64(st, 4, d->jobs);
    sqlite3_bind_int64(st, 5, d->seconds);
    sqlite3_bind_int64(st, 6, d->failed);
    sqlite3_bind_int64(st, 7, d->refunded);
    return exec_done(s, st, op);
}

/*
 * Add to the usage counters of the job's (day, key, model sent): noted, and
 * written by sq_usage_flush in the same transaction, one upsert per (day, key,
 * model) for the whole batch instead of one per create. run_batch forgets the
 * notes of an operation rolled back to its savepoint.
 */
static int usage_add(struct sqlite_store *s, struct gw_store_op *op, const struct gw_job *j,
                     int jobs, int64_t seconds, int failed, int64_t refunded)
{
    struct usage_delta d = {
        .key_name = j->key_name, .model = j->model_sent, .kind = gw_job_kind_name(j->kind),
        .jobs = jobs, .seconds = seconds, .failed = failed, .refunded = refunded,
    };

    gw_store_day(j->created_at, d.day);
    if (s->nudelta == GW_ARRAY_LEN(s->udelta)) /* not expected: one per operation */
        return usage_write(s, op, &d, 0) == GW_OK ? usage_write(s, op, &d, 1) : GW_ERR;
    s->udelta[s->nudelta++] = d;
    return GW_OK;
}

/* Write the usage noted by the batch so far, outside any operation's savepoint.
 * GW_OK, or GW_ERR with msg (the batch then fails as a whole, as at COMMIT). */
int sq_usage_flush(struct sqlite_store *s, char *msg, size_t msgcap)
{
    struct usage_delta *u = s->udelta;
    unsigned n = s->nudelta;

    s->nudelta = 0;
    for (unsigned i = 0; i < n; i++)
        u[i].merged = u[i].kmerged = 0;
    /* usage_daily_kind first, from the deltas as noted (usage_daily's merge below
     * adds into them) */
    for (unsigned i = 0; i < n; i++) {
        struct usage_delta k = u[i];

        if (u[i].kmerged)
            continue;
        for (unsigned m = i + 1; m < n; m++) {
            if (!u[m].kmerged && strcmp(u[m].day, k.day) == 0 &&
                strcmp(u[m].key_name, k.key_name) == 0 && strcmp(u[m].model, k.model) == 0 &&
                strcmp(u[m].kind, k.kind) == 0) {
                k.jobs += u[m].jobs;
                k.seconds += u[m].seconds;
                k.failed += u[m].failed;
                k.refunded += u[m].refunded;
                u[m].kmerged = 1;
            }
        }
        if (usage_write(s, NULL, &k, 1) != GW_OK) {
            snprintf(msg, msgcap, "the job store cannot count usage: %s", sqlite3_errmsg(s->db));
            return GW_ERR;
        }
    }
    for (unsigned i = 0; i < n; i++) {
        if (u[i].merged)
            continue;
        for (unsigned k = i + 1; k < n; k++) {
            if (!u[k].merged && strcmp(u[k].day, u[i].day) == 0 &&
                strcmp(u[k].key_name, u[i].key_name) == 0 &&
                strcmp(u[k].model, u[i].model) == 0) {
                u[i].jobs += u[k].jobs;
                u[i].seconds += u[k].seconds;
                u[i].failed += u[k].failed;
                u[i].refunded += u[k].refunded;
                u[k].merged = 1;
            }
        }
        if (usage_write(s, NULL, &u[i], 0) != GW_OK) {
            snprintf(msg, msgcap, "the job store cannot count usage: %s", sqlite3_errmsg(s->db));
            return GW_ERR;
        }
    }
    return GW_OK;
}

/* -------------------------------------------------------------- operations */

static int op_put(struct sqlite_store *s, struct gw_store_op *op)
{
    const struct gw_job *j = &op->job;
    sqlite3_stmt *st;
    int64_t seq;

    if (find_job(s, op, j->id, &seq) != GW_OK)
        return GW_ERR;
    if (seq != 0) {
        gw_store_op_fail(op, "job %s is already recorded", j->id);
        return GW_ERR;
    }
    /* everything that can fail comes before the INSERT, which is the only write
     * of a put without an idempotency key: it needs no savepoint (sq_op_atomic) */
    uint64_t hash = gw_idindex_hash(j->id, strlen(j->id));
    if (gw_idindex_reserve(&s->ids) != GW_OK) {
        gw_store_op_fail(op, "out of memory");
        return GW_ERR;
    }
    st = stmt(s, ST_JOB_INSERT);
    bind_text(st, 1, j->id);
    bind_text(st, 2, j->key_name);
    bind_text(st, 3, j->upstream_key);
    bind_text(st, 4, gw_job_kind_name(j->kind));
    bind_text(st, 5, j->model_asked);
    bind_text(st, 6, j->model_sent);
    sqlite3_bind_int(st, 7, j->seconds);
    bind_text(st, 8, j->size);
    bind_text(st, 9, gw_job_status_name(j->status));
    sqlite3_bind_int64(st, 10, j->created_at);
    sqlite3_bind_int64(st, 11, j->updated_at);
    sqlite3_bind_int64(st, 12, j->updated_at);
    sqlite3_bind_text(st, 13, j->object, (int)j->object_len, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        gw_store_op_fail(op, "the job store failed: %s", sqlite3_errmsg(s->db));
        return GW_ERR;
    }
    /* before COMMIT: a committed row always has its entry (if the savepoint or
     * the batch is rolled back, the entry is a stale hint); reserved above, so
     * it cannot fail */
    gw_idindex_add(&s->ids, hash, sqlite3_last_insert_rowid(s->db));
    if (usage_add(s, op, j, 1, j->seconds, j->status == GW_JOB_FAILED, 0) != GW_OK)
        return GW_ERR;
    if (op->idem_key != NULL) {
        st = stmt(s, ST_IDEM_PUT_DONE);
        bind_text(st, 1, j->key_name);
        bind_text(st, 2, op->idem_key);
        sqlite3_bind_blob(st, 3, j->object, (int)j->object_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, j->updated_at);
        if (exec_done(s, st, op) != GW_OK)
            return GW_ERR;
    }
    return GW_OK;
}

static int op_get(struct sqlite_store *s, struct gw_store_op *op)
{
    int64_t seq;

    if (find_job(s, op, op->job.id, &seq) != GW_OK)
        return GW_ERR;
    return load_job(s, op, seq);
}

/* queued 0 < in_progress 1 < completed = failed 2: a status only moves forward */
static int status_rank(enum gw_job_status st)
{
    return st == GW_JOB_QUEUED ? 0 : st == GW_JOB_IN_PROGRESS ? 1 : 2;
}

static int op_update(struct sqlite_store *s, struct gw_store_op *op)
{
    const struct gw_job_update *u = &op->upd;
    int64_t seq;

    if (find_job(s, op, u->id, &seq) != GW_OK || load_job(s, op, seq) != GW_OK)
        return GW_ERR;
    if (op->res.job == NULL)
        return GW_OK;
    enum gw_job_status prev = op->res.job->status;
    op->res.prev_status = prev;
    if (u->status != prev && status_rank(u->status) <= status_rank(prev))
        return GW_OK; /* stale, or a terminal state changing: keep the row */

    sqlite3_stmt *st = stmt(s, ST_JOB_UPDATE);
    sqlite3_bind_int64(st, 1, seq);
    bind_text(st, 2, gw_job_status_name(u->status));
    if (u->object != NULL)
        sqlite3_bind_text(st, 3, u->object, (int)u->object_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, u->now);
    if (exec_done(s, st, op) != GW_OK)
        return GW_ERR;
    if (u->status == GW_JOB_FAILED && prev != GW_JOB_FAILED &&
        usage_add(s, op, op->res.job, 0, 0, 1, 0) != GW_OK)
        return GW_ERR;
    return load_job(s, op, seq);
}

/* The job of op->job.id and a statement on its row: *st bound with its seq as
 * ?1, or NULL (res->job NULL: no such job). GW_ERR: the database failed. */
static int job_stmt(struct sqlite_store *s, struct gw_store_op *op, enum stmt_id id,
                    int64_t *seq, sqlite3_stmt **st)
{
    *st = NULL;
    if (find_job(s, op, op->job.id, seq) != GW_OK)
        return GW_ERR;
    if (*seq == 0)
        return load_job(s, op, 0);
    *st = stmt(s, id);
    sqlite3_bind_int64(*st, 1, *seq);
    return GW_OK;
}

static int op_delete(struct sqlite_store *s, struct gw_store_op *op)
{
    sqlite3_stmt *st;
    int64_t seq;

    int rc = job_stmt(s, op, ST_JOB_DELETE, &seq, &st);

    if (rc != GW_OK || st == NULL) /* failed, or no such job (res->job NULL) */
        return rc;
    sqlite3_bind_int64(st, 2, op->t1);
    if (exec_done(s, st, op) != GW_OK)
        return GW_ERR;
    return load_job(s, op, seq);
}

static int op_refund(struct sqlite_store *s, struct gw_store_op *op)
{
    sqlite3_stmt *st;
    int64_t seq;

    int rc = job_stmt(s, op, ST_JOB_REFUND, &seq, &st);

    if (rc != GW_OK || st == NULL) /* failed, or no such job (res->job NULL) */
        return rc;
    if (exec_done(s, st, op) != GW_OK)
        return GW_ERR;
    op->res.refunded = sqlite3_changes(s->db) == 1;
    if (load_job(s, op, seq) != GW_OK)
        return GW_ERR;
    if (op->res.refunded && op->res.job != NULL &&
        usage_add(s, op, op->res.job, 0, 0, 0, op->res.job->seconds) != GW_OK)
        return GW_ERR;
    return GW_OK;
}

/* Run a SELECT of JOB_SEL (bound) into res->jobs; at most max rows kept,
 * *more set if another one followed; their seqs into seqs (if not NULL). */
static int collect_jobs(struct sqlite_store *s, struct gw_store_op *op, sqlite3_stmt *st,
                        unsigned max, int *more, int64_t *seqs)
{
    struct gw_job *jobs = gw_store_op_alloc(op, sizeof(*jobs) * (max > 0 ? max : 1));
    size_t n = 0;
    int rc;

    if (jobs == NULL) {
        sqlite3_reset(st);
        gw_store_op_fail(op, "out of memory");
        return GW_ERR;
    }
    *more = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == max) {
            *more = 1;
            break;
        }
        if (row_job(op, st, &jobs[n]) != GW_OK) {
            sqlite3_reset(st);
            return GW_ERR;
        }
        if (seqs != NULL)
            seqs[n] = sqlite3_column_int64(st, C_SEQ);
        n++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return step_failed(s, st, op);
    sqlite3_reset(st);
    op->res.jobs = jobs;
    op->res.njobs = n;
    return GW_OK;
}

static int op_list(struct sqlite_store *s, struct gw_store_op *op)
{
    const struct gw_job_list_query *q = &op->list;
    /* no cursor: before the first row (asc) or after the last (desc) */
    int64_t c_created = q->order == GW_ORDER_ASC ? INT64_MIN : INT64_MAX;
    int64_t c_seq = c_created;
    sqlite3_stmt *st;
    int rc;

    if (q->after != NULL) {
        int64_t seq;
        if (find_job(s, op, q->after, &seq) != GW_OK)
            return GW_ERR;
        st = stmt(s, ST_JOB_CURSOR);
        sqlite3_bind_int64(st, 1, seq); /* 0: no row */
        bind_text(st, 2, q->key_name);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) { /* none, or another key's: the same answer */
            sqlite3_reset(st);
            op->res.after_unknown = 1;
            return GW_OK;
        }
        if (rc != SQLITE_ROW)
            return step_failed(s, st, op);
        c_created = sqlite3_column_int64(st, 0);
        c_seq = sqlite3_column_int64(st, 1);
        sqlite3_reset(st);
    }
    st = stmt(s, q->order == GW_ORDER_ASC ? ST_JOB_LIST_ASC : ST_JOB_LIST_DESC);
    bind_text(st, 1, q->key_name);
    sqlite3_bind_int64(st, 2, c_created);
    sqlite3_bind_int64(st, 3, c_seq);
    sqlite3_bind_int(st, 4, (int)q->limit + 1);
    return collect_jobs(s, op, st, q->limit, &op->res.has_more, NULL);
}

static int op_claim(struct sqlite_store *s, struct gw_store_op *op)
{
    sqlite3_stmt *st = stmt(s, ST_JOB_CLAIM);
    int64_t *seqs = gw_store_op_alloc(op, sizeof(*seqs) * (op->limit > 0 ? op->limit : 1));
    int more;

    if (seqs == NULL)
        return GW_ERR; /* op failed: out of memory */
    sqlite3_bind_int64(st, 1, op->t1);
    sqlite3_bind_int(st, 2, (int)op->limit);
    if (collect_jobs(s, op, st, op->limit, &more, seqs) != GW_OK)
        return GW_ERR;
    for (size_t i = 0; i < op->res.njobs; i++) {
        struct gw_job *j = (struct gw_job *)&op->res.jobs[i];
        st = stmt(s, ST_JOB_TOUCH);
        sqlite3_bind_int64(st, 1, seqs[i]);
        sqlite3_bind_int64(st, 2, op->t2);
        if (exec_done(s, st, op) != GW_OK)
            return GW_ERR;
        j->refreshed_at = op->t2;
    }
    return GW_OK;
}

enum { /* op->prune_state */
    PRUNE_AFTER_KEY = 0, /* go on with the key after op->prune_key (the first if NULL) */
    PRUNE_IN_KEY,        /* go on in op->prune_key: it may have more */
    PRUNE_JOBS_DONE,     /* only idempotency records are left */
};

/*
 * One bounded step: at most PRUNE_STEP jobs and PRUNE_STEP idempotency records
 * deleted, PRUNE_STEP team keys visited. GW_AGAIN when rows remain (the op is
 * queued again, behind what arrived meanwhile). Jobs go key by key through
 * jobs_by_key (key_name, created_at): a seek per key, then its oldest rows;
 * no index on created_at alone is kept for this (it cost every create).
 */
static int op_prune(struct sqlite_store *s, struct gw_store_op *op)
{
    sqlite3_stmt *st;
    int jobs = 0, keys = 0, idem, rc;

    while (op->prune_state != PRUNE_JOBS_DONE && jobs < PRUNE_STEP && keys < PRUNE_STEP) {
        if (op->prune_state == PRUNE_AFTER_KEY) {
            st = stmt(s, ST_PRUNE_KEY);
            bind_text(st, 1, op->prune_key != NULL ? op->prune_key : ""); /* names are not empty */
            rc = sqlite3_step(st);
            if (rc == SQLITE_DONE) {
                sqlite3_reset(st);
                op->prune_state = PRUNE_JOBS_DONE;
                break;
            }
            if (rc != SQLITE_ROW)
                return step_failed(s, st, op);
            const char *key = gw_store_op_strdup(op, (const char *)sqlite3_column_text(st, 0),
                                                 (size_t)sqlite3_column_bytes(st, 0));
            sqlite3_reset(st);
            if (key == NULL)
                return GW_ERR; /* op failed: out of memory */
            op->prune_key = key;
            op->prune_state = PRUNE_IN_KEY;
            keys++;
        }
        st = stmt(s, ST_PRUNE_JOBS);
        bind_text(st, 1, op->prune_key);
        sqlite3_bind_int64(st, 2, op->t1);
        sqlite3_bind_int(st, 3, PRUNE_STEP - jobs);
        int n = 0;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) { /* their ids leave the index */
            ids_suspect(s, gw_idindex_hash((const char *)sqlite3_column_text(st, 1),
                                           (size_t)sqlite3_column_bytes(st, 1)),
                        sqlite3_column_int64(st, 0));
            n++;
        }
        if (rc != SQLITE_DONE)
            return step_failed(s, st, op);
        sqlite3_reset(st);
        if (n < PRUNE_STEP - jobs)
            op->prune_state = PRUNE_AFTER_KEY; /* none left in this key */
        jobs += n;
    }
    st = stmt(s, ST_PRUNE_IDEM);
    sqlite3_bind_int64(st, 1, op->t2 - GW_STORE_IDEM_TTL_S);
    sqlite3_bind_int(st, 2, PRUNE_STEP);
    if (exec_done(s, st, op) != GW_OK)
        return GW_ERR;
    idem = sqlite3_changes(s->db);
    op->progress[0] += (uint64_t)jobs;
    op->progress[1] += (uint64_t)idem;
    op->res.pruned_jobs = op->progress[0];
    op->res.pruned_idem = op->progress[1];
    return op->prune_state != PRUNE_JOBS_DONE || idem == PRUNE_STEP ? GW_AGAIN : GW_OK;
}

static int op_idem_begin(struct sqlite_store *s, struct gw_store_op *op)
{
    sqlite3_stmt *st = stmt(s, ST_IDEM_GET);
    int rc;

    bind_text(st, 1, op->key_name);
    bind_text(st, 2, op->idem_key);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_int64(st, 3) > op->t1 - GW_STORE_IDEM_TTL_S) {
        const char *state = (const char *)sqlite3_column_text(st, 0);
        if (state != NULL && strcmp(state, "done") == 0) {
            const void *body = sqlite3_column_blob(st, 2);
            size_t len = (size_t)sqlite3_column_bytes(st, 2);
            op->res.idem = GW_IDEM_DONE;
            op->res.answer_status = sqlite3_column_int(st, 1);
            op->res.answer_body = gw_store_op_strdup(op, body, len);
            op->res.answer_len = len;
            sqlite3_reset(st);
            if (op->res.answer_body == NULL)
                return GW_ERR; /* op failed: out of memory */
            return GW_OK;
        }
        op->res.idem = GW_IDEM_IN_FLIGHT;
        sqlite3_reset(st);
        return GW_OK;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return step_failed(s, st, op);
    sqlite3_reset(st);
    /* none, or expired: this request owns the key now */
    st = stmt(s, ST_IDEM_NEW);
    bind_text(st, 1, op->key_name);
    bind_text(st, 2, op->idem_key);
    sqlite3_bind_int64(st, 3, op->t1);
    op->res.idem = GW_IDEM_NEW;
    return exec_done(s, st, op);
}

static int op_idem_finish(struct sqlite_store *s, struct gw_store_op *op)
{
    sqlite3_stmt *st = stmt(s, op->kind == GW_OP_IDEM_FINISH ? ST_IDEM_FINISH : ST_IDEM_ABORT);

    bind_text(st, 1, op->key_name);
    bind_text(st, 2, op->idem_key);
    if (op->kind == GW_OP_IDEM_FINISH) {
        sqlite3_bind_int(st, 3, op->status);
        sqlite3_bind_blob(st, 4, op->body, (int)op->body_len, SQLITE_STATIC);
    }
    return exec_done(s, st, op);
}

/* The usage rows of q from st (ST_USAGE's SQL, on any connection) into a new
 * struct gw_usage. GW_OK, or GW_ERR with msg filled. */
int sq_usage_collect(sqlite3 *db, sqlite3_stmt *st, const struct gw_usage_query *q,
                         struct gw_usage **out, char *msg, size_t msgcap)
{
    struct gw_usage *u = calloc(1, sizeof(*u));
    size_t cap = 0;
    int rc;

    *out = NULL;
    if (u == NULL)
        goto oom;
    sqlite3_bind_text(st, 1, q->since != NULL ? q->since : "0000-00-00", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, q->until != NULL ? q->until : "9999-99-99", -1, SQLITE_STATIC);
    bind_text(st, 3, q->key_name);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (u->n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct gw_usage_row *r = realloc(u->rows, ncap * sizeof(*r));
            if (r == NULL)
                goto oom;
            u->rows = r;
            cap = ncap;
        }
        struct gw_usage_row *r = &u->rows[u->n];
        const char *day = (const char *)sqlite3_column_text(st, 0);
        snprintf(r->day, sizeof(r->day), "%s", day != NULL ? day : "");
        r->key_name = strdup((const char *)sqlite3_column_text(st, 1));
        r->model = strdup((const char *)sqlite3_column_text(st, 2));
        u->n++;
        if (r->key_name == NULL || r->model == NULL)
            goto oom;
        r->jobs = sqlite3_column_int64(st, 3);
        r->seconds = sqlite3_column_int64(st, 4);
        r->failed = sqlite3_column_int64(st, 5);
        r->refunded_seconds = sqlite3_column_int64(st, 6);
        r->kind = NULL;
        if (q->by_kind && (r->kind = strdup((const char *)sqlite3_column_text(st, 7))) == NULL)
            goto oom;
    }
    if (rc != SQLITE_DONE) {
        snprintf(msg, msgcap, "%s", sqlite3_errmsg(db));
        sqlite3_reset(st);
        gw_store_usage_free(u);
        return GW_ERR;
    }
    sqlite3_reset(st);
    *out = u;
    return GW_OK;

oom:
    sqlite3_reset(st);
    snprintf(msg, msgcap, "out of memory");
    gw_store_usage_free(u);
    return GW_ERR;
}

static int op_usage(struct sqlite_store *s, struct gw_store_op *op)
{
    struct gw_usage *u;
    char msg[200];

    if (sq_usage_collect(s->db, stmt(s, op->usage_q.by_kind ? ST_USAGE_KIND : ST_USAGE),
                         &op->usage_q, &u, msg, sizeof(msg)) != GW_OK) {
        gw_store_op_fail(op, "the job store failed: %s", msg);
        return GW_ERR;
    }
    /* into the op's memory, so that it is freed with it */
    struct gw_usage_row *rows = gw_store_op_alloc(op, sizeof(*rows) * (u->n > 0 ? u->n : 1));
    int rc = rows != NULL ? GW_OK : GW_ERR;
    for (size_t i = 0; rc == GW_OK && i < u->n; i++) {
        rows[i] = u->rows[i];
        rows[i].key_name = gw_store_op_strdup(op, u->rows[i].key_name, strlen(u->rows[i].key_name));
        rows[i].model = gw_store_op_strdup(op, u->rows[i].model, strlen(u->rows[i].model));
        if (u->rows[i].kind != NULL)
            rows[i].kind = gw_store_op_strdup(op, u->rows[i].kind, strlen(u->rows[i].kind));
        if (rows[i].key_name == NULL || rows[i].model == NULL ||
            (u->rows[i].kind != NULL && rows[i].kind == NULL))
            rc = GW_ERR;
    }
    if (rc == GW_OK) {
        op->res.usage = rows;
        op->res.nusage = u->n;
    } else {
        gw_store_op_fail(op, "out of memory");
    }
    gw_store_usage_free(u);
    return rc;
}

/* ------------------------------------------------------ characters (issue 9) */

static int op_character_put(struct sqlite_store *s, struct gw_store_op *op)
{
    const struct gw_character *c = &op->character;
    sqlite3_stmt *st = stmt(s, ST_CHARACTER_INSERT);

    bind_text(st, 1, c->id);
    bind_text(st, 2, c->key_name);
    bind_text(st, 3, c->upstream_key);
    bind_text(st, 4, c->name);
    sqlite3_bind_int64(st, 5, c->created_at);
    sqlite3_bind_text(st, 6, c->object, (int)c->object_len, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
        gw_store_op_fail(op, "character %s is already recorded", c->id);
        return GW_ERR;
    }
    if (rc != SQLITE_DONE) {
        gw_store_op_fail(op, "the job store failed: %s", sqlite3_errmsg(s->db));
        return GW_ERR;
    }
    return GW_OK;
}

static int op_character_get(struct sqlite_store *s, struct gw_store_op *op)
{
    sqlite3_stmt *st = stmt(s, ST_CHARACTER_GET);
    const unsigned char *txt[5];
    size_t len[5], total = 0;
    static const int cols[5] = { 0, 1, 2, 3, 5 }; /* id, key_name, upstream_key, name, object */
    int rc;

    bind_text(st, 1, op->character.id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        op->res.character = NULL;
        return GW_OK;
    }
    if (rc != SQLITE_ROW)
        return exec_done(s, st, op);
    struct gw_character *c = gw_store_op_alloc(op, sizeof(*c));
    for (int i = 0; i < 5; i++) {
        txt[i] = sqlite3_column_text(st, cols[i]); /* then bytes: the text's length */
        len[i] = (size_t)sqlite3_column_bytes(st, cols[i]);
        total += len[i] + 1;
    }
    char *p = c != NULL ? gw_store_op_alloc(op, total) : NULL;
    if (p == NULL) {
        sqlite3_reset(st);
        gw_store_op_fail(op, "out of memory");
        return GW_ERR;
    }
    const char **dst[5] = { &c->id, &c->key_name, &c->upstream_key, &c->name, &c->object };
    for (int i = 0; i < 5; i++) {
        if (len[i] > 0)
            memcpy(p, txt[i], len[i]);
        p[len[i]] = '\0';
        *dst[i] = p;
        p += len[i] + 1;
    }
    c->object_len = len[4];
    c->created_at = sqlite3_column_int64(st, 4);
    sqlite3_reset(st);
    op->res.character = c;
    return GW_OK;
}

int sq_op_reads_only(enum gw_store_op_kind k)
{
    return k == GW_OP_JOB_GET || k == GW_OP_JOB_LIST || k == GW_OP_USAGE ||
           k == GW_OP_KEYS_LIST || k == GW_OP_KEYS_VERSION || k == GW_OP_JOBS_RECENT ||
           k == GW_OP_CHARACTER_GET;
}

int sq_op_atomic(const struct sqlite_store *s, const struct gw_store_op *op)
{
    /* a read writes nothing; a put without an idempotency key writes one row,
     * after every check that can fail (op_put), and a statement that fails is
     * undone by SQLite itself, as long as its usage is only noted (usage_add
     * writes it at once when the batch's notes are full: never expected). The
     * savepoint (two statements, and its journal of the pages it touches) is
     * for operations that write more than once. */
    if (sq_op_reads_only(op->kind))
        return 1;
    return op->kind == GW_OP_JOB_PUT && op->idem_key == NULL &&
           s->nudelta < GW_ARRAY_LEN(s->udelta);
}

int sq_run_op(struct sqlite_store *s, struct gw_store_op *op)
{
    switch (op->kind) {
    case GW_OP_JOB_PUT:
        return op_put(s, op);
    case GW_OP_JOB_GET:
        return op_get(s, op);
    case GW_OP_JOB_UPDATE:
        return op_update(s, op);
    case GW_OP_JOB_DELETE:
        return op_delete(s, op);
    case GW_OP_JOB_LIST:
        return op_list(s, op);
    case GW_OP_JOB_CLAIM:
        return op_claim(s, op);
    case GW_OP_JOB_REFUND:
        return op_refund(s, op);
    case GW_OP_PRUNE:
        return op_prune(s, op);
    case GW_OP_IDEM_BEGIN:
        return op_idem_begin(s, op);
    case GW_OP_IDEM_FINISH:
    case GW_OP_IDEM_ABORT:
        return op_idem_finish(s, op);
    case GW_OP_USAGE:
        return op_usage(s, op);
    case GW_OP_KEY_PUT:
    case GW_OP_KEY_PATCH:
    case GW_OP_KEY_REVOKE:
    case GW_OP_KEYS_LIST:
    case GW_OP_KEYS_VERSION:
    case GW_OP_JOBS_RECENT:
        return sq_keys_run(s, op);
    case GW_OP_CHARACTER_PUT:
        return op_character_put(s, op);
    case GW_OP_CHARACTER_GET:
        return op_character_get(s, op);
    case GW_OP_SCRIPT:
        break; /* Redis only: refused at the call */
    }
    gw_store_op_fail(op, "unknown store operation");
    return GW_ERR;
}
