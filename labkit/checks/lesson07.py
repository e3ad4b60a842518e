"""Checks for 07-Serve-Many-Clients."""

from __future__ import annotations

import asyncio
import inspect

from .. import _load
from .._servers import ServerError
from . import NOT_WRITTEN, Verdict, answers_back, unfinished, verdict

__all__ = ["check_asyncio_upper", "check_does_not_block"]

CLIENTS = 50


@answers_back
def check_asyncio_upper(serve) -> Verdict:
    """``serve(listener, stop)`` is asyncio and answers 50 concurrent clients in upper case."""
    if not callable(serve):
        return Verdict(False, f"give the function itself, not {type(serve).__name__}",
                       "check_asyncio_upper(upper_server), without parentheses after the name")
    if not inspect.iscoroutinefunction(serve):
        return Verdict(False, f"{serve.__name__} is a plain `def`, so it still blocks one thread",
                       "write `async def upper_server(listener, stop):` and inside it "
                       "`server = await asyncio.start_server(handle, sock=listener)`")
    message = b"hello from client\n"
    try:
        with _load.BackgroundServer(serve, name=serve.__name__) as server:
            result = _load.load(server, clients=CLIENTS, requests=3, message=message,
                                expect=message.upper(), hold_open=True, timeout=5)
    except ServerError as exc:
        return Verdict(False, f"your server raised: {exc}",
                       "run it by hand: `with BackgroundServer(upper_server) as s:` and connect")
    except RuntimeError as exc:
        return Verdict(False, str(exc), "end with `async with server: await stop.wait()`")
    if result.errors.get("wrong answer"):
        return Verdict(False, f"{result.errors['wrong answer']} clients got an answer that was "
                       "not their line in upper case",
                       "reply with `writer.write(line.upper())` for each `line` you read")
    total = CLIENTS * 3
    return verdict(
        result.ok,
        f"all {CLIENTS} clients, connected at the same time, got their 3 answers in upper case",
        wrong=f"{result.completed} of {total} answers arrived while all {CLIENTS} clients were "
              f"connected" + (" (it stopped at the 5 s limit)" if result.timed_out else "")
              + (f"; errors {result.errors}" if result.errors else ""),
        hint="each client needs its own coroutine: asyncio.start_server calls your handler once "
             "per connection; inside it loop `while line := await reader.readline():` and "
             "`await writer.drain()` after each write",
    )


@answers_back
def check_does_not_block(handler, *, service_time: float = 0.1, clients: int = 6) -> Verdict:
    """``handler(reader, writer)`` does its 'work' without blocking the event loop."""
    if not inspect.iscoroutinefunction(handler):
        return Verdict(False, f"{getattr(handler, '__name__', handler)!r} is not `async def`",
                       "keep `async def slow_echo(reader, writer):`")

    raised: list[BaseException] = []

    async def guarded(reader, writer):  # asyncio would only log a handler's exception
        try:
            await handler(reader, writer)
        except Exception as exc:
            raised.append(exc)
            writer.close()

    async def serve(listener, stop):
        server = await asyncio.start_server(guarded, sock=listener)
        async with server:
            await stop.wait()

    try:
        with _load.BackgroundServer(serve, name=handler.__name__) as server:
            result = _load.load(server, clients=clients, requests=1, message=b"slow\n",
                                timeout=5)
    except ServerError as exc:
        return Verdict(False, f"your handler raised: {exc}", "")
    if raised:
        if unfinished(raised[0]):
            return NOT_WRITTEN
        return Verdict(False, f"your handler raised {type(raised[0]).__name__}: {raised[0]}",
                       "read with `await reader.read(...)`, write back, `await writer.drain()`")
    if not result.ok:
        return Verdict(False, f"not every client got its echo back: {result}",
                       "write back exactly what you read, then `await writer.drain()`")
    serial = clients * service_time
    return verdict(
        result.elapsed < 0.6 * serial,
        f"{clients} slow requests of {service_time} s each took about {service_time} s "
        f"together, not {serial:.1f} s: the loop kept running during the work",
        wrong=f"{clients} slow requests took {result.elapsed:.2f} s, about {clients} × "
              f"{service_time} s: the clients were served one after another",
        hint="time.sleep() stops the whole event loop; `await asyncio.sleep(...)` lets the "
             "loop serve other clients while this one waits",
    )
