/*
 * store.c - the engine-neutral half of the store: each call's arguments are
 * checked and copied into an operation, the operation goes to the engine, and
 * comes back through gw_store_op_done() to the loop that made it, where its
 * callback runs (or not, if it was cancelled) and it is freed.
 *
 * Delivery. The engine's thread appends a finished operation to the loop's
 * done list (a mutex) and, when the list was empty, writes the loop's eventfd;
 * the loop's thread reads the eventfd and runs the callbacks. Nothing but the
 * eventfd crosses threads: the loop's event_base is never touched from the
 * engine's thread (it is built with EVENT_BASE_FLAG_NOLOCK).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/eventfd.h>

#include <event2/event.h>

#include "metrics.h"
#include "store_int.h"

struct gw_store_loop {
    struct gw_store *store;
    struct event_base *base;
    int efd;
    struct event *ev;
    pthread_mutex_t mu;            /* guards what follows */
    struct gw_store_op *done_head; /* finished, callbacks not yet run */
    struct gw_store_op *done_tail;
    unsigned pending;              /* operations made and not yet freed */
    int dead;                      /* gw_store_loop_free was called */
    void *engine;                  /* the engine's part (Redis: the connection), or NULL */
    void (*engine_detach)(void *engine);
};

/* ------------------------------------------------------------------ names */

static const char *const kind_names[] = { "create", "remix", "edit", "extend" };
static const char *const status_names[] = { "queued", "in_progress", "completed", "failed" };

const char *gw_job_kind_name(enum gw_job_kind k)
{
    return (unsigned)k < GW_ARRAY_LEN(kind_names) ? kind_names[k] : "?";
}

const char *gw_job_status_name(enum gw_job_status s)
{
    return (unsigned)s < GW_ARRAY_LEN(status_names) ? status_names[s] : "?";
}

static int parse_name(const char *const *names, size_t n, const char *s, size_t len, int *out)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0) {
            *out = (int)i;
            return GW_OK;
        }
    }
    return GW_ERR;
}

int gw_job_status_parse(const char *s, size_t len, enum gw_job_status *out)
{
    int v;

    if (parse_name(status_names, GW_ARRAY_LEN(status_names), s, len, &v) != GW_OK)
        return GW_ERR;
    *out = (enum gw_job_status)v;
    return GW_OK;
}

int gw_job_kind_parse(const char *s, size_t len, enum gw_job_kind *out)
{
    int v;

    if (parse_name(kind_names, GW_ARRAY_LEN(kind_names), s, len, &v) != GW_OK)
        return GW_ERR;
    *out = (enum gw_job_kind)v;
    return GW_OK;
}

/* ----------------------------------------------------------- small helpers */

