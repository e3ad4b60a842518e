"""Lab networks of routers: how long they take to build, what a plain cable carries against
one through labkit's link, and what a traceroute and path MTU discovery find.

    python benchmarks/topology.py [--runs 5] [--seconds 1]

Prints, for the chain client — r1 — r2 — server (a 1280-byte MTU between the routers):
- start + stop time of LabNetwork (two hosts as in notebook 09; the chain with plain
  cables; the chain with every cable through the link), median of ``--runs``;
- bulk TCP client → server, Mbit/s (median): every cable a plain veth pair, and every
  cable through the link (no impairment; the trace off, as a lesson that keeps none);
- the hop list of a Python traceroute (UDP, IP_TTL, IP_RECVERR) against the topology's
  path, and the path MTU the client learns (IP_MTU) against the smallest cable's.
Runs in a private network namespace of its own (it re-runs itself inside one).
"""

from __future__ import annotations

import argparse
import select
import socket
import statistics
import struct
import threading
import time

from labkit.net.hosts import LabNetwork
from labkit.net.impairment import Impairment
from labkit.net.namespace import rerun_in_private_network
from labkit.net.topology import Cable

IP_RECVERR, IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 11, 10, 2, 14
CHUNK = 256 * 1024


def chain(impairment: Impairment | None = None, **options) -> LabNetwork:
    return LabNetwork(Cable("client", "r1", impairment), Cable("r1", "r2", impairment, mtu=1280),
                      Cable("r2", "server", impairment), **options)


def build_time(make, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        with make():
            pass
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bulk(net: LabNetwork, seconds: float) -> float:
    """Mbit/s of one TCP connection client → server for ``seconds`` (at the receiver)."""
    with net.on("server"):
        listener = socket.create_server(("10.0.2.4", 5201))
    got = [0, 0.0]

    def receive():
        with listener, listener.accept()[0] as conn:
            buffer, start = bytearray(CHUNK), time.monotonic()
            while n := conn.recv_into(buffer):
                got[0] += n
            got[1] = time.monotonic() - start

    receiver = threading.Thread(target=receive)
    receiver.start()
    with net.on("client"):
        conn = socket.create_connection(("10.0.2.4", 5201), timeout=10)
    data, deadline = bytes(CHUNK), time.monotonic() + seconds
    with conn:
        while time.monotonic() < deadline:
            conn.sendall(data)
    receiver.join(timeout=60)
    return got[0] * 8 / got[1] / 1e6


def traceroute(net: LabNetwork, target: str, source: str = "client",
               timeout: float = 2.0) -> list[str | None]:
    """The hops from ``source`` to ``target``: each answer's sender, None for silence."""
    hops: list[str | None] = []
    with net.on(source), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        poller = select.poll()
        poller.register(probe, select.POLLERR)
        for ttl in range(1, 16):
            probe.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            probe.sendto(b"probe", (target, 33433 + ttl))
            if not poller.poll(timeout * 1000):
                hops.append(None)
                continue
            _, ancillary, _, _ = probe.recvmsg(512, 512, socket.MSG_ERRQUEUE)
            cdata = ancillary[0][2]
            hops.append(socket.inet_ntoa(cdata[20:24]))
            if struct.unpack("IBBBB", cdata[:8])[2] != 11:  # not Time Exceeded: arrived
                break
    return hops


def path_mtu(net: LabNetwork, target: str) -> int:
    with net.on("client"), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        sock.connect((target, 9))
        for _ in range(5):  # each "fragmentation needed" lowers it; bounded
            try:
                sock.send(bytes(sock.getsockopt(socket.IPPROTO_IP, IP_MTU) - 28))
            except OSError:
                continue
            poller = select.poll()
            poller.register(sock, select.POLLERR)
            if not poller.poll(2000):
                break
            sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)
        return sock.getsockopt(socket.IPPROTO_IP, IP_MTU)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    rerun_in_private_network()
    print("start + stop, median of", args.runs)
    for name, make in (("two hosts through the link (09)", lambda: LabNetwork(Impairment())),
                       ("chain of 4, plain cables", chain),
                       ("chain of 4, every cable through the link", lambda: chain(Impairment()))):
        print(f"  {name:42} {build_time(make, args.runs) * 1000:7.1f} ms")
    print(f"bulk TCP client → server over 3 cables, {args.seconds:g} s, median of {args.runs}")
    for name, make in (("plain veth cables (kernel)", chain),
                       ("every cable through the link, trace off",
                        lambda: chain(Impairment(), trace_limit=0)),
                       ("every cable through the link, trace on", lambda: chain(Impairment()))):
        rates = []
        for _ in range(args.runs):
            with make() as net:
                rates.append(bulk(net, args.seconds))
        print(f"  {name:42} {statistics.median(rates):7.0f} Mbit/s "
              f"(runs: {', '.join(f'{r:.0f}' for r in rates)})")
    with chain() as net:
        expected = net.topology.hops("client", "server")
        hops = traceroute(net, "10.0.2.4")
        print(f"traceroute client → server: {hops}; the topology's path: {expected} "
              f"({'same' if hops == expected else 'DIFFERENT'})")
        smallest = min(i.mtu for ifaces in net.topology.interfaces.values() for i in ifaces)
        print(f"path MTU the client learned: {path_mtu(net, '10.0.2.4')}; smallest cable's "
              f"MTU: {smallest}")


if __name__ == "__main__":
    main()
