"""Bodies stream through the gateway: never whole in memory, part one upstream before
part two is sent, 200 MB uploads in bounded memory, a client that goes away cuts the
upstream request (and that connection is not reused), and a slow upstream slows the
client instead of filling the gateway's memory."""

import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

MiB = 1024 * 1024
BASE = [("prompt", "a cow dancing"), ("seconds", "8"), ("size", "16x9")]
# ASan keeps freed memory in a 256 MB quarantine by default, which would make VmHWM
# measure ASan rather than the gateway; a small one keeps the bound meaningful there
# (the options are ignored by a build without sanitizers)
ASAN_SMALL = {"ASAN_OPTIONS": ":".join(filter(None, [
    os.environ.get("ASAN_OPTIONS", ""), "quarantine_size_mb=4",
    "thread_local_quarantine_size_kb=256"]))}


def stub():
    """The file's shared stub, reset for each test."""
    return gwtest.shared_stub(job_seconds=100000)


def gateway(**kw):
    """`with gateway(**kw) as (s, gw):` a fresh gateway (small ASan quarantine) on the
    shared stub; stopped cleanly: no sanitizer report, exit code 0."""
    kw.setdefault("env", ASAN_SMALL)
    return gwtest.checked_gateway(stub(), **kw)


def rewritten(fields):
    return [("model", "veo_3_1") if f == ("model", "veo3.1") else f for f in fields]


def hdr(rec, name):
    return [v for k, v in rec["headers"] if k.lower() == name.lower()]


def head(gw, ms, chunked=False):
    return ("POST /v1/videos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: %s\r\n%s\r\n"
            % (gw.keys["default"], ms.content_type,
               "Transfer-Encoding: chunked\r\n" if chunked
               else "Content-Length: %d\r\n" % ms.length)).encode()


def body_bytes(ms):
    return b"".join(bytes(c) for c in ms)


def assert_created(s, st, h, resp, ms):
    """200, and the stub received the rewritten body whole (file hash intact)."""
    assert st == 200, (st, resp[:300])
    want = gwtest.multipart_stream(rewritten(ms.fields), boundary=ms.boundary)
    r = [r for r in s.requests() if hdr(r, "X-Request-Id") == [h["x-request-id"]]][0]
    assert r["complete"] and r["status"] == 200, r
    assert (r["body_size"], r["body_sha256"]) == (want.length, want.sha256), r["body_size"]
    assert [p["sha256"] for p in r["parts"]] == want.part_sha256
    assert [p["value"] for p in r["parts"] if p["name"] == "model"] == ["veo_3_1"]
    return r


# ---------------------------------------------------------------------------- the proof

def test_streaming_proof():
    # part one goes upstream before part two is even sent: the gateway does not
    # buffer the body.  Model first (exact length), then model after a file larger
    # than lookahead (chunked fallback: the gateway must not wait for the model).
    # A chunked client body (the Node SDK's streamed upload) streams as well.
    cases = [([("model", "veo3.1")] + BASE + [("input_reference", "a.bin", 4 * MiB, None)],
              False, "content-length"),
             (BASE + [("input_reference", "b.bin", 4 * MiB, None), ("model", "veo3.1")],
              False, "chunked"),
             ([("model", "veo3.1")] + BASE + [("input_reference", "c.bin", 4 * MiB, None)],
              True, "chunked")]
    with gateway() as (s, gw):
        for fields, chunked, framing in cases:
            s.reset()
            ms = gwtest.multipart_stream(fields)
            data = body_bytes(ms)
            one = 2 * MiB
            with gwtest.RawConn(gw.port, timeout=30) as c:
                c.send(head(gw, ms, chunked) + (b"%x\r\n%s\r\n" % (one, data[:one]) if chunked
                                                else data[:one]))
                # the gateway may hold back a possible delimiter's bytes, no more
                rec = s.wait_bytes(one - 200, timeout=20)
                t_two = time.monotonic()
                assert rec["framing"] == framing, rec["framing"]
                assert not rec["complete"] and rec["body_size"] <= one + 1, rec["body_size"]
                c.send(b"".join(gwtest.chunked([data[one:]])) if chunked else data[one:])
                st, h, resp, _ = gwtest.parse_response(c.read_response(30))
            r = assert_created(s, st, h, resp, ms)
            # wait_bytes above is the proof: the stub held part one (less 200
            # bytes) before part two left the client. The stub's own timeline
            # agrees: its first read came before part two left. (Not its last
            # entry before then: the stub merges reads that come within
            # CHUNK_MERGE_S into one entry stamped with the latest, so one that
            # began before t_two can carry a later stamp.)
            assert r["chunks"] and r["chunks"][0][0] < t_two, (framing, r["chunks"][:2], t_two)


