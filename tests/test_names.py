"""A name hierarchy: zones (labkit.servers.zone), authoritative DNSServers with referrals
and glue, and DNSResolver walking from the root with a cache (labkit.servers.resolver).

The hierarchy's servers listen on port 53 of loopback addresses 127.0.0.2-127.0.0.5, as
name servers do (glue carries addresses, not ports): those tests run in a private lab
namespace (test_labnet.in_lab), as root or not.
"""

import socket

import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from test_labnet import in_lab

from labkit import DNSServer
from labkit.servers.zone import Zone

ROOT = Zone({}, ".", delegate={"test": {"ns.nic.test": "10.0.3.5",
                                         "ns.elsewhere.example": "1.2.3.4"}})
AUTH = Zone({"www.netlab.test": ["10.0.5.7", "fd00:10:0:5::7"], "a.b.netlab.test": "10.0.5.9"},
            "netlab.test", ttl=120, negative_ttl=30)


def rows(records):
    return [(str(rr.rname), QTYPE[rr.rtype], rr.ttl, str(rr.rdata)) for rr in records]


# -- zones --------------------------------------------------------------------------------------
def test_a_delegation_is_a_referral_with_glue_only_for_servers_inside_it():
    answer = ROOT.answer("www.netlab.test.", "A")
    assert (answer.rcode, answer.aa, answer.answer) == (RCODE.NOERROR, False, [])
    assert rows(answer.authority) == [("test.", "NS", 300, "ns.nic.test."),
                                      ("test.", "NS", 300, "ns.elsewhere.example.")]
    assert rows(answer.additional) == [("ns.nic.test.", "A", 300, "10.0.3.5")]


def test_an_authority_answers_with_aa_and_says_no_with_its_soa():
    www = AUTH.answer("WWW.netlab.test", "AAAA")
    assert www.aa and rows(www.answer) == [("www.netlab.test.", "AAAA", 120, "fd00:10:0:5::7")]
    missing = AUTH.answer("nowhere.netlab.test.", "A")
    assert missing.rcode == RCODE.NXDOMAIN and missing.aa and not missing.answer
    # RFC 2308 3: a negative answer's SOA has the smaller of its TTL and its MINIMUM
    assert rows(missing.authority) == [("netlab.test.", "SOA", 30, "ns.netlab.test. "
                                        "hostmaster.netlab.test. 1 3600 600 86400 30")]
    no_data = AUTH.answer("a.b.netlab.test.", "AAAA")
    assert no_data.rcode == RCODE.NOERROR and not no_data.answer and no_data.authority
    between = AUTH.answer("b.netlab.test.", "A")  # has a name below it: exists, no data
    assert between.rcode == RCODE.NOERROR and not between.answer
    assert rows(AUTH.answer("netlab.test.", "SOA").answer)[0][2] == 120
    assert AUTH.answer("www.example.com.", "A").rcode == RCODE.REFUSED


def test_a_server_without_a_zone_answers_as_before():
    zone = Zone({"www.netlab.test": "127.0.0.7"})
    assert zone.answer("nowhere.netlab.test", "A").authority == []
    assert rows(zone.answer("www.netlab.test", "A").answer)[0][3] == "127.0.0.7"


@pytest.mark.parametrize("kwargs, words", [
    (dict(records={"a.test": "127.0.0.1"}, delegate={"b.test": {"ns.b.test": "1.2.3.4"}}),
     "delegate must be given with the zone"),
    (dict(zone="netlab.test", delegate={"example.com": {"ns.example.com": "1.2.3.4"}}),
     "a name below the zone netlab.test."),
    (dict(zone="netlab.test", delegate={"netlab.test": {"ns.netlab.test": "1.2.3.4"}}),
     "a name below the zone"),
    (dict(records={"www.example.com": "1.2.3.4"}, zone="netlab.test"),
     "a name in the zone netlab.test."),
    (dict(zone="test", delegate={"b.test": {"ns.b.test": "not an address"}}),
     "the address of 'ns.b.test' must be an IP address"),
    (dict(zone="a..test"), "zone must be a domain name"),
])
def test_zone_mistakes_are_named(kwargs, words):
    with pytest.raises((ValueError, TypeError), match=words):
        DNSServer(**kwargs)


