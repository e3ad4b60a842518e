import errno
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from handlers import OutOfThreads, serve_until_stopped, ws_echo

from labkit import ServerError, TCPServer, UDPServer, load


def test_tcp_server_is_ready_when_enter_returns():
    with TCPServer("echo") as server:
        assert server.host == "127.0.0.1" and server.port > 0
        with socket.create_connection(server.address, timeout=2) as s:
            s.sendall(b"hello")
            assert s.recv(100) == b"hello"


def test_upper_handler_and_many_clients():
    with TCPServer("upper") as server:
        clients = [socket.create_connection(server.address, timeout=2) for _ in range(5)]
        for i, c in enumerate(clients):
            c.sendall(f"client {i}".encode())
        replies = [c.recv(100) for c in clients]
        for c in clients:
            c.close()
    assert replies == [f"CLIENT {i}".encode() for i in range(5)]
    assert server.connections_served == 5


def test_exit_closes_a_connection_the_client_still_holds():
    with TCPServer("echo") as server:
        client = socket.create_connection(server.address, timeout=2)
        client.sendall(b"x")
        assert client.recv(10) == b"x"
        started = time.monotonic()
    elapsed = time.monotonic() - started
    assert client.recv(10) == b""  # the server shut the connection down
    client.close()
    assert elapsed < 2, f"stopping took {elapsed:.2f}s"


def test_handler_error_is_raised_in_the_owner():
    def broken(conn, addr):
        conn.recv(10)
        raise ZeroDivisionError("handler bug")

    with pytest.raises(ServerError, match="ZeroDivisionError: handler bug") as info:
        with TCPServer(broken) as server:
            with socket.create_connection(server.address, timeout=2) as s:
                s.sendall(b"go")
                assert s.recv(10) == b""  # the server closed after the error
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_custom_handler_gets_socket_and_address():
    seen = {}

    def greet(conn, addr):
        seen["addr"] = addr
        conn.sendall(b"welcome\n")

    with TCPServer(greet) as server:
        with socket.create_connection(server.address, timeout=2) as s:
            assert s.recv(100) == b"welcome\n"
            port = s.getsockname()[1]
        assert server.wait_idle(2)
    assert seen["addr"] == ("127.0.0.1", port)


def test_address_outside_with_block_is_an_error():
    server = TCPServer()
    with pytest.raises(RuntimeError, match="use it in a `with` block"):
        _ = server.address


def test_udp_echo_and_ipv6_loopback():
    with UDPServer("echo") as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(b"ping", server.address)
        assert s.recvfrom(100)[0] == b"ping"
    if socket.has_ipv6:
        with TCPServer("echo", host="::1") as server:
            with socket.create_connection(server.address, timeout=2) as s:
                s.sendall(b"six")
                assert s.recv(10) == b"six"


def test_udp_handler_error_does_not_stop_the_server():
    def picky(data, addr):
        if data == b"bad":
            raise ValueError("garbage")
        return b"ok"

    with pytest.raises(ServerError, match="garbage"):
        with UDPServer(picky) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(b"bad", server.address)
            s.sendto(b"good", server.address)
            assert s.recvfrom(100)[0] == b"ok"


def test_stuck_handler_is_reported_not_hung(monkeypatch):
    from labkit.servers import base as _servers

    monkeypatch.setattr(_servers, "JOIN_TIMEOUT", 0.2)
    running, release = threading.Event(), threading.Event()

    def stuck(conn, addr):
        running.set()
        release.wait(5)  # ignores its connection closing

    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"did not finish within 0\.2s"):
        with TCPServer(stuck) as server:
            socket.create_connection(server.address, timeout=2).close()
            assert running.wait(2)
    release.set()
    assert time.monotonic() - started < 3


def test_an_error_after_stop_is_logged_not_lost(monkeypatch, caplog):
    from labkit.servers import base as _servers

    monkeypatch.setattr(_servers, "JOIN_TIMEOUT", 0.2)
    running, release = threading.Event(), threading.Event()

    def late(conn, addr):
        running.set()
        release.wait(5)
        raise KeyError("too late to raise in the cell")

    with pytest.raises(RuntimeError, match="did not finish"):
        with TCPServer(late, name="late") as server:
            client = socket.create_connection(server.address, timeout=2)
            assert running.wait(2)
    release.set()
    for thread in [t for t in threading.enumerate() if t.name == "late-_serve"]:
        thread.join(5)
    client.close()
    assert [type(e) for e in server.errors] == [KeyError]
    assert "late handler raised KeyError after late stopped" in caplog.text


