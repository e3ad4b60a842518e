"""A small authoritative DNS server on loopback, over UDP and TCP, that real resolvers accept.

    >>> with DNSServer({"www.netlab.test": "127.0.0.7"}) as dns:
    ...     q = dnslib.DNSRecord.question("www.netlab.test")
    ...     sock.sendto(q.pack(), dns.address)

    >>> DNSServer(zone=".", delegate={"test": {"ns.nic.test": "10.0.3.5"}})   # a root
    >>> DNSServer({"www.netlab.test": ["10.0.5.7", "fd00:10:0:5::7"]}, zone="netlab.test")

It answers A and AAAA questions for the names it was given (NXDOMAIN for others); given a
``zone`` it answers as that zone's authority: referrals with glue for the child zones it
``delegate``s, and its SOA record with every negative answer (:mod:`labkit.servers.zone`).
Messages are built and parsed with dnslib, on one port over both transports (RFC 1035 4.2): a UDP
datagram per message, and on TCP each message after its two-byte length (RFC 7766).
A reply bigger than the client can take over UDP - 512 bytes, or the size its EDNS
record offers (RFC 6891) - goes out truncated: the TC bit set and no answers, so the
client asks again over TCP, where this server answers it in full.  A query with an
EDNS(0) record gets one back; no reply claims DNSSEC (the AD bit is never set).

Garbage gets a FORMERR answer (when it is long enough to carry a query id) and the
server keeps serving; like real servers it answers exactly one question per query,
and it never answers a response (two servers could otherwise answer each other forever).
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

from dnslib import EDNS0, QTYPE, RCODE, RR, DNSHeader, DNSRecord
from dnslib.dns import DNSBuffer

from labkit.servers.base import Endpoint, Kept
from labkit.servers.conversation import _Heard, content_digest, conversation_entry
from labkit.servers.tcp import TCPServer
from labkit.servers.udp import UDPServer
from labkit.servers.zone import Answer, Zone

__all__ = ["DNSServer"]

UDP_LIMIT = 512          # bytes a DNS reply over UDP may have without EDNS (RFC 1035 2.3.4)
EDNS_PAYLOAD = 1232      # the UDP payload this server offers in its OPT record (DNS flag day 2020)
MAX_UDP_PAYLOAD = 65507  # the most one IPv4 UDP datagram carries
TCP_LIMIT = 65535        # a message after a two-byte length
TCP_IDLE = 10.0          # seconds a TCP client may wait between queries (RFC 7766 6.2.3)
MESSAGE_TIMEOUT = 5.0    # seconds for one whole message on TCP, once its first byte came
QUERY_LOG = 10_000       # (name, type) entries kept in DNSServer.queries
PORT_TRIES = 20          # port=0: UDP ports tried until the same TCP port is free too
BADVERS = 16             # extended RCODE: an EDNS version this server does not speak


class DNSServer(UDPServer):
    """Answer A/AAAA questions for ``records`` ({name: address or [addresses]}).

    ``zone`` ("netlab.test", "test", "." for the root): answer as its authority, with
    referrals to the child zones in ``delegate`` ({child: {name server: address or
    [addresses]}}) and the zone's SOA (its MINIMUM: ``negative_ttl``) in negative answers;
    questions outside it are REFUSED.  ``ttl``: of every record.
    A :class:`UDPServer` on ``host``/``port`` (default 127.0.0.1, any free port; a
    lesson can ask for ``port=textbook_port(53)``) that also listens on the same TCP
    port.  ``queries`` lists ``(name, type)`` of the first 10,000 questions answered
    (``queries.dropped`` counts the rest); ``malformed`` counts messages that were not
    a DNS query (answered FORMERR when they carry a query id); ``truncated`` the UDP
    replies sent with TC set; ``tcp_queries`` the queries that came over TCP.

    Attributes:
        zone: the records it answers for: ``{'www.netlab.test.': [IPv4Address(...)]}``
        ttl: the time to live of each answer, in seconds
        queries: ``(name, type)`` of the questions answered, the first 10,000
        malformed: messages that were not a DNS query
        truncated: UDP replies sent with TC set (too big for the client's limit)
        tcp_queries: queries that came over TCP
        recursive: False: it answers for its zone alone (``aa`` set, ``ra`` clear); a
            :class:`~labkit.servers.resolver.DNSResolver` is True
    """

    speaks = "DNS (RFC 1035): a message per UDP datagram, or after a 2-byte length on TCP"

    def __init__(self, records: dict[str, Any] | None = None, *, zone: str | None = None,
                 delegate: dict[str, dict[str, Any]] | None = None, ttl: int = 300,
                 negative_ttl: int = 60, host: str = "127.0.0.1", port: int = 0,
                 name: str = "dns"):
        given: Any = {} if records is None and zone is not None else records  # (checked)
        self.zone = Zone(given, zone, delegate=delegate, ttl=ttl, negative_ttl=negative_ttl)
        self.ttl = self.zone.ttl
        super().__init__(self._answer_datagram, host=host, port=port, name=name)
        self.speaks = type(self).speaks
        self.truncated = 0     # UDP replies sent with TC set (too big for the client's limit)
        self.tcp_queries = 0
        self.queries: Kept = Kept(QUERY_LOG, f"DNSServer {name!r}", "queries")
        self.malformed = 0
        self._tcp: _DNSOverTCP | None = None

    # -- the lifecycle: one port, both transports -------------------------------------
    def _start(self) -> None:
        for attempt in range(PORT_TRIES):
            udp = self._bind()
            tcp = _DNSOverTCP(self, udp.getsockname()[1])
            try:
                tcp.__enter__()
            except OSError as exc:
                udp.close()
                if exc.errno != errno.EADDRINUSE or attempt == PORT_TRIES - 1:
                    raise
                if self._requested_port:
                    raise OSError(exc.errno, f"{self.name}: TCP port {self._requested_port} is "
                                  "in use (its UDP port is free); a DNSServer answers on both: "
                                  "pick a port free for both, or port=0") from exc
                continue  # another program has this TCP port: try another UDP port
            self._sock, self._tcp = udp, tcp
            self._spawn(self._receive_loop, udp)
            return

    def _close(self) -> None:
        try:
            if self._tcp is not None:
                self._tcp.stop()   # kept: conversation() still reads what it counted
        finally:
            super()._close()

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Its two sockets, on one port: DNS over UDP and DNS over TCP."""
        host, port = self.address
        return (Endpoint("udp", host, port, self.name, "DNS over UDP"),
                Endpoint("tcp", host, port, self.name,
                         "DNS over TCP, each message after its 2-byte length"))

    # -- answering ------------------------------------------------------------------------
    def _answer_datagram(self, data: bytes, addr: object) -> bytes | None:
        return self.respond(data, tcp=False)

    def respond(self, data: bytes, *, tcp: bool) -> bytes | None:
        """The reply to one DNS message (without TCP's length prefix), or None for none."""
        try:
            if DNSHeader.parse(DNSBuffer(data)).q != 1:  # checked first: cheap to refuse
                raise ValueError("a query has exactly one question")
            query = DNSRecord.parse(data)
            options = [rr for rr in query.ar if rr.rtype == QTYPE.OPT]
            if len(options) > 1:  # RFC 6891 6.1.1: more than one OPT is FORMERR
                raise ValueError("more than one OPT record")
        except Exception:  # noqa: BLE001 - dnslib raises DNSError, struct or index errors on garbage
            with self._lock:
                self.malformed += 1
            if len(data) < 3 or data[2] & 0x80:
                return None  # no query id to answer to, or a response: never answered
            qid = int.from_bytes(data[:2], "big")
            return bytes(DNSRecord(DNSHeader(id=qid, qr=1, rcode=RCODE.FORMERR)).pack())
        if query.header.qr:
            with self._lock:
                self.malformed += 1
            return None  # a response, not a query
        if tcp:
            with self._lock:
                self.tcp_queries += 1
        edns = options[0] if options else None
        reply = self._reply(query, edns)
        if tcp:
            limit = TCP_LIMIT
        elif edns is None:
            limit = UDP_LIMIT
        else:  # RFC 6891 6.2.5: values below 512 are treated as 512
            limit = min(max(UDP_LIMIT, edns.rclass), MAX_UDP_PAYLOAD)
        return self._fit(reply, limit, tcp)

    recursive = False  # RA: a resolver (labkit.servers.resolver) says it recurses

    def _reply(self, query: DNSRecord, edns: RR | None) -> DNSRecord:
        # A fresh header, not the query's bits: the same id, opcode, RD and CD (RFC 1035
        # 4.1.1, RFC 4035 3.1.6); AA as the zone's authority; RA only from a resolver;
        # never AD (no DNSSEC: nothing is authenticated, RFC 4035 3.2.3), TC, Z or a stray
        # RCODE.
        h = query.header
        reply = DNSRecord(DNSHeader(id=h.id, qr=1, opcode=h.opcode, aa=not self.recursive,
                                    ra=self.recursive, rd=h.rd, cd=h.cd), q=query.q)
        if edns is not None:
            version = (edns.ttl >> 16) & 0xFF
            # our OPT: the UDP size we take, the DO bit copied (RFC 3225 3)
            reply.add_ar(EDNS0(udp_len=EDNS_PAYLOAD, flags="do" if edns.edns_do else "",
                               ext_rcode=BADVERS >> 4 if version else 0))
            if version:  # RFC 6891 6.1.3: BADVERS, and no answer
                return reply
        if query.header.opcode != 0:
            reply.header.rcode = RCODE.NOTIMP
            return reply
        question = query.q
        qname, qtype = str(question.qname).lower(), QTYPE[question.qtype]
        self.queries.append((qname, qtype))
        if question.qclass not in (1, 255):   # IN, or ANY: this zone has no other class
            reply.header.rcode = RCODE.REFUSED
            return reply
        found = self.answer(qname, qtype)
        reply.header.rcode, reply.header.aa = found.rcode, found.aa and not self.recursive
        for section, records in ((reply.rr, found.answer), (reply.auth, found.authority)):
            section.extend(records)
        reply.ar[:0] = found.additional  # before our OPT record, as servers put it
        return reply

    def answer(self, qname: str, qtype: str) -> Answer:
        """What this server says to one question (the zone's answer; a resolver's own)."""
        return self.zone.answer(qname, qtype)

    def _fit(self, reply: DNSRecord, limit: int, tcp: bool) -> bytes:
        """The reply packed; truncated (TC, no answers, its OPT kept) if it is over ``limit``."""
        packed = bytes(reply.pack())
        if len(packed) <= limit:
            return packed
        if not tcp:
            with self._lock:
                self.truncated += 1  # the client asks again over TCP, where it fits
        short = DNSRecord(DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap, tc=1),
                          questions=reply.questions,
                          ar=[rr for rr in reply.ar if rr.rtype == QTYPE.OPT])
        return bytes(short.pack())

    # -- what it saw (replay compares it with a recording) --------------------------------
    def conversation_mark(self) -> tuple[int, int, int]:  # type: ignore[override]
        """A point to count from: pass it to :meth:`conversation` as ``since``."""
        udp_in, udp_out = super().conversation_mark()
        return udp_in, udp_out, self._tcp.conversation_mark() if self._tcp else 0

    def conversation(self, since: tuple[int, ...] = (0, 0, 0),
                     settle: float = 0.0) -> dict[str, Any] | None:
        """Datagrams each way and TCP connections after ``since``, as one entry."""
        datagrams = self._datagrams((since[0], since[1]), settle)
        connections = self._tcp._connections(since[2], settle) if self._tcp else []
        if datagrams is None or connections is None:
            return None
        came, went = datagrams
        digests = [digest for _in, _out, digest, *_split in connections] + [d for _s, d in came]
        known = [d for d in digests if d is not None]
        return conversation_entry([(r, w) for r, w, *_rest in connections], [s for s, _d in came],
                                  went, content_digest(known) if len(known) == len(digests)
                                  else None, [c[3] for c in connections],
                                  [c[4] for c in connections])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.zone.origin or self.zone.names()}>"


