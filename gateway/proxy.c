/*
 * proxy.c - one exchange, one state machine: client request -> upstream ->
 * client response. Read top to bottom in lifecycle order:
 *
 *   on_headers   route, auth, framing checks; lease an upstream connection
 *   on_read      body pieces moved (never copied) into the body pipeline
 *   pump_request multipart/JSON/raw body -> rewrite -> framing -> upstream
 *   up_event     upstream connected / writable / head / body / done / error
 *   respond      relay the upstream response with backpressure both ways
 *   on_fini      the one place an exchange is freed (libevhtp's request fini)
 *
 * States (set_state checks every transition):
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
#define _GNU_SOURCE /* O_TMPFILE */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "accesslog.h"
#include "admit.h"
#include "auth.h"
#include "catalog.h"
#include "jsonbody.h"
#include "log.h"
#include "multipart.h"
#include "proxy.h"
#include "router.h"
#include "upstream.h"

/* Request side: pause the client above this many bytes queued for the upstream. */
#define REQ_HWM (256 * 1024)
/* Response side: pause the upstream above this many bytes queued for the client,
 * resume below RESP_LWM. */
#define RESP_HWM (256 * 1024)
#define RESP_LWM (64 * 1024)
/* Upstream responses up to this size with a known length are sent in one piece
 * (the job objects); larger or unknown ones are streamed. */
#define RESP_WHOLE_MAX (64 * 1024)
/* Bytes of the spool file fed to the upstream per step. */
#define SPOOL_STEP (256 * 1024)
#define MP_OPS 64

enum xstate {
    X_HEADERS = 0,
    X_ADMIT,
    X_CONNECT,
    X_STREAM_REQ,
    X_AWAIT_RESP,
    X_STREAM_RESP,
    X_DONE,
};

static const char *const xstate_names[] = {
    "HEADERS", "ADMIT", "CONNECT", "STREAM_REQ", "AWAIT_RESP", "STREAM_RESP", "DONE",
};

enum body_kind {
    BODY_RAW = 0,   /* passed through as is (follow-up routes) */
    BODY_MULTIPART, /* scanned, `model` rewritten */
    BODY_JSON,      /* held whole (bounded), `model` rewritten */
};

enum framing {
    FRAME_UNDECIDED = 0, /* head held until the model part is seen (bounded) */
    FRAME_LENGTH,        /* exact Content-Length */
    FRAME_CHUNKED,       /* chunked upstream (fallback) */
    FRAME_SPOOL,         /* spooled to a temp file, sent with Content-Length at the end */
};

struct exchange {
    enum xstate state;
    struct gw_worker *w;
    const struct gw_config *cfg;
    evhtp_request_t *req;
    struct gw_route route;
    const struct gw_team_key *key;
    struct gw_admission *admission; /* pending asynchronous admission */
    int admitted;            /* gw_admit_release() owed at the end */
    int expect_continue;     /* send 100 Continue once admitted */
    char rid[20];
    struct timespec t0;

    /* client request body */
    enum body_kind body;
    int64_t client_cl;       /* -1: chunked */
    uint64_t body_in;        /* bytes received */
    int body_done;           /* libevhtp saw the end of the request */
    int client_paused;
    int refused;             /* answered early: drain whatever else comes */
    int linger;              /* early reply sent but not ended: see send_reply() */
    struct evbuffer *in;     /* received, not yet classified */
    struct evbuffer *out;    /* classified, not yet written upstream */
    struct gw_mp *mp;        /* multipart creates only; kept when recycled */
    struct exchange *next_free; /* the worker's free list */
    int mp_finished;         /* gw_mp_finish() has run */

    /* what the body said (for checks and the access log) */
    struct gw_resolved resolved;
    char model_asked[64];
    unsigned nimages;
    int have_model, have_prompt;
    int have_seconds, have_size;   /* a second one is refused: only one value can be held */
    char seconds[16], size[32];    /* held until the model is known; may hold NULs */
    size_t seconds_len, size_len;

    /* upstream request */
    struct gw_upconn *up;
    int connected;
    enum framing framing;
    uint64_t up_cl;          /* FRAME_LENGTH / FRAME_SPOOL: body length sent */
    uint64_t up_sent;        /* body bytes written upstream (without chunk framing) */
    int head_sent;
    int retried;             /* retry_stale() used its one retry */
    unsigned upstream_key;   /* index of the upstream key used (keypool) */
    int req_finished;        /* whole request written upstream */
    int spool_fd;
    uint64_t spool_len, spool_fed;

    /* upstream response */
    int up_status;
    int up_done;
    int up_paused;
    int reply_started;       /* client reply head sent (streaming) */
    int replied;             /* client reply complete or error sent */
    int reply_chunked;
    struct evbuffer *resp;   /* whole-response buffer (small bodies) */
    uint64_t bytes_out;
    int status;              /* status sent to the client */
    const char *err_code;    /* gateway error code for the access log */
};

static void up_event(struct gw_upconn *c, enum gw_up_event ev, void *arg);
static int pump_request(struct exchange *x, struct gw_error *err);
static void start_response(struct exchange *x);
static void relay_body(struct exchange *x);

/* ------------------------------------------------------------------ state */

static void set_state(struct exchange *x, enum xstate to)
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
    x->state = to;
}

static int64_t now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static struct bufferevent *client_bev(struct exchange *x)
{
    return evhtp_request_get_bev(x->req);
}

/* Headers that are not forwarded either way: hop-by-hop ones, the framing the
 * gateway sets itself, and credentials. */
static const char *hop_by_hop[] = {
    "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "TE", "Trailer",
    "Upgrade", "Proxy-Authorization", "Proxy-Authenticate", "Expect", "Content-Length",
    "Host", "Authorization", "X-Request-Id",
};

