/*
 * upstream.c - the HTTP/1.1 client to the video service: one connection per
 * lease, a keep-alive pool per event loop, responses parsed by http_parser.
 * The contract is in upstream.h; this comment says how it is kept.
 *
 * Ownership. A struct gw_upconn is one TCP (or TLS) connection and lives as
 * long as it: it is allocated when no idle connection is pooled and freed when
 * the connection closes. Everything per response (parser, header block, body
 * buffer) is inside it and reset at each lease, so a reused connection
 * allocates nothing per request. The bufferevent owns the socket and the SSL
 * (BEV_OPT_CLOSE_ON_FREE).
 *
 * Bufferevent options: BEV_OPT_CLOSE_ON_FREE only. BEV_OPT_DEFER_CALLBACKS
 * would cost an extra trip through the loop per read and per write, and it
 * buys nothing here: none of the calls the proxy makes into this file
 * (writing to the output, enable/disable, pause, release) runs a bufferevent
 * callback synchronously, and the two places where libevent itself would
 * (a connect that succeeds or fails at once) are deferred by libevent anyway.
 * Re-entrancy is handled by `depth` below, not by deferral. No
 * BEV_OPT_THREADSAFE: an upstream belongs to one loop.
 *
 * Callbacks and release. Every entry from libevent (kick, timer, bufferevent
 * callbacks, the DNS answer) is bracketed by conn_enter()/conn_leave().
 * gw_upconn_release() called inside a callback only marks the connection;
 * conn_leave() finishes it when the outermost entry unwinds. After release the
 * proxy's callback is forgotten, so no callback can follow it.
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
 * Body bytes are never copied into a temporary heap: Content-Length and
 * close-delimited bodies are moved chain by chain from the bufferevent input
 * to c->body (evbuffer_remove_buffer) and counted here, http_parser being left
 * behind after the head; chunked bodies are parsed in place on evbuffer_peek'd
 * segments, the parser paused at each on_body so that the range it reports can
 * be moved out by offset before the next one.
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
 *   - Bytes added to the output (out_cb, an evbuffer callback) activate
 *     c->flush, which writev()s them later in the same pass. Only if bytes
 *     remain (a full socket buffer, an error) is the bufferevent's write event
 *     turned on (c->wpending), with its write timeout, until the output is
 *     empty again (write_cb).
 * TLS keeps the bufferevent for everything (and the peek at hand-over).
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
 * changes that in 2.1 (measured: same system calls, more allocation). Writes
 * are raised to UP_WRITE_MAX per pass, which does help.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/util.h>
#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "upstream.h"

#define UP_HEAD_MAX     16384       /* bytes of header names + values kept per response */
#define UP_HEADERS_MAX  64          /* headers kept per response */
#define UP_ADDRS_MAX    8           /* addresses kept from one lookup */
#define UP_WRITE_LOWAT  (64 * 1024) /* bytes: GW_UP_WRITABLE when the output falls to this */
#define UP_WRITE_MAX    (256 * 1024) /* bytes per write pass (libevent's default: 16 KiB) */
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
#define UP_POOL_IDLE_MS 15000       /* an idle pooled connection is closed after this */
/* A pooled plain-TCP connection idle at least this long is also peeked at
 * (recv MSG_PEEK) when handed over; a younger one is trusted to the read event
 * that watches it in the pool (see "Plain TCP" in the top comment). HTTP
 * servers close idle keep-alive connections after seconds (gunicorn 2 s, Node
 * 5 s, nginx 75 s), never within a second. */
#define UP_PEEK_IDLE_MS 1000
#define UP_DNS_TTL_MS   30000       /* a lookup's result is reused this long */

union up_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

/* One header of the response: offsets into c->head. */
struct up_header {
    uint16_t name_off, name_len;
    uint16_t value_off, value_len;
};

enum conn_phase {
    PH_IDLE = 0,   /* in the pool, not leased */
    PH_START,      /* leased; the kick connects, or hands over the pooled connection */
    PH_RESOLVING,  /* waiting in u->waiting for the host-name lookup */
    PH_CONNECTING, /* TCP connect, then TLS handshake */
    PH_ACTIVE,     /* CONNECTED delivered: request and response flow */
    PH_FAILED,     /* ERROR delivered; waits for release */
};

enum resp_state {
    RS_HEAD = 0, /* status line and headers (1xx responses are skipped here) */
    RS_LENGTH,   /* Content-Length body, body_left bytes to go, not parsed */
    RS_CHUNKED,  /* chunked body, parsed by http_parser on peeked segments */
    RS_EOF,      /* close-delimited body: everything until the server closes */
    RS_DONE,     /* response complete */
};

/* What the last http_parser_execute() stopped for (the parser is paused). */
enum parse_stop {
    STOP_NONE = 0, /* ran to the end of the segment */
    STOP_HEAD,     /* final response head complete */
    STOP_INTERIM,  /* a 1xx head complete: skip it */
    STOP_BODY,     /* on_body gave body_at/body_len */
    STOP_MESSAGE,  /* chunked message complete */
};

/* A step of conn_read_step() that completed the head. */
#define STEP_HEAD 1

TAILQ_HEAD(conn_list, gw_upconn);

/* One host-name lookup in flight. Allocated apart from the upstream so that a
 * lookup still running when the upstream is freed can finish harmlessly. */
struct resolve {
    struct gw_upstream *u;                  /* NULL once orphaned by gw_upstream_free */
    struct evdns_getaddrinfo_request *req;  /* NULL if answered synchronously */
    struct event_base *base;
    struct evdns_base *dns;                 /* owned here once orphaned, freed after the answer */
};

struct gw_upstream {
    struct event_base *base;
    const struct gw_config *cfg;            /* borrowed; outlives us */
    SSL_CTX *ssl_ctx;                       /* borrowed; NULL for http:// */
    struct evdns_base *dns;
    char host[256];                         /* without IPv6 brackets: DNS, SNI, verification */
    int host_is_ip;

    union up_addr cache[UP_ADDRS_MAX];      /* last lookup (or the literal) */
    unsigned ncache;
    uint64_t cache_expires;                 /* monotonic ms; UINT64_MAX for a literal */
    struct resolve *resolving;              /* the lookup in flight, or NULL */
    struct conn_list waiting;               /* connections waiting for it */

