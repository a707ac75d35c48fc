/*
 * admin.h - the admin listener (admin.c).
 */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include "server.h"

/* Listen on [admin] listen with w's loop (one loop serves it). GW_OK also when
 * no admin listener is configured. */
int gw_admin_start(struct gw_worker *w, struct gw_error *err);

#endif
