"""A browser-style timing waterfall: where the time of each HTTP request went.

The notebook measures (``time.perf_counter()`` around its own socket calls) and
keeps the numbers in a :class:`Timing`; :func:`waterfall` only draws them.

    >>> t = Timing("/slow", start, connected, sent, first_byte, last_byte, nbytes=12)
    >>> t.durations
    {'connect': 0.0001, 'send': 3e-05, 'wait': 0.5002, 'receive': 4e-05}
    >>> waterfall([t])
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from labkit.views.plotting import plt

__all__ = ["Timing", "waterfall", "PHASES"]

# phase -> (what it is, colour); the order is the order they happen in.
PHASES = {
    "connect": ("TCP handshake (connect)", "#e66101"),
    "send": ("request sent (sendall)", "#1b7837"),
    "wait": ("waiting for the first byte", "#999999"),
    "receive": ("first → last byte (download)", "#2166ac"),
}


@dataclass(frozen=True)
class Timing:
    """Clock readings (seconds, any common clock) for one request, in order.

    Attributes:
        label: the request's name on the waterfall's row (``"/slow"``)
        start: just before ``connect()``
        connected: ``connect()`` returned: the handshake is done
        sent: ``sendall()`` of the request returned
        first_byte: the first ``recv()`` returned data
        last_byte: the last byte of the response was received
        nbytes: response bytes received (head and body)
    """

    label: str
    start: float
    connected: float
    sent: float
    first_byte: float
    last_byte: float
    nbytes: int = 0

    def __post_init__(self) -> None:
        marks = [self.start, self.connected, self.sent, self.first_byte, self.last_byte]
        if any(later < earlier for earlier, later in itertools.pairwise(marks)):
            raise ValueError(
                f"Timing {self.label!r}: readings must not go back in time "
                f"(start ≤ connected ≤ sent ≤ first_byte ≤ last_byte), got {marks}; "
                "take them with one clock, e.g. time.perf_counter(), in that order"
            )

    @property
    def durations(self) -> dict[str, float]:
        """Seconds spent in each phase: connect, send, wait, receive."""
        return {"connect": self.connected - self.start, "send": self.sent - self.connected,
                "wait": self.first_byte - self.sent, "receive": self.last_byte - self.first_byte}

    @property
    def total(self) -> float:
        """Seconds from ``start`` to ``last_byte``: the whole request."""
        return self.last_byte - self.start

    def relative_to(self, t0: float, label: str | None = None) -> Timing:
        """The same request with its clock readings counted from ``t0`` (to line up groups)."""
        return Timing(label or self.label, self.start - t0, self.connected - t0, self.sent - t0,
                      self.first_byte - t0, self.last_byte - t0, self.nbytes)


def _fmt_ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.2f} ms" if ms >= 0.1 else f"{ms * 1000:.0f} µs"


def waterfall(timings: Iterable[Timing], *, title: str | None = None) -> Figure:
    """One row per request, bars coloured by phase on a shared time axis in ms."""
    timings = list(timings)
    if not timings:
        raise ValueError("waterfall() needs at least one Timing to draw")
    if not all(isinstance(t, Timing) for t in timings):
        bad = next(t for t in timings if not isinstance(t, Timing))
        raise TypeError(f"waterfall() takes Timing objects, not {type(bad).__name__}")
    t0 = min(t.start for t in timings)
    end = max(t.last_byte for t in timings) - t0
    fig, ax = plt.subplots(figsize=(13, 1.9 + 1.1 * len(timings)))
    plt.close(fig)  # returned, not auto-shown: the notebook displays it once
    for row, t in enumerate(timings):
        left = (t.start - t0) * 1000
        for phase, seconds in t.durations.items():
            ax.barh(row, seconds * 1000, left=left, height=0.5, color=PHASES[phase][1],
                    edgecolor=PHASES[phase][1], linewidth=1.5)  # edge: µs phases stay visible
            left += seconds * 1000
        parts = " · ".join(f"{p} {_fmt_ms(s)}" for p, s in t.durations.items())
        ax.text(0, row - 0.36, f"total {_fmt_ms(t.total)}:  {parts}", va="bottom",
                fontsize=12, color="#333333")
    ax.set_yticks(range(len(timings)), [t.label for t in timings], fontsize=14)
    ax.set_ylim(len(timings) - 0.5, -0.9)  # first request on top, like a browser
    ax.set_xlim(0, end * 1000 * 1.02 or 1)
    ax.set_xlabel("time since the first request started (ms)", fontsize=14)
    ax.tick_params(axis="x", labelsize=12)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(handles=[Patch(color=c, label=text) for text, c in PHASES.values()],
               loc="lower center", ncol=4, fontsize=12, frameon=False)
    if title:
        ax.set_title(title, fontsize=16, pad=10)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
    return fig
