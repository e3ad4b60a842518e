"""labkit.net.namespace and the doctor's reading of it: private network or a named refusal."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from labkit.tools.doctor import diagnose

SHOW_NETWORK = "import os; print(os.environ['LABKIT_NETWORK'])"


def in_lab_namespace(*command, prefix=(), env=None, user=None):
    argv = [*prefix, sys.executable, "-m", "labkit.net.namespace", "--", *command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, user=user,
                          env=env or os.environ)


def test_private_network_has_loopback_raw_sockets_and_low_ports():
    code = textwrap.dedent("""
        import os, socket
        print(os.environ['LABKIT_NETWORK'])
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()      # CAP_NET_RAW inside
        with socket.create_server(('127.0.0.1', 80)) as s:            # a textbook port
            with socket.create_connection(s.getsockname()) as c:
                print('port 80 answers on', c.getpeername()[0])
        print(sorted(name for _, name in socket.if_nameindex()))
    """)
    done = in_lab_namespace(sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["private", "port 80 answers on 127.0.0.1", "['lo']"]


def test_two_lab_namespaces_never_see_each_others_traffic():
    """Same port in both; a sniffer in one sees only its own namespace's packets."""
    code = textwrap.dedent("""
        import socket, sys
        from scapy.all import UDP, Ether
        sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
        sniffer.bind(('lo', 0))
        sniffer.settimeout(10)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \\
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.bind(('127.0.0.1', 5000))
            for message in [sys.argv[1]] * 20 + ['END']:
                tx.sendto(message.encode(), ('127.0.0.1', 5000))
                rx.recv(100)
        seen = set()
        while 'END' not in seen:               # END was sent last: everything before it is in
            frame = Ether(sniffer.recv(65535))
            if UDP in frame and frame[UDP].dport == 5000:
                seen.add(bytes(frame[UDP].payload).decode())
        print(sorted(seen - {'END'}))
    """)
    procs = [subprocess.Popen([sys.executable, "-m", "labkit.net.namespace", "--",
                               sys.executable, "-c", code, name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("alice", "bob")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert [out.split("\n")[-2] for out, _ in outs] == ["['alice']", "['bob']"]


def test_refused_namespaces_fall_back_to_the_host_network_and_say_why():
    """user.max_user_namespaces = 0, set inside a throwaway user namespace."""
    script = (f"echo 0 > /proc/sys/user/max_user_namespaces && {sys.executable} -m "
              f"labkit.net.namespace -- {sys.executable} -c \"{SHOW_NETWORK}\"")
    done = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "host: ENOSPC: No space left on device"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the seccomp filter is x86-64 BPF")
def test_a_seccomp_filter_that_blocks_unshare_is_named_with_its_fix():
    """What a container's default seccomp profile does, made with prctl()."""
    block_unshare = textwrap.dedent("""
        import ctypes, os, struct, sys
        NR_UNSHARE, EPERM = 272, 1
        ld, jeq, ret = 0x20, 0x15, 0x06
        prog = [(ld, 0, 0, 0), (jeq, 0, 1, NR_UNSHARE), (ret, 0, 0, 0x00050000 | EPERM),
                (ret, 0, 0, 0x7fff0000)]
        filters = b"".join(struct.pack("HBBI", *f) for f in prog)
        buf = ctypes.create_string_buffer(filters)
        fprog = struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(buf))
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.prctl(38, 1, 0, 0, 0) == 0                       # no new privileges
        assert libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) == 0  # seccomp filter
        os.execv(sys.executable, sys.argv[1:])
    """)
    report = "from labkit.tools.doctor import network_lines; print('\\n'.join(network_lines()))"
    env = {**os.environ, "container": "docker"}
    env.pop("LABKIT_NETWORK", None)
    done = in_lab_namespace(sys.executable, "-c", report,
                            prefix=(sys.executable, "-c", block_unshare),
                            env=env)
    assert done.returncode == 0, done.stderr
    assert "network      : host — this kernel runs on the machine's network" in done.stdout
    assert "seccomp" in done.stdout and "--security-opt seccomp=unconfined" in done.stdout
    assert "replay" in done.stdout


@pytest.mark.parametrize("settings, refusal, case, fix", [
    ({"user/max_user_namespaces": "0"}, "host: ENOSPC: No space left on device",
     "max_user_namespaces = 0", "sysctl -w user.max_user_namespaces=15000"),
    ({"kernel/apparmor_restrict_unprivileged_userns": "1"}, "host: EPERM: Operation not permitted",
     "AppArmor", "kernel.apparmor_restrict_unprivileged_userns=0"),
    ({"kernel/unprivileged_userns_clone": "0"}, "host: EPERM: Operation not permitted",
     "unprivileged_userns_clone = 0", "kernel.unprivileged_userns_clone=1"),
    ({}, "host: ENOSPC: No space left on device", "as many user namespaces", "stop unused"),
    ({}, "host: EPERM: Operation not permitted", "refused", "administrator"),
])
def test_each_refusal_is_named_with_its_fix(tmp_path, settings, refusal, case, fix):
    for name, value in settings.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(value + "\n")
    found = diagnose(refusal, sysctl_root=tmp_path, container=False)
    assert case in found.case and fix in found.fix


def test_without_a_command_it_says_how_to_use_it():
    done = subprocess.run([sys.executable, "-m", "labkit.net.namespace"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert "usage: python -m labkit.net.namespace -- COMMAND" in done.stderr


def test_a_kernel_launched_over_tcp_stays_on_the_host_network(tmp_path):
    """VS Code starts the kernelspec's argv itself with a TCP connection file: a kernel in a
    namespace would be unreachable, so it runs on the host network and says why."""
    connection = tmp_path / "kernel.json"
    connection.write_text('{"transport": "tcp", "ip": "127.0.0.1", "shell_port": 1}')
    done = in_lab_namespace(sys.executable, "-c", SHOW_NETWORK, "-f", str(connection))
    assert done.stdout.startswith("host: TCP: this kernel was started without the netlab")
    found = diagnose(done.stdout.strip(), container=False)
    assert "VS Code" in found.case and "make lab" in found.fix
    connection.write_text('{"transport": "ipc", "ip": "/run/x/kernel"}')
    done = in_lab_namespace(sys.executable, "-c", SHOW_NETWORK, "-f", str(connection))
    assert done.stdout.strip() == "private"


def test_textbook_ports_inside_the_lab_network_any_free_port_outside(monkeypatch):
    from labkit import textbook_port

    code = "from labkit import textbook_port; print(textbook_port(80), textbook_port(443))"
    assert in_lab_namespace(sys.executable, "-c", code).stdout.strip() == "80 443"
    monkeypatch.setenv("LABKIT_NETWORK", "host: EPERM: Operation not permitted")
    assert textbook_port(80) == 0
