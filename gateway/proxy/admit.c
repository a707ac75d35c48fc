/*
 * admit.c - admission: the per-key limits of this instance (limits/limiter.c)
 * decide at once; with the store on Redis, rpm, concurrency and upstream_rpm
 * are Redis's (limits/redis_limits.c: one script per decision, answered later
 * on the loop), shared by every instance. A create over upstream_rpm waits for
 * its slot towards the upstream (bounded by upstream_queue, in arrival order)
 * on a timer of its loop. The daily video-seconds are reserved at the body's
 * end (gw_admit_quota), locally or in Redis. A create whose body is held whole
 * (gw_admit_req.defer) with a budget in Redis is decided there instead, limits
 * and reservation in one script: one round trip before the upstream, not two.
 *
 * With the store on Redis, a create while Redis is unreachable is what
 * [store] on_failure says: refused (503, before anything goes upstream: a job
 * that could not be recorded would escape ownership and billing), or admitted
 * on this instance's limits, logged once per outage.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include <event2/event.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "admit.h"
#include "exchange.h"
#include "limiter.h"
#include "quota.h"
#include "log.h"
#include "metrics.h"
#include "redis_limits.h"
#include "server.h"
#include "store/store.h"

static atomic_int outage_logged; /* on_failure = local: logged for this outage */

/* A decision under way: Redis's answer (op), or the upstream slot (timer). */
struct gw_admission {
    struct event *timer;
    struct gw_worker *w;
    const struct gw_team_key *key;
    gw_admit_cb cb;
    void *arg;
    /* the limits in Redis */
    struct gw_store_op *op;          /* Redis's decision pending */
    int abandoned;                   /* the exchange went away meanwhile: a frees itself */
    struct gw_gcra_result *rate;     /* the exchange's (not once abandoned) */
    int64_t *retry_after_ms;
    struct gw_lease **lease;         /* the exchange's: the slot it holds */
    char key_name[65];               /* for a release once key may be gone */
    char lease_id[48];
};

int gw_admit_counts(const struct gw_route *route)
{
    /* every request that makes a job; a character is not one */
    return route->id == GW_ROUTE_CREATE || route->id == GW_ROUTE_REMIX ||
           route->id == GW_ROUTE_EDIT || route->id == GW_ROUTE_EXTEND;
}

/* Redis gave no decision (unreachable, or an answer that is not ours: logged).
 * 1: [store] on_failure = refuse, err set; 0: decide on this instance's limits. */
static int redis_refuses(struct gw_worker *w, const struct gw_store_res *res,
                         struct gw_error *err)
{
    if (res->rc == GW_OK)
        gw_log(GW_LOG_ERROR, "limits: Redis answered something unexpected: is another "
               "program writing under the gateway's prefix?");
    if (w->cfg->redis_on_failure != GW_STORE_FAIL_REFUSE)
        return 0;
    gw_error_set(err, 503, "server_error", "store_unavailable", NULL,
                 "The gateway's limits store is unreachable; creates are refused "
                 "until it is back. Retry later.");
    return 1;
}

/* A wait for the upstream's slot is over: free it (obj, its timer), then admit. */
static void slot_done(void *obj, struct event *timer, gw_admit_cb cb, void *cbarg)
{
    event_free(timer);
    free(obj);
    cb(cbarg, NULL);
}

/* A decision under way for r, answered to cb(arg); NULL: out of memory. */
static struct gw_admission *admission_new(struct gw_worker *w, const struct gw_admit_req *r,
                                          gw_admit_cb cb, void *arg)
{
    struct gw_admission *a = calloc(1, sizeof(*a));

    if (a == NULL)
        return NULL;
    a->w = w;
    a->key = r->key;
    a->cb = cb;
    a->arg = arg;
    a->rate = r->rate;
    a->retry_after_ms = r->retry_after_ms;
    a->lease = r->lease;
    snprintf(a->key_name, sizeof(a->key_name), "%s", r->key->name);
    return a;
}

static void slot_reached(evutil_socket_t fd, short ev, void *arg)
{
    struct gw_admission *a = arg;

    slot_done(a, a->timer, a->cb, a->arg);
}

