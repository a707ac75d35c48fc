/*
 * upresp.c - the upstream response: http_parser's callbacks, the header block
 * kept in the connection, the framing of the body (RFC 9112 §6.3) and the
 * answers refused as invalid (a bad head, too many or too large headers, an
 * unexpected 101, a Content-Length out of range). No socket here: bytes are
 * taken from an evbuffer (the bufferevent's input) and body bytes moved to
 * c->body; upconn.c reads, delivers the events and runs the timer.
 *
 * Body bytes are never copied into a temporary heap: Content-Length and
 * close-delimited bodies are moved chain by chain from the bufferevent input
 * to c->body (evbuffer_remove_buffer) and counted here, http_parser being left
 * behind after the head; chunked bodies are parsed in place on evbuffer_peek'd
 * segments, the parser paused at each on_body so that the range it reports can
 * be moved out by offset before the next one. (Over plain TCP, once the input
 * is empty, upconn.c reads such bodies straight into c->body: conn_read_direct.)
 */
#include <string.h>
#include <strings.h>

#include "upstream_int.h"

/* -------------------------------------------------------- parser callbacks */

static int head_error(struct gw_upconn *c, const char *msg)
{
    c->parse_failed = 1;
    gw_error_set(&c->err, 502, "upstream_error", "bad_gateway", NULL, "%s", msg);
    return -1;
}

static int head_append(struct gw_upconn *c, const char *at, size_t len)
{
    if (len > sizeof(c->head) - c->head_len)
        return head_error(c, "upstream response headers too large");
    memcpy(c->head + c->head_len, at, len);
    c->head_len += (unsigned)len;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct gw_upconn *c = p->data;
    struct up_header *h;

    if (c->head_done) /* trailer of a chunked body: not relayed */
        return 0;
    if (c->nhdrs == 0 || c->in_value) {
        if (c->nhdrs == UP_HEADERS_MAX)
            return head_error(c, "upstream response has too many headers");
        h = &c->hdrs[c->nhdrs++];
        h->name_off = (uint16_t)c->head_len;
        h->name_len = 0;
        h->value_off = (uint16_t)c->head_len;
        h->value_len = 0;
        c->in_value = 0;
    }
    if (head_append(c, at, len) != 0)
        return -1;
    c->hdrs[c->nhdrs - 1].name_len += (uint16_t)len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct gw_upconn *c = p->data;
    struct up_header *h;

    if (c->head_done || c->nhdrs == 0)
        return 0;
    h = &c->hdrs[c->nhdrs - 1];
    if (!c->in_value) {
        c->in_value = 1;
        h->value_off = (uint16_t)c->head_len;
        h->value_len = 0;
    }
    if (head_append(c, at, len) != 0)
        return -1;
    h->value_len += (uint16_t)len;
    return 0;
}

/* Decide the framing of the body (RFC 9112 §6.3) and stop the parser: the
 * caller delivers HEADERS before any body byte moves. */
