/*
 * test_keypool.c - upstream key rotation: round-robin, 401/403 out, 429 rest.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "keypool.h"

static const struct gw_str none = { NULL, 0 };

static void test_round_robin(void **state)
{
    struct gw_keypool kp;

    gw_keypool_init(&kp, 3);
    for (unsigned i = 0; i < 9; i++)
        assert_int_equal(gw_keypool_pick(&kp, 1000), i % 3);
}

static void test_401_takes_a_key_out(void **state)
{
    struct gw_keypool kp;

    gw_keypool_init(&kp, 2);
    assert_int_equal(gw_keypool_pick(&kp, 0), 0);
    gw_keypool_report(&kp, 0, 401, none, 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(gw_keypool_pick(&kp, 10), 1);
    /* back after the rest period */
    assert_int_equal(gw_keypool_pick(&kp, GW_KEYPOOL_OUT_MS + 1), 0);
    gw_keypool_report(&kp, 1, 403, none, 100);
    assert_int_equal(gw_keypool_pick(&kp, GW_KEYPOOL_OUT_MS + 2), 0);
}

static void test_429_rests_for_retry_after(void **state)
{
    struct gw_keypool kp;

    gw_keypool_init(&kp, 2);
    gw_keypool_report(&kp, 1, 429, GW_STR("7"), 1000);
    assert_int_equal(gw_keypool_pick(&kp, 1000), 0);
    assert_int_equal(gw_keypool_pick(&kp, 1000), 0);
    assert_int_equal(gw_keypool_pick(&kp, 7999), 0);
    assert_int_equal(gw_keypool_pick(&kp, 8000), 1);
    /* no usable Retry-After: a short default rest */
    gw_keypool_report(&kp, 0, 429, GW_STR("Wed, 21 Oct 2015 07:28:00 GMT"), 9000);
    assert_int_equal(gw_keypool_pick(&kp, 9000 + GW_KEYPOOL_429_MS - 1), 1);
    assert_int_equal(gw_keypool_pick(&kp, 9000 + GW_KEYPOOL_429_MS), 0);
    /* a huge Retry-After is capped */
    gw_keypool_report(&kp, 0, 429, GW_STR("999999999"), 20000);
    assert_int_equal(gw_keypool_pick(&kp, 20000 + GW_KEYPOOL_REST_MAX_MS - 1), 1);
    assert_int_equal(gw_keypool_pick(&kp, 20000 + GW_KEYPOOL_REST_MAX_MS), 0);
}

static void test_all_resting_uses_first_back(void **state)
{
    struct gw_keypool kp;

    gw_keypool_init(&kp, 3);
    gw_keypool_report(&kp, 0, 429, GW_STR("30"), 0);
    gw_keypool_report(&kp, 1, 429, GW_STR("10"), 0);
    gw_keypool_report(&kp, 2, 401, none, 0);
    assert_int_equal(gw_keypool_pick(&kp, 5), 1);
    /* success clears a rest */
    gw_keypool_report(&kp, 2, 200, none, 6);
    assert_int_equal(gw_keypool_pick(&kp, 6), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_401_takes_a_key_out),
        cmocka_unit_test(test_429_rests_for_retry_after),
        cmocka_unit_test(test_all_resting_uses_first_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
