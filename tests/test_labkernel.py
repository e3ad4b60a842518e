"""The 'Python 3 (netlab)' kernel: installed, private network, ipc in a 0700 dir, cleaned up."""

import os
import stat
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import start_new_kernel

from labkit.net.kernel import DISPLAY_NAME, KERNEL_NAME, PROVISIONER_NAME


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

    pid = manager.provisioner.pid
    client.stop_channels()
    manager.shutdown_kernel(now=False)
    assert not Path(f"/proc/{pid}").exists(), "the kernel process is still there"
    assert not runtime.exists(), "the private runtime directory (ipc sockets) was left behind"
    assert not Path(manager.connection_file).exists()
