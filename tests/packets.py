"""Hand-built packets for tests of flows and views: no network needed.

    >>> [p.sprintf("%TCP.flags%") for p in conversation()][:3]
    ['S', 'SA', 'A']

The cases below trip relative numbering up; tests/test_tshark_diff.py holds labkit's
numbers for each against tshark's.
"""

from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.l2 import ARP, Ether

C, S = ("127.0.0.1", 40000), ("127.0.0.1", 8080)
ISN_C, ISN_S = 1_000_000, 4_294_967_000  # the server's numbers wrap around 2**32


def tcp(src, dst, flags, seq, ack=0, payload=b"", t=0.0, *, window=8192, options=(), ip_id=1):
    pkt = Ether() / IP(src=src[0], dst=dst[0], id=ip_id) / TCP(
        sport=src[1], dport=dst[1], flags=flags, seq=seq % 2**32, ack=ack % 2**32,
        window=window, options=list(options)) / payload
    pkt.time = t
    return pkt


def conversation(isn_c=ISN_C, isn_s=ISN_S, t=10.0):
    """An echo of b'hello' from handshake to teardown, 8 packets, the first at time ``t``."""
    return [
        tcp(C, S, "S", isn_c, t=t),
        tcp(S, C, "SA", isn_s, isn_c + 1, t=t + 0.001),
        tcp(C, S, "A", isn_c + 1, isn_s + 1, t=t + 0.002),
        tcp(C, S, "PA", isn_c + 1, isn_s + 1, b"hello", t=t + 0.003),
        tcp(S, C, "PA", isn_s + 1, isn_c + 6, b"HELLO", t=t + 0.004),
        tcp(C, S, "FA", isn_c + 6, isn_s + 6, t=t + 0.005),
        tcp(S, C, "FA", isn_s + 6, isn_c + 7, t=t + 0.006),
        tcp(C, S, "A", isn_c + 7, isn_s + 7, t=t + 0.007),
    ]


def retransmission():
    """The echo's request sent twice (its ACK came late), then new bytes."""
    return [*conversation()[:4],
            tcp(C, S, "PA", ISN_C + 1, ISN_S + 1, b"hello", t=10.2),   # the same 5 bytes again
            tcp(S, C, "A", ISN_S + 1, ISN_C + 6, t=10.201),
            tcp(C, S, "PA", ISN_C + 6, ISN_S + 1, b"more", t=10.3)]


def reused_ports():
    """Two whole connections from the same client port: new ISNs on both sides."""
    return conversation() + conversation(ISN_C + 77_000, 123_456, t=20.0)


def syn_retransmitted():
    """The client's SYN again with the same ISN: the same connection, not a new one."""
    first = conversation()
    return [first[0], tcp(C, S, "S", ISN_C, t=10.0005), *first[1:]]


def refused():
    """A SYN to a closed port, answered by RST-ACK with seq 0."""
    return [tcp(C, S, "S", ISN_C, t=10.0), tcp(S, C, "RA", 0, ISN_C + 1, t=10.001)]


def mid_stream_server_first():
    """A capture begun after the request: the server's reply is the first packet."""
    return conversation()[4:]


def mid_stream_bare_ack_first():
    """A capture begun with the client's bare ACK of bytes the server sends again next."""
    return [tcp(C, S, "A", ISN_C + 6, ISN_S + 1, t=10.0035), *conversation()[4:]]


# -- the network layer: lab hosts client 10.0.0.1, r1 10.0.0.2 / 10.0.1.2, server 10.0.1.3 --
MAC_C, MAC_R1 = "02:00:0a:00:00:01", "02:00:0a:00:00:02"


def _timed(pkts: list, t: float = 10.0) -> list:
    """The packets as a capture reads them (bytes, dissected again), 1 ms apart."""
    out = []
    for n, pkt in enumerate(pkts):
        again = Ether(bytes(pkt))
        again.time = t + n / 1000
        out.append(again)
    return out


def arp_then_traceroute():
    """The client asks for its router's MAC, then probes with TTL 1 and 2: a Time Exceeded
    from r1, a port unreachable from the server; a ping, and a "fragmentation needed"."""
    probe = lambda ttl: IP(src="10.0.0.1", dst="10.0.1.3", ttl=ttl, id=ttl) / UDP(  # noqa: E731
        sport=40000, dport=33433 + ttl) / b"probe"
    return _timed([
        Ether(src=MAC_C, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=MAC_C, psrc="10.0.0.1",
                                                        pdst="10.0.0.2"),
        Ether(src=MAC_R1, dst=MAC_C) / ARP(op=2, hwsrc=MAC_R1, psrc="10.0.0.2", hwdst=MAC_C,
                                           pdst="10.0.0.1"),
        Ether(src=MAC_C, dst=MAC_R1) / probe(1),
        Ether(src=MAC_R1, dst=MAC_C) / IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(
            type=11, code=0) / probe(1),
        Ether(src=MAC_C, dst=MAC_R1) / probe(2),
        Ether(src=MAC_R1, dst=MAC_C) / IP(src="10.0.1.3", dst="10.0.0.1") / ICMP(
            type=3, code=3) / probe(2),
        Ether(src=MAC_C, dst=MAC_R1) / IP(src="10.0.0.1", dst="10.0.1.3") / ICMP(
            type=8, id=7, seq=1) / b"ping",
        Ether(src=MAC_R1, dst=MAC_C) / IP(src="10.0.1.3", dst="10.0.0.1") / ICMP(
            type=0, id=7, seq=1) / b"ping",
        Ether(src=MAC_R1, dst=MAC_C) / IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(
            type=3, code=4, nexthopmtu=1280) / IP(src="10.0.0.1", dst="10.0.1.3", flags="DF",
                                                   len=1428) / UDP(sport=40000, dport=9000),
    ])


