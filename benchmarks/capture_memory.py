"""How much memory does a capture hold?  (issue 18, item 6: bounded memory)

    $ sudo .venv/bin/python benchmarks/capture_memory.py              # ~30 s
    $ sudo .venv/bin/python benchmarks/capture_memory.py --seconds 2 --open 5

Two measurements, each in a fresh Python process (so one does not inherit the other's
heap), of this process's resident memory (VmRSS, sampled every 20 ms):

* **flow**: a TCP flow paced at 1 Gbit/s by the kernel (``SO_MAX_PACING_RATE``) for 5 s
  over loopback into a ``TCPServer`` sink, inside one ``Capture``.  Printed: RSS before,
  the peak during the block, after it (the capture object still alive, as a notebook
  keeps ``wire``), after one view (``wire.connections()``), and once ``wire`` is deleted.
* **open**: ``--open`` captures entered at once (nested), each of one short echo
  exchange; RSS with all of them open, i.e. what their rings cost.

Loopback only; the flow ends after ``--seconds``.  Needs root or the lab kernel (raw
sockets).  Numbers depend on the machine: compare before/after on the same one.
"""

from __future__ import annotations

import argparse
import gc
import json
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SO_MAX_PACING_RATE = 47  # Linux; not in every Python's `socket`
RATE = 125_000_000       # bytes/s: 1 Gbit/s


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Peak:
    """The highest RSS seen while the block runs (sampled by a thread)."""

    def __init__(self):
        self.peak, self._stop = rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def _sink(conn, addr):
    while conn.recv(1 << 20):
        pass


def flow(seconds: float) -> dict:
    from labkit import Capture, TCPServer

    chunk = b"x" * (1 << 20)
    with TCPServer(_sink) as warm, Capture(warm):  # load Scapy and friends first
        socket.create_connection(warm.address).close()
    gc.collect()
    before = rss_mb()
    sent = 0
    with TCPServer(_sink) as server, Peak() as peak:
        with Capture(server) as wire:
            with socket.create_connection(server.address) as s:
                s.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, RATE)
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    s.sendall(chunk)
                    sent += len(chunk)
    gc.collect()
    after = rss_mb()
    wire.connections()  # one view: the segments are made (and kept by the capture)
    gc.collect()
    viewed = rss_mb()
    packets, notice = len(wire), getattr(wire, "notice", None)
    del wire
    gc.collect()
    return {"sent MB": sent / 1e6, "packets": packets, "before": before, "peak": peak.peak,
            "after": after, "after a view": viewed, "deleted": rss_mb(), "notice": notice}


def open_many(count: int) -> dict:
    from labkit import Capture, TCPServer

    with TCPServer("echo") as server:
        with Capture(server):
            socket.create_connection(server.address).close()
        gc.collect()
        before = rss_mb()
        with ExitStack() as stack:
            for _ in range(count):
                stack.enter_context(Capture(server))
            with socket.create_connection(server.address) as s:
                s.sendall(b"hello")
                s.recv(16)
            during = rss_mb()
    return {"open": count, "before": before, "with all open": during,
            "per capture": (during - before) / count}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the flow")
    parser.add_argument("--open", type=int, default=20, help="captures open at once")
    parser.add_argument("--child", choices=["flow", "open"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # the captures' banners
            result = flow(args.seconds) if args.child == "flow" else open_many(args.open)
        print(json.dumps(result))
        return 0
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
    except PermissionError:
        print("skipped: this benchmark needs raw sockets (root, or the lab kernel)")
        return 0
    results = {}
    for child in ("flow", "open"):
        done = subprocess.run([sys.executable, __file__, "--child", child, "--seconds",
                               str(args.seconds), "--open", str(args.open)],
                              capture_output=True, text=True, timeout=300, check=False)
        if done.returncode:
            print(done.stderr)
            return 1
        results[child] = json.loads(done.stdout.splitlines()[-1])
    f, o = results["flow"], results["open"]
    print(f"1 Gbit/s for {args.seconds:g} s ({f['sent MB']:.0f} MB sent, {f['packets']} "
          f"packets kept): RSS before {f['before']:.0f} MB, peak {f['peak']:.0f} MB, after the "
          f"block {f['after']:.0f} MB, after a view {f['after a view']:.0f} MB, "
          f"capture deleted {f['deleted']:.0f} MB")
    if f["notice"]:
        print(f"  the capture says: {f['notice']}")
    print(f"{o['open']} captures open at once: RSS {o['before']:.0f} MB -> "
          f"{o['with all open']:.0f} MB ({o['per capture']:.1f} MB each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