    struct conn_list idle;                  /* pooled, most recently used first */
    unsigned nidle;
    SSL_SESSION *session;                   /* last TLS session, for resumption; owned */
};

struct gw_upconn {
    struct gw_upstream *u;
    TAILQ_ENTRY(gw_upconn) link;            /* in u->idle (PH_IDLE) or u->waiting (PH_RESOLVING) */
    enum conn_phase phase;
    struct bufferevent *bev;                /* owns socket and SSL; NULL while not connecting */
    struct event *kick;                     /* zero-delay: start, CONNECTED, resumed input */
    struct event *timer;                    /* the one deadline (see the top comment) */
    struct evbuffer *body;                  /* de-chunked body for the proxy; lives with c */
    /* Plain TCP only (NULL over TLS): */
    struct event *rev;                      /* persistent EV_READ on the socket; with bev */
    struct event *flush;                    /* zero-delay: write the output to the socket */
    struct timeval pooled_at;               /* event_base_gettimeofday_cached at pool_put */

    gw_up_cb cb;
    void *arg;
    unsigned depth;                         /* libevent entries on the stack */

    unsigned released : 1;
    unsigned pooled : 1;                    /* this lease took a pooled connection */
    unsigned reused : 1;                    /* ... and it was alive */
    unsigned paused : 1;
    unsigned request_sent : 1;
    unsigned no_body : 1;                   /* HEAD request */
    unsigned head_done : 1;
    unsigned eof : 1;                       /* the server closed or reset: read what is left */
    unsigned keepalive : 1;                 /* the response allows reuse */
    unsigned write_failed : 1;
    unsigned in_value : 1;                  /* header parsing: last callback was a value */
    unsigned parse_failed : 1;              /* a parser callback filled err */
    unsigned done : 1;                      /* DONE delivered */
    unsigned drained : 1;                   /* the last read into the input came back short */
    unsigned stale : 1;                     /* PH_START: the server spoke or closed first */
    unsigned handover : 1;                  /* PH_START: the kick ran once (plain TCP) */
    unsigned wpending : 1;                  /* plain TCP: the bufferevent's EV_WRITE is on */
    unsigned configured : 1;                /* plain TCP: bev watermarks/timeouts/cb set */

    union up_addr addrs[UP_ADDRS_MAX];      /* this connection's copy of the lookup */
    unsigned naddrs, next_addr;
    char why[128];                          /* last connect failure, for the message */

    http_parser parser;
    enum parse_stop stop;
    const char *body_at;                    /* on_body range of the last execute */
    size_t body_len;
    enum resp_state rs;
    uint64_t body_left;                     /* RS_LENGTH: bytes still to come */
    uint64_t rx;                            /* response bytes taken from the input or the
                                             * socket this lease (gw_upconn_received) */
    int64_t content_length;                 /* -1 chunked or close-delimited */
    int status;
    unsigned nhdrs;
    unsigned head_len;
    struct up_header hdrs[UP_HEADERS_MAX];
    struct gw_error err;
    char head[UP_HEAD_MAX];                 /* header names and values, back to back */
};

static void kick_cb(evutil_socket_t fd, short what, void *arg);
static void timer_cb(evutil_socket_t fd, short what, void *arg);
static void read_cb(struct bufferevent *bev, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);
static void sock_read_cb(evutil_socket_t fd, short what, void *arg);
static void flush_cb(evutil_socket_t fd, short what, void *arg);
static void out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg);
static void conn_connect_next(struct gw_upconn *c);

/* ------------------------------------------------------------ small helpers */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Arm c->timer for ms milliseconds; ms <= 0 means no deadline. */
static void timer_set(struct gw_upconn *c, int ms)
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

static int port_of(const struct gw_upstream *u)
{
    return u->cfg->upstream_port;
}

static void deliver(struct gw_upconn *c, enum gw_up_event ev)
{
    if (!c->released && c->cb != NULL)
        c->cb(c, ev, c->arg);
}

/* True when c may not be touched further in this entry: the proxy released it
 * or it failed. */
static int conn_gone(const struct gw_upconn *c)
{
    return c->released || c->phase == PH_FAILED;
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

/* ------------------------------------------------------------------- TLS */

/* New session (TLS 1.2 handshake, or a TLS 1.3 ticket arriving after it): keep
 * the latest per upstream. The SSL's app data is its upstream; that upstream
 * is alive, since the SSL belongs to one of its connections. */
static int tls_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct gw_upstream *u = SSL_get_app_data(ssl);

    if (u == NULL)
        return 0;
    SSL_SESSION_free(u->session);
    u->session = sess;
    return 1; /* we keep the reference */
}

static const char *tls_reason(unsigned long e)
{
    const char *r = e ? ERR_reason_error_string(e) : NULL;

    return r ? r : "unknown error";
}

/* tls_reason(), or for an error without a reason string its full code. */
static void tls_reason_buf(unsigned long e, char *buf, size_t cap)
{
    if (e != 0 && ERR_reason_error_string(e) == NULL)
        ERR_error_string_n(e, buf, cap);
    else
        snprintf(buf, cap, "%s", tls_reason(e));
}

int gw_upstream_tls_ctx(const struct gw_config *cfg, SSL_CTX **out, struct gw_error *err)
{
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX *ctx = NULL;
    int rc = GW_ERR;

    *out = NULL;
    if (!cfg->upstream_tls)
        return GW_OK;
    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        gw_error_set(err, 500, "server_error", "tls_setup", NULL,
                     "cannot create the upstream TLS context: %s", tls_reason(ERR_get_error()));
        goto out;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        gw_error_set(err, 500, "server_error", "tls_setup", NULL,
                     "cannot require TLS 1.2 upstream: %s", tls_reason(ERR_get_error()));
        goto out;
    }
    /* libevent 2.1 predates OpenSSL 3's unexpected-EOF error: treat a close
     * without close_notify as EOF, and let the response framing detect a
     * truncated body. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_NO_RENEGOTIATION);
    if (cfg->tls_verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (cfg->ca_file != NULL) {
            if (SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL) != 1) {
                gw_error_set(err, 500, "server_error", "tls_setup", NULL,
                             "cannot load upstream CA file %s: %s", cfg->ca_file,
                             tls_reason(ERR_get_error()));
                goto out;
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            gw_error_set(err, 500, "server_error", "tls_setup", NULL,
                         "cannot load the system CA certificates: %s",
                         tls_reason(ERR_get_error()));
            goto out;
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0) { /* 0 is success */
        gw_error_set(err, 500, "server_error", "tls_setup", NULL, "cannot set ALPN");
        goto out;
    }
    /* Sessions are kept per upstream (per thread) by tls_new_session, not in
     * the context's internal store, which would be shared between threads. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, tls_new_session);
    *out = ctx;
    ctx = NULL;
    rc = GW_OK;
out:
    SSL_CTX_free(ctx);
    return rc;
}

/* ------------------------------------------------------ connection lifetime */