# ---------------------------------------------------------------------------- big uploads

def upload_200mb(fields):
    ms = gwtest.multipart_stream(fields, chunk_size=MiB)
    with gateway() as (s, gw):
        st, h, resp = gw.request("POST", "/v1/videos", headers=ms.headers(), body=ms,
                                 timeout=120)
        r = assert_created(s, st, h, resp, ms)
        hwm = gw.vmhwm_kib()
        assert hwm < 64 * 1024, "VmHWM %d KiB after a 200 MB upload" % hwm
        return r, ms


def test_200mb_upload_model_after_file():
    r, ms = upload_200mb([("input_reference", "big.mp4", 200 * MiB, "video/mp4"),
                          ("model", "veo3.1")] + BASE)
    assert (r["framing"], r["content_length"]) == ("chunked", None)   # the fallback
    assert r["parts"][0]["sha256"] == gwtest.file_sha256("big.mp4", 200 * MiB)
    assert r["parts"][0]["size"] == 200 * MiB


def test_200mb_upload_model_first():
    r, ms = upload_200mb([("model", "veo3.1")] + BASE +
                         [("input_reference", "big.png", 200 * MiB, "image/png")])
    assert (r["framing"], r["content_length"]) == ("content-length", ms.length + 1)
    assert r["parts"][4]["sha256"] == gwtest.file_sha256("big.png", 200 * MiB)


def test_100mb_chunked_upload_spooled():
    # fallback = spool: the body goes to an unlinked file, not to memory, and then
    # upstream with its exact length
    spool = tempfile.mkdtemp(prefix="gwtest-spool-")
    try:
        ms = gwtest.multipart_stream([("input_reference", "s.bin", 100 * MiB, None),
                                      ("model", "veo3.1")] + BASE, chunk_size=MiB)
        with gateway(fallback="spool", spool_dir=spool) as (s, gw):
            st, h, resp = gw.request("POST", "/v1/videos", headers=ms.headers(chunked=True),
                                     body=ms, timeout=120)
            r = assert_created(s, st, h, resp, ms)
            assert (r["framing"], r["content_length"]) == ("content-length", ms.length + 1)
            hwm = gw.vmhwm_kib()
            assert hwm < 64 * 1024, "VmHWM %d KiB after a 100 MB spooled upload" % hwm
            assert os.listdir(spool) == []
    finally:
        shutil.rmtree(spool, ignore_errors=True)


# ---------------------------------------------------------------------------- disconnects

