import datetime as dt
import http.client
import socket
import ssl

import pytest
from cryptography import x509

from labkit import HTTPSServer, LocalCA, ServerError, TLSServer


@pytest.fixture(scope="module")
def ca():
    with LocalCA() as ca:
        yield ca


def talk(server, ctx, host="localhost", data=b"hello"):
    with socket.create_connection(server.address, timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(data)
            return tls.recv(1024), tls.version()


def test_ca_files_live_in_a_temp_dir_that_goes_away():
    with LocalCA() as ca:
        assert ca.cafile.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        folder = ca.cafile.parent
    assert not folder.exists()


def test_server_certificate_facts_are_stable(ca):
    cert = ca.certificate()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cert.subject.rfc4514_string() == "CN=localhost,OU=lab server,O=netlab"
    assert cert.issuer.rfc4514_string() == "OU=netlab lab CA,O=netlab"
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 30
    assert ca.certificate(expired=True).not_valid_after_utc < dt.datetime.now(dt.UTC)


def test_bad_arguments_say_what_to_do(ca):
    with pytest.raises(ValueError, match=r"^name must be short printable text"):
        LocalCA("")
    with pytest.raises(ValueError, match=r"^each host must be a host name"):
        ca.issue("")
    with pytest.raises(TypeError, match=r"^days must be an int"):
        ca.issue(days="30")
    with pytest.raises(ValueError, match="LocalCA"):
        TLSServer()
    with pytest.raises(TypeError, match="LocalCA"):
        TLSServer("not a ca")
    with pytest.raises(TypeError, match="SSLContext"):
        TLSServer(context="nope")


def test_client_context_verifies_like_the_default_one(ca, tmp_path):
    ctx = ca.client_context(keylog=tmp_path / "keys.log")
    default = ssl.create_default_context()
    assert ctx.verify_mode == default.verify_mode == ssl.CERT_REQUIRED
    # the floor is pinned: Debian's Python leaves create_default_context's to OpenSSL
    assert ctx.check_hostname and ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    with TLSServer(ca, handler="upper") as server:
        assert talk(server, ctx) == (b"HELLO", "TLSv1.3")
        assert talk(server, ctx, host="127.0.0.1")[0] == b"HELLO"   # the SAN has the IP too
    assert "CLIENT_TRAFFIC_SECRET_0" in (tmp_path / "keys.log").read_text()


def test_server_files_build_a_server_context_by_hand():
    with LocalCA() as ca:
        certfile, keyfile = ca.server_files()
        assert keyfile.stat().st_mode & 0o777 == 0o600          # the private key: ours only
        # the certificate server_context() presents, and the key that goes with it
        assert x509.load_pem_x509_certificate(certfile.read_bytes()) == ca.certificate()
        assert ca.server_files() == (certfile, keyfile)          # written once, then reused
        assert ca.server_files(expired=True).certfile != certfile
        hand_made = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        hand_made.load_cert_chain(certfile, keyfile)
        with TLSServer(context=hand_made, handler="upper") as server:
            assert talk(server, ca.client_context()) == (b"HELLO", "TLSv1.3")
    assert not certfile.exists() and not keyfile.exists()       # gone with the CA
    with pytest.raises(RuntimeError, match="closed"):
        ca.server_files()


@pytest.mark.parametrize("make, host, message", [
    (lambda ca: ca.server_context(), "localhost", "unable to get local issuer certificate"),
    (lambda ca: ca.server_context("www.example.org"), "localhost",
     "Hostname mismatch, certificate is not valid for 'localhost'."),
    (lambda ca: ca.server_context(expired=True), "localhost", "certificate has expired"),
])
def test_each_verification_failure_has_its_own_message(ca, make, host, message):
    ctx = ssl.create_default_context() if "issuer" in message else ca.client_context()
    with TLSServer(context=make(ca)) as server:
        with pytest.raises(ssl.SSLCertVerificationError) as caught:
            talk(server, ctx, host)
        assert server.wait_handshakes(1)
        # a rejected certificate is the client's verdict, not a server bug: kept, not raised
        assert len(server.tls_errors) == 1
        if "expired" not in message:  # the right fix works, on the same server
            fixed_host = "www.example.org" if "mismatch" in message else "localhost"
            assert talk(server, ca.client_context(), fixed_host)[0] == b"hello"
    assert caught.value.verify_message == message


def test_version_mismatch_is_an_alert_and_the_server_keeps_serving(ca):
    old = ca.server_context()
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    strict = ca.client_context()
    strict.minimum_version = ssl.TLSVersion.TLSv1_3
    with TLSServer(context=old) as server:
        with pytest.raises(ssl.SSLError, match="TLSV1_ALERT_PROTOCOL_VERSION"):
            talk(server, strict)
        assert talk(server, ca.client_context()) == (b"hello", "TLSv1.2")
    assert server.tls_errors == ["SSLError: UNSUPPORTED_PROTOCOL"]


def test_garbage_instead_of_a_client_hello_is_not_a_server_crash(ca):
    with TLSServer(ca) as server:
        with socket.create_connection(server.address, timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")
            try:
                s.recv(1024)  # the server's alert, or EOF
            except ConnectionResetError:
                pass
        assert server.wait_handshakes(1)
        assert talk(server, ca.client_context())[0] == b"hello"
    assert len(server.tls_errors) == 1


def test_handler_errors_still_reach_the_owner(ca):
    def broken(conn, addr):
        conn.recv(10)
        raise RuntimeError("boom")

    with pytest.raises(ServerError, match="boom"):
        with TLSServer(ca, broken) as server:
            with socket.create_connection(server.address) as raw:
                with ca.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"x")
                    tls.recv(10)


def test_stop_wakes_a_handler_blocked_in_a_tls_recv(ca):
    with TLSServer(ca) as server:
        raw = socket.create_connection(server.address)
        tls = ca.client_context().wrap_socket(raw, server_hostname="localhost")
        assert server.wait_handshakes(1)
    tls.close()   # the server stopped (and joined its handler) while we were still connected


def test_https_server_with_http_client(ca):
    with HTTPSServer(ca) as server:
        assert server.url.startswith("https://127.0.0.1:")
        conn = http.client.HTTPSConnection("localhost", server.port, context=ca.client_context())
        conn.request("GET", "/hello")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"Hello, world!\n")
        assert conn.sock.version() == "TLSv1.3"
        conn.close()


