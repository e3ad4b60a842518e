"""What notebook 10 needs, proved live on lab hosts, as root and as a plain user alike.

Every test body runs in a child process in a user + network namespace of its own (see
test_labnet.in_lab), as the lab kernel does: a traceroute written in Python (UDP probes
with IP_TTL and IP_RECVERR, and an ICMP socket), a 1280-byte link in the middle with DF,
"fragmentation needed" and the path-MTU cache (IP_MTU), UDP fragmented and reassembled,
a PMTU black hole made by a firewall rule and MSS clamping as its cure, NAT masquerade
and a port forward, a firewall's drop against its reject, a missing route, dynamic ARP.
Each claim waits on a condition or a bounded deadline, never on a sleep.
"""


from test_labnet import in_lab

NETWORK = """
    import errno, select, struct
    from labkit import Capture, TCPServer, UDPServer
    from labkit.net.topology import Cable
    from labkit.protocols.icmp import icmp_message
    IP_RECVERR, IP_MTU_DISCOVER, IP_PMTUDISC_DONT, IP_PMTUDISC_DO, IP_MTU = 11, 10, 0, 2, 14

    def chain(**options):
        '''client — r1 — r2 — server, with a 1280-byte link in the middle.'''
        return LabNetwork(Cable("client", "r1"), Cable("r1", "r2", mtu=1280),
                          Cable("r2", "server"), **options)

    def error_from(sock, timeout=5.0):
        '''The next error in the socket's error queue: (errno, ICMP type, code, info, from).'''
        poller = select.poll()
        poller.register(sock, select.POLLERR)
        if not poller.poll(timeout * 1000):
            return None
        _data, ancillary, _flags, _addr = sock.recvmsg(2048, 512, socket.MSG_ERRQUEUE)
        for _level, _kind, cdata in ancillary:   # struct sock_extended_err, then the sender
            code, origin, kind, icmp_code, _pad, info, _data2 = struct.unpack("IBBBBII", cdata[:16])
            return code, kind, icmp_code, info, socket.inet_ntoa(cdata[20:24])

    def receive_all(sock, total, seconds):
        '''Bytes read until ``total`` or ``seconds`` passed (bounded either way).'''
        got, deadline = 0, time.monotonic() + seconds
        while got < total and time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            got += len(chunk)
        return got
"""


def test_a_traceroute_in_python_finds_the_routers_the_topology_has():
    result = in_lab(NETWORK, """
        hops = {"udp": [], "icmp": []}
        with chain() as net:
            with net.capture("client", name=None) as wire, net.on("client"):
                for kind in hops:
                    if kind == "udp":
                        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    else:   # a "ping" socket: no privilege needed for echo requests
                        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM,
                                              socket.IPPROTO_ICMP)
                    probe.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
                    for ttl in range(1, 8):
                        probe.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
                        if kind == "udp":
                            probe.sendto(b"probe", ("10.0.2.4", 33433 + ttl))
                            code, icmp_type, _c, _i, sender = error_from(probe)
                        else:
                            probe.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, ttl) + b"probe",
                                         ("10.0.2.4", 0))
                            found = error_from(probe, timeout=0.5)
                            if found is None:  # no error: the echo reply came
                                probe.recv(100)
                                hops[kind].append("10.0.2.4")
                                break
                            code, icmp_type, _c, _i, sender = found
                        hops[kind].append(sender)
                        if icmp_type != 11:
                            break
            path = net.topology.hops("client", "server")
        exceeded = [s for s in wire.segments if s.proto == "ICMP" and "exceeded" in s.summary]
        quotes = [icmp_message(s.packet).quoted for s in exceeded]
        print(json.dumps({"hops": hops, "path": path,
                          "rows": [(s.src, s.dst, s.summary) for s in exceeded],
                          "quoted": [(q.dst, q.ttl) for q in quotes]}))
    """)
    assert result["path"] == ["10.0.0.2", "10.0.1.3", "10.0.2.4"]
    assert result["hops"]["udp"] == result["path"], result
    assert result["hops"]["icmp"] == result["path"], result
    rows = result["rows"]
    assert [(src, dst) for src, dst, _ in rows] == [("r1", "client"), ("r2", "client")] * 2
    assert "quotes UDP to port 33434" in rows[0][2]
    assert result["quoted"] == [["10.0.2.4", 1]] * 4  # each quote: the probe as it died


