/*
 * htfix.h - the htparser_run() interposer (see htfix.c).
 */
#ifndef GW_HTFIX_H
#define GW_HTFIX_H

#include <stddef.h>

/* Find the real parser and set the head size limit. Must run before any
 * connection is accepted; GW_ERR if the symbol cannot be found. */
int gw_htfix_init(size_t max_header_bytes);

struct evhtp_connection;

/* Give a new connection its head stash (freed with the connection). */
int gw_htfix_attach(struct evhtp_connection *conn);

#endif
