"""Capture what crossed the loopback interface, or replay a recording of it.

    >>> with TCPServer() as server, Capture(server, name="hello") as wire:
    ...     with socket.create_connection(server.address) as s:
    ...         s.sendall(b"hello"); s.recv(1024)
    >>> wire.table(); wire.ladder(); wire.save("hello.pcapng")

Modes (``LABKIT_CAPTURE``, or chosen by :func:`capture_mode`):

* ``live``   - Scapy sniffs ``lo``; needs CAP_NET_RAW.
* ``replay`` - no privilege: the packet views show ``data/<name>.pcapng``, recorded by
  ``python -m labkit record`` running the same notebook cell.  Servers still run live.
* ``record`` - live, and the capture is also written to ``data/`` for replay mode.

Replay never passes a recording off as the student's run.  A recording's ``.json``
keeps a summary of its conversation (per server: payload bytes each way per TCP
connection, UDP datagram sizes each way, a digest of what clients sent), and lab
servers count the same things live (``server.conversation()``).  When a replayed
``with`` block ends, the two are compared: ``wire.matches_recording`` is True or
False, and a difference is printed in one line (``wire.difference``); it is None
(nothing printed) when a watched target cannot count - a port number, or a server
labkit does not run the I/O for (BackgroundServer, serve_in_thread, WSGIServer,
WebSocketServer, UDPRelay).  ``wire.live_summary`` is what the servers saw.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import socket
import socketserver
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

from scapy.arch.linux import L2ListenSocket
from scapy.config import conf
from scapy.data import MTU
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, IPerror6, IPv6
from scapy.plist import PacketList
from scapy.sendrecv import AsyncSniffer
from scapy.utils import rdpcap, wrpcapng

from labkit.capture.flows import Segment, TcpTracker, segments
from labkit.servers.base import content_digest, conversation_entry, name_digest

__all__ = ["Capture", "capture_mode", "DATA_DIR"]

DATA_DIR = Path(os.environ.get("LABKIT_DATA", Path(__file__).resolve().parents[2] / "data"))
MODES = ("auto", "live", "replay", "record")
READY_TIMEOUT = 5.0   # seconds for the sniffer to open its socket
SETTLE_TIMEOUT = 2.0  # seconds to wait for in-flight packets and final ACKs on exit
STOP_TIMEOUT = 5.0    # seconds for the sniffer thread to end once told to
# A name becomes a file name, data/<name>.pcapng: no separators, no leading dot or dash.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
ONE_BLOCK = "a Capture records one `with` block; create a new Capture(...) for another"
LIVE_HOW = "run with the lab kernel to see your own packets (`python -m labkit doctor` says how)"

conf.verb = 0

# Functions (packets, meta) run before a capture's packets are described, e.g. TLS
# record naming and decryption with meta["tls_keylog"] (labkit.protocols.tls adds one).
ANALYSERS: list = []


def capture_mode() -> tuple[str, str]:
    """Return ``(mode, reason)``: which capture mode applies here, and why."""
    wanted = os.environ.get("LABKIT_CAPTURE", "auto").strip().lower() or "auto"
    if wanted not in MODES:
        raise ValueError(
            f"LABKIT_CAPTURE={wanted!r} is not a capture mode; use one of {', '.join(MODES)}"
        )
    if wanted == "replay":
        return "replay", "LABKIT_CAPTURE=replay asks for recordings"
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
    except PermissionError:
        if wanted != "auto":
            raise PermissionError(
                f"LABKIT_CAPTURE={wanted} needs CAP_NET_RAW to sniff packets, which the lab "
                "kernel 'Python 3 (netlab)' has in its own network; this kernel has not "
                "(`python -m labkit doctor` says why and what to change), so use the lab "
                "kernel, or unset LABKIT_CAPTURE to fall back to recordings"
            ) from None
        return "replay", "this kernel may not open raw sockets (no CAP_NET_RAW)"
    if wanted == "record":
        return "record", "LABKIT_CAPTURE=record writes recordings to data/"
    return "live", "this Python may open raw sockets (CAP_NET_RAW)"


class _DirectionalListenSocket(L2ListenSocket):
    """Like Scapy's listen socket, but remembers whether each packet was outgoing.

    On ``lo`` the kernel hands a raw socket every packet twice: once as it leaves
    (PACKET_OUTGOING) and once as it arrives.  We show only the arriving copy and
    count the leaving ones to know when nothing is still in flight.
    """

    last_outgoing = False

    def recv_raw(self, x=MTU):
        from scapy.arch.linux import get_last_packet_timestamp

        pkt, sa_ll, ts = self._recv_raw(self.ins, x)
        if ts is None:
            ts = get_last_packet_timestamp(self.ins)
        self.last_outgoing = sa_ll[2] == socket.PACKET_OUTGOING
        return self.LL, pkt, ts


SOL_PACKET, PACKET_STATISTICS = 263, 6
SO_RCVBUFFORCE = 33  # Linux; not exported by Python's socket module
CAPTURE_BUFFER = 32 * 1024 * 1024  # bytes: a bulk transfer on lo must not overflow it


def _enlarge_receive_buffer(sock: socket.socket) -> None:
    """Ask for a big queue; SO_RCVBUFFORCE (root) may exceed the rmem_max limit."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, CAPTURE_BUFFER)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CAPTURE_BUFFER)


