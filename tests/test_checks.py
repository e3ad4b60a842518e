from labkit.checks import Verdict, first_failure, verdict


def test_verdicts_read_as_sentences():
    ok = verdict(True, "the ACK is 6", wrong="no", hint="h")
    bad = verdict(False, "the ACK is 6", wrong="you said 5; the ACK is 6", hint="SYN counts 1")
    assert bool(ok) and str(ok) == "✅ Right: the ACK is 6"
    assert not bad and str(bad) == "❌ Not yet: you said 5; the ACK is 6\n💡 Hint: SYN counts 1"
    assert "fdecea" in bad._repr_html_() and "<br>" in bad._repr_html_()


def test_html_verdicts_need_no_emoji_font():
    """A browser without an emoji font draws ✅/❌/💡 as boxes: the HTML uses SVG marks."""
    ok = verdict(True, "the ACK is 6 <b>", wrong="no")
    bad = verdict(False, "x", wrong="you said 5", hint="SYN counts 1")
    for v, words in ((ok, ["Right:", "the ACK is 6 &lt;b&gt;"]),
                     (bad, ["Not yet:", "you said 5", "Hint:", "SYN counts 1"])):
        page = v._repr_html_()
        assert not any(ord(ch) > 0x2000 for ch in page), page  # no emoji, no pictographs
        assert page.count("<svg") == (1 if v else 2)
        assert all(w in page for w in words)


def test_first_failure():
    good = Verdict(True, "a")
    bad = Verdict(False, "b", "c")
    assert first_failure(good, bad, right="all") is bad
    assert first_failure(good, good, right="all") == Verdict(True, "all")


def test_unfinished_code_gets_a_verdict_not_a_traceback():
    import asyncio
    import socket

    import pytest

    from labkit import TCPServer
    from labkit.checks import NOT_WRITTEN, answers_back

    def todo(*args):
        raise NotImplementedError()

    @answers_back
    def check_direct(f):
        return f()

    @answers_back
    def check_in_a_server(handler):
        with TCPServer(handler) as server, socket.create_connection(server.address) as c:
            assert c.recv(1) == b""  # the handler ran, raised, and its connection closed

    @answers_back
    async def check_async(f):
        return f()

    @answers_back
    def check_with_a_real_bug(f):
        return 1 / 0

    assert check_direct(todo) is NOT_WRITTEN
    assert check_in_a_server(todo) is NOT_WRITTEN  # ServerError caused by NotImplementedError
    assert asyncio.run(check_async(todo)) is NOT_WRITTEN
    with pytest.raises(ZeroDivisionError):
        check_with_a_real_bug(todo)


def test_an_answer_still_none_is_not_written_yet():
    """The student edition leaves a top-level answer at None: that is unfinished, not wrong."""
    import asyncio

    from labkit.checks import NOT_ANSWERED, answers_back

    @answers_back
    def check_value(answer):
        return verdict(answer == 4, "4", wrong=f"{answer!r} is not 4")

    @answers_back
    async def check_async(answer):
        return verdict(answer == 4, "4", wrong=f"{answer!r} is not 4")

    assert check_value(None) is NOT_ANSWERED and "not written yet" in str(NOT_ANSWERED)
    assert asyncio.run(check_async(None)) is NOT_ANSWERED
    assert not check_value(5) and check_value(4)


def test_under_nbgrader_a_failed_check_raises_so_its_cell_scores_zero(monkeypatch):
    import pytest

    from labkit.checks import answers_back

    @answers_back
    def check_value(answer):
        return verdict(answer == 4, "4 is right", wrong=f"{answer!r} is not 4", hint="add")

    assert not check_value(5)                      # a student's run: a verdict, no exception
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match="5 is not 4"):
        check_value(5)
    with pytest.raises(AssertionError, match="not written yet"):
        check_value(None)
    assert check_value(4)                          # a right answer passes as before


