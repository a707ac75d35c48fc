/*
 * htfix.c - the request framer: the gateway, not libevhtp, decides where each
 * request on a connection begins and ends.
 *
 * libevhtp 1.2.18's parser corrupts request lines split across reads (#128/#131),
 * drops malformed heads without an answer, reads some Transfer-Encoding and
 * Content-Length spellings differently from what a head check accepts, wraps
 * chunk sizes at 2^64, turns trailers into headers, and stalls on pipelined
 * requests (it stops after each message and is not called again until more bytes
 * arrive). libevhtp calls htparser_run() through the PLT, so this definition in
 * the executable (linked with -rdynamic) takes its place and frames every
 * request itself, handing the real parser only what it cannot misread:
 *
 *   HEAD          bytes are gathered until the head is complete (a small stash,
 *                 bounded by max_header_bytes and by header_timeout), checked
 *                 by reqhead.c and handed over whole: as received when it is
 *                 canonical, else rewritten (gw_reqhead_canon). A refused head
 *                 gets its answer here.
 *   BODY_LENGTH   exactly Content-Length bytes, read ahead from the socket in
 *                 large pieces.
 *   BODY_CHUNKED  decoded by chunked.c; the real parser sees canonical chunks
 *                 (size, data, CRLF), never an extension or a trailer.
 *   HOLD          the message is complete; bytes of a pipelined request wait in
 *                 the stash (reading stops at max_header_bytes) until this
 *                 request's reply is done, then go back to libevhtp's input and a
 *                 deferred kick parses the next one (RFC 9112 9.3.2: answered in
 *                 order).
 *   CLOSED        refused: nothing more is parsed on this connection.
 *
 * When a request goes away before its body ended (an early answer that closed
 * the exchange), the rest of its body is still framed here and dropped, so its
 * bytes can never be read as a request.
 *
 * An idle connection does not keep a parser. libevhtp allocates one per
 * connection for its whole life, 8 KiB of it a buffer for header tokens, which
 * made an idle keep-alive connection cost 6.5 KiB of RSS (nginx: 0.4). Between
 * requests the framer parks it: conn->parser becomes a copy of the parser's
 * fields without the buffer (libevhtp only resets it and sets its user data
 * there, both within the fields), and the next read gets a whole parser again
 * before anything is parsed. The fields' size is found at start-up
 * (parker_init); if it cannot be, parsers are never parked.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <sys/ioctl.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <evhtp/evhtp.h>

#include "chunked.h"
#include "htfix.h"
#include "log.h"
#include "proxy.h"
#include "reqhead.h"

typedef size_t (*htparser_run_fn)(htparser *, htparse_hooks *, const char *, size_t);

enum phase {
    PH_HEAD = 0,
    PH_BODY_LENGTH,
    PH_BODY_CHUNKED,
    PH_HOLD,
    PH_CLOSED,
};

/* Per connection; freed with it (on_connection_fini). */
struct framer {
    evhtp_connection_t *conn;
    enum phase phase;
    char *buf;            /* stash: the start of an incomplete head */
    size_t len, cap;
    uint64_t left;        /* PH_BODY_LENGTH: body bytes still to come */
    struct gw_chunked ck; /* PH_BODY_CHUNKED */
    int chunk_open;       /* a canonical chunk handed to the parser still needs its CRLF */
    int orphan;           /* the request went away mid-body: frame the rest and drop it */
    int held;             /* reading was stopped in PH_HOLD: the stash is full */
    size_t read_max;      /* bytes per read-ahead read (gw_htfix_read_max); 0: READ_AHEAD_STEP */
    struct event *kick;   /* after a held request: parse what is waiting */
    struct event *timer;  /* header_timeout of an incomplete head */
    struct framer *prev, *next; /* this loop's connections (gw_htfix_unsettled) */
    int parked;           /* conn->parser is a parked copy (park/unpark) */
    int64_t born_ms;      /* monotonic: when it was accepted */
    unsigned heads;       /* request heads framed so far */
};

/* Every connection of this loop (the thread's own list). */
static __thread struct framer *loop_conns;

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static htparser_run_fn real_run;
static size_t max_head = 32 * 1024;
static struct timeval head_timeout = { 10, 0 };
/* bytes of a parked parser: its fields and the first byte of its buffer
 * (htparser_init writes both); 0: parsers are not parked */
static size_t parked_size;