def _kernel_drops(sock: socket.socket) -> int:
    """Packets the kernel dropped because our queue was full (PACKET_STATISTICS)."""
    stats = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    return int.from_bytes(stats[4:8], sys.byteorder)


PROTOCOLS = ("tcp", "udp")
_IP_PROTO = {"tcp": 6, "udp": 17}  # the protocol byte of an IP header quoted in an ICMP error


class _Endpoint(NamedTuple):
    """One watched socket as it shows on the wire: protocol, address and port.

    ``protocol`` None means TCP and UDP, ``host`` None any address: that is all a bare
    port number tells us.  A server tells both, so packets that merely share its port
    number (another process, another loopback address, the other protocol) stay out.
    """

    port: int
    protocol: str | None = None
    host: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None

    def matches(self, protocol: str, src: str, sport: int, dst: str, dport: int) -> bool:
        if self.protocol not in (None, protocol):
            return False
        return any(port == self.port and (self.host is None or _ip(addr) == self.host)
                   for addr, port in ((src, sport), (dst, dport)))

    def bpf(self) -> str:
        """Packets of this socket, and ICMP errors quoting one (e.g. port unreachable)."""
        proto = self.protocol or "(tcp or udp)"
        if self.host is None:
            clauses = [f"({proto} and port {self.port})"]
        else:
            h, p = self.host, self.port
            clauses = [f"({proto} and ((src host {h} and src port {p})"
                       f" or (dst host {h} and dst port {p})))"]
        # The quoted IP header follows the 8-byte ICMP header (20 bytes for IPv4, 40 for
        # IPv6), then the quoted TCP/UDP ports; BPF compares at most 4 bytes at a time.
        for icmp, version, proto_at, src_at, dst_at, ports_at in (
                ("icmp", 4, 17, 20, 24, 28), ("icmp6", 6, 14, 16, 32, 48)):
            if self.host is not None and self.host.version != version:
                continue
            tests = [f"{icmp}[{proto_at}] = {_IP_PROTO[self.protocol]}"] if self.protocol else []
            sport = f"{icmp}[{ports_at}:2] = {self.port}"
            dport = f"{icmp}[{ports_at + 2}:2] = {self.port}"
            if self.host is None:
                tests.append(f"({sport} or {dport})")
            else:
                src = _bpf_address(icmp, src_at, self.host)
                dst = _bpf_address(icmp, dst_at, self.host)
                tests.append(f"(({src} and {sport}) or ({dst} and {dport}))")
            clauses.append(f"({icmp} and {' and '.join(tests)})")
        return " or ".join(clauses)


