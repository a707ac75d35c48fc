/*
 * store_sqlite.c - the SQLite engine: one file in WAL mode, one connection,
 * one store thread. Operations wait in a queue; the thread takes all that are
 * waiting (up to MAX_BATCH), runs them in one transaction (each inside its own
 * savepoint, so that one failing operation does not undo the others), commits,
 * and only then hands each result back to its loop (store.c). While a commit
 * is being written, new operations queue up and go together into the next one:
 * group commit, with no timer and no added latency when the store is idle.
 *
 * Everything that touches the connection runs on the store thread, except
 * open (migrations, before the thread starts) and gw_store_sqlite_usage_read,
 * which opens a connection of its own. The design and what is durable when:
 * docs/store.md.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store_int.h"

#define MAX_BATCH 256       /* operations in one transaction at most: bounds its latency */
#define MAX_QUEUED 65536    /* operations waiting at most: past it (the disk stalls), calls
                             * are refused (503) rather than memory growing without bound */
#define SLOW_MS 1000        /* a transaction slower than this is logged */
#define PRUNE_STEP 500      /* rows a prune deletes per table and transaction (and team
                             * keys it visits) */
#define BUSY_TIMEOUT_MS 5000 /* another process holding the write lock (a second gateway,
                              * a sqlite3 shell): wait this long, then fail */
/* Checkpoints (copying the WAL's pages back into the file) are the store
 * thread's own, never SQLite's automatic one inside a COMMIT: after a batch's
 * results went out, once the WAL holds CKPT_PAGES pages not yet copied, and
 * when no operation came for CKPT_IDLE_MS. A checkpoint holds the next batch
 * up (7-10 ms per 1000 pages on the bench machine: it fsyncs both files);
 * 4000 or 10000 pages cost no less CPU per create than 2000 there, only longer
 * stalls. docs/store.md, "Checkpoints". */
#define CKPT_PAGES 2000     /* 8 MiB of 4 KiB pages */
#define CKPT_IDLE_MS 1000

/* ------------------------------------------------------------------ schema */

/*
 * Migrations: version N is reached by running steps[N - 1] in order, in the
 * same transaction as the PRAGMA user_version that records it. Never edit a
 * step that has shipped: add a version.
 *
 * Version 1 has not shipped yet: no database exists outside the tests. It was
 * changed in place once, on 2026-12-01 (docs/benchmarks.md, "small creates,
 * limits + store"): the indexes took the random job id as their tie-breaker,
 * which cost every create a dirty page in each; they now use seq, the
 * insertion order, and jobs_by_created is gone (prune walks jobs_by_key). A
 * file written by the earlier draft fails at open ("no such column: seq").
 * From the first release on, a change is a new version.
 */
static const char *const schema_v1[] = {
    /* every job the gateway accepted: ownership, the upstream key, the ledger */
    "CREATE TABLE jobs ("
    " seq          INTEGER PRIMARY KEY,"      /* the rowid: insertion order (max + 1; an
                                               * alias, so VACUUM keeps it) */
    " id           TEXT    NOT NULL UNIQUE,"  /* the upstream's job id */
    " key_name     TEXT    NOT NULL,"         /* owner: the team key's name */
    " upstream_key TEXT    NOT NULL,"         /* label of the upstream key, never the secret */
    " kind         TEXT    NOT NULL,"         /* create | remix | edit | extend */
    " model_asked  TEXT    NOT NULL,"
    " model_sent   TEXT    NOT NULL,"
    " seconds      INTEGER NOT NULL,"
    " size         TEXT    NOT NULL,"
    " status       TEXT    NOT NULL,"         /* queued | in_progress | completed | failed */
    " created_at   INTEGER NOT NULL,"         /* unix s, the job object's */
    " updated_at   INTEGER NOT NULL,"         /* unix s, last change seen */
    " refreshed_at INTEGER NOT NULL,"         /* unix s, last refresh or claim */
    " deleted_at   INTEGER NOT NULL DEFAULT 0,"
    " refunded     INTEGER NOT NULL DEFAULT 0,"
    " object       TEXT    NOT NULL)",        /* the last job object seen (JSON) */
    /* An index entry ends with the rowid (seq), which orders equal keys: these two
     * are (key_name, created_at, seq) and (refreshed_at, seq). The random id as the
     * tie-breaker put each new row on another page of each; seq appends. Also the
     * prune's: per key_name, created_at < the retention's start. */
    "CREATE INDEX jobs_by_key ON jobs(key_name, created_at)",
    "CREATE INDEX jobs_unfinished ON jobs(refreshed_at)"
    " WHERE status IN ('queued', 'in_progress') AND deleted_at = 0",
    /* totals that outlive the pruned jobs */
    "CREATE TABLE usage_daily ("
    " day              TEXT    NOT NULL,"     /* YYYY-MM-DD, UTC, of the jobs' creation */
    " key_name         TEXT    NOT NULL,"
    " model            TEXT    NOT NULL,"     /* model sent */
    " jobs             INTEGER NOT NULL DEFAULT 0,"
    " seconds          INTEGER NOT NULL DEFAULT 0,"
    " failed           INTEGER NOT NULL DEFAULT 0,"
    " refunded_seconds INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (day, key_name, model)) WITHOUT ROWID",
    "CREATE TABLE idempotency ("
    " key_name   TEXT    NOT NULL,"
    " idem_key   TEXT    NOT NULL,"
    " state      TEXT    NOT NULL,"           /* in_flight | done */
    " status     INTEGER NOT NULL DEFAULT 0," /* done: the answer's status */
    " body       BLOB,"                       /* done: the answer's body */
    " created_at INTEGER NOT NULL,"           /* unix s: expires 24 h later */
    " UNIQUE (key_name, idem_key))",
    "CREATE INDEX idempotency_by_created ON idempotency(created_at)",
    NULL,
};

