"""Checks for notebook 06, Secure a connection with TLS.

``check_diagnose`` and ``check_versions_spoken`` run the student's function against lab
servers made to fail (or not) in known ways.  ``check_server_name`` tests the student's
parser on ClientHellos it makes for names the student has never seen, then on the
capture's own ClientHello (a recording's too: what is graded is the function, not the
student's run).
"""

from __future__ import annotations

import random
import secrets
import ssl
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from . import NOT_WRITTEN, Verdict, answers_back, unfinished, verdict

if TYPE_CHECKING:
    from labkit.capture.capture import Capture
    from labkit.servers.tls import LocalCA

__all__ = ["check_diagnose", "check_server_name", "check_versions_spoken"]

_HINT_TRUST = ("start from ssl.create_default_context(), which verifies, and tell it which CA "
               "to trust: the lab CA's certificate is the file `ca.cafile`")

LABELS = ("trusted", "unknown CA", "wrong name", "expired")


def _cases(ca: LocalCA) -> tuple[LocalCA, list[tuple[str, ssl.SSLContext, str, str]]]:
    """(what, server context, host name asked for, right label) for check_diagnose."""
    from labkit.servers.tls import LocalCA

    other = LocalCA("another CA")     # a CA the student's context has never heard of
    return other, [
        ("a certificate the lab CA issued for localhost, asked for as 'localhost'",
         ca.server_context(), "localhost", "trusted"),
        ("a certificate the lab CA issued for localhost, asked for as '127.0.0.1'",
         ca.server_context(), "127.0.0.1", "trusted"),
        ("a certificate the lab CA issued for www.example.org, asked for as 'localhost'",
         ca.server_context("www.example.org"), "localhost", "wrong name"),
        ("a certificate the lab CA issued for www.example.org, asked for as 'www.example.org'",
         ca.server_context("www.example.org"), "www.example.org", "trusted"),
        ("a certificate another CA issued for localhost, asked for as 'localhost'",
         other.server_context(), "localhost", "unknown CA"),
        ("a certificate the lab CA issued for localhost that expired yesterday",
         ca.server_context(expired=True), "localhost", "expired"),
    ]


def _diagnose_hint(said: str, right: str) -> str:
    if said == "unknown CA" and right != "unknown CA":
        return ("your context does not trust the lab CA, so every lab certificate looks "
                "unknown: " + _HINT_TRUST)
    if said == "trusted":
        return ("your client accepted a certificate it must refuse: keep verification on "
                "(never CERT_NONE or check_hostname = False), and connect with "
                "server_hostname set to the name you were given")
    return ("the ssl.SSLCertVerificationError says why verification failed: its "
            "verify_message (or verify_code) names the cause")


@answers_back
def check_diagnose(diagnose: Callable[[tuple[str, int], str], str], ca: LocalCA) -> Verdict:
    """``diagnose(address, hostname)`` says, for lab servers made to fail in known ways,
    'trusted', 'unknown CA', 'wrong name' or 'expired'."""
    from labkit.servers.tls import TLSServer

    if not callable(diagnose):
        return Verdict(False, f"give the function itself, not {type(diagnose).__name__}",
                       "check_diagnose(diagnose, ca), without parentheses")
    other, cases = _cases(ca)
    random.shuffle(cases)     # no answer can rely on the order
    try:
        for what, context, host, right in cases:
            with TLSServer(context=context) as server:
                try:
                    said = diagnose(server.address, host)
                except ssl.SSLCertVerificationError as exc:
                    return Verdict(False, f"for {what}, SSLCertVerificationError escaped from "
                                   f"diagnose: {exc.verify_message}",
                                   "catch ssl.SSLCertVerificationError: its verify_message "
                                   "(or verify_code) is what to read, not an error to pass on")
                except Exception as exc:  # the student's code
                    if unfinished(exc):
                        raise
                    return Verdict(False, f"for {what}, diagnose raised {type(exc).__name__}: "
                                   f"{exc}", "connect, wrap the socket with your verifying "
                                   "context and server_hostname=hostname, and catch "
                                   "ssl.SSLCertVerificationError")
            if said not in LABELS:
                return Verdict(False, f"for {what}, diagnose returned {said!r}",
                               f"return one of {', '.join(map(repr, LABELS))}, written exactly so")
            if said != right:
                return Verdict(False, f"for {what}, diagnose said {said!r}",
                               _diagnose_hint(said, right))
    finally:
        other.close()
    return Verdict(True, f"diagnose named all {len(cases)} cases right: a certificate is trusted "
                   "only if a CA you trust issued it, for the name you asked for, and it is "
                   "still valid")


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
def check_server_name(server_name: Callable[[bytes], str], wire: Capture) -> Verdict:
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
    first = next((s for s in wire.segments if s.src == "client" and s.length
                  and s.packet is not None and "TCP" in s.packet), None)
    if first is None or first.packet is None:
        return Verdict(False, "the capture holds no ClientHello",
                       "pass the capture of the exercise, `mystery`")
    expected = client_hello(wire).get("sni")
    found = server_name(bytes(first.packet["TCP"].payload))
    return verdict(found == expected,
                   f"your function reads the server name from any ClientHello; the mystery "
                   f"client asked for {expected!r}, in plaintext, before any encryption",
                   wrong=f"in the mystery capture's ClientHello you found {found!r}",
                   hint=_HINT_SNI)


