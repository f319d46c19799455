"""Distinguished names as GnuTLS writes them (``qomhost.crypto.x509dn``).

QEMU hands ``tls-authz`` the string ``gnutls_x509_crt_get_dn()`` returns, so
the reference is GnuTLS itself: where ``libgnutls.so.30`` is installed (QEMU
depends on it), generated names are compared with what it writes, through
ctypes. Without it those comparisons are skipped (failed under ``CI=true``);
the fixed examples below were taken from it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qomhost.crypto.x509dn import _ATTRIBUTES, DNError, name_dn, subject_dn

# --------------------------------------------------------------------------- DER building


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def oid(dotted: str) -> bytes:
    arcs = [int(part) for part in dotted.split(".")]
    out = b""
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, out)


def ava(dotted: str, tag: int, value: bytes) -> bytes:
    return tlv(0x30, oid(dotted) + tlv(tag, value))


def name(*rdns: list[bytes]) -> bytes:
    return tlv(0x30, b"".join(tlv(0x31, b"".join(avas)) for avas in rdns))


UTF8, NUMERIC, PRINTABLE, T61, IA5, UNIVERSAL, BMP, OCTET = (
    0x0C, 0x12, 0x13, 0x14, 0x16, 0x1C, 0x1E, 0x04,
)  # fmt: skip
CN, ORG, C, EMAIL = "2.5.4.3", "2.5.4.10", "2.5.4.6", "1.2.840.113549.1.9.1"

# --------------------------------------------------------------------------- fixed examples

EXAMPLES = [
    # the certificate's order, names from GnuTLS's table
    ([[ava(C, PRINTABLE, b"GB")], [ava(ORG, UTF8, b"Example Org")], [ava(CN, UTF8, b"fred")]],
     "C=GB,O=Example Org,CN=fred"),
    # RFC 4514 escapes; '#' and ' ' only at the start, ' ' at the end
    ([[ava(CN, UTF8, b'a,b+c"d\\e<f>g;h')]], 'CN=a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h'),
    ([[ava(CN, UTF8, b"#x# ")]], "CN=\\#x#\\ "),
    ([[ava(CN, UTF8, b"   ")]], "CN=\\  \\ "),
    ([[ava(CN, UTF8, b"x=y")]], "CN=x=y"),
    # multi-valued RDN, in encoded order
    ([[ava("0.9.2342.19200300.100.1.1", UTF8, b"u"), ava(CN, UTF8, b"c")]], "UID=u+CN=c"),
    # UTF-8 passes through; BMPString becomes UTF-8
    ([[ava(CN, UTF8, "café".encode())]], "CN=café"),
    ([[ava(CN, BMP, "é€".encode("utf-16-be"))]], "CN=é€"),
    # string types a DirectoryString does not take: the whole value in hex
    ([[ava(CN, IA5, b"abc")]], "CN=#1603616263"),
    # TeletexString with a byte that is not printable ASCII, UniversalString
    ([[ava(CN, T61, b"a\xe9")]], "CN=\\#61e9"),
    ([[ava(CN, UNIVERSAL, b"\0\0\0a")]], "CN=\\#00000061"),
    # fixed types: e-mail is IA5String, C is PrintableString
    ([[ava(EMAIL, IA5, b"joe@example.com")]], "EMAIL=joe@example.com"),
    ([[ava(C, UTF8, b"GB")]], "C=#0c024742"),
    # unknown attributes: the dotted OID and the value in hex
    ([[ava("1.2.3.4", UTF8, b"foo")]], "1.2.3.4=#0c03666f6f"),
    # a NUL makes a string unprintable
    ([[ava(CN, UTF8, b"a\0b")]], "CN=#0c03610062"),
    # empty RDNs: nothing, but the ',' after a non-empty one stays
    ([[ava(CN, UTF8, b"x")], []], "CN=x,"),
    ([[], [ava(CN, UTF8, b"x")]], "CN=x"),
]  # fmt: skip


@pytest.mark.parametrize(("rdns", "expected"), EXAMPLES)
def test_examples(rdns: list[list[bytes]], expected: str) -> None:
    assert name_dn(name(*rdns)) == expected


def test_bytes_that_are_not_utf8_come_back_as_surrogate_escapes() -> None:
    dn = name_dn(name([ava(CN, UTF8, b"a\xff")]))
    assert dn == "CN=a\udcff"
    assert dn.encode("utf-8", "surrogateescape") == b"CN=a\xff"


@pytest.mark.parametrize(
    ("der", "message"),
    [
        (name(), "The requested data were not available."),
        (name([ava(CN, UTF8, b"")]), "ASN1 parser: Value is not valid."),
        (name([ava("1.2.840.113549.1.9.21", OCTET, b"a\0")]), "ASN1 parser: Error in DER parsing."),
        (b"\x30\x05\x31\x03", "ASN1 parser: Error in DER parsing."),
    ],
)
def test_names_gnutls_cannot_write(der: bytes, message: str) -> None:
    with pytest.raises(DNError) as info:
        name_dn(der)
    assert str(info.value) == message


# --------------------------------------------------------------------------- against GnuTLS


class _Datum(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_uint)]


def _gnutls() -> ctypes.CDLL:
    path = ctypes.util.find_library("gnutls") or "libgnutls.so.30"
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        reason = "libgnutls is not installed (QEMU's TLS library, the reference for DNs)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true, so this is an error)", pytrace=False)
        pytest.skip(reason)
    lib.gnutls_strerror.restype = ctypes.c_char_p
    return lib


@pytest.fixture(scope="module")
def gnutls() -> ctypes.CDLL:
    return _gnutls()


def _datum(buf: ctypes.Array[ctypes.c_char], size: int) -> _Datum:
    return _Datum(ctypes.cast(buf, ctypes.c_void_p), size)


def gnutls_name_dn(lib: ctypes.CDLL, der: bytes) -> str:
    """``gnutls_x509_dn_get_str2(..., GNUTLS_X509_DN_FLAG_COMPAT)``: what
    ``gnutls_x509_crt_get_dn`` writes for a certificate's subject."""
    dn = ctypes.c_void_p()
    assert lib.gnutls_x509_dn_init(ctypes.byref(dn)) == 0
    try:
        buf = ctypes.create_string_buffer(der, len(der))
        ret = lib.gnutls_x509_dn_import(dn, ctypes.byref(_datum(buf, len(der))))
        if ret < 0:
            return "IMPORT " + lib.gnutls_strerror(ret).decode()
        out = _Datum()
        ret = lib.gnutls_x509_dn_get_str2(dn, ctypes.byref(out), 1)
        if ret < 0:
            return "ERROR " + lib.gnutls_strerror(ret).decode()
        text = ctypes.string_at(out.data, out.size)
        return text.decode("utf-8", "surrogateescape")
    finally:
        lib.gnutls_x509_dn_deinit(dn)


