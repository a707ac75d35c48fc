"""End to end with the official OpenAI Node SDK (tests/sdk/sdk_e2e.mjs, `openai` pinned in
tests/sdk/package-lock.json): the client changes only baseURL and apiKey, and every call it
makes must work through the gateway. The stub's records show what reached the upstream.

Needs node and tests/sdk/node_modules (`cd tests/sdk && npm ci`; scripts/test.sh does it).
Without them these tests FAIL: the README promises that the SDK works, so a run that cannot
check it must not pass quietly."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

SDK_DIR = os.path.join(gwtest.SOURCE_DIR, "tests", "sdk")
SCRIPT = os.path.join(SDK_DIR, "sdk_e2e.mjs")
PROMPT = "让牛快乐的跳科目三"
CONTENT_SIZE = 2 * 1024 * 1024 + 7        # what the stub serves per video
STREAM_SIZE = 3 * 1024 * 1024 + 123       # the fs.createReadStream upload: over the lookahead
SMALL_STREAM_SIZE = 100 * 1024 + 5        # a streamed upload that fits in the lookahead
LOOKAHEAD = 256 * 1024                    # the gateway's default
ALL_STEPS = ["create_buffer", "create_stream", "create_late_model", "bad_request", "retrieve",
             "download", "download_thumbnail", "list", "list_paged", "remix", "delete",
             "auth_error"]         # rate_limited runs alone: test_sdk_backs_off_on_429
CREATE_PARTS = ["model", "prompt", "seconds", "size", "input_reference"]   # the script's key order
LATE_PARTS = ["input_reference", "prompt", "seconds", "size", "model"]


# ---------------------------------------------------------------------------- helpers

def require_sdk():
    """node and the pinned SDK, or a clear failure (never a skip)."""
    node = shutil.which("node")
    assert node, "node is not installed (scripts/install-deps.sh installs nodejs)"
    pkg = os.path.join(SDK_DIR, "node_modules", "openai", "package.json")
    assert os.path.exists(pkg), (
        "%s is missing: the SDK test needs the pinned openai package; run "
        "`(cd tests/sdk && npm ci)` (scripts/test.sh does it when node_modules is absent)"
        % os.path.join(SDK_DIR, "node_modules"))
    with open(pkg) as f:
        version = json.load(f)["version"]
    with open(os.path.join(SDK_DIR, "package-lock.json")) as f:
        locked = json.load(f)["packages"]["node_modules/openai"]["version"]
    assert version == locked, ("tests/sdk/node_modules has openai %s but package-lock.json pins "
                               "%s: run `(cd tests/sdk && npm ci)`" % (version, locked))
    return node


class Inputs:
    """The files the script uploads: a small PNG-like frame (Buffer via toFile) and a
    larger file (fs.createReadStream), with their sha256."""

    def __init__(self, stream_size=STREAM_SIZE):
        self.dir = tempfile.mkdtemp(prefix="gwtest-sdk-")
        self.frame = b"\x89PNG\r\n\x1a\n" + os.urandom(20000) + b"\r\n--openai-x\r\n"
        self.frame_path = os.path.join(self.dir, "frame.png")
        with open(self.frame_path, "wb") as f:
            f.write(self.frame)
        self.frame_sha = hashlib.sha256(self.frame).hexdigest()
        self.stream_path = os.path.join(self.dir, "reference.bin")
        h = hashlib.sha256()
        with open(self.stream_path, "wb") as f:
            for chunk in gwtest.pattern_chunks(stream_size, "sdk-stream"):
                f.write(chunk)
                h.update(chunk)
        self.stream_size = stream_size
        self.stream_sha = h.hexdigest()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        shutil.rmtree(self.dir, ignore_errors=True)
        return False


def run_sdk(base_url, api_key, inputs, steps=None, timeout=60, other_key=None):
    """Run sdk_e2e.mjs -> {step: result}; asserts it printed one line per step asked
    (ALL_STEPS unless told: the script's own default has more)."""
    node = require_sdk()
    env = dict(os.environ, BASE_URL=base_url, API_KEY=api_key, FRAME_PATH=inputs.frame_path,
               STREAM_PATH=inputs.stream_path, PROMPT=PROMPT, POLL_MS="50",
               DEADLINE_MS="15000")
    env["STEPS"] = ",".join(steps or ALL_STEPS)
    if other_key:
        env["OTHER_KEY"] = other_key
    try:
        p = subprocess.run([node, SCRIPT], env=env, cwd=SDK_DIR, capture_output=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("sdk_e2e.mjs did not finish in %ss; stdout:\n%s\nstderr:\n%s"
                             % (timeout, (e.stdout or b"").decode("utf-8", "replace"),
                                (e.stderr or b"").decode("utf-8", "replace")[-3000:]))
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    results = {}
    for line in out.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            results[r["step"]] = r
    want = steps or ALL_STEPS
    bad = [r for r in results.values() if not r["ok"]]
    assert not bad and p.returncode == 0 and list(results) == want, (
        "sdk_e2e.mjs exit %d; failed steps: %s\nstdout:\n%s\nstderr:\n%s"
        % (p.returncode, [r["step"] for r in bad], out, err[-3000:]))
    return results


def header(rec, name):
    """A header's value in a stub record (case-insensitive), or None."""
    for k, v in rec["headers"]:
        if k.lower() == name.lower():
            return v
    return None


def parts(rec):
    return {p["name"]: p for p in rec["parts"]}


def creates(stub):
    """The stub's POST /v1/videos records, oldest first."""
    return stub.requests(path="/v1/videos", method="POST")


def check_create(rec, order, file_sha, file_size, filename, ctype, model="veo_3_1"):
    assert rec["status"] == 200 and rec["complete"], rec
    assert rec["multipart"]["error"] is None, rec["multipart"]
    assert [p["name"] for p in rec["parts"]] == order, [p["name"] for p in rec["parts"]]
    ps = parts(rec)
    assert ps["model"]["value"] == model, ps["model"]
    f = ps["input_reference"]
    assert (f["filename"], f["content_type"], f["size"], f["sha256"], f["complete"]) == \
        (filename, ctype, file_size, file_sha, True), f
    if rec["framing"] == "content-length":
        assert rec["content_length"] == rec["body_size"], rec


def expected_framing(client_chunked, body_size, model_offset, fallback):
    """What goes upstream, per the README: an exact Content-Length when the body's length
    can be known within the lookahead (a Content-Length client with `model` in the first
    LOOKAHEAD bytes, or a whole body no larger than that); otherwise the fallback."""
    if not client_chunked and model_offset < LOOKAHEAD:
        return "content-length"
    if body_size <= LOOKAHEAD:
        return "content-length"
    return "content-length" if fallback == "spool" else "chunked"


def check_no_team_key(stub, gw):
    """The upstream never saw a team key; the gateway's logs hold no key at all."""
    keys = list(gw.keys.values())
    for r in stub.requests():
        assert header(r, "Authorization") == "Bearer " + stub.key, r["headers"]
        blob = json.dumps(r, ensure_ascii=False)
        for k in keys:
            assert k not in blob, "team key reached the upstream: %s %s" % (r["method"], r["path"])
        assert header(r, "X-Request-Id"), r["headers"]
    log = gw.log()
    for k in keys + [stub.key]:
        assert k not in log, "a key appears in the gateway's log"
    gwtest.assert_no_sanitizer_report(log)


# ---------------------------------------------------------------------------- tests

def test_sdk_wire_baseline():
    """The SDK straight at the stub (no gateway): what the client itself sends. This is the
    premise of the gateway tests below: Buffer uploads carry Content-Length, streamed ones
    are chunked, parts come in the caller's key order."""
    require_sdk()
    with Inputs() as inp, gwtest.Stub(job_seconds=1, content_size=CONTENT_SIZE) as stub:
        res = run_sdk(stub.url, stub.key, inp,
                      ["create_buffer", "create_stream", "create_late_model", "edit_ref",
                       "edit_stream", "extend_ref", "character_create", "character_get",
                       "auth_error"])
        # issue 9: edit/extend/createCharacter always send a form; a video reference as
        # the field video[id], a file streamed (chunked) as the part `video`
        ref, streamed = stub.requests(path="/v1/videos/edits")
        ext, = stub.requests(path="/v1/videos/extensions")
        for rec in (ref, ext):
            assert rec["multipart"] is not None and "video[id]" in parts(rec), rec["parts"]
        assert parts(ext)["seconds"]["value"] == "4"
        assert streamed["framing"] == "chunked" and parts(streamed)["video"]["filename"] == \
            "reference.bin", streamed["parts"]
        ch, = stub.requests(path="/v1/videos/characters")
        assert [p["name"] for p in ch["parts"]] == ["name", "video"], ch["parts"]
        assert ch["framing"] == "chunked"
        assert res["create_buffer"]["sent_sha256"] == inp.frame_sha
        buf, stream, late = [r for r in creates(stub) if r["status"] == 200]
        assert buf["framing"] == "content-length"
        assert buf["multipart"]["boundary"].startswith("----formdata-undici-"), buf["multipart"]
        check_create(buf, CREATE_PARTS, inp.frame_sha, len(inp.frame), "frame.png", "image/png",
                     model="veo3.1")
        for rec, order in ((stream, CREATE_PARTS), (late, LATE_PARTS)):
            assert rec["framing"] == "chunked" and header(rec, "Content-Length") is None, rec
            assert rec["multipart"]["boundary"].startswith("openai-"), rec["multipart"]
            check_create(rec, order, inp.stream_sha, inp.stream_size, "reference.bin",
                         "application/octet-stream", model="veo3.1")
        assert parts(buf)["prompt"]["value"] == PROMPT
        for r in (buf, stream, late):
            assert header(r, "User-Agent") == "OpenAI/JS 7.57.0", r["headers"]
            assert header(r, "x-stainless-retry-count") == "0", r["headers"]
        assert res["auth_error"]["status"] == 401


def test_sdk_through_gateway():
    """Every SDK call through the gateway with the default framing (lookahead 256k,
    fallback chunked)."""
    require_sdk()
    with Inputs() as inp, gwtest.Stub(job_seconds=1, content_size=CONTENT_SIZE) as stub, \
            gwtest.Gateway(stub, fallback="chunked") as gw:
        res = run_sdk(gw.url, gw.keys["default"], inp)
        jb = res["create_buffer"]["job"]
        js = res["create_stream"]["job"]
        jl = res["create_late_model"]["job"]
        for j in (jb, js, jl):
            assert j["object"] == "video" and j["status"] == "queued", j
            assert j["model"] == "veo_3_1", j           # the upstream's job, as it answered

        # what the upstream received: alias rewritten, the exact file bytes, framing as
        # the configuration implies
        recs = creates(stub)
        accepted = [r for r in recs if r["status"] == 200]
        assert len(accepted) == 3 and all(not r["complete"] for r in recs if r["status"] != 200), \
            "the refused create must not reach the upstream complete: %s" % [
                (r["status"], r["complete"], [p.get("value") for p in r["parts"]]) for r in recs]
        buf, stream, late = accepted
        check_create(buf, CREATE_PARTS, inp.frame_sha, len(inp.frame), "frame.png", "image/png")
        check_create(stream, CREATE_PARTS, inp.stream_sha, inp.stream_size, "reference.bin",
                     "application/octet-stream")
        check_create(late, LATE_PARTS, inp.stream_sha, inp.stream_size, "reference.bin",
                     "application/octet-stream")
        assert buf["framing"] == expected_framing(False, buf["body_size"], 0, "chunked") \
            == "content-length", buf["framing"]
        assert stream["framing"] == expected_framing(True, stream["body_size"], 0, "chunked") \
            == "chunked", stream["framing"]
        assert late["framing"] == "chunked", late["framing"]
        for r in recs:
            assert parts(r)["seconds"]["value"] in ("8", "4")
        assert parts(buf)["prompt"]["value"] == PROMPT == parts(stream)["prompt"]["value"]
        assert buf["multipart"]["boundary"].startswith("----formdata-undici-")
        assert stream["multipart"]["boundary"].startswith("openai-")
        assert [r["path"] for r in stub.requests(method="POST")][3:] == \
            ["/v1/videos/%s/remix" % jb["id"]]

        # every SDK call reached the upstream once: no retries hid an error
        for r in stub.requests():
            assert header(r, "x-stainless-retry-count") == "0", (r["method"], r["path"])
            assert header(r, "User-Agent") == "OpenAI/JS 7.57.0", r["headers"]

        # the job's life
        done = res["retrieve"]["jobs"]
        for name, j in (("create_buffer", jb), ("create_stream", js)):
            assert done[name]["id"] == j["id"] and done[name]["status"] == "completed"
            assert done[name]["progress"] == 100 and done[name]["statuses"][-1] == "completed"
        d = res["download"]
        assert (d["status"], d["content_type"], d["size"]) == (200, "video/mp4", CONTENT_SIZE), d
        assert d["sha256"] == gwtest.content_sha256(jb["id"], CONTENT_SIZE), d
        assert d["request_id"], d
        t = res["download_thumbnail"]
        assert (t["content_type"], t["size"]) == ("image/webp", CONTENT_SIZE), t
        assert t["sha256"] == gwtest.content_sha256(js["id"], CONTENT_SIZE, "thumbnail"), t
        assert any(r["query"] == "variant=thumbnail" for r in stub.requests()
                   if r["path"].endswith("/content")), "variant not forwarded"
        ids = [jb["id"], js["id"], jl["id"]]
        assert set(ids) <= set(res["list"]["ids"]), res["list"]
        assert res["list_paged"]["ids"] == ids, res["list_paged"]       # asc, one per page
        assert any("after=" + js["id"] in r["query"] for r in stub.requests(path="/v1/videos")), \
            "the SDK's cursor (after=) did not reach the upstream"
        rm = res["remix"]
        assert rm["source"] == jb["id"] and rm["job"]["id"] not in ids, rm
        assert rm["job"]["status"] == "queued", rm
        remix_rec = stub.requests(path="/v1/videos/%s/remix" % jb["id"])[0]
        assert remix_rec["json"] == {"prompt": "让牛更快乐地跳科目三"}, remix_rec["json"]
        dl = res["delete"]
        assert [(x["id"], x["object"], x["deleted"]) for x in dl["deleted"]] == \
            [(i, "video.deleted", True) for i in ids + [rm["job"]["id"]]], dl
        assert dl["listed_after"] == [], dl

        # errors the gateway makes itself arrive as the SDK's typed errors, also when they
        # are answered while the SDK is still streaming the file (not "Connection error")
        br = res["bad_request"]
        assert (br["name"], br["status"], br["param"], br["code"]) == \
            ("BadRequestError", 400, "seconds", "invalid_value"), br
        assert br["message"] == "400 " + br["error_body"]["message"], br
        ae = res["auth_error"]
        for e in (ae, ae["upload"]):
            assert (e["name"], e["status"], e["code"], e["type"]) == \
                ("AuthenticationError", 401, "invalid_api_key", "invalid_request_error"), e
            assert e["message"] == "401 " + e["error_body"]["message"], e
            assert e["request_id"], e
        assert not stub.requests(path="/v1/videos/video_does_not_matter"), \
            "a request with a wrong team key reached the upstream"

        # the access log names the alias and what was sent
        def logged_creates():
            log = [e for e in gw.log_json() if e.get("route") == "create" and e["status"] == 200]
            return log if len(log) >= 3 else None

        log = gwtest.wait_for(logged_creates, what="access log")
        assert len(log) == 3, log
        for e in log:
            assert (e["key"], e["model"], e["model_sent"]) == ("default", "veo3.1", "veo_3_1"), e
        check_no_team_key(stub, gw)


def test_sdk_stream_spool():
    """fallback = spool: the chunked SDK upload reaches the upstream with an exact
    Content-Length, model first or last."""
    require_sdk()
    with Inputs() as inp, gwtest.Stub(job_seconds=1) as stub, \
            gwtest.Gateway(stub, fallback="spool", spool_dir=inp.dir) as gw:
        res = run_sdk(gw.url, gw.keys["default"], inp, ["create_stream", "create_late_model"])
        stream, late = creates(stub)
        for rec, order in ((stream, CREATE_PARTS), (late, LATE_PARTS)):
            assert rec["framing"] == expected_framing(True, rec["body_size"], 0, "spool") \
                == "content-length", rec["framing"]
            assert header(rec, "Transfer-Encoding") is None, rec["headers"]
            check_create(rec, order, inp.stream_sha, inp.stream_size, "reference.bin",
                         "application/octet-stream")
        assert res["create_stream"]["job"]["model"] == "veo_3_1"
        check_no_team_key(stub, gw)


def test_sdk_small_stream_gets_length():
    """A streamed (chunked) SDK upload that ends within the lookahead goes upstream with an
    exact Content-Length whatever the fallback."""
    require_sdk()
    with Inputs(SMALL_STREAM_SIZE) as inp, gwtest.Stub(job_seconds=1) as stub, \
            gwtest.Gateway(stub, fallback="chunked") as gw:
        run_sdk(gw.url, gw.keys["default"], inp, ["create_stream", "create_late_model"])
        stream, late = creates(stub)
        for rec, order in ((stream, CREATE_PARTS), (late, LATE_PARTS)):
            assert rec["framing"] == expected_framing(True, rec["body_size"], 0, "chunked") \
                == "content-length", rec["framing"]
            check_create(rec, order, inp.stream_sha, inp.stream_size, "reference.bin",
                         "application/octet-stream")
        check_no_team_key(stub, gw)


EDIT_STEPS = ["create_buffer", "edit_ref", "edit_stream", "extend_ref", "extend_stream",
              "character_create", "character_get", "not_owned"]


def test_sdk_edits_extensions_characters():
    """issue 9: videos.edit, extend, createCharacter and getCharacter through the gateway,
    with an id reference and with a file streamed by the SDK (chunked), on a gateway with a
    store and two upstream keys of separate provider accounts: each result is the caller's,
    a referenced video goes out with the key that made it, and another key gets
    NotFoundError for the video and the character without the upstream hearing of it."""
    require_sdk()
    d = gwtest.shared_tmpdir("gwtest-sdk-")
    db = os.path.join(d, "gw-%d.db" % len(os.listdir(d)))
    with Inputs() as inp, gwtest.Stub(extra_keys=1) as stub:
        stub.config(accounts=1)
        with gwtest.Gateway(stub, keys=("default", "other"), upstream_keys=stub.keys,
                            threads=1, extra={"store": {"path": db}}) as gw:
            res = run_sdk(gw.url, gw.keys["default"], inp, EDIT_STEPS,
                          other_key=gw.keys["other"])
            src = res["create_buffer"]["job"]
            listed = [j["id"] for j in json.loads(gw.request("GET", "/v1/videos?limit=100")[2])[
                "data"]]
            made_with = header(creates(stub)[0], "Authorization")
            for name in ("edit_ref", "edit_stream", "extend_ref", "extend_stream"):
                j = res[name]["job"]
                assert j["object"] == "video" and j["status"] == "queued", (name, j)
                assert j["id"] in listed, (name, listed)
            assert res["extend_ref"]["job"]["seconds"] == "12"      # 8 + 4, stitched
            edits = stub.requests(path="/v1/videos/edits")
            exts = stub.requests(path="/v1/videos/extensions")
            assert len(edits) == 2 and len(exts) == 2, (edits, exts)
            for ref, streamed in (edits, exts):
                # the reference: the SDK's video[id] field, with the key that made the video
                assert [(p["name"], p.get("value")) for p in ref["parts"]
                        if p["name"].startswith("video")] == [("video[id]", src["id"])]
                assert header(ref, "Authorization") == made_with, ref["headers"]
                # the file: streamed by the SDK (chunked), every byte through
                f = parts(streamed)["video"]
                assert streamed["complete"] and streamed["status"] == 200, streamed
                assert (f["size"], f["sha256"]) == (inp.stream_size, inp.stream_sha), f
                assert header(streamed, "Content-Length") is not None or \
                    streamed["framing"] == "chunked", streamed["framing"]
            c = res["character_create"]["character"]
            assert c["name"] == "Moo" and res["character_get"]["character"] == c, res
            crec = stub.requests(path="/v1/videos/characters")[0]
            assert parts(crec)["video"]["sha256"] == inp.stream_sha, crec["parts"]
            assert header(stub.requests(path="/v1/videos/characters/" + c["id"])[0],
                          "Authorization") == header(crec, "Authorization")
            no = res["not_owned"]
            for e in (no["edit"], no["extend"], no["character"]):
                assert (e["name"], e["status"], e["code"]) == \
                    ("NotFoundError", 404, "not_found"), e
            # the other key's requests never reached the upstream
            assert len(stub.requests(path="/v1/videos/edits")) == 2
            assert len(stub.requests(path="/v1/videos/characters/" + c["id"])) == 1
            check_no_team_key_pool(stub, gw)


def check_no_team_key_pool(stub, gw):
    """check_no_team_key for a gateway with a pool of upstream keys."""
    keys = list(gw.keys.values())
    for r in stub.requests():
        assert header(r, "Authorization") in ["Bearer " + k for k in stub.keys], r["headers"]
        blob = json.dumps(r, ensure_ascii=False)
        assert not [k for k in keys if k in blob], (r["method"], r["path"])
    log = gw.log()
    assert not [k for k in keys + stub.keys if k in log], "a key appears in the gateway's log"
    gwtest.assert_no_sanitizer_report(log)


def test_sdk_backs_off_on_429():
    """The SDK's own retry honours the gateway's 429 (retry-after-ms, Retry-After): a
    key limited to one create a second gets both of two back-to-back creates through,
    the second after the wait the gateway asked for."""
    with Inputs(stream_size=SMALL_STREAM_SIZE) as inputs, gwtest.Stub() as stub, \
            gwtest.Gateway(stub, key_options={"default": {"rpm": 60, "burst": 1}}) as gw:
        r = run_sdk(gw.url, gw.keys["default"], inputs, steps=["rate_limited"])
        r = r["rate_limited"]
        assert r["first"] != r["second"] and r["limit"] == "60", r
        assert r["second_ms"] >= 800, r      # it waited for the refill, ~1 s
        statuses = [line["status"] for line in
                    gw.wait_log(lambda line: line.get("route") == "create", n=3)]
        assert statuses[:2] == [200, 429] and statuses[-1] == 200, statuses
        assert len(creates(stub)) == 2
        check_no_team_key(stub, gw)


gwtest.main(globals())
