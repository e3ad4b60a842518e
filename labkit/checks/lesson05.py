"""Checks for notebook 05 (build an HTTP server)."""

from __future__ import annotations

import http.client
from typing import TYPE_CHECKING

from labkit.servers.base import LabServer, ServerError

from . import Verdict, answers_back

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

__all__ = ["check_greet"]

# (method, target, expected status, expected body or None for "any")
REQUESTS = [
    ("GET", "/greet?name=Ada", 200, b"Hello, Ada!\n"),
    ("GET", "/greet?name=Grace%20Hopper", 200, b"Hello, Grace Hopper!\n"),
    ("GET", "/greet", 400, None),
    ("GET", "/nowhere", 404, None),
]

HINTS = {
    ("/greet?name=Ada", "status"): "route on environ['PATH_INFO'] (the path without the "
                                   "query) and answer start_response('200 OK', ...)",
    ("/greet?name=Ada", "body"): "the body must be exactly b'Hello, Ada!\\n': the name from "
                                 "the query string, an exclamation mark and a newline",
    ("/greet?name=Grace%20Hopper", "body"): "the query string arrives percent-encoded (%20 is "
                                            "a space): decode it; urllib.parse splits and "
                                            "decodes query strings",
    ("/greet", "status"): "no name in the query is the client's mistake: 400 Bad Request",
    ("/nowhere", "status"): "any other path is 404 Not Found",
}

_HINT_ROUTES = "200 for /greet?name=..., 400 for /greet without a name, 404 for any other path"
_HINT_BODY = "the body is f'Hello, {name}!\\n', encoded to bytes"


def _ask(server: LabServer, method: str, target: str
         ) -> tuple[int, str, str | None, bytes]:
    """(status, Content-Type, Content-Length, every body byte sent before the server closed).

    Read raw, not with http.client: a client stops at Content-Length, so a wrong one
    would look like a wrong body.
    """
    import socket

    request = f"{method} {target} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(request.encode())
        raw = b""
        while data := sock.recv(65536):
            raw += data
    head, blank, body = raw.partition(b"\r\n\r\n")
    if not blank:
        raise http.client.BadStatusLine(repr(raw[:60]))
    status_line, *fields = head.decode("iso-8859-1").split("\r\n")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (field.partition(":") for field in fields)}
    status = int(status_line.split()[1])
    return status, headers.get("content-type", ""), headers.get("content-length"), body


def _check_answers(server: LabServer) -> Verdict | None:
    for method, target, status, body in REQUESTS:
        try:
            got_status, ctype, length, got_body = _ask(server, method, target)
        except (OSError, http.client.HTTPException, ValueError, IndexError) as exc:
            return Verdict(False, f"{method} {target}: the server gave no HTTP answer "
                                  f"({type(exc).__name__}: {exc})",
                           "call start_response(status, headers) once, then return a list "
                           "of bytes")
        if got_status != status:
            return Verdict(False, f"{method} {target} answered {got_status}, expected {status}",
                           HINTS.get((target, "status"), _HINT_ROUTES))
        if body is not None and got_body != body:
            return Verdict(False, f"{method} {target} answered the body {got_body[:60]!r}, "
                                  f"expected {body!r}", HINTS.get((target, "body"), _HINT_BODY))
        if status == 200 and not ctype.startswith("text/plain"):
            return Verdict(False, f"{method} {target} has Content-Type {ctype or 'missing'!r}",
                           "add ('Content-Type', 'text/plain; charset=utf-8') to the headers")
        if length is not None and int(length) != len(got_body):
            return Verdict(False, f"{method} {target} says Content-Length {length} but sent "
                                  f"{len(got_body)} bytes",
                           "Content-Length counts the bytes of the encoded body, exactly as "
                           "you send them (not the characters of a str)")
    return None


@answers_back
def check_greet(app: WSGIApplication) -> Verdict:
    """Serve ``app`` (a WSGI callable or a Flask app) and send it real requests."""
    from labkit.servers.wsgi import WSGIServer

    if not callable(app):
        return Verdict(False, f"expected a WSGI app (a function of environ, start_response), "
                              f"got {type(app).__name__}",
                       "define `def greet_app(environ, start_response):`")
    problem = None
    try:
        with WSGIServer(app, name="your app") as server:
            problem = _check_answers(server)
    except ServerError as err:
        cause = err.__cause__
        if isinstance(cause, NotImplementedError):
            return Verdict(False, "greet_app is not written yet (it raises NotImplementedError)",
                           "replace the `raise` with your code")
        hint = "a WSGI app returns a list of bytes, e.g. [body.encode()]" \
            if isinstance(cause, (AssertionError, TypeError)) else \
            "read the error: it happened while your app answered one of the requests"
        return Verdict(False, f"your app raised {type(cause).__name__}: {cause} "
                              "(the client got 500 Internal Server Error)", hint)
    if problem is not None:
        return problem
    return Verdict(True, f"all {len(REQUESTS)} requests got the right status, body and headers")
