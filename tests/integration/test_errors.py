"""Errors: upstream faults relayed or turned into 502/504, authentication,
Expect: 100-continue, and malformed request heads and bodies sent by hand
(libevhtp-notes traps 1, 2, 4, 9, 10). After each abuse the gateway must still
answer /healthz, and no secret may ever appear in its output."""

import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

SECRETS = set()       # every team and upstream key used by a gateway of this file
LOGS = []             # the output of every gateway stopped so far
JSON = {"Content-Type": "application/json"}
MiB = 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024


def setup():
    """The file's shared stub (reset, default config) and gateway."""
    stub = gwtest.shared_stub()
    gw = gwtest.shared_gateway(stub, max_header_bytes="16k")
    SECRETS.update(gw.keys.values())
    SECRETS.add(stub.key)
    assert_clean(gw)
    return stub, gw


def assert_clean(gw):
    """No sanitizer report and no key of this file in the gateway's log."""
    gwtest.assert_clean(gw, secrets=SECRETS)


def assert_alive(gw):
    """The gateway still serves a new connection, and has not crashed."""
    assert gw.proc.poll() is None, "the gateway died (%s):\n%s" % (gw.proc.returncode,
                                                                  gw.log()[-4000:])
    st, _, b = gw.request("GET", "/healthz", key=None, timeout=5)
    assert st == 200 and json.loads(b) == {"status": "ok"}, (st, b)
    assert_clean(gw)


def other_gateway(**kw):
    gw = gwtest.Gateway(**kw)
    SECRETS.update(gw.keys.values())
    if gw.upstream_key:
        SECRETS.add(gw.upstream_key)
    return gw


def finish(gw):
    """Stop a gateway of one test: exit 0, no sanitizer report (leaks show at exit),
    no key of this file in its log."""
    try:
        gwtest.stop_clean(gw, secrets=SECRETS)
    finally:
        LOGS.append(gw.log())


create_body = gwtest.create_body


def head(method, path, key, extra="", version="1.1"):
    auth = "Authorization: Bearer %s\r\n" % key if key else ""
    return ("%s %s HTTP/%s\r\nHost: gw\r\n%s%s\r\n" % (method, path, version, auth,
                                                       extra)).encode()


# ---------------------------------------------------------------- upstream faults

def test_upstream_500_relayed():
    stub, gw = setup()
    job = stub.create_job()
    stub.fault("500")
    st, h, b = gw.request("GET", "/v1/videos/" + job["id"])
    assert st == 500, (st, b)
    e = gwtest.error_body(b)
    assert e["type"] == "server_error" and "stub fault" in e["message"], e
    assert h.get("x-request-id")
    assert stub.last()["fault"] == "500"
    assert gw.request("GET", "/v1/videos/" + job["id"])[0] == 200   # one-off
    assert_alive(gw)


def test_upstream_429_retry_after_relayed():
    stub, gw = setup()
    stub.fault("429", retry_after=7)
    st, h, b = gw.request("POST", "/v1/videos", headers=JSON, body=create_body())
    assert st == 429, (st, b)
    assert h.get("retry-after") == "7", h
    e = gwtest.error_body(b)
    assert (e["code"], e["type"]) == ("rate_limit_exceeded", "rate_limit_error"), e
    assert stub.jobs() == []
    assert_alive(gw)


def test_upstream_reset_502():
    stub, gw = setup()
    # a POST is never retried, on a fresh or a reused upstream connection
    stub.fault("reset", count=1)
    st, h, b = gw.request("POST", "/v1/videos", headers=JSON, body=create_body())
    assert st == 502, (st, b)
    e = gwtest.error_body(b)
    assert (e["code"], e["type"]) == ("bad_gateway", "upstream_error"), e
    assert [r["fault"] for r in stub.requests()] == ["reset"]
    assert stub.jobs() == []
    assert gw.request("GET", "/v1/videos?limit=1")[0] == 200
    assert_alive(gw)