/* The key may go on: now the provider account's pace (upstream_rpm, per
 * instance). GW_OK (now), GW_AGAIN (a waits for its slot; *pending = a, a
 * taken), GW_ERR (refused, err; the caller gives back what the key took). a:
 * the caller's admission to reuse (it stays the caller's on GW_OK and GW_ERR),
 * or NULL to make one when needed. */
static int upstream_slot(struct gw_worker *w, const struct gw_admit_req *r,
                         struct gw_admission *a, gw_admit_cb cb, void *arg,
                         struct gw_admission **pending, struct gw_error *err)
{
    int64_t wait;

    if (gw_limiter_upstream_slot(w->limiter, gw_worker_now_ms(), &wait, err) != GW_OK) {
        *r->retry_after_ms = wait;
        return GW_ERR;
    }
    if (wait == 0)
        return GW_OK;
    int made = a == NULL; /* else the caller's: it frees it on GW_ERR */
    if (made && (a = admission_new(w, r, cb, arg)) == NULL)
        return gw_error_set(err, 503, "server_error", "overloaded", NULL, "Out of memory");
    if ((a->timer = evtimer_new(w->base, slot_reached, a)) == NULL) {
        if (made)
            free(a);
        return gw_error_set(err, 503, "server_error", "overloaded", NULL, "Out of memory");
    }
    struct timeval tv = { wait / 1000, (wait % 1000) * 1000 };
    evtimer_add(a->timer, &tv);
    *pending = a;
    return GW_AGAIN;
}

/* Give back what a create took: its Redis lease, or its local slot. */
static void give_back(struct gw_worker *w, const struct gw_team_key *k, struct gw_lease **lease)
{
    if (lease != NULL && *lease != NULL) {
        gw_rlimits_release(*lease);
        *lease = NULL;
    } else {
        gw_limiter_release(w->limiter, k);
    }
}

static int refusal(const struct gw_team_key *k, const struct gw_rlimits_decision *d,
                   int upstream_rpm, struct gw_error *err)
{
    if (d->status == GW_RLIMITS_UPSTREAM)
        return gw_error_set(err, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                            "The gateway's request rate towards the video service is "
                            "saturated (%d creates per minute for all keys). Please try again "
                            "shortly.", upstream_rpm);
    if (d->status == GW_RLIMITS_CONCURRENCY)
        return gw_error_set(err, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                            "Too many creates in flight for this API key: at most %d at "
                            "once. Retry when one of them has been answered.",
                            k->limits.concurrency);
    return gw_error_set(err, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                        "Rate limit reached for this API key: %d creates per minute. "
                        "Please try again in %" PRId64 " ms.",
                        k->limits.rpm, d->retry_after_ms);
}

/* Redis decided (on the loop, from the store). */
static void decided(void *arg, const struct gw_store_res *res)
{
    struct gw_admission *a = arg;
    struct gw_worker *w = a->w;
    struct gw_rlimits_decision d;
    struct gw_error err;
    const struct gw_error *out = NULL;
    int ok = res->rc == GW_OK && gw_rlimits_decode(res, &d) == GW_OK;

    a->op = NULL;
    if (a->abandoned) {
        if (ok && d.status == GW_RLIMITS_ADMITTED && w->store != NULL)
            gw_rlimits_release_id(w->store, a->key_name, a->lease_id);
        free(a);
        return;
    }
    gw_admit_cb cb = a->cb;
    void *cbarg = a->arg;
    struct gw_admit_req r = { a->key, NULL, NULL, a->rate, a->retry_after_ms, a->lease, 0 };
    if (!ok) {
        if (redis_refuses(w, res, &err)) {
            out = &err;
            goto answer;
        }
        /* on_failure = local: this instance's own limits */
        if (gw_limiter_admit(w->limiter, a->key, gw_worker_now_ms(), a->rate,
                             a->retry_after_ms, &err) != GW_OK) {
            out = &err;
            goto answer;
        }
        r.lease = NULL;
    } else if (d.status != GW_RLIMITS_ADMITTED) {
        *a->rate = d.rate;
        *a->retry_after_ms = d.retry_after_ms;
        refusal(a->key, &d, w->cfg->upstream_rpm, &err);
        out = &err;
        goto answer;
    } else {
        *a->rate = d.rate;
        /* held (renewed) until the exchange ends; a mark even without a slot, so that
         * the release knows the decision was Redis's */
        *a->lease = gw_rlimits_hold(w->id, w->store, w->base, a->key_name, a->lease_id);
        if (*a->lease == NULL) /* out of memory: the slot expires by itself */
            gw_rlimits_release_id(w->store, a->key_name, a->lease_id);
        /* the upstream's pace was Redis's too: wait for the slot it gave */
        if (d.wait_ms > 0) {
            if ((a->timer = evtimer_new(w->base, slot_reached, a)) == NULL) {
                give_back(w, r.key, r.lease);
                gw_error_set(&err, 503, "server_error", "overloaded", NULL, "Out of memory");
                out = &err;
                goto answer;
            }
            struct timeval tv = { d.wait_ms / 1000, (d.wait_ms % 1000) * 1000 };
            evtimer_add(a->timer, &tv);
            return; /* a waits on its timer; the exchange's pending is still a */
        }
        goto answer;
    }
    switch (upstream_slot(w, &r, a, cb, cbarg, &a, &err)) {
    case GW_AGAIN:
        return; /* a waits on its timer; the exchange's pending is still a */
    case GW_ERR:
        give_back(w, r.key, r.lease);
        out = &err;
        break;
    default:
        break;
    }
answer:
    free(a);
    cb(cbarg, out);
}

