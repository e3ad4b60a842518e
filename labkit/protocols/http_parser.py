"""A sans-IO HTTP/1.1 request parser: bytes in, events out, no sockets.

    >>> parser = RequestParser()
    >>> parser.feed(b"POST /echo HTTP/1.1\\r\\nHost: lab\\r\\nContent-Length: 2\\r\\n\\r\\nhi")
    >>> head = parser.next_event()
    >>> head.method, head.target, head.headers
    ('POST', '/echo', [('Host', 'lab'), ('Content-Length', '2')])
    >>> parser.next_event(), parser.next_event(), parser.next_event()
    (Data(data=b'hi'), EndOfMessage(trailers=[]), NEED_DATA)

The caller reads bytes however it likes and ``feed()``\\s them (``feed(b"")``: the
peer closed); ``next_event()`` returns a ``RequestHead``, then ``Data`` pieces, then
``EndOfMessage``, then the next pipelined request's events, ``NEED_DATA`` when it
must be fed more, or ``ConnectionClosed`` after a clean close between requests.
Anything that is not a request it may accept raises :class:`ParseError`, with the
status to answer (400, 413, 414, 431, 505) and a reason a person can act on; the
parser then stays broken (raises again), because after a framing error nobody
knows where the next request would start.  (A server puts the events together into one
whole request: :class:`labkit.servers.http_message.Request`.)

Each rule cites the section of RFC 9112 (HTTP/1.1) or RFC 9110 (HTTP semantics)
it enforces.  The parser is strict where a lenient reading lets two parsers
disagree on where a request ends (request smuggling), with no exceptions: a bare LF
or CR anywhere in the framing (request line, headers, chunk-size lines and their
extensions, trailers), obs-fold, both Content-Length and Transfer-Encoding, and
Transfer-Encoding in an HTTP/1.0 request.  Every buffer is bounded by a ``Limits``.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["RequestParser", "Limits", "RequestHead", "Data", "EndOfMessage", "Event",
           "ConnectionClosed", "NEED_DATA", "ParseError"]

MAX_REQUEST_LINE = 8 * 1024   # bytes of the request line (longer: 414 URI Too Long)
MAX_HEAD = 16 * 1024          # bytes of request line + headers, and of chunked trailers (431)
MAX_BODY = 1024 * 1024        # bytes of request body (413)
MAX_CHUNKED = 8 * MAX_BODY    # bytes of a chunked body *with* its framing (sizes, extensions)
MAX_CHUNK_LINE = 1024         # bytes of one chunk-size line

# Each is used with fullmatch (or \Z): "$" would also match before a final "\n".
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")          # RFC 9110 §5.6.2
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")                       # RFC 9112 §2.3
_TARGET = re.compile(rb"[\x21-\x7e]+")            # visible ASCII, no spaces or controls
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")           # RFC 9110 §5.5
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,8})[ \t]*(?:;|\Z)")  # RFC 9112 §7.1, §7.1.1
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")         # CTLs but HTAB: CR, LF, NUL...
_BARE_LF = re.compile(rb"(?<!\r)\n")
_STARTS_LIKE_A_REQUEST = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ /")


class ParseError(Exception):
    """The bytes are not a request this parser accepts: answer ``status``, then close.

    After a framing error nobody knows where the next request would start, so the
    connection ends.  (An endpoint that refuses a request it *could* read raises
    :class:`labkit.servers.http_message.RequestRefused` instead, and the connection
    stays open.)

    Attributes:
        reason: what is wrong with the bytes, and the fix (also ``str(error)``)
        status: the status code to answer with: 400, 408, 413, 414, 431 or 505
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Limits:
    """How much one request may make the parser hold (bytes).

    Attributes:
        request_line: bytes of the request line (longer: 414)
        head: bytes of the request line and headers, and of trailers (larger: 431)
        body: bytes of the body, framing removed (larger: 413)
        chunked: bytes of a chunked body with its chunk-size lines (larger: 413)
        chunk_line: bytes of one chunk-size line (longer: 400)
    """

    request_line: int = MAX_REQUEST_LINE
    head: int = MAX_HEAD
    body: int = MAX_BODY
    chunked: int = MAX_CHUNKED
    chunk_line: int = MAX_CHUNK_LINE


