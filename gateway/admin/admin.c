/*
 * admin.c - the admin listener ([admin] listen): a second HTTP server on the
 * first event loop, for team keys with admin = yes only, never exposed on the
 * public listener. Its requests go through the same framer (htfix.c) as the
 * public ones, so the request edge is as strict; they are small and have no body.
 *
 *   GET /admin/usage?since=&until=&key=&group=key,model,kind,day&format=csv
 *       usage per key and model (and kind of job, and day, when grouped so), from the store,
 *       as JSON {"object":"list","data":[...]} or CSV for finance
 *   GET|POST /admin/keys, PATCH|DELETE /admin/keys/{name}   (admin_keys.c)
 *   GET /admin/jobs?key=&status=&limit=                      (admin_jobs.c)
 *   GET /admin/ and its files: the console                   (admin_console.c)
 *   GET /admin/healthz
 *   GET /metrics                      the Prometheus exposition (ops/metrics.c)
 *
 * Refusals are OpenAI error bodies: 401 without a valid key, 403 for a key that
 * is not an admin, 404/405 for other paths and methods, 503 without a store.
 * Every call is in the access log with the admin key's name.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <evhtp/evhtp.h>
#include <openssl/crypto.h>

#include "accesslog.h"
#include "admin.h"
#include "admin_int.h"
#include "auth.h"
#include "htfix.h"
#include "log.h"
#include "ops.h"
#include "store/store.h"

int64_t gw_admin_unix_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void access_log(evhtp_request_t *req, const struct gw_team_key *key, const char *route,
                       int status, size_t bytes_out, const struct timespec *t0,
                       const char *error)
{
    struct timespec t;
    struct gw_access a;

    clock_gettime(CLOCK_MONOTONIC, &t);
    memset(&a, 0, sizeof(a));
    a.rid = "admin";
    a.key = key ? key->name : NULL;
    a.method = htparser_get_methodstr_m(req->method);
    a.route = route;
    a.status = status;
    a.bytes_out = bytes_out;
    a.ms = (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
    a.error = error;
    a.completed = 1;
    gw_accesslog_write(&a);
    gw_m_request(GW_M_ROUTE_ADMIN, route, status, key ? (int64_t)key->slot : -1, 0, bytes_out,
                 (uint64_t)(a.ms * 1000));
}

static void send_body(evhtp_request_t *req, int status, const char *ctype, struct evbuffer *b)
{
    evhtp_headers_add_header(req->headers_out, evhtp_header_new("Content-Type", ctype, 0, 0));
    evhtp_headers_add_header(req->headers_out,
                             evhtp_header_new("Cache-Control", "no-store", 0, 0));
    evhtp_headers_add_header(req->headers_out,
                             evhtp_header_new("X-Content-Type-Options", "nosniff", 0, 0));
    evbuffer_add_buffer(req->buffer_out, b);
    evhtp_send_reply(req, (evhtp_res)status);
}

void gw_admin_send(struct admin_req *a, int status, const char *ctype, struct evbuffer *b)
{
    size_t len = evbuffer_get_length(b);

    send_body(a->req, status, ctype, b);
    access_log(a->req, a->key, a->route, status, len, &a->t0, NULL);
}

void gw_admin_error(struct admin_req *a, const struct gw_error *err)
{
    char body[512];
    size_t n = gw_error_json(err, body, sizeof(body));
    struct evbuffer *b = evbuffer_new();

    if (b == NULL) {
        evhtp_send_reply(a->req, EVHTP_RES_SERVERR);
        return;
    }
    evbuffer_add(b, body, n);
    send_body(a->req, err->status, "application/json", b);
    evbuffer_free(b);
    access_log(a->req, a->key, a->route, err->status, n, &a->t0, err->code);
}

void gw_admin_fail(struct admin_req *a, int status, const char *code, const char *param,
                   const char *fmt, ...)
{
    struct gw_error err = { status, status >= 500 ? "server_error" : "invalid_request_error",
                            code, param, "" };
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err.message, sizeof(err.message), fmt, ap);
    va_end(ap);
    gw_admin_error(a, &err);
}

const char *gw_admin_query(struct admin_req *a, const char *name)
{
    evhtp_kvs_t *kv = a->req->uri ? a->req->uri->query : NULL;

    return kv != NULL ? evhtp_kv_find(kv, name) : NULL;
}

void gw_admin_hold(struct admin_req *a)
{
    if (a->cfg == NULL) {
        a->cfg = gw_worker_cfg(a->w);
        gw_config_hold(a->cfg);
    }
}

/* ----------------------------------------------------------------- usage */

