"""Tables of captured packets, and the one renderer every labkit table uses.

    >>> Table(wire.segments)                       # one row per packet (text and HTML)
    >>> print(text_table(("a", "b"), [["1", "2"]]))
    a  b
    -  -
    1  2

Text for terminals and tests, HTML (rows coloured) for Jupyter; sized for a projector.
"""

from __future__ import annotations

import html

__all__ = ["Table", "text_table", "html_table", "COLORS", "kind"]

COLUMNS = ("#", "t (s)", "from → to", "flags", "seq", "ack", "len", "summary")

# One colour per kind of packet, readable on a projector and by most colour-blind viewers.
COLORS = {"SYN": "#1b7837", "FIN": "#e66101", "RST": "#d01c8b", "data": "#2166ac",
          "ACK": "#555555", "UDP": "#5e3c99", "ICMP": "#d01c8b"}


def text_table(columns, rows: list[list[str]], *, empty: str = "(no rows)") -> str:
    """Columns padded to their widest cell, a rule under the header."""
    if not rows:
        return empty
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]

    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in rows])


def html_table(columns, rows: list[list[str]], colors: list[str], *,
               empty: str = "(no rows)") -> str:
    """An HTML table in a monospace font, each row in its colour."""
    if not rows:
        return f"<p><em>{empty}</em></p>"
    head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in columns)
    body = []
    for color, row in zip(colors, rows, strict=True):
        cells = "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in row)
        body.append(f"<tr style='color:{color}'>{cells}</tr>")
    return ("<table style='font-family:monospace;font-size:110%'>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def kind(seg) -> str:
    """Which colour a segment gets: SYN, FIN, RST, data or ACK (TCP), UDP or ICMP."""
    if seg.proto != "TCP":
        return seg.proto
    for flag in ("SYN", "RST", "FIN"):
        if flag in seg.flags.split("-"):
            return flag
    return "data" if seg.length else "ACK"


def _row(seg) -> list[str]:
    num = lambda v: "" if v is None else str(v)  # noqa: E731
    flags = seg.flags if seg.proto == "TCP" else seg.proto
    return [str(seg.index), f"{seg.time:.6f}", f"{seg.src} → {seg.dst}", flags,
            num(seg.seq), num(seg.ack), str(seg.length), seg.summary]


class Table:
    """Rows of a capture (:class:`~labkit.capture.flows.Segment` s); text, and HTML in Jupyter."""

    def __init__(self, segs, *, notice: str | None = None):
        self.segments = list(segs)
        self.rows = [_row(s) for s in self.segments]
        self.notice = notice  # e.g. "⚠ 3 packets were lost …": said above the rows

    def __len__(self):
        return len(self.rows)

    def __str__(self):
        text = text_table(COLUMNS, self.rows, empty="(no packets)")
        return f"{self.notice}\n{text}" if self.notice else text

    __repr__ = __str__

    def _repr_html_(self):
        colors = [COLORS[kind(seg)] for seg in self.segments]
        text = html_table(COLUMNS, self.rows, colors, empty="(no packets)")
        if self.notice:
            text = f"<p style='color:{COLORS['RST']}'><b>{html.escape(self.notice)}</b></p>{text}"
        return text
