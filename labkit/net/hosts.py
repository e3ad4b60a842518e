"""Lab hosts: network namespaces inside the lab kernel's own, joined by an impaired link.

    >>> with LabNetwork(Impairment(delay=0.020, loss=0.01, seed=1)) as net:
    ...     with net.on("server"):                  # sockets made here belong to "server"
    ...         server = TCPServer(host="10.0.0.2")
    ...     with net.on("client"):
    ...         s = socket.create_connection(server.address)

Each host is a network namespace labkit makes (kept alive by an open fd, so it vanishes
when we close it) with one interface, ``eth0``, and one address: client 10.0.0.1, server
10.0.0.2 (they exist only inside these namespaces). ``eth0`` is one end of a veth pair; the
other end stays in the namespace that made the network (the lab kernel's), where the
user-space ``Link`` (labkit/net/link.py, forwarding in a process of its own) carries
frames between the two hosts, so
``Capture(iface=net.interface("client"))`` sees the link from there.

``on(host)`` moves *this thread* into the host (``setns``) for the block, and back after,
even on an exception; other threads are not affected, and threads started inside the
block (a server's) stay on that host. Segmentation offloads are off on all four ends: every
frame is one real segment of at most one MTU, as on a wire.

Servers and captures on a host: inside ``on(host)`` a labkit server may bind that host's
address (``servers/base.check_host``), and ``Capture(server, iface="eth0")`` captures at
that host's end of the cable, both directions (``capture/live.py``).
``net.link.trace`` has every frame the link carried (its headers), with its fate and when
it was due and left; ``net.too_busy()`` says whether the link kept its timing.

Needs to be root in its namespace: the lab kernel is (a user + network namespace of its
own), so is ``python -m labkit.net.namespace -- COMMAND``, or real root.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator

from labkit.net.impairment import Impairment
from labkit.net.link import Lateness, Link

CLONE_NEWNET = 0x40000000
SIOCETHTOOL = 0x8946
# legacy ethtool "set" commands: tx checksum, TSO, GSO, GRO (each takes ethtool_value)
OFFLOADS_OFF = {"tx": 0x17, "tso": 0x1F, "gso": 0x24, "gro": 0x2C}
OFFLOADS_GET = {"tx": 0x16, "tso": 0x1E, "gso": 0x23, "gro": 0x2B}
HOSTS = {"client": "10.0.0.1", "server": "10.0.0.2"}
PREFIX = 24
_numbers = itertools.count(1)
_here = threading.local()  # .address: the lab host this thread is on, inside LabNetwork.on()
_libc = ctypes.CDLL(None, use_errno=True)


def current_lab_address() -> str | None:
    """The address of the lab host this thread is on (inside ``net.on(...)``), else None.

    Lab servers may bind it (labkit.servers.base.check_host): it exists only in a
    namespace labkit made, so nothing outside can reach a server listening there.
    """
    return getattr(_here, "address", None)


def _other_interfaces() -> list[str]:
    """This thread's network's interfaces other than loopback and LabNetworks' own cables:
    none in the lab kernel's private network; eth0 and the like in a machine's."""
    return [name for _, name in socket.if_nameindex()
            if name != "lo" and not re.fullmatch(r"lk\d+x\d+[cs]", name)]


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


def _ip(*lines: str, pass_fds: tuple[int, ...] = ()) -> None:
    """Run iproute2 commands (``ip -batch``) in this thread's network namespace."""
    tool = shutil.which("ip", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if tool is None:
        raise RuntimeError("LabNetwork needs iproute2's `ip` (apt-get install iproute2)")
    done = subprocess.run([tool, "-batch", "-"], input="\n".join(lines) + "\n", text=True,
                          capture_output=True, pass_fds=pass_fds, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip failed: {done.stderr.strip()}")


def _disable_ipv6(interface: str) -> None:
    """No IPv6 on our interfaces: no router solicitations or MLD in the captures."""
    with contextlib.suppress(OSError):  # a kernel without IPv6 has none to disable
        with open(f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6", "w") as knob:
            knob.write("1")


class LabNetwork:
    """Two lab hosts, client 10.0.0.1 and server 10.0.0.2, joined by an impaired link.

    ``LabNetwork(Impairment(...))`` impairs both directions alike (each with its own random
    sequence); ``LabNetwork(up=..., down=...)`` each direction its own (up: client→server).
    Use it as a context manager, or ``net = LabNetwork(...).start()`` ... ``net.stop()``.
    ``trace_limit``: how many frames ``net.link.trace`` keeps (0: none, fastest).
    """

    def __init__(self, impairment: Impairment | None = None, *, up: Impairment | None = None,
                 down: Impairment | None = None, trace_limit: int = 100_000):
        if impairment is not None and (up is not None or down is not None):
            raise ValueError("give one impairment for both directions, or up= and down=, "
                             "not both")
        for name, value in (("impairment", impairment), ("up", up), ("down", down)):
            if value is not None and not isinstance(value, Impairment):
                raise ValueError(f"{name} must be an Impairment(...), not {value!r}")
        both = impairment or Impairment()
        self.addresses = dict(HOSTS)
        number = next(_numbers)
        self._ends = {host: f"lk{os.getpid() % 100000}x{number}{host[0]}" for host in HOSTS}
        self.link = Link({"client→server": (self._ends["client"], self._ends["server"]),
                          "server→client": (self._ends["server"], self._ends["client"])},
                         {"client→server": up or both, "server→client": down or both},
                         trace_limit)
        self._hosts: dict[str, int] = {}
        self._state = "new"

    def interface(self, host: str) -> str:
        """The link-side interface of ``host``'s cable, in the namespace that made the
        network: ``Capture(iface=net.interface("client"))`` sees what the client sends."""
        self._check_host(host)
        return self._ends[host]

    @contextlib.contextmanager
    def on(self, host: str) -> Iterator[None]:
        """Run the block on ``host``: sockets (and threads) made in it belong to it."""
        self._check_host(host)
        if self._state != "running":
            raise RuntimeError(f"LabNetwork is {self._state}: start it first "
                               f"(`with LabNetwork(...) as net:` or `net.start()`)")
        before = current_lab_address()
        with inside(self._hosts[host]):
            _here.address = HOSTS[host]
            try:
                yield
            finally:
                _here.address = before

    def set_rto_min(self, host: str, seconds: float) -> None:
        """Give TCP on ``host`` a floor for its retransmission timer (Linux: 200 ms), on
        its route to the lab (``ip route ... rto_min``): a lesson that shows duplicate ACKs
        at work can keep a busy machine's late ACKs from firing the timer first.

            >>> net.set_rto_min("client", 1.0)
        """
        if not 0 < seconds <= 120:
            raise ValueError(f"rto_min must be between 0 and 120 seconds, not {seconds!r}")
        with self.on(host):
            _ip(f"route change 10.0.0.0/{PREFIX} dev eth0 proto kernel scope link "
                f"src {HOSTS[host]} rto_min {round(seconds * 1000)}ms")

    def lateness(self, tolerance: float = 0.001) -> dict[str, Lateness]:
        """Per direction, how many frames the link sent on more than ``tolerance`` s after
        they were due, and the worst: ``print(net.lateness()["client→server"])``."""
        return self.link.lateness(tolerance)

    def too_busy(self, tolerance: float = 0.001) -> str | None:
        """None if the link kept its timing; else one sentence a lesson prints before
        numbers that are the machine's, not the link's:

            >>> if (busy := net.too_busy()):
            ...     print(busy)
        """
        return self.link.too_busy(tolerance)

    def _check_host(self, host: str) -> None:
        if host not in HOSTS:
            raise ValueError(f"host must be one of {list(HOSTS)}, not {host!r}")

    def start(self) -> LabNetwork:
        if self._state != "new":
            raise RuntimeError("a LabNetwork runs once: make a new one")
        if os.geteuid() != 0:
            raise RuntimeError(
                "LabNetwork needs the lab kernel (its own network namespace, where it may "
                "make hosts): choose the 'Python 3 (netlab)' kernel, or run "
                "`python -m labkit.net.namespace -- python ...`; `python -m labkit doctor` "
                "says why it is not available here")
        if others := _other_interfaces():
            raise RuntimeError(
                f"LabNetwork adds network interfaces where it runs, and this network is a "
                f"machine's (it has {', '.join(others)}): run it in the lab kernel ('Python 3 "
                "(netlab)', a network of its own) or under `python -m labkit.net.namespace -- "
                "python ...`")
        self._state = "starting"
        try:
            self._build()
            self.link.start()
        except BaseException:
            self.stop()
            raise
        self._state = "running"
        return self

    def _build(self) -> None:
        try:
            for host in HOSTS:
                self._hosts[host] = new_namespace()
        except OSError as exc:
            raise RuntimeError(f"LabNetwork could not make a host namespace ({exc}); "
                               f"run `python -m labkit doctor`") from exc
        mtu = self.link.wire_mtu
        macs = {host: "02:00:0a:00:00:%02x" % (index + 1) for index, host in enumerate(HOSTS)}
        for host, fd in self._hosts.items():
            end = self._ends[host]
            _ip(f"link add {end} mtu {mtu} type veth peer name eth0 mtu {mtu} "
                f"address {macs[host]} netns /proc/self/fd/{fd}", pass_fds=(fd,))
            _disable_ipv6(end)
            offloads(end, off=True)
            _ip(f"link set {end} up")
        for host, fd in self._hosts.items():
            peer = next(other for other in HOSTS if other != host)
            with inside(fd):
                _disable_ipv6("eth0")
                offloads("eth0", off=True)
                _ip("link set lo up",
                    f"addr add {HOSTS[host]}/{PREFIX} dev eth0",
                    "link set eth0 up",
                    f"neigh replace {HOSTS[peer]} lladdr {macs[peer]} dev eth0 nud permanent")

    def stop(self) -> None:
        """Stop the link, delete the cables, close the hosts (their namespaces go)."""
        if self._state == "stopped":
            return
        self._state = "stopped"
        try:
            self.link.stop()
        finally:
            for end in self._ends.values():  # deleting one end deletes its peer too
                with contextlib.suppress(RuntimeError):
                    _ip(f"link del {end}")
            for fd in self._hosts.values():
                os.close(fd)
            self._hosts.clear()

    def __enter__(self) -> LabNetwork:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<LabNetwork {self._state}: {self.addresses}>"
