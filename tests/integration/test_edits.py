"""Edits, extensions and characters (issue 9) through the gateway, on a real SQLite
file: each result is a job (or a character) owned by the caller's key, listed and
metered with its kind; a referenced video or character of another key is 404 and
the upstream hears nothing of it; a referenced video goes out with the upstream key
that made it (the stub plays separate provider accounts); an extension's seconds
are checked and reserved like a create's and given back when it fails; bad input
is a 400 that forwards nothing."""

import json
import os
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}
# Under AddressSanitizer freed memory waits in a quarantine that would count in VmHWM;
# a small one keeps the memory bound meaningful (ignored without sanitizers).
ASAN_SMALL = {"ASAN_OPTIONS": ":".join(filter(None, [
    os.environ.get("ASAN_OPTIONS", ""), "quarantine_size_mb=4",
    "thread_local_quarantine_size_kb=256"]))}


def store_gateway(stub, **kw):
    d = gwtest.shared_tmpdir("gwtest-edits-")
    path = os.path.join(d, "gw-%d.db" % len(os.listdir(d)))
    extra = kw.pop("extra", {})
    extra.setdefault("store", {})["path"] = path
    return gwtest.Gateway(stub, extra=extra, **kw), path


create = gwtest.create_job


def form(gw, path, key, fields, chunked=False):
    """POST a streamed multipart body -> (status, parsed body)."""
    mp = gwtest.multipart_stream(fields)
    st, _, b = gw.request("POST", path, key=key, headers=mp.headers(chunked=chunked),
                          body=iter(mp) if chunked else b"".join(mp))
    return st, json.loads(b) if b else None


def post_json(gw, path, key, obj):
    st, _, b = gw.request("POST", path, key=key, headers=JSON, body=json.dumps(obj).encode())
    return st, json.loads(b) if b else None


def auth_of(rec):
    return dict((k.lower(), v) for k, v in rec["headers"])["authorization"]


def kinds(path):
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT id, kind FROM jobs"))


