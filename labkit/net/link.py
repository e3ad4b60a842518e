"""The impaired link in user space: frames cross from one host to the other through us.

The kernel has no netem here, and a student has no root, so the link is two AF_PACKET
sockets per direction on the link-side ends of the hosts' veth pairs: a receiver thread
reads each frame, asks the direction's ``LinkModel`` (labkit/net/impairment.py) its fate,
and either sends it at once (nothing delays it) or puts it in a time-ordered queue that a
sender thread empties as each frame falls due: that wait *is* the link's delay.

    >>> link = Link({"client→server": ("lk1c", "lk1s"), "server→client": ("lk1s", "lk1c")},
    ...             {"client→server": Impairment(delay=0.02), "server→client": Impairment()})
    >>> link.start(); ...; link.stop()

Only IPv4 frames are impaired and counted; anything else (there should be nothing: the
hosts have static ARP entries and no IPv6) passes straight through.
"""

from __future__ import annotations

import ctypes
import dataclasses
import heapq
import mmap
import os
import select
import socket
import struct
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

from labkit.net.impairment import Impairment, LinkModel

ETH_P_ALL = 0x0003
SOL_PACKET, PACKET_RX_RING, PACKET_VERSION, PACKET_IGNORE_OUTGOING = 263, 5, 10, 23
TPACKET_V2, TP_STATUS_KERNEL, TP_STATUS_USER = 1, 0, 1
PR_SET_TIMERSLACK = 29
RING_BYTES = 4 << 20  # per direction: about 2000 full-size frames of slack
HEADER = 14  # Ethernet
HOLD_LIMIT = 0.2  # s: a frame held back to reorder leaves by then even if no frame follows
FATES = ("frames", "delivered", "dropped", "queue_dropped", "duplicated", "reordered")
PACKET_STATISTICS = 6  # (frames read, frames the kernel dropped: our ring was full)
TICK = 1e-5  # s: lateness is tallied to 10 µs
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Lateness:
    """How faithfully one direction kept its timing: of ``frames`` that left, ``late``
    left more than ``tolerance`` seconds after they were due; the worst by ``worst`` s.

    A frame is due when the model says (its delay, its turn at a bottleneck) counted from
    when the *kernel* received it, so a forwarder that read it late made it late too.

        >>> print(net.lateness()["client→server"])
        412 frames, none more than 1 ms late (worst 0.3 ms)
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


class _Tally:
    """Each departed frame's lateness, in 10 µs ticks: enough to answer any tolerance."""

    def __init__(self):
        self.frames, self.worst, self.ticks = 0, 0.0, Counter()

    def add(self, lateness: float) -> None:
        self.frames += 1
        if lateness > 0:
            self.ticks[int(lateness / TICK)] += 1
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


@dataclass(slots=True)
class LinkEvent:
    """One frame's passage: arrival, departure (None if it never left), its fate."""

    t_in: float  # wall-clock time (time.time()) when the kernel received it
    t_out: float | None  # time.time() when the link sent it on
    direction: str  # "client→server" or "server→client"
    frame: bytes  # the whole Ethernet frame
    fate: str  # "delivered", "dropped", "queue_dropped", "duplicated" (the extra copy)
    number: int = 0  # the frame's number in its direction, from 0


