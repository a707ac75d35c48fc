"""Job ownership and the job registry (issue 6), on a real SQLite file: each job is
visible only to the team key that created it (404 for others, without asking the
upstream), follow-ups go out with the upstream key that created the job (the stub
plays separate provider accounts per upstream key), the list comes from the store
with OpenAI's cursor semantics, a job answered 200 survives kill -9, and a job seen
failed gives its seconds back."""

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}


def store_gateway(stub, **kw):
    d = gwtest.shared_tmpdir("gwtest-jobs-")
    path = os.path.join(d, "gw-%d.db" % len(os.listdir(d)))
    extra = kw.pop("extra", {})
    extra.setdefault("store", {})["path"] = path
    return gwtest.Gateway(stub, extra=extra, **kw), path


create_body = gwtest.create_body
create = gwtest.create_job


def upstream_requests(stub, path_part):
    return [r for r in stub.requests() if path_part in r["path"]]


def test_ownership_on_every_route():
    with gwtest.Stub() as stub:
        gw, _ = store_gateway(stub, keys=("alice", "bob", "lead"),
                              key_options={"lead": {"admin": "yes"}})
        with gw:
            a = create(gw, "alice")
            b = create(gw, "bob")
            # each key reads its own
            assert gw.request("GET", "/v1/videos/" + a["id"], key="alice")[0] == 200
            assert gw.request("GET", "/v1/videos/" + b["id"], key="bob")[0] == 200
            # and not the other's, on every route, without the upstream hearing of it
            before = len(stub.requests())
            for method, suffix, body in (("GET", "", b""), ("GET", "/content", b""),
                                         ("DELETE", "", b""),
                                         ("POST", "/remix", b'{"prompt":"x"}')):
                st, _, body_out = gw.request(method, "/v1/videos/" + b["id"] + suffix,
                                             key="alice", headers=JSON, body=body)
                assert st == 404, (method, suffix, st, body_out)
                e = gwtest.error_body(body_out)
                assert e["code"] == "not_found" and b["id"] in e["message"], e
            # an id nobody created: the same answer
            st, _, body_out = gw.request("GET", "/v1/videos/video_nonexistent", key="alice")
            assert st == 404 and gwtest.error_body(body_out)["code"] == "not_found"
            assert len(stub.requests()) == before, stub.requests()[before:]
            # an admin key reads any job
            assert gw.request("GET", "/v1/videos/" + b["id"], key="lead")[0] == 200
            # the list shows only the caller's jobs
            st, _, body_out = gw.request("GET", "/v1/videos", key="alice")
            lst = json.loads(body_out)
            assert st == 200 and [j["id"] for j in lst["data"]] == [a["id"]], lst
            assert lst["object"] == "list" and lst["has_more"] is False
            # a remix of one's own job is a new job of one's own
            st, _, body_out = gw.request("POST", "/v1/videos/%s/remix" % a["id"], key="alice",
                                         headers=JSON, body=b'{"prompt":"again"}')
            assert st == 200, body_out
            r = json.loads(body_out)
            assert gw.request("GET", "/v1/videos/" + r["id"], key="alice")[0] == 200
            assert gw.request("GET", "/v1/videos/" + r["id"], key="bob")[0] == 404
            # delete: gone from the list, then 404
            assert gw.request("DELETE", "/v1/videos/" + a["id"], key="alice")[0] == 200
            ids = [j["id"] for j in json.loads(gw.request("GET", "/v1/videos",
                                                          key="alice")[2])["data"]]
            assert ids == [r["id"]], ids
            assert gw.request("GET", "/v1/videos/" + a["id"], key="alice")[0] == 404
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_follow_ups_use_the_creating_upstream_key():
    """Two upstream keys of separate provider accounts, round-robin for creates: every
    follow-up of a job goes out with the key that created it (before, about half of
    them were 404 from the wrong account)."""
    with gwtest.Stub(extra_keys=1) as stub:
        stub.config(accounts=1)
        gw, _ = store_gateway(stub, upstream_keys=stub.keys, threads=1)
        with gw:
            jobs = [create(gw, "default") for _ in range(4)]
            for j in jobs:
                for suffix in ("", "/content"):
                    st, _, b = gw.request("GET", "/v1/videos/" + j["id"] + suffix)
                    assert st == 200, (j["id"], suffix, st, b[:200])
            st, _, b = gw.request("GET", "/v1/videos?limit=100")
            assert sorted(x["id"] for x in json.loads(b)["data"]) == sorted(
                j["id"] for j in jobs)
            # the creates alternated between the two accounts
            keys = [dict((k.lower(), v) for k, v in r["headers"])["authorization"]
                    for r in stub.requests(method="POST")]
            assert len(set(keys)) == 2, keys
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + stub.keys)


