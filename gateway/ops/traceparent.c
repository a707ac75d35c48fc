/*
 * traceparent.c - W3C traceparent check and generation (see traceparent.h).
 */
#include <string.h>

#include "traceparent.h"

static int lhex(const char *p, size_t n, int *nonzero)
{
    *nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
        *nonzero |= c != '0';
    }
    return 1;
}

int gw_traceparent_valid(const char *v, size_t len)
{
    int nz;

    if (v == NULL || len != GW_TRACEPARENT_LEN || v[2] != '-' || v[35] != '-' || v[52] != '-')
        return 0;
    if (v[0] != '0' || v[1] != '0')
        return 0;
    if (!lhex(v + 3, 32, &nz) || !nz)
        return 0;
    if (!lhex(v + 36, 16, &nz) || !nz)
        return 0;
    return lhex(v + 53, 2, &nz);
}

void gw_traceparent_new(char out[GW_TRACEPARENT_LEN + 1], const unsigned char rnd[24])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[24];
    char *p = out;

    memcpy(b, rnd, sizeof(b));
    /* all zeros is invalid for either id: practically never, but never sent */
    if (memcmp(b, (unsigned char[16]){ 0 }, 16) == 0)
        b[15] = 1;
    if (memcmp(b + 16, (unsigned char[8]){ 0 }, 8) == 0)
        b[23] = 1;
    memcpy(p, "00-", 3);
    p += 3;
    for (int i = 0; i < 24; i++) {
        if (i == 16)
            *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 15];
    }
    memcpy(p, "-00", 4); /* with the NUL */
}