static const char *const *const migrations[] = {
    schema_v1, /* version 1 */
};

_Static_assert(GW_ARRAY_LEN(migrations) == GW_STORE_SCHEMA_VERSION,
               "one migration per schema version");

/* -------------------------------------------------------------- statements */

#define JOB_COLS                                                                            \
    "id, key_name, upstream_key, kind, model_asked, model_sent, seconds, size, status, "   \
    "created_at, updated_at, refreshed_at, deleted_at, refunded, object"

enum { /* the columns of JOB_COLS */
    C_ID = 0, C_KEY, C_UPKEY, C_KIND, C_ASKED, C_SENT, C_SECONDS, C_SIZE, C_STATUS,
    C_CREATED, C_UPDATED, C_REFRESHED, C_DELETED, C_REFUNDED, C_OBJECT,
};

enum stmt_id {
    ST_BEGIN = 0,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_JOB_INSERT,
    ST_USAGE_ADD,
    ST_JOB_GET,
    ST_JOB_UPDATE,
    ST_JOB_DELETE,
    ST_JOB_CURSOR,
    ST_JOB_LIST_DESC,
    ST_JOB_LIST_ASC,
    ST_JOB_CLAIM,
    ST_JOB_TOUCH,
    ST_JOB_REFUND,
    ST_PRUNE_KEY,
    ST_PRUNE_JOBS,
    ST_PRUNE_IDEM,
    ST_IDEM_GET,
    ST_IDEM_NEW,
    ST_IDEM_FINISH,
    ST_IDEM_PUT_DONE,
    ST_IDEM_ABORT,
    ST_USAGE,
    ST_COUNT,
};

static const char *const stmt_sql[ST_COUNT] = {
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
    [ST_JOB_GET] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1",
    [ST_JOB_UPDATE] = "UPDATE jobs SET status = ?2, object = coalesce(?3, object), "
                      "updated_at = ?4, refreshed_at = max(refreshed_at, ?4) WHERE id = ?1",
    [ST_JOB_DELETE] = "UPDATE jobs SET deleted_at = ?2 WHERE id = ?1 AND deleted_at = 0",
    [ST_JOB_CURSOR] = "SELECT created_at, seq FROM jobs WHERE id = ?1 AND key_name = ?2",
    /* row values: (created_at, seq) is the order (jobs_by_key's), and the cursor's
     * position in it */
    [ST_JOB_LIST_DESC] = "SELECT " JOB_COLS " FROM jobs WHERE key_name = ?1 AND deleted_at = 0 "
                         "AND (created_at, seq) < (?2, ?3) "
                         "ORDER BY created_at DESC, seq DESC LIMIT ?4",
    [ST_JOB_LIST_ASC] = "SELECT " JOB_COLS " FROM jobs WHERE key_name = ?1 AND deleted_at = 0 "
                        "AND (created_at, seq) > (?2, ?3) "
                        "ORDER BY created_at ASC, seq ASC LIMIT ?4",
    [ST_JOB_CLAIM] = "SELECT " JOB_COLS " FROM jobs "
                     "WHERE status IN ('queued', 'in_progress') AND deleted_at = 0 "
                     "AND refreshed_at <= ?1 ORDER BY refreshed_at, seq LIMIT ?2",
    [ST_JOB_TOUCH] = "UPDATE jobs SET refreshed_at = ?2 WHERE id = ?1",
    [ST_JOB_REFUND] = "UPDATE jobs SET refunded = 1 "
                      "WHERE id = ?1 AND status = 'failed' AND refunded = 0",
    /* prune: jobs_by_key, one key at a time (no index on created_at alone: one
     * B-tree less to write per create) */
    [ST_PRUNE_KEY] = "SELECT key_name FROM jobs WHERE key_name > ?1 ORDER BY key_name LIMIT 1",
    [ST_PRUNE_JOBS] = "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs "
                      "WHERE key_name = ?1 AND created_at < ?2 LIMIT ?3)",
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
};

/* ------------------------------------------------------------------ engine */

/* A change to the usage counters of one (day, key, model sent), made by an
 * operation of the batch under way; written at the end (usage_flush). */