def test_edit_extend_character_owned_pinned_listed():
    with gwtest.Stub(extra_keys=1) as stub:
        stub.config(accounts=1)
        gw, path = store_gateway(stub, keys=("alice", "bob"), upstream_keys=stub.keys,
                                 threads=1)
        with gw:
            a = create(gw, "alice")
            create(gw, "alice")      # the next create goes to the other account
            made_with = auth_of(stub.requests(path="/v1/videos", method="POST")[0])
            # an edit naming the video in a form (the SDK's video[id]), then an
            # extension naming it in JSON: both go out with the key that made it
            st, e = form(gw, "/v1/videos/edits", "alice",
                         [("prompt", "make it blue"), ("video[id]", a["id"])])
            assert st == 200 and e["object"] == "video", e
            st, x = post_json(gw, "/v1/videos/extensions", "alice",
                              {"prompt": "go on", "seconds": "4", "video": {"id": a["id"]}})
            assert st == 200, x
            assert x["seconds"] == "12"          # the stitched total, as the provider says
            for p in ("/v1/videos/edits", "/v1/videos/extensions"):
                recs = stub.requests(path=p)
                assert len(recs) == 1 and auth_of(recs[0]) == made_with, recs
            # an uploaded video, streamed (chunked, as the Node SDK sends a file stream)
            st, u = form(gw, "/v1/videos/edits", "alice",
                         [("prompt", "p"), ("video", "clip.mp4", 3 * 1024 * 1024,
                                            "video/mp4")], chunked=True)
            assert st == 200, u
            up = stub.requests(path="/v1/videos/edits")[-1]
            assert [p["name"] for p in up["parts"]] == ["prompt", "video"], up["parts"]
            assert up["parts"][1]["size"] == 3 * 1024 * 1024 and up["complete"]
            # each result is alice's job, of its kind, in her list and nobody else's
            for j in (e, x, u):
                assert gw.request("GET", "/v1/videos/" + j["id"], key="alice")[0] == 200
                assert gw.request("GET", "/v1/videos/" + j["id"], key="bob")[0] == 404
            ids = [j["id"] for j in json.loads(gw.request("GET", "/v1/videos?limit=100",
                                                          key="alice")[2])["data"]]
            assert {e["id"], x["id"], u["id"]} <= set(ids), ids
            k = kinds(path)
            assert (k[a["id"]], k[e["id"]], k[x["id"]], k[u["id"]]) == \
                ("create", "edit", "extend", "edit"), k
            # the usage report, per kind: alice made 2 creates, 2 edits, 1 extension
            p = subprocess.run([gwtest.gateway_bin(), "usage", "-c", gw.conf_path, "--by-kind",
                                "--json", "--key", "alice"], capture_output=True, text=True,
                               timeout=30)
            assert p.returncode == 0, p.stderr
            by_kind = {r["kind"]: r for r in json.loads(p.stdout)}
            assert {kd: r["jobs"] for kd, r in by_kind.items()} == \
                {"create": 2, "edit": 2, "extend": 1}, p.stdout
            assert by_kind["extend"]["seconds"] == 4, by_kind     # the segment, not 12
            p = subprocess.run([gwtest.gateway_bin(), "usage", "-c", gw.conf_path, "--by-kind"],
                               capture_output=True, text=True, timeout=30)
            assert p.returncode == 0 and p.stdout.split()[:4] == \
                ["key", "model", "kind", "jobs"], p.stdout
            # a character: alice's, pinned to the key that made it
            st, c = form(gw, "/v1/videos/characters", "alice",
                         [("name", "Moo"), ("video", "cow.mp4", 100000, "video/mp4")])
            assert st == 200 and c["name"] == "Moo" and c["id"].startswith("char_"), c
            st, _, b = gw.request("GET", "/v1/videos/characters/" + c["id"], key="alice")
            assert st == 200 and json.loads(b)["id"] == c["id"], b
            made = auth_of(stub.requests(path="/v1/videos/characters")[0])
            assert auth_of(stub.requests(path="/v1/videos/characters/" + c["id"])[0]) == made
            # bob: 404 for alice's character and for every way of naming her video,
            # and the upstream hears nothing of it
            before = len(stub.requests())
            st, _, b = gw.request("GET", "/v1/videos/characters/" + c["id"], key="bob")
            assert st == 404 and gwtest.error_body(b)["code"] == "not_found", b
            st, _, b = gw.request("GET", "/v1/videos/characters/char_nobody", key="bob")
            assert st == 404, b
            for p, fields in (("/v1/videos/edits", [("prompt", "x"), ("video[id]", a["id"])]),
                              ("/v1/videos/extensions", [("prompt", "x"), ("seconds", "4"),
                                                         ("video[id]", a["id"])])):
                for chunked in (False, True):
                    st, body = form(gw, p, "bob", fields, chunked=chunked)
                    assert st == 404 and body["error"]["param"] == "video", (p, st, body)
            st, body = post_json(gw, "/v1/videos/edits", "bob",
                                 {"prompt": "x", "video": {"id": a["id"]}})
            assert st == 404 and a["id"] in body["error"]["message"], body
            assert len(stub.requests()) == before, stub.requests()[before:]
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + stub.keys)


