"""Does the lab link keep its timing on a busy machine? Delay error and throughput, with load.

    python benchmarks/link_under_load.py [--rtt 0.05] [--pings 1000] [--rounds 2]
    python benchmarks/link_under_load.py --before 5d2308e     # old link vs this one, same run

Delay: ICMP pings every 5 ms from a process on the client host to the server host's kernel
and back, through a link of ``--rtt`` (half each way); the error is each RTT (kernel send
to kernel receive stamp) minus ``--rtt``: p50 and p99; one way inside the link (from its
trace: kernel receipt → sent on); and what ``net.too_busy()`` says.
Loads beside it, each bounded in time and ended by PID:

``quiet``      nothing
``2 busy``     2 CPU-bound processes (each its own session, so its own scheduling group:
               the worst case for the link, which is one process among them)
``8 busy``     8 of them
``busy GIL``   one CPU-bound Python thread in the process that owns the link (a notebook
               kernel computing while its link forwards)

Throughput: bulk TCP for ``--seconds`` with no impairment and the default trace on, the
sender and receiver in processes of their own (as iperf3 would be).

``--before REV`` runs each measurement with labkit from git revision REV too (``git
archive`` into a temporary directory), alternating with this tree's, so both see the same
load. Goals (issue 18): p99 error ≤ 2 ms with 2 busy, ≤ 10 ms with 8; ≥ 1 Gbit/s.
It re-runs itself inside a private network namespace of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOADS = {"quiet": (0, False), "2 busy": (2, False), "8 busy": (8, False),
         "busy GIL": (0, True)}
SPIN = """import sys, time
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    pass"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


PINGER = """
import json, socket, struct, sys, threading, time
# ICMP echo: the server host's kernel answers, so no process there has to wake up, and the
# reply's time is the kernel's receive stamp (SO_TIMESTAMPNS): what is left is the link
count, interval = int(sys.argv[1]), float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
SO_TIMESTAMPNS = 35  # Linux; not in Python's socket module
sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
sock.settimeout(float(sys.argv[3]))
def checksum(data):
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
sent, rtts = {}, []
def receive():
    try:
        while len(rtts) < count:
            data, ancillary, _, _ = sock.recvmsg(200, 100)
            kind, seq = data[20], struct.unpack("!H", data[26:28])[0]
            if kind == 0 and seq in sent:
                sec, nsec = struct.unpack("qq", ancillary[0][2][:16])
                rtts.append(sec + nsec * 1e-9 - sent.pop(seq))
    except TimeoutError:
        pass
reader = threading.Thread(target=receive)
reader.start()
for seq in range(count):
    body = struct.pack("!BBHHH", 8, 0, 0, 7, seq) + bytes(56)
    packet = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    sent[seq] = time.time()
    sock.sendto(packet, ("10.0.0.2", 0))
    time.sleep(interval)  # the ping interval (traffic shape, not a readiness wait)
reader.join()
print(json.dumps(rtts))
"""


def pings(rtt: float, count: int, busy_thread: bool) -> dict:
    """RTTs of ``count`` ICMP pings, one every 5 ms, from a process on the client host,
    while this process (the link's owner) is idle or computes (run in the measuring child)."""
    from labkit import Impairment, LabNetwork

    stop = threading.Event()

    def compute():  # a notebook computing beside its link: it holds the GIL
        while not stop.is_set():
            pass

    if busy_thread:
        threading.Thread(target=compute, daemon=True).start()
    with LabNetwork(Impairment(delay=rtt / 2)) as net:
        with net.on("client"):
            done = subprocess.run([sys.executable, "-c", PINGER, str(count), "0.005",
                                   str(rtt + 2)], capture_output=True, text=True, check=True)
        stop.set()
        results = json.loads(done.stdout)
        held = [e.t_out - e.t_in - rtt / 2 for e in net.link.trace if e.t_out]
        said = str(net.too_busy()) if hasattr(net, "too_busy") else "(no lateness API)"
    return {"errors": [r - rtt for r in results], "held": held, "said": said}


def throughput(seconds: float) -> dict:
    """Mbit/s of bulk TCP through a link with no impairment, its trace on (the default)."""
    from link_throughput import RECEIVER, SENDER  # the same bulk TCP as that benchmark

    from labkit import LabNetwork

    with LabNetwork() as net:
        forwarder = getattr(net.link, "_process", None)  # None: it forwards in our threads
        before = cpu(forwarder)
        with net.on("server"):
            receiver = subprocess.Popen([sys.executable, "-c", RECEIVER],
                                        stdout=subprocess.PIPE, text=True)
        assert receiver.stdout is not None
        receiver.stdout.readline()  # "ready": it listens
        with net.on("client"):
            subprocess.run([sys.executable, "-c", SENDER, str(seconds)], check=True,
                           timeout=seconds + 60)
        out, _ = receiver.communicate(timeout=60)
        used = cpu(forwarder) - before
        stats = net.link.stats
    frames = sum(way["frames"] for way in stats.values())
    missed = sum(way["missed"] for way in stats.values())
    return {"mbit": float(out), "frames": frames, "missed": missed, "cpu": used}


