"""TornadoServer: a tornado application on loopback in a thread, with the lab server contract
(the shared part is in test_servers.py): WebSocket frames, handler errors, bad arguments."""

import asyncio

import pytest
import tornado.web
import tornado.websocket

from labkit import Capture, ServerError, TornadoServer, websocket_frames


class Echo(tornado.websocket.WebSocketHandler):
    def on_message(self, message):
        self.write_message(message)


class Broken(tornado.web.RequestHandler):
    def get(self):
        raise ValueError("the handler's own bug")


async def echo_once(server) -> str:
    ws = await tornado.websocket.websocket_connect(server.url("ws", "/"))
    await ws.write_message("hello")
    answer = await ws.read_message()
    ws.close(1000)
    await ws.read_message()
    return answer


def test_a_websocket_echo_and_its_frames(live):
    with TornadoServer([("/", Echo)]) as server, Capture(server) as wire:
        assert asyncio.run(echo_once(server)) == "hello"
    kinds = [(seg.src, frame.kind, frame.masked) for seg, frame in websocket_frames(wire.segments)]
    assert kinds[:2] == [("client", "text", True), ("server", "text", False)], kinds


def test_a_handler_error_comes_back_to_the_owner_and_nothing_is_printed(capsys):
    import urllib.error
    import urllib.request

    with pytest.raises(ServerError, match="the handler's own bug"):
        with TornadoServer([("/", Broken)]) as server:
            with pytest.raises(urllib.error.HTTPError, match="500"):
                urllib.request.urlopen(server.url(), timeout=5)
    assert capsys.readouterr().err == ""


def test_bad_arguments_say_what_to_give():
    with pytest.raises(TypeError, match=r"list of \(path, handler class\) tuples"):
        TornadoServer(Echo)
    with pytest.raises(TypeError, match="port must be left out"):
        TornadoServer([("/", Echo)], port=80)
    with TornadoServer([("/", Echo)]) as server:
        with pytest.raises(ValueError, match="'http' or 'ws'"):
            server.url("wss")
        assert server.url("ws", "/chat") == f"ws://127.0.0.1:{server.port}/chat"
