"""Handlers the server tests share: a WebSocket echo and a BackgroundServer loop.

    >>> from handlers import ws_echo, serve_until_stopped
    >>> WebSocketServer(ws_echo); BackgroundServer(serve_until_stopped)
"""


async def ws_echo(ws):
    """Send every message back (a WebSocketServer handler)."""
    async for message in ws:
        await ws.send(message)


def serve_until_stopped(listener, stop):
    """Accept and close connections until ``stop`` is set (a BackgroundServer function)."""
    while not stop.is_set():
        conn, _ = listener.accept()
        conn.close()
