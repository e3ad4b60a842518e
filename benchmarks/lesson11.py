"""Notebook 11's figures: its nbval time, dig against the lab's resolver and authoritative
server, Happy Eyeballs' timings against the delay it was given, and every capture against
tcpdump and tshark.

    python benchmarks/lesson11.py [--runs 3] [--skip-nbval] [--skip-tcpdump]

Prints:
- nbval time of notebooks/11-*.ipynb (``pytest -p no:xdist``, live capture), each of
  ``--runs`` runs and the median, with the load average before each;
- dig (a resolver nobody here wrote), run on the lesson's client host, against the
  recursive resolver (DNSResolver) and against netlab.test.'s authoritative DNSServer:
  UDP, TCP (+tcp), without EDNS (+noedns), a 100-record answer each way, and a name that
  does not exist: status, flags, answers, transport, the EDNS record of the reply;
- Happy Eyeballs (asyncio's ``happy_eyeballs_delay``) against a silently broken IPv6 path,
  five races for each delay: when IPv4's SYN left after IPv6's, from the client's
  capture, against the delay; ``create_connection`` one address at a time with a timeout;
  and exercise 2's races (the IPv6 path loses each connection's first SYN);
- tests/test_names_capture.py (labkit's capture on every interface equals tcpdump's and
  reads as tshark; needs root and tcpdump) and tests/test_tshark_diff.py on notebook 11's
  recordings.
The network parts run in a private network namespace of their own (re-run inside one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))   # dns_dig's reading of dig's output
sys.path.insert(0, str(ROOT / "tests"))        # test_names_capture's network

RACES = 5
# r1 drops IPv6 packets for www (``what``: only those that match it too)
RULE = """table ip6 broken {{ chain forward {{
    type filter hook forward priority filter; ip6 daddr {www6} {what} drop; }}; }}"""
DELAYS = (0.05, 0.1, 0.25, 0.5)
DIG_CASES = [  # (case, server, name, dig options)
    ("UDP", "resolver", "www.netlab.test", []),
    ("TCP", "resolver", "www.netlab.test", ["+tcp"]),
    ("noedns", "resolver", "www.netlab.test", ["+noedns"]),
    ("large UDP (100 A)", "resolver", "many.netlab.test", []),
    ("large noedns", "resolver", "many.netlab.test", ["+noedns"]),
    ("large TCP", "resolver", "many.netlab.test", ["+tcp"]),
    ("NXDOMAIN", "resolver", "nowhere.netlab.test", []),
    ("UDP", "ns", "www.netlab.test", ["+norec"]),
    ("TCP", "ns", "www.netlab.test", ["+norec", "+tcp"]),
    ("noedns", "ns", "www.netlab.test", ["+norec", "+noedns"]),
    ("large UDP (100 A)", "ns", "many.netlab.test", ["+norec"]),
    ("large noedns", "ns", "many.netlab.test", ["+norec", "+noedns"]),
    ("NXDOMAIN", "ns", "nowhere.netlab.test", ["+norec"]),
    ("referral (root)", "root", "www.netlab.test", ["+norec"]),
]


def dig_table(net) -> None:
    from dns_dig import read

    print(f"  {'case':18} {'asked':8} {'dig options':16} {'status':8} {'flags':13} {'ans':>4} "
          f"{'via':4} {'EDNS in reply':14} notes")
    for case, server, name, options in DIG_CASES:
        out = net.run("client", ["dig", f"@{net.addresses[server]}", name, "A", "+time=3",
                                 "+tries=1", *options], check=False)
        r = read(out)
        print(f"  {case:18} {server:8} {' '.join(options) or '(default)':16} {r['status']:8} "
              f"{r['flags']:13} {r['answers']:>4} {r['via']:4} {r['edns']:14} {r['notes']}")


def quiet():
    """Captures say where they listen: not in this table."""
    return contextlib.redirect_stdout(io.StringIO())


def connect_racing(delay: float | None) -> str:
    async def race():
        _reader, writer = await asyncio.open_connection("www.netlab.test", 80,
                                                        happy_eyeballs_delay=delay)
        family = writer.get_extra_info("socket").family.name
        writer.close()
        await writer.wait_closed()
        return family
    return asyncio.run(race())


def happy_eyeballs(net) -> None:
    import socket

    from labkit.views.race import connection_attempts

    www6 = net.topology.addresses6["www"]
    net.nft("r1", RULE.format(www6=www6, what=""))
    print("  IPv6 black-holed; IPv4's SYN after IPv6's (from the client's capture), "
          f"{RACES} races each:")
    for delay in DELAYS:
        gaps, connected = [], []
        for _ in range(RACES):
            with quiet(), net.capture("client", filter="tcp port 80", name=None) as wire, \
                    net.on("client"):
                family = connect_racing(delay)
            ipv6, ipv4 = connection_attempts(wire.segments)[:2]
            assert family == "AF_INET", family
            gaps.append(ipv4.started - ipv6.started)
            connected.append(ipv4.connected - ipv6.started)
        print(f"    happy_eyeballs_delay {delay * 1000:4.0f} ms: IPv4 started after "
              f"{statistics.median(gaps) * 1000:6.1f} ms median (min {min(gaps) * 1000:.1f}, "
              f"max {max(gaps) * 1000:.1f}); connected after "
              f"{statistics.median(connected) * 1000:6.1f} ms median")
    for timeout in (0.5, 1.0):
        with quiet(), net.capture("client", filter="tcp port 80", name=None) as wire, \
                net.on("client"), socket.create_connection(("www.netlab.test", 80),
                                                           timeout=timeout):
            pass
        ipv6, ipv4 = connection_attempts(wire.segments)[:2]
        print(f"    create_connection(timeout={timeout}): IPv4 started after "
              f"{(ipv4.started - ipv6.started) * 1000:.1f} ms")
    net.run("r1", "nft flush ruleset")
    print("  exercise 2: the IPv6 path loses each connection's first SYN:")
    for delay in (0.1, 0.5, 2.0, None):
        net.nft("r1", RULE.format(www6=www6, what="tcp flags syn numgen inc mod 2 == 0"))
        started = time.perf_counter()
        with net.on("client"):
            family = connect_racing(delay)
        took = time.perf_counter() - started
        net.run("r1", "nft flush ruleset")
        print(f"    happy_eyeballs_delay {delay}: {family} after {took * 1000:.0f} ms")


def network_figures() -> None:
    from test_names_capture import names_network, serve_names

    with names_network() as net:
        serve_names(net)
        print("dig on the client, against the lab's servers:")
        dig_table(net)
        print("Happy Eyeballs:")
        happy_eyeballs(net)
        if busy := net.too_busy():
            print("  " + busy)


def tcpdump_and_tshark() -> None:
    for test in ("tests/test_names_capture.py",
                 "tests/test_tshark_diff.py -k 11-"):
        done = subprocess.run([str(ROOT / ".venv/bin/pytest"), "-p", "no:xdist", "-q",
                               *test.split()], cwd=ROOT, capture_output=True, text=True)
        last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
        print(f"  {test}: {last}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-nbval", action="store_true")
    parser.add_argument("--skip-tcpdump", action="store_true")
    parser.add_argument("--network-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.network_only:   # (this script again, inside a private network namespace)
        network_figures()
        return
    if not args.skip_nbval:
        from lesson10 import nbval_times

        print("nbval:")
        nbval_times(args.runs, "11")
    subprocess.run([sys.executable, "-m", "labkit.net.namespace", "--", sys.executable,
                    __file__, "--network-only"], cwd=ROOT, check=False)
    if not args.skip_tcpdump:
        print("captures against tcpdump and tshark:")
        tcpdump_and_tshark()


if __name__ == "__main__":
    main()
