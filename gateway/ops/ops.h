/*
 * ops.h - what operations see of a running gateway: the metrics' scrape
 * (metrics.c), readiness (readyz.c) and the service manager (sdnotify.c).
 * I/O modules; the counting itself is metrics.h / mcount.c.
 */
#ifndef GW_OPS_H
#define GW_OPS_H

#include <stdint.h>

#include "config.h"
#include "expo.h"
#include "metrics.h"

#define GW_VERSION "0.1.0"

struct gw_worker;
struct gw_store;
struct gw_keytab;

/* At start, before the loops run: one counter block per loop; the workers (for
 * their upstream key pools) and the store (NULL: none) the scrape reads.
 * GW_ERR when out of memory. */
int gw_metrics_init(struct gw_worker *workers, unsigned n, struct gw_store *store);

/* Make loop i's block the calling thread's (the loop's thread, at its start). */
void gw_metrics_bind_thread(unsigned i);

/* A configuration was loaded (start, reload): intern its models. */
void gw_metrics_config(const struct gw_config *cfg);

/* A SIGHUP reload ended: applied (1) or refused (0). Main thread. */
void gw_metrics_reload(int ok);

/* The whole exposition for the keys of cfg and of kt (the store's; may be NULL)
 * into e (e->full: cut, answer 500). */
void gw_metrics_scrape(struct gw_expo *e, const struct gw_config *cfg,
                       const struct gw_keytab *kt);

/* Upstream key i as the loops know it now (now_ms: monotonic). */
enum gw_key_state {
    GW_KEY_IN_USE = 0, /* usable */
    GW_KEY_RESTING,    /* answered 429: waits for its Retry-After on some loop */
    GW_KEY_OUT,        /* answered 401/403 on some loop: out for GW_KEYPOOL_OUT_MS */
};
enum gw_key_state gw_ops_key_state(unsigned i, int64_t now_ms);
unsigned gw_ops_nkeys(void);

/* ---------------------------------------------------------------- readyz */

/* SIGTERM: from now on /readyz answers 503 (any thread). */
void gw_readyz_draining(void);

/* On the first loop, after its store client exists: probe the store every
 * second (a no-op write, so that a store that cannot write shows). GW_ERR
 * when out of memory. No store: nothing to probe. */
int gw_readyz_start(struct gw_worker *w);

/* GW_OK: ready. GW_ERR: not, why (static text, may name an upstream key's
 * label, never a secret) in *why. Any loop. */
int gw_readyz_check(char *why, size_t n);

/* 1 once SIGTERM was seen (answers say Connection: close from then on). */
int gw_readyz_is_draining(void);

/* --------------------------------------------------------------- upgrade */

/* SIGTERM: make the SO_REUSEPORT group of listening socket fd (nown of whose
 * sockets are this process's, the group's first) send new connections to the
 * sockets that joined later: a newer gateway's (upgrade.c). GW_ERR: logged. */
int gw_upgrade_steer_away(int fd, unsigned nown);

/* Take a steering program off fd's group (a newer process, at SIGHUP: the one
 * its predecessor left there when it drained). */
void gw_upgrade_steer_clear(int fd);

/* -------------------------------------------------------------- sd_notify */

/* Tell the service manager (no-op outside systemd): "READY=1", "RELOADING=1",
 * "STOPPING=1", with a STATUS= line. */
void gw_sd_ready(void);
void gw_sd_reloading(void);
void gw_sd_stopping(void);

#endif
