/*
 * quota.h - daily video-seconds per key, per UTC day. Pure: time is an argument.
 *
 * A create reserves its `seconds` when the field is read; the reservation is
 * settled when the upstream answers: kept for a created job (reserved -> used),
 * released for any error. A job later seen failed is refunded (used -> back).
 * The check counts both what is used and what is in flight, so concurrent
 * creates cannot overshoot the limit together.
 *
 * Days: counters refer to one UTC day (days since 1970-01-01, floor for times
 * before it) and start again at 0 the first time a reservation is made on a
 * later day. A reservation or a job of an earlier day settles and refunds
 * against nothing: its day's counters are gone, and today's must not be
 * lowered by yesterday's jobs. The day only moves forward: if the clock steps
 * back across midnight the counters stay on the later day.
 *
 * Refund once: gw_quota_refund gives back whatever it is told. That a job's
 * seconds are refunded once at most (failed seen twice, by a poll and by the
 * refresher) is the caller's to record, with the job (the store does).
 *
 * limit 0 = unlimited: every reservation is allowed, and still counted, so a
 * limit set by a reload starts from what was really used today.
 */
#ifndef GW_QUOTA_H
#define GW_QUOTA_H

#include <stdint.h>

#include "gw.h"

#define GW_QUOTA_DAY_MS INT64_C(86400000)

/* The state of one key. Zero-initialised: day 0 (1970-01-01), nothing used. */
struct gw_quota {
    int64_t day;       /* UTC day number the counters below refer to */
    uint64_t used;     /* video-seconds of jobs created that day (saturating) */
    uint64_t reserved; /* video-seconds of creates in flight, reserved that day */
};

/*
 * Reserve `amount` video-seconds at now_ms under a daily `limit` (0 = none).
 * GW_OK: reserved; it counts in day q->day (read it now and pass it to settle).
 * GW_ERR: it does not fit (used + reserved + amount > limit), nothing changed,
 * *retry_after_ms = ms until the next UTC midnight (>= 1) - also when amount >
 * limit, which no day will fit: the 429 still needs a Retry-After, the caller
 * words the message (check amount > limit). retry_after_ms may be NULL.
 */
int gw_quota_reserve(struct gw_quota *q, uint32_t limit, uint32_t amount, int64_t now_ms,
                     int64_t *retry_after_ms);

/*
 * The upstream answered a create that reserved `amount` in day `day`: kept
 * (a job was created) moves it to used, otherwise it is released. A day other
 * than q->day settles nothing. Never goes below 0.
 */
void gw_quota_settle(struct gw_quota *q, uint32_t amount, int64_t day, int kept);

/*
 * A job created (settled kept) in day `day` failed: its `amount` is given back,
 * if q->day is still that day. Never goes below 0. Once per job is the caller's
 * to ensure.
 */
void gw_quota_refund(struct gw_quota *q, uint32_t amount, int64_t day);

/* UTC day number of now_ms (ms since the epoch): floor(now_ms / 86400000). */
int64_t gw_quota_day(int64_t now_ms);

/* The first ms of the next UTC day after now_ms; INT64_MAX if that is out of range. */
int64_t gw_quota_next_midnight_ms(int64_t now_ms);

#endif
