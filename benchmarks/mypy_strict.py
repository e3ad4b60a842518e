"""`mypy --strict` errors in labkit, per subpackage (issue 24's typing figure).

    .venv/bin/python benchmarks/mypy_strict.py            # this checkout
    .venv/bin/python benchmarks/mypy_strict.py --tree DIR  # another (e.g. a worktree of main)

One mypy run over the whole package, its errors grouped by the file they are in
(``mypy --strict labkit/servers`` alone would count errors in what servers imports too).
pyproject.toml's own settings apply, as in ``make lint``, with every strict flag on top.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
from pathlib import Path


def counts(tree: Path) -> tuple[collections.Counter[str], str]:
    """Errors per subpackage (``__init__`` for labkit's own top-level files), and the
    summary line mypy printed."""
    run = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                          "--cache-dir", "/dev/null", "labkit"],
                         cwd=tree, capture_output=True, text=True, check=False)
    found: collections.Counter[str] = collections.Counter()
    for line in run.stdout.splitlines():
        where = re.match(r"labkit/(?:(\w+)/)?[\w.]+\.py:\d+: error:", line)
        if where:
            found[where[1] or "__init__"] += 1
    summary = (run.stdout.strip().splitlines() or ["(no output)"])[-1]
    return found, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the checkout to measure (default: this one)")
    args = parser.parse_args()
    found, summary = counts(args.tree)
    packages = sorted({p.parent.name for p in (args.tree / "labkit").glob("*/__init__.py")}
                      | {"__init__"})
    for package in packages:
        print(f"{package:10} {found[package]:4}")
    print(f"{'total':10} {sum(found.values()):4}   ({summary})")


if __name__ == "__main__":
    main()
