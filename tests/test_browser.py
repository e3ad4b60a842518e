"""Every notebook works in a real browser: JupyterLab driven by Debian's Chromium.

nbval runs the notebooks' code; this runs what a student does. One JupyterLab server (on a
copy of notebooks/, so Run All never rewrites the committed notebooks) and one headless
Chromium serve every notebook: open it, wait for the lab kernel to be idle (a Run All clicked
while the kernel starts is silently lost), click Run › Run All Cells, wait until every code
cell has run, then check what the student sees: no error output, every figure loaded, every
table has rows. A screenshot of each notebook goes to $LABKIT_SCREENSHOTS (.ci/run keeps
them in artifacts/screenshots) or to pytest's tmp_path, with run_all_times.txt beside them.

    $ .venv/bin/pytest -p no:xdist -s -m browser tests/test_browser.py

Playwright drives /usr/bin/chromium (`make system-tools` installs it as root); Playwright's
own browser download (`playwright install`) is never used. Without either, these tests skip.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
KERNEL = "Python 3 (netlab)"
AS_ROOT = os.geteuid() == 0
SERVER_START_S = 60
KERNEL_IDLE_S = 120
# 07 is the longest: it runs load tests against several servers (about a minute when idle);
# the bound only has to catch a hang, under a loaded CI machine too.
RUN_ALL_S = 600

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} missing (as root: apt-get install chromium)"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(server: subprocess.Popen, status_url: str, log: Path) -> None:
    """Poll JupyterLab's /api/status until it answers; fail at once if the server exits."""
    deadline = time.monotonic() + SERVER_START_S
    while True:
        try:
            with urllib.request.urlopen(status_url, timeout=2):
                return
        except OSError:
            pass
        try:
            server.wait(timeout=0.2)  # the pause between polls, which also sees an early exit
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab not serving after {SERVER_START_S} s; log: {log}")
            continue
        pytest.fail(f"jupyter lab exited ({server.returncode}):\n{log.read_text()[-2000:]}")


def lab_settings(settings_dir: Path) -> None:
    """No news or update toasts: they would cover the outputs in the screenshots."""
    path = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


