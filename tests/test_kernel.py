import os
import socket

import pytest

from labkit import TCPServer, tcp_states

SAMPLE = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:9C40 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3
   2: 0100007F:1234 0100007F:4321 01 00000000:00000000 00:00000000 00000000     0        0 2 1
"""  # noqa: E501 - /proc/net/tcp's header line, verbatim


def test_parses_the_kernel_table(tmp_path):
    (tmp_path / "tcp").write_text(SAMPLE)
    states = tcp_states(8080, proc=tmp_path)
    assert [(s.local, s.remote, s.state) for s in states] == [
        (("127.0.0.1", 8080), ("0.0.0.0", 0), "LISTEN"),
        (("127.0.0.1", 40000), ("127.0.0.1", 8080), "TIME-WAIT")]
    assert [s.state for s in tcp_states(8080, 40000, proc=tmp_path)] == ["TIME-WAIT"]
    # the timer column: 0x1770 clock ticks left on the TIME-WAIT, none on the listener
    ticks = os.sysconf("SC_CLK_TCK")
    assert [s.expires_in for s in states] == [None, 0x1770 / ticks]


def test_live_sockets_listen_then_established():
    with TCPServer("echo") as server:
        # Only the listening socket has the server's port locally (an old TIME-WAIT
        # connection may still name the same number as its *client* port).
        assert [s.state for s in tcp_states(server.port) if s.local[1] == server.port] == ["LISTEN"]
        with socket.create_connection(server.address) as c:
            c.sendall(b"x")
            c.recv(1)
            states = sorted(s.state for s in tcp_states(c.getsockname()[1], server.port))
    assert states == ["ESTAB", "ESTAB"]


@pytest.mark.parametrize("bad, error", [(0, ValueError), (70000, ValueError), ("80", TypeError),
                                        (True, TypeError)])
def test_bad_port(bad, error):
    with pytest.raises(error, match="port must be an int"):
        tcp_states(bad)


def test_settled_states_after_the_client_closes_first():
    from labkit.capture.sockets import settled_tcp_states

    with TCPServer("echo") as server:
        with socket.create_connection(server.address) as c:
            port = c.getsockname()[1]
            c.sendall(b"x")
            c.recv(1)
        assert server.wait_idle(2)
        states = {s.local[1]: s.state for s in settled_tcp_states(port, server.port)}
    assert states == {port: "TIME-WAIT"}  # the server's end is gone: it closed second
