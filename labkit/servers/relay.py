"""A lossy UDP path you can reproduce, and a stop-and-wait receiver to send through it.

:class:`UDPRelay` sits between a client and a UDP server and forwards datagrams both
ways, dropping, duplicating and reordering some of them.  Every decision comes from
a random generator seeded with ``seed`` (one per direction), so the n-th datagram in
each direction meets the same fate on every run.

    >>> with UDPServer("echo") as server, UDPRelay(server, drop=0.2, seed=1) as relay:
    ...     sock.sendto(b"hi", relay.address)       # may or may not come back

:class:`AckReceiver` is a UDP server handler for the stop-and-wait exercise: a
datagram is a 4-byte big-endian sequence number followed by the message; it answers
each one with an ACK (the 4-byte sequence number) and delivers every message once,
in order.

Like every labkit server, a relay runs once: entering it again raises ``RuntimeError``.
A datagram the relay cannot pass on (say, too big for one datagram) is logged on the
``labkit`` logger and counted in ``undeliverable``; the relay keeps forwarding.
"""

from __future__ import annotations

import errno
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from labkit.servers import arguments
from labkit.servers import base as _servers
from labkit.servers.base import Endpoint, Kept, LabServer, log, wake

__all__ = ["UDPRelay", "AckReceiver"]

SEQ = struct.Struct("!I")
ACTIONS = ("forward", "drop", "duplicate", "hold")
LOG_LIMIT = 10_000   # entries kept in UDPRelay.log (stats count every datagram)


def _target_address(target: LabServer | tuple[Any, ...]) -> tuple[tuple[str, int], str]:
    must = "a running server or a (host, port) tuple"
    if isinstance(target, tuple) and len(target) in (2, 4):  # (IPv6: host, port, flow, scope)
        host, port = target[:2]
        return (arguments.host(host, "target host"),
                arguments.port(port, "target port", low=1)), "server"
    if isinstance(target, LabServer):
        try:
            address = target.address
        except RuntimeError:
            arguments.fail(ValueError, "target", must, target, "UDPRelay(server) inside "
                           "`with UDPServer() as server:`", "it is not running: start it first")
        return (arguments.host(address[0], "target host"), address[1]), target.name
    arguments.fail(TypeError, "target", must, target, "('127.0.0.1', 9000)")


