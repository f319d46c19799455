"""TLS for socket chardevs: contexts from ``tls-creds-x509``, and a sans-I/O session.

:class:`TlsSession` is Python's :class:`ssl.SSLObject` over two memory
BIOs: the chardev feeds it the bytes it reads from the socket and writes
whatever the session wants sent, so the handshake and the records run on
the chardev's own non-blocking fd handlers and never block the loop. Owning
the ciphertext also lets a refused peer be dropped the way QEMU drops it:
the connection is closed without a TLS alert.

:func:`check_peer` is QEMU's ``qcrypto_tls_session_check_credentials`` for
a server: with ``verify-peer=on`` the client must have sent a certificate
(OpenSSL has already verified it against ``ca-cert.pem``), and its
distinguished name, written as GnuTLS writes it
(:mod:`qomhost.crypto.x509dn`), must be allowed by the ``tls-authz``
object. With ``verify-peer=off`` nothing is checked, ``tls-authz``
included, as in QEMU.

A client (``-chardev socket,host=...,tls-creds=ID`` with client credentials)
checks the server's certificate against ``ca-cert.pem`` and, after the
handshake, against the host name it connected to (:func:`check_server`).

This module imports :mod:`ssl`; only a chardev with ``tls-creds`` imports it.
"""

from __future__ import annotations

import os
import ssl

from qomhost.errors import QemuError

# Protocols for the type checker only (typing is not imported at run time).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    class TlsMaterial(Protocol):
        """What credentials loaded (``qomhost.objects.tls.X509Material``)."""

        ca_der: list[bytes]
        chain_pem: bytes | None
        key_pem: bytes | None
        crl_pem: bytes | None
        dh_pem: bytes | None

    class TlsCredentials(Protocol):
        """What a TLS chardev reads from its credentials (``tls-creds-x509``)."""

        endpoint: str
        verify_peer: bool
        priority: str | None
        contexts: dict[object, object]

        @property
        def material(self) -> TlsMaterial | None: ...

    #: asks the ``tls-authz`` object about a DN; raises QemuError if it cannot tell
    Authorize = Callable[[str], bool]

__all__ = [
    "TlsError",
    "TlsSession",
    "check_peer",
    "check_server",
    "hostname_matches",
    "priority_versions",
    "tls_context",
]

_VERSIONS = {
    b"VERS-TLS1.0": ssl.TLSVersion.TLSv1,
    b"VERS-TLS1.1": ssl.TLSVersion.TLSv1_1,
    b"VERS-TLS1.2": ssl.TLSVersion.TLSv1_2,
    b"VERS-TLS1.3": ssl.TLSVersion.TLSv1_3,
}
#: what GnuTLS's NORMAL (and QEMU's default, @QEMU,SYSTEM) enables
_DEFAULT_VERSIONS = frozenset({ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3})
_BASE_KEYWORDS = frozenset(
    {
        "NORMAL",
        "PERFORMANCE",
        "SECURE",
        "SECURE128",
        "SECURE192",
        "SECURE256",
        "SUITEB128",
        "SUITEB192",
        "LEGACY",
        "PFS",
        "SYSTEM",
        "NONE",
    }
)


class TlsError(QemuError):
    """A TLS connection failed or was refused; ``desc`` says why, in QEMU's words."""