struct usage_delta {
    char day[11];
    const char *key_name, *model; /* the operation's strings (or its result's) */
    int64_t jobs, seconds, failed, refunded;
    int merged;                   /* usage_flush: added into an earlier one */
};

struct sqlite_store {
    struct gw_store base; /* first: a struct gw_store * is one of these */
    char *path;
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;   /* guards the queue, closing and stats */
    pthread_cond_t cv;    /* the queue is not empty, or closing */
    struct gw_store_op *head, *tail;
    int closing;
    struct gw_store_stats stats;
    /* the store thread's own (the WAL hook runs inside its COMMITs) */
    struct usage_delta udelta[MAX_BATCH]; /* one at most per operation */
    unsigned nudelta;
    int wal_frames;       /* frames in the WAL after the last commit */
    int wal_pending;      /* ... of which no checkpoint has copied yet */
    int ckpt_failed;      /* the last checkpoint failed: logged once */
};

static const struct gw_store_engine sqlite_engine;

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

static int exec_simple(struct sqlite_store *s, enum stmt_id id)
{
    return exec_done(s, stmt(s, id), NULL);
}

/* A row of JOB_COLS into j, its strings in one block owned by op. */
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
    if (p == NULL) {
        gw_store_op_fail(op, "out of memory");
        return GW_ERR;
    }
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

/* res->job = the row of id (NULL if none). */
static int load_job(struct sqlite_store *s, struct gw_store_op *op, const char *id)
{
    sqlite3_stmt *st = stmt(s, ST_JOB_GET);
    int rc;

    bind_text(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        op->res.job = NULL;
        return GW_OK;
    }
    if (rc != SQLITE_ROW)
        return exec_done(s, st, op);
    struct gw_job *j = gw_store_op_alloc(op, sizeof(*j));
    if (j == NULL) {
        gw_store_op_fail(op, "out of memory");
        return GW_ERR;
    }
    rc = row_job(op, st, j);
    sqlite3_reset(st);
    op->res.job = rc == GW_OK ? j : NULL;
    return rc;
}

/* One upsert of a (day, key, model)'s counters. GW_OK, or GW_ERR with op
 * failed (if op). */
static int usage_write(struct sqlite_store *s, struct gw_store_op *op,
                       const struct usage_delta *d)
{
    sqlite3_stmt *st = stmt(s, ST_USAGE_ADD);

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
 * written by usage_flush in the same transaction, one upsert per (day, key,
 * model) for the whole batch instead of one per create. run_batch forgets the
 * notes of an operation rolled back to its savepoint.
 */
static int usage_add(struct sqlite_store *s, struct gw_store_op *op, const struct gw_job *j,
                     int jobs, int64_t seconds, int failed, int64_t refunded)
{
    struct usage_delta d = {
        .key_name = j->key_name, .model = j->model_sent,
        .jobs = jobs, .seconds = seconds, .failed = failed, .refunded = refunded,
    };

    gw_store_day(j->created_at, d.day);
    if (s->nudelta == GW_ARRAY_LEN(s->udelta)) /* not expected: one per operation */
        return usage_write(s, op, &d);
    s->udelta[s->nudelta++] = d;
    return GW_OK;
}

/* Write the usage noted by the batch so far, outside any operation's savepoint.
 * GW_OK, or GW_ERR with msg (the batch then fails as a whole, as at COMMIT). */
static int usage_flush(struct sqlite_store *s, char *msg, size_t msgcap)
{
    struct usage_delta *u = s->udelta;
    unsigned n = s->nudelta;

    s->nudelta = 0;
    for (unsigned i = 0; i < n; i++)
        u[i].merged = 0;
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
        if (usage_write(s, NULL, &u[i]) != GW_OK) {
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
    sqlite3_stmt *st = stmt(s, ST_JOB_INSERT);

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
    if (rc == SQLITE_CONSTRAINT_UNIQUE) {
        gw_store_op_fail(op, "job %s is already recorded", j->id);
        return GW_ERR;
    }
    if (rc != SQLITE_DONE) {
        gw_store_op_fail(op, "the job store failed: %s", sqlite3_errmsg(s->db));
        return GW_ERR;
    }
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

/* queued 0 < in_progress 1 < completed = failed 2: a status only moves forward */
static int status_rank(enum gw_job_status st)
{
    return st == GW_JOB_QUEUED ? 0 : st == GW_JOB_IN_PROGRESS ? 1 : 2;
}

static int op_update(struct sqlite_store *s, struct gw_store_op *op)
{
    const struct gw_job_update *u = &op->upd;

    if (load_job(s, op, u->id) != GW_OK)
        return GW_ERR;
    if (op->res.job == NULL)
        return GW_OK;
    enum gw_job_status prev = op->res.job->status;
    op->res.prev_status = prev;
    if (u->status != prev && status_rank(u->status) <= status_rank(prev))
        return GW_OK; /* stale, or a terminal state changing: keep the row */

    sqlite3_stmt *st = stmt(s, ST_JOB_UPDATE);
    bind_text(st, 1, u->id);
    bind_text(st, 2, gw_job_status_name(u->status));
    if (u->object != NULL)
        sqlite3_bind_text(st, 3, u->object, (int)u->object_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, u->now);
    if (exec_done(s, st, op) != GW_OK)
        return GW_ERR;
    if (u->status == GW_JOB_FAILED && prev != GW_JOB_FAILED &&
        usage_add(s, op, op->res.job, 0, 0, 1, 0) != GW_OK)
        return GW_ERR;
    return load_job(s, op, u->id);
}

static int op_delete(struct sqlite_store *s, struct gw_store_op *op)
{
    sqlite3_stmt *st = stmt(s, ST_JOB_DELETE);

    bind_text(st, 1, op->job.id);
    sqlite3_bind_int64(st, 2, op->t1);
    if (exec_done(s, st, op) != GW_OK)
        return GW_ERR;
    return load_job(s, op, op->job.id);
}

static int op_refund(struct sqlite_store *s, struct gw_store_op *op)
{
    sqlite3_stmt *st = stmt(s, ST_JOB_REFUND);

    bind_text(st, 1, op->job.id);
    if (exec_done(s, st, op) != GW_OK)
        return GW_ERR;
    op->res.refunded = sqlite3_changes(s->db) == 1;
    if (load_job(s, op, op->job.id) != GW_OK)
        return GW_ERR;
    if (op->res.refunded && op->res.job != NULL &&
        usage_add(s, op, op->res.job, 0, 0, 0, op->res.job->seconds) != GW_OK)
        return GW_ERR;
    return GW_OK;
}

/* Run a SELECT of JOB_COLS (bound) into res->jobs; at most max rows kept,
 * *more set if another one followed. */
static int collect_jobs(struct sqlite_store *s, struct gw_store_op *op, sqlite3_stmt *st,
                        unsigned max, int *more)
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
        n++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return exec_done(s, st, op);
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
        st = stmt(s, ST_JOB_CURSOR);
        bind_text(st, 1, q->after);
        bind_text(st, 2, q->key_name);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) { /* none, or another key's: the same answer */
            sqlite3_reset(st);
            op->res.after_unknown = 1;
            return GW_OK;
        }
        if (rc != SQLITE_ROW)
            return exec_done(s, st, op);
        c_created = sqlite3_column_int64(st, 0);
        c_seq = sqlite3_column_int64(st, 1);
        sqlite3_reset(st);
    }
    st = stmt(s, q->order == GW_ORDER_ASC ? ST_JOB_LIST_ASC : ST_JOB_LIST_DESC);
    bind_text(st, 1, q->key_name);
    sqlite3_bind_int64(st, 2, c_created);
    sqlite3_bind_int64(st, 3, c_seq);
    sqlite3_bind_int(st, 4, (int)q->limit + 1);
    return collect_jobs(s, op, st, q->limit, &op->res.has_more);
}

