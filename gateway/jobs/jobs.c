/*
 * jobs.c - the job registry as the request path sees it (issue 6): who owns a
 * job, which upstream key made it, what the list shows. The store (store/store.h)
 * keeps the records; this file turns exchanges into store calls and store
 * answers back into exchange decisions, so that proxy.c stays the lifecycle.
 *
 *   follow-ups   GET/DELETE /v1/videos/{id}, /content, /remix: the job must be
 *                the caller's (an admin key may read any), else 404 without asking
 *                the upstream; the request goes out with the upstream key that
 *                created the job.
 *   creates      a 2xx job object is recorded before the client sees it, so a
 *                process killed right after the answer keeps the job.
 *   list         answered from the store: only the caller's jobs, OpenAI's
 *                cursor semantics.
 *   retrieve     the job object seen is stored (status, object); a job seen
 *                failed for the first time gives its seconds back.
 *   delete       the job leaves the list.
 *   idempotency  a create with an Idempotency-Key repeated by the same team key
 *                within 24 h gets the first answer again without a second
 *                upstream create; a repeat while the first is in flight is 409.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>

#include "exchange.h"
#include "limiter.h"
#include "log.h"
#include "metrics.h"
#include "store/store.h"

/* ------------------------------------------------------------- ownership */

/*
 * Pin the exchange to the upstream key recorded (by label) with a job or a
 * character. GW_ERR with err (502 upstream_key_unavailable) when that key is no
 * longer configured or the provider refused it.
 */
int gw_jobs_pin(struct exchange *x, const char *label, const char *what, struct gw_error *err)
{
    x->pinned_key = gw_config_upstream_key(x->cfg, label);
    if (x->pinned_key < 0)
        return gw_error_set(err, 502, "upstream_error", "upstream_key_unavailable", NULL,
                            "The upstream key that created this %s is no longer configured "
                            "on the gateway; its operator must restore it", what);
    if (gw_keypool_is_out(&x->w->keys, (unsigned)x->pinned_key, gw_proxy_now_ms()))
        return gw_error_set(err, 502, "upstream_error", "upstream_key_unavailable", NULL,
                            "The upstream key that created this %s was refused by the "
                            "provider; the gateway's operator must fix it", what);
    return GW_OK;
}

/* Whether the caller may use job j (never 403: whether another key's job exists
 * is not the caller's business). */
static int owns(const struct exchange *x, const struct gw_job *j)
{
    return j != NULL && j->deleted_at == 0 &&
           (strcmp(j->key_name, x->key->name) == 0 || x->key->admin);
}

static void owner_checked(void *arg, const struct gw_store_res *res)
{
    struct exchange *x = arg;
    struct gw_error err;
    const struct gw_job *j = res->job;

    x->store_op = NULL;
    if (res->rc != GW_OK) {
        gw_proxy_owner_checked(x, res->err);
        return;
    }
    if (!owns(x, j)) {
        gw_error_set(&err, 404, "invalid_request_error", "not_found", "id",
                     "No video found with id '%.*s'", (int)x->route.video_id.len,
                     x->route.video_id.p);
        gw_proxy_owner_checked(x, &err);
        return;
    }
    if (gw_jobs_pin(x, j->upstream_key, "video", &err) != GW_OK) {
        gw_proxy_owner_checked(x, &err);
        return;
    }
    x->job_seconds = j->seconds;
    x->job_created_at = j->created_at;
    gw_proxy_owner_checked(x, NULL);
}

int gw_jobs_check_owner(struct exchange *x, struct gw_error *err)
{
    char id[GW_ID_MAX + 1];

    if (x->route.id == GW_ROUTE_CHARACTER)
        return gw_characters_check_owner(x, err);
    if (x->w->store == NULL || x->route.video_id.len == 0)
        return GW_OK;
    memcpy(id, x->route.video_id.p, x->route.video_id.len);
    id[x->route.video_id.len] = '\0';
    if (gw_store_job_get(x->w->store, id, owner_checked, x, &x->store_op, err) != GW_AGAIN)
        return GW_ERR;
    return GW_AGAIN;
}

/* An edit's or extension's video[id]: the caller's video, with its upstream key
 * and its model (the catalog's entry, NULL if it has none). */