static struct gw_upconn *conn_new(struct gw_upstream *u)
{
    struct gw_upconn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->u = u;
    c->kick = event_new(u->base, -1, 0, kick_cb, c);
    c->timer = evtimer_new(u->base, timer_cb, c);
    c->flush = event_new(u->base, -1, 0, flush_cb, c);
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
    SSL *ssl;

    if (c->rev != NULL) { /* before the bufferevent closes its socket */
        event_free(c->rev);
        c->rev = NULL;
    }
    event_del(c->flush);
    c->wpending = 0;
    c->configured = 0;
    if (c->bev == NULL)
        return;
    /* OpenSSL marks the session of an SSL freed without a shutdown as not
     * resumable, and in TLS 1.3 the session we keep for resumption is that
     * connection's own. Mark the shutdown as done, quietly: writing a
     * close_notify now could raise SIGPIPE on a connection the server reset. */
    ssl = c->u->ssl_ctx ? bufferevent_openssl_get_ssl(c->bev) : NULL;
    if (ssl != NULL && SSL_is_init_finished(ssl))
        SSL_set_shutdown(ssl, SSL_get_shutdown(ssl) | SSL_SENT_SHUTDOWN);
    bufferevent_free(c->bev); /* closes the socket, frees the SSL */
    c->bev = NULL;
}

/* Close and free. c must be out of every list. */
static void conn_free(struct gw_upconn *c)
{
    conn_drop_bev(c);
    event_free(c->kick);
    event_free(c->timer);
    event_free(c->flush);
    evbuffer_free(c->body);
    free(c);
}

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

/* Fill c->err, mark c failed, stop everything and deliver GW_UP_ERROR. */
static void conn_fail(struct gw_upconn *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void conn_error(struct gw_upconn *c)
{
    c->phase = PH_FAILED;
    event_del(c->timer);
    event_del(c->kick);
    event_del(c->flush);
    read_off(c);
    if (c->bev != NULL)
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    deliver(c, GW_UP_ERROR);
}

static void conn_fail(struct gw_upconn *c, int status, const char *fmt, ...)
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

/* ------------------------------------------------------------------ pool */

static void pool_remove(struct gw_upconn *c)
{
    TAILQ_REMOVE(&c->u->idle, c, link);
    c->u->nidle--;
}

/* Anything from the server on an idle connection (data, EOF, reset) means it
 * cannot carry another request: drop it. */
static void pool_read_cb(struct bufferevent *bev, void *arg)
{
    struct gw_upconn *c = arg;

    pool_remove(c);
    conn_free(c);
}

static void pool_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct gw_upconn *c = arg;

    pool_remove(c);
    conn_free(c);
}