@pytest.fixture(scope="module")
def jupyter_lab(tmp_path_factory):
    """One JupyterLab for the module, with private Jupyter dirs; yields (base URL, token)."""
    tmp = tmp_path_factory.mktemp("jupyter_lab")
    shutil.copytree(ROOT / "notebooks", tmp / "notebooks")
    lab_settings(tmp / "settings")
    env = dict(
        os.environ,
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),  # the lab kernelspec stays found: it is in the venv
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),  # no tabs restored from elsewhere
    )
    port, token = free_port(), secrets.token_hex(16)
    command = [
        str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser",
        "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp / 'notebooks'}",
    ] + (["--allow-root"] if AS_ROOT else [])  # fmt: skip
    log = tmp / "jupyter_lab.log"
    with log.open("w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(server, f"{base}/api/status?token={token}", log)
        yield base, token
    finally:
        server.terminate()  # Jupyter shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module."""
    with sync_api.sync_playwright() as playwright:
        # as root Chromium refuses to start with its sandbox
        args = ["--no-sandbox"] if AS_ROOT else []
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, jupyter_lab):
    """A fresh tab per notebook; afterwards the notebook's kernel is shut down."""
    base, token = jupyter_lab
    tab = browser.new_page(viewport={"width": 1280, "height": 800})
    yield tab
    tab.close()
    api = f"{base}/api/sessions"
    headers = {"Authorization": f"token {token}"}
    with urllib.request.urlopen(urllib.request.Request(api, headers=headers)) as answer:
        sessions = json.load(answer)
    for session in sessions:  # its servers, capture and namespace end with it
        delete = urllib.request.Request(f"{api}/{session['id']}", headers=headers, method="DELETE")
        urllib.request.urlopen(delete).close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    folder = os.environ.get("LABKIT_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def run_all_times(screenshots):
    """Seconds each notebook's Run All took, printed and written as a table at the end."""
    times: dict[str, float] = {}
    yield times
    table = "\n".join(f"{name:<45} {s:6.1f} s" for name, s in times.items())
    table = f"{'Run All in Chromium':<45} {'time':>8}\n{table}\n"
    (screenshots / "run_all_times.txt").write_text(table)
    print(f"\n{table}screenshots: {screenshots}")


def expected_outputs(path: Path) -> tuple[int, int]:
    """How many figures (image/png) and HTML tables the committed run of a notebook shows."""
    outputs = [o for c in nbformat.read(path, as_version=4).cells for o in c.get("outputs", [])]
    data = [o.get("data", {}) for o in outputs]
    figures = sum("image/png" in d for d in data)
    tables = sum("<table" in d.get("text/html", "") for d in data)
    return figures, tables


PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook in view

KERNEL_IDLE = f"""() => {{
    const name = document.querySelector('{PANEL} .jp-Toolbar-kernelName');
    const bar = document.querySelector('#jp-main-statusbar');
    return name?.textContent === '{KERNEL}' && bar?.innerText.includes('{KERNEL} | Idle');
}}"""

CODE_PROMPTS = f"[...document.querySelectorAll('{PANEL} .jp-CodeCell .jp-InputPrompt')]"
ERROR_OUTPUTS = f"""[...document.querySelectorAll('{PANEL} .jp-OutputArea-output')]
    .filter(o => o.dataset.mimeType === 'application/vnd.jupyter.stderr')"""

# Run All has ended when every code cell shows an execution count ("[7]:", not "[*]:" or
# "[ ]:"), or when a cell failed (JupyterLab then leaves the cells below it unrun), and the
# kernel is idle.
RUN_ALL_ENDED = f"""() => {{
    const prompts = {CODE_PROMPTS}.map(p => p.textContent.trim());
    const ran = prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p));
    const failed = {ERROR_OUTPUTS}.length > 0 && !prompts.includes('[*]:');
    return (ran || failed) && ({KERNEL_IDLE})();
}}"""

# JupyterLab 4 renders an error (traceback) and a stderr stream with the same MIME type
WHAT_THE_STUDENT_SEES = f"""() => {{
    const outputs = [...document.querySelectorAll('{PANEL} .jp-OutputArea-output')];
    const inside = selector => outputs.flatMap(o => [...o.querySelectorAll(selector)]);
    return {{
        errors: {ERROR_OUTPUTS}.map(o => o.textContent.slice(0, 1000)),
        unrun: {CODE_PROMPTS}.filter(p => !/^\\[\\d+\\]:$/.test(p.textContent.trim())).length,
        figures: inside('img').map(img => img.complete ? img.naturalWidth : 0),
        table_rows: inside('table').map(table => table.rows.length),
    }};
}}"""

NOTEBOOK_HEIGHT = f"""async () => {{
    const outer = document.querySelector('{PANEL} .jp-WindowedPanel-outer');
    outer.scrollTop = 0;
    await new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
    const cells = outer.querySelectorAll('.jp-Cell');  // scrollHeight would count the blank
    return cells[cells.length - 1].getBoundingClientRect().bottom;  // space past the end
}}"""


def whole_notebook_in_view(page) -> None:
    """Make the window as tall as the notebook, for a screenshot of all of it.

    Cells out of view are only estimated (JupyterLab renders what is visible), so each
    taller window shows more real cells and a taller notebook: grow until it all fits.
    """
    height = 800
    for _ in range(10):
        page.set_viewport_size({"width": 1280, "height": height})
        bottom = page.evaluate(NOTEBOOK_HEIGHT) + 40  # the status bar below the notebook
        if bottom <= height or height == 32000:
            return
        height = min(int(bottom), 32000)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_run_all_in_chromium(notebook, jupyter_lab, page, screenshots, run_all_times):
    base, token = jupyter_lab
    # ?reset: a fresh workspace, so no other notebook's tab is restored beside this one
    page.goto(f"{base}/lab/tree/{notebook.name}?reset&token={token}")
    page.wait_for_function(KERNEL_IDLE, timeout=KERNEL_IDLE_S * 1000)

    started = time.monotonic()
    page.click('.lm-MenuBar-itemLabel:text-is("Run")')
    page.click('li[data-command="runmenu:run-all"]')  # Run › Run All Cells, as a student does
    page.wait_for_function(RUN_ALL_ENDED, timeout=RUN_ALL_S * 1000, polling=250)
    run_all_times[notebook.stem] = time.monotonic() - started

    seen = page.evaluate(WHAT_THE_STUDENT_SEES)
    # the whole notebook in one picture: a viewport as tall as the notebook
    whole_notebook_in_view(page)
    page.screenshot(path=screenshots / f"{notebook.stem}.png")

    figures, tables = expected_outputs(notebook)
    assert seen["errors"] == [], f"error output in {notebook.name}"
    assert seen["unrun"] == 0, f"{notebook.name}: Run All left {seen['unrun']} code cells unrun"
    assert len(seen["figures"]) >= figures, f"{notebook.name}: figures missing"
    assert all(width > 0 for width in seen["figures"]), f"{notebook.name}: a figure did not load"
    assert len(seen["table_rows"]) >= tables, f"{notebook.name}: tables missing"
    assert all(rows > 0 for rows in seen["table_rows"]), f"{notebook.name}: an empty table"


# --- The decks, as a projector shows them ---------------------------------------------------
# Every lesson's static deck (`make slides`), every slide at 1280x720 with all fragments shown:
# nothing outside the slide, nothing shrunk below 80 %, no text under 18 px (code and tables
# included), every figure loaded and drawn at 80 % of its size or more. A screenshot of each
# slide goes to slides-NN-.../ beside the notebooks' screenshots.

SMALLEST_ZOOM = 0.8     # a slide shrunk further than this is too small to read from the back
SMALLEST_TEXT = 18      # px at 1280x720
SMALLEST_FIGURE = 0.8   # of a figure's own size (a ladder's labels are 12 pt at 100 dpi)


@pytest.fixture(scope="module")
def decks(tmp_path_factory) -> dict[str, Path]:
    from labkit.tools.slides import build_decks

    return {deck.name[:2]: deck for deck in build_decks(tmp_path_factory.mktemp("decks"),
                                                          NOTEBOOKS)}


def slide_problems(slides: list[dict]) -> list[str]:
    """What is wrong with each slide that is not readable as projected, one line each."""
    problems = []
    for s in slides:
        where = f"slide {s['slide']} ({s['title'][:40]!r})"
        if s["overflows"]:
            problems.append(f"{where} does not fit (outside {s['outside']}, cut {s['cut']})")
        if s["zoom"] < SMALLEST_ZOOM:
            problems.append(f"{where} is shrunk to {s['zoom']:.2f}")
        if s["smallest_text"] is not None and s["smallest_text"] < SMALLEST_TEXT - 0.05:
            problems.append(f"{where} has {s['smallest_text']} px text "
                            f"({s['smallest_sample']!r})")
        if s["figures_missing"]:
            problems.append(f"{where}: {s['figures_missing']} figure(s) did not load")
        if s["figure_scale"] is not None and s["figure_scale"] < SMALLEST_FIGURE - 0.005:
            problems.append(f"{where} draws a figure at {s['figure_scale']:.2f} of its size")
    return problems


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_every_slide_reads_from_the_back_of_the_room(notebook, decks, browser, screenshots):
    from labkit.tools.slides import HEIGHT, WIDTH, measure_deck

    deck = decks[notebook.name[:2]]
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    try:
        slides = measure_deck(page, deck.as_uri())  # walks every slide, all fragments shown
        folder = screenshots / f"slides-{notebook.stem}"
        folder.mkdir(exist_ok=True)
        for n, slide in enumerate(slides, 1):  # the deck's URL says which slide: #/h/v
            h, v = (int(i) - 1 for i in slide["slide"].split("."))
            page.evaluate(f"Reveal.slide({h}, {v}, Infinity)")
            page.wait_for_function(f"() => Reveal.getIndices().h === {h} && "
                                   f"Reveal.getIndices().v === {v}")
            page.screenshot(path=folder / f"{n:02}-{slide['slide']}.png")
    finally:
        page.close()
    assert len(slides) > 5, "the deck has (almost) no slides"
    problems = slide_problems(slides)
    assert not problems, (f"{len(problems)} problems in {deck.name} at {WIDTH}x{HEIGHT} "
                          "(`python -m labkit slide-layout` lays a lesson out again; "
                          "benchmarks/slides_overflow.py -v lists every slide):\n"
                          + "\n".join(problems))


def test_every_decks_slide_metadata_is_current(browser):
    """`python -m labkit slide-layout` would change nothing: the committed slide types are the
    ones the cells' measured heights give, and each notebook carries its RISE settings."""
    from labkit.tools.slide_layout import laid_out
    from labkit.tools.slides import HEIGHT, WIDTH

    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    try:
        found = laid_out(NOTEBOOKS, page)
    finally:
        page.close()
    stale = {path.name: changed for path, (_, changed, _) in found.items() if changed}
    assert stale == {}, f"run `python -m labkit slide-layout` on these (changes): {stale}"


def test_speaker_notes_are_in_the_speaker_view_and_not_on_the_slide(browser, tmp_path):
    import nbformat

    from labkit.tools.slides import HEIGHT, WIDTH, build_deck, copy_reveal

    cells = [nbformat.v4.new_markdown_cell("## What a handshake is"),
             nbformat.v4.new_markdown_cell("Ask first: who sends the first SYN?"),
             nbformat.v4.new_markdown_cell("## Next")]
    for cell, kind in zip(cells, ["slide", "notes", "slide"], strict=True):
        cell.metadata["slideshow"] = {"slide_type": kind}
    (tmp_path / "nb").mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path / "nb" / "01-Test.ipynb")
    copy_reveal(tmp_path)
    deck = build_deck(tmp_path / "nb" / "01-Test.ipynb", tmp_path)
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    try:
        page.goto(deck.as_uri())
        page.wait_for_function("() => window.Reveal && Reveal.isReady()")
        notes = page.evaluate("() => Reveal.getSlides().map(s => Reveal.getSlideNotes(s) || '')")
        shown = page.evaluate("() => Reveal.getCurrentSlide().innerText")
    finally:
        page.close()
    assert ["Ask first" in n for n in notes] == [True, False]
    assert "Ask first" not in shown and "What a handshake is" in shown


