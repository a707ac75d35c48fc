"""The follow-up routes of a job's life through the gateway (retrieve, content,
list, delete, remix), the gateway's own routes (models, healthz), routing
errors (invalid ids, unknown paths, wrong methods) and keep-alive on both sides.

One stub and one gateway serve the whole file; each test resets the stub."""

import hashlib
import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}
MiB = 1024 * 1024
# Under AddressSanitizer freed memory waits in a quarantine (256 MiB by default)
# that would count in VmHWM; a small one keeps the memory bounds meaningful.
SMALL_QUARANTINE = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") +
                    ":quarantine_size_mb=16"}


def setup():
    """The shared stub (reset, default config) and gateway."""
    stub = gwtest.shared_stub()
    gw = gwtest.shared_gateway(stub, keys=("default", "bob"), env=SMALL_QUARANTINE)
    assert_clean(gw)
    return stub, gw


def assert_clean(gw):
    """No sanitizer report in the gateway's log, and the process is alive."""
    gwtest.assert_clean(gw, alive=True)


def create(gw, model="veo3.1", **over):
    d = {"model": model, "prompt": "a cow dancing", "seconds": "8", "size": "16x9"}
    d.update(over)
    st, h, b = gw.request("POST", "/v1/videos", headers=JSON,
                          body=json.dumps(d).encode())
    assert st == 200, (st, b)
    return json.loads(b)


def upstream_auth(rec):
    return [v for k, v in rec["headers"] if k.lower() == "authorization"]


# ---------------------------------------------------------------- retrieve

def test_retrieve_status_advances():
    stub, gw = setup()
    stub.config(job_seconds=0.8)
    job = create(gw)
    assert job["status"] == "queued" and job["model"] == "veo_3_1", job
    seen = []

    def completed():
        st, h, b = gw.request("GET", "/v1/videos/" + job["id"], key="bob")
        assert st == 200, (st, b)
        assert h["content-type"] == "application/json" and h.get("x-request-id"), h
        j = json.loads(b)
        assert j["id"] == job["id"]
        seen.append((j["status"], j["progress"]))
        return j["status"] == "completed"
    gwtest.wait_for(completed, 10, 0.03, "the job to complete")
    order = {"queued": 0, "in_progress": 1, "completed": 2}
    statuses = [s for s, _ in seen]
    assert statuses[0] == "queued" and "in_progress" in statuses, seen
    assert [order[s] for s in statuses] == sorted(order[s] for s in statuses), seen
    assert seen[-1][1] == 100 and any(0 < p < 100 for _, p in seen), seen
    # what went upstream: the path, our upstream key, never the team key
    recs = stub.requests(path="/v1/videos/" + job["id"], method="GET")
    assert len(recs) == len(seen)
    for r in recs:
        assert upstream_auth(r) == ["Bearer " + stub.key], r["headers"]
        assert gw.keys["bob"] not in json.dumps(r["headers"])
    assert_clean(gw)


# ---------------------------------------------------------------- content

def test_content_bytes_length_and_variant():
    stub, gw = setup()
    size = 300001
    stub.config(content_size=size)
    vid = create(gw)["id"]
    st, h, n, sha = gw.download("/v1/videos/%s/content" % vid)
    assert (st, n) == (200, size), (st, h)
    assert h["content-length"] == str(size) and "transfer-encoding" not in h, h
    assert h["content-type"] == "video/mp4"
    assert sha == gwtest.content_sha256(vid, size)
    r = stub.last()
    assert r["variant"] == "video" and r["query"] == "" and r["sent"] == size
    for variant, ctype in (("thumbnail", "image/webp"), ("spritesheet", "image/jpeg")):
        st, h, n, sha = gw.download("/v1/videos/%s/content?variant=%s" % (vid, variant))
        assert (st, n, h["content-type"]) == (200, size, ctype), (variant, st, h)
        assert h["content-length"] == str(size)
        assert sha == gwtest.content_sha256(vid, size, variant)
        r = stub.last()
        assert (r["path"], r["query"], r["variant"]) == \
            ("/v1/videos/%s/content" % vid, "variant=" + variant, variant), r
    # the upstream's refusal of a bad variant comes back as it is
    st, _, b = gw.request("GET", "/v1/videos/%s/content?variant=gif" % vid)
    assert st == 400 and gwtest.error_body(b)["param"] == "variant"
    assert_clean(gw)