static void pool_put(struct gw_upconn *c)
{
    struct gw_upstream *u = c->u;

    if (u->nidle >= (unsigned)u->cfg->pool_size) {
        struct gw_upconn *oldest = TAILQ_LAST(&u->idle, conn_list);

        pool_remove(oldest);
        conn_free(oldest);
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
    timer_set(c, UP_POOL_IDLE_MS);
    TAILQ_INSERT_HEAD(&u->idle, c, link);
    u->nidle++;
}

/* A pooled connection about to be handed over: the server may have closed it
 * (or sent something) after our loop last looked. Checked without blocking.
 * Over plain TCP, what the loop has seen is known already (c->stale, see
 * kick_cb); only a connection idle for UP_PEEK_IDLE_MS or more, the age at
 * which servers close idle connections, is also peeked at. */
static int conn_alive(struct gw_upconn *c)
{
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    SSL *ssl = c->u->ssl_ctx ? bufferevent_openssl_get_ssl(c->bev) : NULL;
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
        if (idle_ms >= 0 && idle_ms < UP_PEEK_IDLE_MS) /* (< 0: the clock was set back) */
            return 1;
    }

    if (fd < 0 || evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        return 0;
    if (ssl != NULL && SSL_has_pending(ssl))
        return 0;
    n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 1;
    return 0; /* 0: closed; > 0: unsolicited bytes (or an alert); < 0: reset */
}

/* The lease ends (release at depth 0): back to the pool only when the exchange
 * is cleanly over on both sides, otherwise closed. */
static void conn_finish(struct gw_upconn *c)
{
    struct gw_upstream *u = c->u;
    int reuse = c->phase == PH_ACTIVE && c->rs == RS_DONE && c->request_sent &&
                c->keepalive && !c->write_failed && !c->eof && c->bev != NULL &&
                u->cfg->pool_size > 0 &&
                evbuffer_get_length(bufferevent_get_output(c->bev)) == 0 &&
                evbuffer_get_length(bufferevent_get_input(c->bev)) == 0;

    if (c->phase == PH_RESOLVING)
        TAILQ_REMOVE(&u->waiting, c, link);
    event_del(c->kick);
    event_del(c->timer);
    event_del(c->flush);
    if (reuse)
        pool_put(c);
    else
        conn_free(c);
}

static void conn_enter(struct gw_upconn *c)
{
    c->depth++;
}

static void conn_leave(struct gw_upconn *c)
{
    if (--c->depth == 0 && c->released)
        conn_finish(c);
}

/* -------------------------------------------------------------- resolving */

static void dns_free_cb(evutil_socket_t fd, short what, void *arg)
{
    evdns_base_free(arg, 0);
}

static void upstream_forget_addrs(struct gw_upstream *u)
{
    if (!u->host_is_ip)
        u->ncache = 0;
}

static void conn_take_addrs(struct gw_upconn *c)
{
    struct gw_upstream *u = c->u;

    memcpy(c->addrs, u->cache, u->ncache * sizeof(u->cache[0]));
    c->naddrs = u->ncache;
    c->next_addr = 0;
}

/* A lookup ended: keep its addresses, then let every waiting connection go on
 * (or fail). Takes ai. */
static void upstream_resolved(struct gw_upstream *u, int result, struct evutil_addrinfo *ai)
{
    struct evutil_addrinfo *p;
    struct gw_upconn *c;

    if (result == 0) {
        u->ncache = 0;
        for (p = ai; p != NULL && u->ncache < UP_ADDRS_MAX; p = p->ai_next) {
            union up_addr *a = &u->cache[u->ncache];

            if (p->ai_family == AF_INET && p->ai_addrlen >= sizeof(a->in)) {
                memcpy(&a->in, p->ai_addr, sizeof(a->in));
                a->in.sin_port = htons((uint16_t)port_of(u));
            } else if (p->ai_family == AF_INET6 && p->ai_addrlen >= sizeof(a->in6)) {
                memcpy(&a->in6, p->ai_addr, sizeof(a->in6));
                a->in6.sin6_port = htons((uint16_t)port_of(u));
            } else {
                continue;
            }
            u->ncache++;
        }
        u->cache_expires = now_ms() + UP_DNS_TTL_MS;
        if (u->ncache == 0)
            result = EVUTIL_EAI_NODATA;
    }
    if (ai != NULL)
        evutil_freeaddrinfo(ai);

    /* Pop one at a time: a callback may release another waiting connection. */
    while ((c = TAILQ_FIRST(&u->waiting)) != NULL) {
        TAILQ_REMOVE(&u->waiting, c, link);
        c->phase = PH_START;
        conn_enter(c);
        if (result == 0) {
            conn_take_addrs(c);
            conn_connect_next(c);
        } else {
            conn_fail(c, 502, "cannot resolve upstream host %s: %s", u->host,
                      evutil_gai_strerror(result));
        }
        conn_leave(c);
    }
}

static void dns_cb(int result, struct evutil_addrinfo *ai, void *arg)
{
    struct resolve *r = arg;
    struct gw_upstream *u = r->u;

    if (u == NULL) { /* orphaned: free the DNS base once libevent is done with it */
        static const struct timeval zero = { 0, 0 };

        if (ai != NULL)
            evutil_freeaddrinfo(ai);
        if (r->dns != NULL && event_base_once(r->base, -1, EV_TIMEOUT, dns_free_cb, r->dns,
                                              &zero) != 0)
            evdns_base_free(r->dns, 0);
        free(r);
        return;
    }
    u->resolving = NULL;
    free(r);
    upstream_resolved(u, result, ai);
}

static void upstream_resolve(struct gw_upstream *u)
{
    struct evutil_addrinfo hints;
    struct evdns_getaddrinfo_request *req;
    struct resolve *r = calloc(1, sizeof(*r));

    if (r == NULL) {
        upstream_resolved(u, EVUTIL_EAI_MEMORY, NULL);
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
    r->u = u;
    r->base = u->base;
    u->resolving = r;
    /* May answer synchronously (/etc/hosts, errors): then dns_cb has already
     * run, freed r and cleared u->resolving. */
    req = evdns_getaddrinfo(u->dns, u->host, NULL, &hints, dns_cb, r);
    if (u->resolving != NULL)
        u->resolving->req = req;
}

/* From PH_START with no usable pooled connection: addresses, then connect. */
static void conn_resolve(struct gw_upconn *c)
{
    struct gw_upstream *u = c->u;

    if (u->ncache > 0 && now_ms() < u->cache_expires) {
        conn_take_addrs(c);
        conn_connect_next(c);
        return;
    }
    c->phase = PH_RESOLVING;
    TAILQ_INSERT_TAIL(&u->waiting, c, link);
    if (u->resolving == NULL)
        upstream_resolve(u);
}

/* ------------------------------------------------------------- connecting */

/* Start connecting to a. GW_OK: connecting (the event callback will tell);
 * GW_ERR: failed at once, c->why says why, c->bev is NULL. */
static int conn_open(struct gw_upconn *c, const union up_addr *a)
{
    struct gw_upstream *u = c->u;
    struct bufferevent *bev;
    SSL *ssl = NULL;
    evutil_socket_t fd;
    int one = 1;

    if (u->ssl_ctx != NULL) {
        ssl = SSL_new(u->ssl_ctx);
        if (ssl == NULL) {
            snprintf(c->why, sizeof(c->why), "cannot create a TLS session: %s",
                     tls_reason(ERR_get_error()));
            return GW_ERR;
        }
        SSL_set_app_data(ssl, u);
        if (!u->host_is_ip) /* SNI carries host names only (RFC 6066 §3) */
            SSL_set_tlsext_host_name(ssl, u->host);
        if (u->cfg->tls_verify) {
            int ok;

            if (u->host_is_ip) {
                ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), u->host);
            } else {
                SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                ok = SSL_set1_host(ssl, u->host);
            }
            if (ok != 1) {
                snprintf(c->why, sizeof(c->why), "cannot set the name to verify");
                SSL_free(ssl);
                return GW_ERR;
            }
        }
        if (u->session != NULL)
            SSL_set_session(ssl, u->session);
        bev = bufferevent_openssl_socket_new(u->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        /* On failure libevent may or may not have freed ssl: leak, never
         * double-free (out of memory only). */
    } else {
        bev = bufferevent_socket_new(u->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (bev == NULL) {
        snprintf(c->why, sizeof(c->why), "out of memory");
        return GW_ERR;
    }
    c->bev = bev;
    bufferevent_setcb(bev, read_cb, write_cb, event_cb, c);
    /* Uploads: one writev (plain) or one pass of SSL_writes (TLS) takes up to
     * 256 KiB of the output instead of 16 KiB: fewer passes per MiB. */
    bufferevent_set_max_single_write(bev, UP_WRITE_MAX);
    if (bufferevent_socket_connect(bev, &a->sa, (int)addr_len(a)) != 0) {
        snprintf(c->why, sizeof(c->why), "%s",
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        conn_drop_bev(c);
        return GW_ERR;
    }
    fd = bufferevent_getfd(bev);
    if (fd >= 0) /* requests are written whole or streamed: never wait for Nagle */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (fd >= 0 && u->ssl_ctx == NULL) {
        /* Plain TCP: reads and writes by this file (see the top comment).
         * Without memory for it, the bufferevent does all as over TLS. */
        c->rev = event_new(u->base, fd, EV_READ | EV_PERSIST, sock_read_cb, c);
        if (c->rev != NULL && evbuffer_add_cb(bufferevent_get_output(bev), out_cb, c) == NULL) {
            event_free(c->rev);
            c->rev = NULL;
        }
    }
    return GW_OK;
}

static void conn_connect_next(struct gw_upconn *c)
{
    struct gw_upstream *u = c->u;

    while (c->next_addr < c->naddrs) {
        if (conn_open(c, &c->addrs[c->next_addr++]) == GW_OK) {
            c->phase = PH_CONNECTING;
            return;
        }
    }
    upstream_forget_addrs(u); /* perhaps stale: the next lease looks up again */
    conn_fail(c, 502, "cannot connect to upstream %s:%d: %s", u->host, port_of(u),
              c->why[0] ? c->why : "no address");
}

/* Connected (and TLS handshake done): deliver CONNECTED. Also the hand-over of
 * a pooled connection. */
static void conn_activate(struct gw_upconn *c)
{
    const struct gw_config *cfg = c->u->cfg;
    struct timeval wtv;

    c->phase = PH_ACTIVE;
    event_del(c->timer);
    if (c->configured) { /* a pooled plain-TCP connection: all set, c->rev on */
        if (c->paused)
            event_del(c->rev);
        deliver(c, GW_UP_CONNECTED);
        return;
    }
    /* A close without close_notify is an EOF like any other once connected
     * (the framing tells truncation); during the handshake it stays an error,
     * so that a refused connect is reported with its errno. */
    if (c->u->ssl_ctx != NULL)
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
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
         * this holds across leases (c->configured). */
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        c->wpending = 0;
        c->configured = 1;
        if (!c->paused)
            event_add(c->rev, NULL);
    } else {
        bufferevent_enable(c->bev, c->paused ? EV_WRITE : EV_READ | EV_WRITE);
    }
    deliver(c, GW_UP_CONNECTED);
}

/* The connect or the handshake failed: try the next address, or fail. A TLS
 * failure is not retried elsewhere: every address serves the same name. */
static void conn_connect_failed(struct gw_upconn *c, short what)
{
    struct gw_upstream *u = c->u;
    int e = EVUTIL_SOCKET_ERROR();

    if (u->ssl_ctx != NULL) {
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        long vr = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
        unsigned long first = 0, got;

        /* libevent 2.1 lists the SSL_get_error() code (a small number) ahead
         * of OpenSSL's own queue; SSL_ERROR_SYSCALL alone means the socket
         * failed (refused, reset) and errno says why. Keep the first real
         * OpenSSL error. */
        while ((got = bufferevent_get_openssl_error(c->bev)) != 0) {
            if (first == 0 && got > 0xff && ERR_GET_LIB(got) != ERR_LIB_SYS)
                first = got;
            else if (first == 0 && ERR_GET_LIB(got) == ERR_LIB_SYS && ERR_GET_REASON(got))
                e = ERR_GET_REASON(got);
        }
        if (vr != X509_V_OK) {
            conn_drop_bev(c);
            conn_fail(c, 502, "upstream %s:%d: certificate verify failed: %s", u->host,
                      port_of(u), X509_verify_cert_error_string(vr));
            return;
        }
        if (first != 0) {
            char why[128];

            tls_reason_buf(first, why, sizeof(why));
            conn_drop_bev(c);
            conn_fail(c, 502, "upstream %s:%d: TLS handshake failed: %s", u->host, port_of(u),
                      why);
            return;
        }
    }
    if ((what & BEV_EVENT_ERROR) && e != 0 && e != EAGAIN && e != EINPROGRESS)
        snprintf(c->why, sizeof(c->why), "%s", evutil_socket_error_to_string(e));
    else
        snprintf(c->why, sizeof(c->why), "connection closed%s",
                 u->ssl_ctx ? " during the TLS handshake" : "");
    conn_drop_bev(c);
    conn_connect_next(c);
}

/* ------------------------------------------------------ response parsing */

static int head_error(struct gw_upconn *c, const char *msg)
{
    c->parse_failed = 1;
    gw_error_set(&c->err, 502, "upstream_error", "bad_gateway", NULL, "%s", msg);
    return -1;
}

static int head_append(struct gw_upconn *c, const char *at, size_t len)
{
    if (len > sizeof(c->head) - c->head_len)
        return head_error(c, "upstream response headers too large");
    memcpy(c->head + c->head_len, at, len);
    c->head_len += (unsigned)len;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct gw_upconn *c = p->data;
    struct up_header *h;

    if (c->head_done) /* trailer of a chunked body: not relayed */
        return 0;
    if (c->nhdrs == 0 || c->in_value) {
        if (c->nhdrs == UP_HEADERS_MAX)
            return head_error(c, "upstream response has too many headers");
        h = &c->hdrs[c->nhdrs++];
        h->name_off = (uint16_t)c->head_len;
        h->name_len = 0;
        h->value_off = (uint16_t)c->head_len;
        h->value_len = 0;
        c->in_value = 0;
    }
    if (head_append(c, at, len) != 0)
        return -1;
    c->hdrs[c->nhdrs - 1].name_len += (uint16_t)len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct gw_upconn *c = p->data;
    struct up_header *h;

    if (c->head_done || c->nhdrs == 0)
        return 0;
    h = &c->hdrs[c->nhdrs - 1];
    if (!c->in_value) {
        c->in_value = 1;
        h->value_off = (uint16_t)c->head_len;
        h->value_len = 0;
    }
    if (head_append(c, at, len) != 0)
        return -1;
    h->value_len += (uint16_t)len;
    return 0;
}

/* Decide the framing of the body (RFC 9112 §6.3) and stop the parser: the
 * caller delivers HEADERS before any body byte moves. */
static int on_headers_complete(http_parser *p)
{
    struct gw_upconn *c = p->data;
    unsigned status = p->status_code;

    http_parser_pause(p, 1);
    if (status >= 100 && status < 200) {
        if (status == 101)
            return head_error(c, "upstream switched protocols (101) unexpectedly");
        c->stop = STOP_INTERIM;
        return 0;
    }
    c->head_done = 1;
    c->status = (int)status;
    if (c->no_body || status == 204 || status == 304) {
        c->rs = RS_DONE;
        c->content_length = 0;
        p->flags |= F_SKIPBODY; /* for http_should_keep_alive */
    } else if (p->flags & F_CHUNKED) {
        c->rs = RS_CHUNKED;
    } else if (p->uses_transfer_encoding) {
        c->rs = RS_EOF; /* a transfer coding other than chunked: until close */
    } else if (p->content_length != UINT64_MAX) {
        if (p->content_length > (uint64_t)INT64_MAX)
            return head_error(c, "upstream Content-Length out of range");
        c->content_length = (int64_t)p->content_length;
        c->body_left = p->content_length;
        c->rs = c->body_left == 0 ? RS_DONE : RS_LENGTH;
    } else {
        c->rs = RS_EOF;
    }
    c->keepalive = c->rs != RS_EOF && http_should_keep_alive(p);
    c->stop = STOP_HEAD;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct gw_upconn *c = p->data;

    c->body_at = at;
    c->body_len = len;
    c->stop = STOP_BODY;
    http_parser_pause(p, 1);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct gw_upconn *c = p->data;

    c->stop = STOP_MESSAGE;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Run the parser over the first segment of `in`, consuming what it parsed and
 * moving the body range it reported. Returns STEP_HEAD when the final head is
 * complete, GW_OK after other progress, GW_ERR with c->err filled. */
static int conn_parse(struct gw_upconn *c, struct evbuffer *in, size_t *added)
{
    struct evbuffer_iovec vs[4], v = { NULL, 0 };
    const char *seg;
    size_t n, off;
    enum http_errno e;
    int i, nv = evbuffer_peek(in, -1, NULL, vs, 4);

    for (i = 0; i < nv && i < 4 && v.iov_len == 0; i++) /* (skip an empty chain) */
        v = vs[i];
    if (v.iov_len == 0)
        return GW_AGAIN;
    seg = v.iov_base;
    c->stop = STOP_NONE;
    c->body_len = 0;
    n = http_parser_execute(&c->parser, &parser_settings, seg, v.iov_len);
    e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->parse_failed)
        return GW_ERR;
    if ((e != HPE_OK && e != HPE_PAUSED) || (n == 0 && c->stop == STOP_NONE)) {
        gw_error_set(&c->err, 502, "upstream_error", "bad_gateway", NULL,
                     "invalid upstream response: %s", http_errno_description(e));
        return GW_ERR;
    }
    /* Empty chains before seg hold no bytes: offsets from seg are offsets
     * into in. */
    if (c->stop == STOP_BODY) {
        off = (size_t)(c->body_at - seg);
        evbuffer_drain(in, off);
        evbuffer_remove_buffer(in, c->body, c->body_len);
        evbuffer_drain(in, n - off - c->body_len);
        *added += c->body_len;
    } else {
        evbuffer_drain(in, n);
    }
    if (e == HPE_PAUSED)
        http_parser_pause(&c->parser, 0);

    switch (c->stop) {
    case STOP_HEAD:
    case STOP_INTERIM:
        /* Paused in on_headers_complete, the parser stopped on the head's last
         * LF. A chunked body goes on through the parser, which takes that LF
         * again; otherwise the parser's work is done: consume the LF here. */
        if (n >= v.iov_len || seg[n] != '\n') {
            gw_error_set(&c->err, 502, "upstream_error", "bad_gateway", NULL,
                         "invalid upstream response head");
            return GW_ERR;
        }
        if (c->stop == STOP_INTERIM) {
            evbuffer_drain(in, 1);
            http_parser_init(&c->parser, HTTP_RESPONSE);
            c->parser.data = c;
            c->nhdrs = 0;
            c->head_len = 0;
            c->in_value = 0;
            return GW_OK;
        }
        if (c->rs != RS_CHUNKED)
            evbuffer_drain(in, 1);
        return STEP_HEAD;
    case STOP_MESSAGE:
        c->rs = RS_DONE;
        return GW_OK;
    default:
        return GW_OK;
    }
}

/* One unit of read-side work. STEP_HEAD: head complete; GW_OK: progress;
 * GW_AGAIN: needs more input; GW_ERR: c->err filled. */
static int conn_read_step(struct gw_upconn *c, struct evbuffer *in, size_t *added)
{
    size_t avail = evbuffer_get_length(in), n;

    switch (c->rs) {
    case RS_HEAD:
    case RS_CHUNKED:
        return avail ? conn_parse(c, in, added) : GW_AGAIN;
    case RS_LENGTH:
        if (avail == 0)
            return GW_AGAIN;
        n = avail < c->body_left ? avail : (size_t)c->body_left;
        evbuffer_remove_buffer(in, c->body, n);
        c->body_left -= n;
        *added += n;
        if (c->body_left == 0)
            c->rs = RS_DONE;
        return GW_OK;
    case RS_EOF:
        if (avail == 0)
            return GW_AGAIN;
        evbuffer_add_buffer(c->body, in);
        *added += avail;
        return GW_OK;
    case RS_DONE:
        break;
    }
    return GW_AGAIN;
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
 * Adds the bytes read to *added. Does nothing over TLS, after EOF, or when
 * the last read into the input came back short (c->drained): a readv then
 * would most likely find nothing. */
static void conn_read_direct(struct gw_upconn *c, size_t *added)
{
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    size_t want = UP_READ_FIRST;

    if (c->u->ssl_ctx != NULL || c->eof || c->drained || fd < 0)
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
        do
            n = readv(fd, iov, nv);
        while (n < 0 && errno == EINTR);
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

        r = conn_read_step(c, in, &added);
        c->rx += before - evbuffer_get_length(in); /* (a failed step takes nothing) */
        if (r == GW_ERR) {
            conn_error(c);
            return;
        }
        if (r == GW_AGAIN)
            break;
        if (r == STEP_HEAD) {
            if (c->rs != RS_DONE)
                timer_set(c, c->u->cfg->idle_timeout_ms);
            deliver(c, GW_UP_HEADERS);
            if (conn_gone(c) || c->paused)
                return;
        }
    }
    /* The input is empty (or rs is RS_DONE): read on from the socket itself. */
    if (c->rs == RS_LENGTH || c->rs == RS_EOF)
        conn_read_direct(c, &added);
    if (added > 0) {
        if (c->rs != RS_DONE && !c->eof)
            timer_set(c, c->u->cfg->idle_timeout_ms);
        deliver(c, GW_UP_BODY);
        if (conn_gone(c) || c->paused)
            return;
    }
    if (c->rs != RS_DONE && c->eof && evbuffer_get_length(in) == 0) {
        if (c->rs != RS_EOF) {
            conn_fail(c, 502, "upstream closed the connection before the response was complete");
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
        deliver(c, GW_UP_DONE);
    }
}

/* --------------------------------------------------- libevent entry points */

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_upconn *c = arg;

    conn_enter(c);
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
            conn_activate(c);
        } else {
            if (c->pooled) { /* the server closed it meanwhile: connect afresh */
                conn_drop_bev(c);
                c->pooled = 0;
                timer_set(c, c->u->cfg->connect_timeout_ms);
            }
            conn_resolve(c);
        }
    } else if (c->phase == PH_ACTIVE) {
        conn_progress(c);
    }
    conn_leave(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_upconn *c = arg;
    const struct gw_config *cfg = c->u->cfg;

    if (c->phase == PH_IDLE) { /* idle too long in the pool */
        pool_remove(c);
        conn_free(c);
        return;
    }
    conn_enter(c);
    switch (c->phase) {
    case PH_RESOLVING:
        TAILQ_REMOVE(&c->u->waiting, c, link);
        /* fall through */
    case PH_START:
    case PH_CONNECTING:
        conn_drop_bev(c);
        conn_fail(c, 504, "upstream connect to %s:%d timed out after %d ms", c->u->host,
                  port_of(c->u), cfg->connect_timeout_ms);
        break;
    case PH_ACTIVE:
        if (!c->head_done)
            conn_fail(c, 504, "upstream did not respond within %d ms", cfg->response_timeout_ms);
        else
            conn_fail(c, 504, "upstream response stalled for %d ms", cfg->idle_timeout_ms);
        break;
    default:
        break;
    }
    conn_leave(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct gw_upconn *c = arg;

    conn_enter(c);
    /* conn_progress takes all of the input each time (unless paused, and then
     * no read comes): what is there now is this pass's read. Less than
     * libevent's most means the socket had no more (conn_read_direct). */
    c->drained = evbuffer_get_length(bufferevent_get_input(bev)) < UP_BEV_READ;
    conn_progress(c);
    c->drained = 0;
    conn_leave(c);
}

/* Plain TCP, head or chunked body: one readv into the bufferevent's input, as
 * libevent's own read would, but without its ioctl(FIONREAD): UP_READ_HEAD
 * bytes for a head (what libevent reads), UP_READ_FIRST for a chunked body. Sets c->drained when the socket had
 * no more, c->eof (reading off) on EOF or an error. Returns GW_ERR only when
 * out of memory. */
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
    do
        n = readv(event_get_fd(c->rev), iov, nv);
    while (n < 0 && errno == EINTR);
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

/* Plain TCP: the socket is readable (data, EOF or an error), in any phase
 * where c->rev is on: in the pool, leased but not yet handed over, or active
 * (not paused: pausing takes c->rev off). */
static void sock_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_upconn *c = arg;

    if (c->phase == PH_IDLE) { /* an idle connection the server spoke on or closed */
        pool_remove(c);
        conn_free(c);
        return;
    }
    conn_enter(c);
    if (c->phase == PH_START) { /* leased, not handed over: the kick connects afresh */
        c->stale = 1;
        event_del(c->rev);
    } else if (c->phase == PH_ACTIVE && c->done) { /* bytes or a close after the response */
        c->keepalive = 0;
        event_del(c->rev);
    } else if (c->phase == PH_ACTIVE) {
        /* A Content-Length or close-delimited body goes straight to c->body
         * (conn_read_direct, from conn_progress); the input is empty then. */
        if (c->rs != RS_LENGTH && c->rs != RS_EOF && sock_read(c) != GW_OK)
            conn_fail(c, 502, "out of memory reading the upstream response");
        else
            conn_progress(c);
        c->drained = 0;
    }
    conn_leave(c);
}

/* Plain TCP: bytes were added to the output. Written by flush_cb later in this
 * loop pass (so that what the proxy adds in one callback goes out in one
 * writev), unless the bufferevent is already waiting to write. */
static void out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct gw_upconn *c = arg;

    if (info->n_added > 0 && !c->wpending && c->phase == PH_ACTIVE)
        event_active(c->flush, EV_TIMEOUT, 1);
}

/* Plain TCP: write the output straight to the socket, without the epoll_ctl
 * pair that turning the bufferevent's write event on and off costs per
 * request. What does not go out at once (a full socket buffer, an error) is
 * left to the bufferevent: c->wpending, its write event and write timeout on,
 * errors reported to event_cb as before; write_cb turns it off once the output
 * is empty. GW_UP_WRITABLE as the bufferevent would deliver it: after a write
 * that leaves the output at or below the low watermark. */
static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gw_upconn *c = arg;
    struct evbuffer *out;
    int n;

    conn_enter(c);
    if (c->phase == PH_ACTIVE && c->rev != NULL && !c->wpending && !c->write_failed) {
        out = bufferevent_get_output(c->bev);
        n = evbuffer_write_atmost(out, event_get_fd(c->rev), UP_WRITE_MAX);
        if (evbuffer_get_length(out) > 0) {
            c->wpending = 1;
            bufferevent_enable(c->bev, EV_WRITE);
        }
        if (n > 0 && evbuffer_get_length(out) <= UP_WRITE_LOWAT)
            deliver(c, GW_UP_WRITABLE);
    }
    conn_leave(c);
}

