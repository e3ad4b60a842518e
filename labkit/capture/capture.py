"""Capture what crossed the loopback interface, or replay a recording of it.

    >>> with TCPServer() as server, Capture(server, name="hello") as wire:
    ...     with socket.create_connection(server.address) as s:
    ...         s.sendall(b"hello"); s.recv(1024)
    >>> wire.table(); wire.ladder(); wire.save("hello.pcapng")

Modes (``LABKIT_CAPTURE``, or chosen by :func:`capture_mode`):

* ``live``   - a raw socket reads ``lo`` (BPF in the kernel); needs CAP_NET_RAW.  Nothing
  is missed silently: ``wire.lost`` counts what the kernel dropped, and every view says it.
  A capture holds at most ``memory`` bytes (256 MB unless told): past that it keeps
  packets' headers only, then nothing, and every view says which (see ``budget``).
* ``replay`` - no privilege: the packet views show ``data/<name>.pcapng``, recorded by
  ``python -m labkit record`` running the same notebook cell.  Servers still run live.
* ``record`` - live, and the capture is also written to ``data/`` for replay mode.

Replay never passes a recording off as the student's run.  A recording's ``.json``
keeps a summary of its conversation (per server: payload bytes each way per TCP
connection, UDP datagram sizes each way, a digest of what clients sent), and lab
servers count the same things live (``server.conversation()``).  When a replayed
``with`` block ends, the two are compared: ``wire.matches_recording`` is True or
False, and a difference is printed in one line (``wire.difference``): bytes, connections,
datagrams, how each side's bytes were split into segments, how long connections lasted.
Every view of that capture then says so too (``wire.notice``): table, ladder (in the
figure), ``connections()``, and ``wire.segments`` / ``wire.packets``, which print it once
per cell.  It is None (nothing said) when a watched target cannot count - a port number,
or a server labkit does not run the I/O for (BackgroundServer, serve_in_thread,
WSGIServer, WebSocketServer, UDPRelay).  ``wire.live_summary`` is what the servers saw.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Collection
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from labkit.capture.budget import DEFAULT_MEMORY, MemoryBudget
from labkit.capture.endpoints import watch
from labkit.capture.frames import Frames
from labkit.servers import arguments

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from scapy.plist import PacketList

    from labkit.capture.flows import Segment, Segments
    from labkit.capture.live import LiveSniffer
    from labkit.views.connections import Connections
    from labkit.views.table import Rows, Table

__all__ = ["Capture", "capture_mode", "DATA_DIR"]

DATA_DIR = Path(os.environ.get("LABKIT_DATA", Path(__file__).resolve().parents[2] / "data"))
MODES = ("auto", "live", "replay", "record")
SETTLE_TIMEOUT = 2.0  # seconds to wait for final ACKs on exit, once everything queued is read
ONE_BLOCK = "a Capture records one `with` block; create a new Capture(...) for another"
LIVE_HOW = "run with the lab kernel to see your own packets (`python -m labkit doctor` says how)"
# What every view of a replayed capture says when the student's run was not the recording.
REPLAY_NOTICE = ("⚠ These packets are a recording, not your run: {}. To see your own, use the "
                 "lab kernel (`python -m labkit doctor` says how).")


def _current_cell() -> int | None:
    """The running notebook cell's number (IPython), else None: a notice said once per cell."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    cell: int | None = getattr(shell, "execution_count", None)
    return cell


def capture_mode() -> tuple[str, str]:
    """Return ``(mode, reason)``: which capture mode applies here, and why."""
    wanted = os.environ.get("LABKIT_CAPTURE", "auto").strip().lower() or "auto"
    if wanted not in MODES:
        raise ValueError(
            f"LABKIT_CAPTURE={wanted!r} is not a capture mode; use one of {', '.join(MODES)}"
        )
    if wanted == "replay":
        return "replay", "LABKIT_CAPTURE=replay asks for recordings"
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
    except PermissionError:
        if wanted != "auto":
            raise PermissionError(
                f"LABKIT_CAPTURE={wanted} needs CAP_NET_RAW to sniff packets, which the lab "
                "kernel 'Python 3 (netlab)' has in its own network; this kernel has not "
                "(`python -m labkit doctor` says why and what to change), so use the lab "
                "kernel, or unset LABKIT_CAPTURE to fall back to recordings"
            ) from None
        return "replay", "this kernel may not open raw sockets (no CAP_NET_RAW)"
    if wanted == "record":
        return "record", "LABKIT_CAPTURE=record writes recordings to data/"
    return "live", "this Python may open raw sockets (CAP_NET_RAW)"


