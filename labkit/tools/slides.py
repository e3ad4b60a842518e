"""Static reveal.js decks of the lessons, for a 1280x720 projector, that work offline.

Each lesson's slide metadata (``metadata.slideshow.slide_type``) makes one deck,
``slides/NN-....slides.html``, through nbconvert's SlidesExporter and the template in
``slides_template/``. reveal.js comes from the ``sphinx-revealjs`` package (it vendors
reveal.js 5) and is copied beside the decks, so the folder works without a network and can
be carried to another machine as it is. The deck shows the lesson as a student gets it:

* exercises without their solutions (the student edition's stubs) and without their
  checks, whose ✅ would give the answer away, nor any output that shows an answer;
* speaker notes (cells of slide type ``notes``) in the speaker view (press S), not on
  the slides;
* no test scaffolding: nbval's tags, the comment that explains a tag (the first comment
  lines of a tagged cell), ``# NBVAL_...`` lines and ``# noqa`` remarks stay in the notebook;
* a ``##`` heading inside a markdown cell starts a slide of its own (01's Summary).

    $ python -m labkit slides --outdir slides/              # every lesson
    $ python -m labkit slides --outdir /tmp/d notebooks/01-Watch-A-TCP-Handshake.ipynb

Every text on a slide is at least 18 px at 1280x720 (``slides_template/slides.css``); a
slide too big is fitted as far as that allows, and scrolls beyond (see the template).
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import re
import shutil
from pathlib import Path

import nbformat

from labkit.tools.exercises import is_check
from labkit.tools.handout import student_edition
from labkit.tools.record import NOTEBOOKS

TEMPLATE = Path(__file__).resolve().parent / "slides_template"
WIDTH, HEIGHT = 1280, 720
REVEAL_DIR = "reveal.js"  # beside the decks; the decks load it by this relative path
THEME = "white"  # its fonts come with reveal.js; "simple" (nbconvert's default) loads Google Fonts

_NBVAL_LINE = re.compile(r"^[ \t]*# NBVAL_\w+[ \t]*\n?", re.MULTILINE)
_NOQA = re.compile(r"[ \t]*# noqa\b[^\n]*")
_HEADING = re.compile(r"^## ", re.MULTILINE)


def reveal_js() -> Path:
    """The reveal.js tree that sphinx-revealjs ships (dist/, plugin/)."""
    spec = importlib.util.find_spec("sphinx_revealjs")  # found, not imported: no Sphinx loads
    if spec is None or spec.origin is None:
        raise RuntimeError("reveal.js is missing: pip install -r requirements.txt "
                           "(sphinx-revealjs ships it)")
    path = Path(spec.origin).parent / "_static" / "revealjs"
    if not (path / "dist" / "reveal.js").is_file():
        raise RuntimeError(f"no dist/reveal.js in {path}: sphinx-revealjs changed its layout; "
                           "pin the version requirements.txt names")
    return path


def _without_test_comments(cell) -> None:
    """Drop nbval's tags, the comment lines that explain them, and lint remarks."""
    tags = cell.metadata.get("tags", [])
    nbval = [t for t in tags if t.startswith("nbval")]
    if nbval:
        lines = cell.source.splitlines()
        while lines and lines[0].lstrip().startswith("#"):
            lines.pop(0)
        cell.source = "\n".join(lines)
        cell.metadata["tags"] = [t for t in tags if t not in nbval]
    cell.source = _NOQA.sub("", _NBVAL_LINE.sub("", cell.source))


def _split_at_headings(cell) -> list:
    """A markdown cell with a heading below its first line: one cell per heading."""
    starts = [m.start() for m in _HEADING.finditer(cell.source) if m.start() > 0]
    if not starts:
        return [cell]
    bounds = [0, *starts, len(cell.source)]
    parts = []
    for n, (begin, end) in enumerate(itertools.pairwise(bounds)):
        part = copy.deepcopy(cell)
        if n and "id" in cell:
            part.id = f"{cell.id}-{n}"
        part.source = cell.source[begin:end].strip("\n")
        if begin > 0:
            part.metadata["slideshow"] = {"slide_type": "slide"}
        parts.append(part)
    return parts


def deck_notebook(nb):
    """A copy of ``nb`` as the deck shows it (see the module's docstring)."""
    nb = student_edition(copy.deepcopy(nb), notes=True)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            if is_check(cell):
                cell.metadata["slideshow"] = {"slide_type": "skip"}
            _without_test_comments(cell)
            cells.append(cell)
        elif cell.cell_type == "markdown":
            cells.extend(_split_at_headings(cell))
        else:
            cells.append(cell)
    nb.cells = cells
    return nb


def exporter():
    from nbconvert import SlidesExporter

    return SlidesExporter(
        extra_template_basedirs=[str(TEMPLATE.parent)],
        template_name=TEMPLATE.name,
        reveal_url_prefix=REVEAL_DIR,
        reveal_width=str(WIDTH),
        reveal_height=str(HEIGHT),
        reveal_transition="none",  # a projector shows the next slide at once
        reveal_number="c/t",
        reveal_theme=THEME,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )


