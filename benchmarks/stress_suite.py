"""Run the whole test suite N times, some runs under background load, and report each run.

A flaky CI run throws away a submission, so before a change lands the suite must pass
run after run on a busy 2-core machine, not just once on a quiet one:

    .venv/bin/python benchmarks/stress_suite.py --runs 20 --loaded 10
    .venv/bin/python benchmarks/stress_suite.py --runs 4 --loaded 2 --load suite --modes replay

Each run is the README's test command (``pytest -n <cores + 1> --dist loadscope``) with
``LABKIT_CAPTURE`` cycling through ``--modes``. The first ``--runs - --loaded`` runs are
quiet; the rest run while a background load is on:

``bursty``   processes that compute for 50-500 ms, then rest for 0-300 ms (seeded), the way
             other jobs on a shared machine come and go
``suite``    labkit's unit tests, over and over (servers, threads, subprocesses, captures)
``mixed``    both (the default)
``stress-ng`` ``stress-ng --cpu 2 --io 1 --vm 1`` (needs ``apt-get install stress-ng``)

The load is bounded: it stops when the measured run ends. Failing runs keep their output
in ``--log-dir`` (default: a new temporary directory). Prints a Markdown table and exits 1
if any run failed.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the same workers as `make test` (its PYTEST_ARGS): one more than there are cores
PYTEST = [sys.executable, "-m", "pytest", "-n", str((os.cpu_count() or 1) + 1), "--dist",
          "loadscope", "-q"]
UNIT_TESTS = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "tests", "-x",
              "--deselect", "tests/test_handout.py"]
LOADS = ("bursty", "suite", "mixed", "stress-ng")


def burst_forever(seed: int) -> None:
    """Compute in bursts with rests between them, until killed (run in a child process)."""
    rng = random.Random(seed)
    while True:
        busy_until = time.perf_counter() + rng.uniform(0.05, 0.5)
        while time.perf_counter() < busy_until:
            sum(i * i for i in range(10_000))
        time.sleep(rng.uniform(0.0, 0.3))  # the load's own rhythm, not a wait for anything


def start_load(kind: str, seed: int, log: Path) -> list[subprocess.Popen]:
    """Start the background load; every process is a new session so it can be ended whole."""
    def spawn(argv, **kw):
        return subprocess.Popen(argv, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                start_new_session=True, **kw)

    procs = []
    if kind in ("bursty", "mixed"):
        for i in range(2):
            procs.append(spawn([sys.executable, __file__, "--burst", str(seed + i)]))
    if kind in ("suite", "mixed"):
        # a shell loop, bounded by the parent killing it when the measured run ends
        loop = f"while :; do {' '.join(UNIT_TESTS)} >/dev/null 2>&1; done"
        procs.append(spawn(["bash", "-c", loop]))
    if kind == "stress-ng":
        if not shutil.which("stress-ng"):
            raise SystemExit("stress-ng is not installed: apt-get install stress-ng, "
                             "or use --load bursty|suite|mixed")
        procs.append(spawn(["stress-ng", "--cpu", "2", "--io", "1", "--vm", "1",
                            "--vm-bytes", "256M", "--timeout", "3600s", "--quiet"]))
    return procs


def stop_load(procs: list[subprocess.Popen]) -> None:
    """End the load's process groups (only what we started), and reap them."""
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def summary_line(output: str) -> str:
    """pytest's closing line, e.g. '472 passed in 80.1s'."""
    lines = [line.strip("= ") for line in output.splitlines() if " in " in line and (
        "passed" in line or "failed" in line or "error" in line)]
    return lines[-1] if lines else "(no summary: see the log)"


def failures(output: str) -> list[str]:
    return [line.split(" - ")[0].removeprefix("FAILED ").removeprefix("ERROR ")
            for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="how many runs in all (default 20)")
    parser.add_argument("--loaded", type=int, default=10,
                        help="how many of them under background load (the last ones; default 10)")
    parser.add_argument("--load", choices=LOADS, default="mixed")
    parser.add_argument("--modes", default="live,replay",
                        help="LABKIT_CAPTURE values to cycle through (default live,replay)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run (default 900)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-dir", type=Path)
    parser.add_argument("--burst", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.burst is not None:
        burst_forever(args.burst)
    if not 0 <= args.loaded <= args.runs:
        parser.error(f"--loaded must be between 0 and --runs ({args.runs}), not {args.loaded}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("live", "replay") for m in modes):
        parser.error(f"--modes takes live and/or replay, comma-separated, not {args.modes!r}")
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="stress-suite-"))
    log_dir.mkdir(parents=True, exist_ok=True)

    rows, failed = [], 0
    mode_cycle = itertools.cycle(modes)
    print(f"logs in {log_dir}", flush=True)
    for run in range(1, args.runs + 1):
        mode = next(mode_cycle)
        load = args.load if run > args.runs - args.loaded else "none"
        log = log_dir / f"run{run:02d}-{mode}-{load}.log"
        procs = ([] if load == "none"
                 else start_load(load, args.seed + 10 * run, log_dir / "load.log"))
        started = time.monotonic()
        try:
            proc = subprocess.run(PYTEST, cwd=ROOT, capture_output=True, text=True,
                                  timeout=args.timeout, env={**os.environ, "LABKIT_CAPTURE": mode})
            output, ok = proc.stdout + proc.stderr, proc.returncode == 0
        except subprocess.TimeoutExpired as exc:
            output, ok = f"{exc.stdout or ''}\nTIMED OUT after {args.timeout} s", False
        finally:
            stop_load(procs)
        seconds = time.monotonic() - started
        log.write_text(output)
        failed += not ok
        result = summary_line(output) + ("" if ok else "  ✗ " + ", ".join(failures(output)[:3]))
        rows.append((run, mode, load, "pass" if ok else "FAIL", f"{seconds:.0f} s", result))
        print(f"run {run:2}/{args.runs} {mode:6} load={load:9} {'pass' if ok else 'FAIL'} "
              f"{seconds:5.0f} s  {result}", flush=True)

    print("\n| run | mode | load | result | duration | pytest |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    print(f"\n{args.runs - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