static int is_hop_by_hop(const char *name, size_t len)
{
    for (size_t i = 0; i < GW_ARRAY_LEN(hop_by_hop); i++) {
        if (strlen(hop_by_hop[i]) == len && strncasecmp(hop_by_hop[i], name, len) == 0)
            return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- replies */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

/*
 * Write the reply head straight into the client's output. libevhtp's own
 * reply path copies every header into a heap key/value list and formats the
 * head through a scratch buffer; relayed headers are written here from the
 * upstream's header block without any allocation. `length` < 0: unknown
 * (chunked for HTTP/1.1, close-delimited for HTTP/1.0: libevhtp-notes trap 9).
 * `upstream`: relay the upstream's end-to-end headers; `allow`: an Allow value.
 */
static void reply_head(struct exchange *x, int status, int upstream, const char *allow,
                       int64_t length)
{
    struct evbuffer *o = bufferevent_get_output(client_bev(x));
    evhtp_request_t *req = x->req;
    int http10 = req->proto == EVHTP_PROTO_10;

    if (length < 0 && http10)
        req->flags &= ~EVHTP_REQ_FLAG_KEEPALIVE;
    evbuffer_add_printf(o, "HTTP/1.%c %d %s\r\n", http10 ? '0' : '1', status, reason(status));
    if (upstream) {
        unsigned n = gw_upconn_header_count(x->up);
        for (unsigned i = 0; i < n; i++) {
            struct gw_str k, v;
            gw_upconn_header_at(x->up, i, &k, &v);
            if (is_hop_by_hop(k.p, k.len))
                continue;
            evbuffer_add(o, k.p, k.len);
            evbuffer_add(o, ": ", 2);
            evbuffer_add(o, v.p, v.len);
            evbuffer_add(o, "\r\n", 2);
        }
    } else {
        evbuffer_add(o, "Content-Type: application/json\r\n", 32);
    }
    if (allow != NULL)
        evbuffer_add_printf(o, "Allow: %s\r\n", allow);
    evbuffer_add_printf(o, "X-Request-Id: %s\r\n", x->rid);
    if (length >= 0) {
        evbuffer_add_printf(o, "Content-Length: %" PRId64 "\r\n", length);
    } else if (!http10) {
        evbuffer_add(o, "Transfer-Encoding: chunked\r\n", 28);
        req->flags |= EVHTP_REQ_FLAG_CHUNKED; /* evhtp_send_reply_chunk() frames */
        x->reply_chunked = 1;
    }
    if (!http10 && !(req->flags & EVHTP_REQ_FLAG_KEEPALIVE))
        evbuffer_add(o, "Connection: close\r\n", 19);
    else if (http10 && (req->flags & EVHTP_REQ_FLAG_KEEPALIVE))
        evbuffer_add(o, "Connection: keep-alive\r\n", 24);
    evbuffer_add(o, "\r\n", 2);
}

/* Stop keep-alive for this connection: the request body was not (fully) read. */
static void close_after_reply(struct exchange *x)
{
    x->req->flags &= ~EVHTP_REQ_FLAG_KEEPALIVE;
}

static void end_reply(struct exchange *x);

/* Send a whole reply: head, then body (moved). While the client is still sending its
 * body, closing right after the reply makes the kernel reset the connection over the
 * unread bytes, and a client that writes while it reads (Node's fetch: the OpenAI SDK's
 * streamed uploads) loses the reply to EPIPE. So the reply is not ended yet (libevhtp
 * closes only once the request is finished): the rest of the body is read and dropped,
 * and end_linger() ends it when the body is in, or when more than max_body came. */
static void send_reply(struct exchange *x, int status, int upstream, const char *allow,
                       struct evbuffer *body)
{
    reply_head(x, status, upstream, allow, (int64_t)evbuffer_get_length(body));
    bufferevent_write_buffer(client_bev(x), body);
    if (x->body_done) {
        end_reply(x);
        return;
    }
    x->linger = 1;
}

/* End a reply. libevhtp (evhtp_send_reply_end) only marks the request
 * finished here and recycles or closes the connection from its write callback, which
 * never runs again if the output is already flushed: then run it ourselves (deferred,
 * never inside libevhtp's parser). Only then: libevhtp 1.2.18's write callback frees
 * the connection when it runs with no request, so a second run after the natural one
 * would kill a keep-alive connection. */
static void end_reply(struct exchange *x)
{
    struct bufferevent *bev = client_bev(x);

    evhtp_send_reply_end(x->req);
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

static void end_linger(struct exchange *x)
{
    x->linger = 0;
    end_reply(x);
}

/* Send a complete reply with a JSON body from buf (moved). */
static void reply_json(struct exchange *x, int status, struct evbuffer *buf, const char *allow)
{
    evhtp_request_t *req = x->req;

    if (!x->body_done) {
        close_after_reply(x);
        x->refused = 1;
        if (x->client_paused) {
            x->client_paused = 0;
            evhtp_request_resume(req);
        }
    }
    x->bytes_out += evbuffer_get_length(buf);
    x->status = status;
    x->replied = 1;
    send_reply(x, status, 0, allow, buf);
}

/* Answer with an OpenAI error body, or cut the connection when a reply is
 * already under way (the client then sees a truncated response). */
static void reply_error(struct exchange *x, const struct gw_error *err)
{
    char body[512];
    size_t n;

    x->err_code = err->code;
    if (x->replied)
        return;
    if (x->reply_started) {
        gw_log(GW_LOG_WARN, "rid=%s key=%s route=%s aborting reply: %s", x->rid,
               x->key ? x->key->name : "-", x->route.name ? x->route.name : "-", err->message);
        x->replied = 1;
        shutdown(bufferevent_getfd(client_bev(x)), SHUT_RDWR);
        return;
    }
    gw_log(err->status >= 500 ? GW_LOG_WARN : GW_LOG_INFO,
           "rid=%s key=%s route=%s status=%d code=%s: %s", x->rid, x->key ? x->key->name : "-",
           x->route.name ? x->route.name : "-", err->status, err->code ? err->code : "-",
           err->message);
    n = gw_error_json(err, body, sizeof(body));
    struct evbuffer *buf = evbuffer_new();
    evbuffer_add(buf, body, n);
    reply_json(x, err->status, buf,
               err->status == 405 && strstr(err->message, "accepts ") != NULL
                   ? strstr(err->message, "accepts ") + 8
                   : NULL);
    evbuffer_free(buf);
}

/* Abort the upstream side (an incomplete request is never reused, so the
 * upstream sees a truncated body and creates no job) and answer the client. */
static void fail(struct exchange *x, const struct gw_error *err)
{
    if (x->up != NULL) {
        gw_upconn_release(x->up);
        x->up = NULL;
    }
    reply_error(x, err);
    if (x->state != X_DONE)
        set_state(x, X_DONE);
}

/* ------------------------------------------------------ gateway's own routes */

static void reply_healthz(struct exchange *x)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, "{\"status\":\"ok\"}\n", 16);
    reply_json(x, 200, b, NULL);
    evbuffer_free(b);
}

static void reply_models(struct exchange *x)
{
    const struct gw_catalog *cat = &x->cfg->catalog;
    struct evbuffer *b = evbuffer_new();
    int first = 1;

#define MODEL_ENTRY(nm)                                                                   \
    do {                                                                                  \
        evbuffer_add_printf(b, "%s{\"id\":\"%s\",\"object\":\"model\",\"created\":0,"     \
                               "\"owned_by\":\"videogw\"}", first ? "" : ",", (nm));       \
        first = 0;                                                                        \
    } while (0)

    evbuffer_add_printf(b, "{\"object\":\"list\",\"data\":[");
    for (unsigned i = 0; i < cat->naliases; i++)
        MODEL_ENTRY(cat->aliases[i].from);
    for (unsigned i = 0; i < cat->nmodels; i++) {
        int shadowed = 0;
        for (unsigned j = 0; j < cat->naliases; j++)
            shadowed |= strcmp(cat->aliases[j].from, cat->models[i].name) == 0;
        if (!shadowed)
            MODEL_ENTRY(cat->models[i].name);
    }
#undef MODEL_ENTRY
    evbuffer_add_printf(b, "]}\n");
    reply_json(x, 200, b, NULL);
    evbuffer_free(b);
}

/* ------------------------------------------------- body field observation */

static int on_part(void *arg, const struct gw_mp_part *part, struct gw_error *err)
{
    struct exchange *x = arg;

    if (gw_str_eq(part->name, "model") && part->has_filename)
        return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "model",
                            "The model field must be a text field, not a file");
    if (gw_str_eq(part->name, "input_reference") || gw_str_eq(part->name, "input_reference[]")) {
        x->nimages++;
        if (x->have_model)
            return gw_catalog_check_images(x->resolved.model, x->nimages, err);
    }
    return GW_OK;
}

