"""How long the views of a capture take at 30, 300 and 10,000 packets (issue 12, item 4).

    $ .venv/bin/python benchmarks/views_scale.py            # about 30 s
    $ .venv/bin/python benchmarks/views_scale.py --sizes 30 300

The packets are made with Scapy (no network): short HTTP connections one after another,
10 packets each (handshake, a request, a response, teardown), from a new client port
each.  For each size it times, best of ``--repeat`` runs:

* ``segments()``  - dissecting the packets (flows + protocol views), which every view needs;
* ``from bytes``  - the same from the packets' bytes, as a capture holds them and as
  ``wire.segments`` does it: ``segments(Frames(...))`` reads plain TCP/UDP headers from the
  bytes and has Scapy dissect only the frames a protocol view needs (here the HTTP lines);
* ``Scapy all``   - the old way, for comparison: Scapy dissects every frame
  (``Ether(raw)``), then ``segments()`` of those packets;
* ``table``       - ``Table(segs)`` as Jupyter shows it (``_repr_html_``) and as text;
* ``summary``     - ``Connections(segs)``, HTML and text;
* ``ladder``      - ``ladder(segs)`` (the default: at most 40 arrows) rendered to PNG, as
  the notebook does inline;
* ``ladder, all`` - every packet of one long connection drawn (``rows=slice(None)``), the
  old behaviour; only up to 300 packets (10,000 would take minutes).  (A ladder of every
  packet of many connections is refused: more than 12 lifelines.)

The goal: a 10,000-packet capture's table and summary in at most 1 s, from bytes.
Numbers depend on the machine and its load: compare sizes, not digits.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from packets import tcp  # tests/packets.py: hand-built TCP packets
from scapy.layers.l2 import Ether

from labkit.capture.flows import segments
from labkit.capture.frames import Frame, Frames
from labkit.views.connections import Connections
from labkit.views.ladder import ladder
from labkit.views.table import Table

SERVER = ("127.0.0.1", 8080)
REQUEST = b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def http_connections(count: int) -> list:
    """``count`` packets of short HTTP connections (the last one may be cut short)."""
    pkts: list = []
    t, k = 0.0, 0
    while len(pkts) < count:
        c, s = ("127.0.0.1", 20000 + k % 40000), SERVER
        q, r = len(REQUEST), len(RESPONSE)
        for src, dst, flags, seq, ack, payload in [
                (c, s, "S", 0, 0, b""), (s, c, "SA", 0, 1, b""), (c, s, "A", 1, 1, b""),
                (c, s, "PA", 1, 1, REQUEST), (s, c, "A", 1, 1 + q, b""),
                (s, c, "PA", 1, 1 + q, RESPONSE), (c, s, "A", 1 + q, 1 + r, b""),
                (c, s, "FA", 1 + q, 1 + r, b""), (s, c, "FA", 1 + r, 2 + q, b""),
                (c, s, "A", 2 + q, 2 + r, b"")]:
            pkts.append(tcp(src, dst, flags, 1000 * k + seq, 5000 * k + ack, payload, t=t))
            t += 0.0001
        k += 1
    return pkts[:count]


def one_connection(count: int) -> list:
    """``count`` packets of one connection: a handshake, then data and ACKs."""
    c, s = ("127.0.0.1", 20000), SERVER
    pkts = [tcp(c, s, "S", 0), tcp(s, c, "SA", 0, 1), tcp(c, s, "A", 1, 1)]
    for i in range(count - 3):
        sender, receiver = (c, s) if i % 2 == 0 else (s, c)
        pkts.append(tcp(sender, receiver, "PA", 1 + 100 * (i // 2), 1 + 100 * (i // 2),
                        b"$x data %d " % i + b"." * 90, t=i / 10_000))
    return pkts[:count]


def from_bytes(raw: list) -> list:
    """Packets dissected by Scapy from their bytes, stamped with their times."""
    out = []
    for data, t in raw:
        pkt = Ether(data)
        pkt.time = t
        out.append(pkt)
    return out


def frames_of(raw: list) -> Frames:
    """A capture's frames, nothing dissected yet (a new one per run: Frames keep packets)."""
    return Frames([Frame(data, round(t * 10**9), len(data)) for data, t in raw])


def best_of(repeat: int, work) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def png(fig) -> None:
    fig.savefig(io.BytesIO(), format="png")  # what the notebook's inline display does


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 300, 10_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'packets':>8} {'segments()':>11} {'from bytes':>11} {'Scapy all':>10} "
          f"{'table':>8} {'summary':>8} "
          f"{'ladder':>8} {'ladder, all':>12}   (seconds, best of {args.repeat})")
    for size in args.sizes:
        print(measure(size, args.repeat), flush=True)


def measure(size: int, repeat: int) -> str:
    """One line of the table: the times for ``size`` packets."""
    pkts = http_connections(size)
    t_segments = best_of(repeat, lambda: segments(pkts, {SERVER[1]: "server"}))
    segs = segments(pkts, {SERVER[1]: "server"})
    raw = [(bytes(p), p.time) for p in pkts]
    t_bytes = best_of(repeat, lambda: segments(frames_of(raw), {SERVER[1]: "server"}))
    t_scapy = best_of(repeat, lambda: segments(from_bytes(raw), {SERVER[1]: "server"}))
    t_table = best_of(repeat, lambda: (Table(segs)._repr_html_(), str(Table(segs))))
    t_summary = best_of(repeat, lambda: (Connections(segs)._repr_html_(),
                                         str(Connections(segs))))
    t_ladder = best_of(repeat, lambda: png(ladder(segs)))
    long = segments(one_connection(size), {SERVER[1]: "server"})
    t_all = (f"{best_of(1, lambda: png(ladder(long, rows=slice(None)))):12.3f}"
             if size <= 300 else f"{'(skipped)':>12}")
    return (f"{size:>8} {t_segments:11.3f} {t_bytes:11.3f} {t_scapy:10.3f} {t_table:8.3f} "
            f"{t_summary:8.3f} "
            f"{t_ladder:8.3f} {t_all}")

if __name__ == "__main__":
    main()
