/*
 * test_upstream.c - the upstream client (gateway/upstream/upstream.c) against real
 * servers started here: a scripted HTTP/1.1 server, plain and TLS, on its own
 * thread and event loop. The request path picks the script. The client runs on
 * the main thread's loop, which the tests poll until a condition holds (never
 * sleeping), with a deadline per wait.
 *
 * TLS material (two CAs, a certificate for localhost/127.0.0.1 and one for
 * another name) is made with the openssl command in a temporary directory.
 *
 * Run one test: test_upstream NAME (see the table at the end).
 */
#define _GNU_SOURCE /* strcasestr */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "upstream.h"

/* ------------------------------------------------------------ assertions */

#include "../check.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The client loop. A persistent tick makes EVLOOP_ONCE return regularly so
 * that conditions set by the server thread are seen. */
static struct event_base *base;

#define RUN_UNTIL(cond, ms) RUN_BASE_UNTIL(base, cond, ms)

/* A periodic body pattern: byte i of a big body is pattern[i % 65536]. The
 * buffer is doubled so any slice up to 64 KiB is contiguous. */
#define PAT 65536
static unsigned char pattern[2 * PAT];

static void pattern_init(void)
{
    uint32_t x = 2463534242u;

    for (size_t i = 0; i < PAT; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        pattern[i] = pattern[i + PAT] = (unsigned char)x;
    }
}

/* ------------------------------------------------------ scripted server */

struct srv_stats {
    int accepts;       /* connections accepted */
    int requests;      /* request heads read */
    int closed;        /* connections the server closed on purpose */
    int peer_closed;   /* connections the client closed */
    size_t early_seen; /* /early: request body bytes read after answering */
    char sni[64];      /* last TLS handshake: server name sent, "" if none */
    int resumed;       /* ... and whether it resumed a session */
    int handshakes;
    int big_flushed;   /* /big... bodies written out whole (the output emptied) */
};

struct sconn;

struct srv {
    struct event_base *base;
    struct sconn *conns;   /* open connections, freed at stop */
    int silent_fds[16];
    int nsilent;
    struct evconnlistener *lis;
    SSL_CTX *ssl;      /* NULL: plain HTTP */
    int silent;        /* accept and never say anything (TLS connect timeout) */
    int port;
    int stop_fd[2];
    struct event *stop_ev;
    pthread_t thr;
    pthread_mutex_t mu;
    struct srv_stats st;
};

enum sc_state { SC_HEAD = 0, SC_BODY, SC_SCRIPT, SC_DONE };

struct sconn {
    struct srv *s;
    struct sconn *prev, *next;
    struct bufferevent *bev;
    enum sc_state state;
    char path[64];
    size_t body_left;        /* request body bytes still to read */
    int early;               /* answered before the body: keep discarding it */
    /* dripping a response a few bytes per tick */
    struct event *tick;
    const char *drip;
    size_t drip_len, drip_off, drip_step;
    /* big bodies */
    uint64_t big_left, big_off;
    int big_chunked;
    int big_extra;           /* /bigx: unsolicited bytes right after the body */
    uint32_t rnd;
    int close_when_flushed;
    int rst_when_flushed;
};

static void srv_lock(struct srv *s)
{
    pthread_mutex_lock(&s->mu);
}

static void srv_unlock(struct srv *s)
{
    pthread_mutex_unlock(&s->mu);
}

static struct srv_stats srv_stats(struct srv *s)
{
    struct srv_stats st;

    srv_lock(s);
    st = s->st;
    srv_unlock(s);
    return st;
}

