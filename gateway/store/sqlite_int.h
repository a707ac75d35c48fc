/*
 * sqlite_int.h - between the SQLite engine's three files: store_sqlite.c (the
 * store thread: queue, group commit, checkpoints, open), sqlite_ops.c (each
 * operation's SQL) and sqlite_schema.c (the schema, its migrations, open's
 * checks). Not for the rest of the gateway.
 */
#ifndef GW_SQLITE_INT_H
#define GW_SQLITE_INT_H

#include <sqlite3.h>

#include "idindex.h"
#include "store_int.h"

#define SQ_KEYS_STMTS 12    /* sqlite_keys.c's statements */
#define MAX_BATCH 256       /* operations in one transaction at most: bounds its latency */

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
    ST_JOB_ID,
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
    /* characters (issue 9) */
    ST_CHARACTER_INSERT,
    ST_CHARACTER_GET,
    /* usage per kind of job (issue 9) */
    ST_USAGE_KIND_ADD,
    ST_USAGE_KIND,
    ST_COUNT,
};

extern const char *const sq_stmt_sql[ST_COUNT];

/* A change to the usage counters of one (day, key, model sent), made by an
 * operation of the batch under way; written at the end (usage_flush). */
struct usage_delta {
    char day[11];
    const char *key_name, *model; /* the operation's strings (or its result's) */
    const char *kind;             /* the job's kind: usage_daily_kind's rows */
    int64_t jobs, seconds, failed, refunded;
    int merged;                   /* usage_flush: added into an earlier one */
    int kmerged;                  /* ... and for usage_daily_kind */
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
    unsigned wake_at;     /* signal cv once this many operations wait (0: the thread
                           * is busy and will look at the queue by itself) */
    _Atomic unsigned long submitted; /* operations submitted since open (the commit
                                      * delay's "came while the last batch ran") */
    struct gw_store_stats stats;
    /* the store thread's own (the WAL hook runs inside its COMMITs) */
    struct usage_delta udelta[MAX_BATCH]; /* one at most per operation */
    unsigned nudelta;
    int wal_frames;       /* frames in the WAL after the last commit */
    int wal_pending;      /* ... of which no checkpoint has copied yet */
    int ckpt_failed;      /* the last checkpoint failed: logged once */
    /* where each job's row is (idindex.h): loaded at open, the store thread's */
    struct gw_idindex ids;
    struct { uint64_t hash; int64_t seq; } *suspect; /* entries to check after the */
    size_t nsuspect, capsuspect;                     /* transaction (sq_ids_recheck) */
    sqlite3_stmt *keys_st[SQ_KEYS_STMTS]; /* sqlite_keys.c's, prepared on first use */
};

static const struct gw_store_engine sqlite_engine;

/* sqlite_ops.c: on the store thread */

/* Run one operation of the batch under way (inside its savepoint): GW_OK,
 * GW_AGAIN (a prune with more to do: queue it again after the commit) or
 * GW_ERR with op->err. */
int sq_run_op(struct sqlite_store *s, struct gw_store_op *op);

/* Operations that only read: a cancelled one is skipped. */
int sq_op_reads_only(enum gw_store_op_kind k);
/* 1 if op has nothing to undo when it fails (it runs without a savepoint) */
int sq_op_atomic(const struct sqlite_store *s, const struct gw_store_op *op);

/* A statement without bindings (BEGIN, COMMIT...), run to its end. */
int sq_exec_simple(struct sqlite_store *s, enum stmt_id id);

/* Write the usage counts the batch's operations noted, once per (day, key,
 * model); msg says why on GW_ERR. */
int sq_usage_flush(struct sqlite_store *s, char *msg, size_t msgcap);

/* The rows of the ST_USAGE statement st for q, into a new *out. */
int sq_usage_collect(sqlite3 *db, sqlite3_stmt *st, const struct gw_usage_query *q,
                     struct gw_usage **out, char *msg, size_t msgcap);

/* Load the id index from the jobs table (open). GW_OK, or GW_ERR with msg. */
int sq_ids_load(struct sqlite_store *s, char *msg, size_t msgcap);

/* After a transaction ended (committed or not): drop the index entries that
 * operations found pointing at no row of theirs. */
void sq_ids_recheck(struct sqlite_store *s);

/* The columns a read of jobs selects (sqlite_ops.c's JOB_SEL), and the reader: a row
 * of them into j, its strings owned by op. */
extern const char sq_job_cols[];
int sq_row_job(struct gw_store_op *op, sqlite3_stmt *st, struct gw_job *j);

/* sqlite_keys.c: the keys operations (on the store thread, or on a connection
 * of a _sync call) */
int sq_keys_run(struct sqlite_store *s, struct gw_store_op *op);
void sq_keys_finalize(struct sqlite_store *s);

/* sqlite_schema.c: at open, before the store thread starts */

/* An error on open, naming the file and saying what to do where we can tell. */
int sq_open_error(struct gw_error *err, const char *path, sqlite3 *db, const char *doing);

/* A one-row, one-integer query (PRAGMA user_version...). */
int sq_query_int(sqlite3 *db, const char *sql, int64_t *out);

/* The version of the file, checked: 0 for a new (empty) file. */
int sq_schema_version(sqlite3 *db, const char *path, int64_t *version, struct gw_error *err);

/* Bring the file to GW_STORE_SCHEMA_VERSION, in one transaction. */
int sq_migrate(sqlite3 *db, const char *path, struct gw_error *err);

#endif
