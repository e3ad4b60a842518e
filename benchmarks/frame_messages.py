"""Round trips with/without TCP_NODELAY and throughput vs write size (notebook 02, long run).

    $ .venv/bin/python benchmarks/frame_messages.py             # about 15 s
    $ .venv/bin/python benchmarks/frame_messages.py --quick     # about 3 s
    $ .venv/bin/python benchmarks/frame_messages.py --plot /tmp/frame   # writes two PNGs

The notebook measures 10 round trips per variant and 0.1 s per write size; this runs
more of each and repeats the throughput sweep, reporting medians.  Everything is on
127.0.0.1 and bounded in count and time.  Numbers depend on the machine and on what
else runs on it: compare ratios, not digits.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labkit import ByteCounter, FramedEcho, TCPServer, rtt_figure, throughput_figure

SIZES = [16, 64, 256, 1024, 4096, 16384, 65536, 262144]


def round_trips(nodelay: bool, writes: int, count: int) -> list[float]:
    times = []
    with TCPServer(handler=FramedEcho()) as server:
        with socket.create_connection(server.address) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, nodelay)
            for i in range(count):
                body = b"ping %d" % i
                frame = struct.pack("!I", len(body)) + body
                start = time.perf_counter()
                if writes == 2:
                    sock.send(frame[:4])
                    sock.send(frame[4:])
                else:
                    sock.sendall(frame)
                sock.recv(len(frame), socket.MSG_WAITALL)
                times.append(time.perf_counter() - start)
    return times


def throughput(size: int, seconds: float) -> float:
    block = b"x" * size
    with TCPServer(handler=ByteCounter()) as server:
        with socket.create_connection(server.address) as sock:
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                for _ in range(16):
                    sock.sendall(block)
            sock.shutdown(socket.SHUT_WR)
            with sock.makefile("rb") as answer:
                received = int(answer.readline())
            return received / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer round trips, shorter runs")
    parser.add_argument("--plot", metavar="PREFIX",
                        help="write PREFIX-rtt.png and PREFIX-throughput.png")
    args = parser.parse_args(argv)
    count, seconds, repeats = (10, 0.1, 1) if args.quick else (50, 0.4, 3)

    rtts = {
        "2 writes\nNagle (default)": round_trips(False, 2, count),
        "2 writes\nTCP_NODELAY": round_trips(True, 2, count),
        "1 write\nNagle (default)": round_trips(False, 1, count),
    }
    print(f"round trips ({count} each): median / 90th percentile")
    for name, times in rtts.items():
        ms = sorted(t * 1000 for t in times)
        print(f"  {name.replace(chr(10), ', '):28} {statistics.median(ms):9.3f} ms "
              f"{ms[int(len(ms) * 0.9) - 1]:9.3f} ms")

    rates = []
    print(f"throughput ({seconds}s per size, median of {repeats})")
    for size in SIZES:
        rate = statistics.median(throughput(size, seconds) for _ in range(repeats))
        rates.append(rate)
        print(f"  {size:7} bytes per send(): {rate / 1e6:9.1f} MB/s")

    if args.plot:
        rtt_figure(rtts).savefig(f"{args.plot}-rtt.png", dpi=100)
        throughput_figure(SIZES, rates).savefig(f"{args.plot}-throughput.png", dpi=100)
        print(f"wrote {args.plot}-rtt.png and {args.plot}-throughput.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
