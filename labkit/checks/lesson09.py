"""Checks for 09-Watch-TCP-Recover-From-Loss.

``check_mathis_prediction`` compares a prediction with ``MSS/RTT · C/√p`` and names the
usual slip (bytes for bits, p for √p, milliseconds for seconds, no C).
``check_sliding_window`` runs the student's sender on a lab host, through a seeded link
that delays, loses, duplicates and reorders in both directions, to the stop-and-wait
receiver of lesson 03 (:class:`~labkit.AckReceiver`, whose ACK ``n`` means "all up to
``n`` arrived"), and says whether everything arrived - and whether the sender really kept
several datagrams in flight, which is what makes it faster than stop-and-wait.
"""

from __future__ import annotations

import math
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from labkit.net.hosts import LabNetwork
from labkit.net.impairment import Impairment
from labkit.servers.relay import AckReceiver
from labkit.servers.udp import UDPServer
from labkit.views.models import mathis_throughput

from . import NOT_WRITTEN, Verdict, answers_back, unfinished

__all__ = ["check_mathis_prediction", "check_sliding_window", "PREDICT", "WINDOW_LINK"]

# exercise 1: the link to predict for (a setting the lesson's own measurements do not show)
PREDICT = dict(mss=1448, rtt=0.080, loss=0.02)
TOLERANCE = 0.03   # a prediction within 3 % is right (rounding C or √p on the way)

# exercise 2: each way 10 ms, 5 % lost, 2 % duplicated, 5 % reordered
WINDOW_LINK = Impairment(delay=0.010, loss=0.05, duplicate=0.02, reorder=0.05, seed=9)
CHUNKS = [b"chunk %03d " % i + bytes(range(256)) * 2 for i in range(120)]
LIMIT = 20.0          # seconds the sender may take
IN_FLIGHT = 4         # new datagrams arriving within one round trip: a window, not stop-and-wait
BUSY_TOLERANCE = 0.005  # s: frames later than this can spread a window over a round trip
SEQ = struct.Struct("!I")

# send_file(sock, chunks): the student's sliding-window sender
Sender = Callable[[socket.socket, list[bytes]], object]


@answers_back
def check_mathis_prediction(predicted_mbit: float) -> Verdict:
    """``predicted_mbit``: the throughput (Mbit/s) Mathis predicts for ``PREDICT``."""
    if isinstance(predicted_mbit, bool) or not isinstance(predicted_mbit, (int, float)):
        return Verdict(False, f"the prediction should be a number of Mbit/s, not "
                              f"{predicted_mbit!r}", "compute it with math.sqrt, e.g. "
                                                     "mss / rtt * C / math.sqrt(p)")
    right = mathis_throughput(**PREDICT) * 8 / 1e6
    if abs(predicted_mbit - right) <= TOLERANCE * right:
        return Verdict(True, f"{predicted_mbit:.2f} Mbit/s: MSS/RTT = "
                             f"{PREDICT['mss'] / PREDICT['rtt'] * 8 / 1e6:.2f} Mbit/s, times "
                             f"C/√p = {math.sqrt(1.5) / math.sqrt(PREDICT['loss']):.2f}")
    slips = [  # (what the slip gives, the hint that points at it)
        (right / 8, "that is bytes per second: a byte is 8 bits"),
        (right * 8, "you multiplied by 8 twice, or started from bits: MSS is in bytes"),
        (right / math.sqrt(PREDICT["loss"]), "the loss rate enters under a square root"),
        (right / math.sqrt(1.5), "you left out C = √(3/2) ≈ 1.22"),
        (right / 1000, f"the RTT goes in seconds: {PREDICT['rtt'] * 1000:g} ms is "
                       f"{PREDICT['rtt']:g} s"),
        (right * 1e6, "the answer is in Mbit/s: divide bits per second by 1,000,000"),
    ]
    for value, hint in slips:
        if value and abs(predicted_mbit - value) <= TOLERANCE * value:
            return Verdict(False, f"{predicted_mbit:g} Mbit/s is off by a factor of "
                                  f"{max(predicted_mbit, right) / min(predicted_mbit, right):.3g}",
                           hint)
    return Verdict(False, f"{predicted_mbit:g} Mbit/s is not what the formula gives",
                   "MSS/RTT · C/√p with MSS in bytes, RTT in seconds, p as a fraction and "
                   "C = √(3/2): that is bytes per second; × 8 / 1e6 makes Mbit/s")


