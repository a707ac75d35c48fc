/*
 * router.c - exact routing of the gateway's handful of paths.
 */
#include <string.h>

#include "router.h"

int gw_router_valid_id(struct gw_str s)
{
    if (s.len == 0 || s.len > GW_ID_MAX)
        return 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int set(struct gw_route *out, enum gw_route_id id, const char *name, int proxied,
               int has_body)
{
    out->id = id;
    out->name = name;
    out->proxied = proxied;
    out->has_body = has_body;
    return GW_OK;
}

static int not_allowed(struct gw_error *err, const char *allowed)
{
    return gw_error_set(err, 405, "invalid_request_error", "method_not_allowed", NULL,
                        "Method not allowed; this path accepts %s", allowed);
}

/* RFC 9110's methods and PATCH: what the gateway knows and may answer 405 to. */
static int known_method(const char *m)
{
    static const char *const known[] = {
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    };

    for (size_t i = 0; m != NULL && i < GW_ARRAY_LEN(known); i++) {
        if (strcmp(m, known[i]) == 0)
            return 1;
    }
    return 0;
}

static int starts_with(struct gw_str s, const char *prefix)
{
    size_t n = strlen(prefix);
    return s.len >= n && memcmp(s.p, prefix, n) == 0;
}

int gw_router_match(const char *method, struct gw_str path, struct gw_route *out,
                    struct gw_error *err)
{
    static const char videos[] = "/v1/videos";
    const size_t vlen = sizeof(videos) - 1;

    memset(out, 0, sizeof(*out));
    /* a method not known for any resource: 501 whatever the path (RFC 9110 15.6.2) */
    if (!known_method(method))
        return gw_error_set(err, 501, "invalid_request_error", "method_not_implemented", NULL,
                            "Unsupported method; this gateway serves GET, POST and DELETE");

    int get = strcmp(method, "GET") == 0; /* HEAD is not offered: no route needs it */
    int post = strcmp(method, "POST") == 0;
    int del = strcmp(method, "DELETE") == 0;
    if (gw_str_eq(path, "/healthz"))
        return get ? set(out, GW_ROUTE_HEALTHZ, "healthz", 0, 0) : not_allowed(err, "GET");
    if (gw_str_eq(path, "/readyz"))
        return get ? set(out, GW_ROUTE_READYZ, "readyz", 0, 0) : not_allowed(err, "GET");
    if (gw_str_eq(path, "/v1/models"))
        return get ? set(out, GW_ROUTE_MODELS, "models", 0, 0) : not_allowed(err, "GET");
    if (path.len < vlen || memcmp(path.p, videos, vlen) != 0)
        goto not_found;
    if (path.len == vlen || (path.len == vlen + 1 && path.p[vlen] == '/')) {
        if (post)
            return set(out, GW_ROUTE_CREATE, "create", 1, 1);
        if (get)
            return set(out, GW_ROUTE_LIST, "list", 1, 0);
        return not_allowed(err, "GET, POST");
    }
    if (path.p[vlen] != '/')
        goto not_found;

    /* the route words come before any id: a video id can never be one of them */
    struct gw_str rest = { path.p + vlen + 1, path.len - vlen - 1 };
    if (gw_str_eq(rest, "edits"))
        return post ? set(out, GW_ROUTE_EDIT, "edit", 1, 1) : not_allowed(err, "POST");
    if (gw_str_eq(rest, "extensions"))
        return post ? set(out, GW_ROUTE_EXTEND, "extend", 1, 1) : not_allowed(err, "POST");
    if (gw_str_eq(rest, "characters"))
        return post ? set(out, GW_ROUTE_CHARACTER_CREATE, "character_create", 1, 1)
                    : not_allowed(err, "POST");
    if (starts_with(rest, "edits/") || starts_with(rest, "extensions/"))
        goto not_found;
    if (starts_with(rest, "characters/")) {
        struct gw_str cid = { rest.p + 11, rest.len - 11 };
        if (!gw_router_valid_id(cid))
            return gw_error_set(err, 400, "invalid_request_error", "invalid_id", "id",
                                "Invalid character id: expected 1 to 128 characters of "
                                "[A-Za-z0-9_-]");
        out->video_id = cid;
        return get ? set(out, GW_ROUTE_CHARACTER, "character", 1, 0) : not_allowed(err, "GET");
    }

    /* /v1/videos/{id}[/content|/remix] */
    const char *slash = memchr(rest.p, '/', rest.len);
    struct gw_str id = { rest.p, slash ? (size_t)(slash - rest.p) : rest.len };
    struct gw_str tail = { slash ? slash : rest.p + rest.len,
                           slash ? rest.len - id.len : 0 };

    if (!gw_router_valid_id(id))
        return gw_error_set(err, 400, "invalid_request_error", "invalid_id", "id",
                            "Invalid video id: expected 1 to 128 characters of [A-Za-z0-9_-]");
    out->video_id = id;
    if (tail.len == 0) {
        if (get)
            return set(out, GW_ROUTE_RETRIEVE, "retrieve", 1, 0);
        if (del)
            return set(out, GW_ROUTE_DELETE, "delete", 1, 0);
        return not_allowed(err, "GET, DELETE");
    }
    if (gw_str_eq(tail, "/content"))
        return get ? set(out, GW_ROUTE_CONTENT, "content", 1, 0) : not_allowed(err, "GET");
    if (gw_str_eq(tail, "/remix"))
        return post ? set(out, GW_ROUTE_REMIX, "remix", 1, 1) : not_allowed(err, "POST");
    return gw_error_set(err, 400, "invalid_request_error", "invalid_id", "id",
                        "Invalid video path: an id is followed only by /content or /remix");

not_found:
    return gw_error_set(err, 404, "invalid_request_error", "not_found", NULL,
                        "Unknown path; see GET /v1/models and the /v1/videos routes");
}
