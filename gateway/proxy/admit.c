/*
 * admit.c - admission: the per-key limits of this instance (limits/limiter.c)
 * decide at once; a create over upstream_rpm waits for its slot towards the
 * upstream (bounded by upstream_queue, in arrival order) on a timer of its loop.
 * A shared engine (Redis) will answer later, behind the same contract.
 *
 * With the store on Redis, a create while Redis is unreachable is what
 * [store] on_failure says: refused (503, before anything goes upstream: a job
 * that could not be recorded would escape ownership and billing), or admitted
 * on this instance's limits, logged once per outage.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include <event2/event.h>

#include "admit.h"
#include "limiter.h"
#include "log.h"
#include "server.h"
#include "store/store.h"

static atomic_int outage_logged; /* on_failure = local: logged for this outage */

/* A create waiting for its upstream slot. */
struct gw_admission {
    struct event *timer;
    struct gw_worker *w;
    const struct gw_team_key *key;
    gw_admit_cb cb;
    void *arg;
};

int gw_admit_counts(const struct gw_route *route)
{
    return route->id == GW_ROUTE_CREATE || route->id == GW_ROUTE_REMIX;
}

static void slot_reached(evutil_socket_t fd, short ev, void *arg)
{
    struct gw_admission *a = arg;
    gw_admit_cb cb = a->cb;
    void *cbarg = a->arg;

    event_free(a->timer);
    free(a);
    cb(cbarg, NULL);
}

int gw_admit(struct gw_worker *w, const struct gw_admit_req *r, gw_admit_cb cb, void *arg,
             struct gw_admission **pending, struct gw_error *err)
{
    int64_t now = gw_worker_now_ms(), wait;
    struct gw_admission *a;

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
    if (gw_limiter_admit(w->limiter, r->key, now, r->rate, r->retry_after_ms, err) != GW_OK)
        return GW_ERR;
    /* the key may go on; now the provider account's pace */
    if (gw_limiter_upstream_slot(w->limiter, now, &wait, err) != GW_OK) {
        gw_limiter_release(w->limiter, r->key);
        *r->retry_after_ms = wait;
        return GW_ERR;
    }
    if (wait == 0)
        return GW_OK;
    a = calloc(1, sizeof(*a));
    if (a == NULL || (a->timer = evtimer_new(w->base, slot_reached, a)) == NULL) {
        free(a);
        gw_limiter_release(w->limiter, r->key);
        return gw_error_set(err, 503, "server_error", "overloaded", NULL, "Out of memory");
    }
    a->w = w;
    a->key = r->key;
    a->cb = cb;
    a->arg = arg;
    struct timeval tv = { wait / 1000, (wait % 1000) * 1000 };
    evtimer_add(a->timer, &tv);
    *pending = a;
    return GW_AGAIN;
}

void gw_admit_cancel(struct gw_admission *a)
{
    /* the client went away while waiting: its concurrency slot is free again
     * (the upstream slot it held passes unused) */
    gw_limiter_release(a->w->limiter, a->key);
    event_free(a->timer);
    free(a);
}

void gw_admit_release(struct gw_worker *w, const struct gw_admit_req *r)
{
    if (w->limiter != NULL && r->key != NULL && gw_admit_counts(r->route))
        gw_limiter_release(w->limiter, r->key);
}
