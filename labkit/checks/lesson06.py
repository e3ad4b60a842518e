"""Checks for notebook 06, Secure a connection with TLS.

``check_sni`` reads a capture: in replay mode only one whose handshake the student's
run repeated (same connections, same bytes from the client; see
:func:`not_a_recording`).
"""

from __future__ import annotations

import socket
import ssl

from . import Verdict, answers_back, not_a_recording, verdict

__all__ = ["check_trusts_lab_ca", "check_sni", "check_tls13_only"]

_HINT_TRUST = ("start from ssl.create_default_context() and tell it to trust the lab CA: "
               "ssl.create_default_context(cafile=ca.cafile)")


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
                           "use the context as it comes from create_default_context(cafile=...)")
    return Verdict(True, f"your client verified the lab server's certificate and its host name, "
                         f"and spoke {version}")


@answers_back
def check_sni(answer, wire) -> Verdict:
    """``answer`` is the host name the client asked for in its ClientHello (SNI)."""
    from labkit.views.tls import client_hello

    if isinstance(answer, bytes):
        return Verdict(False, f"{answer!r} is bytes; the answer is the name as a str",
                       "decode it: answer.decode()")
    if not isinstance(answer, str):
        return Verdict(False, f"expected the host name as a str, got {type(answer).__name__}",
                       "the name is inside the server_name extension of the ClientHello")
    refused = not_a_recording(wire)
    if refused is not None:  # (a failed Verdict is falsy)
        return refused
    expected = client_hello(wire).get("sni")
    return verdict(answer.strip().lower() == expected,
                   f"the client asked for {expected!r}, in plaintext, before any encryption",
                   wrong=f"{answer!r} is not the name in the ClientHello's server_name extension",
                   hint="look at the first packet the client sends with data: parse it with "
                        "TLS(bytes(...)) and find its server_name extension (or search its "
                        "bytes for a dot-separated name)")


@answers_back
def check_tls13_only(ctx, ca) -> Verdict:
    """``ctx`` verifies as before, and refuses any server that cannot speak TLS 1.3."""
    from labkit.servers.tls import TLSServer

    off = _verification_off(ctx)
    if off is not None:
        return off
    hint = "set ctx.minimum_version = ssl.TLSVersion.TLSv1_3 on a context that trusts the lab CA"
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
