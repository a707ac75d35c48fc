/*
 * admin_keys.c - the keys routes of the admin API:
 *
 *   GET    /admin/keys          every key: the config's (read-only) and the store's,
 *                               with limits, created, last used, today's usage
 *   POST   /admin/keys          {"name", "rpm", "burst", "concurrency",
 *                               "daily_seconds", "models", "expires"}: a new store
 *                               key; the answer holds its secret, once
 *   PATCH  /admin/keys/{name}   change a store key's limits (null: the default)
 *   DELETE /admin/keys/{name}   revoke a store key
 *
 * A write is answered once every loop has the new key table (keysync.c), so the
 * next request anywhere sees it. Refusals: 400 for a body that is not a JSON
 * object, an unknown member, an odd name, a limit out of bounds, an `expires`
 * in the past or not a date, a PATCH/DELETE of a config key; 404 for no such
 * key; 409 for a name taken (by the config, or by a store key, revoked ones
 * included).
 */
#define _GNU_SOURCE /* memmem */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "admin_int.h"
#include "auth.h"
#include "keytab.h"

/* Members of a key's body and the limit each sets (-1: models, expires, name). */
static const struct {
    const char *name;
    int limit;          /* enum gw_key_limit, or -1 */
    unsigned bit;       /* GW_KEY_SET_* */
} members[] = {
    { "name", -1, 0 },
    { "rpm", GW_KEY_RPM, GW_KEY_SET_RPM },
    { "burst", GW_KEY_BURST, GW_KEY_SET_BURST },
    { "concurrency", GW_KEY_CONCURRENCY, GW_KEY_SET_CONCURRENCY },
    { "daily_seconds", GW_KEY_DAILY_SECONDS, GW_KEY_SET_DAILY_SECONDS },
    { "models", -1, GW_KEY_SET_MODELS },
    { "expires", -1, GW_KEY_SET_EXPIRES },
};

static int bad(struct gw_error *err, const char *param, const char *msg)
{
    return gw_error_set(err, 400, "invalid_request_error", "invalid_value", param, "%s", msg);
}

/* A parsed body: what it sets (a patch's fields; a put takes the rest as defaults). */
struct key_body {
    char name[GW_STORE_KEY_NAME_MAX + 1];
    unsigned set;
    int64_t lim[4];
    char models[GW_STORE_KEY_MODELS_MAX + 1]; /* canonical, comma-separated */
    int64_t expires_at;
};

/* models: an array of model names (or one comma-separated string), each a model
 * or alias of the catalog (or any name when [models] unknown = pass), kept as
 * the names sent upstream. */
static int parse_models(const struct gw_config *cfg, const cJSON *v, struct key_body *kb,
                        struct gw_error *err)
{
    char list[GW_STORE_KEY_MODELS_MAX + 1] = "", unknown[2];
    size_t len = 0;
    struct gw_names n;
    int refused;

    if (cJSON_IsString(v)) {
        if (strlen(v->valuestring) > GW_STORE_KEY_MODELS_MAX)
            return bad(err, "models", "Invalid 'models': at most 4096 bytes");
        snprintf(list, sizeof(list), "%s", v->valuestring);
    } else if (cJSON_IsArray(v)) {
        const cJSON *m;
        cJSON_ArrayForEach(m, v) {
            if (!cJSON_IsString(m) || m->valuestring[0] == '\0' ||
                strchr(m->valuestring, ',') != NULL)
                return bad(err, "models", "Invalid 'models': expected an array of model "
                                          "names (strings without commas)");
            size_t l = strlen(m->valuestring);
            if (len + l + 1 > GW_STORE_KEY_MODELS_MAX)
                return bad(err, "models", "Invalid 'models': at most 4096 bytes");
            if (len > 0)
                list[len++] = ',';
            memcpy(list + len, m->valuestring, l + 1);
            len += l;
        }
    } else if (!cJSON_IsNull(v)) {
        return bad(err, "models", "Invalid 'models': expected an array of model names, or "
                                  "null for every model");
    }
    for (const unsigned char *p = (const unsigned char *)list; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return bad(err, "models", "Invalid 'models': a model name has control bytes");
    }
    if (gw_keytab_models(cfg, list, &n, unknown, sizeof(unknown), &refused) != GW_OK)
        return gw_error_set(err, 503, "server_error", "overloaded", NULL, "Out of memory");
    kb->models[0] = '\0';
    len = 0;
    for (unsigned i = 0; i < n.n; i++) {
        size_t l = strlen(n.v[i]);
        if (len + l + 2 < sizeof(kb->models)) {
            if (len > 0)
                kb->models[len++] = ',';
            memcpy(kb->models + len, n.v[i], l + 1);
            len += l;
        }
    }
    gw_keytab_names_free(&n);
    if (refused)
        return bad(err, "models", "Invalid 'models': a name is no model or alias of the "
                                  "catalog (GET /v1/models lists them)");
    return GW_OK;
}

