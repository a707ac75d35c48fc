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

static struct gw_reqhead rh;

static int check(const char *head, int *status)
{
    struct gw_error err = { 0 };
    int rc = gw_reqhead_check(head, strlen(head), &rh, &err);
    *status = err.status;
    return rc;
}

/* The canonical head libevhtp is given for `head` (checked first). */
static const char *canon(const char *head)
{
    static char out[4096];
    int st;

    assert_int_equal(check(head, &st), GW_OK);
    out[gw_reqhead_canon(head, strlen(head), &rh, out)] = 0;
    return out;
}

static void test_good_heads(void **state)
{
    int st;
    assert_int_equal(check("GET /v1/videos HTTP/1.1\r\nHost: a\r\n\r\n", &st), GW_OK);
    assert_int_equal(check("\r\nPOST /v1/videos?x=1 HTTP/1.0\r\nContent-Length: 12\r\n"
                           "content-length: 12\r\n\r\n", &st), GW_OK);
    assert_int_equal(rh.length, 12);
    assert_int_equal(rh.minor, 0);
    assert_true(rh.canonical);
    assert_int_equal(check("POST /v1/videos HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n"
                           "\r\n", &st), GW_OK);
    assert_true(rh.chunked && rh.canonical);
    assert_true(gw_str_eq(rh.method, "POST") && gw_str_eq(rh.path, "/v1/videos"));
    assert_int_equal(check("GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Tab: a\tb\r\n\r\n", &st),
                     GW_OK);
    assert_true(rh.canonical);
    /* methods libevhtp does not know still get through (the router answers 501) */
    assert_int_equal(check("PURGE / HTTP/1.1\r\nHost: a\r\n\r\n", &st), GW_OK);
    assert_int_equal(check("M_SEARCH / HTTP/1.1\r\nHost: a\r\n\r\n", &st), GW_OK);
}

static void test_canonical_heads(void **state)
{
    /* what libevhtp's parser would read differently is rewritten */
    assert_string_equal(canon("POST /v1/videos HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED"
                              "\r\n\r\n"),
                        "POST /v1/videos HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_false(rh.canonical);
    assert_string_equal(canon("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n"),
                        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_string_equal(canon("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \tchunked\r\n\r\n"),
                        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_string_equal(canon("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n"),
                        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_string_equal(canon("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\t48\r\n\r\n"),
                        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 48\r\n\r\n");
    assert_int_equal(rh.length, 48);
    assert_string_equal(canon("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                              "Content-Length: 4\r\n\r\n"),
                        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n");
    /* Connection: close honoured, the headers it names dropped (RFC 9110 7.6.1) */
    assert_string_equal(canon("GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\n"
                              "X-Secret: s\r\nx-secret: t\r\nX-Other: o\r\n\r\n"),
                        "GET / HTTP/1.1\r\nHost: a\r\nX-Other: o\r\nConnection: close\r\n\r\n");
    assert_true(rh.close && rh.noptions == 1);
    assert_string_equal(canon("GET / HTTP/1.1\r\nHost: a\r\nConnection: X-A\r\nConnection: ,"
                              "keep-alive,\r\nX-A: 1\r\n\r\n"),
                        "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
    assert_string_equal(canon("GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n"),
                        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    /* absolute-form is accepted and handed on in origin-form */
    assert_string_equal(canon("GET http://gw.example:8080/healthz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
                        "GET /healthz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_string_equal(canon("GET HTTPS://gw.example HTTP/1.1\r\nHost: a\r\n\r\n"),
                        "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_string_equal(canon("GET http://gw?x HTTP/1.1\r\nHost: a\r\n\r\n"),
                        "GET /?x HTTP/1.1\r\nHost: a\r\n\r\n");
    /* an ordinary head needs no rewrite */
    int st;
    assert_int_equal(check("POST /v1/videos HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                           "Connection: keep-alive\r\nAuthorization: Bearer x\r\n\r\n", &st),
                     GW_OK);
    assert_true(rh.canonical);
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
        /* issue 5: methods, targets, duplicates, Host, Connection */
        { "get / HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
        { "Get / HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
        { "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
        { "CONNECT gw.example:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
        { "GET ftp://gw/ HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
        { "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
        { "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFG / HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400 },
        { "GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: x\r\nauthorization: y\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, Content-Length\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nConnection: transfer-encoding\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nConnection: a b\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nConnection: a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q\r\n\r\n",
          400 },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501 },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501 },
        { "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 501 },
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
        cmocka_unit_test(test_canonical_heads),
        cmocka_unit_test(test_end_split_everywhere),
        cmocka_unit_test(test_end_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
