"""Notebook 11's network: every capture on every interface equals tcpdump's there, frame for
frame, and tshark reads it as labkit does: a stub's lookup and the resolver's walk from
the root (DNS over UDP and TCP), neighbour discovery and ARP, an ICMPv6 error, TCP over
both families, and a Happy Eyeballs race against a black hole.

tcpdump runs on each host as root (test_topology_capture.py says why): these tests need
real root; test_lab_ipv6_and_names.py proves the same pieces unprivileged.
"""

import asyncio
import socket

from test_topology_capture import _every_interface_as_tcpdump

from labkit import Cable, DNSResolver, DNSServer, Impairment, LabNetwork, TCPServer


def names_network() -> LabNetwork:
    """Notebook 11's hosts, with dynamic neighbours (ARP and neighbour discovery on the wire)."""
    return LabNetwork(Cable("client", "r1"), Cable("r1", "resolver"),
                      Cable("r1", "root", Impairment(delay=0.002)), Cable("r1", "tld"),
                      Cable("r1", "ns"), Cable("r1", "www"), arp="dynamic", ipv6=True)


def serve_names(net: LabNetwork) -> None:
    a, a6 = net.addresses, net.topology.addresses6
    net.serve("root", DNSServer, zone=".", host=a["root"], port=53, name="root",
              delegate={"test": {"ns.nic.test": [a["tld"], a6["tld"]]}})
    net.serve("tld", DNSServer, zone="test", host=a["tld"], port=53, name="tld",
              delegate={"netlab.test": {"ns.netlab.test": [a["ns"], a6["ns"]]}})
    many = [f"10.9.{i // 200}.{i % 200 + 1}" for i in range(100)]   # too big for UDP: TCP
    net.serve("ns", DNSServer, {"www.netlab.test": [a["www"], a6["www"]],
                                "many.netlab.test": many}, zone="netlab.test", host=a["ns"],
              port=53, name="ns")
    net.serve("resolver", DNSResolver, roots=[a["root"]], host=a["resolver"], port=53)
    net.serve("www", TCPServer, "echo", host="::", port=80, name="www")
    net.set_resolver("client", a["resolver"], options="timeout:2 attempts:1")


def _traffic(net: LabNetwork) -> None:
    """Each step waits for its answers, so nothing is in flight when the captures end."""
    a6 = net.topology.addresses6
    with net.on("client"):
        found = {info[4][0] for info in socket.getaddrinfo("www.netlab.test", 80,
                                                           type=socket.SOCK_STREAM)}
        assert found == {net.addresses["www"], a6["www"]}, found
        assert len(socket.getaddrinfo("many.netlab.test", 80, family=socket.AF_INET,
                                      type=socket.SOCK_STREAM)) == 100
        for address in (a6["www"], net.addresses["www"]):
            with socket.create_connection((address, 80), timeout=5) as sock:
                sock.sendall(b"both families")
                assert sock.recv(100) == b"both families"
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.connect((a6["www"], 9))          # nobody listens: ICMPv6 port unreachable
            probe.send(b"anyone?")
            probe.settimeout(5)
            try:
                probe.recv(10)
            except ConnectionRefusedError:
                pass
    net.nft("r1", f"""table ip6 broken {{ chain forward {{
        type filter hook forward priority filter; ip6 daddr {a6["www"]} drop; }}; }}""")

    async def race():
        _reader, writer = await asyncio.open_connection("www.netlab.test", 80,
                                                        happy_eyeballs_delay=0.1)
        family = writer.get_extra_info("socket").family
        writer.close()
        await writer.wait_closed()
        return family

    with net.on("client"):
        assert asyncio.run(race()) == socket.AF_INET


def test_every_interface_of_notebook_11s_network_equals_tcpdump(lab_hosts, live, nft,
                                                                  tmp_path):
    with names_network() as net:
        serve_names(net)
        kinds = _every_interface_as_tcpdump(net, lambda: _traffic(net), tmp_path)
    assert kinds == {"ARP", "NDP", "UDP", "TCP", "ICMPv6"}, kinds
