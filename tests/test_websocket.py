"""WebSocketServer (labkit.servers.websocket); frames in captures (labkit.protocols.websocket)."""

import asyncio
import socket
import struct

import pytest
from scapy.layers.inet import IP, TCP
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from labkit import ServerError, WebSocketServer, parse_frames, websocket_frames
from labkit.capture.flows import segments


async def echo(ws):
    async for message in ws:
        await ws.send(message)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


# -- the server -----------------------------------------------------------------------------
def test_server_echoes_and_stops():
    async def talk(url):
        async with connect(url) as ws:
            await ws.send("hello")
            return await ws.recv()

    with WebSocketServer(echo) as server:
        assert server.url.startswith("ws://127.0.0.1:")
        assert run(talk(server.url)) == "hello"
    assert "stopped" in repr(server)


def test_server_stops_with_clients_still_connected():
    async def hold(url):
        ws = await connect(url)
        return ws

    with WebSocketServer(echo) as server:
        async def scenario():
            ws = await connect(server.url)
            await ws.send("x")
            assert await ws.recv() == "x"
            await asyncio.to_thread(server.stop)           # closes with 1001 going away
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

        assert run(scenario()) == 1001


def test_server_refuses_garbage_and_keeps_serving():
    with WebSocketServer(echo) as server:
        with socket.create_connection(server.address, timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")    # HTTP, but no Upgrade
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 426")             # 426 Upgrade Required
        with socket.create_connection(server.address, timeout=5) as s:
            s.sendall(b"\x16\x03\x01 this is not HTTP at all\r\n\r\n")
            assert s.recv(4096) == b""                       # closed, nothing crashed

        async def talk():
            async with connect(server.url) as ws:
                await ws.send(b"\x00\x01")
                return await ws.recv()

        assert run(talk()) == b"\x00\x01"


def test_handler_errors_come_back_to_the_with_block():
    async def broken(ws):
        await ws.recv()
        raise KeyError("boom")

    async def talk(url):
        async with connect(url) as ws:
            await ws.send("go")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    with pytest.raises(ServerError, match="KeyError"):
        with WebSocketServer(broken) as server:
            assert run(talk(server.url)) == 1011


def test_server_rejects_bad_arguments():
    def not_async(ws):
        pass

    with pytest.raises(TypeError, match="async def"):
        WebSocketServer(not_async)
    with pytest.raises(TypeError, match="async function"):
        WebSocketServer("echo")
    with pytest.raises(ValueError, match="loopback"):
        WebSocketServer(echo, host="0.0.0.0")
    with pytest.raises(ValueError, match="drop port"):
        WebSocketServer(echo, port=8765)


# -- frames -----------------------------------------------------------------------------------
def test_parse_rfc6455_examples():
    # RFC 6455 section 5.7: unmasked and masked "Hello", and an unmasked ping
    (f,) = parse_frames(bytes.fromhex("810548656c6c6f"))
    assert (f.fin, f.kind, f.masked, f.data) == (True, "text", False, b"Hello")
    (f,) = parse_frames(bytes.fromhex("8185 37fa213d 7f9f4d5158"))
    assert f.masked and f.mask == bytes.fromhex("37fa213d")
    assert f.payload == bytes.fromhex("7f9f4d5158")
    assert f.data == b"Hello"
    assert f.describe() == "WebSocket text FIN masked len=5 'Hello'"
    first, second = parse_frames(bytes.fromhex("01 03 48656c 80 02 6c6f"))  # fragmented
    assert (first.fin, first.kind, second.fin, second.kind) == (False, "text", True, "continuation")
    (ping,) = parse_frames(bytes.fromhex("890548656c6c6f"))
    assert ping.kind == "ping"
    big = parse_frames(b"\x82\x7e\x01\x00" + bytes(256))
    assert big[0].kind == "binary" and len(big[0].data) == 256 and big[0].header_length == 4


def test_close_frame_code_and_reason():
    (f,) = parse_frames(b"\x88\x05" + struct.pack("!H", 1000) + b"bye")
    assert f.close_code == 1000
    assert f.describe() == "WebSocket close FIN unmasked code=1000 reason='bye'"


@pytest.mark.parametrize("garbage", [
    b"\x81",                        # header cut off
    b"\x81\x05Hel",                 # payload cut off
    b"\x83\x00",                    # reserved opcode 3
    b"\x09\x00",                    # a ping without FIN
    b"\x89\x7e\x00\x80" + bytes(128),   # a control frame over 125 bytes
    b"\x81\x85\x01\x02",            # mask cut off
    b"GET / HTTP/1.1\r\n",
])
def test_parse_frames_rejects_what_is_not_whole_frames(garbage):
    with pytest.raises(ValueError):
        parse_frames(garbage)


def test_parse_frames_needs_bytes():
    with pytest.raises(TypeError, match="needs bytes"):
        parse_frames("hello")


# -- the describer -------------------------------------------------------------------------------
def _pkt(sport, dport, payload):
    ip = IP(src="127.0.0.1", dst="127.0.0.1")
    return ip / TCP(sport=sport, dport=dport, flags="PA") / payload


def test_describer_reads_frames_only_after_101():
    frame = bytes.fromhex("810548656c6c6f")
    # no upgrade on this connection: the bytes are just bytes
    assert not segments([_pkt(40001, 8001, frame)], {8001: "server"})[0].summary.startswith(
        "WebSocket")
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    pkts = [_pkt(8002, 40002, answer), _pkt(8002, 40002, frame), _pkt(40002, 8002, b"\x81\x05Hel")]
    segs = segments(pkts, {8002: "server"})
    assert segs[0].summary == "HTTP/1.1 101 Switching Protocols"
    assert segs[1].summary == "WebSocket text FIN unmasked len=5 'Hello'"
    assert segs[2].summary.startswith("WebSocket data, part of a frame")
    assert [f.data for _, f in websocket_frames(segs)] == [b"Hello"]


def test_describer_is_the_same_the_second_time():
    # segments() runs again each time a capture is looked at: the GET before the 101
    # must stay HTTP, the frames after it stay frames
    request = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    frame = bytes.fromhex("8185 37fa213d 7f9f4d5158")
    pkts = [_pkt(40003, 8003, request), _pkt(8003, 40003, answer), _pkt(40003, 8003, frame)]
    for t, pkt in enumerate(pkts):
        pkt.time = 1000.0 + t
    first = [s.summary for s in segments(pkts, {8003: "server"})]
    again = [s.summary for s in segments(pkts, {8003: "server"})]
    assert first == again == ["GET / HTTP/1.1", "HTTP/1.1 101 Switching Protocols",
                              "WebSocket text FIN masked len=5 'Hello'"]


def test_server_answers_the_rfc6455_example_handshake():
    # RFC 6455 section 1.3: this key must be answered with exactly this accept value
    request = (b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")
    with WebSocketServer(echo) as server, socket.create_connection(server.address, 5) as s:
        s.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head and (data := s.recv(4096)):
            head += data
    status, *fields = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
    headers = {name.lower(): value for name, value in (f.split(": ", 1) for f in fields)}
    assert status == "HTTP/1.1 101 Switching Protocols"
    assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert headers["upgrade"].lower() == "websocket"


def test_ladder_labels_say_what_websocket_packets_carry():
    from labkit.views.ladder import _label

    request = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    frame = bytes.fromhex("8185 37fa213d 7f9f4d5158")
    pkts = [_pkt(40004, 8004, request), _pkt(8004, 40004, answer), _pkt(40004, 8004, frame),
            _pkt(40005, 8005, b"plain")]
    for t, pkt in enumerate(pkts):
        pkt.time = 2000.0 + t
    labels = [_label(s) for s in segments(pkts, {8004: "server", 8005: "other"})]
    assert labels[:3] == ["GET / HTTP/1.1  (Upgrade: websocket)",
                          "HTTP/1.1 101 Switching Protocols",
                          "text FIN masked len=5 'Hello'"]
    assert labels[3].startswith("PSH-ACK len=5")      # other connections keep TCP labels


def test_named_chat_check_explains_what_is_wrong():
    import websockets

    from labkit.checks.lesson08 import check_named_chat

    members = set()

    async def everyone(ws):               # echoes to the sender too, and no welcome
        members.add(ws)
        try:
            async for message in ws:
                websockets.broadcast(members, message)
        finally:
            members.discard(ws)

    result = run(check_named_chat(everyone))
    assert not result.passed and "welcome ann" in result.message and result.hint
    assert not run(check_named_chat(lambda ws: None)).passed


def test_frames_are_read_from_the_stream_not_one_segment_at_a_time():
    from packets import C, S, tcp

    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    hello, bye, ping = (bytes.fromhex("810548656c6c6f"), bytes.fromhex("8103627965"),
                        bytes.fromhex("8900"))
    seq = 500 + len(answer)
    pkts = [tcp(S, C, "PA", 500, 1, answer, t=1.0),
            tcp(S, C, "PA", seq, 1, hello[:3], t=1.1),                   # TCP split a frame
            tcp(S, C, "PA", seq + 3, 1, hello[3:] + bye, t=1.2),         # ... and joined two
            tcp(S, C, "PA", seq + 3, 1, hello[3:] + bye, t=1.3),         # a retransmission
            tcp(S, C, "PA", seq + 12, 1, ping, t=1.4)]
    segs = segments(pkts, {S[1]: "server"})
    assert segs[1].summary.startswith("WebSocket data, part of a frame")
    frames = [(seg.index, frame.kind, frame.data) for seg, frame in websocket_frames(segs)]
    assert frames == [(2, "text", b"Hello"), (2, "text", b"bye"), (4, "ping", b"")]
    assert segs[2].summary.startswith("WebSocket data, part of a frame")  # alone, it is not one
    assert segs[4].summary == "WebSocket ping FIN unmasked len=0"
