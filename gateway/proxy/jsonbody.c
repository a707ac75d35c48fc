/*
 * jsonbody.c - the JSON form of a create/remix request: validate with cJSON,
 * observe the top-level fields, rewrite `model`.
 *
 * The rewrite splices the new model string into the original bytes instead of
 * re-serializing the tree: cJSON would reformat numbers (1.0 -> 1, big integers
 * lose digits) and escapes, and the upstream must receive what the client sent
 * except for the one value. To find that value's bytes, a small scanner walks the
 * top-level members in the same order as cJSON's child list; cJSON has already
 * validated the text, so the scanner only has to skip, never to judge.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "jsonbody.h"

/* cJSON's idea of whitespace: any byte <= ' '. The scanner must agree with it. */
static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (unsigned char)*p <= ' ')
        p++;
    return p;
}

/*
 * Skip a string starting at its opening quote; returns the byte after the closing
 * quote. Sets *nul when it holds a \u0000 escape: cJSON stops such a string at
 * the NUL, so the gateway would see a different value from the upstream.
 */
static const char *skip_string(const char *p, const char *end, int *nul)
{
    for (p++; p < end && *p != '"'; p++) {
        if (*p != '\\')
            continue;
        p++;
        if (end - p >= 5 && p[0] == 'u' && memcmp(p + 1, "0000", 4) == 0)
            *nul = 1;
    }
    return p < end ? p + 1 : end;
}

/* Skip any value; nesting is balanced because cJSON accepted the text. */
static const char *skip_value(const char *p, const char *end, int *nul)
{
    size_t depth = 0;

    do {
        p = skip_ws(p, end);
        if (p == end)
            return p;
        if (*p == '"') {
            p = skip_string(p, end, nul);
        } else if (*p == '{' || *p == '[') {
            depth++;
            p++;
        } else if (*p == '}' || *p == ']') {
            depth--;
            p++;
        } else if (*p == ',' || *p == ':') {
            p++;
        } else {
            while (p < end && (unsigned char)*p > ' ' && *p != ',' && *p != '}' && *p != ']' &&
                   *p != ':')
                p++;
        }
    } while (depth > 0);
    return p;
}

/* A number in its shortest text form, as cJSON prints it (8 -> "8"). */
static size_t number_text(double d, char *buf, size_t cap)
{
    double back = 0;
    int n;

    /* range first: converting an out-of-range double to an integer is undefined */
    if (isfinite(d) && d > -1e15 && d < 1e15 && d == (double)(long long)d)
        return (size_t)snprintf(buf, cap, "%lld", (long long)d);
    n = snprintf(buf, cap, "%1.15g", d);
    if (sscanf(buf, "%lg", &back) != 1 || back != d)
        n = snprintf(buf, cap, "%1.17g", d);
    return (size_t)n;
}

/* Write s as a JSON string (quotes included) at dst, which has room for 6*len+2. */
static size_t json_quote(char *dst, struct gw_str s)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    dst[o++] = '"';
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)c;
        } else if (c < 0x20) {
            memcpy(dst + o, "\\u00", 4);
            dst[o + 4] = hex[c >> 4];
            dst[o + 5] = hex[c & 0xf];
            o += 6;
        } else {
            dst[o++] = (char)c;
        }
    }
    dst[o++] = '"';
    return o;
}

/*
 * Step over one top-level member of an object cJSON accepted: p is just after the
 * '{' or ',' before it. Sets [*v, *ve) to the bytes of its value (numbers exactly as
 * written); returns the position just after the ',' or '}' that follows it.
 */
static const char *next_member(const char *p, const char *end, const char **v,
                               const char **ve, int *nul)
{
    p = skip_ws(p, end);
    p = skip_string(p, end, nul);       /* the key */
    p = skip_ws(p, end) + 1;            /* ':' */
    *v = skip_ws(p, end);
    *ve = skip_value(*v, end, nul);
    return skip_ws(*ve, end) + 1;       /* ',' or '}' */
}

/* Just after the '{' of the object cJSON accepted (it skips a UTF-8 BOM first). */
static const char *first_member(struct gw_str body)
{
    const char *p = body.p, *end = body.p + body.len;

    if (body.len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        p += 3;
    return skip_ws(p, end) + 1;
}

/*
 * The members the gateway reads (reqbody.c's hooks check them against the catalog),
 * with the one JSON type each is read as. Any other type is refused rather than
 * skipped, since a member the hooks never saw was never checked, and the upstream may
 * still read a value out of it (`"seconds": [99]`, `"size": {"0": "4096x4096"}`).
 * null is refused too, not taken for "absent": an upstream may read it as a value,
 * or replace it with a default the catalog does not allow for this model.
 */
enum member_kind {
    MEMBER_STRING = 0, /* a JSON string */
    MEMBER_SECONDS,    /* a string of digits, or an integer written with digits only */
};

static const struct {
    const char *name;
    enum member_kind kind;
} checked_members[] = {
    { "model", MEMBER_STRING },
    { "prompt", MEMBER_STRING },
    { "seconds", MEMBER_SECONDS },
    { "size", MEMBER_STRING },
};

static const char *json_type(const cJSON *it)
{
    if (cJSON_IsString(it))
        return "a string";
    if (cJSON_IsNumber(it))
        return "a number";
    if (cJSON_IsBool(it))
        return "a boolean";
    if (cJSON_IsNull(it))
        return "null";
    return cJSON_IsArray(it) ? "an array" : "an object";
}

static int all_digits(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
    }
    return n > 0;
}

