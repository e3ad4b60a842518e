"""Throughput and latency of five server designs against concurrency (notebook 07, long run).

    $ .venv/bin/python benchmarks/serve_many_clients.py            # about 10 s on 2 cores
    $ .venv/bin/python benchmarks/serve_many_clients.py --quick    # a few seconds
    $ .venv/bin/python benchmarks/serve_many_clients.py --plot /tmp/serve.png

The designs are the notebook's (iterative, thread per connection, selectors, asyncio
streams) plus ``socketserver.ForkingTCPServer`` (a process per connection).  Each is an
echo server on 127.0.0.1; labkit's ``load()`` drives it from a separate process with
N concurrent clients x M requests.  Every run is bounded in requests and in seconds.
Numbers depend on the machine and on whatever else runs on it: compare shapes and
orders of magnitude, not digits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import selectors
import socketserver
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labkit import BackgroundServer, load, plot_load


def handle(conn):
    with conn:
        try:
            while data := conn.recv(4096):
                conn.sendall(data)
        except ConnectionError:
            pass


def iterative_server(listener, stop):
    while not stop.is_set():
        conn, _ = listener.accept()
        handle(conn)


def threaded_server(listener, stop):
    while not stop.is_set():
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def selectors_server(listener, stop):
    sel = selectors.DefaultSelector()
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ)
    unsent = {}

    def drop(sock):
        sel.unregister(sock)
        sock.close()
        unsent.pop(sock, None)

    while not stop.is_set():
        for key, events in sel.select(timeout=0.05):
            sock = key.fileobj
            if sock is listener:
                conn, _ = listener.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
            elif events & selectors.EVENT_READ:
                try:
                    data = sock.recv(4096)
                except ConnectionError:
                    data = b""
                if not data:
                    drop(sock)
                else:
                    unsent[sock] = data
                    sel.modify(sock, selectors.EVENT_WRITE)
            else:
                try:
                    sent = sock.send(unsent[sock])
                except ConnectionError:
                    drop(sock)
                    continue
                unsent[sock] = unsent[sock][sent:]
                if not unsent[sock]:
                    sel.modify(sock, selectors.EVENT_READ)
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    sel.close()


async def asyncio_server(listener, stop):
    async def client(reader, writer):
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(client, sock=listener)
    async with server:
        await stop.wait()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            while data := self.request.recv(4096):
                self.request.sendall(data)
        except ConnectionError:
            pass


def forking_server(listener, stop):
    """socketserver.ForkingTCPServer on the lab's listening socket: a process per connection."""
    server = socketserver.ForkingTCPServer(listener.getsockname(), _Echo, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.timeout = 0.05
    try:
        while not stop.is_set():
            server.handle_request()      # accept + fork, or time out and look at `stop`
    finally:
        server.server_close()            # reaps the children


DESIGNS = [iterative_server, threaded_server, selectors_server, asyncio_server, forking_server]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer clients and requests")
    parser.add_argument("--requests", type=int, default=50,
                        help="requests per client (default 50: each client's first request, which "
                             "waits for its turn, stays over 1%% of the samples, so p99 shows it)")
    parser.add_argument("--plot", type=Path, help="save the plot (PNG) here")
    args = parser.parse_args(argv)
    concurrency = [1, 4, 16] if args.quick else [1, 4, 16, 64, 256]
    requests = 20 if args.quick else args.requests
    print(f"{os.cpu_count()} CPUs; {requests} requests per client; echo of 5 bytes; "
          "clients in a separate process")
    results = {}
    for serve in DESIGNS:
        runs = {}
        with BackgroundServer(serve, backlog=512) as server:
            for n in concurrency:
                per_client = max(1, min(requests, 100_000 // n))
                run = load(server, clients=n, requests=per_client, timeout=60)
                runs[n] = run
                print(f"{serve.__name__:17} {run}", flush=True)
        results[serve.__name__] = runs
    print("\npeak requests per second:")
    for name, runs in results.items():
        best = max(runs.values(), key=lambda r: r.rps)
        print(f"  {name:17} {best.rps:9,.0f}/s  at {best.clients:3} clients"
              f"  (p50 {best.p50_ms:.2f} ms, p99 {best.p99_ms:.2f} ms)")
    if args.plot:
        fig = plot_load(results,
                        title="Echo servers on loopback: throughput and latency vs clients")
        fig.savefig(args.plot, dpi=80)
        print(f"plot saved to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
