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
the next hop's MTU in the header, RFC 1191).  ICMPv6 (RFC 4443) is read the same way:
its errors (destination unreachable, packet too big, time exceeded) quote the packet
they are about, and its echoes carry an id and a sequence number; neighbour discovery,
which ICMPv6 carries too, is :mod:`labkit.protocols.ndp`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scapy.packet import Packet

__all__ = ["ICMPMessage", "Quoted", "icmp_message", "icmp6_message", "icmp6_layer",
           "describe_icmp", "ICMP_NAMES", "ICMP6_NAMES", "quotes", "why_dropped"]

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
# ICMPv6 (RFC 4443): the same few ideas, other numbers
ICMP6_NAMES = {
    (128, None): "echo request", (129, None): "echo reply",
    (1, 0): "no route to destination", (1, 1): "administratively prohibited",
    (1, 3): "address unreachable", (1, 4): "port unreachable",
    (1, 5): "source address failed policy", (1, 6): "reject route",
    (1, None): "destination unreachable", (2, None): "packet too big",
    (3, 0): "hop limit exceeded in transit", (3, 1): "fragment reassembly time exceeded",
    (4, None): "parameter problem",
    (130, None): "multicast listener query", (131, None): "multicast listener report",
    (132, None): "multicast listener done", (143, None): "multicast listener report",
}
_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6"}
FRAGMENTATION_NEEDED = (3, 4)
REDIRECT = 5   # the one error whose packet was forwarded all the same
# why a router (not the destination) dropped a packet, in the few words a ladder writes
_WHY = {11: "TTL ran out", (3, 4): "too big", (3, 0): "no route", (3, 1): "no route",
        (3, 6): "no route", (3, 7): "no route", (3, 9): "prohibited", (3, 10): "prohibited",
        (3, 13): "prohibited"}
_WHY6 = {3: "hop limit ran out", 2: "too big", (1, 0): "no route", (1, 1): "prohibited",
         (1, 3): "no route", (1, 5): "prohibited", (1, 6): "prohibited"}


@dataclass(frozen=True)
class Quoted:
    """The start of the packet an ICMP error is about, as the router or host saw it.

    Attributes:
        src: the quoted packet's source address
        dst: its destination address
        proto: its protocol: ``"UDP"``, ``"TCP"``, ``"ICMP"``, or the protocol number
        ttl: its TTL when the error's sender dropped it
        ident: its IP identification field
        sport: its source port, when the quote reaches the ports (else None)
        dport: its destination port, likewise
        length: its total length, as its IP header says
    """

    src: str
    dst: str
    proto: str
    ttl: int
    ident: int
    sport: int | None
    dport: int | None
    length: int


@dataclass(frozen=True)
class ICMPMessage:
    """One ICMP message: ``type``, ``code``, ``name``; ``mtu`` for "fragmentation needed"
    (IPv6: "packet too big"; the next hop's MTU); ``ident``/``seq`` for echoes; ``quoted``
    for errors; ``version`` 4 (ICMP) or 6 (ICMPv6).

    Attributes:
        type: the ICMP type (0 echo reply, 3 destination unreachable, 8 echo, 11 time
            exceeded, ...; ICMPv6: 1 destination unreachable, 2 packet too big, 3 time
            exceeded, 128 echo request, 129 echo reply, ...)
        code: the ICMP code, which says more about the type
        name: the type and code in words: ``"port unreachable"``
        mtu: the next hop's MTU, for "fragmentation needed" or "packet too big" (else None)
        ident: an echo's identifier (else None)
        seq: an echo's sequence number (else None)
        quoted: for an error, the start of the packet it is about (else None)
        version: 4 (ICMP) or 6 (ICMPv6)
    """

    type: int
    code: int
    name: str
    mtu: int | None = None
    ident: int | None = None
    seq: int | None = None
    quoted: Quoted | None = None
    version: int = 4

    @property
    def protocol(self) -> str:
        """``"ICMP"`` or ``"ICMPv6"``, as a capture's table names it."""
        return "ICMPv6" if self.version == 6 else "ICMP"

    @property
    def error(self) -> bool:
        """Is it an error (it quotes a packet), not an echo?"""
        return self.quoted is not None


