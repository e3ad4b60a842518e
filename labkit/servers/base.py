"""What every lab server shares: its lifecycle, its errors, what it declares, bounded logs.

Every labkit server is a :class:`LabServer`: a context manager that binds a loopback
address (127.0.0.1, port 0 = any free port, unless told otherwise), is ready when
``__enter__`` returns, and on exit stops, wakes and joins its threads (all of them
within one ``JOIN_TIMEOUT``).  An exception that a handler raises, or that ends a
server thread, is kept in ``server.errors`` (a list of exceptions, the same on every
server) and raised again at the end of the ``with`` block as :class:`ServerError`.
A server object runs once: entering it again, while it runs or after it stopped,
raises ``RuntimeError``.

    >>> with TCPServer(handler="echo") as server:      # any LabServer
    ...     with socket.create_connection(server.address) as s:
    ...         s.sendall(b"hi"); s.recv(10)
    b'hi'

A subclass says how it starts (``_start``: bind, start threads with ``_spawn``,
return once clients can connect), how its threads are woken (``_wake``), what it
closes once they have ended (``_close``), and where it is bound (``_bound_address``);
and what it is: ``protocol`` ("tcp" or "udp"), ``speaks`` (the conversation it
expects) and ``endpoints`` (each socket it listens on, which is what a Capture of it
watches).  Its arguments are checked by :mod:`labkit.servers.arguments`; its logs are
:class:`Kept` lists, bounded, counting what they drop.

Each server's docstring lists its attributes under ``Attributes:``; ``help()`` of a
server shows those of the classes it builds on too (``Attributes from TCPServer:``...),
added to its docstring when the class is made (:func:`with_inherited_attributes`).
"""

from __future__ import annotations

import inspect
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self

from labkit.servers import arguments

# The argument checks live in labkit.servers.arguments; these names stay for the modules
# and tests that import them from here.
from labkit.servers.arguments import host as check_host
from labkit.servers.arguments import port as check_port
from labkit.servers.arguments import server_name as check_name

__all__ = ["LabServer", "SocketServer", "ServerError", "Endpoint", "Kept", "check_host",
           "check_port", "check_name", "url_host", "wake", "with_inherited_attributes"]

JOIN_TIMEOUT = 5.0  # seconds all threads together get to finish once they were woken
MAX_ERRORS = 100    # exceptions kept in server.errors; later ones are only counted

log = logging.getLogger("labkit")
_RUN_LOCK = threading.Lock()


class ServerError(RuntimeError):
    """A handler running in a server thread raised; the original is the __cause__."""


class Endpoint(NamedTuple):
    """One socket a server listens on, as a capture watches it.

        >>> server.endpoints
        (Endpoint(transport='tcp', host='127.0.0.1', port=40123, role='server', speaks='HTTP/1.1'),)

    Attributes:
        transport: ``"tcp"`` or ``"udp"``
        host: the address it is bound to
        port: the port it is bound to
        role: the name tables and ladders give it (the server's name)
        speaks: the conversation it expects there, in words
    """

    transport: str
    host: str
    port: int
    role: str
    speaks: str


class Kept(list[Any]):
    """A list that keeps the first ``limit`` entries and counts the rest in ``dropped``.

        >>> log = Kept(2); log.append("a"); log.append("b"); log.append("c")
        >>> log, log.dropped
        (['a', 'b'], 1)

    For a log or record no client may grow without bound.  Given its ``owner`` and
    ``attribute`` (``Kept(10_000, "HTTPServer 'web'", "log")``), the first entry it
    drops is announced once on the ``labkit`` logger.

    Attributes:
        limit: how many entries it keeps
        dropped: how many entries came once it was full (counted, not kept)
    """

    def __init__(self, limit: int, owner: str | None = None, attribute: str = ""):
        super().__init__()
        self.limit, self.dropped = limit, 0
        self._owner, self._attribute = owner, attribute
        self._lock = threading.Lock()

    def append(self, entry: Any) -> None:
        with self._lock:
            if len(self) < self.limit:
                super().append(entry)
                return
            self.dropped += 1
            first = self.dropped == 1
        if first and self._owner:
            log.warning("%s: .%s keeps its first %s entries; later ones are only counted, "
                        "in .%s.dropped", self._owner, self._attribute, f"{self.limit:,}",
                        self._attribute)


