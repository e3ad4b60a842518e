"""Conversation facts from hand-built packets: no network needed."""

from packets import C, S, conversation, tcp
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether

from labkit import flag_names
from labkit.capture.flows import TcpTracker, segments


def test_flag_names_follow_wireshark():
    assert [flag_names(f) for f in ("S", "SA", "A", "PA", "FA", "R", "RA", "FPA")] == [
        "SYN", "SYN-ACK", "ACK", "PSH-ACK", "FIN-ACK", "RST", "RST-ACK", "FIN-PSH-ACK"]


def test_relative_numbers_roles_and_labels():
    segs = segments(conversation(), {8080: "server"})
    assert [(s.src, s.dst, s.flags, s.seq, s.ack, s.length) for s in segs] == [
        ("client", "server", "SYN", 0, None, 0),
        ("server", "client", "SYN-ACK", 0, 1, 0),
        ("client", "server", "ACK", 1, 1, 0),
        ("client", "server", "PSH-ACK", 1, 1, 5),
        ("server", "client", "PSH-ACK", 1, 6, 5),
        ("client", "server", "FIN-ACK", 6, 6, 0),
        ("server", "client", "FIN-ACK", 6, 7, 0),
        ("client", "server", "ACK", 7, 7, 0),
    ]
    assert segs[0].label == "SYN seq=0"
    assert segs[3].label == "PSH-ACK len=5 seq=1 ack=1"
    assert segs[3].summary == "b'hello'"
    assert [s.time for s in segs][:2] == [0.0, 0.001]


def test_second_client_and_http_summary():
    other = ("127.0.0.1", 40001)
    pkts = [tcp(C, S, "S", 1), tcp(other, S, "S", 5),
            tcp(other, S, "PA", 6, 0, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")]
    segs = segments(pkts, {8080: "web"})
    assert [s.src for s in segs] == ["client", "client 2", "client 2"]
    assert segs[2].summary == "GET /hello HTTP/1.1"


def test_udp_and_icmp_port_unreachable():
    dgram = Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=40000, dport=9999) / b"hi"
    icmp = (Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / ICMP(type=3, code=3)
            / IP(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=40000, dport=9999) / b"hi")
    icmp = Ether(bytes(icmp))  # dissect as a capture would
    for p in (dgram, icmp):
        p.time = 0
    segs = segments([dgram, icmp], {9999: "nobody"})
    assert [(s.src, s.dst, s.proto) for s in segs] == [
        ("client", "nobody", "UDP"), ("nobody", "client", "ICMP")]
    assert segs[1].summary == "ICMP port unreachable (quotes UDP to port 9999)"
    assert segs[0].label == "UDP len=2"


def test_tracker_waits_for_every_ack_and_both_fins():
    tracker = TcpTracker()
    states = []
    for pkt in conversation():
        tracker.add(pkt)
        states.append(tracker.settled())
    # a SYN nothing answered yet needs nothing (the client gave up, if the capture ends
    # now); settled after the handshake's ACK, unsettled while data/FINs are unacknowledged
    assert states == [True, False, True, False, False, False, False, True]


def test_tracker_does_not_wait_for_an_attempt_nobody_answered():
    tracker = TcpTracker()
    for t in (0.0, 1.0, 3.0):   # a SYN a firewall drops, sent again and again
        tracker.add(tcp(C, S, "S", 10, t=t))
    assert tracker.settled()
    tracker.add(tcp(S, C, "SA", 0, 11))      # answered after all: now it needs its ACK
    assert not tracker.settled()
    tracker.add(tcp(C, S, "A", 11, 1))
    assert tracker.settled()


def test_tracker_reset_settles_a_refused_connection():
    tracker = TcpTracker()
    tracker.add(tcp(C, S, "S", 10))
    tracker.add(tcp(S, C, "RA", 0, 11))
    assert tracker.settled()


def test_a_retransmitted_segment_is_named_not_described_again():
    from packets import ISN_C, ISN_S, C, S, tcp

    pkts = [
        *conversation()[:4],
        tcp(C, S, "PA", ISN_C + 1, ISN_S + 1, b"hello", t=10.2),   # the same 5 bytes again
        tcp(C, S, "PA", ISN_C + 6, ISN_S + 1, b"more", t=10.3),    # new bytes: not a retransmission
    ]
    segs = segments(pkts, {8080: "server"})
    assert segs[4].summary == "TCP retransmission of bytes 1 to 5"
    assert not segs[3].summary.startswith("TCP retransmission")
    assert not segs[5].summary.startswith("TCP retransmission")
    # without the handshake, sequence numbers prove nothing: hand-built or cut captures
    assert not segments(pkts[3:], {8080: "server"})[1].summary.startswith("TCP retransmission")


def test_times_never_run_backwards_down_the_table():
    pkts = conversation()
    pkts[4].time = pkts[3].time - 0.000012   # the reply stamped before the request (busy lo)
    times = [s.time for s in segments(pkts, {8080: "server"})]
    assert times == sorted(times) and times[4] == times[3]


# -- Wireshark's numbering where there is no SYN, or a second one (packet-tcp.c) --------
def test_a_new_syn_on_reused_ports_numbers_from_zero_again():
    from packets import reused_ports

    segs = segments(reused_ports(), {8080: "server"})
    assert [(s.flags, s.seq, s.ack) for s in segs[8:11]] == [
        ("SYN", 0, None), ("SYN-ACK", 0, 1), ("ACK", 1, 1)]
    assert segs[11].summary == "b'hello'"  # new bytes of the new connection, not a resend


def test_a_syn_sent_again_with_its_isn_stays_in_its_connection():
    from packets import syn_retransmitted

    segs = segments(syn_retransmitted(), {8080: "server"})
    assert [(s.flags, s.seq, s.ack) for s in segs[:4]] == [
        ("SYN", 0, None), ("SYN", 0, None), ("SYN-ACK", 0, 1), ("ACK", 1, 1)]


def test_a_side_first_seen_without_syn_counts_from_one():
    from packets import refused

    # the RST-ACK's own seq is 0: Wireshark takes seq-1 as that side's base, so it shows 1
    assert [(s.flags, s.seq, s.ack) for s in segments(refused(), {8080: "server"})] == [
        ("SYN", 0, None), ("RST-ACK", 1, 1)]


def test_a_capture_begun_mid_stream_numbers_both_sides_from_one():
    from packets import mid_stream_bare_ack_first, mid_stream_server_first

    # the client's ACK sets its own base (seq-1) and the unseen server's (ack-1)
    assert [(s.src, s.seq, s.ack) for s in segments(mid_stream_bare_ack_first(),
                                                    {8080: "server"})][:3] == [
        ("client", 1, 1), ("server", 1, 1), ("client", 1, 6)]
    assert [(s.src, s.seq, s.ack) for s in segments(mid_stream_server_first(),
                                                    {8080: "server"})][:2] == [
        ("server", 1, 1), ("client", 1, 6)]
