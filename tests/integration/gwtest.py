"""gwtest.py - support library for the integration tests (Python 3.11 stdlib only).

A test file is a list of `def test_*():` functions ending with

    import gwtest
    gwtest.main(globals())

Run all of them with `python3 test_x.py`, one with `python3 test_x.py test_name`.

What is here:
  make_certs(dir)            a throwaway CA, a server cert (SAN DNS+IP), a second unrelated CA
  Stub                       the stub upstream (tests/stub/stub_upstream.py) as a subprocess
  Gateway                    the gateway binary (env GW_BIN) with a generated gateway.conf
  Redis                      a private redis-server (free loopback port, own dir, no persistence)
  request / download / open_request / raw / RawConn / parse_response / split_responses
                             HTTP clients
  multipart / multipart_stream / chunked / pattern_sha256 / content_sha256    bodies
  error_body                 parse and check an OpenAI error body
  wait_for                   poll a predicate (never sleep for a fixed time)
  SANITIZER_MARKERS / assert_no_sanitizer_report / assert_clean / stop_clean /
  checked_gateway            "the gateway ran (and exited) cleanly" checks
  shared_stub / shared_gateway / shared_tmpdir / at_exit
                             objects shared by the tests of one file, closed by main()
"""

import contextlib
import hashlib
import http.client
import importlib.util
import json
import os
import random
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SOURCE_DIR = os.environ.get("GW_SOURCE_DIR") or ROOT
STUB_PATH = os.path.join(SOURCE_DIR, "tests", "stub", "stub_upstream.py")
if not os.path.exists(STUB_PATH):
    STUB_PATH = os.path.join(ROOT, "tests", "stub", "stub_upstream.py")

_spec = importlib.util.spec_from_file_location("stub_upstream", STUB_PATH)
stub_upstream = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stub_upstream)

#: sha256 hex of what the stub serves at /v1/videos/{id}/content for (id, size, variant)
content_sha256 = stub_upstream.content_sha256

PATTERN_BLOCK = 64 * 1024
STREAM_CHUNK = 256 * 1024


class Skip(Exception):
    """Raise in a test to skip it (reported, not counted as a failure)."""


# ----------------------------------------------------------------------------
# small utilities

