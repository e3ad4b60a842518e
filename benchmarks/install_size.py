"""What setting up costs: the size of .venv and the time to make it, from a clean clone.

    .venv/bin/python benchmarks/install_size.py              # a student's (make lab's set-up)
    .venv/bin/python benchmarks/install_size.py --for test   # CI's (make test's set-up)

Clones this repository (its HEAD) into a scratch folder and runs the set-up there with
Debian's /usr/bin/python3 and an empty pip cache (so every package is downloaded, as on a
student's first day), then prints the seconds it took and the size of the .venv it made.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"lab": ".venv/.lab", "test": ".venv/.installed"}


def size_mb(path: Path) -> int:
    """Disk used, as `du -sm` counts it (the figure the issue and the docs give)."""
    return int(subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--for", dest="use", choices=sorted(TARGETS), default="lab")
    parser.add_argument("--python", default="/usr/bin/python3")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        clone = Path(scratch) / "netlab"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        # as a student's first day: nothing cached, no local wheel folder, packages from PyPI
        env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
        env["PIP_CACHE_DIR"] = str(Path(scratch) / "pip-cache")
        started = time.monotonic()
        subprocess.run(["make", TARGETS[args.use], f"PYTHON={args.python}"], cwd=clone,
                       env=env, check=True, stdout=subprocess.DEVNULL)
        seconds = time.monotonic() - started
        print(f"make {TARGETS[args.use]}: {seconds:.0f} s, .venv {size_mb(clone / '.venv')} MB"
              f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
