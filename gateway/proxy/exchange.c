/*
 * exchange.c - the exchange's life as an object: allocation from a per-worker
 * pool, its release (every reservation it holds given back), its request id and
 * traceparent, and small helpers the proxy files share. The lifecycle that uses
 * it is in proxy.c.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <openssl/rand.h>

#include "admit.h"
#include "exchange.h"
#include "metrics.h"
#include "traceparent.h"
#include "store/store.h"
#include "upstream.h"

int64_t gw_proxy_now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int64_t gw_proxy_now_us(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* For the metrics: the key's slot (-1: none) and the model sent ({NULL, 0}: none). */
int64_t gw_exchange_key_slot(const struct exchange *x)
{
    return x->key != NULL ? (int64_t)x->key->slot : -1;
}

struct gw_str gw_exchange_model_sent(const struct exchange *x)
{
    /* a model outside the catalog counts as "other" whatever its name; its
     * resolved.sent points into a JSON body that may be freed by now */
    return x->have_model && x->resolved.model != NULL ? x->resolved.sent
                                                      : (struct gw_str){ NULL, 0 };
}

int64_t gw_proxy_unix_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

struct bufferevent *gw_proxy_client_bev(struct exchange *x)
{
    return evhtp_request_get_bev(x->req);
}

/* Headers that are not forwarded either way: hop-by-hop ones, the framing the
 * gateway sets itself, and credentials. */
static const char *hop_by_hop[] = {
    "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "TE", "Trailer",
    "Upgrade", "Proxy-Authorization", "Proxy-Authenticate", "Expect", "Content-Length",
    "Host", "Authorization", "X-Request-Id",
    "traceparent", /* the gateway sends its own: the client's if valid, else a new one */
};

int gw_proxy_hop_by_hop(const char *name, size_t len)
{
    for (size_t i = 0; i < GW_ARRAY_LEN(hop_by_hop); i++) {
        if (strlen(hop_by_hop[i]) == len && strncasecmp(hop_by_hop[i], name, len) == 0)
            return 1;
    }
    return 0;
}

static void new_rid(struct exchange *x)
{
    uint64_t n = ++x->w->next_rid;
    snprintf(x->rid, sizeof(x->rid), "%02x%014" PRIx64, x->w->id & 0xff,
             (uint64_t)(n & 0xffffffffffffffULL));
}

/*
 * Trace ids need to be unique, not secret: a per-thread splitmix64 seeded once
 * from OpenSSL's generator costs a few ns per request, where RAND_bytes would
 * take a lock of its own.
 */
static void trace_random(unsigned char out[24])
{
    static __thread uint64_t state;
    static __thread int seeded;

    if (!seeded) {
        if (RAND_bytes((unsigned char *)&state, sizeof(state)) != 1)
            state = (uint64_t)gw_proxy_now_us() ^ (uint64_t)(uintptr_t)&state;
        seeded = 1;
    }
    for (int i = 0; i < 3; i++) {
        uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        memcpy(out + 8 * i, &z, 8);
    }
}

/* The client's traceparent when valid (passed upstream as it came), else ours. */
void gw_exchange_set_traceparent(struct exchange *x, evhtp_headers_t *h)
{
    const char *v = evhtp_header_find(h, "traceparent");
    unsigned char rnd[24];

    if (v != NULL && gw_traceparent_valid(v, strlen(v))) {
        memcpy(x->traceparent, v, GW_TRACEPARENT_LEN + 1);
        x->trace_kept = 1;
        return;
    }
    trace_random(rnd);
    gw_traceparent_new(x->traceparent, rnd);
}

/*
 * Exchanges are recycled per worker (no lock: one loop per worker), with their
 * three evbuffers and their multipart state, so a request costs no allocation
 * of ours once the loop is warm.
 */
#define EXCHANGE_POOL_MAX 256

/* Free an exchange for good (its evbuffers may be NULL if it was never complete). */
static void exchange_discard(struct exchange *x)
{
    if (x->in != NULL)
        evbuffer_free(x->in);
    if (x->out != NULL)
        evbuffer_free(x->out);
    if (x->resp != NULL)
        evbuffer_free(x->resp);
    free(x->mp);
    free(x);
}

