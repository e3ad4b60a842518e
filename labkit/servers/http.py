"""An HTTP/1.1 server on loopback, with teaching endpoints.

    >>> with HTTPServer() as server:
    ...     urllib.request.urlopen(server.url + "/hello").read()
    b'Hello, world!\\n'

:class:`HTTPServer` speaks HTTP/1.1 itself (no http.server underneath), so what
it does on the wire is exactly what its code says: keep-alive unless the client
asks to close, ``Content-Length`` framing except on ``/chunked``, and for anything
it cannot serve an answer with the reason (400 malformed, 408 stalled, 413/414/431
too large), after which it keeps serving everyone else.  Every limit is a constant
below; no client can make it buffer more, or make the owning cell raise.

This module is the connection side: read requests (with ``labkit.protocols.http_parser``),
keep the connection alive or close it, refuse what cannot be read, frame and send the
answer.  What each path answers (``/hello``, ``/echo``, ``/json``, ... and how to add
one) is ``labkit.servers.http_endpoints``; the Request and Response they pass each
other are ``labkit.servers.http_message``.

To host a server *you* wrote (``http.server``, WSGI, Flask) see ``labkit.servers.wsgi``.
"""

from __future__ import annotations

import email.utils
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from labkit.protocols import http_parser

# The request limits live with the parser; named here too, read at each connection, so
# patching labkit.servers.http.MAX_HEAD (say) changes what this server accepts.
from labkit.protocols.http_parser import (
    MAX_BODY,
    MAX_CHUNK_LINE,
    MAX_CHUNKED,
    MAX_HEAD,
    MAX_REQUEST_LINE,
    ParseError,
)
from labkit.servers import arguments
from labkit.servers.base import Kept
from labkit.servers.http_endpoints import HTTPEndpoints, static_root
from labkit.servers.http_message import (
    Request,
    RequestRefused,
    Response,
    cut,
    head_bytes,
    phrase,
    text,
)
from labkit.servers.tcp import TCPServer

__all__ = ["HTTPServer", "Request"]

IDLE_TIMEOUT = 10.0           # seconds a connection may sit idle between requests (and
                              # the longest silence in the middle of one)
HEAD_TIMEOUT = 10.0           # seconds for a whole request head, from its first byte
REQUEST_TIMEOUT = 60.0        # seconds for a whole request, body too, from its first byte
LOG_LIMIT = 10_000            # entries kept in HTTPServer.log
SERVER_NAME = "labkit"


def _read_request(conn: socket.socket, parser: http_parser.RequestParser) -> Request | None:
    """Feed what arrives on ``conn`` to ``parser`` until one whole request; None if the
    client closed, or stayed idle for IDLE_TIMEOUT, between requests.  Raises
    ``ParseError``: 408 for a request that stalled half-way, or whose head (body) did not
    arrive within HEAD_TIMEOUT (REQUEST_TIMEOUT) of its first byte - a client sending a
    byte a second holds a thread for seconds, not for as long as it likes."""
    head, body = None, bytearray()
    started = None   # when the request's first byte came
    while True:
        event = parser.next_event()
        if event is http_parser.NEED_DATA:
            if started is None and parser.in_progress:
                started = time.monotonic()
            wait = IDLE_TIMEOUT
            if started is not None:
                limit, what = (HEAD_TIMEOUT, "head") if head is None else \
                    (REQUEST_TIMEOUT, "request")
                left = started + limit - time.monotonic()
                if left <= 0:
                    raise ParseError(f"the request {what} did not arrive within {limit:g} s",
                                     408)
                wait = min(wait, left)
            conn.settimeout(wait)
            try:
                parser.feed(conn.recv(65536))
            except TimeoutError:
                if not parser.in_progress:
                    return None
                if wait == IDLE_TIMEOUT:  # a request started, then stalled
                    raise ParseError(f"the request stalled: nothing arrived for "
                                     f"{IDLE_TIMEOUT:g} s", 408) from None
                continue  # its deadline passed: answered 408 above
        elif event is http_parser.ConnectionClosed:
            return None
        elif isinstance(event, http_parser.RequestHead):
            head = event
        elif isinstance(event, http_parser.Data):
            body += event.data  # (the parser bounds it: MAX_BODY)
        elif isinstance(event, http_parser.EndOfMessage):
            assert head is not None  # the parser gives a head before its EndOfMessage
            conn.settimeout(IDLE_TIMEOUT)  # for sending the answer (a deadline may be near)
            return Request(head.method, head.target, head.version, head.headers, bytes(body),
                           event.raw)


