"""LabNetwork: lab hosts joined by the user-space link, each test in a fresh namespace.

Every test body runs in a child process inside its own user + network namespace
(``python -m labkit.net.namespace``), as the lab kernel does, so it works as root and as a
plain user and never touches the machine's network; where the machine refuses namespaces
the tests skip and say why.
"""

import itertools
import json
import os
import subprocess
import sys
import textwrap

import pytest

PRELUDE = textwrap.dedent("""
    import json, os, socket, threading, time
    from labkit import LabNetwork, Impairment
    if os.environ.get("LABKIT_NETWORK") != "private":
        print(json.dumps({"skip": os.environ.get("LABKIT_NETWORK")}))
        raise SystemExit(0)

    def echo_server(net, port=7000):
        with net.on("server"):
            listener = socket.create_server(("10.0.0.2", port))
        def serve():
            with listener:
                conn, _ = listener.accept()
                with conn:
                    while data := conn.recv(65536):
                        conn.sendall(data)
        thread = threading.Thread(target=serve)
        thread.start()
        return thread
""")


def in_lab(*parts: str) -> dict:
    """Run the code ``parts`` (printing one JSON line last) in a fresh lab namespace."""
    code = PRELUDE + "".join(textwrap.dedent(part) for part in parts)
    done = subprocess.run([sys.executable, "-m", "labkit.net.namespace", "--",
                           sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LABKIT_CAPTURE": "live"})  # we may, in there
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if isinstance(result, dict) and "skip" in result:
        pytest.skip(f"no private network namespace here: {result['skip']}")
    return result


def test_hosts_talk_tcp_through_the_link_with_its_delay():
    result = in_lab("""
        with LabNetwork(Impairment(delay=0.025)) as net:
            server = echo_server(net)
            with net.on("client"):
                conn = socket.create_connection(("10.0.0.2", 7000), timeout=10)
            with conn:
                rtts = []
                for _ in range(5):
                    start = time.monotonic()
                    conn.sendall(b"ping")
                    assert conn.recv(100) == b"ping"
                    rtts.append(time.monotonic() - start)
                local = conn.getsockname()[0]
            server.join()
            stats = net.link.stats
        print(json.dumps({"rtts": rtts, "local": local, "stats": stats}))
    """)
    assert result["local"] == "10.0.0.1"
    assert min(result["rtts"]) >= 0.050  # 25 ms each way
    assert min(result["rtts"]) < 0.150
    up = result["stats"]["client→server"]
    assert up["frames"] >= 8 and up["dropped"] == 0  # handshake, 5 pings, ACKs, FIN


def test_on_is_per_thread_and_restored_after_an_exception():
    result = in_lab("""
        def namespace():
            return os.stat("/proc/thread-self/ns/net").st_ino
        home = namespace()
        with LabNetwork() as net:
            seen = {}
            with net.on("client"):
                seen["client"] = namespace()
                other = threading.Thread(target=lambda: seen.update(other=namespace()))
                other.start(); other.join()          # started inside: on the client too
                with net.on("server"):
                    seen["nested"] = namespace()
                seen["after_nested"] = namespace()
                elsewhere = []
                bystander = threading.Thread(target=lambda: None)
            try:
                with net.on("server"):
                    raise KeyError("boom")
            except KeyError:
                pass
            seen["after_error"] = namespace()
        print(json.dumps({"home": home, **seen}))
    """)
    assert result["client"] != result["home"]
    assert result["other"] == result["client"]
    assert result["nested"] not in (result["home"], result["client"])
    assert result["after_nested"] == result["client"]
    assert result["after_error"] == result["home"]


def test_stopping_leaves_no_thread_fd_or_interface():
    result = in_lab("""
        def fds():
            return sorted(os.listdir("/proc/self/fd"))
        def interfaces():
            return sorted(name for _, name in socket.if_nameindex())
        before = (fds(), threading.active_count(), interfaces())
        net = LabNetwork(Impairment(delay=0.01, loss=0.1, seed=3)).start()
        during = (threading.active_count(), interfaces())
        server = echo_server(net)
        with net.on("client"):
            with socket.create_connection(("10.0.0.2", 7000), timeout=10) as conn:
                conn.sendall(b"x" * 100_000)
                got = 0
                while got < 100_000:
                    got += len(conn.recv(65536))
        server.join()
        net.stop()
        after = (fds(), threading.active_count(), interfaces())
        print(json.dumps({"before": before, "during": during, "after": after}))
    """)
    assert result["during"][0] == result["before"][1] + 4  # receive + send, each way
    assert len(result["during"][1]) == len(result["before"][2]) + 2  # two link-side ends
    assert result["after"] == result["before"]


def test_offloads_are_off_on_every_end():
    result = in_lab("""
        from labkit.net.hosts import offloads
        with LabNetwork() as net:
            states = {host: offloads(net.interface(host)) for host in ("client", "server")}
            for host in ("client", "server"):
                with net.on(host):
                    states[host + ":eth0"] = offloads("eth0")
        print(json.dumps(states))
    """)
    assert len(result) == 4
    for state in result.values():
        assert state == {"tx": False, "tso": False, "gso": False, "gro": False}


def test_same_seed_drops_the_same_frames_twice():
    result = in_lab("""
        def dropped_numbers(seed):
            with LabNetwork(Impairment(loss=0.2, seed=seed)) as net:
                with net.on("server"):
                    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    receiver.bind(("10.0.0.2", 9000))
                with net.on("client"):
                    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                with sender, receiver:
                    for number in range(300):
                        sender.sendto(b"%d" % number, ("10.0.0.2", 9000))
                    sender.sendto(b"end", ("10.0.0.2", 9000))   # may be lost too
                    receiver.settimeout(2)
                    try:
                        while receiver.recv(100) != b"end":
                            pass
                    except TimeoutError:
                        pass
                trace = net.link.trace
            return [event.number for event in trace
                    if event.direction == "client→server" and event.fate == "dropped"]
        print(json.dumps([dropped_numbers(7), dropped_numbers(7), dropped_numbers(8)]))
    """)
    first, again, other_seed = result
    assert 30 < len(first) < 100  # about 20 % of 301
    assert first == again
    assert first != other_seed


def test_without_root_in_a_namespace_it_says_what_to_do(monkeypatch):
    from labkit import LabNetwork
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(RuntimeError, match="labkit doctor"):
        LabNetwork().start()


def test_bad_arguments_are_refused_before_anything_starts():
    from labkit import Impairment, LabNetwork
    with pytest.raises(ValueError, match="not both"):
        LabNetwork(Impairment(), up=Impairment())
    with pytest.raises(ValueError, match="Impairment"):
        LabNetwork(0.1)
    with pytest.raises(ValueError, match="host must be one of"):
        LabNetwork().interface("router")


UDP_BURST = """
    def udp_burst(net, count, size=100, gap=0.0):
        with net.on("server"):
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            receiver.bind(("10.0.0.2", 9000))
        with net.on("client"):
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        got = []
        def receive():             # reads while the sender sends: no buffer overflows
            receiver.settimeout(1.0)
            try:
                while True:
                    got.append(int(receiver.recv(65536)[:6]))
            except TimeoutError:   # nothing more for 1 s: the link is empty
                pass
        reader = threading.Thread(target=receive)
        reader.start()
        with sender:
            for number in range(count):
                sender.sendto(b"%06d" % number + bytes(size - 6), ("10.0.0.2", 9000))
                if gap:
                    time.sleep(gap)   # the lesson's pacing, not a readiness wait
        reader.join()
        receiver.close()
        return got
"""


def test_duplicates_and_reordering_arrive_as_counted():
    result = in_lab(UDP_BURST, """
        with LabNetwork(up=Impairment(duplicate=0.1, reorder=0.1, delay=0.002, seed=4),
                        down=Impairment()) as net:
            got = udp_burst(net, 400, gap=0.0005)
            stats = net.link.stats["client→server"]
            fates = [e.fate for e in net.link.trace if e.direction == "client→server"]
        print(json.dumps({"got": got, "stats": stats, "fates": fates}))
    """)
    got, stats = result["got"], result["stats"]
    assert sorted(set(got)) == list(range(400))  # nothing lost
    assert len(got) - 400 == stats["duplicated"] == result["fates"].count("duplicated") > 10
    inversions = sum(1 for a, b in itertools.pairwise(got) if b < a)
    assert stats["reordered"] > 10 and inversions >= stats["reordered"] // 2
    assert stats["frames"] == 400 and stats["delivered"] == 400


def test_a_rate_limit_spaces_frames_and_its_full_queue_drops():
    result = in_lab(UDP_BURST, """
        with LabNetwork(up=Impairment(rate=2e6, queue="10 packets"), down=Impairment()) as net:
            got = udp_burst(net, 50, size=1000)
            stats = net.link.stats["client→server"]
            sent = [e.t_out for e in net.link.trace if e.fate == "delivered"]
        print(json.dumps({"got": got, "stats": stats, "sent": sent}))
    """)
    stats = result["stats"]
    assert stats["delivered"] + stats["queue_dropped"] == stats["frames"] == 50
    assert 10 <= stats["delivered"] <= 15
    assert len(result["got"]) == stats["delivered"]
    gaps = sorted(b - a for a, b in itertools.pairwise(result["sent"]))
    assert gaps[len(gaps) // 2] == pytest.approx(1028 * 8 / 2e6, rel=0.1)  # IP bytes / rate


def test_set_changes_the_impairment_while_running_and_checks_it():
    result = in_lab(UDP_BURST, """
        with LabNetwork(Impairment(seed=1)) as net:
            before = len(udp_burst(net, 200))
            try:
                net.link.set(loss=2)
                error = ""
            except ValueError as exc:
                error = str(exc)
            net.link.set(loss=0.5)
            after = len(udp_burst(net, 200))
        print(json.dumps({"before": before, "after": after, "error": error}))
    """)
    assert result["before"] == 200
    assert "loss must be a probability" in result["error"]
    assert 60 < result["after"] < 140


def test_a_mahimahi_trace_paces_full_size_frames_by_its_opportunities():
    result = in_lab(UDP_BURST, """
        # one 1500-byte opportunity every 2 ms: 6 Mbit/s
        with LabNetwork(up=Impairment(trace=[2], queue="100 packets"), down=Impairment()) as net:
            got = udp_burst(net, 30, size=1472)          # 1500-byte IP packets
            sent = [e.t_out for e in net.link.trace if e.fate == "delivered"]
        print(json.dumps({"got": len(got), "sent": sent}))
    """)
    assert result["got"] == 30
    gaps = sorted(b - a for a, b in itertools.pairwise(result["sent"]))
    assert gaps[len(gaps) // 2] == pytest.approx(0.002, rel=0.1)


def test_a_network_runs_once_and_hosts_need_it_running():
    result = in_lab("""
        net = LabNetwork()
        errors = []
        try:
            with net.on("client"):
                pass
        except RuntimeError as exc:
            errors.append(str(exc))
        with net:
            pass
        try:
            net.start()
        except RuntimeError as exc:
            errors.append(str(exc))
        print(json.dumps(errors))
    """)
    assert "start it first" in result[0]
    assert "runs once" in result[1]


def test_lab_servers_bind_a_lab_host_address_only_on_that_host():
    result = in_lab("""
        from labkit import TCPServer
        errors = []
        with LabNetwork() as net:
            for attempt in ("outside", "client"):
                try:
                    if attempt == "outside":
                        TCPServer(host="10.0.0.2")
                    else:
                        with net.on("client"):
                            TCPServer(host="10.0.0.2")
                except ValueError as exc:
                    errors.append(str(exc))
            with net.on("server"), TCPServer("echo", host="10.0.0.2") as server:
                with net.on("client"), socket.create_connection(server.address, timeout=10) as c:
                    c.sendall(b"over the link")
                    reply = c.recv(100).decode()
                address = server.address
        print(json.dumps({"errors": errors, "reply": reply, "address": list(address)}))
    """)
    assert len(result["errors"]) == 2 and all("net.on" in e for e in result["errors"])
    assert result["reply"] == "over the link" and result["address"][0] == "10.0.0.2"


def test_a_capture_on_the_link_sees_both_directions_and_ends_promptly():
    result = in_lab("""
        from labkit import Capture
        with LabNetwork(Impairment(delay=0.010)) as net:
            server = echo_server(net)
            began = time.monotonic()
            with Capture(7000, iface=net.interface("client")) as wire:
                with net.on("client"), socket.create_connection(("10.0.0.2", 7000)) as c:
                    c.sendall(b"ping")
                    assert c.recv(100) == b"ping"
            took = time.monotonic() - began
            server.join()
            with net.on("server"), Capture(7000, iface="eth0") as there:
                pass
        rows = [(s.src, s.dst, s.flags, s.length) for s in wire.segments]
        print(json.dumps({"rows": rows, "complete": wire.complete, "lost": wire.lost,
                          "took": took, "empty": len(there)}))
    """)
    flags = [row[2] for row in result["rows"]]
    assert flags[:3] == ["SYN", "SYN-ACK", "ACK"], result["rows"]
    assert {(r[0], r[1]) for r in result["rows"]} == {("client", "server"), ("server", "client")}
    assert sum(r[3] for r in result["rows"]) == 8  # ping, and its echo
    assert result["complete"] and result["lost"] == 0
    assert result["took"] < 1.5  # the settle bound (2 s) was not what ended it
    assert result["empty"] == 0


def test_one_link_carries_every_impaired_cable_and_a_network_leaves_nothing_behind():
    result = in_lab("""
        from labkit import Cable
        def fds():
            return sorted(os.listdir("/proc/self/fd"))
        def interfaces():
            return sorted(name for _, name in socket.if_nameindex())
        before = (fds(), threading.active_count(), interfaces())
        net = LabNetwork(Cable("client", "r1", Impairment(delay=0.010)), Cable("r1", "r2"),
                         Cable("r2", "server", up=Impairment(delay=0.015), down=Impairment()))
        net.start()
        during = (threading.active_count(), interfaces())
        with net.on("server"):
            listener = socket.create_server(("10.0.2.4", 7000))
        with net.on("client"), socket.create_connection(("10.0.2.4", 7000), timeout=10) as c:
            with listener, listener.accept()[0] as conn:
                start = time.monotonic()
                c.sendall(b"ping")
                conn.sendall(conn.recv(10))
                assert c.recv(10) == b"ping"
                rtt = time.monotonic() - start
        ways = {way: stats["frames"] for way, stats in net.link.stats.items()}
        net.stop()
        after = (fds(), threading.active_count(), interfaces())
        print(json.dumps({"before": before, "during": during, "after": after, "rtt": rtt,
                          "ways": ways}))
    """)
    assert result["during"][0] == result["before"][1] + 8  # receive + send, 4 directions
    assert len(result["during"][1]) == len(result["before"][2]) + 4  # 2 cables × 2 ends
    assert set(result["ways"]) == {"client→r1", "r1→client", "r2→server", "server→r2"}
    assert all(frames > 0 for frames in result["ways"].values())
    assert result["rtt"] >= 0.010 * 2 + 0.015   # both cables' delays, on the way there and back
    assert result["after"] == result["before"]