def _ip(address: str):
    ip = ipaddress.ip_address(address.split("%")[0])  # drop an IPv6 scope ("fe80::1%lo")
    if ip.version == 6 and ip.ipv4_mapped:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 travels as IPv4
    return ip


def _bpf_address(icmp: str, offset: int, ip) -> str:
    words = [ip.packed[i:i + 4] for i in range(0, len(ip.packed), 4)]
    return " and ".join(f"{icmp}[{offset + 4 * i}:4] = 0x{w.hex()}" for i, w in enumerate(words))


def _host_of(address) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP a server is bound to; None (any address) for a wildcard or a name."""
    try:
        ip = _ip(str(address[0]))
    except (ValueError, TypeError, IndexError):
        return None
    return None if ip.is_unspecified else ip


def _protocol_of(server) -> str | None:
    """'tcp' or 'udp' for a server; None if it does not tell (then both are watched).

    In order: a ``protocol`` attribute (for servers written elsewhere), the type of a
    ``socket`` attribute (socketserver servers), then the lab servers by class - they
    keep their sockets private, and none of them can switch protocol.
    """
    declared = getattr(server, "protocol", None)
    if declared in PROTOCOLS:
        return declared
    sock = getattr(server, "socket", None)
    if isinstance(sock, socket.socket):
        return {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp"}.get(sock.type)
    from labkit.servers.dns import DNSServer
    from labkit.servers.load import BackgroundServer
    from labkit.servers.relay import UDPRelay
    from labkit.servers.base import TCPServer, UDPServer
    from labkit.servers.websocket import WebSocketServer
    from labkit.servers.wsgi import WSGIServer

    if isinstance(server, (TCPServer, WebSocketServer, WSGIServer, BackgroundServer)):
        return "tcp"  # TCPServer covers HTTPServer, TLSServer and HTTPSServer
    if isinstance(server, (UDPServer, UDPRelay, DNSServer)):
        return "udp"
    return None


def _port_number(port) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"Capture takes servers or port numbers, not {port!r}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1-65535")
    return port


def _server_endpoints(server, protocol: str | None) -> dict[int, tuple[str, _Endpoint]]:
    """{port: (role, endpoint)} of a running server object."""
    if isinstance(server, socketserver.BaseServer):  # e.g. http.server.HTTPServer
        address = server.server_address
        roles = {address[1]: "server"}
    else:
        try:
            if hasattr(type(server), "roles"):
                roles = dict(server.roles)
            else:
                roles = {server.port: server.name}
            address = getattr(server, "address", None)
        except RuntimeError as exc:  # a server that is not running has no port
            raise ValueError(
                f"{server!r} is not running: start it first, "
                "e.g. `with TCPServer() as server, Capture(server) as wire:`"
            ) from exc
    protocol = _protocol_of(server) or protocol
    # A relay's roles include its target, which may listen on another loopback address.
    target = getattr(server, "target", None)
    found = {}
    for port, role in roles.items():
        where = target if isinstance(target, tuple) and target[1:2] == (port,) else address
        found[_port_number(port)] = (str(role), _Endpoint(port, protocol, _host_of(where or ())))
    return found


def _watch(targets, protocol: str | None) -> tuple[dict[int, str], list[_Endpoint]]:
    """``({port: role}, endpoints)`` for Capture's arguments."""
    if protocol not in (None, *PROTOCOLS):
        raise ValueError(f"protocol must be 'tcp', 'udp' or None (both), not {protocol!r}")
    found: dict[int, tuple[str, _Endpoint]] = {}
    for target in targets:
        if isinstance(getattr(target, "server", None), socketserver.BaseServer):
            target = target.server  # serve_in_thread(...) itself rather than what it returns
        if isinstance(target, (int, bool)):
            port = _port_number(target)
            role = "server" if not found else f"server {len(found) + 1}"
            found[port] = (role, _Endpoint(port, protocol))
        elif isinstance(target, dict):
            for port, role in target.items():
                found[_port_number(port)] = (str(role), _Endpoint(port, protocol))
        elif (isinstance(target, socketserver.BaseServer) or hasattr(type(target), "roles")
              or (hasattr(type(target), "port") and hasattr(target, "name"))):
            found.update(_server_endpoints(target, protocol))
        else:
            raise TypeError(
                f"Capture takes servers, port numbers or {{port: name}} dicts, "
                f"not {type(target).__name__}"
            )
    if not found:
        raise ValueError("Capture needs at least one server or port to watch, e.g. Capture(server)")
    return {port: role for port, (role, _e) in found.items()}, [e for _r, e in found.values()]


