"""The link's forwarding loop, in a process of its own: ``python -m labkit.net.forwarder FD PID``.

``Link`` (link.py) opens the sockets and starts this process with them; over the control
connection ``FD`` it sends the settings, then requests (change an impairment, send the
counters, the lateness or the trace, stop), each answered between two frames.

One thread does everything, so nothing waits for a lock or a GIL: it reads each
direction's PACKET_RX_RING (shared with the kernel: no system call per frame read) in
batches, asks the direction's ``LinkModel`` each frame's fate, sends at once what is due
at once, keeps the rest in a time-ordered queue, and sleeps in ``select`` until a frame
comes, the next one falls due, or a request arrives. A frame is due its delay after the
*kernel* received it (the ring slot's timestamp), so reading it late does not delay it
more; every frame's lateness (sent - due) is tallied for ``Link.lateness``.

It dies with its parent, however that ends: the kernel kills it when the thread that
started it ends (PR_SET_PDEATHSIG), and it exits when the control connection closes.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import heapq
import mmap
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection

from labkit.net.impairment import Impairment, LinkModel
from labkit.net.link import EVENT_FATES, FATES, HEADER, RECORD, TICK, TRACE_BYTES, Tally, Trace

SOL_PACKET, PACKET_STATISTICS = 263, 6
TP_STATUS_KERNEL, TP_STATUS_USER = 0, 1
PR_SET_PDEATHSIG, PR_SET_TIMERSLACK = 1, 29
SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}  # the system call's number per machine
SCHED_ATTR_SIZE, SLICE_NS = 56, 100_000  # struct sched_attr; its sched_runtime: 0.1 ms
BATCH = 64  # frames read from one ring before the others' and the due frames' turn
OFFSET_EVERY = 0.5  # s: how often the wall clock's offset is read again
HOLD_LIMIT = 0.2  # s: a frame held back to reorder leaves by then even if no frame follows
_libc = ctypes.CDLL(None, use_errno=True)


class Way:
    """One direction: its ring, its sender, its model, its queue, its counters."""

    def __init__(self, forwarder: Forwarder, name: str, rx: int, tx: int, slot: int,
                 slots: int, impairment: Impairment, stream: int):
        self.forwarder, self.name = forwarder, name
        self.number = stream  # its index in the trace's records
        self.rx = socket.socket(fileno=rx)
        self.tx = socket.socket(fileno=tx)
        self.ring = mmap.mmap(rx, slot * slots)
        self.slot, self.slots, self.index = slot, slots, 0
        self.model = LinkModel(impairment, stream)
        self.stats = {**dict.fromkeys(FATES, 0), "missed": 0}
        self.tally = Tally()
        self.schedule: list[list] = []  # heap of [due, order, frame, event, live, copy]
        self.order = 0
        self.held: list | None = None  # a frame held back to reorder
        self.immediate = self.lossy = False
        self.refresh()

    def refresh(self) -> None:
        """Pick the path for the current impairment."""
        imp = self.model.impairment
        self.immediate = imp.transparent  # each frame leaves at once, or never
        self.lossy = bool(imp.loss) or imp.burst is not None

    def read(self, offset: float) -> bool:
        """Take up to BATCH frames from the ring; True if more are waiting.

        ``offset``: wall clock minus monotonic clock (the kernel stamps frames on the first,
        the model counts on the second). The common case, a frame that leaves at once
        (or is lost), is done here inline: this loop is the link's cost per frame.
        """
        ring, slot, slots, index = self.ring, self.slot, self.slots, self.index
        send, stats, model, tally = self.tx.send, self.stats, self.model, self.tally
        ticks, worst, sent = tally.ticks, tally.worst, 0
        at_once, lossy, mtu = self.immediate, self.lossy, model.impairment.mtu
        schedule, record, direction = self.schedule, self.forwarder.record, self.number
        pack, nan = RECORD.pack, float("nan")
        unpack_from, pack_into, monotonic = struct.unpack_from, struct.pack_into, time.monotonic
        view = memoryview(ring)
        try:
            for _ in range(BATCH):
                at = index * slot
                if not ring[at] & TP_STATUS_USER:  # the kernel has not filled it yet
                    return False
                _, length, captured, mac, _, sec, nsec = unpack_from("IIIHHII", ring, at)
                arrived = sec + nsec * 1e-9  # when the kernel received it: its time 0
                due = arrived - offset
                start = at + mac
                frame = view[start:start + captured]
                kind = ring[start + 12] << 8 | ring[start + 13]  # the EtherType
                if kind != 0x0800 and (kind != 0x86DD or neighbour_discovery(frame)):
                    self.send(frame)  # ARP and its IPv6 twins pass as they are, uncounted
                elif at_once and not schedule:  # no waiting: lost, or sent on now
                    number = model.frames
                    model.frames = number + 1
                    stats["frames"] += 1
                    fate = "delivered"
                    if (lossy and model.lost()) or captured < length \
                            or captured - HEADER > mtu:
                        fate = "dropped"
                    else:
                        try:
                            send(frame)
                        except OSError:  # the host's receive queue is full (ENOBUFS)
                            fate = "queue_dropped"
                    stats[fate] += 1
                    left = None
                    if fate == "delivered":
                        now = monotonic()
                        sent += 1
                        late = now - due
                        if late > 0:  # tallied as Tally.add does, without the call
                            tick = int(late / TICK)
                            ticks[tick] = ticks.get(tick, 0) + 1
                            if late > worst:
                                worst = late
                        left = now + offset
                    if record:  # final already: kept as its compact record
                        head = bytes(frame[:TRACE_BYTES])
                        record(pack(arrived, left or nan, arrived if left else nan, number,
                                    length, direction, EVENT_FATES.index(fate), len(head))
                               + head.ljust(TRACE_BYTES, b"\0"))
                else:
                    self.admit(bytes(frame), length, arrived, due)
                del frame  # the kernel may reuse the slot now
                pack_into("I", ring, at, TP_STATUS_KERNEL)
                index = index + 1 if index + 1 < slots else 0
            return bool(ring[index * slot] & TP_STATUS_USER)
        finally:
            view.release()
            self.index = index
            tally.frames += sent
            tally.worst = max(tally.worst, worst)

    def admit(self, frame: bytes, length: int, arrived: float, now: float) -> None:
        """Queue a frame the kernel received at ``arrived`` (wall clock); ``now`` is that
        instant on the monotonic clock the model and the queue count in."""
        fate = self.model.admit(now, len(frame) - HEADER)
        self.stats["frames"] += 1
        event = None
        if self.forwarder.record:
            event = [arrived, None, self.name, frame[:TRACE_BYTES], fate.kind, fate.number,
                     length, None]
            self.forwarder.record(event)
        if fate.kind != "delivered":
            self.stats[fate.kind] += 1
            return
        entry = self.push(fate.due, frame, event)
        if fate.duplicate:
            self.stats["duplicated"] += 1
            twin = None
            if event is not None and self.forwarder.record:
                twin = [*event[:4], "duplicated", *event[5:]]
                self.forwarder.record(twin)
            self.push(fate.due, frame, twin, copy=True)
        if self.held is not None:  # the frame held back leaves right after this one
            held, self.held = self.held, None
            if held[4]:
                held[4] = False
                self.push(fate.due, held[2], held[3], held[5])
        if fate.hold:
            self.stats["reordered"] += 1
            entry[4] = False
            self.held = self.push(fate.due + HOLD_LIMIT, frame, event)

    def push(self, due: float, frame: bytes, event: list | None, copy: bool = False) -> list:
        self.order += 1
        entry = [due, self.order, frame, event, True, copy]
        heapq.heappush(self.schedule, entry)
        if event is not None:
            event[7] = due + self.forwarder.offset
        return entry

    def send_due(self, now: float, offset: float) -> None:
        """Send every queued frame due by ``now`` (monotonic)."""
        schedule = self.schedule
        while schedule and schedule[0][0] <= now:
            entry = heapq.heappop(schedule)
            if entry is self.held:  # held too long: nothing came after it
                self.held = None
            if entry[4]:
                self.send(entry[2], entry[3], count=not entry[5], due=entry[0], offset=offset)

    def send(self, frame, event: list | None = None, count: bool = True,
             due: float | None = None, offset: float = 0.0) -> None:
        """Send ``frame`` on; if it was ``due`` (monotonic), tally how late it left."""
        try:
            self.tx.send(frame)
        except OSError:  # the host's receive queue is full (ENOBUFS): a drop at the end
            self.stats["queue_dropped"] += 1
            if event is not None:
                event[4], event[7] = "queue_dropped", None
            return
        if due is None:
            return
        now = time.monotonic()
        self.tally.add(now - due)
        if count:
            self.stats["delivered"] += 1
        if event is not None:
            event[1] = now + offset

    def counters(self) -> dict[str, int]:
        """The counters, with ``missed`` (frames lost before we read them) brought up to
        date: the kernel's counter resets when read."""
        self.stats["missed"] += struct.unpack(
            "II", self.rx.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))[1]
        return dict(self.stats)


