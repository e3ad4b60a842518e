import http.server
import json
import os
import re
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import echo_exchange, needs_capture, require_tool
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6
from scapy.layers.l2 import Ether
from scapy.utils import PcapReader, rdpcap

from labkit import (
    BackgroundServer,
    Capture,
    DNSServer,
    HTTPServer,
    TCPServer,
    UDPRelay,
    UDPServer,
    WebSocketServer,
    WSGIServer,
    capture_mode,
    serve_in_thread,
)
from labkit.capture.live import LiveSniffer


def _is_ours(wire, pkt) -> bool:
    """Would the capture's sniffer keep this packet? (a fresh one if it has not started)"""
    return (wire._live or LiveSniffer(wire.iface, wire._endpoints)).is_ours(pkt)


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
    (("server",), {}, TypeError, "not 'server'"),
    ((0,), {}, ValueError, "port must be an int from 1 to 65535"),
    ((80,), {"name": "../escape"}, ValueError, "letters, digits"),
    ((TCPServer(),), {}, ValueError, "start the server first"),
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
    with pytest.raises(ValueError, match=r"ending in \.pcapng"):
        wire.save(tmp_path / "echo.pcap")


def test_looking_inside_the_with_block_is_an_error(monkeypatch):
    monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    with Capture(5000) as wire:
        with pytest.raises(RuntimeError, match="after its `with` block"):
            _ = wire.packets


def test_strangers_that_slip_in_before_the_filter_are_dropped():
    wire = Capture(8080)
    ours = Ether() / IP() / TCP(sport=40000, dport=8080)
    stranger = Ether() / IP() / TCP(sport=40000, dport=5555)
    assert _is_ours(wire, ours) and not _is_ours(wire, stranger)


def test_only_icmp_errors_about_our_ports_are_kept():
    def unreachable(port):
        pkt = Ether() / IP() / ICMP(type=3, code=3) / IP() / UDP(sport=40000, dport=port)
        return Ether(bytes(pkt))  # dissected as captured: the quote is IPerror/UDPerror

    wire = Capture(8080)
    assert _is_ours(wire, unreachable(8080))
    assert not _is_ours(wire, unreachable(9999))  # another lab's error on the same lo
    assert not _is_ours(wire, Ether() / IP() / ICMP(type=8))


@needs_capture
def test_kernel_drops_are_reported_not_hidden(live, monkeypatch, capsys):
    from labkit.capture import live as _live

    with TCPServer("echo") as server, Capture(server) as wire:
        drops = iter([7])  # PACKET_STATISTICS counts from its last reading: 7, then none
        monkeypatch.setattr(_live, "_kernel_drops", lambda sock: next(drops, 0))
        echo_exchange(server)
    assert not wire.complete and wire.lost == 7
    assert "⚠ 7 packets were lost" in capsys.readouterr().out


# -- what a capture lets in: protocol, address and port, not the port number alone ----------
def knock(host, port, protocol):
    """Traffic to (host, port) that no capture of ours should show: refused or ignored."""
    if protocol == "tcp":
        try:
            socket.create_connection((host, port), timeout=2).close()
        except ConnectionRefusedError:
            pass  # SYN and RST crossed lo: that is what we want the filter to face
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"stranger", (host, port))  # nobody there: an ICMP error comes back


