/*
 * fuzz_chunked.c - the chunked body decoder: the same verdict, the same data and
 * the same end whether the input comes whole or split in two at a point the
 * input chooses (its first byte); never a byte consumed past the body's end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chunked.h"

struct result {
    int ok;
    size_t used, outlen;
    uint32_t sum; /* of the data bytes, position-weighted */
};

static void run(const char *in, size_t len, size_t cut, struct result *r)
{
    struct gw_chunked ck;
    size_t off = 0;

    memset(r, 0, sizeof(*r));
    gw_chunked_init(&ck, 512);
    for (int piece = 0; piece < 2 && !gw_chunked_done(&ck); piece++) {
        size_t end = piece == 0 ? cut : len;
        while (off < end && !gw_chunked_done(&ck)) {
            struct gw_str d;
            ssize_t n = gw_chunked_execute(&ck, in + off, end - off, &d);
            if (n < 0)
                return;
            if ((size_t)n > end - off || d.len > (size_t)n ||
                (d.len > 0 && (d.p < in + off || d.p + d.len > in + off + (size_t)n)))
                abort();
            for (size_t i = 0; i < d.len; i++)
                r->sum = r->sum * 31 + (unsigned char)d.p[i];
            r->outlen += d.len;
            off += (size_t)n;
        }
    }
    r->ok = gw_chunked_done(&ck);
    r->used = off;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct result whole, split;

    if (size < 1)
        return 0;
    size_t cut = data[0] % size;
    /* an exact-size copy, so reading past the input is caught by ASan */
    char *in = malloc(size - 1 + 1);
    memcpy(in, data + 1, size - 1);
    run(in, size - 1, 0, &whole);
    run(in, size - 1, cut < size - 1 ? cut : 0, &split);
    if (whole.ok != split.ok || (whole.ok && (whole.used != split.used ||
                                              whole.outlen != split.outlen ||
                                              whole.sum != split.sum)))
        abort();
    free(in);
    return 0;
}
