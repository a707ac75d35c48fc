/*
 * server.c - listeners and event loops: one evhtp_t per loop, all bound to the
 * same address with SO_REUSEPORT so the kernel spreads connections; signals are
 * taken by the main thread with sigwait() and passed to the loops.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>

#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "accesslog.h"
#include "admin.h"
#include "htfix.h"
#include "keysync.h"
#include "limiter.h"
#include "log.h"
#include "ops.h"
#include "store/store.h"
#include "proxy.h"
#include "refresh.h"
#include "server.h"
#include "upstream.h"

#define DRAIN_MAX_S 30 /* SIGTERM: in-flight exchanges get this long to finish */
#define ACCEPT_PAUSE_MS 250 /* out of descriptors: stop accepting this long */
#define DRAIN_FIRST_REQUEST_MS 1000 /* SIGTERM: a connection accepted this recently may
                                     * still send its request: wait for it */
#define DRAIN_QUEUE_MAX_MS 2000 /* SIGTERM: then wait at most this long for the loops to
                                  * take what is still in their accept queues */
#define DRAIN_GRACE_MS 250 /* SIGTERM: listeners stay open this long, new connections
                              steered to a newer process (upgrade.c), so that those
                              already queued are accepted rather than reset */

struct gw_server {
    struct gw_config *cfg;        /* the first: what the listeners, the upstream and the
                                     store were set up with; held for the process's life */
    struct gw_config *cur;        /* the current one (reloads replace it) */
    struct gw_limiter *limiter;
    struct gw_store *store;
    struct gw_keytab *keytab;     /* the store's keys, as every loop has them (one ref) */
    SSL_CTX *up_ssl;
    unsigned nworkers;
    struct gw_worker *workers;
    struct gw_inherited inherited; /* listening sockets an older gateway handed over */
    struct gw_handover *handover;  /* ours, for a newer gateway; NULL: off */
};

static void drain_start(evutil_socket_t fd, short ev, void *arg);

static evhtp_res post_accept(evhtp_connection_t *conn, void *arg)
{
    struct gw_worker *w = arg;

    if (w->draining || gw_htfix_attach(conn) != GW_OK)
        return EVHTP_RES_ERROR;
    /* libevent writes at most 16 KiB per call by default: downloads go out in
     * fewer, larger writes */
    if (conn->bev != NULL)
        bufferevent_set_max_single_write(conn->bev, 256 * 1024);
    gw_proxy_attach(conn, w);
    return EVHTP_RES_OK;
}

/*
 * accept() failed. Out of file descriptors (EMFILE, ENFILE) or memory, the
 * listening socket stays readable and libevent would call accept() again at once,
 * forever, at 100% CPU: stop accepting for a moment instead (nginx does the same)
 * and keep serving the connections already open. Logged at most once a second.
 */
static void accept_resume(evutil_socket_t fd, short ev, void *arg)
{
    struct gw_worker *w = arg;

    if (w->draining)
        return;
    if (w->htp->server != NULL)
        evconnlistener_enable(w->htp->server);
    for (unsigned i = 0; i < w->nmore; i++)
        evconnlistener_enable(w->more[i]->server);
}

static void accept_error(struct evconnlistener *lis, void *arg)
{
    struct gw_worker *w = ((evhtp_t *)arg)->arg; /* libevhtp made the listener with htp */
    int e = EVUTIL_SOCKET_ERROR();
    struct timeval pause = { 0, ACCEPT_PAUSE_MS * 1000 };
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;

    w->accept_errors++;
    if (now - w->accept_logged_ms >= 1000) {
        gw_log(GW_LOG_WARN, "accept(): %s (%llu times since the last report); pausing accepts "
               "for %d ms", strerror(e), (unsigned long long)w->accept_errors, ACCEPT_PAUSE_MS);
        w->accept_logged_ms = now;
        w->accept_errors = 0;
    }
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        evconnlistener_disable(w->htp->server);
        for (unsigned i = 0; i < w->nmore; i++)
            evconnlistener_disable(w->more[i]->server);
        (void)lis;
        event_add(w->accept_timer, &pause);
    }
}

/*
 * glibc keeps what is freed: the body pieces of many concurrent uploads (256 KiB
 * chains) end up as free heap pages that RSS keeps counting after the load, and
 * its dynamic mmap threshold grows past them after the first free, so they are
 * not unmapped either. malloc_trim() returns the free pages of every arena (it
 * takes a few ms for a large heap, no I/O); only when the loop has had nothing
 * to do for TRIM_IDLE_MS, so a busy loop never refaults pages it still uses.
 */
