"""The plan of a lab network: hosts, cables, subnets, addresses and routes (no side effects).

A network is a list of :class:`Cable` s, each joining two hosts; a host with more than one
cable is a router (it forwards).  :class:`Topology` works out everything else, the same
way every time, so a lesson can print it, draw it and test it before anything runs:

    >>> plan = Topology([Cable("client", "r1"), Cable("r1", "r2", mtu=1280),
    ...                  Cable("r2", "server", Impairment(delay=0.010))])
    >>> plan.addresses
    {'client': '10.0.0.1', 'r1': '10.0.0.2', 'r2': '10.0.1.3', 'server': '10.0.2.4'}
    >>> [str(r) for r in plan.routes["r1"]]
    ['10.0.2.0/24 via 10.0.1.3 dev eth1']

Numbering: cable *k* (from 0, in the order given) is the subnet ``10.0.k.0/24`` unless it
names its own; host *n* (from 1, in order of first appearance) is ``.n`` on every subnet
it is on, so the last number says which host an address belongs to (``10.0.1.3`` is the
third host, r2).  A host's interfaces are ``eth0``, ``eth1``, ... in the order of its
cables; a MAC address is ``02:00`` and the IPv4 address (locally administered, readable).

IPv6 (``LabNetwork(..., ipv6=True)``): each interface also has the unique local address
``fd00:10:0:k::n/64`` beside ``10.0.k.n/24`` (:attr:`Interface.address6`; cable 0's
``fd00:10::1`` for host 1) and its link-local address ``fe80::...`` made from the MAC
(:attr:`Interface.link_local`, EUI-64 as the kernel makes it); ``routes6`` mirror
``routes``, each via the next hop's unique local address.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections import deque
from dataclasses import dataclass, field

from labkit.net.impairment import Impairment

__all__ = ["Cable", "Interface", "Route", "Topology"]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,19}")
MAX_CABLES = 250  # cable k is 10.0.k.0/24 (and a MAC byte)
ULA = "fd00:10:0:{k:x}::{n:x}/64"  # IPv6 beside 10.0.k.n/24


@dataclass(frozen=True)
class Cable:
    """A point-to-point link between hosts ``a`` and ``b``: one subnet, one MTU.

    ``impairment`` (both directions alike) or ``up`` (a→b) / ``down`` (b→a): the frames
    cross labkit's user-space link (:mod:`labkit.net.link`), which delays, drops, limits
    and traces them.  With none of them the cable is a plain veth pair: the kernel carries
    frames at its own speed, and nothing can be late.  ``mtu``: both interfaces' MTU (default
    1500, or the impairments' ``mtu``).  ``subnet``: an IPv4 network such as
    ``"192.168.1.0/24"`` (default ``10.0.k.0/24``); ``addresses``: {host: address} to choose
    an end's address in it.

        >>> Cable("r1", "r2", mtu=1280)
        >>> Cable("client", "r1", Impairment(delay=0.020, loss=0.01, seed=1))
        >>> Cable("client", "nat", subnet="192.168.1.0/24", addresses={"nat": "192.168.1.1"})

    Attributes:
        a: the host at one end
        b: the host at the other end
        impairment: what the link does to frames both ways (None: see ``up``/``down``)
        up: what the link does to frames from ``a`` to ``b`` (None: ``impairment``)
        down: what the link does to frames from ``b`` to ``a`` (None: ``impairment``)
        mtu: both interfaces' MTU (None: 1500, or the impairments' ``mtu``)
        subnet: its IPv4 network, e.g. ``"192.168.1.0/24"`` (None: ``10.0.k.0/24``)
        addresses: ``{host: address}`` for an end whose address is chosen in ``subnet``
    """

    a: str
    b: str
    impairment: Impairment | None = None
    up: Impairment | None = None
    down: Impairment | None = None
    mtu: int | None = None
    subnet: str | None = None
    addresses: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        for end in (self.a, self.b):
            if not isinstance(end, str) or not _NAME.fullmatch(end):
                raise ValueError(f"a host name is a short word (a letter, then letters, digits, "
                                 f"'-' or '_', at most 20), e.g. 'r1', not {end!r}")
        if self.a == self.b:
            raise ValueError(f"a cable joins two different hosts, not {self.a!r} to itself")
        if self.impairment is not None and (self.up is not None or self.down is not None):
            raise ValueError("give one impairment for both directions, or up= and down=, "
                             "not both")
        for name in ("impairment", "up", "down"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Impairment):
                raise ValueError(f"{name} must be an Impairment(...), not {value!r}")
        if self.mtu is not None and (not isinstance(self.mtu, int) or isinstance(self.mtu, bool)
                                     or not 68 <= self.mtu <= 65535):
            raise ValueError(f"mtu must be an int in 68-65535 (e.g. 1280), not {self.mtu!r}")
        if self.subnet is not None:
            try:
                network = ipaddress.IPv4Network(self.subnet)
            except ValueError as exc:
                raise ValueError(f"subnet must be an IPv4 network such as '192.168.1.0/24', "
                                 f"not {self.subnet!r} ({exc})") from None
            if network.prefixlen > 30:
                raise ValueError(f"subnet {self.subnet} is too small for two hosts: give a "
                                 f"prefix of /30 or shorter, e.g. '{network.network_address}/24'")
        if not isinstance(self.addresses, dict) or set(self.addresses) - {self.a, self.b}:
            raise ValueError(f"addresses must be {{host: address}} for {self.a!r} or "
                             f"{self.b!r}, not {self.addresses!r}")

    @property
    def ends(self) -> tuple[str, str]:
        """``(a, b)``: the hosts it joins."""
        return self.a, self.b

    @property
    def forwarded(self) -> bool:
        """Do this cable's frames cross labkit's link (it has an impairment)?"""
        return any(value is not None for value in (self.impairment, self.up, self.down))

    def impairments(self) -> dict[str, Impairment]:
        """{direction: Impairment} for the link, e.g. {"client→r1": ..., "r1→client": ...}."""
        both = self.impairment or Impairment()
        return {f"{self.a}→{self.b}": self.up or both, f"{self.b}→{self.a}": self.down or both}

    def wire_mtu(self) -> int:
        """The MTU its interfaces get: ``mtu``, else the impairments' (else 1500)."""
        if self.mtu is not None:
            return self.mtu
        return min(imp.mtu for imp in self.impairments().values()) if self.forwarded else 1500

    def __str__(self) -> str:
        return f"{self.a} — {self.b}"


