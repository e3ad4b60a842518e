"""What the lesson-check tests share: the wrong-answer registry and verdict assertions.

Every public ``check_*`` of ``labkit.checks.lessonNN`` needs at least one test that
gives it a wrong answer a student would write and asserts ❌ plus the fitting hint:

    @wrong_answer_to(lesson04.check_dechunk)
    def test_dechunk_read_as_decimal():
        says_wrong(lesson04.check_dechunk(decimal_dechunk), hint="int(size, 16)")

Tests call a check through its module (``lesson04.check_dechunk``, not an imported
name), so tests/test_checks.py can swap in a check that always says ✅ and see each
wrong-answer test fail.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import re
from collections import defaultdict

import labkit.checks
from labkit.checks import Verdict

# "lesson04.check_dechunk" -> the tests that feed it wrong answers
WRONG_ANSWER_TESTS: dict[str, list] = defaultdict(list)


def check_name(check) -> str:
    return f"{check.__module__.rsplit('.', 1)[-1]}.{check.__name__}"


def wrong_answer_to(check):
    """Register the decorated test as one that gives ``check`` a wrong answer."""
    def register(test):
        WRONG_ANSWER_TESTS[check_name(check)].append(test)
        return test
    return register


def lesson_checks() -> dict[str, object]:
    """Every public check function of every labkit.checks.lessonNN module, by name."""
    found = {}
    for info in pkgutil.iter_modules(labkit.checks.__path__):
        if not re.fullmatch(r"lesson\d\d", info.name):
            continue
        module = importlib.import_module(f"labkit.checks.{info.name}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("check_") and fn.__module__ == module.__name__:
                found[f"{info.name}.{name}"] = fn
    return found


def says_wrong(v: Verdict, *, message: str = "", hint: str) -> Verdict:
    """``v`` is ❌ and its message and hint contain the phrases that fit the mistake."""
    assert isinstance(v, Verdict), f"a check returned {v!r}, not a Verdict"
    assert not v.passed and str(v).startswith("❌ Not yet: "), f"accepted a wrong answer: {v}"
    assert message in v.message, f"message lacks {message!r}: {v}"
    assert hint and hint in v.hint, f"hint lacks {hint!r}: {v}"
    return v


def says_right(v: Verdict) -> Verdict:
    assert isinstance(v, Verdict) and v.passed and str(v).startswith("✅ Right: "), str(v)
    return v


def run(coro):
    """Await an async check (lesson 08) from a plain test."""
    return asyncio.run(asyncio.wait_for(coro, 30))