#define TRIM_IDLE_MS 1000

/* Under AddressSanitizer, malloc is ASan's: glibc's malloc_trim would be the
 * first call into glibc's allocator, and two loops making it at once both set
 * up its arena for themselves, which glibc's check at thread exit then aborts
 * on ("a->attached_threads > 0", seen in CI). There is nothing of glibc's to
 * trim there anyway. */
#if defined(__SANITIZE_ADDRESS__)
#define GW_TRIM 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GW_TRIM 0
#endif
#endif
#ifndef GW_TRIM
#define GW_TRIM 1
#endif

static void trim_idle(evutil_socket_t fd, short ev, void *arg)
{
    struct gw_worker *w = arg;

    (void)fd;
    (void)ev;
    if (GW_TRIM && w->inflight == 0)
        malloc_trim(0);
}

void gw_worker_idle(struct gw_worker *w)
{
    static const struct timeval idle = { TRIM_IDLE_MS / 1000, (TRIM_IDLE_MS % 1000) * 1000 };

    if (w->trim_timer != NULL)
        evtimer_add(w->trim_timer, &idle);
}

static int server_tls(evhtp_t *htp, const struct gw_config *cfg, struct gw_error *err)
{
    evhtp_ssl_cfg_t scfg;

    memset(&scfg, 0, sizeof(scfg));
    scfg.pemfile = cfg->tls_cert;
    scfg.privfile = cfg->tls_key;
    scfg.scache_type = evhtp_ssl_scache_type_internal;
    scfg.scache_timeout = 300;
    scfg.ssl_opts = SSL_OP_NO_SSLv2 | SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1;
    /* evhtp_ssl_init reports success even when the certificate or key failed to
     * load (libevhtp-notes trap 8): check the result ourselves */
    if (evhtp_ssl_init(htp, &scfg) != 0 || htp->ssl_ctx == NULL ||
        SSL_CTX_check_private_key(htp->ssl_ctx) != 1)
        return gw_error_set(err, 0, NULL, NULL, NULL,
                            "cannot load TLS certificate %s / key %s", cfg->tls_cert,
                            cfg->tls_key);
    SSL_CTX_set_min_proto_version(htp->ssl_ctx, TLS1_2_VERSION);
    return GW_OK;
}

/*
 * A public listener on w's loop: our settings, TLS when configured, listening
 * on fd (a socket an older gateway handed over, handover.c) or, fd -1, on a
 * socket of its own bound to [server] listen. NULL with a message in err.
 */
static evhtp_t *public_listener(struct gw_worker *w, int fd, struct gw_error *err)
{
    const struct gw_config *cfg = w->cfg;
    struct timeval tv = { cfg->client_timeout_ms / 1000, (cfg->client_timeout_ms % 1000) * 1000 };
    evhtp_t *htp = evhtp_new(w->base, w); /* htp->arg: how accept_error() finds w */
    char addr[300];

    if (htp == NULL) {
        gw_error_set(err, 0, NULL, NULL, NULL, "evhtp_new failed");
        return NULL;
    }
    /* we answer 100-continue ourselves, once admitted (trap 2) */
    evhtp_disable_flag(htp, EVHTP_FLAG_ENABLE_100_CONT);
    evhtp_enable_flag(htp, EVHTP_FLAG_ENABLE_REUSEPORT | EVHTP_FLAG_ENABLE_NODELAY);
    evhtp_set_parser_flags(htp, EVHTP_PARSE_QUERY_FLAG_IGNORE_HEX |
                                    EVHTP_PARSE_QUERY_FLAG_ALLOW_EMPTY_VALS |
                                    EVHTP_PARSE_QUERY_FLAG_ALLOW_NULL_VALS);
    evhtp_set_timeouts(htp, &tv, &tv);
    evhtp_set_post_accept_cb(htp, post_accept, w);
    evhtp_set_gencb(htp, gw_proxy_request_cb, NULL);
    if (cfg->tls_cert != NULL && server_tls(htp, cfg, err) != GW_OK)
        return NULL;
    snprintf(addr, sizeof(addr), "%s%s", strchr(cfg->listen.host, ':') ? "ipv6:" : "",
             cfg->listen.host);
    if (fd >= 0 ? evhtp_accept_socket(htp, fd, 1024) != 0
                : evhtp_bind_socket(htp, addr, (uint16_t)cfg->listen.port, 1024) != 0) {
        gw_error_set(err, 0, NULL, NULL, NULL, "cannot listen on %s:%d: %s", cfg->listen.host,
                     cfg->listen.port, strerror(errno));
        return NULL;
    }
    evconnlistener_set_error_cb(htp->server, accept_error);
    return htp;
}

