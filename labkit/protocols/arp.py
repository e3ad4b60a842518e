"""ARP in captures: who has an address, and the answer that names its MAC.

    >>> describe_arp(pkt)            # a request, broadcast to the cable
    ('10.0.0.1', '10.0.0.2', 'ARP who has 10.0.0.2? tell 10.0.0.1 (broadcast)')
    >>> describe_arp(reply)
    ('10.0.0.2', '10.0.0.1', 'ARP 10.0.0.2 is at 02:00:0a:00:00:02')

A capture draws an ARP message from its sender's IP address to the one it is about (the
target of a request: the host it asks for; the asker, for a reply), so a ladder shows the
question and the answer between the two hosts, as Wireshark's "who has / is at".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scapy.packet import Packet

__all__ = ["describe_arp", "BROADCAST"]

BROADCAST = "ff:ff:ff:ff:ff:ff"
REQUEST, REPLY = 1, 2


def describe_arp(pkt: Packet) -> tuple[str, str, str] | None:
    """``(sender IP, target IP, summary)`` of an ARP packet (Scapy), or None if not ARP."""
    from scapy.layers.l2 import ARP, Ether

    if ARP not in pkt:
        return None
    arp = pkt[ARP]
    if arp.op == REQUEST:
        if arp.psrc == arp.pdst:
            text = f"ARP announcement: {arp.psrc} is at {arp.hwsrc}"
        elif arp.psrc == "0.0.0.0":
            text = f"ARP probe: is {arp.pdst} taken?"
        else:
            text = f"ARP who has {arp.pdst}? tell {arp.psrc}"
        if Ether in pkt and pkt[Ether].dst == BROADCAST:
            text += " (broadcast)"
    elif arp.op == REPLY:
        text = f"ARP {arp.psrc} is at {arp.hwsrc}"
    else:
        text = f"ARP opcode {arp.op}"
    return str(arp.psrc), str(arp.pdst), text
