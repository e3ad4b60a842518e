"""Hostile input for labkit's HTTPServer: each family once, then a health check.

The families are the ones independent fuzzers ran against the server (issue 8):
what broke then (a dropped connection, a split response, a 500 that raised in the
owning cell, unbounded memory) and what held (traversal, huge heads, pipelining).
Every family is bounded in count and time and is followed by the same check: a
valid request is answered 200, no connection, thread or file descriptor is left
over, and the server recorded no error (so the owning cell would not raise).
"""

import collections
import http.client
import os
import random
import re
import socket
import ssl
import struct
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from conftest import eventually

import labkit.servers.http
import labkit.servers.tcp
from labkit import HTTPServer
from labkit.servers.http import MAX_BODY, MAX_REQUEST_LINE
from labkit.servers.http_endpoints import MAX_JSON_DEPTH

CLIENT_TIMEOUT = 5.0  # well under the server's IDLE_TIMEOUT: an answer must not wait for it
SECRET = "top secret\n"


# -- clients ---------------------------------------------------------------------
def exchange(address, raw: bytes, half_close: bool = True) -> bytes:
    """Send ``raw`` while reading; return all the server sent before it closed.

    Sending in a thread lets the server refuse a 1 MB request after 16 KB and the
    client read that answer, instead of both sides blocking on full buffers.
    """
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as s:
        def send():
            try:
                s.sendall(raw)
                if half_close:
                    s.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server refused early and closed: its answer is what counts

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        sender.join(CLIENT_TIMEOUT)
    return data


def one_response(address, raw: bytes) -> tuple[int, bytes]:
    """Send ``raw`` without half-closing and read exactly one response."""
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as s:
        s.sendall(raw)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, resp.read()


def statuses(data: bytes) -> list[int]:
    """Status codes of every response in ``data``: status lines at the start of a line
    (a reason that quotes "\\r\\nHTTP/1.1 200 OK" back is one line, not a second response)."""
    return [int(code) for code in re.findall(rb"(?:^|\n)HTTP/1\.1 (\d{3}) ", data)]


def get(address, target: str) -> bytes:
    return exchange(address, f"GET {target} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n"
                             f"\r\n".encode())


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def check_health(server: HTTPServer, fds: int, threads: int, client=None) -> str:
    """A valid request → 200, then nothing left over and no error recorded."""
    if client is None:
        assert statuses(get(server.address, "/hello")) == [200]
    else:
        client()
    assert server.wait_idle(5), "a connection stayed open after its client left"
    assert eventually(lambda: threading.active_count() <= threads), "threads left running"
    assert eventually(lambda: fd_count() <= fds), f"fds: {fd_count()} now, {fds} before"
    server.raise_errors()  # would be ServerError in the owning cell
    return "200; conns 0; threads, fds at baseline; no error"


