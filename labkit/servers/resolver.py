"""A recursive DNS resolver with a cache: it walks from the root down, as real ones do.

    >>> with net.on("resolver"), DNSResolver(roots=["10.0.2.4"], host="10.0.1.3", port=53) as r:
    ...     ...                                   # stubs ask it; it asks root, TLD, authority
    >>> for step in r.log: print(step)            # every question it sent, and what came back
    >>> for entry in r.cached(): print(entry)     # what it remembers, and for how long

A stub (``getaddrinfo``, dig) asks the resolver one question with RD (recursion desired)
set; the resolver answers it from its cache or finds out (RFC 1034 5.3.3): it asks the
closest name servers it knows for the name - the root servers at first - each question
without RD; a server that is not the name's authority answers with a *referral* (the
child zone's NS records, and their addresses as glue), and the resolver asks those next,
until an authority answers: the records, NXDOMAIN, or "no data". Everything it learned
it keeps for as long as the records' TTLs allow, referrals too, so the next question
for a name in the same zone goes straight to that zone's server; negative answers for
as long as the zone's SOA says (the smaller of its TTL and its MINIMUM, RFC 2308). The
answers it gives count those TTLs down.

Upstream it speaks as a resolver should: a new random query id and source port for
every question (so an off-path attacker cannot guess them), EDNS(0) offering 1232 bytes,
TCP when an answer comes back truncated, each server given ``timeout`` seconds before
the next is tried; it believes only records about the zone it asked about (a server for
test. may not tell it about example.com: "bailiwick"). Name servers listen on port 53,
as everywhere; the resolver answers on any port, over UDP and TCP, with RA set (and
recurses whether or not a query asks it to). One question is resolved at a time (a
second waits for the first), so captures tell one walk after another. No DNSSEC, no
CNAMEs (a lab zone has none).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
import time
from dataclasses import dataclass

from dnslib import EDNS0, QTYPE, RCODE, RR, DNSRecord

from labkit.servers import arguments
from labkit.servers.base import Kept
from labkit.servers.dns import EDNS_PAYLOAD, DNSServer
from labkit.servers.zone import Answer, fqdn, within

__all__ = ["DNSResolver", "Step", "CacheEntry"]

DNS_PORT = 53            # where name servers listen: glue carries addresses, not ports
MAX_REFERRALS = 12       # referrals followed for one question before giving up (SERVFAIL)
MAX_DEPTH = 4            # name servers without glue looked up within a lookup, nested
LOG_LIMIT = 10_000       # steps kept in DNSResolver.log
ADDRESS_TYPES = ("A", "AAAA")


@dataclass(frozen=True)
class Step:
    """One question the resolver sent upstream, and what came of it.

        >>> print(step)
        asked 10.0.2.4 for www.netlab.test. A: referral to test. (ns.nic.test. at 10.0.3.5)

    Attributes:
        server: the address of the server asked
        qname: the name asked about: ``"www.netlab.test."``
        qtype: the record type asked for: ``"A"``, ``"AAAA"``, ``"NS"``
        outcome: ``"answer"``, ``"referral to test."``, ``"NXDOMAIN"``, ``"no data"``,
            ``"no answer (timed out)"``, ...
        detail: what the answer said, in a few words
        transport: ``"UDP"``, or ``"TCP"`` when a truncated reply made it ask again
        seconds: how long it waited for the answer (or before it gave up)
    """

    server: str
    qname: str
    qtype: str
    outcome: str
    detail: str = ""
    transport: str = "UDP"
    seconds: float = 0.0

    def __str__(self) -> str:
        over = "" if self.transport == "UDP" else f" over {self.transport}"
        tail = f" ({self.detail})" if self.detail else ""
        return f"asked {self.server}{over} for {self.qname} {self.qtype}: {self.outcome}{tail}"


@dataclass(frozen=True)
class CacheEntry:
    """One name and type the resolver remembers: ``ttl`` seconds left, and what it says.

    Attributes:
        name: the name: ``"www.netlab.test."``
        type: the record type (``"*"``: every type, for a name that does not exist)
        ttl: seconds left before the resolver forgets it
        says: ``"10.0.5.7"``, ``"ns.netlab.test."``, ``"NXDOMAIN"``, ``"no data"``;
            `` (glue)`` after a name server's address learned from a referral
    """

    name: str
    type: str
    ttl: int
    says: str

    def __str__(self) -> str:
        return f"{self.name:24} {self.type:5} {self.ttl:5} s  {self.says}"


@dataclass
class _Cached:
    records: list[RR]      # as they came (their TTLs as given); for negative answers the SOA
    stored: float          # time.monotonic() when they came
    ttl: int               # how long they are kept
    rcode: int = RCODE.NOERROR
    negative: bool = False  # NXDOMAIN or no data: ``records`` is the zone's SOA

    def left(self, now: float) -> int:
        """Whole seconds left (0: gone), as the TTLs in an answer count down."""
        return max(0, self.ttl - int(now - self.stored))


class DNSResolver(DNSServer):
    """A recursive resolver: answers any name by asking ``roots`` (the root servers'
    addresses) and the servers they refer it to, and caches what it learns.

    ``timeout``: seconds each upstream server gets to answer before the next is tried.
    ``log``: a :class:`Step` per question sent upstream; ``hits``: questions answered
    from the cache; :meth:`cached` what it remembers; :meth:`flush` forgets it all.

    Attributes:
        roots: the root servers' addresses it starts each walk from
        timeout: seconds each upstream server gets to answer before the next is tried
        log: a :class:`Step` per question sent upstream, the first 10,000
        hits: questions answered from the cache, without asking anyone
        recursive: True: it answers any name (``ra`` set, ``aa`` clear)
        (and :class:`~labkit.servers.dns.DNSServer`'s ``queries``, ``malformed``,
        ``truncated`` and ``tcp_queries``)
    """

    recursive = True
    speaks = "DNS (RFC 1035), recursive: it answers any name, from its cache or by asking"

    def __init__(self, roots: list[str], *, timeout: float = 1.0, host: str = "127.0.0.1",
                 port: int = 0, name: str = "resolver"):
        if isinstance(roots, str) or not isinstance(roots, list | tuple) or not roots:
            arguments.fail(TypeError if not isinstance(roots, list | tuple) else ValueError,
                           "roots", "a list of the root servers' addresses", roots,
                           "['10.0.2.4']")
        self.roots = []
        for root in roots:
            try:
                self.roots.append(str(ipaddress.ip_address(root)))
            except (ValueError, TypeError):
                arguments.fail(ValueError, "a root server's address", "an IP address", root,
                               "'10.0.2.4'")
        self.timeout = arguments.number(timeout, "timeout", 0, 30, "1.0 seconds",
                                        above_low=True, unit=" seconds")
        super().__init__({"resolver.invalid": "127.0.0.1"}, host=host, port=port, name=name)
        self.zone = None  # type: ignore[assignment]  # it has no zone: it asks the ones that do
        self.log: Kept = Kept(LOG_LIMIT, f"DNSResolver {name!r}", "log")
        self.hits = 0
        self._cache: dict[tuple[str, str], _Cached] = {}
        # glue: name servers' addresses from referrals, used to reach them and never given
        # as an answer (a parent's copy is not the zone's word, RFC 2181 5.4.1)
        self._glue: dict[tuple[str, str], _Cached] = {}
        self._one_at_a_time = threading.Lock()

    # -- what a lesson reads ---------------------------------------------------------------
    def cached(self) -> list[CacheEntry]:
        """What the cache holds now, by name: each record's type, seconds left, and data."""
        now = time.monotonic()
        rows = []
        with self._lock:
            entries = [(key, entry, "") for key, entry in self._cache.items()]
            entries += [(key, entry, " (glue)") for key, entry in self._glue.items()]
        for (name, kind), entry, glue in sorted(entries, key=_by_name):
            left = entry.left(now)
            if not left:
                continue
            if entry.negative:
                says = RCODE[entry.rcode] if entry.rcode else "no data"
                rows.append(CacheEntry(name, kind, left, says))
            else:
                rows += [CacheEntry(name, kind, left, f"{rr.rdata}{glue}")
                         for rr in entry.records]
        return rows

    def flush(self) -> None:
        """Forget everything: the next question walks from the root again."""
        with self._lock:
            self._cache.clear()
            self._glue.clear()

    # -- answering ---------------------------------------------------------------------------
    def answer(self, qname: str, qtype: str) -> Answer:
        with self._one_at_a_time:
            hit = self._from_cache(fqdn(qname), qtype)
            if hit is not None:
                with self._lock:
                    self.hits += 1
                return hit
            return self._resolve(fqdn(qname), qtype, 0)

    def _resolve(self, qname: str, qtype: str, depth: int) -> Answer:
        hit = self._from_cache(qname, qtype)
        if hit is not None:
            return hit
        zone, servers = self._closest(qname, depth)
        for _ in range(MAX_REFERRALS):
            asked = self._ask(servers, qname, qtype)
            if asked is None:
                return Answer(RCODE.SERVFAIL, aa=False)
            reply, server, transport, seconds = asked
            referral = self._referral(reply, zone, qname)
            outcome = self._learn(reply, zone, qname, qtype, referral)
            self.log.append(Step(server, qname, qtype, outcome, _detail(outcome, reply),
                                 transport, seconds))
            if referral is None:
                return self._from_cache(qname, qtype) or Answer(
                    RCODE.SERVFAIL if reply.header.rcode not in (RCODE.NOERROR,
                                                                 RCODE.NXDOMAIN) else
                    reply.header.rcode, aa=False)
            zone = referral
            servers = self._addresses(zone, depth)
            if not servers:
                return Answer(RCODE.SERVFAIL, aa=False)
        return Answer(RCODE.SERVFAIL, aa=False)

    # -- the cache ---------------------------------------------------------------------------
    def _from_cache(self, qname: str, qtype: str) -> Answer | None:
        """The answer the cache gives (TTLs counted down), or None if it has none."""
        now = time.monotonic()
        with self._lock:
            for key in ((qname, qtype), (qname, "*")):  # "*": NXDOMAIN, for every type
                entry = self._cache.get(key)
                if entry is None or not entry.left(now):
                    continue
                left = entry.left(now)
                records = [_with_ttl(rr, min(rr.ttl, left)) for rr in entry.records]
                if entry.negative:
                    return Answer(entry.rcode, aa=False, authority=records)
                return Answer(aa=False, answer=records)
        return None

    def _store(self, key: tuple[str, str], records: list[RR], *, rcode: int = RCODE.NOERROR,
               negative: bool = False, glue: bool = False) -> None:
        ttl = min(rr.ttl for rr in records)
        if negative:  # RFC 2308 5: the smaller of the SOA's TTL and its MINIMUM
            ttl = min(ttl, records[0].rdata.times[-1])
        with self._lock:
            (self._glue if glue else self._cache)[key] = _Cached(
                records, time.monotonic(), ttl, rcode, negative)

    def _glue_for(self, name: str, kind: str) -> list[str]:
        now = time.monotonic()
        with self._lock:
            entry = self._glue.get((name, kind))
            return [str(rr.rdata) for rr in entry.records] if entry and entry.left(now) else []

    def _closest(self, qname: str, depth: int) -> tuple[str, list[str]]:
        """The closest zone above ``qname`` whose servers the cache knows, and their
        addresses; the root and ``roots`` if none."""
        labels = qname.rstrip(".").split(".")
        for i in range(len(labels)):
            zone = ".".join(labels[i:]) + "."
            servers = self._addresses(zone, depth, look_up=False)
            if servers:
                return zone, servers
        return ".", list(self.roots)

    def _addresses(self, zone: str, depth: int, look_up: bool = True) -> list[str]:
        """The addresses of ``zone``'s name servers: IPv4 first, from glue in the cache, or
        (``look_up``) found by resolving the servers' names."""
        now = time.monotonic()
        with self._lock:
            ns = self._cache.get((zone, "NS"))
            names = [str(rr.rdata).lower() for rr in ns.records] if ns and ns.left(now) else []
        found = []
        for kind in ADDRESS_TYPES:
            for name in names:
                hit = self._from_cache(name, kind)
                addresses = [str(rr.rdata) for rr in hit.answer] if hit else []
                addresses = addresses or self._glue_for(name, kind)
                if not addresses and look_up and depth < MAX_DEPTH and kind == "A":
                    hit = self._resolve(name, kind, depth + 1)  # no glue: find it
                    addresses = [str(rr.rdata) for rr in hit.answer]
                found += addresses
        return found

    # -- learning from an answer -------------------------------------------------------------
    @staticmethod
    def _referral(reply: DNSRecord, zone: str, qname: str) -> str | None:
        """The child zone a referral sends us to, if ``reply`` is one (and a believable one:
        below the zone asked, above the name asked about)."""
        if reply.header.rcode != RCODE.NOERROR or reply.header.aa or reply.rr:
            return None
        children = {str(rr.rname).lower() for rr in reply.auth if rr.rtype == QTYPE.NS}
        good = [child for child in children
                if child != zone and within(child, zone) and within(qname, child)]
        return max(good, key=len) if good else None

    def _learn(self, reply: DNSRecord, zone: str, qname: str, qtype: str,
               referral: str | None) -> str:
        """Cache what ``reply`` (from a server for ``zone``) says that is ours to believe;
        returns its outcome in a few words."""
        if referral is not None:
            ns = [rr for rr in reply.auth if rr.rtype == QTYPE.NS
                  and str(rr.rname).lower() == referral]
            self._store((referral, "NS"), ns)
            servers = {str(rr.rdata).lower() for rr in ns}
            for kind in ADDRESS_TYPES:  # glue: addresses of those servers, and nothing else
                for server in servers:
                    glue = [rr for rr in reply.ar if QTYPE[rr.rtype] == kind
                            and str(rr.rname).lower() == server and within(server, zone)]
                    if glue:
                        self._store((server, kind), glue, glue=True)
            return f"referral to {referral}"
        rcode = reply.header.rcode
        soa = [rr for rr in reply.auth if rr.rtype == QTYPE.SOA
               and within(qname, str(rr.rname).lower()) and within(str(rr.rname).lower(), zone)]
        if rcode == RCODE.NXDOMAIN:
            if soa:
                self._store((qname, "*"), soa[:1], rcode=rcode, negative=True)
            return "NXDOMAIN"
        if rcode != RCODE.NOERROR:
            return str(RCODE[rcode])
        answers = [rr for rr in reply.rr if str(rr.rname).lower() == qname
                   and QTYPE[rr.rtype] == qtype]
        if answers:
            self._store((qname, qtype), answers)
            return "answer"
        if soa:
            self._store((qname, qtype), soa[:1], negative=True)
        return "no data"

    # -- asking upstream ---------------------------------------------------------------------
    def _ask(self, servers: list[str], qname: str,
             qtype: str) -> tuple[DNSRecord, str, str, float] | None:
        """Ask each server in turn (``timeout`` seconds each) until one answers: (its
        reply, its address, the transport, seconds it took); None if none did."""
        for server in servers:
            started = time.monotonic()
            try:
                reply, transport = self._query(server, qname, qtype)
            except OSError as exc:  # timed out, refused (ICMP port unreachable), unreachable
                why = "timed out" if isinstance(exc, TimeoutError) else (
                    exc.strerror or type(exc).__name__).lower()
                self.log.append(Step(server, qname, qtype, f"no answer ({why})", "",
                                     "UDP", time.monotonic() - started))
                continue
            return reply, server, transport, time.monotonic() - started
        return None

    def _query(self, server: str, qname: str, qtype: str) -> tuple[DNSRecord, str]:
        """One question to one server, over UDP (TCP if the answer was truncated)."""
        query = DNSRecord.question(qname, qtype)
        query.header.id = secrets.randbelow(65536)   # unguessable, as the source port
        query.header.rd = 0                          # iterative: we do the recursion
        query.add_ar(EDNS0(udp_len=EDNS_PAYLOAD))
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect((server, DNS_PORT))         # a fresh socket: a random source port
            sock.send(query.pack())
            deadline = time.monotonic() + self.timeout
            while True:
                reply = _matching(sock.recv(65535), query)
                if reply is not None:
                    break
                sock.settimeout(max(0.001, deadline - time.monotonic()))
        if not reply.header.tc:
            return reply, "UDP"
        with socket.create_connection((server, DNS_PORT), timeout=self.timeout) as conn:
            message = query.pack()
            conn.sendall(len(message).to_bytes(2, "big") + message)
            reply = _matching(_read_message(conn), query)
        if reply is None:
            raise ConnectionError(f"{server} answered another question over TCP")
        return reply, "TCP"

    def __repr__(self) -> str:
        return f"<DNSResolver {self.name!r}: roots {self.roots}>"


