"""The student edition: every lesson with its solutions removed.

Solutions sit between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (nbgrader's
markers). Each becomes a stub that lets "Run All" reach the end of the notebook
(:func:`labkit.tools.solutions.strip_solutions`, which reads the cell's syntax tree):

* inside a function, ``raise NotImplementedError()``: defining the function works,
  calling it raises, and the check below catches that and says "not written yet";
* at top level (a value to compute, or the body of a ``with`` block), ``pass``: the cell
  already sets the answer to ``None`` above the block, and a check given ``None`` says
  "not written yet" too.

The lesson's own outputs stay (a student reads the tables, ladders and figures before
running anything); the outputs that would show an answer are cleared: the exercise's own
cells (the answer and its ✅), and every later cell that reads what an answer sets, or what
such a cell sets in turn (09's "predicted 3.55 Mbit/s, measured ..." under its exercise).
Speaker notes (cells whose slide type is ``notes``) are for the presenter: the student
edition leaves them out. A handout notebook the student has changed since it was written
is kept: it is renamed ``NN-....mine.ipynb`` (``.mine-2`` ... if that exists) before the
new one is written.

    $ python -m labkit handout handout/
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nbformat

from labkit.tools.exercises import is_check
from labkit.tools.record import NOTEBOOKS
from labkit.tools.solutions import binds, reads, solutions, strip_solutions

__all__ = ["student_edition", "answer_outputs", "write_handout", "strip_solutions", "is_notes"]

MANIFEST = ".built"  # {notebook name: sha256 of the file as written}; also make's stamp
RISE_CSS = "rise.css"  # jupyterlab-rise's style sheet, beside the notebooks


def is_notes(cell) -> bool:
    """A speaker-notes cell (slide type ``notes``): the presenter's, not the student's."""
    return cell.get("metadata", {}).get("slideshow", {}).get("slide_type") == "notes"


def answer_outputs(nb) -> list[int]:
    """Indexes of the code cells whose outputs would show an answer.

    An exercise's answer cell and its check; then, in order, every cell that reads a name
    an answer sets (or a name set by such a cell), until a cell sets that name afresh.
    """
    tainted: set[str] = set()
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        blocks = solutions(cell.source)
        if blocks:
            tainted |= set().union(*(b.answer for b in blocks))
            found.append(i)
        elif is_check(cell) or reads(cell.source) & tainted:
            tainted |= binds(cell.source)
            found.append(i)
        else:
            tainted -= binds(cell.source)  # set again, from what the lesson computed
    return found


def student_edition(nb, *, notes: bool = False):
    """``nb`` (changed in place) without solutions, and without the outputs that would show
    an answer (:func:`answer_outputs`); without speaker notes unless ``notes``."""
    for i in answer_outputs(nb):
        nb.cells[i].outputs = []
        nb.cells[i].execution_count = None
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
    if not notes:
        nb.cells = [cell for cell in nb.cells if not is_notes(cell)]
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
    style = notebooks / RISE_CSS  # presenting the handout with RISE looks as the lessons do
    if style.is_file():
        shutil.copy(style, out / RISE_CSS)
    return written
