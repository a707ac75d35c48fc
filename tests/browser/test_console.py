"""The admin console in a real browser (issue 8; ctest label `browser`): Debian's chromium,
headless, driven by playwright-core from npm (tests/browser/node_modules; nothing
downloads a browser). The test makes usage through the gateway (two keys, one hostile
model name), then console.mjs signs in, checks the table, the chart and the by-model
breakdown, creates a key, uses it through the gateway, lowers its budget, revokes it and
sees the gateway refuse it. A screenshot goes to <build>/console.png."""

import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}
CHROMIUM = os.environ.get("GW_CHROMIUM", "/usr/bin/chromium")


def require_browser():
    node = shutil.which("node")
    assert node, "node is not installed (scripts/install-deps.sh installs nodejs)"
    assert os.path.exists(CHROMIUM), ("%s is missing: scripts/install-deps.sh installs "
                                      "Debian's chromium" % CHROMIUM)
    assert os.path.exists(os.path.join(HERE, "node_modules", "playwright-core")), (
        "tests/browser/node_modules is missing: run `(cd tests/browser && npm ci)` "
        "(scripts/test.sh does it)")
    return node


def test_console():
    node = require_browser()
    d = gwtest.shared_tmpdir("gwtest-console-")
    admin_port = gwtest.free_port()
    build = os.environ.get("GW_BUILD_DIR") or d
    shot = os.path.join(build, "console.png")
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("alice", "bob", "lead"), key_options={"lead": {"admin": "yes"},
                                                              "alice": {"daily_seconds": 100}},
            models_unknown="pass",
            extra={"store": {"path": os.path.join(d, "gw.db")},
                   "admin": {"listen": "127.0.0.1:%d" % admin_port}}) as gw:
        for key, model, secs in (("alice", "veo3", "8"), ("alice", "veo3.1", "4"),
                                 ("bob", "<img src=x onerror=alert(1)>", "6")):
            body = json.dumps({"model": model, "prompt": "p", "seconds": secs,
                               "size": "16x9"}).encode()
            assert gw.request("POST", "/v1/videos", key=key, headers=JSON, body=body)[0] == 200
        env = dict(os.environ, ADMIN_URL="http://127.0.0.1:%d" % admin_port, GW_URL=gw.url,
                   ADMIN_KEY=gw.keys["lead"], SCREENSHOT=shot, CHROMIUM=CHROMIUM)
        p = subprocess.run([node, os.path.join(HERE, "console.mjs")], capture_output=True,
                           text=True, timeout=120, env=env, cwd=HERE)
        assert p.returncode == 0, "console.mjs failed:\n%s\n%s" % (p.stdout[-3000:],
                                                                   p.stderr[-5000:])
        seen = json.loads(p.stdout.strip().splitlines()[-1])
        print("  saw: " + json.dumps({k: seen[k] for k in ("alice_bar", "newbie_bar",
                                                             "legend", "create_over",
                                                             "after_revoke")}))
        assert os.path.getsize(shot) > 10000, shot
        lines = gw.wait_log(lambda line: line.get("route") == "admin.keys" and
                            line.get("method") == "DELETE")
        assert lines[0]["key"] == "lead" and lines[0]["status"] == 200, lines
        gwtest.stop_clean(gw, secrets=[stub.key] + list(gw.keys.values()))


if __name__ == "__main__":
    gwtest.main(globals())
