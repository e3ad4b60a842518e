"""The student edition: every notebook with its solutions removed and outputs cleared.

Solutions sit between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (nbgrader's
markers); each becomes ``raise NotImplementedError`` so the check below it answers
"not yet" until the student writes the code.

    $ python -m labkit handout handout/
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from labkit.tools.record import NOTEBOOKS

_SOLUTION = re.compile(r"(?ms)^([ \t]*)### BEGIN SOLUTION\s*$.*?^[ \t]*### END SOLUTION[ \t]*$")


def strip_solutions(source: str) -> str:
    """Replace each solution block with a prompt, keeping its indentation."""
    if "### BEGIN SOLUTION" in source and not _SOLUTION.search(source):
        raise ValueError("a '### BEGIN SOLUTION' has no matching '### END SOLUTION'")
    return _SOLUTION.sub(
        lambda m: f"{m.group(1)}# YOUR CODE HERE\n{m.group(1)}raise NotImplementedError()",
        source)


def write_handout(outdir, notebooks: Path = NOTEBOOKS) -> list[Path]:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(notebooks.glob("[0-9][0-9]-*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.source = strip_solutions(cell.source)
                cell.outputs = []
                cell.execution_count = None
        target = out / path.name
        nbformat.write(nb, target)
        written.append(target)
    return written
