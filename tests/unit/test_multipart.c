/*
 * test_multipart.c - the multipart scanner/rewriter, fed whole, one byte at a
 * time, split at every offset and with tiny op arrays; every way of feeding must
 * give the same upstream body and the same hook calls.
 */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "multipart.h"

/* ---- a growable byte buffer (tests only) ---- */

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_fmt(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void buf_fmt(struct buf *b, const char *fmt, ...)
{
    char tmp[4096];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(tmp));
    buf_add(b, tmp, (size_t)n);
}

static void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- hooks that record what they see ---- */

enum { FAIL_NONE = 0, FAIL_PART, FAIL_FIELD, FAIL_MODEL, FAIL_END };

struct rec {
    struct buf log;
    const char *repl; /* replacement model value, NULL: keep */
    int fail;         /* which hook answers GW_ERR */
};

static int on_part(void *arg, const struct gw_mp_part *part, struct gw_error *err)
{
    struct rec *r = arg;

    buf_fmt(&r->log, "part(%u,%.*s,file=%d,ct=%.*s)\n", part->index, (int)part->name.len,
            part->name.p, part->has_filename, (int)part->content_type.len,
            part->content_type.p != NULL ? part->content_type.p : "");
    if (r->fail == FAIL_PART)
        return gw_error_set(err, 400, "invalid_request_error", "too_many_images",
                            "input_reference", "no");
    return GW_OK;
}

static int on_field(void *arg, const struct gw_mp_field *f, struct gw_error *err)
{
    struct rec *r = arg;

    buf_fmt(&r->log, "field(%.*s=", (int)f->name.len, f->name.p);
    buf_add(&r->log, f->value.p, f->value.len);
    buf_fmt(&r->log, "/%zu)\n", f->total_len);
    if (r->fail == FAIL_FIELD)
        return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "seconds", "no");
    return GW_OK;
}

static int on_model(void *arg, struct gw_str value, struct gw_str *out, struct gw_error *err)
{
    struct rec *r = arg;

    buf_str(&r->log, "model(");
    buf_add(&r->log, value.p, value.len);
    buf_str(&r->log, ")\n");
    if (r->fail == FAIL_MODEL)
        return gw_error_set(err, 403, "invalid_request_error", "model_not_allowed", "model",
                            "no");
    if (r->repl != NULL)
        *out = (struct gw_str){ r->repl, strlen(r->repl) };
    else
        *out = value;
    return GW_OK;
}

static int on_end(void *arg, struct gw_error *err)
{
    struct rec *r = arg;

    buf_str(&r->log, "end\n");
    if (r->fail == FAIL_END)
        return gw_error_set(err, 400, "invalid_request_error", "missing_field", "prompt", "no");
    return GW_OK;
}

static const struct gw_mp_hooks hooks = { on_part, on_field, on_model, on_end };

/* ---- the proxy's side: hold unclassified bytes, apply ops ---- */

struct result {
    int rc;                /* GW_OK, or GW_ERR from execute or finish */
    int failed_in_finish;  /* the error came from gw_mp_finish */
    struct buf out;        /* what went upstream */
    struct buf log;        /* hook calls */
    struct gw_error err;
    uint64_t classified;
    int64_t delta;
    int seen_model;
    size_t max_ops;        /* most ops one call appended */
};

/*
 * Move the front of `held` as the ops say, exactly as the proxy does with its
 * evbuffer: PASS moves bytes to the output, DROP discards them, LITERAL inserts.
 */
static void apply(struct buf *held, struct buf *out, const struct gw_mp_op *ops, size_t nops)
{
    size_t off = 0;

    for (size_t k = 0; k < nops; k++) {
        assert_true(ops[k].len > 0);
        switch (ops[k].kind) {
        case GW_MP_PASS:
            assert_true(off + ops[k].len <= held->len);
            buf_add(out, held->p + off, ops[k].len);
            off += ops[k].len;
            break;
        case GW_MP_DROP:
            assert_true(off + ops[k].len <= held->len);
            off += ops[k].len;
            break;
        case GW_MP_LITERAL:
            buf_add(out, ops[k].p, ops[k].len);
            break;
        }
    }
    if (off == 0)
        return;
    memmove(held->p, held->p + off, held->len - off);
    held->len -= off;
}

/*
 * Feed `in` in chunks ending at cuts[0..ncuts) (then at len), with op arrays of
 * `cap` entries, and record everything in r.
 */
static void run(const char *in, size_t len, const char *boundary, const size_t *cuts,
                size_t ncuts, size_t cap, const char *repl, int fail, struct result *r)
{
    struct gw_mp *mp = malloc(sizeof(*mp));
    struct gw_mp_op ops[64];
    struct rec rec = { .repl = repl, .fail = fail };
    struct buf held = { 0 };
    size_t at = 0;

    assert_non_null(mp);
    assert_true(cap <= GW_ARRAY_LEN(ops));
    memset(r, 0, sizeof(*r));
    assert_int_equal(gw_mp_init(mp, (struct gw_str){ boundary, strlen(boundary) }, &hooks,
                                &rec), GW_OK);
    r->rc = GW_OK;
    for (size_t c = 0; c <= ncuts && r->rc == GW_OK; c++) {
        size_t end = c < ncuts ? cuts[c] : len;
        size_t scanned_in_held;

        if (end <= at)
            continue;
        /* new bytes arrive behind the unclassified ones */
        scanned_in_held = held.len;
        buf_add(&held, in + at, end - at);
        at = end;
        while (scanned_in_held < held.len) {
            size_t nops = 0;
            ssize_t n = gw_mp_execute(mp, held.p + scanned_in_held, held.len - scanned_in_held,
                                      ops, &nops, cap);
            if (n == GW_ERR) {
                apply(&held, &r->out, ops, nops);
                r->rc = GW_ERR;
                break;
            }
            assert_true(n >= 0 && (size_t)n <= held.len - scanned_in_held);
            assert_true(n > 0 || nops > 0); /* progress */
            assert_true(nops <= cap);
            if (nops > r->max_ops)
                r->max_ops = nops;
            size_t before = held.len;
            apply(&held, &r->out, ops, nops);
            scanned_in_held = scanned_in_held + (size_t)n - (before - held.len);
            /* what stays held is exactly the scanned-but-unclassified bytes + unscanned */
            assert_true(mp->scanned - mp->classified == scanned_in_held);
            assert_true(mp->scanned - mp->classified <= GW_MP_MAX_PENDING);
        }
    }
    if (r->rc == GW_OK) {
        size_t nops = 0;
        r->rc = gw_mp_finish(mp, ops, &nops, cap);
        r->failed_in_finish = r->rc != GW_OK;
        apply(&held, &r->out, ops, nops);
        if (r->rc == GW_OK)
            assert_int_equal(held.len, 0);
    }
    if (r->rc != GW_OK) {
        size_t nops = 0;
        /* sticky */
        assert_int_equal(gw_mp_execute(mp, "x", 1, ops, &nops, cap), GW_ERR);
        assert_int_equal(gw_mp_finish(mp, ops, &nops, cap), GW_ERR);
        assert_int_equal(nops, 0);
    }
    r->err = mp->err;
    r->classified = mp->classified;
    r->delta = mp->delta;
    r->seen_model = mp->seen_model;
    r->log = rec.log;
    assert_int_equal((int64_t)r->out.len, (int64_t)r->classified + r->delta);
    buf_free(&held);
    free(mp);
}

static void result_free(struct result *r)
{
    buf_free(&r->out);
    buf_free(&r->log);
}

static void assert_same(const struct result *a, const struct result *b)
{
    assert_int_equal(a->rc, b->rc);
    assert_int_equal(a->failed_in_finish, b->failed_in_finish);
    assert_string_equal(a->log.p != NULL ? a->log.p : "", b->log.p != NULL ? b->log.p : "");
    assert_int_equal(a->seen_model, b->seen_model);
    /* after an error in execute the body is abandoned: how much of it had been
     * classified depends on the slicing, and nobody uses it */
    if (a->rc == GW_OK || a->failed_in_finish) {
        assert_int_equal(a->out.len, b->out.len);
        assert_memory_equal(a->out.p, b->out.p, a->out.len);
        assert_int_equal(a->classified, b->classified);
        assert_int_equal(a->delta, b->delta);
    }
    if (a->rc != GW_OK) {
        assert_int_equal(a->err.status, b->err.status);
        assert_string_equal(a->err.code, b->err.code);
        assert_string_equal(a->err.message, b->err.message);
    }
}

/*
 * Feed a body every way and check all agree; return the whole-fed result in r.
 * Bodies up to `every_max` bytes are also split at every offset (and every pair
 * of offsets for very small ones); longer ones at every offset of the windows
 * around each CR, where the delimiters are.
 */
