"""Which slides of each deck do not fit a 1280x720 projector, or are too small to read.

    $ .venv/bin/python benchmarks/slides_overflow.py                 # labkit's decks
    $ .venv/bin/python benchmarks/slides_overflow.py --nofit         # ... without shrinking
    $ .venv/bin/python benchmarks/slides_overflow.py --stock --require-js PATH/require.js
    $ .venv/bin/python benchmarks/slides_overflow.py 01 06 -v        # two decks, every slide
    $ .venv/bin/python benchmarks/slides_overflow.py --relayout      # as slide-layout would

Builds the decks into a temporary folder, opens each in /usr/bin/chromium at 1280x720 and
walks every slide (all fragments shown): a slide overflows when it is taller or wider than
the slide, an element lies past its edges, or a scrolling box cuts its content (a long code
line). labkit's decks shrink a slide that is still too big (CSS zoom): a shrunk slide does
*not* fit ("unfit" counts both); "shrunk" counts them and "zoom" is the lowest. "text" is the
smallest text on any slide as projected (font size x zoom, code and tables included) and
"<18px" how many slides have text smaller than 18 px; "figure" is the smallest scale of a
figure against its own size (a long ladder squeezed onto a slide), "fitted" how many slides
had a figure made shorter to fit; "notes" how many slides carry speaker notes.
--relayout measures the decks of the notebooks as `python -m labkit slide-layout` would lay
them out (in a temporary copy: the notebooks are not changed), and lists the cells too tall
for any slide, whose content needs splitting.
--stock measures what `jupyter nbconvert --to slides` makes of the notebooks (its own
template, 960x700, reveal.js from sphinx-revealjs and require.js from PATH: it loads both
from CDNs otherwise), the state the slides were in before labkit's template.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nbformat
from playwright.sync_api import sync_playwright

from labkit.tools.record import NOTEBOOKS
from labkit.tools.slides import (
    HEIGHT,
    MEASURE_SLIDES_JS,
    REVEAL_DIR,
    WIDTH,
    build_decks,
    copy_reveal,
    measure_deck,
)

CHROMIUM = "/usr/bin/chromium"
SMALLEST_TEXT = 18  # px at 1280x720: what the back of a room still reads


def stock_decks(outdir: Path, notebooks: list[Path], require_js: Path) -> list[Path]:
    """The decks nbconvert makes with its own reveal template, everything loaded locally."""
    import shutil

    from nbconvert import SlidesExporter

    copy_reveal(outdir)
    shutil.copy(require_js, outdir / "require.js")
    exporter = SlidesExporter(reveal_url_prefix=REVEAL_DIR, require_js_url="require.js",
                              jquery_url="reveal.js/none.js")  # jQuery: only for scroll mode
    decks = []
    for path in notebooks:
        html, _ = exporter.from_notebook_node(nbformat.read(path, as_version=4))
        decks.append(outdir / f"{path.stem}.slides.html")
        decks[-1].write_text(html, encoding="utf-8")
    return decks


def measure_stock(page, url: str) -> list[dict]:
    page.goto(url)
    # the stock deck loads reveal.js as a require.js module: make it reachable as Reveal
    page.wait_for_function("() => window.require")
    page.evaluate("""() => new Promise(done => require(['reveal.js/dist/reveal.js'], R => {
        window.Reveal = R; done(); }))""")
    page.wait_for_function("() => Reveal.isReady()")
    return page.evaluate(MEASURE_SLIDES_JS)


def relaid(notebooks: list[Path], outdir: Path) -> list[Path]:
    """Copies of ``notebooks`` in ``outdir`` as slide-layout lays them out; prints the cells
    too tall for a slide."""
    from labkit.tools.slide_layout import laid_out

    copies = []
    for path, (nb, changed, too_big) in laid_out(notebooks).items():
        copies.append(outdir / "relaid" / path.name)
        copies[-1].parent.mkdir(exist_ok=True)
        nbformat.write(nb, copies[-1])
        print(f"{path.name}: slide-layout changes {changed}")
        for i in too_big:
            lines = nb.cells[i].source.strip().splitlines() or [""]
            print(f"    cell {i} is taller than a slide ({len(lines)} lines: {lines[0][:50]!r})")
    return copies


def fits(slide: dict) -> bool:
    """Fits 1280x720 as it is: nothing outside, nothing cut, not shrunk."""
    return not slide["overflows"] and slide["zoom"] >= 1


def summarize(slides: list[dict]) -> dict:
    """One deck's figures, as the table prints them."""
    texts = [s["smallest_text"] for s in slides if s["smallest_text"] is not None]
    figures = [s["figure_scale"] for s in slides if s["figure_scale"] is not None]
    return {
        "slides": len(slides),
        "unfit": sum(not fits(s) for s in slides),
        "over": sum(s["overflows"] for s in slides),
        "shrunk": sum(s["zoom"] < 1 for s in slides),
        "zoom": min((s["zoom"] for s in slides), default=1),
        "text": min(texts, default=0),
        "small": sum(t < SMALLEST_TEXT for t in texts),
        "figure": min(figures, default=1),
        "fitted": sum(s["figure_fitted"] for s in slides),
        "notes": sum(bool(s.get("notes")) for s in slides),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="lesson numbers (default: all), e.g. 01 06")
    parser.add_argument("--nofit", action="store_true", help="measure without shrinking")
    parser.add_argument("--stock", action="store_true", help="nbconvert's own template")
    parser.add_argument("--require-js", type=Path, help="a local require.js (for --stock)")
    parser.add_argument("--relayout", action="store_true",
                        help="lay a copy out with slide-layout first (the notebooks stay)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every slide")
    args = parser.parse_args()
    notebooks = [p for p in sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
                 if not args.lessons or p.name[:2] in args.lessons]
    if args.stock and not args.require_js:
        parser.error("--stock needs --require-js PATH (e.g. from Debian's libjs-requirejs)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if args.relayout:  # before this module's browser: slide-layout starts its own
            notebooks = relaid(notebooks, out)
        with sync_playwright() as playwright:
            measure(args, notebooks, out, playwright)
    return 0


def measure(args, notebooks: list[Path], out: Path, playwright) -> None:
    """Build and measure every deck, printing the table."""
    decks = (stock_decks(out, notebooks, args.require_js) if args.stock
             else build_decks(out, notebooks))
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    print(f"{'deck':34} {'slides':>6} {'unfit':>5} {'over':>4} {'shrunk':>6} {'zoom':>5}"
          f" {'text':>5} {'<18px':>5} {'figure':>6} {'fitted':>6} {'notes':>5}")
    totals = dict.fromkeys(("slides", "unfit", "over", "shrunk", "small", "notes"), 0)
    for deck in decks:
        url = deck.as_uri() + ("?nofit" if args.nofit else "")
        slides = measure_stock(page, url) if args.stock else measure_deck(page, url)
        row = summarize(slides)
        for key in totals:
            totals[key] += row[key]
        print(f"{deck.name.removesuffix('.slides.html')[:34]:34} {row['slides']:6}"
              f" {row['unfit']:5} {row['over']:4} {row['shrunk']:6} {row['zoom']:5.2f}"
              f" {row['text']:5.1f} {row['small']:5} {row['figure']:6.2f}"
              f" {row['fitted']:6} {row['notes']:5}")
        for s in slides if args.verbose else [s for s in slides if not fits(s)]:
            mark = "OVER" if s["overflows"] else "SMALL" if s["zoom"] < 1 else ""
            figure = f" figure={s['figure_scale']:.2f}" if s["figure_scale"] else ""
            print(f"    {mark:5} {s['slide']:>6} h={s['height']:5} zoom={s['zoom']:.2f}"
                  f" text={s['smallest_text']}{figure} outside={s['outside']}"
                  f" cut={s['cut']}  {s['title']!r}")
    print(f"{'all':34} {totals['slides']:6} {totals['unfit']:5} {totals['over']:4}"
          f" {totals['shrunk']:6} {'':5} {'':5} {totals['small']:5} {'':6} {'':6}"
          f" {totals['notes']:5}")
    browser.close()


if __name__ == "__main__":
    sys.exit(main())
