"""Turn captured packets into conversation facts a student can read.

Random initial sequence numbers and ephemeral ports hide the story, so every
packet becomes a :class:`Segment` with role names (``client``, ``server``) and
sequence/acknowledgement numbers relative to each side's first SYN, exactly as
Wireshark shows them.

    >>> segs = segments(packets, roles={8080: "server"})
    >>> segs[0].label
    'SYN seq=0'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scapy.layers.inet import ICMP, IP, TCP, UDP, TCPerror, UDPerror
from scapy.packet import Packet

from labkit.protocols import PROTOCOLS
from labkit.protocols.base import Dissection
from labkit.protocols.base import ip_layer as _ip_layer

__all__ = ["Segment", "segments", "flag_names", "TcpTracker", "dissect"]

# Wireshark's order: what the segment is first, then what it acknowledges.
_FLAG_ORDER = [("S", "SYN"), ("F", "FIN"), ("R", "RST"), ("P", "PSH"), ("U", "URG"),
               ("A", "ACK"), ("E", "ECE"), ("C", "CWR")]


def dissect(packets, meta: dict | None = None) -> Dissection:
    """One look at ``packets`` through every registered protocol view (fresh state)."""
    return Dissection(PROTOCOLS, packets, meta)


def _describe_bytes(payload: bytes) -> str:
    if not payload:
        return ""
    shown = payload[:24]
    more = f" … (+{len(payload) - 24} bytes)" if len(payload) > 24 else ""
    return repr(shown) + more


def _describe(payload: bytes, pkt: Packet, dissection: Dissection) -> str:
    text = dissection.describe(payload, pkt)
    return _describe_bytes(payload) if text is None else text


def flag_names(flags) -> str:
    """``'SA'`` → ``'SYN-ACK'``, ``'PA'`` → ``'PSH-ACK'``."""
    text = str(flags)
    return "-".join(name for letter, name in _FLAG_ORDER if letter in text)


@dataclass
class Segment:
    """One captured packet, told as a fact of the conversation."""

    index: int
    time: float            # seconds since the first packet of the capture
    src: str               # role name, e.g. "client"
    dst: str
    proto: str             # "TCP", "UDP" or "ICMP"
    flags: str = ""        # "SYN-ACK", ... (TCP only)
    seq: int | None = None  # relative, as Wireshark shows it
    ack: int | None = None
    length: int = 0        # payload bytes
    summary: str = ""
    packet: Packet | None = field(default=None, repr=False)
    # the protocol views that described it (they label its ladder arrow); None: plain
    dissection: Dissection | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        """Arrow text for a ladder diagram: ``'PSH-ACK len=5 seq=1 ack=1'``."""
        if self.proto == "TCP":
            head = self.flags + (f" len={self.length}" if self.length else "")
            nums = f"seq={self.seq}" + (f" ack={self.ack}" if self.ack is not None else "")
            return f"{head} {nums}"
        if self.proto == "UDP":
            return f"UDP len={self.length}"
        return self.summary


class _Roles:
    """Names endpoints: known listening ports get their server's name; others are clients."""

    def __init__(self, roles: dict[int, str]):
        self.by_port = dict(roles)
        self.clients: dict[tuple[str, int | None], str] = {}

    def name(self, ip: str, port: int | None) -> str:
        if port in self.by_port:
            return self.by_port[port]
        key = (ip, port)
        if key not in self.clients:
            n = len(self.clients) + 1
            self.clients[key] = "client" if n == 1 else f"client {n}"
        return self.clients[key]