class HTTPServer(HTTPEndpoints, TCPServer):
    """An HTTP/1.1 server on loopback with teaching endpoints (``GET /`` lists them;
    their code is ``labkit.servers.http_endpoints``).

    ``static`` is a directory served under ``/static/`` (not ``/``, your home
    directory or a folder above it); ``ssl_context`` (an ``ssl.SSLContext`` with a
    certificate loaded) makes it an HTTPS server.
    ``server.log`` lists what it answered (``'GET /hello → 200'``),
    ``server.connections_served`` how many TCP connections it accepted; TLS
    handshakes that failed are described in ``server.tls_errors``, as on a TLSServer.

    Attributes:
        static: the folder ``/static/`` serves, resolved (None: no static files)
        ssl_context: the TLS context of an HTTPS server (None: plain HTTP)
        log: what it answered, one line each (``'GET /hello → 200'``), the first 10,000
        requests_served: requests answered so far (400s for unreadable ones not counted)
    """

    def __init__(self, static: str | os.PathLike[str] | None = None, *,
                 ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1",
                 port: int = 0, name: str = "server", backlog: int = socket.SOMAXCONN) -> None:
        if ssl_context is not None:
            arguments.instance(ssl_context, "ssl_context", ssl.SSLContext,
                               "an ssl.SSLContext or None", "ca.server_context()")
        self.static: Path | None = None if static is None else static_root(static)
        super().__init__(self._serve_connection, host=host, port=port, name=name,
                         backlog=backlog)
        self.ssl_context = ssl_context
        self.speaks = "HTTP/1.1 (RFC 9112)"
        if ssl_context is not None:
            self._use_tls(ssl_context)  # TCPServer's TLS path, shared with TLSServer
            self.speaks = "HTTP/1.1 over TLS"
        self.log: Kept = Kept(LOG_LIMIT, f"{type(self).__name__} {name!r}", "log")
        self.requests_served = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with an ssl_context), no trailing slash."""
        return self._url("https" if self.ssl_context else "http")

    def _note(self, text: str) -> None:
        self.log.append(text)

    # -- one connection ----------------------------------------------------------
    def _accepted(self, conn: socket.socket) -> None:
        conn.settimeout(IDLE_TIMEOUT)  # (TCPServer's TLS handshake has its own deadline)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve_connection(self, conn: socket.socket, addr: Any) -> None:
        try:
            self._request_loop(conn)
        except (OSError, ValueError) as exc:
            # The client went away, reset, timed out or broke TLS: not a server bug.
            # (ValueError: a socket closed under us by stop().)
            if not self._stopping.is_set():
                self._note(f"(connection ended: {type(exc).__name__})")

    def _request_loop(self, conn: socket.socket) -> None:
        limits = http_parser.Limits(MAX_REQUEST_LINE, MAX_HEAD, MAX_BODY, MAX_CHUNKED,
                                    MAX_CHUNK_LINE)
        parser = http_parser.RequestParser(limits)
        while not self._stopping.is_set():
            try:
                request = _read_request(conn, parser)
            except ParseError as bad:
                self._refuse(conn, bad)
                return
            if request is None:
                return  # closed, or idle between requests: close quietly
            keep = self._answer(conn, request)
            with self._lock:
                self.requests_served += 1
            if not keep:
                if not isinstance(conn, ssl.SSLSocket):
                    conn.shutdown(socket.SHUT_WR)
                return

    def _refuse(self, conn: socket.socket, bad: ParseError) -> None:
        """Answer a request that could not be read, then close the connection."""
        reason = str(bad)
        self._note(f"(bad request) → {bad.status}: {reason}")
        body = f"{bad.status} {phrase(bad.status)}: {reason}\n".encode()
        head = head_bytes(bad.status, [*self._common("text/plain; charset=utf-8", len(body)),
                                        ("Connection", "close")])
        conn.sendall(head + body)
        if isinstance(conn, ssl.SSLSocket):
            return
        # Lingering close: stop sending, then read (bounded) what the client still sends,
        # so closing does not reset the connection before the client read the 400.
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(1.0)
        drained = 0
        try:
            while drained < MAX_HEAD * 4 and (data := conn.recv(65536)):
                drained += len(data)
        except OSError:
            pass  # the client did not close within a second, or reset: we close anyway

    @staticmethod
    def _common(content_type: str | None, length: int | None) -> list[tuple[str, str]]:
        headers = [("Date", email.utils.formatdate(usegmt=True)), ("Server", SERVER_NAME)]
        if content_type:
            headers.append(("Content-Type", content_type))
        if length is not None:
            headers.append(("Content-Length", str(length)))
        return headers

    def _answer(self, conn: socket.socket, req: Request) -> bool:
        """Route and send one response; True if the connection stays open."""
        try:
            resp = self._route(req)
        except RequestRefused as bad:
            resp = text(bad.status, f"{bad.status} {phrase(bad.status)}: {bad}\n")
        except Exception as exc:  # noqa: BLE001 - a bug in an endpoint: answer 500, report it
            self.record_error(exc)
            resp = text(500, f"500 Internal Server Error: {type(exc).__name__}\n")
        try:
            return self._send(conn, req, resp)
        finally:
            if hasattr(resp.body, "close"):
                resp.body.close()  # an open file or a generator: release it even on error

    def _send(self, conn: socket.socket, req: Request, resp: Response) -> bool:
        keep = req.keep_alive and resp.status < 500
        self._note(f"{req.method} {cut(req.target, 200)} → {resp.status}")
        no_body = req.method == "HEAD" or resp.status in (204, 304)
        length = len(resp.body) if isinstance(resp.body, bytes) else resp.length
        chunked = length is None
        headers = self._common(resp.content_type if resp.status != 204 else None,
                               None if chunked or resp.status in (204, 304) else length)
        headers += resp.headers
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        if not keep:
            headers.append(("Connection", "close"))
        elif req.version == "HTTP/1.0":
            headers.append(("Connection", "keep-alive"))
        head = head_bytes(resp.status, headers)
        body = resp.body
        if no_body:
            conn.sendall(head)
        elif isinstance(body, bytes) and len(body) <= 65536:
            conn.sendall(head + body)  # one write: a small response is one segment
        elif isinstance(body, bytes):
            conn.sendall(head)
            conn.sendall(body)         # no 20 MB copy just to glue the head on
        elif length is not None:       # streamed with a Content-Length: /bytes, a file
            conn.sendall(head)
            sent = 0
            pieces = iter(lambda: body.read(65536), b"") if hasattr(body, "read") else body
            for piece in pieces:
                piece = piece[:length - sent]  # a file that grew while we sent it
                conn.sendall(piece)
                sent += len(piece)
            if sent < length:
                return False  # a file that shrank: only closing tells the client it is short
        else:
            conn.sendall(head)
            for i, piece in enumerate(body):
                if i and resp.chunk_delay and self._stopping.wait(resp.chunk_delay):
                    return False
                conn.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            conn.sendall(b"0\r\n\r\n")
        return keep