def test_rise_presents_offline_at_a_readable_size(jupyter_lab, browser, screenshots):
    """JupyterLab's slideshow (jupyterlab-rise, Alt+R) of a lesson: nothing loaded from outside
    this machine (the default theme loads 4 fonts from a font CDN), no text under 18 px."""
    base, token = jupyter_lab
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    remote = []
    page.on("request", lambda r: remote.append(r.url)
            if not r.url.startswith((base, "data:", "blob:")) else None)
    try:
        page.goto(f"{base}/rise/{SLIDES_LESSON.name}?token={token}")
        page.wait_for_function("() => document.querySelector('.reveal .slides section.present "
                               ".jp-Cell')", timeout=KERNEL_IDLE_S * 1000)
        page.wait_for_load_state("networkidle")
        seen = page.evaluate(RISE_SLIDE_JS)
        page.screenshot(path=screenshots / f"rise-{SLIDES_LESSON.stem}.png")
    finally:
        page.close()
    assert remote == [], f"RISE loaded from outside this machine: {remote}"
    assert "theme-white" in seen["theme"], seen
    assert seen["smallest"] >= SMALLEST_TEXT, seen


SLIDES_LESSON = ROOT / "notebooks" / "01-Watch-A-TCP-Handshake.ipynb"
# The slide on screen in RISE: the theme, and its smallest text as drawn
RISE_SLIDE_JS = """() => {
    const slide = document.querySelector('.reveal .slides section.present');
    let smallest = Infinity, sample = '';
    const texts = document.createTreeWalker(slide, NodeFilter.SHOW_TEXT);
    while (texts.nextNode()) {
        const node = texts.currentNode, box = node.parentElement;
        const rect = box.getBoundingClientRect();
        if (!node.textContent.trim() || !rect.width || !box.offsetWidth) continue;
        const size = parseFloat(getComputedStyle(box).fontSize) * rect.width / box.offsetWidth;
        if (size < smallest) { smallest = size; sample = node.textContent.trim().slice(0, 40); }
    }
    return {theme: document.body.className, smallest, sample};
}"""
