"""The admin listener ([admin] listen, issue 6): GET /admin/usage for admin keys only,
as JSON or CSV, never on the public listener; every call in the access log with the
admin key's name."""

import csv
import io
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}


def test_admin_usage():
    d = gwtest.shared_tmpdir("gwtest-admin-")
    admin_port = gwtest.free_port()
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("alice", "bob", "lead"),
            key_options={"lead": {"admin": "yes"}},
            extra={"store": {"path": os.path.join(d, "gw.db")},
                   "admin": {"listen": "127.0.0.1:%d" % admin_port}}) as gw:
        for key, model, secs in (("alice", "veo3.1", "8"), ("alice", "veo3.1", "4"),
                                 ("bob", "veo3", "6")):
            body = json.dumps({"model": model, "prompt": "p", "seconds": secs,
                               "size": "16x9"}).encode()
            assert gw.request("POST", "/v1/videos", key=key, headers=JSON, body=body)[0] == 200

        def admin(path, key="lead"):
            h = {"Authorization": "Bearer " + gw.keys[key]} if key else {}
            return gwtest.request(admin_port, "GET", path, headers=h)
        st, h, b = admin("/admin/usage")
        assert st == 200 and h["content-type"] == "application/json", (st, h, b)
        rows = {(r["key"], r["model"]): r for r in json.loads(b)["data"]}
        assert rows[("alice", "veo_3_1")]["jobs"] == 2, rows
        assert rows[("alice", "veo_3_1")]["seconds"] == 12, rows
        assert rows[("bob", "veo3")]["seconds"] == 6, rows
        # filters, per day, CSV for finance
        st, _, b = admin("/admin/usage?key=bob")
        assert [r["key"] for r in json.loads(b)["data"]] == ["bob"]
        today = time.strftime("%Y-%m-%d", time.gmtime())
        st, _, b = admin("/admin/usage?group=key,model,day&since=%s&until=%s" % (today, today))
        assert all(r["day"] == today for r in json.loads(b)["data"]) and st == 200
        st, _, b = admin("/admin/usage?since=2000-01-01&until=2000-01-02")
        assert st == 200 and json.loads(b)["data"] == []
        st, h, b = admin("/admin/usage?format=csv")
        assert st == 200 and h["content-type"].startswith("text/csv"), h
        table = list(csv.reader(io.StringIO(b.decode())))
        assert table[0] == ["key", "model", "jobs", "seconds", "failed", "refunded_seconds"]
        assert ["bob", "veo3", "1", "6", "0", "0"] in table, table
        # refusals
        assert admin("/admin/usage", key=None)[0] == 401
        st, _, b = admin("/admin/usage", key="alice")
        assert st == 403 and gwtest.error_body(b)["code"] == "permission_denied", b
        assert admin("/admin/nope")[0] == 404
        st, _, b = admin("/admin/usage?since=yesterday")
        assert st == 400 and gwtest.error_body(b)["param"] == "since", b
        assert admin("/admin/usage?format=xml")[0] == 400
        # not on the public listener
        assert gw.request("GET", "/admin/usage", key="lead")[0] == 404
        lines = gw.wait_log(lambda line: (line.get("route") or "").startswith("admin") and
                            line["status"] == 403)
        lines = [line for line in gw.log_json() if (line.get("route") or "").startswith("admin")]
        assert any(line["key"] == "lead" and line["status"] == 200 for line in lines), lines
        assert any(line["key"] == "alice" and line["status"] == 403 for line in lines), lines
        gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


if __name__ == "__main__":
    gwtest.main(globals())
