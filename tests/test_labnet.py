"""LabNetwork: lab hosts joined by the user-space link, each test in a fresh namespace.

Every test body runs in a child process inside its own user + network namespace
(``python -m labkit.net.namespace``), as the lab kernel does, so it works as root and as a
plain user and never touches the machine's network; where the machine refuses namespaces
the tests skip and say why.
"""

import itertools
import json
import os
import select
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

    def fds():
        return sorted(os.listdir("/proc/self/fd"))

    def interfaces():
        return sorted(name for _, name in socket.if_nameindex())

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
    assert result["during"][0] == result["before"][1] + 1  # the forwarder's keeper
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


REPLAY = """
    def replay(net, impairment):
        \"\"\"The client's frames as the link decided them, and as a fresh model decides
        them from the same arrival times (when the kernel received each): (fate, due).\"\"\"
        from labkit.net.impairment import LinkModel
        model = LinkModel(impairment, stream=0)
        events = [e for e in net.link.trace if e.direction == "client→server"]
        link = [(e.fate, e.due) for e in events]
        fates = [model.admit(e.t_in, e.length - 14) for e in events]
        again = [(f.kind, f.due if f.kind == "delivered" else None) for f in fates]
        early = [e.t_out - e.due for e in events if e.t_out and e.t_out < e.due - 0.001]
        return {"link": link, "model": again, "early": early}
"""


def same_decisions(result: dict) -> None:
    """The link did what its model says, to the µs; and sent nothing before it was due."""
    link, model = result["link"], result["model"]
    assert [fate for fate, _ in link] == [fate for fate, _ in model]
    for (_, due), (_, expected) in zip(link, model, strict=True):
        assert (due is None) == (expected is None)
        assert due is None or abs(due - expected) < 5e-5, (due, expected)
    # the real departures: a busy machine may send a frame late, never early
    assert result["early"] == [], result["early"]


def test_a_rate_limit_spaces_frames_and_its_full_queue_drops():
    result = in_lab(UDP_BURST, REPLAY, """
        bottleneck = Impairment(rate=2e6, queue="10 packets")
        with LabNetwork(up=bottleneck, down=Impairment()) as net:
            got = udp_burst(net, 50, size=1000)
            stats = net.link.stats["client→server"]
        print(json.dumps({"got": got, "stats": stats, **replay(net, bottleneck)}))
    """)
    stats = result["stats"]
    assert stats["delivered"] + stats["queue_dropped"] == stats["frames"] == 50
    assert stats["delivered"] >= 10  # the queue takes the first 10 whenever they come
    assert len(result["got"]) == stats["delivered"]
    same_decisions(result)
    # frames that waited in the queue leave one per 1028 IP bytes at 2 Mbit/s
    dues = [due for fate, due in result["link"] if fate == "delivered"]
    gaps = sorted(b - a for a, b in itertools.pairwise(dues))
    assert gaps[0] == pytest.approx(1028 * 8 / 2e6, abs=1e-5), gaps


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
    result = in_lab(UDP_BURST, REPLAY, """
        # one 1500-byte opportunity every 2 ms: 6 Mbit/s
        cellular = Impairment(trace=[2], queue="100 packets")
        with LabNetwork(up=cellular, down=Impairment()) as net:
            got = udp_burst(net, 30, size=1472)          # 1500-byte IP packets
        print(json.dumps({"got": len(got), **replay(net, cellular)}))
    """)
    assert result["got"] == 30
    same_decisions(result)
    dues = [due for _, due in result["link"]]
    gaps = sorted(round(b - a, 6) for a, b in itertools.pairwise(dues))
    assert gaps[0] >= 0.002 - 1e-5, gaps  # one frame per opportunity, never two


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


