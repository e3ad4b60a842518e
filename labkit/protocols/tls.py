"""TLS in captures: name every record, decrypt with a key log, facts of the handshake.

TLS is recognised by content, on any port: a TCP stream whose client starts with a
ClientHello.  Each record is named (``ClientHello``, ``ServerHello``, ``ChangeCipherSpec``,
...) and encrypted records are marked 🔒; given the session's key log (NSS format, as
written by ``SSLContext.keylog_filename`` / ``SSLKEYLOGFILE``) Scapy's TLS layer decrypts
them, so TLS 1.3's hidden ``EncryptedExtensions``/``Certificate``/``Finished`` and the
application data show up too.  Dissection lives in :mod:`labkit.protocols.tlsdissect`
(loaded only when a capture has TLS in it); this module is TLS's protocol view.  The views of
a whole capture (``tls_records``, ``client_hello`` ...) are in :mod:`labkit.views.tls`.

    >>> view = TLSView(); view.analyse(packets, {"tls_keylog": keylog})
    >>> view.records(packets[3])     # the TLS records in that packet
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from labkit.protocols.base import Frames, Header, Later, ProtocolView, Segment, headers

if TYPE_CHECKING:
    from scapy.packet import Packet

    from labkit.protocols.tlsdissect import TLSConnection, TLSRecord

__all__ = ["TLSView", "numbered_connections"]


def _might_be_tls(packets: Frames | Iterable[Packet]) -> bool:
    """Cheap test before loading Scapy's TLS layer: does any TCP payload start a record?
    (Read from the bytes where ``packets`` are a capture's frames: no dissection.)"""
    from scapy.layers.inet import TCP
    from scapy.packet import Raw

    def start(pkt: Packet) -> bytes:  # a Raw payload's load as read: bytes() would rebuild it
        payload = pkt[TCP].payload
        return bytes(payload.load[:2]) if isinstance(payload, Raw) else bytes(payload)[:2]

    def starts_record(head: Header | None, later: Later[Packet]) -> bool:
        if head is not None:
            return head.proto == "TCP" and head.payload[:2] == b"\x16\x03"
        pkt = later()
        return TCP in pkt and start(pkt) == b"\x16\x03"

    return any(starts_record(head, later) for head, later in headers(packets))


def numbered_connections(packets: Frames | Iterable[Packet], keylog: str = ""
                         ) -> list[TLSConnection]:
    """The TLS connections in ``packets``, their records numbered by connection."""
    if not _might_be_tls(packets):
        return []
    from labkit.protocols.tlsdissect import connections

    conns = connections(packets, keylog)
    for n, conn in enumerate(conns):
        for rec in conn.records:
            rec.connection = n
    return conns


def _packet_text(recs: Sequence[TLSRecord], *, lock: bool = True) -> str:
    from labkit.protocols.tlsdissect import show_data

    if not recs:
        return "TLS (part of a record)"
    parts: list[list[Any]] = []  # [text, count]
    for rec in recs:
        text = rec.text if lock else rec.name + (": " + show_data(rec.plaintext)
                                                  if rec.plaintext else "")
        if parts and parts[-1][0] == text and not rec.plaintext:
            parts[-1][1] += 1
        else:
            parts.append([text, 1])
    return " · ".join(t + (f" ×{n}" if n > 1 else "") for t, n in parts)


class TLSView(ProtocolView):
    """TLS records named (and decrypted with ``meta["tls_keylog"]``) on the packets
    that carry each record's last byte; a packet in the middle of a record says so."""

    name = "TLS"

    def __init__(self) -> None:
        self.connections: list[TLSConnection] = []
        self._packets: list[Packet] = []          # held, so the ids below stay theirs
        self._records: dict[int, list[TLSRecord]] = {}  # id(packet) -> records it completes

    def analyse(self, packets: Frames | Iterable[Packet], meta: dict[str, Any]) -> None:
        if not isinstance(packets, (Frames, Sequence)):
            packets = list(packets)  # an iterator: read twice below
        self.connections = numbered_connections(packets, meta.get("tls_keylog", ""))
        self._packets = list(packets) if self.connections else []
        for conn in self.connections:
            for pkt in conn.partial:
                self._records.setdefault(id(pkt), [])
            for rec in conn.records:
                self._records.setdefault(id(rec.packet), []).append(rec)

    def records(self, pkt: Packet | None) -> list[TLSRecord] | None:
        """The TLS records a packet completes ([] for part of one); None: not TLS."""
        return None if pkt is None else self._records.get(id(pkt))

    def recognises(self, payload: bytes, pkt: Packet | None) -> bool:
        return id(pkt) in self._records

    def might_recognise(self, payload: bytes, proto: str) -> bool:
        return proto == "TCP" and bool(self._records)

    def describe(self, payload: bytes, pkt: Packet | None) -> str:
        return _packet_text(self._records[id(pkt)])

    def label(self, seg: Segment) -> str | None:
        recs = self._records.get(id(seg.packet)) if seg.packet is not None else None
        if recs is None:
            return None
        plain = [r for r in recs if not r.encrypted]
        secret = [r for r in recs if r.encrypted]
        text = _packet_text(plain, lock=False) if plain else ""
        if secret:
            text += ("\n" if plain else "") + "encrypted: " + _packet_text(secret, lock=False)
        return text or _packet_text(recs, lock=False)
