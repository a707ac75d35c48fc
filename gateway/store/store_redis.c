/*
 * store_redis.c - the Redis engine: several gateway instances share one Redis.
 *
 * One hiredis async context per event loop, on that loop's base (hiredis's
 * libevent adapter): a call sends its command from the loop's thread and
 * returns; the reply comes on the same loop, and the result goes back through
 * store.c's delivery (the loop's eventfd), so a callback never runs from inside
 * a call nor from inside hiredis. Each call is one command (a Lua script, or
 * an HMGET), so the calls of one loop complete in the order they were made and
 * each is atomic against the other instances.
 *
 * What hiredis 0.14.1 (Debian) lacks, done here:
 *   - a deadline per command: commands are answered in order, so the oldest
 *     one in flight is the first to time out; one timer per connection is
 *     armed for it. Its deadline is [store] timeout after it was sent or after
 *     the reply before it came, whichever is later (a long pipeline to a busy
 *     Redis that answers is not a hung one). Past it the connection is
 *     dropped: every command in flight fails with a 503 store_error, and a
 *     hung Redis never holds a request for much longer than the timeout;
 *   - reconnect with backoff (100 ms doubling to 5 s) after a drop, a refused
 *     connection or a failed AUTH; meanwhile calls fail at once (503), so
 *     nothing waits for a Redis that is down. An outage is logged once (the
 *     first connection to go down) and its end once (the last to come back).
 *
 * Scripts are sent with EVALSHA; a NOSCRIPT (SCRIPT FLUSH, a restarted Redis)
 * re-sends that command with EVAL, which loads it again. Each connection
 * starts with AUTH (if a password is set), SELECT and SCRIPT LOAD of every
 * script, queued ahead of the first call; a caller's script (the limits') is
 * loaded ahead of its first use on the connection.
 *
 * Durability is Redis's (appendonly/save: the operator's choice): a callback
 * runs once Redis has executed the command (docs/store.md).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/sds.h>

#include "redis_int.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CLOSE_DRAIN_MIN_MS 1000 /* close and loop_free wait at least this for replies */

struct redis_store;

/* a command in flight: an operation's (in its memory) or the engine's own */
struct rs_inflight {
    struct rs_inflight *next;
    struct rloop *rl;
    struct gw_store_op *op; /* NULL: AUTH, SELECT, SCRIPT LOAD */
    struct rs_cmd *cmd;     /* op's command (op != NULL) */
    int64_t deadline;       /* monotonic ms */
    const char *what;       /* the engine's own: its name, for the log */
};

/* The engine's part of one loop: its connection. */
struct rloop {
    struct rloop *next, *prev;    /* the store's list (under its mutex) */
    struct redis_store *s;
    struct gw_store_loop *l;
    struct event_base *base;
    redisAsyncContext *ac;        /* NULL while down */
    int connected;                /* the connect callback said so */
    int down;                     /* counted in the store's loops_down */
    const char *why;              /* why the commands failing now fail */
    char why_buf[256];
    struct event *timer;          /* the oldest command's deadline */
    int timer_armed;
    struct event *retry;          /* reconnect after a backoff */
    int backoff_ms;
    struct rs_inflight *head, *tail;
    const char *loaded[16];       /* callers' scripts (their sources) loaded on this
                                     connection: SCRIPT LOAD goes ahead of a first use, so
                                     that it is not answered NOSCRIPT and re-sent behind
                                     the calls that followed it */
    unsigned nloaded;
};

struct redis_store {
    struct gw_store base;
    char *host, *unix_path, *password, *prefix;
    int port, db, timeout_ms;
    char where[160];              /* "127.0.0.1:6379", for messages (no secret) */
    char sha[RS_NSCRIPTS][41];
    pthread_mutex_t mu;           /* guards what follows */
    struct rloop *loops;
    int closing;
    unsigned loops_down;          /* loops whose connection is down */
    atomic_uint_fast64_t n_sent, n_ops, n_failed; /* gw_store_stats: commands, calls */
    atomic_int n_queued;          /* calls made and not yet answered */
};

