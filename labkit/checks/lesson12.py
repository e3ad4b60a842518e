"""Checks for 12-Notice-When-A-Peer-Vanishes.

``check_keepalive_within`` reads back the keepalive settings the student's function made
(``SO_KEEPALIVE``, ``TCP_KEEPIDLE``, ``TCP_KEEPINTVL``, ``TCP_KEEPCNT``): the verdict on
"within the deadline" comes from them, not from a clock. A right answer is then run for
real: the cable under two idle connections is cut, and the kernel must give up on both,
after the probes the link saw.

``check_ask`` runs the student's ``ask(conn, address, question)`` against a server on a lab
host that answers each line in capitals: once on a healthy connection (no new connection
allowed), once after the server's host "restarted" (its kernel forgot the connection: one
new connection allowed, and needed), and once with the server gone (one retry, then an
error: the link's trace counts the attempts).
"""

from __future__ import annotations

import select
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

from labkit.net.hosts import LabNetwork
from labkit.net.impairment import Impairment
from labkit.net.link import Link
from labkit.servers.tcp import TCPServer
from labkit.servers.vanish import forget

from . import NOT_WRITTEN, StudentCall, Verdict, answers_back, unfinished

# ask(conn, address, question) -> (conn, answer): the student's function of exercise 2
Ask = Callable[[socket.socket, tuple[str, int], bytes], tuple[socket.socket, bytes]]

__all__ = ["check_keepalive_within", "check_ask", "DEADLINES"]

LINK = Impairment(delay=0.005)
DEADLINES = (3, 4)       # seconds: when the kernel must give up, in exercise 1
SLACK = 2.0              # s the kernel gets beyond what its settings say, on a busy machine
ANSWER_WITHIN = 5.0      # s each ask() may take
POLL = 0.05              # s between looks at whether the student's ask() has returned


