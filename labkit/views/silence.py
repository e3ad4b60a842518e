"""What each connection did after its peer fell silent, one row per connection, on one time
axis: data sent again (retransmissions), keepalive probes, and when the kernel gave up.

    >>> silence_figure(wire.segments, since=first_send.time,
    ...                rows={"TCP_USER_TIMEOUT": ("client 3", 1.73), "idle": ("client 4", None)})

``rows`` maps a label to (the connection's role in the capture, seconds from ``since`` until
the kernel gave up, or None if it never did). The title is computed from those times.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from labkit.views.plotting import plt

if TYPE_CHECKING:
    from labkit.capture.flows import Segment

__all__ = ["silence_figure"]

# what a segment sent into the silence is, and how it is drawn
KINDS = {"data": ("s", "#b2182b", "data (sent again)"),
         "probe": ("o", "#2166ac", "keepalive probe"),
         "reset": ("X", "black", "RST: the kernel gave up")}


def _kind(seg: Segment) -> str:
    if "RST" in seg.flags:
        return "reset"
    return "data" if seg.length else "probe"


def silence_figure(segments: list[Segment], *, since: float,
                   rows: dict[str, tuple[str, float | None]], title: str | None = None
                   ) -> Figure:
    """One row per connection: what it sent after ``since`` (capture seconds), and when the
    kernel gave up on it (a vertical bar) or that it never did (an arrow off the right)."""
    if not rows:
        raise ValueError("silence_figure needs rows: {label: (role, seconds or None)}")
    ended = [t for _, t in rows.values() if t is not None]
    right = max(ended, default=1.0) * 1.15 + 0.3
    fig, ax = plt.subplots(figsize=(12, 1.3 * len(rows) + 1.6))
    plt.close(fig)
    shown: dict[str, Line2D] = {}  # kind -> its first marker, for the legend
    for y, (role, gave_up) in enumerate(reversed(list(rows.values()))):
        ax.axhline(y, color="0.85", lw=1, zorder=0)
        for seg in segments:
            if seg.src != role or seg.time < since - 1e-6:
                continue
            kind = _kind(seg)
            marker, color, name = KINDS[kind]
            (line,) = ax.plot(seg.time - since, y, marker=marker, color=color, ms=11, ls="none",
                              label=name)
            shown.setdefault(kind, line)
        if gave_up is None:
            ax.annotate("", xy=(right, y), xytext=(right * 0.82, y),
                        arrowprops={"arrowstyle": "->", "color": "0.4", "lw": 2})
            ax.text(right * 0.8, y + 0.22, "never gives up", ha="right", fontsize=13,
                    color="0.3")
        else:
            ax.plot([gave_up, gave_up], [y - 0.3, y + 0.3], color="black", lw=3)
            ax.text(gave_up, y + 0.34, f"gave up: {gave_up:.1f} s", ha="center", fontsize=13)
    ax.set_yticks(range(len(rows)), list(reversed(list(rows))), fontsize=14)
    ax.set_ylim(-0.7, len(rows) - 0.2)
    ax.set_xlim(-0.1, right)
    ax.set_xlabel("seconds since the peer fell silent", fontsize=15)
    ax.tick_params(axis="x", labelsize=13)
    ax.grid(axis="x", alpha=0.3)
    if shown:  # in KINDS' order, whichever row drew each first
        kinds = [kind for kind in KINDS if kind in shown]
        ax.legend([shown[kind] for kind in kinds], [KINDS[kind][2] for kind in kinds],
                  fontsize=12, loc="lower left", framealpha=0.95)
    if title is None:
        times = [f"{t:.1f}" for _, t in rows.values() if t is not None]
        never = [label for label, (_, t) in rows.items() if t is None]
        listed = ", ".join(times[:-1]) + (" and " if len(times) > 1 else "") + times[-1] \
            if times else ""
        title = f"Peer silent: the kernel gave up after {listed} s" if times else \
            "Peer silent: the kernel never gave up"
        if never and times:
            title += f"; {', '.join(never)}: never"
    ax.set_title(title, fontsize=15)
    fig.tight_layout()
    return fig
