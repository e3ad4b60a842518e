"""Checks for 08-Talk-Over-WebSockets."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING

from labkit.servers.base import ServerError
from labkit.servers.websocket import WebSocketHandler, WebSocketServer

from . import NOT_WRITTEN, Verdict, answers_back, unfinished, verdict

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

__all__ = ["check_unmask", "check_named_chat"]


def _client_frame(payload: bytes) -> bytes:
    """A FIN text frame as a client sends it (masked with a random key), built by websockets."""
    from websockets.frames import Frame, Opcode

    return Frame(Opcode.TEXT, payload).serialize(mask=True)


_LOW_7_BITS = "the low 7 bits of byte 2 (byte 2 & 0x7F: its top bit is the MASK flag)"
CASES = [  # (what it is, payload, where the length is written)
    ("a 5-byte text frame", b"hello", _LOW_7_BITS),
    ("a 125-byte frame", b"x" * 125, _LOW_7_BITS + "; 125 is the largest length that fits"),
    ("a 300-byte frame", bytes(range(256)) + b"y" * 44,
     "126 in " + _LOW_7_BITS + " means: the length is the next 2 bytes, big-endian"),
    ("a 70000-byte frame", b"z" * 70000,
     "127 in " + _LOW_7_BITS + " means: the length is the next 8 bytes, big-endian"),
]


@answers_back
def check_unmask(unmask: Callable[[bytes], bytes]) -> Verdict:
    """``unmask(frame: bytes) -> bytes`` returns the payload of one masked client frame."""
    if not callable(unmask):
        return Verdict(False, f"give the function itself, not {type(unmask).__name__}",
                       "check_unmask(unmask), without parentheses after the name")
    for what, payload, where in CASES:
        frame = _client_frame(payload)
        try:
            got = unmask(frame)
        except Exception as exc:  # noqa: BLE001 - the student's code
            if unfinished(exc):
                return NOT_WRITTEN
            return Verdict(False, f"unmask() raised {type(exc).__name__}: {exc} on {what}",
                           f"where the payload length is: {where}; then come 4 mask bytes")
        if got != payload:
            shown = got[:12] if isinstance(got, (bytes, bytearray)) else got
            return Verdict(False, f"for {what} you returned {shown!r}…, not the payload",
                           f"where the length is: {where}; the 4-byte mask follows it, then the "
                           "payload, each byte XORed with the mask bytes taken in turn")
    return Verdict(True, "you unmasked client frames of every length encoding "
                         "(7-bit, 16-bit, 64-bit)")


_HINT_CHAT = ("the first message is the name: answer it with the welcome, and remember which "
              "websocket has which name; every later message goes, with the sender's name in "
              "front, to every other websocket")
_HINT_VANISH = ("a client that vanishes makes `async for` (and recv()) raise ConnectionClosed "
                "in its handler: remove it from your dict in a `finally:`; and "
                "websockets.broadcast() skips closed connections where send() raises")


async def _named_chat_scenario(server: WebSocketServer) -> tuple[str, str] | None:
    """Run the scenario; None if it went right, else (what went wrong, the hint that fits)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def next_message(ws: ClientConnection, who: str) -> str | bytes:
        try:
            return await asyncio.wait_for(ws.recv(), 2)
        except TimeoutError:
            raise AssertionError(f"{who} waited 2 s and got no message") from None

    async def after_cid_vanished(ann: ClientConnection, ben: ClientConnection) -> str | None:
        # Both talk twice: a handler that still sends to cid may fail only on a later message.
        for (sender, said), (reader, name) in [((ben, "ben"), (ann, "ann")),
                                               ((ann, "ann"), (ben, "ben"))] * 2:
            await sender.send("still here?")
            got = await next_message(reader, name)
            if got != f"{said}: still here?":
                return f"{name} got {got!r}, not '{said}: still here?'"
        return None

    names = ["ann", "ben", "cid"]
    conns = [await connect(server.url, compression=None) for _ in names]
    try:
        for ws, name in zip(conns, names, strict=True):
            await ws.send(name)
            got = await next_message(ws, name)
            if got != f"welcome {name}":
                return f"after sending her name, {name} got {got!r}, not 'welcome {name}'", \
                    _HINT_CHAT
        ann, ben, cid = conns
        await ann.send("hello")
        for ws, name in ((ben, "ben"), (cid, "cid")):
            got = await next_message(ws, name)
            if got != "ann: hello":
                return f"ann said 'hello' and {name} got {got!r}, not 'ann: hello'", _HINT_CHAT
        await ben.send("hi ann")
        got = await next_message(ann, "ann")
        if got != "ben: hi ann":
            return (f"ann's next message was {got!r}, not 'ben: hi ann'"
                    + (" (she got her own message back)" if got == "ann: hello" else ""),
                    _HINT_CHAT)
        await next_message(cid, "cid")          # 'ben: hi ann'
    except AssertionError as exc:
        return str(exc), _HINT_CHAT
    wrong: str | None
    try:
        cid.transport.abort()                    # cid vanishes: no close frame
        # Go on once cid's handler has returned (its `finally:` ran), so the verdict
        # never depends on how fast the server noticed: a handler that forgets cid passes,
        # one that keeps it in its dict and sends to it fails, every time.
        if not await asyncio.to_thread(server.wait_for_handlers, 2, 5):
            wrong = "cid's handler was still running 5 s after cid vanished"
        else:
            wrong = await after_cid_vanished(ann, ben)
    except AssertionError as exc:
        wrong = str(exc)
    except ConnectionClosed as exc:
        wrong = f"the server closed a connection ({exc})"
    finally:
        for ws in conns:
            await ws.close()
    return None if wrong is None else (f"after cid vanished, {wrong}", _HINT_VANISH)


@answers_back
async def check_named_chat(handler: WebSocketHandler) -> Verdict:
    """``handler(websocket)``: first message is a name; then 'name: text' goes to the others."""
    if not inspect.iscoroutinefunction(handler):
        return Verdict(False, f"{getattr(handler, '__name__', handler)!r} is not `async def`",
                       "write `async def named_chat(websocket):`")
    from websockets.exceptions import ConnectionClosed

    try:
        with WebSocketServer(handler, name=handler.__name__) as server:
            try:
                wrong = await asyncio.wait_for(_named_chat_scenario(server), 15)
            except ConnectionClosed as exc:  # the handler's error comes next, on exit
                wrong = (f"the server closed a connection in the middle of the chat ({exc})",
                         _HINT_CHAT)
    except ServerError as exc:
        if unfinished(exc):
            return NOT_WRITTEN
        return Verdict(False, f"your handler raised: {exc}", _HINT_VANISH)
    except TimeoutError:
        return Verdict(False, "the scenario did not finish within 15 s",
                       "does every message reach the others with websockets.broadcast()?")
    what, hint = wrong or ("", "")
    return verdict(
        wrong is None,
        "names, welcomes, fan-out to the others (not the sender), and a vanished client "
        "did not stop the chat",
        wrong=what, hint=hint)
