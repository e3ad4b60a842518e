import symtable

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


# --- The student edition, executed -----------------------------------------------------
# Cells before a notebook's first exercise are the same in both editions, and nbval already
# runs them (in the teacher's edition). So the student edition runs only what it changes —
# every cell from the first exercise on — plus the earlier cells that define a name those
# need, found by the names each cell binds and reads (Python's own symtable). A definition
# the slice missed shows up as a NameError, which fails the test. All nine share one lab
# kernel, its namespace emptied (%reset -f) before each: the kernel's start and labkit's
# imports are paid once, and no notebook can lean on another's names.

def _bound_and_free(source: str) -> tuple[set[str], set[str]]:
    """Names a cell binds at top level, and the global names it reads without binding."""
    from IPython.core.inputtransformer2 import TransformerManager  # %magics to Python

    top = symtable.symtable(TransformerManager().transform_cell(source), "<cell>", "exec")
    bound = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    read = {s.get_name() for s in top.get_symbols() if s.is_referenced()}
    inner = list(top.get_children())  # functions, classes, comprehensions: their globals
    while inner:
        table = inner.pop()
        inner.extend(table.get_children())
        read |= {s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced()}
    return bound, read - bound


def student_slice(nb) -> list[int]:
    """Indexes of the code cells to run: from the first exercise on, and what they need.

    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in (
    ...     "import socket", "unused = 1",
    ...     "### BEGIN SOLUTION\\ns = socket.socket\\n### END SOLUTION")])
    >>> student_slice(nb)
    [0, 2]
    """
    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    first = next(i for i in code if "### BEGIN SOLUTION" in nb.cells[i].source)
    keep = [i for i in code if i >= first]
    needed = set().union(*(_bound_and_free(nb.cells[i].source)[1] for i in keep))
    for i in reversed([i for i in code if i < first]):
        bound, free = _bound_and_free(nb.cells[i].source)
        if bound & needed:
            keep.append(i)
            needed = (needed - bound) | free
    return sorted(keep)


def test_the_slice_keeps_every_definition_an_exercise_needs():
    cells = ["import socket\nfrom labkit import TCPServer",
             "server = TCPServer('echo')",               # needed by the check below
             "with server:\n    wire = 1",               # reads server, binds nothing needed
             "def helper(n):\n    return [socket.AF_INET for _ in range(n)]",
             "unrelated = 42",
             "def answer():\n    ### BEGIN SOLUTION\n    return helper(1)\n    ### END SOLUTION",
             "assert answer() and server"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in cells])
    assert student_slice(nb) == [0, 1, 3, 5, 6]


NOTEBOOKS = sorted(_handout.NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))


@pytest.fixture(scope="module")
def lab_kernel():
    """One lab kernel for all the student editions: it starts, and imports labkit, once."""
    from jupyter_client.manager import KernelManager

    kernel = KernelManager(kernel_name=KERNEL_NAME)
    kernel.start_kernel(cwd=str(_handout.NOTEBOOKS))
    yield kernel
    kernel.shutdown_kernel(now=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_the_student_edition_answers_back(path, lab_kernel):
    """With every solution removed, each check says what is missing instead of crashing."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    ran = student_slice(nb)
    nb.cells = [nb.cells[i] for i in ran]
    for cell in nb.cells:
        cell.source = strip_solutions(cell.source)
    # a previous notebook's names must not stand in for one this notebook failed to define
    nb.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))
    if not lab_kernel.is_alive():  # a previous notebook killed it: its failure stays its own
        lab_kernel.restart_kernel(now=True)
    client = NotebookClient(nb, timeout=120, km=lab_kernel, allow_errors=True)
    try:
        client.execute()
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
    verdicts, crashes = [], []
    for i, cell in zip(["reset", *ran], nb.cells, strict=True):  # one label per cell
        for out in cell.get("outputs", []):
            if out.output_type == "error" and out.ename != "NotImplementedError":
                crashes.append(f"cell {i}: {out.ename}: {out.evalue}")
            text = out.get("data", {}).get("text/plain", "")
            if text.startswith(("✅", "❌")):
                verdicts.append(text.splitlines()[0])
    assert not crashes
    assert verdicts and all(v.startswith("❌ Not yet") for v in verdicts), verdicts
