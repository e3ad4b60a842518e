"""Errors CPython can only print, caught for the server thread that caused them.

When a TLS client sends a server name (SNI) that is not ASCII, or a context's
``sni_callback`` raises, CPython cannot raise into the handshake: it calls
``sys.unraisablehook``, whose default prints ``Exception ignored in: ...`` to stderr -
into whatever notebook cell happens to run.  :func:`caught` collects them instead,
for the thread inside the block only; every other thread's go to the hook as before.

    >>> with caught() as problems:
    ...     tls.do_handshake()            # fails: SSLError CALLBACK_FAILED
    >>> problems                          # [(UnicodeDecodeError(...), b'\\xc3\\xa9.test')]
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["caught"]

_here = threading.local()   # .problems: the list of the block this thread is in


def _hook(args: Any) -> None:
    problems = getattr(_here, "problems", None)
    if problems is None:
        _previous(args)  # not a thread of ours: printed (or handled) as before
    else:
        problems.append((args.exc_value, args.object))


_previous = sys.unraisablehook


@contextmanager
def caught() -> Iterator[list[tuple[BaseException | None, object]]]:
    """Collect ``(exception, object)`` of what this thread reports as unraisable meanwhile."""
    global _previous
    if sys.unraisablehook is not _hook:  # installed on first use, and again if replaced
        _previous, sys.unraisablehook = sys.unraisablehook, _hook
    problems: list[tuple[BaseException | None, object]] = []
    _here.problems = problems
    try:
        yield problems
    finally:
        _here.problems = None
