/*
 * router.h - which handler serves a request, with its path parameter validated.
 * Pure. Paths are matched exactly (libevhtp's own callbacks match by prefix).
 */
#ifndef GW_ROUTER_H
#define GW_ROUTER_H

#include "gw.h"

enum gw_route_id {
    GW_ROUTE_NONE = 0,
    GW_ROUTE_HEALTHZ,   /* GET /healthz                      no auth */
    GW_ROUTE_READYZ,    /* GET /readyz                       no auth */
    GW_ROUTE_MODELS,    /* GET /v1/models                    answered by the gateway */
    GW_ROUTE_CREATE,    /* POST /v1/videos                   multipart or JSON body */
    GW_ROUTE_LIST,      /* GET /v1/videos                    query passed on */
    GW_ROUTE_RETRIEVE,  /* GET /v1/videos/{id} */
    GW_ROUTE_DELETE,    /* DELETE /v1/videos/{id} */
    GW_ROUTE_CONTENT,   /* GET /v1/videos/{id}/content       large, streamed */
    GW_ROUTE_REMIX,     /* POST /v1/videos/{id}/remix        JSON body */
    GW_ROUTE_EDIT,      /* POST /v1/videos/edits             multipart or JSON body */
    GW_ROUTE_EXTEND,    /* POST /v1/videos/extensions        multipart or JSON body */
    GW_ROUTE_CHARACTER_CREATE, /* POST /v1/videos/characters multipart: name + video file */
    GW_ROUTE_CHARACTER, /* GET /v1/videos/characters/{id}    video_id holds the character id */
};

#define GW_ID_MAX 128

struct gw_route {
    enum gw_route_id id;
    const char *name;   /* stable name for logs and metrics: "create", "content", ... */
    struct gw_str video_id; /* borrowed from the path; empty when the route has none */
    int proxied;        /* goes to the upstream */
    int has_body;       /* the route takes a request body */
};

/*
 * Match method + path (no query). method may be NULL (a method the HTTP parser
 * does not know). GW_OK with *out filled, or GW_ERR with err:
 * 501 method_not_implemented (a method other than RFC 9110's and PATCH, whatever
 * the path), 404 not_found (unknown path), 405 method_not_allowed (known path, other
 * method; err->param NULL, message names the allowed methods), 400 invalid_id
 * (param "id") when a /v1/videos/... path has an id outside [A-Za-z0-9_-]{1,128}
 * or extra segments. `edits`, `extensions` and `characters` are route words, never
 * video ids: anything under /v1/videos/edits/ or /extensions/ is 404, and under
 * /v1/videos/characters/ only a valid character id.
 */
int gw_router_match(const char *method, struct gw_str path, struct gw_route *out,
                    struct gw_error *err);

/* 1 if s is a valid video id. */
int gw_router_valid_id(struct gw_str s);

#endif