def test_stale_pooled_connection_retried():
    """An upstream may close an idle keep-alive connection just as the gateway
    reuses it (RFC 9112 9.3.1: such a request may be retried when idempotent).
    Reproduced deterministically: a pooled connection reset on the next GET."""
    stub, _ = setup()
    gw = other_gateway(stub=stub, threads=1).start()
    try:
        assert gw.request("GET", "/v1/videos?limit=1")[0] == 200   # pools a connection
        stub.fault("reset", count=1)
        st, _, b = gw.request("GET", "/v1/videos?limit=1")
        recs = stub.requests()
        assert recs[0]["conn"] == recs[1]["conn"], "the second GET did not reuse"
        assert st == 200, (st, b)
        recs = stub.requests()
        assert recs[-1]["conn"] != recs[1]["conn"] and recs[-1]["status"] == 200
        assert_alive(gw)
    finally:
        finish(gw)


def invalid_answer_not_retried(mode):
    """An invalid answer on a reused connection (issue 5) is the upstream's answer,
    not a stale connection: 502 at once, and the GET reached the upstream once."""
    stub, _ = setup()
    gw = other_gateway(stub=stub, threads=1).start()
    try:
        assert gw.request("GET", "/v1/videos?limit=1")[0] == 200   # pools a connection
        stub.fault(mode, count=1)
        st, _, b = gw.request("GET", "/v1/videos?limit=1")
        recs = stub.requests()
        assert recs[1]["conn"] == recs[0]["conn"], "the second GET did not reuse"
        assert [r["fault"] for r in recs] == [None, mode], \
            "the GET after an invalid answer reached the upstream %d times" % (len(recs) - 1)
        assert st == 502, (st, b)
        e = gwtest.error_body(b)
        assert (e["code"], e["type"]) == ("bad_gateway", "upstream_error"), e
        assert gw.request("GET", "/v1/videos?limit=1")[0] == 200
        assert len(stub.requests()) == 3
        assert_alive(gw)
    finally:
        finish(gw)


def test_two_content_lengths_not_retried():
    invalid_answer_not_retried("two_content_lengths")


def test_nul_in_header_not_retried():
    invalid_answer_not_retried("nul_in_header")


def test_huge_headers_not_retried():
    invalid_answer_not_retried("huge_headers")


def test_connection_named_headers_dropped():
    """RFC 9110 7.6.1: the headers an upstream's Connection header names are
    hop-by-hop (here X-Secret and X-Other-Hop, named in two Connection headers, in
    another case): not relayed, whole or streamed; `close` is honoured."""
    stub, gw = setup()
    size = 300000                                   # > RESP_WHOLE_MAX: streamed
    stub.config(content_size=size)
    vid = stub.create_job()["id"]
    for path in ("/v1/videos/" + vid, "/v1/videos/%s/content" % vid):
        stub.fault("connection_header", path_prefix=path)
        st, h, b = gw.request("GET", path)
        assert st == 200, (path, st, b[:300])
        assert "x-secret" not in h and "x-other-hop" not in h, (path, h)
        assert h.get("x-kept") == "yes", (path, h)
        if path.endswith("/content"):
            assert hashlib.sha256(b).hexdigest() == gwtest.content_sha256(vid, size)
        else:
            assert json.loads(b)["id"] == vid
    # the upstream said close: that connection was not used again
    assert gw.request("GET", "/v1/videos/" + vid)[0] == 200
    recs = stub.requests()
    assert recs[-1]["conn"] not in (recs[-2]["conn"], recs[-3]["conn"]), \
        [(r["conn"], r["fault"]) for r in recs]
    assert_alive(gw)


