"""A class on one small hub: N copies of a notebook run at once, each in its own lab kernel.

    python benchmarks/class_load.py                      # notebook 09; 1, 5, 10 and 20 copies
    python benchmarks/class_load.py --copies 10 --notebook notebooks/01-Watch-A-TCP-Handshake.ipynb

Each copy is its own ``pytest --nbval`` process (so its own kernel, as each student's
JupyterLab has), all started together; the run is bounded by ``--timeout`` seconds per
round. For each round it prints one row per copy (passed or not, how long it took, and
each failing cell with the first line of what went wrong) and a summary line that says
whether every failure was the lab saying the machine was too busy (``net.too_busy()``)
rather than anything else. The machine's load average is printed before and after each
round: say what else was running when you quote the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUSY = "this machine was too busy"
ANSI = re.compile(r"(?:\x1b|#x1B)\[[0-9;]*m")   # colours, raw or as a junit report escapes them


@dataclass
class Copy:
    """One copy's result: its process, and what its report said."""

    number: int
    process: subprocess.Popen
    report: Path
    started: float
    took: float = 0.0
    cells: int = 0
    failures: dict[str, str] = field(default_factory=dict)   # cell → first line of what went wrong
    note: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures and not self.note

    def all_busy(self) -> bool:
        return all(reason.startswith("too busy") for reason in self.failures.values())


def first_line(text: str) -> str:
    """What went wrong in one failing cell, in one line: the lab's too-busy sentence, the
    exception (type and message), or the first output line that differs from the record."""
    text = ANSI.sub("", text)
    if BUSY in text:
        found = text[text.index(BUSY):].splitlines()[0].split(", so the numbers")[0]
        return f"too busy: {found.split(': ', 1)[-1]}"
    errors = re.findall(r"^(\w*(?:Error|Exception|Interrupt)\b.*)$", text, re.M)
    if errors:
        return errors[-1][:160]
    # pytest's diff of reference_output == test_output: "+" the recorded line, "-" this run's
    got = re.search(r"^\s*- (.+)$", text, re.M)
    recorded = re.search(r"^\s*\+ (.+)$", text, re.M)
    if got or recorded:
        return (f"output differs: {got.group(1) if got else '(nothing)'!r} where the record "
                f"has {recorded.group(1) if recorded else '(nothing)'!r}")[:200]
    return (text.strip().splitlines() or ["(no message)"])[0][:160]


def start(number: int, notebook: Path, workdir: Path) -> Copy:
    report = workdir / f"copy{number}.xml"
    command = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider",
               "-q", f"--junitxml={report}", str(notebook)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    return Copy(number, process, report, time.monotonic())


def finish(copy: Copy, deadline: float) -> None:
    try:
        copy.process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(copy.process.pid, 9)   # its session: pytest and the kernel it started
        copy.process.wait()
        copy.note = "did not finish in time"
    copy.took = time.monotonic() - copy.started
    if not copy.report.exists():
        copy.note = copy.note or f"no report (pytest exit status {copy.process.returncode})"
        return
    for case in ET.parse(copy.report).getroot().iter("testcase"):
        copy.cells += 1
        for problem in [*case.iter("failure"), *case.iter("error")]:
            name = case.get("name", "?").replace("Cell ", "cell ")
            copy.failures[name] = first_line(f"{problem.get('message', '')}\n{problem.text or ''}")


def round_of(copies: int, notebook: Path, timeout: float) -> list[Copy]:
    with tempfile.TemporaryDirectory(prefix="class_load_") as workdir:
        running = [start(n + 1, notebook, Path(workdir)) for n in range(copies)]
        deadline = time.monotonic() + timeout
        for copy in running:
            finish(copy, deadline)
    return running


def show(copies: list[Copy], before: float, after: float) -> None:
    print(f"{'copy':>4}  {'result':<6} {'took':>6}  failing cells")
    for copy in copies:
        result = "pass" if copy.passed else "FAIL"
        what = "; ".join(f"{cell}: {reason}" for cell, reason in copy.failures.items())
        print(f"{copy.number:>4}  {result:<6} {copy.took:5.0f}s  {copy.note or what or '-'}")
    passed = sum(copy.passed for copy in copies)
    failed = [copy for copy in copies if not copy.passed]
    only_busy = all(not copy.note and copy.all_busy() for copy in failed)
    took = sorted(copy.took for copy in copies)
    print(f"N={len(copies)}: {passed}/{len(copies)} passed; "
          + (f"{len(failed)} failed, every failing cell saying the machine was too busy"
             if failed and only_busy else
             f"{len(failed)} failed, some for another reason" if failed else "no failure")
          + f"; {took[len(took) // 2]:.0f} s median, {took[-1]:.0f} s slowest; "
          f"load average {before:.1f} before, {after:.1f} after ({os.cpu_count()} CPUs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 5, 10, 20],
                        help="how many copies at once, one round each (default 1 5 10 20)")
    parser.add_argument("--notebook", type=Path,
                        default=ROOT / "notebooks" / "09-Watch-TCP-Recover-From-Loss.ipynb")
    parser.add_argument("--timeout", type=float, default=1200,
                        help="seconds a round may take before its copies are stopped")
    args = parser.parse_args()
    if not args.notebook.exists():
        parser.error(f"no notebook at {args.notebook}")
    if any(not 1 <= n <= 40 for n in args.copies):
        parser.error("--copies takes counts from 1 to 40 (each copy is a kernel)")
    for copies in args.copies:
        print(f"\n{copies} cop{'y' if copies == 1 else 'ies'} of {args.notebook.name} at once")
        before = os.getloadavg()[0]
        results = round_of(copies, args.notebook.resolve(), args.timeout)
        show(results, before, os.getloadavg()[0])


if __name__ == "__main__":
    main()
