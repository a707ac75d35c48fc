/*
 * handover.c - a newer gateway takes the running one's listening sockets.
 *
 * Why: a zero-downtime upgrade starts a second gateway on the same address and
 * then stops the first. With a socket of its own in the SO_REUSEPORT group, the
 * newer one shares the traffic, but the older one's close resets whatever the
 * kernel queued on its sockets meanwhile, and no steering of the group closes
 * that window for sure (upgrade.c: the group is compacted as sockets leave, so
 * a program's indices go stale). HAProxy (`-x`) and Envoy (hot restart) pass
 * the listening sockets themselves, and so do we: both processes then accept on
 * the very same sockets, and the older one's close drops a reference, not a
 * socket. Nothing queued is ever reset, whatever the load.
 *
 * How: every gateway serves a Unix socket in the abstract namespace named after
 * its public listen address ("videogw-handover/HOST:PORT": no file to clean up,
 * gone with the process, scoped to the network namespace like the port). A
 * gateway starting on that address connects first and, if someone answers,
 * gets its listening sockets (SCM_RIGHTS), listens on all of them, and says so
 * (one byte). The connection stays open as a link: each side knows whether the
 * other still holds the sockets, so whichever gets SIGTERM first closes its
 * listeners at once (server.c) instead of steering and waiting. The taker
 * serves the name itself once the giver has left. Only a peer of our own user
 * (SO_PEERCRED) gets anything, the same rule SO_REUSEPORT has.
 *
 * The thread here does all of it with blocking calls and poll(): no event loop
 * waits on a peer.
 */
#define _GNU_SOURCE /* struct ucred, accept4, pthread_setname_np */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "gw.h"
#include "handover.h"
#include "log.h"

#define MAGIC "videogw-handover-1" /* both ways: the protocol's version */
#define PEERS_MAX 8                /* gateways linked at once */
#define TAKE_TIMEOUT_MS 3000       /* a giver answers at once; a stuck one is skipped */
#define GIVE_TIMEOUT_MS 1000       /* a taker's hello; the thread waits no longer */
#define LEAVE_TIMEOUT_MS 1000      /* SIGTERM: how long the peers get to say they stay */
#define REBIND_MS 500              /* the name held by someone else: retry this often */

/* One byte each, on a link once the sockets have passed. */
enum {
    MSG_ACCEPTS = 0x10, /* | GW_SHARED_*: the taker accepts on these of the giver's sockets */
    MSG_LEAVE = 0x20,   /* "I am leaving: do you keep accepting on the sockets we share?" */
    MSG_STAY = 0x21,    /* "yes": the leaver may close its listeners at once */
    MSG_BUSY = 0x22,    /* "no, I am leaving too": the leaver steers and waits */
};

struct hello {
    char magic[sizeof(MAGIC)];
    int32_t pid;
    uint32_t nmain;
    uint32_t admin; /* 1: the fd after the public ones is the admin listener */
};

/* A gateway linked to us: the one we took sockets from, or one that took ours. */
struct peer {
    int fd;    /* the link; -1: a free slot */
    int holds; /* GW_SHARED_*: which of our listeners it accepts on too */
    int giver; /* 1: we took its sockets (its end frees the name for us) */
    int pid;
};

struct gw_handover {
    pthread_t thread;
    int stop_fd;   /* eventfd: gw_handover_leave() */
    int stopping;  /* atomic: set before the thread is stopped; it answers MSG_BUSY */
    int listen_fd; /* the name, once bound; -1 before */
    struct sockaddr_un name;
    socklen_t namelen;
    int fds[GW_HANDOVER_MAX + 1];
    unsigned nmain;
    int admin; /* 1: fds[nmain] is the admin listener */
    struct peer peers[PEERS_MAX];
};

static void make_name(const char *host, int port, struct sockaddr_un *sa, socklen_t *len)
{
    int n;

    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    /* sun_path[0] = 0: the abstract namespace */
    n = snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1, "videogw-handover/%s:%d", host,
                 port);
    if (n < 0 || (size_t)n >= sizeof(sa->sun_path) - 1)
        n = (int)sizeof(sa->sun_path) - 2; /* a long host: cut, still one name per address */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* A listening TCP socket bound to host:port (host numeric as in the config). */
static int is_listener_on(int fd, const char *host, int port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char text[INET6_ADDRSTRLEN];
    int on = 0;
    socklen_t olen = sizeof(on);
    const void *addr;
    int p;

    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &olen) != 0 || !on ||
        getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET) {
        addr = &((struct sockaddr_in *)&ss)->sin_addr;
        p = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        addr = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        p = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    } else {
        return 0;
    }
    return p == port && inet_ntop(ss.ss_family, addr, text, sizeof(text)) != NULL &&
           strcmp(text, host) == 0;
}

