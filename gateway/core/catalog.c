/*
 * catalog.c - the model names the gateway accepts: alias resolution and the
 * capability checks of the seed's model families. Pure.
 *
 * The catalog is built by config.c and only read afterwards, by every thread at
 * once. Lookups are linear scans over a few dozen names; they stay behind
 * gw_catalog_find() and catalog_find_alias() so that a hash can replace them
 * without any caller changing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"

#define CATALOG_ECHO_MAX 64 /* bytes of a client's value repeated in an error message */

static struct gw_str catalog_name(const struct gw_model *m)
{
    return (struct gw_str){ m->name, strlen(m->name) };
}

static const struct gw_alias *catalog_find_alias(const struct gw_catalog *c, struct gw_str name)
{
    for (unsigned i = 0; i < c->naliases; i++) {
        if (gw_str_eq(name, c->aliases[i].from))
            return &c->aliases[i];
    }
    return NULL;
}

const struct gw_model *gw_catalog_find(const struct gw_catalog *c, struct gw_str name)
{
    for (unsigned i = 0; i < c->nmodels; i++) {
        if (gw_str_eq(name, c->models[i].name))
            return &c->models[i];
    }
    return NULL;
}

/*
 * Copy a client's value into buf (cap >= CATALOG_ECHO_MAX + 4) for an error
 * message: at most CATALOG_ECHO_MAX bytes, "..." when cut, and every byte outside
 * printable ASCII replaced by '?', so a message never carries control characters
 * or broken UTF-8 into a log line.
 */
