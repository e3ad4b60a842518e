"""labkit.servers.dns (the local DNS server) and labkit.protocols.dns (DNS in captures)."""

import os
import re
import shutil
import socket
import subprocess

import pytest
from conftest import needs_capture
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from labkit import Capture, DNSServer
from labkit.protocols.dns import describe_dns, parse_dns

ZONE = {"www.netlab.test": ["127.0.0.7", "2001:db8::7"], "Mail.Netlab.Test.": "127.0.0.25"}


def ask(dns, name, qtype="A", qid=99):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        query = DNSRecord.question(name, qtype)
        query.header.id = qid
        sock.sendto(query.pack(), dns.address)
        return DNSRecord.parse(sock.recv(512))


def test_answers_a_and_aaaa_nxdomain_for_unknown_names():
    with DNSServer(ZONE, ttl=60) as dns:
        a = ask(dns, "www.netlab.test")
        aaaa = ask(dns, "WWW.netlab.test", "AAAA")
        mail = ask(dns, "mail.netlab.test")
        missing = ask(dns, "nowhere.netlab.test")
        no_v6 = ask(dns, "mail.netlab.test", "AAAA")
    assert a.header.id == 99 and a.header.aa and not a.header.ra
    assert [(str(r.rdata), r.ttl, QTYPE[r.rtype]) for r in a.rr] == [("127.0.0.7", 60, "A")]
    assert [str(r.rdata) for r in aaaa.rr] == ["2001:db8::7"]
    assert [str(r.rdata) for r in mail.rr] == ["127.0.0.25"]
    assert missing.header.rcode == RCODE.NXDOMAIN and not missing.rr
    assert no_v6.header.rcode == RCODE.NOERROR and not no_v6.rr
    assert dns.queries[0] == ("www.netlab.test.", "A")


def test_garbage_gets_formerr_and_the_server_keeps_serving():
    with DNSServer(ZONE) as dns:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(b"\x12\x34 this is not DNS at all", dns.address)
            reply = DNSRecord.parse(sock.recv(512))
            sock.sendto(b"x", dns.address)          # too short to answer: ignored
        assert reply.header.id == 0x1234 and reply.header.rcode == RCODE.FORMERR
        assert [str(r.rdata) for r in ask(dns, "www.netlab.test").rr] == ["127.0.0.7"]
    assert dns.malformed == 2


def test_parse_dns_is_strict():
    query = DNSRecord.question("www.netlab.test").pack()
    assert parse_dns(query) is not None
    assert parse_dns(query + b"\x00") is None             # trailing bytes
    assert parse_dns(query[:-1]) is None                  # cut short
    assert parse_dns(b"anyone there?") is None
    assert parse_dns(b"\x00\x00\x00\x01message 1") is None


@needs_capture
def test_capture_describes_dns_on_any_port(live):
    with DNSServer(ZONE) as dns, Capture(dns) as wire:
        ask(dns, "www.netlab.test", qid=7)
    assert [s.summary for s in wire.segments] == [
        "DNS query id=7 www.netlab.test. A",
        "DNS response id=7 www.netlab.test. A → 127.0.0.7",
    ]
    assert [(s.src, s.dst) for s in wire.segments] == [("client", "dns"), ("dns", "client")]
    assert describe_dns(b"hello", wire.packets[0]) is None


def test_thousands_of_compressed_questions_get_formerr_not_a_dead_server():
    """5,000 questions pointing at one name: 30 KB in, and a reply 2.7x that would not fit."""
    import struct

    first = DNSRecord.question("www.netlab.test").pack()          # header + one question
    pointer = struct.pack("!HHH", 0xC00C, 1, 1)                   # "the name at byte 12", A, IN
    query = b"\x13\x37" + first[2:4] + struct.pack("!HHHH", 5000, 0, 0, 0) + first[12:] \
        + pointer * 4999
    assert len(query) > 30_000
    with DNSServer(ZONE) as dns, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query, dns.address)
        reply = DNSRecord.parse(sock.recv(65535))
        assert reply.header.id == 0x1337 and reply.header.rcode == RCODE.FORMERR
        assert [str(r.rdata) for r in ask(dns, "www.netlab.test").rr] == ["127.0.0.7"]


def test_an_answer_too_big_for_udp_is_truncated_like_a_real_server():
    many = {"big.netlab.test": [f"127.0.1.{i}" for i in range(1, 61)]}   # 60 A records
    with DNSServer(many) as dns, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(DNSRecord.question("big.netlab.test").pack(), dns.address)
        raw = sock.recv(65535)
        short = DNSRecord.parse(raw)
        full = ask_edns(dns, "big.netlab.test", udp_len=4096)      # "I can take 4096 bytes"
        over_tcp = ask_tcp(dns, "big.netlab.test")[0]
    assert len(raw) <= 512 and short.header.tc and not short.rr    # TC: ask again over TCP
    assert str(short.q.qname) == "big.netlab.test."
    assert not full.header.tc and len(full.rr) == 60
    assert not over_tcp.header.tc and len(over_tcp.rr) == 60        # ... where it all fits
    assert dns.truncated == 1 and dns.tcp_queries == 1


