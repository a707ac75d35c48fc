/*
 * upconn.c - one upstream connection: connecting (to the addresses of
 * updns.c, with the TLS setup of uptls.c and the handshake of uptls_io.c), the
 * hand-over of a pooled connection, reading the response (parsed by upresp.c),
 * and the connection's one timer. Writing the request is upwrite.c's. Every
 * libevent entry point of a connection is in these two files. The overview is
 * in upstream.c, the structs in upstream_int.h.
 *
 * Bufferevent options: BEV_OPT_CLOSE_ON_FREE only. BEV_OPT_DEFER_CALLBACKS
 * would cost an extra trip through the loop per read and per write, and it
 * buys nothing here: none of the calls the proxy makes into this file
 * (writing to the output, enable/disable, pause, release) runs a bufferevent
 * callback synchronously, and the two places where libevent itself would
 * (a connect that succeeds or fails at once) are deferred by libevent anyway.
 * Re-entrancy is handled by `depth` (gw_upstream_conn_enter/leave in
 * upstream.c), not by deferral. No BEV_OPT_THREADSAFE: an upstream belongs to
 * one loop.
 *
 * Timeouts, one timer per connection (c->timer), by phase:
 *   lease .. CONNECTED          connect_timeout_ms (DNS + TCP + TLS)   -> 504
 *   request_sent .. head        response_timeout_ms, not extended by
 *                               partial head bytes                     -> 504
 *   head .. end of body         idle_timeout_ms between reads; off while
 *                               the proxy pauses reading               -> 504
 *   in the pool                 UP_POOL_IDLE_MS, then closed quietly
 * The response timeout starts at gw_upconn_request_sent(), not at the first
 * byte written: an upload of a large video from a slow client can take minutes
 * and is not the service's latency. While the request is being written, a
 * stalled upstream (output not draining for idle_timeout_ms) is caught by the
 * bufferevent's write timeout instead, and a slow client is the server's own
 * client timeout's business.
 *
 * Plain TCP: this file reads and writes the socket itself; the bufferevent
 * connects, holds the output buffer and takes over writes that do not go out
 * at once. What a small request cost through the bufferevent (measured with
 * strace, per request, on a pooled connection): recv(MSG_PEEK) at the
 * hand-over, epoll_ctl to add and again to remove write interest, ioctl
 * (FIONREAD) before each read, and an epoll_ctl when read interest was turned
 * off at DONE and on again in the pool: 7 system calls where writev and readv
 * are needed. Now:
 *   - c->rev, a persistent read event of our own, is on from CONNECTED until
 *     the connection closes, in the pool too: pausing takes it off, nothing
 *     else does, so epoll is never touched per request. sock_read_cb reads a
 *     head or chunked body into the bufferevent's input (one readv, no
 *     FIONREAD); in the pool it drops the connection (data, EOF or a reset
 *     from the server); leased but not yet handed over it marks it stale;
 *     after DONE it makes it unusable.
 *   - The hand-over (kick_cb) goes once more round the active queue first, so
 *     that every event the loop's last epoll_wait reported about the
 *     connection has reached sock_read_cb: a close the loop has seen is never
 *     handed out, whether the lease came from a callback or from outside the
 *     loop. A close that arrives during the current loop pass is not seen;
 *     for connections idle UP_PEEK_IDLE_MS or more, where servers' idle
 *     timeouts strike, conn_alive() still peeks.
 *   - Bytes added to the output (gw_upconn_out_cb, an evbuffer callback) activate
 *     c->flush, which writev()s them later in the same pass. Only if bytes
 *     remain (a full socket buffer, an error) is the bufferevent's write event
 *     turned on (c->wpending), with its write timeout, until the output is
 *     empty again (gw_upconn_write_cb).
 * TLS runs on the same machinery (uptls_io.c): c->rev, c->flush and the
 * bufferevent's write event carry ciphertext, the SSL reads the socket and
 * writes its records into the bufferevent's output; the proxy writes plaintext
 * to c->plain, which c->flush encrypts (at most UP_WRITE_MAX bytes ahead of the
 * socket) before it writes. What differs: the handshake (sock_read_cb in
 * PH_CONNECTING), the idle checks (a TLS 1.3 session ticket arriving on an idle
 * connection is not "the server spoke"), and bytes the SSL holds decrypted or
 * read ahead, which no read event announces (conn_pump).
 *
 * Large bodies over plain TCP: libevent 2.1's evbuffer_read() takes at most
 * 4 KiB per call and a bufferevent reads once per loop pass, so a download
 * cost a loop pass (epoll_wait, ioctl FIONREAD, readv) per 4 KiB.
 * conn_read_direct() reads the socket straight into space reserved on
 * c->body, up to 64 KiB per readv, until the socket is drained, UP_BODY_MAX
 * bytes wait in c->body, or the Content-Length is reached (never past it: on a
 * keep-alive connection the next bytes are not ours). It runs from
 * conn_progress, after the head (and from the kick after a pause). Over TLS,
 * bufferevent_openssl reads one TLS record (16 KiB, two read() calls) per
 * pass, and neither bufferevent_set_max_single_read nor a read high watermark
 * changed that in 2.1: hence uptls_io.c, whose reads go through
 * conn_read_direct as plain TCP's do (SSL_read into the reserved space).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <event2/bufferevent.h>
#include <event2/util.h>

#include "metrics.h"
#include "upstream_int.h"

#define UP_BODY_MAX     (256 * 1024) /* bytes: direct reads stop once c->body holds this much */
#define UP_BEV_READ     4096        /* bytes: the most libevent 2.1 reads per pass */
/* Bytes reserved for one direct readv: the first of a pass, then the next ones
 * while each read fills its space. libevent allocates a chain as its header
 * (48 bytes) plus the buffer, rounded up to a power of two: asking for 64 KiB
 * exactly would allocate 128 KiB, hence the 128 bytes of slack. The first read
 * is smaller because a partly filled chain travels on to the client as it is:
 * a trickling upstream must not pin 64 KiB per few bytes. */