/* A CSV field: quoted, quotes doubled (model names come from clients), and one
 * that a spreadsheet would take for a formula (= + - @, tab, CR at its start)
 * gets a leading ' (OWASP's "CSV injection" advice): finance opens these. */
static void csv_field(struct evbuffer *b, const char *s)
{
    evbuffer_add(b, "\"", 1);
    if (*s != '\0' && strchr("=+-@\t\r", *s) != NULL)
        evbuffer_add(b, "'", 1);
    for (; *s; s++) {
        if (*s == '"')
            evbuffer_add(b, "\"", 1);
        evbuffer_add(b, s, 1);
    }
    evbuffer_add(b, "\"", 1);
}

struct evbuffer *gw_admin_answer_buffer(struct admin_req *a, const struct gw_store_res *res)
{
    struct evbuffer *b;

    a->op = NULL;
    if (res->rc != GW_OK) {
        gw_admin_error(a, res->err);
        return NULL;
    }
    if ((b = evbuffer_new()) == NULL) {
        gw_admin_fail(a, 503, "overloaded", NULL, "Out of memory");
        return NULL;
    }
    return b;
}

void gw_admin_json_str(struct evbuffer *b, const char *s)
{
    evbuffer_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            evbuffer_add_printf(b, "\\%c", c);
        else if (c < 0x20)
            evbuffer_add_printf(b, "\\u%04x", c);
        else
            evbuffer_add(b, s, 1);
    }
    evbuffer_add(b, "\"", 1);
}

/* Rows come ordered by key, model, day: sum consecutive rows of one key and model
 * unless grouped by day too. */
static void usage_done(void *arg, const struct gw_store_res *res)
{
    struct admin_req *a = arg;
    struct evbuffer *b = gw_admin_answer_buffer(a, res);
    size_t n = 0;

    if (b == NULL)
        return;
    if (a->csv)
        evbuffer_add_printf(b, "key,model,%s%sjobs,seconds,failed,refunded_seconds\r\n",
                            a->by_kind ? "kind," : "", a->by_day ? "day," : "");
    else
        evbuffer_add(b, "{\"object\":\"list\",\"data\":[", 25);
    for (size_t i = 0; i < res->nusage; n++) {
        const struct gw_usage_row *r = &res->usage[i];
        struct gw_usage_row sum = *r;
        for (i++; !a->by_day && i < res->nusage && strcmp(res->usage[i].key_name,
                                                            r->key_name) == 0 &&
                  strcmp(res->usage[i].model, r->model) == 0 &&
                  (!a->by_kind || strcmp(res->usage[i].kind, r->kind) == 0);
             i++) {
            sum.jobs += res->usage[i].jobs;
            sum.seconds += res->usage[i].seconds;
            sum.failed += res->usage[i].failed;
            sum.refunded_seconds += res->usage[i].refunded_seconds;
        }
        if (a->csv) {
            csv_field(b, sum.key_name);
            evbuffer_add(b, ",", 1);
            csv_field(b, sum.model);
            if (a->by_kind)
                evbuffer_add_printf(b, ",%s", sum.kind);
            if (a->by_day)
                evbuffer_add_printf(b, ",%s", sum.day);
            evbuffer_add_printf(b, ",%lld,%lld,%lld,%lld\r\n", (long long)sum.jobs,
                                (long long)sum.seconds, (long long)sum.failed,
                                (long long)sum.refunded_seconds);
            continue;
        }
        evbuffer_add(b, n ? ",{\"key\":" : "{\"key\":", n ? 8 : 7);
        gw_admin_json_str(b, sum.key_name);
        evbuffer_add(b, ",\"model\":", 9);
        gw_admin_json_str(b, sum.model);
        if (a->by_kind)
            evbuffer_add_printf(b, ",\"kind\":\"%s\"", sum.kind);
        if (a->by_day)
            evbuffer_add_printf(b, ",\"day\":\"%s\"", sum.day);
        evbuffer_add_printf(b, ",\"jobs\":%lld,\"seconds\":%lld,\"failed\":%lld,"
                               "\"refunded_seconds\":%lld}",
                            (long long)sum.jobs, (long long)sum.seconds, (long long)sum.failed,
                            (long long)sum.refunded_seconds);
    }
    if (!a->csv)
        evbuffer_add(b, "]}", 2);
    gw_admin_send(a, 200, a->csv ? "text/csv; charset=utf-8" : "application/json", b);
    evbuffer_free(b);
}

