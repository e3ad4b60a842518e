"""Checks for 02-Frame-Messages-On-A-TCP-Stream.

Each check runs the student's function against a labkit server that dribbles its
bytes in small pieces, and against one that closes early.  A function that loops
forever on ``b''`` or waits for bytes that never come is stopped and explained,
never left hanging.
"""

from __future__ import annotations

import itertools
import socket
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from labkit.servers.stream import Dribbler
from labkit.servers.tcp import TCPServer

from . import NOT_WRITTEN, Verdict, answers_back, first_failure, unfinished

__all__ = ["check_recv_exactly", "check_read_message"]

WAIT = 3.0          # seconds a recv() may block before we call it a hang
MAX_EMPTY = 3       # recv() returning b'' more often than this: looping on a closed peer
MAX_CALLS = 100_000

# What one call of the student's function did: ("ok", value) | ("raised", exc) |
# ("spun", None) | ("hung", None)
Outcome = tuple[str, Any]


class _Spinning(BaseException):
    """recv() returned b'' again and again (a BaseException, so `except Exception` can't eat it)."""


class _Watched:
    """The real socket, with recv()/recv_into() watched for looping on b''."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._empty = 0
        self._calls = 0
        self.asked: list[int] = []   # every bufsize the student's code asked recv() for

    def _count(self, got: int) -> None:
        self._calls += 1
        if got == 0:
            self._empty += 1
        if self._empty > MAX_EMPTY or self._calls > MAX_CALLS:
            raise _Spinning()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self.asked.append(bufsize)
        data = self._sock.recv(bufsize, flags)
        self._count(len(data) or (bufsize == 0))
        return data

    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = 0, flags: int = 0
                  ) -> int:
        self.asked.append(nbytes or len(buffer))
        n = self._sock.recv_into(buffer, nbytes, flags)
        self._count(n)
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _call(fn: Callable[..., object], sock: _Watched, *args: object) -> Outcome:
    """What calling ``fn(sock, *args)`` did (an :data:`Outcome`)."""
    try:
        return "ok", fn(sock, *args)
    except _Spinning:
        return "spun", None
    except TimeoutError:
        return "hung", None
    except Exception as exc:  # noqa: BLE001 - the student's exception is the answer
        return "raised", exc


def _session(dribbler: Dribbler, fn: Callable[..., object], calls: Sequence[tuple[Any, ...]],
             asked: list[list[int]] | None = None) -> list[Outcome]:
    """Connect to a dribbling server and call ``fn(sock, *args)`` for each args tuple;
    ``asked`` gets, for each call, the sizes it asked recv() for."""
    results: list[Outcome] = []
    with TCPServer(handler=dribbler, name="dribbler") as server:
        with socket.create_connection(server.address, timeout=WAIT) as raw:
            sock = _Watched(raw)
            for args in calls:
                before = len(sock.asked)
                outcome = _call(fn, sock, *args)
                results.append(outcome)
                if asked is not None:
                    asked.append(sock.asked[before:])
                if outcome[0] != "ok":
                    break
    return results


_EOF_HINT = ("recv() returns b'' when the peer has closed the connection: then no more "
             "bytes will ever come, so raise EOFError (or ConnectionError) with a message "
             "saying how many bytes were missing")


def _expect_eof(outcome: Outcome, what: str) -> Verdict:
    kind, value = outcome
    if kind == "spun":
        return Verdict(False, f"{what}: your function kept calling recv() after it returned "
                              "b'' (the peer had closed) - it would loop forever", _EOF_HINT)
    if kind == "hung":
        return Verdict(False, f"{what}: your function waited more than {WAIT:.0f}s for bytes "
                              "from a peer that had already closed", _EOF_HINT)
    if kind == "ok":
        return Verdict(False, f"{what}: your function returned {value!r} instead of raising",
                       _EOF_HINT)
    if not isinstance(value, (EOFError, ConnectionError)):
        return Verdict(False, f"{what}: your function raised {type(value).__name__}: {value}",
                       "raise EOFError (or ConnectionError) when recv() returns b''")
    return Verdict(True, f"{what}: raised {type(value).__name__}")


def _expect_values(results: list[Outcome], wanted: list[bytes], what: str, hint: str
                   ) -> Verdict:
    # not strict: _session stops at the first call that fails, and that one returns a verdict
    for i, (outcome, want) in enumerate(zip(results, wanted, strict=False)):
        kind, value = outcome
        call = f"call {i + 1}"
        if kind == "spun":
            return Verdict(False, f"{what}, {call}: recv() kept returning b''", _EOF_HINT)
        if kind == "hung":
            return Verdict(False, f"{what}, {call}: waited more than {WAIT:.0f}s for bytes that "
                                  "were never sent - did you ask recv() for more than you need?",
                           hint)
        if kind == "raised" and unfinished(value):
            return NOT_WRITTEN
        if kind == "raised":
            return Verdict(False, f"{what}, {call}: raised {type(value).__name__}: "
                                  f"{value or '(an exception with no message)'}", hint)
        if not isinstance(value, (bytes, bytearray)):
            return Verdict(False, f"{what}, {call}: returned {type(value).__name__}, not bytes",
                           "return the bytes you collected, e.g. bytes(buf)")
        if bytes(value) != want:
            return Verdict(False, f"{what}, {call}: expected {want!r}, got {bytes(value)!r}", hint)
    return Verdict(True, what)


def _run_in_thread(body: Callable[[], Verdict], limit: float = 15.0) -> Verdict:
    box: list[Verdict] = []
    thread = threading.Thread(target=lambda: box.append(body()), daemon=True)
    thread.start()
    thread.join(limit)
    if not box:
        return Verdict(False, f"the check did not finish within {limit:.0f}s",
                       "make sure every loop ends: on b'' from recv(), raise EOFError")
    return box[0]


@answers_back
def check_recv_exactly(recv_exactly: Callable[[socket.socket, int], bytes]) -> Verdict:
    """``recv_exactly(sock, n)`` returns exactly n bytes, or raises EOFError if the peer closes."""
    if not callable(recv_exactly):
        return Verdict(False, "recv_exactly is not a function", "define def recv_exactly(sock, n):")
    hint = ("one recv() returns whatever has arrived (maybe fewer bytes than asked): "
            "loop, asking only for what is still missing, until you have n bytes")

    def body() -> Verdict:
        data = b"HELLO, WORLD! 0123456789"
        results = _session(Dribbler(data, piece=3, pause=0.01, then="wait"), recv_exactly,
                           [(5,), (8,), (11,)])
        pieces = _expect_values(results, [b"HELLO", b", WORLD!", b" 0123456789"],
                                "dribbled in 3-byte pieces", hint)
        early = _session(Dribbler(b"abcde", piece=2, pause=0.01, then="close"), recv_exactly,
                         [(10,)])
        closes = _expect_eof(early[0], "asked for 10 bytes from a peer that sends 5 and closes")
        return first_failure(
            pieces, closes,
            right="recv_exactly collects dribbled pieces into exactly n bytes, never reads "
                  "past them, and raises when the peer closes early")

    return _run_in_thread(body)


def _frame(message: bytes) -> bytes:
    return struct.pack("!I", len(message)) + message


def _byte_order_mistake(asked: list[list[int]], results: list[Outcome], messages: list[bytes]
                        ) -> Verdict | None:
    """A verdict naming the little-endian mistake, if the first call that went wrong shows
    it: it asked recv() for its message's length read the wrong way round, or it raised
    MemoryError (a length far too big to hold)."""
    # (results stop at the first call that did not return: fewer than the messages)
    call = next((i for i, ((kind, value), want)
                 in enumerate(zip(results, messages, strict=False))
                 if kind != "ok" or value != want), None)
    if call is None:
        return None
    right = len(messages[call])
    wrong = int.from_bytes(right.to_bytes(4, "big"), "little")
    if wrong != right and any(size >= wrong for size in asked[call]):
        return Verdict(
            False, f"call {call + 1}: your function asked recv() for {max(asked[call]):,} bytes "
            f"where the header announced {right:,}: {right:,} read little-endian (least "
            f"significant byte first) is {wrong:,}", _BYTE_ORDER_HINT)
    kind, value = results[call]
    if kind == "raised" and isinstance(value, MemoryError):
        return Verdict(False, f"call {call + 1}: your function raised MemoryError: it tried to "
                       "hold more bytes than this machine has, so the length it read from the "
                       "header must be far too big - read little-endian instead of big-endian?",
                       _BYTE_ORDER_HINT)
    return None


_BYTE_ORDER_HINT = ("the length is in network byte order, big-endian (most significant byte "
                    "first): struct.unpack('!I', header) or int.from_bytes(header, 'big'); "
                    f"'<I', and 'I' without '!' on this {sys.byteorder}-endian machine, read it "
                    "the other way round")


@answers_back
def check_read_message(read_message: Callable[[socket.socket], bytes]) -> Verdict:
    """``read_message(sock)`` reads one length-prefixed message (4-byte big-endian length)."""
    if not callable(read_message):
        return Verdict(False, "read_message is not a function", "define def read_message(sock):")
    hint = ("a message is a 4-byte header, the length as a big-endian number, then that many "
            "bytes: read each part whole (the function you wrote above does that) and turn the "
            "header into a number with the struct module")
    messages = [b"hi", b"", "héllo wörld".encode(), b"x" * 3000, b"last"]
    stream = b"".join(_frame(m) for m in messages)
    # Cut so that a header is split, two frames share a piece, and a body spans pieces.
    cuts = [2, 5, 9, 30, 1000, 2000, len(stream)]
    pieces = [stream[a:b] for a, b in itertools.pairwise([0, *cuts])]

    def body() -> Verdict:
        asked: list[list[int]] = []
        results = _session(Dribbler(pieces, pause=0.01, then="wait"), read_message,
                           [()] * len(messages), asked)
        many = _expect_values(results, messages,
                              "5 messages (one empty, one of 3000 bytes) in uneven pieces", hint)
        mistake = None if many.passed else _byte_order_mistake(asked, results, messages)
        if mistake is not None and many is not NOT_WRITTEN:  # (a failed Verdict is falsy)
            many = mistake
        cut = _frame(b"0123456789")[:9]
        early = _session(Dribbler(cut, piece=3, pause=0.01, then="close"), read_message, [()])
        closes = _expect_eof(early[0], "a peer that announces 10 bytes, sends 5 and closes")
        return first_failure(
            many, closes,
            right="read_message gets every message whole however the bytes arrive, "
                  "and raises when the peer closes mid-message")

    return _run_in_thread(body)
