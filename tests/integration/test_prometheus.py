"""A real Prometheus (Debian's `prometheus`) scraping the gateway with the scrape config
that docs/operations.md documents (Bearer credentials_file with an admin key): `up == 1`,
request rates and video-second rates per key, through Prometheus's HTTP API."""

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

JSON = {"Content-Type": "application/json"}

CONFIG = """global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: videogw
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials_file: %(creds)s
    static_configs:
      - targets: ['127.0.0.1:%(admin_port)d']
"""


def query(port, q):
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": q}))
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_the_gateway():
    prom = shutil.which("prometheus")
    if prom is None:
        raise gwtest.Skip("prometheus not installed (scripts/install-deps.sh installs it)")
    d = gwtest.shared_tmpdir("gwtest-prom-")
    admin_port, prom_port = gwtest.free_port(), gwtest.free_port()
    with gwtest.Stub() as stub, gwtest.Gateway(
            stub, keys=("alice", "bob", "scraper"),
            key_options={"scraper": {"admin": "yes"}},
            extra={"store": {"path": os.path.join(d, "gw.db")},
                   "admin": {"listen": "127.0.0.1:%d" % admin_port}}) as gw:
        creds = os.path.join(d, "videogw.key")
        with open(creds, "w") as f:
            f.write(gw.keys["scraper"] + "\n")
        os.chmod(creds, 0o600)
        with open(os.path.join(d, "prometheus.yml"), "w") as f:
            f.write(CONFIG % {"creds": creds, "admin_port": admin_port})
        p = subprocess.Popen([prom, "--config.file=" + os.path.join(d, "prometheus.yml"),
                              "--storage.tsdb.path=" + os.path.join(d, "data"),
                              "--web.listen-address=127.0.0.1:%d" % prom_port],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "prom.log"), "w"))
        stop, failures = threading.Event(), []
        try:
            def traffic():
                body = json.dumps({"model": "veo3.1", "prompt": "p", "seconds": "4",
                                   "size": "16x9"}).encode()
                while not stop.is_set():
                    for key in ("alice", "alice", "bob"):
                        st, _, b = gw.request("POST", "/v1/videos", key=key, headers=JSON,
                                              body=body)
                        if st != 200:
                            failures.append((st, b))
                    stop.wait(0.1)
            t = threading.Thread(target=traffic, daemon=True)
            t.start()

            def answer(q):
                def pred():
                    try:
                        return query(prom_port, q)
                    except OSError:
                        return None         # not listening yet
                return gwtest.wait_for(pred, timeout=25, interval=0.25, what=q)

            up = answer('up{job="videogw"} == 1')
            assert up[0]["value"][1] == "1", up
            rates = answer('sum by (key) (rate(videogw_http_requests_total{route="create",'
                           'status="2xx"}[5s])) > 0')
            by_key = {r["metric"]["key"]: float(r["value"][1]) for r in rates}
            assert set(by_key) >= {"alice", "bob"}, rates
            vs = answer('sum by (key, model) (rate(videogw_video_seconds_total'
                        '{outcome="kept"}[5s])) > 0')
            got = {(r["metric"]["key"], r["metric"]["model"]) for r in vs}
            assert ("alice", "veo_3_1") in got and ("bob", "veo_3_1") in got, vs
            # alice makes two creates for bob's one: her rate is the larger
            vs_alice = [float(r["value"][1]) for r in vs if r["metric"]["key"] == "alice"]
            vs_bob = [float(r["value"][1]) for r in vs if r["metric"]["key"] == "bob"]
            assert vs_alice[0] > vs_bob[0], vs
        finally:
            stop.set()
            p.terminate()
            p.wait(10)
        assert not failures, failures[:3]
        gwtest.stop_clean(gw, secrets=[stub.key, gw.keys["scraper"]])


gwtest.main(globals())