void gw_store_day(int64_t t, char day[11])
{
    time_t tt = (time_t)t;
    struct tm tm;
    char buf[48];

    if (gmtime_r(&tt, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0)
        snprintf(buf, sizeof(buf), "0000-00-00");
    else
        snprintf(buf, sizeof(buf), "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday);
    memcpy(day, buf, 10);
    day[10] = '\0';
}

int gw_store_check_day(const char *s)
{
    static const char shape[] = "dddd-dd-dd";

    if (s == NULL)
        return GW_OK;
    if (strlen(s) != sizeof(shape) - 1)
        return GW_ERR;
    for (size_t i = 0; shape[i]; i++) {
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != '-')
            return GW_ERR;
    }
    int month = (s[5] - '0') * 10 + (s[6] - '0'), mday = (s[8] - '0') * 10 + (s[9] - '0');
    return month >= 1 && month <= 12 && mday >= 1 && mday <= 31 ? GW_OK : GW_ERR;
}

/* A refused argument: the caller's request was wrong (400, param named). */
static int bad_arg(struct gw_error *err, const char *param, const char *what)
{
    return gw_error_set(err, 400, "invalid_request_error", "invalid_value", param, "%s", what);
}

static int unavailable(struct gw_error *err, const char *what)
{
    return gw_error_set(err, 503, "server_error", "store_error", NULL, "%s", what);
}

void gw_store_op_fail(struct gw_store_op *op, const char *fmt, ...)
{
    va_list ap;

    op->err.status = 503;
    op->err.type = "server_error";
    op->err.code = "store_error";
    op->err.param = NULL;
    va_start(ap, fmt);
    vsnprintf(op->err.message, sizeof(op->err.message), fmt, ap);
    va_end(ap);
    op->res.rc = GW_ERR;
    op->res.err = &op->err;
}

void *gw_store_op_alloc(struct gw_store_op *op, size_t size)
{
    struct gw_store_mem *m = malloc(sizeof(*m) + size);

    if (m == NULL) {
        gw_store_op_fail(op, "out of memory"); /* the caller only has to stop */
        return NULL;
    }
    m->next = op->mem;
    op->mem = m;
    return m->data;
}

char *gw_store_op_strdup(struct gw_store_op *op, const char *s, size_t len)
{
    char *p = gw_store_op_alloc(op, len + 1);

    if (p != NULL) {
        if (len > 0)
            memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

/* ------------------------------------------------------------- operations */

/* Argument strings are copied into the operation's own allocation, behind it. */
struct packer {
    char *p;
};

static size_t slen(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 0;
}

static const char *pack(struct packer *pk, const char *s, size_t len)
{
    char *d = pk->p;

    if (s == NULL)
        return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    pk->p += len + 1;
    return d;
}

static const char *pack_str(struct packer *pk, const char *s)
{
    return s != NULL ? pack(pk, s, strlen(s)) : NULL;
}

static struct gw_store_op *op_new(enum gw_store_op_kind kind, size_t strings,
                                  struct packer *pk, struct gw_error *err)
{
    struct gw_store_op *op = calloc(1, sizeof(*op) + strings);

    if (op == NULL) {
        unavailable(err, "out of memory");
        return NULL;
    }
    op->kind = kind;
    atomic_init(&op->cancelled, 0);
    pk->p = (char *)(op + 1);
    return op;
}

static void op_free(struct gw_store_op *op)
{
    struct gw_store_mem *m = op->mem, *next;

    for (; m != NULL; m = next) {
        next = m->next;
        free(m);
    }
    free(op);
}

static int64_t mono_us(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* Hand op to the engine. GW_AGAIN, or GW_ERR (op freed, err set). */
static int submit(struct gw_store_loop *l, struct gw_store_op *op, gw_store_cb cb, void *arg,
                  struct gw_store_op **opp, struct gw_error *err)
{
    op->loop = l;
    op->cb = cb;
    op->arg = arg;
    op->res.rc = GW_OK;
    op->submitted_us = mono_us();
    pthread_mutex_lock(&l->mu);
    l->pending++;
    pthread_mutex_unlock(&l->mu);
    if (l->store->engine->submit(l->store, op, err) != GW_OK) {
        pthread_mutex_lock(&l->mu);
        l->pending--;
        pthread_mutex_unlock(&l->mu);
        op_free(op);
        if (opp != NULL)
            *opp = NULL;
        return GW_ERR;
    }
    if (opp != NULL)
        *opp = op;
    return GW_AGAIN;
}

struct gw_store_op *gw_store_op_new(enum gw_store_op_kind kind, size_t strings, char **strp,
                                    struct gw_error *err)
{
    struct packer pk;
    struct gw_store_op *op = op_new(kind, strings, &pk, err);

    *strp = op != NULL ? pk.p : NULL;
    return op;
}

int gw_store_op_submit(struct gw_store_loop *l, struct gw_store_op *op, gw_store_cb cb,
                       void *arg, struct gw_store_op **opp, struct gw_error *err)
{
    return submit(l, op, cb, arg, opp, err);
}

static int is_redis(const struct gw_store_options *o)
{
    return o != NULL && (o->redis_host != NULL || o->redis_unix != NULL);
}

int gw_store_op_run_sync(const struct gw_store_options *o, struct gw_store_op *op,
                         gw_store_cb cb, void *arg, struct gw_error *err)
{
    int rc = GW_ERR;

    op->res.rc = GW_OK;
    if (is_redis(o)) {
        if (gw_store_redis_run_sync(o, op, err) == GW_OK)
            rc = GW_OK;
    } else if (o == NULL || o->path == NULL || o->path[0] == '\0')
        gw_error_set(err, 0, NULL, NULL, NULL, "store: no path given");
    else if (gw_store_sqlite_run_sync(o, op, err) == GW_OK)
        rc = GW_OK;
    if (rc == GW_OK && op->res.rc != GW_OK) {
        *err = op->err;
        rc = GW_ERR;
    }
    if (rc == GW_OK && cb != NULL)
        cb(arg, &op->res);
    op_free(op);
    return rc;
}

static void loop_release(struct gw_store_loop *l)
{
    pthread_mutex_destroy(&l->mu);
    free(l);
}

/* Append the chain first..last (n operations of loop l) to l's done list and
 * wake the loop if the list was empty. */
static void deliver(struct gw_store_loop *l, struct gw_store_op *first, struct gw_store_op *last,
                    unsigned n)
{
    int release = 0;

    last->next = NULL;
    pthread_mutex_lock(&l->mu);
    if (l->dead) {
        l->pending -= n;
        release = l->pending == 0;
        pthread_mutex_unlock(&l->mu);
        for (struct gw_store_op *op = first, *next; op != NULL; op = next) {
            next = op->next;
            op_free(op);
        }
        if (release)
            loop_release(l);
        return;
    }
    if (l->done_tail != NULL) {
        l->done_tail->next = first;
    } else {
        uint64_t one = 1;
        l->done_head = first;
        /* under the lock: gw_store_loop_free closes the eventfd under it too */
        if (write(l->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
            abort(); /* an eventfd write fails only when the counter would overflow */
    }
    l->done_tail = last;
    pthread_mutex_unlock(&l->mu);
}

/* From the engine's thread (or any): deliver op to its loop. */
void gw_store_op_done(struct gw_store_op *op)
{
    deliver(op->loop, op, op, 1);
}

/* The same, from the loop's own thread (the Redis engine's replies): the loop's
 * event is made active directly, without the eventfd's two system calls. */
void gw_store_op_done_local(struct gw_store_op *op)
{
    struct gw_store_loop *l = op->loop;
    int wake = 0;

    pthread_mutex_lock(&l->mu);
    if (l->dead) {
        pthread_mutex_unlock(&l->mu);
        gw_store_op_done(op); /* freed there, with the loop if it is the last */
        return;
    }
    op->next = NULL;
    if (l->done_tail != NULL) {
        l->done_tail->next = op;
    } else {
        l->done_head = op;
        wake = 1;
    }
    l->done_tail = op;
    pthread_mutex_unlock(&l->mu);
    if (wake)
        event_active(l->ev, EV_READ, 1);
}

/* The same for a chain (linked by next): each loop's operations, in their
 * order, go in with one lock and at most one wake-up, not one per operation.
 * A batch mixes a few loops: one pass per loop. */
void gw_store_ops_done(struct gw_store_op *list)
{
    while (list != NULL) {
        struct gw_store_loop *l = list->loop;
        struct gw_store_op *mine = NULL, **mine_tail = &mine, *rest = NULL, **rest_tail = &rest;
        struct gw_store_op *last = NULL;
        unsigned n = 0;

        for (struct gw_store_op *op = list, *next; op != NULL; op = next) {
            next = op->next;
            op->next = NULL;
            if (op->loop == l) {
                *mine_tail = op;
                mine_tail = &op->next;
                last = op;
                n++;
            } else {
                *rest_tail = op;
                rest_tail = &op->next;
            }
        }
        deliver(l, mine, last, n);
        list = rest;
    }
}

/* On the loop's thread: run the callbacks of what is done, at most DELIVER_MAX
 * per wake-up, so that a busy store does not starve the loop's other events
 * (the rest come at the next turn of the loop). They are taken off the list in
 * one go; until each has run it is still counted in pending, which keeps l
 * alive if a callback frees the loop (then the rest are freed unheard). */
#define DELIVER_MAX 64

static void loop_wake(evutil_socket_t fd, short what, void *arg)
{
    struct gw_store_loop *l = arg;
    struct gw_store_op *list, *op;
    unsigned n = 0, taken = 0;
    uint64_t cnt;

    (void)fd;
    (void)what;
    if (read(l->efd, &cnt, sizeof(cnt)) < 0) {
        /* EAGAIN: nothing to read; the list is the truth either way */
    }
    pthread_mutex_lock(&l->mu);
    list = l->done_head;
    for (op = list; op != NULL && ++taken < DELIVER_MAX; op = op->next)
        ;
    if (op != NULL && op->next != NULL) { /* more than DELIVER_MAX: come back for the rest */
        uint64_t one = 1;
        l->done_head = op->next;
        op->next = NULL;
        if (write(l->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
            abort();
    } else {
        l->done_head = l->done_tail = NULL;
    }
    pthread_mutex_unlock(&l->mu);

    int64_t now = mono_us(); /* one clock reading for the batch (metrics) */
    while (list != NULL) {
        op = list;
        list = op->next;
        gw_m_store((unsigned)op->kind, op->res.rc == GW_OK, (uint64_t)(now - op->submitted_us));
        if (op->cb != NULL && !atomic_load_explicit(&op->cancelled, memory_order_relaxed)) {
            if (op->res.rc == GW_ERR)
                op->res.err = &op->err;
            op->cb(op->arg, &op->res);
        }
        op_free(op);
        n++;
        if (l->dead) /* the callback freed the loop: what is left goes unheard */
            break;
    }
    for (; list != NULL; list = op) {
        op = list->next;
        op_free(list);
        n++;
    }
    pthread_mutex_lock(&l->mu);
    l->pending -= n;
    int last = l->pending == 0 && l->dead;
    pthread_mutex_unlock(&l->mu);
    if (last)
        loop_release(l);
}

void gw_store_cancel(struct gw_store_op *op)
{
    if (op != NULL)
        atomic_store_explicit(&op->cancelled, 1, memory_order_relaxed);
}

/* --------------------------------------------------------------- lifecycle */

struct gw_store *gw_store_open(const struct gw_store_options *o, struct gw_error *err)
{
    if (is_redis(o))
        return gw_store_redis_open(o, err);
    if (o == NULL || o->path == NULL || o->path[0] == '\0') {
        gw_error_set(err, 0, NULL, NULL, NULL, "store: no path given");
        return NULL;
    }
    return gw_store_sqlite_open(o, err);
}

int gw_store_reachable(struct gw_store *s)
{
    return s->engine->reachable == NULL || s->engine->reachable(s);
}

int gw_store_loop_reachable(struct gw_store_loop *l)
{
    return gw_store_reachable(l->store);
}

void gw_store_loop_set_engine(struct gw_store_loop *l, void *data, void (*detach)(void *data))
{
    pthread_mutex_lock(&l->mu);
    l->engine = data;
    l->engine_detach = detach;
    pthread_mutex_unlock(&l->mu);
}

void *gw_store_loop_engine(struct gw_store_loop *l)
{
    return l->engine; /* written on this thread, or by a close that comes after the loop */
}

void *gw_store_loop_take_engine(struct gw_store_loop *l)
{
    pthread_mutex_lock(&l->mu);
    void *data = l->engine;
    l->engine = NULL;
    pthread_mutex_unlock(&l->mu);
    return data;
}

void gw_store_close(struct gw_store *s)
{
    if (s != NULL)
        s->engine->close(s);
}

void gw_store_stats(struct gw_store *s, struct gw_store_stats *st)
{
    memset(st, 0, sizeof(*st));
    s->engine->stats(s, st);
}

struct gw_store_loop *gw_store_loop_new(struct gw_store *s, struct event_base *base,
                                        struct gw_error *err)
{
    struct gw_store_loop *l = calloc(1, sizeof(*l));

    if (l == NULL) {
        unavailable(err, "out of memory");
        return NULL;
    }
    l->store = s;
    l->base = base;
    pthread_mutex_init(&l->mu, NULL);
    l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->efd < 0) {
        gw_error_set(err, 503, "server_error", "store_error", NULL, "store: eventfd: %s",
                     strerror(errno));
        goto fail;
    }
    l->ev = event_new(base, l->efd, EV_READ | EV_PERSIST, loop_wake, l);
    if (l->ev == NULL || event_add(l->ev, NULL) != 0) {
        unavailable(err, "store: cannot watch the eventfd");
        goto fail;
    }
    if (s->engine->loop_attach != NULL && s->engine->loop_attach(s, l, base, err) != GW_OK)
        goto fail;
    return l;

fail:
    if (l->ev != NULL)
        event_free(l->ev);
    if (l->efd >= 0)
        close(l->efd);
    loop_release(l);
    return NULL;
}

void gw_store_loop_free(struct gw_store_loop *l)
{
    struct gw_store_op *done, *next;
    unsigned n = 0;

    if (l == NULL)
        return;
    event_free(l->ev);
    pthread_mutex_lock(&l->mu);
    l->dead = 1;
    done = l->done_head;
    l->done_head = l->done_tail = NULL;
    for (struct gw_store_op *op = done; op != NULL; op = op->next)
        n++;
    l->pending -= n;
    int last = l->pending == 0;
    close(l->efd);
    l->efd = -1;
    void *engine = l->engine;
    void (*detach)(void *) = l->engine_detach;
    l->engine = NULL;
    pthread_mutex_unlock(&l->mu);
    for (; done != NULL; done = next) {
        next = done->next;
        op_free(done);
    }
    /* the engine's part: what it holds comes back to the dead loop and is freed
     * there (the last one frees l unless it was the last already) */
    if (engine != NULL)
        detach(engine);
    /* otherwise the engine frees l with its last operation, or loop_wake with
     * the one whose callback is freeing it */
    if (last)
        loop_release(l);
}

/* --------------------------------------------------------------- the calls */

static int check_id(const char *id, const char *param, struct gw_error *err)
{
    if (id == NULL || id[0] == '\0')
        return bad_arg(err, param, "a job id is required");
    if (strlen(id) > GW_STORE_ID_MAX)
        return bad_arg(err, param, "a job id is at most 128 bytes");
    return GW_OK;
}

static int check_name(const char *s, const char *what, struct gw_error *err)
{
    if (s == NULL || s[0] == '\0')
        return gw_error_set(err, 400, "invalid_request_error", "invalid_value", NULL,
                            "store: %s is required", what);
    return GW_OK;
}

static int check_idem(const char *key_name, const char *idem_key, struct gw_error *err)
{
    if (check_name(key_name, "a team key name", err) != GW_OK)
        return GW_ERR;
    if (idem_key == NULL || idem_key[0] == '\0' || strlen(idem_key) > GW_STORE_IDEM_KEY_MAX)
        return bad_arg(err, NULL, "Idempotency-Key must be 1 to 255 bytes");
    return GW_OK;
}

int gw_store_job_put(struct gw_store_loop *l, const struct gw_job *job, const char *idem_key,
                     gw_store_cb cb, void *arg, struct gw_store_op **opp, struct gw_error *err)
{
    struct packer pk;
    struct gw_store_op *op;

    if (opp != NULL)
        *opp = NULL; /* until queued */

    if (check_id(job->id, "id", err) != GW_OK ||
        check_name(job->key_name, "the job's team key name", err) != GW_OK ||
        check_name(job->upstream_key, "the job's upstream key label", err) != GW_OK ||
        check_name(job->model_sent, "the model sent", err) != GW_OK)
        return GW_ERR;
    if (idem_key != NULL && check_idem(job->key_name, idem_key, err) != GW_OK)
        return GW_ERR;
    if (job->seconds < 0)
        return bad_arg(err, "seconds", "seconds must not be negative");
    if ((unsigned)job->status > GW_JOB_FAILED || (unsigned)job->kind > GW_JOB_EXTEND)
        return bad_arg(err, NULL, "store: unknown job status or kind");
    size_t olen = job->object != NULL ? job->object_len : 0;
    if (olen > GW_STORE_OBJECT_MAX)
        return bad_arg(err, NULL, "store: a job object is at most 1 MiB");
    op = op_new(GW_OP_JOB_PUT,
                slen(job->id) + slen(job->key_name) + slen(job->upstream_key) +
                    slen(job->model_asked) + slen(job->model_sent) + slen(job->size) + olen + 1 +
                    slen(idem_key) + slen(job->lease_key) + slen(job->lease_id),
                &pk, err);
    if (op == NULL)
        return GW_ERR;
    op->job = *job;
    op->job.lease_key = job->lease_key != NULL ? pack_str(&pk, job->lease_key) : "";
    op->job.lease_id = job->lease_id != NULL ? pack_str(&pk, job->lease_id) : "";
    op->job.id = pack_str(&pk, job->id);
    op->job.key_name = pack_str(&pk, job->key_name);
    op->job.upstream_key = pack_str(&pk, job->upstream_key);
    op->job.model_asked = job->model_asked != NULL ? pack_str(&pk, job->model_asked) : "";
    op->job.model_sent = pack_str(&pk, job->model_sent);
    op->job.size = job->size != NULL ? pack_str(&pk, job->size) : "";
    op->job.object = pack(&pk, job->object != NULL ? job->object : "", olen);
    op->job.object_len = olen;
    op->job.refreshed_at = job->updated_at;
    op->job.deleted_at = 0;
    op->job.refunded = 0;
    op->idem_key = pack_str(&pk, idem_key);
    return submit(l, op, cb, arg, opp, err);
}

/* get, delete, refund: an id (and a time) */
static int id_op(enum gw_store_op_kind kind, struct gw_store_loop *l, const char *id, int64_t t,
                 gw_store_cb cb, void *arg, struct gw_store_op **opp, struct gw_error *err)
{
    struct packer pk;
    struct gw_store_op *op;

    if (opp != NULL)
        *opp = NULL; /* until queued */

    if (check_id(id, "id", err) != GW_OK)
        return GW_ERR;
    op = op_new(kind, slen(id), &pk, err);
    if (op == NULL)
        return GW_ERR;
    op->job.id = pack_str(&pk, id);
    op->t1 = t;
    return submit(l, op, cb, arg, opp, err);
}

int gw_store_job_get(struct gw_store_loop *l, const char *id, gw_store_cb cb, void *arg,
                     struct gw_store_op **op, struct gw_error *err)
{
    return id_op(GW_OP_JOB_GET, l, id, 0, cb, arg, op, err);
}

int gw_store_job_delete(struct gw_store_loop *l, const char *id, int64_t now, gw_store_cb cb,
                        void *arg, struct gw_store_op **op, struct gw_error *err)
{
    return id_op(GW_OP_JOB_DELETE, l, id, now, cb, arg, op, err);
}

int gw_store_job_refund(struct gw_store_loop *l, const char *id, gw_store_cb cb, void *arg,
                        struct gw_store_op **op, struct gw_error *err)
{
    return id_op(GW_OP_JOB_REFUND, l, id, 0, cb, arg, op, err);
}

/* ------------------------------------------------------ characters (issue 9) */

int gw_store_character_put(struct gw_store_loop *l, const struct gw_character *c,
                           gw_store_cb cb, void *arg, struct gw_store_op **opp,
                           struct gw_error *err)
{
    struct packer pk;
    struct gw_store_op *op;
    size_t olen = c->object != NULL ? c->object_len : 0;

    if (opp != NULL)
        *opp = NULL; /* until queued */
    if (check_id(c->id, "id", err) != GW_OK ||
        check_name(c->key_name, "the character's team key name", err) != GW_OK ||
        check_name(c->upstream_key, "the character's upstream key label", err) != GW_OK)
        return GW_ERR;
    if (c->name != NULL && strlen(c->name) > GW_STORE_CHARACTER_NAME_MAX)
        return bad_arg(err, "name", "a character name is at most 1024 bytes");
    if (olen > GW_STORE_OBJECT_MAX)
        return bad_arg(err, NULL, "store: a character object is at most 1 MiB");
    op = op_new(GW_OP_CHARACTER_PUT,
                slen(c->id) + slen(c->key_name) + slen(c->upstream_key) + slen(c->name) +
                    olen + 1,
                &pk, err);
    if (op == NULL)
        return GW_ERR;
    op->character = *c;
    op->character.id = pack_str(&pk, c->id);
    op->character.key_name = pack_str(&pk, c->key_name);
    op->character.upstream_key = pack_str(&pk, c->upstream_key);
    op->character.name = c->name != NULL ? pack_str(&pk, c->name) : "";
    op->character.object = pack(&pk, c->object != NULL ? c->object : "", olen);
    op->character.object_len = olen;
    return submit(l, op, cb, arg, opp, err);
}

int gw_store_character_get(struct gw_store_loop *l, const char *id, gw_store_cb cb, void *arg,
                           struct gw_store_op **opp, struct gw_error *err)
{
    struct packer pk;
    struct gw_store_op *op;

    if (opp != NULL)
        *opp = NULL; /* until queued */
    if (check_id(id, "id", err) != GW_OK)
        return GW_ERR;
    op = op_new(GW_OP_CHARACTER_GET, slen(id), &pk, err);
    if (op == NULL)
        return GW_ERR;
    op->character.id = pack_str(&pk, id);
    return submit(l, op, cb, arg, opp, err);
}

int gw_store_job_update(struct gw_store_loop *l, const struct gw_job_update *u, gw_store_cb cb,
                        void *arg, struct gw_store_op **opp, struct gw_error *err)
{
    struct packer pk;
    struct gw_store_op *op;
    size_t olen = u->object != NULL ? u->object_len : 0;

    if (opp != NULL)
        *opp = NULL; /* until queued */

    if (check_id(u->id, "id", err) != GW_OK)
        return GW_ERR;
    if ((unsigned)u->status > GW_JOB_FAILED)
        return bad_arg(err, NULL, "store: unknown job status");
    if (olen > GW_STORE_OBJECT_MAX)
        return bad_arg(err, NULL, "store: a job object is at most 1 MiB");
    op = op_new(GW_OP_JOB_UPDATE, slen(u->id) + (u->object != NULL ? olen + 1 : 0), &pk, err);
    if (op == NULL)
        return GW_ERR;
    op->upd = *u;
    op->upd.id = pack_str(&pk, u->id);
    op->upd.object = u->object != NULL ? pack(&pk, u->object, olen) : NULL;
    op->upd.object_len = olen;
    return submit(l, op, cb, arg, opp, err);
}

int gw_store_job_list(struct gw_store_loop *l, const struct gw_job_list_query *q, gw_store_cb cb,
                      void *arg, struct gw_store_op **opp, struct gw_error *err)
{
    struct packer pk;
    struct gw_store_op *op;
    const char *after = q->after != NULL && q->after[0] != '\0' ? q->after : NULL;

    if (opp != NULL)
        *opp = NULL; /* until queued */

    if (check_name(q->key_name, "a team key name", err) != GW_OK)
        return GW_ERR;
    if (q->limit < 1 || q->limit > GW_STORE_LIST_MAX)
        return bad_arg(err, "limit", "limit must be an integer from 1 to 100");
    if (after != NULL && strlen(after) > GW_STORE_ID_MAX)
        return bad_arg(err, "after", "after must be a job id (at most 128 bytes)");
    if ((unsigned)q->order > GW_ORDER_ASC)
        return bad_arg(err, "order", "order must be asc or desc");
    op = op_new(GW_OP_JOB_LIST, slen(q->key_name) + slen(after), &pk, err);
    if (op == NULL)
        return GW_ERR;
    op->list = *q;
    op->list.key_name = pack_str(&pk, q->key_name);
    op->list.after = pack_str(&pk, after);
    return submit(l, op, cb, arg, opp, err);
}

int gw_store_job_claim_unfinished(struct gw_store_loop *l, int64_t due_before, int64_t now,
                                  unsigned limit, gw_store_cb cb, void *arg,
                                  struct gw_store_op **opp, struct gw_error *err)
{
    struct packer pk;
    struct gw_store_op *op;

    if (opp != NULL)
        *opp = NULL; /* until queued */

    if (limit < 1 || limit > GW_STORE_CLAIM_MAX)
        return bad_arg(err, "limit", "store: claim 1 to 1000 jobs at a time");
    op = op_new(GW_OP_JOB_CLAIM, 0, &pk, err);
    if (op == NULL)
        return GW_ERR;
    op->t1 = due_before;
    op->t2 = now;
    op->limit = limit;
    return submit(l, op, cb, arg, opp, err);
}

int gw_store_prune(struct gw_store_loop *l, int64_t jobs_before, int64_t now, gw_store_cb cb,
                   void *arg, struct gw_store_op **opp, struct gw_error *err)
{
    struct packer pk;
    struct gw_store_op *op = op_new(GW_OP_PRUNE, 0, &pk, err);

    if (opp != NULL)
        *opp = NULL; /* until queued */

    if (op == NULL)
        return GW_ERR;
    op->t1 = jobs_before;
    op->t2 = now;
    return submit(l, op, cb, arg, opp, err);
}

static int idem_op(enum gw_store_op_kind kind, struct gw_store_loop *l, const char *key_name,
                   const char *idem_key, int64_t now, int status, const char *body,
                   size_t body_len, gw_store_cb cb, void *arg, struct gw_store_op **opp,
                   struct gw_error *err)
{
    struct packer pk;
    struct gw_store_op *op;

    if (opp != NULL)
        *opp = NULL; /* until queued */

    if (check_idem(key_name, idem_key, err) != GW_OK)
        return GW_ERR;
    if (body == NULL)
        body_len = 0;
    if (body_len > GW_STORE_OBJECT_MAX)
        return bad_arg(err, NULL, "store: a stored answer is at most 1 MiB");
    op = op_new(kind, slen(key_name) + slen(idem_key) + body_len + 1, &pk, err);
    if (op == NULL)
        return GW_ERR;
    op->key_name = pack_str(&pk, key_name);
    op->idem_key = pack_str(&pk, idem_key);
    op->body = pack(&pk, body != NULL ? body : "", body_len);
    op->body_len = body_len;
    op->status = status;
    op->t1 = now;
    return submit(l, op, cb, arg, opp, err);
}

int gw_store_idem_begin(struct gw_store_loop *l, const char *key_name, const char *idem_key,
                        int64_t now, gw_store_cb cb, void *arg, struct gw_store_op **op,
                        struct gw_error *err)
{
    return idem_op(GW_OP_IDEM_BEGIN, l, key_name, idem_key, now, 0, NULL, 0, cb, arg, op, err);
}

int gw_store_idem_finish(struct gw_store_loop *l, const char *key_name, const char *idem_key,
                         int status, const char *body, size_t body_len, gw_store_cb cb,
                         void *arg, struct gw_store_op **op, struct gw_error *err)
{
    if (status < 100 || status > 599)
        return bad_arg(err, NULL, "store: an answer's status is 100..599");
    return idem_op(GW_OP_IDEM_FINISH, l, key_name, idem_key, 0, status, body, body_len, cb, arg,
                   op, err);
}

int gw_store_idem_abort(struct gw_store_loop *l, const char *key_name, const char *idem_key,
                        gw_store_cb cb, void *arg, struct gw_store_op **op,
                        struct gw_error *err)
{
    return idem_op(GW_OP_IDEM_ABORT, l, key_name, idem_key, 0, 0, NULL, 0, cb, arg, op, err);
}

static int check_usage_query(const struct gw_usage_query *q, struct gw_error *err)
{
    if (gw_store_check_day(q->since) != GW_OK)
        return bad_arg(err, "since", "since must be a date, YYYY-MM-DD");
    if (gw_store_check_day(q->until) != GW_OK)
        return bad_arg(err, "until", "until must be a date, YYYY-MM-DD");
    return GW_OK;
}

int gw_store_usage(struct gw_store_loop *l, const struct gw_usage_query *q, gw_store_cb cb,
                   void *arg, struct gw_store_op **opp, struct gw_error *err)
{
    struct packer pk;
    struct gw_store_op *op;

    if (opp != NULL)
        *opp = NULL; /* until queued */

    if (check_usage_query(q, err) != GW_OK)
        return GW_ERR;
    op = op_new(GW_OP_USAGE, slen(q->since) + slen(q->until) + slen(q->key_name), &pk, err);
    if (op == NULL)
        return GW_ERR;
    op->usage_q.since = pack_str(&pk, q->since);
    op->usage_q.until = pack_str(&pk, q->until);
    op->usage_q.key_name = pack_str(&pk, q->key_name);
    op->usage_q.by_kind = q->by_kind;
    return submit(l, op, cb, arg, opp, err);
}

int gw_store_script(struct gw_store_loop *l, const struct gw_store_script *sc, unsigned nargs,
                    const char *const *args, gw_store_cb cb, void *arg,
                    struct gw_store_op **opp, struct gw_error *err)
{
    struct packer pk;
    struct gw_store_op *op;
    size_t strings = 0;

    if (opp != NULL)
        *opp = NULL; /* until queued */
    if (strcmp(l->store->engine->name, "redis") != 0)
        return unavailable(err, "store: scripts need the redis store");
    if (nargs > GW_STORE_SCRIPT_ARGS)
        return bad_arg(err, NULL, "store: too many script arguments");
    for (unsigned i = 0; i < nargs; i++)
        strings += slen(args[i]);
    strings += nargs * (sizeof(char *) + sizeof(size_t)) + sizeof(size_t);
    op = op_new(GW_OP_SCRIPT, strings, &pk, err);
    if (op == NULL)
        return GW_ERR;
    /* the two arrays first (aligned: the op's tail is), then the strings */
    op->arglens = (size_t *)(void *)pk.p;
    op->args = (const char **)(void *)(op->arglens + nargs + 1);
    pk.p = (char *)(op->args + nargs);
    for (unsigned i = 0; i < nargs; i++) {
        op->arglens[i] = args[i] != NULL ? strlen(args[i]) : 0;
        op->args[i] = pack(&pk, args[i] != NULL ? args[i] : "", op->arglens[i]);
    }
    op->nargs = nargs;
    op->script = sc;
    return submit(l, op, cb, arg, opp, err);
}

int gw_store_usage_read(const struct gw_store_options *o, const struct gw_usage_query *q,
                        struct gw_usage **out, struct gw_error *err)
{
    *out = NULL;
    if (!is_redis(o) && (o == NULL || o->path == NULL || o->path[0] == '\0'))
        return gw_error_set(err, 0, NULL, NULL, NULL, "store: no path given");
    if (check_usage_query(q, err) != GW_OK)
        return GW_ERR;
    if (is_redis(o))
        return gw_store_redis_usage_read(o, q, out, err);
    return gw_store_sqlite_usage_read(o, q, out, err);
}

void gw_store_usage_free(struct gw_usage *u)
{
    if (u == NULL)
        return;
    for (size_t i = 0; i < u->n; i++) {
        free((char *)u->rows[i].key_name);
        free((char *)u->rows[i].model);
        free((char *)u->rows[i].kind);
    }
    free(u->rows);
    free(u);
}
