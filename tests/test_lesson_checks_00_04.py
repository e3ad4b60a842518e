"""Lessons 00-04: each check says ❌ with the fitting hint to a student's likely mistake.

The wrong answers are small functions like those a student writes in the notebooks'
exercise cells; they run against real labkit servers on loopback.  Checks that read a
capture need live capture (the ``live`` fixture skips without CAP_NET_RAW).
"""

import functools
import socket
import struct

from checking import says_right, says_wrong, wrong_answer_to

from labkit import Capture, TCPServer
from labkit.capture.capture import capture_mode
from labkit.checks import lesson00, lesson01, lesson02, lesson03, lesson04


def echo_cell(*messages, connect=True):
    """The notebooks' echo exercise: send each message and read its echo, under capture."""
    with TCPServer("echo") as server, Capture(server) as wire:
        if connect:
            with socket.create_connection(server.address, timeout=3) as sock:
                for message in messages:
                    sock.sendall(message)
                    sock.recv(1024)
    return wire


# -- 00 Start here ---------------------------------------------------------------------------
def mode_of(report):
    return report.splitlines()[0].split(":", 1)[1].split()[0]


@wrong_answer_to(lesson00.check_mode_answer)
def test_mode_reader_that_types_the_mode_or_searches_the_whole_report():
    says_wrong(lesson00.check_mode_answer(None), message="not written yet",
               hint="write your answer in the cell above")
    says_wrong(lesson00.check_mode_answer(capture_mode()[0]), message="give your function",
               hint="without parentheses")
    mode = capture_mode()[0]
    for typed in (lambda report: mode, lambda report: "live"):       # the answer typed in
        says_wrong(lesson00.check_mode_answer(typed), message="returned",
                   hint="read the mode out of the report the function is given")
    in_report = lambda report: next(m for m in ("live", "replay", "record") if m in report)  # noqa: E731
    says_wrong(lesson00.check_mode_answer(in_report), message="returned",
               hint="not this kernel's mode or a word found elsewhere")
    not_cut = lambda report: report.splitlines()[0].split(":")[1]     # " replay — forced ..."  # noqa: E731
    says_wrong(lesson00.check_mode_answer(not_cut), message="returned ' replay — LABKIT_CAPTURE=",
               hint="capture mode : <mode> — <why>")
    spaces = lambda report: report.splitlines()[0].split(":", 1)[1].split("—")[0]  # noqa: E731
    says_wrong(lesson00.check_mode_answer(spaces), message="with spaces or capitals",
               hint="strip()")
    says_wrong(lesson00.check_mode_answer(lambda report: report[15]), message="returned 'r'",
               hint="capture mode : <mode> — <why>")
    says_wrong(lesson00.check_mode_answer(lambda report: report.split()[99]),
               message="raised IndexError", hint="split(':', 1)")
    says_right(lesson00.check_mode_answer(mode_of))


@wrong_answer_to(lesson00.check_first_capture)
def test_first_capture_without_a_connection_or_with_other_bytes(live):
    says_wrong(lesson00.check_first_capture(TCPServer("echo")), message="not a finished capture",
               hint="pass the `wire`")
    says_wrong(lesson00.check_first_capture(echo_cell(connect=False)),
               message="not written yet", hint="inside the `with` block")
    says_wrong(lesson00.check_first_capture(echo_cell(b"pong")), message="b'pong'",
               hint="send exactly the bytes the exercise names")


# -- 01 Watch a TCP handshake ----------------------------------------------------------------
@wrong_answer_to(lesson01.check_ack_predictions)
def test_ack_predictions_that_forget_the_syn_or_give_lengths(live):
    wire = echo_cell(b"ping", b"0123456789", b"!")
    says_wrong(lesson01.check_ack_predictions("5, 15, 16", wire), message="whole numbers",
               hint="one ACK number per message")
    says_wrong(lesson01.check_ack_predictions([], wire), message="you gave 0 numbers",
               hint="one ACK number per client message")
    for guess in ([4, 14, 15], [4, 10, 1]):     # the SYN's 1 forgotten; the message lengths
        says_wrong(lesson01.check_ack_predictions(guess, wire),
                   message="message 1: the server did not answer it with ack=4",
                   hint="the SYN used 0")