def icmp_message(pkt: Packet) -> ICMPMessage | None:
    """The ICMP (or ICMPv6) message in a Scapy packet, or None if it carries none."""
    from scapy.layers.inet import ICMP, IPerror

    if ICMP not in pkt:
        return icmp6_message(pkt)
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


def icmp6_layer(pkt: Packet) -> Packet | None:
    """The ICMPv6 layer of a Scapy packet (after the IPv6 header, or its hop-by-hop
    options header), or None."""
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop

    if IPv6 not in pkt:
        return None
    layer = pkt[IPv6].payload
    if isinstance(layer, IPv6ExtHdrHopByHop):
        layer = layer.payload
    return layer if hasattr(layer, "type") and type(layer).__name__.startswith("ICMPv6") \
        else None


def icmp6_message(pkt: Packet) -> ICMPMessage | None:
    """The ICMPv6 message in a Scapy packet, or None (neighbour discovery too: named
    by :mod:`labkit.protocols.ndp`)."""
    from scapy.layers.inet6 import IPerror6

    icmp = icmp6_layer(pkt)
    if icmp is None:
        return None
    kind, code = int(icmp.type), int(getattr(icmp, "code", 0))  # (MLDv2 reports have none)
    name = ICMP6_NAMES.get((kind, code)) or ICMP6_NAMES.get((kind, None)) or f"type {kind}"
    if kind in (128, 129):
        return ICMPMessage(kind, code, name, ident=int(icmp.id), seq=int(icmp.seq), version=6)
    quoted = None
    if kind < 128 and IPerror6 in pkt:
        inner = pkt[IPerror6]
        transport = inner.payload
        ports = getattr(transport, "sport", None), getattr(transport, "dport", None)
        quoted = Quoted(inner.src, inner.dst, _PROTOCOLS.get(int(inner.nh), str(inner.nh)),
                        int(inner.hlim), int(inner.fl), *ports, int(inner.plen) + 40)
    mtu = int(icmp.mtu) if kind == 2 else None
    return ICMPMessage(kind, code, name, mtu=mtu, quoted=quoted, version=6)


def quotes(message: ICMPMessage, pkt: Packet | None) -> bool:
    """Is ``pkt`` (Scapy) the packet the error ``message`` quotes? Same source,
    destination, protocol, identification (IPv6: flow label), length and ports, as the
    sender of the error saw them (its TTL is lower by then)."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6

    quoted = message.quoted
    if quoted is None or pkt is None:
        return False
    if message.version == 6:
        if IPv6 not in pkt:
            return False
        ip6 = pkt[IPv6]
        transport = ip6.payload
        ports = getattr(transport, "sport", None), getattr(transport, "dport", None)
        return ((ip6.src, ip6.dst, int(ip6.fl), int(ip6.plen) + 40) == (
                    quoted.src, quoted.dst, quoted.ident, quoted.length)
                and _PROTOCOLS.get(int(ip6.nh), str(ip6.nh)) == quoted.proto
                and (None in (quoted.sport, *ports) or ports == (quoted.sport, quoted.dport)))
    if IP not in pkt:
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
    why = _WHY6 if message.version == 6 else _WHY
    return why.get(message.type) or why.get((message.type, message.code)) or message.name


def describe_icmp(pkt: Packet) -> str:
    """The table's summary: ``ICMP port unreachable (quotes UDP to port 9)``."""
    message = icmp_message(pkt)
    if message is None:
        return "ICMP"
    text = f"{message.protocol} {message.name}"
    if message.mtu is not None:
        text += f", next-hop MTU {message.mtu}"
    if message.ident is not None:
        text += f" id={message.ident} seq={message.seq}"
    quoted = message.quoted
    if quoted is not None:
        to = f" to port {quoted.dport}" if quoted.dport is not None else f" to {quoted.dst}"
        text += f" (quotes {quoted.proto}{to})"
    return text
