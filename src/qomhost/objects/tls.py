"""``tls-creds`` and ``tls-creds-x509``: X.509 credentials for TLS endpoints.

A ``tls-creds-x509`` object names a directory holding PEM files with the
names QEMU expects, and loads them once, when it is completed:

===================  ==========================  =============================
file                 ``endpoint=server``         ``endpoint=client`` (default)
===================  ==========================  =============================
``ca-cert.pem``      required                    required
``ca-crl.pem``       optional                    not used
``server-cert.pem``  required                    not used
``server-key.pem``   required                    not used
``dh-params.pem``    optional (PKCS#3)           not used
``client-cert.pem``  not used                    optional
``client-key.pem``   not used                    optional
===================  ==========================  =============================

Loading follows QEMU 7.2 step by step, with its messages (QEMU uses GnuTLS;
qomhost reads the files with ``cryptography`` and reports what GnuTLS
reports):

1. each file is looked up in QEMU's order; a required one that cannot be
   ``stat``-ed fails with ``Unable to access credentials DIR/ca-cert.pem: No
   such file or directory`` (``Missing 'dir' property value`` without
   ``dir``);
2. with ``sanity-check=on`` (the default) the certificates are checked as
   QEMU checks them: expiry and activation (``The server certificate F has
   expired``), basic constraints (a CA must say ``CA:TRUE``, a leaf must
   not), key usage (digital signature for a leaf, certificate signing for a
   CA, when the extension is critical), extended key usage (server or client
   purpose, when critical), and that the certificate was signed by one of
   the CAs (``Our own certificate F failed validation against CA: The
   certificate hasn't got a known issuer``);
3. the CA list, the certificate and key (decrypted with the secret named by
   ``passwordid`` when the key is encrypted), the CRL and the DH parameters
   are loaded; any failure fails ``object-add``.

``verify-peer`` (default on) and ``priority`` are read at each new
connection, as QEMU reads them; changing ``dir`` or ``sanity-check``
afterwards changes what ``qom-get`` shows and nothing else.

Library use::

    creds = host.add_object("tls-creds-x509", "tls0", dir="/etc/pki/qemu",
                            endpoint="server")
    creds.loaded                    # True
"""

from __future__ import annotations

import os
import time

from qomhost.errors import ObjectError
from qomhost.qapi.schema import BOOL, STR, EnumKind, Member
from qomhost.qom.object import Object, ObjectProperty, field_property

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar

    from cryptography import x509

__all__ = [
    "TLS_ENDPOINT",
    "QCryptoTLSCreds",
    "QCryptoTLSCredsX509",
    "X509Material",
]

TLS_ENDPOINT = EnumKind("QCryptoTLSCredsEndpoint", ("client", "server"))

CA_CERT = "ca-cert.pem"
CA_CRL = "ca-crl.pem"
SERVER_CERT = "server-cert.pem"
SERVER_KEY = "server-key.pem"
CLIENT_CERT = "client-cert.pem"
CLIENT_KEY = "client-key.pem"
DH_PARAMS = "dh-params.pem"

#: GnuTLS reads at most this many certificates from ``ca-cert.pem``
MAX_CA_CERTS = 16

# GnuTLS's error strings, for the failures QEMU reports with them.
E_FILE = "Error while reading file."
E_BASE64 = "Base64 decoding error."
E_BASE64_HEADER = "Base64 unexpected header error."
E_ASN1_TAG = "ASN1 parser: Error in TAG."
E_ASN1_DER = "ASN1 parser: Error in DER parsing."
E_NO_DATA = "The requested data were not available."
E_DECRYPT = "Decryption has failed."
E_KEY_MISMATCH = "The certificate and the given key do not match."

_OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
_OID_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"
_OID_ANY_PURPOSE = "2.5.29.37.0"
#: signature hashes GnuTLS 3.7 no longer trusts in a certificate chain
_INSECURE_HASHES = frozenset({"md5", "sha1"})


