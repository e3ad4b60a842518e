import ast
import copy
import symtable
from dataclasses import dataclass
from pathlib import Path

import leaks
import nbformat
import pytest
from leaks import output_texts, values_in, visible_text

from labkit.net.kernel import KERNEL_NAME
from labkit.tools import handout as _handout
from labkit.tools.exercises import exercises
from labkit.tools.handout import answer_outputs, strip_solutions, student_edition, write_handout
from labkit.tools.solutions import solutions


def test_solution_in_a_function_raises_when_called():
    src = "def f():\n    ### BEGIN SOLUTION\n    return 42\n    ### END SOLUTION\nprint(f())"
    assert strip_solutions(src) == (
        "def f():\n    # YOUR CODE HERE\n    raise NotImplementedError()\nprint(f())")


def test_solution_in_a_nested_block_of_a_function_raises_when_called():
    src = ("async def f(x):\n    if x:\n        ### BEGIN SOLUTION\n        return 1\n"
           "        ### END SOLUTION")
    assert strip_solutions(src).endswith("        raise NotImplementedError()")


@pytest.mark.parametrize("src, stub", [
    ("answer = None\n### BEGIN SOLUTION\nanswer = 4\n### END SOLUTION", "\npass"),
    ("with open(__file__) as f:\n    ### BEGIN SOLUTION\n    f.read()\n    ### END SOLUTION",
     "\n    pass"),
])
def test_solution_at_top_level_leaves_the_answer_unwritten_without_raising(src, stub):
    """Run All must go on past it: the answer stays None, and the check says so."""
    out = strip_solutions(src)
    assert out.endswith("# YOUR CODE HERE" + stub) and "raise" not in out
    compile(out, "<cell>", "exec")


STUB = "# YOUR CODE HERE\n{pad}raise NotImplementedError()"


@pytest.mark.parametrize("src, call", [
    # a multi-line string whose lines start in column 0 does not end the function
    ('def f():\n    doc = """\nfirst\nsecond\n"""\n    ### BEGIN SOLUTION\n    return doc\n'
     "    ### END SOLUTION", "f()"),
    # decorators, one of them a call spread over lines
    ("@functools.lru_cache(\n    maxsize=None)\n@functools.singledispatch\ndef g(x):\n"
     "    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION", "g(1)"),
    # nested functions: the block is in the inner one's body ...
    ("def outer():\n    def inner():\n        ### BEGIN SOLUTION\n        return 1\n"
     "        ### END SOLUTION\n    return inner", "outer()()"),
    # ... or, after the inner one has ended, in the outer one's
    ("def outer():\n    def inner():\n        return 1\n    ### BEGIN SOLUTION\n"
     "    return inner()\n    ### END SOLUTION", "outer()"),
    # a method; a block inside an if of an async def, after a column-0 string
    ("class A:\n    def m(self):\n        ### BEGIN SOLUTION\n        return 2\n"
     "        ### END SOLUTION", "A().m()"),
    ("async def h(x):\n    if x:\n        s = \"\"\"\nx\n\"\"\"\n        ### BEGIN SOLUTION\n"
     "        return s\n        ### END SOLUTION", "asyncio.run(h(1))"),
], ids=["string", "decorators", "inner", "outer", "method", "async"])
def test_a_solution_in_a_function_raises_whatever_the_code_around_it(src, call):
    """The stub raises when the function is called: it never returns None silently."""
    import asyncio
    import functools

    [found] = solutions(src)
    out = strip_solutions(src)
    assert STUB.format(pad=found.indent) in out and "BEGIN" not in out, out
    ns = {"functools": functools, "asyncio": asyncio}
    exec(out, ns)
    with pytest.raises(NotImplementedError):
        eval(call, ns)


def test_which_function_holds_a_solution():
    inner, outer = ("def outer():\n    def inner():\n        ### BEGIN SOLUTION\n"
                    "        return 1\n        ### END SOLUTION\n    return inner",
                    "def outer():\n    def inner():\n        return 1\n"
                    "    ### BEGIN SOLUTION\n    return inner()\n    ### END SOLUTION")
    assert [s.function for s in solutions(inner)] == ["inner"]
    assert [s.function for s in solutions(outer)] == ["outer"]
    assert solutions(inner)[0].answer == {"outer"}  # what the cell gives the check


@pytest.mark.parametrize("src", [
    # a marker inside a string is text, not a marker
    'text = """\n### BEGIN SOLUTION\n"""\nx = None\n### BEGIN SOLUTION\nx = 4\n### END SOLUTION',
    # a top-level block after a function (column 0 after an indented body)
    "def helper():\n    return 4\n\nx = None\n### BEGIN SOLUTION\nx = helper()\n### END SOLUTION",
], ids=["marker-in-a-string", "after-a-function"])
def test_a_solution_at_top_level_passes_whatever_the_code_around_it(src):
    out = strip_solutions(src)
    assert out.endswith("# YOUR CODE HERE\npass") and "NotImplementedError" not in out
    assert out.count("### BEGIN SOLUTION") == src.count("### BEGIN SOLUTION") - 1