static size_t copy_field(char *dst, size_t cap, struct gw_str v)
{
    size_t n = v.len < cap - 1 ? v.len : cap - 1;
    memcpy(dst, v.p, n);
    dst[n] = '\0';
    return n;
}

/* A field given twice: the upstream may take either value, and a value that came
 * before the model could not be kept to be checked, so neither is trusted. */
static int field_twice(struct gw_error *err, const char *name)
{
    return gw_error_set(err, 400, "invalid_request_error", "invalid_value", name,
                        "The %s field appears more than once", name);
}

static int on_field(void *arg, const struct gw_mp_field *f, struct gw_error *err)
{
    struct exchange *x = arg;

    if (gw_str_eq(f->name, "prompt")) {
        x->have_prompt = f->total_len > 0;
    } else if (gw_str_eq(f->name, "seconds")) {
        if (x->have_seconds++)
            return field_twice(err, "seconds");
        x->seconds_len = copy_field(x->seconds, sizeof(x->seconds), f->value);
        if (x->have_model)
            return gw_catalog_check_seconds(x->resolved.model, f->value, err);
    } else if (gw_str_eq(f->name, "size")) {
        if (x->have_size++)
            return field_twice(err, "size");
        x->size_len = copy_field(x->size, sizeof(x->size), f->value);
        if (x->have_model)
            return gw_catalog_check_size(x->resolved.model, f->value, err);
    }
    return GW_OK;
}

static int on_model(void *arg, struct gw_str value, struct gw_str *out, struct gw_error *err)
{
    struct exchange *x = arg;

    if (x->have_model)
        return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "model",
                            "The model field appears more than once");
    if (gw_catalog_resolve(&x->cfg->catalog, value, &x->resolved, err) != GW_OK)
        return GW_ERR;
    x->have_model = 1;
    copy_field(x->model_asked, sizeof(x->model_asked), value);
    /* fields seen before the model are checked now */
    if (gw_catalog_check_images(x->resolved.model, x->nimages, err) != GW_OK)
        return GW_ERR;
    if (x->have_seconds &&
        gw_catalog_check_seconds(x->resolved.model,
                                 (struct gw_str){ x->seconds, x->seconds_len }, err) != GW_OK)
        return GW_ERR;
    if (x->have_size &&
        gw_catalog_check_size(x->resolved.model, (struct gw_str){ x->size, x->size_len },
                              err) != GW_OK)
        return GW_ERR;
    *out = x->resolved.sent;
    return GW_OK;
}

static int on_end(void *arg, struct gw_error *err)
{
    struct exchange *x = arg;

    if (x->route.id == GW_ROUTE_REMIX) {
        if (!x->have_prompt)
            return gw_error_set(err, 400, "invalid_request_error", "missing_required_parameter",
                                "prompt", "Missing required parameter: 'prompt'");
        return GW_OK;
    }
    if (!x->have_model)
        return gw_error_set(err, 400, "invalid_request_error", "missing_required_parameter",
                            "model", "Missing required parameter: 'model'");
    if (!x->have_prompt)
        return gw_error_set(err, 400, "invalid_request_error", "missing_required_parameter",
                            "prompt", "Missing required parameter: 'prompt'");
    return GW_OK;
}

static const struct gw_mp_hooks body_hooks = {
    .on_part = on_part,
    .on_field = on_field,
    .on_model = on_model,
    .on_end = on_end,
};

/* ------------------------------------------------------------ on_headers */


static void new_rid(struct exchange *x)
{
    uint64_t n = ++x->w->next_rid;
    snprintf(x->rid, sizeof(x->rid), "%02x%014" PRIx64, x->w->id & 0xff,
             (uint64_t)(n & 0xffffffffffffffULL));
}

/*
 * Exchanges are recycled per worker (no lock: one loop per worker), with their
 * three evbuffers and their multipart state, so a request costs no allocation
 * of ours once the loop is warm.
 */
#define EXCHANGE_POOL_MAX 256

static void pool_put(struct gw_worker *w, struct exchange *x)
{
    struct evbuffer *in = x->in, *out = x->out, *resp = x->resp;
    struct gw_mp *mp = x->mp;

    if (w->nfree_exchanges >= EXCHANGE_POOL_MAX) {
        evbuffer_free(in);
        evbuffer_free(out);
        evbuffer_free(resp);
        free(mp);
        free(x);
        return;
    }
    evbuffer_drain(in, evbuffer_get_length(in));
    evbuffer_drain(out, evbuffer_get_length(out));
    evbuffer_drain(resp, evbuffer_get_length(resp));
    memset(x, 0, sizeof(*x));
    x->in = in;
    x->out = out;
    x->resp = resp;
    x->mp = mp;
    x->next_free = w->free_exchanges;
    w->free_exchanges = x;
    w->nfree_exchanges++;
}

static struct exchange *pool_get(struct gw_worker *w)
{
    struct exchange *x = w->free_exchanges;

    if (x != NULL) {
        w->free_exchanges = x->next_free;
        w->nfree_exchanges--;
        x->next_free = NULL;
        return x;
    }
    x = calloc(1, sizeof(*x));
    if (x == NULL)
        return NULL;
    x->in = evbuffer_new();
    x->out = evbuffer_new();
    x->resp = evbuffer_new();
    if (x->in == NULL || x->out == NULL || x->resp == NULL) {
        if (x->in)
            evbuffer_free(x->in);
        if (x->out)
            evbuffer_free(x->out);
        if (x->resp)
            evbuffer_free(x->resp);
        free(x);
        return NULL;
    }
    return x;
}

static void exchange_free(struct exchange *x)
{
    if (x->admission != NULL)
        gw_admit_cancel(x->admission);
    if (x->admitted)
        gw_admit_release(x->w, &(struct gw_admit_req){ x->key, &x->route, x->rid });
    if (x->up != NULL)
        gw_upconn_release(x->up);
    if (x->spool_fd >= 0)
        close(x->spool_fd);
    x->w->inflight--;
    pool_put(x->w, x);
}