/* Output fell to the low watermark: the proxy decides whether it has more. */
static void write_cb(struct bufferevent *bev, void *arg)
{
    struct gw_upconn *c = arg;

    conn_enter(c);
    if (c->wpending && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        bufferevent_disable(bev, EV_WRITE); /* direct writes again (plain TCP) */
        c->wpending = 0;
    }
    if (c->phase == PH_ACTIVE && !c->write_failed)
        deliver(c, GW_UP_WRITABLE);
    conn_leave(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct gw_upconn *c = arg;

    conn_enter(c);
    if (c->phase == PH_CONNECTING) {
        if (what & BEV_EVENT_CONNECTED)
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
            conn_fail(c, 504, "upstream did not accept the request for %d ms",
                      c->u->cfg->idle_timeout_ms);
        } else if ((what & BEV_EVENT_WRITING) && c->u->ssl_ctx == NULL) {
            /* The server stopped reading the request: it may have answered
             * early (413, 401) and closed. The answer is read on, what is left
             * to send stays unsent (the output then never drains, so the proxy
             * stays paused), and the response timeout bounds the wait. */
            c->write_failed = 1;
            if (!c->head_done && !c->request_sent)
                timer_set(c, c->u->cfg->response_timeout_ms);
        } else {
            /* EOF or reset (a TLS bufferevent stops both directions on any
             * error): finish with what was received. */
            c->eof = 1;
            if (what & BEV_EVENT_WRITING)
                c->write_failed = 1;
            conn_progress(c);
        }
    }
    conn_leave(c);
}