def test_content_200mb_flat_memory():
    stub, gw = setup()
    size = 200 * MiB
    stub.config(content_size=size)
    vid = create(gw)["id"]
    st, h, n, sha = gw.download("/v1/videos/%s/content" % vid, read_size=MiB)
    assert (st, n) == (200, size) and h["content-length"] == str(size)
    assert sha == gwtest.content_sha256(vid, size)
    hwm = gw.vmhwm_kib()
    assert hwm < 64 * 1024, "gateway VmHWM %d KiB after a 200 MiB download" % hwm
    assert stub.last()["sent"] == size
    assert_clean(gw)


def test_content_slow_reader_backpressure():
    stub, gw = setup()
    size = 128 * MiB
    stub.config(content_size=size)
    vid = create(gw)["id"]
    gwtest.slow_download(gw, stub, vid, size)
    assert_clean(gw)


# ---------------------------------------------------------------- list / delete / remix

def test_list_query_passed_verbatim():
    stub, gw = setup()
    ids = [create(gw, prompt="p%d" % i)["id"] for i in range(3)]
    q = "after=%s&limit=1&order=asc" % ids[0]
    st, h, b = gw.request("GET", "/v1/videos?" + q)
    assert st == 200, b
    page = json.loads(b)
    assert page["object"] == "list" and [j["id"] for j in page["data"]] == [ids[1]], page
    assert page["has_more"] is True
    r = stub.last()
    assert (r["method"], r["path"], r["query"]) == ("GET", "/v1/videos", q), r
    # odd but legal bytes, order and repeats are not re-encoded or normalised
    q2 = "order=desc&limit=2&x=a%20b%2Fc&x=&flag"
    st, _, b = gw.request("GET", "/v1/videos?" + q2)
    assert st == 200 and [j["id"] for j in json.loads(b)["data"]] == ids[:0:-1], b
    assert stub.last()["query"] == q2
    st, _, b = gw.request("GET", "/v1/videos")
    assert st == 200 and len(json.loads(b)["data"]) == 3 and stub.last()["query"] == ""
    # the upstream's 400 is relayed with its body
    st, _, b = gw.request("GET", "/v1/videos?limit=0")
    assert st == 400 and gwtest.error_body(b)["param"] == "limit"
    assert_clean(gw)


def test_delete():
    stub, gw = setup()
    vid = create(gw)["id"]
    st, _, b = gw.request("DELETE", "/v1/videos/" + vid)
    assert st == 200 and json.loads(b) == {"id": vid, "object": "video.deleted",
                                           "deleted": True}, b
    r = stub.last()
    assert (r["method"], r["path"], r["status"]) == ("DELETE", "/v1/videos/" + vid, 200)
    st, _, b = gw.request("GET", "/v1/videos/" + vid)
    assert st == 404 and gwtest.error_body(b)["type"] == "invalid_request_error"
    st, _, b = gw.request("DELETE", "/v1/videos/" + vid)
    assert st == 404
    assert stub.jobs() == []
    assert_clean(gw)


def test_remix_json_and_alias():
    stub, gw = setup()
    orig = create(gw, model="veo3.1-fast")
    assert orig["model"] == "veo_3_1-fast"
    # model present: the alias is rewritten, the rest of the body kept byte for byte
    body = b'{"prompt": "again, \\u725b", "model": "veo3.1", "extra": [1, 2]}'
    st, _, b = gw.request("POST", "/v1/videos/%s/remix" % orig["id"], headers=JSON, body=body)
    assert st == 200, b
    rj = json.loads(b)
    assert rj["remixed_from_video_id"] == orig["id"] and rj["status"] == "queued"
    r = stub.last()
    assert r["path"] == "/v1/videos/%s/remix" % orig["id"]
    assert r["json"] == {"prompt": "again, \u725b", "model": "veo_3_1", "extra": [1, 2]}, r
    want = body.replace(b'"veo3.1"', b'"veo_3_1"')
    assert r["body_sha256"] == hashlib.sha256(want).hexdigest()
    assert r["content_length"] == len(want) and r["framing"] == "content-length"
    # no model: passed on unchanged
    body = b'{"prompt":"once more"}'
    st, _, b = gw.request("POST", "/v1/videos/%s/remix" % orig["id"], headers=JSON, body=body)
    assert st == 200, b
    assert stub.last()["body_sha256"] == hashlib.sha256(body).hexdigest()
    # an unknown model is refused by the gateway, not sent
    n = len(stub.requests())
    st, _, b = gw.request("POST", "/v1/videos/%s/remix" % orig["id"], headers=JSON,
                          body=b'{"prompt":"x","model":"sora-9"}')
    assert st == 400 and gwtest.error_body(b)["param"] == "model", b
    assert len([r for r in stub.requests() if r["complete"]]) == n
    assert_clean(gw)


