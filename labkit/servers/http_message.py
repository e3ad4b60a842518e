"""What the HTTP server and its endpoints pass each other: a Request in, a Response out.

    >>> Request("GET", "/bytes?n=5", "HTTP/1.1", [("Host", "x")]).query
    {'n': '5'}
    >>> head_bytes(404, [("Content-Length", "0")])
    b'HTTP/1.1 404 Not Found\\r\\nContent-Length: 0\\r\\n\\r\\n'

:class:`Request` is what ``labkit.servers.http`` read from the connection: a whole
request, its body too (the parser's :class:`~labkit.protocols.http_parser.RequestHead`
is only its first part).  An endpoint (``labkit.servers.http_endpoints``) answers with
a :class:`Response`, or raises :class:`RequestRefused` to refuse it with a reason.  They
live here, below both modules, so neither has to import the other's internals.
"""

from __future__ import annotations

import http
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Request", "Response", "RequestRefused", "text", "phrase", "head_bytes", "cut"]


class RequestRefused(Exception):
    """An endpoint refuses a request it read well: ``RequestRefused("n=x is not a number")``.

    The server answers ``status`` (400 unless given) with the reason and keeps the
    connection open: the request was framed correctly, so the next one can be read.
    (A request that cannot be *read* is the parser's
    :class:`~labkit.protocols.http_parser.ParseError` instead: answered, then the
    connection is closed, since where the next request starts is unknown.)

    Attributes:
        reason: what is wrong with the request, and the fix (also ``str(error)``)
        status: the 4xx status code to answer with
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass
class Request:
    """One whole request as an endpoint gets it: head, body, and the bytes it came in.

    Attributes:
        method: ``"GET"``, ``"POST"``, ...
        target: the request target as sent (``"/bytes?n=5"``)
        version: ``"HTTP/1.1"`` or ``"HTTP/1.0"``
        headers: ``(name, value)`` pairs in the order sent
        body: the body, framing removed (chunked bodies joined)
        raw: every byte of the request exactly as received
        path: the target's path, without the query (``"/bytes"``)
        query: the query's parameters (``{"n": "5"}``)
    """

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    raw: bytes = b""
    path: str = field(init=False)
    query: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
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
        """Does the client want the connection kept open after this request?"""
        tokens = {t.strip().lower() for t in (self.header("Connection") or "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass
class Response:
    """What to answer.  ``body`` is bytes, or an open binary file or pieces sent as they
    come: framed by ``length`` (Content-Length) if given, else chunked.  A body with
    ``close()`` (a file, a generator) is closed once sent, even if the client went away.

    Attributes:
        status: the status code (``200``)
        body: bytes, an open binary file, or an iterable of bytes pieces
        content_type: the Content-Type header
        headers: more ``(name, value)`` headers to send
        chunk_delay: seconds between two chunks of a chunked body (a lesson's slow server)
        length: the Content-Length of a body that is not bytes (None: sent chunked)
    """

    status: int
    body: bytes | Iterable[bytes] = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunk_delay: float = 0.0
    length: int | None = None


def text(status: int, message: str, **kw: Any) -> Response:
    """A plain-text Response: ``text(404, "404 Not Found: ...\\n")``."""
    return Response(status, message.encode(), **kw)


# RFC 9110's names, which Python only adopted in 3.13: the same text on every interpreter.
_PHRASES = {413: "Content Too Large", 414: "URI Too Long", 416: "Range Not Satisfiable",
            422: "Unprocessable Content"}


def phrase(code: int) -> str:
    """The reason phrase for a status code (``phrase(404) == "Not Found"``)."""
    try:
        return _PHRASES.get(code) or http.HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def head_bytes(code: int, headers: list[tuple[str, str]]) -> bytes:
    """A response's status line and headers, up to and with the blank line."""
    lines = [f"{n}: {v}\r\n" for n, v in headers]
    status_line = f"HTTP/1.1 {code} {phrase(code)}\r\n".encode()
    return status_line + "".join(lines).encode("latin-1") + b"\r\n"


def cut(message: str, limit: int = 80) -> str:
    """message, shortened: an answer or log line must not echo a 4 KB name back."""
    return message if len(message) <= limit else message[:limit] + "…"
