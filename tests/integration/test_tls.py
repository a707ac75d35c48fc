"""TLS on both sides: an HTTPS upstream verified against a CA (SNI, host name,
wrong CA, wrong name), and the gateway's own HTTPS listener (libevhtp trap 8:
a certificate that fails to load must stop the gateway, not be ignored)."""

import hashlib
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}
CERTS = None


def certs(name="localhost"):
    """Certificates shared by the file: CERTS["localhost"] is for localhost and
    127.0.0.1, CERTS["elsewhere"] for another host name only (same CA)."""
    global CERTS
    if CERTS is None:
        d = gwtest.shared_tmpdir(prefix="gwtest-tls-")  # removed after the tests
        CERTS = {"dir": d, "localhost": gwtest.make_certs(os.path.join(d, "a"))}
        other = gwtest.make_certs(os.path.join(d, "b"), names=("elsewhere.example",), ips=())
        CERTS["elsewhere"] = other
    return CERTS[name]


def secrets_of(gw, extra_secrets=()):
    return list(gw.keys.values()) + [gw.upstream_key] + list(extra_secrets)


def assert_clean(gw, extra_secrets=()):
    """No sanitizer report and no key (gw's own or extra_secrets) in gw's log."""
    gwtest.assert_clean(gw, secrets=secrets_of(gw, extra_secrets))


def stopped_clean(gw):
    """Stop gw: exit code 0, no sanitizer report, no key in its log."""
    gwtest.stop_clean(gw, secrets=secrets_of(gw))


def create(gw, **kw):
    body = json.dumps({"model": "veo3.1", "prompt": "p", "seconds": "8", "size": "16x9"})
    return gw.request("POST", "/v1/videos", headers=JSON, body=body.encode(), **kw)


# ---------------------------------------------------------------- upstream side

def test_https_upstream_right_ca():
    c = certs()
    with gwtest.Stub(tls=True, certs=c) as stub:
        gw = gwtest.Gateway(stub, threads=1)    # ca_file = the stub's CA; one pool
        with gw:
            assert stub.url.startswith("https://localhost:")
            st, _, b = create(gw)
            assert st == 200, b
            job = json.loads(b)
            assert job["model"] == "veo_3_1"
            st, _, b = gw.request("GET", "/v1/videos/" + job["id"])
            assert st == 200 and json.loads(b)["id"] == job["id"]
            st, h, n, sha = gw.download("/v1/videos/%s/content" % job["id"])
            assert st == 200 and sha == gwtest.content_sha256(job["id"], n) and n == 1 << 20
            recs = stub.requests()
            assert len(recs) == 3 and all(r["tls"] and r["sni"] == "localhost" for r in recs), \
                [(r["tls"], r["sni"]) for r in recs]
            # one TLS connection carried all three (keep-alive over TLS)
            assert len({r["conn"] for r in recs}) == 1, [r["conn"] for r in recs]
            assert_clean(gw)
        assert gw.proc.returncode == 0
        assert_clean(gw)


def test_https_upstream_wrong_ca_502():
    c = certs()
    with gwtest.Stub(tls=True, certs=c) as stub:
        with gwtest.Gateway(stub, ca_file=c["other_ca"]) as gw:
            for method, path, body in (("GET", "/v1/videos/video_1", b""),
                                       ("POST", "/v1/videos", None)):
                if body is None:
                    st, _, b = create(gw)
                else:
                    st, _, b = gw.request(method, path)
                assert st == 502, (method, path, st, b)
                e = gwtest.error_body(b)
                assert (e["code"], e["type"]) == ("bad_gateway", "upstream_error"), e
                msg = e["message"].lower()
                assert "certificate" in msg and "verif" in msg, e["message"]
                assert stub.key not in b.decode()
            assert stub.requests() == [], "a request went over an unverified connection"
            st, _, _ = gw.request("GET", "/healthz", key=None)
            assert st == 200
        assert gw.proc.returncode == 0
        assert_clean(gw)


