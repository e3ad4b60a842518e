"""Which cells are exercises, and the nbgrader metadata that says so.

An exercise is two code cells: the *answer* cell holds the solution between nbgrader's
``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers, and the *check* cell right after
it calls a ``check_...`` from ``labkit.checks``. nbgrader needs ``metadata.nbgrader`` on
both: the answer cell is a solution (the student edits it, it is not graded), the check
cell a locked, graded test worth ``POINTS`` (in autograding a failed check raises, see
``labkit.checks.answers_back``, and nbgrader scores a cell that raised as 0).

    $ python -m labkit exercises                 # write the metadata into every lesson
    $ python -m labkit exercises --check         # exit 1 if any is missing or stale
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from labkit.tools.record import NOTEBOOKS

POINTS = 1
SCHEMA_VERSION = 3  # nbgrader 0.9's cell metadata schema
_CHECK_CALL = re.compile(r"(?m)^(?:await\s+)?check_\w+\(")


def is_answer(cell) -> bool:
    return cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source


def is_check(cell) -> bool:
    return cell.cell_type == "code" and bool(_CHECK_CALL.search(cell.source))


def exercises(nb) -> list[tuple[int, int]]:
    """(answer cell, check cell) index pairs, in order; an answer without a check is an error.

    >>> cells = ["x = 1", "### BEGIN SOLUTION\\ny = 2\\n### END SOLUTION", "check_y(y)"]
    >>> exercises(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in cells]))
    [(1, 2)]
    """
    pairs = []
    for i, cell in enumerate(nb.cells):
        if not is_answer(cell):
            continue
        after = next((j for j in range(i + 1, len(nb.cells))
                      if nb.cells[j].cell_type == "code"), None)
        if after is None or not is_check(nb.cells[after]):
            raise ValueError(f"cell {i} holds a solution, but the next code cell calls no "
                             "check_...(): put the exercise's check right after its answer")
        pairs.append((i, after))
    return pairs


def nbgrader_metadata(nb) -> dict[int, dict]:
    """The ``metadata.nbgrader`` each exercise cell of ``nb`` should carry, by cell index."""
    wanted = {}
    for n, (answer, check) in enumerate(exercises(nb), 1):
        wanted[answer] = {"grade": False, "grade_id": f"exercise-{n}-answer", "locked": False,
                          "schema_version": SCHEMA_VERSION, "solution": True, "task": False}
        wanted[check] = {"grade": True, "grade_id": f"exercise-{n}-check", "locked": True,
                         "points": POINTS, "schema_version": SCHEMA_VERSION, "solution": False,
                         "task": False}
    return wanted


def stale_cells(nb) -> list[int]:
    """Indexes of cells whose nbgrader metadata is missing, wrong, or left on a non-exercise."""
    wanted = nbgrader_metadata(nb)
    return [i for i, cell in enumerate(nb.cells)
            if cell.metadata.get("nbgrader") != wanted.get(i)]


def mark(path: Path) -> bool:
    """Write the nbgrader metadata into one notebook; True if it changed."""
    nb = nbformat.read(path, as_version=4)
    if not stale_cells(nb):
        return False
    wanted = nbgrader_metadata(nb)
    for i, cell in enumerate(nb.cells):
        if i in wanted:
            cell.metadata["nbgrader"] = wanted[i]
        else:
            cell.metadata.pop("nbgrader", None)
    nbformat.write(nb, path)
    return True


def main(check_only: bool, notebooks: Path = NOTEBOOKS) -> int:
    paths = sorted(notebooks.glob("[0-9][0-9]-*.ipynb"))
    if check_only:
        stale = {p.name: stale_cells(nbformat.read(p, as_version=4)) for p in paths}
        for name, cells in stale.items():
            if cells:
                print(f"{name}: cells {cells} lack their nbgrader metadata "
                      "(run `python -m labkit exercises`)")
        return 1 if any(stale.values()) else 0
    for path in paths:
        if mark(path):
            print(f"marked the exercises of {path}")
    return 0