/* On the first loop (keysync.c): every loop starts new requests with tab once
 * it takes it (gw_worker_keytab); those in flight keep theirs. Each loop gets a
 * reference of its own in its slot; the server's reference to the old table
 * goes to the keysync, which releases it (freed once no loop or request holds it). */
static struct gw_keytab *publish_keys(void *arg, struct gw_keytab *tab)
{
    struct gw_server *s = arg;
    struct gw_keytab *old = s->keytab;

    for (unsigned i = 0; i < s->nworkers; i++) {
        gw_keytab_hold(tab);
        const struct gw_keytab *untaken =
            __atomic_exchange_n(&s->workers[i].next_keytab, tab, __ATOMIC_ACQ_REL);
        gw_keytab_release(untaken); /* an earlier table the loop never took */
    }
    s->keytab = tab;
    return old;
}

const struct gw_keytab *gw_worker_take_keytab(struct gw_worker *w)
{
    const struct gw_keytab *n = __atomic_exchange_n(&w->next_keytab, NULL, __ATOMIC_ACQUIRE);

    if (n != NULL) {
        const struct gw_keytab *old = w->keytab;
        w->keytab = n; /* the slot's reference is now the loop's */
        gw_keytab_release(old);
    }
    return w->keytab;
}

static void keys_loaded(void *arg, const struct gw_store_res *res)
{
    struct gw_server *s = arg;

    s->keytab = gw_keytab_build(s->cfg, res->keys, res->nkeys, res->keys_version);
}

/* The store's keys, before the loops run (a blocking read is fine here). */
static int load_keys(struct gw_server *s, const struct gw_store_options *so,
                     struct gw_error *err)
{
    if (gw_store_keys_list_sync(so, NULL, 0, keys_loaded, s, err) != GW_OK) {
        if (s->cfg->store_backend != GW_STORE_REDIS)
            return GW_ERR;
        /* Redis down at start: serve with the config's keys (on_failure says how);
         * the keys poll loads the store's once Redis answers (its version moved
         * from 0, or the first poll finds keys) */
        gw_log(GW_LOG_WARN, "keys: cannot read the store's keys (%s): only the "
               "configuration's [key] sections are in force until Redis answers",
               err->message);
        s->keytab = gw_keytab_build(s->cfg, NULL, 0, 0);
    }
    if (s->keytab == NULL || gw_limiter_bind_keys(s->limiter, s->keytab->keys,
                                                  s->keytab->nkeys) != GW_OK)
        return gw_error_set(err, 0, NULL, NULL, NULL, "out of memory");
    if (s->keytab->skipped > 0)
        gw_log(GW_LOG_WARN, "keys: %u store key(s) named like a config key are not used "
               "(the config's [key] wins)", s->keytab->skipped);
    return GW_OK;
}

/* Loop id, listening on fd (inherited, handover.c) or on a socket of its own (-1). */
static int worker_init(struct gw_server *s, struct gw_worker *w, unsigned id, int fd,
                       struct gw_error *err)
{
    const struct gw_config *cfg = s->cfg;

