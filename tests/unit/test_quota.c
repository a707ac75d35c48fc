/*
 * test_quota.c - daily video-seconds with a fake clock: reserve/settle/refund
 * sequences, the UTC day boundary, retry-after until midnight, unlimited, and
 * int64 extremes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "quota.h"

#define DAY   INT64_C(86400000)
#define D2025 INT64_C(1735689600000) /* 2025-01-01T00:00:00.000Z, UTC day 20089 */

static void assert_quota(const struct gw_quota *q, int64_t day, uint64_t used, uint64_t reserved)
{
    assert_int_equal(q->day, day);
    assert_int_equal(q->used, used);
    assert_int_equal(q->reserved, reserved);
}

static void test_day_numbers(void **state)
{
    assert_int_equal(gw_quota_day(0), 0);
    assert_int_equal(gw_quota_day(DAY - 1), 0);
    assert_int_equal(gw_quota_day(DAY), 1);
    assert_int_equal(gw_quota_day(D2025), 20089);
    assert_int_equal(gw_quota_day(D2025 - 1), 20088);
    /* before the epoch, days round down, not towards 0 */
    assert_int_equal(gw_quota_day(-1), -1);
    assert_int_equal(gw_quota_day(-DAY), -1);
    assert_int_equal(gw_quota_day(-DAY - 1), -2);
    assert_int_equal(gw_quota_day(INT64_MAX), INT64_C(106751991167));
    assert_int_equal(gw_quota_day(INT64_MIN), INT64_C(-106751991168));

    assert_int_equal(gw_quota_next_midnight_ms(D2025 - 1), D2025);
    assert_int_equal(gw_quota_next_midnight_ms(D2025), D2025 + DAY);
    assert_int_equal(gw_quota_next_midnight_ms(D2025 + DAY / 2), D2025 + DAY);
    assert_int_equal(gw_quota_next_midnight_ms(0), DAY);
    assert_int_equal(gw_quota_next_midnight_ms(-1), 0);
    assert_int_equal(gw_quota_next_midnight_ms(-DAY), 0);
    /* the last day that has an end in range, and the one after it */
    assert_int_equal(gw_quota_next_midnight_ms(INT64_C(106751991166) * DAY),
                     INT64_C(9223372036828800000));
    assert_int_equal(gw_quota_next_midnight_ms(INT64_MAX - 1), INT64_MAX);
    assert_int_equal(gw_quota_next_midnight_ms(INT64_MAX), INT64_MAX);
    assert_int_equal(gw_quota_next_midnight_ms(INT64_MIN), INT64_C(-9223372036828800000));
}

static void test_reserve_up_to_the_limit(void **state)
{
    struct gw_quota q = { 0 }, before;
    int64_t retry = -5;
    const int64_t noon = D2025 + DAY / 2;

    for (int i = 0; i < 75; i++) {
        assert_int_equal(gw_quota_reserve(&q, 600, 8, noon, &retry), GW_OK);
        assert_int_equal(retry, 0);
    }
    assert_quota(&q, 20089, 0, 600);
    before = q;
    /* 600 of 600 in flight: one more second does not fit, until midnight */
    assert_int_equal(gw_quota_reserve(&q, 600, 1, noon, &retry), GW_ERR);
    assert_int_equal(retry, DAY / 2);
    assert_memory_equal(&q, &before, sizeof(q));
    /* 0 seconds still fit a full quota, and take nothing */
    assert_int_equal(gw_quota_reserve(&q, 600, 0, noon, &retry), GW_OK);
    assert_memory_equal(&q, &before, sizeof(q));
}

