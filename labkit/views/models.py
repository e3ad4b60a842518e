"""Throughput models to hold measurements against: Mathis et al., and a transfer's time
with slow start in (what the course notes' ``T = Ts + Tt + Tr`` leaves out).

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

__all__ = ["MATHIS_C", "mathis_throughput", "transfer_time", "slow_start_rounds",
           "INITIAL_WINDOW"]

MATHIS_C = math.sqrt(3 / 2)
INITIAL_WINDOW = 10   # segments a Linux sender may send before the first ACK (RFC 6928)


def _positive(value: object, name: str, example: str) -> float:
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
