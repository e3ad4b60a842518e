"""Throughput against loss rate and round-trip time on a lab link, against Mathis et al.

Notebook 09 runs one second per point (five at once): enough for the trend, not for the
constant.  This runs the long version: each point sends for ``--seconds`` (default 8) and
counts what the receiver acknowledged from the first loss on (the formula describes the
sawtooth, not slow start).

    python benchmarks/loss_sweep.py                       # Reno, the textbook algorithm
    python benchmarks/loss_sweep.py --cc reno cubic bbr --seconds 5

Needs root in a network namespace: as a plain user,
``python -m labkit.net.namespace -- python benchmarks/loss_sweep.py``.
"""

from __future__ import annotations

import argparse
import socket
import struct
import time

from labkit import CwndSampler, Impairment, LabNetwork, TCPServer, mathis_throughput

MSS = 1448
LOSSES = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08)
RTTS = (0.010, 0.020, 0.040, 0.080, 0.160)


def sink(conn, addr):
    try:
        while conn.recv(1 << 18):
            pass
    except ConnectionResetError:
        pass


def steady_rate(server, cc: str, seconds: float) -> tuple[float, int]:
    """(bytes/s acknowledged from the first retransmission to the end, retransmissions)."""
    with socket.create_connection(server.address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
        with CwndSampler(sock, interval=0.005, limit=seconds + 5) as run:
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                sock.sendall(b"x" * 16384)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    end = run.samples[-1]
    first = next((s for s in run.samples if s.total_retrans), run.samples[0])
    return (end.bytes_acked - first.bytes_acked) / (end.t - first.t), end.total_retrans


def sweep(cc: str, seconds: float, seed: int) -> None:
    with LabNetwork(Impairment(delay=0.020, seed=seed)) as net:
        with net.on("server"), TCPServer(handler=sink, host=net.addresses["server"]) as server:
            with net.on("client"):
                for loss in LOSSES:
                    net.link.set(direction="client→server", loss=loss)
                    report(cc, loss, 0.040, *steady_rate(server, cc, seconds))
                net.link.set(direction="client→server", loss=0.01)
                for rtt in RTTS:
                    net.link.set(delay=rtt / 2)
                    report(cc, 0.01, rtt, *steady_rate(server, cc, seconds))


def report(cc: str, loss: float, rtt: float, rate: float, retrans: int) -> None:
    model = mathis_throughput(mss=MSS, rtt=rtt, loss=loss)
    print(f"{cc:6} loss {loss:6.2%}  RTT {rtt * 1000:4.0f} ms  {rate * 8 / 1e6:7.2f} Mbit/s  "
          f"Mathis {model * 8 / 1e6:7.2f}  ratio {rate / model:5.2f}  "
          f"({retrans} retransmissions)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cc", nargs="+", default=["reno"], help="congestion controls")
    parser.add_argument("--seconds", type=float, default=8.0, help="sending time per point")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not 0.5 <= args.seconds <= 120:
        parser.error("--seconds must be 0.5 to 120")
    for cc in args.cc:
        sweep(cc, args.seconds, args.seed)


if __name__ == "__main__":
    main()