def memory(frames: int) -> dict:
    """MB the link holds for a full trace of ``frames`` frames (bulk TCP until the trace
    is full), and MB the kernel process holds while a notebook reads ``net.link.trace``."""
    from link_throughput import RECEIVER

    from labkit import LabNetwork

    with LabNetwork(trace_limit=frames) as net:
        forwarder = getattr(net.link, "_process", None)  # None: it forwards in our threads
        pid = forwarder.pid if forwarder else os.getpid()
        with net.on("server"):
            receiver = subprocess.Popen([sys.executable, "-c", RECEIVER],
                                        stdout=subprocess.PIPE, text=True)
        assert receiver.stdout is not None
        receiver.stdout.readline()  # "ready": it listens
        before, reader_before = rss(pid), rss(os.getpid())
        with net.on("client"):  # the trace counts both directions: this fills it
            subprocess.run([sys.executable, "-c", FILL, str(frames * 2000)], check=True,
                           timeout=600)
        receiver.communicate(timeout=60)
        held = rss(pid) - before
    trace = net.link.trace  # as a lesson reads it: after the network stopped
    read = rss(os.getpid()) - reader_before - (held if pid == os.getpid() else 0)
    return {"held": held, "read": read, "kept": len(trace)}


FILL = """
import socket, sys
conn = socket.create_connection(("10.0.0.2", 5201), timeout=10)
data, left = bytes(262144), int(sys.argv[1])
while left > 0:
    conn.sendall(data)
    left -= len(data)
conn.close()
"""


def rss(pid: int) -> float:
    """Resident memory of process ``pid``, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu(process) -> float:
    """CPU seconds (user + system) of the link's forwarder process, or of this one."""
    if process is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(labkit_dir: Path, what: list) -> dict:
    """Run one measurement in a child process whose ``import labkit`` finds ``labkit_dir``'s."""
    env = {**os.environ, "PYTHONPATH": str(labkit_dir)}
    done = subprocess.run([sys.executable, __file__, "--one", json.dumps(what)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=labkit_dir)
    if done.returncode:
        raise SystemExit(f"measurement {what} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def spin(count: int, seconds: float) -> list[subprocess.Popen]:
    """``count`` CPU-bound processes, each in a session (a scheduling group) of its own."""
    return [subprocess.Popen([sys.executable, "-c", SPIN, str(seconds)],
                             start_new_session=True) for _ in range(count)]


def old_tree(revision: str, into: str) -> Path:
    """labkit as it was at ``revision``, unpacked under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "labkit"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return Path(into)


def table(pooled: dict, said: dict) -> None:
    print("\n| labkit | load | pings | RTT error p50 | p90 | p99 | in the link p50 | p99 "
          "| runs too busy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, load), (errors, held) in pooled.items():
        ms = [percentile(errors, q) * 1000 for q in (50, 90, 99)]
        inside = [percentile(held, q) * 1000 for q in (50, 99)]
        print(f"| {name} | {load} | {len(errors)} | {ms[0]:+.2f} ms | {ms[1]:+.2f} ms "
              f"| {ms[2]:+.2f} ms | {inside[0]:+.2f} ms | {inside[1]:+.2f} ms "
              f"| {said[name, load]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtt", type=float, default=0.050)
    parser.add_argument("--pings", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--loads", default=",".join(LOADS))
    parser.add_argument("--trace", type=int, default=100_000, help="trace_limit measured")
    parser.add_argument("--before", metavar="REV")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, *rest = json.loads(args.one)
        print(json.dumps({"pings": pings, "throughput": throughput,
                          "memory": memory}[kind](*rest)))
        return
    from labkit.net.namespace import rerun_in_private_network

    rerun_in_private_network()
    loads = args.loads.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"this": ROOT}
        if args.before:
            trees = {args.before: old_tree(args.before, scratch), **trees}
        print(f"{os.cpu_count()} cores, user {os.getuid()}, private namespace; RTT "
              f"{args.rtt * 1000:g} ms, {args.pings} ICMP pings every 5 ms per run; "
              f"{args.rounds} rounds, each running every load with every labkit in turn")
        pooled = {(name, load): ([], []) for load in loads for name in trees}
        said = dict.fromkeys(pooled, 0)
        for round_ in range(1, args.rounds + 1):
            for load in loads:
                processes, thread = LOADS[load]
                for name, tree in trees.items():
                    busy = spin(processes, args.pings * 0.006 + 30)
                    try:
                        got = measure(tree, ["pings", args.rtt, args.pings, thread])
                    finally:
                        for process in busy:
                            process.kill()
                            process.wait()
                    pooled[name, load][0].extend(got["errors"])
                    pooled[name, load][1].extend(got["held"])
                    said[name, load] += got["said"] not in ("None", "(no lateness API)")
                    print(f"round {round_}, {load}, {name}: RTT error p50 "
                          f"{percentile(got['errors'], 50) * 1000:+.2f} ms, p99 "
                          f"{percentile(got['errors'], 99) * 1000:+.2f} ms; load average "
                          f"{os.getloadavg()[0]:.1f}; {got['said']}", flush=True)
        table(pooled, said)
        print(f"\nbulk TCP, no impairment, trace on, {args.seconds:g} s, sender and receiver "
              f"in processes of their own; CPU: the link's own, per frame forwarded")
        for round_ in range(1, args.rounds + 1):
            for name, tree in trees.items():
                got = measure(tree, ["throughput", args.seconds])
                print(f"  {name:>10} round {round_}: {got['mbit']:6.0f} Mbit/s, CPU "
                      f"{got['cpu'] / got['frames'] * 1e6:.1f} µs/frame ({got['frames']} "
                      f"frames, {got['missed']} missed)", flush=True)
        print(f"\nmemory of a full trace of {args.trace:,} frames (bulk TCP, MTU 1500):")
        for name, tree in trees.items():
            got = measure(tree, ["memory", args.trace])
            print(f"  {name:>10}: the link holds {got['held']:.0f} MB more; reading "
                  f"net.link.trace ({got['kept']:,} events) takes {got['read']:.0f} MB in "
                  f"the notebook's process", flush=True)


if __name__ == "__main__":
    main()
