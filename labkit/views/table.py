"""Tables of captured packets, and the one renderer every labkit table uses.

    >>> Table(wire.segments)                       # one row per packet (text and HTML)
    >>> Table(wire.segments, rows=range(200, 300))      # rows of a long capture
    >>> print(text_table(("a", "b"), [["1", "2"]]))
    a  b
    -  -
    1  2

Text for terminals and tests, HTML (rows coloured) for Jupyter; sized for a projector.
A long capture shows its first ``MAX_ROWS`` rows and says how many more there are; a
capture's notice (packets lost or not kept, a recording that is not your run) comes first.

``rows=`` (of a table, a ladder, ``wire.table()`` and ``wire.ladder()``) picks rows by
their number, the ``#`` column: a slice, a range or a list.  It was called ``packets=``,
a name that said Scapy's packet list (``wire.packets``); that name still works, with a
``DeprecationWarning``.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from labkit.capture.flows import Segment

__all__ = ["Table", "text_table", "html_table", "COLORS", "kind", "pick", "printable",
           "with_notice", "html_notes", "Rows", "rows_or_packets"]

# Which rows to show, by number: a slice, a range or a list (None: the first ones)
Rows = slice | range | Sequence[int] | None
T = TypeVar("T")

MAX_ROWS = 200  # rows shown unless told which: more is slow to render, and nobody reads it

COLUMNS = ("#", "t (s)", "from → to", "flags", "seq", "ack", "len", "summary")

# One colour per kind of packet, readable on a projector and by most colour-blind viewers.
COLORS = {"SYN": "#1b7837", "FIN": "#e66101", "RST": "#d01c8b", "data": "#2166ac",
          "ACK": "#555555", "UDP": "#5e3c99", "ICMP": "#d01c8b", "ARP": "#8c510a",
          "IP": "#01665e", "ICMPv6": "#d01c8b", "NDP": "#8c510a"}
# ARP: who has / is at (NDP: the same in IPv6); IP: a fragment


def text_table(columns: Sequence[str], rows: list[list[str]], *, empty: str = "(no rows)"
               ) -> str:
    """Columns padded to their widest cell, a rule under the header."""
    if not rows:
        return empty
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in rows])


def html_table(columns: Sequence[str], rows: list[list[str]], colors: list[str], *,
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


def with_notice(segs: Iterable[object], note: str | None) -> str | None:
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


def rows_or_packets(rows: Rows, packets: Rows, where: str) -> Rows:
    """``rows``, or what the old name ``packets=`` gave (with a ``DeprecationWarning``
    pointing at the caller's line)."""
    if packets is None:
        return rows
    if rows is not None:
        raise TypeError(f"{where}() takes rows= (packets= is its old name), not both")
    warnings.warn(f"{where}(packets=...) is now {where}(rows=...): it picks rows by their "
                  "number (wire.packets is Scapy's packet list); packets= will go",
                  DeprecationWarning, stacklevel=3)
    return packets


def pick(items: list[T], rows: Rows = None, *, limit: int | None = MAX_ROWS
         ) -> tuple[list[T], str | None]:
    """The items ``rows`` chooses (a slice, range or list of row numbers), and a note.

    With ``rows=None``, the first ``limit``; the note says how many are left out.
    An explicit choice is shown as asked, with no note.
    """
    total = len(items)
    if rows is None:
        if limit is None or total <= limit:
            return items, None
        return items[:limit], (f"… {total - limit} more packets; pass rows= to choose "
                               f"(e.g. rows=range({limit}, {min(total, 2 * limit)}))")
    if isinstance(rows, slice):
        return items[rows], None
    if isinstance(rows, (range, list, tuple)):
        bad = [i for i in rows if not isinstance(i, int) or not -total <= i < total]
        if bad:
            raise ValueError(f"rows= names rows {bad[:3]} but this capture has rows "
                             f"0 to {total - 1}; pass a slice, range or list of row numbers")
        return [items[i] for i in rows], None
    raise TypeError(f"rows= takes a slice, range or list of row numbers "
                    f"(e.g. range(0, 40)), not {type(rows).__name__}")


def kind(seg: Segment) -> str:
    """Which colour a segment gets: SYN, FIN, RST, data or ACK (TCP), UDP, ICMP(v6), ARP,
    NDP, IP."""
    if seg.proto != "TCP":
        return seg.proto
    for flag in ("SYN", "RST", "FIN"):
        if flag in seg.flags.split("-"):
            return flag
    return "data" if seg.length else "ACK"


def _row(seg: Segment) -> list[str]:
    def num(value: int | None) -> str:
        return "" if value is None else str(value)

    flags = seg.flags if seg.proto == "TCP" else seg.proto
    return [str(seg.index), f"{seg.time:.6f}", f"{seg.src} → {seg.dst}", flags,
            num(seg.seq), num(seg.ack), str(seg.length), printable(seg.summary)]


class Table:
    """Rows of a capture (:class:`~labkit.capture.flows.Segment` s); text, and HTML in Jupyter.

    ``rows`` picks rows by number (a slice, range or list); by default the first
    ``MAX_ROWS`` are shown, and a line under them says how many more there are.  ``note``
    is a line over the rows (e.g. which connection they belong to), after the segments'
    notice.  (``packets=`` is the old name of ``rows=``.)

    Attributes:
        segments: the segments shown, one per row
        rows: the rows' cells as text, one list per row (the columns of ``COLUMNS``)
        note: the lines over the rows: the capture's notice, then ``note`` (None: none)
        more: the line under the rows saying how many were left out (None: none were)
    """

    def __init__(self, segs: Iterable[Segment], *, rows: Rows = None, note: str | None = None,
                 packets: Rows = None) -> None:
        rows = rows_or_packets(rows, packets, "Table")
        self.note = with_notice(segs, note)
        self.segments, self.more = pick(list(segs), rows)
        self.rows = [_row(s) for s in self.segments]

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        text = text_table(COLUMNS, self.rows, empty="(no packets)")
        return "\n".join(line for line in (self.note, text, self.more) if line)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colors = [COLORS[kind(seg)] for seg in self.segments]
        table = html_table(COLUMNS, self.rows, colors, empty="(no packets)")
        return "".join([html_notes(self.note), table,
                        f"<p><em>{html.escape(self.more)}</em></p>" if self.more else ""])
