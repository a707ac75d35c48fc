/*
 * fuzz_router.c - paths from the wire: the router accepts only ids of the
 * documented alphabet and never reads outside the path.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = { "GET", "POST", "DELETE", NULL };
    struct gw_route r;
    struct gw_error err;
    char *path;

    if (size < 1)
        return 0;
    path = malloc(size - 1);
    memcpy(path, data + 1, size - 1);
    if (gw_router_match(methods[data[0] & 3], (struct gw_str){ path, size - 1 }, &r, &err) ==
        GW_OK) {
        if (r.video_id.len > 0 && !gw_router_valid_id(r.video_id))
            abort();
        if (r.video_id.len > GW_ID_MAX)
            abort();
        /* issue 9: the route words are never taken for a video id (a character's
         * id, /v1/videos/characters/{id}, may be any word of the alphabet) */
        if (r.id != GW_ROUTE_CHARACTER &&
            (gw_str_eq(r.video_id, "edits") || gw_str_eq(r.video_id, "extensions") ||
             gw_str_eq(r.video_id, "characters")))
            abort();
        if ((r.id == GW_ROUTE_EDIT || r.id == GW_ROUTE_EXTEND ||
             r.id == GW_ROUTE_CHARACTER_CREATE) && r.video_id.len != 0)
            abort();
    }
    free(path);
    return 0;
}
