"""Upstream key pool: round-robin, a key the upstream refuses (401/403) is taken
out, a key answered 429 rests for its Retry-After; the keys never leak."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402


used_keys = gwtest.used_keys


def test_refused_key_is_taken_out():
    with gwtest.Stub() as stub:
        bogus = "sk-upstream-revoked-" + "x" * 20
        with gwtest.Gateway(stub, upstream_keys=[stub.key, bogus], threads=1) as gw:
            statuses = [gw.request("GET", "/v1/videos?limit=1")[0] for _ in range(8)]
            # the revoked key is tried once (its 401 answered as a 502 upstream_auth_failed), then never again
            assert statuses[:2] == [200, 502], statuses
            assert statuses[2:] == [200] * 6, statuses
            keys = used_keys(stub)
            assert keys.count(bogus) == 1 and keys[1] == bogus, keys
            log = gw.log()
            assert "upstream key #2 answered 401" in log, log[-2000:]
            assert bogus not in log and stub.key not in log


def test_429_key_rests_for_retry_after():
    with gwtest.Stub(extra_keys=1) as stub:
        a, b = stub.keys
        with gwtest.Gateway(stub, upstream_keys=[a, b], threads=1) as gw:
            assert gw.request("GET", "/v1/videos?limit=1")[0] == 200          # key a
            stub.fault("429", retry_after=60, count=1)
            st, h, _ = gw.request("GET", "/v1/videos?limit=1")                # key b: 429
            assert st == 429 and h.get("retry-after") == "60", (st, h)
            for _ in range(5):
                assert gw.request("GET", "/v1/videos?limit=1")[0] == 200
            keys = used_keys(stub)
            assert keys[:2] == [a, b], keys
            # b rests for 60 s: everything after the 429 went with a
            assert keys[2:] == [a] * 5, keys
            assert "upstream key #2 answered 429" in gw.log()


def test_round_robin_when_healthy():
    with gwtest.Stub(extra_keys=2) as stub:
        with gwtest.Gateway(stub, upstream_keys=stub.keys, threads=1) as gw:
            for _ in range(6):
                assert gw.request("GET", "/v1/videos?limit=1")[0] == 200
            assert used_keys(stub) == stub.keys * 2


if __name__ == "__main__":
    gwtest.main(globals())