static int op_claim(struct sqlite_store *s, struct gw_store_op *op)
{
    sqlite3_stmt *st = stmt(s, ST_JOB_CLAIM);
    int more;

    sqlite3_bind_int64(st, 1, op->t1);
    sqlite3_bind_int(st, 2, (int)op->limit);
    if (collect_jobs(s, op, st, op->limit, &more) != GW_OK)
        return GW_ERR;
    for (size_t i = 0; i < op->res.njobs; i++) {
        struct gw_job *j = (struct gw_job *)&op->res.jobs[i];
        st = stmt(s, ST_JOB_TOUCH);
        bind_text(st, 1, j->id);
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
                return exec_done(s, st, op);
            const char *key = gw_store_op_strdup(op, (const char *)sqlite3_column_text(st, 0),
                                                 (size_t)sqlite3_column_bytes(st, 0));
            sqlite3_reset(st);
            if (key == NULL) {
                gw_store_op_fail(op, "out of memory");
                return GW_ERR;
            }
            op->prune_key = key;
            op->prune_state = PRUNE_IN_KEY;
            keys++;
        }
        st = stmt(s, ST_PRUNE_JOBS);
        bind_text(st, 1, op->prune_key);
        sqlite3_bind_int64(st, 2, op->t1);
        sqlite3_bind_int(st, 3, PRUNE_STEP - jobs);
        if (exec_done(s, st, op) != GW_OK)
            return GW_ERR;
        int n = sqlite3_changes(s->db);
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
            if (op->res.answer_body == NULL) {
                gw_store_op_fail(op, "out of memory");
                return GW_ERR;
            }
            return GW_OK;
        }
        op->res.idem = GW_IDEM_IN_FLIGHT;
        sqlite3_reset(st);
        return GW_OK;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return exec_done(s, st, op);
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
static int usage_collect(sqlite3 *db, sqlite3_stmt *st, const struct gw_usage_query *q,
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

    if (usage_collect(s->db, stmt(s, ST_USAGE), &op->usage_q, &u, msg, sizeof(msg)) != GW_OK) {
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
        if (rows[i].key_name == NULL || rows[i].model == NULL)
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

/* Operations that only read: a cancelled one is skipped. */
static int op_reads_only(enum gw_store_op_kind k)
{
    return k == GW_OP_JOB_GET || k == GW_OP_JOB_LIST || k == GW_OP_USAGE;
}

static int run_op(struct sqlite_store *s, struct gw_store_op *op)
{
    switch (op->kind) {
    case GW_OP_JOB_PUT:
        return op_put(s, op);
    case GW_OP_JOB_GET:
        return load_job(s, op, op->job.id);
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
    }
    gw_store_op_fail(op, "unknown store operation");
    return GW_ERR;
}

/* -------------------------------------------------------- the store thread */

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Forget what a failed op had produced and fail it with msg. */
static void fail_all(struct gw_store_op *batch, const char *msg)
{
    for (struct gw_store_op *op = batch; op != NULL; op = op->next) {
        if (op->res.rc != GW_ERR)
            gw_store_op_fail(op, "%s", msg);
    }
}

/* The batch's transaction cannot go on: roll it back (if SQLite has not) and
 * fail every operation with msg. */
static void abort_batch(struct sqlite_store *s, struct gw_store_op *batch, const char *msg)
{
    if (!sqlite3_get_autocommit(s->db))
        exec_simple(s, ST_ROLLBACK);
    fail_all(batch, msg);
}

/*
 * One transaction for the whole batch. Each operation runs inside a savepoint:
 * one that fails is rolled back alone and answered GW_ERR; the others commit.
 * The usage counts they noted are written last, once per (day, key, model), in
 * the same transaction. If SQLite itself ended the transaction (disk full, I/O
 * error), the counts cannot be written, or COMMIT fails, every operation of the
 * batch fails: none of its writes is on disk. Results are delivered only after
 * COMMIT returned.
 */
static void run_batch(struct sqlite_store *s, struct gw_store_op *batch, unsigned n)
{
    struct gw_store_op *op, *next, *again = NULL, *again_last = NULL;
    char msg[256];
    int broken = 0;
    unsigned nagain = 0;
    uint64_t failed = 0;
    int64_t t0 = mono_ms();

    s->nudelta = 0;
    if (!sqlite3_get_autocommit(s->db)) /* never expected: a ROLLBACK that failed before */
        exec_simple(s, ST_ROLLBACK);
    if (exec_simple(s, ST_BEGIN) != GW_OK) {
        snprintf(msg, sizeof(msg), "the job store cannot begin a transaction: %s",
                 sqlite3_errmsg(s->db));
        fail_all(batch, msg);
        broken = 1;
    }
    for (op = batch; op != NULL && !broken; op = op->next) {
        if (op_reads_only(op->kind) && atomic_load_explicit(&op->cancelled, memory_order_relaxed))
            continue; /* nobody will read the answer */
        /* a usage read sees the counts of the operations before it */
        if (op->kind == GW_OP_USAGE && usage_flush(s, msg, sizeof(msg)) != GW_OK) {
            abort_batch(s, batch, msg);
            broken = 1;
            break;
        }
        if (exec_simple(s, ST_SAVEPOINT) != GW_OK) {
            gw_store_op_fail(op, "the job store failed: %s", sqlite3_errmsg(s->db));
            continue;
        }
        unsigned nudelta = s->nudelta;
        int rc = run_op(s, op);
        if (rc == GW_AGAIN) {
            op->res.rc = GW_AGAIN; /* after the commit: queued again */
            rc = GW_OK;
        }
        if (rc == GW_OK) {
            exec_simple(s, ST_RELEASE);
        } else if (sqlite3_get_autocommit(s->db)) {
            /* SQLite rolled the whole transaction back (SQLITE_FULL, IOERR...) */
            snprintf(msg, sizeof(msg), "%.180s (the whole transaction was rolled back)",
                     op->err.message);
            fail_all(batch, msg);
            broken = 1;
        } else {
            exec_simple(s, ST_ROLLBACK_TO);
            exec_simple(s, ST_RELEASE);
            s->nudelta = nudelta; /* its usage goes too */
        }
    }
    if (!broken && usage_flush(s, msg, sizeof(msg)) != GW_OK) {
        abort_batch(s, batch, msg);
        broken = 1;
    }
    if (!broken && exec_simple(s, ST_COMMIT) != GW_OK) {
        snprintf(msg, sizeof(msg), "the job store cannot commit: %s", sqlite3_errmsg(s->db));
        abort_batch(s, batch, msg);
        broken = 1;
    }
    if (broken && s->base.log != NULL)
        s->base.log(0, "store %s: %s", s->path, msg); /* 0: GW_LOG_ERROR */
    int64_t ms = mono_ms() - t0;
    if (ms >= SLOW_MS && s->base.log != NULL)
        s->base.log(1, "store %s: a transaction of %u operations took %lld ms", s->path, n,
                    (long long)ms); /* 1: GW_LOG_WARN */

    /* counted before the results go out: a caller that has its answer sees it counted */
    unsigned unheard = 0; /* failed writes nobody waits for: logged here, once per batch */
    const char *unheard_msg = NULL;
    for (op = batch; op != NULL; op = op->next) {
        nagain += op->res.rc == GW_AGAIN;
        failed += op->res.rc == GW_ERR;
        if (op->res.rc == GW_ERR && op->cb == NULL) {
            unheard++;
            unheard_msg = op->err.message;
        }
    }
    if (unheard > 0 && !broken && s->base.log != NULL)
        s->base.log(0, "store %s: %u writes nobody waits for failed: %s", s->path, unheard,
                    unheard_msg);
    pthread_mutex_lock(&s->mu);
    s->stats.transactions++;
    s->stats.ops += n - nagain; /* a prune still under way is counted when it is done */
    s->stats.failed += failed;
    if (n > s->stats.max_batch)
        s->stats.max_batch = n;
    pthread_mutex_unlock(&s->mu);

    for (op = batch; op != NULL; op = next) {
        next = op->next;
        op->next = NULL;
        if (op->res.rc == GW_AGAIN) {
            op->res.rc = GW_OK;
            if (again_last != NULL)
                again_last->next = op;
            else
                again = op;
            again_last = op;
            continue;
        }
        gw_store_op_done(op);
    }
    if (again != NULL) { /* behind what arrived meanwhile */
        pthread_mutex_lock(&s->mu);
        if (s->tail != NULL)
            s->tail->next = again;
        else
            s->head = again;
        s->tail = again_last;
        s->stats.queued += nagain;
        pthread_mutex_unlock(&s->mu);
    }
}

/* Called by SQLite after each commit (instead of its automatic checkpoint):
 * frames is the WAL's length. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct sqlite_store *s = arg;

    (void)db;
    (void)name;
    /* shorter than before: the WAL started over (every frame had been copied). A
     * first commit longer than the old WAL is counted short by the old length: a
     * few pages after an idle checkpoint, never more than a batch's. */
    s->wal_pending += frames >= s->wal_frames ? frames - s->wal_frames : frames;
    s->wal_frames = frames;
    return SQLITE_OK;
}

/* Copy what the WAL holds back into the file, as far as readers allow
 * (PASSIVE: never waits for them; one holding an older snapshot keeps the
 * frames it may need, and the next checkpoint copies them). The next write
 * after a complete one starts the WAL over from its beginning. */
static void wal_checkpoint(struct sqlite_store *s)
{
    int frames = 0, copied = 0;
    int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &frames, &copied);

    if (rc == SQLITE_OK) {
        s->wal_frames = frames;
        s->wal_pending = frames > copied ? frames - copied : 0;
        s->ckpt_failed = 0;
        return;
    }
    /* SQLITE_BUSY: another connection is checkpointing; an I/O error: the next
     * commit will tell the callers. Either way, tried again later. */
    if (!s->ckpt_failed && s->base.log != NULL)
        s->base.log(1, "store %s: checkpoint failed: %s", s->path, sqlite3_errmsg(s->db));
    s->ckpt_failed = 1;
}

