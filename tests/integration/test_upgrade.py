"""Zero-downtime upgrade (issue 10, docs/operations.md): a second gateway starts on the
same address (SO_REUSEPORT) and the old one gets SIGTERM; a steady stream of creates
and a 200 MB upload in flight across the swap: zero failures, the upload whole."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}
MiB = 1024 * 1024


def test_upgrade_under_load():
    d = gwtest.shared_tmpdir("gwtest-upgrade-")
    admin_port = gwtest.free_port()
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("alice",), max_body="300M",
            extra={"store": {"path": os.path.join(d, "gw.db")},
                   "admin": {"listen": "127.0.0.1:%d" % admin_port}}) as old:
        env = dict(os.environ, GW_TEST_UPSTREAM_KEY=stub.key)
        stop, failures, done = threading.Event(), [], []
        body = json.dumps({"model": "veo3.1", "prompt": "p", "seconds": "4",
                           "size": "16x9"}).encode()

        def creates():
            while not stop.is_set():
                try:
                    st, h, b = old.request("POST", "/v1/videos", key="alice", headers=JSON,
                                           body=body, timeout=30)
                    (done if st == 200 else failures).append((st, b[:200]))
                except Exception as e:          # noqa: BLE001 - a failure to report
                    failures.append(repr(e))

        # a 200 MB upload, streamed, read slowly by the upstream: in flight at the swap
        stub.fault("slow", read_bps=40 * MiB, path_prefix="/v1/videos")
        ms = gwtest.multipart_stream([("model", "veo3.1"), ("prompt", "p"), ("seconds", "8"),
                                      ("size", "16x9"),
                                      ("input_reference", "big.png", 200 * MiB, "image/png")])
        upload = {}

        def big():
            try:
                upload["r"] = old.request("POST", "/v1/videos", key="alice",
                                          headers=ms.headers(), body=ms, timeout=120)
            except Exception as e:              # noqa: BLE001
                upload["r"] = repr(e)
        up = threading.Thread(target=big)
        up.start()
        clients = [threading.Thread(target=creates) for _ in range(4)]
        new = None
        try:
            gwtest.wait_for(lambda: any(r["body_size"] > 20 * MiB for r in stub.requests()),
                            timeout=30, what="the upload under way")
            for t in clients:
                t.start()
            n0 = len(done)
            new_log = open(os.path.join(d, "new.log"), "wb")
            new = subprocess.Popen([old.bin, "-c", old.conf_path], stdout=new_log,
                                   stderr=subprocess.STDOUT, env=env, cwd=old.dir)
            gwtest.wait_for(lambda: b"listening on" in open(os.path.join(d, "new.log"),
                                                             "rb").read(),
                            timeout=15, what="the new gateway listening")
            gwtest.wait_for(lambda: len(done) > n0 + 20, timeout=30, what="creates on both")
            old.proc.send_signal(signal.SIGTERM)
            assert old.proc.wait(60) == 0, old.log()[-3000:]
            n1 = len(done)
            gwtest.wait_for(lambda: len(done) > n1 + 30, timeout=30,
                            what="creates after the old one left")
        finally:
            stop.set()
            for t in clients:
                t.join()
            up.join()
        assert not failures, failures[:5]
        st, _, b = upload["r"] if isinstance(upload["r"], tuple) else (None, None, upload["r"])
        assert st == 200, (st, b)
        rec = [r for r in stub.requests() if r.get("parts") and len(r["parts"]) == 5]
        assert rec and rec[-1]["parts"][4]["sha256"] == ms.part_sha256[4], "the upload was cut"
        with open(os.path.join(d, "new.log"), "rb") as f:
            new_lines = [json.loads(x) for x in f.read().decode().splitlines()
                         if x.startswith("{")]
        assert sum(1 for x in new_lines if x.get("route") == "create") > 30
        # the upload was still in flight when the old one began to drain, and finished
        log = old.log()
        drain_at = log.index("SIGTERM: draining")
        big_line = [x for x in log.splitlines() if '"bytes_in":%d' % ms.length in x]
        assert big_line and log.index(big_line[0]) > drain_at, "the upload was not across"
        assert json.loads(big_line[0])["status"] == 200
        # the new one is a complete gateway: its admin listener answers too
        assert gwtest.request(admin_port, "GET", "/admin/healthz")[0] == 200
        new.send_signal(signal.SIGTERM)
        assert new.wait(30) == 0
        gwtest.assert_no_sanitizer_report(open(os.path.join(d, "new.log")).read())


def test_sigterm_steers_new_connections():
    """Between SIGTERM and the close of its listeners the old gateway gets no new
    connection: the kernel hands every one to the newer gateway on the same port
    (without the steering, about half would land on the old one's queues)."""
    stub = gwtest.shared_stub()
    with gwtest.Gateway(stub) as old:
        env = dict(os.environ, GW_TEST_UPSTREAM_KEY=stub.key)
        path = os.path.join(old.dir, "new.log")
        with open(path, "wb") as log:
            new = subprocess.Popen([old.bin, "-c", old.conf_path], stdout=log,
                                   stderr=subprocess.STDOUT, env=env, cwd=old.dir)
        try:
            gwtest.wait_for(lambda: b"listening on" in open(path, "rb").read(),
                            what="the new gateway listening")
            old.proc.send_signal(signal.SIGTERM)
            gwtest.wait_for(lambda: "new connections go to a newer gateway" in old.log(),
                            interval=0.002, what="the steering")
            served_before = len([x for x in old.log_json() if x.get("route") == "models"])
            rids, statuses, t0 = [], [], time.monotonic()

            def ask():  # new connections, inside the 250 ms grace
                while time.monotonic() - t0 < 0.15:
                    st, h, _ = gwtest.request(old.port, "GET", "/v1/models", headers=old.auth())
                    statuses.append(st)
                    rids.append(h.get("x-request-id"))
            askers = [threading.Thread(target=ask) for _ in range(4)]
            for t in askers:
                t.start()
            for t in askers:
                t.join()
            assert old.proc.wait(15) == 0
            assert set(statuses) == {200}, statuses
            assert len(rids) > 4, rids  # a busy machine serves fewer in 150 ms
            old_rids = {x["rid"] for x in old.log_json() if x.get("route") == "models"}
            assert len(old_rids) == served_before and not old_rids & set(rids), \
                "the old gateway took new connections after SIGTERM"
        finally:
            new.send_signal(signal.SIGTERM)
            assert new.wait(15) == 0


gwtest.main(globals())
