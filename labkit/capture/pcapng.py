"""Write frames as pcapng: one interface, named as captured, nanosecond timestamps.

    >>> write("hello.pcapng", frames, iface="lo")
    >>> write("tls.pcapng", frames, iface="lo", keylog="CLIENT_RANDOM ...\\n")
    >>> read("hello.pcapng")          # Scapy packets, frames whole (Scapy's reader cuts at 65,535)

Written here, block by block (pcapng spec, IETF draft-ietf-opsawg-pcapng), because
Scapy's writer adds an unused interface #0, names the real one "socket0", keeps
microseconds, and has no Decryption Secrets Block; each block below is a few bytes.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from labkit.capture.frames import Frame

if TYPE_CHECKING:
    from scapy.packet import Packet

__all__ = ["write", "read", "LINKTYPE_ETHERNET"]

LINKTYPE_ETHERNET = 1         # lo frames carry an Ethernet header (tcpdump: EN10MB)
SNAPLEN = 262144              # tcpdump's: larger than any frame we read
_TLS_KEY_LOG = 0x544C534B     # Decryption Secrets Block: NSS key log ("TLSK")


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _block(kind: int, body: bytes) -> bytes:
    size = 12 + len(_pad(body))
    return struct.pack("<II", kind, size) + _pad(body) + struct.pack("<I", size)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def write(path: str | os.PathLike[str], frames: Iterable[Frame], *, iface: str = "lo",
          keylog: str = "", linktype: int = LINKTYPE_ETHERNET) -> Path:
    """Write ``frames`` to ``path``: section header, the TLS key log (if any), one
    interface, then one Enhanced Packet Block per frame with its original length."""
    path = Path(path)
    with path.open("wb") as out:
        out.write(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        if keylog:
            secrets = keylog.encode()
            out.write(_block(0x0000000A, struct.pack("<II", _TLS_KEY_LOG, len(secrets)) + secrets))
        options = _option(2, iface.encode()) + _option(9, bytes([9])) + _option(0, b"")
        out.write(_block(0x00000001, struct.pack("<HHI", linktype, 0, SNAPLEN) + options))
        for data, ns, wirelen in frames:
            head = struct.pack("<IIIII", 0, ns >> 32, ns & 0xFFFFFFFF, len(data), wirelen)
            out.write(_block(0x00000006, head + data))
    return path


def read(path: str | os.PathLike[str]) -> list[Packet]:
    """The packets of a pcap or pcapng file (Scapy's reader), each frame whole."""
    from scapy.utils import PcapReader

    packets: list[Packet] = []
    with PcapReader(str(path)) as reader:
        while True:
            try:
                packets.append(reader.read_packet(size=SNAPLEN))
            except EOFError:
                return packets
