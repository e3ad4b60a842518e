"""What a capture watches: each server or port as protocol, address and port, and its BPF.

    >>> roles, endpoints = watch([server, 8080], protocol=None)
    >>> roles                       # {port: role name} for the tables
    {40123: 'server', 8080: 'server 2'}
    >>> endpoints[0].bpf()          # the kernel filter for one of them

A server tells its protocol and address, so packets that merely share its port
number (another process, another loopback address, the other protocol) stay out.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import socketserver
from typing import NamedTuple

__all__ = ["watch", "check_name", "PROTOCOLS"]

# A name becomes a file name, data/<name>.pcapng: no separators, no leading dot or dash.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")

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
    from labkit.servers.tcp import TCPServer
    from labkit.servers.udp import UDPServer
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
    address: tuple | None
    if isinstance(server, socketserver.BaseServer):  # e.g. http.server.HTTPServer
        if not isinstance(server.server_address, tuple):
            raise ValueError(f"{server!r} listens on {server.server_address!r}, not an IP "
                             "address and port: Capture watches TCP and UDP ports")
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
        number = _port_number(port)
        found[number] = (str(role), _Endpoint(number, protocol, _host_of(where or ())))
    return found


def watch(targets, protocol: str | None,
          needed: bool = True) -> tuple[dict[int, str], list[_Endpoint]]:
    """``({port: role}, endpoints)`` for Capture's arguments (``needed``: at least one)."""
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
    if not found and needed:
        raise ValueError("Capture needs at least one server or port to watch, e.g. Capture(server)")
    return {port: role for port, (role, _e) in found.items()}, [e for _r, e in found.values()]


def check_name(name) -> None:
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
