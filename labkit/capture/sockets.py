"""What the kernel itself says about TCP sockets, read from /proc/net/tcp{,6}.

    >>> [s.state for s in tcp_states(server.port)]
    ['LISTEN', 'TIME-WAIT']

The same table ``ss -tan`` prints; read here so a notebook can assert on it.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from labkit.servers.base import check_port
from labkit.servers.conversation import proc_tcp_rows

__all__ = ["SocketState", "tcp_states", "settled_tcp_states"]

# include/net/tcp_states.h; names as `ss` prints them
_STATES = {1: "ESTAB", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2",
           6: "TIME-WAIT", 7: "CLOSE", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN",
           11: "CLOSING", 12: "NEW-SYN-RECV"}


@dataclass(frozen=True)
class SocketState:
    """One TCP socket as the kernel lists it (a line of ``ss -tan``).

    Attributes:
        local: the socket's own ``(address, port)``
        remote: the peer's ``(address, port)`` (``("0.0.0.0", 0)`` for a listener)
        state: its TCP state, as ``ss`` names it: ``"ESTAB"``, ``"TIME-WAIT"``, ...
        expires_in: seconds until the kernel's timer on it fires (in TIME-WAIT: until the
            kernel forgets the connection); None when no timer runs
    """

    local: tuple[str, int]
    remote: tuple[str, int]
    state: str
    expires_in: float | None = None


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc/net/tcp counts timers in these


def _timer(field: str) -> float | None:
    """``tr:tm->when`` of /proc/net/tcp: no timer (tr 0) or the ticks left on it."""
    running, ticks = field.split(":")
    return None if int(running, 16) == 0 else int(ticks, 16) / _CLOCK_TICKS


def _address(text: str) -> tuple[str, int]:
    hexip, hexport = text.split(":")
    raw = bytes.fromhex(hexip)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])  # stored as a little-endian word
    else:  # four little-endian 32-bit words
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        ip = socket.inet_ntop(socket.AF_INET6, words)
    return ip, int(hexport, 16)


def tcp_states(port: int, peer_port: int | None = None, *,
               proc: Path = Path("/proc/thread-self/net")) -> list[SocketState]:
    """Every TCP socket with ``port`` at one end (and ``peer_port`` at the other, if given).

    Name both ports to pick one connection: an ephemeral port still in TIME-WAIT
    from an earlier connection may already be reused for a new one.  The table is the
    calling thread's network's (``/proc/thread-self``): inside ``net.on("client")``, the
    client host's.
    """
    check_port(port, low=1)
    if peer_port is not None:
        check_port(peer_port, low=1)
    found = []
    for fields in proc_tcp_rows(proc):
        local, remote = _address(fields[1]), _address(fields[2])
        ends = (local[1], remote[1])
        if port in ends and (peer_port is None or peer_port in ends):
            found.append(SocketState(local, remote, _STATES.get(int(fields[3], 16), "?"),
                                     _timer(fields[5])))
    return found


# States in which the kernel is still waiting for a packet that is already on its way.
_IN_FLIGHT = {"SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "CLOSING", "LAST-ACK"}
POLL_INTERVAL = 0.002


def settled_tcp_states(port: int, peer_port: int | None = None, *,
                       timeout: float = 2.0) -> list[SocketState]:
    """:func:`tcp_states` once no socket on ``port`` is mid-handshake or mid-teardown.

    The kernel sends no notification when a TCP state changes, so this re-reads
    /proc until the condition holds, bounded by ``timeout``, then returns what it saw.
    """
    pause = threading.Event()  # never set: wait() is the polling interval
    for _ in range(max(1, int(timeout / POLL_INTERVAL))):
        states = tcp_states(port, peer_port)
        if not any(s.state in _IN_FLIGHT for s in states):
            return states
        pause.wait(POLL_INTERVAL)
    return tcp_states(port, peer_port)
