"""Hand-built packets for tests of flows and views: no network needed.

    >>> [p.sprintf("%TCP.flags%") for p in conversation()][:3]
    ['S', 'SA', 'A']

The cases below trip relative numbering up; tests/test_tshark_diff.py holds labkit's
numbers for each against tshark's.
"""

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

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
