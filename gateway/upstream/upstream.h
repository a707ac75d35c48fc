/*
 * upstream.h - the HTTP/1.1 client to the video service: libevent bufferevents
 * (+ OpenSSL: SNI, certificate and host-name verification), responses parsed by
 * http_parser, a keep-alive pool per thread. I/O module; one instance per event
 * loop, never shared between threads.
 *
 * Lifecycle of one lease, as the proxy sees it:
 *
 *   c = gw_upstream_lease(u, cb, arg)      pooled idle connection or a new one
 *     cb(GW_UP_CONNECTED)                  (always asynchronous) write the request
 *                                          head and body into gw_upconn_output(c)
 *     cb(GW_UP_WRITABLE)                   output fell below the low watermark:
 *                                          resume reading the client
 *   gw_upconn_request_sent(c)              the whole request is written: the
 *                                          response timeout starts
 *     cb(GW_UP_HEADERS)                    status and headers are readable
 *     cb(GW_UP_BODY)  (0..n times)         de-chunked body bytes wait in
 *                                          gw_upconn_body(c): move them out
 *     cb(GW_UP_DONE)                       response complete
 *     cb(GW_UP_ERROR)                      at any point: gw_upconn_error(c) says
 *                                          why (502 bad_gateway / 504 gateway_timeout)
 *   gw_upconn_release(c)                   exactly once, from anywhere (also from
 *                                          inside cb): after it no callback comes.
 *                                          The connection goes back to the pool
 *                                          only if the response was complete, the
 *                                          request fully sent, and both sides
 *                                          allow keep-alive; otherwise it is closed.
 *
 * Responses may arrive before the request is fully sent (an early 413/401 from
 * the service): HEADERS/BODY/DONE are delivered as they come.
 * A 1xx interim response is skipped. HEAD-less responses (204, 304) have no body.
 *
 * Details of the implementation the proxy may rely on:
 * - While reading is paused no read-side event comes (BODY, DONE, or the
 *   premature-close ERROR): a DONE reached while paused is held until
 *   gw_upconn_pause_read(c, 0), and comes then even if no byte is left.
 * - After DONE no ERROR comes (a failure of the rest of an early-answered
 *   upload only makes the connection unusable); WRITABLE may still come.
 * - Timeouts: connect_timeout_ms covers DNS, TCP and TLS; response_timeout_ms
 *   runs from gw_upconn_request_sent() to the response head; idle_timeout_ms
 *   bounds the gap between response reads (not while paused) and a request
 *   output that does not drain (the upstream stopped reading).
 */
#ifndef GW_UPSTREAM_H
#define GW_UPSTREAM_H

#include <stdint.h>

#include <event2/event.h>
#include <event2/buffer.h>
#include <openssl/ssl.h>

#include "config.h"
#include "gw.h"

struct gw_upstream;
struct gw_upconn;

enum gw_up_event {
    GW_UP_CONNECTED = 0,
    GW_UP_WRITABLE,
    GW_UP_HEADERS,
    GW_UP_BODY,
    GW_UP_DONE,
    GW_UP_ERROR,
};

typedef void (*gw_up_cb)(struct gw_upconn *c, enum gw_up_event ev, void *arg);

/* Build the TLS client context for cfg (NULL when the upstream is http://).
 * Verification on unless cfg->tls_verify == 0; CA from cfg->ca_file or the
 * system paths; TLS >= 1.2; ALPN http/1.1; client session cache on.
 * Returns GW_ERR with a message in err on failure. Shared by all threads. */
int gw_upstream_tls_ctx(const struct gw_config *cfg, SSL_CTX **out, struct gw_error *err);

/* One per event loop. cfg and ssl_ctx must outlive it (on reload, build a new one
 * and free the old when its leases are gone). Creates the loop's evdns base.
 * gw_upstream_free() closes the pooled connections; call it with no lease
 * outstanding and not from inside a callback of one of its connections. */
struct gw_upstream *gw_upstream_new(struct event_base *base, const struct gw_config *cfg,
                                    SSL_CTX *ssl_ctx);
void gw_upstream_free(struct gw_upstream *u);

/* Idle keep-alive connections pooled now (for metrics and tests). */
unsigned gw_upstream_idle_count(const struct gw_upstream *u);

/* Returns NULL only when out of memory. The first callback never runs before
 * this returns. */
struct gw_upconn *gw_upstream_lease(struct gw_upstream *u, gw_up_cb cb, void *arg);

/* Where the request goes (the bufferevent's output). Valid from CONNECTED until
 * release. Add with evbuffer_add_buffer() to move chains, not copy. */
struct evbuffer *gw_upconn_output(struct gw_upconn *c);

/* Bytes waiting in the output: the proxy pauses the client above its high
 * watermark and resumes on GW_UP_WRITABLE. */
size_t gw_upconn_output_pending(const struct gw_upconn *c);

/* Write the output to the socket now instead of later in this loop pass (plain
 * TCP; nothing while a write is pending, or over TLS). For large body pieces:
 * the bytes the socket takes leave the gateway's memory at once, so an upload
 * holds only what the upstream has not accepted yet. Small requests are better
 * left to the pass's single writev. */
void gw_upconn_flush(struct gw_upconn *c);

void gw_upconn_request_sent(struct gw_upconn *c);

/*
 * Start a request head in gw_upconn_output(c): "METHOD <base>/v1/videos<tail>[?query]
 * HTTP/1.1", Host, and "Authorization: Bearer <upstream key #key>". tail (may be
 * empty) is the path after /v1/videos ("/ID", "/ID/content"), query without its
 * '?' (empty: none). A base ending in /v1, as OpenAI SDKs take it, stands for the
 * request's own /v1. The caller adds the other headers and the blank line.
 */
void gw_upconn_start_request(struct gw_upconn *c, const struct gw_config *cfg,
                             const char *method, struct gw_str tail, struct gw_str query,
                             unsigned key);

/* The request is HEAD: its response has no body whatever its headers say.
 * Call before the response head arrives (e.g. on CONNECTED). */
void gw_upconn_expect_no_body(struct gw_upconn *c);

/* Response head, valid from HEADERS until release. */
int gw_upconn_status(const struct gw_upconn *c);
unsigned gw_upconn_header_count(const struct gw_upconn *c);
void gw_upconn_header_at(const struct gw_upconn *c, unsigned i, struct gw_str *name,
                         struct gw_str *value);
/* Case-insensitive lookup of the first header named `name`; {NULL,0} if absent. */
struct gw_str gw_upconn_header(const struct gw_upconn *c, const char *name);
/* Content-Length of the response, or -1 (chunked or close-delimited). */
int64_t gw_upconn_content_length(const struct gw_upconn *c);

/* Body bytes received and not yet taken (already de-chunked). */
struct evbuffer *gw_upconn_body(struct gw_upconn *c);

/* Stop (1) / resume (0) reading the response: backpressure from a slow client. */
void gw_upconn_pause_read(struct gw_upconn *c, int paused);

/* Why GW_UP_ERROR came. */
const struct gw_error *gw_upconn_error(const struct gw_upconn *c);

/* Whether this lease reused a pooled connection (for logs and tests). */
int gw_upconn_reused(const struct gw_upconn *c);

/* Bytes of response received on this lease so far (head included, 1xx too).
 * 0 at GW_UP_ERROR means the connection failed before the upstream said
 * anything: the only case in which a reused connection may be called stale.
 * An invalid answer (a bad head, headers too large) has received bytes. */
uint64_t gw_upconn_received(const struct gw_upconn *c);

void gw_upconn_release(struct gw_upconn *c);

#endif
