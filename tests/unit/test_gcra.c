/*
 * test_gcra.c - the GCRA rate limit with a fake clock: burst, steady rate,
 * exact retry-after, remaining/reset, rpm changes, int64 extremes, and the
 * OpenAI header formats.
 *
 * The clock is a plain int64 of ms; every expected value is computed from the
 * definition ("b at once, then the k-th more at k * 60000 / rpm ms"), never from
 * the implementation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gcra.h"

/* ceil(a / b), a >= 0 */
static int64_t up(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

static void assert_result(const struct gw_gcra_result *r, uint32_t limit, uint32_t remaining,
                          int64_t reset_ms, int64_t retry_after_ms)
{
    assert_int_equal(r->limit, limit);
    assert_int_equal(r->remaining, remaining);
    assert_int_equal(r->reset_ms, reset_ms);
    assert_int_equal(r->retry_after_ms, retry_after_ms);
}

static void test_burst_then_refusal(void **state)
{
    struct gw_gcra s = { 0 }, before;
    struct gw_gcra_result r;
    const int64_t t0 = 1735689600000; /* 2025-01-01, a real clock */

    /* 10 per minute, 3 at once: T = 6 s */
    assert_int_equal(gw_gcra_take(&s, 10, 3, t0, &r), GW_OK);
    assert_result(&r, 10, 2, 6000, 0);
    assert_int_equal(gw_gcra_take(&s, 10, 3, t0, &r), GW_OK);
    assert_result(&r, 10, 1, 12000, 0);
    assert_int_equal(gw_gcra_take(&s, 10, 3, t0, &r), GW_OK);
    assert_result(&r, 10, 0, 18000, 0);
    /* the fourth at once is refused, and the state is left as it was */
    before = s;
    assert_int_equal(gw_gcra_take(&s, 10, 3, t0, &r), GW_ERR);
    assert_result(&r, 10, 0, 18000, 6000);
    assert_memory_equal(&s, &before, sizeof(s));
    /* refusals do not push the next allowed moment further */
    for (int i = 0; i < 100; i++)
        assert_int_equal(gw_gcra_take(&s, 10, 3, t0 + 5999, &r), GW_ERR);
    assert_result(&r, 10, 0, 12001, 1);
    assert_int_equal(gw_gcra_take(&s, 10, 3, t0 + 6000, &r), GW_OK);
    assert_result(&r, 10, 0, 18000, 0);
}

/* Hammer the limiter every ms (as many takes as it allows) and check that by
 * each ms t exactly burst + floor(t * rpm / 60000) were allowed: the burst at
 * once, then one more at each k * 60000 / rpm ms, with no drift however long. */
static void steady_rate(uint32_t rpm, uint32_t burst, int64_t minutes)
{
    struct gw_gcra s = { 0 };
    struct gw_gcra_result r;
    const int64_t t0 = 1735689600123;
    int64_t b = burst ? burst : rpm;
    int64_t count = 0;

    for (int64_t t = 0; t <= minutes * 60000; t++) {
        while (gw_gcra_take(&s, rpm, burst, t0 + t, &r) == GW_OK) {
            count++;
            assert_true(count <= b + t * rpm / 60000);
        }
        assert_int_equal(count, b + t * rpm / 60000);
        /* refused: retry_after is exactly until the next one, (count - b + 1) * T */
        assert_int_equal(r.retry_after_ms, up((count - b + 1) * 60000, rpm) - t);
        assert_int_equal(r.remaining, 0);
    }
    /* rpm per minute, exactly, every minute after the first burst */
    assert_int_equal(count, b + minutes * rpm);
}

static void test_steady_rate_exact(void **state)
{
    steady_rate(10, 3, 5);
    steady_rate(7, 1, 10); /* T = 8571.43 ms: not an integer in ms or in µs */
    steady_rate(7, 0, 10);
    steady_rate(60, 0, 5);
    steady_rate(1, 1, 10);
    steady_rate(1, 0, 10);
}

static void test_steady_rate_high_rpm(void **state)
{
    steady_rate(100000, 2, 3); /* T = 0.6 ms: two in some ms, one in others */
    steady_rate(100000, 0, 3);
    steady_rate(99900, 50, 3); /* T = 600.6 µs: a µs clock would let 0.1% more through */
    steady_rate(59999, 1, 3); /* T just over 1 ms: the 1 ms grace is what keeps the pace */
}

/* A client that waits exactly the retry_after it was told: allowed every time,
 * and 1 ms sooner is always refused. */
static void polite_client(uint32_t rpm, uint32_t burst, int requests)
{
    struct gw_gcra s = { 0 }, before;
    struct gw_gcra_result r;
    const int64_t t0 = 86400000 - 7;
    int64_t b = burst ? burst : rpm;
    int64_t t = t0;

    for (int64_t k = 0; k < requests; k++) {
        /* request k is due once the (k - b + 1)-th refill is */
        int64_t due = k < b ? t0 : t0 + up((k - b + 1) * 60000, rpm);

        if (gw_gcra_take(&s, rpm, burst, t, &r) == GW_OK) {
            assert_true(t >= due);
            continue;
        }
        assert_true(t < due);
        assert_true(r.retry_after_ms >= 1);
        assert_int_equal(t + r.retry_after_ms, due);
        before = s;
        if (r.retry_after_ms > 1) {
            int64_t wait = r.retry_after_ms;
            assert_int_equal(gw_gcra_take(&s, rpm, burst, t + wait - 1, &r), GW_ERR);
            assert_int_equal(r.retry_after_ms, 1);
            assert_memory_equal(&s, &before, sizeof(s));
            r.retry_after_ms = wait;
        }
        t += r.retry_after_ms;
        assert_int_equal(gw_gcra_take(&s, rpm, burst, t, &r), GW_OK);
        assert_int_equal(r.retry_after_ms, 0);
    }
}

static void test_retry_after_exact(void **state)
{
    polite_client(10, 3, 50);
    polite_client(7, 1, 50);
    polite_client(7, 2, 50);
    polite_client(1, 1, 10);
    polite_client(1, 0, 10);
    polite_client(3, 0, 30);
    polite_client(100000, 2, 1000);
    polite_client(99900, 10, 1000);
    polite_client(59999, 1, 1000); /* T = 1.0000167 ms */
}

static void test_rpm_1(void **state)
{
    struct gw_gcra s = { 0 };
    struct gw_gcra_result r;

    assert_int_equal(gw_gcra_take(&s, 1, 0, 0, &r), GW_OK);
    assert_result(&r, 1, 0, 60000, 0);
    assert_int_equal(gw_gcra_take(&s, 1, 0, 1, &r), GW_ERR);
    assert_result(&r, 1, 0, 59999, 59999);
    assert_int_equal(gw_gcra_take(&s, 1, 0, 59999, &r), GW_ERR);
    assert_result(&r, 1, 0, 1, 1);
    assert_int_equal(gw_gcra_take(&s, 1, 0, 60000, &r), GW_OK);
    assert_result(&r, 1, 0, 60000, 0);
}

static void test_rpm_100000(void **state)
{
    struct gw_gcra s = { 0 };
    struct gw_gcra_result r;

    /* T = 0.6 ms, burst 1: never two at once, and two in the same ms are at once */
    for (int64_t t = 0; t < 1000; t++) {
        assert_int_equal(gw_gcra_take(&s, 100000, 1, t, &r), GW_OK);
        assert_int_equal(r.remaining, 0);
        assert_int_equal(r.reset_ms, 1); /* full again within the next ms */
        assert_int_equal(gw_gcra_take(&s, 100000, 1, t, &r), GW_ERR);
        assert_result(&r, 100000, 0, 1, 1);
    }
    /* burst 2: the full rate, 5 every 3 ms (at 0, 0.6, 1.2, 1.8, 2.4) */
    s = (struct gw_gcra){ 0 };
    assert_int_equal(gw_gcra_take(&s, 100000, 2, 0, &r), GW_OK);  /* the burst */
    assert_int_equal(gw_gcra_take(&s, 100000, 2, 0, &r), GW_OK);
    assert_result(&r, 100000, 0, 2, 0); /* 1.2 ms until full: rounded up */
    assert_int_equal(gw_gcra_take(&s, 100000, 2, 0, &r), GW_ERR);
    assert_int_equal(gw_gcra_take(&s, 100000, 2, 1, &r), GW_OK);  /* 0.6 */
    assert_int_equal(gw_gcra_take(&s, 100000, 2, 1, &r), GW_ERR); /* 1.2 */
    assert_int_equal(r.retry_after_ms, 1);
    assert_int_equal(gw_gcra_take(&s, 100000, 2, 2, &r), GW_OK);  /* 1.2 */
    assert_int_equal(gw_gcra_take(&s, 100000, 2, 2, &r), GW_OK);  /* 1.8 */
    assert_int_equal(gw_gcra_take(&s, 100000, 2, 2, &r), GW_ERR); /* 2.4 */
    assert_int_equal(gw_gcra_take(&s, 100000, 2, 3, &r), GW_OK);  /* 2.4 */
    assert_int_equal(gw_gcra_take(&s, 100000, 2, 3, &r), GW_OK);  /* 3.0 */
    assert_int_equal(gw_gcra_take(&s, 100000, 2, 3, &r), GW_ERR);
    /* burst 0 = 100000 at once */
    s = (struct gw_gcra){ 0 };
    for (int i = 0; i < 100000; i++) {
        assert_int_equal(gw_gcra_take(&s, 100000, 0, 5, &r), GW_OK);
        assert_int_equal(r.remaining, 100000 - 1 - i);
    }
    assert_result(&r, 100000, 0, 60000, 0);
    assert_int_equal(gw_gcra_take(&s, 100000, 0, 5, &r), GW_ERR);
    assert_result(&r, 100000, 0, 60000, 1);
}

static void test_remaining_and_reset(void **state)
{
    struct gw_gcra s = { 0 };
    struct gw_gcra_result r;

    /* 60 per minute, burst 0 = 60 at once: T = 1 s */
    for (uint32_t i = 0; i < 60; i++) {
        assert_int_equal(gw_gcra_take(&s, 60, 0, 1000000, &r), GW_OK);
        assert_result(&r, 60, 59 - i, 1000 * (i + 1), 0);
    }
    assert_int_equal(gw_gcra_take(&s, 60, 0, 1000000, &r), GW_ERR);
    assert_result(&r, 60, 0, 60000, 1000);
    /* 2.5 s later: 2 back (the third at 3 s), full in 57.5 s */
    assert_int_equal(gw_gcra_peek(&s, 60, 0, 1002500, &r), GW_OK);
    assert_result(&r, 60, 2, 57500, 0);
    assert_int_equal(gw_gcra_take(&s, 60, 0, 1002500, &r), GW_OK);
    assert_result(&r, 60, 1, 58500, 0);
    /* a full minute after the last take: full again */
    assert_int_equal(gw_gcra_peek(&s, 60, 0, 1002500 + 58500, &r), GW_OK);
    assert_result(&r, 60, 60, 0, 0);
    assert_int_equal(gw_gcra_peek(&s, 60, 0, 1002500 + 58499, &r), GW_OK);
    assert_result(&r, 60, 59, 1, 0);
}

static void test_burst_zero_is_rpm(void **state)
{
    struct gw_gcra a = { 0 }, b = { 0 };
    struct gw_gcra_result ra, rb;

    for (int i = 0; i < 12; i++) {
        int rc = gw_gcra_take(&a, 10, 0, 500, &ra);
        assert_int_equal(rc, gw_gcra_take(&b, 10, 10, 500, &rb));
        assert_int_equal(rc, i < 10 ? GW_OK : GW_ERR);
        assert_memory_equal(&ra, &rb, sizeof(ra));
        assert_memory_equal(&a, &b, sizeof(a));
    }
}

static void test_burst_one_is_strict_spacing(void **state)
{
    struct gw_gcra s = { 0 };
    struct gw_gcra_result r;

    /* 10 per minute, 1 at once: exactly one every 6 s, from the first */
    for (int64_t k = 0; k < 20; k++) {
        assert_int_equal(gw_gcra_take(&s, 10, 1, k * 6000, &r), GW_OK);
        assert_result(&r, 10, 0, 6000, 0);
        assert_int_equal(gw_gcra_take(&s, 10, 1, k * 6000, &r), GW_ERR);
        assert_result(&r, 10, 0, 6000, 6000);
        assert_int_equal(gw_gcra_take(&s, 10, 1, k * 6000 + 5999, &r), GW_ERR);
        assert_result(&r, 10, 0, 1, 1);
    }
}

static void test_burst_above_rpm(void **state)
{
    struct gw_gcra s = { 0 };
    struct gw_gcra_result r;

    for (uint32_t i = 0; i < 20; i++) {
        assert_int_equal(gw_gcra_take(&s, 10, 20, 0, &r), GW_OK);
        assert_int_equal(r.remaining, 19 - i);
    }
    assert_int_equal(gw_gcra_take(&s, 10, 20, 0, &r), GW_ERR);
    assert_result(&r, 10, 0, 120000, 6000);
}

static void test_unlimited(void **state)
{
    struct gw_gcra s = { 12345, 10 }, before = s;
    struct gw_gcra_result r;

    for (int i = 0; i < 1000; i++) {
        assert_int_equal(gw_gcra_take(&s, 0, 3, 0, &r), GW_OK);
        assert_result(&r, 0, 0, 0, 0);
    }
    assert_int_equal(gw_gcra_peek(&s, 0, 0, INT64_MIN, &r), GW_OK);
    assert_result(&r, 0, 0, 0, 0);
    assert_memory_equal(&s, &before, sizeof(s));
}

static void test_peek_does_not_take(void **state)
{
    struct gw_gcra s = { 0 }, before;
    struct gw_gcra_result r, p;

    assert_int_equal(gw_gcra_peek(&s, 10, 3, 0, &p), GW_OK);
    assert_result(&p, 10, 3, 0, 0);
    for (int i = 0; i < 3; i++) {
        before = s;
        for (int j = 0; j < 5; j++)
            assert_int_equal(gw_gcra_peek(&s, 10, 3, 0, &p), GW_OK);
        assert_memory_equal(&s, &before, sizeof(s));
        assert_int_equal(p.remaining, 3 - i);
        assert_int_equal(gw_gcra_take(&s, 10, 3, 0, &r), GW_OK);
        assert_int_equal(r.remaining, 2 - i);
    }
    /* refused: peek says what take would */
    assert_int_equal(gw_gcra_peek(&s, 10, 3, 1000, &p), GW_ERR);
    assert_int_equal(gw_gcra_take(&s, 10, 3, 1000, &r), GW_ERR);
    assert_memory_equal(&p, &r, sizeof(p));
    assert_result(&p, 10, 0, 17000, 5000);
}

static void test_large_time_jumps(void **state)
{
    struct gw_gcra s = { 0 };
    struct gw_gcra_result r;
    const int64_t t0 = 1735689600000, ten_years = INT64_C(10) * 365 * 86400000;

    for (int i = 0; i < 3; i++)
        assert_int_equal(gw_gcra_take(&s, 10, 3, t0, &r), GW_OK);
    assert_int_equal(gw_gcra_take(&s, 10, 3, t0, &r), GW_ERR);
    /* ten years on: a full bucket, not a credit of ten years */
    for (int i = 0; i < 3; i++)
        assert_int_equal(gw_gcra_take(&s, 10, 3, t0 + ten_years, &r), GW_OK);
    assert_result(&r, 10, 0, 18000, 0);
    assert_int_equal(gw_gcra_take(&s, 10, 3, t0 + ten_years, &r), GW_ERR);
    assert_result(&r, 10, 0, 18000, 6000);
    /* the clock steps back an hour: the key is at its limit, not locked out an hour,
     * and the retry-after it is told holds */
    assert_int_equal(gw_gcra_take(&s, 10, 3, t0 + ten_years - 3600000, &r), GW_ERR);
    assert_result(&r, 10, 0, 18000, 6000);
    assert_int_equal(gw_gcra_take(&s, 10, 3, t0 + ten_years - 3600000 + 5999, &r), GW_ERR);
    assert_result(&r, 10, 0, 12001, 1);
    assert_int_equal(gw_gcra_take(&s, 10, 3, t0 + ten_years - 3600000 + 6000, &r), GW_OK);
    assert_result(&r, 10, 0, 18000, 0);
    assert_int_equal(gw_gcra_take(&s, 10, 3, t0 + ten_years - 3600000 + 6000, &r), GW_ERR);
    assert_result(&r, 10, 0, 18000, 6000);
    /* and forward again by the hour: that hour has passed, the bucket is full */
    for (int i = 0; i < 3; i++)
        assert_int_equal(gw_gcra_take(&s, 10, 3, t0 + ten_years, &r), GW_OK);
    assert_int_equal(gw_gcra_take(&s, 10, 3, t0 + ten_years, &r), GW_ERR);
    /* a clock before the epoch works the same */
    s = (struct gw_gcra){ 0 };
    assert_int_equal(gw_gcra_take(&s, 10, 1, -t0, &r), GW_OK);
    assert_int_equal(gw_gcra_take(&s, 10, 1, -t0 + 5999, &r), GW_ERR);
    assert_int_equal(r.retry_after_ms, 1);
    assert_int_equal(gw_gcra_take(&s, 10, 1, -t0 + 6000, &r), GW_OK);
}

static void test_int64_extremes(void **state)
{
    struct gw_gcra s, before;
    struct gw_gcra_result r;
    const int64_t times[] = { INT64_MIN, INT64_MIN + 1, -GW_GCRA_NOW_MAX_MS - 1, -1, 0, 1,
                              GW_GCRA_NOW_MAX_MS + 1, INT64_MAX - 1, INT64_MAX };
    const int64_t tats[] = { INT64_MIN, -1, 0, 1, INT64_MAX };
    const uint32_t rpms[] = { 1, 7, 10, 100000, UINT32_MAX };

    /* a fresh key at any time: the burst, then a refusal of exactly T */
    for (size_t i = 0; i < GW_ARRAY_LEN(times); i++) {
        s = (struct gw_gcra){ 0 };
        for (int k = 0; k < 3; k++)
            assert_int_equal(gw_gcra_take(&s, 10, 3, times[i], &r), GW_OK);
        assert_result(&r, 10, 0, 18000, 0);
        assert_int_equal(gw_gcra_take(&s, 10, 3, times[i], &r), GW_ERR);
        assert_result(&r, 10, 0, 18000, 6000);
    }
    /* any stored state (measured in any rpm), any clock, any rpm: a TAT far ahead is
     * an empty bucket (retry after at most T), far behind a full one, and a refusal's
     * retry-after holds */
    for (size_t i = 0; i < GW_ARRAY_LEN(times); i++) {
        for (size_t j = 0; j < GW_ARRAY_LEN(tats); j++) {
            for (size_t k = 0; k < GW_ARRAY_LEN(rpms); k++) {
                for (size_t m = 0; m < GW_ARRAY_LEN(rpms); m++) {
                    int64_t rpm = rpms[m] > 100000 ? 100000 : rpms[m];
                    int64_t wait;
                    int rc;

                    s = (struct gw_gcra){ tats[j], rpms[k] };
                    rc = gw_gcra_take(&s, rpms[m], 1, times[i], &r);
                    assert_int_equal(r.limit, rpm);
                    assert_int_equal(r.remaining, 0);
                    assert_true(r.reset_ms >= 1);
                    assert_true(r.reset_ms <= up(60000, rpm));
                    if (rc == GW_OK) {
                        assert_int_equal(r.retry_after_ms, 0);
                        continue;
                    }
                    assert_int_equal(rc, GW_ERR);
                    assert_true(r.retry_after_ms >= 1);
                    assert_int_equal(r.retry_after_ms, r.reset_ms);
                    /* asked again: the same answer (nothing was taken) */
                    before = s;
                    wait = r.retry_after_ms;
                    assert_int_equal(gw_gcra_take(&s, rpms[m], 1, times[i], &r), GW_ERR);
                    assert_int_equal(r.retry_after_ms, wait);
                    assert_memory_equal(&s, &before, sizeof(s));
                    /* where the clock still moves, waiting is enough */
                    if (times[i] > -GW_GCRA_NOW_MAX_MS && times[i] < GW_GCRA_NOW_MAX_MS - wait) {
                        assert_int_equal(
                            gw_gcra_take(&s, rpms[m], 1, times[i] + wait - 1, &r), GW_ERR);
                        assert_int_equal(
                            gw_gcra_take(&s, rpms[m], 1, times[i] + wait, &r), GW_OK);
                    }
                }
            }
        }
    }
    /* the largest burst at the largest rate */
    s = (struct gw_gcra){ 0 };
    assert_int_equal(gw_gcra_take(&s, UINT32_MAX, UINT32_MAX, INT64_MAX, &r), GW_OK);
    assert_result(&r, 100000, UINT32_MAX - 1, 1, 0);
    s = (struct gw_gcra){ 0 };
    assert_int_equal(gw_gcra_take(&s, 1, UINT32_MAX, INT64_MIN, &r), GW_OK);
    assert_result(&r, 1, UINT32_MAX - 1, 60000, 0);
    assert_int_equal(gw_gcra_peek(&s, 1, UINT32_MAX, INT64_MAX, &r), GW_OK);
    assert_result(&r, 1, UINT32_MAX, 0, 0);
}

static void test_rpm_change_carries_over(void **state)
{
    struct gw_gcra s = { 0 };
    struct gw_gcra_result r;

    /* 5 of 10 per minute used at once: the bucket is full again 30 s later */
    for (int i = 0; i < 5; i++)
        assert_int_equal(gw_gcra_take(&s, 10, 10, 0, &r), GW_OK);
    assert_result(&r, 10, 5, 30000, 0);
    /* reloaded as 20 per minute: still full 30 s later, i.e. 10 of 20 in use */
    assert_int_equal(gw_gcra_peek(&s, 20, 20, 0, &r), GW_OK);
    assert_result(&r, 20, 10, 30000, 0);
    assert_int_equal(gw_gcra_take(&s, 20, 20, 0, &r), GW_OK);
    assert_result(&r, 20, 9, 33000, 0);
    /* lowered to 10 per minute, 3 at once: at its limit, not locked out for 33 s */
    assert_int_equal(gw_gcra_take(&s, 10, 3, 0, &r), GW_ERR);
    assert_result(&r, 10, 0, 18000, 6000);
    assert_int_equal(gw_gcra_take(&s, 10, 3, 6000, &r), GW_OK);
    assert_result(&r, 10, 0, 18000, 0);
    /* converting rounds up to the ms: 1 of 7 per minute = 8571.43 ms -> 8572 ms */
    s = (struct gw_gcra){ 0 };
    assert_int_equal(gw_gcra_take(&s, 7, 7, 0, &r), GW_OK);
    assert_result(&r, 7, 6, 8572, 0);
    assert_int_equal(gw_gcra_peek(&s, 10, 10, 0, &r), GW_OK);
    assert_result(&r, 10, 8, 8572, 0);
    assert_int_equal(gw_gcra_peek(&s, 10, 10, 8572, &r), GW_OK);
    assert_result(&r, 10, 10, 0, 0);
}

static void test_fmt_reset(void **state)
{
    static const struct {
        int64_t ms;
        const char *s;
    } cases[] = {
        { INT64_MIN, "0s" }, { -5, "0s" }, { 0, "0s" }, { 1, "1ms" }, { 6, "6ms" },
        { 999, "999ms" }, { 1000, "1s" }, { 1001, "1.001s" }, { 1010, "1.01s" },
        { 1250, "1.25s" }, { 1500, "1.5s" }, { 59001, "59.001s" }, { 59999, "59.999s" },
        { 60000, "1m0s" }, { 60001, "1m0.001s" }, { 90000, "1m30s" }, { 90250, "1m30.25s" },
        { 360000, "6m0s" }, { 3599999, "59m59.999s" }, { 3600000, "1h0m0s" },
        { 7384005, "2h3m4.005s" }, { 86400000, "24h0m0s" },
        { INT64_MAX, "2562047788015h12m55.807s" },
    };
    char buf[GW_GCRA_FMT_MAX];

    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        memset(buf, 'x', sizeof(buf));
        assert_int_equal(gw_gcra_fmt_reset(cases[i].ms, buf, sizeof(buf)), strlen(cases[i].s));
        assert_string_equal(buf, cases[i].s);
    }
    /* a buffer too small gets an empty string, never a cut value */
    assert_int_equal(gw_gcra_fmt_reset(1, buf, 3), 0);
    assert_string_equal(buf, "");
    assert_int_equal(gw_gcra_fmt_reset(1, buf, 4), 3);
    assert_string_equal(buf, "1ms");
    assert_int_equal(gw_gcra_fmt_reset(90250, buf, 8), 0);
    assert_int_equal(gw_gcra_fmt_reset(90250, buf, 9), 8);
    assert_string_equal(buf, "1m30.25s");
    buf[0] = 'x';
    assert_int_equal(gw_gcra_fmt_reset(1, buf, 0), 0);
    assert_int_equal(buf[0], 'x');
}