static void set_timeout(int fd, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int same_user(int fd)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);

    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 && cr.uid == geteuid();
}

static void close_fds(int *fds, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        close(fds[i]);
}

unsigned gw_handover_take(const char *host, int port, const char *admin_host, int admin_port,
                          struct gw_inherited *in)
{
    struct sockaddr_un sa;
    socklen_t salen;
    struct hello me, h;
    int fds[GW_HANDOVER_MAX + 1];
    unsigned nfds = 0;
    union {
        char buf[CMSG_SPACE(sizeof(fds))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = { &h, sizeof(h) };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                          .msg_controllen = sizeof(ctl.buf) };
    int fd;
    ssize_t r;

    memset(in, 0, sizeof(*in));
    in->admin = in->link = -1;
    memset(&me, 0, sizeof(me)); /* no padding byte goes out unset */
    memcpy(me.magic, MAGIC, sizeof(MAGIC));
    me.pid = (int32_t)getpid();
    make_name(host, port, &sa, &salen);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    /* before connect(): a Unix socket's connect blocks while the server's queue is
     * full (a stopped or hung giver), SO_SNDTIMEO bounds it */
    set_timeout(fd, TAKE_TIMEOUT_MS);
    if (connect(fd, (struct sockaddr *)&sa, salen) != 0) {
        close(fd); /* ECONNREFUSED: nobody serves this address (the usual start) */
        return 0;
    }
    if (!same_user(fd)) {
        gw_log(GW_LOG_WARN, "handover: the process serving %s:%d runs as another user: "
               "not taking its listeners", host, port);
        goto fail;
    }
    if (send(fd, &me, sizeof(me), MSG_NOSIGNAL) != (ssize_t)sizeof(me))
        goto fail;
    memset(ctl.buf, 0, sizeof(ctl.buf));
    r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    if (r < 0)
        msg.msg_controllen = 0; /* a timeout: nothing came, not even descriptors */
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && nfds == 0) {
            unsigned n = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int *got = (int *)CMSG_DATA(c);
            /* the buffer's padding can hold a descriptor more than fds: close those */
            for (unsigned i = 0; i < n; i++) {
                if (i < GW_ARRAY_LEN(fds))
                    fds[nfds++] = got[i];
                else
                    close(got[i]);
            }
        }
    }
    if (r != (ssize_t)sizeof(h) || (msg.msg_flags & MSG_CTRUNC) ||
        memcmp(h.magic, MAGIC, sizeof(MAGIC)) != 0 || h.nmain == 0 ||
        h.nmain > GW_HANDOVER_MAX || nfds != h.nmain + (h.admin ? 1 : 0)) {
        gw_log(GW_LOG_WARN, "handover: the gateway serving %s:%d answered something else "
               "(another version?): binding sockets of our own", host, port);
        goto fail;
    }
    for (unsigned i = 0; i < h.nmain; i++) {
        if (!is_listener_on(fds[i], host, port)) {
            gw_log(GW_LOG_WARN, "handover: a socket from the gateway serving %s:%d does not "
                   "listen there: binding sockets of our own", host, port);
            goto fail;
        }
    }
    memcpy(in->main, fds, h.nmain * sizeof(int));
    in->nmain = h.nmain;
    if (h.admin) {
        /* ours only if it listens where our [admin] says; else the giver keeps it */
        if (admin_host != NULL && is_listener_on(fds[h.nmain], admin_host, admin_port))
            in->admin = fds[h.nmain];
        else
            close(fds[h.nmain]);
    }
    set_timeout(fd, 0);
    in->link = fd;
    in->pid = h.pid;
    return in->nmain;

fail:
    close_fds(fds, nfds);
    close(fd);
    return 0;
}

static void try_bind(struct gw_handover *h)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0)
        return;
    if (bind(fd, (struct sockaddr *)&h->name, h->namelen) != 0 || listen(fd, 8) != 0) {
        close(fd); /* EADDRINUSE: an older gateway still serves it; we retry */
        return;
    }
    h->listen_fd = fd;
}

static struct peer *free_peer(struct gw_handover *h)
{
    for (unsigned i = 0; i < PEERS_MAX; i++) {
        if (h->peers[i].fd < 0)
            return &h->peers[i];
    }
    return NULL;
}

/* A later gateway connected: its hello, then our sockets. It holds them once it
 * says which it listens on (MSG_ACCEPTS, peer_read). */