@wrong_answer_to(lesson01.check_ack_predictions)
def test_ack_predictions_checked_on_the_checks_own_capture(live):
    """The exercise: the prediction comes first, the check then sends the messages itself."""
    says_wrong(lesson01.check_ack_predictions([5, 14, 15]),
               message="message 2: the server did not answer it with ack=14",
               hint="count every byte the client has sent")
    says_wrong(lesson01.check_ack_predictions([5, 15]), message="you gave 2 numbers",
               hint="one ACK number per client message")
    says_right(lesson01.check_ack_predictions([5, 15, 16]))


def refusal_escapes(host, port):
    with socket.create_connection((host, port), timeout=2):
        return True


def forgets_true(host, port):
    try:
        with socket.create_connection((host, port), timeout=2):
            pass                                   # no `return True`: None
    except ConnectionRefusedError:
        return False


def returns_the_errno(host, port):
    with socket.socket() as sock:
        return sock.connect_ex((host, port))       # 0 when open, 111 when refused


def is_port_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except ConnectionRefusedError:
        return False


@wrong_answer_to(lesson01.check_is_port_open)
def test_is_port_open_that_lets_rst_escape_or_returns_no_bool():
    says_wrong(lesson01.check_is_port_open(refusal_escapes),
               message="let ConnectionRefusedError escape",
               hint="that exception is the answer False")
    says_wrong(lesson01.check_is_port_open(forgets_true), message="returned None",
               hint="a connection that was accepted means the port is open")
    says_wrong(lesson01.check_is_port_open(returns_the_errno), message="returned 0",
               hint="say so with True")
    says_right(lesson01.check_is_port_open(is_port_open))


@wrong_answer_to(lesson01.check_server_closes_first)
def test_server_that_waits_resets_or_does_nothing(monkeypatch):
    def waits_for_client(conn, addr):
        conn.recv(1024)
        conn.sendall(b"bye\n")
        while conn.recv(1024):                    # the client's FIN ends this, which never comes
            pass

    def does_nothing(conn, addr):                 # labkit closes conn when it returns
        pass

    def answers_without_reading(conn, addr):      # closes with the client's line unread
        conn.sendall(b"bye\n")

    def reads_and_says_nothing(conn, addr):
        conn.recv(1024)

    def reads_answers_and_closes(conn, addr):
        conn.recv(1024)
        conn.sendall(b"bye\n")
        conn.close()

    monkeypatch.setattr(lesson01, "WAIT", 0.5)
    says_wrong(lesson01.check_server_closes_first(waits_for_client),
               message="the server never closed", hint="call conn.close()")
    for resets in (does_nothing, answers_without_reading):
        says_wrong(lesson01.check_server_closes_first(resets), message="reset (RST), not a FIN",
                   hint="read the client's line with conn.recv() before you close")
    says_wrong(lesson01.check_server_closes_first(reads_and_says_nothing),
               message="the client received b''", hint="send b'bye\\n'")
    says_right(lesson01.check_server_closes_first(reads_answers_and_closes))