static int usage_query(evhtp_request_t *req, struct admin_req *a, struct gw_usage_query *q,
                       struct gw_error *err)
{
    evhtp_kvs_t *kv = req->uri ? req->uri->query : NULL;
    const char *group = kv ? evhtp_kv_find(kv, "group") : NULL;
    const char *format = kv ? evhtp_kv_find(kv, "format") : NULL;

    memset(q, 0, sizeof(*q));
    q->since = kv ? evhtp_kv_find(kv, "since") : NULL;
    q->until = kv ? evhtp_kv_find(kv, "until") : NULL;
    q->key_name = kv ? evhtp_kv_find(kv, "key") : NULL;
    if (q->key_name != NULL && *q->key_name == '\0')
        q->key_name = NULL;
    if (group != NULL) {
        /* key and model always; day and kind (of job) on request, in any order */
        static const char *const words[] = { "key", "model", "day", "kind" };
        int seen[4] = { 0 };
        const char *p = group;

        for (;;) {
            size_t n = strcspn(p, ",");
            unsigned w = 0;

            while (w < 4 && !(strlen(words[w]) == n && strncmp(p, words[w], n) == 0))
                w++;
            if (w == 4 || seen[w]++)
                goto bad_group;
            if (p[n] == '\0')
                break;
            p += n + 1;
        }
        if (!seen[0] || !seen[1])
            goto bad_group;
        a->by_day = seen[2];
        a->by_kind = q->by_kind = seen[3];
    }
    if (format != NULL) {
        if (strcmp(format, "csv") != 0 && strcmp(format, "json") != 0)
            return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "format",
                                "Invalid 'format': expected json or csv");
        a->csv = strcmp(format, "csv") == 0;
    }
    return GW_OK;

bad_group:
    return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "group",
                        "Invalid 'group': expected key,model and optionally day and kind, "
                        "e.g. key,model,kind,day");
}

static void usage_route(struct admin_req *a, const char *method)
{
    struct gw_usage_query q;
    struct gw_error err;

    a->route = "admin.usage";
    if (strcmp(method, "GET") != 0) {
        gw_admin_fail(a, 405, "method_not_allowed", NULL,
                      "Method not allowed; this path accepts GET");
        return;
    }
    gw_admin_hold(a);
    if (usage_query(a->req, a, &q, &err) != GW_OK ||
        gw_store_usage(a->w->store, &q, usage_done, a, &a->op, &err) != GW_AGAIN)
        gw_admin_error(a, &err);
    /* else answered from usage_done() */
}

/* --------------------------------------------------------------- metrics */

/* No longer than this: past it the scrape answers 500 rather than a cut text. */
#define METRICS_MAX (16u << 20)

/* GET /metrics (ops/metrics.c): the config is held (gw_admin_hold), the store's
 * keys are held for the scrape. */
static void metrics_route(struct admin_req *a, const char *method)
{
    const struct gw_keytab *kt;
    struct gw_expo e;
    struct evbuffer *b;

    a->route = "admin.metrics";
    if (strcmp(method, "GET") != 0) {
        gw_admin_fail(a, 405, "method_not_allowed", NULL,
                      "Method not allowed; this path accepts GET");
        return;
    }
    kt = gw_worker_keytab(a->w);
    gw_keytab_hold(kt);
    gw_expo_init(&e, METRICS_MAX);
    gw_metrics_scrape(&e, a->cfg, kt);
    gw_keytab_release(kt);
    if (e.full || (b = evbuffer_new()) == NULL)
        gw_admin_fail(a, 500, "metrics_too_large", NULL,
                      "The metrics exposition could not be built (out of memory)");
    else {
        evbuffer_add(b, e.buf, e.len);
        gw_admin_send(a, 200, "text/plain; version=0.0.4; charset=utf-8", b);
        evbuffer_free(b);
    }
    gw_expo_free(&e);
}

