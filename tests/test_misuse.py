"""Misuse gets a clear error, never a hang or a leak: one table per kind of mistake.

Policy (every labkit server): a server object runs once.  Entering it again, while it
runs or after it stopped, raises RuntimeError naming the class and the fix.
"""

import asyncio
import os
import socket
import threading
import time

import pytest
from handlers import serve_until_stopped, ws_echo

from labkit import (
    BackgroundServer,
    DNSServer,
    HTTPServer,
    LocalCA,
    ServerError,
    SlowReader,
    TCPServer,
    TLSServer,
    UDPRelay,
    UDPServer,
    WebSocketServer,
)


@pytest.fixture(scope="module")
def ca():
    with LocalCA() as ca:
        yield ca


# name -> factory(ca) for every kind of server labkit runs
SERVERS = {
    "TCPServer": lambda ca: TCPServer("echo"),
    "UDPServer": lambda ca: UDPServer("echo"),
    "HTTPServer": lambda ca: HTTPServer(),
    "TLSServer": lambda ca: TLSServer(ca),
    "UDPRelay": lambda ca: UDPRelay(("127.0.0.1", 9)),   # never sent to: nothing to reach
    "BackgroundServer": lambda ca: BackgroundServer(serve_until_stopped),
    "DNSServer": lambda ca: DNSServer({"www.netlab.test": "127.0.0.7"}),
    "WebSocketServer": lambda ca: WebSocketServer(ws_echo),
}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("kind", SERVERS)
def test_entering_a_stopped_server_again_is_a_clear_error(ca, kind):
    server = SERVERS[kind](ca)
    with server:
        pass
    threads, fds = threading.active_count(), open_fds()
    with pytest.raises(RuntimeError, match=rf"{kind} '\w+' was already started .*"
                                           rf"create a new {kind}\(\.\.\.\) for another run"):
        server.__enter__()
    assert threading.active_count() <= threads and open_fds() <= fds   # nothing started


@pytest.mark.parametrize("kind", SERVERS)
def test_entering_a_running_server_again_is_an_error_and_leaks_nothing(ca, kind):
    threads, fds = threading.active_count(), open_fds()
    server = SERVERS[kind](ca)
    with server:
        address = server.address
        with pytest.raises(RuntimeError, match="was already started"):
            server.__enter__()
        assert server.address == address     # the running one is untouched
    assert threading.active_count() <= threads and open_fds() <= fds   # exit joined them all


@pytest.mark.parametrize("kind", SERVERS)
def test_exit_without_enter_returns_at_once(ca, kind):
    server = SERVERS[kind](ca)
    assert server.__exit__(None, None, None) is False
    server.stop()


def test_a_websocket_startup_error_always_reaches_enter(monkeypatch):
    """It used to lose a race with the server thread (2 of 20 entries said 'not running')."""
    import websockets.asyncio.server

    async def broken_serve(*args, **kwargs):
        raise OSError("simulated: cannot listen")

    monkeypatch.setattr(websockets.asyncio.server, "serve", broken_serve)
    for _ in range(20):
        server = WebSocketServer(ws_echo)
        with pytest.raises(ServerError, match=r"could not start: simulated: cannot listen"):
            server.__enter__()
        assert server._thread is None


def test_a_slow_reader_is_used_once():
    with TCPServer("echo") as server:
        reader = SlowReader(server, max_bytes=1 << 16)
        with reader:
            pass
        with pytest.raises(RuntimeError, match="already used"):
            reader.__enter__()


def test_a_slow_reader_against_a_server_that_stops_reading_returns():
    release = threading.Event()

    def deaf(conn, addr):
        release.wait(30)  # never reads

    with TCPServer(deaf) as server:
        try:
            with SlowReader(server, quiet=0.2) as slow:
                assert slow.stuck and slow.bytes_sent > 0
        finally:
            release.set()


def test_websocket_exit_is_prompt_with_a_client_that_never_answers_the_close():
    with WebSocketServer(ws_echo) as server:
        raw = socket.create_connection(server.address, timeout=5)
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 101")
        started = time.monotonic()
    elapsed = time.monotonic() - started    # no exception: the client's silence is not a bug
    raw.close()
    assert elapsed < 4.5, f"exit took {elapsed:.1f}s (close_timeout is 1 s)"


def test_websocket_handler_that_ignores_the_close_is_named_and_the_thread_ends(monkeypatch):
    from labkit.servers import base

    monkeypatch.setattr(base, "JOIN_TIMEOUT", 0.5)

    async def deaf(ws):
        await asyncio.sleep(60)   # never looks at its connection

    async def scenario(server):
        from websockets.asyncio.client import connect

        async with connect(server.url):
            await asyncio.to_thread(server.stop)

    server = WebSocketServer(deaf)
    with pytest.raises(RuntimeError, match="a handler did not return"):
        with server:
            thread = server._thread
            asyncio.run(asyncio.wait_for(scenario(server), 30))
    thread.join(10)
    assert not thread.is_alive()   # the stuck handler was cancelled, the loop is gone
