"""Checks for notebook 04 (HTTP from a raw socket)."""

from __future__ import annotations

import socket
from collections.abc import Callable

from . import Verdict, answers_back, verdict

__all__ = ["check_dechunk"]

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
