"""Recordings for replay mode: pcapng + JSON files, and what a recording shows.

    >>> save(path, packets, roles, meta)        # data/<name>.pcapng and data/<name>.json
    >>> packets, roles, summary, meta = load(path)
    >>> difference(live_entries, recorded_entries)   # None, or what differs in words

Replay never passes a recording off as the student's run: a recording keeps a summary
of its conversation in the terms lab servers count in (``server.conversation()``),
and :func:`difference` compares the two: connections, bytes and datagrams, then how the
bytes were split into segments each way, then how long each connection lasted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6
from scapy.packet import Packet

from labkit.capture.frames import Frames
from labkit.capture.pcapng import read, write
from labkit.servers.conversation import content_digest, conversation_entry, name_digest

__all__ = ["save", "load", "summarize", "difference", "merge"]

# A connection's length differs only if one lasted more than twice as long as the other and
# this much longer: a busy machine stretches a run by less (a sleep() in a lesson by ms).
SECONDS_APART = 0.5
# Seconds per segment, on average, above which a recording's writes were paced (a lesson's
# sleep() between them), so the kernel had no later write to merge into an earlier one.
PACED = 0.01

# A conversation entry (``labkit.servers.conversation.conversation_entry``): JSON-ready
Entry = dict[str, Any]
# A TCP connection, as the summary keys it: (server ip, port, client ip, port)
Key = tuple[str, int, str, int]


def save(path: Path, packets: Frames | Sequence[Packet], roles: dict[int, str],
         meta: dict[str, Any], *, iface: str = "lo") -> None:
    """Write the packets (pcapng) and, beside them, roles, summary and ``meta`` (JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = packets if isinstance(packets, Frames) else Frames.of_packets(packets)
    write(path, frames.frames, iface=iface)
    data = {"roles": {str(p): n for p, n in roles.items()},
            "summary": summarize(packets, roles), **meta}
    path.with_suffix(".json").write_text(json.dumps(data, indent=1, sort_keys=True))


def load(path: Path) -> tuple[list[Packet], dict[int, str], dict[str, Entry], dict[str, Any]]:
    """``(packets, roles, summary, meta)`` of a recording written by :func:`save`."""
    if not path.exists():
        raise FileNotFoundError(
            f"no recording {path}: run `python -m labkit record` "
            "(as root) to make the recordings"
        )
    packets = read(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    roles = {int(p): n for p, n in meta.pop("roles").items()}
    # Recordings made before summaries (or their segments) were saved: the packets say it.
    summary = meta.pop("summary", None)
    if not summary or any("segments" not in entry for entry in summary.values()):
        summary = summarize(packets, roles)
    return packets, roles, summary, meta


# -- what a recording shows, in the terms lab servers count in --------------------------------
def summarize(packets: Iterable[Packet], roles: dict[int, str]) -> dict[str, Entry]:
    """{server name: conversation entry} of captured packets (see ``conversation_entry``).

    Per TCP connection to a watched port (one the server answered with SYN-ACK), the
    payload bytes each way, counted once (by sequence number: retransmissions don't
    add), the sizes of the segments that carried them each way and the seconds from
    the client's SYN to the server's FIN or RST (both None for a connection with
    retransmissions: then they depend on what was lost); per UDP datagram its size;
    and a digest of what clients sent.
    """
    conns: dict[Key, dict[str, Any]] = {}   # connection -> facts
    udp: dict[int, dict[str, list[Any]]] = {p: {"in": [], "out": [], "digests": []}
                                             for p in roles}
    for pkt in packets:
        ip = pkt[IP] if IP in pkt else pkt[IPv6] if IPv6 in pkt else None  # noqa: SIM401 - a Scapy packet has no .get()
        if ip is None or ICMP in pkt or ICMPv6DestUnreach in pkt:
            continue  # ICMP errors quote packets: not a conversation's own bytes
        layer = pkt[TCP] if TCP in pkt else pkt[UDP] if UDP in pkt else None  # noqa: SIM401 - a Scapy packet has no .get()
        if layer is None:
            continue
        inbound = layer.dport in roles
        port = layer.dport if inbound else layer.sport
        if port not in roles:
            continue
        payload = bytes(layer.payload)
        if isinstance(layer, UDP):
            udp[port]["in" if inbound else "out"].append(len(payload))
            if inbound:
                udp[port]["digests"].append(hashlib.sha256(payload).hexdigest())
            continue
        server_ip, client_ip = (ip.dst, ip.src) if inbound else (ip.src, ip.dst)
        key = (server_ip, port, client_ip, layer.sport if inbound else layer.dport)
        facts = conns.setdefault(key, {"answered": False, "in": {}, "out": {}, "base": {},
                                       "sizes": {"in": [], "out": []}, "sent": {},
                                       "first": {}, "resent": set(), "start": None,
                                       "end": None})
        side = "in" if inbound else "out"
        flags = str(layer.flags)
        if "S" in flags:
            facts["base"][side] = layer.seq + 1  # data starts after the SYN
            facts["answered"] |= not inbound and "A" in flags
            if inbound and "A" not in flags:
                facts["start"] = float(pkt.time)
        if not inbound and facts["end"] is None and ("F" in flags or "R" in flags):
            facts["end"] = float(pkt.time)
        if payload:
            facts[side][layer.seq] = payload
            _note_segment(facts, side, layer.seq, len(payload))
    streams = {key: (_stream(facts["in"], facts["base"].get("in")),
                     _stream(facts["out"], facts["base"].get("out")))
               for key, facts in conns.items() if facts["answered"]}  # else: refused, or
    tls_names = _tls_names(packets, streams)  # begun before the capture: no server counted it
    summary: dict[str, Entry] = {}
    for port, name in roles.items():
        connections: list[tuple[int, int]] = []
        digests: list[str] = []
        segments: list[list[list[int] | None]] = []
        seconds: list[float | None] = []
        for key, ((stream_in, count_in), (_s, count_out)) in streams.items():
            if key[1] != port:
                continue
            connections.append((count_in, count_out))
            digests.append(name_digest(tls_names[key]) if key in tls_names
                           else hashlib.sha256(stream_in).hexdigest())
            facts = conns[key]  # after a loss, how bytes were split and how long it took
            start, end = facts["start"], facts["end"]  # depend on luck: no claim
            lossless = not facts["resent"]
            segments.append([facts["sizes"][side] if lossless else None
                             for side in ("in", "out")])
            seconds.append(round(end - start, 6) if lossless and None not in (start, end)
                           else None)
        dgrams = udp[port]
        entry = conversation_entry(connections, dgrams["in"], dgrams["out"],
                                   content_digest(digests + dgrams["digests"]),
                                   segments, seconds)
        summary[name] = merge(summary.get(name), entry)
    return summary


def _note_segment(facts: dict[str, Any], side: str, seq: int, size: int) -> None:
    """Add a data segment's size to its direction, or mark the direction as resent."""
    first = facts["base"].get(side, facts["first"].setdefault(side, seq))  # no SYN: 1st data
    offset = (seq - first) % 2**32
    if offset < facts["sent"].get(side, 0):
        facts["resent"].add(side)  # some of these bytes were sent before
    facts["sent"][side] = max(facts["sent"].get(side, 0), offset + size)
    facts["sizes"][side].append(size)


def _tls_names(packets: Iterable[Packet],
               streams: dict[Key, tuple[tuple[bytes, int], tuple[bytes, int]]]
               ) -> dict[Key, str]:
    """{connection: the name its TLS ClientHello asks for}, for the TLS connections."""
    if not any(s[0][0][:1] == b"\x16" for s in streams.values()):
        return {}  # no stream starts with a TLS handshake record: skip the TLS dissector
    from labkit.protocols.tlsdissect import connections, hello_facts

    names: dict[Key, str] = {}
    for conn in connections(packets):
        if conn.hello is not None:
            client_ip, client_port, server_ip, server_port = conn.client_key
            names[(server_ip, server_port, client_ip, client_port)] = hello_facts(
                conn.hello, client=True).get("sni", "")
    return names


def _stream(pieces: dict[int, bytes], base: int | None) -> tuple[bytes, int]:
    """One direction of a TCP connection: its bytes in order, and how many there were."""
    if not pieces:
        return b"", 0
    base = min(pieces) if base is None else base  # (seq wrap-around aside: loopback is short)
    stream = bytearray()
    for offset, data in sorted(((seq - base) % 2**32, data) for seq, data in pieces.items()):
        if offset + len(data) > len(stream):  # a retransmission adds nothing new
            stream += data[max(0, len(stream) - offset):]
    return bytes(stream), len(stream)


def merge(old: Entry | None, new: Entry) -> Entry:
    """Two servers (or ports) with one name count as one."""
    if old is None:
        return new
    both = [old["content_in"], new["content_in"]]
    return conversation_entry(old["connections"] + new["connections"],
                              old["datagrams_in"] + new["datagrams_in"],
                              old["datagrams_out"] + new["datagrams_out"],
                              content_digest(both) if None not in both else None,
                              _each(old, "segments", [None, None]) + _each(new, "segments",
                                                                           [None, None]),
                              _each(old, "seconds", None) + _each(new, "seconds", None))


def _each(entry: Entry, key: str, unknown: object) -> list[Any]:
    """``entry[key]``, one per connection (an entry from before that key: all unknown)."""
    given: list[Any] | None = entry.get(key)
    return given or [unknown] * len(entry["connections"])


def difference(live: list[Entry], recorded: list[Entry]) -> str | None:
    """What differs between two lists of conversation entries, in words; None if nothing."""
    mine, theirs = _totals(live), _totals(recorded)
    said = []
    for key, text in (("connections", "your run opened {} TCP connection(s)"),
                      ("bytes_in", "your run sent {} bytes"),
                      ("bytes_out", "the server sent {} bytes back"),
                      ("datagrams_in", "your run sent {} datagram(s) of {} bytes"),
                      ("datagrams_out", "the server sent {} datagram(s) of {} bytes")):
        a, b = mine[key], theirs[key]
        if a is None or b is None or _overlap(a, b):  # None: unknown (a TLS server's bytes)
            continue
        a, b = (text.format(*(_words(x) for x in v)) for v in (a, b))
        said.append(f"{a} (this recording: {b.split(' ', 3)[3]})")  # b: "your run sent 5 bytes"
    if said:
        return "; ".join(said)
    if not _same_shapes(mine["shapes"], theirs["shapes"]):
        return "your run split the same bytes differently (other message or connection sizes)"
    if None not in (mine["content"], theirs["content"]) and mine["content"] != theirs["content"]:
        return "your run sent other bytes than this recording (of the same sizes)"
    return _split_differently(live, recorded)


def _split_differently(live: list[Entry], recorded: list[Entry]) -> str | None:
    """How the same bytes were carried differently: segments each way, or how long a
    connection lasted (far apart only: see ``SECONDS_APART``).  None if not, or unknown."""
    mine, theirs = _per_connection(live), _per_connection(recorded)
    for (*_bytes, segs_a, secs_a), (*_b, segs_b, secs_b) in zip(mine, theirs, strict=False):
        for who, count, sizes in (("your run", segs_a[0], segs_b[0]),
                                  ("the server", segs_a[1], segs_b[1])):
            if count is None or sizes is None or _same_writes(count, sizes, secs_b):
                continue
            return (f"{who} sent its {sum(sizes)} bytes in {count} "
                    f"segment{'s' * (count != 1)} (this recording: {_sizes_words(sizes)})")
        if secs_a is not None and secs_b is not None:
            short, long = sorted((secs_a, secs_b))
            if long > 2 * short and long - short > SECONDS_APART:
                return (f"a connection of your run lasted {secs_a:.2f} s "
                        f"(this recording: {secs_b:.2f} s)")
    return None


def _same_writes(count: int, sizes: list[int], seconds: float | None) -> bool:
    """Could the writes that made the recording's segments ``sizes`` have crossed in
    ``count`` segments on another run?  The kernel merges writes queued behind an unsent or
    unacknowledged one (Nagle, autocork, a busy machine), so back-to-back writes may take
    anything from one segment to one each; no merging keeps more segments than writes.

        >>> _same_writes(64, [64, 128, 14208, 1984], 0.004)   # writes of 64, merged here
        True
        >>> _same_writes(2, [4, 4, 4, 4, 4], 0.4)             # paced pieces of 4, not of 10
        False
    """
    if count == len(sizes) or not sizes:  # (none recorded: the bytes said any difference)
        return count == len(sizes)
    body = sizes[:-1] or sizes  # the last write may be shorter
    equal = len(set(body)) == 1 and sizes[-1] <= body[0]  # one write each, none merged
    # merged: no more writes than the smallest segment fits into the bytes
    most = len(sizes) if equal else sum(sizes) // min(body)
    paced = seconds is not None and seconds >= PACED * len(sizes)
    least = -(-len(sizes) // 2) if paced else 1  # paced: a busy moment may merge a pair
    return least <= count <= most


def _per_connection(entries: list[Entry]) -> list[tuple[Any, ...]]:
    """``(bytes in, bytes out, [segments in, out], seconds)`` per connection, sorted by
    bytes then segments, so both sides pair the same connections whatever their order."""
    rows = []
    for entry in entries:
        for conn, segs, secs in zip(entry["connections"], _each(entry, "segments",
                                                                [None, None]),
                                    _each(entry, "seconds", None), strict=True):
            rows.append((_span(conn[0])[0], conn[1] if isinstance(conn[1], int) else -1,
                         segs, secs))

    def count(segs: list[Any]) -> tuple[int, ...]:
        return tuple(-1 if s is None else s if isinstance(s, int) else len(s) for s in segs)

    return sorted(rows, key=lambda row: (row[0], row[1], count(row[2])))


def _sizes_words(sizes: list[int]) -> str:
    """``[4, 4, 4]`` -> "3 segments of 4 bytes"; ``[10, 6]`` -> "2 segments: 10, 6 bytes"."""
    if len(set(sizes)) == 1:
        return f"{len(sizes)} segment{'s' * (len(sizes) != 1)} of {sizes[0]} bytes"
    if len(sizes) <= 5:
        return f"{len(sizes)} segments: {', '.join(map(str, sizes))} bytes"
    return f"{len(sizes)} segments of {min(sizes)} to {max(sizes)} bytes"


def _span(value: int | Sequence[int]) -> tuple[int, int]:
    """A count as (low, high): the kernel may not know one FIN byte (see tcp_payload_counts)."""
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _totals(entries: list[Entry]) -> dict[str, Any]:
    # bytes in are always counted; bytes out may be unknown (None: a TLS server's)
    conns = [(_span(c[0]), None if c[1] is None else _span(c[1]))
             for e in entries for c in e["connections"]]
    dgrams = {side: [n for e in entries for n in e[f"datagrams_{side}"]] for side in ("in", "out")}
    outs = [c[1] for c in conns]
    contents = [e["content_in"] for e in entries]

    def point(n: int) -> tuple[int, int]:
        return n, n

    def added(spans: Iterable[tuple[int, int]]) -> tuple[tuple[int, ...]]:
        return (tuple(map(sum, zip((0, 0), *spans, strict=True))),)

    return {"connections": (point(len(conns)),),
            "bytes_in": added(c[0] for c in conns),
            "bytes_out": None if None in outs else added(c for c in outs if c is not None),
            "datagrams_in": (point(len(dgrams["in"])), point(sum(dgrams["in"]))),
            "datagrams_out": (point(len(dgrams["out"])), point(sum(dgrams["out"]))),
            "shapes": (sorted(conns, key=lambda c: c[0]), sorted(dgrams["in"]),
                       sorted(dgrams["out"])),
            "content": None if None in contents else content_digest(contents)}


def _overlap(a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]) -> bool:
    """Could two tuples of (low, high) counts be the same counts?"""
    return all(x[0] <= y[1] and y[0] <= x[1] for x, y in zip(a, b, strict=True))


def _words(span: tuple[int, int]) -> str:
    return str(span[0]) if span[0] == span[1] else f"{span[0]} or {span[1]}"


def _same_shapes(mine: tuple[Any, ...], theirs: tuple[Any, ...]) -> bool:
    """Same sizes per connection (each way) and per datagram, in any order."""
    conns_a, conns_b = mine[0], theirs[0]
    if len(conns_a) != len(conns_b) or mine[1:] != theirs[1:]:
        return False
    return all(_overlap((a[0],), (b[0],)) and (a[1] is None or b[1] is None
                                               or _overlap((a[1],), (b[1],)))
               for a, b in zip(conns_a, conns_b, strict=True))
