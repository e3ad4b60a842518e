import http.client
import json
import socket
import ssl
import struct
import subprocess

import pytest
from conftest import needs_capture, require_tool

from labkit import (
    Capture,
    HTTPSServer,
    LocalCA,
    TCPServer,
    TLSServer,
    client_hello,
    handshake,
    handshake_round_trips,
    server_hello,
    tls_records,
)
from labkit.protocols.tlsdissect import keylog_for, parse_keylog


@pytest.fixture(scope="module")
def ca():
    with LocalCA() as ca:
        yield ca


def https_get(server, ctx, path="/hello"):
    conn = http.client.HTTPSConnection("localhost", server.port, context=ctx, timeout=5)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return body


def capture_https(ca, tmp_path, *, version=None, name=None, tickets=0):
    keylog = tmp_path / "keys.log"
    server_ctx = ca.server_context()
    server_ctx.num_tickets = tickets
    ctx = ca.client_context(keylog=keylog)
    if version:
        ctx.maximum_version = version
    with HTTPSServer(context=server_ctx) as server, \
            Capture(server, name=name, keylog=keylog) as wire:
        assert https_get(server, ctx) == b"Hello, world!\n"
    return wire


def test_keylog_parsing_skips_comments_and_junk():
    text = "# comment\nCLIENT_RANDOM 0a0b 0c0d\nnot a line\nX zz 00\n"
    assert parse_keylog(text) == {"CLIENT_RANDOM": {b"\x0a\x0b": b"\x0c\x0d"}}   # Scapy's form


@needs_capture
def test_tls13_records_named_observer_and_decrypted_views(ca, tmp_path, live):
    wire = capture_https(ca, tmp_path)
    seen = [r.text for r in tls_records(wire, decrypt=False)]
    assert seen[:3] == ["ClientHello", "ServerHello", "ChangeCipherSpec"]
    assert set(seen[3:]) - {"ChangeCipherSpec"} == {"🔒Application Data"}
    names = [r.text for r in tls_records(wire)]
    assert names[:9] == ["ClientHello", "ServerHello", "ChangeCipherSpec",
                         "🔒EncryptedExtensions", "🔒Certificate", "🔒CertificateVerify",
                         "🔒Finished", "ChangeCipherSpec", "🔒Finished"]
    assert "🔒Application Data: 'GET /hello HTTP/1.1'" in names
    assert "🔒Application Data: 'HTTP/1.1 200 OK'" in names
    # the packet table and the ladder name the records too
    summaries = [s.summary for s in wire.segments]
    assert "ClientHello" in summaries
    assert any(s.startswith("ServerHello · ChangeCipherSpec · 🔒EncryptedExtensions")
               for s in summaries)
    labels = [t.get_text() for t in wire.ladder().axes[0].texts]   # what the ladder shows
    assert "ClientHello" in labels
    # a second line for the 🔒 part (wrapped to the room between the lifelines)
    (flight,) = [text for text in labels if text.startswith("ServerHello")]
    assert flight.startswith("ServerHello · ChangeCipherSpec\nencrypted: "), flight
    unwrapped = [" ".join(text.split()) for text in labels]
    assert ("ServerHello · ChangeCipherSpec encrypted: EncryptedExtensions · Certificate · "
            "CertificateVerify · Finished") in unwrapped
    assert "encrypted: Application Data: 'GET /hello HTTP/1.1'" in unwrapped
    assert handshake_round_trips(wire) == 1
    assert client_hello(wire)["sni"] == "localhost"
    assert server_hello(wire)["version"] == "TLS 1.3"
    # the capture keeps only the key log lines of its own sessions
    assert len(wire.meta["tls_keylog"].splitlines()) == 5


@needs_capture
def test_tls12_shows_the_certificate_and_takes_two_round_trips(ca, tmp_path, live):
    wire = capture_https(ca, tmp_path, version=ssl.TLSVersion.TLSv1_2)
    clear = [r.name for r in tls_records(wire, decrypt=False) if not r.encrypted]
    assert "Certificate" in clear
    assert handshake_round_trips(wire) == 2
    assert handshake(wire)["client"] == ["ClientHello", "ClientKeyExchange",
                                         "ChangeCipherSpec", "Finished"]
    assert "🔒Application Data: 'GET /hello HTTP/1.1'" in [r.text for r in tls_records(wire)]


