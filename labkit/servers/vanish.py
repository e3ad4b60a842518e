"""A peer that vanishes without a word: its kernel forgets a connection and sends nothing.

    >>> served, _ = listener.accept()          # on the server host
    >>> forget(served)                          # as if the server host had crashed and rebooted
    >>> client.send(b"still there?")            # the client's kernel still believes in it...
    >>> client.recv(100)                        # ...until the server's RST comes back
    ConnectionResetError: [Errno 104] Connection reset by peer

A crashed host says nothing: no FIN, no RST. When it comes back its kernel has no record of
the connection, so the next segment the other side sends is answered with a RST. Closing a
socket always says something (a FIN, or with ``SO_LINGER`` 0 a RST), so ``forget`` first puts
the socket in the kernel's *repair* mode (``TCP_REPAIR``, made for checkpoint/restore:
in it, ``close()`` drops the connection silently). That needs CAP_NET_ADMIN in the socket's
network: the lab kernel and its lab hosts have it.
"""

from __future__ import annotations

import socket

from labkit.servers import arguments

__all__ = ["forget"]

TCP_REPAIR = getattr(socket, "TCP_REPAIR", 19)  # linux/tcp.h; Python names it in 3.12+


def forget(sock: socket.socket) -> None:
    """Close the TCP connection ``sock`` without a packet (no FIN, no RST), as a host that
    crashes does; the peer finds out only when it next sends something."""
    if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
        arguments.fail(TypeError, "sock", "a connected TCP socket", sock,
                       "the socket accept() returned")
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    except PermissionError as exc:
        raise PermissionError(
            exc.errno, "forget() needs CAP_NET_ADMIN in the socket's network (TCP_REPAIR): "
            "run it in the lab kernel, Python 3 (netlab), on a lab host") from exc
    sock.close()
