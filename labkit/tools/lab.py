"""``python -m labkit lab [DIR]``: JupyterLab on DIR, announced by one line, the URL to open.

    $ python -m labkit lab notebooks
    open: http://127.0.0.1:8888/lab?token=3f9c...   (Ctrl-C stops JupyterLab)

JupyterLab's own start-up prints some thirty log lines with the URL buried among them. Here
the token is ours (from :mod:`secrets`), Jupyter logs only warnings and errors, and the URL
is printed once the server listens: JupyterLab runs in this process, in the foreground, and
the line comes from a callback its event loop runs right after the one that binds the port.
One Ctrl-C stops it (``answer_yes``: no "Shut down? (y/[n])" prompt), and nothing is logged
that a student should learn to ignore.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import sys
from pathlib import Path

PREFERRED_PORT = 8888


def free_port(preferred: int = PREFERRED_PORT) -> int:
    """``preferred`` if nothing listens on it on 127.0.0.1, else a port the system picks."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port on 127.0.0.1")  # bind(port 0) failing: loopback is down


# Jupyter's settings for the lab; `python -m labkit lab DIR --ServerApp.log_level=INFO`
# replaces one (traitlets refuses a setting given twice).
SETTINGS = {
    "ServerApp.ip": "127.0.0.1",
    "ServerApp.open_browser": "False",
    "ServerApp.port_retries": "0",      # the port we print, or a clear error
    "ServerApp.log_level": "WARN",      # warnings and errors only, from the server
    "LabApp.log_level": "WARN",         # and from JupyterLab
    "ServerApp.answer_yes": "True",     # one Ctrl-C stops it
    # jupyter_server asks for a websocket ping timeout 3x its ping interval, which tornado
    # refuses with a warning at the first kernel connection and caps at the interval: ask
    # for the cap itself (30000, jupyter_server's interval)
    "ServerApp.tornado_settings": "ws_ping_timeout=30000",
}


class _NotTrustedFilter(logging.Filter):
    """Drops "Notebook X is not trusted": the lessons are, and the student can do nothing
    about it (trust is per user; JupyterLab shows their outputs all the same)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).endswith("is not trusted")


def lab_arguments(root: Path, port: int, extra: list[str]) -> list[str]:
    """``jupyter lab``'s arguments to serve ``root`` on 127.0.0.1:``port``."""
    if not root.is_dir():
        raise ValueError(f"no folder {str(root)!r} to open JupyterLab on: give the notebooks' "
                         "folder (e.g. notebooks, or handout after `make handout`)")
    settings = {**SETTINGS, "ServerApp.port": str(port), "ServerApp.root_dir": str(root)}
    overridden = {arg[2:].split("=")[0] for arg in extra if arg.startswith("--")}
    arguments = [f"--{name}={value}" for name, value in settings.items()
                 if name not in overridden]
    if os.geteuid() == 0:
        arguments.append("--allow-root")
    return arguments + extra


def run_lab(root: str | Path, extra: list[str] | None = None) -> None:
    """Serve JupyterLab until Ctrl-C; print the URL to open once it listens."""
    from jupyterlab.labapp import LabApp

    port = free_port()
    token = secrets.token_hex(24)
    arguments = lab_arguments(Path(root), port, list(extra or []))
    server = LabApp.initialize_server(argv=[*arguments, f"--IdentityProvider.token={token}"])
    url = f"http://127.0.0.1:{port}/lab?token={token}"
    # initialize_server queued the port's binding on the loop; this runs after it
    server.io_loop.add_callback(
        lambda: print(f"open: {url}   (Ctrl-C stops JupyterLab)", flush=True))
    server.log.addFilter(_NotTrustedFilter())
    # Ctrl-C (or SIGTERM) stops the server and shuts its kernels down. jupyter_server does
    # that only with a terminal on stdin; without one (an IDE's run button, a script) it
    # would raise KeyboardInterrupt and leave its kernels to notice they are orphans.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: server.stop(from_signal=True))
    server.start()  # until then
    # Exit now: the worker threads that served files (anyio's, not daemons) outlive the
    # stopped loop, and the interpreter would wait for them forever.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
