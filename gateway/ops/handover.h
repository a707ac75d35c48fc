/*
 * handover.h - a newer gateway takes the running one's listening sockets
 * (zero-downtime upgrades, docs/operations.md). I/O module: a Unix socket in the
 * abstract namespace, named after the public listen address, and a thread.
 */
#ifndef GW_HANDOVER_H
#define GW_HANDOVER_H

#define GW_HANDOVER_MAX 252 /* public listening sockets passed at most: one message's
                             * descriptors (SCM_MAX_FD, 253) with the admin one */

/* What a newer gateway got from the one serving the same address. */
struct gw_inherited {
    int main[GW_HANDOVER_MAX]; /* the public listeners, one per loop of the giver */
    unsigned nmain;            /* 0: nothing inherited (none of the other fields is set) */
    int admin;                 /* the admin listener when it listens on our [admin]
                                * address, else -1 */
    int link;                  /* the connection to the giver: open while it lives */
    long pid;                  /* the giver's process id, for the log */
};

/* Which of this process's listeners another live gateway holds too (and accepts
 * on): closing ours then resets nothing. */
enum {
    GW_SHARED_MAIN = 1,
    GW_SHARED_ADMIN = 2,
};

struct gw_handover;

/*
 * At start, before binding: ask the gateway serving host:port, if one does, for
 * its listening sockets. admin_host/admin_port: our [admin] address (NULL: none),
 * whose socket is taken only if the giver's listens on the same. Returns the
 * number of public sockets taken (0: none; in->nmain = 0 and nothing to close).
 * Blocks at most a few seconds (no loop runs yet). Peers must run as our user.
 */
unsigned gw_handover_take(const char *host, int port, const char *admin_host, int admin_port,
                          struct gw_inherited *in);

/*
 * Once our listeners accept: serve the name for a later gateway (handing it
 * main_fds[0..n) and admin_fd, -1 if none) and watch the link to the gateway
 * we took sockets from (in, whose link is owned here from now on; NULL or
 * in->nmain 0: none). we_accept: which of the giver's sockets we listen on
 * (GW_SHARED_*, told to it); giver_holds: which of our listeners are all the
 * giver's too (those we bound ourselves are not). Starts a thread. NULL when
 * out of resources (logged; the gateway runs without handovers).
 */
struct gw_handover *gw_handover_start(const char *host, int port, const int *main_fds,
                                      unsigned n, int admin_fd, struct gw_inherited *in,
                                      int we_accept, int giver_holds);

/*
 * SIGTERM: stop serving the name (a later gateway may take it at once), then ask
 * each gateway that holds our listeners too whether it keeps accepting on them
 * (at most a second; a gateway stopping as well says no). Returns the GW_SHARED_*
 * bits of the listeners another gateway confirmed: closing those resets nothing.
 * Joins the thread, closes the links; h is freed. 0 for NULL.
 */
int gw_handover_leave(struct gw_handover *h);

#endif
