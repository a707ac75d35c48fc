"""Redis round trips per create (issue 7's performance goal): what a create asks
Redis, counted with MONITOR on the test's private redis-server, one gateway with
one loop (one connection: Redis runs its commands in the order they were sent).

A JSON create of a key with rpm, concurrency and daily_seconds is one script
before the upstream (the limits and the day's seconds together, at the body's
end) and the put after the upstream answered (answered means recorded), which
also gives the concurrency slot back: two commands, one wait on each side of
the upstream call. It was four (the headers' decision, then the reservation at
the body's end, the put, the release) before: a regression fails here."""

import os
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}
LIMITS = {"rpm": 1000, "concurrency": 5, "daily_seconds": 100000}


class Monitor:
    """MONITOR on its own connection: (command, sha, args) of every command run."""

    def __init__(self, redis):
        self.sock = socket.create_connection(("127.0.0.1", redis.port), timeout=10)
        self.sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        self.f = self.sock.makefile("rb")
        assert self.f.readline() == b"+OK\r\n"
        self.cmds = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for line in self.f:
                # +1700000000.123456 [0 127.0.0.1:5555] "EVALSHA" "sha" "0" "videogw:" ...
                words = re.findall(r'"((?:[^"\\]|\\.)*)"', line.decode(errors="replace"))
                if words:
                    with self.lock:
                        self.cmds.append(words)
        except (OSError, ValueError):
            pass

    def of_key(self, key):
        """The scripts run for team key `key` (an argument), in order."""
        with self.lock:
            return [c for c in self.cmds
                    if c[0].upper() in ("EVALSHA", "EVAL") and key in c[3:]]

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


def gateway(stub, redis, options):
    admin_port = gwtest.free_port()
    gw = gwtest.Gateway(stub, keys=("alice", "lead"),
                        key_options={"alice": options, "lead": {"admin": "yes"}}, threads=1,
                        extra={"store": redis.store(timeout="2s"),
                               "admin": {"listen": "127.0.0.1:%d" % admin_port}})
    gw.admin_port = admin_port
    return gw


def decisions(gw):
    """videogw_limiter_decisions_total of alice: {outcome: count}."""
    st, _, b = gwtest.request(gw.admin_port, "GET", "/metrics",
                              headers={"Authorization": "Bearer " + gw.keys["lead"]})
    assert st == 200, b
    return {m.group(1): int(m.group(2)) for m in re.finditer(
        r'^videogw_limiter_decisions_total\{key="alice",outcome="([a-z_]+)"\} (\d+)$',
        b.decode(), re.M)}


def count_per_create(gw, redis, n, body=None, headers=None, per=2):
    """Scripts Redis ran for alice during n sequential creates (after a first one
    that loads the scripts), once the last slot is free and `per` a create came."""
    gwtest.create_job(gw, "alice")               # loads the scripts (EVAL after NOSCRIPT)
    gwtest.wait_for(lambda: redis.cmd("ZCARD", "videogw:conc:alice") == 0, timeout=5,
                    what="the first create's slot released")
    mon = Monitor(redis)
    try:
        for _ in range(n):
            st, _, b = gw.request("POST", "/v1/videos", key="alice",
                                  headers=headers or JSON, body=body or gwtest.create_body())
            assert st == 200, (st, b)
        gwtest.wait_for(lambda: redis.cmd("ZCARD", "videogw:conc:alice") == 0, timeout=5,
                        what="the last slot released")
        # MONITOR shows what Redis ran a little after it ran it
        gwtest.wait_for(lambda: len(mon.of_key("alice")) >= per * n, timeout=5,
                        what="every create's scripts")
        return mon.of_key("alice")
    finally:
        mon.close()


def test_json_create_is_one_script_before_the_upstream():
    n = 10
    with gwtest.Stub() as stub, gwtest.Redis() as redis, \
            gateway(stub, redis, LIMITS) as gw:
        cmds = count_per_create(gw, redis, n)
        # two a create (a lease renewal, every 3 s, may add one in a slow run)
        assert 2 * n <= len(cmds) <= 2 * n + 1, [c[:2] for c in cmds]
        shas = [c[1] for c in cmds][:2 * n]
        decision, put = shas[0], shas[1]
        assert decision != put, shas
        # every create: one decision, then the put (which gives the slot back)
        assert shas == [decision, put] * n, shas
        assert redis.cmd("ZCARD", "videogw:conc:alice") == 0
        # the decision carried the day's seconds (the reservation is in it)
        day = int(time.time()) // 86400
        assert str(day) in cmds[0] and "8" in cmds[0][cmds[0].index(str(day)):], cmds[0]
        assert redis.cmd("HGET", "videogw:quota:%d" % day, "alice") == str(8 * (n + 1)).encode()
        assert len(stub.jobs()) == n + 1


