"""Checks for notebook 06, Secure a connection with TLS.

``check_server_name`` tests the student's parser on ClientHellos it makes for names
the student has never seen, then on the capture's own ClientHello (a recording's too:
what is graded is the function, not the student's run).
"""

from __future__ import annotations

import secrets
import socket
import ssl

from . import NOT_WRITTEN, Verdict, answers_back, unfinished, verdict

__all__ = ["check_trusts_lab_ca", "check_server_name", "check_tls13_only"]

_HINT_TRUST = ("start from ssl.create_default_context(), which verifies, and tell it which CA "
               "to trust: the lab CA's certificate is the file `ca.cafile` (see that "
               "function's parameters)")


def _verification_off(ctx) -> Verdict | None:
    if not isinstance(ctx, ssl.SSLContext):
        return Verdict(False, f"expected an ssl.SSLContext, got {type(ctx).__name__}",
                       _HINT_TRUST)
    if ctx.protocol == ssl.PROTOCOL_TLS_SERVER:  # create_default_context(Purpose.CLIENT_AUTH)
        return Verdict(False, "this context is for the server side of a connection (it "
                              "authenticates clients), so it cannot verify a server",
                       "leave out Purpose.CLIENT_AUTH: the default purpose, Purpose.SERVER_AUTH, "
                       "makes a client context; " + _HINT_TRUST)
    if ctx.verify_mode != ssl.CERT_REQUIRED or not ctx.check_hostname:
        return Verdict(
            False,
            "this context does not verify the server (verify_mode is "
            f"{ctx.verify_mode.name}, check_hostname is {ctx.check_hostname}): it would "
            "talk to anyone who answers, attacker included",
            "never switch verification off to make an error go away; " + _HINT_TRUST)
    return None


def _rejected(exc: ssl.SSLCertVerificationError) -> Verdict:
    return Verdict(False, f"the lab server's certificate was rejected: {exc.verify_message}",
                   _HINT_TRUST)


def _handshake(ctx: ssl.SSLContext, server, host: str = "localhost") -> str | None:
    """Connect and say hello through TLS; returns the negotiated version (None: none)."""
    with socket.create_connection(server.address, timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(b"ping")
            tls.recv(16)
            return tls.version()


@answers_back
def check_trusts_lab_ca(ctx, ca) -> Verdict:
    """``ctx`` verifies certificates and host names, and trusts the lab CA ``ca``."""
    from labkit.servers.tls import TLSServer

    off = _verification_off(ctx)
    if off is not None:
        return off
    with TLSServer(ca) as server:
        try:
            version = _handshake(ctx, server)
        except ssl.SSLCertVerificationError as exc:
            return _rejected(exc)
        except (ssl.SSLError, OSError) as exc:
            return Verdict(False, f"the TLS connection failed: {exc}",
                           "use the context as create_default_context() makes it, trusting "
                           "the lab CA, without changing its other settings")
    return Verdict(True, f"your client verified the lab server's certificate and its host name, "
                         f"and spoke {version}")


_HINT_SNI = ("the host name is in the ClientHello's server_name extension: find that extension "
             "among the others (their number and order change from client to client), then "
             "the name inside it")


def _client_hello(name: str, alpn: list[str] | None = None, tls12: bool = False) -> bytes:
    """The first record a Python client sends to ``name``: its ClientHello, made in memory."""
    ctx = ssl.create_default_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client = ctx.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname=name)
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:  # sent its ClientHello, waits for the (absent) server
        pass
    return outgoing.read()


@answers_back
def check_server_name(server_name, wire) -> Verdict:
    """``server_name(hello: bytes) -> str`` finds the SNI in ClientHellos it has never seen,
    then names the server the ``wire``'s client asked for."""
    from labkit.views.tls import client_hello

    if not callable(server_name):
        return Verdict(False, f"give the function itself, not {type(server_name).__name__}",
                       "check_server_name(server_name, mystery), without parentheses")
    tag = secrets.token_hex(3)
    cases = [(f"www-{tag}.example", None, False), (f"a.b-{tag}.test", ["h2", "http/1.1"], False),
             (f"{'long-label-' * 5}{tag}.netlab.test", None, True)]
    for name, alpn, tls12 in cases:
        hello = _client_hello(name, alpn, tls12)
        what = f"a ClientHello for {name!r}" + (" (TLS 1.2 at most)" if tls12 else "") \
            + (f" (ALPN {alpn})" if alpn else "")
        try:
            got = server_name(hello)
        except Exception as exc:  # noqa: BLE001 - the student's code
            if unfinished(exc):
                return NOT_WRITTEN
            return Verdict(False, f"with {what}, server_name() raised {type(exc).__name__}: "
                           f"{exc}", _HINT_SNI)
        if isinstance(got, bytes):
            return Verdict(False, f"with {what}, you returned bytes ({got!r}): the name is a str",
                           "the name travels as ASCII bytes: decode them")
        if got != name:
            return Verdict(False, f"with {what}, you returned {got!r}", _HINT_SNI)
    first = next((s for s in wire.segments if s.src == "client" and s.length), None)
    if first is None:
        return Verdict(False, "the capture holds no ClientHello",
                       "pass the capture of the exercise, `mystery`")
    expected = client_hello(wire).get("sni")
    found = server_name(bytes(first.packet["TCP"].payload))
    return verdict(found == expected,
                   f"your function reads the server name from any ClientHello; the mystery "
                   f"client asked for {expected!r}, in plaintext, before any encryption",
                   wrong=f"in the mystery capture's ClientHello you found {found!r}",
                   hint=_HINT_SNI)


@answers_back
def check_tls13_only(ctx, ca) -> Verdict:
    """``ctx`` verifies as before, and refuses any server that cannot speak TLS 1.3."""
    from labkit.servers.tls import TLSServer

    off = _verification_off(ctx)
    if off is not None:
        return off
    hint = ("a context has a lowest TLS version it agrees to speak (see ssl.TLSVersion): raise "
            "it, on a context that still trusts the lab CA")
    old = ca.server_context()
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with TLSServer(ca) as modern, TLSServer(context=old) as legacy:
        try:
            version = _handshake(ctx, modern)
        except ssl.SSLCertVerificationError as exc:
            return _rejected(exc)
        try:
            legacy_version = _handshake(ctx, legacy)
        except ssl.SSLError:
            legacy_version = None
    if version != "TLSv1.3":
        return Verdict(False, f"against a modern server your client spoke {version}", hint)
    return verdict(legacy_version is None,
                   "your client speaks TLS 1.3 and refuses a server stuck on TLS 1.2",
                   wrong=f"your client accepted {legacy_version} from a TLS 1.2-only server",
                   hint=hint)