    w->id = id;
    w->cfg = cfg;
    gw_config_hold(cfg); /* the loop's own reference (gw_worker_take_cfg) */
    w->keytab = s->keytab;
    if (w->keytab != NULL)
        gw_keytab_hold(w->keytab); /* the loop's own reference (gw_worker_take_keytab) */
    w->limiter = s->limiter;
    gw_keypool_init(&w->keys, cfg->nupstream_keys);
    /* Each loop is touched by its own thread only: no locks. The changelist
     * folds the add/del of write interest around every write into one epoll_ctl. */
    struct event_config *ec = event_config_new();
    if (ec == NULL)
        return gw_error_set(err, 0, NULL, NULL, NULL, "event_config_new failed");
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK | EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (w->base == NULL)
        return gw_error_set(err, 0, NULL, NULL, NULL, "event_base_new failed");
    /* how the main thread wakes this loop (SIGTERM): an eventfd, not libevent's
     * cross-thread machinery, which would need locks on every event operation */
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->wake_fd < 0)
        return gw_error_set(err, 0, NULL, NULL, NULL, "eventfd: %s", strerror(errno));
    w->wake_ev = event_new(w->base, w->wake_fd, EV_READ, drain_start, w);
    if (w->wake_ev == NULL || event_add(w->wake_ev, NULL) != 0)
        return gw_error_set(err, 0, NULL, NULL, NULL, "cannot watch the wake-up eventfd");
    if (s->store != NULL && (w->store = gw_store_loop_new(s->store, w->base, err)) == NULL)
        return GW_ERR;
    w->up = gw_upstream_new(w->base, cfg, s->up_ssl);
    /* the first loop keeps the ledger current (the store hands each job to one claimer) */
    if (id == 0 && w->store != NULL && w->up != NULL &&
        (w->refresher = gw_refresh_start(w)) == NULL)
        return gw_error_set(err, 0, NULL, NULL, NULL, "cannot start the job refresh");
    if (w->up == NULL)
        return gw_error_set(err, 0, NULL, NULL, NULL, "cannot set up the upstream client");
    if (id == 0 && gw_readyz_start(w) != GW_OK)
        return gw_error_set(err, 0, NULL, NULL, NULL, "cannot start the store probe");
    if ((w->htp = public_listener(w, fd, err)) == NULL)
        return GW_ERR;
    if (id == 0 && gw_admin_start(w, s->inherited.admin, err) != GW_OK)
        return GW_ERR;
    /* the first loop keeps every loop's store keys current */
    if (id == 0 && w->store != NULL &&
        (w->keysync = gw_keysync_start(w, s->limiter, s->keytab->version, publish_keys, s)) ==
            NULL)
        return gw_error_set(err, 0, NULL, NULL, NULL, "cannot start the keys poll");
    w->accept_timer = evtimer_new(w->base, accept_resume, w);
    if (w->accept_timer == NULL)
        return gw_error_set(err, 0, NULL, NULL, NULL, "cannot create the accept timer");
    w->trim_timer = evtimer_new(w->base, trim_idle, w);
    if (w->trim_timer == NULL)
        return gw_error_set(err, 0, NULL, NULL, NULL, "cannot create the trim timer");
    return GW_OK;
}

/* Today's spending per key, from the store (before the loops run: a blocking read
 * is fine here), so that a restart does not give a day's budget twice. */
static int seed_budgets(struct gw_server *s, const struct gw_store_options *so,
                        struct gw_error *err)
{
    struct timespec now;
    struct tm tm;
    char today[16];
    struct gw_usage *u = NULL;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(today, sizeof(today), "%Y-%m-%d", &tm);
    if (gw_store_usage_read(so, &(struct gw_usage_query){ .since = today, .until = today }, &u,
                            err) != GW_OK)
        return GW_ERR;
    unsigned nstore = s->keytab != NULL ? s->keytab->nkeys : 0;
    for (unsigned k = 0; k < s->cfg->nkeys + nstore; k++) {
        const struct gw_team_key *key = k < s->cfg->nkeys ? &s->cfg->keys[k]
                                                          : &s->keytab->keys[k - s->cfg->nkeys];
        int64_t spent = 0;
        for (size_t i = 0; i < u->n; i++) {
            if (strcmp(u->rows[i].key_name, key->name) == 0)
                spent += u->rows[i].seconds - u->rows[i].refunded_seconds;
        }
        if (spent > 0)
            gw_limiter_seed(s->limiter, key, now.tv_sec / 86400, (uint64_t)spent);
    }
    gw_store_usage_free(u);
    return GW_OK;
}

/* The signals the main thread takes with sigwait(). Blocked before any thread
 * starts (the store's starts in gw_server_new), so that every thread inherits
 * the mask: a signal landing on a thread that does not block it would take its
 * default action (SIGUSR1, SIGHUP: the end of the process) while the main
 * thread is busy, say with a reload, rather than waiting in sigwait(). */
static void signal_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
}

struct gw_server *gw_server_new(struct gw_config *cfg, struct gw_error *err)
{
    struct gw_server *s = calloc(1, sizeof(*s));
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    sigset_t set;

