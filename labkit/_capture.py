"""Capture what crossed the loopback interface, or replay a recording of it.

    >>> with TCPServer() as server, Capture(server, name="hello") as wire:
    ...     with socket.create_connection(server.address) as s:
    ...         s.sendall(b"hello"); s.recv(1024)
    >>> wire.table(); wire.ladder(); wire.save("hello.pcapng")

Modes (``LABKIT_CAPTURE``, or chosen by :func:`capture_mode`):

* ``live``   - Scapy sniffs ``lo``; needs CAP_NET_RAW.
* ``replay`` - no privilege: the packet views show ``data/<name>.pcapng``, recorded by
  ``python -m labkit record`` running the same notebook cell.  Servers still run live.
* ``record`` - live, and the capture is also written to ``data/`` for replay mode.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import socketserver
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

from scapy.arch.linux import L2ListenSocket
from scapy.config import conf
from scapy.data import MTU
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, IPerror6, IPv6
from scapy.plist import PacketList
from scapy.sendrecv import AsyncSniffer
from scapy.utils import rdpcap, wrpcapng

from ._flows import Segment, TcpTracker, segments

__all__ = ["Capture", "capture_mode", "DATA_DIR"]

DATA_DIR = Path(os.environ.get("LABKIT_DATA", Path(__file__).resolve().parent.parent / "data"))
MODES = ("auto", "live", "replay", "record")
READY_TIMEOUT = 5.0   # seconds for the sniffer to open its socket
SETTLE_TIMEOUT = 2.0  # seconds to wait for in-flight packets and final ACKs on exit
STOP_TIMEOUT = 5.0    # seconds for the sniffer thread to end once told to
# A name becomes a file name, data/<name>.pcapng: no separators, no leading dot or dash.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
ONE_BLOCK = "a Capture records one `with` block; create a new Capture(...) for another"

conf.verb = 0

# Functions (packets, meta) run before a capture's packets are described, e.g. TLS
# record naming and decryption with meta["tls_keylog"] (labkit._tlsview adds one).
ANALYSERS: list = []


def capture_mode() -> tuple[str, str]:
    """Return ``(mode, reason)``: which capture mode applies here, and why."""
    wanted = os.environ.get("LABKIT_CAPTURE", "auto").strip().lower() or "auto"
    if wanted not in MODES:
        raise ValueError(
            f"LABKIT_CAPTURE={wanted!r} is not a capture mode; use one of {', '.join(MODES)}"
        )
    if wanted == "replay":
        return "replay", "LABKIT_CAPTURE=replay asks for recordings"
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
    except PermissionError:
        if wanted != "auto":
            raise PermissionError(
                f"LABKIT_CAPTURE={wanted} needs CAP_NET_RAW to sniff packets; run as root, "
                f"or `sudo setcap cap_net_raw+eip {os.path.realpath(sys.executable)}`, "
                "or unset LABKIT_CAPTURE to fall back to recordings"
            ) from None
        return "replay", "this Python may not open raw sockets (no CAP_NET_RAW)"
    if wanted == "record":
        return "record", "LABKIT_CAPTURE=record writes recordings to data/"
    return "live", "this Python may open raw sockets (CAP_NET_RAW)"


class _DirectionalListenSocket(L2ListenSocket):
    """Like Scapy's listen socket, but remembers whether each packet was outgoing.

    On ``lo`` the kernel hands a raw socket every packet twice: once as it leaves
    (PACKET_OUTGOING) and once as it arrives.  We show only the arriving copy and
    count the leaving ones to know when nothing is still in flight.
    """

    last_outgoing = False

    def recv_raw(self, x=MTU):
        from scapy.arch.linux import get_last_packet_timestamp

        pkt, sa_ll, ts = self._recv_raw(self.ins, x)
        if ts is None:
            ts = get_last_packet_timestamp(self.ins)
        self.last_outgoing = sa_ll[2] == socket.PACKET_OUTGOING
        return self.LL, pkt, ts


SOL_PACKET, PACKET_STATISTICS = 263, 6
SO_RCVBUFFORCE = 33  # Linux; not exported by Python's socket module
CAPTURE_BUFFER = 32 * 1024 * 1024  # bytes: a bulk transfer on lo must not overflow it


def _enlarge_receive_buffer(sock: socket.socket) -> None:
    """Ask for a big queue; SO_RCVBUFFORCE (root) may exceed the rmem_max limit."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, CAPTURE_BUFFER)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CAPTURE_BUFFER)