def test_client_disconnect_mid_upload():
    spool = tempfile.mkdtemp(prefix="gwtest-spool-")
    try:
        # one event loop, one upstream pool: a reused connection would show
        for fallback in ("chunked", "spool"):
            with gateway(threads=1, fallback=fallback, spool_dir=spool) as (s, gw):
                disconnect_cases(s, gw, fallback)
                assert os.listdir(spool) == []
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def disconnect_cases(s, gw, fallback):
    small, ctype = gwtest.multipart([("model", "veo3.1")] + BASE)

    def create():
        st, h, resp = gw.request("POST", "/v1/videos", headers={"Content-Type": ctype},
                                 body=small)
        assert st == 200, (st, resp)
        return [r for r in s.requests() if hdr(r, "X-Request-Id") == [h["x-request-id"]]][0]

    # keep-alive works, so "not reused" below means something
    a, b = create(), create()
    assert a["conn"] == b["conn"], (a["conn"], b["conn"])
    cases = [[("model", "veo3.1")] + BASE + [("input_reference", "a.bin", 20 * MiB, None)],
             BASE + [("input_reference", "b.bin", 20 * MiB, None), ("model", "veo3.1")]]
    for i, fields in enumerate(cases):
        ms = gwtest.multipart_stream(fields)
        data = body_bytes(ms)[:3 * MiB]
        s.reset()           # records and jobs: wait_bytes must see this request only
        with gwtest.RawConn(gw.port, timeout=30) as c:
            c.send(head(gw, ms))
            c.send(data)
            if fallback == "spool" and fields[0][0] != "model":
                # spooling: nothing goes upstream before the body is complete; wait
                # until the gateway has read what was sent
                gwtest.wait_for(lambda: gw_read(gw) >= len(data), 20,
                                what="the gateway to read the upload")
            else:
                s.wait_bytes(2 * MiB, timeout=20)
        # the client is gone: the upstream request must end incomplete
        if fallback == "spool" and fields[0][0] != "model":
            new = []
        else:
            def ended():
                recs = s.requests()
                return recs and recs[0]["t_end"] is not None and recs
            new = gwtest.wait_for(ended, 20, what="the upstream request to be cut")
            cut = new[0]
            assert not cut["complete"] and cut["status"] is None, cut
            assert cut["body_size"] < ms.length, cut["body_size"]
        nxt = create()
        assert all(nxt["conn"] != r["conn"] for r in new), (nxt["conn"], new[0]["conn"])
        assert len(s.jobs()) == 1           # the cut request made none
        acc = gwtest.wait_for(lambda: [x for x in gw.log_json() if x.get("route") == "create"
                                       and x.get("completed") is False][i:], 15,
                              what="the access log of the cut request")
        assert acc[0]["bytes_in"] >= 2 * MiB and acc[0]["status"] != 200, acc[0]


def gw_read(gw):
    """Bytes the gateway process has read from its sockets and files (/proc/PID/io)."""
    with open("/proc/%d/io" % gw.pid) as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------- backpressure

def test_backpressure_slow_upstream():
    # the stub reads at 25 MB/s: the gateway must slow the client down, not queue
    # the difference in memory
    size, bps = 50 * MiB, 25 * 1000 * 1000
    ms = gwtest.multipart_stream([("model", "veo3.1")] + BASE +
                                 [("input_reference", "slow.bin", size, None)])
    with gateway() as (s, gw):
        base = gw.vmhwm_kib()
        s.fault("slow", read_bps=bps)
        sent = [0]

        def body():
            for c in ms:
                sent[0] += len(c)
                yield c
        result = {}

        def run():
            result["r"] = gw.request("POST", "/v1/videos", headers=ms.headers(), body=body(),
                                     timeout=120)
        t0 = time.monotonic()
        th = threading.Thread(target=run)
        th.start()
        # a fifth of the way, the client has sent at most what the stub read plus what
        # the buffers on the way hold (socket buffers and the gateway's bounded queue),
        # far from the whole body an unthrottled client would have sent by then
        rec = s.wait_bytes(size // 5, timeout=30)
        ahead = sent[0] - rec["body_size"]
        th.join(120)
        assert not th.is_alive()
        elapsed = time.monotonic() - t0
        assert_created(s, *result["r"], ms)
        r = s.last()
        assert r["fault"] == "slow" and elapsed >= 0.8 * size / bps, elapsed
        assert ahead < 24 * MiB, "client ran %d bytes ahead of the upstream" % ahead
        hwm = gw.vmhwm_kib()
        assert hwm < 64 * 1024, hwm
        assert hwm - base < 16 * 1024, "VmHWM grew by %d KiB (from %d)" % (hwm - base, base)


if __name__ == "__main__":
    gwtest.main(globals())    # also stops the shared stub
