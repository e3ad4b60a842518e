"""Notebook 09's fast retransmit, many times: how Linux found the lost segment, with SACK
on the client host (Linux's default) and off (what 09 does), run by run.

    python benchmarks/fast_retransmit.py --runs 200                 # alone
    python benchmarks/fast_retransmit.py --runs 200 --ack-jitter 0.015

Load it as CI does by running other notebooks beside it, e.g.
``pytest -n 3 --dist loadscope notebooks/0[0-8]-*.ipynb`` in another shell. ``--ack-jitter``
spreads the server's ACKs the way a late link does (their order kept).

Each run is 09's exchange (seed 58 drops ``BBBB…``; no tail loss probe; a 1 s floor for the
retransmission timer), alternately with ``net.ipv4.tcp_sack`` 1 and 0 on the client host.
Per setting it counts how the resend was triggered (labkit's ``seq_trace``: duplicate ACKs
before it, segments the ACKs reported past the hole) and the client host's own counters
(``/proc/net/netstat``: TCPSackRecovery, TCPRenoRecovery, TCPLossProbes, TCPTimeouts), and
prints every run whose resend came before three duplicate ACKs. It re-runs itself inside
a private network namespace of its own.
"""

from __future__ import annotations

import argparse
import socket
from collections import Counter
from pathlib import Path

from labkit.net.namespace import rerun_in_private_network

SEGMENT = 1448
LETTERS = b"".join(bytes([ord("A") + i]) * SEGMENT for i in range(8))
COUNTERS = ("TCPSackRecovery", "TCPRenoRecovery", "TCPFastRetrans", "TCPLossProbes",
            "TCPTimeouts")
IPV4 = Path("/proc/sys/net/ipv4")


def tcp_ext() -> dict[str, int]:
    """This thread's network namespace's TcpExt counters (``nstat``'s source)."""
    lines = Path("/proc/thread-self/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))
    return {}


def exchange(sack: bool, jitter: float, seed: int) -> dict:
    """One run of 09's exchange; what the capture, the counters and the link say."""
    from labkit import Capture, Impairment, LabNetwork, TCPServer, dropped_segments, seq_trace

    down = Impairment(delay=0.020, jitter=jitter, seed=seed) if jitter else \
        Impairment(delay=0.020)
    with LabNetwork(up=Impairment(delay=0.020, loss=0.05, seed=58), down=down) as net:
        net.set_rto_min("client", 1.0)
        with net.on("server"), TCPServer("echo", host=net.addresses["server"]) as server:
            with net.on("client"):
                (IPV4 / "tcp_sack").write_text("1" if sack else "0")
                (IPV4 / "tcp_early_retrans").write_text("0")
                with Capture(server, iface="eth0") as wire:
                    with socket.create_connection(server.address, timeout=30) as sock:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
                        sock.sendall(LETTERS)
                        echoed = b""
                        while len(echoed) < len(LETTERS) and (data := sock.recv(65536)):
                            echoed += data
                counters = tcp_ext()
        dropped = [e.number for e in net.link.trace
                   if e.fate == "dropped" and e.direction == "client→server"]
        worst = max(late.worst for late in net.lateness().values())
    trace = seq_trace(wire.segments, sender="client",
                      lost=dropped_segments(wire.segments, dropped))
    result = {"sack": sack, "counters": {k: counters.get(k, 0) for k in COUNTERS if
                                         counters.get(k)}, "late_ms": worst * 1000,
              "echoed": echoed == LETTERS}
    for lost, resent in trace.repairs()[:1]:
        acks = [a for a in trace.acks if a.t <= resent.t and a.index < resent.index]
        result.update(lost=lost.seq, how=trace.how(resent), dup=trace.dup_acks_before(resent),
                      reported=trace.reported_beyond(resent),
                      quiet_ms=(resent.t - max(a.t for a in acks)) * 1000 if acks else None)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="runs in all (half each way)")
    parser.add_argument("--ack-jitter", type=float, default=0.0,
                        help="seconds of jitter on the server's ACKs (default none)")
    args = parser.parse_args()
    if not 2 <= args.runs <= 5000 or not 0 <= args.ack_jitter <= 0.1:
        parser.error("--runs takes 2 to 5000, --ack-jitter 0 to 0.1 seconds")
    rerun_in_private_network()
    tally: dict[bool, Counter] = {True: Counter(), False: Counter()}
    for run in range(args.runs):
        sack = run % 2 == 0
        try:
            one = exchange(sack, args.ack_jitter, seed=run)
        except (OSError, RuntimeError, ValueError) as exc:
            tally[sack]["failed: " + type(exc).__name__] += 1
            continue
        kind = one.get("how", "no resend seen")
        if kind == "fast retransmit" and one["dup"] < 3:
            kind = "fast retransmit, fewer than 3 duplicate ACKs"
        tally[sack][kind] += 1
        if one.get("dup", 0) < 3 or kind != "fast retransmit":
            print(f"run {run} SACK {'on ' if sack else 'off'}: {kind}; {one.get('dup')} "
                  f"duplicate ACKs, {one.get('reported')} segments reported past the hole; "
                  f"resent {one.get('quiet_ms') or 0:.1f} ms after the last ACK; counters "
                  f"{one['counters']}; the link up to {one['late_ms']:.1f} ms late")
    for sack in (True, False):
        runs = sum(tally[sack].values())
        print(f"SACK {'on ' if sack else 'off'}: {runs} runs: " +
              ", ".join(f"{n} {kind}" for kind, n in tally[sack].most_common()))


if __name__ == "__main__":
    main()