def test_upstream_hang_504():
    stub, _ = setup()
    gw = other_gateway(stub=stub, response_timeout="1s").start()
    try:
        stub.fault("hang")
        t0 = time.monotonic()
        st, h, b = gw.request("GET", "/v1/videos?limit=1", timeout=20)
        took = time.monotonic() - t0
        assert st == 504, (st, b)
        e = gwtest.error_body(b)
        assert (e["code"], e["type"]) == ("gateway_timeout", "upstream_error"), e
        assert 0.9 <= took < 8, took
        assert gw.request("GET", "/v1/videos?limit=1")[0] == 200
        assert_alive(gw)
    finally:
        finish(gw)


def test_connect_refused_502():
    port = gwtest.free_port()       # nothing listens there
    gw = other_gateway(upstream_url="http://127.0.0.1:%d" % port,
                       upstream_key="sk-up-" + os.urandom(8).hex()).start()
    try:
        for method, path, body in (("GET", "/v1/videos/video_1", b""),
                                   ("POST", "/v1/videos", create_body())):
            st, _, b = gw.request(method, path, headers=JSON, body=body, timeout=20)
            assert st == 502, (method, st, b)
            e = gwtest.error_body(b)
            assert (e["code"], e["type"]) == ("bad_gateway", "upstream_error"), e
        assert_alive(gw)
    finally:
        finish(gw)


def test_close_mid_download_truncates():
    stub, gw = setup()
    size = 4 * MiB
    stub.config(content_size=size)
    vid = stub.create_job()["id"]
    stub.fault("close_after_headers", path_prefix="/v1/videos/%s/content" % vid,
               body_bytes=300000)
    with gwtest.RawConn(gw.port) as c:
        c.send(head("GET", "/v1/videos/%s/content" % vid, gw.keys["default"]))
        data = c.read_until_close(15)
        assert c.eof, "the gateway kept the client connection open after the upstream cut"
    hd, _, body = data.partition(b"\r\n\r\n")
    assert hd.startswith(b"HTTP/1.1 200 "), data[:300]
    hdrs = hd.lower()
    if b"content-length:" in hdrs:
        # announced in full, delivered short: the client can tell
        assert b"content-length: %d\r\n" % size in hdrs + b"\r\n", hd
        assert len(body) < size, len(body)
    else:
        # chunked: the terminating 0-chunk must be missing
        assert b"transfer-encoding: chunked" in hdrs, hd
        assert not body.endswith(b"0\r\n\r\n"), body[-20:]
    assert stub.last()["sent"] == 300000
    # the cut is not mistaken for a success in the access log (this request's
    # line: the shared gateway has logged other downloads)
    rid = [ln.split(b":", 1)[1].strip().decode() for ln in hdrs.split(b"\r\n")
           if ln.startswith(b"x-request-id:")]
    assert rid, hd
    lines = gw.wait_log(lambda line: line.get("rid") == rid[0])
    assert lines[0]["route"] == "content" and lines[0]["completed"] is False, lines
    assert_alive(gw)


# ---------------------------------------------------------------- auth

def test_401_missing_or_wrong_key():
    stub, gw = setup()
    wrong = "sk-vgw-" + "Q" * 32
    cases = [{}, {"Authorization": "Bearer " + wrong}, {"Authorization": wrong},
             {"Authorization": "Basic " + gw.keys["default"]},
             {"Authorization": "Bearer " + gw.keys["default"] + "x"},
             {"Authorization": "Bearer " + gw.keys["default"][:-1]},
             {"Authorization": "Bearer "},
             # very long, odd bytes (latin-1 on the wire), a key with spaces
             {"Authorization": "Bearer " + "k" * 7000},
             {"Authorization": "Bearer sk-vgw-\xe9\xff\xfe"},
             {"Authorization": "Bearer " + gw.keys["default"][:8] + " " + "x" * 10}]
    for hdrs in cases:
        for method, path, body in (("GET", "/v1/videos", b""),
                                   ("GET", "/v1/videos/video_1/content", b""),
                                   ("POST", "/v1/videos", create_body())):
            h = dict(JSON)
            h.update(hdrs)
            st, rh, b = gw.request(method, path, key=None, headers=h, body=body)
            assert st == 401, (hdrs, path, st, b)
            e = gwtest.error_body(b)
            assert (e["code"], e["type"]) == ("invalid_api_key", "invalid_request_error"), e
            text = b.decode() + json.dumps(rh)
            assert wrong not in text and gw.keys["default"][:-1] not in text, text
    assert stub.requests() == []
    assert wrong not in gw.log()
    assert_alive(gw)


