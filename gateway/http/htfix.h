/*
 * htfix.h - the request framer: an htparser_run() interposer (see htfix.c).
 */
#ifndef GW_HTFIX_H
#define GW_HTFIX_H

#include <stddef.h>
#include <stdint.h>

/* Find the real parser, set the head size limit and the head deadline. Must run
 * before any connection is accepted; GW_ERR if the symbol cannot be found. */
int gw_htfix_init(size_t max_header_bytes, int header_timeout_ms);

struct evhtp_connection;

/* Give a new connection its framer (freed with the connection). */
int gw_htfix_attach(struct evhtp_connection *conn);

/* The connection's current request is being freed (libevhtp's request fini):
 * a held pipelined request may now be parsed, or the rest of an unfinished
 * body is to be dropped. Safe while the connection itself is being freed. */
void gw_htfix_request_done(struct evhtp_connection *conn);

/* The most body bytes one read-ahead read takes on this connection (0: the
 * default, 256 KiB): the proxy keeps it to the room left under its high
 * watermark, so that a slow upstream holds that much per upload, not a whole
 * piece more. */
void gw_htfix_read_max(struct evhtp_connection *conn, size_t max);

/* A loop's thread ends: what the framer keeps per loop goes. */
void gw_htfix_loop_end(void);

/*
 * For a drain, on the loop's thread: this loop's connections that closing now
 * would cut: bytes waiting to be read (in the socket or libevhtp's buffer), a
 * head half read, or accepted less than first_request_ms ago without a request
 * yet (its client may not have written it). An exchange under way is counted
 * by the proxy, not here; a keep-alive connection idle between requests is not
 * counted.
 */
unsigned gw_htfix_unsettled(int64_t first_request_ms);

#endif