def test_list_cursor():
    with gwtest.Stub() as stub:
        gw, _ = store_gateway(stub, keys=("alice", "bob"))
        with gw:
            ids = [create(gw, "alice")["id"] for _ in range(5)]
            other = create(gw, "bob")["id"]

            def page(q, key="alice"):
                st, _, b = gw.request("GET", "/v1/videos" + q, key=key)
                return st, json.loads(b)
            # the order is the store's (created_at, then id: jobs of one second tie);
            # pages of 2 must walk it exactly, both ways
            st, p = page("?limit=100&order=asc")
            full = [j["id"] for j in p["data"]]
            assert st == 200 and sorted(full) == sorted(ids) and not p["has_more"], p
            for order, want in (("asc", full), ("desc", full[::-1])):
                got, after = [], ""
                while True:
                    st, p = page("?limit=2&order=%s%s" % (order, after))
                    assert st == 200 and len(p["data"]) <= 2, p
                    got += [j["id"] for j in p["data"]]
                    assert p["first_id"] == p["data"][0]["id"]
                    assert p["last_id"] == p["data"][-1]["id"]
                    if not p["has_more"]:
                        break
                    after = "&after=" + p["last_id"]
                assert got == want, (order, got, want)
            st, p = page("")                     # default: limit 20, newest first
            assert [j["id"] for j in p["data"]] == full[::-1], p
            # bad input: a clear 400, never another key's jobs
            for q, param in (("?limit=0", "limit"), ("?limit=10000", "limit"),
                             ("?limit=x", "limit"), ("?order=up", "order"),
                             ("?after=" + other, "after"), ("?after=no%20such", "after")):
                st, p = page(q)
                assert st == 400 and p["error"]["param"] == param, (q, p)
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_job_survives_kill_9():
    with gwtest.Stub() as stub:
        gw, path = store_gateway(stub)
        gw.start()
        try:
            job = create(gw, "default")
            os.kill(gw.proc.pid, signal.SIGKILL)
            gw.proc.wait(10)
        finally:
            gw.stop()
        gw2 = gwtest.Gateway(stub, extra={"store": {"path": path}})
        gw2.keys = gw.keys
        with gw2:
            st, _, b = gw2.request("GET", "/v1/videos/" + job["id"])
            assert st == 200, b
            lst = json.loads(gw2.request("GET", "/v1/videos")[2])
            assert [j["id"] for j in lst["data"]] == [job["id"]]


def test_budget_survives_restart():
    """Today's spending is read back from the store at start: a restart does not hand
    out a day's daily_seconds twice."""
    with gwtest.Stub() as stub:
        opts = {"alice": {"daily_seconds": 20}}
        gw, path = store_gateway(stub, keys=("alice",), key_options=opts)
        with gw:
            create(gw, "alice")
            create(gw, "alice")                  # 16 of 20
            keys = gw.keys
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])
        gw2 = gwtest.Gateway(stub, keys=("alice",), key_options=opts,
                             extra={"store": {"path": path}})
        gw2.keys = keys
        with gw2:
            body = json.dumps({"model": "veo3.1", "prompt": "p", "seconds": "8",
                               "size": "16x9"}).encode()
            st, _, b = gw2.request("POST", "/v1/videos", key="alice", headers=JSON, body=body)
            assert st == 429 and gwtest.error_body(b)["code"] == "insufficient_quota", b
            create(gw2, "alice", seconds="4")    # 20 of 20: still fits
            gwtest.stop_clean(gw2, secrets=list(keys.values()) + [stub.key])


def spend_budget(gw, key="alice"):
    """Two 8 s creates, then a third refused: a key with daily_seconds 16 is spent.
    Returns the first job and the body a further create sends."""
    first = create(gw, key)
    create(gw, key)
    body = create_body()
    assert gw.request("POST", "/v1/videos", key=key, headers=JSON, body=body)[0] == 429
    return first, body


def wait_for_refund(gw, body, timeout, what, key="alice"):
    """Poll with creates until one fits the budget again (every refusal is a 429)."""
    def fits():
        st = gw.request("POST", "/v1/videos", key=key, headers=JSON, body=body)[0]
        assert st in (200, 429), st
        return st == 200
    gwtest.wait_for(fits, timeout=timeout, interval=0.2, what=what)


