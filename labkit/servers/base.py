"""Small TCP and UDP servers that run in threads, for the notebooks to talk to.

Each server is a context manager: it binds 127.0.0.1 port 0, is ready when
``__enter__`` returns, and on exit stops, closes every connection and joins its
threads (all of them within one ``JOIN_TIMEOUT``).  An exception raised by a
handler, or one that ends a server thread, comes back to the ``with`` block as
:class:`ServerError`.

    >>> with TCPServer(handler="echo") as server:
    ...     with socket.create_connection(server.address) as s:
    ...         s.sendall(b"hi"); s.recv(10)
    b'hi'

A server object runs once: entering it again, while it runs or after it stopped,
raises ``RuntimeError``; create a new one for another run.  (The same holds for
every labkit server.)  Problems a remote client causes are not the cell's fault:
a UDP reply too big for one datagram is not sent (logged on the ``labkit``
logger), and an ``accept()`` that fails for lack of file descriptors is logged
and retried, so the server serves again once descriptors are free; it is still
reported as :class:`ServerError` at exit, since the lab machine ran out of them.

Every server also knows what it saw, for replay mode to compare with a recording
(see :meth:`TCPServer.conversation`): per TCP connection the payload bytes each
way, read from the kernel's own counters (``TCP_INFO``) whatever the handler did;
per UDP datagram its size each way.  Where the server itself read the bytes (the
built-in TCP handlers, every UDP datagram) it keeps a digest of their content too;
for TLS, whose bytes are ciphertext, the name the client asked for (SNI) stands in.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import logging
import select
import socket
import ssl
import struct
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable

__all__ = ["TCPServer", "UDPServer", "ServerError"]

JOIN_TIMEOUT = 5.0  # seconds all threads together get to finish once connections are shut down
HANDSHAKE_TIMEOUT = 3.0  # seconds a TLS client gets for its whole handshake (TLS and HTTPS servers)
MAX_ERRORS = 100    # exceptions kept for the report; later ones are only counted
RETRY_PAUSE = 0.05  # seconds between accept() attempts while the process is out of descriptors
# accept() errors that mean "out of resources": wait and retry, the server is not broken
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# accept() errors about the one connection being accepted (Linux reports them on accept)
CLIENT_GONE = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.ENOPROTOOPT,
               errno.EHOSTDOWN, errno.ENONET, errno.EHOSTUNREACH, errno.ENETUNREACH}

CONVERSATION_LIMIT = 10_000  # connections (or datagrams) each server remembers for comparisons

log = logging.getLogger("labkit")
_RUN_LOCK = threading.Lock()


class ServerError(RuntimeError):
    """A handler running in a server thread raised; the original is the __cause__."""


def raise_first(errors: list[BaseException], who: str, more: int = 0) -> None:
    """Raise :class:`ServerError` for the first of ``errors`` (if any), naming ``who``.

    ``more`` counts errors that happened but were not kept.
    """
    if errors:
        first = errors[0]
        more += len(errors) - 1
        others = f" (and {more} more)" if more else ""
        raise ServerError(f"{who} raised {type(first).__name__}: {first}{others}") from first


def claim_run(server, kind: str | None = None) -> None:
    """Mark ``server`` as started; ``RuntimeError`` if it was started before (runs once)."""
    kind = kind or type(server).__name__
    with _RUN_LOCK:
        if getattr(server, "_ran", False):
            raise RuntimeError(
                f"{kind} {server.name!r} was already started (a server object runs once); "
                f"create a new {kind}(...) for another run")
        server._ran = True


def check_port(port, what: str = "port", low: int = 0) -> int:
    """``port`` as an int in ``low``..65535 (0 = any free port); bools are not ports."""
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= 65535:
        hint = " (0 = any free port)" if low == 0 else ""
        raise ValueError(f"{what} must be an int from {low} to 65535{hint}, not {port!r}")
    return port


def check_name(name) -> str:
    """A server name shows in thread names, tables and errors: short printable text."""
    if not isinstance(name, str) or not name.strip() or not name.isprintable() or len(name) > 64:
        raise ValueError(f"name must be short printable text such as 'echo' "
                         f"(1 to 64 characters, no newlines), not {name!r}")
    return name


def join_all(threads, timeout: float) -> list[str]:
    """Join ``threads`` within one overall ``timeout``; names of those still running."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [thread.name for thread in threads if thread.is_alive()]