def test_a_server_counts_a_connection_its_accept_has_not_taken_yet():
    # connect() returns at the SYN-ACK; the client's ACK reaches the server one delay later.
    # Replay compares what the server saw, so it must wait for that ACK (CI saw 0 of 1).
    result = in_lab("""
        from labkit import TCPServer
        with LabNetwork(Impairment(delay=0.05)) as net:
            with net.on("server"):
                server = TCPServer("echo", host="10.0.0.2", port=7000).__enter__()
            mark = server.conversation_mark()
            with net.on("client"), socket.create_connection(("10.0.0.2", 7000), timeout=5):
                pass  # closed at once, before the server can have accepted it
            entry = server.conversation(mark, settle=5.0)
            server.__exit__(None, None, None)
        print(json.dumps(entry["connections"]))
    """)
    assert result == [[0, 0]], f"expected one connection with no bytes, the server saw {result}"


def test_a_capture_on_the_link_sees_both_directions_and_ends_promptly():
    result = in_lab("""
        from labkit import Capture
        import scapy.layers.inet  # Scapy's first import is not the capture's to time
        with LabNetwork(Impairment(delay=0.010)) as net:
            server = echo_server(net)
            with Capture(7000, iface=net.interface("client")) as wire:
                began = time.monotonic()  # the capture is ready: from here on it is ours
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
    # complete: every packet read and TCP settled before the capture's bound (2 s) ran out
    assert result["complete"] and result["lost"] == 0
    assert result["took"] < 30  # a wide bound on the clock: it ended, it did not hang
    assert result["empty"] == 0


def test_the_link_says_how_late_its_frames_left():
    result = in_lab(UDP_BURST, """
        with LabNetwork(Impairment(delay=0.020)) as net:
            got = udp_burst(net, 20, gap=0.002)
            lateness = {name: [l.frames, l.late, l.worst, l.tolerance, str(l)]
                        for name, l in net.lateness(tolerance=0.5).items()}
            strict = net.lateness(tolerance=0.0)["client→server"]
            busy = net.too_busy(tolerance=0.5)
        print(json.dumps({"got": len(got), "lateness": lateness, "busy": busy,
                          "strict": [strict.late, strict.frames]}))
    """)
    assert result["got"] == 20
    frames, late, worst, tolerance, text = result["lateness"]["client→server"]
    assert frames == 20 and tolerance == 0.5 and 0 < worst < 0.5
    # half a second late on a 20 ms link would be a broken link, not a busy machine
    assert late == 0 and result["busy"] is None, result
    assert text.startswith("20 frames, none more than 500 ms late")
    assert result["lateness"]["server→client"][0] == 0  # nothing came back
    # every frame leaves a little after it was due: at zero tolerance each one is late
    assert result["strict"] == [20, 20]


def test_lateness_counts_frames_beyond_the_tolerance_and_says_so():
    from labkit.net.link import Tally, too_busy
    tally = Tally()
    for seconds in (0.0002, 0.0009, 0.0011, 0.048, -0.00001):
        tally.add(seconds)
    one = tally.lateness(0.001)
    assert (one.frames, one.late, one.worst) == (5, 2, 0.048)
    assert str(one) == "5 frames, 2 more than 1 ms late (worst 48.0 ms)"
    assert tally.lateness(0.0001).late == 4 and tally.lateness(0.05).late == 0
    quiet = {"client→server": tally.lateness(0.05), "server→client": Tally().lateness(0.05)}
    assert too_busy(quiet) is None
    assert too_busy(quiet, missed=1) == (
        "this machine was too busy for this measurement: 1 frame was lost before the link "
        "could read it, so the numbers below are the machine's, not the link's — run it "
        "again when it is quieter")
    loud = {"client→server": tally.lateness(0.001), "server→client": one}
    assert too_busy(loud) == (
        "this machine was too busy for this measurement: 4 frames left up to 48 ms late, "
        "so the numbers below are the machine's, not the link's — run it again when it is "
        "quieter")


def test_lateness_refuses_a_tolerance_that_is_not_seconds():
    from labkit import Impairment
    from labkit.net.link import Link
    link = Link({"a→b": ("a", "b")}, {"a→b": Impairment()})
    for bad in (-1, "1ms", None):
        with pytest.raises(ValueError, match="tolerance must be seconds"):
            link.lateness(tolerance=bad)


def lab_process(code: str) -> subprocess.Popen:
    """Start ``code`` in a fresh lab namespace; it talks to us over stdin/stdout."""
    return subprocess.Popen([sys.executable, "-m", "labkit.net.namespace", "--",
                             sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def ends_within(pid: int, seconds: float) -> bool:
    """Does process ``pid`` end within ``seconds``? (waits on a pidfd: no polling)"""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # gone already
    try:
        return bool(select.select([pidfd], [], [], seconds)[0])
    finally:
        os.close(pidfd)


def test_the_forwarder_dies_with_its_parent_even_killed():
    lab = lab_process("""
        net = LabNetwork(Impairment(delay=0.01)).start()
        print(json.dumps({"forwarder": net.link._process.pid}), flush=True)
        input()                                     # until the test kills us
    """)
    try:
        line = lab.stdout.readline()
        if "skip" in line:
            pytest.skip(f"no private network namespace here: {line}")
        forwarder = json.loads(line)["forwarder"]
        assert not ends_within(forwarder, 0), "the forwarder ended before its parent"
    finally:
        lab.kill()  # SIGKILL: no clean-up of its own runs
        lab.wait()
    assert ends_within(forwarder, 10), f"the forwarder (pid {forwarder}) outlived its parent"


def test_the_link_outlives_the_thread_that_started_it():
    result = in_lab(UDP_BURST, """
        networks = []
        starter = threading.Thread(target=lambda: networks.append(LabNetwork().start()))
        starter.start()
        starter.join()                              # the thread that started it has ended
        net = networks[0]
        got = udp_burst(net, 20)
        net.stop()
        print(json.dumps({"got": len(got), "code": net.link._process.returncode}))
    """)
    assert result == {"got": 20, "code": 0}


def test_a_trace_keeps_each_frames_headers_and_says_what_it_did_not_keep():
    result = in_lab(UDP_BURST, """
        with LabNetwork(up=Impairment(delay=0.002), down=Impairment(), trace_limit=5) as net:
            got = udp_burst(net, 8, size=1000)
        trace = net.link.trace                      # kept when the network stops
        events = [[e.number, e.fate, e.length, len(e.frame), e.cut, e.due is not None,
                   e.t_in <= e.due <= e.t_out] for e in trace]
        print(json.dumps({"got": len(got), "events": events, "repr": repr(trace),
                          "truncated": net.link.trace_truncated, "last": trace[-1].number,
                          "slice": [e.number for e in trace[1:3]]}))
    """)
    assert result["got"] == 8
    # 1000 bytes of UDP payload: a 1042-byte frame, of which the trace keeps 128
    assert result["events"] == [[n, "delivered", 1042, 128, 914, True, True]
                                for n in range(3, 8)]
    assert result["truncated"] == 3 and result["last"] == 7 and result["slice"] == [4, 5]
    assert result["repr"] == ("<Trace of 5 frames, 128 bytes of each kept; 3 older frames "
                              "not kept>")


def test_one_link_carries_every_impaired_cable_and_a_network_leaves_nothing_behind():
    result = in_lab("""
        from labkit import Cable
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
    assert result["during"][0] == result["before"][1] + 1  # one forwarder (its keeper)
    assert len(result["during"][1]) == len(result["before"][2]) + 4  # 2 cables × 2 ends
    assert set(result["ways"]) == {"client→r1", "r1→client", "r2→server", "server→r2"}
    assert all(frames > 0 for frames in result["ways"].values())
    assert result["rtt"] >= 0.010 * 2 + 0.015   # both cables' delays, on the way there and back
    assert result["after"] == result["before"]


def test_a_forwarder_that_died_is_named_not_waited_for():
    result = in_lab("""
        import signal
        net = LabNetwork().start()
        os.kill(net.link._process.pid, signal.SIGKILL)   # ours: it ends, as a crash would
        try:
            net.link.stats
            error = ""
        except RuntimeError as exc:
            error = str(exc)
        net.stop()                                       # still stops cleanly
        print(json.dumps(error))
    """)
    assert "forwarder has ended (exit status -9)" in result
    assert "start a new one" in result