# -- frames the link carried (its trace), read without Scapy ---------------------------------
def _tcp(frame: bytes) -> tuple[int, int, int, int] | None:
    """(source port, destination port, flags, payload bytes) of an Ethernet/IPv4/TCP frame."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ip_header = (frame[14] & 0x0F) * 4
    total = int.from_bytes(frame[16:18], "big")
    tcp = 14 + ip_header
    if len(frame) < tcp + 14:
        return None
    tcp_header = (frame[tcp + 12] >> 4) * 4
    ports = frame[tcp:tcp + 2], frame[tcp + 2:tcp + 4]
    return (int.from_bytes(ports[0], "big"), int.from_bytes(ports[1], "big"), frame[tcp + 13],
            total - ip_header - tcp_header)


SYN, RST, ACK = 0x02, 0x04, 0x10


def _link(net: LabNetwork) -> Link:
    """The link a two-host LabNetwork always has (a network of plain cables has none)."""
    if net.link is None:
        raise RuntimeError("this check needs hosts joined through labkit's link")
    return net.link


def _sent(net: LabNetwork, port: int, since: float = 0.0) -> list[tuple[int, int]]:
    """(flags, payload bytes) of each frame the client host sent from ``port``."""
    found = []
    for event in _link(net).trace:
        header = _tcp(event.frame)
        if event.direction == "client→server" and header and header[0] == port \
                and event.t_in >= since:
            found.append((header[2], header[3]))
    return found


def _syns_to(net: LabNetwork, port: int, since: float) -> int:
    return sum(1 for event in _link(net).trace
               if event.direction == "client→server" and event.t_in >= since
               and (h := _tcp(event.frame)) and h[1] == port and h[2] & SYN and not h[2] & ACK)


# -- exercise 1: keepalive within a deadline --------------------------------------------------
def _settings(sock: socket.socket) -> tuple[bool, int, int, int]:
    return (bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT))


def _judge_settings(seconds: int, on: bool, idle: int, interval: int, count: int) -> Verdict | None:
    """What is wrong with these settings for ``seconds``, or None."""
    if not on:
        return Verdict(False, f"for seconds={seconds} keepalive is off: no probe would ever "
                              "be sent on an idle connection",
                       "turn it on for the socket: sock.setsockopt(socket.SOL_SOCKET, "
                       "socket.SO_KEEPALIVE, 1)")
    if count < 2:
        return Verdict(False, f"for seconds={seconds} the kernel gives up after {count} "
                              "unanswered probe: one lost probe would end a healthy connection",
                       "TCP_KEEPCNT (IPPROTO_TCP) is how many probes go unanswered before the "
                       "kernel gives up: make it at least 2")
    total = idle + interval * count
    said = f"idle {idle} s + {count} probes × {interval} s = {total} s"
    if total > seconds:
        hint = ("TCP_KEEPIDLE is still this machine's default, 2 hours: set it on the socket "
                "(IPPROTO_TCP)") if idle >= 7200 else \
               "the kernel gives up after TCP_KEEPIDLE + TCP_KEEPCNT × TCP_KEEPINTVL seconds"
        return Verdict(False, f"for seconds={seconds}: {said}, later than {seconds} s", hint)
    if total < seconds:
        return Verdict(False, f"for seconds={seconds}: {said}, sooner than asked: a short "
                              "outage would end a healthy connection",
                       "use the time you are given: compute idle, count and interval from "
                       "`seconds`, so that idle + count × interval = seconds")
    return None


def _cut_and_wait(net: LabNetwork, socks: list[socket.socket], limit: float) -> list[float | None]:
    """Cut the cable; seconds until the kernel gave up on each (None: not within ``limit``)."""
    _link(net).set(loss=1.0)
    start = time.monotonic()
    ended: list[float | None] = [None] * len(socks)
    waiting = dict(enumerate(socks))
    with selectors.DefaultSelector() as sel:
        for index, sock in waiting.items():
            sel.register(sock, selectors.EVENT_READ, index)
        while waiting and (left := limit - (time.monotonic() - start)) > 0:
            for key, _ in sel.select(timeout=left):
                try:
                    key.fileobj.recv(1)  # type: ignore[union-attr]
                except TimeoutError:
                    ended[key.data] = time.monotonic() - start
                except OSError:
                    pass  # another error: not the kernel giving up on silence
                sel.unregister(key.fileobj)
                waiting.pop(key.data)
    return ended


def _quiet(conn: socket.socket, addr: Any) -> None:
    """A server that reads and never answers (until the client's kernel gives up)."""
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass


@answers_back
def check_keepalive_within(keepalive_within: Callable[[socket.socket, int], object]
                           ) -> Verdict:
    """``keepalive_within(sock, seconds)`` sets keepalive on ``sock`` so that the kernel gives
    up on a silent peer of an idle connection ``seconds`` after it fell silent (whole
    seconds: not later, and not sooner), after at least 2 unanswered probes."""
    if not callable(keepalive_within):
        return Verdict(False, f"give the function itself, not {type(keepalive_within).__name__}",
                       "check_keepalive_within(keepalive_within), without parentheses")
    with LabNetwork(LINK) as net:
        with net.on("server"), TCPServer(handler=_quiet, host=net.addresses["server"]) as server:
            with net.on("client"):
                socks = [socket.create_connection(server.address) for _ in DEADLINES]
                try:
                    settings = []
                    for sock, seconds in zip(socks, DEADLINES, strict=True):
                        try:
                            keepalive_within(sock, seconds)
                        except Exception as exc:  # noqa: BLE001 - the student's code
                            if unfinished(exc):
                                return NOT_WRITTEN
                            return Verdict(False, f"keepalive_within(sock, {seconds}) raised "
                                                  f"{type(exc).__name__}: {exc}",
                                           "each option is sock.setsockopt(level, name, int): "
                                           "SO_KEEPALIVE at SOL_SOCKET, TCP_KEEP* at IPPROTO_TCP")
                        settings.append(_settings(sock))
                        wrong = _judge_settings(seconds, *settings[-1])
                        if wrong is not None:
                            return wrong
                    cut = time.time()
                    gave_up = _cut_and_wait(net, socks, max(DEADLINES) + SLACK)
                    probes = [sum(1 for flags, length in _sent(net, s.getsockname()[1], cut)
                                  if flags == ACK and length == 0) for s in socks]
                finally:
                    for sock in socks:
                        sock.close()
    said = []
    for seconds, (_, idle, interval, count), ended, seen in zip(
            DEADLINES, settings, gave_up, probes, strict=True):
        total = idle + interval * count
        if ended is None:
            return Verdict(False, f"your settings for seconds={seconds} say {total} s, but the "
                                  f"kernel had not given up {total + SLACK:.0f} s after the "
                                  "cable was cut (was this machine very busy? run it again)",
                           "set the options on the socket you are given, before it goes idle")
        if seen < count:
            return Verdict(False, f"for seconds={seconds} the link saw {seen} keepalive "
                                  f"probe(s), not {count}",
                           "TCP_KEEPCNT is the number of unanswered probes")
        said.append(f"{seconds} s: idle {idle} s + {count} probes × {interval} s")
    return Verdict(True, "the kernel gave up on both silent peers after the probes you asked "
                         f"for ({'; '.join(said)})")


# -- exercise 2: ask again, once, on a fresh connection ---------------------------------------
def _asking(net: LabNetwork, ask: Ask, conn: socket.socket, address: tuple[str, int],
            question: bytes) -> StudentCall:
    """The student's ask() started in a thread of the client host (it connects from there)."""
    with net.on("client"):
        return StudentCall(ask, conn, address, question)


def _answer_one(listener: socket.socket, served: socket.socket | None,
                asking: StudentCall) -> socket.socket | None:
    """Play the server while ``asking`` runs: read one question on ``served`` (or on a
    connection accepted now) and answer it in capitals. Returns the connection used."""
    deadline = time.monotonic() + ANSWER_WITHIN
    waiting_on = served if served is not None else listener
    while asking.running() and time.monotonic() < deadline:
        ready, _, _ = select.select([waiting_on], [], [], POLL)
        if not ready:
            continue
        try:
            if served is None:
                served, _ = listener.accept()
                served.settimeout(ANSWER_WITHIN)
                waiting_on = served
                continue
            question = served.recv(4096)
        except OSError:
            return served
        if question:
            served.sendall(question.upper())
        return served
    return served


def _result(asking: StudentCall, step: str) -> tuple[socket.socket, bytes] | Verdict:
    """ask()'s (conn, answer), or the verdict that fits what it did instead."""
    if not asking.wait(ANSWER_WITHIN):
        return Verdict(False, f"{step}, ask() had not returned after {ANSWER_WITHIN:.0f} s",
                       "give every socket a timeout (socket.create_connection(address, "
                       "timeout=...)) and send the question again only once")
    if asking.outcome == "raised":
        if unfinished(asking.value):
            return NOT_WRITTEN
        return Verdict(False, f"{step}, ask() raised {type(asking.value).__name__}: "
                              f"{asking.value}",
                       "a connection the server forgot fails with ConnectionError (reset, "
                       "broken pipe) or ends (recv() returns b''): then connect to `address` "
                       "again and ask once more")
    result = asking.value
    if not (isinstance(result, tuple) and len(result) == 2
            and isinstance(result[0], socket.socket) and isinstance(result[1], bytes | bytearray)):
        return Verdict(False, f"{step}, ask() returned {result!r}",
                       "return a pair: (the connection to use next time, the answer bytes)")
    return result[0], bytes(result[1])


@answers_back
def check_ask(ask: Ask) -> Verdict:
    """``ask(conn, address, question) -> (conn, answer)`` asks on ``conn``; if the server
    forgot that connection, it asks once more on a new connection to ``address``."""
    if not callable(ask):
        return Verdict(False, f"give the function itself, not {type(ask).__name__}",
                       "check_ask(ask), without parentheses")
    opened: list[socket.socket] = []
    with LabNetwork(LINK) as net:
        with net.on("server"):
            listener = socket.create_server((net.addresses["server"], 0))
        listener.settimeout(ANSWER_WITHIN)
        address = listener.getsockname()
        try:
            with net.on("client"):
                conn = socket.create_connection(address, timeout=ANSWER_WITHIN)
            opened.append(conn)
            served, _ = listener.accept()
            served.settimeout(ANSWER_WITHIN)

            # 1. a healthy connection: the answer comes on it, and no new connection is made
            since = time.time()
            asking = _asking(net, ask, conn, address, b"first\n")
            _answer_one(listener, served, asking)
            if _syns_to(net, address[1], since):
                return Verdict(False, "ask() opened a new connection although the one it was "
                                      "given worked",
                               "use `conn` first; connect again only when it fails")
            got = _result(asking, "on a healthy connection")
            if isinstance(got, Verdict):
                return got
            conn, answer = got
            opened.append(conn)
            if answer != b"FIRST\n":
                return Verdict(False, f"on a healthy connection ask() returned {answer!r}, not "
                                      "the server's answer b'FIRST\\n'",
                               "send the question with sendall() and return what recv() reads")

            # 2. the server's host restarted: its kernel forgot the connection
            forget(served)
            since = time.time()
            asking = _asking(net, ask, conn, address, b"second\n")
            answered = _answer_one(listener, None, asking)
            got = _result(asking, "after the server restarted")
            if isinstance(got, Verdict):
                return got
            conn, answer = got
            opened.append(conn)
            if answer != b"SECOND\n":
                return Verdict(False, f"after the server restarted ask() returned {answer!r}, "
                                      "not the answer b'SECOND\\n'",
                               "after a failure, connect to `address` again, send the question "
                               "again and return the new connection with its answer")
            if _syns_to(net, address[1], since) != 1:
                return Verdict(False, "after the server restarted ask() made "
                                      f"{_syns_to(net, address[1], since)} new connections, not 1",
                               "one new connection is enough: ask on it once")

            # 3. the server's host is down for good: one more try, then an error
            if answered is not None:
                forget(answered)
            listener.close()
            since = time.time()
            asking = _asking(net, ask, conn, address, b"third\n")
            finished = asking.wait(ANSWER_WITHIN)
            tries = _syns_to(net, address[1], since)
            if not finished or tries > 1:
                return Verdict(False, f"with the server gone, ask() tried to connect {tries} "
                                      "times" + ("" if finished else " and had not given up"),
                               "try once more, then let the error (ConnectionRefusedError) "
                               "reach the caller: retrying without end hammers a server that "
                               "is down")
            if not isinstance(asking.value, ConnectionError):
                if asking.outcome == "raised" and unfinished(asking.value):
                    return NOT_WRITTEN
                return Verdict(False, "with the server gone, ask() "
                                      + (f"returned {asking.value!r}" if asking.outcome == "ok"
                                         else f"raised {type(asking.value).__name__}")
                                      + ", not a ConnectionError",
                               "when the second try fails too, let its ConnectionError "
                               "(ConnectionRefusedError) propagate")
        finally:
            listener.close()
            for sock in opened:
                if isinstance(sock, socket.socket):
                    sock.close()
    return Verdict(True, "ask() kept a healthy connection, asked once more on a new one after "
                         "the server restarted, and gave up with ConnectionRefusedError when "
                         "the server was gone")