static void ref_checked(void *arg, const struct gw_store_res *res)
{
    struct exchange *x = arg;
    struct gw_error err;
    const struct gw_job *j = res->job;

    x->store_op = NULL;
    if (res->rc != GW_OK) {
        gw_followup_ref_checked(x, NULL, res->err);
        return;
    }
    if (!owns(x, j)) {
        gw_error_set(&err, 404, "invalid_request_error", "not_found", "video",
                     "No video found with id '%s'", x->video_ref);
        gw_followup_ref_checked(x, NULL, &err);
        return;
    }
    if (gw_jobs_pin(x, j->upstream_key, "video", &err) != GW_OK) {
        gw_followup_ref_checked(x, NULL, &err);
        return;
    }
    x->job_seconds = j->seconds;
    snprintf(x->model_asked, sizeof(x->model_asked), "%s", j->model_sent);
    gw_followup_ref_checked(
        x, gw_catalog_find(&x->cfg->catalog, (struct gw_str){ j->model_sent,
                                                              strlen(j->model_sent) }),
        NULL);
}

int gw_jobs_ref_lookup(struct exchange *x, struct gw_error *err)
{
    if (x->w->store == NULL)
        return GW_OK;
    if (gw_store_job_get(x->w->store, x->video_ref, ref_checked, x, &x->store_op, err) !=
        GW_AGAIN)
        return GW_ERR;
    return GW_AGAIN;
}

/* ------------------------------------------------------------------ list */

static void listed(void *arg, const struct gw_store_res *res)
{
    struct exchange *x = arg;
    struct gw_error err;
    struct evbuffer *b;

    x->store_op = NULL;
    if (res->rc != GW_OK) {
        gw_proxy_fail(x, res->err);
        return;
    }
    if (res->after_unknown) {
        gw_error_set(&err, 400, "invalid_request_error", "invalid_value", "after",
                     "Invalid 'after': not a video of this API key");
        gw_proxy_fail(x, &err);
        return;
    }
    b = evbuffer_new();
    if (b == NULL) {
        gw_error_set(&err, 503, "server_error", "overloaded", NULL, "Out of memory");
        gw_proxy_fail(x, &err);
        return;
    }
    /* each job as last seen: its stored object, verbatim */
    evbuffer_add(b, "{\"object\":\"list\",\"data\":[", 25);
    for (size_t i = 0; i < res->njobs; i++) {
        if (i > 0)
            evbuffer_add(b, ",", 1);
        evbuffer_add(b, res->jobs[i].object, res->jobs[i].object_len);
    }
    evbuffer_add(b, "],", 2);
    if (res->njobs > 0)
        evbuffer_add_printf(b, "\"first_id\":\"%s\",\"last_id\":\"%s\",", res->jobs[0].id,
                            res->jobs[res->njobs - 1].id);
    else
        evbuffer_add(b, "\"first_id\":null,\"last_id\":null,", 32);
    evbuffer_add_printf(b, "\"has_more\":%s}", res->has_more ? "true" : "false");
    gw_proxy_set_state(x, X_DONE);
    gw_reply_json(x, 200, b, NULL);
    evbuffer_free(b);
}

int gw_jobs_list(struct exchange *x, struct gw_error *err)
{
    evhtp_kvs_t *q = x->req->uri ? x->req->uri->query : NULL;
    const char *after = q ? evhtp_kv_find(q, "after") : NULL;
    const char *limit = q ? evhtp_kv_find(q, "limit") : NULL;
    const char *order = q ? evhtp_kv_find(q, "order") : NULL;
    struct gw_job_list_query lq = { x->key->name, NULL, GW_STORE_LIST_DEFAULT,
                                    GW_ORDER_DESC };

    if (x->w->store == NULL)
        return GW_OK;
    if (after != NULL && *after != '\0') {
        if (!gw_router_valid_id((struct gw_str){ after, strlen(after) }))
            return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "after",
                                "Invalid 'after': expected a video id");
        lq.after = after;
    }
    if (limit != NULL) {
        char *end;
        unsigned long n = strtoul(limit, &end, 10);
        if (*limit < '0' || *limit > '9' || *end != '\0' || n < 1 || n > GW_STORE_LIST_MAX)
            return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "limit",
                                "Invalid 'limit': expected an integer from 1 to %d",
                                GW_STORE_LIST_MAX);
        lq.limit = (unsigned)n;
    }
    if (order != NULL) {
        if (strcmp(order, "asc") == 0)
            lq.order = GW_ORDER_ASC;
        else if (strcmp(order, "desc") != 0)
            return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "order",
                                "Invalid 'order': expected asc or desc");
    }
    if (gw_store_job_list(x->w->store, &lq, listed, x, &x->store_op, err) != GW_AGAIN)
        return GW_ERR;
    return GW_AGAIN;
}