def test_a_1280_byte_link_sends_fragmentation_needed_and_the_path_mtu_is_learned():
    result = in_lab(NETWORK, """
        with chain() as net:
            with net.capture("client", name=None) as wire, net.on("client"):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
                sock.connect(("10.0.2.4", 9000))
                before = sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
                sock.send(b"x" * 1400)           # 1428 bytes with DF: too big for r1 — r2
                code, icmp_type, icmp_code, mtu, sender = error_from(sock)
                after = sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
                try:
                    sock.send(b"x" * 1400)
                    again = "sent"
                except OSError as exc:
                    again = errno.errorcode[exc.errno]
            cache = net.run("client", "ip route get 10.0.2.4")
        needed = [s for s in wire.segments if s.proto == "ICMP"]
        print(json.dumps({"before": before, "after": after, "error": [
            errno.errorcode[code], icmp_type, icmp_code, mtu, sender], "again": again,
            "cache": cache, "rows": [(s.src, s.summary) for s in needed]}))
    """)
    assert result["before"] == 1500 and result["after"] == 1280, result
    assert result["error"] == ["EMSGSIZE", 3, 4, 1280, "10.0.0.2"], result
    assert result["again"] == "EMSGSIZE"  # the kernel now refuses it before it leaves
    assert "mtu 1280" in result["cache"]
    assert result["rows"] == [["r1", "ICMP fragmentation needed, next-hop MTU 1280 "
                                     "(quotes UDP to port 9000)"]]


def test_udp_without_df_is_fragmented_again_at_the_small_link_and_reassembled():
    result = in_lab(NETWORK, """
        with chain() as net:
            with net.on("server"):
                receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                receiver.bind(("10.0.2.4", 9000))
                receiver.settimeout(5)
            near = net.capture("r1", interface="eth0", filter="ip")
            far = net.capture("r1", interface="eth1", filter="ip")
            with near, far, net.on("client"):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
                sock.sendto(bytes(range(250)) * 16, ("10.0.2.4", 9000))
                arrived = receiver.recv(65536)
        rows = {name: [(s.proto, s.length, s.summary) for s in capture.segments]
                for name, capture in (("near", near), ("far", far))}
        print(json.dumps({"arrived": arrived == bytes(range(250)) * 16, "rows": rows}))
    """)
    assert result["arrived"]
    near, far = result["rows"]["near"], result["rows"]["far"]
    assert [(p, n) for p, n, _ in near] == [("IP", 1480), ("IP", 1480), ("UDP", 4000)]
    # 4,008 bytes (UDP header too): 1480 + 1480 + 1048 at MTU 1500; each 1480-byte
    # fragment cut again for MTU 1280 (1256 + 224), the last one fits
    assert [(p, n) for p, n, _ in far] == [("IP", 1256), ("IP", 224)] * 2 + [("UDP", 4000)]
    assert near[-1][2].endswith("reassembled from 3 fragments (#0, #1, #2)")


def test_a_firewall_that_drops_fragmentation_needed_makes_a_black_hole_mss_clamping_cures(
        nft):
    result = in_lab(NETWORK, """
        TOTAL = 200_000
        def send_lots(conn, addr):
            conn.sendall(b"d" * TOTAL)

        def download(net, server):
            with net.on("client"), socket.create_connection(server.address, timeout=5) as s:
                return receive_all(s, TOTAL, seconds=1.0 if blocked else 30.0)

        got = {}
        with chain() as net:
            with net.on("server"), TCPServer(handler=send_lots, host="10.0.2.4") as server:
                blocked = False
                got["path MTU discovery"] = download(net, server)
                net.run("server", "ip route flush cache")   # forget the path MTU learned
                net.nft("r2", '''table ip firewall { chain out {
                    type filter hook output priority filter;
                    icmp type destination-unreachable icmp code frag-needed drop
                }
                }''')
                blocked = True
                got["black hole"] = download(net, server)
                net.run("server", "ip route flush cache")
                net.nft("r1", '''table ip clamp { chain forward {
                    type filter hook forward priority mangle;
                    oifname "eth1" tcp flags syn tcp option maxseg size set rt mtu
                }
                }''')
                blocked = False
                with net.capture("server", server, name=None) as wire:
                    got["clamped"] = download(net, server)
        syn = next(s for s in wire.segments if s.flags == "SYN")
        mss = dict(syn.packet["TCP"].options)["MSS"]
        print(json.dumps({"got": got, "mss": mss}))
    """)
    got = result["got"]
    assert got["path MTU discovery"] == 200_000
    assert got["black hole"] < 200_000   # the full-size segments never arrive
    assert got["clamped"] == 200_000 and result["mss"] == 1240  # 1280 - 20 (IP) - 20 (TCP)


