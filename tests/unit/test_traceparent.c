/*
 * test_traceparent.c - W3C traceparent: what is passed on, what is replaced, what is made.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "traceparent.h"

static int valid(const char *s)
{
    return gw_traceparent_valid(s, strlen(s));
}

static void test_valid(void **state)
{
    assert_true(valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    assert_true(valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
    assert_false(valid(""));
    assert_false(valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"));
    assert_false(valid("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
    assert_false(valid("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
    assert_false(valid("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
    assert_false(valid("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    assert_false(valid("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    assert_false(valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"));
    assert_false(valid("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    assert_false(valid("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"));
    assert_false(gw_traceparent_valid(NULL, 55));
}

static void test_new(void **state)
{
    unsigned char rnd[24];
    char out[GW_TRACEPARENT_LEN + 1];

    for (int i = 0; i < 24; i++)
        rnd[i] = (unsigned char)(i * 17 + 1);
    gw_traceparent_new(out, rnd);
    assert_string_equal(out, "00-0112233445566778899aabbccddeef00-1122334455667788-00");
    assert_true(valid(out));
    memset(rnd, 0, sizeof(rnd));
    gw_traceparent_new(out, rnd);
    assert_true(valid(out)); /* all-zero ids are never made */
    assert_string_equal(out, "00-00000000000000000000000000000001-0000000000000001-00");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_new),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