used_keys = gwtest.used_keys


def assert_no_key(keys, st, h, b):
    text = b.decode("latin-1") + json.dumps(h)
    for k in keys:
        assert k not in text, "an upstream key reached the client (status %d)" % st


def test_upstream_401_is_the_gateways_problem():
    """A provider's 401 (or 407) refuses the gateway's credentials, not the team
    member's: 502 with the gateway's own body, so that the SDKs do not report a
    wrong API key, and nothing of the upstream's answer relayed (this provider
    echoes the key in its body and in WWW-Authenticate). The pool still takes the
    refused key out."""
    stub, _ = setup()
    revoked = "sk-upstream-revoked-" + os.urandom(12).hex()
    SECRETS.add(revoked)
    keys = [revoked, stub.key]
    gw = other_gateway(stub=stub, upstream_keys=keys, threads=1).start()
    try:
        stub.fault("401", count=1)
        st, h, b = gw.request("GET", "/v1/videos?limit=1")          # with the revoked key
        assert st == 502, (st, b)
        e = gwtest.error_body(b)
        assert (e["code"], e["type"]) == ("upstream_auth_failed", "upstream_error"), e
        assert "credentials" in e["message"] and "stub" not in e["message"], e
        assert "www-authenticate" not in h and h.get("x-request-id"), h
        assert_no_key(keys, st, h, b)
        assert stub.last()["status"] == 401 and stub.last()["fault"] == "401"
        # the revoked key is out: the next requests all go with the other one
        for _ in range(3):
            assert gw.request("GET", "/v1/videos?limit=1")[0] == 200
        assert used_keys(stub) == [revoked] + [stub.key] * 3, used_keys(stub)
        # 407, on a create whose body the upstream read: the same, and no job
        stub.fault("407", count=1)
        st, h, b = gw.request("POST", "/v1/videos", headers=JSON, body=create_body())
        assert st == 502, (st, b)
        assert gwtest.error_body(b)["code"] == "upstream_auth_failed", b
        assert "proxy-authenticate" not in h, h
        assert_no_key(keys, st, h, b)
        assert stub.jobs() == []
        assert gw.request("GET", "/v1/videos?limit=1")[0] == 200     # 407 rests no key
        assert used_keys(stub)[-2:] == [stub.key, stub.key], used_keys(stub)
        log = gw.log()
        assert "upstream key #1 answered 401" in log, log[-2000:]
        lines = gwtest.wait_for(lambda: [a for a in gw.log_json()
                                         if a.get("upstream_status") in (401, 407)],
                                what="access log")
        assert [(a["status"], a["error"]) for a in lines] == \
            [(502, "upstream_auth_failed")] * 2, lines
        assert_alive(gw)
    finally:
        finish(gw)


def test_upstream_key_never_relayed():
    """Any upstream answer that echoes the gateway's key: a header holding it is
    dropped; an error body holding it is replaced by the gateway's own 502."""
    stub, gw = setup()
    vid = stub.create_job()["id"]
    stub.fault("echo_key", status=400)                    # body and header
    st, h, b = gw.request("GET", "/v1/videos/" + vid)
    assert st == 502, (st, b)
    e = gwtest.error_body(b)
    assert (e["code"], e["type"]) == ("bad_gateway", "upstream_error"), e
    assert "stub" not in e["message"], e
    assert_no_key([stub.key], st, h, b)
    stub.fault("echo_key", status=404, in_body=False)     # header only: relayed without it
    st, h, b = gw.request("GET", "/v1/videos/" + vid)
    assert st == 404, (st, b)
    assert gwtest.error_body(b)["message"] == "Bad request (stub fault).", b
    assert "x-echo-authorization" not in h, h
    assert_no_key([stub.key], st, h, b)
    assert gw.request("GET", "/v1/videos/" + vid)[0] == 200
    assert_alive(gw)