static int on_headers_complete(http_parser *p)
{
    struct gw_upconn *c = p->data;
    unsigned status = p->status_code;

    http_parser_pause(p, 1);
    if (status >= 100 && status < 200) {
        if (status == 101)
            return head_error(c, "upstream switched protocols (101) unexpectedly");
        c->stop = STOP_INTERIM;
        return 0;
    }
    c->head_done = 1;
    c->status = (int)status;
    if (c->no_body || status == 204 || status == 304) {
        c->rs = RS_DONE;
        c->content_length = 0;
        p->flags |= F_SKIPBODY; /* for http_should_keep_alive */
    } else if (p->flags & F_CHUNKED) {
        c->rs = RS_CHUNKED;
    } else if (p->uses_transfer_encoding) {
        c->rs = RS_EOF; /* a transfer coding other than chunked: until close */
    } else if (p->content_length != UINT64_MAX) {
        if (p->content_length > (uint64_t)INT64_MAX)
            return head_error(c, "upstream Content-Length out of range");
        c->content_length = (int64_t)p->content_length;
        c->body_left = p->content_length;
        c->rs = c->body_left == 0 ? RS_DONE : RS_LENGTH;
    } else {
        c->rs = RS_EOF;
    }
    c->keepalive = c->rs != RS_EOF && http_should_keep_alive(p);
    c->stop = STOP_HEAD;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct gw_upconn *c = p->data;

    c->body_at = at;
    c->body_len = len;
    c->stop = STOP_BODY;
    http_parser_pause(p, 1);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct gw_upconn *c = p->data;

    c->stop = STOP_MESSAGE;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ------------------------------------------------------- reading the input */

/* Run the parser over the first segment of `in`, consuming what it parsed and
 * moving the body range it reported. Returns STEP_HEAD when the final head is
 * complete, GW_OK after other progress, GW_ERR with c->err filled. */
static int conn_parse(struct gw_upconn *c, struct evbuffer *in, size_t *added)
{
    struct evbuffer_iovec vs[4], v = { NULL, 0 };
    const char *seg;
    size_t n, off;
    enum http_errno e;
    int i, nv = evbuffer_peek(in, -1, NULL, vs, 4);

    for (i = 0; i < nv && i < 4 && v.iov_len == 0; i++) /* (skip an empty chain) */
        v = vs[i];
    if (v.iov_len == 0)
        return GW_AGAIN;
    seg = v.iov_base;
    c->stop = STOP_NONE;
    c->body_len = 0;
    n = http_parser_execute(&c->parser, &parser_settings, seg, v.iov_len);
    e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->parse_failed)
        return GW_ERR;
    if ((e != HPE_OK && e != HPE_PAUSED) || (n == 0 && c->stop == STOP_NONE)) {
        gw_error_set(&c->err, 502, "upstream_error", "bad_gateway", NULL,
                     "invalid upstream response: %s", http_errno_description(e));
        return GW_ERR;
    }
    /* Empty chains before seg hold no bytes: offsets from seg are offsets
     * into in. */
    if (c->stop == STOP_BODY) {
        off = (size_t)(c->body_at - seg);
        evbuffer_drain(in, off);
        evbuffer_remove_buffer(in, c->body, c->body_len);
        evbuffer_drain(in, n - off - c->body_len);
        *added += c->body_len;
    } else {
        evbuffer_drain(in, n);
    }
    if (e == HPE_PAUSED)
        http_parser_pause(&c->parser, 0);

    switch (c->stop) {
    case STOP_HEAD:
    case STOP_INTERIM:
        /* Paused in on_headers_complete, the parser stopped on the head's last
         * LF. A chunked body goes on through the parser, which takes that LF
         * again; otherwise the parser's work is done: consume the LF here. */
        if (n >= v.iov_len || seg[n] != '\n') {
            gw_error_set(&c->err, 502, "upstream_error", "bad_gateway", NULL,
                         "invalid upstream response head");
            return GW_ERR;
        }
        if (c->stop == STOP_INTERIM) {
            evbuffer_drain(in, 1);
            http_parser_init(&c->parser, HTTP_RESPONSE);
            c->parser.data = c;
            c->nhdrs = 0;
            c->head_len = 0;
            c->in_value = 0;
            return GW_OK;
        }
        if (c->rs != RS_CHUNKED)
            evbuffer_drain(in, 1);
        return STEP_HEAD;
    case STOP_MESSAGE:
        c->rs = RS_DONE;
        return GW_OK;
    default:
        return GW_OK;
    }
}

/* One unit of read-side work. STEP_HEAD: head complete; GW_OK: progress;
 * GW_AGAIN: needs more input; GW_ERR: c->err filled. */
int gw_upresp_step(struct gw_upconn *c, struct evbuffer *in, size_t *added)
{
    size_t avail = evbuffer_get_length(in), n;

    switch (c->rs) {
    case RS_HEAD:
    case RS_CHUNKED:
        return avail ? conn_parse(c, in, added) : GW_AGAIN;
    case RS_LENGTH:
        if (avail == 0)
            return GW_AGAIN;
        n = avail < c->body_left ? avail : (size_t)c->body_left;
        evbuffer_remove_buffer(in, c->body, n);
        c->body_left -= n;
        *added += n;
        if (c->body_left == 0)
            c->rs = RS_DONE;
        return GW_OK;
    case RS_EOF:
        if (avail == 0)
            return GW_AGAIN;
        evbuffer_add_buffer(c->body, in);
        *added += avail;
        return GW_OK;
    case RS_DONE:
        break;
    }
    return GW_AGAIN;
}

/* -------------------------------------------------------------- public API */

void gw_upconn_expect_no_body(struct gw_upconn *c)
{
    c->no_body = 1;
}

int gw_upconn_status(const struct gw_upconn *c)
{
    return c->head_done ? c->status : 0;
}

unsigned gw_upconn_header_count(const struct gw_upconn *c)
{
    return c->head_done ? c->nhdrs : 0;
}

void gw_upconn_header_at(const struct gw_upconn *c, unsigned i, struct gw_str *name,
                         struct gw_str *value)
{
    const struct up_header *h = &c->hdrs[i];

    name->p = c->head + h->name_off;
    name->len = h->name_len;
    value->p = c->head + h->value_off;
    value->len = h->value_len;
}

struct gw_str gw_upconn_header(const struct gw_upconn *c, const char *name)
{
    size_t n = strlen(name);
    unsigned i;

    for (i = 0; i < gw_upconn_header_count(c); i++) {
        const struct up_header *h = &c->hdrs[i];

        if (h->name_len == n && strncasecmp(c->head + h->name_off, name, n) == 0)
            return (struct gw_str){ c->head + h->value_off, h->value_len };
    }
    return (struct gw_str){ NULL, 0 };
}

int64_t gw_upconn_content_length(const struct gw_upconn *c)
{
    return c->head_done ? c->content_length : -1;
}

struct evbuffer *gw_upconn_body(struct gw_upconn *c)
{
    return c->body;
}