def test_nat_masquerades_a_private_subnet_and_a_port_forward_reaches_a_host_behind_it(nft):
    result = in_lab(NETWORK, """
        net = LabNetwork(Cable("laptop", "nat", subnet="192.168.1.0/24",
                               addresses={"laptop": "192.168.1.10", "nat": "192.168.1.1"}),
                         Cable("nat", "server"))
        out = {}
        with net:
            net.run("server", "ip route del default")   # the Internet has no route to 192.168
            with net.on("server"):
                echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                echo.bind(("10.0.1.3", 9000))
                echo.settimeout(5)

            def ask():
                '''The laptop sends; the server answers if it can: (reply, server's view).'''
                with net.on("laptop"), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(b"hello", ("10.0.1.3", 9000))
                    data, source = echo.recvfrom(100)
                    try:
                        echo.sendto(data, source)
                    except OSError as exc:   # no route back to where it came from
                        return None, (source[0], errno.errorcode[exc.errno])
                    s.settimeout(5)
                    return s.recv(100).decode(), (source[0], "answered")

            out["before NAT"] = ask()
            net.nft("nat", '''table ip nat { chain out {
                type nat hook postrouting priority srcnat;
                oifname "eth1" meta l4proto { tcp, udp } masquerade to :20000-20099
                oifname "eth1" masquerade
            }
            }''')
            inside_ = net.capture("nat", interface="eth0", filter="udp")
            outside = net.capture("nat", interface="eth1", filter="udp")
            with inside_, outside:
                out["after NAT"] = ask()
            echo.close()
            out["inside"] = [(s.src, s.dst, s.packet["UDP"].sport) for s in inside_.segments]
            out["outside"] = [(s.src, s.dst, s.packet["UDP"].sport) for s in outside.segments]
            with net.on("laptop"), TCPServer("echo", host="192.168.1.10") as web:
                def connect():
                    with net.on("server"):
                        try:
                            with socket.create_connection(("10.0.1.2", 8080), timeout=5) as s:
                                s.sendall(b"hi")
                                return s.recv(10).decode()
                        except OSError as exc:
                            return type(exc).__name__
                out["no forward"] = connect()
                net.nft("nat", f'''table ip nat {{ chain in {{
                    type nat hook prerouting priority dstnat;
                    iifname "eth1" tcp dport 8080 dnat to 192.168.1.10:{web.port}
                    }}
                    }}''')
                out["forwarded"] = connect()
        print(json.dumps(out))
    """)
    assert result["before NAT"] == [None, ["192.168.1.10", "ENETUNREACH"]]
    assert result["after NAT"] == ["hello", ["10.0.1.2", "answered"]]
    (laptop, server, port), = [row for row in result["inside"] if row[0] == "laptop"]
    (nat, _, public_port), = [row for row in result["outside"] if row[1] == "server"]
    assert (laptop, server, nat) == ("laptop", "server", "nat")  # the source rewritten...
    assert 20000 <= public_port <= 20099 and public_port != port   # ...and its port
    assert result["no forward"] == "ConnectionRefusedError"
    assert result["forwarded"] == "hi"


def test_a_firewall_drop_is_a_timeout_a_reject_an_immediate_error_and_a_missing_route_too(
        nft):
    result = in_lab(NETWORK, """
        out = {}
        with chain() as net:
            with net.on("server"), TCPServer("echo", host="10.0.2.4") as dropped, \\
                    TCPServer("echo", host="10.0.2.4") as rejected:
                net.nft("server", f'''table inet firewall {{ chain in {{
                    type filter hook input priority filter;
                    tcp dport {dropped.port} drop
                    tcp dport {rejected.port} reject with tcp reset
                }}
                }}''')
                for name, server in (("drop", dropped), ("reject", rejected)):
                    with net.on("client"):
                        try:
                            socket.create_connection(server.address, timeout=1.0).close()
                            out[name] = "connected"
                        except OSError as exc:
                            out[name] = type(exc).__name__
                net.run("r1", "ip route del 10.0.2.0/24")
                with net.on("client"):
                    try:
                        socket.create_connection(server.address, timeout=5).close()
                    except OSError as exc:
                        out["no route"] = errno.errorcode.get(exc.errno, str(exc))
                out["route get"] = net.run("r1", "ip route get 10.0.2.4", check=False)
        print(json.dumps(out))
    """)
    assert result["drop"] == "TimeoutError"          # nothing ever comes back
    assert result["reject"] == "ConnectionRefusedError"
    assert result["no route"] == "ENETUNREACH"       # r1's ICMP "net unreachable"
    assert "unreachable" in result["route get"]