/* -------------------------------------------------------------- public API */

struct gw_upstream *gw_upstream_new(struct event_base *base, const struct gw_config *cfg,
                                    SSL_CTX *ssl_ctx)
{
    struct gw_upstream *u = calloc(1, sizeof(*u));
    const char *h = cfg->upstream_host ? cfg->upstream_host : "";
    size_t hl = strlen(h);
    union up_addr *a;

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

    /* A literal address needs no lookup, ever. */
    a = &u->cache[0];
    if (evutil_inet_pton(AF_INET, u->host, &a->in.sin_addr) == 1) {
        a->in.sin_family = AF_INET;
        a->in.sin_port = htons((uint16_t)cfg->upstream_port);
        u->host_is_ip = 1;
    } else if (evutil_inet_pton(AF_INET6, u->host, &a->in6.sin6_addr) == 1) {
        a->in6.sin6_family = AF_INET6;
        a->in6.sin6_port = htons((uint16_t)cfg->upstream_port);
        u->host_is_ip = 1;
    }
    if (u->host_is_ip) {
        u->ncache = 1;
        u->cache_expires = UINT64_MAX;
    }

    /* Without a readable resolv.conf, still resolve from /etc/hosts (and fail
     * other names cleanly) rather than refuse to start. */
    u->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (u->dns == NULL) {
        u->dns = evdns_base_new(base, 0);
        if (u->dns == NULL)
            goto fail;
        evdns_base_load_hosts(u->dns, NULL);
    }
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
        pool_remove(c);
        conn_free(c);
    }
    if (u->resolving != NULL) {
        /* The lookup outlives us: it frees itself and the DNS base. */
        struct resolve *r = u->resolving;

        u->resolving = NULL;
        r->u = NULL;
        r->dns = u->dns;
        u->dns = NULL;
        if (r->req != NULL)
            evdns_getaddrinfo_cancel(r->req);
    }
    if (u->dns != NULL)
        evdns_base_free(u->dns, 0);
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
        pool_remove(c);
        event_del(c->timer);
        /* Quiet until the kick checks it is still alive and hands it over.
         * Over plain TCP c->rev stays on and marks it stale if anything comes. */
        if (c->rev == NULL) {
            bufferevent_disable(c->bev, EV_READ | EV_WRITE);
            bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
        }
        c->pooled = 1;
    } else {
        c = conn_new(u);
        if (c == NULL)
            return NULL;
        c->pooled = 0;
    }
    lease_reset(c, cb, arg);
    c->phase = PH_START;
    if (!c->pooled)
        timer_set(c, u->cfg->connect_timeout_ms);
    event_active(c->kick, EV_TIMEOUT, 1);
    return c;
}

