/*
 * fuzz_keyspec.c - what the admin API and `gateway keys` take from a client for a
 * store key (keytab.c): an `expires` date and a models list. A date is accepted
 * only in its two shapes and after `now`; a models list never yields an empty or
 * comma-holding name, and never reads outside its input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keytab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gw_config cfg;
    struct gw_names n;
    struct gw_error err;
    char unknown[16];
    int refused;
    int64_t t;
    char *s = malloc(size + 1);

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    if (gw_keytab_parse_expires(s, 0, &t, &err) == GW_OK) {
        size_t len = strlen(s);
        if ((len != 10 && len != 20) || t <= 0)
            abort();
    } else if (err.status != 400 || strcmp(err.param, "expires") != 0) {
        abort();
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.catalog.allow_unknown = size > 0 && (data[0] & 1);
    if (gw_keytab_models(&cfg, s, &n, unknown, sizeof(unknown), &refused) == GW_OK) {
        for (unsigned i = 0; i < n.n; i++) {
            if (n.v[i][0] == '\0' || strchr(n.v[i], ',') != NULL)
                abort();
        }
        if (refused && strlen(unknown) >= sizeof(unknown))
            abort();
        gw_keytab_names_free(&n);
    }
    free(s);
    return 0;
}
