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

/* The request cannot be parsed further (a bad chunk size, say) and libevhtp is
 * about to drop the connection: write the answer straight to the socket if
 * nothing was answered yet (`why`, or a generic 400 when NULL), else flush what
 * is queued. */
void gw_proxy_body_error(evhtp_connection_t *conn, const struct gw_error *why);

/* Close the connection once its output is written (no request is being served on
 * it, or the one there is over). */
void gw_proxy_close_after_flush(evhtp_connection_t *conn);

/* Answer on a connection whose head was refused before libevhtp parsed it:
 * writes the error response and closes the connection once it is flushed. */
void gw_proxy_refuse_head(evhtp_connection_t *conn, const struct gw_error *err);

#endif
