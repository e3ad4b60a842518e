"""Does labkit's Capture see what tcpdump sees, at scale?  (issue 12, "complete or loudly
incomplete")

    $ sudo .venv/bin/python benchmarks/capture_scale.py            # every load, ~1-2 min
    $ sudo .venv/bin/python benchmarks/capture_scale.py --quick    # the small loads only

For each load - short TCP connections, UDP datagrams echoed by a UDPServer, a bulk TCP
transfer, and a one-way UDP blast as fast as this machine sends - a labkit Capture and
``tcpdump -i lo -Q in -B 65536`` (filter: the same port) watch the same traffic at the
same time.  The table says how many packets each saw, whether they are the same packets
(bytes) in the same order, how far apart the timestamps are (tcpdump's are microseconds,
labkit's nanoseconds truncated; each tap is stamped as the packet reaches it, so TCP on lo
differs by a few µs and UDP not at all), labkit's own ``lost`` count and how long the
capture's exit took.  tcpdump's output goes through a pipe to a small child process that
stops at a sentinel datagram sent after the capture, so neither side is cut short.

"order" compares the packets both saw; where it differs, two CPUs handed the two sockets
the same pair of packets in opposite orders (the µs gap says how close they were).  With
``-B 65536`` tcpdump itself drops about half of a 100 MB transfer (its ring holds both
copies of each lo packet); ``--tcpdump-buffer 524288`` lets it keep up, and then the
two captures are equal there too.

Loopback only; every load is bounded in count and in seconds.  Needs root (raw sockets).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labkit import Capture, TCPServer, UDPServer

LOAD_SECONDS = 120.0  # no load runs longer than this
# The child that copies tcpdump's pcap stream to a file and ends at the sentinel.
_COPY_UNTIL = """
import sys
mark, out = sys.argv[1].encode(), open(sys.argv[2], "wb")
tail = b""
while chunk := sys.stdin.buffer.read1(1 << 20):
    out.write(chunk)
    if mark in tail + chunk:
        break
    tail = chunk[-len(mark):]