def test_a_referral_over_the_wire_and_truncated_keeps_only_its_opt():
    servers = {f"ns{i}.big.netlab.test": f"10.0.{i}.1" for i in range(40)}
    with DNSServer(zone="netlab.test", delegate={"big.netlab.test": servers}) as dns, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(DNSRecord.question("www.big.netlab.test").pack(), dns.address)
        reply = DNSRecord.parse(sock.recv(4096))
    assert reply.header.tc and not reply.auth and not reply.ar   # no EDNS asked: 512 bytes
    assert not reply.header.aa and not reply.header.ra


# -- a resolver, walking the hierarchy ----------------------------------------------------------
HIERARCHY = """
    import subprocess
    from dnslib import DNSRecord, QTYPE, RCODE
    from labkit import DNSServer, DNSResolver
    from labkit.servers import resolver as resolver_module

    def hierarchy(tld_servers=None, **auth_kwargs):
        root = DNSServer(zone=".", delegate={"test": {"ns.nic.test": "127.0.0.3"}},
                         host="127.0.0.2", port=53, name="root")
        tld = DNSServer(zone="test", host="127.0.0.3", port=53, name="tld",
                        delegate=tld_servers or {"netlab.test": {"ns.netlab.test": "127.0.0.4"},
                                                 "other.test": {"ns.netlab.test": "127.0.0.4"}})
        auth = DNSServer({"www.netlab.test": ["10.0.5.7", "fd00:10:0:5::7"],
                          "ns.netlab.test": "127.0.0.4",
                          "many.netlab.test": [f"10.1.0.{i}" for i in range(1, 80)]},
                         zone="netlab.test", host="127.0.0.4", port=53, name="auth",
                         **({"ttl": 60, "negative_ttl": 30} | auth_kwargs))
        return root, tld, auth

    def ask(resolver, name, qtype="A", tcp=False):
        query = DNSRecord.question(name, qtype)
        if tcp:
            with socket.create_connection(resolver.address, timeout=5) as sock:
                sock.sendall(len(query.pack()).to_bytes(2, "big") + query.pack())
                data = sock.recv(65535)[2:]
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(5)
                sock.sendto(query.pack(), resolver.address)
                data = sock.recv(65535)
        reply = DNSRecord.parse(data)
        return {"rcode": RCODE[reply.header.rcode], "aa": reply.header.aa,
                "ra": reply.header.ra, "tc": reply.header.tc,
                "answer": [[str(rr.rdata), rr.ttl] for rr in reply.rr],
                "authority": [[QTYPE[rr.rtype], rr.ttl] for rr in reply.auth]}

    def age(resolver, seconds):   # as if `seconds` had passed since everything was cached
        for entry in [*resolver._cache.values(), *resolver._glue.values()]:
            entry.stored -= seconds
"""


