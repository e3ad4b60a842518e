"""Hostile input for every kind of lab server: about 7,000 inputs in four families.  (issue 24)

    $ .venv/bin/python benchmarks/fuzz_servers.py              # ~7,000 inputs, a minute or two
    $ .venv/bin/python benchmarks/fuzz_servers.py --scale 0.1  # a tenth of each family

* HTTP requests: valid requests (GET, POST with Content-Length, chunked with extensions
  and trailers, pipelined) with random bytes changed, inserted or removed, sent to an
  HTTPServer; every answer must be a 4xx or a 2xx/3xx - never a 5xx (but 505, the
  answer to an HTTP/9.1 request line), or a hang.
* TLS ClientHellos: real ClientHellos (random server names, TLS 1.2 and 1.3) mutated,
  cut short or lengthened, sent to a TLSServer; each is refused or completed, nothing
  is printed to stderr, errors stay empty.
* datagrams: DNS queries mutated (flags, counts, names, EDNS records) and random bytes,
  to a DNSServer over UDP and, length-prefixed, over TCP; and random datagrams to a
  UDPRelay and a UDPServer; no error, no hang.
* WebSocket frames: after a real opening handshake, frames with random opcodes,
  lengths, masks, reserved bits, fragmented control frames and bad UTF-8, to a
  WebSocketServer echoing; each connection ends or echoes, errors stay empty.

After each family: a valid request is answered, no server error was recorded, and
nothing was written to stderr.  The table prints the counts.  Seeded: the same run
every time.  Loopback only; every exchange is bounded by a 5-second timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import socket
import ssl
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dnslib import EDNS0, DNSRecord

from labkit import (
    DNSServer,
    HTTPServer,
    LocalCA,
    TLSServer,
    UDPRelay,
    UDPServer,
    WebSocketServer,
)

TIMEOUT = 5.0


def mutate(rng: random.Random, data: bytes, edits: int) -> bytes:
    raw = bytearray(data)
    for _ in range(edits):
        at = rng.randrange(len(raw) + 1)
        action = rng.randrange(4)
        if action == 0 and at < len(raw):
            raw[at] = rng.randrange(256)
        elif action == 1:
            raw[at:at] = bytes([rng.choice(b"\r\n \t:;/0123456789aF\x00\x7f\x80\xff")])
        elif action == 2 and at < len(raw):
            del raw[at]
        else:
            raw[at:at] = rng.randbytes(rng.randrange(1, 8))
    return bytes(raw)


# -- HTTP ---------------------------------------------------------------------------------
SEEDS_HTTP = [
    b"GET /hello HTTP/1.1\r\nHost: lab\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: lab\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: lab\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;lang=en\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    b"GET /hello HTTP/1.1\r\nHost: lab\r\n\r\nGET /status/204 HTTP/1.1\r\nHost: lab\r\n\r\n",
    b"POST /json HTTP/1.0\r\nContent-Length: 9\r\n\r\n{\"a\": 1}\n",
    b"GET /bytes?n=10 HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n",
]


def http_exchange(address, raw: bytes) -> bytes:
    with socket.create_connection(address, timeout=TIMEOUT) as s:
        try:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data


def fuzz_http(n: int, rng: random.Random) -> dict:
    import re

    outcomes: collections.Counter = collections.Counter()
    bad = []
    with HTTPServer() as server:
        for _ in range(n):
            raw = mutate(rng, rng.choice(SEEDS_HTTP), rng.randrange(1, 6))
            started = time.monotonic()
            try:
                answer = http_exchange(server.address, raw)
            except TimeoutError:
                bad.append(("hang", raw))
                continue
            codes = [int(c) for c in re.findall(rb"(?:^|\n)HTTP/1\.[01] (\d{3}) ", answer)]
            outcomes.update(codes or ["no answer"])
            # (505 is no failure: RFC 9110 §15.6.6's answer to an HTTP/9.1 request line)
            if any(c >= 500 and c != 505 for c in codes) or time.monotonic() - started > TIMEOUT:
                bad.append((codes, raw))
        healthy = http_exchange(server.address, SEEDS_HTTP[0]).startswith(b"HTTP/1.1 200")
    return {"inputs": n, "outcomes": outcomes, "bad": bad, "errors": list(server.errors),
            "healthy": healthy}


# -- TLS ----------------------------------------------------------------------------------
def client_hello(rng: random.Random) -> bytes:
    ctx = ssl.create_default_context()
    if rng.random() < 0.5:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    name = "".join(rng.choice("abcdefghij") for _ in range(rng.randrange(1, 30))) + ".test"
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def fuzz_tls(n: int, rng: random.Random, ca: LocalCA) -> dict:
    outcomes: collections.Counter = collections.Counter()
    bad = []
    hellos = [client_hello(rng) for _ in range(20)]
    with TLSServer(ca) as server:
        for _ in range(n):
            hello = rng.choice(hellos)
            kind = rng.randrange(4)
            if kind == 0:
                raw = mutate(rng, hello, rng.randrange(1, 10))
            elif kind == 1:
                raw = hello[:rng.randrange(len(hello))]
            elif kind == 2:
                raw = hello + rng.randbytes(rng.randrange(1, 300))
            else:   # a non-ASCII or odd server name, same length
                at = hello.find(b".test") - 3
                raw = hello[:at] + bytes([rng.randrange(128, 256)]) + hello[at + 1:]
            try:
                with socket.create_connection(server.address, timeout=TIMEOUT) as s:
                    try:
                        s.sendall(raw)
                        s.shutdown(socket.SHUT_WR)   # said all it will say: no wait for more
                    except OSError:
                        pass   # the server refused it before it was all sent
                    first = s.recv(1)
                outcomes[{b"": "closed", b"\x15": "alert", b"\x16": "handshake"}.get(
                    first, "other")] += 1
            except TimeoutError:
                bad.append(("hang", raw))
            except ConnectionResetError:
                outcomes["reset"] += 1
        server.wait_handshakes(n, timeout=10)
        ctx = ca.client_context()
        with socket.create_connection(server.address, timeout=TIMEOUT) as raw_sock, \
                ctx.wrap_socket(raw_sock, server_hostname="localhost") as tls:
            tls.sendall(b"hi")
            healthy = tls.recv(10) == b"hi"
    return {"inputs": n, "outcomes": outcomes, "bad": bad, "errors": list(server.errors),
            "healthy": healthy, "tls_errors": len(server.tls_errors) + server.tls_errors.dropped}


# -- datagrams ----------------------------------------------------------------------------
def dns_query(rng: random.Random) -> bytes:
    query = DNSRecord.question(rng.choice(["www.netlab.test", "big.netlab.test", "x.test"]),
                               rng.choice(["A", "AAAA", "ANY", "MX", "TXT"]))
    query.header.id = rng.randrange(65536)
    if rng.random() < 0.5:
        query.add_ar(EDNS0(udp_len=rng.choice([0, 100, 512, 1232, 4096, 65535]),
                           version=rng.choice([0, 0, 0, 1]), flags=rng.choice(["", "do"])))
    return query.pack()


def fuzz_datagrams(n: int, rng: random.Random) -> dict:
    outcomes: collections.Counter = collections.Counter()
    bad = []
    zone = {"www.netlab.test": "127.0.0.7",
            "big.netlab.test": [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(100)]}
    with DNSServer(zone) as dns, UDPServer("echo") as echo, \
            UDPRelay(echo, drop=0.1, duplicate=0.1, reorder=0.1, seed=1) as relay, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        sock.settimeout(0.2)   # no reply is expected to some (a response, no query id)
        for _ in range(n):
            kind = rng.randrange(5)
            payload = mutate(rng, dns_query(rng), rng.randrange(0, 6)) if kind < 3 \
                else rng.randbytes(rng.randrange(0, 600))
            if kind in (0, 3):            # DNS over UDP
                sock.sendto(payload, dns.address)
                try:
                    reply = sock.recv(65535)
                    outcomes[f"dns/udp rcode {reply[3] & 15}" if len(reply) > 3 else "?"] += 1
                except TimeoutError:
                    outcomes["dns/udp no reply"] += 1   # no query id, or a response
            elif kind == 1:               # DNS over TCP, length-prefixed
                try:
                    with socket.create_connection(dns.address, timeout=TIMEOUT) as s:
                        s.sendall(len(payload).to_bytes(2, "big") + payload)
                        s.shutdown(socket.SHUT_WR)
                        head = s.recv(2)
                        outcomes["dns/tcp answered" if len(head) == 2 else "dns/tcp closed"] += 1
                except TimeoutError:
                    bad.append(("hang", payload))
                except ConnectionResetError:
                    outcomes["dns/tcp reset"] += 1
            else:                         # through the relay to the echo server, or at it
                other.sendto(payload, relay.address if kind == 2 else echo.address)
                outcomes["relay/echo sent"] += 1
        query = DNSRecord.question("www.netlab.test")
        sock.settimeout(TIMEOUT)
        sock.sendto(query.pack(), dns.address)
        healthy = [str(r.rdata) for r in DNSRecord.parse(sock.recv(512)).rr] == ["127.0.0.7"]
    errors = list(dns.errors) + list(echo.errors) + list(relay.errors)
    return {"inputs": n, "outcomes": outcomes, "bad": bad, "errors": errors, "healthy": healthy}


# -- WebSocket frames ------------------------------------------------------------------------
HANDSHAKE = (b"GET / HTTP/1.1\r\nHost: lab\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def frame(rng: random.Random) -> bytes:
    fin = rng.random() < 0.8
    rsv = rng.choice([0, 0, 0, rng.randrange(8)])
    opcode = rng.choice([0, 1, 2, 8, 9, 10, rng.randrange(16)])
    payload = rng.choice([b"hello", "héllo".encode(), b"\xff\xfe", b"\x03\xe8bye", b"",
                          rng.randbytes(rng.randrange(200))])
    masked = rng.random() < 0.9
    length = len(payload)
    head = bytes([(fin << 7) | (rsv << 4) | opcode])
    if length < 126 and rng.random() < 0.9:
        head += bytes([(masked << 7) | length])
    elif rng.random() < 0.5:
        head += bytes([(masked << 7) | 126]) + struct.pack("!H", length)
    else:
        head += bytes([(masked << 7) | 127]) + struct.pack("!Q", rng.choice([length, 2**40]))
    if masked:
        key = rng.randbytes(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


def fuzz_websocket(n: int, rng: random.Random) -> dict:
    outcomes: collections.Counter = collections.Counter()
    bad = []

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    with WebSocketServer(echo, max_size=65536) as server:
        sent = 0
        while sent < n:
            frames = [frame(rng) for _ in range(rng.randrange(1, 6))]
            if rng.random() < 0.3:
                frames = [mutate(rng, f, 2) for f in frames]
            sent += len(frames)
            try:
                with socket.create_connection(server.address, timeout=TIMEOUT) as s:
                    s.sendall(HANDSHAKE)
                    answer = b""
                    while b"\r\n\r\n" not in answer:
                        answer += s.recv(1024)
                    s.sendall(b"".join(frames))
                    s.shutdown(socket.SHUT_WR)
                    got = b""
                    while chunk := s.recv(65536):
                        got += chunk
                    outcomes["close frame" if b"\x88" in got[:1] or b"\x88" in got else
                             "echo" if got else "closed"] += 1
            except TimeoutError:
                bad.append(("hang", frames))
            except ConnectionResetError:
                outcomes["reset"] += 1

        async def hello(url):
            from websockets.asyncio.client import connect
            async with connect(url) as ws:
                await ws.send("hi")
                return await ws.recv() == "hi"

        healthy = asyncio.run(hello(server.url))
    return {"inputs": sent, "outcomes": outcomes, "bad": bad, "errors": list(server.errors),
            "healthy": healthy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args()
    sizes = {name: max(10, int(count * args.scale)) for name, count in
             (("HTTP requests", 3000), ("TLS ClientHellos", 1000), ("datagrams", 2000),
              ("WebSocket frames", 1000))}
    rng = random.Random(args.seed)
    # stderr goes to a file: anything a server prints there (it must print nothing) is counted
    with tempfile.TemporaryFile() as err, LocalCA() as ca:
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            results = {}
            for name, count in sizes.items():
                started = time.monotonic()
                if name == "HTTP requests":
                    results[name] = fuzz_http(count, rng)
                elif name == "TLS ClientHellos":
                    results[name] = fuzz_tls(count, rng, ca)
                elif name == "datagrams":
                    results[name] = fuzz_datagrams(count, rng)
                else:
                    results[name] = fuzz_websocket(count, rng)
                results[name]["seconds"] = time.monotonic() - started
        finally:
            os.dup2(saved, 2)
        err.seek(0)
        printed = err.read().decode(errors="replace")
    total = 0
    for name, r in results.items():
        total += r["inputs"]
        outcomes = dict(sorted(r["outcomes"].items(), key=lambda kv: str(kv[0])))
        print(f"{name:17} {r['inputs']:5} inputs in {r['seconds']:5.1f} s | 5xx/hang: "
              f"{len(r['bad'])} | server errors: {len(r['errors'])} | healthy after: "
              f"{r['healthy']} | {outcomes}")
        for item in r["bad"][:3]:
            print(f"    bad: {item!r:.200}")
        for exc in r["errors"][:3]:
            print(f"    error: {type(exc).__name__}: {exc}")
    lines = printed.splitlines()
    ignored = sum(line.startswith("Exception ignored") for line in lines)
    print(f"total {total} inputs; stderr: {len(lines)} line(s), {ignored} 'Exception ignored'")
    for line in lines[:5]:
        print(f"    stderr: {line[:110]}")


if __name__ == "__main__":
    main()