_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def _version_set(answer: object) -> set[ssl.TLSVersion] | None:
    """The answer as a set of ssl.TLSVersion (strings like 'TLSv1.3' accepted), or None."""
    if not isinstance(answer, (set, frozenset, list, tuple)):
        return None
    found: set[ssl.TLSVersion] = set()
    for item in answer:
        if isinstance(item, ssl.TLSVersion):
            found.add(item)
        elif isinstance(item, str) and item in _VERSIONS:
            found.add(_VERSIONS[item])
        else:
            return None
    return found


def _names(versions: set[ssl.TLSVersion]) -> str:
    return "{" + ", ".join(sorted(v.name for v in versions)) + "}" if versions else "none"


@answers_back
def check_versions_spoken(versions_spoken: Callable[[tuple[str, int]],
                                                    Collection[ssl.TLSVersion | str]],
                          ca: LocalCA) -> Verdict:
    """``versions_spoken(address)`` finds which of TLS 1.2 and 1.3 a lab server accepts, for
    a modern server, one stuck on TLS 1.2 and one that insists on TLS 1.3."""
    from labkit.servers.tls import TLSServer

    if not callable(versions_spoken):
        return Verdict(False, f"give the function itself, not {type(versions_spoken).__name__}",
                       "check_versions_spoken(versions_spoken, ca), without parentheses")
    tls12, tls13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
    old, strict = ca.server_context(), ca.server_context()
    old.maximum_version = tls12
    strict.minimum_version = tls13
    servers = [("a modern server", ca.server_context(), {tls12, tls13}),
               ("a server stuck on TLS 1.2", old, {tls12}),
               ("a server that insists on TLS 1.3", strict, {tls13})]
    random.shuffle(servers)
    pin = ("a context agrees to a range of versions, and a handshake settles on the highest "
           "both sides speak: to try one version, set both minimum_version and "
           "maximum_version to it")
    answers: dict[str, tuple[set[ssl.TLSVersion], set[ssl.TLSVersion]]] = {}
    for what, context, right in servers:
        with TLSServer(context=context) as server:
            try:
                answer = versions_spoken(server.address)
            except Exception as exc:  # the student's code
                if unfinished(exc):
                    raise
                return Verdict(False, f"for {what}, versions_spoken raised "
                               f"{type(exc).__name__}: {exc}",
                               "a version the server refuses makes the handshake fail with "
                               "ssl.SSLError: catch it, that version is not spoken; " + pin)
        spoken = _version_set(answer)
        if spoken is None:
            return Verdict(False, f"for {what}, versions_spoken returned {answer!r}",
                           "return a set of ssl.TLSVersion members, e.g. "
                           "{ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3}")
        answers[what] = (spoken, right)
    if not any(spoken for spoken, _ in answers.values()):
        return Verdict(False, "no version worked with any of the three servers",
                       "does your context trust the lab CA (`ca.cafile`), and do you connect "
                       "as 'localhost'? " + pin)
    for what, (spoken, right) in answers.items():
        if spoken != right:
            return Verdict(False, f"for {what} you found {_names(spoken)}; it speaks "
                           f"{_names(right)}", pin)
    return Verdict(True, "versions_spoken tells the three servers apart: pinning one version "
                   "at a time is how you probe what a server accepts")
