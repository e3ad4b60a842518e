"""The plan of a lab network (no namespaces needed): addresses, interfaces, routes, errors,
and its picture."""

import pytest

from labkit import Cable, Impairment, LabNetwork
from labkit.net.topology import Topology
from labkit.views.topology import impairment_text, topology_figure


def chain(*cables):
    return Topology([Cable("client", "r1"), Cable("r1", "r2", mtu=1280),
                     Cable("r2", "server", Impairment(delay=0.01)), *cables])


def test_the_last_number_of_every_address_names_its_host():
    plan = chain()
    assert plan.hosts == ["client", "r1", "r2", "server"]
    assert plan.routers == ["r1", "r2"]
    assert {h: [(i.name, str(i.address), i.peer) for i in ifaces]
            for h, ifaces in plan.interfaces.items()} == {
        "client": [("eth0", "10.0.0.1/24", "r1")],
        "r1": [("eth0", "10.0.0.2/24", "client"), ("eth1", "10.0.1.2/24", "r2")],
        "r2": [("eth0", "10.0.1.3/24", "r1"), ("eth1", "10.0.2.3/24", "server")],
        "server": [("eth0", "10.0.2.4/24", "r2")]}
    assert plan.addresses == {"client": "10.0.0.1", "r1": "10.0.0.2", "r2": "10.0.1.3",
                              "server": "10.0.2.4"}
    assert plan.names()["10.0.1.2"] == "r1" and plan.names()["10.0.2.3"] == "r2"


def test_macs_spell_the_address_and_mtus_follow_the_cable():
    plan = chain()
    r1 = plan.interfaces["r1"]
    assert [i.mac for i in r1] == ["02:00:0a:00:00:02", "02:00:0a:00:01:02"]
    assert [i.mtu for i in r1] == [1500, 1280]
    assert r1[1].peer_mac == "02:00:0a:00:01:03"
    assert str(r1[1].address6) == "fd00:10:0:1::2/64"   # planned for IPv6, not yet built


def test_routes_reach_every_subnet_by_the_shortest_path():
    plan = chain()
    assert {h: [str(r) for r in routes] for h, routes in plan.routes.items()} == {
        "client": ["default via 10.0.0.2 dev eth0"],
        "r1": ["10.0.2.0/24 via 10.0.1.3 dev eth1"],
        "r2": ["10.0.0.0/24 via 10.0.1.2 dev eth0"],
        "server": ["default via 10.0.2.3 dev eth0"]}
    assert plan.path("client", "server") == ["client", "r1", "r2", "server"]
    assert plan.hops("client", "server") == ["10.0.0.2", "10.0.1.3", "10.0.2.4"]
    assert plan.hops("server", "client") == ["10.0.2.3", "10.0.1.2", "10.0.0.1"]
    assert Topology(chain().cables, routes=None).routes["client"] == []


def test_a_ring_takes_the_shorter_way_and_a_star_router_routes_each_branch():
    ring = Topology([Cable("a", "b"), Cable("b", "c"), Cable("c", "d"), Cable("d", "a")])
    assert [str(r) for r in ring.routes["a"]] == ["10.0.1.0/24 via 10.0.0.2 dev eth0",
                                                  "10.0.2.0/24 via 10.0.3.4 dev eth1"]
    star = Topology([Cable("x", "hub"), Cable("y", "hub"), Cable("hub", "z")])
    assert star.routes["hub"] == []          # every subnet is its own
    assert [str(r) for r in star.routes["y"]] == ["default via 10.0.1.2 dev eth0"]


def test_two_hosts_are_the_lab_network_of_notebook_09():
    net = LabNetwork(Impairment(delay=0.02))
    assert net.addresses == {"client": "10.0.0.1", "server": "10.0.0.2"}
    assert net.topology.routes == {"client": [], "server": []}
    assert list(net.link.impairments) == ["client→server", "server→client"]
    plain = LabNetwork.chain("client", "r1", "server")
    assert plain.link is None   # plain cables: veth pairs, nothing for the link to carry


