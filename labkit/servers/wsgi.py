"""Run servers written with the standard library or a framework in a thread.

``serve_in_thread`` hosts any ``socketserver``/``http.server`` server; ``WSGIServer``
hosts a WSGI application (a plain function or a Flask app) on ``wsgiref``.  Both are
context managers: listening when the ``with`` starts, shut down and joined at its end,
and an exception from a request handler is raised again in the cell.

    >>> with WSGIServer(app) as server:
    ...     urllib.request.urlopen(server.url + "/hello").read()
"""

from __future__ import annotations

import io
import socketserver
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import WSGIServer as _WsgirefServer

from labkit.servers.base import JOIN_TIMEOUT, LoopbackAddress, _check_host, check_port, raise_first

__all__ = ["serve_in_thread", "WSGIServer"]


# -- any socketserver in a thread ------------------------------------------------
class serve_in_thread:
    """Run a ``socketserver``/``http.server`` server's ``serve_forever`` in a thread.

        >>> server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        >>> with serve_in_thread(server) as server:
        ...     urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/")

    The server is listening when the constructor returns, so it is ready as soon as
    the ``with`` starts.  On exit: ``shutdown()``, ``server_close()``, join, and an
    exception raised by a request handler is raised again in the cell (the server
    itself answers 500 or drops that connection, and keeps serving others).
    """

    def __init__(self, server: socketserver.BaseServer):
        if not isinstance(server, socketserver.BaseServer):
            raise TypeError(f"serve_in_thread takes a socketserver server such as "
                            f"http.server.HTTPServer(('127.0.0.1', 0), Handler), "
                            f"not {type(server).__name__}")
        host = server.server_address[0]
        _check_host(host)
        self.server = server
        self.errors: list[BaseException] = []
        self._thread: threading.Thread | None = None
        self._stopped = False
        original = server.handle_error

        def handle_error(request, client_address):
            import sys

            exc = sys.exc_info()[1]
            if isinstance(exc, (ConnectionError, TimeoutError)):
                return  # the client went away: not the handler's bug
            self.errors.append(exc)
            custom = getattr(original, "__func__", None)
            if custom not in (None, socketserver.BaseServer.handle_error):
                original(request, client_address)

        server.handle_error = handle_error  # the default prints to stderr

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def __enter__(self):
        if self._thread is not None:
            raise RuntimeError(
                "this serve_in_thread is already running or has stopped (its server is closed): "
                "make a new server and a new serve_in_thread(server) for another `with` block")
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"serve-{type(self.server).__name__}", daemon=True)
        self._thread.start()
        return self.server

    def __exit__(self, exc_type, *_):
        if self._thread is None:  # shutdown() would wait forever for a loop that never ran
            raise RuntimeError("serve_in_thread was never started: use it as "
                               "`with serve_in_thread(server) as server:`")
        if self._stopped:
            return False
        self._stopped = True
        # shutdown() waits for serve_forever, which waits for a running request: a
        # single-threaded server stuck in a handler would block the cell for ever.
        stopper = threading.Thread(target=self.server.shutdown, daemon=True)
        stopper.start()
        stopper.join(JOIN_TIMEOUT)
        self.server.server_close()
        self._thread.join(JOIN_TIMEOUT)
        if self._thread.is_alive():
            raise RuntimeError(
                f"{type(self.server).__name__} did not stop within {JOIN_TIMEOUT:g} s: a request "
                "handler is still running (a client that keeps its connection open, or a "
                "handler that never returns); use ThreadingHTTPServer or end the handler")
        if exc_type is None:
            raise_first(self.errors, f"{type(self.server).__name__} handler")
        return False


# -- WSGI ---------------------------------------------------------------------
class _QuietHandler(WSGIRequestHandler):
    """wsgiref's handler, logging into the server's list instead of stderr."""

    def log_message(self, format, *args):  # noqa: A002 - wsgiref's signature
        self.server.log.append(format % args)

    def get_stderr(self):
        return io.StringIO()  # app tracebacks: reported to the cell on exit instead


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, _WsgirefServer):
    daemon_threads = True
    block_on_close = True


class WSGIServer(LoopbackAddress):
    """Serve a WSGI application (a function or a Flask app) with ``wsgiref`` in threads.

        >>> def app(environ, start_response):
        ...     start_response("200 OK", [("Content-Type", "text/plain")])
        ...     return [b"hi\\n"]
        >>> with WSGIServer(app) as server:
        ...     urllib.request.urlopen(server.url + "/").read()
        b'hi\\n'

    An exception escaping the app becomes a 500 for that client and is raised
    again when the ``with`` block ends.
    """

    def __init__(self, app: Callable, *, host: str = "127.0.0.1", port: int = 0,
                 name: str = "server"):
        if not callable(app):
            raise TypeError(f"WSGIServer needs a WSGI application: a function "
                            f"app(environ, start_response) or a Flask app, not "
                            f"{type(app).__name__}")
        check_port(port)
        self.app = app
        self.host = _check_host(host)
        self.name = name
        self._requested_port = port
        self.log: list[str] = []
        self._errors: list[BaseException] = []
        self._server: _ThreadingWSGIServer | None = None
        self._runner: serve_in_thread | None = None

    def _wrapped(self, environ, start_response):
        try:
            result = self.app(environ, start_response)
        except Exception as exc:
            self._errors.append(exc)
            raise  # wsgiref answers 500
        return self._checked(result)

    def _checked(self, result):
        """Pass the body through, recording what wsgiref would only print to stderr."""
        try:
            for item in result:
                if not isinstance(item, bytes):
                    raise TypeError(f"the app's body contained a {type(item).__name__} "
                                    f"({item!r:.40}); a WSGI body is an iterable of bytes, "
                                    "e.g. [text.encode()]")
                yield item
        except Exception as exc:
            self._errors.append(exc)
            raise  # wsgiref answers 500 if nothing was sent yet
        finally:
            if hasattr(result, "close"):
                result.close()

    def _flask_errors(self):
        try:
            import flask
        except ImportError:  # pragma: no cover - flask is in requirements
            return
        if isinstance(self.app, flask.Flask):
            def record(sender, exception, **extra):
                self._errors.append(exception)

            flask.got_request_exception.connect(record, self.app, weak=False)
            self._disconnect = lambda: flask.got_request_exception.disconnect(record, self.app)

    def _bound_address(self):
        return self._server.server_address if self._server else None

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def __enter__(self) -> "WSGIServer":
        if self._runner is not None:
            raise RuntimeError(f"{self!r} was already started (it serves one `with` block): "
                               "make a new WSGIServer(app) for another one")
        server = _ThreadingWSGIServer((self.host, self._requested_port), _QuietHandler)
        server.set_app(self._wrapped)
        server.log = self.log
        # wsgiref prints app tracebacks to stderr itself; we report them on exit instead.
        server.handle_error = lambda request, client_address: None
        self._server = server
        self._disconnect = lambda: None
        self._flask_errors()
        self._runner = serve_in_thread(server)
        self._runner.__enter__()
        return self

    def __exit__(self, exc_type, *_):
        if self._runner is None:
            raise RuntimeError("WSGIServer was never started: use it as "
                               "`with WSGIServer(app) as server:`")
        if self._server is None:
            return False  # already stopped
        try:
            self._runner.__exit__(exc_type)
        finally:
            self._disconnect()
            self._server = None
        if exc_type is None:
            raise_first(self._errors, "the WSGI app")
        return False

    def __repr__(self):
        where = f"{self.host}:{self.port}" if self._server else "stopped"
        return f"<WSGIServer {getattr(self.app, '__name__', type(self.app).__name__)} {where}>"