def test_stop_gives_all_stuck_handlers_one_deadline_not_one_each(monkeypatch):
    from labkit.servers import base as _servers

    monkeypatch.setattr(_servers, "JOIN_TIMEOUT", 0.2)
    release = threading.Event()
    running = threading.Semaphore(0)

    def stuck(conn, addr):
        running.release()
        release.wait(30)  # ignores its connection closing

    server = TCPServer(stuck)
    try:
        with server:
            clients = [socket.create_connection(server.address, timeout=5) for _ in range(30)]
            assert all(running.acquire(timeout=10) for _ in clients)
            started = time.monotonic()
            with pytest.raises(RuntimeError, match=r"30 handler thread\(s\).*within 0.2s"):
                server.stop()
            elapsed = time.monotonic() - started
    finally:
        release.set()
        for c in clients:
            c.close()
    assert elapsed < 3, f"one deadline for all 30 (0.2 s), not 0.2 s each (6 s): {elapsed:.1f}s"


def test_finished_connection_threads_are_not_kept():
    with TCPServer("echo") as server:
        for _ in range(300):
            with socket.create_connection(server.address, timeout=5) as s:
                s.sendall(b"x")
                assert s.recv(1) == b"x"
        assert server.wait_idle(10)
        assert len(server._threads) < 10, "a finished connection's thread must be let go"
        assert server.connections_served == 300


def test_a_thousand_concurrent_clients_are_all_served():
    """The default backlog queues a burst of 1,000 connects (16 left hundreds unserved)."""
    with TCPServer("echo") as server:
        result = load(server, clients=1000, requests=1, hold_open=True, timeout=60)
    assert result.ok, str(result)


def test_an_unexpected_accept_error_surfaces_at_exit(monkeypatch):
    real_accept = socket.socket.accept
    broken, listener = threading.Event(), {}

    def accept(sock):
        if broken.is_set() and sock.fileno() == listener.get("fd"):
            raise OSError(errno.EIO, "simulated accept failure")
        return real_accept(sock)

    monkeypatch.setattr(socket.socket, "accept", accept)
    with pytest.raises(ServerError, match=r"OSError: .*simulated accept failure"):
        with TCPServer("echo", name="flaky") as server:
            listener["fd"] = server._sock.fileno()
            broken.set()
            socket.create_connection(server.address, timeout=5).close()  # wakes accept()
            for loop in [t for t in threading.enumerate() if t.name == "flaky-_accept_loop"]:
                loop.join(10)   # it ends on the error before exit: the error is reported
                assert not loop.is_alive()


def test_out_of_threads_a_connection_waits_for_one_and_is_served(monkeypatch, caplog):
    """It used to be accepted and closed unanswered while the warning said "retrying"."""
    short = OutOfThreads(monkeypatch, "-_serve")
    with pytest.raises(ServerError, match="can't start new thread"):   # reported at exit
        with TCPServer("echo") as server:
            first = socket.create_connection(server.address, timeout=5)
            second = socket.create_connection(server.address, timeout=5)  # in the backlog
            first.sendall(b"one")
            second.sendall(b"two")
            assert short.retried.wait(5)   # tried, and tried again: not dropped
            short.end()                    # a thread can start again: both are served
            assert first.recv(10) == b"one" and second.recv(10) == b"two"
            first.close()
            second.close()
    assert server.connections_queued == 1 and server.connections_served == 2
    assert caplog.text.count("cannot start a thread for a new connection") == 1


def test_a_client_gone_before_accept_is_not_an_error(monkeypatch):
    real_accept = socket.socket.accept
    failures = [OSError(errno.ECONNABORTED, "Software caused connection abort")]

    def accept(sock):
        if failures:
            raise failures.pop()
        return real_accept(sock)

    monkeypatch.setattr(socket.socket, "accept", accept)
    with TCPServer("echo") as server:
        with socket.create_connection(server.address, timeout=5) as s:
            s.sendall(b"x")
            assert s.recv(1) == b"x"
    assert not failures