def copy_reveal(outdir: Path) -> Path:
    """What the decks load of reveal.js (script, styles, THEME with its fonts, the notes
    plugin) beside them; not the other themes, some of which load Google Fonts."""
    source, target = reveal_js(), outdir / REVEAL_DIR
    shutil.rmtree(target, ignore_errors=True)
    (target / "dist" / "theme").mkdir(parents=True)
    for name in ("reveal.js", "reveal.css"):
        shutil.copy(source / "dist" / name, target / "dist" / name)
    shutil.copy(source / "dist" / "theme" / f"{THEME}.css", target / "dist" / "theme")
    shutil.copytree(source / "dist" / "theme" / "fonts", target / "dist" / "theme" / "fonts")
    shutil.copytree(source / "plugin" / "notes", target / "plugin" / "notes")
    shutil.copy(source / "LICENSE", target / "LICENSE")
    return target


def build_deck(notebook: Path, outdir: Path, slides_exporter=None) -> Path:
    """Write ``outdir/<notebook stem>.slides.html``; reveal.js must be copied there too."""
    nb = deck_notebook(nbformat.read(notebook, as_version=4))
    html, _ = (slides_exporter or exporter()).from_notebook_node(
        nb, resources={"metadata": {"name": notebook.stem}})
    target = outdir / f"{notebook.stem}.slides.html"
    target.write_text(html, encoding="utf-8")
    return target


def build_decks(outdir, notebooks: list[Path] | None = None) -> list[Path]:
    """Every lesson's deck (or those named) in ``outdir``, with reveal.js beside them."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    copy_reveal(out)
    paths = notebooks or sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
    slides_exporter = exporter()
    return [build_deck(Path(p), out, slides_exporter) for p in paths]


# Walks every slide of a deck open in a browser (Reveal's API) and says, per slide, whether
# anything on it lies outside the WIDTH x HEIGHT slide: the slide taller or wider than that,
# an element past its edges, or content cut inside a scrolling box (a long code line); how
# much it was shrunk to fit (zoom); the smallest text on it as projected (its font size times
# the slide's zoom and Reveal's scale, code and tables included: a 1280x720 window is the
# projector); how far its figures are scaled from their own size; figures that failed to
# load. Fragments count as shown. Used by benchmarks/slides_overflow.py and
# tests/test_browser.py.
MEASURE_SLIDES_JS = """async () => {
    const frame = () => new Promise(done => requestAnimationFrame(
        () => requestAnimationFrame(done)));
    Reveal.configure({transition: 'none', backgroundTransition: 'none'});  // rects hold still
    const box = document.querySelector('.reveal .slides').getBoundingClientRect();
    const results = [];
    for (const slide of Reveal.getSlides()) {
        const {h, v} = Reveal.getIndices(slide);
        Reveal.slide(h, v, slide.querySelectorAll('.fragment').length);
        await frame();
        const zoom = parseFloat(slide.style.zoom || '1');
        // the slide's zoom and Reveal's scale together: what a CSS pixel becomes on screen
        const scale = slide.getBoundingClientRect().width / slide.offsetWidth;
        // what can be seen: every piece of text (its own extent, not its box's) and picture
        let outside = 0, cut = 0, smallest = Infinity, sample = '';
        const past = r => r.width > 0 && (r.right > box.right + 1 || r.bottom > box.bottom + 1);
        const texts = document.createTreeWalker(slide, NodeFilter.SHOW_TEXT);
        const range = document.createRange();
        while (texts.nextNode()) {
            const text = texts.currentNode.textContent.trim();
            if (!text) continue;
            range.selectNodeContents(texts.currentNode);
            const rect = range.getBoundingClientRect();
            if (rect.width === 0 || rect.height === 0) continue;  // not shown (display: none)
            if (past(rect)) outside++;
            const size = parseFloat(getComputedStyle(texts.currentNode.parentElement).fontSize)
                * scale;
            if (size < smallest) { smallest = size; sample = text.slice(0, 40); }
        }
        for (const el of slide.querySelectorAll('img, svg, canvas, table')) {
            if (past(el.getBoundingClientRect())) outside++;
        }
        for (const el of slide.querySelectorAll('*')) {  // a box that scrolls hides some of it
            const style = getComputedStyle(el);
            if (style.overflowX !== 'visible' && el.scrollWidth > el.clientWidth + 1) cut++;
            if (style.overflowY !== 'visible' && el.scrollHeight > el.clientHeight + 1) cut++;
        }
        const images = [...slide.querySelectorAll('img')];
        const shown = images.filter(img => img.naturalWidth > 0);
        const heading = slide.querySelector('h1, h2, h3');
        results.push({
            slide: `${h + 1}.${v + 1}`,
            title: (heading ? heading.textContent : slide.textContent).trim().slice(0, 60),
            height: slide.scrollHeight, zoom,
            smallest_text: smallest === Infinity ? null : Math.round(smallest * 10) / 10,
            smallest_sample: sample,
            figures: images.length,
            figures_missing: images.length - shown.length,
            figure_scale: shown.length ? Math.min(...shown.map(
                img => img.getBoundingClientRect().width / img.naturalWidth)) : null,
            figure_fitted: images.some(img => img.style.maxHeight),
            notes: Reveal.getSlideNotes(slide) || '',
            overflows: outside > 0 || cut > 0, outside, cut,
        });
    }
    return results;
}"""


def measure_deck(page, url: str) -> list[dict]:
    """Open ``url`` in a Playwright ``page`` and measure every slide (MEASURE_SLIDES_JS)."""
    page.goto(url)
    page.wait_for_function("() => window.Reveal && Reveal.isReady()")
    return page.evaluate(MEASURE_SLIDES_JS)