static void run_all(const char *in, size_t len, const char *boundary, const char *repl, int fail,
                    struct result *r)
{
    struct result o;
    size_t cut[2];

    run(in, len, boundary, NULL, 0, 64, repl, fail, r);
    /* fed whole: PASS, DROP (model), LITERAL, PASS at most */
    assert_true(r->max_ops <= 4);

    /* one byte at a time */
    size_t *cuts = malloc((len + 1) * sizeof(*cuts));
    assert_non_null(cuts);
    for (size_t k = 0; k < len; k++)
        cuts[k] = k + 1;
    run(in, len, boundary, cuts, len, 64, repl, fail, &o);
    assert_same(r, &o);
    result_free(&o);
    free(cuts);

    /* tiny op arrays */
    for (size_t cap = 1; cap <= 3; cap++) {
        run(in, len, boundary, NULL, 0, cap, repl, fail, &o);
        assert_same(r, &o);
        result_free(&o);
    }

    /* two chunks, split at every offset (for long bodies: every offset around each
     * delimiter, and a sample of the rest) */
    char delim[GW_MP_BOUNDARY_MAX + 5];
    snprintf(delim, sizeof(delim), "\r\n--%s", boundary);
    for (size_t k = 1; k < len; k++) {
        if (len > 8192 && k % 997 != 0) {
            size_t from = k > strlen(delim) + 4 ? k - strlen(delim) - 4 : 0;
            if (memmem(in + from, k + 2 - from < len - from ? k + 2 - from : len - from,
                       delim, strlen(delim)) == NULL)
                continue;
        }
        cut[0] = k;
        run(in, len, boundary, cut, 1, 64, repl, fail, &o);
        assert_same(r, &o);
        result_free(&o);
        if (len <= 8192) {
            run(in, len, boundary, cut, 1, 2, repl, fail, &o);
            assert_same(r, &o);
            result_free(&o);
        }
    }

    /* three chunks, every pair of offsets, for small bodies */
    if (len <= 400) {
        for (size_t a = 1; a < len; a++) {
            for (size_t b = a + 1; b < len; b++) {
                cut[0] = a;
                cut[1] = b;
                run(in, len, boundary, cut, 2, 64, repl, fail, &o);
                assert_same(r, &o);
                result_free(&o);
            }
        }
    }
}

/* ---- bodies ---- */

#define BND "XyZzy0123456789"

static void add_field(struct buf *b, const char *bnd, const char *name, const char *value)
{
    buf_fmt(b, "--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n", bnd, name);
    buf_str(b, value);
    buf_str(b, "\r\n");
}

static void add_file(struct buf *b, const char *bnd, const char *name, const char *filename,
                     const char *data, size_t len)
{
    buf_fmt(b, "--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
               "Content-Type: image/png\r\n\r\n", bnd, name, filename);
    buf_add(b, data, len);
    buf_str(b, "\r\n");
}

static void add_close(struct buf *b, const char *bnd)
{
    buf_fmt(b, "--%s--\r\n", bnd);
}

/* Pseudo-random bytes, dense in CR, LF and '-' and with delimiter look-alikes. */
static void make_data(char *p, size_t len, uint32_t seed, const char *bnd)
{
    static const char *traps[] = { "\r\n--", "\r\r\n--", "\r\n-", "\r\n--XyZ", "--", "\r",
                                   ("\n--" BND) };
    char delim[GW_MP_BOUNDARY_MAX + 5];
    uint32_t x = seed;
    char *hit;

    for (size_t i = 0; i < len;) {
        x = x * 1103515245u + 12345u;
        unsigned r = (x >> 16) & 0xff;
        if (r < 8) {
            const char *t = r == 7 ? bnd : traps[r % GW_ARRAY_LEN(traps)];
            /* a boundary alone is harmless: only "\r\n--" + boundary delimits */
            size_t n = strlen(t);
            if (i + n > len)
                n = len - i;
            memcpy(p + i, t, n);
            i += n;
        } else {
            p[i++] = (char)(x >> 8);
        }
    }
    /* traps side by side can make a real delimiter, or "--boundary" after a bare CR
     * or LF or at the start of the data, which the scanner refuses: break those (no
     * CR, LF or '-' is added, so no new one appears) */
    snprintf(delim, sizeof(delim), "--%s", bnd);
    for (size_t at = 0; (hit = memmem(p + at, len - at, delim, strlen(delim))) != NULL;) {
        if (hit == p || hit[-1] == '\r' || hit[-1] == '\n')
            hit[1] = '+';
        at = (size_t)(hit - p) + 1;
    }
}

/* Whole body with model `model` before or after a file part of `flen` bytes. */
static void make_body(struct buf *b, const char *model, int model_first, size_t flen)
{
    char *data = malloc(flen + 1);

    assert_non_null(data);
    make_data(data, flen, 42, BND);
    if (model_first)
        add_field(b, BND, "model", model);
    add_field(b, BND, "prompt", "a cow dancing");
    add_file(b, BND, "input_reference", "cow.png", data, flen);
    add_field(b, BND, "seconds", "8");
    if (!model_first)
        add_field(b, BND, "model", model);
    add_close(b, BND);
    free(data);
}

static void check_rewrite(const char *model, const char *repl, int model_first, size_t flen)
{
    struct buf in = { 0 }, want = { 0 };
    struct result r;

    make_body(&in, model, model_first, flen);
    make_body(&want, repl != NULL ? repl : model, model_first, flen);
    run_all(in.p, in.len, BND, repl, FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_OK);
    assert_int_equal(r.out.len, want.len);
    assert_memory_equal(r.out.p, want.p, want.len);
    assert_int_equal(r.delta, (int64_t)want.len - (int64_t)in.len);
    assert_int_equal(r.classified, in.len);
    assert_int_equal(r.seen_model, 1);
    assert_non_null(strstr(r.log.p, "field(model="));
    assert_non_null(strstr(r.log.p, ",input_reference,file=1,ct=image/png)"));
    result_free(&r);
    buf_free(&in);
    buf_free(&want);
}

static void test_model_before_small_file(void **state)
{
    check_rewrite("veo3", "veo3.1-fast-components", 1, 300);
}

static void test_model_after_small_file(void **state)
{
    check_rewrite("veo3-fast-alias", "veo3", 0, 300);
}

static void test_model_same_length(void **state)
{
    check_rewrite("veo2", "veo3", 1, 40);
}

static void test_model_unchanged(void **state)
{
    check_rewrite("veo_3_1", NULL, 0, 40);
}

static void test_model_empty_value(void **state)
{
    check_rewrite("", "veo3", 1, 10);
}

static void test_model_before_large_file(void **state)
{
    check_rewrite("fast", "veo_3_1-fast-components-4K", 1, 200000);
}

static void test_model_after_large_file(void **state)
{
    check_rewrite("veo_3_1-fast-components-4K", "v", 0, 200000);
}

/* A CR followed by any byte (binary data: the scan does not stop at one followed
 * by neither LF nor '-') is data, cut at every offset; the body passes unchanged. */
static void test_cr_before_every_byte(void **state)
{
    struct buf in = { 0 };
    struct result r;
    char data[256 * 3];

    for (int b = 0; b < 256; b++) {
        data[3 * b] = '\r';
        data[3 * b + 1] = (char)b;
        data[3 * b + 2] = 'x';
    }
    add_field(&in, BND, "model", "veo_3_1");
    add_file(&in, BND, "input_reference", "cr.png", data, sizeof(data));
    add_close(&in, BND);
    run_all(in.p, in.len, BND, NULL, FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_OK);
    assert_int_equal(r.out.len, in.len);
    assert_memory_equal(r.out.p, in.p, in.len);
    result_free(&r);
    buf_free(&in);
}

/* A 100 MB-like file part costs a handful of ops per slice, not one per CR. */
static void test_ops_per_slice(void **state)
{
    struct buf in = { 0 };
    struct gw_mp mp;
    struct gw_mp_op ops[8];
    size_t nops = 0;

    make_body(&in, "veo3", 1, 1 << 20);
    assert_int_equal(gw_mp_init(&mp, GW_STR(BND), NULL, NULL), GW_OK);
    ssize_t n = gw_mp_execute(&mp, in.p, in.len, ops, &nops, GW_ARRAY_LEN(ops));
    assert_int_equal(n, (ssize_t)in.len);
    assert_true(nops <= 4); /* PASS, DROP, LITERAL, PASS */
    assert_int_equal(gw_mp_finish(&mp, ops, &nops, GW_ARRAY_LEN(ops)), GW_OK);
    assert_int_equal(mp.classified, in.len);
    buf_free(&in);
}

