"""Checks for 03-Send-UDP-Datagrams.

``check_send_reliably`` runs the student's stop-and-wait sender through a seeded
lossy :class:`~labkit.UDPRelay` to an :class:`~labkit.AckReceiver`, then into a
black hole (a relay that drops everything), and says what went wrong.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

from labkit.servers.relay import AckReceiver, UDPRelay
from labkit.servers.udp import UDPServer

from . import NOT_WRITTEN, Verdict, answers_back, first_failure, unfinished

__all__ = ["check_send_reliably", "LOSSY"]

# The path the check uses: drops, duplicates and reorders in both directions.
LOSSY = dict(drop=0.25, duplicate=0.2, reorder=0.15, seed=2)
LIMIT = 15.0  # seconds the whole run may take
HOLE_LIMIT = 5.0  # seconds the sender may take to give up on a black hole

# send_reliably(sock, messages): the student's stop-and-wait sender
Sender = Callable[[socket.socket, list[bytes]], object]


def _run(send_reliably: Sender, messages: list[bytes], relay_args: dict[str, Any],
         limit: float = LIMIT) -> tuple[str, object, AckReceiver]:
    """Returns (outcome, value, receiver): outcome is ok / raised / timeout."""
    receiver = AckReceiver()
    box: list[tuple[str, object]] = []
    with UDPServer(handler=receiver, name="receiver") as server, \
            UDPRelay(server, **relay_args) as relay, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(relay.address)

        def call() -> None:
            try:
                box.append(("ok", send_reliably(sock, messages)))
            except Exception as exc:  # noqa: BLE001 - the student's exception is the answer
                box.append(("raised", exc))

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        thread.join(limit)
        if thread.is_alive():
            sock.close()  # makes the stuck sender fail instead of running on
            thread.join(1.0)
            return "timeout", None, receiver
    return box[0][0], box[0][1], receiver


def _delivery(outcome: str, value: object, receiver: AckReceiver, messages: list[bytes]
              ) -> Verdict:
    hint_seq = ("every datagram carries its sequence number, in the format the exercise gives; "
                "resend it after each timeout, and move on only when an ACK carrying that same "
                "sequence number comes back; ignore any other ACK (a late or duplicated one)")
    if outcome == "timeout":
        return Verdict(False, f"your sender was still running after {LIMIT:.0f}s",
                       "bound every loop: at most `retries` sends per message, each followed "
                       "by one recv() with sock.settimeout(timeout)")
    if outcome == "raised" and unfinished(value):
        return NOT_WRITTEN
    if outcome == "raised":
        return Verdict(False, f"on the lossy path your sender raised {type(value).__name__}: "
                              f"{value}", "a timeout means 'resend', not 'give up', until the "
                                          "retries run out; " + hint_seq)
    got = receiver.delivered
    if got == messages:
        return Verdict(True, "delivered")
    missing = [m for m in messages if m not in got]
    if missing:
        return Verdict(False, f"{len(missing)} of {len(messages)} messages never reached the "
                              f"receiver, first {missing[0]!r}", hint_seq)
    return Verdict(False, f"the receiver got {got!r}, not {messages!r}", hint_seq)


@answers_back
def check_send_reliably(send_reliably: Sender) -> Verdict:
    """``send_reliably(sock, messages)`` on a UDP socket connected to a lossy relay."""
    if not callable(send_reliably):
        return Verdict(False, "send_reliably is not a function",
                       "define def send_reliably(sock, messages, timeout=0.05, retries=10):")
    messages = [b"message %d" % i for i in range(12)]
    lossy = _delivery(*_run(send_reliably, messages, LOSSY), messages)
    if not lossy:
        return lossy
    outcome, value, _receiver = _run(send_reliably, [b"anyone there?"], dict(drop=1.0),
                                      limit=HOLE_LIMIT)
    if outcome == "timeout":
        hole = Verdict(False, "into a black hole (every datagram dropped) your sender never "
                              "gave up", "after `retries` sends without an ACK, raise TimeoutError")
    elif outcome == "ok":
        hole = Verdict(False, "into a black hole (every datagram dropped) your sender returned "
                              "normally, as if the message had been delivered",
                       "after `retries` sends without an ACK, raise TimeoutError")
    elif not isinstance(value, TimeoutError):
        hole = Verdict(False, f"into a black hole your sender raised {type(value).__name__}, "
                              "not TimeoutError", "raise TimeoutError('no ACK after N tries')")
    else:
        hole = Verdict(True, "gave up")
    return first_failure(
        lossy, hole,
        right=f"all {len(messages)} messages arrived exactly once, in order, through a path "
              "that drops, duplicates and reorders; and into a black hole the sender gave up "
              "with TimeoutError")
