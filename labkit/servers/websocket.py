"""A WebSocket server in a background thread.

    >>> async def echo(ws):                       # the student's code: plain websockets
    ...     async for message in ws:
    ...         await ws.send(message)
    >>> with WebSocketServer(echo) as server, Capture(server, name="08-echo") as wire:
    ...     async with websockets.connect(server.url, compression=None) as ws:
    ...         await ws.send("hello"); await ws.recv()
    >>> wire.table()     # the frames show as "WebSocket text FIN masked len=5 'hello'"

The ``websockets`` library does the real framing; captures show the frames it put
on the wire (see :mod:`labkit.protocols.websocket`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import sys
import threading
import weakref
from collections.abc import Callable, Coroutine, MutableMapping
from typing import TYPE_CHECKING, Any

from labkit.servers import arguments, base
from labkit.servers.base import LabServer, ServerError

if TYPE_CHECKING:
    from websockets.asyncio.server import Server, ServerConnection

__all__ = ["WebSocketServer", "WebSocketHandler"]

# async def handler(websocket): the student's code, awaited once per connection
WebSocketHandler = Callable[["ServerConnection"], Coroutine[Any, Any, object]]

CLOSE_TIMEOUT = 1.0   # seconds a client gets to answer the server's close frame
MAX_SECONDS = 3600.0  # the longest timeout or ping interval an option may ask for


# -- the options serve() takes, checked before anything starts -----------------------------
def _seconds(value: object, what: str) -> float | None:
    return None if value is None else \
        arguments.number(value, what, 0, MAX_SECONDS, "1.0, or None for never", above_low=True)


def _limit(value: object, what: str, low: int, example: str, none: bool = True
           ) -> int | tuple[int | None, ...] | None:
    """An int limit, None (no limit, where allowed), or websockets' (high, low) pair."""
    if isinstance(value, tuple) and len(value) == 2:
        return tuple(_single_limit(v, what, low, example) for v in value)
    return _single_limit(value, what, low, example, none)


def _single_limit(value: object, what: str, low: int, example: str, none: bool = True
                  ) -> int | None:
    if value is None and none:
        return None
    return arguments.integer(value, what, low, 2**31 - 1, example)


def _strings(value: object, what: str) -> object:
    if value is None:
        return None
    items = arguments.instance(value, what, (list, tuple), "None or a list of str", "['chat']")
    for item in items:
        arguments.instance(item, f"each of {what}", str, "a str", "'chat'")
    return value


def _optional_function(value: object, what: str) -> Callable[..., Any] | None:
    return None if value is None else arguments.function(value, what, "None or a function")


def _origins(value: object, what: str) -> object:
    if value is None:
        return None
    items = arguments.instance(value, what, (list, tuple), "None or a list of origins",
                               "['http://localhost:8888']")
    for item in items:
        if item is not None:
            arguments.instance(item, f"each of {what}", (str, re.Pattern),
                               "a str, a re.Pattern or None", "'http://localhost:8888'")
    return value


def _sequence(value: object, what: str) -> object:
    return None if value is None else \
        arguments.instance(value, what, (list, tuple), "None or a list")


def _logger(value: object, what: str) -> object:
    return None if value is None else arguments.instance(
        value, what, (str, logging.Logger, logging.LoggerAdapter),
        "None, a logger name or a logging.Logger", "'websockets.server'")


