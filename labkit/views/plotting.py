"""The one place that picks matplotlib's backend; every labkit figure imports ``plt`` here.

    >>> from labkit.views.plotting import plt
    >>> fig, ax = plt.subplots()
    >>> show_notice(fig, wire.notice)   # a capture's ⚠ across the top of a finished figure

Outside Jupyter (tests, ``python -m labkit record``) there is no display: Agg draws
to memory.  In a notebook the inline (or widget) backend is already chosen: keep it.
"""

from __future__ import annotations

import re
import textwrap
from typing import TYPE_CHECKING

import matplotlib

if not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "ipympl", "widget")):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # only after the backend is chosen

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plt", "show_notice", "WIDEST"]

# Inches (at matplotlib's 100 dpi: 1500 px) a figure may be wide and still be shown at 80 % of
# its size or more on a 1280x720 slide, the least the decks allow (slides_template's fit())
WIDEST = 15.0

NOTICE_COLOR = "#b2182b"
_NOTICE_FONT = 13       # points
_CHARS_PER_INCH = 8.0   # of that font: how long a line may be
_LINE_INCHES = 0.26


def show_notice(fig: Figure, notice: str | None) -> None:
    """Write ``notice`` (a capture's ⚠ lines) across the top of ``fig``, inside the figure:
    a saved or projected picture keeps it.  The figure grows by the lines' height."""
    if not notice:
        return
    width, height = fig.get_size_inches()
    whole = re.sub(r"`[^`]*`", lambda code: code[0].replace(" ", "\u00a0"), notice)  # `a b`
    lines = [part for line in whole.split("\n")                                   # unbroken
             for part in textwrap.wrap(line, int(width * _CHARS_PER_INCH))]
    extra = _LINE_INCHES * len(lines) + 0.25
    fig.set_size_inches(width, height + extra)
    fig.text(0.5, 1 - 0.1 / (height + extra), "\n".join(lines), ha="center", va="top",
             fontsize=_NOTICE_FONT, color=NOTICE_COLOR, fontweight="bold", parse_math=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - extra / (height + extra)))
