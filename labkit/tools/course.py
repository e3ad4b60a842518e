"""nbgrader settings for a course made of these lessons: one call in nbgrader_config.py.

    # nbgrader_config.py, in the course directory (docs/teaching.md walks the whole course)
    c = get_config()
    c.CourseDirectory.course_id = "netlab"
    from labkit.tools.course import netlab_course
    netlab_course(c)

What it sets, and why:

* ``PATH`` starts with this interpreter's directory: nbgrader runs ``alembic`` (to create a
  gradebook) by name, so ``.venv/bin/nbgrader`` failed with ``FileNotFoundError: 'alembic'``
  unless the venv was activated;
* the release is the student edition that ``make handout`` writes
  (:mod:`labkit.tools.handout`): each lesson's own outputs stay (nbgrader clears them all),
  the outputs that would show an answer go, a top-level answer's stub is ``pass`` (nbgrader's
  ``raise NotImplementedError()`` would stop Run All there) and speaker notes are left out;
* grading gives a cell the time the test suite gives it (120 s): captures, servers and the
  lab network of lesson 09 take seconds, not nbgrader's default 30.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from nbgrader.converters import GenerateAssignment
from nbgrader.preprocessors import ClearOutput, ClearSolutions
from nbgrader.utils import is_solution

from labkit.tools.handout import student_edition
from labkit.tools.solutions import solutions

__all__ = ["netlab_course", "StudentEdition", "CELL_TIMEOUT"]

CELL_TIMEOUT = 120  # seconds, as in pyproject.toml's --nbval-cell-timeout


class StudentEdition(ClearSolutions):
    """nbgrader's ClearSolutions, making :func:`labkit.tools.handout.student_edition`."""

    def preprocess(self, nb, resources):
        student_edition(nb)  # before nbgrader looks at the cells: the markers say what to clear
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return super().preprocess_cell(cell, resources, index)
        # student_edition stubbed the code already; a solution cell without its markers would
        # be replaced whole by nbgrader's stub, so only its metadata rule is kept here
        if self.enforce_metadata and solutions(cell.source) and not is_solution(cell):
            raise RuntimeError("Solution region detected in a non-solution cell: run "
                               "`python -m labkit exercises` on the lessons")
        return cell, resources


def _release_preprocessors() -> list[type]:
    """nbgrader's own list, with StudentEdition for ClearSolutions and no ClearOutput."""
    default = GenerateAssignment.class_traits()["preprocessors"].default()
    return [StudentEdition if p is ClearSolutions else p for p in default if p is not ClearOutput]


def netlab_course(c: Any) -> None:
    """Set ``c`` (nbgrader's config) up for these lessons: see the module's docstring."""
    here = str(Path(sys.executable).parent)
    if here not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")
    c.GenerateAssignment.preprocessors = _release_preprocessors()
    c.Execute.timeout = CELL_TIMEOUT
