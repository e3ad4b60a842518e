"""Figures of TCP on an impaired link: the congestion window, throughput against Mathis,
RTT under a growing queue, and the course notes' transfer-time model against what was
measured.

    >>> cwnd_figure(sampler.samples)                       # TcpInfo samples over time
    >>> mathis_figure({0.01: 3.1e5, 0.04: 1.6e5}, mss=1448, rtt=0.04)
    >>> bufferbloat_figure({"10 packets": [0.021, ...], "1000 packets": [0.090, ...]})

Each returns a matplotlib figure, its title computed from the data unless given.
"""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from labkit.views.models import MATHIS_C, mathis_throughput
from labkit.views.plotting import plt

if TYPE_CHECKING:
    from labkit.capture.tcpinfo import TcpInfo

__all__ = ["cwnd_figure", "backoffs", "per_round_trip", "mathis_figure", "bufferbloat_figure",
           "transfer_time_figure", "ramp_figure"]

MBIT = 8 / 1e6   # bytes/s -> Mbit/s



def _style(ax: Axes, xlabel: str, ylabel: str) -> None:
    """Axes as every figure here draws them: large labels, y from 0, a light grid."""
    ax.set_xlabel(xlabel, fontsize=15)
    ax.set_ylabel(ylabel, fontsize=15)
    ax.set_ylim(bottom=0)
    ax.tick_params(labelsize=13)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=12, loc="upper left")

def backoffs(samples: list[TcpInfo]) -> list[tuple[TcpInfo, TcpInfo]]:
    """Each time the sender backed off at a loss: (the last sample before, the first after)
    ``ssthresh`` came down (to about half the window, for Reno)."""
    return [(before, after) for before, after in pairwise(samples)
            if after.ssthresh < before.ssthresh]


def per_round_trip(samples: list[TcpInfo], rtt: float) -> tuple[list[float], list[float]]:
    """The delivery rate (bytes/s), read once per round trip: ``TCP_INFO``'s
    ``delivery_rate``, which the kernel measures at each ACK over the data delivered in
    about the last round trip (so a sampler that runs late does not distort it).
    Returns (seconds since the first sample, rate)."""
    if rtt <= 0 or len(samples) < 2:
        raise ValueError("per_round_trip needs rtt > 0 (seconds) and at least 2 samples")
    times, rates, due = [], [], samples[0].t + rtt
    for sample in samples:
        if sample.t >= due:
            times.append(sample.t - samples[0].t)
            rates.append(sample.delivery_rate)
            due = sample.t + rtt
    return times, rates


def cwnd_figure(samples: list[TcpInfo], *, title: str | None = None) -> Figure:
    """The congestion window (segments) over time, with ssthresh and each retransmission."""
    if len(samples) < 2:
        raise ValueError("cwnd_figure needs at least 2 TcpInfo samples (a CwndSampler's)")
    fig, ax = plt.subplots(figsize=(12, 6))
    plt.close(fig)
    ms = [s.t * 1000 for s in samples]
    ax.step(ms, [s.cwnd for s in samples], where="post", color="#2166ac", lw=2.5,
            label="cwnd: segments the sender may have in flight")
    # ssthresh is "infinite" (2^31 - 1) until the first loss: draw it only once it means something
    real = [(m, s.ssthresh) for m, s in zip(ms, samples, strict=True) if s.ssthresh < 1 << 30]
    if real:
        ax.step([m for m, _ in real], [v for _, v in real], where="post", color="#e66101",
                lw=2, ls="--", label="ssthresh: where slow start stops")
    shown = False
    for before, after in pairwise(samples):
        if after.total_retrans > before.total_retrans:
            ax.axvline(after.t * 1000, color="#d7191c", alpha=0.5, lw=1.5,
                       label=None if shown else "a segment retransmitted")
            shown = True
    spans, begin = [], None   # each stretch of slow start (again after a timeout)
    for m, s in zip(ms, samples, strict=True):
        if s.in_slow_start and begin is None:
            begin = m
        elif not s.in_slow_start and begin is not None:
            spans.append((begin, m))
            begin = None
    if begin is not None:
        spans.append((begin, ms[-1]))
    for i, (a, b) in enumerate(spans):
        ax.axvspan(a, b, color="#a6dba0", alpha=0.25, label=None if i else "slow start")
    _style(ax, "time since the transfer began (ms)", "segments")
    if title is None:
        cuts = backoffs(samples)
        peak = max(s.cwnd for s in samples)
        title = (f"cwnd grew to {peak} segments; {len(cuts)} back-off(s)"
                 + (f", the first at cwnd {cuts[0][0].cwnd} → ssthresh {cuts[0][1].ssthresh}"
                    if cuts else ""))
    ax.set_title(title, fontsize=16)
    fig.tight_layout()
    return fig


