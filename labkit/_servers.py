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
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import threading
import time
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


def _send_back(conn: socket.socket, change) -> None:
    try:
        while data := conn.recv(65536):
            conn.sendall(change(data))
    except (ConnectionResetError, BrokenPipeError):
        pass  # the client went away without reading: its right, not a server bug


def _echo(conn: socket.socket, addr) -> None:
    _send_back(conn, lambda data: data)


def _upper(conn: socket.socket, addr) -> None:
    _send_back(conn, bytes.upper)


TCP_HANDLERS: dict[str, Callable] = {"echo": _echo, "upper": _upper}
UDP_HANDLERS: dict[str, Callable] = {
    "echo": lambda data, addr: data,
    "upper": lambda data, addr: data.upper(),
}


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
        conn.close()
        with self._lock:
            self._conns.discard(conn)
            self._idle.notify_all()

    def _serve(self, conn: socket.socket, addr) -> None:
        try:
            self.handler(conn, addr)
        finally:
            self._forget(conn)

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
            self.datagrams_received += 1
            try:
                reply = self.handler(data, addr)
                if reply is not None:
                    self._reply(reply, addr)
            except Exception as exc:  # keep serving others; report on exit
                self._record_error(exc)

    def _reply(self, reply: bytes, addr) -> None:
        try:
            self._sock.sendto(reply, addr)
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:
                raise
            self.replies_refused += 1
            log.warning("%s: a %d-byte reply to %s does not fit in one UDP datagram "
                        "(65,507 bytes at most): not sent", self.name, len(reply), addr[:2])
