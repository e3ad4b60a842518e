"""Lay a lesson out on slides that fit 1280x720: set each cell's ``slideshow.slide_type``
from the height the cell really has on a slide, measured in Chromium.

* a markdown cell with a ``##`` heading below its first line is split there, so the
  heading starts a slide in JupyterLab (RISE) too, not only in the static deck;
* ``#``/``##`` headings start a slide, ``###`` a subslide (an exercise);
* every other cell joins the slide above while it fits (a ``fragment`` stays one), and
  starts a subslide when it does not; a short paragraph that leads into a code cell stays
  with it: it moves to the cell's slide, or, when it alone opened a slide, the cell joins it;
* a cell too big for any slide gets a slide of its own (the deck then shortens its figure,
  or shrinks it as far as its text stays readable); the tool names those cells: their
  content needs splitting (benchmarks/slides_overflow.py says whether the deck fits them);
* speaker notes (slide type ``notes``) stay notes, on the slide above them;
* the notebook's ``rise`` metadata presents it in JupyterLab (jupyterlab-rise) the way the
  static decks look: 1280x720, top-aligned, no transition, reveal.js's ``white`` theme,
  whose fonts come with the extension (its default theme loads fonts from a font CDN).

Only metadata changes (and markdown cells split in two): code, outputs, ids stay.

    $ python -m labkit slide-layout                 # every lesson
    $ python -m labkit slide-layout notebooks/04-Speak-HTTP-From-A-Raw-Socket.ipynb
    $ python -m labkit slide-layout --check         # change nothing; exit 1 if it would

Needs Playwright and /usr/bin/chromium, as tests/test_browser.py does.
"""

from __future__ import annotations

import copy
import itertools
import re
import tempfile
from pathlib import Path
from typing import Any

import nbformat

from labkit.tools.exercises import is_check
from labkit.tools.record import NOTEBOOKS
from labkit.tools.slides import HEIGHT, WIDTH, build_decks

CHROMIUM = "/usr/bin/chromium"
BUDGET = HEIGHT - 2 * 16 - 24  # the slide's padding (slides.css), and a margin
LEAD = 100  # px: a sentence of two lines or so, that leads into the cell below it
# jupyterlab-rise's settings, per notebook (they win over the user's): as the static decks
RISE = {"width": WIDTH, "height": HEIGHT, "center": False, "transition": "none",
        "theme": "white", "slideNumber": "c/t", "scroll": True}
_MID_HEADING = re.compile(r"^## ", re.MULTILINE)

# Every cell's height on its slide, by cell id, with all fragments shown and nothing fitted.
CELL_HEIGHTS_JS = """async () => {
    const frame = () => new Promise(done => requestAnimationFrame(
        () => requestAnimationFrame(done)));
    Reveal.configure({transition: 'none'});
    const heights = {};
    for (const slide of Reveal.getSlides()) {
        const {h, v} = Reveal.getIndices(slide);
        Reveal.slide(h, v, slide.querySelectorAll('.fragment').length);
        await frame();
        for (const cell of slide.querySelectorAll('.jp-Cell')) {
            const style = getComputedStyle(cell);
            heights[cell.id.replace('cell-id=', '')] = cell.offsetHeight
                + parseFloat(style.marginTop) + parseFloat(style.marginBottom);
        }
    }
    return heights;
}"""


def _slide_type(cell) -> str:
    return cell.metadata.get("slideshow", {}).get("slide_type", "-")


def _set(cell, slide_type: str) -> None:
    cell.metadata["slideshow"] = {"slide_type": slide_type}


def split_headings(nb) -> int:
    """Split markdown cells at ``##`` headings below their first line; how many splits."""
    cells, splits = [], 0
    for cell in nb.cells:
        starts = [m.start() for m in _MID_HEADING.finditer(cell.source) if m.start() > 0]
        if cell.cell_type != "markdown" or not starts:
            cells.append(cell)
            continue
        for n, (begin, end) in enumerate(itertools.pairwise([0, *starts, len(cell.source)])):
            part = copy.deepcopy(cell)
            part.source = cell.source[begin:end].strip("\n")
            if n:
                part.id = f"{cell.id}-{n}"
                _set(part, "slide")
                splits += 1
            cells.append(part)
    nb.cells = cells
    return splits


