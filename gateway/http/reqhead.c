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

static int str_ieq(struct gw_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && strncasecmp(s.p, lit, n) == 0;
}

/* The next CRLF-ended line at *pos (head already delimited by gw_reqhead_end).
 * Returns 0 at the end of the head or on a malformed line ending. */
static int next_line(const char **pos, const char *end, struct gw_str *line)
{
    const char *p = *pos, *eol;

    if (p >= end || (eol = memchr(p, '\r', (size_t)(end - p))) == NULL || eol + 1 >= end ||
        eol[1] != '\n')
        return 0;
    *line = (struct gw_str){ p, (size_t)(eol - p) };
    *pos = eol + 2;
    return 1;
}

/* A header line split into its name and trimmed value. */
struct field {
    struct gw_str name, value;
    int raw_canonical; /* libevhtp reads the same value: no leading tab, no trailing OWS */
};

static int split_field(struct gw_str line, struct field *f, struct gw_error *err)
{
    const char *colon = memchr(line.p, ':', line.len);

    if (line.p[0] == ' ' || line.p[0] == '\t')
        return bad(err, 400, "invalid_request", "Obsolete header line folding");
    if (colon == NULL || colon == line.p)
        return bad(err, 400, "invalid_request", "Malformed header line");
    for (const char *c = line.p; c < colon; c++) {
        if (!is_tchar((unsigned char)*c))
            return bad(err, 400, "invalid_request", "Invalid character in a header name");
    }
    for (const char *c = colon + 1; c < line.p + line.len; c++) {
        unsigned char u = (unsigned char)*c;
        if ((u < 0x20 && u != '\t') || u == 0x7f)
            return bad(err, 400, "invalid_request", "Invalid character in a header value");
    }
    const char *raw = colon + 1, *rend = line.p + line.len;
    f->name = (struct gw_str){ line.p, (size_t)(colon - line.p) };
    f->value = trim(raw, (size_t)(rend - raw));
    /* libevhtp skips spaces (not tabs) before a value and keeps trailing ones */
    while (raw < rend && *raw == ' ')
        raw++;
    f->raw_canonical = f->value.len == 0 || (raw == f->value.p && rend == raw + f->value.len);
    return GW_OK;
}

static int check_request_line(struct gw_str l, struct gw_reqhead *rh, struct gw_error *err)
{
    const char *p = l.p;
    size_t n = l.len, i = 0;

    /* upper-case letters and '_' only: what libevhtp's parser reads as a method
     * (and nginx's rule); a lower-case "get" is not GET */
    while (i < n && ((p[i] >= 'A' && p[i] <= 'Z') || p[i] == '_'))
        i++;
    if (i == 0 || i > GW_METHOD_MAX || i >= n || p[i] != ' ')
        return bad(err, 400, "invalid_request", "Malformed request line");
    rh->method = (struct gw_str){ p, i };
    size_t t = ++i;
    while (i < n && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f)
        i++;
    if (i == t || i >= n || p[i] != ' ')
        return bad(err, 400, "invalid_request", "Malformed request target");
    rh->target = (struct gw_str){ p + t, i - t };
    i++;
    /* HTTP-version = "HTTP/" DIGIT "." DIGIT */
    if (n - i != 8 || memcmp(p + i, "HTTP/", 5) != 0 || p[i + 5] < '0' || p[i + 5] > '9' ||
        p[i + 6] != '.' || p[i + 7] < '0' || p[i + 7] > '9')
        return bad(err, 400, "invalid_request", "Malformed HTTP version");
    if (p[i + 5] != '1' || (p[i + 7] != '0' && p[i + 7] != '1'))
        return bad(err, 505, "http_version_not_supported", "Only HTTP/1.0 and HTTP/1.1");
    rh->minor = (unsigned)(p[i + 7] - '0');

    /* origin-form, or absolute-form (RFC 9112 3.2.2: a server must accept it),
     * handed to libevhtp in origin-form; never asterisk- or authority-form */
    struct gw_str tg = rh->target;
    if (tg.p[0] == '/') {
        rh->path = tg;
        return GW_OK;
    }
    size_t skip = tg.len > 7 && strncasecmp(tg.p, "http://", 7) == 0    ? 7
                  : tg.len > 8 && strncasecmp(tg.p, "https://", 8) == 0 ? 8
                                                                         : 0;
    if (skip == 0)
        return bad(err, 400, "invalid_request",
                   "Unsupported request target: use an absolute path such as /v1/videos");
    size_t a = skip;
    while (a < tg.len && tg.p[a] != '/' && tg.p[a] != '?')
        a++;
    if (a == skip)
        return bad(err, 400, "invalid_request", "Malformed request target");
    rh->path = (struct gw_str){ tg.p + a, tg.len - a };
    rh->canonical = 0;
    return GW_OK;
}

