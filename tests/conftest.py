"""Shared fixtures for labkit's unit tests."""

import os
import shutil
import socket
import threading
import time

import pytest

from labkit import LocalCA
from labkit.capture import capture as _capture


def can_capture() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
        return True
    except PermissionError:
        return False


needs_capture = pytest.mark.skipif(not can_capture(), reason="live capture needs CAP_NET_RAW")


def echo_exchange(server, messages=(b"hello",)):
    """Send each message to an echo ``server`` and read its echo back in full."""
    with socket.create_connection(server.address, timeout=3) as s:
        for m in messages:
            s.sendall(m)
            got = b""
            while len(got) < len(m):
                got += s.recv(1024)


def eventually(condition, timeout: float = 5.0) -> bool:
    """Poll ``condition`` (bounded): for state another thread settles just after notifying."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.01)
    return True


def require_tool(name: str) -> str:
    """Path of a system tool; in CI its absence is a failure, elsewhere a skip."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: .ci/run (make system-tools) must install it")
        pytest.skip(f"{name} not installed (apt-get install {name})")
    return path


@pytest.fixture(autouse=True)
def _unit_tests_run_outside_the_lab_kernel(monkeypatch):
    """``LABKIT_CAPTURE=live`` (CI's run without root) demands live capture in the notebooks'
    lab kernels; these unit tests run in pytest's own process, which has no namespace of its
    own, so there they fall back to the usual automatic choice (and capture tests skip)."""
    if os.environ.get("LABKIT_CAPTURE", "").lower() == "live" and not can_capture():
        monkeypatch.delenv("LABKIT_CAPTURE")


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A private recordings folder, so tests never touch the committed data/."""
    monkeypatch.setattr(_capture, "DATA_DIR", tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def ca():
    """The lab CA of lesson 06, one per test module (modules may define their own)."""
    with LocalCA() as ca:
        yield ca


@pytest.fixture
def live(monkeypatch):
    if not can_capture():
        pytest.skip("live capture needs CAP_NET_RAW")
    monkeypatch.setenv("LABKIT_CAPTURE", "live")


@pytest.fixture
def lab_hosts():
    """The test runs in a fresh network namespace of its own, where a LabNetwork may put
    its cables (it needs root there: as a plain user the test skips)."""
    if os.geteuid() != 0:
        pytest.skip("LabNetwork needs root in its namespace (the lab kernel is; pytest's "
                    "own process is not, as a plain user)")
    from labkit.net.hosts import _ip, inside, new_namespace

    namespace = new_namespace()
    try:
        with inside(namespace):
            _ip("link set lo up")   # loopback servers keep working in here too
            yield
    finally:
        os.close(namespace)


@pytest.fixture
def receiver():
    """A UDP socket on loopback that datagrams can go to (and that nobody reads)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def nft():
    """nftables' nft, which LabNetwork.nft runs; in CI its absence is a failure."""
    from labkit.net.netns import TOOL_PATH

    if shutil.which("nft", path=os.environ.get("PATH", "") + TOOL_PATH) is None:
        if os.environ.get("CI"):
            pytest.fail("nft is missing: .ci/run (make system-tools) must install nftables")
        pytest.skip("nft not installed (apt-get install nftables)")
