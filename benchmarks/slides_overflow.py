"""How many slides of each deck do not fit a 1280x720 projector (Chromium, Reveal's API).

    $ .venv/bin/python benchmarks/slides_overflow.py                 # labkit's decks
    $ .venv/bin/python benchmarks/slides_overflow.py --nofit         # ... without shrinking
    $ .venv/bin/python benchmarks/slides_overflow.py --stock --require-js PATH/require.js
    $ .venv/bin/python benchmarks/slides_overflow.py 01 06 -v        # two decks, every slide

Builds the decks into a temporary folder, opens each in /usr/bin/chromium at 1280x720 and
walks every slide (all fragments shown): a slide overflows when it is taller or wider than
the slide, an element lies past its edges, or a scrolling box cuts its content (a long code
line). labkit's decks shrink a slide that is still too big (CSS zoom): --nofit turns that off
to show how many slides need it; "shrunk" counts them and "smallest" is the lowest zoom;
"figures fitted" counts slides whose figure (a long ladder) was made shorter to fit.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="lesson numbers (default: all), e.g. 01 06")
    parser.add_argument("--nofit", action="store_true", help="measure without shrinking")
    parser.add_argument("--stock", action="store_true", help="nbconvert's own template")
    parser.add_argument("--require-js", type=Path, help="a local require.js (for --stock)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every slide")
    args = parser.parse_args()
    notebooks = [p for p in sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
                 if not args.lessons or p.name[:2] in args.lessons]
    if args.stock and not args.require_js:
        parser.error("--stock needs --require-js PATH (e.g. from Debian's libjs-requirejs)")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        out = Path(tmp)
        decks = (stock_decks(out, notebooks, args.require_js) if args.stock
                 else build_decks(out, notebooks))
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        print(f"{'deck':40} {'slides':>6} {'overflow':>8} {'shrunk':>6} {'smallest':>8}"
              f" {'figures fitted':>14}")
        total = [0, 0, 0]
        for deck in decks:
            url = deck.as_uri() + ("?nofit" if args.nofit else "")
            slides = measure_stock(page, url) if args.stock else measure_deck(page, url)
            over = [s for s in slides if s["overflows"]]
            shrunk = [s["zoom"] for s in slides if s["zoom"] < 1]
            print(f"{deck.name.removesuffix('.slides.html'):40} {len(slides):6} {len(over):8}"
                  f" {len(shrunk):6} {min(shrunk, default=1):8.2f}"
                  f" {sum(s['figure_fitted'] for s in slides):14}")
            for s in slides if args.verbose else over:
                mark = "OVER" if s["overflows"] else "    "
                print(f"    {mark} {s['slide']:>6} h={s['height']:5} zoom={s['zoom']:.2f}"
                      f" outside={s['outside']} cut={s['cut']}  {s['title']!r}")
            total = [total[0] + len(slides), total[1] + len(over), total[2] + len(shrunk)]
        print(f"{'all':40} {total[0]:6} {total[1]:8} {total[2]:6}")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
