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
#define _GNU_SOURCE /* pthread_setname_np */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sqlite_int.h"

#define MAX_QUEUED 65536    /* operations waiting at most: past it (the disk stalls), calls
                             * are refused (503) rather than memory growing without bound */
#define SLOW_MS 1000        /* a transaction slower than this is logged */
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
/* Commit delay (PostgreSQL's commit_delay, applied only under load): when
 * operations came while the last batch ran, the thread waits up to LINGER_US
 * (or until LINGER_FULL operations wait) before it begins the next one. A
 * commit's cost is mostly per transaction (its WAL frames, the locks, the
 * wake-ups), so batches of 6 creates cost 10 us each and batches of 30, 5
 * (docs/store.md, "Commit delay"). A lone operation never waits. */
#define LINGER_US 500
#define LINGER_FULL 64

static const struct gw_store_engine sqlite_engine;

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
        sq_exec_simple(s, ST_ROLLBACK);
    fail_all(batch, msg);
}

/*
 * One transaction for the whole batch. Each operation that writes more than
 * once runs inside a savepoint: one that fails is rolled back alone and
 * answered GW_ERR; the others commit (sq_op_atomic: reads and plain puts need
 * none).
 * The usage counts they noted are written last, once per (day, key, model), in
 * the same transaction. If SQLite itself ended the transaction (disk full, I/O
 * error), the counts cannot be written, or COMMIT fails, every operation of the
 * batch fails: none of its writes is on disk. Results are delivered only after
 * COMMIT returned.
 */
static int run_batch(struct sqlite_store *s, struct gw_store_op *batch, unsigned n,
                     unsigned long submitted)
{
    struct gw_store_op *op, *next, *again = NULL, *again_last = NULL;
    char msg[256];
    int broken = 0;
    unsigned nagain = 0;
    uint64_t failed = 0;
    int64_t t0 = mono_ms();

    s->nudelta = 0;
    if (!sqlite3_get_autocommit(s->db)) /* never expected: a ROLLBACK that failed before */
        sq_exec_simple(s, ST_ROLLBACK);
    if (sq_exec_simple(s, ST_BEGIN) != GW_OK) {
        snprintf(msg, sizeof(msg), "the job store cannot begin a transaction: %s",
                 sqlite3_errmsg(s->db));
        fail_all(batch, msg);
        broken = 1;
    }
    for (op = batch; op != NULL && !broken; op = op->next) {
        if (sq_op_reads_only(op->kind) && atomic_load_explicit(&op->cancelled, memory_order_relaxed))
            continue; /* nobody will read the answer */
        /* a usage read sees the counts of the operations before it */
        if (op->kind == GW_OP_USAGE && sq_usage_flush(s, msg, sizeof(msg)) != GW_OK) {
            abort_batch(s, batch, msg);
            broken = 1;
            break;
        }
        int savepoint = !sq_op_atomic(s, op);
        if (savepoint && sq_exec_simple(s, ST_SAVEPOINT) != GW_OK) {
            gw_store_op_fail(op, "the job store failed: %s", sqlite3_errmsg(s->db));
            continue;
        }
        unsigned nudelta = s->nudelta;
        int rc = sq_run_op(s, op);
        if (rc == GW_AGAIN) {
            op->res.rc = GW_AGAIN; /* after the commit: queued again */
            rc = GW_OK;
        }
        if (rc == GW_OK) {
            if (savepoint)
                sq_exec_simple(s, ST_RELEASE);
        } else if (sqlite3_get_autocommit(s->db)) {
            /* SQLite rolled the whole transaction back (SQLITE_FULL, IOERR...) */
            snprintf(msg, sizeof(msg), "%.180s (the whole transaction was rolled back)",
                     op->err.message);
            fail_all(batch, msg);
            broken = 1;
        } else {
            if (savepoint) {
                sq_exec_simple(s, ST_ROLLBACK_TO);
                sq_exec_simple(s, ST_RELEASE);
            }
            s->nudelta = nudelta; /* its usage goes too */
        }
    }
    if (!broken && sq_usage_flush(s, msg, sizeof(msg)) != GW_OK) {
        abort_batch(s, batch, msg);
        broken = 1;
    }
    if (!broken && sq_exec_simple(s, ST_COMMIT) != GW_OK) {
        snprintf(msg, sizeof(msg), "the job store cannot commit: %s", sqlite3_errmsg(s->db));
        abort_batch(s, batch, msg);
        broken = 1;
    }
    sq_ids_recheck(s);
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

    struct gw_store_op *done = NULL, **done_tail = &done;
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
        *done_tail = op;
        done_tail = &op->next;
    }
    /* under load: operations came while this transaction ran (counted before its
     * results go out: what the callbacks submit in answer is not load) */
    int busy = atomic_load_explicit(&s->submitted, memory_order_relaxed) != submitted;
    gw_store_ops_done(done);
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
    return busy;
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

static struct timespec mono_after_us(long us)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += us / 1000000;
    ts.tv_nsec += (us % 1000000) * 1000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

