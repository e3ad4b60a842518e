"""A tornado application (HTTP, WebSocket) served on loopback from a background thread.

    >>> class Echo(tornado.websocket.WebSocketHandler):      # the student's code: plain tornado
    ...     def on_message(self, message):
    ...         self.write_message(message)
    >>> with TornadoServer([("/", Echo)]) as server, Capture(server, name="08-tornado") as wire:
    ...     ws = await tornado.websocket.websocket_connect(server.url("ws"))
    ...     await ws.write_message("hello"); await ws.read_message()

The server runs ``tornado.web.Application(handlers)`` on an event loop of its own in a
thread, so the notebook's loop (top-level ``await``) is free for tornado's client. An
error a handler raises (tornado logs it and answers 500, or closes the WebSocket) is kept
in ``server.errors`` and raised in the owning cell when the ``with`` block ends, as with
every lab server; tornado's other log lines (each request, a malformed one) stay quiet.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

from labkit.servers import arguments, base
from labkit.servers.base import LabServer, ServerError

__all__ = ["TornadoServer"]

CLOSE_GRACE = 1.0  # s open connections get to close when the server stops


class _Kept(logging.Handler):
    """Tornado's log, while a server runs: errors with a traceback go to ``server.errors``."""

    def __init__(self, server: LabServer) -> None:
        super().__init__(logging.ERROR)
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.server.record_error(record.exc_info[1])


def _quiet(handler: object) -> None:
    """Tornado's access log, silenced: the capture shows every request."""


class TornadoServer(LabServer):
    """Serve ``tornado.web.Application(handlers, **settings)`` on loopback, in a thread.

    ``handlers``: tornado's list of ``(path pattern, RequestHandler subclass)``. Ready when
    ``__enter__`` returns; on exit it stops listening, closes the connections still open
    (within ``CLOSE_GRACE`` s) and joins. ``server.url("ws", "/chat")`` is a URL for it.

    Attributes:
        handlers: the ``(path pattern, handler class)`` rules the application routes by
        settings: what else goes to ``tornado.web.Application`` (e.g. ``debug=True``)
    """

    protocol = "tcp"
    speaks = "HTTP/1.1 and WebSocket (RFC 6455), by tornado"

    def __init__(self, handlers: list[tuple[Any, ...]], *, host: str = "127.0.0.1",
                 name: str = "server", **settings: Any) -> None:
        if not isinstance(handlers, list) or not all(
                isinstance(rule, tuple) and len(rule) >= 2 for rule in handlers):
            arguments.fail(TypeError, "handlers", "tornado's list of (path, handler class) "
                           "tuples", handlers, "[('/', EchoHandler)]")
        for key in ("port", "sock"):
            if key in settings:
                arguments.fail(TypeError, key, "left out", settings[key],
                               why="TornadoServer picks a free loopback port itself")
        super().__init__(host=host, name=name)
        self.handlers = handlers
        self.settings = settings
        self._sockets: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._log = _Kept(self)
        self._propagated = True

    def url(self, scheme: str = "http", path: str = "/") -> str:
        """``http://127.0.0.1:PORT/`` or, with ``scheme="ws"``, the WebSocket URL."""
        if scheme not in ("http", "ws"):
            raise ValueError(f"scheme must be 'http' or 'ws', not {scheme!r}")
        return self._url(scheme, path)

    def _bound_address(self) -> tuple[Any, ...] | None:
        return self._sockets[0].getsockname() if self._sockets else None

    async def _main(self) -> None:
        import tornado.httpserver
        import tornado.netutil
        import tornado.web

        loop = asyncio.get_running_loop()
        self._stopped = stopped = loop.create_future()
        self._loop = loop
        # no access log line per request (a 405 is a warning there) unless asked for
        app = tornado.web.Application(self.handlers, **{"log_function": _quiet, **self.settings})
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sockets = tornado.netutil.bind_sockets(0, self.host, family=family)
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        self._sockets = sockets
        self._ready.set()
        await stopped
        server.stop()  # stop listening
        try:
            await asyncio.wait_for(server.close_all_connections(), CLOSE_GRACE)
        except TimeoutError:
            pass  # asyncio.run cancels what is left when we return

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the owning cell
            if self._ready.is_set():
                self.record_error(exc)
            else:
                self._startup_error = exc
        finally:
            self._ready.set()

    def _start(self) -> None:
        import tornado.web  # noqa: F401 - imported here, not in the start timeout

        tornado_log = logging.getLogger("tornado")
        tornado_log.addHandler(self._log)
        # tornado's own lines (each request, a 405) stay out of the cells while we run
        self._propagated, tornado_log.propagate = tornado_log.propagate, False
        self._spawn(self._run, name="tornado")
        if not self._ready.wait(base.JOIN_TIMEOUT):
            raise RuntimeError(f"{self.name}: tornado did not start in {base.JOIN_TIMEOUT}s")
        if self._startup_error is not None:
            raise ServerError(f"{self.name} could not start: {self._startup_error}") \
                from self._startup_error

    def _wake(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            def wake() -> None:
                if not stopped.done():
                    stopped.set_result(None)

            try:
                loop.call_soon_threadsafe(wake)
            except RuntimeError:
                pass  # the loop has just finished

    def _join_timeout(self) -> float:
        return CLOSE_GRACE + base.JOIN_TIMEOUT

    def _close(self) -> None:
        tornado_log = logging.getLogger("tornado")
        tornado_log.removeHandler(self._log)
        tornado_log.propagate = self._propagated
        self._sockets = []

    def _who(self) -> str:
        return f"{self.name}'s tornado handler"
