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
import select
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

__all__ = ["inside", "new_namespace", "offloads", "link_events", "wait_until_up", "TOOL_PATH"]

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


def ipv6_settled() -> bool:
    """Has IPv6 on this thread's network finished starting: every interface's addresses
    usable (none tentative) and no multicast listener report (MLDv1) still to be sent?
    The kernel's own tables say: ``/proc/net/if_inet6`` and ``/proc/net/igmp6``."""
    with open("/proc/thread-self/net/if_inet6") as table:
        if any(int(line.split()[4], 16) & IFA_F_TENTATIVE for line in table):
            return False
    with open("/proc/thread-self/net/igmp6") as table:  # index, name, group, users, flags
        return not any(int(line.split()[4], 16) & MAF_TIMER_RUNNING for line in table)


IFA_F_TENTATIVE, MAF_TIMER_RUNNING = 0x40, 0x01


# -- waiting for interfaces to come up, on the kernel's own word (rtnetlink) --------------
RTMGRP_LINK = 1
RTM_NEWLINK, RTM_GETLINK, NLMSG_DONE = 16, 18, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_IFNAME, IFLA_OPERSTATE, IF_OPER_UP = 3, 16, 6
_NLMSG = struct.Struct("=IHHII")    # nlmsghdr: length, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_RTATTR = struct.Struct("=HH")      # rtattr: length, type


def link_events() -> socket.socket:
    """A netlink socket that hears every link change in this thread's network namespace:
    open it before bringing interfaces up, then :func:`wait_until_up` on it."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         socket.NETLINK_ROUTE)
    sock.bind((0, RTMGRP_LINK))
    return sock


def wait_until_up(watch: dict[socket.socket, set[str]], timeout: float) -> dict[str, str]:
    """Wait until every interface named is operationally up (carrier on, its queueing
    discipline attached: the kernel sends what it is given), each set of names in the
    namespace of its :func:`link_events` socket.  Returns {name: state} of those that were
    not up by ``timeout`` seconds ({} when all were).

    ``ip link set up`` returns before that: the kernel brings a link up a little later
    (linkwatch, up to a second on a busy machine), and drops what is sent before.
    """
    states: dict[socket.socket, dict[str, int]] = {sock: {} for sock in watch}
    for sock in watch:  # what the state is now; any change after comes as an event
        sock.send(_NLMSG.pack(_NLMSG.size + _IFINFO.size, RTM_GETLINK,
                              NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + _IFINFO.pack(0, 0, 0, 0, 0))
    deadline = time.monotonic() + timeout

    def waiting() -> list[socket.socket]:
        return [sock for sock, names in watch.items()
                if any(states[sock].get(name) != IF_OPER_UP for name in names)]

    while (pending := waiting()) and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select(pending, [], [], left)
        for sock in ready:
            states[sock].update(_operstates(sock.recv(1 << 16)))
    return {name: _OPER_NAMES.get(states[sock].get(name, 0), "unknown")
            for sock in waiting() for name in watch[sock]
            if states[sock].get(name) != IF_OPER_UP}


_OPER_NAMES = {0: "unknown", 1: "not present", 2: "down", 3: "lower layer down",
               4: "testing", 5: "dormant", 6: "up"}


def _operstates(data: bytes) -> dict[str, int]:
    """{interface: operstate} of the RTM_NEWLINK messages in one netlink read."""
    found, at = {}, 0
    while at + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, at)
        if length < _NLMSG.size:
            break
        if kind == RTM_NEWLINK:
            name, state, attr = None, None, at + _NLMSG.size + _IFINFO.size
            while attr + _RTATTR.size <= at + length:
                size, kind_ = _RTATTR.unpack_from(data, attr)
                if size < _RTATTR.size:
                    break
                value = data[attr + _RTATTR.size:attr + size]
                if kind_ == IFLA_IFNAME:
                    name = value.rstrip(b"\0").decode()
                elif kind_ == IFLA_OPERSTATE:
                    state = value[0]
                attr += (size + 3) & ~3
            if name is not None and state is not None:
                found[name] = state
        at += (length + 3) & ~3
    return found
