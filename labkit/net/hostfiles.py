"""A lab host's own /etc: its resolv.conf, hosts, nsswitch.conf and gai.conf.

    >>> net.set_resolver("client", "10.0.1.3")      # the client's resolver
    >>> with net.on("client"):
    ...     socket.getaddrinfo("www.netlab.test", 80)   # asks 10.0.1.3, as any program there would

``getaddrinfo()`` (glibc's stub resolver) reads ``/etc/resolv.conf`` (which servers to ask),
``/etc/hosts``, ``/etc/nsswitch.conf`` (where to look: files, then DNS) and
``/etc/gai.conf`` (how to order the addresses it found); a network namespace changes none
of them. So, as ``ip netns exec`` does, a host gets a *mount* namespace in which files of
its own are bind-mounted over those four, and a thread that enters the host
(``LabNetwork.on``) enters it too, and leaves it after. Threads share one filesystem
context (root and working directory), and a thread that shares it may not change mount
namespace: so before each change the thread takes a context of its own
(``unshare(CLONE_FS)``; threads it started meanwhile keep the one they share, and stay
on the host, as they stay in its network), and it keeps its working directory, which a
change of mount namespace would reset to ``/``. glibc checks each file's identity and
time before it uses it, so one process looks names up as different hosts in different
threads. A program run on the host
(``net.run("client", "getent ahosts www.netlab.test")``) sees the same files.

Leaving a mount namespace needs one the lab's user namespace owns to go back to: the
lab kernel makes one as it starts (labkit.net.namespace).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["HostFiles", "inside_mounts"]

CLONE_FS, CLONE_NEWNS = 0x00000200, 0x00020000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
FILES = ("resolv.conf", "hosts", "nsswitch.conf", "gai.conf")
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _enter(namespace_fd: int, where: str) -> None:
    """Move this thread into a mount namespace, keeping its working directory."""
    # setns(CLONE_NEWNS) refuses a thread that shares its root and working directory with
    # other threads (EINVAL): take a copy of its own first (nothing to copy if it has one)
    _check(_libc.unshare(CLONE_FS), "unshare(CLONE_FS)")
    _check(_libc.setns(namespace_fd, CLONE_NEWNS), f"setns({where})")
    with contextlib.suppress(OSError):  # the same directory there (it has the same files)
        os.chdir(_thread.cwd)


_thread = threading.local()  # .cwd: where this thread works, kept across mount namespaces


@contextlib.contextmanager
def inside_mounts(namespace_fd: int) -> Iterator[None]:
    """This thread in the mount namespace ``namespace_fd`` for the block, then back."""
    home = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    before = getattr(_thread, "cwd", None)
    _thread.cwd = os.getcwd()
    try:
        _enter(namespace_fd, "the host's mount namespace")
        try:
            yield
        finally:
            _enter(home, "back to the kernel's mounts")
    finally:
        _thread.cwd = before
        os.close(home)


def _host_files(nameservers: list[str], options: str, host: str, addresses: list[str]) -> dict:
    """The text of a host's four files."""
    resolv = "".join(f"nameserver {server}\n" for server in nameservers)
    if options:
        resolv += f"options {options}\n"
    hosts = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
             + "".join(f"{address}\t{host}\n" for address in addresses))
    try:
        machine = Path("/etc/nsswitch.conf").read_text()
    except OSError:
        machine = ""
    # the machine's, but names from /etc/hosts then DNS only (no mDNS, no systemd-resolved)
    nsswitch = re.sub(r"(?m)^hosts:.*$", "", machine).strip() + "\nhosts:          files dns\n"
    gai = ("# This host's /etc/gai.conf: empty, so getaddrinfo() orders addresses by\n"
           "# glibc's built-in table (RFC 6724's). A line such as\n"
           "# `precedence ::ffff:0:0/96 100` changes it.\n")
    return {"resolv.conf": resolv, "hosts": hosts, "nsswitch.conf": nsswitch, "gai.conf": gai}


class HostFiles:
    """The /etc files of a network's hosts, each host's in a mount namespace of its own."""

    def __init__(self):
        self.namespaces: dict[str, int] = {}   # host -> its mount namespace (an fd)
        self._directory: Path | None = None

    def configure(self, host: str, nameservers: list[str], options: str,
                  addresses: list[str]) -> None:
        """Write ``host``'s files (a first call makes its mount namespace)."""
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="labkit-etc-"))
        folder = self._directory / host
        folder.mkdir(exist_ok=True)
        for name, text in _host_files(nameservers, options, host, addresses).items():
            # written in place: a namespace already made keeps seeing the same file (inode)
            (folder / name).write_text(text)
        if host not in self.namespaces:
            self.namespaces[host] = self._make(folder)

    def _make(self, folder: Path) -> int:
        """A mount namespace with ``folder``'s files over /etc's (made by a thread of its
        own, which ends: the namespace lives on in the fd it returns)."""
        made: list = []

        def make() -> None:
            try:
                _check(_libc.unshare(CLONE_FS), "unshare(CLONE_FS)")
                home = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
                    # nothing we mount here may reach the kernel's mounts (or the machine's)
                    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None),
                           "mount --make-rprivate /")
                    for name in FILES:
                        target = Path("/etc") / name
                        if target.exists():  # (a bind mount needs a file to cover)
                            _check(_libc.mount(str(folder / name).encode(),
                                               str(target).encode(), None, MS_BIND, None),
                                   f"mount --bind over {target}")
                    made.append(os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC))
                    _check(_libc.setns(home, CLONE_NEWNS), "setns(back)")
                finally:
                    os.close(home)
            except OSError as exc:
                made.append(exc)

        thread = threading.Thread(target=make, name="labkit host files")
        thread.start()
        thread.join()
        if isinstance(made[-1], OSError):
            for fd in made[:-1]:
                os.close(fd)
            raise RuntimeError(
                f"a lab host could not have /etc files of its own ({made[-1]}): this needs "
                "the lab kernel ('Python 3 (netlab)') started by this labkit, which gives it "
                "a mount namespace of its own; restart the kernel") from made[-1]
        return made[0]

    def close(self) -> None:
        for fd in self.namespaces.values():
            os.close(fd)
        self.namespaces.clear()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
