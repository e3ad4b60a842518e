"""How exactly the user-space link delays and drops: measured against what it was told.

    python benchmarks/link_accuracy.py [--pings 500] [--frames 100000]

delay  50 ms each way; UDP pings every 5 ms from client to server and back: RTT p50 and
       p99 error against 100 ms (goal: <= 1 ms), three rounds
loss   p in 0.1 %, 1 %, 10 %: the drop fraction over --frames UDP datagrams against the
       binomial 99 % interval; then the same seed twice (and another seed): the same
       dropped frame numbers?
It re-runs itself inside a private network namespace of its own.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import struct
import threading
import time

from labkit.net.hosts import LabNetwork
from labkit.net.impairment import Impairment
from labkit.net.namespace import rerun_in_private_network


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def rtts(delay: float, pings: int) -> tuple[list[float], list[float]]:
    """RTTs of ``pings`` UDP pings, one every 5 ms, echoed by the server; and each frame's
    time in the link (from its trace: read → sent on)."""
    with LabNetwork(Impairment(delay=delay)) as net:
        with net.on("server"):
            echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            echo.bind(("10.0.0.2", 7))
        with net.on("client"):
            ping = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            ping.connect(("10.0.0.2", 7))
        results: list[float] = []

        def serve():
            while (data := echo.recvfrom(100))[0] != b"end":
                echo.sendto(*data)

        def collect():
            ping.settimeout(2 * delay + 1)
            for _ in range(pings):
                sent = struct.unpack("d", ping.recv(100))[0]
                results.append(time.monotonic() - sent)

        threads = [threading.Thread(target=serve), threading.Thread(target=collect)]
        for thread in threads:
            thread.start()
        for _ in range(pings):
            ping.send(struct.pack("d", time.monotonic()))
            time.sleep(0.005)  # the ping interval (traffic shape, not a readiness wait)
        threads[1].join()
        ping.send(b"end")
        threads[0].join()
        ping.close()
        echo.close()
        held = [event.t_out - event.t_in for event in net.link.trace if event.t_out]
    return results, held


def drain(receiver: socket.socket) -> None:
    """Read datagrams until the marker: the receiver's buffer never overflows."""
    receiver.settimeout(10)
    try:
        while receiver.recv(100) != b"end":
            pass
    except TimeoutError:  # the marker was lost before the link: frames count says so
        print("  (the end marker never came: frames were lost before the link)")


def dropped(p: float, seed: int, frames: int) -> tuple[list[int], int]:
    """Frame numbers the link dropped out of ``frames`` datagrams, and frames it saw."""
    with LabNetwork(up=Impairment(loss=p, seed=seed), down=Impairment(),
                    trace_limit=frames + 1) as net:
        with net.on("server"):
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            receiver.bind(("10.0.0.2", 9))
        with net.on("client"):
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        reader = threading.Thread(target=drain, args=(receiver,))
        reader.start()
        with sender:
            for number in range(frames):
                sender.sendto(b"%d" % number, ("10.0.0.2", 9))
                if number % 50 == 49:
                    time.sleep(0.001)  # pacing: well within what the link can read
            # frames cross in order: once an undroppable marker is through, all are
            net.link.set(direction="client→server", loss=0)
            sender.sendto(b"end", ("10.0.0.2", 9))
            reader.join()
            receiver.close()
        seen = net.link.stats["client→server"]["frames"] - 1
        missed = net.link.stats["client→server"]["missed"]
        if missed:
            print(f"  ({missed} frames were lost before the link could read them)")
        numbers = [event.number for event in net.link.trace if event.fate == "dropped"
                   and event.direction == "client→server"]
    return numbers, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pings", type=int, default=500)
    parser.add_argument("--frames", type=int, default=100_000)
    args = parser.parse_args()
    rerun_in_private_network()
    print(f"user {os.getuid()} in a private namespace")
    base, _ = rtts(0.0, args.pings // 4)
    print(f"no delay, {len(base)} pings: RTT p50 {percentile(base, 50) * 1000:.3f} ms, "
          f"p99 {percentile(base, 99) * 1000:.3f} ms (this machine's own latency)")
    for round_ in range(1, 4):  # a load spike from elsewhere on the machine hits one round
        measured, held = rtts(0.050, args.pings)
        p50, p99 = percentile(measured, 50), percentile(measured, 99)
        print(f"delay 50 ms each way, round {round_}, {len(measured)} pings: RTT p50 "
              f"{p50 * 1000:.3f} ms (error {(p50 - 0.1) * 1000:+.3f} ms), p99 "
              f"{p99 * 1000:.3f} ms (error {(p99 - 0.1) * 1000:+.3f} ms), "
              f"min {min(measured) * 1000:.3f} ms; load average {os.getloadavg()[0]:.1f}")
        print(f"    one way in the link ({len(held)} frames): error p50 "
              f"{(percentile(held, 50) - 0.05) * 1000:+.3f} ms, "
              f"p99 {(percentile(held, 99) - 0.05) * 1000:+.3f} ms")
    for p in (0.001, 0.01, 0.1):
        numbers, frames = dropped(p, 1, args.frames)
        half = 2.576 * math.sqrt(frames * p * (1 - p))  # 99 %: normal approximation
        inside = abs(len(numbers) - frames * p) <= half
        print(f"loss p={p:<6g} {len(numbers)} of {frames} frames dropped "
              f"= {len(numbers) / frames:.5f}; 99 % interval "
              f"{(frames * p - half) / frames:.5f}-{(frames * p + half) / frames:.5f}: "
              f"{'inside' if inside else 'OUTSIDE'}")
    first, _ = dropped(0.01, 42, args.frames)
    again, _ = dropped(0.01, 42, args.frames)
    other, _ = dropped(0.01, 43, args.frames)
    print(f"seed 42 twice: same {len(first)} dropped frame numbers: {first == again}; "
          f"seed 43 differs: {first != other}; first ten: {first[:10]}")


if __name__ == "__main__":
    main()