def test_with_dynamic_arp_the_first_packet_waits_for_a_request_and_a_reply():
    result = in_lab(NETWORK, """
        out = {}
        for arp in ("static", "dynamic"):
            with LabNetwork.chain("client", "server", arp=arp) as net:
                before = net.neighbours("client")
                with net.on("server"), UDPServer("echo", host="10.0.0.2") as echo:
                    with net.capture("client", name=None) as wire, net.on("client"):
                        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                            sock.settimeout(5)
                            sock.sendto(b"hi", echo.address)
                            sock.recv(10)
                out[arp] = {"before": before, "after": net.neighbours("client"),
                            "rows": [(s.proto, s.src, s.dst, s.summary) for s in wire.segments],
                            "kept": net.run("server", "sysctl -n "
                                            "net.ipv4.neigh.eth0.base_reachable_time_ms")}
        print(json.dumps(out))
    """)
    static, dynamic = result["static"], result["dynamic"]
    assert [row[0] for row in static["rows"]] == ["UDP", "UDP"]
    assert static["before"] == static["after"] == {"10.0.0.2": "02:00:0a:00:00:02"}
    assert dynamic["before"] == {} and dynamic["after"] == {"10.0.0.2": "02:00:0a:00:00:02"}
    # an answer stays valid for an hour: no re-checking ARP in a lesson's later captures
    assert dynamic["kept"] == "3600000" and static["kept"] == "30000", result
    assert dynamic["rows"][:3] == [
        ["ARP", "client", "server", "ARP who has 10.0.0.2? tell 10.0.0.1 (broadcast)"],
        ["ARP", "server", "client", "ARP 10.0.0.2 is at 02:00:0a:00:00:02"],
        ["UDP", "client", "server", "b'hi'"]]


def test_a_server_on_a_router_binds_any_of_its_addresses_and_only_there():
    result = in_lab(NETWORK, """
        with chain() as net:
            out = {}
            for where, address in (("r1", "10.0.1.2"), ("r1", "10.0.0.2"),
                                   ("r2", "10.0.0.2")):
                try:
                    with net.on(where), UDPServer("echo", host=address) as server:
                        with net.on("client"), socket.socket(socket.AF_INET,
                                                             socket.SOCK_DGRAM) as s:
                            s.settimeout(5)
                            s.sendto(b"hi", server.address)
                            out[f"{where} {address}"] = s.recv(10).decode()
                except ValueError as exc:
                    out[f"{where} {address}"] = str(exc)
        print(json.dumps(out))
    """)
    assert result["r1 10.0.1.2"] == result["r1 10.0.0.2"] == "hi"
    assert "not a loopback address" in result["r2 10.0.0.2"]   # r1's address, not r2's


def test_a_network_is_ready_when_start_returns_and_says_which_interface_never_came_up():
    result = in_lab(NETWORK, """
        from labkit.net.netns import _ip, link_events, wait_until_up
        arrived = []
        for _ in range(3):   # the first datagram, sent the moment the network is built
            with LabNetwork.chain("a", "r", "b") as net:
                with net.on("b"):
                    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    receiver.bind(("10.0.1.3", 9000))
                    receiver.settimeout(5)
                with net.on("a"), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.sendto(b"first", ("10.0.1.3", 9000))
                try:
                    arrived.append(receiver.recv(10).decode())
                except TimeoutError:
                    arrived.append(None)
                receiver.close()
        events = link_events()
        _ip("link add half type veth peer name other", "link set half up")  # other: down
        late = wait_until_up({events: {"half"}}, timeout=0.2)
        print(json.dumps({"arrived": arrived, "late": late}))
    """)
    assert result["arrived"] == ["first"] * 3
    assert result["late"] == {"half": "lower layer down"}
