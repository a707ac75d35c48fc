/*
 * proxy.h - the lifecycle of one exchange (client request -> upstream ->
 * client response), driven by libevhtp hooks and upstream callbacks.
 */
#ifndef GW_PROXY_H
#define GW_PROXY_H

#include <evhtp/evhtp.h>

#include "server.h"

/* Install the per-connection hooks (called from the post-accept callback). */
void gw_proxy_attach(evhtp_connection_t *conn, struct gw_worker *w);

/* libevhtp's request callback: the request has been read completely. */
void gw_proxy_request_cb(evhtp_request_t *req, void *arg);

/* 1 while libevhtp's parser is inside a request body on this connection (so
 * the head-completeness guard in htfix.c must not hold bytes back). */
int gw_proxy_in_body(evhtp_connection_t *conn);

/* Body bytes still to come on this connection for a request of known length
 * (0 when chunked, complete, or not in a body). */
uint64_t gw_proxy_body_remaining(evhtp_connection_t *conn);

/* libevhtp's parser refused the request body (a bad chunk size, say) and is about
 * to drop the connection: answer 400 first if nothing was answered yet. */
void gw_proxy_body_error(evhtp_connection_t *conn);

/* Answer on a connection whose head was refused before libevhtp parsed it:
 * writes the error response and closes the connection once it is flushed. */
void gw_proxy_refuse_head(evhtp_connection_t *conn, const struct gw_error *err);

#endif