static const char *catalog_echo(struct gw_str s, char *buf, size_t cap)
{
    size_t n = s.len < CATALOG_ECHO_MAX ? s.len : CATALOG_ECHO_MAX;
    size_t i;

    for (i = 0; i < n && i + 4 < cap; i++) {
        unsigned char c = (unsigned char)s.p[i];

        buf[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (i < s.len && i + 4 <= cap) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

int gw_catalog_resolve(const struct gw_catalog *c, struct gw_str asked, struct gw_resolved *out,
                       struct gw_error *err)
{
    const struct gw_alias *a;
    const struct gw_model *m;
    char echo[CATALOG_ECHO_MAX + 4];

    if (asked.len == 0)
        return gw_error_set(err, 400, "invalid_request_error", "missing_required_parameter",
                            "model", "Missing required parameter: 'model'.");

    /* An alias wins over a model of the same name: that is how a friendly name
     * the service also knows is still sent in its canonical form. */
    a = catalog_find_alias(c, asked);
    if (a != NULL) {
        out->sent = catalog_name(a->to);
        out->model = a->to;
        return GW_OK;
    }
    m = gw_catalog_find(c, asked);
    if (m != NULL) {
        out->sent = catalog_name(m);
        out->model = m;
        return GW_OK;
    }
    if (c->allow_unknown) {
        out->sent = asked;
        out->model = NULL;
        return GW_OK;
    }
    return gw_error_set(err, 400, "invalid_request_error", "model_not_found", "model",
                        "The model '%s' does not exist or is not available through this "
                        "gateway.", catalog_echo(asked, echo, sizeof(echo)));
}

int gw_catalog_check_images(const struct gw_model *m, unsigned nimages, struct gw_error *err)
{
    if (m == NULL || nimages <= (unsigned)m->max_images)
        return GW_OK;
    return gw_error_set(err, 400, "invalid_request_error", "too_many_images", "input_reference",
                        "Model '%s' accepts at most %d input_reference image%s, got %u.",
                        m->name, m->max_images, m->max_images == 1 ? "" : "s", nimages);
}

/* The shared body of the seconds and size checks: value must equal one of list[0..n). */
static int catalog_check_list(const struct gw_model *m, char *const *list, unsigned n,
                              struct gw_str value, const char *param, struct gw_error *err)
{
    char echo[CATALOG_ECHO_MAX + 4];
    char allowed[160];
    size_t off = 0;

    if (m == NULL || n == 0)
        return GW_OK;
    for (unsigned i = 0; i < n; i++) {
        if (gw_str_eq(value, list[i]))
            return GW_OK;
    }
    allowed[0] = '\0';
    for (unsigned i = 0; i < n && off < sizeof(allowed); i++) {
        int w = snprintf(allowed + off, sizeof(allowed) - off, "%s%s", i ? ", " : "", list[i]);

        if (w < 0)
            break;
        off += (size_t)w;
    }
    return gw_error_set(err, 400, "invalid_request_error", "invalid_value", param,
                        "Invalid '%s' value '%s' for model '%s': expected one of %s.", param,
                        catalog_echo(value, echo, sizeof(echo)), m->name, allowed);
}

int gw_catalog_check_seconds(const struct gw_model *m, struct gw_str seconds, struct gw_error *err)
{
    if (m == NULL)
        return GW_OK;
    return catalog_check_list(m, m->seconds, m->nseconds, seconds, "seconds", err);
}

int gw_catalog_check_size(const struct gw_model *m, struct gw_str size, struct gw_error *err)
{
    if (m == NULL)
        return GW_OK;
    return catalog_check_list(m, m->sizes, m->nsizes, size, "size", err);
}

static const char *const op_names[] = { [GW_VIDEO_OP_EDIT] = "edits", [GW_VIDEO_OP_EXTEND] = "extensions" };

static int offers(const struct gw_model *m, enum gw_video_op op)
{
    return op == GW_VIDEO_OP_EDIT ? m->edits : m->extensions;
}

int gw_catalog_check_op(const struct gw_catalog *c, const struct gw_model *m, int any,
                        enum gw_video_op op, struct gw_error *err)
{
    if (m != NULL) {
        if (offers(m, op))
            return GW_OK;
        return gw_error_set(err, 400, "invalid_request_error", "unsupported_operation",
                            "video", "Model '%s' does not offer %s: this video cannot be %s.",
                            m->name, op_names[op], op == GW_VIDEO_OP_EDIT ? "edited" : "extended");
    }
    if (c->allow_unknown)
        return GW_OK;
    for (unsigned i = 0; any && i < c->nmodels; i++) {
        if (offers(&c->models[i], op))
            return GW_OK;
    }
    return gw_error_set(err, 400, "invalid_request_error", "unsupported_operation", "video",
                        any ? "The video service behind this gateway offers no %s."
                            : "The model of this video is not in the gateway's catalog, which "
                              "cannot tell whether it offers %s.",
                        op_names[op]);
}

int gw_catalog_check_extend_seconds(const struct gw_catalog *c, const struct gw_model *m,
                                    int any, struct gw_str seconds, struct gw_error *err)
{
    char echo[CATALOG_ECHO_MAX + 4];

    if (m != NULL)
        return catalog_check_list(m, m->extend_seconds, m->nextend_seconds, seconds, "seconds",
                                  err);
    if (!any || c->allow_unknown)
        return GW_OK;
    for (unsigned i = 0; i < c->nmodels; i++) {
        const struct gw_model *o = &c->models[i];

        if (!o->extensions)
            continue;
        if (o->nextend_seconds == 0)
            return GW_OK;
        for (unsigned j = 0; j < o->nextend_seconds; j++) {
            if (gw_str_eq(seconds, o->extend_seconds[j]))
                return GW_OK;
        }
    }
    return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "seconds",
                        "Invalid 'seconds' value '%s' for an extension: no model of this "
                        "gateway extends by that many seconds.",
                        catalog_echo(seconds, echo, sizeof(echo)));
}

void gw_catalog_free(struct gw_catalog *c)
{
    for (unsigned i = 0; i < c->nmodels; i++) {
        struct gw_model *m = &c->models[i];

        free(m->name);
        for (unsigned j = 0; j < m->nseconds; j++)
            free(m->seconds[j]);
        for (unsigned j = 0; j < m->nsizes; j++)
            free(m->sizes[j]);
        for (unsigned j = 0; j < m->nextend_seconds; j++)
            free(m->extend_seconds[j]);
    }
    free(c->models);
    for (unsigned i = 0; i < c->naliases; i++)
        free(c->aliases[i].from);
    free(c->aliases);
    memset(c, 0, sizeof(*c));
}
