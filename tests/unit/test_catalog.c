/*
 * test_catalog.c - alias resolution and capability checks, on a catalog built by
 * hand and on the shipped one (gateway.conf.example + config/models.conf).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "catalog.h"
#include "config.h"

static char n_veo2[] = "veo2", n_veo3[] = "veo3", n_comp[] = "veo_3_1-components",
            n_veo3_1[] = "veo3.1", n_veo_3_1[] = "veo_3_1";
static char s4[] = "4", s8[] = "8", z169[] = "16x9", z720[] = "720x1280";
static char a_fast[] = "fast", a_same[] = "veo3.1";

static struct gw_model models[] = {
    { .name = n_veo2, .family = GW_FAMILY_FIRST, .max_images = 1,
      .seconds = { s4, s8 }, .nseconds = 2, .sizes = { z169, z720 }, .nsizes = 2 },
    { .name = n_veo3, .family = GW_FAMILY_FRAMES, .max_images = 2 }, /* any seconds, size */
    { .name = n_comp, .family = GW_FAMILY_COMPONENTS, .max_images = 3 },
    { .name = n_veo3_1, .family = GW_FAMILY_FRAMES, .max_images = 2, .edits = 1,
      .extensions = 1, .extend_seconds = { s4, s8 }, .nextend_seconds = 2 },
    { .name = n_veo_3_1, .family = GW_FAMILY_FRAMES, .max_images = 2,
      .seconds = { s8 }, .nseconds = 1 },
};

static struct gw_alias aliases[] = {
    { .from = a_fast, .to = &models[1] },
    { .from = a_same, .to = &models[4] }, /* an alias named like a model: the alias wins */
};

static struct gw_catalog catalog = {
    .models = models, .nmodels = 5, .aliases = aliases, .naliases = 2, .allow_unknown = 0,
};

static struct gw_str S(const char *s)
{
    return (struct gw_str){ s, strlen(s) };
}

static void assert_error(const struct gw_error *err, const char *code, const char *param,
                         const char *message)
{
    assert_int_equal(err->status, 400);
    assert_string_equal(err->type, "invalid_request_error");
    assert_string_equal(err->code, code);
    assert_string_equal(err->param, param);
    assert_string_equal(err->message, message);
}

static void test_resolve_direct(void **state)
{
    struct gw_resolved r;
    struct gw_error err;
    char asked[] = "veo2";

    (void)state;
    assert_int_equal(gw_catalog_resolve(&catalog, S(asked), &r, &err), GW_OK);
    assert_ptr_equal(r.model, &models[0]);
    /* the name sent is the catalog's, not the caller's buffer */
    assert_ptr_equal(r.sent.p, models[0].name);
    assert_int_equal(r.sent.len, 4);
    assert_ptr_equal(gw_catalog_find(&catalog, S("veo_3_1-components")), &models[2]);
    assert_null(gw_catalog_find(&catalog, S("fast")));
}

static void test_resolve_alias(void **state)
{
    struct gw_resolved r;
    struct gw_error err;

    (void)state;
    assert_int_equal(gw_catalog_resolve(&catalog, S("fast"), &r, &err), GW_OK);
    assert_ptr_equal(r.model, &models[1]);
    assert_true(gw_str_eq(r.sent, "veo3"));

    /* veo3.1 is both a model and an alias: the alias wins */
    assert_int_equal(gw_catalog_resolve(&catalog, S("veo3.1"), &r, &err), GW_OK);
    assert_ptr_equal(r.model, &models[4]);
    assert_true(gw_str_eq(r.sent, "veo_3_1"));
}

/* Exact, case-sensitive, whole-string matches only; the value need not be NUL-terminated. */
static void test_resolve_exact_match(void **state)
{
    static const char *const unknown[] = { "VEO2", "veo", "veo22", "veo2 ", " veo2", "Fast",
                                           "veo3.1-4K" };
    struct gw_resolved r;
    struct gw_error err;
    const char buf[] = "veo2veo3";

    (void)state;
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        assert_int_equal(gw_catalog_resolve(&catalog, S(unknown[i]), &r, &err), GW_ERR);
    assert_int_equal(gw_catalog_resolve(&catalog, (struct gw_str){ buf + 4, 4 }, &r, &err),
                     GW_OK);
    assert_ptr_equal(r.model, &models[1]);
    assert_int_equal(gw_catalog_resolve(&catalog, (struct gw_str){ buf, 4 }, &r, &err), GW_OK);
    assert_ptr_equal(r.model, &models[0]);
}