class Forwarder:
    """Every direction of a link, forwarded by one loop; requests from ``control``."""

    def __init__(self, control: Connection, settings: dict):
        self.control = control
        self.trace_limit = settings["trace_limit"]
        # events still in flight are lists (their fate can change); final ones bytes
        self.trace: deque[list | bytes] = deque(maxlen=max(self.trace_limit, 1))
        self.record = self.trace.append if self.trace_limit else None
        self.offset = clock_offset(0.0)
        self.wire_mtu = min(imp.mtu for *_, imp in settings["directions"])
        self.ways = {name: Way(self, name, rx, tx, slot, slots, imp, stream)
                     for stream, (name, rx, tx, slot, slots, imp)
                     in enumerate(settings["directions"])}

    def run(self) -> None:
        ways = list(self.ways.values())
        waiting = [way.rx.fileno() for way in ways] + [self.control.fileno()]
        control = self.control.fileno()
        monotonic = time.monotonic
        more, measured = False, monotonic()
        while True:
            if more:  # frames are waiting: only look whether a request came too
                ready = select.select([control], [], [], 0)[0]
            else:
                due = min((way.schedule[0][0] for way in ways if way.schedule), default=None)
                timeout = None if due is None else max(0.0, due - monotonic())
                ready = select.select(waiting, [], [], timeout)[0]
            if monotonic() - measured > OFFSET_EVERY:  # the wall clock may have been set
                self.offset, measured = clock_offset(self.offset), monotonic()
            offset = self.offset
            if control in ready and not self.answer():
                return
            more = False
            for way in ways:
                more |= way.read(offset)
            now = monotonic()
            for way in ways:
                way.send_due(now, offset)

    def answer(self) -> bool:
        """Answer one request; False when told to stop."""
        try:
            request = self.control.recv()
        except EOFError:  # the parent closed the connection, or died
            return False
        kind = request[0]
        if kind == "set":
            for name, impairment in request[1].items():
                self.ways[name].model.reconfigure(impairment)
                self.ways[name].refresh()
            self.control.send(("ok", None))
        elif kind == "state":
            self.control.send(("state", self.state()))
        elif kind == "trace":
            self.control.send(("state", self.trace_state()))
        elif kind == "stop":
            self.control.send(("state", {**self.state(), **self.trace_state()}))
            return False
        return True

    def state(self) -> dict:
        return {"stats": {name: way.counters() for name, way in self.ways.items()},
                "tallies": {name: way.tally for name, way in self.ways.items()}}

    def trace_state(self) -> dict:
        """The trace as compact records (link.RECORD), oldest first: the frames that went
        through the queue are packed now (they were lists, while they could change)."""
        records = b"".join(event if isinstance(event, bytes) else self.packed(event)
                           for event in (self.trace if self.trace_limit else ()))
        truncated = max(0, self.recorded() - self.trace_limit) if self.trace_limit else 0
        return {"trace": Trace(records, list(self.ways), truncated)}

    def packed(self, event: list) -> bytes:
        t_in, t_out, name, frame, fate, number, length, due = event
        nan = float("nan")
        return RECORD.pack(t_in, nan if t_out is None else t_out, nan if due is None else due,
                           number, length, self.ways[name].number, EVENT_FATES.index(fate),
                           len(frame)) + frame.ljust(TRACE_BYTES, b"\0")

    def recorded(self) -> int:
        """Events ever recorded: one per frame, one per duplicate."""
        return sum(way.stats["frames"] + way.stats["duplicated"] for way in self.ways.values())