static struct exchange *exchange_new(struct gw_worker *w, evhtp_request_t *req)
{
    struct exchange *x = pool_get(w);

    if (x == NULL)
        return NULL;
    x->w = w;
    x->cfg = w->cfg;
    x->req = req;
    x->spool_fd = -1;
    x->client_cl = 0;
    clock_gettime(CLOCK_MONOTONIC, &x->t0);
    w->inflight++;
    new_rid(x);
    /* the request's callback argument is how every later hook finds the exchange */
    req->cbarg = x;
    return x;
}

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
    x->body = BODY_RAW;
    if (x->route.id != GW_ROUTE_CREATE && x->route.id != GW_ROUTE_REMIX)
        return GW_OK;
    if (x->client_cl == 0)
        return gw_error_set(err, 400, "invalid_request_error", "missing_required_parameter",
                            x->route.id == GW_ROUTE_CREATE ? "model" : "prompt",
                            "The request has no body");
    if (ct != NULL && x->route.id == GW_ROUTE_CREATE &&
        strncasecmp(ct, "multipart/form-data", 19) == 0) {
        struct gw_str boundary;
        if (gw_mp_boundary((struct gw_str){ ct, strlen(ct) }, &boundary, err) != GW_OK)
            return GW_ERR;
        if (x->mp == NULL) /* kept across recycled exchanges */
            x->mp = malloc(sizeof(*x->mp));
        if (x->mp == NULL)
            return gw_error_set(err, 503, "server_error", "overloaded", NULL, "Out of memory");
        if (gw_mp_init(x->mp, boundary, &body_hooks, x) != GW_OK) {
            *err = x->mp->err;
            return GW_ERR;
        }
        x->body = BODY_MULTIPART;
        return GW_OK;
    }
    if (ct != NULL && strncasecmp(ct, "application/json", 16) == 0) {
        if (x->client_cl > 0 && (uint64_t)x->client_cl > x->cfg->max_json_body)
            return gw_error_set(err, 413, "invalid_request_error", "request_too_large", NULL,
                                "JSON body exceeds the limit of %zu bytes",
                                x->cfg->max_json_body);
        x->body = BODY_JSON;
        return GW_OK;
    }
    return gw_error_set(err, 415, "invalid_request_error", "unsupported_media_type", NULL,
                        "Content-Type must be %s",
                        x->route.id == GW_ROUTE_CREATE
                            ? "multipart/form-data or application/json"
                            : "application/json");
}