def _kernel_drops(sock: socket.socket) -> int:
    """Packets the kernel dropped because our queue was full (PACKET_STATISTICS)."""
    stats = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    return int.from_bytes(stats[4:8], sys.byteorder)


PROTOCOLS = ("tcp", "udp")
_IP_PROTO = {"tcp": 6, "udp": 17}  # the protocol byte of an IP header quoted in an ICMP error


class _Endpoint(NamedTuple):
    """One watched socket as it shows on the wire: protocol, address and port.

    ``protocol`` None means TCP and UDP, ``host`` None any address: that is all a bare
    port number tells us.  A server tells both, so packets that merely share its port
    number (another process, another loopback address, the other protocol) stay out.
    """

    port: int
    protocol: str | None = None
    host: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None

    def matches(self, protocol: str, src: str, sport: int, dst: str, dport: int) -> bool:
        if self.protocol not in (None, protocol):
            return False
        return any(port == self.port and (self.host is None or _ip(addr) == self.host)
                   for addr, port in ((src, sport), (dst, dport)))

    def bpf(self) -> str:
        """Packets of this socket, and ICMP errors quoting one (e.g. port unreachable)."""
        proto = self.protocol or "(tcp or udp)"
        if self.host is None:
            clauses = [f"({proto} and port {self.port})"]
        else:
            h, p = self.host, self.port
            clauses = [f"({proto} and ((src host {h} and src port {p})"
                       f" or (dst host {h} and dst port {p})))"]
        # The quoted IP header follows the 8-byte ICMP header (20 bytes for IPv4, 40 for
        # IPv6), then the quoted TCP/UDP ports; BPF compares at most 4 bytes at a time.
        for icmp, version, proto_at, src_at, dst_at, ports_at in (
                ("icmp", 4, 17, 20, 24, 28), ("icmp6", 6, 14, 16, 32, 48)):
            if self.host is not None and self.host.version != version:
                continue
            tests = [f"{icmp}[{proto_at}] = {_IP_PROTO[self.protocol]}"] if self.protocol else []
            sport = f"{icmp}[{ports_at}:2] = {self.port}"
            dport = f"{icmp}[{ports_at + 2}:2] = {self.port}"
            if self.host is None:
                tests.append(f"({sport} or {dport})")
            else:
                src = _bpf_address(icmp, src_at, self.host)
                dst = _bpf_address(icmp, dst_at, self.host)
                tests.append(f"(({src} and {sport}) or ({dst} and {dport}))")
            clauses.append(f"({icmp} and {' and '.join(tests)})")
        return " or ".join(clauses)


def _ip(address: str):
    ip = ipaddress.ip_address(address.split("%")[0])  # drop an IPv6 scope ("fe80::1%lo")
    if ip.version == 6 and ip.ipv4_mapped:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 travels as IPv4
    return ip


def _bpf_address(icmp: str, offset: int, ip) -> str:
    words = [ip.packed[i:i + 4] for i in range(0, len(ip.packed), 4)]
    return " and ".join(f"{icmp}[{offset + 4 * i}:4] = 0x{w.hex()}" for i, w in enumerate(words))


