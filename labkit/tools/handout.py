"""The student edition: every lesson with its solutions removed.

Solutions sit between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (nbgrader's
markers). Each becomes a stub that lets "Run All" reach the end of the notebook:

* inside a function, ``raise NotImplementedError()``: defining the function works,
  calling it raises, and the check below catches that and says "not written yet";
* at top level (a value to compute, or the body of a ``with`` block), ``pass``: the cell
  already sets the answer to ``None`` above the block, and a check given ``None`` says
  "not written yet" too.

The lesson's own outputs stay (a student reads the tables, ladders and figures before
running anything); only the exercise cells' outputs, which would show the answer and its
✅, are cleared. A handout notebook the student has changed since it was written is kept:
it is renamed ``NN-....mine.ipynb`` (``.mine-2`` ... if that exists) before the new one
is written.

    $ python -m labkit handout handout/
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import nbformat

from labkit.tools.exercises import is_answer, is_check
from labkit.tools.record import NOTEBOOKS

_SOLUTION = re.compile(r"(?ms)^([ \t]*)### BEGIN SOLUTION\s*$.*?^[ \t]*### END SOLUTION[ \t]*$")
_DEF = re.compile(r"[ \t]*(?:async[ \t]+)?def[ \t]")
MANIFEST = ".built"  # {notebook name: sha256 of the file as written}; also make's stamp


def _inside_function(lines: list[str], row: int) -> bool:
    """Is line ``row`` in the body of a ``def``? (Walks out through each enclosing block.)"""
    indent = len(lines[row]) - len(lines[row].lstrip())
    for line in reversed(lines[:row]):
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        outer = len(line) - len(stripped)
        if outer < indent:
            if _DEF.match(line):
                return True
            indent = outer
    return False


def strip_solutions(source: str) -> str:
    """Replace each solution block with a stub, keeping its indentation."""
    if "### BEGIN SOLUTION" in source and not _SOLUTION.search(source):
        raise ValueError("a '### BEGIN SOLUTION' has no matching '### END SOLUTION'")

    def stub(m: re.Match) -> str:
        pad = m.group(1)
        row = source.count("\n", 0, m.start())
        if _inside_function(source.splitlines(), row):
            return f"{pad}# YOUR CODE HERE\n{pad}raise NotImplementedError()"
        return f"{pad}# YOUR CODE HERE\n{pad}pass"
    return _SOLUTION.sub(stub, source)


def student_edition(nb):
    """``nb`` (changed in place) without solutions, and without its exercises' outputs."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if is_answer(cell) or is_check(cell):
            cell.outputs = []
            cell.execution_count = None
        cell.source = strip_solutions(cell.source)
    return nb


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _keep_students_work(target: Path, written: dict[str, str]) -> Path | None:
    """Rename ``target`` out of the way if it is not the file this tool last wrote."""
    if not target.exists() or written.get(target.name) == _digest(target):
        return None
    n, kept = 1, target.with_suffix(".mine.ipynb")
    while kept.exists():
        n += 1
        kept = target.with_suffix(f".mine-{n}.ipynb")
    target.rename(kept)
    return kept


def write_handout(outdir, notebooks: Path = NOTEBOOKS) -> list[Path]:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    written_before = json.loads(manifest.read_text()) if manifest.exists() else {}
    written, digests = [], {}
    for path in sorted(notebooks.glob("[0-9][0-9]-*.ipynb")):
        nb = student_edition(nbformat.read(path, as_version=4))
        target = out / path.name
        kept = _keep_students_work(target, written_before)
        if kept is not None:
            print(f"kept your changed {target.name} as {kept.name}")
        nbformat.write(nb, target)
        digests[target.name] = _digest(target)
        written.append(target)
    manifest.write_text(json.dumps(digests, indent=1) + "\n")
    return written