static const struct gw_store_engine redis_engine;

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Counters: atomics, so that the loops never wait for each other over them. */
static void count(struct redis_store *s, int sent, int ops, int failed, int queued)
{
    if (sent)
        atomic_fetch_add_explicit(&s->n_sent, (uint64_t)sent, memory_order_relaxed);
    if (ops)
        atomic_fetch_add_explicit(&s->n_ops, (uint64_t)ops, memory_order_relaxed);
    if (failed)
        atomic_fetch_add_explicit(&s->n_failed, (uint64_t)failed, memory_order_relaxed);
    if (queued)
        atomic_fetch_add_explicit(&s->n_queued, queued, memory_order_relaxed);
}

/* ------------------------------------------------------------ up and down */

static void set_down(struct rloop *rl, const char *why)
{
    struct redis_store *s = rl->s;
    int first = 0;

    if (rl->down)
        return;
    rl->down = 1;
    pthread_mutex_lock(&s->mu);
    first = s->loops_down++ == 0;
    pthread_mutex_unlock(&s->mu);
    if (first && s->base.log != NULL)
        s->base.log(1, "store: Redis at %s is unreachable (%s): store calls fail (503) "
                    "until it is back; reconnecting", s->where, why); /* 1: GW_LOG_WARN */
}

static void set_up(struct rloop *rl)
{
    struct redis_store *s = rl->s;
    int last = 0;

    rl->backoff_ms = 0;
    if (!rl->down)
        return;
    rl->down = 0;
    pthread_mutex_lock(&s->mu);
    last = --s->loops_down == 0;
    pthread_mutex_unlock(&s->mu);
    if (last && s->base.log != NULL)
        s->base.log(2, "store: Redis at %s is reachable again", s->where); /* GW_LOG_INFO */
}

static void connect_now(struct rloop *rl);

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    connect_now(arg);
}

/* The connection is gone (rl->ac already NULL): try again after a backoff. */
static void schedule_retry(struct rloop *rl, const char *why)
{
    set_down(rl, why);
    rl->backoff_ms = rl->backoff_ms == 0 ? BACKOFF_MIN_MS : rl->backoff_ms * 2;
    if (rl->backoff_ms > BACKOFF_MAX_MS)
        rl->backoff_ms = BACKOFF_MAX_MS;
    struct timeval tv = { rl->backoff_ms / 1000, (rl->backoff_ms % 1000) * 1000 };
    if (rl->retry != NULL)
        event_add(rl->retry, &tv);
}

/* Drop the connection now: every command in flight fails with why. */
static void drop(struct rloop *rl, const char *why)
{
    redisAsyncContext *ac = rl->ac;

    if (ac == NULL)
        return;
    snprintf(rl->why_buf, sizeof(rl->why_buf), "%s", why);
    rl->why = rl->why_buf;
    /* the callbacks of what is in flight run inside, with no reply; the
     * disconnect callback (if it was connected) clears rl->ac */
    redisAsyncFree(ac);
    if (rl->ac == ac) {
        rl->ac = NULL;
        rl->connected = 0;
        schedule_retry(rl, rl->why_buf);
    }
}

/* ---------------------------------------------------------------- timer */

static void arm_timer(struct rloop *rl)
{
    if (rl->timer_armed || rl->head == NULL)
        return;
    int64_t wait = rl->head->deadline - mono_ms();
    if (wait < 1)
        wait = 1;
    struct timeval tv = { (time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000) };
    event_add(rl->timer, &tv);
    rl->timer_armed = 1;
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rloop *rl = arg;
    char why[120];

    rl->timer_armed = 0;
    if (rl->head == NULL)
        return;
    if (rl->head->deadline > mono_ms()) {
        arm_timer(rl); /* the one it was armed for was answered meanwhile */
        return;
    }
    snprintf(why, sizeof(why), "no answer within %d ms", rl->s->timeout_ms);
    if (rl->s->base.log != NULL)
        rl->s->base.log(0, "store: Redis at %s: %s: dropping the connection", rl->s->where,
                        why); /* 0: GW_LOG_ERROR */
    drop(rl, why);
}

