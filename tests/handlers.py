"""Handlers the server tests share: a WebSocket echo and a BackgroundServer loop; and a
process out of threads.

    >>> from handlers import ws_echo, serve_until_stopped
    >>> WebSocketServer(ws_echo); BackgroundServer(serve_until_stopped)
"""

import threading


async def ws_echo(ws):
    """Send every message back (a WebSocketServer handler)."""
    async for message in ws:
        await ws.send(message)


def serve_until_stopped(listener, stop):
    """Accept and close connections until ``stop`` is set (a BackgroundServer function)."""
    while not stop.is_set():
        conn, _ = listener.accept()
        conn.close()


class OutOfThreads:
    """Threads whose name ends with ``suffix`` cannot start (RuntimeError, as when the
    process has none left) until :meth:`end`; ``retried`` is set after three refusals.

        >>> short = OutOfThreads(monkeypatch, "-_serve")
        >>> short.retried.wait(5); short.end()
    """

    def __init__(self, monkeypatch, suffix: str):
        self.retried, self._short, self._refused = threading.Event(), threading.Event(), 0
        self._short.set()
        real_start = threading.Thread.start

        def start(thread):
            if self._short.is_set() and thread.name.endswith(suffix):
                self._refused += 1
                if self._refused >= 3:
                    self.retried.set()
                raise RuntimeError("can't start new thread")
            return real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", start)

    def end(self) -> None:
        self._short.clear()
