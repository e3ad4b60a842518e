"""Checks for notebook 04 (HTTP from a raw socket)."""

from __future__ import annotations

import http.server
import socket
from collections.abc import Callable
from typing import Any

import requests

from labkit.servers.tcp import TCPServer
from labkit.servers.wsgi import serve_in_thread

from . import StudentCall, Verdict, answers_back, verdict

__all__ = ["check_dechunk", "check_patient_fetch"]

# (what the case shows, chunked body, the body it carries)
CASES = [
    ("one chunk", b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    ("two chunks", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    ("an empty body", b"0\r\n\r\n", b""),
    ("a size of 26 written in hex (1a)",
     b"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n", b"abcdefghijklmnopqrstuvwxyz"),
    ("upper-case hex (1A)", b"1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
     b"abcdefghijklmnopqrstuvwxyz"),
    ("CRLF inside the chunk data", b"7\r\nab\r\ncd\n\r\n0\r\n\r\n", b"ab\r\ncd\n"),
    ("a chunk extension (;name=value)", b"5;lang=en\r\nhello\r\n0\r\n\r\n", b"hello"),
    ("trailer fields after the last chunk",
     b"5\r\nhello\r\n0\r\nExpires: never\r\n\r\n", b"hello"),
]

HINTS = {
    "a size of 26 written in hex (1a)": "chunk sizes are written in hexadecimal, not decimal",
    "upper-case hex (1A)": "hexadecimal digits may be upper or lower case: 1a and 1A are both 26",
    "CRLF inside the chunk data": "take exactly `size` bytes of data; do not split the data on "
                                  "CRLF, the size line tells you where the chunk ends",
    "a chunk extension (;name=value)": "the size line may carry ';extensions': keep only the "
                                       "part before ';'",
    "trailer fields after the last chunk": "stop at the chunk of size 0; whatever follows "
                                           "(trailer fields) is not body",
}


def _live_case(n: int = 20) -> tuple[str, bytes, bytes]:
    """The /chunked body as the labkit server really sends it."""
    from labkit.servers.http import HTTPServer

    request = f"GET /chunked?n={n} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n".encode()
    with HTTPServer() as server, socket.create_connection(server.address, timeout=5) as s:
        s.sendall(request)
        response = b""
        while data := s.recv(65536):
            response += data
    body = response.split(b"\r\n\r\n", 1)[1]
    expected = b"".join(f"chunk {i} of {n}\n".encode() for i in range(1, n + 1))
    return (f"the real /chunked?n={n} response from HTTPServer", body, expected)


@answers_back
def check_dechunk(dechunk: Callable[[bytes], bytes]) -> Verdict:
    """Run ``dechunk(body) -> bytes`` on chunked bodies, ending with a real server's."""
    if not callable(dechunk):
        return Verdict(False, f"dechunk should be a function, not {type(dechunk).__name__}",
                       "define it with `def dechunk(body: bytes) -> bytes:`")
    for name, chunked, expected in [*CASES, _live_case()]:
        try:
            got = dechunk(chunked)
        except NotImplementedError:
            return Verdict(False, "dechunk is not written yet (it raises NotImplementedError)",
                           "replace the `raise` with your code")
        except Exception as exc:  # noqa: BLE001 - the student's bug, reported as a verdict
            return Verdict(False, f"with {name}, dechunk({chunked[:40]!r}) raised "
                                  f"{type(exc).__name__}: {exc}",
                           HINTS.get(name, "read the size line, then exactly that many bytes, "
                                           "then the CRLF after them; repeat until size 0"))
        if isinstance(got, str):
            return Verdict(False, f"dechunk returned a str ({got[:30]!r}); the body is bytes",
                           "work with bytes throughout: b'' literals, no .decode()")
        if got != expected:
            return Verdict(False, f"with {name}, dechunk({chunked[:40]!r}) returned "
                                  f"{got!r:.60}, expected {expected!r:.60}",
                           HINTS.get(name, "read the size line, then exactly that many bytes, "
                                           "then the CRLF after them; repeat until size 0"))
    return verdict(True, f"dechunk decodes all {len(CASES) + 1} chunked bodies, including a "
                         "real server's", wrong="")


# -- exercise 2: a requests Session that gives up in time and retries a 503 ---------------------
PATIENCE = 5.0        # s the check waits for one call before it calls it hung
# fetch(session, url): the student's function, what session.get() returns
Fetch = Callable[[requests.Session, str], object]
RETRIES = 2           # retries of a 503 the exercise asks for (timeouts: 0.2 s, 0.3 s)


def _flaky_handler(failures: int, seen: list[str]
                   ) -> type[http.server.BaseHTTPRequestHandler]:
    """An http.server handler: ``failures`` times 503, then 200 (-1: 503 for ever)."""
    class Flaky(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            seen.append(self.path)
            code = 503 if failures < 0 or len(seen) <= failures else 200
            body = b"busy\n" if code == 503 else b"done\n"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass
    return Flaky


def _call(fetch: Fetch, session: requests.Session, url: str) -> tuple[str, object]:
    """(outcome, value): outcome "ok", "raised" or "running" (still, after PATIENCE s)."""
    call = StudentCall(fetch, session, url)
    call.wait(PATIENCE)
    return call.outcome, call.value


@answers_back
def check_patient_fetch(make_session: Callable[[], tuple[requests.Session, Fetch]]) -> Verdict:
    """``make_session()`` returns ``(session, fetch)``; ``fetch(session, url)`` gets ``url``,
    giving up connecting after 0.2 s and waiting after 0.3 s, and retrying a 503 twice.

    A timeout may end in ``ReadTimeout``, or, once urllib3 has retried it too (a ``Retry``
    retries read errors of a GET unless told ``read=False``), in a ``ConnectionError``
    saying so: both are right."""
    if not callable(make_session):
        return Verdict(False, f"give the function itself, not {type(make_session).__name__}",
                       "check_patient_fetch(make_session), without parentheses")
    session, fetch = make_session()
    if not isinstance(session, requests.Session) or not callable(fetch):
        return Verdict(False, f"make_session() returned {type(session).__name__} and "
                              f"{type(fetch).__name__}, not a requests.Session and a function",
                       "return (session, fetch): the Session you set up, and your function")
    for failures, wanted in ((RETRIES, "200 after two 503s"), (-1, "503 for ever")):
        seen: list[str] = []
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                 _flaky_handler(failures, seen))
        with serve_in_thread(server):
            outcome, value = _call(fetch, session, f"http://127.0.0.1:{server.server_port}/")
        asked = len(seen)
        if outcome == "running":
            return Verdict(False, f"against a server that answers {wanted}, fetch() had not "
                                  f"returned after {PATIENCE:.0f} s",
                           "a back-off of 0.1 s × 2ⁿ between retries keeps them short")
        if asked != RETRIES + 1:
            return Verdict(False, f"against a server that answers {wanted}, the server was "
                                  f"asked {asked} time(s), not {RETRIES + 1}",
                           "mount an HTTPAdapter(max_retries=Retry(total=2, status_forcelist="
                           "[503], backoff_factor=0.1)) on the session for http://")
        if failures > 0 and not (outcome == "ok" and getattr(value, "status_code", 0) == 200):
            return Verdict(False, f"after two 503s and a 200, fetch() gave {value!r}",
                           "return what session.get() returns")
    with TCPServer(handler=_silent) as silent:
        outcome, value = _call(fetch, session, f"http://127.0.0.1:{silent.port}/")
    read_timeout = isinstance(value, requests.exceptions.ReadTimeout) or (
        isinstance(value, requests.exceptions.ConnectionError) and "Read timed out" in str(value))
    if outcome != "raised" or not read_timeout:
        return Verdict(False, "against a server that never answers, fetch() "
                              + ("had not given up after 5 s" if outcome == "running"
                                 else f"ended with {value!r}, not a read timeout"),
                       "give session.get() timeout=(0.2, 0.3): 0.2 s to connect, 0.3 s to "
                       "wait for each piece of the answer")
    busy = socket.create_server(("127.0.0.1", 0), backlog=0)   # never accepts ...
    queued = socket.create_connection(busy.getsockname())      # ... and its queue is full
    try:
        outcome, value = _call(fetch, session, f"http://127.0.0.1:{busy.getsockname()[1]}/")
    finally:
        queued.close()
        busy.close()
    if outcome != "raised" or not isinstance(value, requests.exceptions.ConnectTimeout):
        return Verdict(False, "against a server too busy to accept, fetch() "
                              + ("had not given up after 5 s" if outcome == "running"
                                 else f"ended with {value!r}, not ConnectTimeout"),
                       "timeout=(0.2, 0.3): the first number bounds the TCP handshake")
    session.close()
    return Verdict(True, "three tries against a flaky server (the third answered 200), three "
                         "against one that stays busy, a read timeout from a silent one and a "
                         "ConnectTimeout from one that never accepts")


def _silent(conn: socket.socket, addr: Any) -> None:
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass
