/*
 * reqhead.c - request head checks (see reqhead.h for why they exist).
 */
#include <string.h>
#include <strings.h>

#include "reqhead.h"

static int bad(struct gw_error *err, int status, const char *code, const char *msg)
{
    return gw_error_set(err, status, "invalid_request_error", code, NULL, "%s", msg);
}

long gw_reqhead_end(const char *buf, size_t len, size_t max_bytes, struct gw_error *err)
{
    size_t line_start = 0;

    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (i == 0 || buf[i - 1] != '\r')
            return bad(err, 400, "invalid_request", "Bare LF line endings are not supported");
        if (i + 1 - line_start - 2 > GW_HEAD_LINE_MAX)
            return bad(err, 431, "request_header_fields_too_large",
                       "A request header line is longer than 8000 bytes");
        /* an empty line ends the head, unless it precedes the request line */
        if (i + 1 - line_start == 2 && line_start > 0) {
            int any_line = 0;
            for (size_t j = 0; j < line_start; j++) {
                if (buf[j] != '\r' && buf[j] != '\n') {
                    any_line = 1;
                    break;
                }
            }
            if (any_line) {
                if (i + 1 > max_bytes)
                    goto too_large;
                return (long)(i + 1);
            }
        }
        line_start = i + 1;
    }
    if (len - line_start > GW_HEAD_LINE_MAX)
        return bad(err, 431, "request_header_fields_too_large",
                   "A request header line is longer than 8000 bytes");
    if (len > max_bytes)
        goto too_large;
    return 0;

too_large:
    return bad(err, 431, "request_header_fields_too_large",
               "The request head is larger than the configured max_header_bytes");
}

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static struct gw_str trim(const char *p, size_t n)
{
    while (n > 0 && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    return (struct gw_str){ p, n };
}

static int check_request_line(const char *p, size_t n, struct gw_error *err)
{
    size_t i = 0;

    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ' ')
        return bad(err, 400, "invalid_request", "Malformed request line");
    size_t t = ++i;
    while (i < n && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f)
        i++;
    if (i == t || i >= n || p[i] != ' ')
        return bad(err, 400, "invalid_request", "Malformed request target");
    i++;
    /* HTTP-version = "HTTP/" DIGIT "." DIGIT */
    if (n - i != 8 || memcmp(p + i, "HTTP/", 5) != 0 || p[i + 5] < '0' || p[i + 5] > '9' ||
        p[i + 6] != '.' || p[i + 7] < '0' || p[i + 7] > '9')
        return bad(err, 400, "invalid_request", "Malformed HTTP version");
    if (p[i + 5] != '1' || (p[i + 7] != '0' && p[i + 7] != '1'))
        return bad(err, 505, "http_version_not_supported", "Only HTTP/1.0 and HTTP/1.1");
    return GW_OK;
}

int gw_reqhead_check(const char *head, size_t len, struct gw_error *err)
{
    const char *p = head, *end = head + len;
    int first = 1, have_cl = 0, have_te = 0;
    unsigned long long cl = 0;

    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        if (eol == NULL || eol + 1 >= end || eol[1] != '\n')
            return bad(err, 400, "invalid_request", "Malformed request head");
        size_t n = (size_t)(eol - p);
        const char *line = p;
        p = eol + 2;
        if (n == 0) {
            if (first)
                continue; /* leading empty line */
            break;        /* end of head */
        }
        if (first) {
            first = 0;
            if (check_request_line(line, n, err) != GW_OK)
                return GW_ERR;
            continue;
        }
        if (line[0] == ' ' || line[0] == '\t')
            return bad(err, 400, "invalid_request", "Obsolete header line folding");
        const char *colon = memchr(line, ':', n);
        if (colon == NULL || colon == line)
            return bad(err, 400, "invalid_request", "Malformed header line");
        for (const char *c = line; c < colon; c++) {
            if (!is_tchar((unsigned char)*c))
                return bad(err, 400, "invalid_request", "Invalid character in a header name");
        }
        for (const char *c = colon + 1; c < line + n; c++) {
            unsigned char u = (unsigned char)*c;
            if ((u < 0x20 && u != '\t') || u == 0x7f)
                return bad(err, 400, "invalid_request", "Invalid character in a header value");
        }
        size_t nlen = (size_t)(colon - line);
        struct gw_str v = trim(colon + 1, n - nlen - 1);
        if (nlen == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
            unsigned long long x = 0;
            if (v.len == 0 || v.len > 18)
                return bad(err, 400, "invalid_request", "Invalid Content-Length");
            for (size_t i = 0; i < v.len; i++) {
                if (v.p[i] < '0' || v.p[i] > '9')
                    return bad(err, 400, "invalid_request", "Invalid Content-Length");
                x = x * 10 + (unsigned)(v.p[i] - '0');
            }
            if (have_cl && x != cl)
                return bad(err, 400, "invalid_request", "Conflicting Content-Length headers");
            have_cl = 1;
            cl = x;
        } else if (nlen == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0) {
            if (have_te)
                return bad(err, 400, "invalid_request", "Repeated Transfer-Encoding header");
            have_te = 1;
            if (v.len != 7 || strncasecmp(v.p, "chunked", 7) != 0)
                return bad(err, 501, "unsupported_transfer_encoding",
                           "Only Transfer-Encoding: chunked is supported");
        }
    }
    if (first)
        return bad(err, 400, "invalid_request", "Empty request head");
    if (have_cl && have_te)
        return bad(err, 400, "invalid_request",
                   "Content-Length and Transfer-Encoding must not both be present");
    return GW_OK;
}
