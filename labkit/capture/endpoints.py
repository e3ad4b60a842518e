"""What a capture watches: each server or port as protocol, address and port, and its BPF.

    >>> roles, endpoints = watch([server, 8080], protocol=None)
    >>> roles                       # {port: role name} for the tables
    {40123: 'server', 8080: 'server 2'}
    >>> endpoints[0].bpf()          # the kernel filter for one of them

Every lab server declares where it listens and over what (``server.endpoints``:
transport, address, port and role), so packets that merely share its port number
(another process, another loopback address, the other protocol) stay out.  A
``socketserver`` server (``http.server``, ``serve_in_thread``) tells the same by its
socket; a server written elsewhere may declare ``protocol`` and ``address``; a bare
port number (or ``{port: name}``) watches TCP and UDP on any address.
"""

from __future__ import annotations

import ipaddress
import socket
import socketserver
from collections.abc import Iterable
from typing import Any, NamedTuple

from labkit.servers import arguments

__all__ = ["watch", "PROTOCOLS"]

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


IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(address: str) -> IP:
    ip = ipaddress.ip_address(address.split("%")[0])  # drop an IPv6 scope ("fe80::1%lo")
    if ip.version == 6 and ip.ipv4_mapped:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 travels as IPv4
    return ip


def _bpf_address(icmp: str, offset: int, ip: IP) -> str:
    words = [ip.packed[i:i + 4] for i in range(0, len(ip.packed), 4)]
    return " and ".join(f"{icmp}[{offset + 4 * i}:4] = 0x{w.hex()}" for i, w in enumerate(words))


def _host_of(host: object) -> IP | None:
    """The IP a server is bound to; None (any address) for a wildcard or a name."""
    try:
        ip = _ip(str(host))
    except ValueError:
        return None
    return None if ip.is_unspecified else ip


def _declared(server: Any) -> list[tuple[str | None, object, int, str]]:
    """``[(transport, host, port, role)]`` where a running server listens, as it says."""
    try:
        if isinstance(server, socketserver.BaseServer):  # e.g. http.server.HTTPServer
            address = server.server_address
            if not isinstance(address, tuple):
                arguments.fail(ValueError, "each target", "a server on an IP address and port",
                               server, why=f"it listens on {address!r}; Capture watches TCP "
                               "and UDP ports")
            kind = getattr(server, "socket_type", None)   # (TCPServer and UDPServer have it)
            transport = "udp" if kind == socket.SOCK_DGRAM else "tcp" if kind else None
            return [(transport, address[0], address[1], "server")]
        if hasattr(type(server), "endpoints"):           # every lab server
            return [(e.transport, e.host, e.port, e.role) for e in server.endpoints]
        # a server written elsewhere that says what it is
        return [(server.protocol, server.address[0], server.address[1],
                 getattr(server, "name", "server"))]
    except RuntimeError:  # a server that is not running has no port
        arguments.fail(ValueError, "each target", "a running server", server,
                       "`with TCPServer() as server, Capture(server) as wire:`",
                       "start the server first")


def _server_endpoints(server: object, protocol: str | None
                      ) -> dict[int, tuple[str, _Endpoint]]:
    """{port: (role, endpoint)} of a running server object."""
    found: dict[int, tuple[str, _Endpoint]] = {}
    for transport, host, port, role in _declared(server):
        number = arguments.port(port, low=1)
        kind = transport if transport in PROTOCOLS else protocol
        if number in found and found[number][1].protocol != kind:
            kind = None  # one port, both transports (a DNS server): watch both
        found[number] = (str(role), _Endpoint(number, kind, _host_of(host)))
    return found


def _declares(target: object) -> bool:
    # (asked of the type: a stopped server's endpoints property raises)
    return isinstance(target, socketserver.BaseServer) or hasattr(type(target), "endpoints") or (
        getattr(target, "protocol", None) in PROTOCOLS and hasattr(target, "address"))


def watch(targets: Iterable[object], protocol: str | None, needed: bool = True
          ) -> tuple[dict[int, str], list[_Endpoint]]:
    """``({port: role}, endpoints)`` for Capture's arguments (``needed``: at least one)."""
    arguments.one_of(protocol, "protocol", [None, *PROTOCOLS])
    found: dict[int, tuple[str, _Endpoint]] = {}
    for target in targets:
        if isinstance(target, (int, bool)):
            port = arguments.port(target, low=1)
            role = "server" if not found else f"server {len(found) + 1}"
            found[port] = (role, _Endpoint(port, protocol))
        elif isinstance(target, dict):
            for port, role in target.items():
                found[arguments.port(port, low=1)] = (str(role), _Endpoint(port, protocol))
        elif _declares(target):
            found.update(_server_endpoints(target, protocol))
        else:
            arguments.fail(TypeError, "each target",
                           "a server, a port number or a {port: name} dict", target,
                           "Capture(server)")
    if not found and needed:
        arguments.fail(ValueError, "targets", "at least one server or port", targets,
                       "Capture(server)")
    return {port: role for port, (role, _e) in found.items()}, [e for _r, e in found.values()]
