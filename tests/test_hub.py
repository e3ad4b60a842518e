"""A class on a real JupyterHub: the recipe of docs/teaching.md, run as an instructor would.

    .venv/bin/pytest -p no:xdist -s -m hub tests/test_hub.py     (as root; .ci/run does)

As root, in a scratch folder that every user may read: a copy of this repository, its
shared environment made by `make hub` (the documented command), configurable-http-proxy from
npm, and JupyterHub started with hub/jupyterhub_config.py, on 127.0.0.1 only, with
LocalProcessSpawner and a few throwaway Unix users (homes 0700). Then, through the hub's
REST API and its proxy, as a class would: every user's server started at once; notebook 01
of the student edition run in each user's lab kernel at the same time, every capture live;
two users capturing on one port at the same moment, each seeing only their own packets; the
servers stopped with their kernels still running; and nothing of any user left behind —
processes, network namespaces, /tmp directories, sockets, connection files. The users, the
hub and the folder are removed however the test ends. Prints the figures it measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from leftovers import kernel_dirs, processes, wait_gone

pytestmark = pytest.mark.hub

ROOT = Path(__file__).resolve().parents[1]
USERS = 4
NOTEBOOK = "01-Watch-A-TCP-Handshake.ipynb"
CELL_TIMEOUT = 120        # seconds, as nbval gives a cell
STEP_TIMEOUT = 600        # seconds for any one step (an install, all servers, all notebooks)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root: it creates Unix users and runs JupyterHub's LocalProcessSpawner"
    if shutil.which("npm") is None:
        return ("needs npm for configurable-http-proxy (apt-get install npm; .ci/run installs "
                "it)")
    for tool in ("useradd", "userdel", "runuser"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not Path("/usr/bin/python3").exists():
        return "needs Debian's /usr/bin/python3 (make hub makes the shared environment with it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=STEP_TIMEOUT,
                          **kwargs)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


class Hub:
    """JupyterHub as an instructor would set it up, in ``base``; every step undone by
    :meth:`close`, whatever happened before."""

    def __init__(self, base: Path):
        self.base, self.token = base, secrets.token_hex(32)
        self.users: list[str] = []
        self.uids: dict[str, int] = {}
        self.process: subprocess.Popen | None = None
        self.url = ""

    # --- set up ---------------------------------------------------------------------
    def install(self) -> None:
        """A readable copy of the repository and `make hub` in it; the proxy from npm."""
        self.repo = self.base / "netlab"
        files = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                     cwd=ROOT).stdout
        for name in filter(None, files.split("\0")):
            if (ROOT / name).is_file() and not name.startswith(("handout/", "slides/")):
                (self.repo / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, self.repo / name)
        _run(["chmod", "-R", "a+rX", str(self.base)])
        started = time.monotonic()
        _run(["make", "-C", str(self.repo), "hub"])
        self.install_seconds = time.monotonic() - started
        _run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix",
              str(self.base / "proxy"), "configurable-http-proxy@^5"])

    def add_users(self, count: int) -> None:
        """Throwaway Unix users, homes 0700 (docs/teaching.md)."""
        tag = uuid.uuid4().hex[:6]
        homes = self.base / "home"
        homes.mkdir(mode=0o755)
        for n in range(count):
            name = f"nlhub{tag}{n}"
            self.users.append(name)  # before useradd: close() removes it even half made
            _run(["useradd", "--create-home", "--home-dir", str(homes / name),
                  "-K", "HOME_MODE=0700", "--shell", "/bin/bash", name])
            self.uids[name] = int(_run(["id", "-u", name]).stdout)

    def start(self) -> None:
        port, hub_port, api_port = _free_port(), _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = self.base / "jupyterhub_config.py"
        proxy = self.base / "proxy/node_modules/.bin/configurable-http-proxy"
        config.write_text(f"""
c = get_config()  # noqa
load_subconfig({str(self.repo / "hub" / "jupyterhub_config.py")!r})
# this test's hub: loopback only, its own ports, state and users, a service for the API
c.JupyterHub.bind_url = {self.url!r}
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = [{str(proxy)!r}]
c.Spawner.ip = "127.0.0.1"
c.Spawner.environment = {{"LABKIT_CAPTURE": "live"}}  # a capture that is not live fails
c.Authenticator.allowed_users = set({self.users!r})
c.JupyterHub.services = [{{"name": "class-test", "api_token": {self.token!r}}}]
c.JupyterHub.load_roles = [{{"name": "class-test", "services": ["class-test"],
                            "scopes": ["admin:users", "admin:servers", "access:servers"]}}]
