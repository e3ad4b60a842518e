"""The teaching endpoints of :class:`~labkit.servers.http.HTTPServer` (``GET /`` lists them).

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

**Adding an endpoint** is two edits in this file: a branch in :meth:`HTTPEndpoints._route`
(the one place a path is matched to its answer) and a line in ``INDEX``::

    if path == "/time":                      # in _route, with the other GET endpoints
        return text(200, time.strftime("%H:%M:%S\\n"))

An endpoint gets the parsed :class:`~labkit.servers.http_message.Request` and returns a
:class:`~labkit.servers.http_message.Response` (``text()`` makes a plain-text one); it
raises ``RequestRefused("what is wrong, and the fix")`` for a request it cannot answer
(a 400 with that reason; the connection stays open).  Read numbers from the query with
``_number``, which bounds them: no client may make the server wait, send or buffer
without limit.  The connection side
(reading, keep-alive, framing, sending) is ``labkit.servers.http``'s and needs no change.
"""

from __future__ import annotations

import errno
import json
import os
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from labkit.servers import arguments
from labkit.servers.http_message import Request, RequestRefused, Response, cut, phrase, text

__all__ = ["HTTPEndpoints", "INDEX", "static_root"]

MAX_JSON_DEPTH = 100          # nesting of arrays/objects POSTed to /json
MAX_BYTES = 100 * 1024 * 1024  # largest /bytes?n=
MAX_DELAY = 10.0              # longest /slow?delay= (and /chunked delay) in seconds
MAX_CHUNKS = 1000

_LETTERS = b"abcdefghijklmnopqrstuvwxyz"
_PATTERN = _LETTERS * 2521    # 65,546 bytes: a whole number of alphabets, so pieces join up

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


