/*
 * test_expo.c - the Prometheus text writer: label escaping, histograms,
 * numbers, the ceiling.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "expo.h"

static void test_escaping(void **state)
{
    struct gw_expo e;

    gw_expo_init(&e, 1 << 20);
    gw_expo_family(&e, "x_total", "counter", "Help with \\ and\nnewline and \"quotes\".");
    gw_expo_sample(&e, "x_total",
                   (struct gw_label[]){ { "key", "a\"b\\c\nd" }, { "route", "" } }, 2, 3);
    assert_false(e.full);
    assert_string_equal(e.buf,
                        "# HELP x_total Help with \\\\ and\\nnewline and \"quotes\".\n"
                        "# TYPE x_total counter\n"
                        "x_total{key=\"a\\\"b\\\\c\\nd\",route=\"\"} 3\n");
    gw_expo_free(&e);
}

static void test_values(void **state)
{
    struct gw_expo e;

    gw_expo_init(&e, 1 << 20);
    gw_expo_sample(&e, "a", NULL, 0, 0.25);
    gw_expo_sample(&e, "b", NULL, 0, NAN);
    gw_expo_sample(&e, "c", NULL, 0, -INFINITY);
    gw_expo_sample_u64(&e, "d", NULL, 0, UINT64_MAX);
    gw_expo_sample(&e, "e", NULL, 0, 1e20);
    assert_string_equal(e.buf, "a 0.25\nb NaN\nc -Inf\nd 18446744073709551615\ne 1e+20\n");
    gw_expo_free(&e);
}

static void test_histogram(void **state)
{
    static const double bounds[] = { 0.001, 0.5, 10 };
    static const uint64_t counts[] = { 1, 0, 2, 4 }; /* per bucket, last: above 10 */
    struct gw_expo e;

    gw_expo_init(&e, 1 << 20);
    gw_expo_histogram(&e, "h_seconds", (struct gw_label[]){ { "route", "create" } }, 1, bounds,
                      3, counts, 12.5);
    assert_string_equal(e.buf,
                        "h_seconds_bucket{route=\"create\",le=\"0.001\"} 1\n"
                        "h_seconds_bucket{route=\"create\",le=\"0.5\"} 1\n"
                        "h_seconds_bucket{route=\"create\",le=\"10\"} 3\n"
                        "h_seconds_bucket{route=\"create\",le=\"+Inf\"} 7\n"
                        "h_seconds_sum{route=\"create\"} 12.5\n"
                        "h_seconds_count{route=\"create\"} 7\n");
    gw_expo_free(&e);
    gw_expo_init(&e, 1 << 20);
    gw_expo_histogram(&e, "h", NULL, 0, bounds, 3, counts, 0);
    assert_non_null(strstr(e.buf, "h_bucket{le=\"+Inf\"} 7\nh_sum 0\nh_count 7\n"));
    gw_expo_free(&e);
}

/* Past the ceiling the text stops and says so: the caller answers 500, never a
 * cut exposition. */
static void test_ceiling(void **state)
{
    struct gw_expo e;

    gw_expo_init(&e, 64);
    for (int i = 0; i < 100; i++)
        gw_expo_sample(&e, "some_metric_total", NULL, 0, i);
    assert_true(e.full);
    assert_true(e.len < 64);
    gw_expo_free(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_ceiling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