@pytest.fixture
def site(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<h1>hi</h1>\n")
    (tmp_path / "secret.txt").write_text(SECRET)
    (tmp_path / "site" / "escape").symlink_to(tmp_path / "secret.txt")
    return tmp_path


# -- the families ----------------------------------------------------------------
def static_traversal(server, site, monkeypatch):
    """32 ways to name a file outside the static folder: all 403, never the file."""
    dots = ["..", "%2e%2e", "%2E%2E", ".%2e", "%2e."]
    seps = ["/", "%2f", "%2F"]
    names = [f"{d}{s}secret.txt" for d in dots for s in seps]
    names += [f"{d}{s}{d}{s}{d}{s}etc{s}passwd" for d in dots for s in seps]
    names += ["/etc/passwd", "escape"]  # an absolute name; a symlink pointing out
    results = []
    for name in names:
        response = get(server.address, "/static/" + name)
        results += statuses(response)
        assert statuses(response) == [403] and SECRET.encode() not in response, name
    return results


def long_names(server, site, monkeypatch):
    """Names longer than a file name can be (255 bytes): 404 with a reason, not a drop;
    a request line over the limit (4,000 × %41): 414."""
    expected = {
        "/static/" + "a" * 255: 404, "/static/" + "a" * 300: 404,
        "/static/" + "b" * 1000 + "/x": 404, "/static/" + "%41" * 600: 404,
        "/static/" + "%41" * 2000: 404, "/" + "%41" * 2000: 404,
        "/static/" + "%41" * 4000: 414, "/" + "%41" * 4000: 414,
        "/redirect?to=/" + "%41" * 2000: 302,
    }
    results = []
    for target, status in expected.items():
        response = get(server.address, target)
        results += statuses(response)
        assert statuses(response) == [status], target[:40]
        assert len(response) < 4000, "the answer echoed the whole name back"
    assert not any("connection ended" in line for line in server.log)
    return results


def unreadable_file(server, site, monkeypatch):
    """A file the server may not read: 403 saying so, the connection kept, not the
    client's fault in the log."""
    locked = site / "site" / "locked.txt"
    locked.write_text("no\n")
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads anything: make open() refuse instead
        real_open = Path.open

        def refusing_open(path, *args, **kwargs):
            if path.name == "locked.txt":
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(Path, "open", refusing_open)
    request = b"GET /static/locked.txt HTTP/1.1\r\nHost: lab\r\n\r\n"
    response = exchange(server.address, request * 3 + b"GET /static/index.html HTTP/1.1\r\n"
                                                      b"Host: lab\r\nConnection: close\r\n\r\n")
    assert statuses(response) == [403, 403, 403, 200]  # one connection, all answered
    assert b"may not read 'locked.txt' (Permission denied)" in response
    assert "GET /static/locked.txt → 403" in server.log
    assert not any("connection ended" in line for line in server.log)
    return statuses(response)


def absolute_form(server, site, monkeypatch):
    """Absolute-form targets with broken hosts: 400 (urlsplit used to raise, dropping)."""
    broken = ["http://[/", "http://[", "https://[::1/", "http://]/", "http://[zz]/hello",
              "http://a]b/", "http:///hello", "http://"]
    results = []
    for target in broken:
        response = get(server.address, target)
        results += statuses(response)
        assert statuses(response) == [400], target
    for target in ["http://lab/hello", "https://[::1]:80/hello", "//[/hello"]:
        results += statuses(get(server.address, target))
    assert results[-3:] == [200, 200, 404]  # "//[/hello" is a path here, not a host
    return results


def bare_lf(server, site, monkeypatch):
    """A bare LF anywhere in a CRLF head: 400 at once, not a close after the idle timeout."""
    heads = [b"GET /hello HTTP/1.1\r\nHost: lab\n\r\n",
             b"GET /hello HTTP/1.1\nHost: lab\r\n\r\n",
             b"GET /hello HTTP/1.1\r\nHost: lab\r\nX-A: 1\n\r\n",
             b"GET /hello HTTP/1.1\r\nHost: lab\r\n\n",
             b"GET /hello HTTP/1.1\r\nHost: lab\nX-A: 1",          # no end of head at all
             b"GET /hello\n"]
    results = []
    for head in heads:
        status, body = one_response(server.address, head)  # no half-close: no EOF to help
        results.append(status)
        assert status == 400 and b"bare \\n" in body, head
    return results


def redirect_targets(server, site, monkeypatch):
    """Header injection, network-path tricks and non-Latin-1 targets on /redirect."""
    refused = ["/hello%0d%0aSet-Cookie:%20injected=1", "/%0aX-Injected:%201", "/a%0d",
               "%0d%0a%0d%0aHTTP/1.1%20200%20OK", "//evil.example/", "/%5Cevil.example",
               "%5C%5Cevil.example", "/%09/evil.example", "%09//evil.example",
               "%20//evil.example", "http://evil.example/", "https:evil.example",
               "javascript:alert(1)", "/%00", "/%7F", "evil.example", ""]
    allowed = {"/hello": "/hello", "/caf%C3%A9": "/caf%C3%A9", "/%E2%82%AC": "/%E2%82%AC",
               "/%F0%9F%98%80": "/%F0%9F%98%80", "/%FF": "/%EF%BF%BD", "/a%20b": "/a%20b",
               "/%252F%252Fx": "/%2F%2Fx", "/a?b=c%26d=e": "/a?b=c&d=e"}
    results = []
    for to in refused + list(allowed):
        response = get(server.address, f"/redirect?to={to}")
        head = response.split(b"\r\n\r\n", 1)[0]
        results += statuses(response)
        assert len(statuses(response)) == 1, f"{to}: split into {statuses(response)}"
        assert b"injected" not in head.lower(), f"{to}: a header was injected"
        if to in allowed:
            location = re.search(rb"\r\nLocation: ([^\r\n]*)", head).group(1).decode("ascii")
            assert statuses(response) == [302] and location == allowed[to], to
        else:
            assert statuses(response) == [400] and b"Location" not in head, to
    return results


def chunked_trailers(server, site, monkeypatch):
    """Trailers and chunk lines are bounded like headers: 431/400/413, not buffered."""
    start = b"POST /echo HTTP/1.1\r\nHost: lab\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    cases = {
        start + b"0\r\nX-T: 1\r\n\r\n": 200,
        start + b"0\r\n" + b"X-T: y\r\n" * 20_000 + b"\r\n": 431,   # endless trailer lines
        start + b"0\r\nX-T: " + b"y" * 100_000: 431,                # one line, never ended
        start + b"0\r\nX-T: " + b"y" * 20_000 + b"\r\n\r\n": 431,   # one line, too long
        start + b"1;" + b"x" * 2000 + b"\r\na\r\n0\r\n\r\n": 400,   # a long chunk extension
        start + b"%x\r\n" % (MAX_BODY + 1): 413,                    # announced too large
    }
    results = []
    for raw, status in cases.items():
        response = exchange(server.address, raw)
        results += statuses(response)
        assert statuses(response) == [status], raw[60:100]
    return results


