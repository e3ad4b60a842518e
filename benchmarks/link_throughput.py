"""Bulk TCP throughput through LabNetwork's user-space link vs a plain veth pair.

    python benchmarks/link_throughput.py [--seconds 3] [--runs 3]

Through the link: plain, with its trace kept (the default), and with 1 ms delay each way
(every frame through the time-ordered queue). All at MTU 1500 with segmentation offloads
off (each frame one real segment), in one run, in a private network namespace of its own
(it re-runs itself inside one). A plain Python TCP sender and receiver (no iperf3 here).
Goal: >= 500 Mbit/s through the link.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

from labkit.net.hosts import LabNetwork, _ip, inside, new_namespace, offloads
from labkit.net.impairment import Impairment
from labkit.net.namespace import rerun_in_private_network

CHUNK = 256 * 1024


def bulk(client_ns, server_ns, seconds: float) -> float:
    """Mbit/s of one TCP connection sending for ``seconds``, measured at the receiver."""
    with server_ns():
        listener = socket.create_server(("10.0.0.2", 5201))
    received = [0, 0.0]

    def receive():
        with listener:
            conn, _ = listener.accept()
            buffer = bytearray(CHUNK)
            start = time.monotonic()
            with conn:
                while n := conn.recv_into(buffer):
                    received[0] += n
            received[1] = time.monotonic() - start

    receiver = threading.Thread(target=receive)
    receiver.start()
    with client_ns():
        conn = socket.create_connection(("10.0.0.2", 5201), timeout=10)
    data = bytes(CHUNK)
    deadline = time.monotonic() + seconds
    with conn:
        while time.monotonic() < deadline:
            conn.sendall(data)
    receiver.join(timeout=30)
    return received[0] * 8 / received[1] / 1e6


RECEIVER = """
import socket, sys, time
listener = socket.create_server(("10.0.0.2", 5201))
print("ready", flush=True)
conn, _ = listener.accept()
buffer, got, start = bytearray(262144), 0, time.monotonic()
while n := conn.recv_into(buffer):
    got += n
print(got * 8 / (time.monotonic() - start) / 1e6)
"""
SENDER = """
import socket, sys, time
conn = socket.create_connection(("10.0.0.2", 5201), timeout=10)
data, deadline = bytes(262144), time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    conn.sendall(data)
conn.close()
"""


def bulk_processes(client_ns, server_ns, seconds: float) -> float:
    """The same, with sender and receiver in processes of their own (as iperf3 would be):
    they do not share the forwarder's GIL. A process started on a host stays on it."""
    with server_ns():
        receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE,
                                    text=True)
    assert receiver.stdout is not None
    receiver.stdout.readline()  # "ready": it listens
    with client_ns():
        subprocess.run([sys.executable, "-c", SENDER, str(seconds)], check=True,
                       timeout=seconds + 30)
    out, _ = receiver.communicate(timeout=30)
    return float(out)


@contextlib.contextmanager
def plain_veth():
    """Two namespaces on one veth pair, addressed and set up like LabNetwork's hosts."""
    client, server = new_namespace(), new_namespace()
    try:
        _ip(f"link add eth0 mtu 1500 netns /proc/self/fd/{client} type veth peer name eth0 "
            f"mtu 1500 netns /proc/self/fd/{server}", pass_fds=(client, server))
        for fd, address in ((client, "10.0.0.1"), (server, "10.0.0.2")):
            with inside(fd):
                offloads("eth0", off=True)
                _ip("link set lo up", f"addr add {address}/24 dev eth0", "link set eth0 up")
        yield (lambda: inside(client)), (lambda: inside(server))
    finally:
        os.close(client)
        os.close(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rerun_in_private_network()
    print(f"bulk TCP, MTU 1500, offloads off, {args.seconds:g} s each, best of {args.runs}, "
          f"user {os.getuid()} in a private namespace")
    for label, measure in (("in this process (as in a notebook)", bulk),
                           ("sender, receiver in their own processes", bulk_processes)):
        print(f"{label}:")
        with plain_veth() as (client, server):
            direct = max(measure(client, server, args.seconds) for _ in range(args.runs))
        print(f"  plain veth pair        {direct:8.0f} Mbit/s")
        for trace_limit, delay in ((0, 0.0), (100_000, 0.0), (100_000, 0.001)):
            results = []
            for _ in range(args.runs):
                with LabNetwork(Impairment(delay=delay), trace_limit=trace_limit) as net:
                    results.append(measure(lambda: net.on("client"),
                                           lambda: net.on("server"), args.seconds))
                    stats = net.link.stats["client→server"]
            print(f"  LabNetwork link        {max(results):8.0f} Mbit/s  "
                  f"(trace_limit={trace_limit}, delay {delay * 1000:g} ms, runs "
                  f"{', '.join(f'{r:.0f}' for r in results)}; {stats['frames']} frames, "
                  f"{stats['queue_dropped']} dropped sending on, {stats['missed']} missed)")

if __name__ == "__main__":
    main()
