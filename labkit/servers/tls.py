"""A throwaway certificate authority and TLS servers for the TLS lessons.

:class:`LocalCA` is built on ``trustme``: its keys live in memory and in a private
temp dir that disappears with it (on ``close()``, or when the object is garbage
collected or the interpreter exits), so nothing secret is ever committed or left
behind.  Contexts it
makes are ordinary :mod:`ssl` contexts; the client one verifies certificates and
host names exactly like ``ssl.create_default_context()`` (it *is* one, trusting
the lab CA).

    >>> with LocalCA() as ca, TLSServer(ca) as server:
    ...     ctx = ssl.create_default_context(cafile=ca.cafile)
    ...     with socket.create_connection(server.address) as raw, \\
    ...          ctx.wrap_socket(raw, server_hostname="localhost") as s:
    ...         s.sendall(b"hi"); s.recv(10)
    b'hi'
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import socket
import ssl
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import trustme

from labkit.servers import arguments
from labkit.servers.http import HTTPServer
from labkit.servers.tcp import TCPHandler, TCPServer

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

__all__ = ["LocalCA", "CertFiles", "TLSServer", "HTTPSServer", "LAB_HOSTS"]

LAB_HOSTS = ("localhost", "127.0.0.1")


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None)


class CertFiles(NamedTuple):
    """A server certificate chain and its private key, as PEM files for ``load_cert_chain``.

    Attributes:
        certfile: the certificate chain, PEM (the server's certificate first)
        keyfile: its private key, PEM (in the CA's private temp dir)
    """

    certfile: Path
    keyfile: Path


class LocalCA:
    """A certificate authority for the lab only; trust it and lab servers verify.

    ``ca.cafile`` is the CA certificate (PEM) to trust; :meth:`server_context` and
    :meth:`client_context` give ready :class:`ssl.SSLContext` objects, and
    :meth:`server_files` the certificate and key files to build a server context
    yourself.  Use it as a context manager (or call :meth:`close`) to delete its temp
    dir at once; a finaliser deletes it anyway when the CA is garbage collected or
    Python exits.

    Attributes:
        name: the CA's name, in its certificate (organizational unit)
        cafile: the CA certificate, a PEM file: what a client trusts
    """

    def __init__(self, name: str = "netlab lab CA") -> None:
        arguments.server_name(name)   # short printable text, like a server's name
        self.name = name
        # Fixed names (trustme would add random text): what the lesson prints stays the same
        self._ca = trustme.CA(organization_name="netlab", organization_unit_name=name)
        self._dir = Path(tempfile.mkdtemp(prefix="labkit-ca-"))  # mode 0700: private
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._dir), ignore_errors=True)
        self.cafile = self._dir / "lab-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.cafile))
        self._leaves: dict[tuple[tuple[str, ...], bool, int], trustme.LeafCert] = {}
        self._files: dict[trustme.LeafCert, CertFiles] = {}   # by leaf: written once

    # -- context manager -----------------------------------------------------
    def __enter__(self) -> LocalCA:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False

    def close(self) -> None:
        """Delete the CA's temp dir (its keys and certificate files); safe to call twice."""
        self._cleanup()  # runs rmtree once; later calls (and the finaliser) do nothing

    def __repr__(self) -> str:
        return f"<LocalCA {self.name!r}>"

    # -- certificates --------------------------------------------------------
    @property
    def cert_pem(self) -> bytes:
        """The CA certificate, PEM encoded (public: safe to show and share)."""
        return self._ca.cert_pem.bytes()

    def issue(self, *hosts: str, expired: bool = False, days: int = 30) -> trustme.LeafCert:
        """A server certificate (trustme ``LeafCert``) for ``hosts``.

        ``expired=True`` gives one whose validity ended yesterday (for the failure demo).
        """
        hosts = hosts or LAB_HOSTS
        for host in hosts:
            arguments.instance(host, "each host", str, "a host name", "'localhost'")
            if not host:
                arguments.fail(ValueError, "each host", "a host name", host, "'localhost'")
        arguments.integer(days, "days", 1, 36500, "30")
        arguments.flag(expired, "expired")
        key = (hosts, expired, days)
        if key not in self._leaves:
            now = _utcnow().replace(microsecond=0)
            if expired:
                not_before = now - _dt.timedelta(days=days + 1)
                not_after = now - _dt.timedelta(days=1)
            else:
                not_before, not_after = now - _dt.timedelta(hours=1), now + _dt.timedelta(days=days)
            self._leaves[key] = self._ca.issue_cert(
                *hosts, common_name=hosts[0], organization_name="netlab",
                organization_unit_name="lab server", not_before=not_before, not_after=not_after)
        return self._leaves[key]

    def certificate(self, *hosts: str, expired: bool = False) -> Certificate:
        """The server certificate for ``hosts`` as a ``cryptography`` x509.Certificate."""
        from cryptography import x509

        leaf = self.issue(*hosts, expired=expired)
        return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())

    def server_files(self, *hosts: str, expired: bool = False) -> CertFiles:
        """The server certificate for ``hosts`` as files: ``(certfile, keyfile)``.

        For a server context written by hand, with the same certificate as
        :meth:`server_context` (same hosts, same ``expired``):

            >>> ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            >>> certfile, keyfile = ca.server_files()
            >>> ctx.load_cert_chain(certfile, keyfile)

        They live in the CA's private temp dir and go away with it; the key file is
        readable by its owner only (mode 0600).
        """
        if not self._cleanup.alive:
            raise RuntimeError("this LocalCA is closed and its files are deleted: "
                               "make a new one, LocalCA()")
        leaf = self.issue(*hosts, expired=expired)   # the one server_context() presents
        if leaf not in self._files:
            # Numbered, not named after the hosts: a host name is no safe file name
            n = len(self._files) + 1
            files = CertFiles(self._dir / f"server-{n}-cert.pem", self._dir / f"server-{n}-key.pem")
            files.certfile.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
            # Created 0600 (not written, then chmod-ed): the key is never readable by others
            fd = os.open(files.keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(leaf.private_key_pem.bytes())
            self._files[leaf] = files
        return self._files[leaf]

    def server_context(self, *hosts: str, expired: bool = False) -> ssl.SSLContext:
        """A server-side context presenting a certificate for ``hosts``.

        Default hosts are ``localhost`` and ``127.0.0.1``; give others (e.g.
        ``"www.example.org"``) for the wrong-host demo, or ``expired=True``.
        """
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # A client that hangs up without a close_notify alert (http.client does) is an
        # ordinary end of an HTTPS conversation, not an attack worth a fatal alert. Debian's
        # Python sets this option by default and CPython's own build does not; set it so
        # the wire looks the same on every build (no stray "decode_error" alert).
        ctx.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
        self.issue(*hosts, expired=expired).configure_cert(ctx)
        return ctx

    def client_context(self, keylog: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
        """``ssl.create_default_context(cafile=ca.cafile)``: verifies certificate and host name.

        ``keylog`` (a path) makes it append its session secrets there in the
        NSS key log format Wireshark reads (like ``SSLKEYLOGFILE``).
        """
        ctx = ssl.create_default_context(cafile=str(self.cafile))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # Debian's Python leaves it to OpenSSL
        if keylog is not None:
            ctx.keylog_filename = os.fspath(arguments.path(keylog, "keylog", "'keys.log'"))
        return ctx


def _pick_context(ca: LocalCA | None, context: ssl.SSLContext | None) -> ssl.SSLContext:
    if context is not None:
        checked: ssl.SSLContext = arguments.instance(
            context, "context", ssl.SSLContext, "an ssl.SSLContext", "ca.server_context()")
        return checked
    if ca is None:
        arguments.fail(ValueError, "ca", "a LocalCA, or context= a server ssl.SSLContext", ca,
                       "TLSServer(LocalCA())", "a TLS server needs a certificate")
    checked_ca: LocalCA = arguments.instance(ca, "ca", LocalCA, "a LocalCA",
                                             "TLSServer(LocalCA())")
    return checked_ca.server_context()


class TLSServer(TCPServer):
    """A :class:`TCPServer` whose connections are wrapped in TLS before the handler runs.

    ``TLSServer(ca)`` presents a certificate for localhost/127.0.0.1 issued by ``ca``;
    ``TLSServer(context=ctx)`` uses your own server context (e.g. one limited to
    TLS 1.2).  The handler gets the :class:`ssl.SSLSocket`.  A handshake that fails
    (the client rejected the certificate, spoke another version, said nothing for
    ``HANDSHAKE_TIMEOUT`` seconds) is not a server bug: it is described in
    ``server.tls_errors`` (``'SSLError: TLSV1_ALERT_UNKNOWN_CA'``) and the server
    keeps serving.  ``wait_handshakes(n)`` waits for n handshakes, good or failed.

    Attributes:
        context: the server's TLS context (its certificate, versions, ...)
    """

    def __init__(self, ca: LocalCA | None = None, handler: str | TCPHandler = "echo", *,
                 context: ssl.SSLContext | None = None, host: str = "127.0.0.1",
                 port: int = 0, name: str = "server", backlog: int = socket.SOMAXCONN) -> None:
        super().__init__(handler, host=host, port=port, name=name, backlog=backlog)
        self.context = _pick_context(ca, context)
        self._use_tls(self.context)
        self.speaks = f"TLS, then {self.speaks}"


class HTTPSServer(HTTPServer):
    """The lab's :class:`HTTPServer` speaking HTTPS, with a certificate from ``ca``.

        >>> with HTTPSServer(ca) as server:                 # or HTTPSServer(context=ctx)
        ...     urllib.request.urlopen(server.url + "/hello", context=ca.client_context())

    ``HTTPSServer(ca, static, ...)`` takes HTTPServer's other arguments after ``ca``.
    Failed handshakes land in ``server.tls_errors``, as on :class:`TLSServer`.
    """

    def __init__(self, ca: LocalCA | None = None, static: str | os.PathLike[str] | None = None,
                 *, context: ssl.SSLContext | None = None, host: str = "127.0.0.1",
                 port: int = 0, name: str = "server", backlog: int = socket.SOMAXCONN) -> None:
        super().__init__(static, ssl_context=_pick_context(ca, context), host=host, port=port,
                         name=name, backlog=backlog)