def fragments_out_of_order():
    """A 4,000-byte UDP datagram in three fragments, the last first; a second datagram
    whose middle fragment never comes (never whole)."""
    whole = IP(src="10.0.0.1", dst="10.0.1.3", id=4711) / UDP(sport=40000, dport=9000) / (
        b"x" * 4000)
    lost = IP(src="10.0.0.1", dst="10.0.1.3", id=4712) / UDP(sport=40000, dport=9000) / (
        b"y" * 4000)
    first, middle, last = fragment(whole, 1480)
    other = fragment(lost, 1480)
    return _timed([Ether(src=MAC_C, dst=MAC_R1) / p
                   for p in (last, first, other[0], middle, other[2])])


# -- IPv6: the same hosts' unique local addresses, fd00:10::1 and so on ---------------------
C6, R6, S6 = "fd00:10::1", "fd00:10::2", "fd00:10:0:1::3"


def neighbour_discovery_then_errors6():
    """The client solicits its router (ARP's twin, to the solicited-node group), which
    advertises its MAC; a UDP probe with hop limit 1 earns a Time Exceeded, one to a closed
    port a port unreachable, one too big a Packet Too Big; a ping6 and its reply; an MLD
    report; a TCP handshake over IPv6."""
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import (
        ICMPv6DestUnreach,
        ICMPv6EchoReply,
        ICMPv6EchoRequest,
        ICMPv6MLReport2,
        ICMPv6ND_NA,
        ICMPv6ND_NS,
        ICMPv6NDOptDstLLAddr,
        ICMPv6NDOptSrcLLAddr,
        ICMPv6PacketTooBig,
        ICMPv6TimeExceeded,
        IPv6,
        IPv6ExtHdrHopByHop,
        RouterAlert,
    )

    def probe(hlim, size=5):
        return IPv6(src=C6, dst=S6, hlim=hlim) / UDP(sport=40000, dport=33433 + hlim) / (
            b"p" * size)

    to_r1, to_c = Ether(src=MAC_C, dst=MAC_R1), Ether(src=MAC_R1, dst=MAC_C)
    return _timed([
        Ether(src=MAC_C, dst="33:33:ff:00:00:02") / IPv6(src=C6, dst="ff02::1:ff00:2",
                                                         hlim=255)
        / ICMPv6ND_NS(tgt=R6) / ICMPv6NDOptSrcLLAddr(lladdr=MAC_C),
        to_c / IPv6(src=R6, dst=C6, hlim=255) / ICMPv6ND_NA(tgt=R6, R=1, S=1, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=MAC_R1),
        to_r1 / probe(1),
        to_c / IPv6(src=R6, dst=C6) / ICMPv6TimeExceeded(code=0) / probe(1),
        to_r1 / probe(2),
        to_c / IPv6(src=S6, dst=C6) / ICMPv6DestUnreach(code=4) / IPv6(
            src=C6, dst=S6, hlim=1) / UDP(sport=40000, dport=33435) / b"ppppp",
        to_r1 / probe(64, 1400),
        to_c / IPv6(src=R6, dst=C6) / ICMPv6PacketTooBig(mtu=1280) / probe(64, 1400),
        to_r1 / IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(id=7, seq=1, data=b"ping"),
        to_c / IPv6(src=S6, dst=C6) / ICMPv6EchoReply(id=7, seq=1, data=b"ping"),
        Ether(src=MAC_C, dst="33:33:00:00:00:16") / IPv6(src="fe80::aff:fe00:1",
                                                         dst="ff02::16", hlim=1)
        / IPv6ExtHdrHopByHop(options=[RouterAlert()]) / ICMPv6MLReport2(),
        to_r1 / IPv6(src=C6, dst=S6) / TCP(sport=40001, dport=80, flags="S", seq=1000),
        to_c / IPv6(src=S6, dst=C6) / TCP(sport=80, dport=40001, flags="SA", seq=5000,
                                          ack=1001),
        to_r1 / IPv6(src=C6, dst=S6) / TCP(sport=40001, dport=80, flags="A", seq=1001,
                                           ack=5001),
    ])
