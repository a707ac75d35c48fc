/*
 * upwrite.c - writing the request to one upstream connection: the output the
 * proxy fills (the bufferevent's, or c->plain over TLS, encrypted here through
 * uptls_io.c), the direct writes of c->flush, the bufferevent's write event for
 * what the socket refused, and GW_UP_WRITABLE. The connection, its reading and
 * its "Plain TCP" design are upconn.c's (see its top comment).
 */
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "upstream_int.h"

/* Bytes were added to the output (c->plain over TLS). Written by c->flush
 * later in this loop pass (so that what the proxy adds in one callback goes
 * out in one writev), unless the bufferevent is already waiting to write. */
void gw_upconn_out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct gw_upconn *c = arg;

    if (info->n_added > 0 && !c->wpending && c->phase == PH_ACTIVE)
        event_active(c->flush, EV_TIMEOUT, 1);
}

/* A socket bufferevent keeps its output's front frozen, so that only its own
 * write event drains it, and evbuffer_write_atmost() refuses a frozen buffer
 * (-1, nothing written). So the front is thawed for this write: without it,
 * every "direct" write failed and went out a loop pass later through the
 * write event, between two epoll_ctl calls (docs/benchmarks.md, "Direct
 * writes that never were"). */
int gw_upconn_write_now(struct gw_upconn *c, ssize_t max)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    int n;

    evbuffer_unfreeze(out, 1);
    n = evbuffer_write_atmost(out, bufferevent_getfd(c->bev), max);
    evbuffer_freeze(out, 1);
    return n;
}

/* TLS: encrypt c->plain into the output, up to max bytes ahead of the socket.
 * GW_ERR when the SSL refuses (it failed reading: the read side reports that;
 * or out of memory): like a socket that stopped taking the request, the rest
 * stays unsent (c->write_failed), and no event is delivered from here, since
 * gw_upconn_flush runs inside the proxy's own calls. */
static int tls_encrypt(struct gw_upconn *c, size_t max)
{
    if (c->ssl == NULL || gw_uptls_io_encrypt(c, max) == GW_OK)
        return GW_OK;
    c->write_failed = 1;
    if (!c->head_done && !c->request_sent)
        gw_upconn_timer_set(c, c->u->cfg->response_timeout_ms);
    return GW_ERR;
}

/* Write the output straight to the socket: at most max bytes (-1: all) per
 * writev, over TLS encrypting UP_WRITE_MAX bytes at a time, up to max in all.
 * What the socket refuses (a full socket buffer, an error) is left to the
 * bufferevent's write event (c->wpending). Returns the bytes written. */
static ssize_t conn_write(struct gw_upconn *c, ssize_t max)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    ssize_t total = 0;
    int n;

    for (;;) {
        if (tls_encrypt(c, UP_WRITE_MAX) != GW_OK)
            return total;
        n = gw_upconn_write_now(c, max < 0 ? -1 : max - total);
        if (n > 0)
            total += n;
        if (evbuffer_get_length(out) > 0) {
            c->wpending = 1;
            bufferevent_enable(c->bev, EV_WRITE);
            return total;
        }
        if (c->plain == NULL || evbuffer_get_length(c->plain) == 0 || n <= 0 ||
            (max >= 0 && total >= max))
            break;
    }
    if (c->plain != NULL && evbuffer_get_length(c->plain) > 0)
        event_active(c->flush, EV_TIMEOUT, 1); /* the rest in the next pass */
    return total;
}

/* Write the output straight to the socket, without the epoll_ctl pair that
 * turning the bufferevent's write event on and off costs per request (see the
 * top comment); errors are reported to event_cb as before, and gw_upconn_write_cb turns
 * the write event off once the output is empty. GW_UP_WRITABLE as the
 * bufferevent would deliver it: after a write that leaves the output at or
 * below the low watermark. */
void gw_upconn_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_upconn *c = arg;
    ssize_t n;

    gw_upstream_conn_enter(c);
    if (c->phase == PH_ACTIVE && c->rev != NULL && !c->wpending && !c->write_failed) {
        n = conn_write(c, UP_WRITE_MAX);
        if (n > 0 && !up_gone(c) && gw_upconn_output_pending(c) <= UP_WRITE_LOWAT)
            up_deliver(c, GW_UP_WRITABLE);
    }
    gw_upstream_conn_leave(c);
}

/* The output written now rather than later in the pass (see gw_upconn_flush
 * in upstream.h). Like gw_upconn_flush_cb, what the socket refuses is left to the
 * bufferevent's write event; unlike it, no GW_UP_WRITABLE: the caller is the
 * writer. */
void gw_upconn_flush(struct gw_upconn *c)
{
    if (c->phase != PH_ACTIVE || c->rev == NULL || c->wpending || c->write_failed)
        return;
    conn_write(c, -1);
}

/* Output fell to the low watermark: the proxy decides whether it has more.
 * Over TLS the output is topped up from c->plain first, the write event still
 * on. */
void gw_upconn_write_cb(struct bufferevent *bev, void *arg)
{
    struct gw_upconn *c = arg;

    gw_upstream_conn_enter(c);
    if (c->phase == PH_ACTIVE && !c->write_failed)
        tls_encrypt(c, UP_WRITE_MAX);
    if (c->wpending && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        bufferevent_disable(bev, EV_WRITE); /* direct writes again */
        c->wpending = 0;
    }
    if (c->phase == PH_ACTIVE && !c->write_failed)
        up_deliver(c, GW_UP_WRITABLE);
    gw_upstream_conn_leave(c);
}

struct evbuffer *gw_upconn_output(struct gw_upconn *c)
{
    if (c->plain != NULL)
        return c->plain;
    return c->bev != NULL ? bufferevent_get_output(c->bev) : NULL;
}

size_t gw_upconn_output_pending(const struct gw_upconn *c)
{
    return (c->bev != NULL ? evbuffer_get_length(bufferevent_get_output(c->bev)) : 0) +
           (c->plain != NULL ? evbuffer_get_length(c->plain) : 0);
}

void gw_upconn_request_sent(struct gw_upconn *c)
{
    c->request_sent = 1;
    if (c->phase == PH_ACTIVE && !c->head_done)
        gw_upconn_timer_set(c, c->u->cfg->response_timeout_ms);
}

void gw_upconn_start_request(struct gw_upconn *c, const struct gw_config *cfg,
                             const char *method, struct gw_str tail, struct gw_str query,
                             unsigned key)
{
    struct evbuffer *o = gw_upconn_output(c);
    size_t blen = strlen(cfg->upstream_base);
    int v6 = strchr(cfg->upstream_host, ':') != NULL;

    if (blen >= 3 && strcmp(cfg->upstream_base + blen - 3, "/v1") == 0)
        blen -= 3;
    evbuffer_add_printf(o, "%s %.*s/v1/videos", method, (int)blen, cfg->upstream_base);
    evbuffer_add(o, tail.p, tail.len);
    if (query.len > 0) {
        evbuffer_add(o, "?", 1);
        evbuffer_add(o, query.p, query.len);
    }
    evbuffer_add_printf(o, " HTTP/1.1\r\nHost: %s%s%s", v6 ? "[" : "", cfg->upstream_host,
                        v6 ? "]" : "");
    if (cfg->upstream_port != (cfg->upstream_tls ? 443 : 80))
        evbuffer_add_printf(o, ":%d", cfg->upstream_port);
    evbuffer_add(o, "\r\nAuthorization: Bearer ", 24);
    evbuffer_add(o, cfg->upstream_keys[key], strlen(cfg->upstream_keys[key]));
    evbuffer_add(o, "\r\n", 2);
}