/* --------------------------------------------------------------- routing */

static void admin_request(evhtp_request_t *req, void *arg)
{
    /* w from the evhtp_t, not the callback argument: req->cbarg stays NULL, so that
     * the framer's answers to a broken request (gw_proxy_body_error) never take
     * this request for a proxy exchange */
    struct gw_worker *w = req->htp->arg;
    const char *path = req->uri && req->uri->path && req->uri->path->full ?
                           req->uri->path->full : "/";
    const char *method = htparser_get_methodstr_m(req->method);
    struct admin_req *a = req->hooks != NULL ? req->hooks->on_read_arg : NULL;

    if (method == NULL)
        method = "?";
    if (a == NULL) { /* admin_headers could not allocate */
        evhtp_send_reply(req, EVHTP_RES_SERVERR);
        return;
    }
    if (strcmp(path, "/admin/healthz") == 0) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add(b, "{\"status\":\"ok\"}\n", 16);
        send_body(req, 200, "application/json", b);
        evbuffer_free(b);
        return;
    }
    /* the console's files need no key: the page signs in from the browser */
    size_t bytes;
    int status = gw_admin_console(req, method, path, &bytes);
    if (status != 0) {
        access_log(req, NULL, "admin.console", status, bytes, &a->t0, NULL);
        return;
    }
    /* held from here on: the admin key points into it */
    gw_admin_hold(a);
    /* the store's keys too: one of them is told 403, not 401 (it is a valid key;
     * the API makes no admin keys). Not held: used only before this returns. */
    const struct gw_team_key *key =
        gw_auth_check(a->cfg, gw_worker_keytab(w), evhtp_header_find(req->headers_in,
                                                                    "Authorization"),
                      gw_admin_unix_ms());
    if (key == NULL) {
        gw_admin_fail(a, 401, "invalid_api_key", NULL,
                      "The admin API needs an admin key: Authorization: Bearer <key>");
        return;
    }
    a->key = key;
    if (!key->admin) {
        gw_admin_fail(a, 403, "permission_denied", NULL,
                      "This API key is not an admin key (admin = yes)");
        a->key = NULL; /* a store key: its table is not held */
        return;
    }
    if (a->body_too_big) {
        gw_admin_fail(a, 413, "request_too_large", NULL,
                      "An admin request body is at most %d bytes", GW_ADMIN_BODY_MAX);
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        metrics_route(a, method);
        return;
    }
    int keys = strcmp(path, "/admin/keys") == 0 || strncmp(path, "/admin/keys/", 12) == 0;
    int usage = strcmp(path, "/admin/usage") == 0, jobs = strcmp(path, "/admin/jobs") == 0;
    if (!keys && !usage && !jobs) {
        gw_admin_fail(a, 404, "not_found", NULL,
                      "Unknown admin path; see /admin/keys, /admin/usage, /admin/jobs, "
                      "/metrics");
        return;
    }
    if (w->store == NULL) {
        a->route = keys ? "admin.keys" : usage ? "admin.usage" : "admin.jobs";
        gw_admin_fail(a, 503, "store_unavailable", NULL,
                      "This needs a store: set [store] path");
        return;
    }
    if (keys)
        gw_admin_keys(a, method, path);
    else if (usage)
        usage_route(a, method);
    else
        gw_admin_jobs(a, method);
}

/* The body, kept up to GW_ADMIN_BODY_MAX; past that it is read and dropped (and
 * the request answered 413). Never left in libevhtp's buffer: an undrained body
 * is parsed by libevhtp as a query (libevhtp-notes trap 4). */
static evhtp_res admin_read(evhtp_request_t *req, struct evbuffer *buf, void *arg)
{
    struct admin_req *a = arg;
    size_t len = evbuffer_get_length(buf);

    if (!a->body_too_big && evbuffer_get_length(a->body) + len <= GW_ADMIN_BODY_MAX) {
        evbuffer_remove_buffer(buf, a->body, len);
        return EVHTP_RES_OK;
    }
    a->body_too_big = 1;
    evbuffer_drain(a->body, evbuffer_get_length(a->body));
    evbuffer_drain(buf, len);
    return EVHTP_RES_OK;
}

/* The request is over (answered, or its client gone): whatever it still waits
 * for must not find it. */