EMFILE_SCRIPT = textwrap.dedent("""
    import json, logging, os, resource, socket, threading
    from labkit import ServerError, TCPServer

    logged = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record):
            if "cannot take a new connection" in record.getMessage():
                logged.set()

    logging.getLogger("labkit").addHandler(Watch())
    result = {}
    server = TCPServer("echo").__enter__()
    resource.setrlimit(resource.RLIMIT_NOFILE,
                       (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    client = socket.socket()                  # made (and the idna codec loaded) while
    client.settimeout(10)                     # descriptors are still free
    socket.getaddrinfo(*server.address)
    fillers = []
    for _ in range(300):                      # use up every descriptor the limit allows
        try:
            fillers.append(open(os.devnull))
        except OSError:
            break
    client.connect(server.address)            # queued by the kernel, not accepted
    result["logged"] = logged.wait(10)        # the server could not accept() it
    for f in fillers:
        f.close()
    client.sendall(b"still there?")           # descriptors are free again: served
    result["echo"] = client.recv(100).decode()
    client.close()
    try:
        server.__exit__(None, None, None)
        result["exit"] = "no error"
    except ServerError as exc:
        result["exit"] = str(exc)
    print(json.dumps(result))
""")


def test_out_of_file_descriptors_is_logged_retried_and_reported_at_exit():
    done = subprocess.run([sys.executable, "-c", EMFILE_SCRIPT], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["logged"] and result["echo"] == "still there?"
    assert "Too many open files" in result["exit"], result["exit"]


def test_udp_reply_too_big_is_refused_logged_and_the_server_keeps_serving(caplog):
    def amplify(data, addr):
        return data * 100 if data == b"big" * 1000 else data

    with UDPServer(amplify) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"big" * 1000, server.address)     # 300,000-byte reply: cannot be sent
        s.sendto(b"small", server.address)
        assert s.recvfrom(100)[0] == b"small"
    assert server.replies_refused == 1
    assert "300000-byte reply" in caplog.text and "not sent" in caplog.text


def test_udp_handler_returning_the_wrong_type_is_reported_and_serving_goes_on():
    def wrong(data, addr):
        return "text, not bytes" if data == b"bad" else data

    with pytest.raises(ServerError, match=r"TypeError.*\(and 149 more\)"):
        with UDPServer(wrong) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            for _ in range(150):
                s.sendto(b"bad", server.address)
            s.sendto(b"good", server.address)
            assert s.recvfrom(100)[0] == b"good"     # served after 150 failures, in order
            assert len(server.errors) <= 100          # kept: bounded; the rest counted


@pytest.mark.parametrize("handler", ["echo", "upper"])
def test_a_client_that_resets_is_not_a_server_error(handler):
    with TCPServer(handler) as server:
        for _ in range(20):
            s = socket.create_connection(server.address, timeout=5)
            s.sendall(b"x" * 200_000)     # the answer is never read: closing resets
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        assert server.wait_idle(10)
        with socket.create_connection(server.address, timeout=5) as s:
            s.sendall(b"ok")
            assert s.recv(10) in (b"ok", b"OK")


# -- the contract every lab server shares (labkit.servers.base.LabServer) ----------------
import asyncio  # noqa: E402
import http.server  # noqa: E402
import ssl  # noqa: E402
import urllib.request  # noqa: E402

import tornado.web  # noqa: E402

import labkit  # noqa: E402
from labkit import (  # noqa: E402
    BackgroundServer,
    DNSResolver,
    DNSServer,
    HTTPServer,
    HTTPSServer,
    LocalCA,
    TLSServer,
    TornadoServer,
    UDPRelay,
    WebSocketServer,
    WSGIServer,
    serve_in_thread,
)
from labkit.servers.base import LabServer  # noqa: E402


class TornadoHello(tornado.web.RequestHandler):
    def get(self):
        self.write("hi\n")


def wsgi_hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hi\n"]


@pytest.fixture(scope="module")
def ca():
    with LocalCA() as ca:
        yield ca


