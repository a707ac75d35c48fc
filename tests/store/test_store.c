/*
 * test_store.c - the store (gateway/store/) against real SQLite files in a
 * temporary directory: schema and migration, start-up errors, every operation
 * and its contract (callback once, on the caller's loop, never from inside the
 * call; cancel; results after COMMIT), group commit, several loops on several
 * threads, the store's own checkpoints, and durability across a SIGKILL.
 *
 * Each test opens its own file. The loops are run by the test until a
 * condition holds, with a deadline (never sleeping).
 *
 * The same contract runs against Redis with --redis: the test starts its own
 * redis-server (no persistence, a free loopback port, its own directory) and
 * gives each test's "file" a key prefix of its own; the SQLite-only tests
 * (files, WAL, group commit) are skipped there, and Redis-only ones (a hung
 * Redis, a restart, SCRIPT FLUSH, wrong types, a wrong password) run.
 *
 * Run one test: test_store [--redis] NAME (see the table at the end).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <sqlite3.h>

#include "redis_limits.h"
#include "store/store.h"

/* ------------------------------------------------------------ assertions */

#include "../check.h"

static char tmpdir[256];
static char dbpath[512];

/* --redis: the engine under test is Redis (a private redis-server) */
static int use_redis;
static int redis_port;
static pid_t redis_pid;
static char redis_prefix[600];
static const char *redis_password; /* set by the wrong-password test */
static int redis_timeout_ms = 250;

/* The store's options for the "file" path: SQLite's file, or a Redis prefix
 * made of its name (a test that reopens the same path finds its data). */
static void store_opts(const char *path, int sync_full, struct gw_store_options *o)
{
    memset(o, 0, sizeof(*o));
    o->path = path;
    o->sync_full = sync_full;
    if (use_redis) {
        const char *base = strrchr(path, '/');
        snprintf(redis_prefix, sizeof(redis_prefix), "t:%s:", base != NULL ? base + 1 : path);
        o->redis_host = "127.0.0.1";
        o->redis_port = redis_port;
        o->redis_prefix = redis_prefix;
        o->redis_password = redis_password;
        o->redis_timeout_ms = redis_timeout_ms;
    }
}

/* A fresh file name for the current test. */
static const char *new_path(const char *name)
{
    snprintf(dbpath, sizeof(dbpath), "%s/%s.db", tmpdir, name);
    return dbpath;
}

static void logf_test(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_test(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fprintf(stderr, "  [store log %d] ", level);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static struct gw_store *open_store(const char *path, int sync_full)
{
    struct gw_store_options o;
    struct gw_error err;

    store_opts(path, sync_full, &o);
    o.log = logf_test;
    struct gw_store *s = gw_store_open(&o, &err);

    if (s == NULL) {
        fprintf(stderr, "FAIL %s: gw_store_open(%s): %s\n", cur_test, path, err.message);
        exit(1);
    }
    return s;
}

/* --------------------------------------------------------------- a loop */

struct tloop {
    struct event_base *base;
    struct event *tick;
    struct gw_store_loop *sl;
};

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

static void tl_init(struct tloop *t, struct gw_store *s)
{
    struct timeval tv = { 0, 10000 };
    struct event_config *ec = event_config_new();
    struct gw_error err;

    /* as the gateway's loops: no locks, so only this thread may touch the base */
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    t->base = event_base_new_with_config(ec);
    event_config_free(ec);
    CHECK(t->base != NULL);
    t->tick = event_new(t->base, -1, EV_PERSIST, tick_cb, NULL);
    event_add(t->tick, &tv);
    t->sl = gw_store_loop_new(s, t->base, &err);
    CHECK(t->sl != NULL);
}

static void tl_free(struct tloop *t)
{
    gw_store_loop_free(t->sl);
    event_free(t->tick);
    event_base_free(t->base);
}

#define RUN_UNTIL(t, cond, ms) RUN_BASE_UNTIL((t)->base, cond, ms)

/* ------------------------------------------------ capturing a result */

#define MAX_ROWS 1024

struct jcopy {
    char id[140], key_name[64], upstream_key[64], model_asked[64], model_sent[64], size[16];
    enum gw_job_kind kind;
    enum gw_job_status status;
    int seconds, refunded;
    int64_t created_at, updated_at, refreshed_at, deleted_at;
    char *object;
    size_t object_len;
};

struct capture {
    int calls;          /* callbacks run: must end at exactly 1 */
    int in_call;        /* set around the call: a callback from inside it fails */
    pthread_t thread;   /* the loop's thread: callbacks must run there */
    struct gw_store_op *op;
    int rc;
    char errmsg[256];
    int err_status;
    int has_job;
    struct jcopy job;
    enum gw_job_status prev_status;
    int refunded;
    size_t njobs;
    char (*ids)[140];   /* MAX_ROWS ids of a list or claim */
    int64_t *created;
    char (*owners)[64];
    int has_more, after_unknown;
    enum gw_idem_state idem;
    int answer_status;
    char answer[256];
    size_t answer_len;
    size_t nusage;
    struct {
        char day[11], key_name[64], model[64];
        int64_t jobs, seconds, failed, refunded_seconds;
    } usage[64];
    uint64_t pruned_jobs, pruned_idem;
};

static void cap_init(struct capture *c)
{
    memset(c, 0, sizeof(*c));
    c->ids = calloc(MAX_ROWS, sizeof(*c->ids));
    c->created = calloc(MAX_ROWS, sizeof(*c->created));
    c->owners = calloc(MAX_ROWS, sizeof(*c->owners));
    CHECK(c->ids != NULL && c->created != NULL && c->owners != NULL);
}

static void cap_reset(struct capture *c)
{
    char(*ids)[140] = c->ids;
    int64_t *created = c->created;
    char(*owners)[64] = c->owners;

    free(c->job.object);
    memset(c, 0, sizeof(*c));
    c->ids = ids;
    c->created = created;
    c->owners = owners;
    c->thread = pthread_self();
}

static void cap_free(struct capture *c)
{
    free(c->job.object);
    free(c->ids);
    free(c->created);
    free(c->owners);
}

static void copy_job(struct jcopy *d, const struct gw_job *j)
{
    snprintf(d->id, sizeof(d->id), "%s", j->id);
    snprintf(d->key_name, sizeof(d->key_name), "%s", j->key_name);
    snprintf(d->upstream_key, sizeof(d->upstream_key), "%s", j->upstream_key);
    snprintf(d->model_asked, sizeof(d->model_asked), "%s", j->model_asked);
    snprintf(d->model_sent, sizeof(d->model_sent), "%s", j->model_sent);
    snprintf(d->size, sizeof(d->size), "%s", j->size);
    d->kind = j->kind;
    d->status = j->status;
    d->seconds = j->seconds;
    d->refunded = j->refunded;
    d->created_at = j->created_at;
    d->updated_at = j->updated_at;
    d->refreshed_at = j->refreshed_at;
    d->deleted_at = j->deleted_at;
    d->object = malloc(j->object_len + 1);
    CHECK(d->object != NULL);
    memcpy(d->object, j->object, j->object_len + 1); /* results are NUL-terminated */
    CHECK(d->object[j->object_len] == '\0');
    d->object_len = j->object_len;
}

static void cap_cb(void *arg, const struct gw_store_res *res)
{
    struct capture *c = arg;

    CHECK(!c->in_call);                            /* never from inside the call */
    CHECK(pthread_equal(pthread_self(), c->thread)); /* on the caller's loop */
    CHECK(c->calls == 0);                          /* exactly once */
    c->calls++;
    c->op = NULL; /* the handle is dead now */
    c->rc = res->rc;
    if (res->rc != GW_OK) {
        CHECK(res->err != NULL);
        snprintf(c->errmsg, sizeof(c->errmsg), "%s", res->err->message);
        c->err_status = res->err->status;
        return;
    }
    if (res->job != NULL) {
        c->has_job = 1;
        copy_job(&c->job, res->job);
    }
    c->prev_status = res->prev_status;
    c->refunded = res->refunded;
    CHECK(res->njobs <= MAX_ROWS);
    c->njobs = res->njobs;
    for (size_t i = 0; i < res->njobs; i++) {
        snprintf(c->ids[i], sizeof(c->ids[i]), "%s", res->jobs[i].id);
        snprintf(c->owners[i], sizeof(c->owners[i]), "%s", res->jobs[i].key_name);
        c->created[i] = res->jobs[i].created_at;
    }
    c->has_more = res->has_more;
    c->after_unknown = res->after_unknown;
    c->idem = res->idem;
    c->answer_status = res->answer_status;
    if (res->answer_body != NULL) {
        CHECK(res->answer_body[res->answer_len] == '\0');
        snprintf(c->answer, sizeof(c->answer), "%s", res->answer_body);
    }
    c->answer_len = res->answer_len;
    CHECK(res->nusage <= 64);
    c->nusage = res->nusage;
    for (size_t i = 0; i < res->nusage; i++) {
        snprintf(c->usage[i].day, sizeof(c->usage[i].day), "%s", res->usage[i].day);
        snprintf(c->usage[i].key_name, sizeof(c->usage[i].key_name), "%s",
                 res->usage[i].key_name);
        snprintf(c->usage[i].model, sizeof(c->usage[i].model), "%s", res->usage[i].model);
        c->usage[i].jobs = res->usage[i].jobs;
        c->usage[i].seconds = res->usage[i].seconds;
        c->usage[i].failed = res->usage[i].failed;
        c->usage[i].refunded_seconds = res->usage[i].refunded_seconds;
    }
    c->pruned_jobs = res->pruned_jobs;
    c->pruned_idem = res->pruned_idem;
}

/* Make a call whose callback fills c; the call itself must queue (GW_AGAIN). */
#define SUBMIT(c, call)                                                     \
    do {                                                                    \
        struct gw_error err_;                                               \
        cap_reset(c);                                                       \
        (c)->in_call = 1;                                                   \
        int rc_ = (call);                                                   \
        (c)->in_call = 0;                                                   \
        if (rc_ != GW_AGAIN)                                                \
            fprintf(stderr, "  call refused: %s\n", err_.message);          \
        CHECK(rc_ == GW_AGAIN);                                             \
    } while (0)

#define CB(c) cap_cb, (c), &(c)->op, &err_

/* ... and wait for it */
#define DO(t, c, call)                          \
    do {                                        \
        SUBMIT(c, call);                        \
        RUN_UNTIL(t, (c)->calls == 1, 10000);   \
    } while (0)

#define DO_OK(t, c, call)                                             \
    do {                                                              \
        DO(t, c, call);                                               \
        if ((c)->rc != GW_OK)                                         \
            fprintf(stderr, "  store error: %s\n", (c)->errmsg);      \
        CHECK((c)->rc == GW_OK);                                      \
    } while (0)

/* ------------------------------------------------------------ job helpers */

#define T0 1767225600 /* 2026-01-01T00:00:00Z */
#define DAY 86400

struct jobbuf {
    struct gw_job j;
    char id[64];
    char object[256];
};

static const struct gw_job *mkjob(struct jobbuf *b, const char *id, const char *key,
                                  int64_t created, int seconds, enum gw_job_status st)
{
    snprintf(b->id, sizeof(b->id), "%s", id);
    snprintf(b->object, sizeof(b->object),
             "{\"id\":\"%s\",\"object\":\"video\",\"model\":\"veo_3_1\",\"status\":\"%s\","
             "\"created_at\":%lld,\"seconds\":\"%d\"}",
             id, gw_job_status_name(st), (long long)created, seconds);
    b->j = (struct gw_job){
        .id = b->id,
        .key_name = key,
        .upstream_key = "upstream-0",
        .kind = GW_JOB_CREATE,
        .model_asked = "veo3.1",
        .model_sent = "veo_3_1",
        .seconds = seconds,
        .size = "16x9",
        .status = st,
        .created_at = created,
        .updated_at = created,
        .object = b->object,
        .object_len = strlen(b->object),
    };
    return &b->j;
}

static void put_ok(struct tloop *t, struct capture *c, const struct gw_job *j)
{
    DO_OK(t, c, gw_store_job_put(t->sl, j, NULL, CB(c)));
}

static void get_ok(struct tloop *t, struct capture *c, const char *id)
{
    DO_OK(t, c, gw_store_job_get(t->sl, id, CB(c)));
}

static int64_t raw_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t v = -1;

    CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* A command to the private redis-server; the reply (free it). */
static redisReply *redis_cmd(const char *fmt, ...)
{
    struct timeval tv = { 5, 0 };
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    va_list ap;

    CHECK(c != NULL && !c->err);
    if (redis_password != NULL)
        freeReplyObject(redisCommand(c, "AUTH %s", redis_password));
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    CHECK(r != NULL);
    redisFree(c);
    return r;
}

/* Jobs recorded in the store of path (rows, or job hashes under its prefix). */
static int64_t count_jobs(const char *path)
{
    if (!use_redis)
        return raw_int(path, "SELECT count(*) FROM jobs");
    struct gw_store_options o;
    char pattern[700];
    store_opts(path, 0, &o);
    snprintf(pattern, sizeof(pattern), "%sjob:*", o.redis_prefix);
    redisReply *r = redis_cmd("KEYS %s", pattern);
    CHECK(r->type == REDIS_REPLY_ARRAY);
    int64_t n = (int64_t)r->elements;
    freeReplyObject(r);
    return n;
}

static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db;

    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
}

/* ------------------------------------------------------------------ tests */

static void test_create_migrate(void)
{
    const char *path = new_path("create");
    struct gw_store *s = open_store(path, 0);
    struct tloop t;
    struct capture c;

    cap_init(&c);
    /* a WAL reader while the gateway holds it */
    CHECK(raw_int(path, "PRAGMA user_version") == GW_STORE_SCHEMA_VERSION);
    CHECK(raw_int(path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                        "('jobs', 'usage_daily', 'idempotency')") == 3);
    {
        sqlite3 *db;
        sqlite3_stmt *st;
        CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
        CHECK(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK);
        CHECK(sqlite3_step(st) == SQLITE_ROW);
        CHECK(strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    tl_init(&t, s);
    get_ok(&t, &c, "video_none"); /* works, and finds nothing */
    CHECK(!c.has_job);
    tl_free(&t);
    gw_store_close(s);
    /* opened again: already at the version, nothing to migrate */
    s = open_store(path, 1);
    gw_store_close(s);
    CHECK(raw_int(path, "PRAGMA user_version") == GW_STORE_SCHEMA_VERSION);
    cap_free(&c);
}

static void test_reopen_keeps_data(void)
{
    const char *path = new_path("reopen");
    struct gw_store *s = open_store(path, 0);
    struct tloop t;
    struct capture c;
    struct jobbuf b;
    size_t biglen = 200 * 1024;
    char *big = malloc(biglen + 1);

    cap_init(&c);
    CHECK(big != NULL);
    /* a long job object, with every byte value JSON text may hold */
    for (size_t i = 0; i < biglen; i++)
        big[i] = (char)(' ' + i % 90);
    big[biglen] = '\0';
    tl_init(&t, s);
    struct gw_job j = *mkjob(&b, "video_keep", "alice", T0 + 5, 8, GW_JOB_QUEUED);
    j.kind = GW_JOB_REMIX;
    j.upstream_key = "acct-b";
    j.model_asked = "veo3.1-fast";
    j.model_sent = "veo_3_1-fast";
    j.size = "720x1280";
    j.object = big;
    j.object_len = biglen;
    j.updated_at = T0 + 6;
    put_ok(&t, &c, &j);
    memset(big, 'x', biglen); /* put copied it */
    tl_free(&t);
    gw_store_close(s);

    for (size_t i = 0; i < biglen; i++)
        big[i] = (char)(' ' + i % 90);
    s = open_store(path, 0);
    tl_init(&t, s);
    get_ok(&t, &c, "video_keep");
    CHECK(c.has_job);
    CHECK(strcmp(c.job.id, "video_keep") == 0);
    CHECK(strcmp(c.job.key_name, "alice") == 0);
    CHECK(strcmp(c.job.upstream_key, "acct-b") == 0);
    CHECK(c.job.kind == GW_JOB_REMIX);
    CHECK(strcmp(c.job.model_asked, "veo3.1-fast") == 0);
    CHECK(strcmp(c.job.model_sent, "veo_3_1-fast") == 0);
    CHECK(strcmp(c.job.size, "720x1280") == 0);
    CHECK(c.job.seconds == 8);
    CHECK(c.job.status == GW_JOB_QUEUED);
    CHECK(c.job.created_at == T0 + 5);
    CHECK(c.job.updated_at == T0 + 6);
    CHECK(c.job.refreshed_at == T0 + 6);
    CHECK(c.job.deleted_at == 0 && c.job.refunded == 0);
    CHECK(c.job.object_len == biglen && memcmp(c.job.object, big, biglen) == 0);
    /* the in-memory id index was loaded at open: the id is still taken */
    DO(&t, &c, gw_store_job_put(t.sl, mkjob(&b, "video_keep", "bob", T0, 8, GW_JOB_QUEUED), NULL,
                                CB(&c)));
    CHECK(c.rc == GW_ERR);
    CHECK_CONTAINS(c.errmsg, "video_keep is already recorded");
    tl_free(&t);
    gw_store_close(s);
    free(big);
    cap_free(&c);
}

/* Two loops on two threads: each puts its jobs, then reads the other's. */
struct worker {
    struct gw_store *s;
    int n;
    const char *me, *other;
    pthread_barrier_t *barrier;
    uint64_t ms;
};

struct counter {
    int done, failed;
    pthread_t thread;
};

static void count_cb(void *arg, const struct gw_store_res *res)
{
    struct counter *k = arg;

    CHECK(pthread_equal(pthread_self(), k->thread));
    k->done++;
    k->failed += res->rc != GW_OK;
}

struct found {
    struct counter *k;
    int found;
    const char *want_key;
};

static void found_cb(void *arg, const struct gw_store_res *res)
{
    struct found *f = arg;

    count_cb(f->k, res);
    if (res->rc == GW_OK && res->job != NULL && strcmp(res->job->key_name, f->want_key) == 0)
        f->found++;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct tloop t;
    struct counter k = { .thread = pthread_self() };
    struct found f = { .k = &k, .want_key = w->other };
    struct gw_error err;
    char id[64];
    uint64_t t0 = now_ms();

    tl_init(&t, w->s);
    for (int i = 0; i < w->n; i++) {
        struct jobbuf b;
        snprintf(id, sizeof(id), "video_%s_%d", w->me, i);
        CHECK(gw_store_job_put(t.sl, mkjob(&b, id, w->me, T0 + i, 4, GW_JOB_QUEUED), NULL,
                               count_cb, &k, NULL, &err) == GW_AGAIN);
    }
    RUN_UNTIL(&t, k.done == w->n, 30000);
    CHECK(k.failed == 0);
    pthread_barrier_wait(w->barrier); /* both have written */
    for (int i = 0; i < w->n; i++) {
        snprintf(id, sizeof(id), "video_%s_%d", w->other, i);
        CHECK(gw_store_job_get(t.sl, id, found_cb, &f, NULL, &err) == GW_AGAIN);
    }
    RUN_UNTIL(&t, k.done == 2 * w->n, 30000);
    CHECK(k.failed == 0);
    CHECK(f.found == w->n);
    tl_free(&t);
    w->ms = now_ms() - t0;
    return NULL;
}

static void test_two_loops(void)
{
    struct gw_store *s = open_store(new_path("two_loops"), 0);
    pthread_barrier_t barrier;
    struct worker a = { s, 300, "a", "b", &barrier, 0 }, b = { s, 300, "b", "a", &barrier, 0 };
    pthread_t ta, tb;

    pthread_barrier_init(&barrier, NULL, 2);
    CHECK(pthread_create(&ta, NULL, worker_main, &a) == 0);
    CHECK(pthread_create(&tb, NULL, worker_main, &b) == 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&barrier);
    gw_store_close(s);
}

/* Many puts from several loops at once: far fewer transactions than puts. */
struct putter {
    struct gw_store *s;
    int idx, n;
    const char *prefix;
};

static atomic_int submitted; /* puts made, all putters together */

static void *putter_main(void *arg)
{
    struct putter *p = arg;
    struct tloop t;
    struct counter k = { .thread = pthread_self() };
    struct gw_error err;
    char id[64];

    tl_init(&t, p->s);
    for (int i = 0; i < p->n; i++) {
        struct jobbuf b;
        snprintf(id, sizeof(id), "video_%s%d_%d", p->prefix, p->idx, i);
        CHECK(gw_store_job_put(t.sl, mkjob(&b, id, "alice", T0 + i, 8, GW_JOB_QUEUED), NULL,
                               count_cb, &k, NULL, &err) == GW_AGAIN);
        atomic_fetch_add(&submitted, 1);
    }
    RUN_UNTIL(&t, k.done == p->n, 60000);
    CHECK(k.failed == 0);
    tl_free(&t);
    return NULL;
}

/* NT loops put N jobs each; while hold is set, another connection holds the
 * write lock until every put is queued. Returns the transactions used. */
static uint64_t put_from_loops(struct gw_store *s, const char *path, const char *prefix,
                               int hold)
{
    enum { NT = 4, N = 1000 };
    struct gw_store_stats before, after;
    struct putter p[NT];
    pthread_t th[NT];
    sqlite3 *locker = NULL;
    uint64_t t0 = now_ms();

    if (hold) { /* a sqlite3 shell holding the write lock, say */
        CHECK(sqlite3_open(path, &locker) == SQLITE_OK);
        CHECK(sqlite3_exec(locker, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
    }
    gw_store_stats(s, &before);
    atomic_store(&submitted, 0);
    for (int i = 0; i < NT; i++) {
        p[i] = (struct putter){ s, i, N, prefix };
        CHECK(pthread_create(&th[i], NULL, putter_main, &p[i]) == 0);
    }
    if (hold) {
        while (atomic_load(&submitted) < NT * N) {
            CHECK(now_ms() - t0 < 4000); /* below the store's busy timeout */
            usleep(1000);
        }
        struct gw_store_stats mid;
        gw_store_stats(s, &mid);
        /* the store thread waits on the lock with at most one batch in hand */
        CHECK(mid.transactions == before.transactions);
        CHECK(mid.queued >= NT * N - 256);
        CHECK(sqlite3_exec(locker, "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK);
        sqlite3_close(locker);
    }
    for (int i = 0; i < NT; i++)
        pthread_join(th[i], NULL);
    gw_store_stats(s, &after);
    uint64_t ops = after.ops - before.ops, tx = after.transactions - before.transactions;
    printf("  %d puts from %d loops%s: %llu transactions (largest %u), %llu ms\n", NT * N, NT,
           hold ? ", queued behind a lock" : "", (unsigned long long)tx, after.max_batch,
           (unsigned long long)(now_ms() - t0));
    CHECK(ops == NT * N);
    CHECK(after.failed == 0);
    CHECK(after.queued == 0);
    CHECK(after.max_batch <= 256);
    return tx;
}

static void test_group_commit(void)
{
    const char *path = new_path("group_commit");
    struct gw_store *s = open_store(path, 1); /* full: an fsync per transaction */

    /* queued behind a lock: the batch in hand, then the rest 256 at a time */
    CHECK(put_from_loops(s, path, "held", 1) <= 1 + (4000 + 255) / 256);
    /* as they come (reported; the batches depend on the scheduling) */
    put_from_loops(s, path, "free", 0);
    gw_store_close(s);
    CHECK(raw_int(path, "SELECT count(*) FROM jobs") == 8000);
    CHECK(raw_int(path, "SELECT jobs FROM usage_daily") == 8000);
    CHECK(raw_int(path, "SELECT seconds FROM usage_daily") == 8000 * 8);
}

static void test_list_cursor(void)
{
    struct gw_store *s = open_store(new_path("list"), 0);
    struct tloop t;
    struct capture c;
    struct jobbuf b;
    struct gw_job_list_query q = { .key_name = "alice", .limit = 2, .order = GW_ORDER_DESC };
    /* alice's jobs in (created_at, insertion) order; a1 and a2 share a second, and a1
     * is put before a2 */
    static const char *const asc[] = { "video_a1", "video_a2", "video_a3", "video_a4",
                                       "video_a5" };
    static const int64_t at[] = { T0 + 100, T0 + 100, T0 + 101, T0 + 102, T0 + 103 };

    cap_init(&c);
    tl_init(&t, s);
    /* put out of order, bob's in between */
    static const int put_order[] = { 3, 0, 4, 2, 1 };
    for (int i = 0; i < 5; i++) {
        int k = put_order[i];
        put_ok(&t, &c, mkjob(&b, asc[k], "alice", at[k], 8, GW_JOB_QUEUED));
        char id[32];
        snprintf(id, sizeof(id), "video_b%d", i);
        put_ok(&t, &c, mkjob(&b, id, "bob", T0 + 100 + i, 8, GW_JOB_QUEUED));
    }

    /* desc, pages of 2: a5 a4 | a3 a2 | a1 */
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == 2 && c.has_more && !c.after_unknown);
    CHECK(strcmp(c.ids[0], "video_a5") == 0 && strcmp(c.ids[1], "video_a4") == 0);
    q.after = "video_a4";
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == 2 && c.has_more);
    CHECK(strcmp(c.ids[0], "video_a3") == 0 && strcmp(c.ids[1], "video_a2") == 0);
    q.after = "video_a2"; /* the tie: a1 has the same created_at, was put earlier */
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == 1 && !c.has_more);
    CHECK(strcmp(c.ids[0], "video_a1") == 0);
    q.after = "video_a1";
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == 0 && !c.has_more && !c.after_unknown);

    /* asc, all at once: exactly 5, no more */
    q = (struct gw_job_list_query){ .key_name = "alice", .limit = 5, .order = GW_ORDER_ASC };
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == 5 && !c.has_more);
    for (int i = 0; i < 5; i++) {
        CHECK(strcmp(c.ids[i], asc[i]) == 0);
        CHECK(strcmp(c.owners[i], "alice") == 0);
        CHECK(c.created[i] == at[i]);
    }
    q.limit = 4;
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == 4 && c.has_more);
    q.after = "video_a1"; /* asc after the first of the tie: its twin a2 comes next */
    q.limit = 100;
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == 4 && !c.has_more && strcmp(c.ids[0], "video_a2") == 0);
    q.after = ""; /* empty: from the start */
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == 5);

    /* after: another key's job, or none, look the same: unknown, no rows */
    q.after = "video_b2";
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.after_unknown && c.njobs == 0 && !c.has_more);
    q.after = "video_nope";
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.after_unknown && c.njobs == 0);

    /* a key with no jobs */
    q = (struct gw_job_list_query){ .key_name = "carol", .limit = 20 };
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == 0 && !c.has_more && !c.after_unknown);

    /* bob sees only bob's */
    q = (struct gw_job_list_query){ .key_name = "bob", .limit = 100 };
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == 5);
    for (size_t i = 0; i < c.njobs; i++)
        CHECK(strcmp(c.owners[i], "bob") == 0);

    /* a deleted job leaves the list, and is still a valid cursor */
    DO_OK(&t, &c, gw_store_job_delete(t.sl, "video_a3", T0 + 200, CB(&c)));
    CHECK(c.has_job && c.job.deleted_at == T0 + 200);
    DO_OK(&t, &c, gw_store_job_delete(t.sl, "video_a3", T0 + 300, CB(&c)));
    CHECK(c.job.deleted_at == T0 + 200); /* the first deletion counts */
    DO_OK(&t, &c, gw_store_job_delete(t.sl, "video_nope", T0 + 300, CB(&c)));
    CHECK(!c.has_job);
    q = (struct gw_job_list_query){ .key_name = "alice", .limit = 100 };
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == 4);
    for (size_t i = 0; i < c.njobs; i++)
        CHECK(strcmp(c.ids[i], "video_a3") != 0);
    q.after = "video_a3";
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(!c.after_unknown && c.njobs == 2 && strcmp(c.ids[0], "video_a2") == 0);
    get_ok(&t, &c, "video_a3"); /* get still shows it, marked */
    CHECK(c.has_job && c.job.deleted_at == T0 + 200);

    tl_free(&t);
    gw_store_close(s);
    cap_free(&c);
}