/* Admission decided: set up the upstream connection while the body is read. */
static void on_admitted(void *arg, const struct gw_error *refusal)
{
    struct exchange *x = arg;
    struct gw_error err;

    x->admission = NULL;
    if (refusal != NULL) {
        fail(x, refusal);
        return;
    }
    x->admitted = 1;
    x->up = gw_upstream_lease(x->w->up, up_event, x);
    if (x->up == NULL) {
        gw_error_set(&err, 503, "server_error", "overloaded", NULL, "Out of memory");
        fail(x, &err);
        return;
    }
    set_state(x, X_CONNECT);
    if (x->expect_continue && !x->body_done)
        bufferevent_write(client_bev(x), "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

static evhtp_res on_headers(evhtp_request_t *req, evhtp_headers_t *h, void *arg)
{
    struct gw_worker *w = arg;
    struct exchange *x;
    struct gw_error err;
    const char *path;

    x = exchange_new(w, req);
    if (x == NULL)
        return EVHTP_RES_FATAL;
    /* a body (Content-Length > 0 or chunked) follows this head */
    x->body_done = !(evhtp_header_find(h, "Transfer-Encoding") != NULL ||
                     (evhtp_header_find(h, "Content-Length") != NULL &&
                      strtoull(evhtp_header_find(h, "Content-Length"), NULL, 10) > 0));
    path = req->uri && req->uri->path && req->uri->path->full ? req->uri->path->full : "/";
    if (gw_router_match(htparser_get_methodstr_m(req->method),
                        (struct gw_str){ path, strlen(path) }, &x->route, &err) != GW_OK)
        goto refuse;
    if (x->route.id == GW_ROUTE_HEALTHZ) {
        set_state(x, X_DONE);
        reply_healthz(x);
        return EVHTP_RES_OK;
    }
    x->key = gw_auth_check(x->cfg, evhtp_header_find(h, "Authorization"));
    if (x->key == NULL) {
        gw_error_set(&err, 401, "invalid_request_error", "invalid_api_key", NULL,
                     evhtp_header_find(h, "Authorization") == NULL
                         ? "Missing API key: send Authorization: Bearer <team key>"
                         : "Incorrect API key provided");
        goto refuse;
    }
    if (x->route.id == GW_ROUTE_MODELS) {
        set_state(x, X_DONE);
        reply_models(x);
        return EVHTP_RES_OK;
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
    set_state(x, X_ADMIT);
    switch (gw_admit(w, &(struct gw_admit_req){ x->key, &x->route, x->rid }, on_admitted, x,
                     &x->admission, &err)) {
    case GW_OK:
        on_admitted(x, NULL);
        return EVHTP_RES_OK;
    case GW_AGAIN:
        return EVHTP_RES_OK; /* on_admitted() comes later */
    default:
        goto refuse;
    }

refuse:
    set_state(x, X_DONE);
    reply_error(x, &err);
    return EVHTP_RES_OK;
}

/* --------------------------------------------------------------- on_read */

static int should_pause(struct exchange *x)
{
    size_t queued;

    if (x->body == BODY_JSON || x->framing == FRAME_UNDECIDED || x->framing == FRAME_SPOOL)
        return 0; /* bounded by max_json_body / lookahead; spool goes to disk */
    queued = evbuffer_get_length(x->out) + (x->up ? gw_upconn_output_pending(x->up) : 0);
    return queued > REQ_HWM;
}

static void maybe_resume_client(struct exchange *x)
{
    if (x->client_paused && !should_pause(x)) {
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
            end_linger(x); /* enough: close, even if the client then sees a reset */
        return EVHTP_RES_OK;
    }
    x->body_in += n;
    if (x->body_in > x->cfg->max_body) {
        evbuffer_drain(buf, n);
        gw_error_set(&err, 413, "invalid_request_error", "request_too_large", NULL,
                     "Request body exceeds the limit of %zu bytes", x->cfg->max_body);
        fail(x, &err);
        return EVHTP_RES_OK;
    }
    if (x->body == BODY_JSON && x->body_in > x->cfg->max_json_body) {
        evbuffer_drain(buf, n);
        gw_error_set(&err, 413, "invalid_request_error", "request_too_large", NULL,
                     "JSON body exceeds the limit of %zu bytes", x->cfg->max_json_body);
        fail(x, &err);
        return EVHTP_RES_OK;
    }
    evbuffer_add_buffer(x->in, buf);
    if (pump_request(x, &err) != GW_OK) {
        fail(x, &err);
        return EVHTP_RES_OK;
    }
    /* never pause on the last piece of a sized body: libevhtp would never
     * finish the request (libevhtp-notes trap 3) */
    if (should_pause(x) && !(x->client_cl >= 0 && x->body_in >= (uint64_t)x->client_cl)) {
        x->client_paused = 1;
        return EVHTP_RES_PAUSE;
    }
    return EVHTP_RES_OK;
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
            end_linger(x);
        return;
    }
    if (pump_request(x, &err) != GW_OK) {
        fail(x, &err);
        return;
    }
    /* waiting for the upstream is not client idleness (libevhtp-notes trap 5):
     * keep only the write timeout; the upstream module bounds the wait */
    wtv.tv_sec = x->cfg->client_timeout_ms / 1000;
    wtv.tv_usec = (x->cfg->client_timeout_ms % 1000) * 1000;
    bufferevent_set_timeouts(client_bev(x), NULL, &wtv);
    if (x->up_status != 0 && !x->reply_started)
        start_response(x);
}

/* ------------------------------------------------------- the body pipeline */

static int spool_open(struct exchange *x, struct gw_error *err);

/*
 * Decide how the upstream body is framed, as soon as it can be known (see
 * docs/streaming.md): exact length once the model part is rewritten (sized
 * client body) or the whole body is in; the fallback once more than
 * `lookahead` bytes are held without a model part.
 */
static int decide_framing(struct exchange *x, int input_done, struct gw_error *err)
{
    if (x->framing != FRAME_UNDECIDED)
        return GW_OK;
    if (x->body == BODY_MULTIPART && x->mp->seen_model && x->client_cl >= 0) {
        x->framing = FRAME_LENGTH;
        x->up_cl = (uint64_t)(x->client_cl + x->mp->delta);
    } else if (input_done) {
        x->framing = FRAME_LENGTH;
        x->up_cl = evbuffer_get_length(x->out);
    } else if (x->body == BODY_MULTIPART && evbuffer_get_length(x->out) > x->cfg->lookahead) {
        x->framing = x->cfg->fallback == GW_FALLBACK_SPOOL ? FRAME_SPOOL : FRAME_CHUNKED;
        if (x->framing == FRAME_SPOOL && spool_open(x, err) != GW_OK)
            return GW_ERR;
        gw_log(GW_LOG_DEBUG, "rid=%s no model part within %zu bytes: %s upstream", x->rid,
               x->cfg->lookahead, x->framing == FRAME_SPOOL ? "spooling" : "chunked");
    }
    return GW_OK;
}

static int scan_multipart(struct exchange *x, struct gw_error *err)
{
    struct gw_mp_op ops[MP_OPS];
    size_t nops;

    for (;;) {
        /* bytes before mp->scanned - mp->classified are scanned but unclassified */
        size_t skip = (size_t)(x->mp->scanned - x->mp->classified);
        size_t avail = evbuffer_get_length(x->in);
        struct evbuffer_ptr pos;
        struct evbuffer_iovec vec;
        ssize_t used;

        if (avail <= skip)
            return GW_OK;
        evbuffer_ptr_set(x->in, &pos, skip, EVBUFFER_PTR_SET);
        if (evbuffer_peek(x->in, -1, &pos, &vec, 1) < 1)
            return GW_OK;
        if (x->framing == FRAME_UNDECIDED) {
            /* scan no further than the window, so the decision does not depend
             * on how the body happened to be sliced into reads */
            size_t held = evbuffer_get_length(x->out);
            size_t room = held < x->cfg->lookahead ? x->cfg->lookahead - held + 1 : 1;
            if (vec.iov_len > room)
                vec.iov_len = room;
        }
        nops = 0;
        used = gw_mp_execute(x->mp, vec.iov_base, vec.iov_len, ops, &nops, MP_OPS);
        if (used < 0) {
            *err = x->mp->err;
            return GW_ERR;
        }
        for (size_t i = 0; i < nops; i++) {
            switch (ops[i].kind) {
            case GW_MP_PASS:
                evbuffer_remove_buffer(x->in, x->out, ops[i].len);
                break;
            case GW_MP_DROP:
                evbuffer_drain(x->in, ops[i].len);
                break;
            case GW_MP_LITERAL:
                evbuffer_add(x->out, ops[i].p, ops[i].len);
                break;
            }
        }
        if (decide_framing(x, 0, err) != GW_OK)
            return GW_ERR;
        if (used == 0 && nops == 0)
            return GW_OK;
    }
}

static int finish_multipart(struct exchange *x, struct gw_error *err)
{
    struct gw_mp_op ops[MP_OPS];
    size_t nops = 0;

    if (gw_mp_finish(x->mp, ops, &nops, MP_OPS) != GW_OK) {
        *err = x->mp->err;
        return GW_ERR;
    }
    for (size_t i = 0; i < nops; i++) {
        if (ops[i].kind == GW_MP_PASS)
            evbuffer_remove_buffer(x->in, x->out, ops[i].len);
        else if (ops[i].kind == GW_MP_DROP)
            evbuffer_drain(x->in, ops[i].len);
        else
            evbuffer_add(x->out, ops[i].p, ops[i].len);
    }
    return GW_OK;
}

static void free_ref(const void *data, size_t len, void *extra)
{
    free((void *)data);
}

static int rewrite_json(struct exchange *x, struct gw_error *err)
{
    size_t len = evbuffer_get_length(x->in);
    const char *p = (const char *)evbuffer_pullup(x->in, -1);
    char *out = NULL;
    size_t out_len = 0;

    if (gw_jsonbody_rewrite((struct gw_str){ p ? p : "", len }, &body_hooks, x, &out, &out_len,
                            err) != GW_OK)
        return GW_ERR;
    if (out != NULL) {
        evbuffer_drain(x->in, len);
        evbuffer_add_reference(x->out, out, out_len, free_ref, NULL);
    } else {
        evbuffer_add_buffer(x->out, x->in);
    }
    return GW_OK;
}

static int spool_open(struct exchange *x, struct gw_error *err)
{
    const char *dir = x->cfg->spool_dir ? x->cfg->spool_dir : "/tmp";

    x->spool_fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (x->spool_fd < 0) {
        gw_log(GW_LOG_ERROR, "rid=%s cannot create a spool file in %s: %s", x->rid, dir,
               strerror(errno));
        return gw_error_set(err, 503, "server_error", "spool_unavailable", NULL,
                            "The gateway cannot buffer this upload right now");
    }
    return GW_OK;
}

static int spool_write(struct exchange *x, struct gw_error *err)
{
    while (evbuffer_get_length(x->out) > 0) {
        int n = evbuffer_write(x->out, x->spool_fd);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            gw_log(GW_LOG_ERROR, "rid=%s spool write failed: %s", x->rid, strerror(errno));
            return gw_error_set(err, 503, "server_error", "spool_unavailable", NULL,
                                "The gateway cannot buffer this upload right now");
        }
        x->spool_len += (uint64_t)n;
    }
    return GW_OK;
}

/* Fill the upstream output from the spool file, SPOOL_STEP at a time, so the
 * memory used stays bounded whatever the file size. */
static void spool_feed(struct exchange *x)
{
    struct evbuffer *o = gw_upconn_output(x->up);

    while (x->spool_fed < x->spool_len && evbuffer_get_length(o) < REQ_HWM) {
        struct evbuffer_iovec v;
        size_t want = x->spool_len - x->spool_fed;
        if (want > SPOOL_STEP)
            want = SPOOL_STEP;
        if (evbuffer_reserve_space(o, (ev_ssize_t)want, &v, 1) < 1)
            return;
        ssize_t n = pread(x->spool_fd, v.iov_base, want, (off_t)x->spool_fed);
        if (n <= 0) {
            struct gw_error err;
            gw_error_set(&err, 503, "server_error", "spool_unavailable", NULL,
                         "The gateway could not read back the buffered upload");
            fail(x, &err);
            return;
        }
        v.iov_len = (size_t)n;
        evbuffer_commit_space(o, &v, 1);
        x->spool_fed += (uint64_t)n;
        x->up_sent += (uint64_t)n;
    }
}

/* Write the upstream request head into the upstream output. */
static void write_head(struct exchange *x)
{
    struct evbuffer *o = gw_upconn_output(x->up);
    const struct gw_config *cfg = x->cfg;
    evhtp_request_t *req = x->req;
    const unsigned char *q = req->uri->query_raw;
    struct gw_worker *w = x->w;
    size_t blen = strlen(cfg->upstream_base);
    evhtp_header_t *h;

    /* The upstream path is rebuilt from the route, not copied: it is canonical
     * (no trailing slash, an id already validated). A base ending in /v1, as
     * OpenAI SDKs take it, stands for the route's own /v1. */
    if (blen >= 3 && strcmp(cfg->upstream_base + blen - 3, "/v1") == 0)
        blen -= 3;
    evbuffer_add_printf(o, "%s %.*s/v1/videos", htparser_get_methodstr_m(req->method), (int)blen,
                        cfg->upstream_base);
    if (x->route.video_id.len > 0) {
        evbuffer_add(o, "/", 1);
        evbuffer_add(o, x->route.video_id.p, x->route.video_id.len);
    }
    if (x->route.id == GW_ROUTE_CONTENT)
        evbuffer_add(o, "/content", 8);
    else if (x->route.id == GW_ROUTE_REMIX)
        evbuffer_add(o, "/remix", 6);
    if (q != NULL && *q) {
        evbuffer_add(o, "?", 1);
        evbuffer_add(o, q, strlen((const char *)q));
    }
    evbuffer_add(o, " HTTP/1.1\r\n", 11);
    {
        int v6 = strchr(cfg->upstream_host, ':') != NULL;
        int dflt = cfg->upstream_port == (cfg->upstream_tls ? 443 : 80);
        evbuffer_add_printf(o, "Host: %s%s%s", v6 ? "[" : "", cfg->upstream_host, v6 ? "]" : "");
        if (!dflt)
            evbuffer_add_printf(o, ":%d", cfg->upstream_port);
        evbuffer_add(o, "\r\n", 2);
    }
    /* the client's key never goes upstream; one of ours does */
    x->upstream_key = gw_keypool_pick(&w->keys, now_ms());
    evbuffer_add(o, "Authorization: Bearer ", 22);
    evbuffer_add(o, cfg->upstream_keys[x->upstream_key], strlen(cfg->upstream_keys[x->upstream_key]));
    evbuffer_add(o, "\r\n", 2);
    evbuffer_add_printf(o, "X-Request-Id: %s\r\n", x->rid);
    TAILQ_FOREACH(h, req->headers_in, next)
    {
        if (is_hop_by_hop(h->key, h->klen))
            continue;
        evbuffer_add(o, h->key, h->klen);
        evbuffer_add(o, ": ", 2);
        evbuffer_add(o, h->val, h->vlen);
        evbuffer_add(o, "\r\n", 2);
    }
    if (x->framing == FRAME_CHUNKED)
        evbuffer_add(o, "Transfer-Encoding: chunked\r\n\r\n", 30);
    else if (x->framing == FRAME_SPOOL)
        evbuffer_add_printf(o, "Content-Length: %" PRIu64 "\r\n\r\n", x->spool_len);
    else if (x->up_cl > 0 || x->route.has_body)
        evbuffer_add_printf(o, "Content-Length: %" PRIu64 "\r\n\r\n", x->up_cl);
    else
        evbuffer_add(o, "\r\n", 2);
    x->head_sent = 1;
}

/* Move what is classified to the upstream output, framed as decided. */
static void flush_out(struct exchange *x)
{
    struct evbuffer *o = gw_upconn_output(x->up);
    size_t n = evbuffer_get_length(x->out);

    if (n == 0)
        return;
    if (x->framing == FRAME_CHUNKED) {
        evbuffer_add_printf(o, "%zx\r\n", n);
        evbuffer_add_buffer(o, x->out);
        evbuffer_add(o, "\r\n", 2);
    } else {
        evbuffer_add_buffer(o, x->out);
    }
    x->up_sent += n;
}

static void request_written(struct exchange *x)
{
    x->req_finished = 1;
    gw_upconn_request_sent(x->up);
    if (x->state == X_STREAM_REQ || x->state == X_CONNECT)
        set_state(x, X_AWAIT_RESP);
}

/*
 * Drive the request side as far as it can go now: classify what arrived,
 * decide the framing, write the head and the body upstream. Called on every
 * body piece, at the end of the body, on connect and when the upstream output
 * drains. GW_ERR with err when the request must be refused.
 */
static int pump_request(struct exchange *x, struct gw_error *err)
{
    int input_done;

    if (x->state == X_DONE)
        return GW_OK;
    /* 1. classify */
    switch (x->body) {
    case BODY_MULTIPART:
        if (scan_multipart(x, err) != GW_OK)
            return GW_ERR;
        if (x->body_done && !x->mp_finished) {
            if (finish_multipart(x, err) != GW_OK)
                return GW_ERR;
            x->mp_finished = 1;
        }
        break;
    case BODY_JSON:
        /* once, when the body is whole (the framing is decided right after), even
         * when it is empty: an empty chunked body must be refused, not forwarded */
        if (x->body_done && x->framing == FRAME_UNDECIDED && rewrite_json(x, err) != GW_OK)
            return GW_ERR;
        break;
    case BODY_RAW:
        evbuffer_add_buffer(x->out, x->in);
        break;
    }
    input_done = x->body_done && evbuffer_get_length(x->in) == 0;

    /* 2. decide the framing (multipart and JSON only) */
    if (decide_framing(x, input_done, err) != GW_OK)
        return GW_ERR;
    if (x->framing == FRAME_SPOOL) {
        if (spool_write(x, err) != GW_OK)
            return GW_ERR;
        if (!input_done || !x->connected)
            return GW_OK;
        if (!x->head_sent) {
            write_head(x);
            set_state(x, X_STREAM_REQ);
        }
        spool_feed(x);
        if (x->spool_fed == x->spool_len && !x->req_finished)
            request_written(x);
        return GW_OK;
    }
    if (x->framing == FRAME_UNDECIDED || !x->connected)
        return GW_OK;

    /* 3. send */
    if (!x->head_sent) {
        write_head(x);
        set_state(x, X_STREAM_REQ);
    }
    flush_out(x);
    if (input_done && !x->req_finished) {
        if (x->framing == FRAME_CHUNKED)
            evbuffer_add(gw_upconn_output(x->up), "0\r\n\r\n", 5);
        else if (x->up_sent != x->up_cl) {
            gw_log(GW_LOG_ERROR, "rid=%s body length %" PRIu64 " != announced %" PRIu64,
                   x->rid, x->up_sent, x->up_cl);
            return gw_error_set(err, 502, "upstream_error", "bad_gateway", NULL,
                                "The gateway could not frame the request body");
        }
        request_written(x);
    }
    return GW_OK;
}

/* ------------------------------------------------------------- upstream */

/* The upstream head is here and the client body is done: answer. Small bodies
 * of known length are sent whole at GW_UP_DONE; others are streamed. */
static void start_response(struct exchange *x)
{
    int64_t len = gw_upconn_content_length(x->up);

    if (!x->up_done && len >= 0 && len <= RESP_WHOLE_MAX)
        return; /* wait for the whole body (GW_UP_DONE) */
    x->status = x->up_status;
    if (x->up_done) {
        /* complete already: one write */
        evbuffer_add_buffer(x->resp, gw_upconn_body(x->up));
        x->bytes_out += evbuffer_get_length(x->resp);
        x->replied = 1;
        send_reply(x, x->up_status, 1, NULL, x->resp);
        return;
    }
    x->reply_started = 1;
    bufferevent_setwatermark(client_bev(x), EV_WRITE, RESP_LWM, 0);
    reply_head(x, x->up_status, 1, NULL, len);
    if (x->up_paused) { /* held while the client body was still coming */
        x->up_paused = 0;
        gw_upconn_pause_read(x->up, 0);
    }
    if (evbuffer_get_length(x->resp) > 0) {
        x->bytes_out += evbuffer_get_length(x->resp);
        if (x->reply_chunked)
            evhtp_send_reply_chunk(x->req, x->resp);
        else
            evhtp_send_reply_body(x->req, x->resp);
    }
    relay_body(x);
}

/* Move response body bytes to the client, pausing the upstream when the client
 * is slower than the upstream. */
static void relay_body(struct exchange *x)
{
    struct evbuffer *b = gw_upconn_body(x->up);
    size_t n = evbuffer_get_length(b);

    if (!x->reply_started) {
        /* small response, or the client body is not done yet: hold it, bounded */
        evbuffer_add_buffer(x->resp, b);
        if (!x->up_paused && evbuffer_get_length(x->resp) > RESP_HWM) {
            x->up_paused = 1;
            gw_upconn_pause_read(x->up, 1);
        }
        return;
    }
    if (n > 0) {
        x->bytes_out += n;
        if (x->reply_chunked)
            evhtp_send_reply_chunk(x->req, b);
        else
            evhtp_send_reply_body(x->req, b);
    }
    if (!x->up_paused &&
        evbuffer_get_length(bufferevent_get_output(client_bev(x))) > RESP_HWM) {
        x->up_paused = 1;
        gw_upconn_pause_read(x->up, 1);
    }
}

static void finish_response(struct exchange *x)
{
    if (x->reply_started) {
        x->replied = 1;
        if (x->reply_chunked)
            evhtp_send_reply_chunk_end(x->req);
        else
            end_reply(x);
    } else if (x->body_done) {
        start_response(x); /* sends the whole response */
    } else {
        /* the upstream answered before the client finished its body (an early
         * error, typically): relay it and close the client connection */
        close_after_reply(x);
        x->refused = 1;
        if (x->client_paused) {
            x->client_paused = 0;
            evhtp_request_resume(x->req);
        }
        start_response(x);
    }
}

/*
 * A pooled connection the upstream closed just as it was reused fails before any
 * response byte. Like nginx, try once more on a fresh connection - but only for
 * requests without a body (retrieve, content, list, delete): their request can be
 * written again, and a body already streamed cannot.
 */
static int retry_stale(struct exchange *x, struct gw_upconn *c)
{
    if (x->retried || !gw_upconn_reused(c) || x->up_status != 0 || x->route.has_body ||
        x->body_in > 0 || x->state == X_DONE)
        return 0;
    gw_log(GW_LOG_INFO, "rid=%s reused upstream connection failed (%s); retrying once",
           x->rid, gw_upconn_error(c)->message);
    x->retried = 1;
    gw_upconn_release(c);
    x->up = gw_upstream_lease(x->w->up, up_event, x);
    if (x->up == NULL)
        return 0;
    x->connected = 0;
    x->head_sent = 0;
    x->req_finished = 0;
    x->up_sent = 0;
    set_state(x, X_CONNECT);
    return 1;
}

/* Tell the key pool how the upstream took the key this request used. */
static void report_key(struct exchange *x, struct gw_upconn *c)
{
    int st = x->up_status;

    gw_keypool_report(&x->w->keys, x->upstream_key, st, gw_upconn_header(c, "Retry-After"),
                      now_ms());
    if (st == 401 || st == 403 || st == 429)
        gw_log(GW_LOG_WARN, "rid=%s upstream key #%u answered %d: it rests for %lld ms", x->rid,
               x->upstream_key + 1, st,
               (long long)(x->w->keys.rest_until[x->upstream_key] - now_ms()));
}

static void up_event(struct gw_upconn *c, enum gw_up_event ev, void *arg)
{
    struct exchange *x = arg;
    struct gw_error err;

    switch (ev) {
    case GW_UP_CONNECTED:
        x->connected = 1;
        if (pump_request(x, &err) != GW_OK) {
            fail(x, &err);
            return;
        }
        maybe_resume_client(x);
        break;
    case GW_UP_WRITABLE:
        if (x->framing == FRAME_SPOOL && x->head_sent) {
            spool_feed(x);
            if (x->state != X_DONE && x->spool_fed == x->spool_len && !x->req_finished)
                request_written(x);
            return;
        }
        if (!x->req_finished && pump_request(x, &err) != GW_OK) {
            fail(x, &err);
            return;
        }
        maybe_resume_client(x);
        break;
    case GW_UP_HEADERS:
        x->up_status = gw_upconn_status(c);
        report_key(x, c);
        set_state(x, X_STREAM_RESP);
        if (x->body_done)
            start_response(x);
        break;
    case GW_UP_BODY:
        relay_body(x);
        break;
    case GW_UP_DONE:
        x->up_done = 1;
        relay_body(x);
        finish_response(x);
        gw_upconn_release(c);
        x->up = NULL;
        set_state(x, X_DONE);
        break;
    case GW_UP_ERROR:
        err = *gw_upconn_error(c);
        if (retry_stale(x, c))
            return;
        gw_upconn_release(c);
        x->up = NULL;
        fail(x, &err);
        break;
    }
}

/* The client drained its output below RESP_LWM: read the upstream again. */
static evhtp_res on_write(evhtp_connection_t *conn, void *arg)
{
    evhtp_request_t *req = conn->request;
    struct exchange *x = req ? req->cbarg : NULL;

    if (x != NULL && x->up_paused && x->up != NULL &&
        evbuffer_get_length(bufferevent_get_output(conn->bev)) <= RESP_LWM) {
        x->up_paused = 0;
        gw_upconn_pause_read(x->up, 0);
    }
    return EVHTP_RES_OK;
}

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
    struct gw_worker *w = arg;
    struct timeval rtv;
    struct gw_access a;

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
    a.error = x->err_code;
    /* an error after the reply started means the reply was cut (reply_error) */
    a.completed = x->replied && x->state == X_DONE && !(x->reply_started && x->err_code);
    gw_accesslog_write(&a);
    /* the next request on this connection gets the idle read timeout back */
    rtv.tv_sec = w->cfg->client_timeout_ms / 1000;
    rtv.tv_usec = (w->cfg->client_timeout_ms % 1000) * 1000;
    bufferevent_set_timeouts(evhtp_request_get_bev(req), &rtv, &rtv);
    exchange_free(x);
    return EVHTP_RES_OK;
}