/* ----------------------------------------------------------- idempotency */

static void idem_begun(void *arg, const struct gw_store_res *res)
{
    struct exchange *x = arg;
    struct gw_error err;

    x->store_op = NULL;
    x->idem_begin = 0;
    if (res->rc != GW_OK) {
        gw_proxy_owner_checked(x, res->err);
        return;
    }
    switch (res->idem) {
    case GW_IDEM_NEW:
        x->idem = 1; /* finished with the job, or aborted, when the exchange ends */
        gw_proxy_owner_checked(x, NULL);
        return;
    case GW_IDEM_IN_FLIGHT:
        gw_error_set(&err, 409, "invalid_request_error", "idempotency_key_in_use", NULL,
                     "A request with this Idempotency-Key is still being processed; retry "
                     "once it has been answered");
        gw_proxy_owner_checked(x, &err);
        return;
    case GW_IDEM_DONE:
        gw_proxy_replay(x, res->answer_status, res->answer_body, res->answer_len);
        return;
    }
}

int gw_jobs_idem_begin(struct exchange *x, const char *idem_key, struct gw_error *err)
{
    size_t n = idem_key ? strlen(idem_key) : 0;

    if (n == 0 || x->route.id != GW_ROUTE_CREATE)
        return GW_OK;
    if (n > GW_STORE_IDEM_KEY_MAX)
        return gw_error_set(err, 400, "invalid_request_error", "invalid_value", NULL,
                            "Idempotency-Key must be at most %d bytes", GW_STORE_IDEM_KEY_MAX);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)idem_key[i] < 0x21 || (unsigned char)idem_key[i] > 0x7e)
            return gw_error_set(err, 400, "invalid_request_error", "invalid_value", NULL,
                                "Idempotency-Key must be visible ASCII characters");
    }
    if (x->w->store == NULL)
        return GW_OK; /* no store: nothing to remember it in (documented) */
    memcpy(x->idem_key, idem_key, n + 1);
    if (gw_store_idem_begin(x->w->store, x->key->name, x->idem_key, gw_proxy_unix_ms() / 1000,
                            idem_begun, x, &x->store_op, err) != GW_AGAIN)
        return GW_ERR;
    x->idem_begin = 1;
    return GW_AGAIN;
}

/* The create's answer when no job was recorded: a client error is kept and replayed
 * to repeats; anything else (a 5xx, a 429, a cut) lets a retry go ahead. */
void gw_jobs_idem_end(struct exchange *x)
{
    struct gw_error err;

    if (x->idem_begin) {
        /* the client left before the store answered: the record it may have made in
         * flight would hold up every retry for a day. (If the answer was another
         * request's record in flight, that one is dropped too: a rare race that at
         * worst lets a concurrent repeat through.) */
        x->idem_begin = 0;
        gw_store_idem_abort(x->w->store, x->key->name, x->idem_key, NULL, NULL, NULL, &err);
        return;
    }
    if (!x->idem || x->w->store == NULL)
        return;
    x->idem = 0;
    if (x->up_done && x->up_status >= 400 && x->up_status < 500 && x->up_status != 408 &&
        x->up_status != 409 && x->up_status != 429 && evbuffer_get_length(x->resp) > 0) {
        size_t len = evbuffer_get_length(x->resp);
        gw_store_idem_finish(x->w->store, x->key->name, x->idem_key, x->up_status,
                             (const char *)evbuffer_pullup(x->resp, -1), len, NULL, NULL, NULL,
                             &err);
        return;
    }
    gw_store_idem_abort(x->w->store, x->key->name, x->idem_key, NULL, NULL, NULL, &err);
}

/* --------------------------------------------------------------- creates */

