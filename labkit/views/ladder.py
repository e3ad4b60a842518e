"""Ladder (sequence) diagrams of captured conversations, sized for a projector.

    >>> ladder(wire.segments)         # matplotlib Figure: one lifeline per role

Each arrow says how a packet travelled (flags, seq, ack, len) and, for data, what it
carried; a protocol view may say more (TLS records, WebSocket frames): see
:class:`labkit.protocols.base.ProtocolView.label`.
"""

from __future__ import annotations

from matplotlib.patches import FancyArrowPatch

from labkit.capture.flows import Segment
from labkit.views.plotting import plt
from labkit.views.table import COLORS, kind

__all__ = ["ladder"]

LABEL_PREVIEW = 44  # characters of payload summary shown under a data arrow


def _label(seg: Segment) -> str:
    if seg.dissection is not None:
        text = seg.dissection.label(seg)  # the protocol views of seg's capture
        if text is not None:
            return text
    if seg.length and seg.summary and seg.proto in ("TCP", "UDP"):
        summary = seg.summary if len(seg.summary) <= LABEL_PREVIEW else \
            seg.summary[:LABEL_PREVIEW - 1] + "…"
        return f"{seg.label}\n{summary}"  # what was said, under how it travelled
    return seg.label


def _lifelines(segs: list[Segment]) -> list[str]:
    """Clients on the left, then everything they talk to, in order of appearance."""
    seen: list[str] = []
    for seg in segs:
        for role in (seg.src, seg.dst):
            if role not in seen:
                seen.append(role)
    return sorted(seen, key=lambda r: (not r.startswith("client"), seen.index(r)))


def ladder(segs: list[Segment], *, title: str | None = None, notice: str | None = None):
    """Draw a sequence diagram: one lifeline per role, one labelled arrow per packet.

    Time runs downwards, one row per packet (so 30+ packets stay legible); the left
    margin gives each packet's time since the first.
    """
    roles = _lifelines(segs) or ["client", "server"]
    x = {role: i for i, role in enumerate(roles)}
    labels = [_label(seg) for seg in segs]
    ys, y = [], 0.0  # a row per packet; a label of k lines pushes its row down (k-1)/2
    for text in labels:
        y += 0.5 * text.count("\n")
        ys.append(y)
        y += 1
    n = y
    width = max(9.0, 4.5 * len(roles))
    fig, ax = plt.subplots(figsize=(width, 1.6 + 0.5 * max(n, 1)))
    plt.close(fig)  # returned, not auto-shown: the notebook displays it once
    top, bottom = -0.8, n - 0.2
    for role, xi in x.items():
        ax.plot([xi, xi], [top, bottom], color="#999999", lw=2, zorder=1)
        ax.text(xi, top - 0.15, role, ha="center", va="bottom", fontsize=15, fontweight="bold")
    for row, label, seg in zip(ys, labels, segs, strict=True):
        x0, x1 = float(x[seg.src]), float(x[seg.dst])
        color = COLORS[kind(seg)]
        if x0 == x1:  # a packet from a host to itself (rare): draw a short loop
            x1 = x0 + 0.3
        ax.add_patch(FancyArrowPatch((x0, row + 0.12), (x1, row + 0.36), arrowstyle="-|>",
                                     mutation_scale=22, lw=2.2, color=color, zorder=3))
        ax.text((x0 + x1) / 2, row + 0.1, label, ha="center", va="bottom", fontsize=12,
                color=color, zorder=4,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
        ax.text(-0.12, row + 0.24, f"{seg.time * 1000:.2f} ms", ha="right", va="center",
                fontsize=10, color="#666666")
    ax.set_xlim(-0.55, len(roles) - 0.75)
    ax.set_ylim(bottom + 0.3, top - 0.7)  # inverted: time runs downwards
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=16, pad=12)
    if not segs:
        ax.text(sum(x.values()) / len(x), 0, "(no packets)", ha="center", fontsize=14)
    if notice:  # e.g. "⚠ 3 packets were lost …": the figure says it, not only the cell
        fig.suptitle(notice, color=COLORS["RST"], fontsize=13)
    fig.tight_layout()
    return fig
