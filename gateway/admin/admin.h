/*
 * admin.h - the admin listener (admin.c).
 */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include "server.h"

/* Listen on [admin] listen with w's loop (one loop serves it): on fd, the
 * socket an older gateway handed over (handover.c), or on one of our own (-1).
 * GW_OK also when no admin listener is configured. */
int gw_admin_start(struct gw_worker *w, int fd, struct gw_error *err);

#endif