/* The limits are Redis's for this create: backend redis, Redis reachable, a limit
 * that Redis keeps. */
static int in_redis(struct gw_worker *w, const struct gw_admit_req *r)
{
    return w->store != NULL && w->cfg->store_backend == GW_STORE_REDIS && r->lease != NULL &&
           (r->key->limits.rpm > 0 || r->key->limits.concurrency > 0 ||
            w->cfg->upstream_rpm > 0) &&
           gw_store_loop_reachable(w->store);
}

int gw_admit(struct gw_worker *w, const struct gw_admit_req *r, gw_admit_cb cb, void *arg,
             struct gw_admission **pending, struct gw_error *err)
{
    int rc;

    *pending = NULL;
    if (r->key == NULL || !gw_admit_counts(r->route))
        return GW_OK;
    if (w->store != NULL && w->cfg->store_backend == GW_STORE_REDIS) {
        if (!gw_store_loop_reachable(w->store)) {
            if (w->cfg->redis_on_failure == GW_STORE_FAIL_REFUSE)
                return gw_error_set(err, 503, "server_error", "store_unavailable", NULL,
                                    "The gateway's job store is unreachable; creates are "
                                    "refused until it is back. Retry later.");
            if (atomic_exchange(&outage_logged, 1) == 0)
                gw_log(GW_LOG_WARN, "store unreachable: admitting creates on this "
                       "instance's own limits (on_failure = local) until it is back");
        } else if (atomic_load_explicit(&outage_logged, memory_order_relaxed)) {
            atomic_store(&outage_logged, 0);
        }
    }
    if (w->limiter == NULL)
        return GW_OK;
    /* a JSON create with a daily budget: one script at the body's end decides and
     * reserves (gw_admit_quota); until then the exchange holds only the mark */
    if (r->defer && r->route->id == GW_ROUTE_CREATE && r->key->limits.daily_seconds > 0 &&
        in_redis(w, r) && (*r->lease = gw_rlimits_defer()) != NULL)
        return GW_OK;
    if (in_redis(w, r)) {
        struct gw_admission *a = admission_new(w, r, cb, arg);
        if (a == NULL)
            return gw_error_set(err, 503, "server_error", "overloaded", NULL, "Out of memory");
        if (r->key->limits.concurrency > 0)
            gw_rlimits_lease_id(a->lease_id);
        if (gw_rlimits_admit(w->store, r->key, a->lease_id, w->cfg->upstream_rpm,
                             w->cfg->upstream_queue_ms, decided, a, &a->op, err) != GW_AGAIN) {
            free(a);
            return GW_ERR;
        }
        *pending = a;
        return GW_AGAIN;
    }
    if (gw_limiter_admit(w->limiter, r->key, gw_worker_now_ms(), r->rate, r->retry_after_ms,
                         err) != GW_OK)
        return GW_ERR;
    struct gw_admit_req local = *r;
    local.lease = NULL;
    rc = upstream_slot(w, &local, NULL, cb, arg, pending, err);
    if (rc == GW_ERR)
        gw_limiter_release(w->limiter, r->key);
    return rc;
}

