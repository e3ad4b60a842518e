"""A TCP server on loopback with one thread per connection, optionally speaking TLS.

    >>> with TCPServer(handler="echo") as server:
    ...     with socket.create_connection(server.address) as s:
    ...         s.sendall(b"hi"); s.recv(10)
    b'hi'

Problems a remote client causes are not the cell's fault: a client that resets is
ignored, and an ``accept()`` that fails for lack of file descriptors is logged and
retried, so the server serves again once descriptors are free (it is still reported
as :class:`ServerError` at exit, since the lab machine ran out of them).

This is also the one TLS path of labkit: :class:`~labkit.TLSServer` and
:class:`~labkit.HTTPServer` with an ``ssl_context`` both wrap each accepted
connection here, and a handshake that fails (the client rejected the certificate,
spoke another version, said nothing for ``HANDSHAKE_TIMEOUT`` seconds) is described
in ``server.tls_errors`` on both; the server keeps serving.
"""

from __future__ import annotations

import errno
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from labkit.servers import arguments, base
from labkit.servers.base import MAX_ERRORS, Kept, SocketServer, log, wake
from labkit.servers.conversation import (
    SERVER_NAMES,
    _accept_queue,
    _Heard,
    _Recent,
    connections_not_taken,
    content_digest,
    conversation_entry,
    name_digest,
    note_server_name,
    tcp_payload_counts,
    tcp_segment_counts,
)
from labkit.servers.unraisable import caught

__all__ = ["TCPServer", "TCPHandler"]

# A TCP handler talks to one client: handler(conn, addr), conn the connected socket, addr
# the client's (host, port); what it returns is ignored.
TCPHandler = Callable[[socket.socket, Any], object]
# What one connection carried: (bytes in, or a [low, high] range, or None: unknown;
# bytes out, None: unknown or not comparable; content digest, None: unknown;
# [data segments in, out], each None where unknown; seconds it lasted, None: unknown)
_Counts = tuple[int | list[int] | None, int | None, str | None, list[int | None], float | None]

HANDSHAKE_TIMEOUT = 3.0  # seconds a TLS client gets for its whole handshake
RETRY_PAUSE = 0.05  # seconds between accept() attempts while the process is out of descriptors
# accept() errors that mean "out of resources": wait and retry, the server is not broken
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# accept() errors about the one connection being accepted (Linux reports them on accept)
CLIENT_GONE = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.ENOPROTOOPT,
               errno.EHOSTDOWN, errno.ENONET, errno.EHOSTUNREACH, errno.ENETUNREACH}


def _send_back(conn: socket.socket, change: Callable[[bytes], bytes],
               heard: Callable[[bytes], None] | None = None) -> None:
    try:
        while data := conn.recv(65536):
            if heard is not None:
                heard(data)
            conn.sendall(change(data))
    except (ConnectionResetError, BrokenPipeError):
        pass  # the client went away without reading: its right, not a server bug


def _echo(conn: socket.socket, addr: Any) -> None:
    _send_back(conn, lambda data: data)


def _upper(conn: socket.socket, addr: Any) -> None:
    _send_back(conn, bytes.upper)


TCP_HANDLERS: dict[str, TCPHandler] = {"echo": _echo, "upper": _upper}
_SIGNATURES = {"TCP": "handler(conn, addr)", "UDP": "handler(data, addr)"}
# the built-ins: the server does their I/O itself (and so knows what the client sent)
_CHANGES: dict[object, Callable[[bytes], bytes]] = {_echo: lambda data: data,
                                                    _upper: bytes.upper}


H = TypeVar("H", bound=Callable[..., object])


def pick_handler(handler: str | H, table: dict[str, H], kind: str) -> H:
    """A built-in handler by name, or the function given."""
    names = " or ".join(repr(name) for name in sorted(table))
    must = f"{names} (built in) or a function {_SIGNATURES[kind]}"
    if isinstance(handler, str):
        if handler not in table:
            arguments.fail(ValueError, "handler", must, handler)
        return table[handler]
    return cast(H, arguments.function(handler, "handler", must))


def handler_label(handler: object) -> str:
    """A handler as a sentence names it: 'echo', or the function's name."""
    name = handler if isinstance(handler, str) else getattr(handler, "__name__", None)
    return repr(name or type(handler).__name__)


def describe_tls_error(exc: BaseException) -> str:
    """``'SSLError: UNKNOWN_CA'``: what a failed handshake says, short."""
    text = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _left_behind(exc: BaseException) -> ssl.SSLSocket | None:
    """The socket a failed ``wrap_socket()`` made and left in its frame.

    When the client reset first, CPython's ``SSLSocket._create`` raises with its new
    socket held in a reference cycle (frame ↔ exception): one descriptor per such
    client until the next garbage collection, unless we close it.
    """
    tb = exc.__traceback__
    while tb is not None:
        left = tb.tb_frame.f_locals.get("self")
        if isinstance(left, ssl.SSLSocket):
            return left
        tb = tb.tb_next
    return None


