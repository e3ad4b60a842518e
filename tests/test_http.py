"""labkit.servers.http: HTTPServer endpoints, robustness against garbage, TLS, WSGI serving."""

import http.client
import http.server
import json
import os
import random
import select
import socket
import ssl
import time
import urllib.error
import urllib.request

import pytest

from labkit import HTTPServer, ServerError
from labkit.servers.http import MAX_BODY, MAX_HEAD

CLIENT_TIMEOUT = 5.0


def exchange(address, raw: bytes) -> bytes:
    """Send raw bytes, half-close, read until the server closes."""
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as s:
        s.sendall(raw)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.fixture
def server(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<h1>hi</h1>\n")
    (tmp_path / "secret.txt").write_text("top secret\n")
    with HTTPServer(static=tmp_path / "site") as srv:
        yield srv


def get(server, path, method="GET", **kw):
    conn = http.client.HTTPConnection(*server.address, timeout=CLIENT_TIMEOUT)
    try:
        conn.request(method, path, **kw)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


# -- endpoints -------------------------------------------------------------------
def test_hello_and_index(server):
    assert get(server, "/hello")[::2] == (200, b"Hello, world!\n")
    status, headers, body = get(server, "/")
    assert status == 200 and b"/slow" in body
    assert headers["Content-Length"] == str(len(body))


def test_echo_returns_the_request_exactly_as_received(server):
    raw = b"GET /echo?x=1 HTTP/1.1\r\nHost: lab\r\nX-Odd-Case: yes \r\nConnection: close\r\n\r\n"
    response = exchange(server.address, raw)
    assert response.split(b"\r\n\r\n", 1)[1] == raw


def test_echo_shows_a_chunked_request_body_as_sent(server):
    raw = (b"POST /echo HTTP/1.1\r\nHost: lab\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
    assert exchange(server.address, raw).split(b"\r\n\r\n", 1)[1] == raw


def test_chunked_response_framing(server):
    raw = exchange(server.address, b"GET /chunked?n=2 HTTP/1.1\r\nHost: lab\r\n"
                                   b"Connection: close\r\n\r\n")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    assert body == b"d\r\nchunk 1 of 2\n\r\nd\r\nchunk 2 of 2\n\r\n0\r\n\r\n"


@pytest.mark.parametrize("n", [0, 1, 100_000])
def test_bytes_gives_exactly_n(server, n):
    status, headers, body = get(server, f"/bytes?n={n}")
    assert status == 200 and len(body) == n == int(headers["Content-Length"])


def test_status_codes_and_no_body_codes(server):
    assert get(server, "/status/418")[0] == 418
    status, headers, body = get(server, "/status/204")
    assert (status, body) == (204, b"") and "Content-Length" not in headers
    assert get(server, "/status/99")[0] == 400
    assert get(server, "/nothing-here")[0] == 404


def test_redirect_and_urllib_follows_it(server):
    status, headers, _ = get(server, "/redirect?to=/hello")
    assert status == 302 and headers["Location"] == "/hello"
    assert get(server, "/redirect?to=http://evil.example/")[0] == 400
    with urllib.request.urlopen(server.url + "/redirect?to=/hello", timeout=5) as resp:
        assert resp.url.endswith("/hello") and resp.read() == b"Hello, world!\n"


def test_head_has_headers_but_no_body(server):
    status, headers, body = get(server, "/hello", method="HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", "14")


def test_post_json(server):
    status, headers, body = get(server, "/json", method="POST", body=json.dumps({"n": 3}),
                                headers={"Content-Type": "application/json"})
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["received"] == {"n": 3}
    assert get(server, "/json", method="POST", body="{nope")[0] == 400
    assert get(server, "/json")[0] == 405
    assert get(server, "/hello", method="DELETE")[0] == 405


def test_slow_waits(server):
    started = time.perf_counter()
    assert get(server, "/slow?delay=0.2")[0] == 200
    assert time.perf_counter() - started >= 0.2
    assert get(server, "/slow?delay=100")[0] == 400


def test_keep_alive_three_requests_one_connection(server):
    conn = http.client.HTTPConnection(*server.address, timeout=CLIENT_TIMEOUT)
    for _ in range(3):
        conn.request("GET", "/hello")
        assert conn.getresponse().read() == b"Hello, world!\n"
    conn.close()
    for _ in range(3):
        assert get(server, "/hello", headers={"Connection": "close"})[0] == 200
    assert server.wait_idle()
    assert server.connections_served == 4 and server.requests_served == 6


def test_pipelined_requests_in_one_send(server):
    one = b"GET /hello HTTP/1.1\r\nHost: lab\r\n\r\n"
    raw = exchange(server.address, one * 2 + b"GET /hello HTTP/1.1\r\nHost: lab\r\n"
                                              b"Connection: close\r\n\r\n")
    assert raw.count(b"HTTP/1.1 200 OK") == 3


# -- static files ------------------------------------------------------------------
def test_static_file(server):
    status, headers, body = get(server, "/static/index.html")
    assert (status, body) == (200, b"<h1>hi</h1>\n")
    assert headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("path", [
    "/static/../secret.txt", "/static/../../etc/passwd", "/static/%2e%2e/secret.txt",
    "/static/%2e%2e%2fsecret.txt", "/static/..%2f..%2fetc%2fpasswd",
    "/static/%2E%2E%2F%2E%2E%2Fetc/passwd", "/static//etc/passwd",
])
def test_static_refuses_paths_outside_its_root(server, path):
    status, _, body = get(server, path)
    assert status == 403 and b"outside the static directory" in body and b"secret" not in body[-12:]


def test_static_double_encoding_is_just_a_missing_file(server):
    assert get(server, "/static/%252e%252e%252fsecret.txt")[0] == 404


def test_static_files_are_streamed_and_closed(server, tmp_path):
    big = bytes(range(256)) * 1000  # 256 kB: sent in pieces
    (tmp_path / "site" / "big.bin").write_bytes(big)
    fds = len(os.listdir("/proc/self/fd"))
    status, headers, body = get(server, "/static/big.bin")
    assert (status, body, headers["Content-Length"]) == (200, big, str(len(big)))
    status, headers, body = get(server, "/static/big.bin", method="HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", str(len(big)))
    assert server.wait_idle() and len(os.listdir("/proc/self/fd")) <= fds  # files closed


def test_static_must_not_expose_the_users_files(tmp_path, monkeypatch):
    home = tmp_path / "home" / "ada"
    (home / "public").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(ValueError, match=r"^static must be a folder made for the lab's files "
                                         r".*would serve the whole file system"):
        HTTPServer(static="/")
    with pytest.raises(ValueError, match="would serve your home directory"):
        HTTPServer(static=home)
    with pytest.raises(ValueError, match="above your home directory"):
        HTTPServer(static=tmp_path / "home")
    with pytest.raises(ValueError, match="above your home directory"):
        HTTPServer(static=home / "public" / ".." / "..")
    assert HTTPServer(static=home / "public").static == (home / "public").resolve()


# -- garbage in, 400 out, and the server keeps serving -------------------------------
VALID = b"GET /hello HTTP/1.1\r\nHost: lab\r\n\r\n"


def malformed_requests(count: int, seed: int = 4) -> list[tuple[str, bytes]]:
    """``count`` requests that are each malformed, in several families, seeded."""
    rng = random.Random(seed)

    def token(n):
        return bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(n))

    def junk():
        return bytes([rng.randrange(0, 32)]) + rng.randbytes(rng.randrange(0, 200))

    families = {
        "binary junk": junk,
        "junk head": lambda: junk().replace(b"\r\n\r\n", b"") + b"\r\n\r\n",
        "bare LF": lambda: b"GET /" + token(5) + b" HTTP/1.1\nHost: lab\n\n",
        "no Host": lambda: b"GET /" + token(5) + b" HTTP/1.1\r\n\r\n",
        "two spaces": lambda: b"GET  /" + token(3) + b" HTTP/1.1\r\nHost: lab\r\n\r\n",
        "missing version": lambda: b"GET /" + token(4) + b"\r\nHost: lab\r\n\r\n",
        "bad version": lambda: b"GET / HTTP/" + token(3) + b"\r\nHost: lab\r\n\r\n",
        "lower-case version": lambda: b"GET / http/1.1\r\nHost: lab\r\n\r\n",
        "bad method": lambda: b"G(" + token(2) + b") / HTTP/1.1\r\nHost: lab\r\n\r\n",
        "target without /": lambda: b"GET " + token(6) + b" HTTP/1.1\r\nHost: lab\r\n\r\n",
        "control in target": lambda: b"GET /a\x01" + token(3) + b" HTTP/1.1\r\nHost: lab\r\n\r\n",
        "header without colon": lambda: VALID[:-2] + token(8) + b"\r\n\r\n",
        "space before colon": lambda: VALID[:-2] + b"X-" + token(3) + b" : 1\r\n\r\n",
        "empty header name": lambda: VALID[:-2] + b": " + token(3) + b"\r\n\r\n",
        "obs-fold": lambda: VALID[:-2] + b"X-A: 1\r\n  " + token(4) + b"\r\n\r\n",
        "NUL in value": lambda: VALID[:-2] + b"X-A: a\x00" + token(2) + b"\r\n\r\n",
        "two Hosts": lambda: VALID[:-2] + b"Host: " + token(4) + b"\r\n\r\n",
        "CL not a number": lambda: VALID[:-2] + b"Content-Length: " + token(3) + b"\r\n\r\n",
        "CL negative": lambda: VALID[:-2] + b"Content-Length: -%d\r\n\r\n" % rng.randrange(1, 99),
        "CL conflicting": lambda: VALID[:-2] + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "CL too large": lambda: VALID[:-2] + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1),
        "CL short body": lambda: VALID[:-2] + b"Content-Length: 50\r\n\r\n" + token(10),
        "CL and TE": lambda: VALID[:-2] + b"Content-Length: 3\r\nTransfer-Encoding: chunked"
                                          b"\r\n\r\n0\r\n\r\n",
        "TE unknown": lambda: VALID[:-2] + b"Transfer-Encoding: " + token(4) + b"\r\n\r\nab",
        "bad chunk size": lambda: VALID[:-2] + b"Transfer-Encoding: chunked\r\n\r\nzz"
                                              + token(2) + b"\r\n",
        "chunk without CRLF": lambda: VALID[:-2] + b"Transfer-Encoding: chunked\r\n\r\n"
                                                  b"3\r\nabcXY0\r\n\r\n",
        "huge header": lambda: VALID[:-2] + b"X-Big: " + b"a" * (MAX_HEAD + rng.randrange(99))
                                           + b"\r\n\r\n",
        "huge target": lambda: b"GET /" + b"a" * (MAX_HEAD + 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "endless head": lambda: b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_HEAD // 6 + 10),
        "closed mid-head": lambda: b"GET /hello HTTP/1.1\r\nHost: lab\r\n",
    }
    names = sorted(families)
    return [(name, families[name]()) for name in (names[i % len(names)] for i in range(count))]


# Families refused with a more precise status than 400 (the rest: 400).
TOO_LARGE = {"CL too large": 413, "huge target": 414, "huge header": 431, "endless head": 431}


def test_fuzz_1000_malformed_requests_then_a_valid_one(server, capsys):
    cases = malformed_requests(1000)
    started = time.perf_counter()
    statuses: dict[int, int] = {}
    wrong = []
    for family, raw in cases:
        assert time.perf_counter() - started < 120, "fuzz loop ran out of its time budget"
        response = exchange(server.address, raw)
        status = status_of(response) if response.startswith(b"HTTP/1.1 ") else None
        statuses[status] = statuses.get(status, 0) + 1
        if status != TOO_LARGE.get(family, 400):
            wrong.append((family, raw[:60], response[:60]))
    assert not wrong, f"not answered 400 (or 413/414/431 when too large): {wrong[:5]}"
    assert get(server, "/hello")[::2] == (200, b"Hello, world!\n")
    refused = sum(entry.startswith("(bad request) → 4") for entry in server.log)
    with capsys.disabled():
        print(f"\nfuzz: {len(cases)} malformed requests in "
              f"{len({f for f, _ in cases})} families → {statuses}; server logged "
              f"{refused} refusals; then a valid GET → 200 "
              f"({time.perf_counter() - started:.1f}s)")
    expected = {400: 0, 413: 0, 414: 0, 431: 0}
    for family, _ in cases:
        expected[TOO_LARGE.get(family, 400)] += 1
    assert refused == 1000 and statuses == expected


def test_unsupported_major_version_is_505(server):
    assert status_of(exchange(server.address, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")) == 505


def test_stop_interrupts_a_slow_request():
    with HTTPServer() as srv:
        s = socket.create_connection(srv.address, timeout=CLIENT_TIMEOUT)
        s.sendall(b"GET /slow?delay=9 HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.perf_counter()
    assert time.perf_counter() - started < 3
    s.close()


def test_endpoint_bug_is_500_and_raised_in_the_cell(monkeypatch):
    def broken(self, text):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(HTTPServer, "_status", broken)
    with pytest.raises(ServerError, match="ZeroDivisionError"):
        with HTTPServer() as srv:
            assert get(srv, "/status/200")[0] == 500
            assert get(srv, "/hello")[0] == 200


# -- rules with no exceptions, and deadlines -------------------------------------------
def test_transfer_encoding_in_http_1_0_is_400_and_nothing_after_it_is_served(server):
    """RFC 9112 §6.1: the framing is faulty; a pipelined request after it used to get 418."""
    raw = (b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n"
           b"\r\n0\r\n\r\nGET /status/418 HTTP/1.1\r\nHost: lab\r\n\r\n")
    answer = exchange(server.address, raw)
    assert answer.count(b"HTTP/1.1 ") == 1 and status_of(answer) == 400, answer
    assert b"Transfer-Encoding in an HTTP/1.0 request" in answer


def test_a_bare_lf_in_a_chunk_extension_is_400(server):
    raw = (b"POST /echo HTTP/1.1\r\nHost: lab\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;a\nb\r\nhello\r\n0\r\n\r\n")
    answer = exchange(server.address, raw)
    assert status_of(answer) == 400 and b"bare \\r, \\n" in answer, answer


def test_a_request_head_has_one_deadline_however_it_trickles(monkeypatch):
    """A byte every 0.1 s never trips the idle timeout; the head's own deadline does, long
    before the whole head has come (the server answers, then drains what still trickles in,
    so the client stops sending once the answer is there to read)."""
    from labkit.servers import http as http_module

    monkeypatch.setattr(http_module, "HEAD_TIMEOUT", 0.5)
    head = b"GET /hello HTTP/1.1\r\nHost: lab\r\nX-Slow: " + b"x" * 100   # 13 s at 0.1 s a byte
    sent = 0
    with HTTPServer() as srv, socket.create_connection(srv.address, timeout=5) as s:
        for byte in head:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break
            sent += 1
            if select.select([s], [], [], 0.1)[0]:   # the answer is in: stop trickling
                break
        answer = s.recv(1000)
    assert status_of(answer) == 408 and b"did not arrive within 0.5 s" in answer, answer
    assert sent < len(head) // 2, (f"the head deadline is 0.5 s, yet the client sent {sent} "
                                   f"of {len(head)} bytes, one per 0.1 s, before the answer")
    assert srv.errors == []


def test_the_log_is_bounded_and_says_how_much_it_dropped(monkeypatch, caplog):
    from labkit.servers import http as http_module

    monkeypatch.setattr(http_module, "LOG_LIMIT", 2)
    with HTTPServer() as srv:
        for _ in range(5):
            assert get(srv, "/hello")[0] == 200
    assert srv.log == ["GET /hello → 200"] * 2 and srv.log.dropped == 3
    assert "HTTPServer 'server': .log keeps its first 2 entries" in caplog.text


# -- TLS ---------------------------------------------------------------------------
def test_https_with_an_ssl_context():
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with HTTPServer(ssl_context=server_ctx) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        with urllib.request.urlopen(srv.url + "/hello", context=client_ctx, timeout=5) as r:
            assert r.read() == b"Hello, world!\n"
        conn = http.client.HTTPSConnection(*srv.address, context=client_ctx, timeout=5)
        for _ in range(2):  # keep-alive over TLS
            conn.request("GET", "/chunked?n=2")
            assert conn.getresponse().read() == b"chunk 1 of 2\nchunk 2 of 2\n"
        # a client that does not trust the CA: its handshake fails, the server carries on
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(srv.url + "/hello", timeout=5)
        conn.request("GET", "/hello")
        assert conn.getresponse().read() == b"Hello, world!\n"
        conn.close()
        # plain HTTP to the HTTPS port is garbage to it, not a server error
        try:
            exchange(srv.address, VALID)
        except ConnectionResetError:
            pass  # the server may reset: it closed with our bytes unread
        assert srv.wait_handshakes(4, timeout=10)  # failures seen while stopping are not kept
    assert len(srv.tls_errors) == 2   # the untrusting client, the plain HTTP one (as TLSServer)
    assert srv.connections_served == 4