class UDPRelay(LabServer):
    """Forward UDP between one client and ``target``, impairing the path reproducibly.

    ``drop``, ``duplicate`` and ``reorder`` are probabilities per datagram (their sum
    at most 1).  A reordered datagram is held back and sent after the next datagram
    that goes through in the same direction (or after ``hold`` seconds if none does).
    ``log`` lists ``(direction, n, action)`` for the first 10,000 datagrams
    (``log.dropped`` counts the rest); ``stats`` counts the actions of all of them.
    Datagrams to the relay's ``address`` go to the target; the target's replies go to
    the client that sent last.  The relay listens on ``port`` (default: any free
    port) of the target's loopback address (127.0.0.1, or ::1 for an IPv6 target).

    Attributes:
        target: the ``(host, port)`` it passes datagrams on to
        target_name: the target's name in tables and ladders
        drop: the probability that a datagram is dropped
        duplicate: the probability that a datagram is sent twice
        reorder: the probability that a datagram is held back (and so reordered)
        seed: what every fate is drawn from: the same seed, the same run
        hold: seconds a held-back datagram waits at most
        log: ``(direction, n, action)`` per datagram, the first 10,000
        undeliverable: datagrams that could not be sent on (logged)
    """

    protocol = "udp"
    speaks = "UDP datagrams, passed on (or dropped, duplicated, held back)"

    def __init__(self, target: LabServer | tuple[Any, ...], *, drop: float = 0.0,
                 duplicate: float = 0.0, reorder: float = 0.0, seed: int = 0,
                 hold: float = 0.1, port: int = 0, name: str = "relay") -> None:
        self.target, self.target_name = _target_address(target)
        # Both sides speak the target's IP version: what one side receives fits the other.
        super().__init__(host="::1" if ":" in self.target[0] else "127.0.0.1", port=port,
                         name=name)
        self.drop = arguments.probability(drop, "drop")
        self.duplicate = arguments.probability(duplicate, "duplicate")
        self.reorder = arguments.probability(reorder, "reorder")
        total = self.drop + self.duplicate + self.reorder
        if total > 1 + 1e-9:
            arguments.fail(ValueError, "drop + duplicate + reorder", "at most 1", round(total, 9),
                           why="lower one of them")
        self.seed = arguments.integer(seed, "seed", -2**63, 2**63 - 1,
                                      "1: the same seed gives the same run")
        self.hold = arguments.number(hold, "hold", 0, 2, "0.1 seconds", above_low=True)
        self.log: Kept = Kept(LOG_LIMIT, f"UDPRelay {name!r}", "log")
        self._stats = Counter({action: 0 for action in ACTIONS})
        self._front: socket.socket | None = None
        self._back: socket.socket | None = None
        self._client: tuple[str, int] | None = None
        self.undeliverable = 0   # datagrams that could not be sent on (logged)

    # -- addresses and names ---------------------------------------------------
    def _bound_address(self) -> tuple[Any, ...] | None:
        """Where clients send: the relay's front socket."""
        return self._front.getsockname() if self._front else None

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """For Capture: both relay sockets are the relay, then the target."""
        front, back = self._front, self._back
        if front is None or back is None:
            raise RuntimeError("UDPRelay is not running: start it before the Capture")
        (front_host, front_port), (back_host, back_port) = (
            sock.getsockname()[:2] for sock in (front, back))
        return (Endpoint("udp", front_host, front_port, self.name,
                         "datagrams from the client, passed on to the target"),
                Endpoint("udp", back_host, back_port, self.name,
                         "datagrams to the target and its replies"),
                Endpoint("udp", *self.target, self.target_name, "the relay's target"))

    @property
    def stats(self) -> dict[str, int]:
        """How many datagrams met each fate, e.g. ``{'forward': 9, 'drop': 2, ...}``."""
        with self._lock:
            return dict(self._stats)

    # -- running ---------------------------------------------------------------
    def _start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._front = front = socket.socket(family, socket.SOCK_DGRAM)
        self._back = back = socket.socket(family, socket.SOCK_DGRAM)
        front.bind((self.host, self._requested_port))
        back.bind((self.host, 0))
        back.connect(self.target)
        for direction, src, send in (("up", front, self._to_target),
                                     ("down", back, self._to_client)):
            rng = random.Random(f"{self.seed}:{direction}")
            self._spawn(self._run, direction, src, send, rng, name=direction)
        # both sockets are bound: datagrams queue from now on

    def _wake(self) -> None:
        wake(self._front, self._back)

    def _close(self) -> None:
        for sock in (self._front, self._back):
            if sock is not None:
                sock.close()
        self._front = self._back = None

    def _stuck_message(self, stuck: list[str]) -> str:
        # a send blocked for seconds on loopback: not expected, but never a hang
        return (f"{self.name}: relay threads {stuck} did not stop within "
                f"{_servers.JOIN_TIMEOUT}s")

    def _to_target(self, data: bytes) -> None:
        back = self._socket(self._back)
        # An ICMP error left by an earlier datagram (nobody listened then) fails the next
        # send() once, and that send is lost: try again, the error is cleared by now.
        for _ in range(2):
            try:
                back.send(data)
                return
            except ConnectionRefusedError:
                continue

    def _to_client(self, data: bytes) -> None:
        front = self._socket(self._front)
        if self._client is not None:
            front.sendto(data, self._client)

    @staticmethod
    def _socket(sock: socket.socket | None) -> socket.socket:
        """``sock``, or the OSError a closed one gives (a thread outliving stop()'s join
        finds None there: _pass_on treats both alike while stopping)."""
        if sock is None:
            raise OSError(errno.EBADF, "the relay has stopped")
        return sock

    def _pass_on(self, send: Callable[[bytes], None], data: bytes, direction: str) -> None:
        """Send one datagram on; one that cannot go is logged and counted, not fatal."""
        try:
            send(data)
        except OSError as exc:
            if self._stopping.is_set():
                return
            with self._lock:
                self.undeliverable += 1
            log.warning("%s: could not pass a %d-byte datagram %s (%s): dropped",
                        self.name, len(data), direction, exc)
            if exc.errno != errno.EMSGSIZE:
                self.record_error(exc)  # not the datagram's fault: tell the owner at exit

    def _fate(self, rng: random.Random) -> str:
        r = rng.random()  # exactly one draw per datagram: the n-th always gets the same
        if r < self.drop:
            return "drop"
        if r < self.drop + self.duplicate:
            return "duplicate"
        if r < self.drop + self.duplicate + self.reorder:
            return "hold"
        return "forward"

    def _run(self, direction: str, src: socket.socket, send: Callable[[bytes], None],
             rng: random.Random) -> None:
        held: list[bytes] = []  # reordered datagrams, sent after the next one that goes through
        n = 0
        try:
            while True:
                src.settimeout(self.hold if held else None)
                try:
                    if direction == "up":
                        data, addr = src.recvfrom(65535)
                        self._client = addr
                    else:
                        data = src.recv(65535)
                except TimeoutError:
                    for late in held:  # nothing came after them: release them now
                        self._pass_on(send, late, direction)
                    held = []
                    continue
                except ConnectionRefusedError:
                    continue  # ICMP port unreachable from the target: a relay drops it
                except OSError:
                    if self._stopping.is_set():
                        return  # stop() shut the socket down
                    raise  # unexpected: reported at exit
                if self._stopping.is_set():
                    return
                fate = self._fate(rng)
                with self._lock:
                    self._stats[fate] += 1
                self.log.append((direction, n, fate))
                n += 1
                if fate == "hold":
                    held.append(data)
                    continue
                if fate == "drop":
                    continue
                for item in [data] * (2 if fate == "duplicate" else 1) + held:
                    self._pass_on(send, item, direction)
                held = []
        except BaseException as exc:  # noqa: BLE001 - reported to the owning cell
            if not self._stopping.is_set():
                self.record_error(exc)

    def __repr__(self) -> str:
        return (f"<UDPRelay drop={self.drop} duplicate={self.duplicate} "
                f"reorder={self.reorder} seed={self.seed}>")