@dataclass(frozen=True)
class Interface:
    """One end of a cable on a host: its name there, addresses, MTU, and who is across."""

    host: str
    name: str                               # "eth0", "eth1", ...
    cable: int                              # index of its cable
    address: ipaddress.IPv4Interface        # e.g. 10.0.1.3/24
    mac: str
    mtu: int
    peer: str                               # the host at the other end
    peer_address: ipaddress.IPv4Address
    peer_mac: str
    address6: ipaddress.IPv6Interface       # the unique local address beside address
    peer_address6: ipaddress.IPv6Address

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.address.network

    @property
    def link_local(self) -> ipaddress.IPv6Address:
        """``fe80::`` and the MAC as EUI-64 (its U/L bit flipped, ``ff:fe`` in the middle)."""
        return link_local(self.mac)

    @property
    def peer_link_local(self) -> ipaddress.IPv6Address:
        return link_local(self.peer_mac)


@dataclass(frozen=True)
class Route:
    """A route the plan gives a host: ``destination`` ("default" or a subnet) via a neighbour."""

    destination: str
    via: str
    dev: str

    def __str__(self) -> str:
        return f"{self.destination} via {self.via} dev {self.dev}"


class Topology:
    """Hosts, interfaces, addresses and routes of a list of cables, worked out once.

    ``routes="auto"``: a router gets a route to every subnet it is not on, via the next
    hop on a shortest path; a host with one cable whose neighbour is a router gets a
    default route via it.  ``routes=None``: only the subnets each host is on (the student
    adds the rest).

    Attributes:
        cables: the cables, as given
        hosts: every host, in the order the cables name them
        interfaces: each host's interfaces, ``eth0`` first: ``{host: [Interface, ...]}``
        subnets: each cable's subnet, in the order of ``cables``
        routers: the hosts with more than one cable
        routes: the routes the plan gives each host: ``{host: [Route, ...]}``
        routes6: the same routes for IPv6 (unique local prefixes): ``{host: [Route, ...]}``
    """

    def __init__(self, cables, routes: str | None = "auto"):
        cables = list(cables)
        if not cables or not all(isinstance(c, Cable) for c in cables):
            raise ValueError(f"a network is a list of Cable(a, b, ...), at least one, not "
                             f"{cables!r}")
        if len(cables) > MAX_CABLES:
            raise ValueError(f"at most {MAX_CABLES} cables, not {len(cables)}")
        if routes not in ("auto", None):
            raise ValueError(f"routes must be 'auto' (set for you) or None (only the "
                             f"subnets each host is on), not {routes!r}")
        pairs = [frozenset(c.ends) for c in cables]
        if len(set(pairs)) != len(pairs):
            twice = next(c for c, p in zip(cables, pairs, strict=True) if pairs.count(p) > 1)
            raise ValueError(f"two cables join {twice}: give a pair of hosts one cable")
        self.cables = cables
        self.hosts: list[str] = list(dict.fromkeys(end for c in cables for end in c.ends))
        number = {host: n for n, host in enumerate(self.hosts, 1)}
        self.interfaces: dict[str, list[Interface]] = {host: [] for host in self.hosts}
        for k, cable in enumerate(cables):
            ends = [_address(cable, k, host, number[host]) for host in cable.ends]
            if ends[0] == ends[1]:
                raise ValueError(f"both ends of {cable} would have {ends[0].ip}: choose their "
                                 f"addresses= in {cable.subnet}")
            for (host, mine), (peer, theirs) in (((cable.a, ends[0]), (cable.b, ends[1])),
                                                 ((cable.b, ends[1]), (cable.a, ends[0]))):
                self.interfaces[host].append(Interface(
                    host, f"eth{len(self.interfaces[host])}", k, mine, _mac(mine.ip),
                    cable.wire_mtu(), peer, theirs.ip, _mac(theirs.ip),
                    ipaddress.IPv6Interface(ULA.format(k=k, n=number[host])),
                    ipaddress.IPv6Interface(ULA.format(k=k, n=number[peer])).ip))
        self.subnets = [next(i.subnet for i in self.interfaces[c.a] if i.cable == k)
                        for k, c in enumerate(cables)]
        self._check_unique_subnets()
        self.routers = [host for host in self.hosts if len(self.interfaces[host]) > 1]
        self.routes: dict[str, list[Route]] = {host: [] for host in self.hosts}
        if routes == "auto":
            self._plan_routes()
        self.routes6 = {host: [self._route6(route) for route in planned]
                        for host, planned in self.routes.items()}

    # -- what a lesson reads ------------------------------------------------------------
    @property
    def addresses(self) -> dict[str, str]:
        """Each host's first address: ``{"client": "10.0.0.1", ...}``."""
        return {host: str(ifaces[0].address.ip) for host, ifaces in self.interfaces.items()}

    @property
    def addresses6(self) -> dict[str, str]:
        """Each host's first unique local IPv6 address: ``{"client": "fd00:10::1", ...}``."""
        return {host: str(ifaces[0].address6.ip) for host, ifaces in self.interfaces.items()}

    def names(self) -> dict[str, str]:
        """{address: host} for every address in the network, IPv4 and IPv6 (captures label
        rows with it)."""
        return {str(address): host for host, ifaces in self.interfaces.items()
                for i in ifaces for address in (i.address.ip, i.address6.ip, i.link_local)}

    def interface(self, host: str, toward: str | None = None) -> Interface:
        """``host``'s interface on the cable to ``toward`` (or its only one)."""
        self.check_host(host)
        ifaces = self.interfaces[host]
        if toward is None:
            if len(ifaces) > 1:
                raise ValueError(f"{host} has {len(ifaces)} interfaces ("
                                 f"{', '.join(i.name + ' to ' + i.peer for i in ifaces)}): "
                                 f"say which, e.g. toward={ifaces[0].peer!r}")
            return ifaces[0]
        for iface in ifaces:
            if iface.peer == toward:
                return iface
        raise ValueError(f"{host} has no cable to {toward!r}; its neighbours are "
                         f"{[i.peer for i in ifaces]}")

    def check_host(self, host: str) -> None:
        """``ValueError`` unless ``host`` is one of this network's hosts."""
        if host not in self.interfaces:
            raise ValueError(f"host must be one of {self.hosts}, not {host!r}")

    def path(self, source: str, target: str) -> list[str]:
        """The hosts a packet crosses from ``source`` to ``target`` (shortest, both included)."""
        self.check_host(source)
        self.check_host(target)
        back = self._tree(source)
        if target not in back:
            raise ValueError(f"{target} cannot be reached from {source}: no cables join them")
        hops = [target]
        while hops[-1] != source:
            hops.append(back[hops[-1]])
        return hops[::-1]

    def hops(self, source: str, target: str) -> list[str]:
        """The addresses a traceroute from ``source`` to ``target`` reports: each host on
        the way answers from its interface toward ``source`` (Linux routers do).

            >>> plan.hops("client", "server")
            ['10.0.0.2', '10.0.1.3', '10.0.2.4']
        """
        path = self.path(source, target)
        return [str(self.interface(hop, toward=before).address.ip)
                for before, hop in itertools.pairwise(path)]

    def distances(self, source: str) -> dict[str, int]:
        """{host: cables crossed from ``source``} for every host it can reach."""
        self.check_host(source)
        return {host: len(self.path(source, host)) - 1 for host in self._tree(source)}

    # -- working it out -------------------------------------------------------------------
    def _tree(self, root: str) -> dict[str, str]:
        """{host: the host before it} on shortest paths from ``root`` (breadth first)."""
        back, queue = {root: root}, deque([root])
        while queue:
            host = queue.popleft()
            for iface in self.interfaces[host]:
                if iface.peer not in back:
                    back[iface.peer] = host
                    queue.append(iface.peer)
        return back

    def _plan_routes(self) -> None:
        for host in self.hosts:
            ifaces = self.interfaces[host]
            if len(ifaces) == 1:
                if ifaces[0].peer in self.routers:
                    self.routes[host].append(Route("default", str(ifaces[0].peer_address),
                                                   ifaces[0].name))
                continue
            back = self._tree(host)
            near = {i.cable for i in ifaces}
            for k, cable in enumerate(self.cables):
                reachable = [end for end in cable.ends if end in back]
                if k in near or not reachable:
                    continue
                nearest = min(reachable, key=lambda end: len(self.path(host, end)))
                iface = self.interface(host, self.path(host, nearest)[1])
                self.routes[host].append(Route(str(self.subnets[k]), str(iface.peer_address),
                                               iface.name))

    def _route6(self, route: Route) -> Route:
        """The IPv6 route beside an IPv4 one: the same cable's prefix, via the same host."""
        cable = {str(subnet): k for k, subnet in enumerate(self.subnets)}
        via = self.names()[route.via]
        gateway = next(i.address6.ip for i in self.interfaces[via]
                       if str(i.address.ip) == route.via)
        destination = route.destination
        if destination != "default":
            prefix = ipaddress.IPv6Interface(ULA.format(k=cable[destination], n=0))
            destination = str(prefix.network)
        return Route(destination, str(gateway), route.dev)

    def _check_unique_subnets(self) -> None:
        for k, subnet in enumerate(self.subnets):
            for j in range(k):
                if subnet.overlaps(self.subnets[j]):
                    raise ValueError(f"cables {self.cables[j]} and {self.cables[k]} have "
                                     f"overlapping subnets ({self.subnets[j]}, {subnet}): "
                                     "give each its own")

    def __repr__(self) -> str:
        return f"<Topology {', '.join(str(c) for c in self.cables)}>"


