"""Write the Mahimahi packet-delivery traces labkit ships (labkit/data/traces/).

    python benchmarks/make_traces.py

Mahimahi's format: one line per delivery opportunity of 1500 bytes, the ms at which it
comes, non-decreasing; the last value is the period after which the trace loops. One
opportunity per ms is 12 Mbit/s. Made here from a seeded random walk, no downloads:

steady-12mbit.trace   one opportunity every ms for 1 s: a constant 12 Mbit/s
cellular-walk.trace   10 s whose rate wanders between 0.5 and 24 Mbit/s in 100 ms steps,
                      with two 300 ms outages, like a phone on the move
"""

from __future__ import annotations

import random
from pathlib import Path

TRACES = Path(__file__).resolve().parent.parent / "labkit" / "data" / "traces"
PER_OPPORTUNITY = 1500 * 8  # bits


def steady(mbit: float = 12, seconds: float = 1) -> list[int]:
    step = PER_OPPORTUNITY / (mbit * 1e6) * 1000  # ms between opportunities
    return [round((i + 1) * step) for i in range(round(seconds * 1000 / step))]


def cellular_walk(seconds: int = 10, seed: int = 13) -> list[int]:
    rng = random.Random(seed)
    rate, owed, lines = 8.0, 0.0, []
    outages = {rng.randrange(10, seconds * 10 - 3) for _ in range(2)}
    for step in range(seconds * 10):  # 100 ms steps
        rate = min(24.0, max(0.5, rate * rng.lognormvariate(0, 0.3)))
        down = any(0 <= step - start < 3 for start in outages)
        for ms in range(step * 100, step * 100 + 100):
            if down:
                continue
            owed += rate * 1e6 / 1000 / PER_OPPORTUNITY  # opportunities due this ms
            while owed >= 1:
                lines.append(ms + 1)
                owed -= 1
    lines[-1] = seconds * 1000  # the period: loop after exactly `seconds`
    return lines


def main() -> None:
    TRACES.mkdir(parents=True, exist_ok=True)
    for name, lines in (("steady-12mbit.trace", steady()),
                        ("cellular-walk.trace", cellular_walk())):
        (TRACES / name).write_text("".join(f"{ms}\n" for ms in lines))
        seconds = lines[-1] / 1000
        print(f"{name}: {len(lines)} opportunities over {seconds:g} s, "
              f"mean {len(lines) * PER_OPPORTUNITY / seconds / 1e6:.1f} Mbit/s")


if __name__ == "__main__":
    main()
