/*
 * redis_limits.h - per-key limits shared by every gateway instance on one Redis
 * (issue 7): one Lua script per decision, on the loop's own Redis connection
 * (the store's: store/store.h gw_store_script), so it answers later, like any
 * other I/O (proxy/admit.c holds the request meanwhile).
 *
 *   rpm          GCRA with the theoretical arrival time stored in Redis, in
 *                gcra.c's ticks (1/rpm ms) and on Redis's clock (TIME), so every
 *                instance sees one bucket per key;
 *   concurrency  a slot is a lease: a member of a sorted set scored by its expiry
 *                (Redis's clock + GW_RLIMITS_LEASE_MS), renewed while the exchange
 *                lives and removed when it ends; an instance that dies (kill -9)
 *                holds a key's slots at most one lease longer.
 *
 *   daily_seconds  reserved in P quota:{day} (a hash of key -> seconds) by one
 *                script that checks and adds, given back when no job came of
 *                it (and when a job failed: the refund, counted once by the store).
 *
 *   upstream_rpm   the next free instant towards the upstream, in the same
 *                script as the key's decision (one round trip).
 */
#ifndef GW_REDIS_LIMITS_H
#define GW_REDIS_LIMITS_H

#include <stdint.h>

#include "config.h"
#include "gcra.h"
#include "store/store.h"

struct event_base;

#define GW_RLIMITS_LEASE_MS 10000 /* a concurrency slot outlives its instance this long */
#define GW_RLIMITS_RENEW_MS 3000  /* ... and is renewed this often while it is held */
#define GW_RLIMITS_LOOPS_MAX 64   /* = [server] threads' bound */

enum gw_rlimits_status {
    GW_RLIMITS_ADMITTED = 0,
    GW_RLIMITS_CONCURRENCY, /* all the key's slots are held */
    GW_RLIMITS_RATE,        /* the key's rpm is used up */
    GW_RLIMITS_UPSTREAM,    /* upstream_rpm: the wait would exceed upstream_queue */
    GW_RLIMITS_QUOTA,       /* the key's daily_seconds (gw_rlimits_admit_reserve only) */
};

struct gw_rlimits_decision {
    enum gw_rlimits_status status;
    int64_t retry_after_ms;      /* refused: how long to wait */
    struct gw_gcra_result rate;  /* the key's bucket after the decision (limit 0: no rpm) */
    int64_t wait_ms;             /* admitted: the upstream slot is this far ahead */
};

/* A lease id unique across instances and time, into id[48]. */
void gw_rlimits_lease_id(char id[48]);

/*
 * One decision for a create of key k: concurrency first (a refused create must
 * not use up a request of the minute), then rpm, then the upstream's pace
 * (upstream_rpm, 0: none; shared by every key and instance: creates are spaced
 * 60/upstream_rpm s apart, a create that would wait longer than
 * upstream_queue_ms is refused). Admitted takes one of each (the slot under
 * lease_id; "" when the key has no concurrency limit); refused takes nothing.
 * The store's contract: GW_AGAIN and cb later with res (decode it), or GW_ERR
 * with err (503).
 */
int gw_rlimits_admit(struct gw_store_loop *l, const struct gw_team_key *k,
                     const char *lease_id, int upstream_rpm, int upstream_queue_ms,
                     gw_store_cb cb, void *arg, struct gw_store_op **op, struct gw_error *err);

/*
 * The same decision and, in the same script, the reservation of secs of the
 * key's daily budget (k->limits.daily_seconds) on UTC day `day`: a create whose
 * `seconds` is known when it is decided (a JSON create, at the body's end) has
 * one round trip before the upstream instead of two. Refused (any limit) takes
 * nothing; GW_RLIMITS_QUOTA is checked after the key's rpm and before
 * upstream_rpm. day < 0: no reservation (= gw_rlimits_admit).
 */
int gw_rlimits_admit_reserve(struct gw_store_loop *l, const struct gw_team_key *k,
                             const char *lease_id, int upstream_rpm, int upstream_queue_ms,
                             int64_t day, uint32_t secs, gw_store_cb cb, void *arg,
                             struct gw_store_op **op, struct gw_error *err);

/* res of gw_rlimits_admit (or _admit_reserve) into d. GW_OK, or GW_ERR (a malformed reply). */
int gw_rlimits_decode(const struct gw_store_res *res, struct gw_rlimits_decision *d);

/*
 * Reserve secs of key_name's daily budget (limit; 0: counted, never refused) on
 * UTC day `day` (days since the epoch). cb's res->ints[0]: 0 reserved, 1 over
 * the budget. The store's contract (GW_AGAIN, or GW_ERR with err).
 */
int gw_rlimits_reserve(struct gw_store_loop *l, const char *key_name, int64_t day,
                       uint32_t secs, uint32_t limit, gw_store_cb cb, void *arg,
                       struct gw_store_op **op, struct gw_error *err);

/* Give secs of day back (no job came of the reservation, or a refund); fire and forget. */
void gw_rlimits_unreserve(struct gw_store_loop *l, const char *key_name, int64_t day,
                          uint32_t secs);

/* A held slot (or, with an empty id, only the mark of a decision made by Redis). */
struct gw_lease;

/*
 * The exchange holds the slot lease_id of key_name: renewed every
 * GW_RLIMITS_RENEW_MS on loop loop_id (its thread only) until released. NULL
 * when out of memory (the slot then expires by itself).
 */
struct gw_lease *gw_rlimits_hold(unsigned loop_id, struct gw_store_loop *l,
                                 struct event_base *base, const char *key_name,
                                 const char *lease_id);

/* A mark for a decision put off to the body's end (proxy/admit.c): it holds
 * nothing (released, it sends nothing) until the decision replaces it. NULL:
 * out of memory. */
struct gw_lease *gw_rlimits_defer(void);
int gw_rlimits_deferred(const struct gw_lease *lease);

/* 1 when lease holds a slot (renewed by this loop): *key and *id name it, for a
 * write that gives it back in its own script (the job's put: store.h gw_job). */
int gw_rlimits_slot(const struct gw_lease *lease, const char **key, const char **id);

/* That write was acknowledged: the slot is free in Redis. No longer renewed; the
 * release at the exchange's end then sends nothing. */
void gw_rlimits_forget(struct gw_lease *lease);

/* The exchange is over: the slot is given back (fire and forget) and lease freed. */
void gw_rlimits_release(struct gw_lease *lease);

/* Give back a slot taken for an exchange that went away before the decision
 * arrived (no gw_lease was made for it). */
void gw_rlimits_release_id(struct gw_store_loop *l, const char *key_name, const char *lease_id);

#endif