static void *store_main(void *arg)
{
    struct sqlite_store *s = arg;
    int idle_tried = 0; /* the idle checkpoint ran since the last batch */
    int deadline_set = 0;
    struct timespec deadline;

    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->head == NULL && !s->closing) {
            if (s->wal_pending == 0 || idle_tried) {
                pthread_cond_wait(&s->cv, &s->mu);
                continue;
            }
            /* idle, the WAL holds pages to copy: checkpoint unless work comes soon */
            if (!deadline_set) {
                clock_gettime(CLOCK_MONOTONIC, &deadline);
                deadline.tv_sec += CKPT_IDLE_MS / 1000;
                deadline.tv_nsec += (long)(CKPT_IDLE_MS % 1000) * 1000000;
                if (deadline.tv_nsec >= 1000000000) {
                    deadline.tv_sec++;
                    deadline.tv_nsec -= 1000000000;
                }
                deadline_set = 1;
            }
            if (pthread_cond_timedwait(&s->cv, &s->mu, &deadline) == ETIMEDOUT &&
                s->head == NULL && !s->closing) {
                idle_tried = 1;
                pthread_mutex_unlock(&s->mu);
                wal_checkpoint(s);
                pthread_mutex_lock(&s->mu);
            }
        }
        deadline_set = 0;
        if (s->head == NULL)
            break; /* closing, and everything done (close checkpoints) */
        struct gw_store_op *batch = s->head, *last = s->head;
        unsigned n = 1;
        while (last->next != NULL && n < MAX_BATCH) {
            last = last->next;
            n++;
        }
        s->head = last->next;
        if (s->head == NULL)
            s->tail = NULL;
        last->next = NULL;
        s->stats.queued -= n;
        pthread_mutex_unlock(&s->mu);
        run_batch(s, batch, n);
        idle_tried = 0;
        /* its results are out: the checkpoint delays only the next batch */
        if (s->wal_pending >= CKPT_PAGES)
            wal_checkpoint(s);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static int sqlite_submit(struct gw_store *base, struct gw_store_op *op, struct gw_error *err)
{
    struct sqlite_store *s = (struct sqlite_store *)base;

    pthread_mutex_lock(&s->mu);
    if (s->closing || s->stats.queued >= MAX_QUEUED) {
        int closing = s->closing;
        pthread_mutex_unlock(&s->mu);
        return gw_error_set(err, 503, "server_error", "store_error", NULL,
                            closing ? "the job store is closing"
                                    : "the job store is overloaded (its disk is too slow)");
    }
    op->next = NULL;
    if (s->tail != NULL)
        s->tail->next = op;
    else
        s->head = op;
    s->tail = op;
    s->stats.queued++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return GW_OK;
}

