"""Does anything a student can read give an exercise's answer away?

The student edition (``handout/``) and the deck show stored outputs and text. For every
exercise, its check is run against every value printed there that could be an answer: if
one says ✅, the answer is on the page. tests/test_handout.py runs it in the lab kernel,
after the student edition's cells have run, so each check has what it needs (``wire``,
``ca``, ...).

* values: every number, quoted string, Python literal (``[5, 15, 16]``, ``b'hi'``), word
  and line in the handout's outputs (text, HTML, streams) and in the deck's visible text;
* an answer that is a value (``predicted_mbit = ...``) gets each value as it is;
* an answer that is a function (``def dechunk(body): ...``) gets, for each value of the kind
  the right answer returns (learned by running the solution once under a spy), a function
  that returns that value whatever it is given.
"""

from __future__ import annotations

import ast
import base64
import html.parser
import pickle
import re
from dataclasses import dataclass

from labkit.tools.solutions import solutions

NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")
QUOTED = re.compile(r"""(?<![\w])(b?)(['"])([^'"\n]{0,200})\2""")
BRACKETS = re.compile(r"[\[({][^\[\](){}\n]{0,300}[\])}]")
PUNCTUATION = ".,;:!?()[]{}\"'`«»“”\u2018\u2019"


class _Text(html.parser.HTMLParser):
    """The text a reader sees in an HTML page (no scripts, no styles)."""

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        self._hidden += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._hidden -= tag in ("script", "style") and self._hidden > 0

    def handle_data(self, data):
        if not self._hidden:
            self.parts.append(data)


