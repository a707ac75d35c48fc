/*
 * upgrade.c - zero-downtime upgrades on SO_REUSEPORT listeners, the fallback when
 * no handover took place (handover.c: the newer gateway then holds the very same
 * sockets and none of this is needed).
 *
 * A new gateway binds the same address next to the running one (every listener
 * has SO_REUSEPORT), then the old one gets SIGTERM. Closing a listener resets
 * the connections still in its accept queue (unless net.ipv4.tcp_migrate_req
 * is 1), and while it is open the kernel keeps handing it a share of the new
 * ones. So the old process first steers every new connection of the group to
 * the sockets that joined after its own: a classic BPF program on the group
 * answers "index nown + cpu % nown", the newer process's sockets (the old
 * process's nown sockets hold indices 0..nown-1: the group is compacted as
 * sockets leave). Its accept queues then only empty; it keeps accepting for a
 * short grace (server.c) and closes them with the program still on, so that no
 * connection lands on a closing listener (but not for sure: once the first old
 * socket has left, the group is compacted, the last socket moved into its slot,
 * so an index can fall past the end and the kernel then picks by hash, possibly
 * a remaining old socket about to close). With no newer process, or once the
 * old sockets are gone and the newer process has as many, the index is past
 * the group's end and the kernel picks by hash as before; a newer process with
 * more loops takes the program off at its next SIGHUP.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include <linux/filter.h>

#include "log.h"
#include "ops.h"

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif
#ifndef SO_DETACH_REUSEPORT_BPF
#define SO_DETACH_REUSEPORT_BPF 68
#endif

int gw_upgrade_steer_away(int fd, unsigned nown)
{
    struct sock_filter code[] = {
        { BPF_LD | BPF_W | BPF_ABS, 0, 0, (uint32_t)(SKF_AD_OFF + SKF_AD_CPU) },
        { BPF_ALU | BPF_MOD | BPF_K, 0, 0, nown },
        { BPF_ALU | BPF_ADD | BPF_K, 0, 0, nown },
        { BPF_RET | BPF_A, 0, 0, 0 },
    };
    struct sock_fprog prog = { (unsigned short)GW_ARRAY_LEN(code), code };

    if (fd < 0 || nown == 0)
        return GW_ERR;
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) != 0) {
        gw_log(GW_LOG_WARN, "cannot steer new connections to a newer process: %s "
               "(connections queued at the close may be reset)", strerror(errno));
        return GW_ERR;
    }
    return GW_OK;
}

void gw_upgrade_steer_clear(int fd)
{
    /* ENOENT: nothing attached (never steered); older kernels lack the option */
    if (setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &(int){ 0 }, sizeof(int)) != 0 &&
        errno != ENOENT)
        gw_log(GW_LOG_DEBUG, "cannot take the steering program off: %s", strerror(errno));
}