/*
 * Check the type of a top-level member whose value is [v, ve) in the body: GW_OK, or
 * GW_ERR with err set (400, param the member's name): invalid_type for a wrong JSON
 * type, invalid_value for a `seconds` number or string that is not a whole number of
 * seconds. A `seconds` number is judged as written, not as cJSON read it: 8.0, 8e0,
 * -8 and 08 are refused (cJSON reads 08 as 8, where strict parsers refuse the body).
 */
static int check_member(const cJSON *it, const char *v, const char *ve, struct gw_error *err)
{
    for (size_t i = 0; i < GW_ARRAY_LEN(checked_members); i++) {
        const char *name = checked_members[i].name;

        if (strcmp(it->string, name) != 0)
            continue;
        if (checked_members[i].kind == MEMBER_STRING) {
            if (cJSON_IsString(it))
                return GW_OK;
            return gw_error_set(err, 400, "invalid_request_error", "invalid_type", name,
                                "The %s field must be a JSON string, not %s", name,
                                json_type(it));
        }
        /* MEMBER_SECONDS */
        if (cJSON_IsString(it) && all_digits(it->valuestring, strlen(it->valuestring)))
            return GW_OK;
        if (cJSON_IsNumber(it) && all_digits(v, (size_t)(ve - v)) && (ve - v == 1 || *v != '0'))
            return GW_OK;
        if (cJSON_IsString(it) || cJSON_IsNumber(it))
            return gw_error_set(err, 400, "invalid_request_error", "invalid_value", name,
                                "The %s field must be a whole number of seconds, as digits",
                                name);
        return gw_error_set(err, 400, "invalid_request_error", "invalid_type", name,
                            "The %s field must be a string of digits or an integer, not %s",
                            name, json_type(it));
    }
    return GW_OK;
}

static int hook_result(int rc, struct gw_error *err)
{
    if (rc == GW_OK)
        return GW_OK;
    if (err->status == 0)
        gw_error_set(err, 400, "invalid_request_error", "invalid_json", NULL,
                     "request body refused");
    return GW_ERR;
}

/*
 * The members that name other objects (issue 9). `video` must be {"id": string}, and
 * is observed as the form field video[id] (how the SDKs send it in a form), so one
 * set of checks serves both bodies; any other shape is refused here (a JSON body
 * cannot carry a file). `characters`, of any type, is observed as a field of that
 * name with its JSON text as the value: the hooks decide what a create may name.
 */
static int ref_member(const cJSON *it, const char *v, const char *ve,
                      const struct gw_mp_hooks *hooks, void *arg, struct gw_error *err)
{
    struct gw_mp_field f;
    const cJSON *id;

    if (strncmp(it->string, "characters", 10) == 0) {
        f.name = (struct gw_str){ "characters", 10 };
        f.value = (struct gw_str){ v, (size_t)(ve - v) };
    } else {
        id = cJSON_IsObject(it) ? cJSON_GetObjectItemCaseSensitive(it, "id") : NULL;
        if (!cJSON_IsString(id) || cJSON_GetArraySize(it) != 1)
            return gw_error_set(err, 400, "invalid_request_error", "invalid_type", "video",
                                "The video field must be an object {\"id\": \"video_...\"} "
                                "naming one of your videos");
        f.name = (struct gw_str){ "video[id]", 9 };
        f.value = (struct gw_str){ id->valuestring, strlen(id->valuestring) };
    }
    f.total_len = f.value.len;
    if (f.value.len > GW_MP_VALUE_MAX)
        f.value.len = GW_MP_VALUE_MAX;
    return hook_result(hooks->on_field(arg, &f, err), err);
}

