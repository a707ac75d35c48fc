/*
 * server.h - the listeners: N event loops, each with its own evhtp_t bound to
 * the same address with SO_REUSEPORT (libevhtp's own thread pool balances
 * badly), its own upstream pool and DNS base. Nothing is shared between loops
 * but the immutable config.
 */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#include <pthread.h>
#include <stdint.h>

#include <event2/event.h>
#include <evhtp/evhtp.h>
#include <openssl/ssl.h>

#include "config.h"
#include "handover.h"
#include "keypool.h"
#include "keytab.h"

struct gw_worker {
    unsigned id;
    struct event_base *base;
    evhtp_t *htp;           /* the public listener */
    evhtp_t *more[GW_HANDOVER_MAX]; /* more public listeners: sockets handed over by an */
    unsigned nmore;                 /* older gateway that ran more loops (handover.c) */
    struct gw_upstream *up;
    const struct gw_config *cfg;      /* the config new work starts under, held by this
                                       * loop and swapped on its thread: gw_worker_cfg() */
    const struct gw_config *next_cfg; /* a reload's config waiting for the loop to take it
                                       * (atomic; the slot holds a reference), or NULL */
    const struct gw_keytab *keytab; /* the store's keys new work starts under, held by
                                     * this loop: read it with gw_worker_keytab(); NULL: no store */
    const struct gw_keytab *next_keytab; /* a newer table waiting for the loop to take it
                                          * (atomic; the slot holds a reference), or NULL */
    int wake_fd;            /* eventfd: the main thread asks this loop to drain */
    struct event *wake_ev;
    pthread_t thread;
    uint64_t next_rid;      /* request ids: worker id in the high bits */
    struct gw_keypool keys; /* which upstream key next (keypool.h) */
    unsigned inflight;      /* exchanges alive on this loop */
    void *free_exchanges;   /* proxy.c's recycled exchanges */
    unsigned nfree_exchanges;
    int draining;           /* SIGTERM seen: stop accepting, exit when idle */
    struct gw_limiter *limiter;   /* per-key limits, shared by every loop */
    struct gw_store_loop *store;  /* the job registry as this loop sees it; NULL: none */
    struct gw_refresher *refresher; /* first loop only: refresh of unfinished jobs */
    evhtp_t *admin;                 /* first loop only: the admin listener, or NULL */
    struct gw_keysync *keysync;     /* first loop only: keeps keytab current (with a store) */
    struct event *accept_timer;   /* accepts paused (out of descriptors) until it fires */
    struct event *trim_timer;     /* freed memory handed back once the loop stays idle */
    uint64_t accept_errors;       /* accept() failures since the last log line */
    int64_t accept_logged_ms;     /* when that line was written */
};

struct gw_server;

/* The loop's last exchange ended: hand freed memory back to the system if it
 * stays idle a while (each call pushes that moment back). */
void gw_worker_idle(struct gw_worker *w);

/* Build every worker (listeners bound, TLS loaded). GW_ERR with a message in err. */
struct gw_server *gw_server_new(struct gw_config *cfg, struct gw_error *err);

/* The loop takes a reload's config (gw_worker_cfg's slow path). */
const struct gw_config *gw_worker_take_cfg(struct gw_worker *w);

/*
 * The config new work starts under; on the loop's own thread only. A reload
 * does not swap it from the main thread (the loop could be between reading the
 * old pointer and holding it while the main thread drops the last reference):
 * it leaves the new one in next_cfg, which the loop takes here, dropping its
 * own reference to the old one. Valid until the loop's next call; hold it
 * (gw_config_hold) to keep it longer.
 */
static inline const struct gw_config *gw_worker_cfg(struct gw_worker *w)
{
    if (__atomic_load_n(&w->next_cfg, __ATOMIC_RELAXED) != NULL)
        return gw_worker_take_cfg(w);
    return w->cfg;
}

/* The loop takes a newer key table (gw_worker_keytab's slow path). */
const struct gw_keytab *gw_worker_take_keytab(struct gw_worker *w);

/* The store's keys new work starts under; on the loop's own thread only. The
 * keysync (first loop) leaves a new table in next_keytab, which the loop takes
 * here, dropping its own reference to the old one, as with configs. Hold it
 * (gw_keytab_hold) for as long as a key of it is used. */
static inline const struct gw_keytab *gw_worker_keytab(struct gw_worker *w)
{
    if (__atomic_load_n(&w->next_keytab, __ATOMIC_RELAXED) != NULL)
        return gw_worker_take_keytab(w);
    return w->keytab;
}

/* A monotonic clock in ms (limits, deadlines). */
int64_t gw_worker_now_ms(void);

/* Worker i (0 <= i < the number of loops), for a caller that runs the loop
 * itself (the whole-path fuzz target) instead of gw_server_run(). */
struct gw_worker *gw_server_worker(struct gw_server *s, unsigned i);

/* Run the loops until SIGTERM/SIGINT has drained them; SIGHUP reloads the
 * configuration (gw_server_reload). Returns 0. */
int gw_server_run(struct gw_server *s);

void gw_server_free(struct gw_server *s);

/*
 * Reload the configuration file: checked first (a bad file is refused with its
 * errors logged, and so is a change that needs a restart: listeners, threads,
 * TLS, the upstream, the store); then every loop starts new requests under the
 * new one, while requests in flight finish under theirs. GW_OK if applied.
 */
int gw_server_reload(struct gw_server *s);

/* The store's options from cfg's [store] (strings borrowed from cfg; log
 * unset): 1, or 0 when cfg has no store (sqlite without a path). */
struct gw_store_options;
int gw_server_store_options(const struct gw_config *cfg, struct gw_store_options *so);

#endif
