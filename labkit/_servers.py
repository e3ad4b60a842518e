"""Small TCP and UDP servers that run in threads, for the notebooks to talk to.

Each server is a context manager: it binds 127.0.0.1 port 0, is ready when
``__enter__`` returns, and on exit stops, closes every connection and joins its
threads.  An exception raised by a handler comes back to the ``with`` block.

    >>> with TCPServer(handler="echo") as server:
    ...     with socket.create_connection(server.address) as s:
    ...         s.sendall(b"hi"); s.recv(10)
    b'hi'
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable

__all__ = ["TCPServer", "UDPServer", "ServerError"]

JOIN_TIMEOUT = 5.0  # seconds a handler gets to finish once its connection is shut down


class ServerError(RuntimeError):
    """A handler running in a server thread raised; the original is the __cause__."""


def raise_first(errors: list[BaseException], who: str) -> None:
    """Raise :class:`ServerError` for the first of ``errors`` (if any), naming ``who``."""
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ServerError(f"{who} raised {type(first).__name__}: {first}{more}") from first


def _echo(conn: socket.socket, addr) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def _upper(conn: socket.socket, addr) -> None:
    while data := conn.recv(65536):
        conn.sendall(data.upper())


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

    kind = "server"

    def __init__(self, host: str, port: int, name: str):
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int from 0 to 65535 (0 = any free port), not {port!r}")
        self.host = _check_host(host)
        self.name = name
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def _bound_address(self):
        return self._sock.getsockname() if self._sock else None

    def _family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def _spawn(self, target, *args) -> threading.Thread:
        def run():
            try:
                target(*args)
            except BaseException as exc:  # noqa: BLE001 - reported to the owning cell
                if not self._stopping.is_set() or not isinstance(exc, OSError):
                    with self._lock:
                        self._errors.append(exc)

        thread = threading.Thread(target=run, name=f"{self.name}-{target.__name__}", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()
        return thread

    def raise_errors(self) -> None:
        """Re-raise the first exception a handler raised (called on exit, too)."""
        with self._lock:
            errors, self._errors = self._errors, []
        raise_first(errors, f"{self.name} handler")

    def _join_all(self) -> None:
        with self._lock:
            threads = list(self._threads)
        stuck = []
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
            if thread.is_alive():
                stuck.append(thread.name)
        if stuck:
            raise RuntimeError(
                f"{self.name}: handler threads {stuck} did not finish within {JOIN_TIMEOUT}s "
                "after their connections were closed; a handler must return when recv() gives b''"
            )

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
    that talks to one client over the connected socket ``conn``.

        >>> with TCPServer(handler="upper") as server:
        ...     with socket.create_connection(server.address) as s:
        ...         s.sendall(b"hi"); s.recv(10)
        b'HI'
    """

    def __init__(self, handler="echo", *, host: str = "127.0.0.1", port: int = 0,
                 name: str = "server", backlog: int = 16):
        super().__init__(host, port, name)
        self.handler = _pick_handler(handler, TCP_HANDLERS, "TCP")
        self.backlog = backlog
        self._conns: set[socket.socket] = set()
        self._idle = threading.Condition(self._lock)
        self.connections_served = 0

    def __enter__(self) -> "TCPServer":
        sock = socket.socket(self._family(), socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        sock.listen(self.backlog)  # listening now: clients can connect as soon as we return
        self._sock = sock
        self._spawn(self._accept_loop)
        return self

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, addr = self._sock.accept()
            except OSError:
                return  # the listening socket was shut down by stop()
            with self._lock:
                if self._stopping.is_set():
                    conn.close()
                    return
                self._conns.add(conn)
                self.connections_served += 1
            self._spawn(self._serve, conn, addr)

    def _serve(self, conn: socket.socket, addr) -> None:
        try:
            self.handler(conn, addr)
        finally:
            conn.close()
            with self._lock:
                self._conns.discard(conn)
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 2.0) -> bool:
        """Wait until no connection is open; True if that happened within ``timeout``."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._conns, timeout)

    def stop(self) -> None:
        """Stop accepting, shut down open connections (handlers see b''), join threads."""
        if self._sock is None:
            return
        self._stopping.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes recv() in the handler
            except OSError:
                pass
        try:
            self._join_all()
        finally:
            self._sock.close()
            self._sock = None


class UDPServer(_ThreadedServer):
    """A UDP server on loopback: ``handler(data, addr)`` returns the reply or None.

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

    def __enter__(self) -> "UDPServer":
        sock = socket.socket(self._family(), socket.SOCK_DGRAM)
        sock.bind((self.host, self._requested_port))  # bound: datagrams queue from now on
        self._sock = sock
        self._spawn(self._receive_loop)
        return self

    def _receive_loop(self) -> None:
        while True:
            try:
                data, addr = self._sock.recvfrom(65535)
            except OSError:
                return
            if self._stopping.is_set():
                return
            self.datagrams_received += 1
            try:
                reply = self.handler(data, addr)
            except Exception as exc:  # keep serving others; report on exit
                with self._lock:
                    self._errors.append(exc)
                continue
            if reply is not None:
                self._sock.sendto(reply, addr)

    def stop(self) -> None:
        if self._sock is None:
            return
        self._stopping.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes recvfrom() on Linux
        except OSError:
            pass
        try:
            self._join_all()
        finally:
            self._sock.close()
            self._sock = None
