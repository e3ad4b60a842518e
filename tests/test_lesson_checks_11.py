"""Lesson 11: each check says ❌ with the fitting hint to a student's likely mistake, and ✅
to a right answer.  check_resolve builds a name hierarchy of lab hosts (conftest's
lab_hosts: root in a namespace of the test's own); the other two need no network."""

import socket

from checking import says_right, says_wrong, wrong_answer_to
from dnslib import QTYPE, RCODE, DNSRecord

from labkit.capture.flows import segments
from labkit.checks import lesson11


def make_resolve(*, follow=True, glue_as_answer=False, nxdomain="empty", first_only=False):
    """The lesson's resolve(), with one of a student's mistakes switched on."""
    def resolve(name, server):
        while True:
            query = DNSRecord.question(name)
            query.header.rd = 0
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(2)
                sock.sendto(query.pack(), (server, 53))
                reply = DNSRecord.parse(sock.recv(4096))
            if reply.header.rcode == RCODE.NXDOMAIN:
                if nxdomain == "raise":
                    raise LookupError(f"{name}: no such name")
                return []
            addresses = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
            if addresses:
                return addresses[:1] if first_only else addresses
            glue = [str(rr.rdata) for rr in reply.ar if rr.rtype == QTYPE.A]
            if glue_as_answer or not follow:
                return glue if glue_as_answer else addresses
            server = glue[0]
    return resolve


def test_the_lessons_resolve_is_right(lab_hosts):
    says_right(lesson11.check_resolve(make_resolve()))


@wrong_answer_to(lesson11.check_resolve)
def test_stopping_at_the_first_referral(lab_hosts):
    says_wrong(lesson11.check_resolve(make_resolve(follow=False)),
               message="stopped after the root", hint="three referrals down")


@wrong_answer_to(lesson11.check_resolve)
def test_the_glue_is_not_the_answer(lab_hosts):
    says_wrong(lesson11.check_resolve(make_resolve(glue_as_answer=True)),
               hint="not the glue")


@wrong_answer_to(lesson11.check_resolve)
def test_one_address_of_two(lab_hosts):
    says_wrong(lesson11.check_resolve(make_resolve(first_only=True)),
               hint="every A record")


@wrong_answer_to(lesson11.check_resolve)
def test_no_such_name_is_not_an_exception(lab_hosts):
    says_wrong(lesson11.check_resolve(make_resolve(nxdomain="raise")),
               message="raised LookupError", hint="return []")


@wrong_answer_to(lesson11.check_resolve)
def test_a_referral_read_as_an_answer_raises(lab_hosts):
    def resolve(name, server):  # expects an answer at once: IndexError on a referral
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(DNSRecord.question(name).pack(), (server, 53))
            return [str(DNSRecord.parse(sock.recv(4096)).rr[0].rdata)]
    says_wrong(lesson11.check_resolve(resolve), message="raised IndexError",
               hint="additional section")


def test_resolve_not_a_function():
    says_wrong(lesson11.check_resolve("resolve"), hint="def resolve(name, server)")


def test_unfinished_code_is_not_written(lab_hosts):
    def todo(name, server):
        raise NotImplementedError()

    assert lesson11.check_resolve(todo).message.startswith("your code is not written")
    assert lesson11.check_diagnose(lambda segs: todo("", "")).message.startswith(
        "your code is not written")
    assert lesson11.check_first_family(None).message.startswith("your answer is not written")


# -- exercise 2 --------------------------------------------------------------------------------
RIGHT = {0.1: "IPv4", 0.5: "IPv4", 2.0: "IPv6", None: "IPv6"}


def test_the_right_prediction():
    says_right(lesson11.check_first_family(RIGHT))


@wrong_answer_to(lesson11.check_first_family)
def test_ipv6_always_first():
    says_wrong(lesson11.check_first_family(dict.fromkeys(RIGHT, "IPv6")),
               message="happy_eyeballs_delay=0.1", hint="starts IPv4")


@wrong_answer_to(lesson11.check_first_family)
def test_the_delay_longer_than_the_retry():
    says_wrong(lesson11.check_first_family({**RIGHT, 2.0: "IPv4"}),
               message="happy_eyeballs_delay=2.0", hint="sent again after 1 s")


@wrong_answer_to(lesson11.check_first_family)
def test_no_happy_eyeballs_means_ipv6_alone():
    says_wrong(lesson11.check_first_family({**RIGHT, None: "IPv4"}),
               message="happy_eyeballs_delay=None", hint="one address at a time")


@wrong_answer_to(lesson11.check_first_family)
def test_a_prediction_with_other_keys_or_words():
    says_wrong(lesson11.check_first_family({0.25: "IPv4"}), hint="one entry per delay")
    says_wrong(lesson11.check_first_family({**RIGHT, 0.1: "v4"}), message="'v4'",
               hint="the family that connects first")


# -- exercise 3 --------------------------------------------------------------------------------
def diagnose(segs):
    """The lesson's answer: the first server whose query no response answered, and the time
    from that query to the next server's first."""
    asked, answered = [], set()
    for seg in segs:
        if seg.proto != "UDP":
            continue
        message = DNSRecord.parse(bytes(seg.packet["UDP"].payload))
        if message.header.qr:
            answered.add(message.header.id)
        else:
            asked.append((seg.time, seg.packet["IP"].dst, message.header.id))
    silent = [(t, server) for t, server, qid in asked if qid not in answered]
    if not silent:
        return None, 0.0
    started, server = silent[0]
    later = [t for t, other, _qid in asked if other != server and t > started]
    return server, (later[0] - started) if later else 0.0


def test_the_lessons_diagnosis():
    says_right(lesson11.check_diagnose(diagnose))


@wrong_answer_to(lesson11.check_diagnose)
def test_blaming_the_server_that_answered():
    def blame_the_last(segs):
        server, seconds = diagnose(segs)
        asked = [s.packet["IP"].dst for s in segs if s.src == "client"]
        return (asked[-1] if server else None), seconds
    says_wrong(lesson11.check_diagnose(blame_the_last), message="the one that never answered",
               hint="whose id no response carries")


@wrong_answer_to(lesson11.check_diagnose)
def test_each_unanswered_query_counted_apart():
    def summed(segs):  # the A and the AAAA query each "waited": twice the time
        server, seconds = diagnose(segs)
        return server, 2 * seconds
    says_wrong(lesson11.check_diagnose(summed), message="the stub waited", hint="to the first "
               "query to the next one")


@wrong_answer_to(lesson11.check_diagnose)
def test_a_culprit_for_a_quick_lookup():
    def always(segs):
        return segs[0].packet["IP"].dst, 1.0
    says_wrong(lesson11.check_diagnose(always), message="every server answered at once",
               hint="no response with the same id")


@wrong_answer_to(lesson11.check_diagnose)
def test_a_diagnosis_that_is_not_a_pair():
    says_wrong(lesson11.check_diagnose(lambda segs: "10.0.9.53"), hint="return a tuple")


def test_the_slow_lookups_read_as_a_capture_would():
    packets = lesson11.slow_lookup(["10.0.9.53", "10.0.1.3"], {"10.0.9.53"}, 1.0)
    segs = segments(packets, {}, {"hosts": {"10.0.0.1": "client", "10.0.1.3": "resolver"}})
    assert [(s.src, s.dst) for s in segs] == [("client", "10.0.9.53")] * 2 + [  # by address
        ("client", "resolver")] * 2 + [("resolver", "client")] * 2
    assert segs[2].time - segs[0].time >= 1.0
    assert segs[4].summary.startswith("DNS response id=")