def priority_versions(priority: str | None) -> frozenset[ssl.TLSVersion]:
    """The protocol versions a GnuTLS priority string enables.

    Only the ``VERS-*`` items are honoured (``NORMAL:-VERS-TLS1.3`` means
    TLS 1.2 only); cipher, key exchange and MAC items are left to OpenSSL's
    defaults. A string GnuTLS would refuse (an unknown base keyword, or one
    leaving no version) raises :class:`TlsError` with QEMU's message, which
    QEMU reports when a client connects.
    """
    if priority is None:
        return _DEFAULT_VERSIONS
    items = priority.encode("utf-8", "surrogateescape").split(b":")
    base = items[0].decode("utf-8", "replace")
    keyword = base.split(",")[0]
    if not (keyword in _BASE_KEYWORDS or keyword.startswith("@")):
        raise TlsError(
            f"Cannot set default TLS session priority {priority}: The request is invalid."
        )
    versions = set() if keyword == "NONE" else set(_DEFAULT_VERSIONS)
    for item in items[1:]:
        sign, name = item[:1], item[1:]
        if name in (b"VERS-ALL", b"VERS-TLS-ALL"):
            chosen = set(_VERSIONS.values())
        elif name in _VERSIONS:
            chosen = {_VERSIONS[name]}
        else:
            continue
        if sign == b"+":
            versions |= chosen
        elif sign in (b"-", b"!"):
            versions -= chosen
    if not versions:
        raise TlsError(
            f"Cannot set default TLS session priority {priority}: "
            "No or insufficient priorities were set."
        )
    return frozenset(versions)


