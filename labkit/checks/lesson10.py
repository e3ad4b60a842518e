"""Checks for 10-Route-Packets-Across-Routers.

``check_traceroute`` runs the student's traceroute on the client of a chain of three
routers, one of which never answers (a firewall rule drops its own Time Exceeded), and
compares the hops with the network's plan.  ``check_path_mtu`` builds the network of the
exercise (links of 1500, 1400, 9000 and 1300 bytes) and measures what the student
predicted: the path MTU (the kernel's, via IP_MTU), the largest UDP payload that crosses
with DF set, and how many fragments a 3,000-byte datagram sent without DF reaches the
server in (the server kernel's own count, ``ReasmReqds``).  ``check_culprit`` removes the
firewall rule the student names from a fresh copy of :func:`firewall_puzzle` and tries
the connection again.  Every check measures a network of its own: nothing is hard-coded
but the networks themselves.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import re
import select
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from labkit.net.hosts import LabNetwork
from labkit.net.topology import Cable
from labkit.servers.tcp import TCPServer

from . import NOT_WRITTEN, Verdict, answers_back, unfinished

__all__ = ["check_traceroute", "check_path_mtu", "check_culprit", "firewall_puzzle",
           "path_mtu_network", "measure_path", "rules_of", "PUZZLE_PORT"]

# Linux's <linux/in.h> (Python's socket module does not name them)
IP_RECVERR, IP_MTU_DISCOVER, IP_PMTUDISC_DONT, IP_PMTUDISC_DO, IP_MTU = 11, 10, 0, 2, 14
LIMIT = 15.0   # seconds the student's traceroute may take

# exercise 1: client — r1 — r2 — r3 — server; r2 drops the Time Exceeded it would send
SILENT = "r2"
QUIET_RULES = """table ip quiet { chain out {
    type filter hook output priority filter; icmp type time-exceeded drop
}
}"""

# exercise 2: the links' MTUs, client to server, and the datagram to predict for
PATH_MTUS = (1500, 1400, 9000, 1300)
DATAGRAM = 3000   # bytes of UDP payload, sent without DF

# exercise 3: client — r1 — r2 — server; a connection to the server's port 8080 times out
PUZZLE_PORT = 8080
PUZZLE_RULES = {
    "r1": """table inet filter {
        chain input {
            type filter hook input priority filter
            tcp dport 8080 drop
        }
        chain forward {
            type filter hook forward priority filter
            udp dport 53 drop
        }
    }""",
    "r2": """table inet filter {
        chain forward {
            type filter hook forward priority filter
            iifname "eth1" tcp sport 8080 drop
        }
    }""",
    "server": """table inet filter {
        chain input {
            type filter hook input priority filter
            tcp dport 8081 drop
            ip saddr 10.0.9.0/24 drop
        }
        chain output {
            type filter hook output priority filter
            oifname "eth1" drop
        }
    }""",
}
CULPRIT = ("r2", 'iifname "eth1" tcp sport 8080 drop')
# what each other rule does not do, as a hint for the student who names it
DECOYS = {
    ("r1", "tcp dport 8080 drop"): "r1's input chain sees only packets addressed to r1 "
    "itself; a packet r1 passes on to another host goes through its forward chain",
    ("r1", "udp dport 53 drop"): "that rule drops UDP to port 53 (DNS); the connection is TCP",
    ("server", "tcp dport 8081 drop"): "that rule is for port 8081; the connection is to 8080",
    ("server", "ip saddr 10.0.9.0/24 drop"): "the client is 10.0.0.1, not in 10.0.9.0/24",
    ("server", 'oifname "eth1" drop'): "the server has one interface, eth0: nothing leaves "
    "by eth1 there",
}


def _normal(rule: str) -> str:
    return " ".join(rule.replace(";", " ").split())


# -- exercise 1: traceroute -----------------------------------------------------------------
def _call_on(net: LabNetwork, host: str, function: Callable[..., object], *args: object
             ) -> tuple[str, object]:
    """Run ``function(*args)`` in a thread on ``host``: ("ok" | "raised" | "timeout", value)."""
    box: list[tuple[str, object]] = []

    def call() -> None:
        try:
            box.append(("ok", function(*args)))
        except Exception as exc:  # noqa: BLE001 - the student's exception is the answer
            box.append(("raised", exc))

    with net.on(host):  # a thread started here stays on the host
        thread = threading.Thread(target=call, daemon=True)
        thread.start()
    thread.join(LIMIT)
    return box[0] if box else ("timeout", None)


@answers_back
def check_traceroute(traceroute: Callable[[str], list[str | None]]) -> Verdict:
    """``traceroute(address)`` on the client of client — r1 — r2 — r3 — server, where r2
    stays silent: it should return ``[r1, None, r3, server]`` (each as an address)."""
    if not callable(traceroute):
        return Verdict(False, "traceroute is not a function",
                       "define def traceroute(address, max_hops=8, timeout=0.5):")
    with LabNetwork.chain("client", "r1", SILENT, "r3", "server") as net:
        net.nft(SILENT, QUIET_RULES)
        target = net.addresses["server"]
        plan = net.topology.hops("client", "server")
        outcome, hops = _call_on(net, "client", traceroute, target)
    silent_at = net.topology.path("client", "server").index(SILENT) - 1
    expected: list[str | None] = [None if i == silent_at else hop for i, hop in enumerate(plan)]
    return _judge_hops(outcome, hops, expected, target)


def _judge_hops(outcome: str, hops: object, expected: list[str | None], target: str
                ) -> Verdict:
    silent = expected.index(None) + 1
    if outcome == "raised" and isinstance(hops, BaseException):
        if unfinished(hops):
            return NOT_WRITTEN
        return Verdict(False, f"your traceroute raised {type(hops).__name__}: {hops}",
                       f"hop {silent} never answers: when the error queue stays empty for "
                       "`timeout` seconds, note None for that hop and go on with the next TTL")
    if outcome == "timeout":
        return Verdict(False, f"your traceroute was still running after {LIMIT:.0f} s",
                       "bound it: at most max_hops probes, each waiting at most `timeout` "
                       "seconds for its error")
    if not isinstance(hops, list):
        return Verdict(False, f"traceroute returned {hops!r}, not a list",
                       "return a list: the address of each hop in order, None for a hop "
                       "that did not answer")
    if hops == expected:
        return Verdict(True, f"{len(hops)} hops, {hops}: each router where the TTL ran out, "
                             f"the silent one as None, and the destination last")
    answered = [hop for hop in hops if hop is not None]
    if len(answered) > 1 and set(answered) == {target}:
        return Verdict(False, f"every hop you found is the destination: {hops}",
                       "recvmsg()'s address is where your probe was going; the router that "
                       "answered is the offender after the sock_extended_err "
                       "(socket.inet_ntoa(cdata[20:24]))")
    if hops == [hop for hop in expected if hop is not None]:
        return Verdict(False, f"{hops} leaves out the hop that never answered",
                       f"put None where hop {silent} stayed silent, so the n-th entry is the "
                       "host n hops away")
    if hops[:len(expected)] == expected and all(h == target for h in hops[len(expected):]):
        return Verdict(False, f"{hops} goes on past the destination",
                       "stop when the destination itself answers: port unreachable (ICMP "
                       "type 3), not time exceeded (type 11)")
    if expected[:len(hops)] == hops or hops == expected[:silent - 1]:
        return Verdict(False, f"{hops} stops before the destination",
                       f"a silent hop is no reason to stop: after hop {silent}'s timeout, "
                       "go on with the next TTL until the destination answers")
    if hops[1:] == expected or hops == expected[1:]:
        return Verdict(False, f"{hops} is shifted by one hop against {expected}",
                       "the first probe has TTL 1: the first router is where it runs out")
    return Verdict(False, f"your traceroute found {hops}; the hops are {expected}",
                   "probe with TTL 1, 2, 3 ...; for each, read the ICMP error from the error "
                   "queue: the offender is the hop; None after a timeout; stop at the "
                   "destination's port unreachable")


# -- exercise 2: a path MTU -------------------------------------------------------------
def path_mtu_network() -> LabNetwork:
    """client — r1 — r2 — r3 — server with links of PATH_MTUS bytes (not started)."""
    hosts = ["client", "r1", "r2", "r3", "server"]
    return LabNetwork(*(Cable(a, b, mtu=mtu) for (a, b), mtu in
                        zip(itertools.pairwise(hosts), PATH_MTUS, strict=True)))


def _arrives(sock: socket.socket, sink: socket.socket, size: int) -> bool:
    """Send ``size`` bytes from ``sock``: True when ``sink`` has them, False when an ICMP
    error came back instead (it is read: the kernel's path MTU has moved)."""
    sock.send(b"x" * size)
    poller = select.poll()
    poller.register(sink, select.POLLIN)
    poller.register(sock, select.POLLERR)
    ready = dict(poller.poll(2000))
    if sink.fileno() in ready:
        return len(sink.recv(65536)) == size
    if sock.fileno() in ready:
        sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)
    return False