# -- 02 Frame messages on a TCP stream -------------------------------------------------------
def recv_exactly(sock, n):
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise EOFError(f"peer closed after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


def one_recv(sock, n):
    return sock.recv(n)


def loops_on_eof(sock, n):
    buf = b""
    while len(buf) < n:
        buf += sock.recv(n - len(buf))            # b'' forever once the peer has closed
    return buf


def returns_short(sock, n):
    buf = b""
    while len(buf) < n and (data := sock.recv(n - len(buf))):
        buf += data
    return buf                                    # fewer than n bytes if the peer closed


def raises_value_error(sock, n):
    data = returns_short(sock, n)
    if len(data) < n:
        raise ValueError("short read")
    return data


@wrong_answer_to(lesson02.check_recv_exactly)
def test_recv_exactly_with_one_recv_or_no_eof_handling():
    says_wrong(lesson02.check_recv_exactly(one_recv), message="dribbled in 3-byte pieces",
               hint="loop, asking only for what is still missing")
    says_wrong(lesson02.check_recv_exactly(loops_on_eof), message="kept calling recv()",
               hint="raise EOFError")
    says_wrong(lesson02.check_recv_exactly(returns_short),
               message="returned b'abcde' instead of raising",
               hint="recv() returns b'' when the peer has closed")
    says_wrong(lesson02.check_recv_exactly(raises_value_error), message="raised ValueError",
               hint="raise EOFError (or ConnectionError)")
    says_right(lesson02.check_recv_exactly(recv_exactly))


def header_in_one_recv(sock):
    (length,) = struct.unpack("!I", sock.recv(4))
    return recv_exactly(sock, length)


def body_in_one_recv(sock):
    (length,) = struct.unpack("!I", recv_exactly(sock, 4))
    return sock.recv(length)


def little_endian(sock, order="<I"):
    (length,) = struct.unpack(order, recv_exactly(sock, 4))
    return recv_exactly(sock, length)


def little_endian_too_big_to_hold(sock):
    (length,) = struct.unpack("<I", recv_exactly(sock, 4))
    if length > 2**24:
        raise MemoryError()        # as allocating a buffer of `length` bytes would
    return recv_exactly(sock, length)


def swallows_eof(sock):
    try:
        (length,) = struct.unpack("!I", recv_exactly(sock, 4))
        return recv_exactly(sock, length)
    except EOFError:
        return b""


def read_message(sock):
    (length,) = struct.unpack("!I", recv_exactly(sock, 4))
    return recv_exactly(sock, length)


@wrong_answer_to(lesson02.check_read_message)
def test_read_message_that_trusts_one_recv_or_the_wrong_byte_order(monkeypatch):
    says_wrong(lesson02.check_read_message(header_in_one_recv), message="raised error",
               hint="a message is a 4-byte header")
    says_wrong(lesson02.check_read_message(body_in_one_recv), message="in uneven pieces",
               hint="read each part whole")
    monkeypatch.setattr(lesson02, "WAIT", 0.3)      # the wait for 33 MB that never come
    for order in ("<I", "I"):                        # 'I': this machine's (little-endian) order
        wrong_order = functools.partial(little_endian, order=order)
        says_wrong(lesson02.check_read_message(wrong_order),
                   message="2 read little-endian (least significant byte first) is 33,554,432",
                   hint="struct.unpack('!I', header)")
    monkeypatch.undo()
    says_wrong(lesson02.check_read_message(little_endian_too_big_to_hold),
               message="raised MemoryError: it tried to hold more bytes than this machine has",
               hint="network byte order, big-endian")
    says_wrong(lesson02.check_read_message(swallows_eof), message="returned b'' instead of raising",
               hint="raise EOFError")
    says_right(lesson02.check_read_message(read_message))


# -- 03 Send UDP datagrams -------------------------------------------------------------------
def gives_up_at_first_loss(sock, messages, timeout=0.05, retries=10):
    sock.settimeout(timeout)
    for seq, message in enumerate(messages):
        sock.send(struct.pack("!I", seq) + message)
        sock.recv(64)                              # TimeoutError on the first lost datagram


def fire_and_forget(sock, messages, timeout=0.05, retries=10):
    for seq, message in enumerate(messages):
        sock.send(struct.pack("!I", seq) + message)


def never_gives_up(sock, messages, timeout=0.05, retries=10):
    sock.settimeout(timeout)
    for seq, message in enumerate(messages):
        datagram = struct.pack("!I", seq) + message
        while True:
            sock.send(datagram)
            try:
                while sock.recv(64) != datagram[:4]:
                    pass
                break
            except TimeoutError:
                continue


def send_reliably(sock, messages, timeout=0.05, retries=10, *, give_up=TimeoutError):
    sock.settimeout(timeout)
    for seq, message in enumerate(messages):
        datagram = struct.pack("!I", seq) + message
        for _attempt in range(retries):
            sock.send(datagram)
            try:
                while sock.recv(64) != datagram[:4]:
                    pass
                break
            except TimeoutError:
                continue
        else:
            if give_up:
                raise give_up(f"no ACK for message {seq}")


def forgets_the_for_else(sock, messages, timeout=0.05, retries=10):
    send_reliably(sock, messages, timeout, retries, give_up=None)


def raises_runtime_error(sock, messages, timeout=0.05, retries=10):
    send_reliably(sock, messages, timeout, retries, give_up=RuntimeError)


@wrong_answer_to(lesson03.check_send_reliably)
def test_send_reliably_without_retries_or_without_giving_up(monkeypatch):
    says_wrong(lesson03.check_send_reliably(gives_up_at_first_loss),
               message="your sender raised TimeoutError", hint="a timeout means 'resend'")
    says_wrong(lesson03.check_send_reliably(fire_and_forget), message="never reached the receiver",
               hint="resend it after each timeout")
    says_wrong(lesson03.check_send_reliably(forgets_the_for_else), message="returned normally",
               hint="raise TimeoutError")
    says_wrong(lesson03.check_send_reliably(raises_runtime_error), message="raised RuntimeError",
               hint="raise TimeoutError")
    monkeypatch.setattr(lesson03, "HOLE_LIMIT", 0.5)
    says_wrong(lesson03.check_send_reliably(never_gives_up), message="never gave up",
               hint="after `retries` sends without an ACK")
    monkeypatch.undo()
    says_right(lesson03.check_send_reliably(send_reliably))


# -- 04 Speak HTTP from a raw socket ---------------------------------------------------------
def dechunk(body, *, base=16, extensions=True, stop_at_zero=True):
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] if extensions else size_line, base)
        if size == 0 and stop_at_zero:
            return out
        out += body[:size]
        body = body[size + 2:]
    return out