/*
 * libevhtp's parser is opaque: its fields end where its 8 KiB buffer begins,
 * and htparser_init() zeroes the fields and the buffer's first byte only. So
 * a parser filled with a marker, then initialised, shows the end of its fields
 * as the first marker byte left, one past the buffer's first byte. Parking is
 * kept only when that is plausible (fields of 16 to 1024 bytes, a parser at
 * least 4 KiB larger).
 */
static void parker_init(void)
{
    htparser *p = htparser_new();
    unsigned char *b = (unsigned char *)p;
    size_t size, i;

    if (p == NULL)
        return;
    size = malloc_usable_size(p);
    memset(p, 0xa5, size);
    htparser_init(p, htp_type_request);
    for (i = 0; i < size && b[i] != 0xa5; i++)
        continue;
    if (i >= 17 && i <= 1025 && b[i - 1] == 0 && size >= i + 4096)
        parked_size = (i + 15) & ~(size_t)15;
    free(p);
}

int gw_htfix_init(size_t max_header_bytes, int header_timeout_ms)
{
    real_run = (htparser_run_fn)dlsym(RTLD_NEXT, "htparser_run");
    max_head = max_header_bytes;
    head_timeout.tv_sec = header_timeout_ms / 1000;
    head_timeout.tv_usec = (header_timeout_ms % 1000) * 1000;
    parker_init();
    return real_run != NULL ? GW_OK : GW_ERR;
}

/* Between requests (nothing stashed): swap the connection's parser for a copy of
 * its fields; the stash goes too. Without memory for the copy, it stays. */
static void park(struct framer *f)
{
    evhtp_connection_t *c = f->conn;
    htparser *small;

    if (parked_size == 0 || f->parked || c->parser == NULL || f->len > 0)
        return;
    if ((small = malloc(parked_size)) == NULL)
        return;
    memcpy(small, c->parser, parked_size);
    free(c->parser);
    c->parser = small;
    f->parked = 1;
    free(f->buf);
    f->buf = NULL;
    f->cap = 0;
}

/* Bytes came: a whole parser again, with the parked fields. NULL: no memory. */
static htparser *unpark(struct framer *f)
{
    evhtp_connection_t *c = f->conn;
    htparser *p = htparser_new();

    if (p == NULL)
        return NULL;
    memcpy(p, c->parser, parked_size);
    free(c->parser);
    c->parser = p;
    f->parked = 0;
    return p;
}

static struct framer *framer_of(evhtp_connection_t *c)
{
    return c->hooks ? c->hooks->on_connection_fini_arg : NULL;
}

static evhtp_res framer_free(evhtp_connection_t *conn, void *arg)
{
    struct framer *f = arg;

    /* libevhtp frees the request after this hook: gw_htfix_request_done() must
     * then find no framer */
    conn->hooks->on_connection_fini_arg = NULL;
    if (f->prev != NULL)
        f->prev->next = f->next;
    else
        loop_conns = f->next;
    if (f->next != NULL)
        f->next->prev = f->prev;
    if (f->kick != NULL)
        event_free(f->kick);
    if (f->timer != NULL)
        event_free(f->timer);
    free(f->buf);
    free(f);
    return EVHTP_RES_OK;
}

static void kick_cb(evutil_socket_t fd, short ev, void *arg);
static void timeout_cb(evutil_socket_t fd, short ev, void *arg);

int gw_htfix_attach(evhtp_connection_t *conn)
{
    struct framer *f = calloc(1, sizeof(*f));
    struct event_base *base = bufferevent_get_base(conn->bev);

    if (f == NULL)
        return GW_ERR;
    f->conn = conn;
    f->born_ms = mono_ms();
    f->next = loop_conns;
    if (loop_conns != NULL)
        loop_conns->prev = f;
    loop_conns = f;
    f->kick = event_new(base, -1, 0, kick_cb, f);
    f->timer = event_new(base, -1, 0, timeout_cb, f);
    evhtp_connection_set_hook(conn, evhtp_hook_on_connection_fini, (evhtp_hook)framer_free, f);
    if (f->kick == NULL || f->timer == NULL)
        return GW_ERR;
    park(f); /* until its first bytes */
    return GW_OK;
}

/* ---------------------------------------------------------------- refusals */

/* A refused head: answer, and parse nothing more on this connection. */
static void refuse(struct framer *f, const struct gw_error *err)
{
    f->phase = PH_CLOSED;
    f->len = 0;
    event_del(f->timer);
    gw_proxy_refuse_head(f->conn, err);
}