# -- a DNS server real resolvers can use: TCP, EDNS(0), no false claims ----------------------
def ask_edns(dns, name, udp_len=1232, version=0, do=False, qtype="A"):
    query = DNSRecord.question(name, qtype)
    query.add_ar(EDNS0(udp_len=udp_len, version=version, flags="do" if do else ""))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query.pack(), dns.address)
        return DNSRecord.parse(sock.recv(65535))


def tcp_message(sock) -> bytes:
    """One message from a DNS-over-TCP stream: two bytes of length, then that many."""
    def exactly(n):
        data = b""
        while len(data) < n:
            piece = sock.recv(n - len(data))
            assert piece, f"the server closed after {len(data)} of {n} bytes"
            data += piece
        return data

    return exactly(int.from_bytes(exactly(2), "big"))


def ask_tcp(dns, *names, qtype="A"):
    """Ask every name on one TCP connection, all queries sent before the first answer."""
    queries = []
    for i, name in enumerate(names):
        query = DNSRecord.question(name, qtype)
        query.header.id = 1000 + i
        queries.append(query.pack())
    with socket.create_connection(dns.address, timeout=5) as sock:
        sock.sendall(b"".join(len(q).to_bytes(2, "big") + q for q in queries))   # pipelined
        return [DNSRecord.parse(tcp_message(sock)) for _ in names]


def test_the_same_zone_answers_over_tcp_in_order():
    with DNSServer(ZONE, ttl=60) as dns:
        www, missing, aaaa = ask_tcp(dns, "www.netlab.test", "nowhere.netlab.test",
                                     "WWW.netlab.test", qtype="A")
        v6 = ask_tcp(dns, "www.netlab.test", qtype="AAAA")[0]
    assert [r.header.id for r in (www, missing, aaaa)] == [1000, 1001, 1002]
    assert [str(r.rdata) for r in www.rr] == ["127.0.0.7"] and www.header.aa
    assert missing.header.rcode == RCODE.NXDOMAIN
    assert [str(r.rdata) for r in v6.rr] == ["2001:db8::7"]
    assert dns.tcp_queries == 4 and dns.errors == []


def test_a_port_whose_tcp_side_is_taken_is_refused_and_nothing_stays_bound():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"TCP port {port} is in use .*port=0"):
            DNSServer(ZONE, port=port).__enter__()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", port))   # the UDP side it bound was let go


def test_the_udp_and_tcp_ports_are_one_number_and_both_are_declared():
    with DNSServer(ZONE) as dns:
        declared = {(e.transport, e.host, e.port) for e in dns.endpoints}
        port = dns.port
    assert declared == {("udp", "127.0.0.1", port), ("tcp", "127.0.0.1", port)}


def test_no_reply_claims_dnssec_and_rd_cd_are_copied():
    query = DNSRecord.question("www.netlab.test")
    query.header.ad, query.header.cd, query.header.rd = 1, 1, 1
    query.header.tc, query.header.ra, query.header.z, query.header.rcode = 1, 1, 1, 9  # stray
    with DNSServer(ZONE) as dns, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query.pack(), dns.address)
        reply = DNSRecord.parse(sock.recv(512))
    assert not reply.header.ad, "AD says 'validated by DNSSEC': this server validates nothing"
    assert reply.header.cd and reply.header.rd and not reply.header.ra
    assert not reply.header.tc and not reply.header.z and reply.header.rcode == RCODE.NOERROR
    assert [str(r.rdata) for r in reply.rr] == ["127.0.0.7"]


def test_edns_gets_an_opt_record_back_and_its_size_is_honoured():
    many = {"big.netlab.test": [f"127.0.1.{i}" for i in range(1, 61)],   # a ~1 KB answer
            **ZONE}
    with DNSServer(many) as dns:
        plain = ask(dns, "www.netlab.test")
        small = ask_edns(dns, "www.netlab.test", do=True)
        tight = ask_edns(dns, "big.netlab.test", udp_len=600)
        roomy = ask_edns(dns, "big.netlab.test", udp_len=1100)
        tiny = ask_edns(dns, "big.netlab.test", udp_len=100)      # below 512: taken as 512
        future = ask_edns(dns, "www.netlab.test", version=1)
    assert not [rr for rr in plain.ar if rr.rtype == QTYPE.OPT]   # no EDNS asked: none given
    opt = [rr for rr in small.ar if rr.rtype == QTYPE.OPT]
    assert len(opt) == 1 and opt[0].rclass == 1232 and opt[0].edns_do   # DO copied (RFC 3225)
    assert [str(r.rdata) for r in small.rr] == ["127.0.0.7"]
    assert tight.header.tc and not tight.rr and tight.ar[0].rtype == QTYPE.OPT
    assert not roomy.header.tc and len(roomy.rr) == 60
    assert tiny.header.tc
    assert future.header.rcode == 0 and (future.ar[0].ttl >> 24) == 1 and not future.rr  # BADVERS
    assert dns.truncated == 2