/* ------------------------------------------------------------- commands */

static void inflight_push(struct rloop *rl, struct rs_inflight *f)
{
    f->next = NULL;
    f->deadline = mono_ms() + rl->s->timeout_ms;
    if (rl->tail != NULL)
        rl->tail->next = f;
    else
        rl->head = f;
    rl->tail = f;
    arm_timer(rl);
}

/* f answered (or failed): out of the list. Replies come in order: f is the
 * head, unless the context is being freed (then too: in order). */
static void inflight_pop(struct rloop *rl, struct rs_inflight *f)
{
    struct rs_inflight **pp = &rl->head, *prev = NULL;

    while (*pp != NULL && *pp != f) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL)
        return;
    *pp = f->next;
    if (rl->tail == f)
        rl->tail = prev;
    /* a reply is progress: the next one gets a whole timeout from now, so a
     * long pipeline to a busy but healthy Redis is not taken for a hung one */
    if (prev == NULL && rl->head != NULL) {
        int64_t d = mono_ms() + rl->s->timeout_ms;
        if (rl->head->deadline < d)
            rl->head->deadline = d;
    }
}

static void op_reply_cb(redisAsyncContext *ac, void *reply, void *privdata);
static int send_own(struct rloop *rl, const char *what, int argc, const char **argv,
                    const size_t *argvlen);

/* A caller's script: loaded on this connection ahead of its first use. */
static void ensure_loaded(struct rloop *rl, const char *src)
{
    for (unsigned i = 0; i < rl->nloaded; i++) {
        if (rl->loaded[i] == src)
            return;
    }
    const char *argv[] = { "SCRIPT", "LOAD", src };
    size_t len[] = { 6, 4, strlen(src) };
    if (send_own(rl, "SCRIPT LOAD", 3, argv, len) == GW_OK &&
        rl->nloaded < GW_ARRAY_LEN(rl->loaded))
        rl->loaded[rl->nloaded++] = src;
}

/* Finish op (res or err filled): to its loop. */
static void finish(struct redis_store *s, struct gw_store_op *op)
{
    int failed = op->res.rc == GW_ERR;

    if (failed && op->cb == NULL && s->base.log != NULL)
        s->base.log(0, "store: a write nobody waits for failed: %s", op->err.message);
    count(s, 0, 1, failed, -1);
    /* on the loop's thread, but for close, which may run on another once the loops
     * stopped: the eventfd then */
    if (s->closing)
        gw_store_op_done(op);
    else
        gw_store_op_done_local(op);
}

static void fail_op(struct redis_store *s, struct gw_store_op *op, const char *why)
{
    gw_store_op_fail(op, "the job store (Redis at %s) is unavailable: %s", s->where, why);
    finish(s, op);
}

/* Send op's command on rl's connection. On failure op is finished (failed). */
static void send_op(struct rloop *rl, struct gw_store_op *op, struct rs_cmd *cmd,
                    struct rs_inflight *f)
{
    struct redis_store *s = rl->s;

    if (rl->ac == NULL) {
        fail_op(s, op, rl->why != NULL ? rl->why : "not connected");
        return;
    }
    f->rl = rl;
    f->op = op;
    f->cmd = cmd;
    f->what = NULL;
    if (op->kind == GW_OP_SCRIPT && cmd->argv[0][0] == 'E' && cmd->argv[0][4] == 'S')
        ensure_loaded(rl, cmd->src); /* EVALSHA of a caller's script */
    if (redisAsyncCommandArgv(rl->ac, op_reply_cb, f, cmd->argc, cmd->argv, cmd->argvlen) !=
        REDIS_OK) {
        fail_op(s, op, "the connection is closing");
        return;
    }
    count(s, 1, 0, 0, 0);
    inflight_push(rl, f);
}

