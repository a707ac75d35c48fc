/*
 * test_chunked.c - the chunked body decoder: good bodies decoded to the same
 * bytes whole, one byte at a time and split at every offset; every refusal;
 * never a byte consumed past the end of the body.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "chunked.h"

#define MAX_TRAILER 1024

/* Decode `in` fed in pieces of at most `step` bytes (0: split once at `cut`).
 * Returns bytes consumed in all, or -1 on error; the data goes to out. */
static long decode(const char *in, size_t len, size_t step, size_t cut, char *out,
                   size_t *outlen, struct gw_chunked *ck)
{
    size_t off = 0;

    gw_chunked_init(ck, MAX_TRAILER);
    *outlen = 0;
    while (off < len && !gw_chunked_done(ck)) {
        size_t end = step ? (off + step < len ? off + step : len) : (off < cut ? cut : len);
        size_t pos = off;
        while (pos < end && !gw_chunked_done(ck)) {
            struct gw_str d;
            ssize_t n = gw_chunked_execute(ck, in + pos, end - pos, &d);
            if (n < 0)
                return -1;
            assert_true(n > 0 || d.len == 0);
            memcpy(out + *outlen, d.p, d.len);
            *outlen += d.len;
            pos += (size_t)n;
            if (n == 0)
                break;
        }
        off = pos;
    }
    return (long)off;
}

static void expect_body(const char *in, const char *want, size_t tail)
{
    size_t len = strlen(in), outlen;
    char out[4096];
    struct gw_chunked ck;

    /* whole, byte by byte, and split at every offset: the same answer */
    for (size_t cut = 0; cut <= len; cut++) {
        for (size_t step = 0; step <= 1; step++) {
            long used = decode(in, len, step, cut, out, &outlen, &ck);
            if (used < 0)
                fail_msg("refused at cut %zu step %zu: %s\n%s", cut, step, ck.err.message, in);
            assert_true(gw_chunked_done(&ck));
            assert_int_equal((size_t)used, len - tail); /* nothing past the end */
            assert_int_equal(outlen, strlen(want));
            assert_memory_equal(out, want, outlen);
        }
    }
}

static void test_good_bodies(void **state)
{
    expect_body("5\r\nhello\r\n0\r\n\r\n", "hello", 0);
    expect_body("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", 0);
    expect_body("0\r\n\r\n", "", 0);
    expect_body("A\r\n0123456789\r\n0\r\n\r\n", "0123456789", 0);
    expect_body("a\r\n0123456789\r\n0000\r\n\r\n", "0123456789", 0);
    expect_body("00000000000000000000005\r\nhello\r\n0\r\n\r\n", "hello", 0);
    /* extensions are read and dropped */
    expect_body("5;foo=bar\r\nhello\r\n0;last\r\n\r\n", "hello", 0);
    expect_body("5;a;b=c;d=\"\"\r\nhello\r\n0\r\n\r\n", "hello", 0);
    expect_body("5 ; a = \"q;\\\"x\" ;b\r\nhello\r\n0\r\n\r\n", "hello", 0);
    /* trailers are read and dropped, however many */
    expect_body("5\r\nhello\r\n0\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n", "hello", 0);
    expect_body("5\r\nhello\r\n0\r\nX-A: 1\r\nX-B: 2\r\nContent-Type: x\r\n\r\n", "hello", 0);
    /* a pipelined request after the body is never consumed */
    expect_body("5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n", "hello", 18);
    expect_body("3\r\nabc\r\n0\r\nT: v\r\n\r\n0\r\n\r\n", "abc", 5);
}

static void expect_refused(const char *in)
{
    size_t len = strlen(in), outlen;
    char out[4096];
    struct gw_chunked ck;

    for (size_t cut = 0; cut <= len; cut++) {
        long used = decode(in, len, 0, cut, out, &outlen, &ck);
        if (used >= 0)
            fail_msg("accepted at cut %zu: %s", cut, in);
        assert_int_equal(ck.err.status, 400);
        assert_string_equal(ck.err.code, "invalid_request");
        /* an error sticks */
        struct gw_str d;
        assert_int_equal(gw_chunked_execute(&ck, "0\r\n\r\n", 5, &d), GW_ERR);
    }
}

