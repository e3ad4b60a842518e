"""The impaired link in user space: frames cross from one host to the other through us.

The kernel has no netem here, and a student has no root, so the link is two AF_PACKET
sockets per direction on the link-side ends of the hosts' veth pairs. ``Link`` opens them
(in the network namespace of the thread that calls ``start``) and hands them to a
forwarder in a process of its own (``labkit/net/forwarder.py``): its own GIL, so a
notebook that computes, captures or samples beside it does not hold its frames up. The
forwarder asks each direction's ``LinkModel`` (labkit/net/impairment.py) every frame's fate
and sends it on when it falls due; ``stats``, ``trace`` and ``lateness`` are fetched from
it when read, and kept when it stops.

    >>> link = Link({"client→server": ("lk1c", "lk1s"), "server→client": ("lk1s", "lk1c")},
    ...             {"client→server": Impairment(delay=0.02), "server→client": Impairment()})
    >>> link.start(); ...; link.stop()
    >>> print(link.lateness()["client→server"])
    412 frames, none more than 1 ms late (worst 0.3 ms)

IPv4 and IPv6 frames are impaired and counted, numbered in one sequence per direction
(a network without IPv6 has none, so its seeds pick the same frames as before IPv6 came);
ARP and IPv6's neighbour discovery and multicast listener messages pass straight
through, uncounted, so that asking for a neighbour's address never shifts which frame a
seed drops (and is never lost or late).
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

from labkit.net.impairment import Impairment

ETH_P_ALL = 0x0003
SOL_PACKET, PACKET_RX_RING, PACKET_VERSION, PACKET_IGNORE_OUTGOING = 263, 5, 10, 23
TPACKET_V2 = 1
RING_BYTES = 4 << 20  # per direction: about 2000 full-size frames of slack
HEADER = 14  # Ethernet
TRACE_BYTES = 128  # of each frame the trace keeps: Ethernet, IP and TCP headers, options too
FATES = ("frames", "delivered", "dropped", "queue_dropped", "duplicated", "reordered")
TICK = 1e-5  # s: lateness is tallied to 10 µs
ANSWER_WITHIN = 60  # s: a forwarder that has not answered by then is stuck


@dataclass(slots=True)
class LinkEvent:
    """One frame's passage: arrival, departure (None if it never left), its fate.

    ``frame`` is the frame's first 128 bytes (its headers), ``length`` the whole frame's:
    ``cut`` says how many bytes the trace did not keep.
    """

    t_in: float  # wall-clock time (time.time()) when the kernel received it
    t_out: float | None  # wall-clock time when the link sent it on
    direction: str  # "client→server" or "server→client"
    frame: bytes  # the frame's first TRACE_BYTES bytes
    fate: str  # "delivered", "dropped", "queue_dropped", "duplicated" (the extra copy)
    number: int = 0  # the frame's number in its direction, from 0
    length: int = 0  # the whole frame's length in bytes
    due: float | None = None  # wall-clock time it was due to leave (None: it never would)

    @property
    def cut(self) -> int:
        """Bytes of the frame the trace did not keep (its payload past TRACE_BYTES)."""
        return self.length - len(self.frame)


EVENT_FATES = ("delivered", "dropped", "queue_dropped", "duplicated")
# a trace record: t_in, t_out, due (NaN: none), number, length, direction, fate, bytes kept;
# then the frame's first TRACE_BYTES bytes
RECORD = struct.Struct("<dddIIBBH")
RECORD_BYTES = RECORD.size + TRACE_BYTES


class Trace(Sequence):
    """The link's trace: one ``LinkEvent`` per frame, oldest first, kept as compact records
    (164 bytes a frame) and decoded when read. ``truncated``: older frames not kept.

        >>> [e.number for e in net.link.trace if e.fate == "dropped"]
    """

    def __init__(self, records: bytes = b"", directions: Sequence[str] = (),
                 truncated: int = 0):
        self.records, self.directions, self.truncated = records, tuple(directions), truncated

    def __len__(self) -> int:
        return len(self.records) // RECORD_BYTES

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"trace index {index} out of range: the trace has {len(self)} "
                             f"frames")
        at = index * RECORD_BYTES
        t_in, t_out, due, number, length, direction, fate, kept = RECORD.unpack_from(
            self.records, at)
        frame = self.records[at + RECORD.size:at + RECORD.size + kept]
        return LinkEvent(t_in, None if t_out != t_out else t_out, self.directions[direction],
                         frame, EVENT_FATES[fate], number, length,
                         None if due != due else due)  # NaN != NaN: there was none

    def __repr__(self) -> str:
        return (f"<Trace of {len(self):,} frames, {TRACE_BYTES} bytes of each kept; "
                f"{self.truncated:,} older frames not kept>")


@dataclass(frozen=True)
class Lateness:
    """How faithfully one direction kept its timing: of ``frames`` that left, ``late``
    left more than ``tolerance`` seconds after they were due; the worst by ``worst`` s.

    A frame is due when the model says (its delay, its turn at a bottleneck) counted from
    when the *kernel* received it, so a forwarder that read it late made it late too.

        >>> print(net.lateness()["client→server"])
        412 frames, none more than 1 ms late (worst 0.3 ms)

    Attributes:
        frames: frames that left the link in this direction
        late: frames that left more than ``tolerance`` seconds after they were due
        worst: seconds the latest frame was late by
        tolerance: seconds late a frame may be and still count as on time
    """

    frames: int
    late: int
    worst: float
    tolerance: float

    def __str__(self) -> str:
        within = f"{self.tolerance * 1000:g} ms"
        if not self.late:
            return f"{self.frames} frames, none more than {within} late " \
                   f"(worst {self.worst * 1000:.1f} ms)"
        return f"{self.frames} frames, {self.late} more than {within} late " \
               f"(worst {self.worst * 1000:.1f} ms)"


class Tally:
    """Each departed frame's lateness, in 10 µs ticks: enough to answer any tolerance."""

    def __init__(self):
        self.frames, self.worst = 0, 0.0
        self.ticks: dict[int, int] = {}  # tick → frames that late

    def add(self, lateness: float) -> None:
        self.frames += 1
        if lateness > 0:
            tick = int(lateness / TICK)
            self.ticks[tick] = self.ticks.get(tick, 0) + 1
            if lateness > self.worst:
                self.worst = lateness

    def lateness(self, tolerance: float) -> Lateness:
        limit = round(tolerance / TICK)
        late = sum(count for tick, count in self.ticks.items() if tick >= limit)
        return Lateness(self.frames, late, self.worst, tolerance)