def _attribute_lines(doc: str | None) -> dict[str, str]:
    """The ``name: what it is`` lines under a docstring's ``Attributes:`` heading, by name."""
    lines = inspect.cleandoc(doc or "").splitlines()
    if "Attributes:" not in lines:
        return {}
    found: dict[str, str] = {}
    for line in lines[lines.index("Attributes:") + 1:]:
        entry = re.match(r" {4}(\w+): \S", line)
        if entry:
            found[entry[1]] = line
        elif not line.startswith(" " * 8):   # (deeper: an entry's second line)
            break                             # a blank line, or the next heading
        elif found:
            found[next(reversed(found))] += "\n" + line
    return found


def with_inherited_attributes(cls: type) -> str:
    """``cls``'s docstring, and under it the ``Attributes:`` lines of each labkit class it
    builds on that it does not describe itself (help() shows only a class's own docstring,
    so a server's help would otherwise leave out what every server has)."""
    text = inspect.cleandoc(cls.__doc__ or "")
    seen = set(_attribute_lines(text))
    for base in cls.__mro__[1:]:
        if not base.__module__.startswith("labkit."):
            continue
        lines = {name: line for name, line in _attribute_lines(vars(base).get("__doc__")).items()
                 if name not in seen}
        if lines:
            text += f"\n\nAttributes from {base.__name__}:\n" + "\n".join(lines.values())
            seen |= set(lines)
    return text


