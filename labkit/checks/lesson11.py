"""Checks for 11-Resolve-Names-To-Addresses.

``check_resolve`` builds a name hierarchy of its own - a root, the ``test.`` servers, the
``uni.test.`` servers and the authority for ``cs.uni.test.``, each a lab host - and runs
the student's ``resolve(name, server)`` on a client that has no resolver: the right
addresses can only come from walking down from the root, and each server's log says
whether it was asked.  ``check_first_family`` compares a prediction with Happy Eyeballs'
rule (RFC 8305: the next address is tried after the delay, or at once when the last
attempt failed; the first handshake to finish wins); the notebook measures the same
races right after.  ``check_diagnose`` hands the student's ``diagnose(segments)``
captures of slow and quick lookups built here (each packet made with Scapy, at the
times a stub resolver sends them), so the answers differ from the lesson's own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from labkit.net.hosts import LabNetwork
from labkit.net.topology import Cable
from labkit.servers.dns import DNSServer

from . import NOT_WRITTEN, StudentCall, Verdict, answers_back, unfinished

if TYPE_CHECKING:
    from scapy.packet import Packet

    from labkit.capture.flows import Segment

Resolve = Callable[[str, str], list[str]]
Diagnose = Callable[[Sequence["Segment"]], tuple[str | None, float]]

__all__ = ["check_resolve", "check_first_family", "check_diagnose", "hierarchy_network",
           "first_family", "SYN_RETRY", "slow_lookup"]

LIMIT = 10.0        # seconds the student's resolve() may take
NAME = "www.cs.uni.test"
ADDRESSES = ["192.0.2.10", "192.0.2.11"]  # what NAME's authority says (two A records)
MISSING = "nowhere.cs.uni.test"
SYN_RETRY = 1.0     # seconds until Linux sends a SYN again (its first retransmission timeout)


# -- exercise 1: resolve a name from the root ------------------------------------------------
def hierarchy_network() -> tuple[LabNetwork, dict[str, DNSServer]]:
    """client — r1 — root, tld, uni, cs (started), each with its DNS server; and the
    servers by name. The caller stops the network."""
    net = LabNetwork(*(Cable("r1", host) for host in ("client", "root", "tld", "uni", "cs")))
    net.start()
    try:
        a = net.addresses
        servers = {
            "root": net.serve("root", DNSServer, zone=".", host=a["root"], port=53, name="root",
                              delegate={"test": {"a.nic.test": a["tld"]}}),
            "tld": net.serve("tld", DNSServer, zone="test", host=a["tld"], port=53, name="tld",
                             delegate={"uni.test": {"ns1.uni.test": a["uni"]}}),
            "uni": net.serve("uni", DNSServer, zone="uni.test", host=a["uni"], port=53,
                             name="uni", delegate={"cs.uni.test": {"ns.cs.uni.test": a["cs"]}}),
            "cs": net.serve("cs", DNSServer, {NAME: ADDRESSES, "ns.cs.uni.test": a["cs"]},
                            zone="cs.uni.test", host=a["cs"], port=53, name="cs"),
        }
    except BaseException:
        net.stop()
        raise
    return net, servers


def _ask(net: LabNetwork, resolve: Resolve, name: str, root: str) -> StudentCall:
    with net.on("client"):  # its thread (and sockets) belong to the client
        call = StudentCall(resolve, name, root)
    call.wait(LIMIT)
    return call


@answers_back
def check_resolve(resolve: Resolve) -> Verdict:
    """``resolve(name, server)`` should walk from ``server`` (a root) down the referrals and
    return the name's IPv4 addresses, or [] for a name that does not exist."""
    if not callable(resolve):
        return Verdict(False, "resolve is not a function",
                       "define def resolve(name, server): ... returning a list of addresses")
    net, servers = hierarchy_network()
    try:
        root = net.addresses["root"]
        found = _ask(net, resolve, NAME, root)
        missing = _ask(net, resolve, MISSING, root) if found.outcome == "ok" else None
        asked = {who: [q for q, _type in server.queries] for who, server in servers.items()}
    finally:
        net.stop()
    return _judge(found, missing, asked, net.addresses)