# ICMPv6 neighbour discovery (router solicitation and advertisement, neighbour
# solicitation and advertisement, redirect: RFC 4861) and multicast listener messages
# (MLD, RFC 3810: query, reports, done), which the link lets pass as it lets ARP
NEIGHBOUR_TYPES = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})
ICMPV6, HOP_BY_HOP = 58, 0


def neighbour_discovery(frame) -> bool:
    """Is this IPv6 frame neighbour discovery or MLD (ICMPv6 right after the IPv6 header,
    or after a hop-by-hop header, where MLD carries its router alert)?"""
    at, following = 14 + 40, frame[14 + 6]  # after Ethernet and the fixed IPv6 header
    if following == HOP_BY_HOP and len(frame) > at + 1:
        following, at = frame[at], at + 8 * (frame[at + 1] + 1)
    return following == ICMPV6 and len(frame) > at and frame[at] in NEIGHBOUR_TYPES


def clock_offset(previous: float) -> float:
    """Wall clock minus monotonic clock, from reads close enough together that no
    preemption came between them (else ``previous``)."""
    monotonic, wall = time.monotonic, time.time
    for _ in range(5):
        before, now, after = monotonic(), wall(), monotonic()
        if after - before < 20e-6:
            return now - (before + after) / 2
    return previous


