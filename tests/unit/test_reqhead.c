/*
 * test_reqhead.c - request head checks: every refusal with its status, and
 * the end-of-head search fed whole and split at every offset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "reqhead.h"

static int check(const char *head, int *status)
{
    struct gw_error err = { 0 };
    int rc = gw_reqhead_check(head, strlen(head), &err);
    *status = err.status;
    return rc;
}

static void test_good_heads(void **state)
{
    int st;
    assert_int_equal(check("GET /v1/videos HTTP/1.1\r\nHost: a\r\n\r\n", &st), GW_OK);
    assert_int_equal(check("\r\nPOST /v1/videos?x=1 HTTP/1.0\r\nContent-Length: 12\r\n"
                           "content-length: 12\r\n\r\n", &st), GW_OK);
    assert_int_equal(check("POST /v1/videos HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n", &st),
                     GW_OK);
    assert_int_equal(check("GET / HTTP/1.1\r\nX-Empty:\r\nX-Tab:\ta\tb\r\n\r\n", &st), GW_OK);
}

static void test_refusals(void **state)
{
    static const struct {
        const char *head;
        int status;
    } cases[] = {
        { "GET /v1/videos HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
          400 },
        { "GET / HTTP/1.1\r\nContent-Length: 5x\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501 },
        { "GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501 },
        { "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
          400 },
        { "GET / HTTP/2.0\r\n\r\n", 505 },
        { "GET / HTTP/1.9\r\n\r\n", 505 },
        { "GET / HTTX/1.1\r\n\r\n", 400 },
        { "GET  / HTTP/1.1\r\n\r\n", 400 },
        { "GET /a b HTTP/1.1\r\n\r\n", 400 },
        { "G(T / HTTP/1.1\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\n folded\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nNo colon\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\n: empty name\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nX: a\001b\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400 },
        { "\r\n\r\n", 400 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int st = 0;
        int rc = check(cases[i].head, &st);
        if (rc != GW_ERR || st != cases[i].status)
            fail_msg("case %zu: rc %d status %d, expected %d", i, rc, st, cases[i].status);
    }
}

static void test_end_split_everywhere(void **state)
{
    const char *head = "\r\nPOST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
    size_t full = strlen(head) - 3;
    struct gw_error err;

    for (size_t cut = 0; cut <= strlen(head); cut++) {
        long end = gw_reqhead_end(head, cut, 1024, &err);
        assert_int_equal(end, cut >= full ? (long)full : 0);
    }
}

static void test_end_limits(void **state)
{
    char buf[20000];
    struct gw_error err = { 0 };

    memset(buf, 'a', sizeof(buf));
    memcpy(buf, "GET / HTTP/1.1\r\nX: ", 19);
    assert_int_equal(gw_reqhead_end(buf, 8100, 1 << 20, &err), GW_ERR);
    assert_int_equal(err.status, 431);
    /* many short lines: the total limit */
    size_t off = 16;
    memcpy(buf, "GET / HTTP/1.1\r\n", 16);
    while (off + 12 < sizeof(buf)) {
        memcpy(buf + off, "X-A: 12345\r\n", 12);
        off += 12;
    }
    err.status = 0;
    assert_int_equal(gw_reqhead_end(buf, off, 4096, &err), GW_ERR);
    assert_int_equal(err.status, 431);
    assert_int_equal(gw_reqhead_end("GET / HTTP/1.1\nHost: x\n\n", 24, 4096, &err), GW_ERR);
    assert_int_equal(err.status, 400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_heads),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_end_split_everywhere),
        cmocka_unit_test(test_end_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
