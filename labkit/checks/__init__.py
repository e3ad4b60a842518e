"""Exercise checks that answer back: passed, or what is wrong plus a hint.

A check returns a :class:`Verdict` instead of raising, so a student's "Run all"
keeps going and the notebook shows the verdict under the exercise. An answer not
written yet (a function that raises ``NotImplementedError``, or ``None``, the student
edition's stubs) gets :data:`NOT_WRITTEN` or :data:`NOT_ANSWERED`. Under nbgrader's
autograder (``NBGRADER_EXECUTION`` set) a failed check raises ``AssertionError`` with
its verdict, so the check cell scores 0 (the feedback shows the verdict and its hint, not a
traceback), and a passed one is shown as display data, not as the cell's result (nbgrader
would try to read a result as partial points); the student's notebook stays free of asserts.

    >>> verdict(2 + 2 == 4, "2 + 2 is 4", wrong="2 + 2 is not 5", hint="count again")
    ✅ Right: 2 + 2 is 4

One module per lesson (``lesson01`` for notebook 01, ...) holds that lesson's checks.

A check never grades a recording.  Checks that read a capture call
:func:`not_a_recording` first: a live capture is the student's own run; a replayed
one (no capture privilege) shows the author's recorded packets, so it is graded
only when labkit's servers saw the very same conversation in the student's run
(``wire.matches_recording``: connections, bytes each way and, where the server read
them itself, their content).  Otherwise the verdict is "not yet", saying the check
cannot see the student's packets and how to get a live capture.  The normal case -
the exercise cell run as written - matches, so it is graded as in live mode.
"""

from __future__ import annotations

import functools
import html
import inspect
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, cast, overload

if TYPE_CHECKING:
    from labkit.capture.capture import Capture

__all__ = ["Verdict", "verdict", "first_failure", "answers_back", "unfinished", "NOT_WRITTEN",
           "NOT_ANSWERED", "not_a_recording", "StudentCall", "CheckFailed"]


@dataclass(frozen=True)
class Verdict:
    """What a check says: ✅ and what is right, or ❌, what is wrong and a hint.

    Attributes:
        passed: True if the answer is right (a Verdict is truthy then)
        message: what is right, or what is wrong
        hint: what to try next (shown only when not passed)
    """

    passed: bool
    message: str
    hint: str = ""

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        if self.passed:
            return f"✅ Right: {self.message}"
        text = f"❌ Not yet: {self.message}"
        return text + (f"\n💡 Hint: {self.hint}" if self.hint else "")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        # The marks are inline SVG, not the ✅/❌/💡 of the text form: those are emoji,
        # drawn as empty boxes by a browser on a machine without an emoji font.
        color, bg = ("#1b7837", "#e7f5e9") if self.passed else ("#b2182b", "#fdecea")
        word = "Right" if self.passed else "Not yet"
        mark = _svg_mark(self.passed, color)
        body = f"{mark} <b>{word}:</b> {html.escape(self.message)}"
        if self.hint and not self.passed:
            body += f"<br>{_SVG_BULB} <b>Hint:</b> {html.escape(self.hint)}"
        return (f"<div style='border-left:6px solid {color};background:{bg};padding:8px 12px;"
                f"font-size:115%'>{body}</div>")


def _svg_mark(passed: bool, color: str) -> str:
    """A tick or a cross in a coloured disc, as inline SVG (needs no font)."""
    path = "M5 10.5l3.5 3.5 6.5-7.5" if passed else "M6 6l8 8M14 6l-8 8"
    label = "right" if passed else "not yet"
    return (f"<svg role='img' aria-label='{label}' width='1.1em' height='1.1em' viewBox='0 0 20 20'"
            f" style='vertical-align:-0.2em'><circle cx='10' cy='10' r='10' fill='{color}'/>"
            f"<path d='{path}' stroke='white' stroke-width='2.6' fill='none'"
            f" stroke-linecap='round'/></svg>")


_SVG_BULB = ("<svg role='img' aria-label='hint' width='1.1em' height='1.1em' viewBox='0 0 20 20'"
             " style='vertical-align:-0.2em'><circle cx='10' cy='8' r='6.5' fill='#f2b01e'/>"
             "<rect x='7' y='14' width='6' height='4' rx='1' fill='#8a6d1f'/></svg>")


def verdict(ok: bool, right: str, *, wrong: str, hint: str = "") -> Verdict:
    """Passed with ``right``, or failed with ``wrong`` and ``hint``."""
    return Verdict(True, right) if ok else Verdict(False, wrong, hint)


def first_failure(*verdicts: Verdict, right: str) -> Verdict:
    """The first failing verdict, or one passed verdict saying ``right``."""
    for v in verdicts:
        if not v.passed:
            return v
    return Verdict(True, right)


NOT_WRITTEN = Verdict(False, "your code is not written yet (it raises NotImplementedError)",
                      "replace `raise NotImplementedError()` with your solution, run that cell, "
                      "then run this check again")


NOT_ANSWERED = Verdict(False, "your answer is not written yet (it is still None)",
                       "write your answer in the cell above, run that cell, then run this "
                       "check again")


LIVE_HINT = ("in replay mode a check cannot see your own packets: run this notebook with the "
             "lab kernel, Python 3 (netlab), so captures are live (`python -m labkit doctor` "
             "says how), then run the exercise cell and this check again")