/* Jobs created in the same second list in the order they were put, whatever
 * their ids (random upstream ids: the order of the requests, not of the ids);
 * the cursor pages through such a tie, and the refresh claims ties that way. */
static void test_list_insertion_order(void)
{
    const char *path = new_path("list_insertion");
    struct gw_store *s = open_store(path, 0);
    struct tloop t;
    struct capture c;
    struct jobbuf b;
    /* put in this order, all at T0 + 50: the ids sort the other way round */
    static const char *const put[] = { "video_z", "video_m", "video_b", "video_y", "video_a" };
    enum { N = 5 };
    struct gw_job_list_query q = { .key_name = "alice", .limit = 100, .order = GW_ORDER_ASC };

    cap_init(&c);
    tl_init(&t, s);
    put_ok(&t, &c, mkjob(&b, "video_early", "alice", T0 + 49, 8, GW_JOB_QUEUED));
    for (int i = 0; i < N; i++) {
        put_ok(&t, &c, mkjob(&b, put[i], "alice", T0 + 50, 8, GW_JOB_QUEUED));
        char id[32];
        snprintf(id, sizeof(id), "video_bob%d", i); /* another key's, in between */
        put_ok(&t, &c, mkjob(&b, id, "bob", T0 + 50, 8, GW_JOB_QUEUED));
    }
    put_ok(&t, &c, mkjob(&b, "video_late", "alice", T0 + 51, 8, GW_JOB_QUEUED));

    /* asc: created_at, then the order they were put */
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == N + 2 && !c.has_more);
    CHECK(strcmp(c.ids[0], "video_early") == 0 && strcmp(c.ids[N + 1], "video_late") == 0);
    for (int i = 0; i < N; i++)
        CHECK(strcmp(c.ids[1 + i], put[i]) == 0);
    /* desc: exactly the reverse */
    q.order = GW_ORDER_DESC;
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == N + 2);
    CHECK(strcmp(c.ids[0], "video_late") == 0 && strcmp(c.ids[N + 1], "video_early") == 0);
    for (int i = 0; i < N; i++)
        CHECK(strcmp(c.ids[1 + i], put[N - 1 - i]) == 0);

    /* pages of one through the tie, both ways: each cursor inside it */
    for (int asc = 0; asc < 2; asc++) {
        q = (struct gw_job_list_query){ .key_name = "alice", .limit = 1,
                                        .order = asc ? GW_ORDER_ASC : GW_ORDER_DESC };
        char after[64] = "";
        for (int i = 0; i < N + 2; i++) {
            q.after = after;
            DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
            CHECK(c.njobs == 1 && !c.after_unknown);
            CHECK(c.has_more == (i < N + 1));
            const char *want = i == 0         ? (asc ? "video_early" : "video_late")
                               : i == N + 1   ? (asc ? "video_late" : "video_early")
                               : asc          ? put[i - 1]
                                              : put[N - i];
            CHECK(strcmp(c.ids[0], want) == 0);
            snprintf(after, sizeof(after), "%s", c.ids[0]);
        }
        q.after = after;
        DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
        CHECK(c.njobs == 0 && !c.has_more && !c.after_unknown);
    }

    /* the refresh: the same refreshed_at, claimed in the order they were put */
    DO_OK(&t, &c, gw_store_job_claim_unfinished(t.sl, T0 + 50, T0 + 60, 100, CB(&c)));
    CHECK(c.njobs == 2 * N + 1);
    CHECK(strcmp(c.ids[0], "video_early") == 0);
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof(id), "video_bob%d", i);
        CHECK(strcmp(c.ids[1 + 2 * i], put[i]) == 0 && strcmp(c.ids[2 + 2 * i], id) == 0);
    }

    /* the most recent row pruned (its place in the order is free again), then a job of
     * the tie's second put: it still comes after every earlier one */
    put_ok(&t, &c, mkjob(&b, "video_old", "carol", T0 - 10 * DAY, 8, GW_JOB_QUEUED));
    DO_OK(&t, &c, gw_store_prune(t.sl, T0 - DAY, T0 + 60, CB(&c)));
    CHECK(c.pruned_jobs == 1);
    put_ok(&t, &c, mkjob(&b, "video_0", "alice", T0 + 50, 8, GW_JOB_QUEUED));
    q = (struct gw_job_list_query){ .key_name = "alice", .limit = 100, .order = GW_ORDER_ASC };
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == N + 3);
    CHECK(strcmp(c.ids[N], put[N - 1]) == 0 && strcmp(c.ids[N + 1], "video_0") == 0);
    tl_free(&t);
    gw_store_close(s);
    if (use_redis) { /* no VACUUM there */
        cap_free(&c);
        return;
    }
    /* the same order after a VACUUM (seq is the rowid's alias: it keeps its values) */
    raw_exec(path, "VACUUM");
    s = open_store(path, 0);
    tl_init(&t, s);
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == N + 3);
    for (int i = 0; i < N; i++)
        CHECK(strcmp(c.ids[1 + i], put[i]) == 0);
    CHECK(strcmp(c.ids[N + 1], "video_0") == 0);
    tl_free(&t);
    gw_store_close(s);
    cap_free(&c);
}