# Every public server, made with default arguments (kwargs: extra ones, e.g. port=).
SERVERS = {
    "TCPServer": lambda ca, **kw: TCPServer("echo", **kw),
    "UDPServer": lambda ca, **kw: UDPServer("echo", **kw),
    "TLSServer": lambda ca, **kw: TLSServer(ca, **kw),
    "HTTPServer": lambda ca, **kw: HTTPServer(**kw),
    "HTTPSServer": lambda ca, **kw: HTTPSServer(ca, **kw),
    "WSGIServer": lambda ca, **kw: WSGIServer(wsgi_hello, **kw),
    "WebSocketServer": lambda ca, **kw: WebSocketServer(ws_echo, **kw),
    "TornadoServer": lambda ca, **kw: TornadoServer([("/", TornadoHello)], **kw),
    "BackgroundServer": lambda ca, **kw: BackgroundServer(serve_until_stopped, **kw),
    "DNSServer": lambda ca, **kw: DNSServer({"www.netlab.test": "127.0.0.7"}, **kw),
    "DNSResolver": lambda ca, **kw: DNSResolver(["127.0.0.2"], **kw),   # never asked
    "UDPRelay": lambda ca, **kw: UDPRelay(("127.0.0.1", 9), **kw),   # never sent to
    "SocketServerThread": lambda ca, **kw: serve_in_thread(
        http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)),
}
NOT_SERVERS = {"LocalCA", "SlowReader"}   # context managers in labkit.servers, not servers
UDP = {"UDPServer", "DNSServer", "DNSResolver", "UDPRelay"}


def test_every_public_server_is_a_lab_server_and_is_in_the_contract_table():
    public = {name: getattr(labkit, name) for name in labkit.__all__}
    servers = {name for name, obj in public.items()
               if isinstance(obj, type) and obj.__module__.startswith("labkit.servers.")
               and hasattr(obj, "__enter__") and name not in NOT_SERVERS}
    servers.add(type(SERVERS["SocketServerThread"](None)).__name__)  # what serve_in_thread makes
    assert servers == set(SERVERS)
    for name in servers:
        cls = public.get(name) or type(SERVERS[name](None))
        assert issubclass(cls, LabServer), name


# what each server says it is: its endpoints' transports, as a Capture of it watches them
DECLARED = {"TCPServer": {"tcp"}, "UDPServer": {"udp"}, "TLSServer": {"tcp"},
            "HTTPServer": {"tcp"}, "HTTPSServer": {"tcp"}, "WSGIServer": {"tcp"},
            "WebSocketServer": {"tcp"}, "TornadoServer": {"tcp"}, "BackgroundServer": {"tcp"},
            "DNSServer": {"udp", "tcp"}, "DNSResolver": {"udp", "tcp"},
            "UDPRelay": {"udp"}, "SocketServerThread": {"tcp"}}


@pytest.mark.parametrize("kind", SERVERS)
def test_every_server_declares_its_protocol_and_endpoints(ca, kind):
    server = SERVERS[kind](ca)
    lab = server if isinstance(server, LabServer) else None
    with server:
        endpoints = lab.endpoints
        assert {e.transport for e in endpoints} == DECLARED[kind]
        assert lab.protocol in DECLARED[kind] and endpoints[0].transport == lab.protocol
        assert endpoints[0][1:3] == lab.address and endpoints[0].role == lab.name
        assert all(isinstance(e.speaks, str) and e.speaks for e in endpoints)
        assert (lab.speaks and lab.speaks != "bytes") or kind == "SocketServerThread"
    with pytest.raises(RuntimeError, match="not running"):
        _ = lab.endpoints


@pytest.mark.parametrize("kind", SERVERS)
def test_the_shared_contract(ca, kind):
    """Loopback by default, ready on enter, stop bounded with a client still there, runs once."""
    server = SERVERS[kind](ca)
    lab = server if isinstance(server, LabServer) else None
    with server as entered:
        host, port = lab.address
        assert host == "127.0.0.1" and port > 0 and lab.errors == []
        if kind in UDP:  # ready: the socket is bound, so a datagram waits for it
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"x", (host, port))
        else:            # ready: listening, so a client connects at once
            client = socket.create_connection((host, port), timeout=2)
        with pytest.raises(RuntimeError, match="already started"):
            server.__enter__()
        assert lab.address == (host, port)   # the running one is untouched
        started = time.monotonic()
    # bounded, though a client is still there (a WebSocket one first gets its close grace)
    assert time.monotonic() - started < 3 + getattr(lab, "_grace", lambda: 0)()
    if kind not in UDP:
        client.close()
    assert entered is (server.server if kind == "SocketServerThread" else server)
    with pytest.raises(RuntimeError, match=r"create a new \w+\(\.\.\.\) for another run"):
        server.__enter__()
    assert server.__exit__(None, None, None) is False   # a second exit: already stopped


# -- IPv6 loopback ----------------------------------------------------------------------
def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) here")


@needs_ipv6
def test_tcp_server_on_ipv6_loopback():
    with TCPServer("upper", host="::1") as server:
        assert server.address[0] == "::1"
        with socket.create_connection(server.address, timeout=2) as s:
            s.sendall(b"six")
            assert s.recv(10) == b"SIX"
        assert repr(server) == f"<TCPServer 'server' [::1]:{server.port}>"