def test_a_resolver_walks_from_the_root_and_then_answers_from_its_cache():
    result = in_lab(HIERARCHY, """
        root, tld, auth = hierarchy()
        with root, tld, auth, DNSResolver(["127.0.0.2"], host="127.0.0.5") as r:
            first = ask(r, "www.netlab.test")
            walk = [str(step) for step in r.log]
            again = ask(r, "www.netlab.test")
            six = ask(r, "www.netlab.test", "AAAA")
            age(r, 7)
            later = ask(r, "www.netlab.test")
            cached = [str(entry) for entry in r.cached()]
            print(json.dumps({"first": first, "walk": walk, "again": again, "six": six,
                              "later": later, "log": len(r.log), "hits": r.hits,
                              "cached": cached,
                              "asked": [len(s.queries) for s in (root, tld, auth)]}))
    """)
    assert result["walk"] == [
        "asked 127.0.0.2 for www.netlab.test. A: referral to test. (ns.nic.test. at 127.0.0.3)",
        "asked 127.0.0.3 for www.netlab.test. A: referral to netlab.test. "
        "(ns.netlab.test. at 127.0.0.4)",
        "asked 127.0.0.4 for www.netlab.test. A: answer (10.0.5.7)"]
    assert result["first"] == {"rcode": "NOERROR", "aa": 0, "ra": 1, "tc": 0,
                               "answer": [["10.0.5.7", 60]], "authority": []}
    assert result["again"]["answer"] == [["10.0.5.7", 60]]
    assert result["six"]["answer"] == [["fd00:10:0:5::7", 60]]   # netlab.test's server only
    assert result["later"]["answer"] == [["10.0.5.7", 53]]       # the TTL counts down
    assert result["log"] == 4 and result["hits"] == 2 and result["asked"] == [1, 1, 2]
    assert "test.                    NS      293 s  ns.nic.test." in result["cached"]
    assert "ns.netlab.test.          A       293 s  127.0.0.4 (glue)" in result["cached"]


def test_no_such_name_is_cached_as_long_as_the_soa_says():
    result = in_lab(HIERARCHY, """
        root, tld, auth = hierarchy(ttl=60, negative_ttl=20)
        with root, tld, auth, DNSResolver(["127.0.0.2"], host="127.0.0.5") as r:
            missing = ask(r, "nowhere.netlab.test")
            asked = len(auth.queries)
            again = ask(r, "nowhere.netlab.test", "AAAA")      # NXDOMAIN is for every type
            still = len(auth.queries)
            age(r, 21)
            expired = ask(r, "nowhere.netlab.test")
            no_data = ask(r, "ns.netlab.test", "AAAA")
            print(json.dumps({"missing": missing, "again": again, "expired": expired,
                              "no_data": no_data, "asked": [asked, still, len(auth.queries)],
                              "log": [str(s) for s in r.log][-2:]}))
    """)
    assert result["missing"]["rcode"] == "NXDOMAIN" and result["missing"]["authority"] == [
        ["SOA", 20]]
    assert result["again"]["rcode"] == "NXDOMAIN"
    assert result["asked"] == [1, 1, 3]       # once, not again, again once it expired
    assert result["expired"]["rcode"] == "NXDOMAIN"
    assert result["no_data"] == {"rcode": "NOERROR", "aa": 0, "ra": 1, "tc": 0, "answer": [],
                                 "authority": [["SOA", 20]]}
    assert result["log"][0] == ("asked 127.0.0.4 for nowhere.netlab.test. A: NXDOMAIN (SOA of "
                                "netlab.test., TTL 20, minimum 20)")


def test_a_big_answer_comes_over_tcp_upstream_and_downstream():
    result = in_lab(HIERARCHY, """
        root, tld, auth = hierarchy()
        with root, tld, auth, DNSResolver(["127.0.0.2"], host="127.0.0.5") as r:
            udp = ask(r, "many.netlab.test")
            tcp = ask(r, "many.netlab.test", tcp=True)
            print(json.dumps({"udp": udp, "tcp": len(tcp["answer"]), "log": str(r.log[-1]),
                              "truncated": r.truncated, "auth_tcp": auth.tcp_queries}))
    """)
    assert result["udp"]["tc"] == 1 and result["udp"]["answer"] == []   # 512 bytes: no EDNS
    assert result["tcp"] == 79 and result["truncated"] == 1 and result["auth_tcp"] == 1
    assert result["log"].startswith("asked 127.0.0.4 over TCP for many.netlab.test. A: answer "
                                    "(10.1.0.1, 10.1.0.2, 10.1.0.3, … 79 records)")