    signal_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (s == NULL) {
        gw_error_set(err, 0, NULL, NULL, NULL, "out of memory");
        return NULL;
    }
    s->cfg = s->cur = cfg;
    gw_config_hold(cfg); /* the first config outlives reloads: the upstream keeps it */
    s->nworkers = cfg->threads > 0 ? (unsigned)cfg->threads : ncpu > 0 ? (unsigned)ncpu : 1;
    s->workers = calloc(s->nworkers, sizeof(*s->workers));
    if (s->workers == NULL) {
        gw_error_set(err, 0, NULL, NULL, NULL, "out of memory");
        goto fail;
    }
    if (gw_htfix_init(cfg->max_header_bytes, cfg->header_timeout_ms) != GW_OK) {
        gw_error_set(err, 0, NULL, NULL, NULL, "cannot find libevhtp's htparser_run");
        goto fail;
    }
    if (cfg->upstream_tls && gw_upstream_tls_ctx(cfg, &s->up_ssl, err) != GW_OK)
        goto fail;
    s->limiter = gw_limiter_new(cfg);
    if (s->limiter == NULL) {
        gw_error_set(err, 0, NULL, NULL, NULL, "out of memory");
        goto fail;
    }
    struct gw_store_options so;
    if (gw_server_store_options(cfg, &so)) {
        so.log = gw_log_write;
        s->store = gw_store_open(&so, err);
        if (s->store == NULL || load_keys(s, &so, err) != GW_OK)
            goto fail;
        if (seed_budgets(s, &so, err) != GW_OK) {
            if (cfg->store_backend != GW_STORE_REDIS)
                goto fail;
            /* Redis down at start: serve anyway (on_failure says how); today's
             * spending is not known to the local limits */
            gw_log(GW_LOG_WARN, "store: cannot read today's usage: %s", err->message);
        }
    }
    if (gw_metrics_init(s->workers, s->nworkers, s->store) != GW_OK) {
        gw_error_set(err, 0, NULL, NULL, NULL, "out of memory");
        goto fail;
    }
    gw_metrics_config(cfg);
    s->inherited.admin = s->inherited.link = -1;
    if (cfg->handover && s->nworkers <= GW_HANDOVER_MAX &&
        gw_handover_take(cfg->listen.host, cfg->listen.port, cfg->admin.host, cfg->admin.port,
                         &s->inherited) > 0)
        gw_log(GW_LOG_INFO, "handover: took %u listening socket(s)%s of gateway pid %ld on "
               "%s:%d: both accept on them until one leaves", s->inherited.nmain,
               s->inherited.admin >= 0 ? " and the admin listener" : "", s->inherited.pid,
               cfg->listen.host, cfg->listen.port);
    for (unsigned i = 0; i < s->nworkers; i++) {
        /* more loops than the older gateway: the extra ones share its sockets rather
         * than bind their own, so that it holds every socket we listen on and either
         * of us may leave first without a reset (a rollback included) */
        int fd = -1;
        if (i < s->inherited.nmain)
            fd = s->inherited.main[i];
        else if (s->inherited.nmain > 0 &&
                 (fd = fcntl(s->inherited.main[i % s->inherited.nmain], F_DUPFD_CLOEXEC, 0)) < 0) {
            gw_error_set(err, 0, NULL, NULL, NULL, "dup: %s", strerror(errno));
            goto fail;
        }
        if (worker_init(s, &s->workers[i], i, fd, err) != GW_OK)
            goto fail;
    }
    /* fewer loops than the older gateway: ours take its other sockets in turn, so
     * that each is accepted on and none is left to reset its queue when it leaves */
    for (unsigned i = s->nworkers; i < s->inherited.nmain; i++) {
        struct gw_worker *w = &s->workers[i % s->nworkers];
        if ((w->more[w->nmore] = public_listener(w, s->inherited.main[i], err)) == NULL)
            goto fail;
        w->nmore++;
    }
    return s;

fail:
    gw_server_free(s);
    return NULL;
}

int gw_server_store_options(const struct gw_config *cfg, struct gw_store_options *so)
{
    memset(so, 0, sizeof(*so));
    if (cfg->store_backend == GW_STORE_REDIS) {
        so->redis_host = cfg->redis_host;
        so->redis_port = cfg->redis_port;
        so->redis_unix = cfg->redis_unix;
        so->redis_password = cfg->redis_password;
        so->redis_db = cfg->redis_db;
        so->redis_prefix = cfg->redis_prefix;
        so->redis_timeout_ms = cfg->redis_timeout_ms;
        return 1;
    }
    so->path = cfg->store_path;
    so->sync_full = cfg->store_sync_full;
    return cfg->store_path != NULL;
}