@needs_capture
def test_tls_on_any_port_and_plain_tcp_untouched(ca, live):
    with TLSServer(ca) as tls_server, TCPServer(name="plain") as plain, \
            Capture(tls_server, plain) as wire:
        with socket.create_connection(plain.address) as s:
            s.sendall(b"\x16\x03\x01 not really tls")  # the client speaks first, not TLS
            s.recv(100)
        with socket.create_connection(tls_server.address) as raw:
            with ca.client_context().wrap_socket(raw, server_hostname="localhost") as t:
                t.sendall(b"x")
                t.recv(10)
    roles = {s.summary for s in wire.segments if s.length and "plain" in (s.src, s.dst)}
    assert roles == {repr(b"\x16\x03\x01 not really tls")}
    assert next(r.text for r in tls_records(wire)) == "ClientHello"


@needs_capture
def test_without_the_key_log_round_trips_in_tls13_ask_for_it(ca, tmp_path, live):
    wire = capture_https(ca, tmp_path)
    wire.meta.pop("tls_keylog")
    with pytest.raises(ValueError, match="key log"):
        handshake_round_trips(wire)


@needs_capture
def test_resumed_session_skips_the_certificate(ca, tmp_path, live):
    keylog = tmp_path / "keys.log"
    ctx = ca.client_context(keylog=keylog)
    with TLSServer(ca) as server, Capture(server, keylog=keylog) as wire:
        session = None
        for _ in range(2):
            with socket.create_connection(server.address) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as t:
                    t.sendall(b"x")
                    t.recv(10)
                    session = t.session
    assert client_hello(wire, 1)["pre_shared_key"]
    assert handshake(wire, 1)["server"] == ["ServerHello", "ChangeCipherSpec",
                                            "EncryptedExtensions", "Finished"]
    assert "🔒NewSessionTicket" in [r.text for r in tls_records(wire)]


def _blocks(data: bytes):
    i = 0
    while i < len(data):
        kind, size = struct.unpack("<II", data[i:i + 8])
        yield kind, data[i:i + size]
        i += size


@needs_capture
def test_save_embeds_the_key_log_and_tshark_decrypts_it(ca, tmp_path, live):
    """Interop: tshark, with no key log option at all, reads the HTTP request line."""
    tshark = require_tool("tshark")
    wire = capture_https(ca, tmp_path)
    path = wire.save(tmp_path / "https.pcapng")
    kinds = [kind for kind, _ in _blocks(path.read_bytes())]
    assert kinds[:3] == [0x0A0D0D0A, 0x0000000A, 0x00000001]   # SHB, DSB, IDB
    fields = ["-T", "fields", "-e", "http.request.method", "-e", "http.request.uri",
              "-e", "http.request.version"]
    done = subprocess.run([tshark, "-r", str(path), "-Y", "http.request", *fields],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0].split("\t") == ["GET", "/hello", "HTTP/1.1"]
    # the witness: without the embedded keys, tshark sees no HTTP at all
    wire.meta.pop("tls_keylog")
    plain = wire.save(tmp_path / "nokeys.pcapng")
    done = subprocess.run([tshark, "-r", str(plain), "-Y", "http.request", *fields],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == ""


@needs_capture
def test_recording_carries_its_key_log_to_replay(ca, tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("LABKIT_CAPTURE", "record")
    live_wire = capture_https(ca, tmp_path, name="t-tls")
    meta = json.loads((data_dir / "t-tls.json").read_text())
    assert meta["tls_keylog"] == live_wire.meta["tls_keylog"] != ""
    monkeypatch.setenv("LABKIT_CAPTURE", "replay")
    with Capture(4433, name="t-tls") as replayed:
        pass
    assert [r.text for r in tls_records(replayed)] == [r.text for r in tls_records(live_wire)]


def test_keylog_for_keeps_only_sessions_in_the_capture():
    assert keylog_for([], "CLIENT_RANDOM 00 11\n") == ""


@needs_capture
def test_a_record_split_across_segments_is_reassembled(ca, tmp_path, live):
    from types import SimpleNamespace

    from scapy.layers.inet import IP, TCP
    from scapy.packet import Raw

    wire = capture_https(ca, tmp_path)
    packets = list(wire.packets)
    i = next(n for n, p in enumerate(packets) if len(p[TCP].payload) > 600)  # server flight
    pkt, data = packets[i], bytes(packets[i][TCP].payload)
    halves = []
    for offset, chunk in ((0, data[:50]), (50, data[50:])):  # inside ServerHello
        part = pkt.copy()
        part[TCP].remove_payload()
        part[TCP].seq = pkt[TCP].seq + offset
        part = part.__class__(bytes(part / Raw(chunk)))   # rebuild lengths and checksums
        part[IP].len = None
        part.time = pkt.time
        halves.append(part)
    split = SimpleNamespace(packets=packets[:i] + halves + packets[i + 1:], roles=wire.roles,
                            meta=wire.meta)
    assert [r.text for r in tls_records(split)] == [r.text for r in tls_records(wire)]
    from labkit.capture.flows import segments

    assert segments(split.packets, split.roles, split.meta)[i].summary == "TLS (part of a record)"


@needs_capture
@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-GCM-SHA256",
                                    "ECDHE-ECDSA-CHACHA20-POLY1305",
                                    "ECDHE-ECDSA-AES256-SHA384"])   # CBC, encrypt-then-MAC
