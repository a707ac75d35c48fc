/*
 * admit.c - admission. For now every authenticated request is admitted at once;
 * the limits engines (local, Redis) will decide here, behind the same contract.
 */
#include <stddef.h>

#include "admit.h"

int gw_admit(struct gw_worker *w, const struct gw_admit_req *r, gw_admit_cb cb, void *arg,
             struct gw_admission **pending, struct gw_error *err)
{
    *pending = NULL;
    return GW_OK;
}

void gw_admit_cancel(struct gw_admission *a)
{
}

void gw_admit_release(struct gw_worker *w, const struct gw_admit_req *r)
{
}
