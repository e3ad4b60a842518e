"""An HTTP/1.1 server with teaching endpoints.

    >>> with HTTPServer() as server:
    ...     urllib.request.urlopen(server.url + "/hello").read()
    b'Hello, world!\\n'

:class:`HTTPServer` speaks HTTP/1.1 itself (no http.server underneath), so what
it does on the wire is exactly what its code says: keep-alive unless the client
asks to close, ``Content-Length`` framing except on ``/chunked``, and for anything
it cannot serve an answer with the reason (400 malformed, 408 stalled, 413/414/431
too large), after which it keeps serving everyone else.  Every limit is a constant
below; no client can make it buffer more, or make the owning cell raise.
Endpoints (``GET /`` lists them):

====================  ==============================================================
``/hello``            a short greeting
``/echo``             the request exactly as received (request line, headers, body)
``/json``             POST a JSON body; answers what it parsed
``/chunked?n=3``      ``Transfer-Encoding: chunked`` response with n chunks
``/slow?delay=0.5``   waits ``delay`` seconds, then answers (server "think time")
``/bytes?n=1000``     a body of exactly n bytes (sent in 64 KiB pieces)
``/status/<code>``    answers with that status code
``/redirect?to=/x``   302 Found pointing to ``/x``, a path on this server (``&code=301`` etc.)
``/static/<path>``    files under the ``static=`` directory (never outside it)
====================  ==============================================================

To host a server *you* wrote (``http.server``, WSGI, Flask) see ``_wsgi``.
"""

from __future__ import annotations

import email.utils
import errno
import http
import json
import os
import re
import socket
import ssl
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

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
from labkit.servers.tcp import TCPServer

__all__ = ["HTTPServer", "Request"]

MAX_JSON_DEPTH = 100          # nesting of arrays/objects POSTed to /json
MAX_BYTES = 100 * 1024 * 1024  # largest /bytes?n=
MAX_DELAY = 10.0              # longest /slow?delay= (and /chunked delay) in seconds
MAX_CHUNKS = 1000
IDLE_TIMEOUT = 10.0           # seconds a connection may sit idle between requests
LOG_LIMIT = 10_000            # entries kept in HTTPServer.log
SERVER_NAME = "labkit"

_LETTERS = b"abcdefghijklmnopqrstuvwxyz"
_PATTERN = _LETTERS * 2521    # 65,546 bytes: a whole number of alphabets, so pieces join up