static void op_reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rs_inflight *f = privdata;
    struct rloop *rl = f->rl;
    struct redis_store *s = rl->s;
    struct gw_store_op *op = f->op;
    const redisReply *r = reply;
    int log_it = 0;

    inflight_pop(rl, f);
    if (r == NULL) { /* dropped, refused, closed by Redis, or closing */
        fail_op(s, op, rl->why != NULL ? rl->why : "the connection was lost");
        return;
    }
    if (r->type == REDIS_REPLY_ERROR && f->cmd->src != NULL &&
        strncmp(r->str, "NOSCRIPT", 8) == 0) {
        /* flushed (SCRIPT FLUSH, FLUSHALL of a restarted Redis): send the source */
        f->cmd->argv[0] = "EVAL";
        f->cmd->argvlen[0] = 4;
        f->cmd->argv[1] = f->cmd->src;
        f->cmd->argvlen[1] = strlen(f->cmd->src);
        send_op(rl, op, f->cmd, f);
        return;
    }
    op->res.rc = GW_OK;
    int rc = rs_reply(op, r, s->prefix, (const char(*)[41])s->sha, f->cmd, &log_it);
    if (rc == GW_AGAIN) { /* a prune's next step */
        send_op(rl, op, f->cmd, f);
        return;
    }
    if (rc == GW_ERR && log_it && s->base.log != NULL)
        s->base.log(0, "store: Redis at %s: %s", s->where, op->err.message);
    finish(s, op);
}

/* The engine's own commands at connect: their failure drops the connection. */
static void own_reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rs_inflight *f = privdata;
    struct rloop *rl = f->rl;
    const redisReply *r = reply;
    char why[200];

    inflight_pop(rl, f);
    if (r != NULL && r->type == REDIS_REPLY_ERROR && rl->ac == ac) {
        snprintf(why, sizeof(why), "%s failed: %.160s", f->what, r->str);
        if (rl->s->base.log != NULL)
            rl->s->base.log(0, "store: Redis at %s: %s", rl->s->where, why);
        free(f);
        /* inside a hiredis callback: freed once it returns; what follows fails */
        snprintf(rl->why_buf, sizeof(rl->why_buf), "%s", why);
        rl->why = rl->why_buf;
        redisAsyncFree(ac);
        return;
    }
    free(f);
}

static int send_own(struct rloop *rl, const char *what, int argc, const char **argv,
                    const size_t *argvlen)
{
    struct rs_inflight *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return GW_ERR;
    f->rl = rl;
    f->what = what;
    if (redisAsyncCommandArgv(rl->ac, own_reply_cb, f, argc, argv, argvlen) != REDIS_OK) {
        free(f);
        return GW_ERR;
    }
    inflight_push(rl, f);
    return GW_OK;
}

/* ------------------------------------------------------------ connecting */

static void connect_cb(const redisAsyncContext *ac, int status)
{
    struct rloop *rl = ac->data;

    if (rl == NULL || rl->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac after this (the commands queued fail then) */
        snprintf(rl->why_buf, sizeof(rl->why_buf), "cannot connect: %s",
                 ac->errstr[0] ? ac->errstr : "refused");
        rl->why = rl->why_buf;
        rl->ac = NULL;
        rl->connected = 0;
        schedule_retry(rl, rl->why_buf);
        return;
    }
    rl->connected = 1;
    rl->why = NULL;
    set_up(rl);
}

static void disconnect_cb(const redisAsyncContext *ac, int status)
{
    struct rloop *rl = ac->data;

    if (rl == NULL || rl->ac != ac)
        return;
    rl->ac = NULL;
    rl->connected = 0;
    if (rl->why == NULL) {
        snprintf(rl->why_buf, sizeof(rl->why_buf), "the connection was closed%s%s",
                 ac->errstr[0] ? ": " : "", ac->errstr);
        rl->why = rl->why_buf;
    }
    if (!rl->s->closing)
        schedule_retry(rl, rl->why);
}

/* A new connection, its first commands queued (hiredis sends them once the
 * connect completes). Failing: down, retried later. */
