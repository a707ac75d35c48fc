/*
 * htfix.c - make libevhtp's request parser only ever see complete request heads.
 *
 * libevhtp 1.2.18 corrupts the path when a request line is split across TCP
 * reads (upstream #128/#131, fixed after the release Debian ships), and drops
 * malformed heads without an answer. libevhtp calls htparser_run() through the
 * PLT, so this definition in the executable (linked with -rdynamic) takes its
 * place:
 *   - in a body, bytes go straight to the real parser;
 *   - a head that arrived whole (the common case) is checked by reqhead.c and
 *     handed to the real parser, or refused with a proper answer;
 *   - an incomplete head is consumed into a small per-connection stash (bounded
 *     by max_header_bytes). Consuming it matters: libevhtp re-runs its read
 *     callback at once when bytes are left unconsumed, which would spin.
 *     When the head completes, the real parser runs over the stash.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <evhtp/evhtp.h>

#include "htfix.h"
#include "proxy.h"
#include "reqhead.h"

typedef size_t (*htparser_run_fn)(htparser *, htparse_hooks *, const char *, size_t);

struct stash {
    char *buf;
    size_t len, cap;
};

static htparser_run_fn real_run;
static size_t max_head = 32 * 1024;

int gw_htfix_init(size_t max_header_bytes)
{
    real_run = (htparser_run_fn)dlsym(RTLD_NEXT, "htparser_run");
    max_head = max_header_bytes;
    return real_run != NULL ? GW_OK : GW_ERR;
}

static evhtp_res stash_free(evhtp_connection_t *conn, void *arg)
{
    struct stash *s = arg;

    free(s->buf);
    free(s);
    return EVHTP_RES_OK;
}

int gw_htfix_attach(evhtp_connection_t *conn)
{
    struct stash *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return GW_ERR;
    evhtp_connection_set_hook(conn, evhtp_hook_on_connection_fini, (evhtp_hook)stash_free, s);
    return GW_OK;
}

static struct stash *stash_of(evhtp_connection_t *c)
{
    return c->hooks ? c->hooks->on_connection_fini_arg : NULL;
}

static int stash_add(struct stash *s, const char *data, size_t len)
{
    if (s->len + len > s->cap) {
        size_t cap = s->cap ? s->cap : 1024;
        while (cap < s->len + len)
            cap *= 2;
        char *b = realloc(s->buf, cap);
        if (b == NULL)
            return GW_ERR;
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    return GW_OK;
}

/* The real parser, and an answer when it refused the request (a malformed
 * chunked body, say): libevhtp drops the connection without one. */
static size_t run(evhtp_connection_t *c, htparser *p, htparse_hooks *hooks, const char *data,
                  size_t len)
{
    size_t used = real_run(p, hooks, data, len);

    /* any parser error but a pause drops the connection (libevhtp's read callback) */
    if (htparser_get_error(p) != htparse_error_none &&
        !(c->request != NULL && c->request->status == EVHTP_RES_PAUSE))
        gw_proxy_body_error(c);
    return used;
}

#define READ_AHEAD_STEP (256 * 1024)      /* one read(2) */
#define READ_AHEAD_MAX (1024 * 1024)      /* per read callback: other connections wait */

/*
 * libevent 2.1 reads at most 4 KiB per call (EVBUFFER_MAX_READ) and once per loop
 * pass, so a large upload costs a loop pass, a pull-up and a parser run per 4 KiB.
 * For a body of known length on a plain TCP connection, read the rest straight
 * from the socket in large pieces - never past the body's end, so a pipelined
 * request is never touched - and hand them to the parser as libevhtp would.
 * Stops at a pause (backpressure), an error, the end of the body, or EAGAIN; EOF
 * and errors are left for the bufferevent to see on its next read.
 */
static void read_ahead(evhtp_connection_t *c, htparser *p, htparse_hooks *hooks)
{
    /* per loop thread; static, so nothing to free when the loop ends */
    static __thread char buf[READ_AHEAD_STEP];
    size_t total = 0;

    if (c->ssl != NULL || c->bev == NULL)
        return;
    while (total < READ_AHEAD_MAX) {
        uint64_t left = gw_proxy_body_remaining(c);
        if (left == 0 || htparser_get_error(p) != htparse_error_none ||
            c->request->status == EVHTP_RES_PAUSE)
            return;
        ssize_t n = read(bufferevent_getfd(c->bev), buf,
                         left < READ_AHEAD_STEP ? (size_t)left : READ_AHEAD_STEP);
        if (n <= 0)
            return;
        /* the parser gives a sized body to the read hook in one piece, so all
         * n bytes reach the proxy even when it asks to pause */
        run(c, p, hooks, buf, (size_t)n);
        total += (size_t)n;
    }
}

/* Run the real parser over the stash (which ends with `len` bytes of the
 * current read) and translate what it consumed back into the current read. */
static size_t run_stash(evhtp_connection_t *c, htparser *p, htparse_hooks *hooks,
                        struct stash *s, size_t len)
{
    size_t total = s->len, used = run(c, p, hooks, s->buf, total);
    size_t left = total - used;

    s->len = 0;
    if (s->cap > 64 * 1024) { /* do not keep a large stash around */
        free(s->buf);
        s->buf = NULL;
        s->cap = 0;
    }
    return left <= len ? len - left : 0;
}

size_t htparser_run(htparser *p, htparse_hooks *hooks, const char *data, size_t len)
{
    evhtp_connection_t *c = htparser_get_userdata(p);
    struct stash *s;
    struct gw_error err;
    long end;

    if (real_run == NULL)
        abort(); /* gw_htfix_init() was not called */
    if (c == NULL || c->type != evhtp_type_server)
        return real_run(p, hooks, data, len);
    if (gw_proxy_in_body(c)) {
        size_t used = run(c, p, hooks, data, len);
        if (used == len)
            read_ahead(c, p, hooks);
        return used;
    }
    if (len == 0 || (s = stash_of(c)) == NULL)
        return run(c, p, hooks, data, len);

    if (s->len == 0) {
        end = gw_reqhead_end(data, len, max_head, &err);
        if (end > 0 && gw_reqhead_check(data, (size_t)end, &err) == GW_OK)
            return run(c, p, hooks, data, len); /* whole head in one read */
    } else {
        if (stash_add(s, data, len) != GW_OK) {
            gw_error_set(&err, 503, "server_error", "overloaded", NULL, "Out of memory");
            goto refuse;
        }
        end = gw_reqhead_end(s->buf, s->len, max_head, &err);
        if (end > 0 && gw_reqhead_check(s->buf, (size_t)end, &err) == GW_OK)
            return run_stash(c, p, hooks, s, len);
        if (end == 0)
            return len;
        goto refuse;
    }
    if (end == 0) {
        /* incomplete head: keep it here rather than in libevhtp's buffer */
        if (stash_add(s, data, len) != GW_OK) {
            gw_error_set(&err, 503, "server_error", "overloaded", NULL, "Out of memory");
            goto refuse;
        }
        return len;
    }

refuse:
    s->len = 0;
    gw_proxy_refuse_head(c, &err);
    return len;
}