def _is_seconds(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 3600


def too_busy(lateness: dict[str, Lateness], missed: int = 0) -> str | None:
    """One sentence for a lesson when frames left late (or were missed), else None."""
    late = sum(one.late for one in lateness.values())
    if not late and not missed:
        return None
    worst = max(one.worst for one in lateness.values())
    what = []
    if late:
        what.append(f"{late} frame{'s' * (late != 1)} left up to {worst * 1000:.0f} ms late")
    if missed:
        what.append(f"{missed} {'frame was' if missed == 1 else 'frames were'} lost before "
                    f"the link could read {'it' if missed == 1 else 'them'}")
    return (f"this machine was too busy for this measurement: {' and '.join(what)}, so the "
            f"numbers below are the machine's, not the link's — run it again when it is "
            f"quieter")


def open_direction(iface_in: str, iface_out: str, wire_mtu: int) -> tuple:
    """One direction's sockets, in this thread's namespace: a receiver with a
    PACKET_RX_RING (TPACKET_V2) on ``iface_in``, a sender on ``iface_out``.
    Returns (receiver, sender, slot bytes, slots)."""
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # sends only
    # one slot holds a whole frame of the wire's MTU after the ring's own header
    slot = max(2048, 1 << (wire_mtu + HEADER + 128).bit_length())
    slots = max(16, RING_BYTES // slot)
    try:
        rx.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        rx.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        block = max(slot, mmap.PAGESIZE)
        rx.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack(
            "IIII", block, slots * slot // block, slot, slots))
        rx.bind((iface_in, ETH_P_ALL))
        tx.bind((iface_out, 0))
    except OSError:
        rx.close()
        tx.close()
        raise
    return rx, tx, slot, slots


class Link:
    """The forwarder: ``directions`` maps a name to (interface in, interface out), any
    number of them (one per direction of each impaired cable).

    Sockets are opened in the network namespace of the thread that calls ``start``.
    ``trace_limit``: how many frames' events ``trace`` keeps (0: none, fastest).
    """

    def __init__(self, directions: dict[str, tuple[str, str]],
                 impairments: dict[str, Impairment], trace_limit: int = 100_000):
        if not isinstance(trace_limit, int) or trace_limit < 0:
            raise ValueError(f"trace_limit must be an int ≥ 0 (0 keeps no trace), "
                             f"not {trace_limit!r}")
        self.directions = directions
        self.impairments = dict(impairments)
        self.wire_mtu = min(impairment.mtu for impairment in self.impairments.values())
        self.trace_limit = trace_limit
        self.trace_truncated = 0  # events pushed out of the bounded trace
        self._process: subprocess.Popen | None = None
        self._keeper: threading.Thread | None = None
        self._control: Connection | None = None
        self._lock = threading.Lock()  # one request at a time on the control connection
        # what the forwarder said last (all of it once it has stopped)
        self._state: dict = {"stats": {}, "tallies": {}, "trace": Trace()}

    def start(self) -> Link:
        """Open the sockets here and start the forwarder; returns when it forwards."""
        opened, ours, theirs = [], None, None
        try:
            for iface_in, iface_out in self.directions.values():
                opened.append(open_direction(iface_in, iface_out, self.wire_mtu))
            ours, theirs = socket.socketpair()
            fds = [theirs.fileno()] + [s.fileno() for rx, tx, *_ in opened for s in (rx, tx)]
            self._spawn([sys.executable, "-m", "labkit.net.forwarder",
                         str(theirs.fileno()), str(os.getpid())], fds)
            self._control = Connection(ours.detach())
            self._control.send({
                "trace_limit": self.trace_limit,
                "directions": [(name, rx.fileno(), tx.fileno(), slot, slots,
                                self.impairments[name])
                               for name, (rx, tx, slot, slots) in zip(self.directions, opened,
                                                                      strict=True)]})
            self._ask(None)  # its first answer: it has the sockets and forwards
        except BaseException:
            self.stop()
            raise
        finally:  # the forwarder holds its own copies now
            for rx, tx, *_ in opened:
                rx.close()
                tx.close()
            for end in (ours, theirs):
                if end is not None:
                    end.close()
        return self

    def _spawn(self, argv: list[str], fds: list[int]) -> None:
        """Start the forwarder from a thread that waits for it, and so outlives it: the
        kernel kills it (PR_SET_PDEATHSIG) when the thread that started it ends, and
        this one ends only after the forwarder, or with the whole process."""
        started = threading.Event()
        failure: list[BaseException] = []

        def keep():
            try:
                # the same session and process group: Jupyter's shutdown, which ends
                # the kernel's group, ends it too (a session of its own, a scheduling
                # group of its own, measured no better); it ignores the group's SIGINT
                self._process = subprocess.Popen(argv, pass_fds=fds,
                                                 stdin=subprocess.DEVNULL)
            except BaseException as exc:  # noqa: BLE001 - given to the caller below
                failure.append(exc)
                return
            finally:
                started.set()
            self._process.wait()

        self._keeper = threading.Thread(target=keep, name="labkit link forwarder",
                                        daemon=True)
        self._keeper.start()
        started.wait()
        if failure:
            raise failure[0]

    def _ask(self, request) -> object:
        """Send ``request`` to the forwarder and return its answer."""
        control = self._control
        if control is None:
            raise RuntimeError("the link is not running")
        with self._lock:
            try:
                if request is not None:
                    control.send(request)
                if not control.poll(ANSWER_WITHIN):
                    pid = self._process.pid if self._process is not None else "?"
                    raise RuntimeError(f"the link's forwarder (pid {pid}) did "
                                       f"not answer within {ANSWER_WITHIN} s")
                kind, answer = control.recv()
            except (EOFError, OSError) as exc:
                code = None
                if self._process is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        code = self._process.wait(timeout=5)  # it is ending: say how
                raise RuntimeError(f"the link's forwarder has ended (exit status {code}): "
                                   f"its frames go nowhere; stop this network and start a "
                                   f"new one") from exc
        if kind == "error":
            raise RuntimeError(f"the link's forwarder failed:\n{answer}")
        return answer

    def _fetch(self, what: str) -> dict:
        """The forwarder's current state (``what``: "state" or "trace"), or the last."""
        if self._control is not None:
            answer = self._ask((what,))
            assert isinstance(answer, dict), f"the forwarder answered {answer!r}"
            self._state.update(answer)
        return self._state

    def set(self, direction: str | None = None, **changes) -> None:
        """Change the impairment while running, e.g. ``link.set(loss=0.05)``; both
        directions unless ``direction="client→server"``. Checked like Impairment(...)."""
        names = list(self.impairments) if direction is None else [direction]
        for name in names:
            if name not in self.impairments:
                raise ValueError(f"direction must be one of {list(self.impairments)}, "
                                 f"not {name!r}")
        fresh = {name: dataclasses.replace(self.impairments[name], **changes)
                 for name in names}  # all checked before any is applied
        self.impairments.update(fresh)
        if self._control is not None:
            self._ask(("set", fresh))  # from the next frame on

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per direction: frames, delivered, dropped, queue_dropped, duplicated,
        reordered; and ``missed``: frames the kernel dropped before the link could read them
        (its ring was full: the link fell behind), never counted in ``frames``."""
        return self._fetch("state")["stats"]

    def lateness(self, tolerance: float = 0.001) -> dict[str, Lateness]:
        """Per direction: how many frames left more than ``tolerance`` s after they were
        due, and the worst (to 10 µs). ``print(link.lateness()["client→server"])``"""
        if not _is_seconds(tolerance):
            raise ValueError(f"tolerance must be seconds ≥ 0 (e.g. 0.001 for 1 ms), "
                             f"not {tolerance!r}")
        return {name: tally.lateness(tolerance)
                for name, tally in self._fetch("state")["tallies"].items()}

    def too_busy(self, tolerance: float = 0.001) -> str | None:
        """None if every frame left within ``tolerance`` of when it was due and none was
        missed; else one sentence saying the machine, not the link, made the numbers."""
        state = self._fetch("state")
        missed = sum(counts["missed"] for counts in state["stats"].values())
        return too_busy({name: tally.lateness(tolerance)
                         for name, tally in state["tallies"].items()}, missed)

    @property
    def trace(self) -> Trace:
        """The last ``trace_limit`` frames' events (older ones: ``trace_truncated``), each
        with the frame's headers (``e.frame``; ``e.cut`` bytes of payload not kept)."""
        trace = self._fetch("trace")["trace"]
        self.trace_truncated = trace.truncated
        return trace

    def stop(self) -> None:
        """Stop the forwarder (keeping its last stats, lateness and trace); safe to call
        twice."""
        control, self._control = self._control, None
        if control is not None:
            try:
                with self._lock:
                    control.send(("stop",))
                    if control.poll(ANSWER_WITHIN):
                        kind, answer = control.recv()
                        if kind == "state":
                            self._state.update(answer)
                            self.trace_truncated = answer["trace"].truncated
            except (EOFError, OSError):
                pass  # it had ended: what it said last is all there is
            finally:
                control.close()  # end of file: a forwarder still running exits
        if self._process is not None and self._process.poll() is None:
            try:
                self._process.wait(timeout=ANSWER_WITHIN)
            except subprocess.TimeoutExpired:
                self._process.kill()
        if self._keeper is not None:
            self._keeper.join()
            self._keeper = None