def test_what_an_answer_sets_is_read_from_the_tree():
    [in_with] = solutions("with S() as server, C(server) as wire:\n    ### BEGIN SOLUTION\n"
                          "    s = go(server)\n    ### END SOLUTION")
    assert in_with.function is None and in_with.answer == {"server", "wire", "s"}
    [value] = solutions("import math\np = None\n### BEGIN SOLUTION\np = math.pi\n"
                        "### END SOLUTION")
    assert value.answer == {"p"}  # not math, not the None above


def test_unterminated_solution_is_an_error():
    with pytest.raises(ValueError, match="no matching '### END SOLUTION'"):
        strip_solutions("### BEGIN SOLUTION\nx = 1\n")


def _lesson(folder, cells):
    folder.mkdir(exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    for n, cell in enumerate(nb.cells, 1):
        cell.outputs = [nbformat.v4.new_output("stream", text=f"output {n}")]
        cell.execution_count = n
    nbformat.write(nb, folder / "01-Test.ipynb")


def test_handout_keeps_the_lessons_outputs_and_clears_the_exercises(tmp_path):
    _lesson(tmp_path / "nb", ["print('lesson')", "### BEGIN SOLUTION\nx = 1\n### END SOLUTION",
                              "check_x(x)"])
    [out] = write_handout(tmp_path / "out", notebooks=tmp_path / "nb")
    lesson, answer, check = nbformat.read(out, as_version=4).cells
    assert lesson.outputs[0].text == "output 1" and lesson.execution_count == 1
    assert answer.source == "# YOUR CODE HERE\npass"
    assert answer.outputs == check.outputs == [] and answer.execution_count is None


def test_outputs_that_depend_on_an_answer_are_cleared_and_the_rest_kept(tmp_path):
    """09's compare cell printed the answer of the exercise above it: it is cleared, and so is
    what is computed from it; a cell that sets the name afresh ends that."""
    _lesson(tmp_path / "nb", [
        "measured = 5.2",                                                     # 0: kept
        "p = None\n### BEGIN SOLUTION\np = 3.55\n### END SOLUTION",           # 1: answer
        "check_p(p)",                                                         # 2: check
        "if p is not None:\n    print(f'predicted {p}, measured {measured}')",  # 3: shows p
        "ratio = measured / p",                                               # 4: from p
        "print(round(ratio, 2))",                                             # 5: from p
        "p = 1\nprint(p)",                                                    # 6: afresh
        "print(p, measured)",                                                 # 7: kept
    ])
    nb = nbformat.read(tmp_path / "nb" / "01-Test.ipynb", as_version=4)
    assert answer_outputs(nb) == [1, 2, 3, 4, 5]
    [out] = write_handout(tmp_path / "out", notebooks=tmp_path / "nb")
    kept = [bool(c.outputs) for c in nbformat.read(out, as_version=4).cells]
    assert kept == [True, False, False, False, False, False, True, True]


def test_speaker_notes_are_not_in_the_student_edition():
    cells = [nbformat.v4.new_markdown_cell("## A slide"), nbformat.v4.new_markdown_cell("Ask:")]
    cells[1].metadata["slideshow"] = {"slide_type": "notes"}
    nb = nbformat.v4.new_notebook(cells=cells)
    assert [c.source for c in student_edition(copy.deepcopy(nb)).cells] == ["## A slide"]
    assert len(student_edition(nb, notes=True).cells) == 2


def test_handout_keeps_a_notebook_the_student_changed(tmp_path):
    _lesson(tmp_path / "nb", ["### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "check_x(x)"])
    [out] = write_handout(tmp_path / "out", notebooks=tmp_path / "nb")
    write_handout(tmp_path / "out", notebooks=tmp_path / "nb")   # unchanged: just rewritten
    assert sorted(p.name for p in out.parent.glob("*.ipynb")) == ["01-Test.ipynb"]
    out.write_text(out.read_text().replace("pass", "x = 2"))    # the student's answer
    write_handout(tmp_path / "out", notebooks=tmp_path / "nb")
    assert "x = 2" in (out.parent / "01-Test.mine.ipynb").read_text()
    assert "x = 2" not in out.read_text()


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


@dataclass
class StudentRun:
    """A notebook's student edition, run in the lab kernel (which still holds its names) up to
    its last check; :meth:`finish` runs the cells after it (they may clean up: 06 closes its CA).
    """

    path: Path
    ran: list[int]   # the original notebook's cells that ran (see student_slice)
    cells: list      # ... as they ran, with their outputs, after one "%reset -f" cell
    rest: list       # the cells after the last check, not run yet
    kernel: object

    def finish(self) -> None:
        if self.rest:
            _execute(self.rest, self.kernel)
            self.cells += self.rest
            self.rest = []


def _execute(cells: list, kernel) -> None:
    from nbclient import NotebookClient

    client = NotebookClient(nbformat.v4.new_notebook(cells=cells), timeout=120, km=kernel,
                            allow_errors=True)
    try:
        client.execute()
    finally:
        if client.kc is not None:
            client.kc.stop_channels()


@pytest.fixture(scope="module", params=NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def student_run(request, lab_kernel):
    """Run the student edition of one notebook (its slice) up to its last check; the tests of
    that notebook then share the kernel's state, before the next notebook resets it. (The
    leak test comes first in this file: it needs the state the cells after the last check
    may clean up; the answers-back test then runs them.)"""
    path = request.param
    nb = nbformat.read(path, as_version=4)
    ran = student_slice(nb)
    last_check = ran.index(max(check for _, check in exercises(nb))) + 1
    nb.cells = [nb.cells[i] for i in ran]
    student_edition(nb)
    # a previous notebook's names must not stand in for one this notebook failed to define
    head = [nbformat.v4.new_code_cell("%reset -f"), *nb.cells[:last_check]]
    if not lab_kernel.is_alive():  # a previous notebook killed it: its failure stays its own
        lab_kernel.restart_kernel(now=True)
    _execute(head, lab_kernel)
    return StudentRun(path, ran, head, nb.cells[last_check:], lab_kernel)


def _in_kernel(kernel, code: str, timeout: float = 900) -> dict:
    """Run ``code`` in ``kernel``; the dict it leaves in ``_leak_report`` (or {})."""
    client = kernel.client()
    client.start_channels()
    errors = []

    def on_output(msg):
        if msg["msg_type"] == "error":
            errors.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")
    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive(
            code, timeout=timeout, output_hook=on_output, store_history=False,
            user_expressions={"report": "globals().pop('_leak_report', {})"})
    finally:
        client.stop_channels()
    assert not errors, f"in the kernel, {code.strip().splitlines()[0][:80]!r}... failed: {errors}"
    report = reply["content"]["user_expressions"]["report"]
    return ast.literal_eval(report["data"]["text/plain"]) if report["status"] == "ok" else {}


LEAKS_TRIED: dict[str, int] = {}


@pytest.mark.leaks
def test_nothing_printed_in_the_handout_or_the_deck_passes_a_check(student_run, tmp_path):
    """For every exercise, its check against every value the handout and the deck print
    (tests/leaks.py): none may say ✅, or the page gives the answer away."""
    from labkit.tools.slides import build_deck

    nb = nbformat.read(student_run.path, as_version=4)
    texts = output_texts(student_edition(copy.deepcopy(nb)))
    texts.append(visible_text(build_deck(student_run.path, tmp_path).read_text()))
    values = values_in(texts)
    _in_kernel(student_run.kernel, leaks.helpers_code())
    tried, given_away = 0, []
    for n, exercise in enumerate(leaks.exercises_of(nb, exercises(nb)), 1):
        _in_kernel(student_run.kernel, exercise.answer_cell)  # the right answer, defined
        if exercise.function:  # what kinds of value it returns, to return the same
            spied = _in_kernel(student_run.kernel, leaks.spy_code(exercise))
            assert spied["right"], f"exercise {n}: the solution itself is not right here"
            candidates = leaks.of_kinds(values, set(spied["kinds"]))
        else:
            candidates = values
        report = _in_kernel(student_run.kernel, leaks.probe_code(exercise, candidates))
        assert report["tried"] == len(candidates), report
        tried += report["tried"]
        given_away += [f"exercise {n} ({exercise.name}): {value} → {verdict}"
                       for value, verdict in report["passed"]]
    LEAKS_TRIED[student_run.path.name[:2]] = tried
    print(f"\n{student_run.path.name}: {len(values)} values printed, {tried} check runs; "
          f"all notebooks so far: {sum(LEAKS_TRIED.values())}")
    assert not given_away, "a printed value passes a check:\n" + "\n".join(given_away)


def test_the_student_edition_answers_back(student_run):
    """With every solution removed, each check says what is missing instead of crashing."""
    student_run.finish()
    nb = nbformat.read(student_run.path, as_version=4)
    checks = [i for _, i in exercises(nb)]
    verdicts, errors = {}, []
    for i, cell in zip(["reset", *student_run.ran], student_run.cells, strict=True):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                errors.append(f"cell {i}: {out.ename}: {out.evalue}")
            text = out.get("data", {}).get("text/plain", "")
            if text.startswith(("✅", "❌")):
                verdicts[i] = text.splitlines()[0]
    assert not errors  # Run All reaches the end: no cell of the student edition raises
    assert sorted(verdicts) == checks, "each exercise's check cell shows one verdict"
    assert all("not written yet" in v for v in verdicts.values()), verdicts