def test_bad_input_forwards_nothing():
    with gwtest.Stub() as stub:
        gw, _ = store_gateway(stub, keys=("alice",))
        with gw:
            a = create(gw, "alice")
            v2 = create(gw, "alice", model="veo2")
            before = len(stub.requests())
            big = ("video", "clip.mp4", 200000, "video/mp4")
            cases = [
                ("/v1/videos/edits", [("prompt", "p"), ("video[id]", a["id"]),
                                      ("video[id]", a["id"])], "video"),
                ("/v1/videos/edits", [("prompt", "p"), ("video[id]", a["id"]), big], "video"),
                ("/v1/videos/edits", [("prompt", "p"), big, ("video[id]", a["id"])], "video"),
                ("/v1/videos/edits", [("prompt", "p"), big, big], "video"),
                ("/v1/videos/edits", [("prompt", "p"), ("video[id]", "a.b")], "video"),
                ("/v1/videos/edits", [("prompt", "p"), ("video[id]", "v" * 129)], "video"),
                ("/v1/videos/edits", [("prompt", "p")], "video"),
                ("/v1/videos/edits", [("video[id]", a["id"])], "prompt"),
                ("/v1/videos/edits", [("prompt", "p"), ("model", "veo3.1"),
                                      ("video[id]", a["id"])], "model"),
                ("/v1/videos/edits", [("prompt", "p"), ("video[id]", v2["id"])], "video"),
                ("/v1/videos/extensions", [("prompt", "p"), ("seconds", "5"),
                                           ("video[id]", a["id"])], "seconds"),
                ("/v1/videos/extensions", [("prompt", "p"), ("video[id]", a["id"]),
                                           ("seconds", "6")], "seconds"),
                ("/v1/videos/extensions", [("prompt", "p"), ("seconds", "5"), big], "seconds"),
                ("/v1/videos/extensions", [("prompt", "p"), ("video[id]", a["id"])], "seconds"),
                ("/v1/videos/characters", [("name", "n" * 10000), big], "name"),
                ("/v1/videos/characters", [big, ("name", "n" * 10000)], "name"),
                ("/v1/videos/characters", [("name", "n"), ("name", "m"), big], "name"),
                ("/v1/videos/characters", [("name", "n")], "video"),
                ("/v1/videos", [("model", "veo3.1"), ("prompt", "p"),
                                ("characters[][id]", "char_x")], "characters"),
            ]
            for p, fields, param in cases:
                for chunked in (False, True):
                    st, body = form(gw, p, "alice", fields, chunked=chunked)
                    assert st == 400, (p, fields[:3], chunked, st, body)
                    assert body["error"]["param"] == param, (p, chunked, body)
            for obj, param in (({"prompt": "p", "video": a["id"]}, "video"),
                               ({"prompt": "p", "video": {"id": 5}}, "video"),
                               ({"prompt": "p", "video": {"id": a["id"], "x": 1}}, "video"),
                               ({"prompt": "p", "video": {"id": "../x"}}, "video"),
                               ('{"prompt": "p", "video": {"id": "%s"}, "video": {"id": '
                                '"%s"}}' % (a["id"], a["id"]), "video")):
                raw = obj if isinstance(obj, str) else json.dumps(obj)
                st, body = gw.request("POST", "/v1/videos/edits", key="alice", headers=JSON,
                                      body=raw.encode())[::2]
                assert st == 400 and json.loads(body)["error"]["param"] == param, (obj, body)
            st, body = post_json(gw, "/v1/videos", "alice",
                                 {"model": "veo3.1", "prompt": "p",
                                  "characters": [{"id": "char_x"}]})
            assert st == 400 and body["error"]["param"] == "characters", body
            # nothing reached the upstream whole: a refusal after a streamed file cut
            # the request before its closing delimiter
            recs = stub.requests()[before:]
            assert not [r for r in recs if r["complete"]], recs
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_extension_quota_reserved_and_refunded():
    with gwtest.Stub() as stub:
        gw, path = store_gateway(stub, keys=("alice",),
                                 key_options={"alice": {"daily_seconds": 12}})
        with gw:
            a = create(gw, "alice")                      # 8 of 12 used

            def extend(seconds):
                return form(gw, "/v1/videos/extensions", "alice",
                            [("prompt", "p"), ("seconds", seconds), ("video[id]", a["id"])])
            st, body = extend("8")                       # 8 + 8 > 12
            assert st == 429 and body["error"]["code"] == "insufficient_quota", body
            assert not [r for r in stub.requests(path="/v1/videos/extensions")
                        if r["complete"]]
            # the upstream fails the extension: its 4 s are given back at once
            stub.fault("500", path_prefix="/v1/videos/extensions")
            assert extend("4")[0] == 500
            st, x = extend("4")
            assert st == 200, x
            # 12 of 12 used now: the ledger says 4 for the extension, not the stitched 12
            with sqlite3.connect(path) as db:
                assert db.execute("SELECT seconds, kind FROM jobs WHERE id = ?",
                                  (x["id"],)).fetchone() == (4, "extend")
            assert extend("4")[0] == 429
            # the extension job fails: its 4 s come back, once
            stub.set_job(x["id"], status="failed")
            st, _, b = gw.request("GET", "/v1/videos/" + x["id"], key="alice")
            assert st == 200 and json.loads(b)["status"] == "failed"
            gwtest.wait_for(lambda: extend("4")[0] == 200, timeout=5, interval=0.2,
                            what="the refund of the failed extension")
            assert extend("4")[0] == 429
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_admin_usage_by_kind():
    """/admin/usage?group=key,model,kind[,day]: the usage report per kind of job."""
    with gwtest.Stub() as stub:
        admin_port = gwtest.free_port()
        gw, _ = store_gateway(stub, keys=("alice", "lead"),
                              key_options={"lead": {"admin": "yes"}},
                              extra={"admin": {"listen": "127.0.0.1:%d" % admin_port}})
        with gw:
            a = create(gw, "alice")
            assert form(gw, "/v1/videos/edits", "alice",
                        [("prompt", "p"), ("video[id]", a["id"])])[0] == 200
            assert form(gw, "/v1/videos/extensions", "alice",
                        [("prompt", "p"), ("seconds", "4"), ("video[id]", a["id"])])[0] == 200

            def admin(path):
                return gwtest.request(admin_port, "GET", path,
                                      headers={"Authorization": "Bearer " + gw.keys["lead"]})
            st, _, b = admin("/admin/usage?group=key,model,kind")
            rows = {r["kind"]: (r["jobs"], r["seconds"]) for r in json.loads(b)["data"]}
            assert st == 200 and rows == {"create": (1, 8), "edit": (1, 8), "extend": (1, 4)}, b
            st, _, b = admin("/admin/usage?group=key,kind,model,day&format=csv")
            head = b.decode().split("\r\n")[0]
            assert st == 200 and head == "key,model,kind,day,jobs,seconds,failed," \
                "refunded_seconds", b
            st, _, b = admin("/admin/usage")               # unchanged without kind
            assert [(r["jobs"], r["seconds"]) for r in json.loads(b)["data"]] == [(3, 20)], b
            for bad in ("key,model,kind,kind", "key,kind", "key,model,size"):
                st, _, b = admin("/admin/usage?group=" + bad)
                assert st == 400 and gwtest.error_body(b)["param"] == "group", (bad, b)
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_edit_is_metered_by_the_job_it_made():
    with gwtest.Stub() as stub:
        gw, path = store_gateway(stub, keys=("alice",),
                                 key_options={"alice": {"daily_seconds": 20}})
        with gw:
            a = create(gw, "alice")                      # 8 of 20
            st, e = form(gw, "/v1/videos/edits", "alice",
                         [("prompt", "p"), ("video[id]", a["id"])])
            assert st == 200 and e["seconds"] == "8", e     # 16 of 20
            with sqlite3.connect(path) as db:
                assert db.execute("SELECT seconds, kind FROM jobs WHERE id = ?",
                                  (e["id"],)).fetchone() == (8, "edit")
                used = db.execute("SELECT sum(seconds), sum(jobs) FROM usage_daily").fetchone()
                assert used == (16, 2), used
            # the edit counts against the day: another 8 s create no longer fits
            body = json.dumps({"model": "veo3.1", "prompt": "p", "seconds": "8",
                               "size": "16x9"}).encode()
            assert gw.request("POST", "/v1/videos", key="alice", headers=JSON,
                              body=body)[0] == 429
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_service_without_characters_or_store():
    """[models] characters = off: the gateway answers 404 itself, before any byte goes
    upstream. Without a store, references pass unchecked (nothing is recorded: no owner to
    check, no key to pin) and still go out to the right route."""
    with gwtest.Stub() as stub:
        with gwtest.Gateway(stub, extra={"models": {"characters": "off"}}) as gw:
            a = create(gw, "default")
            before = len(stub.requests())
            st, body = form(gw, "/v1/videos/characters", "default",
                            [("name", "n"), ("video", "v.mp4", 1000, "video/mp4")])
            assert st == 404 and body["error"]["code"] == "unsupported_operation", body
            st, _, b = gw.request("GET", "/v1/videos/characters/char_1")
            assert st == 404 and gwtest.error_body(b)["code"] == "unsupported_operation", b
            assert len(stub.requests()) == before
            st, e = form(gw, "/v1/videos/edits", "default",
                         [("prompt", "p"), ("video[id]", a["id"])])
            assert st == 200, e
            # an extension takes a form or JSON, nothing else
            st, _, b = gw.request("POST", "/v1/videos/extensions", key="default",
                                  headers={"Content-Type": "text/plain"}, body=b"x")
            assert st == 415, b
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_admin_key_and_json_character():
    with gwtest.Stub() as stub:
        gw, _ = store_gateway(stub, keys=("alice", "lead"),
                              key_options={"lead": {"admin": "yes"}})
        with gw:
            a = create(gw, "alice")
            # an admin key may name any video; the result is the admin's job
            st, e = post_json(gw, "/v1/videos/edits", "lead",
                              {"prompt": "p", "video": {"id": a["id"]}})
            assert st == 200, e
            assert gw.request("GET", "/v1/videos/" + e["id"], key="alice")[0] == 404
            assert gw.request("GET", "/v1/videos/" + e["id"], key="lead")[0] == 200
            st, _, b = gw.request("POST", "/v1/videos/characters", key="alice", headers=JSON,
                                  body=b'{"name":"n"}')
            assert st == 415, b
            # a deleted video can no longer be named
            assert gw.request("DELETE", "/v1/videos/" + a["id"], key="alice")[0] == 200
            st, body = form(gw, "/v1/videos/edits", "alice",
                            [("prompt", "p"), ("video[id]", a["id"])])
            assert st == 404, body
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_video_file_streams():
    """The `video` file of an edit, an extension and a character streams like
    input_reference: part one is upstream before part two is sent (the head held only
    for the few bytes before the video part), and a 100 MB upload keeps memory flat."""
    MiB = 1024 * 1024
    with gwtest.Stub() as stub:
        gw, _ = store_gateway(stub, keys=("default",), env=ASAN_SMALL)
        with gw:
            for path, fields in (("/v1/videos/edits", [("prompt", "p")]),
                                 ("/v1/videos/extensions", [("prompt", "p"), ("seconds", "8")]),
                                 ("/v1/videos/characters", [("name", "Moo")])):
                stub.reset()
                ms = gwtest.multipart_stream(fields + [("video", "v.mp4", 4 * MiB,
                                                        "video/mp4")])
                data = b"".join(bytes(c) for c in ms)
                one = 2 * MiB
                with gwtest.RawConn(gw.port, timeout=30) as c:
                    c.send(("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                            "Content-Type: %s\r\nContent-Length: %d\r\n\r\n"
                            % (path, gw.keys["default"], ms.content_type, ms.length)).encode()
                           + data[:one])
                    rec = stub.wait_bytes(one - 200, timeout=20)
                    t_two = time.monotonic()
                    assert rec["path"] == path and not rec["complete"], rec
                    assert rec["framing"] == "content-length", rec["framing"]
                    c.send(data[one:])
                    st, h, resp, _ = gwtest.parse_response(c.read_response(30))
                assert st == 200, (path, st, resp[:300])
                r = stub.requests(path=path)[0]
                assert r["complete"] and (r["body_size"], r["body_sha256"]) == \
                    (ms.length, ms.sha256), (path, r["body_size"])
                early = [n for t, n in r["chunks"] if t < t_two]
                assert early and early[-1] >= one - 200, (path, early[-1:])
            ms = gwtest.multipart_stream([("prompt", "p"), ("video", "big.mp4", 100 * MiB,
                                                             "video/mp4")], chunk_size=MiB)
            st, _, b = gw.request("POST", "/v1/videos/edits", headers=ms.headers(), body=ms,
                                  timeout=120)
            assert st == 200, b
            r = stub.requests(path="/v1/videos/edits")[-1]
            assert r["parts"][1]["sha256"] == gwtest.file_sha256("big.mp4", 100 * MiB)
            hwm = gw.vmhwm_kib()
            assert hwm < 64 * 1024, "VmHWM %d KiB after a 100 MB edit upload" % hwm
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_refused_reference_while_waiting_for_upstream_slot():
    """An edit naming another key's video, refused (404) while it waits for its
    upstream_rpm slot and before its body is in: the slot passes harmlessly."""
    with gwtest.Stub() as stub:
        gw, _ = store_gateway(stub, keys=("alice", "bob"), threads=1,
                              extra={"limits": {"upstream_rpm": 120}})
        with gw:
            a = create(gw, "alice")                      # takes the slot now
            ms = gwtest.multipart_stream([("prompt", "p"), ("video[id]", a["id"]),
                                          ("notes", "n" * (1024 * 1024))])
            data = b"".join(bytes(c) for c in ms)
            with gwtest.RawConn(gw.port, timeout=30) as c:
                c.send(("POST /v1/videos/edits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                        "%s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                        % (gw.keys["bob"], ms.content_type, ms.length)).encode() + data[:4096])
                st, _, body, _ = gwtest.parse_response(c.read_response(10))
                assert st == 404 and gwtest.error_body(body)["param"] == "video", body
                create(gw, "alice")                      # waits past the refused one's slot
            assert gw.request("GET", "/healthz", key="alice")[0] == 200
            assert not stub.requests(path="/v1/videos/edits")
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_models_say_what_each_model_offers():
    with gwtest.Stub() as stub:
        with gwtest.Gateway(stub) as gw:
            st, _, b = gw.request("GET", "/v1/models")
            models = {m["id"]: m for m in json.loads(b)["data"]}
            assert models["veo_3_1"]["edits"] is True, models["veo_3_1"]
            assert models["veo_3_1"]["extend_seconds"] == ["4", "8", "12", "16", "20"]
            assert models["veo2"]["edits"] is False and models["veo2"]["extensions"] is False
            assert "extend_seconds" not in models["veo2"]


if __name__ == "__main__":
    gwtest.main(globals())
