"""Checks for 07-Serve-Many-Clients."""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Callable, Coroutine
from typing import Any, cast

from labkit.servers import load as _load
from labkit.servers.base import ServerError

from . import NOT_WRITTEN, Verdict, answers_back, unfinished, verdict

__all__ = ["check_asyncio_upper", "check_does_not_block"]

CLIENTS = 50

# async def serve(listener, stop): the student's asyncio server
AsyncServe = Callable[[socket.socket, asyncio.Event], Coroutine[Any, Any, object]]
# async def handler(reader, writer): asyncio.start_server's connection handler
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, object]]


@answers_back
def check_asyncio_upper(serve: AsyncServe) -> Verdict:
    """``serve(listener, stop)`` is asyncio and answers 50 concurrent clients in upper case."""
    if not callable(serve):
        return Verdict(False, f"give the function itself, not {type(serve).__name__}",
                       "check_asyncio_upper(upper_server), without parentheses after the name")
    if not inspect.iscoroutinefunction(serve):
        return Verdict(False, f"{serve.__name__} is a plain `def`, so it still blocks one thread",
                       "make it an `async def` whose connections asyncio.start_server "
                       "accepts (it can take the listening socket you are given)")
    message = b"hello from client\n"
    returned_early: list[bool] = []
    loop_ran: list[bool] = []  # empty: serve() never gave the event loop control
    blocked: list[bool] = []   # serve() ended (raised) before it ever did

    def never_yielded() -> bool:
        return bool(blocked) or not loop_ran

    async def watched(listener: socket.socket, stop: asyncio.Event) -> None:
        # runs at the loop's next turn, i.e. as soon as serve() first awaits something
        asyncio.get_running_loop().call_soon(loop_ran.append, True)
        try:
            await serve(listener, stop)
            returned_early.append(not stop.is_set())
        finally:
            if not loop_ran:
                blocked.append(True)
            if not stop.is_set():
                # returned or raised: nobody serves now, so refuse the clients at once
                # instead of letting them wait 5 s (not close(): the load asks its port)
                listener.shutdown(socket.SHUT_RDWR)

    try:
        with _load.BackgroundServer(watched, name=serve.__name__) as server:
            result = _load.load(server, clients=CLIENTS, requests=3, message=message,
                                expect=message.upper(), hold_open=True, timeout=5)
    except ServerError as exc:
        if unfinished(exc):
            return NOT_WRITTEN
        if never_yielded():
            return _blocked_loop(serve)
        return Verdict(False, f"your server raised: {exc}",
                       "read the error: it happened while your server answered the clients")
    except RuntimeError as exc:
        if never_yielded():
            return _blocked_loop(serve)
        return Verdict(False, str(exc), "keep serving until `stop` is set, then return: "
                       "wait on the event instead of returning or looping on your own")
    if never_yielded():
        return _blocked_loop(serve)
    if any(returned_early):
        return Verdict(False, f"{serve.__name__} returned at once, before `stop` was set, so "
                              "nobody served the clients",
                       "the server serves only while your coroutine runs: wait for `stop` "
                       "(an asyncio.Event) before returning")
    if result.errors.get("wrong answer"):
        return Verdict(False, f"{result.errors['wrong answer']} clients got an answer that was "
                       "not their line in upper case",
                       "each reply is the very line the client sent (bytes, newline "
                       "included), in upper case")
    total = CLIENTS * 3
    return verdict(
        result.ok,
        f"all {CLIENTS} clients, connected at the same time, got their 3 answers in upper case",
        wrong=f"{result.completed} of {total} answers arrived while all {CLIENTS} clients were "
              f"connected" + (" (it stopped at the 5 s limit)" if result.timed_out else "")
              + (f"; errors {result.errors}" if result.errors else ""),
        hint="each client needs its own coroutine: asyncio.start_server calls your handler once "
             "per connection; the handler answers every line until the client closes (readline "
             "gives b'' then), and awaits after each write so the loop can serve the others",
    )


def _blocked_loop(serve: Callable[..., object]) -> Verdict:
    return Verdict(False, f"{serve.__name__} never let the event loop run: a blocking call "
                   "inside `async def` (listener.accept(), a socket's recv(), time.sleep()) stops "
                   "the whole loop, so no other client can be served",
                   "in async code every wait is an `await`: asyncio.start_server accepts the "
                   "connections for you (give it the listener), and its reader and writer "
                   "streams read and write")


