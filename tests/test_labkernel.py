"""The 'Python 3 (netlab)' kernel: installed, private network, ipc in a 0700 dir, cleaned up."""

import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import start_new_kernel
from leftovers import of_kernel, wait_gone

from labkit.net.kernel import DISPLAY_NAME, KERNEL_NAME, PROVISIONER_NAME, install
from labkit.net.kernel_dir import PREFIX, SWEEP_AFTER, hold, sweep


def run(client, code: str, timeout: float = 60) -> tuple[str, str]:
    """(printed text, status) of one cell."""
    out = []

    def keep(msg):
        content = msg["content"]
        out.append(content.get("text") or content.get("evalue") or "")

    reply = client.execute_interactive(code, timeout=timeout, output_hook=keep)
    return "".join(out).strip(), reply["content"]["status"]


def test_the_venv_has_the_lab_kernel_with_its_provisioner():
    spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    assert spec.display_name == DISPLAY_NAME
    assert spec.metadata["kernel_provisioner"]["provisioner_name"] == PROVISIONER_NAME
    assert spec.argv[1:4] == ["-m", "labkit.net.namespace", "--"]


@pytest.fixture
def lab_kernel():
    # the kernel decides its capture mode itself (CI's replay run sets LABKIT_CAPTURE)
    env = {k: v for k, v in os.environ.items() if k != "LABKIT_CAPTURE"}
    manager, client = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=60, env=env)
    yield manager, client
    client.stop_channels()
    if manager.has_kernel:
        manager.shutdown_kernel(now=True)


def test_a_lab_kernel_captures_live_in_its_own_network(lab_kernel):
    manager, client = lab_kernel
    runtime = Path(manager.ip).parent
    assert manager.transport == "ipc" and stat.S_IMODE(runtime.stat().st_mode) == 0o700
    text, status = run(client, """
import os, socket
from labkit import Capture, TCPServer
with TCPServer(port=80) as server, Capture(server) as wire:
    with socket.create_connection(server.address) as s:
        s.sendall(b"hi"); s.recv(10)
    port = server.port
print(os.environ["LABKIT_NETWORK"], port, wire.mode, [x.flags for x in wire.segments][:3])
""")
    assert status == "ok", text
    assert text.splitlines()[-1] == "private 80 live ['SYN', 'SYN-ACK', 'ACK']"


def test_interrupt_restart_and_shutdown_leave_nothing_behind(lab_kernel):
    manager, client = lab_kernel
    runtime, first_pid = Path(manager.ip).parent, manager.provisioner.pid
    request = client.execute("import time; print('sleeping', flush=True); time.sleep(60)")
    while True:                       # wait until the cell itself runs, then interrupt it
        msg = client.get_iopub_msg(timeout=30)
        if msg["msg_type"] == "stream" and "sleeping" in msg["content"]["text"]:
            break
    manager.interrupt_kernel()
    # The reply to *this* request: on a busy machine wait_for_ready() re-sends kernel_info
    # requests, and their late replies wait in the shell channel ahead of ours.
    reply = client.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != request:
        reply = client.get_shell_msg(timeout=30)
    assert reply["content"]["ename"] == "KeyboardInterrupt"

    manager.restart_kernel(now=False)
    client.wait_for_ready(timeout=60)
    assert run(client, "print(os.environ['LABKIT_NETWORK'] if 'os' in dir() else 'fresh')") == (
        "fresh", "ok")
    assert Path(manager.ip).parent == runtime and not Path(f"/proc/{first_pid}").exists()

    # the first kernel's watcher waits: the manager holds the directory across the restart
    assert runtime.exists() and list(runtime.glob("kernel-*"))

    pid = manager.provisioner.pid
    started = of_kernel(manager.connection_file)   # the kernel and the watchers
    client.stop_channels()
    manager.shutdown_kernel(now=False)
    assert not Path(f"/proc/{pid}").exists(), "the kernel process is still there"
    assert not runtime.exists(), "the private runtime directory (ipc sockets) was left behind"
    assert not Path(manager.connection_file).exists()
    assert wait_gone(started, timeout=30) == [], f"still running: {started}"


# --- installed by root for everyone ------------------------------------------------------

def test_the_kernelspec_is_readable_by_everyone():
    with tempfile.TemporaryDirectory() as scratch:  # not pytest's tmp_path: that is 0700
        _check_readable_by_everyone(Path(scratch))


def _check_readable_by_everyone(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    where = install(str(prefix))
    modes = {p.relative_to(prefix).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [prefix / "share", *prefix.rglob("*")] if p.is_relative_to(prefix / "share")}
    assert modes == {"share": 0o755, "share/jupyter": 0o755, "share/jupyter/kernels": 0o755,
                     "share/jupyter/kernels/netlab": 0o755,
                     "share/jupyter/kernels/netlab/kernel.json": 0o644}, modes
    if os.geteuid() != 0:
        return
    # root installed it: another user (nobody) lists the kernels and reads the spec
    tmp_path.chmod(0o755)
    prefix.chmod(0o755)
    read = ("import json, os, sys; d = sys.argv[1]; print(os.listdir(d)); "
            "print(json.load(open(d + '/netlab/kernel.json'))['display_name'])")
    done = subprocess.run(["/usr/bin/python3", "-c", read, str(where.parent)], user="nobody",
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, f"['netlab']\n{DISPLAY_NAME}\n"), done.stderr


# --- nothing left behind, however the kernel ends ----------------------------------------

HOLD_A_KERNEL = """
import sys
from jupyter_client.manager import start_new_kernel
manager, client = start_new_kernel(kernel_name="netlab", startup_timeout=60)
print(manager.connection_file, manager.ip, flush=True)
sys.stdin.read()   # until it is killed
"""


def _kernel_of_a_manager_killed(signum, tmp_path):
    """A process that holds a KernelManager, killed: the kernel, its directory and its
    connection file, as they were before the kill."""
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_A_KERNEL], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        connection, ip = holder.stdout.readline().split()
        started = of_kernel(connection)
    finally:
        holder.send_signal(signum)
        holder.communicate(timeout=60)
    return Path(connection), Path(ip).parent, started