def _host_of(address) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP a server is bound to; None (any address) for a wildcard or a name."""
    try:
        ip = _ip(str(address[0]))
    except (ValueError, TypeError, IndexError):
        return None
    return None if ip.is_unspecified else ip


def _protocol_of(server) -> str | None:
    """'tcp' or 'udp' for a server; None if it does not tell (then both are watched).

    In order: a ``protocol`` attribute (for servers written elsewhere), the type of a
    ``socket`` attribute (socketserver servers), then the lab servers by class - they
    keep their sockets private, and none of them can switch protocol.
    """
    declared = getattr(server, "protocol", None)
    if declared in PROTOCOLS:
        return declared
    sock = getattr(server, "socket", None)
    if isinstance(sock, socket.socket):
        return {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp"}.get(sock.type)
    from ._dns import DNSServer
    from ._load import BackgroundServer
    from ._relay import UDPRelay
    from ._servers import TCPServer, UDPServer
    from ._websocket import WebSocketServer
    from ._wsgi import WSGIServer

    if isinstance(server, (TCPServer, WebSocketServer, WSGIServer, BackgroundServer)):
        return "tcp"  # TCPServer covers HTTPServer, TLSServer and HTTPSServer
    if isinstance(server, (UDPServer, UDPRelay, DNSServer)):
        return "udp"
    return None


def _port_number(port) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"Capture takes servers or port numbers, not {port!r}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1-65535")
    return port


def _server_endpoints(server, protocol: str | None) -> dict[int, tuple[str, _Endpoint]]:
    """{port: (role, endpoint)} of a running server object."""
    if isinstance(server, socketserver.BaseServer):  # e.g. http.server.HTTPServer
        address = server.server_address
        roles = {address[1]: "server"}
    else:
        try:
            if hasattr(type(server), "roles"):
                roles = dict(server.roles)
            else:
                roles = {server.port: server.name}
            address = getattr(server, "address", None)
        except RuntimeError as exc:  # a server that is not running has no port
            raise ValueError(
                f"{server!r} is not running: start it first, "
                "e.g. `with TCPServer() as server, Capture(server) as wire:`"
            ) from exc
    protocol = _protocol_of(server) or protocol
    # A relay's roles include its target, which may listen on another loopback address.
    target = getattr(server, "target", None)
    found = {}
    for port, role in roles.items():
        where = target if isinstance(target, tuple) and target[1:2] == (port,) else address
        found[_port_number(port)] = (str(role), _Endpoint(port, protocol, _host_of(where or ())))
    return found


def _watch(targets, protocol: str | None) -> tuple[dict[int, str], list[_Endpoint]]:
    """``({port: role}, endpoints)`` for Capture's arguments."""
    if protocol not in (None, *PROTOCOLS):
        raise ValueError(f"protocol must be 'tcp', 'udp' or None (both), not {protocol!r}")
    found: dict[int, tuple[str, _Endpoint]] = {}
    for target in targets:
        if isinstance(getattr(target, "server", None), socketserver.BaseServer):
            target = target.server  # serve_in_thread(...) itself rather than what it returns
        if isinstance(target, (int, bool)):
            port = _port_number(target)
            role = "server" if not found else f"server {len(found) + 1}"
            found[port] = (role, _Endpoint(port, protocol))
        elif isinstance(target, dict):
            for port, role in target.items():
                found[_port_number(port)] = (str(role), _Endpoint(port, protocol))
        elif (isinstance(target, socketserver.BaseServer) or hasattr(type(target), "roles")
              or (hasattr(type(target), "port") and hasattr(target, "name"))):
            found.update(_server_endpoints(target, protocol))
        else:
            raise TypeError(
                f"Capture takes servers, port numbers or {{port: name}} dicts, "
                f"not {type(target).__name__}"
            )
    if not found:
        raise ValueError("Capture needs at least one server or port to watch, e.g. Capture(server)")
    return {port: role for port, (role, _e) in found.items()}, [e for _r, e in found.values()]