def _send_back(conn: socket.socket, change, heard=None) -> None:
    try:
        while data := conn.recv(65536):
            if heard is not None:
                heard(data)
            conn.sendall(change(data))
    except (ConnectionResetError, BrokenPipeError):
        pass  # the client went away without reading: its right, not a server bug


def _echo(conn: socket.socket, addr) -> None:
    _send_back(conn, lambda data: data)


def _upper(conn: socket.socket, addr) -> None:
    _send_back(conn, bytes.upper)


TCP_HANDLERS: dict[str, Callable] = {"echo": _echo, "upper": _upper}
_CHANGES = {_echo: lambda data: data, _upper: bytes.upper}  # built-ins: the server does the I/O
UDP_HANDLERS: dict[str, Callable] = {
    "echo": lambda data, addr: data,
    "upper": lambda data, addr: data.upper(),
}


# -- what a server saw: compared with a recording in replay mode ---------------------------
# struct tcp_info (linux/tcp.h) offsets, stable since Linux 4.19; each field is native-endian.
_TCPI_STATE, _TCPI_UNACKED, _TCPI_BYTES_ACKED, _TCPI_BYTES_RECEIVED = 0, 24, 120, 128
_TCPI_NOTSENT_BYTES, _TCPI_BYTES_SENT, _TCPI_BYTES_RETRANS = 144, 200, 208
_TCPI_SIZE = 216
# States reached only after the peer's FIN arrived (tcpi_bytes_received counts it as a byte):
_FIN_RECEIVED = {6, 8, 9, 11}  # TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING
_CLOSE = 7  # after LAST_ACK (their FIN, then ours acked), or after a reset


def _tcp_info(sock: socket.socket) -> bytes | None:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_SIZE)
    except (OSError, ValueError):  # closed, or not TCP
        return None
    return info if len(info) >= _TCPI_SIZE else None  # an older kernel: no byte counters


def _tcp_counters(sock: socket.socket) -> tuple | None:
    """(state, acked, received, not sent, sent, retransmitted), consistent with each other.

    The kernel reads the state before it locks the socket to read the counters, so one
    reading may pair the state before a FIN with the counters after it: read until two
    readings agree (a few tries; on loopback a connection is settled by now anyway).
    """
    last = None
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


def tcp_payload_counts(sock: socket.socket) -> tuple[int | list, int] | None:
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
    if received and (state in _FIN_RECEIVED or (state == _CLOSE and acked > sent)):
        received -= 1  # their FIN came (in CLOSE: our FIN was acked, so we left LAST_ACK)
    elif received and state == _CLOSE:
        received = [received - 1, received]  # a reset: before it, a FIN or not
    return received, sent + notsent


def _accept_queue(listener: socket.socket) -> int:
    """Connections the kernel completed that accept() has not taken yet."""
    info = _tcp_info(listener)
    return struct.unpack_from("=I", info, _TCPI_UNACKED)[0] if info else 0


def content_digest(pieces_digests) -> str:
    """One digest for many streams or datagrams, in any order (sha256 hex of each piece)."""
    return hashlib.sha256("".join(sorted(pieces_digests)).encode()).hexdigest()[:32]


def conversation_entry(connections=(), datagrams_in=(), datagrams_out=(),
                       content_in: str | None = None) -> dict:
    """The summary both sides of a replay comparison give, one per server (JSON-ready).

    ``connections``: ``[bytes from the client, bytes to it]`` per TCP connection (the
    first may be a range ``[low, high]``, the second None where it cannot be known:
    see :func:`tcp_payload_counts`); ``datagrams_in``/``_out``: UDP payload
    sizes; ``content_in``: :func:`content_digest` of what clients sent, None if unknown.
    """
    return {"connections": [list(c) for c in connections], "datagrams_in": list(datagrams_in),
            "datagrams_out": list(datagrams_out), "content_in": content_in}


# The name each TLS client asked for (SNI), by server-side socket: a TLS connection's
# content on the wire is ciphertext, so its name is what replay compares (see _tls).
SERVER_NAMES: "weakref.WeakKeyDictionary[ssl.SSLSocket, str]" = weakref.WeakKeyDictionary()


def note_server_name(tls_socket, server_name, context) -> None:
    """An ``sni_callback`` that only remembers the name; the handshake goes on unchanged."""
    SERVER_NAMES[tls_socket] = server_name or ""


def name_digest(server_name: str) -> str:
    """The content digest of a TLS connection: the name its client asked for."""
    return hashlib.sha256(b"sni:" + server_name.encode()).hexdigest()


