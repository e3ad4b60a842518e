"""Network namespaces from Python: make one, step a thread into it, configure it.

    >>> fd = new_namespace()                 # a new, empty network (alive while fd is open)
    >>> with inside(fd):                     # this thread only, for the block
    ...     _ip("link set lo up")            # iproute2, in this thread's namespace
    ...     _sysctl("net/ipv4/ip_forward", "1")
    ...     offloads("eth0", off=True)       # ethtool -K eth0 tx off tso off gso off gro off

The building blocks of lab hosts (:mod:`labkit.net.hosts`): the ``setns`` and ``unshare``
system calls by ctypes, the SIOCETHTOOL ioctl, and iproute2's ``ip`` where a command reads
better than netlink. Needs to be root in the namespace that makes them (the lab kernel is).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator

__all__ = ["inside", "new_namespace", "offloads", "TOOL_PATH"]

CLONE_NEWNET = 0x40000000
SIOCETHTOOL = 0x8946
# legacy ethtool "set" commands: tx checksum, TSO, GSO, GRO (each takes ethtool_value)
OFFLOADS_OFF = {"tx": 0x17, "tso": 0x1F, "gso": 0x24, "gro": 0x2C}
OFFLOADS_GET = {"tx": 0x16, "tso": 0x1E, "gso": 0x23, "gro": 0x2B}
TOOL_PATH = ":/usr/sbin:/sbin"  # ip and nft live here; a student's PATH may not have them
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def _this_thread_namespace() -> int:
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


@contextlib.contextmanager
def inside(namespace_fd: int) -> Iterator[None]:
    """This thread in the network namespace ``namespace_fd`` for the block, then back."""
    home = _this_thread_namespace()
    try:
        _setns(namespace_fd)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def new_namespace() -> int:
    """A new, empty network namespace, as an fd (it lives until the fd is closed)."""
    home = _this_thread_namespace()
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"unshare(CLONE_NEWNET): {os.strerror(code)}")
        try:
            return _this_thread_namespace()
        finally:
            _setns(home)
    finally:
        os.close(home)


def offloads(interface: str, off: bool = False) -> dict[str, bool]:
    """Read (or with ``off=True`` first turn off) an interface's segmentation offloads.

    ``ethtool -K IFACE tx off tso off gso off gro off``, by the SIOCETHTOOL ioctl (this
    thread's namespace). Returns {"tx": on?, "tso": ..., "gso": ..., "gro": ...}.
    """
    name = interface.encode()
    state = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for feature in OFFLOADS_GET:
            if off:
                _ethtool(sock, name, OFFLOADS_OFF[feature], 0)
            state[feature] = bool(_ethtool(sock, name, OFFLOADS_GET[feature], 0))
    return state


def _ethtool(sock: socket.socket, name: bytes, command: int, data: int) -> int:
    value = ctypes.create_string_buffer(struct.pack("II", command, data), 8)
    request = struct.pack("16sP", name, ctypes.addressof(value)).ljust(40, b"\0")
    fcntl.ioctl(sock, SIOCETHTOOL, request)
    return struct.unpack("II", value.raw)[1]


def _tool(name: str, package: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + TOOL_PATH)
    if found is None:
        raise RuntimeError(f"LabNetwork needs `{name}` from {package} (apt-get install "
                           f"{package}; `python -m labkit doctor` lists what is missing)")
    return found


def _ip(*lines: str, pass_fds: tuple[int, ...] = ()) -> None:
    """Run iproute2 commands (``ip -batch``) in this thread's network namespace."""
    done = subprocess.run([_tool("ip", "iproute2"), "-batch", "-"], input="\n".join(lines) + "\n",
                          text=True, capture_output=True, pass_fds=pass_fds, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip failed: {done.stderr.strip()}")


def _sysctl(name: str, value: str) -> None:
    """Set a sysctl of this thread's network namespace (``net/ipv4/ip_forward``)."""
    with open(f"/proc/sys/{name}", "w") as knob:
        knob.write(value)


def _disable_ipv6(interface: str) -> None:
    """No IPv6 on a link-side end: no router solicitations or MLD in the captures."""
    with contextlib.suppress(OSError):  # a kernel without IPv6 has none to disable
        _sysctl(f"net/ipv6/conf/{interface}/disable_ipv6", "1")
