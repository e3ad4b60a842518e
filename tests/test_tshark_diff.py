"""labkit's packet rows against tshark's, field by field: Wireshark's numbering exactly.

The network layer too: ARP (opcode), ICMP and ICMPv6 (type and code; neighbour
discovery is ICMPv6 too), IP fragments (offset, more fragments, length) and the datagram
they make whole (shown in the row of the fragment that completes it, as Wireshark does).

For every recording in data/ (what replay mode shows), for live captures of the cases that
trip relative numbering up (ports reused, a refused connection, a capture begun mid-stream)
and for hand-built packet lists (retransmissions and more), every packet labkit shows must
be the frame tshark shows in the same place: same transport, TCP flags, relative seq/ack
(Wireshark's defaults: relative sequence numbers, sequence analysis on) and payload length.

    tshark -r FILE -T fields -e frame.number -e frame.protocols -e tcp.seq ...
"""

import socket
import struct
import subprocess
from pathlib import Path

import packets
import pytest
from conftest import require_tool
from scapy.layers.inet import IP
from scapy.layers.l2 import ARP
from scapy.utils import rdpcap, wrpcap

from labkit import Capture, TCPServer
from labkit.capture import recording
from labkit.capture.capture import DATA_DIR
from labkit.capture.flows import segments
from labkit.protocols.icmp import icmp6_layer, icmp_message

RECORDINGS = sorted(DATA_DIR.glob("*.pcapng"))
# tcp.flags bits, named as labkit names them (NS, 0x100, has no name there: it would differ)
FLAG_BITS = {0x01: "FIN", 0x02: "SYN", 0x04: "RST", 0x08: "PSH", 0x10: "ACK", 0x20: "URG",
             0x40: "ECE", 0x80: "CWR"}
FIELDS = ["frame.number", "frame.protocols", "tcp.seq", "tcp.ack", "tcp.len", "tcp.flags",
          "udp.length", "arp.opcode", "icmp.type", "icmp.code", "ip.flags.mf",
          "ip.frag_offset", "ip.len", "ip.hdr_len", "icmpv6.type", "icmpv6.code"]
# Wireshark's defaults, spelled out so a personal preferences file cannot change them
PREFS = ["tcp.relative_sequence_numbers:TRUE", "tcp.analyze_sequence_numbers:TRUE"]


@pytest.fixture
def tshark():
    """tshark's path; without it a test skips before any capture runs (fails in CI)."""
    return require_tool("tshark")


def tshark_rows(path: Path) -> list[tuple]:
    """One row per frame, as tshark dissects ``path``: (frame, proto, flags, seq, ack, len)."""
    command = [require_tool("tshark"), "-n", "-r", str(path), "-T", "fields",
               "-E", "separator=\t", "-E", "occurrence=f"]
    for pref in PREFS:
        command += ["-o", pref]
    for name in FIELDS:
        command += ["-e", name]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = []
    for line in done.stdout.splitlines():
        (number, protocols, seq, ack, length, flags, udp_length, opcode, icmp_type, icmp_code,
         more, offset, ip_len, ip_header, icmp6_type, icmp6_code) = line.split("\t")
        layers = protocols.split(":")
        # the first transport after the (outer) IP header: an ICMP error quotes TCP or UDP
        proto = next((p for p in layers if p in ("tcp", "udp", "icmp", "icmpv6", "arp")),
                     protocols)
        if proto == protocols and layers[-2:] == ["ip", "data"]:  # a fragment, not the last
            # tshark counts the offset in 8-byte units, as the header does; labkit in bytes
            rows.append((int(number), "IP", frozenset({f"offset={int(offset) * 8}", f"mf={more}"}),
                         None, None, int(ip_len) - int(ip_header)))
        elif proto == "arp":
            rows.append((int(number), "ARP", frozenset({f"op={opcode}"}), None, None, None))
        elif proto == "icmp":
            rows.append((int(number), "ICMP", frozenset({f"type={icmp_type}",
                                                         f"code={icmp_code}"}), None, None, None))
        elif proto == "icmpv6":  # errors, echoes, neighbour discovery, MLD
            rows.append((int(number), "ICMPv6", frozenset({f"type={icmp6_type}",
                                                           f"code={icmp6_code}"}),
                         None, None, None))
        elif proto == "tcp":
            bits = int(flags, 16)
            names = frozenset(n for bit, n in FLAG_BITS.items() if bits & bit)
            rows.append((int(number), "TCP", names, int(seq),
                         int(ack) if bits & 0x10 else None, int(length)))
        elif proto == "udp":
            rows.append((int(number), "UDP", frozenset(), None, None, int(udp_length) - 8))
        else:
            rows.append((int(number), proto.upper(), frozenset(), None, None, None))
    return rows


