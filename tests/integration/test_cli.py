"""The command line: `-t` (configuration check and its error format),
`mint-key`, `-v`, and SIGTERM draining in-flight exchanges."""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

MODELS = os.path.join(gwtest.SOURCE_DIR, "config", "models.conf")


def tmpdir():
    """The file's temp dir (removed after the tests unless GW_KEEP_TMP is set)."""
    return gwtest.shared_tmpdir(prefix="gwtest-cli-")


gateway_bin = gwtest.gateway_bin


def run(args, env=None, timeout=20):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([gateway_bin()] + args, capture_output=True, text=True,
                       timeout=timeout, env=e, cwd=tmpdir())
    gwtest.assert_no_sanitizer_report(p.stdout + p.stderr, "the gateway's output")
    return p


def write(name, text):
    path = os.path.join(tmpdir(), name)
    with open(path, "w") as f:
        f.write(text)
    return path


GOOD = """include = %s
[server]
listen = 127.0.0.1:%d
threads = 1
[upstream]
url = http://127.0.0.1:9
key = env:GW_CLI_UP_KEY
[key team]
sha256 = %s
"""


# ---------------------------------------------------------------- -t

def test_check_ok():
    conf = write("good.conf", GOOD % (MODELS, 8080, "ab" * 32))
    p = run(["-t", "-c", conf], env={"GW_CLI_UP_KEY": "sk-up-cli"})
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "is ok" in p.stdout and conf in p.stdout, p.stdout
    assert p.stderr == "", p.stderr
    # the same file with the variable unset: an error naming the reference only
    e = dict(os.environ)
    e.pop("GW_CLI_UP_KEY", None)
    p = subprocess.run([gateway_bin(), "-t", "-c", conf], capture_output=True, text=True,
                       env=e, timeout=20)
    assert p.returncode == 1 and "env:GW_CLI_UP_KEY" in p.stderr, p.stderr
    # the example configuration shipped with the gateway checks (its key from env)
    example = os.path.join(gwtest.SOURCE_DIR, "gateway.conf.example")
    p = run(["-t", "-c", example], env={"VIDEO_UPSTREAM_KEY": "sk-up-example"})
    assert p.returncode == 0, (p.stdout, p.stderr)


ERR_LINE = re.compile(r'^(?P<file>[^:]+):(?P<line>\d+): (?P<key>[a-z_]+(?: [A-Za-z0-9_.-]+)?'
                      r'(?:\.[a-z_0-9]+)?): expected (?P<exp>.+), got (?P<got>.+)$')


def test_check_errors_format():
    secret = "sk-live-" + os.urandom(12).hex()
    text = "\n".join([
        "include = %s" % MODELS,          # 1
        "[server]",                       # 2
        "listen = 127.0.0.1:8080",        # 3
        "threads = ten",                  # 4
        "max_body = huge",                # 5
        "client_timeout = 5",             # 6
        "log_level = loud",               # 7
        "[upstream]",                     # 8
        "url = ftp://x",                  # 9
        "key = %s" % secret,              # 10  a key written inline: refused, not shown
        "connect_timeout = 0ms",          # 11
        "[models]",                       # 12
        "unknown = maybe",                # 13
        "[key team]",                     # 14
        "sha256 = 1234",                  # 15
        "[aliases]",                      # 16
        "friendly = no-such-model",       # 17
    ]) + "\n"
    conf = write("bad.conf", text)
    p = run(["-t", "-c", conf])
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "is ok" not in p.stdout
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith(conf + ":")]
    want = {4: ("server.threads", '"ten"'), 5: ("server.max_body", '"huge"'),
            6: ("server.client_timeout", '"5"'), 7: ("server.log_level", '"loud"'),
            9: ("upstream.url", '"ftp://x"'), 10: ("upstream.key", None),
            11: ("upstream.connect_timeout", '"0ms"'), 13: ("models.unknown", '"maybe"'),
            15: ("key team.sha256", None), 17: ("aliases.friendly", '"no-such-model"')}
    got = {}
    for ln in lines:
        m = ERR_LINE.match(ln)
        assert m, "not FILE:LINE: section.key: expected ..., got ...: %r" % ln
        got[int(m.group("line"))] = (m.group("key"), m.group("got"))
    assert set(got) == set(want), (sorted(got), p.stderr)
    for line, (key, value) in want.items():
        assert got[line][0] == key, (line, got[line], key)
        if value is not None:
            assert got[line][1].startswith(value), (line, got[line], value)
    assert secret not in p.stdout + p.stderr, "the inline key was echoed"
    # one error, on its own: still exit 1, still the same format
    conf = write("one.conf", (GOOD % (MODELS, 8080, "ab" * 32)).replace("threads = 1",
                                                                        "threads = 65"))
    p = run(["-t", "-c", conf], env={"GW_CLI_UP_KEY": "x"})
    assert p.returncode == 1
    m = ERR_LINE.match(p.stderr.splitlines()[0])
    assert m and m.group("line") == "4" and m.group("key") == "server.threads", p.stderr
    assert m.group("got") == '"65"' and "0..64" in m.group("exp"), p.stderr
    # a file that does not exist
    p = run(["-t", "-c", os.path.join(tmpdir(), "nope.conf")])
    assert p.returncode == 1 and "nope.conf" in p.stderr, p.stderr
    # and the gateway refuses to run with any of them
    p = run(["-c", conf], env={"GW_CLI_UP_KEY": "x"})
    assert p.returncode == 1 and "server.threads" in p.stderr, p.stderr