def measure_path(net: LabNetwork, links: int = len(PATH_MTUS)) -> dict[str, Any]:
    """Client to server over at most ``links`` links: the path MTU (the kernel's, found by
    probing with DF), whether the largest DF payload crosses and one byte more does not,
    and the fragments a DATAGRAM-byte payload sent without DF arrives in."""
    server = net.addresses["server"]
    with net.on("server"), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind((server, 9000))
        sink.settimeout(2.0)
        with net.on("client"), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
            sock.connect((server, 9000))
            # first the fragments, while the client knows no path MTU yet: once it has
            # learned one, it cuts its datagrams to fit the whole path itself
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
            before = _reassembly_requests(net)
            sock.send(b"y" * DATAGRAM)
            whole = len(sink.recv(65536)) == DATAGRAM
            fragments = _reassembly_requests(net) - before
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
            crossed = False
            for _ in range(links):  # each "fragmentation needed" lowers the path MTU
                largest = sock.getsockopt(socket.IPPROTO_IP, IP_MTU) - 28
                if crossed := _arrives(sock, sink, largest):
                    break
            mtu = sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
            try:
                sock.send(b"x" * (largest + 1))
                one_more = "sent"
            except OSError as exc:
                one_more = errno.errorcode.get(exc.errno or 0, str(exc))
    return {"mtu": mtu, "largest": largest, "crossed": crossed, "one more": one_more,
            "fragments": fragments, "whole": whole}