static void timeout_cb(evutil_socket_t fd, short ev, void *arg)
{
    struct framer *f = arg;
    struct gw_error err;

    if (f->phase != PH_HEAD || f->len == 0)
        return;
    gw_error_set(&err, 408, "invalid_request_error", "request_timeout", NULL,
                 "The request head was not received within header_timeout");
    refuse(f, &err);
}

/*
 * The parser stopped with an error. A pause (backpressure) is not one; anything
 * else makes libevhtp drop the connection as soon as the read returns, so the
 * client gets its answer now.
 */
static int parser_stopped(struct framer *f, htparser *p)
{
    if (htparser_get_error(p) == htparse_error_none)
        return 0;
    if (f->conn->request == NULL || f->conn->request->status != EVHTP_RES_PAUSE) {
        gw_log(GW_LOG_DEBUG, "framer: parser error %d (%s) in phase %d",
               htparser_get_error(p), htparser_get_strerror(p), f->phase);
        gw_proxy_body_error(f->conn, NULL);
    }
    return 1;
}

/* Our own framing refused the body: answer, and make libevhtp drop the connection
 * the way it does for a body over its limit when this read returns. */
static void body_refused(struct framer *f, const struct gw_error *err)
{
    f->phase = PH_CLOSED;
    if (f->orphan || f->conn->request == NULL) {
        /* the request is gone: close once the output is flushed */
        bufferevent_disable(f->conn->bev, EV_READ);
        gw_proxy_close_after_flush(f->conn);
        return;
    }
    gw_proxy_body_error(f->conn, err);
    f->conn->request->status = EVHTP_RES_DATA_TOO_LONG;
}

/* ------------------------------------------------------------------- head */

static int stash_add(struct framer *f, const char *data, size_t len)
{
    if (f->len + len > f->cap) {
        size_t cap = f->cap ? f->cap : 1024;
        while (cap < f->len + len)
            cap *= 2;
        char *b = realloc(f->buf, cap);
        if (b == NULL)
            return GW_ERR;
        f->buf = b;
        f->cap = cap;
    }
    memcpy(f->buf + f->len, data, len);
    f->len += len;
    return GW_OK;
}

static void stash_reset(struct framer *f)
{
    f->len = 0;
    if (f->cap > 64 * 1024) { /* do not keep a large stash around */
        free(f->buf);
        f->buf = NULL;
        f->cap = 0;
    }
}

/* Hand a checked head to the real parser, as it is or in canonical form. */
static void run_head(struct framer *f, htparser *p, htparse_hooks *hooks, const char *head,
                     size_t len, const struct gw_reqhead *rh)
{
    if (rh->canonical) {
        real_run(p, hooks, head, len);
        return;
    }
    char *c = malloc(GW_REQHEAD_CANON_CAP(len));
    if (c == NULL) {
        struct gw_error err;
        gw_error_set(&err, 503, "server_error", "overloaded", NULL, "Out of memory");
        refuse(f, &err);
        return;
    }
    real_run(p, hooks, c, gw_reqhead_canon(head, len, rh, c));
    free(c);
}

/*
 * Gather and hand over one head. Returns the bytes of data consumed; *stop is
 * set when nothing more may be parsed in this read.
 */
static size_t feed_head(struct framer *f, htparser *p, htparse_hooks *hooks, const char *data,
                        size_t len, int *stop)
{
    struct gw_error err;
    struct gw_reqhead rh;
    const char *head = data;
    size_t had = f->len;
    long end;

    if (had == 0) {
        end = gw_reqhead_end(data, len, max_head, &err);
    } else {
        if (stash_add(f, data, len) != GW_OK)
            goto oom;
        head = f->buf;
        end = gw_reqhead_end(f->buf, f->len, max_head, &err);
    }
    if (end == 0) {
        /* incomplete: keep it here rather than in libevhtp's buffer (consuming it
         * matters: libevhtp re-runs its read callback at once on unconsumed bytes) */
        if (had == 0 && stash_add(f, data, len) != GW_OK)
            goto oom;
        if (had == 0)
            event_add(f->timer, &head_timeout);
        return len;
    }
    if (end < 0 || gw_reqhead_check(head, (size_t)end, &rh, &err) != GW_OK)
        goto refused;
    event_del(f->timer);
    f->heads++;
    if (rh.chunked) {
        f->phase = PH_BODY_CHUNKED;
        gw_chunked_init(&f->ck, max_head);
        f->chunk_open = 0;
    } else if (rh.has_length && rh.length > 0) {
        f->phase = PH_BODY_LENGTH;
        f->left = rh.length;
    } else {
        f->phase = PH_HOLD; /* set first: the reply may end within the parser run */
    }
    f->orphan = 0;
    run_head(f, p, hooks, head, (size_t)end, &rh);
    stash_reset(f);
    *stop = f->phase == PH_CLOSED || parser_stopped(f, p);
    return (size_t)end - had;

oom:
    gw_error_set(&err, 503, "server_error", "overloaded", NULL, "Out of memory");
refused:
    refuse(f, &err);
    *stop = 1;
    return len;
}

