/*
 * reply.c - answers to the client: reply heads written straight into the
 * client's output (no per-header allocation), whole replies, lingering early
 * replies, OpenAI error bodies, and the gateway's own routes.
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h> /* ev_write: flush_now */
#include <event2/event.h>

#include "exchange.h"
#include "httptok.h"
#include "log.h"
#include "ops.h"

/* ---------------------------------------------------------------- replies */

const char *gw_reply_reason(int status)
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

/* Whether p[0..len) holds one of the configured upstream keys: a memmem per
 * key, for the few short strings of a response head. */
static int holds_upstream_key(const struct gw_config *cfg, const char *p, size_t len)
{
    for (unsigned i = 0; i < cfg->nupstream_keys; i++) {
        size_t kl = strlen(cfg->upstream_keys[i]);

        if (kl > 0 && kl <= len && memmem(p, len, cfg->upstream_keys[i], kl) != NULL)
            return 1;
    }
    return 0;
}

/*
 * Whether the upstream response header k: v reaches the client. Not: the
 * hop-by-hop and framing headers (gw_proxy_hop_by_hop), a header that one of
 * the upstream's Connection headers names (RFC 9110 §7.6.1: hop-by-hop by
 * declaration, whatever its name), and a header holding one of the gateway's
 * upstream keys (a provider echoing the Authorization it received; keys never
 * reach a client, README "Security"). At most 64 headers: the quadratic
 * Connection lookup stays a few length comparisons per header.
 */
static int relayable(struct exchange *x, struct gw_str k, struct gw_str v)
{
    unsigned n = gw_upconn_header_count(x->up);

    if (gw_proxy_hop_by_hop(k.p, k.len))
        return 0;
    for (unsigned j = 0; j < n; j++) {
        struct gw_str ck, cv;

        gw_upconn_header_at(x->up, j, &ck, &cv);
        if (ck.len == 10 && strncasecmp(ck.p, "Connection", 10) == 0 &&
            gw_httptok_has(cv, k.p, k.len))
            return 0;
    }
    if (holds_upstream_key(x->cfg, k.p, k.len) || holds_upstream_key(x->cfg, v.p, v.len)) {
        gw_log(GW_LOG_WARN, "rid=%s an upstream response header held an upstream key: "
                            "not relayed", x->rid);
        return 0;
    }
    return 1;
}

/*
 * Write the reply head straight into the client's output. libevhtp's own
 * reply path copies every header into a heap key/value list and formats the
 * head through a scratch buffer; relayed headers are written here from the
 * upstream's header block without any allocation. `length` < 0: unknown
 * (chunked for HTTP/1.1, close-delimited for HTTP/1.0: libevhtp-notes trap 9).
 * `upstream`: relay the upstream's end-to-end headers (relayable() says which);
 * `allow`: an Allow value.
 */
/*
 * OpenAI's rate-limit headers on every answer to a create of a key with an rpm,
 * so that the SDKs pace themselves; on the gateway's own 429 also Retry-After
 * (whole seconds, rounded up) and retry-after-ms, which the SDKs honour. An
 * upstream 429 keeps the upstream's Retry-After.
 */
static void rate_headers(struct exchange *x, struct evbuffer *o, int status, int upstream)
{
    char reset[GW_GCRA_FMT_MAX];

    if (x->rate.limit > 0) {
        gw_gcra_fmt_reset(x->rate.reset_ms, reset, sizeof(reset));
        evbuffer_add_printf(o, "x-ratelimit-limit-requests: %u\r\n"
                               "x-ratelimit-remaining-requests: %u\r\n"
                               "x-ratelimit-reset-requests: %s\r\n",
                            x->rate.limit, x->rate.remaining, reset);
    }
    if (status == 429 && !upstream && x->retry_after_ms > 0)
        evbuffer_add_printf(o, "Retry-After: %" PRId64 "\r\nretry-after-ms: %" PRId64 "\r\n",
                            gw_gcra_retry_after_s(x->retry_after_ms), x->retry_after_ms);
}

