/*
 * fuzz_reqhead.c - request heads: gw_reqhead_end must agree with itself at
 * every split, and gw_reqhead_check must never read past the head.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reqhead.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gw_error err;
    long end = gw_reqhead_end((const char *)data, size, 16384, &err);

    if (end > 0) {
        /* an exact-size copy, so reading past the head is caught by ASan */
        char *head = malloc((size_t)end);
        memcpy(head, data, (size_t)end);
        struct gw_reqhead rh;
        if (gw_reqhead_check(head, (size_t)end, &rh, &err) == GW_OK) {
            /* the canonical form is itself canonical, and reads the same */
            char *c = malloc(GW_REQHEAD_CANON_CAP((size_t)end));
            size_t n = gw_reqhead_canon(head, (size_t)end, &rh, c);
            struct gw_reqhead rh2;
            if (n > GW_REQHEAD_CANON_CAP((size_t)end) ||
                gw_reqhead_check(c, n, &rh2, &err) != GW_OK || !rh2.canonical ||
                rh2.chunked != rh.chunked || rh2.length != rh.length || rh2.close != rh.close ||
                rh2.noptions != 0)
                abort();
            free(c);
        }
        free(head);
        /* every prefix shorter than the head is "incomplete" or an error */
        for (long cut = 0; cut < end; cut += 7) {
            long e = gw_reqhead_end((const char *)data, (size_t)cut, 16384, &err);
            if (e > 0)
                abort();
        }
    }
    return 0;
}