# ---------------------------------------------------------------- mint-key / -v

def test_mint_key():
    p = run(["mint-key", "alice.team-1"])
    assert p.returncode == 0, p.stderr
    out = p.stdout
    keys = re.findall(r"sk-vgw-[A-Za-z0-9_-]{32}", out)
    assert len(keys) == 1, out           # printed once
    key = keys[0]
    assert out.count(key) == 1
    m = re.search(r"^\[key alice\.team-1\]\nsha256 = ([0-9a-f]{64})$", out, re.M)
    assert m, out
    assert m.group(1) == hashlib.sha256(key.encode()).hexdigest()
    # every run is new
    p2 = run(["mint-key", "alice.team-1"])
    assert re.findall(r"sk-vgw-[A-Za-z0-9_-]{32}", p2.stdout)[0] != key
    # bad names and usage
    for args in (["mint-key", "a b"], ["mint-key", ""], ["mint-key", "x" * 65], ["mint-key"],
                 ["mint-key", "a", "b"]):
        p = run(args)
        assert p.returncode != 0 and "sk-vgw-" not in p.stdout, (args, p.stdout)
    # a gateway configured with the pasted stanza accepts the key, and only it
    stanza = out[out.index("[key alice.team-1]"):]
    with gwtest.Stub() as stub:
        gw = gwtest.Gateway(stub, keys=(), raw_extra=stanza)
        with gw:
            h = {"Authorization": "Bearer " + key}
            st, _, b = gw.request("GET", "/v1/videos", key=None, headers=h)
            assert st == 200, (st, b)
            st, _, b = gw.request("GET", "/v1/videos", key=None,
                                  headers={"Authorization": "Bearer " + key[:-1] + "A"
                                           if key[-1] != "A" else key[:-1] + "B"})
            assert st == 401
            # two event loops write their lines in either order: find each by status
            def list_lines():
                got = [a for a in gw.log_json() if a.get("route") == "list"]
                return got if len(got) >= 2 else None

            lines = gwtest.wait_for(list_lines, what="access log")
            ok = [a for a in lines if a["status"] == 200]
            refused = [a for a in lines if a["status"] == 401]
            assert len(ok) == 1 and ok[0]["key"] == "alice.team-1", lines
            assert len(refused) == 1 and refused[0]["key"] is None, lines
        assert key not in gw.log()
        assert gw.proc.returncode == 0
        gwtest.assert_no_sanitizer_report(gw.log())


def test_version():
    p = run(["-v"])
    assert p.returncode == 0, p.stderr
    assert re.match(r"^gateway \d+\.\d+\.\d+\n$", p.stdout), p.stdout
    p = run(["-h"])
    assert p.returncode == 0 and "mint-key" in p.stdout and "-t" in p.stdout
    p = run(["-x"])
    assert p.returncode == 2 and "usage" in p.stderr, (p.returncode, p.stderr)