static evhtp_res admin_req_fini(evhtp_request_t *req, void *arg)
{
    struct admin_req *a = arg;

    if (a->op != NULL)
        gw_store_cancel(a->op);
    gw_keysync_cancel(a->wait);
    if (a->cfg != NULL)
        gw_config_release(a->cfg);
    if (a->body != NULL)
        evbuffer_free(a->body);
    if (a->answer != NULL)
        evbuffer_free(a->answer);
    OPENSSL_cleanse(a->secret, sizeof(a->secret));
    free(a->data);
    free(a);
    gw_htfix_request_done(evhtp_request_get_connection(req));
    return EVHTP_RES_OK;
}

/* Every admin request gets its state here, with its own read and fini hooks. */
static evhtp_res admin_headers(evhtp_request_t *req, evhtp_headers_t *hdr, void *arg)
{
    struct admin_req *a = calloc(1, sizeof(*a));

    if (a == NULL || (a->body = evbuffer_new()) == NULL) {
        free(a);
        return EVHTP_RES_OK; /* admin_drain, admin_fini, and a 500 from admin_request */
    }
    a->req = req;
    a->w = arg;
    a->route = "admin";
    clock_gettime(CLOCK_MONOTONIC, &a->t0);
    evhtp_request_set_hook(req, evhtp_hook_on_read, (evhtp_hook)admin_read, a);
    evhtp_request_set_hook(req, evhtp_hook_on_request_fini, (evhtp_hook)admin_req_fini, a);
    return EVHTP_RES_OK;
}

/* Without a request's own state (out of memory): the body is dropped. */
static evhtp_res admin_drain(evhtp_request_t *req, struct evbuffer *buf, void *arg)
{
    evbuffer_drain(buf, evbuffer_get_length(buf));
    return EVHTP_RES_OK;
}

static evhtp_res admin_fini(evhtp_request_t *req, void *arg)
{
    gw_htfix_request_done(evhtp_request_get_connection(req));
    return EVHTP_RES_OK;
}

static evhtp_res admin_accept(evhtp_connection_t *conn, void *arg)
{
    if (gw_htfix_attach(conn) != GW_OK)
        return EVHTP_RES_ERROR;
    evhtp_connection_set_hook(conn, evhtp_hook_on_headers, (evhtp_hook)admin_headers, arg);
    evhtp_connection_set_hook(conn, evhtp_hook_on_read, (evhtp_hook)admin_drain, arg);
    evhtp_connection_set_hook(conn, evhtp_hook_on_request_fini, (evhtp_hook)admin_fini, arg);
    return EVHTP_RES_OK;
}

int gw_admin_start(struct gw_worker *w, int fd, struct gw_error *err)
{
    const struct gw_config *cfg = gw_worker_cfg(w);
    const struct gw_listen *l = &cfg->admin;
    struct timeval tv = { cfg->client_timeout_ms / 1000, (cfg->client_timeout_ms % 1000) * 1000 };
    char addr[300];
    evhtp_t *htp;

    if (l->host == NULL)
        return GW_OK;
    htp = evhtp_new(w->base, w);
    if (htp == NULL)
        return gw_error_set(err, 0, NULL, NULL, NULL, "evhtp_new failed");
    evhtp_disable_flag(htp, EVHTP_FLAG_ENABLE_100_CONT);
    /* a newer gateway binds it too during an upgrade (docs/operations.md) */
    evhtp_enable_flag(htp, EVHTP_FLAG_ENABLE_REUSEPORT);
    evhtp_set_timeouts(htp, &tv, &tv);
    evhtp_set_post_accept_cb(htp, admin_accept, w);
    evhtp_set_gencb(htp, admin_request, NULL);
    snprintf(addr, sizeof(addr), "%s%s", strchr(l->host, ':') ? "ipv6:" : "", l->host);
    if (fd >= 0 ? evhtp_accept_socket(htp, fd, 128) != 0
                : evhtp_bind_socket(htp, addr, (uint16_t)l->port, 128) != 0)
        return gw_error_set(err, 0, NULL, NULL, NULL, "cannot listen on %s:%d (admin): %s",
                            l->host, l->port, strerror(errno));
    w->admin = htp;
    gw_log(GW_LOG_INFO, "admin API on %s:%d", l->host, l->port);
    return GW_OK;
}