def not_a_recording(wire: Capture) -> Verdict | None:
    """None if ``wire`` may be graded; else a failed Verdict saying why it may not.

    A live capture shows the student's run.  A replayed one shows a recording: it may be
    graded only if the student's run was the same conversation (``matches_recording``).
    """
    if getattr(wire, "mode", None) != "replay":
        return None
    matches = getattr(wire, "matches_recording", None)
    if matches is True:
        return None
    if matches is False:
        return Verdict(False, "this capture replays a recording, and your run was different: "
                       f"{wire.difference}", LIVE_HINT)
    return Verdict(False, "this capture replays a recording, and labkit cannot tell whether "
                   "your run was the same (it compares what lab servers saw with the recording)",
                   LIVE_HINT)


def unfinished(exc: object) -> bool:
    """Did this come from a ``raise NotImplementedError()`` (maybe in a server thread)?
    (Anything that is not an exception did not.)"""
    seen: set[int] = set()
    while isinstance(exc, BaseException) and id(exc) not in seen:
        if isinstance(exc, NotImplementedError):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def autograded() -> bool:
    """Is nbgrader grading this run? (Its autograder and validator set NBGRADER_EXECUTION.)"""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


class CheckFailed(AssertionError):
    """A failed verdict under nbgrader: the check cell raised, so it scores 0.

    Shown (in the graded notebook and the feedback) as the verdict alone: the ❌, what is
    wrong and the hint, with no traceback through labkit (nor the instructor's paths).
    """

    def __init__(self, result: Verdict):
        super().__init__(str(result))
        self.verdict = result

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return str(self.verdict).splitlines()


class _ShownVerdict(Verdict):
    """A passed verdict under nbgrader, displayed rather than returned as the cell's result.

    nbgrader reads a graded cell's result as partial points when it is a number, and logs a
    six-line warning for every one that is not ("✅ Right: ..."); display data it leaves alone.
    """

    def _ipython_display_(self) -> None:
        from IPython.display import publish_display_data

        publish_display_data({"text/plain": str(self), "text/html": self._repr_html_()})


def _graded(result: Verdict) -> Verdict:
    if not autograded():
        return result
    if not result.passed:
        raise CheckFailed(result)  # nbgrader scores a check cell that raised as 0
    return _ShownVerdict(result.passed, result.message, result.hint)


P = ParamSpec("P")


@overload
def answers_back(check: Callable[P, Coroutine[Any, Any, Verdict]]
                 ) -> Callable[P, Coroutine[Any, Any, Verdict]]: ...
@overload
def answers_back(check: Callable[P, Verdict]) -> Callable[P, Verdict]: ...
def answers_back(check: Callable[P, Verdict] | Callable[P, Coroutine[Any, Any, Verdict]]
                 ) -> Callable[P, Verdict] | Callable[P, Coroutine[Any, Any, Verdict]]:
    """Decorate a check so unfinished work gets a verdict, not a traceback.

    ``raise NotImplementedError()`` in the student's code gives :data:`NOT_WRITTEN`, a first
    argument (the student's answer) still ``None`` gives :data:`NOT_ANSWERED`; under
    nbgrader a failed verdict raises (:func:`autograded`).  The check keeps its signature
    (a ``ParamSpec``): a type checker sees the decorated check's own parameters.

        >>> @answers_back
        ... def check_f(f): return verdict(f() == 1, "f gives 1", wrong="...")
    """
    if inspect.iscoroutinefunction(check):
        check_async = cast(Callable[P, Coroutine[Any, Any, Verdict]], check)

        @functools.wraps(check_async)
        async def run_async(*args: P.args, **kwargs: P.kwargs) -> Verdict:
            if args and args[0] is None:
                return _graded(NOT_ANSWERED)
            try:
                return _graded(await check_async(*args, **kwargs))
            except Exception as exc:
                if unfinished(exc):
                    return _graded(NOT_WRITTEN)
                raise
        return run_async

    check_sync = cast(Callable[P, Verdict], check)

    @functools.wraps(check_sync)
    def run(*args: P.args, **kwargs: P.kwargs) -> Verdict:
        if args and args[0] is None:
            return _graded(NOT_ANSWERED)
        try:
            return _graded(check_sync(*args, **kwargs))
        except Exception as exc:
            if unfinished(exc):
                return _graded(NOT_WRITTEN)
            raise
    return run


class StudentCall:
    """The student's ``fn(*args)`` in a thread of its own, started now (in the calling
    thread's network namespace: on a lab host inside ``net.on(...)``), so a check can play
    the other side meanwhile, and never hangs on code that does.

        >>> call = StudentCall(fetch, session, url)
        >>> call.wait(5.0)          # False: still running after 5 s
        >>> call.outcome, call.value   # "ok" and what it returned, or "raised" and the error

    Attributes:
        outcome: ``"running"``, then ``"ok"`` (it returned) or ``"raised"``
        value: what it returned, or the exception it raised (None while running)
        thread: the thread it runs in
    """

    def __init__(self, fn: Callable[..., object], *args: object) -> None:
        self.outcome: str = "running"
        self.value: object = None
        self.thread = threading.Thread(target=self._run, args=(fn, *args), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[..., object], *args: object) -> None:
        try:
            self.value, self.outcome = fn(*args), "ok"
        except Exception as exc:  # noqa: BLE001 - the student's exception is the answer
            self.value, self.outcome = exc, "raised"

    def running(self) -> bool:
        """Is it still running?"""
        return self.thread.is_alive()

    def wait(self, limit: float) -> bool:
        """Did it return (or raise) within ``limit`` seconds?"""
        self.thread.join(limit)
        return not self.thread.is_alive()
