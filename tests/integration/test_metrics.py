"""GET /metrics (issue 10): the Prometheus exposition on the admin listener, for admin
keys only; the counters after real traffic; valid for `promtool check metrics` every
time, also during reloads and with a label value that needs escaping."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$')


def parse(text):
    """{(name, frozenset(labels)): value} of an exposition; labels unescaped."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        labels = {}
        if m.group(2):
            for k, v in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2)):
                labels[k] = v.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(3))
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def promtool_check(text):
    promtool = shutil.which("promtool")
    if promtool is None:
        raise gwtest.Skip("promtool not installed (scripts/install-deps.sh installs it)")
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=30)
    assert p.returncode == 0, "promtool check metrics:\n%s%s" % (p.stdout.decode(),
                                                                 p.stderr.decode())


def check_rules(exposed):
    """config/prometheus-rules.yml is valid for promtool and names only metrics the
    gateway exposes (a renamed metric would silently never alert)."""
    path = os.path.join(gwtest.SOURCE_DIR, "config", "prometheus-rules.yml")
    p = subprocess.run([shutil.which("promtool"), "check", "rules", path],
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in exposed} | exposed
    with open(path) as f:
        used = set(re.findall(r"\b((?:videogw|process)_[a-z_]+)", f.read()))
    assert used and used <= families, used - families


def start(d, **kw):
    admin_port = gwtest.free_port()
    extra = {"store": {"path": os.path.join(d, "gw.db")},
             "admin": {"listen": "127.0.0.1:%d" % admin_port}}
    extra.update(kw.pop("extra", {}))
    gw = gwtest.Gateway(gwtest.shared_stub(), keys=("alice", "bob", "lead"),
                        key_options={"lead": {"admin": "yes"},
                                     "bob": {"daily_seconds": 8}},
                        extra=extra, **kw)
    gw.admin_port = admin_port
    return gw


def scrape(gw, key="lead"):
    h = {"Authorization": "Bearer " + gw.keys[key]} if key else {}
    return gwtest.request(gw.admin_port, "GET", "/metrics", headers=h)


def create(gw, key, model="veo3.1", seconds="8"):
    body = json.dumps({"model": model, "prompt": "p", "seconds": seconds,
                       "size": "16x9"}).encode()
    return gw.request("POST", "/v1/videos", key=key, headers=JSON, body=body)


def test_metrics_after_traffic():
    d = gwtest.shared_tmpdir("gwtest-metrics-")
    # an upstream key whose label (its file's path) needs escaping in a label value
    odd = os.path.join(d, 'up"key\\1')
    with open(odd, "w") as f:
        f.write(gwtest.shared_stub().key + "\n")
    with start(d, extra={"upstream": {"key": ["env:GW_TEST_UPSTREAM_KEY", "file:" + odd]}}) as gw:
        for key in ("alice", "alice", "bob"):
            st, _, b = create(gw, key)
            assert st == 200, (st, b)
        job = json.loads(b)["id"]
        assert create(gw, "bob")[0] == 429              # over bob's daily_seconds
        # a key kept in the store (admin API) is reported like a config key
        st, _, b = gwtest.request(gw.admin_port, "POST", "/admin/keys",
                                  headers=dict(JSON, Authorization="Bearer " + gw.keys["lead"]),
                                  body=json.dumps({"name": "nina"}).encode())
        assert st == 200, b
        gw.keys["nina"] = json.loads(b)["secret"]
        assert create(gw, "nina", seconds="4")[0] == 200
        assert gw.request("GET", "/v1/videos/" + job, key="bob")[0] == 200
        assert gw.request("GET", "/v1/videos", key=None)[0] == 401
        assert gw.request("GET", "/nope", key="alice")[0] == 404

        # who may scrape: admin keys only, on the admin listener only
        st, _, b = scrape(gw, key=None)
        assert st == 401 and gwtest.error_body(b)["code"] == "invalid_api_key", b
        st, _, b = scrape(gw, key="alice")
        assert st == 403 and gwtest.error_body(b)["code"] == "permission_denied", b
        assert gw.request("GET", "/metrics", key="lead")[0] == 404
        st, h, b = scrape(gw)
        assert st == 200 and h["content-type"].startswith("text/plain; version=0.0.4"), (st, h)
        text = b.decode()
        promtool_check(text)
        m = parse(text)

        assert value(m, "videogw_build_info", version="0.1.0") == 1
        req = "videogw_http_requests_total"
        assert value(m, req, route="create", status="2xx", key="alice") == 2, text
        assert value(m, req, route="create", status="2xx", key="bob") == 1
        assert value(m, req, route="create", status="4xx", key="bob") == 1
        assert value(m, req, route="retrieve", status="2xx", key="bob") == 1
        assert value(m, req, route="list", status="4xx", key="") == 1
        # /nope and /metrics on the public listener: refused by the router, before auth
        assert value(m, req, route="unmatched", status="4xx", key="") == 2
        assert value(m, "videogw_http_request_duration_seconds_count", route="create") == 5
        assert value(m, "videogw_http_request_duration_seconds_bucket", route="create",
                     le="+Inf") == 5
        assert value(m, "videogw_upstream_response_head_seconds_count", route="create") == 4
        assert value(m, "videogw_http_request_body_bytes_total", route="create") > 0
        vs = "videogw_video_seconds_total"
        assert value(m, vs, key="alice", model="veo_3_1", outcome="reserved") == 16, text
        assert value(m, vs, key="alice", model="veo_3_1", outcome="kept") == 16
        assert value(m, vs, key="bob", model="veo_3_1", outcome="kept") == 8
        assert value(m, vs, key="nina", model="veo_3_1", outcome="kept") == 4, text
        assert value(m, req, route="create", status="2xx", key="nina") == 1
        lim = "videogw_limiter_decisions_total"
        assert value(m, lim, key="alice", outcome="admitted") == 2
        assert value(m, lim, key="bob", outcome="quota_exceeded") == 1
        ks = "videogw_upstream_key_state"
        assert value(m, ks, key="env:GW_TEST_UPSTREAM_KEY", state="in_use") == 1
        assert value(m, ks, key="file:" + odd, state="in_use") == 1, text
        assert '\\"key\\\\1' in text                      # escaped as the format asks
        assert value(m, "videogw_upstream_connections_opened_total") >= 1
        # gauges come back to rest once the traffic is over (up and down on every path)
        assert sum(v for (n, _), v in m.items() if n == "videogw_exchanges_in_flight") == 0
        assert value(m, "videogw_upstream_connections", state="busy") == 0
        assert value(m, "videogw_upstream_connections", state="idle") >= 1
        assert value(m, "videogw_store_operations_total", op="job_put", result="ok") == 4
        assert value(m, "videogw_store_operation_duration_seconds_count") >= 3
        assert value(m, "videogw_store_transactions_total") >= 1
        assert value(m, "videogw_store_commit_delays_total") is not None  # 0 when never busy
        assert value(m, "process_open_fds") > 0
        assert value(m, "process_resident_memory_bytes") > 1e6
        assert value(m, "videogw_ready") == 1
        for secret in [gwtest.shared_stub().key] + list(gw.keys.values()):  # nina's too
            assert secret not in text
        check_rules({name for name, _ in m})
        gwtest.stop_clean(gw)