/* ------------------------------------------------------------------- body */

static size_t feed_length(struct framer *f, htparser *p, htparse_hooks *hooks,
                          const char *data, size_t len, int *stop)
{
    size_t n = len < f->left ? len : (size_t)f->left;

    f->left -= n;
    if (f->left == 0)
        f->phase = f->orphan ? PH_HEAD : PH_HOLD;
    if (f->orphan) {
        f->orphan = f->left > 0;
        return n;
    }
    /* the parser hands a sized body to the read hook in one piece: all n bytes
     * reach the proxy even when it asks to pause */
    real_run(p, hooks, data, n);
    *stop = parser_stopped(f, p);
    return n;
}

static size_t feed_chunked(struct framer *f, htparser *p, htparse_hooks *hooks,
                           const char *data, size_t len, int *stop)
{
    size_t off = 0;

    while (off < len) {
        struct gw_str d;
        ssize_t n = gw_chunked_execute(&f->ck, data + off, len - off, &d);
        if (n < 0) {
            body_refused(f, &f->ck.err);
            *stop = 1;
            return len;
        }
        off += (size_t)n;
        if (d.len > 0 && !f->orphan) {
            /* one canonical chunk per slice; its CRLF goes with the next size line
             * (after a pause the parser must be left inside the chunk) */
            char size[32];
            int sn = snprintf(size, sizeof(size), "%s%zx\r\n", f->chunk_open ? "\r\n" : "",
                              d.len);
            f->chunk_open = 1;
            real_run(p, hooks, size, (size_t)sn);
            if ((*stop = parser_stopped(f, p)) != 0)
                return off;
            real_run(p, hooks, d.p, d.len);
            if ((*stop = parser_stopped(f, p)) != 0)
                return off;
        }
        if (gw_chunked_done(&f->ck)) {
            if (f->orphan) {
                f->orphan = 0;
                f->phase = PH_HEAD;
                return off;
            }
            f->phase = PH_HOLD;
            if (f->chunk_open)
                real_run(p, hooks, "\r\n0\r\n\r\n", 7);
            else
                real_run(p, hooks, "0\r\n\r\n", 5);
            *stop = parser_stopped(f, p);
            return off;
        }
    }
    return off;
}

/* One read(2). libevhtp copies each piece into an evbuffer chain sized as the
 * piece plus libevent's 48-byte chain header, rounded up to a power of two: a
 * full 256 KiB would allocate 512 KiB per piece, hence the slack. */
#define READ_AHEAD_STEP (256 * 1024 - 128)
#define READ_AHEAD_MAX (1024 * 1024)      /* per read callback: other connections wait */

/* The read-ahead's pieces (read_ahead): the front of this loop's evbuffer. */
static __thread struct evbuffer *ahead;

/*
 * libevhtp's body callback (htp__request_parse_body_ in 1.2.18) without its copy:
 * it copies each piece into the connection's scratch evbuffer before the read
 * hook moves it on. A piece that read_ahead() read into a chain of its own is
 * moved there instead (evbuffer_remove_buffer takes whole chains without
 * copying); any other piece is copied, as libevhtp does. The rest is libevhtp's
 * bookkeeping, field for field (the hook, the status, what the hook left, the
 * byte count), all of it public in evhtp.h.
 */