def test_https_upstream_wrong_host_name_502():
    c = certs("elsewhere")             # signed by its own CA, for elsewhere.example
    with gwtest.Stub(tls=True, certs=c) as stub:
        with gwtest.Gateway(stub) as gw:         # trusts that CA; asks for localhost
            st, _, b = gw.request("GET", "/v1/videos?limit=1")
            assert st == 502, (st, b)
            e = gwtest.error_body(b)
            assert e["code"] == "bad_gateway", e
            assert "certificate" in e["message"].lower(), e["message"]
            # (the stub's own control API is unreachable too: its certificate
            # is not for localhost; its log lists the requests it answered)
            assert "/v1/videos" not in stub.log(), stub.log()[-2000:]
        assert gw.proc.returncode == 0
        assert_clean(gw)


def test_https_upstream_verify_off_is_explicit():
    """tls_verify = off is the only way to accept an unverified upstream."""
    c = certs()
    with gwtest.Stub(tls=True, certs=c) as stub:
        with gwtest.Gateway(stub, ca_file=c["other_ca"], tls_verify="off") as gw:
            st, _, b = gw.request("GET", "/v1/videos?limit=1")
            assert st == 200, (st, b)
            assert stub.last()["tls"]
        assert_clean(gw)


# ------------------------------------------- the upstream's TLS data path (issue 11)
# uptls_io.c reads many records per pass straight into the response body and
# writes many per writev: whole bodies must come through byte for byte both
# ways, a cut by the TLS upstream must still be told from a complete answer,
# a slow client must still stop the reading, and pooled connections (and
# sessions) must still be reused.

MiB = 1024 * 1024
# Under AddressSanitizer freed memory waits in a quarantine that would count in
# VmHWM; a small one keeps the memory bound meaningful.
SMALL_QUARANTINE = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") +
                    ":quarantine_size_mb=16"}


def tls_gateway(stub, **kw):
    """One event loop: one pool, so that reuse is observable."""
    return gwtest.checked_gateway(stub, threads=1, env=SMALL_QUARANTINE, **kw)


def test_https_large_upload_and_download_intact():
    size_up, size_down = 24 * MiB + 12345, 40 * MiB + 777
    with gwtest.Stub(tls=True, certs=certs(), content_size=size_down) as stub:
        with tls_gateway(stub) as (_, gw):
            fields = [("model", "veo3.1"), ("prompt", "p"), ("seconds", "8"), ("size", "16x9"),
                      ("input_reference", "big.png", size_up, "image/png")]
            ms = gwtest.multipart_stream(fields)
            st, _, b = gw.request("POST", "/v1/videos", body=ms,
                                  headers={"Content-Type": ms.content_type,
                                           "Content-Length": str(ms.length)})
            assert st == 200, b
            vid = json.loads(b)["id"]
            r = stub.last()
            # every byte of the file arrived, in order (model rewritten: +1 byte)
            assert r["complete"] and r["body_size"] == ms.length + 1, r["body_size"]
            assert r["parts"][4]["size"] == size_up, r["parts"][4]["size"]
            assert r["parts"][4]["sha256"] == ms.part_sha256[4]
            st, h, n, sha = gw.download("/v1/videos/%s/content" % vid, read_size=MiB)
            assert (st, n) == (200, size_down) and h["content-length"] == str(size_down)
            assert sha == gwtest.content_sha256(vid, size_down)
            assert stub.last()["sent"] == size_down
            assert_clean(gw)


def test_https_pooled_connection_and_session_reused():
    with gwtest.Stub(tls=True, certs=certs(), content_size=3 * MiB + 5) as stub:
        with tls_gateway(stub) as (_, gw):
            vid = json.loads(create(gw)[2])["id"]
            for _ in range(3):    # a body of many records, then a small answer
                st, _, n, sha = gw.download("/v1/videos/%s/content" % vid)
                assert st == 200 and sha == gwtest.content_sha256(vid, n), st
                st, _, b = gw.request("GET", "/v1/videos/" + vid)
                assert st == 200, b
            recs = stub.requests()
            assert len(recs) == 7 and all(r["tls"] for r in recs)
            # one connection carried all seven: the session tickets TLS 1.3
            # sends after the handshake did not make it look closed
            assert len({r["conn"] for r in recs}) == 1, [r["conn"] for r in recs]
            assert recs[0]["tls_resumed"] is False
            # the server closes it while idle: the pool notices, the next
            # request connects afresh and resumes the session
            assert gwtest.wait_for(lambda: stub.close_idle() or None, 5, what="an idle conn")
            st, _, b = gw.request("GET", "/v1/videos/" + vid)
            assert st == 200, b
            last = stub.last()
            assert last["conn"] != recs[0]["conn"] and last["tls_resumed"] is True, last
            assert_clean(gw)


