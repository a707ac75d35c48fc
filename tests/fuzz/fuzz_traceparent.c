/*
 * fuzz_traceparent.c - the traceparent check on any bytes: never reads past
 * them, and whatever it accepts has the shape the gateway sends upstream.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "traceparent.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size ? size : 1); /* exact size: ASan sees any over-read */

    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    if (gw_traceparent_valid(copy, size)) {
        if (size != GW_TRACEPARENT_LEN || memchr(copy, '\r', size) || memchr(copy, '\n', size))
            abort();
    }
    free(copy);
    return 0;
}
