/*
 * limiter.h - the per-key limits of one gateway instance, shared by its event
 * loops: creates per minute (gcra.h), creates in flight, video-seconds per UTC day
 * (quota.h). Exact across threads: each key's state has its own mutex, held for a
 * few additions, never across a call out.
 *
 * A "create" is any request that makes a job upstream (create, remix). A key's
 * state belongs to its name and outlives reloads (gw_limiter_bind).
 */
#ifndef GW_LIMITER_H
#define GW_LIMITER_H

#include <stdint.h>

#include "config.h"
#include "gcra.h"

struct gw_limiter;

/* Bound to cfg (gw_limiter_bind). NULL when out of memory. */
struct gw_limiter *gw_limiter_new(struct gw_config *cfg);

/*
 * Make cfg the current config: each of its keys gets the state of its name (kept
 * from earlier configs, or new), written into the key's slot - so call it before
 * cfg is visible to any other thread. GW_ERR when out of memory.
 */
int gw_limiter_bind(struct gw_limiter *l, struct gw_config *cfg);

/* The same for keys that are not the config's (the store's, keytab.h): each
 * gets the state of its name, shared with a config key of that name. */
int gw_limiter_bind_keys(struct gw_limiter *l, struct gw_team_key *keys, unsigned nkeys);
void gw_limiter_free(struct gw_limiter *l);

/*
 * A create from key k at mono_ms (a monotonic clock): takes one from its rpm
 * and one of its concurrency slots. GW_OK: admitted, *rate filled for the
 * x-ratelimit-* headers (rate->limit 0: the key has no rpm); the slot is owed
 * back with gw_limiter_release(). GW_ERR: refused (nothing taken), err is the
 * 429 rate_limit_exceeded and *retry_after_ms how long to wait.
 */
int gw_limiter_admit(struct gw_limiter *l, const struct gw_team_key *k, int64_t mono_ms,
                     struct gw_gcra_result *rate, int64_t *retry_after_ms,
                     struct gw_error *err);

/*
 * upstream_rpm: a slot towards the upstream for a create, across keys and loops.
 * Creates are spaced 60/upstream_rpm s apart in the order they ask (a scheduler
 * on the same idea as GCRA: each gets the next free instant). GW_OK: the slot is
 * *wait_ms from now (0: at once; it is this create's from then on, whether used
 * or not). GW_ERR: the wait would exceed upstream_queue: 429 in err, nothing taken.
 * upstream_rpm 0: always GW_OK, no wait.
 */
int gw_limiter_upstream_slot(struct gw_limiter *l, int64_t mono_ms, int64_t *wait_ms,
                             struct gw_error *err);

/* The admitted create is over, however it ended. */
void gw_limiter_release(struct gw_limiter *l, const struct gw_team_key *k);

/*
 * Reserve `seconds` of key k's daily video-seconds at unix_ms (wall clock, UTC).
 * GW_OK: reserved, *day is the day to settle against. GW_ERR: the 429
 * insufficient_quota in err, *retry_after_ms until the next UTC midnight.
 * A key without daily_seconds is counted, never refused.
 */
int gw_limiter_reserve(struct gw_limiter *l, const struct gw_team_key *k, uint32_t seconds,
                       int64_t unix_ms, int64_t *day, int64_t *retry_after_ms,
                       struct gw_error *err);

/* At start: key k already spent `seconds` (net of refunds) on UTC day `day`, as
 * the store recorded them, so a restart does not hand out a day's budget twice. */
void gw_limiter_seed(struct gw_limiter *l, const struct gw_team_key *k, int64_t day,
                     uint64_t seconds);

/* The 429 insufficient_quota of a job of `seconds` against a daily budget of
 * `limit` (whichever engine decided it). GW_ERR. */
int gw_limiter_over_budget(uint32_t seconds, uint32_t limit, struct gw_error *err);

/* A job that reserved nothing (an edit, metered by the seconds of the job the
 * upstream made) counts `seconds` of key k's day at unix_ms, whatever the limit:
 * the job exists; later creates see it. */
void gw_limiter_charge(struct gw_limiter *l, const struct gw_team_key *k, uint32_t seconds,
                       int64_t unix_ms);

/* The upstream answered: kept (a job exists) or released (no job). */
void gw_limiter_settle(struct gw_limiter *l, const struct gw_team_key *k, uint32_t seconds,
                       int64_t day, int kept);

/* A job of key k created at created_unix_ms was seen failed: its seconds come back
 * (only on the day it was made; called once per job, the store says which call). */
void gw_limiter_refund(struct gw_limiter *l, const struct gw_team_key *k, uint32_t seconds,
                       int64_t created_unix_ms);

#endif