/* ------------------------------------------------------------- wiring */

void gw_proxy_attach(evhtp_connection_t *conn, struct gw_worker *w)
{
    evhtp_connection_set_hook(conn, evhtp_hook_on_headers, (evhtp_hook)on_headers, w);
    evhtp_connection_set_hook(conn, evhtp_hook_on_read, (evhtp_hook)on_read, w);
    evhtp_connection_set_hook(conn, evhtp_hook_on_request_fini, (evhtp_hook)on_fini, w);
    evhtp_connection_set_hook(conn, evhtp_hook_on_write, (evhtp_hook)on_write, w);
}

void gw_proxy_request_cb(evhtp_request_t *req, void *arg)
{
    on_request_complete(req, arg);
}

int gw_proxy_in_body(evhtp_connection_t *conn)
{
    struct exchange *x;

    if (conn->request == NULL || (x = conn->request->cbarg) == NULL)
        return 0;
    return !x->body_done;
}

uint64_t gw_proxy_body_remaining(evhtp_connection_t *conn)
{
    struct exchange *x;

    if (conn->request == NULL || (x = conn->request->cbarg) == NULL || x->body_done ||
        x->client_cl <= 0 || x->body_in >= (uint64_t)x->client_cl)
        return 0;
    return (uint64_t)x->client_cl - x->body_in;
}