def _reassembly_requests(net: LabNetwork) -> int:
    """The server kernel's count of fragments it received to reassemble (ReasmReqds)."""
    names, values = [line.split() for line in net.run("server", "cat /proc/net/snmp")
                     .splitlines() if line.startswith("Ip:")][:2]
    return int(values[names.index("ReasmReqds")])


def _prediction(value: object) -> Verdict | tuple[int | None, ...]:
    """``value`` as (path MTU, payload, fragments), each a whole number or None; or why not."""
    form = "prediction = (path MTU, largest payload, fragments), e.g. (1234, None, None)"
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        return Verdict(False, f"the prediction should be three numbers, not {value!r}", form)
    for part in value:
        if part is not None and (isinstance(part, bool) or not isinstance(part, int)):
            return Verdict(False, f"each answer is a whole number of bytes or fragments, not "
                                  f"{part!r}", form)
    return tuple(value)


@answers_back
def check_path_mtu(prediction: tuple[int | None, int | None, int | None]) -> Verdict:
    """``prediction``: (path MTU, largest UDP payload with DF, fragments) for
    :func:`path_mtu_network`, each checked against the network (None: not yet)."""
    answer = _prediction(prediction)
    if isinstance(answer, Verdict):
        return answer
    path_mtu, largest_payload, fragments = answer
    with path_mtu_network() as net:
        found = measure_path(net)
    if not (found["crossed"] and found["whole"] and found["one more"] == "EMSGSIZE"):
        return Verdict(False, f"the network did not behave as planned ({json.dumps(found)}): "
                              "this is the check's fault, not yours",
                       "run the check again; if it says the same, report it")
    mtu, largest, count = found["mtu"], found["largest"], found["fragments"]
    if path_mtu != mtu:
        slips: dict[int | None, str] = {
            PATH_MTUS[0]: "that is the first link's MTU: every link on the way counts",
            max(PATH_MTUS): "the biggest link does not matter: the smallest one does"}
        return Verdict(False, f"the path MTU is not {path_mtu}",
                       slips.get(path_mtu, "a packet with DF set must fit every link it "
                                           "crosses: the path MTU is the smallest link MTU"))
    if largest_payload is None:
        return Verdict(False, f"path MTU {mtu}: right; now the largest UDP payload",
                       "write the second number of the prediction")
    if largest_payload != largest:
        slips = {mtu: "the MTU counts the IP header (20 bytes) and the UDP header (8) too",
                 mtu - 20: "the UDP header takes 8 bytes of it too",
                 mtu - 8: "the IP header takes 20 bytes of it too"}
        return Verdict(False, f"path MTU {mtu}: right; but the largest UDP payload with DF "
                              f"set is not {largest_payload}",
                       slips.get(largest_payload, "subtract the IP header (20 bytes) and the "
                                                  "UDP header (8) from the path MTU"))
    if fragments is None:
        return Verdict(False, f"path MTU {mtu} and {largest} bytes: right; now the fragments",
                       "write the third number of the prediction")
    if fragments != count:
        first = -(-(DATAGRAM + 8) // 1480)
        hint = ("routers never put fragments together: each fragment too big for the next "
                "link is cut again, and every fragment but the last carries a multiple of 8 "
                "bytes of the datagram (which has an 8-byte UDP header)")
        if fragments == first:
            hint = f"{first} fragments leave the client; " + hint
        return Verdict(False, f"path MTU {mtu} and {largest} bytes: right; but the server "
                              f"gets {DATAGRAM} bytes in other than {fragments} fragments",
                       hint)
    return Verdict(True, f"path MTU {mtu} (the smallest link), {largest} bytes of UDP payload "
                         f"(minus 20 + 8 bytes of headers) and {count} fragments, as the "
                         "server's kernel counted them")


# -- exercise 3: which rule breaks the connection ---------------------------------------------
@contextlib.contextmanager
def firewall_puzzle() -> Iterator[LabNetwork]:
    """client — r1 — r2 — server with PUZZLE_RULES in place and an echo server on the
    server's port PUZZLE_PORT: a connection from the client times out.

        >>> with firewall_puzzle() as puzzle:
        ...     print(puzzle.run("r2", "nft list ruleset"))
    """
    with LabNetwork.chain("client", "r1", "r2", "server") as net:
        for host, rules in PUZZLE_RULES.items():
            net.nft(host, rules)
        with net.on("server"), TCPServer("echo", host=net.addresses["server"],
                                         port=PUZZLE_PORT):
            yield net


def rules_of(net: LabNetwork, host: str) -> list[tuple[str, str, str]]:
    """``host``'s firewall rules as ``nft -a list ruleset`` shows them: (chain, rule,
    "family table chain handle N", which ``nft delete rule`` takes).

        >>> for chain, rule, _where in rules_of(puzzle, "r1"):
        ...     print(chain, rule)
    """
    found, table, chain = [], "", ""
    for line in net.run(host, "nft -a list ruleset").splitlines():
        words = line.split()
        if words[:1] == ["table"]:
            table = " ".join(words[1:3])
        elif words[:1] == ["chain"]:
            chain = words[1]
        elif (rule := re.fullmatch(r"\s*(.+?) # handle (\d+)", line)) is not None:
            found.append((chain, rule.group(1), f"{table} {chain} handle {rule.group(2)}"))
    return found


def _connects(net: LabNetwork) -> str:
    with net.on("client"):
        try:
            with socket.create_connection((net.addresses["server"], PUZZLE_PORT), timeout=1.0):
                return "connected"
        except OSError as exc:
            return type(exc).__name__


@answers_back
def check_culprit(culprit: tuple[str, str]) -> Verdict:
    """``culprit``: (host, rule) - the rule as ``nft list ruleset`` shows it on that host."""
    hint = "write culprit = (\"host\", \"the rule as nft list ruleset shows it\")"
    if (not isinstance(culprit, tuple) or len(culprit) != 2
            or not all(isinstance(part, str) for part in culprit)):
        return Verdict(False, f"culprit should be a (host, rule) pair of strings, not "
                              f"{culprit!r}", hint)
    host, rule = culprit[0].strip(), _normal(culprit[1])
    if host not in PUZZLE_RULES and host != "client":
        return Verdict(False, f"{host!r} is not a host of the puzzle",
                       "the hosts are client, r1, r2 and server")
    with firewall_puzzle() as net:
        rules = {_normal(rule): where for _chain, rule, where in rules_of(net, host)}
        if rule not in rules:
            shown = "; ".join(rules) or "no rules at all"
            return Verdict(False, f"{host} has no rule that reads {culprit[1]!r} ({host} has: "
                                  f"{shown})", "copy the rule's line from "
                                               f"net.run({host!r}, 'nft list ruleset')")
        before = _connects(net)
        net.run(host, f"nft delete rule {rules[rule]}")
        after = _connects(net)
    if before == "connected":
        return Verdict(False, "the puzzle's connection worked before any rule was removed: "
                              "this is the check's fault, not yours", "run the check again")
    if after == "connected":
        return Verdict(True, f"without {host}'s `{culprit[1].strip()}` the client connects: "
                             f"it dropped the server's answers (the SYN-ACK, from port "
                             f"{PUZZLE_PORT}) on their way back, so the client's SYN went "
                             "unanswered and connect() timed out")
    return Verdict(False, f"without {host}'s `{culprit[1].strip()}` the client still gets "
                          f"{after}", DECOYS.get((host, rule), "look at where the packets "
                          "stop: capture on each host in turn (the SYN, and the SYN-ACK "
                          "coming back), then read the rules of the host where they vanish"))
