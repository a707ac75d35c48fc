"""POST /v1/videos end to end: the real gateway in front of the stub upstream.

Every test asserts what the stub *received* (framing, Content-Length, body hash,
parts, headers, completeness), not only what the client was answered: the model
rewrite must change the `model` value and nothing else, the framing must follow
`lookahead` / `fallback`, and a refused request must never reach the upstream as a
complete body (no job created).
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

# the aliases of config/models.conf used below
ALIASES = {"veo3.1": "veo_3_1", "veo3.1-components": "veo_3_1-components"}
PROMPT = "让牛快乐的跳科目三"
# a PNG-ish file part holding what a sloppy scanner would trip on: CRLF--, a fake
# delimiter, and the text of a model part
PNG = (b"\x89PNG\r\n\x1a\n" + hashlib.shake_256(b"cow").digest(5000) +
       b"\r\n--not-the-boundary\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n"
       b"veo3.1\r\n--")
BASE = [("prompt", PROMPT), ("seconds", "8"), ("size", "16x9")]


def stub():
    """The file's shared stub (jobs never progress), reset for each test."""
    return gwtest.shared_stub(job_seconds=100000, extra_keys=1)


def gateway(**kw):
    """`with gateway(**kw) as (s, gw):` a fresh gateway on the shared stub; on a
    clean exit it is stopped and its log must hold no sanitizer report and its
    exit code must be 0 (gwtest.checked_gateway)."""
    return gwtest.checked_gateway(stub(), **kw)


# ---------------------------------------------------------------------------- helpers

def rewritten(fields):
    """The fields as the upstream must receive them: only model values mapped."""
    return [(f[0], ALIASES.get(f[1], f[1])) if len(f) == 2 and f[0] == "model" else f
            for f in fields]


def post(gw, body, ctype, headers=None, **kw):
    h = {"Content-Type": ctype}
    h.update(headers or {})
    return gw.request("POST", "/v1/videos", headers=h, body=body, **kw)


def hdr(rec, name):
    """Values of header `name` in a stub record, in order."""
    return [v for k, v in rec["headers"] if k.lower() == name.lower()]


def record_of(s, rid):
    """The stub's record of the request the gateway sent with X-Request-Id rid, or None."""
    recs = [r for r in s.requests() if hdr(r, "X-Request-Id") == [rid]]
    assert len(recs) <= 1, recs
    return recs[0] if recs else None


def assert_job(s, st, h, body, model="veo_3_1"):
    """200 and the stub's job object relayed byte for byte; returns the job."""
    assert st == 200, (st, body[:500])
    assert h["content-type"] == "application/json", h
    job = json.loads(body)
    jobs = {j["id"]: j for j in s.jobs()}
    assert job["id"] in jobs, (job, list(jobs))
    assert body == json.dumps(jobs[job["id"]]).encode(), body
    assert job["model"] == model and job["status"] == "queued", job
    rec = record_of(s, h["x-request-id"])
    assert rec is not None and rec["complete"] and rec["status"] == 200, rec
    return job


def assert_parts(rec, fields, part_sha256=None):
    """The stub's parts are these fields, in order, byte for byte."""
    assert rec["multipart"]["error"] is None, rec["multipart"]
    assert [p["name"] for p in rec["parts"]] == [f[0] for f in fields], rec["parts"]
    for i, (p, f) in enumerate(zip(rec["parts"], fields)):
        assert p["complete"], p
        if len(f) == 2:
            assert p["value"] == f[1] and p["filename"] is None, (p, f)
            assert p["headers"] == [["Content-Disposition",
                                     'form-data; name="%s"' % f[0]]], p["headers"]
        else:
            want = part_sha256[i] if part_sha256 else hashlib.sha256(f[2]).hexdigest()
            assert (p["filename"], p["content_type"], p["sha256"]) == (f[1], f[3], want), p
            assert p["headers"][0] == ["Content-Disposition", 'form-data; name="%s"; '
                                       'filename="%s"' % (f[0], f[1])], p["headers"]


def assert_error(gw, st, h, body, status, code, param):
    """An OpenAI error body with this status/code/param, and logged: the access log
    line and the error log line carry the response's X-Request-Id."""
    assert st == status, (st, body[:500])
    e = gwtest.error_body(body)
    assert (e["type"], e["code"], e["param"]) == ("invalid_request_error", code, param), e
    rid = h["x-request-id"]

    def logged():
        acc = [a for a in gw.log_json() if a.get("rid") == rid]
        err = [ln for ln in gw.log().splitlines()
               if "rid=%s" % rid in ln and "code=%s" % code in ln]
        return acc and err and (acc, err)
    acc, err = gwtest.wait_for(logged, 15, what="the error in the gateway's logs")
    assert (acc[0]["status"], acc[0]["error"]) == (status, code), acc
    assert "status=%d" % status in err[0], err
    return e, rid


def assert_not_forwarded(s, rid):
    """The refused request never reached the upstream as a complete body."""
    def settled():
        r = record_of(s, rid)
        return (r is None or r["t_end"] is not None) and [r]
    r = gwtest.wait_for(settled, 15, what="the refused request's upstream side to end")[0]
    assert r is None or not r["complete"], r


def assert_still_serves(s, gw):
    """A normal create right after works (and the refused one made no job)."""
    before = len(s.jobs())
    body, ctype = gwtest.multipart([("model", "veo3.1")] + BASE)
    st, h, resp = post(gw, body, ctype)
    assert_job(s, st, h, resp)
    assert len(s.jobs()) == before + 1