def _check_name(name) -> None:
    if name is None:
        return
    if not isinstance(name, str):
        raise TypeError(f"recording name must be a str like '01-handshake', not {name!r}")
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"recording name {name!r} is not allowed: it names the file data/<name>.pcapng, "
            "so use 1-80 letters, digits, '-', '_' or '.', starting with a letter or digit, "
            "without '..', like '01-handshake'"
        )


# -- what a recording shows, in the terms lab servers count in --------------------------------
def summarize(packets, roles: dict[int, str]) -> dict[str, dict]:
    """{server name: conversation entry} of captured packets (see ``conversation_entry``).

    Per TCP connection to a watched port (one the server answered with SYN-ACK), the
    payload bytes each way, counted once (by sequence number: retransmissions don't
    add); per UDP datagram its size; and a digest of what clients sent.
    """
    conns: dict[tuple, dict] = {}   # (server ip, port, client ip, port) -> facts
    udp: dict[int, dict] = {p: {"in": [], "out": [], "digests": []} for p in roles}
    for pkt in packets:
        ip = pkt[IP] if IP in pkt else pkt[IPv6] if IPv6 in pkt else None
        if ip is None or ICMP in pkt or ICMPv6DestUnreach in pkt:
            continue  # ICMP errors quote packets: not a conversation's own bytes
        layer = pkt[TCP] if TCP in pkt else pkt[UDP] if UDP in pkt else None
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
        facts = conns.setdefault(key, {"answered": False, "in": {}, "out": {}, "base": {}})
        side = "in" if inbound else "out"
        flags = str(layer.flags)
        if "S" in flags:
            facts["base"][side] = layer.seq + 1  # data starts after the SYN
            facts["answered"] |= not inbound and "A" in flags
        if payload:
            facts[side][layer.seq] = payload
    streams = {key: (_stream(facts["in"], facts["base"].get("in")),
                     _stream(facts["out"], facts["base"].get("out")))
               for key, facts in conns.items() if facts["answered"]}  # else: refused, or
    tls_names = _tls_names(packets, streams)  # begun before the capture: no server counted it
    summary = {}
    for port, name in roles.items():
        connections, digests = [], []
        for key, ((stream_in, count_in), (_s, count_out)) in streams.items():
            if key[1] != port:
                continue
            connections.append((count_in, count_out))
            digests.append(name_digest(tls_names[key]) if key in tls_names
                           else hashlib.sha256(stream_in).hexdigest())
        dgrams = udp[port]
        entry = conversation_entry(connections, dgrams["in"], dgrams["out"],
                                   content_digest(digests + dgrams["digests"]))
        summary[name] = _merge(summary.get(name), entry)
    return summary


def _tls_names(packets, streams: dict) -> dict[tuple, str]:
    """{connection: the name its TLS ClientHello asks for}, for the TLS connections."""
    if not any(s[0][0][:1] == b"\x16" for s in streams.values()):
        return {}  # no stream starts with a TLS handshake record: skip the TLS dissector
    from labkit.protocols.tlsdissect import connections, hello_facts

    names = {}
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


def _merge(old: dict | None, new: dict) -> dict:
    """Two servers (or ports) with one name count as one."""
    if old is None:
        return new
    both = [old["content_in"], new["content_in"]]
    return conversation_entry(old["connections"] + new["connections"],
                              old["datagrams_in"] + new["datagrams_in"],
                              old["datagrams_out"] + new["datagrams_out"],
                              content_digest(both) if None not in both else None)


