/*
 * test_jsonbody.c - JSON create/remix bodies: fields observed, model rewritten
 * by splicing (every other byte kept), malformed bodies refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "jsonbody.h"

struct rec {
    char log[8192];
    size_t len;
    const char *repl; /* NULL: keep the model */
    int fail;         /* 1 field, 2 model, 3 end */
};

static void rec_log(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void rec_log(struct rec *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(r->log + r->len, sizeof(r->log) - r->len, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(r->log) - r->len);
    r->len += (size_t)n;
}

static int on_field(void *arg, const struct gw_mp_field *f, struct gw_error *err)
{
    struct rec *r = arg;

    rec_log(r, "field(%.*s=%.*s/%zu)\n", (int)f->name.len, f->name.p, (int)f->value.len,
         f->value.p, f->total_len);
    if (r->fail == 1)
        return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "seconds", "x");
    return GW_OK;
}

static int on_model(void *arg, struct gw_str value, struct gw_str *out, struct gw_error *err)
{
    struct rec *r = arg;

    rec_log(r, "model(%.*s)\n", (int)value.len, value.p);
    if (r->fail == 2)
        return gw_error_set(err, 403, "invalid_request_error", "model_not_allowed", "model",
                            "x");
    if (r->repl != NULL)
        *out = (struct gw_str){ r->repl, strlen(r->repl) };
    return GW_OK;
}

static int on_end(void *arg, struct gw_error *err)
{
    struct rec *r = arg;

    rec_log(r, "end\n");
    if (r->fail == 3)
        return gw_error_set(err, 400, "invalid_request_error", "missing_field", "prompt", "x");
    return GW_OK;
}

static const struct gw_mp_hooks hooks = { NULL, on_field, on_model, on_end };

/* Rewrite body; want NULL means "sent unchanged". Returns the hook log. */
static void check(const char *body, const char *repl, const char *want, const char *log)
{
    struct rec r = { .repl = repl };
    struct gw_error err = { 0 };
    char *out = (char *)1;
    size_t out_len = 99;

    assert_int_equal(gw_jsonbody_rewrite((struct gw_str){ body, strlen(body) }, &hooks, &r,
                                         &out, &out_len, &err), GW_OK);
    if (want == NULL) {
        assert_null(out);
        assert_int_equal(out_len, 0);
    } else {
        assert_non_null(out);
        assert_int_equal(out_len, strlen(want));
        assert_memory_equal(out, want, out_len);
        /* still JSON, and only the model differs */
        cJSON *a = cJSON_ParseWithLength(out, out_len), *b = cJSON_Parse(body);
        assert_non_null(a);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(a, "model")->valuestring, repl);
        cJSON_DeleteItemFromObjectCaseSensitive(a, "model");
        cJSON_DeleteItemFromObjectCaseSensitive(b, "model");
        assert_true(cJSON_Compare(a, b, 1));
        cJSON_Delete(a);
        cJSON_Delete(b);
    }
    if (log != NULL)
        assert_string_equal(r.log, log);
    free(out);
}

static void check_error(const char *body, size_t len, int fail, int status, const char *code,
                        const char *param)
{
    struct rec r = { .repl = "veo3", .fail = fail };
    struct gw_error err = { 0 };
    char *out = NULL;
    size_t out_len = 0;

    assert_int_equal(gw_jsonbody_rewrite((struct gw_str){ body, len }, &hooks, &r, &out,
                                         &out_len, &err), GW_ERR);
    assert_null(out);
    assert_int_equal(err.status, status);
    assert_string_equal(err.type, "invalid_request_error");
    assert_string_equal(err.code, code);
    if (param == NULL)
        assert_null(err.param);
    else
        assert_string_equal(err.param, param);
    assert_true(strlen(err.message) > 0 && strlen(err.message) < 100);
}

#define CHECK_ERR(lit, ...) check_error(lit, sizeof(lit) - 1, __VA_ARGS__)

static void test_rewrite_spliced(void **state)
{
    /* whitespace, number forms and big integers survive the rewrite */
    check("{ \"prompt\" : \"a cow\",\n  \"model\":\t\"veo2\" , \"fps\": 8.0,"
          " \"seed\": 12345678901234567890, \"x\": [1, {\"model\": \"inner\"}] }",
          "veo_3_1-fast-components-4K",
          "{ \"prompt\" : \"a cow\",\n  \"model\":\t\"veo_3_1-fast-components-4K\" , "
          "\"fps\": 8.0, \"seed\": 12345678901234567890, \"x\": [1, {\"model\": \"inner\"}] }",
          "field(prompt=a cow/5)\nfield(model=veo2/4)\nfield(fps=8/1)\n"
          "field(seed=1.2345678901234567e+19/22)\nmodel(veo2)\nend\n");
}