def udp_exchange(server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(b"ping", server.address)
        s.recvfrom(100)


def wire_facts(packets):
    """{(protocol, src, dst)} of the packets: enough to spot a stranger."""
    return {("ICMP" if ICMP in p else "TCP" if TCP in p else "UDP", p[IP].src, p[IP].dst)
            for p in packets}


@needs_capture
@pytest.mark.parametrize("server_class, other", [(UDPServer, "tcp"), (TCPServer, "udp")])
def test_a_server_capture_ignores_strangers_on_its_port_number(live, server_class, other):
    """Same port number, other protocol or other loopback address: not the server's packets.

    A capture of the bare port number, around it, is the witness that they did cross lo.
    """
    own = "udp" if server_class is UDPServer else "tcp"
    exchange = udp_exchange if own == "udp" else echo_exchange
    with server_class("echo") as server:
        port = server.port
        with Capture(port) as witness, Capture(server) as wire:
            knock("127.0.0.1", port, other)   # the other protocol, same address and port
            knock("127.0.0.2", port, own)     # same protocol and port, another address
            knock("127.0.0.2", port, other)
            exchange(server)
    assert wire_facts(wire.packets) == {(own.upper(), "127.0.0.1", "127.0.0.1")}
    assert wire.complete
    seen = wire_facts(witness.packets)
    assert (other.upper(), "127.0.0.1", "127.0.0.1") in seen
    assert {(own.upper(), "127.0.0.2"), (other.upper(), "127.0.0.2")} <= {
        (proto, dst) for proto, _src, dst in seen}


@needs_capture
def test_an_ipv6_server_capture_ignores_ipv4_on_its_port_number(live):
    try:
        server = TCPServer("echo", host="::1").__enter__()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        with Capture(server) as wire:
            knock("127.0.0.1", server.port, "tcp")
            echo_exchange(server)
    finally:
        server.__exit__(None, None, None)
    assert [s.flags for s in wire.segments[:3]] == ["SYN", "SYN-ACK", "ACK"]
    assert all(IPv6 in p for p in wire.packets)  # not the IPv4 SYN and RST on the same port


@needs_capture
def test_port_unreachable_is_kept_and_a_protocol_hint_narrows_a_bare_port(live):
    """Notebook 03 watches a dead port for the ICMP error; protocol="udp" drops TCP noise."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    with Capture({dead: "nobody"}, protocol="udp") as wire:
        knock("127.0.0.1", dead, "tcp")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("127.0.0.1", dead))
            s.send(b"anyone there?")
            with pytest.raises(ConnectionRefusedError):
                s.recv(100)  # the ICMP error arrived: it is in the queue before the fence
    assert [(s.src, s.dst, s.proto) for s in wire.segments][:1] == [("client", "nobody", "UDP")]
    assert wire_facts(wire.packets) == {("UDP", "127.0.0.1", "127.0.0.1"),
                                        ("ICMP", "127.0.0.1", "127.0.0.1")}


class _DeclaredServer:
    """A server from elsewhere that says its protocol and address (duck typing)."""

    name = "server"

    def __init__(self, protocol, address):
        self.protocol, self.address = protocol, address

    @property
    def port(self):
        return self.address[1]


def crafted(port=8080, host="127.0.0.2"):
    """One packet of each kind a capture of UDP 127.0.0.1:port must tell apart."""
    def unreachable(quote):
        pkt = Ether() / IP() / ICMP(type=3, code=3) / quote
        return Ether(bytes(pkt))  # dissected as captured: the quote is IPerror/UDPerror

    six = IPv6(src="::1", dst="::1")

    return {
        "udp to it": (True, Ether() / IP() / UDP(sport=40000, dport=port)),
        "udp from it": (True, Ether() / IP() / UDP(sport=port, dport=40000)),
        "icmp about udp to it": (True, unreachable(IP() / UDP(sport=40000, dport=port))),
        "tcp to its port": (False, Ether() / IP() / TCP(sport=40000, dport=port)),
        "udp to another address": (False, Ether() / IP(dst=host) / UDP(dport=port)),
        "udp from another address": (False, Ether() / IP(src=host) / UDP(sport=port)),
        "icmp about tcp to it": (False, unreachable(IP() / TCP(sport=40000, dport=port))),
        "icmp about udp elsewhere": (False, unreachable(IP(dst=host) / UDP(dport=port))),
        "another port": (False, Ether() / IP() / UDP(sport=40000, dport=port + 1)),
        "udp over ipv6": (False, Ether() / six / UDP(sport=40000, dport=port)),
        "icmpv6 about udp over ipv6": (False, Ether(bytes(
            Ether() / six / ICMPv6DestUnreach(code=4) / six / UDP(sport=40000, dport=port)))),
    }


def test_a_udp_server_capture_keeps_only_its_own_packets():
    wire = Capture(_DeclaredServer("udp", ("127.0.0.1", 8080)))
    kept = {what: _is_ours(wire, pkt) for what, (_ours, pkt) in crafted().items()}
    assert kept == {what: ours for what, (ours, _pkt) in crafted().items()}


def test_the_kernel_filter_and_its_python_twin_agree(tmp_path):
    """The BPF program, run by tcpdump over the crafted packets, keeps what _is_ours keeps
    (for a UDP server on IPv4 and on IPv6, a bare port, a bare port with a protocol hint)."""
    from scapy.utils import wrpcap

    tcpdump = require_tool("tcpdump")
    packets = [pkt for _ours, pkt in crafted().values()]
    wrpcap(str(tmp_path / "crafted.pcap"), packets)
    for wire in (Capture(_DeclaredServer("udp", ("127.0.0.1", 8080))),
                 Capture(_DeclaredServer("udp", ("::1", 8080))),
                 Capture(8080), Capture(8080, protocol="tcp")):
        kept = tmp_path / "kept.pcap"
        subprocess.run([tcpdump, "-r", str(tmp_path / "crafted.pcap"), "-w", str(kept), wire.bpf],
                       capture_output=True, check=True, timeout=30)
        kernel = [bytes(p) for p in rdpcap(str(kept))]
        assert kernel == [bytes(p) for p in packets if _is_ours(wire, p)], wire.bpf


async def _ws_echo(websocket):
    async for message in websocket:
        await websocket.send(message)


@pytest.mark.parametrize("make, protocol", [
    (lambda: UDPServer(), "udp"),
    (lambda: TCPServer(host="::1"), "tcp"),
    (lambda: HTTPServer(), "tcp"),
    (lambda: DNSServer({"a.netlab.test": "127.0.0.7"}), None),   # UDP and TCP, one port
    (lambda: UDPRelay(("127.0.0.1", 9)), "udp"),
    (lambda: WebSocketServer(_ws_echo), "tcp"),
    (lambda: WSGIServer(lambda environ, start_response: []), "tcp"),
    (lambda: BackgroundServer(lambda listener, stop: stop.wait()), "tcp"),
    (lambda: serve_in_thread(http.server.HTTPServer(("127.0.0.1", 0),
                                                    http.server.BaseHTTPRequestHandler)), "tcp"),
], ids=["UDPServer", "TCPServer-ipv6", "HTTPServer", "DNSServer", "UDPRelay",
        "WebSocketServer", "WSGIServer", "BackgroundServer", "serve_in_thread"])
def test_every_lab_server_says_its_protocol_and_address(make, protocol):
    """Capture watches what each server declares (its endpoints), by protocol and address."""
    with make() as server:
        endpoints = Capture(server)._endpoints
        host, port = server.server_address if hasattr(server, "server_address") else server.address
    assert endpoints[0][:2] == (port, protocol) and str(endpoints[0].host) == host
    assert {e.protocol for e in endpoints} == {protocol}  # a relay: its two sockets and target


# -- misuse: one `with` block per Capture, and nothing left running ---------------------------
def open_fds():
    return len(os.listdir("/proc/self/fd"))


def datagrams(port, n=3):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(n):
            s.sendto(b"%d" % i, ("127.0.0.1", port))


@needs_capture
@pytest.mark.parametrize("mode", ["live", "record"])
def test_a_capture_entered_twice_raises_and_leaks_nothing(mode, receiver, data_dir, monkeypatch):
    monkeypatch.setenv("LABKIT_CAPTURE", mode)
    threads, fds = set(threading.enumerate()), open_fds()
    wire = Capture(receiver, name="t-twice")
    with wire:
        datagrams(receiver)
        with pytest.raises(RuntimeError, match="already recording: a Capture records one `with` "
                                               r"block; create a new Capture\(...\) for another"):
            with wire:
                pass
    assert len(wire) == 3 and wire.complete
    with pytest.raises(RuntimeError, match="this Capture has ended: a Capture records one"):
        with wire:
            datagrams(receiver)
    assert len(wire) == 3  # nothing more was recorded
    assert set(threading.enumerate()) <= threads and open_fds() == fds
    if mode == "record":
        assert len(rdpcap(str(data_dir / "t-twice.pcapng"))) == 3


def test_a_replayed_capture_entered_twice_raises(data_dir, monkeypatch):
    monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    wire = Capture(5000)
    with wire:
        with pytest.raises(RuntimeError, match="already recording: a Capture records one"):
            with wire:
                pass
    with pytest.raises(RuntimeError, match="has ended: a Capture records one `with` block"):
        with wire:
            pass


def test_a_capture_used_outside_a_with_block_says_how(monkeypatch):
    monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    wire = Capture(5000)
    with pytest.raises(RuntimeError, match="has not run yet: use it as `with Capture"):
        _ = wire.packets
    with pytest.raises(RuntimeError, match="never entered: use it as `with Capture"):
        wire.__exit__(None, None, None)


@needs_capture
def test_a_failed_start_leaks_nothing(live, monkeypatch, receiver):
    """A socket that cannot take its filter: the error is clear, thread and sockets are gone."""
    from labkit.capture import live as _live

    threads, fds = set(threading.enumerate()), open_fds()

    def refused(sock, program):
        raise OSError("the kernel refused the filter")

    monkeypatch.setattr(_live, "_attach_filter", refused)
    wire = Capture(receiver)
    with pytest.raises(OSError, match="refused the filter"):
        wire.__enter__()
    assert set(threading.enumerate()) <= threads and open_fds() == fds
    with pytest.raises(RuntimeError, match="has ended: a Capture records one"):
        wire.__enter__()


@needs_capture
def test_a_sniffer_that_dies_ends_the_capture_incomplete_not_hung(live, receiver, capsys,
                                                                     monkeypatch):
    """A reader that fails on a packet: the exit still returns, and says the capture is cut."""
    from labkit.capture import live as _live

    class Unreadable:
        def unpack_from(self, *args):
            raise ValueError("a packet the reader cannot read")

    threads, fds = set(threading.enumerate()), open_fds()
    with Capture(receiver) as wire:
        monkeypatch.setattr(_live, "_PACKET", Unreadable())
        datagrams(receiver, 1)
        wire._live._thread.join(30)  # it ends on that datagram (bounded: no hang if not)
    assert not wire.complete and wire.lost == 1  # the datagram it could not read
    said = capsys.readouterr().out
    assert "stopped early after an error" in said and "⚠ 1 packet was lost" in said
    assert set(threading.enumerate()) <= threads and open_fds() == fds


# -- recording names become file names ---------------------------------------------------------
@pytest.mark.parametrize("name", [
    "ok\n", "../escape", "a/b", "a\\b", ".hidden", "-flag", "a..b", "", "x" * 81, "a b",
    "ça", "nul\x00", "tab\t",
])
def test_unsafe_recording_names_are_refused(name):
    with pytest.raises(ValueError, match=r"it names the file data/<name>\.pcapng") as info:
        Capture(5000, name=name)
    assert repr(name) in str(info.value) and "e.g. '01-handshake'" in str(info.value)


def test_a_recording_name_must_be_text():
    with pytest.raises(TypeError, match=r"^name must be None or a file name .*, not 7$"):
        Capture(5000, name=7)


def test_every_name_the_notebooks_and_recordings_use_is_valid():
    root = Path(__file__).resolve().parent.parent
    names = {m for nb in (root / "notebooks").glob("*.ipynb")
             for m in re.findall(r'name=\\"([^"\\]*)\\"', nb.read_text())}
    names |= {p.stem for p in (root / "data").glob("*.pcapng")}
    assert len(names) > 20
    for name in sorted(names):
        assert Capture(5000, name=name).name == name


def test_a_bad_protocol_hint_is_refused():
    with pytest.raises(ValueError, match="protocol must be one of None, 'tcp', 'udp'"):
        Capture(5000, protocol="icmp")