class _Heard:
    """What a client sent, as the server read it: a byte count and a running sha256."""

    def __init__(self):
        self.count, self._sha = 0, hashlib.sha256()

    def update(self, data: bytes) -> None:
        self.count += len(data)
        self._sha.update(data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class _Recent:
    """Numbered entries, only the last CONVERSATION_LIMIT kept: memory stays bounded."""

    def __init__(self):
        self.entries: deque = deque(maxlen=CONVERSATION_LIMIT)
        self.forgot = 0  # the highest number dropped so far

    def add(self, number: int, entry) -> None:
        if len(self.entries) == self.entries.maxlen:
            self.forgot = max(self.forgot, self.entries[0][0])
        self.entries.append((number, entry))

    def since(self, mark: int) -> list | None:
        """Entries numbered after ``mark``; None if some of them were forgotten."""
        if self.forgot > mark:
            return None
        return [(n, e) for n, e in self.entries if n > mark]


class LoopbackAddress:
    """``address`` and ``port`` of a running lab server.

    A subclass says where it is bound in ``_bound_address()`` (None while stopped).
    """

    def _bound_address(self):
        raise NotImplementedError

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server really listens on."""
        bound = self._bound_address()
        if bound is None:
            raise RuntimeError(f"{type(self).__name__} is not running: use it in a `with` block")
        return tuple(bound[:2])

    @property
    def port(self) -> int:
        return self.address[1]


def _pick_handler(handler, table: dict[str, Callable], kind: str) -> Callable:
    if isinstance(handler, str):
        if handler not in table:
            raise ValueError(
                f"unknown {kind} handler {handler!r}: use one of {sorted(table)} "
                "or pass a function"
            )
        return table[handler]
    if not callable(handler):
        raise TypeError(
            f"handler must be a name like 'echo' or a function, not {type(handler).__name__}"
        )
    return handler


def _check_host(host: str) -> str:
    """Allow loopback only: the labs never listen on a real network."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"host must be a loopback IP address such as '127.0.0.1', not {host!r}"
        ) from None
    if not ip.is_loopback:
        raise ValueError(
            f"host {host!r} is not a loopback address; lab servers bind 127.0.0.1 or ::1 only"
        )
    return host