/* Refused at the call: err filled, GW_ERR, and the callback never runs. */
static void test_bad_arguments(void)
{
    struct gw_store *s = open_store(new_path("bad_args"), 0);
    struct tloop t;
    struct capture c;
    struct gw_error err;
    struct gw_store_op *op = (struct gw_store_op *)&op;
    struct gw_job_list_query q = { .key_name = "alice", .limit = 0 };
    struct jobbuf b;
    char longid[200], longkey[300];

    cap_init(&c);
    cap_reset(&c);
    tl_init(&t, s);
    memset(err.message, 0, sizeof(err.message));
    CHECK(gw_store_job_list(t.sl, &q, cap_cb, &c, &op, &err) == GW_ERR);
    CHECK(err.status == 400 && strcmp(err.code, "invalid_value") == 0);
    CHECK(strcmp(err.param, "limit") == 0);
    CHECK(op == NULL);
    q.limit = 10000;
    CHECK(gw_store_job_list(t.sl, &q, cap_cb, &c, NULL, &err) == GW_ERR);
    CHECK(strcmp(err.param, "limit") == 0);
    q.limit = 101;
    CHECK(gw_store_job_list(t.sl, &q, cap_cb, &c, NULL, &err) == GW_ERR);
    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    q.limit = 100;
    q.after = longid;
    CHECK(gw_store_job_list(t.sl, &q, cap_cb, &c, NULL, &err) == GW_ERR);
    CHECK(strcmp(err.param, "after") == 0);
    q = (struct gw_job_list_query){ .key_name = NULL, .limit = 10 };
    CHECK(gw_store_job_list(t.sl, &q, cap_cb, &c, NULL, &err) == GW_ERR);
    CHECK(gw_store_job_get(t.sl, "", cap_cb, &c, NULL, &err) == GW_ERR);
    CHECK(gw_store_job_get(t.sl, longid, cap_cb, &c, NULL, &err) == GW_ERR);
    struct gw_job j = *mkjob(&b, "video_x", "alice", T0, 8, GW_JOB_QUEUED);
    j.seconds = -1;
    CHECK(gw_store_job_put(t.sl, &j, NULL, cap_cb, &c, NULL, &err) == GW_ERR);
    j.seconds = 8;
    j.object_len = GW_STORE_OBJECT_MAX + 1; /* refused before it is read */
    CHECK(gw_store_job_put(t.sl, &j, NULL, cap_cb, &c, NULL, &err) == GW_ERR);
    j.object_len = strlen(j.object);
    j.upstream_key = NULL;
    CHECK(gw_store_job_put(t.sl, &j, NULL, cap_cb, &c, NULL, &err) == GW_ERR);
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    CHECK(gw_store_idem_begin(t.sl, "alice", longkey, T0, cap_cb, &c, NULL, &err) == GW_ERR);
    CHECK(gw_store_idem_begin(t.sl, "alice", "", T0, cap_cb, &c, NULL, &err) == GW_ERR);
    longkey[255] = '\0'; /* 255 bytes: fine */
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", longkey, T0, CB(&c)));
    CHECK(c.idem == GW_IDEM_NEW);
    struct gw_usage_query uq = { .since = "2026-1-01" };
    CHECK(gw_store_usage(t.sl, &uq, cap_cb, &c, NULL, &err) == GW_ERR);
    CHECK(strcmp(err.param, "since") == 0);
    uq = (struct gw_usage_query){ .until = "2026-13-01" };
    CHECK(gw_store_usage(t.sl, &uq, cap_cb, &c, NULL, &err) == GW_ERR);
    CHECK(gw_store_job_claim_unfinished(t.sl, T0, T0, 0, cap_cb, &c, NULL, &err) == GW_ERR);
    CHECK(gw_store_job_claim_unfinished(t.sl, T0, T0, 1001, cap_cb, &c, NULL, &err) == GW_ERR);
    CHECK(gw_store_idem_finish(t.sl, "alice", "k", 99, "", 0, cap_cb, &c, NULL, &err) == GW_ERR);

    /* none of those calls back, even after the store has answered a later one */
    get_ok(&t, &c, "video_x");
    CHECK(!c.has_job);
    tl_free(&t);
    gw_store_close(s);
    cap_free(&c);
}

static void test_update_forward_only(void)
{
    struct gw_store *s = open_store(new_path("update"), 0);
    struct tloop t;
    struct capture c;
    struct jobbuf b;
    struct gw_job_update u = { .id = "video_u", .status = GW_JOB_IN_PROGRESS,
                               .object = "{\"progress\":40}", .now = T0 + 10 };

    cap_init(&c);
    tl_init(&t, s);
    put_ok(&t, &c, mkjob(&b, "video_u", "alice", T0, 8, GW_JOB_QUEUED));
    u.object_len = strlen(u.object);
    DO_OK(&t, &c, gw_store_job_update(t.sl, &u, CB(&c)));
    CHECK(c.has_job && c.prev_status == GW_JOB_QUEUED && c.job.status == GW_JOB_IN_PROGRESS);
    CHECK(strcmp(c.job.object, "{\"progress\":40}") == 0);
    CHECK(c.job.updated_at == T0 + 10 && c.job.refreshed_at == T0 + 10);
    /* the same status again: the object moves on (progress) */
    u.object = "{\"progress\":70}";
    u.object_len = strlen(u.object);
    u.now = T0 + 20;
    DO_OK(&t, &c, gw_store_job_update(t.sl, &u, CB(&c)));
    CHECK(strcmp(c.job.object, "{\"progress\":70}") == 0 && c.job.updated_at == T0 + 20);
    /* a stale queued, answered late, changes nothing */
    u.status = GW_JOB_QUEUED;
    u.object = "{\"progress\":0}";
    u.object_len = strlen(u.object);
    u.now = T0 + 30;
    DO_OK(&t, &c, gw_store_job_update(t.sl, &u, CB(&c)));
    CHECK(c.prev_status == GW_JOB_IN_PROGRESS && c.job.status == GW_JOB_IN_PROGRESS);
    CHECK(strcmp(c.job.object, "{\"progress\":70}") == 0 && c.job.updated_at == T0 + 20);
    /* completed, with the object kept when none is given */
    u.status = GW_JOB_COMPLETED;
    u.object = NULL;
    u.now = T0 + 40;
    DO_OK(&t, &c, gw_store_job_update(t.sl, &u, CB(&c)));
    CHECK(c.job.status == GW_JOB_COMPLETED && strcmp(c.job.object, "{\"progress\":70}") == 0);
    /* a terminal state never changes */
    u.status = GW_JOB_FAILED;
    DO_OK(&t, &c, gw_store_job_update(t.sl, &u, CB(&c)));
    CHECK(c.job.status == GW_JOB_COMPLETED);
    u.status = GW_JOB_IN_PROGRESS;
    DO_OK(&t, &c, gw_store_job_update(t.sl, &u, CB(&c)));
    CHECK(c.job.status == GW_JOB_COMPLETED);
    /* no such job */
    u.id = "video_nope";
    DO_OK(&t, &c, gw_store_job_update(t.sl, &u, CB(&c)));
    CHECK(!c.has_job);
    tl_free(&t);
    gw_store_close(s);
    cap_free(&c);
}

/* A usage row's counters, read with the synchronous query. */
static void usage_of(const char *path, const char *key, const char *day, int64_t out[4])
{
    struct gw_store_options o;
    struct gw_usage_query q = { .since = day, .until = day, .key_name = key };
    struct gw_usage *u;
    struct gw_error err;

    store_opts(path, 0, &o);
    if (gw_store_usage_read(&o, &q, &u, &err) != GW_OK) {
        fprintf(stderr, "FAIL %s: usage_read: %s\n", cur_test, err.message);
        exit(1);
    }
    memset(out, 0, 4 * sizeof(out[0]));
    for (size_t i = 0; i < u->n; i++) {
        out[0] += u->rows[i].jobs;
        out[1] += u->rows[i].seconds;
        out[2] += u->rows[i].failed;
        out[3] += u->rows[i].refunded_seconds;
    }
    gw_store_usage_free(u);
}

struct refunder {
    struct gw_store *s;
    int mine; /* refunds this thread's calls did */
};

static void refund_cb(void *arg, const struct gw_store_res *res)
{
    struct refunder *r = arg;

    CHECK(res->rc == GW_OK);
    r->mine += res->refunded;
}

static void *refunder_main(void *arg)
{
    struct refunder *r = arg;
    struct tloop t;
    struct gw_error err;

    tl_init(&t, r->s);
    for (int i = 0; i < 50; i++)
        CHECK(gw_store_job_refund(t.sl, "video_race", refund_cb, r, NULL, &err) == GW_AGAIN);
    /* the last one's callback: every earlier one has run (one loop: in order) */
    struct capture c;
    cap_init(&c);
    DO_OK(&t, &c, gw_store_job_refund(t.sl, "video_race", CB(&c)));
    r->mine += c.refunded;
    cap_free(&c);
    tl_free(&t);
    return NULL;
}

static void test_refund_once(void)
{
    const char *path = new_path("refund");
    struct gw_store *s = open_store(path, 0);
    struct tloop t;
    struct capture c;
    struct jobbuf b;
    struct gw_job_update u = { .id = "video_r", .status = GW_JOB_FAILED, .now = T0 + 60 };
    int64_t usage[4];
    char day[11];

    snprintf(day, sizeof(day), "2026-01-01");
    cap_init(&c);
    tl_init(&t, s);
    put_ok(&t, &c, mkjob(&b, "video_r", "alice", T0, 8, GW_JOB_QUEUED));
    /* not failed: nothing to give back */
    DO_OK(&t, &c, gw_store_job_refund(t.sl, "video_r", CB(&c)));
    CHECK(c.refunded == 0 && c.has_job && !c.job.refunded);
    DO_OK(&t, &c, gw_store_job_update(t.sl, &u, CB(&c)));
    CHECK(c.job.status == GW_JOB_FAILED && !c.job.refunded);
    usage_of(path, "alice", day, usage);
    CHECK(usage[0] == 1 && usage[1] == 8 && usage[2] == 1 && usage[3] == 0);
    DO_OK(&t, &c, gw_store_job_refund(t.sl, "video_r", CB(&c)));
    CHECK(c.refunded == 1 && c.job.refunded == 1 && c.job.seconds == 8);
    DO_OK(&t, &c, gw_store_job_refund(t.sl, "video_r", CB(&c)));
    CHECK(c.refunded == 0 && c.job.refunded == 1);
    /* failed seen again (another refresh): counted once */
    DO_OK(&t, &c, gw_store_job_update(t.sl, &u, CB(&c)));
    usage_of(path, "alice", day, usage);
    CHECK(usage[0] == 1 && usage[1] == 8 && usage[2] == 1 && usage[3] == 8);
    DO_OK(&t, &c, gw_store_job_refund(t.sl, "video_nope", CB(&c)));
    CHECK(c.refunded == 0 && !c.has_job);

    /* a job put already failed: counted failed at once, refundable once */
    put_ok(&t, &c, mkjob(&b, "video_race", "alice", T0 + 5, 4, GW_JOB_FAILED));
    /* two loops on two threads race to refund it */
    struct refunder r1 = { s, 0 }, r2 = { s, 0 };
    pthread_t th1, th2;
    CHECK(pthread_create(&th1, NULL, refunder_main, &r1) == 0);
    CHECK(pthread_create(&th2, NULL, refunder_main, &r2) == 0);
    pthread_join(th1, NULL);
    pthread_join(th2, NULL);
    CHECK(r1.mine + r2.mine == 1);
    usage_of(path, "alice", day, usage);
    CHECK(usage[0] == 2 && usage[1] == 12 && usage[2] == 2 && usage[3] == 12);
    tl_free(&t);
    gw_store_close(s);
    cap_free(&c);
}

static void test_claim_unfinished(void)
{
    struct gw_store *s = open_store(new_path("claim"), 0);
    struct tloop t;
    struct capture c;
    struct jobbuf b;
    struct gw_job_update u = { .status = GW_JOB_IN_PROGRESS };

    cap_init(&c);
    tl_init(&t, s);
    /* refreshed at T0+1 .. T0+6; c3 completed, c5 failed, c6 deleted */
    for (int i = 1; i <= 6; i++) {
        char id[16];
        snprintf(id, sizeof(id), "video_c%d", i);
        put_ok(&t, &c, mkjob(&b, id, i % 2 ? "alice" : "bob", T0 + i, 8,
                             i == 3 ? GW_JOB_COMPLETED : i == 5 ? GW_JOB_FAILED : GW_JOB_QUEUED));
    }
    DO_OK(&t, &c, gw_store_job_delete(t.sl, "video_c6", T0 + 7, CB(&c)));
    /* c1 refreshed (seen in progress) later than the others */
    u.id = "video_c1";
    u.now = T0 + 50;
    DO_OK(&t, &c, gw_store_job_update(t.sl, &u, CB(&c)));

    /* due: refreshed at or before T0+60; oldest first: c2, c4, c1 */
    DO_OK(&t, &c, gw_store_job_claim_unfinished(t.sl, T0 + 60, T0 + 100, 2, CB(&c)));
    CHECK(c.njobs == 2);
    CHECK(strcmp(c.ids[0], "video_c2") == 0 && strcmp(c.ids[1], "video_c4") == 0);
    DO_OK(&t, &c, gw_store_job_claim_unfinished(t.sl, T0 + 60, T0 + 100, 10, CB(&c)));
    CHECK(c.njobs == 1 && strcmp(c.ids[0], "video_c1") == 0);
    /* claimed: not due again before their refreshed_at (T0+100) */
    DO_OK(&t, &c, gw_store_job_claim_unfinished(t.sl, T0 + 99, T0 + 101, 10, CB(&c)));
    CHECK(c.njobs == 0);
    DO_OK(&t, &c, gw_store_job_claim_unfinished(t.sl, T0 + 100, T0 + 200, 10, CB(&c)));
    CHECK(c.njobs == 3);
    get_ok(&t, &c, "video_c2");
    CHECK(c.job.refreshed_at == T0 + 200 && c.job.updated_at == T0 + 2);
    tl_free(&t);
    gw_store_close(s);
    cap_free(&c);
}

static void test_idempotency(void)
{
    const char *path = new_path("idem");
    struct gw_store *s = open_store(path, 0);
    struct tloop t;
    struct capture c;
    struct jobbuf b;
    const char *answer = "{\"error\":{\"message\":\"bad size\"}}";

    cap_init(&c);
    tl_init(&t, s);
    /* begin, in flight, finished with an error answer, replayed */
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", "k1", T0, CB(&c)));
    CHECK(c.idem == GW_IDEM_NEW);
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", "k1", T0 + 1, CB(&c)));
    CHECK(c.idem == GW_IDEM_IN_FLIGHT);
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "bob", "k1", T0 + 1, CB(&c)));
    CHECK(c.idem == GW_IDEM_NEW); /* per team key */
    DO_OK(&t, &c, gw_store_idem_finish(t.sl, "alice", "k1", 400, answer, strlen(answer),
                                       CB(&c)));
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", "k1", T0 + 2, CB(&c)));
    CHECK(c.idem == GW_IDEM_DONE && c.answer_status == 400);
    CHECK(c.answer_len == strlen(answer) && strcmp(c.answer, answer) == 0);
    /* 24 h later it has expired: new again */
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", "k1", T0 + DAY - 1, CB(&c)));
    CHECK(c.idem == GW_IDEM_DONE);
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", "k1", T0 + DAY, CB(&c)));
    CHECK(c.idem == GW_IDEM_NEW);

    /* abort: the key is free again */
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", "k2", T0, CB(&c)));
    CHECK(c.idem == GW_IDEM_NEW);
    DO_OK(&t, &c, gw_store_idem_abort(t.sl, "alice", "k2", CB(&c)));
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", "k2", T0 + 1, CB(&c)));
    CHECK(c.idem == GW_IDEM_NEW);

    /* a put with the key finishes it with the job object, in the same transaction */
    const struct gw_job *j = mkjob(&b, "video_i", "alice", T0, 8, GW_JOB_QUEUED);
    DO_OK(&t, &c, gw_store_job_put(t.sl, j, "k2", CB(&c)));
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", "k2", T0 + 5, CB(&c)));
    CHECK(c.idem == GW_IDEM_DONE && c.answer_status == 200);
    CHECK(strcmp(c.answer, b.object) == 0);
    /* an abort after done changes nothing */
    DO_OK(&t, &c, gw_store_idem_abort(t.sl, "alice", "k2", CB(&c)));
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", "k2", T0 + 6, CB(&c)));
    CHECK(c.idem == GW_IDEM_DONE);

    if (use_redis) { /* shared by instances: in flight records expire by themselves */
        tl_free(&t);
        gw_store_close(s);
        cap_free(&c);
        return;
    }
    /* left in flight by a process that died: dropped when the store opens */
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", "k3", T0, CB(&c)));
    CHECK(c.idem == GW_IDEM_NEW);
    tl_free(&t);
    gw_store_close(s);
    s = open_store(path, 0);
    tl_init(&t, s);
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", "k3", T0 + 1, CB(&c)));
    CHECK(c.idem == GW_IDEM_NEW);
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", "k2", T0 + 7, CB(&c)));
    CHECK(c.idem == GW_IDEM_DONE); /* done ones are kept */
    tl_free(&t);
    gw_store_close(s);
    cap_free(&c);
}

static void test_prune_keeps_totals(void)
{
    const char *path = new_path("prune");
    struct gw_store *s = open_store(path, 0);
    struct tloop t;
    struct capture c;
    struct gw_error err;
    struct counter k = { .thread = pthread_self() };
    struct jobbuf b;
    enum { OLD = 1234 }; /* more than one prune step */
    int64_t before[4], after[4];
    struct gw_usage_query q = { .since = "2026-01-01", .until = "2026-01-31" };

    cap_init(&c);
    tl_init(&t, s);
    for (int i = 0; i < OLD; i++) {
        char id[32];
        snprintf(id, sizeof(id), "video_old%d", i);
        CHECK(gw_store_job_put(t.sl, mkjob(&b, id, i % 3 ? "alice" : "bob", T0 + i * 60, 5,
                                           i % 10 ? GW_JOB_COMPLETED : GW_JOB_FAILED),
                               NULL, count_cb, &k, NULL, &err) == GW_AGAIN);
    }
    RUN_UNTIL(&t, k.done == OLD, 30000);
    CHECK(k.failed == 0);
    DO_OK(&t, &c, gw_store_job_refund(t.sl, "video_old0", CB(&c)));
    CHECK(c.refunded);
    put_ok(&t, &c, mkjob(&b, "video_new", "alice", T0 + 40 * DAY, 8, GW_JOB_QUEUED));
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", "old", T0, CB(&c)));
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", "new", T0 + 40 * DAY, CB(&c)));
    DO_OK(&t, &c, gw_store_usage(t.sl, &q, CB(&c)));
    size_t nrows = c.nusage;
    CHECK(nrows == 2); /* one day, two keys, one model */
    CHECK(strcmp(c.usage[0].key_name, "alice") == 0 && strcmp(c.usage[1].key_name, "bob") == 0);
    usage_of(path, NULL, "2026-01-01", before);
    CHECK(before[0] == OLD && before[1] == OLD * 5 && before[2] == (OLD + 9) / 10 &&
          before[3] == 5);

    /* 30 days' retention at T0 + 40 days */
    DO_OK(&t, &c, gw_store_prune(t.sl, T0 + 10 * DAY, T0 + 40 * DAY, CB(&c)));
    CHECK(c.pruned_jobs == OLD && c.pruned_idem == 1);
    usage_of(path, NULL, "2026-01-01", after);
    CHECK(memcmp(before, after, sizeof(before)) == 0);
    DO_OK(&t, &c, gw_store_usage(t.sl, &q, CB(&c)));
    CHECK(c.nusage == nrows);
    get_ok(&t, &c, "video_old5");
    CHECK(!c.has_job);
    get_ok(&t, &c, "video_new");
    CHECK(c.has_job);
    /* a pruned id is gone from the in-memory index too: it may be recorded again */
    put_ok(&t, &c, mkjob(&b, "video_old5", "bob", T0 + 40 * DAY, 4, GW_JOB_QUEUED));
    get_ok(&t, &c, "video_old5");
    CHECK(c.has_job && strcmp(c.job.key_name, "bob") == 0 && c.job.seconds == 4);
    DO_OK(&t, &c, gw_store_idem_begin(t.sl, "alice", "new", T0 + 40 * DAY + 1, CB(&c)));
    CHECK(c.idem == GW_IDEM_IN_FLIGHT);
    /* nothing left to prune */
    DO_OK(&t, &c, gw_store_prune(t.sl, T0 + 10 * DAY, T0 + 40 * DAY, CB(&c)));
    CHECK(c.pruned_jobs == 0 && c.pruned_idem == 0);
    tl_free(&t);
    gw_store_close(s);
    CHECK(count_jobs(path) == 2);
    cap_free(&c);
}