class Capture:
    """Packets exchanged with the given servers (or ports), as table, ladder or pcapng.

    A server is watched by protocol, address and port: packets that only share its
    port number stay out.  A bare port number (or ``{port: name}``) watches TCP and
    UDP on any address; ``protocol="tcp"`` or ``"udp"`` narrows it.  ICMP errors
    quoting a watched packet (e.g. port unreachable) are captured too.

    ``filter`` (a tcpdump expression, e.g. ``"arp or icmp"``; ``""``: every packet) keeps
    what it matches too, with or without targets: on a lab host's interface it shows
    the network layer (``LabNetwork.capture`` labels its rows by host).

    ``name`` names the recording shown in replay mode (``data/<name>.pcapng``).
    ``memory``: the most it holds, in bytes (ring and frames; see
    :mod:`labkit.capture.budget`); past it, packets keep their headers only, and every
    view says so.
    ``keylog`` is a TLS key log file (``SSLContext.keylog_filename``): read on exit into
    ``meta["tls_keylog"]``, it decrypts TLS in the views and travels with recordings.
    A Capture records one ``with`` block; entering it again raises RuntimeError.

    In replay mode, ``matches_recording`` says whether the servers saw the conversation
    the recording shows (None: cannot tell), ``difference`` what differs, in words.
    ``notice`` is what every view says first (None: nothing to say).

    Attributes:
        name: the recording's name (``data/<name>.pcapng``), None if not recorded
        mode: ``"live"``, ``"replay"`` or ``"record"`` (see :func:`capture_mode`)
        reason: why that mode, in words
        iface: the interface it reads (``"lo"``, or a lab host's ``"eth0"``)
        roles: the name each watched port gets in tables and ladders: ``{8080: "server"}``
        filter: the tcpdump expression it keeps packets by (None: its targets' packets)
        complete: False if packets were lost, or the end gave up waiting for the last ones
        lost: packets the kernel dropped before the capture read them (live)
        memory_notice: what the memory limit left out, in words (None: nothing)
        budget: the memory it may hold, and what happens past it (a ``MemoryBudget``)
        keylog: the TLS key log file it reads on exit (None: none)
        meta: what goes with a recording, e.g. ``meta["tls_keylog"]``
        matches_recording: replay: did the servers see what the recording shows? (None:
            cannot tell)
        difference: replay: what differs from the recording, in words (None: nothing)
        live_summary: replay: what each lab server saw, ``{server name: counts}``
    """

    def __init__(self, *targets: object, name: str | None = None, iface: str = "lo",
                 keylog: str | os.PathLike[str] | None = None, protocol: str | None = None,
                 filter: str | None = None, memory: int = DEFAULT_MEMORY) -> None:
        arguments.recording_name(name)
        arguments.instance(iface, "iface", str, "an interface name", "'lo' or 'eth0'")
        if keylog is not None:
            arguments.path(keylog, "keylog", "'keys.log'")
        if filter is not None:
            arguments.instance(filter, "filter", str,
                               "a tcpdump expression ('' for every packet)", "'arp or icmp'")
        self.filter = filter
        self.budget = MemoryBudget(memory)  # checks it
        self.roles, self._endpoints = watch(targets, protocol, needed=filter is None)
        self._targets = targets
        self.name = name
        self.iface = iface
        self.mode, self.reason = capture_mode()
        self.meta: dict[str, Any] = {}  # saved beside a recording (e.g. a TLS key log)
        self.keylog = keylog       # path of a TLS key log to read on exit (live modes)
        self.complete = True       # False if packets were lost or the exit gave up waiting
        self.lost = 0              # packets the kernel dropped before the capture read them
        self.memory_notice: str | None = None  # what the memory limit left out (live)
        # Replay mode: did labkit's servers see the conversation the recording shows?
        # True / False, or None when that cannot be told (see the module docstring).
        self.matches_recording: bool | None = None
        self.live_summary: dict[str, dict[str, Any]] | None = None  # {server: its entry}
        self.difference: str | None = None      # what differs, in words
        self._replay_notice: str | None = None  # REPLAY_NOTICE, when it differs
        self._notice_said_in: object = ()       # the cell that last printed it
        # the targets that count what they saw (lab servers: conversation(), a name, a port)
        self._talkers: list[Any] = [t for t in targets
                                    if callable(getattr(t, "conversation", None))]
        self._marks: list[Any] = []             # where each server's count started
        self._recorded_summary: dict[str, dict[str, Any]] = {}
        self._frames = Frames()  # bytes as read; Scapy packets made when a view asks
        self._segments: list[Segment] | None = None  # made by the first view that asks
        self._live: LiveSniffer | None = None  # live modes: made on entry
        self._state_lock = threading.Lock()
        self._state = "new"  # -> "running" -> "stopping" -> "done"; never back

    # -- starting and stopping ------------------------------------------------
    @property
    def bpf(self) -> str:
        """The kernel's filter (live modes): our endpoints, ICMP errors quoting them."""
        from labkit.capture.live import LiveSniffer

        return (self._live or LiveSniffer(self.iface, self._endpoints, filter=self.filter)).bpf

    @property
    def recording(self) -> Path | None:
        """The recording's file, ``data/<name>.pcapng`` (None for a capture with no name)."""
        return DATA_DIR / f"{self.name}.pcapng" if self.name else None

    def __enter__(self) -> Capture:
        with self._state_lock:  # one block per Capture: a second sniffer would leak
            if self._state != "new":
                where = "is already recording" if self._state == "running" else "has ended"
                raise RuntimeError(f"this Capture {where}: {ONE_BLOCK}")
            self._state = "running"
        if self.mode == "replay":
            if self.recording is None:
                print(f"▶ replay: nothing to show — this capture has no name, so no recording "
                      f"goes with it ({self.reason}); {LIVE_HOW}, or name it, "
                      "e.g. Capture(server, name=\"my-try\"), and record it with "
                      "`python -m labkit record`")
                return self
            shown = self.recording.relative_to(DATA_DIR.parent)
            print(f"▶ replay: showing the recording {shown} ({self.reason}); "
                  "for live capture see `python -m labkit doctor`")
            if len(self._talkers) == len(self._targets):  # every target can count
                self._marks = [t.conversation_mark() for t in self._talkers]
            return self
        from labkit.capture.live import LiveSniffer  # raw sockets: live modes only

        self._live = live = LiveSniffer(self.iface, self._endpoints, budget=self.budget,
                                        filter=self.filter)
        try:
            live.start()
        except BaseException:
            live.stop()  # no thread or raw socket outlives a failed start
            self._state = "done"
            raise
        watched = [f"{n} port {p}" for p, n in self.roles.items()]
        if self.filter is not None:
            watched.append(f"filter {self.filter!r}" if self.filter.strip() else "every packet")
        where = self.meta.get("where", self.iface)  # a lab host's capture: "r1 eth1"
        print(f"● live capture on {where}: {', '.join(watched)}")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        with self._state_lock:
            if self._state == "new":
                raise RuntimeError("this Capture was never entered: use it as "
                                   "`with Capture(server) as wire:`")
            if self._state != "running":
                return False  # already stopped (an explicit second __exit__)
            self._state = "stopping"
        if self.mode == "replay":
            self._state = "done"
            if exc_type is None:  # a block that raised did not do what was recorded
                self._load_recording()
                self._compare_with_recording()
            return False
        live = self._live
        assert live is not None  # made on entry in the live modes
        try:
            live.settle(0.2 if exc_type else SETTLE_TIMEOUT)
        finally:
            live.stop()  # prints the lost count, if any
            self._frames = Frames(live.frames)
            self.complete = live.complete and not live.not_kept
            self.lost = live.lost
            self.memory_notice = self.budget.notice(live.frames, live.not_kept,
                                                    live.not_kept_bytes)
            self._live = None  # its rings are closed: nothing of it is needed any more
            self._state = "done"
        if self.memory_notice:
            print(self.memory_notice)
        if self.keylog is not None:
            self._read_keylog()
        if self.mode == "record" and self.recording is not None:  # only a named one records
            if self.memory_notice:  # a recording shows a whole conversation, or nothing
                print(f"⚠ not recorded to {self.recording.name}: this capture did not keep "
                      "every packet whole (a lesson's recording must)")
            else:
                self._save_recording(self.recording)
        return False

    def _read_keylog(self) -> None:
        from labkit.protocols.tlsdissect import keylog_for

        assert self.keylog is not None  # (only called with one)
        path = Path(self.keylog)
        text = path.read_text() if path.exists() else ""
        self.meta["tls_keylog"] = keylog_for(self._frames, text)  # this capture's sessions only
        self._segments = None  # decrypted from now on

    # -- recordings -------------------------------------------------------------
    def _save_recording(self, path: Path) -> None:
        from labkit.capture import recording

        recording.save(path, self._frames, self.roles, self.meta, iface=self.iface)

    def _load_recording(self) -> None:
        from labkit.capture import recording

        if self.recording is None:
            return  # said so on entry
        packets, self.roles, self._recorded_summary, self.meta = recording.load(self.recording)
        self._frames = Frames.of_packets(packets)
        self._segments = None

    def _compare_with_recording(self) -> None:
        """Set matches_recording and live_summary; print one line if the runs differ."""
        from labkit.capture.recording import difference, merge

        if not self._marks or self.recording is None or not self.recording.exists():
            return  # some target cannot count, or nothing was shown
        live: dict[str, dict[str, Any]] = {}
        for server, mark in zip(self._talkers, self._marks, strict=True):
            entry = server.conversation(mark, settle=SETTLE_TIMEOUT)
            if entry is None:
                return  # this server cannot tell: no comparison, no claim
            live[server.name] = merge(live.get(server.name), entry)
        self.live_summary = live
        recorded = self._recorded_summary
        if set(live) <= set(recorded):  # compare the same servers (a relay adds its target)
            recorded = {name: recorded[name] for name in live}
        self.difference = difference(list(live.values()), list(recorded.values()))
        self.matches_recording = self.difference is None
        moved = [f"your {server.name} listens on port {server.port}, the recording's on {port}"
                 for server in self._talkers for port, name in self.roles.items()
                 if name == server.name and port != server.port
                 and min(port, server.port) < 1024]  # a well-known port: textbook_port()
        if self.difference and moved:  # a URL or Host header that names the port changes bytes
            self.difference += f" ({'; '.join(moved)})"
        if self.difference:
            self._replay_notice = REPLAY_NOTICE.format(self.difference)
            self._notice_said_in = _current_cell()
            print(self._replay_notice)

    # -- what the student looks at ---------------------------------------------------
    def _require_finished(self) -> None:
        if self._state == "new":
            raise RuntimeError("this Capture has not run yet: use it as "
                               "`with Capture(server) as wire:`, then look at wire")
        if self._state != "done":
            raise RuntimeError("the capture is still running: look at it after its `with` block")

    @property
    def packets(self) -> PacketList:
        """The captured packets (a Scapy PacketList), one copy each, in arrival order.
        A replay unlike the student's run says so (once per cell)."""
        from scapy.plist import PacketList

        self._require_finished()
        self._say_replay_notice()
        return PacketList(list(self._frames), name=self.name or "capture")

    @property
    def segments(self) -> Segments:
        """Each packet as a :class:`Segment`: roles, flags, relative seq/ack, length, summary.

        A list that carries :attr:`notice` (``Table(wire.segments)`` shows it); a replay
        unlike the student's run says so when read (once per cell).
        """
        from labkit.capture.flows import Segments

        segs = Segments(self._all_segments(), notice=self.notice)
        self._say_replay_notice()
        return segs

    def _all_segments(self) -> list[Segment]:
        from labkit.capture.flows import segments  # Scapy loads on first look, not on import

        self._require_finished()
        if self._segments is None:  # once: a finished capture does not change, and every
            # view needs it.  From the frames' bytes: Scapy dissects only what a view needs
            self._segments = segments(self._frames, self.roles, self.meta)
        return self._segments

    def _say_replay_notice(self) -> None:
        """Print the replay notice where code reads the recording's packets: once a cell."""
        if self._replay_notice is None:
            return
        cell = _current_cell()
        if cell != self._notice_said_in:
            self._notice_said_in = cell
            print(self._replay_notice)

    @property
    def notice(self) -> str | None:
        """What every view says first (None: nothing): packets lost, packets the memory
        limit left out, a recording that is not the student's run.  One line each."""
        from labkit.capture.live import lost_notice

        lines = [lost_notice(self.lost) if self.lost else None, self.memory_notice,
                 self._replay_notice]
        return "\n".join(line for line in lines if line) or None

    def table(self, *, start: int = 0, stop: int | None = None, rows: Rows = None,
              connection: int | None = None, packets: Rows = None) -> Table:
        """One row per packet: the first 200, or the ones ``rows`` picks.

        ``rows`` is a slice, range or list of row numbers, the ``#`` column (``start``/
        ``stop`` are ``rows=slice(start, stop)``); ``connection=2`` shows connection 2's
        packets only, numbered as in :meth:`connections`.  (``packets=`` is the old name
        of ``rows=``: ``wire.packets`` is Scapy's packet list.)
        """
        from labkit.views.table import Table, rows_or_packets

        chosen = self._rows(start, stop, rows_or_packets(rows, packets, "table"))
        segs, which = self._chosen(connection)
        note = "\n".join(line for line in (self.notice, which) if line) or None
        return Table(segs, rows=chosen, note=note)

    def ladder(self, *, start: int = 0, stop: int | None = None, rows: Rows = None,
               connection: int | None = None, title: str | None = None,
               lost: Collection[int] = (), page: int | None = None,
               warning: str | None = None, packets: Rows = None) -> Figure:
        """A sequence diagram of the packets (a matplotlib Figure): the first 40 at most,
        or the ones ``rows`` picks (as in :meth:`table`); ``page=2`` the second slide's
        worth of them; ``connection=2`` draws connection 2 alone (:meth:`connections`
        numbers them); ``lost``: indexes of packets a lab link dropped, drawn ending
        half-way at a ✗; ``warning``: written across the top with the capture's own
        notice (``net.too_busy()``, say)."""
        from labkit.views.ladder import ladder
        from labkit.views.table import rows_or_packets

        chosen = self._rows(start, stop, rows_or_packets(rows, packets, "ladder"))
        segs, which = self._chosen(connection)
        notice = "\n".join(text for text in (self.notice, warning) if text) or None
        return ladder(segs, title=title, rows=chosen, note=which, warning=notice,
                      lost=lost, page=page, order=self.meta.get("lifelines"))

    def connections(self) -> Connections:
        """One row per TCP connection or UDP conversation: handshake time, bytes each way,
        packets, duration and how it ended; ``wire.ladder(connection=n)`` draws one."""
        from labkit.views.connections import Connections

        return Connections(self._all_segments(), note=self.notice)

    def _chosen(self, connection: int | None) -> tuple[list[Segment], str | None]:
        """The packets to show, and which connection they are (None: all of them)."""
        if connection is None:
            return self._all_segments(), None
        from labkit.views.connections import connection_segments

        segs, conn = connection_segments(self._all_segments(), connection)
        return segs, f"{conn} ({len(segs)} packets)"

    @staticmethod
    def _rows(start: int, stop: int | None, rows: Rows) -> Rows:
        if rows is not None and (start, stop) != (0, None):
            raise ValueError("pass rows= or start=/stop=, not both "
                             "(rows=slice(start, stop) is the same as start=, stop=)")
        return slice(start, stop) if (start, stop) != (0, None) else rows

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the packets as pcapng (opens in Wireshark); returns the path.

        One interface (``lo``), the kernel's timestamps to the nanosecond, each frame
        whole with its original length.  With a TLS key log (``meta["tls_keylog"]``)
        the file embeds it in a Decryption Secrets Block, so Wireshark and tshark
        decrypt the TLS with no settings.
        """
        self._require_finished()
        path = Path(arguments.path(path, "path", "'handshake.pcapng'"))
        if path.suffix != ".pcapng":
            raise ValueError(
                f"save() writes pcapng: give a path ending in .pcapng, not {path.name!r}")
        from labkit.capture.pcapng import write

        return write(path, self._frames.frames, iface=self.iface,
                     keylog=self.meta.get("tls_keylog") or "")

    def __len__(self) -> int:
        return len(self._frames)

    def __repr__(self) -> str:
        said = f" ({self.notice})" if self.notice else ""
        return f"<Capture {self.mode} {self.name or ''} {len(self._frames)} packets{said}>"
