"""Run notebooks top to bottom in record mode: every named Capture also writes
``data/<name>.pcapng`` for replay mode, and the notebook is saved with the outputs
of that same run, so replay mode shows exactly what the stored outputs say.

    $ python -m labkit record                     # every notebook
    $ python -m labkit record notebooks/01-Watch-A-TCP-Handshake.ipynb
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from labkit.net.kernel import KERNEL_NAME

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CELL_TIMEOUT = 300  # seconds; a lesson cell that takes longer is a bug


def execute(path: Path, *, mode: str = "record") -> float:
    """Execute one notebook with LABKIT_CAPTURE=mode and save it; returns seconds taken."""
    nb = nbformat.read(path, as_version=4)
    started = time.monotonic()
    # the mode goes to the kernel's environment only: this process's own stays as it was
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL_NAME,
                   resources={"metadata": {"path": str(path.parent)}}
                   ).execute(env={**os.environ, "LABKIT_CAPTURE": mode})
    nbformat.write(nb, path)
    return time.monotonic() - started


def record(paths: list[str]) -> int:
    targets = [Path(p) for p in paths] or sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
    missing = [str(p) for p in targets if not p.exists()]
    if missing:
        raise SystemExit(f"no such notebook: {', '.join(missing)}")
    for path in targets:
        seconds = execute(path)
        print(f"recorded {path.name} in {seconds:.1f}s (recordings and outputs saved)")
    return 0