void gw_reply_head(struct exchange *x, int status, int upstream, const char *allow,
                       int64_t length)
{
    struct evbuffer *o = bufferevent_get_output(gw_proxy_client_bev(x));
    evhtp_request_t *req = x->req;
    int http10 = req->proto == EVHTP_PROTO_10;

    gw_exchange_release_slot(x);
    if (length < 0 && http10)
        req->flags &= ~EVHTP_REQ_FLAG_KEEPALIVE;
    evbuffer_add_printf(o, "HTTP/1.%c %d %s\r\n", http10 ? '0' : '1', status,
                        gw_reply_reason(status));
    if (upstream) {
        unsigned n = gw_upconn_header_count(x->up);
        for (unsigned i = 0; i < n; i++) {
            struct gw_str k, v;
            gw_upconn_header_at(x->up, i, &k, &v);
            if (!relayable(x, k, v))
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
    rate_headers(x, o, status, upstream);
    if (x->idem_replayed)
        evbuffer_add(o, "Idempotent-Replayed: true\r\n", 27);
    if (length >= 0) {
        evbuffer_add_printf(o, "Content-Length: %" PRId64 "\r\n", length);
    } else if (!http10) {
        evbuffer_add(o, "Transfer-Encoding: chunked\r\n", 28);
        req->flags |= EVHTP_REQ_FLAG_CHUNKED; /* evhtp_send_reply_chunk() frames */
        x->reply_chunked = 1;
    }
    if (gw_readyz_is_draining()) /* shutting down: the client must not reuse this one */
        req->flags &= ~EVHTP_REQ_FLAG_KEEPALIVE;
    if (!http10 && !(req->flags & EVHTP_REQ_FLAG_KEEPALIVE))
        evbuffer_add(o, "Connection: close\r\n", 19);
    else if (http10 && (req->flags & EVHTP_REQ_FLAG_KEEPALIVE))
        evbuffer_add(o, "Connection: keep-alive\r\n", 24);
    evbuffer_add(o, "\r\n", 2);
}

/* Stop keep-alive for this connection: the request body was not (fully) read. */
void gw_reply_close_after(struct exchange *x)
{
    x->req->flags &= ~EVHTP_REQ_FLAG_KEEPALIVE;
}

/* Send a whole reply: head, then body (moved). While the client is still sending its
 * body, closing right after the reply makes the kernel reset the connection over the
 * unread bytes, and a client that writes while it reads (Node's fetch: the OpenAI SDK's
 * streamed uploads) loses the reply to EPIPE. So the reply is not ended yet (libevhtp
 * closes only once the request is finished): the rest of the body is read and dropped,
 * and gw_reply_end_linger() ends it when the body is in, or when more than max_body came. */
void gw_reply_send(struct exchange *x, int status, int upstream, const char *allow,
                   struct evbuffer *body)
{
    gw_reply_head(x, status, upstream, allow, (int64_t)evbuffer_get_length(body));
    /* the answer to a HEAD has a head only (RFC 9110 9.3.2): a body would be read
     * as the start of the next response */
    if (x->req->method == htp_method_HEAD)
        evbuffer_drain(body, evbuffer_get_length(body));
    else
        bufferevent_write_buffer(gw_proxy_client_bev(x), body);
    if (x->body_done) {
        gw_reply_end(x);
        return;
    }
    x->linger = 1;
}

/* Write what the reply left in the client's output now, as nginx does, rather
 * than on the next loop pass: a bufferevent writes only from its write event,
 * so each answer cost an epoll_ctl to watch EPOLLOUT, a pass to see it and an
 * epoll_ctl to stop watching (docs/benchmarks.md, "The answer written at
 * once"). If it all went, the write event added meanwhile is taken back: with
 * the loops' epoll changelist the add and the delete cancel out before they
 * reach the kernel. What does not go (a full socket buffer, an error) stays
 * for the write event, which carries on as before and reports errors. Only
 * on a plain socket: a TLS connection's bufferevent has its own writes. The
 * output's start is frozen by the bufferevent outside its own writes. */
static void flush_now(struct exchange *x, struct bufferevent *bev)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    evhtp_connection_t *conn = evhtp_request_get_connection(x->req);
    int n;

    if (evbuffer_get_length(out) == 0 || conn == NULL || conn->ssl != NULL)
        return;
    evbuffer_unfreeze(out, 1);
    n = evbuffer_write(out, bufferevent_getfd(bev));
    evbuffer_freeze(out, 1);
    if (n > 0 && evbuffer_get_length(out) == 0)
        event_del(&bev->ev_write);
}

/* End a reply. libevhtp (evhtp_send_reply_end) only marks the request
 * finished here and recycles or closes the connection from its write callback, which
 * never runs again if the output is already flushed: then run it ourselves (deferred,
 * never inside libevhtp's parser). Only then: libevhtp 1.2.18's write callback frees
 * the connection when it runs with no request, so a second run after the natural one
 * would kill a keep-alive connection. */
void gw_reply_end(struct exchange *x)
{
    struct bufferevent *bev = gw_proxy_client_bev(x);

    evhtp_send_reply_end(x->req);
    flush_now(x, bev);
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

void gw_reply_end_linger(struct exchange *x)
{
    x->linger = 0;
    gw_reply_end(x);
}

/* Send a complete reply with a JSON body from buf (moved). */
void gw_reply_json(struct exchange *x, int status, struct evbuffer *buf, const char *allow)
{
    evhtp_request_t *req = x->req;

    if (!x->body_done) {
        gw_reply_close_after(x);
        x->refused = 1;
        if (x->client_paused) {
            x->client_paused = 0;
            evhtp_request_resume(req);
        }
    }
    x->bytes_out += evbuffer_get_length(buf);
    x->status = status;
    x->replied = 1;
    gw_reply_send(x, status, 0, allow, buf);
}

/* Answer with an OpenAI error body, or cut the connection when a reply is
 * already under way (the client then sees a truncated response). */
void gw_reply_error(struct exchange *x, const struct gw_error *err)
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
        shutdown(bufferevent_getfd(gw_proxy_client_bev(x)), SHUT_RDWR);
        return;
    }
    gw_log(err->status >= 500 ? GW_LOG_WARN : GW_LOG_INFO,
           "rid=%s key=%s route=%s status=%d code=%s: %s", x->rid, x->key ? x->key->name : "-",
           x->route.name ? x->route.name : "-", err->status, err->code ? err->code : "-",
           err->message);
    n = gw_error_json(err, body, sizeof(body));
    struct evbuffer *buf = evbuffer_new();
    evbuffer_add(buf, body, n);
    gw_reply_json(x, err->status, buf,
               err->status == 405 && strstr(err->message, "accepts ") != NULL
                   ? strstr(err->message, "accepts ") + 8
                   : NULL);
    evbuffer_free(buf);
}

