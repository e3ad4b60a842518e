"""Segments read from frames' bytes say exactly what Scapy's dissection of every frame says.

A capture holds bytes (:class:`~labkit.capture.frames.Frames`) and describes them with
``segments(frames, ...)``, which reads plain TCP/UDP headers itself and dissects with Scapy
only the frames a view needs; ``segments(scapy_packets, ...)`` dissects everything, as it
always did.  This is the oracle: every recording in data/ and synthetic oddities, both ways,
field by field, and the table, connection summary and ladder labels as text.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import packets as made
import pytest
from conftest import echo_exchange
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from labkit import Capture, HTTPServer, TCPServer
from labkit.capture import recording
from labkit.capture.capture import DATA_DIR
from labkit.capture.flows import Segment, segments
from labkit.capture.frames import Frame, Frames
from labkit.views.connections import Connections
from labkit.views.ladder import _label
from labkit.views.table import Table

FIELDS = ("index", "time", "src", "dst", "proto", "flags", "seq", "ack", "length", "summary")
RECORDINGS = sorted(DATA_DIR.glob("*.pcapng"))


def fresh_frames(pkts) -> Frames:
    """Frames as a live capture holds them: bytes, a nanosecond stamp, no packet yet."""
    return Frames([Frame(bytes(p), int(Decimal(str(p.time)) * 10**9),
                         p.wirelen or len(bytes(p))) for p in pkts])


def facts(segs) -> list[tuple]:
    return [(*(getattr(s, name) for name in FIELDS), _label(s), bytes(s.packet)) for s in segs]


def assert_same(old_packets, frames: Frames, roles, meta=None) -> None:
    old = segments(old_packets, roles, meta)
    new = segments(frames, roles, meta)
    assert facts(new) == facts(old)
    assert str(Table(new)) == str(Table(old))
    assert Table(new)._repr_html_() == Table(old)._repr_html_()
    assert str(Connections(new)) == str(Connections(old))


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_recordings_replayed(path):
    """Replay mode: the recording's packets, kept inside Frames.of_packets."""
    pkts, roles, _summary, meta = recording.load(path)
    assert_same(pkts, Frames.of_packets(pkts), roles, meta)


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_recordings_as_live_bytes(path):
    """Live mode: bytes only; the old path dissected every frame of the same Frames."""
    pkts, roles, _summary, meta = recording.load(path)
    assert_same(list(fresh_frames(pkts)), fresh_frames(pkts), roles, meta)


def test_a_live_capture_describes_its_frames_as_scapy_would(live):
    """Real loopback frames (TCP options, an HTTP exchange): ``wire.segments`` dissects
    no frame for the table, and says what dissecting every frame says."""
    import urllib.request

    with TCPServer() as echo, HTTPServer() as web, Capture(echo, web) as wire:
        echo_exchange(echo, [b"hello", b"GET / HTTP/1.1 (not really)", b"x" * 3000])
        urllib.request.urlopen(f"http://127.0.0.1:{web.port}/", timeout=5).read()
    new = wire.segments
    assert str(wire.table()) and str(wire.connections())
    assert not wire._frames._packets  # HTTP lines are read from the bytes too
    old = segments(list(wire.packets), wire.roles, wire.meta)
    assert len(new) > 10 and facts(new) == facts(old)
    assert str(Table(new)) == str(Table(old)) and str(Connections(new)) == str(Connections(old))


def test_only_frames_a_view_needs_are_dissected():
    pkts = made.conversation()  # 8 packets: 2 with a payload
    frames = fresh_frames(pkts)
    segs = segments(frames, {8080: "server"})
    assert len(segs) == 8
    assert len(frames._packets) <= 2
    assert bytes(segs[0].packet) == bytes(pkts[0])  # still there when a view asks
    assert segs[0].packet is frames[0]


def test_segment_packet_defaults_to_none_and_can_be_set():
    seg = Segment(0, 0.0, "client", "server", "UDP")
    assert seg.packet is None
    pkt = made.conversation()[0]
    assert replace(seg, packet=pkt).packet is pkt
    assert Segment(0, 0.0, "a", "b", "TCP", packet=pkt).packet is pkt


def _udp(sport, dport, payload, t=0.0, src="127.0.0.1", dst="127.0.0.1"):
    pkt = Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload
    pkt.time = t
    return pkt


def _icmp_quoting(inner, t):
    pkt = Ether(bytes(Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / ICMP(type=3, code=3)
                      / inner[IP]))
    pkt.time = t
    return pkt


