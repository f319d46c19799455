"""X.509 distinguished names written the way QEMU's TLS code sees them.

QEMU asks GnuTLS for a client certificate's subject with
``gnutls_x509_crt_get_dn()`` and hands that string to the authorization
object named by ``tls-authz``. An ``authz-simple`` identity or an
``authz-list`` rule must therefore match GnuTLS's spelling byte for byte,
which is neither OpenSSL's (``openssl x509 -subject`` writes ``CN = fred``)
nor RFC 4514's (which reverses the order). This module reproduces GnuTLS
3.7's spelling from the certificate's DER, with no third-party code:

* RDNs in the certificate's own order, joined with ``,``; the attributes of
  a multi-valued RDN in their encoded order, joined with ``+``::

      -subj "/C=GB/L=London/O=Example Org/CN=fred"  ->  C=GB,L=London,O=Example Org,CN=fred

* attribute names from GnuTLS's table (``C``, ``ST``, ``L``, ``O``, ``OU``,
  ``CN``, ``EMAIL``, ``DC``, ``UID``, ``serialNumber``, ``givenName``, ...);
  any other attribute is its dotted OID;
* values escaped as RFC 4514 asks: ``, + " \\ < > ;`` anywhere, ``#`` or a
  space at the start, a space at the end (``CN=a\\,b``);
* a value GnuTLS cannot print as text (an unknown attribute, a string type
  the attribute does not allow, a string containing NUL) is ``#`` and the hex
  of its whole DER encoding (``1.2.3.4=#0c03666f6f``); a BMPString is
  converted to UTF-8, and a UniversalString or a TeletexString with bytes
  other than printable ASCII becomes an escaped ``\\#`` and the hex of its contents, as GnuTLS
  writes them.

UTF8String and PrintableString bytes are passed through unchecked, as GnuTLS
does; bytes that are not UTF-8 come back as surrogate escapes, so they compare
equal to the same bytes given on the command line.

::

    subject_dn(cert_der)         # 'C=GB,L=London,O=Example Org,CN=fred'
    name_dn(name_der)            # the same for a bare Name
"""

from __future__ import annotations

import itertools

__all__ = ["DNError", "name_dn", "read_tlv", "subject_dn"]

#: GnuTLS's error strings for the failures QEMU may report
#: (``Cannot get client distinguished name: <this>``)
DER_ERROR = "ASN1 parser: Error in DER parsing."
VALUE_NOT_VALID = "ASN1 parser: Value is not valid."
NOT_AVAILABLE = "The requested data were not available."

_UTF8, _NUMERIC, _PRINTABLE, _T61 = 0x0C, 0x12, 0x13, 0x14
_IA5, _UNIVERSAL, _BMP, _OCTET = 0x16, 0x1C, 0x1E, 0x04

#: attribute kinds: a DirectoryString CHOICE, or one fixed ASN.1 string type
_DIRECTORY = -1
_CHALLENGE = -2  # pkcs-9 challengePassword: UTF8String or PrintableString

