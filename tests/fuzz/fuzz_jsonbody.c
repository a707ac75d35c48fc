/*
 * fuzz_jsonbody.c - the JSON body rewriter against arbitrary bodies.
 *
 * Input: byte 0 picks the replacement model; the rest is the body. Invariants
 * (abort() otherwise):
 *   - keeping the model never produces a new body;
 *   - a rewritten body parses, its model is the replacement, and without the
 *     model member it equals the original tree (the splice hit the right bytes);
 *   - errors carry a status and a message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "jsonbody.h"

#define CHECK(c)        \
    do {                \
        if (!(c))       \
            abort();    \
    } while (0)

static const char *const replacements[] = { NULL, "", "veo3", "a\"b\\c\n\x01\xe6\x97\xa5",
                                            "veo_3_1-fast-components-4K" };

struct ctx {
    const char *repl;
    int video_refs;  /* video[id] fields observed */
    int models;  /* on_model calls */
    int ended;   /* on_end calls */
};

static int on_field(void *arg, const struct gw_mp_field *f, struct gw_error *err)
{
    CHECK(f->value.len <= GW_MP_VALUE_MAX && f->value.len <= f->total_len);
    CHECK(f->name.p != NULL && f->value.p != NULL);
    if (gw_str_eq(f->name, "video[id]"))
        ((struct ctx *)arg)->video_refs++;
    return GW_OK;
}

static int on_model(void *arg, struct gw_str value, struct gw_str *out, struct gw_error *err)
{
    struct ctx *c = arg;

    c->models++;
    if (c->repl != NULL)
        *out = (struct gw_str){ c->repl, strlen(c->repl) };
    return GW_OK;
}

static int on_end(void *arg, struct gw_error *err)
{
    struct ctx *c = arg;

    c->ended++;
    return GW_OK;
}

static const struct gw_mp_hooks hooks = { NULL, on_field, on_model, on_end };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ctx keep = { 0 }, c = { 0 };
    struct gw_error err = { 0 };
    char *out = NULL;
    size_t out_len = 0;

    if (size < 1)
        return 0;
    c.repl = replacements[data[0] % GW_ARRAY_LEN(replacements)];
    struct gw_str body = { (const char *)data + 1, size - 1 };

    int rc = gw_jsonbody_rewrite(body, &hooks, &keep, &out, &out_len, &err);
    CHECK(out == NULL && out_len == 0);
    if (rc != GW_OK) {
        CHECK(rc == GW_ERR && err.status == 400 && err.message[0] != '\0');
        return 0;
    }
    CHECK(rc == GW_OK && keep.ended == 1 && keep.models <= 1);
    {
        /* issue 9: each `video` member was an object holding exactly one string id, and
         * was observed once as video[id] */
        cJSON *o = cJSON_ParseWithLength(body.p, body.len);
        int videos = 0;
        CHECK(o != NULL);
        for (cJSON *it = o->child; it != NULL; it = it->next) {
            if (strcmp(it->string, "video") != 0)
                continue;
            videos++;
            CHECK(cJSON_IsObject(it) && cJSON_GetArraySize(it) == 1 &&
                  cJSON_IsString(cJSON_GetObjectItemCaseSensitive(it, "id")));
        }
        CHECK(videos == keep.video_refs);
        cJSON_Delete(o);
    }

    CHECK(gw_jsonbody_rewrite(body, &hooks, &c, &out, &out_len, &err) == GW_OK);
    CHECK(c.models == keep.models && c.ended == 1);
    if (out == NULL)
        return 0;

    CHECK(c.models == 1 && c.repl != NULL);
    cJSON *a = cJSON_ParseWithLength(out, out_len);
    cJSON *b = cJSON_ParseWithLength(body.p, body.len);
    CHECK(a != NULL && b != NULL);
    cJSON *m = cJSON_GetObjectItemCaseSensitive(a, "model");
    CHECK(cJSON_IsString(m) && strcmp(m->valuestring, c.repl) == 0);
    cJSON_DeleteItemFromObjectCaseSensitive(a, "model");
    cJSON_DeleteItemFromObjectCaseSensitive(b, "model");
    /* compared as printed: cJSON_Compare finds inf (from 1e999) unequal to itself */
    char *pa = cJSON_PrintUnformatted(a), *pb = cJSON_PrintUnformatted(b);
    CHECK(pa != NULL && pb != NULL && strcmp(pa, pb) == 0);
    cJSON_free(pa);
    cJSON_free(pb);
    cJSON_Delete(a);
    cJSON_Delete(b);
    free(out);
    return 0;
}