class _ThreadedServer(LoopbackAddress):
    """What TCP and UDP servers share: address, error collection, start/stop."""

    def __init__(self, host: str, port: int, name: str):
        self.host = _check_host(host)
        self.name = check_name(name)
        self._requested_port = check_port(port)
        self._sock: socket.socket | None = None
        self._errors: list[BaseException] = []
        self._errors_dropped = 0
        self._threads: set[threading.Thread] = set()   # running ones only: each removes itself
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def _bound_address(self):
        return self._sock.getsockname() if self._sock else None

    def _bind(self, kind: int) -> socket.socket:
        """A socket bound to the requested address, once per object (closed if binding fails)."""
        claim_run(self)
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
        except BaseException:
            sock.close()
            raise
        return sock

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            if len(self._errors) < MAX_ERRORS:
                self._errors.append(exc)
            else:
                self._errors_dropped += 1  # a flood of failures must not fill memory

    def _spawn(self, target, *args) -> threading.Thread:
        def run():
            try:
                target(*args)
            except BaseException as exc:  # noqa: BLE001 - reported to the owning cell
                if not self._stopping.is_set() or not isinstance(exc, OSError):
                    self._record_error(exc)
            finally:
                with self._lock:
                    self._threads.discard(thread)

        thread = threading.Thread(target=run, name=f"{self.name}-{target.__name__}", daemon=True)
        with self._lock:  # registered and started at once: stop() never sees it unstarted
            thread.start()
            self._threads.add(thread)
        return thread

    def raise_errors(self) -> None:
        """Re-raise the first exception a handler raised (called on exit, too)."""
        with self._lock:
            errors, self._errors = self._errors, []
            dropped, self._errors_dropped = self._errors_dropped, 0
        raise_first(errors, f"{self.name} handler", dropped)

    def _join_all(self) -> None:
        with self._lock:
            threads = list(self._threads)
        stuck = join_all(threads, JOIN_TIMEOUT)
        if stuck:
            raise RuntimeError(
                f"{self.name}: {len(stuck)} handler thread(s) {stuck[:5]} did not finish within "
                f"{JOIN_TIMEOUT}s after their connections were closed; "
                "a handler must return when recv() gives b''"
            )

    def _shutdown(self, sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept()/recv() on Linux
        except OSError:
            pass

    def stop(self) -> None:
        """Stop serving, wake every thread, join them (within ``JOIN_TIMEOUT`` in all)."""
        if self._sock is None:
            return
        self._stopping.set()
        self._shutdown(self._sock)
        try:
            self._join_all()
        finally:
            self._sock.close()
            self._sock = None

    def __exit__(self, *exc_info):
        self.stop()
        if exc_info[0] is None:
            self.raise_errors()
        return False

    def __repr__(self):
        where = f"{self.host}:{self.port}" if self._sock else "stopped"
        return f"<{type(self).__name__} {self.name!r} {where}>"


class TCPServer(_ThreadedServer):
    """A TCP server on loopback with one thread per connection.

    ``handler`` is ``"echo"``, ``"upper"`` or a function ``handler(conn, addr)``
    that talks to one client over the connected socket ``conn``.  ``backlog``
    (connections the kernel queues until they are accepted) defaults to the
    system's maximum, so a burst of clients all get served.

        >>> with TCPServer(handler="upper") as server:
        ...     with socket.create_connection(server.address) as s:
        ...         s.sendall(b"hi"); s.recv(10)
        b'HI'
    """

    def __init__(self, handler="echo", *, host: str = "127.0.0.1", port: int = 0,
                 name: str = "server", backlog: int = socket.SOMAXCONN):
        super().__init__(host, port, name)
        if isinstance(backlog, bool) or not isinstance(backlog, int) or not 1 <= backlog <= 65535:
            raise ValueError(f"backlog must be a positive int (connections the kernel queues "
                             f"before accept(), e.g. 128), not {backlog!r}")
        self.handler = _pick_handler(handler, TCP_HANDLERS, "TCP")
        self.backlog = backlog
        self._conns: set[socket.socket] = set()
        self._idle = threading.Condition(self._lock)
        self.connections_served = 0
        self._numbers: dict[int, int] = {}   # fd of an open connection -> its accept number
        self._heard: dict[int, _Heard] = {}  # accept number -> what the client sent (built-ins)
        self._finished = _Recent()           # (number, (bytes in, bytes out, digest)) as they end

    def __enter__(self) -> "TCPServer":
        sock = self._bind(socket.SOCK_STREAM)
        sock.listen(self.backlog)  # listening now: clients can connect as soon as we return
        self._sock = sock
        self._spawn(self._accept_loop)
        return self

    def _accept_loop(self) -> None:
        starved = False  # in a run of out-of-resources failures (reported once per run)
        while not self._stopping.is_set():
            try:
                conn, addr = self._sock.accept()
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
                self._idle.notify_all()  # conversation() waits for the accept queue to drain
            try:
                self._spawn(self._serve, conn, addr)
            except RuntimeError as exc:  # "can't start new thread": drop this one, keep going
                self._forget(conn)
                self._starving(exc, starved)
                starved = True

    def _starving(self, exc: BaseException, reported: bool) -> None:
        """Out of descriptors or threads: log and record it once, then wait a little."""
        if not reported:
            log.warning("%s: cannot take a new connection (%s); retrying every %ss",
                        self.name, exc, RETRY_PAUSE)
            self._record_error(exc)
        self._stopping.wait(RETRY_PAUSE)  # the queued clients wait in the backlog meanwhile

    def _forget(self, conn: socket.socket) -> None:
        self._tally(conn)
        conn.close()
        with self._lock:
            self._conns.discard(conn)
            self._idle.notify_all()

    def _counts(self, conn: socket.socket, number: int) -> tuple:
        """(bytes in, bytes out, content digest) of one connection so far."""
        counts = tcp_payload_counts(conn)
        received, written = counts if counts else (None, None)
        if isinstance(conn, ssl.SSLSocket):
            # Certificates and signatures differ in size from run to run: the server's
            # bytes are not comparable, only the client's.
            written = None
        heard = self._heard.get(number)
        if heard is not None:
            return heard.count, written, heard.hexdigest()  # read by the server itself: exact
        name = SERVER_NAMES.get(conn) if isinstance(conn, ssl.SSLSocket) else None
        return received, written, None if name is None else name_digest(name)

    def _tally(self, conn: socket.socket) -> None:
        """Remember what a connection carried, just before it is closed (once per connection)."""
        with self._lock:
            number = self._numbers.pop(conn.fileno(), None)
            if number is None:
                return  # a detached socket (wrapped in TLS), or counted already
            self._finished.add(number, self._counts(conn, number))
            self._heard.pop(number, None)

    def _serve(self, conn: socket.socket, addr) -> None:
        try:
            change = _CHANGES.get(self.handler)
            with self._lock:
                number = self._numbers.get(conn.fileno())
            if change is None or number is None or isinstance(conn, ssl.SSLSocket):
                self.handler(conn, addr)  # TLS: the wire carries ciphertext, not what we read
            else:
                heard = self._heard[number] = _Heard()
                _send_back(conn, change, heard.update)
        finally:
            self._forget(conn)

    def conversation_mark(self) -> int:
        """A point to count from: pass it to :meth:`conversation` as ``since``."""
        with self._lock:
            return self.connections_served

    def conversation(self, since: int = 0, settle: float = 0.0) -> dict | None:
        """What this server saw in the connections it accepted after ``since``.

        A :func:`conversation_entry`: payload bytes each way per connection (open ones
        so far), from the kernel's counters whatever the handler did.  ``settle``
        seconds at most are given to connections still open or waiting to be accepted
        (as a live capture waits for the last packets).  None if the server cannot
        tell (too many connections since ``since``, or a kernel without the counters).
        """
        with self._lock:
            self._idle.wait_for(lambda: not self._conns and not (
                self._sock and _accept_queue(self._sock)), settle)
            finished = self._finished.since(since)
            if finished is None:
                return None
            still_open = [(n, self._counts(c, n)) for c in self._conns
                          if (n := self._numbers.get(c.fileno())) is not None and n > since]
        ordered = [counts for _n, counts in sorted(finished + still_open)]
        if any(received is None for received, _w, _h in ordered):
            return None
        digests = [h for _r, _w, h in ordered]
        return conversation_entry(
            connections=[(received, written) for received, written, _h in ordered],
            content_in=content_digest(digests) if None not in digests else None)

    def wait_idle(self, timeout: float = 2.0) -> bool:
        """Wait until no connection is open; True if that happened within ``timeout``."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._conns, timeout)

    def stop(self) -> None:
        """Stop accepting, shut down open connections (handlers see b''), join threads."""
        if self._sock is None:
            return
        self._stopping.set()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            self._shutdown(conn)  # wakes recv() in the handler
        super().stop()


class UDPServer(_ThreadedServer):
    """A UDP server on loopback: ``handler(data, addr)`` returns the reply or None.

    A reply too big for one datagram is not sent: it is counted in
    ``replies_refused`` and logged.

        >>> with UDPServer(handler="echo") as server:
        ...     with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ...         s.sendto(b"ping", server.address); s.recvfrom(100)[0]
        b'ping'
    """

    def __init__(self, handler="echo", *, host: str = "127.0.0.1", port: int = 0,
                 name: str = "server"):
        super().__init__(host, port, name)
        self.handler = _pick_handler(handler, UDP_HANDLERS, "UDP")
        self.datagrams_received = 0
        self.replies_refused = 0
        self._in, self._out = _Recent(), _Recent()   # (number, (size, digest)) / (number, size)
        self._replies_sent = 0
        self._busy = False                            # a datagram is being handled
        self._handled = threading.Condition(self._lock)

    def __enter__(self) -> "UDPServer":
        self._sock = self._bind(socket.SOCK_DGRAM)  # bound: datagrams queue from now on
        self._spawn(self._receive_loop)
        return self

    def _receive_loop(self) -> None:
        while True:
            try:
                data, addr = self._sock.recvfrom(65535)
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
                    self._reply(reply, addr)
            except Exception as exc:  # keep serving others; report on exit
                self._record_error(exc)
            finally:
                with self._lock:
                    self._busy = False
                    self._handled.notify_all()

    def _reply(self, reply: bytes, addr) -> None:
        try:
            self._sock.sendto(reply, addr)
            with self._lock:
                self._replies_sent += 1
                self._out.add(self._replies_sent, len(reply))
        except OSError as exc:
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

    def conversation(self, since: tuple[int, int] = (0, 0), settle: float = 0.0) -> dict | None:
        """What this server saw after ``since``: each datagram's size, in and out.

        A :func:`conversation_entry`, with a digest of the datagrams' content.
        ``settle`` seconds at most are given to datagrams still queued or being
        handled.  None if too many datagrams came since ``since`` to remember.
        """
        with self._lock:
            self._handled.wait_for(lambda: not self._pending(), settle)
            came, went = self._in.since(since[0]), self._out.since(since[1])
        if came is None or went is None:
            return None
        return conversation_entry(datagrams_in=[size for _n, (size, _d) in came],
                                  datagrams_out=[size for _n, size in went],
                                  content_in=content_digest(d for _n, (_s, d) in came))
