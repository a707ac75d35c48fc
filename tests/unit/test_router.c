/*
 * test_router.c - exact routing and id validation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "router.h"

static int route(const char *method, const char *path, struct gw_route *r, int *status)
{
    struct gw_error err = { 0 };
    int rc = gw_router_match(method, (struct gw_str){ path, strlen(path) }, r, &err);
    *status = err.status;
    return rc;
}

static void test_routes(void **state)
{
    static const struct {
        const char *method, *path;
        enum gw_route_id id;
    } ok[] = {
        { "GET", "/healthz", GW_ROUTE_HEALTHZ },
        { "GET", "/v1/models", GW_ROUTE_MODELS },
        { "POST", "/v1/videos", GW_ROUTE_CREATE },
        { "POST", "/v1/videos/", GW_ROUTE_CREATE },
        { "GET", "/v1/videos", GW_ROUTE_LIST },
        { "GET", "/v1/videos/video_55cb73b3-60af", GW_ROUTE_RETRIEVE },
        { "DELETE", "/v1/videos/abc", GW_ROUTE_DELETE },
        { "GET", "/v1/videos/abc/content", GW_ROUTE_CONTENT },
        { "POST", "/v1/videos/abc/remix", GW_ROUTE_REMIX },
        { "POST", "/v1/videos/edits", GW_ROUTE_EDIT },
        { "POST", "/v1/videos/extensions", GW_ROUTE_EXTEND },
        { "POST", "/v1/videos/characters", GW_ROUTE_CHARACTER_CREATE },
        { "GET", "/v1/videos/characters/char_123", GW_ROUTE_CHARACTER },
        /* a route word is a whole segment: these are ordinary ids */
        { "GET", "/v1/videos/editsx", GW_ROUTE_RETRIEVE },
        { "GET", "/v1/videos/character", GW_ROUTE_RETRIEVE },
    };
    struct gw_route r;
    int st;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(route(ok[i].method, ok[i].path, &r, &st), GW_OK);
        assert_int_equal(r.id, ok[i].id);
    }
    assert_int_equal(route("GET", "/v1/videos/abc/content", &r, &st), GW_OK);
    assert_int_equal(r.video_id.len, 3);
    assert_memory_equal(r.video_id.p, "abc", 3);
    assert_true(r.proxied);
    assert_int_equal(route("GET", "/v1/videos/characters/char_9", &r, &st), GW_OK);
    assert_int_equal(r.video_id.len, 6);
    assert_memory_equal(r.video_id.p, "char_9", 6);
    assert_int_equal(route("POST", "/v1/videos/edits", &r, &st), GW_OK);
    assert_int_equal(r.video_id.len, 0);
    assert_true(r.has_body);
}

static void test_refusals(void **state)
{
    static const struct {
        const char *method, *path;
        int status;
    } bad[] = {
        { "GET", "/", 404 },
        { "GET", "/v1/videosx", 404 },
        { "GET", "/v2/videos", 404 },
        { "PUT", "/v1/videos", 405 },
        /* issue 5: a method the parser does not know crashed the gateway */
        { NULL, "/v1/videos", 501 },
        { NULL, "/", 501 },
        { "PURGE", "/healthz", 501 },
        { "QUERY", "/v1/videos", 501 },
        { "MKCOL", "/v1/videos", 501 },
        { "OPTIONS", "/v1/videos", 405 },
        { "HEAD", "/healthz", 405 },
        { "PATCH", "/nowhere", 404 },
        { "POST", "/healthz", 405 },
        { "HEAD", "/v1/videos/abc", 405 },
        { "POST", "/v1/videos/abc", 405 },
        { "GET", "/v1/videos/abc/remix", 405 },
        { "GET", "/v1/videos/../etc", 400 },
        { "GET", "/v1/videos/a/b", 400 },
        { "GET", "/v1/videos/a%2Fb", 400 },
        { "GET", "/v1/videos//content", 400 },
        { "GET", "/v1/videos/abc/content/", 400 },
        { "GET", "/v1/videos/a.b", 400 },
        /* issue 9: route words are never ids */
        { "GET", "/v1/videos/edits", 405 },
        { "DELETE", "/v1/videos/extensions", 405 },
        { "GET", "/v1/videos/characters", 405 },
        { "POST", "/v1/videos/characters/char_1", 405 },
        { "DELETE", "/v1/videos/characters/char_1", 405 },
        { "GET", "/v1/videos/edits/content", 404 },
        { "POST", "/v1/videos/edits/remix", 404 },
        { "GET", "/v1/videos/extensions/content", 404 },
        { "GET", "/v1/videos/characters/", 400 },
        { "GET", "/v1/videos/characters/a.b", 400 },
        { "GET", "/v1/videos/characters/a/content", 400 },
    };
    struct gw_route r;
    int st;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = route(bad[i].method, bad[i].path, &r, &st);
        if (rc != GW_ERR || st != bad[i].status)
            fail_msg("%s %s: rc %d status %d", bad[i].method, bad[i].path, rc, st);
    }
}

static void test_id_length(void **state)
{
    char path[300] = "/v1/videos/";
    struct gw_route r;
    int st;

    memset(path + 11, 'a', GW_ID_MAX);
    path[11 + GW_ID_MAX] = '\0';
    assert_int_equal(route("GET", path, &r, &st), GW_OK);
    path[11 + GW_ID_MAX] = 'a';
    path[12 + GW_ID_MAX] = '\0';
    assert_int_equal(route("GET", path, &r, &st), GW_ERR);
    assert_int_equal(st, 400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_id_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