@dataclass(frozen=True)
class RequestHead:
    """The first event of a request: its head, framing checked; its body events follow.

    Attributes:
        method: ``"GET"``, ``"POST"``, ...
        target: the request target as sent (``"/echo"``)
        version: ``"HTTP/1.1"`` or ``"HTTP/1.0"``
        headers: ``(name, value)`` pairs in the order sent
    """

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]


@dataclass(frozen=True)
class Data:
    """A piece of the body, framing removed.

    Attributes:
        data: the bytes of this piece
    """

    data: bytes


@dataclass(frozen=True)
class EndOfMessage:
    """The request is complete.

    Attributes:
        trailers: ``(name, value)`` fields after a chunked body (usually none)
        raw: every byte of the request exactly as received
    """

    trailers: list[tuple[str, str]] = field(default_factory=list)
    raw: bytes = field(default=b"", repr=False)


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")                # feed() more bytes, then ask again
ConnectionClosed = _Sentinel("ConnectionClosed")  # closed cleanly between two requests

# What next_event() returns
Event = RequestHead | Data | EndOfMessage | _Sentinel


class RequestParser:
    """Turns the bytes of one connection into request events (see the module doc)."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._buf = bytearray()   # bytearray: del buf[:n] is cheap, so many small feeds stay linear
        self._raw = bytearray()   # what the current request consumed, exactly as received
        self._closed = False
        self._error: ParseError | None = None
        self._state = "head"      # head | body | chunk-size | chunk-data | chunk-end | trailers
        self._left = 0            # body bytes (or bytes of this chunk) still to come
        self._body_bytes = 0      # body bytes so far, framing excluded
        self._fields: list[tuple[str, str]] = []
        self._trailer_bytes = 0

    def feed(self, data: bytes) -> None:
        """Add bytes as received; ``b""`` means the peer closed its side."""
        if self._closed and data:
            raise RuntimeError("feed() after feed(b''): the peer already closed")
        if not data:
            self._closed = True
        self._buf += data

    @property
    def in_progress(self) -> bool:
        """True once a request has started and is not complete (a stall is then a 408)."""
        return self._state != "head" or bool(self._raw) or bool(self._buf.strip(b"\r\n"))

    def next_event(self) -> Event:
        """The next event, ``NEED_DATA`` or ``ConnectionClosed``; raises ``ParseError``."""
        if self._error is not None:
            raise self._error
        try:
            state: Callable[[], Event] = getattr(self, "_in_" + self._state.replace("-", "_"))
            return state()
        except ParseError as error:
            self._error = error
            raise

    # -- the states -----------------------------------------------------------------
    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._raw += data
        return data

    def _in_head(self) -> Event:
        limits, buf = self.limits, self._buf
        end = buf.find(b"\r\n\r\n")
        head = buf[:end + 4] if end >= 0 else buf
        # Checked on every feed, before the head is complete: a client waiting for an
        # answer gets it now, not when the idle timeout closes the connection.
        if _BARE_LF.search(head):
            # RFC 9112 §2.2: a recipient MAY accept a bare LF; refusing it means no two
            # parsers can disagree on where a line (so the request) ends.
            raise ParseError("lines must end with CRLF (\\r\\n); found a bare \\n")
        line_end = head.find(b"\r\n")
        if (line_end if line_end >= 0 else len(head)) > limits.request_line:
            if _STARTS_LIKE_A_REQUEST.match(head):  # RFC 9112 §3: a too-long target is 414
                raise ParseError(f"the request line is longer than {limits.request_line} "
                                 "bytes: use a shorter URL", status=414)
            raise ParseError(f"the first line is longer than {limits.request_line} bytes "
                             "and is not a request line")
        if len(head) > limits.head:  # RFC 9110 §5.4: fields larger than we process: 4xx (431)
            raise ParseError(f"the request line and headers are larger than {limits.head} "
                             "bytes", status=431)
        if end < 0:
            if not self._closed:
                return NEED_DATA
            if not buf.strip(b"\r\n"):
                return ConnectionClosed  # closed between requests: the end of keep-alive
            raise ParseError("the connection closed before the blank line that ends the "
                             "headers (\\r\\n\\r\\n)")
        method, target, version, headers = parse_head(self._take(end + 4))
        framing = body_framing(version, headers, limits)
        self._body_bytes = 0
        if framing == "chunked":
            self._state = "chunk-size"
        else:
            self._state, self._left = "body", framing
        return RequestHead(method, target, version, headers)

    def _in_body(self) -> Event:
        if self._left == 0:
            return self._end([])
        if self._buf:
            return self._data()
        if self._closed:  # RFC 9112 §8: fewer bytes than Content-Length is an incomplete message
            raise ParseError(f"the body ended after {self._body_bytes} of "
                             f"{self._body_bytes + self._left} bytes promised by Content-Length")
        return NEED_DATA

    def _data(self) -> Data:
        n = min(self._left, len(self._buf))
        self._left -= n
        self._body_bytes += n
        return Data(self._take(n))

    def _in_chunk_size(self) -> Event:
        line = self._line(self.limits.chunk_line, "a chunk-size line")
        if line is None:
            return NEED_DATA
        # RFC 9112 §7.1: chunk-size = 1*HEXDIG, then optional extensions after BWS ";"
        # (§7.1.1), which carry nothing we use.  At most 8 digits: no int() of a megabyte.
        if _CONTROL.search(line):  # RFC 9112 §2.2: no bare CR or LF in framing; §7.1.1: an
            # extension is tokens and quoted strings, neither of which holds a control
            raise ParseError("a chunk-size line must end with CRLF (\\r\\n) and hold no other "
                             "control characters; found a bare \\r, \\n or another control")
        match = _CHUNK_SIZE.match(line)
        if not match:
            raise ParseError(f"chunk size {line[:20]!r} is not a hexadecimal number")
        size = int(match.group(1), 16)
        if self._body_bytes + size > self.limits.body:  # RFC 9110 §15.5.14: 413 Content Too Large
            raise ParseError(f"chunked body is larger than the {self.limits.body}-byte limit",
                             413)
        if len(self._raw) > self.limits.chunked:  # tiny chunks with long extensions add up
            raise ParseError(f"the chunked body with its chunk-size lines is larger than "
                             f"{self.limits.chunked} bytes", 413)
        if size == 0:  # RFC 9112 §7.1: last-chunk, then the trailer section
            self._state, self._fields, self._trailer_bytes = "trailers", [], 0
        else:
            self._state, self._left = "chunk-data", size
        return self.next_event()

    def _in_chunk_data(self) -> Event:
        if self._left == 0:
            self._state = "chunk-end"
            return self.next_event()
        if self._buf:
            return self._data()
        if self._closed:
            raise ParseError("the connection closed in the middle of a chunked body")
        return NEED_DATA

    def _in_chunk_end(self) -> Event:
        if len(self._buf) < 2:
            if self._closed:
                raise ParseError("the connection closed in the middle of a chunked body")
            return NEED_DATA
        if self._take(2) != b"\r\n":  # RFC 9112 §7.1: chunk = chunk-size ... chunk-data CRLF
            raise ParseError("chunk data is not followed by CRLF")
        self._state = "chunk-size"
        return self.next_event()

    def _in_trailers(self) -> Event:
        while True:
            line = self._line(self.limits.head, "a trailer line", 431)
            if line is None:
                return NEED_DATA
            if not line:
                return self._end(self._fields)
            self._trailer_bytes += len(line) + 2
            if self._trailer_bytes > self.limits.head:  # bounded like the headers (RFC 9110 §5.4)
                raise ParseError(f"the trailer fields after the last chunk are larger than "
                                 f"{self.limits.head} bytes", 431)
            # RFC 9112 §7.1.2: trailer-section = *( field-line CRLF ), checked like headers
            if b"\n" in line:
                raise ParseError("lines must end with CRLF (\\r\\n); found a bare \\n")
            self._fields.append(parse_field_line(line, "trailer line"))

    def _line(self, limit: int, what: str, status: int = 400) -> bytes | None:
        """One CRLF-terminated line (without the CRLF) of at most ``limit`` bytes; None:
        it has not all arrived yet."""
        end = self._buf.find(b"\r\n")
        if end < 0 and len(self._buf) <= limit:
            if self._closed:
                raise ParseError("the connection closed in the middle of a chunked body")
            return None
        if end < 0 or end > limit:
            raise ParseError(f"{what} is longer than {limit} bytes", status)
        return self._take(end + 2)[:-2]

    def _end(self, trailers: list[tuple[str, str]]) -> EndOfMessage:
        event = EndOfMessage(trailers, bytes(self._raw))
        self._raw = bytearray()
        self._state = "head"  # RFC 9112 §9.3.2: a pipelined request may follow at once
        return event


# -- the head ----------------------------------------------------------------------------
def parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Check and split a request head (ending in CRLF CRLF, no bare LF: the parser saw to
    that) into method, target, version and headers; raise :class:`ParseError`."""
    lines = head[:-4].split(b"\r\n")
    request_line = lines[0]
    # RFC 9112 §3: request-line = method SP request-target SP HTTP-version (single spaces)
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise ParseError(f"the request line must be METHOD SP TARGET SP VERSION, "
                         f"got {request_line[:80]!r}")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):  # RFC 9112 §3.1: method = token
        raise ParseError(f"method {method[:40]!r} is not a token (letters like GET)")
    check_target(target)
    m = _VERSION.fullmatch(version)  # RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT
    if not m:
        raise ParseError(f"version {version[:40]!r} is not HTTP/x.y")
    if m.group(1) != b"1":  # RFC 9110 §15.6.6: 505 for a major version we do not speak
        raise ParseError(f"{version.decode()} is not supported; this server speaks HTTP/1.1",
                         status=505)
    headers = [parse_field_line(line, "line", number)
               for number, line in enumerate(lines[1:], start=2)]
    return method.decode("ascii"), target.decode("ascii"), version.decode("ascii"), headers