static int body_nocopy(htparser *p, const char *data, size_t len)
{
    evhtp_connection_t *c = htparser_get_userdata(p);
    evhtp_request_t *req = c->request;
    struct evbuffer *buf = c->scratch_buf;
    struct evbuffer_iovec front;
    evhtp_res status = EVHTP_RES_OK;

    if (c->max_body_size > 0 && c->body_bytes_read + len >= c->max_body_size) {
        c->flags |= EVHTP_CONN_FLAG_ERROR;
        if (req != NULL)
            req->status = EVHTP_RES_DATA_TOO_LONG;
        return -1;
    }
    if (buf == NULL || req == NULL)
        return -1;
    if (ahead != NULL && evbuffer_peek(ahead, -1, NULL, &front, 1) == 1 &&
        front.iov_base == data && front.iov_len >= len)
        evbuffer_remove_buffer(ahead, buf, len);
    else
        evbuffer_add(buf, data, len);
    if (req->hooks != NULL && req->hooks->on_read != NULL)
        status = req->hooks->on_read(req, buf, req->hooks->on_read_arg);
    else if (c->hooks != NULL && c->hooks->on_read != NULL)
        status = c->hooks->on_read(req, buf, c->hooks->on_read_arg);
    req->status = status;
    if (evbuffer_get_length(buf) > 0)
        evbuffer_add_buffer(req->buffer_in, buf);
    evbuffer_drain(buf, evbuffer_get_length(buf));
    c->body_bytes_read += len;
    return status == EVHTP_RES_OK ? 0 : -1;
}

/*
 * libevent 2.1 reads at most 4 KiB per call (EVBUFFER_MAX_READ) and once per loop
 * pass, so a large upload costs a loop pass, a pull-up and a parser run per 4 KiB.
 * For a body of known length on a plain TCP connection, read the rest straight
 * from the socket in large pieces - never past the body's end, so a pipelined
 * request is never touched. Stops at a pause (backpressure), an error, the end
 * of the body, or EAGAIN; EOF and errors are left for the bufferevent to see on
 * its next read.
 *
 * Each piece is read into a chain of this loop's `ahead` evbuffer and, when it
 * fills at least half of it, that chain itself goes on to the proxy
 * (body_nocopy): no copy between the socket and the upstream. A piece that
 * fills less is copied into a chain of its size, as libevhtp would (a chain
 * held by an upload for its data is never more than twice the data), and the
 * reserved chain is kept for the next read.
 */
static void read_ahead(struct framer *f, htparser *p, htparse_hooks *hooks)
{
    evhtp_connection_t *c = f->conn;
    htparse_hooks nocopy = *hooks;
    size_t total = 0;
    int stop = 0;

    if (c->ssl != NULL || c->bev == NULL)
        return;
    if (ahead == NULL && (ahead = evbuffer_new()) == NULL)
        return;
    nocopy.body = body_nocopy;
    while (total < READ_AHEAD_MAX && f->phase == PH_BODY_LENGTH && !stop) {
        size_t want = f->read_max > 0 && f->read_max < READ_AHEAD_STEP ? f->read_max
                                                                       : READ_AHEAD_STEP;
        struct evbuffer_iovec v;
        ssize_t n;

        if (f->left < want)
            want = (size_t)f->left;
        if (evbuffer_reserve_space(ahead, (ev_ssize_t)want, &v, 1) != 1)
            return;
        n = read(bufferevent_getfd(c->bev), v.iov_base, want < v.iov_len ? want : v.iov_len);
        if (n <= 0)
            return;
        if ((size_t)n * 2 >= want) {
            v.iov_len = (size_t)n;
            evbuffer_commit_space(ahead, &v, 1);
            feed_length(f, p, &nocopy, v.iov_base, (size_t)n, &stop);
            /* what the parser did not take (never expected: the read stops at
             * the body's end) is not left for the next connection */
            evbuffer_drain(ahead, evbuffer_get_length(ahead));
        } else {
            feed_length(f, p, hooks, v.iov_base, (size_t)n, &stop);
        }
        total += (size_t)n;
    }
}

void gw_htfix_loop_end(void)
{
    if (ahead != NULL)
        evbuffer_free(ahead);
    ahead = NULL;
}

void gw_htfix_read_max(evhtp_connection_t *conn, size_t max)
{
    struct framer *f = framer_of(conn);

    if (f != NULL)
        f->read_max = max;
}

/* ------------------------------------------------------------- the drain */

