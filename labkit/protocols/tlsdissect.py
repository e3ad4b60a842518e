"""TLS records out of captured TCP streams, dissected and decrypted by Scapy's TLS layer.

A TCP connection whose client starts with a ClientHello is TLS, on any port.  Each
direction is reassembled and cut into records here (a record is told on the packet
that carries its last byte, as Wireshark does); each record is then dissected by
``scapy.layers.tls`` in one Scapy ``tlsSession`` per connection.  Given the session's
NSS key log (``SSLContext.keylog_filename``), that session decrypts TLS 1.2 and 1.3
records too.  Records are named as Wireshark names them (``ServerHello``, ``Finished``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.tls.record import TLS, TLSAlert, TLSApplicationData
from scapy.layers.tls.session import parse_nss_keys, tlsSession
from scapy.packet import Packet, Raw

from labkit.protocols.scapy_compat import tls_names

__all__ = ["TLSRecord", "TLSConnection", "connections", "hello_facts", "parse_keylog",
           "keylog_for"]

CONTENT_TYPES = {20: "ChangeCipherSpec", 21: "Alert", 22: "Handshake", 23: "Application Data",
                 24: "Heartbeat"}
TLS13 = 0x0304
_TLS13_SECRETS = ("CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                  "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0")
_KEYLOG_LINE = re.compile(r"[A-Z][A-Z0-9_]* (?:[0-9a-fA-F]{2})+ (?:[0-9a-fA-F]{2})+")


# -- key log ------------------------------------------------------------------------
def parse_keylog(text: str) -> dict[str, dict[bytes, bytes]]:
    """NSS key log text -> Scapy's ``{label: {client_random: secret}}``.

    Comments and junk lines are skipped (Scapy's own parser drops the whole log for one).
    """
    lines = dict.fromkeys(" ".join(line.split()) for line in (text or "").splitlines())
    wanted = "\n".join(line for line in lines if _KEYLOG_LINE.fullmatch(line))
    # Scapy's annotation says Dict[str, bytes]; it returns {label: {client_random: secret}}
    return parse_nss_keys(wanted)  # type: ignore[return-value]


def keylog_for(packets: Iterable[Packet], text: str) -> str:
    """Only the key log lines for TLS sessions that appear in ``packets``."""
    randoms = {c.client_random.hex() for c in connections(packets) if c.client_random}
    return "".join(line + "\n" for line in (text or "").splitlines()
                   if len(line.split()) == 3 and line.split()[1].lower() in randoms)


# -- records ---------------------------------------------------------------------------
@dataclass
class TLSRecord:
    """One TLS record as a fact: who sent it, what it is, whether it was encrypted.

    Attributes:
        packet: the Scapy packet that carries its last byte
        sender: ``"client"`` or ``"server"``: the side of the TLS session that sent it
        content_type: as in the record header: 22 handshake, 23 application data (all of
            TLS 1.3's encrypted records), 21 alert, 20 ChangeCipherSpec
        names: what it holds, e.g. ``["ServerHello"]``, ``["Alert unknown_ca"]``
        encrypted: True if it was encrypted on the wire
        decrypted: True if the key log let it be read
        plaintext: the application data it carried, once decrypted (else None)
        length: its length on the wire, without the 5-byte record header
        src: who sent it, as the capture's table names it (``"client"``)
        dst: who it went to, as the capture's table names it
        index: the row of its packet in the capture's table
        connection: which TLS connection of the capture it belongs to (0 = the first)
    """

    packet: Packet = field(repr=False)
    sender: str
    content_type: int
    names: list[str]
    encrypted: bool
    decrypted: bool = False
    plaintext: bytes | None = None
    length: int = 0
    src: str = ""
    dst: str = ""
    index: int = -1
    connection: int = 0

    @property
    def name(self) -> str:
        """Its messages' names, joined: ``'ServerHello'``, ``'Certificate, Finished'``."""
        return ", ".join(self.names)

    @property
    def text(self) -> str:
        """``ClientHello``, ``🔒Finished``, ``🔒Application Data: 'GET / HTTP/1.1'``."""
        label = ("🔒" if self.encrypted else "") + self.name
        if self.plaintext:
            label += ": " + show_data(self.plaintext)
        return label


def show_data(data: bytes) -> str:
    """Application data in a few words: an HTTP request or status line, or its first bytes."""
    if data[:5] in (b"GET /", b"POST ", b"HEAD ", b"PUT /", b"HTTP/") or data[:8] == b"DELETE /":
        return repr(data.split(b"\r\n", 1)[0].decode("latin-1"))
    shown = data[:24]
    return repr(shown) + (f" … (+{len(data) - 24} bytes)" if len(data) > 24 else "")


def _message_name(msg: Packet) -> str:
    """Scapy's message -> Wireshark's name: TLS13ServerHello -> ServerHello."""
    if isinstance(msg, TLSAlert):
        return f"Alert {tls_names()['alerts'].get(msg.descr, msg.descr)}"
    if isinstance(msg, TLSApplicationData):
        return "Application Data"
    return re.sub(r"^TLS(13)?", "", type(msg).__name__)


class TLSConnection:
    """One TCP connection carrying TLS: both directions' bytes and Scapy's TLS session."""

    def __init__(self, client_key: tuple[str, int, str, int],
                 keys: dict[str, dict[bytes, bytes]]) -> None:
        self.client_key = client_key     # (ip, port, ip, port) of the client -> server side
        self.buf = {"client": b"", "server": b""}
        self.next_seq: dict[str, int | None] = {"client": None, "server": None}
        self.keys = keys
        self.session = tlsSession()      # reads the client's records; mirror() for the server's
        self.session.nss_keys = keys
        self.reading = "client"
        # Scapy's ClientHello / ServerHello messages
        self.hello: Packet | None = None
        self.server_hello: Packet | None = None
        self.version: int | None = None
        self.encrypting = {"client": False, "server": False}   # TLS 1.2: after ChangeCipherSpec
        self.records: list[TLSRecord] = []
        self.partial: list[Packet] = []        # packets that carry no record's last byte

    @property
    def client_random(self) -> bytes | None:
        """The ClientHello's random: what names this session in a key log."""
        random: bytes | None = self.session.client_random
        return random

    def feed(self, side: str, seq: int, payload: bytes, pkt: Packet) -> None:
        """Add a TCP segment's payload; cut out every record it completes."""
        expected = self.next_seq[side]
        end = (seq + len(payload)) % 2**32
        if expected is not None:
            skip = (expected - seq) % 2**32
            if skip >= 2**31:          # a gap: bytes are missing, resynchronise here
                self.buf[side] = b""
            else:                      # retransmitted bytes we already have
                payload = payload[skip:]
        if expected is None or (end - expected) % 2**32 < 2**31:
            self.next_seq[side] = end
        buf = self.buf[side] + payload
        before = len(self.records)
        while len(buf) >= 5:
            length = int.from_bytes(buf[3:5], "big")
            if buf[0] not in CONTENT_TYPES or buf[1] != 3:
                self.records.append(TLSRecord(pkt, side, buf[0],
                                              ["bytes that are not a TLS record"], False))
                buf = b""
                break
            if len(buf) < 5 + length:
                break
            self.records.append(self._record(side, buf[:5 + length], pkt))
            buf = buf[5 + length:]
        self.buf[side] = buf
        if payload and len(self.records) == before:
            self.partial.append(pkt)

    def _keys(self, which: Callable[[Iterable[bool]], bool] = all) -> bool:
        """Does the key log hold ``all`` (or ``any``) secrets this session needs?"""
        labels = _TLS13_SECRETS if self.version == TLS13 else ("CLIENT_RANDOM",)
        return which(self.client_random in self.keys.get(label, {}) for label in labels)

    @staticmethod
    def _opaque(rec: TLSRecord) -> TLSRecord:
        if rec.content_type == 22:     # TLS 1.2's Finished, as Wireshark calls it
            rec.names = ["Encrypted Handshake Message"]
        return rec

    def _record(self, side: str, raw: bytes, pkt: Packet) -> TLSRecord:
        ctype = raw[0]
        rec = TLSRecord(pkt, side, ctype, [CONTENT_TYPES[ctype]], False, length=len(raw) - 5)
        if self.version == TLS13:
            rec.encrypted = ctype == 23
        else:
            rec.encrypted = self.encrypting[side] and ctype != 20
        if rec.encrypted and not self._keys(any):
            return self._opaque(rec)   # no key: what any observer sees
        if side != self.reading:       # Scapy's session reads one side at a time
            self.session.mirror()
            self.reading = side
        try:   # strict: a record that fails its integrity check raises, never shows garbage
            parsed = TLS(raw, tls_session=self.session, strict_integrity=True)
            # a decrypted TLS 1.3 record is Scapy's TLS13, messages inside .inner
            msgs = parsed.inner.msg if rec.encrypted and self.version == TLS13 else parsed.msg
        except Exception:  # noqa: BLE001 - a wrong key, or bytes Scapy cannot dissect
            msgs = []
        if rec.encrypted:
            if not msgs or any(isinstance(m, Raw) for m in msgs):   # no or wrong key
                if not self._keys(all):
                    return self._opaque(rec)
                rec.names = ["undecryptable record"]
                return rec
            rec.decrypted = True
        names = [_message_name(m) for m in msgs if not isinstance(m, Raw)]
        rec.names = names or (["Handshake fragment"] if ctype == 22 else rec.names)
        if rec.decrypted and names == ["Application Data"]:
            rec.plaintext = b"".join(m.data for m in msgs)
        if ctype == 20 and self.version not in (None, TLS13):   # (None: after a HelloRetryRequest)
            self.encrypting[side] = True       # TLS 1.2: this side encrypts from now on
        for msg in msgs if not rec.encrypted else ():
            if _message_name(msg) == "ClientHello":
                self.hello = msg
            elif _message_name(msg) == "ServerHello":   # not a HelloRetryRequest
                self.server_hello = msg
                self.version = hello_facts(msg, client=False)["version_id"]
        return rec


def _ip(pkt: Packet) -> Any:
    return pkt[IP] if IP in pkt else pkt[IPv6] if IPv6 in pkt else None  # noqa: SIM401 - a Scapy packet has no .get()


def connections(packets: Iterable[Packet], keylog_text: str = "") -> list[TLSConnection]:
    """Every TCP connection in ``packets`` that carries TLS, in order of appearance."""
    keys = parse_keylog(keylog_text)
    conns: dict[tuple[str, int, str, int], TLSConnection] = {}
    order: list[TLSConnection] = []
    plain: set[tuple[str, int, str, int]] = set()  # connections that began with other than TLS
    for pkt in packets:
        ip = _ip(pkt)
        if ip is None or TCP not in pkt:
            continue
        tcp = pkt[TCP]
        key = (ip.src, tcp.sport, ip.dst, tcp.dport)
        back = (ip.dst, tcp.dport, ip.src, tcp.sport)
        if "S" in str(tcp.flags) and "A" not in str(tcp.flags):
            for k in (key, back):  # a new connection (maybe on a reused port pair)
                conns.pop(k, None)
                plain.discard(k)
            continue
        if key in plain or back in plain or not tcp.payload:
            continue
        payload = bytes(tcp.payload)
        conn = conns.get(key) or conns.get(back)
        if conn is None:
            # TLS starts with the client's ClientHello: a handshake record, message type 1
            if not (len(payload) >= 6 and payload[0] == 22 and payload[1] == 3
                    and payload[5] == 1):
                plain.add(key)
                continue
            conn = conns[key] = TLSConnection(key, keys)
            order.append(conn)
        conn.feed("client" if key == conn.client_key else "server", tcp.seq, payload, pkt)
    return order


# -- hello messages ----------------------------------------------------------------------
def _named(table: dict[int, str], ids: Iterable[int]) -> list[str]:
    return [table.get(i, f"0x{i:04x}") for i in ids]


def hello_facts(msg: Packet, *, client: bool) -> dict[str, Any]:
    """Stable facts of Scapy's ClientHello/ServerHello (no randoms, no key bytes)."""
    exts = {ext.type: ext for ext in msg.ext or []}
    facts: dict[str, Any] = {"legacy_version": tls_names()["versions"].get(msg.version, "?"),
                   "session_id_bytes": len(msg.sid or b"")}
    if client:
        facts["cipher_suites"] = _named(tls_names()["cipher_suites"], msg.ciphers or [])
    else:
        facts["cipher_suite_id"] = msg.cipher
        facts["cipher_suite"] = _named(tls_names()["cipher_suites"], [msg.cipher])[0]
    facts["extensions"] = [tls_names()["extensions"].get(k, str(k)) for k in exts]
    if 0 in exts:
        names = exts[0].servernames
        facts["sni"] = (names[0].servername.decode() if names else "") if client else True
    if 16 in exts:
        facts["alpn"] = [p.protocol.decode() for p in exts[16].protocols]
    if 43 in exts:
        versions = exts[43].versions if client else [exts[43].version]
        facts["supported_versions"] = _named(tls_names()["versions"], versions)
    if 10 in exts and client:
        facts["supported_groups"] = _named(tls_names()["named_groups"], exts[10].groups)
    if 51 in exts:
        shares = exts[51].client_shares if client else [exts[51].server_share]
        facts["key_share"] = [f"{_named(tls_names()['named_groups'], [s.group])[0]} "
                              f"({s.kxlen}-byte public key)" for s in shares]
    facts["pre_shared_key"] = 41 in exts
    if not client:
        facts["version_id"] = exts[43].version if 43 in exts else msg.version
        facts["version"] = _named(tls_names()["versions"], [facts["version_id"]])[0]
    return facts