def short_slice() -> None:
    """Ask the scheduler for 0.1 ms slices (Linux ≥ 6.12, EEVDF; no privilege needed):
    a task with a shorter slice gets an earlier deadline, so when a frame falls due it
    preempts a busy process instead of waiting for the next tick (4 ms at HZ=250). It
    gets no more CPU time than before, only sooner. Older kernels ignore it."""
    attr = struct.pack("IIQiIQQQII", SCHED_ATTR_SIZE, 0, 0, 0, 0, SLICE_NS, 0, 0, 0, 0)
    if number := SCHED_SETATTR.get(os.uname().machine):
        _libc.syscall(number, 0, ctypes.create_string_buffer(attr, len(attr)), 0)


def die_with(parent: int) -> None:
    """Be killed when the thread that started us ends; exit if it already has."""
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent:
        raise SystemExit("labkit forwarder: the process that started it has gone")


def main(argv: list[str]) -> None:
    fd, parent = int(argv[0]), int(argv[1])
    die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a notebook's interrupt is not for us
    _libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)  # wake on time, not up to 50 µs late
    short_slice()
    control = Connection(fd)
    try:
        forwarder = Forwarder(control, control.recv())
    except BaseException:
        control.send(("error", traceback.format_exc()))
        raise
    # the loop makes no reference cycles (events, queue entries: lists of numbers and
    # bytes), so the cyclic collector would only pause it, the longer the fuller the trace
    gc.disable()
    control.send(("ready", None))
    try:
        forwarder.run()
    except Exception:
        with contextlib.suppress(OSError):  # the parent may be gone: nobody to tell
            control.send(("error", traceback.format_exc()))
        raise


if __name__ == "__main__":
    main(sys.argv[1:])
