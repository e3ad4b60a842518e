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
import threading

from labkit.servers.base import (JOIN_TIMEOUT, MAX_ERRORS, LoopbackAddress, ServerError, _check_host,
                       check_name, claim_run, raise_first)

__all__ = ["WebSocketServer"]

CLOSE_TIMEOUT = 1.0   # seconds a client gets to answer the server's close frame


# -- the server -----------------------------------------------------------------------------------
class WebSocketServer(LoopbackAddress):
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
    """

    def __init__(self, handler, *, host: str = "127.0.0.1", name: str = "server", **options):
        if not callable(handler):
            raise TypeError(
                f"WebSocketServer needs an async function handler(websocket), "
                f"not {type(handler).__name__}"
            )
        if not asyncio.iscoroutinefunction(handler):
            raise TypeError(
                f"handler {getattr(handler, '__name__', handler)!r} must be `async def`: "
                "websockets awaits it once per connection"
            )
        if "port" in options or "sock" in options:
            raise ValueError("WebSocketServer picks a free loopback port itself; drop port=/sock=")
        self.handler = handler
        self.host = _check_host(host)
        self.name = check_name(name)
        self.options = {"compression": None, "close_timeout": CLOSE_TIMEOUT, **options}
        self.errors: list[BaseException] = []
        self._server = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stuck = False   # handlers still running when the server had to be done

    def _bound_address(self):
        return self._server.sockets[0].getsockname() if self._server else None

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT/``, for ``websockets.connect``."""
        host, port = self.address
        return f"ws://{host}:{port}/" if ":" not in host else f"ws://[{host}]:{port}/"

    async def _guarded(self, websocket):
        from websockets.exceptions import ConnectionClosed

        try:
            await self.handler(websocket)
        except ConnectionClosed:
            pass  # the client went away: normal life for a server
        except Exception as exc:
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(exc)
            raise  # websockets closes that connection with 1011 (internal error)

    def _grace(self) -> float:
        """Seconds the closing handshakes get (all at once) before connections are cut."""
        return float(self.options.get("close_timeout") or 0) + 1.0

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        server = await serve(self._guarded, self.host, 0, **self.options)
        self._server = server
        self._ready.set()
        await self._stopped
        server.close()  # stop accepting; close every connection with 1001 (going away)
        closed = asyncio.ensure_future(server.wait_closed())
        if not (await asyncio.wait({closed}, timeout=self._grace()))[0]:
            for connection in list(server.all_connections):
                connection.transport.abort()  # silent clients, in the handshake or after it
            # Handlers see their connection closed now; one that still runs is stuck
            # (asyncio.run cancels it when we return).
            self._stuck = not (await asyncio.wait({closed}, timeout=JOIN_TIMEOUT))[0]

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the owning cell
            if self._ready.is_set():
                self.errors.append(exc)
            else:
                self._startup_error = exc
        finally:
            self._ready.set()  # only now: __enter__ sees the startup error, if any

    def __enter__(self) -> "WebSocketServer":
        claim_run(self)
        import websockets.asyncio.server  # noqa: F401 - imported here, not in the start timeout

        self._thread = threading.Thread(target=self._run, name=f"{self.name}-websocket",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(JOIN_TIMEOUT):
            self._thread = None  # a daemon thread stuck starting: nothing left to stop
            raise RuntimeError(
                f"{self.name}: the WebSocket server did not start in {JOIN_TIMEOUT}s")
        if self._startup_error is not None:
            self._thread.join(JOIN_TIMEOUT)
            self._thread = None
            raise ServerError(f"{self.name} could not start: {self._startup_error}") \
                from self._startup_error
        return self

    def stop(self) -> None:
        """Close every connection, stop the loop and join it (bounded)."""
        if self._thread is None:
            return
        loop, stopped = self._loop, self._stopped
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(lambda: stopped.done() or stopped.set_result(None))
            except RuntimeError:
                pass  # the loop has just finished
        self._thread.join(self._grace() + 2 * JOIN_TIMEOUT)
        alive = self._thread.is_alive()
        self._thread = None
        self._server = None
        if alive or self._stuck:
            raise RuntimeError(
                f"{self.name}: a handler did not return within {JOIN_TIMEOUT:g}s of the "
                "server closing its connection; a handler must return (or await the "
                "connection) when the client goes away"
            )

    def raise_errors(self) -> None:
        errors, self.errors = self.errors, []
        raise_first(errors, f"{self.name} handler")

    def __exit__(self, exc_type, *_):
        self.stop()
        if exc_type is None:
            self.raise_errors()
        return False

    def __repr__(self):
        where = f"{self.url}" if self._server else "stopped"
        return f"<WebSocketServer {self.name!r} {where}>"
