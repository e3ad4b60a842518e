"""The static decks (`make slides`): offline, and free of test scaffolding and solutions.

The browser half (no slide overflows 1280x720) is in tests/test_browser.py.
"""

import re
from html.parser import HTMLParser

import nbformat
import pytest

from labkit.tools.record import NOTEBOOKS
from labkit.tools.slides import REVEAL_DIR, build_decks, deck_notebook

LESSON = NOTEBOOKS / "01-Watch-A-TCP-Handshake.ipynb"
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))


class Loads(HTMLParser):
    """Every URL the page loads by itself: scripts, style sheets, module imports."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self._script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self._script = True
            if attrs.get("src"):
                self.urls.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.urls.append(attrs["href"])

    def handle_endtag(self, tag):
        self._script = self._script and tag != "script"

    def handle_data(self, data):
        if self._script:  # import("https://...") and require(["https://..."]) in scripts
            self.urls += re.findall(r"""["'](https?://[^"']+\.m?js[^"']*)["']""", data)
        self.urls += re.findall(r"@import\s+url\(([^)]+)\)", data)


@pytest.fixture(scope="module")
def deck(tmp_path_factory):
    out = tmp_path_factory.mktemp("slides")
    [path] = build_decks(out, [LESSON])
    return path


def test_the_deck_loads_nothing_from_the_network(deck):
    loads = Loads()
    loads.feed(deck.read_text())
    assert loads.urls, "the parser found nothing: it would pass any deck"
    remote = [url for url in loads.urls if re.match(r"(https?:)?//", url)]
    assert remote == [], f"loaded from the network: {remote}"
    for url in loads.urls:  # what it loads is there, beside it
        assert (deck.parent / url).is_file(), f"{url} is missing beside the deck"
    for css in (deck.parent / REVEAL_DIR).rglob("*.css"):
        imports = re.findall(r"@import\s+url\(([^)]+)\)", css.read_text())
        assert not [u for u in imports if re.match(r"[\"']?(https?:)?//", u)], css


def test_the_deck_shows_no_test_scaffolding_and_no_solution(deck):
    html = deck.read_text()
    for trace in ("nbval", "NBVAL", "noqa", "BEGIN SOLUTION", "check_ack_predictions",
                  "depends on thread timing"):  # ... the comment on 01's nbval-tagged cell
        assert trace not in html, f"{trace!r} is on a slide"
    assert "# YOUR CODE HERE" in html  # the exercise as a student gets it


def test_the_summary_is_a_slide_of_its_own(deck):
    sections = re.split(r"<section", deck.read_text())
    [summary] = [s for s in sections if 'id="Summary"' in s]
    assert "TIME-WAIT</code>: it closed first" not in summary
    assert len(re.findall(r"<h2", summary)) == 1


def test_a_tagged_cells_comment_is_left_out_and_other_comments_stay():
    tagged = nbformat.v4.new_code_cell("# timings vary\nx = 1  # noqa: E731\nprint(x)  # why")
    tagged.metadata["tags"] = ["nbval-ignore-output", "keep-me"]
    plain = nbformat.v4.new_code_cell("# a comment the lesson needs\ny = 2")
    nb = deck_notebook(nbformat.v4.new_notebook(cells=[tagged, plain]))
    assert nb.cells[0].source == "x = 1\nprint(x)  # why"
    assert nb.cells[0].metadata["tags"] == ["keep-me"]
    assert nb.cells[1].source == plain.source


@pytest.mark.parametrize("path", LESSONS, ids=[p.name[:2] for p in LESSONS])
def test_every_section_heading_starts_a_slide_cell(path):
    """In JupyterLab (RISE) a heading in the middle of a cell cannot start a slide."""
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "markdown":
            continue
        assert not re.search(r"\n## ", cell.source), f"split this cell: {cell.source[:60]!r}"
        if cell.source.startswith("## "):
            assert cell.metadata["slideshow"]["slide_type"] == "slide", cell.source[:60]