/* A job object's field as a string: a string member, or an integer one. */
static const char *str_field(cJSON *o, const char *name, char *buf, size_t cap)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    if (cJSON_IsString(v))
        return v->valuestring;
    if (cJSON_IsNumber(v)) {
        snprintf(buf, cap, "%.0f", v->valuedouble);
        return buf;
    }
    return NULL;
}

static void recorded(void *arg, const struct gw_store_res *res)
{
    struct exchange *x = arg;

    x->store_op = NULL;
    if (res->rc != GW_OK)
        gw_log(GW_LOG_ERROR, "rid=%s key=%s job not recorded: %s", x->rid, x->key->name,
               res->err->message);
    else if (x->put_lease) /* the put gave the slot back: nothing more to send */
        gw_admit_put_released(x->lease);
    gw_proxy_recorded(x);
}

int gw_jobs_record(struct exchange *x)
{
    struct evbuffer *b = x->resp;
    size_t len = evbuffer_get_length(b);
    const char *body = (const char *)evbuffer_pullup(b, -1);
    char secs[32], created[32], idbuf[32], mbuf[32];
    struct gw_error err;
    struct gw_job j;
    cJSON *o;
    int rc = GW_OK;

    if (x->route.id == GW_ROUTE_CHARACTER_CREATE)
        return gw_characters_record(x);
    /* without a store nothing is recorded, but an edit or a remix is still metered */
    if ((x->w->store == NULL && x->route.id != GW_ROUTE_EDIT && x->route.id != GW_ROUTE_REMIX) ||
        (x->route.id != GW_ROUTE_CREATE && x->route.id != GW_ROUTE_REMIX &&
         x->route.id != GW_ROUTE_EDIT && x->route.id != GW_ROUTE_EXTEND) ||
        x->up_status < 200 || x->up_status > 299 || len == 0)
        return GW_OK;
    o = cJSON_ParseWithLength(body, len);
    const char *id = str_field(o, "id", idbuf, sizeof(idbuf));
    if (o == NULL || id == NULL || !gw_router_valid_id((struct gw_str){ id, strlen(id) })) {
        gw_log(GW_LOG_WARN, "rid=%s key=%s the upstream's %d answer to a create holds no job "
               "id: not recorded", x->rid, x->key->name, x->up_status);
        goto out;
    }
    memset(&j, 0, sizeof(j));
    j.id = id;
    j.key_name = x->key->name;
    j.upstream_key = x->cfg->upstream_key_labels[x->upstream_key];
    j.kind = x->route.id == GW_ROUTE_REMIX    ? GW_JOB_REMIX
             : x->route.id == GW_ROUTE_EDIT   ? GW_JOB_EDIT
             : x->route.id == GW_ROUTE_EXTEND ? GW_JOB_EXTEND
                                              : GW_JOB_CREATE;
    j.model_asked = x->model_asked[0] ? x->model_asked : "";
    const char *model = str_field(o, "model", mbuf, sizeof(mbuf));
    j.model_sent = model != NULL ? model : j.model_asked[0] ? j.model_asked : "unknown";
    const char *s = str_field(o, "seconds", secs, sizeof(secs));
    j.seconds = s != NULL ? atoi(s) : (int)x->quota_seconds;
    if ((j.kind == GW_JOB_REMIX || j.kind == GW_JOB_EDIT) && s == NULL)
        j.seconds = x->job_seconds;
    /* an extension's object says the stitched total; what it costs, and what a
     * failure gives back, is the segment reserved (its `seconds`) */
    if (j.kind == GW_JOB_EXTEND)
        j.seconds = (int)x->quota_seconds;
    /* an edit or a remix reserves nothing: it is metered by what the upstream
     * made, as the ledger counts it (and a restart seeds the budget from the
     * ledger); a failed one's refund then gives back what was charged */
    if ((j.kind == GW_JOB_EDIT || j.kind == GW_JOB_REMIX) && j.seconds > 0) {
        gw_admit_quota_charge(x->w, x->key, (uint32_t)j.seconds, gw_proxy_unix_ms());
        gw_m_vs(x->key->slot, (struct gw_str){ j.model_sent, strlen(j.model_sent) },
                GW_M_VS_KEPT, (uint64_t)j.seconds); /* charged, never reserved */
    }
    if (x->w->store == NULL)
        goto out;
    const char *size = str_field(o, "size", created, sizeof(created));
    j.size = size != NULL ? size : "";
    const char *st = str_field(o, "status", created, sizeof(created));
    if (st == NULL || gw_job_status_parse(st, strlen(st), &j.status) != GW_OK)
        j.status = GW_JOB_QUEUED;
    cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "created_at");
    j.updated_at = gw_proxy_unix_ms() / 1000;
    j.created_at = cJSON_IsNumber(c) ? (int64_t)c->valuedouble : j.updated_at;
    j.object = body;
    j.object_len = len;
    /* the concurrency slot is given back by the put itself (Redis) */
    x->put_lease = gw_admit_put_lease(x->lease, &j.lease_key, &j.lease_id);
    /* the idempotency record is finished with the job, in the same transaction */
    if (gw_store_job_put(x->w->store, &j, x->idem ? x->idem_key : NULL, recorded, x,
                         &x->store_op, &err) == GW_AGAIN) {
        x->idem = 0;
        rc = GW_AGAIN;
    }
    else
        gw_log(GW_LOG_ERROR, "rid=%s key=%s job not recorded: %s", x->rid, x->key->name,
               err.message);