def test_tls12_decrypts_aead_and_cbc_suites(ca, tmp_path, live, cipher):
    keylog = tmp_path / "keys.log"
    ctx = ca.client_context(keylog=keylog)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cipher)
    with HTTPSServer(context=ca.server_context()) as server, \
            Capture(server, keylog=keylog) as wire:
        assert https_get(server, ctx) == b"Hello, world!\n"
    texts = [r.text for r in tls_records(wire)]
    assert "🔒Application Data: 'GET /hello HTTP/1.1'" in texts
    assert "🔒Application Data: 'HTTP/1.1 200 OK'" in texts
    assert texts.count("🔒Finished") == 2


@needs_capture
def test_a_wrong_key_is_undecryptable_a_missing_one_looks_like_no_key(ca, tmp_path, live):
    wire = capture_https(ca, tmp_path)
    lines = wire.meta["tls_keylog"].splitlines()
    wrong = [f"{label} {random} {'00' * (len(secret) // 2)}"
             for label, random, secret in (line.split() for line in lines)]
    wire.meta["tls_keylog"] = "\n".join(wrong)
    encrypted = {r.text for r in tls_records(wire) if r.encrypted}
    assert encrypted == {"🔒undecryptable record"}
    # only the handshake secrets: the handshake decrypts, the application data stays opaque
    wire.meta["tls_keylog"] = "\n".join(line for line in lines if "HANDSHAKE" in line)
    texts = [r.text for r in tls_records(wire)]
    assert "🔒Certificate" in texts and "🔒Application Data" in texts
    assert not any(r.plaintext for r in tls_records(wire))


@needs_capture
def test_hello_retry_request_costs_a_round_trip_and_still_decrypts(ca, tmp_path, live):
    keylog = tmp_path / "keys.log"
    server_ctx = ca.server_context()
    server_ctx.set_ecdh_curve("secp384r1")     # not the client's first key share (x25519)
    with TLSServer(context=server_ctx) as server, Capture(server, keylog=keylog) as wire:
        with socket.create_connection(server.address) as raw:
            with ca.client_context(keylog=keylog).wrap_socket(
                    raw, server_hostname="localhost") as t:
                t.sendall(b"x")
                t.recv(10)
    texts = [r.text for r in tls_records(wire)]
    assert texts[:6] == ["ClientHello", "HelloRetryRequest", "ChangeCipherSpec",
                         "ChangeCipherSpec", "ClientHello", "ServerHello"]
    assert "🔒Application Data: b'x'" in texts
    assert server_hello(wire)["key_share"] == ["secp384r1 (97-byte public key)"]
    assert handshake_round_trips(wire) == 2