class HTTPEndpoints:
    """The endpoints, as methods of the server (HTTPServer inherits them): ``_route``
    answers one request; ``static`` is the folder ``/static/`` serves (or None), and
    ``_stopping`` is set when the server stops, so a deliberate wait ends early."""

    static: Path | None
    _stopping: threading.Event

    def _route(self, req: Request) -> Response:
        path, q = req.path, req.query
        if path == "/echo":
            return Response(200, req.raw)
        if path == "/json":
            return self._json(req)
        if req.method not in ("GET", "HEAD"):
            return text(405, f"405 Method Not Allowed: {path} answers GET and HEAD\n",
                        headers=[("Allow", "GET, HEAD")])
        if path == "/":
            return text(200, INDEX)
        if path == "/hello":
            return text(200, "Hello, world!\n")
        if path == "/chunked":
            n = _number(q, "n", 3, int, 1, MAX_CHUNKS)
            delay = _number(q, "delay", 0.0, float, 0.0, MAX_DELAY)
            pieces = [f"chunk {i} of {n}\n".encode() for i in range(1, n + 1)]
            return Response(200, iter(pieces), chunk_delay=delay)
        if path == "/slow":
            delay = _number(q, "delay", 0.5, float, 0.0, MAX_DELAY)
            if self._stopping.wait(delay):  # a lesson's deliberate wait; wakes on stop()
                return text(503, "503 Service Unavailable: the server is stopping\n")
            return text(200, f"waited {delay:g} s\n")
        if path == "/bytes":
            n = _number(q, "n", 1000, int, 0, MAX_BYTES)
            body = _PATTERN[:n] if n <= len(_PATTERN) else _letters(n)
            return Response(200, body, content_type="application/octet-stream", length=n)
        if path.startswith("/status/"):
            return self._status(path.removeprefix("/status/"))
        if path == "/redirect":
            return self._redirect(q)
        if path.startswith("/static/") and self.static is not None:
            return self._static(self.static, path.removeprefix("/static/"))
        return text(404, f"404 Not Found: no endpoint {cut(path)}; GET / lists them\n")

    def _json(self, req: Request) -> Response:
        if req.method != "POST":
            return text(405, "405 Method Not Allowed: POST a JSON body to /json\n",
                        headers=[("Allow", "POST")])
        too_deep = RequestRefused(f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep")
        try:
            value = json.loads(req.body)
        except RecursionError:  # deeper than the parser's own limit (about 1,000)
            raise too_deep from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestRefused(f"the body is not JSON: {exc}") from None
        if _depth(value) > MAX_JSON_DEPTH:  # json.dumps below recurses as deep: refuse first
            raise too_deep
        answer = {"content_type": req.header("Content-Type"), "length": len(req.body),
                  "received": value}
        return Response(200, json.dumps(answer, sort_keys=True).encode() + b"\n",
                        content_type="application/json")

    @staticmethod
    def _status(code_text: str) -> Response:
        if not (len(code_text) == 3 and code_text.isdigit() and 200 <= int(code_text) <= 599):
            raise RequestRefused(f"/status/{code_text[:20]}: use a final status code 200-599, "
                             "like /status/404")
        code = int(code_text)
        body = b"" if code in (204, 304) else f"{code} {phrase(code)}\n".encode()
        return Response(code, body)

    @staticmethod
    def _redirect(q: dict[str, str]) -> Response:
        to = q.get("to", "/hello")
        if re.search(r"[\x00-\x1f\x7f\\]", to):
            # CR/LF would end the Location header and start the attacker's own; browsers
            # drop tabs and read "\" as "/", so "/\evil" and "/<TAB>/evil" mean //evil.
            raise RequestRefused(f"to={cut(to)!r}: a redirect target must not contain control "
                             "characters (CR, LF, tab) or backslashes")
        if not to.startswith("/") or to.startswith("//"):
            raise RequestRefused(f"to={cut(to)!r}: redirect only to a path on this server, "
                             "like to=/hello (not //host or http://…)")
        code = _number(q, "code", 302, int, 300, 308)
        if code not in (301, 302, 303, 307, 308):
            raise RequestRefused(f"code={code}: use 301, 302, 303, 307 or 308")
        # Location is ASCII: percent-encode the rest (é → %C3%A9), as browsers do.
        location = urllib.parse.quote(to, safe="/?#[]@!$&'()*+,;=:%~")
        return text(code, f"{code} {phrase(code)}: see {cut(location)}\n",
                    headers=[("Location", location)])

    def _static(self, root: Path, rel: str) -> Response:
        name = urllib.parse.unquote(rel)
        if "\x00" in name:
            return text(400, "400 Bad Request: NUL byte in the path\n")
        try:
            target = (root / name).resolve()
            if not target.is_relative_to(root):
                return text(403, f"403 Forbidden: {cut(name)!r} resolves outside the static "
                                 "directory\n")
            if not target.is_file():
                return text(404, f"404 Not Found: no file {cut(name)!r} in the static "
                                 "directory\n")
            file = target.open("rb")
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            return self._file_error(name, exc)
        kind = {".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8",
                ".json": "application/json", ".css": "text/css", ".png": "image/png"}
        return Response(200, file, length=os.fstat(file.fileno()).st_size,
                        content_type=kind.get(target.suffix, "application/octet-stream"))

    @staticmethod
    def _file_error(name: str, exc: Exception) -> Response:
        """Why a static file cannot be served: the file system's problem, not the client's."""
        code = getattr(exc, "errno", None)
        why = getattr(exc, "strerror", None) or "a symlink loop"  # (no server paths in answers)
        if code in (errno.EACCES, errno.EPERM):
            return text(403, f"403 Forbidden: the server may not read {cut(name)!r} "
                             f"({why})\n")
        if code in (errno.ENAMETOOLONG, errno.ELOOP, errno.ENOENT, errno.ENOTDIR, None):
            return text(404, f"404 Not Found: no file {cut(name)!r} in the static "
                             f"directory ({why})\n")
        return text(500, f"500 Internal Server Error: cannot read {cut(name)!r} ({why})\n")


def static_root(static: str | os.PathLike[str]) -> Path:
    """The folder ``static=`` names, resolved; refuse one that would expose the user's files."""
    arguments.path(static, "static", "'public'")
    root = Path(static)
    if not root.is_dir():
        arguments.fail(ValueError, "static", "a folder", str(static), "'public'",
                       "there is no such directory: pass the folder whose files /static/ "
                       "should serve")
    root = root.resolve()
    try:
        home = Path.home().resolve()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry: only "/" is known to be wrong
        home = Path(root.anchor)
    if root == Path(root.anchor) or root == home or root in home.parents:
        what = ("the whole file system" if root == Path(root.anchor) else
                "your home directory" if root == home else f"{root}, above your home directory")
        arguments.fail(ValueError, "static", "a folder made for the lab's files", str(static),
                       "a new folder 'public' next to the notebook",
                       f"it would serve {what} (keys, passwords, history) to any client")
    return root


N = TypeVar("N", int, float)


def _number(query: dict[str, str], name: str, default: N, kind: Callable[[str], N], low: N,
            high: N) -> N:
    """``query[name]`` as ``kind`` (int or float) within low..high, or ``default`` if absent;
    RequestRefused (400, with the reason) if it is not a number or out of range."""
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise RequestRefused(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise RequestRefused(f"{name}={raw} is out of range {low}..{high}")
    return value


def _letters(n: int) -> Iterable[bytes]:
    """n bytes of abc…z abc…, in pieces of at most 64 KiB: never the whole body in memory."""
    while n > 0:
        piece = _PATTERN[:min(n, len(_PATTERN))]
        n -= len(piece)
        yield piece


def _depth(value: object) -> int:
    """How deeply lists and dicts nest in a parsed JSON value (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1)
                         for child in (item.values() if isinstance(item, dict) else item))
    return deepest