static void test_model_absent(void **state)
{
    struct buf in = { 0 };
    struct result r;
    char data[500];

    make_data(data, sizeof(data), 7, BND);
    add_field(&in, BND, "prompt", "hello");
    add_file(&in, BND, "input_reference", "a.png", data, sizeof(data));
    add_close(&in, BND);
    run_all(in.p, in.len, BND, "never", FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_OK);
    assert_int_equal(r.out.len, in.len);
    assert_memory_equal(r.out.p, in.p, in.len);
    assert_int_equal(r.delta, 0);
    assert_int_equal(r.seen_model, 0);
    assert_null(strstr(r.log.p, "model("));
    result_free(&r);
    buf_free(&in);
}

/* Hand-written body, expected output and hook log, checked every way. */
static void check_case(const char *in, const char *bnd, const char *repl, const char *want,
                       const char *log)
{
    struct result r;

    run_all(in, strlen(in), bnd, repl, FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_OK);
    assert_string_equal(r.out.p != NULL ? r.out.p : "", want);
    if (log != NULL)
        assert_string_equal(r.log.p, log);
    result_free(&r);
}

static void test_first_delimiter_without_crlf(void **state)
{
    check_case("--b\r\nContent-Disposition: form-data; name=model\r\n\r\nveo2\r\n--b--",
               "b", "veo3",
               "--b\r\nContent-Disposition: form-data; name=model\r\n\r\nveo3\r\n--b--",
               "part(0,model,file=0,ct=)\nfield(model=veo2/4)\nmodel(veo2)\nend\n");
}

static void test_preamble_epilogue(void **state)
{
    /* blank lines before the first delimiter, anything after the close delimiter */
    const char *in = "\r\n\r\n--b\r\n"
                     "content-disposition:FORM-DATA;NAME=\"model\"\r\n\r\n"
                     "veo2\r\n--b\r\n"
                     "Content-Disposition: form-data; name=prompt\r\n\r\n"
                     "\r\n--b--  \r\nepilogue\r\n--b\r\nmore";
    const char *want = "\r\n\r\n--b\r\n"
                       "content-disposition:FORM-DATA;NAME=\"model\"\r\n\r\n"
                       "veo_3_1\r\n--b\r\n"
                       "Content-Disposition: form-data; name=prompt\r\n\r\n"
                       "\r\n--b--  \r\nepilogue\r\n--b\r\nmore";

    check_case(in, "b", "veo_3_1", want,
               "part(0,model,file=0,ct=)\nfield(model=veo2/4)\nmodel(veo2)\n"
               "part(1,prompt,file=0,ct=)\nfield(prompt=/0)\nend\n");
}

static void check_error(const char *in, const char *bnd, int fail, const char *code,
                        const char *param, const char *msg_part, int in_finish);

/*
 * A preamble other than blank lines: Werkzeug finds "--boundary" anywhere in it,
 * python-multipart at its first '-', Go at the start of any line (LF-ended).
 */
static void test_preamble_refused(void **state)
{
    static const char *const bad[] = {
        "This is a preamble.\r\n--b\r\n",
        "x--b\r\nContent-Disposition: form-data; name=seconds\r\n\r\n99\r\n--b\r\n",
        "\n--b\r\nContent-Disposition: form-data; name=seconds\r\n\r\n99\r\n--b\r\n",
        "\r\nx\n--b\r\nContent-Disposition: form-data; name=seconds\r\n\r\n99\r\n--b\r\n",
        "\r\r\n--b\r\n", "\r\n-- b\r\n--b\r\n", "-x\r\n--b\r\n", "\r\n\n\r\n--b\r\n",
    };
    char in[512];

    for (size_t i = 0; i < GW_ARRAY_LEN(bad); i++) {
        snprintf(in, sizeof(in), "%sContent-Disposition: form-data; name=model\r\n\r\n"
                                 "veo2\r\n--b--", bad[i]);
        check_error(in, "b", FAIL_NONE, "invalid_multipart", NULL, "must start with its boundary",
                    0);
    }
}

/*
 * Transport padding after a delimiter: python-multipart reads "--b \r\n" as data,
 * busboy as a delimiter followed by data, Go and Werkzeug as a delimiter line.
 */
static void test_transport_padding_refused(void **state)
{
    static const char *const bad[] = {
        "--b \r\nContent-Disposition: form-data; name=model\r\n\r\nveo2\r\n--b--",
        "--b\t\r\nContent-Disposition: form-data; name=model\r\n\r\nveo2\r\n--b--",
        ("--b\r\nContent-Disposition: form-data; name=prompt\r\n\r\np\r\n--b \t \r\n"
         "Content-Disposition: form-data; name=seconds\r\n\r\n8\r\n--b--"),
    };

    for (size_t i = 0; i < GW_ARRAY_LEN(bad); i++)
        check_error(bad[i], "b", FAIL_NONE, "invalid_multipart", NULL, "boundary line", 0);
}

/* A text file with LF line ends: a run per line at most, merged into one PASS. */
static const char text_lines[] =
    "--b\r\nContent-Disposition: form-data; name=f; filename=a.txt\r\n\r\n"
    "line one\nline two\n--not b\n-\n\n\n- -b\nend\r\n--b--";

/*
 * "--boundary" after a bare CR or LF, or at the very start of a part's data: a
 * delimiter for Werkzeug and Python's email (any line break), for Go and Werkzeug at
 * the start of a part (the blank line after the headers doubles as its CRLF), plain
 * data for busboy and python-multipart. A file part could hide a `seconds` part from
 * the gateway that way.
 */
/*
 * A long boundary: a run skips ahead to each "--boundary" (memmem) and looks at the
 * line break before it, rather than stopping at every CR. Refused and accepted alike
 * as when it stopped at every CR (run_all also feeds the body a byte at a time, where
 * no whole "--boundary" is ever in a slice), deep in a file dense in CR, LF and '-'.
 */
static void test_long_boundary_skip(void **state)
{
    static const char bnd[] = "----formdata-undici-0123456789ab";
    static const char *const bad[] = { "\n--", "\r--", "\r\n\n--", "-\n--", "\r\r--" };
    static const char *const near[] = { "x--", "\r\n-", "\r\nx--", "\n-+", "--", "\r\n---" };
    static const char alphabet[] = "ab\r\n-cdefgh-\r";
    char data[60001];
    uint32_t x = 7;
    struct buf b = { 0 }, want = { 0 };

    (void)state;
    for (size_t i = 0; i < sizeof(data) - 1; i++) {
        x = x * 1103515245u + 12345u;
        data[i] = alphabet[(x >> 16) % (sizeof(alphabet) - 1)];
    }
    data[sizeof(data) - 1] = '\0';
    for (size_t i = 0; i < GW_ARRAY_LEN(bad); i++) {
        b.len = 0;
        buf_fmt(&b, "--%s\r\nContent-Disposition: form-data; name=input_reference; "
                    "filename=a.png\r\n\r\n", bnd);
        buf_add(&b, data, 40000);
        buf_str(&b, bad[i]);
        buf_str(&b, bnd);
        buf_str(&b, data + 40000);
        buf_fmt(&b, "\r\n--%s--", bnd);
        buf_add(&b, "", 1);
        check_error(b.p, bnd, FAIL_NONE, "invalid_multipart", "input_reference",
                    "bare CR or LF", 0);
    }
    /* "--boundary" after anything but a line break, or a line break and less of it:
     * data, many times over */
    b.len = 0;
    buf_fmt(&b, "--%s\r\nContent-Disposition: form-data; name=f; filename=a\r\n\r\n", bnd);
    for (size_t i = 0; i < GW_ARRAY_LEN(near); i++)
        for (int k = 0; k < 50; k++)
        {
            buf_add(&b, data + 100 * k, 997 + (size_t)k);
            buf_str(&b, "z"); /* not a line break: "--" + boundary after one is refused */
            buf_str(&b, near[i]);
            buf_str(&b, bnd);
        }
    buf_fmt(&b, "\r\n--%s--", bnd);
    buf_add(&b, "", 1);
    buf_add(&want, b.p, b.len);
    check_case(b.p, bnd, NULL, want.p, "part(0,f,file=1,ct=)\nend\n");
    buf_free(&b);
    buf_free(&want);
}