def labkit_rows(segs) -> list[tuple]:
    """The same columns from labkit's Segments (row n is frame n: every packet is one row)."""
    rows = []
    for n, s in enumerate(segs, start=1):
        if s.proto == "TCP":
            rows.append((n, "TCP", frozenset(s.flags.split("-")), s.seq, s.ack, s.length))
        elif s.proto == "UDP":
            rows.append((n, "UDP", frozenset(), None, None, s.length))
        elif s.proto == "IP":  # a fragment: where its bytes go, and if more follow
            ip = s.packet[IP]
            rows.append((n, "IP", frozenset({f"offset={ip.frag * 8}",
                                             f"mf={int(ip.flags.MF)}"}), None, None, s.length))
        elif s.proto == "ARP":
            rows.append((n, "ARP", frozenset({f"op={s.packet[ARP].op}"}), None, None, None))
        elif s.proto == "ICMP":
            message = icmp_message(s.packet)
            rows.append((n, "ICMP", frozenset({f"type={message.type}", f"code={message.code}"}),
                         None, None, None))
        elif s.proto in ("ICMPv6", "NDP"):
            icmp6 = icmp6_layer(s.packet)
            code = getattr(icmp6, "code", 0)  # an MLDv2 report has no code field (tshark: 0)
            rows.append((n, "ICMPv6", frozenset({f"type={icmp6.type}", f"code={code}"}),
                         None, None, None))
        else:
            rows.append((n, s.proto, frozenset(), None, None, None))
    return rows


def assert_same_as_tshark(path: Path, segs) -> None:
    theirs, ours = tshark_rows(path), labkit_rows(segs)
    wrong = [(t, o) for t, o in zip(theirs, ours, strict=False) if t != o]
    assert len(ours) == len(theirs), f"labkit shows {len(ours)} packets, tshark {len(theirs)}"
    assert not wrong, "rows differ (tshark's, labkit's): " + "; ".join(map(str, wrong[:5]))


# -- every recording replay mode shows ----------------------------------------------------
def test_there_are_recordings_to_compare():
    assert RECORDINGS, f"no recordings in {DATA_DIR}: `python -m labkit record` makes them"


@pytest.mark.parametrize("path", RECORDINGS, ids=[p.stem for p in RECORDINGS])
def test_recording_numbers_as_tshark_does(path, tshark):
    packets, roles, _summary, meta = recording.load(path)  # what Capture loads in replay mode
    assert_same_as_tshark(path, segments(packets, roles, meta))


# -- hand-built packet lists, written to pcap and read back as a capture would be ---------
SYNTHETIC = {f.__name__: f for f in (
    packets.retransmission, packets.reused_ports, packets.syn_retransmitted, packets.refused,
    packets.mid_stream_server_first, packets.mid_stream_bare_ack_first,
    packets.arp_then_traceroute, packets.fragments_out_of_order,
    packets.neighbour_discovery_then_errors6)}


@pytest.mark.parametrize("name", SYNTHETIC)
def test_hand_built_packets_number_as_tshark_does(name, tmp_path, tshark):
    path = tmp_path / f"{name}.pcap"
    wrpcap(str(path), SYNTHETIC[name]())
    assert_same_as_tshark(path, segments(rdpcap(str(path)), {packets.S[1]: "server"}))


# -- live captures on lo ------------------------------------------------------------------
def _exchange(sock: socket.socket, message: bytes) -> None:
    sock.sendall(message)
    got = b""
    while len(got) < len(message):
        chunk = sock.recv(1024)
        assert chunk, "the echo server closed early"
        got += chunk


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_live_reused_client_port(live, tmp_path, tshark):
    with TCPServer("echo") as server, Capture(server) as wire:
        port = _free_port()
        for message in (b"first", b"second"):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                # end with RST (linger 0): no TIME_WAIT, so the same port connects again
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.bind(("127.0.0.1", port))
                s.connect(server.address)
                _exchange(s, message)
    segs = wire.segments
    syns = [s for s in segs if s.flags == "SYN"]
    assert len(syns) == 2 and {s.seq for s in syns} == {0}, [s.label for s in segs]
    assert_same_as_tshark(wire.save(tmp_path / "reused.pcapng"), segs)


def test_live_refused_connection(live, tmp_path, tshark):
    with socket.socket() as closed:  # bound, never listening: no other worker can take it
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with Capture(port, protocol="tcp") as wire, pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=3)
    segs = wire.segments
    assert [(s.flags, s.seq, s.ack) for s in segs] == [("SYN", 0, None), ("RST-ACK", 1, 1)]
    assert_same_as_tshark(wire.save(tmp_path / "refused.pcapng"), segs)


def test_live_capture_begun_mid_stream(live, tmp_path, tshark):
    with TCPServer("echo") as server, socket.create_connection(server.address, timeout=3) as s:
        _exchange(s, b"before the capture")
        with Capture(server) as wire:  # the handshake and first bytes are not in it
            _exchange(s, b"during")
            s.close()
    segs = wire.segments
    assert segs and segs[0].seq == 1 and segs[0].ack == 1, [s.label for s in segs]
    # small relative numbers, never raw 32-bit ones
    assert all(s.seq < 2**16 and (s.ack or 0) < 2**16 for s in segs), [s.label for s in segs]
    assert_same_as_tshark(wire.save(tmp_path / "mid-stream.pcapng"), segs)
