"""What a server saw, for replay mode to compare with a recording.

Per TCP connection the payload bytes each way, read from the kernel's own counters
(``TCP_INFO``) whatever the handler did, how many segments carried them each way, and
how long the connection lasted; per UDP datagram its size each way.  Where
the server itself read the bytes (the built-in TCP handlers, every UDP datagram) it
keeps a digest of their content too; for TLS, whose bytes are ciphertext, the name
the client asked for (SNI) stands in.  See :meth:`TCPServer.conversation`.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import struct
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

CONVERSATION_LIMIT = 10_000  # connections (or datagrams) each server remembers for comparisons

# struct tcp_info (linux/tcp.h) offsets, stable since Linux 4.19; each field is native-endian.
_TCPI_STATE, _TCPI_UNACKED, _TCPI_BYTES_ACKED, _TCPI_BYTES_RECEIVED = 0, 24, 120, 128
_TCPI_NOTSENT_BYTES, _TCPI_BYTES_SENT, _TCPI_BYTES_RETRANS = 144, 200, 208
_TCPI_SIZE = 216
_TCPI_TOTAL_RETRANS, _TCPI_DATA_SEGS_IN, _TCPI_RCV_OOOPACK = 100, 152, 224
_TCPI_SEGMENTS_SIZE = 228  # up to tcpi_rcv_ooopack (Linux 5.4)
# States reached only after the peer's FIN arrived (tcpi_bytes_received counts it as a byte):
_FIN_RECEIVED = {6, 8, 9, 11}  # TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING
_CLOSE = 7  # after LAST_ACK (their FIN, then ours acked), or after a reset
# /proc/net/tcp's st of a connection the server has not closed: ESTABLISHED, SYN_RECV (a
# request socket), CLOSE_WAIT (include/net/tcp_states.h)
_NOT_TAKEN = {"01", "03", "08"}


def _tcp_info(sock: socket.socket) -> bytes | None:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_SIZE)
    except (OSError, ValueError):  # closed, or not TCP
        return None
    return info if len(info) >= _TCPI_SIZE else None  # an older kernel: no byte counters


def _tcp_counters(sock: socket.socket) -> tuple[int, ...] | None:
    """(state, acked, received, not sent, sent, retransmitted), consistent with each other.

    The kernel reads the state before it locks the socket to read the counters, so one
    reading may pair the state before a FIN with the counters after it: read until two
    readings agree (a few tries; on loopback a connection is settled by now anyway).
    """
    last: tuple[int, ...] | None = None
    for _ in range(5):
        info = _tcp_info(sock)
        if info is None:
            return None
        now = (info[_TCPI_STATE], *struct.unpack_from("=QQ", info, _TCPI_BYTES_ACKED),
               *struct.unpack_from("=I", info, _TCPI_NOTSENT_BYTES),
               *struct.unpack_from("=QQ", info, _TCPI_BYTES_SENT))
        if now == last:
            break
        last = now
    return last


def tcp_payload_counts(sock: socket.socket) -> tuple[int | list[int], int] | None:
    """``(bytes received, bytes written)`` of a connected TCP socket, from the kernel.

    Payload only (no SYN or FIN), each byte once however often it was retransmitted,
    and counting what the application wrote but the kernel has not sent yet.  None
    if the kernel cannot tell (socket closed, a kernel before 4.19).

    The kernel counts the peer's FIN as a received byte, and does not say whether it
    came once a reset has closed the connection: then "received" is ``[n - 1, n]``.
    """
    counters = _tcp_counters(sock)
    if counters is None:
        return None
    state, acked, received, notsent, sent, retransmitted = counters
    sent -= retransmitted
    counted: int | list[int] = received
    if received and (state in _FIN_RECEIVED or (state == _CLOSE and acked > sent)):
        counted = received - 1  # their FIN came (in CLOSE: our FIN was acked, so we left LAST_ACK)
    elif received and state == _CLOSE:
        counted = [received - 1, received]  # a reset: before it, a FIN or not
    return counted, sent + notsent


def tcp_segment_counts(sock: socket.socket) -> tuple[int, int] | None:
    """``(data segments received, data segments sent)`` by a connected TCP socket.

    None where the split depends on what was lost, not on the code that ran: segments
    the kernel had to send again (``tcpi_total_retrans``), or that arrived out of order
    (one before them was lost, so a resend followed); and on a kernel before 5.4.
    """
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_SEGMENTS_SIZE)
    except (OSError, ValueError):
        return None
    if len(info) < _TCPI_SEGMENTS_SIZE:
        return None
    (resent,) = struct.unpack_from("=I", info, _TCPI_TOTAL_RETRANS)
    (out_of_order,) = struct.unpack_from("=I", info, _TCPI_RCV_OOOPACK)
    if resent or out_of_order:
        return None
    segs_in, segs_out = struct.unpack_from("=II", info, _TCPI_DATA_SEGS_IN)
    return segs_in, segs_out


def _accept_queue(listener: socket.socket) -> int:
    """Connections the kernel completed that accept() has not taken yet."""
    info = _tcp_info(listener)
    return int(struct.unpack_from("=I", info, _TCPI_UNACKED)[0]) if info else 0


def connections_not_taken(port: int, net: str | None) -> int:
    """Connections to a listener on ``port`` that ``accept()`` has not handed over yet.

    The client counts a connection as made once its ``connect()`` returns, before the
    server's side does: the handshake's last ACK may still be on its way (SYN-RECV), the
    connection may wait in the accept queue or be between ``accept()`` and the server's
    books (ESTABLISHED or, if the client closed already, CLOSE-WAIT).  A socket the server
    closed is in neither state.  ``net`` is ``/proc/self/task/<tid>/net`` of a thread in
    the listener's network (the tables are that network's); 0 when unknown.

        >>> connections_not_taken(8080, "/proc/self/task/4242/net")  # 4242: the accept thread
        1
    """
    if net is None:
        return 0
    return sum(1 for fields in proc_tcp_rows(Path(net))
               if fields[3] in _NOT_TAKEN and int(fields[1].rsplit(":", 1)[1], 16) == port)


def proc_tcp_rows(net: Path) -> Iterator[list[str]]:
    """Each socket's line of ``net``/tcp and ``net``/tcp6, split into its fields.

        >>> next(proc_tcp_rows(Path("/proc/thread-self/net")))[:4]  # sl local remote st
        ['0:', '0100007F:1F90', '00000000:0000', '0A']
    """
    for table in ("tcp", "tcp6"):
        try:
            lines = (net / table).read_text().splitlines()[1:]
        except OSError:  # no IPv6, or the thread whose network it was has ended
            continue
        for line in lines:
            yield line.split()


def content_digest(pieces_digests: Iterable[str]) -> str:
    """One digest for many streams or datagrams, in any order (sha256 hex of each piece)."""
    return hashlib.sha256("".join(sorted(pieces_digests)).encode()).hexdigest()[:32]


def conversation_entry(connections: Iterable[Iterable[Any]] = (),
                       datagrams_in: Iterable[int] = (), datagrams_out: Iterable[int] = (),
                       content_in: str | None = None,
                       segments: Iterable[Iterable[Any]] | None = None,
                       seconds: Iterable[float | None] | None = None) -> dict[str, Any]:
    """The summary both sides of a replay comparison give, one per server (JSON-ready).

    ``connections``: ``[bytes from the client, bytes to it]`` per TCP connection (the
    first may be a range ``[low, high]``, the second None where it cannot be known:
    see :func:`tcp_payload_counts`); ``datagrams_in``/``_out``: UDP payload
    sizes; ``content_in``: :func:`content_digest` of what clients sent, None if unknown.
    In the same order as ``connections``: ``segments``, ``[from the client, to it]``
    each a count of data segments (a recording: their sizes; None: unknown), and
    ``seconds``, how long each lasted (None: unknown).  Left out: all unknown.
    """
    rows = [list(c) for c in connections]
    count = len(rows)
    return {"connections": rows, "datagrams_in": list(datagrams_in),
            "datagrams_out": list(datagrams_out), "content_in": content_in,
            "segments": [list(s) for s in segments] if segments else [[None, None]] * count,
            "seconds": list(seconds) if seconds else [None] * count}


# The name each TLS client asked for (SNI), by server-side socket: a TLS connection's
# content on the wire is ciphertext, so its name is what replay compares (see _tls).
SERVER_NAMES: weakref.WeakKeyDictionary[ssl.SSLSocket | ssl.SSLObject, str] = (
    weakref.WeakKeyDictionary())


def note_server_name(tls_socket: ssl.SSLSocket | ssl.SSLObject, server_name: str | None,
                     context: ssl.SSLContext) -> None:
    """An ``sni_callback`` that only remembers the name; the handshake goes on unchanged."""
    SERVER_NAMES[tls_socket] = server_name or ""


def name_digest(server_name: str) -> str:
    """The content digest of a TLS connection: the name its client asked for."""
    return hashlib.sha256(b"sni:" + server_name.encode()).hexdigest()


class _Heard:
    """What a client sent, as the server read it: a byte count and a running sha256."""

    def __init__(self) -> None:
        self.count, self._sha = 0, hashlib.sha256()

    def update(self, data: bytes) -> None:
        self.count += len(data)
        self._sha.update(data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class _Recent:
    """Numbered entries, only the last CONVERSATION_LIMIT kept: memory stays bounded."""

    def __init__(self) -> None:
        self.entries: deque[tuple[int, Any]] = deque(maxlen=CONVERSATION_LIMIT)
        self.forgot = 0  # the highest number dropped so far

    def add(self, number: int, entry: Any) -> None:
        if len(self.entries) == self.entries.maxlen:
            self.forgot = max(self.forgot, self.entries[0][0])
        self.entries.append((number, entry))

    def since(self, mark: int) -> list[tuple[int, Any]] | None:
        """Entries numbered after ``mark``; None if some of them were forgotten."""
        if self.forgot > mark:
            return None
        return [(n, e) for n, e in self.entries if n > mark]