int gw_admit_put_lease(const struct gw_lease *lease, const char **key, const char **id)
{
    return gw_rlimits_slot(lease, key, id);
}

void gw_admit_put_released(struct gw_lease *lease)
{
    gw_rlimits_forget(lease);
}

int gw_admit_deferred(const struct gw_lease *lease)
{
    return gw_rlimits_deferred(lease);
}

void gw_admit_cancel(struct gw_admission *a)
{
    if (a->op != NULL) {
        /* Redis is deciding: its answer frees a (and gives back a slot it took) */
        a->abandoned = 1;
        return;
    }
    /* the client went away while waiting for the upstream slot: its concurrency slot
     * is free again (the upstream slot it held passes unused) */
    give_back(a->w, a->key, a->lease);
    event_free(a->timer);
    free(a);
}

void gw_admit_release(struct gw_worker *w, const struct gw_admit_req *r)
{
    if (w->limiter != NULL && r->key != NULL && gw_admit_counts(r->route))
        give_back(w, r->key, r->lease);
}

/* ------------------------------------------------------- daily video-seconds */

struct gw_quota_wait {
    struct event *timer;    /* a deferred decision waits for its upstream slot */
    struct gw_worker *w;
    gw_admit_cb cb;
    void *arg;
    struct gw_store_op *op;
    int abandoned;          /* the exchange went away: q frees itself, gives back */
    const struct gw_team_key *key; /* not once abandoned */
    uint32_t seconds, limit;
    int64_t day;
    int64_t *out_day, *retry_after_ms;
    int *remote;
    char key_name[65];
    /* a decision gw_admit put off (with the reservation: one script) */
    int deferred;
    struct gw_gcra_result *rate;
    struct gw_lease **lease; /* the exchange's: the mark, then what it holds */
    char lease_id[48];
};

/* A wait for a reservation's answer (or an upstream slot), for r's key and seconds
 * on today's budget; NULL: out of memory. */
static struct gw_quota_wait *quota_wait_new(struct gw_worker *w, const struct gw_quota_req *r,
                                            gw_admit_cb cb, void *arg, int64_t now)
{
    struct gw_quota_wait *q = calloc(1, sizeof(*q));

    if (q == NULL)
        return NULL;
    q->w = w;
    q->cb = cb;
    q->arg = arg;
    q->key = r->key;
    q->seconds = r->seconds;
    q->limit = (uint32_t)r->key->limits.daily_seconds;
    q->day = gw_quota_day(now);
    q->out_day = r->day;
    q->retry_after_ms = r->retry_after_ms;
    q->remote = r->remote;
    snprintf(q->key_name, sizeof(q->key_name), "%s", r->key->name);
    return q;
}

static int64_t until_midnight_ms(int64_t unix_ms)
{
    int64_t left = 86400000 - unix_ms % 86400000;

    return left > 0 ? left : 1;
}

static int over_budget(const struct gw_team_key *k, uint32_t seconds, struct gw_error *err)
{
    return gw_limiter_over_budget(seconds, (uint32_t)k->limits.daily_seconds, err);
}

static int quota_local(struct gw_worker *w, const struct gw_quota_req *r, struct gw_error *err)
{
    *r->remote = 0;
    return gw_limiter_reserve(w->limiter, r->key, r->seconds, gw_proxy_unix_ms(), r->day,
                              r->retry_after_ms, err);
}

static void deferred_decided(struct gw_quota_wait *q, const struct gw_store_res *res);