# ---------------------------------------------------------------- the gateway's own routes

def test_models_list():
    stub, gw = setup()
    st, h, b = gw.request("GET", "/v1/models")
    assert st == 200 and h["content-type"] == "application/json", (st, b)
    obj = json.loads(b)
    assert obj["object"] == "list" and isinstance(obj["data"], list)
    ids = [m["id"] for m in obj["data"]]
    for m in obj["data"]:
        assert m["object"] == "model" and isinstance(m["created"], int), m
        assert isinstance(m["owned_by"], str) and m["owned_by"], m
    for name in ("veo3.1", "veo3.1-fast", "veo3.1-4k", "veo_3_1", "veo2", "veo3-fast",
                 "veo_3_1-components-4K"):
        assert name in ids, (name, ids)
    assert len(ids) == len(set(ids)), ids
    # answered by the gateway itself, and only with a key
    st, _, b = gw.request("GET", "/v1/models", key=None)
    assert st == 401 and gwtest.error_body(b)["code"] == "invalid_api_key"
    assert stub.requests() == []
    assert_clean(gw)


def test_healthz_without_auth():
    stub, gw = setup()
    st, h, b = gw.request("GET", "/healthz", key=None)
    assert st == 200 and json.loads(b) == {"status": "ok"}, b
    assert h["content-type"] == "application/json" and h.get("x-request-id")
    st, _, b = gw.request("GET", "/healthz", headers={"Authorization": "Bearer nonsense"},
                          key=None)
    assert st == 200
    assert stub.requests() == []
    assert_clean(gw)


# ---------------------------------------------------------------- routing errors

def test_invalid_ids_400():
    stub, gw = setup()
    paths = ["/v1/videos/a/b", "/v1/videos/..", "/v1/videos/../content",
             "/v1/videos/a%2Fb", "/v1/videos/a%2fb/content", "/v1/videos/" + "a" * 129,
             "/v1/videos/%s/content" % ("b" * 129), "/v1/videos/a.b", "/v1/videos/a b",
             "/v1/videos/a%20b/remix", "/v1/videos//content", "/v1/videos/x/content/more"]
    for p in paths:
        method = "POST" if p.endswith("/remix") else "GET"
        if " " in p:
            resp = gwtest.raw(gw.port, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                       "%s\r\n\r\n" % (p, gw.keys["default"]))
            st, _, b, _ = gwtest.parse_response(resp)
            assert st == 400, (p, resp[:200])
            continue
        st, h, b = gw.request(method, p, headers=JSON, body=b'{"prompt":"x"}'
                              if method == "POST" else b"")
        assert st == 400, (p, st, b)
        e = gwtest.error_body(b)
        assert (e["code"], e["type"]) == ("invalid_id", "invalid_request_error"), (p, e)
    assert stub.requests() == [], [r["path"] for r in stub.requests()]
    # the longest valid id, every allowed character: passed on (the stub's 404)
    for vid in ("a" * 128, "Az09_-"):
        st, _, b = gw.request("GET", "/v1/videos/" + vid)
        assert st == 404 and gwtest.error_body(b)["code"] == "not_found", (vid, b)
        assert stub.last()["path"] == "/v1/videos/" + vid
    assert_clean(gw)


def test_unknown_path_404():
    stub, gw = setup()
    for p in ("/", "/v1", "/v1/video", "/v1/videosX", "/v2/videos", "/healthz/x",
              "/v1/models/veo3", "/V1/videos", "/__stub/requests"):
        for key in ("default", None):
            st, _, b = gw.request("GET", p, key=key)
            assert st == 404, (p, key, st, b)
            e = gwtest.error_body(b)
            assert e["code"] == "not_found" and e["type"] == "invalid_request_error", e
    assert stub.requests() == []
    assert_clean(gw)


