/*
 * refresh.h - the periodic refresh of unfinished jobs from the upstream (refresh.c).
 */
#ifndef GW_REFRESH_H
#define GW_REFRESH_H

#include "server.h"

struct gw_refresher;

/* Start refreshing on w's loop every [jobs] refresh (one loop per instance does
 * it). NULL when w has no store or out of memory. It lives as long as the loop. */
struct gw_refresher *gw_refresh_start(struct gw_worker *w);

#endif