def gnutls_cert_dn(lib: ctypes.CDLL, der: bytes) -> str:
    """``gnutls_x509_crt_get_dn``, exactly as QEMU calls it."""
    crt = ctypes.c_void_p()
    assert lib.gnutls_x509_crt_init(ctypes.byref(crt)) == 0
    try:
        buf = ctypes.create_string_buffer(der, len(der))
        assert lib.gnutls_x509_crt_import(crt, ctypes.byref(_datum(buf, len(der))), 0) == 0
        size = ctypes.c_size_t(0)
        lib.gnutls_x509_crt_get_dn(crt, None, ctypes.byref(size))
        out = ctypes.create_string_buffer(size.value)
        assert lib.gnutls_x509_crt_get_dn(crt, out, ctypes.byref(size)) == 0
        return out.raw[: size.value].decode("utf-8", "surrogateescape")
    finally:
        lib.gnutls_x509_crt_deinit(crt)


def ours(der: bytes) -> str:
    try:
        return name_dn(der)
    except DNError as exc:
        return f"ERROR {exc}"


OIDS = [*_ATTRIBUTES, "1.2.3.4", "2.5.4.16", "2.5.4.97", "2.999.5"]
TAGS = [UTF8, NUMERIC, PRINTABLE, T61, IA5, UNIVERSAL, BMP, OCTET, 0x1A, 0x02, 0x05, 0x30]
SPECIAL = st.sampled_from(
    [b"", b" ", b"#", b"a,b", b" a ", b"\0", b"\xd8\x00", b"\x00a\x00,", b"\x00a\x00\x00"]
)
CONTENT = st.one_of(
    st.binary(max_size=24),
    st.text(max_size=8).map(str.encode),
    st.text(alphabet=' ,+"\\<>;#=a\x00\x01é', max_size=6).map(str.encode),
    SPECIAL,
)
NAMES = st.lists(
    st.lists(st.tuples(st.sampled_from(OIDS), st.sampled_from(TAGS), CONTENT), max_size=3),
    max_size=4,
)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(NAMES)
def test_same_as_gnutls(rdns: list[list[tuple[str, int, bytes]]]) -> None:
    """Any name, any attribute type, any string type and content: GnuTLS's answer."""
    lib = _gnutls()
    der = name(*[[ava(o, tag, value) for o, tag, value in rdn] for rdn in rdns])
    assert ours(der) == gnutls_name_dn(lib, der)


def test_certificates_as_qemu_reads_them(gnutls: ctypes.CDLL) -> None:
    """Whole certificates (as a TLS peer sends them): the subject, not the issuer,
    exactly as ``gnutls_x509_crt_get_dn`` writes it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    subjects = [
        x509.Name.from_rfc4514_string("CN=fred,O=Example Org,L=London,C=GB"),
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme, Inc."),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "R+D"),
                x509.NameAttribute(NameOID.COMMON_NAME, 'Joe "J" <Bloggs>; #1'),
                x509.NameAttribute(NameOID.EMAIL_ADDRESS, "joe@example.com"),
            ]
        ),
        x509.Name(
            [
                x509.RelativeDistinguishedName(
                    [
                        x509.NameAttribute(NameOID.USER_ID, "m1"),
                        x509.NameAttribute(NameOID.COMMON_NAME, "multi"),
                    ]
                )
            ]
        ),
    ]
    now = datetime.datetime.now(datetime.UTC)
    for subject in subjects:
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        der = cert.public_bytes(serialization.Encoding.DER)
        assert subject_dn(der) == gnutls_cert_dn(gnutls, der)