def test_failed_job_gives_seconds_back():
    with gwtest.Stub() as stub:
        gw, _ = store_gateway(stub, keys=("alice",),
                              key_options={"alice": {"daily_seconds": 16}})
        with gw:
            a, body = spend_budget(gw)
            # the provider fails the first job: a retrieve sees it, its 8 s come back, once
            stub.set_job(a["id"], status="failed")
            for _ in range(2):
                st, _, b = gw.request("GET", "/v1/videos/" + a["id"], key="alice")
                assert st == 200 and json.loads(b)["status"] == "failed", b
            wait_for_refund(gw, body, 5, "the refund")
            assert gw.request("POST", "/v1/videos", key="alice", headers=JSON,
                              body=body)[0] == 429      # refunded once, not twice
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_refund_without_any_poll():
    """[jobs] refresh: the gateway asks the upstream about unfinished jobs itself, with
    the key that created each; a job the provider failed gives its seconds back though
    nobody retrieves it, and the list shows the current state."""
    with gwtest.Stub(extra_keys=1) as stub:
        stub.config(accounts=1)
        gw, _ = store_gateway(stub, keys=("alice",), upstream_keys=stub.keys,
                              key_options={"alice": {"daily_seconds": 16}},
                              extra={"jobs": {"refresh": "1s"}})
        with gw:
            a, body = spend_budget(gw)
            stub.set_job(a["id"], status="failed")
            wait_for_refund(gw, body, 10, "the refund by refresh")
            # nobody asked for the job: the gateway did, with the key that created it
            gets = [r for r in stub.requests(method="GET") if a["id"] in r["path"]]
            assert gets and all(dict((k.lower(), v) for k, v in r["headers"])["x-request-id"]
                                == "refresh" for r in gets), gets
            assert all(r["status"] == 200 for r in gets), gets
            lst = json.loads(gw.request("GET", "/v1/videos?limit=100", key="alice")[2])
            states = {j["id"]: j["status"] for j in lst["data"]}
            assert states[a["id"]] == "failed", states
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + stub.keys)


def test_bad_store_file_is_a_startup_error():
    """A [store] path that is not an SQLite database stops the start with a message
    naming the file (the store's own test covers read-only files and directories)."""
    d = gwtest.shared_tmpdir("gwtest-jobs-")
    junk = os.path.join(d, "junk.db")
    with open(junk, "w") as f:
        f.write("this is not a database\n" * 200)
    with gwtest.Stub() as stub:
        gw = gwtest.Gateway(stub, extra={"store": {"path": junk}})
        try:
            gw.start()
            raise AssertionError("the gateway started on a junk store file")
        except RuntimeError as e:
            msg = str(e)
            assert junk in msg and "SQLite" in msg, msg[-1500:]
            assert gw.proc.returncode == 1, gw.proc.returncode
        finally:
            gw.stop()


def test_idempotency_key():
    import threading
    with gwtest.Stub() as stub:
        gw, _ = store_gateway(stub, keys=("alice", "bob"))
        with gw:
            body = json.dumps({"model": "veo3.1", "prompt": "p", "seconds": "8",
                               "size": "16x9"}).encode()

            def post(key, idem, b=body):
                return gw.request("POST", "/v1/videos", key=key, body=b,
                                  headers=dict(JSON, **{"Idempotency-Key": idem}))
            st, h1, b1 = post("alice", "k-1")
            st2, h2, b2 = post("alice", "k-1")
            assert (st, st2) == (200, 200) and json.loads(b1)["id"] == json.loads(b2)["id"]
            assert h2.get("idempotent-replayed") == "true" and "idempotent-replayed" not in h1
            assert len(stub.requests(path="/v1/videos", method="POST")) == 1
            # the same Idempotency-Key from another team key is another request
            st, _, b3 = post("bob", "k-1")
            assert st == 200 and json.loads(b3)["id"] != json.loads(b1)["id"]
            # an upstream client error is kept and replayed; the upstream asked once
            bad = json.dumps({"model": "veo3.1", "prompt": "p", "seconds": "8"}).encode()
            st, _, e1 = post("alice", "k-bad", bad)
            st2, _, e2 = post("alice", "k-bad", bad)
            assert (st, st2) == (400, 400) and e1 == e2, (st, st2, e1, e2)
            n = len(stub.requests(path="/v1/videos", method="POST"))
            assert n == 3, n
            # a repeat while the first is in flight: 409
            stub.fault("slow", delay_ms=1500, count=1, path_prefix="/v1/videos")
            first = {}
            t = threading.Thread(target=lambda: first.update(r=post("alice", "k-slow")))
            t.start()
            stub.wait_requests(n + 1)
            st, _, b = post("alice", "k-slow")
            assert st == 409 and gwtest.error_body(b)["code"] == "idempotency_key_in_use", b
            t.join(20)
            assert first["r"][0] == 200
            st, h, b = post("alice", "k-slow")
            assert st == 200 and json.loads(b)["id"] == json.loads(first["r"][2])["id"]
            # bad keys
            st, _, b = post("alice", "x" * 256)
            assert st == 400 and "Idempotency-Key" in gwtest.error_body(b)["message"], b
            gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


if __name__ == "__main__":
    gwtest.main(globals())