static void sqlite_stats(struct gw_store *base, struct gw_store_stats *st)
{
    struct sqlite_store *s = (struct sqlite_store *)base;

    pthread_mutex_lock(&s->mu);
    *st = s->stats;
    pthread_mutex_unlock(&s->mu);
}

static void sqlite_free(struct sqlite_store *s)
{
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    if (s->db != NULL)
        sqlite3_close(s->db); /* the last connection: checkpoints, removes the WAL */
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->path);
    free(s);
}

static void sqlite_close(struct gw_store *base)
{
    struct sqlite_store *s = (struct sqlite_store *)base;

    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->closing = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    sqlite_free(s);
}

static const struct gw_store_engine sqlite_engine = {
    .name = "sqlite",
    .submit = sqlite_submit,
    .close = sqlite_close,
    .stats = sqlite_stats,
};

/* ------------------------------------------------------------------- open */

/* Whether the directory holding path can take new files (the WAL's). */
static int dir_writable(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');

    if (slash == NULL)
        return access(".", W_OK | X_OK) == 0;
    snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
    return access(dir, W_OK | X_OK) == 0;
}

/* An error on open, naming the file and saying what to do where we can tell. */
static int open_error(struct gw_error *err, const char *path, sqlite3 *db, const char *doing)
{
    int code = db != NULL ? sqlite3_extended_errcode(db) : SQLITE_CANTOPEN;
    const char *msg = db != NULL ? sqlite3_errmsg(db) : "out of memory";

    if ((code & 0xff) == SQLITE_NOTADB)
        return gw_error_set(err, 0, NULL, NULL, NULL,
                            "%s: not an SQLite database (is [store] path the right file?)", path);
    if (code == SQLITE_READONLY_DIRECTORY || (code & 0xff) == SQLITE_CANTOPEN ||
        (code & 0xff) == SQLITE_READONLY) {
        if (access(path, F_OK) == 0 && access(path, R_OK | W_OK) != 0)
            return gw_error_set(err, 0, NULL, NULL, NULL,
                                "%s: the file is not readable and writable by this user", path);
        if (!dir_writable(path))
            return gw_error_set(err, 0, NULL, NULL, NULL,
                                "%s: cannot %s: its directory must exist and be writable by "
                                "this user (the file and its -wal and -shm files live there)",
                                path, doing);
    }
    return gw_error_set(err, 0, NULL, NULL, NULL, "%s: cannot %s: %s", path, doing, msg);
}