class _LoopWatch:
    """Did the event loop get control back between a handler's read and its reply?

    When the handler's read returns, a callback is queued with ``call_soon``: it runs at
    the loop's next turn, i.e. only if the handler awaits something before it writes.
    ``time.sleep()`` keeps the loop, so the reply is written before the callback ran.
    This is decided by the order of events, not by a clock, so load cannot change it.
    """

    def __init__(self) -> None:
        self.replies = 0
        self.blocked = 0
        self._waiting: list[bool] | None = None

    def _got_data(self) -> None:
        yielded = [False]
        self._waiting = yielded
        asyncio.get_running_loop().call_soon(yielded.__setitem__, 0, True)

    def _replied(self) -> None:
        if self._waiting is not None:
            self.replies += 1
            self.blocked += not self._waiting[0]
            self._waiting = None

    def reader(self, reader: asyncio.StreamReader) -> asyncio.StreamReader:
        """``reader``, its reads noted (a stand-in: the handler cannot tell)."""
        watch = self

        class Reader:
            def __getattr__(self, name: str) -> Any:
                attr = getattr(reader, name)
                if name not in ("read", "readline", "readexactly", "readuntil"):
                    return attr

                async def read(*args: Any, **kwargs: Any) -> bytes:
                    data = await attr(*args, **kwargs)
                    if data:
                        watch._got_data()
                    return bytes(data)
                return read
        return cast(asyncio.StreamReader, Reader())

    def writer(self, writer: asyncio.StreamWriter) -> asyncio.StreamWriter:
        """``writer``, its writes noted (a stand-in: the handler cannot tell)."""
        watch = self

        class Writer:
            def __getattr__(self, name: str) -> Any:
                attr = getattr(writer, name)
                if name not in ("write", "writelines"):
                    return attr

                def write(*args: Any, **kwargs: Any) -> Any:
                    watch._replied()
                    return attr(*args, **kwargs)
                return write
        return cast(asyncio.StreamWriter, Writer())


@answers_back
def check_does_not_block(handler: Handler, *, clients: int = 6) -> Verdict:
    """``handler(reader, writer)`` does its 'work' without blocking the event loop."""
    if not inspect.iscoroutinefunction(handler):
        return Verdict(False, f"{getattr(handler, '__name__', handler)!r} is not `async def`",
                       "keep `async def slow_echo(reader, writer):`")

    raised: list[BaseException] = []
    watches: list[_LoopWatch] = []

    # asyncio would only log a handler's exception
    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        watch = _LoopWatch()
        watches.append(watch)
        try:
            await handler(watch.reader(reader), watch.writer(writer))
        except Exception as exc:  # noqa: BLE001 - the student's bug: kept for the verdict
            raised.append(exc)
            writer.close()

    async def serve(listener: socket.socket, stop: asyncio.Event) -> None:
        server = await asyncio.start_server(guarded, sock=listener)
        async with server:
            await stop.wait()

    try:
        with _load.BackgroundServer(serve, name=handler.__name__) as server:
            result = _load.load(server, clients=clients, requests=1, message=b"slow\n",
                                timeout=10)
    except ServerError as exc:
        return Verdict(False, f"your handler raised: {exc}",
                       "read with `await reader.read(...)`, write back, `await writer.drain()`")
    if raised:
        if unfinished(raised[0]):
            return NOT_WRITTEN
        return Verdict(False, f"your handler raised {type(raised[0]).__name__}: {raised[0]}",
                       "read with `await reader.read(...)`, write back, `await writer.drain()`")
    if not result.ok:
        return Verdict(False, f"not every client got its echo back: {result}",
                       "write back exactly what you read, then `await writer.drain()`")
    replies = sum(w.replies for w in watches)
    blocked = sum(w.blocked for w in watches)
    return verdict(
        replies >= clients and blocked == 0,
        f"during the work for each of the {clients} slow requests your handler gave the "
        "event loop back, so the loop could serve the other clients meanwhile",
        wrong=f"in {blocked} of {replies} replies your handler kept the event loop from "
              "reading to writing: while it worked, no other client was served",
        hint="time.sleep() stops the whole event loop; `await asyncio.sleep(...)` lets the "
             "loop serve other clients while this one waits",
    )