def _judge(found: StudentCall, missing: StudentCall | None, asked: dict[str, list[str]],
           addresses: dict[str, str]) -> Verdict:
    glue = {addresses[host] for host in ("tld", "uni", "cs")}
    if found.outcome == "running":
        return Verdict(False, f"resolve({NAME!r}, root) was still running after {LIMIT:.0f} s",
                       "give each socket a timeout (sock.settimeout(2)), and stop when a "
                       "reply has answers, or neither answers nor a referral")
    if found.outcome == "raised":
        if unfinished(found.value):
            return NOT_WRITTEN
        return Verdict(False, f"resolve({NAME!r}, root) raised {type(found.value).__name__}: "
                       f"{found.value}",
                       "a referral has no answers: its additional section has the next "
                       "servers' addresses (glue); ask the first of them the same question")
    value = found.value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return Verdict(False, f"resolve returned {value!r}, not a list of addresses as text",
                       "return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]")
    if value and set(value) <= glue:
        return Verdict(False, f"resolve returned {value}: a name server's address, not the "
                       f"name's", "return the addresses in the answer section (reply.rr), "
                       "not the glue in the additional section (reply.ar)")
    if not asked["cs"]:
        stopped = "the root" if not asked["tld"] else "test." if not asked["uni"] else "uni.test."
        return Verdict(False, f"resolve returned {value} without asking the authority for "
                       f"cs.uni.test. (it stopped after {stopped})",
                       "keep going while the reply is a referral: no answers, NS records in "
                       "the authority section; this name is three referrals down")
    if sorted(value) != sorted(ADDRESSES):
        return Verdict(False, f"resolve({NAME!r}) returned {value}; its authority says "
                       f"{ADDRESSES}", "return every A record of the answer section")
    if missing is None or missing.outcome != "ok":
        what = "was still running" if missing is None or missing.outcome == "running" else (
            f"raised {type(missing.value).__name__}: {missing.value}")
        return Verdict(False, f"for a name that does not exist, resolve {what}",
                       "the authority answers NXDOMAIN (reply.header.rcode == RCODE.NXDOMAIN) "
                       "with no answers and no referral: return []")
    if missing.value != []:
        return Verdict(False, f"resolve({MISSING!r}) returned {missing.value!r}, not []",
                       "NXDOMAIN means no such name: no addresses, so return []")
    return Verdict(True, f"{NAME} is {sorted(ADDRESSES)}, found by asking the root, test., "
                         f"uni.test. and cs.uni.test. in turn; {MISSING} is no name at all")


# -- exercise 2: which family connects first ------------------------------------------------
def first_family(delay: float | None, ipv6_syn_lost: bool = True) -> str:
    """Happy Eyeballs' outcome when the IPv6 path loses the first SYN (so IPv6 connects
    after SYN_RETRY seconds) and IPv4 connects at once: IPv4 wins if it starts first,
    i.e. if a ``delay`` runs out before IPv6's SYN is sent again; ``None`` (no Happy
    Eyeballs) tries IPv6 alone until it connects or fails."""
    if not ipv6_syn_lost:
        return "IPv6"
    return "IPv4" if delay is not None and delay < SYN_RETRY else "IPv6"


DELAYS = (0.1, 0.5, 2.0, None)


@answers_back
def check_first_family(prediction: dict[float | None, str]) -> Verdict:
    """``prediction``: {happy_eyeballs_delay: "IPv6" or "IPv4"} for the delays 0.1, 0.5, 2.0
    and None, when the IPv6 path loses the first SYN."""
    if not isinstance(prediction, dict) or set(prediction) != set(DELAYS):
        return Verdict(False, f"the prediction must be a dict with the keys {list(DELAYS)}, "
                       f"not {prediction!r}", "one entry per delay: {0.1: 'IPv4', ...}")
    answers = {delay: str(prediction[delay]).strip() for delay in DELAYS}
    odd = [answer for answer in answers.values() if answer not in ("IPv6", "IPv4")]
    if odd:
        return Verdict(False, f"each answer is 'IPv6' or 'IPv4', not {odd[0]!r}",
                       "write the family that connects first, e.g. 'IPv4'")
    wrong = [delay for delay in DELAYS if answers[delay] != first_family(delay)]
    if not wrong:
        return Verdict(True, f"IPv4 wins when the delay runs out before IPv6's SYN is sent "
                       f"again ({SYN_RETRY:g} s); with a longer delay, or none, that second "
                       "IPv6 SYN connects first")
    delay = wrong[0]
    if delay is None:
        hint = ("happy_eyeballs_delay=None means one address at a time, IPv6 first; nothing "
                "makes it give up on IPv6, and its SYN sent again after 1 s is answered")
    elif delay < SYN_RETRY:
        hint = (f"after {delay:g} s without an answer from IPv6 the client starts IPv4, "
                f"which answers at once; IPv6 would need its second SYN, at {SYN_RETRY:g} s")
    else:
        hint = (f"IPv6's SYN is sent again after {SYN_RETRY:g} s and answered, before the "
                f"{delay:g}-second delay would start IPv4")
    return Verdict(False, f"with happy_eyeballs_delay={delay}, {first_family(delay)} connects "
                   f"first, not {answers[delay]}", hint)