def cell_heights(notebooks: list[Path], page=None) -> dict[str, dict[str, float]]:
    """{notebook name: {cell id: pixels}} from each lesson's deck, in Chromium (a Playwright
    ``page`` at 1280x720 if given, else a browser of its own)."""
    if page is None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                return cell_heights(notebooks, browser.new_page(
                    viewport={"width": WIDTH, "height": HEIGHT}))
            finally:
                browser.close()
    heights = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path, deck in zip(notebooks, build_decks(tmp, notebooks), strict=True):
            page.goto(deck.as_uri() + "?nofit")
            page.wait_for_function("() => window.Reveal && Reveal.isReady()")
            heights[path.name] = page.evaluate(CELL_HEIGHTS_JS)
    return heights


def lay_out(nb, heights: dict[str, float]) -> list[int]:
    """Set every cell's slide type from ``heights`` (see the module's docstring); the indexes
    of the cells too tall for a slide of their own."""
    used = 0.0  # the height of the slide being filled ...
    members: list[int] = []  # ... and its cells
    too_big = []
    for i, cell in enumerate(nb.cells):
        old = _slide_type(cell)
        shown = old not in ("skip", "notes") and not is_check(cell)
        height = heights.get(cell.id, 0.0) if shown else 0.0
        text = cell.source.lstrip()
        if height > BUDGET:
            too_big.append(i)
        if old in ("skip", "notes"):
            new = old
        elif i == 0 or (cell.cell_type == "markdown" and text.startswith(("# ", "## "))):
            new = "slide"
        elif cell.cell_type == "markdown" and text.startswith("### "):
            new = "subslide"
        elif used + height <= BUDGET:
            new = "fragment" if old == "fragment" else "-"
        else:
            new = "subslide"
            lead = nb.cells[members[-1]] if members else nbformat.v4.new_code_cell()  # (no lead)
            leads = (cell.cell_type == "code" and lead.cell_type == "markdown"
                     and not lead.source.lstrip().startswith("#"))
            if leads and len(members) == 1 and heights.get(lead.id, 0.0) <= LEAD:
                # the sentence that introduces this code opened the slide: they stay together
                # (a slide of one sentence shows nothing; the deck fits the pair)
                new = "fragment" if old == "fragment" else "-"
            elif leads and len(members) > 1 and heights.get(lead.id, 0.0) + height <= BUDGET:
                _set(lead, "subslide")  # the paragraph that introduces this code goes with it
                used, members = heights.get(lead.id, 0.0), [members[-1]]
                new = "fragment" if old == "fragment" else "-"
        if new in ("slide", "subslide"):
            used, members = 0.0, []
        used += height
        if shown:
            members.append(i)
        _set(cell, new)
    nb.metadata["rise"] = dict(RISE)
    return too_big


def laid_out(notebooks: list[Path], page=None) -> dict[Path, tuple[Any, int, list[int]]]:
    """Each notebook as slide-layout would write it, without writing it:
    {path: (notebook, how many cells or settings change, cells too big for a slide)}
    (``page``: see :func:`cell_heights`)."""
    notebooks = [Path(p) for p in notebooks]
    books, splits = {}, {}
    for path in notebooks:
        books[path] = nbformat.read(path, as_version=4)
        splits[path] = split_headings(books[path])
    with tempfile.TemporaryDirectory() as tmp:  # the deck is measured with the final cells
        split = []
        for path in notebooks:
            split.append(Path(tmp) / path.name)
            nbformat.write(books[path], split[-1])
        heights = cell_heights(split, page)
    found = {}
    for path in notebooks:
        nb = books[path]
        before = [_slide_type(c) for c in nb.cells], nb.metadata.get("rise")
        too_big = lay_out(nb, heights[path.name])
        changed = (splits[path] + sum(a != _slide_type(c) for a, c in zip(before[0], nb.cells,
                                                                           strict=True))
                   + (before[1] != nb.metadata["rise"]))
        found[path] = (nb, changed, too_big)
    return found


def main(paths: list[str], check: bool = False) -> int:
    notebooks = [Path(p) for p in paths] or sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
    stale = 0
    for path, (nb, changed, too_big) in laid_out(notebooks).items():
        if changed and not check:
            nbformat.write(nb, path)
        verb = "would change" if check else "changed"
        print(f"{path.name}: {changed} slide types or settings {verb}")
        for i in too_big:
            first = nb.cells[i].source.strip().splitlines()[0][:60] if nb.cells[i].source else ""
            print(f"    cell {i} is taller than a slide: split it, or shorten its output "
                  f"({first!r})")
        stale += bool(changed)
    if check and stale:
        print("run `python -m labkit slide-layout` on these notebooks")
    return 1 if check and stale else 0
