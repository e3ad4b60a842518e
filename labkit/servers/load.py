"""Run a student's server in a thread, and put a bounded load on it.

    >>> def echo_server(listener, stop):          # the student's code: plain sockets
    ...     while not stop.is_set():
    ...         conn, addr = listener.accept()
    ...         with conn:
    ...             while data := conn.recv(4096):
    ...                 conn.sendall(data)
    >>> with BackgroundServer(echo_server) as server:
    ...     result = load(server, clients=8, requests=50)
    >>> result.rps, result.p50_ms, result.p99_ms

:class:`BackgroundServer` hands ``serve(listener, stop)`` a listening socket on
127.0.0.1 and a stop event (``threading.Event``, or ``asyncio.Event`` when ``serve``
is ``async def``, then run by ``asyncio.run`` in its own thread).

:func:`load` runs the clients in a separate Python process (asyncio, one task per
client), so the clients never compete with the server for the notebook's GIL.  Every
run is bounded: at most ``clients * requests`` requests and at most ``timeout``
seconds, after which it stops by itself and reports what it got.

The client program is :mod:`labkit.servers.loadclient` (standard library only).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from labkit.servers import arguments, base, loadclient
from labkit.servers.base import LabServer

__all__ = ["BackgroundServer", "load", "LoadResult", "percentile", "SlowReader"]

# serve(listener, stop): the student's server; async def with an asyncio.Event to stop
Serve = (Callable[[socket.socket, threading.Event], object]
         | Callable[[socket.socket, asyncio.Event], Coroutine[Any, Any, object]])

MAX_CLIENTS = 1000
MAX_REQUESTS = 200_000     # clients * requests, in one run
MAX_TIMEOUT = 120.0


# -- percentiles ---------------------------------------------------------------------------
def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolating between ranks.

    Same definition as ``numpy.percentile``'s default ("linear"): sort, then the
    value at fractional rank ``(n - 1) * q / 100``.
    """
    arguments.number(q, "q", 0, 100, "50 for the median")
    data = sorted(values)
    if not data:
        arguments.fail(ValueError, "values", "at least one number", data,
                       why="run some requests first")
    rank = (len(data) - 1) * q / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return float(data[lo] + (data[hi] - data[lo]) * (rank - lo))


# -- the student's server, in a thread --------------------------------------------------------
class BackgroundServer(LabServer):
    """Run ``serve(listener, stop)`` in a thread; a context manager like every lab server.

    ``listener`` is a TCP socket already listening on 127.0.0.1 (port chosen by the
    OS unless ``port`` is given, ``backlog`` pending connections), so clients may
    connect as soon as ``__enter__`` returns.  ``stop`` is set on exit; ``serve`` must
    then return.  A blocking ``accept()`` is woken on exit (the listener is shut down,
    which raises ``OSError`` in ``serve``; that is expected and not reported).  Any
    other exception comes back to the ``with`` block as :class:`~labkit.ServerError`.
    Like every labkit server it runs once: entering it again raises ``RuntimeError``.

    Attributes:
        serve: the student's server function, ``serve(listener, stop)``
        backlog: connections the kernel queues until ``serve`` accepts them
        is_async: True if ``serve`` is ``async def`` (run by asyncio in its thread)
    """

    def __init__(self, serve: Serve, *, host: str = "127.0.0.1", port: int = 0,
                 name: str = "server", backlog: int = 128) -> None:
        arguments.function(serve, "serve", "a function serve(listener, stop)")
        super().__init__(host=host, port=port, name=name)
        self.serve = serve
        self.backlog = arguments.integer(backlog, "backlog", 1, 4096, "128")
        self.speaks = f"whatever {getattr(serve, '__name__', 'serve')}(listener, stop) answers"
        self.is_async = inspect.iscoroutinefunction(serve)
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_stop: asyncio.Event | None = None
        self._started = threading.Event()

    def _bound_address(self) -> tuple[Any, ...] | None:
        return self._listener.getsockname() if self._listener else None

    def _start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._listener = listener = socket.create_server(
            (self.host, self._requested_port), family=family, backlog=self.backlog)
        self._spawn(self._run, listener, name="serve")
        if self.is_async and not self._started.wait(base.JOIN_TIMEOUT):
            raise RuntimeError(
                f"{self.name}: the asyncio loop did not start within {base.JOIN_TIMEOUT}s")

    def _run(self, listener: socket.socket) -> None:
        try:
            if self.is_async:
                asyncio.run(self._run_async(listener))
            else:
                serve = cast(Callable[[socket.socket, threading.Event], object], self.serve)
                serve(listener, self._stopping)
        finally:
            self._started.set()

    async def _run_async(self, listener: socket.socket) -> None:
        self._async_stop = stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()  # after the event: _wake() needs both
        self._started.set()
        serve = cast(Callable[[socket.socket, asyncio.Event], Coroutine[Any, Any, object]],
                     self.serve)
        await serve(listener, stop)

    def _wake(self) -> None:
        if self.is_async:
            loop, stop = self._loop, self._async_stop
            if loop is not None and stop is not None and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(stop.set)
                except RuntimeError:
                    pass  # the loop already finished
        else:
            base.wake(self._listener)  # wakes a blocking accept()

    def _close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _stuck_message(self, stuck: list[str]) -> str:
        return (f"{self.name}: serve() did not return within {base.JOIN_TIMEOUT}s of stop being "
                "set; check `stop.is_set()` in its loop (or `await stop.wait()` when it is "
                "async), and close client connections first")

    def _who(self) -> str:
        return self.name