/* More team keys than a prune step visits (it goes key by key): every old job
 * goes, every newer one stays, whatever key it has. */
static void test_prune_many_keys(void)
{
    const char *path = new_path("prune_keys");
    struct gw_store *s = open_store(path, 0);
    struct tloop t;
    struct capture c;
    struct gw_error err;
    struct counter k = { .thread = pthread_self() };
    struct jobbuf b;
    enum { KEYS = 1200 }; /* one old job each */
    int newer = 0;

    cap_init(&c);
    tl_init(&t, s);
    for (int i = 0; i < KEYS; i++) {
        char id[32], key[32];
        snprintf(key, sizeof(key), "team%d", i);
        snprintf(id, sizeof(id), "video_old%d", i);
        CHECK(gw_store_job_put(t.sl, mkjob(&b, id, key, T0 + i, 5, GW_JOB_COMPLETED), NULL,
                               count_cb, &k, NULL, &err) == GW_AGAIN);
        if (i % 7 == 0) { /* some keys also have a job inside the retention */
            snprintf(id, sizeof(id), "video_new%d", i);
            CHECK(gw_store_job_put(t.sl, mkjob(&b, id, key, T0 + 40 * DAY, 5, GW_JOB_QUEUED),
                                   NULL, count_cb, &k, NULL, &err) == GW_AGAIN);
            newer++;
        }
    }
    /* and one key with 1100 old jobs: more than a step deletes */
    for (int i = 0; i < 1100; i++) {
        char id[32];
        snprintf(id, sizeof(id), "video_many%d", i);
        CHECK(gw_store_job_put(t.sl, mkjob(&b, id, "team500", T0 + i, 5, GW_JOB_COMPLETED),
                               NULL, count_cb, &k, NULL, &err) == GW_AGAIN);
    }
    RUN_UNTIL(&t, k.done == KEYS + newer + 1100, 30000);
    CHECK(k.failed == 0);
    DO_OK(&t, &c, gw_store_prune(t.sl, T0 + 10 * DAY, T0 + 40 * DAY, CB(&c)));
    CHECK(c.pruned_jobs == KEYS + 1100);
    get_ok(&t, &c, "video_new700");
    CHECK(c.has_job);
    get_ok(&t, &c, "video_old700");
    CHECK(!c.has_job);
    tl_free(&t);
    gw_store_close(s);
    CHECK(count_jobs(path) == newer);
    if (!use_redis) {
        /* none older than the retention's start, T0 + 10 days */
        CHECK(raw_int(path, "SELECT count(*) FROM jobs WHERE created_at < 1768089600") == 0);
        CHECK(raw_int(path, "SELECT sum(jobs) FROM usage_daily") == KEYS + newer + 1100);
    } else {
        int64_t u1[4], u2[4];
        usage_of(path, NULL, NULL, u1);
        CHECK(u1[0] == KEYS + newer + 1100);
        usage_of(path, NULL, "2026-02-10", u2); /* the newer ones' day */
        CHECK(u2[0] == newer);
    }
    cap_free(&c);
}

static void test_usage_read(void)
{
    const char *path = new_path("usage");
    struct gw_store *s = open_store(path, 0);
    struct gw_store_options o;
    struct tloop t;
    struct capture c;
    struct jobbuf b;
    struct gw_usage *u;
    struct gw_error err;
    struct gw_usage_query q = { 0 };

    store_opts(path, 0, &o);
    cap_init(&c);
    tl_init(&t, s);
    put_ok(&t, &c, mkjob(&b, "video_d1", "alice", T0, 8, GW_JOB_QUEUED));      /* 01-01 */
    put_ok(&t, &c, mkjob(&b, "video_d2", "alice", T0 + 60, 4, GW_JOB_QUEUED)); /* 01-01 */
    put_ok(&t, &c, mkjob(&b, "video_d3", "alice", T0 + DAY, 6, GW_JOB_QUEUED)); /* 01-02 */
    put_ok(&t, &c, mkjob(&b, "video_d4", "bob", T0 + 2 * DAY - 1, 2, GW_JOB_QUEUED)); /* 01-02 */
    struct gw_job j = *mkjob(&b, "video_d5", "alice", T0 + 2 * DAY, 10, GW_JOB_QUEUED);
    j.model_sent = "veo_3_1-fast";
    put_ok(&t, &c, &j); /* 01-03, another model */

    /* while the store is open: a WAL reader */
    CHECK(gw_store_usage_read(&o, &q, &u, &err) == GW_OK);
    CHECK(u->n == 4);
    /* ordered by key, model, day */
    CHECK(strcmp(u->rows[0].key_name, "alice") == 0 && strcmp(u->rows[0].day, "2026-01-01") == 0);
    CHECK(strcmp(u->rows[0].model, "veo_3_1") == 0);
    CHECK(u->rows[0].jobs == 2 && u->rows[0].seconds == 12);
    CHECK(strcmp(u->rows[1].day, "2026-01-02") == 0 && u->rows[1].seconds == 6);
    CHECK(strcmp(u->rows[2].model, "veo_3_1-fast") == 0 && u->rows[2].seconds == 10);
    CHECK(strcmp(u->rows[3].key_name, "bob") == 0 && strcmp(u->rows[3].day, "2026-01-02") == 0);
    gw_store_usage_free(u);
    q = (struct gw_usage_query){ .since = "2026-01-02", .until = "2026-01-02" };
    CHECK(gw_store_usage_read(&o, &q, &u, &err) == GW_OK);
    CHECK(u->n == 2);
    gw_store_usage_free(u);
    q = (struct gw_usage_query){ .since = "2026-01-02", .key_name = "alice" };
    CHECK(gw_store_usage_read(&o, &q, &u, &err) == GW_OK);
    CHECK(u->n == 2 && u->rows[0].seconds + u->rows[1].seconds == 16);
    gw_store_usage_free(u);
    q = (struct gw_usage_query){ .key_name = "nobody" };
    CHECK(gw_store_usage_read(&o, &q, &u, &err) == GW_OK);
    CHECK(u->n == 0);
    gw_store_usage_free(u);
    q = (struct gw_usage_query){ .since = "yesterday" };
    CHECK(gw_store_usage_read(&o, &q, &u, &err) == GW_ERR && u == NULL);
    CHECK_CONTAINS(err.message, "YYYY-MM-DD");
    /* the same through a loop (the admin API) */
    q = (struct gw_usage_query){ .key_name = "bob" };
    DO_OK(&t, &c, gw_store_usage(t.sl, &q, CB(&c)));
    CHECK(c.nusage == 1 && c.usage[0].jobs == 1 && c.usage[0].seconds == 2);
    tl_free(&t);
    gw_store_close(s);

    /* closed: no -wal file any more; still readable */
    q = (struct gw_usage_query){ 0 };
    CHECK(gw_store_usage_read(&o, &q, &u, &err) == GW_OK);
    CHECK(u->n == 4);
    gw_store_usage_free(u);
    if (use_redis) {
        cap_free(&c);
        return;
    }
    o.path = new_path("usage_absent");
    CHECK(gw_store_usage_read(&o, &q, &u, &err) == GW_ERR);
    CHECK_CONTAINS(err.message, o.path);
    CHECK_CONTAINS(err.message, "no such file");
    CHECK(access(o.path, F_OK) != 0); /* and did not create it */
    cap_free(&c);
}

/* gw_store_open(path) must fail with a message naming path and holding want. */
static void open_fails(const char *path, const char *want)
{
    struct gw_store_options o = { .path = path };
    struct gw_error err;
    struct gw_store *s = gw_store_open(&o, &err);

    if (s != NULL) {
        fprintf(stderr, "FAIL %s: %s opened\n", cur_test, path);
        exit(1);
    }
    printf("  %s\n", err.message);
    CHECK_CONTAINS(err.message, path);
    CHECK_CONTAINS(err.message, want);
}

/* The same as another user when we are root (root writes read-only files):
 * in a child that drops to nobody. */
static void open_fails_unprivileged(const char *path, const char *want)
{
    pid_t pid;
    int st;

    if (geteuid() != 0) {
        open_fails(path, want);
        return;
    }
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(3);
        open_fails(path, want); /* exits 1 on failure */
        _exit(0);
    }
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void write_file(const char *path, const char *data, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

    CHECK(fd >= 0);
    CHECK(write(fd, data, strlen(data)) == (ssize_t)strlen(data));
    close(fd);
    chmod(path, mode);
}

static void test_bad_files(void)
{
    char path[600], dir[600];
    struct gw_store *s;

    /* not SQLite at all */
    snprintf(path, sizeof(path), "%s/notsqlite.db", tmpdir);
    write_file(path, "this is a text file, not a database; it is long enough to have a page "
                     "header where SQLite looks for its magic string.......................\n",
               0644);
    open_fails(path, "not an SQLite database");
    /* another program's SQLite database */
    snprintf(path, sizeof(path), "%s/other.db", tmpdir);
    raw_exec(path, "CREATE TABLE accounts(id INTEGER PRIMARY KEY, name TEXT)");
    open_fails(path, "another program");
    CHECK(raw_int(path, "SELECT count(*) FROM sqlite_master") == 1); /* untouched */
    /* ours, from a newer gateway */
    snprintf(path, sizeof(path), "%s/newer.db", tmpdir);
    s = open_store(path, 0);
    gw_store_close(s);
    raw_exec(path, "PRAGMA user_version = 99");
    open_fails(path, "schema version 99 is newer");
    /* a directory that does not exist */
    snprintf(path, sizeof(path), "%s/nodir/x.db", tmpdir);
    open_fails(path, "directory must exist and be writable");

    /* a read-only file (a good store otherwise) */
    snprintf(dir, sizeof(dir), "%s/ro", tmpdir);
    CHECK(mkdir(dir, 0777) == 0);
    chmod(dir, 0777);
    snprintf(path, sizeof(path), "%s/ro/store.db", tmpdir);
    s = open_store(path, 0);
    gw_store_close(s);
    chmod(path, 0444);
    open_fails_unprivileged(path, "read-only");
    /* a writable file in a read-only directory: no room for the WAL files */
    chmod(path, 0666);
    chmod(dir, 0555);
    open_fails_unprivileged(path, "directory must exist and be writable");
    /* and a new file there */
    snprintf(path, sizeof(path), "%s/ro/new.db", tmpdir);
    open_fails_unprivileged(path, "directory must exist and be writable");
    chmod(dir, 0777);
}

/* Cancelled: the callback never runs; a cancelled put is still written. */
static void never_cb(void *arg, const struct gw_store_res *res)
{
    fprintf(stderr, "FAIL %s: a cancelled operation called back\n", cur_test);
    exit(1);
}

static void test_cancel(void)
{
    struct gw_store *s = open_store(new_path("cancel"), 0);
    struct tloop t;
    struct capture c;
    struct gw_error err;
    struct gw_store_op *ops[200];
    struct jobbuf b;

    cap_init(&c);
    tl_init(&t, s);
    put_ok(&t, &c, mkjob(&b, "video_c", "alice", T0, 8, GW_JOB_QUEUED));
    /* a burst: all cancelled right away, most of them while still queued */
    for (int i = 0; i < 200; i++) {
        if (i % 2) {
            char id[32];
            snprintf(id, sizeof(id), "video_cx%d", i);
            CHECK(gw_store_job_put(t.sl, mkjob(&b, id, "alice", T0, 8, GW_JOB_QUEUED), NULL,
                                   never_cb, NULL, &ops[i], &err) == GW_AGAIN);
        } else {
            CHECK(gw_store_job_get(t.sl, "video_c", never_cb, NULL, &ops[i], &err) ==
                  GW_AGAIN);
        }
        CHECK(ops[i] != NULL);
    }
    for (int i = 0; i < 200; i++)
        gw_store_cancel(ops[i]);
    /* later operations on the same loop come back after every earlier one */
    get_ok(&t, &c, "video_cx199");
    CHECK(c.has_job); /* the cancelled put was written */

    /* cancelled after the result reached the loop, before its callback ran (SQLite's
     * thread hands it over through the eventfd; Redis answers on the loop itself, and
     * the callback comes within the same turn) */
    if (!use_redis) {
        struct gw_store_op *op;
        CHECK(gw_store_job_get(t.sl, "video_c", never_cb, NULL, &op, &err) == GW_AGAIN);
        struct gw_store_stats st;
        uint64_t t0 = now_ms();
        do { /* wait, without running the loop, until the store has answered it */
            gw_store_stats(s, &st);
            CHECK(now_ms() - t0 < 10000);
        } while (st.queued > 0);
        usleep(20000);
        gw_store_cancel(op);
    }
    get_ok(&t, &c, "video_c");
    tl_free(&t);
    gw_store_close(s);
    cap_free(&c);
}

/* A loop freed with operations pending, and a loop freed from inside a callback. */
struct freer {
    struct tloop *t;
    int calls;
};

static void free_loop_cb(void *arg, const struct gw_store_res *res)
{
    struct freer *f = arg;

    f->calls++;
    gw_store_loop_free(f->t->sl); /* the others pending on it never call back */
    f->t->sl = NULL;
}

static void test_loop_free_pending(void)
{
    const char *path = new_path("loop_free");
    struct gw_store *s = open_store(path, 0);
    struct tloop t, t2;
    struct capture c;
    struct gw_error err;
    struct jobbuf b;
    struct freer f = { &t, 0 };

    cap_init(&c);
    tl_init(&t, s);
    for (int i = 0; i < 100; i++) {
        char id[32];
        snprintf(id, sizeof(id), "video_lf%d", i);
        CHECK(gw_store_job_put(t.sl, mkjob(&b, id, "alice", T0, 8, GW_JOB_QUEUED), NULL,
                               never_cb, NULL, NULL, &err) == GW_AGAIN);
    }
    gw_store_loop_free(t.sl);
    t.sl = NULL;

    /* freed inside the first callback, with 50 more pending */
    t.sl = gw_store_loop_new(s, t.base, &err);
    CHECK(t.sl != NULL);
    CHECK(gw_store_job_get(t.sl, "video_lf0", free_loop_cb, &f, NULL, &err) == GW_AGAIN);
    for (int i = 0; i < 50; i++)
        CHECK(gw_store_job_get(t.sl, "video_lf1", never_cb, NULL, NULL, &err) == GW_AGAIN);
    RUN_UNTIL(&t, f.calls == 1, 10000);
    CHECK(t.sl == NULL);

    tl_init(&t2, s);
    get_ok(&t2, &c, "video_lf99");
    CHECK(c.has_job);
    tl_free(&t2);
    event_free(t.tick);
    event_base_free(t.base);
    gw_store_close(s);
    CHECK(count_jobs(path) == 100);
    cap_free(&c);
}

/* One operation failing does not fail the others of its transaction. */
static void test_errors_isolated(void)
{
    struct gw_store *s = open_store(new_path("errors"), 0);
    struct tloop t;
    struct capture c1, c2, c3;
    struct jobbuf b1, b2, b3;

    cap_init(&c1);
    cap_init(&c2);
    cap_init(&c3);
    tl_init(&t, s);
    SUBMIT(&c1, gw_store_job_put(t.sl, mkjob(&b1, "video_e", "alice", T0, 8, GW_JOB_QUEUED),
                                 NULL, CB(&c1)));
    SUBMIT(&c2, gw_store_job_put(t.sl, mkjob(&b2, "video_e", "bob", T0, 8, GW_JOB_QUEUED),
                                 NULL, CB(&c2)));
    SUBMIT(&c3, gw_store_job_put(t.sl, mkjob(&b3, "video_f", "alice", T0, 8, GW_JOB_QUEUED),
                                 NULL, CB(&c3)));
    RUN_UNTIL(&t, c1.calls && c2.calls && c3.calls, 10000);
    CHECK(c1.rc == GW_OK && c3.rc == GW_OK);
    CHECK(c2.rc == GW_ERR && c2.err_status == 503);
    CHECK_CONTAINS(c2.errmsg, "video_e is already recorded");
    get_ok(&t, &c1, "video_e");
    CHECK(strcmp(c1.job.key_name, "alice") == 0);
    get_ok(&t, &c1, "video_f");
    CHECK(c1.has_job);
    struct gw_store_stats st;
    gw_store_stats(s, &st);
    CHECK(st.failed == 1);
    tl_free(&t);
    gw_store_close(s);
    cap_free(&c1);
    cap_free(&c2);
    cap_free(&c3);
}