/* ------------------------------------------------------ gateway's own routes */

void gw_reply_healthz(struct exchange *x)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, "{\"status\":\"ok\"}\n", 16);
    gw_reply_json(x, 200, b, NULL);
    evbuffer_free(b);
}

/* 503 with the reason, as an OpenAI error body, logged at debug only: a load
 * balancer asks every second, and the reason is already logged where it began. */
void gw_reply_readyz(struct exchange *x)
{
    struct gw_error err;
    char why[200], body[512];
    struct evbuffer *b = evbuffer_new();

    if (gw_readyz_check(why, sizeof(why)) == GW_OK) {
        evbuffer_add(b, "{\"status\":\"ready\"}\n", 19);
        gw_reply_json(x, 200, b, NULL);
    } else {
        gw_error_set(&err, 503, "server_error", "not_ready", NULL, "Not ready: %s", why);
        x->err_code = err.code;
        evbuffer_add(b, body, gw_error_json(&err, body, sizeof(body)));
        gw_reply_json(x, 503, b, NULL);
    }
    evbuffer_free(b);
}

/* What a client may do with a model's videos besides creating them (issue 9): the
 * catalog's edits, extensions and extension seconds, then the entry's closing brace. */
static void models_caps(struct evbuffer *b, const struct gw_model *m)
{
    evbuffer_add_printf(b, ",\"edits\":%s,\"extensions\":%s", m->edits ? "true" : "false",
                        m->extensions ? "true" : "false");
    if (m->extensions) {
        evbuffer_add_printf(b, ",\"extend_seconds\":[");
        for (unsigned i = 0; i < m->nextend_seconds; i++)
            evbuffer_add_printf(b, "%s\"%s\"", i ? "," : "", m->extend_seconds[i]);
        evbuffer_add_printf(b, "]");
    }
    evbuffer_add_printf(b, "}");
}

void gw_reply_models(struct exchange *x)
{
    const struct gw_catalog *cat = &x->cfg->catalog;
    struct evbuffer *b = evbuffer_new();
    int first = 1;

#define MODEL_ENTRY(nm, m)                                                                \
    do {                                                                                  \
        evbuffer_add_printf(b, "%s{\"id\":\"%s\",\"object\":\"model\",\"created\":0,"     \
                               "\"owned_by\":\"videogw\"", first ? "" : ",", (nm));          \
        models_caps(b, (m));                                                              \
        first = 0;                                                                        \
    } while (0)

    evbuffer_add_printf(b, "{\"object\":\"list\",\"data\":[");
    for (unsigned i = 0; i < cat->naliases; i++)
        MODEL_ENTRY(cat->aliases[i].from, cat->aliases[i].to);
    for (unsigned i = 0; i < cat->nmodels; i++) {
        int shadowed = 0;
        for (unsigned j = 0; j < cat->naliases; j++)
            shadowed |= strcmp(cat->aliases[j].from, cat->models[i].name) == 0;
        if (!shadowed)
            MODEL_ENTRY(cat->models[i].name, &cat->models[i]);
    }
#undef MODEL_ENTRY
    evbuffer_add_printf(b, "]}\n");
    gw_reply_json(x, 200, b, NULL);
    evbuffer_free(b);
}
