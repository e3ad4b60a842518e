"""Lab hosts: network namespaces inside the lab kernel's own, joined by cables.

    >>> with LabNetwork(Impairment(delay=0.020, loss=0.01, seed=1)) as net:   # client — server
    ...     with net.on("server"):                  # sockets made here belong to "server"
    ...         server = TCPServer(host="10.0.0.2")
    ...     with net.on("client"):
    ...         s = socket.create_connection(server.address)

    >>> net = LabNetwork(Cable("client", "r1"), Cable("r1", "r2", mtu=1280),
    ...                  Cable("r2", "server", Impairment(delay=0.010)), arp="dynamic")
    >>> net.figure()                        # hosts, interfaces, addresses, subnets
    >>> print(net.run("r1", "ip route"))    # any command, on a host
    >>> with net.capture("r1", interface="eth1") as wire: ...   # every packet there

Each host is a network namespace labkit makes (kept alive by an open fd, so it vanishes
when we close it), with one interface per cable (``eth0``, ``eth1``, ...), addressed and
routed as :mod:`labkit.net.topology` plans it; a host with more than one cable forwards
(a router). A cable with an impairment is two veth pairs whose other ends stay in the
namespace that made the network (the lab kernel's), where one user-space ``Link``
(:mod:`labkit.net.link`, forwarding in a process of its own) carries the frames of every
such cable, both ways, so
``Capture(iface=net.interface("client"))`` sees the client's cable from there. A cable
without one is a single veth pair between the two hosts: the kernel carries its frames at
its own speed and nothing on it can be late (captures on the hosts' interfaces see the
same frames either way).

``on(host)`` moves *this thread* into the host (``setns``) for the block, and back after,
even on an exception; other threads are not affected, and threads started inside the
block (a server's) stay on that host. Segmentation offloads are off on every end: every
frame is one real packet of at most one MTU, as on a wire. ARP is static by default (each
host knows its neighbours' MAC addresses: no ARP in captures); ``arp="dynamic"`` lets the
kernel ask, once: an answer stays valid for an hour (``ARP_KEPT_MS``; Linux checks it again
after 15-45 s), so later captures of a lesson show no re-checks. ``ipv6=True`` gives every
interface IPv6 beside IPv4: its link-local address and the unique local address
``fd00:10:0:k::n/64`` (``Interface.address6``), routes beside the IPv4 ones, and
neighbour discovery (static or dynamic, as ARP); off by default (then no IPv6 frame is
ever on the wire). ``set_resolver(host, ...)`` gives a host its own /etc/resolv.conf (and
hosts, nsswitch.conf, gai.conf): ``getaddrinfo()`` there asks the lab's DNS
(:mod:`labkit.net.hostfiles`).
Lab hosts answer every packet with the ICMP error it earns (``icmp_ratelimit`` 0: a real
router sends at most about one a second per destination, which would make lessons vary).
``net.link.trace`` has every frame the link carried (its headers), with its fate and when
it was due and left; ``net.too_busy()`` says whether the link kept its timing.

Needs to be root in its namespace: the lab kernel is (a user + network namespace of its
own), so is ``python -m labkit.net.namespace -- COMMAND``, or real root. The namespace
calls themselves are in :mod:`labkit.net.netns`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

from labkit.net.hostfiles import HostFiles, inside_mounts
from labkit.net.impairment import Impairment
from labkit.net.link import Lateness, Link
from labkit.net.netns import (
    TOOL_PATH,
    _disable_ipv6,
    _ip,
    _sysctl,
    _tool,
    inside,
    ipv6_settled,
    link_events,
    new_namespace,
    offloads,
    wait_until_up,
)
from labkit.net.topology import Cable, Topology

ARP_MODES = ("static", "dynamic")
UP_TIMEOUT = 10.0  # s for every interface to come up (well under one on a quiet machine)
# arp="dynamic": how long an answer stays REACHABLE (Linux: 15-45 s, then it is checked
# again with a unicast request), so a lesson's later captures are not cut by re-checks
ARP_KEPT_MS = 3_600_000
# per host: no IPv6 on new interfaces (no router solicitations or MLD in captures), ICMP
# errors never rate-limited (lessons repeat), ICMP "ping" sockets for root (the one group
# the lab user namespace maps)
HOST_SYSCTLS = {"net/ipv6/conf/default/disable_ipv6": "1", "net/ipv4/icmp_ratelimit": "0",
                "net/ipv4/ping_group_range": "0 0"}
# ipv6=True: IPv6 on every new interface, its addresses usable at once (no duplicate
# address detection: the plan makes them unique), no router solicitations or
# advertisements (routes are set), ICMPv6 errors never rate-limited; the multicast
# listener reports a host sends as its interfaces join groups are MLDv1's, sent at once
# and repeated within a tick (MLDv2 repeats them over up to a second), and start() waits
# until they are over (ipv6_settled): no lesson's capture meets them
HOST_SYSCTLS6 = {"net/ipv6/conf/default/disable_ipv6": "0",
                 "net/ipv6/conf/default/accept_dad": "0",
                 "net/ipv6/conf/default/router_solicitations": "0",
                 "net/ipv6/conf/default/accept_ra": "0",
                 "net/ipv6/conf/default/force_mld_version": "1",
                 "net/ipv6/conf/default/mldv1_unsolicited_report_interval": "1",
                 "net/ipv6/icmp/ratelimit": "0"}
_numbers = itertools.count(1)
_here = threading.local()  # .addresses: the lab host this thread is on, inside LabNetwork.on()


def current_lab_addresses() -> frozenset[str]:
    """The addresses of the lab host this thread is on (inside ``net.on(...)``), else none.

    Lab servers may bind them (labkit.servers.arguments.host): they exist only in a
    namespace labkit made, so nothing outside can reach a server listening there.
    """
    return getattr(_here, "addresses", frozenset())


def _other_interfaces() -> list[str]:
    """This thread's network's interfaces other than loopback and LabNetworks' own cables:
    none in the lab kernel's private network; eth0 and the like in a machine's."""
    return [name for _, name in socket.if_nameindex()
            if name != "lo" and not re.fullmatch(r"lk\d+x\d+-\d+[ab]", name)]


class Output(str):
    """A command's output: shown as it is (lines, not a quoted string) in a notebook."""

    def __repr__(self) -> str:
        return str(self)


