import json
import socket
import subprocess

import pytest
from scapy.utils import PcapReader, rdpcap

from conftest import needs_capture, require_tool
from labkit import Capture, TCPServer, UDPServer, capture_mode


def echo_exchange(server, messages=(b"hello",)):
    with socket.create_connection(server.address, timeout=2) as s:
        for m in messages:
            s.sendall(m)
            got = b""
            while len(got) < len(m):
                got += s.recv(1024)


@needs_capture
def test_handshake_data_and_teardown_each_captured_once(live):
    with TCPServer("echo") as server, Capture(server) as wire:
        echo_exchange(server)
    flags = [(s.src, s.flags) for s in wire.segments]
    assert flags[:3] == [("client", "SYN"), ("server", "SYN-ACK"), ("client", "ACK")]
    fins = [s for s in wire.segments if "FIN" in s.flags]
    assert [s.src for s in fins] == ["client", "server"]
    assert wire.segments[-1].flags == "ACK" and wire.complete  # the final ACK was waited for
    data = [s for s in wire.segments if s.length]
    assert [(s.src, s.seq, s.length) for s in data] == [("client", 1, 5), ("server", 1, 5)]


@needs_capture
def test_one_copy_per_packet_same_as_tcpdump(live):
    """Loopback shows raw sockets every packet twice; we keep exactly the arriving copy.

    tcpdump, told to keep only arriving packets (-Q in), is the independent witness.
    It streams what it sees; a sentinel datagram sent after our capture ended marks
    the end of its stream, so neither side can have missed a packet at the end.
    """
    tcpdump = require_tool("tcpdump")
    with TCPServer("echo") as server:
        proc = subprocess.Popen(
            [tcpdump, "-i", "lo", "-Q", "in", "--immediate-mode", "-B", "65536", "-U", "-n",
             "-w", "-",
             f"port {server.port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert b"listening on" in proc.stderr.readline()  # its socket is open now
            with Capture(server) as wire:
                echo_exchange(server, [b"message %d" % i for i in range(20)])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"sentinel", server.address)
            theirs = []
            for pkt in PcapReader(proc.stdout):
                if bytes(pkt).endswith(b"sentinel"):
                    break
                theirs.append(bytes(pkt))
        finally:
            proc.kill()
            proc.wait(timeout=10)
    ours = [bytes(p) for p in wire.packets]
    print(f"\ndedupe: labkit {len(ours)} packets, tcpdump -Q in {len(theirs)} packets")
    assert len(ours) >= 3 + 2 * 20 + 3  # handshake, 20 echoes with replies, teardown
    assert ours == theirs


@needs_capture
def test_connection_refused_is_a_reset(live):
    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Capture(port) as wire:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
    assert [(s.src, s.flags) for s in wire.segments] == [("client", "SYN"), ("server", "RST-ACK")]


@needs_capture
def test_udp_datagrams_and_roles_from_a_dict(live):
    with UDPServer("upper", name="shouter") as server, Capture(server) as wire:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            for word in (b"a", b"bb", b"ccc"):
                s.sendto(word, server.address)
                s.recvfrom(10)
    assert [(s.src, s.dst, s.proto, s.length) for s in wire.segments] == [
        ("client", "shouter", "UDP", 1), ("shouter", "client", "UDP", 1),
        ("client", "shouter", "UDP", 2), ("shouter", "client", "UDP", 2),
        ("client", "shouter", "UDP", 3), ("shouter", "client", "UDP", 3)]


@needs_capture
def test_record_then_replay_shows_the_recording(data_dir, monkeypatch, capsys):
    monkeypatch.setenv("LABKIT_CAPTURE", "record")
    with TCPServer("echo") as server, Capture(server, name="t-echo") as wire:
        echo_exchange(server)
    recorded = [bytes(p) for p in wire.packets]
    meta = json.loads((data_dir / "t-echo.json").read_text())
    assert meta["roles"] == {str(server_port): "server" for server_port in wire.roles}

    monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    capsys.readouterr()
    with TCPServer("echo") as server, Capture(server, name="t-echo") as again:
        echo_exchange(server)  # the sockets still run live
    banner = capsys.readouterr().out
    assert banner.startswith("▶ replay: showing the recording") and "labkit doctor" in banner
    assert [bytes(p) for p in again.packets] == recorded
    facts = lambda segs: [(s.src, s.dst, s.flags, s.seq, s.ack, s.length) for s in segs]  # noqa
    assert facts(again.segments) == facts(wire.segments)


def test_replay_of_a_missing_recording_says_how_to_make_it(data_dir, monkeypatch):
    monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    with pytest.raises(FileNotFoundError, match="python -m labkit record"):
        with Capture(5000, name="never-recorded"):
            pass


def test_replay_of_a_block_that_raised_shows_nothing(data_dir, monkeypatch):
    """The recording shows code that ran to the end; a block that failed did something else."""
    (data_dir / "t-ok.pcapng").write_bytes(b"")  # would be read (and fail) if it were used
    monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    with pytest.raises(ConnectionRefusedError):
        with Capture(5000, name="t-ok") as wire:
            raise ConnectionRefusedError()
    assert len(wire.packets) == 0


def test_replay_without_a_name_is_empty_and_says_so(monkeypatch, capsys):
    monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    with Capture(5000) as wire:
        pass
    assert len(wire.packets) == 0 and str(wire.table()) == "(no packets)"
    assert "has no name" in capsys.readouterr().out


def test_capture_mode_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv("LABKIT_CAPTURE", "sometimes")
    with pytest.raises(ValueError, match="use one of auto, live, replay, record"):
        capture_mode()


@pytest.mark.parametrize("args, kwargs, error, words", [
    ((), {}, ValueError, "at least one server or port"),
    (("server",), {}, TypeError, "not str"),
    ((0,), {}, ValueError, "out of range"),
    ((80,), {"name": "../escape"}, ValueError, "letters, digits"),
    ((TCPServer(),), {}, ValueError, "is not running: start it first"),
])
def test_bad_arguments(args, kwargs, error, words):
    with pytest.raises(error, match=None) as info:
        Capture(*args, **kwargs)
    assert words in str(info.value)


@needs_capture
def test_save_writes_pcapng_and_refuses_other_suffixes(live, tmp_path):
    with TCPServer("echo") as server, Capture(server) as wire:
        echo_exchange(server)
    path = wire.save(tmp_path / "echo.pcapng")
    assert path.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"  # pcapng section header block
    assert [bytes(p) for p in rdpcap(str(path))] == [bytes(p) for p in wire.packets]
    with pytest.raises(ValueError, match="ending in .pcapng"):
        wire.save(tmp_path / "echo.pcap")


def test_looking_inside_the_with_block_is_an_error(monkeypatch):
    monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    with Capture(5000) as wire:
        with pytest.raises(RuntimeError, match="after its `with` block"):
            wire.packets


def test_strangers_that_slip_in_before_the_filter_are_dropped():
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    wire = Capture(8080)
    ours = Ether() / IP() / TCP(sport=40000, dport=8080)
    stranger = Ether() / IP() / TCP(sport=40000, dport=5555)
    assert wire._is_ours(ours) and not wire._is_ours(stranger)


def test_only_icmp_errors_about_our_ports_are_kept():
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.l2 import Ether

    def unreachable(port):
        pkt = Ether() / IP() / ICMP(type=3, code=3) / IP() / UDP(sport=40000, dport=port)
        return Ether(bytes(pkt))  # dissected as captured: the quote is IPerror/UDPerror

    wire = Capture(8080)
    assert wire._is_ours(unreachable(8080))
    assert not wire._is_ours(unreachable(9999))  # another lab's error on the same lo
    assert not wire._is_ours(Ether() / IP() / ICMP(type=8))


@needs_capture
def test_kernel_drops_are_reported_not_hidden(live, monkeypatch, capsys):
    from labkit import _capture

    with TCPServer("echo") as server, Capture(server) as wire:
        monkeypatch.setattr(_capture, "_kernel_drops", lambda sock: 7)
        echo_exchange(server)
    assert not wire.complete
    assert "the kernel dropped 7 packets" in capsys.readouterr().out