static void test_rewrite_shorter_first_last(void **state)
{
    check("{\"model\":\"veo3.1-fast-components\"}", "v", "{\"model\":\"v\"}", NULL);
    check("{\"prompt\":\"p\",\"model\":\"veo3\"}", "veo3-pro",
          "{\"prompt\":\"p\",\"model\":\"veo3-pro\"}",
          NULL);
}

static void test_unchanged(void **state)
{
    check("{\"model\":\"veo3\",\"prompt\":\"p\"}", "veo3", NULL,
          "field(model=veo3/4)\nfield(prompt=p/1)\nmodel(veo3)\nend\n");
    check("{\"model\":\"veo3\"}", NULL, NULL, NULL);
    /* remix: no model at all */
    check("{\"prompt\":\"more cows\"}", "never", NULL, "field(prompt=more cows/9)\nend\n");
    check("{}", "never", NULL, "end\n");
}

static void test_escapes(void **state)
{
    /* an escaped key is still the model; the old escaped value is replaced whole */
    check("{\"mod\\u0065l\":\"ve\\\"o\\/2\"}", "a\"b\\c\n\x01", "{\"mod\\u0065l\":"
          "\"a\\\"b\\\\c\\u000a\\u0001\"}", "field(model=ve\"o/2/6)\nmodel(ve\"o/2)\nend\n");
}

static void test_unicode(void **state)
{
    /* 让牛快乐的跳科目三, raw and escaped */
    const char *body = "{\"model\":\"veo2\",\"prompt\":\"\xe8\xae\xa9\xe7\x89\x9b\xe5\xbf\xab"
                       "\xe4\xb9\x90\xe7\x9a\x84\xe8\xb7\xb3\xe7\xa7\x91\xe7\x9b\xae\xe4\xb8\x89\","
                       "\"size\":\"\\u8ba9\"}";
    const char *want = "{\"model\":\"veo3\",\"prompt\":\"\xe8\xae\xa9\xe7\x89\x9b\xe5\xbf\xab"
                       "\xe4\xb9\x90\xe7\x9a\x84\xe8\xb7\xb3\xe7\xa7\x91\xe7\x9b\xae\xe4\xb8\x89\","
                       "\"size\":\"\\u8ba9\"}";

    check(body, "veo3", want, NULL);
}

static void test_bom_and_whitespace(void **state)
{
    check("\xef\xbb\xbf \r\n{\"model\" :\"a\"}\n\n", "bb",
          "\xef\xbb\xbf \r\n{\"model\" :\"bb\"}\n\n",
          NULL);
}

static void test_numbers(void **state)
{
    check("{\"seconds\":8,\"a\":8.5,\"b\":1e2,\"c\":-0.1,\"d\":true,\"e\":null,\"f\":{},"
          "\"g\":1e300}", NULL, NULL,
          "field(seconds=8/1)\nfield(a=8.5/3)\nfield(b=100/3)\nfield(c=-0.1/4)\n"
          "field(g=1e+300/6)\nend\n");
}

static void test_long_field(void **state)
{
    size_t n = GW_MP_VALUE_MAX + 500;
    char *body = malloc(n + 32);
    struct rec r = { 0 };
    struct gw_error err = { 0 };
    char *out = NULL;
    size_t out_len;

    assert_non_null(body);
    strcpy(body, "{\"prompt\":\"");
    memset(body + 11, 'p', n);
    strcpy(body + 11 + n, "\"}");
    assert_int_equal(gw_jsonbody_rewrite((struct gw_str){ body, strlen(body) }, &hooks, &r, &out,
                                         &out_len, &err), GW_OK);
    char want[64];
    snprintf(want, sizeof(want), "/%zu)\nend\n", n);
    assert_non_null(strstr(r.log, want));
    assert_int_equal(strchr(r.log, '/') - strchr(r.log, '=') - 1, GW_MP_VALUE_MAX);

    /* a model that long is refused */
    memcpy(body + 2, "model", 5);
    memmove(body + 7, body + 8, strlen(body + 8) + 1);
    assert_int_equal(gw_jsonbody_rewrite((struct gw_str){ body, strlen(body) }, &hooks, &r, &out,
                                         &out_len, &err), GW_ERR);
    assert_string_equal(err.code, "invalid_value");
    assert_string_equal(err.param, "model");
    free(body);
}