static void test_boundary_after_bare_line_break(void **state)
{
    static const char *const bad[] = {
        /* in a file, LF */
        "--b\r\nContent-Disposition: form-data; name=input_reference; filename=a.png\r\n\r\n"
        "PNG\n--b\r\nContent-Disposition: form-data; name=seconds\r\n\r\n99\r\n"
        "--b\r\nContent-Disposition: form-data; name=model\r\n\r\nveo2\r\n--b--",
        /* in a file, bare CR; and the close delimiter */
        "--b\r\nContent-Disposition: form-data; name=input_reference; filename=a.png\r\n\r\n"
        "PNG\r--b--\r\n\r\n--b--",
        /* LF after a CRLF that starts no delimiter */
        "--b\r\nContent-Disposition: form-data; name=input_reference; filename=a.png\r\n\r\n"
        "PNG\r\n-\n--b\r\n\r\n--b--",
        /* followed by anything: refused all the same */
        "--b\r\nContent-Disposition: form-data; name=input_reference; filename=a.png\r\n\r\n"
        "\r\n\n--bX\r\n--b--",
        /* at the start of a part's data */
        "--b\r\nContent-Disposition: form-data; name=input_reference; filename=a.png\r\n\r\n"
        "--b\r\nContent-Disposition: form-data; name=seconds\r\n\r\n99\r\n--b--",
    };
    struct result r;

    for (size_t i = 0; i < GW_ARRAY_LEN(bad); i++)
        check_error(bad[i], "b", FAIL_NONE, "invalid_multipart", "input_reference", "bare CR or LF",
                    0);
    /* in a text field; param NULL for a name that is not an API field */
    check_error("--b\r\nContent-Disposition: form-data; name=seconds\r\n\r\n8\n--b\r\n"
                "Content-Disposition: form-data; name=x\r\n\r\n99\r\n--b--",
                "b", FAIL_NONE, "invalid_multipart", "seconds", "bare CR or LF", 0);
    check_error("--b\r\nContent-Disposition: form-data; name=x\r\n\r\n--b--\r\n--b--",
                "b", FAIL_NONE, "invalid_multipart", NULL, "bare CR or LF", 0);

    /* near misses are data: a part of the boundary, not after a line break, another one */
    check_case("--bnd\r\nContent-Disposition: form-data; name=f; filename=a\r\n\r\n"
               "-bnd\n--bn\r--bn\r\nx--bnd\n-+bnd\n\n\r\n--bnx\r--Bnd\n\r\n--bnd--",
               "bnd", NULL,
               "--bnd\r\nContent-Disposition: form-data; name=f; filename=a\r\n\r\n"
               "-bnd\n--bn\r--bn\r\nx--bnd\n-+bnd\n\n\r\n--bnx\r--Bnd\n\r\n--bnd--",
               "part(0,f,file=1,ct=)\nend\n");
    /* and the op count stays small: runs end at a CR or just after a LF */
    run(text_lines, sizeof(text_lines) - 1, "b", NULL, 0, 64, NULL, FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_OK);
    assert_true(r.max_ops <= 2);
    result_free(&r);
}

static void test_lookalikes_in_data(void **state)
{
    /* "\r\n--bound-" then CR is a whole delimiter followed by neither "--" nor
     * padding + CRLF: refused rather than guessed at */
    const char *in =
        "\r\n--bound\r\n"
        "Content-Disposition: form-data; name=\"input_reference\"; filename=\"x\"\r\n\r\n"
        "\r\n--boun\r\r\n--bound-\r\n--boun\r\n"
        "\r\n--bound--";
    struct result r;

    run_all(in, strlen(in), "bound", "M", FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_ERR);
    assert_string_equal(r.err.code, "invalid_multipart");
    result_free(&r);

    /* near misses after bare line breaks too: "\r--boun", "\n--bounx" (a whole
     * "--bound" there is refused: test_boundary_after_bare_line_break) */
    const char *in2 =
        "\r\n--bound\r\n"
        "Content-Disposition: form-data; name=\"input_reference\"; filename=\"x\"\r\n\r\n"
        "\r\n--boun\r\r\n--boUnd\r\n--boun\r\n\r\n--\r--boun\n--bounx\r\n-bound\r\r\r\n"
        "\r\n--bound\r\n"
        "Content-Disposition: form-data; name=\"model\"\r\n\r\n"
        "ab\r\n--bou\rcd\r\n-\r\n--bounD"
        "\r\n--bound--";
    const char *want2 =
        "\r\n--bound\r\n"
        "Content-Disposition: form-data; name=\"input_reference\"; filename=\"x\"\r\n\r\n"
        "\r\n--boun\r\r\n--boUnd\r\n--boun\r\n\r\n--\r--boun\n--bounx\r\n-bound\r\r\r\n"
        "\r\n--bound\r\n"
        "Content-Disposition: form-data; name=\"model\"\r\n\r\n"
        "M"
        "\r\n--bound--";
    check_case(in2, "bound", "M", want2,
               "part(0,input_reference,file=1,ct=)\n"
               "part(1,model,file=0,ct=)\n"
               "field(model=ab\r\n--bou\rcd\r\n-\r\n--bounD/24)\n"
               "model(ab\r\n--bou\rcd\r\n-\r\n--bounD)\nend\n");
}

static void test_boundary_with_dashes(void **state)
{
    /* browsers' boundaries start with dashes: partial matches on '-' runs */
    const char *bnd = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
    struct buf in = { 0 }, want = { 0 };
    struct result r;

    buf_str(&in, "------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n"
                 "Content-Disposition: form-data; name=\"model\"\r\n\r\n"
                 "veo3\r\n-------WebKitFormBoundary7MA4YWxkTrZu0gW"
                 "\r\n------WebKitFormBoundary7MA4YWxkTrZu0gW--\r\n");
    buf_str(&want, "------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n"
                   "Content-Disposition: form-data; name=\"model\"\r\n\r\n"
                   "v"
                   "\r\n------WebKitFormBoundary7MA4YWxkTrZu0gW--\r\n");
    run_all(in.p, in.len, bnd, "v", FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_OK);
    assert_string_equal(r.out.p, want.p);
    assert_non_null(strstr(r.log.p, "field(model=veo3\r\n-------WebKit"));
    result_free(&r);
    buf_free(&in);
    buf_free(&want);
}

static void test_boundary_max_length(void **state)
{
    char bnd[GW_MP_BOUNDARY_MAX + 1];
    struct buf in = { 0 };
    struct result r;

    memset(bnd, 'q', GW_MP_BOUNDARY_MAX);
    bnd[GW_MP_BOUNDARY_MAX] = '\0';
    add_field(&in, bnd, "model", "veo2");
    add_field(&in, bnd, "prompt", "p");
    buf_fmt(&in, "\r\n--%s--", bnd); /* close right after an empty epilogue-less CRLF */
    run_all(in.p, in.len, bnd, "veo3", FAIL_NONE, &r);
    /* the empty line after "p\r\n" makes the prompt "p\r\n": still fine */
    assert_int_equal(r.rc, GW_OK);
    assert_non_null(strstr(r.log.p, "field(prompt=p\r\n/3)"));
    result_free(&r);
    buf_free(&in);
}

/* What the openai Node SDK sends (formdata-node, boundary "openai-..."). */
static const char node_body[] =
    "--openai-5bd1a2b6e0e4a7c3f0d2b9a6e5c4d3f2\r\n"
    "Content-Disposition: form-data; name=\"model\"\r\n\r\n"
    "sora-2\r\n"
    "--openai-5bd1a2b6e0e4a7c3f0d2b9a6e5c4d3f2\r\n"
    "Content-Disposition: form-data; name=\"prompt\"\r\n\r\n"
    "\xe8\xae\xa9\xe7\x89\x9b\xe5\xbf\xab\xe4\xb9\x90\xe7\x9a\x84\xe8\xb7\xb3\xe7\xa7\x91"
    "\xe7\x9b\xae\xe4\xb8\x89\r\n"
    "--openai-5bd1a2b6e0e4a7c3f0d2b9a6e5c4d3f2\r\n"
    "Content-Disposition: form-data; name=\"seconds\"\r\n\r\n"
    "8\r\n"
    "--openai-5bd1a2b6e0e4a7c3f0d2b9a6e5c4d3f2\r\n"
    "Content-Disposition: form-data; name=\"input_reference\"; filename=\"cow.png\"\r\n"
    "Content-Type: application/octet-stream\r\n\r\n"
    "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\r\n"
    "--openai-5bd1a2b6e0e4a7c3f0d2b9a6e5c4d3f2--\r\n\r\n";