class BadRequest(Exception):
    """The client sent something that is not HTTP/1.1; the message says what."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.status = status


@dataclass
class Request:
    """One parsed request, plus the bytes it came in (``raw``)."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    raw: bytes = b""
    path: str = field(init=False)
    query: dict[str, str] = field(init=False)

    def __post_init__(self):
        if self.target.startswith("/"):  # origin-form: "//x" is a path here, not a host
            path, _, query = self.target.partition("?")
        else:                            # absolute-form (the parser checked it) or "*"
            split = urllib.parse.urlsplit(self.target)
            path, query = split.path, split.query
        self.path = path or "/"
        self.query = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of header ``name`` (case-insensitive), or ``default``."""
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ", ".join(values) if values else default

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in (self.header("Connection") or "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


def _read_request(conn: socket.socket, parser: http_parser.RequestParser) -> Request | None:
    """Feed what arrives on ``conn`` to ``parser`` until one whole request; None if the
    client closed, or stayed idle for IDLE_TIMEOUT, between requests.  Raises
    ``ParseError`` (408 for a request that stalled half-way)."""
    head, body = None, bytearray()
    while True:
        event = parser.next_event()
        if event is http_parser.NEED_DATA:
            try:
                parser.feed(conn.recv(65536))
            except TimeoutError:
                if parser.in_progress:  # a request started, then stalled
                    raise ParseError(f"the request stalled: nothing arrived for "
                                     f"{IDLE_TIMEOUT:g} s", 408) from None
                return None
        elif event is http_parser.ConnectionClosed:
            return None
        elif isinstance(event, http_parser.Request):
            head = event
        elif isinstance(event, http_parser.Data):
            body += event.data  # (the parser bounds it: MAX_BODY)
        else:  # EndOfMessage
            assert head is not None  # the parser gives a Request before its EndOfMessage
            return Request(head.method, head.target, head.version, head.headers, bytes(body),
                           event.raw)


# RFC 9110's names, which Python only adopted in 3.13: the same text on every interpreter.
_PHRASES = {413: "Content Too Large", 414: "URI Too Long", 416: "Range Not Satisfiable",
            422: "Unprocessable Content"}


def _phrase(code: int) -> str:
    try:
        return _PHRASES.get(code) or http.HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def _status_line(code: int) -> bytes:
    return f"HTTP/1.1 {code} {_phrase(code)}\r\n".encode()


def _head_bytes(code: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{n}: {v}\r\n" for n, v in headers]
    return _status_line(code) + "".join(lines).encode("latin-1") + b"\r\n"


@dataclass
class _Response:
    """What to answer.  ``body`` is bytes, or an open binary file or pieces sent as they
    come: framed by ``length`` (Content-Length) if given, else chunked.  A body with
    ``close()`` (a file, a generator) is closed once sent, even if the client went away."""

    status: int
    body: bytes | Iterable[bytes] = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunk_delay: float = 0.0
    length: int | None = None


def _letters(n: int) -> Iterable[bytes]:
    """n bytes of abc…z abc…, in pieces of at most 64 KiB: never the whole body in memory."""
    while n > 0:
        piece = _PATTERN[:min(n, len(_PATTERN))]
        n -= len(piece)
        yield piece


def _text(status: int, text: str, **kw) -> _Response:
    return _Response(status, text.encode(), **kw)


def _number(query: dict, name: str, default, kind, low, high):
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise BadRequest(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}={raw} is out of range {low}..{high}")
    return value


INDEX = """labkit HTTP server. Endpoints:
  GET  /hello             a short greeting
  ANY  /echo              the request exactly as received
  POST /json              parses a JSON body and answers what it got
  GET  /chunked?n=3       a Transfer-Encoding: chunked response
  GET  /slow?delay=0.5    waits, then answers
  GET  /bytes?n=1000      a body of exactly n bytes
  GET  /status/<code>     answers with that status code
  GET  /redirect?to=/x    302 Found to /x
  GET  /static/<path>     files from the static directory
"""


def _static_root(static) -> Path:
    """The folder ``static=`` names, resolved; refuse one that would expose the user's files."""
    if not isinstance(static, (str, os.PathLike)):
        raise TypeError(f"static must be a folder path (str or pathlib.Path), "
                        f"not {type(static).__name__}")
    root = Path(static)
    if not root.is_dir():
        raise ValueError(f"static={str(static)!r} is not a directory: pass the folder "
                         "whose files /static/ should serve")
    root = root.resolve()
    try:
        home = Path.home().resolve()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry: only "/" is known to be wrong
        home = Path(root.anchor)
    if root == Path(root.anchor) or root == home or root in home.parents:
        what = ("the whole file system" if root == Path(root.anchor) else
                "your home directory" if root == home else f"{root}, above your home directory")
        raise ValueError(f"static={str(static)!r} would serve {what} (keys, passwords, "
                         "history) to any client: pass a folder made for the lab's files, "
                         "e.g. a new folder 'public' next to the notebook")
    return root


def _cut(text: str, limit: int = 80) -> str:
    """text, shortened: an answer or log line must not echo a 4 KB name back."""
    return text if len(text) <= limit else text[:limit] + "…"


