"""Lesson 12's checks: each wrong answer a student would write gets ❌ and the hint that fits,
a right answer ✅. Both checks run on a LabNetwork (conftest's lab_hosts)."""

import socket

from checking import says_right, says_wrong, wrong_answer_to

from labkit.checks import NOT_WRITTEN, lesson12


# -- exercise 1: keepalive within a deadline --------------------------------------------------
def keepalive(sock, idle=None, interval=None, count=None, on=True):
    if on:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in ((socket.TCP_KEEPIDLE, idle), (socket.TCP_KEEPINTVL, interval),
                        (socket.TCP_KEEPCNT, count)):
        if value is not None:
            sock.setsockopt(socket.IPPROTO_TCP, name, value)


def right_keepalive(sock, seconds):
    keepalive(sock, idle=seconds - 2, interval=1, count=2)


def test_keepalive_from_the_deadline_is_right(lab_hosts):
    says_right(lesson12.check_keepalive_within(right_keepalive))


@wrong_answer_to(lesson12.check_keepalive_within)
def test_keepalive_settings_without_so_keepalive(lab_hosts):
    says_wrong(lesson12.check_keepalive_within(
        lambda sock, seconds: keepalive(sock, seconds - 2, 1, 2, on=False)),
        message="keepalive is off", hint="SO_KEEPALIVE")


@wrong_answer_to(lesson12.check_keepalive_within)
def test_so_keepalive_alone_waits_two_hours(lab_hosts):
    says_wrong(lesson12.check_keepalive_within(lambda sock, seconds: keepalive(sock)),
               message="later than", hint="2 hours")


@wrong_answer_to(lesson12.check_keepalive_within)
def test_one_probe_is_too_few(lab_hosts):
    says_wrong(lesson12.check_keepalive_within(
        lambda sock, seconds: keepalive(sock, seconds - 1, 1, 1)),
        message="1 unanswered probe", hint="at least 2")


@wrong_answer_to(lesson12.check_keepalive_within)
def test_a_deadline_hard_coded_for_three_seconds(lab_hosts):
    says_wrong(lesson12.check_keepalive_within(lambda sock, seconds: keepalive(sock, 1, 1, 2)),
               message="sooner than asked", hint="from `seconds`")


@wrong_answer_to(lesson12.check_keepalive_within)
def test_interval_and_count_swapped_in_the_sum(lab_hosts):
    # idle + count × interval read as idle + interval + count: too late for both deadlines
    says_wrong(lesson12.check_keepalive_within(
        lambda sock, seconds: keepalive(sock, seconds - 1, 2, 2)),
        message="later than", hint="TCP_KEEPIDLE + TCP_KEEPCNT × TCP_KEEPINTVL")


def test_keepalive_unfinished_and_crashing(lab_hosts):
    def unfinished(sock, seconds):
        raise NotImplementedError()

    assert lesson12.check_keepalive_within(unfinished) == NOT_WRITTEN
    says_wrong(lesson12.check_keepalive_within(
        lambda sock, seconds: sock.setsockopt(socket.SOL_SOCKET, socket.TCP_KEEPIDLE, "1")),
        message="raised TypeError", hint="setsockopt(level, name, int)")


# -- exercise 2: ask once more on a new connection ---------------------------------------------
def right_ask(conn, address, question):
    try:
        conn.sendall(question)
        answer = conn.recv(1024)
        if answer:
            return conn, answer
    except ConnectionError:
        pass
    conn.close()
    conn = socket.create_connection(address, timeout=2)
    conn.sendall(question)
    return conn, conn.recv(1024)


def test_ask_that_retries_once_is_right(lab_hosts):
    says_right(lesson12.check_ask(right_ask))


@wrong_answer_to(lesson12.check_ask)
def test_ask_that_never_retries(lab_hosts):
    def never_again(conn, address, question):
        conn.sendall(question)
        return conn, conn.recv(1024)

    says_wrong(lesson12.check_ask(never_again), message="raised ConnectionResetError",
               hint="connect to `address`")


@wrong_answer_to(lesson12.check_ask)
def test_ask_on_a_new_connection_every_time(lab_hosts):
    def always_new(conn, address, question):
        conn = socket.create_connection(address, timeout=2)
        conn.sendall(question)
        return conn, conn.recv(1024)

    says_wrong(lesson12.check_ask(always_new), message="opened a new connection",
               hint="use `conn` first")


@wrong_answer_to(lesson12.check_ask)
def test_ask_that_retries_until_it_works(lab_hosts):
    def stubborn(conn, address, question):
        for _ in range(20):
            try:
                conn.sendall(question)
                answer = conn.recv(1024)
                if answer:
                    return conn, answer
            except ConnectionError:
                pass
            try:
                conn = socket.create_connection(address, timeout=2)
            except ConnectionError:
                continue
        raise ConnectionError("gave up")

    says_wrong(lesson12.check_ask(stubborn), message="tried to connect", hint="try once more")


@wrong_answer_to(lesson12.check_ask)
def test_ask_that_swallows_the_final_error(lab_hosts):
    def hides_it(conn, address, question):
        try:
            return right_ask(conn, address, question)
        except ConnectionError:
            return conn, b""

    says_wrong(lesson12.check_ask(hides_it), message="not a ConnectionError",
               hint="propagate")


@wrong_answer_to(lesson12.check_ask)
def test_ask_that_returns_only_the_answer(lab_hosts):
    says_wrong(lesson12.check_ask(lambda conn, address, question: right_ask(
        conn, address, question)[1]), message="returned", hint="return a pair")
