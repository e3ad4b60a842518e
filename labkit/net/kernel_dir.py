"""The lab kernel's private directory (its ZMQ unix sockets): gone when its kernel is gone,
however the kernel ends.

    >>> directory, held = make()        # the kernel's manager: a new 0700 dir, held
    >>> watch(directory, connection)    # the kernel's launcher: remove both when unused

A process *holds* the directory with a shared ``flock(2)`` on it: the process that manages
the kernel (JupyterLab's server, nbclient ...), from the first launch to the final shutdown,
across restarts; and the kernel itself, from launch to exit. The system drops a process's
locks when it ends, however it ends (``kill -9`` too), so "nobody holds it" means "no kernel
and no manager will use it again" — whether the manager shut the kernel down, or the server
was stopped with SIGINT and its kernels followed it, or JupyterLab or the manager was killed.

- :func:`watch` starts a small detached process that waits for an exclusive lock (granted
  only when no holder is left), then removes the directory and the kernel's connection file.
- :func:`sweep` (run by :func:`make`) removes the user's directories that nobody holds, no
  kernel answers in and nothing changed for minutes: those of a watcher that was killed, of
  a manager killed before it launched the kernel, or of an older labkit (whose kernels
  hold nothing: the minutes spare one that is still starting).

Safe with many users on one machine: a process touches only directories its own user owns
(the others' are 0700 and out of reach anyway), names are random (``mkdtemp``), and the
lock, not a guess about process ids, decides that a directory is unused.

This module imports only the standard library: the launcher runs it before every kernel.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

PREFIX = "netlab-kernel-"
SWEEP_AFTER = 300  # seconds unchanged before an unheld, silent directory is swept


def hold(directory: Path) -> int:
    """Hold ``directory`` (a shared lock) for as long as the returned descriptor is open."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def make() -> tuple[Path, int]:
    """A new private (0700) directory for a kernel, and the descriptor that holds it."""
    sweep()
    while True:
        directory = Path(tempfile.mkdtemp(prefix=PREFIX))
        try:
            fd = hold(directory)
        except FileNotFoundError:  # another process of ours swept it before we held it
            continue
        if os.fstat(fd).st_nlink:  # ... or while we waited for its lock
            return directory, fd
        os.close(fd)


def release(directory: Path, fd: int) -> None:
    """The manager's final shutdown: remove ``directory`` and let go of it."""
    shutil.rmtree(directory, ignore_errors=True)
    os.close(fd)


def ours(directory: Path) -> bool:
    """Is ``directory`` a lab kernel's directory of this user (not a link)?"""
    try:
        info = directory.lstat()
    except OSError:
        return False
    return (directory.name.startswith(PREFIX) and directory.is_dir()
            and not directory.is_symlink() and info.st_uid == os.getuid())


def watch(directory: Path, connection_file: Path | None) -> None:
    """Start a process that removes ``directory`` and ``connection_file`` once nobody holds
    the directory. The caller (the kernel's launcher) holds it first, so the watcher waits
    at least for the kernel; it runs in a session of its own, where Jupyter's signals to the
    kernel's process group (interrupt, kill) do not reach it."""
    middle = os.fork()
    if middle:
        os.waitpid(middle, 0)  # exits at once: the watcher is no child of the kernel's
        return
    try:
        os.setsid()
        if os.fork() == 0:
            _wait_then_remove(directory, connection_file)
    finally:
        os._exit(0)


def _wait_then_remove(directory: Path, connection_file: Path | None) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):  # nobody's pipe held open (a test reading the kernel's output)
        os.dup2(null, std)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the inherited lock too: it is the kernel's
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    fcntl.flock(fd, fcntl.LOCK_EX)  # granted when the last holder is gone
    _remove(directory, fd)
    if connection_file is not None and _points_into(connection_file, directory):
        connection_file.unlink(missing_ok=True)


def _remove(directory: Path, fd: int) -> None:
    """Remove ``directory`` if it is still the one ``fd`` (locked) refers to."""
    try:
        same = os.path.samestat(os.fstat(fd), os.lstat(directory))
    except OSError:
        return
    if same:
        shutil.rmtree(directory, ignore_errors=True)


def _points_into(connection_file: Path, directory: Path) -> bool:
    """Does this connection file belong to a kernel of ``directory``?"""
    try:
        info = json.loads(connection_file.read_text())
    except (OSError, ValueError):
        return False
    return info.get("transport") == "ipc" and Path(str(info.get("ip"))).parent == directory


def sweep(root: Path | None = None) -> list[Path]:
    """Remove this user's kernel directories that nobody holds; returns those removed."""
    removed = []
    for directory in Path(root or tempfile.gettempdir()).glob(PREFIX + "*"):
        if not ours(directory) or time.time() - directory.lstat().st_mtime < SWEEP_AFTER:
            continue
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while anyone holds it
            if not _answers(directory):
                _remove(directory, fd)
                removed.append(directory)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
    return removed


def _answers(directory: Path) -> bool:
    """Does a kernel listen on one of the sockets in ``directory``? (One started by a labkit
    that did not hold its directory yet.)"""
    for path in directory.glob("kernel-*"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
                return True
            except OSError:
                continue
    return False