static void give(struct gw_handover *h)
{
    int fd = accept4(h->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    struct hello hi, me;
    union {
        char buf[CMSG_SPACE(sizeof(h->fds))];
        struct cmsghdr align;
    } ctl;
    unsigned nfds = h->nmain + (h->admin ? 1 : 0);
    struct iovec iov = { &me, sizeof(me) };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                          .msg_controllen = CMSG_SPACE(nfds * sizeof(int)) };
    struct cmsghdr *c;
    struct peer *p = free_peer(h);

    if (fd < 0) {
        /* out of descriptors: the name stays readable; do not spin on it */
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            poll(NULL, 0, REBIND_MS);
        return;
    }
    memset(&me, 0, sizeof(me));
    memcpy(me.magic, MAGIC, sizeof(MAGIC));
    me.pid = (int32_t)getpid();
    me.nmain = h->nmain;
    me.admin = (uint32_t)h->admin;
    set_timeout(fd, GIVE_TIMEOUT_MS);
    if (p == NULL || !same_user(fd) ||
        recv(fd, &hi, sizeof(hi), MSG_WAITALL) != (ssize_t)sizeof(hi) ||
        memcmp(hi.magic, MAGIC, sizeof(MAGIC)) != 0) {
        close(fd);
        return;
    }
    memset(ctl.buf, 0, sizeof(ctl.buf));
    c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(c), h->fds, nfds * sizeof(int));
    if (sendmsg(fd, &msg, MSG_NOSIGNAL) != (ssize_t)sizeof(me)) {
        close(fd);
        return;
    }
    *p = (struct peer){ .fd = fd, .holds = 0, .giver = 0, .pid = (int)hi.pid };
    gw_log(GW_LOG_INFO, "handover: gateway pid %d took our %u listening socket(s); both "
           "accept on them until one leaves", (int)hi.pid, nfds);
}

/* A byte from a peer, or its end. Returns 1 when a giver's link ended (the name
 * may be free for us now). */