def check_target(target: bytes) -> None:
    """RFC 9112 §3.2: origin-form (/path), absolute-form (http://host/path) or "*"."""
    if not _TARGET.fullmatch(target):  # RFC 9112 §3.2 / RFC 3986: no spaces, controls, non-ASCII
        raise ParseError(f"request target {target[:80]!r} has spaces, controls or non-ASCII")
    if not (target.startswith((b"/", b"http://", b"https://")) or target == b"*"):
        # (authority-form is for CONNECT, §3.2.3, which this server does not do)
        raise ParseError(f"request target {target[:80]!r} must start with '/'")
    if target.startswith((b"http://", b"https://")):  # absolute-form, as sent to a proxy
        try:
            host = urllib.parse.urlsplit(target.decode("ascii")).netloc
        except ValueError as exc:  # e.g. http://[/ : "Invalid IPv6 URL"
            raise ParseError(f"request target {target[:80]!r} is not a valid URL: {exc}") from None
        if not host:  # RFC 9110 §4.2.1: an http URI with an empty host MUST be rejected
            raise ParseError(f"request target {target[:80]!r} has no host after '//'")


def parse_field_line(line: bytes, what: str = "line", number: int | None = None
                     ) -> tuple[str, str]:
    """``Name: value`` (RFC 9112 §5) as (name, value without surrounding whitespace)."""
    where = f"{what} {number}" if number is not None else what
    if line[:1] in (b" ", b"\t"):  # RFC 9112 §5.2: obs-fold in a request: MAY reject with 400
        raise ParseError(f"{where} starts with whitespace (obsolete line folding)")
    name, colon, value = line.partition(b":")
    if not colon:
        raise ParseError(f"header {where} has no colon: {line[:60]!r}")
    if not _TOKEN.fullmatch(name):  # RFC 9110 §5.1: field-name = token; RFC 9112 §5.1: MUST
        # reject whitespace between the name and the colon with 400
        raise ParseError(f"header name {name[:40]!r} on {where} is empty or has spaces or "
                         "controls (no space is allowed before the colon)")
    value = value.strip(b" \t")  # RFC 9112 §5.1: OWS around the value is not part of it
    if not _FIELD_VALUE.fullmatch(value):  # RFC 9110 §5.5: no CR, LF, NUL or other controls
        raise ParseError(f"header {name.decode()} has control characters in its value")
    return name.decode("ascii"), value.decode("latin-1")


