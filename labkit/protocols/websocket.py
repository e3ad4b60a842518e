"""WebSocket in captures: frames read off the wire, on connections upgraded by a 101.

    >>> frame = parse_frames(bytes.fromhex("810548656c6c6f"))[0]
    >>> frame.describe()
    "WebSocket text FIN unmasked len=5 'Hello'"
    >>> frame.opcode is Opcode.TEXT, frame.opcode == 1
    (True, True)
    >>> websocket_frames(wire.segments)          # [(segment, WebSocketFrame), ...]

The ``websockets`` library does the real framing; this module only *reads* frames
for display, to show what the library put on the wire: the opcode, FIN, the client's
mask and the masked bytes.  In a capture, a TCP connection whose server answered
``101 Switching Protocols`` (with ``Upgrade: websocket``) shows its later payloads as
frames, in tables and ladders.

:class:`Opcode` and :class:`CloseCode` name the numbers (RFC 6455 sections 5.2 and 7.4,
and IANA's WebSocket registry): ``frame.opcode`` is an ``Opcode`` (an ``int`` too, so
``frame.opcode >= 8`` and ``print(frame.opcode)`` read as the number); a close frame's
``close_code`` is the number, equal to its ``CloseCode`` when the code is registered.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from labkit.protocols.base import (
    Connection,
    Frames,
    ProtocolView,
    Segment,
    headers,
    tcp_connection,
)

if TYPE_CHECKING:
    from scapy.packet import Packet

__all__ = ["WebSocketFrame", "Opcode", "CloseCode", "parse_frames", "websocket_frames",
           "WebSocketView"]


class Opcode(enum.IntEnum):
    """What a WebSocket frame carries (RFC 6455 section 5.2); the others are reserved."""

    CONTINUATION = 0x0    # the next piece of a message split over frames
    TEXT = 0x1            # UTF-8 text (a message, or its first piece)
    BINARY = 0x2          # bytes (a message, or its first piece)
    CLOSE = 0x8           # the closing handshake: a code and a reason
    PING = 0x9            # are you there? (answered by a PONG with the same data)
    PONG = 0xA            # the answer to a PING

    @property
    def kind(self) -> str:
        """The opcode as tables show it: ``'text'``, ``'close'``, ..."""
        return self.name.lower()

    @property
    def is_control(self) -> bool:
        """A control frame (close, ping, pong): FIN set, at most 125 bytes, never split."""
        return self >= 0x8


class CloseCode(enum.IntEnum):
    """Why a WebSocket connection closed: the code in a close frame (RFC 6455 section 7.4.1,
    and IANA's registry).  Codes 3000-4999 are the application's own and have no name here.
    """

    NORMAL_CLOSURE = 1000       # done: the purpose of the connection is fulfilled
    GOING_AWAY = 1001           # the server is shutting down, or a browser left the page
    PROTOCOL_ERROR = 1002       # the peer broke the WebSocket protocol
    UNSUPPORTED_DATA = 1003     # a kind of data the endpoint cannot take (e.g. binary)
    NO_STATUS_RCVD = 1005       # (never sent) the close frame had no code
    ABNORMAL_CLOSURE = 1006     # (never sent) the connection ended with no close frame
    INVALID_DATA = 1007         # the data did not match the type (e.g. text not UTF-8)
    POLICY_VIOLATION = 1008     # a message that breaks the endpoint's policy
    MESSAGE_TOO_BIG = 1009      # a message larger than the endpoint takes
    MANDATORY_EXTENSION = 1010  # the client needed an extension the server did not offer
    INTERNAL_ERROR = 1011       # the endpoint hit an unexpected condition (a handler raised)
    SERVICE_RESTART = 1012      # the server is restarting
    TRY_AGAIN_LATER = 1013      # the server is overloaded
    BAD_GATEWAY = 1014          # a gateway got a bad answer from the server behind it
    TLS_HANDSHAKE = 1015        # (never sent) the TLS handshake failed

    @property
    def meaning(self) -> str:
        """The code in words: ``'normal closure'``, ``'going away'``, ..."""
        return self.name.lower().replace("_", " ")


@dataclass(frozen=True)
class WebSocketFrame:
    """One WebSocket frame as it was on the wire (RFC 6455 section 5.2).

    Attributes:
        fin: True on the last (or only) frame of a message
        rsv: the three reserved bits (non-zero only with an extension, e.g. compression)
        opcode: what it carries, an :class:`Opcode` (``Opcode.TEXT``, ...)
        masked: True if it is masked (every client-to-server frame is)
        mask: the 4-byte masking key, or None if not masked
        payload: the payload as on the wire: still masked if ``masked``
        header_length: bytes of its header: 2 to 14
        missing: bytes of it the capture did not see (zeros in ``payload``)
    """

    fin: bool
    rsv: int
    opcode: Opcode
    masked: bool
    mask: bytes | None
    payload: bytes
    header_length: int
    missing: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "opcode", Opcode(self.opcode))  # (given as an int: named)

    @property
    def kind(self) -> str:
        """The opcode as a word: ``'text'``, ``'binary'``, ``'close'``, ``'ping'``, ..."""
        return self.opcode.kind

    @property
    def data(self) -> bytes:
        """The payload unmasked: byte i XOR mask[i % 4]."""
        if not self.mask:
            return self.payload
        return bytes(b ^ self.mask[i % 4] for i, b in enumerate(self.payload))

    @property
    def close_code(self) -> int | None:
        """A close frame's code, else None: ``frame.close_code == CloseCode.GOING_AWAY``."""
        if self.opcode is Opcode.CLOSE and len(self.data) >= 2:
            return int.from_bytes(self.data[:2], "big")
        return None

    def describe(self) -> str:
        """The frame in one line, as a capture's table shows it."""
        parts = ["WebSocket", self.kind]
        if self.fin:
            parts.append("FIN")
        parts.append("masked" if self.masked else "unmasked")
        if self.missing:
            parts.append(f"({self.missing} bytes not captured)")
        data = self.data
        if self.opcode is Opcode.CLOSE and self.close_code is not None:
            reason = data[2:].decode("utf-8", "replace")
            parts.append(f"code={self.close_code}" + (f" reason={reason!r}" if reason else ""))
        else:
            parts.append(f"len={len(data)}")
            if self.opcode in (Opcode.TEXT, Opcode.PING, Opcode.PONG) and data:
                text = data[:24].decode("utf-8", "replace")
                parts.append(repr(text) + (" …" if len(data) > 24 else ""))
            elif data:
                parts.append(repr(data[:16]) + (" …" if len(data) > 16 else ""))
        return " ".join(parts)


def parse_frames(data: bytes) -> list[WebSocketFrame]:
    """Split ``data`` into whole WebSocket frames; ``ValueError`` if it is not exactly that."""
    frames, used = _whole_frames(data)
    if used < len(data):
        _whole_frames(data[used:], strict=True)  # raises, saying what is wrong there
    return frames


def _whole_frames(data: bytes | bytearray | memoryview, *, strict: bool = False
                  ) -> tuple[list[WebSocketFrame], int]:
    """The whole frames at the start of ``data`` and how many bytes they use.

    A cut-off frame at the end stops the split (``strict``: raises ``ValueError``);
    bytes that cannot start a frame always raise.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_frames needs bytes (a TCP payload), not {type(data).__name__}")
    data = bytes(data)
    frames: list[WebSocketFrame] = []
    i = 0

    def cut(message: str) -> tuple[list[WebSocketFrame], int]:
        if strict:
            raise ValueError(message)
        return frames, i

    while i < len(data):
        if len(data) - i < 2:
            return cut(f"a frame header needs 2 bytes at least; {len(data) - i} left at {i}")
        b0, b1 = data[i], data[i + 1]
        opcode, masked, length = _opcode(b0, i), bool(b1 & 0x80), b1 & 0x7F
        head = 2
        if length == 126:
            if len(data) - i < 4:
                return cut(f"byte {i}: the 16-bit length is cut off")
            length = int.from_bytes(data[i + 2:i + 4], "big")
            head = 4
        elif length == 127:
            if len(data) - i < 10:
                return cut(f"byte {i}: the 64-bit length is cut off")
            length = int.from_bytes(data[i + 2:i + 10], "big")
            head = 10
        if opcode.is_control and (length > 125 or not b0 & 0x80):
            raise ValueError(f"byte {i}: a control frame must be FIN and at most 125 bytes")
        mask = None
        if masked:
            mask = data[i + head:i + head + 4]
            head += 4
        end = i + head + length
        if end > len(data) or (mask is not None and len(mask) < 4):
            return cut(f"byte {i}: the frame needs {end - i} bytes, only {len(data) - i} here")
        frames.append(WebSocketFrame(bool(b0 & 0x80), (b0 >> 4) & 0x7, opcode, masked, mask,
                                     data[i + head:end], head))
        i = end
    return frames, i


def _opcode(b0: int, i: int) -> Opcode:
    """The opcode in a frame's first byte (at ``i``); ``ValueError`` for a reserved one."""
    try:
        return Opcode(b0 & 0x0F)
    except ValueError:
        raise ValueError(f"byte {i}: opcode {b0 & 0x0F:#x} is reserved: not a WebSocket "
                         "frame") from None


def _frame_extent(data: bytes | bytearray, i: int) -> tuple[int, int] | None:
    """(header length, end) of the frame whose header starts at ``data[i]``; None: cut off."""
    if len(data) - i < 2:
        return None
    b0, b1 = data[i], data[i + 1]
    _opcode(b0, i)
    length, head = b1 & 0x7F, 2
    if length >= 126:
        head = 4 if length == 126 else 10
        if len(data) - i < head:
            return None
        length = int.from_bytes(data[i + 2:i + head], "big")
    head += 4 if b1 & 0x80 else 0
    return head, i + head + length


def websocket_frames(segs: Iterable[Segment]) -> list[tuple[Segment, WebSocketFrame]]:
    """``(segment, frame)`` for every WebSocket frame in captured segments, in order.

    Each direction of an upgraded connection is read as the byte stream it is, from
    the first byte after the HTTP upgrade, in sequence-number order: a frame that TCP
    split over several segments is put together and listed with the segment that
    completed it; a retransmitted or out-of-order segment adds its bytes once, where
    they belong.  Bytes the capture never saw inside a frame are zeros, counted in the
    frame's ``missing``; a gap where a frame header should be ends that direction.
    """
    from scapy.layers.inet import TCP

    # (connection, sender) -> raw seq of its first frame byte
    starts: dict[tuple[Connection | None, str], int | None] = {}
    # the same key -> [(raw seq, payload, segment), ...]
    chunks: dict[tuple[Connection | None, str], list[tuple[int, bytes, Segment]]] = {}
    for seg in segs:
        pkt = seg.packet
        if seg.proto != "TCP" or pkt is None or TCP not in pkt:
            continue
        tcp = pkt[TCP]
        payload = _tcp_payload(tcp)
        if not payload:
            continue
        connection = tcp_connection(pkt)
        if _is_upgrade(payload) and (connection, seg.src) not in starts:
            # the server's frames start after the 101's header; the client's where the
            # server's ack says its request ended
            head = payload.find(b"\r\n\r\n")
            starts[(connection, seg.src)] = (tcp.seq + head + 4) % 2**32 if head >= 0 else None
            starts[(connection, seg.dst)] = tcp.ack
        chunks.setdefault((connection, seg.src), []).append((tcp.seq, payload, seg))
    found: list[tuple[tuple[int, int], Segment, WebSocketFrame]] = []
    for key, first in starts.items():
        if first is not None:
            found += _frames_in_stream(first, chunks.get(key, []))
    found.sort(key=lambda item: item[0])
    return [(seg, frame) for _, seg, frame in found]


def _frames_in_stream(first: int, chunks: list[tuple[int, bytes, Segment]]
                      ) -> list[tuple[tuple[int, int], Segment, WebSocketFrame]]:
    """``((segment index, offset), segment, frame)`` for the frames of one direction.

    ``chunks`` are ``(raw seq, payload, segment)`` in capture order; ``first`` is the raw
    seq of the direction's first frame byte.
    """
    arrived = _Arrivals()
    for seq, payload, seg in chunks:
        offset = (seq - first) % 2**32
        if offset >= 2**31:               # starts before the first frame byte (the upgrade)
            offset -= 2**32
        arrived.add(offset, payload, seg)
    stream, size = arrived.stream, len(arrived.stream)
    out: list[tuple[tuple[int, int], Segment, WebSocketFrame]] = []
    i = 0
    while i < size and arrived.count(i, i + 2) == 2:  # no gap where a header should be
        try:
            extent = _frame_extent(stream, i)
        except ValueError:
            break                         # not frames after all
        if extent is None or extent[1] > size or arrived.count(i, i + extent[0]) < extent[0]:
            break                         # cut off by the end of the capture, or by a gap
        end = extent[1]
        try:
            frame = _whole_frames(bytes(stream[i:end]))[0][0]
        except ValueError:
            break                         # e.g. a control frame too long: not frames after all
        missing = (end - i) - arrived.count(i, end)
        if missing:
            frame = replace(frame, missing=missing)
        seg = arrived.completed_by(i, end)
        out.append(((seg.index, end), seg, frame))
        i = end
    return out


class _Arrivals:
    """One direction's bytes by stream offset, and which segment brought each first."""

    def __init__(self) -> None:
        self.stream = bytearray()
        self.runs: list[tuple[int, int, Segment]] = []  # disjoint (start, end, segment), sorted

    def add(self, offset: int, payload: bytes, seg: Segment) -> None:
        start, end = max(offset, 0), offset + len(payload)
        if end <= start:
            return
        if end > len(self.stream):
            self.stream.extend(bytes(end - len(self.stream)))
        i = bisect.bisect_left(self.runs, start, key=_start)
        if i and self.runs[i - 1][1] > start:
            i -= 1
        pieces: list[tuple[int, int]] = []
        at = start         # the parts of [start, end) no segment brought before
        while i < len(self.runs) and self.runs[i][0] < end:
            run_start, run_end, _ = self.runs[i]
            if run_start > at:
                pieces.append((at, run_start))
            at = max(at, run_end)
            i += 1
        if at < end:
            pieces.append((at, end))
        for lo, hi in pieces:
            self.stream[lo:hi] = payload[lo - offset:hi - offset]
            bisect.insort(self.runs, (lo, hi, seg), key=_start)

    def _overlapping(self, lo: int, hi: int) -> Iterator[tuple[int, int, Segment]]:
        i = bisect.bisect_left(self.runs, lo, key=_start)
        if i and self.runs[i - 1][1] > lo:
            i -= 1
        while i < len(self.runs) and self.runs[i][0] < hi:
            yield self.runs[i]
            i += 1

    def count(self, lo: int, hi: int) -> int:
        """How many bytes in [lo, hi) were captured."""
        return sum(min(hi, end) - max(lo, start) for start, end, _ in self._overlapping(lo, hi))

    def completed_by(self, lo: int, hi: int) -> Segment:
        """The segment after which every captured byte of [lo, hi) had arrived."""
        return max((seg for *_, seg in self._overlapping(lo, hi)), key=lambda seg: seg.index)


def _start(run: tuple[int, int, Segment]) -> int:
    return run[0]


def _tcp_payload(tcp: Packet) -> bytes:
    """A TCP layer's payload bytes, read off a Raw layer as they are (no Scapy rebuild)."""
    from scapy.packet import NoPayload, Raw

    layer = tcp.payload
    if type(layer) is Raw and isinstance(layer.payload, NoPayload):
        return bytes(layer.load)
    return bytes(layer)


def _is_upgrade(payload: bytes) -> bool:
    return payload.startswith(b"HTTP/1.1 101") and b"websocket" in payload.lower()


class WebSocketView(ProtocolView):
    """Frames on upgraded connections; the upgrade's GET and 101 marked on the ladder."""

    name = "WebSocket"

    def __init__(self) -> None:
        self.upgraded: dict[Connection, float] = {}  # TCP connection -> time of its 101

    def analyse(self, packets: Frames | Iterable[Packet], meta: dict[str, Any]) -> None:
        from scapy.layers.inet import TCP, TCPerror

        for head, later in headers(packets):
            if head is not None and (head.proto != "TCP" or not _is_upgrade(head.payload)):
                continue  # read from the frame's bytes: not an upgrade, no Scapy needed
            pkt = later()
            tcp = pkt.getlayer(TCP)
            if tcp is None or isinstance(tcp, TCPerror):
                continue  # a TCP header quoted by an ICMP error is not the connection's
            if not _is_upgrade(_tcp_payload(tcp)):  # the cheap test first: most packets fail
                continue
            connection = tcp_connection(pkt)
            if connection is not None:
                # frames come after this moment; the first 101 of a connection counts
                self.upgraded.setdefault(connection, float(pkt.time))

    def recognises(self, payload: bytes, pkt: Packet | None) -> bool:
        if not payload or not self.upgraded or _is_upgrade(payload) or pkt is None:
            return False  # the HTTP view names the response line
        connection = tcp_connection(pkt)
        since = None if connection is None else self.upgraded.get(connection)
        return since is not None and float(pkt.time) > since  # not the HTTP handshake

    def might_recognise(self, payload: bytes, proto: str) -> bool:
        return (proto == "TCP" and bool(payload) and bool(self.upgraded)
                and not _is_upgrade(payload))

    def describe(self, payload: bytes, pkt: Packet | None) -> str:
        try:
            frames, used = _whole_frames(payload)
        except ValueError:
            frames, used = [], 0
        if not frames:
            return f"WebSocket data, part of a frame ({len(payload)} bytes)"
        rest = len(payload) - used
        return " + ".join(f.describe() for f in frames) + (
            f" + the start of a frame ({rest} bytes)" if rest else "")

    def label(self, seg: Segment) -> str | None:
        """Ladder arrows on WebSocket connections say what they carry, not just TCP flags."""
        if seg.proto != "TCP" or not seg.length or seg.packet is None:
            return None
        if seg.summary.startswith("WebSocket "):
            return seg.summary.removeprefix("WebSocket ")
        if tcp_connection(seg.packet) in self.upgraded:
            if seg.summary.startswith("GET "):
                return f"{seg.summary}  (Upgrade: websocket)"
            if seg.summary.startswith("HTTP/1.1 101"):
                return seg.summary
        return None