def refused(gw, s, fields, status, code, param, **kw):
    """POST fields; expect the error, nothing complete upstream, no job; then serve."""
    jobs = len(s.jobs())
    body, ctype = gwtest.multipart(fields)
    st, h, resp = post(gw, body, ctype, **kw)
    _, rid = assert_error(gw, st, h, resp, status, code, param)
    assert len(s.jobs()) == jobs
    assert_still_serves(s, gw)
    assert_not_forwarded(s, rid)
    return rid


def image(i, size=2000):
    return ("input_reference", "f%d.png" % i, hashlib.shake_256(b"img%d" % i).digest(size),
            "image/png")


# ---------------------------------------------------------------------------- multipart create

def test_model_first_exact_length():
    fields = [("model", "veo3.1")] + BASE + [("input_reference", "cow.png", PNG, "image/png"),
                                             ("watermark", "false")]
    with gateway() as (s, gw):
        body, ctype = gwtest.multipart(fields)
        st, h, resp = post(gw, body, ctype, headers={"X-Client-Trace": "t-42"})
        assert_job(s, st, h, resp)
        want, _ = gwtest.multipart(rewritten(fields), boundary=ctype.split("=", 1)[1])
        assert len(want) == len(body) + 1          # veo3.1 -> veo_3_1
        r = s.last()
        assert (r["framing"], r["content_length"], r["body_size"]) == \
            ("content-length", len(want), len(want))
        assert r["body_sha256"] == hashlib.sha256(want).hexdigest()
        assert hdr(r, "Content-Type") == [ctype] and hdr(r, "X-Client-Trace") == ["t-42"]
        assert hdr(r, "Transfer-Encoding") == []
        assert_parts(r, rewritten(fields))
        assert r["parts"][4]["size"] == len(PNG)
        a = gwtest.wait_for(lambda: [a for a in gw.log_json()
                                     if a.get("rid") == h["x-request-id"]], what="access log")[0]
        assert (a["route"], a["model"], a["model_sent"], a["status"]) == \
            ("create", "veo3.1", "veo_3_1", 200), a


def test_model_in_the_middle_and_within_lookahead():
    # model after a 40 KB image (well inside the 256k default lookahead), then more
    # fields and an image after it: exact Content-Length, every other byte as sent
    fields = [("prompt", PROMPT), image(1, 40000), ("model", "veo3.1"), ("seconds", "8"),
              image(2, 3000), ("size", "16x9")]
    with gateway(lookahead="64k") as (s, gw):
        body, ctype = gwtest.multipart(fields)
        assert_job(s, *post(gw, body, ctype))
        want, _ = gwtest.multipart(rewritten(fields), boundary=ctype.split("=", 1)[1])
        r = s.last()
        assert (r["framing"], r["content_length"]) == ("content-length", len(want))
        assert r["body_sha256"] == hashlib.sha256(want).hexdigest()
        assert_parts(r, rewritten(fields))


def test_model_after_file_inside_and_beyond_lookahead():
    # lookahead = 64k: a 60 000-byte file before the model still fits (exact length);
    # a 100 000-byte one does not (the configured fallback, chunked by default)
    with gateway(lookahead="64k") as (s, gw):
        for size, framing in ((60000, "content-length"), (100000, "chunked")):
            fields = [image(1, size), ("model", "veo3.1")] + BASE
            body, ctype = gwtest.multipart(fields)
            assert_job(s, *post(gw, body, ctype))
            want, _ = gwtest.multipart(rewritten(fields), boundary=ctype.split("=", 1)[1])
            r = s.last()
            assert r["framing"] == framing, (size, r["framing"])
            assert r["content_length"] == (len(want) if framing == "content-length" else None)
            assert r["body_size"] == len(want), (size, r["body_size"])
            assert r["body_sha256"] == hashlib.sha256(want).hexdigest(), size
            assert_parts(r, rewritten(fields))


def big_after_file(size=6 * 1024 * 1024):
    """A body with the model after a `size`-byte file; (stream, upstream's expected stream)."""
    fields = [("prompt", PROMPT), ("input_reference", "big.bin", size,
                                   "application/octet-stream"),
              ("model", "veo3.1"), ("seconds", "8"), ("size", "16x9")]
    ms = gwtest.multipart_stream(fields)
    return ms, gwtest.multipart_stream(rewritten(fields), boundary=ms.boundary)


def test_model_after_large_file_fallback_chunked():
    ms, want = big_after_file()
    with gateway(fallback="chunked") as (s, gw):
        st, h, resp = post(gw, ms, ms.content_type, headers={"Content-Length": str(ms.length)})
        assert_job(s, st, h, resp)
        r = s.last()
        assert (r["framing"], r["content_length"]) == ("chunked", None)
        assert hdr(r, "Content-Length") == []
        assert (r["body_size"], r["body_sha256"]) == (want.length, want.sha256)
        assert_parts(r, rewritten(want.fields), want.part_sha256)