def body_framing(version: str, headers: list[tuple[str, str]], limits: Limits = Limits()
                 ) -> int | Literal["chunked"]:
    """How the body is framed (RFC 9112 §6.3): a byte count, or ``"chunked"``."""
    lower = [(n.lower(), v) for n, v in headers]
    hosts = sum(n == "host" for n, _ in lower)
    if version == "HTTP/1.1" and not hosts:  # RFC 9112 §3.2: MUST 400 without Host ...
        raise ParseError("an HTTP/1.1 request must have a Host header")
    if hosts > 1:                            # ... or with more than one
        raise ParseError("more than one Host header")
    te = [v for n, v in lower if n == "transfer-encoding"]
    cl = [v for n, v in lower if n == "content-length"]
    if te and version == "HTTP/1.0":  # RFC 9112 §6.1: MUST treat the framing as faulty
        raise ParseError("Transfer-Encoding in an HTTP/1.0 request: HTTP/1.0 has no chunked "
                         "framing, so where this body ends is unknown; send HTTP/1.1, or a "
                         "Content-Length")
    if te:
        if cl:  # RFC 9112 §6.1: MAY reject; §11.2: the classic request smuggling
            raise ParseError("both Transfer-Encoding and Content-Length: refusing an "
                             "ambiguous body (request smuggling)")
        # RFC 9112 §6.3: chunked must be the final coding; we decode no other
        # (§6.1 suggests 501 for an unknown coding; 400 keeps one answer for all framing errors)
        if ",".join(te).strip().lower() != "chunked":
            raise ParseError(f"Transfer-Encoding {', '.join(te)!r}: only 'chunked' is understood")
        return "chunked"
    if not cl:
        return 0  # RFC 9112 §6.3: a request with neither has no body
    # RFC 9110 §8.6: Content-Length = 1*DIGIT; identical repeats ("5, 5") may be collapsed;
    # RFC 9112 §6.3: anything else is an unrecoverable error (400)
    values = {v.strip() for item in cl for v in item.split(",")}
    if len(values) != 1 or not re.fullmatch(r"[0-9]+", next(iter(values))):
        raise ParseError(f"Content-Length {', '.join(cl)[:40]!r} is not one decimal number")
    text = values.pop().lstrip("0") or "0"
    if len(text) > len(str(limits.body)) or int(text) > limits.body:  # (int() refuses 4,301 digits)
        raise ParseError(f"Content-Length {text[:20]}{'…' if len(text) > 20 else ''} is larger "
                         f"than the {limits.body}-byte limit", status=413)  # RFC 9110 §15.5.14
    return int(text)
