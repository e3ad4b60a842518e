"""Lesson 09: each check says ❌ with the fitting hint to a student's likely mistake, and ✅
to a right answer.  The sliding-window check runs on a LabNetwork (conftest's lab_hosts)."""

import math
import struct

from checking import says_right, says_wrong, wrong_answer_to

from labkit.checks import lesson09

SEQ = struct.Struct("!I")


# -- exercise 1: Mathis --------------------------------------------------------------------
RIGHT = 1448 / 0.080 * math.sqrt(1.5) / math.sqrt(0.02) * 8 / 1e6   # 1.254 Mbit/s


@wrong_answer_to(lesson09.check_mathis_prediction)
def test_each_usual_slip_gets_its_own_hint():
    for wrong, hint in [(RIGHT / 8, "8 bits"), (RIGHT * 8, "multiplied by 8 twice"),
                        (RIGHT / math.sqrt(0.02), "square root"),
                        (RIGHT / math.sqrt(1.5), "C = √(3/2)"),
                        (RIGHT / 1000, "80 ms is 0.08 s"), (RIGHT * 1e6, "1,000,000"),
                        (2.0, "C = √(3/2): that is bytes per second")]:
        says_wrong(lesson09.check_mathis_prediction(wrong), hint=hint)
    says_wrong(lesson09.check_mathis_prediction("3.5"), message="a number", hint="math.sqrt")
    says_right(lesson09.check_mathis_prediction(RIGHT))
    says_right(lesson09.check_mathis_prediction(1.25))   # rounded on the way: still right


# -- exercise 2: a sliding window over UDP --------------------------------------------------
def go_back_n(sock, chunks, window=8, timeout=0.05):
    sock.settimeout(timeout)
    base = next_seq = 0
    while base < len(chunks):
        while next_seq < min(base + window, len(chunks)):
            sock.send(SEQ.pack(next_seq) + chunks[next_seq])
            next_seq += 1
        try:
            (acked,) = SEQ.unpack(sock.recv(64)[:4])
            base = max(base, acked + 1)
        except TimeoutError:
            next_seq = base


def stop_and_wait(sock, chunks):
    go_back_n(sock, chunks, window=1)


def fire_and_forget(sock, chunks):
    for i, chunk in enumerate(chunks):
        sock.send(SEQ.pack(i) + chunk)


def gives_up(sock, chunks):
    sock.settimeout(0.05)
    for i, chunk in enumerate(chunks):
        sock.send(SEQ.pack(i) + chunk)
        sock.recv(64)        # the first lost datagram or ACK: TimeoutError


def todo(sock, chunks):
    raise NotImplementedError()


@wrong_answer_to(lesson09.check_sliding_window)
def test_stop_and_wait_delivers_but_is_not_a_window(lab_hosts):
    says_wrong(lesson09.check_sliding_window(stop_and_wait), message="that is stop-and-wait",
               hint="up to `window` chunks")


@wrong_answer_to(lesson09.check_sliding_window)
def test_a_sender_that_never_resends_loses_chunks(lab_hosts):
    says_wrong(lesson09.check_sliding_window(fire_and_forget), message="chunks reached",
               hint="send again whatever is not acknowledged")
    says_wrong(lesson09.check_sliding_window(gives_up), message="raised TimeoutError",
               hint="not 'give up'")
    says_wrong(lesson09.check_sliding_window("send_file"), message="not a function",
               hint="def send_file")


def test_a_go_back_n_sender_is_right_and_unfinished_code_is_not_written(lab_hosts):
    says_right(lesson09.check_sliding_window(go_back_n))
    assert lesson09.check_sliding_window(todo).message.startswith("your code is not written")


def test_a_late_link_makes_the_window_check_say_so_not_judge(monkeypatch):
    receiver = lesson09._WatchingReceiver()
    receiver.delivered = list(lesson09.CHUNKS)
    receiver.first_seen = {0: 0.0, 1: 0.001, 2: 0.030, 3: 0.031}   # at most 2 per round trip
    busy = "this machine was too busy for this measurement: 3 frames left up to 40 ms late"
    monkeypatch.setattr(lesson09, "_run", lambda send_file, chunks: ("ok", None, receiver, busy))
    says_wrong(lesson09.check_sliding_window(go_back_n), message="cannot judge your sender",
               hint="quieter")
    receiver.first_seen = {0: 0.0, 1: 0.030, 2: 0.060}               # one per round trip
    says_wrong(lesson09.check_sliding_window(go_back_n), message="that is stop-and-wait",
               hint="up to `window` chunks")