int64_t gw_worker_now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

struct gw_worker *gw_server_worker(struct gw_server *s, unsigned i)
{
    return i < s->nworkers ? &s->workers[i] : NULL;
}

static void *worker_main(void *arg)
{
    struct gw_worker *w = arg;
    char name[16];

    /* named for top -H, perf and gdb: "gw-loop-0", ... */
    snprintf(name, sizeof(name), "gw-loop-%u", w->id);
    pthread_setname_np(pthread_self(), name);
    gw_metrics_bind_thread(w->id);
    event_base_dispatch(w->base);
    gw_htfix_loop_end();
    return NULL;
}

static void drain_check(evutil_socket_t fd, short ev, void *arg)
{
    struct gw_worker *w = arg;
    static __thread int ticks;

    /* idle: no exchange, and no connection that closing would cut (a request
     * still in the socket, or a connection accepted just before the listeners
     * closed whose client has not written yet) */
    if ((w->inflight == 0 && gw_htfix_unsettled(DRAIN_FIRST_REQUEST_MS) == 0) ||
        ++ticks > DRAIN_MAX_S * 10)
        event_base_loopexit(w->base, NULL);
}

/* Runs on the worker's own loop: stop accepting, then exit once idle. */
static void drain_start(evutil_socket_t fd, short ev, void *arg)
{
    struct gw_worker *w = arg;
    struct timeval tick = { 0, 100 * 1000 };
    struct event *t;

    w->draining = 1;
    evhtp_unbind_socket(w->htp);
    for (unsigned i = 0; i < w->nmore; i++)
        evhtp_unbind_socket(w->more[i]);
    if (w->admin != NULL)
        evhtp_unbind_socket(w->admin);
    t = event_new(w->base, -1, EV_PERSIST, drain_check, w);
    event_add(t, &tick);
}

/* Connections waiting in the accept queues of every loop's listeners (Linux:
 * TCP_INFO's tcpi_unacked is a listener's accept backlog). */
static unsigned queued_connections(struct gw_server *s)
{
    unsigned n = 0;

    for (unsigned i = 0; i < s->nworkers; i++) {
        struct gw_worker *w = &s->workers[i];
        evhtp_t *htps[2 + GW_HANDOVER_MAX] = { w->htp, w->admin };
        memcpy(htps + 2, w->more, w->nmore * sizeof(evhtp_t *));
        for (unsigned k = 0; k < 2 + w->nmore; k++) {
            struct tcp_info ti;
            socklen_t len = sizeof(ti);
            if (htps[k] == NULL || htps[k]->server == NULL)
                continue;
            if (getsockopt(evconnlistener_get_fd(htps[k]->server), IPPROTO_TCP, TCP_INFO, &ti,
                           &len) == 0)
                n += ti.tcpi_unacked;
        }
    }
    return n;
}

/*
 * SIGTERM, before the loops close their listeners: new connections go to a newer
 * process's sockets if one listens (upgrade.c), and the loops keep accepting
 * what is already queued for DRAIN_GRACE_MS. The steering stays on while the
 * listeners close, and after: taken off first, it let the kernel hand a few new
 * connections to a listener about to close, which reset them (the upgrade test
 * saw it on a busy machine). Left in the group, it is neutral for a newer process
 * with as many loops (its answers are past the group's end: the kernel picks by
 * hash) and favours some of its loops if it runs more; that process takes it off
 * at its next SIGHUP (steer_reset). One socket of each SO_REUSEPORT group speaks
 * for the group. The main thread may sleep: it runs no loop.
 */