static void pool_put(struct gw_worker *w, struct exchange *x)
{
    struct evbuffer *in = x->in, *out = x->out, *resp = x->resp;
    struct gw_mp *mp = x->mp;

    if (w->nfree_exchanges >= EXCHANGE_POOL_MAX) {
        exchange_discard(x);
        return;
    }
    evbuffer_drain(in, evbuffer_get_length(in));
    evbuffer_drain(out, evbuffer_get_length(out));
    evbuffer_drain(resp, evbuffer_get_length(resp));
    memset(x, 0, sizeof(*x));
    x->in = in;
    x->out = out;
    x->resp = resp;
    x->mp = mp;
    x->next_free = w->free_exchanges;
    w->free_exchanges = x;
    w->nfree_exchanges++;
}

static struct exchange *pool_get(struct gw_worker *w)
{
    struct exchange *x = w->free_exchanges;

    if (x != NULL) {
        w->free_exchanges = x->next_free;
        w->nfree_exchanges--;
        x->next_free = NULL;
        return x;
    }
    x = calloc(1, sizeof(*x));
    if (x == NULL)
        return NULL;
    if ((x->in = evbuffer_new()) == NULL || (x->out = evbuffer_new()) == NULL ||
        (x->resp = evbuffer_new()) == NULL) {
        exchange_discard(x);
        return NULL;
    }
    return x;
}

/* The answer is going out: the create no longer counts against its key's concurrency.
 * Given back before the answer's first byte is queued, not when the connection is done
 * writing it, so a client that sends its next create the moment it reads this answer
 * finds the slot free, on whichever loop that create lands. */
void gw_exchange_release_slot(struct exchange *x)
{
    if (!x->admitted)
        return;
    x->admitted = 0;
    gw_admit_release(x->w, &(struct gw_admit_req){ x->key, &x->route, x->rid, NULL, NULL,
                                                   &x->lease, 0 });
}

void gw_exchange_free(struct exchange *x)
{
    if (x->store_op != NULL)
        gw_store_cancel(x->store_op); /* a job put still happens: the job exists upstream */
    gw_jobs_idem_end(x);
    if (x->admission != NULL)
        gw_admit_cancel(x->admission);
    gw_exchange_release_slot(x);
    if (x->quota_wait != NULL)
        gw_admit_quota_cancel(x->quota_wait);
    if (x->quota_reserved) {
        gw_admit_quota_settle(x->w, x->key, x->quota_seconds, x->quota_day, x->quota_remote, 0);
        gw_m_vs(gw_exchange_key_slot(x), gw_exchange_model_sent(x), GW_M_VS_RELEASED, x->quota_seconds);
    }
    gw_m_state((int)x->state, -1);
    if (x->up != NULL)
        gw_upconn_release(x->up);
    if (x->spool_fd >= 0)
        close(x->spool_fd);
    if (--x->w->inflight == 0)
        gw_worker_idle(x->w);
    gw_config_release(x->cfg);
    gw_keytab_release(x->keytab);
    pool_put(x->w, x);
}

struct exchange *gw_exchange_new(struct gw_worker *w, evhtp_request_t *req)
{
    struct exchange *x = pool_get(w);

    if (x == NULL)
        return NULL;
    x->w = w;
    x->cfg = gw_worker_cfg(w); /* this request runs under it, even if a reload comes */
    gw_config_hold(x->cfg);
    x->keytab = gw_worker_keytab(w); /* and these keys: a revoke does not pull its key away */
    gw_keytab_hold(x->keytab);
    x->req = req;
    x->spool_fd = -1;
    x->pinned_key = -1;
    x->client_cl = 0;
    clock_gettime(CLOCK_MONOTONIC, &x->t0);
    w->inflight++;
    gw_m_state(-1, X_HEADERS);
    new_rid(x);
    /* the request's callback argument is how every later hook finds the exchange */
    req->cbarg = x;
    return x;
}