#: GnuTLS 3.7's table of attribute types: OID -> (name or None, kind)
_ATTRIBUTES: dict[str, tuple[str | None, int]] = {
    "1.3.6.1.5.5.7.9.2": ("placeOfBirth", _DIRECTORY),
    "1.3.6.1.5.5.7.9.3": ("gender", _PRINTABLE),
    "1.3.6.1.5.5.7.9.4": ("countryOfCitizenship", _PRINTABLE),
    "1.3.6.1.5.5.7.9.5": ("countryOfResidence", _PRINTABLE),
    "2.5.4.6": ("C", _PRINTABLE),
    "2.5.4.9": ("street", _DIRECTORY),
    "2.5.4.12": ("title", _DIRECTORY),
    "2.5.4.10": ("O", _DIRECTORY),
    "2.5.4.11": ("OU", _DIRECTORY),
    "2.5.4.3": ("CN", _DIRECTORY),
    "2.5.4.7": ("L", _DIRECTORY),
    "2.5.4.8": ("ST", _DIRECTORY),
    "2.5.4.13": ("description", _DIRECTORY),
    "2.5.4.5": ("serialNumber", _PRINTABLE),
    "2.5.4.20": ("telephoneNumber", _PRINTABLE),
    "2.5.4.4": ("surName", _DIRECTORY),
    "2.5.4.43": ("initials", _DIRECTORY),
    "2.5.4.44": ("generationQualifier", _DIRECTORY),
    "2.5.4.42": ("givenName", _DIRECTORY),
    "2.5.4.65": ("pseudonym", _DIRECTORY),
    "2.5.4.46": ("dnQualifier", _PRINTABLE),
    "2.5.4.17": ("postalCode", _DIRECTORY),
    "2.5.4.41": ("name", _DIRECTORY),
    "2.5.4.15": ("businessCategory", _DIRECTORY),
    "0.9.2342.19200300.100.1.25": ("DC", _IA5),
    "0.9.2342.19200300.100.1.1": ("UID", _DIRECTORY),
    "1.2.840.113556.1.4.656": ("userPrincipalName", _DIRECTORY),
    "1.3.6.1.4.1.311.60.2.1.1": ("jurisdictionOfIncorporationLocalityName", _DIRECTORY),
    "1.3.6.1.4.1.311.60.2.1.2": ("jurisdictionOfIncorporationStateOrProvinceName", _DIRECTORY),
    "1.3.6.1.4.1.311.60.2.1.3": ("jurisdictionOfIncorporationCountryName", _PRINTABLE),
    "1.2.840.113549.1.9.1": ("EMAIL", _IA5),
    "1.2.840.113549.1.9.4": (None, _OCTET),
    "1.2.840.113549.1.9.7": (None, _CHALLENGE),
    "1.2.840.113549.1.9.20": (None, _BMP),
    "1.2.840.113549.1.9.21": (None, _OCTET),
    "1.3.6.1.5.5.7.8.5": ("XmppAddr", _UTF8),
    "1.2.643.3.131.1.1": ("INN", _NUMERIC),
    "1.2.643.100.1": ("OGRN", _NUMERIC),
    "1.2.643.100.3": ("SNILS", _NUMERIC),
    "1.2.643.100.5": ("OGRNIP", _NUMERIC),
}

_ESCAPED = frozenset(b',+"\\<>;')


class DNError(ValueError):
    """GnuTLS could not write the name; the message is GnuTLS's error string."""


def read_tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Read one DER element at ``pos``: ``(tag, content_start, content_end)``.

    Raises :class:`DNError` when the element does not fit in ``data[pos:end]``.
    """
    if pos + 2 > end:
        raise DNError(DER_ERROR)
    tag = data[pos]
    pos += 1
    if tag & 0x1F == 0x1F:  # high tag number: skip its continuation bytes
        while pos < end and data[pos] & 0x80:
            pos += 1
        pos += 1
        if pos >= end:
            raise DNError(DER_ERROR)
    length = data[pos]
    pos += 1
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise DNError(DER_ERROR)  # indefinite lengths are not DER
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise DNError(DER_ERROR)
    return tag, pos, pos + length


def _oid(content: bytes) -> str:
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs or content[-1] & 0x80:
        raise DNError(DER_ERROR)
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:])


def _escape(text: bytes) -> bytes:
    """GnuTLS's ``str_escape``: RFC 4514 escaping, byte by byte."""
    out = bytearray()
    last = len(text) - 1
    for i, byte in enumerate(text):
        if (
            byte in _ESCAPED
            or (i == 0 and byte in (0x23, 0x20))  # '#' or ' ' first
            or (i == last and byte == 0x20)
        ):
            out.append(0x5C)
        out.append(byte)
    return bytes(out)


def _ucs2(content: bytes) -> bytes | None:
    """A BMPString as UTF-8, or ``None`` when it holds a broken surrogate.

    As GnuTLS does: two trailing zero bytes (a terminating NUL) are dropped
    from a string longer than two bytes, then whole 16-bit units are
    converted and an odd last byte is ignored.
    """
    if len(content) > 2 and content[-2:] == b"\0\0":
        content = content[:-2]
    try:
        return content[: len(content) & ~1].decode("utf-16-be").encode("utf-8")
    except UnicodeDecodeError:
        return None


