"""Captures on every interface of a routed lab network equal tcpdump's there, frame for
frame, and tshark reads them as labkit does (ARP, ICMP errors, fragments, TCP).

tcpdump runs on each host as root (a user namespace forbids its -Z drop to root), so
these tests need real root; test_network_layer.py proves the same network works unprivileged.
"""

import contextlib
import socket
import subprocess

import pytest
from conftest import require_tool
from scapy.utils import PcapReader
from test_tshark_diff import assert_same_as_tshark

from labkit import Cable, Impairment, LabNetwork, TCPServer
from labkit.net.hosts import inside

SENTINEL_TYPE = 0x88B5  # an EtherType for local experiments (IEEE 802): nobody else's
SENTINEL = b"labkit test sentinel"
IP_RECVERR, IP_MTU_DISCOVER, IP_PMTUDISC_DONT = 11, 10, 0


def _witness(tcpdump: str, interface: str) -> subprocess.Popen:
    """tcpdump on this thread's host's ``interface``, streaming pcap; ready on return."""
    proc = subprocess.Popen([tcpdump, "-i", interface, "--immediate-mode", "-U", "-n",
                             "-w", "-", "not (udp and host 127.0.0.1)"],  # not our fences
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert b"listening on" in proc.stderr.readline()
    return proc


def _end_of_stream(interface: str) -> None:
    """A frame out of ``interface`` that tells tcpdump's reader where this test ended."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.bind((interface, 0))
        raw.send(b"\xff" * 6 + b"\x02" + b"\0" * 5 + SENTINEL_TYPE.to_bytes(2, "big")
                 + SENTINEL.ljust(46, b"\0"))


def _frames_until_sentinel(proc: subprocess.Popen) -> list[bytes]:
    frames = []
    for pkt in PcapReader(proc.stdout):
        data = bytes(pkt)
        if SENTINEL in data:
            return frames
        frames.append(data)
    raise AssertionError("tcpdump's stream ended before the sentinel")


def _same_frames(spot, ours: list[bytes], theirs: list[bytes]) -> None:
    """The same frames, byte for byte, in the same order but where two of them reached the
    capturing sockets at once: a host's packets are received on the CPU that sent them, so
    two sent from two CPUs may reach each socket in its own order (seen under load)."""
    assert len(ours) == len(theirs), f"{spot}: labkit {len(ours)} frames, tcpdump {len(theirs)}"
    assert sorted(ours) == sorted(theirs), f"{spot}: labkit's frames are not tcpdump's"
    where: dict[bytes, list[int]] = {}
    for j, frame in enumerate(theirs):
        where.setdefault(frame, []).append(j)
    moved = [(i, j) for i, frame in enumerate(ours) if abs(i - (j := where[frame].pop(0))) > 1]
    assert not moved, f"{spot}: frames (labkit's row, tcpdump's) further apart: {moved[:5]}"


def _traffic(net: LabNetwork, server: TCPServer) -> None:
    """ARP, a traceroute, a fragmented datagram, "fragmentation needed", a TCP echo:
    each step waits for its answer, so nothing is in flight when the captures end."""
    with net.on("client"):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        probe.settimeout(5)
        for ttl, size, df in ((1, 5, True), (2, 5, True), (3, 5, True), (64, 4000, False),
                              (64, 1400, True)):
            probe.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            probe.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, 2 if df else IP_PMTUDISC_DONT)
            probe.sendto(b"p" * size, ("10.0.2.4", 33434))
            probe.recvmsg(1, 512, socket.MSG_ERRQUEUE)  # its ICMP error came back
        probe.close()
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(b"x" * 20_000)
            got = 0
            while got < 20_000:
                got += len(sock.recv(65536))


def _every_interface_as_tcpdump(net: LabNetwork, traffic, tmp_path) -> set[str]:
    """Run ``traffic()`` with a labkit capture and tcpdump on every interface of every host;
    assert they hold the same frames and that tshark reads labkit's as labkit does.
    Returns the kinds of rows seen (ARP, ICMP ...)."""
    tcpdump = require_tool("tcpdump")
    require_tool("tshark")
    where = [(host, iface.name) for host in net.topology.hosts
             for iface in net.topology.interfaces[host]]
    with contextlib.ExitStack() as stack:
        witnesses = {}
        for host, interface in where:
            with net.on(host):
                witnesses[host, interface] = _witness(tcpdump, interface)
            stack.callback(witnesses[host, interface].kill)
        wires = {(host, interface): net.capture(host, interface=interface)
                 for host, interface in where}
        with contextlib.ExitStack() as captures:
            for wire in wires.values():
                captures.enter_context(wire)
            traffic()
        for host, interface in where:
            with inside(net._hosts[host]):
                _end_of_stream(interface)
        for spot, wire in wires.items():
            theirs = _frames_until_sentinel(witnesses[spot])
            ours = [frame.data for frame in wire._frames.frames]
            assert wire.complete and len(ours) > 2, (spot, len(ours))
            _same_frames(spot, ours, theirs)
            assert_same_as_tshark(wire.save(tmp_path / f"{spot[0]}-{spot[1]}.pcapng"),
                                  wire.segments)
    return {s.proto for wire in wires.values() for s in wire.segments}


def test_every_interface_captured_equals_tcpdump_and_reads_as_tshark(lab_hosts, live,
                                                                      tmp_path):
    net = LabNetwork(Cable("client", "r1"), Cable("r1", "r2", mtu=1280),
                     Cable("r2", "server", Impairment(delay=0.002)), arp="dynamic")
    with net, net.on("server"), TCPServer("echo", host="10.0.2.4") as server:
        kinds = _every_interface_as_tcpdump(net, lambda: _traffic(net, server), tmp_path)
    assert kinds == {"ARP", "UDP", "ICMP", "IP", "TCP"}


def _nat_traffic(net: LabNetwork, echo: TCPServer) -> None:
    """Notebook 10's NAT and firewall: two private hosts through a masquerade (the second
    from the same port, rewritten), a port forward in, a reset and an ICMP reject out."""
    for host, address in (("laptop", "192.168.1.10"), ("phone", "192.168.2.20")):
        with net.on(host), socket.create_connection(echo.address, timeout=5,
                                                    source_address=(address, 40000)) as sock:
            sock.sendall(b"hello")
            assert sock.recv(10) == b"hello"
    with net.on("laptop"), TCPServer("echo", host="192.168.1.10", port=80):
        with net.on("server"), socket.create_connection(("203.0.113.1", 8080), timeout=5) as s:
            s.sendall(b"in")
            assert s.recv(10) == b"in"
    for port, error in ((81, ConnectionRefusedError), (82, OSError)):
        with net.on("laptop"), pytest.raises(error):
            socket.create_connection(("203.0.113.80", port), timeout=5)


def test_every_interface_of_a_nat_and_firewall_equals_tcpdump(lab_hosts, live, nft,
                                                              tmp_path):
    net = LabNetwork(Cable("laptop", "nat", subnet="192.168.1.0/24",
                           addresses={"laptop": "192.168.1.10", "nat": "192.168.1.1"}),
                     Cable("phone", "nat", subnet="192.168.2.0/24",
                           addresses={"phone": "192.168.2.20", "nat": "192.168.2.1"}),
                     Cable("nat", "server", subnet="203.0.113.0/24",
                           addresses={"nat": "203.0.113.1", "server": "203.0.113.80"}),
                     arp="dynamic")
    with net:
        net.nft("nat", """table ip nat {
            chain out { type nat hook postrouting priority srcnat; oifname "eth2" masquerade; }
            chain in { type nat hook prerouting priority dstnat
                       iifname "eth2" tcp dport 8080 dnat to 192.168.1.10:80; }
        }
        table ip wall {
            chain forward { type filter hook forward priority filter
                tcp dport 81 reject with tcp reset
                tcp dport 82 reject with icmp type admin-prohibited; }
        }""")
        with net.on("server"), TCPServer("echo", host="203.0.113.80") as echo:
            kinds = _every_interface_as_tcpdump(net, lambda: _nat_traffic(net, echo), tmp_path)
    assert kinds == {"ARP", "ICMP", "TCP"}


@pytest.mark.parametrize("bad", ["arp or", "port ninety"])
def test_a_filter_tcpdump_cannot_read_is_named(lab_hosts, live, bad):
    with LabNetwork.chain("client", "server") as net:
        with pytest.raises(ValueError, match="not one tcpdump understands"):
            with net.capture("client", filter=bad):
                pass


def test_a_host_capture_is_labelled_by_host_and_says_where(lab_hosts, live, capsys):
    with LabNetwork.chain("client", "r1", "server") as net:
        with net.capture("r1", interface="eth1", name=None) as wire, net.on("client"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
                sock.sendto(b"hello", ("10.0.1.3", 9))
                sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)
    assert "● live capture on r1 eth1: every packet" in capsys.readouterr().out
    assert [(s.src, s.dst, s.proto) for s in wire.segments] == [
        ("client", "server", "UDP"), ("server", "client", "ICMP")]
    assert wire.meta["hosts"]["10.0.1.2"] == "r1" and repr(wire).startswith("<Capture on r1")
