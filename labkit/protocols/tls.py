"""TLS in captures: name every record, decrypt with a key log, save pcapng with the keys.

TLS is recognised by content, on any port: a TCP stream whose client starts with a
ClientHello.  Each record is named (``ClientHello``, ``ServerHello``, ``ChangeCipherSpec``,
...) and encrypted records are marked 🔒; given the session's key log (NSS format, as
written by ``SSLContext.keylog_filename`` / ``SSLKEYLOGFILE``) Scapy's TLS layer decrypts
them, so TLS 1.3's hidden ``EncryptedExtensions``/``Certificate``/``Finished`` and the
application data show up too.  Dissection lives in ``_tlsdissect``; this module turns
its records into the views and facts the notebooks show.

    >>> tls_records(wire)            # one row per TLS record
    >>> client_hello(wire)           # SNI, ALPN, versions, key share ... (stable facts)
    >>> save_with_keylog("x.pcapng", packets, keylog_text)   # Wireshark decrypts it as is
"""

from __future__ import annotations

import html

from labkit.protocols.tlsdissect import (TLS13, TLSConnection, TLSRecord, connections, hello_facts,
                          keylog_for, parse_keylog, save_with_keylog, show_data)

__all__ = ["TLSRecord", "RecordTable", "analyse", "tls_records", "handshake", "client_hello",
           "server_hello", "handshake_round_trips", "save_with_keylog", "keylog_for",
           "parse_keylog"]


# -- analysis of a capture -------------------------------------------------------------
ATTR = "labkit_tls"   # attribute set on each Scapy packet: list of TLSRecord, or None


def analyse(packets, meta: dict | None = None) -> list[TLSConnection]:
    """Find TLS connections in ``packets`` and annotate each packet with its records.

    ``meta["tls_keylog"]`` (NSS key log text) decrypts what it has keys for.
    Registered with the capture module, so every ``Capture.segments`` runs it.
    """
    for pkt in packets:
        setattr(pkt, ATTR, None)
    conns = connections(packets, (meta or {}).get("tls_keylog", ""))
    for n, conn in enumerate(conns):
        for rec in conn.records:
            rec.connection = n
            recs = getattr(rec.packet, ATTR) or []
            recs.append(rec)
            setattr(rec.packet, ATTR, recs)
        for pkt in conn.partial:
            if getattr(pkt, ATTR) is None:
                setattr(pkt, ATTR, [])
    return conns


def _packet_text(recs: list[TLSRecord], *, lock: bool = True) -> str:
    if not recs:
        return "TLS (part of a record)"
    parts: list[list] = []  # [text, count]
    for rec in recs:
        text = rec.text if lock else rec.name + (": " + show_data(rec.plaintext)
                                                  if rec.plaintext else "")
        if parts and parts[-1][0] == text and not rec.plaintext:
            parts[-1][1] += 1
        else:
            parts.append([text, 1])
    return " · ".join(t + (f" ×{n}" if n > 1 else "") for t, n in parts)


def _describe_tls(payload: bytes, pkt) -> str | None:
    recs = getattr(pkt, ATTR, None)
    if recs is None:
        return None
    return _packet_text(recs)


def _ladder_label(seg) -> str | None:
    recs = getattr(seg.packet, ATTR, None) if seg.packet is not None else None
    if recs is None:
        return None
    plain = [r for r in recs if not r.encrypted]
    secret = [r for r in recs if r.encrypted]
    text = _packet_text(plain, lock=False) if plain else ""
    if secret:
        text += ("\n" if plain else "") + "encrypted: " + _packet_text(secret, lock=False)
    return text or _packet_text(recs, lock=False)


def _capture_meta(wire) -> dict:
    return getattr(wire, "meta", None) or {}