/* A one-row, one-integer query (PRAGMA user_version...). */
static int query_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

    if (rc != SQLITE_OK)
        return GW_ERR;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? GW_OK : GW_ERR;
}

/* The version of the file, checked: 0 for a new (empty) file. */
static int schema_version(sqlite3 *db, const char *path, int64_t *version, struct gw_error *err)
{
    int64_t tables = 0;

    if (query_int(db, "PRAGMA user_version", version) != GW_OK)
        return open_error(err, path, db, "read it");
    if (*version > GW_STORE_SCHEMA_VERSION)
        return gw_error_set(err, 0, NULL, NULL, NULL,
                            "%s: schema version %lld is newer than this gateway knows (%d): run "
                            "the newer gateway that wrote it, or give another file",
                            path, (long long)*version, GW_STORE_SCHEMA_VERSION);
    if (*version < 0)
        return gw_error_set(err, 0, NULL, NULL, NULL, "%s: schema version %lld is not ours",
                            path, (long long)*version);
    if (*version == 0) {
        if (query_int(db, "SELECT count(*) FROM sqlite_master", &tables) != GW_OK)
            return open_error(err, path, db, "read it");
        if (tables > 0)
            return gw_error_set(err, 0, NULL, NULL, NULL,
                                "%s: an SQLite database of another program (tables, but no "
                                "schema version): refusing to change it", path);
    }
    return GW_OK;
}

/* Bring the file to GW_STORE_SCHEMA_VERSION, in one transaction. */
static int migrate(sqlite3 *db, const char *path, struct gw_error *err)
{
    int64_t version;
    char sql[64];

    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return open_error(err, path, db, "write it");
    /* again, inside the transaction: another process may have migrated meanwhile */
    if (schema_version(db, path, &version, err) != GW_OK)
        goto fail;
    for (int64_t v = version + 1; v <= GW_STORE_SCHEMA_VERSION; v++) {
        for (const char *const *step = migrations[v - 1]; *step != NULL; step++) {
            if (sqlite3_exec(db, *step, NULL, NULL, NULL) != SQLITE_OK) {
                char doing[64];
                snprintf(doing, sizeof(doing), "migrate it to schema version %lld",
                         (long long)v);
                open_error(err, path, db, doing);
                goto fail;
            }
        }
    }
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", GW_STORE_SCHEMA_VERSION);
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        open_error(err, path, db, "write it");
        goto fail;
    }
    return GW_OK;

