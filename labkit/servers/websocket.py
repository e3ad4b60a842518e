"""A WebSocket server in a background thread, and WebSocket frames read off the wire.

    >>> async def echo(ws):                       # the student's code: plain websockets
    ...     async for message in ws:
    ...         await ws.send(message)
    >>> with WebSocketServer(echo) as server, Capture(server, name="08-echo") as wire:
    ...     async with websockets.connect(server.url, compression=None) as ws:
    ...         await ws.send("hello"); await ws.recv()
    >>> wire.table()     # the frames show as "WebSocket text FIN masked len=5 'hello'"

The ``websockets`` library does the real framing.  This module only *reads* frames
for display (:func:`parse_frames`), to show what the library put on the wire: the
opcode, FIN, the client's mask and the masked bytes.  Once labkit is imported, every
TCP connection whose server answered ``101 Switching Protocols`` shows its later
payloads as frames in capture tables and ladders.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

from labkit.capture.flows import PAYLOAD_DESCRIBERS
from labkit.servers import base
from labkit.servers.base import LabServer, ServerError

__all__ = ["WebSocketServer", "Frame", "parse_frames", "websocket_frames", "OPCODES"]

CLOSE_TIMEOUT = 1.0   # seconds a client gets to answer the server's close frame
OPCODES = {0x0: "continuation", 0x1: "text", 0x2: "binary",
           0x8: "close", 0x9: "ping", 0xA: "pong"}


# -- the server -----------------------------------------------------------------------------------
class WebSocketServer(LabServer):
    """Serve ``handler(websocket)`` (plain ``websockets`` code) on loopback, in a thread.

    The server runs ``websockets.asyncio.server.serve`` on its own event loop in a
    background thread, so the notebook's own loop (top-level ``await``) is free for
    clients.  Ready when ``__enter__`` returns (an error starting it is raised there);
    on exit it closes every connection (close code 1001, going away; a client that
    does not answer within ``close_timeout``, default 1 s, is disconnected) and joins.
    ``options`` go to ``serve()``; compression is off unless asked for, so frames on
    the wire are readable.  An exception raised by the handler comes back to the
    ``with`` block.  Like every labkit server it runs once: entering it again raises
    ``RuntimeError``.
    """

    def __init__(self, handler, *, host: str = "127.0.0.1", name: str = "server", **options):
        if not callable(handler):
            raise TypeError(
                f"WebSocketServer needs an async function handler(websocket), "
                f"not {type(handler).__name__}"
            )
        if not asyncio.iscoroutinefunction(handler):
            raise TypeError(
                f"handler {getattr(handler, '__name__', handler)!r} must be `async def`: "
                "websockets awaits it once per connection"
            )
        if "port" in options or "sock" in options:
            raise ValueError("WebSocketServer picks a free loopback port itself; drop port=/sock=")
        super().__init__(host=host, name=name)
        self.handler = handler
        self.options = {"compression": None, "close_timeout": CLOSE_TIMEOUT, **options}
        self._server = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stuck = False   # handlers still running when the server had to be done

    def _bound_address(self):
        return self._server.sockets[0].getsockname() if self._server else None

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT/`` (an IPv6 host in brackets), for ``websockets.connect``."""
        return self._url("ws", "/")

    async def _guarded(self, websocket):
        from websockets.exceptions import ConnectionClosed

        try:
            await self.handler(websocket)
        except ConnectionClosed:
            pass  # the client went away: normal life for a server
        except Exception as exc:
            self.record_error(exc)
            raise  # websockets closes that connection with 1011 (internal error)

    def _grace(self) -> float:
        """Seconds the closing handshakes get (all at once) before connections are cut."""
        return float(self.options.get("close_timeout") or 0) + 1.0

    async def _main(self) -> None:
        from websockets.asyncio.server import ServerConnection, serve

        accepted = weakref.WeakSet()  # every TCP connection, in its opening handshake or after

        class Tracked(ServerConnection):
            # server.all_connections lists a connection only once its opening handshake is
            # done: a client silent before that would hold stop() for open_timeout (10 s).
            def connection_made(self, transport):
                super().connection_made(transport)
                accepted.add(self)

        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        server = await serve(self._guarded, self.host, 0,
                             **{"create_connection": Tracked, **self.options})
        self._server = server
        self._ready.set()
        await self._stopped
        server.close()  # stop accepting; close every connection with 1001 (going away)
        closed = asyncio.ensure_future(server.wait_closed())
        if not (await asyncio.wait({closed}, timeout=self._grace()))[0]:
            for connection in list(accepted):
                connection.transport.abort()  # silent clients, in the handshake or after it
            # Handlers see their connection closed now; one that still runs is stuck
            # (asyncio.run cancels it when we return).
            self._stuck = not (await asyncio.wait({closed}, timeout=base.JOIN_TIMEOUT))[0]

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the owning cell
            if self._ready.is_set():
                self.record_error(exc)
            else:
                self._startup_error = exc
        finally:
            self._ready.set()  # only now: __enter__ sees the startup error, if any

    def _start(self) -> None:
        import websockets.asyncio.server  # noqa: F401 - imported here, not in the start timeout

        self._thread = self._spawn(self._run, name="websocket")
        if not self._ready.wait(base.JOIN_TIMEOUT):
            raise RuntimeError(
                f"{self.name}: the WebSocket server did not start in {base.JOIN_TIMEOUT}s")
        if self._startup_error is not None:
            raise ServerError(f"{self.name} could not start: {self._startup_error}") \
                from self._startup_error

    def _wake(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(lambda: stopped.done() or stopped.set_result(None))
            except RuntimeError:
                pass  # the loop has just finished

    def _join_timeout(self) -> float:
        return self._grace() + 2 * base.JOIN_TIMEOUT  # closing handshakes, then handlers

    def _close(self) -> None:
        self._thread = None
        self._server = None

    def _stuck_message(self, stuck: list[str]) -> str:
        return (f"{self.name}: a handler did not return within {base.JOIN_TIMEOUT:g}s of the "
                "server closing its connection; a handler must return (or await the "
                "connection) when the client goes away")

    def stop(self) -> None:
        """Close every connection, stop the loop and join it (bounded)."""
        super().stop()
        if self._stuck:  # the loop ended, but only by cancelling a handler that hung
            self._stuck = False
            raise RuntimeError(self._stuck_message([]))

    def __repr__(self):
        where = f"{self.url}" if self._server else "stopped"
        return f"<WebSocketServer {self.name!r} {where}>"


# -- frames, read for display ---------------------------------------------------------------------
@dataclass(frozen=True)
class Frame:
    """One WebSocket frame as it was on the wire (RFC 6455 section 5.2)."""

    fin: bool
    rsv: int               # the three reserved bits (non-zero only with extensions)
    opcode: int
    masked: bool
    mask: bytes | None     # the 4-byte masking key (client → server frames)
    payload: bytes         # as on the wire: still masked if ``masked``
    header_length: int

    @property
    def kind(self) -> str:
        return OPCODES.get(self.opcode, f"opcode {self.opcode:#x}")

    @property
    def data(self) -> bytes:
        """The payload unmasked: byte i XOR mask[i % 4]."""
        if not self.mask:
            return self.payload
        return bytes(b ^ self.mask[i % 4] for i, b in enumerate(self.payload))

    @property
    def close_code(self) -> int | None:
        if self.opcode == 0x8 and len(self.data) >= 2:
            return struct.unpack("!H", self.data[:2])[0]
        return None

    def describe(self) -> str:
        parts = ["WebSocket", self.kind]
        if self.fin:
            parts.append("FIN")
        parts.append("masked" if self.masked else "unmasked")
        data = self.data
        if self.opcode == 0x8 and self.close_code is not None:
            reason = data[2:].decode("utf-8", "replace")
            parts.append(f"code={self.close_code}" + (f" reason={reason!r}" if reason else ""))
        else:
            parts.append(f"len={len(data)}")
            if self.opcode in (0x1, 0x9, 0xA) and data:
                text = data[:24].decode("utf-8", "replace")
                parts.append(repr(text) + (" …" if len(data) > 24 else ""))
            elif data:
                parts.append(repr(data[:16]) + (" …" if len(data) > 16 else ""))
        return " ".join(parts)


def parse_frames(data: bytes) -> list[Frame]:
    """Split ``data`` into whole WebSocket frames; ``ValueError`` if it is not exactly that."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_frames needs bytes (a TCP payload), not {type(data).__name__}")
    data = bytes(data)
    frames: list[Frame] = []
    i = 0
    while i < len(data):
        if len(data) - i < 2:
            raise ValueError(f"a frame header needs 2 bytes at least; {len(data) - i} left at {i}")
        b0, b1 = data[i], data[i + 1]
        opcode, masked, length = b0 & 0x0F, bool(b1 & 0x80), b1 & 0x7F
        if opcode not in OPCODES:
            raise ValueError(f"byte {i}: opcode {opcode:#x} is reserved: not a WebSocket frame")
        head = 2
        if length == 126:
            if len(data) - i < 4:
                raise ValueError(f"byte {i}: the 16-bit length is cut off")
            length = struct.unpack_from("!H", data, i + 2)[0]
            head = 4
        elif length == 127:
            if len(data) - i < 10:
                raise ValueError(f"byte {i}: the 64-bit length is cut off")
            length = struct.unpack_from("!Q", data, i + 2)[0]
            head = 10
        if opcode >= 0x8 and (length > 125 or not b0 & 0x80):
            raise ValueError(f"byte {i}: a control frame must be FIN and at most 125 bytes")
        mask = None
        if masked:
            mask = data[i + head:i + head + 4]
            head += 4
        end = i + head + length
        if end > len(data) or (mask is not None and len(mask) < 4):
            raise ValueError(
                f"byte {i}: the frame needs {end - i} bytes, only {len(data) - i} here")
        frames.append(Frame(bool(b0 & 0x80), (b0 >> 4) & 0x7, opcode, masked, mask,
                            data[i + head:end], head))
        i = end
    return frames


# -- the capture describer: frames on upgraded connections ----------------------------------------
_UPGRADED: OrderedDict = OrderedDict()   # TCP connection -> time of its 101 response
_MAX_UPGRADED = 4096


def _connection(pkt):
    from scapy.layers.inet import TCP

    from labkit.capture.flows import _ip_layer

    ip = _ip_layer(pkt)
    if ip is None or TCP not in pkt:
        return None
    tcp = pkt[TCP]
    return frozenset({(ip.src, tcp.sport), (ip.dst, tcp.dport)})


def _describe_websocket(payload: bytes, pkt) -> str | None:
    if not payload:
        return None
    conn = _connection(pkt)
    if conn is None:
        return None
    if payload.startswith(b"HTTP/1.1 101") and b"websocket" in payload.lower():
        _UPGRADED[conn] = float(pkt.time)   # frames come after this moment
        while len(_UPGRADED) > _MAX_UPGRADED:
            _UPGRADED.popitem(last=False)
        return None  # the HTTP describer names the response line
    if conn not in _UPGRADED or float(pkt.time) <= _UPGRADED[conn]:
        return None  # not a WebSocket connection, or still its HTTP handshake
    try:
        frames = parse_frames(payload)
    except ValueError:
        return f"WebSocket data, part of a frame ({len(payload)} bytes)"
    return " + ".join(f.describe() for f in frames)


def websocket_frames(segs) -> list[tuple]:
    """``(segment, frame)`` for every WebSocket frame in captured segments, in order."""
    from scapy.layers.inet import TCP

    out = []
    for seg in segs:
        if seg.proto != "TCP" or not seg.length or not seg.summary.startswith("WebSocket "):
            continue
        try:
            frames = parse_frames(bytes(seg.packet[TCP].payload))
        except ValueError:
            continue
        out.extend((seg, frame) for frame in frames)
    return out


if _describe_websocket not in PAYLOAD_DESCRIBERS:
    PAYLOAD_DESCRIBERS.insert(0, _describe_websocket)


def _ladder_label(seg) -> str | None:
    """Ladder arrows on WebSocket connections say what they carry, not just TCP flags."""
    if seg.proto != "TCP" or not seg.length or seg.packet is None:
        return None
    if seg.summary.startswith("WebSocket "):
        return seg.summary.removeprefix("WebSocket ")
    if _connection(seg.packet) in _UPGRADED:
        if seg.summary.startswith("GET "):
            return f"{seg.summary}  (Upgrade: websocket)"
        if seg.summary.startswith("HTTP/1.1 101"):
            return seg.summary
    return None


try:
    from labkit.views.ladder import LABELLERS as _LABELLERS
except ImportError:  # an older labkit without ladder labellers: plain TCP labels
    _LABELLERS = []
if _ladder_label not in _LABELLERS:
    _LABELLERS.insert(0, _ladder_label)
