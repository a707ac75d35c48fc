"""The admin API for keys, usage and jobs (issue 8), on [admin] listen, admin keys only:
POST/GET /admin/keys, PATCH/DELETE /admin/keys/{name}, GET /admin/usage with
group=key,model,day and CSV (formula-safe), GET /admin/jobs. A key made through the
API works on the public listener at once; a lowered budget refuses the next create; a
revoked key gets 401 on its next request. Every refusal is an OpenAI error body (non
admin key, unknown key, duplicate name, a config key, odd names, bad JSON, bad limits,
bad expiry), every call is in the access log with the admin key's name, and no secret
is ever logged."""

import csv
import io
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}


def start():
    d = gwtest.shared_tmpdir("gwtest-adminkeys-")
    admin_port = gwtest.free_port()
    stub = gwtest.Stub().start()
    gw = gwtest.Gateway(stub, keys=("alice", "lead"), threads=2,
                        key_options={"lead": {"admin": "yes"}},
                        models_unknown="pass",
                        extra={"store": {"path": os.path.join(d, "gw.db")},
                               "limits": {"daily_seconds": 1000},
                               "admin": {"listen": "127.0.0.1:%d" % admin_port}}).start()
    return stub, gw, admin_port


def test_admin_keys_api():
    stub, gw, port = start()
    try:
        run(stub, gw, port)
    except BaseException:
        sys.stderr.write("---- gateway log (tail) ----\n%s\n" % gw.log()[-6000:])
        raise
    finally:
        gw.stop()
        stub.stop()


