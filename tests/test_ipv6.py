"""IPv6 beside IPv4 without a network: the plan's addresses and routes, neighbour discovery
and ICMPv6 in captures, the link's rule for what it impairs, connection races."""

import ipaddress

import packets
import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6
from scapy.layers.l2 import Ether

from labkit import Cable, Impairment
from labkit.capture.flows import segments
from labkit.net.forwarder import neighbour_discovery
from labkit.net.topology import Topology, link_local
from labkit.protocols.icmp import icmp_message, quotes
from labkit.views.ladder import _ended_on_the_way
from labkit.views.race import connection_attempts, race_figure

HOSTS = {"fd00:10::1": "client", "fd00:10::2": "r1", "fd00:10:0:1::3": "server",
         "fe80::aff:fe00:1": "client"}


def six():
    return segments(packets.neighbour_discovery_then_errors6(), {80: "server"},
                    {"hosts": HOSTS})


# -- the plan ----------------------------------------------------------------------------------
def test_every_interface_has_a_unique_local_address_beside_its_ipv4_one():
    plan = Topology([Cable("client", "r1"), Cable("r1", "r2"), Cable("r2", "server")])
    assert plan.addresses6 == {"client": "fd00:10::1", "r1": "fd00:10::2",
                               "r2": "fd00:10:0:1::3", "server": "fd00:10:0:2::4"}
    r2 = plan.interface("r2", toward="r1")
    assert (str(r2.address6), str(r2.peer_address6)) == ("fd00:10:0:1::3/64", "fd00:10:0:1::2")
    assert [str(r) for r in plan.routes6["client"]] == ["default via fd00:10::2 dev eth0"]
    assert [str(r) for r in plan.routes6["r1"]] == ["fd00:10:0:2::/64 via fd00:10:0:1::3 dev eth1"]
    names = plan.names()
    assert names["fd00:10:0:2::4"] == names["10.0.2.4"] == names[str(
        plan.interfaces["server"][0].link_local)] == "server"


def test_link_local_addresses_are_the_kernels_eui64():
    # RFC 4291 2.5.1: the MAC's U/L bit flipped, ff:fe in the middle
    assert link_local("02:00:0a:00:00:01") == ipaddress.ip_address("fe80::aff:fe00:1")
    assert link_local("52:54:00:12:34:56") == ipaddress.ip_address("fe80::5054:ff:fe12:3456")


# -- captures ----------------------------------------------------------------------------------
def test_neighbour_discovery_reads_like_arp():
    segs = six()
    assert [(s.proto, s.src, s.dst, s.summary) for s in segs[:2]] == [
        ("NDP", "client", "r1", "NDP who has fd00:10::2? tell fd00:10::1"),
        ("NDP", "r1", "client", "NDP fd00:10::2 is at 02:00:0a:00:00:02")]


def test_icmpv6_errors_quote_the_packet_they_answer():
    segs = six()
    summaries = [s.summary for s in segs if s.proto == "ICMPv6"]
    assert summaries[:3] == [
        "ICMPv6 hop limit exceeded in transit (quotes UDP to port 33434)",
        "ICMPv6 port unreachable (quotes UDP to port 33435)",
        "ICMPv6 packet too big, next-hop MTU 1280 (quotes UDP to port 33497)"]
    too_big = icmp_message(segs[7].packet)
    assert (too_big.version, too_big.mtu, too_big.quoted.length) == (6, 1280, 1448)
    assert quotes(too_big, segs[6].packet) and not quotes(too_big, segs[2].packet)
    assert "echo request id=7 seq=1" in segs[8].summary
    assert segs[10].summary == "ICMPv6 multicast listener report"
    assert [s.flags for s in segs if s.proto == "TCP"] == ["SYN", "SYN-ACK", "ACK"]


def test_a_ladder_ends_dropped_ipv6_packets_at_the_router_that_said_so():
    ended = _ended_on_the_way(six())
    assert ended == {2: ("r1", "hop limit ran out", 1), 6: ("r1", "too big", None)}


