"""systemd (issue 10): config/videogw.service passes `systemd-analyze verify` (where the
tool works), and the gateway speaks the Type=notify protocol: READY=1 once listening,
RELOADING=1 then READY=1 around SIGHUP, STOPPING=1 on SIGTERM - read from a
NOTIFY_SOCKET of the test's own."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402


def test_unit_verifies():
    tool = shutil.which("systemd-analyze")
    if tool is None:
        raise gwtest.Skip("systemd-analyze not installed")
    with open(os.path.join(gwtest.SOURCE_DIR, "config", "videogw.service")) as f:
        unit = f.read()
    assert "Type=notify" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit
    d = tempfile.mkdtemp(prefix="gwtest-unit-")
    try:
        # the unit names the installed binary: point it at the one under test
        path = os.path.join(d, "videogw.service")
        with open(path, "w") as f:
            f.write(unit.replace("/usr/local/bin/videogw", gwtest.gateway_bin()))
        p = subprocess.run([tool, "verify", path], capture_output=True, text=True, timeout=60)
        if p.returncode != 0 and "videogw.service" not in p.stderr:
            raise gwtest.Skip("systemd-analyze verify does not work here: %s" % p.stderr[-300:])
        assert p.returncode == 0 and "videogw.service" not in p.stderr, p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_sd_notify():
    d = tempfile.mkdtemp(prefix="gwtest-notify-")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.path.join(d, "notify"))
    sock.settimeout(15)

    def next_state():
        msg = sock.recv(4096).decode()
        return [kv for kv in msg.split("\n") if kv.split("=")[0] in
                ("READY", "RELOADING", "STOPPING")], msg
    try:
        with gwtest.Gateway(gwtest.shared_stub(),
                            env={"NOTIFY_SOCKET": os.path.join(d, "notify")}) as gw:
            states, msg = next_state()
            assert states == ["READY=1"] and "MAINPID=%d" % gw.pid in msg, msg
            gw.hup()
            assert next_state()[0] == ["RELOADING=1"]
            assert next_state()[0] == ["READY=1"]
            gw.proc.send_signal(signal.SIGTERM)
            assert next_state()[0] == ["STOPPING=1"]
            assert gw.proc.wait(15) == 0
            gwtest.forget_shared_gateway()
    finally:
        sock.close()
        shutil.rmtree(d, ignore_errors=True)


gwtest.main(globals())