def _v6(sport, dport, flags, seq, ack=0, payload=b"", t=0.0):
    pkt = Ether() / IPv6(src="::1", dst="::1") / TCP(sport=sport, dport=dport, flags=flags,
                                                     seq=seq, ack=ack) / payload
    pkt.time = t
    return pkt


def _odd_cases() -> dict[str, list]:
    c, s = made.C, made.S
    dgram = _udp(40000, 9999, b"hi", 1.0)
    syn = made.tcp(c, s, "S", 5, t=1.0)
    query = bytes(DNS(id=7, rd=1, qd=DNSQR(qname="www.netlab.test")))
    options = [("MSS", 65495), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None),
               ("WScale", 7)]
    ip_options = Ether(bytes(Ether() / IP(src="127.0.0.1", dst="127.0.0.1",
                                          options=b"\x01\x01\x01\x00")
                             / TCP(sport=40000, dport=8080, flags="PA") / b"opts"))
    ip_options.time = 2.5
    fragment = Ether(bytes(Ether() / IP(src="127.0.0.1", dst="127.0.0.1", frag=3, proto=6)
                           / (b"x" * 24)))
    fragment.time = 2.6
    padded = Ether(bytes(made.tcp(c, s, "A", 6, 1, t=2.7)) + b"\0" * 6)
    padded.time = 2.7
    arp = Ether() / ARP()
    arp.time = 0.5
    bad_dataofs = Ether(bytes(made.tcp(c, s, "A", 6, 1, b"abc"))[:46] + b"\x20"
                        + bytes(made.tcp(c, s, "A", 6, 1, b"abc"))[47:])
    bad_dataofs.time = 2.8
    return {
        "ipv6": [_v6(40000, 8080, "S", 10, t=1.0), _v6(8080, 40000, "SA", 99, 11, t=1.1),
                 _v6(40000, 8080, "PA", 11, 100, b"GET / HTTP/1.1\r\n\r\n", t=1.2),
                 _v6(8080, 40000, "PA", 100, 29, b"HTTP/1.1 200 OK\r\n\r\nhi", t=1.3)],
        "icmp quoting udp": [dgram, _icmp_quoting(dgram, 1.1)],
        "icmp quoting tcp": [syn, _icmp_quoting(syn, 1.1)],
        "tcp options": [made.tcp(c, s, "S", 5, t=1.0, options=options),
                        made.tcp(s, c, "SA", 9, 6, t=1.1, options=options[:2]),
                        made.tcp(c, s, "PA", 6, 10, b"data" * 30, t=1.2,
                                 options=[("Timestamp", (2, 3))]),
                        made.tcp(c, s, "A", 6, 10, t=1.3, options=[(99, b"\x01\x02")])],
        "retransmission": made.retransmission(),
        "reused port": made.reused_ports(),
        "syn retransmitted": made.syn_retransmitted(),
        "refused": made.refused(),
        "mid stream": made.mid_stream_server_first(),
        "mid stream ack": made.mid_stream_bare_ack_first(),
        "dns": [_udp(40000, 5353, query, 1.0), _udp(5353, 40000, b"short", 1.1),
                _udp(40000, 53, query, 1.2), _udp(53, 40000, b"x" * 30, 1.3)],
        "unusual frames": [arp, *made.conversation()[:3], ip_options, fragment, padded,
                           bad_dataofs, dgram],
        "timestamps out of order": [made.tcp(c, s, "S", 5, t=3.0),
                                    made.tcp(s, c, "SA", 9, 6, t=2.999999)],
        "binary payloads": [made.tcp(c, s, "PA", 1, 1, bytes(range(256)), t=1.0),
                            made.tcp(c, s, "PA", 257, 1, b"\x16\x03\x01\x00", t=1.1),
                            made.tcp(c, s, "PA", 261, 1, b"HTTP/1.1 101 websocket", t=1.2)],
    }


CASES = _odd_cases()


@pytest.mark.parametrize("case", list(CASES))
def test_synthetic_cases(case):
    pkts = [Ether(bytes(p)) for p in CASES[case]]  # dissected as a capture would
    for pkt, made_one in zip(pkts, CASES[case], strict=True):
        pkt.time = made_one.time
    roles = {8080: "server", 9999: "nobody", 53: "dns", 5353: "mdns"}
    assert_same(pkts, Frames.of_packets(pkts), roles)
    assert_same(list(fresh_frames(pkts)), fresh_frames(pkts), roles)
