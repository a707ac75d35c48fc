/*
 * fuzz_framer.c - the whole request path as the server runs it: a real worker
 * (libevhtp on libevent, the framer in htfix.c interposing libevhtp's parser,
 * the head checks, the router, auth, the proxy's hooks) listening on loopback,
 * fed each input as the bytes a client sends on one connection, then EOF.
 * Whatever libevhtp hands the gateway (a NULL method, an odd path) is found here
 * rather than by a user. The upstream is a closed loopback port: a request that
 * gets that far is answered 502.
 *
 * The input may carry several requests (pipelining), chunked bodies, trailers,
 * anything. The first byte chooses how the input is cut into writes, so that
 * heads and bodies also arrive split.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "accesslog.h"
#include "config.h"
#include "log.h"
#include "server.h"

#define TEAM_KEY "sk-fuzz-team-key"
/* sha256(TEAM_KEY) */
#define TEAM_KEY_SHA256 "2c9c1a41e9830eb966ca90da99fca1f83a46b737c6c0e5165e4f88c74d129c17"

static struct gw_server *server; /* kept reachable: it lives as long as the process */
static unsigned long runs;
static struct gw_worker *worker;
static int port;

static int free_port(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), p = 0;

    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        p = ntohs(a.sin_port);
    close(fd);
    return p;
}

static void setup(void)
{
    char path[] = "/tmp/fuzz_framer-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    struct gw_config *cfg;
    struct gw_error err;

    if (f == NULL)
        abort();
    port = free_port();
    fprintf(f,
            "include = %s/config/models.conf\n"
            "[server]\nlisten = 127.0.0.1:%d\nthreads = 1\naccess_log = off\n"
            "log_level = error\nmax_body = 1m\nmax_header_bytes = 16k\n"
            "[upstream]\nurl = http://127.0.0.1:%d\nkey = env:FUZZ_UPSTREAM_KEY\n"
            "connect_timeout = 1s\nresponse_timeout = 1s\n"
            "[key fuzz]\nsha256 = %s\n",
            GW_SOURCE_DIR, port, free_port(), TEAM_KEY_SHA256);
    fclose(f);
    setenv("FUZZ_UPSTREAM_KEY", "sk-fuzz-upstream-key", 1);
    cfg = gw_config_load(path, stderr);
    unlink(path);
    if (cfg == NULL)
        abort();
    gw_log_level = cfg->log_level;
    if (gw_accesslog_open(cfg->access_log) != GW_OK)
        abort();
    server = gw_server_new(cfg, &err);
    if (server == NULL) {
        fprintf(stderr, "fuzz_framer: %s\n", err.message);
        abort();
    }
    worker = gw_server_worker(server, 0);
    signal(SIGPIPE, SIG_IGN);
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;

    while (d != NULL && readdir(d) != NULL)
        n++;
    if (d != NULL)
        closedir(d);
    return n;
}

/* One pass of the worker's loop, waiting at most ms for something to happen. */
static void loop_once(int ms)
{
    struct timeval tv = { 0, ms * 1000 };

    event_base_loopexit(worker->base, &tv);
    event_base_loop(worker->base, EVLOOP_ONCE);
}

/* Read what the gateway answered; 1 once it has closed the connection. */
static int drain(int fd)
{
    char buf[16384];

    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n == 0)
            return 1;
        if (n < 0)
            return errno != EAGAIN && errno != EINTR;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    size_t step, off = 0;
    int fd, closed = 0;

    if (worker == NULL)
        setup();
    if (size < 1)
        return 0;
    step = data[0] == 0 ? size : data[0]; /* bytes per write */
    data++;
    size--;
    a.sin_port = htons((uint16_t)port);
    /* every connection must be closed by the gateway sooner or later: a leak of
     * them shows as a growing descriptor count */
    if (++runs % 256 == 0 && open_fds() > 256) {
        fprintf(stderr, "fuzz_framer: %d descriptors open: connections leak\n", open_fds());
        abort();
    }
    /* non-blocking from the start: libFuzzer's timer signals interrupt a blocking
     * connect (EINTR) */
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0 || (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0 &&
                   errno != EINPROGRESS && errno != EINTR)) {
        fprintf(stderr, "fuzz_framer: connect: %s\n", strerror(errno));
        abort();
    }
    for (int i = 0; i < 100; i++) { /* accept; the connect completes */
        struct pollfd pfd = { fd, POLLOUT, 0 };
        loop_once(1);
        if (poll(&pfd, 1, 0) == 1)
            break;
    }
    while (off < size && !closed) {
        size_t n = size - off < step ? size - off : step;
        ssize_t w = write(fd, data + off, n);
        if (w > 0)
            off += (size_t)w;
        else if (errno != EAGAIN)
            break;
        loop_once(0);
        closed = drain(fd);
    }
    shutdown(fd, SHUT_WR);
    /* let the gateway answer and close: bounded, the upstream fails fast */
    for (int i = 0; i < 200 && !closed; i++) {
        loop_once(5);
        closed = drain(fd);
    }
    close(fd);
    for (int i = 0; i < 3; i++)
        loop_once(0); /* the gateway sees the close and frees the connection */
    if (getenv("FUZZ_FRAMER_TRACE") != NULL)
        fprintf(stderr, "fuzz_framer: %d descriptors after this input\n", open_fds());
    return 0;
}
