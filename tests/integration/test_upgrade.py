"""Zero-downtime upgrade (issue 10, docs/operations.md): a second gateway starts on the
same address, takes the running one's listening sockets (handover.c), and the old one
gets SIGTERM; a steady stream of creates and a 200 MB upload in flight across the swap:
zero failures, the upload whole. Also a chain of upgrades across thread counts with a
rollback, and the fallback without handover (SO_REUSEPORT steering)."""

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
        # the new one took the old one's sockets (public and admin): the old one closed
        # its own at once on SIGTERM, nothing steered, nothing reset
        new_text = open(os.path.join(d, "new.log")).read()
        took = ("handover: took 2 listening socket(s) and the admin listener of gateway pid %d"
                % old.proc.pid)
        assert took in new_text, new_text[-2000:]
        assert "another gateway accepts on our listening sockets" in log
        assert "new connections go to a newer gateway" not in log
        # the new one is a complete gateway: its admin listener answers too
        assert gwtest.request(admin_port, "GET", "/admin/healthz")[0] == 200
        new.send_signal(signal.SIGTERM)
        assert new.wait(30) == 0
        gwtest.assert_no_sanitizer_report(open(os.path.join(d, "new.log")).read())


class _Creates:
    """Clients sending creates to port until stop(): every answer but 200 and every
    exception (a reset connection) is a failure."""

    def __init__(self, gw, n=4):
        self.gw, self.done, self.failures = gw, [], []
        self.body = json.dumps({"model": "veo3.1", "prompt": "p", "seconds": "4",
                                "size": "16x9"}).encode()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(n)]
        for t in self._threads:
            t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                st, _, b = self.gw.request("POST", "/v1/videos", key="alice", headers=JSON,
                                           body=self.body, timeout=30)
                (self.done if st == 200 else self.failures).append((st, b[:200]))
            except Exception as e:              # noqa: BLE001 - a failure to report
                self.failures.append(repr(e))

    def more(self, n, what):
        n0 = len(self.done)
        gwtest.wait_for(lambda: len(self.done) >= n0 + n, timeout=30, what=what)

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join()
        return self.failures


def _spawn(gw, conf_path, name, env):
    """Another gateway process on gw's address; returns (Popen, log path) once it listens."""
    path = os.path.join(gw.dir, name)
    with open(path, "wb") as log:
        p = subprocess.Popen([gw.bin, "-c", conf_path], stdout=log, stderr=subprocess.STDOUT,
                             env=env, cwd=gw.dir)
    gwtest.wait_for(lambda: b"listening on" in open(path, "rb").read(), timeout=15,
                    what="%s listening" % name)
    return p, path


def _text(path):
    with open(path) as f:
        return f.read()


def _conf_with_threads(gw, n):
    path = os.path.join(gw.dir, "threads-%d.conf" % n)
    with open(path, "w") as f:
        f.write(_text(gw.conf_path).replace("threads = 2", "threads = %d" % n))
    return path


def test_handover_chain_rollback_and_thread_counts():
    """A (2 loops) -> B (1 loop) takes A's 2 sockets (its loop listens on both) -> A
    leaves -> C (3 loops) takes B's 2 (its third loop shares one) -> C is rolled back
    (SIGTERM while B runs) -> B serves alone. Creates flow all along: no failure, no
    reset; each leaver asked the other, was told it stays, and closed at once."""
    stub = gwtest.shared_stub()
    with gwtest.Gateway(stub, keys=("alice",)) as a:
        env = dict(os.environ, GW_TEST_UPSTREAM_KEY=stub.key)
        load = _Creates(a)
        procs = []
        try:
            load.more(10, "creates on A")
            b, b_log = _spawn(a, _conf_with_threads(a, 1), "b.log", env)
            procs.append(b)
            assert ("took 2 listening socket(s) of gateway pid %d" % a.proc.pid) in _text(b_log)
            load.more(20, "creates on A and B")
            a.proc.send_signal(signal.SIGTERM)
            assert a.proc.wait(30) == 0
            assert "another gateway accepts on our listening sockets" in a.log()
            assert "gateway pid %d leaves; we keep accepting" % a.proc.pid in _text(b_log)
            gwtest.wait_for(lambda: "a newer gateway can take our listening sockets now"
                            in _text(b_log), what="B serving the handover name")
            load.more(20, "creates on B alone")
            c, c_log = _spawn(a, _conf_with_threads(a, 3), "c.log", env)
            procs.append(c)
            assert ("took 2 listening socket(s) of gateway pid %d" % b.pid) in _text(c_log)
            load.more(20, "creates on B and C")
            c.send_signal(signal.SIGTERM)          # the rollback: the newer one leaves
            assert c.wait(30) == 0
            assert "another gateway accepts on our listening sockets" in _text(c_log)
            assert "gateway pid %d leaves; we keep accepting" % c.pid in _text(b_log)
            load.more(20, "creates on B after the rollback")
        finally:
            failures = load.stop()
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    p.wait(30)
        assert not failures, failures[:5]
        served = {}
        for name in ("b.log", "c.log"):
            served[name] = sum(1 for x in _text(os.path.join(a.dir, name)).splitlines()
                               if x.startswith("{") and json.loads(x).get("route") == "create")
        assert served["b.log"] > 20 and served["c.log"] > 0, served
        # B's last SIGTERM had nobody left to share with: it steered and drained
        assert "another gateway accepts" not in _text(b_log)
        for name in ("b.log", "c.log"):
            gwtest.assert_no_sanitizer_report(_text(os.path.join(a.dir, name)))