#define UP_READ_FIRST   (16 * 1024 - 128)
#define UP_READ_NEXT    (64 * 1024 - 128)
#define UP_READ_HEAD    (4 * 1024 - 128) /* bytes: a response head read (one 4 KiB chain) */
/* A pooled plain-TCP connection idle at least this long is also peeked at
 * (recv MSG_PEEK) when handed over; a younger one is trusted to the read event
 * that watches it in the pool (see "Plain TCP" in the top comment). HTTP
 * servers close idle keep-alive connections after seconds (gunicorn 2 s, Node
 * 5 s, nginx 75 s), never within a second. */
#define UP_PEEK_IDLE_MS 1000

static void kick_cb(evutil_socket_t fd, short what, void *arg);
static void timer_cb(evutil_socket_t fd, short what, void *arg);
static void read_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);
static void sock_read_cb(evutil_socket_t fd, short what, void *arg);
static void conn_pump(struct gw_upconn *c);

/* ----------------------------------------------------------- small helpers */

/* Arm c->timer for ms milliseconds; ms <= 0 means no deadline. */
void gw_upconn_timer_set(struct gw_upconn *c, int ms)
{
    struct timeval tv;

    if (ms <= 0) {
        event_del(c->timer);
        return;
    }
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    event_add(c->timer, &tv);
}

static socklen_t addr_len(const union up_addr *a)
{
    return a->sa.sa_family == AF_INET6 ? sizeof(a->in6) : sizeof(a->in);
}

/* Response reading on or off: c->rev over plain TCP, the bufferevent's read
 * over TLS. Both are idempotent and cost no system call when nothing changes. */
static void read_on(struct gw_upconn *c)
{
    if (c->rev != NULL)
        event_add(c->rev, NULL);
    else
        bufferevent_enable(c->bev, EV_READ);
}

static void read_off(struct gw_upconn *c)
{
    if (c->rev != NULL)
        event_del(c->rev);
    else if (c->bev != NULL)
        bufferevent_disable(c->bev, EV_READ);
}

/* ----------------------------------------------------- connection lifetime */

struct gw_upconn *gw_upconn_new(struct gw_upstream *u)
{
    struct gw_upconn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->u = u;
    c->kick = event_new(u->base, -1, 0, kick_cb, c);
    c->timer = evtimer_new(u->base, timer_cb, c);
    c->flush = event_new(u->base, -1, 0, gw_upconn_flush_cb, c);
    c->body = evbuffer_new();
    if (c->kick == NULL || c->timer == NULL || c->flush == NULL || c->body == NULL) {
        if (c->kick)
            event_free(c->kick);
        if (c->timer)
            event_free(c->timer);
        if (c->flush)
            event_free(c->flush);
        if (c->body)
            evbuffer_free(c->body);
        free(c);
        return NULL;
    }
    return c;
}

static void conn_drop_bev(struct gw_upconn *c)
{
    if (c->rev != NULL) { /* before the bufferevent closes its socket */
        event_free(c->rev);
        c->rev = NULL;
    }
    event_del(c->flush);
    c->wpending = 0;
    c->configured = 0;
    if (c->ssl != NULL) { /* before the bufferevent its BIO writes into */
        /* OpenSSL marks the session of an SSL freed without a shutdown as not
         * resumable, and in TLS 1.3 the session we keep for resumption is that
         * connection's own. Mark the shutdown as done, quietly: a close_notify
         * is not worth a write on a connection the server may have reset. */
        if (SSL_is_init_finished(c->ssl))
            SSL_set_shutdown(c->ssl, SSL_get_shutdown(c->ssl) | SSL_SENT_SHUTDOWN);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->plain != NULL) {
        evbuffer_free(c->plain);
        c->plain = NULL;
    }
    if (c->bev == NULL)
        return;
    bufferevent_free(c->bev); /* closes the socket */
    c->bev = NULL;
}