out:
    cJSON_Delete(o);
    return rc;
}

/* -------------------------------------------------------- after a follow-up */

/* What a refund needs after the exchange is gone. */
struct refund_ctx {
    struct gw_worker *w;
};

static void refunded(void *arg, const struct gw_store_res *res)
{
    struct refund_ctx *r = arg;
    const struct gw_job *j = res->job;
    const struct gw_team_key *k;

    /* the key as the current config (or the store's keys) has it: a reload may
     * have come in between */
    if (res->rc == GW_OK && res->refunded && j != NULL &&
        (k = gw_keytab_find(gw_worker_cfg(r->w), gw_worker_keytab(r->w), j->key_name)) != NULL) {
        gw_admit_quota_refund(r->w, k, (uint32_t)j->seconds, j->created_at * 1000);
        gw_m_vs(k->slot, (struct gw_str){ j->model_sent, j->model_sent ? strlen(j->model_sent) : 0 },
                GW_M_VS_REFUNDED, (uint64_t)j->seconds);
    }
    free(r);
}

static void updated(void *arg, const struct gw_store_res *res)
{
    struct refund_ctx *r = arg;
    struct gw_error err;

    if (res->rc == GW_OK && res->job != NULL && res->job->status == GW_JOB_FAILED &&
        res->prev_status != GW_JOB_FAILED) {
        /* a failed job gives its seconds back, once */
        if (gw_store_job_refund(r->w->store, res->job->id, refunded, r, NULL, &err) == GW_AGAIN)
            return;
    }
    free(r);
}

void gw_jobs_store_seen(struct gw_worker *w, const char *id, const char *body, size_t len)
{
    struct gw_error err;
    cJSON *o = cJSON_ParseWithLength(body, len);
    char buf[32];
    const char *st = o ? str_field(o, "status", buf, sizeof(buf)) : NULL;
    struct gw_job_update u = { id, GW_JOB_QUEUED, body, len, gw_proxy_unix_ms() / 1000 };

    if (st != NULL && gw_job_status_parse(st, strlen(st), &u.status) == GW_OK) {
        struct refund_ctx *r = malloc(sizeof(*r));
        if (r != NULL) {
            r->w = w;
            if (gw_store_job_update(w->store, &u, updated, r, NULL, &err) != GW_AGAIN)
                free(r);
        }
    }
    cJSON_Delete(o);
}

void gw_jobs_seen(struct exchange *x)
{
    struct gw_error err;
    char id[GW_ID_MAX + 1];

    if (x->w->store == NULL || x->route.video_id.len == 0 || x->up_status < 200 ||
        x->up_status > 299)
        return;
    memcpy(id, x->route.video_id.p, x->route.video_id.len);
    id[x->route.video_id.len] = '\0';
    if (x->route.id == GW_ROUTE_DELETE) {
        gw_store_job_delete(x->w->store, id, gw_proxy_unix_ms() / 1000, NULL, NULL, NULL, &err);
        return;
    }
    if (x->route.id == GW_ROUTE_RETRIEVE)
        gw_jobs_store_seen(x->w, id, (const char *)evbuffer_pullup(x->resp, -1),
                           evbuffer_get_length(x->resp));
}