static void connect_now(struct rloop *rl)
{
    struct redis_store *s = rl->s;
    redisAsyncContext *ac;

    rl->why = NULL;
    rl->nloaded = 0; /* a new connection, maybe to a new Redis */
    ac = s->unix_path != NULL ? redisAsyncConnectUnix(s->unix_path)
                              : redisAsyncConnect(s->host, s->port);
    if (ac == NULL || ac->err) {
        snprintf(rl->why_buf, sizeof(rl->why_buf), "cannot connect: %s",
                 ac != NULL ? ac->errstr : "out of memory");
        rl->why = rl->why_buf;
        if (ac != NULL)
            redisAsyncFree(ac);
        schedule_retry(rl, rl->why_buf);
        return;
    }
    ac->data = rl;
    if (redisLibeventAttach(ac, rl->base) != REDIS_OK) {
        redisAsyncFree(ac);
        rl->why = "cannot attach to the event loop";
        schedule_retry(rl, rl->why);
        return;
    }
    rl->ac = ac;
    redisAsyncSetConnectCallback(ac, connect_cb);
    redisAsyncSetDisconnectCallback(ac, disconnect_cb);
    if (s->password != NULL) {
        const char *argv[] = { "AUTH", s->password };
        size_t len[] = { 4, strlen(s->password) };
        send_own(rl, "AUTH (is [store] password right?)", 2, argv, len);
    }
    char db[16];
    snprintf(db, sizeof(db), "%d", s->db);
    const char *argv[] = { "SELECT", db };
    size_t len[] = { 6, strlen(db) };
    send_own(rl, "SELECT", 2, argv, len);
    for (int i = 0; i < RS_NSCRIPTS && rl->ac != NULL; i++) {
        const char *la[] = { "SCRIPT", "LOAD", rs_script_src[i] };
        size_t ll[] = { 6, 4, strlen(rs_script_src[i]) };
        send_own(rl, "SCRIPT LOAD", 3, la, ll);
    }
}

/* ----------------------------------------------------------- the engine */

static int redis_submit(struct gw_store *base, struct gw_store_op *op, struct gw_error *err)
{
    struct redis_store *s = (struct redis_store *)base;
    struct rloop *rl = gw_store_loop_engine(op->loop);

    if (s->closing || rl == NULL)
        return gw_error_set(err, 503, "server_error", "store_error", NULL,
                            "the job store is closing");
    count(s, 0, 0, 0, 1);
    struct rs_cmd *cmd = gw_store_op_alloc(op, sizeof(*cmd) + sizeof(struct rs_inflight));
    if (cmd == NULL) {
        gw_store_op_fail(op, "out of memory");
        finish(s, op);
        return GW_OK;
    }
    struct rs_inflight *f = (struct rs_inflight *)(cmd + 1);
    if (rs_build(op, s->prefix, (const char(*)[41])s->sha, cmd) != GW_OK) {
        finish(s, op);
        return GW_OK;
    }
    send_op(rl, op, cmd, f);
    return GW_OK;
}

/*
 * Bounded, blocking: send what is buffered and wait for the replies of what is
 * in flight (writes a caller no longer waits for still land), then free the
 * connection (what is left fails). Only where the loop is not running: its
 * teardown, or close after the loops stopped.
 */
static void drain_and_free(struct rloop *rl)
{
    int ms = rl->s->timeout_ms > CLOSE_DRAIN_MIN_MS ? rl->s->timeout_ms : CLOSE_DRAIN_MIN_MS;
    int64_t end = mono_ms() + ms;

    while (rl->ac != NULL && rl->head != NULL) {
        redisContext *c = &rl->ac->c;
        int64_t left = end - mono_ms();
        if (left <= 0)
            break;
        /* still connecting, or commands not yet written: hiredis's write handler
         * finishes the connect and writes */
        struct pollfd pf = { c->fd, POLLIN, 0 };
        if (!rl->connected || sdslen(c->obuf) > 0)
            pf.events |= POLLOUT;
        if (poll(&pf, 1, (int)left) <= 0)
            break;
        if (pf.revents & (POLLOUT | POLLERR | POLLHUP))
            redisAsyncHandleWrite(rl->ac); /* may free it: the callbacks clear rl->ac */
        if (rl->ac != NULL && (pf.revents & (POLLIN | POLLERR | POLLHUP)))
            redisAsyncHandleRead(rl->ac);
    }
    if (rl->ac != NULL) {
        if (rl->why == NULL)
            rl->why = "the store is closing";
        redisAsyncContext *ac = rl->ac;
        rl->ac = NULL; /* no reconnect */
        ac->data = NULL;
        redisAsyncFree(ac);
    }
}