/* Close and free. c must be out of every list. */
void gw_upconn_free(struct gw_upconn *c)
{
    conn_drop_bev(c);
    event_free(c->kick);
    event_free(c->timer);
    event_free(c->flush);
    evbuffer_free(c->body);
    free(c);
}

static void conn_error(struct gw_upconn *c)
{
    c->phase = PH_FAILED;
    event_del(c->timer);
    event_del(c->kick);
    event_del(c->flush);
    read_off(c);
    if (c->bev != NULL)
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    up_deliver(c, GW_UP_ERROR);
}

/* Fill c->err, mark c failed, stop everything and deliver GW_UP_ERROR. */
void gw_upconn_fail(struct gw_upconn *c, int status, const char *fmt, ...)
{
    char msg[sizeof(c->err.message)];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    gw_error_set(&c->err, status, "upstream_error",
                 status == 504 ? "gateway_timeout" : "bad_gateway", NULL, "%s", msg);
    conn_error(c);
}

/* -------------------------------------------------------------- connecting */

/* A pooled connection about to be handed over: the server may have closed it
 * (or sent something) after our loop last looked. Checked without blocking.
 * Over plain TCP, what the loop has seen is known already (c->stale, see
 * kick_cb); only a connection idle for UP_PEEK_IDLE_MS or more, the age at
 * which servers close idle connections, is also peeked at. */