class HTTPServer(TCPServer):
    """An HTTP/1.1 server on loopback with teaching endpoints (see the module doc).

    ``static`` is a directory served under ``/static/`` (not ``/``, your home
    directory or a folder above it); ``ssl_context`` (an ``ssl.SSLContext`` with a
    certificate loaded) makes it an HTTPS server.
    ``server.log`` lists what it answered (``'GET /hello → 200'``),
    ``server.connections_served`` how many TCP connections it accepted; TLS
    handshakes that failed are described in ``server.tls_errors``, as on a TLSServer.
    """

    def __init__(self, static=None, *, ssl_context: ssl.SSLContext | None = None,
                 host: str = "127.0.0.1", port: int = 0, name: str = "server",
                 backlog: int = socket.SOMAXCONN):
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError(f"ssl_context must be an ssl.SSLContext (e.g. ca.server_context()), "
                            f"not {type(ssl_context).__name__}")
        self.static: Path | None = None if static is None else _static_root(static)
        super().__init__(self._serve_connection, host=host, port=port, name=name,
                         backlog=backlog)
        self.ssl_context = ssl_context
        if ssl_context is not None:
            self._use_tls(ssl_context)  # TCPServer's TLS path, shared with TLSServer
        self.log: list[str] = []
        self.requests_served = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with an ssl_context), no trailing slash."""
        return self._url("https" if self.ssl_context else "http")

    def _note(self, text: str) -> None:
        with self._lock:
            if len(self.log) < LOG_LIMIT:
                self.log.append(text)

    # -- one connection ----------------------------------------------------------
    def _accepted(self, conn: socket.socket) -> None:
        conn.settimeout(IDLE_TIMEOUT)  # (TCPServer's TLS handshake has its own deadline)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve_connection(self, conn: socket.socket, addr) -> None:
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
        body = f"{bad.status} {_phrase(bad.status)}: {reason}\n".encode()
        head = _head_bytes(bad.status, [*self._common("text/plain; charset=utf-8", len(body)),
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
        except BadRequest as bad:
            resp = _text(bad.status, f"{bad.status} {_phrase(bad.status)}: {bad}\n")
        except Exception as exc:  # noqa: BLE001 - a bug in an endpoint: answer 500, report it
            self.record_error(exc)
            resp = _text(500, f"500 Internal Server Error: {type(exc).__name__}\n")
        try:
            return self._send(conn, req, resp)
        finally:
            if hasattr(resp.body, "close"):
                resp.body.close()  # an open file or a generator: release it even on error

    def _send(self, conn: socket.socket, req: Request, resp: _Response) -> bool:
        keep = req.keep_alive and resp.status < 500
        self._note(f"{req.method} {_cut(req.target, 200)} → {resp.status}")
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
        head = _head_bytes(resp.status, headers)
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

    # -- endpoints ---------------------------------------------------------------
    def _route(self, req: Request) -> _Response:
        path, q = req.path, req.query
        if path == "/echo":
            return _Response(200, req.raw)
        if path == "/json":
            return self._json(req)
        if req.method not in ("GET", "HEAD"):
            return _text(405, f"405 Method Not Allowed: {path} answers GET and HEAD\n",
                         headers=[("Allow", "GET, HEAD")])
        if path == "/":
            return _text(200, INDEX)
        if path == "/hello":
            return _text(200, "Hello, world!\n")
        if path == "/chunked":
            n = _number(q, "n", 3, int, 1, MAX_CHUNKS)
            delay = _number(q, "delay", 0.0, float, 0.0, MAX_DELAY)
            pieces = [f"chunk {i} of {n}\n".encode() for i in range(1, n + 1)]
            return _Response(200, iter(pieces), chunk_delay=delay)
        if path == "/slow":
            delay = _number(q, "delay", 0.5, float, 0.0, MAX_DELAY)
            if self._stopping.wait(delay):  # a lesson's deliberate wait; wakes on stop()
                return _text(503, "503 Service Unavailable: the server is stopping\n")
            return _text(200, f"waited {delay:g} s\n")
        if path == "/bytes":
            n = _number(q, "n", 1000, int, 0, MAX_BYTES)
            body = _PATTERN[:n] if n <= len(_PATTERN) else _letters(n)
            return _Response(200, body, content_type="application/octet-stream", length=n)
        if path.startswith("/status/"):
            return self._status(path.removeprefix("/status/"))
        if path == "/redirect":
            return self._redirect(q)
        if path.startswith("/static/") and self.static is not None:
            return self._static(self.static, path.removeprefix("/static/"))
        return _text(404, f"404 Not Found: no endpoint {_cut(path)}; GET / lists them\n")

    def _json(self, req: Request) -> _Response:
        if req.method != "POST":
            return _text(405, "405 Method Not Allowed: POST a JSON body to /json\n",
                         headers=[("Allow", "POST")])
        too_deep = BadRequest(f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep")
        try:
            value = json.loads(req.body)
        except RecursionError:  # deeper than the parser's own limit (about 1,000)
            raise too_deep from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from None
        if _depth(value) > MAX_JSON_DEPTH:  # json.dumps below recurses as deep: refuse first
            raise too_deep
        answer = {"content_type": req.header("Content-Type"), "length": len(req.body),
                  "received": value}
        return _Response(200, json.dumps(answer, sort_keys=True).encode() + b"\n",
                         content_type="application/json")

    @staticmethod
    def _status(text: str) -> _Response:
        if not (len(text) == 3 and text.isdigit() and 200 <= int(text) <= 599):
            raise BadRequest(f"/status/{text[:20]}: use a final status code 200-599, "
                             "like /status/404")
        code = int(text)
        body = b"" if code in (204, 304) else f"{code} {_phrase(code)}\n".encode()
        return _Response(code, body)

    @staticmethod
    def _redirect(q: dict) -> _Response:
        to = q.get("to", "/hello")
        if re.search(r"[\x00-\x1f\x7f\\]", to):
            # CR/LF would end the Location header and start the attacker's own; browsers
            # drop tabs and read "\" as "/", so "/\evil" and "/<TAB>/evil" mean //evil.
            raise BadRequest(f"to={_cut(to)!r}: a redirect target must not contain control "
                             "characters (CR, LF, tab) or backslashes")
        if not to.startswith("/") or to.startswith("//"):
            raise BadRequest(f"to={_cut(to)!r}: redirect only to a path on this server, "
                             "like to=/hello (not //host or http://…)")
        code = _number(q, "code", 302, int, 300, 308)
        if code not in (301, 302, 303, 307, 308):
            raise BadRequest(f"code={code}: use 301, 302, 303, 307 or 308")
        # Location is ASCII: percent-encode the rest (é → %C3%A9), as browsers do.
        location = urllib.parse.quote(to, safe="/?#[]@!$&'()*+,;=:%~")
        return _text(code, f"{code} {_phrase(code)}: see {_cut(location)}\n",
                     headers=[("Location", location)])

    def _static(self, root: Path, rel: str) -> _Response:
        name = urllib.parse.unquote(rel)
        if "\x00" in name:
            return _text(400, "400 Bad Request: NUL byte in the path\n")
        try:
            target = (root / name).resolve()
            if not target.is_relative_to(root):
                return _text(403, f"403 Forbidden: {_cut(name)!r} resolves outside the static "
                                  "directory\n")
            if not target.is_file():
                return _text(404, f"404 Not Found: no file {_cut(name)!r} in the static "
                                  "directory\n")
            file = target.open("rb")
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            return self._file_error(name, exc)
        kind = {".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8",
                ".json": "application/json", ".css": "text/css", ".png": "image/png"}
        return _Response(200, file, length=os.fstat(file.fileno()).st_size,
                         content_type=kind.get(target.suffix, "application/octet-stream"))

    @staticmethod
    def _file_error(name: str, exc: Exception) -> _Response:
        """Why a static file cannot be served: the file system's problem, not the client's."""
        code = getattr(exc, "errno", None)
        why = getattr(exc, "strerror", None) or "a symlink loop"  # (no server paths in answers)
        if code in (errno.EACCES, errno.EPERM):
            return _text(403, f"403 Forbidden: the server may not read {_cut(name)!r} "
                              f"({why})\n")
        if code in (errno.ENAMETOOLONG, errno.ELOOP, errno.ENOENT, errno.ENOTDIR, None):
            return _text(404, f"404 Not Found: no file {_cut(name)!r} in the static "
                              f"directory ({why})\n")
        return _text(500, f"500 Internal Server Error: cannot read {_cut(name)!r} ({why})\n")


def _depth(value) -> int:
    """How deeply lists and dicts nest in a parsed JSON value (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1)
                         for child in (item.values() if isinstance(item, dict) else item))
    return deepest
