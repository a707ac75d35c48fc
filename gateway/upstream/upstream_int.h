/*
 * upstream_int.h - what the files of the upstream client share and nothing
 * else may see: the upstream and connection structs, their states, and the
 * functions one file calls in another. Included only from gateway/upstream/;
 * the API is upstream.h, the overview in upstream.c.
 */
#ifndef GW_UPSTREAM_INT_H
#define GW_UPSTREAM_INT_H

#include <stdint.h>
#include <netinet/in.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>

#include <event2/bufferevent.h>
#include <http_parser.h>

#include "upstream.h"

#define UP_HEAD_MAX     16384       /* bytes of header names + values kept per response */
#define UP_HEADERS_MAX  64          /* headers kept per response */
#define UP_ADDRS_MAX    8           /* addresses kept from one lookup */
#define UP_WRITE_LOWAT  (64 * 1024) /* bytes: GW_UP_WRITABLE when the output falls to this */
#define UP_WRITE_MAX    (256 * 1024) /* bytes per write pass (libevent's default: 16 KiB);
                                      * over TLS also the most encrypted ahead */

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

/* A step of gw_upresp_step() that completed the head. */
#define STEP_HEAD 1

TAILQ_HEAD(conn_list, gw_upconn);

struct resolve;                             /* one lookup in flight (updns.c) */
struct evdns_base;

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
    struct bufferevent *bev;                /* owns the socket; NULL while not connecting */
    struct event *kick;                     /* zero-delay: start, CONNECTED, resumed input */
    struct event *timer;                    /* the one deadline ("Timeouts" in upconn.c) */
    struct evbuffer *body;                  /* de-chunked body for the proxy; lives with c */
    /* TLS only (NULL over plain TCP), with bev (uptls_io.c): */
    SSL *ssl;                               /* owned; its BIO writes into bev's output */
    struct evbuffer *plain;                 /* the request before encryption (the output
                                             * the proxy writes to) */
    int tls_errno;                          /* errno of the BIO's last failed read() */
    int tls_end;                            /* the read that returned bytes met the end:
                                             * 1 close_notify/EOF, -1 an error (errno
                                             * tls_end_errno); the next read returns it */
    int tls_end_errno;
    /* Both (NULL only if out of memory over plain TCP: the bufferevent reads then): */
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
    unsigned handover : 1;                  /* PH_START: the kick ran once */
    unsigned wpending : 1;                  /* the bufferevent's EV_WRITE is on */
    unsigned configured : 1;                /* bev watermarks/timeouts/cb set */
    unsigned handshaking : 1;               /* PH_CONNECTING: TCP is up, TLS is not yet */

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

/* The upstream's TCP port (host byte order). */
static inline int port_of(const struct gw_upstream *u)
{
    return u->cfg->upstream_port;
}

/* upstream.c: the pool and the lease */
/* Take c out of u->idle; it stays open. */
void gw_upstream_pool_remove(struct gw_upconn *c);
/* Bracket every entry from libevent on c's behalf; leave finishes a release. */
void gw_upstream_conn_enter(struct gw_upconn *c);
void gw_upstream_conn_leave(struct gw_upconn *c);

/* The event to the proxy, unless it released c. */
static inline void up_deliver(struct gw_upconn *c, enum gw_up_event ev)
{
    if (!c->released && c->cb != NULL)
        c->cb(c, ev, c->arg);
}

/* True when c may not be touched further in this entry: the proxy released it
 * or it failed. */
static inline int up_gone(const struct gw_upconn *c)
{
    return c->released || c->phase == PH_FAILED;
}