def test_a_response_is_never_answered():
    """Two servers answering each other's answers would talk forever."""
    reply = DNSRecord.question("www.netlab.test").reply()
    with DNSServer(ZONE) as dns, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        sock.sendto(reply.pack(), dns.address)
        sock.sendto(b"\x12\x34\x80 garbage with QR set", dns.address)
        assert [str(r.rdata) for r in ask(dns, "www.netlab.test").rr] == ["127.0.0.7"]
        with pytest.raises(TimeoutError):
            sock.recv(512)
    assert dns.malformed == 2


def test_tcp_garbage_gets_formerr_and_a_trickle_is_let_go(monkeypatch):
    from labkit.servers import dns as dns_module

    monkeypatch.setattr(dns_module, "MESSAGE_TIMEOUT", 0.3)
    garbage = b"\x12\x34 not DNS at all"
    with DNSServer(ZONE) as dns:
        with socket.create_connection(dns.address, timeout=5) as sock:
            sock.sendall(len(garbage).to_bytes(2, "big") + garbage)
            assert DNSRecord.parse(tcp_message(sock)).header.rcode == RCODE.FORMERR
        with socket.create_connection(dns.address, timeout=5) as sock:
            sock.sendall(b"\x00\x40\x12")        # 64 bytes promised, 1 sent, then silence
            assert sock.recv(10) == b""           # closed once the message's deadline passed
        assert [str(r.rdata) for r in ask_tcp(dns, "www.netlab.test")[0].rr] == ["127.0.0.7"]
    assert dns.malformed == 1 and dns.errors == []


def test_the_query_record_is_bounded_and_says_how_much_it_dropped(monkeypatch, caplog):
    from labkit.servers import dns as dns_module

    monkeypatch.setattr(dns_module, "QUERY_LOG", 5)
    with DNSServer(ZONE) as dns:
        for _ in range(8):
            ask(dns, "www.netlab.test")
    assert len(dns.queries) == 5 and dns.queries.dropped == 3
    assert "DNSServer 'dns': .queries keeps its first 5 entries" in caplog.text


@needs_capture
def test_a_capture_watches_both_transports_and_replay_counts_them(live):
    from labkit.capture.recording import difference, summarize

    with DNSServer(ZONE) as dns, Capture(dns) as wire:
        ask(dns, "www.netlab.test", qid=7)
        ask_tcp(dns, "www.netlab.test")
    summaries = [s.summary for s in wire.segments if s.summary.startswith("DNS")]
    assert summaries == ["DNS query id=7 www.netlab.test. A",
                         "DNS response id=7 www.netlab.test. A → 127.0.0.7",
                         "DNS query id=1000 www.netlab.test. A (over TCP)",
                         "DNS response id=1000 www.netlab.test. A → 127.0.0.7 (over TCP)"]
    assert {s.proto for s in wire.segments} == {"UDP", "TCP"}
    seen, recorded = dns.conversation(), summarize(wire.packets, wire.roles)["dns"]
    counted = ("connections", "datagrams_in", "datagrams_out", "content_in")
    assert {k: seen[k] for k in counted} == {k: recorded[k] for k in counted}
    assert seen["segments"] == [[len(s) for s in sizes] for sizes in recorded["segments"]]
    assert difference([seen], [recorded]) is None  # (and the connection lasted as long)


# -- dig, a resolver nobody here wrote ----------------------------------------------------------
def dig_tool() -> str:
    path = shutil.which("dig")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("dig is missing: .ci/run (make system-tools) must install bind9-dnsutils")
        pytest.skip("dig is not installed (apt-get install bind9-dnsutils)")
    return path


def dig(dns, name, *options) -> str:
    done = subprocess.run([dig_tool(), "@127.0.0.1", "-p", str(dns.port), name, "A",
                           "+time=2", "+tries=1", *options],
                          capture_output=True, text=True, timeout=30)
    return done.stdout + done.stderr


@pytest.mark.parametrize("options, via, answers, retried", [
    ((), "UDP", 1, False),
    (("+tcp",), "TCP", 1, False),
    (("+noedns",), "UDP", 1, False),
])
def test_dig_reads_every_answer(options, via, answers, retried):
    with DNSServer(ZONE) as dns:
        out = dig(dns, "www.netlab.test", *options)
    assert "status: NOERROR" in out and f"ANSWER: {answers}," in out, out
    assert re.search(rf";; SERVER: 127\.0\.0\.1#\d+\(127\.0\.0\.1\) \({via}\)", out), out
    flags = re.search(r";; flags: ([a-z ]+);", out).group(1).split()
    assert "ad" not in flags and "aa" in flags and "tc" not in flags, out
    assert ("; EDNS: version: 0, flags:; udp: 1232" in out) == ("+noedns" not in options), out


@pytest.mark.parametrize("options", [("+noedns",), ()], ids=["noedns", "edns"])
def test_dig_retries_a_large_answer_over_tcp_and_gets_it_all(options):
    zone = {"huge.netlab.test": [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(200)]}
    with DNSServer(zone) as dns:
        out = dig(dns, "huge.netlab.test", *options)
    assert "Truncated, retrying in TCP mode" in out, out
    assert "status: NOERROR" in out and "ANSWER: 200," in out and "(TCP)" in out, out
    assert "connection refused" not in out
