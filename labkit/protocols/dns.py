"""DNS in captures: a UDP payload that is exactly one DNS message, or a TCP segment that is
whole DNS messages each after its two-byte length (RFC 1035 4.2.2), on any port.

    >>> DNSView().describe(query_bytes, pkt)
    'DNS query id=7 www.netlab.test. A'
    >>> DNSView().describe(len(query_bytes).to_bytes(2, "big") + query_bytes, pkt)
    'DNS query id=7 www.netlab.test. A (over TCP)'

Parsed with dnslib, strictly (:func:`parse_dns`), because it is tried on every UDP
payload of a capture: a datagram that merely starts like DNS stays plain bytes.  (A
message split over two TCP segments is not described: each segment alone is not DNS.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dnslib import QTYPE, RCODE, RR, DNSHeader, DNSQuestion, DNSRecord
from dnslib.dns import DNSBuffer

from labkit.protocols.base import ProtocolView

if TYPE_CHECKING:
    from scapy.packet import Packet

    from labkit.protocols.base import Segment

__all__ = ["DNSView", "parse_dns", "describe_dns", "ladder_label"]


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


def _over_tcp(payload: bytes) -> list[DNSRecord] | None:
    """The messages of a TCP segment that is whole length-prefixed DNS messages, else None."""
    records = []
    while payload:
        end = 2 + int.from_bytes(payload[:2], "big")
        if len(payload) < end or (record := parse_dns(payload[2:end])) is None:
            return None
        records.append(record)
        payload = payload[end:]
    return records or None


def describe_dns(payload: bytes, pkt: Packet | None) -> str | None:
    """Table summary for DNS on any port: ``DNS query id=7 www.x. A`` (`` (over TCP)``).

    ``pkt`` None: the caller read the headers from bytes (see
    ``ProtocolView.needs_packet``); the payload's shape then tells UDP from TCP."""
    from scapy.layers.inet import TCP, UDP

    tcp = pkt is not None and TCP in pkt
    if pkt is not None and not tcp and UDP not in pkt:
        return None
    record = None if tcp else parse_dns(payload)
    more = ""
    if record is None and (pkt is None or tcp):
        records = _over_tcp(payload)
        if records is None:
            return None
        record = records[0]
        more = " (over TCP)" if len(records) == 1 else f" (over TCP, +{len(records) - 1} more)"
    if record is None:
        return None
    return _summary(record) + more


def _summary(record: DNSRecord) -> str:
    h = record.header
    q = record.questions[0]
    text = f"DNS {'response' if h.qr else 'query'} id={h.id} {q.qname} {QTYPE[q.qtype]}"
    if h.qr and h.rcode:
        text += f" {RCODE[h.rcode]}"
    if record.rr:
        text += " → " + ", ".join(str(rr.rdata) for rr in record.rr)
    return text


def ladder_label(record: DNSRecord) -> str:
    """A ladder arrow's words for a DNS message: the question, or what the answer says
    (records and TTLs, a referral and its glue, NXDOMAIN and the SOA's TTL) and its flags.

        'www.netlab.test. A?  RD'
        'referral to test.: NS ns.nic.test. + glue (TTL 300)'
    """
    h, q = record.header, record.questions[0]
    if not h.qr:
        return f"{q.qname} {QTYPE[q.qtype]}?" + ("  RD" if h.rd else "")
    flags = " ".join(flag for flag, on in (("AA", h.aa), ("RA", h.ra), ("TC", h.tc)) if on)
    head = f"{flags}: " if flags else ""
    if h.tc and not record.rr:
        return f"{head}truncated: ask again over TCP"
    if record.rr:
        data = ", ".join(str(rr.rdata) for rr in record.rr[:2])
        more = f" +{len(record.rr) - 2}" if len(record.rr) > 2 else ""
        return f"{head}{QTYPE[record.rr[0].rtype]} {data}{more} (TTL {record.rr[0].ttl})"
    soa = [rr for rr in record.auth if rr.rtype == QTYPE.SOA]
    if h.rcode or soa:
        what = RCODE[h.rcode] if h.rcode else "no data"
        tail = f", SOA (TTL {soa[0].ttl})" if soa else ""
        return f"{head}{what}{tail}"
    ns = [rr for rr in record.auth if rr.rtype == QTYPE.NS]
    if ns:
        glue = any(rr.rtype in (QTYPE.A, QTYPE.AAAA) for rr in record.ar)
        return (f"{head}referral to {ns[0].rname}: NS {ns[0].rdata}" + (" + glue" if glue else "")
                + f" (TTL {ns[0].ttl})")
    return f"{head}{RCODE[h.rcode]}, no records"


class DNSView(ProtocolView):
    name = "DNS"
    needs_packet = False  # the payload's shape tells a UDP message from TCP's framing

    def recognises(self, payload: bytes, pkt: Packet | None) -> bool:
        return describe_dns(payload, pkt) is not None

    def might_recognise(self, payload: bytes, proto: str) -> bool:
        if proto == "UDP":
            return len(payload) >= 17  # what describe_dns could accept
        # TCP: a two-byte length of at least one message, not past the segment's end
        return len(payload) >= 19 and 17 <= int.from_bytes(payload[:2], "big") <= len(payload) - 2

    def describe(self, payload: bytes, pkt: Packet | None) -> str:
        text = describe_dns(payload, pkt)
        if text is None:
            raise ValueError("not a DNS message: describe() is for what recognises() accepted")
        return text

    def label(self, seg: Segment) -> str | None:
        """A DNS message's arrow says what it asks or answers (not its id or length)."""
        if not seg.summary.startswith("DNS ") or seg.packet is None:
            return None
        from scapy.layers.inet import TCP, UDP

        pkt = seg.packet
        if UDP in pkt:
            record = parse_dns(bytes(pkt[UDP].payload))
        else:
            records = _over_tcp(bytes(pkt[TCP].payload)) if TCP in pkt else None
            record = records[0] if records else None
        if record is None:
            return None
        return ladder_label(record) + ("  (over TCP)" if UDP not in pkt else "")