static void test_settle_kept_and_released(void **state)
{
    struct gw_quota q = { 0 };
    int64_t retry;
    const int64_t t = D2025 + 1000;
    int64_t day;

    assert_int_equal(gw_quota_reserve(&q, 20, 8, t, &retry), GW_OK);
    day = q.day;
    assert_int_equal(day, 20089);
    assert_int_equal(gw_quota_reserve(&q, 20, 8, t, &retry), GW_OK);
    assert_quota(&q, day, 0, 16);
    assert_int_equal(gw_quota_reserve(&q, 20, 8, t, &retry), GW_ERR); /* 24 > 20 */
    /* the first create became a job: kept */
    gw_quota_settle(&q, 8, day, 1);
    assert_quota(&q, day, 8, 8);
    assert_int_equal(gw_quota_reserve(&q, 20, 8, t, &retry), GW_ERR); /* still 24 */
    /* the second failed upstream: released, its seconds free again */
    gw_quota_settle(&q, 8, day, 0);
    assert_quota(&q, day, 8, 0);
    assert_int_equal(gw_quota_reserve(&q, 20, 12, t, &retry), GW_OK);
    assert_quota(&q, day, 8, 12);
    assert_int_equal(gw_quota_reserve(&q, 20, 1, t, &retry), GW_ERR);
    gw_quota_settle(&q, 12, day, 1);
    assert_quota(&q, day, 20, 0);
    assert_int_equal(gw_quota_reserve(&q, 20, 1, t, &retry), GW_ERR);
    assert_int_equal(retry, DAY - 1000);
}

static void test_settle_never_below_zero(void **state)
{
    struct gw_quota q = { 0 };
    int64_t retry;

    assert_int_equal(gw_quota_reserve(&q, 100, 4, D2025, &retry), GW_OK);
    /* settled twice (a caller's bug): the reservation cannot go negative */
    gw_quota_settle(&q, 4, q.day, 0);
    gw_quota_settle(&q, 4, q.day, 0);
    assert_quota(&q, 20089, 0, 0);
    /* and a kept amount larger than what was reserved is still charged */
    gw_quota_settle(&q, 8, q.day, 1);
    assert_quota(&q, 20089, 8, 0);
}

static void test_refund(void **state)
{
    struct gw_quota q = { 0 };
    int64_t retry;
    const int64_t t = D2025 + 5000;

    assert_int_equal(gw_quota_reserve(&q, 16, 8, t, &retry), GW_OK);
    assert_int_equal(gw_quota_reserve(&q, 16, 8, t, &retry), GW_OK);
    gw_quota_settle(&q, 8, 20089, 1);
    gw_quota_settle(&q, 8, 20089, 1);
    assert_quota(&q, 20089, 16, 0);
    assert_int_equal(gw_quota_reserve(&q, 16, 4, t + 1, &retry), GW_ERR);
    /* one job seen failed: its 8 seconds come back */
    gw_quota_refund(&q, 8, 20089);
    assert_quota(&q, 20089, 8, 0);
    assert_int_equal(gw_quota_reserve(&q, 16, 8, t + 2, &retry), GW_OK);
    assert_quota(&q, 20089, 8, 8);
}

/* Refund once per job is the caller's to record: told twice, the module gives back
 * twice (never below 0). This test pins that contract, so the store must dedupe. */
static void test_refund_once_is_the_callers(void **state)
{
    struct gw_quota q = { 0 };
    int64_t retry;

    assert_int_equal(gw_quota_reserve(&q, 0, 8, D2025, &retry), GW_OK);
    gw_quota_settle(&q, 8, 20089, 1);
    assert_int_equal(gw_quota_reserve(&q, 0, 4, D2025, &retry), GW_OK);
    gw_quota_settle(&q, 4, 20089, 1);
    assert_quota(&q, 20089, 12, 0);
    gw_quota_refund(&q, 8, 20089);
    assert_quota(&q, 20089, 4, 0);
    gw_quota_refund(&q, 8, 20089); /* the same job again */
    assert_quota(&q, 20089, 0, 0);
    gw_quota_refund(&q, 8, 20089);
    assert_quota(&q, 20089, 0, 0);
}