# -- the link ---------------------------------------------------------------------------------
def test_the_link_passes_neighbour_discovery_and_mld_as_it_passes_arp():
    frames = [bytes(p) for p in packets.neighbour_discovery_then_errors6()]
    passed = [neighbour_discovery(memoryview(frame)) for frame in frames]
    assert passed == [True, True] + [False] * 8 + [True] + [False] * 3
    solicitation = bytes(Ether() / IPv6(src="::", dst="ff02::1:ff00:2") / ICMPv6ND_NS(
        tgt="fd00:10::2") / ICMPv6NDOptSrcLLAddr(lladdr="02:00:0a:00:00:01"))
    assert neighbour_discovery(solicitation)
    assert not neighbour_discovery(bytes(Ether() / IPv6() / TCP()))


# -- racing connections -----------------------------------------------------------------------
def race(ipv6_answers: bool):
    """Happy Eyeballs as a capture shows it: IPv6's SYN at 0, IPv4's at 250 ms."""
    from packets import _timed
    c4, s4, c6, s6 = ("10.0.0.1", 40000), ("10.0.5.7", 80), ("fd00:10::1", 40001), (
        "fd00:10:0:5::7", 80)

    def seg(src, dst, flags, seq, ack=0):
        ip = IPv6(src=src[0], dst=dst[0]) if ":" in src[0] else packets.IP(src=src[0],
                                                                           dst=dst[0])
        return Ether() / ip / TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq, ack=ack)

    pkts = _timed([seg(c6, s6, "S", 100)])
    later = [seg(c4, s4, "S", 500), seg(s4, c4, "SA", 900, 501), seg(c4, s4, "A", 501, 901),
             seg(c4, s4, "PA", 501, 901)]
    if ipv6_answers:
        later[1:1] = [seg(s6, c6, "SA", 70, 101)]
    pkts += _timed(later, t=10.25)
    return segments(pkts, {80: "www"}, {"hosts": {"10.0.5.7": "www", "fd00:10:0:5::7": "www"}})


def test_connection_attempts_race_by_family():
    v6, v4 = connection_attempts(race(ipv6_answers=False))
    assert (v6.family, v6.address, v6.connected, len(v6.syns)) == ("IPv6", "fd00:10:0:5::7",
                                                                  None, 1)
    assert (v4.family, v4.started, v4.connected) == ("IPv4", pytest.approx(0.25),
                                                     pytest.approx(0.251))
    assert len(v4.packets) == 3  # the handshake only: the data after it is not the race
    won_late = connection_attempts(race(ipv6_answers=True))[0]
    assert won_late.connected == pytest.approx(0.251)


def test_the_race_figure_says_who_won_and_draws_the_delay():
    fig = race_figure(race(ipv6_answers=False), delay=0.25)
    ax = fig.axes[0]
    assert ax.get_title() == "IPv4 connected after 251 ms; 1 other attempt"
    texts = [t.get_text() for t in ax.texts]
    assert "IPv6 fd00:10:0:5::7" in texts and "IPv4 10.0.5.7" in texts
    assert " happy_eyeballs_delay = 250 ms" in texts and "no answer: abandoned" in texts
    assert race_figure([]).axes[0].texts[0].get_text().startswith("(no connection attempts")


def test_a_topology_figure_of_a_router_with_many_neighbours_stays_compact():
    from labkit.views.topology import topology_figure

    plan = Topology([Cable("client", "r1"), *(Cable("r1", host, Impairment(delay=0.01))
                                              for host in ("root", "tld", "ns", "www"))])
    fig = topology_figure(plan, ipv6=True)
    width, height = fig.get_size_inches()
    assert height <= 7.5 and width >= height, (width, height)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "root\n10.0.1.3\nfd00:10:0:1::3" in texts  # a leaf's addresses in its box