def test_expect_100_wrong_key_no_stray_continue():
    stub, gw = setup()
    body = create_body()
    with gwtest.RawConn(gw.port) as c:
        c.send(head("POST", "/v1/videos", "sk-vgw-wrong",
                    "Content-Type: application/json\r\nExpect: 100-continue\r\n"
                    "Content-Length: %d\r\n" % len(body)))
        first = c.read_head(5)
        assert first.startswith(b"HTTP/1.1 401 "), first
        # a client that sends its body anyway (curl does after a timeout)
        try:
            c.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        rest = c.read_until_close(3)
        everything = first + rest
    assert b"100 Continue" not in everything and b" 100 " not in everything, everything
    st, _, b, interim = gwtest.parse_response(everything)
    assert st == 401 and interim == [] and gwtest.error_body(b)["code"] == "invalid_api_key"
    assert stub.requests() == []
    # the same without ever sending the body
    resp = gwtest.raw(gw.port, head("POST", "/v1/videos", None,
                                    "Content-Type: application/json\r\n"
                                    "Expect: 100-continue\r\nContent-Length: 5000000\r\n"),
                      read_timeout=3)
    assert resp.startswith(b"HTTP/1.1 401 ") and b"100 Continue" not in resp, resp
    assert_alive(gw)


def test_expect_100_good_key_one_continue():
    stub, gw = setup()
    body = create_body()
    with gwtest.RawConn(gw.port) as c:
        c.send(head("POST", "/v1/videos", gw.keys["default"],
                    "Content-Type: application/json\r\nExpect: 100-continue\r\n"
                    "Content-Length: %d\r\n" % len(body)))
        first = c.read_head(5)
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n", first
        c.send(body)
        resp = c.read_response(10)
        st, h, b, interim = gwtest.parse_response(resp)
        assert st == 200 and interim == [], resp[:300]
        assert b"100 Continue" not in resp
        assert json.loads(b)["model"] == "veo_3_1"
        # keep-alive goes on; a bodiless request with Expect gets no 100
        c.send(head("GET", "/v1/videos?limit=1", gw.keys["default"],
                    "Expect: 100-continue\r\n"))
        resp = c.read_response(10)
        assert resp.startswith(b"HTTP/1.1 200 "), resp[:200]
    r = stub.last()
    assert not any(k.lower() == "expect" for k, _ in r["headers"]), r["headers"]
    assert_alive(gw)


# ---------------------------------------------------------------- malformed heads