unsigned gw_htfix_unsettled(int64_t first_request_ms)
{
    int64_t now = mono_ms();
    unsigned n = 0;

    for (struct framer *f = loop_conns; f != NULL; f = f->next) {
        int pending = 0;
        if (f->conn->bev != NULL) {
            int fd = bufferevent_getfd(f->conn->bev);
            if (evbuffer_get_length(bufferevent_get_input(f->conn->bev)) > 0 ||
                (fd >= 0 && ioctl(fd, FIONREAD, &pending) == 0 && pending > 0))
                pending = 1;
        }
        if (pending || (f->phase == PH_HEAD && f->len > 0) ||
            (f->heads == 0 && now - f->born_ms < first_request_ms))
            n++;
    }
    return n;
}

/* ------------------------------------------------------------- the framer */

size_t htparser_run(htparser *p, htparse_hooks *hooks, const char *data, size_t len)
{
    evhtp_connection_t *c = htparser_get_userdata(p);
    struct framer *f;
    size_t used = 0;
    int stop = 0;

    if (real_run == NULL)
        abort(); /* gw_htfix_init() was not called */
    if (c == NULL || c->type != evhtp_type_server || (f = framer_of(c)) == NULL)
        return real_run(p, hooks, data, len);
    if (f->parked && (p = unpark(f)) == NULL) {
        struct gw_error err;
        gw_error_set(&err, 503, "server_error", "overloaded", NULL, "Out of memory");
        refuse(f, &err);
        return len;
    }
    /* The parser keeps its last error (a pause is one) until it runs again, and
     * libevhtp reads it after this call: a read that the framer handles without
     * running the parser (the CRLF after a chunk, say) would pass for a failed
     * one and drop the connection. An empty run clears it. */
    real_run(p, hooks, data, 0);

    while (used < len && !stop) {
        switch (f->phase) {
        case PH_HEAD:
            used += feed_head(f, p, hooks, data + used, len - used, &stop);
            break;
        case PH_BODY_LENGTH:
            used += feed_length(f, p, hooks, data + used, len - used, &stop);
            if (used == len && !stop && f->phase == PH_BODY_LENGTH)
                read_ahead(f, p, hooks);
            break;
        case PH_BODY_CHUNKED:
            used += feed_chunked(f, p, hooks, data + used, len - used, &stop);
            break;
        case PH_HOLD:
            /* a pipelined request waits until this one is answered. Its bytes
             * are taken into the stash (left in libevhtp's buffer, they would make
             * it try to resume a connection that is not paused), and reading
             * stops once a head's worth is held. */
            if (stash_add(f, data + used, len - used) != GW_OK) {
                struct gw_error err;
                gw_error_set(&err, 503, "server_error", "overloaded", NULL, "Out of memory");
                body_refused(f, &err);
                return len;
            }
            if (f->len >= max_head && !f->held) {
                f->held = 1;
                bufferevent_disable(c->bev, EV_READ);
            }
            return len;
        case PH_CLOSED:
            return len;
        }
    }
    return used;
}

/* ------------------------------------------------------- after a request */

static void kick_cb(evutil_socket_t fd, short ev, void *arg)
{
    struct framer *f = arg;
    evhtp_connection_t *c = f->conn;
    bufferevent_data_cb readcb;
    void *cbarg;

    if (f->phase != PH_HEAD || (c->flags & EVHTP_CONN_FLAG_PAUSED))
        return;
    f->held = 0;
    bufferevent_enable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
        return;
    bufferevent_getcb(c->bev, &readcb, NULL, NULL, &cbarg);
    if (readcb != NULL)
        readcb(c->bev, cbarg);
}

void gw_htfix_request_done(evhtp_connection_t *conn)
{
    struct framer *f = framer_of(conn);

    if (f == NULL)
        return; /* the connection is going away */
    f->read_max = 0; /* the next request's exchange sets its own */
    switch (f->phase) {
    case PH_HOLD:
        f->phase = PH_HEAD;
        if (f->len == 0) {
            park(f); /* idle until the next request */
            break;
        }
        /* the held bytes go back in front of anything read since, and are parsed
         * from the loop: libevhtp resets its parser after this hook returns */
        evbuffer_prepend(bufferevent_get_input(conn->bev), f->buf, f->len);
        stash_reset(f);
        event_active(f->kick, EV_TIMEOUT, 1);
        break;
    case PH_BODY_LENGTH:
    case PH_BODY_CHUNKED:
        f->orphan = 1;
        break;
    case PH_HEAD:
    case PH_CLOSED:
        break;
    }
}