class _WatchingReceiver(AckReceiver):
    """Lesson 03's receiver, noting when each sequence number first arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.first_seen: dict[int, float] = {}

    def __call__(self, data: bytes, addr: Any) -> bytes | None:
        if len(data) >= SEQ.size:
            self.first_seen.setdefault(SEQ.unpack_from(data)[0], time.monotonic())
        return super().__call__(data, addr)

    def most_in_one_round_trip(self, rtt: float) -> int:
        """The most new sequence numbers that first arrived within ``0.75 · rtt``: a
        stop-and-wait sender never has a second one out before an ACK came back."""
        times = sorted(self.first_seen.values())
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] > 0.75 * rtt:
                lo += 1
            best = max(best, hi - lo + 1)
        return best


def _run(send_file: Sender, chunks: list[bytes]
         ) -> tuple[str, object, _WatchingReceiver, str | None]:
    """(outcome, value, receiver, busy): outcome is ok / raised / timeout; busy is the
    link's sentence if the machine made it late (the timings are then the machine's)."""
    receiver = _WatchingReceiver()
    box: list[tuple[str, object]] = []
    with LabNetwork(WINDOW_LINK) as net:
        with net.on("server"), UDPServer(handler=receiver, host=net.addresses["server"],
                                         name="receiver") as server:
            with net.on("client"):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.connect(server.address)

                def call() -> None:
                    try:
                        box.append(("ok", send_file(sock, list(chunks))))
                    except Exception as exc:  # noqa: BLE001 - the student's exception is the answer
                        box.append(("raised", exc))

                # started on the client host: the sender's thread sends from there
                thread = threading.Thread(target=call, daemon=True)
                thread.start()
            thread.join(LIMIT)
            sock.close()  # a sender still running fails now instead of running on
            thread.join(1.0)
    busy = net.too_busy(tolerance=BUSY_TOLERANCE)
    if not box:
        return "timeout", None, receiver, busy
    return box[0][0], box[0][1], receiver, busy


@answers_back
def check_sliding_window(send_file: Sender) -> Verdict:
    """``send_file(sock, chunks)`` with a UDP socket connected to the receiver."""
    if not callable(send_file):
        return Verdict(False, "send_file is not a function",
                       "define def send_file(sock, chunks, window=8, timeout=0.05):")
    outcome, value, receiver, busy = _run(send_file, CHUNKS)
    if outcome == "raised" and isinstance(value, BaseException) and unfinished(value):
        return NOT_WRITTEN
    # a late link can spread a window's datagrams over more than a round trip (a stop-and-
    # wait sender never has two in one), or hold a right sender past the time limit
    most = receiver.most_in_one_round_trip(2 * WINDOW_LINK.delay)
    if busy and (outcome == "timeout" or (outcome == "ok" and 1 < most < IN_FLIGHT)):
        return Verdict(False, f"{busy}: the check cannot judge your sender this time",
                       "run the check again when the machine is quieter")
    if outcome == "timeout":
        return Verdict(False, f"your sender was still running after {LIMIT:.0f}s",
                       "the window moves when an ACK comes: ACK n means every chunk up to n "
                       "arrived, so the oldest unacknowledged chunk becomes n + 1; after a "
                       "timeout, send again from there")
    if outcome == "raised":
        return Verdict(False, f"on the lossy link your sender raised {type(value).__name__}: "
                              f"{value}", "a timeout means 'send the unacknowledged chunks "
                                          "again', not 'give up'")
    got = receiver.delivered
    if got != CHUNKS:
        return Verdict(False, f"{len(got)} of {len(CHUNKS)} chunks reached the receiver before "
                              "your sender returned",
                       "return only when the ACK of the last chunk has come back; until then, "
                       "send again whatever is not acknowledged when the timeout expires")
    if most < IN_FLIGHT:
        return Verdict(False, f"all {len(CHUNKS)} chunks arrived, but never more than {most} "
                              f"new one(s) within a round trip: that is stop-and-wait",
                       "send up to `window` chunks before waiting for any ACK, and send the "
                       "next one as soon as an ACK moves the window on")
    return Verdict(True, f"all {len(CHUNKS)} chunks arrived exactly once and in order through "
                         "a link that loses, duplicates and reorders, with several in flight "
                         "per round trip")
