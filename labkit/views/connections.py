"""One row per connection: the view of a capture too big for a ladder.

    >>> Connections(wire.segments)        # text, and HTML in Jupyter
    #  proto  client → server     handshake  bytes →  bytes ←  packets  duration   ended
    -  -----  ------------------  ---------  -------  -------  -------  ---------  -----
    1  TCP    client → server     0.08 ms    5        5        10       1.20 ms    FIN
    >>> connection_segments(wire.segments, 2)      # the packets of connection 2

Connections are numbered from 1 in the order of their first packet; a TCP connection
is one pair of endpoints from a SYN on (a new SYN on the same pair after the first
one's end is a new connection), a UDP conversation one pair of endpoints.  Built from
the :class:`~labkit.capture.flows.Segment` list alone: nothing is dissected again.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from labkit.views.table import COLORS, html_notes, html_table, pick, text_table, with_notice

if TYPE_CHECKING:
    from labkit.capture.flows import Segment

__all__ = ["Connection", "Connections", "connections", "connection_segments"]

COLUMNS = ("#", "proto", "client → server", "handshake", "bytes →", "bytes ←", "packets",
           "duration", "ended")
MAX_ROWS = 200


@dataclass
class Connection:
    """What one TCP connection (or UDP conversation) did, from its segments.

    Attributes:
        number: its number in the capture, from 1, in the order of first packets
        proto: ``"TCP"`` or ``"UDP"``
        client: the role that sent the SYN (or the first datagram)
        server: the role it talked to
        segments: its packets, in order
        handshake: seconds from the SYN to the ACK of the SYN-ACK (None: not seen)
        sent: payload bytes client → server (retransmissions included)
        received: payload bytes server → client (retransmissions included)
        fins: the roles that sent a FIN
        reset: True if a RST ended it
    """

    number: int
    proto: str
    client: str
    server: str
    segments: list[Segment] = field(default_factory=list, repr=False)
    handshake: float | None = None
    sent: int = 0
    received: int = 0
    fins: set[str] = field(default_factory=set, repr=False)
    reset: bool = False
    _syn_time: float | None = field(default=None, repr=False)
    _syn_ack_seen: bool = field(default=False, repr=False)

    @property
    def start(self) -> float:
        """When its first packet came: seconds since the capture's first."""
        return float(self.segments[0].time)

    @property
    def duration(self) -> float:
        """Seconds from its first packet to its last."""
        return float(self.segments[-1].time - self.segments[0].time)

    @property
    def ended(self) -> str:
        """How it ended: RST, FIN (both ways), FIN (one way: half-closed), open; UDP: —."""
        if self.proto != "TCP":
            return "—"
        if self.reset:
            return "RST"
        if len(self.fins) >= 2:
            return "FIN"
        return f"FIN from {next(iter(self.fins))} only" if self.fins else "open"

    def add(self, seg: Segment) -> None:
        """Count one more of its packets in (they come in order)."""
        self.segments.append(seg)
        if seg.src == self.client:
            self.sent += seg.length
        else:
            self.received += seg.length
        flags = seg.flags.split("-") if seg.proto == "TCP" else []
        if "RST" in flags:
            self.reset = True
        if "FIN" in flags:
            self.fins.add(seg.src)
        if "SYN" in flags:
            if "ACK" in flags:
                self._syn_ack_seen = True
            elif self._syn_time is None:
                self._syn_time = seg.time
        elif ("ACK" in flags and seg.src == self.client and self._syn_ack_seen
              and self.handshake is None and self._syn_time is not None):
            self.handshake = seg.time - self._syn_time

    def row(self) -> list[str]:
        """Its row of the connections table, as text."""
        hand = "—" if self.handshake is None else f"{self.handshake * 1000:.2f} ms"
        return [str(self.number), self.proto, f"{self.client} → {self.server}", hand,
                str(self.sent), str(self.received), str(len(self.segments)),
                f"{self.duration * 1000:.2f} ms", self.ended]

    def __str__(self) -> str:
        return f"connection {self.number}: {self.proto} {self.client} → {self.server}"


def _pure_syn(seg: Segment) -> bool:
    return seg.proto == "TCP" and "SYN" in seg.flags.split("-") and "ACK" not in seg.flags


def connections(segs: Iterable[Segment]) -> list[Connection]:
    """Group segments into connections, numbered from 1 by first packet (ICMP left out)."""
    out: list[Connection] = []
    # (proto, pair of roles) -> its latest connection
    current: dict[tuple[str, frozenset[str]], Connection] = {}
    for seg in segs:
        if seg.proto not in ("TCP", "UDP"):
            continue
        key = (seg.proto, frozenset((seg.src, seg.dst)))
        conn = current.get(key)
        if conn is None or (_pure_syn(seg) and not all(map(_pure_syn, conn.segments))):
            # a first packet, or a SYN after this pair's connection had got going (port reuse)
            client, server = seg.src, seg.dst
            if not _pure_syn(seg) and server.startswith("client") and \
                    not client.startswith("client"):
                client, server = server, client  # caught mid-way: the client is the client
            conn = current[key] = Connection(len(out) + 1, seg.proto, client, server)
            out.append(conn)
        conn.add(seg)
    return out


def connection_segments(segs: Iterable[Segment], number: int
                        ) -> tuple[list[Segment], Connection]:
    """The segments of connection ``number`` (as numbered by :func:`connections`)."""
    found = connections(segs)
    if isinstance(number, bool) or not isinstance(number, int):
        raise TypeError(f"connection= takes a connection number (1, 2, …), "
                        f"not {type(number).__name__}")
    if not 1 <= number <= len(found):
        have = f"1 to {len(found)}" if found else "none"
        raise ValueError(f"connection={number}: this capture's connections are numbered "
                         f"{have}; wire.connections() lists them")
    conn = found[number - 1]
    return conn.segments, conn


class Connections:
    """One row per connection, text and HTML (see the module docstring).

    Attributes:
        connections: every :class:`Connection`, numbered from 1
        shown: the connections the table shows (the first ``MAX_ROWS``)
        rows: the table's cells as text, one list per shown connection
        note: the lines over the table: the capture's notice, then ``note`` (None: none)
        more: the line under the table saying how many were left out (None: none were)
    """

    def __init__(self, segs: Iterable[Segment], *, limit: int | None = MAX_ROWS,
                 note: str | None = None) -> None:
        self.note = with_notice(segs, note)  # shown first, e.g. that packets were lost
        self.connections = connections(segs)
        self.shown, self.more = pick(self.connections, None, limit=limit)
        if self.more:
            self.more = (f"… {len(self.connections) - len(self.shown)} more connections; "
                         "wire.connections().connections lists them all")
        self.rows = [conn.row() for conn in self.shown]

    def __len__(self) -> int:
        return len(self.connections)

    def __getitem__(self, number: int) -> Connection:
        """``summary[2]`` is connection 2, numbered as in the table."""
        if not 1 <= number <= len(self.connections):
            raise IndexError(f"connections are numbered 1 to {len(self.connections)}, "
                             f"not {number}")
        return self.connections[number - 1]

    def __str__(self) -> str:
        text = text_table(COLUMNS, self.rows, empty="(no connections)")
        return "\n".join(line for line in (self.note, text, self.more) if line)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colors = [COLORS["RST"] if c.reset else COLORS["UDP"] if c.proto == "UDP"
                  else COLORS["data"] for c in self.shown]
        table = html_table(COLUMNS, self.rows, colors, empty="(no connections)")
        return (html_notes(self.note) + table
                + (f"<p><em>{html.escape(self.more)}</em></p>" if self.more else ""))