def test_https_upstream_cut_mid_body():
    size = 4 * MiB
    with gwtest.Stub(tls=True, certs=certs(), content_size=size) as stub:
        with tls_gateway(stub) as (_, gw):
            vid = json.loads(create(gw)[2])["id"]
            # a streamed body cut after 300,000 bytes: announced in full,
            # delivered short, the client connection closed
            stub.fault("close_after_headers", path_prefix="/v1/videos/%s/content" % vid,
                       body_bytes=300000)
            with gwtest.RawConn(gw.port) as c:
                c.send("GET /v1/videos/%s/content HTTP/1.1\r\nHost: gw\r\n"
                       "Authorization: Bearer %s\r\n\r\n" % (vid, gw.keys["default"]))
                data = c.read_until_close(15)
                assert c.eof, "the client connection stayed open after the upstream cut"
            hd, _, body = data.partition(b"\r\n\r\n")
            assert hd.startswith(b"HTTP/1.1 200 "), data[:300]
            assert b"content-length: %d\r\n" % size in hd.lower() + b"\r\n", hd
            assert 0 < len(body) < size, len(body)
            assert stub.last()["sent"] == 300000
            # a small body (answered whole) cut short: 502 with the reason
            stub.config(content_size=50000)
            stub.fault("close_after_headers", path_prefix="/v1/videos/%s/content" % vid,
                       body_bytes=1000)
            st, _, b = gw.request("GET", "/v1/videos/%s/content" % vid)
            assert st == 502, (st, b[:200])
            assert "closed" in gwtest.error_body(b)["message"], b
            # and the next request is served (a fresh connection)
            st, _, n, sha = gw.download("/v1/videos/%s/content" % vid)
            assert st == 200 and n == 50000 and sha == gwtest.content_sha256(vid, n)
            assert_clean(gw)


def test_https_slow_client_backpressure():
    size = 96 * MiB
    with gwtest.Stub(tls=True, certs=certs(), content_size=size) as stub:
        with tls_gateway(stub) as (_, gw):
            vid = json.loads(create(gw)[2])["id"]
            gwtest.slow_download(gw, stub, vid, size)
            assert_clean(gw)


class _TlsOrigin:
    """A bare TLS origin for the framings the stub does not send: the first
    request on any connection gets a chunked body (chunks of 1 byte to 70 KB,
    so records and chunks never line up), the second a close-delimited body
    ended by a close without close_notify. Records the connection of each."""

    def __init__(self, cert, key, chunked, closing):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.bodies = (chunked, closing)
        self.seen = []      # (connection number, request number on it)
        self.errors = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        nconn = 0
        while True:
            try:
                raw, _ = self.lsock.accept()
            except OSError:
                return
            nconn += 1
            try:
                self.handle(self.ctx.wrap_socket(raw, server_side=True), nconn)
            except (OSError, ssl.SSLError) as e:
                self.errors.append(repr(e))

    def handle(self, conn, n):
        buf = b""
        for i in range(2):
            while b"\r\n\r\n" not in buf:
                d = conn.recv(65536)
                if not d:
                    conn.close()
                    return
                buf += d
            buf = buf.split(b"\r\n\r\n", 1)[1]
            self.seen.append((n, i + 1))
            if i == 0:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                rnd, body, out = random.Random(7), self.bodies[0], []
                off = 0
                while off < len(body):
                    k = min(rnd.randint(1, 70000), len(body) - off)
                    out.append(b"%x\r\n%s\r\n" % (k, body[off:off + k]))
                    off += k
                    if len(out) >= 32:
                        conn.sendall(b"".join(out))
                        out = []
                conn.sendall(b"".join(out) + b"0\r\n\r\n")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n"
                             b"Connection: close\r\n\r\n" + self.bodies[1])
                conn.close()    # no close_notify: a dirty shutdown ends the body
                return

    def close(self):
        self.lsock.close()