def _matching(data: bytes, query: DNSRecord) -> DNSRecord | None:
    """The reply in ``data`` if it answers ``query`` (same id and question), else None:
    anything else (garbage, a spoofing attempt, a late answer) is ignored."""
    try:
        reply = DNSRecord.parse(data)
    except Exception:  # noqa: BLE001 - dnslib raises several kinds on garbage
        return None
    if reply.header.id != query.header.id or not reply.header.qr or reply.q != query.q:
        return None
    return reply


def _read_message(conn: socket.socket) -> bytes:
    data = b""
    need = 2
    while len(data) < need:
        piece = conn.recv(need - len(data))
        if not piece:
            raise ConnectionError("the server closed the TCP connection mid-answer")
        data += piece
        if len(data) == 2:
            need = 2 + int.from_bytes(data, "big")
    return data[2:]


def _detail(outcome: str, reply: DNSRecord) -> str:
    """What an upstream answer said, in a few words, for the log."""
    if outcome == "answer":
        shown = ", ".join(str(rr.rdata) for rr in reply.rr[:3])
        return shown + (f", … {len(reply.rr)} records" if len(reply.rr) > 3 else "")
    if outcome.startswith("referral"):
        return ", ".join(f"{rr.rname} at {rr.rdata}" for rr in reply.ar if QTYPE[rr.rtype] == "A")
    if reply.auth and reply.auth[0].rtype == QTYPE.SOA:
        soa = reply.auth[0]
        return f"SOA of {soa.rname}, TTL {soa.ttl}, minimum {soa.rdata.times[-1]}"
    return ""


def _with_ttl(rr: RR, ttl: int) -> RR:
    return RR(rr.rname, rr.rtype, rr.rclass, ttl, rr.rdata)


def _by_name(item: tuple[tuple[str, str], _Cached, str]) -> tuple[tuple[str, ...], str]:
    """Names as a tree reads them: test. before netlab.test. before www.netlab.test."""
    (name, kind), *_rest = item
    return tuple(reversed(name.rstrip(".").split("."))), kind
