"""Notebook 10's figures: its nbval time, a traceroute's hops against each network's plan,
the path MTU found against the links' MTUs, and every interface's capture against tcpdump.

    python benchmarks/lesson10.py [--runs 3] [--skip-nbval] [--skip-tcpdump]

Prints:
- nbval time of notebooks/10-*.ipynb (``pytest -p no:xdist``, live capture), each of
  ``--runs`` runs and the median, with the load average before each;
- for several networks (the lesson's chain, exercise 1's with a silent router, a chain of
  six routers, the NAT network from inside): the hops a Python traceroute (UDP, IP_TTL,
  IP_RECVERR) finds against ``Topology.hops``, None where a router stays silent;
- for several chains of MTUs: the path MTU the client's kernel learns (IP_MTU, from
  "fragmentation needed") against the smallest link's MTU, whether the largest DF payload
  crosses and one byte more is refused, and the fragments a 3,000-byte datagram sent
  without DF reaches the server in (the server kernel's ReasmReqds) against the count
  worked out link by link;
- tests/test_topology_capture.py: labkit's capture on every interface of the lesson's
  chain and of its NAT network, frame for frame against tcpdump's (needs root and tcpdump).
The network parts run in a private network namespace of their own (re-run inside one).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))   # topology.py's traceroute

DATAGRAM = 3000


def nbval_times(runs: int, lesson: str = "10") -> None:
    """nbval's time for notebooks/<lesson>-*.ipynb, ``runs`` times (lesson11.py's too)."""
    notebook = next((ROOT / "notebooks").glob(f"{lesson}-*.ipynb"))
    times = []
    for _ in range(runs):
        load = os.getloadavg()[0]
        start = time.perf_counter()
        done = subprocess.run([str(ROOT / ".venv/bin/pytest"), "-p", "no:xdist", "-q",
                               str(notebook)], cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
        print(f"  nbval {notebook.name}: {times[-1]:5.1f} s (load average before: {load:.1f}; "
              f"{last})")
    print(f"  median of {runs}: {statistics.median(times):.1f} s (goal: 20 s)")


def traceroutes() -> None:
    from topology import traceroute

    from labkit.checks.lesson10 import QUIET_RULES
    from labkit.net.hosts import LabNetwork
    from labkit.net.topology import Cable

    lesson = lambda: LabNetwork(Cable("client", "r1"), Cable("r1", "r2", mtu=1280),  # noqa: E731
                                Cable("r2", "server"))
    nat = lambda: LabNetwork(  # noqa: E731
        Cable("laptop", "nat", subnet="192.168.1.0/24", addresses={"laptop": "192.168.1.10"}),
        Cable("nat", "server", subnet="203.0.113.0/24", addresses={"server": "203.0.113.80"}))
    cases = [("the lesson's chain", lesson, "client", None),
             ("exercise 1 (r2 silent)",
              lambda: LabNetwork.chain("client", "r1", "r2", "r3", "server"), "client", "r2"),
             ("a chain of six routers",
              lambda: LabNetwork.chain("client", *(f"r{i}" for i in range(1, 7)), "server"),
              "client", None),
             ("the NAT network, from the laptop", nat, "laptop", None)]
    for name, make, source, silent in cases:
        with make() as net:
            if silent:
                net.nft(silent, QUIET_RULES)
            plan = net.topology.hops(source, "server")
            path = net.topology.path(source, "server")
            expected = [None if host == silent else hop
                        for host, hop in zip(path[1:], plan, strict=True)]
            found = traceroute(net, net.addresses["server"], source, timeout=0.5)
        verdict = "same" if found == expected else "DIFFERENT"
        print(f"  {name:34} found {found}\n  {'':34} plan  {expected}: {verdict}")


def fragments_expected(mtus: list[int], payload: int) -> int:
    """Fragments of one datagram (``payload`` + 8 bytes of UDP) cut at each link in turn."""
    pieces = [payload + 8]
    for mtu in mtus:
        most = (mtu - 20) // 8 * 8
        pieces = [size for piece in pieces
                  for size in ([piece] if piece + 20 <= mtu else
                               [most] * (piece // most) + ([piece % most] if piece % most
                                                           else []))]
    return len(pieces)


def path_mtus() -> None:
    from labkit.checks.lesson10 import measure_path
    from labkit.net.hosts import LabNetwork
    from labkit.net.topology import Cable

    chains = [[1500, 1280, 1500], [1500, 1400, 9000, 1300], [1500, 1492, 1400, 576],
              [9000, 9000, 1500], [1500, 1500, 1500]]
    for mtus in chains:
        hosts = ["client", *(f"r{i}" for i in range(1, len(mtus))), "server"]
        with LabNetwork(*(Cable(a, b, mtu=mtu) for (a, b), mtu in
                          zip(itertools.pairwise(hosts), mtus, strict=True))) as net:
            found = measure_path(net, links=len(mtus))
        expected = fragments_expected(mtus, DATAGRAM)
        same = "same" if found["mtu"] == min(mtus) else "DIFFERENT"
        print(f"  links {mtus}: path MTU found {found['mtu']}, smallest link {min(mtus)} "
              f"({same}); {found['largest']} bytes with DF crossed: {found['crossed']}, one "
              f"more: {found['one more']}; {DATAGRAM} bytes without DF arrived whole: "
              f"{found['whole']} in {found['fragments']} fragments (worked out: {expected})")


def tcpdump() -> None:
    done = subprocess.run([str(ROOT / ".venv/bin/pytest"), "-p", "no:xdist", "-q", "-rs",
                           "tests/test_topology_capture.py"], cwd=ROOT, capture_output=True,
                          text=True)
    print("  " + "\n  ".join(done.stdout.strip().splitlines()[-3:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-nbval", action="store_true")
    parser.add_argument("--skip-tcpdump", action="store_true")
    args = parser.parse_args()
    if os.environ.get("LABKIT_NETWORK") != "private":  # the parent: nbval and tcpdump
        if not args.skip_nbval:
            print("nbval time of notebook 10")
            nbval_times(args.runs)
        if not args.skip_tcpdump:
            print("every interface's capture against tcpdump's (tests/test_topology_capture.py)")
            tcpdump()
        done = subprocess.run([sys.executable, "-m", "labkit.net.namespace", "--",
                               sys.executable, __file__, *sys.argv[1:]], cwd=ROOT)
        sys.exit(done.returncode)
    print("traceroute hops against the topology")
    traceroutes()
    print("path MTU found against configured")
    path_mtus()


if __name__ == "__main__":
    main()