def test_model_after_large_file_fallback_spool():
    ms, want = big_after_file()
    spool = tempfile.mkdtemp(prefix="gwtest-spool-")
    try:
        with gateway(fallback="spool", spool_dir=spool) as (s, gw):
            st, h, resp = post(gw, ms, ms.content_type,
                               headers={"Content-Length": str(ms.length)})
            assert_job(s, st, h, resp)
            r = s.last()
            assert (r["framing"], r["content_length"]) == ("content-length", want.length)
            assert hdr(r, "Transfer-Encoding") == []
            assert (r["body_size"], r["body_sha256"]) == (want.length, want.sha256)
            assert_parts(r, rewritten(want.fields), want.part_sha256)
            # the spool file is unlinked: nothing is left behind in spool_dir
            assert os.listdir(spool) == []
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def test_chunked_client_body():
    # like the OpenAI Node SDK with fs.createReadStream: chunked, no Content-Length
    small = [("model", "veo3.1")] + BASE + [("input_reference", "cow.png", PNG,
                                              "application/octet-stream")]
    ms_small = gwtest.multipart_stream(small, chunk_size=1000)
    ms_big, want_big = big_after_file(2 * 1024 * 1024)
    spool = tempfile.mkdtemp(prefix="gwtest-spool-")
    try:
        for fallback, big_framing in (("chunked", "chunked"), ("spool", "content-length")):
            with gateway(fallback=fallback, spool_dir=spool) as (s, gw):
                # fits in lookahead: held whole, sent with an exact length
                assert_job(s, *post(gw, ms_small, ms_small.content_type))
                want = gwtest.multipart_stream(rewritten(small), boundary=ms_small.boundary)
                r = s.last()
                assert (r["framing"], r["content_length"]) == ("content-length", want.length)
                assert r["body_sha256"] == want.sha256
                assert_parts(r, rewritten(small), want.part_sha256)
                # larger than lookahead: the fallback
                assert_job(s, *post(gw, ms_big, ms_big.content_type))
                r = s.last()
                assert r["framing"] == big_framing, (fallback, r["framing"])
                assert r["content_length"] == (want_big.length if fallback == "spool" else None)
                assert (r["body_size"], r["body_sha256"]) == (want_big.length, want_big.sha256)
                assert_parts(r, rewritten(want_big.fields), want_big.part_sha256)
                # model first but no length to rewrite: the fallback too
                first = [("model", "veo3.1"), ("input_reference", "f.bin", 1024 * 1024,
                                               "application/octet-stream")] + BASE
                ms = gwtest.multipart_stream(first)
                want = gwtest.multipart_stream(rewritten(first), boundary=ms.boundary)
                assert_job(s, *post(gw, ms, ms.content_type))
                r = s.last()
                assert r["framing"] == big_framing, (fallback, r["framing"])
                assert (r["body_size"], r["body_sha256"]) == (want.length, want.sha256)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def test_boundaries_split_across_reads():
    # a chunked body cut into pieces of 1..7 bytes: every delimiter, part head and
    # the model value arrive split; a preamble of blank lines (the only one allowed)
    # and the epilogue must pass too
    fields = [("prompt", PROMPT), ("input_reference", "a.png", b"\r\n--gwtest\r" * 100,
                                   "image/png"),
              ("model", "veo3.1"), ("seconds", "8"), ("size", "16x9")]
    body, ctype = gwtest.multipart(fields)
    body = b"\r\n\r\n" + body + b"epilogue"
    want = b"\r\n\r\n" + gwtest.multipart(rewritten(fields),
                                            boundary=ctype.split("=", 1)[1])[0] + b"epilogue"
    pieces, i, n = [], 0, 1
    while i < len(body):
        pieces.append(body[i:i + n])
        i, n = i + n, n % 7 + 1
    with gateway() as (s, gw):
        head = ("POST /v1/videos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Content-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                % (gw.keys["default"], ctype)).encode()
        st, h, resp, _ = gwtest.parse_response(gwtest.raw(gw.port, [head] +
                                                           list(gwtest.chunked(pieces))))
        assert_job(s, st, h, resp)
        r = s.last()
        assert (r["framing"], r["content_length"]) == ("content-length", len(want))
        assert r["body_sha256"] == hashlib.sha256(want).hexdigest()
        # the stub counts the last CRLF of the preamble as the first delimiter's
        assert (r["multipart"]["preamble"], r["multipart"]["epilogue"]) == (2, 8)
        assert_parts(r, rewritten(fields))


def test_model_part_with_its_own_headers():
    # a quoted boundary, a model part with a Content-Type, a lower-case header name
    body = (b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n'
            b'Content-Type: text/plain; charset=utf-8\r\n\r\nveo3.1\r\n'
            b'--xyz\r\ncontent-disposition: form-data; name=prompt\r\n\r\np\r\n'
            b'--xyz\r\nContent-Disposition: form-data; name="seconds"\r\n\r\n8\r\n'
            b'--xyz\r\nContent-Disposition: form-data; name="size"\r\n\r\n16x9\r\n--xyz--\r\n')
    want = body.replace(b"\r\n\r\nveo3.1\r\n", b"\r\n\r\nveo_3_1\r\n")
    with gateway() as (s, gw):
        assert_job(s, *post(gw, body, 'multipart/form-data; boundary="xyz"'))
        r = s.last()
        assert (r["content_length"], r["body_sha256"]) == \
            (len(want), hashlib.sha256(want).hexdigest())
        assert r["parts"][0]["headers"] == [
            ["Content-Disposition", 'form-data; name="model"'],
            ["Content-Type", "text/plain; charset=utf-8"]], r["parts"][0]
        assert r["parts"][1]["headers"] == [["content-disposition", "form-data; name=prompt"]]


def test_expect_continue_and_keep_alive():
    # curl sends Expect: 100-continue with large -F uploads
    body, ctype = gwtest.multipart([("model", "veo3.1")] + BASE)
    with gateway() as (s, gw):
        head = ("POST /v1/videos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Content-Type: %s\r\nContent-Length: %d\r\n"
                % (gw.keys["default"], ctype, len(body)))
        with gwtest.RawConn(gw.port) as c:
            c.send(head + "Expect: 100-continue\r\n\r\n")
            assert c.read_head().startswith(b"HTTP/1.1 100 ")
            assert s.requests() == []        # nothing upstream until the body comes
            c.send(body)
            assert_job(s, *gwtest.parse_response(c.read_response())[:3])
            # the same connection serves the next create
            c.send(head.encode() + b"\r\n" + body)
            assert_job(s, *gwtest.parse_response(c.read_response())[:3])
        recs = s.requests()
        assert len(recs) == 2 and all(hdr(r, "Expect") == [] for r in recs), recs
        assert all(r["complete"] and not r["expect_100"] for r in recs)


def test_boundary_of_70_characters():
    boundary = "b" * 68 + "-z"
    fields = [("model", "veo3.1")] + BASE
    with gateway() as (s, gw):
        body, ctype = gwtest.multipart(fields, boundary=boundary)
        assert_job(s, *post(gw, body, ctype))
        assert s.last()["multipart"]["boundary"] == boundary
        assert_parts(s.last(), rewritten(fields))


# ---------------------------------------------------------------------------- JSON create

def test_json_create_rewrites_model_only():
    # odd spacing, member order, numbers and nesting must all arrive as sent
    body = ('{ "prompt" : "%s",\n  "seconds": "8", "model":"veo3.1" ,"size": "16x9",'
            ' "metadata": {"model": "veo3.1", "n": [1, 2.50, true, null]}, "watermark": false}'
            % PROMPT).encode()
    want = body.replace(b'"model":"veo3.1"', b'"model":"veo_3_1"', 1)
    with gateway() as (s, gw):
        assert_job(s, *post(gw, body, "application/json"))
        r = s.last()
        assert (r["framing"], r["content_length"]) == ("content-length", len(want))
        assert r["body_sha256"] == hashlib.sha256(want).hexdigest(), r["json"]
        assert list(r["json"]) == ["prompt", "seconds", "model", "size", "metadata",
                                   "watermark"]
        assert r["json"]["model"] == "veo_3_1" and r["json"]["prompt"] == PROMPT
        # chunked JSON: held whole (bounded), sent with an exact length
        assert_job(s, *post(gw, [body[:10], body[10:]], "application/json"))
        r = s.last()
        assert (r["framing"], r["content_length"]) == ("content-length", len(want))
        assert r["body_sha256"] == hashlib.sha256(want).hexdigest()


# ---------------------------------------------------------------------------- authorization

def test_team_key_replaced_and_request_id():
    with gateway(keys=("alice",)) as (s, gw):
        team = gw.keys["alice"]
        body, ctype = gwtest.multipart([("model", "veo3.1")] + BASE)
        st, h, resp = gw.request("POST", "/v1/videos", key="alice", body=body,
                                 headers={"Content-Type": ctype, "X-Request-Id": "forged"})
        assert_job(s, st, h, resp)
        r = s.last()
        assert hdr(r, "Authorization") == ["Bearer " + s.key]
        assert all(team not in v for _, v in r["headers"]), r["headers"]
        rid = h["x-request-id"]
        assert rid != "forged" and hdr(r, "X-Request-Id") == [rid]
        assert team not in gw.log()


def test_upstream_keys_round_robin():
    # one event loop: its key counter alone decides, so the keys must alternate
    with gateway(threads=1, upstream_keys=stub().keys) as (s, gw):
        body, ctype = gwtest.multipart([("model", "veo3.1")] + BASE)
        for _ in range(4):
            assert_job(s, *post(gw, body, ctype))
        used = [hdr(r, "Authorization") for r in s.requests()]
        k1, k2 = ["Bearer " + k for k in s.keys]
        assert used in ([[k1], [k2], [k1], [k2]], [[k2], [k1], [k2], [k1]]), used
        assert s.keys[1] not in gw.log() and s.keys[0] not in gw.log()


# ---------------------------------------------------------------------------- catalog checks

def test_too_many_images_after_model():
    with gateway() as (s, gw):
        # veo2 (family "first"): one image at most; the second comes after the model,
        # and after enough bytes that the request has started going upstream
        refused(gw, s, [("model", "veo2")] + BASE + [image(1, 300000), image(2, 300000)],
                400, "too_many_images", "input_reference")
        # components: three at most
        refused(gw, s, [("model", "veo3.1-components")] + BASE +
                [image(i) for i in range(4)], 400, "too_many_images", "input_reference")
        # input_reference[] counts the same
        refused(gw, s, [("model", "veo2")] + BASE + [image(1), ("input_reference[]", "g.png",
                                                               b"x" * 100, "image/png")],
                400, "too_many_images", "input_reference")
        # the limits themselves are allowed
        fields = [("model", "veo3.1-components")] + BASE + [image(i) for i in range(3)]
        body, ctype = gwtest.multipart(fields)
        assert_job(s, *post(gw, body, ctype), model="veo_3_1-components")
        assert_parts(s.last(), rewritten(fields))


def test_too_many_images_before_model():
    with gateway() as (s, gw):
        refused(gw, s, [image(1), image(2), ("model", "veo2")] + BASE,
                400, "too_many_images", "input_reference")
        refused(gw, s, [("input_reference[]", "a.png", b"a" * 10, "image/png")] * 4 +
                [("model", "veo3.1-components")] + BASE,
                400, "too_many_images", "input_reference")
        # images larger than lookahead before the model: the body is already going
        # upstream (fallback) when the model arrives, so the upstream request is cut
        refused(gw, s, [image(1, 200000), image(2, 200000), ("model", "veo2")] + BASE,
                400, "too_many_images", "input_reference")
    # with fallback = spool, the early bytes went to the spool file: nothing upstream
    spool = tempfile.mkdtemp(prefix="gwtest-spool-")
    try:
        with gateway(fallback="spool", spool_dir=spool) as (s, gw):
            rid = refused(gw, s, [image(1, 200000), image(2, 200000), ("model", "veo2")] +
                          BASE, 400, "too_many_images", "input_reference")
            assert record_of(s, rid) is None
            assert os.listdir(spool) == []
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    with gateway() as (s, gw):
        fields = [image(1), image(2), ("model", "veo3")] + BASE     # frames: two is fine
        body, ctype = gwtest.multipart(fields)
        assert_job(s, *post(gw, body, ctype), model="veo3")
        assert_parts(s.last(), fields)


def test_unlisted_seconds_and_size():
    with gateway() as (s, gw):
        m = [("model", "veo3.1"), ("prompt", "p")]
        refused(gw, s, m + [("seconds", "5"), ("size", "16x9")], 400, "invalid_value",
                "seconds")
        refused(gw, s, [("seconds", "5"), ("size", "16x9")] + m, 400, "invalid_value",
                "seconds")
        refused(gw, s, m + [("seconds", "8"), ("size", "1x1")], 400, "invalid_value", "size")
        refused(gw, s, [("size", "1920x1080"), ("seconds", "8")] + m, 400, "invalid_value",
                "size")
        # held before the model: an empty value or one with a NUL is still checked whole
        refused(gw, s, [("seconds", ""), ("size", "16x9")] + m, 400, "invalid_value",
                "seconds")
        refused(gw, s, [("seconds", "8\x00 junk"), ("size", "16x9")] + m, 400,
                "invalid_value", "seconds")
        # given twice (the upstream may take either): refused in any order, even when
        # the first is the unlisted one and only the last could have been held
        refused(gw, s, [("seconds", "5"), ("seconds", "8"), ("size", "16x9")] + m, 400,
                "invalid_value", "seconds")
        refused(gw, s, [("size", "1x1"), ("size", "16x9"), ("seconds", "8")] + m, 400,
                "invalid_value", "size")
        refused(gw, s, m + [("seconds", "8"), ("size", "16x9"), ("seconds", "4")], 400,
                "invalid_value", "seconds")


def test_unknown_model_reject_and_pass():
    fields = [("model", "sora-2")] + BASE
    with gateway(models_unknown="reject") as (s, gw):
        refused(gw, s, fields, 400, "model_not_found", "model")
    with gateway(models_unknown="pass") as (s, gw):
        body, ctype = gwtest.multipart(fields)
        assert_job(s, *post(gw, body, ctype), model="sora-2")
        r = s.last()
        assert (r["content_length"], r["body_sha256"]) == \
            (len(body), hashlib.sha256(body).hexdigest())


def test_missing_and_duplicate_fields():
    with gateway() as (s, gw):
        refused(gw, s, BASE, 400, "missing_required_parameter", "model")
        refused(gw, s, [("model", "veo3.1"), ("seconds", "8"), ("size", "16x9")],
                400, "missing_required_parameter", "prompt")
        jobs = len(s.jobs())
        for body in (b'{"prompt": "p", "seconds": "8"}', b'{"model": "veo3.1"}'):
            st, h, resp = post(gw, body, "application/json")
            param = "model" if b"model" not in body else "prompt"
            _, rid = assert_error(gw, st, h, resp, 400, "missing_required_parameter", param)
            assert_not_forwarded(s, rid)
        assert len(s.jobs()) == jobs
        # a second model part, before or after a file
        body, ctype = gwtest.multipart([("model", "veo3.1")] + BASE + [("model", "veo3")])
        st, h, resp = post(gw, body, ctype)
        assert st == 400 and gwtest.error_body(resp)["param"] == "model", resp
        body, ctype = gwtest.multipart([("model", "veo3")] + BASE + [image(1),
                                                                      ("model", "veo3.1")])
        st, h, resp = post(gw, body, ctype)
        assert st == 400 and gwtest.error_body(resp)["param"] == "model", resp
        assert_not_forwarded(s, h["x-request-id"])
        assert len(s.jobs()) == jobs
        assert_still_serves(s, gw)


# ---------------------------------------------------------------------------- differentials
# A body the gateway reads one way and the upstream's parser another is a way past the
# catalog checks (issue 5: defect 6 and "multipart differentials"): each is refused
# with the gateway's 400, and the upstream never receives it complete (no job).

def refused_body(gw, s, body, ctype, code, param, path="/v1/videos"):
    """POST a hand-made body; expect 400 `code`/`param`, nothing complete upstream,
    no job; returns the request id."""
    jobs = len(s.jobs())
    st, h, resp = gw.request("POST", path, headers={"Content-Type": ctype}, body=body)
    e, rid = assert_error(gw, st, h, resp, 400, code, param)
    assert_not_forwarded(s, rid)
    assert len(s.jobs()) == jobs, s.jobs()
    return e, rid


def test_json_field_types():
    # each of these went upstream before; the stub would have turned some down
    # itself, but another upstream may read `[99]` as 99 or `8.5` as 8
    m = '"model": "veo3.1", "prompt": "p"'
    cases = [
        ('{%s, "seconds": [99]}' % m, "invalid_type", "seconds"),
        ('{%s, "seconds": ["8"]}' % m, "invalid_type", "seconds"),
        ('{%s, "seconds": true}' % m, "invalid_type", "seconds"),
        ('{%s, "seconds": null}' % m, "invalid_type", "seconds"),
        ('{%s, "seconds": {}}' % m, "invalid_type", "seconds"),
        ('{%s, "seconds": 8.5}' % m, "invalid_value", "seconds"),
        ('{%s, "seconds": 8.0}' % m, "invalid_value", "seconds"),
        ('{%s, "seconds": 1e9}' % m, "invalid_value", "seconds"),
        ('{%s, "seconds": -8}' % m, "invalid_value", "seconds"),
        ('{%s, "seconds": "8s"}' % m, "invalid_value", "seconds"),
        ('{%s, "size": ["4096x4096"]}' % m, "invalid_type", "size"),
        ('{%s, "size": {}}' % m, "invalid_type", "size"),
        ('{%s, "size": null}' % m, "invalid_type", "size"),
        ('{%s, "size": 16}' % m, "invalid_type", "size"),
        ('{"model": "veo3.1", "prompt": ["p"], "seconds": "8"}', "invalid_type", "prompt"),
        ('{"model": "veo3.1", "prompt": null}', "invalid_type", "prompt"),
        ('{"model": "veo3.1", "prompt": 5}', "invalid_type", "prompt"),
        ('{"model": ["veo3.1"], "prompt": "p"}', "invalid_type", "model"),
        ('{%s, "s\\u0065conds": [99]}' % m, "invalid_type", "seconds"),
    ]
    with gateway() as (s, gw):
        for body, code, param in cases:
            e, rid = refused_body(gw, s, body.encode(), "application/json", code, param)
            assert param in e["message"], e
            assert record_of(s, rid) is None        # JSON is held whole: nothing went out
        # what the SDKs send stays accepted: seconds as a string, or as an integer
        for seconds in ('"8"', "8"):
            body = ('{"model": "veo3.1", "prompt": "p", "seconds": %s, "size": "16x9"}'
                    % seconds).encode()
            assert_job(s, *post(gw, body, "application/json"))
            assert s.last()["json"]["seconds"] == json.loads(seconds)
        # and a listed integer is checked against the catalog like a string
        _, rid = refused_body(gw, s, b'{"model": "veo3.1", "prompt": "p", "seconds": 5}',
                              "application/json", "invalid_value", "seconds")
        assert_still_serves(s, gw)


def test_json_remix_prompt_type():
    with gateway() as (s, gw):
        job = s.create_job()
        path = "/v1/videos/%s/remix" % job["id"]
        for body in (b'{"prompt": ["more cows"]}', b'{"prompt": null}', b'{"prompt": 42}',
                     b'{"prompt": {"text": "more cows"}}'):
            refused_body(gw, s, body, "application/json", "invalid_type", "prompt", path=path)
        assert s.requests(path=path) == []
        st, h, resp = gw.request("POST", path, headers={"Content-Type": "application/json"},
                                 body=b'{"prompt": "more cows"}')
        assert st == 200 and json.loads(resp)["remixed_from_video_id"] == job["id"], resp
        assert len(s.requests(path=path)) == 1


def mp_part(cd, value, headers=b""):
    return b"Content-Disposition: " + cd + b"\r\n" + headers + b"\r\n" + value


def mp_body(*parts, preamble=b"", delim=b"\r\n--gwb\r\n", model=True):
    """A multipart body with boundary gwb, parts as given (mp_part), the parts of a
    valid create after them: model (unless model=False), prompt, seconds, size."""
    tail = [mp_part(b'form-data; name="model"', b"veo3.1")] if model else []
    tail += [mp_part(b'form-data; name="prompt"', b"p")]
    tail += [mp_part(b'form-data; name="%s"' % k, v) for k, v in
             ((b"seconds", b"8"), (b"size", b"16x9"))
             if not any(b'"%s"' % k in p for p in parts)]
    return (preamble + b"--gwb\r\n" + delim.join(list(parts) + tail) + b"\r\n--gwb--\r\n",
            "multipart/form-data; boundary=gwb")


def test_multipart_differentials():
    png = b"\x89PNG\r\n\x1a\n"
    hidden = mp_part(b'form-data; name="seconds"', b"99")   # what another parser would see
    cases = [
        # the model as a file for busboy, Go and Werkzeug (filename*), a text field for
        # python-multipart and, before, for the gateway, which rewrote it
        (mp_body(mp_part(b"form-data; name=\"model\"; filename*=UTF-8''m.txt", b"veo3.1"),
                 model=False), "invalid_multipart", "model"),
        # "mo\del": the model for the RFC (and the gateway, before), not for busboy
        (mp_body(mp_part(b'form-data; name="mo\\del"', b"veo3.1"), model=False),
         "invalid_multipart", None),
        # name* overrides name for Go and Werkzeug
        (mp_body(mp_part(b"form-data; name=\"x\"; name*=UTF-8''seconds", b"99")),
         "invalid_multipart", None),
        (mp_body(mp_part(b'form-data; name="x"; name*0="seconds"', b"99")),
         "invalid_multipart", None),
        # twice: busboy takes the first, python-multipart the last, Go refuses
        (mp_body(mp_part(b'form-data; name="size"; filename="a"; filename="b"', b"x")),
         "invalid_multipart", "size"),
        (mp_body(mp_part(b'form-data; name="seconds"; x=1; x=2', b"8")),
         "invalid_multipart", "seconds"),
        # busboy skips a part it cannot parse; the others read it
        (mp_body(mp_part(b'form-data; name ="seconds"', b"8")), "invalid_multipart", None),
        (mp_body(mp_part(b'form-data; name="seconds";', b"8")), "invalid_multipart",
         "seconds"),
        # Go decodes quoted-printable, python-multipart base64 too
        (mp_body(mp_part(b'form-data; name="prompt"', b"YSBjb3c=",
                         b"Content-Transfer-Encoding: base64\r\n")),
         "invalid_multipart", "prompt"),
        (mp_body(mp_part(b'form-data; name="size"', b"16x9",
                         b"Content-Type: text/plain\r\nContent-Type: text/html\r\n")),
         "invalid_multipart", "size"),
        # a delimiter for Werkzeug and Python's email (any line break), data for us
        (mp_body(mp_part(b'form-data; name="input_reference"; filename="a.png"',
                         png + b"\n--gwb\r\n" + hidden, b"Content-Type: image/png\r\n")),
         "invalid_multipart", "input_reference"),
        (mp_body(mp_part(b'form-data; name="input_reference"; filename="a.png"',
                         png + b"\r--gwb\r\n" + hidden, b"Content-Type: image/png\r\n")),
         "invalid_multipart", "input_reference"),
        # the blank line after the headers doubles as the delimiter's CRLF for Go and
        # Werkzeug: an empty part, then `seconds`
        (mp_body(mp_part(b'form-data; name="x"', b"--gwb\r\n" + hidden)),
         "invalid_multipart", None),
        # a preamble: Werkzeug finds "--gwb" anywhere in it, Go after a bare LF
        (mp_body(preamble=b"x--gwb\r\n" + hidden + b"\r\n"), "invalid_multipart", None),
        (mp_body(preamble=b"\n--gwb\r\n" + hidden + b"\r\n"), "invalid_multipart", None),
        # transport padding: data for python-multipart, a delimiter for the others
        (mp_body(mp_part(b'form-data; name="x"', b"1"), delim=b"\r\n--gwb \r\n"),
         "invalid_multipart", None),
        # a field the gateway reads as text, that a parser takes for a file: Go and
        # busboy read an empty filename as a text field; busboy takes octet-stream
        # for a file
        (mp_body(mp_part(b'form-data; name="seconds"; filename=""', b"99")),
         "invalid_value", "seconds"),
        (mp_body(mp_part(b'form-data; name="size"', b"16x9",
                         b"Content-Type: application/octet-stream\r\n")),
         "invalid_value", "size"),
        (mp_body(mp_part(b'form-data; name="prompt"; filename="p.txt"', b"p")),
         "invalid_value", "prompt"),
    ]
    with gateway() as (s, gw):
        for (body, ctype), code, param in cases:
            refused_body(gw, s, body, ctype, code, param)
        # an unquoted boundary is a token: Werkzeug reads "gwb/x" as "gwb"
        body, _ = mp_body()
        for ctype in ("multipart/form-data; boundary=gwb/x",
                      "multipart/form-data; boundary=gwb; boundary*=UTF-8''evil"):
            refused_body(gw, s, body.replace(b"gwb", b"gwb/x"), ctype, "invalid_multipart", None)
        # quoted, the same boundary is fine, and so are the parts above done plainly
        body, _ = mp_body(mp_part(b'form-data; name="seconds"', b"8"),
                          mp_part(b'form-data; name="size"', b"16x9"),
                          mp_part(b'form-data; name="input_reference"; filename="a.png"',
                                  png + b"\n-gwb\r--gw\n", b"Content-Type: image/png\r\n"),
                          preamble=b"\r\n")
        body = body.replace(b"gwb", b"gwb/x")
        assert_job(s, *post(gw, body, 'multipart/form-data; boundary="gwb/x"'))
        r = s.last()
        assert [p["name"] for p in r["parts"]] == ["seconds", "size", "input_reference",
                                                    "model", "prompt"], r["parts"]
        assert_still_serves(s, gw)


# ---------------------------------------------------------------------------- bad bodies

def test_boundary_missing_or_too_long():
    body, _ = gwtest.multipart([("model", "veo3.1")] + BASE, boundary="b" * 71)
    with gateway() as (s, gw):
        for ctype in ("multipart/form-data", "multipart/form-data; charset=utf-8",
                      "multipart/form-data; boundary=" + "b" * 71):
            st, h, resp = post(gw, body, ctype)
            assert_error(gw, st, h, resp, 400, "invalid_multipart", None)
        assert s.requests() == []
        assert_still_serves(s, gw)


def test_truncated_body():
    fields = [("model", "veo3.1")] + BASE + [image(1, 100000)]
    body, ctype = gwtest.multipart(fields)
    with gateway() as (s, gw):
        # the Content-Length body ends before the close delimiter
        cut = body[:-len(b"--\r\n") - 40]
        st, h, resp = post(gw, cut, ctype)
        _, rid = assert_error(gw, st, h, resp, 400, "invalid_multipart", None)
        assert_not_forwarded(s, rid)
        assert s.jobs() == []
        # the client closes with a third of its body sent
        s.reset()
        head = ("POST /v1/videos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Content-Type: %s\r\nContent-Length: %d\r\n\r\n"
                % (gw.keys["default"], ctype, len(body))).encode()
        with gwtest.RawConn(gw.port) as c:
            c.send(head + body[:len(body) // 3])
            s.wait_bytes(len(body) // 4, timeout=20)   # the model was first: it streams
        r = gwtest.wait_for(lambda: [r for r in s.requests() if r["t_end"]], 15,
                            what="the upstream request to end")[-1]
        assert not r["complete"] and r["body_size"] < len(body), r
        a = gwtest.wait_for(lambda: [a for a in gw.log_json() if a.get("rid") ==
                                     hdr(r, "X-Request-Id")[0]], 15, what="access log")[0]
        assert a["completed"] is False, a
        assert s.jobs() == []
        assert_still_serves(s, gw)


def test_oversized_part_headers():
    with gateway() as (s, gw):
        body, ctype = gwtest.multipart([("model", "veo3.1")] + BASE)
        b = ctype.split("=", 1)[1]
        body = body.replace(b"--%s\r\n" % b.encode(), b"--%s\r\nX-Pad: %s\r\n"
                            % (b.encode(), b"p" * 9000), 2)
        st, h, resp = post(gw, body, ctype)
        _, rid = assert_error(gw, st, h, resp, 400, "invalid_multipart", None)
        assert_not_forwarded(s, rid)
        assert s.jobs() == []
        assert_still_serves(s, gw)


def test_max_body_is_inclusive():
    # exactly max_body is accepted, one byte more is refused; with a length or chunked
    with gateway(max_body="64k") as (s, gw):
        for extra in (0, 1):
            base = [("model", "veo3.1")] + BASE
            empty, _ = gwtest.multipart(base + [("input_reference", "a", b"", None)])
            fields = base + [("input_reference", "a", b"z" * (65536 - len(empty) + extra),
                              None)]
            body, ctype = gwtest.multipart(fields)
            assert len(body) == 65536 + extra
            for b in (body, [body[:1000], body[1000:]]):
                st, h, resp = post(gw, b, ctype)
                if extra:
                    _, rid = assert_error(gw, st, h, resp, 413, "request_too_large", None)
                    assert_not_forwarded(s, rid)
                else:
                    assert_job(s, st, h, resp)
                    assert s.last()["body_size"] == len(body) + 1
        assert len(s.jobs()) == 2


def test_body_over_max_body():
    with gateway(max_body="1m") as (s, gw):
        # Content-Length over the limit: answered from the head, before any body
        with gwtest.RawConn(gw.port) as c:
            c.send("POST /v1/videos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Content-Type: multipart/form-data; boundary=b\r\n"
                   "Content-Length: %d\r\n\r\n" % (gw.keys["default"], 2 * 1024 * 1024))
            st, h, resp, _ = gwtest.parse_response(c.read_response())
        assert_error(gw, st, h, resp, 413, "request_too_large", None)
        # a chunked body crossing the limit (model first, so it was already streaming)
        ms = gwtest.multipart_stream([("model", "veo3.1")] + BASE +
                                     [("input_reference", "big.bin", 3 * 1024 * 1024, None)])
        head = ("POST /v1/videos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Content-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                % (gw.keys["default"], ms.content_type)).encode()
        with gwtest.RawConn(gw.port) as c:
            c.send(head)
            try:
                for piece in gwtest.chunked(ms):
                    c.send(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass
            st, h, resp, _ = gwtest.parse_response(c.read_response())
        _, rid = assert_error(gw, st, h, resp, 413, "request_too_large", None)
        assert_not_forwarded(s, rid)
        r = record_of(s, rid)
        assert r is None or r["body_size"] <= 1024 * 1024, r
        assert s.jobs() == []
        assert_still_serves(s, gw)


def test_json_errors():
    with gateway(max_json_body="4k") as (s, gw):
        big = json.dumps({"model": "veo3.1", "prompt": "x" * 10000, "seconds": "8",
                          "size": "16x9"}).encode()
        for body in (big, [big[:3000], big[3000:]]):      # with a length, then chunked
            st, h, resp = post(gw, body, "application/json")
            _, rid = assert_error(gw, st, h, resp, 413, "request_too_large", None)
            assert_not_forwarded(s, rid)
        st, h, resp = post(gw, b'{"model": "veo3.1", "prompt": ', "application/json")
        _, rid = assert_error(gw, st, h, resp, 400, "invalid_json", None)
        assert_not_forwarded(s, rid)
        # an empty chunked body is checked like any other, not forwarded as is
        head = ("POST /v1/videos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                % gw.keys["default"])
        st, h, resp, _ = gwtest.parse_response(gwtest.raw(gw.port, head))
        _, rid = assert_error(gw, st, h, resp, 400, "invalid_json", None)
        assert_not_forwarded(s, rid)
        assert s.jobs() == []
        assert_still_serves(s, gw)


def test_wrong_content_type():
    body, _ = gwtest.multipart([("model", "veo3.1")] + BASE)
    with gateway() as (s, gw):
        for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
            h = {"Content-Type": ctype} if ctype else {}
            st, h, resp = gw.request("POST", "/v1/videos", headers=h, body=body)
            assert_error(gw, st, h, resp, 415, "unsupported_media_type", None)
        assert s.requests() == []
        assert_still_serves(s, gw)


if __name__ == "__main__":
    gwtest.main(globals())    # also stops the shared stub
