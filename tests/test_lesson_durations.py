"""Each lesson states how long it takes, and the figure is the estimate this file makes.

The estimate, from the notebook itself: its text read at ``WORDS_PER_MINUTE``, the code a
student reads (not the exercise answers) at ``CODE_LINES_PER_MINUTE``, ``EXERCISE_MINUTES``
for each checked exercise and ``QUESTION_MINUTES`` for each open question of a "no check"
list, plus the cells' run time as recorded (speaker notes are not counted).  Each
notebook's first cell says "about N minutes" and how that was estimated; this test keeps
N within one 5-minute step of it.

    $ .venv/bin/python tests/test_lesson_durations.py      # prints the table
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LESSONS = sorted([*NOTEBOOKS.glob("0[0-9]-*.ipynb"), *NOTEBOOKS.glob("1[01]-*.ipynb")])
WORDS_PER_MINUTE = 120       # technical prose, read to be understood
CODE_LINES_PER_MINUTE = 10
EXERCISE_MINUTES = 8
QUESTION_MINUTES = 3
STATED = re.compile(r"[Aa]bout (\d+) minutes")


def _run_seconds(cell) -> float:
    times = cell.metadata.get("execution", {})
    try:
        busy, idle = (datetime.fromisoformat(times[key].replace("Z", "+00:00"))
                      for key in ("iopub.status.busy", "iopub.status.idle"))
    except KeyError:
        return 0.0
    return (idle - busy).total_seconds()


def estimate(nb) -> dict[str, float]:
    """Minutes for each part of a lesson, and their ``total``."""
    words = lines = exercises = questions = 0
    run = 0.0
    for cell in nb.cells:
        if cell.metadata.get("slideshow", {}).get("slide_type") == "notes":
            continue                      # speaker notes: the presenter's, not the student's
        if cell.cell_type == "markdown":
            words += len(re.sub(r"```.*?```", "", cell.source, flags=re.S).split())
            if "(no check)" in cell.source:
                questions += len(re.findall(r"(?m)^- ", cell.source))
            continue
        run += _run_seconds(cell)
        if "### BEGIN SOLUTION" in cell.source:
            exercises += 1
            continue
        lines += sum(1 for line in cell.source.splitlines()
                     if line.strip() and not line.strip().startswith("#"))
    parts = {"reading": words / WORDS_PER_MINUTE, "code": lines / CODE_LINES_PER_MINUTE,
             "exercises": exercises * EXERCISE_MINUTES, "questions": questions * QUESTION_MINUTES,
             "running": run / 60}
    return {**parts, "total": sum(parts.values())}


def stated_minutes(nb) -> int | None:
    found = STATED.search(nb.cells[0].source)
    return int(found.group(1)) if found else None


@pytest.mark.parametrize("path", LESSONS, ids=lambda path: path.name[:2])
def test_lesson_states_its_estimated_duration(path):
    nb = nbformat.read(path, as_version=4)
    total = estimate(nb)["total"]
    stated = stated_minutes(nb)
    assert stated is not None, f"{path.name}: the first cell should say 'about N minutes'"
    assert "estimated" in nb.cells[0].source, f"{path.name}: say how the time was estimated"
    assert abs(stated - total) <= 5, (
        f"{path.name} says about {stated} minutes; its estimate is {total:.0f} (say about "
        f"{5 * round(total / 5)})")


if __name__ == "__main__":
    print(f"{'lesson':8} {'reading':>8} {'code':>6} {'exercises':>10} {'questions':>10} "
          f"{'running':>8} {'total':>6} {'stated':>7}   (minutes)")
    for path in LESSONS:
        nb = nbformat.read(path, as_version=4)
        e = estimate(nb)
        print(f"{path.name[:2]:8} {e['reading']:8.1f} {e['code']:6.1f} {e['exercises']:10.0f} "
              f"{e['questions']:10.0f} {e['running']:8.1f} {e['total']:6.1f} "
              f"{stated_minutes(nb) or '-':>7}")
