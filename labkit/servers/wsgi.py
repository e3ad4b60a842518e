"""Run servers written with the standard library or a framework in a thread.

:func:`serve_in_thread` hosts any ``socketserver``/``http.server`` server;
:class:`WSGIServer` hosts a WSGI application (a plain function or a Flask app) on
``wsgiref``.  Both are lab servers (:class:`~labkit.servers.base.LabServer`):
listening when the ``with`` starts, shut down and joined at its end, and an exception
from a request handler or the app is raised again in the cell as ``ServerError``.

    >>> with WSGIServer(app) as server:
    ...     urllib.request.urlopen(server.url + "/hello").read()
"""

from __future__ import annotations

import io
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import WSGIServer as _WsgirefServer
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from labkit.servers import arguments, base
from labkit.servers.base import Kept, LabServer, wake
from labkit.servers.http_message import cut

__all__ = ["serve_in_thread", "SocketServerThread", "WSGIServer"]

IDLE_TIMEOUT = 10.0   # seconds a WSGI client may stay silent before its connection is closed
LOG_LIMIT = 10_000    # entries kept in WSGIServer.log
RETRY_PAUSE = 0.05    # seconds between tries to start a request thread when none can start


class _SocketServerHost(LabServer):
    """A LabServer whose serving is a socketserver's ``serve_forever`` in a thread."""

    _socketserver: socketserver.BaseServer | None = None
    _thread: threading.Thread | None = None   # the serve_forever thread

    def _make_server(self) -> socketserver.BaseServer:
        raise NotImplementedError

    def _start(self) -> None:
        self._socketserver = self._make_server()  # listening: ready for clients now
        self._thread = self._spawn(self._socketserver.serve_forever, 0.05, name="serve")

    def _wake(self) -> None:
        # shutdown() waits for serve_forever, which waits for a running request: in a
        # thread of its own, so a single-threaded server stuck in a handler cannot block
        # the cell (both threads then get the same JOIN_TIMEOUT).
        if self._thread is not None and self._socketserver is not None:
            self._spawn(self._socketserver.shutdown, name="shutdown")

    def _close(self) -> None:
        if self._socketserver is not None:
            self._socketserver.server_close()

    def _bound_address(self) -> tuple[Any, ...] | None:
        server = self._socketserver
        if not self._running or server is None or not isinstance(server.server_address, tuple):
            return None  # (an IP server's address is a tuple: SocketServerThread checked)
        return server.server_address

    def _stuck_message(self, stuck: list[str]) -> str:
        return (f"{type(self._socketserver).__name__} did not stop within "
                f"{base.JOIN_TIMEOUT:g} s: a request handler is still running (a client that "
                "keeps its connection open, or a handler that never returns); use "
                "ThreadingHTTPServer or end the handler")

    def _record_handler_error(self, request: object, client_address: Any) -> None:
        exc = sys.exc_info()[1]  # handle_error is called from an except block
        gone = (ConnectionError, TimeoutError)  # a client gone: not a bug
        if exc is not None and not isinstance(exc, gone):
            self.record_error(exc)


# -- any socketserver in a thread ------------------------------------------------
class SocketServerThread(_SocketServerHost):
    """A ``socketserver`` server serving in a thread; made by :func:`serve_in_thread`.

    Attributes:
        server: the student's server (what ``with serve_in_thread(server) as s`` gives)
    """

    _called = "serve_in_thread"

    def __init__(self, server: socketserver.BaseServer) -> None:
        arguments.instance(server, "server", socketserver.BaseServer,
                           "a socketserver server",
                           "http.server.HTTPServer(('127.0.0.1', 0), Handler)")
        try:
            if not isinstance(server.server_address, tuple):
                arguments.fail(TypeError, "server", "a server on an IP address and port",
                               server.server_address)
            host, port = server.server_address[:2]
            super().__init__(host=host, port=port, name=type(server).__name__[:64])
        except (TypeError, ValueError) as exc:
            server.server_close()  # refused: the socket the student bound is let go too
            raise type(exc)(f"{exc} (serve_in_thread closed this server: make it again "
                            "on 127.0.0.1)") from None
        self.server = server
        datagrams = getattr(server, "socket_type", None) == socket.SOCK_DGRAM
        self.protocol = "udp" if datagrams else "tcp"
        handler = getattr(server.RequestHandlerClass, "__name__", "its request handler")
        self.speaks = f"whatever {handler} answers"
        original = server.handle_error

        def handle_error(request: Any, client_address: Any) -> None:
            self._record_handler_error(request, client_address)
            custom = getattr(original, "__func__", None)
            if custom not in (None, socketserver.BaseServer.handle_error):
                original(request, client_address)

        # the default prints to stderr; patched on this one object, which the student made
        server.handle_error = handle_error  # type: ignore[method-assign]

    def _make_server(self) -> socketserver.BaseServer:
        return self.server  # bound and listening since the student made it

    # (not Self: `with serve_in_thread(server) as s` gives back the student's own server)
    def __enter__(self) -> socketserver.BaseServer:  # type: ignore[override]
        super().__enter__()
        return self.server  # what the student made, as `with ... as server` names it