static void quota_decided(void *arg, const struct gw_store_res *res)
{
    struct gw_quota_wait *q = arg;

    if (q->deferred) {
        deferred_decided(q, res);
        return;
    }
    struct gw_worker *w = q->w;
    struct gw_error err;
    const struct gw_error *out = NULL;
    int ok = res->rc == GW_OK && res->nints >= 1 && (res->ints[0] == 0 || res->ints[0] == 1);

    q->op = NULL;
    if (q->abandoned) {
        if (ok && res->ints[0] == 0)
            gw_rlimits_unreserve(w->store, q->key_name, q->day, q->seconds);
        free(q);
        return;
    }
    if (!ok) {
        if (w->cfg->redis_on_failure == GW_STORE_FAIL_REFUSE) {
            gw_error_set(&err, 503, "server_error", "store_unavailable", NULL,
                         "The gateway's limits store is unreachable; creates are refused "
                         "until it is back. Retry later.");
            out = &err;
        } else {
            struct gw_quota_req r = { q->key, q->seconds, q->out_day, q->retry_after_ms,
                                      q->remote, NULL, NULL };
            if (quota_local(w, &r, &err) != GW_OK)
                out = &err;
        }
    } else if (res->ints[0] == 1) {
        *q->retry_after_ms = until_midnight_ms(gw_proxy_unix_ms());
        over_budget(q->key, q->seconds, &err);
        out = &err;
    } else {
        *q->out_day = q->day;
        *q->remote = 1;
    }
    gw_admit_cb cb = q->cb;
    void *cbarg = q->arg;
    free(q);
    cb(cbarg, out);
}

/* ------------------------------------- a decision deferred to the body's end */

/*
 * This instance's limits for a deferred create (Redis unreachable, on_failure =
 * local): the key's rpm and slot, the upstream's pace (*wait: how long until its
 * slot), the day's seconds. On a refusal nothing is taken and the mark stays
 * (released, it gives back nothing); admitted, the exchange holds a local slot.
 */
static int deferred_local(struct gw_worker *w, const struct gw_quota_req *r, int64_t *wait,
                          struct gw_error *err)
{
    if (gw_limiter_admit(w->limiter, r->key, gw_worker_now_ms(), r->rate, r->retry_after_ms,
                         err) != GW_OK)
        return GW_ERR;
    if (gw_limiter_upstream_slot(w->limiter, gw_worker_now_ms(), wait, err) != GW_OK) {
        *r->retry_after_ms = *wait;
        gw_limiter_release(w->limiter, r->key);
        return GW_ERR;
    }
    if (quota_local(w, r, err) != GW_OK) {
        gw_limiter_release(w->limiter, r->key);
        return GW_ERR;
    }
    gw_rlimits_release(*r->lease); /* the mark: nothing sent */
    *r->lease = NULL;              /* the local slot: gw_admit_release gives it back */
    return GW_OK;
}

static void deferred_slot_reached(evutil_socket_t fd, short ev, void *arg)
{
    struct gw_quota_wait *q = arg;

    slot_done(q, q->timer, q->cb, q->arg);
}

/* Admitted and reserved, the upstream's slot wait_ms ahead: cb now or on a timer.
 * 0, or -1 (out of memory: the caller refuses, and gives back). */
static int deferred_wait(struct gw_quota_wait *q, int64_t wait_ms)
{
    if (wait_ms <= 0) {
        gw_admit_cb cb = q->cb;
        void *cbarg = q->arg;
        free(q);
        cb(cbarg, NULL);
        return 0;
    }
    if ((q->timer = evtimer_new(q->w->base, deferred_slot_reached, q)) == NULL)
        return -1;
    struct timeval tv = { wait_ms / 1000, (wait_ms % 1000) * 1000 };
    evtimer_add(q->timer, &tv);
    return 0; /* the exchange's quota_wait is still q: its cancel frees the timer */
}

