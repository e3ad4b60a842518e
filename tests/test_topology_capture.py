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


def test_every_interface_captured_equals_tcpdump_and_reads_as_tshark(lab_hosts, live,
                                                                      tmp_path):
    tcpdump = require_tool("tcpdump")
    require_tool("tshark")
    net = LabNetwork(Cable("client", "r1"), Cable("r1", "r2", mtu=1280),
                     Cable("r2", "server", Impairment(delay=0.002)), arp="dynamic")
    with net, contextlib.ExitStack() as stack:
        where = [(host, iface.name) for host in net.topology.hosts
                 for iface in net.topology.interfaces[host]]
        witnesses = {}
        for host, interface in where:
            with net.on(host):
                witnesses[host, interface] = _witness(tcpdump, interface)
            stack.callback(witnesses[host, interface].kill)
        with net.on("server"), TCPServer("echo", host="10.0.2.4") as server:
            wires = {(host, interface): net.capture(host, interface=interface)
                     for host, interface in where}
            with contextlib.ExitStack() as captures:
                for wire in wires.values():
                    captures.enter_context(wire)
                _traffic(net, server)
        for host, interface in where:
            with inside(net._hosts[host]):
                _end_of_stream(interface)
        for spot, wire in wires.items():
            theirs = _frames_until_sentinel(witnesses[spot])
            ours = [frame.data for frame in wire._frames.frames]
            assert wire.complete and len(ours) > 5, (spot, len(ours))
            assert ours == theirs, f"{spot}: labkit {len(ours)} frames, tcpdump {len(theirs)}"
            assert_same_as_tshark(wire.save(tmp_path / f"{spot[0]}-{spot[1]}.pcapng"),
                                  wire.segments)
    kinds = {s.proto for wire in wires.values() for s in wire.segments}
    assert kinds == {"ARP", "UDP", "ICMP", "IP", "TCP"}


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
