"""An HTTP/1.1 server with teaching endpoints.

    >>> with HTTPServer() as server:
    ...     urllib.request.urlopen(server.url + "/hello").read()
    b'Hello, world!\\n'

:class:`HTTPServer` speaks HTTP/1.1 itself (no http.server underneath), so what
it does on the wire is exactly what its code says: keep-alive unless the client
asks to close, ``Content-Length`` framing except on ``/chunked``, and a 400 with
the reason for anything malformed, after which it keeps serving everyone else.
Endpoints (``GET /`` lists them):

====================  ==============================================================
``/hello``            a short greeting
``/echo``             the request exactly as received (request line, headers, body)
``/json``             POST a JSON body; answers what it parsed
``/chunked?n=3``      ``Transfer-Encoding: chunked`` response with n chunks
``/slow?delay=0.5``   waits ``delay`` seconds, then answers (server "think time")
``/bytes?n=1000``     a body of exactly n bytes
``/status/<code>``    answers with that status code
``/redirect?to=/x``   302 Found pointing to ``/x`` (``&code=301`` etc.)
``/static/<path>``    files under the ``static=`` directory (never outside it)
====================  ==============================================================

To host a server *you* wrote (``http.server``, WSGI, Flask) see ``_wsgi``.
"""

from __future__ import annotations

import email.utils
import http
import json
import re
import socket
import ssl
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ._servers import TCPServer

__all__ = ["HTTPServer", "Request"]

MAX_HEAD = 16 * 1024          # bytes of request line + headers
MAX_BODY = 1024 * 1024        # bytes of request body
MAX_BYTES = 100 * 1024 * 1024  # largest /bytes?n=
MAX_DELAY = 10.0              # longest /slow?delay= (and /chunked delay) in seconds
MAX_CHUNKS = 1000
IDLE_TIMEOUT = 10.0           # seconds a connection may sit idle between requests
LOG_LIMIT = 10_000            # entries kept in HTTPServer.log
SERVER_NAME = "labkit"

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(rb"^HTTP/(\d)\.(\d)$")
_TARGET = re.compile(rb"^[\x21-\x7e]+$")          # visible ASCII, no spaces or controls
_FIELD_VALUE = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")
_LETTERS = b"abcdefghijklmnopqrstuvwxyz"


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
        split = urllib.parse.urlsplit(self.target)
        self.path = split.path or "/"
        self.query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))

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


class _Reader:
    """Buffered reads from a socket; bytes past one request stay for the next one."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.taken = bytearray()  # what the current request consumed, exactly as received

    def _take(self, n: int) -> bytes:
        data, self.buf = self.buf[:n], self.buf[n:]
        self.taken += data
        return data

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def head(self) -> bytes | None:
        """Request line + headers + blank line, or None if the client closed first."""
        while True:
            end = _head_end(self.buf)
            if end is not None and end <= MAX_HEAD:
                return self._take(end)
            if len(self.buf) > MAX_HEAD:
                raise BadRequest(f"request line and headers are larger than {MAX_HEAD} bytes")
            if not self._fill():
                if not self.buf.strip(b"\r\n"):
                    return None  # closed between requests: the normal end of keep-alive
                raise BadRequest("the connection closed before the blank line that ends "
                                 "the headers (\\r\\n\\r\\n)")

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise BadRequest(f"the body ended after {len(self.buf)} of {n} bytes "
                                 "promised by Content-Length")
        return self._take(n)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if len(self.buf) > 1024:
                raise BadRequest("a chunk-size line is longer than 1024 bytes")
            if not self._fill():
                raise BadRequest("the connection closed in the middle of a chunked body")
        return self._take(self.buf.index(b"\r\n") + 2)[:-2]


def _head_end(buf: bytes) -> int | None:
    crlf, lf = buf.find(b"\r\n\r\n"), buf.find(b"\n\n")
    ends = [i + 4 for i in [crlf] if i >= 0] + [i + 2 for i in [lf] if i >= 0]
    return min(ends) if ends else None


def parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Check and split a request head; raise :class:`BadRequest` saying what is wrong."""
    if re.search(rb"(?<!\r)\n", head):
        raise BadRequest("lines must end with CRLF (\\r\\n); found a bare \\n")
    lines = head[:-4].split(b"\r\n") if head.endswith(b"\r\n\r\n") else head.split(b"\r\n")
    request_line = lines[0]
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise BadRequest(f"the request line must be METHOD SP TARGET SP VERSION, "
                         f"got {request_line[:80]!r}")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise BadRequest(f"method {method[:40]!r} is not a token (letters like GET)")
    if not _TARGET.match(target):
        raise BadRequest(f"request target {target[:80]!r} has spaces, controls or non-ASCII")
    if not (target.startswith((b"/", b"http://", b"https://")) or target == b"*"):
        raise BadRequest(f"request target {target[:80]!r} must start with '/'")
    m = _VERSION.match(version)
    if not m:
        raise BadRequest(f"version {version[:40]!r} is not HTTP/x.y")
    if m.group(1) != b"1":
        raise BadRequest(f"{version.decode()} is not supported; this server speaks HTTP/1.1",
                         status=505)
    headers: list[tuple[str, str]] = []
    for number, line in enumerate(lines[1:], start=2):
        if line[:1] in (b" ", b"\t"):
            raise BadRequest(f"line {number} starts with whitespace (obsolete line folding)")
        name, colon, value = line.partition(b":")
        if not colon:
            raise BadRequest(f"header line {number} has no colon: {line[:60]!r}")
        if not _TOKEN.match(name):
            raise BadRequest(f"header name {name[:40]!r} on line {number} is empty or has "
                             "spaces or controls (no space is allowed before the colon)")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.match(value):
            raise BadRequest(f"header {name.decode()} has control characters in its value")
        headers.append((name.decode("ascii"), value.decode("latin-1")))
    return method.decode("ascii"), target.decode("ascii"), version.decode("ascii"), headers