class QCryptoTLSCreds(Object):
    """``tls-creds``: the abstract parent of every kind of TLS credentials."""

    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("verify-peer", BOOL),
        Member("dir", STR),
        Member("endpoint", TLS_ENDPOINT),
        Member("priority", STR),
    )

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.verify_peer = True
        self.dir: str | None = None
        self.endpoint = "client"
        #: a GnuTLS priority string; see :func:`qomhost.chardev.tls.priority_versions`
        self.priority: str | None = None

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        def set_endpoint(obj: Any, value: object) -> None:
            obj.endpoint = value

        return [
            field_property("verify-peer", "verify_peer", BOOL),
            field_property("dir", "dir", STR),
            ObjectProperty(
                "endpoint",
                TLS_ENDPOINT.qom_type,
                getter=lambda obj: obj.endpoint,
                setter=set_endpoint,
                kind=TLS_ENDPOINT,
            ),
            field_property("priority", "priority", STR),
        ]

    def get_path(self, filename: str, required: bool) -> str | None:
        """``DIR/filename`` if it exists; ``None`` if it may be missing and is.

        Any other ``stat`` failure is an error, as in QEMU, even for an
        optional file.
        """
        if self.dir is None:
            if required:
                raise ObjectError("Missing 'dir' property value")
            return None
        path = f"{self.dir}/{filename}"
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == 2 and not required:  # ENOENT
                return None
            raise ObjectError(
                f"Unable to access credentials {path}: {os.strerror(exc.errno or 0)}"
            ) from None
        return path

    def check_endpoint(self, endpoint: str) -> None:
        """What a consumer asks first: are these credentials for its side?"""
        if self.endpoint != endpoint:
            raise ObjectError(f"Expected TLS credentials for a {endpoint} endpoint")


class X509Material:
    """What a ``tls-creds-x509`` object loaded: everything a TLS context needs.

    ``key_pem`` holds the private key unencrypted (PKCS#8) in a
    :class:`~qomhost.objects.secret.SecretBytes`, so that it never shows in a
    repr or a traceback.
    """

    __slots__ = ("ca_der", "chain_pem", "crl_pem", "dh_pem", "key_pem")

    def __init__(
        self,
        ca_der: list[bytes],
        chain_pem: bytes | None,
        key_pem: bytes | None,
        crl_pem: bytes | None,
        dh_pem: bytes | None,
    ) -> None:
        self.ca_der = ca_der
        self.chain_pem = chain_pem
        self.key_pem = key_pem
        self.crl_pem = crl_pem
        self.dh_pem = dh_pem

    def __repr__(self) -> str:
        return (
            f"<X509Material: {len(self.ca_der)} CA certificate(s), "
            f"certificate {'yes' if self.chain_pem else 'no'}, "
            f"key {'yes' if self.key_pem else 'no'}>"
        )


class QCryptoTLSCredsX509(QCryptoTLSCreds):
    """``tls-creds-x509``: a CA list, and this side's certificate and key."""

    MEMBERS: ClassVar[tuple[Member, ...]] = (
        # In 7.2's QAPI schema, though QOM refuses to set it.
        Member("loaded", BOOL),
        Member("sanity-check", BOOL),
        Member("passwordid", STR),
    )

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.sanity_check = True
        self.passwordid: str | None = None
        #: what complete() loaded; None until then
        self.material: X509Material | None = None
        #: TLS contexts built from ``material`` (kept by qomhost.chardev.tls)
        self.contexts: dict[object, object] = {}
        #: how to find the ``passwordid`` secret (set by the host before complete)
        self.lookup: Callable[[str], Object | None] = lambda _id: None

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        return [
            ObjectProperty("loaded", "bool", getter=lambda obj: obj.material is not None),
            field_property("sanity-check", "sanity_check", BOOL),
            field_property("passwordid", "passwordid", STR),
        ]

    @property
    def loaded(self) -> bool:
        """Whether the credentials were loaded (the ``loaded`` property)."""
        return self.material is not None

    def complete(self) -> None:
        self.material = self._load()

    # --- loading, in QEMU's order -----------------------------------------
    def _load(self) -> X509Material:
        server = self.endpoint == "server"
        cacrl = cert = key = dhparams = None
        if server:
            cacert = self.get_path(CA_CERT, True)
            cacrl = self.get_path(CA_CRL, False)
            cert = self.get_path(SERVER_CERT, True)
            key = self.get_path(SERVER_KEY, True)
            dhparams = self.get_path(DH_PARAMS, False)
        else:
            cacert = self.get_path(CA_CERT, True)
            cert = self.get_path(CLIENT_CERT, False)
            key = self.get_path(CLIENT_KEY, False)
        assert cacert is not None
        if self.sanity_check:
            _sanity_check(server, cacert, cert)
        ca_der = _load_trust_file(cacert)
        chain_pem = key_pem = None
        if cert is not None and key is not None:
            password = self._password()
            chain_pem, key_pem = _load_key_pair(cert, key, password)
        crl_pem = _load_crl(cacrl) if cacrl is not None else None
        dh_pem = _load_dh_params(dhparams) if dhparams is not None else None
        return X509Material(ca_der, chain_pem, key_pem, crl_pem, dh_pem)

    def _password(self) -> str | None:
        if self.passwordid is None:
            return None
        from qomhost.objects.secret import lookup_secret, secret_as_utf8

        return secret_as_utf8(lookup_secret(self.lookup, self.passwordid), self.passwordid)