/* The libevhtp parser recognises only these spellings of a Connection value. */
static int connection_canonical(struct gw_str v)
{
    return gw_str_eq(v, "close") || gw_str_eq(v, "Close") || gw_str_eq(v, "keep-alive") ||
           gw_str_eq(v, "Keep-Alive");
}

static int connection_options(struct gw_str v, struct gw_reqhead *rh, struct gw_error *err)
{
    const char *p = v.p, *end = v.p + v.len;

    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        struct gw_str tok = trim(p, (size_t)(e - p));
        p = comma ? comma + 1 : end;
        if (tok.len == 0)
            continue; /* empty list elements are allowed (RFC 9110 5.6.1) */
        for (size_t i = 0; i < tok.len; i++) {
            if (!is_tchar((unsigned char)tok.p[i]))
                return bad(err, 400, "invalid_request", "Malformed Connection header");
        }
        if (str_ieq(tok, "close")) {
            rh->close = 1;
        } else if (str_ieq(tok, "keep-alive")) {
            rh->keep_alive = 1;
        } else if (str_ieq(tok, "content-length") || str_ieq(tok, "transfer-encoding") ||
                   str_ieq(tok, "host")) {
            return bad(err, 400, "invalid_request",
                       "The Connection header must not name a framing header");
        } else {
            if (rh->noptions == GW_CONN_OPTIONS_MAX)
                return bad(err, 400, "invalid_request", "Too many Connection options");
            rh->options[rh->noptions++] = tok;
        }
    }
    return GW_OK;
}