class LabNetwork:
    """Lab hosts joined by cables: two hosts, client 10.0.0.1 and server 10.0.0.2, or any
    network of :class:`~labkit.net.topology.Cable` s.

    ``LabNetwork(Impairment(...))`` joins client and server by a link that impairs both
    directions alike (each with its own random sequence); ``LabNetwork(up=..., down=...)``
    each direction its own (up: client→server). ``LabNetwork(Cable(...), Cable(...), ...)``
    builds any network, ``LabNetwork.chain("client", "r1", "r2", "server")`` a line of them.
    ``arp``: "static" (default: no ARP on the wire) or "dynamic" (the first packet to a
    neighbour waits for an ARP request and reply; with IPv6, a neighbour solicitation and
    advertisement). ``routes``: "auto" (every host reaches every subnet) or None (only the
    subnets a host is on). ``ipv6``: IPv6 beside IPv4 on every interface (default False).
    ``trace_limit``: how many frames ``net.link.trace`` keeps (0: none, fastest).
    Use it as a context manager, or ``net = LabNetwork(...).start()`` ... ``net.stop()``.

    Attributes:
        topology: the plan: hosts, interfaces, addresses and routes (a ``Topology``)
        addresses: each host's first address: ``{"client": "10.0.0.1", ...}``
        arp: ``"static"`` (no ARP on the wire) or ``"dynamic"`` (hosts ask)
        link: the user-space link the impaired cables cross (None: none is impaired)
        ipv6: True: every interface has IPv6 addresses too (link-local and a unique local
            ``fd00:...``), routes for both families
    """

    def __init__(self, *cables: Impairment | Cable, up: Impairment | None = None,
                 down: Impairment | None = None, arp: str = "static",
                 routes: str | None = "auto", ipv6: bool = False, trace_limit: int = 100_000):
        plan = [cable for cable in cables if isinstance(cable, Cable)]
        first = cables[0] if len(cables) == 1 else None
        if plan and len(plan) == len(cables):
            if up is not None or down is not None:
                raise ValueError("up= and down= are for two hosts; give each Cable its own "
                                 "impairment, e.g. Cable('client', 'r1', up=Impairment(...))")
        elif not cables or isinstance(first, Impairment):
            both = first if isinstance(first, Impairment) else (
                None if up or down else Impairment())
            plan = [Cable("client", "server", both, up=up, down=down)]  # always the link
        else:
            raise ValueError(f"LabNetwork takes one Impairment (client and server), or "
                             f"Cable(...)s for a network of your own, not {cables!r}")
        if arp not in ARP_MODES:
            raise ValueError(f"arp must be 'static' (no ARP on the wire) or 'dynamic' (hosts "
                             f"ask), not {arp!r}")
        if not isinstance(ipv6, bool):
            raise ValueError(f"ipv6 must be True (IPv6 beside IPv4) or False, not {ipv6!r}")
        self.topology = Topology(plan, routes=routes)
        self.arp = arp
        self.ipv6 = ipv6
        self._files = HostFiles()
        self._served: list = []  # servers started by serve(), stopped with the network
        self.addresses = self.topology.addresses
        count = next(_numbers) % 1000
        number = f"lk{os.getpid() % 100000}x{count}"
        # the link-side ends form an interface group of their own: one `ip link del group`
        # removes them all at once (one by one, each waits for the kernel: 50-300 ms apiece)
        self._group = (os.getpid() % 100000) * 1000 + count + 1
        # each host's end of a cable with a link: a link-side end here, where the Link reads
        self._ends: dict[tuple[str, int], str] = {}
        directions, impairments = {}, {}
        for k, cable in enumerate(self.topology.cables):
            if not cable.forwarded:
                continue
            for side, host in enumerate(cable.ends):
                self._ends[(host, k)] = f"{number}-{k}{'ab'[side]}"
            for (way, impairment), (src, dst) in zip(cable.impairments().items(),
                                                     (cable.ends, cable.ends[::-1]), strict=True):
                directions[way] = (self._ends[(src, k)], self._ends[(dst, k)])
                impairments[way] = impairment
        # One Link carries every impaired cable (None: every cable is a plain veth pair)
        self.link = Link(directions, impairments, trace_limit) if directions else None
        self._hosts: dict[str, int] = {}
        self._state = "new"

    @classmethod
    def chain(cls, *hosts: str, **options) -> LabNetwork:
        """Hosts in a line, each joined to the next by a plain cable: the ones in between
        are routers. ``LabNetwork.chain("client", "r1", "r2", "server", arp="dynamic")``.
        For a cable of its own (an MTU, an impairment) list the cables instead."""
        if len(hosts) < 2:
            raise ValueError(f"a chain needs at least two hosts, not {list(hosts)}")
        return cls(*(Cable(a, b) for a, b in itertools.pairwise(hosts)), **options)

    # -- what a lesson uses ---------------------------------------------------------------
    def interface(self, host: str, toward: str | None = None) -> str:
        """The link-side interface of ``host``'s cable (to ``toward``), in the namespace that
        made the network: ``Capture(iface=net.interface("client"))`` sees what the client
        sends and receives on that cable."""
        iface = self.topology.interface(host, toward)
        end = self._ends.get((host, iface.cable))
        if end is None:
            raise ValueError(f"the cable {self.topology.cables[iface.cable]} is a plain veth "
                             f"pair (no impairment): capture on the host itself, "
                             f"net.capture({host!r}, interface={iface.name!r})")
        return end

    @contextlib.contextmanager
    def on(self, host: str) -> Iterator[None]:
        """Run the block on ``host``: sockets (and threads) made in it belong to it."""
        self.topology.check_host(host)
        if self._state != "running":
            raise RuntimeError(f"LabNetwork is {self._state}: start it first "
                               f"(`with LabNetwork(...) as net:` or `net.start()`)")
        before = current_lab_addresses()
        mounts = self._files.namespaces.get(host)
        with inside(self._hosts[host]), (inside_mounts(mounts) if mounts is not None
                                          else contextlib.nullcontext()):
            _here.addresses = frozenset(self._addresses_of(host))
            try:
                yield
            finally:
                _here.addresses = before

    def serve(self, host: str, server_class, /, *args, **kwargs):
        """Make a lab server on ``host`` and start it; it runs until the network stops.

            >>> root = net.serve("root", DNSServer, zone=".", host="10.0.2.4", port=53)

        ``server_class(*args, **kwargs)`` is made inside ``net.on(host)`` (so it may bind
        that host's addresses) and entered there; ``stop()`` stops it, and raises what its
        threads raised, as the end of its ``with`` block would.
        """
        with self.on(host):
            server = server_class(*args, **kwargs)
            server.__enter__()
        self._served.append(server)
        return server

    def _addresses_of(self, host: str) -> list[str]:
        """The addresses ``host`` has (its unique local IPv6 ones too, with ipv6=True)."""
        ifaces = self.topology.interfaces[host]
        return [str(i.address.ip) for i in ifaces] + (
            [str(i.address6.ip) for i in ifaces] if self.ipv6 else [])

    def set_resolver(self, host: str, *nameservers: str, options: str = "") -> None:
        """Give ``host`` a resolver: ``getaddrinfo()`` there (and any program run there)
        asks ``nameservers`` (addresses, in order), as its /etc/resolv.conf says.

            >>> net.set_resolver("client", "10.0.1.3")
            >>> print(net.run("client", "cat /etc/resolv.conf"))
            nameserver 10.0.1.3

        ``options``: resolv.conf's options line, e.g. "timeout:1 attempts:2". The host also
        gets its own /etc/hosts (localhost and itself), nsswitch.conf (files, then DNS)
        and gai.conf (empty: glibc's default order), which code inside ``net.on(host)`` may
        read and change. Called again, it rewrites them.
        """
        self.topology.check_host(host)
        if not nameservers:
            raise ValueError("set_resolver needs the address of at least one name server, "
                             "e.g. net.set_resolver('client', '10.0.1.3')")
        for server in nameservers:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise ValueError(f"a name server is an IP address such as '10.0.1.3', not "
                                 f"{server!r}") from None
        if not isinstance(options, str) or "\n" in options:
            raise ValueError(f"options is one line of resolv.conf options, e.g. "
                             f"'timeout:1 attempts:2', not {options!r}")
        if self._state != "running":
            raise RuntimeError(f"LabNetwork is {self._state}: start it first")
        self._files.configure(host, list(nameservers), options, self._addresses_of(host))

    def run(self, host: str, command: str | list[str], *, check: bool = True,
            timeout: float = 30) -> Output:
        """Run a command on ``host`` and return what it printed (stdout, then stderr).

            >>> net.run("r1", "ip route")
            >>> net.run("client", "ip route get 10.0.2.4")

        ``check``: a command that fails raises RuntimeError with its message (False:
        return the message instead, e.g. to show "Network is unreachable").
        """
        args = shlex.split(command) if isinstance(command, str) else list(command)
        if not args:
            raise ValueError("run() needs a command, e.g. net.run('r1', 'ip route')")
        tool = shutil.which(args[0], path=os.environ.get("PATH", "") + TOOL_PATH)
        if tool is None:
            raise ValueError(f"no program {args[0]!r} here to run on {host} (is it installed?)")
        with self.on(host):
            done = subprocess.run([tool, *args[1:]], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise RuntimeError(f"`{shlex.join(args)}` on {host} failed (exit "
                               f"{done.returncode}): {done.stderr.strip()}")
        return Output((done.stdout + done.stderr).rstrip("\n"))

    def neighbours(self, host: str) -> dict[str, str | None]:
        """``host``'s neighbour (ARP) cache: {address: MAC, or None while unanswered}, in
        address order (the kernel lists them in its hash table's order)."""
        entries = json.loads(self.run(host, "ip -j neigh show") or "[]")

        def order(entry: dict) -> tuple[int, int]:  # IPv4 first, then IPv6
            address = ipaddress.ip_address(entry["dst"])
            return address.version, int(address)

        return {entry["dst"]: entry.get("lladdr") for entry in sorted(entries, key=order)}

    def nft(self, host: str, rules: str) -> None:
        """Add nftables rules on ``host`` (the text ``nft -f`` reads), e.g. a NAT:

            >>> net.nft("r1", '''table ip nat { chain out {
            ...     type nat hook postrouting priority srcnat; oifname "eth1" masquerade
            ... }
            ... }''')

        ``net.run("r1", "nft list ruleset")`` shows them; a mistake raises with nft's message.
        """
        nft = _tool("nft", "nftables")
        with self.on(host):
            done = subprocess.run([nft, "-f", "-"], input=rules, capture_output=True,
                                  text=True, timeout=30)
        if done.returncode != 0:
            raise ValueError(f"nft refused these rules on {host}: {done.stderr.strip()}")

    def capture(self, host: str, *targets, interface: str | None = None,
                name: str | None = None, filter: str | None = None, **options):
        """A Capture on ``host``'s ``interface`` (default: its only one), rows labelled by
        host name: every packet there, or only ``targets`` (servers, ports) and/or what
        the tcpdump-style ``filter`` ("arp or icmp") matches.

            >>> with net.capture("r1", interface="eth1", name="10-ttl") as wire: ...
        """
        from labkit.capture.hostcapture import HostCapture

        self.topology.check_host(host)
        if interface is None:
            interface = self.topology.interface(host).name
        names = [i.name for i in self.topology.interfaces[host]]
        if interface not in names:
            raise ValueError(f"{host} has interfaces {names}, not {interface!r}")
        return HostCapture(host, interface, targets, on=self.on, names=self.topology.names(),
                           hosts=self.topology.hosts, name=name, filter=filter, **options)

    def set_rto_min(self, host: str, seconds: float) -> None:
        """Give TCP on ``host`` a floor for its retransmission timer (Linux: 200 ms), on
        each of its routes (``ip route ... rto_min``): a lesson that shows duplicate ACKs
        at work can keep a busy machine's late ACKs from firing the timer first.

            >>> net.set_rto_min("client", 1.0)
        """
        if not 0 < seconds <= 120:
            raise ValueError(f"rto_min must be between 0 and 120 seconds, not {seconds!r}")
        changes = []
        for route in json.loads(self.run(host, "ip -j route show")):
            words = [route["dst"]]
            if "gateway" in route:
                words += ["via", route["gateway"]]
            words += ["dev", route["dev"], "proto", route.get("protocol", "boot"),
                      "scope", route.get("scope", "global")]
            if "prefsrc" in route:
                words += ["src", route["prefsrc"]]
            changes.append(f"route change {' '.join(words)} rto_min {round(seconds * 1000)}ms")
        with self.on(host):
            _ip(*changes)

    def lateness(self, tolerance: float = 0.001) -> dict[str, Lateness]:
        """Per direction, how many frames the link sent on more than ``tolerance`` s after
        they were due, and the worst: ``print(net.lateness()["client→server"])``.
        Plain cables (no impairment) are the kernel's: they have no lateness to report."""
        return self.link.lateness(tolerance) if self.link is not None else {}

    def too_busy(self, tolerance: float = 0.001) -> str | None:
        """None if the link kept its timing; else one sentence a lesson prints before
        numbers that are the machine's, not the link's:

            >>> if (busy := net.too_busy()):
            ...     print(busy)
        """
        return self.link.too_busy(tolerance) if self.link is not None else None

    def figure(self, *, title: str | None = None, routes: bool = False):
        """A picture of the network: hosts, interfaces, addresses, subnets, cables (and
        with ``routes=True`` the routes labkit set)."""
        from labkit.views.topology import topology_figure

        return topology_figure(self.topology, title=title, routes=routes, ipv6=self.ipv6)

    # -- building and taking down ---------------------------------------------------------
    def start(self) -> LabNetwork:
        """Build the network (namespaces, cables, addresses, routes); ``stop()`` undoes it."""
        if self._state != "new":
            raise RuntimeError("a LabNetwork runs once: make a new one")
        if os.geteuid() != 0:
            raise RuntimeError(
                "LabNetwork needs the lab kernel (its own network namespace, where it may "
                "make hosts): choose the 'Python 3 (netlab)' kernel, or run "
                "`python -m labkit.net.namespace -- python ...`; `python -m labkit doctor` "
                "says why it is not available here")
        if others := _other_interfaces():
            raise RuntimeError(
                f"LabNetwork adds network interfaces where it runs, and this network is a "
                f"machine's (it has {', '.join(others)}): run it in the lab kernel ('Python 3 "
                "(netlab)', a network of its own) or under `python -m labkit.net.namespace -- "
                "python ...`")
        self._state = "starting"
        try:
            self._build()
            if self.link is not None:
                self.link.start()
        except BaseException:
            self.stop()
            raise
        self._state = "running"
        return self

    def _build(self) -> None:
        plan = self.topology
        try:
            for host in plan.hosts:
                self._hosts[host] = fd = new_namespace()
                with inside(fd):
                    for knob, value in HOST_SYSCTLS.items():
                        with contextlib.suppress(FileNotFoundError):  # a kernel without IPv6
                            _sysctl(knob, value)
                    _sysctl("net/ipv4/ip_forward", "1" if host in plan.routers else "0")
                    if self.ipv6:
                        for knob, value in HOST_SYSCTLS6.items():
                            _sysctl(knob, value)
                        _sysctl("net/ipv6/conf/all/forwarding",
                                "1" if host in plan.routers else "0")
        except OSError as exc:
            raise RuntimeError(f"LabNetwork could not make a host namespace ({exc}); "
                               f"run `python -m labkit doctor`") from exc
        cables = []
        for k, cable in enumerate(plan.cables):
            a, b = (plan.interface(end, toward) for end, toward in (cable.ends,
                                                                   cable.ends[::-1]))
            # Each host interface gets its own ifindex, 10(k+1) and 10(k+1)+1 (ip link shows
            # "20: eth1@if21"): the kernel brings a veth up at once only when its index
            # differs from its peer's, and in fresh namespaces both would be 2 (then it
            # waits up to a second, and drops what is sent meanwhile).
            index = {a: 10 * (k + 1), b: 10 * (k + 1) + 1}
            host_end = {i: f"name {i.name} index {index[i]} mtu {i.mtu} address {i.mac} "
                           f"netns /proc/self/fd/{self._hosts[i.host]}" for i in (a, b)}
            if cable.forwarded:  # each end to a link-side end here, where the Link reads
                cables += [f"link add {self._ends[(i.host, k)]} mtu {i.mtu} group "
                           f"{self._group} type veth peer {host_end[i]}" for i in (a, b)]
            else:  # one veth pair straight from host to host
                cables.append(f"link add {host_end[a]} type veth peer {host_end[b]}")
        _ip(*cables, pass_fds=tuple(self._hosts.values()))
        # ready means every interface is up as the kernel sees it (see wait_until_up)
        events = {link_events(): set(self._ends.values())} if self._ends else {}
        try:
            self._bring_up(events)
            late = wait_until_up(events, UP_TIMEOUT)
        finally:
            for sock in events:
                sock.close()
        if late:
            states = ", ".join(f"{name}: {state}" for name, state in late.items())
            raise RuntimeError(f"the lab hosts' interfaces did not come up within "
                               f"{UP_TIMEOUT:g} s ({states}): the machine is very busy; "
                               "try again")
        if self.ipv6:
            self._settle_ipv6()

    def _settle_ipv6(self) -> None:
        """Wait until IPv6 has finished starting on every host (ipv6_settled): the kernel
        offers no event for it, so its tables are read again each millisecond."""
        deadline = time.monotonic() + UP_TIMEOUT
        for host, fd in self._hosts.items():
            with inside(fd):
                while not ipv6_settled():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"IPv6 on {host} did not finish starting within "
                                           f"{UP_TIMEOUT:g} s: the machine is very busy; "
                                           "try again")
                    threading.Event().wait(0.001)

    def _bring_up(self, events: dict) -> None:
        """Addresses, links up, neighbours and routes on every host; link-side ends up."""
        plan = self.topology
        for end in self._ends.values():
            _disable_ipv6(end)
            offloads(end, off=True)
        if self._ends:
            _ip(*(f"link set {end} up" for end in self._ends.values()))
        for host, fd in self._hosts.items():
            ifaces = plan.interfaces[host]
            with inside(fd):
                events[link_events()] = {iface.name for iface in ifaces}
                for iface in ifaces:
                    offloads(iface.name, off=True)
                    if self.arp == "dynamic":
                        for family in ("ipv4", "ipv6")[:1 + self.ipv6]:
                            _sysctl(f"net/{family}/neigh/{iface.name}/base_reachable_time_ms",
                                    str(ARP_KEPT_MS))
                lines = ["link set lo up"]
                for iface in ifaces:
                    lines.append(f"addr add {iface.address} dev {iface.name}")
                    if self.ipv6:
                        lines.append(f"addr add {iface.address6} dev {iface.name} nodad")
                    lines.append(f"link set {iface.name} up")
                    if self.arp == "static":
                        peers: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
                            iface.peer_address]
                        if self.ipv6:
                            peers += [iface.peer_address6, iface.peer_link_local]
                        lines += [f"neigh replace {peer} lladdr {iface.peer_mac} dev "
                                  f"{iface.name} nud permanent" for peer in peers]
                lines += [f"route add {route}" for route in plan.routes[host]]
                if self.ipv6:
                    # (ip tells the family from the gateway's address)
                    lines += [f"route add {route}" for route in plan.routes6[host]]
                _ip(*lines)

    def stop(self) -> None:
        """Stop the link, delete the cables, close the hosts (their namespaces go)."""
        if self._state == "stopped":
            return
        self._state = "stopped"
        failed: list[BaseException] = []
        for server in reversed(self._served):  # before their hosts go
            try:
                server.__exit__(None, None, None)
            except Exception as exc:  # noqa: BLE001 - the rest still stop; raised below
                failed.append(exc)
        self._served.clear()
        try:
            if self.link is not None:
                self.link.stop()
        finally:
            if self._ends:  # deleting one end of a veth pair deletes its peer too
                with contextlib.suppress(RuntimeError):
                    _ip(f"link del group {self._group}")
            for fd in self._hosts.values():  # a host's own veth pairs go with it
                os.close(fd)
            self._hosts.clear()
            self._files.close()
        if failed:
            raise failed[0]

    def __enter__(self) -> LabNetwork:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<LabNetwork {self._state}: {self.addresses}>"
