"""Connection attempts racing each other: Happy Eyeballs (RFC 8305) on one time axis.

    >>> attempts = connection_attempts(wire.segments)   # one per SYN'd connection, in order
    >>> [(a.family, a.started, a.connected) for a in attempts]
    [('IPv6', 0.0, None), ('IPv4', 0.251, 0.252)]
    >>> race_figure(wire.segments, delay=0.25)           # a lane per attempt

A client with an IPv6 and an IPv4 address for one name may try them one after the other
(``socket.create_connection``: the next only once the last has failed or timed out), or
race them (asyncio's ``happy_eyeballs_delay``: the next starts after the delay, or as
soon as the last fails, and the first handshake to complete wins; the others are
abandoned). Each attempt is a lane, time runs left to right from the first SYN, and
each packet of its handshake is a mark: the client's SYNs (again and again, if nobody
answers), the server's SYN-ACK, the client's ACK, a reset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from matplotlib.figure import Figure

from labkit.capture.flows import Segment
from labkit.protocols.base import ip_layer
from labkit.views.plotting import plt, show_notice
from labkit.views.table import COLORS

__all__ = ["Attempt", "connection_attempts", "race_figure"]


@dataclass
class Attempt:
    """One connection attempt, as a capture saw it (times in seconds since its first packet).

    Attributes:
        family: ``"IPv6"`` or ``"IPv4"``
        address: the server's address it tried
        port: the server's port
        started: when its first SYN left
        syns: when each of its SYNs left (more than one: sent again, unanswered)
        connected: when the server's SYN-ACK came (None: it never did)
        refused: when a reset came instead (None: none did)
        packets: every packet of its handshake, as (time, flags, sent by the client?)
        label: its family and address, as the figure names its lane
    """

    family: str
    address: str
    port: int
    started: float
    syns: list[float] = field(default_factory=list)
    connected: float | None = None
    refused: float | None = None
    packets: list[tuple[float, str, bool]] = field(default_factory=list)
    over: bool = field(default=False, repr=False)  # its handshake is over (won or refused)

    @property
    def label(self) -> str:
        return f"{self.family} {self.address}"


def connection_attempts(segs: Iterable[Segment]) -> list[Attempt]:
    """The TCP connection attempts in a capture (a SYN without ACK opens one), in order."""
    attempts: dict[tuple[str, int, str, int], Attempt] = {}
    for seg in segs:
        if seg.proto != "TCP" or seg.packet is None:
            continue
        ip = ip_layer(seg.packet)
        tcp = seg.packet["TCP"]
        flags = seg.flags.split("-")
        out = (ip.src, int(tcp.sport), ip.dst, int(tcp.dport))
        back = (ip.dst, int(tcp.dport), ip.src, int(tcp.sport))
        if "SYN" in flags and "ACK" not in flags:
            attempt = attempts.get(out)
            if attempt is None:
                attempt = attempts[out] = Attempt("IPv6" if ip.version == 6 else "IPv4",
                                                  ip.dst, int(tcp.dport), seg.time)
            attempt.syns.append(seg.time)
            attempt.packets.append((seg.time, seg.flags, True))
            continue
        attempt, client = (attempts.get(out), True) if out in attempts else (
            attempts.get(back), False)
        if attempt is None or attempt.over:
            continue  # the conversation after the handshake: not part of the race
        attempt.packets.append((seg.time, seg.flags, client))
        if client:
            attempt.over = attempt.connected is not None  # its ACK ends the handshake
        elif "SYN" in flags:
            attempt.connected = attempt.connected or seg.time
        elif "RST" in flags:
            attempt.refused, attempt.over = seg.time, True
    return list(attempts.values())


def race_figure(segs: Iterable[Segment], *, delay: float | None = None,
                title: str | None = None, warning: str | None = None) -> Figure:
    """A lane per connection attempt on one time axis (ms since the first SYN); ``delay``:
    the Happy Eyeballs delay the client was given, drawn where it ran out; ``warning``:
    written across the top, with the capture's own notice."""
    attempts = connection_attempts(segs)
    fig, ax = plt.subplots(figsize=(12, 1.9 + 1.3 * max(1, len(attempts))))
    plt.close(fig)  # returned, not auto-shown: the notebook displays it once
    if not attempts:
        ax.text(0.5, 0.5, "(no connection attempts in this capture)", ha="center",
                transform=ax.transAxes, fontsize=14)
        ax.axis("off")
        return fig
    t0 = attempts[0].started
    end = max(t for a in attempts for t, *_ in a.packets) - t0
    span = max(end, delay or 0) * 1000 or 1.0
    nudge = 0.012 * span  # packets closer than this are drawn this far apart, in order
    for lane, attempt in enumerate(attempts):
        y = len(attempts) - 1 - lane
        ax.plot([0, span * 1.05], [y, y], color="#bbbbbb", lw=1.5, zorder=1)
        ax.text(-0.02 * span, y, attempt.label, ha="right", va="center", fontsize=14,
                fontweight="bold", parse_math=False)
        last = None
        for t, flags, from_client in attempt.packets:
            x = (t - t0) * 1000
            x = x if last is None or x - last >= nudge else last + nudge
            last = x
            color = COLORS["RST" if "RST" in flags else "SYN" if "SYN" in flags else "ACK"]
            ax.annotate("", xy=(x, y - 0.28 if from_client else y + 0.28),
                        xytext=(x, y + 0.28 if from_client else y - 0.28),
                        arrowprops=dict(arrowstyle="-|>", color=color, lw=2.2,
                                        mutation_scale=18), zorder=3)
        for i, t in enumerate(attempt.syns):
            ax.text((t - t0) * 1000, y + 0.36, "SYN" if i == 0 else "SYN again", ha="center",
                    va="bottom", fontsize=12, color=COLORS["SYN"], parse_math=False)
        if attempt.connected is not None:
            after = (attempt.connected - t0) * 1000
            ax.text(after + 2.5 * nudge, y - 0.12, f"connected at {after:.0f} ms", ha="left",
                    va="top", fontsize=12, color=COLORS["SYN"], fontweight="bold",
                    parse_math=False)
        else:
            what = "refused" if attempt.refused is not None else "no answer: abandoned"
            ax.text(span * 1.05, y - 0.12, what, ha="right", va="top", fontsize=12,
                    style="italic", color=COLORS["RST"], parse_math=False)
    ax.text(-0.27 * span, -0.75, "↓ client → server    ↑ server → client", ha="left",
            va="bottom", fontsize=11, color="#555555", parse_math=False)
    if delay is not None:
        ax.axvline(delay * 1000, color="#5e3c99", lw=1.5, ls="--", zorder=2)
        ax.text(delay * 1000, len(attempts) - 0.35,
                f" happy_eyeballs_delay = {delay * 1000:g} ms", ha="left", va="bottom",
                fontsize=12, color="#5e3c99", parse_math=False)
    ax.set_xlim(-0.28 * span, span * 1.1)
    ax.set_xticks([t for t in ax.get_xticks() if 0 <= t <= span * 1.1])  # none left of 0
    ax.set_ylim(-0.8, len(attempts) - 0.1)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel("ms since the first SYN", fontsize=13)
    ax.tick_params(axis="x", labelsize=12)
    if title is None:
        title = _title(attempts)
    ax.set_title(title, fontsize=15, pad=12, parse_math=False)
    fig.tight_layout()
    show_notice(fig, "\n".join(text for text in (getattr(segs, "notice", None), warning)
                                if text) or None)
    return fig


def _title(attempts: list[Attempt]) -> str:
    winners = [(a.connected, a) for a in attempts if a.connected is not None]
    if not winners:
        return f"{len(attempts)} connection attempts, none connected"
    connected, first = min(winners, key=lambda pair: pair[0])
    after = (connected - attempts[0].started) * 1000
    losers = len(attempts) - 1
    tail = f"; {losers} other attempt{'s' * (losers != 1)}" if losers else ""
    return f"{first.family} connected after {after:.0f} ms{tail}"