def _difference(live: list[dict], recorded: list[dict]) -> str | None:
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
    return None


def _span(value) -> tuple[int, int] | None:
    """A count as (low, high): the kernel may not know one FIN byte (see tcp_payload_counts)."""
    if value is None:
        return None
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _totals(entries: list[dict]) -> dict:
    conns = [(_span(c[0]), _span(c[1])) for e in entries for c in e["connections"]]
    dgrams = {side: [n for e in entries for n in e[f"datagrams_{side}"]] for side in ("in", "out")}
    outs = [c[1] for c in conns]
    contents = [e["content_in"] for e in entries]
    point = lambda n: (n, n)  # noqa: E731
    return {"connections": (point(len(conns)),),
            "bytes_in": (tuple(map(sum, zip((0, 0), *(c[0] for c in conns)))),),
            "bytes_out": None if None in outs else (tuple(map(sum, zip((0, 0), *outs))),),
            "datagrams_in": (point(len(dgrams["in"])), point(sum(dgrams["in"]))),
            "datagrams_out": (point(len(dgrams["out"])), point(sum(dgrams["out"]))),
            "shapes": (sorted(conns, key=lambda c: c[0]), sorted(dgrams["in"]),
                       sorted(dgrams["out"])),
            "content": None if None in contents else content_digest(contents)}


def _overlap(a: tuple, b: tuple) -> bool:
    """Could two tuples of (low, high) counts be the same counts?"""
    return all(x[0] <= y[1] and y[0] <= x[1] for x, y in zip(a, b))


def _words(span: tuple[int, int]) -> str:
    return str(span[0]) if span[0] == span[1] else f"{span[0]} or {span[1]}"


def _same_shapes(mine: tuple, theirs: tuple) -> bool:
    """Same sizes per connection (each way) and per datagram, in any order."""
    conns_a, conns_b = mine[0], theirs[0]
    if len(conns_a) != len(conns_b) or mine[1:] != theirs[1:]:
        return False
    return all(_overlap((a[0],), (b[0],)) and (a[1] is None or b[1] is None
                                               or _overlap((a[1],), (b[1],)))
               for a, b in zip(conns_a, conns_b))