static int conn_alive(struct gw_upconn *c)
{
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    char b;
    ssize_t n;

    if (c->rev != NULL) {
        struct timeval now;
        int64_t idle_ms;

        if (c->stale)
            return 0;
        event_base_gettimeofday_cached(c->u->base, &now);
        idle_ms = ((int64_t)now.tv_sec - c->pooled_at.tv_sec) * 1000 +
                  ((int64_t)now.tv_usec - c->pooled_at.tv_usec) / 1000;
        /* (< 0: the clock was set back) Bytes the SSL holds were never
         * announced by c->rev: looked at below. */
        if (idle_ms >= 0 && idle_ms < UP_PEEK_IDLE_MS &&
            (c->ssl == NULL || !SSL_has_pending(c->ssl)))
            return 1;
    }

    if (fd < 0 || evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        return 0;
    if (c->ssl != NULL) /* a peek at the socket would take a session ticket for data */
        return gw_uptls_io_idle_alive(c);
    n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 1;
    return 0; /* 0: closed; > 0: unsolicited bytes (or an alert); < 0: reset */
}

/* Start connecting to a. GW_OK: connecting (the event callback will tell);
 * GW_ERR: failed at once, c->why says why, c->bev is NULL. */
static int conn_open(struct gw_upconn *c, const union up_addr *a)
{
    struct gw_upstream *u = c->u;
    struct bufferevent *bev;
    evutil_socket_t fd;
    int one = 1;

    bev = bufferevent_socket_new(u->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        snprintf(c->why, sizeof(c->why), "out of memory");
        return GW_ERR;
    }
    c->bev = bev;
    if (u->ssl_ctx != NULL) {
        c->ssl = gw_uptls_ssl_new(c);
        if (c->ssl == NULL) {
            conn_drop_bev(c);
            return GW_ERR;
        }
        c->plain = evbuffer_new();
        if (c->plain == NULL || gw_uptls_io_attach(c, c->ssl) != GW_OK) {
            snprintf(c->why, sizeof(c->why), "out of memory");
            conn_drop_bev(c);
            return GW_ERR;
        }
    }
    bufferevent_setcb(bev, read_cb, gw_upconn_write_cb, event_cb, c);
    /* Uploads: one writev takes up to 256 KiB of the output instead of
     * 16 KiB when the bufferevent writes: fewer passes per MiB. */
    bufferevent_set_max_single_write(bev, UP_WRITE_MAX);
    if (bufferevent_socket_connect(bev, &a->sa, (int)addr_len(a)) != 0) {
        snprintf(c->why, sizeof(c->why), "%s",
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        conn_drop_bev(c);
        return GW_ERR;
    }
    gw_m_up(GW_M_UP_OPENED);
    fd = bufferevent_getfd(bev);
    if (fd >= 0) /* requests are written whole or streamed: never wait for Nagle */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (fd >= 0) {
        /* Reads and writes by this file (see the top comment). Without memory
         * for it, over plain TCP the bufferevent does all; TLS needs it. */
        c->rev = event_new(u->base, fd, EV_READ | EV_PERSIST, sock_read_cb, c);
        if (c->rev != NULL && evbuffer_add_cb(gw_upconn_output(c), gw_upconn_out_cb, c) == NULL) {
            event_free(c->rev);
            c->rev = NULL;
        }
    }
    if (c->rev == NULL && c->ssl != NULL) {
        snprintf(c->why, sizeof(c->why), "out of memory");
        conn_drop_bev(c);
        return GW_ERR;
    }
    return GW_OK;
}

void gw_upconn_connect_next(struct gw_upconn *c)
{
    struct gw_upstream *u = c->u;

    while (c->next_addr < c->naddrs) {
        if (conn_open(c, &c->addrs[c->next_addr++]) == GW_OK) {
            c->phase = PH_CONNECTING;
            return;
        }
        gw_m_up(GW_M_UP_FAILED);
    }
    gw_updns_forget(u); /* perhaps stale: the next lease looks up again */
    gw_upconn_fail(c, 502, "cannot connect to upstream %s:%d: %s", u->host, port_of(u),
                   c->why[0] ? c->why : "no address");
}

/* Connected (and TLS handshake done): deliver CONNECTED. Also the hand-over of
 * a pooled connection. */
static void conn_activate(struct gw_upconn *c)
{
    const struct gw_config *cfg = c->u->cfg;
    struct timeval wtv;

    c->phase = PH_ACTIVE;
    c->why[0] = '\0'; /* (an earlier address's failure) */
    event_del(c->timer);
    if (c->configured) { /* a pooled plain-TCP connection: all set, c->rev on */
        if (c->paused)
            event_del(c->rev);
        up_deliver(c, GW_UP_CONNECTED);
        return;
    }
    bufferevent_setcb(c->bev, read_cb, gw_upconn_write_cb, event_cb, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, UP_WRITE_LOWAT, 0);
    bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
    if (cfg->idle_timeout_ms > 0) { /* the upstream stops taking the request */
        wtv.tv_sec = cfg->idle_timeout_ms / 1000;
        wtv.tv_usec = (cfg->idle_timeout_ms % 1000) * 1000;
        bufferevent_set_timeouts(c->bev, NULL, &wtv);
    }
    if (c->rev != NULL) {
        /* The bufferevent's reading stays off for good, its writing is on
         * only while a direct write left bytes behind (c->wpending); all of
         * this holds across leases (c->configured). (The handshake's last
         * records may still be waiting on it: they are not lost.) */
        struct evbuffer *out = bufferevent_get_output(c->bev);
        if (evbuffer_get_length(out) > 0) /* the handshake's last records: now */
            gw_upconn_write_now(c, -1);
        if (evbuffer_get_length(out) == 0) {
            bufferevent_disable(c->bev, EV_READ | EV_WRITE);
            c->wpending = 0;
        } else {
            /* the write event stays on until the output drains, then goes off
             * (gw_upconn_write_cb): without wpending it stayed on for the
             * connection's life, each write a pass late between two epoll_ctl */
            bufferevent_disable(c->bev, EV_READ);
            bufferevent_enable(c->bev, EV_WRITE); /* on already; said, not assumed */
            c->wpending = 1;
        }
        c->configured = 1;
        if (!c->paused)
            event_add(c->rev, NULL);
    } else {
        bufferevent_enable(c->bev, c->paused ? EV_WRITE : EV_READ | EV_WRITE);
    }
    up_deliver(c, GW_UP_CONNECTED);
}

/* The connect or the handshake failed: try the next address, or fail. A TLS
 * failure is not retried elsewhere: every address serves the same name. */
static void conn_connect_failed(struct gw_upconn *c, short what)
{
    struct gw_upstream *u = c->u;
    int e = EVUTIL_SOCKET_ERROR();
    char msg[sizeof(c->err.message)];

    gw_m_up(GW_M_UP_FAILED);
    if (c->handshaking && gw_uptls_why_failed(c->ssl, &e, msg, sizeof(msg)) != GW_OK) {
        conn_drop_bev(c);
        gw_upconn_fail(c, 502, "upstream %s:%d: %s", u->host, port_of(u), msg);
        return;
    }
    if ((what & BEV_EVENT_ERROR) && e != 0 && e != EAGAIN && e != EINPROGRESS)
        snprintf(c->why, sizeof(c->why), "%s", evutil_socket_error_to_string(e));
    else
        snprintf(c->why, sizeof(c->why), "connection closed%s",
                 c->handshaking ? " during the TLS handshake" : "");
    conn_drop_bev(c);
    gw_upconn_connect_next(c);
}

/* Write what the SSL left in the output (handshake records, a KeyUpdate
 * answer) now; what the socket refuses waits on the bufferevent's write event. */
static void tls_send_pending(struct gw_upconn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);

    if (c->wpending || evbuffer_get_length(out) == 0)
        return;
    gw_upconn_write_now(c, -1);
    if (evbuffer_get_length(out) > 0) {
        c->wpending = 1;
        bufferevent_enable(c->bev, EV_WRITE);
    }
}

/* TLS, TCP connected or the socket readable during the handshake: one step.
 * Done: CONNECTED. A failed certificate or handshake is not retried on another
 * address (every address serves the same name); a closed or reset socket is. */
static void tls_handshake_step(struct gw_upconn *c)
{
    struct gw_upstream *u = c->u;
    char msg[sizeof(c->err.message)];
    int e = 0, r;

    c->handshaking = 1;
    r = gw_uptls_io_handshake(c, &e, msg, sizeof(msg));
    if (r == GW_OK || r == GW_AGAIN)
        tls_send_pending(c);
    if (r == GW_OK) {
        c->handshaking = 0;
        conn_activate(c);
        return;
    }
    if (r == GW_AGAIN) {
        event_add(c->rev, NULL);
        return;
    }
    gw_m_up(GW_M_UP_FAILED);
    c->handshaking = 0;
    conn_drop_bev(c);
    if (r == GW_ERR) {
        gw_upconn_fail(c, 502, "upstream %s:%d: %s", u->host, port_of(u), msg);
        return;
    }
    if (e != 0)
        snprintf(c->why, sizeof(c->why), "%s during the TLS handshake",
                 evutil_socket_error_to_string(e));
    else
        snprintf(c->why, sizeof(c->why), "connection closed during the TLS handshake");
    gw_upconn_connect_next(c);
}

/* ----------------------------------------------------------------- reading */

/* readv(2) on the socket, or its TLS equivalent (gw_uptls_io_read): bytes, 0
 * at EOF, -1 with errno (EAGAIN: nothing yet). */
static ssize_t conn_recv(struct gw_upconn *c, const struct iovec *iov, int nv)
{
    ssize_t n;

    if (c->ssl != NULL)
        return gw_uptls_io_read(c, iov, nv); /* (a failure's reason in c->why) */
    do
        n = readv(bufferevent_getfd(c->bev), iov, nv);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { /* for the message */
        int e = errno;

        snprintf(c->why, sizeof(c->why), "%s", evutil_socket_error_to_string(e));
        errno = e;
    }
    return n;
}

/* Read a Content-Length or close-delimited body from a plain TCP socket
 * straight into c->body, the bufferevent's input having been moved already
 * (see the top comment). Up to UP_READ_NEXT bytes per readv, the first read of
 * a call UP_READ_FIRST; the space is what evbuffer_reserve_space gives (the
 * free end of c->body's last chain, then a new chain), cut to the rest of the
 * Content-Length and to UP_BODY_MAX. Stops at:
 *   - a short read: the socket is drained; c->rev (the bufferevent's read event if
 *     c->rev could not be made), level-triggered, brings us back;
 *   - EAGAIN; the end of the Content-Length (c->rs becomes RS_DONE); c->body
 *     holding UP_BODY_MAX (the proxy takes it, or pauses: backpressure);
 *   - EOF or an error (a reset): c->eof is set and reading disabled, as the
 *     bufferevent itself does before calling event_cb; conn_progress then ends
 *     a close-delimited body or reports the premature close.
 * Over TLS the same, each "readv" decrypting record after record into the
 * space (gw_uptls_io_read); what the SSL still holds when the space or the
 * Content-Length stops us is conn_pump's.
 * Adds the bytes read to *added. Does nothing after EOF, or when the last read
 * into the input came back short (c->drained): a read then would most likely
 * find nothing. */
static void conn_read_direct(struct gw_upconn *c, size_t *added)
{
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    size_t want = UP_READ_FIRST;

    if (c->eof || c->drained || fd < 0)
        return;
    while (c->rs == RS_LENGTH || c->rs == RS_EOF) {
        struct evbuffer_iovec v[2];
        struct iovec iov[2];
        size_t have = evbuffer_get_length(c->body), cap, space = 0, left;
        ssize_t n;
        int nv, i;

        if (have >= UP_BODY_MAX)
            break;
        cap = UP_BODY_MAX - have;
        if (c->rs == RS_LENGTH && cap > c->body_left)
            cap = (size_t)c->body_left; /* never a byte of what follows the response */
        if (want > cap)
            want = cap;
        nv = evbuffer_reserve_space(c->body, (ev_ssize_t)want, v, 2);
        if (nv <= 0)
            break; /* out of memory: the bufferevent reads on, 4 KiB at a time */
        for (i = 0; i < nv && space < cap; i++) {
            iov[i].iov_base = v[i].iov_base;
            iov[i].iov_len = v[i].iov_len < cap - space ? v[i].iov_len : cap - space;
            space += iov[i].iov_len;
        }
        nv = i;
        n = conn_recv(c, iov, nv);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break; /* (an uncommitted reservation is simply dropped) */
        if (n <= 0) {
            c->eof = 1;
            read_off(c);
            break;
        }
        /* n > 0: commit what was read, the vectors filled in order */
        left = (size_t)n;
        for (i = 0; i < nv && left > 0; i++) {
            v[i].iov_len = iov[i].iov_len < left ? iov[i].iov_len : left;
            left -= v[i].iov_len;
        }
        evbuffer_commit_space(c->body, v, i);
        *added += (size_t)n;
        c->rx += (uint64_t)n;
        if (c->rs == RS_LENGTH) {
            c->body_left -= (uint64_t)n;
            if (c->body_left == 0)
                c->rs = RS_DONE;
        }
        if ((size_t)n < space)
            break;
        want = UP_READ_NEXT;
    }
}

/* Everything the read side can do now: parse, move body, deliver HEADERS, BODY
 * and DONE (or the premature-close error). While paused nothing is read and no
 * read-side event is delivered; the kick resumes here. */
static void conn_progress(struct gw_upconn *c)
{
    struct evbuffer *in;
    size_t added = 0;
    int r;

    if (c->phase != PH_ACTIVE || c->released || c->paused)
        return;
    in = bufferevent_get_input(c->bev);
    while (c->rs != RS_DONE) {
        size_t before = evbuffer_get_length(in);

        r = gw_upresp_step(c, in, &added);
        c->rx += before - evbuffer_get_length(in); /* (a failed step takes nothing) */
        if (r == GW_ERR) {
            conn_error(c);
            return;
        }
        if (r == GW_AGAIN)
            break;
        if (r == STEP_HEAD) {
            if (c->rs != RS_DONE)
                gw_upconn_timer_set(c, c->u->cfg->idle_timeout_ms);
            up_deliver(c, GW_UP_HEADERS);
            if (up_gone(c) || c->paused)
                return;
        }
    }
    /* The input is empty (or rs is RS_DONE): read on from the socket itself. */
    if (c->rs == RS_LENGTH || c->rs == RS_EOF)
        conn_read_direct(c, &added);
    if (added > 0) {
        if (c->rs != RS_DONE && !c->eof)
            gw_upconn_timer_set(c, c->u->cfg->idle_timeout_ms);
        up_deliver(c, GW_UP_BODY);
        if (up_gone(c) || c->paused)
            return;
    }
    if (c->rs != RS_DONE && c->eof && evbuffer_get_length(in) == 0) {
        if (c->rs != RS_EOF) {
            gw_upconn_fail(c, 502,
                           "upstream closed the connection before the response was complete%s%s",
                           c->why[0] ? ": " : "", c->why);
            return;
        }
        c->rs = RS_DONE;
    }
    if (c->rs == RS_DONE && !c->done) {
        /* Bytes after the response (none were asked for) make the connection
         * unusable. Reading stops here; the pool watches the connection again
         * if it is kept. */
        if (evbuffer_get_length(in) > 0)
            c->keepalive = 0;
        c->done = 1;
        event_del(c->timer);
        if (c->rev == NULL)
            bufferevent_disable(c->bev, EV_READ);
        /* (c->rev stays on: anything the server sends now makes the
         * connection unusable, sock_read_cb; in the pool it watches) */
        up_deliver(c, GW_UP_DONE);
    }
}

/* --------------------------------------------------- libevent entry points */

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_upconn *c = arg;

    gw_upstream_conn_enter(c);
    if (c->phase == PH_START && c->pooled && c->rev != NULL && !c->handover) {
        /* Once more round the active queue before the hand-over. Leased from
         * a callback, the kick already runs after every event the last
         * epoll_wait reported; leased from outside the loop, a poll came
         * between the lease and this run and may have queued c->rev behind
         * us. Either way, when the kick runs again sock_read_cb has seen all
         * the loop knows of this connection (c->stale). */
        c->handover = 1;
        event_active(c->kick, EV_TIMEOUT, 1);
    } else if (c->phase == PH_START) {
        if (c->pooled && conn_alive(c)) {
            c->reused = 1;
            gw_m_up(GW_M_UP_REUSED);
            conn_activate(c);
        } else {
            if (c->pooled) { /* the server closed it meanwhile: connect afresh */
                conn_drop_bev(c);
                c->pooled = 0;
                gw_upconn_timer_set(c, c->u->cfg->connect_timeout_ms);
            }
            gw_updns_resolve(c);
        }
    } else if (c->phase == PH_ACTIVE) {
        conn_progress(c);
        conn_pump(c);
    }
    gw_upstream_conn_leave(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_upconn *c = arg;
    const struct gw_config *cfg = c->u->cfg;

    if (c->phase == PH_IDLE) { /* idle too long in the pool */
        gw_upstream_pool_remove(c);
        gw_upconn_free(c);
        return;
    }
    gw_upstream_conn_enter(c);
    switch (c->phase) {
    case PH_RESOLVING:
        TAILQ_REMOVE(&c->u->waiting, c, link);
        /* fall through */
    case PH_START:
    case PH_CONNECTING:
        conn_drop_bev(c);
        gw_upconn_fail(c, 504, "upstream connect to %s:%d timed out after %d ms", c->u->host,
                       port_of(c->u), cfg->connect_timeout_ms);
        break;
    case PH_ACTIVE:
        if (!c->head_done)
            gw_upconn_fail(c, 504, "upstream did not respond within %d ms",
                           cfg->response_timeout_ms);
        else
            gw_upconn_fail(c, 504, "upstream response stalled for %d ms", cfg->idle_timeout_ms);
        break;
    default:
        break;
    }
    gw_upstream_conn_leave(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct gw_upconn *c = arg;

    gw_upstream_conn_enter(c);
    /* conn_progress takes all of the input each time (unless paused, and then
     * no read comes): what is there now is this pass's read. Less than
     * libevent's most means the socket had no more (conn_read_direct). */
    c->drained = evbuffer_get_length(bufferevent_get_input(bev)) < UP_BEV_READ;
    conn_progress(c);
    c->drained = 0;
    gw_upstream_conn_leave(c);
}

/* Head or chunked body: one readv into the bufferevent's input, as libevent's
 * own read would, but without its ioctl(FIONREAD): UP_READ_HEAD bytes for a
 * head (what libevent reads), UP_READ_FIRST for a chunked body. (TLS: as many
 * records as fit; the rest stays in the SSL for conn_pump.)
 * Sets c->drained when the socket had no more, c->eof (reading off) on EOF or
 * an error. Returns GW_ERR only when out of memory. */
static int sock_read(struct gw_upconn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer_iovec v[2];
    struct iovec iov[2];
    size_t space = 0, left;
    ssize_t n;
    int nv, i;

    nv = evbuffer_reserve_space(in, c->rs == RS_HEAD ? UP_READ_HEAD : UP_READ_FIRST, v, 2);
    if (nv <= 0)
        return GW_ERR;
    for (i = 0; i < nv; i++) {
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len;
        space += v[i].iov_len;
    }
    n = conn_recv(c, iov, nv);
    c->drained = 1;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return GW_OK;
    if (n <= 0) {
        c->eof = 1;
        read_off(c);
        return GW_OK;
    }
    left = (size_t)n;
    for (i = 0; i < nv && left > 0; i++) {
        v[i].iov_len = v[i].iov_len < left ? v[i].iov_len : left;
        left -= v[i].iov_len;
    }
    evbuffer_commit_space(in, v, i);
    c->drained = (size_t)n < space;
    return GW_OK;
}

/* One read of the socket and everything the read side can do with it. */
static void conn_read_step(struct gw_upconn *c)
{
    /* A Content-Length or close-delimited body goes straight to c->body
     * (conn_read_direct, from conn_progress); the input is empty then. */
    if (c->rs != RS_LENGTH && c->rs != RS_EOF && sock_read(c) != GW_OK)
        gw_upconn_fail(c, 502, "out of memory reading the upstream response");
    else
        conn_progress(c);
    c->drained = 0;
}

/* TLS: bytes the SSL read ahead (or a record only partly taken, the space
 * having been full), and the end met by a read that returned bytes
 * (c->tls_end), are not announced by c->rev if the socket has nothing more. Go on with them while they make progress: a partial record does not
 * (its rest comes with a read event), and neither does a full c->body the
 * proxy left there (it pauses, or takes it in the BODY event, after which a
 * read event or the kick of a resume brings us back). */
static void conn_pump(struct gw_upconn *c)
{
    struct evbuffer *in;

    while (c->ssl != NULL && c->phase == PH_ACTIVE && !up_gone(c) && !c->paused && !c->done &&
           !c->eof && c->rs != RS_DONE && (SSL_has_pending(c->ssl) || c->tls_end != 0)) {
        uint64_t before;

        in = bufferevent_get_input(c->bev);
        before = c->rx + evbuffer_get_length(in);
        conn_read_step(c);
        if (up_gone(c) || c->rx + evbuffer_get_length(bufferevent_get_input(c->bev)) == before)
            break;
    }
}

/* Idle or answered TLS connection readable: 1 while it is still usable (a
 * session ticket came, or nothing), plain TCP: never. */
static int idle_still_usable(struct gw_upconn *c)
{
    return c->ssl != NULL && gw_uptls_io_idle_alive(c);
}

/* The socket is readable (data, EOF or an error), in any phase where c->rev
 * is on: the TLS handshake, in the pool, leased but not yet handed over, or
 * active (not paused: pausing takes c->rev off). */
static void sock_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_upconn *c = arg;

    if (c->phase == PH_IDLE) { /* an idle connection the server spoke on or closed */
        if (idle_still_usable(c))
            return;
        gw_upstream_pool_remove(c);
        gw_upconn_free(c);
        return;
    }
    gw_upstream_conn_enter(c);
    if (c->phase == PH_CONNECTING) { /* TLS: the handshake goes on */
        event_del(c->rev);
        tls_handshake_step(c);
    } else if (c->phase == PH_START) { /* leased, not handed over: the kick connects afresh */
        if (!idle_still_usable(c)) {
            c->stale = 1;
            event_del(c->rev);
        }
    } else if (c->phase == PH_ACTIVE && c->done) { /* bytes or a close after the response */
        if (!idle_still_usable(c)) {
            c->keepalive = 0;
            event_del(c->rev);
        }
    } else if (c->phase == PH_ACTIVE) {
        conn_read_step(c);
        conn_pump(c);
        if (c->ssl != NULL && c->phase == PH_ACTIVE && !c->released)
            tls_send_pending(c); /* a read may have had to answer (KeyUpdate) */
    }
    gw_upstream_conn_leave(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct gw_upconn *c = arg;

    gw_upstream_conn_enter(c);
    if (c->phase == PH_CONNECTING) {
        if ((what & BEV_EVENT_CONNECTED) && c->ssl != NULL && !c->handshaking)
            tls_handshake_step(c);
        else if (what & BEV_EVENT_CONNECTED)
            conn_activate(c);
        else
            conn_connect_failed(c, what);
    } else if (c->phase == PH_ACTIVE && c->done) {
        /* The response is complete; only the rest of an early-answered request
         * was still going: this connection is just not reusable. */
        c->write_failed = 1;
        c->eof = 1;
    } else if (c->phase == PH_ACTIVE) {
        if (what & BEV_EVENT_TIMEOUT) { /* only the write timeout is set */
            gw_upconn_fail(c, 504, "upstream did not accept the request for %d ms",
                           c->u->cfg->idle_timeout_ms);
        } else if (what & BEV_EVENT_WRITING) {
            /* The server stopped reading the request: it may have answered
             * early (413, 401) and closed. The answer is read on, what is left
             * to send stays unsent (the output then never drains, so the proxy
             * stays paused), and the response timeout bounds the wait. */
            c->write_failed = 1;
            if (!c->head_done && !c->request_sent)
                gw_upconn_timer_set(c, c->u->cfg->response_timeout_ms);
        } else {
            /* EOF or reset (plain TCP without c->rev, the bufferevent
             * reading): finish with what was received. */
            c->eof = 1;
            if (what & BEV_EVENT_WRITING)
                c->write_failed = 1;
            conn_progress(c);
        }
    }
    gw_upstream_conn_leave(c);
}

/* A pooled TLS connection leased again: its bufferevent's callbacks, which the
 * pool had replaced with its own, are the connection's again. */
void gw_upconn_setcb(struct gw_upconn *c)
{
    bufferevent_setcb(c->bev, read_cb, gw_upconn_write_cb, event_cb, c);
}

/* -------------------------------------------------------------- public API */

void gw_upconn_pause_read(struct gw_upconn *c, int paused)
{
    paused = paused != 0;
    if ((unsigned)paused == c->paused)
        return;
    c->paused = (unsigned)paused;
    if (c->phase != PH_ACTIVE || c->released || c->done)
        return;
    if (paused) {
        read_off(c);
        if (c->head_done) /* backpressure is not idleness */
            event_del(c->timer);
        return;
    }
    if (c->rs != RS_DONE) {
        if (!c->eof)
            read_on(c);
        if (c->head_done)
            gw_upconn_timer_set(c, c->u->cfg->idle_timeout_ms);
    }
    /* Input already buffered, an EOF already seen, or a DONE held while
     * paused get no new read event: the kick goes on with them. */
    event_active(c->kick, EV_TIMEOUT, 1);
}

const struct gw_error *gw_upconn_error(const struct gw_upconn *c)
{
    return &c->err;
}

uint64_t gw_upconn_received(const struct gw_upconn *c)
{
    /* what the reader took, plus what waits in the input (unparsed, or the
     * bytes a parse error stopped at) */
    return c->rx + (c->bev != NULL ? evbuffer_get_length(bufferevent_get_input(c->bev)) : 0);
}
