"""What importing labkit costs, next to what the eager import used to cost, in one run.

    .venv/bin/python benchmarks/import_time.py --rounds 7

Each statement runs in a fresh interpreter (so nothing is cached in memory but the OS's
file cache: "cold-ish"), timed inside that interpreter around the statement alone; the
rounds alternate the order of the statements so that background load falls on all of
them alike. Prints a Markdown table with the best and the median of each.

The last rows are the comparison: ``import scapy.all`` is what labkit avoids by importing
Scapy's specific layers, and ``scapy.all`` with ``matplotlib.pyplot`` is roughly what
``import labkit`` paid when every name was imported eagerly (3.5-4.9 s on the lab's
2-core machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"

# Replays a recording shipped in data/ (needs no privilege, writes nothing): the first
# real use of a Capture, which loads what the import itself may have deferred.
FIRST_CAPTURE = """
import socket
from labkit import Capture, TCPServer
with TCPServer("echo") as server, Capture(server, name="01-echo") as wire:
    with socket.create_connection(server.address) as sock:
        sock.sendall(b"hello"); sock.recv(1024)
assert wire.segments
"""

CASES = {
    "`import labkit`": "import labkit",
    "`from labkit import Capture`": "from labkit import Capture",
    "`from labkit import Capture` + first use (replay)": FIRST_CAPTURE,
    "`from labkit import TCPServer`": "from labkit import TCPServer",
    "`import scapy.all` (for comparison)": "import scapy.all",
    "`import scapy.all, matplotlib.pyplot` (what an eager import paid)":
        "import scapy.all, matplotlib.pyplot",
}

TIMED = """
import time
_started = time.perf_counter()
exec(compile({code!r}, "<benchmark>", "exec"))
print(time.perf_counter() - _started)
"""


def seconds(code: str) -> float:
    """Run ``code`` in a fresh interpreter; the seconds it took there."""
    env = {**os.environ, "LABKIT_CAPTURE": "replay", "LABKIT_DATA": str(DATA)}
    done = subprocess.run([sys.executable, "-c", TIMED.format(code=code)], env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"this failed:\n{code}\n{done.stderr.strip()[-600:]}")
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {label: [] for label in CASES}
    for round_ in range(args.rounds):
        order = list(CASES) if round_ % 2 == 0 else list(CASES)[::-1]
        for label in order:
            times[label].append(seconds(CASES[label]))
    print(f"| statement (fresh interpreter, {args.rounds} rounds) | best | median |")
    print("|---|---:|---:|")
    for label, values in times.items():
        print(f"| {label} | {min(values):.3f} s | {statistics.median(values):.3f} s |")
    best = min(times["`import labkit`"])
    print(f"\n`import labkit`: best {best:.3f} s — goal ≤ 1 s: {'met' if best <= 1 else 'MISSED'}")


if __name__ == "__main__":
    main()