def _check_name(name) -> None:
    if name is None:
        return
    if not isinstance(name, str):
        raise TypeError(f"recording name must be a str like '01-handshake', not {name!r}")
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"recording name {name!r} is not allowed: it names the file data/<name>.pcapng, "
            "so use 1-80 letters, digits, '-', '_' or '.', starting with a letter or digit, "
            "without '..', like '01-handshake'"
        )


class Capture:
    """Packets exchanged with the given servers (or ports), as table, ladder or pcapng.

    A server is watched by protocol, address and port: packets that only share its
    port number stay out.  A bare port number (or ``{port: name}``) watches TCP and
    UDP on any address; ``protocol="tcp"`` or ``"udp"`` narrows it.  ICMP errors
    quoting a watched packet (e.g. port unreachable) are captured too.

    ``name`` names the recording shown in replay mode (``data/<name>.pcapng``).
    ``keylog`` is a TLS key log file (``SSLContext.keylog_filename``): read on exit into
    ``meta["tls_keylog"]``, it decrypts TLS in the views and travels with recordings.
    A Capture records one ``with`` block; entering it again raises RuntimeError.
    """

    def __init__(self, *targets, name: str | None = None, iface: str = "lo", keylog=None,
                 protocol: str | None = None):
        _check_name(name)
        self.roles, self._endpoints = _watch(targets, protocol)
        self.name = name
        self.iface = iface
        self.mode, self.reason = capture_mode()
        self.meta: dict = {}       # saved beside a recording (e.g. a TLS key log)
        self.keylog = keylog       # path of a TLS key log to read on exit (live modes)
        self.complete = True       # False if the exit gave up waiting for in-flight packets
        self._packets: list = []
        self._tracker = TcpTracker()
        self._sent = self._arrived = 0
        self._changed = threading.Condition()
        self._sniffer: AsyncSniffer | None = None
        self._sock: _DirectionalListenSocket | None = None
        self._fence: socket.socket | None = None
        self._fence_port = 0
        self._fence_seen = False
        self._state = "new"  # -> "running" -> "stopping" -> "done"; never back

    # -- starting and stopping ------------------------------------------------
    @property
    def bpf(self) -> str:
        """The kernel's filter: our endpoints, ICMP errors quoting them, and the fence."""
        ours = " or ".join(e.bpf() for e in self._endpoints)
        return f"{ours} or (udp and dst host 127.0.0.1 and dst port {self._fence_port})"

    @property
    def recording(self) -> Path | None:
        return DATA_DIR / f"{self.name}.pcapng" if self.name else None

    def __enter__(self) -> "Capture":
        with self._changed:  # one block per Capture: a second sniffer would leak
            if self._state != "new":
                where = "is already recording" if self._state == "running" else "has ended"
                raise RuntimeError(f"this Capture {where}: {ONE_BLOCK}")
            self._state = "running"
        if self.mode == "replay":
            where = self.recording.relative_to(DATA_DIR.parent) if self.recording else None
            print(f"▶ replay: showing the recording {where} ({self.reason}); "
                  "for live capture see `python -m labkit doctor`")
            return self
        try:
            self._start_sniffer()
        except BaseException:
            self._shutdown()  # no thread or raw socket outlives a failed start
            self._state = "done"
            raise
        ports = ", ".join(f"{n} port {p}" for p, n in self.roles.items())
        print(f"● live capture on {self.iface}: {ports}")
        return self

    def _start_sniffer(self) -> None:
        # The fence: a datagram we send to ourselves on exit.  Once its arriving copy
        # is read, every packet sent before it has been read too (one FIFO queue).
        self._fence = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._fence.bind(("127.0.0.1", 0))
        self._fence_port = self._fence.getsockname()[1]
        self._sock = sock = _DirectionalListenSocket(iface=self.iface, filter=self.bpf)
        _enlarge_receive_buffer(sock.ins)
        _kernel_drops(sock.ins)  # reading the statistics resets them: count from here on
        ready = threading.Event()
        self._sniffer = AsyncSniffer(opened_socket=sock, prn=self._on_packet, store=False,
                                     started_callback=ready.set)
        self._sniffer.start()
        if not ready.wait(READY_TIMEOUT):
            raise RuntimeError(
                f"the sniffer on {self.iface} did not start within {READY_TIMEOUT}s")

    def _is_ours(self, pkt) -> bool:
        """Does this packet belong to our endpoints (or the fence)?  BPF can't parse an
        ICMP error's quote as Scapy does, and a raw socket sees every packet until Scapy
        attaches its filter: this check is the filter's twin, in Python."""
        quoted = ICMP in pkt or ICMPv6DestUnreach in pkt  # an error: judge the packet it quotes
        if quoted:
            ips, layers = (IPerror, IPerror6), (TCPerror, UDPerror)
        else:
            ips, layers = (IP, IPv6), (TCP, UDP)
        ip = next((pkt[layer] for layer in ips if layer in pkt), None)
        seg = next((pkt[layer] for layer in layers if layer in pkt), None)
        if ip is None or seg is None:
            return False
        protocol = "tcp" if isinstance(seg, TCP) else "udp"
        return self._is_fence(pkt) or any(e.matches(protocol, ip.src, seg.sport, ip.dst, seg.dport)
                   for e in self._endpoints)

    def _is_fence(self, pkt) -> bool:
        return (UDP in pkt and IP in pkt and pkt[UDP].dport == self._fence_port
                and pkt[IP].dst == "127.0.0.1")

    def _on_packet(self, pkt) -> None:
        outgoing = self._sock.last_outgoing  # set by the recv that produced pkt
        if not self._is_ours(pkt):
            return
        with self._changed:
            if self._is_fence(pkt):
                self._fence_seen = self._fence_seen or not outgoing
            elif outgoing:
                self._sent += 1
            else:
                self._arrived += 1
                self._packets.append(pkt)
                self._tracker.add(pkt)
            self._changed.notify_all()

    def _quiet(self) -> bool:
        return self._fence_seen and self._arrived >= self._sent and self._tracker.settled()

    def __exit__(self, exc_type, *_):
        with self._changed:
            if self._state == "new":
                raise RuntimeError("this Capture was never entered: use it as "
                                   "`with Capture(server) as wire:`")
            if self._state != "running":
                return False  # already stopped (an explicit second __exit__)
            self._state = "stopping"
        if self.mode == "replay":
            self._state = "done"
            if exc_type is None:  # a block that raised did not do what was recorded
                self._load_recording()
            return False
        try:
            self._fence.sendto(b"labkit fence", ("127.0.0.1", self._fence_port))
            with self._changed:
                # Wait for every packet already sent to arrive, and for the final ACKs of
                # anything that needs one (a condition, not a sleep).
                timeout = 0.2 if exc_type else SETTLE_TIMEOUT
                self.complete = self._changed.wait_for(self._quiet, timeout)
        finally:
            self._shutdown()
            self._state = "done"
        if self.keylog is not None:
            self._read_keylog()
        if self.mode == "record" and self.name:
            self._save_recording()
        return False

    def _shutdown(self) -> None:
        """Stop the sniffer thread (bounded wait) and close both sockets; safe to repeat."""
        sniffer, self._sniffer = self._sniffer, None
        thread = sniffer.thread if sniffer is not None else None
        deadline = time.monotonic() + STOP_TIMEOUT
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            try:  # repeated: a sniffer still starting up may miss the first stop
                sniffer.stop(join=False)  # wakes its select() through Scapy's pipe
            except Exception:  # noqa: BLE001 - not running yet, or already ended
                pass
            thread.join(0.05)
        if thread is not None and thread.is_alive():
            self.complete = False
            print(f"⚠ the sniffer did not stop within {STOP_TIMEOUT}s: this capture may be "
                  "incomplete")
        if self._sock is not None:
            if self._sock.closed:  # Scapy closes a socket whose reading raised
                self.complete = False
                print("⚠ the sniffer stopped early after an error: this capture is incomplete")
            elif dropped := _kernel_drops(self._sock.ins):
                self.complete = False
                print(f"⚠ the kernel dropped {dropped} packets before the capture could read "
                      "them: this capture is incomplete (the machine is busy; run the cell again)")
            self._sock.close()
            self._sock = None
        if self._fence is not None:
            self._fence.close()
            self._fence = None

    def _read_keylog(self) -> None:
        from ._tlsview import keylog_for

        path = Path(self.keylog)
        text = path.read_text() if path.exists() else ""
        self.meta["tls_keylog"] = keylog_for(self._packets, text)  # this capture's sessions only

    # -- recordings -------------------------------------------------------------
    def _save_recording(self) -> None:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        wrpcapng(str(self.recording), self._packets)
        meta = {"roles": {str(p): n for p, n in self.roles.items()}, **self.meta}
        self.recording.with_suffix(".json").write_text(json.dumps(meta, indent=1, sort_keys=True))

    def _load_recording(self) -> None:
        if self.recording is None:
            print("▶ replay: this capture has no name, so there is no recording to show; "
                  "its packet list is empty")
            return
        if not self.recording.exists():
            raise FileNotFoundError(
                f"no recording {self.recording}: run `python -m labkit record` "
                "(as root) to make the recordings"
            )
        self._packets = list(rdpcap(str(self.recording)))
        meta = json.loads(self.recording.with_suffix(".json").read_text())
        self.roles = {int(p): n for p, n in meta.pop("roles").items()}
        self.meta = meta

    # -- what the student looks at ---------------------------------------------------
    def _require_finished(self) -> None:
        if self._state == "new":
            raise RuntimeError("this Capture has not run yet: use it as "
                               "`with Capture(server) as wire:`, then look at wire")
        if self._state != "done":
            raise RuntimeError("the capture is still running: look at it after its `with` block")

    @property
    def packets(self) -> PacketList:
        """The captured packets (Scapy), one copy each, in arrival order."""
        self._require_finished()
        return PacketList(self._packets, name=self.name or "capture")

    @property
    def segments(self) -> list[Segment]:
        """Each packet as a :class:`Segment`: roles, flags, relative seq/ack, length, summary."""
        packets = self.packets
        for analyse in ANALYSERS:
            analyse(packets, self.meta)
        return segments(packets, self.roles)

    def table(self, *, start: int = 0, stop: int | None = None):
        """One row per packet; ``start``/``stop`` pick a slice of rows."""
        from ._views import Table

        return Table(self.segments[start:stop])

    def ladder(self, *, start: int = 0, stop: int | None = None, title: str | None = None):
        """A sequence diagram of the packets (a matplotlib Figure)."""
        from ._views import ladder

        return ladder(self.segments[start:stop], title=title)

    def save(self, path) -> Path:
        """Write the packets as pcapng (opens in Wireshark); returns the path.

        With a TLS key log (``meta["tls_keylog"]``) the file embeds it in a Decryption
        Secrets Block, so Wireshark and tshark decrypt the TLS with no settings.
        """
        self._require_finished()
        path = Path(path)
        if path.suffix != ".pcapng":
            raise ValueError(f"save() writes pcapng: give a path ending in .pcapng, not {path.name!r}")
        if self.meta.get("tls_keylog"):
            from ._tlsview import save_with_keylog

            return save_with_keylog(path, self._packets, self.meta["tls_keylog"])
        wrpcapng(str(path), self._packets)
        return path

    def __len__(self):
        return len(self._packets)

    def __repr__(self):
        return f"<Capture {self.mode} {self.name or ''} {len(self._packets)} packets>"
