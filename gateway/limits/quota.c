/*
 * quota.c - daily video-seconds per UTC day (see quota.h).
 */
#include "quota.h"

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t floor_sub(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

int64_t gw_quota_day(int64_t now_ms)
{
    int64_t d = now_ms / GW_QUOTA_DAY_MS;

    /* C division truncates towards 0; days before the epoch round down */
    if (now_ms % GW_QUOTA_DAY_MS < 0)
        d--;
    return d;
}

/* The first ms after UTC day `day`; INT64_MAX past the last representable one. */
static int64_t day_end_ms(int64_t day)
{
    if (day >= INT64_MAX / GW_QUOTA_DAY_MS)
        return INT64_MAX;
    if (day < INT64_MIN / GW_QUOTA_DAY_MS - 1) /* (day + 1) * DAY_MS < INT64_MIN */
        return INT64_MIN;
    return (day + 1) * GW_QUOTA_DAY_MS;
}

int64_t gw_quota_next_midnight_ms(int64_t now_ms)
{
    return day_end_ms(gw_quota_day(now_ms));
}

int gw_quota_reserve(struct gw_quota *q, uint32_t limit, uint32_t amount, int64_t now_ms,
                     int64_t *retry_after_ms)
{
    int64_t day = gw_quota_day(now_ms);

    if (day > q->day) {
        /* a new day: yesterday's in-flight creates settle against nothing */
        q->day = day;
        q->used = 0;
        q->reserved = 0;
    }
    if (limit != 0 && sat_add(sat_add(q->used, q->reserved), amount) > limit) {
        if (retry_after_ms != NULL) {
            /* until the counters start again: the end of q->day, which is today's
             * midnight unless the clock stepped back across one */
            int64_t wait;

            if (__builtin_sub_overflow(day_end_ms(q->day), now_ms, &wait))
                wait = INT64_MAX;
            /* >= 1: a refusal always says to wait (0 only at now_ms = INT64_MAX) */
            *retry_after_ms = wait > 0 ? wait : 1;
        }
        return GW_ERR;
    }
    q->reserved = sat_add(q->reserved, amount);
    if (retry_after_ms != NULL)
        *retry_after_ms = 0;
    return GW_OK;
}

void gw_quota_settle(struct gw_quota *q, uint32_t amount, int64_t day, int kept)
{
    if (day != q->day)
        return;
    q->reserved = floor_sub(q->reserved, amount);
    if (kept)
        q->used = sat_add(q->used, amount);
}

void gw_quota_refund(struct gw_quota *q, uint32_t amount, int64_t day)
{
    if (day != q->day)
        return;
    q->used = floor_sub(q->used, amount);
}