static void test_resolve_unknown_reject(void **state)
{
    struct gw_resolved r;
    struct gw_error err;

    (void)state;
    assert_int_equal(gw_catalog_resolve(&catalog, S("sora-2"), &r, &err), GW_ERR);
    assert_error(&err, "model_not_found", "model",
                 "The model 'sora-2' does not exist or is not available through this gateway.");

    /* the echoed value is printable ASCII only, and bounded */
    assert_int_equal(gw_catalog_resolve(&catalog, S("a\r\nb\"\xe4\xb8\xad"), &r, &err), GW_ERR);
    assert_string_equal(err.message, "The model 'a\?\?b\"\?\?\?' does not exist or is not "
                                     "available through this gateway.");
    assert_int_equal(gw_catalog_resolve(&catalog, S("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                                                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
                                        &r, &err),
                     GW_ERR);
    assert_string_equal(err.message, "The model 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                                     "xxxxxxxxxxxxxxxxxxxx...' does not exist or is not "
                                     "available through this gateway.");
}

static void test_resolve_unknown_pass(void **state)
{
    struct gw_catalog c = catalog;
    struct gw_resolved r;
    struct gw_error err;
    struct gw_str asked = S("sora-2");

    (void)state;
    c.allow_unknown = 1;
    assert_int_equal(gw_catalog_resolve(&c, asked, &r, &err), GW_OK);
    assert_null(r.model);
    assert_ptr_equal(r.sent.p, asked.p);
    assert_int_equal(r.sent.len, asked.len);
    /* known names still resolve as usual */
    assert_int_equal(gw_catalog_resolve(&c, S("fast"), &r, &err), GW_OK);
    assert_true(gw_str_eq(r.sent, "veo3"));
}

static void test_resolve_empty(void **state)
{
    struct gw_catalog c = catalog;
    struct gw_catalog none = { 0 };
    struct gw_resolved r;
    struct gw_error err;

    (void)state;
    c.allow_unknown = 1; /* even when unknown models pass */
    assert_int_equal(gw_catalog_resolve(&c, (struct gw_str){ NULL, 0 }, &r, &err), GW_ERR);
    assert_error(&err, "missing_required_parameter", "model",
                 "Missing required parameter: 'model'.");
    assert_int_equal(gw_catalog_resolve(&c, S(""), &r, &err), GW_ERR);
    /* an empty catalog rejects everything unless unknown models pass */
    assert_int_equal(gw_catalog_resolve(&none, S("veo2"), &r, &err), GW_ERR);
    assert_string_equal(err.code, "model_not_found");
    none.allow_unknown = 1;
    assert_int_equal(gw_catalog_resolve(&none, S("veo2"), &r, &err), GW_OK);
    assert_null(r.model);
}

static void test_check_images(void **state)
{
    struct gw_error err;

    (void)state;
    for (unsigned n = 0; n <= 1; n++)
        assert_int_equal(gw_catalog_check_images(&models[0], n, &err), GW_OK);
    assert_int_equal(gw_catalog_check_images(&models[0], 2, &err), GW_ERR);
    assert_error(&err, "too_many_images", "input_reference",
                 "Model 'veo2' accepts at most 1 input_reference image, got 2.");

    assert_int_equal(gw_catalog_check_images(&models[1], 2, &err), GW_OK);
    assert_int_equal(gw_catalog_check_images(&models[1], 3, &err), GW_ERR);
    assert_error(&err, "too_many_images", "input_reference",
                 "Model 'veo3' accepts at most 2 input_reference images, got 3.");

    assert_int_equal(gw_catalog_check_images(&models[2], 3, &err), GW_OK);
    assert_int_equal(gw_catalog_check_images(&models[2], 4, &err), GW_ERR);
    assert_int_equal(gw_catalog_check_images(&models[2], 1000, &err), GW_ERR);

    /* unknown model (passed through): no check */
    assert_int_equal(gw_catalog_check_images(NULL, 1000, &err), GW_OK);
}

static void test_check_seconds_and_size(void **state)
{
    struct gw_error err;

    (void)state;
    assert_int_equal(gw_catalog_check_seconds(&models[0], S("4"), &err), GW_OK);
    assert_int_equal(gw_catalog_check_seconds(&models[0], S("8"), &err), GW_OK);
    assert_int_equal(gw_catalog_check_seconds(&models[0], S("6"), &err), GW_ERR);
    assert_error(&err, "invalid_value", "seconds",
                 "Invalid 'seconds' value '6' for model 'veo2': expected one of 4, 8.");
    /* matched as strings, exactly */
    assert_int_equal(gw_catalog_check_seconds(&models[0], S("08"), &err), GW_ERR);
    assert_int_equal(gw_catalog_check_seconds(&models[0], S("8 "), &err), GW_ERR);
    assert_int_equal(gw_catalog_check_seconds(&models[0], S(""), &err), GW_ERR);
    assert_int_equal(gw_catalog_check_seconds(&models[4], S("4"), &err), GW_ERR);
    assert_string_equal(err.message,
                        "Invalid 'seconds' value '4' for model 'veo_3_1': expected one of 8.");

    assert_int_equal(gw_catalog_check_size(&models[0], S("16x9"), &err), GW_OK);
    assert_int_equal(gw_catalog_check_size(&models[0], S("720x1280"), &err), GW_OK);
    assert_int_equal(gw_catalog_check_size(&models[0], S("1280x720"), &err), GW_ERR);
    assert_error(&err, "invalid_value", "size",
                 "Invalid 'size' value '1280x720' for model 'veo2': expected one of 16x9, "
                 "720x1280.");
    assert_int_equal(gw_catalog_check_size(&models[0], S("16X9"), &err), GW_ERR);

    /* no list: anything; unknown model: anything */
    assert_int_equal(gw_catalog_check_seconds(&models[1], S("37"), &err), GW_OK);
    assert_int_equal(gw_catalog_check_size(&models[1], S("1x1"), &err), GW_OK);
    assert_int_equal(gw_catalog_check_size(&models[4], S("1x1"), &err), GW_OK);
    assert_int_equal(gw_catalog_check_seconds(NULL, S("37"), &err), GW_OK);
    assert_int_equal(gw_catalog_check_size(NULL, S("1x1"), &err), GW_OK);
}

/* The shipped catalog: every family, the aliases, and gw_catalog_free on a real one. */
static void test_shipped_catalog(void **state)
{
    static const struct {
        const char *asked;
        const char *sent;
        int max_images;
    } cases[] = {
        { "veo2", "veo2", 1 },
        { "veo2-fast", "veo2-fast", 1 },
        { "veo2-pro", "veo2-pro", 1 },
        { "veo2-fast-frames", "veo2-fast-frames", 2 },
        { "veo3", "veo3", 2 },
        { "veo3-pro-frames", "veo3-pro-frames", 2 },
        { "veo_3_1", "veo_3_1", 2 },
        { "veo_3_1-fast-4K", "veo_3_1-fast-4K", 2 },
        { "veo3.1", "veo_3_1", 2 },
        { "veo3.1-fast", "veo_3_1-fast", 2 },
        { "veo3.1-4k", "veo_3_1-4K", 2 },
        { "veo3.1-pro", "veo3.1-pro", 2 },
        { "veo3.1-pro-4k", "veo3.1-pro-4k", 2 },
        { "veo3.1-components", "veo_3_1-components", 3 },
        { "veo3.1-components-4k", "veo_3_1-components-4K", 3 },
        { "veo3.1-fast-components", "veo3.1-fast-components", 3 },
        { "veo_3_1-fast-components-4K", "veo_3_1-fast-components-4K", 3 },
    };
    struct gw_config *cfg;
    struct gw_resolved r;
    struct gw_error err;

    (void)state;
    setenv("VIDEO_UPSTREAM_KEY", "sk-example", 1);
    cfg = gw_config_load(GW_SOURCE_DIR "/gateway.conf.example", stderr);
    assert_non_null(cfg);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(gw_catalog_resolve(&cfg->catalog, S(cases[i].asked), &r, &err), GW_OK);
        assert_non_null(r.model);
        assert_true(gw_str_eq(r.sent, cases[i].sent));
        assert_int_equal(r.model->max_images, cases[i].max_images);
        assert_int_equal(gw_catalog_check_seconds(r.model, S("8"), &err), GW_OK);
        assert_int_equal(gw_catalog_check_seconds(r.model, S("5"), &err), GW_ERR);
        assert_int_equal(gw_catalog_check_size(r.model, S("16x9"), &err), GW_OK);
        assert_int_equal(gw_catalog_check_size(r.model, S("1280x720"), &err), GW_OK);
        assert_int_equal(gw_catalog_check_size(r.model, S("1x1"), &err), GW_ERR);
    }
    /* edits and extensions: on for the veo 3.1 first/last-frame models only */
    assert_int_equal(gw_catalog_resolve(&cfg->catalog, S("veo_3_1"), &r, &err), GW_OK);
    assert_true(r.model->edits && r.model->extensions && r.model->nextend_seconds == 5);
    assert_int_equal(gw_catalog_check_extend_seconds(&cfg->catalog, r.model, 0, S("20"), &err),
                     GW_OK);
    assert_int_equal(gw_catalog_resolve(&cfg->catalog, S("veo2"), &r, &err), GW_OK);
    assert_true(!r.model->edits && !r.model->extensions);
    assert_int_equal(gw_catalog_resolve(&cfg->catalog, S("veo3.1-components"), &r, &err), GW_OK);
    assert_true(!r.model->edits && !r.model->extensions);
    /* wrong case is another name, and unknown names are rejected by default */
    assert_int_equal(gw_catalog_resolve(&cfg->catalog, S("veo3.1-4K"), &r, &err), GW_ERR);
    assert_int_equal(gw_catalog_resolve(&cfg->catalog, S("sora-2"), &r, &err), GW_ERR);
    gw_catalog_free(&cfg->catalog);
    assert_int_equal(cfg->catalog.nmodels, 0);
    assert_null(cfg->catalog.models);
    gw_config_free(cfg); /* frees the (now empty) catalog again: must be harmless */
    unsetenv("VIDEO_UPSTREAM_KEY");
}

