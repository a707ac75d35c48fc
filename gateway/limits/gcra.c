/*
 * gcra.c - GCRA rate limit in ticks of 1/rpm ms (see gcra.h).
 *
 * Every quantity below is in ticks unless its name ends in _ms. The ranges that
 * keep the arithmetic exact: |now| <= 2^62 (now_ms clamped, rpm <= 10^5),
 * span = burst * T <= (2^32 - 1) * 60000 < 2^48, and the TAT is brought into
 * [now - T, now + span] before anything is added to it.
 */
#include <stdio.h>

#include "gcra.h"

#define T 60000 /* emission interval: 60000 ms / rpm = 60000 ticks of 1/rpm ms */

/* The bucket as of now, in the caller's rpm. */
struct bucket {
    int64_t rpm;  /* 1..GW_GCRA_RPM_MAX: ticks per ms */
    int64_t now;  /* now_ms * rpm */
    int64_t span; /* burst * T: how far ahead of now the TAT may be after a take */
    int64_t tat;  /* in [now - grace, now + span]: <= now is a full bucket, now + span empty */
};

static int64_t clamp_now_ms(int64_t now_ms)
{
    if (now_ms > GW_GCRA_NOW_MAX_MS)
        return GW_GCRA_NOW_MAX_MS;
    if (now_ms < -GW_GCRA_NOW_MAX_MS)
        return -GW_GCRA_NOW_MAX_MS;
    return now_ms;
}

/* ceil(a / b) for a >= 0, b > 0, without overflow. */
static int64_t ceil_div(int64_t a, int64_t b)
{
    return a / b + (a % b != 0);
}

/* Ticks of the TAT ahead of `now` (both in the same unit), 0 if behind, saturated. */
static int64_t ahead(int64_t tat, int64_t now)
{
    int64_t d;

    if (tat <= now)
        return 0;
    if (__builtin_sub_overflow(tat, now, &d))
        return INT64_MAX;
    return d;
}

/*
 * rpm != 0. Reads the stored state into b, converting it when it was measured in
 * another rpm. Returns 1 if b->tat is not simply the stored TAT (converted or
 * clamped), so that a refusal stores it: otherwise a TAT far ahead would be read
 * as an empty bucket again and again and the key stay refused past its retry-after.
 */
static int load(struct bucket *b, const struct gw_gcra *s, uint32_t rpm, uint32_t burst,
                int64_t now_ms)
{
    int64_t ms = clamp_now_ms(now_ms);
    int64_t old = s->rpm > GW_GCRA_RPM_MAX ? GW_GCRA_RPM_MAX : s->rpm;
    /* A ms clock cannot tell a request that came at the TAT from one that came in the
     * same ms after it: a TAT less than 1 ms (and less than T) behind now is kept, not
     * moved up to now, so a client that asks at the first ms it may keeps the exact
     * schedule, even with burst 1 and a T that is not a whole number of ms. The TAT
     * never moves back, so at most burst + elapsed / T requests are ever allowed. */
    int64_t grace;
    int64_t d;
    int changed = 0;

    b->rpm = rpm > GW_GCRA_RPM_MAX ? GW_GCRA_RPM_MAX : rpm;
    b->now = ms * b->rpm;
    b->span = (int64_t)(burst ? burst : b->rpm) * T;
    grace = (b->rpm < T ? b->rpm : T) - 1;

    if (old == 0) {
        d = 0; /* never used: a full bucket */
    } else if (old == b->rpm) {
        if (s->tat < b->now && s->tat >= b->now - grace)
            d = s->tat - b->now; /* in [-grace, 0) */
        else
            d = ahead(s->tat, b->now);
    } else {
        /* The limit changed: the TAT, a moment, carries over, rounded up to the ms. */
        int64_t d_ms = ceil_div(ahead(s->tat, ms * old), old);

        d = d_ms >= ceil_div(b->span, b->rpm) ? b->span : d_ms * b->rpm;
        changed = 1;
    }
    /* Further ahead than a whole bucket: the clock went back, or the burst shrank. */
    if (d > b->span) {
        d = b->span;
        changed = 1;
    }
    if (s->rpm != b->rpm)
        changed = 1; /* stored above GW_GCRA_RPM_MAX: store it as used */
    b->tat = b->now + d;
    return changed;
}