# -- the load generator ------------------------------------------------------------------------
@dataclass
class LoadResult:
    """What one :func:`load` run measured.

    Attributes:
        clients: how many clients ran at the same time
        requests: how many requests each client sent
        completed: requests answered correctly
        elapsed: seconds from the first connect to the last answer
        latencies: seconds each answered request took, sorted
        errors: how many clients failed, by kind of failure (``{'wrong answer': 2}``)
        timed_out: True if the run stopped at its time limit
    """

    clients: int
    requests: int
    completed: int
    elapsed: float
    latencies: list[float] = field(repr=False, default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """Every request of every client was answered correctly, in time."""
        return self.completed == self.clients * self.requests and not self.errors

    @property
    def rps(self) -> float:
        """Requests answered per second."""
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        """The ``q``-th percentile of the latencies, in milliseconds."""
        return percentile(self.latencies, q) * 1000

    @property
    def p50_ms(self) -> float:
        """The median latency in milliseconds: half the requests took longer."""
        return self.latency_ms(50)

    @property
    def p99_ms(self) -> float:
        """The 99th-percentile latency in milliseconds: 1 request in 100 took longer."""
        return self.latency_ms(99)

    def __str__(self) -> str:
        text = (f"{self.clients} clients × {self.requests} requests: "
                f"{self.completed}/{self.clients * self.requests} answered in {self.elapsed:.2f} s")
        if self.latencies:
            text += f", {self.rps:,.0f} req/s, p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms"
        if self.errors:
            text += f", errors {dict(sorted(self.errors.items()))}"
        if self.timed_out:
            text += " (stopped at the time limit)"
        return text


def _check_target(target: LabServer | tuple[Any, ...]) -> tuple[str, int]:
    address = target.address if isinstance(target, LabServer) else target
    if not (isinstance(address, tuple) and len(address) in (2, 4)):
        arguments.fail(TypeError, "target", "a running server or a (host, port) tuple", target,
                       "('127.0.0.1', 8080)")
    return arguments.host(address[0]), arguments.port(address[1], low=1)


def load(target: LabServer | tuple[Any, ...], *, clients: int = 10, requests: int = 100,
         message: bytes = b"ping\n", expect: bytes | None = None, hold_open: bool = False,
         timeout: float = 10.0) -> LoadResult:
    """Run ``clients`` concurrent connections, each sending ``message`` ``requests`` times.

    Each request writes ``message`` and waits for ``len(expect)`` bytes that must equal
    ``expect`` (default: the message itself, i.e. an echo).  The latency of a request is
    from its write to its full answer.  With ``hold_open``, every client keeps its
    connection open until all clients have finished (a server that serves one
    connection at a time cannot pass that).  The run stops by itself after
    ``timeout`` seconds at most; the clients run in a child process.
    """
    host, port = _check_target(target)
    arguments.integer(clients, "clients", 1, MAX_CLIENTS, "10")
    arguments.integer(requests, "requests", 1, MAX_REQUESTS, "100")
    if clients * requests > MAX_REQUESTS:
        arguments.fail(ValueError, "clients * requests", f"at most {MAX_REQUESTS:,} per run",
                       clients * requests, why="use fewer requests per client")
    expect = message if expect is None else expect
    for name, value in (("message", message), ("expect", expect)):
        arguments.instance(value, name, (bytes, bytearray), "1 to 65536 bytes", "b'ping\\n'")
        if not 1 <= len(value) <= 65536:
            arguments.fail(ValueError, name, "1 to 65536 bytes", value, "b'ping\\n'")
    arguments.flag(hold_open, "hold_open")
    arguments.number(timeout, "timeout", 0, MAX_TIMEOUT, "10 seconds", above_low=True)
    job = {"host": host, "port": port, "clients": clients, "requests": requests,
           "message": bytes(message).hex(), "expect": bytes(expect).hex(),
           "hold_open": bool(hold_open), "timeout": float(timeout)}
    try:
        done = subprocess.run([sys.executable, "-I", "-S", loadclient.__file__],
                              input=json.dumps(job),
                              capture_output=True, text=True, timeout=timeout + 15)
    except subprocess.TimeoutExpired:  # run() has killed the child
        raise RuntimeError(f"the load generator did not stop within {timeout + 15:.0f}s") from None
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr.strip()[-400:]}")
    out = json.loads(done.stdout)
    return LoadResult(clients, requests, out["completed"], out["elapsed"],
                      sorted(out["latencies"]), out["errors"], out["timed_out"])