def test_a_dead_server_costs_its_timeout_and_a_spoofed_answer_is_ignored():
    result = in_lab(HIERARCHY, """
        import threading
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # hears, never answers
        silent.bind(("127.0.0.8", 53))
        liar = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)     # answers with a wrong id
        liar.bind(("127.0.0.6", 53))
        def lie():
            data, peer = liar.recvfrom(512)
            fake = DNSRecord.parse(data).reply()
            fake.header.id ^= 1
            fake.add_answer(*__import__("dnslib").RR.fromZone("www.netlab.test. 60 A 6.6.6.6"))
            liar.sendto(fake.pack(), peer)
            liar.sendto(auth.respond(data, tcp=False), peer)   # then the authority's truth
        servers = {"netlab.test": {"ns0.netlab.test": "127.0.0.9",    # refused: ICMP
                                   "ns1.netlab.test": "127.0.0.8",    # silent
                                   "ns2.netlab.test": "127.0.0.6"},   # the liar, then truth
                   "other.test": {"ns.netlab.test": "127.0.0.4"}}     # no glue: look it up
        root, tld, auth = hierarchy(servers)
        threading.Thread(target=lie, daemon=True).start()
        with root, tld, auth, DNSResolver(["127.0.0.2"], host="127.0.0.5", timeout=0.3) as r:
            started = time.monotonic()
            www = ask(r, "www.netlab.test")
            took = time.monotonic() - started
            print(json.dumps({"www": www, "took": took, "log": [str(s) for s in r.log]}))
    """)
    assert result["www"]["answer"] == [["10.0.5.7", 60]]
    assert result["log"][2:] == [
        "asked 127.0.0.9 for www.netlab.test. A: no answer (connection refused)",
        "asked 127.0.0.8 for www.netlab.test. A: no answer (timed out)",
        "asked 127.0.0.6 for www.netlab.test. A: answer (10.0.5.7)"]
    assert 0.3 <= result["took"] < 5


def test_a_name_server_without_glue_is_looked_up_first():
    result = in_lab(HIERARCHY, """
        root, tld, auth = hierarchy()    # other.test's server is ns.netlab.test: no glue
        with root, tld, auth, DNSResolver(["127.0.0.2"], host="127.0.0.5") as r:
            other = ask(r, "www.other.test")
            print(json.dumps({"other": other, "log": [str(s) for s in r.log]}))
    """)
    assert result["log"][1:5] == [
        "asked 127.0.0.3 for www.other.test. A: referral to other.test.",
        "asked 127.0.0.3 for ns.netlab.test. A: referral to netlab.test. "
        "(ns.netlab.test. at 127.0.0.4)",
        "asked 127.0.0.4 for ns.netlab.test. A: answer (127.0.0.4)",
        "asked 127.0.0.4 for www.other.test. A: REFUSED"]
    assert result["other"]["rcode"] == "SERVFAIL"   # (that server refuses: not its zone)


def test_a_ladder_says_what_each_dns_message_asks_or_answers():
    from labkit.protocols.dns import ladder_label

    query = DNSRecord.question("www.netlab.test", "AAAA")
    assert ladder_label(query) == "www.netlab.test. AAAA?  RD"

    def reply(zone, name="www.netlab.test.", qtype="A", **flags):
        record = DNSRecord.question(name, qtype).reply()   # (dnslib sets AA and RA)
        record.header.ra = 0
        answer = zone.answer(name, qtype)
        record.header.aa, record.header.rcode = answer.aa, answer.rcode
        for key, value in flags.items():
            setattr(record.header, key, value)
        record.rr, record.auth, record.ar = answer.answer, answer.authority, answer.additional
        return record

    assert ladder_label(reply(ROOT)) == "referral to test.: NS ns.nic.test. + glue (TTL 300)"
    assert ladder_label(reply(AUTH, qtype="AAAA")) == "AA: AAAA fd00:10:0:5::7 (TTL 120)"
    assert ladder_label(reply(AUTH, "nowhere.netlab.test.")) == "AA: NXDOMAIN, SOA (TTL 30)"
    assert ladder_label(reply(AUTH, "a.b.netlab.test.", "AAAA")) == "AA: no data, SOA (TTL 30)"
    truncated = DNSRecord.question("many.netlab.test").reply()
    truncated.header.tc = 1
    assert ladder_label(truncated) == "AA RA TC: truncated: ask again over TCP"
