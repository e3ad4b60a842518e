"""labkit.servers.dns (the local DNS server) and labkit.protocols.dns (DNS in captures)."""

import socket

import pytest
from conftest import needs_capture
from dnslib import QTYPE, RCODE, DNSRecord

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


@pytest.mark.parametrize("records, error, words", [
    ({}, TypeError, "non-empty dict"),
    (["www.x"], TypeError, "non-empty dict"),
    ({"www.x": "not-an-ip"}, ValueError, "not an IP address"),
    ({"": "127.0.0.1"}, ValueError, "domain names"),
])
def test_bad_zones_say_what_to_do(records, error, words):
    with pytest.raises(error, match=words):
        DNSServer(records)


def test_bad_ttl():
    with pytest.raises(ValueError, match="ttl"):
        DNSServer(ZONE, ttl=-1)


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


def test_an_answer_too_big_for_udp_is_truncated_like_a_real_server(caplog):
    from dnslib import EDNS0

    many = {"big.netlab.test": [f"127.0.1.{i}" for i in range(1, 61)]}   # 60 A records
    with DNSServer(many) as dns, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(DNSRecord.question("big.netlab.test").pack(), dns.address)
        raw = sock.recv(65535)
        short = DNSRecord.parse(raw)
        query = DNSRecord.question("big.netlab.test")
        query.add_ar(EDNS0(udp_len=4096))                          # "I can take 4096 bytes"
        sock.sendto(query.pack(), dns.address)
        full = DNSRecord.parse(sock.recv(65535))
    assert len(raw) <= 512 and short.header.tc and not short.rr    # TC: ask again over TCP
    assert str(short.q.qname) == "big.netlab.test."
    assert not full.header.tc and len(full.rr) == 60
    assert dns.truncated == 1 and "sent truncated (TC)" in caplog.text