static void test_node_sdk_body(void **state)
{
    struct gw_str ct =
        GW_STR("multipart/form-data; boundary=openai-5bd1a2b6e0e4a7c3f0d2b9a6e5c4d3f2");
    struct gw_str bnd;
    struct gw_error err;
    struct result r;
    char b[GW_MP_BOUNDARY_MAX + 1];

    assert_int_equal(gw_mp_boundary(ct, &bnd, &err), GW_OK);
    memcpy(b, bnd.p, bnd.len);
    b[bnd.len] = '\0';
    run_all(node_body, sizeof(node_body) - 1, b, "veo_3_1", FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_OK);
    assert_int_equal(r.delta, 1);
    assert_string_equal(r.log.p,
        "part(0,model,file=0,ct=)\nfield(model=sora-2/6)\nmodel(sora-2)\n"
        "part(1,prompt,file=0,ct=)\n"
        "field(prompt=\xe8\xae\xa9\xe7\x89\x9b\xe5\xbf\xab\xe4\xb9\x90\xe7\x9a\x84\xe8\xb7\xb3"
        "\xe7\xa7\x91\xe7\x9b\xae\xe4\xb8\x89/27)\n"
        "part(2,seconds,file=0,ct=)\nfield(seconds=8/1)\n"
        "part(3,input_reference,file=1,ct=application/octet-stream)\nend\n");
    /* the UTF-8 prompt passes byte for byte */
    assert_non_null(memmem(r.out.p, r.out.len, "\xe8\xae\xa9\xe7\x89\x9b", 6));
    assert_non_null(memmem(r.out.p, r.out.len, "\r\n\r\nveo_3_1\r\n--openai-", 20));
    result_free(&r);
}

/* What the Python SDK sends (httpx): fields first, then files; hex boundary. */
static void test_python_sdk_body(void **state)
{
    struct gw_str bnd;
    struct gw_error err;
    struct result r;
    struct buf in = { 0 };

    assert_int_equal(gw_mp_boundary(GW_STR("multipart/form-data; "
                                            "boundary=\"c6f2e0b7a3d94e1f8b2a5c7d9e0f1a2b\""),
                                    &bnd, &err), GW_OK);
    assert_int_equal(bnd.len, 32);
    buf_str(&in, "--c6f2e0b7a3d94e1f8b2a5c7d9e0f1a2b\r\n"
                 "Content-Disposition: form-data; name=\"prompt\"\r\n\r\nA calico cat\r\n"
                 "--c6f2e0b7a3d94e1f8b2a5c7d9e0f1a2b\r\n"
                 "Content-Disposition: form-data; name=\"model\"\r\n\r\nveo3\r\n"
                 "--c6f2e0b7a3d94e1f8b2a5c7d9e0f1a2b\r\n"
                 "Content-Disposition: form-data; name=\"input_reference\"; "
                 "filename=\"first.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\r\n"
                 "--c6f2e0b7a3d94e1f8b2a5c7d9e0f1a2b\r\n"
                 "Content-Disposition: form-data; name=\"input_reference[]\"; "
                 "filename=\"\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n"
                 "--c6f2e0b7a3d94e1f8b2a5c7d9e0f1a2b--\r\n");
    run_all(in.p, in.len, "c6f2e0b7a3d94e1f8b2a5c7d9e0f1a2b", "veo3-pro-frames", FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_OK);
    assert_string_equal(r.log.p,
        "part(0,prompt,file=0,ct=)\nfield(prompt=A calico cat/12)\n"
        "part(1,model,file=0,ct=)\nfield(model=veo3/4)\nmodel(veo3)\n"
        "part(2,input_reference,file=1,ct=image/png)\n"
        "part(3,input_reference[],file=1,ct=image/png)\nend\n");
    assert_int_equal(r.delta, 11);
    result_free(&r);
    buf_free(&in);
}

static void test_disposition_params(void **state)
{
    /* odd spacing around ';', case, other parameters once, raw UTF-8 in quotes, an
     * identity Content-Transfer-Encoding; a file part named model is not rewritten */
    const char *in =
        "--b\r\n"
        "Content-Disposition: form-data ;\tNAME=\"f\" ;  FILENAME=\"a b;c\xe6\x97\xa5.png\"; "
        "x-y=z\r\n"
        "content-type:  image/png  \r\nContent-Transfer-Encoding: Binary\r\n\r\nDATA\r\n"
        "--b\r\nContent-Disposition: form-data; name=\"model\"; filename=m.txt\r\n\r\n"
        "veo2\r\n--b--";

    check_case(in, "b", "REPLACED", in,
               "part(0,f,file=1,ct=image/png)\npart(1,model,file=1,ct=)\nend\n");
}

/*
 * Content-Disposition and part headers that common parsers read differently; each is
 * refused, with param the part's name when it is an API field and was read.
 */
static void test_disposition_differentials(void **state)
{
    static const struct {
        const char *headers;
        const char *param;
        const char *msg;
    } bad[] = {
        /* filename*: a file for busboy, Go and Werkzeug, a text field for
         * python-multipart (and, before, for the gateway, which rewrote it) */
        { "form-data; name=\"model\"; filename*=UTF-8''m.txt", "model", "filename*" },
        { "form-data; filename*=UTF-8''m.txt; name=\"model\"", "model", "filename*" },
        /* name*: Go and Werkzeug let it override name */
        { "form-data; name=\"prompt\"; name*=UTF-8''seconds", "prompt", "filename*" },
        { "form-data; name*=UTF-8''model", NULL, "filename*" },
        /* RFC 2231 continuations: Werkzeug appends name*0 to name, Go replaces it */
        { "form-data; name=\"sec\"; name*0=\"onds\"", NULL, "filename*" },
        { "form-data; name=\"seconds\"; filename*0=\"a.png\"", "seconds", "filename*" },
        /* a backslash: "model" for the RFC, "mo\\del" for busboy, Go, python-multipart */
        { "form-data; name=\"mo\\del\"", NULL, "backslash" },
        { "form-data; name=\"model\"; filename=\"C:\\cow.png\"", "model", "backslash" },
        { "form-data; name=\"model\"; x=\"a\\\"; name=\\\"seconds\"", "model", "backslash" },
        /* twice: busboy takes the first, python-multipart the last, Go refuses */
        { "form-data; name=model; name=seconds", "model", "two name" },
        { "form-data; name=model; NAME=seconds", "model", "two name" },
        { "form-data; name=size; filename=a; filename=b", "size", "twice" },
        { "form-data; name=size; x=1; X=2", "size", "twice" },
        /* what busboy refuses, and then skips the part: space around '=', empty
         * parameters, a trailing ';' */
        { "form-data; name =model", NULL, "malformed" },
        { "form-data; name= model", NULL, "malformed" },
        { "form-data; name=model;", "model", "malformed" },
        { "form-data; name=model;;", "model", "malformed" },
        { "form-data;; name=model", NULL, "malformed" },
        { "form-data;", NULL, "malformed" },
        /* non-tchar bytes unquoted, control characters quoted */
        { "form-data; name=m\xc3\xb6" "del", NULL, "malformed" },
        { "form-data; name=model; filename=a.png\xc3\xb6", "model", "malformed" },
        { "form-data; name=\"mo\x01" "del\"", NULL, "control character" },
        { "form-data; name=\"model\"; filename=\"a\x7f\"", "model", "control character" },
        /* not form-data, unterminated, too many parameters */
        { "attachment; name=model", "model", "not form-data" },
        { "form-data; name=\"model", NULL, "unterminated" },
        { "form-data; name=model; a=1; b=2; c=3; d=4; e=5; f=6; g=7; h=8", "model",
          "too many" },
    };
    static const struct {
        const char *headers; /* the part's other header lines */
        const char *msg;
    } bad_headers[] = {
        /* Go decodes quoted-printable, python-multipart base64 too */
        { "Content-Transfer-Encoding: base64\r\n", "Content-Transfer-Encoding" },
        { "Content-Transfer-Encoding: quoted-printable\r\n", "Content-Transfer-Encoding" },
        /* busboy and Go read the first copy, python-multipart the last */
        { "Content-Type: text/plain\r\ncontent-type: application/octet-stream\r\n",
          "two Content-Type" },
        { "Content-Transfer-Encoding: 8bit\r\nContent-Transfer-Encoding: base64\r\n",
          "two Content-Transfer-Encoding" },
    };
    char in[512];

    for (size_t i = 0; i < GW_ARRAY_LEN(bad); i++) {
        snprintf(in, sizeof(in), "--b\r\nContent-Disposition: %s\r\n\r\nx\r\n--b--",
                 bad[i].headers);
        check_error(in, "b", FAIL_NONE, "invalid_multipart", bad[i].param, bad[i].msg, 0);
    }
    /* a header line holds no NUL for snprintf: that one by hand */
    {
        static const char nul[] = "--b\r\nContent-Disposition: form-data; name=\"a\0\"\r\n"
                                  "\r\nx\r\n--b--";
        struct result r;

        run_all(nul, sizeof(nul) - 1, "b", "veo3", FAIL_NONE, &r);
        assert_int_equal(r.rc, GW_ERR);
        assert_non_null(strstr(r.err.message, "control character"));
        result_free(&r);
    }
    for (size_t i = 0; i < GW_ARRAY_LEN(bad_headers); i++) {
        snprintf(in, sizeof(in), "--b\r\nContent-Disposition: form-data; name=model\r\n"
                                 "%s\r\nveo2\r\n--b--", bad_headers[i].headers);
        check_error(in, "b", FAIL_NONE, "invalid_multipart", "model", bad_headers[i].msg, 0);
    }
    /* the identity encodings and up to GW_MP_PARAMS_MAX parameters are fine */
    check_case("--b\r\nContent-Disposition: form-data; name=model; a=1; b=2; c=3; d=4; e=5; "
               "f=\"6\"; g=7\r\nContent-Transfer-Encoding: 7bit\r\n\r\nveo2\r\n--b--",
               "b", NULL, "--b\r\nContent-Disposition: form-data; name=model; a=1; b=2; c=3; "
               "d=4; e=5; f=\"6\"; g=7\r\nContent-Transfer-Encoding: 7bit\r\n\r\nveo2\r\n"
               "--b--", "part(0,model,file=0,ct=)\nfield(model=veo2/4)\nmodel(veo2)\nend\n");
}