/* issue 9: which models' videos may be edited or extended, and by what seconds */
static void test_check_ops(void **state)
{
    struct gw_catalog none = { .models = models, .nmodels = 3 }; /* veo2, veo3, comp: none */
    struct gw_error err;

    (void)state;
    assert_int_equal(gw_catalog_check_op(&catalog, &models[3], 0, GW_VIDEO_OP_EDIT, &err), GW_OK);
    assert_int_equal(gw_catalog_check_op(&catalog, &models[3], 0, GW_VIDEO_OP_EXTEND, &err),
                     GW_OK);
    assert_int_equal(gw_catalog_check_op(&catalog, &models[0], 0, GW_VIDEO_OP_EDIT, &err), GW_ERR);
    assert_error(&err, "unsupported_operation", "video",
                 "Model 'veo2' does not offer edits: this video cannot be edited.");
    /* an upload: fine when some model offers it */
    assert_int_equal(gw_catalog_check_op(&catalog, NULL, 1, GW_VIDEO_OP_EXTEND, &err), GW_OK);
    assert_int_equal(gw_catalog_check_op(&none, NULL, 1, GW_VIDEO_OP_EXTEND, &err), GW_ERR);
    assert_error(&err, "unsupported_operation", "video",
                 "The video service behind this gateway offers no extensions.");
    /* a source job whose model the catalog lacks: only when unknown models pass */
    assert_int_equal(gw_catalog_check_op(&catalog, NULL, 0, GW_VIDEO_OP_EDIT, &err), GW_ERR);
    none.allow_unknown = 1;
    assert_int_equal(gw_catalog_check_op(&none, NULL, 0, GW_VIDEO_OP_EDIT, &err), GW_OK);
    assert_int_equal(gw_catalog_check_op(&none, NULL, 1, GW_VIDEO_OP_EDIT, &err), GW_OK);

    assert_int_equal(gw_catalog_check_extend_seconds(&catalog, &models[3], 0, S("4"), &err),
                     GW_OK);
    assert_int_equal(gw_catalog_check_extend_seconds(&catalog, &models[3], 0, S("12"), &err),
                     GW_ERR);
    assert_error(&err, "invalid_value", "seconds",
                 "Invalid 'seconds' value '12' for model 'veo3.1': expected one of 4, 8.");
    assert_int_equal(gw_catalog_check_extend_seconds(&catalog, NULL, 1, S("8"), &err), GW_OK);
    assert_int_equal(gw_catalog_check_extend_seconds(&catalog, NULL, 1, S("12"), &err), GW_ERR);
    assert_string_equal(err.param, "seconds");
    assert_int_equal(gw_catalog_check_extend_seconds(&catalog, NULL, 0, S("12"), &err), GW_OK);
    /* a model that extends by any seconds lets any value through for an upload */
    assert_int_equal(gw_catalog_check_extend_seconds(&none, NULL, 1, S("12"), &err), GW_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve_direct),
        cmocka_unit_test(test_resolve_alias),
        cmocka_unit_test(test_resolve_exact_match),
        cmocka_unit_test(test_resolve_unknown_reject),
        cmocka_unit_test(test_resolve_unknown_pass),
        cmocka_unit_test(test_resolve_empty),
        cmocka_unit_test(test_check_images),
        cmocka_unit_test(test_check_seconds_and_size),
        cmocka_unit_test(test_shipped_catalog),
        cmocka_unit_test(test_check_ops),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