class AckReceiver:
    """A stop-and-wait receiver, as a :class:`~labkit.UDPServer` handler.

    Datagram in: 4-byte big-endian sequence number + message.  Reply: the 4-byte
    sequence number (the ACK).  Sequence numbers start at 0; the expected one is
    delivered, an old one (a duplicate) is acknowledged again but not delivered, a
    future one is ignored.  ``delivered`` holds the first 10,000 messages in order
    (``delivered.dropped`` counts the rest, still acknowledged in order);
    ``garbage`` counts datagrams too short to carry a sequence number.

    Attributes:
        delivered: the messages delivered, in order, each once (the first 10,000)
        duplicates: datagrams that came again (acknowledged again, not delivered)
        garbage: datagrams too short to carry a sequence number
    """

    def __init__(self) -> None:
        self.delivered: Kept = Kept(LOG_LIMIT, "AckReceiver", "delivered")
        self.duplicates = 0
        self.garbage = 0
        self._lock = threading.Lock()

    def __call__(self, data: bytes, addr: Any) -> bytes | None:
        if len(data) < SEQ.size:
            with self._lock:
                self.garbage += 1
            return None
        (seq,) = SEQ.unpack_from(data)
        with self._lock:
            expected = len(self.delivered) + self.delivered.dropped
            if seq == expected:
                self.delivered.append(data[SEQ.size:])
            elif seq < expected:
                self.duplicates += 1
            else:
                return None  # from the future: a stop-and-wait sender never does this
        return SEQ.pack(seq)

    def __repr__(self) -> str:
        return f"<AckReceiver delivered={len(self.delivered)} duplicates={self.duplicates}>"