def _value(oid: str, tag: int, content: bytes, whole: bytes) -> bytes:
    """One attribute value as GnuTLS writes it (escaped, or ``#``-hex)."""
    raw_hex = b"#" + whole.hex().encode()
    entry = _ATTRIBUTES.get(oid)
    if entry is None:
        return raw_hex
    kind = entry[1]
    text: bytes | None
    if kind == _DIRECTORY:
        if not content:
            raise DNError(VALUE_NOT_VALID)
        if tag in (_UTF8, _PRINTABLE):
            text = content
        elif tag == _T61:
            # GnuTLS prints a TeletexString as text only when every byte is
            # printable ASCII; anything else is shown as hex.
            printable = all(0x20 <= byte <= 0x7E for byte in content)
            text = content if printable else b"#" + content.hex().encode()
        elif tag == _BMP:
            text = _ucs2(content)
            if text is None:
                text = b"#" + content.hex().encode()
        elif tag == _UNIVERSAL:
            text = b"#" + content.hex().encode()
        else:
            return raw_hex
    elif kind == _CHALLENGE:
        if tag not in (_UTF8, _PRINTABLE) or not content:
            return raw_hex
        text = content
    else:
        if tag != kind or not content:
            return raw_hex
        if kind == _BMP:
            text = _ucs2(content)
            if text is None:
                text = b"#" + content.hex().encode()
        elif kind == _OCTET:
            # Not a string to GnuTLS, so no fallback: a NUL fails the whole name.
            if 0 in content:
                raise DNError(DER_ERROR)
            text = content
        else:
            text = content
    if 0 in text:
        return raw_hex
    return _escape(text)


def _name(data: bytes, start: int, end: int) -> str:
    rdns: list[bytes] = []
    pos = start
    while pos < end:
        tag, set_start, set_end = read_tlv(data, pos, end)
        if tag != 0x31:
            raise DNError(DER_ERROR)
        avas: list[bytes] = []
        apos = set_start
        while apos < set_end:
            tag, seq_start, seq_end = read_tlv(data, apos, set_end)
            if tag != 0x30:
                raise DNError(DER_ERROR)
            tag, oid_start, oid_end = read_tlv(data, seq_start, seq_end)
            if tag != 0x06:
                raise DNError(DER_ERROR)
            oid = _oid(data[oid_start:oid_end])
            value_tag, value_start, value_end = read_tlv(data, oid_end, seq_end)
            if value_end != seq_end:
                raise DNError(DER_ERROR)
            entry = _ATTRIBUTES.get(oid)
            label = entry[0] if entry is not None and entry[0] is not None else oid
            value = _value(oid, value_tag, data[value_start:value_end], data[oid_end:value_end])
            avas.append(label.encode() + b"=" + value)
            apos = seq_end
        rdns.append(b"+".join(avas))
        pos = set_end
    if not rdns:
        raise DNError(NOT_AVAILABLE)
    # GnuTLS writes the ',' after an RDN that had attributes, when another
    # RDN follows: an empty SET adds nothing, and a trailing one leaves the ','.
    out = bytearray(rdns[0])
    for previous, rdn in itertools.pairwise(rdns):
        if previous:
            out += b","
        out += rdn
    return out.decode("utf-8", "surrogateescape")


def name_dn(der: bytes) -> str:
    """The DN string GnuTLS writes for a DER-encoded ``Name``."""
    tag, start, end = read_tlv(der, 0, len(der))
    if tag != 0x30 or end != len(der):
        raise DNError(DER_ERROR)
    return _name(der, start, end)


def subject_dn(cert_der: bytes) -> str:
    """The subject DN of a DER certificate, as ``gnutls_x509_crt_get_dn()`` writes it."""
    tag, start, end = read_tlv(cert_der, 0, len(cert_der))
    if tag != 0x30:
        raise DNError(DER_ERROR)
    tag, pos, tbs_end = read_tlv(cert_der, start, end)
    if tag != 0x30:
        raise DNError(DER_ERROR)
    # tbsCertificate: [0] version (optional), serial, signature, issuer, validity, subject
    tag, _s, after = read_tlv(cert_der, pos, tbs_end)
    if tag == 0xA0:
        pos = after
    for _field in ("serialNumber", "signature", "issuer", "validity"):
        _tag, _s, pos = read_tlv(cert_der, pos, tbs_end)
    tag, subject_start, subject_end = read_tlv(cert_der, pos, tbs_end)
    if tag != 0x30:
        raise DNError(DER_ERROR)
    return _name(cert_der, subject_start, subject_end)
