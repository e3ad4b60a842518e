"""Issue 24's figures, measured: lifecycles, bounds, errors and parser rules of labkit's servers.

    $ sudo .venv/bin/python benchmarks/server_contracts.py                  # this tree
    $ sudo .venv/bin/python benchmarks/server_contracts.py --tree /work/main  # another (before)
    $ sudo .venv/bin/python benchmarks/server_contracts.py --only sni,wsgi-idle

Each row runs in a child Python with ``--tree`` first on its path, so one script
measures any checkout.  Rows: WSGI connections after exit; the size of WSGIServer.log
after 2,000 requests with 60 KB URLs and of DNSServer.queries after 30,000 queries;
threads held by 500 clients sending a request head at one byte a second; 150 slow
clients against a process limited to 80 threads (``ulimit -u 80``: run as ``nobody``
with Debian's /usr/bin/python3, since root ignores the limit); what a non-ASCII SNI
prints to stderr; whether a refused serve_in_thread leaves its port bound; HTTP/1.0
with Transfer-Encoding and a bare LF in a chunk extension; and which error two
mistakes raise.  Loopback only; every load is bounded in count and in seconds (the
slowest row, head-deadline, takes about 20 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


# -- the measurements (each runs in a child, the tree under test first on sys.path) --------
def wsgi_idle() -> str:
    import socket
    import threading
    import time

    from labkit import WSGIServer

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    before = threading.active_count()
    with WSGIServer(app) as server:
        clients = [socket.create_connection(server.address, timeout=3) for _ in range(20)]
        deadline = time.monotonic() + 5
        while threading.active_count() < before + 21 and time.monotonic() < deadline:
            time.sleep(0.01)   # (a measurement: wait until the server took all 20)
    time.sleep(1.0)
    alive = threading.active_count() - before
    try:
        clients[0].sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = clients[0].recv(100)[:15].decode(errors="replace") or "closed"
    except OSError as exc:
        answer = type(exc).__name__
    for c in clients:
        c.close()
    return f"{alive} thread(s) alive 1 s after exit; a request sent then: {answer!r}"


def wsgi_log() -> str:
    import http.client
    import sys as _sys

    from labkit import WSGIServer

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    path = "/" + "a" * 60_000
    with WSGIServer(app) as server:
        for _ in range(2000):
            conn = http.client.HTTPConnection(*server.address, timeout=10)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
    size = sum(_sys.getsizeof(line) for line in server.log) + _sys.getsizeof(server.log)
    dropped = getattr(server.log, "dropped", "n/a")
    return f"{len(server.log)} entries, {size / 1e6:.1f} MB; dropped counted: {dropped}"


def dns_queries() -> str:
    import socket
    import sys as _sys

    from dnslib import DNSRecord

    from labkit import DNSServer

    with DNSServer({"www.netlab.test": "127.0.0.7"}) as dns, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for i in range(30_000):
            sock.sendto(DNSRecord.question(f"n{i}.netlab.test").pack(), dns.address)
            sock.recv(512)
    queries = dns.queries
    size = _sys.getsizeof(queries) + sum(_sys.getsizeof(q) + sum(map(_sys.getsizeof, q))
                                         for q in queries)
    dropped = getattr(queries, "dropped", "n/a")
    return f"{len(queries)} entries, {size / 1e6:.1f} MB; dropped counted: {dropped}"


def head_deadline() -> str:
    import asyncio
    import threading
    import time

    from labkit import HTTPServer

    async def trickle(address, stop):
        reader, writer = await asyncio.open_connection(*address)
        for byte in b"GET /hello HTTP/1.1\r\nHost: lab\r\nX-Slow: " + b"x" * 100:
            if stop.is_set() or reader.at_eof():
                break
            writer.write(bytes([byte]))
            try:
                await writer.drain()
            except OSError:
                break
            await asyncio.sleep(1.0)
        writer.close()

    async def main(address):
        stop = asyncio.Event()
        tasks = [asyncio.create_task(trickle(address, stop)) for _ in range(500)]
        await asyncio.sleep(3)
        held_3 = threading.active_count() - base
        await asyncio.sleep(12)
        held_15 = threading.active_count() - base
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return held_3, held_15

    base = threading.active_count()
    with HTTPServer() as server:
        started = time.monotonic()
        held_3, held_15 = asyncio.run(main(server.address))
        statuses = [line.split(" → ")[-1] for line in server.log if "→" in line]
    return (f"500 clients at 1 byte/s: {held_3} threads held at 3 s, {held_15} at 15 s; "
            f"answers {sorted(set(statuses))} ({time.monotonic() - started:.0f} s run)")


def thread_limit() -> str:
    """Run as a user the limit applies to (root ignores RLIMIT_NPROC)."""
    import asyncio
    import logging
    import resource

    resource.setrlimit(resource.RLIMIT_NPROC, (80, 80))
    warnings = []

    class Keep(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    logging.getLogger("labkit").addHandler(Keep())
    from labkit.servers.tcp import TCPServer

    async def client(address, results):
        try:
            reader, writer = await asyncio.open_connection(*address)
        except OSError as exc:
            results.append(type(exc).__name__)
            return
        await asyncio.sleep(2)          # a slow client: holds its handler thread 2 s
        try:
            writer.write(b"ping")
            await writer.drain()
            got = await asyncio.wait_for(reader.read(4), 20)
            results.append("answered" if got == b"ping" else "closed, no answer")
        except (TimeoutError, OSError) as exc:
            results.append(type(exc).__name__)
        writer.close()

    async def main(address):
        results: list[str] = []
        await asyncio.gather(*(client(address, results) for _ in range(150)))
        return results

    server = TCPServer("echo").__enter__()
    results = asyncio.run(main(server.address))
    try:
        server.__exit__(None, None, None)
        at_exit = "no error at exit"
    except Exception as exc:  # noqa: BLE001 - reported in the row
        at_exit = f"at exit: {type(exc).__name__}"
    counts = {k: results.count(k) for k in sorted(set(results))}
    said = warnings[0][:90] if warnings else "no warning"
    return f"150 slow clients, 80 threads: {counts}; {at_exit}; warning: {said!r}"


def sni() -> str:
    import socket
    import ssl

    from labkit import LocalCA, TLSServer

    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="aaaa.test")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read().replace(b"aaaa.test", b"\xc3\xa9aa.test")   # same length
    with LocalCA() as ca, TLSServer(ca) as server:
        with socket.create_connection(server.address, timeout=5) as s:
            s.sendall(hello)
            s.recv(100)
        server.wait_handshakes(1, 5)
    return f"tls_errors: {list(server.tls_errors)}"


def serve_refused() -> str:
    import http.server
    import socket

    from labkit import serve_in_thread

    server = http.server.HTTPServer(("0.0.0.0", 0), http.server.BaseHTTPRequestHandler)
    port = server.server_address[1]
    try:
        serve_in_thread(server)
    except ValueError as exc:
        refused = str(exc)[:60]
    with socket.socket() as probe:
        bound = probe.connect_ex(("127.0.0.1", port)) == 0
    return f"refused ({refused}...); port still listening: {bound}"


def http10_te() -> str:
    import socket

    from labkit import HTTPServer

    raw = (b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
           b"0\r\n\r\nGET /status/418 HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
    ext = (b"POST /echo HTTP/1.1\r\nHost: lab\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n")
    answers = []
    with HTTPServer() as server:
        for request in (raw, ext):
            with socket.create_connection(server.address, timeout=5) as s:
                s.sendall(request)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            answers.append([int(line.split()[1]) for line in data.split(b"\r\n")
                            if line.startswith(b"HTTP/1.1 ")])
    return f"HTTP/1.0 + Transfer-Encoding, then a request: {answers[0]}; " \
           f"bare LF in a chunk extension: {answers[1]}"


def errors() -> str:
    from labkit import Capture, TCPServer

    said = []
    for what, make in (("TCPServer(port=True)", lambda: TCPServer(port=True)),
                       ("Capture(True)", lambda: Capture(True)),
                       ("TCPServer(host=2130706433)", lambda: TCPServer(host=2130706433))):
        try:
            make()
            said.append(f"{what}: accepted")
        except Exception as exc:  # noqa: BLE001 - the row says what it was
            said.append(f"{what}: {type(exc).__name__}")
    return "; ".join(said)


def websocket_option() -> str:
    import asyncio

    from labkit import WebSocketServer

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    try:
        server = WebSocketServer(echo, max_size="x")
    except TypeError as exc:
        return f"refused before starting: TypeError: {str(exc)[:70]}"

    async def talk(url):
        from websockets.asyncio.client import connect
        try:
            async with connect(url, open_timeout=3):
                return "handshake ok"
        except Exception as exc:  # noqa: BLE001 - the row says what happened
            return f"handshake failed ({type(exc).__name__})"

    try:
        with server:
            said = asyncio.run(talk(server.url))
        errors = "errors == []"
    except Exception as exc:  # noqa: BLE001
        said, errors = "?", f"at exit {type(exc).__name__}"
    return f"started; {said}; {errors}"


ROWS = {"wsgi-idle": wsgi_idle, "wsgi-log": wsgi_log, "dns-queries": dns_queries,
        "head-deadline": head_deadline, "thread-limit": thread_limit, "sni": sni,
        "serve-refused": serve_refused, "http10-te": http10_te, "errors": errors,
        "websocket-option": websocket_option}


def run_row(name: str, tree: Path) -> str:
    if name == "thread-limit":  # as nobody, with the Python a student has
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                   "/usr/bin/python3", __file__, "--tree", str(tree), "--child", name]
        env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    else:
        command = [sys.executable, __file__, "--tree", str(tree), "--child", name]
        env = dict(os.environ)
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env,
                          cwd="/")
    if done.returncode:
        return f"failed: {done.stderr.strip().splitlines()[-1][:120] if done.stderr else '?'}"
    out = json.loads(done.stdout.strip().splitlines()[-1])
    stderr = done.stderr.strip()
    if stderr:
        out += f"  [stderr: {len(stderr.splitlines())} line(s): {stderr.splitlines()[0][:60]!r}]"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", type=Path, default=HERE, help="the checkout to measure")
    parser.add_argument("--only", default="", help="comma-separated rows")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(args.tree))
        print(json.dumps(ROWS[args.child]()))
        return
    print(f"tree: {args.tree}")
    for name in [n for n in ROWS if not args.only or n in args.only.split(",")]:
        print(f"{name:17} {run_row(name, args.tree)}", flush=True)


if __name__ == "__main__":
    main()
