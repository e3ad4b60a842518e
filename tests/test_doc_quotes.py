"""Every error message the docs quote is what labkit really says.

README.md, CONTRIBUTING.md and docs/*.md quote errors a reader will meet, as inline code:
`` `TypeError: port must be ...` ``.  Each quote is listed below with the code that makes
that error; the test makes it and compares.  In a quote, ``...`` and a ``<placeholder>``
stand for text that varies (a path, a name).  A new quote fails here until it is listed:
then it is checked too.
"""

import re
from pathlib import Path

import pytest

from labkit import Capture, TCPServer

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
QUOTE = re.compile(r"`([A-Z]\w*(?:Error|Exception|Warning): [^`]+)`")


def _replayed_without_a_recording(monkeypatch, tmp_path):
    from labkit.capture import capture

    monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    monkeypatch.setattr(capture, "DATA_DIR", tmp_path / "data")
    with TCPServer() as server, Capture(server, name="no-such-recording") as wire:
        pass
    wire.table()


# The quote, exactly as the docs write it -> what makes that error (given monkeypatch
# and tmp_path).
PRODUCERS = {
    "TypeError: port must be an int from 0 to 65535 (e.g. 0 for any free port), not True":
        lambda monkeypatch, tmp_path: TCPServer(port=True),
    "FileNotFoundError: no recording .../data/<name>.pcapng":
        _replayed_without_a_recording,
}

# Quotes of errors another program prints (not labkit's: nothing here can make them), and
# whose they are.
OTHERS = {
    "FileNotFoundError: 'alembic'": "nbgrader's, when alembic (which it runs by name) is not "
                                    "on PATH",
}


def quotes() -> dict[str, list[str]]:
    """Every quoted error message -> the docs that quote it."""
    found: dict[str, list[str]] = {}
    for doc in DOCS:
        for quote in QUOTE.findall(doc.read_text()):
            found.setdefault(" ".join(quote.split()), []).append(doc.name)
    return found


def matches(quote: str, error: BaseException) -> bool:
    """Does ``error`` read as ``quote`` says, ``...`` and ``<name>`` standing for any text?
    (A quote may stop before the message ends.)"""
    pattern = "".join(".*" if part == "..." or re.fullmatch(r"<\w+>", part) else re.escape(part)
                      for part in re.split(r"(\.\.\.|<\w+>)", quote))
    return re.match(pattern, f"{type(error).__name__}: {error}", re.S) is not None


def test_every_quoted_error_is_checked_here():
    unlisted = {quote: where for quote, where in quotes().items()
                if quote not in PRODUCERS and quote not in OTHERS}
    assert not unlisted, (f"the docs quote errors this test does not check: {unlisted}; add "
                          "each to PRODUCERS with the code that raises it")


@pytest.mark.parametrize("quote", sorted(PRODUCERS))
def test_the_quoted_error_is_the_real_one(quote, monkeypatch, tmp_path):
    assert quote in quotes(), f"no doc quotes {quote!r} any more: remove it from PRODUCERS"
    with pytest.raises(Exception) as raised:
        PRODUCERS[quote](monkeypatch, tmp_path)
    assert matches(quote, raised.value), (
        f"the docs quote {quote!r}; labkit says {type(raised.value).__name__}: {raised.value}")


def test_every_other_programs_error_is_still_quoted():
    assert set(OTHERS) <= set(quotes())


def test_the_matcher():
    error = FileNotFoundError("no recording /x/data/a.pcapng: run it")
    assert matches("FileNotFoundError: no recording .../data/<name>.pcapng", error)
    assert not matches("FileNotFoundError: no recording data/<name>.pcapng", error)
    assert not matches("TypeError: no recording .../data/<name>.pcapng", error)
    assert not matches("FileNotFoundError: no recording .../data/<name>.json", error)