static void drain_grace(struct gw_server *s)
{
    struct timespec grace = { 0, DRAIN_GRACE_MS * 1000000L };
    evutil_socket_t fds[2] = { -1, -1 };
    /* our sockets in the group: one per loop, or as many as we took from an older
     * gateway (our loops then listen on those alone: more of them, or dups) */
    unsigned nown[2] = { s->inherited.nmain > 0 ? s->inherited.nmain : s->nworkers, 1 };
    int steered = 0;

    if (s->workers[0].htp->server != NULL)
        fds[0] = evconnlistener_get_fd(s->workers[0].htp->server);
    if (s->workers[0].admin != NULL && s->workers[0].admin->server != NULL)
        fds[1] = evconnlistener_get_fd(s->workers[0].admin->server);
    for (int i = 0; i < 2; i++)
        steered |= fds[i] >= 0 && gw_upgrade_steer_away(fds[i], nown[i]) == GW_OK;
    if (!steered)
        return;
    gw_log(GW_LOG_INFO, "SIGTERM: new connections go to a newer gateway if one listens; "
           "listeners close in %d ms", DRAIN_GRACE_MS);
    while (nanosleep(&grace, &grace) != 0 && errno == EINTR)
        ;
    /* A loop starved of CPU (a busy machine) may not have taken everything that
     * was queued before the steering: closing its listener would reset those
     * connections. Wait, a bounded while, until every accept queue is empty. */
    for (int waited = 0; waited < DRAIN_QUEUE_MAX_MS && queued_connections(s) > 0;
         waited += 10) {
        struct timespec tick = { 0, 10 * 1000000L };
        nanosleep(&tick, NULL);
    }
}

/* SIGHUP: take off a steering program an older process left on our groups when
 * it drained (drain_grace): the kernel's own spread again, over all our loops. */
static void steer_reset(struct gw_server *s)
{
    if (s->workers[0].htp->server != NULL)
        gw_upgrade_steer_clear(evconnlistener_get_fd(s->workers[0].htp->server));
    if (s->workers[0].admin != NULL && s->workers[0].admin->server != NULL)
        gw_upgrade_steer_clear(evconnlistener_get_fd(s->workers[0].admin->server));
}

/* Once the loops run: serve our listening sockets to a newer gateway, and tell
 * the older one we took its own from that we accept on them (handover.c). */
static void handover_start(struct gw_server *s)
{
    int fds[GW_HANDOVER_MAX];
    unsigned n = 0;
    int admin = s->workers[0].admin != NULL ? evconnlistener_get_fd(s->workers[0].admin->server)
                                            : -1;
    int took_admin = s->inherited.admin >= 0 ? GW_SHARED_ADMIN : 0;

    if (s->nworkers > GW_HANDOVER_MAX) {
        /* a message carries that many sockets: handing over some would leave the
         * others to be reset by our close */
        gw_log(GW_LOG_INFO, "handover: off with more than %d event loops (threads): an "
               "upgrade steers new connections instead", GW_HANDOVER_MAX);
        return;
    }
    for (unsigned i = 0; i < s->nworkers; i++) {
        struct gw_worker *w = &s->workers[i];
        fds[n++] = evconnlistener_get_fd(w->htp->server);
        for (unsigned k = 0; k < w->nmore; k++)
            fds[n++] = evconnlistener_get_fd(w->more[k]->server);
    }
    /* we accept on every socket we took, and every socket we listen on is one the
     * older gateway gave (extra loops share them): it holds all of ours */
    s->handover = gw_handover_start(s->cfg->listen.host, s->cfg->listen.port, fds, n, admin,
                                    &s->inherited, GW_SHARED_MAIN | took_admin,
                                    (s->inherited.nmain > 0 ? GW_SHARED_MAIN : 0) | took_admin);
}

/*
 * SIGTERM: stop accepting without resetting a queued connection. When another
 * gateway confirms it accepts on all our listening sockets too and stays
 * (handover.c), closing ours drops a reference and the sockets stay with it:
 * close them now. Otherwise steer new connections away and wait for the queues
 * to empty (drain_grace).
 */
static void drain_listeners(struct gw_server *s)
{
    int need = GW_SHARED_MAIN | (s->workers[0].admin != NULL ? GW_SHARED_ADMIN : 0);
    int stays = gw_handover_leave(s->handover);

    s->handover = NULL;
    if ((stays & need) == need) {
        gw_log(GW_LOG_INFO, "SIGTERM: another gateway accepts on our listening sockets: it "
               "takes every new connection from now on");
        return;
    }
    drain_grace(s);
}