# ---------------------------------------------------------------- SIGTERM

def _refused(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except (ConnectionRefusedError, ConnectionResetError, TimeoutError):
        # refused, or (a SYN caught while a SO_REUSEPORT listener closes) never
        # accepted: on loopback a listening gateway accepts at once
        return True
    try:
        with s:
            # a listener that still accepts answers; one closed since refuses.
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(2)
            return s.recv(100) == b""
    except (ConnectionRefusedError, ConnectionResetError):
        return True


def test_sigterm_drains_inflight():
    with gwtest.Stub() as stub:
        gw = gwtest.Gateway(stub, threads=2)
        with gw:
            stub.config(content_size=3 * 1024 * 1024)
            job = stub.create_job()           # record 1
            # a create answered late and a download trickling out, both in flight
            stub.fault("slow", delay_ms=1500, path_prefix="/v1/videos", count=1)
            results = {}

            def do_create():
                body = json.dumps({"model": "veo3.1", "prompt": "p", "seconds": "8",
                                   "size": "16x9"}).encode()
                results["create"] = gw.request("POST", "/v1/videos", body=body,
                                               headers={"Content-Type": "application/json"},
                                               timeout=30)
            t = threading.Thread(target=do_create)
            t.start()
            stub.wait_requests(2)             # the create has reached the stub
            stub.fault("slow", chunk_delay_ms=40, path_prefix="/v1/videos/%s/content"
                       % job["id"])
            conn, resp = gwtest.open_request(gw.port, "GET", "/v1/videos/%s/content"
                                             % job["id"], headers=gw.auth(), timeout=30)
            assert resp.status == 200
            first = resp.read(1000)
            t0 = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            # new connections are refused while the old ones finish
            gwtest.wait_for(lambda: _refused(gw.port), 5, 0.02, "the listener to close")
            rest = resp.read()
            conn.close()
            t.join(30)
            st, _, b = results["create"]
            assert st == 200 and json.loads(b)["model"] == "veo_3_1", (st, b)
            data = first + rest
            assert len(data) == 3 * 1024 * 1024
            assert hashlib.sha256(data).hexdigest() == \
                gwtest.content_sha256(job["id"], len(data))
            code = gw.proc.wait(30)
            assert code == 0, (code, gw.log()[-3000:])
            assert time.monotonic() - t0 < 25
            log = gw.log()
            assert "SIGTERM" in log and "stopped" in log, log[-2000:]
            gwtest.assert_no_sanitizer_report(log)
            routes = [(a["route"], a["status"], a["completed"]) for a in gw.log_json()]
            assert ("create", 200, True) in routes and ("content", 200, True) in routes, routes


def test_sigterm_idle_exits_at_once():
    with gwtest.Stub() as stub:
        gw = gwtest.Gateway(stub)
        with gw:
            # an idle keep-alive client connection must not hold the exit up
            c = gwtest.RawConn(gw.port)
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert c.read_response().startswith(b"HTTP/1.1 200 ")
            t0 = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            code = gw.proc.wait(15)
            c.close()
            assert code == 0 and time.monotonic() - t0 < 5, (code, time.monotonic() - t0)
            gwtest.assert_no_sanitizer_report(gw.log())


def test_sigterm_serves_a_request_written_late():
    """A connection accepted just before SIGTERM whose client writes its request a
    moment later (a busy client, a loaded machine) is served, not reset by the
    exit; the process leaves right after."""
    with gwtest.Stub() as stub:
        gw = gwtest.Gateway(stub)
        with gw:
            c = gwtest.RawConn(gw.port)
            # the connection is made (the drain accepts what is queued)...
            gw.proc.send_signal(signal.SIGTERM)
            gwtest.wait_for(lambda: "draining" in gw.log(), what="the drain")
            time.sleep(0.3)  # ...and its request comes late: the point of the test
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            resp = c.read_response()
            assert resp.startswith(b"HTTP/1.1 200 "), resp[:200]
            assert b"connection: close" in resp.lower(), resp[:300]
            assert gw.proc.wait(15) == 0
            c.close()
            gwtest.assert_no_sanitizer_report(gw.log())


if __name__ == "__main__":
    gwtest.main(globals())    # also removes the temp dir
