"""Lab servers that run an asyncio event loop of their own, in a thread of their own.

    class MyServer(LoopServer):
        _loop_name = "my server"
        async def _main(self) -> None:
            stopped = self._until_stopped()
            ...                          # bind and start serving, then:
            self._ready.set()
            await stopped                # stop() completes it
            ...                          # close what is open

The notebook's own loop (top-level ``await``) stays free for clients.  An error before
``_ready`` is set is raised by ``__enter__``; one after it goes to ``server.errors``, as
with every lab server.
"""

from __future__ import annotations

import asyncio
import threading

from labkit.servers.base import JOIN_TIMEOUT, LabServer, ServerError

__all__ = ["LoopServer"]


class LoopServer(LabServer):
    """A :class:`LabServer` whose ``_main()`` coroutine runs on its own loop in a thread."""

    _loop_name = "asyncio"  # the thread's name, and what a start that timed out names

    def __init__(self, *, host: str, name: str) -> None:
        super().__init__(host=host, name=name)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    async def _main(self) -> None:
        raise NotImplementedError

    def _until_stopped(self) -> asyncio.Future[None]:
        """The future ``stop()`` completes; ``_main`` makes it first, on its running loop."""
        loop = asyncio.get_running_loop()
        self._stopped = stopped = loop.create_future()
        self._loop = loop  # after the future: _wake() needs both
        return stopped

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the owning cell
            if self._ready.is_set():
                self.record_error(exc)
            else:
                self._startup_error = exc
        finally:
            self._ready.set()  # only now: __enter__ sees the startup error, if any

    def _start_loop(self) -> threading.Thread:
        """Start ``_main`` in its thread; return once it serves, or raise why it cannot."""
        thread = self._spawn(self._run, name=self._loop_name)
        if not self._ready.wait(JOIN_TIMEOUT):
            raise RuntimeError(f"{self.name}: the {self._loop_name} server did not start in "
                               f"{JOIN_TIMEOUT}s")
        if self._startup_error is not None:
            raise ServerError(f"{self.name} could not start: {self._startup_error}") \
                from self._startup_error
        return thread

    def _wake(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            def wake() -> None:
                if not stopped.done():  # stop() may wake it twice
                    stopped.set_result(None)

            try:
                loop.call_soon_threadsafe(wake)
            except RuntimeError:
                pass  # the loop has just finished