void gw_proxy_body_error(evhtp_connection_t *conn)
{
    struct exchange *x = conn->request ? conn->request->cbarg : NULL;
    struct gw_error err;
    char head[256], body[512];
    struct iovec iov[2];
    struct msghdr m;

    if (x == NULL)
        return;
    /* libevhtp frees the connection, and its output with it, as soon as this read
     * returns: what is queued (an early answer, say) goes straight to the socket,
     * and so does the 400 when nothing was answered yet */
    if (x->replied || x->reply_started) {
        /* a bufferevent's output is frozen at its front: only the bufferevent
         * may drain it, so thaw it for this last write */
        struct evbuffer *out = bufferevent_get_output(conn->bev);
        evbuffer_unfreeze(out, 1);
        (void)evbuffer_write(out, bufferevent_getfd(conn->bev));
        evbuffer_freeze(out, 1);
        return;
    }
    gw_error_set(&err, 400, "invalid_request_error", "invalid_request", NULL,
                 "Malformed chunked request body");
    gw_log(GW_LOG_INFO, "rid=%s key=%s route=%s status=400: %s", x->rid,
           x->key ? x->key->name : "-", x->route.name ? x->route.name : "-", err.message);
    iov[1].iov_base = body;
    iov[1].iov_len = gw_error_json(&err, body, sizeof(body));
    iov[0].iov_base = head;
    iov[0].iov_len = (size_t)snprintf(head, sizeof(head),
                                      "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json"
                                      "\r\nX-Request-Id: %s\r\nConnection: close\r\n"
                                      "Content-Length: %zu\r\n\r\n",
                                      x->rid, iov[1].iov_len);
    memset(&m, 0, sizeof(m));
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    (void)!sendmsg(bufferevent_getfd(conn->bev), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    x->replied = 1;
    x->status = 400;
    x->err_code = err.code;
    if (x->up != NULL) {
        gw_upconn_release(x->up);
        x->up = NULL;
    }
}

void gw_proxy_refuse_head(evhtp_connection_t *conn, const struct gw_error *err)
{
    static const char *const reasons[] = {
        [400 - 400] = "Bad Request", [413 - 400] = "Payload Too Large",
        [31] = "Request Header Fields Too Large", [101] = "Not Implemented",
        [105] = "HTTP Version Not Supported",
    };
    char body[512];
    size_t n = gw_error_json(err, body, sizeof(body));
    unsigned idx = (unsigned)(err->status - 400);
    const char *reason = idx < GW_ARRAY_LEN(reasons) && reasons[idx] ? reasons[idx] : "Error";

    gw_log(GW_LOG_INFO, "status=%d code=%s: %s (before parsing)", err->status,
           err->code ? err->code : "-", err->message);
    bufferevent_disable(conn->bev, EV_READ);
    evbuffer_add_printf(bufferevent_get_output(conn->bev),
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                        err->status, reason, n);
    bufferevent_write(conn->bev, body, n);
    /* libevhtp frees a connection without a request once its output is written;
     * marking it paused keeps its read callback from parsing anything else */
    conn->flags |= EVHTP_CONN_FLAG_PAUSED;
}