int gw_server_run(struct gw_server *s)
{
    sigset_t set;
    int sig = 0;

    signal_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by the workers */
    signal(SIGPIPE, SIG_IGN);
    for (unsigned i = 0; i < s->nworkers; i++) {
        /* a loop that does not run would leave its listening socket unaccepted, and an
         * older gateway would be told we accept on it */
        int e = pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]);
        if (e != 0) {
            gw_log(GW_LOG_ERROR, "cannot start event loop %u: %s", i, strerror(e));
            exit(1);
        }
    }
    if (s->cfg->handover)
        handover_start(s);
    gw_log(GW_LOG_INFO, "listening on %s:%d (%s), %u event loops, upstream %s",
           s->cfg->listen.host, s->cfg->listen.port, s->cfg->tls_cert ? "https" : "http",
           s->nworkers, s->cfg->upstream_url);
    gw_sd_ready(); /* every listener is bound (gw_server_new) and the loops run */
    for (;;) {
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            gw_sd_reloading();
            steer_reset(s);
            gw_metrics_reload(gw_server_reload(s) == GW_OK);
            gw_sd_ready();
            continue;
        }
        if (sig == SIGUSR1) {
            /* logrotate moved the file: write to a new one at the configured path */
            if (gw_accesslog_reopen() != GW_OK)
                gw_log(GW_LOG_ERROR, "SIGUSR1: cannot reopen the access log %s: %s; still "
                       "writing to the old file", s->cfg->access_log, strerror(errno));
            else
                gw_log(GW_LOG_INFO, "SIGUSR1: access log reopened");
            continue;
        }
        break;
    }
    gw_readyz_draining();
    gw_sd_stopping();
    drain_listeners(s);
    gw_log(GW_LOG_INFO, "%s: draining (at most %d s)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
           DRAIN_MAX_S);
    for (unsigned i = 0; i < s->nworkers; i++)
        (void)!write(s->workers[i].wake_fd, &(uint64_t){ 1 }, sizeof(uint64_t));
    for (unsigned i = 0; i < s->nworkers; i++)
        pthread_join(s->workers[i].thread, NULL);
    /* the loops are done: what they queued is committed before the process ends */
    if (s->store != NULL)
        gw_store_close(s->store);
    gw_log(GW_LOG_INFO, "stopped");
    return 0;
}

const struct gw_config *gw_worker_take_cfg(struct gw_worker *w)
{
    const struct gw_config *n = __atomic_exchange_n(&w->next_cfg, NULL, __ATOMIC_ACQUIRE);

    if (n != NULL) {
        const struct gw_config *old = w->cfg;
        w->cfg = n; /* the slot's reference is now the loop's */
        gw_config_release(old);
    }
    return w->cfg;
}

int gw_server_reload(struct gw_server *s)
{
    struct gw_config *n = gw_config_load(s->cur->path, stderr), *old = s->cur;
    const char *what;

    if (n == NULL) {
        gw_log(GW_LOG_WARN, "SIGHUP: %s has errors (above): the running configuration stays",
               s->cur->path);
        return GW_ERR;
    }
    if ((what = gw_config_restart_needed(s->cfg, n)) != NULL) {
        gw_log(GW_LOG_WARN, "SIGHUP: %s changes %s, which needs a restart: the running "
               "configuration stays", n->path, what);
        gw_config_release(n);
        return GW_ERR;
    }
    if (gw_limiter_bind(s->limiter, n) != GW_OK) {
        gw_log(GW_LOG_WARN, "SIGHUP: out of memory: the running configuration stays");
        gw_config_release(n);
        return GW_ERR;
    }
    gw_log_level = n->log_level;
    gw_metrics_config(n);
    for (unsigned i = 0; i < s->nworkers; i++) {
        gw_config_hold(n); /* the slot's reference, the loop's once it takes it */
        const struct gw_config *untaken =
            __atomic_exchange_n(&s->workers[i].next_cfg, n, __ATOMIC_ACQ_REL);
        gw_config_release(untaken); /* a previous reload's, never seen by the loop */
    }
    s->cur = n;
    gw_config_release(old); /* the loops hold it until they take the new one */
    /* the store's keys take their defaults and model names from the config */
    if (s->workers[0].keysync != NULL)
        gw_keysync_force(s->workers[0].keysync);
    gw_log(GW_LOG_INFO, "SIGHUP: configuration reloaded from %s (%u team keys)", n->path,
           n->nkeys);
    return GW_OK;
}

/* The process ends after gw_server_run(): loops, listeners and connections
 * still open are not torn down one by one; keeping them reachable from here
 * keeps leak checkers quiet about them. */
static struct gw_server *last_server;

void gw_server_free(struct gw_server *s)
{
    last_server = s;
}
