"""Hand-built packets for tests of flows and views: no network needed.

    >>> [p.sprintf("%TCP.flags%") for p in conversation()][:3]
    ['S', 'SA', 'A']
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


def conversation():
    """An echo of b'hello' from handshake to teardown, 8 packets."""
    return [
        tcp(C, S, "S", ISN_C, t=10.0),
        tcp(S, C, "SA", ISN_S, ISN_C + 1, t=10.001),
        tcp(C, S, "A", ISN_C + 1, ISN_S + 1, t=10.002),
        tcp(C, S, "PA", ISN_C + 1, ISN_S + 1, b"hello", t=10.003),
        tcp(S, C, "PA", ISN_S + 1, ISN_C + 6, b"HELLO", t=10.004),
        tcp(C, S, "FA", ISN_C + 6, ISN_S + 6, t=10.005),
        tcp(S, C, "FA", ISN_S + 6, ISN_C + 7, t=10.006),
        tcp(C, S, "A", ISN_C + 7, ISN_S + 7, t=10.007),
    ]