# -- a client that stops reading -----------------------------------------------------------------
class SlowReader:
    """A client that sends to an echo server and never reads the answers.

    On enter it sends 64 KiB blocks until the connection is full in both directions:
    its socket refuses more bytes for ``quiet`` seconds (the server stopped reading
    from it), or ``max_bytes`` were sent, or ``FILL_LIMIT`` seconds passed (a server
    that reads, but slowly).  It keeps the connection open, unread, until exit.
    ``stuck`` says the server stopped reading.  Use each SlowReader once.

    Attributes:
        target: the ``(host, port)`` it connects to
        max_bytes: the most it sends
        quiet: seconds a send may wait for room before the server counts as stuck
        FILL_LIMIT: seconds it sends at most
        bytes_sent: bytes sent so far
        stuck: True once the server stopped reading (a send waited ``quiet`` seconds)
    """

    FILL_LIMIT = 30.0

    def __init__(self, target: LabServer | tuple[Any, ...], *, max_bytes: int = 64 * 2**20,
                 quiet: float = 0.2) -> None:
        self.target = _check_target(target)
        self.max_bytes = arguments.integer(max_bytes, "max_bytes", 1, 2**31, "2**20")
        self.quiet = arguments.number(quiet, "quiet", 0, 10, "0.2 seconds", above_low=True)
        self.bytes_sent = 0
        self.stuck = False
        self._sock: socket.socket | None = None
        self._used = False

    def __enter__(self) -> SlowReader:
        if self._used:
            raise RuntimeError("this SlowReader was already used; create a new SlowReader(...)")
        self._used = True
        self._sock = sock = socket.create_connection(self.target, timeout=5)
        sock.settimeout(self.quiet)  # send() waits at most this long for room in the buffer
        block = b"x" * 65536
        deadline = time.monotonic() + self.FILL_LIMIT
        try:
            while self.bytes_sent < self.max_bytes and time.monotonic() < deadline:
                try:
                    self.bytes_sent += sock.send(block)
                except TimeoutError:
                    self.stuck = True
                    break
        except BaseException:
            self.__exit__(None, None, None)  # e.g. the server reset: do not leak the socket
            raise
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return False
