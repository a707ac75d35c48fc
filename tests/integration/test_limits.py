"""Per-key rules of issue 6, as far as they are enforced: a key's model allowlist
(403 model_not_allowed before the upstream sees a complete create) and its expiry
date (refused like an unknown key)."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}


def create(gw, key, model, as_multipart=False):
    fields = {"model": model, "prompt": "p", "seconds": "8", "size": "16x9"}
    if as_multipart:
        body, ct = gwtest.multipart(list(fields.items()) +
                                    [("input_reference", "f.png", b"\x89PNG" + b"x" * 5000,
                                      "image/png")])
        return gw.request("POST", "/v1/videos", key=key, headers={"Content-Type": ct},
                          body=body)
    return gw.request("POST", "/v1/videos", key=key, headers=JSON,
                      body=json.dumps(fields).encode())


def test_model_allowlist():
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("alice", "bob"),
            key_options={"alice": {"models": "veo3.1, veo3"}}) as gw:
        # allowed, by alias and by upstream name
        assert create(gw, "alice", "veo3.1")[0] == 200
        assert create(gw, "alice", "veo_3_1")[0] == 200
        assert create(gw, "alice", "veo3", as_multipart=True)[0] == 200
        made = len(stub.jobs())
        # refused, JSON and multipart alike; no complete create reached the upstream
        for mp in (False, True):
            st, _, b = create(gw, "alice", "veo2", as_multipart=mp)
            assert st == 403, (st, b)
            e = gwtest.error_body(b)
            assert (e["code"], e["param"], e["type"]) == ("model_not_allowed", "model",
                                                          "invalid_request_error"), e
        assert len(stub.jobs()) == made
        # nothing complete with the refused model reached the upstream
        assert not [r for r in stub.requests() if r["method"] == "POST" and r["complete"] and
                    "veo2" in json.dumps([r.get("json"), r.get("parts")])]
        # a key without an allowlist may use every model
        assert create(gw, "bob", "veo2")[0] == 200
        lines = [line for line in gw.log_json() if line.get("status") == 403]
        assert len(lines) == 2 and all(line["key"] == "alice" for line in lines), lines
        gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


def test_expired_key_is_unknown():
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("old", "new"),
            key_options={"old": {"expires": "2020-01-01"},
                         "new": {"expires": "2999-12-31"}}) as gw:
        st, _, b = gw.request("GET", "/v1/videos?limit=1", key="old")
        assert st == 401, (st, b)
        e = gwtest.error_body(b)
        assert e["code"] == "invalid_api_key" and "expire" not in e["message"].lower(), e
        assert gw.request("GET", "/v1/videos?limit=1", key="new")[0] == 200
        assert len([r for r in stub.requests() if r["path"] == "/v1/videos"]) == 1
        gwtest.stop_clean(gw, secrets=list(gw.keys.values()) + [stub.key])


if __name__ == "__main__":
    gwtest.main(globals())
