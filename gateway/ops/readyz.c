/*
 * readyz.c - readiness (GET /readyz): is this instance worth sending traffic to?
 *
 * Not ready (503) while draining (SIGTERM seen), when the store does not answer
 * (the probe below), or when every upstream key is out (refused with 401/403 on
 * some loop: no create could succeed). /healthz stays the liveness check: a
 * process that answers it is alive, even when not ready.
 *
 * The store probe: every second the first loop asks the store for a no-op
 * write (an Idempotency-Key abort under " readyz", a name no team key can have:
 * key names are [A-Za-z0-9._-]), so
 * that a store that cannot write (a lock held elsewhere, a full disk, a Redis
 * gone) shows, with the same path as the requests' own operations. A probe
 * unanswered for STALL_MS or answered with an error makes the store "down"
 * until a probe succeeds again. State shared with every loop by relaxed atomics.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "ops.h"
#include "server.h"
#include "store/store.h"

#define PROBE_EVERY_MS 1000
#define STALL_MS 2000

static int draining;
static int have_store;
static int probe_pending;     /* a probe is in the store */
static int64_t probe_sent_ms; /* monotonic */
static int store_failed;      /* the last probe's answer was an error */

void gw_readyz_draining(void)
{
    __atomic_store_n(&draining, 1, __ATOMIC_RELAXED);
}

int gw_readyz_is_draining(void)
{
    return __atomic_load_n(&draining, __ATOMIC_RELAXED);
}

static void probed(void *arg, const struct gw_store_res *res)
{
    __atomic_store_n(&store_failed, res->rc != GW_OK, __ATOMIC_RELAXED);
    __atomic_store_n(&probe_pending, 0, __ATOMIC_RELEASE);
}

static void probe(evutil_socket_t fd, short what, void *arg)
{
    struct gw_worker *w = arg;
    struct gw_error err;

    if (__atomic_load_n(&probe_pending, __ATOMIC_ACQUIRE) || w->store == NULL)
        return; /* the last one is still out: its age is the news */
    __atomic_store_n(&probe_sent_ms, gw_worker_now_ms(), __ATOMIC_RELAXED);
    __atomic_store_n(&probe_pending, 1, __ATOMIC_RELEASE);
    if (gw_store_idem_abort(w->store, " readyz", "probe", probed, NULL, NULL, &err) !=
        GW_AGAIN) {
        __atomic_store_n(&store_failed, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&probe_pending, 0, __ATOMIC_RELEASE);
    }
}

int gw_readyz_start(struct gw_worker *w)
{
    struct timeval every = { PROBE_EVERY_MS / 1000, (PROBE_EVERY_MS % 1000) * 1000 };
    struct event *ev;

    if (w->store == NULL)
        return GW_OK;
    ev = event_new(w->base, -1, EV_PERSIST, probe, w);
    if (ev == NULL || event_add(ev, &every) != 0)
        return GW_ERR;
    have_store = 1;
    return GW_OK; /* the event lives as long as the loop */
}

int gw_readyz_check(char *why, size_t n)
{
    int64_t now = gw_worker_now_ms();
    unsigned nkeys = gw_ops_nkeys(), out = 0;

    if (__atomic_load_n(&draining, __ATOMIC_RELAXED)) {
        snprintf(why, n, "draining: the gateway is shutting down");
        return GW_ERR;
    }
    if (have_store) {
        if (__atomic_load_n(&probe_pending, __ATOMIC_ACQUIRE) &&
            now - __atomic_load_n(&probe_sent_ms, __ATOMIC_RELAXED) > STALL_MS) {
            snprintf(why, n, "the store is not answering");
            return GW_ERR;
        }
        if (__atomic_load_n(&store_failed, __ATOMIC_RELAXED)) {
            snprintf(why, n, "the store failed its last probe");
            return GW_ERR;
        }
    }
    for (unsigned i = 0; i < nkeys; i++)
        out += gw_ops_key_state(i, now) == GW_KEY_OUT;
    if (nkeys > 0 && out == nkeys) {
        snprintf(why, n, "every upstream key is out (refused by the upstream with 401/403)");
        return GW_ERR;
    }
    return GW_OK;
}
