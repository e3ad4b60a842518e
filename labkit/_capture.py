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

import json
import os
import re
import socket
import sys
import threading
from pathlib import Path

from scapy.arch.linux import L2ListenSocket
from scapy.config import conf
from scapy.data import MTU
from scapy.layers.inet import ICMP, TCP, UDP, TCPerror, UDPerror
from scapy.layers.inet6 import ICMPv6DestUnreach
from scapy.plist import PacketList
from scapy.sendrecv import AsyncSniffer
from scapy.utils import rdpcap, wrpcapng

from ._flows import Segment, TcpTracker, segments

__all__ = ["Capture", "capture_mode", "DATA_DIR"]

DATA_DIR = Path(os.environ.get("LABKIT_DATA", Path(__file__).resolve().parent.parent / "data"))
MODES = ("auto", "live", "replay", "record")
READY_TIMEOUT = 5.0   # seconds for the sniffer to open its socket
SETTLE_TIMEOUT = 2.0  # seconds to wait for in-flight packets and final ACKs on exit
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

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


def _roles_of(targets) -> dict[int, str]:
    roles: dict[int, str] = {}
    for target in targets:
        if isinstance(target, bool):
            raise TypeError("Capture takes servers or port numbers, not a bool")
        if isinstance(target, int):
            if not 1 <= target <= 65535:
                raise ValueError(f"port {target} is out of range 1-65535")
            roles[target] = "server" if not roles else f"server {len(roles) + 1}"
        elif isinstance(target, dict):
            roles.update({int(p): str(n) for p, n in target.items()})
        elif hasattr(target, "roles"):
            roles.update(target.roles)
        elif hasattr(type(target), "port") and hasattr(target, "name"):
            try:
                roles[target.port] = target.name
            except RuntimeError as exc:  # a server that is not running has no port
                raise ValueError(
                    f"{target!r} is not running: start it first, "
                    "e.g. `with TCPServer() as server, Capture(server) as wire:`"
                ) from exc
        else:
            raise TypeError(
                f"Capture takes servers, port numbers or {{port: name}} dicts, "
                f"not {type(target).__name__}"
            )
    if not roles:
        raise ValueError("Capture needs at least one server or port to watch, e.g. Capture(server)")
    return roles


class Capture:
    """Packets exchanged with the given servers (or ports), as table, ladder or pcapng.

    ``name`` names the recording shown in replay mode (``data/<name>.pcapng``).
    ``keylog`` is a TLS key log file (``SSLContext.keylog_filename``): read on exit into
    ``meta["tls_keylog"]``, it decrypts TLS in the views and travels with recordings.
    """

    def __init__(self, *targets, name: str | None = None, iface: str = "lo", keylog=None):
        if name is not None and not _NAME.match(name):
            raise ValueError(
                f"recording name {name!r} must be letters, digits, '-', '_' or '.', "
                "like '01-handshake'"
            )
        self.roles = _roles_of(targets)
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
        self._done = False

    # -- starting and stopping ------------------------------------------------
    @property
    def bpf(self) -> str:
        ports = " or ".join(f"port {p}" for p in sorted(self.roles))
        # ICMP errors only when they quote one of our ports (anyone's ICMP on lo would
        # otherwise join the capture): the quoted TCP/UDP header follows the 8-byte ICMP
        # header and the quoted IP header (20 bytes IPv4, 40 bytes IPv6).
        icmp = " or ".join(f"icmp[28:2] = {p} or icmp[30:2] = {p}" for p in sorted(self.roles))
        icmp6 = " or ".join(f"icmp6[48:2] = {p} or icmp6[50:2] = {p}" for p in sorted(self.roles))
        return (f"({ports}) or (icmp and ({icmp})) or (icmp6 and ({icmp6}))"
                f" or (udp and dst port {self._fence_port})")

    @property
    def recording(self) -> Path | None:
        return DATA_DIR / f"{self.name}.pcapng" if self.name else None

    def __enter__(self) -> "Capture":
        if self.mode == "replay":
            where = self.recording.relative_to(DATA_DIR.parent) if self.recording else None
            print(f"▶ replay: showing the recording {where} ({self.reason}); "
                  "for live capture see `python -m labkit doctor`")
            return self
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
            self._sniffer.stop(join=False)
            raise RuntimeError(f"the sniffer on {self.iface} did not start within {READY_TIMEOUT}s")
        ports = ", ".join(f"{n} port {p}" for p, n in self.roles.items())
        print(f"● live capture on {self.iface}: {ports}")
        return self

    def _is_ours(self, pkt) -> bool:
        """Is this packet to or from our ports?  BPF can't look inside an ICMP error for
        the ports of the packet it quotes (other labs' errors share ``lo``), and a raw
        socket sees every packet until Scapy attaches its filter."""
        ours = self.roles.keys() | {self._fence_port}
        if ICMP in pkt or ICMPv6DestUnreach in pkt:
            quoted = next((pkt[q] for q in (UDPerror, TCPerror) if q in pkt), None)
            return quoted is not None and bool({quoted.sport, quoted.dport} & ours)
        for layer in (TCP, UDP):
            if layer in pkt:
                return bool({pkt[layer].sport, pkt[layer].dport} & ours)
        return False

    def _on_packet(self, pkt) -> None:
        outgoing = self._sock.last_outgoing  # set by the recv that produced pkt
        if not self._is_ours(pkt):
            return
        with self._changed:
            if UDP in pkt and pkt[UDP].dport == self._fence_port:
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
        if self._done:
            return False
        self._done = True
        if self.mode == "replay":
            if exc_type is None:  # a block that raised did not do what was recorded
                self._load_recording()
            return False
        self._fence.sendto(b"labkit fence", ("127.0.0.1", self._fence_port))
        with self._changed:
            # Wait for every packet already sent to arrive, and for the final ACKs of
            # anything that needs one (a condition, not a sleep).
            timeout = 0.2 if exc_type else SETTLE_TIMEOUT
            self.complete = self._changed.wait_for(self._quiet, timeout)
        self._sniffer.stop()
        dropped = _kernel_drops(self._sock.ins)
        if dropped:
            self.complete = False
            print(f"⚠ the kernel dropped {dropped} packets before the capture could read them: "
                  "this capture is incomplete (the machine is busy; run the cell again)")
        self._sock.close()
        self._fence.close()
        if self.keylog is not None:
            self._read_keylog()
        if self.mode == "record" and self.name:
            self._save_recording()
        return False

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
        if not self._done:
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