static void rloop_free(struct rloop *rl)
{
    struct redis_store *s = rl->s;

    pthread_mutex_lock(&s->mu);
    if (rl->prev != NULL)
        rl->prev->next = rl->next;
    else if (s->loops == rl)
        s->loops = rl->next;
    if (rl->next != NULL)
        rl->next->prev = rl->prev;
    if (rl->down)
        s->loops_down--;
    pthread_mutex_unlock(&s->mu);
    if (rl->retry != NULL)
        event_free(rl->retry);
    if (rl->timer != NULL)
        event_free(rl->timer);
    free(rl);
}

/* gw_store_loop_free: on the loop's thread, the loop no longer running. */
static void redis_detach(void *data)
{
    struct rloop *rl = data;

    drain_and_free(rl);
    rloop_free(rl);
}

static int redis_loop_attach(struct gw_store *base, struct gw_store_loop *l,
                             struct event_base *evb, struct gw_error *err)
{
    struct redis_store *s = (struct redis_store *)base;
    struct rloop *rl = calloc(1, sizeof(*rl));

    if (rl == NULL)
        return gw_error_set(err, 503, "server_error", "store_error", NULL, "out of memory");
    rl->s = s;
    rl->l = l;
    rl->base = evb;
    rl->timer = evtimer_new(evb, timer_cb, rl);
    rl->retry = evtimer_new(evb, retry_cb, rl);
    if (rl->timer == NULL || rl->retry == NULL) {
        rloop_free(rl);
        return gw_error_set(err, 503, "server_error", "store_error", NULL,
                            "store: cannot create a timer");
    }
    pthread_mutex_lock(&s->mu);
    rl->next = s->loops;
    if (s->loops != NULL)
        s->loops->prev = rl;
    s->loops = rl;
    pthread_mutex_unlock(&s->mu);
    gw_store_loop_set_engine(l, rl, redis_detach);
    connect_now(rl);
    return GW_OK;
}

static void redis_stats(struct gw_store *base, struct gw_store_stats *st)
{
    struct redis_store *s = (struct redis_store *)base;

    st->transactions = atomic_load_explicit(&s->n_sent, memory_order_relaxed);
    st->ops = atomic_load_explicit(&s->n_ops, memory_order_relaxed);
    st->failed = atomic_load_explicit(&s->n_failed, memory_order_relaxed);
    int q = atomic_load_explicit(&s->n_queued, memory_order_relaxed);
    st->queued = q > 0 ? (unsigned)q : 0;
    st->max_batch = 1;
}

static int redis_reachable(struct gw_store *base)
{
    struct redis_store *s = (struct redis_store *)base;

    pthread_mutex_lock(&s->mu);
    int up = s->loops_down == 0;
    pthread_mutex_unlock(&s->mu);
    return up;
}