def test_request_line_one_byte_at_a_time():
    stub, gw = setup()
    job = stub.create_job()
    path = "/v1/videos/%s?x=%s" % (job["id"], "yz" * 20)
    data = head("GET", path, gw.keys["default"], "X-Custom: value-kept\r\n")
    with gwtest.RawConn(gw.port) as c:
        for i in range(len(data)):
            c.send(data[i:i + 1])
            if i < 80:
                time.sleep(0.002)     # pacing, so the request line arrives in pieces
        resp = c.read_response(10)
    st, _, b, _ = gwtest.parse_response(resp)
    assert st == 200 and json.loads(b)["id"] == job["id"], resp[:300]
    r = stub.last()
    assert (r["path"], r["query"]) == ("/v1/videos/" + job["id"], "x=" + "yz" * 20), r
    assert ["X-Custom", "value-kept"] in r["headers"], r["headers"]
    # and a body-carrying request split everywhere in its head
    body = create_body()
    data = head("POST", "/v1/videos", gw.keys["default"],
                "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)) + body
    resp = gwtest.raw(gw.port, [data[i:i + 3] for i in range(0, len(data), 3)])
    st, _, b, _ = gwtest.parse_response(resp)
    assert st == 200 and json.loads(b)["model"] == "veo_3_1", resp[:300]
    assert stub.last()["json"]["model"] == "veo_3_1"
    assert_alive(gw)


def expect_error(gw, data, status, code=None, pieces=False):
    items = [data[i:i + 500] for i in range(0, len(data), 500)] if pieces else data
    resp = gwtest.raw(gw.port, items, read_timeout=5)
    assert resp, "no answer (connection closed silently) to %r" % data[:120]
    st, h, b, _ = gwtest.parse_response(resp)
    assert st == status, (st, resp[:300])
    if code:
        assert gwtest.error_body(b)["code"] == code, b
    return h


def test_framing_errors():
    stub, gw = setup()
    key = gw.keys["default"]
    ct = "Content-Type: application/json\r\n"
    expect_error(gw, head("POST", "/v1/videos", key, ct + "Content-Length: 5\r\n"
                          "Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n",
                 400, "invalid_request")
    expect_error(gw, head("POST", "/v1/videos", key, ct + "Transfer-Encoding: chunked\r\n"
                          "Content-Length: 5\r\n") + b"0\r\n\r\n", 400, "invalid_request")
    for bad in ("abc", "-1", "1 2", "0x10", "+5", "", "99999999999999999999999"):
        expect_error(gw, head("POST", "/v1/videos", key, ct + "Content-Length: %s\r\n" % bad),
                     400, "invalid_request")
    expect_error(gw, head("POST", "/v1/videos", key, ct + "Content-Length: 4\r\n"
                          "Content-Length: 5\r\n") + b"{}{}", 400, "invalid_request")
    for te in ("gzip", "gzip, chunked", "chunked, gzip", "identity"):
        expect_error(gw, head("POST", "/v1/videos", key, ct + "Transfer-Encoding: %s\r\n" % te),
                     501, "unsupported_transfer_encoding")
    assert stub.requests() == []
    assert_alive(gw)


def test_header_too_large_431():
    stub, gw = setup()
    key = gw.keys["default"]
    long_line = "X-Long: %s\r\n" % ("a" * 9000)
    expect_error(gw, head("GET", "/v1/videos", key, long_line), 431,
                 "request_header_fields_too_large")
    expect_error(gw, head("GET", "/v1/videos", key, long_line), 431,
                 "request_header_fields_too_large", pieces=True)
    # a long request line too
    expect_error(gw, head("GET", "/v1/videos?q=" + "b" * 9000, key), 431,
                 "request_header_fields_too_large", pieces=True)
    # many lines, each fine, together over max_header_bytes
    many = "".join("X-H%d: %s\r\n" % (i, "c" * 3000) for i in range(7))
    expect_error(gw, head("GET", "/v1/videos", key, many), 431,
                 "request_header_fields_too_large")
    expect_error(gw, head("GET", "/v1/videos", key, many), 431,
                 "request_header_fields_too_large", pieces=True)
    # just under the limit is served
    ok = "".join("X-H%d: %s\r\n" % (i, "c" * 3000) for i in range(4))
    resp = gwtest.raw(gw.port, head("GET", "/v1/videos?limit=1", key, ok))
    assert resp.startswith(b"HTTP/1.1 200 "), resp[:200]
    assert len(stub.requests()) == 1
    assert_alive(gw)


def test_bad_chunk_size_no_hang():
    stub, gw = setup()
    key = gw.keys["default"]
    vid = stub.create_job()["id"]
    stub.reset()
    cases = [("/v1/videos", "Content-Type: application/json\r\n", b"zz\r\n{}\r\n0\r\n\r\n"),
             ("/v1/videos/%s/remix" % vid, "Content-Type: application/json\r\n",
              b"5\r\n{\"pro\r\n-3\r\nabc\r\n0\r\n\r\n"),
             ("/v1/videos", "Content-Type: multipart/form-data; boundary=xyz\r\n",
              b"10\r\n--xyz\r\nContent-Di\r\nfffffffffffffffffffff\r\n"),
             ("/v1/nope", "", b"g\r\n\r\n"),
             ("/v1/videos", "Content-Type: application/json\r\n", b"2\r\n{}XX0\r\n\r\n")]
    for path, extra, body in cases:
        with gwtest.RawConn(gw.port) as c:
            c.send(head("POST", path, key, extra + "Transfer-Encoding: chunked\r\n") + body)
            t0 = time.monotonic()
            data = c.read_until_close(8)
            assert c.eof, "the connection hung after a bad chunk (%r), got %r" % (body, data)
            assert time.monotonic() - t0 < 8
        assert data, "no answer to a malformed chunked body %r" % body
        st, _, b, _ = gwtest.parse_response(data)
        assert 400 <= st < 500, (path, body, data[:300])
        assert gwtest.error_body(b)["type"] == "invalid_request_error", b
        assert_alive(gw)
    # nothing complete reached the upstream, and no job was made
    assert not [r for r in stub.requests() if r["complete"]], stub.requests()
    assert stub.jobs() == []


def test_http10_client():
    stub, gw = setup()
    key = gw.keys["default"]
    size = 200000
    stub.config(content_size=size)
    vid = stub.create_job()["id"]
    for path, check in (("/healthz", lambda b: json.loads(b) == {"status": "ok"}),
                        ("/v1/videos/" + vid, lambda b: json.loads(b)["id"] == vid),
                        ("/v1/videos/%s/content" % vid,
                         lambda b: hashlib.sha256(b).hexdigest() ==
                         gwtest.content_sha256(vid, size)),
                        ("/v1/nope", lambda b: gwtest.error_body(b)["code"] == "not_found")):
        with gwtest.RawConn(gw.port) as c:
            c.send(head("GET", path, key, version="1.0"))
            data = c.read_until_close(10)
            assert c.eof, "HTTP/1.0 without keep-alive: the gateway must close (%s)" % path
        hd, _, body = data.partition(b"\r\n\r\n")
        assert hd.startswith(b"HTTP/1.") and b"transfer-encoding" not in hd.lower(), hd
        st, h, b, _ = gwtest.parse_response(data)
        if "content-length" in h:
            assert len(body) == int(h["content-length"]), (path, len(body), h)
        assert check(b), (path, st, b[:200])
    assert_alive(gw)


def _chunked_upstream():
    """A one-route upstream that answers every request with a chunked body and
    no Content-Length (the stub always sends one) -> (server, body bytes)."""
    import socketserver
    import threading
    body = hashlib.shake_256(b"chunked-upstream").digest(300000)

    class H(socketserver.StreamRequestHandler):
        def handle(self):
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
                for i in range(0, len(body), 70000):
                    piece = body[i:i + 70000]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, body


def test_http10_client_unknown_length():
    """libevhtp trap 9: an upstream body of unknown length goes to an HTTP/1.0
    client close-delimited, never chunked; HTTP/1.1 clients get it chunked."""
    srv, body = _chunked_upstream()
    gw = other_gateway(upstream_url="http://127.0.0.1:%d" % srv.server_address[1],
                       upstream_key="sk-up-" + os.urandom(8).hex()).start()
    try:
        key = gw.keys["default"]
        with gwtest.RawConn(gw.port) as c:
            c.send(head("GET", "/v1/videos/video_1/content", key, version="1.0"))
            data = c.read_until_close(10)
            assert c.eof
        hd, _, got = data.partition(b"\r\n\r\n")
        assert hd.startswith(b"HTTP/1.0 200 ") or hd.startswith(b"HTTP/1.1 200 "), hd
        assert b"transfer-encoding" not in hd.lower(), hd
        assert got == body, (len(got), len(body))
        with gwtest.RawConn(gw.port) as c:
            c.send(head("GET", "/v1/videos/video_1/content", key))
            st, h, got, _ = gwtest.parse_response(c.read_response(10))
            assert st == 200 and got == body, (st, h, len(got))
            assert h.get("transfer-encoding") == "chunked" or \
                h.get("content-length") == str(len(body)), h
            c.send(head("GET", "/v1/videos/video_1/content", key))   # still usable
            st, h, got, _ = gwtest.parse_response(c.read_response(10))
            assert st == 200 and got == body
        assert_alive(gw)
    finally:
        srv.shutdown()
        srv.server_close()
        finish(gw)


def test_body_on_unknown_route_drained():
    """libevhtp trap 4: a large form-urlencoded body nobody reads crashed it."""
    stub, gw = setup()
    key = gw.keys["default"]
    big = 20 * MiB
    chunk = b"a=" + b"b" * (MiB - 2)
    for method, path, k in (("POST", "/v1/nope", key), ("POST", "/v1/nope", None),
                            ("POST", "/healthz", None), ("PUT", "/v1/videos", key),
                            ("POST", "/v1/videos", "sk-vgw-wrong")):
        with gwtest.RawConn(gw.port, timeout=20) as c:
            c.send(head(method, path, k, "Content-Type: application/x-www-form-urlencoded\r\n"
                                         "Content-Length: %d\r\n" % big))
            try:
                for _ in range(big // len(chunk)):
                    c.send(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            data = c.read_response(10)
        assert data, (method, path, "no answer")
        st, _, b, _ = gwtest.parse_response(data)
        assert st in (401, 404, 405), (method, path, st, data[:300])
        gwtest.error_body(b)
        assert_alive(gw)
    # the same body on proxied routes is read whole by the gateway (and passed on)
    for method, path, status in (("DELETE", "/v1/videos/video_x", 404),
                                 ("GET", "/v1/videos?limit=1", 200)):
        with gwtest.RawConn(gw.port, timeout=20) as c:
            c.send(head(method, path, key, "Content-Type: application/x-www-form-urlencoded"
                                           "\r\nContent-Length: %d\r\n" % big))
            for _ in range(big // len(chunk)):
                c.send(chunk)
            st, _, b, _ = gwtest.parse_response(c.read_response(20))
            assert st == status, (method, path, st, b[:300])
        r = stub.last()
        assert (r["path"], r["body_size"], r["complete"]) == (path.split("?")[0], big, True), r
        assert_alive(gw)
    stub.reset()
    # chunked too
    body = gwtest.chunked([chunk] * 20)
    resp = gwtest.raw(gw.port, [head("POST", "/v1/nope", key,
                                     "Content-Type: application/x-www-form-urlencoded\r\n"
                                     "Transfer-Encoding: chunked\r\n")] + list(body))
    assert resp.startswith(b"HTTP/1.1 404 "), resp[:200]
    assert stub.requests() == []
    assert_alive(gw)


def test_zz_no_secret_in_any_output():
    """Last: stop the shared gateway; across every gateway of this file no key
    (team or upstream) appeared in stdout/stderr."""
    stub, gw = setup()
    # a few more chances for a key to leak: rejected keys, upstream 401
    gw.request("GET", "/v1/videos", key=None,
               headers={"Authorization": "Bearer " + stub.key})
    stub.fault("500")
    gw.request("GET", "/v1/videos")
    gwtest.forget_shared_gateway()
    finish(gw)
    assert len(LOGS) >= 3
    for log in LOGS:
        for s in SECRETS:
            assert s not in log, "a secret appears in a gateway's output"
    assert any('"status":401' in log for log in LOGS)


if __name__ == "__main__":
    gwtest.main(globals())    # also stops the shared stub and gateway