struct evbuffer *gw_upconn_output(struct gw_upconn *c)
{
    return c->bev != NULL ? bufferevent_get_output(c->bev) : NULL;
}

size_t gw_upconn_output_pending(const struct gw_upconn *c)
{
    return c->bev != NULL ? evbuffer_get_length(bufferevent_get_output(c->bev)) : 0;
}

void gw_upconn_request_sent(struct gw_upconn *c)
{
    c->request_sent = 1;
    if (c->phase == PH_ACTIVE && !c->head_done)
        timer_set(c, c->u->cfg->response_timeout_ms);
}

void gw_upconn_expect_no_body(struct gw_upconn *c)
{
    c->no_body = 1;
}

int gw_upconn_status(const struct gw_upconn *c)
{
    return c->head_done ? c->status : 0;
}

unsigned gw_upconn_header_count(const struct gw_upconn *c)
{
    return c->head_done ? c->nhdrs : 0;
}

void gw_upconn_header_at(const struct gw_upconn *c, unsigned i, struct gw_str *name,
                         struct gw_str *value)
{
    const struct up_header *h = &c->hdrs[i];

    name->p = c->head + h->name_off;
    name->len = h->name_len;
    value->p = c->head + h->value_off;
    value->len = h->value_len;
}

struct gw_str gw_upconn_header(const struct gw_upconn *c, const char *name)
{
    size_t n = strlen(name);
    unsigned i;

