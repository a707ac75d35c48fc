/*
 * keypool.h - which upstream key the next request uses. Pure: time is an argument.
 *
 * Round-robin over the configured keys, skipping the ones that are resting:
 * a key the upstream answered 401/403 is taken out for GW_KEYPOOL_OUT_MS (long
 * enough to stop hammering the provider with a revoked key, short enough that a
 * transient auth fault heals without a restart); a key answered 429 rests for
 * its Retry-After. When every key rests, the one that comes back first is used
 * rather than failing the request in the gateway.
 *
 * One pool per event loop (no locks): a key that fails is learnt by each loop
 * on its own, at the cost of one more failed request per loop.
 */
#ifndef GW_KEYPOOL_H
#define GW_KEYPOOL_H

#include <stdint.h>

#include "gw.h"

#define GW_KEYPOOL_MAX     64
#define GW_KEYPOOL_OUT_MS  (5 * 60 * 1000) /* after 401/403 */
#define GW_KEYPOOL_429_MS  1000            /* after 429 without a usable Retry-After */
#define GW_KEYPOOL_REST_MAX_MS (10 * 60 * 1000)

struct gw_keypool {
    unsigned n;                           /* keys (at most GW_KEYPOOL_MAX) */
    unsigned next;                        /* round-robin cursor */
    int64_t rest_until[GW_KEYPOOL_MAX];   /* ms, same clock as now_ms; 0 = available */
    int64_t out_until[GW_KEYPOOL_MAX];    /* ms: refused with 401/403 until then */
};

void gw_keypool_init(struct gw_keypool *kp, unsigned nkeys);

/* Index of the key to use now. */
unsigned gw_keypool_pick(struct gw_keypool *kp, int64_t now_ms);

/* The upstream answered `status` to a request made with key `idx`;
 * `retry_after` is the Retry-After header value ({NULL,0} when absent). */
void gw_keypool_report(struct gw_keypool *kp, unsigned idx, int status, struct gw_str retry_after,
                       int64_t now_ms);

/* 1 while key idx is out: the upstream refused it (401/403) and it has not
 * worked since. Follow-ups pinned to it answer 502 rather than use another. */
int gw_keypool_is_out(const struct gw_keypool *kp, unsigned idx, int64_t now_ms);

#endif
