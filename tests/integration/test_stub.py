"""Tests of the stub upstream itself (no gateway): the integration tests lean on
its recording and faults, so they must be right."""

import hashlib
import json
import os
import re
import socket
import ssl
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402


def stub():
    """The file's shared stub, reset for each test."""
    return gwtest.shared_stub()


JSON = {"Content-Type": "application/json"}
FIELDS = [("model", "veo_3_1"), ("prompt", "让牛快乐的跳科目三"), ("seconds", "8"),
          ("size", "16x9")]
ID_RE = re.compile(r"^video_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def create_json(s, **over):
    d = dict(FIELDS)
    d.update(over)
    st, _, body = s.api("POST", "/v1/videos", json.dumps(d).encode(), JSON)
    assert st == 200, (st, body)
    return json.loads(body)


def raw_post(path, body, key, extra_headers=""):
    return ("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s"
            "Content-Length: %d\r\n\r\n" % (path, key, extra_headers, len(body))).encode() + body


# ---------------------------------------------------------------------------- create

def test_create_multipart():
    s = stub()
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(5000) + b"\r\n--not-the-boundary\r\n"
    body, ctype = gwtest.multipart(FIELDS + [("input_reference", "cow.png", png, "image/png"),
                                             ("watermark", "false")])
    st, h, resp = s.api("POST", "/v1/videos", body, {"Content-Type": ctype,
                                                     "X-Mixed-CASE": "kept"})
    assert st == 200, resp
    assert h["content-type"] == "application/json"
    job = json.loads(resp)
    assert list(job) == ["id", "object", "model", "status", "progress", "created_at",
                         "seconds", "size"], job
    assert ID_RE.match(job["id"]), job["id"]
    assert (job["object"], job["model"], job["status"], job["progress"]) == \
        ("video", "veo_3_1", "queued", 0)
    assert (job["seconds"], job["size"]) == ("8", "16x9")
    assert abs(job["created_at"] - time.time()) < 5

    r = s.last()
    assert (r["method"], r["path"], r["status"], r["framing"]) == \
        ("POST", "/v1/videos", 200, "content-length")
    assert r["complete"] and r["content_length"] == len(body) == r["body_size"]
    assert r["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert ["X-Mixed-CASE", "kept"] in r["headers"]
    assert ["Authorization", "Bearer " + s.key] in r["headers"]
    assert [p["name"] for p in r["parts"]] == ["model", "prompt", "seconds", "size",
                                               "input_reference", "watermark"]
    assert r["parts"][1]["value"] == "让牛快乐的跳科目三"
    f = r["parts"][4]
    assert (f["filename"], f["content_type"], f["size"], f["value"]) == \
        ("cow.png", "image/png", len(png), None)
    assert f["sha256"] == hashlib.sha256(png).hexdigest()
    assert r["multipart"]["error"] is None and r["json"] is None
    assert r["chunks"] and r["chunks"][-1][1] == len(body)
    assert r["t_start"] <= r["t_body_end"] <= r["t_end"]


def test_create_json():
    s = stub()
    job = create_json(s, seconds=4)        # a number is accepted and echoed as a string
    assert job["seconds"] == "4" and job["status"] == "queued"
    r = s.last()
    assert r["json"]["prompt"] == "让牛快乐的跳科目三" and r["parts"] == []
    assert r["multipart"] is None


def test_missing_fields_400():
    s = stub()
    for name in ("model", "prompt", "seconds", "size"):
        fields = [f for f in FIELDS if f[0] != name]
        body, ctype = gwtest.multipart(fields)
        st, _, resp = s.api("POST", "/v1/videos", body, {"Content-Type": ctype})
        assert st == 400, (name, st)
        e = gwtest.error_body(resp)
        assert e["param"] == name and e["type"] == "invalid_request_error", e
    st, _, resp = s.api("POST", "/v1/videos", b'{"model": "x"', JSON)
    assert st == 400 and gwtest.error_body(resp)["code"] == "invalid_json"
    assert len(s.requests()) == 5


def test_malformed_multipart_400():
    s = stub()
    body, ctype = gwtest.multipart(FIELDS)
    cases = [body[:-8],                                   # no closing boundary
             body.replace(b"Content-Disposition: form-data; ", b"Content-Disposition: ", 1),
             body.replace(b"\r\n\r\n", b"\r\n", 1)]       # part head never ends
    for b in cases:
        st, _, resp = s.api("POST", "/v1/videos", b, {"Content-Type": ctype})
        assert st == 400, (st, resp)
        assert gwtest.error_body(resp)["code"] == "invalid_multipart"
    recs = s.requests()
    assert all(r["multipart"]["error"] for r in recs), [r["multipart"] for r in recs]


def test_multipart_parser_any_split():
    # the stub's parser fed whole, one byte at a time, and split at every offset
    tricky = b"\r\n--gwtest-\r--gwtest-b\r\n\r\n--gwtest-X" + bytes(range(256)) + b"\r\n--gwtest-"
    body, ctype = gwtest.multipart([("model", "veo3"), ("f", 'a"b.png', tricky, "image/png"),
                                    ("empty", ""), ("prompt", "\r\n")], boundary="gwtest-b")
    body = b"preamble\r\n" + body + b"epilogue"

    def parse(pieces):
        rec = {"parts": []}
        sink = gwtest.stub_upstream.MultipartSink(rec, "gwtest-b")
        for p in pieces:
            sink.feed(p)
        sink.finish()
        return rec
    want = parse([body])
    assert want["multipart"] == {"boundary": "gwtest-b", "preamble": 8, "epilogue": 8,
                                 "error": None}
    got = [(p["name"], p["filename"], p["size"], p["value"]) for p in want["parts"]]
    assert got == [("model", None, 4, "veo3"), ("f", 'a"b.png', len(tricky), None),
                   ("empty", None, 0, ""), ("prompt", None, 2, "\r\n")], got
    assert want["parts"][1]["sha256"] == hashlib.sha256(tricky).hexdigest()
    assert parse([body[i:i + 1] for i in range(len(body))]) == want
    for i in range(len(body) + 1):
        assert parse([body[:i], body[i:]]) == want, i


def test_auth_401():
    s = stub()
    body, ctype = gwtest.multipart(FIELDS)
    for hdr in ({"Authorization": "Bearer wrong"}, {}, {"Authorization": s.key}):
        hdr["Content-Type"] = ctype
        st, _, resp = s.http("POST", "/v1/videos", body, hdr)
        assert st == 401, st
        e = gwtest.error_body(resp)
        assert e["code"] == "invalid_api_key" and s.key not in resp.decode()
    st, _, resp = s.http("POST", "/v1/videos", b"garbage", {"Content-Type": ctype})
    assert st == 401                              # auth is checked before the body
    recs = s.requests()
    assert [r["status"] for r in recs] == [401, 401, 401, 401]
    assert recs[0]["complete"] and recs[0]["parts"][0]["value"] == "veo_3_1"
    assert s.jobs() == []


# ---------------------------------------------------------------------------- framing

def test_chunked_body_recorded():
    s = stub()
    body, ctype = gwtest.multipart(FIELDS + [("input_reference", "a.png", os.urandom(70000),
                                              "image/png")])
    pieces = [body[i:i + 999] for i in range(0, len(body), 999)]
    head = ("POST /v1/videos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n" % (s.key, ctype)).encode()
    resp = gwtest.raw(s.port, [head] + list(gwtest.chunked(pieces, ext=";x=\"y\"")))
    st, _, b, _ = gwtest.parse_response(resp)
    assert st == 200, resp[:300]
    r = s.last()
    assert r["framing"] == "chunked" and r["content_length"] is None
    assert r["wire_chunks"] == len(pieces) and r["chunk_extensions"][0] == 'x="y"'
    assert r["body_size"] == len(body) and r["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert r["parts"][4]["size"] == 70000
    # http.client chunks an iterable body by itself
    ms = gwtest.multipart_stream(FIELDS + [("input_reference", "g.bin", 300000, None)])
    st, _, _ = s.api("POST", "/v1/videos", ms, ms.headers(chunked=True))
    r = s.last()
    assert st == 200 and r["framing"] == "chunked"
    assert r["parts"][4]["sha256"] == ms.part_sha256[4] == gwtest.file_sha256("g.bin", 300000)
    assert r["parts"][4]["content_type"] is None


def test_expect_100_and_keepalive():
    s = stub()
    body = json.dumps(dict(FIELDS)).encode()
    with gwtest.RawConn(s.port) as c:
        c.send(("POST /v1/videos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Content-Type: application/json\r\nExpect: 100-continue\r\n"
                "Content-Length: %d\r\n\r\n" % (s.key, len(body))).encode())
        assert c.read_head().startswith(b"HTTP/1.1 100 Continue\r\n")
        c.send(body)
        st, _, b1, _ = gwtest.parse_response(c.read_response())
        assert st == 200
        vid = json.loads(b1)["id"]
        c.send(("GET /v1/videos/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                % (vid, s.key)).encode())
        st, _, b2, _ = gwtest.parse_response(c.read_response())
        assert st == 200 and json.loads(b2)["id"] == vid
        r1, r2 = s.requests()
        assert r1["expect_100"] and r1["conn"] == r2["conn"]
        assert (r1["conn_request"], r2["conn_request"]) == (1, 2)
        assert s.close_idle() == 1
        assert c.at_eof()


def test_bad_framing_400():
    s = stub()
    resp = gwtest.raw(s.port, b"POST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 400 "), resp
    resp = gwtest.raw(s.port, b"POST /v1/videos HTTP/1.1\r\nHost: x\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert resp.startswith(b"HTTP/1.1 400 "), resp
    resp = gwtest.raw(s.port, b"GARBAGE\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 400 "), resp
    recs = s.requests()
    assert [r["status"] for r in recs] == [400, 400, 400]
    assert recs[2]["method"] is None and recs[2]["raw_head"] == "GARBAGE\r\n\r\n"


# ---------------------------------------------------------------------------- job life

def test_job_status_advances():
    s = stub()
    s.config(job_seconds=0.8)
    vid = create_json(s)["id"]
    seen = []

    def done():
        st, _, b = s.api("GET", "/v1/videos/" + vid)
        assert st == 200
        j = json.loads(b)
        seen.append((j["status"], j["progress"]))
        return j["status"] == "completed"
    gwtest.wait_for(done, 5, 0.03, "job completion")
    statuses = [x[0] for x in seen]
    assert statuses[0] == "queued" and "in_progress" in statuses, seen
    order = {"queued": 0, "in_progress": 1, "completed": 2}
    assert [order[x] for x in statuses] == sorted(order[x] for x in statuses), seen
    progress = [x[1] for x in seen]
    assert progress == sorted(progress) and progress[-1] == 100, seen
    assert any(0 < p < 100 for p in progress), seen
    st, _, b = s.api("GET", "/v1/videos/video_nope")
    assert st == 404 and gwtest.error_body(b)["type"] == "invalid_request_error"
    s.set_job(vid, status="failed")
    st, _, b = s.api("GET", "/v1/videos/" + vid)
    assert json.loads(b)["status"] == "failed" and "error" in json.loads(b)


def test_content_and_variants():
    s = stub()
    vid = create_json(s)["id"]
    st, h, b = s.api("GET", "/v1/videos/%s/content" % vid)
    assert st == 200 and h["content-type"] == "video/mp4"
    assert int(h["content-length"]) == len(b) == 1024 * 1024
    assert hashlib.sha256(b).hexdigest() == gwtest.content_sha256(vid, len(b))
    s.config(content_size=300001)
    for variant, ctype in (("thumbnail", "image/webp"), ("spritesheet", "image/jpeg"),
                           ("video", "video/mp4")):
        st, h, n, sha = gwtest.download(s.port, "/v1/videos/%s/content?variant=%s"
                                        % (vid, variant), headers={"Authorization":
                                                                   "Bearer " + s.key})
        assert (st, h["content-type"], n) == (200, ctype, 300001), (variant, st, h)
        assert sha == gwtest.content_sha256(vid, n, variant)
        assert s.last()["variant"] == variant and s.last()["sent"] == 300001
    st, _, b = s.api("GET", "/v1/videos/%s/content?variant=gif" % vid)
    assert st == 400 and gwtest.error_body(b)["param"] == "variant"
    st, _, b = s.api("GET", "/v1/videos/video_nope/content")
    assert st == 404


def test_content_backpressure():
    s = stub()
    size = 256 * 1024 * 1024
    s.config(content_size=size)
    vid = create_json(s)["id"]
    conn, resp = gwtest.open_request(s.port, "GET", "/v1/videos/%s/content" % vid,
                                     headers={"Authorization": "Bearer " + s.key})
    try:
        samples = []

        def stalled():                       # 'sent' stops growing while we do not read
            samples.append(s.last()["sent"])
            return len(samples) >= 3 and samples[-1] == samples[-3]
        gwtest.wait_for(stalled, 10, 0.05, "the stub to stop writing")
        assert samples[-1] < 64 * 1024 * 1024, samples
        h = hashlib.sha256()
        n = 0
        while True:
            d = resp.read(1 << 20)
            if not d:
                break
            n += len(d)
            h.update(d)
        assert n == size and h.hexdigest() == gwtest.content_sha256(vid, size)
    finally:
        conn.close()
    assert s.last()["sent"] == size


def test_list_delete_remix():
    s = stub()
    ids = [create_json(s, prompt="p%d" % i)["id"] for i in range(3)]
    st, _, b = s.api("GET", "/v1/videos?limit=2&order=asc")
    page = json.loads(b)
    assert st == 200 and page["object"] == "list"
    assert [j["id"] for j in page["data"]] == ids[:2] and page["has_more"] is True
    assert (page["first_id"], page["last_id"]) == (ids[0], ids[1])
    st, _, b = s.api("GET", "/v1/videos?limit=2&order=asc&after=" + ids[1])
    page = json.loads(b)
    assert [j["id"] for j in page["data"]] == ids[2:] and page["has_more"] is False
    st, _, b = s.api("GET", "/v1/videos")
    assert [j["id"] for j in json.loads(b)["data"]] == ids[::-1]
    assert s.last()["query"] == ""
    st, _, b = s.api("GET", "/v1/videos?limit=0")
    assert st == 400 and gwtest.error_body(b)["param"] == "limit"

    st, _, b = s.api("DELETE", "/v1/videos/" + ids[0])
    assert st == 200 and json.loads(b) == {"id": ids[0], "object": "video.deleted",
                                           "deleted": True}
    assert s.api("GET", "/v1/videos/" + ids[0])[0] == 404
    assert s.api("DELETE", "/v1/videos/" + ids[0])[0] == 404

    orig = create_json(s, model="veo3.1-fast")
    st, _, b = s.api("POST", "/v1/videos/%s/remix" % orig["id"],
                     json.dumps({"prompt": "again"}).encode(), JSON)
    rj = json.loads(b)
    assert st == 200 and rj["model"] == "veo3.1-fast" and rj["status"] == "queued"
    assert rj["id"] != orig["id"] and rj["remixed_from_video_id"] == orig["id"]
    assert s.last()["json"] == {"prompt": "again"}
    st, _, b = s.api("POST", "/v1/videos/%s/remix" % orig["id"], b"{}", JSON)
    assert st == 400 and gwtest.error_body(b)["param"] == "prompt"
    assert s.api("POST", "/v1/videos/video_nope/remix", b'{"prompt":"x"}', JSON)[0] == 404


def test_edits_extensions_characters():
    """issue 9: the routes the gateway carries for videos.edit/extend/createCharacter/
    getCharacter, with their errors."""
    s = stub()
    orig = create_json(s, model="veo3.1-fast")
    mp = gwtest.multipart([("prompt", "blue"), ("video[id]", orig["id"])])
    st, _, b = s.api("POST", "/v1/videos/edits", mp[0], {"Content-Type": mp[1]})
    e = json.loads(b)
    assert st == 200 and e["model"] == "veo3.1-fast" and e["seconds"] == orig["seconds"], e
    st, _, b = s.api("POST", "/v1/videos/extensions",
                     json.dumps({"prompt": "on", "seconds": "4",
                                 "video": {"id": orig["id"]}}).encode(), JSON)
    x = json.loads(b)
    assert st == 200 and x["seconds"] == str(int(orig["seconds"]) + 4), x
    for body, param in (([("prompt", "p")], "video"),
                        ([("prompt", "p"), ("video[id]", orig["id"]),
                          ("video", "v.mp4", b"x", "video/mp4")], "video"),
                        ([("video[id]", orig["id"])], "prompt")):
        mp = gwtest.multipart(body)
        st, _, b = s.api("POST", "/v1/videos/edits", mp[0], {"Content-Type": mp[1]})
        assert st == 400 and gwtest.error_body(b)["param"] == param, (body, b)
    mp = gwtest.multipart([("prompt", "p"), ("seconds", "5"), ("video[id]", orig["id"])])
    st, _, b = s.api("POST", "/v1/videos/extensions", mp[0], {"Content-Type": mp[1]})
    assert st == 400 and gwtest.error_body(b)["param"] == "seconds", b
    mp = gwtest.multipart([("prompt", "p"), ("video[id]", "video_nope")])
    assert s.api("POST", "/v1/videos/edits", mp[0], {"Content-Type": mp[1]})[0] == 404

    mp = gwtest.multipart([("name", "Moo"), ("video", "cow.mp4", b"moo" * 100, "video/mp4")])
    st, _, b = s.api("POST", "/v1/videos/characters", mp[0], {"Content-Type": mp[1]})
    c = json.loads(b)
    assert st == 200 and c["name"] == "Moo" and c["id"].startswith("char_"), c
    assert s.last()["parts"][1]["size"] == 300
    st, _, b = s.api("GET", "/v1/videos/characters/" + c["id"])
    assert st == 200 and json.loads(b) == c
    assert s.api("GET", "/v1/videos/characters/char_nope")[0] == 404
    assert s.api("GET", "/v1/videos/edits")[0] == 405
    assert s.api("DELETE", "/v1/videos/characters/" + c["id"])[0] == 405


# ---------------------------------------------------------------------------- faults

def test_fault_500_429_count_and_prefix():
    s = stub()
    s.fault("500", count=2)
    assert s.api("GET", "/v1/videos")[0] == 500
    st, _, b = s.api("GET", "/v1/videos")
    assert st == 500 and gwtest.error_body(b)["type"] == "server_error"
    assert s.api("GET", "/v1/videos")[0] == 200
    s.http("GET", "/__stub/requests")             # control requests: never faulted
    s.fault("429", retry_after=7)
    st, h, b = s.api("GET", "/v1/videos")
    assert st == 429 and h["retry-after"] == "7"
    assert gwtest.error_body(b)["code"] == "rate_limit_exceeded"
    s.fault("500", path_prefix="/v1/videos/video_x")
    assert s.api("GET", "/v1/videos")[0] == 200
    assert s.api("GET", "/v1/videos/video_x")[0] == 500
    assert [r["fault"] for r in s.requests()] == ["500", "500", None, "429", None, "500"]
    # early: answered before the body is read, then the connection closes
    s.fault("429", early=True)
    head = raw_post("/v1/videos", b"", s.key).replace(b"Length: 0", b"Length: 1000")
    resp = gwtest.raw(s.port, head)              # the body is never sent
    assert resp.startswith(b"HTTP/1.1 429 ") and b"Connection: close" in resp


def test_fault_reset():
    s = stub()
    s.fault("reset")
    try:
        st = s.api("GET", "/v1/videos")[0]
        raise AssertionError("expected a connection error, got %s" % st)
    except (ConnectionError, OSError) as e:
        assert not isinstance(e, socket.timeout)
    s.fault("reset")
    with gwtest.RawConn(s.port) as c:              # a real RST, not a FIN
        c.send(raw_post("/v1/videos", b"{}", s.key))
        assert c.read_until_close() == b"" and c.reset
    r = s.last()
    assert r["fault"] == "reset" and r["status"] is None and not r["complete"]
    assert s.api("GET", "/v1/videos")[0] == 200


def test_fault_reset_mid_request():
    s = stub()
    s.fault("reset_mid_request", after_bytes=100000)
    body = b"x" * 1000000
    with gwtest.RawConn(s.port) as c:
        head = raw_post("/v1/videos", b"", s.key, "Content-Type: application/json\r\n")
        c.send(head.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)))
        sent_reset = False
        try:
            for i in range(0, len(body), 65536):
                c.send(body[i:i + 65536])
        except (BrokenPipeError, ConnectionResetError):
            sent_reset = True       # the reset may be seen by a send (under load) ...
        c.read_until_close(5)
        assert c.eof and (c.reset or sent_reset)   # ... or by the read after it
    r = s.last()
    assert r["fault"] == "reset_mid_request" and not r["complete"]
    assert 100000 <= r["body_size"] < len(body) and r["status"] is None


def test_fault_hang_and_slow():
    s = stub()
    s.fault("hang")
    with gwtest.RawConn(s.port) as c:
        c.send(raw_post("/v1/videos", b"{}", s.key))
        s.wait_requests(1)
        assert c.read_response(timeout=0.5) == b""
        assert not c.eof
        r = s.last()
        assert r["complete"] and r["status"] is None and r["fault"] == "hang"
    s.wait_requests(1, done=True)                 # ends when the client goes away
    s.fault("slow", delay_ms=300)
    t0 = time.monotonic()
    assert s.api("GET", "/v1/videos")[0] == 200
    assert time.monotonic() - t0 >= 0.3
    # slow reading of the request body, slow writing of content
    s.fault("slow", read_bps=1000000)
    t0 = time.monotonic()
    st, _, _ = s.api("POST", "/v1/videos", b"{" + b" " * 300000 + b"}", JSON)
    assert st == 400 and time.monotonic() - t0 >= 0.25
    vid = create_json(s)["id"]
    s.config(content_size=256 * 1024)
    s.fault("slow", chunk_delay_ms=60)
    t0 = time.monotonic()
    st, _, b = s.api("GET", "/v1/videos/%s/content" % vid)
    assert st == 200 and len(b) == 256 * 1024 and time.monotonic() - t0 >= 0.18


def test_fault_close_after_headers():
    s = stub()
    vid = create_json(s)["id"]
    s.fault("close_after_headers", path_prefix="/v1/videos/%s/content" % vid,
            body_bytes=1000)
    with gwtest.RawConn(s.port) as c:
        c.send("GET /v1/videos/%s/content HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s"
               "\r\n\r\n" % (vid, s.key))
        data = c.read_until_close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: 1048576" in head
    assert len(body) == 1000
    r = s.last()
    assert r["fault"] == "close_after_headers" and r["sent"] == 1000


# ---------------------------------------------------------------------------- sync

def test_wait_and_wait_bytes_streaming():
    s = stub()
    part1 = b"a" * 150000
    part2 = b"b" * 50000
    with gwtest.RawConn(s.port) as c:
        c.send(("PUT /v1/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Content-Length: %d\r\n\r\n" % (s.key, len(part1) + len(part2))).encode())
        c.send(part1)
        r = s.wait_bytes(150000)
        assert not r["complete"] and r["body_size"] == 150000 and r["status"] is None
        t_mid = time.monotonic()
        c.send(part2)
        st, _, _, _ = gwtest.parse_response(c.read_response())
        assert st == 404
    r = s.wait_requests(1, done=True)[0]
    assert r["complete"] and r["body_size"] == 200000
    late = [n for t, n in r["chunks"] if t >= t_mid]
    assert late and min(late) > 150000, r["chunks"]
    t0 = time.monotonic()
    try:
        s.wait_requests(2, timeout=0.3)
        raise AssertionError("wait_requests should have timed out")
    except AssertionError as e:
        assert "fewer than 2" in str(e)
    assert time.monotonic() - t0 < 3
    try:
        s.wait_bytes(10 ** 9, timeout=0.2)
        raise AssertionError("wait_bytes should have timed out")
    except AssertionError as e:
        assert "no request body" in str(e)


def test_big_upload_flat_memory():
    s = stub()
    size = 64 * 1024 * 1024
    ms = gwtest.multipart_stream([("model", "veo3"), ("input_reference", "big.png", size,
                                                      "image/png")] + FIELDS[1:])
    hwm0 = gwtest.proc_status_kib(s.proc.pid, "VmHWM")
    st, _, b = s.api("POST", "/v1/videos", ms, ms.headers())
    assert st == 200, b
    r = s.last()
    assert r["parts"][1]["size"] == size and r["parts"][1]["sha256"] == ms.part_sha256[1]
    assert r["parts"][2]["value"] == FIELDS[1][1]       # field after the big file
    grew = gwtest.proc_status_kib(s.proc.pid, "VmHWM") - hwm0
    assert grew < 8 * 1024, "stub VmHWM grew by %d KiB for a %d MiB upload" % (grew, size >> 20)


def test_concurrent_uploads():
    import concurrent.futures
    s = stub()

    def one(i):
        ms = gwtest.multipart_stream(FIELDS + [("input_reference", "f%d.png" % i,
                                                1000000 + i, "image/png")])
        st, _, b = s.api("POST", "/v1/videos", ms, ms.headers(chunked=i % 2 == 1))
        return st, ms.part_sha256[4]
    with concurrent.futures.ThreadPoolExecutor(32) as ex:
        results = list(ex.map(one, range(32)))
    assert all(st == 200 for st, _ in results), results
    recs = s.requests()
    assert len(recs) == 32 and len({r["conn"] for r in recs}) == 32
    by_name = {r["parts"][4]["filename"]: r["parts"][4]["sha256"] for r in recs}
    assert all(by_name["f%d.png" % i] == results[i][1] for i in range(32))


# ---------------------------------------------------------------------------- tls

def test_tls():
    d = tempfile.mkdtemp(prefix="gwtest-certs-")
    certs = gwtest.make_certs(d)
    for k in ("ca.pem", "server.pem", "server.key", "other-ca.pem"):
        assert os.path.exists(certs[k])
    with gwtest.Stub(tls=True, certs=certs) as s:
        assert s.url == "https://localhost:%d" % s.port
        job = s.create_job()
        st, _, b = s.api("GET", "/v1/videos/" + job["id"])
        assert st == 200
        r = s.last()
        assert r["tls"] and r["sni"] == "localhost"
        # by IP (SAN IP:127.0.0.1) and with ssl directly
        ctx = ssl.create_default_context(cafile=certs["ca"])
        with socket.create_connection(("127.0.0.1", s.port)) as raw_sock:
            with ctx.wrap_socket(raw_sock, server_hostname="127.0.0.1") as t:
                assert t.version().startswith("TLS")
        # an unrelated CA must not verify it
        try:
            gwtest.request(s.port, "GET", "/v1/videos", tls=True, ca=certs["other_ca"])
            raise AssertionError("verified against the wrong CA")
        except ssl.SSLCertVerificationError:
            pass
        assert "sk-upstream" not in s.log()


def test_gateway_config_text():
    # no gateway binary needed: only the generated configuration
    gw = gwtest.Gateway(upstream_url="http://127.0.0.1:9", upstream_key="k",
                        keys=("alice", "bob"), max_body="10M", response_timeout="3s",
                        extra={"server": {"log_level": "debug"}, "aliases": {"a": "b"}},
                        raw_extra="[limits]\nrpm = 5")
    gw.port = 12345
    text = gw.config_text()
    assert text.startswith("include = ") and text.count("[key ") == 2
    assert "listen = 127.0.0.1:12345\nthreads = 2\nmax_body = 10M\n" in text
    assert "key = env:GW_TEST_UPSTREAM_KEY\nresponse_timeout = 3s" in text
    assert "[models]\nunknown = reject" in text and "[aliases]\na = b" in text
    assert text.rstrip().endswith("[limits]\nrpm = 5")
    k = gw.keys["alice"]
    assert re.match(r"^sk-vgw-[A-Za-z0-9_-]{32}$", k)
    assert "sha256 = " + hashlib.sha256(k.encode()).hexdigest() in text and k not in text


FAKE_GATEWAY = r"""
import http.server, os, re, signal, sys
conf = open(sys.argv[sys.argv.index("-c") + 1]).read()
host, port = re.search(r"^listen = (.*):(\d+)$", conf, re.M).groups()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path == "/healthz" else os.environ["GW_TEST_UPSTREAM_KEY"].encode()
        self.send_response(200 if self.path == "/healthz" else 418)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer((host, int(port)), H)
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
print("fake gateway listening", flush=True)
srv.serve_forever()
"""


def test_gateway_harness_with_fake_binary():
    # the Gateway lifecycle (config, env, health polling, log, stop) against a stand-in
    d = tempfile.mkdtemp(prefix="gwtest-fake-")
    fake = os.path.join(d, "fake-gateway")
    with open(fake, "w") as f:
        f.write("#!%s\n%s" % (sys.executable, FAKE_GATEWAY))
    os.chmod(fake, 0o755)
    s = stub()
    gw = gwtest.Gateway(s, keys=("alice",))
    gw.bin = fake
    with gw:
        assert gw.request("GET", "/healthz", key=None)[0] == 200
        st, _, b = gw.request("GET", "/echo-key", key="alice")
        assert st == 418 and b.decode() == s.key
        assert gw.vmhwm_kib() > 0 and "fake gateway listening" in gw.log()
        assert gw.url == "http://127.0.0.1:%d" % gw.port
        assert "url = %s\n" % s.url in open(gw.conf_path).read()
    assert gw.proc.returncode == 0


if __name__ == "__main__":
    gwtest.main(globals())    # also stops the shared stub