int gw_reqhead_check(const char *head, size_t len, struct gw_reqhead *rh, struct gw_error *err)
{
    const char *pos = head, *end = head + len;
    int first = 1, have_te = 0, nhost = 0, nctype = 0, nauth = 0, nconn = 0;
    struct gw_str line;

    memset(rh, 0, sizeof(*rh));
    rh->canonical = 1;
    for (;;) {
        if (!next_line(&pos, end, &line))
            return bad(err, 400, "invalid_request", "Malformed request head");
        if (line.len == 0) {
            if (first)
                continue; /* leading empty line */
            break;        /* end of head */
        }
        if (first) {
            first = 0;
            if (check_request_line(line, rh, err) != GW_OK)
                return GW_ERR;
            continue;
        }
        struct field f;
        if (split_field(line, &f, err) != GW_OK)
            return GW_ERR;
        if (!f.raw_canonical)
            rh->canonical = 0;
        struct gw_str v = f.value;
        if (str_ieq(f.name, "Content-Length")) {
            unsigned long long x = 0;
            if (v.len == 0 || v.len > 18)
                return bad(err, 400, "invalid_request", "Invalid Content-Length");
            for (size_t i = 0; i < v.len; i++) {
                if (v.p[i] < '0' || v.p[i] > '9')
                    return bad(err, 400, "invalid_request", "Invalid Content-Length");
                x = x * 10 + (unsigned)(v.p[i] - '0');
            }
            if (rh->has_length && x != rh->length)
                return bad(err, 400, "invalid_request", "Conflicting Content-Length headers");
            rh->has_length = 1;
            rh->length = x;
        } else if (str_ieq(f.name, "Transfer-Encoding")) {
            if (have_te++)
                return bad(err, 400, "invalid_request", "Repeated Transfer-Encoding header");
            /* transfer-coding names are case-insensitive (RFC 9112 7) */
            if (!str_ieq(v, "chunked"))
                return bad(err, 501, "unsupported_transfer_encoding",
                           "Only Transfer-Encoding: chunked is supported");
            rh->chunked = 1;
            if (!gw_str_eq(v, "chunked") && !gw_str_eq(v, "Chunked"))
                rh->canonical = 0;
        } else if (str_ieq(f.name, "Host")) {
            if (nhost++)
                return bad(err, 400, "invalid_request", "Repeated Host header");
        } else if (str_ieq(f.name, "Content-Type")) {
            /* two: an upstream that reads the other would see another boundary */
            if (nctype++)
                return bad(err, 400, "invalid_request", "Repeated Content-Type header");
        } else if (str_ieq(f.name, "Authorization")) {
            if (nauth++)
                return bad(err, 400, "invalid_request", "Repeated Authorization header");
        } else if (str_ieq(f.name, "Connection")) {
            if (connection_options(v, rh, err) != GW_OK)
                return GW_ERR;
            if (nconn++ || !connection_canonical(v))
                rh->canonical = 0;
        }
    }
    if (first)
        return bad(err, 400, "invalid_request", "Empty request head");
    if (rh->has_length && rh->chunked)
        return bad(err, 400, "invalid_request",
                   "Content-Length and Transfer-Encoding must not both be present");
    if (rh->minor == 1 && nhost == 0)
        return bad(err, 400, "invalid_request", "An HTTP/1.1 request must have a Host header");
    return GW_OK;
}

static char *put(char *o, const char *p, size_t n)
{
    memcpy(o, p, n);
    return o + n;
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

size_t gw_reqhead_canon(const char *head, size_t len, const struct gw_reqhead *rh, char *out)
{
    const char *pos = head, *end = head + len;
    char *o = out;
    int first = 1, wrote_cl = 0;
    struct gw_str line;
    struct gw_error err;

    while (next_line(&pos, end, &line)) {
        if (line.len == 0) {
            if (first)
                continue;
            break;
        }
        if (first) {
            first = 0;
            o = put(o, rh->method.p, rh->method.len);
            o = PUT_LIT(o, " ");
            if (rh->path.len == 0 || rh->path.p[0] != '/')
                o = PUT_LIT(o, "/");
            o = put(o, rh->path.p, rh->path.len);
            o = PUT_LIT(o, " ");
            o = put(o, line.p + line.len - 8, 8); /* HTTP/1.x */
            o = PUT_LIT(o, "\r\n");
            continue;
        }
        struct field f;
        if (split_field(line, &f, &err) != GW_OK)
            continue; /* not reached: the head was checked */
        if (str_ieq(f.name, "Connection"))
            continue; /* written once, below */
        int named = 0;
        for (unsigned i = 0; i < rh->noptions && !named; i++)
            named = f.name.len == rh->options[i].len &&
                    strncasecmp(f.name.p, rh->options[i].p, f.name.len) == 0;
        if (named)
            continue; /* hop-by-hop by the client's word (RFC 9110 7.6.1) */
        if (str_ieq(f.name, "Content-Length") && wrote_cl++)
            continue;
        o = put(o, f.name.p, f.name.len);
        o = PUT_LIT(o, ": ");
        if (str_ieq(f.name, "Transfer-Encoding"))
            o = PUT_LIT(o, "chunked");
        else
            o = put(o, f.value.p, f.value.len);
        o = PUT_LIT(o, "\r\n");
    }
    if (rh->close)
        o = PUT_LIT(o, "Connection: close\r\n");
    else if (rh->keep_alive)
        o = PUT_LIT(o, "Connection: keep-alive\r\n");
    o = PUT_LIT(o, "\r\n");
    return (size_t)(o - out);
}