def deep_json(server, site, monkeypatch):
    """Deeply nested JSON is the client's error (400), never a 500 that raises in the cell."""
    too_deep = f"nested more than {MAX_JSON_DEPTH} levels".encode()
    bodies = {
        "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH: (200, b'"received": [[['),
        "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1): (400, too_deep),
        '{"a":' * 5000 + "1" + "}" * 5000: (400, too_deep),
        "[" * 500_000: (400, too_deep),           # past the parser's own recursion limit
        "[" * 100_000 + "]" * 100_000: (400, too_deep),
        "1" * 5000: (400, b"not JSON"),           # more digits than int() converts
    }
    results = []
    for body, (status, says) in bodies.items():
        raw = (f"POST /json HTTP/1.1\r\nHost: lab\r\nContent-Length: {len(body)}\r\n"
               f"Connection: close\r\n\r\n{body}").encode()
        response = exchange(server.address, raw)
        results += statuses(response)
        assert statuses(response) == [status] and says in response, body[:20]
    return results


def bytes_streamed(server, site, monkeypatch):
    """/bytes?n=100000000 × 4 at once: pieces sent as they are made, not 400 MB built."""
    n, clients, read_each = 100_000_000, 4, 1 << 20
    results = []

    def partial_read():
        with socket.create_connection(server.address, timeout=CLIENT_TIMEOUT) as s:
            s.sendall(f"GET /bytes?n={n} HTTP/1.1\r\nHost: lab\r\n\r\n".encode())
            got, first = 0, b""
            while got < read_each and (chunk := s.recv(65536)):
                first = first or chunk
                got += len(chunk)
            results.append((statuses(first), f"Content-Length: {n}\r\n".encode() in first))

    tracing = tracemalloc.is_tracing()  # (someone ran us under -X tracemalloc: share it)
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        before = tracemalloc.get_traced_memory()[0]
        readers = [threading.Thread(target=partial_read) for _ in range(clients)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(30)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        if not tracing:
            tracemalloc.stop()
    assert results == [([200], True)] * clients
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MiB allocated for {clients} × 1 MiB read"
    # the pieces join into one exact pattern; HEAD gives the length without a body
    whole = exchange(server.address, b"GET /bytes?n=200003 HTTP/1.1\r\nHost: lab\r\n"
                                     b"Connection: close\r\n\r\n").split(b"\r\n\r\n", 1)[1]
    assert whole == (b"abcdefghijklmnopqrstuvwxyz" * 7693)[:200_003]
    head = exchange(server.address, f"HEAD /bytes?n={n} HTTP/1.1\r\nHost: lab\r\n"
                                    f"Connection: close\r\n\r\n".encode())
    assert f"Content-Length: {n}\r\n".encode() in head and head.endswith(b"\r\n\r\n")
    return [s for (codes, _) in results for s in codes] + [200] + statuses(head)


def huge_heads(server, site, monkeypatch):
    """Too large for the limits: refused fast with the precise status and a reason."""
    host = b"Host: lab\r\n"
    cases = {
        b"GET /hello HTTP/1.1\r\n" + host + b"X-Big: " + b"a" * (1 << 20) + b"\r\n\r\n": 431,
        b"GET /hello HTTP/1.1\r\n" + host + b"X: y\r\n" * 10_000 + b"\r\n": 431,
        b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\n" + host + b"\r\n": 414,
        b"\x16\x03\x01" + b"\xff" * (MAX_REQUEST_LINE + 100): 400,  # no line, not HTTP
        b"GET /hello HTTP/1.1\r\n" + host + b"Content-Length: 1" + b"0" * 30 + b"\r\n\r\n": 413,
        b"GET /hello HTTP/1.1\r\n" + host + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n": 413,
        b"POST /echo HTTP/1.1\r\n" + host + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1)
        + b"x" * (MAX_BODY + 1): 413,
    }
    results = []
    for raw, status in cases.items():
        response = exchange(server.address, raw)
        results += statuses(response)
        assert statuses(response) == [status], raw[:40]
        assert b"larger" in response or b"longer" in response, response[-120:]
    return results