static void test_errors(void **state)
{
    static const char *not_json[] = {
        "", "   ", "[]", "\"model\"", "42", "null", "{", "{\"model\":\"a\"", "{\"model\":\"a\"}x",
        "{\"model\":\"a\"} {}", "{'model':'a'}", "{\"model\":\"a\",}", "{\"a\":\"\\q\"}",
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(not_json); i++)
        check_error(not_json[i], strlen(not_json[i]), 0, 400, "invalid_json", NULL);
    CHECK_ERR("{\"model\":\"a\"}\0", 0, 400, "invalid_json", NULL);

    CHECK_ERR("{\"model\":42}", 0, 400, "invalid_type", "model");
    CHECK_ERR("{\"model\":null}", 0, 400, "invalid_type", "model");
    CHECK_ERR("{\"model\":[\"veo3\"]}", 0, 400, "invalid_type", "model");
    CHECK_ERR("{\"model\":\"veo2\",\"model\":\"veo3\"}", 0, 400, "invalid_value", "model");
    CHECK_ERR("{\"model\":\"veo2\",\"mod\\u0065l\":\"veo3\"}", 0, 400, "invalid_value",
                "model");
    /* cJSON cuts strings at NUL, the upstream would not */
    CHECK_ERR("{\"model\":\"veo3\\u0000x\"}", 0, 400, "invalid_json", NULL);
    CHECK_ERR("{\"model\\u0000\":\"x\",\"model\":\"veo3\"}", 0, 400, "invalid_value",
                "model");
    CHECK_ERR("{\"p\":{\"q\":\"\\u0000\"}}", 0, 400, "invalid_json", NULL);

    /* hooks' errors come back as they set them */
    CHECK_ERR("{\"model\":\"veo2\"}", 1, 400, "invalid_value", "seconds");
    CHECK_ERR("{\"model\":\"veo2\"}", 2, 403, "model_not_allowed", "model");
    CHECK_ERR("{\"model\":\"veo2\"}", 3, 400, "missing_field", "prompt");
}

/*
 * Issue 5, defect 6: a member the gateway checks, of another JSON type than the one
 * it checks it as, was skipped by the hooks and forwarded unchecked.
 */
static void test_member_types(void **state)
{
    static const struct {
        const char *body;
        const char *code;
        const char *param;
    } bad[] = {
        { "{\"model\":\"veo3\",\"prompt\":\"j\",\"seconds\":[99]}", "invalid_type", "seconds" },
        { "{\"model\":\"veo3\",\"prompt\":\"j\",\"seconds\":[\"8\"]}", "invalid_type", "seconds" },
        { "{\"model\":\"veo3\",\"prompt\":\"j\",\"seconds\":true}", "invalid_type", "seconds" },
        { "{\"model\":\"veo3\",\"prompt\":\"j\",\"seconds\":false}", "invalid_type", "seconds" },
        { "{\"model\":\"veo3\",\"prompt\":\"j\",\"seconds\":null}", "invalid_type", "seconds" },
        { "{\"model\":\"veo3\",\"prompt\":\"j\",\"seconds\":{}}", "invalid_type", "seconds" },
        { "{\"model\":\"veo3\",\"prompt\":\"j\",\"seconds\":{\"s\":8}}", "invalid_type",
          "seconds" },
        /* numbers: integers written with digits only */
        { "{\"seconds\":8.5}", "invalid_value", "seconds" },
        { "{\"seconds\":8.0}", "invalid_value", "seconds" },
        { "{\"seconds\":1e9}", "invalid_value", "seconds" },
        { "{\"seconds\":8E0}", "invalid_value", "seconds" },
        { "{\"seconds\":-8}", "invalid_value", "seconds" },
        { "{\"seconds\":-0}", "invalid_value", "seconds" },
        { "{\"seconds\":08}", "invalid_value", "seconds" },
        { "{\"seconds\":1e400}", "invalid_value", "seconds" },
        /* strings: digits only */
        { "{\"seconds\":\"\"}", "invalid_value", "seconds" },
        { "{\"seconds\":\"8s\"}", "invalid_value", "seconds" },
        { "{\"seconds\":\" 8\"}", "invalid_value", "seconds" },
        { "{\"seconds\":\"-8\"}", "invalid_value", "seconds" },
        { "{\"seconds\":\"8.5\"}", "invalid_value", "seconds" },
        { "{\"seconds\":\"\\u0038\\u0020\"}", "invalid_value", "seconds" },
        /* size, prompt, model: strings */
        { "{\"model\":\"veo3\",\"prompt\":\"j\",\"size\":[\"4096x4096\"]}", "invalid_type",
          "size" },
        { "{\"model\":\"veo3\",\"prompt\":\"j\",\"size\":{}}", "invalid_type", "size" },
        { "{\"size\":16}", "invalid_type", "size" },
        { "{\"size\":null}", "invalid_type", "size" },
        { "{\"size\":true}", "invalid_type", "size" },
        { "{\"prompt\":[\"a cow\"]}", "invalid_type", "prompt" },
        { "{\"prompt\":{\"text\":\"a cow\"}}", "invalid_type", "prompt" },
        { "{\"prompt\":5}", "invalid_type", "prompt" },
        { "{\"prompt\":null}", "invalid_type", "prompt" },
        { "{\"model\":true}", "invalid_type", "model" },
        { "{\"model\":{}}", "invalid_type", "model" },
        /* an escaped key is the same member; the first wrong type is reported */
        { "{\"s\\u0065conds\":[99]}", "invalid_type", "seconds" },
        { "{\"size\":\"16x9\",\"seconds\":[99],\"size\":[1]}", "invalid_type", "seconds" },
        /* a NUL still wins: it may be what cut a key into a checked name */
        { "{\"seconds\\u0000x\":[99]}", "invalid_json", NULL },
    };

    for (size_t i = 0; i < GW_ARRAY_LEN(bad); i++)
        check_error(bad[i].body, strlen(bad[i].body), 0, 400, bad[i].code, bad[i].param);

    /* what stays accepted: digits as a string or an integer; other members of any type */
    check("{\"model\":\"veo3\",\"prompt\":\"p\",\"seconds\":\"8\",\"size\":\"16x9\"}", NULL,
          NULL, "field(model=veo3/4)\nfield(prompt=p/1)\nfield(seconds=8/1)\nfield(size=16x9/4)\n"
          "model(veo3)\nend\n");
    check("{\"seconds\":8,\"watermark\":false,\"input_reference\":null,\"n\":[1.5]}", NULL, NULL,
          "field(seconds=8/1)\nend\n");
    check("{\"seconds\":0}", NULL, NULL, "field(seconds=0/1)\nend\n");
    check("{\"seconds\":\"08\"}", NULL, NULL, "field(seconds=08/2)\nend\n");
    /* a big integer reaches the hooks as written, not as a double */
    check("{\"seconds\":12345678901234567890}", NULL, NULL,
          "field(seconds=12345678901234567890/20)\nend\n");
}