# -- exercise 3: why is this lookup slow? ----------------------------------------------------
def slow_lookup(servers: list[str], silent: set[str], timeout: float,
                start: float = 100.0) -> list[Packet]:
    """The packets a stub resolver's lookup of an A and an AAAA record sends and gets,
    asking ``servers`` in turn (``timeout`` seconds each) and never heard from by the
    ``silent`` ones: Ethernet frames with times, as a capture on the client has them."""
    from dnslib import AAAA, QTYPE, RR, A, DNSRecord
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    client, port, t = "10.0.0.1", 41000, start
    packets: list[Packet] = []
    for server in servers:
        queries: list[DNSRecord] = []
        for qid, kind in ((4000 + len(packets), "A"), (4001 + len(packets), "AAAA")):
            query = DNSRecord.question("www.netlab.test", kind)
            query.header.id = qid
            queries.append(query)
            packets.append(_frame(Ether(src=CLIENT_MAC, dst=ROUTER_MAC) /
                                  IP(src=client, dst=server) /
                                  UDP(sport=port, dport=53) / query.pack(), t))
            t += 0.00003
        if server in silent:
            t += timeout
            port += 1  # glibc asks the next server from a new socket
            continue
        for query in queries:
            reply = query.reply()
            kind = QTYPE[query.q.qtype]
            reply.add_answer(RR("www.netlab.test", query.q.qtype, ttl=60,
                                rdata=A("10.0.5.7") if kind == "A" else AAAA("fd00:10:0:5::7")))
            t += 0.0004
            packets.append(_frame(Ether(src=ROUTER_MAC, dst=CLIENT_MAC) /
                                  IP(src=server, dst=client) /
                                  UDP(sport=53, dport=port) / reply.pack(), t))
        break
    return packets


CLIENT_MAC, ROUTER_MAC = "02:00:0a:00:00:01", "02:00:0a:00:00:02"  # (Scapy looks up none)


def _frame(pkt: Packet, t: float) -> Packet:
    from scapy.layers.l2 import Ether

    frame = Ether(bytes(pkt))
    frame.time = t
    return frame


CASES = [  # (servers in resolv.conf order, the silent ones, timeout): what diagnose should say
    (["10.0.9.53", "10.0.1.3"], {"10.0.9.53"}, 1.0),
    (["10.0.1.3"], set(), 5.0),
    (["192.168.7.1", "10.0.1.3"], {"192.168.7.1"}, 2.0),
    (["10.0.1.3", "10.0.9.53"], {"10.0.9.53"}, 5.0),
]


def _expected(servers: list[str], silent: set[str], timeout: float) -> tuple[str | None, float]:
    first = servers[0]
    return (first, timeout) if first in silent else (None, 0.0)


@answers_back
def check_diagnose(diagnose: Diagnose) -> Verdict:
    """``diagnose(segments)`` → (the address of the name server that never answered, or
    None; the seconds the lookup lost waiting for it, 0 if none)."""
    from labkit.capture.flows import segments

    if not callable(diagnose):
        return Verdict(False, "diagnose is not a function",
                       "define def diagnose(segments): ... returning (address, seconds)")
    for servers, silent, timeout in CASES:
        packets = slow_lookup(servers, silent, timeout)
        names = {"10.0.0.1": "client", "10.0.1.3": "resolver"}
        segs = segments(packets, {}, {"hosts": names})
        try:
            answer = diagnose(segs)
        except Exception as exc:  # noqa: BLE001 - the student's exception is the answer
            if unfinished(exc):
                return NOT_WRITTEN
            return Verdict(False, f"diagnose raised {type(exc).__name__}: {exc} on a lookup "
                           f"asking {servers}", "a query's answer carries the query's id: "
                           "parse each UDP payload with DNSRecord.parse and match them up")
        expected = _expected(servers, silent, timeout)
        verdict = _judge_diagnosis(answer, expected, servers)
        if verdict is not None:
            return verdict
    return Verdict(True, "each slow lookup's silent server and the seconds it cost, and no "
                         "culprit for a quick one")


def _judge_diagnosis(answer: object, expected: tuple[str | None, float], servers: list[str]
                     ) -> Verdict | None:
    if not isinstance(answer, tuple) or len(answer) != 2:
        return Verdict(False, f"diagnose returned {answer!r}, not (address, seconds)",
                       "return a tuple: (the server's address or None, seconds as a number)")
    server, seconds = answer
    want_server, want_seconds = expected
    if want_server is None:
        if server is not None:
            return Verdict(False, f"on a lookup every server answered at once, diagnose "
                           f"blamed {server!r}", "a server is silent only if some query "
                           "to it has no response with the same id")
        return None
    try:
        same = ipaddress.ip_address(str(server)) == ipaddress.ip_address(want_server)
    except ValueError:
        same = False
    if not same:
        return Verdict(False, f"on a lookup asking {servers}, diagnose named {server!r}; "
                       f"the one that never answered is {want_server}",
                       "look for queries (from the client) whose id no response carries; "
                       "their destination is the silent server (seg.packet['IP'].dst)")
    if not isinstance(seconds, int | float) or abs(seconds - want_seconds) > 0.05:
        return Verdict(False, f"diagnose says {want_server} cost {seconds!r} s; the stub "
                       f"waited {want_seconds:g} s for it", "the time lost is from the first "
                       "query to the silent server to the first query to the next one "
                       "(seg.time)")
    return None
