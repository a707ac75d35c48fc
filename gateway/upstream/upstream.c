/*
 * upstream.c - the HTTP/1.1 client to the video service: one connection per
 * lease, a keep-alive pool per event loop, responses parsed by http_parser.
 * The contract is in upstream.h; this comment says how it is kept.
 *
 * This file holds the pool and the lease API: gw_upstream_new/free, a lease
 * taken from the pool or made afresh, and its end at release. The rest of the
 * client is split by concern, the structs it shares being in upstream_int.h:
 *   upconn.c   one connection: connecting, the hand-over, reading the response,
 *              its timer; with upwrite.c every libevent entry point
 *   upwrite.c  writing the request: direct writes, the write event, WRITABLE
 *   updns.c    the host-name lookup (evdns) and the addresses it gave
 *   upresp.c   the response: http_parser callbacks, the header block, framing
 *   uptls.c    the TLS context and each connection's TLS setup and failures
 *   uptls_io.c TLS on the connection's socket: handshake, decrypting into the
 *              body, encrypting into the output (no bufferevent_openssl)
 *
 * Ownership. A struct gw_upconn is one TCP (or TLS) connection and lives as
 * long as it: it is allocated when no idle connection is pooled and freed when
 * the connection closes. Everything per response (parser, header block, body
 * buffer) is inside it and reset at each lease, so a reused connection
 * allocates nothing per request. The bufferevent owns the socket
 * (BEV_OPT_CLOSE_ON_FREE); the connection owns its SSL (c->ssl).
 *
 * Callbacks and release. Every entry from libevent (kick, timer, bufferevent
 * callbacks, the DNS answer) is bracketed by gw_upstream_conn_enter() and
 * gw_upstream_conn_leave(). gw_upconn_release() called inside a callback only
 * marks the connection; gw_upstream_conn_leave() finishes it when the
 * outermost entry unwinds. After release the proxy's callback is forgotten, so
 * no callback can follow it.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>

#include "metrics.h"
#include "upstream_int.h"

#define UP_POOL_IDLE_MS 15000       /* an idle pooled connection is closed after this */

/* -------------------------------------------------------------------- pool */

/* Take c out of the idle list; it stays open: the caller frees or leases it. */
void gw_upstream_pool_remove(struct gw_upconn *c)
{
    TAILQ_REMOVE(&c->u->idle, c, link);
    c->u->nidle--;
    gw_m_up_idle(c->u->nidle);
}

/* Anything from the server on an idle connection (data, EOF, reset) means it
 * cannot carry another request: drop it. */
static void pool_read_cb(struct bufferevent *bev, void *arg)
{
    struct gw_upconn *c = arg;

    gw_upstream_pool_remove(c);
    gw_upconn_free(c);
}

static void pool_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct gw_upconn *c = arg;

    gw_upstream_pool_remove(c);
    gw_upconn_free(c);
}

static void pool_put(struct gw_upconn *c)
{
    struct gw_upstream *u = c->u;

    if (u->nidle >= (unsigned)u->cfg->pool_size) {
        struct gw_upconn *oldest = TAILQ_LAST(&u->idle, conn_list);

        gw_upstream_pool_remove(oldest);
        gw_upconn_free(oldest);
    }
    c->phase = PH_IDLE;
    c->cb = NULL;
    c->arg = NULL;
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
    if (c->rev != NULL) {
        /* c->rev stays on and watches the idle connection (sock_read_cb);
         * the bufferevent is left as it is: its reading is never on, its
         * writing is off while the output is empty. */
        if (c->wpending) {
            bufferevent_disable(c->bev, EV_WRITE);
            c->wpending = 0;
        }
        event_add(c->rev, NULL);
        event_base_gettimeofday_cached(u->base, &c->pooled_at);
    } else {
        bufferevent_setcb(c->bev, pool_read_cb, NULL, pool_event_cb, c);
        bufferevent_set_timeouts(c->bev, NULL, NULL);
        bufferevent_disable(c->bev, EV_WRITE);
        bufferevent_enable(c->bev, EV_READ);
    }
    gw_upconn_timer_set(c, UP_POOL_IDLE_MS);
    TAILQ_INSERT_HEAD(&u->idle, c, link);
    u->nidle++;
    gw_m_up_idle(u->nidle);
}

/* ------------------------------------------------------------------- lease */

