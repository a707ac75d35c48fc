/*
 * proxy.c - one exchange, one state machine: client request -> upstream ->
 * client response. Read top to bottom in lifecycle order:
 *
 *   on_headers   route, auth, framing checks; admission; lease an upstream connection
 *                (exchange.c: allocation, pool, request id, traceparent)
 *   on_read      body pieces moved (never copied) into the body pipeline
 *                (reqbody.c: multipart/JSON/raw body -> rewrite -> framing -> upstream)
 *   response.c   upstream connected / writable / head / body / done / error; relay
 *                the upstream response with backpressure both ways
 *                (reply.c writes the heads and the gateway's own answers)
 *   on_fini      the one place an exchange is freed (libevhtp's request fini)
 *
 * States (gw_proxy_set_state checks every transition):
 *
 *   HEADERS -> ADMIT -> CONNECT -> STREAM_REQ -> AWAIT_RESP -> STREAM_RESP -> DONE
 *      |         |         |           |              |                        ^
 *      +---------+---------+-----------+--------------+---- (error/local) -----+
 *
 * ADMIT lasts only while an asynchronous admission decision (limits) is pending;
 * the body is buffered meanwhile (bounded, the client paused).
 *
 * CONNECT and body reading overlap: the client body is read (bounded) while the
 * upstream connection is being set up. STREAM_RESP may start during STREAM_REQ
 * when the upstream answers early.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "accesslog.h"
#include "admit.h"
#include "auth.h"
#include "catalog.h"
#include "exchange.h"
#include "htfix.h"
#include "limiter.h"
#include "log.h"
#include "metrics.h"
#include "traceparent.h"
#include "multipart.h"
#include "proxy.h"
#include "router.h"
#include "store/store.h"
#include "upstream.h"

static const char *const xstate_names[] = {
    "HEADERS", "ADMIT", "CONNECT", "STREAM_REQ", "AWAIT_RESP", "STREAM_RESP", "DONE",
};


/* ------------------------------------------------------------------ state */

void gw_proxy_set_state(struct exchange *x, enum xstate to)
{
    static const unsigned char allowed[7] = {
        [X_HEADERS] = 1u << X_ADMIT | 1u << X_DONE,
        [X_ADMIT] = 1u << X_CONNECT | 1u << X_DONE,
        [X_CONNECT] = 1u << X_STREAM_REQ | 1u << X_AWAIT_RESP | 1u << X_DONE,
        [X_STREAM_REQ] = 1u << X_AWAIT_RESP | 1u << X_STREAM_RESP | 1u << X_DONE |
                         1u << X_CONNECT, /* retry_stale */
        [X_AWAIT_RESP] = 1u << X_STREAM_RESP | 1u << X_DONE | 1u << X_CONNECT,
        [X_STREAM_RESP] = 1u << X_DONE,
        [X_DONE] = 0,
    };

    if (x->state == to)
        return;
    if (!(allowed[x->state] & (1u << to))) {
        gw_log(GW_LOG_ERROR, "rid=%s bad transition %s -> %s", x->rid,
               xstate_names[x->state], xstate_names[to]);
        abort();
    }
    gw_log(GW_LOG_DEBUG, "rid=%s %s -> %s", x->rid, xstate_names[x->state], xstate_names[to]);
    gw_m_state((int)x->state, (int)to);
    if (to == X_AWAIT_RESP)
        x->up_wait_from_us = gw_proxy_now_us();
    x->state = to;
}

void gw_reply_end(struct exchange *x);

/* Abort the upstream side (an incomplete request is never reused, so the
 * upstream sees a truncated body and creates no job) and answer the client. */
void gw_proxy_fail(struct exchange *x, const struct gw_error *err)
{
    if (x->up != NULL) {
        gw_upconn_release(x->up);
        x->up = NULL;
    }
    gw_reply_error(x, err);
    if (x->state != X_DONE)
        gw_proxy_set_state(x, X_DONE);
}

/* ------------------------------------------------------------ on_headers */


static int header_is(evhtp_headers_t *h, const char *name, const char *prefix)
{
    const char *v = evhtp_header_find(h, name);
    return v != NULL && strncasecmp(v, prefix, strlen(prefix)) == 0;
}

