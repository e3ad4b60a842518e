"""How long the lab kernel takes to start, next to the plain python3 kernel, in one run.

    .venv/bin/python benchmarks/kernel_start.py --rounds 10

Each round starts both kernels, in alternating order, and times ``start_new_kernel``
(launch, connect, first kernel_info reply) through the same jupyter_client API that
JupyterLab and nbval use, then shuts them down. Prints the median and best of each
and their ratio (the goal: the lab kernel within 1.5x of the plain one).
"""

from __future__ import annotations

import argparse
import statistics
import time

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import start_new_kernel

from labkit.net.kernel import KERNEL_NAME


def start_seconds(kernel_name: str) -> float:
    started = time.perf_counter()
    manager, client = start_new_kernel(kernel_name=kernel_name, startup_timeout=120)
    seconds = time.perf_counter() - started
    client.stop_channels()
    manager.shutdown_kernel(now=False)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    names = ["python3", KERNEL_NAME]
    missing = [n for n in names if n not in KernelSpecManager().find_kernel_specs()]
    if missing:
        raise SystemExit(f"kernelspec(s) {missing} not found: run `make` (it installs them)")
    times = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            times[name].append(start_seconds(name))
    for name, values in times.items():
        print(f"{name:8} median {statistics.median(values):.3f} s   best {min(values):.3f} s   "
              f"({len(values)} starts)")
    ratio = statistics.median(times[KERNEL_NAME]) / statistics.median(times["python3"])
    print(f"lab kernel / plain kernel (medians): {ratio:.2f}x")


if __name__ == "__main__":
    main()