class TCPServer(SocketServer):
    """A TCP server on loopback with one thread per connection.

    ``handler`` is ``"echo"``, ``"upper"`` or a function ``handler(conn, addr)``
    that talks to one client over the connected socket ``conn``.  ``backlog``
    (connections the kernel queues until they are accepted) defaults to the
    system's maximum, so a burst of clients all get served.

        >>> with TCPServer(handler="upper") as server:
        ...     with socket.create_connection(server.address) as s:
        ...         s.sendall(b"hi"); s.recv(10)
        b'HI'

    Attributes:
        handler: the function that talks to each client (a built-in one for a name)
        backlog: connections the kernel queues until they are accepted
        connections_served: connections accepted so far
        connections_queued: connections that waited for a thread (the process had none)
        handshakes: TLS handshakes finished so far, well or not (TLS servers only)
        tls_errors: failed TLS handshakes, described (``'SSLError: ...UNKNOWN_CA'``)
    """

    def __init__(self, handler: str | TCPHandler = "echo", *, host: str = "127.0.0.1",
                 port: int = 0, name: str = "server", backlog: int = socket.SOMAXCONN) -> None:
        super().__init__(host=host, port=port, name=name)
        # (connections the kernel queues before accept())
        self.backlog = arguments.integer(backlog, "backlog", 1, 65535, "128")
        self.handler = pick_handler(handler, TCP_HANDLERS, "TCP")
        self.speaks = f"a byte stream, answered by {handler_label(handler)}"
        self._sock: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._idle = threading.Condition(self._lock)
        self.connections_served = 0
        self.connections_queued = 0   # accepted when no thread could start: they waited for one
        self._short_of_threads = False
        self._numbers: dict[int, int] = {}   # fd of an open connection -> its accept number
        self._heard: dict[int, _Heard] = {}  # accept number -> what the client sent (built-ins)
        self._finished = _Recent()           # (number, _counts(...)) as they end
        self._accepted_at: dict[int, float] = {}  # accept number -> monotonic time
        self._net: str | None = None  # /proc tables of the listener's network (its thread's)
        # TLS (set by _use_tls): handshakes that failed, described; handshakes finished
        self._tls_context: ssl.SSLContext | None = None
        self.tls_errors: Kept = Kept(MAX_ERRORS, f"{type(self).__name__} {name!r}", "tls_errors")
        self.handshakes = 0
        self._handshakes = threading.Condition(self._lock)

    def _use_tls(self, context: ssl.SSLContext) -> None:
        """Wrap every connection in TLS with ``context`` before the handler runs."""
        if context.sni_callback is None:  # remember each client's SNI (replay compares it);
            context.sni_callback = note_server_name  # a context with its own callback keeps it
        self._tls_context = context

    # -- the lifecycle ------------------------------------------------------------
    def _start(self) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET,
                             socket.SOCK_STREAM)
        self._sock = sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        sock.listen(self.backlog)  # listening now: clients can connect as soon as we return
        self._spawn(self._accept_loop, sock)

    def _wake(self) -> None:
        with self._lock:
            socks = [self._sock, *self._conns]
        wake(*socks)  # accept() and every handler's recv() (they see b'') return

    def _stuck_message(self, stuck: list[str]) -> str:
        return (f"{self.name}: {len(stuck)} handler thread(s) {stuck[:5]} did not finish within "
                f"{base.JOIN_TIMEOUT}s after their connections were closed; "
                "a handler must return when recv() gives b''")

    # -- accepting ----------------------------------------------------------------
    def _accept_loop(self, sock: socket.socket) -> None:
        # `sock`, not self._sock: a loop outliving stop()'s join meets a closed socket
        # (OSError, expected while stopping), not None
        starved = False  # in a run of out-of-resources failures (reported once per run)
        self._net = f"/proc/self/task/{threading.get_native_id()}/net"  # (a lab host's network)
        while not self._stopping.is_set():
            try:
                conn, addr = sock.accept()
            except OSError as exc:
                if self._stopping.is_set():
                    return  # the listening socket was shut down by stop()
                if exc.errno in CLIENT_GONE:
                    continue  # that client is gone; the next one may be fine
                if exc.errno not in OUT_OF_RESOURCES:
                    raise  # unknown: end the loop, reported at exit
                self._starving(exc, starved)
                starved = True
                continue
            starved = False
            with self._lock:
                if self._stopping.is_set():
                    conn.close()
                    return
                self._conns.add(conn)
                self.connections_served += 1
                self._numbers[conn.fileno()] = self.connections_served
                self._accepted_at[self.connections_served] = time.monotonic()
                self._idle.notify_all()  # conversation() waits for the accept queue to drain
            self._hand_over(conn, addr)

    def _hand_over(self, conn: socket.socket, addr: Any) -> None:
        """Start the thread that serves ``conn``; while none can start (the process is out
        of threads), ``conn`` waits here and later clients in the kernel's backlog, until
        a handler thread ends: queued for real, never accepted and dropped."""
        waited = False
        while True:
            try:
                self._spawn(self._serve, conn, addr)
                return
            except RuntimeError as exc:  # "can't start new thread"
                if self._stopping.is_set():
                    self._forget(conn)
                    return
                with self._lock:
                    self.connections_queued += not waited
                    reported, self._short_of_threads = self._short_of_threads, True
                waited = True
                # reported once per server: a burst of clients is one problem, not hundreds
                self._starving(exc, reported, "start a thread for a new connection")

    def _starving(self, exc: BaseException, reported: bool,
                  what: str = "take a new connection") -> None:
        """Out of descriptors or threads: log and record it once, then wait a little (or
        until a connection ends).  Clients that come meanwhile wait in the backlog."""
        if not reported:
            log.warning("%s: cannot %s (%s); new clients wait in the backlog, retrying "
                        "every %ss", self.name, what, exc, RETRY_PAUSE)
            self.record_error(exc)
        with self._lock:
            self._idle.wait(RETRY_PAUSE)  # notified when a connection ends (or stop())

    # -- one connection ---------------------------------------------------------------
    def _accepted(self, conn: socket.socket) -> None:
        """Set socket options on a new connection, before anything is sent (a hook)."""

    def _serve(self, conn: socket.socket, addr: Any) -> None:
        try:
            self._accepted(conn)
            context = self._tls_context
            if context is not None:
                tls = self._handshake(conn, context)
                if tls is None:
                    return  # described in tls_errors, closed and forgotten
                conn = tls
            change = _CHANGES.get(self.handler)
            heard = None if isinstance(conn, ssl.SSLSocket) or change is None \
                else self.hearing(conn)  # TLS: the wire carries ciphertext, not what we read
            if heard is None or change is None:
                self.handler(conn, addr)
            else:
                _send_back(conn, change, heard.update)
        except ssl.SSLError as exc:
            if not isinstance(conn, ssl.SSLSocket):
                raise  # the handler's own TLS code: reported at exit
            self._tls_failed(exc, handshake=False)  # the peer broke TLS after the handshake
        finally:
            self._forget(conn)

    def _handshake(self, conn: socket.socket, context: ssl.SSLContext) -> ssl.SSLSocket | None:
        """The TLS socket once its handshake is done, or None (described in tls_errors)."""
        tls, why = None, ""
        try:
            with self._lock:  # wrapped and swapped at once: stop() shuts down one or the other
                tls = context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                self._conns.discard(conn)  # detached now: the TLS socket has its descriptor
                self._conns.add(tls)
                if self._stopping.is_set():  # stop() may have missed both: do not wait for it
                    raise ConnectionAbortedError("the server is stopping")
            timeout = tls.gettimeout()
            tls.settimeout(HANDSHAKE_TIMEOUT)  # one deadline for the whole handshake: a
            with caught() as problems:         # silent or trickling client is let go
                try:
                    tls.do_handshake()
                finally:
                    why = self._sni_problems(problems)
            tls.settimeout(timeout)
        except (OSError, ValueError) as exc:   # (wrap_socket fails if the client reset first)
            if isinstance(exc, TimeoutError):
                exc = TimeoutError(f"no TLS handshake within {HANDSHAKE_TIMEOUT}s")
            self._tls_failed(exc, handshake=True, why=why)
            left = tls if tls is not None else _left_behind(exc)
            if left is not None:
                self._forget(left)  # a failed handshake is a connection too (replay counts it)
            return None
        with self._lock:
            self.handshakes += 1
            self._handshakes.notify_all()
        return tls

    def _sni_problems(self, problems: list[tuple[BaseException | None, object]]) -> str:
        """What went wrong in the SNI callback (CPython can only print it), in words.

        A server name that is not ASCII is the client's doing; an exception raised by
        the context's own ``sni_callback`` is the owner's code failing: kept in errors.
        """
        why = ""
        for exc, where in problems:
            if isinstance(where, bytes):
                why = f" (the server name the client sent, {where[:60]!r}, is not ASCII)"
            else:
                if exc is not None:
                    self.record_error(exc)
                why = f" (the sni_callback raised {type(exc).__name__}: {exc})"
        return why

    def _tls_failed(self, exc: BaseException, handshake: bool, why: str = "") -> None:
        if not self._stopping.is_set():
            self.tls_errors.append(describe_tls_error(exc) + why)
        with self._lock:
            if handshake:
                self.handshakes += 1
                self._handshakes.notify_all()

    def hearing(self, conn: socket.socket) -> _Heard | None:
        """Where a handler that reads everything its client sends notes it (``update(data)``):
        its count and digest then stand in for the kernel's in :meth:`conversation`."""
        with self._lock:
            number = self._numbers.get(conn.fileno())
            if number is None:
                return None
            heard = self._heard[number] = _Heard()
        return heard

    def wait_handshakes(self, n: int = 1, timeout: float = 2.0) -> bool:
        """Wait until ``n`` TLS handshakes have finished (well or not) on the server side."""
        with self._lock:
            return self._handshakes.wait_for(lambda: self.handshakes >= n, timeout)

    def _forget(self, conn: socket.socket) -> None:
        self._tally(conn)
        conn.close()
        with self._lock:
            self._conns.discard(conn)
            self._idle.notify_all()

    # -- what it saw -----------------------------------------------------------------
    def _counts(self, conn: socket.socket, number: int, ended: bool = False) -> _Counts:
        """(bytes in, bytes out, content digest, [segments in, out], seconds) of one
        connection so far; seconds since it was accepted only once it ``ended``."""
        counts = tcp_payload_counts(conn)
        received, written = counts if counts else (None, None)
        split = tcp_segment_counts(conn)  # None after a loss: then timing is luck too
        segments: list[int | None] = list(split) if split else [None, None]
        if isinstance(conn, ssl.SSLSocket):
            # Certificates and signatures differ in size from run to run: the server's
            # bytes are not comparable, only the client's.
            written = segments[1] = None
        accepted = self._accepted_at.get(number)
        seconds = (time.monotonic() - accepted
                   if ended and accepted is not None and split else None)
        heard = self._heard.get(number)
        if heard is not None:  # read by the server itself: exact
            return heard.count, written, heard.hexdigest(), segments, seconds
        name = SERVER_NAMES.get(conn) if isinstance(conn, ssl.SSLSocket) else None
        return received, written, None if name is None else name_digest(name), segments, seconds

    def _tally(self, conn: socket.socket) -> None:
        """Remember what a connection carried, just before it is closed (once per connection)."""
        with self._lock:
            number = self._numbers.pop(conn.fileno(), None)
            if number is None:
                return  # a detached socket (wrapped in TLS), or counted already
            self._finished.add(number, self._counts(conn, number, ended=True))
            self._heard.pop(number, None)
            self._accepted_at.pop(number, None)

    def conversation_mark(self) -> int:
        """A point to count from: pass it to :meth:`conversation` as ``since``."""
        with self._lock:
            return self.connections_served

    def conversation(self, since: int = 0, settle: float = 0.0) -> dict[str, Any] | None:
        """What this server saw in the connections it accepted after ``since``.

        A :func:`conversation_entry`: payload bytes each way per connection (open ones
        so far), from the kernel's counters whatever the handler did.  ``settle``
        seconds at most are given to connections still open or waiting to be accepted
        (as a live capture waits for the last packets).  None if the server cannot
        tell (too many connections since ``since``, or a kernel without the counters).
        """
        ordered = self._connections(since, settle)
        if ordered is None:
            return None
        digests = [h for _r, _w, h, *_rest in ordered if h is not None]
        return conversation_entry(
            connections=[(received, written) for received, written, *_rest in ordered],
            content_in=content_digest(digests) if len(digests) == len(ordered) else None,
            segments=[segments for *_bytes, segments, _s in ordered],
            seconds=[seconds for *_rest, seconds in ordered])

    def _connections(self, since: int, settle: float) -> list[_Counts] | None:
        """``(bytes in, bytes out, digest or None, [segments in, out], seconds)`` of each
        connection after ``since`` (see :meth:`_counts`), in order; None if some were
        forgotten or the kernel cannot count."""
        with self._lock:
            # a client's connection counts once its connect() returned, whether or not
            # accept() has it yet (it notifies us when it does; only with no connection
            # open is every one the kernel has for our port one not taken)
            self._idle.wait_for(lambda: not self._conns and not (self._sock and (
                _accept_queue(self._sock) or connections_not_taken(self.port, self._net))),
                settle)
            finished = self._finished.since(since)
            if finished is None:
                return None
            still_open = [(n, self._counts(c, n)) for c in self._conns
                          if (n := self._numbers.get(c.fileno())) is not None and n > since]
        ordered = [counts for _n, counts in sorted(finished + still_open,
                                                   key=lambda found: found[0])]
        if any(received is None for received, *_rest in ordered):
            return None
        return ordered

    def wait_idle(self, timeout: float = 2.0) -> bool:
        """Wait until no connection is open; True if that happened within ``timeout``."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._conns, timeout)