def test_wrong_method_405_with_allow():
    stub, gw = setup()
    cases = [("PUT", "/v1/videos", {"GET", "POST"}),
             ("DELETE", "/v1/videos", {"GET", "POST"}),
             ("POST", "/v1/videos/video_1", {"GET", "DELETE"}),
             ("PATCH", "/v1/videos/video_1", {"GET", "DELETE"}),
             ("DELETE", "/v1/videos/video_1/content", {"GET"}),
             ("POST", "/v1/videos/video_1/content", {"GET"}),
             ("GET", "/v1/videos/video_1/remix", {"POST"}),
             ("POST", "/healthz", {"GET"}),
             ("DELETE", "/v1/models", {"GET"})]
    for method, path, allow in cases:
        st, h, b = gw.request(method, path)
        assert st == 405, (method, path, st, b)
        assert "allow" in h, (method, path, h)
        assert {m.strip() for m in h["allow"].split(",")} == allow, (method, path, h["allow"])
        assert gwtest.error_body(b)["code"] == "method_not_allowed"
    assert stub.requests() == []
    assert_clean(gw)


# ---------------------------------------------------------------- keep-alive

def _get(c, path, key):
    c.send("GET %s HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n\r\n" % (path, key))
    st, h, b, _ = gwtest.parse_response(c.read_response(10))
    return st, h, b


def test_client_keepalive_many_requests():
    stub, gw = setup()
    vid = create(gw)["id"]
    key = gw.keys["default"]
    rids = set()
    body = json.dumps({"model": "veo3.1", "prompt": "p", "seconds": "8",
                       "size": "16x9"}).encode()
    with gwtest.RawConn(gw.port) as c:
        for i in range(3):
            for path, want in (("/healthz", 200), ("/v1/models", 200),
                               ("/v1/videos/" + vid, 200), ("/v1/videos?limit=1", 200),
                               ("/v1/videos/video_nope", 404), ("/v1/nope", 404),
                               ("/v1/videos/a.b", 400)):
                st, h, b = _get(c, path, key)
                assert st == want, (i, path, st, b)
                assert "connection" not in h or h["connection"].lower() != "close", h
                rids.add(h["x-request-id"])
            c.send(b"POST /v1/videos HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                   % (key.encode(), len(body), body))
            st, h, b, _ = gwtest.parse_response(c.read_response(10))
            assert st == 200 and json.loads(b)["model"] == "veo_3_1", b
            rids.add(h["x-request-id"])
        assert not c.at_eof(0.2), "the gateway closed a keep-alive connection"
    assert len(rids) == 3 * 8, "X-Request-Id must be unique per request"
    assert_clean(gw)


def test_upstream_keepalive_reuse():
    stub, gw = setup()
    vid = create(gw)["id"]
    key = gw.keys["default"]
    with gwtest.RawConn(gw.port) as c:
        for _ in range(6):
            st, _, b = _get(c, "/v1/videos/" + vid, key)
            assert st == 200, b
    recs = stub.requests(path="/v1/videos/" + vid)
    assert len(recs) == 6
    conns = {r["conn"] for r in recs}
    assert len(conns) == 1, "upstream connections were not reused: %s" % \
        [(r["conn"], r["conn_request"]) for r in recs]
    assert [r["conn_request"] for r in recs] == list(range(recs[0]["conn_request"],
                                                           recs[0]["conn_request"] + 6))
    # an upstream that closed its idle connection: the gateway opens a new one
    assert stub.close_idle() >= 1
    # (the stub answers before its sockets are really closed; the one left open
    # is the control connection asking)
    gwtest.wait_for(lambda: stub.stats()["connections_open"] == 1, 5, 0.01,
                    "the stub to close its idle connections")
    with gwtest.RawConn(gw.port) as c:
        st, _, b = _get(c, "/v1/videos?limit=1", key)
        assert st == 200, (st, b)
    assert stub.last()["conn"] not in conns
    assert_clean(gw)


def test_zz_clean_shutdown():
    """Last: the shared gateway exits 0 on SIGTERM, with no sanitizer report (leaks
    are only reported at exit) and no secret in its output."""
    stub, gw = setup()
    gwtest.forget_shared_gateway()
    gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])
    lines = gw.log_json()
    assert lines and all(set(("rid", "route", "status")) <= set(line) for line in lines)


if __name__ == "__main__":
    gwtest.main(globals())    # also stops the shared stub and gateway
