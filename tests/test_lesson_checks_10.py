"""Lesson 10: each check says ❌ with the fitting hint to a student's likely mistake, and ✅
to a right answer.  Every check builds a LabNetwork (conftest's lab_hosts: root in a
namespace of the test's own); the traceroute's wrong answers are fed to the judge the
check uses, so one live run proves the network and the rest need none."""

import select
import socket
import struct

from checking import says_right, says_wrong, wrong_answer_to

from labkit.checks import lesson10

IP_RECVERR = 11
EXPECTED = ["10.0.0.2", None, "10.0.2.4", "10.0.3.5"]   # r2 of client — r1 — r2 — r3 — server


def read_icmp_error(sock, timeout=1.0):
    poller = select.poll()
    poller.register(sock, select.POLLERR)
    if not poller.poll(timeout * 1000):
        return None
    _data, ancillary, _flags, address = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
    for level, kind, data in ancillary:
        if (level, kind) == (socket.IPPROTO_IP, IP_RECVERR):
            _e, _o, icmp_type, icmp_code, _p, _info, _d = struct.unpack_from("IBBBBII", data)
            return icmp_type, icmp_code, socket.inet_ntoa(data[20:24]), address[0]
    return None


def make_traceroute(*, keep_silent=True, stop=True, sender=2, on_silence="none"):
    """The lesson's traceroute, with one of a student's mistakes switched on."""
    def traceroute(address, max_hops=8, timeout=0.5):
        hops = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            for ttl in range(1, max_hops + 1):
                probe.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
                probe.sendto(b"probe", (address, 33433 + ttl))
                answer = read_icmp_error(probe, timeout)
                if answer is None:
                    if on_silence == "raise":
                        raise TimeoutError(f"no answer for TTL {ttl}")
                    if on_silence == "stop":
                        break
                    if keep_silent:
                        hops.append(None)
                    continue
                hops.append(answer[sender])
                if stop and answer[0] != 11:
                    break
        return hops
    return traceroute


def judged(hops, outcome="ok"):
    return lesson10._judge_hops(outcome, hops, EXPECTED, "10.0.3.5")


# -- exercise 1: traceroute ----------------------------------------------------------------
def test_the_lessons_traceroute_is_right_on_a_network_with_a_silent_router(lab_hosts, nft):
    says_right(lesson10.check_traceroute(make_traceroute()))


@wrong_answer_to(lesson10.check_traceroute)
def test_a_traceroute_that_skips_the_silent_hop(lab_hosts, nft):
    says_wrong(lesson10.check_traceroute(make_traceroute(keep_silent=False)),
               message="leaves out the hop", hint="put None where hop 2 stayed silent")


@wrong_answer_to(lesson10.check_traceroute)
def test_a_traceroute_that_reports_where_the_probe_was_going(lab_hosts, nft):
    says_wrong(lesson10.check_traceroute(make_traceroute(sender=3)),
               message="every hop you found is the destination", hint="offender")


@wrong_answer_to(lesson10.check_traceroute)
def test_a_traceroute_that_gives_up_at_silence(lab_hosts, nft):
    says_wrong(lesson10.check_traceroute(make_traceroute(on_silence="raise")),
               message="raised TimeoutError", hint="note None for that hop")
    says_wrong(judged(["10.0.0.2"]), message="stops before the destination",
               hint="a silent hop is no reason to stop")


def test_the_other_slips_each_get_their_hint():
    says_wrong(judged([*EXPECTED, "10.0.3.5", "10.0.3.5"]), message="goes on past",
               hint="port unreachable")
    says_wrong(judged(EXPECTED[1:]), message="shifted by one", hint="TTL 1")
    says_wrong(judged("10.0.0.2 10.0.3.5"), message="not a list", hint="return a list")
    says_wrong(judged(None, "timeout"), message="still running", hint="max_hops probes")
    says_wrong(judged(["10.9.9.9"]), message="the hops are", hint="TTL 1, 2, 3")
    says_wrong(lesson10.check_traceroute("traceroute"), message="not a function",
               hint="def traceroute")


def test_unfinished_code_is_not_written(lab_hosts, nft):
    def todo(address, max_hops=8, timeout=0.5):
        raise NotImplementedError()

    assert lesson10.check_traceroute(todo).message.startswith("your code is not written")


# -- exercise 2: a path MTU ----------------------------------------------------------------
def test_the_right_predictions_are_measured_right(lab_hosts):
    says_right(lesson10.check_path_mtu((1300, 1272, 7)))


@wrong_answer_to(lesson10.check_path_mtu)
def test_each_usual_slip_in_a_path_mtu_gets_its_own_hint(lab_hosts):
    says_wrong(lesson10.check_path_mtu((1500, 1472, 3)), message="not 1500",
               hint="the first link's MTU")
    says_wrong(lesson10.check_path_mtu((9000, 8972, 1)), hint="the smallest one does")
    says_wrong(lesson10.check_path_mtu((1400, 1372, 5)), hint="smallest link MTU")
    says_wrong(lesson10.check_path_mtu((1300, 1300, 7)), message="not 1300",
               hint="counts the IP header")
    says_wrong(lesson10.check_path_mtu((1300, 1280, 7)), hint="UDP header takes 8")
    says_wrong(lesson10.check_path_mtu((1300, 1292, 7)), hint="IP header takes 20")
    says_wrong(lesson10.check_path_mtu((1300, 1272, 3)), message="other than 3 fragments",
               hint="3 fragments leave the client")
    says_wrong(lesson10.check_path_mtu((1300, 1272, 5)), hint="cut again")
    says_wrong(lesson10.check_path_mtu((1300, 1272, None)), message="now the fragments",
               hint="third number")
    says_wrong(lesson10.check_path_mtu((1300, None, None)), message="now the largest",
               hint="second number")
    says_wrong(lesson10.check_path_mtu((1300.0, 1272, 7)), message="whole number",
               hint="prediction = (")
    says_wrong(lesson10.check_path_mtu(1300), message="three numbers", hint="prediction = (")
    assert lesson10.check_path_mtu(None).message.startswith("your answer is not written")


# -- exercise 3: which rule -----------------------------------------------------------------
def test_the_culprit_is_right(lab_hosts, nft):
    says_right(lesson10.check_culprit(("r2", 'iifname  "eth1"  tcp sport 8080 drop ')))


@wrong_answer_to(lesson10.check_culprit)
def test_a_rule_that_is_not_the_culprit_is_named_with_why(lab_hosts, nft):
    for decoy, hint in [(("r1", "tcp dport 8080 drop"), "forward chain"),
                        (("server", "tcp dport 8081 drop"), "port 8081")]:
        says_wrong(lesson10.check_culprit(decoy), message="still gets TimeoutError", hint=hint)


@wrong_answer_to(lesson10.check_culprit)
def test_a_rule_nobody_has_or_a_malformed_answer(lab_hosts, nft):
    says_wrong(lesson10.check_culprit(("r2", "tcp dport 8080 drop")),
               message="no rule that reads", hint="copy the rule's line")
    says_wrong(lesson10.check_culprit(("r9", "drop")), message="not a host",
               hint="client, r1, r2 and server")
    says_wrong(lesson10.check_culprit("r2"), message="(host, rule) pair", hint="culprit = (")
