"""Issue 23's figures: handshakes of requests (one-off calls against a Session), and how
long the kernel takes to give up on a silent peer against what it was set to.

    python benchmarks/libraries_on_the_wire.py [--rounds 3]

handshakes   3 × requests.get() and 3 × Session.get(), over HTTP and HTTPS (verify= the lab
             CA): TCP handshakes (SYN) and TLS handshakes (ClientHello) in the capture
silence      lab hosts, 10 ms each way; the cable cut under connections set up with
             SO_KEEPALIVE (idle, interval, count), TCP_USER_TIMEOUT (ms) or neither
             (tcp_retries2 on the client host); each connection's time from the cut to
             ETIMEDOUT, per round, against its setting
It re-runs itself inside a private network namespace of its own (live capture, lab hosts).
"""

from __future__ import annotations

import argparse
import selectors
import socket
import time

import requests

from labkit import Capture, HTTPServer, HTTPSServer, LocalCA, TCPServer
from labkit.net.hosts import LabNetwork
from labkit.net.impairment import Impairment
from labkit.net.namespace import rerun_in_private_network

KEEPALIVE = [(1, 1, 2), (2, 1, 3), (1, 2, 2)]          # (idle s, interval s, count)
USER_TIMEOUT = [500, 1500, 3000]                       # ms
RETRIES2 = 3                                           # the plain connections' setting


def handshakes() -> None:
    print("handshakes for 3 requests          TCP  TLS")
    with LocalCA() as ca:
        for scheme, server, verify in [("http", HTTPServer(), True),
                                       ("https", HTTPSServer(ca), str(ca.cafile))]:
            with server:
                for how in ("requests.get()", "Session.get()"):
                    with Capture(server) as wire:
                        if how == "requests.get()":
                            for _ in range(3):
                                requests.get(server.url + "/hello", verify=verify, timeout=5)
                        else:
                            with requests.Session() as session:
                                for _ in range(3):
                                    session.get(server.url + "/hello", verify=verify, timeout=5)
                    tcp = sum(s.flags == "SYN" for s in wire.segments)
                    tls = sum(s.summary.startswith("ClientHello") for s in wire.segments)
                    print(f"  {scheme:6} {how:25} {tcp:3}  {tls:3}")


def _sink(conn, addr) -> None:
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass


def silence_round() -> dict[str, float | None]:
    """One cut under every setting at once: {setting: seconds until ETIMEDOUT}."""
    with LabNetwork(Impairment(delay=0.010)) as net:
        with net.on("server"), TCPServer(handler=_sink, host=net.addresses["server"]) as server:
            with net.on("client"):
                for name, value in (("tcp_retries2", RETRIES2), ("tcp_early_retrans", 0)):
                    with open(f"/proc/sys/net/ipv4/{name}", "w") as knob:
                        knob.write(str(value))
                socks: dict[str, tuple[socket.socket, bool]] = {}
                for idle, interval, count in KEEPALIVE:
                    sock = socket.create_connection(server.address)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
                    socks[f"keepalive {idle} s + {count} × {interval} s = "
                          f"{idle + count * interval} s"] = sock, False
                for ms in USER_TIMEOUT:
                    sock = socket.create_connection(server.address)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, ms)
                    socks[f"TCP_USER_TIMEOUT {ms / 1000:g} s"] = sock, True
                bound = 0.2 * (2 ** (RETRIES2 + 1) - 1)
                socks[f"tcp_retries2 = {RETRIES2} ({bound:.1f} s)"] = \
                    socket.create_connection(server.address), True
                net.link.set(loss=1.0)
                start = time.monotonic()
                for sock, sends in socks.values():
                    if sends:
                        sock.send(b"are you there?")
                ended: dict[str, float | None] = dict.fromkeys(socks)
                with selectors.DefaultSelector() as sel:
                    for name, (sock, _) in socks.items():
                        sel.register(sock, selectors.EVENT_READ, name)
                    while sel.get_map() and time.monotonic() - start < 15:
                        for key, _ in sel.select(timeout=1):
                            try:
                                key.fileobj.recv(1)  # type: ignore[union-attr]
                            except TimeoutError:
                                ended[key.data] = time.monotonic() - start
                            except OSError:
                                pass
                            sel.unregister(key.fileobj)
                for sock, _ in socks.values():
                    sock.close()
        if busy := getattr(net, "too_busy", lambda: None)():
            print("  (" + busy + ")")
    return ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rerun_in_private_network()
    handshakes()
    rounds = [silence_round() for _ in range(args.rounds)]
    print(f"\nthe cable cut: seconds until ETIMEDOUT ({args.rounds} rounds)")
    for name in rounds[0]:
        times = ", ".join("never" if r[name] is None else f"{r[name]:.2f}" for r in rounds)
        print(f"  {name:36} {times}")


if __name__ == "__main__":
    main()
