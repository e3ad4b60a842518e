"""TCP peers that show what a byte stream really does (their figures are in labkit.views.figures).

Handlers for :class:`~labkit.TCPServer` (pass an instance as ``handler=``):

* :class:`Dribbler`     - sends a message in small pieces with pauses, then closes
  (or waits for the client to close): ``recv()`` returns whatever has arrived.
* :class:`SlowConsumer`   - reads a little, pauses, reads a little: the sender's buffers
  fill up, so ``send()`` takes less than it was asked to.
* :class:`ByteCounter`  - reads until the client shuts down its side, then answers
  with the number of bytes it got (``b"1000000\\n"``): for throughput measurements.
* :class:`FramedEcho`   - a length-prefixed echo (4-byte big-endian length, then the
  body): the request/response peer for round-trip measurements.

    >>> with TCPServer(handler=Dribbler(b"HELLO WORLD", piece=4, pause=0.05)) as server:
    ...     with socket.create_connection(server.address) as s:
    ...         s.recv(100)        # b'HELL' - only what has arrived so far
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

from labkit.servers import arguments

__all__ = ["Dribbler", "SlowConsumer", "ByteCounter", "FramedEcho"]

MAX_DRIBBLE_SECONDS = 3.0   # pieces x pause: a lesson demo, not a soak test
MAX_FRAME = 1 << 20         # FramedEcho refuses longer frames (garbage, most likely)
FRAME_HEADER = struct.Struct("!I")


class _Handler:
    """Counts connections; subclasses implement ``serve(conn)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.connections = 0

    def __call__(self, conn: socket.socket, addr: Any) -> None:
        with self._lock:
            self.connections += 1
        try:
            self.serve(conn)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the client went away: that is its right, not a server error

    def serve(self, conn: socket.socket) -> None:  # pragma: no cover - abstract
        """Talk to one client over ``conn`` (the server closes it afterwards)."""
        raise NotImplementedError


class Dribbler(_Handler):
    """Send ``data`` in pieces of ``piece`` bytes with ``pause`` seconds between them.

    ``data`` is bytes (cut into equal pieces) or a list of bytes (sent exactly as
    those pieces).  ``then="close"`` closes the connection after the last piece (a
    peer that may close early); ``then="wait"`` keeps it open until the client closes.

    Attributes:
        pieces: the pieces it sends, in order (a list of bytes)
        data: all of them joined: the bytes each client gets
        pause: seconds between two pieces
        then: "close" (close after the last piece) or "wait" (until the client closes)
        sends: ``send()`` calls made so far, over all connections
        connections: connections served so far
    """

    def __init__(self, data: bytes | bytearray | list[bytes] | tuple[bytes, ...], *,
                 piece: int = 4, pause: float = 0.05, then: str = "close") -> None:
        super().__init__()
        if isinstance(data, (bytes, bytearray)):
            piece = arguments.integer(piece, "piece", 1, 1 << 20, "4 bytes")
            self.pieces = [bytes(data[i:i + piece]) for i in range(0, len(data), piece)]
        elif isinstance(data, (list, tuple)) and all(isinstance(p, (bytes, bytearray))
                                                      for p in data):
            self.pieces = [bytes(p) for p in data if p]
        else:
            arguments.fail(TypeError, "data", "bytes or a list of bytes pieces", data,
                           "b'HELLO'", "encode text first: 'hi'.encode()")
        self.pause = arguments.number(pause, "pause", 0, MAX_DRIBBLE_SECONDS, "0.05 seconds")
        self.then = arguments.one_of(then, "then", ["close", "wait"])
        if self.pause * max(len(self.pieces) - 1, 0) > MAX_DRIBBLE_SECONDS:
            arguments.fail(ValueError, "pause × (pieces - 1)",
                           f"at most {MAX_DRIBBLE_SECONDS:g} seconds",
                           f"{self.pause:g} × {len(self.pieces) - 1}",
                           why="use bigger pieces or a shorter pause")
        self.sends = 0

    @property
    def data(self) -> bytes:
        """All the pieces joined: the bytes each client gets."""
        return b"".join(self.pieces)

    def serve(self, conn: socket.socket) -> None:
        """Send the pieces, pausing between them; then close, or wait for the client to."""
        for i, piece in enumerate(self.pieces):
            if i and self.pause:
                time.sleep(self.pause)  # the lesson: a sender that dribbles
            conn.sendall(piece)
            with self._lock:
                self.sends += 1
        if self.then == "wait":
            while conn.recv(65536):
                pass

    def __repr__(self) -> str:
        return (f"Dribbler({len(self.data)} bytes in {len(self.pieces)} pieces, "
                f"pause={self.pause}s, then={self.then!r})")