static void test_long_text_field(void **state)
{
    struct buf in = { 0 };
    struct result r;
    char *prompt = malloc(5000);

    assert_non_null(prompt);
    memset(prompt, 'p', 4999);
    prompt[4999] = '\0';
    add_field(&in, BND, "prompt", prompt);
    add_close(&in, BND);
    run_all(in.p, in.len, BND, NULL, FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_OK);
    /* on_field sees the first GW_MP_VALUE_MAX bytes and the real length */
    assert_non_null(strstr(r.log.p, "/4999)"));
    const char *v = strstr(r.log.p, "field(prompt=") + strlen("field(prompt=");
    assert_int_equal(strstr(r.log.p, "/4999)") - v, GW_MP_VALUE_MAX);
    assert_int_equal(r.out.len, in.len);
    result_free(&r);
    buf_free(&in);
    free(prompt);
}

/* ---- errors ---- */

static void check_error(const char *in, const char *bnd, int fail, const char *code,
                        const char *param, const char *msg_part, int in_finish)
{
    struct result r;

    run_all(in, strlen(in), bnd, "veo3", fail, &r);
    assert_int_equal(r.rc, GW_ERR);
    assert_int_equal(r.failed_in_finish, in_finish);
    assert_string_equal(r.err.code, code);
    if (param == NULL)
        assert_null(r.err.param);
    else
        assert_string_equal(r.err.param, param);
    if (msg_part != NULL && strstr(r.err.message, msg_part) == NULL)
        fail_msg("\"%s\" is not in \"%s\" (%s)", msg_part, r.err.message, in);
    result_free(&r);
}

static void test_errors(void **state)
{
    check_error("--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--", "b", FAIL_NONE,
                "invalid_multipart", NULL, "no name", 0);
    check_error("--b\r\nContent-Disposition: form-data; name=\"\"\r\n\r\nx\r\n--b--", "b",
                FAIL_NONE, "invalid_multipart", NULL, "no name", 0);
    check_error("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", "b", FAIL_NONE,
                "invalid_multipart", NULL, "no name", 0);
    check_error("--b\r\nContent-Disposition: attachment; name=a\r\n\r\nx\r\n--b--", "b",
                FAIL_NONE, "invalid_multipart", NULL, "form-data", 0);
    check_error("--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\nx\r\n--b--", "b",
                FAIL_NONE, "invalid_multipart", NULL, "unterminated", 0);
    check_error("--b\r\nContent-Disposition: form-data; name=a; name=b\r\n\r\nx\r\n--b--", "b",
                FAIL_NONE, "invalid_multipart", NULL, "two name", 0);
    check_error("--b\r\nContent-Disposition: form-data; name=a\r\n"
                "Content-Disposition: form-data; name=b\r\n\r\nx\r\n--b--", "b",
                FAIL_NONE, "invalid_multipart", NULL, "two Content-Disposition", 0);
    check_error("--b\r\nContent-Disposition: form-data; name=a\n\r\nx\r\n--b--", "b",
                FAIL_NONE, "invalid_multipart", NULL, "CRLF", 0);
    check_error("--b\r\nContent-Disposition: form-data; name=a\r\r\n\r\nx\r\n--b--", "b",
                FAIL_NONE, "invalid_multipart", NULL, "CRLF", 0);
    check_error("--b\r\nContent-Disposition: form-data;\r\n name=a\r\n\r\nx\r\n--b--", "b",
                FAIL_NONE, "invalid_multipart", NULL, "header line", 0);
    check_error("--b\r\nContent-Disposition : form-data; name=a\r\n\r\nx\r\n--b--", "b",
                FAIL_NONE, "invalid_multipart", NULL, "header line", 0);
    check_error("--b\r\nContent-Disposition: form-data; name=a; junk\r\n\r\nx\r\n--b--", "b",
                FAIL_NONE, "invalid_multipart", NULL, "malformed Content-Disposition", 0);
    /* after a delimiter: only "--" or padding CRLF */
    check_error("--bX\r\n", "b", FAIL_NONE, "invalid_multipart", NULL, "boundary line", 0);
    check_error("--b-x", "b", FAIL_NONE, "invalid_multipart", NULL, "boundary line", 0);
    check_error("--b \tx\r\n", "b", FAIL_NONE, "invalid_multipart", NULL, "boundary line", 0);
    check_error("--b\rx", "b", FAIL_NONE, "invalid_multipart", NULL, "boundary line", 0);
    /* two model parts could be read differently upstream */
    check_error("--b\r\nContent-Disposition: form-data; name=model\r\n\r\nveo2\r\n"
                "--b\r\nContent-Disposition: form-data; name=model\r\n\r\nveo3\r\n--b--", "b",
                FAIL_NONE, "invalid_multipart", "model", "twice", 0);
    /* truncated bodies: finish refuses */
    check_error("", "b", FAIL_NONE, "invalid_multipart", NULL, "ended before", 1);
    check_error("\r\n\r\n", "b", FAIL_NONE, "invalid_multipart", NULL, "ended before", 1);
    check_error("just a preamble", "b", FAIL_NONE, "invalid_multipart", NULL,
                "must start with its boundary", 0);
    check_error("--b\r\nContent-Disposition: form-data; name=model\r\n\r\nveo2\r\n--b", "b",
                FAIL_NONE, "invalid_multipart", NULL, "ended before", 1);
    check_error("--b\r\nContent-Disposition: form-data; name=model\r\n\r\nveo2\r\n--b-", "b",
                FAIL_NONE, "invalid_multipart", NULL, "ended before", 1);
    check_error("--b\r\nContent-Disposition: form-data; name=x\r\n\r\ndata\r\n--", "b",
                FAIL_NONE, "invalid_multipart", NULL, "ended before", 1);
    check_error("--b\r\nContent-Disposition: form-data; name=x\r\n", "b",
                FAIL_NONE, "invalid_multipart", NULL, "ended before", 1);
}

static void test_more_malformed(void **state)
{
    static const char *const bad_disposition[] = {
        "form-data; =x", "form-data; name", "form-data; name=", "form-data; name=;",
        "form-data; name=\"a\\", "form-data name=a",
    };
    char in[256];

    for (size_t i = 0; i < GW_ARRAY_LEN(bad_disposition); i++) {
        snprintf(in, sizeof(in), "--b\r\nContent-Disposition: %s\r\n\r\nx\r\n--b--",
                 bad_disposition[i]);
        check_error(in, "b", FAIL_NONE, "invalid_multipart", NULL, NULL, 0);
    }
}

/* An empty replacement is allowed: the value simply disappears. */
static void test_model_replaced_by_nothing(void **state)
{
    check_case("--b\r\nContent-Disposition: form-data; name=model\r\n\r\nveo2\r\n--b--",
               "b", "", "--b\r\nContent-Disposition: form-data; name=model\r\n\r\n\r\n--b--",
               NULL);
}

/*
 * A full op array, in whatever state the scanner is: nothing classified, and the
 * scan then goes on from where it stopped.
 */