    for (i = 0; i < gw_upconn_header_count(c); i++) {
        const struct up_header *h = &c->hdrs[i];

        if (h->name_len == n && strncasecmp(c->head + h->name_off, name, n) == 0)
            return (struct gw_str){ c->head + h->value_off, h->value_len };
    }
    return (struct gw_str){ NULL, 0 };
}

int64_t gw_upconn_content_length(const struct gw_upconn *c)
{
    return c->head_done ? c->content_length : -1;
}

struct evbuffer *gw_upconn_body(struct gw_upconn *c)
{
    return c->body;
}

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
            timer_set(c, c->u->cfg->idle_timeout_ms);
    }
    /* Input already buffered, an EOF already seen, or a DONE held while
     * paused get no new read event: the kick goes on with them. */
    event_active(c->kick, EV_TIMEOUT, 1);
}

const struct gw_error *gw_upconn_error(const struct gw_upconn *c)
{
    return &c->err;
}

int gw_upconn_reused(const struct gw_upconn *c)
{
    return c->reused;
}

uint64_t gw_upconn_received(const struct gw_upconn *c)
{
    /* what the reader took, plus what waits in the input (unparsed, or the
     * bytes a parse error stopped at) */
    return c->rx + (c->bev != NULL ? evbuffer_get_length(bufferevent_get_input(c->bev)) : 0);
}

void gw_upconn_release(struct gw_upconn *c)
{
    c->released = 1;
    c->cb = NULL;
    c->arg = NULL;
    if (c->depth == 0)
        conn_finish(c);
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
