"""Tables of captured packets, and the one renderer every labkit table uses.

    >>> Table(wire.segments)                       # one row per packet (text and HTML)
    >>> Table(wire.segments, packets=range(200, 300))   # rows of a long capture
    >>> print(text_table(("a", "b"), [["1", "2"]]))
    a  b
    -  -
    1  2

Text for terminals and tests, HTML (rows coloured) for Jupyter; sized for a projector.
A long capture shows its first ``MAX_ROWS`` rows and says how many more there are; a
capture's notice (packets lost or not kept, a recording that is not your run) comes first.
"""

from __future__ import annotations

import html

__all__ = ["Table", "text_table", "html_table", "COLORS", "kind", "pick", "printable",
           "with_notice", "html_notes"]

MAX_ROWS = 200  # rows shown unless told which: more is slow to render, and nobody reads it

COLUMNS = ("#", "t (s)", "from → to", "flags", "seq", "ack", "len", "summary")

# One colour per kind of packet, readable on a projector and by most colour-blind viewers.
COLORS = {"SYN": "#1b7837", "FIN": "#e66101", "RST": "#d01c8b", "data": "#2166ac",
          "ACK": "#555555", "UDP": "#5e3c99", "ICMP": "#d01c8b", "ARP": "#8c510a",
          "IP": "#01665e", "ICMPv6": "#d01c8b", "NDP": "#8c510a"}
# ARP: who has / is at (NDP: the same in IPv6); IP: a fragment


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
    # Only the last column (free text) may wrap: a 1280-px notebook otherwise breaks
    # "client → server" or a number over lines.
    keep = "text-align:left;white-space:nowrap"
    for color, row in zip(colors, rows, strict=True):
        cells = "".join(f"<td style='{keep if i < len(row) - 1 else 'text-align:left'}'>"
                        f"{html.escape(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr style='color:{color}'>{cells}</tr>")
    return ("<table style='font-family:monospace;font-size:110%'>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


WARNING_COLOR = "#b2182b"  # a ⚠ line over a table or in a figure


def with_notice(segs, note: str | None) -> str | None:
    """``note`` after the notice that ``segs`` carry (a capture's ``wire.segments``), if any."""
    notice = getattr(segs, "notice", None)
    lines = [notice, note] if notice and notice not in (note or "") else [note]
    return "\n".join(line for line in lines if line) or None


def html_notes(note: str | None) -> str:
    """Each line of ``note`` as a paragraph; ⚠ lines in bold, in the warning colour."""
    if not note:
        return ""
    warn = f" style='color:{WARNING_COLOR};font-weight:bold'"
    return "".join(f"<p{warn if line.startswith('⚠') else ''}>{html.escape(line)}</p>"
                   for line in note.split("\n"))


def printable(text: str) -> str:
    """``text`` with control and other unprintable characters as escapes (``\\x07``)."""
    if text.isprintable():
        return text  # the common case, at C speed
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def pick(rows: list, packets=None, *, limit: int | None = MAX_ROWS) -> tuple[list, str | None]:
    """The rows chosen by ``packets`` (a slice, range or list of row numbers), and a note.

    With ``packets=None``, the first ``limit`` rows; the note says how many are left out.
    An explicit choice is shown as asked, with no note.
    """
    total = len(rows)
    if packets is None:
        if limit is None or total <= limit:
            return rows, None
        return rows[:limit], (f"… {total - limit} more packets; pass packets= to choose "
                              f"(e.g. packets=range({limit}, {min(total, 2 * limit)}))")
    if isinstance(packets, slice):
        return rows[packets], None
    if isinstance(packets, (range, list, tuple)):
        bad = [i for i in packets if not isinstance(i, int) or not -total <= i < total]
        if bad:
            raise ValueError(f"packets= names rows {bad[:3]} but this capture has rows "
                             f"0 to {total - 1}; pass a slice, range or list of row numbers")
        return [rows[i] for i in packets], None
    raise TypeError(f"packets= takes a slice, range or list of row numbers "
                    f"(e.g. range(0, 40)), not {type(packets).__name__}")


def kind(seg) -> str:
    """Which colour a segment gets: SYN, FIN, RST, data or ACK (TCP), UDP, ICMP(v6), ARP,
    NDP, IP."""
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
            num(seg.seq), num(seg.ack), str(seg.length), printable(seg.summary)]


class Table:
    """Rows of a capture (:class:`~labkit.capture.flows.Segment` s); text, and HTML in Jupyter.

    ``packets`` picks rows (a slice, range or list); by default the first ``MAX_ROWS``
    are shown, and a line under them says how many more there are.  ``note`` is a line
    over the rows (e.g. which connection they belong to), after the segments' notice.
    """

    def __init__(self, segs, *, packets=None, note: str | None = None):
        self.note = with_notice(segs, note)
        self.segments, self.more = pick(list(segs), packets)
        self.rows = [_row(s) for s in self.segments]

    def __len__(self):
        return len(self.rows)

    def __str__(self):
        text = text_table(COLUMNS, self.rows, empty="(no packets)")
        return "\n".join(line for line in (self.note, text, self.more) if line)

    __repr__ = __str__

    def _repr_html_(self):
        colors = [COLORS[kind(seg)] for seg in self.segments]
        table = html_table(COLUMNS, self.rows, colors, empty="(no packets)")
        return "".join([html_notes(self.note), table,
                        f"<p><em>{html.escape(self.more)}</em></p>" if self.more else ""])