/*
 * The body of a POST (post: a name is required) or a PATCH (no name). Members
 * left out are not set; null sets a limit back to the default, `expires` to
 * never, `models` to every model.
 */
static int parse_body(struct admin_req *a, int post, struct key_body *kb, struct gw_error *err)
{
    size_t len = evbuffer_get_length(a->body);
    const char *text = (const char *)evbuffer_pullup(a->body, -1);
    cJSON *root = text != NULL ? cJSON_ParseWithLength(text, len) : NULL;
    const cJSON *v;
    int rc = GW_ERR;

    memset(kb, 0, sizeof(*kb));
    for (int i = 0; i < 4; i++)
        kb->lim[i] = -1;
    /* cJSON's strings end at a NUL: "a\u0000b" would be taken for "a" */
    if (text != NULL && (memchr(text, '\0', len) != NULL || memmem(text, len, "\\u0000", 6) ||
                         memmem(text, len, "\\U0000", 6))) {
        bad(err, NULL, "The body holds a NUL character (\\u0000): not allowed in any member");
        goto out;
    }
    if (root == NULL || !cJSON_IsObject(root)) {
        gw_error_set(err, 400, "invalid_request_error", "invalid_json", NULL,
                     "The body must be a JSON object, e.g. {\"name\": \"alice\", "
                     "\"daily_seconds\": 600}");
        goto out;
    }
    cJSON_ArrayForEach(v, root) {
        size_t m;
        for (m = 0; m < GW_ARRAY_LEN(members) && strcmp(v->string, members[m].name) != 0; m++)
            ;
        if (m == GW_ARRAY_LEN(members)) {
            bad(err, NULL, "Unknown member in the body: expected name, rpm, burst, "
                           "concurrency, daily_seconds, models, expires");
            goto out;
        }
        if (kb->set & members[m].bit || (m == 0 && kb->name[0] != '\0')) {
            bad(err, members[m].name, "A member is given twice");
            goto out;
        }
        if (m == 0) { /* name */
            if (!post) {
                bad(err, "name", "A key's name cannot change: revoke it and make another");
                goto out;
            }
            if (!cJSON_IsString(v) || gw_store_key_name_ok(v->valuestring) != GW_OK) {
                bad(err, "name", "Invalid 'name': 1 to 64 characters of A-Z a-z 0-9 _ . -");
                goto out;
            }
            snprintf(kb->name, sizeof(kb->name), "%s", v->valuestring);
            continue;
        }
        kb->set |= members[m].bit;
        if (members[m].limit >= 0) {
            enum gw_key_limit which = (enum gw_key_limit)members[m].limit;
            int64_t n = -1; /* null: the [limits] default */
            if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= 1e15 &&
                v->valuedouble == (double)(int64_t)v->valuedouble) /* a whole number */
                n = (int64_t)v->valuedouble;
            else if (!cJSON_IsNull(v))
                n = -2; /* refused below: negative, fractional, absurd, not a number */
            if (gw_keytab_check_limit(which, n, err) != GW_OK)
                goto out;
            kb->lim[which] = n;
        } else if (members[m].bit == GW_KEY_SET_MODELS) {
            if (parse_models(a->cfg, v, kb, err) != GW_OK)
                goto out;
        } else { /* expires */
            kb->expires_at = 0; /* null: never */
            if (!cJSON_IsNull(v) && !cJSON_IsString(v)) {
                bad(err, "expires", "Invalid 'expires': expected a date YYYY-MM-DD (00:00 "
                                    "UTC) or YYYY-MM-DDTHH:MM:SSZ, or null for never");
                goto out;
            }
            if (cJSON_IsString(v) &&
                gw_keytab_parse_expires(v->valuestring, gw_admin_unix_ms() / 1000,
                                        &kb->expires_at, err) != GW_OK)
                goto out;
        }
    }
    if (post && kb->name[0] == '\0') {
        bad(err, "name", "Missing 'name': the key's name (what logs and usage show)");
        goto out;
    }
    rc = GW_OK;

