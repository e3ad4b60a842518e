"""nbgrader can hand out and grade the lessons: its metadata is on every exercise.

The course walk (``-m nbgrader``, run by .ci/run) does what docs/teaching.md says, with
nbgrader's own commands: quickstart, an exchange, generate and release an assignment of two
lessons, three students fetch and submit (all right, untouched, all wrong), collect,
autograde, feedback; then the scores from nbgrader's gradebook and what the feedback shows.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from labkit.tools.exercises import POINTS, is_answer, is_check, stale_cells
from labkit.tools.handout import student_edition
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


# --- The course, as docs/teaching.md walks it ---------------------------------------------
# An instructor and three students (alice answers right, bob hands in untouched, carol
# answers wrong), each with a home and a folder of their own, sharing one exchange.
# Every command is .venv/bin/nbgrader, run with a PATH that lacks .venv/bin (no activation).

LESSONS_OF_THE_WALK = ["02-Frame-Messages-On-A-TCP-Stream.ipynb",
                       "04-Speak-HTTP-From-A-Raw-Socket.ipynb"]
ASSIGNMENT = "streams"
WRONG = {  # exercise-N-answer (per notebook): a wrong body for the stub
    ("02", "exercise-1-answer"): "return sock.recv(n)",          # one recv() is not enough
    ("02", "exercise-2-answer"): "return sock.recv(4096)",       # no length header read
    ("04", "exercise-1-answer"): "return body",                  # chunks left undecoded
    ("04", "exercise-2-answer"):                                 # no retries: a 503 is final
        "return requests.Session(), lambda session, url: session.get(url, timeout=(0.2, 0.3))",
}
NBGRADER = Path(sys.executable).with_name("nbgrader")
PLAIN_PATH = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                             if Path(d).resolve() != NBGRADER.parent.resolve())


def _nbgrader(home: Path, config_dir: Path, cwd: Path, *args: str) -> str:
    """``.venv/bin/nbgrader ARGS`` in ``cwd``, as the user whose home is ``home``; its log."""
    env = {**os.environ, "PATH": PLAIN_PATH, "HOME": str(home),
           "JUPYTER_CONFIG_DIR": str(config_dir), "JUPYTER_DATA_DIR": str(home / "data")}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run([str(NBGRADER), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{log[-3000:]}"
    assert "Exception while loading config" not in log, log[:3000]  # nbgrader would go on
    return log


def _solutions(path: Path) -> dict[str, str]:
    """{grade id: the solution block's code} of the instructor's notebook."""
    found = {}
    for cell in nbformat.read(path, as_version=4).cells:
        if is_answer(cell):
            lines = cell.source.splitlines()
            begin = next(i for i, line in enumerate(lines) if "### BEGIN SOLUTION" in line)
            end = next(i for i, line in enumerate(lines) if "### END SOLUTION" in line)
            found[cell.metadata["nbgrader"]["grade_id"]] = "\n".join(lines[begin + 1:end])
    return found


def _answer(path: Path, code_of) -> None:
    """Write each answer into a fetched notebook: the stub replaced by ``code_of(grade id)``."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if cell.metadata.get("nbgrader", {}).get("solution"):
            code = code_of(path.name[:2], grade_id)
            lines = cell.source.splitlines()
            stub = next(i for i, line in enumerate(lines) if "# YOUR CODE HERE" in line)
            indent = lines[stub][:len(lines[stub]) - len(lines[stub].lstrip())]
            lines[stub:stub + 2] = [indent + line.strip() if not line.startswith(indent)
                                    else line for line in code.splitlines()]
            cell.source = "\n".join(lines)
    nbformat.write(nb, path)


@pytest.mark.nbgrader
def test_a_course_walks_from_quickstart_to_feedback(tmp_path):
    """quickstart, course_id, exchange, generate, release, fetch, submit, collect,
    autograde, feedback: the scores, the release's outputs, what the feedback shows."""
    pytest.importorskip("nbgrader")
    from nbgrader.api import Gradebook

    assert NBGRADER.is_file(), f"{NBGRADER} is missing: pip install -r requirements.txt"
    started, timings = time.monotonic(), {}
    exchange, shared = tmp_path / "exchange", tmp_path / "etc-jupyter"
    exchange.mkdir(mode=0o777)
    exchange.chmod(0o777)  # every student writes into it (umask would take some bits away)
    shared.mkdir()  # what a hub puts in /etc/jupyter/nbgrader_config.py, for everyone
    (shared / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.course_id = 'netlab'\n"
        f"c.Exchange.root = {str(exchange)!r}\n")
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    run = functools.partial(_nbgrader, teacher, shared)

    run(teacher, "quickstart", "netlab")
    course = teacher / "netlab"
    shutil.rmtree(course / "source")                          # quickstart's example
    config = course / "nbgrader_config.py"
    config.write_text(config.read_text().replace(
        'c.IncludeHeaderFooter.header = "source/header.ipynb"', "")
        + "\nfrom labkit.tools.course import netlab_course\nnetlab_course(c)\n")
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    for name in LESSONS_OF_THE_WALK:
        shutil.copy(NOTEBOOKS / name, course / "source" / ASSIGNMENT / name)
    run(course, "generate_assignment", ASSIGNMENT)
    run(course, "release_assignment", ASSIGNMENT)

    for name in LESSONS_OF_THE_WALK:  # the release is the handout: the lesson's outputs too
        released = nbformat.read(course / "release" / ASSIGNMENT / name, as_version=4)
        handout = student_edition(nbformat.read(NOTEBOOKS / name, as_version=4))
        assert "### BEGIN SOLUTION" not in nbformat.writes(released)
        assert ([c.get("outputs") for c in released.cells]
                == [c.get("outputs") for c in handout.cells]), name
        assert sum(bool(c.get("outputs")) for c in released.cells) > 5, name

    right = {name[:2]: _solutions(NOTEBOOKS / name) for name in LESSONS_OF_THE_WALK}
    students = {"alice": lambda nb, gid: right[nb][gid],
                "bob": None,                                  # hands it in as fetched
                "carol": lambda nb, gid: WRONG[nb, gid]}
    for student, code_of in students.items():
        home = tmp_path / student
        home.mkdir()
        as_student = functools.partial(_nbgrader, home, shared, home)
        as_student("fetch_assignment", ASSIGNMENT)
        if code_of is not None:
            for name in LESSONS_OF_THE_WALK:
                _answer(home / ASSIGNMENT / name, code_of)
        # one machine user plays three students: --student names each (on a hub, the login)
        as_student("submit", ASSIGNMENT, f"--student={student}")

    # collect: the exchange's owner check would name one user for three students here
    collected = run(course, "collect", ASSIGNMENT, "--CollectApp.check_owner=False")
    assert collected.count("Collecting submission") == 3, collected
    graded = run(course, "autograde", ASSIGNMENT, "--create")
    assert "cannot be converted to a float" not in graded, graded
    timings["autograde"] = time.monotonic() - started
    run(course, "generate_feedback", ASSIGNMENT)
    run(course, "release_feedback", ASSIGNMENT)
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        scores = {who: gradebook.find_submission(ASSIGNMENT, who).score for who in students}
        total = gradebook.find_assignment(ASSIGNMENT).max_score
    took = time.monotonic() - started
    print(f"\nthe course walk: scores {scores} of {total}; {took:.0f} s "
          f"({timings['autograde']:.0f} s to the end of autograde)")
    assert total == len(WRONG) * POINTS   # one point per exercise of the walk
    assert scores == {"alice": total, "bob": 0, "carol": 0}

    for student in students:
        home = tmp_path / student
        _nbgrader(home, shared, home, "fetch_feedback", ASSIGNMENT, f"--student={student}")
        [feedback] = (home / ASSIGNMENT / "feedback").glob("*/04-*.html")
        page = re.sub(r"(?s)<style.*?</style>", "", feedback.read_text())  # what one reads
        # a pass is shown as display data (its HTML form), a fail as the verdict's text
        verdict = "<b>Right:</b>" if student == "alice" else "❌ Not yet"
        assert verdict in page, f"{student}'s feedback lacks {verdict!r}"
        for leak in ("Traceback", "labkit/checks", str(course), "CheckFailed"):
            assert leak not in page, f"{student}'s feedback shows {leak!r}"
    carol = next((tmp_path / "carol" / ASSIGNMENT / "feedback").glob("*/04-*.html")).read_text()
    assert "💡 Hint" in carol