def visible_text(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return "\n".join(parser.parts)


def output_texts(nb) -> list[str]:
    """Every text a notebook's stored outputs show."""
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                texts.append(out["text"])
            data = out.get("data", {})
            if "text/plain" in data:
                texts.append(data["text/plain"])
            if "text/html" in data:
                texts.append(visible_text(data["text/html"]))
            if "traceback" in out:
                texts.append("\n".join(out["traceback"]))
    return texts


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def values_in(texts: list[str]) -> list:
    """Every value printed in ``texts``, each once (see the module's docstring)."""
    found: dict[tuple[str, str], object] = {}

    def add(value) -> None:
        if value is not None or ("none", "None") not in found:
            found.setdefault((type(value).__name__, repr(value)), value)

    for text in texts:
        for line in text.splitlines():
            stripped = line.strip()
            if not stripped:
                continue
            add(stripped)
            for token in stripped.split():
                word = token.strip(PUNCTUATION)
                if word:
                    add(word)
                if word in ("True", "False", "None"):
                    add(_literal(word))
            for match in NUMBER.finditer(stripped):
                number = match.group().replace(",", "")
                add(float(number) if any(c in number for c in ".eE") else int(number))
            for match in QUOTED.finditer(stripped):
                add(_literal(match.group()) if match.group(1) else match.group(3))
            for match in BRACKETS.finditer(stripped):
                value = _literal(match.group())
                if isinstance(value, (list, tuple, dict, set)):
                    add(value)
    return list(found.values())


def kind(value) -> str:
    """What sort of answer a value could be: numbers are one kind, int or float."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    if isinstance(value, (list, tuple)):
        return "sequence"
    return type(value).__name__


def of_kinds(values: list, kinds: set[str]) -> list:
    """The values of these kinds; text also as bytes when bytes are wanted."""
    chosen = [v for v in values if kind(v) in kinds]
    if "bytes" in kinds:
        chosen += [v.encode() for v in values if isinstance(v, str)]
    if "NoneType" in kinds and None not in chosen:  # a function run for what it does
        chosen.append(None)
    return chosen


@dataclass
class Exercise:
    """One exercise of a notebook: the answer it sets, and how its check is called."""

    answer_cell: str       # the instructor's answer cell (the solution in it)
    check_cell: str
    name: str              # the name the check is given
    function: bool         # is the answer a function (else a value)?
    is_async: bool


def exercises_of(nb, pairs: list[tuple[int, int]]) -> list[Exercise]:
    found = []
    for answer, check in pairs:
        source = nb.cells[answer].source
        blocks = solutions(source)
        reads = {n.id for n in ast.walk(ast.parse(nb.cells[check].source))
                 if isinstance(n, ast.Name)}
        names = sorted(set().union(*(b.answer for b in blocks)) & reads)
        if len(names) != 1:
            raise ValueError(f"cell {answer}: cannot tell which name is the answer its check "
                             f"reads (candidates {names})")
        function = any(b.function for b in blocks)
        found.append(Exercise(source, nb.cells[check].source, names[0], function,
                              any(b.is_async for b in blocks)))
    return found


def _check_call(check_cell: str) -> tuple[str, str]:
    """The check cell split into its set-up (imports) and its last expression."""
    tree = ast.parse(check_cell)
    last = tree.body[-1]
    if not isinstance(last, ast.Expr):
        raise ValueError(f"the check cell does not end with the check's call:\n{check_cell}")
    return ast.unparse(ast.Module(body=tree.body[:-1], type_ignores=[])), ast.unparse(last.value)


SPY = """
{setup}
_leak_kinds = set()
_leak_right = {name}
if _leak_asyncio.iscoroutinefunction(_leak_right):
    async def {name}(*args, **kwargs):
        result = await _leak_right(*args, **kwargs)
        _leak_kinds.add(_leak_kind(result))
        return result
else:
    def {name}(*args, **kwargs):
        result = _leak_right(*args, **kwargs)
        _leak_kinds.add(_leak_kind(result))
        return result
with _leak_quiet():
    _leak_verdict = {call}
{name} = _leak_right
_leak_report = {{"right": bool(getattr(_leak_verdict, "passed", False)),
                 "kinds": sorted(_leak_kinds)}}
"""

PROBE = """
{setup}
_leak_right = {name}
_leak_tried, _leak_passed = 0, []
for _leak_value in _leak_pickle.loads(_leak_base64.b64decode({values!r})):
    {name} = _leak_constant(_leak_value, {is_async}) if {function} else _leak_value
    _leak_tried += 1
    try:
        with _leak_quiet():
            _leak_verdict = {call}
    except Exception:
        continue
    if getattr(_leak_verdict, "passed", False) is True:
        _leak_passed.append((repr(_leak_value)[:120], str(_leak_verdict)[:200]))
{name} = _leak_right
_leak_report = {{"tried": _leak_tried, "passed": _leak_passed}}
"""

HELPERS = """
import asyncio as _leak_asyncio, base64 as _leak_base64, contextlib as _leak_contextlib
import io as _leak_io, pickle as _leak_pickle


def _leak_constant(value, is_async):
    if is_async:
        async def constant(*args, **kwargs):
            return value
    else:
        def constant(*args, **kwargs):
            return value
    return constant


@_leak_contextlib.contextmanager
def _leak_quiet():
    with _leak_contextlib.redirect_stdout(_leak_io.StringIO()), \\
            _leak_contextlib.redirect_stderr(_leak_io.StringIO()):
        yield
"""


def helpers_code() -> str:
    """What the spy and the probes need in the kernel (names start with _leak_)."""
    import inspect

    return HELPERS + "\n" + inspect.getsource(kind).replace("def kind(", "def _leak_kind(")


def spy_code(exercise: Exercise) -> str:
    """Runs the right answer under a spy: the kinds of value it returns (a function)."""
    setup, call = _check_call(exercise.check_cell)
    return SPY.format(setup=setup, name=exercise.name, call=call)


def probe_code(exercise: Exercise, values: list) -> str:
    setup, call = _check_call(exercise.check_cell)
    return PROBE.format(setup=setup, name=exercise.name, call=call,
                        is_async=exercise.is_async, function=exercise.function,
                        values=base64.b64encode(pickle.dumps(values)).decode())