def test_unknown_model_counts_as_other():
    """A model outside the catalog ([models] unknown = pass) is counted as "other": a
    client cannot make series at will (and its name, in a freed JSON body by the time
    the upstream answers, is never read)."""
    d = gwtest.shared_tmpdir("gwtest-metrics-")
    with start(d, models_unknown="pass") as gw:
        for model in ("my-own-model-1", "my-own-model-2"):
            st, _, b = create(gw, "alice", model=model, seconds="5")
            assert st == 200, b
        st, _, b = scrape(gw)
        m = parse(b.decode())
        promtool_check(b.decode())
        vs = "videogw_video_seconds_total"
        assert value(m, vs, key="alice", model="other", outcome="kept") == 10, b
        assert b"my-own-model" not in b
        gwtest.stop_clean(gw)


def test_scrape_during_reloads():
    """Scrapes while SIGHUP reloads swap the configuration: every answer a valid
    exposition, the reload counters right, no crash."""
    d = gwtest.shared_tmpdir("gwtest-metrics-")
    with start(d) as gw:
        assert create(gw, "alice")[0] == 200
        bodies, errors, stop = [], [], threading.Event()

        def scraper():
            while not stop.is_set():
                try:
                    st, _, b = scrape(gw)
                    if st != 200:
                        errors.append(st)
                    bodies.append(b.decode())
                except Exception as e:       # noqa: BLE001 - reported below
                    errors.append(repr(e))
        t = threading.Thread(target=scraper)
        t.start()
        try:
            for i in range(6):
                gw.key_options["alice"] = {"rpm": str(100 + i)}
                gw.write_config()
                gw.hup()
                gwtest.wait_for(lambda: gw.log().count("configuration reloaded") > i,
                                what="reload %d" % i)
            gw.options["threads"] = 3           # needs a restart: refused
            gw.write_config()
            gw.hup()
            gwtest.wait_for(lambda: "needs a restart" in gw.log(), what="a refused reload")
        finally:
            stop.set()
            t.join()
        assert not errors, errors[:5]
        assert len(bodies) > 6
        promtool_check(bodies[len(bodies) // 2])
        st, _, b = scrape(gw)
        m = parse(b.decode())
        promtool_check(b.decode())
        assert value(m, "videogw_config_reloads_total", result="success") == 6
        assert value(m, "videogw_config_reloads_total", result="failure") == 1
        assert value(m, "videogw_config_last_reload_successful") == 0
        # alice's counters carried over the reloads
        assert value(m, "videogw_http_requests_total", route="create", status="2xx",
                     key="alice") == 1, b.decode()[:3000]
        gwtest.stop_clean(gw)


gwtest.main(globals())