def _address(cable: Cable, k: int, host: str, number: int) -> ipaddress.IPv4Interface:
    network = ipaddress.IPv4Network(cable.subnet or f"10.0.{k}.0/24")
    chosen = cable.addresses.get(host)
    if chosen is None:
        if number >= network.num_addresses - 1:
            raise ValueError(f"host {host} is host number {number}, outside {network}: give "
                             f"{cable} a larger subnet, or addresses={{{host!r}: ...}}")
        ip = network.network_address + number
    else:
        try:
            ip = ipaddress.IPv4Address(chosen)
        except ValueError:
            raise ValueError(f"address of {host} on {cable} must be an IPv4 address, not "
                             f"{chosen!r}") from None
        if ip not in network or ip in (network.network_address, network.broadcast_address):
            raise ValueError(f"{host}'s address {ip} is not a host address in {network}")
    return ipaddress.IPv4Interface(f"{ip}/{network.prefixlen}")


def link_local(mac: str) -> ipaddress.IPv6Address:
    """The link-local address the kernel gives an interface with ``mac`` (EUI-64, RFC 4291
    2.5.1): ``02:00:0a:00:00:01`` → ``fe80::a:ff:fe00:1``."""
    raw = bytes.fromhex(mac.replace(":", ""))
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + bytes([raw[0] ^ 2]) + raw[1:3]
                                 + b"\xff\xfe" + raw[3:])


def _mac(ip: ipaddress.IPv4Address) -> str:
    """``02:00`` then the IPv4 address: locally administered, and it says whose it is."""
    return "02:00:" + ":".join(f"{byte:02x}" for byte in ip.packed)
