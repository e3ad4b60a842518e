"""Every lesson follows the conventions in CONTRIBUTING.md (nbval checks what they do)."""

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]-*.ipynb"))
SLIDE_TYPES = {"slide", "subslide", "fragment", "-", "skip", "notes"}


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def notebook(request):
    return nbformat.read(request.param, as_version=4)


def markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_there_are_lessons():
    assert [p.name[:2] for p in NOTEBOOKS][:2] == ["00", "01"]
    lesson_name = r"\d\d-[A-Z][A-Za-z]*(-[A-Z0-9][A-Za-z0-9]*)+"
    assert all(re.fullmatch(lesson_name, p.stem) for p in NOTEBOOKS)


def test_opening_and_closing_sections(notebook):
    text = markdown(notebook)
    for heading in ("What you'll do", "What you'll learn", "What you'll need"):
        assert heading in notebook.cells[0].source, f"first cell lacks '{heading}'"
    for section in ("## Summary", "## Exercises", "## Further reading"):
        assert section in text


def test_exercises_have_solutions_and_checks(notebook):
    code = [c.source for c in notebook.cells if c.cell_type == "code"]
    solutions = [i for i, src in enumerate(code) if "### BEGIN SOLUTION" in src]
    assert solutions, "no exercise with ### BEGIN SOLUTION / ### END SOLUTION"
    assert all("### END SOLUTION" in code[i] for i in solutions)
    assert any("labkit.checks.lesson" in src for src in code), "no check answers the exercises"


def test_every_cell_has_slide_metadata(notebook):
    for i, cell in enumerate(notebook.cells):
        kind = cell.metadata.get("slideshow", {}).get("slide_type")
        assert kind in SLIDE_TYPES, f"cell {i} has no slideshow.slide_type"


def test_every_capture_is_named_for_replay(notebook):
    for i, cell in enumerate(notebook.cells):
        for call in re.findall(r"Capture\((.*?)\)\s+as", cell.source):
            assert "name=" in call, f"cell {i}: Capture({call}) has no name= for replay mode"


def test_stored_outputs_come_from_one_real_run(notebook):
    last = 0
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None, f"cell {i} was never executed"
        assert cell.execution_count > last, f"cell {i} ran out of order"
        last = cell.execution_count
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors or "raises-exception" in cell.metadata.get("tags", []), \
            f"cell {i} stored an error"


def test_nbval_markers_are_tags_not_comments(notebook):
    """A cell whose output varies is tagged 'nbval-ignore-output' (nbval honours the tag):
    a '# NBVAL_...' comment would show on every slide and in every student's cell."""
    for i, cell in enumerate(notebook.cells):
        assert "NBVAL_" not in cell.source, f"cell {i}: use the tag 'nbval-ignore-output'"
        tags = cell.metadata.get("tags", [])
        if "nbval-ignore-output" in tags:
            assert cell.cell_type == "code", f"cell {i}: only code cells have outputs"


def test_every_notebook_runs_in_the_lab_kernel(notebook):
    assert notebook.metadata.kernelspec.name == "netlab", "set the kernel to 'Python 3 (netlab)'"
