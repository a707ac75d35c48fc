/*
 * fuzz_multipart.c - the multipart scanner against arbitrary bodies.
 *
 * Input: byte 0 picks the boundary and the replacement model, byte 1 the op
 * capacity of the sliced run, bytes 2-3 seed the slice sizes; the rest is the body.
 * The body is scanned three ways - whole, sliced with a small op array, and whole
 * with a hook that keeps the model - and these must hold (abort() otherwise):
 *   - the same result, error and hook calls whatever the slicing;
 *   - the same upstream body whatever the slicing, when no error came mid-scan;
 *   - ops never classify bytes the caller does not hold, and
 *     scanned - classified <= GW_MP_MAX_PENDING after every call;
 *   - output length == classified + delta;
 *   - with the model kept, an accepted body goes upstream byte for byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "multipart.h"

#define CHECK(c)        \
    do {                \
        if (!(c))       \
            abort();    \
    } while (0)

static const char *const boundaries[] = {
    "b",
    "--",
    "XyZ",
    "openai-5bd1a2b6e0e4a7c3f0d2b9a6e5c4d3f2",
    "----WebKitFormBoundary7MA4YWxkTrZu0gW",
    "c6f2e0b7a3d94e1f8b2a5c7d9e0f1a2b",
    "a b",
    "0123456789012345678901234567890123456789012345678901234567890123456789",
};

static const char *const replacements[] = { NULL, "", "veo3", "veo_3_1-fast-components-4K" };

struct run {
    uint64_t hooks;      /* FNV-1a of the hook calls and their arguments */
    const char *repl;
    unsigned char *out;
    size_t out_len;
    int rc;
    int in_finish;       /* the error came from gw_mp_finish */
    struct gw_error err;
};

static void mix(struct run *r, const void *p, size_t n)
{
    const unsigned char *b = p;

    for (size_t i = 0; i < n; i++)
        r->hooks = (r->hooks ^ b[i]) * 1099511628211u;
}

static int on_part(void *arg, const struct gw_mp_part *part, struct gw_error *err)
{
    struct run *r = arg;

    mix(r, "P", 1);
    mix(r, part->name.p, part->name.len);
    mix(r, &part->has_filename, sizeof(part->has_filename));
    mix(r, &part->index, sizeof(part->index));
    if (part->content_type.p != NULL)
        mix(r, part->content_type.p, part->content_type.len);
    /* refuse some parts, as the capability check does */
    if (part->name.len == 3 && memcmp(part->name.p, "bad", 3) == 0)
        return gw_error_set(err, 400, "invalid_request_error", "bad", NULL, "bad part");
    return GW_OK;
}

static int on_field(void *arg, const struct gw_mp_field *f, struct gw_error *err)
{
    struct run *r = arg;

    CHECK(f->value.len <= GW_MP_VALUE_MAX && f->value.len <= f->total_len);
    mix(r, "F", 1);
    mix(r, f->name.p, f->name.len);
    mix(r, f->value.p, f->value.len);
    mix(r, &f->total_len, sizeof(f->total_len));
    return GW_OK;
}

static int on_model(void *arg, struct gw_str value, struct gw_str *out, struct gw_error *err)
{
    struct run *r = arg;

    mix(r, "M", 1);
    mix(r, value.p, value.len);
    if (r->repl != NULL)
        *out = (struct gw_str){ r->repl, strlen(r->repl) };
    return GW_OK;
}

static int on_end(void *arg, struct gw_error *err)
{
    struct run *r = arg;

    mix(r, "E", 1);
    return GW_OK;
}

static const struct gw_mp_hooks hooks = { on_part, on_field, on_model, on_end };

static void out_add(struct run *r, const void *p, size_t n)
{
    r->out = realloc(r->out, r->out_len + n + 1);
    CHECK(r->out != NULL);
    memcpy(r->out + r->out_len, p, n);
    r->out_len += n;
}

/*
 * Apply ops to the held bytes from *off (the first unclassified one); `held` bytes
 * are available in all.
 */
static void apply(struct run *r, const unsigned char *base, size_t *off, size_t held,
                  const struct gw_mp_op *ops, size_t nops)
{
    for (size_t k = 0; k < nops; k++) {
        CHECK(ops[k].len > 0);
        if (ops[k].kind == GW_MP_LITERAL) {
            out_add(r, ops[k].p, ops[k].len);
            continue;
        }
        CHECK(ops[k].kind == GW_MP_PASS || ops[k].kind == GW_MP_DROP);
        CHECK(*off + ops[k].len <= held);
        if (ops[k].kind == GW_MP_PASS)
            out_add(r, base + *off, ops[k].len);
        *off += ops[k].len;
    }
}

