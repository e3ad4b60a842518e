import subprocess
import sys

from labkit._doctor import fix_for, report


def test_report_names_mode_reason_fix_and_versions(monkeypatch):
    monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    text = report()
    assert text.splitlines()[0] == "capture mode : replay — LABKIT_CAPTURE=replay asks for recordings"
    for field in ("fix", "recordings", "python", "scapy", "jupyterlab", "namespaces", "tcpdump"):
        assert f"\n{field}" in text


def test_fix_without_privilege_is_setcap_on_the_real_interpreter(monkeypatch):
    monkeypatch.delenv("LABKIT_CAPTURE", raising=False)
    assert "sudo setcap cap_net_raw+eip /" in fix_for("replay")


def test_command_line():
    done = subprocess.run([sys.executable, "-m", "labkit", "doctor"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("capture mode : ")
    bad = subprocess.run([sys.executable, "-m", "labkit", "fix-everything"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
