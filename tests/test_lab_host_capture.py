"""Servers and captures on LabNetwork's hosts: a server binds a lab host's address only
there, and a capture on a host's eth0 keeps both directions, to the last packet."""

import os
import socket

import pytest

from labkit import Capture, Impairment, LabNetwork, TCPServer
from labkit.servers.base import check_host


def covered_bytes(segments) -> int:
    """Bytes of sequence space the segments' payloads cover, each byte once."""
    covered, end = 0, None
    for start, stop in sorted((s.seq, s.seq + s.length) for s in segments if s.length):
        if end is None or start >= end:
            covered += stop - start
            end = stop
        elif stop > end:
            covered += stop - end
            end = stop
    return covered


def test_covered_bytes_counts_a_retransmission_once():
    class Seg:
        def __init__(self, seq, length):
            self.seq, self.length = seq, length
    assert covered_bytes([Seg(1, 100), Seg(101, 50), Seg(1, 100), Seg(51, 150), Seg(0, 0)]) == 200


def test_a_lab_hosts_address_is_refused_outside_the_lab_host():
    with pytest.raises(ValueError, match="not a loopback address"):
        check_host("10.0.0.2")


def test_on_a_lab_host_its_address_is_allowed_and_a_public_one_still_refused(lab_hosts):
    with LabNetwork() as net, net.on("server"):
        assert check_host("10.0.0.2") == "10.0.0.2"
        with pytest.raises(ValueError, match="not a loopback address"):
            check_host("8.8.8.8")


def test_a_capture_on_a_hosts_eth0_sees_both_directions_to_the_last_byte(lab_hosts, live,
                                                                           data_dir):
    data = bytes(range(256)) * 200    # 51,200 bytes: 36 segments each way
    with LabNetwork(Impairment(delay=0.005)) as net:
        with net.on("server"), TCPServer("echo", host=net.addresses["server"]) as server:
            with net.on("client"), Capture(server, name="t", iface="eth0") as wire:
                with socket.create_connection(server.address) as sock:
                    sock.sendall(data)
                    echoed = b""
                    while len(echoed) < len(data):
                        echoed += sock.recv(65536)
    # the sequence space each side's segments cover: a retransmission covers nothing new
    covered = {role: covered_bytes(s for s in wire.segments if s.src == role)
               for role in ("client", "server")}
    assert echoed == data
    assert covered == {"client": len(data), "server": len(data)}, covered
    assert wire.complete


def test_in_a_machines_network_it_refuses_to_add_interfaces():
    import socket as sockets

    others = [name for _, name in sockets.if_nameindex() if name != "lo"]
    if not others:
        pytest.skip("this network has only loopback: not a machine's")
    # as root: because this network is a machine's; as a plain user: no namespace rights
    refusal = "this network is a machine's" if os.geteuid() == 0 else "needs the lab kernel"
    with pytest.raises(RuntimeError, match=refusal):
        LabNetwork().start()
