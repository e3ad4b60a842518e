import subprocess
import sys

import pytest

from labkit.__main__ import main
from labkit.tools.doctor import fix_for, network_lines, report


def test_report_names_mode_reason_fix_and_versions(monkeypatch):
    monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    text = report()
    first = text.splitlines()[0]
    assert first == "capture mode : replay — LABKIT_CAPTURE=replay asks for recordings"
    for field in ("fix", "network", "recordings", "python", "scapy", "jupyterlab", "tcpdump"):
        assert f"\n{field}" in text


def test_fix_without_privilege_is_the_lab_kernel_and_setcap_only_a_last_resort(monkeypatch):
    monkeypatch.delenv("LABKIT_CAPTURE", raising=False)
    fix = fix_for("replay")
    assert "Python 3 (netlab)" in fix and "last resort" in fix and "sudo setcap" not in fix


def test_network_line_in_the_lab_kernel_and_outside_it(monkeypatch):
    monkeypatch.setenv("LABKIT_NETWORK", "private")
    assert network_lines()[0].startswith("network      : private — this kernel has its own")
    monkeypatch.delenv("LABKIT_NETWORK")
    # not the lab kernel (pytest itself): this machine allows namespaces, so say which kernel
    assert network_lines() == [
        "network      : host — this is not the lab kernel, but this machine allows it",
        "               choose the kernel 'Python 3 (netlab)' (Kernel › Change Kernel)"]


def test_command_line(capsys):
    # in-process: the same main() that `python -m labkit` runs, without a second Scapy import
    assert main(["doctor", "--here"]) == 0
    assert capsys.readouterr().out.startswith("capture mode : ")
    # one real `python -m labkit`: its exit code and message for a command it does not know
    bad = subprocess.run([sys.executable, "-m", "labkit", "fix-everything"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_the_doctor_says_whether_notebook_09_can_make_its_lab_hosts(monkeypatch):
    from labkit.tools import doctor

    monkeypatch.setenv("LABKIT_NETWORK", "private")
    assert doctor.lab_hosts_line().startswith("yes")
    monkeypatch.setenv("LABKIT_NETWORK", "host: EPERM: refused")
    assert "only in the lab kernel" in doctor.lab_hosts_line()
    monkeypatch.setattr(doctor.shutil, "which", lambda *args, **kwargs: None)
    assert "apt-get install iproute2" in doctor.lab_hosts_line()
    assert "lab hosts    : no" in doctor.report()


def test_the_doctor_says_whether_lab_hosts_can_have_firewall_rules(monkeypatch):
    from labkit.tools import doctor

    monkeypatch.setattr(doctor.shutil, "which", lambda *args, **kwargs: "/usr/sbin/nft")
    assert doctor.firewall_line().startswith("/usr/sbin/nft")
    monkeypatch.setattr(doctor.shutil, "which", lambda *args, **kwargs: None)
    assert "apt-get install nftables" in doctor.firewall_line()
    assert "nft          : not found" in doctor.report()


def test_in_a_terminal_the_doctor_reports_what_the_notebooks_get(monkeypatch, capsys):
    """`make lab` runs it in a terminal, where pytest runs too: no raw sockets, no namespace
    of its own. It reports on the lab kernel all the same, started as a notebook starts it."""
    from labkit.tools.doctor import namespace_probe

    if namespace_probe() != "private":
        pytest.skip("this machine refuses the lab kernel its namespace")
    monkeypatch.delenv("LABKIT_CAPTURE", raising=False)   # as a student's terminal has it
    monkeypatch.delenv("LABKIT_NETWORK", raising=False)
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "capture mode : live — this Python may open raw sockets (CAP_NET_RAW)"
    assert lines[2].startswith("network      : private — this kernel has its own network")
    assert lines[-1].startswith("checked in   : the lab kernel 'Python 3 (netlab)', started "
                                "as a notebook starts it (")


def test_without_the_lab_kernel_the_doctor_says_so(monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    from labkit.tools.doctor import lab_kernel_report

    def no_such_kernel(self, name):
        raise NoSuchKernel(name)

    monkeypatch.setattr(KernelSpecManager, "get_kernel_spec", no_such_kernel)
    last = lab_kernel_report().splitlines()[-1]
    assert last == ("checked in   : this Python only: the lab kernel 'Python 3 (netlab)' is not "
                    "installed here (make, or python -m labkit kernel install)")