/* upconn.c: one connection */
/* NULL when out of memory. */
struct gw_upconn *gw_upconn_new(struct gw_upstream *u);
/* Close and free; c must be out of every list. */
void gw_upconn_free(struct gw_upconn *c);
/* Arm c->timer for ms milliseconds; ms <= 0 means no deadline. */
void gw_upconn_timer_set(struct gw_upconn *c, int ms);
/* Fill c->err, mark c failed, stop everything and deliver GW_UP_ERROR. */
void gw_upconn_fail(struct gw_upconn *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Connect to the next of c->addrs, or fail c when none is left. */
void gw_upconn_connect_next(struct gw_upconn *c);
/* The connection's bufferevent callbacks back in place (a pooled TLS lease). */
void gw_upconn_setcb(struct gw_upconn *c);

/* upwrite.c: the request */
/* Evbuffer callback of the output: bytes added, c->flush activated. */
void gw_upconn_out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg);
/* c->flush: the output written straight to the socket. */
void gw_upconn_flush_cb(evutil_socket_t fd, short what, void *arg);
/* The bufferevent's write callback: output at the low watermark. */
void gw_upconn_write_cb(struct bufferevent *bev, void *arg);
/* Up to max bytes (-1: all) of the bufferevent's output written to its socket
 * now: evbuffer_write_atmost's result. */
int gw_upconn_write_now(struct gw_upconn *c, ssize_t max);

/* updns.c: the lookup and the addresses */
/* A literal host's address cached, the DNS base made. GW_ERR: no DNS base. */
int gw_updns_init(struct gw_upstream *u);
/* The DNS base freed, or left to the lookup in flight. */
void gw_updns_free(struct gw_upstream *u);
/* From PH_START with no usable pooled connection: addresses, then connect. */
void gw_updns_resolve(struct gw_upconn *c);
/* Every address failed: look the name up again next time. */
void gw_updns_forget(struct gw_upstream *u);

/* upresp.c: the response */
/* One unit of read-side work on the input `in`. STEP_HEAD: head complete;
 * GW_OK: progress; GW_AGAIN: needs more input; GW_ERR: c->err filled. */
int gw_upresp_step(struct gw_upconn *c, struct evbuffer *in, size_t *added);

/* uptls.c: TLS */
/* The SSL of a new connection of c->u. NULL with c->why filled. */
SSL *gw_uptls_ssl_new(struct gw_upconn *c);
/* Why a handshake on ssl failed, from OpenSSL's error queue (emptied): GW_ERR,
 * msg filled, when OpenSSL knows (the certificate, the handshake); GW_OK when
 * the socket failed (*e: its errno, or 0 for a close). */
int gw_uptls_why_failed(SSL *ssl, int *e, char *msg, size_t cap);
/* OpenSSL's reason for error e ("unknown error" for 0; its code if it has no
 * reason string), into buf. */
void gw_uptls_error_string(unsigned long e, char *buf, size_t cap);

/* uptls_io.c: TLS over the connection's socket */
/* ssl's BIO: reads c's socket, writes records into c->bev's output. GW_ERR
 * when out of memory. */
int gw_uptls_io_attach(struct gw_upconn *c, SSL *ssl);
/* One handshake step. GW_OK: done; GW_AGAIN: wait for the socket to be
 * readable; GW_ERR: the certificate or the handshake failed (msg); GW_DONE:
 * the socket failed or closed (*e: errno or 0). Records to send are left in
 * the output. */
int gw_uptls_io_handshake(struct gw_upconn *c, int *e, char *msg, size_t cap);
/* Decrypt into iov like readv(2): bytes (record after record until the space is
 * full or the socket has no more), 0 at EOF (with or without close_notify),
 * -1 with errno EAGAIN when nothing is there yet, -1 with another errno when
 * the connection failed (a reset, a bad record). */
ssize_t gw_uptls_io_read(struct gw_upconn *c, const struct iovec *iov, int nv);
/* Encrypt c->plain into the output until it is empty or the output holds max
 * bytes. GW_ERR: the SSL refused (a failed connection). */
int gw_uptls_io_encrypt(struct gw_upconn *c, size_t max);
/* A connection that has been idle (pooled, or answered): 1 if nothing but
 * records without data came (a session ticket), 0 on data, a close or an
 * error. */
int gw_uptls_io_idle_alive(struct gw_upconn *c);

#endif
