"""What a bad link does to each frame: a pure, seeded model (no sockets, no threads).

``Impairment`` is the settings, checked when made; ``LinkModel`` applies them to one
direction's frames, one call per frame, and says each frame's fate and when it leaves::

    >>> model = LinkModel(Impairment(delay=0.020, loss=0.01, seed=1), stream=0)
    >>> fate = model.admit(now=0.0, size=1500)      # fate.kind, fate.due
    >>> fate.kind, round(fate.due, 3)
    ('delivered', 0.02)

The same settings and seed give the same fate to the same frame number, every run: the
random numbers depend on nothing but the seed and the order of the frames (a rate limit's
queue also depends on when frames come, as a real queue does).

Order of the decisions for one frame: loss (random ``loss``, or bursty ``burst``) → the
queue in front of the bottleneck (``rate`` or a Mahimahi ``trace``; a full queue drops the
frame at its tail) → serialisation → ``delay`` + ``jitter`` (frames keep their order:
jitter never overtakes, as on a real link) → ``duplicate`` → ``reorder`` (this frame is
held back and leaves just after the next one).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

OPPORTUNITY = 1500  # bytes per delivery opportunity in a Mahimahi trace


@dataclass(frozen=True)
class GilbertElliott:
    """Bursty loss: a good and a bad state, as ``tc netem loss gemodel p r 1-h 1-k``.

    ``p``: chance per frame of going good → bad; ``r``: bad → good. In the bad state a
    frame is lost with ``loss_bad``, in the good state with ``loss_good``. Mean burst
    length 1/r frames; mean loss ``mean_loss``.

        >>> GilbertElliott(p=0.01, r=0.25).mean_loss     # bursts of 4, 3.8 % lost

    Attributes:
        p: the chance per frame of going from the good state to the bad one
        r: the chance per frame of going from the bad state back to the good one
        loss_bad: the chance a frame is lost in the bad state
        loss_good: the chance a frame is lost in the good state
    """

    p: float
    r: float
    loss_bad: float = 1.0
    loss_good: float = 0.0

    def __post_init__(self):
        for name in ("p", "r", "loss_bad", "loss_good"):
            _check_probability(f"burst.{name}", getattr(self, name))
        if self.r == 0:
            raise ValueError("burst.r must be > 0 (the bad state must end), e.g. r=0.25")

    @property
    def mean_loss(self) -> float:
        """The fraction of frames lost in the long run."""
        bad = self.p / (self.p + self.r)
        return bad * self.loss_bad + (1 - bad) * self.loss_good


@dataclass(frozen=True)
class Impairment:
    """One direction's impairments; a bad value raises ValueError before anything starts.

        >>> Impairment(delay=0.020, loss=0.01, seed=1)
        >>> Impairment(rate=10e6, queue="100 packets")

    Attributes:
        delay: seconds each frame takes, one way
        jitter: seconds of normal spread around ``delay``
        loss: the chance a frame is lost (0.01 = 1 %)
        burst: bursty loss instead: a :class:`GilbertElliott` (given as one, a dict or a tuple)
        duplicate: the chance a frame arrives twice
        reorder: the chance a frame is held back and arrives after the next one
        rate: the bottleneck in bit/s (IP bytes, as Mahimahi counts), or None
        queue: the bottleneck's buffer: bytes (≥ one MTU) or ``"100 packets"``; None: no
            limit (needs ``rate`` or ``trace``)
        mtu: the largest IP packet in bytes; bigger frames are dropped
        trace: a Mahimahi delivery trace instead of ``rate``: a path or a list of ms, one
            per 1500-byte delivery opportunity, looping
        seed: the random generator's seed: the same seed, the same fates
        queue_limit: ``queue`` parsed: ``(size, "bytes" or "packets")``, or None
        opportunities: ``trace`` read: the ms of each delivery opportunity
    """

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    burst: GilbertElliott | dict | tuple | None = None
    duplicate: float = 0.0
    reorder: float = 0.0
    rate: float | None = None
    queue: int | str | None = None
    mtu: int = 1500
    trace: str | Path | Sequence[int] | None = None
    seed: int = 0
    # parsed forms of queue and trace (filled in by __post_init__)
    queue_limit: tuple[int, str] | None = field(default=None, init=False, repr=False)
    opportunities: tuple[int, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self):
        for name in ("delay", "jitter"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0 or value > 60:
                raise ValueError(f"{name} must be seconds in 0-60 (e.g. 0.020 for 20 ms), "
                                 f"not {value!r}")
        for name in ("loss", "duplicate", "reorder"):
            _check_probability(name, getattr(self, name))
        if self.burst is not None:
            burst = self.burst
            if isinstance(burst, dict):
                burst = GilbertElliott(**burst)
            elif isinstance(burst, tuple | list):
                burst = GilbertElliott(*burst)
            elif not isinstance(burst, GilbertElliott):
                raise ValueError(f"burst must be GilbertElliott(p, r), a dict or a tuple "
                                 f"(p, r), not {burst!r}")
            if self.loss:
                raise ValueError("give loss= (random) or burst= (Gilbert-Elliott), not both")
            object.__setattr__(self, "burst", burst)
        if self.rate is not None and (not _is_number(self.rate) or self.rate <= 0):
            raise ValueError(f"rate must be bits per second > 0 (e.g. 10e6 for 10 Mbit/s) "
                             f"or None, not {self.rate!r}")
        if not isinstance(self.mtu, int) or isinstance(self.mtu, bool) \
                or not 68 <= self.mtu <= 65535:
            raise ValueError(f"mtu must be an int in 68-65535 (e.g. 1500), not {self.mtu!r}")
        if self.trace is not None:
            if self.rate is not None:
                raise ValueError("give rate= or trace= (a varying rate), not both")
            object.__setattr__(self, "opportunities", _read_trace(self.trace))
        if self.queue is not None:
            if self.rate is None and self.trace is None:
                raise ValueError("queue= is the buffer in front of a bottleneck: give rate= "
                                 "(bit/s) or trace= too")
            object.__setattr__(self, "queue_limit", _read_queue(self.queue, self.mtu))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an int, not {self.seed!r}")

    @property
    def transparent(self) -> bool:
        """Does every frame leave at once, in order (the forwarder's fast path)?"""
        return not (self.delay or self.jitter or self.rate or self.trace is not None
                    or self.duplicate or self.reorder)


@dataclass
class Fate:
    """What happens to one frame: ``kind`` and, unless dropped, when it leaves (``due``)."""

    kind: str  # "delivered", "dropped" (loss or MTU), "queue_dropped"
    due: float = 0.0
    number: int = 0  # the frame's number in its direction, from 0
    duplicate: bool = False  # send a second copy just after it
    hold: bool = False  # reorder: leave after the next frame instead


class LinkModel:
    """One direction of the link; ``admit`` decides each frame's fate in arrival order.

    ``now`` is any monotonic clock in seconds (the forwarder passes time.monotonic()).
    ``stream`` picks this direction's own random sequence from the seed.
    """

    def __init__(self, impairment: Impairment, stream: int = 0):
        self.impairment = impairment
        self.rng = random.Random(impairment.seed * 2 + stream)
        self.frames = 0
        self._bad = False  # Gilbert-Elliott state
        self._busy_until = 0.0  # the bottleneck ends sending what it has by then
        self._queued: deque[tuple[float, int]] = deque()  # (leaves bottleneck, bytes)
        self._queued_bytes = 0
        self._last_due = 0.0
        self._origin: float | None = None  # trace time 0
        self._opportunity = 0  # index of the next delivery opportunity
        self._left = OPPORTUNITY  # bytes still free in it

    def reconfigure(self, impairment: Impairment) -> None:
        """New settings from the next frame on; the random sequence goes on where it was."""
        if impairment.opportunities != self.impairment.opportunities:
            self._origin, self._opportunity, self._left = None, 0, OPPORTUNITY
        self.impairment = impairment

    def lost(self) -> bool:
        """Draw this frame's loss (random or Gilbert-Elliott), in a fixed order."""
        imp, rng = self.impairment, self.rng
        burst = imp.burst
        if isinstance(burst, GilbertElliott):
            if self._bad:
                self._bad = rng.random() >= burst.r
            else:
                self._bad = rng.random() < burst.p
            return rng.random() < (burst.loss_bad if self._bad else burst.loss_good)
        return imp.loss > 0 and rng.random() < imp.loss

    def admit(self, now: float, size: int) -> Fate:
        """The fate of the next frame, ``size`` IP bytes, arriving at ``now``."""
        imp, rng = self.impairment, self.rng
        number = self.frames
        self.frames += 1
        if self.lost() or size > imp.mtu:
            return Fate("dropped", number=number)
        leaves = now
        if imp.rate or imp.opportunities:
            while self._queued and self._queued[0][0] <= now:
                self._queued_bytes -= self._queued.popleft()[1]
            if self._queue_full(size):
                return Fate("queue_dropped", number=number)
            if imp.rate:
                leaves = max(now, self._busy_until) + size * 8 / imp.rate
                self._busy_until = leaves
            else:
                leaves = self._trace_departure(now, size)
            self._queued.append((leaves, size))
            self._queued_bytes += size
        delay = imp.delay
        if imp.jitter:
            delay = max(0.0, rng.gauss(imp.delay, imp.jitter))
        due = max(leaves + delay, self._last_due)  # jitter never reorders
        self._last_due = due
        duplicate = imp.duplicate > 0 and rng.random() < imp.duplicate
        hold = imp.reorder > 0 and rng.random() < imp.reorder
        return Fate("delivered", due, number, duplicate, hold)

    def _queue_full(self, size: int) -> bool:
        limit = self.impairment.queue_limit
        if limit is None:
            return False
        amount, unit = limit
        if unit == "packets":
            return len(self._queued) >= amount
        return self._queued_bytes + size > amount

    def _trace_departure(self, now: float, size: int) -> float:
        """When a frame of ``size`` bytes has been carried by the trace's opportunities.

        As in Mahimahi, an opportunity nobody uses is lost, and one opportunity carries up
        to 1500 bytes of one or more packets (a big packet may need several).
        """
        if self._origin is None:
            self._origin = now
        if self._time_of(self._opportunity) < now:  # the link idled: skip to now
            self._opportunity = self._first_opportunity_after(now)
            self._left = OPPORTUNITY
        need = size
        while True:
            take = min(need, self._left)
            need -= take
            self._left -= take
            when = self._time_of(self._opportunity)
            if self._left == 0:
                self._opportunity += 1
                self._left = OPPORTUNITY
            if need == 0:
                return when

    def _time_of(self, index: int) -> float:
        ops = self.impairment.opportunities
        loops, i = divmod(index, len(ops))
        assert self._origin is not None
        return self._origin + (loops * ops[-1] + ops[i]) / 1000

    def _first_opportunity_after(self, now: float) -> int:
        ops = self.impairment.opportunities
        assert self._origin is not None
        elapsed_ms = (now - self._origin) * 1000
        loops = int(elapsed_ms // ops[-1])
        index = loops * len(ops)
        while self._time_of(index) < now:
            index += 1
        return index


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def _check_probability(name: str, value) -> None:
    if not _is_number(value) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in 0-1 (e.g. 0.01 for 1 %), "
                         f"not {value!r}")


def _read_queue(queue: int | str, mtu: int) -> tuple[int, str]:
    """``65536`` or ``"64000 bytes"`` → (65536, "bytes"); ``"100 packets"`` → (100, "packets")."""
    amount, unit = queue, "bytes"
    if isinstance(queue, str):
        words = queue.split()
        if len(words) != 2 or not words[0].isdigit() or words[1] not in (
                "bytes", "packets", "packet"):
            raise ValueError(f'queue must be bytes (an int) or a string like "100 packets" '
                             f'or "64000 bytes", not {queue!r}')
        amount, unit = int(words[0]), words[1].rstrip("s") + "s"
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise ValueError(f'queue must be bytes (an int) or "N packets", not {queue!r}')
    if unit == "bytes" and amount < mtu:
        raise ValueError(f"queue of {amount} bytes is smaller than one MTU ({mtu}): no "
                         f"full-size packet could ever pass; give at least {mtu}")
    if unit == "packets" and amount < 1:
        raise ValueError(f"queue must hold at least 1 packet, not {amount}")
    return amount, unit


def _read_trace(trace: str | Path | Sequence[int]) -> tuple[int, ...]:
    """A Mahimahi trace (path, or ms values) → its delivery opportunities, checked."""
    where = "trace"
    if isinstance(trace, str | Path):
        path = Path(trace)
        if not path.is_file():
            raise ValueError(f"trace file {str(path)!r} does not exist; give a Mahimahi "
                             f"trace path (labkit/data/traces/) or a list of ms")
        where = path.name
        values: list = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            if not line.strip().isdigit():
                raise ValueError(f"{where} line {number}: {line!r} is not a whole number "
                                 f"of ms (Mahimahi traces have one per line)")
            values.append(int(line))
    else:
        values = list(trace)
    if not values:
        raise ValueError(f"{where} has no delivery opportunities; give at least one ms value")
    for index, value in enumerate(values):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0 or (
                index and value < values[index - 1]):
            raise ValueError(f"{where}: entry {index} ({value!r}) must be a whole number of "
                             f"ms ≥ 0, not less than the one before")
    if values[-1] <= 0:
        raise ValueError(f"{where} must end after 0 ms (its last value is the loop period)")
    return tuple(values)
