/*
 * admit.c - admission: the per-key limits of this instance (limits/limiter.c)
 * decide at once; a create over upstream_rpm waits for its slot towards the
 * upstream (bounded by upstream_queue, in arrival order) on a timer of its loop.
 * A shared engine (Redis) will answer later, behind the same contract.
 */
#include <stdlib.h>

#include <event2/event.h>

#include "admit.h"
#include "limiter.h"
#include "server.h"

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
    /* every request that makes a job; a character is not one */
    return route->id == GW_ROUTE_CREATE || route->id == GW_ROUTE_REMIX ||
           route->id == GW_ROUTE_EDIT || route->id == GW_ROUTE_EXTEND;
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
    if (w->limiter == NULL || r->key == NULL || !gw_admit_counts(r->route))
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
