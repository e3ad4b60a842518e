"""Turn captured packets into conversation facts a student can read.

Random initial sequence numbers and ephemeral ports hide the story, so every
packet becomes a :class:`Segment` with role names (``client``, ``server``) and
sequence/acknowledgement numbers relative to each side's first SYN, exactly as
Wireshark shows them (also without a SYN, and when a new SYN reuses the ports).

    >>> segs = segments(packets, roles={8080: "server"})
    >>> segs[0].label
    'SYN seq=0'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, overload

from scapy.layers.inet import ICMP, IP, TCP, UDP, TCPerror, UDPerror
from scapy.packet import Packet
from scapy.plist import PacketList

from labkit.capture.frames import Frames, Header
from labkit.protocols import PROTOCOLS
from labkit.protocols.arp import describe_arp
from labkit.protocols.base import Dissection, Later
from labkit.protocols.base import ip_layer as _ip_layer
from labkit.protocols.icmp import describe_icmp, icmp6_layer
from labkit.protocols.ipfrag import Datagram, Fragment, Reassembly
from labkit.protocols.ndp import describe_ndp

__all__ = ["Segment", "Segments", "segments", "flag_names", "TcpTracker", "dissect", "NOT_KEPT"]

# The summary of a segment whose payload a capture past its memory limit did not keep.
NOT_KEPT = "(payload not kept: the capture's memory limit)"

# One direction of a TCP connection: (src, sport, dst, dport), addresses as text (or as
# raw bytes, where read from a frame)
Direction = tuple[Any, Any, Any, Any]

# Wireshark's order: what the segment is first, then what it acknowledges.
_FLAG_ORDER = [("S", "SYN"), ("F", "FIN"), ("R", "RST"), ("P", "PSH"), ("U", "URG"),
               ("A", "ACK"), ("E", "ECE"), ("C", "CWR")]


def dissect(packets: Frames | Iterable[Packet], meta: dict[str, Any] | None = None
            ) -> Dissection:
    """One look at ``packets`` through every registered protocol view (fresh state)."""
    return Dissection(PROTOCOLS, packets, meta)


def _describe_bytes(payload: bytes) -> str:
    if not payload:
        return ""
    shown = payload[:24]
    more = f" … (+{len(payload) - 24} bytes)" if len(payload) > 24 else ""
    return repr(shown) + more


def _describe(payload: bytes, proto: str, packet: Packet | Later[Packet],
              dissection: Dissection) -> str:
    """The protocol views' summary, else the bytes; ``packet`` may be a :class:`Later`
    (dissected only if some view might recognise the payload)."""
    if isinstance(packet, Later):
        text = dissection.describe_lazily(payload, proto, packet)
    else:  # a packet Scapy dissected: every view looks at it, as always
        text = dissection.describe(payload, packet)
    return _describe_bytes(payload) if text is None else text


def flag_names(flags: object) -> str:
    """``'SA'`` → ``'SYN-ACK'``, ``'PA'`` → ``'PSH-ACK'``."""
    text = str(flags)
    return "-".join(name for letter, name in _FLAG_ORDER if letter in text)


class _PacketSlot:
    """``Segment.packet``: a :class:`Later` stored in it is resolved on first read (and kept)."""

    @overload
    def __get__(self, seg: None, owner: type | None = None) -> None: ...
    @overload
    def __get__(self, seg: Segment, owner: type | None = None) -> Packet | None: ...
    def __get__(self, seg: Segment | None, owner: type | None = None) -> Packet | None:
        if seg is None:
            return None  # the dataclass's default
        value = seg.__dict__.get("_packet")
        if isinstance(value, Later):
            value = seg.__dict__["_packet"] = value()
        packet: Packet | None = value
        return packet

    def __set__(self, seg: Segment, value: Packet | Later[Packet] | _PacketSlot | None
                ) -> None:
        # the dataclass's __init__ passes this slot itself when no packet is given
        seg.__dict__["_packet"] = None if isinstance(value, _PacketSlot) else value


@dataclass
class Segment:
    """One captured packet, told as a fact of the conversation.

    Attributes:
        index: its row in the capture's table (0 for the first packet)
        time: seconds since the first packet of the capture
        src: who sent it, by role: ``"client"``, ``"server"``, ``"client 2"``, ...
        dst: who it went to, by role
        proto: ``"TCP"``, ``"UDP"``, ``"ICMP"``, ``"ICMPv6"``, ``"ARP"``, ``"NDP"`` (IPv6's
            neighbour discovery) or ``"IP"`` (a fragment)
        flags: its TCP flags, as Wireshark names them: ``"SYN-ACK"`` (``""`` if not TCP)
        seq: its TCP sequence number relative to the sender's SYN, as Wireshark shows it
        ack: its TCP acknowledgement number, relative; None without the ACK flag
        length: its payload's length on the wire, in bytes
        summary: what its payload is, in words (a protocol view's, or its first bytes)
        packet: the Scapy packet (dissected on first look), for the layers and fields
        dissection: the protocol views that described it (None: plain TCP/UDP/ICMP)
    """

    index: int
    time: float
    src: str
    dst: str
    proto: str
    flags: str = ""
    seq: int | None = None
    ack: int | None = None
    length: int = 0
    summary: str = ""
    # a segment made from a frame's bytes dissects its packet on first look
    packet: _PacketSlot = field(default=_PacketSlot(), repr=False)
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


class Segments(list[Segment]):
    """A capture's segments (a list), carrying what every view of them says first.

        >>> segs = wire.segments; segs.notice      # None, or e.g. "⚠ 3 packets were lost ..."

    Attributes:
        notice: what every view of them says first (None: nothing), e.g. packets lost
    """

    def __init__(self, segs: Iterable[Segment] = (), *, notice: str | None = None) -> None:
        super().__init__(segs)
        self.notice = notice


class _Roles:
    """Names endpoints: a lab host's addresses get its name (``hosts``: {address: host});
    known listening ports get their server's name; others are clients."""

    def __init__(self, roles: dict[int, str], hosts: dict[str, str] | None = None) -> None:
        self.by_port = dict(roles)
        self.hosts = hosts or {}
        self.clients: dict[tuple[str, int | None], str] = {}

    def host(self, ip: str) -> str:
        """A packet's end named by address alone (ARP, NDP, ICMP, fragments)."""
        return self.hosts.get(ip, ip)

    def name(self, ip: str, port: int | None) -> str:
        if ip in self.hosts:
            return self.hosts[ip]
        if port in self.by_port:
            return self.by_port[port]
        if self.hosts:  # a lab network's capture: an address of no lab host is shown as is
            return ip
        key = (ip, port)
        if key not in self.clients:
            n = len(self.clients) + 1
            self.clients[key] = "client" if n == 1 else f"client {n}"
        return self.clients[key]


class _Stream:
    """One TCP connection, a ``tcp.stream`` in Wireshark: each direction's base and progress.

    Wireshark's rule (epan/dissectors/packet-tcp.c, ``tcp_analyze_sequence_number``): the
    first packet seen in a direction sets its base - a SYN's own seq (so the SYN is 0), else
    seq-1 (so a capture begun mid-stream, or a RST answering a SYN, starts at 1) - and the
    first ACK sets the other direction's base to ack-1 if it is still unknown.

        >>> s = _Stream(); s.relative(("a", 1, "b", 2), 500, 77, "RA")  # nothing seen before
        (1, 1)
    """

    def __init__(self) -> None:
        self.base: dict[Direction, int] = {}  # direction -> raw seq 0
        self.sent: dict[Direction, int] = {}  # direction -> relative seq past its last new byte
        self.opened: set[Direction] = set()   # directions whose SYN we saw: seqs can be trusted

    def relative(self, key: Direction, seq: int, ack: int, flags: str
                 ) -> tuple[int, int | None]:
        """(seq, ack) of one packet going ``key``'s way, relative as Wireshark shows them."""
        back = (key[2], key[3], key[0], key[1])
        if "S" in flags:
            self.opened.add(key)
        if key not in self.base:
            self.base[key] = seq if "S" in flags else (seq - 1) % 2**32
        if "A" not in flags:
            return (seq - self.base[key]) % 2**32, None  # no ACK flag: the field means nothing
        if back not in self.base:  # a direction not seen yet: its ISN is what this acks, less 1
            self.base[back] = (ack - 1) % 2**32
        return (seq - self.base[key]) % 2**32, (ack - self.base[back]) % 2**32

    def resends(self, key: Direction, seq: int, length: int) -> bool:
        """Were all ``length`` bytes from relative ``seq`` on sent before (a retransmission)?"""
        if key in self.opened and seq + length <= self.sent.get(key, 0):
            return True
        self.sent[key] = max(self.sent.get(key, 0), seq + length)
        return False


class _Numbering:
    """The TCP streams of a capture, by address/port pair, as Wireshark tells them apart."""

    def __init__(self) -> None:
        # the sorted pair of endpoints -> its latest stream
        self.streams: dict[tuple[tuple[str, int], ...], _Stream] = {}

    def stream(self, src: str, sport: int, dst: str, dport: int, seq: int,
               flags: str) -> tuple[_Stream, Direction]:
        """The stream a packet belongs to, and the packet's direction key in it."""
        key = (src, sport, dst, dport)
        pair = tuple(sorted([(src, sport), (dst, dport)]))
        current = self.streams.get(pair)
        # packet-tcp.c, dissect_tcp(): a SYN (not SYN-ACK) whose seq is not its direction's
        # base opens a new stream on the same ports ("TCP Port numbers reused"); the same
        # seq again is the SYN retransmitted, in the same stream.
        opens = "S" in flags and "A" not in flags
        if current is None or (opens and key in current.base and current.base[key] != seq):
            current = self.streams[pair] = _Stream()
        return current, key


def segments(packets: Frames | Sequence[Packet] | PacketList, roles: dict[int, str],
             meta: dict[str, Any] | None = None, *,
             dissection: Dissection | None = None) -> list[Segment]:
    """Describe every packet (IPv4/IPv6 TCP, UDP, ICMP, ICMPv6; ARP and IPv6's neighbour
    discovery) with roles and relative numbers.

    ``packets`` is a list of Scapy packets, or a capture's :class:`Frames`: then plain
    TCP/UDP headers are read from the bytes, and Scapy dissects only the frames a protocol
    view needs (and, on first look, those a view reads ``seg.packet`` of), with the same
    result.  Payloads are described by the protocol views (``meta``, e.g. a TLS key log,
    goes to them), or by ``dissection`` if the caller has already made one of ``packets``.
    """
    if dissection is None:
        dissection = dissect(packets, meta)
    names = _Roles(roles, (meta or {}).get("hosts"))
    numbering = _Numbering()
    fragments = Reassembly(packets)
    out: list[Segment] = []
    frames = packets if isinstance(packets, Frames) else None
    t0 = float(_time(packets, 0)) if len(packets) else 0.0
    t = 0.0
    for n in range(len(packets)):
        head = frames.header(n) if frames is not None else None
        arp = None
        if head is None:
            pkt = packets[n]
            ip = _ip_layer(pkt)
            arp = describe_arp(pkt) if ip is None else describe_ndp(pkt)
            if ip is None and arp is None:
                continue
        # pcapng keeps microseconds: so do we.  Never earlier than the row above: on lo the
        # kernel stamps packets at more than one point, so a busy machine can hand us a
        # reply stamped a few microseconds before the request it answers (read in order).
        t = max(t, round(float(_time(packets, n)) - t0, 6))
        i = len(out)
        if arp is not None:
            sender, target, summary = arp
            out.append(Segment(i, t, names.host(sender), names.host(target),
                               "ARP" if ip is None else "NDP", summary=summary, packet=pkt))
        elif (piece := fragments.of(n)) is not None:
            out.append(_fragment_segment(i, t, piece, packets, names, dissection))
        elif frames is not None and head is not None:
            # read from a frame's bytes: its packet is dissected if asked for
            packet = Later(frames.packet, n)
            if head.proto == "TCP":
                out.append(_tcp_segment(i, t, head, packet, names, numbering, dissection))
            else:
                out.append(Segment(
                    i, t, names.name(head.src, head.sport), names.name(head.dst, head.dport),
                    "UDP", length=head.size,
                    summary=NOT_KEPT if head.cut else _describe(head.payload, "UDP", packet,
                                                                dissection),
                    packet=packet, dissection=dissection))
        elif icmp6_layer(pkt) is not None:
            out.append(_icmp_segment(i, t, pkt, names))
        elif TCP in pkt and not isinstance(pkt[TCP].underlayer, (TCPerror, UDPerror)):
            tcp = pkt[TCP]
            payload = bytes(tcp.payload)
            head = Header("TCP", ip.src, tcp.sport, ip.dst, tcp.dport, str(tcp.flags), tcp.seq,
                          tcp.ack, payload, _wire_size(pkt, ip, tcp, payload))
            out.append(_tcp_segment(i, t, head, pkt, names, numbering, dissection))
        elif UDP in pkt and ICMP not in pkt:
            udp = pkt[UDP]
            payload = bytes(udp.payload)
            size = _wire_size(pkt, ip, udp, payload)
            out.append(Segment(
                i, t, names.name(ip.src, udp.sport), names.name(ip.dst, udp.dport), "UDP",
                length=size, summary=NOT_KEPT if size > len(payload) else _describe(
                    payload, "UDP", pkt, dissection), packet=pkt, dissection=dissection))
        elif ICMP in pkt:
            out.append(_icmp_segment(i, t, pkt, names))
    return out


def _time(packets: Frames | Sequence[Packet] | PacketList, n: int) -> Decimal | float:
    stamp: Decimal | float = (packets.time(n) if isinstance(packets, Frames)
                              else packets[n].time)
    return stamp


def _wire_size(pkt: Packet, ip: Any, layer: Any, payload: bytes) -> int:
    """A Scapy packet's TCP/UDP payload size on the wire: ``len(payload)``, or, for a frame
    the capture cut to its headers, what its IP header says."""
    if not pkt.wirelen or pkt.wirelen <= len(pkt):
        return len(payload)
    from scapy.layers.inet import UDP

    if isinstance(layer, UDP):
        return int(layer.len) - 8
    ip_payload = ip.len - ip.ihl * 4 if ip.version == 4 else ip.plen
    return int(ip_payload - layer.dataofs * 4)


def _tcp_segment(i: int, t: float, head: Header, packet: Packet | Later[Packet], names: _Roles,
                 numbering: _Numbering, dissection: Dissection) -> Segment:
    stream, key = numbering.stream(head.src, head.sport, head.dst, head.dport, head.seq,
                                   head.flags)
    size = head.size
    seq, ack = stream.relative(key, head.seq, head.ack, head.flags)
    if size and stream.resends(key, seq, size):
        # every byte was sent before: TCP is sending it again (an ACK was late or lost)
        summary = f"TCP retransmission of bytes {seq} to {seq + size - 1}"
    elif head.cut:
        summary = NOT_KEPT
    else:
        summary = _describe(head.payload, "TCP", packet, dissection)
    return Segment(i, t, names.name(head.src, head.sport), names.name(head.dst, head.dport),
                   "TCP", flag_names(head.flags), seq, ack, size, summary, packet,
                   dissection)


def _icmp_segment(i: int, t: float, pkt: Packet, names: _Roles) -> Segment:
    ip = _ip_layer(pkt)
    inner = ip.payload.payload
    if UDPerror in pkt and not names.hosts:
        # On lo every end is 127.0.0.1: name both ends from the datagram the error quotes.
        err = pkt[UDPerror]
        src = names.name(inner.dst, err.dport) if err.dport in names.by_port else "kernel"
        dst = names.name(inner.src, err.sport)
    else:
        src, dst = names.host(ip.src), names.host(ip.dst)
    return Segment(i, t, src, dst, "ICMP" if ICMP in pkt else "ICMPv6",
                   summary=describe_icmp(pkt), packet=pkt)


def _fragment_segment(i: int, t: float, piece: tuple[Fragment, Datagram],
                      packets: Frames | Sequence[Packet] | PacketList, names: _Roles,
                      dissection: Dissection) -> Segment:
    """A fragment's row: the fragment itself, or (the one that makes its datagram whole)
    the datagram, as Wireshark shows them."""
    fragment, datagram = piece
    src, dst = names.host(datagram.src), names.host(datagram.dst)
    if datagram.completed_by != fragment.index:
        end = fragment.offset + fragment.length - 1
        more = "more follow" if fragment.more else "the last"
        return Segment(i, t, src, dst, "IP", length=fragment.length,
                       summary=f"IP fragment of {datagram.proto} id={datagram.ident}: bytes "
                               f"{fragment.offset}-{end}, {more}",
                       packet=packets[fragment.index])
    whole = _reassembled(packets[fragment.index], datagram.payload(packets))
    rows = ", ".join(f"#{f.index}" for f in datagram.fragments)
    note = f"reassembled from {len(datagram.fragments)} fragments ({rows})"
    if UDP in whole:
        udp = whole[UDP]
        payload = bytes(udp.payload)
        return Segment(i, t, names.name(datagram.src, udp.sport),
                       names.name(datagram.dst, udp.dport), "UDP", length=len(payload),
                       summary=f"{_describe(payload, 'UDP', whole, dissection)}; {note}",
                       packet=whole, dissection=dissection)
    if ICMP in whole:
        return Segment(i, t, src, dst, "ICMP", summary=f"{describe_icmp(whole)}; {note}",
                       packet=whole)
    return Segment(i, t, src, dst, "IP", length=datagram.size or 0,
                   summary=f"{datagram.proto} datagram id={datagram.ident}; {note}",
                   packet=whole)


def _reassembled(last: Packet, payload: bytes) -> Packet:
    """The whole datagram as one Scapy packet: the last fragment's headers, all the bytes."""
    from scapy.layers.l2 import Ether

    ip = last[IP].copy()
    ip.remove_payload()
    ip.flags, ip.frag, ip.len, ip.chksum = 0, 0, None, None
    whole = Ether(bytes(Ether(dst=last[Ether].dst, src=last[Ether].src) / ip / payload))
    whole.time = last.time
    return whole


class TcpTracker:
    """Knows, packet by packet, whether every TCP conversation seen has settled.

    Settled means: every SYN, FIN and data byte sent has been acknowledged (or the
    connection was reset), and no connection is half-closed.  A capture waits for
    this before it stops, so the last ACK of a teardown is never cut off.  A connection
    attempt that nothing answered (only SYNs, dropped by a firewall or met by an ICMP
    error) waits for nothing: its client has given up by the time a capture stops.
    """

    def __init__(self) -> None:
        self._next_seq: dict[Direction, int] = {}  # direction -> seq after its last byte/flag
        self._acked: dict[Direction, int] = {}     # direction -> highest ack received for it
        self._fins: dict[tuple[Any, ...], set[Direction]] = {}  # connection -> who sent FIN
        self._reset: set[tuple[Any, ...]] = set()
        self._only_syns: set[Direction] = set()    # directions that sent nothing but SYNs

    def _note_syn(self, key: Direction, flags: str, size: int) -> None:
        if set(flags) - {"E", "C"} == {"S"} and not size:   # a SYN (ECN bits or not)
            if key not in self._next_seq:
                self._only_syns.add(key)
        else:
            self._only_syns.discard(key)

    def _unanswered(self, key: Direction) -> bool:
        """Only SYNs went this way, and nothing ever came back."""
        back = (key[2], key[3], key[0], key[1])
        return key in self._only_syns and back not in self._next_seq and key not in self._acked

    @staticmethod
    def _conn(key: Direction) -> tuple[Any, ...]:
        """Both ends of a direction's connection, in one order (the same either way)."""
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
        self._note_syn(key, flags, len(tcp.payload))
        used = len(tcp.payload) + ("S" in flags) + ("F" in flags)
        if used:
            end = (tcp.seq + used) % 2**32
            self._next_seq[key] = end
        if "F" in flags:
            self._fins.setdefault(conn, set()).add(key)
        if "A" in flags:
            self._acked[back] = tcp.ack

    def settled(self) -> bool:
        """Has every TCP conversation seen so far settled (see the class docstring)?"""
        for key, end in self._next_seq.items():
            conn = self._conn(key)
            if conn in self._reset or self._unanswered(key):
                continue
            acked = self._acked.get(key)
            if acked is None or 0 < (end - acked) % 2**32 < 2**31:
                return False  # something this side sent is not acknowledged yet
        return all(len(dirs) != 1 for conn, dirs in self._fins.items() if conn not in self._reset)
