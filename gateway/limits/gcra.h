/*
 * gcra.h - "rpm requests per minute, burst at once": the generic cell rate
 * algorithm (GCRA). Pure: time is an argument, nothing here reads a clock.
 *
 * One stored time per key, the theoretical arrival time (TAT): the moment the
 * key's bucket is full again. A request moves it one emission interval
 * T = 60 s / rpm later, and is allowed while that leaves the TAT at most
 * burst * T ahead of now. Remaining, reset and retry-after fall out of the same
 * subtraction. (brandur's redis-cell; nginx limit_req keeps "excess" in
 * milli-requests, the same idea measured the other way.)
 *
 * Units: ticks of 1/rpm ms. Clocks come in as ms and become now_ms * rpm
 * ticks; T is then 60000 ticks for every rpm, exactly. In ms (60000/7) or µs
 * (60,000,000/7) T is not an integer, and the rounding adds up over a saturated
 * chain (at rpm 99,900 a µs clock lets 0.1% too many through). Since the unit
 * depends on rpm, the state records the rpm its TAT was measured with, and a
 * take under another rpm (the config was reloaded) first converts the TAT,
 * rounding up to the next ms: the part of the bucket in use carries over.
 *
 * Limits (docs/decisions.md "Limits"):
 *   rpm   = 0    unlimited: every take is allowed and the state is left alone;
 *                out->limit is 0 (send no x-ratelimit-* headers).
 *   rpm   > GW_GCRA_RPM_MAX behaves as GW_GCRA_RPM_MAX.
 *   burst = 0    means burst = rpm: a fresh key may use its whole minute at once,
 *                which is what "10 per minute" means to a user, then one request
 *                every T. As with any bucket, 60 s that start on a full bucket
 *                can hold burst + rpm - 1 requests; the long-run rate is exactly
 *                rpm per minute.
 *   burst = 1    strict spacing: one request every T, never two at once - and at
 *                a ms clock two in the same ms are at once, so above 60,000 rpm
 *                burst 1 allows one per ms (use burst >= 2 for the full rate).
 *
 * The clock has ms resolution: a request in the first ms at which it may come
 * counts as having come at the TAT itself, so a client that asks as soon as it
 * may gets exactly rpm per minute, with any burst, whatever T is in ms. In any
 * run of time, at most burst + elapsed / T requests are allowed.
 *
 * Time outside +-GW_GCRA_NOW_MAX_MS (year 3431 either side of the epoch) is
 * clamped to it, so no input overflows; beyond it the clock stands still. A TAT
 * further ahead than one whole bucket (the clock stepped back, burst was
 * lowered on reload, a corrupted store) is read as an empty bucket: the key is
 * at its limit, and its retry-after holds, never locked out for longer. A zero
 * state is a full bucket.
 */
#ifndef GW_GCRA_H
#define GW_GCRA_H

#include <stddef.h>
#include <stdint.h>

#include "gw.h"

#define GW_GCRA_RPM_MAX    100000u                             /* 1666 per second */
#define GW_GCRA_NOW_MAX_MS ((INT64_C(1) << 62) / GW_GCRA_RPM_MAX) /* |now_ms| clamped to this */
#define GW_GCRA_FMT_MAX    32 /* gw_gcra_fmt_reset: every value fits, NUL included */

/* The state of one key. Zero-initialised = a full bucket. */
struct gw_gcra {
    int64_t tat;  /* ticks of 1/rpm ms since the epoch of now_ms: when the bucket is full */
    uint32_t rpm; /* the rpm tat is measured in; 0 = never used */
};

/* What a decision means for the answer's headers. */
struct gw_gcra_result {
    uint32_t limit;         /* = rpm (at most GW_GCRA_RPM_MAX): x-ratelimit-limit-requests;
                               0: unlimited, send no x-ratelimit-* headers */
    uint32_t remaining;     /* requests still allowed right now, after this one if it was
                               taken: x-ratelimit-remaining-requests */
    int64_t reset_ms;       /* until the bucket is full again, rounded up:
                               x-ratelimit-reset-requests (gw_gcra_fmt_reset) */
    int64_t retry_after_ms; /* refused: until one request is allowed, rounded up, >= 1:
                               retry-after-ms, and Retry-After (gw_gcra_retry_after_s).
                               0 when allowed. */
};

/*
 * Take one request for a key limited to rpm per minute with `burst` at once, at
 * now_ms. Returns GW_OK: allowed, the state advanced; GW_ERR: refused (429
 * rate_limit_exceeded), nothing taken - the state is left as it was, unless it
 * had to be read differently (a TAT more than a bucket ahead, or measured in
 * another rpm): then it is stored as read, which takes nothing either. Fills
 * *out either way. Asking again exactly out->retry_after_ms later is allowed
 * (if nothing else took in between); 1 ms sooner is not.
 */
int gw_gcra_take(struct gw_gcra *s, uint32_t rpm, uint32_t burst, int64_t now_ms,
                 struct gw_gcra_result *out);

/*
 * The same decision without taking: GW_OK if a request would be allowed now,
 * GW_ERR if not; *out describes the bucket as it is (remaining without this
 * request), for the headers of answers that do not consume the limit.
 */
int gw_gcra_peek(const struct gw_gcra *s, uint32_t rpm, uint32_t burst, int64_t now_ms,
                 struct gw_gcra_result *out);

/*
 * A duration in OpenAI's x-ratelimit-reset-* format, which is Go's
 * time.Duration string at ms precision: "0s", "6ms", "999ms", "1s", "1.5s",
 * "59.001s", "1m0s", "6m0s", "1m30.25s", "1h0m0s", "2h3m4.005s". A negative ms
 * writes "0s". buf gets a NUL-terminated string; returns its length (without
 * the NUL), or 0 and buf[0] = '\0' (if cap > 0) when cap is too small.
 * GW_GCRA_FMT_MAX bytes are always enough.
 */
size_t gw_gcra_fmt_reset(int64_t ms, char *buf, size_t cap);

/*
 * Retry-After in whole seconds, rounded up: 1 ms -> 1, 1000 -> 1, 1001 -> 2.
 * Never 0 for a refusal (whose retry_after_ms is >= 1); 0 only for <= 0.
 * gw_quota's refusals use it too, so every 429 rounds the same way.
 */
int64_t gw_gcra_retry_after_s(int64_t retry_after_ms);

#endif