/* Decide how the request body is read. GW_ERR with err when it cannot be taken. */
static int classify_body(struct exchange *x, evhtp_headers_t *h, struct gw_error *err)
{
    const char *te = evhtp_header_find(h, "Transfer-Encoding");
    const char *cl = evhtp_header_find(h, "Content-Length");
    const char *ct = evhtp_header_find(h, "Content-Type");

    x->client_cl = te != NULL ? -1 : cl != NULL ? (int64_t)strtoull(cl, NULL, 10) : 0;
    if (x->client_cl > 0 && (uint64_t)x->client_cl > x->cfg->max_body)
        return gw_error_set(err, 413, "invalid_request_error", "request_too_large", NULL,
                            "Request body of %" PRId64 " bytes exceeds the limit of %zu bytes",
                            x->client_cl, x->cfg->max_body);
    int followup = gw_followup_route(x); /* edit, extend, character create */
    x->body = BODY_RAW;
    if (x->route.id != GW_ROUTE_CREATE && x->route.id != GW_ROUTE_REMIX && !followup)
        return GW_OK;
    if (x->client_cl == 0)
        return gw_error_set(err, 400, "invalid_request_error", "missing_required_parameter",
                            x->route.id == GW_ROUTE_CREATE             ? "model"
                            : x->route.id == GW_ROUTE_CHARACTER_CREATE ? "name"
                                                                       : "prompt",
                            "The request has no body");
    gw_followup_begin(x);
    if (ct != NULL && (x->route.id == GW_ROUTE_CREATE || followup) &&
        strncasecmp(ct, "multipart/form-data", 19) == 0) {
        struct gw_str boundary;
        if (gw_mp_boundary((struct gw_str){ ct, strlen(ct) }, &boundary, err) != GW_OK)
            return GW_ERR;
        if (x->mp == NULL) /* kept across recycled exchanges */
            x->mp = malloc(sizeof(*x->mp));
        if (x->mp == NULL)
            return gw_error_set(err, 503, "server_error", "overloaded", NULL, "Out of memory");
        if (gw_mp_init(x->mp, boundary, &gw_reqbody_hooks, x) != GW_OK) {
            *err = x->mp->err;
            return GW_ERR;
        }
        x->body = BODY_MULTIPART;
        return GW_OK;
    }
    if (ct != NULL && strncasecmp(ct, "application/json", 16) == 0 &&
        x->route.id != GW_ROUTE_CHARACTER_CREATE) {
        if (x->client_cl > 0 && (uint64_t)x->client_cl > x->cfg->max_json_body)
            return gw_error_set(err, 413, "invalid_request_error", "request_too_large", NULL,
                                "JSON body exceeds the limit of %zu bytes",
                                x->cfg->max_json_body);
        x->body = BODY_JSON;
        return GW_OK;
    }
    return gw_error_set(err, 415, "invalid_request_error", "unsupported_media_type", NULL,
                        "Content-Type must be %s",
                        x->route.id == GW_ROUTE_CHARACTER_CREATE ? "multipart/form-data"
                        : x->route.id == GW_ROUTE_REMIX
                            ? "application/json"
                            : "multipart/form-data or application/json");
}