def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago, taken below the kernel's ephemeral range: a
    port the kernel picked for a bind to port 0 (the stub's, another test's client)
    could be handed out again to the next bind to port 0 before the gateway that was
    told to listen on it starts (CI hit it: an admin listener and a stub on one port)."""
    lo, _ = _ephemeral_range()
    rnd = random.Random()
    for _ in range(200):
        port = rnd.randrange(max(1024, lo - 12000), lo)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]




def in_parallel(fn, args_list, timeout=60):
    """fn(*args) for every args of args_list, each on its own thread, all at once;
    their results in args_list's order (an exception is raised again here)."""
    results = [None] * len(args_list)

    def run(k, args):
        try:
            results[k] = (True, fn(*args))
        except Exception as e:          # noqa: BLE001 - raised again below
            results[k] = (False, e)
    ts = [threading.Thread(target=run, args=(k, args)) for k, args in enumerate(args_list)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
    for r in results:
        assert r is not None, "a call did not return within %s s" % timeout
        if not r[0]:
            raise r[1]
    return [r[1] for r in results]

def terminate(proc, timeout=10):
    """SIGTERM a helper process still running, SIGKILL it if it has not exited
    within timeout seconds; reaped either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

def wait_for(pred, timeout=10.0, interval=0.01, what="condition"):
    """Poll pred() until it returns a truthy value (returned); AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def _tls_context(ca):
    ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    return ctx


def proc_status_kib(pid, field):
    """A kB field (VmHWM, VmRSS, ...) of /proc/PID/status, as an int."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


# ----------------------------------------------------------------------------
# certificates

_CA_CNF = """[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = %s
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
"""

_LEAF_CNF = """[req]
distinguished_name = dn
prompt = no
[dn]
CN = %s
"""

_LEAF_EXT = """subjectAltName = %s
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
"""


def make_certs(dirpath, names=("localhost",), ips=("127.0.0.1",)):
    """Generate with the openssl CLI (EC P-256, valid 30 days):
    ca.pem/ca.key, server.pem/server.key (signed by ca, subjectAltName DNS:names,
    IP:ips, CN names[0]) and an unrelated other-ca.pem/other-ca.key.
    Returns {"ca", "cert", "key", "other_ca", "dir"} plus the same paths under
    their file names ("ca.pem", "server.pem", "server.key", "other-ca.pem")."""
    os.makedirs(dirpath, exist_ok=True)

    def run(*args):
        p = subprocess.run(["openssl"] + list(args), cwd=dirpath,
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("openssl %s failed: %s" % (" ".join(args), p.stderr))

    def write(name, text):
        with open(os.path.join(dirpath, name), "w") as f:
            f.write(text)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for base, cn in (("ca", "gwtest CA"), ("other-ca", "gwtest unrelated CA")):
        write(base + ".cnf", _CA_CNF % cn)
        run("req", "-x509", "-config", base + ".cnf", *ec, "-keyout", base + ".key",
            "-out", base + ".pem", "-days", "30", "-sha256")
    names = list(names)
    san = ",".join(["DNS:%s" % n for n in names] + ["IP:%s" % i for i in ips])
    write("server.cnf", _LEAF_CNF % (names[0] if names else "gwtest server"))
    write("server.ext", _LEAF_EXT % san)
    run("req", "-new", "-config", "server.cnf", *ec, "-keyout", "server.key",
        "-out", "server.csr", "-sha256")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "30", "-sha256",
        "-extfile", "server.ext")
    p = lambda n: os.path.join(dirpath, n)  # noqa: E731
    return {"ca": p("ca.pem"), "cert": p("server.pem"), "key": p("server.key"),
            "other_ca": p("other-ca.pem"), "dir": dirpath,
            "ca.pem": p("ca.pem"), "server.pem": p("server.pem"),
            "server.key": p("server.key"), "other-ca.pem": p("other-ca.pem")}


# ----------------------------------------------------------------------------
# the stub upstream

class Stub:
    """The stub upstream as a subprocess.

        with Stub() as stub:            # or Stub(tls=True), Stub(content_size=..., job_seconds=...)
            stub.url, stub.port, stub.key
            stub.requests()             # records (see stub_upstream.py)
            stub.fault("429", retry_after=2, count=1)
            stub.wait_requests(1)       # -> records, once >= 1 exists

    With tls=True a CA and server cert are made (stub.certs, stub.ca) unless
    `certs` (a make_certs() dict) is given; the url is https://localhost:PORT and
    the stub listens on 127.0.0.1 and ::1.  extra_keys=N makes N more keys the
    stub accepts (stub.keys lists all, stub.key is the first): a pool for
    Gateway(stub, upstream_keys=stub.keys)."""

    def __init__(self, tls=False, certs=None, key=None, content_size=None,
                 job_seconds=None, verbose=True, args=(), extra_keys=0):
        self.tls = tls
        self.certs = certs
        self.key = key or "sk-upstream-" + secrets.token_urlsafe(24)
        self.keys = [self.key] + ["sk-upstream-%d-%s" % (i + 2, secrets.token_urlsafe(24))
                                  for i in range(int(extra_keys))]
        self.content_size = content_size
        self.job_seconds = job_seconds
        self.verbose = verbose
        self.args = list(args)
        self.proc = None
        self.port = None
        self.dir = None

    # -- lifecycle
    def start(self, timeout=30):
        self.dir = tempfile.mkdtemp(prefix="gwtest-stub-")
        if self.tls and self.certs is None:
            self.certs = make_certs(os.path.join(self.dir, "certs"))
        ready = os.path.join(self.dir, "ready")
        cmd = [sys.executable, STUB_PATH, "--port", "0", "--ready-file", ready]
        for k in self.keys:
            cmd += ["--key", k]
        if self.tls:
            cmd += ["--tls-cert", self.certs["cert"], "--tls-key", self.certs["key"], "--dual"]
        if self.content_size is not None:
            cmd += ["--content-size", str(int(self.content_size))]
        if self.job_seconds is not None:
            cmd += ["--job-seconds", str(self.job_seconds)]
        if self.verbose:
            cmd.append("--verbose")
        cmd += self.args
        self._logf = open(os.path.join(self.dir, "stub.log"), "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

        def ready_port():
            if self.proc.poll() is not None:
                raise RuntimeError("stub exited with %s:\n%s" % (self.proc.returncode,
                                                                 self.log()))
            try:
                with open(ready) as f:
                    return int(f.read().strip() or 0)
            except FileNotFoundError:
                return 0
        try:
            self.port = wait_for(ready_port, timeout, what="the stub's ready file")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_logf", None):
            self._logf.close()
            self._logf = None
        return self.proc.returncode if self.proc else None

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        self.stop()
        if et is not None and not issubclass(et, Skip):
            sys.stderr.write("---- stub log (tail) ----\n%s\n" % self.log()[-4000:])
        if self.dir and not os.environ.get("GW_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def log(self):
        try:
            with open(os.path.join(self.dir, "stub.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    @property
    def host(self):
        return "localhost" if self.tls else "127.0.0.1"

    @property
    def url(self):
        return "%s://%s:%d" % ("https" if self.tls else "http", self.host, self.port)

    @property
    def ca(self):
        return self.certs["ca"] if self.certs else None

    # -- talking to it
    def http(self, method, path, body=b"", headers=None, timeout=30):
        """A request to the stub itself -> (status, headers, body bytes)."""
        return request(self.port, method, path, headers=headers, body=body,
                       tls=self.tls, ca=self.ca, timeout=timeout, host=self.host)

    def api(self, method, path, body=b"", headers=None, timeout=30):
        """A /v1 request with the right key -> (status, headers, body bytes)."""
        h = {"Authorization": "Bearer " + self.key}
        h.update(headers or {})
        return self.http(method, path, body, h, timeout)

    def _control(self, method, path, obj=None, timeout=30, ok=(200,)):
        body = json.dumps(obj).encode() if obj is not None else b""
        hdr = {"Content-Type": "application/json"} if obj is not None else {}
        st, _, data = self.http(method, "/__stub/" + path, body, hdr, timeout)
        if st not in ok:
            raise AssertionError("stub control %s %s -> %d %s" % (method, path, st, data[:500]))
        return st, json.loads(data)

    def requests(self, path=None, method=None, since=None):
        """All records (oldest first), optionally only those with this path/method
        (and only those with a seq above `since`)."""
        recs = self._control("GET", "requests" if since is None
                             else "requests?since=%d" % int(since))[1]
        return [r for r in recs if (path is None or r["path"] == path)
                and (method is None or r["method"] == method)]

    def last(self):
        recs = self.requests()
        assert recs, "the stub has received no request"
        return recs[-1]

    def reset(self, config=False):
        """Forget records, jobs and faults (and the config too if config=True)."""
        self._control("POST", "reset", {"config": bool(config)})

    def fault(self, mode, **kw):
        """Arm a fault: mode in 500 429 reset reset_mid_request hang slow
        close_after_headers; kw: count, retry_after, delay_ms, path_prefix,
        after_bytes (reset_mid_request), body_bytes (close_after_headers),
        early (500/429: answer before reading the body, then close),
        read_bps / chunk_delay_ms (slow: throttle body reading / content writing)."""
        d = {"mode": str(mode)}
        d.update(kw)
        return self._control("POST", "fault", d)[1]

    def config(self, **kw):
        """Set content_size / job_seconds / idle_timeout; returns the config."""
        return self._control("POST", "config", kw)[1]

    def wait_requests(self, n, timeout=10, done=False):
        """Records, once at least n exist (done=True: n have been answered/ended)."""
        st, recs = self._control("GET", "wait?count=%d&timeout=%s&done=%d"
                                 % (n, timeout, 1 if done else 0),
                                 timeout=timeout + 10, ok=(200, 408))
        if st != 200:
            raise AssertionError("stub: fewer than %d requests%s after %ss (%d seen)"
                                 % (n, " ended" if done else "", timeout, len(recs)))
        return recs

    def wait_bytes(self, n, timeout=10):
        """The first record whose body has reached n bytes received."""
        st, r = self._control("GET", "wait_bytes?bytes=%d&timeout=%s" % (n, timeout),
                              timeout=timeout + 10, ok=(200, 408))
        if st != 200:
            raise AssertionError("stub: no request body reached %d bytes in %ss" % (n, timeout))
        return r

    def close_idle(self):
        """Close the stub's idle keep-alive connections; returns how many."""
        return self._control("POST", "close_idle")[1]["closed"]

    def stats(self):
        return self._control("GET", "stats")[1]

    def jobs(self):
        return self._control("GET", "jobs")[1]

    def set_job(self, video_id, **kw):
        """Override a job's status/progress/error, e.g. set_job(id, status="failed")."""
        d = {"id": video_id}
        d.update(kw)
        return self._control("POST", "job", d)[1]

    def create_job(self, model="veo3", prompt="p", seconds="8", size="16x9"):
        """Create a job directly at the stub (not through a gateway); returns it."""
        st, _, body = self.api("POST", "/v1/videos", json.dumps(
            {"model": model, "prompt": prompt, "seconds": seconds, "size": size}).encode(),
            {"Content-Type": "application/json"})
        assert st == 200, (st, body)
        return json.loads(body)


# ----------------------------------------------------------------------------
# the gateway

_SERVER_OPTS = ("threads", "max_body", "max_json_body", "max_header_bytes", "lookahead",
                "fallback", "spool_dir", "client_timeout", "header_timeout", "access_log", "log_level",
                "tls_cert", "tls_key")
_UPSTREAM_OPTS = ("connect_timeout", "response_timeout", "idle_timeout", "pool_size",
                  "tls_verify", "ca_file")


class Redis:
    """A private redis-server: a free loopback port, its own temporary directory,
    no persistence (nothing survives a stop or a kill), never the system's one.

        with Redis() as r, Gateway(stub, extra={"store": r.store()}) as gw:
            r.cmd("SCRIPT", "FLUSH")

    stop() then start() brings it back on the same port (empty); kill() is a
    SIGKILL, pause()/resume() SIGSTOP/SIGCONT (a hung Redis).
    """

    def __init__(self, password=None):
        self.password = password
        self.port = None
        self.proc = None
        self.dir = None

    def start(self, timeout=30):
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found: run scripts/install-deps.sh")
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="gwtest-redis-")
        if self.port is None:
            self.port = free_port()
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %s" % self.proc.returncode)
            try:
                return self.cmd("PING") in ("PONG", b"PONG")
            except OSError:
                return False
        wait_for(ready, timeout, 0.01, "redis-server PING")
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            terminate(self.proc)
        self.proc = None

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        self.stop()
        if self.dir and not os.environ.get("GW_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def store(self, prefix="videogw:", **kw):
        """The [store] section of a gateway on this Redis (password by env reference:
        give the gateway env={"GW_TEST_REDIS_PW": r.password})."""
        d = {"backend": "redis", "redis": "127.0.0.1:%d" % self.port, "prefix": prefix}
        if self.password:
            d["password"] = "env:GW_TEST_REDIS_PW"
        d.update(kw)
        return d

    def cmd(self, *args, timeout=5):
        """One command (RESP over a fresh connection); the reply: str for simple
        strings, bytes for bulk, int, list, None; an error reply raises RedisError."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            f = s.makefile("rb")
            cmds = ([("AUTH", self.password)] if self.password else []) + [args]
            for c in cmds:
                out = b"*%d\r\n" % len(c)
                for a in c:
                    a = a if isinstance(a, bytes) else str(a).encode()
                    out += b"$%d\r\n%s\r\n" % (len(a), a)
                s.sendall(out)
                reply = _resp_read(f)
            return reply


class RedisError(Exception):
    pass


def _resp_read(f):
    line = f.readline()
    if not line:
        raise OSError("redis closed the connection")
    t, rest = line[:1], line[1:-2]
    if t == b"+":
        return rest.decode()
    if t == b"-":
        raise RedisError(rest.decode())
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if t == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise OSError("unexpected RESP %r" % line)


def _key_env(i):
    """The secret reference of the i-th upstream key of a pool."""
    return "env:GW_TEST_UPSTREAM_KEY" + ("_%d" % (i + 1) if i else "")


def _ini_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def gateway_bin():
    """The gateway binary under test (env GW_BIN, or the default build), absolute."""
    b = os.environ.get("GW_BIN") or _default_bin()
    assert b and os.path.exists(b), "gateway binary not found (GW_BIN)"
    return os.path.abspath(b)


def used_keys(stub):
    """The upstream key of each request the stub received, in order (None: none)."""
    out = []
    for r in stub.requests():
        auth = [v for k, v in r["headers"] if k.lower() == "authorization"]
        out.append(auth[0].split(" ", 1)[1] if auth else None)
    return out


class Gateway:
    """The gateway (binary from env GW_BIN) with a generated config.

        with Stub() as stub, Gateway(stub, keys=("alice", "bob"), max_body="10M") as gw:
            st, h, body = request(gw.port, "GET", "/v1/videos", headers=gw.auth("alice"))

    Options (keyword): server keys %s; upstream keys %s.
    Only the keys given are written (plus listen and threads).  `extra` is
    {"section": {key: value}} merged over that (value None deletes a key; new
    sections such as "aliases" or "model X" are appended); `key_options` is
    {name: {key: value}} for the [key NAME] sections; `raw_extra` is appended
    verbatim.  The upstream key reaches the child as env GW_TEST_UPSTREAM_KEY;
    `upstream_keys` (a list) configures a pool instead, one `key =` line each, in
    order (env GW_TEST_UPSTREAM_KEY, GW_TEST_UPSTREAM_KEY_2, ...).
    """ % (", ".join(_SERVER_OPTS), ", ".join(_UPSTREAM_OPTS))

    def __init__(self, stub=None, upstream_url=None, upstream_key=None, keys=("default",),
                 extra=None, raw_extra="", key_options=None, models_unknown="reject",
                 include=True, env=None, args=(), startup_timeout=15, client_ca=None,
                 upstream_keys=None, **options):
        for k in options:
            if k not in _SERVER_OPTS and k not in _UPSTREAM_OPTS:
                raise TypeError("Gateway: unknown option %r" % k)
        self.stub = stub
        self.upstream_url = upstream_url or (stub.url if stub else None)
        self.upstream_key = upstream_key or (stub.key if stub else None)
        self.upstream_keys = list(upstream_keys) if upstream_keys else None
        if self.upstream_keys:
            self.upstream_key = self.upstream_keys[0]
        if self.upstream_url is None:
            raise TypeError("Gateway needs a stub or an upstream_url")
        if isinstance(keys, dict):     # the same keys as another gateway: {name: key}
            self.keys = dict(keys)
        else:
            self.keys = {name: "sk-vgw-" + _urlsafe(32) for name in keys}
        self.extra = dict(extra or {})
        self.raw_extra = raw_extra
        self.key_options = dict(key_options or {})
        self.models_unknown = models_unknown
        self.include = include
        self.options = options
        self.env = dict(env or {})
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.proc = None
        self.port = None
        self.dir = None
        self.bin = os.environ.get("GW_BIN") or _default_bin()
        if self.bin:    # the child runs in its temp dir: GW_BIN=build/gateway must still work
            self.bin = os.path.abspath(self.bin)
        self.tls = bool(options.get("tls_cert"))
        self.client_ca = client_ca      # CA for our own TLS requests to the gateway
        self.preexec = None             # run in the child before exec (resource limits)

    # -- config
    def sections(self):
        """The config as an ordered {section: {key: value}} ("" = top level)."""
        o = self.options
        server = {"listen": "127.0.0.1:%d" % self.port, "threads": o.get("threads", 2)}
        for k in _SERVER_OPTS:
            if k in o and k != "threads":
                server[k] = o[k]
        upstream = {"url": self.upstream_url}
        ca = o.get("ca_file")
        if ca is None and self.stub is not None and self.stub.tls:
            ca = self.stub.ca
        if ca:
            upstream["ca_file"] = ca
        upstream["key"] = "env:GW_TEST_UPSTREAM_KEY"
        if self.upstream_keys:
            upstream["key"] = [_key_env(i) for i in range(len(self.upstream_keys))]
        for k in _UPSTREAM_OPTS:
            if k in o and k != "ca_file":
                upstream[k] = o[k]
        secs = {"": {}}
        if self.include:
            secs[""]["include"] = os.path.join(SOURCE_DIR, "config", "models.conf")
        secs["server"] = server
        secs["upstream"] = upstream
        secs["models"] = {"unknown": self.models_unknown}
        for sec, kv in self.extra.items():
            d = secs.setdefault(sec, {})
            for k, v in kv.items():
                if v is None:
                    d.pop(k, None)
                else:
                    d[k] = v
        for name, plain in self.keys.items():
            d = {"sha256": hashlib.sha256(plain.encode()).hexdigest()}
            d.update(self.key_options.get(name, {}))
            secs["key %s" % name] = d
        return secs

    def config_text(self):
        out = []
        for sec, kv in self.sections().items():
            if sec:
                out.append("\n[%s]" % sec)
            for k, v in kv.items():
                for one in (v if isinstance(v, list) else [v]):   # a list: repeated key
                    out.append("%s = %s" % (k, _ini_value(one)))
        text = "\n".join(out).lstrip("\n") + "\n"
        if self.raw_extra:
            text += "\n" + self.raw_extra.rstrip("\n") + "\n"
        return text

    def write_config(self):
        """(Re)write gateway.conf from the current attributes; returns its path."""
        tmp = self.conf_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.config_text())
        os.rename(tmp, self.conf_path)
        return self.conf_path

    # -- lifecycle
    def start(self):
        if not self.bin or not os.path.exists(self.bin):
            raise RuntimeError("gateway binary not found: set GW_BIN (got %r)" % self.bin)
        self.dir = tempfile.mkdtemp(prefix="gwtest-gw-")
        self.conf_path = os.path.join(self.dir, "gateway.conf")
        self.log_path = os.path.join(self.dir, "gateway.log")
        env = dict(os.environ)
        if self.upstream_key is not None:
            env["GW_TEST_UPSTREAM_KEY"] = self.upstream_key
        for i, k in enumerate(self.upstream_keys or ()):
            env[_key_env(i)[len("env:"):]] = k
        env.update(self.env)
        for attempt in range(3):
            self.port = free_port()
            self.write_config()
            self._logf = open(self.log_path, "ab")
            self.proc = subprocess.Popen([self.bin, "-c", self.conf_path] + self.args,
                                         stdout=self._logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, cwd=self.dir,
                                         preexec_fn=self.preexec)
            try:
                wait_for(self._healthy, self.startup_timeout, 0.02, "gateway /healthz")
                return self
            except _Died:
                log = self.log()
                if "in use" in log.lower() and attempt < 2:
                    self._logf.close()
                    continue
                raise RuntimeError("gateway exited with %s during startup; log:\n%s\nconfig:\n%s"
                                   % (self.proc.returncode, log[-4000:], self.config_text()))
            except AssertionError:
                self.stop()
                raise RuntimeError("gateway not healthy after %ss; log:\n%s"
                                   % (self.startup_timeout, self.log()[-4000:]))
        raise RuntimeError("unreachable")

    def _healthy(self):
        if self.proc.poll() is not None:
            raise _Died()
        try:
            st, _, _ = request(self.port, "GET", "/healthz", timeout=2, tls=self.tls,
                               ca=self.client_ca)
            return st == 200
        except (OSError, http.client.HTTPException):
            return False

    def stop(self, timeout=20):
        """SIGTERM, wait, return the exit code (SIGKILL and raise if it hangs)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("gateway did not exit within %ss of SIGTERM" % timeout)
        if getattr(self, "_logf", None):
            self._logf.close()
            self._logf = None
        return self.proc.returncode

    def hup(self):
        """SIGHUP: reload the config (call write_config() first to change it)."""
        self.proc.send_signal(signal.SIGHUP)

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        try:
            self.stop()
        except AssertionError:
            if et is None:
                raise
        if et is not None and not issubclass(et, Skip):
            sys.stderr.write("---- gateway log (tail) ----\n%s\n" % self.log()[-6000:])
        if self.dir and not os.environ.get("GW_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        return False

    # -- observation
    @property
    def pid(self):
        return self.proc.pid

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, AttributeError):
            return ""

    def log_json(self):
        """The log lines that parse as JSON objects (the access log)."""
        out = []
        for line in self.log().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def wait_log(self, pred, n=1, timeout=10.0):
        """The access-log lines matching pred once there are at least n: a line
        is written when the request finishes, which may be just after the client
        read its answer (an upload refused early finishes when its body ends)."""
        def enough():
            got = [line for line in self.log_json() if pred(line)]
            return got if len(got) >= n else None
        return wait_for(enough, timeout=timeout, what="%d access-log line(s)" % n)

    def vmhwm_kib(self):
        return proc_status_kib(self.proc.pid, "VmHWM")

    def vmrss_kib(self):
        return proc_status_kib(self.proc.pid, "VmRSS")

    def auth(self, name="default"):
        """{"Authorization": "Bearer <the key named name>"}"""
        return {"Authorization": "Bearer " + self.keys[name]}

    def request(self, method, path, key="default", headers=None, body=b"", **kw):
        """request() to this gateway with team key `key` (None: no Authorization)."""
        h = dict(self.auth(key)) if key else {}
        h.update(headers or {})
        kw.setdefault("tls", self.tls)
        kw.setdefault("ca", self.client_ca)
        return request(self.port, method, path, headers=h, body=body, **kw)

    def download(self, path, key="default", headers=None, **kw):
        """download() from this gateway -> (status, headers, size, sha256 hex)."""
        h = dict(self.auth(key)) if key else {}
        h.update(headers or {})
        kw.setdefault("tls", self.tls)
        kw.setdefault("ca", self.client_ca)
        return download(self.port, path, headers=h, **kw)


class _Died(Exception):
    pass


def _urlsafe(n):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _default_bin():
    for d in (os.environ.get("GW_BUILD_DIR"), os.path.join(ROOT, "build")):
        if d and os.path.exists(os.path.join(d, "gateway")):
            return os.path.join(d, "gateway")
    return None


# ----------------------------------------------------------------------------
# HTTP clients

def _connection(port, tls, ca, timeout, host):
    if tls:
        return http.client.HTTPSConnection(host or "localhost", port, timeout=timeout,
                                           context=_tls_context(ca))
    return http.client.HTTPConnection(host or "127.0.0.1", port, timeout=timeout)


def _headers_dict(msg):
    d = {}
    for k, v in msg.items():
        k = k.lower()
        d[k] = d[k] + ", " + v if k in d else v
    return d


def open_request(port, method, path, headers=None, body=b"", tls=False, ca=None,
                 timeout=30, host=None):
    """Send a request; return (connection, response) unread, for streaming reads.
    body: bytes, str or an iterable of bytes (sent chunked unless headers give
    Content-Length)."""
    conn = _connection(port, tls, ca, timeout, host)
    if isinstance(body, str):
        body = body.encode()
    hdrs = dict(headers or {})
    conn.request(method, path, body=body if body != b"" else None, headers=hdrs)
    return conn, conn.getresponse()


def request(port, method, path, headers=None, body=b"", tls=False, ca=None, timeout=30,
            host=None):
    """One request -> (status, {lower-case header: value}, body bytes).
    tls: connect to `host` (default "localhost") and verify against `ca`."""
    conn, resp = open_request(port, method, path, headers, body, tls, ca, timeout, host)
    try:
        data = resp.read()
        return resp.status, _headers_dict(resp.msg), data
    finally:
        conn.close()


def download(port, path, headers=None, tls=False, ca=None, timeout=60, host=None,
             read_size=STREAM_CHUNK, method="GET"):
    """Stream a response body -> (status, headers, size, sha256 hex); flat memory."""
    conn, resp = open_request(port, method, path, headers, b"", tls, ca, timeout, host)
    try:
        h = hashlib.sha256()
        n = 0
        while True:
            data = resp.read(read_size)
            if not data:
                break
            n += len(data)
            h.update(data)
        return resp.status, _headers_dict(resp.msg), n, h.hexdigest()
    finally:
        conn.close()


def _response_end(buf, start=0, head_request=False):
    """Index just past the first complete final response in buf[start:], or None.
    Skips 1xx interim responses.  Raises ValueError on garbage."""
    pos = start
    while True:
        he = buf.find(b"\r\n\r\n", pos)
        if he < 0:
            return None
        head = buf[pos:he].decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError("not an HTTP response: %r" % lines[0][:100])
        status = int(parts[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        body_start = he + 4
        if 100 <= status < 200 and status != 101:
            pos = body_start
            continue
        if head_request or status in (204, 304):
            return body_start
        if "chunked" in hdrs.get("transfer-encoding", "").lower():
            p = body_start
            while True:
                le = buf.find(b"\r\n", p)
                if le < 0:
                    return None
                size = int(buf[p:le].split(b";")[0].strip(), 16)
                if size == 0:
                    # trailers until an empty line
                    q = le + 2
                    while True:
                        te = buf.find(b"\r\n", q)
                        if te < 0:
                            return None
                        if te == q:
                            return te + 2
                        q = te + 2
                p = le + 2 + size + 2
                if p > len(buf):
                    return None
        if "content-length" in hdrs:
            end = body_start + int(hdrs["content-length"])
            return end if len(buf) >= end else None
        return None   # delimited by close


def split_responses(data, head_first=False):
    """Cut raw bytes read from one connection into complete responses ->
    ([response bytes, ...], leftover bytes).  1xx interim responses stay with
    the final response they precede; head_first: the first response answers a
    HEAD request (no body).  Leftover bytes that are not an HTTP response at all
    are returned as they are."""
    out, pos = [], 0
    while pos < len(data):
        try:
            end = _response_end(data, pos, head_first and not out)
        except ValueError:
            end = None
        if end is None:
            break
        out.append(data[pos:end])
        pos = end
    return out, data[pos:]


def parse_response(data, head_request=False):
    """Parse the final response in raw bytes (as from raw()) ->
    (status, {lower header: value}, body bytes, [interim statuses]).  A chunked body
    is decoded; a body without framing runs to the end of data."""
    interim = []
    pos = 0
    while True:
        he = data.find(b"\r\n\r\n", pos)
        if he < 0:
            raise ValueError("incomplete response head: %r" % data[pos:pos + 200])
        lines = data[pos:he].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            hdrs[k] = hdrs[k] + ", " + v.strip() if k in hdrs else v.strip()
        pos = he + 4
        if 100 <= status < 200 and status != 101:
            interim.append(status)
            continue
        break
    if head_request or status in (204, 304):
        return status, hdrs, b"", interim
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        out = bytearray()
        p = pos
        while True:
            le = data.find(b"\r\n", p)
            if le < 0:
                raise ValueError("truncated chunked body")
            size = int(data[p:le].split(b";")[0].strip(), 16)
            if size == 0:
                break
            out += data[le + 2:le + 2 + size]
            if len(data) < le + 2 + size + 2:
                raise ValueError("truncated chunked body")
            p = le + 2 + size + 2
        return status, hdrs, bytes(out), interim
    if "content-length" in hdrs:
        return status, hdrs, data[pos:pos + int(hdrs["content-length"])], interim
    return status, hdrs, data[pos:], interim


class RawConn:
    """A plain (or TLS) socket for hand-written HTTP.

        c = RawConn(gw.port)
        c.send(b"POST /v1/videos HTTP/1.1\\r\\n...")
        raw = c.read_response()        # bytes of one complete response (b"" at EOF)
        c.at_eof()                     # the peer has closed
    """

    def __init__(self, port, tls=False, ca=None, host="127.0.0.1", timeout=10):
        s = socket.create_connection((host, port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            s = _tls_context(ca).wrap_socket(s, server_hostname="localhost")
        self.sock = s
        self.buf = b""
        self.eof = False
        self.reset = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _recv(self, timeout):
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(STREAM_CHUNK)
        except socket.timeout:
            return None
        except ConnectionResetError:
            d = b""
            self.reset = True
        if not d:
            self.eof = True
        return d

    def read_response(self, timeout=5, head_request=False):
        """Bytes of the next complete response (including any 1xx before it);
        whatever arrived if the peer closed or `timeout` passed without data."""
        deadline = time.monotonic() + timeout
        while True:
            end = _response_end(self.buf, 0, head_request) if self.buf else None
            if end is not None:
                out, self.buf = self.buf[:end], self.buf[end:]
                return out
            left = deadline - time.monotonic()
            if self.eof or left <= 0:
                out, self.buf = self.buf, b""
                return out
            d = self._recv(left)
            if d:
                self.buf += d

    def read_head(self, timeout=5):
        """Bytes of the next response head (any status, 1xx included), or b""."""
        deadline = time.monotonic() + timeout
        while True:
            he = self.buf.find(b"\r\n\r\n")
            if he >= 0:
                out, self.buf = self.buf[:he + 4], self.buf[he + 4:]
                return out
            left = deadline - time.monotonic()
            if self.eof or left <= 0:
                return b""
            d = self._recv(left)
            if d:
                self.buf += d

    def _read_to_eof(self, timeout):
        """Buffer what arrives until the peer closes or timeout passes."""
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            d = self._recv(deadline - time.monotonic())
            if d:
                self.buf += d

    def read_until_close(self, timeout=5):
        self._read_to_eof(timeout)
        out, self.buf = self.buf, b""
        return out

    def at_eof(self, timeout=2):
        """True once the peer has closed (waits up to timeout; data read is kept)."""
        self._read_to_eof(timeout)
        return self.eof

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
        return False


def raw(port, data, read_timeout=5, tls=False, ca=None, head_request=False):
    """Send data (bytes, or a list whose items are bytes sent one send() each, or
    callables called in between - e.g. lambda: stub.wait_bytes(n)) on a fresh
    connection; return everything read until the peer closed or one complete
    final response arrived (or read_timeout passed without completing)."""
    with RawConn(port, tls=tls, ca=ca) as c:
        items = [data] if isinstance(data, (bytes, bytearray, str)) else data
        try:
            for item in items:
                if callable(item):
                    item()
                else:
                    c.send(item)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return c.read_response(read_timeout, head_request)


# ----------------------------------------------------------------------------
# bodies

JSON_HEADERS = {"Content-Type": "application/json"}


def create_body(seconds="8", model="veo3.1"):
    """A small JSON create (the shape most tests send)."""
    return json.dumps({"model": model, "prompt": "p", "seconds": seconds,
                       "size": "16x9"}).encode()


def create_job(gw, key, seconds="8", model="veo3.1"):
    """A JSON create through gw with team key `key` that must succeed: its job object."""
    st, _, b = gw.request("POST", "/v1/videos", key=key, headers=JSON_HEADERS,
                          body=create_body(seconds, model))
    assert st == 200, (st, b)
    return json.loads(b)


def pattern_block(seed):
    """The 64 KiB block a generated file part repeats (seed: str or bytes)."""
    if isinstance(seed, str):
        seed = seed.encode()
    return hashlib.shake_256(b"gwtest-pattern:" + seed).digest(PATTERN_BLOCK)


def pattern_chunks(size, seed, chunk_size=STREAM_CHUNK):
    """Yield `size` bytes of the deterministic pattern for `seed`, chunk_size at a time."""
    block = pattern_block(seed)
    step = max(1, int(chunk_size))
    big = memoryview(block * (step // PATTERN_BLOCK + 2))
    pos, left = 0, size
    while left > 0:
        n = min(left, step)
        off = pos % PATTERN_BLOCK
        yield big[off:off + n]
        pos += n
        left -= n


_pattern_sha = {}


def pattern_sha256(size, seed):
    """sha256 hex of pattern_chunks(size, seed) (cached)."""
    k = (size, seed)
    if k not in _pattern_sha:
        h = hashlib.sha256()
        for c in pattern_chunks(size, seed, 1024 * 1024):
            h.update(c)
        _pattern_sha[k] = h.hexdigest()
    return _pattern_sha[k]


def file_sha256(filename, size):
    """sha256 of a generated file part (name, filename, size, content_type) of multipart_stream."""
    return pattern_sha256(size, filename)


def _boundary():
    return "gwtest-" + secrets.token_hex(12)


def _disposition(name, filename=None):
    def q(s):
        return s.replace("\\", "\\\\").replace('"', '\\"')
    d = 'Content-Disposition: form-data; name="%s"' % q(name)
    if filename is not None:
        d += '; filename="%s"' % q(filename)
    return d


def _part_head(boundary, field, first):
    lead = b"" if first else b"\r\n"
    if len(field) == 2:
        return lead + ("--%s\r\n%s\r\n\r\n" % (boundary, _disposition(field[0]))).encode()
    name, filename, _, ctype = field
    h = "--%s\r\n%s\r\n" % (boundary, _disposition(name, filename))
    if ctype:
        h += "Content-Type: %s\r\n" % ctype
    return lead + (h + "\r\n").encode()


def _as_bytes(v):
    return v.encode() if isinstance(v, str) else bytes(v)


def multipart(fields, boundary=None):
    """fields: [(name, value) | (name, filename, data bytes, content_type)] ->
    (body bytes, content-type header value)."""
    boundary = boundary or _boundary()
    out = []
    for i, f in enumerate(fields):
        out.append(_part_head(boundary, f, i == 0))
        out.append(_as_bytes(f[1] if len(f) == 2 else f[2]))
    out.append(("%s--%s--\r\n" % ("\r\n" if fields else "", boundary)).encode())
    return b"".join(out), "multipart/form-data; boundary=" + boundary


class MultipartStream:
    """A multipart body produced in chunks (never whole in memory).

    fields: (name, value) | (name, filename, data bytes, content_type) |
    (name, filename, size int, content_type) - the last is generated from the
    pattern seeded by filename (see file_sha256).  Attributes: content_type,
    length (exact total bytes), part_sha256 (one per field, in order, for
    comparing with the stub's record parts[i]["sha256"]), sha256 (whole body,
    computed lazily).  Iterating yields the body again each time."""

    def __init__(self, fields, boundary=None, chunk_size=STREAM_CHUNK):
        self.fields = list(fields)
        self.boundary = boundary or _boundary()
        self.content_type = "multipart/form-data; boundary=" + self.boundary
        self.chunk_size = chunk_size
        self.length = 0
        self.part_sha256 = []
        for i, f in enumerate(self.fields):
            self.length += len(_part_head(self.boundary, f, i == 0))
            if len(f) == 4 and isinstance(f[2], int):
                self.length += f[2]
                self.part_sha256.append(pattern_sha256(f[2], f[1]))
            else:
                data = _as_bytes(f[1] if len(f) == 2 else f[2])
                self.length += len(data)
                self.part_sha256.append(hashlib.sha256(data).hexdigest())
        self.length += len(self._tail())
        self._sha = None

    def _tail(self):
        return ("%s--%s--\r\n" % ("\r\n" if self.fields else "", self.boundary)).encode()

    def __iter__(self):
        for i, f in enumerate(self.fields):
            yield _part_head(self.boundary, f, i == 0)
            if len(f) == 4 and isinstance(f[2], int):
                yield from pattern_chunks(f[2], f[1], self.chunk_size)
            else:
                yield _as_bytes(f[1] if len(f) == 2 else f[2])
        yield self._tail()

    def headers(self, chunked=False):
        """Content-Type plus Content-Length; chunked=True leaves the length out,
        so request()/http.client sends the iterable with chunked encoding."""
        h = {"Content-Type": self.content_type}
        if not chunked:
            h["Content-Length"] = str(self.length)
        return h

    @property
    def sha256(self):
        if self._sha is None:
            h = hashlib.sha256()
            for c in self:
                h.update(c)
            self._sha = h.hexdigest()
        return self._sha


def multipart_stream(fields, boundary=None, chunk_size=STREAM_CHUNK):
    """A MultipartStream: iterable of body chunks with .content_type, .length,
    .part_sha256, .headers()."""
    return MultipartStream(fields, boundary, chunk_size)


def chunked(iterable, ext=None):
    """Encode an iterable of bytes as an HTTP/1.1 chunked body (generator).
    ext: a chunk extension such as ";name=value" added to every size line."""
    e = (ext or "").encode()
    for data in iterable:
        if len(data) == 0:
            continue
        yield b"%x%s\r\n" % (len(data), e)
        yield bytes(data)
        yield b"\r\n"
    yield b"0\r\n\r\n"


def error_body(body):
    """Parse an OpenAI error body, asserting its shape; return the inner
    {"message", "type", "param", "code"} dict."""
    try:
        obj = json.loads(body)
    except ValueError:
        raise AssertionError("error body is not JSON: %r" % body[:300])
    assert isinstance(obj, dict) and set(obj) == {"error"}, \
        "error body must be {\"error\": {...}}: %r" % body[:300]
    e = obj["error"]
    assert isinstance(e, dict), "error must be an object: %r" % body[:300]
    missing = {"message", "type", "param", "code"} - set(e)
    assert not missing, "error object lacks %s: %r" % (sorted(missing), body[:300])
    assert isinstance(e["message"], str) and e["message"], "error.message: %r" % e
    assert isinstance(e["type"], str) and e["type"], "error.type: %r" % e
    assert e["param"] is None or isinstance(e["param"], str), "error.param: %r" % e
    assert e["code"] is None or isinstance(e["code"], str), "error.code: %r" % e
    return e


# ----------------------------------------------------------------------------
# runner

# ---------------------------------------------------------------- clean-run checks

# Substrings that only appear in a sanitizer report (ASan, LSan, UBSan, TSan).
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                     "runtime error:", "ThreadSanitizer")



def slow_download(gw, stub, vid, size):
    """Download a video's content as a reader that takes only a little at a time: the
    stub must stop writing long before the whole body (the gateway stops reading it,
    at most 40 MiB ahead), the gateway's peak memory stays under 64 MiB, and then the
    rest, read fast, arrives whole and in order."""
    mib = 1024 * 1024
    h = hashlib.sha256()
    got = 0
    with RawConn(gw.port, timeout=30) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.send("GET /v1/videos/%s/content HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s"
               "\r\n\r\n" % (vid, gw.keys["default"]))
        head = c.read_head(10)
        assert head.startswith(b"HTTP/1.1 200 ") and \
            b"\r\ncontent-length: %d\r\n" % size in head.lower(), head
        h.update(c.buf)
        got += len(c.buf)
        c.buf = b""
        for _ in range(3):
            left = 256 * 1024
            while left > 0:
                d = c.sock.recv(min(left, 4096))
                assert d, "connection closed after %d bytes" % got
                h.update(d)
                got += len(d)
                left -= len(d)
            samples = []

            def stalled():
                samples.append(stub.last()["sent"])
                return len(samples) >= 4 and samples[-1] == samples[-4]
            wait_for(stalled, 15, 0.05, "the stub to stop writing")
            ahead = samples[-1] - got
            assert ahead < 40 * mib, "upstream %d bytes ahead of a slow client" % ahead
        assert gw.vmhwm_kib() < 64 * 1024, gw.vmhwm_kib()
        c.sock.settimeout(30)
        while got < size:
            d = c.sock.recv(mib)
            assert d, "connection closed after %d of %d bytes" % (got, size)
            h.update(d)
            got += len(d)
    assert got == size and h.hexdigest() == content_sha256(vid, size)
    hwm = gw.vmhwm_kib()
    assert hwm < 64 * 1024, "gateway VmHWM %d KiB after a slow %d MiB download" % (hwm,
                                                                                 size // mib)

def assert_no_sanitizer_report(text, what="the gateway log"):
    """Fail (showing the tail of `text`) if `text` holds any SANITIZER_MARKERS."""
    for m in SANITIZER_MARKERS:
        assert m not in text, "sanitizer report in %s:\n%s" % (what, text[-6000:])


def assert_clean(gw, secrets=(), alive=False):
    """The log of Gateway gw holds no sanitizer report and none of `secrets` (team
    or upstream keys); with alive=True the gateway process must also still run."""
    log = gw.log()
    assert_no_sanitizer_report(log)
    for s in secrets:
        assert s not in log, "a secret appears in the gateway's output"
    if alive:
        assert gw.proc.poll() is None, "the gateway exited (%s):\n%s" % (gw.proc.returncode,
                                                                        log[-4000:])


def stop_clean(gw, secrets=()):
    """Stop Gateway gw (SIGTERM) and check it exited cleanly: no sanitizer report in
    its log (leaks are only reported at exit), none of `secrets` in it, exit code 0.
    Returns the log."""
    code = gw.stop()
    assert_clean(gw, secrets)
    log = gw.log()
    assert code == 0, "gateway exit code %s; log:\n%s" % (code, log[-3000:])
    return log


@contextlib.contextmanager
def checked_gateway(stub, **kw):
    """`with checked_gateway(stub, **kw) as (stub, gw):` a fresh Gateway(stub, **kw)
    for one test; when the block ends without an exception the gateway is stopped
    and must pass stop_clean() (no sanitizer report, exit code 0)."""
    with Gateway(stub, **kw) as gw:
        yield stub, gw
        stop_clean(gw)


# ---------------------------------------------------------------- shared objects

_AT_EXIT = []       # callables main() runs after the tests, last registered first
_SHARED = {}        # name -> object handed out by shared_stub() / shared_gateway()


def at_exit(fn):
    """Have main() call fn() once the tests have run (even if they failed); the
    callables run last-registered first.  Returns fn."""
    _AT_EXIT.append(fn)
    return fn


def _run_at_exit():
    while _AT_EXIT:
        fn = _AT_EXIT.pop()
        try:
            fn()
        except Exception:
            traceback.print_exc(file=sys.stdout)


def _close(obj):
    return lambda: obj.__exit__(None, None, None)


def shared_stub(**kw):
    """The Stub(**kw) shared by the tests of one file: started on the first call,
    reset (records, jobs, faults and config) on every call; main() stops it after
    the tests.  Every call of a file must pass the same kw."""
    stub = _SHARED.get("stub")
    if stub is None:
        stub = _SHARED["stub"] = Stub(**kw).start()
        at_exit(_close(stub))
    stub.reset(config=True)
    return stub


def shared_gateway(stub, **kw):
    """The Gateway(stub, **kw) shared by the tests of one file, started on the first
    call (later calls return it as is); main() stops it after the tests.  A test
    that stops it for good calls forget_shared_gateway() first."""
    gw = _SHARED.get("gateway")
    if gw is None:
        gw = _SHARED["gateway"] = Gateway(stub, **kw).start()
        at_exit(_close(gw))
    return gw


def forget_shared_gateway():
    """Drop the shared gateway (the caller stops it): a later shared_gateway()
    starts a new one.  main() still cleans the old one's temp dir up."""
    _SHARED.pop("gateway", None)


def shared_tmpdir(prefix="gwtest-"):
    """A temp dir made on the first call for this prefix and removed by main()
    after the tests (kept if GW_KEEP_TMP is set)."""
    key = "tmpdir:" + prefix
    d = _SHARED.get(key)
    if d is None:
        d = _SHARED[key] = tempfile.mkdtemp(prefix=prefix)
        if not os.environ.get("GW_KEEP_TMP"):
            at_exit(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def main(g, cleanup=None):
    """Run the test_* functions of module globals g, in definition order (or
    those named on the command line); print ok/FAIL/skip lines and a summary;
    exit 1 if any failed.  Afterwards (whatever happened) the shared objects are
    closed: the callables given to at_exit(), the shared stub, gateway and temp
    dirs, and `cleanup` (a callable or a list of them) if given."""
    if cleanup is not None:
        for fn in (cleanup if isinstance(cleanup, (list, tuple)) else [cleanup]):
            at_exit(fn)
    try:
        _main(g)
    finally:
        _run_at_exit()


def _main(g):
    tests = [(n, f) for n, f in g.items() if n.startswith("test_") and callable(f)]
    wanted = sys.argv[1:]
    if wanted:
        names = {n for n, _ in tests}
        unknown = [w for w in wanted if w not in names]
        if unknown:
            print("unknown test(s): %s" % ", ".join(unknown))
            print("available: %s" % ", ".join(n for n, _ in tests))
            sys.exit(2)
        tests = [(n, f) for n, f in tests if n in wanted]
    passed = failed = skipped = 0
    t_all = time.monotonic()
    for name, fn in tests:
        t0 = time.monotonic()
        try:
            fn()
        except Skip as e:
            skipped += 1
            print("skip %s: %s" % (name, e), flush=True)
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            failed += 1
            print("FAIL %s (%.2fs)" % (name, time.monotonic() - t0), flush=True)
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
        else:
            passed += 1
            print("ok %s (%.2fs)" % (name, time.monotonic() - t0), flush=True)
    print("(%.1fs%s)" % (time.monotonic() - t_all,
                         ", %d skipped" % skipped if skipped else ""))
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)