def test_handover_both_stopped_at_once():
    """Two gateways sharing their sockets get SIGTERM together: at most one may close
    at once on the other's word (the other, stopping too, answers that it leaves), so
    they never both count on each other and drop what is queued."""
    stub = gwtest.shared_stub()
    for _ in range(3):
        with gwtest.Gateway(stub) as a:
            env = dict(os.environ, GW_TEST_UPSTREAM_KEY=stub.key)
            b, b_log = _spawn(a, a.conf_path, "b.log", env)
            try:
                assert "took 2 listening socket(s)" in _text(b_log)
                a.proc.send_signal(signal.SIGTERM)
                b.send_signal(signal.SIGTERM)
                assert a.proc.wait(30) == 0 and b.wait(30) == 0
            finally:
                if b.poll() is None:
                    b.kill()
            at_once = [log for log in (a.log(), _text(b_log))
                       if "another gateway accepts on our listening sockets" in log]
            assert len(at_once) <= 1, "both closed at once, each counting on the other"


def _models_rids(log_text):
    return {json.loads(x)["rid"] for x in log_text.splitlines()
            if x.startswith("{") and json.loads(x).get("route") == "models"}


def _assert_steered(old_proc, old_log, port, auth):
    """SIGTERM to old_proc (its log text from old_log()): between the steering and the
    close of its listeners, new connections all go to the newer gateway's sockets."""
    old_proc.send_signal(signal.SIGTERM)
    gwtest.wait_for(lambda: "new connections go to a newer gateway" in old_log(),
                    interval=0.002, what="the steering")
    served_before = len(_models_rids(old_log()))
    rids, statuses, t0 = [], [], time.monotonic()

    def ask():  # new connections, inside the 250 ms grace
        while time.monotonic() - t0 < 0.15:
            st, h, _ = gwtest.request(port, "GET", "/v1/models", headers=auth)
            statuses.append(st)
            rids.append(h.get("x-request-id"))
    askers = [threading.Thread(target=ask) for _ in range(4)]
    for t in askers:
        t.start()
    for t in askers:
        t.join()
    assert old_proc.wait(15) == 0
    assert set(statuses) == {200}, statuses
    assert len(rids) > 4, rids  # a busy machine serves fewer in 150 ms
    old_rids = _models_rids(old_log())
    assert len(old_rids) == served_before and not old_rids & set(rids), \
        "the old gateway took new connections after SIGTERM"


def test_sigterm_steers_new_connections():
    """Without handover (handover = off): between SIGTERM and the close of its
    listeners the old gateway gets no new connection: the kernel hands every one to
    the newer gateway's own sockets on the same port (without the steering, about
    half would land on the old one's queues)."""
    stub = gwtest.shared_stub()
    with gwtest.Gateway(stub, extra={"server": {"handover": "off"}}) as old:
        env = dict(os.environ, GW_TEST_UPSTREAM_KEY=stub.key)
        new, _ = _spawn(old, old.conf_path, "new.log", env)
        try:
            _assert_steered(old.proc, old.log, old.port, old.auth())
        finally:
            new.send_signal(signal.SIGTERM)
            assert new.wait(15) == 0


def test_steering_after_a_handover():
    """A gateway whose sockets came from an older one (B: one loop, A's two sockets,
    A gone) and a newer one that binds its own (D, handover = off): B's steering counts
    the sockets it took, not its loops, so every new connection goes to D's."""
    stub = gwtest.shared_stub()
    with gwtest.Gateway(stub) as a:
        env = dict(os.environ, GW_TEST_UPSTREAM_KEY=stub.key)
        procs = []
        try:
            b, b_log = _spawn(a, _conf_with_threads(a, 1), "b.log", env)
            procs.append(b)
            assert "took 2 listening socket(s)" in _text(b_log)
            a.proc.send_signal(signal.SIGTERM)
            assert a.proc.wait(30) == 0
            off = os.path.join(a.dir, "off.conf")
            with open(off, "w") as f:
                f.write(_text(a.conf_path).replace("[server]\n", "[server]\nhandover = off\n"))
            d, _ = _spawn(a, off, "d.log", env)
            procs.append(d)
            _assert_steered(b, lambda: _text(b_log), a.port, a.auth())
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    p.wait(30)


gwtest.main(globals())
