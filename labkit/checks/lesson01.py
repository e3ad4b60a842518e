"""Checks for 01-Watch-A-TCP-Handshake.

``check_ack_predictions`` compares a prediction with a capture it makes itself (so the
student predicts before any packet is sent), or with one it is given: in replay mode only
one of the student's own conversation (see :func:`not_a_recording`).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from labkit.capture.sockets import settled_tcp_states
from labkit.servers.tcp import TCPHandler, TCPServer

from . import Verdict, answers_back, first_failure, not_a_recording, verdict

if TYPE_CHECKING:
    from labkit.capture.capture import Capture

WAIT = 3.0  # seconds the check's client waits for the student's server to close
HELLO, BYE = b"hello\n", b"bye\n"  # Exercise 3: what the client says, what it awaits
# What the check's client sends in Exercise 1, one message at a time, each echo awaited.
ACK_MESSAGES = (b"ping", b"0123456789", b"!")


def acks_after_client_data(wire: Capture) -> list[int | None]:
    """The server's ACK number that answers each client data segment, in order (None: no
    ACK in the capture answers it)."""
    segs = wire.segments
    acks: list[int | None] = []
    for i, seg in enumerate(segs):
        if seg.src == "client" and seg.length and seg.seq is not None:
            reply = next((s for s in segs[i + 1:] if s.src == "server" and s.ack is not None
                          and s.ack >= seg.seq + seg.length), None)
            acks.append(reply.ack if reply else None)
    return acks


def _capture_messages(messages: Sequence[bytes]) -> Capture:
    """An echo server, and a client that sends each message and waits for its echo, captured
    under the exercise's name (its recording in replay mode)."""
    from labkit.capture.capture import Capture

    with TCPServer("echo") as server, Capture(server, name="01-exercise-acks") as wire:
        with socket.create_connection(server.address, timeout=WAIT) as sock:
            for message in messages:
                sock.sendall(message)
                sock.recv(1024)
    return wire


@answers_back
def check_ack_predictions(predicted: Sequence[int], wire: Capture | None = None) -> Verdict:
    """Compare the student's predicted ACK numbers with the ones in a capture: ``wire``, or
    (the exercise) one the check makes of a client sending :data:`ACK_MESSAGES`."""
    if not isinstance(predicted, (list, tuple)) or not all(isinstance(n, int) for n in predicted):
        return Verdict(False, f"give a list of whole numbers, not {predicted!r}",
                       "one ACK number per message the client sent, as a list of ints")
    if wire is None:
        wire = _capture_messages(ACK_MESSAGES)
    refused = not_a_recording(wire)
    if refused is not None:  # (a failed Verdict is falsy)
        return refused
    actual = acks_after_client_data(wire)
    if len(predicted) != len(actual):
        return Verdict(False, f"you gave {len(predicted)} numbers, but the client sent "
                       f"{len(actual)} messages", "one ACK number per client message")
    for n, (p, a) in enumerate(zip(predicted, actual, strict=True), 1):
        if p != a:
            return Verdict(False, f"message {n}: the server did not answer it with ack={p}",
                           "the ACK names the next byte the server expects: the client's first "
                           "data byte is seq 1 (the SYN used 0), and each byte adds one; count "
                           "every byte the client has sent up to the end of this message")
    return Verdict(True, f"the server acknowledged {actual}: each ACK is 1 + every byte so far")


@answers_back
def check_is_port_open(is_port_open: Callable[[str, int], bool]) -> Verdict:
    """``is_port_open(host, port)`` must say True for a listening port, False for a closed one."""
    # A bound socket that does not listen: the kernel answers a SYN with RST, and no other
    # program can take the port while the check runs (a closed one could be reused).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
        try:
            with TCPServer("echo") as server:
                when_open = is_port_open("127.0.0.1", server.port)
            when_closed = is_port_open("127.0.0.1", closed)
        except ConnectionRefusedError:
            return Verdict(False, "is_port_open let ConnectionRefusedError escape",
                           "a refused connection (the RST) reaches your code as an exception: "
                           "that exception is the answer False, not an error to pass on")
    return first_failure(
        verdict(when_open is True, "", wrong=f"for a listening port it returned {when_open!r}",
                hint="a connection that was accepted means the port is open: say so with True "
                     "(and close the socket)"),
        verdict(when_closed is False, "", wrong=f"for a closed port it returned {when_closed!r}",
                hint="the kernel answers a SYN to a closed port with RST: "
                     "that is ConnectionRefusedError"),
        right="True for a listening port, False when the SYN is answered by RST")


@answers_back
def check_server_closes_first(handler: TCPHandler) -> Verdict:
    """Run ``handler`` as the server; the client sends ``HELLO``, reads until the server
    closes, then closes too.

    Passes if the client got ``BYE`` and the kernel then holds the *server's* end of
    the connection in TIME-WAIT: the server read the line, answered and closed first.  A
    handler that returns at once fails: closing a socket with bytes it never read (or
    getting bytes after closing) sends RST, which leaves nobody in TIME-WAIT.
    """
    if not callable(handler):
        return Verdict(False, f"pass your handler function, not {handler!r}",
                       "def server_closes_first(conn, addr): ...")
    finished = threading.Event()

    def run(conn: socket.socket, addr: Any) -> None:
        try:
            handler(conn, addr)
        finally:
            finished.set()

    received, reset = b"", False
    with TCPServer(run) as server:
        with socket.create_connection(server.address, timeout=WAIT) as client:
            client_port = client.getsockname()[1]
            client.sendall(HELLO)
            try:
                while data := client.recv(4096):  # read until the server closes (EOF)
                    received += data[:64 - len(received)]  # a flood: its start is enough
            except TimeoutError:
                return Verdict(False, f"the client waited {WAIT:g} s and the server never closed",
                               "the handler must close the connection itself: return from it "
                               "(labkit closes conn then) or call conn.close()")
            except ConnectionResetError:
                reset = True
        finished.wait(WAIT)
        states = {s.local[1]: s.state for s in settled_tcp_states(client_port, server.port)}
    server_side = [state for port, state in states.items() if port != client_port]
    client_side = states.get(client_port, "gone")
    if reset or not states:
        return Verdict(False, "the connection ended with a reset (RST), not a FIN: neither end "
                       "is in TIME-WAIT",
                       f"a socket closed with bytes it never read (the client's {HELLO!r}) "
                       "sends RST: read the client's line with conn.recv() before you close")
    if received != BYE:
        return Verdict(False, f"the client received {received[:40]!r}",
                       f"send {BYE!r} with conn.sendall() before you close")
    if "TIME-WAIT" in server_side:
        return Verdict(True, "the server read the line, answered and closed first, so the "
                       f"server's end is in TIME-WAIT (client's end: {client_side})")
    return Verdict(False, f"the client's end is {client_side}, the server's end "
                   f"{server_side[0] if server_side else 'gone'}",
                   "whoever sends the first FIN waits in TIME-WAIT: the server must close "
                   "before the client does, without waiting for the client to close")