/* The usage counts of a transaction's operations are written once per (day,
 * key, model), at its end and before a usage read inside it: the read sees
 * every operation before it and none after, and an operation that failed
 * counts nothing. */
/* Another connection (a sqlite3 shell, say) takes the write lock, and a first
 * operation (a get of no job, into first) is submitted: returns once the store
 * thread holds it and waits on the lock, so what comes next queues up into
 * one batch. The caller rolls the lock back. */
static sqlite3 *hold_with_first(struct gw_store *s, struct tloop *t, const char *path,
                                struct capture *first)
{
    struct gw_store_stats mid;
    sqlite3 *locker;
    uint64_t t0 = now_ms();

    CHECK(sqlite3_open(path, &locker) == SQLITE_OK);
    CHECK(sqlite3_exec(locker, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
    SUBMIT(first, gw_store_job_get(t->sl, "video_none", CB(first)));
    do {
        CHECK(now_ms() - t0 < 4000); /* below the store's busy timeout */
        usleep(1000);
        gw_store_stats(s, &mid);
    } while (mid.queued > 0);
    return locker;
}

static void test_usage_in_batch(void)
{
    const char *path = new_path("usage_batch");
    struct gw_store *s = open_store(path, 0);
    struct tloop t;
    struct capture first, c[8];
    struct jobbuf b[4];
    struct gw_store_stats before, mid, after;
    struct gw_usage_query q = { .key_name = "alice" };
    sqlite3 *locker;
    int64_t usage[4];

    tl_init(&t, s);
    cap_init(&first);
    for (int i = 0; i < 8; i++)
        cap_init(&c[i]);
    /* the store thread takes a first operation alone and waits with it; the
     * rest queue up into one batch */
    gw_store_stats(s, &before);
    locker = hold_with_first(s, &t, path, &first);
    SUBMIT(&c[0], gw_store_job_put(t.sl, mkjob(&b[0], "video_u1", "alice", T0, 8,
                                               GW_JOB_QUEUED), NULL, CB(&c[0])));
    SUBMIT(&c[1], gw_store_job_put(t.sl, mkjob(&b[1], "video_u1", "bob", T0, 8, /* taken */
                                               GW_JOB_QUEUED), NULL, CB(&c[1])));
    SUBMIT(&c[2], gw_store_job_put(t.sl, mkjob(&b[2], "video_u2", "alice", T0 + 60, 8,
                                               GW_JOB_FAILED), NULL, CB(&c[2])));
    SUBMIT(&c[3], gw_store_usage(t.sl, &q, CB(&c[3])));
    SUBMIT(&c[4], gw_store_job_put(t.sl, mkjob(&b[3], "video_u3", "alice", T0 + 120, 4,
                                               GW_JOB_QUEUED), NULL, CB(&c[4])));
    SUBMIT(&c[5], gw_store_job_refund(t.sl, "video_u2", CB(&c[5])));
    SUBMIT(&c[6], gw_store_usage(t.sl, &q, CB(&c[6])));
    q.key_name = "bob";
    SUBMIT(&c[7], gw_store_usage(t.sl, &q, CB(&c[7])));
    gw_store_stats(s, &mid);
    CHECK(mid.transactions == before.transactions && mid.queued == 8);
    CHECK(sqlite3_exec(locker, "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(locker);
    RUN_UNTIL(&t, first.calls && c[7].calls, 10000);
    gw_store_stats(s, &after);
    CHECK(after.transactions - before.transactions == 2); /* the first, then the eight */

    CHECK(c[0].rc == GW_OK && c[2].rc == GW_OK && c[4].rc == GW_OK && c[5].rc == GW_OK);
    CHECK(c[1].rc == GW_ERR);
    CHECK(c[5].refunded);
    /* the first read: u1 and u2, not u3 nor the refund; bob's failed put is nowhere */
    CHECK(c[3].rc == GW_OK && c[3].nusage == 1);
    CHECK(c[3].usage[0].jobs == 2 && c[3].usage[0].seconds == 16 && c[3].usage[0].failed == 1 &&
          c[3].usage[0].refunded_seconds == 0);
    CHECK(c[6].rc == GW_OK && c[6].nusage == 1);
    CHECK(c[6].usage[0].jobs == 3 && c[6].usage[0].seconds == 20 && c[6].usage[0].failed == 1 &&
          c[6].usage[0].refunded_seconds == 8);
    CHECK(c[7].rc == GW_OK && c[7].nusage == 0);
    tl_free(&t);
    gw_store_close(s);
    /* and so in the file */
    usage_of(path, NULL, "2026-01-01", usage);
    CHECK(usage[0] == 3 && usage[1] == 20 && usage[2] == 1 && usage[3] == 8);
    CHECK(raw_int(path, "SELECT count(*) FROM usage_daily") == 1);
    cap_free(&first);
    for (int i = 0; i < 8; i++)
        cap_free(&c[i]);
}

/* The commit delay (store_sqlite.c, linger): a batch that follows a busy one
 * waits for more operations; one that comes to an idle store does not. */
static void test_commit_delay(void)
{
    const char *path = new_path("commit_delay");
    struct gw_store *s = open_store(path, 0);
    struct tloop t;
    struct capture first, c[3], lone;
    struct jobbuf b[4];
    struct gw_store_stats before, after;
    sqlite3 *locker;

    tl_init(&t, s);
    cap_init(&first);
    cap_init(&lone);
    for (int i = 0; i < 3; i++)
        cap_init(&c[i]);
    /* an idle store: a lone put goes at once */
    SUBMIT(&lone, gw_store_job_put(t.sl, mkjob(&b[3], "video_d0", "alice", T0, 8,
                                               GW_JOB_QUEUED), NULL, CB(&lone)));
    RUN_UNTIL(&t, lone.calls, 10000);
    gw_store_stats(s, &before);
    CHECK(lone.rc == GW_OK && before.lingered == 0);
    /* the store thread takes a first operation and waits on the lock with it;
     * three more come meanwhile: their batch follows a busy one and lingers */
    locker = hold_with_first(s, &t, path, &first);
    for (int i = 0; i < 3; i++) {
        char id[32];
        snprintf(id, sizeof(id), "video_d%d", i + 1);
        SUBMIT(&c[i], gw_store_job_put(t.sl, mkjob(&b[i], id, "alice", T0, 8, GW_JOB_QUEUED),
                                       NULL, CB(&c[i])));
    }
    CHECK(sqlite3_exec(locker, "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(locker);
    RUN_UNTIL(&t, first.calls && c[0].calls && c[1].calls && c[2].calls, 10000);
    gw_store_stats(s, &after);
    CHECK(after.transactions - before.transactions == 2); /* the first, then the three */
    CHECK(after.lingered == 1);
    CHECK(c[0].rc == GW_OK && c[1].rc == GW_OK && c[2].rc == GW_OK);
    /* idle again: the next lone put does not wait */
    SUBMIT(&lone, gw_store_job_put(t.sl, mkjob(&b[3], "video_d9", "alice", T0, 8,
                                               GW_JOB_QUEUED), NULL, CB(&lone)));
    RUN_UNTIL(&t, lone.calls, 10000);
    gw_store_stats(s, &after);
    CHECK(lone.rc == GW_OK && after.lingered == 1);
    tl_free(&t);
    gw_store_close(s);
    CHECK(raw_int(path, "SELECT count(*) FROM jobs") == 5);
    cap_free(&first);
    cap_free(&lone);
    for (int i = 0; i < 3; i++)
        cap_free(&c[i]);
}

/* Close finishes what is queued, including writes nobody waits for. */
static void test_close_drains(void)
{
    const char *path = new_path("drain");
    struct gw_store *s = open_store(path, 0);
    struct tloop t;
    struct gw_error err;
    struct jobbuf b;

    tl_init(&t, s);
    for (int i = 0; i < 500; i++) {
        char id[32];
        snprintf(id, sizeof(id), "video_dr%d", i);
        CHECK(gw_store_job_put(t.sl, mkjob(&b, id, "alice", T0, 8, GW_JOB_QUEUED), NULL, NULL,
                               NULL, NULL, &err) == GW_AGAIN);
    }
    gw_store_close(s); /* before the loop is freed: the results wait on it */
    tl_free(&t);
    CHECK(count_jobs(path) == 500);
}

/* kill -9 from inside the first put's callback: the job it acknowledged is there. */
static int kill_pipe = -1;
static const char *kill_path;

static void kill_cb(void *arg, const struct gw_store_res *res)
{
    const char *id = arg;
    char sql[128];

    CHECK(res->rc == GW_OK);
    /* committed: another connection sees it (uncommitted rows are invisible to it) */
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM jobs WHERE id = '%s'", id);
    CHECK(raw_int(kill_path, sql) == 1);
    CHECK(write(kill_pipe, id, strlen(id) + 1) == (ssize_t)strlen(id) + 1);
    kill(getpid(), SIGKILL); /* nothing closed, nothing flushed */
}

/* A child puts n jobs named prefix0.. and dies in the first callback; the id
 * acknowledged goes to ack. */
static void kill_after_put(const char *path, int sync_full, const char *prefix, int n,
                           char *ack, size_t ackcap)
{
    int fds[2], st;
    pid_t pid;

    CHECK(pipe(fds) == 0);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct gw_store *s = open_store(path, sync_full);
        struct tloop t;
        struct gw_error err;
        struct jobbuf b;
        static char ids[1000][32];

        close(fds[0]);
        kill_pipe = fds[1];
        kill_path = path;
        tl_init(&t, s);
        for (int i = 0; i < n && i < 1000; i++) {
            snprintf(ids[i], sizeof(ids[i]), "%s%d", prefix, i);
            CHECK(gw_store_job_put(t.sl, mkjob(&b, ids[i], "alice", T0, 8, GW_JOB_QUEUED), NULL,
                                   kill_cb, ids[i], NULL, &err) == GW_AGAIN);
        }
        RUN_UNTIL(&t, 0, 10000);
        _exit(2);
    }
    close(fds[1]);
    ssize_t got = 0, r;
    while ((r = read(fds[0], ack + got, ackcap - 1 - (size_t)got)) > 0)
        got += r;
    ack[got] = '\0';
    close(fds[0]);
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    CHECK(got > 0);
}

static void test_durability_kill9(void)
{
    const char *path = new_path("kill9");
    struct gw_store *s;
    struct tloop t;
    struct capture c;
    char ack[64], sql[128];
    static const char *const prefixes[] = { "video_normal_", "video_full_", "video_many_" };

    cap_init(&c);
    for (int i = 0; i < 3; i++) {
        /* synchronous normal, full, then normal with 300 puts in flight */
        kill_after_put(path, i == 1, prefixes[i], i == 2 ? 300 : 1, ack, sizeof(ack));
        s = open_store(path, 0);
        tl_init(&t, s);
        get_ok(&t, &c, ack);
        CHECK(c.has_job && strcmp(c.job.id, ack) == 0);
        tl_free(&t);
        gw_store_close(s);
    }
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM jobs WHERE id LIKE '%s%%'", prefixes[2]);
    int64_t n = raw_int(path, sql);
    printf("  300 puts, killed in the first callback: %lld of them committed\n", (long long)n);
    CHECK(n >= 1);
    /* the usage counters went with the rows, in the same transactions */
    CHECK(raw_int(path, "SELECT jobs FROM usage_daily") == 2 + n);
    cap_free(&c);
}

static int64_t file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

/* Jobs in the database file alone, as a copy of it without its WAL shows them:
 * what checkpoints have copied there. -1 if the copy has no jobs table yet. */
static int64_t jobs_in_file(const char *path)
{
    char copy[600], cmd[1300];
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t n = -1;

    snprintf(copy, sizeof(copy), "%s.copy", path);
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", path, copy);
    CHECK(system(cmd) == 0);
    CHECK(sqlite3_open_v2(copy, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM jobs", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    unlink(copy);
    return n;
}

/* The store checkpoints by itself, never inside a COMMIT: a second after the
 * last operation (idle), the WAL's pages are in the database file; under
 * constant load, once 2000 pages wait (store_sqlite.c, CKPT_PAGES), so that the
 * WAL stays about 8 MiB however much is written. */
static void test_checkpoints(void)
{
    const char *path = new_path("checkpoints");
    char wal[600];
    struct gw_store *s = open_store(path, 0);
    struct tloop t;
    struct counter k = { .thread = pthread_self() };
    struct gw_error err;
    static char big[16 * 1024]; /* 4 pages and a bit per job */
    enum { IDLE_N = 100, LOAD_N = 3000 };
    uint64_t t0;

    snprintf(wal, sizeof(wal), "%s-wal", path);
    memset(big, 'o', sizeof(big));
    tl_init(&t, s);
    /* ~450 pages: below the load threshold (and SQLite's automatic 1000), so only the
     * idle checkpoint copies them */
    for (int i = 0; i < IDLE_N; i++) {
        struct jobbuf b;
        char id[32];
        snprintf(id, sizeof(id), "video_idle%d", i);
        struct gw_job j = *mkjob(&b, id, "alice", T0, 8, GW_JOB_QUEUED);
        j.object = big;
        j.object_len = sizeof(big);
        CHECK(gw_store_job_put(t.sl, &j, NULL, count_cb, &k, NULL, &err) == GW_AGAIN);
    }
    RUN_UNTIL(&t, k.done == IDLE_N, 30000);
    CHECK(k.failed == 0);
    t0 = now_ms();
    while (jobs_in_file(path) != IDLE_N) {
        CHECK(now_ms() - t0 < 10000);
        usleep(100 * 1000);
    }
    printf("  %d puts, idle: in the database file after %llu ms\n", IDLE_N,
           (unsigned long long)(now_ms() - t0));

    /* ~13000 pages queued at once: the store is never idle meanwhile */
    k.done = 0;
    for (int i = 0; i < LOAD_N; i++) {
        struct jobbuf b;
        char id[32];
        snprintf(id, sizeof(id), "video_load%d", i);
        struct gw_job j = *mkjob(&b, id, "bob", T0, 8, GW_JOB_QUEUED);
        j.object = big;
        j.object_len = sizeof(big);
        CHECK(gw_store_job_put(t.sl, &j, NULL, count_cb, &k, NULL, &err) == GW_AGAIN);
    }
    RUN_UNTIL(&t, k.done == LOAD_N, 60000);
    CHECK(k.failed == 0);
    /* the WAL file keeps its largest size: 2000 pages and the batch that passed them
     * (256 jobs: ~1100 pages) at most, against ~50 MiB written */
    int64_t wal_max = file_size(wal);
    printf("  %d puts of 16 KiB under load: WAL at most %.1f MiB, database %.1f MiB\n", LOAD_N,
           wal_max / 1048576.0, file_size(path) / 1048576.0);
    CHECK(wal_max > 0 && wal_max < 16 * 1048576);
    CHECK(file_size(path) > (int64_t)LOAD_N * 16 * 1024 / 2);
    tl_free(&t);
    gw_store_close(s);
    CHECK(raw_int(path, "SELECT count(*) FROM jobs") == IDLE_N + LOAD_N);
}

/* The disk fills up (a file size limit, in a child): the writes of the failed
 * transactions are answered GW_ERR, the others are all there, and the store goes on. */
static void test_disk_full(void)
{
    const char *path = new_path("disk_full");
    pid_t pid;
    int st;

    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct gw_store *s = open_store(path, 0);
        struct tloop t;
        struct counter k = { .thread = pthread_self() };
        struct capture c;
        struct gw_error err;
        struct rlimit rl = { 512 * 1024, 512 * 1024 };
        static char big[16 * 1024];
        enum { N = 200 };

        cap_init(&c);
        signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG instead */
        CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
        memset(big, 'o', sizeof(big));
        tl_init(&t, s);
        for (int i = 0; i < 5; i++) { /* small ones first: they fit */
            struct jobbuf b;
            char id[32];
            snprintf(id, sizeof(id), "video_small%d", i);
            put_ok(&t, &c, mkjob(&b, id, "alice", T0, 8, GW_JOB_QUEUED));
        }
        for (int i = 0; i < N; i++) {
            struct jobbuf b;
            char id[32];
            snprintf(id, sizeof(id), "video_full%d", i);
            struct gw_job j = *mkjob(&b, id, "alice", T0, 8, GW_JOB_QUEUED);
            j.object = big;
            j.object_len = sizeof(big);
            CHECK(gw_store_job_put(t.sl, &j, NULL, count_cb, &k, NULL, &err) == GW_AGAIN);
        }
        RUN_UNTIL(&t, k.done == N, 30000);
        printf("  %d puts of 16 KiB with a 512 KiB file size limit: %d failed\n", N, k.failed);
        CHECK(k.failed > 0);
        /* the store goes on (a checkpoint resets the WAL: later writes may fit again) */
        get_ok(&t, &c, "video_small4");
        CHECK(c.has_job);
        /* the rolled-back puts left their ids in the in-memory index (idindex.h),
         * pointing at rows that are gone or that later puts took: none is found,
         * every acknowledged one is */
        int found = 0;
        for (int i = 0; i < N; i++) {
            char id[32];
            snprintf(id, sizeof(id), "video_full%d", i);
            get_ok(&t, &c, id);
            if (c.has_job) {
                CHECK(strcmp(c.job.id, id) == 0);
                found++;
            }
        }
        CHECK(found == N - k.failed);
        tl_free(&t);
        gw_store_close(s);
        /* what was acknowledged is there, what failed is not, usage agrees */
        CHECK(raw_int(path, "SELECT count(*) FROM jobs") == 5 + N - k.failed);
        CHECK(raw_int(path, "SELECT coalesce(sum(jobs), 0) FROM usage_daily") ==
              5 + N - k.failed);
        cap_free(&c);
        _exit(0);
    }
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* the file is still a good store */
    gw_store_close(open_store(path, 0));
}

/* One loop's operations complete in the order they were made. */
struct seq {
    int next;  /* the sequence number expected next */
    int found; /* gets that found their job */
    int bad;
};

struct seq_op {
    struct seq *q;
    int n;
    int is_get;
};

static void seq_cb(void *arg, const struct gw_store_res *res)
{
    struct seq_op *o = arg;

    if (res->rc != GW_OK || o->n != o->q->next)
        o->q->bad++;
    o->q->next++;
    if (o->is_get && res->job != NULL)
        o->q->found++;
}

static void test_order(void)
{
    struct gw_store *s = open_store(new_path("order"), 0);
    struct tloop t;
    struct gw_error err;
    struct seq q = { 0 };
    static struct seq_op ops[400];
    enum { N = 200 };

    tl_init(&t, s);
    for (int i = 0; i < N; i++) { /* put i, get i, without waiting */
        struct jobbuf b;
        char id[32];
        snprintf(id, sizeof(id), "video_o%d", i);
        ops[2 * i] = (struct seq_op){ &q, 2 * i, 0 };
        ops[2 * i + 1] = (struct seq_op){ &q, 2 * i + 1, 1 };
        CHECK(gw_store_job_put(t.sl, mkjob(&b, id, "alice", T0, 8, GW_JOB_QUEUED), NULL, seq_cb,
                               &ops[2 * i], NULL, &err) == GW_AGAIN);
        CHECK(gw_store_job_get(t.sl, id, seq_cb, &ops[2 * i + 1], NULL, &err) == GW_AGAIN);
    }
    RUN_UNTIL(&t, q.next == 2 * N, 10000);
    CHECK(q.bad == 0 && q.found == N);
    tl_free(&t);
    gw_store_close(s);
}

/* ------------------------------------------------------- Redis only */

static int free_port(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    CHECK(fd >= 0);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

static int redis_pings(void)
{
    struct timeval tv = { 0, 200000 };
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    int ok = 0;

    if (c != NULL && !c->err) {
        redisReply *r = redisCommand(c, "PING");
        /* PONG, or NOAUTH: it answers either way */
        ok = r != NULL && (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR);
        if (r != NULL)
            freeReplyObject(r);
    }
    if (c != NULL)
        redisFree(c);
    return ok;
}

/* A private redis-server on redis_port: no persistence, its own directory. */
static void redis_start(void)
{
    char port[16];
    uint64_t t0 = now_ms();

    if (redis_port == 0)
        redis_port = free_port();
    snprintf(port, sizeof(port), "%d", redis_port);
    redis_pid = fork();
    CHECK(redis_pid >= 0);
    if (redis_pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", tmpdir, (char *)NULL);
        _exit(127);
    }
    while (!redis_pings()) {
        int st;
        if (waitpid(redis_pid, &st, WNOHANG) == redis_pid) {
            fprintf(stderr, "redis-server did not start (is it installed? "
                            "scripts/install-deps.sh)\n");
            exit(1);
        }
        CHECK(now_ms() - t0 < 10000);
        usleep(10000);
    }
}

static void redis_kill(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGCONT);
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        redis_pid = 0;
    }
}

/* Two stores on one Redis (two gateway instances): a job put through one is
 * read, listed and refunded through the other; the refresh hands a job to one
 * claimer only. */
static void test_redis_two_instances(void)
{
    const char *path = new_path("two_instances");
    struct gw_store *a = open_store(path, 0), *b = open_store(path, 0);
    struct tloop ta, tb;
    struct capture c;
    struct jobbuf jb;
    struct gw_job_list_query q = { .key_name = "alice", .limit = 100, .order = GW_ORDER_ASC };

    cap_init(&c);
    tl_init(&ta, a);
    tl_init(&tb, b);
    for (int i = 0; i < 20; i++) {
        char id[32];
        snprintf(id, sizeof(id), "video_ab%02d", i);
        /* alternately through a and b, all in the same second */
        put_ok(i % 2 ? &tb : &ta, &c, mkjob(&jb, id, "alice", T0, 4, GW_JOB_QUEUED));
    }
    get_ok(&tb, &c, "video_ab00");
    CHECK(c.has_job && strcmp(c.job.key_name, "alice") == 0);
    DO_OK(&ta, &c, gw_store_job_list(ta.sl, &q, CB(&c)));
    CHECK(c.njobs == 20);
    for (int i = 0; i < 20; i++) { /* in the order they were put, across both */
        char id[32];
        snprintf(id, sizeof(id), "video_ab%02d", i);
        CHECK(strcmp(c.ids[i], id) == 0);
    }
    q.key_name = "bob";
    DO_OK(&tb, &c, gw_store_job_list(tb.sl, &q, CB(&c)));
    CHECK(c.njobs == 0);
    /* claimed by both at once: each job once */
    struct capture c2;
    cap_init(&c2);
    SUBMIT(&c, gw_store_job_claim_unfinished(ta.sl, T0 + 10, T0 + 100, 15, CB(&c)));
    SUBMIT(&c2, gw_store_job_claim_unfinished(tb.sl, T0 + 10, T0 + 100, 15, CB(&c2)));
    RUN_UNTIL(&ta, c.calls == 1, 10000);
    RUN_UNTIL(&tb, c2.calls == 1, 10000);
    CHECK(c.rc == GW_OK && c2.rc == GW_OK);
    CHECK(c.njobs + c2.njobs == 20);
    for (size_t i = 0; i < c.njobs; i++)
        for (size_t k = 0; k < c2.njobs; k++)
            CHECK(strcmp(c.ids[i], c2.ids[k]) != 0);
    /* a refund through each: once */
    struct gw_job_update u = { .id = "video_ab03", .status = GW_JOB_FAILED, .now = T0 + 5 };
    DO_OK(&ta, &c, gw_store_job_update(ta.sl, &u, CB(&c)));
    DO_OK(&ta, &c, gw_store_job_refund(ta.sl, "video_ab03", CB(&c)));
    CHECK(c.refunded == 1);
    DO_OK(&tb, &c, gw_store_job_refund(tb.sl, "video_ab03", CB(&c)));
    CHECK(c.refunded == 0 && c.job.refunded == 1);
    int64_t usage[4];
    usage_of(path, "alice", "2026-01-01", usage);
    CHECK(usage[0] == 20 && usage[1] == 80 && usage[2] == 1 && usage[3] == 4);
    tl_free(&ta);
    tl_free(&tb);
    gw_store_close(a);
    gw_store_close(b);
    cap_free(&c);
    cap_free(&c2);
}

/* Try a get until the store works again (Redis back, reconnected). */
static void get_until_ok(struct tloop *t, struct capture *c, const char *id)
{
    uint64_t t0 = now_ms();

    for (;;) {
        DO(t, c, gw_store_job_get(t->sl, id, CB(c)));
        if (c->rc == GW_OK)
            return;
        CHECK(now_ms() - t0 < 15000);
        uint64_t until = now_ms() + 50;
        RUN_UNTIL(t, now_ms() >= until, 1000);
    }
}

/* Redis killed: calls fail (503) at once, the store says it is unreachable;
 * Redis back (empty: no persistence here): the store reconnects by itself. */
static void test_redis_restart(void)
{
    struct gw_store *s = open_store(new_path("restart"), 0);
    struct tloop t;
    struct capture c;
    struct jobbuf b;

    cap_init(&c);
    tl_init(&t, s);
    put_ok(&t, &c, mkjob(&b, "video_r1", "alice", T0, 8, GW_JOB_QUEUED));
    CHECK(gw_store_reachable(s));
    redis_kill();
    uint64_t t0 = now_ms();
    DO(&t, &c, gw_store_job_get(t.sl, "video_r1", CB(&c)));
    CHECK(c.rc == GW_ERR && c.err_status == 503);
    CHECK_CONTAINS(c.errmsg, "Redis");
    CHECK(now_ms() - t0 < 2000);
    RUN_UNTIL(&t, !gw_store_reachable(s), 5000);
    /* while down: every call fails fast */
    t0 = now_ms();
    DO(&t, &c, gw_store_job_put(t.sl, mkjob(&b, "video_r2", "alice", T0, 8, GW_JOB_QUEUED),
                                NULL, CB(&c)));
    CHECK(c.rc == GW_ERR && now_ms() - t0 < 1000);
    redis_start();
    get_until_ok(&t, &c, "video_r1");
    CHECK(!c.has_job); /* a fresh Redis */
    RUN_UNTIL(&t, gw_store_reachable(s), 5000);
    put_ok(&t, &c, mkjob(&b, "video_r3", "alice", T0, 8, GW_JOB_QUEUED));
    get_ok(&t, &c, "video_r3");
    CHECK(c.has_job);
    tl_free(&t);
    gw_store_close(s);
    cap_free(&c);
}

/* A hung Redis (SIGSTOP): a call fails after [store] timeout, not later; the
 * connection is made again once it answers. */
static void test_redis_hung(void)
{
    struct gw_store *s = open_store(new_path("hung"), 0);
    struct tloop t;
    struct capture c;
    struct jobbuf b;

    cap_init(&c);
    tl_init(&t, s);
    put_ok(&t, &c, mkjob(&b, "video_h1", "alice", T0, 8, GW_JOB_QUEUED));
    kill(redis_pid, SIGSTOP);
    uint64_t t0 = now_ms();
    DO(&t, &c, gw_store_job_get(t.sl, "video_h1", CB(&c)));
    uint64_t ms = now_ms() - t0;
    printf("  a call to a stopped Redis failed after %llu ms\n", (unsigned long long)ms);
    CHECK(c.rc == GW_ERR && c.err_status == 503);
    CHECK_CONTAINS(c.errmsg, "no answer within 250 ms");
    CHECK(ms >= 200 && ms < 1500);
    kill(redis_pid, SIGCONT);
    get_until_ok(&t, &c, "video_h1");
    CHECK(c.has_job);
    tl_free(&t);
    gw_store_close(s);
    cap_free(&c);
}

/* SCRIPT FLUSH: the scripts are sent again (NOSCRIPT, then EVAL); FLUSHALL:
 * the data is gone, the store still works. */
static void test_redis_flush(void)
{
    const char *path = new_path("flush");
    struct gw_store *s = open_store(path, 0);
    struct tloop t;
    struct capture c;
    struct jobbuf b;
    struct gw_job_list_query q = { .key_name = "alice", .limit = 10 };

    cap_init(&c);
    tl_init(&t, s);
    put_ok(&t, &c, mkjob(&b, "video_f1", "alice", T0, 8, GW_JOB_QUEUED));
    freeReplyObject(redis_cmd("SCRIPT FLUSH"));
    /* several at once, each first answered NOSCRIPT: still in order */
    struct capture c2;
    cap_init(&c2);
    SUBMIT(&c, gw_store_job_put(t.sl, mkjob(&b, "video_f2", "alice", T0 + 1, 8, GW_JOB_QUEUED),
                                NULL, CB(&c)));
    SUBMIT(&c2, gw_store_job_list(t.sl, &q, CB(&c2)));
    RUN_UNTIL(&t, c.calls && c2.calls, 10000);
    CHECK(c.rc == GW_OK && c2.rc == GW_OK);
    CHECK(c2.njobs == 2 && strcmp(c2.ids[0], "video_f2") == 0);
    /* a put and a get of it, after another flush: the get still comes after the put */
    freeReplyObject(redis_cmd("SCRIPT FLUSH"));
    SUBMIT(&c, gw_store_job_put(t.sl, mkjob(&b, "video_f4", "alice", T0 + 2, 8, GW_JOB_QUEUED),
                                NULL, CB(&c)));
    SUBMIT(&c2, gw_store_job_get(t.sl, "video_f4", CB(&c2)));
    RUN_UNTIL(&t, c.calls && c2.calls, 10000);
    CHECK(c.rc == GW_OK && c2.rc == GW_OK && c2.has_job);
    freeReplyObject(redis_cmd("FLUSHALL"));
    get_ok(&t, &c, "video_f1");
    CHECK(!c.has_job);
    put_ok(&t, &c, mkjob(&b, "video_f3", "alice", T0, 8, GW_JOB_QUEUED));
    DO_OK(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.njobs == 1);
    tl_free(&t);
    gw_store_close(s);
    cap_free(&c);
    cap_free(&c2);
}

/* Someone else's data under our keys (wrong types): that call fails with
 * Redis's error (and a log line); the others go on. */
static void test_redis_wrong_type(void)
{
    const char *path = new_path("wrongtype");
    struct gw_store *s = open_store(path, 0);
    struct tloop t;
    struct capture c;
    struct jobbuf b;
    struct gw_job_list_query q = { .key_name = "mallory", .limit = 10 };

    cap_init(&c);
    tl_init(&t, s);
    freeReplyObject(redis_cmd("SET %sjob:video_w1 not-a-hash", redis_prefix));
    freeReplyObject(redis_cmd("SET %sjobs:mallory not-a-zset", redis_prefix));
    DO(&t, &c, gw_store_job_get(t.sl, "video_w1", CB(&c)));
    CHECK(c.rc == GW_ERR && c.err_status == 503);
    CHECK_CONTAINS(c.errmsg, "WRONGTYPE");
    DO(&t, &c, gw_store_job_put(t.sl, mkjob(&b, "video_w2", "mallory", T0, 8, GW_JOB_QUEUED),
                                NULL, CB(&c)));
    CHECK(c.rc == GW_ERR);
    CHECK_CONTAINS(c.errmsg, "(Redis) answered an error: WRONGTYPE");
    DO(&t, &c, gw_store_job_list(t.sl, &q, CB(&c)));
    CHECK(c.rc == GW_ERR);
    struct gw_job_update u = { .id = "video_w1", .status = GW_JOB_FAILED, .now = T0 };
    DO(&t, &c, gw_store_job_update(t.sl, &u, CB(&c)));
    CHECK(c.rc == GW_ERR);
    /* the rest works */
    put_ok(&t, &c, mkjob(&b, "video_w3", "alice", T0, 8, GW_JOB_QUEUED));
    get_ok(&t, &c, "video_w3");
    CHECK(c.has_job);
    tl_free(&t);
    gw_store_close(s);
    cap_free(&c);
}

/* Redis asks for a password: none, or a wrong one, fails every call with a
 * clear message (never the password); the right one works. */
static void test_redis_password(void)
{
    struct tloop t;
    struct capture c;

    cap_init(&c);
    freeReplyObject(redis_cmd("CONFIG SET requirepass %s", "pw-right"));
    redis_password = NULL;
    struct gw_store *s = open_store(new_path("password"), 0);
    tl_init(&t, s);
    DO(&t, &c, gw_store_job_get(t.sl, "video_p", CB(&c)));
    CHECK(c.rc == GW_ERR);
    CHECK_CONTAINS(c.errmsg, "NOAUTH");
    tl_free(&t);
    gw_store_close(s);

    redis_password = "pw-wrong";
    s = open_store(new_path("password"), 0);
    tl_init(&t, s);
    DO(&t, &c, gw_store_job_get(t.sl, "video_p", CB(&c)));
    CHECK(c.rc == GW_ERR);
    CHECK(strstr(c.errmsg, "pw-wrong") == NULL);
    tl_free(&t);
    gw_store_close(s);

    redis_password = "pw-right";
    s = open_store(new_path("password"), 0);
    tl_init(&t, s);
    get_ok(&t, &c, "video_p");
    CHECK(!c.has_job);
    tl_free(&t);
    gw_store_close(s);
    freeReplyObject(redis_cmd("CONFIG SET requirepass %s", ""));
    redis_password = NULL;
    cap_free(&c);
}

/* The limits' scripts (limits/redis_limits.c) on this store's connection: GCRA
 * as gcra.c counts it (burst, remaining, retry-after), concurrency leases,
 * the daily budget's reserve and give-back. */
struct decision_cap {
    int calls;
    struct gw_rlimits_decision d;
    int rc;
    int64_t ints[8];
};

static void decision_cb(void *arg, const struct gw_store_res *res)
{
    struct decision_cap *c = arg;

    c->calls++;
    c->rc = res->rc == GW_OK ? gw_rlimits_decode(res, &c->d) : GW_ERR;
    memcpy(c->ints, res->ints, sizeof(c->ints));
}

static int admit_upstream_rpm; /* what admit_once passes as upstream_rpm (queue: 2 s) */

static struct gw_rlimits_decision admit_once(struct tloop *t, const struct gw_team_key *k,
                                             const char *lease)
{
    struct decision_cap c = { 0 };
    struct gw_error err;

    CHECK(gw_rlimits_admit(t->sl, k, lease, admit_upstream_rpm, 2000, decision_cb, &c, NULL,
                           &err) == GW_AGAIN);
    RUN_UNTIL(t, c.calls == 1, 10000);
    CHECK(c.rc == GW_OK);
    return c.d;
}

static int reserve_once(struct tloop *t, const char *key, uint32_t secs, uint32_t limit)
{
    struct decision_cap c = { 0 };
    struct gw_error err;

    CHECK(gw_rlimits_reserve(t->sl, key, 20000, secs, limit, decision_cb, &c, NULL, &err) ==
          GW_AGAIN);
    RUN_UNTIL(t, c.calls == 1, 10000);
    return (int)c.ints[0];
}

static void test_redis_limits(void)
{
    struct gw_store *s = open_store(new_path("limits"), 0);
    struct tloop t;
    struct gw_team_key k = { .name = "alice", .limits = { .rpm = 60, .burst = 3 } };
    struct gw_rlimits_decision d;

    tl_init(&t, s);
    /* burst 3 at 60 a minute: three now (remaining 2, 1, 0), then one a second */
    for (uint32_t i = 0; i < 3; i++) {
        d = admit_once(&t, &k, "");
        CHECK(d.status == GW_RLIMITS_ADMITTED && d.rate.limit == 60);
        CHECK(d.rate.remaining == 2 - i);
        CHECK(d.rate.reset_ms > 0 && d.rate.reset_ms <= 3000);
    }
    d = admit_once(&t, &k, "");
    CHECK(d.status == GW_RLIMITS_RATE && d.rate.remaining == 0);
    CHECK(d.retry_after_ms >= 900 && d.retry_after_ms <= 1000);
    /* another key has its own bucket; rpm 0 is unlimited */
    struct gw_team_key bob = { .name = "bob", .limits = { .rpm = 1 } };
    CHECK(admit_once(&t, &bob, "").status == GW_RLIMITS_ADMITTED);
    CHECK(admit_once(&t, &bob, "").status == GW_RLIMITS_RATE);
    struct gw_team_key free_key = { .name = "carol", .limits = { .concurrency = 2 } };
    /* concurrency 2: two leases, a third refused (and not counted), one back, one more */
    d = admit_once(&t, &free_key, "lease-1");
    CHECK(d.status == GW_RLIMITS_ADMITTED && d.rate.limit == 0);
    CHECK(admit_once(&t, &free_key, "lease-2").status == GW_RLIMITS_ADMITTED);
    d = admit_once(&t, &free_key, "lease-3");
    CHECK(d.status == GW_RLIMITS_CONCURRENCY && d.retry_after_ms == 1000);
    gw_rlimits_release_id(t.sl, "carol", "lease-1");
    /* (the release script's first use on this connection: loaded ahead of it, so the
     * release is not re-sent behind the admit that follows) */
    CHECK(admit_once(&t, &free_key, "lease-4").status == GW_RLIMITS_ADMITTED);
    redisReply *r = redis_cmd("ZCARD %sconc:carol", redis_prefix);
    CHECK(r->type == REDIS_REPLY_INTEGER && r->integer == 2);
    freeReplyObject(r);
    /* the daily budget: 16 s, two of 8, a third refused, 8 back, fits again */
    CHECK(reserve_once(&t, "alice", 8, 16) == 0);
    CHECK(reserve_once(&t, "alice", 8, 16) == 0);
    CHECK(reserve_once(&t, "alice", 8, 16) == 1);
    gw_rlimits_unreserve(t.sl, "alice", 20000, 8);
    CHECK(reserve_once(&t, "alice", 8, 16) == 0);
    CHECK(reserve_once(&t, "alice", 1, 0) == 0); /* no limit: counted, never refused */
    /* the scripts flushed: sent again */
    freeReplyObject(redis_cmd("SCRIPT FLUSH"));
    CHECK(admit_once(&t, &k, "").status == GW_RLIMITS_RATE);
    /* upstream_rpm 60, queue 2 s: slots 0, 1, 2 s ahead, then refused; a key refused
     * on its own limits takes no upstream slot */
    struct gw_team_key dave = { .name = "dave" };
    admit_upstream_rpm = 60;
    CHECK(admit_once(&t, &k, "").status == GW_RLIMITS_RATE);
    for (int i = 0; i < 3; i++) {
        d = admit_once(&t, &dave, "");
        CHECK(d.status == GW_RLIMITS_ADMITTED);
        CHECK(d.wait_ms >= i * 1000 - 50 && d.wait_ms <= i * 1000);
    }
    d = admit_once(&t, &dave, "");
    CHECK(d.status == GW_RLIMITS_UPSTREAM && d.retry_after_ms >= 1 && d.retry_after_ms <= 1000);
    admit_upstream_rpm = 0;
    tl_free(&t);
    gw_store_close(s);
}

/* ------------------------------------------------------------------- keys */

struct kcap {
    int calls, rc, exists, revoked, has_key;
    char errmsg[256];
    char name[72], models[128];
    unsigned char sha256[32];
    int64_t rpm, burst, concurrency, daily_seconds, expires_at, created_at, updated_at,
        revoked_at;
    size_t nkeys;
    char names[16][72];
    int64_t revoked_ats[16];
    int64_t last_used[4];
    int64_t key_last_used[16];
    uint64_t version;
    char skipped[128];          /* keys_list: res->keys_skipped ("" for none) */
    size_t njobs;
    char ids[16][32];
};

static void kcap_cb(void *arg, const struct gw_store_res *res)
{
    struct kcap *c = arg;

    c->calls++;
    c->rc = res->rc;
    if (res->rc != GW_OK) {
        snprintf(c->errmsg, sizeof(c->errmsg), "%s", res->err->message);
        return;
    }
    c->exists = res->key_exists;
    c->revoked = res->key_revoked;
    snprintf(c->skipped, sizeof(c->skipped), "%s", res->keys_skipped ? res->keys_skipped : "");
    c->has_key = res->key != NULL;
    if (res->key != NULL) {
        const struct gw_store_key *k = res->key;
        snprintf(c->name, sizeof(c->name), "%s", k->name);
        snprintf(c->models, sizeof(c->models), "%s", k->models);
        memcpy(c->sha256, k->sha256, 32);
        c->rpm = k->rpm;
        c->burst = k->burst;
        c->concurrency = k->concurrency;
        c->daily_seconds = k->daily_seconds;
        c->expires_at = k->expires_at;
        c->created_at = k->created_at;
        c->updated_at = k->updated_at;
        c->revoked_at = k->revoked_at;
    }
    c->nkeys = res->nkeys;
    for (size_t i = 0; i < res->nkeys && i < 16; i++) {
        snprintf(c->names[i], sizeof(c->names[i]), "%s", res->keys[i].name);
        c->revoked_ats[i] = res->keys[i].revoked_at;
        c->key_last_used[i] = res->keys[i].last_used_at;
    }
    for (size_t i = 0; res->last_used != NULL && i < 3; i++) /* test_keys asks 3 */
        c->last_used[i] = res->last_used[i];
    c->version = res->keys_version;
    c->njobs = res->njobs;
    for (size_t i = 0; i < res->njobs && i < 16; i++)
        snprintf(c->ids[i], sizeof(c->ids[i]), "%s", res->jobs[i].id);
}

#define KDO(t, c, call)                                                    \
    do {                                                                   \
        struct gw_error err_;                                              \
        memset((c), 0, sizeof(*(c)));                                      \
        int rc_ = (call);                                                  \
        if (rc_ != GW_AGAIN)                                               \
            fprintf(stderr, "  call refused: %s\n", err_.message);         \
        CHECK(rc_ == GW_AGAIN);                                            \
        RUN_UNTIL(t, (c)->calls == 1, 10000);                              \
        if ((c)->rc != GW_OK)                                              \
            fprintf(stderr, "  store error: %s\n", (c)->errmsg);           \
        CHECK((c)->rc == GW_OK);                                           \
    } while (0)

#define KCB(c) kcap_cb, (c), NULL, &err_

static struct gw_store_key mkkey(const char *name, unsigned char fill, int64_t created)
{
    struct gw_store_key k = { .name = name, .rpm = -1, .burst = -1, .concurrency = -1,
                              .daily_seconds = -1, .models = "", .created_at = created };
    memset(k.sha256, fill, sizeof(k.sha256));
    return k;
}

static void test_keys(void)
{
    const char *path = new_path("keys");
    struct gw_store *s = open_store(path, 0);
    struct gw_store_options o;
    struct tloop t;
    struct kcap c;
    struct capture jc;
    struct jobbuf jb;
    struct gw_error err;

    store_opts(path, 0, &o); /* the CLI's way: SQLite's file, or Redis */
    cap_init(&jc);
    tl_init(&t, s);
    if (!use_redis)
        CHECK(raw_int(path, "SELECT count(*) FROM sqlite_master WHERE name IN ('keys', "
                            "'keys_version')") == 2);
    KDO(&t, &c, gw_store_keys_version(t.sl, KCB(&c)));
    CHECK(c.version == 0);

    struct gw_store_key k = mkkey("alice", 0xa1, T0);
    k.daily_seconds = 600;
    k.models = "veo_3_1,veo3";
    KDO(&t, &c, gw_store_key_put(t.sl, &k, KCB(&c)));
    CHECK(!c.exists && c.has_key && strcmp(c.name, "alice") == 0);
    CHECK(c.daily_seconds == 600 && c.rpm == -1 && c.created_at == T0 && c.revoked_at == 0);
    CHECK(strcmp(c.models, "veo_3_1,veo3") == 0 && c.sha256[0] == 0xa1);
    KDO(&t, &c, gw_store_keys_version(t.sl, KCB(&c)));
    CHECK(c.version == 1);

    /* the name, or the hash, taken: data, nothing written */
    struct gw_store_key dup = mkkey("alice", 0xb2, T0);
    KDO(&t, &c, gw_store_key_put(t.sl, &dup, KCB(&c)));
    CHECK(c.exists && !c.has_key);
    dup = mkkey("alice2", 0xa1, T0);
    KDO(&t, &c, gw_store_key_put(t.sl, &dup, KCB(&c)));
    CHECK(c.exists);
    KDO(&t, &c, gw_store_keys_version(t.sl, KCB(&c)));
    CHECK(c.version == 1);

    /* a patch changes only what it sets */
    struct gw_store_key_patch p = { .name = "alice", .set = GW_KEY_SET_RPM | GW_KEY_SET_MODELS,
                                    .rpm = 30, .models = "", .now = T0 + 5 };
    KDO(&t, &c, gw_store_key_patch(t.sl, &p, KCB(&c)));
    CHECK(c.has_key && c.rpm == 30 && c.daily_seconds == 600 && c.models[0] == '\0');
    CHECK(c.updated_at == T0 + 5 && c.created_at == T0);
    p.name = "nobody";
    KDO(&t, &c, gw_store_key_patch(t.sl, &p, KCB(&c)));
    CHECK(!c.has_key);

    /* the CLI's way, beside the open store: the loop sees the version move */
    struct gw_store_key bob = mkkey("bob", 0xb0, T0 + 10);
    memset(&c, 0, sizeof(c));
    CHECK(gw_store_key_put_sync(&o, &bob, kcap_cb, &c, &err) == GW_OK);
    CHECK(c.calls == 1 && c.has_key && strcmp(c.name, "bob") == 0);
    memset(&c, 0, sizeof(c));
    CHECK(gw_store_key_put_sync(&o, &bob, kcap_cb, &c, &err) == GW_OK);
    CHECK(c.exists);
    KDO(&t, &c, gw_store_keys_version(t.sl, KCB(&c)));
    CHECK(c.version == 3);

    /* revoke: once; a revoked key cannot be patched; its name stays taken */
    KDO(&t, &c, gw_store_key_revoke(t.sl, "bob", T0 + 20, KCB(&c)));
    CHECK(c.revoked && c.has_key && c.revoked_at == T0 + 20);
    memset(&c, 0, sizeof(c));
    CHECK(gw_store_key_revoke_sync(&o, "bob", T0 + 30, kcap_cb, &c, &err) == GW_OK);
    CHECK(!c.revoked && c.has_key && c.revoked_at == T0 + 20);
    p.name = "bob";
    KDO(&t, &c, gw_store_key_patch(t.sl, &p, KCB(&c)));
    CHECK(!c.has_key);
    bob.sha256[0] = 0x77;
    KDO(&t, &c, gw_store_key_put(t.sl, &bob, KCB(&c)));
    CHECK(c.exists);

    /* list: every key by name, the version, and last use of the names asked */
    put_ok(&t, &jc, mkjob(&jb, "video_k1", "alice", T0 + 100, 8, GW_JOB_QUEUED));
    put_ok(&t, &jc, mkjob(&jb, "video_k2", "alice", T0 + 200, 8, GW_JOB_FAILED));
    put_ok(&t, &jc, mkjob(&jb, "video_k3", "cfgkey", T0 + 150, 4, GW_JOB_QUEUED));
    const char *names[] = { "alice", "cfgkey", "bob" };
    KDO(&t, &c, gw_store_keys_list(t.sl, names, 3, KCB(&c)));
    CHECK(c.nkeys == 2 && strcmp(c.names[0], "alice") == 0 && strcmp(c.names[1], "bob") == 0);
    CHECK(c.revoked_ats[0] == 0 && c.revoked_ats[1] == T0 + 20);
    CHECK(c.last_used[0] == T0 + 200 && c.last_used[1] == T0 + 150 && c.last_used[2] == 0);
    CHECK(c.key_last_used[0] == T0 + 200 && c.key_last_used[1] == 0);
    CHECK(c.version == 4);
    memset(&c, 0, sizeof(c));
    CHECK(gw_store_keys_list_sync(&o, NULL, 0, kcap_cb, &c, &err) == GW_OK);
    CHECK(c.nkeys == 2 && c.version == 4);

    /* recent jobs across keys, newest first; by key, by status */
    struct gw_jobs_recent_query q = { NULL, -1, 10 };
    KDO(&t, &c, gw_store_jobs_recent(t.sl, &q, KCB(&c)));
    CHECK(c.njobs == 3 && strcmp(c.ids[0], "video_k3") == 0 &&
          strcmp(c.ids[2], "video_k1") == 0);
    q = (struct gw_jobs_recent_query){ "alice", -1, 1 };
    KDO(&t, &c, gw_store_jobs_recent(t.sl, &q, KCB(&c)));
    CHECK(c.njobs == 1 && strcmp(c.ids[0], "video_k2") == 0);
    q = (struct gw_jobs_recent_query){ NULL, GW_JOB_QUEUED, 10 };
    KDO(&t, &c, gw_store_jobs_recent(t.sl, &q, KCB(&c)));
    CHECK(c.njobs == 2 && strcmp(c.ids[0], "video_k3") == 0);
    q = (struct gw_jobs_recent_query){ "alice", GW_JOB_QUEUED, 10 };
    KDO(&t, &c, gw_store_jobs_recent(t.sl, &q, KCB(&c)));
    CHECK(c.njobs == 1 && strcmp(c.ids[0], "video_k1") == 0);

    /* last use counts a deleted job too; recent jobs list it */
    put_ok(&t, &jc, mkjob(&jb, "video_k4", "bob", T0 + 300, 4, GW_JOB_QUEUED));
    DO_OK(&t, &jc, gw_store_job_delete(t.sl, "video_k4", T0 + 301, CB(&jc)));
    KDO(&t, &c, gw_store_keys_list(t.sl, names, 3, KCB(&c)));
    CHECK(c.last_used[2] == T0 + 300 && c.key_last_used[1] == T0 + 300);
    q = (struct gw_jobs_recent_query){ "bob", -1, 5 };
    KDO(&t, &c, gw_store_jobs_recent(t.sl, &q, KCB(&c)));
    CHECK(c.njobs == 1 && strcmp(c.ids[0], "video_k4") == 0);
    q = (struct gw_jobs_recent_query){ NULL, -1, 2 };
    KDO(&t, &c, gw_store_jobs_recent(t.sl, &q, KCB(&c)));
    CHECK(c.njobs == 2 && strcmp(c.ids[0], "video_k4") == 0 &&
          strcmp(c.ids[1], "video_k3") == 0);

    /* refused at the call */
    struct gw_store_key bad = mkkey("a b", 1, T0);
    CHECK(gw_store_key_put(t.sl, &bad, kcap_cb, &c, NULL, &err) == GW_ERR);
    CHECK(err.status == 400 && strcmp(err.param, "name") == 0);
    char longname[100];
    memset(longname, 'x', 65);
    longname[65] = '\0';
    bad = mkkey(longname, 1, T0);
    CHECK(gw_store_key_put(t.sl, &bad, kcap_cb, &c, NULL, &err) == GW_ERR);
    bad = mkkey("ok", 1, T0);
    bad.rpm = -2;
    CHECK(gw_store_key_put(t.sl, &bad, kcap_cb, &c, NULL, &err) == GW_ERR);
    CHECK(strcmp(err.param, "rpm") == 0);
    bad.rpm = 100000001;
    CHECK(gw_store_key_put(t.sl, &bad, kcap_cb, &c, NULL, &err) == GW_ERR);
    q = (struct gw_jobs_recent_query){ NULL, -1, 101 };
    CHECK(gw_store_jobs_recent(t.sl, &q, kcap_cb, &c, NULL, &err) == GW_ERR);
    CHECK(strcmp(err.param, "limit") == 0);
    CHECK(gw_store_key_revoke(t.sl, "", 0, kcap_cb, &c, NULL, &err) == GW_ERR);

    tl_free(&t);
    gw_store_close(s);
    cap_free(&jc);

    /* a sync call on a file (a prefix) no gateway made yet creates it, at the current
     * version */
    const char *fresh = new_path("keys_fresh");
    store_opts(fresh, 0, &o);
    k = mkkey("carol", 0xc0, T0);
    memset(&c, 0, sizeof(c));
    CHECK(gw_store_key_put_sync(&o, &k, kcap_cb, &c, &err) == GW_OK && c.has_key);
    if (!use_redis) {
        CHECK(raw_int(fresh, "PRAGMA user_version") == GW_STORE_SCHEMA_VERSION);
        CHECK(raw_int(fresh, "SELECT version FROM keys_version") == 1);
    }
    memset(&c, 0, sizeof(c));
    CHECK(gw_store_keys_list_sync(&o, NULL, 0, kcap_cb, &c, &err) == GW_OK);
    CHECK(c.nkeys == 1 && c.version == 1 && strcmp(c.names[0], "carol") == 0);
}

/* Someone else's data under the keys' names: the key set itself not a set fails
 * the list (logged); one key row not ours is left out and named, never read as a
 * key with no limits; the jobs' calls go on. */
static void test_redis_wrong_type_keys(void)
{
    struct gw_store *s = open_store(new_path("wrongtype_keys"), 0);
    struct tloop t;
    struct capture c;
    struct jobbuf b;

    cap_init(&c);
    tl_init(&t, s);
    struct kcap kc;
    struct gw_error kerr;
    freeReplyObject(redis_cmd("SET %stkeys not-a-zset", redis_prefix));
    memset(&kc, 0, sizeof(kc));
    CHECK(gw_store_keys_list(t.sl, NULL, 0, kcap_cb, &kc, NULL, &kerr) == GW_AGAIN);
    RUN_UNTIL(&t, kc.calls == 1, 5000);
    CHECK(kc.rc == GW_ERR);
    CHECK_CONTAINS(kc.errmsg, "WRONGTYPE");
    freeReplyObject(redis_cmd("DEL %stkeys", redis_prefix));
    freeReplyObject(redis_cmd("ZADD %stkeys 0 eve", redis_prefix));
    freeReplyObject(redis_cmd("HSET %stkey:eve name eve", redis_prefix)); /* fields missing */
    freeReplyObject(redis_cmd("ZADD %stkeys 0 fay", redis_prefix));
    freeReplyObject(redis_cmd("SET %stkey:fay not-a-hash", redis_prefix));
    /* one malformed key row is left out and named; the list itself is fine */
    memset(&kc, 0, sizeof(kc));
    CHECK(gw_store_keys_list(t.sl, NULL, 0, kcap_cb, &kc, NULL, &kerr) == GW_AGAIN);
    RUN_UNTIL(&t, kc.calls == 1, 5000);
    CHECK(kc.rc == GW_OK);
    CHECK(kc.nkeys == 0);
    CHECK(strcmp(kc.skipped, "eve, fay") == 0);
    put_ok(&t, &c, mkjob(&b, "video_w3", "alice", T0, 8, GW_JOB_QUEUED));
    tl_free(&t);
    gw_store_close(s);
    cap_free(&c);
}

/* A file of schema version 1 (before keys) gets the keys tables on open. */
static void test_keys_migrate_v1(void)
{
    const char *path = new_path("keys_v1");

    raw_exec(path, "CREATE TABLE jobs (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
                   "key_name TEXT NOT NULL, upstream_key TEXT NOT NULL, kind TEXT NOT NULL, "
                   "model_asked TEXT NOT NULL, model_sent TEXT NOT NULL, seconds INTEGER NOT "
                   "NULL, size TEXT NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT "
                   "NULL, updated_at INTEGER NOT NULL, refreshed_at INTEGER NOT NULL, "
                   "deleted_at INTEGER NOT NULL DEFAULT 0, refunded INTEGER NOT NULL DEFAULT "
                   "0, object TEXT NOT NULL);"
                   "CREATE TABLE usage_daily (day TEXT NOT NULL, key_name TEXT NOT NULL, "
                   "model TEXT NOT NULL, jobs INTEGER NOT NULL DEFAULT 0, seconds INTEGER NOT "
                   "NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, refunded_seconds "
                   "INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (day, key_name, model)) WITHOUT "
                   "ROWID;"
                   "CREATE TABLE idempotency (key_name TEXT NOT NULL, idem_key TEXT NOT NULL, "
                   "state TEXT NOT NULL, status INTEGER NOT NULL DEFAULT 0, body BLOB, "
                   "created_at INTEGER NOT NULL, UNIQUE (key_name, idem_key));"
                   "PRAGMA user_version = 1;");
    struct gw_store *s = open_store(path, 0);
    gw_store_close(s);
    CHECK(raw_int(path, "PRAGMA user_version") == GW_STORE_SCHEMA_VERSION);
    CHECK(raw_int(path, "SELECT version FROM keys_version") == 0);
}

/* ------------------------------------------------------------------- main */

/* ------------------------------------------------------ characters (issue 9) */

struct charcap {
    int calls, rc, found;
    char id[140], key_name[64], upstream_key[64], name[64], object[256];
    int64_t created_at;
};

static void char_cb(void *arg, const struct gw_store_res *res)
{
    struct charcap *c = arg;
    const struct gw_character *ch = res->character;

    c->calls++;
    c->rc = res->rc;
    c->found = ch != NULL;
    if (ch == NULL)
        return;
    snprintf(c->id, sizeof(c->id), "%s", ch->id);
    snprintf(c->key_name, sizeof(c->key_name), "%s", ch->key_name);
    snprintf(c->upstream_key, sizeof(c->upstream_key), "%s", ch->upstream_key);
    snprintf(c->name, sizeof(c->name), "%s", ch->name);
    CHECK(ch->object[ch->object_len] == '\0' && ch->object_len < sizeof(c->object));
    memcpy(c->object, ch->object, ch->object_len + 1);
    c->created_at = ch->created_at;
}

static void test_characters(void)
{
    const char *path = new_path("characters");
    struct gw_store *s = open_store(path, 0);
    static const char obj[] = "{\"id\":\"char_1\",\"created_at\":1767225600,\"name\":\"Moo\"}";
    struct gw_character ch = { "char_1", "alice", "env:UP_B", "Moo", T0, obj, sizeof(obj) - 1 };
    struct gw_error err;
    struct charcap c;
    struct tloop t;

    tl_init(&t, s);
    memset(&c, 0, sizeof(c));
    CHECK(gw_store_character_put(t.sl, &ch, char_cb, &c, NULL, &err) == GW_AGAIN);
    RUN_UNTIL(&t, c.calls == 1, 5000);
    CHECK(c.rc == GW_OK);
    memset(&c, 0, sizeof(c));
    CHECK(gw_store_character_get(t.sl, "char_1", char_cb, &c, NULL, &err) == GW_AGAIN);
    RUN_UNTIL(&t, c.calls == 1, 5000);
    CHECK(c.rc == GW_OK && c.found);
    CHECK(strcmp(c.key_name, "alice") == 0 && strcmp(c.upstream_key, "env:UP_B") == 0);
    CHECK(strcmp(c.name, "Moo") == 0 && strcmp(c.object, obj) == 0 && c.created_at == T0);
    /* the same id again is an error; an unknown id is no row */
    memset(&c, 0, sizeof(c));
    CHECK(gw_store_character_put(t.sl, &ch, char_cb, &c, NULL, &err) == GW_AGAIN);
    RUN_UNTIL(&t, c.calls == 1, 5000);
    CHECK(c.rc == GW_ERR);
    memset(&c, 0, sizeof(c));
    CHECK(gw_store_character_get(t.sl, "char_2", char_cb, &c, NULL, &err) == GW_AGAIN);
    RUN_UNTIL(&t, c.calls == 1, 5000);
    CHECK(c.rc == GW_OK && !c.found);
    /* arguments checked before anything is queued */
    ch.id = "";
    CHECK(gw_store_character_put(t.sl, &ch, char_cb, &c, NULL, &err) == GW_ERR);
    ch.id = "char_3";
    ch.key_name = NULL;
    CHECK(gw_store_character_put(t.sl, &ch, char_cb, &c, NULL, &err) == GW_ERR);
    CHECK(gw_store_character_get(t.sl, NULL, char_cb, &c, NULL, &err) == GW_ERR);
    tl_free(&t);
    gw_store_close(s);
}

/* A file of schema version 1 (issue 6) gains the later tables, its jobs kept. */
static void test_migrate_v1(void)
{
    const char *path = new_path("v1");
    struct gw_store *s = open_store(path, 0);
    struct jobbuf b;
    struct tloop t;
    struct capture c;

    cap_init(&c);
    tl_init(&t, s);
    put_ok(&t, &c, mkjob(&b, "video_old", "alice", T0, 8, GW_JOB_QUEUED));
    tl_free(&t);
    gw_store_close(s);
    /* back to what a version 1 gateway wrote */
    raw_exec(path, "DROP TABLE characters; DROP TABLE usage_daily_kind; DROP TABLE keys; "
                   "DROP TABLE keys_version; PRAGMA user_version = 1");
    CHECK(raw_int(path, "SELECT count(*) FROM sqlite_master WHERE name = 'characters'") == 0);
    s = open_store(path, 0);
    CHECK(raw_int(path, "PRAGMA user_version") == GW_STORE_SCHEMA_VERSION);
    CHECK(raw_int(path, "SELECT count(*) FROM sqlite_master WHERE name = 'characters'") == 1);
    /* version 3's usage per kind is filled from the ledger */
    CHECK(raw_int(path, "SELECT count(*) FROM usage_daily_kind WHERE day = '2026-01-01' AND "
                        "key_name = 'alice' AND model = 'veo_3_1' AND kind = 'create' AND "
                        "jobs = 1 AND seconds = 8") == 1);
    tl_init(&t, s);
    cap_reset(&c);
    get_ok(&t, &c, "video_old");
    CHECK(c.has_job && strcmp(c.job.key_name, "alice") == 0);
    tl_free(&t);
    gw_store_close(s);
    cap_free(&c);
}

/* Usage per kind of job (issue 9): the same counters as usage_daily, split by kind,
 * kept in the same batches; usage_daily itself unchanged. */
static void test_usage_by_kind(void)
{
    const char *path = new_path("usage_kind");
    struct gw_store *s = open_store(path, 0);
    struct jobbuf b[4];
    static const enum gw_job_kind kinds[4] = { GW_JOB_CREATE, GW_JOB_EDIT, GW_JOB_EDIT,
                                               GW_JOB_EXTEND };
    struct gw_usage_query q = { .by_kind = 1 };
    struct gw_usage *u = NULL;
    struct gw_error err;
    struct tloop t;
    struct capture c;

    cap_init(&c);
    tl_init(&t, s);
    for (int i = 0; i < 4; i++) {
        char id[32];
        snprintf(id, sizeof(id), "video_k%d", i);
        mkjob(&b[i], id, "alice", T0, 4 + i, GW_JOB_QUEUED);
        b[i].j.kind = kinds[i];
        put_ok(&t, &c, &b[i].j);
    }
    /* an edit fails and is refunded: counted on its kind's row too */
    struct gw_job_update up = { .id = "video_k2", .status = GW_JOB_FAILED, .now = T0 + 10 };
    DO_OK(&t, &c, gw_store_job_update(t.sl, &up, CB(&c)));
    DO_OK(&t, &c, gw_store_job_refund(t.sl, "video_k2", CB(&c)));
    tl_free(&t);
    gw_store_close(s);
    struct gw_store_options o;
    store_opts(path, 0, &o);
    CHECK(gw_store_usage_read(&o, &q, &u, &err) == GW_OK);
    /* key, model, kind, day: create, edit (2 jobs, 5 + 6 s), extend */
    CHECK(u->n == 3);
    CHECK(strcmp(u->rows[0].kind, "create") == 0 && u->rows[0].jobs == 1 &&
          u->rows[0].seconds == 4);
    CHECK(strcmp(u->rows[1].kind, "edit") == 0 && u->rows[1].jobs == 2 &&
          u->rows[1].seconds == 11 && u->rows[1].failed == 1 &&
          u->rows[1].refunded_seconds == 6);
    CHECK(u->rows[0].failed == 0 && u->rows[0].refunded_seconds == 0);
    CHECK(strcmp(u->rows[2].kind, "extend") == 0 && u->rows[2].jobs == 1 &&
          u->rows[2].seconds == 7);
    gw_store_usage_free(u);
    q.by_kind = 0;
    CHECK(gw_store_usage_read(&o, &q, &u, &err) == GW_OK);
    CHECK(u->n == 1 && u->rows[0].jobs == 4 && u->rows[0].seconds == 22 &&
          u->rows[0].kind == NULL);
    gw_store_usage_free(u);
    cap_free(&c);
}

/* [store] redis = NAME:PORT: the name is resolved once, by open (never on a loop at a
 * reconnect); one that does not resolve stops the start with a clear message. */
static void test_redis_host_name(void)
{
    const char *path = new_path("host_name");
    struct gw_store_options o;
    struct gw_error err;
    struct jobbuf b;
    struct tloop t;
    struct capture c;

    store_opts(path, 0, &o);
    o.redis_host = "localhost";
    struct gw_store *s = gw_store_open(&o, &err);
    CHECK(s != NULL);
    cap_init(&c);
    tl_init(&t, s);
    put_ok(&t, &c, mkjob(&b, "video_h1", "alice", T0, 8, GW_JOB_QUEUED));
    get_ok(&t, &c, "video_h1");
    CHECK(c.has_job);
    tl_free(&t);
    gw_store_close(s);
    cap_free(&c);
    o.redis_host = "no-such-host.invalid";
    CHECK(gw_store_open(&o, &err) == NULL);
    CHECK(strstr(err.message, "cannot resolve no-such-host.invalid") != NULL);
}

enum { SQ = 1, RD = 2, BOTH = 3 }; /* the engines a test runs on */

static const struct {
    const char *name;
    void (*fn)(void);
    int engines;
} tests[] = {
    { "create_migrate", test_create_migrate, SQ },
    { "reopen_keeps_data", test_reopen_keeps_data, BOTH },
    { "two_loops", test_two_loops, BOTH },
    { "order", test_order, BOTH },
    { "group_commit", test_group_commit, SQ },
    { "list_cursor", test_list_cursor, BOTH },
    { "list_insertion_order", test_list_insertion_order, BOTH },
    { "bad_arguments", test_bad_arguments, BOTH },
    { "update_forward_only", test_update_forward_only, BOTH },
    { "refund_once", test_refund_once, BOTH },
    { "claim_unfinished", test_claim_unfinished, BOTH },
    { "idempotency", test_idempotency, BOTH },
    { "prune_keeps_totals", test_prune_keeps_totals, BOTH },
    { "prune_many_keys", test_prune_many_keys, BOTH },
    { "usage_read", test_usage_read, BOTH },
    { "bad_files", test_bad_files, SQ },
    { "cancel", test_cancel, BOTH },
    { "loop_free_pending", test_loop_free_pending, BOTH },
    { "errors_isolated", test_errors_isolated, BOTH },
    { "close_drains", test_close_drains, BOTH },
    { "usage_in_batch", test_usage_in_batch, SQ },
    { "commit_delay", test_commit_delay, SQ },
    { "checkpoints", test_checkpoints, SQ },
    { "durability_kill9", test_durability_kill9, SQ },
    { "disk_full", test_disk_full, SQ },
    { "keys", test_keys, BOTH },
    { "keys_migrate_v1", test_keys_migrate_v1, SQ },
    { "characters", test_characters, BOTH },
    { "migrate_v1", test_migrate_v1, SQ },
    { "usage_by_kind", test_usage_by_kind, BOTH },
    { "redis_two_instances", test_redis_two_instances, RD },
    { "redis_limits", test_redis_limits, RD },
    { "redis_flush", test_redis_flush, RD },
    { "redis_wrong_type", test_redis_wrong_type, RD },
    { "redis_wrong_type_keys", test_redis_wrong_type_keys, RD },
    { "redis_password", test_redis_password, RD },
    { "redis_hung", test_redis_hung, RD },
    { "redis_restart", test_redis_restart, RD },
    { "redis_host_name", test_redis_host_name, RD },
};

/* The temporary directory goes, also when a test fails (exit(1)); not from a
 * forked child. */
static pid_t main_pid;

static void remove_tmpdir(void)
{
    char cmd[600];

    if (getpid() != main_pid || tmpdir[0] == '\0')
        return;
    snprintf(cmd, sizeof(cmd), "chmod -R u+w '%s' && rm -rf '%s'", tmpdir, tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

int main(int argc, char **argv)
{
    int ran = 0;

    if (argc > 1 && strcmp(argv[1], "--redis") == 0) {
        use_redis = 1;
        argc--;
        argv++;
    }

    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(tmpdir, sizeof(tmpdir), "%s/gw-store-XXXXXX",
             getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    CHECK(mkdtemp(tmpdir) != NULL);
    main_pid = getpid();
    atexit(remove_tmpdir);
    chmod(tmpdir, 0755); /* the tests that drop privileges read in here */
    if (use_redis) {
        redis_start();
        atexit(redis_kill);
    }
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        if (argc > 1 && strcmp(argv[1], tests[i].name) != 0)
            continue;
        if (!(tests[i].engines & (use_redis ? RD : SQ)))
            continue;
        uint64_t t0 = now_ms();
        cur_test = tests[i].name;
        tests[i].fn(); /* exits on failure */
        printf("ok - %s (%llu ms)\n", tests[i].name, (unsigned long long)(now_ms() - t0));
        ran++;
    }
    if (ran == 0) {
        fprintf(stderr, "no test named %s\n", argc > 1 ? argv[1] : "?");
        return 1;
    }
    return 0;
}