def test_https_chunked_and_close_delimited_bodies():
    c = certs()
    chunked = hashlib.shake_256(b"chunked").digest(6 * MiB + 333)
    closing = hashlib.shake_256(b"closing").digest(5 * MiB + 17)
    origin = _TlsOrigin(c["cert"], c["key"], chunked, closing)
    try:
        with gwtest.checked_gateway(None, upstream_url="https://127.0.0.1:%d" % origin.port,
                                    upstream_key="sk-upstream-origin", ca_file=c["ca"],
                                    threads=1) as (_, gw):
            for body in (chunked, closing):
                st, _, n, sha = gw.download("/v1/videos/video_abc/content", read_size=MiB)
                assert st == 200 and n == len(body), (st, n, len(body))
                assert sha == hashlib.sha256(body).hexdigest()
            # both on one connection: the chunked answer left nothing behind
            assert origin.seen == [(1, 1), (1, 2)], origin.seen
            assert origin.errors == [], origin.errors
            assert_clean(gw)
    finally:
        origin.close()


def _close_notify_origin(cert, key, announced, sent, held):
    """A TLS origin that answers one request with `sent` of `announced` body bytes
    and its close_notify in one write (records made in memory), then keeps the TCP
    connection open, as Python's asyncio does while it waits for the peer's
    close_notify: the end is read off the socket with the last bytes, and no read
    event follows it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)

    def pump(raw, inc, out):
        if out.pending:
            raw.sendall(out.read())
        d = raw.recv(65536)
        if not d:
            raise OSError("closed")
        inc.write(d)

    def serve():
        try:
            raw, _ = lsock.accept()
            held.append(raw)
            raw.settimeout(10)
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = ctx.wrap_bio(inc, out, server_side=True)
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    pump(raw, inc, out)
            buf = b""
            while b"\r\n\r\n" not in buf:
                try:
                    buf += tls.read(65536)
                except ssl.SSLWantReadError:
                    pump(raw, inc, out)
            tls.write(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n"
                      b"Content-Length: %d\r\n\r\n" % announced + b"v" * sent)
            try:
                tls.unwrap()
            except ssl.SSLWantReadError:
                pass
            raw.sendall(out.read())     # the last records and the close_notify at once
        except (OSError, ssl.SSLError):
            pass
    threading.Thread(target=serve, daemon=True).start()
    return lsock


def test_https_close_notify_with_the_last_bytes():
    c = certs()
    for announced, sent in ((50000, 1000), (4 * MiB, 300000)):
        held = []
        lsock = _close_notify_origin(c["cert"], c["key"], announced, sent, held)
        try:
            with gwtest.checked_gateway(None, upstream_url="https://127.0.0.1:%d"
                                        % lsock.getsockname()[1],
                                        upstream_key="sk-upstream-origin", ca_file=c["ca"],
                                        threads=1) as (_, gw):
                t0 = time.monotonic()
                if announced <= 65536:  # answered whole: a 502 that says why
                    st, _, b = gw.request("GET", "/v1/videos/video_abc/content", timeout=8)
                    assert st == 502 and "closed" in gwtest.error_body(b)["message"], (st, b)
                else:                   # streamed: announced in full, cut short, closed
                    with gwtest.RawConn(gw.port) as rc:
                        rc.send("GET /v1/videos/video_abc/content HTTP/1.1\r\nHost: gw\r\n"
                                "Authorization: Bearer %s\r\n\r\n" % gw.keys["default"])
                        data = rc.read_until_close(8)
                        assert rc.eof, "no end after the upstream's close_notify"
                    hd, _, body = data.partition(b"\r\n\r\n")
                    assert hd.startswith(b"HTTP/1.1 200 ") and 0 < len(body) < announced, \
                        data[:300]
                assert time.monotonic() - t0 < 5
                assert_clean(gw)
        finally:
            lsock.close()
            for r in held:
                r.close()


# ---------------------------------------------------------------- the gateway's listener

def test_gateway_tls_listener():
    c = certs()
    with gwtest.Stub() as stub:
        gw = gwtest.Gateway(stub, tls_cert=c["cert"], tls_key=c["key"], client_ca=c["ca"])
        with gw:
            assert gw.url.startswith("https://")
            st, _, b = gw.request("GET", "/healthz", key=None)
            assert st == 200 and json.loads(b) == {"status": "ok"}
            st, _, b = create(gw)
            assert st == 200 and json.loads(b)["model"] == "veo_3_1", b
            assert stub.last()["json"]["model"] == "veo_3_1" and not stub.last()["tls"]
            # a big upload over TLS, streamed
            ms = gwtest.multipart_stream([("model", "veo3.1"), ("prompt", "p"),
                                          ("seconds", "8"), ("size", "16x9"),
                                          ("input_reference", "f.png", 3 << 20, "image/png")])
            st, _, b = gw.request("POST", "/v1/videos", headers=ms.headers(), body=ms)
            assert st == 200, b
            assert stub.last()["parts"][4]["sha256"] == ms.part_sha256[4]
            # the certificate is the configured one, TLS 1.2 at least
            ctx = ssl.create_default_context(cafile=c["ca"])
            with socket.create_connection(("127.0.0.1", gw.port)) as s:
                with ctx.wrap_socket(s, server_hostname="localhost") as t:
                    assert t.version() in ("TLSv1.2", "TLSv1.3"), t.version()
            # a client without the CA refuses it; TLS 1.1 is refused by the gateway
            try:
                gwtest.request(gw.port, "GET", "/healthz", tls=True, ca=c["other_ca"])
                raise AssertionError("verified the gateway against an unrelated CA")
            except ssl.SSLCertVerificationError:
                pass
            old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            old.load_verify_locations(c["ca"])
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    old.minimum_version = ssl.TLSVersion.TLSv1
                    old.maximum_version = ssl.TLSVersion.TLSv1_1
                with socket.create_connection(("127.0.0.1", gw.port)) as s:
                    try:
                        with old.wrap_socket(s, server_hostname="localhost"):
                            raise AssertionError("the gateway accepted TLS 1.1")
                    except (ssl.SSLError, ConnectionError):
                        pass
            except ValueError:
                pass                     # this OpenSSL cannot even offer TLS 1.1
            # plain HTTP to the TLS port gets no 200
            resp = gwtest.raw(gw.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                              read_timeout=3)
            assert not resp.startswith(b"HTTP/1.1 200"), resp[:100]
            st, _, _ = gw.request("GET", "/healthz", key=None)
            assert st == 200
        assert gw.proc.returncode == 0
        assert_clean(gw)


def _conf(tmp, cert, key):
    path = os.path.join(tmp, "gateway.conf")
    with open(path, "w") as f:
        f.write("include = %s\n[server]\nlisten = 127.0.0.1:%d\ntls_cert = %s\ntls_key = %s\n"
                "[upstream]\nurl = http://127.0.0.1:9\nkey = env:GW_TEST_UPSTREAM_KEY\n"
                "[key t]\nsha256 = %s\n"
                % (os.path.join(gwtest.SOURCE_DIR, "config", "models.conf"),
                   gwtest.free_port(), cert, key, "0" * 64))
    return path


def _run(args, timeout=20):
    env = dict(os.environ, GW_TEST_UPSTREAM_KEY="sk-up-tls-test")
    bin_ = os.environ.get("GW_BIN") or gwtest._default_bin()
    return subprocess.run([bin_] + args, capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_bad_certificate_refused():
    c = certs()
    tmp = tempfile.mkdtemp(prefix="gwtest-tlsconf-")
    try:
        garbage = os.path.join(tmp, "garbage.pem")
        with open(garbage, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        missing = os.path.join(tmp, "missing.pem")
        # the configuration is fine
        ok = _conf(tmp, c["cert"], c["key"])
        p = _run(["-t", "-c", ok])
        assert p.returncode == 0, (p.stdout, p.stderr)
        cases = [(missing, c["key"], "missing.pem"),       # no such file
                 (c["cert"], missing, "missing.pem"),
                 (garbage, c["key"], "garbage.pem"),       # not a certificate
                 (c["cert"], c["other_ca"], "other-ca.pem"),  # not a key
                 (c["cert"], certs("elsewhere")["key"], "server.key")]  # another cert's key
        for cert, key, named in cases:
            conf = _conf(tmp, cert, key)
            p = _run(["-t", "-c", conf])
            out = p.stdout + p.stderr
            assert p.returncode == 1, (cert, key, p.returncode, out)
            assert named in out and "is ok" not in out, (cert, key, out)
            assert "tls_" in out, out
            # and the gateway refuses to start (it must not serve plain HTTP or
            # TLS without a certificate)
            p = _run(["-c", conf])
            out = p.stdout + p.stderr
            assert p.returncode != 0, (cert, key, out)
            assert named in out, out
            gwtest.assert_no_sanitizer_report(out, "the gateway's output")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    gwtest.main(globals())    # also removes the certificates' temp dir