/* Scan body in slices from the seed (0: whole) with cap ops per call. */
static void run(struct run *r, struct gw_mp *mp, const char *bnd, const unsigned char *body,
                size_t len, uint32_t seed, size_t cap)
{
    struct gw_mp_op ops[64];
    size_t classified = 0, scanned = 0, avail = 0;

    r->out = NULL;
    r->out_len = 0;
    r->hooks = 14695981039346656037u;
    r->in_finish = 0;
    CHECK(gw_mp_init(mp, (struct gw_str){ bnd, strlen(bnd) }, &hooks, r) == GW_OK);
    r->rc = GW_OK;
    while (avail < len) {
        size_t step = len - avail;
        if (seed != 0) {
            seed = seed * 1103515245u + 12345u;
            step = 1 + (seed >> 16) % (seed & 0x100 ? 4 : 97);
            if (step > len - avail)
                step = len - avail;
        }
        avail += step;
        while (scanned < avail) {
            size_t nops = 0;
            ssize_t n = gw_mp_execute(mp, (const char *)body + scanned, avail - scanned, ops,
                                      &nops, cap);
            CHECK(nops <= cap);
            /* what the caller holds: up to what was scanned, all it has after an error */
            apply(r, body, &classified, n >= 0 ? scanned + (size_t)n : avail, ops, nops);
            if (n == GW_ERR) {
                r->rc = GW_ERR;
                goto done;
            }
            CHECK(n >= 0 && (size_t)n <= avail - scanned);
            CHECK(n > 0 || nops > 0);
            scanned += (size_t)n;
            CHECK(mp->scanned == scanned && mp->classified == classified);
            CHECK(scanned - classified <= GW_MP_MAX_PENDING);
            CHECK((int64_t)r->out_len == (int64_t)classified + mp->delta);
        }
    }
    {
        size_t nops = 0;
        r->rc = gw_mp_finish(mp, ops, &nops, cap);
        apply(r, body, &classified, scanned, ops, nops);
        r->in_finish = r->rc != GW_OK;
        if (r->rc == GW_OK)
            CHECK(classified == len);
    }
done:
    if (r->rc != GW_OK) {
        size_t nops = 0;
        CHECK(mp->err.status == 400 && mp->err.message[0] != '\0');
        CHECK(gw_mp_execute(mp, "x", 1, ops, &nops, cap) == GW_ERR);
        CHECK(gw_mp_finish(mp, ops, &nops, cap) == GW_ERR && nops == 0);
    }
    r->err = mp->err;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct gw_mp mp;
    struct run a = { 0 }, b = { 0 }, c = { 0 };

    if (size < 4)
        return 0;
    const char *bnd = boundaries[data[0] % GW_ARRAY_LEN(boundaries)];
    const char *repl = replacements[(data[0] >> 4) % GW_ARRAY_LEN(replacements)];
    size_t cap = 1 + data[1] % 5;
    uint32_t seed = (uint32_t)data[2] << 8 | data[3] | 1;
    const unsigned char *body = data + 4;
    size_t len = size - 4;

    a.repl = b.repl = repl;
    run(&a, &mp, bnd, body, len, 0, 64);
    run(&b, &mp, bnd, body, len, seed, cap);
    CHECK(a.rc == b.rc && a.in_finish == b.in_finish && a.hooks == b.hooks);
    if (a.rc != GW_OK) {
        CHECK(a.err.status == b.err.status && strcmp(a.err.message, b.err.message) == 0);
        CHECK(a.err.code == b.err.code && a.err.param == b.err.param);
    }
    if (a.rc == GW_OK || a.in_finish)
        CHECK(a.out_len == b.out_len && (a.out_len == 0 || memcmp(a.out, b.out, a.out_len) == 0));

    /* keeping the model changes nothing */
    c.repl = NULL;
    run(&c, &mp, bnd, body, len, seed ^ 0x5555, 2);
    CHECK(c.rc == a.rc);
    if (c.rc == GW_OK)
        CHECK(c.out_len == len);
    CHECK(c.out_len <= len && (c.out_len == 0 || memcmp(c.out, body, c.out_len) == 0));

    free(a.out);
    free(b.out);
    free(c.out);
    return 0;
}
