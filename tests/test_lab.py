"""`make lab`'s launcher: one line, the URL to open, and that URL serves JupyterLab."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.tools.lab import free_port, lab_arguments

URL = re.compile(r"^open: http://127\.0\.0\.1:(\d+)/lab\?token=([0-9a-f]{48})   "
                 r"\(Ctrl-C stops JupyterLab\)$")


def test_a_missing_folder_is_named():
    with pytest.raises(ValueError, match="no folder 'no-such-dir'"):
        lab_arguments(Path("no-such-dir"), 8888, [])


def test_a_busy_preferred_port_is_passed_over():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert free_port(taken) != taken


def test_a_setting_given_again_replaces_the_launchers(tmp_path):
    command = lab_arguments(tmp_path, 8888, ["--ServerApp.log_level=INFO"])
    assert [a for a in command if "log_level" in a] == ["--LabApp.log_level=WARN",
                                                       "--ServerApp.log_level=INFO"]


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def _open_a_notebook_in_the_lab_kernel(port: int, token: str, notebook: str) -> None:
    """What JupyterLab does when a student opens a notebook: reads it, starts its kernel,
    connects to the kernel's channels (a websocket), and waits for its first message."""
    from websockets.sync.client import connect

    headers = {"Authorization": f"token {token}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", f"/api/contents/{notebook}?content=1", headers=headers)
    response = conn.getresponse()
    assert (response.status, response.read()[:1]) == (200, b"{")
    conn.request("POST", "/api/sessions", headers=headers, body=json.dumps(
        {"path": notebook, "type": "notebook", "kernel": {"name": "netlab"}}))
    kernel = json.loads(conn.getresponse().read())["kernel"]["id"]
    conn.close()
    url = f"ws://127.0.0.1:{port}/api/kernels/{kernel}/channels?session_id=test"
    with connect(url, additional_headers=headers, open_timeout=60) as channels:
        channels.recv(timeout=60)  # the kernel's status


@pytest.mark.slow
def test_lab_prints_one_line_and_serves_that_url(tmp_path):
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    shutil.copy(Path(__file__).parents[1] / "notebooks" / "00-Start-Here.ipynb", tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "lab", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()   # printed once the server listens
        match = URL.match(line.rstrip("\n"))
        assert match, f"not `open: <url>`: {line!r}"
        port, token = int(match[1]), match[2]
        assert _get(port, f"/lab?token={token}") == 200
        assert _get(port, "/api/status") == 403                  # no token, no entry
        assert _get(port, f"/api/status?token={'0' * 48}") == 403
        _open_a_notebook_in_the_lab_kernel(port, token, "00-Start-Here.ipynb")
    finally:
        proc.send_signal(signal.SIGINT)                           # one Ctrl-C stops it
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0                                   # stopped, not killed
    assert out == ""                                              # nothing after the URL
    assert "[I " not in err, err                                  # and no log of routine
    for noise in ("websocket_ping_timeout", "is not trusted", "Parent appears to have exited"):
        assert noise not in err, err                              # nor a warning to ignore
    # Ctrl-C shut the kernel down: nothing of it left
    assert not list((tmp_path / "runtime").glob("kernel-*.json"))
