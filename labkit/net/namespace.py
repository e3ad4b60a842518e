"""Run a command in a private network namespace of its own, without root.

    $ python -m labkit.net.namespace -- python -m ipykernel_launcher -f kernel.json

A new *user* namespace makes this process root over a new *network* namespace, which
has nothing in it but its own loopback: there ``CAP_NET_RAW`` is allowed (live capture),
any port may be bound (80, 443 ...), and no other process on the machine — another
student's kernel included — sees its traffic. Files it writes still belong to the user.

Where the machine refuses namespaces (AppArmor on Ubuntu 24.04, a container's seccomp
profile, ``user.max_user_namespaces=0``) the command still runs, on the host network,
and ``LABKIT_NETWORK`` tells labkit (and ``python -m labkit doctor``) why::

    LABKIT_NETWORK=private                           the lab's own network
    LABKIT_NETWORK=host: <errno name>: <message>     namespaces were refused

This module imports only the standard library (and :mod:`labkit.net.kernel_dir`, which does
too): it runs before every kernel starts. Before it starts a lab kernel it has the kernel
hold its private directory, and starts the watcher that removes it once the kernel is gone.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import socket
import struct
import sys
from pathlib import Path

from labkit.net import kernel_dir

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
ENV = "LABKIT_NETWORK"


def enter_private_network() -> None:
    """Move this process into a new user + network namespace with loopback up.

    Raises OSError (with the kernel's errno) when the machine refuses.
    """
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    try:
        # Map our own user to root inside, as `unshare --map-root-user` does. setgroups
        # must be denied before an unprivileged process may write its gid_map.
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
        Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
        _bring_up("lo")
    except OSError as exc:  # inside already: there is no host network to fall back to
        raise SystemExit(f"labkit: the private network namespace could not be set up "
                         f"({exc}); run `python -m labkit doctor` and report it") from exc
    # A mount namespace of our own too, the same files as before: a lab host may then have
    # /etc files of its own (its resolv.conf, as `ip netns exec` gives one), entered and
    # left by a thread (a mount namespace can only be left for one our user namespace
    # owns). Without it everything else still works.
    libc.unshare(CLONE_NEWNS)


def _bring_up(interface: str) -> None:
    """``ip link set <interface> up``, with an ioctl (no iproute2 needed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", interface.encode(), 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", interface.encode(),
                                                    flags | IFF_UP))


def textbook_port(port: int) -> int:
    """``port`` inside the lab's own network, where any port is free to take; else 0.

    Outside it (the host network) ports below 1024 need root and others may be taken by
    another program, so a lab server there takes any free port instead.

        >>> HTTPServer(port=textbook_port(80))    # http://127.0.0.1/ in the lab kernel
    """
    return port if os.environ.get(ENV) == "private" else 0


def refusal(exc: OSError) -> str:
    """The value of LABKIT_NETWORK after ``exc``: 'host: EPERM: Operation not permitted'."""
    name = errno.errorcode.get(exc.errno or 0, "error")
    return f"host: {name}: {exc.strerror or exc}"


NOT_PROVISIONED = ("host: TCP: this kernel was started without the netlab provisioner "
                   "(its client connects over TCP, which cannot reach into a namespace)")


def _connection(args: list[str]) -> tuple[Path, dict] | None:
    """The kernel's ``-f`` connection file and what it says, if the command names one."""
    if "-f" not in args[:-1]:
        return None
    path = Path(args[args.index("-f") + 1])
    try:
        return path, json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tcp_kernel(info: dict) -> bool:
    """Does this kernel's connection file ask for TCP?

    The lab kernel's provisioner always chooses ``ipc``. A client that launches the
    kernelspec's argv itself (VS Code does) writes ``tcp``, and would never reach a kernel
    inside a namespace: that kernel must stay on the host network.
    """
    return info.get("transport", "tcp") == "tcp"


def _hold_private_directory(path: Path, info: dict) -> None:
    """The kernel holds its private directory (the provisioner's, for its ipc sockets) until
    it exits, and a watcher removes it, with the connection file, once nobody holds it."""
    directory = Path(str(info.get("ip"))).parent
    if info.get("transport") != "ipc" or not kernel_dir.ours(directory):
        return
    fd = kernel_dir.hold(directory)
    os.set_inheritable(fd, True)  # kept across exec: the kernel's to hold until it exits
    kernel_dir.watch(directory, path.absolute())


def rerun_in_private_network() -> None:
    """Unless this process already runs in a private network (``LABKIT_NETWORK=private``),
    run this same command again in one, and exit with its status.  For scripts that
    need one, e.g. benchmarks of lab hosts:

        >>> rerun_in_private_network()   # the first thing a script does
    """
    if os.environ.get(ENV) == "private":
        return
    import subprocess

    done = subprocess.run([sys.executable, "-m", "labkit.net.namespace", "--",
                           sys.executable, *sys.argv], check=False)
    raise SystemExit(done.returncode)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        raise SystemExit("usage: python -m labkit.net.namespace -- COMMAND [ARG ...]")
    connection = _connection(args)
    if connection is not None:
        _hold_private_directory(*connection)
    if connection is not None and _tcp_kernel(connection[1]):
        os.environ[ENV] = NOT_PROVISIONED
    else:
        try:
            enter_private_network()
            os.environ[ENV] = "private"
        except OSError as exc:  # refused: run on the host network, and say why
            os.environ[ENV] = refusal(exc)
    os.execvp(args[0], args)  # same PID: Jupyter's interrupt and shutdown signals reach it


if __name__ == "__main__":
    main()