static void deferred_decided(struct gw_quota_wait *q, const struct gw_store_res *res)
{
    struct gw_worker *w = q->w;
    struct gw_rlimits_decision d;
    struct gw_error err;
    int ok = res->rc == GW_OK && gw_rlimits_decode(res, &d) == GW_OK;
    int64_t wait = 0;

    q->op = NULL;
    if (q->abandoned) {
        if (ok && d.status == GW_RLIMITS_ADMITTED && w->store != NULL) {
            gw_rlimits_release_id(w->store, q->key_name, q->lease_id);
            gw_rlimits_unreserve(w->store, q->key_name, q->day, q->seconds);
        }
        free(q);
        return;
    }
    if (!ok) {
        if (redis_refuses(w, res, &err))
            goto refuse;
        struct gw_quota_req r = { q->key, q->seconds, q->out_day, q->retry_after_ms,
                                  q->remote, q->rate, q->lease };
        if (deferred_local(w, &r, &wait, &err) != GW_OK)
            goto refuse;
    } else if (d.status != GW_RLIMITS_ADMITTED) {
        *q->rate = d.rate;
        if (d.status == GW_RLIMITS_QUOTA) {
            *q->retry_after_ms = until_midnight_ms(gw_proxy_unix_ms());
            over_budget(q->key, q->seconds, &err);
        } else {
            *q->retry_after_ms = d.retry_after_ms;
            refusal(q->key, &d, w->cfg->upstream_rpm, &err);
        }
        goto refuse;
    } else {
        *q->rate = d.rate;
        *q->out_day = q->day;
        *q->remote = 1;
        gw_rlimits_release(*q->lease); /* the mark: nothing sent */
        *q->lease = gw_rlimits_hold(w->id, w->store, w->base, q->key_name, q->lease_id);
        if (*q->lease == NULL) /* out of memory: the slot expires by itself */
            gw_rlimits_release_id(w->store, q->key_name, q->lease_id);
        wait = d.wait_ms;
    }
    gw_m_limit(q->key->slot, GW_M_ADMITTED); /* not counted at the headers */
    if (deferred_wait(q, wait) == 0)
        return;
    /* out of memory: give back what was taken (the slot goes with the exchange) */
    gw_admit_quota_settle(w, q->key, q->seconds, *q->out_day, *q->remote, 0);
    gw_error_set(&err, 503, "server_error", "overloaded", NULL, "Out of memory");
refuse:;
    gw_admit_cb cb = q->cb;
    void *cbarg = q->arg;
    free(q);
    cb(cbarg, &err);
}

static int deferred_quota(struct gw_worker *w, const struct gw_quota_req *r, gw_admit_cb cb,
                          void *arg, struct gw_quota_wait **pending, struct gw_error *err)
{
    int64_t now = gw_proxy_unix_ms(), wait = 0;
    struct gw_quota_wait *q;

    if (!gw_store_loop_reachable(w->store)) {
        if (w->cfg->redis_on_failure == GW_STORE_FAIL_REFUSE)
            return gw_error_set(err, 503, "server_error", "store_unavailable", NULL,
                                "The gateway's job store is unreachable; creates are "
                                "refused until it is back. Retry later.");
        if (deferred_local(w, r, &wait, err) != GW_OK)
            return GW_ERR;
    } else if (r->seconds > (uint32_t)r->key->limits.daily_seconds) {
        *r->retry_after_ms = until_midnight_ms(now);
        return over_budget(r->key, r->seconds, err); /* never fits: no round trip */
    }
    if ((q = quota_wait_new(w, r, cb, arg, now)) == NULL) {
        if (*r->lease == NULL) /* admitted locally: give it all back */
            gw_admit_quota_settle(w, r->key, r->seconds, *r->day, 0, 0);
        return gw_error_set(err, 503, "server_error", "overloaded", NULL, "Out of memory");
    }
    q->deferred = 1;
    q->rate = r->rate;
    q->lease = r->lease;
    if (*r->lease == NULL) { /* admitted locally */
        gw_m_limit(r->key->slot, GW_M_ADMITTED);
        if (wait <= 0) {
            free(q);
            return GW_OK;
        }
        if ((q->timer = evtimer_new(w->base, deferred_slot_reached, q)) == NULL) {
            free(q);
            gw_admit_quota_settle(w, r->key, r->seconds, *r->day, 0, 0);
            return gw_error_set(err, 503, "server_error", "overloaded", NULL, "Out of memory");
        }
        struct timeval tv = { wait / 1000, (wait % 1000) * 1000 };
        evtimer_add(q->timer, &tv);
        *pending = q;
        return GW_AGAIN;
    }
    if (r->key->limits.concurrency > 0)
        gw_rlimits_lease_id(q->lease_id);
    if (gw_rlimits_admit_reserve(w->store, r->key, q->lease_id, w->cfg->upstream_rpm,
                                 w->cfg->upstream_queue_ms, q->day, q->seconds, quota_decided,
                                 q, &q->op, err) != GW_AGAIN) {
        free(q);
        return GW_ERR;
    }
    *pending = q;
    return GW_AGAIN;
}