class Capture:
    """Packets exchanged with the given servers (or ports), as table, ladder or pcapng.

    A server is watched by protocol, address and port: packets that only share its
    port number stay out.  A bare port number (or ``{port: name}``) watches TCP and
    UDP on any address; ``protocol="tcp"`` or ``"udp"`` narrows it.  ICMP errors
    quoting a watched packet (e.g. port unreachable) are captured too.

    ``name`` names the recording shown in replay mode (``data/<name>.pcapng``).
    ``keylog`` is a TLS key log file (``SSLContext.keylog_filename``): read on exit into
    ``meta["tls_keylog"]``, it decrypts TLS in the views and travels with recordings.
    A Capture records one ``with`` block; entering it again raises RuntimeError.

    In replay mode, ``matches_recording`` says whether the servers saw the conversation
    the recording shows (None: cannot tell), ``difference`` what differs, in words.
    """

    def __init__(self, *targets, name: str | None = None, iface: str = "lo", keylog=None,
                 protocol: str | None = None):
        _check_name(name)
        self.roles, self._endpoints = _watch(targets, protocol)
        self._targets = targets
        self.name = name
        self.iface = iface
        self.mode, self.reason = capture_mode()
        self.meta: dict = {}       # saved beside a recording (e.g. a TLS key log)
        self.keylog = keylog       # path of a TLS key log to read on exit (live modes)
        self.complete = True       # False if the exit gave up waiting for in-flight packets
        # Replay mode: did labkit's servers see the conversation the recording shows?
        # True / False, or None when that cannot be told (see the module docstring).
        self.matches_recording: bool | None = None
        self.live_summary: dict | None = None   # {server name: conversation entry}
        self.difference: str | None = None      # what differs, in words
        self._talkers = [t for t in targets if callable(getattr(t, "conversation", None))]
        self._marks: list = []                  # where each server's count started
        self._recorded_summary: dict = {}
        self._packets: list = []
        self._tracker = TcpTracker()
        self._sent = self._arrived = 0
        self._changed = threading.Condition()
        self._sniffer: AsyncSniffer | None = None
        self._sock: _DirectionalListenSocket | None = None
        self._fence: socket.socket | None = None
        self._fence_port = 0
        self._fence_seen = False
        self._state = "new"  # -> "running" -> "stopping" -> "done"; never back

    # -- starting and stopping ------------------------------------------------
    @property
    def bpf(self) -> str:
        """The kernel's filter: our endpoints, ICMP errors quoting them, and the fence."""
        ours = " or ".join(e.bpf() for e in self._endpoints)
        return f"{ours} or (udp and dst host 127.0.0.1 and dst port {self._fence_port})"

    @property
    def recording(self) -> Path | None:
        return DATA_DIR / f"{self.name}.pcapng" if self.name else None

    def __enter__(self) -> "Capture":
        with self._changed:  # one block per Capture: a second sniffer would leak
            if self._state != "new":
                where = "is already recording" if self._state == "running" else "has ended"
                raise RuntimeError(f"this Capture {where}: {ONE_BLOCK}")
            self._state = "running"
        if self.mode == "replay":
            if self.recording is None:
                print(f"▶ replay: nothing to show — this capture has no name, so no recording "
                      f"goes with it ({self.reason}); {LIVE_HOW}, or name it, "
                      "e.g. Capture(server, name=\"my-try\"), and record it with "
                      "`python -m labkit record`")
                return self
            where = self.recording.relative_to(DATA_DIR.parent)
            print(f"▶ replay: showing the recording {where} ({self.reason}); "
                  "for live capture see `python -m labkit doctor`")
            if len(self._talkers) == len(self._targets):  # every target can count
                self._marks = [t.conversation_mark() for t in self._talkers]
            return self
        try:
            self._start_sniffer()
        except BaseException:
            self._shutdown()  # no thread or raw socket outlives a failed start
            self._state = "done"
            raise
        ports = ", ".join(f"{n} port {p}" for p, n in self.roles.items())
        print(f"● live capture on {self.iface}: {ports}")
        return self

    def _start_sniffer(self) -> None:
        # The fence: a datagram we send to ourselves on exit.  Once its arriving copy
        # is read, every packet sent before it has been read too (one FIFO queue).
        self._fence = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._fence.bind(("127.0.0.1", 0))
        self._fence_port = self._fence.getsockname()[1]
        self._sock = sock = _DirectionalListenSocket(iface=self.iface, filter=self.bpf)
        _enlarge_receive_buffer(sock.ins)
        _kernel_drops(sock.ins)  # reading the statistics resets them: count from here on
        ready = threading.Event()
        self._sniffer = AsyncSniffer(opened_socket=sock, prn=self._on_packet, store=False,
                                     started_callback=ready.set)
        self._sniffer.start()
        if not ready.wait(READY_TIMEOUT):
            raise RuntimeError(
                f"the sniffer on {self.iface} did not start within {READY_TIMEOUT}s")

    def _is_ours(self, pkt) -> bool:
        """Does this packet belong to our endpoints (or the fence)?  BPF can't parse an
        ICMP error's quote as Scapy does, and a raw socket sees every packet until Scapy
        attaches its filter: this check is the filter's twin, in Python."""
        quoted = ICMP in pkt or ICMPv6DestUnreach in pkt  # an error: judge the packet it quotes
        if quoted:
            ips, layers = (IPerror, IPerror6), (TCPerror, UDPerror)
        else:
            ips, layers = (IP, IPv6), (TCP, UDP)
        ip = next((pkt[layer] for layer in ips if layer in pkt), None)
        seg = next((pkt[layer] for layer in layers if layer in pkt), None)
        if ip is None or seg is None:
            return False
        protocol = "tcp" if isinstance(seg, TCP) else "udp"
        return self._is_fence(pkt) or any(e.matches(protocol, ip.src, seg.sport, ip.dst, seg.dport)
                   for e in self._endpoints)

    def _is_fence(self, pkt) -> bool:
        return (UDP in pkt and IP in pkt and pkt[UDP].dport == self._fence_port
                and pkt[IP].dst == "127.0.0.1")

    def _on_packet(self, pkt) -> None:
        outgoing = self._sock.last_outgoing  # set by the recv that produced pkt
        if not self._is_ours(pkt):
            return
        with self._changed:
            if self._is_fence(pkt):
                self._fence_seen = self._fence_seen or not outgoing
            elif outgoing:
                self._sent += 1
            else:
                self._arrived += 1
                self._packets.append(pkt)
                self._tracker.add(pkt)
            self._changed.notify_all()

    def _quiet(self) -> bool:
        return self._fence_seen and self._arrived >= self._sent and self._tracker.settled()

    def __exit__(self, exc_type, *_):
        with self._changed:
            if self._state == "new":
                raise RuntimeError("this Capture was never entered: use it as "
                                   "`with Capture(server) as wire:`")
            if self._state != "running":
                return False  # already stopped (an explicit second __exit__)
            self._state = "stopping"
        if self.mode == "replay":
            self._state = "done"
            if exc_type is None:  # a block that raised did not do what was recorded
                self._load_recording()
                self._compare_with_recording()
            return False
        try:
            self._fence.sendto(b"labkit fence", ("127.0.0.1", self._fence_port))
            with self._changed:
                # Wait for every packet already sent to arrive, and for the final ACKs of
                # anything that needs one (a condition, not a sleep).
                timeout = 0.2 if exc_type else SETTLE_TIMEOUT
                self.complete = self._changed.wait_for(self._quiet, timeout)
        finally:
            self._shutdown()
            self._state = "done"
        if self.keylog is not None:
            self._read_keylog()
        if self.mode == "record" and self.name:
            self._save_recording()
        return False

    def _shutdown(self) -> None:
        """Stop the sniffer thread (bounded wait) and close both sockets; safe to repeat."""
        sniffer, self._sniffer = self._sniffer, None
        thread = sniffer.thread if sniffer is not None else None
        deadline = time.monotonic() + STOP_TIMEOUT
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            try:  # repeated: a sniffer still starting up may miss the first stop
                sniffer.stop(join=False)  # wakes its select() through Scapy's pipe
            except Exception:  # noqa: BLE001 - not running yet, or already ended
                pass
            thread.join(0.05)
        if thread is not None and thread.is_alive():
            self.complete = False
            print(f"⚠ the sniffer did not stop within {STOP_TIMEOUT}s: this capture may be "
                  "incomplete")
        if self._sock is not None:
            if self._sock.closed:  # Scapy closes a socket whose reading raised
                self.complete = False
                print("⚠ the sniffer stopped early after an error: this capture is incomplete")
            elif dropped := _kernel_drops(self._sock.ins):
                self.complete = False
                print(f"⚠ the kernel dropped {dropped} packets before the capture could read "
                      "them: this capture is incomplete (the machine is busy; run the cell again)")
            self._sock.close()
            self._sock = None
        if self._fence is not None:
            self._fence.close()
            self._fence = None

    def _read_keylog(self) -> None:
        from labkit.protocols.tls import keylog_for

        path = Path(self.keylog)
        text = path.read_text() if path.exists() else ""
        self.meta["tls_keylog"] = keylog_for(self._packets, text)  # this capture's sessions only

    # -- recordings -------------------------------------------------------------
    def _save_recording(self) -> None:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        wrpcapng(str(self.recording), self._packets)
        meta = {"roles": {str(p): n for p, n in self.roles.items()},
                "summary": summarize(self._packets, self.roles), **self.meta}
        self.recording.with_suffix(".json").write_text(json.dumps(meta, indent=1, sort_keys=True))

    def _load_recording(self) -> None:
        if self.recording is None:
            return  # said so on entry
        if not self.recording.exists():
            raise FileNotFoundError(
                f"no recording {self.recording}: run `python -m labkit record` "
                "(as root) to make the recordings"
            )
        self._packets = list(rdpcap(str(self.recording)))
        meta = json.loads(self.recording.with_suffix(".json").read_text())
        self.roles = {int(p): n for p, n in meta.pop("roles").items()}
        # Recordings made before summaries were saved: the packets say the same.
        self._recorded_summary = meta.pop("summary", None) or summarize(self._packets, self.roles)
        self.meta = meta

    def _compare_with_recording(self) -> None:
        """Set matches_recording and live_summary; print one line if the runs differ."""
        if not self._marks or self.recording is None or not self.recording.exists():
            return  # some target cannot count, or nothing was shown
        live: dict[str, dict] = {}
        for server, mark in zip(self._talkers, self._marks):
            entry = server.conversation(mark, settle=SETTLE_TIMEOUT)
            if entry is None:
                return  # this server cannot tell: no comparison, no claim
            live[server.name] = _merge(live.get(server.name), entry)
        self.live_summary = live
        recorded = self._recorded_summary
        if set(live) <= set(recorded):  # compare the same servers (a relay adds its target)
            recorded = {name: recorded[name] for name in live}
        self.difference = _difference(list(live.values()), list(recorded.values()))
        self.matches_recording = self.difference is None
        moved = [f"your {server.name} listens on port {server.port}, the recording's on {port}"
                 for server in self._talkers for port, name in self.roles.items()
                 if name == server.name and port != server.port
                 and min(port, server.port) < 1024]  # a well-known port: textbook_port()
        if self.difference and moved:  # a URL or Host header that names the port changes bytes
            self.difference += f" ({'; '.join(moved)})"
        if self.difference:
            print(f"⚠ {self.difference} — the table and ladder show the recording, "
                  f"not your run; {LIVE_HOW}")

    # -- what the student looks at ---------------------------------------------------
    def _require_finished(self) -> None:
        if self._state == "new":
            raise RuntimeError("this Capture has not run yet: use it as "
                               "`with Capture(server) as wire:`, then look at wire")
        if self._state != "done":
            raise RuntimeError("the capture is still running: look at it after its `with` block")

    @property
    def packets(self) -> PacketList:
        """The captured packets (Scapy), one copy each, in arrival order."""
        self._require_finished()
        return PacketList(self._packets, name=self.name or "capture")

    @property
    def segments(self) -> list[Segment]:
        """Each packet as a :class:`Segment`: roles, flags, relative seq/ack, length, summary."""
        packets = self.packets
        for analyse in ANALYSERS:
            analyse(packets, self.meta)
        return segments(packets, self.roles)

    def table(self, *, start: int = 0, stop: int | None = None):
        """One row per packet; ``start``/``stop`` pick a slice of rows."""
        from labkit.views.ladder import Table

        return Table(self.segments[start:stop])

    def ladder(self, *, start: int = 0, stop: int | None = None, title: str | None = None):
        """A sequence diagram of the packets (a matplotlib Figure)."""
        from labkit.views.ladder import ladder

        return ladder(self.segments[start:stop], title=title)

    def save(self, path) -> Path:
        """Write the packets as pcapng (opens in Wireshark); returns the path.

        With a TLS key log (``meta["tls_keylog"]``) the file embeds it in a Decryption
        Secrets Block, so Wireshark and tshark decrypt the TLS with no settings.
        """
        self._require_finished()
        path = Path(path)
        if path.suffix != ".pcapng":
            raise ValueError(f"save() writes pcapng: give a path ending in .pcapng, not {path.name!r}")
        if self.meta.get("tls_keylog"):
            from labkit.protocols.tls import save_with_keylog

            return save_with_keylog(path, self._packets, self.meta["tls_keylog"])
        wrpcapng(str(path), self._packets)
        return path

    def __len__(self):
        return len(self._packets)

    def __repr__(self):
        return f"<Capture {self.mode} {self.name or ''} {len(self._packets)} packets>"