static void test_utc_day_boundary(void **state)
{
    struct gw_quota q = { 0 };
    int64_t retry;
    const int64_t last_ms = D2025 + DAY - 1; /* 2025-01-01T23:59:59.999Z */
    const int64_t midnight = D2025 + DAY;    /* 2025-01-02T00:00:00.000Z */
    int64_t yesterday;

    assert_int_equal(gw_quota_reserve(&q, 10, 4, D2025 + 1000, &retry), GW_OK);
    gw_quota_settle(&q, 4, 20089, 1);
    assert_int_equal(gw_quota_reserve(&q, 10, 6, last_ms, &retry), GW_OK);
    yesterday = q.day;
    assert_quota(&q, 20089, 4, 6);
    /* full at 23:59:59.999: retry in exactly 1 ms */
    assert_int_equal(gw_quota_reserve(&q, 10, 1, last_ms, &retry), GW_ERR);
    assert_int_equal(retry, 1);
    /* at 00:00:00.000 a new day: the whole limit again */
    assert_int_equal(gw_quota_reserve(&q, 10, 10, midnight, &retry), GW_OK);
    assert_int_equal(retry, 0);
    assert_quota(&q, 20090, 0, 10);
    assert_int_equal(gw_quota_reserve(&q, 10, 1, midnight, &retry), GW_ERR);
    assert_int_equal(retry, DAY);
    /* yesterday's in-flight create settles against nothing today, kept or not */
    gw_quota_settle(&q, 6, yesterday, 1);
    assert_quota(&q, 20090, 0, 10);
    gw_quota_settle(&q, 6, yesterday, 0);
    assert_quota(&q, 20090, 0, 10);
    /* and yesterday's failed job refunds nothing today */
    gw_quota_settle(&q, 10, 20090, 1);
    assert_quota(&q, 20090, 10, 0);
    gw_quota_refund(&q, 4, yesterday);
    assert_quota(&q, 20090, 10, 0);
    /* today's does */
    gw_quota_refund(&q, 4, 20090);
    assert_quota(&q, 20090, 6, 0);
}

static void test_new_day_without_activity(void **state)
{
    struct gw_quota q = { 0 };
    int64_t retry;

    assert_int_equal(gw_quota_reserve(&q, 10, 10, D2025, &retry), GW_OK);
    gw_quota_settle(&q, 10, 20089, 1);
    /* a week later, the first reservation starts from 0 */
    assert_int_equal(gw_quota_reserve(&q, 10, 10, D2025 + 7 * DAY + 123, &retry), GW_OK);
    assert_quota(&q, 20096, 0, 10);
}

static void test_amount_over_limit(void **state)
{
    struct gw_quota q = { 0 }, before;
    int64_t retry;

    /* 12 seconds under a limit of 10 never fit; the refusal still names a time */
    assert_int_equal(gw_quota_reserve(&q, 10, 12, D2025 + 1, &retry), GW_ERR);
    assert_int_equal(retry, DAY - 1);
    assert_quota(&q, 20089, 0, 0);
    before = q;
    assert_int_equal(gw_quota_reserve(&q, 10, UINT32_MAX, D2025 + 1, NULL), GW_ERR);
    assert_memory_equal(&q, &before, sizeof(q));
    assert_int_equal(gw_quota_reserve(&q, 10, 10, D2025 + 1, NULL), GW_OK);
    assert_quota(&q, 20089, 0, 10);
}

static void test_limit_lowered_below_use(void **state)
{
    struct gw_quota q = { 0 };
    int64_t retry;

    assert_int_equal(gw_quota_reserve(&q, 600, 300, D2025, &retry), GW_OK);
    gw_quota_settle(&q, 300, 20089, 1);
    /* reloaded with a limit of 100: nothing more today, nothing lost either */
    assert_int_equal(gw_quota_reserve(&q, 100, 1, D2025 + 10, &retry), GW_ERR);
    assert_int_equal(retry, DAY - 10);
    assert_quota(&q, 20089, 300, 0);
    /* raised again: what was used still counts */
    assert_int_equal(gw_quota_reserve(&q, 400, 100, D2025 + 20, &retry), GW_OK);
    assert_int_equal(gw_quota_reserve(&q, 400, 1, D2025 + 20, &retry), GW_ERR);
}

static void test_unlimited(void **state)
{
    struct gw_quota q = { 0 };
    int64_t retry = -1;

    for (int i = 0; i < 1000; i++) {
        assert_int_equal(gw_quota_reserve(&q, 0, UINT32_MAX, D2025, &retry), GW_OK);
        assert_int_equal(retry, 0);
    }
    assert_quota(&q, 20089, 0, UINT64_C(1000) * UINT32_MAX);
    /* still counted, so a limit set by a reload sees today's use */
    for (int i = 0; i < 1000; i++)
        gw_quota_settle(&q, UINT32_MAX, 20089, 1);
    assert_quota(&q, 20089, UINT64_C(1000) * UINT32_MAX, 0);
    assert_int_equal(gw_quota_reserve(&q, 600, 1, D2025, &retry), GW_ERR);
    /* counters saturate rather than wrap */
    q.used = UINT64_MAX - 1;
    assert_int_equal(gw_quota_reserve(&q, 0, 8, D2025, &retry), GW_OK);
    gw_quota_settle(&q, 8, 20089, 1);
    assert_quota(&q, 20089, UINT64_MAX, 0);
    assert_int_equal(gw_quota_reserve(&q, UINT32_MAX, 0, D2025, &retry), GW_ERR);
    q.reserved = UINT64_MAX;
    assert_int_equal(gw_quota_reserve(&q, 0, 8, D2025, &retry), GW_OK);
    assert_quota(&q, 20089, UINT64_MAX, UINT64_MAX);
}