def pipelined(server, site, monkeypatch):
    """2,000 requests in one send, answered in order on one connection."""
    one = b"GET /hello HTTP/1.1\r\nHost: lab\r\n\r\n"
    response = exchange(server.address, one * 2000 + b"GET /bytes?n=7 HTTP/1.1\r\nHost: lab\r\n"
                                                      b"Connection: close\r\n\r\n")
    assert statuses(response) == [200] * 2001 and response.endswith(b"\r\n\r\nabcdefg")
    return statuses(response)


def stalled(server, site, monkeypatch):
    """A request that stops half-way gets 408 after the idle timeout; an idle connection
    is closed quietly."""
    monkeypatch.setattr(labkit.servers.http, "IDLE_TIMEOUT", 0.3)
    results = []
    for raw in [b"GET /hello HTTP/1.1\r\nHost:", b"POST /echo HTTP/1.1\r\nHost: lab\r\n"
                b"Content-Length: 10\r\n\r\nabc", b"POST /echo HTTP/1.1\r\nHost: lab\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n5\r\nab"]:
        status, body = one_response(server.address, raw)
        results.append(status)
        assert status == 408 and b"stalled" in body
    assert exchange(server.address, b"", half_close=False) == b""
    return results


def reset(address, data: bytes) -> None:
    """Connect, send ``data``, then abort the connection (RST instead of FIN)."""
    s = socket.create_connection(address, timeout=CLIENT_TIMEOUT)
    s.sendall(data)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def resets(server, site, monkeypatch):
    """90 clients that reset (RST) at once, mid-head or mid-response: no error, nothing
    left open."""
    sends = [b"", b"GET /hel", b"GET /bytes?n=10000000 HTTP/1.1\r\nHost: lab\r\n\r\n"]
    for i in range(90):
        reset(server.address, sends[i % 3])
    assert eventually(lambda: server.connections_served >= 90) and server.wait_idle(10)
    return ["reset"] * 90