@needs_ipv6
@pytest.mark.parametrize("make", [lambda: HTTPServer(host="::1"),
                                  lambda: WSGIServer(wsgi_hello, host="::1")],
                         ids=["HTTPServer", "WSGIServer"])
def test_http_servers_on_ipv6_loopback_bracket_the_url(make):
    with make() as server:
        assert server.url == f"http://[::1]:{server.port}"
        path = "/hello" if isinstance(server, HTTPServer) else "/"
        assert urllib.request.urlopen(server.url + path, timeout=5).status == 200


# -- one TLS path ----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda ca: TLSServer(ca),
                                  lambda ca: HTTPServer(ssl_context=ca.server_context()),
                                  lambda ca: HTTPSServer(ca)],
                         ids=["TLSServer", "HTTPServer(ssl_context)", "HTTPSServer"])
def test_a_failed_handshake_lands_in_tls_errors_on_every_tls_server(ca, make):
    untrusting = ssl.create_default_context()   # does not know the lab CA
    with make(ca) as server:
        with socket.create_connection(server.address, timeout=5) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                untrusting.wrap_socket(raw, server_hostname="localhost")
        assert server.wait_handshakes(1, timeout=5)
    assert server.tls_errors == ["SSLError: TLSV1_ALERT_UNKNOWN_CA"]
    assert server.errors == []                  # the client's doing: nothing raised at exit
    assert getattr(server, "log", []) == []     # and nowhere else


def test_a_handler_error_is_in_errors_on_every_kind_of_server_alike():
    def broken(conn, addr):
        raise KeyError("tcp bug")

    async def ws_broken(ws):
        raise KeyError("ws bug")

    def serve_broken(listener, stop):
        raise KeyError("serve bug")

    with pytest.raises(ServerError, match="tcp bug"):
        with TCPServer(broken) as tcp:
            with socket.create_connection(tcp.address, timeout=5) as s:
                assert s.recv(10) == b""   # the handler ran (and raised): it closed
    with pytest.raises(ServerError, match="serve bug"):
        with BackgroundServer(serve_broken) as background:
            pass

    async def talk(url):
        from websockets.asyncio.client import connect

        async with connect(url) as ws:
            await ws.wait_closed()

    with pytest.raises(ServerError, match="ws bug"):
        with WebSocketServer(ws_broken) as ws_server:
            asyncio.run(asyncio.wait_for(talk(ws_server.url), 10))
    for server in (tcp, background, ws_server):
        assert [type(e) for e in server.errors] == [KeyError]


def free_for_udp_and_tcp() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", 0))
            try:
                tcp.bind(("127.0.0.1", udp.getsockname()[1]))
            except OSError:
                continue   # a TCP connection uses that number: try another
            return udp.getsockname()[1]
    raise RuntimeError("no port free for both UDP and TCP in 50 tries")


def test_dns_server_listens_on_the_port_it_is_given():
    import dnslib

    port = free_for_udp_and_tcp()   # a moment ago (a lesson would use textbook_port)
    with DNSServer({"www.netlab.test": "127.0.0.7"}, port=port) as dns:
        assert dns.address == ("127.0.0.1", port)
        assert {(e.transport, e.port) for e in dns.endpoints} == {("udp", port), ("tcp", port)}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(dnslib.DNSRecord.question("www.netlab.test").pack(), dns.address)
            answer = dnslib.DNSRecord.parse(s.recvfrom(512)[0])
    assert str(answer.rr[0].rdata) == "127.0.0.7"


def test_connections_a_listener_has_not_accepted_are_counted_from_the_kernel():
    from labkit.servers.conversation import connections_not_taken

    net = f"/proc/self/task/{threading.get_native_id()}/net"  # this thread's network
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert connections_not_taken(port, net) == 0, "a listener is not a connection"
        client = socket.create_connection(("127.0.0.1", port), timeout=2)
        assert connections_not_taken(port, net) == 1, "queued, not accepted: still to come"
        client.close()
        assert connections_not_taken(port, net) == 1, "the client closed; accept() has it yet"
        conn, _ = listener.accept()
        conn.close()
        assert connections_not_taken(port, net) == 0, "taken and closed by the server"
    assert connections_not_taken(port, None) == 0, "no table: unknown, counted as none"