static void test_clock_steps_back(void **state)
{
    struct gw_quota q = { 0 };
    int64_t retry;
    const int64_t midnight = D2025 + DAY;

    assert_int_equal(gw_quota_reserve(&q, 10, 10, midnight + 500, &retry), GW_OK);
    assert_quota(&q, 20090, 0, 10);
    /* the clock steps back 1 s, into the previous day: the counters stay on the later
     * day (no fresh quota), and the refusal waits for that day's end */
    assert_int_equal(gw_quota_reserve(&q, 10, 1, midnight - 500, &retry), GW_ERR);
    assert_int_equal(retry, DAY + 500);
    assert_quota(&q, 20090, 0, 10);
    assert_int_equal(gw_quota_reserve(&q, 10, 0, midnight - 500, &retry), GW_OK);
    assert_quota(&q, 20090, 0, 10);
}

static void test_int64_extremes(void **state)
{
    struct gw_quota q = { 0 };
    int64_t retry;

    /* the last ms there is: refused with a retry-after of at least 1 ms */
    assert_int_equal(gw_quota_reserve(&q, 10, 10, INT64_MAX, &retry), GW_OK);
    assert_quota(&q, INT64_C(106751991167), 0, 10);
    assert_int_equal(gw_quota_reserve(&q, 10, 1, INT64_MAX, &retry), GW_ERR);
    assert_int_equal(retry, 1);
    assert_int_equal(gw_quota_reserve(&q, 10, 1, INT64_MAX - 1, &retry), GW_ERR);
    assert_int_equal(retry, 1);
    /* the first ms there is, with counters on a later day */
    assert_int_equal(gw_quota_reserve(&q, 10, 1, INT64_MIN, &retry), GW_ERR);
    assert_int_equal(retry, INT64_MAX);
    /* a state from the first day, now in the last: a new day */
    q = (struct gw_quota){ INT64_MIN, 5, 5 };
    assert_int_equal(gw_quota_reserve(&q, 10, 10, INT64_MAX, &retry), GW_OK);
    assert_quota(&q, INT64_C(106751991167), 0, 10);
    /* a state day far ahead of a clock before the epoch */
    q = (struct gw_quota){ INT64_MAX, 10, 0 };
    assert_int_equal(gw_quota_reserve(&q, 10, 1, -DAY, &retry), GW_ERR);
    assert_int_equal(retry, INT64_MAX);
    q = (struct gw_quota){ INT64_C(106751991166), 10, 0 };
    assert_int_equal(gw_quota_reserve(&q, 10, 1, 0, &retry), GW_ERR);
    assert_int_equal(retry, INT64_C(9223372036828800000));
    /* a day number below any clock's: the first reservation starts a new day */
    q = (struct gw_quota){ INT64_MIN, 10, 0 };
    assert_int_equal(gw_quota_reserve(&q, 10, 1, INT64_MIN, &retry), GW_OK);
    assert_quota(&q, INT64_C(-106751991168), 0, 1);
    assert_int_equal(gw_quota_reserve(&q, 10, 10, INT64_MIN, &retry), GW_ERR);
    assert_int_equal(retry, INT64_C(-9223372036828800000) - INT64_MIN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_day_numbers),
        cmocka_unit_test(test_reserve_up_to_the_limit),
        cmocka_unit_test(test_settle_kept_and_released),
        cmocka_unit_test(test_settle_never_below_zero),
        cmocka_unit_test(test_refund),
        cmocka_unit_test(test_refund_once_is_the_callers),
        cmocka_unit_test(test_utc_day_boundary),
        cmocka_unit_test(test_new_day_without_activity),
        cmocka_unit_test(test_amount_over_limit),
        cmocka_unit_test(test_limit_lowered_below_use),
        cmocka_unit_test(test_unlimited),
        cmocka_unit_test(test_clock_steps_back),
        cmocka_unit_test(test_int64_extremes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