def test_layout_starts_a_subslide_where_the_slide_is_full():
    from labkit.tools.slide_layout import BUDGET, lay_out

    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    cells = [md("## A section"), code("a = 1"), code("b = 2"), md("Next, c:"), code("c = 3"),
             md("### 1. An exercise"), code("d = 4")]
    for n, cell in enumerate(cells):
        cell.id = f"c{n}"
        cell.metadata["slideshow"] = {"slide_type": "subslide" if n == 1 else "-"}
    cells[2].metadata["slideshow"] = {"slide_type": "fragment"}
    heights = {"c0": 60, "c1": BUDGET / 2, "c2": 100, "c3": 40, "c4": BUDGET / 2, "c5": 60,
               "c6": 50}
    nb = nbformat.v4.new_notebook(cells=cells)
    lay_out(nb, heights)
    types = [c.metadata["slideshow"]["slide_type"] for c in nb.cells]
    # c1 joins the heading's slide, c2 stays a fragment; c4 does not fit, and the paragraph
    # that leads into it goes along; an exercise heading starts a subslide
    assert types == ["slide", "-", "fragment", "subslide", "-", "subslide", "-"]


def test_a_sentence_that_opened_a_slide_keeps_the_cell_it_introduces():
    from labkit.tools.slide_layout import BUDGET, LEAD, lay_out

    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    cells = [md("## A section"), code("wire.ladder(page=1)"), md("The rest:"),
             code("wire.ladder(page=2)"), md("### 1. An exercise"), code("tall = True")]
    heights = {"c0": 60, "c1": BUDGET - 70, "c2": LEAD - 10, "c3": BUDGET - 40, "c4": 60,
               "c5": BUDGET}
    for n, cell in enumerate(cells):
        cell.id = f"c{n}"
        cell.metadata["slideshow"] = {"slide_type": "-"}
    nb = nbformat.v4.new_notebook(cells=cells)
    lay_out(nb, heights)
    types = [c.metadata["slideshow"]["slide_type"] for c in nb.cells]
    # the sentence did not fit under page 1: it opens the next slide, and page 2 stays with it
    # (no slide of one sentence); a heading is no such sentence: the tall cell gets a slide
    assert types == ["slide", "-", "subslide", "-", "subslide", "subslide"]


def test_split_headings_gives_a_heading_its_own_cell():
    from labkit.tools.slide_layout import split_headings

    cell = nbformat.v4.new_markdown_cell("The end of a section.\n\n## Summary\n\n- a point")
    cell.id = "abc"
    nb = nbformat.v4.new_notebook(cells=[cell])
    assert split_headings(nb) == 1
    assert [c.source for c in nb.cells] == ["The end of a section.", "## Summary\n\n- a point"]
    assert nb.cells[1].id == "abc-1" and nb.cells[1].metadata["slideshow"]["slide_type"] == "slide"


def test_slides_writes_to_outdir_and_refuses_a_folder_for_a_notebook(tmp_path, capsys):
    from labkit.__main__ import main

    assert main(["slides", "--outdir", str(tmp_path / "out"), str(LESSON)]) == 0
    assert (tmp_path / "out" / f"{LESSON.stem}.slides.html").is_file()
    assert (tmp_path / "out" / REVEAL_DIR / "dist" / "reveal.js").is_file()
    with pytest.raises(SystemExit):
        main(["slides", str(tmp_path / "elsewhere")])   # the old form: DIR as a notebook
    assert "--outdir DIR" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()


def test_speaker_notes_go_to_the_notes_of_their_slide(tmp_path):
    cells = [nbformat.v4.new_markdown_cell("## A slide"),
             nbformat.v4.new_markdown_cell("Ask the room first."),
             nbformat.v4.new_code_cell("x = 1")]
    cells[1].metadata["slideshow"] = {"slide_type": "notes"}
    (tmp_path / "nb").mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path / "nb" / "01-Test.ipynb")
    [deck] = build_decks(tmp_path / "out", [tmp_path / "nb" / "01-Test.ipynb"])
    aside = re.search(r'(?s)<aside class="notes">(.*?)</aside>', deck.read_text())
    assert aside and "Ask the room first." in aside.group(1)


def test_layout_keeps_notes_and_sets_rise():
    from labkit.tools.slide_layout import RISE, lay_out

    md = nbformat.v4.new_markdown_cell
    cells = [md("## A section"), md("For the speaker"), md("A paragraph")]
    for n, cell in enumerate(cells):
        cell.id = f"c{n}"
    cells[1].metadata["slideshow"] = {"slide_type": "notes"}
    nb = nbformat.v4.new_notebook(cells=cells)
    assert lay_out(nb, {"c0": 60, "c1": 5000, "c2": 40}) == []  # notes take no room
    assert [c.metadata["slideshow"]["slide_type"] for c in nb.cells] == ["slide", "notes", "-"]
    assert nb.metadata["rise"] == RISE and RISE["theme"] == "white"