c.JupyterHub.db_url = "sqlite:///{self.base / "jupyterhub.sqlite"}"
c.JupyterHub.cookie_secret_file = {str(self.base / "cookie_secret")!r}
c.ConfigurableHTTPProxy.pid_file = {str(self.base / "proxy.pid")!r}
c.JupyterHub.slow_stop_timeout = 120  # DELETE .../server answers once the server stopped
""")
        self.process = subprocess.Popen(
            [str(self.repo / ".venv/bin/jupyterhub"), "-f", str(config)], cwd=self.base,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        running = threading.Event()
        threading.Thread(target=self._keep_log, args=(running,), daemon=True).start()
        assert running.wait(STEP_TIMEOUT), "JupyterHub did not start\n" + self.tail()
        assert self.process.poll() is None, self.tail()

    def _keep_log(self, running: threading.Event) -> None:
        """The hub's log into a file; ``running`` set when it says it serves (or exits)."""
        assert self.process is not None and self.process.stdout is not None
        with (self.base / "jupyterhub.log").open("wb") as log:
            for line in self.process.stdout:
                log.write(line)
                log.flush()
                if b"JupyterHub is now running" in line:
                    running.set()
        running.set()

    # --- use ------------------------------------------------------------------------
    def api(self, method: str, path: str, body=None, timeout: float = 60):
        request = urllib.request.Request(
            f"{self.url}/hub/api{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
        return json.loads(text) if text else None

    def server_api(self, user: str, method: str, path: str, body=None):
        request = urllib.request.Request(
            f"{self.url}/user/{user}/api{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read() or b"null")

    def start_server(self, user: str) -> None:
        """Start ``user``'s server and wait for it: the hub's progress events, to 'ready'."""
        self.api("POST", f"/users/{user}/server")
        request = urllib.request.Request(
            f"{self.url}/hub/api/users/{user}/server/progress",
            headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=STEP_TIMEOUT) as events:
            for line in events:
                if line.startswith(b"data:"):
                    event = json.loads(line[5:])
                    if event.get("ready"):
                        return
                    assert not event.get("failed"), f"{user}: {event}"
        raise AssertionError(f"{user}'s server never said it was ready\n{self.tail()}")

    def stop_server(self, user: str) -> None:
        self.api("DELETE", f"/users/{user}/server", timeout=180)  # slow_stop_timeout: done
        assert not self.api("GET", f"/users/{user}")["servers"], f"{user}'s server still runs"

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "jupyterhub.log").read_text()[-4000:]
        return "(no log)"

    # --- tear down --------------------------------------------------------------------
    def close(self) -> None:
        """Stop the hub and its proxy, end the users' processes, remove users and folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # it stops the servers and the proxy
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((self.base / "proxy.pid").read_text()), signal.SIGKILL)
        for uid in self.uids.values():
            left = processes(uid=uid)  # only on a failure: the users are ours, and so are these
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_gone(left, timeout=30)
        for user in self.users:
            subprocess.run(["userdel", "--remove", user], capture_output=True, timeout=60)
        for uid in self.uids.values():
            for directory in kernel_dirs(uid):
                shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(self.base, ignore_errors=True)


# --- in a user's kernel, through the proxy ---------------------------------------------------

COUNT_CAPTURES = """
import labkit.capture.capture as _capture
_modes = []
_enter = _capture.Capture.__enter__
def _counted(self):
    _modes.append(self.mode)
    return _enter(self)
_capture.Capture.__enter__ = _counted
"""

ONE_PORT = """
import os, socket
from labkit import Capture, TCPServer
mine = os.environ["USER"].encode()
with TCPServer("echo", port=8080) as server, Capture(server) as wire:
    port = server.port
    print("listening", flush=True)
    with open({go!r}) as go:      # opened for writing by the test once both users listen
        go.read()
    with socket.create_connection(server.address) as s:
        s.sendall(mine); s.recv(100)
from scapy.all import Raw
payloads = sorted({{bytes(p[Raw].load) for p in wire.packets if Raw in p}})
print(wire.mode, port, payloads)
"""


class Kernel:
    """A user's lab kernel, started as JupyterLab starts a notebook's (a session), driven
    over the kernel's websocket through the hub's proxy."""

    def __init__(self, hub: Hub, user: str, path: str):
        from websockets.sync.client import connect

        session = hub.server_api(user, "POST", "/sessions", {
            "path": path, "type": "notebook", "kernel": {"name": "netlab"}})
        self.id, self.user = session["kernel"]["id"], user
        ws_url = hub.url.replace("http", "ws") + f"/user/{user}/api/kernels/{self.id}/channels"
        self.ws = connect(ws_url, additional_headers={"Authorization": f"token {hub.token}"},
                          open_timeout=120, max_size=None).__enter__()
        self.session = uuid.uuid4().hex

    def run(self, code: str, on_text=None) -> tuple[str, list[str]]:
        """Execute ``code``; returns (status, the texts it printed or raised)."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": self.session,
                       "username": self.user, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
        status, texts, idle = None, [], False
        deadline = time.monotonic() + CELL_TIMEOUT
        while status is None or not idle:
            message = json.loads(self.ws.recv(timeout=max(1.0, deadline - time.monotonic())))
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                texts.append(content["text"])
                if on_text:
                    on_text(content["text"])
            elif kind == "error":
                texts.append(f"{content['ename']}: {content['evalue']}")
            elif kind == "execute_reply":
                status = content["status"]
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
        return status, texts

    def close(self) -> None:
        self.ws.__exit__(None, None, None)


def _run_notebook(hub: Hub, user: str) -> dict:
    """Notebook 01 of the user's own copy, cell by cell, in a new lab kernel."""
    path = f"netlab/{NOTEBOOK}"
    notebook = nbformat.read(Path(f"~{user}").expanduser() / path, as_version=4)
    kernel = Kernel(hub, user, path)
    try:
        assert kernel.run(COUNT_CAPTURES)[0] == "ok"
        failed = []
        cells = [c for c in notebook.cells if c.cell_type == "code"]
        for number, cell in enumerate(cells):
            status, texts = kernel.run(cell.source)
            if status != "ok":
                failed.append((number, "".join(texts)[-500:]))
        status, texts = kernel.run("import json; print(json.dumps(_modes))")
        assert status == "ok", texts
        modes = json.loads(texts[-1])
    finally:
        kernel.close()
    return {"user": user, "cells": len(cells), "failed": failed, "modes": modes}


def _same_port_at_once(hub: Hub, users: list[str], fifo_dir: Path) -> dict[str, str]:
    """Both users capture on port 8080 of their own network at the same moment: each
    listens and captures, then (both listening) each talks to its own server."""
    kernels, gos, listening = {}, {}, threading.Semaphore(0)
    for user in users:
        gos[user] = fifo_dir / f"go-{user}"
        os.mkfifo(gos[user], 0o600)
        os.chown(gos[user], hub.uids[user], -1)
        kernels[user] = Kernel(hub, user, f"netlab/{NOTEBOOK}")
    results: dict[str, str] = {}

    def capture(user: str) -> None:
        status, texts = kernels[user].run(
            ONE_PORT.format(go=str(gos[user])),
            on_text=lambda text: "listening" in text and listening.release())
        results[user] = texts[-1].strip() if status == "ok" else f"{status}: {texts}"

    threads = [threading.Thread(target=capture, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    try:
        for _ in users:  # both captures run before either user sends a byte
            assert listening.acquire(timeout=CELL_TIMEOUT), f"not listening: {results}"
    finally:
        for go in gos.values():  # opening a fifo's write end lets its reader go on
            with contextlib.suppress(OSError):
                fd = os.open(go, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
        for thread in threads:
            thread.join(CELL_TIMEOUT)
        for kernel in kernels.values():
            kernel.close()
    return results


def _memory_mb(uid: int, field: str) -> int:
    """A memory figure (``Pss:`` shares libraries out, ``Rss:`` counts them whole) summed
    over all of a user's processes, in MB."""
    total = 0
    for pid in processes(uid=uid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(field):
                    total += int(line.split()[1])
    return round(total / 1024)


def _leftovers(hub: Hub, user: str) -> list[str]:
    """What of ``user`` is left: processes (and so network namespaces, which the lab kernel
    never pins to a file: each lives as long as a process is in it), kernel directories and
    anything else of theirs in /tmp, connection files, TCP sockets."""
    uid, home = hub.uids[user], Path(f"~{user}").expanduser()
    found = [f"process {pid}: {line}" for pid, line in processes(uid=uid).items()]
    found += [f"kernel directory {d}" for d in kernel_dirs(uid)]
    found += [f"/tmp: {p}" for p in Path("/tmp").iterdir()
              if _owner(p) == uid]
    found += [f"connection file {p}" for p in
              (home / ".local/share/jupyter/runtime").glob("kernel-*.json")]
    listening = [line for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[7] == str(uid)]
    found += [f"socket {line}" for line in listening]
    return found


def _owner(path: Path) -> int | None:
    try:
        return path.lstat().st_uid
    except OSError:
        return None


@pytest.fixture
def hub():
    why = _why_not()
    if why:
        pytest.skip(why)
    base = Path(tempfile.mkdtemp(prefix="netlab-hub-"))
    base.chmod(0o755)
    the_hub = Hub(base)
    try:
        yield the_hub
    finally:
        the_hub.close()


def test_a_class_on_a_real_jupyterhub(hub):
    figures: dict[str, object] = {}
    hub.install()
    figures["make hub (s)"] = round(hub.install_seconds)
    hub.add_users(USERS)
    hub.start()
    users = hub.users

    # every user's server at once, through the REST API
    started = time.monotonic()
    with ThreadPoolExecutor(len(users)) as pool:
        list(pool.map(hub.start_server, users))
    figures["users"] = len(users)
    figures["all servers ready (s)"] = round(time.monotonic() - started, 1)
    for user in users:
        home = Path(f"~{user}").expanduser()
        assert oct(home.stat().st_mode & 0o777) == "0o700", f"{home} is not private"
        assert (home / "netlab" / NOTEBOOK).is_file(), "the handout was not copied in"

    # notebook 01 in every user's lab kernel, through the proxy, at the same time
    started = time.monotonic()
    with ThreadPoolExecutor(len(users)) as pool:
        runs = list(pool.map(lambda user: _run_notebook(hub, user), users))
    figures["notebook 01 in all (s)"] = round(time.monotonic() - started, 1)
    for run in runs:
        assert run["failed"] == [], f"{run['user']}: cells failed: {run['failed']}"
        assert run["modes"] and set(run["modes"]) == {"live"}, run
    figures["captures live/replay"] = (
        f"{sum(r['modes'].count('live') for r in runs)}/"
        f"{sum(r['modes'].count('replay') for r in runs)}")
    for field in ("Pss:", "Rss:"):
        figures[f"memory per user, 01's kernel running (MB, {field[:3]})"] = sorted(
            _memory_mb(hub.uids[u], field) for u in users)

    # two users, one port, the same moment: each sees only their own packets
    fifo_dir = hub.base / "fifos"
    fifo_dir.mkdir(mode=0o711)
    a, b = users[:2]
    seen = _same_port_at_once(hub, [a, b], fifo_dir)
    for user in (a, b):
        assert seen[user] == f"live 8080 [{user.encode()!r}]", seen

    # stop every server through the API, its kernels still running
    kernels = {u: processes(uid=hub.uids[u], needle="ipykernel_launcher") for u in users}
    assert all(kernels.values()), f"a user has no kernel running: {kernels}"
    started = time.monotonic()
    with ThreadPoolExecutor(len(users)) as pool:
        list(pool.map(hub.stop_server, users))
    figures["all servers stopped (s)"] = round(time.monotonic() - started, 1)
    for user in users:
        wait_gone(processes(uid=hub.uids[user]), timeout=60)
    left = {u: _leftovers(hub, u) for u in users}
    figures["left after stopping"] = sum(len(v) for v in left.values())
    print("\nhub figures: " + json.dumps(figures), file=sys.stderr)
    assert not any(left.values()), left