int gw_admit_quota(struct gw_worker *w, const struct gw_quota_req *r, gw_admit_cb cb,
                   void *arg, struct gw_quota_wait **pending, struct gw_error *err)
{
    int64_t now = gw_proxy_unix_ms();

    *pending = NULL;
    *r->remote = 0;
    *r->retry_after_ms = 0;
    if (r->lease != NULL && gw_rlimits_deferred(*r->lease) && r->rate != NULL &&
        w->store != NULL)
        return deferred_quota(w, r, cb, arg, pending, err);
    /* no budget to share: counted here (never refused), no round trip */
    if (w->store == NULL || w->cfg->store_backend != GW_STORE_REDIS ||
        r->key->limits.daily_seconds <= 0) {
        if (quota_local(w, r, err) != GW_OK)
            return GW_ERR;
        return GW_OK;
    }
    if (!gw_store_loop_reachable(w->store)) {
        if (w->cfg->redis_on_failure == GW_STORE_FAIL_REFUSE)
            return gw_error_set(err, 503, "server_error", "store_unavailable", NULL,
                                "The gateway's job store is unreachable; creates are "
                                "refused until it is back. Retry later.");
        return quota_local(w, r, err) == GW_OK ? GW_OK : GW_ERR;
    }
    if (r->key->limits.daily_seconds > 0 && r->seconds > (uint32_t)r->key->limits.daily_seconds) {
        *r->retry_after_ms = until_midnight_ms(now);
        return over_budget(r->key, r->seconds, err); /* never fits: no round trip */
    }
    struct gw_quota_wait *q = quota_wait_new(w, r, cb, arg, now);
    if (q == NULL)
        return gw_error_set(err, 503, "server_error", "overloaded", NULL, "Out of memory");
    if (gw_rlimits_reserve(w->store, q->key_name, q->day, q->seconds, q->limit, quota_decided,
                           q, &q->op, err) != GW_AGAIN) {
        free(q);
        return GW_ERR;
    }
    *pending = q;
    return GW_AGAIN;
}

void gw_admit_quota_cancel(struct gw_quota_wait *q)
{
    if (q->timer != NULL) {
        /* a deferred create waiting for its upstream slot, its seconds reserved and
         * not yet the exchange's: given back here (its concurrency slot goes with
         * the exchange's lease) */
        gw_admit_quota_settle(q->w, q->key, q->seconds, *q->out_day, *q->remote, 0);
        event_free(q->timer);
        free(q);
        return;
    }
    q->abandoned = 1; /* Redis's answer frees q and gives back what it reserved */
}

void gw_admit_quota_settle(struct gw_worker *w, const struct gw_team_key *k, uint32_t seconds,
                           int64_t day, int remote, int kept)
{
    if (!remote) {
        gw_limiter_settle(w->limiter, k, seconds, day, kept);
        return;
    }
    if (!kept && w->store != NULL)
        gw_rlimits_unreserve(w->store, k->name, day, seconds);
}

void gw_admit_quota_refund(struct gw_worker *w, const struct gw_team_key *k, uint32_t seconds,
                           int64_t created_unix_ms)
{
    gw_limiter_refund(w->limiter, k, seconds, created_unix_ms);
    if (w->store != NULL && w->cfg->store_backend == GW_STORE_REDIS &&
        k->limits.daily_seconds > 0)
        gw_rlimits_unreserve(w->store, k->name, gw_quota_day(created_unix_ms), seconds);
}

void gw_admit_quota_charge(struct gw_worker *w, const struct gw_team_key *k, uint32_t seconds,
                           int64_t unix_ms)
{
    struct gw_error err;

    gw_limiter_charge(w->limiter, k, seconds, unix_ms);
    if (w->store != NULL && w->cfg->store_backend == GW_STORE_REDIS &&
        k->limits.daily_seconds > 0) /* limit 0: counted, never refused */
        gw_rlimits_reserve(w->store, k->name, gw_quota_day(unix_ms), seconds, 0, NULL, NULL,
                           NULL, &err);
}
