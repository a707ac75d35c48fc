"""Operations (issue 10): GET /readyz and its transitions (store gone, every upstream key
out, drain), /healthz staying a liveness check; SIGUSR1 reopening the access log after
logrotate moved it, with no line lost."""

import http.client
import json
import os
import re
import signal
import sqlite3
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}


def readyz(gw):
    st, _, b = gwtest.request(gw.port, "GET", "/readyz")
    return st, b


def not_ready(gw, words):
    """wait until /readyz answers 503 with `words` in its message; the error body."""
    def pred():
        st, b = readyz(gw)
        return st == 503 and words in gwtest.error_body(b)["message"] and b
    b = gwtest.wait_for(pred, timeout=15, interval=0.1, what="/readyz 503 (%s)" % words)
    err = gwtest.error_body(b)
    assert err["code"] == "not_ready" and err["type"] == "server_error", err
    return err


def create(gw, key="default"):
    body = json.dumps({"model": "veo3.1", "prompt": "p", "seconds": "4", "size": "16x9"})
    return gw.request("POST", "/v1/videos", key=key, headers=JSON, body=body.encode())


def test_readyz_keys_out():
    """One bad key of two: still ready. Every key refused (401): 503, /healthz still 200;
    the metrics say which key is out, by its label."""
    with gwtest.Stub(extra_keys=1) as stub, gwtest.Gateway(
            stub, upstream_keys=[stub.keys[0], "sk-revoked"], threads=1) as gw:
        assert readyz(gw) == (200, b'{"status":"ready"}\n')
        for _ in range(4):                  # round-robin: the bad key answers 401 once
            create(gw)
        assert readyz(gw)[0] == 200
        gwtest.stop_clean(gw)
    with gwtest.Stub() as stub, gwtest.Gateway(stub, upstream_key="sk-revoked") as gw:
        assert readyz(gw)[0] == 200
        for _ in range(2):                  # each loop learns it on its own; one is enough
            st, _, b = create(gw)
            assert st == 502 and gwtest.error_body(b)["code"] == "upstream_auth_failed", b
        err = not_ready(gw, "every upstream key is out")
        assert "sk-revoked" not in err["message"]
        assert gw.request("GET", "/healthz", key=None)[0] == 200
        gwtest.stop_clean(gw, secrets=["sk-revoked"])


def test_readyz_store_gone():
    """Another process holds the store's write lock: the store cannot answer, /readyz
    says so within seconds; once the lock goes, ready again."""
    d = gwtest.shared_tmpdir("gwtest-ops-")
    db = os.path.join(d, "gw.db")
    with gwtest.Stub() as stub, gwtest.Gateway(stub, extra={"store": {"path": db}}) as gw:
        gwtest.wait_for(lambda: readyz(gw)[0] == 200, what="ready")
        con = sqlite3.connect(db, isolation_level=None, timeout=10)
        con.execute("BEGIN IMMEDIATE")
        try:
            not_ready(gw, "store")
            assert gw.request("GET", "/healthz", key=None)[0] == 200
        finally:
            con.execute("ROLLBACK")
            con.close()
        gwtest.wait_for(lambda: readyz(gw)[0] == 200, timeout=15, interval=0.1,
                        what="ready again")
        gwtest.stop_clean(gw)


def test_readyz_draining():
    """SIGTERM: a connection still open is told 503 draining while the request in flight
    finishes with its answer."""
    stub = gwtest.shared_stub()
    with gwtest.Gateway(stub, threads=1) as gw:
        st, _, b = create(gw)
        job = json.loads(b)["id"]
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        conn.request("GET", "/readyz")
        r = conn.getresponse()
        assert r.status == 200 and r.read()
        stub.fault("slow", delay_ms=2000, path_prefix="/v1/videos/" + job)
        slow = {}
        t = threading.Thread(target=lambda: slow.update(
            r=gw.request("GET", "/v1/videos/" + job)))
        t.start()
        stub.wait_requests(2)
        gw.proc.send_signal(signal.SIGTERM)
        gwtest.wait_for(lambda: "draining" in gw.log(), what="drain")
        conn.request("GET", "/readyz")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 503, (r.status, body)
        assert "draining" in gwtest.error_body(body)["message"]
        conn.close()
        t.join()
        assert slow["r"][0] == 200, slow
        assert gw.proc.wait(15) == 0
        gwtest.forget_shared_gateway()


