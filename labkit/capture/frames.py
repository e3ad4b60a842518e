"""Captured frames as the kernel gave them: bytes first, Scapy only when a view asks.

    >>> frames = Frames([Frame(raw, 1700000000_123456789, len(raw))])
    >>> frames[0]                # a Scapy packet, dissected now (and kept)
    >>> flow(raw)                # ('udp', '127.0.0.1', 40000, '127.0.0.1', 8080): no Scapy

A live capture stores each frame's bytes, its kernel timestamp in nanoseconds and its
original length; dissecting a packet with Scapy costs ~100x reading it, so reading
never waits for Scapy.  :func:`flow` and :func:`tcp_facts` read the few header fields
the capture needs itself (whose packet is it? has TCP settled?) straight from the bytes,
and :func:`plain_header` (``frames.header(i)``) what a table row needs of a plain TCP or
UDP frame, so a 10,000-packet table dissects only the frames a protocol view asks for.

A frame may be *cut*: past its memory limit a capture keeps only the headers
(``len(data) < wirelen``, as a snap length does); :func:`headers_end` says where they
end, and a cut frame's :class:`Header` still tells its payload's size.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple, overload

if TYPE_CHECKING:
    import mmap

    from scapy.packet import Packet

__all__ = ["Frame", "Frames", "Header", "flow", "tcp_facts", "plain_header", "headers_end"]

_ETH = 14                           # lo frames carry a 14-byte (all-zero) Ethernet header
_IPV4, _IPV6 = b"\x08\x00", b"\x86\xdd"
_PROTOCOLS = {6: "tcp", 17: "udp"}
_ICMP_QUOTES = {3, 4, 5, 11, 12}    # ICMP types that quote the packet they are about (Scapy's)


class Frame(NamedTuple):
    """One captured frame: its bytes, the kernel's timestamp (ns) and its original length
    (more than ``len(data)`` when the capture kept only its headers).

    Attributes:
        data: the bytes captured, from the Ethernet header on
        ns: the kernel's timestamp, in nanoseconds since the epoch
        wirelen: its length on the wire (more than ``len(data)`` when cut to its headers)
    """

    data: bytes
    ns: int
    wirelen: int


def headers_end(data: bytes | bytearray | memoryview | mmap.mmap, start: int = 0,
                size: int | None = None) -> int:
    """How many bytes of the frame at ``data[start:start + size]`` are its headers (Ethernet,
    IP, TCP or UDP): what a capture past its memory limit keeps.  Anything else (ICMP, IPv4
    fragments, IPv6 extension headers) is small or rare, and kept whole (``size``)."""
    size = len(data) - start if size is None else size
    kind = data[start + 12:start + 14]
    if kind == _IPV4 and size >= 34:
        if data[start + 20] & 0x1F or data[start + 21]:
            return size  # a fragment (MF or an offset): no transport header to cut after
        number, at = data[start + 23], 14 + (data[start + 14] & 0x0F) * 4
    elif kind == _IPV6 and size >= 54:
        number, at = data[start + 20], 54
    else:
        return size
    if number == 6 and size >= at + 13:
        return min(size, at + (data[start + at + 12] >> 4) * 4)
    if number == 17:
        return min(size, at + 8)
    return size


def _ip_header(data: bytes, at: int, version_type: bytes
               ) -> tuple[int, bytes, bytes, int, int] | None:
    """``(protocol number, src, dst, offset of the next header, payload length)`` or None."""
    if version_type == _IPV4 and len(data) >= at + 20:
        if int.from_bytes(data[at + 6:at + 8], "big") & 0x1FFF:
            return None  # a later fragment: no ports in it
        ihl = (data[at] & 0x0F) * 4
        total = int.from_bytes(data[at + 2:at + 4], "big")
        return data[at + 9], data[at + 12:at + 16], data[at + 16:at + 20], at + ihl, total - ihl
    if version_type == _IPV6 and len(data) >= at + 40:
        size = int.from_bytes(data[at + 4:at + 6], "big")
        return data[at + 6], data[at + 8:at + 24], data[at + 24:at + 40], at + 40, size
    return None


def _text(address: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(address) == 4 else socket.AF_INET6, address)


def flow(data: bytes) -> tuple[str, str, int, str, int] | None:
    """``(protocol, src, sport, dst, dport)`` of a TCP or UDP frame, or of the packet an
    ICMP error quotes; None for anything else (what Scapy's IPerror/TCPerror would say)."""
    kind = data[12:14]
    ip = _ip_header(data, _ETH, kind)
    if ip is None:
        return None
    number, src, dst, at, _size = ip
    icmp = (number == 1 and kind == _IPV4) or (number == 58 and kind == _IPV6)
    if icmp:
        if len(data) <= at or data[at] not in (_ICMP_QUOTES if number == 1 else {1}):
            return None
        ip = _ip_header(data, at + 8, kind)  # the quote follows the 8-byte ICMP header
        if ip is None:
            return None
        number, src, dst, at, _size = ip
    if number not in _PROTOCOLS or len(data) < at + 4:
        return None
    sport = int.from_bytes(data[at:at + 2], "big")
    dport = int.from_bytes(data[at + 2:at + 4], "big")
    return _PROTOCOLS[number], _text(src), sport, _text(dst), dport


def tcp_facts(data: bytes) -> tuple[tuple[bytes, bytes, bytes, bytes], str, int, int, int
                                    ] | None:
    """``(direction, flags, seq, ack, payload length)`` of a TCP frame (not a quoted one).

    ``direction`` is ``(src, sport, dst, dport)`` with addresses as raw bytes; flags in
    Scapy's letters ("S", "A", "F", "R", ...), as :class:`~labkit.capture.flows.TcpTracker`
    reads them.
    """
    ip = _ip_header(data, _ETH, data[12:14])
    if ip is None or ip[0] != 6 or len(data) < ip[3] + 20:
        return None
    _number, src, dst, at, size = ip
    ports = data[at:at + 4]
    seq = int.from_bytes(data[at + 4:at + 8], "big")
    ack = int.from_bytes(data[at + 8:at + 12], "big")
    header = (data[at + 12] >> 4) * 4
    bits = data[at + 13]
    flags = "".join(letter for bit, letter in enumerate("FSRPAUEC") if bits >> bit & 1)
    direction = (src, ports[:2], dst, ports[2:])
    return direction, flags, seq, ack, size - header


class Header(NamedTuple):
    """What a plain TCP or UDP frame says, read from its bytes (flags in Scapy's letters).

    ``size`` is the payload's length on the wire; ``payload`` what the capture kept of it
    (all of it, or nothing in a frame cut to its headers).

    Attributes:
        proto: ``"TCP"`` or ``"UDP"``
        src: the sender's address
        sport: the sender's port
        dst: the receiver's address
        dport: the receiver's port
        flags: TCP flags in Scapy's letters (``"SA"``); ``""`` for UDP
        seq: the TCP sequence number, as on the wire (0 for UDP)
        ack: the TCP acknowledgement number, as on the wire (0 for UDP)
        payload: the payload's bytes the capture kept
        size: the payload's length on the wire
    """

    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    flags: str = ""
    seq: int = 0
    ack: int = 0
    payload: bytes = b""
    size: int = 0

    @property
    def cut(self) -> bool:
        """Was the payload left out (the capture kept this frame's headers only)?"""
        return self.size > len(self.payload)


def plain_header(data: bytes, wirelen: int | None = None) -> Header | None:
    """The :class:`Header` of an Ethernet + IPv4/IPv6 + TCP/UDP frame with nothing unusual
    in it, or None: anything else (ICMP, IP options or fragments, extension headers,
    trailing bytes, odd lengths) is left to Scapy, so what this says Scapy says too.
    ``wirelen``: the frame's original length, for a frame cut to its headers.
    """
    kind = data[12:14]
    if kind == _IPV4:
        if len(data) < 34 or data[14] != 0x45 or data[20] & 0x3F or data[21]:
            return None  # not a 20-byte IPv4 header, or a fragment (MF set or an offset)
        number, at, end = data[23], 34, 14 + int.from_bytes(data[16:18], "big")
        src, dst = data[26:30], data[30:34]
    elif kind == _IPV6:
        if len(data) < 54 or data[14] >> 4 != 6:
            return None
        number, at, end = data[20], 54, 54 + int.from_bytes(data[18:20], "big")
        src, dst = data[22:38], data[38:54]
    else:
        return None
    # a frame cut to its headers by the capture: its original length is on record
    if end != max(len(data), wirelen or 0):
        return None  # padding or a cut frame: Scapy splits those its own way
    if number == 6 and end >= at + 20 and len(data) >= at + 20:
        header = (data[at + 12] >> 4) * 4
        if header < 20 or at + header > end or at + header > len(data):
            return None
        bits = data[at + 13]
        return Header("TCP", _text(src), int.from_bytes(data[at:at + 2], "big"), _text(dst),
                      int.from_bytes(data[at + 2:at + 4], "big"),
                      "".join(letter for bit, letter in enumerate("FSRPAUEC") if bits >> bit & 1),
                      int.from_bytes(data[at + 4:at + 8], "big"),
                      int.from_bytes(data[at + 8:at + 12], "big"), data[at + header:end],
                      end - at - header)
    if number == 17 and end >= at + 8 and len(data) >= at + 8 \
            and int.from_bytes(data[at + 4:at + 6], "big") == end - at:
        return Header("UDP", _text(src), int.from_bytes(data[at:at + 2], "big"), _text(dst),
                      int.from_bytes(data[at + 2:at + 4], "big"), "", 0, 0, data[at + 8:end],
                      end - at - 8)
    return None


def _bound_ports(proto: str) -> set[int]:
    """Ports on which Scapy dissects the payload as a protocol of its own (e.g. DNS on 53),
    as bound now (layers bind on import); every port when a binding is not by port."""
    from scapy.layers.inet import TCP, UDP

    guesses = (TCP if proto == "TCP" else UDP).payload_guess
    key = (proto, id(guesses), len(guesses))
    if _BOUND.get(proto, (None,))[0] != key:
        ports: set[int] = set()
        for fields, _cls in guesses:
            if not set(fields) <= {"sport", "dport"}:
                ports = _EVERY_PORT
                break
            ports.update(fields.values())
        _BOUND[proto] = (key, ports)
    return _BOUND[proto][1]


_KEPT_PAYLOAD = 256  # bytes of payload a cached header keeps (Frames.header slices longer)


class _EveryPort(set[int]):
    def __contains__(self, port: object) -> bool:
        return True


_EVERY_PORT = _EveryPort()
_BOUND: dict[str, tuple[tuple[str, int, int], set[int]]] = {}


class Frames(Sequence["Packet"]):
    """Frames that act as a list of Scapy packets, each dissected on first look and kept.

    ``pkt.time`` is the kernel's stamp to the nanosecond (a Decimal), ``pkt.wirelen``
    the frame's original length.

    Attributes:
        frames: each :class:`Frame` as captured: bytes, timestamp and original length
    """

    def __init__(self, frames: list[Frame] | None = None) -> None:
        self.frames: list[Frame] = frames if frames is not None else []
        self._packets: dict[int, Any] = {}   # index -> Scapy packet
        # each frame's header, once; a big payload is left out (sliced again when asked for:
        # a copy of every payload would double a big capture's memory)
        self._plain: list[Header | None] | None = None
        self._big: set[int] = set()  # frames whose payload _plain left out

    @classmethod
    def of_packets(cls, packets: Sequence[Packet]) -> Frames:
        """Frames of Scapy packets (e.g. read from a pcapng file), the packets kept as they are."""
        made = cls([Frame(bytes(p), int(Decimal(str(p.time)) * 10**9),
                          p.wirelen or len(bytes(p))) for p in packets])
        made._packets = dict(enumerate(packets))
        return made

    def header(self, i: int) -> Header | None:
        """Frame ``i``'s :class:`Header` read from its bytes (no Scapy), or None if that
        frame needs Scapy: anything unusual, or ports Scapy dissects a protocol on (unless
        the frame was cut: Scapy would misread a payload that is not there)."""
        if self._plain is None or len(self._plain) != len(self.frames):
            self._read_headers()
        head = self._plain[i]  # type: ignore[index]
        if head is None:
            return None
        if i in self._big:
            data = self.frames[i].data
            head = head._replace(payload=data[len(data) - head.size:])  # (a whole frame's)
        bound = _bound_ports(head.proto)
        return None if (head.sport in bound or head.dport in bound) and not head.cut else head

    def _read_headers(self) -> None:
        self._plain, self._big = [], set()
        for i, (data, _ns, wirelen) in enumerate(self.frames):
            head = plain_header(data, wirelen)
            if head is not None and len(head.payload) > _KEPT_PAYLOAD:
                head = head._replace(payload=b"")
                self._big.add(i)
            self._plain.append(head)

    def cut(self) -> list[int]:
        """Indexes of the frames kept without their payload (headers only)."""
        return [i for i, (data, _ns, wirelen) in enumerate(self.frames) if len(data) < wirelen]

    def time(self, i: int) -> Decimal:
        """Frame ``i``'s time in seconds, as its packet's ``time`` says (no dissection)."""
        pkt = self._packets.get(i)
        if pkt is not None:
            stamp: Decimal = pkt.time  # (Scapy's EDecimal)
            return stamp
        return Decimal(self.frames[i].ns) / 10**9

    def packet(self, i: int) -> Packet:
        """Frame ``i`` as a Scapy packet, dissected on first look and kept."""
        if i < 0:
            i += len(self.frames)
        pkt = self._packets.get(i)
        if pkt is None:
            from scapy.layers.l2 import Ether
            from scapy.utils import EDecimal

            frame = self.frames[i]
            pkt = Ether(frame.data)
            pkt.time = EDecimal(frame.ns) / 10**9
            pkt.wirelen = frame.wirelen
            self._packets[i] = pkt
        return pkt

    @overload
    def __getitem__(self, i: int) -> Packet: ...
    @overload
    def __getitem__(self, i: slice) -> list[Packet]: ...
    def __getitem__(self, i: int | slice) -> Packet | list[Packet]:
        if isinstance(i, slice):
            return [self.packet(j) for j in range(*i.indices(len(self.frames)))]
        if not -len(self.frames) <= i < len(self.frames):
            raise IndexError(f"frame {i} of {len(self.frames)}")
        return self.packet(i)

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[Packet]:
        return (self.packet(i) for i in range(len(self.frames)))
