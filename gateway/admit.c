/*
 * admit.c - admission: the per-key limits of this instance (limits/limiter.c)
 * decide at once; a shared engine (Redis) will answer later, behind the same
 * contract.
 */
#include <stddef.h>

#include "admit.h"
#include "limiter.h"
#include "server.h"

int gw_admit_counts(const struct gw_route *route)
{
    return route->id == GW_ROUTE_CREATE || route->id == GW_ROUTE_REMIX;
}

int gw_admit(struct gw_worker *w, const struct gw_admit_req *r, gw_admit_cb cb, void *arg,
             struct gw_admission **pending, struct gw_error *err)
{
    *pending = NULL;
    if (w->limiter == NULL || r->key == NULL || !gw_admit_counts(r->route))
        return GW_OK;
    return gw_limiter_admit(w->limiter, r->key, gw_worker_now_ms(), r->rate, r->retry_after_ms,
                            err);
}

void gw_admit_cancel(struct gw_admission *a)
{
}

void gw_admit_release(struct gw_worker *w, const struct gw_admit_req *r)
{
    if (w->limiter != NULL && r->key != NULL && gw_admit_counts(r->route))
        gw_limiter_release(w->limiter, r->key);
}
