"""A UDP server on loopback: one thread answers every datagram.

    >>> with UDPServer(handler="echo") as server:
    ...     with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    ...         s.sendto(b"ping", server.address); s.recvfrom(100)[0]
    b'ping'

A reply too big for one datagram is a problem the client caused, not the cell's:
it is not sent, counted in ``replies_refused`` and logged on the ``labkit`` logger.
"""

from __future__ import annotations

import errno
import hashlib
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

from labkit.servers.base import SocketServer, log, wake
from labkit.servers.conversation import _Recent, content_digest, conversation_entry
from labkit.servers.tcp import handler_label, pick_handler

__all__ = ["UDPServer", "UDPHandler"]

# A UDP handler answers one datagram: handler(data, addr) returns the reply (bytes) or
# None for no reply; addr is the sender's (host, port).
UDPHandler = Callable[[bytes, Any], bytes | None]

UDP_HANDLERS: dict[str, UDPHandler] = {
    "echo": lambda data, addr: data,
    "upper": lambda data, addr: data.upper(),
}


class UDPServer(SocketServer):
    """A UDP server on loopback: ``handler(data, addr)`` returns the reply or None.

    A reply too big for one datagram is not sent: it is counted in
    ``replies_refused`` and logged.

        >>> with UDPServer(handler="echo") as server:
        ...     with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ...         s.sendto(b"ping", server.address); s.recvfrom(100)[0]
        b'ping'

    Attributes:
        handler: the function that answers each datagram (a built-in one for a name)
        datagrams_received: datagrams received so far
        replies_refused: replies not sent because they did not fit in one datagram
    """

    protocol = "udp"

    def __init__(self, handler: str | UDPHandler = "echo", *, host: str = "127.0.0.1",
                 port: int = 0, name: str = "server") -> None:
        super().__init__(host=host, port=port, name=name)
        self.handler = pick_handler(handler, UDP_HANDLERS, "UDP")
        self.speaks = f"datagrams, each answered by {handler_label(handler)}"
        self._sock: socket.socket | None = None
        self.datagrams_received = 0
        self.replies_refused = 0
        self._in, self._out = _Recent(), _Recent()   # (number, (size, digest)) / (number, size)
        self._replies_sent = 0
        self._busy = False                            # a datagram is being handled
        self._handled = threading.Condition(self._lock)

    def _start(self) -> None:
        self._sock = sock = self._bind()  # bound: datagrams queue from now on
        self._spawn(self._receive_loop, sock)

    def _bind(self, port: int | None = None) -> socket.socket:
        """A UDP socket bound to ``host`` and ``port`` (default: the one asked for)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self._requested_port if port is None else port))
        except BaseException:
            sock.close()
            raise
        return sock

    def _wake(self) -> None:
        wake(self._sock)  # recvfrom() returns

    def _receive_loop(self, sock: socket.socket) -> None:
        # `sock`, not self._sock: a handler outliving stop()'s join meets a closed socket
        # (OSError, expected while stopping), not None
        while True:
            try:
                data, addr = sock.recvfrom(65535)
            except OSError:
                if self._stopping.is_set():
                    return  # stop() shut the socket down
                raise  # unexpected: reported at exit
            if self._stopping.is_set():
                return
            with self._lock:
                self._busy = True
                self.datagrams_received += 1
                self._in.add(self.datagrams_received, (len(data), hashlib.sha256(data).hexdigest()))
            try:
                reply = self.handler(data, addr)
                if reply is not None:
                    self._send_reply(sock, reply, addr)
            except Exception as exc:  # noqa: BLE001 - keep serving others; report on exit
                self.record_error(exc)
            finally:
                with self._lock:
                    self._busy = False
                    self._handled.notify_all()

    def _send_reply(self, sock: socket.socket, reply: bytes, addr: Any) -> None:
        try:
            sock.sendto(reply, addr)
            with self._lock:
                self._replies_sent += 1
                self._out.add(self._replies_sent, len(reply))
        except OSError as exc:
            if self._stopping.is_set():
                return  # stop() shut the socket down while the handler ran: nobody to answer
            if exc.errno != errno.EMSGSIZE:
                raise
            self.replies_refused += 1
            log.warning("%s: a %d-byte reply to %s does not fit in one UDP datagram "
                        "(65,507 bytes at most): not sent", self.name, len(reply), addr[:2])

    def conversation_mark(self) -> tuple[int, int]:
        """A point to count from: pass it to :meth:`conversation` as ``since``."""
        with self._lock:
            return self.datagrams_received, self._replies_sent

    def _pending(self) -> bool:
        """A datagram is queued or being handled."""
        if self._busy:
            return True
        sock = self._sock
        try:
            return sock is not None and bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):  # closed meanwhile
            return False

    def conversation(self, since: tuple[int, int] = (0, 0), settle: float = 0.0
                     ) -> dict[str, Any] | None:
        """What this server saw after ``since``: each datagram's size, in and out.

        A :func:`conversation_entry`, with a digest of the datagrams' content.
        ``settle`` seconds at most are given to datagrams still queued or being
        handled.  None if too many datagrams came since ``since`` to remember.
        """
        datagrams = self._datagrams(since, settle)
        if datagrams is None:
            return None
        came, went = datagrams
        return conversation_entry(datagrams_in=[size for size, _d in came], datagrams_out=went,
                                  content_in=content_digest(d for _s, d in came))

    def _datagrams(self, since: tuple[int, int], settle: float
                   ) -> tuple[list[tuple[int, str]], list[int]] | None:
        """``([(size, sha256 hex) in], [size out])`` after ``since``; None if forgotten."""
        with self._lock:
            self._handled.wait_for(lambda: not self._pending(), settle)
            came, went = self._in.since(since[0]), self._out.since(since[1])
        if came is None or went is None:
            return None
        return [entry for _n, entry in came], [size for _n, size in went]
