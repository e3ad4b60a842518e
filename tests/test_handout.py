import nbformat
import pytest

from labkit._handout import strip_solutions, write_handout


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
