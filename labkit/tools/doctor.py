"""``python -m labkit doctor``: which capture mode applies, why, and how to change it.

    $ python -m labkit doctor
    capture mode : live — this Python may open raw sockets (CAP_NET_RAW)
    network      : private — this kernel has its own network namespace (the lab kernel)
    ...
    checked in   : the lab kernel 'Python 3 (netlab)', started as a notebook starts it (...)

In a terminal it reports on the lab kernel, what the notebooks will get (:func:`lab_kernel_report`:
the kernelspec's own launcher, so its own namespace); in a notebook, ``labkit.doctor()``
reports on the kernel it runs in (:func:`report`), and so does ``python -m labkit doctor --here``.

The usual way to live capture is the lab kernel, ``Python 3 (netlab)``: every notebook
kernel gets its own user + network namespace (see :mod:`labkit.net`). Where a machine
refuses namespaces, :func:`diagnose` names the reason and the exact fix.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from labkit.capture.capture import DATA_DIR, capture_mode
from labkit.net.namespace import ENV

SEES_IN_REPLAY = ("the student sees recordings (▶ replay) in the packet views; servers, "
                  "sockets and exercises still run live")
SYSCTL = Path("/proc/sys")


@dataclass(frozen=True)
class Diagnosis:
    case: str   # what refuses namespaces
    fix: str    # the exact change that allows them


def _sysctl(name: str, root: Path = SYSCTL) -> str | None:
    try:
        return (root / name.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def _in_container() -> bool:
    return (Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()
            or "container" in os.environ)


def diagnose(refusal: str, *, sysctl_root: Path = SYSCTL, container: bool | None = None
             ) -> Diagnosis:
    """Why ``unshare(CLONE_NEWUSER | CLONE_NEWNET)`` failed, from its ``refusal`` text
    ('host: EPERM: ...') and the machine's settings, and what fixes it."""
    container = _in_container() if container is None else container
    if refusal.startswith("host: TCP:"):
        return Diagnosis("this kernel was started without the netlab provisioner (VS Code, "
                         "for one, launches kernels itself, over TCP)",
                         "open the notebooks in JupyterLab (`make lab`), or point VS Code at "
                         "that Jupyter server (Select Kernel › Existing Jupyter Server)")
    if _sysctl("user.max_user_namespaces", sysctl_root) == "0":
        return Diagnosis("user namespaces are switched off (user.max_user_namespaces = 0)",
                         "sudo sysctl -w user.max_user_namespaces=15000 (and the same line "
                         "in /etc/sysctl.d/99-netlab.conf to keep it)")
    if _sysctl("kernel.apparmor_restrict_unprivileged_userns", sysctl_root) == "1":
        return Diagnosis(
            "AppArmor restricts unprivileged user namespaces (Ubuntu 23.10 and later)",
            "allow them for the lab's Python only, with an AppArmor profile (README, "
            "'Namespaces refused'), or for the whole machine: "
            "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
    if _sysctl("kernel.unprivileged_userns_clone", sysctl_root) == "0":
        return Diagnosis("unprivileged user namespaces are switched off "
                         "(kernel.unprivileged_userns_clone = 0)",
                         "sudo sysctl -w kernel.unprivileged_userns_clone=1")
    if "ENOSPC" in refusal:
        return Diagnosis("this user has made as many user namespaces as allowed",
                         "stop unused lab kernels, or raise user.max_user_namespaces")
    if container:
        return Diagnosis(
            "the container's seccomp profile (or missing capabilities) blocks unshare()",
            "start the container with --security-opt seccomp=unconfined (Docker/Podman), "
            "or securityContext.seccompProfile.type: Unconfined (Kubernetes), or a seccomp "
            "profile that allows unshare and clone with CLONE_NEWUSER")
    return Diagnosis(f"the kernel refused a user + network namespace ({refusal})",
                     "ask the machine's administrator to allow unprivileged user namespaces")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def namespace_probe() -> str:
    """LABKIT_NETWORK as a lab kernel started now would see it: 'private' or 'host: ...'."""
    code = f"import os; print(os.environ[{ENV!r}])"
    try:
        done = subprocess.run([sys.executable, "-m", "labkit.net.namespace", "--",
                               sys.executable, "-c", code],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"host: error: {exc}"
    return done.stdout.strip() or f"host: error: {done.stderr.strip()[-200:]}"


def network_lines() -> list[str]:
    """The 'network' part of the report: where this kernel runs, and what to do about it."""
    here = os.environ.get(ENV)
    if here == "private":
        return ["network      : private — this kernel has its own network namespace "
                "(the lab kernel): live capture, any port, nobody else's packets"]
    refusal = here or namespace_probe()
    if refusal == "private":
        return ["network      : host — this is not the lab kernel, but this machine allows it",
                "               choose the kernel 'Python 3 (netlab)' (Kernel › Change Kernel)"]
    found = diagnose(refusal)
    where = "this kernel runs" if here else "a lab kernel would run"
    return [f"network      : host — {where} on the machine's network: {found.case}",
            f"namespaces   : fix: {found.fix}",
            f"               until then {SEES_IN_REPLAY}"]


def lab_hosts_line() -> str:
    """Can notebook 09 make its lab hosts here?  They need the lab kernel's own network
    and iproute2's ``ip``."""
    ip = shutil.which("ip", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if ip is None:
        return "no — notebook 09 needs iproute2's `ip` (apt-get install iproute2)"
    if os.environ.get(ENV) != "private":
        return "only in the lab kernel 'Python 3 (netlab)' (notebook 09 makes them there)"
    return f"yes — notebook 09 can make them in this kernel's network ({ip})"


def firewall_line() -> str:
    """Can lab hosts be given NAT and firewall rules (notebook 10)?  They need ``nft``."""
    nft = shutil.which("nft", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if nft is None:
        return ("not found — notebook 10's NAT and firewall rules need nftables' `nft` "
                "(apt-get install nftables)")
    return f"{nft} (notebook 10's NAT and firewall rules on lab hosts)"


def fix_for(mode: str) -> str:
    if mode == "replay" and os.environ.get("LABKIT_CAPTURE", "").lower() == "replay":
        return "unset LABKIT_CAPTURE to capture live where this kernel is allowed to"
    if mode == "replay":
        return ("use the lab kernel 'Python 3 (netlab)' where namespaces are allowed (see "
                "'network'); last resort: README, 'setcap, a last resort'")
    return "nothing to do: captures show the packets of this very run"


def lab_kernel_report() -> str:
    """:func:`report` as the lab kernel sees it: run by the installed kernelspec's launcher
    (its interpreter, in a namespace of its own), as when a notebook starts the kernel."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    from labkit.net.kernel import DISPLAY_NAME, KERNEL_NAME

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        split = spec.argv.index("--")
    except (NoSuchKernel, ValueError):
        return (f"{report()}\nchecked in   : this Python only: the lab kernel {DISPLAY_NAME!r} is "
                "not installed here (make, or python -m labkit kernel install)")
    launcher, python = spec.argv[:split + 1], spec.argv[split + 1]
    try:
        done = subprocess.run([*launcher, python, "-m", "labkit", "doctor", "--here"],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        done = subprocess.CompletedProcess([], 1, "", str(exc))
    if done.returncode != 0:
        return (f"{report()}\nchecked in   : this Python only: the lab kernel {DISPLAY_NAME!r} "
                f"({spec.resource_dir}) failed to start: {done.stderr.strip()[-300:]}")
    return (f"{done.stdout.rstrip()}\nchecked in   : the lab kernel {DISPLAY_NAME!r}, started as "
            f"a notebook starts it ({spec.resource_dir})")


def report() -> str:
    mode, reason = capture_mode()
    recordings = sorted(DATA_DIR.glob("*.pcapng")) if DATA_DIR.is_dir() else []
    lines = [
        f"capture mode : {mode} — {reason}",
        f"fix          : {fix_for(mode)}",
        *network_lines(),
        f"recordings   : {len(recordings)} in {DATA_DIR} (replay mode shows these)",
        f"python       : {platform.python_version()} ({os.path.realpath(sys.executable)})",
        f"scapy        : {_version('scapy')}",
        f"jupyterlab   : {_version('jupyterlab')}",
        f"matplotlib   : {_version('matplotlib')}",
        f"tcpdump      : {shutil.which('tcpdump') or 'not found (apt-get install tcpdump)'}",
        f"tshark       : {shutil.which('tshark') or 'not found (apt-get install tshark)'}",
        f"lab hosts    : {lab_hosts_line()}",
        f"nft          : {firewall_line()}",
    ]
    return "\n".join(lines)
