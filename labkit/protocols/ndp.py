"""IPv6 neighbour discovery in captures: ARP's twin, carried by ICMPv6 (RFC 4861).

    >>> describe_ndp(solicitation)
    ('fd00:10::1', 'fd00:10::2', 'NDP who has fd00:10::2? tell fd00:10::1')
    >>> describe_ndp(advertisement)
    ('fd00:10::2', 'fd00:10::1', 'NDP fd00:10::2 is at 02:00:0a:00:00:02')

A *neighbour solicitation* asks for the MAC address of an IPv6 address, not by broadcast
as ARP does but to the address's *solicited-node* multicast group (``ff02::1:ff`` and
its last 24 bits), so only the hosts whose addresses end the same way look at it; the
*advertisement* answers. Like ARP, a capture draws a solicitation from its sender to the
host it is about. Router solicitations and advertisements and redirects are named too
(the multicast listener messages a host sends when it takes an address, MLD, are plain
ICMPv6 rows: :data:`labkit.protocols.icmp.ICMP6_NAMES`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.protocols.icmp import icmp6_layer

if TYPE_CHECKING:
    from scapy.packet import Packet

__all__ = ["describe_ndp", "NDP_TYPES"]

NDP_TYPES = {133: "router solicitation", 134: "router advertisement",
             135: "neighbour solicitation", 136: "neighbour advertisement", 137: "redirect"}
SOLICITATION, ADVERTISEMENT = 135, 136


def describe_ndp(pkt: Packet) -> tuple[str, str, str] | None:
    """``(sender IP, the IP it is about, summary)`` of a neighbour discovery message
    (Scapy), or None if the packet is not one."""
    from scapy.layers.inet6 import ICMPv6NDOptDstLLAddr, IPv6

    icmp = icmp6_layer(pkt)
    if icmp is None or int(icmp.type) not in NDP_TYPES:
        return None
    kind, ip6 = int(icmp.type), pkt[IPv6]
    if kind == SOLICITATION:
        if ip6.src == "::":
            return ip6.src, icmp.tgt, f"NDP is {icmp.tgt} taken? (duplicate address detection)"
        how = "" if ip6.dst.startswith("ff02::1:ff") else " (unicast: still there?)"
        return ip6.src, icmp.tgt, f"NDP who has {icmp.tgt}? tell {ip6.src}{how}"
    if kind == ADVERTISEMENT:
        mac = icmp[ICMPv6NDOptDstLLAddr].lladdr if ICMPv6NDOptDstLLAddr in icmp else None
        text = f"NDP {icmp.tgt} is at {mac}" if mac else f"NDP {icmp.tgt} is still here"
        return icmp.tgt, ip6.dst, text
    return ip6.src, ip6.dst, f"NDP {NDP_TYPES[kind]}"