def _body_length(method: str, version: str, headers: list[tuple[str, str]]) -> int | str:
    """How the body is framed: a byte count, or ``"chunked"``."""
    lower = [(n.lower(), v) for n, v in headers]
    if version == "HTTP/1.1" and not any(n == "host" for n, _ in lower):
        raise BadRequest("an HTTP/1.1 request must have a Host header")
    if sum(n == "host" for n, _ in lower) > 1:
        raise BadRequest("more than one Host header")
    te = [v for n, v in lower if n == "transfer-encoding"]
    cl = [v for n, v in lower if n == "content-length"]
    if te:
        if cl:
            raise BadRequest("both Transfer-Encoding and Content-Length: refusing an "
                             "ambiguous body (request smuggling)")
        if ",".join(te).strip().lower() != "chunked":
            raise BadRequest(f"Transfer-Encoding {', '.join(te)!r}: only 'chunked' is understood")
        return "chunked"
    if not cl:
        return 0
    values = {v.strip() for item in cl for v in item.split(",")}
    if len(values) != 1 or not next(iter(values)).isdigit() or not next(iter(values)).isascii():
        raise BadRequest(f"Content-Length {', '.join(cl)!r} is not one decimal number")
    length = int(values.pop())
    if length > MAX_BODY:
        raise BadRequest(f"Content-Length {length} is larger than the {MAX_BODY}-byte limit")
    return length


def _read_chunked(reader: _Reader) -> bytes:
    body = b""
    while True:
        line = reader.line()
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size_text):
            raise BadRequest(f"chunk size {line[:20]!r} is not a hexadecimal number")
        size = int(size_text, 16)
        if len(body) + size > MAX_BODY:
            raise BadRequest(f"chunked body is larger than the {MAX_BODY}-byte limit")
        if size == 0:
            while reader.line():  # trailer fields, up to the blank line
                pass
            return body
        body += reader.exactly(size)
        if reader.exactly(2) != b"\r\n":
            raise BadRequest("chunk data is not followed by CRLF")


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {code} {phrase}\r\n".encode()


