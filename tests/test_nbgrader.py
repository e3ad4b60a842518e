"""nbgrader can hand out and grade the lessons: its metadata is on every exercise.

The round trip (``-m nbgrader``, about 20 s, run by .ci/run): a course directory of its
own, ``generate_assignment`` on a real lesson, three submissions (the solution, the stub
left as it is, a wrong answer), ``autograde``, and the scores from nbgrader's gradebook.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labkit.tools.exercises import POINTS, is_answer, is_check, stale_cells
from labkit.tools.record import NOTEBOOKS

LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem[:2] for p in LESSONS])
def test_every_exercise_carries_nbgrader_metadata(path):
    nb = nbformat.read(path, as_version=4)
    assert stale_cells(nb) == [], "run `python -m labkit exercises`"
    marked = [cell.metadata["nbgrader"] for cell in nb.cells if "nbgrader" in cell.metadata]
    answers = [cell for cell in nb.cells if is_answer(cell)]
    assert [m["solution"] for m in marked] == [True, False] * len(answers)
    assert all(m["locked"] and m["points"] == POINTS for m in marked if m["grade"])
    assert len({m["grade_id"] for m in marked}) == len(marked)   # nbgrader needs them unique
    graded = [cell for cell in nb.cells if cell.metadata.get("nbgrader", {}).get("grade")]
    assert all(is_check(cell) for cell in graded)


LESSON = "04-Speak-HTTP-From-A-Raw-Socket.ipynb"   # its exercise 1 only, a pure function: quick
WRONG = "int(size_line.split(b\";\")[0], 16)"         # read the chunk size as decimal instead


def _nbgrader(course: Path, *args: str) -> None:
    bin_dir = str(Path(sys.executable).parent)     # nbgrader runs `alembic` from PATH
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, check=True,
                   capture_output=True, timeout=300)


def _submit(course: Path, student: str, answer) -> None:
    nb = nbformat.read(course / "release" / "lesson" / LESSON, as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = answer(cell.source)
    folder = course / "submitted" / student / "lesson"
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / LESSON)


@pytest.mark.nbgrader
def test_nbgrader_hands_out_and_grades_a_lesson(tmp_path):
    pytest.importorskip("nbgrader")
    from nbgrader.api import Gradebook

    course = tmp_path / "course"
    (course / "source" / "lesson").mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.root = {str(course)!r}\n"
        "c.CourseDirectory.course_id = 'netlab'\n")
    source = nbformat.read(NOTEBOOKS / LESSON, as_version=4)
    marked = [i for i, cell in enumerate(source.cells) if "nbgrader" in cell.metadata]
    source.cells = [c for i, c in enumerate(source.cells) if i not in marked[2:]]  # exercise 1
    nbformat.write(source, course / "source" / "lesson" / LESSON)
    [solution] = [c.source for c in source.cells if is_answer(c)]
    assert WRONG in solution

    _nbgrader(course, "generate_assignment", "lesson", "--force")
    released = nbformat.read(course / "release" / "lesson" / LESSON, as_version=4)
    assert "### BEGIN SOLUTION" not in nbformat.writes(released)
    _submit(course, "alice", lambda stub: solution)
    _submit(course, "bob", lambda stub: stub)                      # handed in unanswered
    _submit(course, "carol", lambda stub: solution.replace(WRONG, "int(size_line)"))
    _nbgrader(course, "autograde", "lesson", "--create", "--force")

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        scores = {who: gradebook.find_submission("lesson", who).score
                  for who in ("alice", "bob", "carol")}
    assert scores == {"alice": POINTS, "bob": 0, "carol": 0}
