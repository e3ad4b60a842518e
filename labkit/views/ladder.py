"""Pictures and tables of captured conversations, sized for a projector.

    >>> Table(wire.segments)          # one row per packet (text and HTML)
    >>> ladder(wire.segments)         # matplotlib sequence diagram
"""

from __future__ import annotations

import html

import matplotlib

if not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "ipympl", "widget")):
    matplotlib.use("Agg")  # no display here; notebooks keep their inline backend
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch

from labkit.capture.flows import Segment

__all__ = ["Table", "ladder", "COLORS"]

COLUMNS = ("#", "t (s)", "from → to", "flags", "seq", "ack", "len", "summary")

# One colour per kind of packet, readable on a projector and by most colour-blind viewers.
COLORS = {"SYN": "#1b7837", "FIN": "#e66101", "RST": "#d01c8b", "data": "#2166ac",
          "ACK": "#555555", "UDP": "#5e3c99", "ICMP": "#d01c8b"}


# Functions segment -> ladder arrow text or None; the first answer wins, else seg.label.
# Other modules (TLS) put theirs in front with ``LABELLERS.insert(0, f)``.
LABELLERS: list = []


LABEL_PREVIEW = 44  # characters of payload summary shown under a data arrow


def _label(seg: Segment) -> str:
    for label in LABELLERS:
        text = label(seg)
        if text is not None:
            return text
    if seg.length and seg.summary and seg.proto in ("TCP", "UDP"):
        summary = seg.summary if len(seg.summary) <= LABEL_PREVIEW else \
            seg.summary[:LABEL_PREVIEW - 1] + "…"
        return f"{seg.label}\n{summary}"  # what was said, under how it travelled
    return seg.label


def _row(seg: Segment) -> list[str]:
    num = lambda v: "" if v is None else str(v)  # noqa: E731
    flags = seg.flags if seg.proto == "TCP" else seg.proto
    return [str(seg.index), f"{seg.time:.6f}", f"{seg.src} → {seg.dst}", flags,
            num(seg.seq), num(seg.ack), str(seg.length), seg.summary]


class Table:
    """Rows of a capture; shows as a text table (and HTML in Jupyter)."""

    def __init__(self, segs: list[Segment]):
        self.segments = list(segs)
        self.rows = [_row(s) for s in self.segments]

    def __len__(self):
        return len(self.rows)

    def __str__(self):
        if not self.rows:
            return "(no packets)"
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(COLUMNS)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        return "\n".join([line(COLUMNS), line(["-" * w for w in widths])]
                         + [line(r) for r in self.rows])

    __repr__ = __str__

    def _repr_html_(self):
        if not self.rows:
            return "<p><em>(no packets)</em></p>"
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in COLUMNS)
        body = []
        for seg, row in zip(self.segments, self.rows):
            color = COLORS[_kind(seg)]
            cells = "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in row)
            body.append(f"<tr style='color:{color}'>{cells}</tr>")
        return ("<table style='font-family:monospace;font-size:110%'>"
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _kind(seg: Segment) -> str:
    if seg.proto != "TCP":
        return seg.proto
    for flag in ("SYN", "RST", "FIN"):
        if flag in seg.flags.split("-"):
            return flag
    return "data" if seg.length else "ACK"


def _lifelines(segs: list[Segment]) -> list[str]:
    """Clients on the left, then everything they talk to, in order of appearance."""
    seen: list[str] = []
    for seg in segs:
        for role in (seg.src, seg.dst):
            if role not in seen:
                seen.append(role)
    return sorted(seen, key=lambda r: (not r.startswith("client"), seen.index(r)))


def ladder(segs: list[Segment], *, title: str | None = None):
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
    for row, label, seg in zip(ys, labels, segs):
        x0, x1 = x[seg.src], x[seg.dst]
        color = COLORS[_kind(seg)]
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
    fig.tight_layout()
    return fig