def _head_bytes(code: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{n}: {v}\r\n" for n, v in headers]
    return _status_line(code) + "".join(lines).encode("latin-1") + b"\r\n"


@dataclass
class _Response:
    status: int
    body: bytes | Iterable[bytes] = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunk_delay: float = 0.0


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


class HTTPServer(TCPServer):
    """An HTTP/1.1 server on loopback with teaching endpoints (see the module doc).

    ``static`` is a directory served under ``/static/``; ``ssl_context`` (an
    ``ssl.SSLContext`` with a certificate loaded) makes it an HTTPS server.
    ``server.log`` lists what it answered (``'GET /hello → 200'``),
    ``server.connections_served`` how many TCP connections it accepted.
    """

    def __init__(self, static=None, *, ssl_context: ssl.SSLContext | None = None,
                 host: str = "127.0.0.1", port: int = 0, name: str = "server",
                 backlog: int = 64):
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError(f"ssl_context must be an ssl.SSLContext (e.g. ca.server_context()), "
                            f"not {type(ssl_context).__name__}")
        self.static: Path | None = None
        if static is not None:
            root = Path(static)
            if not root.is_dir():
                raise ValueError(f"static={str(static)!r} is not a directory: pass the folder "
                                 "whose files /static/ should serve")
            self.static = root.resolve()
        super().__init__(self._serve_connection, host=host, port=port, name=name,
                         backlog=backlog)
        self.ssl_context = ssl_context
        self.log: list[str] = []
        self.requests_served = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with an ssl_context), no trailing slash."""
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{port}"

    def _note(self, text: str) -> None:
        with self._lock:
            if len(self.log) < LOG_LIMIT:
                self.log.append(text)

    # -- one connection ----------------------------------------------------------
    def _serve_connection(self, conn: socket.socket, addr) -> None:
        conn.settimeout(IDLE_TIMEOUT)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            conn = self._start_tls(conn)
            if conn is None:
                return
        try:
            self._request_loop(conn)
        except (OSError, ValueError) as exc:
            # The client went away, reset, timed out or broke TLS: not a server bug.
            # (ValueError: a socket closed under us by stop().)
            if not self._stopping.is_set():
                self._note(f"(connection ended: {type(exc).__name__})")
        finally:
            if self.ssl_context is not None:
                conn.close()
                with self._lock:
                    self._conns.discard(conn)
                    self._idle.notify_all()

    def _start_tls(self, conn: socket.socket):
        tls = self.ssl_context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        with self._lock:  # stop() must shut down the TLS socket, not the detached plain one
            self._conns.discard(conn)
            self._conns.add(tls)
        try:
            tls.do_handshake()
        except (OSError, ValueError) as exc:
            self._note(f"(TLS handshake failed: {getattr(exc, 'reason', None) or exc})")
            tls.close()
            with self._lock:
                self._conns.discard(tls)
                self._idle.notify_all()
            return None
        return tls

    def _request_loop(self, conn: socket.socket) -> None:
        reader = _Reader(conn)
        while not self._stopping.is_set():
            reader.taken = bytearray()
            try:
                head = reader.head()
                if head is None:
                    return
                method, target, version, headers = parse_head(head)
                framing = _body_length(method, version, headers)
                body = _read_chunked(reader) if framing == "chunked" else reader.exactly(framing)
                request = Request(method, target, version, headers, body, bytes(reader.taken))
            except BadRequest as bad:
                self._refuse(conn, reader, bad)
                return
            except TimeoutError:
                return  # idle keep-alive connection: close it quietly
            keep = self._answer(conn, request)
            with self._lock:
                self.requests_served += 1
            if not keep:
                if not isinstance(conn, ssl.SSLSocket):
                    conn.shutdown(socket.SHUT_WR)
                return

    def _refuse(self, conn: socket.socket, reader: _Reader, bad: BadRequest) -> None:
        reason = str(bad)
        self._note(f"(bad request) → {bad.status}: {reason}")
        body = f"{bad.status} {http.HTTPStatus(bad.status).phrase}: {reason}\n".encode()
        head = _head_bytes(bad.status, self._common("text/plain; charset=utf-8", len(body))
                           + [("Connection", "close")])
        conn.sendall(head + body)
        if isinstance(conn, ssl.SSLSocket):
            return
        # Lingering close: stop sending, then read (bounded) what the client still sends,
        # so closing does not reset the connection before the client read the 400.
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(1.0)
        drained = 0
        while drained < MAX_HEAD * 4:
            data = conn.recv(65536)
            if not data:
                break
            drained += len(data)

    @staticmethod
    def _common(content_type: str | None, length: int | None) -> list[tuple[str, str]]:
        headers = [("Date", email.utils.formatdate(usegmt=True)), ("Server", SERVER_NAME)]
        if content_type:
            headers.append(("Content-Type", content_type))
        if length is not None:
            headers.append(("Content-Length", str(length)))
        return headers

    def _answer(self, conn: socket.socket, req: Request) -> bool:
        try:
            resp = self._route(req)
        except BadRequest as bad:
            resp = _text(bad.status, f"{bad.status} {http.HTTPStatus(bad.status).phrase}: {bad}\n")
        except OSError:
            raise  # the connection broke or the server is stopping
        except Exception as exc:  # a bug in an endpoint: answer 500, report to the cell
            with self._lock:
                self._errors.append(exc)
            resp = _text(500, f"500 Internal Server Error: {type(exc).__name__}\n")
        keep = req.keep_alive and resp.status < 500
        self._note(f"{req.method} {req.target} → {resp.status}")
        no_body = req.method == "HEAD" or resp.status in (204, 304)
        chunked = not isinstance(resp.body, bytes)
        headers = self._common(resp.content_type if resp.status != 204 else None,
                               None if chunked or resp.status in (204, 304) else len(resp.body))
        headers += resp.headers
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        if not keep:
            headers.append(("Connection", "close"))
        elif req.version == "HTTP/1.0":
            headers.append(("Connection", "keep-alive"))
        head = _head_bytes(resp.status, headers)
        if no_body:
            conn.sendall(head)
        elif not chunked and len(resp.body) <= 65536:
            conn.sendall(head + resp.body)  # one write: a small response is one segment
        elif not chunked:
            conn.sendall(head)
            conn.sendall(resp.body)         # no 20 MB copy just to glue the head on
        else:
            conn.sendall(head)
            for i, piece in enumerate(resp.body):
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
                raise OSError("server stopping")
            return _text(200, f"waited {delay:g} s\n")
        if path == "/bytes":
            n = _number(q, "n", 1000, int, 0, MAX_BYTES)
            body = (_LETTERS * (n // len(_LETTERS) + 1))[:n]
            return _Response(200, body, content_type="application/octet-stream")
        if path.startswith("/status/"):
            return self._status(path.removeprefix("/status/"))
        if path == "/redirect":
            return self._redirect(q)
        if path.startswith("/static/") and self.static is not None:
            return self._static(path.removeprefix("/static/"))
        return _text(404, f"404 Not Found: no endpoint {path}; GET / lists them\n")

    def _json(self, req: Request) -> _Response:
        if req.method != "POST":
            return _text(405, "405 Method Not Allowed: POST a JSON body to /json\n",
                         headers=[("Allow", "POST")])
        try:
            value = json.loads(req.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from None
        answer = {"content_type": req.header("Content-Type"), "length": len(req.body),
                  "received": value}
        return _Response(200, json.dumps(answer, sort_keys=True).encode() + b"\n",
                         content_type="application/json")

    @staticmethod
    def _status(text: str) -> _Response:
        if not text.isdigit() or not 200 <= int(text) <= 599:
            raise BadRequest(f"/status/{text}: use a final status code 200-599, like /status/404")
        code = int(text)
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = "Unknown"
        body = b"" if code in (204, 304) else f"{code} {phrase}\n".encode()
        return _Response(code, body)

    @staticmethod
    def _redirect(q: dict) -> _Response:
        to = q.get("to", "/hello")
        if not to.startswith("/") or to.startswith("//"):
            raise BadRequest(f"to={to!r}: redirect only to a path on this server, like to=/hello")
        code = _number(q, "code", 302, int, 300, 308)
        if code not in (301, 302, 303, 307, 308):
            raise BadRequest(f"code={code}: use 301, 302, 303, 307 or 308")
        return _text(code, f"{code} {http.HTTPStatus(code).phrase}: see {to}\n",
                     headers=[("Location", to)])

    def _static(self, rel: str) -> _Response:
        name = urllib.parse.unquote(rel)
        if "\x00" in name:
            return _text(400, "400 Bad Request: NUL byte in the path\n")
        target = (self.static / name).resolve()
        if not target.is_relative_to(self.static):
            return _text(403, f"403 Forbidden: {name!r} resolves outside the static "
                              "directory\n")
        if not target.is_file():
            return _text(404, f"404 Not Found: no file {name!r} in the static directory\n")
        kind = {".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8",
                ".json": "application/json", ".css": "text/css", ".png": "image/png"}
        return _Response(200, target.read_bytes(),
                         content_type=kind.get(target.suffix, "application/octet-stream"))
