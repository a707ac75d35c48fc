"""`gateway keys` (issue 8): team keys kept in the store, written by the CLI while the
gateway runs on the same SQLite file. A key added is usable within a second on every
event loop, its limits feed the same limiter as config keys (a daily budget refuses,
raised by `keys set`, refuses no more), a revoked key gets 401 on its next request, a
config key's name is refused, and the keys outlive a restart. No secret in any log."""

import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}
OUTPUTS = []


def keys(conf, *args):
    """`gateway keys ARGS -c conf` from a shell (no upstream key in the environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GW_TEST_UPSTREAM_KEY")}
    p = subprocess.run([gwtest.gateway_bin(), "keys"] + list(args) + ["-c", conf],
                       capture_output=True, text=True, timeout=30, env=env)
    gwtest.assert_no_sanitizer_report(p.stdout + p.stderr, "gateway keys' output")
    OUTPUTS.append(p.stdout + p.stderr)
    return p


def create(gw, secret, seconds="4"):
    body = json.dumps({"model": "veo3", "prompt": "p", "seconds": seconds,
                       "size": "16x9"}).encode()
    return gwtest.request(gw.port, "POST", "/v1/videos", body=body,
                          headers=dict(JSON, Authorization="Bearer " + secret))


def status_everywhere(gw, secret, n=6):
    """The statuses of n GETs on n new connections (spread over the loops)."""
    return {gwtest.request(gw.port, "GET", "/v1/videos",
                           headers={"Authorization": "Bearer " + secret})[0] for _ in range(n)}


def test_cli_keys_live():
    d = gwtest.shared_tmpdir("gwtest-keyscli-")
    db = os.path.join(d, "gw.db")
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("default",), threads=3,
            extra={"store": {"path": db}, "limits": {"daily_seconds": 100}}) as gw:
        conf = gw.conf_path
        p = keys(conf, "add", "carol", "--daily-seconds", "10", "--models", "veo3,veo3.1")
        assert p.returncode == 0, p.stderr
        m = re.search(r"^(sk-vgw-[A-Za-z0-9_-]{32})$", p.stdout, re.M)
        assert m, p.stdout
        secret = m.group(1)
        # the running gateway sees it within a second, on every loop
        t0 = time.monotonic()
        gwtest.wait_for(lambda: status_everywhere(gw, secret) == {200}, timeout=1.0,
                        what="the new key accepted by every loop")
        print("  key added by the CLI usable after %.0f ms" % ((time.monotonic() - t0) * 1e3))
        # its own limits: 10 video-seconds a day, and its model allowlist
        assert create(gw, secret, "8")[0] == 200
        st, _, b = create(gw, secret, "4")
        assert st == 429 and gwtest.error_body(b)["code"] == "insufficient_quota", (st, b)
        body = json.dumps({"model": "veo2", "prompt": "p", "seconds": "4",
                           "size": "16x9"}).encode()
        st, _, b = gwtest.request(gw.port, "POST", "/v1/videos", body=body,
                                  headers=dict(JSON, Authorization="Bearer " + secret))
        assert st == 403, (st, b)
        # a bigger budget, live; the same limiter state (8 s already spent)
        assert keys(conf, "set", "carol", "--daily-seconds", "20").returncode == 0
        gwtest.wait_for(lambda: create(gw, secret, "4")[0] == 200, timeout=1.5,
                        what="the new budget")
        assert create(gw, secret, "8")[0] == 200   # 20 of 20
        st, _, b = create(gw, secret, "4")
        assert st == 429 and gwtest.error_body(b)["code"] == "insufficient_quota", (st, b)
        # listed, as the config's keys are
        p = keys(conf, "list", "--json")
        rows = {r["name"]: r for r in json.loads(p.stdout)}
        assert rows["default"]["source"] == "config", rows
        assert rows["carol"]["daily_seconds"] == 20 and rows["carol"]["state"] == "active"
        p = keys(conf, "list")
        assert p.returncode == 0 and "carol" in p.stdout and "default" in p.stdout, p.stdout
        # refusals: a config key's name, a name taken, odd names, bad values
        p = keys(conf, "add", "default")
        assert p.returncode == 1 and "gateway.conf" in p.stderr, p.stderr
        assert keys(conf, "add", "carol").returncode == 1
        assert keys(conf, "add", "a/b").returncode == 2
        assert keys(conf, "add", "x" * 10000).returncode == 2
        assert keys(conf, "add", "dave", "--rpm", "-5").returncode == 2
        assert keys(conf, "add", "dave", "--rpm", "1000000").returncode == 2
        assert keys(conf, "add", "dave", "--expires", "2001-01-01").returncode == 2
        assert keys(conf, "add", "dave", "--expires", "tomorrow").returncode == 2
        assert keys(conf, "add", "dave", "--models", "no-such-model").returncode == 1
        assert keys(conf, "set", "default", "--rpm", "5").returncode == 1
        assert keys(conf, "set", "nobody", "--rpm", "5").returncode == 1
        assert keys(conf, "revoke", "nobody").returncode == 1
        # revoked: 401 on the next request, everywhere, within a second
        assert keys(conf, "revoke", "carol").returncode == 0
        t0 = time.monotonic()
        gwtest.wait_for(lambda: status_everywhere(gw, secret) == {401}, timeout=1.0,
                        what="the revoked key refused by every loop")
        print("  key revoked by the CLI refused after %.0f ms" % ((time.monotonic() - t0) * 1e3))
        assert "already" in keys(conf, "revoke", "carol").stdout
        assert keys(conf, "set", "carol", "--rpm", "5").returncode == 1
        p = keys(conf, "add", "erin")
        erin = re.search(r"^(sk-vgw-\S+)$", p.stdout, re.M).group(1)
        gwtest.wait_for(lambda: status_everywhere(gw, erin, 2) == {200}, timeout=1.0)
        log = gwtest.stop_clean(gw, secrets=[secret, erin, stub.key] + list(gw.keys.values()))
        assert "store key(s) in use" in log, log[-2000:]
        # after a restart: the store's keys are loaded before the first request
        gw.start()
        assert status_everywhere(gw, erin, 3) == {200}
        assert status_everywhere(gw, secret, 3) == {401}
        gwtest.stop_clean(gw, secrets=[secret, erin, stub.key])
    for out in OUTPUTS:
        assert secret not in out or out.count(secret) == 1 and "shown once" in out


def test_reload_reaches_store_keys():
    """A reload's [limits] defaults reach the store keys that use them; a config key
    added with a store key's name wins (the store key is left out)."""
    d = gwtest.shared_tmpdir("gwtest-keyscli-")
    db = os.path.join(d, "reload.db")
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("default",), threads=2,
            extra={"store": {"path": db}, "limits": {"daily_seconds": 100}}) as gw:
        p = keys(gw.conf_path, "add", "fred")
        fred = re.search(r"^(sk-vgw-\S+)$", p.stdout, re.M).group(1)
        gwtest.wait_for(lambda: create(gw, fred, "4")[0] == 200, timeout=1.5)
        gw.extra["limits"]["daily_seconds"] = 6          # fred has spent 4 of it
        gw.write_config()
        gw.hup()
        gwtest.wait_for(lambda: create(gw, fred, "4")[0] == 429, timeout=2.0,
                        what="the reloaded default budget on a store key")
        # the config takes the name: fred's store key is no longer accepted
        gw.keys["fred"] = "sk-vgw-" + "c" * 32
        gw.write_config()
        gw.hup()
        gwtest.wait_for(lambda: status_everywhere(gw, fred, 2) == {401}, timeout=2.0)
        assert gw.request("GET", "/v1/videos", key="fred")[0] == 200
        assert "named like a config key" in gw.log()
        gwtest.stop_clean(gw, secrets=[fred, stub.key] + list(gw.keys.values()))


if __name__ == "__main__":
    gwtest.main(globals())
