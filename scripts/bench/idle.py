#!/usr/bin/env python3
"""scripts/bench/idle.py PORT CONNS PID... - idle keep-alive connections for scripts/bench.sh.

Opens CONNS connections to 127.0.0.1:PORT, sends one `GET /healthz` on each and reads
its answer (the connection is then an idle keep-alive one, as a browser or an SDK leaves
it), then prints one line that bench.sh parses:

    IDLE conns=N before_kb=N after_kb=N

before/after: VmRSS summed over the PIDs (nginx: master and workers) before the first
connection and once every connection has had its answer. Connections that are refused
or closed are not counted (the line says how many stayed open)."""

import socket
import sys
import time


def rss_kb(pids):
    total = 0
    for pid in pids:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def answered(s):
    """Read one response (head and Content-Length body); False if the peer closed."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            return False
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(body) < length:
        d = s.recv(65536)
        if not d:
            return False
        body += d
    return True


def main():
    port, conns, pids = int(sys.argv[1]), int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
    before = rss_kb(pids)
    req = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
    socks = []
    for _ in range(conns):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(req)
            if answered(s):
                socks.append(s)
            else:
                s.close()
        except OSError:
            break
    time.sleep(0.5)  # let the proxies finish what they do after an answer (fini, pools)
    after = rss_kb(pids)
    print("IDLE conns=%d before_kb=%d after_kb=%d" % (len(socks), before, after), flush=True)
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