static void test_full_ops_every_state(void **state)
{
    struct buf in = { 0 };
    struct gw_mp *mp = malloc(sizeof(*mp));
    struct gw_mp_op ops[64];

    assert_non_null(mp);
    buf_str(&in, "\r\n\r\n--b\r\nContent-Disposition: form-data; name=model\r\n\r\n"
                 "ve\r\n--x\r\n--b\r\nContent-Disposition: form-data; name=f; filename=a\r\n\r\n"
                 "-d\n-\r-x\n\r\n-\r\n--b--\r\nepilogue");
    for (size_t k = 0; k <= in.len; k++) {
        size_t nops = 0, done = 0;

        assert_int_equal(gw_mp_init(mp, GW_STR("b"), NULL, NULL), GW_OK);
        /* scan k bytes one at a time, dropping the ops (only the state matters) */
        while (done < k) {
            nops = 0;
            ssize_t n = gw_mp_execute(mp, in.p + done, 1, ops, &nops, 64);
            assert_true(n == 1);
            done++;
        }
        /* it may still scan bytes that need no op (a delimiter becoming pending) */
        uint64_t classified = mp->classified;
        for (size_t cap = 1; cap <= 2; cap++) {
            nops = cap;
            ssize_t n = gw_mp_execute(mp, in.p + done, in.len - done, ops, &nops, cap);
            assert_true(n >= 0 && (size_t)n <= in.len - done);
            done += (size_t)n;
            assert_int_equal(nops, cap);
            assert_int_equal(mp->classified, classified);
            assert_true(mp->scanned - mp->classified <= GW_MP_MAX_PENDING);
        }
        nops = 0;
        assert_int_equal(gw_mp_execute(mp, in.p + done, in.len - done, ops, &nops, 64),
                         (ssize_t)(in.len - done));
        assert_int_equal(gw_mp_finish(mp, ops, &nops, 64), GW_OK);
        assert_int_equal(mp->classified, in.len);
    }
    buf_free(&in);
    free(mp);
}

static void test_name_too_long(void **state)
{
    char name[GW_MP_NAME_MAX + 2];
    struct buf in = { 0 };
    struct result r;

    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    add_field(&in, "b", name, "x");
    add_close(&in, "b");
    run_all(in.p, in.len, "b", NULL, FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_ERR);
    assert_non_null(strstr(r.err.message, "longer than 128"));
    result_free(&r);
    buf_free(&in);

    buf_fmt(&in, "--b\r\nContent-Disposition: form-data; name=%s\r\n\r\ny\r\n--b--", name);
    run(in.p, in.len, "b", NULL, 0, 64, NULL, FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_ERR);
    assert_non_null(strstr(r.err.message, "longer than 128"));
    result_free(&r);
    buf_free(&in);

    /* exactly GW_MP_NAME_MAX is fine, quoted or as a token */
    name[GW_MP_NAME_MAX] = '\0';
    add_field(&in, "b", name, "x");
    buf_fmt(&in, "--b\r\nContent-Disposition: form-data; name=%s\r\n\r\ny\r\n", name);
    add_close(&in, "b");
    run_all(in.p, in.len, "b", NULL, FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_OK);
    result_free(&r);
    buf_free(&in);
}

static void test_headers_too_large(void **state)
{
    struct buf in = { 0 };
    struct result r;
    char *pad = malloc(GW_MP_HEADERS_MAX);

    assert_non_null(pad);
    /* a header block of exactly GW_MP_HEADERS_MAX bytes is accepted */
    const char *head = "--b\r\nContent-Disposition: form-data; name=a\r\nX-Pad: ";
    size_t fixed = strlen("Content-Disposition: form-data; name=a\r\nX-Pad: \r\n\r\n");
    memset(pad, 'x', GW_MP_HEADERS_MAX - fixed);
    pad[GW_MP_HEADERS_MAX - fixed] = '\0';
    buf_fmt(&in, "%s", head);
    buf_str(&in, pad);
    buf_str(&in, "\r\n\r\nv\r\n--b--");
    run(in.p, in.len, "b", NULL, 0, 64, NULL, FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_OK);
    result_free(&r);
    buf_free(&in);

    buf_str(&in, head);
    buf_str(&in, pad);
    buf_str(&in, "y\r\n\r\nv\r\n--b--");
    run_all(in.p, in.len, "b", NULL, FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_ERR);
    assert_string_equal(r.err.message, "part headers too large");
    assert_int_equal(r.err.status, 400);
    assert_string_equal(r.err.type, "invalid_request_error");
    result_free(&r);
    buf_free(&in);
    free(pad);
}

static void test_model_too_long(void **state)
{
    struct buf in = { 0 };
    struct result r;
    char v[GW_MP_VALUE_MAX + 2];

    memset(v, 'm', sizeof(v) - 1);
    v[sizeof(v) - 1] = '\0';
    add_field(&in, "b", "model", v);
    add_close(&in, "b");
    run_all(in.p, in.len, "b", "veo3", FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_ERR);
    assert_string_equal(r.err.code, "invalid_value");
    assert_string_equal(r.err.param, "model");
    assert_null(strstr(r.log.p != NULL ? r.log.p : "", "model("));
    result_free(&r);
    buf_free(&in);

    /* the limit crossed by bytes that looked like a delimiter until the last one */
    char w[GW_MP_VALUE_MAX + 8];
    memset(w, 'm', GW_MP_VALUE_MAX - 2);
    memcpy(w + GW_MP_VALUE_MAX - 2, "\r\n--x", 6); /* NUL included */
    add_field(&in, "b", "model", w);
    add_close(&in, "b");
    run_all(in.p, in.len, "b", "veo3", FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_ERR);
    assert_string_equal(r.err.code, "invalid_value");
    result_free(&r);
    buf_free(&in);

    /* exactly GW_MP_VALUE_MAX, ending in CRs that look like a delimiter start */
    v[GW_MP_VALUE_MAX] = '\0';
    v[GW_MP_VALUE_MAX - 1] = '\r';
    v[GW_MP_VALUE_MAX - 2] = '\r';
    add_field(&in, "b", "model", v);
    add_close(&in, "b");
    run_all(in.p, in.len, "b", "veo3", FAIL_NONE, &r);
    assert_int_equal(r.rc, GW_OK);
    assert_int_equal(r.delta, 4 - GW_MP_VALUE_MAX);
    result_free(&r);
    buf_free(&in);
}

static const char hook_body[] =
    "--b\r\nContent-Disposition: form-data; name=model\r\n\r\nveo2\r\n"
    "--b\r\nContent-Disposition: form-data; name=input_reference; filename=a.png\r\n\r\n"
    "PNG\r\n"
    "--b--\r\n";

static void test_hook_errors(void **state)
{
    struct result r;

    /* each hook's error is kept as the hook set it, and stops the scan */
    run_all(hook_body, sizeof(hook_body) - 1, "b", "veo3", FAIL_PART, &r);
    assert_int_equal(r.rc, GW_ERR);
    assert_string_equal(r.err.code, "too_many_images");
    assert_string_equal(r.err.param, "input_reference");
    assert_string_equal(r.log.p, "part(0,model,file=0,ct=)\n");
    result_free(&r);

    run_all(hook_body, sizeof(hook_body) - 1, "b", "veo3", FAIL_FIELD, &r);
    assert_int_equal(r.rc, GW_ERR);
    assert_string_equal(r.err.code, "invalid_value");
    assert_string_equal(r.log.p, "part(0,model,file=0,ct=)\nfield(model=veo2/4)\n");
    assert_null(memmem(r.out.p, r.out.len, "veo", 3));
    result_free(&r);

    run_all(hook_body, sizeof(hook_body) - 1, "b", "veo3", FAIL_MODEL, &r);
    assert_int_equal(r.rc, GW_ERR);
    assert_int_equal(r.err.status, 403);
    assert_string_equal(r.err.code, "model_not_allowed");
    assert_null(memmem(r.out.p, r.out.len, "veo", 3));
    result_free(&r);
}

/* on_end refuses: the close delimiter never reaches the upstream. */
static void test_on_end_error_keeps_close_delimiter(void **state)
{
    struct result r;

    run_all(hook_body, sizeof(hook_body) - 1, "b", "veo3", FAIL_END, &r);
    assert_int_equal(r.rc, GW_ERR);
    assert_string_equal(r.err.code, "missing_field");
    assert_string_equal(r.err.param, "prompt");
    assert_string_equal(r.log.p, "part(0,model,file=0,ct=)\nfield(model=veo2/4)\nmodel(veo2)\n"
                                 "part(1,input_reference,file=1,ct=)\nend\n");
    /* everything up to the file's data went out, not "\r\n--b--" */
    const char *close = strstr(hook_body, "\r\n--b--");
    assert_int_equal(r.classified, (size_t)(close - hook_body));
    assert_null(memmem(r.out.p, r.out.len, "--b--", 5));
    result_free(&r);
}

/* A hook returning GW_ERR without filling err still gives a usable error. */
static int bare_fail(void *arg, const struct gw_mp_part *part, struct gw_error *err)
{
    return GW_ERR;
}

static void test_hook_error_without_message(void **state)
{
    static const struct gw_mp_hooks h = { .on_part = bare_fail };
    struct gw_mp mp;
    struct gw_mp_op ops[8];
    size_t nops = 0;

    assert_int_equal(gw_mp_init(&mp, GW_STR("b"), &h, NULL), GW_OK);
    assert_int_equal(gw_mp_execute(&mp, hook_body, sizeof(hook_body) - 1, ops, &nops, 8), GW_ERR);
    assert_int_equal(mp.err.status, 400);
    assert_string_equal(mp.err.code, "invalid_multipart");
    assert_int_equal(gw_mp_execute(&mp, "x", 1, ops, &nops, 8), GW_ERR);
}

