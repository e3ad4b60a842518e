"""Figures of measurements: round-trip times, throughput per write size, load sweeps.

    >>> rtt_figure({"Nagle on": [0.040, 0.041], "TCP_NODELAY": [0.0001, 0.0002]})
    >>> throughput_figure([64, 65536], [2e7, 1.5e9])
    >>> plot_load({"threads": {1: result_1, 8: result_8}}, title="echo under load")

Each returns a matplotlib figure (shown by Jupyter; closed from pyplot's list, so a
notebook shows it once).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from labkit.views.plotting import plt

if TYPE_CHECKING:
    from labkit.servers.load import LoadResult

__all__ = ["rtt_figure", "throughput_figure", "plot_load"]


def rtt_figure(rtts: dict[str, list[float]], *, title: str | None = None) -> Figure:
    """Round-trip times in seconds per setting -> a strip plot in ms (log scale)."""
    if not rtts or not all(rtts.values()):
        raise ValueError("rtt_figure needs {setting: [round-trip seconds, ...]} with data")
    fig, ax = plt.subplots(figsize=(10, 5.5))
    plt.close(fig)
    medians = {}
    for i, (label, values) in enumerate(rtts.items()):
        ms = sorted(v * 1000 for v in values)
        medians[label] = ms[len(ms) // 2]
        color = ["#d01c8b", "#1b7837", "#2166ac"][i % 3]
        ax.scatter([i] * len(ms), ms, s=80, alpha=0.6, color=color)
        ax.text(i + 0.08, medians[label], f"median {medians[label]:.2f} ms",
                fontsize=15, va="center")
    ax.set_xticks(range(len(rtts)), list(rtts), fontsize=15)
    ax.set_xlim(-0.5, len(rtts) - 0.1)
    ax.set_yscale("log")
    ax.set_ylabel("round-trip time (ms, log scale)", fontsize=15)
    ax.tick_params(axis="y", labelsize=13)
    ax.grid(axis="y", alpha=0.3)
    if title is None:
        slow, fast = max(medians.values()), min(medians.values())
        title = f"Small request/response on loopback: {slow / fast:.0f}× slower with Nagle"
    ax.set_title(title, fontsize=16)
    fig.tight_layout()
    return fig


def throughput_figure(sizes: list[int], rates: list[float], *, title: str | None = None
                      ) -> Figure:
    """Write size (bytes) vs throughput (bytes/s) -> a log-x line plot in MB/s."""
    if len(sizes) != len(rates) or not sizes:
        raise ValueError("throughput_figure needs one rate per write size, and at least one")
    fig, ax = plt.subplots(figsize=(10, 5.5))
    plt.close(fig)
    mbs = [r / 1e6 for r in rates]
    ax.plot(sizes, mbs, "o-", lw=3, ms=10, color="#2166ac")
    for x, y in zip(sizes, mbs, strict=True):
        ax.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, 10),
                    ha="center", fontsize=13)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [f"{s // 1024} KiB" if s >= 1024 else f"{s} B" for s in sizes],
                  fontsize=13)
    ax.set_xlabel("bytes per send() call", fontsize=15)
    ax.set_ylabel("throughput (MB/s)", fontsize=15)
    ax.tick_params(axis="y", labelsize=13)
    ax.set_ylim(0, max(mbs) * 1.2)
    ax.grid(alpha=0.3)
    if title is None:
        title = (f"Same loopback, same bytes: {max(mbs) / min(mbs):.0f}× more throughput "
                 "with big writes")
    ax.set_title(title, fontsize=16)
    fig.tight_layout()
    return fig


# -- a picture of a sweep --------------------------------------------------------------------------
def plot_load(results: dict[str, dict[int, LoadResult]], *, title: str) -> Figure:
    """Throughput and p50/p99 latency versus concurrent clients, one line per design.

    ``results`` maps a design name to ``{clients: LoadResult}``.
    """
    if not results:
        raise ValueError("plot_load needs results: {design: {clients: LoadResult}}")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 6.5))
    plt.close(fig)
    colors = ["#d01c8b", "#2166ac", "#1b7837", "#e66101", "#5e3c99", "#555555"]
    for (design, runs), color in zip(results.items(), itertools.cycle(colors)):
        xs = sorted(runs)
        ax1.plot(xs, [runs[x].rps for x in xs], "o-", color=color, lw=3, ms=8, label=design)
        ax2.plot(xs, [runs[x].p50_ms for x in xs], "o-", color=color, lw=3, ms=8,
                 label=f"{design} p50")
        ax2.plot(xs, [runs[x].p99_ms for x in xs], "s--", color=color, lw=2, ms=7,
                 label=f"{design} p99")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients", fontsize=15)
        ax.tick_params(labelsize=13)
        ax.grid(True, alpha=0.3, which="both")
        xs = sorted({x for runs in results.values() for x in runs})
        ax.set_xticks(xs, [str(x) for x in xs])
    ax1.set_ylabel("throughput (requests/s)", fontsize=15)
    ax1.set_ylim(bottom=0)
    ax1.set_title("throughput", fontsize=16)
    ax1.legend(fontsize=13)
    ax2.set_yscale("log")
    ax2.set_ylabel("latency (ms, log scale)", fontsize=15)
    ax2.set_title("latency: p50 (solid) and p99 (dashed)", fontsize=16)
    ax2.legend(fontsize=11, ncol=2)
    fig.suptitle(title, fontsize=17, fontweight="bold")
    fig.tight_layout()
    return fig