static int peer_read(struct gw_handover *h, struct peer *p)
{
    unsigned char b;
    ssize_t r = recv(p->fd, &b, 1, MSG_DONTWAIT);
    int was_giver = p->giver;

    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (r == 1 && (b & ~(GW_SHARED_MAIN | GW_SHARED_ADMIN)) == MSG_ACCEPTS && !p->giver) {
        p->holds = b & (GW_SHARED_MAIN | GW_SHARED_ADMIN);
        return 0;
    }
    if (r == 1 && b == MSG_LEAVE) {
        /* it closes its listeners at once if we say we stay: then the sockets
         * we share are ours alone, whatever comes next */
        int stay = !__atomic_load_n(&h->stopping, __ATOMIC_ACQUIRE);
        unsigned char a = stay ? MSG_STAY : MSG_BUSY;
        if (send(p->fd, &a, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1 && stay) {
            p->holds = 0;
            gw_log(GW_LOG_INFO, "handover: gateway pid %d leaves; we keep accepting on our "
                   "listening sockets", p->pid);
        }
        return 0;
    }
    if (r == 1)
        return 0; /* a byte of a later version: ignored */
    if (was_giver)
        gw_log(GW_LOG_INFO, "handover: gateway pid %d left", p->pid);
    close(p->fd); /* it ended (or never listened): our sockets are ours alone */
    *p = (struct peer){ .fd = -1 };
    return was_giver;
}

static void *run(void *arg)
{
    struct gw_handover *h = arg;

    pthread_setname_np(pthread_self(), "gw-handover");
    for (;;) {
        struct pollfd pf[2 + PEERS_MAX];
        struct peer *who[2 + PEERS_MAX];
        nfds_t n = 0;
        int giver_left = 0, giver_linked = 0;

        pf[n++] = (struct pollfd){ h->stop_fd, POLLIN, 0 };
        if (h->listen_fd >= 0)
            pf[n++] = (struct pollfd){ h->listen_fd, POLLIN, 0 };
        for (unsigned i = 0; i < PEERS_MAX; i++) {
            if (h->peers[i].fd >= 0) {
                who[n] = &h->peers[i];
                giver_linked |= h->peers[i].giver;
                pf[n++] = (struct pollfd){ h->peers[i].fd, POLLIN, 0 };
            }
        }
        /* the name held by another process with no link to it: retry now and then */
        if (poll(pf, n, h->listen_fd < 0 && !giver_linked ? REBIND_MS : -1) < 0 &&
            errno != EINTR)
            break;
        if (pf[0].revents)
            break;
        for (nfds_t i = 1; i < n; i++) {
            if (pf[i].revents == 0)
                continue;
            if (pf[i].fd == h->listen_fd)
                give(h);
            else
                giver_left |= peer_read(h, who[i]);
        }
        if (h->listen_fd < 0) {
            int linked = 0;
            for (unsigned i = 0; i < PEERS_MAX; i++)
                linked |= h->peers[i].fd >= 0 && h->peers[i].giver;
            if (!linked)
                try_bind(h);
            if (giver_left && h->listen_fd >= 0)
                gw_log(GW_LOG_INFO, "handover: a newer gateway can take our listening "
                       "sockets now");
        }
    }
    return NULL;
}

struct gw_handover *gw_handover_start(const char *host, int port, const int *main_fds,
                                      unsigned n, int admin_fd, struct gw_inherited *in,
                                      int we_accept, int giver_holds)
{
    struct gw_handover *h = calloc(1, sizeof(*h));

    if (h == NULL || n == 0 || n > GW_HANDOVER_MAX) {
        if (in != NULL && in->link >= 0)
            close(in->link); /* ours from the call on: the giver sees a taker that never
                              * listened and keeps its sockets to itself */
        if (in != NULL)
            in->link = -1;
        goto fail;
    }
    h->listen_fd = -1;
    for (unsigned i = 0; i < PEERS_MAX; i++)
        h->peers[i].fd = -1;
    make_name(host, port, &h->name, &h->namelen);
    memcpy(h->fds, main_fds, n * sizeof(int));
    h->nmain = n;
    if (admin_fd >= 0) {
        h->fds[n] = admin_fd;
        h->admin = 1;
    }
    if (in != NULL && in->link >= 0) {
        unsigned char b = (unsigned char)(MSG_ACCEPTS | we_accept);
        /* the giver learns we accept on its sockets: its SIGTERM may close them at once */
        if (send(in->link, &b, 1, MSG_NOSIGNAL) == 1)
            h->peers[0] = (struct peer){ .fd = in->link, .holds = giver_holds, .giver = 1,
                                         .pid = (int)in->pid };
        else
            close(in->link);
        in->link = -1;
    }
    h->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (h->stop_fd < 0)
        goto fail;
    if (h->peers[0].fd < 0)
        try_bind(h);
    if (pthread_create(&h->thread, NULL, run, h) != 0) {
        close(h->stop_fd);
        goto fail;
    }
    return h;

fail:
    gw_log(GW_LOG_WARN, "handover: cannot serve %s:%d's listeners to a newer gateway (out "
           "of resources): an upgrade falls back to steering", host, port);
    if (h != NULL) {
        if (h->listen_fd >= 0)
            close(h->listen_fd);
        if (h->peers[0].fd >= 0)
            close(h->peers[0].fd);
    }
    free(h);
    return NULL;
}

/* Ask every peer that holds some of our listeners whether it stays; the bits of
 * those that say so within LEAVE_TIMEOUT_MS. */
static int ask_peers(struct gw_handover *h)
{
    struct pollfd pf[PEERS_MAX];
    struct peer *who[PEERS_MAX];
    nfds_t n = 0;
    int stays = 0;
    struct timespec t0, t;

    for (unsigned i = 0; i < PEERS_MAX; i++) {
        struct peer *p = &h->peers[i];
        unsigned char b = MSG_LEAVE;
        if (p->fd >= 0 && p->holds && send(p->fd, &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1) {
            who[n] = p;
            pf[n++] = (struct pollfd){ p->fd, POLLIN, 0 };
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (nfds_t left = n; left > 0;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long ms = LEAVE_TIMEOUT_MS - ((t.tv_sec - t0.tv_sec) * 1000 +
                                      (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (ms <= 0 || poll(pf, n, (int)ms) <= 0)
            break; /* the silent ones do not count */
        for (nfds_t i = 0; i < n; i++) {
            unsigned char b = 0;
            if (pf[i].fd < 0 || pf[i].revents == 0)
                continue;
            if (recv(pf[i].fd, &b, 1, MSG_DONTWAIT) == 1 && b != MSG_STAY && b != MSG_BUSY)
                continue; /* a late MSG_ACCEPTS: the answer follows */
            if (b == MSG_STAY)
                stays |= who[i]->holds;
            pf[i].fd = -1; /* answered, or gone */
            left--;
        }
    }
    return stays;
}

int gw_handover_leave(struct gw_handover *h)
{
    int stays;

    if (h == NULL)
        return 0;
    /* from here the thread answers a peer's MSG_LEAVE with MSG_BUSY: two gateways
     * stopping together must not both count on the other */
    __atomic_store_n(&h->stopping, 1, __ATOMIC_RELEASE);
    (void)!write(h->stop_fd, &(uint64_t){ 1 }, sizeof(uint64_t));
    pthread_join(h->thread, NULL);
    close(h->stop_fd);
    if (h->listen_fd >= 0)
        close(h->listen_fd); /* the name first: a successor may serve it at once */
    stays = ask_peers(h);
    for (unsigned i = 0; i < PEERS_MAX; i++) {
        if (h->peers[i].fd >= 0)
            close(h->peers[i].fd);
    }
    free(h);
    return stays;
}