# --- files -------------------------------------------------------------------


def _read(path: str) -> bytes:
    """The file's bytes up to the first NUL (QEMU hands GnuTLS ``strlen(buf)``)."""
    from qomhost.gfile import read_file_contents

    data = read_file_contents(path)
    return data.split(b"\0", 1)[0]


def _pem_blocks(data: bytes, labels: tuple[bytes, ...]) -> list[tuple[bytes, bytes]]:
    """``(label, body)`` of each PEM block whose label is one of ``labels``."""
    blocks: list[tuple[bytes, bytes]] = []
    pos = 0
    while True:
        start = data.find(b"-----BEGIN ", pos)
        if start < 0:
            return blocks
        head_end = data.find(b"-----", start + 11)
        if head_end < 0:
            return blocks
        label = data[start + 11 : head_end]
        end = data.find(b"-----END " + label + b"-----", head_end)
        if end < 0:
            if label in labels:
                blocks.append((label, data[head_end + 5 :]))
            return blocks
        if label in labels:
            blocks.append((label, data[head_end + 5 : end]))
        pos = end + 14 + len(label)


def _pem_der(body: bytes) -> bytes:
    """Decode a PEM body (headers such as ``Proc-Type`` are not expected here)."""
    import binascii

    try:
        return binascii.a2b_base64(b"".join(body.split()), strict_mode=True)
    except binascii.Error:
        raise ValueError(E_BASE64_HEADER) from None


def _parse_der_cert(der: bytes) -> x509.Certificate:
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        # libtasn1 fails on the outer tag first, else somewhere inside.
        raise ValueError(E_ASN1_TAG if not der or der[0] != 0x30 else E_ASN1_DER) from None


_CERT_LABELS = (b"CERTIFICATE", b"X509 CERTIFICATE")


def _parse_pem_cert(data: bytes) -> x509.Certificate:
    """The first certificate of a PEM file, failing with GnuTLS's reason."""
    blocks = _pem_blocks(data, _CERT_LABELS)
    if not blocks:
        raise ValueError(E_BASE64_HEADER)
    return _parse_der_cert(_pem_der(blocks[0][1]))


def _load_cert(path: str, server: bool) -> x509.Certificate:
    try:
        data = _read(path)
    except OSError as exc:
        # QEMU 7.2 words a failed read of the certificate as one of the CA list.
        raise ObjectError(f"Cannot load CA cert list {path}: {exc}") from None
    try:
        return _parse_pem_cert(data)
    except ValueError as exc:
        side = "server" if server else "client"
        raise ObjectError(f"Unable to import {side} certificate {path}: {exc}") from None


def _load_ca_list(path: str) -> list[x509.Certificate]:
    try:
        data = _read(path)
    except OSError as exc:
        raise ObjectError(f"Cannot load CA cert list {path}: {exc}") from None
    blocks = _pem_blocks(data, _CERT_LABELS)[:MAX_CA_CERTS]
    try:
        if not blocks:
            raise ValueError(E_BASE64_HEADER)
        return [_parse_der_cert(_pem_der(body)) for _label, body in blocks]
    except ValueError:
        raise ObjectError(f"Unable to import CA certificate list {path}") from None


# --- the sanity checks ----------------------------------------------------------


def _sanity_check(server: bool, cacert: str, cert_path: str | None) -> None:
    """``qcrypto_tls_creds_x509_sanity_check``: this side's certificate and the CAs."""
    cert = None
    if cert_path is not None and os.access(cert_path, os.R_OK):
        cert = _load_cert(cert_path, server)
    cas: list[x509.Certificate] = []
    if os.access(cacert, os.R_OK):
        cas = _load_ca_list(cacert)
    if cert is not None:
        assert cert_path is not None
        _check_cert(cert, cert_path, server, is_ca=False)
    for ca in cas:
        _check_cert(ca, cacert, server, is_ca=True)
    if cert is not None and cas:
        assert cert_path is not None
        _check_pair(cert, cert_path, cas, cacert)


def _extension(cert: x509.Certificate, cls: type[Any]) -> Any:
    from cryptography import x509

    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None