def mathis_figure(by_loss: dict[float, float], *, mss: int, rtt: float,
                  by_rtt: dict[float, float] | None = None, loss: float | None = None,
                  title: str | None = None) -> Figure:
    """Measured throughput (bytes/s) against ``MSS/RTT · C/√p``: by loss rate at ``rtt``,
    and (``by_rtt``, at loss ``loss``) by round-trip time."""
    if not by_loss or (by_rtt and not loss):
        raise ValueError("mathis_figure needs {loss: bytes/s}, and loss= with by_rtt")
    panels = 2 if by_rtt else 1
    # two panels at most 15 inches: a 1280x720 slide still shows them at 80 % or more
    fig, axes = plt.subplots(1, panels, figsize=(7.5 * panels, 6), squeeze=False)
    plt.close(fig)
    ax = axes[0][0]
    ps = sorted(by_loss)
    curve = [ps[0] * (ps[-1] / ps[0]) ** (i / 50) for i in range(51)]
    ax.plot([p * 100 for p in curve],
            [mathis_throughput(mss=mss, rtt=rtt, loss=p) * MBIT for p in curve],
            color="#555555", lw=2, label=f"Mathis: MSS/RTT · {MATHIS_C:.2f}/√p")
    ax.plot([p * 100 for p in ps], [by_loss[p] * MBIT for p in ps], "o", ms=11,
            color="#d01c8b", label="measured")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([p * 100 for p in ps], [f"{p * 100:g} %" for p in ps])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("loss rate, log scale", fontsize=15)
    ax.set_ylabel("throughput (Mbit/s), log scale", fontsize=15)
    ax.set_title(f"by loss, RTT {rtt * 1000:.0f} ms", fontsize=15)
    if by_rtt:
        assert loss is not None
        bx = axes[0][1]
        rs = sorted(by_rtt)
        grid = [rs[0] + (rs[-1] - rs[0]) * i / 50 for i in range(51)]
        bx.plot([r * 1000 for r in grid],
                [mathis_throughput(mss=mss, rtt=r, loss=loss) * MBIT for r in grid],
                color="#555555", lw=2, label="Mathis: ∝ 1/RTT")
        bx.plot([r * 1000 for r in rs], [by_rtt[r] * MBIT for r in rs], "o", ms=11,
                color="#2166ac", label="measured")
        bx.set_xlabel("round-trip time (ms)", fontsize=15)
        bx.set_ylabel("throughput (Mbit/s)", fontsize=15)
        bx.set_ylim(bottom=0)
        bx.set_title(f"by RTT, loss {loss * 100:g} %", fontsize=15)
    for a in axes[0]:
        a.tick_params(labelsize=13)
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=12)
    if title is None:
        ratios = [by_loss[p] / mathis_throughput(mss=mss, rtt=rtt, loss=p) for p in ps]
        title = (f"Measured / Mathis: {min(ratios):.2f} to {max(ratios):.2f} over "
                 f"{ps[0] * 100:g}-{ps[-1] * 100:g} % loss")
    fig.suptitle(title, fontsize=17)
    fig.tight_layout()
    return fig


