"""Lab hosts with IPv6 beside IPv4, a resolver of their own (/etc files in a mount
namespace), servers started by the network, and the link impairing IPv6 too.

Each test body runs in a fresh lab namespace (test_labnet.in_lab), as root or not, as
the lab kernel does: that is also where a host's mount namespace can be left again.
"""

from test_labnet import in_lab

NETWORK = """
    from labkit import Cable, DNSServer, UDPServer, TCPServer
    def dns_network(**options):
        net = LabNetwork(Cable("client", "r1"), Cable("r1", "dns"), Cable("r1", "www"),
                         ipv6=True, **options).start()
        a, a6 = net.addresses, net.topology.addresses6
        net.serve("dns", DNSServer, {"www.netlab.test": [a["www"], a6["www"]]},
                  host=a["dns"], port=53, name="dns")
        return net, a, a6
"""


def test_hosts_have_link_local_and_unique_local_addresses_and_routes_for_both():
    result = in_lab(NETWORK, """
        net, a, a6 = dns_network()
        brief = net.run("client", "ip -brief address show dev eth0")
        routes = net.run("www", "ip -6 route show default")
        with net.on("www"), UDPServer("echo", host=a6["www"], port=7) as echo:
            with net.on("client"), socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                s.settimeout(5)
                s.sendto(b"over IPv6", echo.address)
                echoed = s.recv(100).decode()
        neighbours = net.neighbours("client")
        net.stop()
        print(json.dumps({"brief": brief, "routes": routes, "echoed": echoed,
                          "neighbours": neighbours}))
    """)
    assert result["brief"].split()[2:] == ["10.0.0.1/24", "fd00:10::1/64", "fe80::aff:fe00:1/64"]
    assert result["routes"].startswith("default via fd00:10:0:2::2 dev eth0")
    assert result["echoed"] == "over IPv6"
    # static neighbours (no ARP, no neighbour discovery): IPv4 first, then IPv6
    assert list(result["neighbours"]) == ["10.0.0.2", "fd00:10::2", "fe80::aff:fe00:2"]


def test_dynamic_neighbours_solicit_and_advertise_and_nothing_else_is_on_the_wire():
    result = in_lab(NETWORK, """
        net, a, a6 = dns_network(arp="dynamic")
        with net.on("www"), UDPServer("echo", host="::", port=7) as echo:
            with net.capture("client", name=None) as wire, net.on("client"):
                for address, family in ((a6["www"], socket.AF_INET6), (a["www"], socket.AF_INET)):
                    with socket.socket(family, socket.SOCK_DGRAM) as s:
                        s.settimeout(5)
                        s.sendto(b"hello", (address, 7))
                        s.recv(100)
        net.stop()
        print(json.dumps([[s.proto, s.src, s.dst, s.summary] for s in wire.segments]))
    """)
    assert [row[:3] for row in result] == [
        ["NDP", "client", "r1"], ["NDP", "r1", "client"], ["UDP", "client", "www"],
        ["UDP", "www", "client"], ["ARP", "client", "r1"], ["ARP", "r1", "client"],
        ["UDP", "client", "www"], ["UDP", "www", "client"]]
    assert result[0][3] == "NDP who has fd00:10::2? tell fd00:10::1"


def test_a_dual_stack_server_takes_both_families_and_a_v6only_one_refuses_ipv4():
    result = in_lab(NETWORK, """
        net, a, a6 = dns_network()
        with net.on("www"):
            both = socket.create_server(("::", 8080), family=socket.AF_INET6,
                                        dualstack_ipv6=True)
            only6 = socket.socket(socket.AF_INET6)
            only6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            only6.bind(("::", 8081)); only6.listen()
            server = TCPServer("echo", host="::", port=8082)   # a lab server on "::" too
            server.__enter__()
        seen = []
        with net.on("client"):
            for address in (a["www"], a6["www"]):
                with socket.create_connection((address, 8080), timeout=5):
                    conn, peer = both.accept()
                    seen.append(peer[0]); conn.close()
            try:
                socket.create_connection((a["www"], 8081), timeout=5)
                refused = "connected"
            except ConnectionRefusedError as exc:
                refused = type(exc).__name__
            with socket.create_connection((a["www"], 8082), timeout=5) as s:
                s.sendall(b"x"); echoed = s.recv(1).decode()
        server.__exit__(None, None, None); both.close(); only6.close(); net.stop()
        print(json.dumps({"seen": seen, "refused": refused, "echoed": echoed}))
    """)
    assert result["seen"] == ["::ffff:10.0.0.1", "fd00:10::1"]   # IPv4 as an IPv4-mapped address
    assert result["refused"] == "ConnectionRefusedError"
    assert result["echoed"] == "x"


