"""What does `dig` - a resolver nobody here wrote - make of labkit's DNSServer?  (issue 22)

    $ .venv/bin/python benchmarks/dns_dig.py          # needs dig (apt-get install bind9-dnsutils)

One DNSServer on loopback with a small name (one A record), a 60-record name and a
200-record name; dig asks each the way a resolver would: over UDP with EDNS (dig's
default, a 1232-byte buffer), over TCP (+tcp), over UDP without EDNS (+noedns, so
512 bytes), and with a 4096-byte EDNS buffer.  The table says what dig printed: the
rcode, the header flags, how many answers, whether it had to retry over TCP, the
transport of the final answer, the EDNS record of the reply, and any error.
Loopback only; about 10 queries, each bounded by dig's own 2-second timeout.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labkit import DNSServer

ZONE = {
    "www.netlab.test": "127.0.0.7",
    "many.netlab.test": [f"10.0.0.{i}" for i in range(1, 61)],     # ~1 KB: over 512
    "huge.netlab.test": [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(200)],  # ~3.2 KB
}
CASES = [  # (case, name, dig options)
    ("UDP", "www.netlab.test", []),
    ("TCP", "www.netlab.test", ["+tcp"]),
    ("noedns", "www.netlab.test", ["+noedns"]),
    ("large UDP (60 A)", "many.netlab.test", []),
    ("large noedns (60 A)", "many.netlab.test", ["+noedns"]),
    ("large TCP (60 A)", "many.netlab.test", ["+tcp"]),
    ("huge UDP (200 A)", "huge.netlab.test", []),
    ("huge bufsize=4096", "huge.netlab.test", ["+bufsize=4096"]),
    ("noedns, no TCP retry", "huge.netlab.test", ["+noedns", "+ignore"]),
]


NOTES = [  # what dig said, in short
    (r"Truncated, retrying in TCP mode", "TC: retried over TCP"),
    (r"connection refused", "TCP connection refused"),
    (r"timed out", "timed out"),
    (r"recursion requested but not available", "no recursion (authoritative)"),
]


def dig(port: int, name: str, options: list[str]) -> dict:
    done = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), name, "A", "+time=2",
                           "+tries=1", *options], capture_output=True, text=True, timeout=30)
    return read(done.stdout + done.stderr)


def read(out: str) -> dict:
    """What dig printed, in short: rcode, flags, answers, transport, EDNS, notes."""
    status = re.search(r"status: (\w+)", out)
    flags = re.search(r";; flags: ([a-z ]*);", out)
    answers = re.search(r"ANSWER: (\d+)", out)
    server = re.search(r";; SERVER: .*\((UDP|TCP)\)", out)
    edns = re.search(r"; EDNS: version: (\d+), flags:[^;]*; udp: (\d+)", out)
    notes = [short for pattern, short in NOTES if re.search(pattern, out)]
    return {"status": status.group(1) if status else "-",
            "flags": flags.group(1).strip() if flags else "-",
            "answers": answers.group(1) if answers else "-",
            "via": server.group(1) if server else "-",
            "edns": f"v{edns.group(1)} udp {edns.group(2)}" if edns else "none",
            "notes": ", ".join(notes)}


def main() -> None:
    if shutil.which("dig") is None:
        sys.exit("dig is not installed: apt-get install bind9-dnsutils")
    rows = []
    with DNSServer(ZONE) as dns:
        for case, name, options in CASES:
            rows.append((case, " ".join(options) or "(default)", dig(dns.port, name, options)))
    head = f"{'case':22} {'dig options':16} {'status':8} {'flags':12} {'ans':>4} {'via':4} " \
           f"{'EDNS in reply':14} notes"
    print(head)
    print("-" * len(head))
    for case, options, r in rows:
        print(f"{case:22} {options:16} {r['status']:8} {r['flags']:12} {r['answers']:>4} "
              f"{r['via']:4} {r['edns']:14} {r['notes']}")


if __name__ == "__main__":
    main()