static void test_refusals(void **state)
{
    expect_refused("10000000000000005\r\nhello\r\n0\r\n\r\n"); /* wraps around at 2^64 */
    expect_refused("ffffffffffffffff\r\nhello\r\n0\r\n\r\n");
    expect_refused("4000000000000000\r\nx\r\n0\r\n\r\n");        /* just over the max */
    expect_refused("-1\r\nhello\r\n0\r\n\r\n");
    expect_refused("0x5\r\nhello\r\n0\r\n\r\n");
    expect_refused(" 5\r\nhello\r\n0\r\n\r\n");
    expect_refused("5 \r\nhello\r\n0\r\n\r\n");
    expect_refused("5 5\r\nhello\r\n0\r\n\r\n");
    expect_refused("\r\nhello\r\n0\r\n\r\n");
    expect_refused("5\nhello\r\n0\r\n\r\n");               /* bare LF */
    expect_refused("5\rhello\r\n0\r\n\r\n");                /* bare CR */
    expect_refused("5\r\nhelloX\r\n0\r\n\r\n");              /* data longer than its size */
    expect_refused("5\r\nhello\n0\r\n\r\n");
    expect_refused("5;a\001b\r\nhello\r\n0\r\n\r\n");       /* control in an extension */
    expect_refused("5;a=\"x\r\nhello\r\n0\r\n\r\n");         /* CR inside a quoted value */
    expect_refused("5;\r\nhello\r\n0\r\n\r\n");                /* an empty extension */
    expect_refused("5;=x\r\nhello\r\n0\r\n\r\n");
    expect_refused("5;a=\r\nhello\r\n0\r\n\r\n");
    expect_refused("5;a \r\nhello\r\n0\r\n\r\n");              /* whitespace before CR */
    expect_refused("5;a=b \r\nhello\r\n0\r\n\r\n");
    expect_refused("5;a b\r\nhello\r\n0\r\n\r\n");
    expect_refused("5;a=\"b\"c\r\nhello\r\n0\r\n\r\n");
    expect_refused("5\r\nhello\r\n0\r\n folded\r\n\r\n");
    expect_refused("5\r\nhello\r\n0\r\nNo colon\r\n\r\n");
    expect_refused("5\r\nhello\r\n0\r\nX: a\nb\r\n\r\n");
    expect_refused("5\r\nhello\r\n0\r\nX: v\r\n\n");
    expect_refused("5\r\nhello\r\n0\r\n\n");
}

static void test_limits(void **state)
{
    char in[GW_CHUNK_LINE_MAX + 64], out[64];
    size_t outlen;
    struct gw_chunked ck;

    /* a size line of extensions over the limit */
    memset(in, 0, sizeof(in));
    strcpy(in, "5;");
    memset(in + 2, 'x', GW_CHUNK_LINE_MAX);
    strcat(in, "\r\nhello\r\n0\r\n\r\n");
    assert_int_equal(decode(in, strlen(in), 0, 0, out, &outlen, &ck), -1);
    assert_non_null(strstr(ck.err.message, "too long"));
    /* many zeros are fine as long as the line fits */
    memset(in, '0', 4000);
    strcpy(in + 4000, "5\r\nhello\r\n0\r\n\r\n");
    assert_true(decode(in, strlen(in), 0, 0, out, &outlen, &ck) > 0);
    /* trailers over max_trailer */
    char big[MAX_TRAILER + 64];
    strcpy(big, "1\r\nx\r\n0\r\nX: ");
    size_t n = strlen(big);
    memset(big + n, 'v', MAX_TRAILER);
    strcpy(big + n + MAX_TRAILER, "\r\n\r\n");
    assert_int_equal(decode(big, strlen(big), 0, 0, out, &outlen, &ck), -1);
    assert_non_null(strstr(ck.err.message, "trailer"));
}

static void test_large_size_streams(void **state)
{
    /* a chunk announced large is handed on slice by slice as bytes arrive */
    struct gw_chunked ck;
    struct gw_str d;

    gw_chunked_init(&ck, MAX_TRAILER);
    assert_int_equal(gw_chunked_execute(&ck, "100000\r\nab", 10, &d), 10);
    assert_int_equal(d.len, 2);
    assert_memory_equal(d.p, "ab", 2);
    assert_int_equal(ck.left, 0x100000 - 2);
    assert_int_equal(gw_chunked_execute(&ck, "cdef", 4, &d), 4);
    assert_int_equal(d.len, 4);
    assert_false(gw_chunked_done(&ck));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_bodies),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_large_size_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
