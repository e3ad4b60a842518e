"""TLS views of a whole capture: a table of records, the handshake, its stable facts.

    >>> tls_records(wire)            # one row per TLS record
    >>> client_hello(wire)           # SNI, ALPN, versions, key share ... (stable facts)
    >>> handshake_round_trips(wire)  # 1 for TLS 1.3, 2 for TLS 1.2
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.capture.flows import dissect, segments
from labkit.protocols.tls import TLSView, numbered_connections
from labkit.views.table import html_notes, html_table, text_table

if TYPE_CHECKING:
    from labkit.capture.capture import Capture
    from labkit.protocols.tlsdissect import TLSConnection, TLSRecord

__all__ = ["RecordTable", "tls_records", "handshake", "client_hello", "server_hello",
           "handshake_round_trips"]


def _capture_meta(wire: Capture) -> dict[str, Any]:
    meta: dict[str, Any] = getattr(wire, "meta", None) or {}
    return meta


class RecordTable(list["TLSRecord"]):
    """TLS records of a capture, one per row (text, and HTML in Jupyter).

    Attributes:
        COLUMNS: the table's column headings
        EMPTY: what it says when there are no records
        notice: the capture's notice (e.g. a recording unlike your run), shown first
    """

    COLUMNS = ("from → to", "TLS record")
    EMPTY = "(no TLS records)"
    notice: str | None = None

    def rows(self) -> list[list[str]]:
        """The table's cells: who sent each record to whom, and what it is."""
        return [[f"{r.src} → {r.dst}", r.text] for r in self]

    def __str__(self) -> str:
        text = text_table(self.COLUMNS, self.rows(), empty=self.EMPTY)
        return f"{self.notice}\n{text}" if self.notice else text

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colors = ["#b2182b" if r.encrypted else "#1b7837" for r in self]
        return html_notes(self.notice) + html_table(self.COLUMNS, self.rows(), colors,
                                                    empty=self.EMPTY)


def tls_records(wire: Capture, *, decrypt: bool = True) -> RecordTable:
    """Every TLS record in a capture, in order, with role names and packet numbers.

    ``decrypt=False`` shows what an observer without the key log sees.
    """
    packets = wire.packets
    dissection = dissect(packets, _capture_meta(wire) if decrypt else {})
    tls = dissection.find(TLSView)
    out = RecordTable()
    out.notice = getattr(wire, "notice", None)
    for seg in segments(packets, wire.roles, dissection=dissection):
        for rec in tls.records(seg.packet) or []:
            rec.index, rec.src, rec.dst = seg.index, seg.src, seg.dst
            out.append(rec)
    return out


def handshake(wire: Capture, connection: int = 0) -> dict[str, list[str]]:
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


def _conn(wire: Capture, which: int) -> TLSConnection:
    conns = numbered_connections(wire.packets, _capture_meta(wire).get("tls_keylog", ""))
    if not conns:
        raise ValueError("no TLS connection in this capture: did the client speak TLS "
                         "to a server the capture watches?")
    if not -len(conns) <= which < len(conns):
        raise ValueError(f"connection={which} is out of range: this capture has "
                         f"{len(conns)} TLS connection(s)")
    return conns[which]


def client_hello(wire: Capture, connection: int = 0) -> dict[str, Any]:
    """Stable facts of the ClientHello of TLS connection ``connection`` (0 = first)."""
    conn = _conn(wire, connection)
    if conn.hello is None:
        raise ValueError("the capture has no complete ClientHello")
    from labkit.protocols.tlsdissect import hello_facts

    return hello_facts(conn.hello, client=True)


def server_hello(wire: Capture, connection: int = 0) -> dict[str, Any]:
    """Stable facts of the ServerHello: chosen version, cipher suite, key share ..."""
    conn = _conn(wire, connection)
    if conn.server_hello is None:
        raise ValueError("the capture has no ServerHello: did the handshake fail first?")
    from labkit.protocols.tlsdissect import hello_facts

    facts = hello_facts(conn.server_hello, client=False)
    facts.pop("cipher_suite_id")
    facts.pop("version_id")
    return facts


def handshake_round_trips(wire: Capture, connection: int = 0) -> int:
    """Round trips of TLS the client waits for before it sends its first application data.

    Counts the server's handshake flights that arrive before the client's first
    Application Data record (a flight of only NewSessionTickets does not count: the
    client does not wait for it).  Add one for TCP's own handshake.
    """
    conn = _conn(wire, connection)
    from labkit.protocols.tlsdissect import TLS13

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