def url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets (``[::1]``)."""
    return f"[{host}]" if ":" in host else host


def wake(*socks: socket.socket | None) -> None:
    """Shut sockets down to wake the threads blocked on them (accept/recv return at once).

    On Linux, ``shutdown`` (unlike ``close``) wakes a thread blocked in ``accept()``,
    ``recv()`` or ``recvfrom()`` on that socket; a socket already gone is skipped.
    """
    for sock in socks:
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected, or already closed: nothing blocks on it


def join_all(threads: Iterable[threading.Thread], timeout: float) -> list[str]:
    """Join ``threads`` within one overall ``timeout``; names of those still running."""
    deadline = time.monotonic() + timeout
    threads = list(threads)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [thread.name for thread in threads if thread.is_alive()]


def raise_first(errors: list[BaseException], who: str, more: int = 0) -> None:
    """Raise :class:`ServerError` for the first of ``errors`` (if any), naming ``who``.

    ``more`` counts errors that happened but were not kept.
    """
    if errors:
        first = errors[0]
        more += len(errors) - 1
        others = f" (and {more} more)" if more else ""
        raise ServerError(f"{who} raised {type(first).__name__}: {first}{others}") from first


# -- the lifecycle ------------------------------------------------------------------
class LabServer:
    """Start, ready, stop, join and error reporting, for every lab server.

    ``errors`` lists the exceptions the server's threads raised (at most
    ``MAX_ERRORS``; ``errors_dropped`` counts the rest); the ``with`` block raises the
    first as :class:`ServerError` when it ends.  Problems a client causes (a reset,
    a failed TLS handshake) are not errors: servers that see them keep serving.

    Attributes:
        host: the address it was asked to bind (``address`` says where it listens)
        name: its name in tables, ladders, thread names and errors
        errors: exceptions its threads raised, the first 100 (raised at the block's end)
        protocol: the transport its clients use: ``"tcp"`` or ``"udp"``
        speaks: the conversation it expects, in words (what a Capture labels it with)
    """

    _called: str | None = None  # how users make one, if not by the class name (for errors)
    protocol: str = "tcp"              # the transport its clients use: "tcp" or "udp"
    speaks: str = "bytes"              # the conversation it expects, in words

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__doc__ = with_inherited_attributes(cls)

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, name: str = "server"):
        self.host = arguments.host(host)
        self.name = arguments.server_name(name)
        self._requested_port = arguments.port(port)
        self.errors: Kept = Kept(MAX_ERRORS)   # (ServerError says how many more there were)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: set[threading.Thread] = set()   # running ones only: each removes itself
        self._running = False
        self._ran = False
        self._stop_finished = False   # stop() has finished: errors can no longer reach the cell

    # -- what a subclass provides --------------------------------------------------
    def _start(self) -> None:
        """Bind and start the threads; return once clients can connect."""
        raise NotImplementedError

    def _wake(self) -> None:
        """Make every thread return soon (``_stopping`` is set already)."""

    def _close(self) -> None:
        """Release what ``_start`` opened; the threads have ended (or are stuck)."""

    def _bound_address(self) -> tuple[Any, ...] | None:
        """``(host, port, ...)`` the server is bound to, or None while it is stopped."""
        raise NotImplementedError

    def _join_timeout(self) -> float:
        """Seconds all threads together get to end once woken."""
        return JOIN_TIMEOUT

    def _stuck_message(self, stuck: list[str]) -> str:
        """What to tell the owner about threads that did not end within JOIN_TIMEOUT."""
        return (f"{self.name}: {len(stuck)} thread(s) {stuck[:5]} did not finish within "
                f"{JOIN_TIMEOUT}s after the server stopped")

    # -- the context manager ------------------------------------------------------------
    def __enter__(self) -> Self:
        kind = self._called or type(self).__name__
        with _RUN_LOCK:
            if self._ran:
                raise RuntimeError(
                    f"{kind} {self.name!r} was already started (a server object runs once); "
                    f"create a new {kind}(...) for another run")
            self._ran = True
        try:
            self._start()
        except BaseException:
            self._stopping.set()
            self._wake()
            join_all(self._snapshot(), self._join_timeout())
            self._close()
            raise
        self._running = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        self.stop()
        if exc_type is None:
            self.raise_errors()
        return False

    def stop(self) -> None:
        """Stop serving, wake every thread and join them (within ``JOIN_TIMEOUT`` in all)."""
        if not self._running:
            return
        self._running = False
        self._stopping.set()
        try:
            self._wake()
            stuck = join_all(self._snapshot(), self._join_timeout())
        finally:
            self._close()
            self._stop_finished = True
        if stuck:
            raise RuntimeError(self._stuck_message(stuck))

    # -- errors ------------------------------------------------------------------------
    def record_error(self, exc: BaseException) -> None:
        """Keep ``exc`` for the owner (a flood of failures must not fill memory).

        An error after ``stop()`` (a thread that outlived its deadline) can no longer be
        raised in the owner's cell: it is kept and logged, never lost in silence.
        """
        self.errors.append(exc)
        if self._stop_finished:
            log.warning("%s raised %s after %s stopped: %s", self._who(), type(exc).__name__,
                        self.name, exc)

    @property
    def errors_dropped(self) -> int:
        """Errors that happened once ``errors`` was full (counted, not kept)."""
        return self.errors.dropped

    def raise_errors(self) -> None:
        """Raise the first of ``errors`` as :class:`ServerError` (the ``with`` does on exit)."""
        raise_first(list(self.errors), self._who(), self.errors.dropped)

    def _who(self) -> str:
        """Whose code raised, as ServerError says it."""
        return f"{self.name} handler"

    # -- threads -----------------------------------------------------------------------
    def _spawn(self, target: Callable[..., object], *args: Any,
               name: str | None = None) -> threading.Thread:
        """Run ``target(*args)`` in a thread that stop() joins; what it raises is recorded."""
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:  # noqa: BLE001 - reported to the owning cell
                # An OSError while stopping is the socket stop() shut down: expected.
                if not self._stopping.is_set() or not isinstance(exc, OSError):
                    self.record_error(exc)
            finally:
                with self._lock:
                    self._threads.discard(thread)

        thread = threading.Thread(target=run, daemon=True,
                                  name=f"{self.name}-{name or target.__name__}")
        with self._lock:  # registered and started at once: stop() never sees it unstarted
            thread.start()
            self._threads.add(thread)
        return thread

    def _snapshot(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads)

    # -- where it is ---------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server really listens on."""
        bound = self._bound_address()
        if bound is None:
            raise RuntimeError(f"{type(self).__name__} is not running: use it in a `with` block")
        host, port = bound[:2]
        return host, port

    @property
    def port(self) -> int:
        """The port it listens on (the one the system picked, if it was given 0)."""
        return self.address[1]

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Where it listens and what it expects there: what a Capture of it watches."""
        host, port = self.address
        return (Endpoint(self.protocol, host, port, self.name, self.speaks),)

    def _url(self, scheme: str, path: str = "") -> str:
        host, port = self.address
        return f"{scheme}://{url_host(host)}:{port}{path}"

    def __repr__(self) -> str:
        where = f"{url_host(self.host)}:{self.port}" if self._bound_address() else "stopped"
        return f"<{type(self).__name__} {self.name!r} {where}>"


class SocketServer(LabServer):
    """A :class:`LabServer` with one socket of its own (``_sock``), bound in ``_start``:
    closing it and telling where it is bound are the same for TCP and UDP."""

    _sock: socket.socket | None = None

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _bound_address(self) -> tuple[Any, ...] | None:
        return self._sock.getsockname() if self._sock else None