class _DNSOverTCP(TCPServer):
    """A DNSServer's TCP side: the same zone and answers, each message after its length."""

    def __init__(self, dns: DNSServer, port: int):
        super().__init__(self._serve_queries, host=dns.host, port=port,
                         name=f"{dns.name[:60]}-tcp")
        self.speaks = "DNS over TCP"
        self._dns = dns

    def record_error(self, exc: BaseException) -> None:
        self._dns.record_error(exc)  # the DNSServer's owner hears of it

    def _serve_queries(self, conn: socket.socket, addr: object) -> None:
        heard = self.hearing(conn)
        try:
            while (message := self._message(conn, heard)) is not None:
                reply = self._dns.respond(message, tcp=True)
                if reply is None:
                    return  # nothing to answer (not even a query id): close
                conn.sendall(len(reply).to_bytes(2, "big") + reply)
        except OSError:
            return  # idle or stalled past its deadline, or reset: the client's doing

    @staticmethod
    def _message(conn: socket.socket, heard: _Heard | None) -> bytes | None:
        """The next message, its length prefix removed; None once the client is done.

        A client may wait ``TCP_IDLE`` seconds before a message; once its first byte came,
        the whole message must arrive within ``MESSAGE_TIMEOUT`` (a trickle is let go).
        """
        conn.settimeout(TCP_IDLE)
        data, need, deadline = bytearray(), 2, None
        while len(data) < need:
            piece = conn.recv(need - len(data))
            if not piece:
                return None  # closed between messages, or in the middle of one
            if heard is not None:
                heard.update(piece)
            data += piece
            if len(data) >= 2:
                need = 2 + int.from_bytes(data[:2], "big")
            deadline = deadline or time.monotonic() + MESSAGE_TIMEOUT
            conn.settimeout(max(0.001, deadline - time.monotonic()))
        return bytes(data[2:])