def test_sigusr1_reopens_access_log():
    """logrotate's way: move the file, SIGUSR1; the lines written after go to a new file
    at the configured path, and every request is in one file or the other, once."""
    d = gwtest.shared_tmpdir("gwtest-ops-")
    path = os.path.join(d, "access.log")
    with gwtest.Gateway(gwtest.shared_stub(), access_log=path) as gw:
        rids, stop, failures = [], threading.Event(), []

        def traffic():
            while not stop.is_set():
                st, h, b = gw.request("GET", "/v1/models")
                (rids if st == 200 else failures).append(h.get("x-request-id") or b)
        threads = [threading.Thread(target=traffic) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            gwtest.wait_for(lambda: len(rids) > 50, what="traffic before")
            os.rename(path, path + ".1")
            n_before = len(rids)
            gw.proc.send_signal(signal.SIGUSR1)
            gwtest.wait_for(lambda: "access log reopened" in gw.log(), what="reopen")
            gwtest.wait_for(lambda: len(rids) > n_before + 50, what="traffic after")
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not failures, failures[:3]
        gwtest.stop_clean(gw)
        logged = []
        for name in (path + ".1", path):
            with open(name) as f:
                lines = [json.loads(line) for line in f]
            assert lines, name + " is empty"
            logged += [line["rid"] for line in lines if line["route"] == "models"]
        assert sorted(logged) == sorted(rids), (len(logged), len(rids))
    # with access_log = - nothing changes: SIGUSR1 is harmless
    with gwtest.Gateway(gwtest.shared_stub()) as gw:
        gw.proc.send_signal(signal.SIGUSR1)
        gwtest.wait_for(lambda: "access log reopened" in gw.log(), what="reopen")
        assert gw.request("GET", "/v1/models")[0] == 200
        gwtest.wait_for(lambda: any(line.get("route") == "models" for line in gw.log_json()),
                        what="a line on stdout")
        gwtest.stop_clean(gw)


def test_traceparent():
    """A client's valid traceparent goes upstream unchanged; an absent or invalid one is
    replaced by a new valid one; the access log has the trace-id next to the request id."""
    stub = gwtest.shared_stub()
    gw = gwtest.shared_gateway(stub)
    valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    shape = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-00$")
    seen = {}
    for name, sent in (("valid", valid), ("absent", None),
                       ("upper", valid.upper()), ("zeros", "00-" + "0" * 32 + "-00f067aa0ba902b7-01"),
                       ("version", "01" + valid[2:])):
        h = {"traceparent": sent} if sent else {}
        st, rh, _ = gw.request("GET", "/v1/videos", headers=h)
        assert st == 200
        rec = stub.last()
        got = [v for k, v in rec["headers"] if k.lower() == "traceparent"]
        assert len(got) == 1, rec["headers"]
        if name == "valid":
            assert got[0] == valid
        else:
            assert shape.match(got[0]) and got[0] != sent, (name, got)
        seen[rh["x-request-id"]] = got[0]
    lines = gw.wait_log(lambda line: line.get("rid") in seen, n=len(seen))
    for line in lines:
        assert line["trace"] == seen[line["rid"]][3:35], line
    assert len({t[3:35] for t in seen.values()}) == len(seen)   # a new trace each time
    # tracestate goes along with the client's traceparent, never with one made here
    for sent, kept in ((valid, True), ("junk", False), (None, False)):
        h = {"tracestate": "vendor=abc"}
        if sent:
            h["traceparent"] = sent
        assert gw.request("GET", "/v1/videos", headers=h)[0] == 200
        got = [v for k, v in stub.last()["headers"] if k.lower() == "tracestate"]
        assert got == (["vendor=abc"] if kept else []), (sent, got)


gwtest.main(globals())
