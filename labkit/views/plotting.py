"""The one place that picks matplotlib's backend; every labkit figure imports ``plt`` here.

    >>> from labkit.views.plotting import plt
    >>> fig, ax = plt.subplots()

Outside Jupyter (tests, ``python -m labkit record``) there is no display: Agg draws
to memory.  In a notebook the inline (or widget) backend is already chosen: keep it.
"""

from __future__ import annotations

import matplotlib

if not matplotlib.get_backend().lower().startswith(("module://", "nbagg", "ipympl", "widget")):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # only after the backend is chosen

__all__ = ["plt"]