out.close()
"""


class Tcpdump:
    """``tcpdump -i lo -Q in -B 65536 -w -`` on one port, streamed to a file until a sentinel."""

    def __init__(self, port: int, workdir: Path, buffer: int = 65536):
        self.port, self.path = port, workdir / f"tcpdump-{port}.pcap"
        self.mark = b"labkit-bench-sentinel-%d" % time.monotonic_ns()
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-Q", "in", "-B", str(buffer), "-U", "-n", "-w", "-",
             f"port {port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.copy = subprocess.Popen([sys.executable, "-c", _COPY_UNTIL, self.mark, self.path],
                                     stdin=self.proc.stdout)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()  # the child holds it now
        if b"listening on" not in self.proc.stderr.readline():
            raise RuntimeError("tcpdump did not start")

    def finish(self) -> tuple[list[tuple[bytes, int]], str]:
        """Send the sentinel, wait for it; ``([(frame, µs stamp)], tcpdump's drop line)``."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(self.mark, ("127.0.0.1", self.port))
        try:
            self.copy.wait(LOAD_SECONDS)
        finally:
            self.proc.terminate()
            _out, err = self.proc.communicate(timeout=30)
            self.copy.kill()
            self.copy.wait()
        dropped = next((line for line in err.decode().splitlines() if "dropped by kernel" in line),
                       "?")
        return _read_pcap(self.path.read_bytes(), self.mark), dropped


def _read_pcap(data: bytes, mark: bytes) -> list[tuple[bytes, int]]:
    """Frames and µs timestamps of a pcap stream, up to the sentinel (no Scapy: fast)."""
    frames, at = [], 24
    while at + 16 <= len(data):
        sec, usec, caplen, _wirelen = struct.unpack_from("<IIII", data, at)
        frame = data[at + 16:at + 16 + caplen]
        if frame.endswith(mark):
            break
        frames.append((frame, sec * 1_000_000 + usec))
        at += 16 + caplen
    return frames


# -- the loads: each returns how many packets it meant to cause (roughly) -------------------
def short_connections(server, n: int, deadline: float) -> None:
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        with socket.create_connection(server.address, timeout=5) as s:
            s.sendall(b"hi")
            s.recv(16)


def udp_datagrams(server, n: int, deadline: float, window: int = 64) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        sent = 0
        while sent < n and time.monotonic() < deadline:
            burst = min(window, n - sent)
            for i in range(burst):
                s.sendto(b"datagram %d" % (sent + i), server.address)
            sent += burst
            try:
                for _ in range(burst):
                    s.recvfrom(64)
            except TimeoutError:
                pass  # the server's queue overflowed: the packets on the wire still count


_BLAST = """
import socket, sys, time
port, count, deadline = int(sys.argv[1]), int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    for i in range(count):
        if i % 1000 == 0 and time.monotonic() > deadline:
            break
        s.sendto(b"blast %d" % i, ("127.0.0.1", port))
"""


def udp_blast(server, n: int, deadline: float) -> None:
    """One way, as fast as two other processes send (no GIL shared with the capture);
    the server reads and answers nothing."""
    seconds = str(max(1.0, deadline - time.monotonic()))
    senders = [subprocess.Popen([sys.executable, "-c", _BLAST, str(server.port), str(n // 2),
                                 seconds]) for _ in range(2)]
    for sender in senders:
        sender.wait(LOAD_SECONDS + 30)


def bulk(server, size: int, deadline: float) -> None:
    chunk = b"x" * (1 << 20)
    with socket.create_connection(server.address, timeout=30) as s:
        for _ in range(size // len(chunk)):
            if time.monotonic() > deadline:
                break
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        while s.recv(1 << 16):
            pass


def _sink(conn, addr):
    while conn.recv(1 << 20):
        pass


def _silent(data, addr):
    return None  # a UDP handler that answers nothing


LOADS = [  # (name, server factory, load, size, quick?)
    ("1k connections", lambda: TCPServer("echo"), short_connections, 1_000, True),
    ("10k connections", lambda: TCPServer("echo"), short_connections, 10_000, False),
    ("10k datagrams", lambda: UDPServer("echo"), udp_datagrams, 10_000, True),
    ("100k datagrams", lambda: UDPServer("echo"), udp_datagrams, 100_000, False),
    ("10 MB bulk", lambda: TCPServer(_sink), bulk, 10 << 20, True),
    ("100 MB bulk", lambda: TCPServer(_sink), bulk, 100 << 20, False),
    ("400k-datagram blast", lambda: UDPServer(_silent), udp_blast, 400_000, False),
]


def run(name, make_server, load, size, workdir: Path, buffer: int) -> dict:
    with make_server() as server:
        dump = Tcpdump(server.port, workdir, buffer)
        try:
            with Capture(server) as wire:
                start = time.monotonic()
                load(server, size, start + LOAD_SECONDS)
                ended = time.monotonic()
            exit_time = time.monotonic() - ended
        finally:
            theirs, dropped = dump.finish()
    ours = [(f.data, f.ns // 1000) for f in wire._frames.frames]
    seconds = ended - start
    complaints = _tshark_complaints(wire.save(workdir / "labkit.pcapng"))
    return {"load": name, "labkit": len(ours), "tcpdump": len(theirs),
            "equal": Counter(f for f, _t in ours) == Counter(f for f, _t in theirs),
            **_compare_order(ours, theirs), "lost": wire.lost, "exit": exit_time,
            "rate": len(theirs) / seconds if seconds else 0.0, "tcpdump drops": dropped,
            "max frame": max((len(f) for f, _t in ours), default=0), "tshark": complaints}


def _tshark_complaints(path: Path) -> str:
    """How many saved frames tshark calls malformed, too short or cut ("-": no tshark)."""
    if shutil.which("tshark") is None:
        return "-"
    bad = ('_ws.malformed or _ws.expert.message contains "exceeds" '
           "or frame.len != frame.cap_len")
    done = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", bad, "-T", "fields",
                           "-e", "frame.number"], capture_output=True, text=True,
                          timeout=LOAD_SECONDS, check=True)
    return str(len(done.stdout.split()))


def _compare_order(ours, theirs) -> dict:
    """Same order?  Where not: how many packets stand elsewhere, and how far apart in time
    (tcpdump's stamps) the packets that changed places were.  Two CPUs can hand the two
    sockets the same pair of packets in opposite orders; a gap of a few µs says that."""
    when: dict[bytes, list[int]] = {}
    for frame, stamp in theirs:
        when.setdefault(frame, []).append(stamp)
    both = set(when).intersection(f for f, _t in ours)  # when one side missed some: the rest
    mine = [f for f, _t in ours if f in both]
    moved = [(a, b) for a, b in zip(mine, [f for f, _t in theirs if f in both], strict=False)
             if a != b]
    gap = max((abs(when[a][0] - when[b][0]) for a, b in moved if a in when), default=0)
    # stamps of the same packet in each capture (matched by its bytes, not its position)
    stamps = max((abs(stamp - when[frame][0]) for frame, stamp in ours if frame in when),
                 default=0)
    return {"order": not moved, "moved": len(moved), "gap": gap,
            "stamps": stamps}


def _row_text(r: dict) -> str:
    order = "same" if r["order"] else f"{r['moved']} moved, ≤{r['gap']} µs apart"
    return (f"{r['load']:>20}  labkit {r['labkit']:>7}  tcpdump {r['tcpdump']:>7}  "
            f"equal {'yes' if r['equal'] else 'NO':>3}  order {order:>24}  "
            f"stamps ±{r['stamps']:>3} µs  lost {r['lost']:>5}  exit {r['exit']:5.2f} s  "
            f"{r['rate']:>8.0f} pkt/s  max frame {r['max frame']}  "
            f"tshark complaints {r['tshark']}  (tcpdump: {r['tcpdump drops']})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the small loads")
    parser.add_argument("--only", help="only the loads whose name contains this, e.g. 'bulk'")
    parser.add_argument("--tcpdump-buffer", type=int, default=65536,
                        help="tcpdump's -B, in KiB (default 65536, as the issue measured)")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("tcpdump") is None:
        print("skipped: this benchmark needs root (raw sockets) and tcpdump "
              "(`make system-tools`)")
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make, load, size, quick in LOADS:
            if (args.quick and not quick) or (args.only and args.only not in name):
                continue
            rows.append(run(name, make, load, size, Path(tmp), args.tcpdump_buffer))
            print(_row_text(rows[-1]), flush=True)
    kept = [r["rate"] for r in rows if not r["lost"]]
    theirs = [r["rate"] for r in rows if r["tcpdump drops"].startswith("0 ")]
    if kept and theirs:
        print(f"\nhighest packet rate labkit kept up with: {max(kept):.0f} pkt/s; tcpdump: "
              f"{max(theirs):.0f} pkt/s (ratio {max(kept) / max(theirs):.2f}; the loads are "
              "as fast as this machine makes them, so 1.00 means labkit never fell behind)")
    tcpdump_whole = [r for r in rows if r["tcpdump drops"].startswith("0 ")]
    return 0 if all(not r["lost"] for r in rows) and all(r["equal"] for r in tcpdump_whole) else 1


if __name__ == "__main__":
    sys.exit(main())
