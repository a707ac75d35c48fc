/*
 * reqhead.h - validation of a complete HTTP/1.x request head, before libevhtp's
 * parser sees it, and the canonical form of a head it would read differently.
 * Pure.
 *
 * libevhtp 1.2.18 answers several malformed heads by dropping the connection
 * without a response (an invalid Content-Length, a header line over 8 KiB) or
 * mis-frames them (Content-Length together with Transfer-Encoding, a
 * Transfer-Encoding other than exactly "chunked", a value starting with a tab).
 * The gateway decides the framing here, once, and hands libevhtp a head that it
 * cannot read any other way: the head as received when it is already canonical
 * (the common case, no copy), else the one gw_reqhead_canon() writes.
 */
#ifndef GW_REQHEAD_H
#define GW_REQHEAD_H

#include "gw.h"

#define GW_HEAD_LINE_MAX    8000 /* libevhtp's parser refuses longer lines (8 KiB) */
#define GW_METHOD_MAX       32
#define GW_CONN_OPTIONS_MAX 16   /* tokens of a Connection header */

/* What a checked head says. Borrowed strings point into the head. */
struct gw_reqhead {
    struct gw_str method;     /* [A-Z_-]{1,32} */
    struct gw_str target;     /* origin-form, or absolute-form (http/https) */
    struct gw_str path;       /* the target in origin-form ("/" for "http://h") */
    unsigned minor;           /* HTTP/1.minor: 0 or 1 */
    int chunked;              /* Transfer-Encoding: chunked */
    int has_length;           /* Content-Length present */
    uint64_t length;          /* its value */
    int close;                /* Connection: close */
    int keep_alive;           /* Connection: keep-alive */
    struct gw_str options[GW_CONN_OPTIONS_MAX]; /* other Connection tokens: headers to drop */
    unsigned noptions;
    int canonical;            /* 1: libevhtp reads the head as it is exactly as we do */
};

/*
 * Find the end of the request head in buf: returns the length up to and
 * including the blank line's CRLF, 0 when not yet complete, or GW_ERR (err set)
 * when what is there can already be refused: longer than max_bytes without an
 * end (431), a line over GW_HEAD_LINE_MAX (431), bare LF line endings (400).
 * Leading empty lines (CRLF) before the request line are allowed.
 */
long gw_reqhead_end(const char *buf, size_t len, size_t max_bytes, struct gw_error *err);

/*
 * Check a complete head (as delimited by gw_reqhead_end) and fill *out. GW_OK, or
 * GW_ERR with err set:
 *   400 a request line that is not METHOD SP target SP HTTP/x.y with an upper-case
 *       method, a target that is not origin- or absolute-form (`*`, authority-form,
 *       another scheme), header syntax, obsolete line folding, a control character,
 *       an invalid or conflicting Content-Length, Content-Length with
 *       Transfer-Encoding, a repeated Host, Content-Type, Authorization or
 *       Transfer-Encoding, no Host in HTTP/1.1, a Connection header naming a
 *       framing header (Content-Length, Transfer-Encoding, Host) or too many options;
 *   501 a Transfer-Encoding other than "chunked";
 *   505 an HTTP version other than 1.0 and 1.1.
 */
int gw_reqhead_check(const char *head, size_t len, struct gw_reqhead *out,
                     struct gw_error *err);

/*
 * Write the canonical form of a checked head into out: request line in
 * origin-form, every header "Name: value" with the value trimmed, Transfer-Encoding
 * as "chunked", Connection reduced to "close"/"keep-alive" (or dropped) and the
 * headers it names dropped, a repeated identical Content-Length written once.
 * out must hold at least GW_REQHEAD_CANON_CAP(len) bytes. Returns the length.
 */
#define GW_REQHEAD_CANON_CAP(len) (2 * (len) + 64)
size_t gw_reqhead_canon(const char *head, size_t len, const struct gw_reqhead *rh, char *out);

#endif