def bufferbloat_figure(rtts: dict[str, list[float]], *, base_rtt: float | None = None,
                       title: str | None = None) -> Figure:
    """RTT samples (seconds) under load, one box per queue size: a bigger queue, a
    longer wait, and no more throughput."""
    if not rtts or not all(rtts.values()):
        raise ValueError("bufferbloat_figure needs {queue: [RTT seconds, ...]} with data")
    fig, ax = plt.subplots(figsize=(11, 6))
    plt.close(fig)
    labels = list(rtts)
    ax.boxplot([[r * 1000 for r in rtts[k]] for k in labels], widths=0.5)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=13)
    if base_rtt:
        ax.axhline(base_rtt * 1000, color="#1b7837", ls="--", lw=2,
                   label=f"RTT of the empty link, {base_rtt * 1000:.0f} ms")
        ax.legend(fontsize=12, loc="upper left")
    ax.set_xlabel("queue at the bottleneck", fontsize=15)
    ax.set_ylabel("round-trip time under load (ms)", fontsize=15)
    ax.set_ylim(bottom=0)
    ax.tick_params(axis="y", labelsize=13)
    ax.grid(axis="y", alpha=0.3)
    if title is None:
        med = {k: sorted(v)[len(v) // 2] for k, v in rtts.items()}
        title = (f"Median RTT under load: {med[labels[0]] * 1000:.0f} ms with "
                 f"{labels[0]}, {med[labels[-1]] * 1000:.0f} ms with {labels[-1]}")
    ax.set_title(title, fontsize=16)
    fig.tight_layout()
    return fig


def transfer_time_figure(sizes: list[int], measured: list[float], seed_model: list[float],
                         corrected: list[float], *, title: str | None = None) -> Figure:
    """Transfer time vs size: measured; the course notes' ``T = Ts + Tt + Tr`` (each term
    measured: server and client processing, two round trips of network delay); and that
    model with the network's share corrected (slow start's round trips, ``B / rate``)."""
    if not len(sizes) == len(measured) == len(seed_model) == len(corrected) or not sizes:
        raise ValueError("transfer_time_figure needs one time per size in every list")
    fig, ax = plt.subplots(figsize=(11, 6))
    plt.close(fig)
    ax.plot(sizes, [t * 1000 for t in measured], "o", ms=11, color="#d01c8b", label="measured")
    ax.plot(sizes, [t * 1000 for t in seed_model], "--", lw=2, color="#555555",
            label="T = Ts + Tt + Tr (processing at both ends + two round trips)")
    ax.plot(sizes, [t * 1000 for t in corrected], "-", lw=2.5, color="#1b7837",
            label="corrected: + slow start's round trips + B / rate")
    ax.set_xscale("log")
    ax.set_xlabel("bytes transferred (log scale)", fontsize=15)
    ax.set_ylabel("time to deliver (ms)", fontsize=15)
    ax.tick_params(labelsize=13)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=12, loc="upper left")
    if title is None:
        worst = max(range(len(sizes)), key=lambda i: measured[i] / seed_model[i])
        title = (f"Ts + Tt + Tr misses by {measured[worst] / seed_model[worst]:.1f}× at "
                 f"{sizes[worst]:,} bytes; the transfer itself explains it")
    ax.set_title(title, fontsize=16)
    fig.tight_layout()
    return fig


def ramp_figure(times: list[float], rates: list[float], *, rtt: float,
                link_rate: float | None = None, title: str | None = None) -> Figure:
    """Delivery rate over time, one point per round trip (bytes/s), and the link's rate:
    slow start doubles it each round trip until the link is full."""
    if len(times) != len(rates) or len(times) < 2:
        raise ValueError("ramp_figure needs as many rates as times, at least 2")
    fig, ax = plt.subplots(figsize=(11, 6))
    plt.close(fig)
    if link_rate:
        ax.axhline(link_rate * MBIT, color="#555555", ls="--", lw=2,
                   label=f"the link's rate, {link_rate * MBIT:g} Mbit/s")
    ax.plot([t * 1000 for t in times], [r * MBIT for r in rates], "o-", ms=9, lw=2,
            color="#2166ac", label=f"measured, per round trip ({rtt * 1000:.0f} ms)")
    _style(ax, "time since the connection began (ms)", "delivery rate (Mbit/s)")
    ax.legend(fontsize=12, loc="lower right")
    if title is None:
        doublings = sum(1 for a, b in pairwise(rates) if b >= 1.6 * a > 0)
        reached = (f"filled the {link_rate * MBIT:g} Mbit/s link"
                   if link_rate and max(rates) >= 0.9 * link_rate
                   else f"reached {max(rates) * MBIT:.0f} Mbit/s")
        title = f"Slow start: the rate doubled {doublings} times, then {reached}"
    ax.set_title(title, fontsize=16)
    fig.tight_layout()
    return fig