static void test_retry_after_seconds(void **state)
{
    assert_int_equal(gw_gcra_retry_after_s(INT64_MIN), 0);
    assert_int_equal(gw_gcra_retry_after_s(0), 0);
    assert_int_equal(gw_gcra_retry_after_s(1), 1);
    assert_int_equal(gw_gcra_retry_after_s(999), 1);
    assert_int_equal(gw_gcra_retry_after_s(1000), 1);
    assert_int_equal(gw_gcra_retry_after_s(1001), 2);
    assert_int_equal(gw_gcra_retry_after_s(6000), 6);
    assert_int_equal(gw_gcra_retry_after_s(8572), 9);
    assert_int_equal(gw_gcra_retry_after_s(INT64_MAX), INT64_C(9223372036854776));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refusal),
        cmocka_unit_test(test_steady_rate_exact),
        cmocka_unit_test(test_steady_rate_high_rpm),
        cmocka_unit_test(test_retry_after_exact),
        cmocka_unit_test(test_rpm_1),
        cmocka_unit_test(test_rpm_100000),
        cmocka_unit_test(test_remaining_and_reset),
        cmocka_unit_test(test_burst_zero_is_rpm),
        cmocka_unit_test(test_burst_one_is_strict_spacing),
        cmocka_unit_test(test_burst_above_rpm),
        cmocka_unit_test(test_unlimited),
        cmocka_unit_test(test_peek_does_not_take),
        cmocka_unit_test(test_large_time_jumps),
        cmocka_unit_test(test_int64_extremes),
        cmocka_unit_test(test_rpm_change_carries_over),
        cmocka_unit_test(test_fmt_reset),
        cmocka_unit_test(test_retry_after_seconds),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