def run(stub, gw, port):
    def admin(method, path, body=None, key="lead", raw=None):
        h = {"Authorization": "Bearer " + gw.keys[key]} if key else {}
        if body is not None or raw is not None:
            h.update(JSON)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else b"")
        st, hd, b = gwtest.request(port, method, path, headers=h, body=data)
        return st, hd, b

    def create(secret, seconds="4", model="veo3"):
        body = json.dumps({"model": model, "prompt": "p", "seconds": seconds,
                           "size": "16x9"}).encode()
        return gwtest.request(gw.port, "POST", "/v1/videos", body=body,
                              headers=dict(JSON, Authorization="Bearer " + secret))[:3:2]

    def refused(st_b, status, param=None, code=None):
        st, b = st_b[0], st_b[-1]
        assert st == status, (st, b)
        e = gwtest.error_body(b)
        if param is not None:
            assert e["param"] == param, e
        if code is not None:
            assert e["code"] == code, e
        return e

    # create: the secret once, usable on the public listener at once
    st, h, b = admin("POST", "/admin/keys", {"name": "nina", "daily_seconds": 12,
                                              "rpm": 60, "models": ["veo3"],
                                              "expires": "2999-01-01"})
    assert st == 200 and h["content-type"] == "application/json", (st, b)
    k = json.loads(b)
    secret = k["secret"]
    assert secret.startswith("sk-vgw-") and len(secret) == 39, k
    assert k["name"] == "nina" and k["daily_seconds"] == 12 and k["rpm"] == 60, k
    assert k["models"] == ["veo3"] and k["source"] == "store" and not k["read_only"], k
    assert set(k["defaults"]) == {"burst", "concurrency"}, k
    assert k["expires_at"] == 32472144000, k
    for _ in range(4):   # every loop, without waiting
        st, b = create(secret, "4")
        if st != 200:
            break
    assert st == 429 and gwtest.error_body(b)["code"] == "insufficient_quota", (st, b)
    # GET: every key, config ones read-only, today's usage against the budget
    st, _, b = admin("GET", "/admin/keys")
    assert st == 200, b
    keys = {r["name"]: r for r in json.loads(b)["data"]}
    assert keys["alice"]["source"] == "config" and keys["alice"]["read_only"], keys
    assert keys["lead"]["admin"] is True and keys["nina"]["admin"] is False, keys
    assert keys["nina"]["today"]["seconds"] == 12 and keys["nina"]["today"]["jobs"] == 3, keys
    assert keys["nina"]["last_used_at"] >= time.time() - 60, keys
    assert keys["nina"]["state"] == "active" and "secret" not in keys["nina"], keys
    assert keys["alice"]["daily_seconds"] == 1000, keys
    # PATCH: a bigger budget works at once; null goes back to the default
    st, _, b = admin("PATCH", "/admin/keys/nina", {"daily_seconds": 16})
    assert st == 200 and json.loads(b)["daily_seconds"] == 16, b
    assert create(secret, "4")[0] == 200
    assert create(secret, "4")[0] == 429
    st, _, b = admin("PATCH", "/admin/keys/nina", {"rpm": None, "models": None})
    k = json.loads(b)
    assert st == 200 and k["rpm"] == 0 and k["models"] is None and "rpm" in k["defaults"], b
    st, _, b = admin("PATCH", "/admin/keys/nina", {"daily_seconds": 4})  # lowered: refused now
    assert st == 200
    refused(create(secret, "4"), 429, code="insufficient_quota")
    assert gwtest.request(gw.port, "GET", "/v1/videos",
                          headers={"Authorization": "Bearer " + secret})[0] == 200
    # recent jobs across keys, filtered
    assert create("x" * 10, "4")[0] == 401
    assert gw.request("POST", "/v1/videos", key="alice", headers=JSON,
                      body=json.dumps({"model": "veo3", "prompt": "p", "seconds": "8",
                                       "size": "16x9"}).encode())[0] == 200
    st, _, b = admin("GET", "/admin/jobs")
    jobs = json.loads(b)["data"]
    assert st == 200 and len(jobs) == 5 and jobs[0]["key"] == "alice", jobs
    assert {j["key"] for j in jobs} == {"alice", "nina"} and jobs[0]["status"] == "queued"
    st, _, b = admin("GET", "/admin/jobs?key=nina&limit=2")
    jobs = json.loads(b)["data"]
    assert len(jobs) == 2 and all(j["key"] == "nina" for j in jobs), jobs
    st, _, b = admin("GET", "/admin/jobs?status=completed")
    assert st == 200 and json.loads(b)["data"] == [], b
    refused(admin("GET", "/admin/jobs?limit=0"), 400, "limit")
    refused(admin("GET", "/admin/jobs?limit=abc"), 400, "limit")
    refused(admin("GET", "/admin/jobs?status=done"), 400, "status")
    refused(admin("GET", "/admin/jobs?key=%3Cb%3E"), 400, "key")
    # usage by key, model, day; CSV safe for spreadsheets
    assert gw.request("POST", "/v1/videos", key="alice", headers=JSON,
                      body=json.dumps({"model": "=HYPERLINK(1)", "prompt": "p",
                                       "seconds": "4", "size": "16x9"}).encode())[0] == 200
    today = time.strftime("%Y-%m-%d", time.gmtime())
    st, _, b = admin("GET", "/admin/usage?group=key,model,day")
    rows = json.loads(b)["data"]
    assert {(r["key"], r["model"], r["day"]) for r in rows} >= {
        ("nina", "veo3", today), ("alice", "veo3", today)}, rows
    nina = [r for r in rows if r["key"] == "nina"][0]
    assert nina["seconds"] == 16 and nina["jobs"] == 4, rows
    st, h, b = admin("GET", "/admin/usage?group=key,model,day&format=csv")
    assert st == 200 and h["content-type"].startswith("text/csv"), h
    table = list(csv.reader(io.StringIO(b.decode())))
    assert table[0] == ["key", "model", "day", "jobs", "seconds", "failed",
                        "refunded_seconds"], table
    assert ["alice", "'=HYPERLINK(1)", today, "1", "4", "0", "0"] in table, table
    assert not any(c.startswith(("=", "+", "-", "@")) for row in table for c in row), table
    refused(admin("GET", "/admin/usage?group=model"), 400, "group")
    # DELETE revokes: the next request is refused, everywhere
    st, _, b = admin("DELETE", "/admin/keys/nina")
    assert st == 200 and json.loads(b)["state"] == "revoked", b
    for _ in range(4):
        assert gwtest.request(gw.port, "GET", "/v1/videos",
                              headers={"Authorization": "Bearer " + secret})[0] == 401
    st, _, b = admin("DELETE", "/admin/keys/nina")     # again: the same answer
    assert st == 200 and json.loads(b)["state"] == "revoked", b
    refused(admin("PATCH", "/admin/keys/nina", {"rpm": 1}), 404, code="not_found")
    refused(admin("POST", "/admin/keys", {"name": "nina"}), 409, "name", "key_exists")

    # refusals
    refused(admin("GET", "/admin/keys", key=None), 401, code="invalid_api_key")
    refused(admin("GET", "/admin/keys", key="alice"), 403, code="permission_denied")
    st, _, b = admin("POST", "/admin/keys", {"name": "pete"})
    pete = json.loads(b)["secret"]
    st, _, b = gwtest.request(port, "GET", "/admin/keys",
                              headers={"Authorization": "Bearer " + pete})
    refused((st, b), 403, code="permission_denied")      # a store key is never admin
    refused(admin("POST", "/admin/keys", {"name": "alice"}), 409, "name", "key_exists")
    refused(admin("PATCH", "/admin/keys/alice", {"rpm": 5}), 400, "name", "read_only_key")
    refused(admin("DELETE", "/admin/keys/lead"), 400, "name", "read_only_key")
    refused(admin("PATCH", "/admin/keys/nobody", {"rpm": 5}), 404, code="not_found")
    refused(admin("DELETE", "/admin/keys/nobody"), 404, code="not_found")
    refused(admin("DELETE", "/admin/keys/" + "x" * 10000), 431)   # the request line: framer
    refused(admin("DELETE", "/admin/keys/" + "x" * 2000), 400, "name")
    refused(admin("DELETE", "/admin/keys/a%00b"), 400, "name")
    refused(admin("POST", "/admin/keys", {"name": "x" * 10000}), 400, "name")
    refused(admin("POST", "/admin/keys", {"name": "bad\u00e9name"}), 400, "name")
    refused(admin("POST", "/admin/keys", {"name": "<b>x</b>"}), 400, "name")
    refused(admin("POST", "/admin/keys", {"name": "a\u0000b"}), 400)
    refused(admin("POST", "/admin/keys", {}), 400, "name")
    refused(admin("POST", "/admin/keys", {"name": 5}), 400, "name")
    refused(admin("POST", "/admin/keys", raw=b"[1,2]"), 400, code="invalid_json")
    refused(admin("POST", "/admin/keys", raw=b"\"nina\""), 400, code="invalid_json")
    refused(admin("POST", "/admin/keys", raw=b"{\"name\":"), 400, code="invalid_json")
    refused(admin("POST", "/admin/keys", raw=b""), 400, code="invalid_json")
    refused(admin("POST", "/admin/keys", raw=b"{}" * 40000), 413)
    for bad in ({"rpm": -1}, {"rpm": -5}, {"burst": 1.5}, {"concurrency": "3"},
                {"daily_seconds": 1e300}, {"rpm": 100001}, {"daily_seconds": 10 ** 12},
                {"rpm": True}):
        field = list(bad)[0]
        refused(admin("POST", "/admin/keys", dict(bad, name="quinn")), 400, field)
    for bad in ("2001-01-01", "yesterday", "2026-02-30", "2999-01-01T25:00:00Z", 12):
        refused(admin("POST", "/admin/keys", {"name": "quinn", "expires": bad}), 400,
                "expires")
    refused(admin("POST", "/admin/keys", {"name": "quinn", "models": ["a,b"]}), 400, "models")
    refused(admin("POST", "/admin/keys", {"name": "quinn", "models": [1]}), 400, "models")
    refused(admin("POST", "/admin/keys", {"name": "quinn", "colour": "red"}), 400)
    refused(admin("POST", "/admin/keys", {"name": "quinn", "rpm": 1, "rpm ": 2}), 400)
    refused(admin("PATCH", "/admin/keys/pete", {}), 400)
    refused(admin("PATCH", "/admin/keys/pete", {"name": "peter"}), 400, "name")
    refused(admin("PATCH", "/admin/keys/pete", raw=b"null"), 400, code="invalid_json")
    refused(admin("PUT", "/admin/keys"), 405)
    refused(admin("GET", "/admin/keys/pete"), 405)
    refused(admin("POST", "/admin/jobs"), 405)
    refused(admin("GET", "/admin/nothing"), 404)
    st, _, b = admin("GET", "/admin/keys")
    assert "quinn" not in b.decode() and st == 200
    # the console: its files without a key, a strict CSP, nothing inline
    st, h, b = gwtest.request(port, "GET", "/admin/")
    assert st == 200 and h["content-type"].startswith("text/html"), (st, h)
    csp = h["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp and "default-src 'none'" in csp
    assert b"<script>" not in b and b" style=" not in b and b"onclick" not in b, b[:300]
    for f, ctype in (("app.js", "text/javascript"), ("app.css", "text/css"),
                     ("uPlot.iife.min.js", "text/javascript"), ("uPlot.min.css", "text/css")):
        st, h, body = gwtest.request(port, "GET", "/admin/" + f)
        assert st == 200 and h["content-type"].startswith(ctype) and len(body) > 1000, (f, st)
    assert gwtest.request(port, "GET", "/admin")[0] == 301
    refused(gwtest.request(port, "POST", "/admin/app.js")[::2], 401)   # the API's, keyless
    assert gw.request("GET", "/admin/", key=None)[0] == 404            # not on the public one
    gw.wait_log(lambda line: line.get("route") == "admin.console" and line["status"] == 301)
    # not on the public listener
    assert gw.request("GET", "/admin/keys", key="lead")[0] == 404
    # every call in the access log, with the admin key's name
    gw.wait_log(lambda line: line.get("route") == "admin" and line["status"] == 404)
    lines = [line for line in gw.log_json() if (line.get("route") or "").startswith("admin")]
    assert any(line["route"] == "admin.keys" and line["method"] == "POST" and
               line["key"] == "lead" and line["status"] == 200 for line in lines), lines
    assert any(line["route"] == "admin.keys" and line["method"] == "PATCH" and
               line["status"] == 400 and line["key"] == "lead" for line in lines), lines
    assert any(line["route"] == "admin.jobs" and line["key"] == "lead" for line in lines)
    assert any(line["key"] == "alice" and line["status"] == 403 for line in lines), lines
    gwtest.stop_clean(gw, secrets=[secret, pete, stub.key] + list(gw.keys.values()))


if __name__ == "__main__":
    gwtest.main(globals())
