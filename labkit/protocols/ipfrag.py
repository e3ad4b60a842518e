"""IP fragments in captures: which datagram each belongs to, and where it is whole again.

    >>> frags = Reassembly(packets)     # one pass over a capture
    >>> frags.of(5)                     # the fragment in packet 5, and its datagram
    (Fragment(index=5, offset=1480, length=1480, more=True), Datagram(...))
    >>> frags.datagrams[0].complete, frags.datagrams[0].size
    (True, 4008)

An IPv4 packet bigger than the next link's MTU, sent without "don't fragment", is cut
into fragments that share the sender's identification field; each says where its bytes
go (the offset, in units of 8 bytes) and whether more follow (the MF flag). Only the
destination puts them together (RFC 791). As in Wireshark, a capture shows every fragment
but the last as a fragment, and the one that completes the datagram as the whole datagram.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scapy.packet import Packet
    from scapy.plist import PacketList

__all__ = ["Fragment", "Datagram", "Reassembly", "is_fragment"]

_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP"}


def is_fragment(data: bytes) -> bool:
    """Is this Ethernet frame's IPv4 packet a fragment (MF set, or an offset)? From bytes."""
    return (len(data) >= 34 and data[12:14] == b"\x08\x00"
            and bool(int.from_bytes(data[20:22], "big") & 0x3FFF))


@dataclass(frozen=True)
class Fragment:
    """One fragment: the packet it is (``index``), where its bytes go, and if more follow.

    Attributes:
        index: the packet it is, its row in the capture
        offset: where its bytes go: bytes into the datagram's payload
        length: payload bytes it carries
        more: True if more fragments follow (the MF flag)
    """

    index: int
    offset: int
    length: int
    more: bool


@dataclass
class Datagram:
    """The fragments of one IP datagram (same source, destination, protocol and ident).

    Attributes:
        src: its source address
        dst: its destination address
        proto: its protocol: ``"UDP"``, ``"TCP"``, ``"ICMP"``, or the protocol number
        ident: the IP identification field its fragments share
        fragments: its fragments, in the order they came
        completed_by: the packet whose arrival made it whole (None: it never was)
    """

    src: str
    dst: str
    proto: str
    ident: int
    fragments: list[Fragment] = field(default_factory=list)
    completed_by: int | None = None

    @property
    def complete(self) -> bool:
        """Did every byte of it arrive?"""
        return self.completed_by is not None

    @property
    def size(self) -> int | None:
        """Payload bytes of the whole datagram (known once its last fragment came)."""
        last = [f for f in self.fragments if not f.more]
        return last[0].offset + last[0].length if last else None

    def covered(self) -> bool:
        """Do its fragments so far cover every byte of it?"""
        size = self.size
        if size is None:
            return False
        reached = 0
        for fragment in sorted(self.fragments, key=lambda f: f.offset):
            if fragment.offset > reached:
                return False
            reached = max(reached, fragment.offset + fragment.length)
        return reached >= size

    def payload(self, packets: Sequence[Packet] | PacketList) -> bytes:
        """The reassembled payload (the transport header and data) from ``packets``."""
        from scapy.layers.inet import IP

        data = bytearray(self.size or 0)
        for fragment in self.fragments:
            piece = bytes(packets[fragment.index][IP].payload)[:fragment.length]
            data[fragment.offset:fragment.offset + len(piece)] = piece
        return bytes(data)

    def __str__(self) -> str:
        parts = ", ".join(f"#{f.index} bytes {f.offset}-{f.offset + f.length - 1}"
                          for f in self.fragments)
        state = f"{self.size} bytes whole at #{self.completed_by}" if self.complete \
            else "never whole"
        return f"{self.proto} datagram id={self.ident} {self.src} → {self.dst}: {parts}; {state}"


class Reassembly:
    """Every fragment of a capture (Scapy packets, or a capture's Frames), grouped.

    Attributes:
        datagrams: the fragmented datagrams, in the order their first fragment came
    """

    def __init__(self, packets: Sequence[Packet] | PacketList) -> None:
        self.datagrams: list[Datagram] = []
        self._by_index: dict[int, tuple[Fragment, Datagram]] = {}
        frames = getattr(packets, "frames", None)  # a capture's Frames: test bytes first
        open_: dict[tuple[str, str, int, int], Datagram] = {}
        for i in range(len(packets)):
            if frames is not None and not is_fragment(frames[i].data):
                continue
            facts = _fragment_facts(packets[i])
            if facts is None:
                continue
            key, offset, length, more = facts
            datagram = open_.get(key)
            if datagram is None:
                datagram = open_[key] = Datagram(key[0], key[1], _PROTOCOLS.get(key[2],
                                                                                 str(key[2])),
                                                 key[3])
                self.datagrams.append(datagram)
            fragment = Fragment(i, offset, length, more)
            datagram.fragments.append(fragment)
            self._by_index[i] = (fragment, datagram)
            if datagram.covered():
                datagram.completed_by = i
                del open_[key]  # the same ident may be used again later

    def of(self, index: int) -> tuple[Fragment, Datagram] | None:
        """The fragment packet ``index`` is, and its datagram; None if it is no fragment."""
        return self._by_index.get(index)


def _fragment_facts(pkt: Packet) -> tuple[tuple[str, str, int, int], int, int, bool] | None:
    from scapy.layers.inet import IP

    if IP not in pkt:
        return None
    ip = pkt[IP]
    more = bool(int(ip.flags) & 1)
    if not more and not ip.frag:
        return None
    length = int(ip.len) - int(ip.ihl) * 4
    return (ip.src, ip.dst, int(ip.proto), int(ip.id)), int(ip.frag) * 8, length, more