class SlowConsumer(_Handler):
    """Read ``chunk`` bytes, pause ``pause`` seconds, repeat until the client closes.

    Attributes:
        chunk: bytes asked for in each ``recv()``
        pause: seconds it waits after each ``recv()``
        received: bytes read so far, over all connections
        connections: connections served so far
    """

    def __init__(self, *, chunk: int = 16384, pause: float = 0.005) -> None:
        super().__init__()
        self.chunk = arguments.integer(chunk, "chunk", 1, 1 << 20, "16384 bytes")
        self.pause = arguments.number(pause, "pause", 0, 1.0, "0.005 seconds")
        self.received = 0

    def serve(self, conn: socket.socket) -> None:
        """Read a chunk, pause, and again, until the client closes."""
        while data := conn.recv(self.chunk):
            with self._lock:
                self.received += len(data)
            time.sleep(self.pause)  # the lesson: a reader slower than its sender

    def __repr__(self) -> str:
        return f"SlowConsumer(chunk={self.chunk}, pause={self.pause}s)"


class ByteCounter(_Handler):
    """Read until the client shuts down its sending side, then reply ``b"<count>\\n"``.

    Attributes:
        received: bytes of the last connection that finished
        connections: connections served so far
    """

    def __init__(self) -> None:
        super().__init__()
        self.received = 0  # bytes of the last connection that finished

    def serve(self, conn: socket.socket) -> None:
        """Count the bytes until the client shuts down its side, then send the count."""
        total = 0
        buf = bytearray(1 << 18)
        while n := conn.recv_into(buf):
            total += n
        self.received = total
        conn.sendall(b"%d\n" % total)


class FramedEcho(_Handler):
    """Echo length-prefixed messages: 4-byte big-endian length, then that many bytes.

    A frame longer than ``MAX_FRAME`` (1 MiB) is answered with the frame
    ``b"error: frame too long"`` and the connection is closed; other clients carry on.

    Attributes:
        messages: frames echoed so far, over all connections
        refused: frames refused as too long (each closed its connection)
        connections: connections served so far
    """

    def __init__(self) -> None:
        super().__init__()
        self.messages = 0
        self.refused = 0   # frames refused as too long (the connection was closed)

    @staticmethod
    def _exactly(conn: socket.socket, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            data = conn.recv(n - len(buf))
            if not data:
                return None
            buf += data
        return bytes(buf)

    def serve(self, conn: socket.socket) -> None:
        """Echo each length-prefixed message whole; refuse (and close on) one too long."""
        while (head := self._exactly(conn, 4)) is not None:
            (size,) = FRAME_HEADER.unpack(head)
            if size > MAX_FRAME:
                err = b"error: frame too long"
                conn.sendall(FRAME_HEADER.pack(len(err)) + err)
                with self._lock:
                    self.refused += 1
                # Close gently: FIN, then discard what the client still sends (closing
                # with unread bytes would send a RST, and the client might lose our answer).
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(1.0)
                try:
                    while conn.recv(65536):
                        pass
                except OSError:
                    pass
                return
            body = self._exactly(conn, size)
            if body is None:
                return
            conn.sendall(head + body)
            with self._lock:
                self.messages += 1