/* Fill *out for the bucket b: GW_OK if it has room for one more request now, GW_ERR if not. */
static int result(const struct bucket *b, struct gw_gcra_result *out)
{
    int64_t used = b->tat - b->now; /* in (-T, span] */

    out->limit = (uint32_t)b->rpm;
    out->reset_ms = used > 0 ? ceil_div(used, b->rpm) : 0;
    if (used + T <= b->span) {
        /* <= burst, since used > -T */
        out->remaining = (uint32_t)((b->span - used) / T);
        out->retry_after_ms = 0;
        return GW_OK;
    }
    /* refused: one request is allowed once the TAT is within span - T of now */
    out->remaining = 0;
    out->retry_after_ms = ceil_div(used + T - b->span, b->rpm);
    return GW_ERR;
}

static int unlimited(struct gw_gcra_result *out)
{
    out->limit = 0;
    out->remaining = 0;
    out->reset_ms = 0;
    out->retry_after_ms = 0;
    return GW_OK;
}

int gw_gcra_peek(const struct gw_gcra *s, uint32_t rpm, uint32_t burst, int64_t now_ms,
                 struct gw_gcra_result *out)
{
    struct bucket b;

    if (rpm == 0)
        return unlimited(out);
    (void)load(&b, s, rpm, burst, now_ms);
    return result(&b, out);
}

int gw_gcra_take(struct gw_gcra *s, uint32_t rpm, uint32_t burst, int64_t now_ms,
                 struct gw_gcra_result *out)
{
    struct bucket b;
    int changed;

    if (rpm == 0)
        return unlimited(out);
    changed = load(&b, s, rpm, burst, now_ms);
    if (result(&b, out) != GW_OK) {
        if (changed) {
            /* nothing taken: the state is only brought into this rpm and one bucket */
            s->tat = b.tat;
            s->rpm = (uint32_t)b.rpm;
        }
        return GW_ERR;
    }
    b.tat += T;
    s->tat = b.tat;
    s->rpm = (uint32_t)b.rpm;
    /* the bucket with this request in it: one less remaining, a later reset; it may now
     * be empty, which refuses the next request, not this one */
    result(&b, out);
    out->retry_after_ms = 0;
    return GW_OK;
}

size_t gw_gcra_fmt_reset(int64_t ms, char *buf, size_t cap)
{
    char tmp[GW_GCRA_FMT_MAX];
    char frac[5] = "";
    int n;

    if (ms < 0)
        ms = 0;
    if (ms < 1000) {
        n = ms == 0 ? snprintf(tmp, sizeof(tmp), "0s")
                    : snprintf(tmp, sizeof(tmp), "%lldms", (long long)ms);
    } else {
        long long h = ms / 3600000, m = ms / 60000 % 60, sec = ms / 1000 % 60;
        int f = (int)(ms % 1000);

        if (f != 0) {
            /* ".5", ".25", ".005": Go trims the fraction's trailing zeros */
            snprintf(frac, sizeof(frac), ".%03d", f);
            for (size_t i = 3; frac[i] == '0'; i--)
                frac[i] = '\0';
        }
        if (h > 0)
            n = snprintf(tmp, sizeof(tmp), "%lldh%lldm%lld%ss", h, m, sec, frac);
        else if (m > 0)
            n = snprintf(tmp, sizeof(tmp), "%lldm%lld%ss", m, sec, frac);
        else
            n = snprintf(tmp, sizeof(tmp), "%lld%ss", sec, frac);
    }
    if (n < 0 || (size_t)n >= cap) {
        if (cap > 0)
            buf[0] = '\0';
        return 0;
    }
    memcpy(buf, tmp, (size_t)n + 1);
    return (size_t)n;
}

int64_t gw_gcra_retry_after_s(int64_t retry_after_ms)
{
    if (retry_after_ms <= 0)
        return 0;
    return ceil_div(retry_after_ms, 1000);
}