def mutations(server, site, monkeypatch):
    """300 valid requests with random bytes flipped, inserted or deleted (seeded): each
    gets a well-formed answer, none a 500."""
    rng = random.Random(8)
    bases = [b"GET /hello HTTP/1.1\r\nHost: lab\r\n\r\n",
             b"POST /json HTTP/1.1\r\nHost: lab\r\nContent-Length: 8\r\n\r\n{\"n\": 3}",
             b"POST /echo HTTP/1.1\r\nHost: lab\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"3\r\nabc\r\n0\r\n\r\n",
             b"GET /static/index.html HTTP/1.1\r\nHost: lab\r\n\r\n",
             b"GET /redirect?to=/hello&code=301 HTTP/1.1\r\nHost: lab\r\n\r\n",
             b"GET /bytes?n=100 HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"]
    results = []
    for i in range(300):
        raw = bytearray(bases[i % len(bases)])
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(raw))
            action = rng.randrange(3)
            if action == 0:
                raw[at] = rng.randrange(256)
            elif action == 1:
                raw.insert(at, rng.choice(b"\r\n :/%?&=0123456789\x00\x7f\xff"))
            else:
                del raw[at]
        response = exchange(server.address, bytes(raw))
        codes = statuses(response)
        results += codes[:1]
        assert codes and response.startswith(b"HTTP/1.1 "), bytes(raw)
        assert 500 not in codes, bytes(raw)
    return results


FAMILIES = [static_traversal, long_names, unreadable_file, absolute_form, bare_lf,
            redirect_targets, chunked_trailers, deep_json, bytes_streamed, huge_heads,
            pipelined, stalled, resets, mutations]


@pytest.mark.parametrize("family", FAMILIES, ids=[f.__name__ for f in FAMILIES])
def test_family_then_healthy(family, site, monkeypatch, capsys):
    with HTTPServer(static=site / "site") as server:
        fds, threads = fd_count(), threading.active_count()
        started = time.perf_counter()
        results = family(server, site, monkeypatch)
        monkeypatch.undo()  # health is checked with the real file system and timeouts
        health = check_health(server, fds, threads)
    with capsys.disabled():
        print(f"\n{family.__name__} | {len(results)} requests | "
              f"{dict(sorted(collections.Counter(results).items()))} | {health} "
              f"({time.perf_counter() - started:.1f}s)", end="")


# -- TLS: a client that never finishes its handshake ------------------------------
def test_tls_silent_clients_are_let_go(monkeypatch, capsys):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    monkeypatch.setattr(labkit.servers.tcp, "HANDSHAKE_TIMEOUT", 0.3)
    sends = [b"", b"", b"", b"\x16\x03\x01\x40\x00" + b"\x01" * 100,  # silent; half a hello
             b"GET /hello HTTP/1.1\r\nHost: lab\r\n\r\n"]                # plain HTTP
    with HTTPServer(ssl_context=server_ctx) as server:
        fds, threads = fd_count(), threading.active_count()
        for data in [b"", b"\x16\x03\x01\x00\x05hello"] * 20:  # reset before the handshake
            reset(server.address, data)
        assert eventually(lambda: server.connections_served >= 40) and server.wait_idle(10)
        clients = [socket.create_connection(server.address, timeout=CLIENT_TIMEOUT)
                   for _ in sends]
        ended = []
        for client, data in zip(clients, sends, strict=True):
            client.sendall(data)
        for client in clients:  # each is let go by the server, well before IDLE_TIMEOUT
            try:
                ended.append(client.recv(100))  # b"" (closed) or a TLS alert (0x15)
            except ConnectionResetError:
                ended.append(b"(reset)")
            client.close()
        assert all(e in (b"", b"(reset)") or e.startswith(b"\x15") for e in ended), ended
        assert server.tls_errors.count("TimeoutError: no TLS handshake within 0.3s") == 4

        def https_hello():
            conn = http.client.HTTPSConnection(*server.address, context=client_ctx, timeout=5)
            conn.request("GET", "/hello")
            assert conn.getresponse().read() == b"Hello, world!\n"
            conn.close()

        health = check_health(server, fds, threads, client=https_hello)
    with capsys.disabled():
        print(f"\ntls_silent_clients | {len(sends)} + 40 reset connections | all let go "
              f"| {health}", end="")


# -- what must keep holding --------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.1", "10.0.0.1", "localhost",
                                  "example.com", ""])
def test_non_loopback_hosts_are_refused(host):
    with pytest.raises(ValueError, match="loopback"):
        HTTPServer(host=host)