out:
    cJSON_Delete(root);
    return rc;
}

/* ------------------------------------------------------------- answers */

struct today { /* a key's usage today (from usage_daily) */
    char name[GW_STORE_KEY_NAME_MAX + 1];
    int64_t jobs, seconds, failed, refunded;
};

struct list_ctx {
    size_t n;
    struct today t[];
};

static const struct today *today_of(const struct list_ctx *c, const char *name)
{
    for (size_t i = 0; c != NULL && i < c->n; i++) {
        if (strcmp(c->t[i].name, name) == 0)
            return &c->t[i];
    }
    return NULL;
}

static void json_time(struct evbuffer *b, const char *member, int64_t t)
{
    if (t > 0)
        evbuffer_add_printf(b, ",\"%s\":%" PRId64, member, t);
    else
        evbuffer_add_printf(b, ",\"%s\":null", member);
}

/* The members every key has: limits (effective), which are defaults, models, today. */
static void json_common(struct evbuffer *b, const struct gw_limits *eff, const int64_t raw[4],
                        const struct gw_names *models, const struct today *t)
{
    const int v[4] = { eff->rpm, eff->burst, eff->concurrency, eff->daily_seconds };

    for (int i = 0; i < 4; i++)
        evbuffer_add_printf(b, ",\"%s\":%d", gw_keytab_limit_name((enum gw_key_limit)i), v[i]);
    evbuffer_add(b, ",\"defaults\":[", 13);
    for (int i = 0, n = 0; raw != NULL && i < 4; i++) {
        if (raw[i] < 0)
            evbuffer_add_printf(b, "%s\"%s\"", n++ ? "," : "",
                                gw_keytab_limit_name((enum gw_key_limit)i));
    }
    evbuffer_add(b, "],\"models\":", 11);
    if (models->n == 0) {
        evbuffer_add(b, "null", 4);
    } else {
        evbuffer_add(b, "[", 1);
        for (unsigned i = 0; i < models->n; i++) {
            if (i)
                evbuffer_add(b, ",", 1);
            gw_admin_json_str(b, models->v[i]);
        }
        evbuffer_add(b, "]", 1);
    }
    evbuffer_add_printf(b, ",\"today\":{\"jobs\":%" PRId64 ",\"seconds\":%" PRId64
                           ",\"failed\":%" PRId64 ",\"refunded_seconds\":%" PRId64 "}",
                        t ? t->jobs : 0, t ? t->seconds : 0, t ? t->failed : 0,
                        t ? t->refunded : 0);
}

static void json_config_key(struct evbuffer *b, const struct gw_team_key *k, int64_t last_used,
                            const struct today *t, int64_t now)
{
    evbuffer_add(b, "{\"object\":\"key\",\"name\":", 23);
    gw_admin_json_str(b, k->name);
    evbuffer_add_printf(b, ",\"source\":\"config\",\"read_only\":true,\"admin\":%s,"
                           "\"state\":\"%s\"",
                        k->admin ? "true" : "false",
                        k->expires_ms != 0 && k->expires_ms / 1000 <= now ? "expired"
                                                                           : "active");
    json_time(b, "expires_at", k->expires_ms / 1000);
    json_time(b, "created_at", 0);
    json_time(b, "revoked_at", 0);
    json_time(b, "last_used_at", last_used);
    json_common(b, &k->limits, NULL, &k->models, t);
    evbuffer_add(b, "}", 1);
}