def _check_cert(cert: x509.Certificate, path: str, server: bool, is_ca: bool) -> None:
    from cryptography import x509

    side = "server" if server else "client"
    now = time.time()
    what = "CA" if is_ca else side
    if cert.not_valid_after_utc.timestamp() < now:
        raise ObjectError(f"The {what} certificate {path} has expired")
    if cert.not_valid_before_utc.timestamp() > now:
        raise ObjectError(f"The {what} certificate {path} is not yet active")

    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is not None and constraints.value.ca:
        if not is_ca:
            raise ObjectError(
                f"The certificate {path} basic constraints show a CA, but we need one for a {side}"
            )
    elif constraints is not None:
        if is_ca:
            raise ObjectError(f"The certificate {path} basic constraints do not show a CA")
    elif is_ca:
        raise ObjectError(f"The certificate {path} is missing basic constraints for a CA")

    usage = _extension(cert, x509.KeyUsage)
    # Without the extension every usage is allowed; a usage missing from a
    # non-critical one is tolerated (QEMU only fails on a critical one).
    if usage is not None and usage.critical:
        if is_ca and not usage.value.key_cert_sign:
            raise ObjectError(f"Certificate {path} usage does not permit certificate signing")
        if not is_ca and not usage.value.digital_signature:
            raise ObjectError(f"Certificate {path} usage does not permit digital signature")

    if is_ca:
        return
    purposes = _extension(cert, x509.ExtendedKeyUsage)
    if purposes is None or not purposes.critical:
        return
    oids = {oid.dotted_string for oid in purposes.value}
    allowed = _OID_ANY_PURPOSE in oids or (
        _OID_SERVER_AUTH in oids if server else _OID_CLIENT_AUTH in oids
    )
    if not allowed:
        raise ObjectError(f"Certificate {path} purpose does not allow use with a TLS {side}")


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca`` may have signed ``cert`` and did."""
    from cryptography import x509

    usage = _extension(ca, x509.KeyUsage)
    if usage is not None and not usage.value.key_cert_sign:
        return False  # GnuTLS does not take such a CA as an issuer at all
    if cert.issuer.public_bytes() != ca.subject.public_bytes():
        return False
    # By hand rather than verify_directly_issued_by(), which refuses SHA-1
    # signatures outright: GnuTLS finds the issuer first, then judges the hash.
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    public = ca.public_key()
    signature, tbs = cert.signature, cert.tbs_certificate_bytes
    try:
        algorithm = cert.signature_hash_algorithm
        if isinstance(public, rsa.RSAPublicKey):
            padding = cert.signature_algorithm_parameters
            public.verify(signature, tbs, padding, algorithm)  # type: ignore[arg-type]
        elif isinstance(public, ec.EllipticCurvePublicKey):
            assert algorithm is not None
            public.verify(signature, tbs, ec.ECDSA(algorithm))
        elif isinstance(public, dsa.DSAPublicKey):
            assert algorithm is not None
            public.verify(signature, tbs, algorithm)
        elif isinstance(public, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            public.verify(signature, tbs)
        else:
            return False
    except Exception:  # a bad signature, or a key or hash cryptography cannot check
        return False
    return True


def _check_pair(
    cert: x509.Certificate, path: str, cas: list[x509.Certificate], cacert: str
) -> None:
    """``qcrypto_tls_creds_check_cert_pair``: was our certificate signed by a CA?"""
    reason = None
    if not any(_issued_by(cert, ca) for ca in cas):
        reason = "The certificate hasn't got a known issuer"
    else:
        try:
            algorithm = cert.signature_hash_algorithm
        except Exception:  # a hash cryptography does not even know (MD2)
            algorithm = None
        if algorithm is None or algorithm.name in _INSECURE_HASHES:
            reason = "The certificate uses an insecure algorithm"
    if reason is not None:
        raise ObjectError(
            f"Our own certificate {path} failed validation against {cacert}: {reason}"
        )


# --- what GnuTLS loads after the checks --------------------------------------------


def _load_trust_file(path: str) -> list[bytes]:
    """``gnutls_certificate_set_x509_trust_file``: the CA certificates, as DER.

    Blocks that do not parse are skipped, and a file with none is no error
    (GnuTLS counts zero CAs); every peer then fails verification.
    """
    try:
        data = _read(path)
    except OSError:
        raise ObjectError(f"Cannot load CA certificate '{path}': {E_FILE}") from None
    found: list[bytes] = []
    for _label, body in _pem_blocks(data, _CERT_LABELS):
        try:
            der = _pem_der(body)
            _parse_der_cert(der)
        except ValueError:
            continue
        found.append(der)
    return found


_KEY_LABELS = (
    b"PRIVATE KEY",
    b"ENCRYPTED PRIVATE KEY",
    b"RSA PRIVATE KEY",
    b"EC PRIVATE KEY",
    b"DSA PRIVATE KEY",
)


def _load_key_pair(cert_path: str, key_path: str, password: str | None) -> tuple[bytes, bytes]:
    """``gnutls_certificate_set_x509_key_file2``: the chain's PEM and the key's.

    GnuTLS reads the key before the certificates, so a broken key is
    reported first. The key comes back unencrypted (PKCS#8 PEM).
    """
    from qomhost.objects.secret import SecretBytes

    def fail(reason: str) -> ObjectError:
        return ObjectError(f"Cannot load certificate '{cert_path}' & key '{key_path}': {reason}")

    try:
        key_data = _read(key_path)
        cert_data = _read(cert_path)
    except OSError:
        raise fail(E_FILE) from None
    try:
        key = _parse_private_key(key_data, password)
    except ValueError as exc:
        raise fail(str(exc)) from None
    chain: list[x509.Certificate] = []
    try:
        blocks = _pem_blocks(cert_data, _CERT_LABELS)
        if not blocks:
            raise ValueError(E_BASE64)
        for _label, body in blocks:
            chain.append(_parse_der_cert(_pem_der(body)))
    except ValueError:
        raise fail(E_BASE64) from None
    from cryptography.hazmat.primitives import serialization

    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if chain[0].public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise fail(E_KEY_MISMATCH)
    pem = serialization.Encoding.PEM
    chain_pem = b"".join(cert.public_bytes(pem) for cert in chain)
    key_pem = SecretBytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return chain_pem, key_pem


def _parse_private_key(data: bytes, password: str | None) -> Any:
    """A PEM private key, decrypted with ``password`` when it is encrypted."""
    from cryptography.hazmat.primitives import serialization

    blocks = _pem_blocks(data, _KEY_LABELS)
    if not blocks:
        raise ValueError(E_NO_DATA)
    label, body = blocks[0]
    pem = b"-----BEGIN " + label + b"-----" + body + b"-----END " + label + b"-----\n"
    encrypted = label == b"ENCRYPTED PRIVATE KEY" or b"ENCRYPTED" in body.split(b"\n\n", 1)[0]
    secret = password.encode("utf-8") if password is not None and encrypted else None
    if encrypted and secret is None:
        raise ValueError(E_DECRYPT)
    try:
        return serialization.load_pem_private_key(pem, secret)
    except (TypeError, ValueError):
        raise ValueError(E_DECRYPT if encrypted else E_NO_DATA) from None
    except Exception:  # an unsupported key type
        raise ValueError(E_NO_DATA) from None


def _load_crl(path: str) -> bytes:
    """``gnutls_certificate_set_x509_crl_file``: the CRLs, re-encoded as PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        data = _read(path)
    except OSError:
        raise ObjectError(f"Cannot load CRL '{path}': {E_FILE}") from None
    out = b""
    try:
        blocks = _pem_blocks(data, (b"X509 CRL",))
        if not blocks:
            raise ValueError(E_BASE64)
        for _label, body in blocks:
            crl = x509.load_der_x509_crl(_pem_der(body))
            out += crl.public_bytes(serialization.Encoding.PEM)
    except ValueError:
        raise ObjectError(f"Cannot load CRL '{path}': {E_BASE64}") from None
    return out


def _check_dh_der(der: bytes) -> None:
    """PKCS#3 ``DHParameter``: a SEQUENCE of the prime, the generator and an
    optional private value length, all INTEGERs.

    Checked by hand: ``cryptography`` warns about finite-field DH on loading.
    """
    from qomhost.crypto.x509dn import DNError, read_tlv

    try:
        tag, pos, end = read_tlv(der, 0, len(der))
        if tag != 0x30 or end != len(der):
            raise ValueError(E_ASN1_DER)
        count = 0
        while pos < end:
            tag, _start, pos = read_tlv(der, pos, end)
            if tag != 0x02:
                raise ValueError(E_ASN1_DER)
            count += 1
    except DNError:
        raise ValueError(E_ASN1_DER) from None
    if count not in (2, 3):
        raise ValueError(E_ASN1_DER)


def _load_dh_params(path: str) -> bytes:
    """``dh-params.pem``: PKCS#3 ``DH PARAMETERS``, checked and kept as PEM."""
    try:
        data = _read(path)
    except OSError as exc:
        raise ObjectError(str(exc)) from None
    blocks = _pem_blocks(data, (b"DH PARAMETERS",))
    try:
        if not blocks:
            raise ValueError(E_BASE64_HEADER)
        _check_dh_der(_pem_der(blocks[0][1]))
    except ValueError as exc:
        raise ObjectError(f"Unable to load DH parameters from {path}: {exc}") from None
    return b"-----BEGIN DH PARAMETERS-----" + blocks[0][1] + b"-----END DH PARAMETERS-----\n"