class RecordTable(list):
    """TLS records of a capture, one per row (text, and HTML in Jupyter)."""

    COLUMNS = ("from → to", "TLS record")

    def rows(self) -> list[list[str]]:
        return [[f"{r.src} → {r.dst}", r.text] for r in self]

    def __str__(self):
        rows = self.rows()
        if not rows:
            return "(no TLS records)"
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(self.COLUMNS)]

        def line(cells):
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

        return "\n".join([line(self.COLUMNS), line(["-" * w for w in widths])]
                         + [line(r) for r in rows])

    __repr__ = __str__

    def _repr_html_(self):
        if not self:
            return "<p><em>(no TLS records)</em></p>"
        head = "".join(f"<th style='text-align:left'>{c}</th>" for c in self.COLUMNS)
        body = "".join(
            f"<tr style='color:{'#b2182b' if r.encrypted else '#1b7837'}'>"
            + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in row) + "</tr>"
            for r, row in zip(self, self.rows()))
        return ("<table style='font-family:monospace;font-size:110%'>"
                f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def tls_records(wire, *, decrypt: bool = True) -> RecordTable:
    """Every TLS record in a capture, in order, with role names and packet numbers.

    ``decrypt=False`` shows what an observer without the key log sees.
    """
    from labkit.capture.flows import segments

    packets = wire.packets
    analyse(packets, _capture_meta(wire) if decrypt else {})
    out = RecordTable()
    for seg in segments(packets, wire.roles):
        for rec in getattr(seg.packet, ATTR, None) or []:
            rec.index, rec.src, rec.dst = seg.index, seg.src, seg.dst
            out.append(rec)
    return out


def handshake(wire, connection: int = 0) -> dict[str, list[str]]:
    """The handshake of one TLS connection: each side's records up to its Finished.

    Needs the key log for TLS 1.3 (where Finished is encrypted).
    """
    conn = _conn(wire, connection)
    out: dict[str, list[str]] = {"client": [], "server": []}
    done: set[str] = set()
    for rec in conn.records:
        if rec.sender in done:
            continue
        out[rec.sender].extend(rec.names)
        if "Finished" in rec.names or rec.names[0].startswith("Alert"):
            done.add(rec.sender)
    return out


def _conn(wire, which: int) -> TLSConnection:
    conns = analyse(wire.packets, _capture_meta(wire))
    if not conns:
        raise ValueError("no TLS connection in this capture: did the client speak TLS "
                         "to a server the capture watches?")
    if not -len(conns) <= which < len(conns):
        raise ValueError(f"connection={which} is out of range: this capture has "
                         f"{len(conns)} TLS connection(s)")
    return conns[which]


def client_hello(wire, connection: int = 0) -> dict:
    """Stable facts of the ClientHello of TLS connection ``connection`` (0 = first)."""
    conn = _conn(wire, connection)
    if conn.hello is None:
        raise ValueError("the capture has no complete ClientHello")
    return hello_facts(conn.hello, client=True)


def server_hello(wire, connection: int = 0) -> dict:
    """Stable facts of the ServerHello: chosen version, cipher suite, key share ..."""
    conn = _conn(wire, connection)
    if conn.server_hello is None:
        raise ValueError("the capture has no ServerHello: did the handshake fail first?")
    facts = hello_facts(conn.server_hello, client=False)
    facts.pop("cipher_suite_id")
    facts.pop("version_id")
    return facts


def handshake_round_trips(wire, connection: int = 0) -> int:
    """Round trips of TLS the client waits for before it sends its first application data.

    Counts the server's handshake flights that arrive before the client's first
    Application Data record (a flight of only NewSessionTickets does not count: the
    client does not wait for it).  Add one for TCP's own handshake.
    """
    conn = _conn(wire, connection)
    if conn.version == TLS13 and not any(r.decrypted for r in conn.records):
        raise ValueError("in TLS 1.3 application data looks like every other encrypted "
                         "record: give the capture the session's key log (Capture(keylog=...))")
    flights, in_server_flight, ticket_only = 0, False, True
    for rec in conn.records:
        if rec.sender == "server":
            if not in_server_flight:
                in_server_flight, ticket_only = True, True
            ticket_only &= rec.names == ["NewSessionTicket"]
            continue
        if in_server_flight and not ticket_only:
            flights += 1
        in_server_flight = False
        if rec.content_type == 23 or rec.names == ["Application Data"]:
            return flights
    raise ValueError("the client sent no application data in this capture")



def _register() -> None:
    """Teach the capture, the flows and the views about TLS (idempotent)."""
    from labkit.capture import capture as _capture
    from labkit.capture import flows as _flows
    from labkit.views import ladder as _views

    if _describe_tls not in _flows.PAYLOAD_DESCRIBERS:
        _flows.PAYLOAD_DESCRIBERS.insert(0, _describe_tls)
    if _ladder_label not in _views.LABELLERS:
        _views.LABELLERS.insert(0, _ladder_label)
    if analyse not in _capture.ANALYSERS:
        _capture.ANALYSERS.append(analyse)


_register()