def _memfd(data: bytes) -> int:
    """A memory file holding ``data``: OpenSSL loads keys only by path."""
    fd = os.memfd_create("qomhost-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
    except BaseException:
        os.close(fd)
        raise
    return fd


def tls_context(creds: TlsCredentials, server: bool) -> ssl.SSLContext:
    """The :class:`ssl.SSLContext` for one side of a connection, as ``creds`` say.

    Built from what the credentials loaded at completion (not the files as
    they are now), and cached on the credentials per side, ``verify-peer``
    and ``priority``, which QEMU reads at each new connection.
    """
    material = creds.material
    if material is None:
        raise TlsError("TLS credentials are not loaded")
    versions = priority_versions(creds.priority)
    key = (server, creds.verify_peer, versions)
    found = creds.contexts.get(key)
    if isinstance(found, ssl.SSLContext):
        return found
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = min(versions)
    ctx.maximum_version = max(versions)
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    if material.ca_der:
        ctx.load_verify_locations(cadata=b"".join(material.ca_der))
    if material.chain_pem is not None and material.key_pem is not None:
        fd = _memfd(material.chain_pem + material.key_pem)
        try:
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    if material.crl_pem is not None:
        fd = _memfd(material.crl_pem)
        try:
            ctx.load_verify_locations(cafile=f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if material.dh_pem is not None:
        fd = _memfd(material.dh_pem)
        try:
            ctx.load_dh_params(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    if server:
        # QEMU asks for a client certificate but judges it only after the
        # handshake (check_peer); without verify-peer it asks for none.
        ctx.verify_mode = ssl.CERT_OPTIONAL if creds.verify_peer else ssl.CERT_NONE
    else:
        # The host name is checked after the handshake (check_server), as
        # GnuTLS checks it for QEMU: the server sees a complete handshake.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED if creds.verify_peer else ssl.CERT_NONE
    creds.contexts[key] = ctx
    return ctx


class TlsSession:
    """One TLS connection, driven by the bytes its owner moves.

    The owner calls :meth:`receive` with what the socket gave, then
    :meth:`handshake` until it returns true, then :meth:`read`; and sends
    whatever :meth:`pending` returns after each of those and after
    :meth:`encrypt`. Failures raise :class:`ssl.SSLError`.
    """

    def __init__(
        self, context: ssl.SSLContext, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=None if server_side else server_hostname,
        )
        self.established = False
        #: the peer sent close_notify
        self.closed = False

    def receive(self, data: bytes) -> None:
        """Bytes read from the socket."""
        self._incoming.write(data)

    def handshake(self) -> bool:
        """Advance the handshake; true once it is complete."""
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        self.established = True
        return True

    def read(self) -> bytes:
        """All the application data the records received so far hold.

        Reading until OpenSSL wants more input (rather than one record at a
        time) means no complete command is left waiting for the next packet.
        """
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._tls.read(1 << 16)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def encrypt(self, data: bytes) -> bytes:
        """``data`` as records, ready to send."""
        view = memoryview(data)
        while view:
            sent = self._tls.write(view)
            view = view[sent:]
        return self.pending()

    def pending(self) -> bytes:
        """Bytes the session wants sent (handshake messages, alerts, records)."""
        return self._outgoing.read()

    def peer_certificate(self) -> bytes | None:
        """The peer's certificate (DER), if it sent one."""
        return self._tls.getpeercert(binary_form=True)

    def version(self) -> str | None:
        """The negotiated protocol, e.g. ``TLSv1.3``."""
        return self._tls.version()


def check_peer(
    session: TlsSession, creds: TlsCredentials, authorize: Authorize | None
) -> str | None:
    """Judge a client once the handshake is over; returns its DN, or raises :class:`TlsError`.

    ``authorize`` is the ``tls-authz`` check (``None`` without ``tls-authz``): it
    gets the DN and answers, or raises :class:`~qomhost.errors.QemuError` when it
    cannot tell. The checks and their messages are QEMU's
    (``qcrypto_tls_session_check_certificate``): ``No certificate peers``,
    ``Cannot get client distinguished name: ...``, ``TLS x509 authz check for <DN>
    is denied``, or the authz object's own error (``Cannot find QAuthZ object ID
    auth0``). ``None`` means nothing was checked (``verify-peer=off``).
    """
    if not creds.verify_peer:
        return None
    der = session.peer_certificate()
    if der is None:
        raise TlsError("No certificate peers")
    from qomhost.crypto.x509dn import DNError, subject_dn

    try:
        dn = subject_dn(der)
    except DNError as exc:
        raise TlsError(f"Cannot get client distinguished name: {exc}") from None
    if authorize is not None:
        try:
            allowed = authorize(dn)
        except QemuError as err:
            raise TlsError(err.desc) from None
        if not allowed:
            raise TlsError(f"TLS x509 authz check for {dn} is denied")
    return dn


def _label_matches(pattern: str, label: str) -> bool:
    """One DNS label against one pattern label that may hold a single ``*``."""
    if "*" not in pattern:
        return pattern == label
    head, _star, tail = pattern.partition("*")
    return (
        "*" not in tail
        and len(label) >= len(head) + len(tail)
        and label.startswith(head)
        and label.endswith(tail)
    )


def _dns_matches(pattern: str, hostname: str) -> bool:
    """RFC 6125 matching, as GnuTLS does it: case-insensitive, and a wildcard
    only in the leftmost label of a name with at least three labels."""
    want = pattern.rstrip(".").lower().split(".")
    have = hostname.rstrip(".").lower().split(".")
    if len(want) != len(have) or not all(want):
        return False
    if any("*" in label for label in want[1:]):
        return False
    if "*" in want[0] and len(want) < 3:
        return False
    return _label_matches(want[0], have[0]) and want[1:] == have[1:]


def hostname_matches(cert_der: bytes, hostname: str) -> bool:
    """``gnutls_x509_crt_check_hostname``: does the certificate name ``hostname``?

    An IP address must be one of the certificate's ``iPAddress`` names. A host
    name must match a ``dNSName``, or, in a certificate without any, its
    common name.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except ValueError:
        return False
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        names = None
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        address = None
    if address is not None:
        return names is not None and address in names.get_values_for_type(x509.IPAddress)
    dns_names = names.get_values_for_type(x509.DNSName) if names is not None else []
    if dns_names:
        return any(_dns_matches(name, hostname) for name in dns_names)
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return len(common) == 1 and _dns_matches(str(common[0].value), hostname)


def check_server(session: TlsSession, creds: TlsCredentials, hostname: str | None) -> None:
    """Judge the server once the handshake is over, as QEMU's client does.

    With ``verify-peer=on`` OpenSSL has verified the chain during the
    handshake; what is left is the name: ``Certificate does not match the
    hostname <host>`` raises :class:`TlsError`.
    """
    if not creds.verify_peer:
        return
    der = session.peer_certificate()
    if der is None:
        raise TlsError("No certificate peers")
    if hostname is None:
        raise TlsError("No hostname for certificate validation")
    if not hostname_matches(der, hostname):
        raise TlsError(f"Certificate does not match the hostname {hostname}")
