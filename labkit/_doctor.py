"""``python -m labkit doctor``: which capture mode applies, why, and how to change it.

    $ python -m labkit doctor
    capture mode : live — this Python may open raw sockets (CAP_NET_RAW)
    ...
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

from ._capture import DATA_DIR, capture_mode


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _namespaces() -> str:
    """Can this user make a private network namespace (where raw capture is allowed)?"""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "unknown (no `unshare` command)"
    try:
        done = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no ({exc})"
    if done.returncode == 0:
        return "yes (user + network namespaces: `unshare -rn`)"
    return f"no ({done.stderr.decode(errors='replace').strip() or 'unshare failed'})"


def fix_for(mode: str) -> str:
    python = os.path.realpath(sys.executable)
    if mode == "replay" and os.environ.get("LABKIT_CAPTURE", "").lower() == "replay":
        return "unset LABKIT_CAPTURE to capture live where this Python is allowed to"
    if mode == "replay":
        return (f"let this interpreter capture without running Jupyter as root:\n"
                f"    sudo setcap cap_net_raw+eip {python}\n"
                "  then restart the notebook kernel (`make lab` again)")
    return "nothing to do: captures show the packets of this very run"


def report() -> str:
    mode, reason = capture_mode()
    recordings = sorted(DATA_DIR.glob("*.pcapng")) if DATA_DIR.is_dir() else []
    lines = [
        f"capture mode : {mode} — {reason}",
        f"fix          : {fix_for(mode)}",
        f"recordings   : {len(recordings)} in {DATA_DIR} (replay mode shows these)",
        f"python       : {platform.python_version()} ({os.path.realpath(sys.executable)})",
        f"scapy        : {_version('scapy')}",
        f"jupyterlab   : {_version('jupyterlab')}",
        f"matplotlib   : {_version('matplotlib')}",
        f"namespaces   : {_namespaces()}",
        f"tcpdump      : {shutil.which('tcpdump') or 'not found (apt-get install tcpdump)'}",
        f"tshark       : {shutil.which('tshark') or 'not found (apt-get install tshark)'}",
    ]
    return "\n".join(lines)
