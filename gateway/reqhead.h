/*
 * reqhead.h - validation of a complete HTTP/1.x request head, before libevhtp's
 * parser sees it. Pure.
 *
 * libevhtp 1.2.18 answers several malformed heads by dropping the connection
 * without a response (an invalid Content-Length, a header line over 8 KiB) or
 * mis-frames them (Content-Length together with Transfer-Encoding, a
 * Transfer-Encoding other than exactly "chunked"). Checking the head first lets
 * the gateway answer each of them with a clear status and an OpenAI error body.
 */
#ifndef GW_REQHEAD_H
#define GW_REQHEAD_H

#include "gw.h"

#define GW_HEAD_LINE_MAX 8000 /* libevhtp's parser refuses longer lines (8 KiB) */

/*
 * Find the end of the request head in buf: returns the length up to and
 * including the blank line's CRLF, 0 when not yet complete, or GW_ERR (err set)
 * when what is there can already be refused: longer than max_bytes without an
 * end (431), a line over GW_HEAD_LINE_MAX (431), bare LF line endings (400).
 * Leading empty lines (CRLF) before the request line are allowed.
 */
long gw_reqhead_end(const char *buf, size_t len, size_t max_bytes, struct gw_error *err);

/*
 * Check a complete head (as delimited by gw_reqhead_end). GW_OK or GW_ERR with:
 * 400 bad request line / header syntax / obsolete line folding / invalid or
 * conflicting Content-Length / Content-Length with Transfer-Encoding;
 * 501 a Transfer-Encoding other than "chunked"; 505 an HTTP version other than
 * 1.0 and 1.1.
 */
int gw_reqhead_check(const char *head, size_t len, struct gw_error *err);

#endif
