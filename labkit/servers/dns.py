"""A small authoritative DNS server on loopback, for watching a real UDP protocol.

    >>> with DNSServer({"www.netlab.test": "127.0.0.7"}) as dns:
    ...     q = dnslib.DNSRecord.question("www.netlab.test")
    ...     sock.sendto(q.pack(), dns.address)

It answers A and AAAA questions for the names it was given (NXDOMAIN for others),
built and parsed with dnslib.  A datagram that is not DNS gets a FORMERR answer (when
it is long enough to carry a query id) and the server keeps serving.  Like real
servers it answers exactly one question per query (FORMERR otherwise), and a reply
bigger than the client can take over UDP (512 bytes, or the size its EDNS record
offers) goes out truncated: the TC bit set and no answers, so the client knows to ask
again over TCP (RFC 1035 4.2.1, RFC 6891).  A DNSServer runs once, like every labkit
server: entering it again raises ``RuntimeError``.
"""

from __future__ import annotations

import ipaddress

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSHeader, DNSRecord
from dnslib.dns import DNSBuffer

from labkit.servers.base import log
from labkit.servers.udp import UDPServer

__all__ = ["DNSServer"]

UDP_LIMIT = 512        # bytes a DNS reply over UDP may have without EDNS (RFC 1035)
MAX_UDP_PAYLOAD = 65507


def _zone(records) -> dict[str, list]:
    if not isinstance(records, dict) or not records:
        raise TypeError(
            "records must be a non-empty dict like {'www.netlab.test': '127.0.0.7'}, "
            f"not {records!r}"
        )
    zone: dict[str, list] = {}
    for name, values in records.items():
        if not isinstance(name, str) or not name.strip(". "):
            raise ValueError(f"record names must be domain names like 'www.netlab.test', "
                             f"not {name!r}")
        if isinstance(values, str):
            values = [values]
        addresses = []
        for value in values:
            try:
                addresses.append(ipaddress.ip_address(value))
            except (ValueError, TypeError):
                raise ValueError(
                    f"{name!r} maps to {value!r}, which is not an IP address; "
                    "give addresses like '127.0.0.7' or '2001:db8::7'"
                ) from None
        zone[name.lower().rstrip(".") + "."] = addresses
    return zone


class DNSServer(UDPServer):
    """Answer A/AAAA questions for ``records`` ({name: address or [addresses]}).

    A :class:`UDPServer` on ``host``/``port`` (default 127.0.0.1, any free port; a
    lesson can ask for ``port=textbook_port(53)``).  ``queries`` lists ``(name, type)``
    of every question answered, in order; ``malformed`` counts datagrams that were
    not a DNS query (answered FORMERR when they carry a query id).
    """

    def __init__(self, records: dict, *, ttl: int = 300, host: str = "127.0.0.1",
                 port: int = 0, name: str = "dns"):
        self.zone = _zone(records)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl < 2**31:
            raise ValueError(f"ttl must be whole seconds from 0 to 2**31-1, not {ttl!r}")
        super().__init__(self._answer, host=host, port=port, name=name)
        self.ttl = ttl
        self.truncated = 0     # replies sent with TC set (too big for the client's UDP limit)
        self.queries: list[tuple[str, str]] = []
        self.malformed = 0

    @property
    def roles(self) -> dict[int, str]:
        return {self.port: self.name}

    def _answer(self, data: bytes, addr) -> bytes | None:
        try:
            if DNSHeader.parse(DNSBuffer(data)).q != 1:  # checked first: cheap to refuse
                raise ValueError("a query has exactly one question")
            query = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - dnslib raises DNSError, struct or index errors on garbage
            self.malformed += 1
            if len(data) < 2:
                return None  # not even a query id to answer to
            qid = int.from_bytes(data[:2], "big")
            return DNSRecord(DNSHeader(id=qid, qr=1, rcode=RCODE.FORMERR)).pack()
        return self._fit(query, self._reply(query))

    def _fit(self, query: DNSRecord, reply: DNSRecord) -> bytes:
        """The reply packed, truncated (TC, no answers) if the client cannot take it all."""
        packed = reply.pack()
        edns = [rr.rclass for rr in query.ar if rr.rtype == QTYPE.OPT]
        limit = min(max(UDP_LIMIT, edns[0] if edns else 0), MAX_UDP_PAYLOAD)
        if len(packed) <= limit:
            return packed
        self.truncated += 1
        log.warning("%s: a %d-byte answer is over the client's %d-byte UDP limit: "
                    "sent truncated (TC)", self.name, len(packed), limit)
        short = DNSRecord(DNSHeader(id=reply.header.id, qr=1, aa=1, ra=0, tc=1,
                                    rcode=reply.header.rcode), questions=reply.questions)
        return short.pack()

    def _reply(self, query: DNSRecord) -> DNSRecord:
        reply = query.reply()  # same id and question, qr=1, aa=1
        reply.header.ra = 0    # authoritative only: no recursion offered
        if query.header.qr or query.header.opcode != 0:
            reply.header.rcode = RCODE.NOTIMP if not query.header.qr else RCODE.FORMERR
            return reply
        for question in query.questions:
            qname = str(question.qname).lower()
            qtype = QTYPE[question.qtype]
            self.queries.append((qname, qtype))
            if qname not in self.zone:
                reply.header.rcode = RCODE.NXDOMAIN
                continue
            for ip in self.zone[qname]:
                if qtype in ("A", "ANY") and ip.version == 4:
                    reply.add_answer(RR(qname, QTYPE.A, rdata=A(str(ip)), ttl=self.ttl))
                elif qtype in ("AAAA", "ANY") and ip.version == 6:
                    reply.add_answer(RR(qname, QTYPE.AAAA, rdata=AAAA(str(ip)), ttl=self.ttl))
        return reply

    def __repr__(self):
        return f"<DNSServer {sorted(self.zone)}>"
