"""Time-sequence graphs (Stevens, tcptrace): how one direction of a TCP transfer went.

Time runs to the right, the sequence number (bytes into the stream) upwards.  Each data
segment is a short vertical bar from its first byte to its last; the ACK line is what the
receiver has acknowledged so far, the window line how far it lets the sender go.  A
steady transfer is a staircase climbing between those two lines; a lost segment leaves a
flat ACK line, duplicate ACKs piling up on it, and a retransmission (red) back down at the
old sequence number.

    >>> trace = seq_trace(wire.segments)            # the facts, for asserts
    >>> trace.retransmissions[0].seq, trace.recovery()
    (14481, ['fast retransmit'])
    >>> trace.reported_beyond(trace.retransmissions[0])   # segments past the hole, by SACK
    3
    >>> time_sequence(wire.segments, lost=dropped_segments(wire.segments, [3, 17]))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure

from labkit.capture.flows import Segment
from labkit.views.plotting import plt, show_notice

__all__ = ["SeqTrace", "DataPoint", "AckPoint", "seq_trace", "time_sequence",
           "dropped_segments", "DUP_ACK_THRESHOLD", "MIN_RTO"]

# RFC 5681: the third duplicate ACK triggers fast retransmit; with SACK (RFC 6675, and
# Linux) three segments reported past the hole, however many ACKs reported them
DUP_ACK_THRESHOLD = 3
MIN_RTO = 0.2           # Linux's smallest retransmission timeout (TCP_RTO_MIN), seconds


@dataclass(frozen=True)
class DataPoint:
    """One data segment the sender sent: bytes ``seq`` to ``end - 1``."""
    index: int             # the Segment's index in the capture
    t: float
    seq: int
    end: int
    retransmission: bool   # some of these bytes were sent before
    lost: bool = False     # the link dropped it (known only from the link's trace)


@dataclass(frozen=True)
class AckPoint:
    """One segment from the receiver: what it acknowledged, and the window it offered."""
    index: int
    t: float
    ack: int
    window_edge: int       # ack + advertised window (scaled): the sender may send below it
    # a pure ACK repeating the previous ACK number while data is outstanding: a hole is
    # waiting. Without SACK, as Linux's sender counts them (RFC 5681 much the same): no
    # bigger window and the receiver's own sequence number unchanged, or it is a window
    # update. With SACK (whose blocks the sender counts instead) the window may shrink
    # while the receiver's out-of-order queue fills: any window.
    duplicate: bool
    sacked: tuple[tuple[int, int], ...] = ()   # SACK blocks (relative: first, just past last)


@dataclass
class SeqTrace:
    """The facts a time-sequence graph draws, for one direction of one connection."""
    sender: str
    receiver: str
    data: list[DataPoint] = field(default_factory=list)
    acks: list[AckPoint] = field(default_factory=list)
    sack: bool = False   # both ends offered SACK in their SYNs: the ACKs may carry blocks

    @property
    def retransmissions(self) -> list[DataPoint]:
        return [d for d in self.data if d.retransmission]

    @property
    def lost(self) -> list[DataPoint]:
        return [d for d in self.data if d.lost]

    @property
    def duplicate_acks(self) -> list[AckPoint]:
        return [a for a in self.acks if a.duplicate]

    @property
    def bytes_delivered(self) -> int:
        return max((a.ack for a in self.acks), default=0)

    def _since_sent(self, retx: DataPoint) -> list[AckPoint]:
        """The ACKs that came since these bytes were last sent, up to the resend (captured
        before it), not yet acknowledging them."""
        before = [d.t for d in self.data if d.seq == retx.seq and d.t < retx.t
                  and d.index < retx.index]
        since = before[-1] if before else 0.0
        return [a for a in self.acks
                if a.ack <= retx.seq and since <= a.t <= retx.t and a.index < retx.index]

    def dup_acks_before(self, retx: DataPoint) -> int:
        """Duplicate ACKs asking for ``retx.seq`` since these bytes were last sent."""
        return sum(1 for a in self._since_sent(retx) if a.duplicate and a.ack == retx.seq)

    def reported_beyond(self, retx: DataPoint) -> int:
        """Segments past ``retx`` the receiver had reported received before it was resent:
        what Linux (and RFC 6675) count to decide a fast retransmit.  With SACK, the
        segments the ACKs' SACK blocks covered past it (one ACK may report several: a
        busy receiver sends one ACK for a batch; and a second hole in the same window is
        reported by the ACKs still asking for the first); without SACK, the duplicate
        ACKs asking for it."""
        if not self.sack:
            return self.dup_acks_before(retx)
        mss = max(d.end - d.seq for d in self.data)
        beyond = max((sum(max(0, right - max(left, retx.end)) for left, right in a.sacked)
                      for a in self._since_sent(retx)), default=0)
        return -(-beyond // mss)   # a partly filled segment is a segment

    def recovery(self) -> list[str]:
        """How each retransmission was triggered: ``'fast retransmit'`` (the receiver had
        reported 3+ segments past it: :meth:`reported_beyond`), ``'timeout'`` (no ACK of new
        data for ``MIN_RTO`` before it: the sender's timer ran out) or ``'early retransmit'``
        (ACKs came, but reported fewer: Linux acted on a partial ACK, RACK's clock
        (RFC 8985) or a tail loss probe)."""
        return [self.how(r) for r in self.retransmissions]

    def how(self, retx: DataPoint) -> str:
        """What triggered one retransmission (the kinds :meth:`recovery` names)."""
        if self.reported_beyond(retx) >= DUP_ACK_THRESHOLD:
            return "fast retransmit"
        # the timer restarts when an ACK acknowledges new data; duplicate ACKs and the
        # receiver's own data (an echo) repeating an old ACK number leave it running
        highest, restarted = 0, None
        for a in self.acks:
            if a.t > retx.t or a.index > retx.index:
                break
            if a.ack > highest:
                highest, restarted = a.ack, a.t
        if restarted is None or retx.t - restarted >= MIN_RTO:
            return "timeout"
        return "early retransmit"

    def repairs(self) -> list[tuple[DataPoint, DataPoint]]:
        """Each segment the link dropped, with the retransmission that repaired it:
        ``for lost, resent in trace.repairs(): ...`` (no loss, no pairs)."""
        return [(d, self.repair(d)) for d in self.lost]

    def repair(self, lost: DataPoint) -> DataPoint:
        """The first retransmission of the bytes ``lost`` carried (a lost segment's repair)."""
        for d in self.retransmissions:
            if d.t > lost.t and d.seq <= lost.seq < d.end:
                return d
        raise ValueError(f"bytes {lost.seq} to {lost.end - 1} were never sent again")


def _syn_options(segs: list[Segment]) -> dict[str, dict[str, Any]]:
    """Each role's TCP options in its SYN (or SYN-ACK), by name."""
    from scapy.layers.inet import TCP

    offered: dict[str, dict[str, Any]] = {}
    for seg in segs:
        if seg.proto == "TCP" and "SYN" in seg.flags and seg.packet is not None:
            offered[seg.src] = {k: v for k, v in seg.packet[TCP].options if isinstance(k, str)}
    return offered


def _window_scale(offered: dict[str, dict[str, Any]], role: str) -> int:
    """The window scale ``role`` announced in its SYN (RFC 7323), if both sides did."""
    scales = {who: options.get("WScale") for who, options in offered.items()}
    if len(scales) == 2 and None not in scales.values():
        return int(scales[role] or 0)
    return 0


def _sack_blocks(seg: Segment, base: int | None) -> tuple[tuple[int, int], ...]:
    """``seg``'s SACK blocks in relative numbers (``base``: the sender's ISN)."""
    from scapy.layers.inet import TCP

    if base is None or seg.packet is None:
        return ()
    edges = next((v for k, v in seg.packet[TCP].options if k == "SAck"), ())
    return tuple(((left - base) % 2**32, (right - base) % 2**32)
                 for left, right in zip(edges[::2], edges[1::2], strict=True))


def _sender(segs: list[Segment]) -> str:
    """The role that sent the most payload bytes."""
    sent: dict[str, int] = {}
    for seg in segs:
        if seg.proto == "TCP":
            sent[seg.src] = sent.get(seg.src, 0) + seg.length
    if not sent or not max(sent.values()):
        raise ValueError("no TCP data in these segments: a time-sequence graph needs a "
                         "capture of a TCP transfer")
    return max(sent, key=lambda role: sent[role])


def seq_trace(segs: list[Segment], *, sender: str | None = None,
              lost: Iterable[int] = ()) -> SeqTrace:
    """The data ``sender`` sent and the ACKs that came back (``lost``: segment indexes
    the link dropped, see :func:`dropped_segments`).  ``sender`` defaults to the role
    that sent the most bytes."""
    sender = sender or _sender(segs)
    tcp = [s for s in segs if s.proto == "TCP"]
    receivers = {s.dst for s in tcp if s.src == sender}
    if not receivers:
        raise ValueError(f"{sender!r} sent no TCP segment here; roles: "
                         f"{sorted({s.src for s in tcp})}")
    receiver = sorted(receivers)[0]
    lost = set(lost)
    offered = _syn_options(segs)
    scale = 1 << _window_scale(offered, receiver)
    sack = len(offered) == 2 and all("SAckOK" in options for options in offered.values())
    trace = SeqTrace(sender, receiver, sack=sack)
    base = None   # the sender's ISN: SACK blocks carry absolute numbers
    highest = 0   # just past the highest byte sent so far
    last_ack: int | None = None
    last_seq = last_window = None   # the receiver's previous segment's, for window updates
    for seg in tcp:
        if seg.src == sender and seg.dst == receiver and seg.length:
            assert seg.seq is not None
            if base is None and sack and seg.packet is not None:
                base = (seg.packet["TCP"].seq - seg.seq) % 2**32
            end = seg.seq + seg.length
            trace.data.append(DataPoint(seg.index, seg.time, seg.seq, end,
                                        retransmission=seg.seq < highest,
                                        lost=seg.index in lost))
            highest = max(highest, end)
        elif seg.src == receiver and seg.dst == sender and seg.ack is not None:
            window = seg.packet["TCP"].window * scale if seg.packet is not None else 0
            if "SYN" in seg.flags:   # the SYN-ACK's ACK is the first the sender heard
                last_ack, last_seq, last_window = seg.ack, seg.seq, window
                continue
            pure = not seg.length and "FIN" not in seg.flags
            # Linux's test (tcp_may_update_window): a bigger window or a newer sequence number
            update = not sack and (window > (last_window or 0) or seg.seq != last_seq)
            trace.acks.append(AckPoint(seg.index, seg.time, seg.ack, seg.ack + window,
                                       duplicate=pure and seg.ack == last_ack
                                       and seg.ack < highest and not update,
                                       sacked=_sack_blocks(seg, base) if sack else ()))
            last_ack, last_seq, last_window = seg.ack, seg.seq, window
    return trace


def dropped_segments(segs: list[Segment], numbers: Iterable[int], *,
                     sender: str = "client") -> set[int]:
    """Indexes of the packets a lab link dropped, from the link's frame numbers: frame
    ``n`` of a direction is the ``n``-th packet ``sender`` sent, in a capture taken at
    ``sender``'s end of the link (every frame the link saw, in the order it saw them).
    The numbers depend only on the link's seed, so they point at the same packets in a
    recording of the same run."""
    sent = [s.index for s in segs if s.src == sender]
    return {sent[n] for n in numbers if 0 <= n < len(sent)}


def _steps(points: list[tuple[float, int]], t_end: float) -> tuple[list[float], list[int]]:
    xs: list[float] = []
    ys: list[int] = []
    for t, y in points:
        if ys:
            xs.append(t)
            ys.append(ys[-1])   # hold the old value until this point: a step
        xs.append(t)
        ys.append(y)
    if ys:
        xs.append(t_end)
        ys.append(ys[-1])
    return xs, ys


def time_sequence(segs: list[Segment], *, sender: str | None = None, lost: Iterable[int] = (),
                  between: tuple[float, float] | None = None, title: str | None = None
                  ) -> Figure:
    """Draw the time-sequence graph of ``sender``'s data (default: who sent the most).

    ``lost``: indexes of segments the link dropped (:func:`dropped_segments`), drawn
    with ✗; ``between=(t0, t1)`` zooms to those seconds.  Returns the matplotlib figure.
    """
    trace = seq_trace(segs, sender=sender, lost=lost)
    t0, t1 = between if between is not None else (0.0, max(s.time for s in segs))
    if not t0 < t1:
        raise ValueError(f"between=(t0, t1) needs t0 < t1 in seconds, not {between!r}")
    data = [d for d in trace.data if t0 <= d.t <= t1]
    acks = [a for a in trace.acks if t0 <= a.t <= t1]
    fig, ax = plt.subplots(figsize=(12, 6.5))
    plt.close(fig)
    kb = 1 / 1000   # sequence numbers in kB: 6 digits of bytes do not fit a tick label
    ms = 1000
    xs, ys = _steps([(a.t, a.ack) for a in acks], t1)
    ax.plot([x * ms for x in xs], [y * kb for y in ys], color="#1b7837", lw=2,
            label="ACK: bytes received in order")
    xs, ys = _steps([(a.t, a.window_edge) for a in acks], t1)
    ax.plot([x * ms for x in xs], [y * kb for y in ys], color="#e6ab02", lw=2,
            label="ACK + window: the receiver's limit")
    styles: list[tuple[str, Callable[[DataPoint], bool], str]] = [
        ("sent", lambda d: not d.retransmission and not d.lost, "#2166ac"),
        ("retransmitted", lambda d: d.retransmission and not d.lost, "#d7191c"),
        ("dropped by the link", lambda d: d.lost, "#000000")]
    for label, chosen, color in styles:
        these = [d for d in data if chosen(d)]
        if not these:
            continue
        ax.vlines([d.t * ms for d in these], [d.seq * kb for d in these],
                  [d.end * kb for d in these], color=color, lw=3,
                  label=f"data segment, {label} ({len(these)})")
        if label != "sent":
            ax.scatter([d.t * ms for d in these], [(d.seq + d.end) / 2 * kb for d in these],
                       marker="x" if label.startswith("dropped") else "o", s=110, color=color,
                       zorder=4)
    dups = [a for a in acks if a.duplicate]
    if dups:
        ax.scatter([a.t * ms for a in dups], [a.ack * kb for a in dups], marker="d", s=45,
                   color="#7b3294", zorder=5, label=f"duplicate ACK ({len(dups)})")
    ax.set_xlabel("time since the first packet (ms)", fontsize=15)
    ax.set_ylabel(f"sequence number, {trace.sender} → {trace.receiver} (kB)", fontsize=15)
    ax.tick_params(labelsize=13)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=12, loc="upper left")
    if between is not None and data:
        low = min(d.seq for d in data)
        high = max([d.end for d in data] + [a.ack for a in acks])
        pad = (high - low) * 0.08 + 1
        ax.set_ylim((low - pad) * kb, (high + pad) * kb)
        ax.set_xlim(t0 * ms, t1 * ms)
    if title is None:
        kinds = trace.recovery()
        title = (f"{len(trace.data)} data segments, {len(trace.retransmissions)} "
                 f"retransmitted" + (f" ({', '.join(sorted(set(kinds)))})" if kinds else ""))
    ax.set_title(title, fontsize=16)
    fig.tight_layout()
    show_notice(fig, getattr(segs, "notice", None))  # wire.segments: lost, not kept, replay
    return fig
