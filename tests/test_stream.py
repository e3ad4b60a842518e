"""labkit.servers.stream: dribbling, slow and counting TCP peers, and their figures."""

import socket
import struct

import pytest

from labkit import (
    ByteCounter,
    Dribbler,
    FramedEcho,
    SlowConsumer,
    TCPServer,
    rtt_figure,
    throughput_figure,
)


def read_all(sock: socket.socket) -> list[bytes]:
    chunks = []
    while data := sock.recv(1024):
        chunks.append(data)
    return chunks


def test_dribbler_sends_its_pieces_and_closes():
    dribbler = Dribbler(b"HELLO, WORLD", piece=5, pause=0.05)
    with TCPServer(handler=dribbler) as server:
        with socket.create_connection(server.address, timeout=5) as sock:
            chunks = read_all(sock)
    assert b"".join(chunks) == b"HELLO, WORLD"
    assert dribbler.pieces == [b"HELLO", b", WOR", b"LD"]
    assert dribbler.sends == 3
    assert len(chunks) > 1  # 50 ms apart: recv() returns before the whole message is there


def test_dribbler_with_explicit_pieces_waits_for_the_client():
    dribbler = Dribbler([b"ab", b"", b"cde"], pause=0, then="wait")
    with TCPServer(handler=dribbler) as server:
        with socket.create_connection(server.address) as sock:   # MSG_WAITALL needs blocking
            got = sock.recv(5, socket.MSG_WAITALL)
            sock.settimeout(0.1)
            with pytest.raises(TimeoutError):  # still open: the server waits for us
                sock.recv(1)
    assert got == b"abcde" and dribbler.pieces == [b"ab", b"cde"]


def test_dribbler_survives_a_client_that_leaves_early():
    dribbler = Dribbler(b"x" * 40, piece=4, pause=0.01)
    with TCPServer(handler=dribbler) as server:
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.recv(1)
        sock.close()
        assert server.wait_idle(3)
    # no ServerError on exit: a vanished client is not the server's failure


@pytest.mark.parametrize("args, kwargs, error, words", [
    (("text",), {}, TypeError, "encode"),
    ((b"x",), {"piece": 0}, ValueError, "piece"),
    ((b"x",), {"piece": 2.5}, TypeError, "piece"),
    ((b"x",), {"pause": -1}, ValueError, "pause"),
    ((b"x",), {"then": "linger"}, ValueError, "then must be one of 'close', 'wait'"),
    ((b"x" * 100,), {"piece": 1, "pause": 0.5}, ValueError, "shorter pause"),
])
def test_dribbler_bad_arguments_say_what_to_do(args, kwargs, error, words):
    with pytest.raises(error, match=words):
        Dribbler(*args, **kwargs)


def test_slow_consumer_reads_everything_eventually():
    reader = SlowConsumer(chunk=65536, pause=0.001)
    with TCPServer(handler=reader) as server:
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            sock.setblocking(False)
            taken = sock.send(b"x" * 500_000)
            sock.setblocking(True)
            sock.sendall(b"x" * (500_000 - taken))
        assert server.wait_idle(3)
    assert taken < 500_000 and reader.received == 500_000


def test_slow_consumer_bad_arguments():
    with pytest.raises(ValueError, match="chunk"):
        SlowConsumer(chunk=0)
    with pytest.raises(TypeError, match="pause"):
        SlowConsumer(pause="slow")


def test_byte_counter_answers_with_the_count():
    counter = ByteCounter()
    with TCPServer(handler=counter) as server:
        with socket.create_connection(server.address, timeout=5) as sock:
            for _ in range(10):
                sock.sendall(b"y" * 1000)
            sock.shutdown(socket.SHUT_WR)
            assert sock.makefile("rb").readline() == b"10000\n"
    assert counter.received == 10000


def test_framed_echo_echoes_frames_and_refuses_garbage_but_keeps_serving():
    echo = FramedEcho()
    with TCPServer(handler=echo) as server:
        with socket.create_connection(server.address) as bad:    # MSG_WAITALL needs blocking
            bad.sendall(b"\xff\xff\xff\xffgarbage")      # a 4 GiB "frame"
            head = bad.recv(4, socket.MSG_WAITALL)
            body = bad.recv(struct.unpack("!I", head)[0], socket.MSG_WAITALL)
            assert body == b"error: frame too long"
            assert bad.recv(10) == b""                   # and it closed that connection
        with socket.create_connection(server.address) as good:
            for message in (b"hi", b"", b"z" * 5000):
                frame = struct.pack("!I", len(message)) + message
                good.sendall(frame)
                assert good.recv(len(frame), socket.MSG_WAITALL) == frame
    assert echo.messages == 3 and echo.refused == 1


def test_figures_state_the_finding_and_refuse_empty_data():
    fig = rtt_figure({"Nagle": [0.04, 0.044], "NODELAY": [0.0001, 0.0002]})
    assert "slower with Nagle" in fig.axes[0].get_title()
    fig = throughput_figure([64, 65536], [30e6, 3000e6])
    assert "100×" in fig.axes[0].get_title()
    assert fig.axes[0].get_xlabel() == "bytes per send() call"
    with pytest.raises(ValueError, match="one rate per write size"):
        throughput_figure([64], [])
    with pytest.raises(ValueError, match="with data"):
        rtt_figure({"empty": []})
