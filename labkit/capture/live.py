"""Live capture: read fast into bytes, dissect late, and know what was missed.

    >>> sniffer = LiveSniffer("lo", endpoints)     # endpoints: see labkit.capture.endpoints
    >>> sniffer.start(); ...; sniffer.settle(2.0); sniffer.stop()
    >>> sniffer.frames, sniffer.lost               # our packets in order; packets missed

Needs CAP_NET_RAW (the lab kernel has it).  A raw ``AF_PACKET`` socket with the port
filter compiled to BPF runs in the kernel, so only our packets are kept - on ``lo`` only
their arriving copies (there the kernel shows every packet leaving and arriving); on
another interface, such as a lab host's link (:mod:`labkit.net.hosts`), both
directions.  The kernel writes them into a memory-mapped ring (TPACKET_V3, as libpcap reads), which
unlike a socket's queue is not capped by ``net.core.rmem_max`` - the lab kernel may
not raise that - and costs no system call per packet.  A thread copies each frame's
bytes, kernel timestamp (ns) and original length out of the ring; Scapy dissects
nothing until a view asks (see :mod:`labkit.capture.frames`).  The ring starts small
(``RING_START``) and grows when traffic fills it (:meth:`LiveSniffer._grow`); the frames
kept stay within the capture's memory budget (:mod:`labkit.capture.budget`).

The exit waits on conditions, never a sleep: "fence" datagrams sent to ourselves, one
from each CPU (on another interface: sent out of it as raw frames), mark the end of the
kernel's queues, and the TCP tracker says when every byte sent was acknowledged.
Nothing queued is ever discarded; what the kernel dropped because the queue was full is
counted (PACKET_STATISTICS) and reported as ``lost``.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import select
import socket
import struct
import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, NamedTuple

from labkit.capture.budget import FRAME_OVERHEAD, MemoryBudget
from labkit.capture.flows import TcpTracker
from labkit.capture.frames import Frame, flow, headers_end, tcp_facts

if TYPE_CHECKING:
    from scapy.packet import Packet

    from labkit.capture.endpoints import _Endpoint

__all__ = ["LiveSniffer", "lost_notice"]

STOP_TIMEOUT = 5.0     # seconds for the reader thread to end once told to
DRAIN_STALL = 10.0     # seconds with no packet read before the drain is called a hang
RING_START = 8 * 1024 * 1024  # bytes of ring at first: a lesson's capture never fills it,
#                        and it absorbs ~60 ms of 1 Gbit/s while the reader waits for the
#                        CPU; once a block fills before its timer (25 MB/s or more) or an
#                        eighth of it waits to be read, the capture grows it, at once, to its
#                        budget's ring_max (64 MB by default, as tcpdump -B 65536, which
#                        capture_scale.py compares with)
BLOCK_SIZE = 1 << 18   # bytes per ring block: 3 whole lo frames (65,549 bytes), or ~1,800
RETIRE_MS = 10         # small ones; the kernel hands over a block that is not full after
#                        this long, so a slow trickle reaches us late by at most this, and a
#                        fast stream uses the blocks well (at 80k packets/s, half of each)
RETIRE_NS = RETIRE_MS * 1_000_000
_KEY_BYTES = 96        # a frame read from two rings is known by its length and first bytes
_STAMP_LAG = 5_000_000  # ns: a frame reaches the capture sockets within this of its stamp
ETH_P_ALL, ETH_HEADER = 3, 14
SOL_PACKET, PACKET_STATISTICS, PACKET_OUTGOING = 263, 6, 4
PACKET_RX_RING, PACKET_VERSION, TPACKET_V3, TP_STATUS_USER = 5, 10, 2, 1
TP_STATUS_BLK_TMO = 1 << 5  # a block handed over by its timer, not because it was full
SO_ATTACH_FILTER, SO_TIMESTAMPNS = 26, 35  # Linux; not in every Python's `socket`
SNAP_ALL = 0x40000     # a BPF "accept" returns how many bytes to keep: all of them
_BLOCK = struct.Struct("=III")        # tpacket_hdr_v1: block_status, num_pkts, first packet
_PACKET = struct.Struct("=IIIII4xH")  # tpacket3_hdr: next, sec, nsec, snaplen, len, mac
_LEFT = struct.Struct(_PACKET.format)   # the same, to count what a failed reader left
_FENCE = b"labkit fence %06d %02d"   # round and CPU; a fixed size tells it apart quickly
_FENCE_LEN = ETH_HEADER + 20 + 8 + len(_FENCE % (0, 0))
_LIBC = ctypes.CDLL(None, use_errno=True)  # (a CDLL call releases the GIL)


def lost_notice(lost: int) -> str:
    """The line every view shows for an incomplete capture."""
    what = "1 packet was" if lost == 1 else f"{lost} packets were"
    return (f"⚠ {what} lost: the kernel had them, the capture could not read them in time; "
            "this capture is incomplete (on a busy machine, run the cell again)")


def _bpf_program(expression: str, iface: str) -> bytes:
    """The filter as classic BPF instructions, compiled by libpcap, with two changes:
    on ``lo`` outgoing copies are refused first (we keep the arriving ones; elsewhere the
    outgoing copy is the only one of what this side sends), and an accepted packet is
    kept whole (libpcap's program keeps 65,535 bytes, lo frames reach 65,549)."""
    from scapy.arch.common import compile_filter
    from scapy.error import Scapy_Exception

    try:
        compiled = compile_filter(expression, iface)
    except Scapy_Exception as exc:
        raise ValueError(f"the capture filter is not one tcpdump understands: {exc}") from None
    code = ctypes.string_at(ctypes.addressof(compiled.bf_insns.contents), compiled.bf_len * 8)
    insns = [list(struct.unpack("HBBI", code[i:i + 8])) for i in range(0, len(code), 8)]
    for insn in insns:
        if insn[0] == 0x06 and insn[3]:  # BPF_RET|BPF_K with a snap length: keep all
            insn[3] = SNAP_ALL
    prefix = [(0x20, 0, 0, 0xFFFFF004),         # A = the packet's type (SKF_AD_PKTTYPE)
              (0x15, 0, 1, PACKET_OUTGOING),    # outgoing? next; else skip the refusal
              (0x06, 0, 0, 0)]                  # refuse it
    if iface != "lo":
        prefix = []
    return b"".join(struct.pack("HBBI", *insn) for insn in [*prefix, *insns])


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    """SO_ATTACH_FILTER (the kernel copies the program during the call)."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class _Ring(NamedTuple):
    """A capture socket and its memory-mapped receive ring of ``blocks`` blocks."""

    sock: socket.socket
    map: mmap.mmap
    blocks: int


def _map_ring(sock: socket.socket, blocks: int) -> mmap.mmap:
    """Give the socket a TPACKET_V3 receive ring of ``blocks`` blocks, mapped."""
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
    # tpacket_req3: block size and count, "frame" size and count (V3 packs frames of any
    # size into blocks: one nominal frame per block), retire timeout, private area, features
    request = struct.pack("=7I", BLOCK_SIZE, blocks, BLOCK_SIZE, blocks, RETIRE_MS, 0, 0)
    # The kernel takes (and zeroes) the ring's memory now: ~1 ms per 2 MB.  Called through
    # ctypes, which lets go of the GIL meanwhile (socket.setsockopt holds it), so a ring
    # made beside a busy one (LiveSniffer._grow) does not stop its reader.
    if _LIBC.setsockopt(sock.fileno(), SOL_PACKET, PACKET_RX_RING, request, len(request)):
        error = ctypes.get_errno()
        raise OSError(error, f"no capture ring of {blocks * BLOCK_SIZE:,} bytes: "
                             f"{os.strerror(error)}")
    return mmap.mmap(sock.fileno(), BLOCK_SIZE * blocks, mmap.MAP_SHARED,
                     mmap.PROT_READ | mmap.PROT_WRITE)


def _kernel_drops(sock: socket.socket) -> int:
    """Packets dropped since the last call because our queue was full (PACKET_STATISTICS
    resets its counters when read)."""
    stats = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    return int.from_bytes(stats[4:8], sys.byteorder)


class _FrameTracker(TcpTracker):
    """The TCP tracker, fed header fields read from bytes instead of Scapy packets."""

    def add_frame(self, data: bytes) -> None:
        facts = tcp_facts(data)
        if facts is None:
            return
        key, flags, seq, ack, size = facts
        conn = self._conn(key)
        if "R" in flags:
            self._reset.add(conn)
            return
        self._note_syn(key, flags, size)
        used = size + ("S" in flags) + ("F" in flags)
        if used:
            self._next_seq[key] = (seq + used) % 2**32
        if "F" in flags:
            self._fins.setdefault(conn, set()).add(key)
        if "A" in flags:
            self._acked[(key[2], key[3], key[0], key[1])] = ack


class LiveSniffer:
    """The packets of some endpoints, read from ``iface`` by a thread that only stores bytes."""

    def __init__(self, iface: str, endpoints: list[_Endpoint], *, buffer: int | None = None,
                 budget: MemoryBudget | None = None, filter: str | None = None) -> None:
        self.iface = iface
        self.endpoints = endpoints
        self.filter = filter           # a tcpdump expression kept too ("": every packet)
        self.buffer = buffer or RING_START  # the ring's first size; it grows (see _grow)
        self.budget = budget or MemoryBudget()
        self.ring_size = 0             # bytes of ring now
        self.kept = 0                  # bytes of frames kept (with Python's overhead)
        self.not_kept = 0              # packets past the budget, not kept at all
        self.not_kept_bytes = 0
        self.frames: list[Frame] = []  # filled by stop(): ours, in arrival order
        self.tracker = _FrameTracker()
        self.complete = True           # False once something was missed
        self.lost = 0                  # packets the kernel dropped before we could read them
        self.error: BaseException | None = None  # what ended the reader early
        self._raw: list[Frame] = []    # every frame as read (stop() keeps ours in frames)
        self._tracked = 0              # how many of _raw the tracker has seen
        self._changed = threading.Condition()
        self._sock: socket.socket | None = None
        self._ring: mmap.mmap | None = None
        self._fence: socket.socket | None = None
        self._fence_out: socket.socket | None = None  # other interfaces: a raw fence frame
        self._fence_port = 0
        self._fences: dict[int, int] = {}   # round -> fences of that round read
        self._fences_sent = 0
        self._round_size = 1
        self._drops = 0
        self._idle = False             # the reader found the queue empty
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._verdicts: dict[bytes, bool] = {}
        self._program: bytes | None = None  # the filter, compiled once for every ring
        self._ring_lock = threading.Lock()  # the reader swaps rings; settle() reads drops
        self._bigger: _Ring | None = None   # a ring being grown into (closed by stop())
        self._making: threading.Thread | None = None  # makes the next ring (_make_ring)
        self._made: _Ring | BaseException | None = None  # what it made, for _grow to bind
        self._cannot_grow: BaseException | None = None   # why the ring could not grow
        self._left_at = (0, 0)         # (block, packet) where a failed reader stopped
        self._wake: tuple[int, int] = (-1, -1)  # a pipe: stop() wakes the waiting reader

    @property
    def bpf(self) -> str:
        """The kernel's filter: our endpoints, ICMP errors quoting them, and the fence."""
        ours = [e.bpf() for e in self.endpoints]
        if self.filter is not None:
            if not self.filter.strip():
                return ""  # every packet (the reader knows a fence when it sees one)
            ours.append(f"({self.filter})")
        fence = f"(udp and dst host 127.0.0.1 and dst port {self._fence_port})"
        return " or ".join([*ours, fence])

    def start(self) -> None:
        """Open the socket and start the reader; on an error call :meth:`stop`."""
        self._fence = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._fence.bind(("127.0.0.1", 0))
        self._fence_port = self._fence.getsockname()[1]
        if self.iface != "lo":  # made now: the thread may be on a lab host only until later
            self._fence_out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            self._fence_out.bind((self.iface, 0))
        self._program = _bpf_program(self.bpf, self.iface)
        blocks = max(1, min(self.buffer, self.budget.ring_max) // BLOCK_SIZE)
        ring = self._open_ring(blocks)
        self._sock, self._ring, self.ring_size = ring.sock, ring.map, blocks * BLOCK_SIZE
        ring.sock.bind((self.iface, ETH_P_ALL))
        _kernel_drops(ring.sock)  # count from here on
        self._wake = os.pipe()
        self._thread = threading.Thread(target=self._read, args=(ring,), daemon=True,
                                        name=f"labkit capture on {self.iface}")
        self._thread.start()

    def _read(self, ring: _Ring) -> None:
        """The reader: copy each frame out of the ring as it comes (whole, or its headers
        only past the memory budget), notice fences, never dissect; give each block back
        to the kernel once read; move to a bigger ring when this one fills (:meth:`_grow`)."""
        poller = select.poll()
        poller.register(ring.sock, select.POLLIN)
        poller.register(self._wake[0], select.POLLIN)  # stop() writes to it
        append, fence_port = self._raw.append, self._fence_port.to_bytes(2, "big")
        whole, limit, overhead = self.budget.whole, self.budget.frames, FRAME_OVERHEAD
        most_blocks = max(1, self.budget.ring_max // BLOCK_SIZE)
        block, i, waited_after_stop, kept = 0, 0, False, self.kept
        bigger: _Ring | None = None   # a bigger ring bound beside this one (see _grow)
        bound_at = 0                  # ns: when it was bound; frames stamped later are in it
        bind_start = 0                # ns: just before (frames stamped sooner are not in it)
        seen: Counter[tuple[int, bytes]] | None = None  # frames read from the old ring that
        #                                                the new one has too
        seen_until = 0                # the latest stamp among them
        try:
            while True:
                base, mem = block * BLOCK_SIZE, ring.map
                status, count, at = _BLOCK.unpack_from(mem, base + 8)
                if not status & TP_STATUS_USER:  # the kernel is still filling this block
                    if bigger is not None and time.time_ns() > bound_at + 2 * RETIRE_NS:
                        # every block begun before the bigger ring was bound has retired and
                        # been read: the rest is in the bigger one
                        ring, block = self._switch(ring, bigger, poller), 0
                        bigger, waited_after_stop = None, False
                        seen = seen if seen and seen.total() else None
                        continue
                    if self._stopping and bigger is None:
                        if waited_after_stop or not count:  # a block begun before stop()
                            return                          # is retired by now, or empty
                        waited_after_stop = True
                    with self._changed:
                        self._idle = True
                        self._changed.notify_all()
                    wait = 4 * RETIRE_MS if self._stopping or bigger is not None else 1000
                    for fd, event in poller.poll(wait):
                        if fd == self._wake[0]:  # woken once: from now on wait for the ring
                            poller.unregister(fd)
                        elif event & (select.POLLERR | select.POLLNVAL):
                            raise OSError(f"the capture socket on {self.iface} failed")
                    continue
                at += base
                for i in range(count):  # noqa: B007 - i says where a failure left off
                    step, sec, nsec, size, wirelen, mac = _PACKET.unpack_from(mem, at)
                    start, ns = at + mac, sec * 1_000_000_000 + nsec
                    at += step
                    if seen is not None:  # two rings were bound at once: read each frame once
                        # (not by stamp: on lo each socket stamps TCP's packets itself)
                        key = (wirelen, mem[start:start + min(size, _KEY_BYTES)])
                        if bigger is not None:        # the old ring: note what the new has
                            if ns >= bind_start - _STAMP_LAG:
                                seen[key] += 1
                                seen_until = max(seen_until, ns)
                        elif seen[key]:               # the new ring: read from the old one
                            seen[key] -= 1
                            if seen.total() == 0:
                                seen = None           # every frame both had is read once
                            continue
                        elif ns > seen_until + _STAMP_LAG:
                            seen = None               # past everything both rings had
                    if (size == _FENCE_LEN and mem[start + 23] == 17
                            and mem[start + 42:start + 54] == b"labkit fence"):
                        if mem[start + 36:start + 38] == fence_port:
                            self._fence_read(mem[start + 42:start + size])
                        # else another capture's fence, sent out of the interface at the
                        # far end of this cable: capture machinery, not a lesson's packet
                    elif kept < whole:
                        append(Frame(mem[start:start + size], ns, wirelen))
                        kept += size + overhead
                    elif kept < limit:  # past the budget for whole frames: headers only
                        cut = headers_end(mem, start, size)
                        append(Frame(mem[start:start + cut], ns, wirelen))
                        kept += cut + overhead
                    else:
                        self.not_kept += 1
                        self.not_kept_bytes += wirelen
                mem[base + 8:base + 12] = b"\0\0\0\0"  # TP_STATUS_KERNEL: the kernel's again
                block, i, waited_after_stop, self.kept = (block + 1) % ring.blocks, 0, False, kept
                if bigger is not None:
                    if count and ns > bound_at:  # delivered after the bigger ring was bound,
                        ring, block = self._switch(ring, bigger, poller), 0  # so is all after
                        bigger = None
                        seen = seen if seen and seen.total() else None
                elif self._made is not None:  # a bigger ring is ready: bind it beside
                    bigger, bind_start, bound_at = self._grow()
                    seen, seen_until = (Counter(), 0) if bigger is not None else (None, 0)
                elif (seen is None and self._making is None and not self._cannot_grow
                      and ring.blocks < most_blocks
                      and (not status & TP_STATUS_BLK_TMO or _BLOCK.unpack_from(
                          mem, (block + ring.blocks // 8) % ring.blocks * BLOCK_SIZE + 8)[0]
                           & TP_STATUS_USER)):
                    # a block filled before its timer (25 MB/s or more), or an eighth of the
                    # ring waits to be read: have a bigger ring made now (its memory takes
                    # milliseconds to get, in which this one must hold what comes)
                    self._making = threading.Thread(
                        target=self._make_ring, args=(most_blocks,),
                        daemon=True, name=f"labkit capture ring on {self.iface}")
                    self._making.start()
        except BaseException as exc:  # noqa: BLE001 - reported on exit, never lost
            self.error = exc
            self._left_at = (block, i)
        finally:
            with self._changed:
                self._idle = True
                self._changed.notify_all()

    def _open_ring(self, blocks: int) -> _Ring:
        """A socket with our filter and a ring of ``blocks`` blocks, not bound yet."""
        # Protocol 0: the socket sees nothing until bound, so no stranger slips in before
        # the filter is attached.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            assert self._program is not None
            _attach_filter(sock, self._program)
            # Asking for stamps makes the kernel stamp each packet as it enters lo's queue,
            # the one stamp every tap sees (tcpdump's too) - but for TCP's packets, which
            # carry a departure time there: each tap stamps those as it receives them.
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            return _Ring(sock, _map_ring(sock, blocks), blocks)
        except BaseException:
            sock.close()
            raise

    def _make_ring(self, blocks: int) -> None:
        """(A thread of its own.)  Make a bigger ring for :meth:`_grow` to bind."""
        try:
            self._made = self._open_ring(blocks)
        except BaseException as exc:  # noqa: BLE001 - out of memory, say: stay small
            self._made = exc

    def _grow(self) -> tuple[_Ring | None, int, int]:
        """Bind the bigger ring made beside the current one, which is filling up;
        ``(ring, ns just before, ns just after)``, or None if it could not be made.

        From then on the kernel hands every packet to both.  The reader goes on with the
        old ring until it reaches packets stamped after that moment (or, if none come,
        until every block begun before it has retired), then moves to the new one and
        skips the packets it read already: the same length and first bytes, if stamped
        after the bind began.  A ring's memory is taken when it is made, so a capture
        starts small (a lesson's never fills ``RING_START``) and grows only when traffic
        needs it, up to its budget's ``ring_max``.
        """
        made, self._made = self._made, None
        if self._making is not None:
            self._making.join()  # (it has ended: it set _made)
        if not isinstance(made, _Ring):
            self._cannot_grow = made  # e.g. no memory for it: this ring will do
            return None, 0, 0
        self._bigger = made
        before = time.time_ns()
        made.sock.bind((self.iface, ETH_P_ALL))
        with self._ring_lock:
            assert self._sock is not None
            self._drops += _kernel_drops(self._sock)  # dropped before: lost.  Dropped from
        return made, before, time.time_ns()            # now on: the new ring has them

    def _switch(self, old: _Ring, new: _Ring, poller: select.poll) -> _Ring:
        """Read from the bigger ring from now on; close the old one."""
        with self._ring_lock:
            _kernel_drops(old.sock)  # what the old ring dropped since the new one was bound
            poller.unregister(old.sock)
            poller.register(new.sock, select.POLLIN)
            self._sock, self._ring, self._bigger = new.sock, new.map, None
            self.ring_size = new.blocks * BLOCK_SIZE
        self._making = None  # it may grow again
        old.map.close()
        old.sock.close()
        return new

    def _fence_read(self, payload: bytes) -> None:
        round_ = int(payload.split()[2])
        with self._changed:
            self._fences[round_] = self._fences.get(round_, 0) + 1
            self._changed.notify_all()

    def _send_fences(self, round_: int) -> int:
        """One fence datagram from each CPU we may run on: a CPU's backlog is one FIFO
        queue, so once every fence is read, so is every packet queued before them."""
        assert self._fence is not None
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except OSError:
            cpus = []
        if not cpus:
            self._send_fence(_FENCE % (round_, 0))
            return 1
        try:
            for cpu in cpus:
                os.sched_setaffinity(0, {cpu})  # this thread only (Linux)
                self._send_fence(_FENCE % (round_, cpu % 100))
        finally:
            os.sched_setaffinity(0, cpus)
        return len(cpus)

    def _send_fence(self, payload: bytes) -> None:
        if self._fence_out is None:  # lo: a datagram to ourselves
            assert self._fence is not None
            self._fence.sendto(payload, ("127.0.0.1", self._fence_port))
            return
        # Another interface (a lab host's link): the same datagram as a raw frame sent out
        # of it, which our socket reads as outgoing.  The far end drops it (a loopback
        # destination arriving from outside), so it never reaches anyone.
        port = self._fence_port.to_bytes(2, "big")
        udp = port + port + (8 + len(payload)).to_bytes(2, "big") + b"\0\0" + payload
        ip = (b"\x45\0" + (20 + len(udp)).to_bytes(2, "big") + b"\0\0\x40\0\x40\x11\0\0"
              + socket.inet_aton("127.0.0.1") * 2)
        self._fence_out.send(b"\0" * 12 + b"\x08\x00" + ip + udp)

    def is_ours(self, pkt: bytes | Packet) -> bool:
        """Does this frame (bytes, or a Scapy packet) belong to our endpoints?  The
        kernel's filter twin, in Python: an ICMP error is judged by the packet it quotes.
        With a tcpdump ``filter`` (no twin here) what the kernel's filter kept is ours."""
        if self.filter is not None:
            return True
        data = pkt if isinstance(pkt, bytes) else bytes(pkt)
        # The common case, IPv4 TCP/UDP with a 20-byte header, unfragmented: its protocol,
        # addresses and ports are 13 bytes in place, and a capture holds few distinct ones.
        simple = (data[12:15] == b"\x08\x00\x45" and data[23] in (6, 17)
                  and not (data[20] & 0x1F or data[21]))
        key = data[23:24] + data[26:38] if simple else data
        verdict = self._verdicts.get(key)
        if verdict is None:
            facts = flow(data)
            verdict = facts is not None and any(e.matches(*facts) for e in self.endpoints)
            if simple:
                self._verdicts[key] = verdict
        return verdict

    def _track(self) -> bool:
        """Feed the tracker what was read since; True when every TCP byte is acknowledged."""
        raw, add = self._raw, self.tracker.add_frame
        for i in range(self._tracked, len(raw)):
            add(raw[i].data)
        self._tracked = len(raw)
        return self.tracker.settled()

    def _drained(self) -> bool:
        return any(n >= self._round_size for n in self._fences.values())

    def settle(self, timeout: float) -> bool:
        """Read everything queued until now (bounded only against a hang), then wait up
        to ``timeout`` for the final ACKs of anything that needs one.  False: gave up."""
        if self._fence is None or self._thread is None:
            raise RuntimeError("settle() waits for packets of a started sniffer: start() first")
        round_, self._round_size = 0, self._send_fences(0)
        self._fences_sent = self._round_size
        progress, last = len(self._raw), time.monotonic()
        sent_at = last
        with self._changed:
            while not self._drained() and self._thread.is_alive():
                self._idle = False
                self._changed.wait(0.2)
                if len(self._raw) != progress:
                    progress, last = len(self._raw), time.monotonic()
                elif time.monotonic() - last > DRAIN_STALL:
                    break  # a hang, not a drain: stop() reads what is left
                elif (self._idle and self._sock is not None
                      and time.monotonic() - sent_at > 10 * RETIRE_MS / 1000):
                    # the ring is empty, every block since retired, and a fence is missing:
                    # the kernel dropped it (the ring was full).  Send the fences again.
                    with self._ring_lock:
                        if self._bigger is None:  # (while growing, the new ring has them)
                            self._drops += _kernel_drops(self._sock)
                    round_ += 1
                    self._fences_sent += self._send_fences(round_)
                    sent_at = time.monotonic()
            drained = self._drained()
            settled = self._changed.wait_for(self._track, timeout) if drained else False
        self.complete = self.complete and drained and settled
        return drained and settled

    def stop(self) -> None:
        """End the reader (bounded wait) after it has read everything queued, count what
        the kernel dropped, keep our frames; close both sockets.  Safe to repeat."""
        thread, self._thread = self._thread, None
        self._stopping = True
        if thread is not None:
            os.write(self._wake[1], b"!")
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                self.complete = False
                print(f"⚠ the capture's reader did not stop within {STOP_TIMEOUT}s: this "
                      "capture may be incomplete")
        if self.error is not None:
            self.complete = False
            print(f"⚠ the capture's reader stopped early after an error ({self.error!r}): "
                  "this capture is incomplete")
        sock, self._sock = self._sock, None
        unread = unread_fences = 0
        if sock is not None:
            if sock.fileno() != -1:
                self._drops += _kernel_drops(sock)
            if self.error is not None and self._ring is not None:
                unread, unread_fences = self._left_in_ring(self._ring)
            if self._ring is not None and (thread is None or not thread.is_alive()):
                self._ring.close()  # (a reader that never stopped may still touch it)
            sock.close()
        if self._making is not None:
            self._making.join(STOP_TIMEOUT)  # making a ring takes milliseconds
        for bigger in (self._bigger, self._made):
            if isinstance(bigger, _Ring) and (thread is None or not thread.is_alive()):
                bigger.map.close()  # a ring the reader was growing into when it ended
                bigger.sock.close()
        self._bigger = self._made = None
        if self._raw:
            self._keep_ours()
        fences_read = sum(self._fences.values())
        dropped_fences = self._fences_sent - fences_read - unread_fences
        self.lost = max(0, self._drops - dropped_fences) + unread
        if self.lost:
            self.complete = False
            print(lost_notice(self.lost))
        for fence in (self._fence, self._fence_out):
            if fence is not None:
                fence.close()
        self._fence = self._fence_out = None
        if self._wake[0] != -1 and (thread is None or not thread.is_alive()):
            os.close(self._wake[0])
            os.close(self._wake[1])
            self._wake = (-1, -1)

    def _left_in_ring(self, ring: mmap.mmap) -> tuple[int, int]:
        """``(packets, fences)`` a failed reader left in the ring, handed to us but unread."""
        block, skip = self._left_at
        packets = fences = 0
        for _ in range(len(ring) // BLOCK_SIZE):
            base = block * BLOCK_SIZE
            status, count, at = _BLOCK.unpack_from(ring, base + 8)
            if not status & TP_STATUS_USER:
                break
            at += base
            for i in range(count):
                step, _sec, _nsec, size, _len, mac = _LEFT.unpack_from(ring, at)
                port = int.from_bytes(ring[at + mac + 36:at + mac + 38], "big")
                if i >= skip:
                    is_fence = size == _FENCE_LEN and port == self._fence_port
                    fences, packets = fences + is_fence, packets + (not is_fence)
                at += step
            block, skip = (block + 1) % (len(ring) // BLOCK_SIZE), 0
        return packets, fences

    def _keep_ours(self) -> None:
        self.frames.extend(frame for frame in self._raw if self.is_ours(frame.data))
        self._raw = []