/* secret (or NULL): the new key's, in the answer to its POST only */
static void json_store_key(struct evbuffer *b, const struct gw_config *cfg,
                           const struct gw_store_key *k, const struct today *t, int64_t now,
                           const char *secret)
{
    const int64_t raw[4] = { k->rpm, k->burst, k->concurrency, k->daily_seconds };
    struct gw_keytab *one = gw_keytab_build(cfg, &(struct gw_store_key){ .name = k->name,
                                                 .rpm = k->rpm, .burst = k->burst,
                                                 .concurrency = k->concurrency,
                                                 .daily_seconds = k->daily_seconds,
                                                 .models = k->models }, 1, 0);
    static const struct gw_names none = { NULL, 0 };

    evbuffer_add(b, "{\"object\":\"key\",\"name\":", 23);
    gw_admin_json_str(b, k->name);
    evbuffer_add_printf(b, ",\"source\":\"store\",\"read_only\":false,\"admin\":false,"
                           "\"state\":\"%s\"",
                        k->revoked_at ? "revoked"
                        : k->expires_at && k->expires_at <= now ? "expired"
                                                                : "active");
    json_time(b, "expires_at", k->expires_at);
    json_time(b, "created_at", k->created_at);
    json_time(b, "updated_at", k->updated_at);
    json_time(b, "revoked_at", k->revoked_at);
    json_time(b, "last_used_at", k->last_used_at);
    if (one != NULL && one->nkeys == 1) {
        json_common(b, &one->keys[0].limits, raw, &one->keys[0].models, t);
    } else { /* named like a config key (not in use), or out of memory */
        struct gw_limits l = { k->rpm < 0 ? cfg->limits.rpm : (int)k->rpm,
                               k->burst < 0 ? cfg->limits.burst : (int)k->burst,
                               k->concurrency < 0 ? cfg->limits.concurrency
                                                  : (int)k->concurrency,
                               k->daily_seconds < 0 ? cfg->limits.daily_seconds
                                                    : (int)k->daily_seconds };
        json_common(b, &l, raw, &none, t);
    }
    gw_keytab_release(one);
    if (secret != NULL) /* [A-Za-z0-9_-]: nothing to escape */
        evbuffer_add_printf(b, ",\"secret\":\"%s\"", secret);
    evbuffer_add(b, "}", 1);
}

/* ------------------------------------------------------------------ GET */

static void listed(void *arg, const struct gw_store_res *res)
{
    struct admin_req *a = arg;
    const struct gw_config *cfg = a->cfg;
    const struct list_ctx *c = a->data;
    struct evbuffer *b = gw_admin_answer_buffer(a, res);
    int64_t now = gw_admin_unix_ms() / 1000;

    if (b == NULL)
        return;
    evbuffer_add(b, "{\"object\":\"list\",\"data\":[", 25);
    for (unsigned i = 0; i < cfg->nkeys; i++) {
        if (i)
            evbuffer_add(b, ",", 1);
        json_config_key(b, &cfg->keys[i], res->last_used != NULL ? res->last_used[i] : 0,
                        today_of(c, cfg->keys[i].name), now);
    }
    for (size_t i = 0; i < res->nkeys; i++) {
        if (cfg->nkeys + i)
            evbuffer_add(b, ",", 1);
        json_store_key(b, cfg, &res->keys[i], today_of(c, res->keys[i].name), now, NULL);
    }
    evbuffer_add(b, "]}", 2);
    gw_admin_send(a, 200, "application/json", b);
    evbuffer_free(b);
}