/* Admission decided: set up the upstream connection while the body is read. */
static void on_admitted(void *arg, const struct gw_error *refusal)
{
    struct exchange *x = arg;
    struct gw_error err;

    x->admission = NULL;
    if (x->state == X_DONE) {
        /* refused while it waited for its upstream slot (its body, say, or the video it
         * names), and the answer is out: the slot is released when the exchange ends */
        x->admitted = refusal == NULL;
        return;
    }
    if (refusal != NULL) {
        if (gw_admit_counts(&x->route))
            gw_m_limit(gw_exchange_key_slot(x), GW_M_RATE_LIMITED);
        gw_proxy_fail(x, refusal);
        return;
    }
    x->admitted = 1;
    x->up = gw_upstream_lease(x->w->up, gw_response_up_event, x);
    if (x->up == NULL) {
        gw_error_set(&err, 503, "server_error", "overloaded", NULL, "Out of memory");
        gw_proxy_fail(x, &err);
        return;
    }
    gw_proxy_set_state(x, X_CONNECT);
    if (x->expect_continue && !x->body_done)
        bufferevent_write(gw_proxy_client_bev(x), "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

/* Ask admission (limits); it may answer later (on_admitted). */
static void start_admission(struct exchange *x)
{
    struct gw_error err;

    /* a JSON body is held whole before any of it goes upstream, and so is a small
     * multipart one (reqbody.c holds it while gw_admit_deferred): their limits can be
     * decided at the body's end, with their daily seconds, in one round trip (admit.h) */
    int defer = !x->expect_continue &&
                (x->body == BODY_JSON ||
                 (x->body == BODY_MULTIPART && x->client_cl >= 0 &&
                  x->client_cl <= GW_ADMIT_HOLD_MAX));

    switch (gw_admit(x->w, &(struct gw_admit_req){ x->key, &x->route, x->rid, &x->rate,
                                                   &x->retry_after_ms, &x->lease, defer },
                     on_admitted, x, &x->admission, &err)) {
    case GW_OK:
        if (gw_admit_counts(&x->route) && !gw_admit_deferred(x->lease))
            gw_m_limit(gw_exchange_key_slot(x), GW_M_ADMITTED);
        on_admitted(x, NULL);
        return;
    case GW_AGAIN:
        gw_m_limit(gw_exchange_key_slot(x), GW_M_QUEUED);
        return; /* on_admitted() comes later */
    default:
        if (err.status == 429)
            gw_m_limit(gw_exchange_key_slot(x), strstr(err.message, "video service") != NULL
                                        ? GW_M_UPSTREAM_BUSY /* upstream_rpm's queue */
                                        : GW_M_RATE_LIMITED);
        gw_proxy_fail(x, &err);
    }
}

/* jobs.c looked the follow-up's job up: the caller's (then pinned to its upstream
 * key), or a refusal (404, 502). */
void gw_proxy_owner_checked(struct exchange *x, const struct gw_error *refusal)
{
    if (x->state == X_DONE)
        return; /* refused by its body meanwhile: answered already, nothing to admit */
    if (refusal != NULL) {
        gw_proxy_fail(x, refusal);
        return;
    }
    start_admission(x);
}

static evhtp_res on_headers(evhtp_request_t *req, evhtp_headers_t *h, void *arg)
{
    struct gw_worker *w = arg;
    struct exchange *x;
    struct gw_error err;
    const char *path;

    x = gw_exchange_new(w, req);
    if (x == NULL)
        return EVHTP_RES_FATAL;
    gw_exchange_set_traceparent(x, h);
    /* a body (Content-Length > 0 or chunked) follows this head */
    x->body_done = !(evhtp_header_find(h, "Transfer-Encoding") != NULL ||
                     (evhtp_header_find(h, "Content-Length") != NULL &&
                      strtoull(evhtp_header_find(h, "Content-Length"), NULL, 10) > 0));
    path = req->uri && req->uri->path && req->uri->path->full ? req->uri->path->full : "/";
    if (gw_router_match(htparser_get_methodstr_m(req->method),
                        (struct gw_str){ path, strlen(path) }, &x->route, &err) != GW_OK)
        goto refuse;
    if (x->route.id == GW_ROUTE_HEALTHZ) {
        gw_proxy_set_state(x, X_DONE);
        gw_reply_healthz(x);
        return EVHTP_RES_OK;
    }
    if (x->route.id == GW_ROUTE_READYZ) {
        gw_proxy_set_state(x, X_DONE);
        gw_reply_readyz(x);
        return EVHTP_RES_OK;
    }
    x->key = gw_auth_check(x->cfg, x->keytab, evhtp_header_find(h, "Authorization"),
                           gw_proxy_unix_ms());
    if (x->key == NULL) {
        gw_error_set(&err, 401, "invalid_request_error", "invalid_api_key", NULL,
                     evhtp_header_find(h, "Authorization") == NULL
                         ? "Missing API key: send Authorization: Bearer <team key>"
                         : "Incorrect API key provided");
        goto refuse;
    }
    if (x->route.id == GW_ROUTE_MODELS) {
        gw_proxy_set_state(x, X_DONE);
        gw_reply_models(x);
        return EVHTP_RES_OK;
    }
    if ((x->route.id == GW_ROUTE_CHARACTER_CREATE || x->route.id == GW_ROUTE_CHARACTER) &&
        !x->cfg->catalog.characters) {
        gw_error_set(&err, 404, "invalid_request_error", "unsupported_operation", NULL,
                     "The video service behind this gateway offers no characters");
        goto refuse;
    }
    if (classify_body(x, h, &err) != GW_OK)
        goto refuse;

    x->framing = x->body == BODY_MULTIPART ? FRAME_UNDECIDED
                 : x->body == BODY_JSON    ? FRAME_UNDECIDED
                 : x->client_cl < 0        ? FRAME_CHUNKED
                                           : FRAME_LENGTH;
    if (x->framing == FRAME_LENGTH)
        x->up_cl = (uint64_t)x->client_cl;
    x->expect_continue = !x->body_done && header_is(h, "Expect", "100-continue");
    gw_proxy_set_state(x, X_ADMIT);
    /* the job registry first: a list is answered from it, a follow-up must be on
     * one of the caller's jobs (both asynchronous: the store has its own thread) */
    switch (x->route.id == GW_ROUTE_LIST     ? gw_jobs_list(x, &err)
            : x->route.id == GW_ROUTE_CREATE ? gw_jobs_idem_begin(x, evhtp_header_find(
                                                   h, "Idempotency-Key"), &err)
                                             : gw_jobs_check_owner(x, &err)) {
    case GW_AGAIN:
        return EVHTP_RES_OK; /* gw_proxy_owner_checked() or the list answer comes later */
    case GW_ERR:
        goto refuse;
    default:
        break;
    }
    start_admission(x);
    return EVHTP_RES_OK;

refuse:
    gw_proxy_set_state(x, X_DONE);
    gw_reply_error(x, &err);
    return EVHTP_RES_OK;
}

/* --------------------------------------------------------------- on_read */

static size_t queued_upstream(struct exchange *x)
{
    return evbuffer_get_length(x->out) + (x->up ? gw_upconn_output_pending(x->up) : 0);
}

static int should_pause(struct exchange *x)
{
    if (x->key_state == KEY_LOOKUP)
        return 1; /* until the store says which upstream key the video needs */
    if (x->body == BODY_JSON || x->framing == FRAME_UNDECIDED || x->framing == FRAME_SPOOL)
        return 0; /* bounded by max_json_body / lookahead; spool goes to disk */
    return queued_upstream(x) > REQ_HWM - READ_MIN;
}

/*
 * The next client read takes no more than the room left under REQ_HWM, sized to
 * fill whole evbuffer chains (a power of two less libevent's chain header): what
 * an upload holds while the upstream is slow is then REQ_HWM, not REQ_HWM and a
 * read-ahead piece (256 KiB) more. With an upstream that keeps up, nothing is
 * queued and reads stay at REQ_HWM.
 */
static void set_read_room(struct exchange *x)
{
    size_t queued = queued_upstream(x);
    size_t room = queued < REQ_HWM ? REQ_HWM - queued : 0;
    size_t piece = REQ_HWM;

    if (x->body == BODY_JSON || x->framing == FRAME_UNDECIDED || x->framing == FRAME_SPOOL) {
        gw_htfix_read_max(evhtp_request_get_connection(x->req), 0); /* bounded otherwise */
        return;
    }
    while (piece > READ_MIN && piece - 128 > room)
        piece /= 2;
    gw_htfix_read_max(evhtp_request_get_connection(x->req), piece - 128);
}

void gw_proxy_resume_client(struct exchange *x)
{
    if (x->client_paused && !should_pause(x)) {
        set_read_room(x);
        x->client_paused = 0;
        evhtp_request_resume(x->req);
    }
}

static evhtp_res on_read(evhtp_request_t *req, struct evbuffer *buf, void *arg)
{
    struct exchange *x = req->cbarg;
    struct gw_error err;
    size_t n = evbuffer_get_length(buf);

    if (x == NULL || x->refused || x->state == X_DONE) {
        evbuffer_drain(buf, n);
        if (x != NULL && x->linger && (x->body_in += n) > x->cfg->max_body)
            gw_reply_end_linger(x); /* enough: close, even if the client then sees a reset */
        return EVHTP_RES_OK;
    }
    x->body_in += n;
    if (x->body_in > x->cfg->max_body) {
        evbuffer_drain(buf, n);
        gw_error_set(&err, 413, "invalid_request_error", "request_too_large", NULL,
                     "Request body exceeds the limit of %zu bytes", x->cfg->max_body);
        gw_proxy_fail(x, &err);
        return EVHTP_RES_OK;
    }
    if (x->body == BODY_JSON && x->body_in > x->cfg->max_json_body) {
        evbuffer_drain(buf, n);
        gw_error_set(&err, 413, "invalid_request_error", "request_too_large", NULL,
                     "JSON body exceeds the limit of %zu bytes", x->cfg->max_json_body);
        gw_proxy_fail(x, &err);
        return EVHTP_RES_OK;
    }
    evbuffer_add_buffer(x->in, buf);
    if (gw_reqbody_pump(x, &err) != GW_OK) {
        gw_proxy_fail(x, &err);
        return EVHTP_RES_OK;
    }
    set_read_room(x);
    /* never pause on the last piece of a sized body: libevhtp would never
     * finish the request (libevhtp-notes trap 3) */
    if (should_pause(x) && !(x->client_cl >= 0 && x->body_in >= (uint64_t)x->client_cl)) {
        x->client_paused = 1;
        return EVHTP_RES_PAUSE;
    }
    return EVHTP_RES_OK;
}

/* followup.c let a held upstream head go (its upstream key is known): send what
 * waited, and read the client again. */
void gw_proxy_head_ready(struct exchange *x)
{
    struct gw_error err;

    if (gw_reqbody_pump(x, &err) != GW_OK) {
        gw_proxy_fail(x, &err);
        return;
    }
    gw_proxy_resume_client(x);
}

/* The request has been read completely (libevhtp's request callback). */
static void on_request_complete(evhtp_request_t *req, void *arg)
{
    struct exchange *x = arg;
    struct gw_error err;
    struct timeval wtv;

    if (x == NULL)
        return;
    x->body_done = 1;
    if (x->state == X_DONE || x->refused) {
        if (x->linger)
            gw_reply_end_linger(x);
        return;
    }
    if (gw_reqbody_pump(x, &err) != GW_OK) {
        gw_proxy_fail(x, &err);
        return;
    }
    /* waiting for the upstream is not client idleness (libevhtp-notes trap 5):
     * keep only the write timeout; the upstream module bounds the wait */
    wtv.tv_sec = x->cfg->client_timeout_ms / 1000;
    wtv.tv_usec = (x->cfg->client_timeout_ms % 1000) * 1000;
    bufferevent_set_timeouts(gw_proxy_client_bev(x), NULL, &wtv);
    if (x->up_status != 0 && !x->reply_started)
        gw_response_start(x);
}

/* ------------------------------------------------------------- upstream */


/* ------------------------------------------------------------------ fini */

static double ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

static evhtp_res on_fini(evhtp_request_t *req, void *arg)
{
    struct exchange *x = req->cbarg;
    struct timeval rtv;
    struct gw_access a;

    /* a pipelined request waiting behind this one may now be parsed */
    gw_htfix_request_done(evhtp_request_get_connection(req));
    if (x == NULL)
        return EVHTP_RES_OK;
    req->cbarg = NULL;
    memset(&a, 0, sizeof(a));
    a.rid = x->rid;
    a.key = x->key ? x->key->name : NULL;
    a.method = htparser_get_methodstr_m(req->method);
    a.route = x->route.name;
    a.status = x->status;
    a.upstream_status = x->up_status;
    a.bytes_in = x->body_in;
    a.bytes_out = x->bytes_out;
    a.ms = ms_since(&x->t0);
    a.model = x->model_asked[0] ? x->model_asked : NULL;
    a.model_sent = x->have_model && x->resolved.sent.p ? x->resolved.sent.p : NULL;
    a.model_sent_len = x->have_model ? x->resolved.sent.len : 0;
    /* an unknown model let through is sent as asked, and resolved.sent points into
     * the body, whose JSON tree is gone by now (ASan: heap-use-after-free): log
     * our copy of it */
    if (x->have_model && x->resolved.model == NULL) {
        a.model_sent = x->model_asked;
        a.model_sent_len = strlen(x->model_asked);
    }
    a.error = x->err_code;
    /* an error after the reply started means the reply was cut (reply_error) */
    a.completed = x->replied && x->state == X_DONE && !(x->reply_started && x->err_code);
    a.trace = x->traceparent[0] ? x->traceparent : NULL;
    gw_accesslog_write(&a);
    gw_m_request((int)x->route.id, x->route.name, x->status, gw_exchange_key_slot(x), x->body_in,
                 x->bytes_out, (uint64_t)(a.ms * 1000));
    /* the next request on this connection gets the idle read timeout back */
    rtv.tv_sec = x->cfg->client_timeout_ms / 1000;
    rtv.tv_usec = (x->cfg->client_timeout_ms % 1000) * 1000;
    bufferevent_set_timeouts(evhtp_request_get_bev(req), &rtv, &rtv);
    gw_exchange_free(x);
    return EVHTP_RES_OK;
}

/* ------------------------------------------------------------- wiring */

void gw_proxy_attach(evhtp_connection_t *conn, struct gw_worker *w)
{
    evhtp_connection_set_hook(conn, evhtp_hook_on_headers, (evhtp_hook)on_headers, w);
    evhtp_connection_set_hook(conn, evhtp_hook_on_read, (evhtp_hook)on_read, w);
    evhtp_connection_set_hook(conn, evhtp_hook_on_request_fini, (evhtp_hook)on_fini, w);
    evhtp_connection_set_hook(conn, evhtp_hook_on_write, (evhtp_hook)gw_response_on_write, w);
}

void gw_proxy_request_cb(evhtp_request_t *req, void *arg)
{
    on_request_complete(req, arg);
}

void gw_proxy_body_error(evhtp_connection_t *conn, const struct gw_error *why)
{
    struct exchange *x = conn->request ? conn->request->cbarg : NULL;
    struct gw_error err;
    char head[256], body[512];
    struct iovec iov[2];
    struct msghdr m;

    /* libevhtp frees the connection, and its output with it, as soon as this read
     * returns: what is queued (an early answer, say) goes straight to the socket,
     * and so does the 400 when nothing was answered yet */
    if (x != NULL && (x->replied || x->reply_started)) {
        /* a bufferevent's output is frozen at its front: only the bufferevent
         * may drain it, so thaw it for this last write */
        struct evbuffer *out = bufferevent_get_output(conn->bev);
        evbuffer_unfreeze(out, 1);
        (void)evbuffer_write(out, bufferevent_getfd(conn->bev));
        evbuffer_freeze(out, 1);
        return;
    }
    if (why != NULL)
        err = *why;
    else
        gw_error_set(&err, 400, "invalid_request_error", "invalid_request", NULL,
                     "Malformed request");
    gw_log(GW_LOG_INFO, "rid=%s key=%s route=%s status=%d: %s", x ? x->rid : "-",
           x && x->key ? x->key->name : "-", x && x->route.name ? x->route.name : "-",
           err.status, err.message);
    iov[1].iov_base = body;
    iov[1].iov_len = gw_error_json(&err, body, sizeof(body));
    iov[0].iov_base = head;
    iov[0].iov_len = (size_t)snprintf(head, sizeof(head),
                                      "HTTP/1.1 %d %s\r\nContent-Type: application/json"
                                      "\r\nX-Request-Id: %s\r\nConnection: close\r\n"
                                      "Content-Length: %zu\r\n\r\n",
                                      err.status, gw_reply_reason(err.status),
                                      x ? x->rid : "-", iov[1].iov_len);
    memset(&m, 0, sizeof(m));
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    (void)!sendmsg(bufferevent_getfd(conn->bev), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (x == NULL)
        return;
    x->replied = 1;
    x->status = err.status;
    x->err_code = err.code;
    if (x->up != NULL) {
        gw_upconn_release(x->up);
        x->up = NULL;
    }
}

void gw_proxy_close_after_flush(evhtp_connection_t *conn)
{
    /* libevhtp closes a connection whose request is finished and not keep-alive once
     * its output is written. With no request at all it does too, but writes an error
     * line to stderr each time: give it a placeholder request that says just that. */
    if (conn->request == NULL) {
        evhtp_request_t *r = evhtp_request_new(NULL, NULL);
        if (r != NULL) {
            r->conn = conn;
            r->htp = conn->htp;
            r->flags = EVHTP_REQ_FLAG_FINISHED; /* no EVHTP_REQ_FLAG_KEEPALIVE */
            conn->request = r;
        }
    } else {
        conn->request->flags |= EVHTP_REQ_FLAG_FINISHED;
        conn->request->flags &= ~EVHTP_REQ_FLAG_KEEPALIVE;
    }
    bufferevent_enable(conn->bev, EV_WRITE);
    bufferevent_trigger(conn->bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

void gw_proxy_refuse_head(evhtp_connection_t *conn, const struct gw_error *err)
{
    char body[512];
    size_t n = gw_error_json(err, body, sizeof(body));

    gw_log(GW_LOG_INFO, "status=%d code=%s: %s (before parsing)", err->status,
           err->code ? err->code : "-", err->message);
    bufferevent_disable(conn->bev, EV_READ);
    evbuffer_add_printf(bufferevent_get_output(conn->bev),
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                        err->status, gw_reply_reason(err->status), n);
    bufferevent_write(conn->bev, body, n);
    /* closed once the answer is out (or fails to go); the framer parses nothing more
     * on it. Never mark it paused: a paused connection whose write fails is never
     * freed. */
    gw_proxy_close_after_flush(conn);
}
