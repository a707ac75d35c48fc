/*
 * updns.c - where the upstream is: the host-name lookup on the loop's evdns
 * base, and the addresses it gave, reused for UP_DNS_TTL_MS by every new
 * connection of the upstream. A literal address is never looked up. One
 * lookup at a time: connections that need addresses meanwhile wait in
 * u->waiting, and go on to connect (upconn.c) or fail when it answers.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/dns.h>
#include <event2/util.h>

#include "upstream_int.h"

#define UP_DNS_TTL_MS   30000       /* a lookup's result is reused this long */

/* One host-name lookup in flight. Allocated apart from the upstream so that a
 * lookup still running when the upstream is freed can finish harmlessly. */
struct resolve {
    struct gw_upstream *u;                  /* NULL once orphaned by gw_upstream_free */
    struct evdns_getaddrinfo_request *req;  /* NULL if answered synchronously */
    struct event_base *base;
    struct evdns_base *dns;                 /* owned here once orphaned, freed after the answer */
};

/* ----------------------------------------------------------------- lookups */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void dns_free_cb(evutil_socket_t fd, short what, void *arg)
{
    evdns_base_free(arg, 0);
}

/* No address could be connected to: perhaps they are stale, so the next
 * connection looks the name up again (a literal address stays). */
void gw_updns_forget(struct gw_upstream *u)
{
    if (!u->host_is_ip)
        u->ncache = 0;
}

static void conn_take_addrs(struct gw_upconn *c)
{
    struct gw_upstream *u = c->u;

    memcpy(c->addrs, u->cache, u->ncache * sizeof(u->cache[0]));
    c->naddrs = u->ncache;
    c->next_addr = 0;
}

/* A lookup ended: keep its addresses, then let every waiting connection go on
 * (or fail). Takes ai. */
static void upstream_resolved(struct gw_upstream *u, int result, struct evutil_addrinfo *ai)
{
    struct evutil_addrinfo *p;
    struct gw_upconn *c;

    if (result == 0) {
        u->ncache = 0;
        for (p = ai; p != NULL && u->ncache < UP_ADDRS_MAX; p = p->ai_next) {
            union up_addr *a = &u->cache[u->ncache];

            if (p->ai_family == AF_INET && p->ai_addrlen >= sizeof(a->in)) {
                memcpy(&a->in, p->ai_addr, sizeof(a->in));
                a->in.sin_port = htons((uint16_t)port_of(u));
            } else if (p->ai_family == AF_INET6 && p->ai_addrlen >= sizeof(a->in6)) {
                memcpy(&a->in6, p->ai_addr, sizeof(a->in6));
                a->in6.sin6_port = htons((uint16_t)port_of(u));
            } else {
                continue;
            }
            u->ncache++;
        }
        u->cache_expires = now_ms() + UP_DNS_TTL_MS;
        if (u->ncache == 0)
            result = EVUTIL_EAI_NODATA;
    }
    if (ai != NULL)
        evutil_freeaddrinfo(ai);

    /* Pop one at a time: a callback may release another waiting connection. */
    while ((c = TAILQ_FIRST(&u->waiting)) != NULL) {
        TAILQ_REMOVE(&u->waiting, c, link);
        c->phase = PH_START;
        gw_upstream_conn_enter(c);
        if (result == 0) {
            conn_take_addrs(c);
            gw_upconn_connect_next(c);
        } else {
            gw_upconn_fail(c, 502, "cannot resolve upstream host %s: %s", u->host,
                           evutil_gai_strerror(result));
        }
        gw_upstream_conn_leave(c);
    }
}

static void dns_cb(int result, struct evutil_addrinfo *ai, void *arg)
{
    struct resolve *r = arg;
    struct gw_upstream *u = r->u;

    if (u == NULL) { /* orphaned: free the DNS base once libevent is done with it */
        static const struct timeval zero = { 0, 0 };

        if (ai != NULL)
            evutil_freeaddrinfo(ai);
        if (r->dns != NULL && event_base_once(r->base, -1, EV_TIMEOUT, dns_free_cb, r->dns,
                                              &zero) != 0)
            evdns_base_free(r->dns, 0);
        free(r);
        return;
    }
    u->resolving = NULL;
    free(r);
    upstream_resolved(u, result, ai);
}

static void upstream_resolve(struct gw_upstream *u)
{
    struct evutil_addrinfo hints;
    struct evdns_getaddrinfo_request *req;
    struct resolve *r = calloc(1, sizeof(*r));

    if (r == NULL) {
        upstream_resolved(u, EVUTIL_EAI_MEMORY, NULL);
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
    r->u = u;
    r->base = u->base;
    u->resolving = r;
    /* May answer synchronously (/etc/hosts, errors): then dns_cb has already
     * run, freed r and cleared u->resolving. */
    req = evdns_getaddrinfo(u->dns, u->host, NULL, &hints, dns_cb, r);
    if (u->resolving != NULL)
        u->resolving->req = req;
}

/* From PH_START with no usable pooled connection: addresses, then connect. */
void gw_updns_resolve(struct gw_upconn *c)
{
    struct gw_upstream *u = c->u;

    if (u->ncache > 0 && now_ms() < u->cache_expires) {
        conn_take_addrs(c);
        gw_upconn_connect_next(c);
        return;
    }
    c->phase = PH_RESOLVING;
    TAILQ_INSERT_TAIL(&u->waiting, c, link);
    if (u->resolving == NULL)
        upstream_resolve(u);
}

/* ------------------------------------------------------ setup and teardown */

/* The addresses of a new upstream, its host name set, and the loop's DNS base.
 * GW_ERR when no DNS base can be made (out of memory); u frees nothing then. */
int gw_updns_init(struct gw_upstream *u)
{
    union up_addr *a;

    /* A literal address needs no lookup, ever. */
    a = &u->cache[0];
    if (evutil_inet_pton(AF_INET, u->host, &a->in.sin_addr) == 1) {
        a->in.sin_family = AF_INET;
        a->in.sin_port = htons((uint16_t)u->cfg->upstream_port);
        u->host_is_ip = 1;
    } else if (evutil_inet_pton(AF_INET6, u->host, &a->in6.sin6_addr) == 1) {
        a->in6.sin6_family = AF_INET6;
        a->in6.sin6_port = htons((uint16_t)u->cfg->upstream_port);
        u->host_is_ip = 1;
    }
    if (u->host_is_ip) {
        u->ncache = 1;
        u->cache_expires = UINT64_MAX;
    }

    /* Without a readable resolv.conf, still resolve from /etc/hosts (and fail
     * other names cleanly) rather than refuse to start. */
    u->dns = evdns_base_new(u->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (u->dns == NULL) {
        u->dns = evdns_base_new(u->base, 0);
        if (u->dns == NULL)
            return GW_ERR;
        evdns_base_load_hosts(u->dns, NULL);
    }
    return GW_OK;
}

/* From gw_upstream_free: the DNS base goes, or, with a lookup in flight, is
 * left to that lookup. */
void gw_updns_free(struct gw_upstream *u)
{
    if (u->resolving != NULL) {
        /* The lookup outlives us: it frees itself and the DNS base. */
        struct resolve *r = u->resolving;

        u->resolving = NULL;
        r->u = NULL;
        r->dns = u->dns;
        u->dns = NULL;
        if (r->req != NULL)
            evdns_getaddrinfo_cancel(r->req);
    }
    if (u->dns != NULL)
        evdns_base_free(u->dns, 0);
}