def test_refused_at_the_body_end_takes_nothing():
    """The decision made at a JSON body's end refuses like the headers' one did:
    429 with its headers, the upstream never sees the body, and the refusal takes
    neither seconds of the day nor a request of the minute."""
    with gwtest.Stub() as stub, gwtest.Redis() as redis, \
            gateway(stub, redis, {"rpm": 2, "daily_seconds": 20}) as gw:
        day = int(time.time()) // 86400
        gwtest.create_job(gw, "alice")
        gwtest.create_job(gw, "alice")
        st, h, body = gw.request("POST", "/v1/videos", key="alice", headers=JSON,
                                 body=gwtest.create_body("4"))
        e = gwtest.error_body(body)
        assert st == 429 and e["code"] == "rate_limit_exceeded", (st, body)
        assert int(h["retry-after"]) >= 1 and h["x-ratelimit-limit-requests"] == "2", h
        assert h["x-ratelimit-remaining-requests"] == "0", h
        # refused by the rpm: its 4 s were not reserved
        assert redis.cmd("HGET", "videogw:quota:%d" % day, "alice") == b"16"
        creates = [r for r in stub.requests(method="POST") if r["path"] == "/v1/videos"]
        assert len(creates) == 2, len(creates)
        # counted once, as what refused it
        assert decisions(gw) == {"admitted": 2, "rate_limited": 1}, decisions(gw)
        gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_quota_refusal_keeps_the_minute():
    with gwtest.Stub() as stub, gwtest.Redis() as redis, \
            gateway(stub, redis, {"rpm": 2, "daily_seconds": 12}) as gw:
        day = int(time.time()) // 86400
        gwtest.create_job(gw, "alice")
        st, h, body = gw.request("POST", "/v1/videos", key="alice", headers=JSON,
                                 body=gwtest.create_body("8"))
        e = gwtest.error_body(body)
        assert st == 429 and (e["code"], e["param"]) == ("insufficient_quota", "seconds"), body
        assert 1 <= int(h["retry-after"]) <= 86400, h
        # the refusal took no request of the minute: a 4 s create still fits both
        assert gwtest.create_job(gw, "alice", "4")
        assert redis.cmd("HGET", "videogw:quota:%d" % day, "alice") == b"12"
        assert len(stub.jobs()) == 2
        assert decisions(gw) == {"admitted": 2, "quota_exceeded": 1}, decisions(gw)


def small_multipart(seconds="8"):
    return gwtest.multipart([("model", "veo3.1"), ("prompt", "p"), ("seconds", seconds),
                             ("size", "16x9")])


def test_small_multipart_is_one_script_too():
    """A multipart create of at most 64 KiB is held whole like a JSON one: one script
    before the upstream; a refused one never reaches the upstream at all."""
    n = 4
    with gwtest.Stub() as stub, gwtest.Redis() as redis, \
            gateway(stub, redis, dict(LIMITS, rpm=n + 1)) as gw:
        body, ctype = small_multipart()
        cmds = count_per_create(gw, redis, n, body=body, headers={"Content-Type": ctype})
        assert 2 * n <= len(cmds) <= 2 * n + 1, [c[:2] for c in cmds]
        made = len(stub.requests(method="POST"))
        st, h, b = gw.request("POST", "/v1/videos", key="alice",
                              headers={"Content-Type": ctype}, body=body)
        assert st == 429 and gwtest.error_body(b)["code"] == "rate_limit_exceeded", (st, b)
        assert len(stub.requests(method="POST")) == made


def test_uploads_and_expect_keep_the_headers_decision():
    """A larger multipart upload, and a create sent with Expect: 100-continue, are
    decided on their head (a refusal spares the upload) and reserve their seconds
    at the body's end: two scripts before the upstream, then the put. Counted so that a change
    here is a decision, not an accident."""
    n = 3
    with gwtest.Stub() as stub, gwtest.Redis() as redis, \
            gateway(stub, redis, LIMITS) as gw:
        body, ctype = gwtest.multipart([
            ("model", "veo3.1"), ("prompt", "p"), ("seconds", "8"), ("size", "16x9"),
            ("input_reference", "f.png", b"P" * 70000, "image/png")])
        cmds = count_per_create(gw, redis, n, body=body, headers={"Content-Type": ctype},
                                per=3)
        assert 3 * n <= len(cmds) <= 3 * n + 1, [c[:2] for c in cmds]
        cmds = count_per_create(gw, redis, n, headers=dict(JSON, Expect="100-continue"), per=3)
        assert 3 * n <= len(cmds) <= 3 * n + 1, [c[:2] for c in cmds]


def test_redis_lost_before_the_body_end():
    """Redis stops answering between a deferred create's head and its body's end:
    the decision at the body's end is [store] on_failure's: 503 before anything went
    upstream, or this instance's own limits (which then hold the create's request
    of the minute: the next create is refused by them)."""
    for on_failure in ("refuse", "local"):
        with gwtest.Stub() as stub, gwtest.Redis() as redis, gwtest.Gateway(
                stub, keys=("alice",), key_options={"alice": {"rpm": 1, "daily_seconds": 100}},
                threads=1, extra={"store": redis.store(timeout="200ms",
                                                       on_failure=on_failure)}) as gw:
            redis.pause()
            try:
                st, _, b = gw.request("POST", "/v1/videos", key="alice", headers=JSON,
                                      body=gwtest.create_body(), timeout=10)
                if on_failure == "refuse":
                    e = gwtest.error_body(b)
                    assert st == 503 and e["code"] == "store_unavailable", (st, b)
                    assert stub.requests(method="POST") == []
                else:
                    assert st == 200, (st, b)
                    st, _, b = gw.request("POST", "/v1/videos", key="alice", headers=JSON,
                                          body=gwtest.create_body(), timeout=10)
                    e = gwtest.error_body(b)
                    assert st == 429 and e["code"] == "rate_limit_exceeded", (st, b)
                    assert len(stub.requests(method="POST")) == 1
            finally:
                redis.resume()


if __name__ == "__main__":
    gwtest.main(globals())