/* Under load, wait for the batch to fill (LINGER_US): called with s->mu held. */
static void linger(struct sqlite_store *s)
{
    struct timespec deadline = mono_after_us(LINGER_US);

    s->stats.lingered++;
    s->wake_at = LINGER_FULL;
    while (!s->closing && s->stats.queued < LINGER_FULL) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &deadline) == ETIMEDOUT)
            break;
    }
}

static void *store_main(void *arg)
{
    struct sqlite_store *s = arg;
    int idle_tried = 0; /* the idle checkpoint ran since the last batch */
    int deadline_set = 0;
    int busy = 0; /* operations came while the last batch ran: under load */
    struct timespec deadline;

    pthread_setname_np(pthread_self(), "gw-store");
    pthread_mutex_lock(&s->mu);
    for (;;) {
        s->wake_at = 1;
        if (s->head == NULL)
            busy = 0;
        while (s->head == NULL && !s->closing) {
            if (s->wal_pending == 0 || idle_tried) {
                pthread_cond_wait(&s->cv, &s->mu);
                continue;
            }
            /* idle, the WAL holds pages to copy: checkpoint unless work comes soon */
            if (!deadline_set) {
                deadline = mono_after_us(CKPT_IDLE_MS * 1000L);
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
        if (busy && !s->closing)
            linger(s);
        s->wake_at = 0; /* busy: submitters need not signal */
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
        unsigned long submitted = atomic_load_explicit(&s->submitted, memory_order_relaxed);
        pthread_mutex_unlock(&s->mu);
        /* load: operations came while it ran (not a prune's next step, queued
         * again by run_batch itself, nor what came after its results or during
         * the checkpoint) */
        busy = run_batch(s, batch, n, submitted);
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
    atomic_fetch_add_explicit(&s->submitted, 1, memory_order_relaxed);
    /* only when the thread waits for this much: a signal to a thread that is
     * busy or lingering would cost a futex call, or end the linger early */
    if (s->wake_at != 0 && s->stats.queued >= s->wake_at)
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
    sq_keys_finalize(s);
    if (s->db != NULL)
        sqlite3_close(s->db); /* the last connection: checkpoints, removes the WAL */
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    gw_idindex_free(&s->ids);
    free(s->suspect);
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
        sq_open_error(err, path, s->db, "open it");
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    if (sqlite3_db_readonly(s->db, "main") == 1) {
        gw_error_set(err, 0, NULL, NULL, NULL,
                     "%s: the file is read-only: the gateway must be able to write it", path);
        goto fail;
    }
    if (sq_schema_version(s->db, path, &version, err) != GW_OK)
        goto fail;

    /* WAL: readers (gateway usage) never block the writer, and a commit is one
     * append to the -wal file. synchronous = normal: a commit survives the
     * process (kill -9) but may be lost with the machine (power); full: fsync
     * per commit, survives both. */
    if (sq_query_int(s->db, "PRAGMA journal_mode = WAL", &(int64_t){ 0 }) != GW_OK ||
        sqlite3_exec(s->db, o->sync_full ? "PRAGMA synchronous = FULL"
                                         : "PRAGMA synchronous = NORMAL",
                     NULL, NULL, NULL) != SQLITE_OK) {
        sq_open_error(err, path, s->db, "switch it to WAL mode");
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
    if (sq_migrate(s->db, path, err) != GW_OK)
        goto fail;
    /* in flight when the previous process ended: it will never finish them */
    if (sqlite3_exec(s->db, "DELETE FROM idempotency WHERE state = 'in_flight'", NULL, NULL,
                     NULL) != SQLITE_OK) {
        sq_open_error(err, path, s->db, "write it");
        goto fail;
    }
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(s->db, sq_stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                               NULL) != SQLITE_OK) {
            gw_error_set(err, 0, NULL, NULL, NULL, "%s: cannot prepare a statement: %s", path,
                         sqlite3_errmsg(s->db));
            goto fail;
        }
    }
    char msg[200];
    if (sq_ids_load(s, msg, sizeof(msg)) != GW_OK) {
        gw_error_set(err, 0, NULL, NULL, NULL, "%s: %s", path, msg);
        goto fail;
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
            sq_open_error(err, o->path, db, "open it");
        goto out;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    if (sq_schema_version(db, o->path, &version, err) != GW_OK)
        goto out;
    if (version == 0) {
        gw_error_set(err, 0, NULL, NULL, NULL, "%s: empty: no gateway has used it yet",
                     o->path);
        goto out;
    }
    if (sqlite3_prepare_v2(db, sq_stmt_sql[q->by_kind ? ST_USAGE_KIND : ST_USAGE], -1, &st,
                           NULL) != SQLITE_OK) {
        sq_open_error(err, o->path, db, "read it");
        goto out;
    }
    if (sq_usage_collect(db, st, q, out, msg, sizeof(msg)) != GW_OK) {
        gw_error_set(err, 0, NULL, NULL, NULL, "%s: cannot read it: %s", o->path, msg);
        goto out;
    }
    rc = GW_OK;

out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}
