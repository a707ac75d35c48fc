/*
 * characters.c - the character registry as the request path sees it (issue 9):
 * a character made through POST /v1/videos/characters belongs to the team key
 * that made it and is pinned to the upstream key it was made with, as a job is.
 *
 *   create   a 2xx character object is recorded before the client sees it
 *            (proxy.c holds the answer until the store has committed it).
 *   get      GET /v1/videos/characters/{id}: the caller's character (an admin
 *            key may read any), else 404 without asking the upstream; the
 *            request goes out with the character's upstream key.
 *
 * Without a store nothing is recorded and nothing is checked, as for jobs.
 */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>

#include "exchange.h"
#include "log.h"
#include "store/store.h"

static void owner_checked(void *arg, const struct gw_store_res *res)
{
    struct exchange *x = arg;
    struct gw_error err;
    const struct gw_character *c = res->character;

    x->store_op = NULL;
    if (res->rc != GW_OK) {
        gw_proxy_owner_checked(x, res->err);
        return;
    }
    /* never 403: whether another key's character exists is not the caller's business */
    if (c == NULL || (strcmp(c->key_name, x->key->name) != 0 && !x->key->admin)) {
        gw_error_set(&err, 404, "invalid_request_error", "not_found", "id",
                     "No character found with id '%.*s'", (int)x->route.video_id.len,
                     x->route.video_id.p);
        gw_proxy_owner_checked(x, &err);
        return;
    }
    if (gw_jobs_pin(x, c->upstream_key, "character", &err) != GW_OK) {
        gw_proxy_owner_checked(x, &err);
        return;
    }
    gw_proxy_owner_checked(x, NULL);
}

int gw_characters_check_owner(struct exchange *x, struct gw_error *err)
{
    char id[GW_ID_MAX + 1];

    if (x->w->store == NULL)
        return GW_OK;
    memcpy(id, x->route.video_id.p, x->route.video_id.len);
    id[x->route.video_id.len] = '\0';
    if (gw_store_character_get(x->w->store, id, owner_checked, x, &x->store_op, err) !=
        GW_AGAIN)
        return GW_ERR;
    return GW_AGAIN;
}

static void recorded(void *arg, const struct gw_store_res *res)
{
    struct exchange *x = arg;

    x->store_op = NULL;
    if (res->rc != GW_OK)
        gw_log(GW_LOG_ERROR, "rid=%s key=%s character not recorded: %s", x->rid,
               x->key->name, res->err->message);
    gw_proxy_recorded(x);
}

int gw_characters_record(struct exchange *x)
{
    struct evbuffer *b = x->resp;
    size_t len = evbuffer_get_length(b);
    struct gw_character c;
    struct gw_error err;
    cJSON *o, *id, *name, *created;
    int rc = GW_OK;

    if (x->w->store == NULL || x->up_status < 200 || x->up_status > 299 || len == 0)
        return GW_OK;
    o = cJSON_ParseWithLength((const char *)evbuffer_pullup(b, -1), len);
    id = cJSON_GetObjectItemCaseSensitive(o, "id");
    if (!cJSON_IsString(id) ||
        !gw_router_valid_id((struct gw_str){ id->valuestring, strlen(id->valuestring) })) {
        /* not recorded, so nobody can read it through the gateway: say so */
        gw_log(GW_LOG_WARN, "rid=%s key=%s the upstream's %d answer to a character create "
               "holds no character id: not recorded", x->rid, x->key->name, x->up_status);
        goto out;
    }
    name = cJSON_GetObjectItemCaseSensitive(o, "name");
    created = cJSON_GetObjectItemCaseSensitive(o, "created_at");
    memset(&c, 0, sizeof(c));
    c.id = id->valuestring;
    c.key_name = x->key->name;
    c.upstream_key = x->cfg->upstream_key_labels[x->upstream_key];
    c.name = cJSON_IsString(name) && strlen(name->valuestring) <= GW_STORE_CHARACTER_NAME_MAX
                 ? name->valuestring
                 : "";
    c.created_at = cJSON_IsNumber(created) ? (int64_t)created->valuedouble
                                           : gw_proxy_unix_ms() / 1000;
    c.object = (const char *)evbuffer_pullup(b, -1);
    c.object_len = len;
    if (gw_store_character_put(x->w->store, &c, recorded, x, &x->store_op, &err) == GW_AGAIN)
        rc = GW_AGAIN;
    else
        gw_log(GW_LOG_ERROR, "rid=%s key=%s character not recorded: %s", x->rid, x->key->name,
               err.message);
out:
    cJSON_Delete(o);
    return rc;
}