def split_on_crlf(body):
    return b"".join(body.split(b"\r\n")[1::2])


@wrong_answer_to(lesson04.check_dechunk)
def test_dechunk_mistakes_get_the_hint_for_their_case():
    for wrong, case, hint in [
            (lambda b: dechunk(b, base=10), "a size of 26 written in hex",
             "written in hexadecimal"),
            (split_on_crlf, "CRLF inside the chunk data", "do not split the data on CRLF"),
            (lambda b: dechunk(b, extensions=False), "a chunk extension",
             "keep only the part before ';'"),
            (lambda b: dechunk(b, stop_at_zero=False), "trailer fields",
             "stop at the chunk of size 0"),
            (lambda b: dechunk(b).decode(), "a str", "work with bytes")]:
        says_wrong(lesson04.check_dechunk(wrong), message=case, hint=hint)
    says_wrong(lesson04.check_dechunk(b"5\r\nhello\r\n0\r\n\r\n"), message="not bytes",
               hint="def dechunk(body: bytes)")
    says_right(lesson04.check_dechunk(dechunk))


# -- lesson 04, exercise 2: a patient requests Session ----------------------------------------
def patient_session(retries=2, timeout=(0.2, 0.3), read=None):
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util import Retry

    def make_session():
        session = requests.Session()
        if retries is not None:
            session.mount("http://", HTTPAdapter(max_retries=Retry(
                total=retries, read=read, status_forcelist=[503], backoff_factor=0.1,
                raise_on_status=False)))

        def fetch(session, url):
            return session.get(url, timeout=timeout)
        return session, fetch
    return make_session


def test_a_patient_session_is_right_whether_or_not_it_retries_timeouts():
    says_right(lesson04.check_patient_fetch(patient_session()))
    says_right(lesson04.check_patient_fetch(patient_session(read=False)))


@wrong_answer_to(lesson04.check_patient_fetch)
def test_a_session_that_never_retries():
    says_wrong(lesson04.check_patient_fetch(patient_session(retries=None)),
               message="asked 1 time(s), not 3", hint="status_forcelist")


@wrong_answer_to(lesson04.check_patient_fetch)
def test_a_session_that_retries_too_often():
    says_wrong(lesson04.check_patient_fetch(patient_session(retries=4)),
               message="503 for ever, the server was asked 5 time(s)", hint="Retry(total=2")


@wrong_answer_to(lesson04.check_patient_fetch)
def test_a_session_without_a_timeout_waits_for_a_silent_server():
    says_wrong(lesson04.check_patient_fetch(patient_session(timeout=None)),
               message="had not given up after 5 s", hint="timeout=(0.2, 0.3)")


@wrong_answer_to(lesson04.check_patient_fetch)
def test_make_session_that_returns_only_the_session():
    says_wrong(lesson04.check_patient_fetch(lambda: (patient_session()()[0], None)),
               message="not a requests.Session and a function", hint="return (session, fetch)")
