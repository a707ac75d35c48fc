"""Per-key rules of issue 6, as far as they are enforced: a key's model allowlist
(403 model_not_allowed before the upstream sees a complete create), its expiry
date (refused like an unknown key), creates per minute with a burst (exact across
event loops), creates in flight, and daily video-seconds (reserved before the
upstream sees a complete body, released when no job was made)."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}


def create(gw, key, model, as_multipart=False):
    fields = {"model": model, "prompt": "p", "seconds": "8", "size": "16x9"}
    if as_multipart:
        body, ct = gwtest.multipart(list(fields.items()) +
                                    [("input_reference", "f.png", b"\x89PNG" + b"x" * 5000,
                                      "image/png")])
        return gw.request("POST", "/v1/videos", key=key, headers={"Content-Type": ct},
                          body=body)
    return gw.request("POST", "/v1/videos", key=key, headers=JSON,
                      body=json.dumps(fields).encode())


def test_model_allowlist():
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("alice", "bob"),
            key_options={"alice": {"models": "veo3.1, veo3"}}) as gw:
        # allowed, by alias and by upstream name
        assert create(gw, "alice", "veo3.1")[0] == 200
        assert create(gw, "alice", "veo_3_1")[0] == 200
        assert create(gw, "alice", "veo3", as_multipart=True)[0] == 200
        made = len(stub.jobs())
        # refused, JSON and multipart alike; no complete create reached the upstream
        for mp in (False, True):
            st, _, b = create(gw, "alice", "veo2", as_multipart=mp)
            assert st == 403, (st, b)
            e = gwtest.error_body(b)
            assert (e["code"], e["param"], e["type"]) == ("model_not_allowed", "model",
                                                          "invalid_request_error"), e
        assert len(stub.jobs()) == made
        # nothing complete with the refused model reached the upstream
        assert not [r for r in stub.requests() if r["method"] == "POST" and r["complete"] and
                    "veo2" in json.dumps([r.get("json"), r.get("parts")])]
        # a key without an allowlist may use every model
        assert create(gw, "bob", "veo2")[0] == 200
        lines = gw.wait_log(lambda line: line.get("status") == 403, n=2)
        assert len(lines) == 2 and all(line["key"] == "alice" for line in lines), lines
        gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_expired_key_is_unknown():
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("old", "new"),
            key_options={"old": {"expires": "2020-01-01"},
                         "new": {"expires": "2999-12-31"}}) as gw:
        st, _, b = gw.request("GET", "/v1/videos?limit=1", key="old")
        assert st == 401, (st, b)
        e = gwtest.error_body(b)
        assert e["code"] == "invalid_api_key" and "expire" not in e["message"].lower(), e
        assert gw.request("GET", "/v1/videos?limit=1", key="new")[0] == 200
        assert len([r for r in stub.requests() if r["path"] == "/v1/videos"]) == 1
        gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def creates(stub):
    """Creates the stub received whole (jobs made)."""
    return [r for r in stub.requests() if r["method"] == "POST" and r["complete"]
            and r["path"] == "/v1/videos"]


def test_rpm_burst_exact_across_loops():
    """32 clients at once against rpm 6 (burst 0 = the whole minute at once), two
    event loops: exactly 6 get through, the rest get a 429 the SDKs can act on."""
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("alice", "bob"), threads=2,
            key_options={"alice": {"rpm": 6}}) as gw:
        results = gwtest.in_parallel(lambda: create(gw, "alice", "veo3.1"), [()] * 32, 30)
        ok = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] == 429]
        assert len(results) == 32 and len(ok) == 6 and len(refused) == 26, \
            sorted(r[0] for r in results)
        for st, h, b in ok:
            assert h["x-ratelimit-limit-requests"] == "6", h
            assert 0 <= int(h["x-ratelimit-remaining-requests"]) < 6, h
            assert h["x-ratelimit-reset-requests"].endswith("s"), h
        for st, h, b in refused:
            e = gwtest.error_body(b)
            assert (e["type"], e["code"]) == ("rate_limit_error", "rate_limit_exceeded"), e
            assert int(h["retry-after"]) >= 1 and int(h["retry-after-ms"]) >= 1, h
            assert h["x-ratelimit-remaining-requests"] == "0", h
        assert len(creates(stub)) == 6
        # another key is not affected
        st, h, _ = create(gw, "bob", "veo3.1")
        assert st == 200 and "x-ratelimit-limit-requests" not in h, h
        # follow-ups do not count
        assert gw.request("GET", "/v1/videos?limit=1", key="alice")[0] == 200
        gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_concurrency_slot():
    """concurrency 1: while one create uploads, a second is refused at once, and its
    body never reaches the upstream; the slot comes back when the first ends."""
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("alice",), key_options={"alice": {"concurrency": 1}}) as gw:
        body, ct = gwtest.multipart([("model", "veo3.1"), ("prompt", "p"), ("seconds", "8"),
                                     ("size", "16x9"),
                                     ("input_reference", "f.png", b"x" * 200000, "image/png")])
        head = ("POST /v1/videos HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
                "Content-Type: %s\r\nContent-Length: %d\r\n\r\n"
                % (gw.keys["alice"], ct, len(body))).encode()
        with gwtest.RawConn(gw.port) as slow:
            slow.send(head + body[:1000])          # holds the slot
            stub.wait_bytes(500)
            st, h, b = create(gw, "alice", "veo3.1", as_multipart=True)
            assert st == 429, (st, b)
            e = gwtest.error_body(b)
            assert e["code"] == "rate_limit_exceeded" and "at once" in e["message"], e
            assert int(h["retry-after"]) >= 1, h
            slow.send(body[1000:])
            st, _, _, _ = gwtest.parse_response(slow.read_response(10))
            assert st == 200
        # the refused create's body never went upstream; the slot is free again
        assert len(creates(stub)) == 1
        assert create(gw, "alice", "veo3.1")[0] == 200
        gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_concurrency_slot_free_once_answered():
    """concurrency 1, creates back to back from two connections (two event loops): each
    answer frees the slot before the client can read it, so the next create, sent the
    moment the answer is read, is never refused as still in flight."""
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("alice",), key_options={"alice": {"concurrency": 1}}) as gw:
        fields = {"model": "veo3.1", "prompt": "p", "seconds": "4", "size": "16x9"}
        body = json.dumps(fields).encode()
        req = ("POST /v1/videos HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
               % (gw.keys["alice"], len(body))).encode() + body
        conns = [gwtest.RawConn(gw.port) for _ in range(4)]
        try:
            for i in range(200):
                c = conns[i % len(conns)]
                c.send(req)
                st, _, b, _ = gwtest.parse_response(c.read_response(10))
                assert st == 200, (i, st, b)
        finally:
            for c in conns:
                c.close()
        assert len(creates(stub)) == 200
        gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_daily_seconds():
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("alice",), key_options={"alice": {"daily_seconds": 20}}) as gw:
        assert create(gw, "alice", "veo3.1")[0] == 200                   # 8 of 20
        # an upstream error makes no job: its seconds are given back
        stub.fault("500", count=1)
        assert create(gw, "alice", "veo3.1")[0] == 500
        assert create(gw, "alice", "veo3.1")[0] == 200                   # 16 of 20
        made = len(stub.jobs())
        # 16 + 8 > 20: refused before the upstream sees a complete body
        for mp in (False, True):
            st, h, b = create(gw, "alice", "veo3.1", as_multipart=mp)
            assert st == 429, (st, b)
            e = gwtest.error_body(b)
            assert (e["type"], e["code"], e["param"]) == ("rate_limit_error",
                                                          "insufficient_quota", "seconds"), e
            assert 1 <= int(h["retry-after"]) <= 86400, h
        assert len(stub.jobs()) == made
        # 4 seconds still fit
        body = json.dumps({"model": "veo3.1", "prompt": "p", "seconds": "4",
                           "size": "16x9"}).encode()
        assert gw.request("POST", "/v1/videos", key="alice", headers=JSON, body=body)[0] == 200
        # absurd values are a 400, not a quota decision
        for bad in ("-1", "0", "8.5", "1e9", "99999"):
            body = json.dumps({"model": "veo3", "prompt": "p", "seconds": bad}).encode()
            st, _, b = gw.request("POST", "/v1/videos", key="alice", headers=JSON, body=body)
            assert st == 400 and gwtest.error_body(b)["param"] == "seconds", (bad, st, b)
        gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_remix_is_charged_its_seconds():
    """A remix reserves nothing up front (the provider decides its length) but is
    charged the seconds of the job it made, as the ledger counts them: with 20 a
    day, an 8 s create and its 8 s remix leave 4, not 12."""
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("alice",), key_options={"alice": {"daily_seconds": 20}}) as gw:
        st, _, b = create(gw, "alice", "veo3.1")                           # 8 of 20
        assert st == 200, b
        vid = json.loads(b)["id"]
        st, _, b = gw.request("POST", "/v1/videos/%s/remix" % vid, key="alice", headers=JSON,
                              body=b'{"prompt":"again"}')
        assert st == 200 and json.loads(b)["seconds"] == "8", b           # 16 of 20
        body = json.dumps({"model": "veo3.1", "prompt": "p", "seconds": "8",
                           "size": "16x9"}).encode()
        st, _, b = gw.request("POST", "/v1/videos", key="alice", headers=JSON, body=body)
        assert st == 429 and gwtest.error_body(b)["code"] == "insufficient_quota", (st, b)
        body = json.dumps({"model": "veo3.1", "prompt": "p", "seconds": "4",
                           "size": "16x9"}).encode()
        assert gw.request("POST", "/v1/videos", key="alice", headers=JSON, body=body)[0] == 200
        gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_upstream_rpm_queues_in_order():
    """upstream_rpm 60 with upstream_queue 2s, four creates at once from two keys: they
    reach the upstream one a second, in order; the one that would wait longer than the
    queue gets a 429 at once; the provider never sees more than its rate."""
    import time
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("alice", "bob"), threads=2,
            extra={"limits": {"upstream_rpm": 60, "upstream_queue": "2s"}}) as gw:
        def one(i):
            t0 = time.monotonic()
            return create(gw, "alice" if i % 2 else "bob", "veo3.1") + (time.monotonic() - t0,)
        results = gwtest.in_parallel(one, [(i,) for i in range(4)], 30)
        statuses = sorted(r[0] for r in results)
        assert statuses == [200, 200, 200, 429], results
        refused = [r for r in results if r[0] == 429][0]
        assert refused[3] < 1.0, refused                 # refused at once, not after a wait
        e = gwtest.error_body(refused[2])
        assert e["code"] == "rate_limit_exceeded" and "all keys" in e["message"], e
        assert int(refused[1]["retry-after"]) >= 1
        starts = sorted(r["t_start"] for r in creates(stub))
        assert len(starts) == 3
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert all(g >= 0.9 for g in gaps), gaps
        gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_refused_while_waiting_for_upstream_slot():
    """A create refused by its body (seconds the catalog does not list) while it waits for
    its upstream_rpm slot, answered before the client finished sending: when the slot
    comes, the exchange is over (it crashed the gateway: "bad transition DONE ->
    CONNECT"), and the slot goes back."""
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, threads=1, extra={"limits": {"upstream_rpm": 120}}) as gw:
        assert create(gw, "default", "veo3.1")[0] == 200          # takes the slot now
        ms = gwtest.multipart_stream([("model", "veo3.1"), ("seconds", "7"), ("prompt", "p"),
                                      ("input_reference", "a.bin", 1024 * 1024, None)])
        data = b"".join(bytes(c) for c in ms)
        with gwtest.RawConn(gw.port, timeout=30) as c:
            c.send(("POST /v1/videos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                    "Content-Type: %s\r\nContent-Length: %d\r\n\r\n"
                    % (gw.keys["default"], ms.content_type, ms.length)).encode() + data[:4096])
            st, _, body, _ = gwtest.parse_response(c.read_response(10))
            assert st == 400 and gwtest.error_body(body)["param"] == "seconds", body
            # the refused create's slot (0.5 s on) passes while its connection lingers:
            # a create after it waits past that slot
            assert create(gw, "default", "veo3.1")[0] == 200
        assert gw.request("GET", "/healthz")[0] == 200
        assert len(creates(stub)) == 2
        gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


if __name__ == "__main__":
    gwtest.main(globals())
