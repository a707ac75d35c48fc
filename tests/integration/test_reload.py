"""SIGHUP reloads the configuration (issue 6): the new file is checked first (a bad
one is refused with its errors logged and the old one kept), requests in flight
finish under the config they started with (a 200 MB upload is not cut), a revoked
key gets 401 on its next request, a new one works at once, and the counters of keys
that stay carry over. A change that needs a restart (the listener, the upstream) is
refused, not half applied."""

import hashlib
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}
BODY = json.dumps({"model": "veo3.1", "prompt": "p", "seconds": "8", "size": "16x9"}).encode()


def create(gw, key):
    return gw.request("POST", "/v1/videos", key=key, headers=JSON, body=BODY)


def reloaded(gw, n):
    """Wait for the n-th "SIGHUP:" line of the gateway's log; return it."""
    lines = gwtest.wait_for(lambda: [ln for ln in gw.log().splitlines() if "SIGHUP:" in ln]
                            if len([ln for ln in gw.log().splitlines() if "SIGHUP:" in ln]) >= n
                            else None, timeout=10, what="the reload's log line")
    return lines[n - 1]


def add_key(gw, name, **opts):
    plain = "sk-vgw-" + os.urandom(16).hex()
    gw.keys[name] = plain
    if opts:
        gw.key_options[name] = opts
    return plain


def test_keys_change_while_an_upload_is_in_flight():
    with gwtest.Stub() as stub, gwtest.Gateway(stub, keys=("alice", "bob"),
                                               key_options={"alice": {"rpm": 2}}) as gw:
        assert create(gw, "alice")[0] == 200
        assert create(gw, "alice")[0] == 200          # alice's minute is used up
        size = 200 * 1024 * 1024
        ms = gwtest.multipart_stream([("model", "veo3.1"), ("prompt", "p"), ("seconds", "8"),
                                      ("size", "16x9"),
                                      ("input_reference", "big.bin", size, "image/png")])
        result = {}

        def upload():
            result["r"] = gw.request("POST", "/v1/videos", key="bob",
                                     headers={"Content-Type": ms.content_type}, body=ms,
                                     timeout=120)
        t = threading.Thread(target=upload)
        t.start()
        try:
            stub.wait_bytes(8 * 1024 * 1024, timeout=30)    # the upload is under way
            # bob is revoked, carol added, alice stays (her counter with her)
            bob = gw.keys.pop("bob")
            add_key(gw, "carol")
            gw.write_config()
            gw.hup()
            assert "reloaded" in reloaded(gw, 1)
            st, _, b = gw.request("GET", "/v1/videos?limit=1", key=None,
                                  headers={"Authorization": "Bearer " + bob})
            assert st == 401 and gwtest.error_body(b)["code"] == "invalid_api_key", b
            assert create(gw, "carol")[0] == 200
            st, h, b = create(gw, "alice")
            assert st == 429 and gwtest.error_body(b)["code"] == "rate_limit_exceeded", b
        finally:
            t.join(120)
        st, _, b = result["r"]
        assert st == 200, (st, b[:300])               # the upload finished under the old config
        rec = [r for r in stub.requests() if r["body_size"] > size][-1]
        assert rec["complete"] and rec["parts"][-1]["size"] == size, rec
        gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [bob, stub.key])


def test_bad_config_keeps_the_old_one():
    with gwtest.Stub() as stub, gwtest.Gateway(stub, keys=("alice",)) as gw:
        gw.raw_extra = "[limits]\nrpm = ten\n"
        add_key(gw, "dave")
        gw.write_config()
        gw.hup()
        line = reloaded(gw, 1)
        assert "running configuration stays" in line, line
        log = gw.log()
        assert 'limits.rpm: expected integer 0..100000, got "ten"' in log, log[-2000:]
        assert create(gw, "alice")[0] == 200                    # the old config serves
        assert create(gw, "dave")[0] == 401                     # the bad file's key is not in
        # a change that needs a restart is refused too, not half applied
        gw.raw_extra = ""
        gw.options["client_timeout"] = "30s"
        gw.write_config()
        text = open(gw.conf_path).read().replace("127.0.0.1:%d" % gw.port,
                                                 "127.0.0.1:%d" % gwtest.free_port())
        with open(gw.conf_path, "w") as f:
            f.write(text)
        gw.hup()
        line = reloaded(gw, 2)
        assert "server.listen" in line and "needs a restart" in line, line
        assert create(gw, "dave")[0] == 401
        # a good file again: applied
        gw.write_config()
        gw.hup()
        assert "reloaded" in reloaded(gw, 3)
        assert create(gw, "dave")[0] == 200
        gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


if __name__ == "__main__":
    gwtest.main(globals())