static void redis_free(struct redis_store *s)
{
    if (s->password != NULL)
        explicit_bzero(s->password, strlen(s->password));
    free(s->password);
    free(s->host);
    free(s->unix_path);
    free(s->prefix);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Once no loop submits any more (their threads stopped, or this one's). */
static void redis_close(struct gw_store *base)
{
    struct redis_store *s = (struct redis_store *)base;

    s->closing = 1;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        struct rloop *rl = s->loops;
        pthread_mutex_unlock(&s->mu);
        if (rl == NULL)
            break;
        /* taken back: gw_store_loop_free will not detach it again */
        gw_store_loop_take_engine(rl->l);
        drain_and_free(rl);
        rloop_free(rl);
    }
    redis_free(s);
}

static const struct gw_store_engine redis_engine = {
    .name = "redis",
    .submit = redis_submit,
    .close = redis_close,
    .stats = redis_stats,
    .loop_attach = redis_loop_attach,
    .reachable = redis_reachable,
};

/*
 * A host name is resolved here, once, at start (blocking is fine: no loop runs
 * yet), and every (re)connect goes to the address it gave: hiredis would
 * otherwise call getaddrinfo on the loop at each reconnect, and a slow DNS would
 * stall every request of that loop. A name that does not resolve stops the start
 * (nginx does the same for an upstream's). A literal address is kept as it is.
 */
static int resolve_host(struct redis_store *s, struct gw_error *err)
{
    struct in6_addr a6;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    char num[INET6_ADDRSTRLEN];

    if (inet_pton(AF_INET, s->host, &a6) == 1 || inet_pton(AF_INET6, s->host, &a6) == 1)
        return GW_OK;
    int rc = getaddrinfo(s->host, NULL, &hints, &res);
    if (rc != 0 || res == NULL)
        return gw_error_set(err, 0, NULL, NULL, NULL, "store: [store] redis: cannot resolve "
                            "%s: %s", s->host, rc != 0 ? gai_strerror(rc) : "no address");
    /* IPv4 first: "localhost" may list ::1 first, and a Redis bound to 127.0.0.1 only
     * is the common case */
    const struct addrinfo *pick = res;
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
    }
    rc = getnameinfo(pick->ai_addr, pick->ai_addrlen, num, sizeof(num), NULL, 0,
                     NI_NUMERICHOST);
    freeaddrinfo(res);
    char *ip = rc == 0 ? strdup(num) : NULL;
    if (ip == NULL)
        return gw_error_set(err, 0, NULL, NULL, NULL, "store: [store] redis: cannot resolve "
                            "%s", s->host);
    if (s->base.log != NULL)
        s->base.log(2, "store: Redis host %s is %s (resolved once, at start)", s->host, ip);
    free(s->host);
    s->host = ip;
    return GW_OK;
}

struct gw_store *gw_store_redis_open(const struct gw_store_options *o, struct gw_error *err)
{
    struct redis_store *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        gw_error_set(err, 0, NULL, NULL, NULL, "store: out of memory");
        return NULL;
    }
    s->base.engine = &redis_engine;
    s->base.log = o->log;
    pthread_mutex_init(&s->mu, NULL);
    s->port = o->redis_port;
    s->db = o->redis_db;
    s->timeout_ms = o->redis_timeout_ms > 0 ? o->redis_timeout_ms : RS_DEFAULT_TIMEOUT_MS;
    s->prefix = strdup(o->redis_prefix != NULL ? o->redis_prefix : RS_DEFAULT_PREFIX);
    if (o->redis_unix != NULL)
        s->unix_path = strdup(o->redis_unix);
    else
        s->host = strdup(o->redis_host);
    if (o->redis_password != NULL)
        s->password = strdup(o->redis_password);
    if (s->prefix == NULL || (s->unix_path == NULL && s->host == NULL) ||
        (o->redis_password != NULL && s->password == NULL)) {
        redis_free(s);
        gw_error_set(err, 0, NULL, NULL, NULL, "store: out of memory");
        return NULL;
    }
    if (s->unix_path != NULL)
        snprintf(s->where, sizeof(s->where), "unix:%s", s->unix_path);
    else if (strchr(s->host, ':') != NULL)
        snprintf(s->where, sizeof(s->where), "[%s]:%d", s->host, s->port);
    else
        snprintf(s->where, sizeof(s->where), "%s:%d", s->host, s->port);
    if (s->unix_path == NULL && resolve_host(s, err) != GW_OK) {
        redis_free(s);
        return NULL;
    }
    rs_script_shas(s->sha);
    return &s->base;
}
