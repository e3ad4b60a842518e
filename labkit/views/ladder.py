"""Ladder (sequence) diagrams of captured conversations, sized for a projector.

    >>> ladder(wire.segments)                     # matplotlib Figure: one lifeline per role
    >>> ladder(wire.segments, rows=range(40, 80))      # another window of a long capture
    >>> ladder(wire.segments, page=2)                  # the second slide's worth of rows

Each arrow says how a packet travelled (flags, seq, ack, len) and, for data, what it
carried; a protocol view may say more (TLS records, WebSocket frames): see
:class:`labkit.protocols.base.ProtocolView.label`.  A packet that a router dropped and
answered with an ICMP error (a traceroute's probe whose TTL ran out, a packet too big
for the next link) ends at that router's lifeline, at a ✗ that says why, and a probe
whose TTL ran out says the TTL it had there.  A ladder stays legible: it draws at
most ``MAX_PACKETS`` arrows unless told which, and says in the figure what it left out;
with more than ``MAX_LIFELINES`` roles it asks for one connection (or the summary view).
It is drawn for the back of a room: every text in it is at least 18 px on a 1280x720
slide even when the deck shows the figure at 80 % of its size (``FONT``), and ``page=``
cuts a long capture into figures of ``PAGE_ROWS`` rows, one per slide.
A capture's warning (packets lost or not kept, a recording that is not your run) is
written across the top of the figure.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch
from matplotlib.text import Text

from labkit.capture.flows import Segment
from labkit.protocols.base import ip_layer
from labkit.protocols.icmp import REDIRECT, icmp_message, quotes, why_dropped
from labkit.views.plotting import WIDEST, plt, show_notice
from labkit.views.table import COLORS, Rows, kind, pick, printable, rows_or_packets

__all__ = ["ladder", "MAX_PACKETS", "MAX_LIFELINES"]

LABEL_PREVIEW = 44  # characters of payload summary shown under a data arrow
LABEL_MAX = 160     # characters of any arrow label (a protocol view's too), all lines
MAX_PACKETS = 40    # arrows drawn by default (a notebook scrolls; a slide shows a page)
PAGE_ROWS = 11      # rows of a page= figure: 80 % of it and a 2-line code cell fill a slide
DPI = 100           # the figure's pixels per inch, as notebooks and decks show it
# Points that make 18 px (the smallest text a room reads on a 1280x720 slide) when a deck
# shows the figure at 80 % of its size (its fit(), slides_template/index.html.j2)
FONT = 18 / 0.8 * 72 / DPI  # 16.2 pt
CHAR_INCHES = 0.125  # the width of an average character of FONT (0.55 em)
LABEL_LINES = 4     # lines of a label once wrapped to its arrow's span
_UNBROKEN = re.compile(r"\(\+\d+ bytes\)|\(TTL \d+\)")  # "(+1424 bytes)", "(TTL 300)": one line
MAX_LIFELINES = 12  # wider than this, a figure no longer fits a screen (4.5 inches each)
QUOTE_REACH = 64    # packets back from an ICMP error to look for the one it quotes


def _label(seg: Segment) -> str:
    if seg.dissection is not None:
        text = seg.dissection.label(seg)  # the protocol views of seg's capture
        if text is not None:
            return _shorten(text)
    if seg.length and seg.summary and seg.proto in ("TCP", "UDP"):
        summary = _shorten(seg.summary, LABEL_PREVIEW)
        return f"{seg.label}\n{summary}"  # what was said, under how it travelled
    return _shorten(seg.label)


def _shorten(text: str, limit: int = LABEL_MAX) -> str:
    """Printable text of at most ``limit`` characters (an ellipsis says it was cut)."""
    lines = [printable(line) for line in text.split("\n")][:3]
    text = "\n".join(lines)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _lifelines(segs: list[Segment], order: Sequence[str] | None = None) -> list[str]:
    """Clients on the left, then everything they talk to, in order of appearance; or the
    roles ``order`` names (a lab network's hosts, along its cables) in that order first."""
    seen: dict[str, int] = {}
    for seg in segs:
        for role in (seg.src, seg.dst):
            seen.setdefault(role, len(seen))
    if order:
        place = {role: i for i, role in enumerate(order)}
        return sorted(seen, key=lambda r: (place.get(r, len(place)), seen[r]))
    return sorted(seen, key=lambda r: (not r.startswith("client"), seen[r]))


def ladder(segs: Iterable[Segment], *, title: str | None = None, rows: Rows = None,
           note: str | None = None, warning: str | None = None,
           lost: Collection[int] = (), order: Sequence[str] | None = None,
           page: int | None = None, packets: Rows = None) -> Figure:
    """Draw a sequence diagram: one lifeline per role, one labelled arrow per packet.

    Time runs downwards, one row per packet (so 30+ packets stay legible); the left
    margin gives each packet's time since the first.  ``rows`` picks packets by their row
    number in the table (a slice, range or list; default: the first ``MAX_PACKETS``);
    ``page=n`` draws the n-th slide's worth of them (``PAGE_ROWS`` rows, a two-line label
    counting more; default: every packet) and says under the arrows which page it is and
    what follows; ``note`` is drawn under the arrows (e.g. which connection this is);
    ``warning`` across the top (default: the notice ``wire.segments`` carry).  ``lost``:
    indexes of packets the link dropped (``Segment.index``): their arrows stop half-way,
    at a ✗.  ``order``: lifelines to put first, left to right (a lab network's hosts).
    (``packets=`` is the old name of ``rows=``.)
    """
    rows = rows_or_packets(rows, packets, "ladder")
    warning = warning or getattr(segs, "notice", None)
    everything = list(segs)
    ended = _ended_on_the_way(everything)
    if page is None:
        chosen, left_out = pick(everything, rows, limit=MAX_PACKETS)
        every = chosen
    else:
        every = pick(everything, rows, limit=None)[0]
        chosen, left_out = _page(every, page, _lifelines(every, order), ended)
    roles = _lifelines(chosen, order) or ["client", "server"]
    if page is not None and len(_lifelines(every)) <= MAX_LIFELINES:
        roles = _lifelines(every, order)  # every page: the same lifelines, in the same places
    if len(roles) > MAX_LIFELINES and rows is None:  # the default view: fewer packets
        chosen = _within_lifelines(chosen)
        roles = _lifelines(chosen, order)
        left_out = (f"… {len(everything) - len(chosen)} more packets between more than "
                    f"{MAX_LIFELINES} endpoints; pass connection= or rows= to choose, "
                    "or see wire.connections()")
    if len(roles) > MAX_LIFELINES:
        raise ValueError(
            f"these packets have {len(roles)} endpoints ({', '.join(roles[:4])}, …): a ladder "
            f"of more than {MAX_LIFELINES} lifelines is unreadable; draw one connection "
            "(wire.ladder(connection=1)) or look at wire.connections() for all of them")
    notes = [text for text in (note, left_out) if text]
    x = {role: i for i, role in enumerate(roles)}
    labels = [_wrap(_text_of(seg, ended), seg, x) for seg in chosen]
    ys: list[float] = []
    y = 0.0  # a row per packet, pushed down by a label's extra lines
    for text in labels:
        y += _rows(text) - 1
        ys.append(y)
        y += 1
    n = y + 0.8 * len(notes)
    width = _width(len(roles))
    fig, ax = plt.subplots(figsize=(width, 1.6 + 0.5 * max(n, 1)), dpi=DPI)
    plt.close(fig)  # returned, not auto-shown: the notebook displays it once
    top, bottom = -0.8, y - 0.2
    for role, xi in x.items():
        ax.plot([xi, xi], [top, bottom], color="#999999", lw=2, zorder=1)
        _text(ax, xi, top - 0.15, role, ha="center", va="bottom", fontsize=FONT + 2,
              fontweight="bold")
    for row, label, seg in zip(ys, labels, chosen, strict=True):
        x0, x1 = float(x[seg.src]), float(x[seg.dst])
        color = COLORS[kind(seg)]
        if x0 == x1:  # a packet from a host to itself (rare): draw a short loop
            x1 = x0 + 0.3
        if seg.index in lost:
            tip = _lost_on_the_way(ax, x0, x1, row)
        elif seg.index in ended and ended[seg.index][0] in x:
            host, why, _ttl = ended[seg.index]
            x1 = float(x[host])
            tip = _dropped_at(ax, x0, x1, row, why)
        else:
            tip = (x1, row + 0.36)
        ax.add_patch(FancyArrowPatch((x0, row + 0.12), tip, arrowstyle="-|>",
                                     mutation_scale=22, lw=2.2, color=color, zorder=3))
        _text(ax, (x0 + x1) / 2, row + 0.1, label, ha="center", va="bottom", fontsize=FONT,
              color=color, zorder=4,
              bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
        _text(ax, -0.12, row + 0.24, f"{seg.time * 1000:.2f} ms", ha="right", va="center",
              fontsize=FONT, color="#666666")
    for i, text in enumerate(notes):  # what the figure leaves out, where the eye ends
        _text(ax, (len(roles) - 1) / 2, bottom + 0.5 + 0.8 * i, text, ha="center",
              va="center", fontsize=FONT, style="italic", color="#444444")
    bottom += 0.8 * len(notes)
    ax.set_xlim(-0.55, len(roles) - 0.75)
    ax.set_ylim(bottom + 0.3, top - 0.7)  # inverted: time runs downwards
    ax.axis("off")
    if title:
        ax.set_title(printable(title), fontsize=FONT + 2, pad=12, parse_math=False)
    if not chosen:
        _text(ax, sum(x.values()) / len(x), 0, "(no packets)", ha="center", fontsize=FONT)
    fig.tight_layout()
    show_notice(fig, warning)
    return fig


def _text_of(seg: Segment, ended: dict[int, tuple[str, str, int | None]]) -> str:
    """A packet's label; a probe whose TTL ran out on the way says the TTL it had there."""
    text = _label(seg)
    if seg.index in ended and ended[seg.index][2] is not None:
        first, *rest = text.split("\n")
        text = "\n".join([f"{first} ttl={ended[seg.index][2]}", *rest])
    return text


def _width(lifelines: int) -> float:
    """Inches: room for a payload preview between two lifelines, 4.5 a lifeline for more,
    at most ``WIDEST`` for up to five (a slide shows them at 80 % or more), 3 a lifeline
    beyond (a name hierarchy's client, resolver and three servers fit a slide)."""
    return min(max(11.0, 4.5 * lifelines), max(WIDEST, 3.0 * lifelines))


def _wrap(label: str, seg: Segment, x: dict[str, int]) -> str:
    """``label`` with its lines wrapped to the room between the lifelines ``seg`` joins
    (at most ``LABEL_LINES``), so that no label runs over another arrow or the times."""
    span = abs(x.get(seg.dst, 0) - x.get(seg.src, 0)) or 1
    room = int(span * _width(len(x)) / (max(len(x), 2) - 0.2) / CHAR_INCHES)  # inches apart
    label = _UNBROKEN.sub(lambda m: m[0].replace(" ", "\u00a0"), label)  # "(+1424 bytes)"
    lines = [part for line in label.split("\n")
             for part in textwrap.wrap(line, room, break_on_hyphens=False) or [""]]
    if len(lines) > LABEL_LINES:
        lines = [*lines[:LABEL_LINES - 1], lines[LABEL_LINES - 1].rstrip(" ·") + " …"]
    return "\n".join(lines)


def _rows(label: str) -> float:
    """The rows a label takes: one, and 0.6 more for each line under its first."""
    return 1 + 0.6 * label.count("\n")


def _page(segs: list[Segment], page: int, roles: list[str],
          ended: dict[int, tuple[str, str, int | None]]) -> tuple[list[Segment], str]:
    """The ``page``-th run of ``segs`` that fits ``PAGE_ROWS`` rows (drawn between ``roles``),
    and a note saying which packets it is and what comes next."""
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise ValueError(f"page= counts from 1 (page=1 is the first slide's worth of "
                         f"packets), not {page!r}")
    x = {role: i for i, role in enumerate(roles)}
    start, stop, rows, number = 0, len(segs), 0.0, 1
    for i, seg in enumerate(segs):  # labels only as far as the page asked for
        height = _rows(_wrap(_text_of(seg, ended), seg, x))
        if rows + height > PAGE_ROWS and i > start:  # row i starts the next page
            if number == page:
                stop = i
                break
            start, rows, number = i, 0.0, number + 1
        rows += height
    if number < page:
        raise ValueError(f"page={page} is past the end: these {len(segs)} packets "
                         f"make {number} page{'s' * (number > 1)}")
    chosen = segs[start:stop]
    said = f"page {page}: packets {chosen[0].index} to {chosen[-1].index}" if chosen else \
        f"page {page}"
    more = len(segs) - stop
    return chosen, said + (f"; {more} more on page={page + 1}" if more else " (the last)")


def _lost_on_the_way(ax: Axes, x0: float, x1: float, row: float) -> tuple[float, float]:
    """A packet the link dropped: its arrow ends half-way, where a ✗ marks the loss.
    Returns where the arrow ends."""
    middle = (x0 + x1) / 2
    _text(ax, middle + 0.04 * (1 if x1 > x0 else -1), row + 0.3, "✗", ha="center",
          va="center", fontsize=22, color="#d7191c", fontweight="bold", zorder=5)
    return middle, row + 0.24


def _dropped_at(ax: Axes, x0: float, x1: float, row: float, why: str
                ) -> tuple[float, float]:
    """A packet a router dropped (and said so, in ICMP): its arrow ends at the router's
    lifeline ``x1``, at a ✗ with the reason beside it. Returns where the arrow ends."""
    side = 1 if x1 > x0 else -1
    _text(ax, x1, row + 0.36, "✗", ha="center", va="center", fontsize=20,
          color=COLORS["ICMP"], fontweight="bold", zorder=5)
    _text(ax, x1 + 0.06 * side, row + 0.36, why, ha="left" if side > 0 else "right",
          va="center", fontsize=FONT, color=COLORS["ICMP"], style="italic", zorder=5)
    return x1 - 0.05 * side, row + 0.36


def _ended_on_the_way(segs: list[Segment]) -> dict[int, tuple[str, str, int | None]]:
    """{index of a packet: (the host that dropped it, why, its TTL there if that was why)}
    for every packet an ICMP error quotes whose sender is not the packet's destination:
    a router on the way dropped it (a destination's own error, such as port
    unreachable, means the packet did arrive)."""
    ended: dict[int, tuple[str, str, int | None]] = {}
    for at, seg in enumerate(segs):
        if seg.proto not in ("ICMP", "ICMPv6"):
            continue
        pkt = seg.packet
        message = icmp_message(pkt) if pkt is not None else None
        if pkt is None or message is None or message.quoted is None or (
                message.version == 4 and message.type == REDIRECT):
            continue
        if ip_layer(pkt).src == message.quoted.dst:
            continue  # from the destination itself
        ran_out = 11 if message.version == 4 else 3  # time exceeded (ICMPv6: hop limit)
        for earlier in reversed(segs[max(0, at - QUOTE_REACH):at]):
            probe = earlier.packet
            if earlier.proto not in ("ARP", "NDP") and probe is not None \
                    and quotes(message, probe):
                layer = ip_layer(probe)
                ttl = int(layer.ttl if layer.version == 4 else layer.hlim) \
                    if message.type == ran_out else None
                ended[earlier.index] = (seg.src, why_dropped(message), ttl)
                break
    return ended


def _within_lifelines(segs: list[Segment]) -> list[Segment]:
    """The longest run of packets from the start that keeps to ``MAX_LIFELINES`` roles."""
    roles: set[str] = set()
    for i, seg in enumerate(segs):
        roles |= {seg.src, seg.dst}
        if len(roles) > MAX_LIFELINES:
            return segs[:i]
    return segs


def _text(ax: Axes, x: float, y: float, text: str, **style: Any) -> Text:
    """Text as it is: ``$`` in a payload is a dollar sign, never matplotlib's mathtext."""
    return ax.text(x, y, text, parse_math=False, **style)