def test_subnets_and_addresses_of_your_own():
    plan = Topology([Cable("laptop", "nat", subnet="192.168.1.0/24",
                           addresses={"nat": "192.168.1.1", "laptop": "192.168.1.10"}),
                     Cable("nat", "server")])
    assert plan.addresses == {"laptop": "192.168.1.10", "nat": "192.168.1.1",
                              "server": "10.0.1.3"}
    assert [str(r) for r in plan.routes["server"]] == ["default via 10.0.1.2 dev eth0"]


@pytest.mark.parametrize("make, message", [
    (lambda: Cable("a", "a"), "two different hosts"),
    (lambda: Cable("a", "b c"), "short word"),
    (lambda: Cable("a", "b", mtu=40), "mtu must be an int in 68-65535"),
    (lambda: Cable("a", "b", subnet="10.0.0.0/31"), "too small for two hosts"),
    (lambda: Cable("a", "b", subnet="ten"), "subnet must be an IPv4 network"),
    (lambda: Cable("a", "b", Impairment(), up=Impairment()), "not both"),
    (lambda: Cable("a", "b", addresses={"c": "10.0.0.9"}), "addresses must be"),
    (lambda: Topology([Cable("a", "b"), Cable("b", "a")]), "give a pair of hosts one cable"),
    (lambda: Topology([Cable("a", "b"), Cable("b", "c", subnet="10.0.0.0/16")]),
     "overlapping subnets"),
    (lambda: Topology([Cable("a", "b", addresses={"a": "10.0.0.2"})]), "both ends"),
    (lambda: Topology([Cable("a", "b", addresses={"a": "10.9.0.1"})]), "not a host address"),
    (lambda: Topology([Cable("a", "b")], routes="static"), "routes must be 'auto'"),
    (lambda: Topology([]), "a list of Cable"),
    (lambda: LabNetwork(Cable("a", "b"), up=Impairment()), "give each Cable its own"),
    (lambda: LabNetwork(Cable("a", "b"), arp="sometimes"), "arp must be"),
    (lambda: LabNetwork(Impairment(), Impairment()), "one Impairment"),
    (lambda: LabNetwork.chain("lonely"), "at least two hosts"),
    (lambda: chain().interface("r1"), "say which, e.g. toward='client'"),
    (lambda: chain().interface("r1", toward="server"), "no cable to 'server'"),
    (lambda: chain().path("client", "nobody"), "host must be one of"),
    (lambda: LabNetwork.chain("client", "r1").interface("client"), "plain veth pair"),
])
def test_mistakes_are_named_with_the_fix(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_figure_shows_hosts_interfaces_addresses_subnets_and_impairments():
    fig = topology_figure(chain(), routes=True)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"client", "r1\nrouter", "r2\nrouter", "server"} <= texts
    assert {"eth1\n10.0.1.2", "eth0\n10.0.1.3", "eth0\n10.0.2.4"} <= texts
    assert "10.0.1.0/24\nMTU 1280" in texts and "10.0.2.0/24\n10 ms" in texts
    assert "10.0.2.0/24 via 10.0.1.3 dev eth1" in texts
    assert fig.axes[0].get_title() == "4 lab hosts (2 routers), 3 subnets"


def test_impairments_in_a_few_words():
    assert impairment_text(Impairment(delay=0.02, loss=0.01, rate=10e6)) == \
        "20 ms, 1% loss, 10 Mbit/s"
    assert impairment_text(Impairment()) == ""
    fig = topology_figure(Topology([Cable("a", "b", up=Impairment(delay=0.02),
                                          down=Impairment())]))
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert "10.0.0.0/24\na→b: 20 ms\nb→a: as is" in texts


def test_a_missing_tool_or_program_says_what_to_install(monkeypatch):
    import labkit.net.hosts as hosts

    monkeypatch.setattr(hosts.shutil, "which", lambda *args, **kwargs: None)
    net = LabNetwork.chain("client", "nat")
    with pytest.raises(RuntimeError, match=r"needs `nft` from nftables \(apt-get install"):
        net.nft("nat", "table ip nat {}")
    with pytest.raises(ValueError, match="no program 'traceroute' here"):
        net.run("client", "traceroute 10.0.0.2")
    with pytest.raises(ValueError, match="run\\(\\) needs a command"):
        net.run("client", "")