static void sconn_free(struct sconn *sc, int rst)
{
    if (rst) {
        struct linger lg = { 1, 0 };
        evutil_socket_t fd = bufferevent_getfd(sc->bev);

        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        sc->s->conns = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    if (sc->tick)
        event_free(sc->tick);
    bufferevent_free(sc->bev);
    free(sc);
}

static void respond(struct sconn *sc, const char *s)
{
    bufferevent_write(sc->bev, s, strlen(s));
}

static const char drip_chunked[] =
    "HTTP/1.1 200 OK\r\n"
    "Transfer-Encoding: chunked\r\n"
    "X-Long-Header-Name-For-Splitting: a value, with commas; and more\r\n"
    "X-Empty:\r\n"
    "\r\n"
    "5;ext=\"quoted;value\"\r\nhello\r\n"
    "1;a=b;c\r\n \r\n"
    "6\r\nworld!\r\n"
    "0\r\n"
    "X-Trailer: ignored\r\n"
    "\r\n";

static const char drip_cl[] =
    "HTTP/1.1 200 OK\r\n"
    "Content-Length: 11\r\n"
    "X-Test: split everywhere\r\n"
    "\r\n"
    "hello world";

static const char one_xx[] =
    "HTTP/1.1 100 Continue\r\n\r\n"
    "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok";

static void drip_tick(evutil_socket_t fd, short what, void *arg)
{
    struct sconn *sc = arg;
    size_t n = sc->drip_len - sc->drip_off;
    struct timeval one_ms = { 0, 1000 };

    if (n > sc->drip_step)
        n = sc->drip_step;
    bufferevent_write(sc->bev, sc->drip + sc->drip_off, n);
    sc->drip_off += n;
    if (sc->drip_off < sc->drip_len)
        event_add(sc->tick, &one_ms);
    else
        sc->state = SC_HEAD; /* keep-alive: next request */
}

static void start_drip(struct sconn *sc, const char *s, size_t step)
{
    struct timeval one_ms = { 0, 1000 };

    sc->drip = s;
    sc->drip_len = strlen(s);
    sc->drip_off = 0;
    sc->drip_step = step;
    if (sc->tick == NULL)
        sc->tick = evtimer_new(sc->s->base, drip_tick, sc);
    sc->state = SC_SCRIPT;
    event_add(sc->tick, &one_ms);
}

/* Top up a big body while the output is low (called from the write callback). */
static void big_fill(struct sconn *sc)
{
    struct evbuffer *out = bufferevent_get_output(sc->bev);

    while (sc->big_left > 0 && evbuffer_get_length(out) < 256 * 1024) {
        size_t n = sc->big_left < 65536 ? (size_t)sc->big_left : 65536;
        size_t at = (size_t)(sc->big_off % PAT);

        if (sc->big_chunked) {
            sc->rnd = sc->rnd * 1103515245u + 12345u;
            n = 1 + (sc->rnd >> 8) % 40000;
            if (n > sc->big_left)
                n = (size_t)sc->big_left;
            evbuffer_add_printf(out, "%zx%s\r\n", n, (sc->rnd & 1) ? ";x=1" : "");
        }
        evbuffer_add_reference(out, pattern + at, n, NULL, NULL);
        if (sc->big_chunked)
            evbuffer_add(out, "\r\n", 2);
        sc->big_left -= n;
        sc->big_off += n;
        if (sc->big_left == 0 && sc->big_chunked)
            evbuffer_add(out, "0\r\n\r\n", 5);
        if (sc->big_left == 0 && sc->big_extra) /* the start of a response nobody asked for */
            respond(sc, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    }
    if (sc->big_left == 0 && evbuffer_get_length(out) == 0 && sc->state == SC_SCRIPT) {
        sc->state = SC_HEAD;
        sc->big_off = 0;
        srv_lock(sc->s);
        sc->s->st.big_flushed++;
        srv_unlock(sc->s);
    }
}

static void run_script(struct sconn *sc)
{
    const char *p = sc->path;
    char buf[512];

    sc->state = SC_DONE;
    if (strcmp(p, "/cl") == 0) {
        respond(sc, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Test: a\r\n\r\nhello world");
        sc->state = SC_HEAD;
    } else if (strcmp(p, "/cl-close") == 0) {
        respond(sc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        sc->close_when_flushed = 1;
    } else if (strcmp(p, "/idle-close") == 0) {
        respond(sc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        sc->close_when_flushed = 1; /* without saying so: a keep-alive timeout */
    } else if (strcmp(p, "/drip-cl") == 0) {
        start_drip(sc, drip_cl, 1);
    } else if (strcmp(p, "/drip-chunked") == 0) {
        start_drip(sc, drip_chunked, 1);
    } else if (strcmp(p, "/chunked-odd") == 0) {
        start_drip(sc, drip_chunked, 7);
    } else if (strcmp(p, "/1xx") == 0) {
        start_drip(sc, one_xx, 13);
    } else if (strcmp(p, "/close") == 0) {
        respond(sc, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the server closes");
        sc->close_when_flushed = 1;
    } else if (strcmp(p, "/reset") == 0) {
        respond(sc, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
        bufferevent_write(sc->bev, pattern, 1000);
        sc->rst_when_flushed = 1;
    } else if (strcmp(p, "/early-close") == 0) {
        respond(sc, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
        bufferevent_write(sc->bev, pattern, 1000);
        sc->close_when_flushed = 1;
    } else if (strcmp(p, "/rst-now") == 0) {
        /* a keep-alive connection dropped as the request arrives: not one byte */
        sc->rst_when_flushed = 1;
        bufferevent_trigger(sc->bev, EV_WRITE,
                            BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    } else if (strcmp(p, "/hang") == 0) {
        /* never answers */
    } else if (strcmp(p, "/stall") == 0) {
        respond(sc, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
    } else if (strcmp(p, "/204") == 0) {
        respond(sc, "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
        sc->state = SC_HEAD;
    } else if (strcmp(p, "/head") == 0) {
        respond(sc, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        sc->state = SC_HEAD;
    } else if (strcmp(p, "/toolarge") == 0) {
        respond(sc, "HTTP/1.1 200 OK\r\n");
        for (int i = 0; i < 40; i++) {
            memset(buf, 'v', 500);
            buf[500] = '\0';
            evbuffer_add_printf(bufferevent_get_output(sc->bev), "X-H%d: %s\r\n", i, buf);
        }
        respond(sc, "Content-Length: 0\r\n\r\n");
    } else if (strcmp(p, "/many") == 0) {
        respond(sc, "HTTP/1.1 200 OK\r\n");
        for (int i = 0; i < 70; i++)
            evbuffer_add_printf(bufferevent_get_output(sc->bev), "X-H%d: %d\r\n", i, i);
        respond(sc, "Content-Length: 0\r\n\r\n");
    } else if (strcmp(p, "/garbage") == 0) {
        respond(sc, "HTTP/1.1 2x0 OK\r\n\r\n");
    } else if (strncmp(p, "/big", 4) == 0) {
        /* /big/<bytes> (Content-Length), /bigc/<bytes> (chunked), /bigx/<bytes>
         * (Content-Length, then unsolicited bytes), /bigclose/<bytes> (until
         * the server closes), /bigcut/<bytes> (announces twice as many, sends
         * <bytes>, closes) */
        sc->big_chunked = p[4] == 'c' && p[5] == '/';
        sc->big_extra = p[4] == 'x';
        sc->big_left = strtoull(strchr(p + 1, '/') + 1, NULL, 10);
        sc->big_off = 0;
        sc->rnd = 12345;
        if (sc->big_chunked) {
            respond(sc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        } else if (strncmp(p, "/bigclose/", 10) == 0) {
            respond(sc, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            sc->close_when_flushed = 1;
        } else if (strncmp(p, "/bigcut/", 8) == 0) {
            evbuffer_add_printf(bufferevent_get_output(sc->bev),
                                "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n",
                                (unsigned long long)sc->big_left * 2);
            sc->close_when_flushed = 1;
        } else {
            evbuffer_add_printf(bufferevent_get_output(sc->bev),
                                "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n",
                                (unsigned long long)sc->big_left);
        }
        sc->state = SC_SCRIPT;
        big_fill(sc);
    } else {
        respond(sc, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        sc->state = SC_HEAD;
    }
}

static void sconn_read(struct bufferevent *bev, void *arg)
{
    struct sconn *sc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    for (;;) {
        if (sc->state == SC_HEAD) {
            struct evbuffer_ptr e = evbuffer_search(in, "\r\n\r\n", 4, NULL);
            char *head, *cl;
            size_t hl;

            if (e.pos < 0)
                return;
            hl = (size_t)e.pos + 4;
            head = (char *)evbuffer_pullup(in, (ev_ssize_t)hl);
            head[hl - 1] = '\0'; /* (the last LF is not needed to parse) */
            sscanf(head, "%*s %63s", sc->path);
            cl = strcasestr(head, "\ncontent-length:");
            sc->body_left = cl ? strtoull(cl + 16, NULL, 10) : 0;
            evbuffer_drain(in, hl);
            srv_lock(sc->s);
            sc->s->st.requests++;
            srv_unlock(sc->s);
            if (strcmp(sc->path, "/noread") == 0) { /* stop reading the request */
                bufferevent_disable(bev, EV_READ);
                sc->state = SC_DONE;
                return;
            }
            sc->early = strcmp(sc->path, "/early") == 0;
            if (sc->early) /* answer at once, then read the body on */
                respond(sc, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n"
                            "Connection: close\r\n\r\ntoo large");
            sc->state = SC_BODY;
        }
        if (sc->state == SC_BODY) {
            size_t n = evbuffer_get_length(in);

            if (sc->early) {
                evbuffer_drain(in, n);
                srv_lock(sc->s);
                sc->s->st.early_seen += n;
                srv_unlock(sc->s);
                return;
            }
            if (n > sc->body_left)
                n = sc->body_left;
            evbuffer_drain(in, n);
            sc->body_left -= n;
            if (sc->body_left > 0)
                return;
            run_script(sc);
            if (sc->state != SC_HEAD)
                return;
            continue;
        }
        /* SC_SCRIPT / SC_DONE: a request while answering is not expected */
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
}

static void sconn_write(struct bufferevent *bev, void *arg)
{
    struct sconn *sc = arg;
    struct evbuffer *out = bufferevent_get_output(bev);

    if (sc->big_left > 0 || (sc->state == SC_SCRIPT && sc->big_off > 0)) {
        big_fill(sc);
        if (sc->big_left > 0 || evbuffer_get_length(out) > 0)
            return;
        /* a whole big body is out: close it if the script says so */
    }
    if (evbuffer_get_length(out) == 0 && (sc->close_when_flushed || sc->rst_when_flushed)) {
        srv_lock(sc->s);
        sc->s->st.closed++;
        srv_unlock(sc->s);
        sconn_free(sc, sc->rst_when_flushed);
    }
}

static void sconn_event(struct bufferevent *bev, short what, void *arg)
{
    struct sconn *sc = arg;

    if (what & BEV_EVENT_CONNECTED) { /* TLS handshake done */
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

        srv_lock(sc->s);
        snprintf(sc->s->st.sni, sizeof(sc->s->st.sni), "%s", sni ? sni : "");
        sc->s->st.resumed = SSL_session_reused(ssl);
        sc->s->st.handshakes++;
        srv_unlock(sc->s);
        return;
    }
    srv_lock(sc->s);
    sc->s->st.peer_closed++;
    srv_unlock(sc->s);
    sconn_free(sc, 0);
}

static void srv_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                       int salen, void *arg)
{
    struct srv *s = arg;
    struct sconn *sc;
    int one = 1;

    srv_lock(s);
    s->st.accepts++;
    srv_unlock(s);
    if (s->silent) { /* keep the socket open, say nothing */
        CHECK(s->nsilent < 16);
        s->silent_fds[s->nsilent++] = fd;
        return;
    }
    sc = calloc(1, sizeof(*sc));
    CHECK(sc != NULL);
    sc->s = s;
    sc->next = s->conns;
    if (s->conns)
        s->conns->prev = sc;
    s->conns = sc;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (s->ssl)
        sc->bev = bufferevent_openssl_socket_new(s->base, fd, SSL_new(s->ssl),
                                                 BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    else
        sc->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    CHECK(sc->bev != NULL);
    bufferevent_setcb(sc->bev, sconn_read, sconn_write, sconn_event, sc);
    bufferevent_setwatermark(sc->bev, EV_WRITE, 64 * 1024, 0);
    bufferevent_enable(sc->bev, EV_READ | EV_WRITE);
}

static void srv_stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct srv *s = arg;

    while (s->conns)
        sconn_free(s->conns, 0);
    while (s->nsilent > 0)
        close(s->silent_fds[--s->nsilent]);
    evconnlistener_free(s->lis);
    event_base_loopbreak(s->base);
}

static void *srv_main(void *arg)
{
    struct srv *s = arg;

    event_base_dispatch(s->base);
    return NULL;
}

static struct srv *srv_start(SSL_CTX *ssl, int silent)
{
    struct srv *s = calloc(1, sizeof(*s));
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);

    CHECK(s != NULL);
    s->ssl = ssl;
    s->silent = silent;
    pthread_mutex_init(&s->mu, NULL);
    s->base = event_base_new();
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->lis = evconnlistener_new_bind(s->base, srv_accept, s,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 64,
                                     (struct sockaddr *)&sin, sizeof(sin));
    CHECK(s->lis != NULL);
    getsockname(evconnlistener_get_fd(s->lis), (struct sockaddr *)&sin, &sl);
    s->port = ntohs(sin.sin_port);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, s->stop_fd) == 0);
    s->stop_ev = event_new(s->base, s->stop_fd[1], EV_READ, srv_stop_cb, s);
    event_add(s->stop_ev, NULL);
    CHECK(pthread_create(&s->thr, NULL, srv_main, s) == 0);
    return s;
}

static void srv_stop(struct srv *s)
{
    CHECK(write(s->stop_fd[0], "x", 1) == 1);
    pthread_join(s->thr, NULL);
    event_free(s->stop_ev);
    event_base_free(s->base);
    close(s->stop_fd[0]);
    close(s->stop_fd[1]);
    SSL_CTX_free(s->ssl);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* --------------------------------------------------------------- TLS files */

static char tmpdir[64];

/* printf-checked: the command is formatted, then run by the shell */
static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (system(cmd) != 0) {
        fprintf(stderr, "FAIL setup: %s\n", cmd);
        exit(1);
    }
}

static void make_certs(void)
{
    const char *q = "2>/dev/null";

    snprintf(tmpdir, sizeof(tmpdir), "/tmp/gw-upstream-XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    for (int i = 1; i <= 2; i++)
        sh("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
           "-keyout ca%d.key -out ca%d.pem -days 2 -subj /CN=gw-test-ca%d %s",
           tmpdir, i, i, i, q);
    sh("cd %s && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > good.ext && "
       "printf 'subjectAltName=DNS:other.example\\n' > other.ext", tmpdir);
    for (int i = 0; i < 2; i++) {
        const char *n = i ? "other" : "good";

        sh("cd %s && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
           "-keyout %s.key -out %s.csr -subj /CN=%s %s && "
           "openssl x509 -req -in %s.csr -CA ca1.pem -CAkey ca1.key -CAcreateserial "
           "-out %s.pem -days 2 -extfile %s.ext %s",
           tmpdir, n, n, i ? "other.example" : "localhost", q, n, n, n, q);
    }
}

static SSL_CTX *server_ctx(const char *name)
{
    char crt[128], key[128];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    snprintf(crt, sizeof(crt), "%s/%s.pem", tmpdir, name);
    snprintf(key, sizeof(key), "%s/%s.key", tmpdir, name);
    CHECK(ctx != NULL);
    CHECK(SSL_CTX_use_certificate_file(ctx, crt, SSL_FILETYPE_PEM) == 1);
    CHECK(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1);
    CHECK(SSL_CTX_check_private_key(ctx) == 1);
    return ctx;
}

/* --------------------------------------------------------------- client */

static struct gw_config cfg_for(const char *host, int port, int tls)
{
    struct gw_config cfg;

    memset(&cfg, 0, sizeof(cfg));
    cfg.upstream_tls = tls;
    cfg.upstream_host = (char *)host;
    cfg.upstream_port = port;
    cfg.tls_verify = 1;
    cfg.connect_timeout_ms = 3000;
    cfg.response_timeout_ms = 5000;
    cfg.idle_timeout_ms = 3000;
    cfg.pool_size = 4;
    return cfg;
}

/* One exchange driven by the test: writes "POST <path>" with req_body bytes of
 * body, records every event. */
struct ex {
    const char *path;
    size_t req_body;
    size_t req_written;
    int sent_all;
    int no_body;
    struct gw_upconn *c;
    int connected, headers, done, error, writable;
    int events_after_release;
    int status;
    int reused;
    int head_before_sent;
    int64_t clen;
    char hdrs[1024];          /* "name: value\n"... at HEADERS */
    char xtest[64];           /* gw_upconn_header(c, "x-test") at HEADERS */
    struct evbuffer *body;    /* collected body (small responses) */
    /* big bodies */
    int sink;                 /* verify against the pattern and count, do not keep */
    uint64_t got;
    size_t max_buffered;      /* most bytes ever waiting in gw_upconn_body */
    int pauses;
    int bodies;               /* GW_UP_BODY events */
    struct event *consume;
    /* pause on HEADERS for this long */
    int pause_ms;
    struct event *resume;
    int release_on_headers;
    double t0, t1;
    struct gw_error err;
    uint64_t received;        /* gw_upconn_received at DONE or ERROR */
    int flush_on_connect;     /* a request written whole on CONNECTED: flush it there */
    int flushed_whole;        /* ... and gw_upconn_flush left nothing behind */
};

static void ex_pump(struct ex *x)
{
    struct evbuffer *out = gw_upconn_output(x->c);

    while (x->req_written < x->req_body && gw_upconn_output_pending(x->c) < 256 * 1024) {
        size_t n = x->req_body - x->req_written;

        if (n > 65536)
            n = 65536;
        evbuffer_add_reference(out, pattern, n, NULL, NULL);
        x->req_written += n;
    }
    if (x->req_written == x->req_body && !x->sent_all) {
        x->sent_all = 1;
        gw_upconn_request_sent(x->c);
    }
}

/* Compare b with the pattern at x->got, then drain it. (evbuffer_peek with
 * len -1 fills at most n_vec extents and does not say more exist: go round.) */
static void check_pattern(struct ex *x, struct evbuffer *b)
{
    struct evbuffer_iovec v[16];

    while (evbuffer_get_length(b) > 0) {
        int n = evbuffer_peek(b, -1, NULL, v, 16);
        size_t seen = 0;

        for (int i = 0; i < n; i++) {
            const unsigned char *p = v[i].iov_base;
            size_t len = v[i].iov_len;

            seen += len;
            while (len > 0) {
                size_t at = (size_t)(x->got % PAT), k = len < PAT ? len : PAT;

                if (memcmp(p, pattern + at, k) != 0) {
                    fprintf(stderr, "FAIL %s: body differs near byte %llu\n", cur_test,
                            (unsigned long long)x->got);
                    exit(1);
                }
                p += k;
                len -= k;
                x->got += k;
            }
        }
        evbuffer_drain(b, seen);
    }
}

static void ex_take_body(struct ex *x)
{
    struct evbuffer *b = gw_upconn_body(x->c);
    size_t n = evbuffer_get_length(b);

    if (n > x->max_buffered)
        x->max_buffered = n;
    if (x->sink)
        check_pattern(x, b);
    else
        evbuffer_add_buffer(x->body, b);
}

static void ex_cb(struct gw_upconn *c, enum gw_up_event ev, void *arg)
{
    struct ex *x = arg;
    struct timeval tv;

    if (x->c == NULL) {
        x->events_after_release++;
        return;
    }
    CHECK(c == x->c);
    switch (ev) {
    case GW_UP_CONNECTED:
        CHECK(!x->connected);
        x->connected = 1;
        x->reused = gw_upconn_reused(c);
        if (x->no_body)
            gw_upconn_expect_no_body(c);
        evbuffer_add_printf(gw_upconn_output(c),
                            "%s %s HTTP/1.1\r\nHost: test\r\nContent-Length: %zu\r\n\r\n",
                            x->no_body ? "HEAD" : "POST", x->path, x->req_body);
        ex_pump(x);
        if (x->flush_on_connect && x->sent_all) {
            gw_upconn_flush(c);
            x->flushed_whole = gw_upconn_output_pending(c) == 0;
        }
        break;
    case GW_UP_WRITABLE:
        x->writable++;
        ex_pump(x);
        break;
    case GW_UP_HEADERS: {
        size_t off = 0;

        CHECK(x->connected && !x->headers);
        x->headers = 1;
        x->status = gw_upconn_status(c);
        x->clen = gw_upconn_content_length(c);
        x->head_before_sent = !x->sent_all;
        {
            struct gw_str xt = gw_upconn_header(c, "x-TEST");

            snprintf(x->xtest, sizeof(x->xtest), "%.*s", (int)xt.len, xt.p ? xt.p : "");
            CHECK(gw_upconn_header(c, "X-Absent").p == NULL);
        }
        for (unsigned i = 0; i < gw_upconn_header_count(c); i++) {
            struct gw_str k, v;

            gw_upconn_header_at(c, i, &k, &v);
            off += (size_t)snprintf(x->hdrs + off, sizeof(x->hdrs) - off, "%.*s: %.*s\n",
                                    (int)k.len, k.p, (int)v.len, v.p);
            if (off >= sizeof(x->hdrs))
                off = sizeof(x->hdrs) - 1;
        }
        if (x->release_on_headers) {
            gw_upconn_release(c);
            x->c = NULL;
            return;
        }
        if (x->pause_ms > 0) {
            gw_upconn_pause_read(c, 1);
            x->pauses++;
            tv.tv_sec = x->pause_ms / 1000;
            tv.tv_usec = (x->pause_ms % 1000) * 1000;
            event_add(x->resume, &tv);
        }
        break;
    }
    case GW_UP_BODY:
        CHECK(x->headers && !x->done);
        x->bodies++;
        if (x->sink) {
            size_t n = evbuffer_get_length(gw_upconn_body(c));

            if (n > x->max_buffered)
                x->max_buffered = n;
            if (n >= 256 * 1024) { /* a slow client: pause, let it drain later */
                gw_upconn_pause_read(c, 1);
                x->pauses++;
                event_active(x->consume, EV_TIMEOUT, 1);
            }
        } else {
            ex_take_body(x);
        }
        break;
    case GW_UP_DONE:
        CHECK(x->headers);
        x->received = gw_upconn_received(c);
        ex_take_body(x);
        x->done = 1;
        x->t1 = now_s();
        gw_upconn_release(c);
        x->c = NULL;
        break;
    case GW_UP_ERROR:
        x->error = 1;
        x->err = *gw_upconn_error(c);
        x->received = gw_upconn_received(c);
        x->t1 = now_s();
        gw_upconn_release(c);
        x->c = NULL;
        break;
    }
}

static void ex_consume(evutil_socket_t fd, short what, void *arg)
{
    struct ex *x = arg;

    if (x->c == NULL)
        return;
    ex_take_body(x);
    gw_upconn_pause_read(x->c, 0);
}

static void ex_resume(evutil_socket_t fd, short what, void *arg)
{
    struct ex *x = arg;

    if (x->c != NULL)
        gw_upconn_pause_read(x->c, 0);
}

static void ex_init(struct ex *x, const char *path)
{
    memset(x, 0, sizeof(*x));
    x->path = path;
    x->clen = -2;
    x->body = evbuffer_new();
    x->consume = event_new(base, -1, 0, ex_consume, x);
    x->resume = evtimer_new(base, ex_resume, x);
}

static void ex_fini(struct ex *x)
{
    evbuffer_free(x->body);
    event_free(x->consume);
    event_free(x->resume);
}

static void ex_start(struct ex *x, struct gw_upstream *u)
{
    x->t0 = now_s();
    x->c = gw_upstream_lease(u, ex_cb, x);
    CHECK(x->c != NULL);
    CHECK(!x->connected); /* never from inside the lease */
}

/* Lease, run to DONE or ERROR. */
static void ex_run(struct ex *x, struct gw_upstream *u)
{
    ex_start(x, u);
    RUN_UNTIL(x->done || x->error, 20000);
}

static int body_is(struct ex *x, const char *s)
{
    size_t n = strlen(s);

    return evbuffer_get_length(x->body) == n &&
           memcmp(evbuffer_pullup(x->body, (ev_ssize_t)n), s, n) == 0;
}

/* ---------------------------------------------------------------- tests */

static struct srv *plain, *tls_good, *tls_other, *silent;

static void test_content_length(void)
{
    struct gw_config cfg = cfg_for("127.0.0.1", plain->port, 0);
    struct gw_upstream *u = gw_upstream_new(base, &cfg, NULL);
    struct ex x;

    ex_init(&x, "/cl");
    x.req_body = 5;
    ex_run(&x, u);
    CHECK(x.done && !x.error && x.status == 200 && x.clen == 11);
    CHECK(body_is(&x, "hello world"));
    CHECK_CONTAINS(x.hdrs, "X-Test: a\n");
    CHECK(strcmp(x.xtest, "a") == 0);
    CHECK(!x.reused);
    CHECK(gw_upstream_idle_count(u) == 1);
    ex_fini(&x);
    gw_upstream_free(u);
}

static void test_keepalive_reuse(void)
{
    struct gw_config cfg = cfg_for("127.0.0.1", plain->port, 0);
    struct gw_upstream *u = gw_upstream_new(base, &cfg, NULL);
    int accepts0 = srv_stats(plain).accepts;
    struct ex x;

    for (int i = 0; i < 3; i++) {
        ex_init(&x, i == 1 ? "/204" : "/cl");
        ex_run(&x, u);
        CHECK(x.done && !x.error);
        CHECK(x.reused == (i > 0));
        if (i == 1)
            CHECK(x.status == 204 && x.clen == 0 && evbuffer_get_length(x.body) == 0);
        else
            CHECK(body_is(&x, "hello world"));
        ex_fini(&x);
    }
    /* a HEAD response with Content-Length has no body, and the connection stays usable */
    ex_init(&x, "/head");
    x.no_body = 1;
    ex_run(&x, u);
    CHECK(x.done && x.status == 200 && x.clen == 0 && x.reused);
    ex_fini(&x);
    ex_init(&x, "/cl");
    ex_run(&x, u);
    CHECK(x.done && x.reused);
    ex_fini(&x);
    CHECK(srv_stats(plain).accepts - accepts0 == 1);
    gw_upstream_free(u);
}

static void test_split_everywhere(void)
{
    struct gw_config cfg = cfg_for("localhost", plain->port, 0); /* via /etc/hosts */
    struct gw_upstream *u = gw_upstream_new(base, &cfg, NULL);
    struct ex x;

    ex_init(&x, "/drip-cl");
    ex_run(&x, u);
    CHECK(x.done && x.status == 200 && x.clen == 11 && body_is(&x, "hello world"));
    CHECK_CONTAINS(x.hdrs, "X-Test: split everywhere\n");
    ex_fini(&x);

    for (int i = 0; i < 2; i++) {
        ex_init(&x, i ? "/chunked-odd" : "/drip-chunked");
        ex_run(&x, u);
        CHECK(x.done && !x.error && x.status == 200 && x.clen == -1);
        CHECK(body_is(&x, "hello world!"));
        CHECK_CONTAINS(x.hdrs, "X-Long-Header-Name-For-Splitting: "
                               "a value, with commas; and more\n");
        CHECK_CONTAINS(x.hdrs, "X-Empty: \n");
        CHECK(strstr(x.hdrs, "Trailer") == NULL);
        CHECK(x.reused); /* chunked responses keep the connection */
        ex_fini(&x);
    }
    gw_upstream_free(u);
}

static void test_interim_responses(void)
{
    struct gw_config cfg = cfg_for("127.0.0.1", plain->port, 0);
    struct gw_upstream *u = gw_upstream_new(base, &cfg, NULL);
    struct ex x;

    ex_init(&x, "/1xx");
    ex_run(&x, u);
    CHECK(x.done && x.status == 201 && body_is(&x, "ok"));
    CHECK_CONTAINS(x.hdrs, "X-Final: yes\n");
    CHECK(strstr(x.hdrs, "Link") == NULL);
    CHECK(gw_upstream_idle_count(u) == 1);
    ex_fini(&x);
    gw_upstream_free(u);
}

static void test_close_delimited(void)
{
    struct gw_config cfg = cfg_for("127.0.0.1", plain->port, 0);
    struct gw_upstream *u = gw_upstream_new(base, &cfg, NULL);
    struct ex x;

    ex_init(&x, "/close");
    ex_run(&x, u);
    CHECK(x.done && !x.error && x.clen == -1 && body_is(&x, "until the server closes"));
    CHECK(gw_upstream_idle_count(u) == 0);
    ex_fini(&x);
    gw_upstream_free(u);
}

static void test_idle_closed_by_server(void)
{
    struct gw_config cfg = cfg_for("127.0.0.1", plain->port, 0);
    struct gw_upstream *u = gw_upstream_new(base, &cfg, NULL);
    struct ex x;
    int closed0;

    /* (a) the loop notices the close and drops the pooled connection */
    closed0 = srv_stats(plain).closed;
    ex_init(&x, "/idle-close");
    ex_run(&x, u);
    CHECK(x.done);
    ex_fini(&x);
    RUN_UNTIL(gw_upstream_idle_count(u) == 0, 5000);
    CHECK(srv_stats(plain).closed == closed0 + 1);
    ex_init(&x, "/cl");
    ex_run(&x, u);
    CHECK(x.done && !x.error && !x.reused);
    ex_fini(&x);

    /* (b) leased before the loop saw the close: the hand-over notices it */
    ex_init(&x, "/idle-close");
    ex_run(&x, u);
    CHECK(x.done);
    ex_fini(&x);
    while (srv_stats(plain).closed < closed0 + 2)
        sched_yield(); /* the server thread closes; our loop must not run */
    {
        struct timespec ts = { 0, 20 * 1000 * 1000 }; /* let the FIN cross loopback */

        nanosleep(&ts, NULL);
    }
    CHECK(gw_upstream_idle_count(u) == 1); /* still pooled: the loop has not run */
    ex_init(&x, "/cl");
    ex_run(&x, u);
    CHECK(x.done && !x.error && !x.reused && body_is(&x, "hello world"));
    ex_fini(&x);
    gw_upstream_free(u);
}

static void test_reset_mid_response(void)
{
    struct gw_config cfg = cfg_for("127.0.0.1", plain->port, 0);
    struct gw_upstream *u = gw_upstream_new(base, &cfg, NULL);
    struct ex x;

    for (int i = 0; i < 2; i++) {
        ex_init(&x, i ? "/early-close" : "/reset");
        ex_run(&x, u);
        /* after a reset the kernel may drop what was not read yet: the head
         * may or may not have been seen */
        CHECK(x.error && !x.done && (i == 0 || (x.headers && x.status == 200)));
        CHECK(x.err.status == 502);
        CHECK(strcmp(x.err.code, "bad_gateway") == 0 && strcmp(x.err.type, "upstream_error") == 0);
        CHECK_CONTAINS(x.err.message,
                       "upstream closed the connection before the response was complete");
        CHECK(gw_upstream_idle_count(u) == 0);
        ex_fini(&x);
    }
    gw_upstream_free(u);
}

static void test_early_response(void)
{
    struct gw_config cfg = cfg_for("127.0.0.1", plain->port, 0);
    struct gw_upstream *u = gw_upstream_new(base, &cfg, NULL);
    int peer0 = srv_stats(plain).peer_closed;
    struct ex x;

    ex_init(&x, "/early");
    x.req_body = 64u << 20; /* far more than the socket buffers hold */
    ex_run(&x, u);
    CHECK(x.done && !x.error && x.status == 413 && body_is(&x, "too large"));
    CHECK(x.head_before_sent && !x.sent_all);
    /* released with the request unfinished: closed, never pooled */
    CHECK(gw_upstream_idle_count(u) == 0);
    RUN_UNTIL(srv_stats(plain).peer_closed == peer0 + 1, 5000);
    CHECK(srv_stats(plain).early_seen < x.req_body);
    ex_fini(&x);
    gw_upstream_free(u);
}

static void test_timeouts(void)
{
    struct gw_config cfg = cfg_for("127.0.0.1", plain->port, 0);
    struct gw_upstream *u;
    struct ex x;
    double el;

    cfg.response_timeout_ms = 300;
    cfg.idle_timeout_ms = 250;
    u = gw_upstream_new(base, &cfg, NULL);

    ex_init(&x, "/hang");
    ex_run(&x, u);
    el = (x.t1 - x.t0) * 1000;
    CHECK(x.error && !x.headers && x.err.status == 504);
    CHECK(strcmp(x.err.code, "gateway_timeout") == 0);
    CHECK_CONTAINS(x.err.message, "did not respond within 300 ms");
    CHECK(el >= 290 && el < 2000);
    ex_fini(&x);

    ex_init(&x, "/stall");
    ex_run(&x, u);
    CHECK(x.error && x.headers && x.err.status == 504);
    CHECK_CONTAINS(x.err.message, "stalled for 250 ms");
    ex_fini(&x);

    /* the upstream stops reading the request body */
    ex_init(&x, "/noread");
    x.req_body = 256u << 20;
    ex_run(&x, u);
    CHECK(x.error && !x.headers && !x.sent_all && x.err.status == 504);
    CHECK_CONTAINS(x.err.message, "did not accept the request for 250 ms");
    ex_fini(&x);

    /* paused for 3 idle timeouts: backpressure, not idleness */
    ex_init(&x, "/big/1048576");
    x.sink = 1;
    x.pause_ms = 800;
    ex_run(&x, u);
    CHECK(x.done && !x.error && x.got == 1048576 && x.pauses >= 1);
    ex_fini(&x);
    gw_upstream_free(u);
}

static void test_refused(void)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    struct gw_config cfg;
    struct gw_upstream *u;
    struct ex x;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    port = ntohs(sin.sin_port);
    close(fd); /* nobody listens there now */

    for (int tls = 0; tls < 2; tls++) {
        SSL_CTX *ctx = NULL;
        struct gw_error err;

        cfg = cfg_for("127.0.0.1", port, tls);
        CHECK(gw_upstream_tls_ctx(&cfg, &ctx, &err) == GW_OK);
        u = gw_upstream_new(base, &cfg, ctx);
        ex_init(&x, "/cl");
        ex_run(&x, u);
        CHECK(x.error && !x.connected && x.err.status == 502);
        CHECK(strcmp(x.err.code, "bad_gateway") == 0);
        CHECK_CONTAINS(x.err.message, "refused");
        ex_fini(&x);
        gw_upstream_free(u);
        SSL_CTX_free(ctx);
    }
}

static void test_dns(void)
{
    struct gw_config cfg = cfg_for("nonexistent-gw-test.invalid", plain->port, 0);
    struct gw_upstream *u = gw_upstream_new(base, &cfg, NULL);
    struct ex x;
    struct gw_upconn *c;
    uint64_t until;

    ex_init(&x, "/cl");
    ex_run(&x, u);
    CHECK(x.error && !x.connected);
    if (x.err.status == 502) /* the resolver said no */
        CHECK_CONTAINS(x.err.message, "cannot resolve upstream host nonexistent-gw-test.invalid");
    else /* no resolver answered in time */
        CHECK(x.err.status == 504);
    ex_fini(&x);

    /* a lookup still in flight when its connection goes and the upstream is
     * freed: it must end harmlessly (ASan watches) */
    ex_init(&x, "/cl");
    ex_start(&x, u);
    event_base_loop(base, EVLOOP_NONBLOCK); /* the kick sends the query */
    c = x.c;
    x.c = NULL;
    /* a resolver that fails at once (no DNS server) has already ended it: the
     * error handler released it, and there is nothing in flight to test */
    if (c != NULL)
        gw_upconn_release(c);
    gw_upstream_free(u);
    until = now_ms() + 300;
    while (now_ms() < until)
        event_base_loop(base, EVLOOP_ONCE);
    CHECK(x.events_after_release == 0);
    ex_fini(&x);
}

static void test_release_anywhere(void)
{
    struct gw_config cfg = cfg_for("127.0.0.1", plain->port, 0);
    struct gw_upstream *u = gw_upstream_new(base, &cfg, NULL);
    struct ex x, y;
    struct gw_upconn *c;
    int i, peer0;

    /* released before anything happened: no callback ever */
    ex_init(&x, "/cl");
    ex_start(&x, u);
    c = x.c;
    x.c = NULL;
    gw_upconn_release(c);
    ex_init(&y, "/cl");
    ex_run(&y, u); /* a full exchange later: x heard nothing */
    CHECK(y.done && x.events_after_release == 0 && !x.connected);
    ex_fini(&x);
    ex_fini(&y);

    /* released inside HEADERS, mid-body: closed, not pooled, nothing after */
    CHECK(gw_upstream_idle_count(u) == 1);
    peer0 = srv_stats(plain).peer_closed;
    ex_init(&x, "/big/10485760");
    x.release_on_headers = 1;
    ex_start(&x, u);
    RUN_UNTIL(x.headers, 5000);
    for (i = 0; i < 50; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK(x.events_after_release == 0);
    CHECK(x.reused && gw_upstream_idle_count(u) == 0);
    RUN_UNTIL(srv_stats(plain).peer_closed == peer0 + 1, 5000);
    ex_fini(&x);
    gw_upstream_free(u);
}

static void test_bad_responses(void)
{
    static const struct {
        const char *path, *msg;
    } cases[] = {
        { "/toolarge", "upstream response headers too large" },
        { "/many", "upstream response has too many headers" },
        { "/garbage", "invalid upstream response" },
    };
    struct gw_config cfg = cfg_for("127.0.0.1", plain->port, 0);
    struct gw_upstream *u = gw_upstream_new(base, &cfg, NULL);
    struct ex x;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ex_init(&x, cases[i].path);
        ex_run(&x, u);
        CHECK(x.error && !x.headers && x.err.status == 502);
        CHECK_CONTAINS(x.err.message, cases[i].msg);
        CHECK(x.received > 0); /* an answer, if an invalid one: never "stale" */
        CHECK(gw_upstream_idle_count(u) == 0);
        ex_fini(&x);
    }
    gw_upstream_free(u);
}

/* gw_upconn_received: exact for a whole response, 0 only when the connection
 * failed before any response byte (the proxy's test for a stale connection). */
static void test_received(void)
{
    static const char cl[] = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Test: a\r\n\r\n"
                             "hello world";
    struct gw_config cfg = cfg_for("127.0.0.1", plain->port, 0);
    struct gw_upstream *u = gw_upstream_new(base, &cfg, NULL);
    struct ex x;

    for (int i = 0; i < 2; i++) { /* fresh, then reused */
        ex_init(&x, "/cl");
        ex_run(&x, u);
        CHECK(x.done && x.reused == (i > 0) && x.received == sizeof(cl) - 1);
        ex_fini(&x);
    }
    ex_init(&x, "/rst-now"); /* on the pooled connection: closed before a byte */
    ex_run(&x, u);
    CHECK(x.error && x.reused && !x.headers && x.err.status == 502 && x.received == 0);
    CHECK_CONTAINS(x.err.message, "before the response was complete");
    ex_fini(&x);
    ex_init(&x, "/early-close"); /* a head and 1000 of 100000 body bytes, then closed */
    ex_run(&x, u);
    CHECK(x.error && x.headers && x.received > 1000);
    ex_fini(&x);
    ex_init(&x, "/1xx"); /* interim responses count too */
    ex_run(&x, u);
    CHECK(x.done && x.status == 201 && x.received == sizeof(one_xx) - 1);
    ex_fini(&x);
    gw_upstream_free(u);
}

static void test_pool_limit(void)
{
    struct gw_config cfg = cfg_for("127.0.0.1", plain->port, 0);
    struct gw_upstream *u;
    struct ex x[3];

    cfg.pool_size = 2;
    u = gw_upstream_new(base, &cfg, NULL);
    for (int i = 0; i < 3; i++) {
        ex_init(&x[i], "/cl");
        ex_start(&x[i], u);
    }
    RUN_UNTIL(x[0].done && x[1].done && x[2].done, 5000);
    CHECK(gw_upstream_idle_count(u) == 2);
    for (int i = 0; i < 3; i++)
        ex_fini(&x[i]);
    gw_upstream_free(u);
}

/* Plain TCP: requests are written straight to the socket. One larger than the
 * socket buffers is finished by the bufferevent (WRITABLE on the way), and the
 * connection goes back to direct writes for the next lease; small and large
 * requests alternate on one pooled connection. */
static void test_direct_write(void)
{
    struct gw_config cfg = cfg_for("127.0.0.1", plain->port, 0);
    struct gw_upstream *u = gw_upstream_new(base, &cfg, NULL);
    int accepts0 = srv_stats(plain).accepts, requests0 = srv_stats(plain).requests;
    struct ex x;

    for (int i = 0; i < 6; i++) {
        ex_init(&x, "/cl");
        x.req_body = i % 2 == 0 ? 8u << 20 : 5;
        x.flush_on_connect = i % 2 == 1;
        ex_run(&x, u);
        CHECK(x.done && !x.error && x.sent_all && body_is(&x, "hello world"));
        CHECK(x.reused == (i > 0));
        if (i % 2 == 0)
            CHECK(x.writable > 0);
        else /* a small request left in the call that wrote it, not a pass later */
            CHECK(x.flushed_whole);
        CHECK(gw_upstream_idle_count(u) == 1);
        ex_fini(&x);
    }
    CHECK(srv_stats(plain).accepts - accepts0 == 1);
    CHECK(srv_stats(plain).requests - requests0 == 6);
    gw_upstream_free(u);
}

/* 100 MB through the client with a consumer that pauses the read whenever 256
 * KiB wait: the body buffer must stay bounded. Prints MB/s. */
static void big_download(const char *what, struct srv *s, const char *host, const char *path,
                         uint64_t size, const char *ca)
{
    struct gw_config cfg = cfg_for(host, s->port, s->ssl != NULL);
    SSL_CTX *ctx = NULL;
    struct gw_error err;
    struct gw_upstream *u;
    struct ex x;
    double secs;

    cfg.ca_file = (char *)ca;
    CHECK(gw_upstream_tls_ctx(&cfg, &ctx, &err) == GW_OK);
    u = gw_upstream_new(base, &cfg, ctx);
    ex_init(&x, path);
    x.sink = 1;
    ex_run(&x, u);
    CHECK(x.done && !x.error);
    CHECK(x.got == size);
    CHECK(x.pauses > 0);
    CHECK(x.max_buffered < 1024 * 1024);
    secs = x.t1 - x.t0;
    printf("# %s: %llu MB in %.2f s = %.0f MB/s, body buffer peak %zu KiB, %d pauses\n", what,
           (unsigned long long)(size >> 20), secs, (double)size / 1048576.0 / secs,
           x.max_buffered / 1024, x.pauses);
    ex_fini(&x);
    gw_upstream_free(u);
    SSL_CTX_free(ctx);
}

static void test_big_plain(void)
{
    big_download("plain, Content-Length", plain, "127.0.0.1", "/big/104857600", 104857600,
                 NULL);
    big_download("plain, chunked", plain, "127.0.0.1", "/bigc/52428800", 52428800, NULL);
}

static char ca1[128], ca2[128];

static void test_big_tls(void)
{
    big_download("TLS, Content-Length", tls_good, "localhost", "/big/104857600", 104857600, ca1);
    big_download("TLS, chunked", tls_good, "localhost", "/bigc/52428800", 52428800, ca1);
}

/* Plain-TCP bodies of known length or until close are read by upstream.c
 * itself, in large pieces, never past the Content-Length. */
static void test_direct_read(void)
{
    struct gw_config cfg = cfg_for("127.0.0.1", plain->port, 0);
    struct gw_upstream *u = gw_upstream_new(base, &cfg, NULL);
    struct ex x;
    int flushed0;

    /* unsolicited bytes right after the body: not a byte of them in it, and
     * the connection is not used again */
    ex_init(&x, "/bigx/1000003");
    x.sink = 1;
    ex_run(&x, u);
    CHECK(x.done && !x.error && x.clen == 1000003 && x.got == 1000003);
    RUN_UNTIL(gw_upstream_idle_count(u) == 0, 5000);
    ex_fini(&x);
    ex_init(&x, "/cl");
    ex_run(&x, u);
    CHECK(x.done && !x.reused && body_is(&x, "hello world"));
    ex_fini(&x);

    /* close-delimited: all of it, then DONE */
    ex_init(&x, "/bigclose/1000003");
    x.sink = 1;
    ex_run(&x, u);
    CHECK(x.done && !x.error && x.clen == -1 && x.got == 1000003);
    CHECK(x.reused && gw_upstream_idle_count(u) == 0); /* (it was /cl's: not pooled again) */
    ex_fini(&x);

    /* closed before the announced length: the premature-close error */
    ex_init(&x, "/bigcut/1000003");
    x.sink = 1;
    ex_run(&x, u);
    CHECK(x.error && !x.done && x.headers && x.err.status == 502);
    CHECK_CONTAINS(x.err.message, "before the response was complete");
    ex_fini(&x);

    /* The whole body waits in the socket while reading is paused: on resume
     * it comes in one BODY event (three allowed, for a busy machine), not in
     * about ten, one per 4 KiB (libevent 2.1's most per read). 40,000 bytes
     * fit the initial loopback window. */
    flushed0 = srv_stats(plain).big_flushed;
    ex_init(&x, "/big/40000");
    x.pause_ms = 60000; /* resumed below */
    ex_start(&x, u);
    RUN_UNTIL(x.headers && srv_stats(plain).big_flushed == flushed0 + 1, 5000);
    CHECK(x.bodies == 0);
    gw_upconn_pause_read(x.c, 0);
    RUN_UNTIL(x.done || x.error, 5000);
    CHECK(x.done && evbuffer_get_length(x.body) == 40000);
    CHECK(memcmp(evbuffer_pullup(x.body, -1), pattern, 40000) == 0);
    CHECK(x.bodies <= 3);
    printf("# 40000 bytes waiting: %d BODY events\n", x.bodies);
    ex_fini(&x);

    /* a 20 MiB request body (written up to 256 KiB per writev), then the
     * connection is reused */
    ex_init(&x, "/cl");
    x.req_body = 20u << 20;
    ex_run(&x, u);
    CHECK(x.done && x.sent_all && body_is(&x, "hello world"));
    ex_fini(&x);
    ex_init(&x, "/cl");
    ex_run(&x, u);
    CHECK(x.done && x.reused);
    ex_fini(&x);
    gw_upstream_free(u);
}

/* One TLS exchange: returns the result in *x (caller ex_fini's it). */
static void tls_exchange(struct ex *x, struct srv *s, const char *host, const char *ca,
                         int verify, const char *path)
{
    struct gw_config cfg = cfg_for(host, s->port, 1);
    SSL_CTX *ctx = NULL;
    struct gw_error err;
    struct gw_upstream *u;

    cfg.ca_file = (char *)ca;
    cfg.tls_verify = verify;
    CHECK(gw_upstream_tls_ctx(&cfg, &ctx, &err) == GW_OK);
    u = gw_upstream_new(base, &cfg, ctx);
    CHECK(u != NULL);
    ex_init(x, path);
    ex_run(x, u);
    gw_upstream_free(u);
    SSL_CTX_free(ctx);
}

static void test_tls_verification(void)
{
    struct ex x;

    tls_exchange(&x, tls_good, "localhost", ca1, 1, "/cl");
    CHECK(x.done && !x.error && body_is(&x, "hello world"));
    CHECK(strcmp(srv_stats(tls_good).sni, "localhost") == 0);
    ex_fini(&x);

    tls_exchange(&x, tls_good, "127.0.0.1", ca1, 1, "/cl"); /* IP SAN, no SNI */
    CHECK(x.done && !x.error);
    CHECK(strcmp(srv_stats(tls_good).sni, "") == 0);
    ex_fini(&x);

    tls_exchange(&x, tls_good, "localhost", ca2, 1, "/cl");
    CHECK(x.error && x.err.status == 502 && strcmp(x.err.code, "bad_gateway") == 0);
    CHECK_CONTAINS(x.err.message,
                   "certificate verify failed: unable to get local issuer certificate");
    ex_fini(&x);

    tls_exchange(&x, tls_other, "localhost", ca1, 1, "/cl");
    CHECK(x.error && x.err.status == 502);
    CHECK_CONTAINS(x.err.message, "certificate verify failed: hostname mismatch");
    ex_fini(&x);

    tls_exchange(&x, tls_good, "localhost", NULL, 1, "/cl"); /* system CAs do not know ca1 */
    CHECK(x.error && x.err.status == 502);
    CHECK_CONTAINS(x.err.message, "certificate verify failed");
    ex_fini(&x);

    tls_exchange(&x, tls_other, "localhost", ca2, 0, "/cl"); /* verification off */
    CHECK(x.done && !x.error);
    ex_fini(&x);
}

static void test_tls_reuse_and_resumption(void)
{
    struct gw_config cfg = cfg_for("localhost", tls_good->port, 1);
    SSL_CTX *ctx = NULL;
    struct gw_error err;
    struct gw_upstream *u;
    struct ex x;
    int hs0;

    cfg.ca_file = ca1;
    CHECK(gw_upstream_tls_ctx(&cfg, &ctx, &err) == GW_OK);
    u = gw_upstream_new(base, &cfg, ctx);
    hs0 = srv_stats(tls_good).handshakes;
    for (int i = 0; i < 3; i++) { /* keep-alive over TLS */
        ex_init(&x, i == 1 ? "/drip-chunked" : "/cl");
        ex_run(&x, u);
        CHECK(x.done && x.reused == (i > 0));
        ex_fini(&x);
    }
    CHECK(srv_stats(tls_good).handshakes == hs0 + 1);
    for (int i = 0; i < 2; i++) { /* new connections resume the session */
        ex_init(&x, "/cl-close");
        ex_run(&x, u);
        CHECK(x.done && body_is(&x, "ok"));
        RUN_UNTIL(gw_upstream_idle_count(u) == 0, 5000);
        ex_fini(&x);
    }
    CHECK(srv_stats(tls_good).resumed == 1);
    ex_init(&x, "/reset"); /* truncation over TLS is still an error */
    ex_run(&x, u);
    CHECK(x.error && x.err.status == 502);
    CHECK_CONTAINS(x.err.message, "before the response was complete");
    ex_fini(&x);
    gw_upstream_free(u);
    SSL_CTX_free(ctx);
}

static void test_tls_connect_timeout(void)
{
    struct gw_config cfg = cfg_for("127.0.0.1", silent->port, 1);
    SSL_CTX *ctx = NULL;
    struct gw_error err;
    struct gw_upstream *u;
    struct ex x;
    double el;

    cfg.connect_timeout_ms = 300;
    cfg.tls_verify = 0;
    CHECK(gw_upstream_tls_ctx(&cfg, &ctx, &err) == GW_OK);
    u = gw_upstream_new(base, &cfg, ctx);
    ex_init(&x, "/cl");
    ex_run(&x, u);
    el = (x.t1 - x.t0) * 1000;
    CHECK(x.error && !x.connected && x.err.status == 504);
    CHECK(strcmp(x.err.code, "gateway_timeout") == 0);
    CHECK_CONTAINS(x.err.message, "timed out after 300 ms");
    CHECK(el >= 290 && el < 2000);
    ex_fini(&x);
    gw_upstream_free(u);
    SSL_CTX_free(ctx);
}

static void test_tls_ctx_errors(void)
{
    struct gw_config cfg = cfg_for("localhost", 1, 1);
    SSL_CTX *ctx = (SSL_CTX *)1;
    struct gw_error err;

    cfg.ca_file = "/nonexistent/ca.pem";
    CHECK(gw_upstream_tls_ctx(&cfg, &ctx, &err) == GW_ERR && ctx == NULL);
    CHECK_CONTAINS(err.message, "/nonexistent/ca.pem");
    cfg.upstream_tls = 0;
    CHECK(gw_upstream_tls_ctx(&cfg, &ctx, &err) == GW_OK && ctx == NULL);
}

/* ---------------------------------------------------------------- main */

static const struct {
    const char *name;
    void (*fn)(void);
} tests[] = {
    { "content_length", test_content_length },
    { "keepalive_reuse", test_keepalive_reuse },
    { "split_everywhere", test_split_everywhere },
    { "interim_responses", test_interim_responses },
    { "close_delimited", test_close_delimited },
    { "idle_closed_by_server", test_idle_closed_by_server },
    { "reset_mid_response", test_reset_mid_response },
    { "early_response", test_early_response },
    { "timeouts", test_timeouts },
    { "refused", test_refused },
    { "dns", test_dns },
    { "release_anywhere", test_release_anywhere },
    { "bad_responses", test_bad_responses },
    { "received", test_received },
    { "pool_limit", test_pool_limit },
    { "direct_read", test_direct_read },
    { "direct_write", test_direct_write },
    { "tls_ctx_errors", test_tls_ctx_errors },
    { "tls_verification", test_tls_verification },
    { "tls_reuse_and_resumption", test_tls_reuse_and_resumption },
    { "tls_connect_timeout", test_tls_connect_timeout },
    { "big_plain", test_big_plain },
    { "big_tls", test_big_tls },
};

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

int main(int argc, char **argv)
{
    struct timeval tick_tv = { 0, 5000 };
    struct event *tick;
    int passed = 0, failed = 0;

    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    pattern_init();
    make_certs();
    snprintf(ca1, sizeof(ca1), "%s/ca1.pem", tmpdir);
    snprintf(ca2, sizeof(ca2), "%s/ca2.pem", tmpdir);
    base = event_base_new();
    tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
    event_add(tick, &tick_tv);
    plain = srv_start(NULL, 0);
    tls_good = srv_start(server_ctx("good"), 0);
    tls_other = srv_start(server_ctx("other"), 0);
    silent = srv_start(NULL, 1);

    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        if (argc > 1 && strcmp(argv[1], tests[i].name) != 0)
            continue;
        cur_test = tests[i].name;
        tests[i].fn(); /* exits on failure */
        printf("ok - %s\n", tests[i].name);
        passed++;
    }
    srv_stop(plain);
    srv_stop(tls_good);
    srv_stop(tls_other);
    srv_stop(silent);
    event_free(tick);
    event_base_free(base);
    sh("rm -rf %s", tmpdir);
    printf("%d passed, %d failed\n", passed, failed);
    return passed > 0 ? 0 : 1;
}
