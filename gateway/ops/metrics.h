/*
 * metrics.h - the gateway's counters, kept per event loop and summed on scrape.
 *
 * Each loop owns one struct gw_m_loop and is the only writer of it: a hook is a
 * few relaxed atomic stores of "value + n" (no read-modify-write, no lock, no
 * allocation but the first time a key is seen on that loop), which compile to
 * plain moves on x86. The scrape (metrics.c, on the admin listener's loop) reads
 * every loop's counters with relaxed atomic loads: a scrape may see one loop a
 * few events ahead of another, never a torn value, and counters only grow.
 *
 * Hooks find their loop through a thread-local pointer (gw_metrics_bind_thread);
 * on a thread without one (the store's thread, tests, the whole-path fuzz
 * target) they do nothing. Per-key series are indexed by the key's limiter slot
 * (struct gw_team_key.slot: one per key name over the process's life), models by
 * an index into a table filled from the catalog at start and on reload.
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stdint.h>

#include "gw.h"

#define GW_M_ROUTES 24                     /* route ids; the last ones are ours: */
#define GW_M_ROUTE_OTHER (GW_M_ROUTES - 2) /* a route id past the table */
#define GW_M_ROUTE_ADMIN (GW_M_ROUTES - 1) /* the admin listener */
#define GW_M_CLASSES 6                     /* status class: none (0), 1xx .. 5xx */
#define GW_M_BUCKETS 18                    /* histogram bounds (metrics.c) */
#define GW_M_STATES 8                      /* exchange states (proxy's enum xstate) */
#define GW_M_MODELS 64                     /* models counted apart; the rest: "other" */
#define GW_M_OPS 24                        /* store operation kinds */
#define GW_M_KCHUNK 16                     /* keys per lazily allocated block */
#define GW_M_NCHUNKS 4096                  /* 65536 key slots, the limiter's maximum */

enum gw_m_limit {
    GW_M_ADMITTED = 0,  /* a create or remix passed the key's rpm and concurrency */
    GW_M_QUEUED,        /* ... and waits for its upstream_rpm slot */
    GW_M_RATE_LIMITED,  /* refused: rpm, burst or concurrency (429) */
    GW_M_UPSTREAM_BUSY, /* refused: upstream_rpm queue full (429) */
    GW_M_QUOTA_EXCEEDED,/* refused: daily_seconds (429 insufficient_quota) */
    GW_M_LIMIT_N,
};

enum gw_m_vs {
    GW_M_VS_RESERVED = 0, /* held for a create before the upstream saw it */
    GW_M_VS_KEPT,         /* the upstream made the job */
    GW_M_VS_RELEASED,     /* no job made: given back at once */
    GW_M_VS_REFUNDED,     /* the job failed later: given back */
    GW_M_VS_N,
};

enum gw_m_up {
    GW_M_UP_OPENED = 0,   /* connections started */
    GW_M_UP_FAILED,       /* connect or TLS handshake failed (each address tried) */
    GW_M_UP_REUSED,       /* leases served by a pooled connection */
    GW_M_UP_N,
};

struct gw_m_hist {
    uint64_t n[GW_M_BUCKETS + 1]; /* per bucket, not cumulative; the last: above all */
    uint64_t sum_us;
};

struct gw_m_key {
    uint64_t req[GW_M_ROUTES][GW_M_CLASSES];
    uint64_t limit[GW_M_LIMIT_N];
    uint64_t vs[GW_M_MODELS + 1][GW_M_VS_N]; /* video-seconds; [GW_M_MODELS]: other */
};

struct gw_m_loop {
    struct gw_m_hist dur[GW_M_ROUTES];   /* head received -> exchange freed */
    struct gw_m_hist head[GW_M_ROUTES];  /* request sent upstream -> response head */
    uint64_t bytes_in[GW_M_ROUTES], bytes_out[GW_M_ROUTES];
    uint64_t inflight[GW_M_STATES];      /* gauges: up and down, summed as signed */
    uint64_t up[GW_M_UP_N];
    uint64_t up_busy, up_idle;           /* gauges */
    uint64_t store_ops[GW_M_OPS][2];     /* [kind][0 ok, 1 error] */
    struct gw_m_hist store_lat;
    struct gw_m_key nokey;               /* requests without a valid team key */
    struct gw_m_key *keys[GW_M_NCHUNKS]; /* written by the owner (release) */
};

/* The calling thread's block, or NULL. */
extern __thread struct gw_m_loop *gw_m_self;

/* Relaxed loads and stores of the counters (see the top comment). */
#define GW_M_ADD(field, v) __atomic_store_n(&(field), (field) + (uint64_t)(v), __ATOMIC_RELAXED)
#define GW_M_SET(field, v) __atomic_store_n(&(field), (uint64_t)(v), __ATOMIC_RELAXED)
#define GW_M_GET(field)    __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* Hooks: on the loop's own thread only. slot < 0: no key. */
void gw_m_request(int route_id, const char *route_name, int status, int64_t slot,
                  uint64_t bytes_in, uint64_t bytes_out, uint64_t dur_us);
void gw_m_up_head(int route_id, uint64_t wait_us);
void gw_m_state(int from, int to);           /* from < 0: a new exchange; to < 0: freed */
void gw_m_up(enum gw_m_up what);
void gw_m_up_busy(int delta);
void gw_m_up_idle(unsigned idle);
void gw_m_limit(int64_t slot, enum gw_m_limit outcome);
void gw_m_vs(int64_t slot, struct gw_str model, enum gw_m_vs outcome, uint64_t seconds);
void gw_m_store(unsigned kind, int ok, uint64_t us);

/* Histogram bounds in seconds: requests (1 ms .. 10 min) and the store (0.1 ms .. 10 s). */
extern const double gw_m_req_bounds[GW_M_BUCKETS];
extern const double gw_m_store_bounds[GW_M_BUCKETS];

/* Route names as seen (static strings of the router), by id; NULL: never seen. */
const char *gw_m_route_name(int i);

/* Models: intern a catalog name (main thread, at start and reload; names are
 * kept for the process's life), find one (any thread), and name index i. */
void gw_m_model_intern(const char *name);
int gw_m_model_find(struct gw_str name);     /* GW_M_MODELS: not interned ("other") */
const char *gw_m_model_name(int i);          /* NULL past the interned ones */

/* The key block of slot on loop l for reading (NULL: nothing counted). */
const struct gw_m_key *gw_m_key_get(struct gw_m_loop *l, int64_t slot);

#endif
