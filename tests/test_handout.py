import nbformat
import pytest

from labkit.net.kernel import KERNEL_NAME
from labkit.tools import handout as _handout
from labkit.tools.handout import strip_solutions, write_handout


def test_solution_becomes_a_prompt_with_its_indentation():
    src = "def f():\n    ### BEGIN SOLUTION\n    return 42\n    ### END SOLUTION\nprint(f())"
    assert strip_solutions(src) == (
        "def f():\n    # YOUR CODE HERE\n    raise NotImplementedError()\nprint(f())")


def test_unterminated_solution_is_an_error():
    with pytest.raises(ValueError, match="no matching '### END SOLUTION'"):
        strip_solutions("### BEGIN SOLUTION\nx = 1\n")


def test_handout_clears_outputs(tmp_path):
    src = tmp_path / "nb"
    src.mkdir()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")
    cell.outputs = [nbformat.v4.new_output("stream", text="1")]
    cell.execution_count = 1
    nb.cells = [cell]
    nbformat.write(nb, src / "01-Test.ipynb")
    [out] = write_handout(tmp_path / "out", notebooks=src)
    cell = nbformat.read(out, as_version=4).cells[0]
    assert cell.source == "# YOUR CODE HERE\nraise NotImplementedError()"
    assert cell.outputs == [] and cell.execution_count is None


NOTEBOOKS = sorted(_handout.NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_the_student_edition_answers_back(path, tmp_path):
    """With every solution removed, each check says what is missing instead of crashing."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
    NotebookClient(nb, timeout=120, kernel_name=KERNEL_NAME, allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    verdicts, crashes = [], []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error" and out.ename != "NotImplementedError":
                crashes.append(f"cell {i}: {out.ename}: {out.evalue}")
            text = out.get("data", {}).get("text/plain", "")
            if text.startswith(("✅", "❌")):
                verdicts.append(text.splitlines()[0])
    assert not crashes
    assert verdicts and all(v.startswith("❌ Not yet") for v in verdicts), verdicts