/* Today's usage per key came: then the keys. */
static void got_today(void *arg, const struct gw_store_res *res)
{
    struct admin_req *a = arg;
    const struct gw_config *cfg = a->cfg;
    struct gw_error err;
    struct list_ctx *c;
    const char **names = NULL;

    a->op = NULL;
    if (res->rc != GW_OK) {
        gw_admin_error(a, res->err);
        return;
    }
    c = calloc(1, sizeof(*c) + (res->nusage + 1) * sizeof(c->t[0]));
    names = calloc(cfg->nkeys + 1, sizeof(*names));
    if (c == NULL || names == NULL) {
        free(c);
        free(names);
        gw_admin_fail(a, 503, "overloaded", NULL, "Out of memory");
        return;
    }
    for (size_t i = 0; i < res->nusage; i++) { /* rows come by key: sum each key's */
        const struct gw_usage_row *r = &res->usage[i];
        if (c->n == 0 || strcmp(c->t[c->n - 1].name, r->key_name) != 0)
            snprintf(c->t[c->n++].name, sizeof(c->t[0].name), "%s", r->key_name);
        struct today *t = &c->t[c->n - 1];
        t->jobs += r->jobs;
        t->seconds += r->seconds;
        t->failed += r->failed;
        t->refunded += r->refunded_seconds;
    }
    a->data = c;
    for (unsigned i = 0; i < cfg->nkeys; i++)
        names[i] = cfg->keys[i].name;
    if (gw_store_keys_list(a->w->store, names, cfg->nkeys, listed, a, &a->op, &err) !=
        GW_AGAIN)
        gw_admin_error(a, &err);
    free(names);
}

static void list_keys(struct admin_req *a)
{
    char today[16];
    struct gw_error err;
    time_t now = (time_t)(gw_admin_unix_ms() / 1000);
    struct tm tm;

    gmtime_r(&now, &tm);
    strftime(today, sizeof(today), "%Y-%m-%d", &tm);
    if (gw_store_usage(a->w->store, &(struct gw_usage_query){ .since = today, .until = today },
                       got_today, a, &a->op, &err) != GW_AGAIN)
        gw_admin_error(a, &err);
}

/* ------------------------------------------------------------- writes */

/* Every loop has the new key table: the answer may go. */
static void published(void *arg)
{
    struct admin_req *a = arg;

    a->wait = NULL;
    gw_admin_send(a, a->answer_status, "application/json", a->answer);
}

/* Answer with a->answer once the loops have the keys as just written. */
static void answer_when_published(struct admin_req *a, int status)
{
    a->answer_status = status;
    if (a->w->keysync != NULL && (a->wait = gw_keysync_kick(a->w->keysync, published, a)) != NULL)
        return;
    /* out of memory: the next poll publishes it */
    published(a);
}

static void key_answer(struct admin_req *a, const struct gw_store_key *k, const char *secret)
{
    if ((a->answer = evbuffer_new()) == NULL) {
        gw_admin_fail(a, 503, "overloaded", NULL, "Out of memory");
        return;
    }
    json_store_key(a->answer, a->cfg, k, NULL, gw_admin_unix_ms() / 1000, secret);
}

static void put_done(void *arg, const struct gw_store_res *res)
{
    struct admin_req *a = arg;

    a->op = NULL;
    if (res->rc != GW_OK) {
        gw_admin_error(a, res->err);
    } else if (res->key_exists || res->key == NULL) {
        gw_admin_fail(a, 409, "key_exists", "name",
                      "A key with this name exists (revoked names stay taken)");
    } else {
        key_answer(a, res->key, a->secret);
        OPENSSL_cleanse(a->secret, sizeof(a->secret));
        if (a->answer != NULL)
            answer_when_published(a, 200);
    }
}

static void create_key(struct admin_req *a)
{
    struct key_body kb;
    struct gw_error err;
    struct gw_store_key k;

    if (parse_body(a, 1, &kb, &err) != GW_OK) {
        gw_admin_error(a, &err);
        return;
    }
    if (gw_keytab_find(a->cfg, NULL, kb.name) != NULL) {
        gw_admin_fail(a, 409, "key_exists", "name",
                      "A key with this name is declared in the config file");
        return;
    }
    memset(&k, 0, sizeof(k));
    if (gw_auth_new_secret(a->secret, k.sha256) != GW_OK) {
        gw_admin_fail(a, 503, "server_error", NULL, "No randomness available");
        return;
    }
    k.name = kb.name;
    k.rpm = kb.lim[0];
    k.burst = kb.lim[1];
    k.concurrency = kb.lim[2];
    k.daily_seconds = kb.lim[3];
    k.models = kb.models;
    k.expires_at = kb.expires_at;
    k.created_at = gw_admin_unix_ms() / 1000;
    if (gw_store_key_put(a->w->store, &k, put_done, a, &a->op, &err) != GW_AGAIN)
        gw_admin_error(a, &err);
}

