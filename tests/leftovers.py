"""What a lab kernel may leave behind, found and waited for: its processes (the kernel and
the watcher that removes its private directory), that directory, its connection file."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterable
from pathlib import Path

from labkit.net.kernel_dir import PREFIX


def processes(*, uid: int | None = None, needle: str = "") -> dict[int, str]:
    """{pid: command line} of the processes (of ``uid``) whose command line has ``needle``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if uid is not None and entry.stat().st_uid != uid:
                continue
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:  # gone meanwhile
            continue
        if line and needle in line:
            found[int(entry.name)] = line
    return found


def of_kernel(connection_file: Path | str) -> dict[int, str]:
    """The kernel started with ``connection_file`` and its directory's watcher."""
    return processes(needle=f"-f {connection_file}")


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait (on pidfds: no polling) until every process in ``pids`` has ended, at most
    ``timeout`` seconds; returns those still running."""
    deadline = time.monotonic() + timeout
    left = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            remaining = max(0.0, deadline - time.monotonic())
            if not select.select([fd], [], [], remaining)[0]:
                left.append(pid)
        finally:
            os.close(fd)
    return left


def kernel_dirs(uid: int | None = None, root: str = "/tmp") -> list[Path]:
    """The lab kernels' private directories in ``root`` (of ``uid``)."""
    return [p for p in Path(root).glob(PREFIX + "*")
            if uid is None or p.lstat().st_uid == uid]