# websockets.asyncio.server.serve()'s keyword arguments, and their checks
OPTIONS: dict[str, Callable[[Any, str], object]] = {
    "compression": lambda v, what: arguments.one_of(v, what, [None, "deflate"]),
    "open_timeout": _seconds, "ping_interval": _seconds, "ping_timeout": _seconds,
    "close_timeout": _seconds,
    "max_size": lambda v, what: _limit(v, what, 1, "2**20 bytes"),
    "max_queue": lambda v, what: _limit(v, what, 1, "16 messages"),
    "write_limit": lambda v, what: _limit(v, what, 0, "2**15 bytes", none=False),
    "subprotocols": _strings,
    "origins": _origins, "extensions": _sequence, "logger": _logger,
    "select_subprotocol": _optional_function, "process_request": _optional_function,
    "process_response": _optional_function,
    "server_header": lambda v, what: None if v is None else
    arguments.instance(v, what, str, "None or a str", "'labkit'"),
    "ssl": lambda v, what: None if v is None else
    arguments.instance(v, what, ssl.SSLContext, "None or an ssl.SSLContext"),
    "backlog": lambda v, what: arguments.integer(v, what, 1, 65535, "100"),
}


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` if each is one serve() takes, of a type and value it takes."""
    for key, value in options.items():
        if key in ("port", "sock"):
            arguments.fail(TypeError, key, "left out", value,
                           why="WebSocketServer picks a free loopback port itself")
        if key not in OPTIONS:
            arguments.fail(TypeError, "each option", f"one of {', '.join(sorted(OPTIONS))}",
                           key, why="these are websockets' serve() options")
        OPTIONS[key](value, key)
    return options


class _ErrorsKept(logging.LoggerAdapter[logging.Logger | logging.LoggerAdapter[Any]]):
    """websockets' logger, except that what it logs about a failure of the server's own
    code (``process_request`` raised, a bad option, an internal error) is kept in
    ``server.errors`` - raised in the owning cell at exit, not printed into whatever cell
    runs at the time, and never lost while every handshake fails."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any],
                 server: LabServer) -> None:
        super().__init__(logger, {})
        self.server = server

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]
                ) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs  # websockets' own adapter's extra ({"websocket": ...}) kept

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        exc = sys.exc_info()[1] if kwargs.get("exc_info") else None
        # (a handler's exception is kept by _guarded already)
        if level >= logging.ERROR and exc is not None and msg != "connection handler failed":
            self.server.record_error(exc)
            return
        super().log(level, msg, *args, **kwargs)


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

    Attributes:
        handler: the student's ``async def handler(websocket)``, awaited per connection
        options: what goes to websockets' ``serve()`` (compression off unless asked for)
    """

    speaks = "WebSocket (RFC 6455), after an HTTP/1.1 upgrade"

    def __init__(self, handler: WebSocketHandler, *, host: str = "127.0.0.1",
                 name: str = "server", **options: Any) -> None:
        must = "an async function handler(websocket)"
        arguments.function(handler, "handler", must, "async def echo(ws): ...")
        if not asyncio.iscoroutinefunction(handler):
            arguments.fail(TypeError, "handler", must, handler, "async def echo(ws): ...",
                           "websockets awaits it once per connection, so it must be `async def`")
        super().__init__(host=host, name=name)
        self.handler = handler
        self.options = {"compression": None, "close_timeout": CLOSE_TIMEOUT,
                        **check_options(options)}
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stuck = False   # handlers still running when the server had to be done
        self._handlers = 0     # handler calls running now
        self._handlers_changed = threading.Condition()

    def _bound_address(self) -> tuple[Any, ...] | None:
        return self._server.sockets[0].getsockname() if self._server else None

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT/`` (an IPv6 host in brackets), for ``websockets.connect``."""
        return self._url("ws", "/")

    def wait_for_handlers(self, count: int, timeout: float) -> bool:
        """Wait until exactly ``count`` handler calls are running; False after ``timeout`` s.

        For a test or a check that must know the server saw a client go, e.g. after
        ``ws.transport.abort()``: ``await asyncio.to_thread(server.wait_for_handlers, 2, 5)``.
        """
        with self._handlers_changed:
            return self._handlers_changed.wait_for(lambda: self._handlers == count, timeout)

    def _count_handlers(self, step: int) -> None:
        with self._handlers_changed:
            self._handlers += step
            self._handlers_changed.notify_all()

    async def _guarded(self, websocket: ServerConnection) -> None:
        from websockets.exceptions import ConnectionClosed

        self._count_handlers(+1)
        try:
            await self.handler(websocket)
        except ConnectionClosed:
            pass  # the client went away: normal life for a server
        except Exception as exc:
            self.record_error(exc)
            raise  # websockets closes that connection with 1011 (internal error)
        finally:
            self._count_handlers(-1)

    def _grace(self) -> float:
        """Seconds the closing handshakes get (all at once) before connections are cut."""
        return float(self.options.get("close_timeout") or 0) + 1.0

    async def _main(self) -> None:
        from websockets.asyncio.server import ServerConnection, serve

        # every TCP connection, in its opening handshake or after
        accepted: weakref.WeakSet[ServerConnection] = weakref.WeakSet()

        class Tracked(ServerConnection):
            # server.all_connections lists a connection only once its opening handshake is
            # done: a client silent before that would hold stop() for open_timeout (10 s).
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                accepted.add(self)

        loop = asyncio.get_running_loop()
        self._stopped = stopped = loop.create_future()
        self._loop = loop  # after the future: _wake() needs both
        logger = self.options.get("logger") or "websockets.server"
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        server = await serve(self._guarded, self.host, 0,
                             **{"create_connection": Tracked, **self.options,
                                "logger": _ErrorsKept(logger, self)})
        self._server = server
        self._ready.set()
        await stopped
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
        if loop is not None and stopped is not None and not loop.is_closed():
            def wake() -> None:
                if not stopped.done():  # stop() may wake it twice
                    stopped.set_result(None)

            try:
                loop.call_soon_threadsafe(wake)
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

    def __repr__(self) -> str:
        where = f"{self.url}" if self._server else "stopped"
        return f"<WebSocketServer {self.name!r} {where}>"
