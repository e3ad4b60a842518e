"""``python -m labkit doctor | record [NOTEBOOK...] | handout [DIR] |
slides [--outdir DIR] [NOTEBOOK...] | slide-layout [--check] [NOTEBOOK...] |
exercises [--check] | kernel install | lab [DIR]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    doc = sub.add_parser("doctor", help="capture mode and why, versions, what to fix: in the "
                         "lab kernel, what the notebooks get")
    doc.add_argument("--here", action="store_true",
                     help="report on this Python itself, not on the lab kernel")
    rec = sub.add_parser("record", help="re-run notebooks in record mode: refresh data/ "
                         "and the stored outputs together")
    rec.add_argument("notebooks", nargs="*", help="default: every notebook in notebooks/")
    hand = sub.add_parser("handout", help="write the student edition (solutions removed)")
    hand.add_argument("outdir", nargs="?", default="handout")
    slides = sub.add_parser("slides", help="write every lesson's reveal.js deck (works offline)")
    slides.add_argument("--outdir", default="slides", metavar="DIR",
                        help="where the decks and reveal.js go (default: slides)")
    slides.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                        help="default: every notebook in notebooks/")
    layout = sub.add_parser("slide-layout", help="set the lessons' slide types so every "
                            "slide fits 1280x720 (measured in Chromium)")
    layout.add_argument("notebooks", nargs="*", help="default: every notebook in notebooks/")
    layout.add_argument("--check", action="store_true",
                        help="change nothing; say what would change (exit 1 if anything would)")
    exe = sub.add_parser("exercises", help="write nbgrader's metadata on every exercise's "
                         "answer and check cells")
    exe.add_argument("--check", action="store_true",
                     help="only say which cells lack it (exit 1 if any do)")
    kern = sub.add_parser("kernel", help="install the 'Python 3 (netlab)' lab kernel")
    kern.add_argument("action", choices=["install"])
    kern.add_argument("--prefix", default=sys.prefix,
                      help="where to install the kernelspec (default: this venv)")
    lab = sub.add_parser("lab", help="JupyterLab on DIR; prints one line, the URL to open")
    lab.add_argument("root", nargs="?", default="notebooks", metavar="DIR")
    lab.add_argument("jupyter_args", nargs=argparse.REMAINDER,
                     help="passed on to jupyter lab (e.g. --ServerApp.log_level=INFO)")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from labkit.tools.doctor import lab_kernel_report, report

        print(report() if args.here else lab_kernel_report())
        return 0
    if args.command == "record":
        from labkit.tools.record import record

        return record(args.notebooks)
    if args.command == "lab":
        from labkit.tools.lab import run_lab

        run_lab(args.root, args.jupyter_args)  # until Ctrl-C
        return 0
    if args.command == "kernel":
        from .net.kernel import install

        print(f"installed the lab kernel in {install(args.prefix)}")
        return 0
    if args.command == "exercises":
        from labkit.tools.exercises import main as mark_exercises

        return mark_exercises(check_only=args.check)
    if args.command == "slide-layout":
        from labkit.tools.slide_layout import main as lay_out_slides

        return lay_out_slides(args.notebooks, check=args.check)
    if args.command == "slides":
        from labkit.tools.slides import build_decks

        not_notebooks = [p for p in args.notebooks if not p.endswith(".ipynb")]
        if not_notebooks:
            parser.error(f"slides: {not_notebooks[0]!r} is not a notebook (.ipynb); the "
                         "folder to write the decks to is --outdir DIR")
        missing = [p for p in args.notebooks if not Path(p).is_file()]
        if missing:
            parser.error(f"slides: no such notebook: {missing[0]}")
        for path in build_decks(args.outdir, [Path(p) for p in args.notebooks]):
            print(f"wrote {path}")
        return 0
    from labkit.tools.handout import write_handout

    for path in write_handout(args.outdir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
