"""Throughput models to hold measurements against: Mathis et al., and the seed models.

    >>> mathis_throughput(mss=1448, rtt=0.040, loss=0.01) * 8 / 1e6    # Mbit/s
    3.5468...
    >>> transfer_time(100_000, rtt=0.040, rate=12.5e6)                  # seconds, slow start in
    0.1645...

Mathis, Semke, Mahdavi & Ott (1997), "The macroscopic behavior of the TCP congestion
avoidance algorithm": a long TCP transfer that loses a fraction ``p`` of its segments
settles at ``MSS/RTT · C/√p`` (``C = √(3/2)`` for periodic loss and an ACK per segment).
"""

from __future__ import annotations

import math

__all__ = ["MATHIS_C", "mathis_throughput", "transfer_time", "naive_transfer_time",
           "slow_start_rounds", "fit_saturating_ramp", "INITIAL_WINDOW"]

MATHIS_C = math.sqrt(3 / 2)
INITIAL_WINDOW = 10   # segments a Linux sender may send before the first ACK (RFC 6928)


def _positive(value, name: str, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number ({example}), not {value!r}")
    return float(value)


def mathis_throughput(*, mss: float, rtt: float, loss: float, c: float = MATHIS_C) -> float:
    """Bytes per second a long TCP transfer settles at: ``MSS/RTT · C/√p``.

    ``mss`` in bytes, ``rtt`` in seconds, ``loss`` a fraction (0.01 for 1 %)."""
    mss = _positive(mss, "mss", "bytes per segment, e.g. 1448")
    rtt = _positive(rtt, "rtt", "seconds, e.g. 0.040 for 40 ms")
    loss = _positive(loss, "loss", "a fraction, e.g. 0.01 for 1 %")
    if loss >= 1:
        raise ValueError(f"loss must be a fraction below 1 (0.01 for 1 %), not {loss!r}")
    return mss / rtt * c / math.sqrt(loss)


def slow_start_rounds(nbytes: int, *, mss: int = 1448, iw: int = INITIAL_WINDOW) -> int:
    """Round trips slow start needs to send ``nbytes`` (window ``iw`` doubling each RTT)."""
    segments = math.ceil(nbytes / mss)
    return max(1, math.ceil(math.log2(segments / iw + 1)))


def naive_transfer_time(nbytes: int, *, rtt: float, rate: float) -> float:
    """The seed model ``T = Ts + Tt + Tr``: set up (a handshake, one RTT), transmit
    ``nbytes`` at ``rate`` bytes/s, respond (the last byte's trip there and the answer's
    trip back: one RTT)."""
    return rtt + nbytes / rate + rtt


def transfer_time(nbytes: int, *, rtt: float, rate: float, mss: int = 1448,
                  iw: int = INITIAL_WINDOW) -> float:
    """``T`` with slow start in: one RTT of handshake, then each round sends a window that
    doubles from ``iw`` segments, until the window is worth more than the link can carry
    in one RTT (``rate · rtt``); from then on the link's rate is the limit."""
    rtt = _positive(rtt, "rtt", "seconds")
    rate = _positive(rate, "rate", "bytes per second")
    t, sent, window = rtt, 0, iw * mss   # the handshake
    while sent + window < nbytes and window < rate * rtt:
        sent += window      # one window, then wait one RTT for its ACKs
        window *= 2
        t += rtt
    return t + (nbytes - sent) / rate + rtt


def fit_saturating_ramp(times: list[float], rates: list[float]) -> tuple[float, float]:
    """Fit the seed model ``R(t) = R_max · (1 - e^(-k t))`` by least squares over ``k``
    (``R_max`` is the largest rate seen).  Returns ``(r_max, k)``."""
    if len(times) != len(rates) or len(times) < 2:
        raise ValueError("fit_saturating_ramp needs as many rates as times, at least 2")
    r_max = max(rates)

    def error(k: float) -> float:
        return sum((r - r_max * (1 - math.exp(-k * t))) ** 2
                   for t, r in zip(times, rates, strict=True))

    ks = [10 ** (e / 20) for e in range(-40, 101)]   # 0.01 to 1e5 per second, log-spaced
    return r_max, min(ks, key=error)