def serve_in_thread(server: socketserver.BaseServer) -> SocketServerThread:
    """Run a ``socketserver``/``http.server`` server's ``serve_forever`` in a thread.

        >>> server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        >>> with serve_in_thread(server) as server:
        ...     urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/")

    ``with`` gives back the server itself; it is listening already, so it is ready as
    soon as the ``with`` starts.  On exit: ``shutdown()``, ``server_close()``, join,
    and an exception raised by a request handler is raised again in the cell (the
    server itself answers 500 or drops that connection, and keeps serving others).
    """
    return SocketServerThread(server)


# -- WSGI ---------------------------------------------------------------------
class _QuietHandler(WSGIRequestHandler):
    """wsgiref's handler, logging into the server's list instead of stderr."""

    server: _LabWSGIServer
    timeout = IDLE_TIMEOUT  # (StreamRequestHandler sets it on the connection)

    def log_message(self, format: str, *args: Any) -> None:  # wsgiref's signature
        self.server.owner.log.append(cut(format % args, 200))  # not a 60 KB URL

    def get_stderr(self) -> io.StringIO:
        return io.StringIO()  # app tracebacks: reported to the cell on exit instead


class _LabWSGIServer(_WsgirefServer):
    """wsgiref's server, each connection served in a thread its WSGIServer owns (so it is
    closed and joined when the ``with`` block ends)."""

    owner: WSGIServer

    def process_request(self, request: Any, client_address: Any) -> None:
        self.owner._hand_over(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Silent: wsgiref would print app tracebacks to stderr; WSGIServer records them."""


class _LabWSGIServer6(_LabWSGIServer):
    address_family = socket.AF_INET6  # socketserver binds IPv4 unless the class says so


class WSGIServer(_SocketServerHost):
    """Serve a WSGI application (a function or a Flask app) with ``wsgiref`` in threads.

        >>> def app(environ, start_response):
        ...     start_response("200 OK", [("Content-Type", "text/plain")])
        ...     return [b"hi\\n"]
        >>> with WSGIServer(app) as server:
        ...     urllib.request.urlopen(server.url + "/").read()
        b'hi\\n'

    An exception escaping the app becomes a 500 for that client and is raised
    again when the ``with`` block ends.  Each connection is served in a thread of its
    own; on exit every connection is closed and every thread joined, so no request is
    answered (or fails unreported) after the block.  ``log`` lists wsgiref's lines
    (``'"GET / HTTP/1.1" 200 3'``), the first 10,000 (``log.dropped`` counts the rest).
    ``host`` may be ``"::1"`` (the url then reads ``http://[::1]:PORT``).

    Attributes:
        app: the WSGI application it serves
        log: wsgiref's line for each request (``'"GET / HTTP/1.1" 200 3'``), the first 10,000
    """

    speaks = "HTTP/1.1, answered by a WSGI app (wsgiref)"

    def __init__(self, app: WSGIApplication, *, host: str = "127.0.0.1", port: int = 0,
                 name: str = "server") -> None:
        arguments.function(app, "app", "a WSGI application: a function "
                           "app(environ, start_response) or a Flask app")
        super().__init__(host=host, port=port, name=name)
        self.app = app
        self.log: Kept = Kept(LOG_LIMIT, f"WSGIServer {name!r}", "log")
        self._conns: set[socket.socket] = set()
        self._disconnect: Callable[[], object] = lambda: None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (an IPv6 host in brackets), no trailing slash."""
        return self._url("http")

    def _who(self) -> str:
        return "the WSGI app"

    def _make_server(self) -> socketserver.BaseServer:
        kind = _LabWSGIServer6 if ":" in self.host else _LabWSGIServer
        server = kind((self.host, self._requested_port), _QuietHandler)
        server.set_app(self._wrapped)
        server.owner = self
        self._flask_errors()
        return server

    # -- one thread per connection, all of them the server's ---------------------------
    def _hand_over(self, conn: socket.socket, client_address: Any) -> None:
        """Serve ``conn`` in a thread of its own; while none can start, it waits here (and
        later clients in the backlog) - queued, never dropped unanswered."""
        with self._lock:
            if self._stopping.is_set():   # accepted just as the server stopped: refused
                conn.close()
                return
            self._conns.add(conn)
        reported = False
        while True:
            try:
                self._spawn(self._serve_connection, conn, client_address, name="request")
                return
            except RuntimeError as exc:  # "can't start new thread"
                if not reported:
                    base.log.warning("%s: cannot start a thread for a new connection (%s); "
                                     "it waits, retrying every %ss", self.name, exc, RETRY_PAUSE)
                    self.record_error(exc)
                    reported = True
                if self._stopping.wait(RETRY_PAUSE):
                    self._forget(conn)
                    return

    def _serve_connection(self, conn: socket.socket, client_address: Any) -> None:
        server = self._socketserver
        assert server is not None  # set before serve_forever accepts anything
        try:
            server.finish_request(conn, client_address)
        except Exception:  # noqa: BLE001 - as socketserver does: recorded unless the client's
            self._record_handler_error(conn, client_address)
        finally:
            self._forget(conn)

    def _forget(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)
        if self._socketserver is not None:
            self._socketserver.shutdown_request(conn)
        else:
            conn.close()

    def _wake(self) -> None:
        super()._wake()                # serve_forever stops accepting
        with self._lock:
            conns = list(self._conns)
        wake(*conns)                   # every handler's read returns b'': it ends

    def _stuck_message(self, stuck: list[str]) -> str:
        return (f"{self.name}: the WSGI app did not return within {base.JOIN_TIMEOUT:g} s "
                f"of the server closing its connections ({len(stuck)} thread(s) still "
                "running); an app must return its response")

    def _close(self) -> None:
        super()._close()
        self._disconnect()

    def _wrapped(self, environ: WSGIEnvironment, start_response: StartResponse
                 ) -> Iterable[bytes]:
        try:
            result = self.app(environ, start_response)
        except Exception as exc:
            self.record_error(exc)
            raise  # wsgiref answers 500
        return self._checked(result)

    def _checked(self, result: Iterable[bytes]) -> Iterator[bytes]:
        """Pass the body through, recording what wsgiref would only print to stderr."""
        try:
            for item in result:
                if not isinstance(item, bytes):
                    raise TypeError(f"the app's body contained a {type(item).__name__} "
                                    f"({item!r:.40}); a WSGI body is an iterable of bytes, "
                                    "e.g. [text.encode()]")
                yield item
        except Exception as exc:
            self.record_error(exc)
            raise  # wsgiref answers 500 if nothing was sent yet
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _flask_errors(self) -> None:
        try:
            import flask
        except ImportError:  # pragma: no cover - flask is in requirements
            return
        if isinstance(self.app, flask.Flask):
            def record(sender: object, exception: BaseException, **extra: object) -> None:
                self.record_error(exception)

            flask.got_request_exception.connect(record, self.app, weak=False)
            self._disconnect = lambda: flask.got_request_exception.disconnect(record, self.app)

    def __repr__(self) -> str:
        where = f"{self.url.removeprefix('http://')}" if self._running else "stopped"
        return f"<WSGIServer {getattr(self.app, '__name__', type(self.app).__name__)} {where}>"