def segments(packets, roles: dict[int, str], meta: dict | None = None, *,
             dissection: Dissection | None = None) -> list[Segment]:
    """Describe every packet (IPv4/IPv6 TCP, UDP, ICMP) with roles and relative numbers.

    Payloads are described by the protocol views (``meta``, e.g. a TLS key log, goes
    to them), or by ``dissection`` if the caller has already made one of ``packets``.
    """
    if dissection is None:
        dissection = dissect(packets, meta)
    names = _Roles(roles)
    isn: dict[tuple, int] = {}   # (src ip, sport, dst ip, dport) -> first seq seen
    sent: dict[tuple, int] = {}  # the same key -> relative seq just past the last new byte
    opened: set[tuple] = set()   # keys whose SYN we saw: their seq numbers can be trusted
    out: list[Segment] = []
    t0 = float(packets[0].time) if len(packets) else 0.0
    t = 0.0
    for pkt in packets:
        ip = _ip_layer(pkt)
        if ip is None:
            continue
        # pcapng keeps microseconds: so do we.  Never earlier than the row above: on lo the
        # kernel stamps packets at more than one point, so a busy machine can hand us a
        # reply stamped a few microseconds before the request it answers (read in order).
        t = max(t, round(float(pkt.time) - t0, 6))
        i = len(out)
        if TCP in pkt and not isinstance(pkt[TCP].underlayer, (TCPerror, UDPerror)):
            tcp = pkt[TCP]
            key = (ip.src, tcp.sport, ip.dst, tcp.dport)
            back = (ip.dst, tcp.dport, ip.src, tcp.sport)
            if "S" in str(tcp.flags) or key not in isn:
                isn.setdefault(key, tcp.seq)
            if "S" in str(tcp.flags):
                opened.add(key)
            payload = bytes(tcp.payload)
            ack = None
            if "A" in str(tcp.flags):
                ack = (tcp.ack - isn[back]) % 2**32 if back in isn else tcp.ack
            seq = (tcp.seq - isn[key]) % 2**32
            if payload and key in opened and seq + len(payload) <= sent.get(key, 0):
                # every byte was sent before: TCP is sending it again (an ACK was late or lost)
                summary = f"TCP retransmission of bytes {seq} to {seq + len(payload) - 1}"
            else:
                summary = _describe(payload, pkt, dissection)
                sent[key] = max(sent.get(key, 0), seq + len(payload))
            out.append(Segment(
                i, t, names.name(ip.src, tcp.sport), names.name(ip.dst, tcp.dport), "TCP",
                flag_names(tcp.flags), seq, ack, len(payload), summary, pkt, dissection))
        elif UDP in pkt and ICMP not in pkt:
            udp = pkt[UDP]
            payload = bytes(udp.payload)
            out.append(Segment(
                i, t, names.name(ip.src, udp.sport), names.name(ip.dst, udp.dport), "UDP",
                length=len(payload), summary=_describe(payload, pkt, dissection), packet=pkt,
                dissection=dissection))
        elif ICMP in pkt:
            out.append(_icmp_segment(i, t, pkt, names))
    return out


def _icmp_segment(i: int, t: float, pkt: Packet, names: _Roles) -> Segment:
    icmp = pkt[ICMP]
    text = {(3, 3): "port unreachable", (3, 1): "host unreachable",
            (8, 0): "echo request", (0, 0): "echo reply"}.get((icmp.type, icmp.code),
                                                             f"type={icmp.type} code={icmp.code}")
    inner = icmp.payload
    if UDPerror in pkt:
        # The error quotes the datagram that caused it: name both ends from that.
        err = pkt[UDPerror]
        src = names.name(inner.dst, err.dport) if err.dport in names.by_port else "kernel"
        dst = names.name(inner.src, err.sport)
        text += f" (quotes UDP to port {err.dport})"
    else:
        src, dst = pkt[IP].src, pkt[IP].dst
    return Segment(i, t, src, dst, "ICMP", summary=f"ICMP {text}", packet=pkt)


class TcpTracker:
    """Knows, packet by packet, whether every TCP conversation seen has settled.

    Settled means: every SYN, FIN and data byte sent has been acknowledged (or the
    connection was reset), and no connection is half-closed.  A capture waits for
    this before it stops, so the last ACK of a teardown is never cut off.
    """

    def __init__(self):
        self._next_seq: dict[tuple, int] = {}  # direction -> seq after the last byte/flag sent
        self._acked: dict[tuple, int] = {}     # direction -> highest ack received for it
        self._fins: dict[tuple, set] = {}      # connection -> directions that sent FIN
        self._reset: set[tuple] = set()

    @staticmethod
    def _conn(key):
        a, b = key[:2], key[2:]
        return (a, b) if a <= b else (b, a)

    def add(self, pkt: Packet) -> None:
        ip = _ip_layer(pkt)
        if ip is None or TCP not in pkt or isinstance(pkt[TCP].underlayer, TCPerror):
            return
        tcp = pkt[TCP]
        flags = str(tcp.flags)
        key = (ip.src, tcp.sport, ip.dst, tcp.dport)
        back = (ip.dst, tcp.dport, ip.src, tcp.sport)
        conn = self._conn(key)
        if "R" in flags:
            self._reset.add(conn)
            return
        used = len(tcp.payload) + ("S" in flags) + ("F" in flags)
        if used:
            end = (tcp.seq + used) % 2**32
            self._next_seq[key] = end
        if "F" in flags:
            self._fins.setdefault(conn, set()).add(key)
        if "A" in flags:
            self._acked[back] = tcp.ack

    def settled(self) -> bool:
        for key, end in self._next_seq.items():
            conn = self._conn(key)
            if conn in self._reset:
                continue
            acked = self._acked.get(key)
            if acked is None or 0 < (end - acked) % 2**32 < 2**31:
                return False  # something this side sent is not acknowledged yet
        return all(len(dirs) != 1 for conn, dirs in self._fins.items() if conn not in self._reset)