def test_local_ca_temp_dir_goes_away_without_close():
    import gc

    ca = LocalCA()
    folder = ca.cafile.parent
    assert folder.stat().st_mode & 0o077 == 0          # private: the keys are only ours
    del ca
    gc.collect()
    assert not folder.exists()


def test_local_ca_temp_dir_goes_away_when_python_exits():
    import subprocess
    import sys
    from pathlib import Path

    script = "from labkit import LocalCA; ca = LocalCA(); print(ca.cafile.parent)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    assert not Path(done.stdout.strip()).exists()


def test_a_silent_tls_client_is_let_go_and_the_server_keeps_serving(ca, monkeypatch):
    from labkit.servers import tcp

    monkeypatch.setattr(tcp, "HANDSHAKE_TIMEOUT", 0.3)
    with TLSServer(ca) as server:
        with socket.create_connection(server.address, timeout=10) as silent:
            assert silent.recv(10) == b""              # disconnected, not held forever
        assert server.wait_handshakes(1, timeout=10)
        assert talk(server, ca.client_context())[0] == b"hello"
    assert server.tls_errors == ["TimeoutError: no TLS handshake within 0.3s"]


def non_ascii_client_hello() -> bytes:
    """A ClientHello asking for the server name b'\\xc3\\xa9aa.test' (Python's own clients
    send only ASCII, IDNA-encoded: the bytes are swapped in, same length)."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="aaaa.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read().replace(b"aaaa.test", b"\xc3\xa9aa.test")


def test_a_non_ascii_server_name_is_described_and_nothing_is_printed(ca, capfd):
    with TLSServer(ca) as server:
        with socket.create_connection(server.address, timeout=5) as raw:
            raw.sendall(non_ascii_client_hello())
            assert raw.recv(100)[:1] == b"\x15"          # a TLS alert, then the close
        assert server.wait_handshakes(1, timeout=5)
        assert talk(server, ca.client_context())[0] == b"hello"   # and it keeps serving
    assert server.tls_errors == ["SSLError: CALLBACK_FAILED (the server name the client sent, "
                                 "b'\\xc3\\xa9aa.test', is not ASCII)"]
    assert server.errors == []
    assert capfd.readouterr().err == "", "CPython's 'Exception ignored in' reached stderr"


def test_an_sni_callback_that_raises_is_the_owners_error(ca, capfd):
    def picky(tls_socket, server_name, context):
        raise LookupError(f"no certificate for {server_name}")

    context = ca.server_context()
    context.sni_callback = picky
    with pytest.raises(ServerError, match="LookupError: no certificate for localhost"):
        with TLSServer(context=context) as server:
            with pytest.raises(ssl.SSLError):
                talk(server, ca.client_context())
            assert server.wait_handshakes(1, timeout=5)
    assert server.tls_errors[0].endswith("(the sni_callback raised LookupError: "
                                         "no certificate for localhost)")
    assert capfd.readouterr().err == ""