fail:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return GW_ERR;
}

struct gw_store *gw_store_sqlite_open(const struct gw_store_options *o, struct gw_error *err)
{
    struct sqlite_store *s = calloc(1, sizeof(*s));
    const char *path = o->path;
    int64_t version;
    sqlite3_stmt *st;

    if (s == NULL || (s->path = strdup(path)) == NULL) {
        free(s);
        gw_error_set(err, 0, NULL, NULL, NULL, "%s: out of memory", path);
        return NULL;
    }
    s->base.engine = &sqlite_engine;
    s->base.log = o->log;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca; /* the idle checkpoint's timed wait: a monotonic clock */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);

    /* NOMUTEX: one thread at a time uses the connection (this one, then the store thread) */
    if (sqlite3_open_v2(path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        open_error(err, path, s->db, "open it");
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    if (sqlite3_db_readonly(s->db, "main") == 1) {
        gw_error_set(err, 0, NULL, NULL, NULL,
                     "%s: the file is read-only: the gateway must be able to write it", path);
        goto fail;
    }
    if (schema_version(s->db, path, &version, err) != GW_OK)
        goto fail;

    /* WAL: readers (gateway usage) never block the writer, and a commit is one
     * append to the -wal file. synchronous = normal: a commit survives the
     * process (kill -9) but may be lost with the machine (power); full: fsync
     * per commit, survives both. */
    if (query_int(s->db, "PRAGMA journal_mode = WAL", &(int64_t){ 0 }) != GW_OK ||
        sqlite3_exec(s->db, o->sync_full ? "PRAGMA synchronous = FULL"
                                         : "PRAGMA synchronous = NORMAL",
                     NULL, NULL, NULL) != SQLITE_OK) {
        open_error(err, path, s->db, "switch it to WAL mode");
        goto fail;
    }
    if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK) {
        int wal = sqlite3_step(st) == SQLITE_ROW &&
                  strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
        sqlite3_finalize(st);
        if (!wal) {
            gw_error_set(err, 0, NULL, NULL, NULL,
                         "%s: cannot switch it to WAL mode (a network file system?)", path);
            goto fail;
        }
    }
    /* no automatic checkpoint inside COMMIT: the store thread runs them (wal_hook) */
    sqlite3_wal_hook(s->db, wal_hook, s);
    if (migrate(s->db, path, err) != GW_OK)
        goto fail;
    /* in flight when the previous process ended: it will never finish them */
    if (sqlite3_exec(s->db, "DELETE FROM idempotency WHERE state = 'in_flight'", NULL, NULL,
                     NULL) != SQLITE_OK) {
        open_error(err, path, s->db, "write it");
        goto fail;
    }
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                               NULL) != SQLITE_OK) {
            gw_error_set(err, 0, NULL, NULL, NULL, "%s: cannot prepare a statement: %s", path,
                         sqlite3_errmsg(s->db));
            goto fail;
        }
    }
    if (pthread_create(&s->thread, NULL, store_main, s) != 0) {
        gw_error_set(err, 0, NULL, NULL, NULL, "%s: cannot start the store thread", path);
        goto fail;
    }
    s->thread_started = 1;
    return &s->base;

fail:
    sqlite_free(s);
    return NULL;
}

/* ----------------------------------------------------- usage, synchronous */

int gw_store_sqlite_usage_read(const struct gw_store_options *o, const struct gw_usage_query *q,
                               struct gw_usage **out, struct gw_error *err)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t version;
    char msg[200];
    int rc = GW_ERR;

    /* read-only: never creates the file, never migrates it (the gateway does) */
    if (sqlite3_open_v2(o->path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        if (access(o->path, F_OK) != 0)
            gw_error_set(err, 0, NULL, NULL, NULL, "%s: no such file (the gateway creates it "
                         "when it starts with [store] path set)", o->path);
        else
            open_error(err, o->path, db, "open it");
        goto out;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    if (schema_version(db, o->path, &version, err) != GW_OK)
        goto out;
    if (version == 0) {
        gw_error_set(err, 0, NULL, NULL, NULL, "%s: empty: no gateway has used it yet",
                     o->path);
        goto out;
    }
    if (sqlite3_prepare_v2(db, stmt_sql[ST_USAGE], -1, &st, NULL) != SQLITE_OK) {
        open_error(err, o->path, db, "read it");
        goto out;
    }
    if (usage_collect(db, st, q, out, msg, sizeof(msg)) != GW_OK) {
        gw_error_set(err, 0, NULL, NULL, NULL, "%s: cannot read it: %s", o->path, msg);
        goto out;
    }
    rc = GW_OK;

out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}
