"""ICMP in captures: type, code, what it means, and the packet an error quotes.

    >>> message = icmp_message(seg.packet)
    >>> message.name, message.type, message.code
    ('time exceeded in transit', 11, 0)
    >>> message.quoted           # the header of the packet that caused it, as it arrived
    Quoted(src='10.0.0.1', dst='10.0.2.4', proto='UDP', ttl=1, ident=4711, sport=40000,
           dport=33435, length=33)
    >>> describe_icmp(seg.packet)
    'ICMP time exceeded in transit (quotes UDP to port 33435)'

An ICMP error carries the IP header and the first 8 bytes (or more) of the packet it
answers (RFC 792, RFC 1812 4.3.2.3): that quote is how a traceroute tells which probe a
router answered, and how a sender learns a path's MTU ("fragmentation needed", with
the next hop's MTU in the header, RFC 1191).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ICMPMessage", "Quoted", "icmp_message", "describe_icmp", "ICMP_NAMES",
           "quotes", "why_dropped"]

# (type, code) -> meaning; a type alone (code None) names every code of it
ICMP_NAMES = {
    (0, None): "echo reply", (8, None): "echo request",
    (3, 0): "net unreachable", (3, 1): "host unreachable", (3, 2): "protocol unreachable",
    (3, 3): "port unreachable", (3, 4): "fragmentation needed",
    (3, 5): "source route failed", (3, 6): "destination network unknown",
    (3, 7): "destination host unknown", (3, 9): "network administratively prohibited",
    (3, 10): "host administratively prohibited",
    (3, 13): "communication administratively prohibited",
    (3, None): "destination unreachable",
    (5, None): "redirect", (11, 0): "time exceeded in transit",
    (11, 1): "fragment reassembly time exceeded", (11, None): "time exceeded",
    (12, None): "parameter problem",
}
_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP"}
FRAGMENTATION_NEEDED = (3, 4)
REDIRECT = 5   # the one error whose packet was forwarded all the same
# why a router (not the destination) dropped a packet, in the few words a ladder writes
_WHY = {11: "TTL ran out", (3, 4): "too big", (3, 0): "no route", (3, 1): "no route",
        (3, 6): "no route", (3, 7): "no route", (3, 9): "prohibited", (3, 10): "prohibited",
        (3, 13): "prohibited"}


@dataclass(frozen=True)
class Quoted:
    """The start of the packet an ICMP error is about, as the router or host saw it."""

    src: str
    dst: str
    proto: str          # "UDP", "TCP", "ICMP", or the protocol number
    ttl: int
    ident: int          # the IP identification field
    sport: int | None   # ports, when the quote reaches them
    dport: int | None
    length: int         # the quoted packet's total length (its IP header says so)


@dataclass(frozen=True)
class ICMPMessage:
    """One ICMP message: ``type``, ``code``, ``name``; ``mtu`` for "fragmentation needed"
    (the next hop's MTU); ``ident``/``seq`` for echoes; ``quoted`` for errors."""

    type: int
    code: int
    name: str
    mtu: int | None = None
    ident: int | None = None
    seq: int | None = None
    quoted: Quoted | None = None

    @property
    def error(self) -> bool:
        return self.quoted is not None


def icmp_message(pkt) -> ICMPMessage | None:
    """The ICMP message in a Scapy packet (IPv4), or None if it carries none."""
    from scapy.layers.inet import ICMP, IPerror

    if ICMP not in pkt:
        return None
    icmp = pkt[ICMP]
    kind, code = int(icmp.type), int(icmp.code)
    name = ICMP_NAMES.get((kind, code)) or ICMP_NAMES.get((kind, None)) or f"type {kind}"
    if kind in (0, 8):
        return ICMPMessage(kind, code, name, ident=int(icmp.id), seq=int(icmp.seq))
    quoted = None
    if IPerror in pkt:
        inner = pkt[IPerror]
        transport = inner.payload
        ports = getattr(transport, "sport", None), getattr(transport, "dport", None)
        quoted = Quoted(inner.src, inner.dst, _PROTOCOLS.get(int(inner.proto), str(inner.proto)),
                        int(inner.ttl), int(inner.id), *ports, int(inner.len))
    mtu = int(icmp.nexthopmtu) if (kind, code) == FRAGMENTATION_NEEDED else None
    return ICMPMessage(kind, code, name, mtu=mtu, quoted=quoted)


def quotes(message: ICMPMessage, pkt) -> bool:
    """Is ``pkt`` (Scapy, IPv4) the packet the error ``message`` quotes? Same source,
    destination, protocol, identification, length and ports, as the sender of the error
    saw them (its TTL is lower by then)."""
    from scapy.layers.inet import IP

    quoted = message.quoted
    if quoted is None or pkt is None or IP not in pkt:
        return False
    ip = pkt[IP]
    transport = ip.payload
    ports = getattr(transport, "sport", None), getattr(transport, "dport", None)
    return ((ip.src, ip.dst, int(ip.id), int(ip.len)) == (quoted.src, quoted.dst,
                                                            quoted.ident, quoted.length)
            and _PROTOCOLS.get(int(ip.proto), str(ip.proto)) == quoted.proto
            and (None in (quoted.sport, *ports) or ports == (quoted.sport, quoted.dport)))


def why_dropped(message: ICMPMessage) -> str:
    """A few words for why the sender of an error dropped the packet: ``"TTL ran out"``."""
    return _WHY.get(message.type) or _WHY.get((message.type, message.code)) or message.name


def describe_icmp(pkt) -> str:
    """The table's summary: ``ICMP port unreachable (quotes UDP to port 9)``."""
    message = icmp_message(pkt)
    if message is None:
        return "ICMP"
    text = f"ICMP {message.name}"
    if message.mtu is not None:
        text += f", next-hop MTU {message.mtu}"
    if message.ident is not None:
        text += f" id={message.ident} seq={message.seq}"
    quoted = message.quoted
    if quoted is not None:
        to = f" to port {quoted.dport}" if quoted.dport is not None else f" to {quoted.dst}"
        text += f" (quotes {quoted.proto}{to})"
    return text