int gw_jsonbody_rewrite(struct gw_str body, const struct gw_mp_hooks *hooks, void *arg,
                        char **out, size_t *out_len, struct gw_error *err)
{
    const char *p, *end = body.p + body.len, *parse_end = NULL;
    const char *model_at = NULL, *model_end = NULL;
    cJSON *root = NULL, *model = NULL;
    struct gw_error type_err = { 0 };
    int rc = GW_ERR, nul = 0;

    *out = NULL;
    *out_len = 0;
    err->status = 0;
    if (body.p != NULL && body.len > 0)
        root = cJSON_ParseWithLengthOpts(body.p, body.len, &parse_end, 0);
    /* an object, and nothing but JSON whitespace after it */
    while (parse_end != NULL && parse_end < end && strchr(" \t\r\n", *parse_end) != NULL &&
           *parse_end != '\0')
        parse_end++;
    if (root == NULL || !cJSON_IsObject(root) || parse_end != end) {
        gw_error_set(err, 400, "invalid_request_error", "invalid_json", NULL,
                     "request body is not a JSON object");
        goto out;
    }

    /* the members in the order of cJSON's child list, with their bytes */
    p = first_member(body);
    for (cJSON *it = root->child; it != NULL; it = it->next) {
        const char *v, *ve;

        p = next_member(p, end, &v, &ve, &nul);
        /* the first wrong type is reported, after a NUL (which may cut a key) */
        if (type_err.status == 0)
            check_member(it, v, ve, &type_err);
        if (strcmp(it->string, "model") != 0)
            continue;
        if (model != NULL) {
            gw_error_set(err, 400, "invalid_request_error", "invalid_value", "model",
                         "the model field is given twice");
            goto out;
        }
        model = it;
        model_at = v;
        model_end = ve;
    }
    if (nul) {
        gw_error_set(err, 400, "invalid_request_error", "invalid_json", NULL,
                     "JSON strings with NUL characters are not supported");
        goto out;
    }
    if (type_err.status != 0) {
        *err = type_err;
        goto out;
    }
    /* model is a string now */
    if (model != NULL && strlen(model->valuestring) > GW_MP_VALUE_MAX) {
        gw_error_set(err, 400, "invalid_request_error", "invalid_value", "model",
                     "the model value is longer than %d bytes", GW_MP_VALUE_MAX);
        goto out;
    }

    if (hooks != NULL && hooks->on_field != NULL) {
        p = first_member(body);
        for (cJSON *it = root->child; it != NULL; it = it->next) {
            char num[64];
            struct gw_mp_field f = { .name = { it->string, strlen(it->string) } };
            const char *v, *ve;

            p = next_member(p, end, &v, &ve, &nul);
            if (strcmp(it->string, "video[id]") == 0) {
                /* the form's spelling: in JSON it names nothing for the upstream, and
                 * the gateway must not check an id the upstream does not use */
                gw_error_set(err, 400, "invalid_request_error", "invalid_value", "video",
                             "In a JSON body the video is \"video\": {\"id\": ...}, not "
                             "video[id]");
                goto out;
            }
            if (strcmp(it->string, "video") == 0 || strcmp(it->string, "characters") == 0 ||
                strncmp(it->string, "characters[", 11) == 0) {
                /* as a form sends them: video[id], characters (any shape) */
                if (ref_member(it, v, ve, hooks, arg, err) != GW_OK)
                    goto out;
                continue;
            }
            if (cJSON_IsString(it)) {
                f.value = (struct gw_str){ it->valuestring, strlen(it->valuestring) };
            } else if (cJSON_IsNumber(it) && strcmp(it->string, "seconds") == 0) {
                /* checked to be digits: the upstream reads what is written, which
                 * cJSON's double may not hold (more than 15 digits) */
                f.value = (struct gw_str){ v, (size_t)(ve - v) };
            } else if (cJSON_IsNumber(it)) {
                f.value = (struct gw_str){ num, number_text(it->valuedouble, num, sizeof(num)) };
            } else {
                continue;
            }
            /* as from a multipart body: the first GW_MP_VALUE_MAX bytes, the real length */
            f.total_len = f.value.len;
            if (f.value.len > GW_MP_VALUE_MAX)
                f.value.len = GW_MP_VALUE_MAX;
            if (hook_result(hooks->on_field(arg, &f, err), err) != GW_OK)
                goto out;
        }
    }

    if (model != NULL && hooks != NULL && hooks->on_model != NULL) {
        struct gw_str value = { model->valuestring, strlen(model->valuestring) };
        struct gw_str repl = value;

        if (hook_result(hooks->on_model(arg, value, &repl, err), err) != GW_OK)
            goto out;
        if (repl.len != value.len || memcmp(repl.p, value.p, value.len) != 0) {
            size_t head = (size_t)(model_at - body.p), tail = (size_t)(end - model_end);
            char *nb = malloc(head + repl.len * 6 + 2 + tail);

            if (nb == NULL) {
                gw_error_set(err, 500, "server_error", "internal_error", NULL,
                             "out of memory");
                goto out;
            }
            memcpy(nb, body.p, head);
            size_t q = json_quote(nb + head, repl);
            memcpy(nb + head + q, model_end, tail);
            *out = nb;
            *out_len = head + q + tail;
        }
    }

    if (hooks != NULL && hooks->on_end != NULL &&
        hook_result(hooks->on_end(arg, err), err) != GW_OK) {
        free(*out);
        *out = NULL;
        *out_len = 0;
        goto out;
    }
    rc = GW_OK;
out:
    cJSON_Delete(root);
    return rc;
}