# -- every lesson check answers a wrong answer with ❌ (tests in test_lesson_checks_*.py) -------
def registered_wrong_answer_tests():
    """The registry, filled by importing every test_lesson_checks_*.py (pytest's own modules)."""
    import importlib
    from pathlib import Path

    from checking import WRONG_ANSWER_TESTS

    for path in sorted(Path(__file__).parent.glob("test_lesson_checks_*.py")):
        importlib.import_module(path.stem)
    return WRONG_ANSWER_TESTS


def test_every_lesson_check_has_a_wrong_answer_test():
    from checking import lesson_checks

    checks = lesson_checks()
    assert len(checks) >= 17 and "lesson00.check_mode_answer" in checks  # the scan finds them
    untested = sorted(set(checks) - set(registered_wrong_answer_tests()))
    assert not untested, ("give each of these checks a wrong answer in a "
                          f"test_lesson_checks_*.py test, with @wrong_answer_to(check): {untested}")


def test_a_check_that_always_says_right_fails_its_wrong_answer_tests(request, monkeypatch):
    """Swap each check for one that passes everything: each of its wrong-answer tests must fail."""
    import importlib
    import inspect

    import pytest
    from checking import check_name

    def always_right(*args, **kwargs):
        return Verdict(True, "anything goes")

    async def always_right_async(*args, **kwargs):
        return Verdict(True, "anything goes")

    ran = skipped = 0
    for name, tests in registered_wrong_answer_tests().items():
        lesson, check = name.split(".")
        module = importlib.import_module(f"labkit.checks.{lesson}")
        real = getattr(module, check)
        stub = always_right_async if inspect.iscoroutinefunction(real) else always_right
        for test in tests:
            try:
                fixtures = {arg: request.getfixturevalue(arg)
                            for arg in inspect.signature(test).parameters}
            except pytest.skip.Exception:
                skipped += 1  # e.g. `live` without capture privilege
                continue
            with monkeypatch.context() as patched:
                patched.setattr(module, check, stub)
                with pytest.raises(AssertionError, match="accepted a wrong answer"):
                    test(**fixtures)
            assert check_name(getattr(module, check)) == name   # the real check is back
            ran += 1
    # every registered test ran (or could not, here: no capture privilege), and most did
    total = sum(len(tests) for tests in registered_wrong_answer_tests().values())
    assert ran + skipped == total and ran > total // 2, (ran, skipped, total)


def test_under_nbgrader_a_check_cell_shows_its_verdict_and_nothing_nbgrader_warns_about(
        monkeypatch):
    """What the autograder stores, in a real kernel: a pass as display data (a result would be
    read as partial points: "cannot be converted to a float"), a fail as an error showing the
    ❌ and its hint, with no traceback through labkit and no path of the instructor's."""
    import logging
    from pathlib import Path

    import nbformat
    import pytest
    from nbclient import NotebookClient

    determine_grade = pytest.importorskip("nbgrader.utils").determine_grade

    import labkit

    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    setup = ("from labkit.checks import answers_back, verdict\n"
             "@answers_back\ndef check_value(x):\n"
             "    return verdict(x == 4, '4 is right', wrong=f'{x!r} is not 4', hint='add')")
    cells = [nbformat.v4.new_code_cell(s) for s in (setup, "check_value(4)", "check_value(5)")]
    for cell in cells[1:]:
        cell.metadata["nbgrader"] = {"grade": True, "points": 1, "grade_id": "g", "solution": False}
    nb = nbformat.v4.new_notebook(cells=cells)
    NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True).execute()
    passed, failed = nb.cells[1].outputs, nb.cells[2].outputs
    assert [o.output_type for o in passed] == ["display_data"], passed
    assert passed[0].data["text/plain"] == "✅ Right: 4 is right"
    [error] = failed
    assert error.output_type == "error" and error.traceback == [
        "❌ Not yet: 5 is not 4", "💡 Hint: add"]
    warnings = []

    class Collect(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    log = logging.getLogger("test-nbgrader-grade")
    log.addHandler(Collect())
    assert determine_grade(nb.cells[1], log) == (1, 1) and warnings == []
    assert determine_grade(nb.cells[2], log) == (0, 1)
    labkit_dir = str(Path(labkit.__file__).parent)
    assert labkit_dir not in str(failed) and "Traceback" not in str(failed)