/* Per-lease state back to its initial values. */
static void lease_reset(struct gw_upconn *c, gw_up_cb cb, void *arg)
{
    c->cb = cb;
    c->arg = arg;
    c->released = 0;
    c->reused = 0;
    c->paused = 0;
    c->request_sent = 0;
    c->no_body = 0;
    c->head_done = 0;
    c->eof = 0;
    c->keepalive = 0;
    c->write_failed = 0;
    c->in_value = 0;
    c->parse_failed = 0;
    c->done = 0;
    c->drained = 0;
    c->stale = 0;
    c->handover = 0;
    c->why[0] = '\0';
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    c->stop = STOP_NONE;
    c->rs = RS_HEAD;
    c->body_left = 0;
    c->rx = 0;
    c->content_length = -1;
    c->status = 0;
    c->nhdrs = 0;
    c->head_len = 0;
    memset(&c->err, 0, sizeof(c->err));
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
}

/* The lease ends (release at depth 0): back to the pool only when the exchange
 * is cleanly over on both sides, otherwise closed. */
static void conn_finish(struct gw_upconn *c)
{
    struct gw_upstream *u = c->u;
    int reuse = c->phase == PH_ACTIVE && c->rs == RS_DONE && c->request_sent &&
                c->keepalive && !c->write_failed && !c->eof && c->bev != NULL &&
                u->cfg->pool_size > 0 &&
                gw_upconn_output_pending(c) == 0 &&
                evbuffer_get_length(bufferevent_get_input(c->bev)) == 0;

    if (c->phase == PH_RESOLVING)
        TAILQ_REMOVE(&u->waiting, c, link);
    event_del(c->kick);
    event_del(c->timer);
    event_del(c->flush);
    if (reuse)
        pool_put(c);
    else
        gw_upconn_free(c);
}

/* "Callbacks and release" in the top comment: every entry from libevent on c's
 * behalf (upconn.c, updns.c) begins with enter and ends with leave. */
void gw_upstream_conn_enter(struct gw_upconn *c)
{
    c->depth++;
}

void gw_upstream_conn_leave(struct gw_upconn *c)
{
    if (--c->depth == 0 && c->released)
        conn_finish(c);
}

/* -------------------------------------------------------------- public API */

struct gw_upstream *gw_upstream_new(struct event_base *base, const struct gw_config *cfg,
                                    SSL_CTX *ssl_ctx)
{
    struct gw_upstream *u = calloc(1, sizeof(*u));
    const char *h = cfg->upstream_host ? cfg->upstream_host : "";
    size_t hl = strlen(h);

    if (u == NULL)
        return NULL;
    u->base = base;
    u->cfg = cfg;
    u->ssl_ctx = cfg->upstream_tls ? ssl_ctx : NULL;
    TAILQ_INIT(&u->waiting);
    TAILQ_INIT(&u->idle);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof(u->host) || (cfg->upstream_tls && u->ssl_ctx == NULL))
        goto fail;
    memcpy(u->host, h, hl);
    u->host[hl] = '\0';

    if (gw_updns_init(u) != GW_OK)
        goto fail;
    return u;
fail:
    free(u);
    return NULL;
}

void gw_upstream_free(struct gw_upstream *u)
{
    struct gw_upconn *c;

    if (u == NULL)
        return;
    while ((c = TAILQ_FIRST(&u->idle)) != NULL) {
        gw_upstream_pool_remove(c);
        gw_upconn_free(c);
    }
    gw_updns_free(u);
    SSL_SESSION_free(u->session);
    free(u);
}

unsigned gw_upstream_idle_count(const struct gw_upstream *u)
{
    return u->nidle;
}

struct gw_upconn *gw_upstream_lease(struct gw_upstream *u, gw_up_cb cb, void *arg)
{
    struct gw_upconn *c = TAILQ_FIRST(&u->idle);

    if (c != NULL) {
        gw_upstream_pool_remove(c);
        event_del(c->timer);
        /* Quiet until the kick checks it is still alive and hands it over.
         * Over plain TCP c->rev stays on and marks it stale if anything comes. */
        if (c->rev == NULL) {
            bufferevent_disable(c->bev, EV_READ | EV_WRITE);
            gw_upconn_setcb(c);
        }
        c->pooled = 1;
    } else {
        c = gw_upconn_new(u);
        if (c == NULL)
            return NULL;
        c->pooled = 0;
    }
    lease_reset(c, cb, arg);
    gw_m_up_busy(1);
    c->phase = PH_START;
    if (!c->pooled)
        gw_upconn_timer_set(c, u->cfg->connect_timeout_ms);
    event_active(c->kick, EV_TIMEOUT, 1);
    return c;
}

int gw_upconn_reused(const struct gw_upconn *c)
{
    return c->reused;
}

void gw_upconn_release(struct gw_upconn *c)
{
    c->released = 1;
    gw_m_up_busy(-1);
    c->cb = NULL;
    c->arg = NULL;
    if (c->depth == 0)
        conn_finish(c);
}