# JupyterLab as `jupyter lab` runs it, with no terminal: on SIGINT it stops serving and leaves
# its kernels running (JupyterHub's single-user server does the same when the hub stops it).
# It says when it listens, as `labkit lab` does: a callback after the one that binds the port.
BY_HAND = """
import signal
import sys
from jupyterlab.labapp import LabApp
# as a spawner starts it: SIGINT raises KeyboardInterrupt (a shell's background job, as CI
# may run this suite, would hand it SIGINT ignored, and Python keeps it so)
signal.signal(signal.SIGINT, signal.default_int_handler)
server = LabApp.initialize_server(argv=sys.argv[1:])
server.io_loop.add_callback(lambda: print("open: http://127.0.0.1:%d/lab?token=%s"
                                          % (server.port, server.identity_provider.token),
                                          flush=True))
server.start()
"""


def _lab_stopped(signum, tmp_path, by_hand=False):
    """JupyterLab with one lab kernel running, stopped by ``signum``: the kernel's connection
    file, directory and processes before the stop. ``python -m labkit lab`` (``make lab``),
    or ``by_hand``: JupyterLab's own way of stopping."""
    import http.client
    import json
    import secrets

    runtime = tmp_path / "runtime"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    command = [sys.executable, "-m", "labkit", "lab", str(tmp_path)]
    if by_hand:
        command = [sys.executable, "-c", BY_HAND, "--ServerApp.ip=127.0.0.1",
                   "--ServerApp.port=0", f"--IdentityProvider.token={secrets.token_hex(24)}",
                   "--no-browser", f"--ServerApp.root_dir={tmp_path}", "--allow-root"]
    lab = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        port, token = re.match(r"open: http://127.0.0.1:(\d+)/lab\?token=(\w+)",
                               lab.stdout.readline()).groups()
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=90)
        conn.request("POST", "/api/kernels", body=json.dumps({"name": KERNEL_NAME}),
                     headers={"Authorization": f"token {token}"})
        response = conn.getresponse()
        assert response.status == 201, response.read()
        kernel_id = json.loads(response.read())["id"]
        connection = runtime / f"kernel-{kernel_id}.json"
        directory = Path(json.loads(connection.read_text())["ip"]).parent
        _wait_until_ready(connection)
        started = of_kernel(connection)
    finally:
        if by_hand:
            _stop_as_jupyterhub_does(lab)
        else:
            lab.send_signal(signum)
            lab.communicate(timeout=60)
    return connection, directory, started


def _stop_as_jupyterhub_does(server: subprocess.Popen) -> None:
    """LocalProcessSpawner.stop(): SIGINT, 10 s; SIGTERM, 5 s; SIGKILL.  (Once, in a fresh
    CI run on a busy machine, the server still ran 60 s after its SIGINT: the spawner does
    not wait for that, and neither does this.)"""
    for signum, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 60)):
        server.send_signal(signum)
        try:
            server.communicate(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_until_ready(connection: Path) -> None:
    """The kernel answers: it runs (its launcher has started the directory's watcher)."""
    client = BlockingKernelClient(connection_file=str(connection))
    client.load_connection_file()
    client.start_channels(hb=False)  # wait_for_ready would trust a heartbeat not yet begun
    try:
        request = client.kernel_info()
        while client.get_shell_msg(timeout=60)["parent_header"].get("msg_id") != request:
            pass
    finally:
        client.stop_channels()


@pytest.mark.parametrize("end", [
    pytest.param(lambda tmp: _kernel_of_a_manager_killed(signal.SIGKILL, tmp),
                 id="kill -9 of the kernel manager's process"),
    pytest.param(lambda tmp: _lab_stopped(signal.SIGKILL, tmp), id="kill -9 of JupyterLab"),
    pytest.param(lambda tmp: _lab_stopped(signal.SIGINT, tmp), id="Ctrl-C of make lab"),
    pytest.param(lambda tmp: _lab_stopped(signal.SIGINT, tmp, by_hand=True),
                 id="SIGINT of a server that leaves its kernels running"),
])
def test_nothing_is_left_however_the_kernel_ends(end, tmp_path):
    connection, directory, started = end(tmp_path)
    assert any("ipykernel_launcher" in line for line in started.values()), started
    assert wait_gone(started, timeout=60) == [], f"still running: {started}"
    assert not directory.exists(), f"{directory} (its ipc sockets) was left behind"
    assert not connection.exists(), f"{connection} was left behind"


def test_the_sweep_removes_only_unused_directories_of_this_user(tmp_path):
    import socket

    unused, held, answering, young = (tmp_path / f"{PREFIX}{name}" for name in "abcd")
    for directory in (unused, held, answering, young):
        directory.mkdir(mode=0o700)
        (directory / "kernel-1").touch()
    (answering / "kernel-1").unlink()
    fd = hold(held)
    with socket.socket(socket.AF_UNIX) as listener:   # a kernel of an older labkit
        listener.bind(str(answering / "kernel-1"))
        listener.listen()
        old = time.time() - SWEEP_AFTER - 60
        for directory in (unused, held, answering):  # young: an older labkit's, starting
            os.utime(directory, (old, old))
        try:
            assert sweep(tmp_path) == [unused]
        finally:
            os.close(fd)
    assert not unused.exists() and held.exists() and answering.exists() and young.exists()
