"""What an authoritative DNS server knows and how it answers: a zone (RFC 1034 4.3.2).

    >>> zone = Zone({"www.netlab.test": ["10.0.5.7", "fd00:10:0:5::7"]}, origin="netlab.test")
    >>> zone.answer("www.netlab.test.", "A").answer          # the A record, TTL 300
    >>> root = Zone({}, origin=".", delegate={"test": {"ns.nic.test": "10.0.3.5"}})
    >>> root.answer("www.netlab.test.", "A")                 # a referral to test., with glue

A zone is the names at and below its *origin* that this server answers for with
authority (AA set). A name below a *delegation* belongs to a child zone, another
server's: the answer is a *referral* (no AA, no answer; the child's NS records in the
authority section, and, for name servers inside the child, their addresses in the
additional section: *glue*, without which nobody could find them). A name the zone does
not have gets NXDOMAIN, and a name it has without the type asked for gets an empty
NOERROR ("no data"); both carry the zone's SOA record in the authority section, whose
TTL (the smaller of the record's own and its MINIMUM field) says how long a resolver may
remember the negative answer (RFC 2308).  A question outside the zone is REFUSED.

Without an origin (``Zone(records)``, what ``DNSServer(records)`` had before zones) the
server answers exactly the names it was given, NXDOMAIN for others, and has no SOA.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from dnslib import AAAA, NS, QTYPE, RCODE, RR, SOA, A

from labkit.servers import arguments

__all__ = ["Zone", "Answer", "Address", "zone_records", "fqdn"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
NAME_EXAMPLE = "'www.netlab.test'"


def fqdn(name: str) -> str:
    """``name`` as DNS writes it, lower case and ending in a dot: ``"www.netlab.test."``."""
    name = name.strip().lower().rstrip(".")
    return name + "." if name else "."


def within(name: str, zone: str) -> bool:
    """Is ``name`` at or below ``zone`` (both fully qualified)?"""
    return zone == "." or name == zone or name.endswith("." + zone)


def _name(value: object, what: str) -> str:
    if not isinstance(value, str):
        arguments.fail(TypeError, what, "a domain name", value, NAME_EXAMPLE)
    labels = value.strip().rstrip(".").split(".")
    if value.strip() not in (".", "") and (any(not label or len(label) > 63 for label in labels)
                                           or len(value) > 253):
        arguments.fail(ValueError, what, "a domain name (labels of 1-63 characters between "
                       "dots)", value, NAME_EXAMPLE)
    return fqdn(value)


def zone_records(records: object, what: str = "records", empty: bool = False,
                 label: str = "a record's name") -> dict[str, list[Address]]:
    """{name: [addresses]} from ``{"www.netlab.test": "10.0.5.7" or [addresses]}``, checked."""
    must = "a dict of names to addresses" if empty else "a non-empty dict of names to addresses"
    example = "{'www.netlab.test': '127.0.0.7'}"
    if not isinstance(records, dict):
        arguments.fail(TypeError, what, must, records, example)
    if not records and not empty:
        arguments.fail(ValueError, what, must, records, example)
    zone: dict[str, list[Address]] = {}
    for name, values in records.items():
        owner = _name(name, label)
        if owner == "." or not name.strip(". "):
            arguments.fail(ValueError, label, "a domain name", name, NAME_EXAMPLE)
        addresses = []
        for value in [values] if isinstance(values, str) else values:
            try:
                addresses.append(ipaddress.ip_address(value))
            except (ValueError, TypeError):
                arguments.fail(ValueError, f"the address of {name!r}", "an IP address", value,
                               "'127.0.0.7' or '2001:db8::7'")
        zone[owner] = addresses
    return zone


@dataclass
class Answer:
    """What a server says to one question: the rcode, whether it speaks with authority,
    and the three sections of records."""

    rcode: int = RCODE.NOERROR
    aa: bool = True
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)


def address_record(name: str, ip: Address, ttl: int) -> RR:
    if ip.version == 4:
        return RR(name, QTYPE.A, rdata=A(str(ip)), ttl=ttl)
    return RR(name, QTYPE.AAAA, rdata=AAAA(str(ip)), ttl=ttl)


class Zone:
    """The names one authoritative server answers for (see the module's docstring).

    ``records``: {name: address or [addresses]}; ``origin``: the zone's apex ("netlab.test",
    "test", "." for the root), or None for a server that only knows ``records``;
    ``delegate``: {child zone: {name server: address or [addresses]}}; ``ttl``: of every
    record; ``negative_ttl``: the SOA's MINIMUM, how long a "no such name" may be cached.
    """

    def __init__(self, records: dict[str, Any], origin: str | None = None, *,
                 delegate: dict[str, dict[str, Any]] | None = None, ttl: int = 300,
                 negative_ttl: int = 60):
        self.origin = None if origin is None else _name(origin, "zone")
        self.records = zone_records(records, empty=self.origin is not None)
        self.ttl = arguments.integer(ttl, "ttl", 0, 2**31 - 1, "300 seconds")
        self.negative_ttl = arguments.integer(negative_ttl, "negative_ttl", 0, 2**31 - 1,
                                              "60 seconds")
        self.delegations: dict[str, dict[str, list[Address]]] = {}
        example = "{'netlab.test': {'ns.netlab.test': '10.0.4.6'}}"
        if delegate is not None and not isinstance(delegate, dict):
            arguments.fail(TypeError, "delegate", "a dict of child zones to their name servers",
                           delegate, example)
        if delegate is not None and self.origin is None:
            arguments.fail(ValueError, "delegate", "given with the zone it delegates from "
                           "(zone='test')", delegate, example)
        for child, servers in (delegate or {}).items():
            name = _name(child, "a delegated zone")
            if name == self.origin or not within(name, self.origin or "."):
                arguments.fail(ValueError, "a delegated zone", f"a name below the zone "
                               f"{self.origin} (a zone delegates only names under it)", child,
                               "'netlab.test'")
            self.delegations[name] = zone_records(servers, f"the name servers of {child!r}",
                                                  label="a name server's name")
        if self.origin is not None:
            for owner in self.records:
                if not within(owner, self.origin):
                    arguments.fail(ValueError, "a record's name", f"a name in the zone "
                                   f"{self.origin}", owner, f"'www.{self.origin}'")

    # -- answering ---------------------------------------------------------------------
    def answer(self, qname: str, qtype: str) -> Answer:
        """The answer to one question (``qname`` fully qualified, ``qtype`` "A", "AAAA", ...)."""
        qname = fqdn(qname)
        if self.origin is not None and not within(qname, self.origin):
            return Answer(RCODE.REFUSED, aa=False)  # not ours to answer
        child = self._delegation(qname)
        if child is not None:
            return self._referral(child)
        reply = Answer()
        if self.origin is not None and qname == self.origin and qtype in ("SOA", "ANY"):
            reply.answer.append(self.soa())
        for ip in self.records.get(qname, []):
            if qtype == "ANY" or qtype == ("A" if ip.version == 4 else "AAAA"):
                reply.answer.append(address_record(qname, ip, self.ttl))
        if reply.answer:
            return reply
        if not self._exists(qname):
            reply.rcode = RCODE.NXDOMAIN
        if self.origin is not None:  # no such name, or no data of that type: say for how long
            reply.authority.append(self.soa(min(self.ttl, self.negative_ttl)))
        return reply

    def _delegation(self, qname: str) -> str | None:
        """The delegated child zone ``qname`` is in, the closest if there are several."""
        inside = [child for child in self.delegations if within(qname, child)]
        return max(inside, key=len) if inside else None

    def _referral(self, child: str) -> Answer:
        reply = Answer(aa=False)
        for server, addresses in self.delegations[child].items():
            reply.authority.append(RR(child, QTYPE.NS, rdata=NS(server), ttl=self.ttl))
            if within(server, child):  # inside the child: nobody could find it without glue
                reply.additional += [address_record(server, ip, self.ttl) for ip in addresses]
        return reply

    def _exists(self, qname: str) -> bool:
        """Does ``qname`` exist: a name with records, the origin, or a name with names below
        it (an "empty non-terminal", RFC 8020)?"""
        return qname == self.origin or any(within(owner, qname) for owner in self.records)

    def soa(self, ttl: int | None = None) -> RR:
        """The zone's SOA record: MINIMUM is how long a negative answer may be cached (a
        negative answer carries it with that TTL, when it is the smaller: RFC 2308 3)."""
        assert self.origin is not None
        primary = "a.root-servers.net." if self.origin == "." else f"ns.{self.origin}"
        contact = "hostmaster." + ("" if self.origin == "." else self.origin)
        return RR(self.origin, QTYPE.SOA, ttl=self.ttl if ttl is None else ttl, rdata=SOA(
            primary, contact, (1, 3600, 600, 86400, self.negative_ttl)))

    def names(self) -> list[str]:
        return sorted(self.records)