/* Remix bodies: the prompt must be a string too. */
static void test_remix_prompt_type(void **state)
{
    CHECK_ERR("{\"prompt\":[\"more cows\"]}", 0, 400, "invalid_type", "prompt");
    CHECK_ERR("{\"prompt\":null}", 0, 400, "invalid_type", "prompt");
    CHECK_ERR("{\"prompt\":42}", 0, 400, "invalid_type", "prompt");
    check("{\"prompt\":\"more cows\"}", NULL, NULL, "field(prompt=more cows/9)\nend\n");
}

static void test_escaped_backslash_is_not_nul(void **state)
{
    /* "\\u0000" is a backslash followed by text, not a NUL */
    check("{\"model\":\"a\",\"prompt\":\"\\\\u0000\"}", "b",
          "{\"model\":\"b\",\"prompt\":\"\\\\u0000\"}",
          NULL);
}

static void test_null_hooks(void **state)
{
    struct gw_error err = { 0 };
    char *out = NULL;
    size_t out_len;

    assert_int_equal(gw_jsonbody_rewrite(GW_STR("{\"model\":\"veo3\"}"), NULL, NULL, &out, &out_len,
                                         &err), GW_OK);
    assert_null(out);
}

/* issue 9: `video` is observed as the form field video[id]; `characters` as its text */
static void test_references(void **state)
{
    (void)state;
    check("{\"prompt\":\"p\",\"video\":{\"id\":\"video_1\"},\"seconds\":4}", NULL, NULL,
          "field(prompt=p/1)\nfield(video[id]=video_1/7)\nfield(seconds=4/1)\nend\n");
    check("{\"characters\":[{\"id\":\"c\"}]}", NULL, NULL,
          "field(characters=[{\"id\":\"c\"}]/12)\nend\n");
    CHECK_ERR("{\"video\":\"video_1\"}", 0, 400, "invalid_type", "video");
    CHECK_ERR("{\"video\":{\"id\":5}}", 0, 400, "invalid_type", "video");
    CHECK_ERR("{\"video\":{}}", 0, 400, "invalid_type", "video");
    CHECK_ERR("{\"video\":null}", 0, 400, "invalid_type", "video");
    CHECK_ERR("{\"video\":{\"id\":\"a\",\"file_id\":\"b\"}}", 0, 400, "invalid_type", "video");
    CHECK_ERR("{\"video\":{\"id\":\"a\"}}", 1, 400, "invalid_value", "seconds"); /* the hook's */
    CHECK_ERR("{\"video[id]\":\"a\"}", 0, 400, "invalid_value", "video");
    check("{\"characters[0][id]\":\"c\"}", NULL, NULL, "field(characters=\"c\"/3)\nend\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_references),
        cmocka_unit_test(test_rewrite_spliced),
        cmocka_unit_test(test_rewrite_shorter_first_last),
        cmocka_unit_test(test_unchanged),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_unicode),
        cmocka_unit_test(test_bom_and_whitespace),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_long_field),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_member_types),
        cmocka_unit_test(test_remix_prompt_type),
        cmocka_unit_test(test_escaped_backslash_is_not_nul),
        cmocka_unit_test(test_null_hooks),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
