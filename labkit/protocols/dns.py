"""DNS in captures: every UDP payload that is exactly one DNS message, on any port.

    >>> DNSView().describe(query_bytes, pkt)
    'DNS query id=7 www.netlab.test. A'

Parsed with dnslib, strictly (:func:`parse_dns`), because it is tried on every UDP
payload of a capture: a datagram that merely starts like DNS stays plain bytes.
"""

from __future__ import annotations

from dnslib import QTYPE, RCODE, RR, DNSHeader, DNSQuestion, DNSRecord
from dnslib.dns import DNSBuffer

from labkit.protocols.base import ProtocolView

__all__ = ["DNSView", "parse_dns", "describe_dns"]


def parse_dns(payload: bytes) -> DNSRecord | None:
    """The DNS message in a UDP payload, or None if it is not exactly one DNS message.

    Strict on purpose (it describes every UDP payload in a capture): opcode QUERY,
    1-4 questions, every section parses and nothing is left over.
    """
    if len(payload) < 17:  # a 12-byte header and the shortest question
        return None
    try:
        buf = DNSBuffer(payload)
        header = DNSHeader.parse(buf)
        if header.opcode != 0 or not 1 <= header.q <= 4 or header.a + header.auth + header.ar > 64:
            return None
        counts = header.q, header.a, header.auth, header.ar  # DNSRecord() recounts them
        questions = [DNSQuestion.parse(buf) for _ in range(counts[0])]
        sections = [[RR.parse(buf) for _ in range(n)] for n in counts[1:]]
        if buf.remaining():
            return None
        return DNSRecord(header, questions=questions, rr=sections[0], auth=sections[1],
                         ar=sections[2])
    except Exception:  # noqa: BLE001 - not DNS
        return None


def describe_dns(payload: bytes, pkt) -> str | None:
    """Table summary for a DNS message on any UDP port: ``DNS query id=7 www.x. A``.

    ``pkt`` None: the caller knows ``payload`` is a UDP datagram's (a capture reading
    headers from bytes: see ``ProtocolView.needs_packet``)."""
    from scapy.layers.inet import UDP

    if (pkt is not None and UDP not in pkt) or (record := parse_dns(payload)) is None:
        return None
    h = record.header
    q = record.questions[0]
    text = f"DNS {'response' if h.qr else 'query'} id={h.id} {q.qname} {QTYPE[q.qtype]}"
    if h.qr and h.rcode:
        text += f" {RCODE[h.rcode]}"
    if record.rr:
        text += " → " + ", ".join(str(rr.rdata) for rr in record.rr)
    return text


class DNSView(ProtocolView):
    name = "DNS"
    needs_packet = False  # given None for pkt only for a UDP payload (might_recognise)

    def recognises(self, payload: bytes, pkt) -> bool:
        return describe_dns(payload, pkt) is not None

    def might_recognise(self, payload: bytes, proto: str) -> bool:
        return proto == "UDP" and len(payload) >= 17  # what describe_dns could accept

    def describe(self, payload: bytes, pkt) -> str:
        text = describe_dns(payload, pkt)
        if text is None:
            raise ValueError("not a DNS message: describe() is for what recognises() accepted")
        return text