static void patch_done(void *arg, const struct gw_store_res *res)
{
    struct admin_req *a = arg;

    a->op = NULL;
    if (res->rc != GW_OK) {
        gw_admin_error(a, res->err);
    } else if (res->key == NULL) {
        gw_admin_fail(a, 404, "not_found", NULL, "No active key with this name");
    } else {
        key_answer(a, res->key, NULL);
        if (a->answer != NULL)
            answer_when_published(a, 200);
    }
}

static void patch_key(struct admin_req *a)
{
    struct key_body kb;
    struct gw_error err;

    if (parse_body(a, 0, &kb, &err) != GW_OK) {
        gw_admin_error(a, &err);
        return;
    }
    if (kb.set == 0) {
        gw_admin_fail(a, 400, "invalid_value", NULL, "Nothing to change: give rpm, burst, "
                      "concurrency, daily_seconds, models or expires");
        return;
    }
    struct gw_store_key_patch p = {
        .name = a->name, .set = kb.set, .rpm = kb.lim[0], .burst = kb.lim[1],
        .concurrency = kb.lim[2], .daily_seconds = kb.lim[3], .models = kb.models,
        .expires_at = kb.expires_at, .now = gw_admin_unix_ms() / 1000,
    };
    if (gw_store_key_patch(a->w->store, &p, patch_done, a, &a->op, &err) != GW_AGAIN)
        gw_admin_error(a, &err);
}

static void revoke_done(void *arg, const struct gw_store_res *res)
{
    struct admin_req *a = arg;

    a->op = NULL;
    if (res->rc != GW_OK) {
        gw_admin_error(a, res->err);
    } else if (res->key == NULL) {
        gw_admin_fail(a, 404, "not_found", NULL, "No key with this name");
    } else {
        key_answer(a, res->key, NULL);
        if (a->answer == NULL)
            return;
        if (res->key_revoked)
            answer_when_published(a, 200);
        else { /* already revoked: nothing changed */
            a->answer_status = 200;
            published(a);
        }
    }
}

/* ------------------------------------------------------------- routing */

void gw_admin_keys(struct admin_req *a, const char *method, const char *path)
{
    struct gw_error err;

    a->route = "admin.keys";
    if (strcmp(path, "/admin/keys") == 0) {
        if (strcmp(method, "GET") == 0)
            list_keys(a);
        else if (strcmp(method, "POST") == 0)
            create_key(a);
        else
            gw_admin_fail(a, 405, "method_not_allowed", NULL,
                          "Method not allowed; this path accepts GET and POST");
        return;
    }
    const char *name = path + strlen("/admin/keys/");
    if (gw_store_key_name_ok(name) != GW_OK) { /* never echoed: it may be anything */
        gw_admin_fail(a, 400, "invalid_value", "name",
                      "Invalid key name in the path: 1 to 64 characters of A-Z a-z 0-9 _ . -");
        return;
    }
    snprintf(a->name, sizeof(a->name), "%s", name);
    int patch = strcmp(method, "PATCH") == 0, del = strcmp(method, "DELETE") == 0;
    if (!patch && !del) {
        gw_admin_fail(a, 405, "method_not_allowed", NULL,
                      "Method not allowed; this path accepts PATCH and DELETE");
        return;
    }
    if (gw_keytab_find(a->cfg, NULL, a->name) != NULL) {
        gw_admin_fail(a, 400, "read_only_key", "name",
                      "This key is declared in the config file and is read-only here: "
                      "change its [key %s] section and reload (SIGHUP)", a->name);
        return;
    }
    if (patch)
        patch_key(a);
    else if (gw_store_key_revoke(a->w->store, a->name, gw_admin_unix_ms() / 1000, revoke_done,
                                 a, &a->op, &err) != GW_AGAIN)
        gw_admin_error(a, &err);
}