class _Direction:
    """One way across the link: receiver thread, sender thread, model, counters.

    The receiver reads a PACKET_RX_RING (TPACKET_V2) shared with the kernel: no system
    call per frame read, only one to send it on. That doubled the throughput of a plain
    ``recv_into`` loop here (benchmarks/link_throughput.py).
    """

    def __init__(self, link: Link, name: str, iface_in: str, iface_out: str,
                 impairment: Impairment, stream: int):
        self.link, self.name = link, name
        self.model = LinkModel(impairment, stream)
        self.stats = dict.fromkeys(FATES, 0)
        self.tally = _Tally()
        self.plain = False  # no impairment, no trace: the fastest path
        self.immediate = self.lossy = False  # set by refresh()
        self.rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # sends only
        # one slot holds a whole frame of the wire's MTU after the ring's own header
        self.slot = max(2048, 1 << (link.wire_mtu + HEADER + 128).bit_length())
        self.slots = max(16, RING_BYTES // self.slot)
        try:
            self.rx.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self.rx.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            block = max(self.slot, mmap.PAGESIZE)
            self.rx.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack(
                "IIII", block, self.slots * self.slot // block, self.slot, self.slots))
            self.ring = mmap.mmap(self.rx.fileno(), self.slots * self.slot)
            self.rx.bind((iface_in, ETH_P_ALL))
            self.tx.bind((iface_out, 0))
        except OSError:
            self.rx.close()
            self.tx.close()
            raise
        self.schedule: list[list] = []  # heap of [due, order, frame, event, live, copy]
        self.order = 0
        self.held: list | None = None  # a frame held back to reorder
        self.wakeup = threading.Condition()
        self.refresh()

    def refresh(self) -> None:
        """Pick the receiver's path for the current impairment."""
        imp = self.model.impairment
        self.immediate = imp.transparent  # each frame leaves at once, or never
        self.lossy = bool(imp.loss) or imp.burst is not None
        self.plain = (self.immediate and not self.lossy and imp.mtu >= self.link.wire_mtu
                      and not self.link.trace_limit)

    def receive(self) -> None:
        """Read frames from the ring until stopped."""
        view = memoryview(self.ring)
        try:
            self._receive(view)
        finally:
            view.release()

    def _receive(self, view: memoryview) -> None:
        ring, slot, slots = self.ring, self.slot, self.slots
        send, stats, link, model = self.tx.send, self.stats, self.link, self.model
        schedule, unpack_from, pack_into = self.schedule, struct.unpack_from, struct.pack_into
        record, name, tally, monotonic = link._record, self.name, self.tally, time.monotonic
        waiting = [self.rx.fileno(), link._stop_r]
        index = 0
        offset = time.time() - monotonic()  # the kernel stamps frames in wall-clock time
        while not link._stopping:
            at = index * slot
            if not ring[at] & TP_STATUS_USER:  # the kernel has not filled it yet
                select.select(waiting, [], [])
                offset = time.time() - monotonic()
                continue
            _, length, captured, mac, _, sec, nsec = unpack_from("IIIHHII", ring, at)
            arrived = sec + nsec * 1e-9  # when the kernel received it: the frame's time 0
            due = arrived - offset
            start = at + mac
            frame = view[start:start + captured]
            if ring[start + 12] != 0x08 or ring[start + 13] != 0x00:  # not IPv4
                self._send(frame, count=False)
            elif self.plain and not schedule:  # nothing to do but count and send on
                model.frames += 1
                stats["frames"] += 1
                try:
                    send(frame)
                    stats["delivered"] += 1
                    tally.add(monotonic() - due)
                except OSError:  # the host's receive queue is full (ENOBUFS)
                    stats["queue_dropped"] += 1
            elif self.immediate and not schedule:  # no waiting: lost, or sent on now
                number = model.frames
                model.frames += 1
                stats["frames"] += 1
                lost = ((self.lossy and model.lost()) or captured < length
                        or captured - HEADER > model.impairment.mtu)
                event = None
                if link.trace_limit:
                    event = [arrived, None, name, bytes(frame),
                             "dropped" if lost else "delivered", number]
                    record(event)
                if lost:
                    stats["dropped"] += 1
                else:
                    self._send(frame, event, due=due)
            else:
                self._admit(bytes(frame), arrived, due)
            del frame  # the kernel may reuse the slot now
            pack_into("I", ring, at, TP_STATUS_KERNEL)
            index = index + 1 if index + 1 < slots else 0

    def _admit(self, frame: bytes, arrived: float, now: float) -> None:
        """Queue a frame the kernel received at ``arrived`` (wall clock), ``now`` on the
        monotonic clock the model and the queue count in."""
        fate = self.model.admit(now, len(frame) - HEADER)
        self.stats["frames"] += 1
        event = None
        if self.link.trace_limit:
            event = [arrived, None, self.name, frame, fate.kind, fate.number]
            self.link._record(event)
        if fate.kind != "delivered":
            self.stats[fate.kind] += 1
            return
        with self.wakeup:
            entry = self._push(fate.due, frame, event)
            if fate.duplicate:
                self.stats["duplicated"] += 1
                twin = [*event[:4], "duplicated", event[5]] if event else None
                self.link._record(twin)
                self._push(fate.due, frame, twin, copy=True)
            if self.held is not None:  # the frame held back leaves right after this one
                held, self.held = self.held, None
                if held[4]:
                    held[4] = False
                    self._push(fate.due, held[2], held[3], held[5])
            if fate.hold:
                self.stats["reordered"] += 1
                entry[4] = False
                self.held = self._push(fate.due + HOLD_LIMIT, frame, event)
            self.wakeup.notify()

    def _push(self, due: float, frame: bytes, event: list | None,
              copy: bool = False) -> list:
        self.order += 1
        entry = [due, self.order, frame, event, True, copy]
        heapq.heappush(self.schedule, entry)
        return entry

    def transmit(self) -> None:
        """Send each queued frame when it falls due; waiting for that is the delay."""
        # this thread's timers fire on time, not up to 50 µs late (the default slack)
        _libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
        schedule, link = self.schedule, self.link
        while True:
            due_now = []
            with self.wakeup:
                while not link._stopping:
                    if not schedule:
                        self.wakeup.wait()
                        continue
                    wait = schedule[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self.wakeup.wait(wait)
                if link._stopping:
                    return
                now = time.monotonic()
                while schedule and schedule[0][0] <= now:
                    entry = heapq.heappop(schedule)
                    if entry is self.held:  # held too long: nothing came after it
                        self.held = None
                    if entry[4]:
                        due_now.append(entry)
            for entry in due_now:
                self._send(entry[2], entry[3], count=not entry[5], due=entry[0])

    def _send(self, frame, event: list | None = None, count: bool = True,
              due: float | None = None) -> None:
        """Send ``frame`` on; if it was ``due`` (monotonic), tally how late it left."""
        try:
            self.tx.send(frame)
        except OSError:  # the host's receive queue is full (ENOBUFS): a drop at the end
            self.stats["queue_dropped"] += 1
            if event is not None:
                event[4] = "queue_dropped"
            return
        if count:
            self.stats["delivered"] += 1
        if due is not None:
            self.tally.add(time.monotonic() - due)
        if event is not None:
            event[1] = time.time()

    def missed(self) -> int:
        """Frames lost before we read them; the kernel's counter resets when read."""
        if self.rx.fileno() >= 0:
            with self.wakeup:
                self.stats["missed"] = self.stats.get("missed", 0) + struct.unpack(
                    "II", self.rx.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))[1]
        return self.stats.get("missed", 0)

    def close(self) -> None:
        self.missed()  # the count survives the socket
        self.ring.close()
        self.rx.close()
        self.tx.close()


class Link:
    """The forwarder: ``directions`` maps a name to (interface in, interface out).

    Sockets are opened in the network namespace of the thread that calls ``start``.
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
        # events as lists (cheaper than objects, per frame): LinkEvent's fields in order
        self._trace: deque[list] = deque(maxlen=max(trace_limit, 1))
        self.trace_truncated = 0  # events pushed out of the bounded trace
        self._ways: dict[str, _Direction] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._stop_r, self._stop_w = -1, -1

    def start(self) -> Link:
        self._stop_r, self._stop_w = os.pipe()
        try:
            for stream, (name, (iface_in, iface_out)) in enumerate(self.directions.items()):
                self._ways[name] = _Direction(self, name, iface_in, iface_out,
                                              self.impairments[name], stream)
        except OSError:
            self.stop()
            raise
        for way in self._ways.values():
            for job, role in ((way.receive, "receive"), (way.transmit, "send")):
                thread = threading.Thread(target=job, name=f"labkit link {way.name} {role}",
                                          daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

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
        for name, impairment in fresh.items():
            self.impairments[name] = impairment
            if name in self._ways:
                self._ways[name].model.reconfigure(impairment)
                self._ways[name].refresh()

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per direction: frames, delivered, dropped, queue_dropped, duplicated,
        reordered; and ``missed``: frames the kernel dropped before the link could read them
        (its ring was full: the link fell behind), never counted in ``frames``."""
        return {name: {**{key: way.stats[key] for key in FATES}, "missed": way.missed()}
                for name, way in self._ways.items()}

    def lateness(self, tolerance: float = 0.001) -> dict[str, Lateness]:
        """Per direction: how many frames left more than ``tolerance`` s after they were
        due, and the worst (to 10 µs). ``print(link.lateness()["client→server"])``"""
        if not _is_seconds(tolerance):
            raise ValueError(f"tolerance must be seconds ≥ 0 (e.g. 0.001 for 1 ms), "
                             f"not {tolerance!r}")
        return {name: way.tally.lateness(tolerance) for name, way in self._ways.items()}

    def too_busy(self, tolerance: float = 0.001) -> str | None:
        """None if every frame left within ``tolerance`` of when it was due and none was
        missed; else one sentence saying the machine, not the link, made the numbers."""
        missed = sum(way["missed"] for way in self.stats.values())
        return too_busy(self.lateness(tolerance), missed)

    @property
    def trace(self) -> list[LinkEvent]:
        """The last ``trace_limit`` frames' events (older ones: ``trace_truncated``)."""
        return [LinkEvent(*event) for event in self._trace] if self.trace_limit else []

    def _record(self, event: list | None) -> None:
        if event is None:
            return
        if len(self._trace) == self._trace.maxlen:
            self.trace_truncated += 1
        self._trace.append(event)

    def stop(self) -> None:
        """Join every thread and close every socket and pipe; safe to call twice."""
        self._stopping = True
        if self._stop_w >= 0:
            os.write(self._stop_w, b"x")  # wakes the receivers' select
        for way in self._ways.values():
            with way.wakeup:
                way.wakeup.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        alive = [thread.name for thread in self._threads if thread.is_alive()]
        self._threads.clear()
        for way in self._ways.values():
            way.close()
        for fd in (self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._stop_r = self._stop_w = -1
        if alive:
            raise RuntimeError(f"labkit link threads did not stop: {alive}")
