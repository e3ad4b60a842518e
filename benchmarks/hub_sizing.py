"""What one student costs a hub, per notebook: memory and CPU of a Run All in the lab kernel.

    .venv/bin/python benchmarks/hub_sizing.py                 # every notebook of notebooks/
    .venv/bin/python benchmarks/hub_sizing.py notebooks/09-*.ipynb

Runs each notebook top to bottom in a fresh lab kernel (nbclient, as JupyterLab's Run All),
then asks the kernel for its own accounting (one cell more, ``getrusage``): its peak memory
(the most it ever held resident) and the CPU seconds it and its children used. A student's
total is that plus their single-user server (tests/test_hub.py prints what it measured).

"Students per core" is how many students may press Run All at the same moment and all be
done within a minute: 60 s / the notebook's CPU seconds. Students reading and running cells
one at a time load a hub far less; this is the worst minute of a class.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
# the cell added at the end: the kernel's own peak memory and CPU time, children included
ACCOUNTING = """
import json as _json, resource as _resource
_self = _resource.getrusage(_resource.RUSAGE_SELF)
_children = _resource.getrusage(_resource.RUSAGE_CHILDREN)
print(_json.dumps([_self.ru_maxrss / 1024, _self.ru_utime + _self.ru_stime
                   + _children.ru_utime + _children.ru_stime]))
"""


def measure(path: Path) -> tuple[float, float, float]:
    """(peak MB, CPU seconds, wall seconds) of a Run All of ``path`` in a lab kernel."""
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(ACCOUNTING))
    client = NotebookClient(notebook, kernel_name="netlab", timeout=300,
                            resources={"metadata": {"path": str(path.parent)}})
    started = time.monotonic()
    client.execute()
    wall = time.monotonic() - started
    peak, cpu = json.loads(notebook.cells[-1].outputs[-1]["text"])
    return peak, cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        default=sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")))
    args = parser.parse_args()
    print(f"{'notebook':42} {'peak MB':>8} {'CPU s':>6} {'wall s':>7} {'students/core':>14}")
    for path in args.notebooks:
        peak, cpu, wall = measure(path)
        print(f"{path.name[:42]:42} {peak:8.0f} {cpu:6.1f} {wall:7.1f} {60 / cpu:14.1f}",
              flush=True)
    print(f"(load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
