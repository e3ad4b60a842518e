import socket
import threading
import time

import pytest

from labkit import ServerError, TCPServer, UDPServer


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


@pytest.mark.parametrize("kwargs, error, words", [
    ({"handler": "shout"}, ValueError, "use one of ['echo', 'upper']"),
    ({"handler": 42}, TypeError, "a function, not int"),
    ({"port": 70000}, ValueError, "0 to 65535"),
    ({"host": "0.0.0.0"}, ValueError, "not a loopback address"),
    ({"host": "example.org"}, ValueError, "loopback IP address"),
])
@pytest.mark.parametrize("cls", [TCPServer, UDPServer])
def test_bad_arguments_say_what_to_do(cls, kwargs, error, words):
    with pytest.raises(error) as info:
        cls(**kwargs)
    assert words in str(info.value)


def test_address_outside_with_block_is_an_error():
    server = TCPServer()
    with pytest.raises(RuntimeError, match="use it in a `with` block"):
        server.address


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
    from labkit import _servers

    monkeypatch.setattr(_servers, "JOIN_TIMEOUT", 0.2)
    running, release = threading.Event(), threading.Event()

    def stuck(conn, addr):
        running.set()
        release.wait(5)  # ignores its connection closing

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="did not finish within 0.2s"):
        with TCPServer(stuck) as server:
            socket.create_connection(server.address, timeout=2).close()
            assert running.wait(2)
    release.set()
    assert time.monotonic() - started < 3