/* No hooks at all: the body passes unchanged, the model value as a LITERAL of itself. */
static void test_null_hooks(void **state)
{
    struct gw_mp mp;
    struct gw_mp_op ops[16];
    size_t nops = 0;

    assert_int_equal(gw_mp_init(&mp, GW_STR("b"), NULL, NULL), GW_OK);
    assert_int_equal(gw_mp_execute(&mp, hook_body, sizeof(hook_body) - 1, ops, &nops, 16),
                     (ssize_t)sizeof(hook_body) - 1);
    assert_int_equal(gw_mp_finish(&mp, ops, &nops, 16), GW_OK);
    assert_int_equal(mp.delta, 0);
    assert_int_equal(mp.seen_model, 1);
    assert_int_equal(ops[1].kind, GW_MP_DROP);
    assert_int_equal(ops[2].kind, GW_MP_LITERAL);
    assert_memory_equal(ops[2].p, "veo2", 4);
}

/* A full op array: nothing scanned, nothing lost. */
static void test_full_ops(void **state)
{
    static const char head[] = "--b\r\nContent-Disposition: form-data; name=f\r\n\r\n";
    struct gw_mp mp;
    struct gw_mp_op ops[2], big[16];
    size_t nops = 0;

    assert_int_equal(gw_mp_init(&mp, GW_STR("b"), NULL, NULL), GW_OK);
    assert_int_equal(gw_mp_execute(&mp, head, sizeof(head) - 1, big, &nops, 16),
                     (ssize_t)sizeof(head) - 1);
    uint64_t scanned = mp.scanned;
    nops = 2;
    assert_int_equal(gw_mp_execute(&mp, "-data", 5, ops, &nops, 2), 0);
    assert_int_equal(nops, 2);
    assert_int_equal(mp.scanned, scanned);
}

static void test_boundary_param(void **state)
{
    struct {
        const char *ct;
        const char *want; /* NULL: refused */
    } cases[] = {
        { "multipart/form-data; boundary=abc", "abc" },
        { "Multipart/Form-Data;BOUNDARY=abc", "abc" },
        { "multipart/form-data; charset=utf-8; boundary=\"a b:c=d\"", "a b:c=d" },
        { "multipart/form-data ; boundary = ----WebKitFormBoundaryx ", "----WebKitFormBoundaryx" },
        { "multipart/form-data; boundary=\"a/b=c?\"", "a/b=c?" },
        { "multipart/form-data; boundary=\"'()+_,-./:=? x\"", "'()+_,-./:=? x" },
        /* unquoted, only a token: Werkzeug reads "a/b=c?" as "a" */
        { "multipart/form-data; boundary=a/b=c?", NULL },
        { "multipart/form-data; boundary=ab:c", NULL },
        /* RFC 2231: Go and Werkzeug let boundary* override boundary */
        { "multipart/form-data; boundary=abc; boundary*=UTF-8''evil", NULL },
        { "multipart/form-data; boundary*=UTF-8''evil", NULL },
        { "multipart/form-data; boundary=abc; boundary*0=evil", NULL },
        /* no quoted-pair anywhere: python splits parameters at another ';' after "\\" */
        { "multipart/form-data; boundary=\"abc\"; charset=\"x\\\"y\"", NULL },
        { "multipart/form-data; x=\"a\\\\\"; boundary=abc; y=\"; boundary=evil", NULL },
        /* not bchars, or a final space */
        { "multipart/form-data; boundary=\"a%22b\"", NULL },
        { "multipart/form-data; boundary=ab!c", NULL },
        { "multipart/form-data; boundary=\"a@b\"", NULL },
        { "multipart/form-data; boundary=\"ab \"", NULL },
        { "multipart/form-data;", NULL },
        { "multipart/form-data", NULL },
        { "multipart/form-data; boundary=", NULL },
        { "multipart/form-data; boundary=\"\"", NULL },
        { "multipart/form-data; boundary=\"abc", NULL },
        { "multipart/form-data; boundary=\"a\\bc\"", NULL },
        { "multipart/form-data; boundary=a; boundary=b", NULL },
        { "multipart/mixed; boundary=abc", NULL },
        { "application/json", NULL },
        { "multipart/form-data; boundary=a\x01", NULL },
        { "multipart/form-data, boundary=a", NULL },
        { "multipart/form-data; =a", NULL },
        { "multipart/form-data; boundary", NULL },
        { "multipart/form-data; boundary=\"ab\\", NULL },
        { "multipart", NULL },
        { "", NULL },
    };
    struct gw_str b;
    struct gw_error err;

    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        int rc = gw_mp_boundary((struct gw_str){ cases[i].ct, strlen(cases[i].ct) }, &b, &err);
        if (cases[i].want == NULL) {
            assert_int_equal(rc, GW_ERR);
            assert_int_equal(err.status, 400);
            assert_string_equal(err.code, "invalid_multipart");
            assert_null(err.param);
            continue;
        }
        assert_int_equal(rc, GW_OK);
        assert_int_equal(b.len, strlen(cases[i].want));
        assert_memory_equal(b.p, cases[i].want, b.len);
    }

    assert_int_equal(gw_mp_boundary((struct gw_str){ NULL, 0 }, &b, &err), GW_ERR);

    char ct[200];
    snprintf(ct, sizeof(ct), "multipart/form-data; boundary=%070d", 7);
    assert_int_equal(gw_mp_boundary((struct gw_str){ ct, strlen(ct) }, &b, &err), GW_OK);
    assert_int_equal(b.len, 70);
    snprintf(ct, sizeof(ct), "multipart/form-data; boundary=%071d", 7);
    assert_int_equal(gw_mp_boundary((struct gw_str){ ct, strlen(ct) }, &b, &err), GW_ERR);
    assert_non_null(strstr(err.message, "70"));
}

static void test_init_refuses_bad_boundary(void **state)
{
    struct gw_mp mp;
    char big[GW_MP_BOUNDARY_MAX + 1];

    memset(big, 'a', sizeof(big));
    assert_int_equal(gw_mp_init(&mp, GW_STR(""), NULL, NULL), GW_ERR);
    assert_int_equal(gw_mp_init(&mp, GW_STR("a\r\nb"), NULL, NULL), GW_ERR);
    assert_int_equal(gw_mp_init(&mp, (struct gw_str){ big, sizeof(big) }, NULL, NULL), GW_ERR);
    assert_int_equal(mp.err.status, 400);
    size_t nops = 0;
    struct gw_mp_op ops[1];
    assert_int_equal(gw_mp_execute(&mp, "x", 1, ops, &nops, 1), GW_ERR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_before_small_file),
        cmocka_unit_test(test_model_after_small_file),
        cmocka_unit_test(test_model_same_length),
        cmocka_unit_test(test_model_unchanged),
        cmocka_unit_test(test_model_empty_value),
        cmocka_unit_test(test_model_before_large_file),
        cmocka_unit_test(test_model_after_large_file),
        cmocka_unit_test(test_cr_before_every_byte),
        cmocka_unit_test(test_ops_per_slice),
        cmocka_unit_test(test_model_absent),
        cmocka_unit_test(test_first_delimiter_without_crlf),
        cmocka_unit_test(test_preamble_epilogue),
        cmocka_unit_test(test_preamble_refused),
        cmocka_unit_test(test_transport_padding_refused),
        cmocka_unit_test(test_boundary_after_bare_line_break),
        cmocka_unit_test(test_long_boundary_skip),
        cmocka_unit_test(test_lookalikes_in_data),
        cmocka_unit_test(test_boundary_with_dashes),
        cmocka_unit_test(test_boundary_max_length),
        cmocka_unit_test(test_node_sdk_body),
        cmocka_unit_test(test_python_sdk_body),
        cmocka_unit_test(test_disposition_params),
        cmocka_unit_test(test_disposition_differentials),
        cmocka_unit_test(test_long_text_field),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_more_malformed),
        cmocka_unit_test(test_model_replaced_by_nothing),
        cmocka_unit_test(test_full_ops_every_state),
        cmocka_unit_test(test_name_too_long),
        cmocka_unit_test(test_headers_too_large),
        cmocka_unit_test(test_model_too_long),
        cmocka_unit_test(test_hook_errors),
        cmocka_unit_test(test_on_end_error_keeps_close_delimiter),
        cmocka_unit_test(test_hook_error_without_message),
        cmocka_unit_test(test_null_hooks),
        cmocka_unit_test(test_full_ops),
        cmocka_unit_test(test_boundary_param),
        cmocka_unit_test(test_init_refuses_bad_boundary),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