def test_a_host_asks_its_own_resolver_and_the_kernel_keeps_its_own_files():
    result = in_lab(NETWORK, """
        import asyncio, tempfile
        before = open("/etc/resolv.conf").read()
        work = tempfile.mkdtemp()
        os.chdir(work)
        net, a, a6 = dns_network()
        net.set_resolver("client", a["dns"], options="timeout:1 attempts:1")
        files = net._files._directory
        with net.on("client"):
            inside = open("/etc/resolv.conf").read()
            where = os.getcwd()
            found = sorted({info[4][0] for info in socket.getaddrinfo("www.netlab.test", 80)})
            async def threaded():   # asyncio looks names up in a thread of its pool
                infos = await asyncio.get_running_loop().getaddrinfo("www.netlab.test", 80)
                return sorted({info[4][0] for info in infos})
            by_asyncio = asyncio.run(threaded())
        ran = net.run("client", "getent hosts www.netlab.test")
        after = open("/etc/resolv.conf").read()
        net.stop()
        print(json.dumps({"inside": inside, "outside": before == after, "found": found,
                          "asyncio": by_asyncio, "ran": ran, "cwd": [where, os.getcwd(), work],
                          "cleaned": not os.path.exists(files)}))
    """)
    assert result["inside"] == "nameserver 10.0.1.3\noptions timeout:1 attempts:1\n"
    assert result["outside"], "the kernel's own /etc/resolv.conf changed"
    assert result["found"] == result["asyncio"] == ["10.0.2.4", "fd00:10:0:2::4"]
    assert result["ran"].split()[1] == "www.netlab.test"
    where, after, work = result["cwd"]
    assert where == after == work, "a thread that entered a host lost its working directory"
    assert result["cleaned"], "the host's /etc files outlived the network"


def test_set_resolver_names_its_mistakes():
    result = in_lab(NETWORK, """
        net, a, a6 = dns_network()
        errors = []
        for args, kwargs in ((("client",), {}), (("client", "dns.netlab.test"), {}),
                             (("nobody", "10.0.1.3"), {}), (("client", "10.0.1.3"),
                                                           {"options": "a\\nb"})):
            try:
                net.set_resolver(*args, **kwargs)
            except ValueError as exc:
                errors.append(str(exc))
        net.stop()
        print(json.dumps(errors))
    """)
    assert len(result) == 4
    assert "at least one name server" in result[0] and "not 'dns.netlab.test'" in result[1]
    assert "host must be one of" in result[2] and "one line" in result[3]


def test_the_link_numbers_and_impairs_ipv6_frames_as_ipv4_ones():
    result = in_lab("""
        from labkit import Cable
        from labkit.net.impairment import LinkModel
        lossy = Impairment(loss=0.3, seed=7)
        net = LabNetwork(Cable("client", "server", lossy), ipv6=True, arp="dynamic").start()
        with net.on("server"):
            sink = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sink.bind(("fd00:10::2", 9))
            sink.settimeout(0.5)
        with net.on("client"), socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            for n in range(20):
                s.sendto(b"%d" % n, ("fd00:10::2", 9))
        arrived = []
        try:
            while True:
                arrived.append(int(sink.recv(10)))
        except TimeoutError:
            pass
        stats = net.link.stats["client→server"]
        net.stop()
        model = LinkModel(lossy, stream=0)
        expected = [n for n in range(20) if not model.lost()]
        print(json.dumps({"arrived": arrived, "expected": expected, "frames": stats["frames"]}))
    """)
    # neighbour discovery passed uncounted: datagram n is the link's frame n
    assert result["frames"] == 20
    assert result["arrived"] == result["expected"] and len(result["arrived"]) < 20
