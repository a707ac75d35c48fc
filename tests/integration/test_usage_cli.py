"""`gateway usage` (issue 6): the usage ledger per team key and model, read from the
store's SQLite file while the gateway runs on it and after it stopped. Jobs are
created through the gateway by two keys with two models, one fails and is refunded;
the numbers are asserted exactly in --json and in the table's totals; --key,
--since/--until and --by-day filter and split; bad options are exit 2 naming the
option, an unreadable database or configuration exit 1 naming the file; no team or
upstream key appears in any output."""

import datetime
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}
OUTPUTS = []    # every stdout and stderr of `gateway usage`: checked for secrets at the end


def tmpdir():
    return gwtest.shared_tmpdir(prefix="gwtest-usage-")


gateway_bin = gwtest.gateway_bin


def usage(*args):
    """`gateway usage ARGS` as an operator runs it from a shell: without the
    gateway's environment (its upstream key variables are not set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GW_TEST_UPSTREAM_KEY")}
    p = subprocess.run([gateway_bin(), "usage"] + list(args), capture_output=True, text=True,
                       timeout=30, env=env, cwd=tmpdir())
    gwtest.assert_no_sanitizer_report(p.stdout + p.stderr, "gateway usage's output")
    OUTPUTS.append(p.stdout + p.stderr)
    return p


def usage_json(conf, *args):
    p = usage("-c", conf, "--json", *args)
    assert p.returncode == 0 and p.stderr == "", (p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout)


def utc_day(ts, delta=0):
    d = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).date()
    return (d + datetime.timedelta(days=delta)).isoformat()


def write(name, text):
    path = os.path.join(tmpdir(), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


# ---------------------------------------------------------------- the shared ledger

STATE = {}


def ledger():
    """A gateway on a store file with jobs of alice (veo3.1 twice, one failed and
    refunded; veo3 once) and bob (veo3 once). Returns the state dict."""
    if STATE:
        return STATE
    stub = gwtest.shared_stub()
    db = os.path.join(tmpdir(), "gateway.db")
    gw = gwtest.shared_gateway(stub, keys=("alice", "bob"), extra={"store": {"path": db}})
    jobs = []
    for key, model, seconds in (("alice", "veo3.1", "8"), ("alice", "veo3.1", "4"),
                                ("alice", "veo3", "6"), ("bob", "veo3", "8")):
        body = json.dumps({"model": model, "prompt": "p", "seconds": seconds,
                           "size": "16x9"}).encode()
        st, _, b = gw.request("POST", "/v1/videos", key=key, headers=JSON, body=body)
        assert st == 200, (st, b)
        jobs.append(json.loads(b))
    days = {utc_day(j["created_at"]) for j in jobs}
    if len(days) != 1:
        raise gwtest.Skip("the jobs straddle a UTC midnight")
    # the provider fails alice's 8 s veo3.1 job; a retrieve through the gateway sees it
    stub.set_job(jobs[0]["id"], status="failed")
    st, _, b = gw.request("GET", "/v1/videos/" + jobs[0]["id"], key="alice")
    assert st == 200 and json.loads(b)["status"] == "failed", b
    STATE.update(stub=stub, gw=gw, db=db, conf=gw.conf_path, day=days.pop(), jobs=jobs)
    # the refund is written after the retrieve's answer: wait until the ledger has it
    gwtest.wait_for(lambda: any(r["refunded_seconds"] for r in usage_json(gw.conf_path)),
                    timeout=10, what="the refund in the ledger")
    return STATE


EXPECTED = [
    {"key": "alice", "model": "veo3", "jobs": 1, "seconds": 6, "failed": 0,
     "refunded_seconds": 0},
    {"key": "alice", "model": "veo_3_1", "jobs": 2, "seconds": 12, "failed": 1,
     "refunded_seconds": 8},
    {"key": "bob", "model": "veo3", "jobs": 1, "seconds": 8, "failed": 0,
     "refunded_seconds": 0},
]


def check_table(out, rows, totals):
    """The human table: a header, aligned columns (every line as wide as the header:
    the numbers are right-aligned), `rows` then `totals` as lists of words."""
    lines = out.rstrip("\n").split("\n")
    assert lines[0].split() == ["key", "model", "jobs", "seconds", "failed",
                                "refunded_seconds"], out
    assert len({len(line) for line in lines}) == 1, "columns not aligned:\n" + out
    words = [line.split() for line in lines[1:]]
    assert words == rows + totals, out
    # every column starts at the same offset on every line
    starts = [lines[0].index(h) for h in ("model", "jobs")]
    for line, w in zip(lines[1:], words):
        if len(w) == 6:
            assert line[starts[0]:].startswith(w[1]), out


# ---------------------------------------------------------------- tests

def test_json_exact_while_running():
    s = ledger()
    assert s["gw"].proc.poll() is None
    assert usage_json(s["conf"]) == EXPECTED


def test_table_totals():
    s = ledger()
    p = usage("-c", s["conf"])
    assert p.returncode == 0 and p.stderr == "", (p.stdout, p.stderr)
    check_table(p.stdout,
                [["alice", "veo3", "1", "6", "0", "0"],
                 ["alice", "veo_3_1", "2", "12", "1", "8"],
                 ["alice", "(total)", "3", "18", "1", "8"],
                 ["bob", "veo3", "1", "8", "0", "0"],
                 ["bob", "(total)", "1", "8", "0", "0"]],
                [["(total)", "4", "26", "1", "8"]])


def test_key_filter():
    s = ledger()
    assert usage_json(s["conf"], "--key", "bob") == EXPECTED[2:]
    assert usage_json(s["conf"], "--key=alice") == EXPECTED[:2]
    p = usage("-c", s["conf"], "--key", "bob")
    assert p.returncode == 0, p.stderr
    check_table(p.stdout, [["bob", "veo3", "1", "8", "0", "0"],
                           ["bob", "(total)", "1", "8", "0", "0"]],
                [["(total)", "1", "8", "0", "0"]])
    # a key with no usage: the header and one line; JSON []
    p = usage("-c", s["conf"], "--key", "carol")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[1:] == ["no usage in this range", ""], p.stdout
    assert p.stdout.split()[:6] == ["key", "model", "jobs", "seconds", "failed",
                                    "refunded_seconds"], p.stdout
    assert usage_json(s["conf"], "--key", "carol") == []


def test_date_range():
    s = ledger()
    day = s["day"]
    ts = s["jobs"][0]["created_at"]
    before, after = utc_day(ts, -1), utc_day(ts, 1)
    assert usage_json(s["conf"], "--since", day, "--until", day) == EXPECTED
    assert usage_json(s["conf"], "--since", before, "--until", after) == EXPECTED
    assert usage_json(s["conf"], "--since", day) == EXPECTED
    assert usage_json(s["conf"], "--until", day) == EXPECTED
    assert usage_json(s["conf"], "--since", after) == []
    assert usage_json(s["conf"], "--until", before) == []
    assert usage_json(s["conf"], "--since", before, "--until", before) == []
    p = usage("-c", s["conf"], "--since", after)
    assert p.returncode == 0 and "no usage in this range" in p.stdout, p.stdout


def test_by_day():
    s = ledger()
    rows = usage_json(s["conf"], "--by-day")
    assert rows == [dict(r, day=s["day"]) for r in EXPECTED], rows
    assert all(list(r)[0] == "day" for r in rows)
    p = usage("-c", s["conf"], "--by-day", "--key", "alice")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.rstrip("\n").split("\n")
    assert lines[0].split() == ["key", "model", "day", "jobs", "seconds", "failed",
                                "refunded_seconds"], p.stdout
    assert lines[2].split() == ["alice", "veo_3_1", s["day"], "2", "12", "1", "8"], p.stdout
    assert lines[-1].split() == ["(total)", "3", "18", "1", "8"], p.stdout


def test_bad_options():
    s = ledger()
    for args, names in ((["--since", "2025-13-01"], "--since"),
                        (["--since", "yesterday"], "--since"),
                        (["--since=2025-02-30"], "--since"),
                        (["--until", "2025-1-1"], "--until"),
                        (["--since", "2025-02-02", "--until", "2025-02-01"], "--since"),
                        (["--since"], "--since"),
                        (["--bogus"], "--bogus"),
                        (["--json=yes"], "--json"),
                        (["--key", "a b"], "--key"),
                        (["--key", "bob", "--key", "alice"], "--key"),
                        (["extra"], "argument")):
        p = usage("-c", s["conf"], *args)
        assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
        assert names in p.stderr and p.stdout == "", (args, p.stderr)
        assert "usage: gateway usage" in p.stderr, p.stderr
    # a leap day is a date
    assert usage_json(s["conf"], "--since", "2024-02-29", "--until", "2024-02-29") == []
    # help goes to stdout, exit 0
    p = usage("-h")
    assert p.returncode == 0 and "--since" in p.stdout and "--by-day" in p.stdout, p.stdout
    # and `gateway -h` lists the command
    p = subprocess.run([gateway_bin(), "-h"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and "gateway usage" in p.stdout, p.stdout


# what every configuration needs; the key's variable is never set: usage does not
# resolve secrets
UPSTREAM = "[upstream]\nurl = http://127.0.0.1:1\nkey = env:GW_UNSET_USAGE_KEY\n"


def test_files_that_cannot_be_read():
    # no such database: exit 1, naming the file (nothing is created)
    missing = os.path.join(tmpdir(), "nodb", "none.db")
    conf = write("missing.conf", UPSTREAM + "[store]\npath = %s\n" % missing)
    p = usage("-c", conf)
    assert p.returncode == 1 and missing in p.stderr and p.stdout == "", p.stderr
    assert not os.path.exists(missing)
    # a file that is not SQLite
    junk = write("junk.db", "this is not a database\n" * 100)
    conf = write("junk.conf", UPSTREAM + "[store]\npath = %s\n" % junk)
    p = usage("-c", conf, "--json")
    assert p.returncode == 1 and junk in p.stderr and p.stdout == "", p.stderr
    # a configuration with another mistake: the same errors as `gateway -t` (file:line)
    conf = write("bad.conf", UPSTREAM + "[server]\nthreads = many\n[store]\npath = x.db\n")
    p = usage("-c", conf)
    assert p.returncode == 1 and "server.threads" in p.stderr and conf in p.stderr, p.stderr
    # a configuration without [store] path
    conf = write("nostore.conf", UPSTREAM + "[server]\nlisten = 127.0.0.1:1\n[store]\n"
                 "synchronous = full\n")
    p = usage("-c", conf)
    assert p.returncode == 1 and "usage needs [store] path" in p.stderr, p.stderr
    assert conf in p.stderr, p.stderr
    # no configuration at all
    gone = os.path.join(tmpdir(), "gone.conf")
    p = usage("-c", gone)
    assert p.returncode == 1 and gone in p.stderr, p.stderr


def test_include_and_relative_path():
    # [store] path written in an included file is relative to that file's directory,
    # as the gateway reads it; the include itself is relative to the main file
    s = ledger()
    sub = os.path.join(tmpdir(), "conf.d")
    os.makedirs(sub, exist_ok=True)
    write("conf.d/store.conf", "[store]\npath = %s\n" % os.path.relpath(s["db"], sub))
    conf = write("main.conf", "[server]\nthreads = 1\n[upstream]\nurl = http://127.0.0.1:1\n"
                 "key = env:GW_UNSET_%d\ninclude = conf.d/store.conf\n" % os.getpid())
    assert usage_json(conf) == EXPECTED


def test_after_the_gateway_stopped():
    s = ledger()
    gwtest.forget_shared_gateway()
    gwtest.stop_clean(s["gw"], secrets=list(s["gw"].keys.values()) + [s["stub"].key])
    assert usage_json(s["conf"]) == EXPECTED
    p = usage("-c", s["conf"], "--by-day")
    assert p.returncode == 0 and p.stdout.rstrip("\n").split("\n")[-1].split() == \
        ["(total)", "4", "26", "1", "8"], p.stdout


def test_no_secret_in_any_output():
    s = ledger()
    secrets = list(s["gw"].keys.values()) + [s["stub"].key]
    # a team key pasted as --key by mistake is not echoed either
    p = usage("-c", s["conf"], "--key", s["gw"].keys["alice"])
    assert p.returncode == 0 and "no usage in this range" in p.stdout, p.stdout
    p = usage("-c", s["conf"], "--key", s["gw"].keys["alice"] + "/")
    assert p.returncode == 2, p.stderr
    assert OUTPUTS
    for out in OUTPUTS:
        for secret in secrets:
            assert secret not in out, "a secret in gateway usage's output:\n" + out


if __name__ == "__main__":
    gwtest.main(globals())
