"""QEMU's ``qbase64_decode`` and the GLib base64 routines behind it.

QEMU 7.2 decodes ``format=base64`` secrets (and the ``iv`` of an encrypted
secret) with ``qbase64_decode``: a thin wrapper that rejects NUL bytes and
characters outside ``A-Z a-z 0-9 + / = \\n``, then hands the text to GLib's
``g_base64_decode``. GLib's decoder never fails, and it is far more lenient
than :mod:`base64`:

* bytes that are not base64 sextets (``\\n`` here) are skipped;
* ``=`` is a zero sextet wherever it appears; it only suppresses output bytes
  when it is the third or fourth character of a group of four;
* a trailing group of one to three sextets is dropped silently.

So ``QUJDRA`` decodes to ``ABC``, ``QU=JD`` to ``41 09`` and ``====`` to a
single zero byte, exactly as QEMU does.

Public functions:

* :func:`qbase64_decode` -- the QEMU wrapper, raising :class:`QemuError`;
* :func:`glib_base64_decode` -- ``g_base64_decode`` alone, no checks;
* :func:`glib_base64_encode` -- ``g_base64_encode`` (standard, padded).
"""

from __future__ import annotations

import binascii

from qomhost.errors import QemuError

__all__ = ["glib_base64_decode", "glib_base64_encode", "qbase64_decode"]

# The 64 characters that carry a sextet. '=' also carries one (the value 0)
# in GLib's decoder, but it is kept apart because it changes the output.
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

# The set QEMU's wrapper accepts (strspn over this string).
_QEMU_VALID = _ALPHABET + b"=\n"

# Every byte value GLib skips: deleting these with bytes.translate leaves
# exactly the sextet-bearing characters, in order.
_GLIB_SKIPPED = bytes(sorted(set(range(256)) - set(_ALPHABET + b"=")))

_EMBEDDED_NUL = "Base64 data contains embedded NUL characters"
_INVALID_CHARS = "Base64 data contains invalid characters"


def qbase64_decode(data: bytes) -> bytes:
    """Decode ``data`` the way QEMU 7.2's ``qbase64_decode`` does.

    This is the call with an explicit length (as for ``data=`` and ``file=``
    input), so the checks run in QEMU's order: first for NUL bytes, then for
    characters outside ``A-Z a-z 0-9 + / = \\n``. The text is then decoded by
    :func:`glib_base64_decode`, which never fails.

    :raises QemuError: ``Base64 data contains embedded NUL characters`` or
        ``Base64 data contains invalid characters`` (class GenericError).
    """
    if b"\0" in data:
        raise QemuError(_EMBEDDED_NUL)
    if data.translate(None, _QEMU_VALID):
        raise QemuError(_INVALID_CHARS)
    return glib_base64_decode(data)


def glib_base64_decode(data: bytes) -> bytes:
    """Decode ``data`` exactly as GLib 2.74's ``g_base64_decode`` does.

    No input is rejected. ``g_base64_decode`` takes a C string, so decoding
    stops at the first NUL byte, as it does in C.
    """
    nul = data.find(b"\0")
    if nul >= 0:
        data = data[:nul]
    if _is_canonical(data):
        # Canonical text decodes identically under both decoders; a GLib
        # group never emits bits past its padding, and neither does binascii.
        return binascii.a2b_base64(data, strict_mode=True)
    return _decode_lenient(data)


def glib_base64_encode(data: bytes) -> str:
    """Encode ``data`` as ``g_base64_encode`` does: standard alphabet, padded, one line."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _is_canonical(data: bytes) -> bool:
    """Whether ``data`` is plain padded base64 with no skipped bytes.

    That is: a length that is a multiple of four, only alphabet characters,
    and ``=`` only as one or two bytes of final padding.
    """
    if len(data) % 4:
        return False
    body = data.rstrip(b"=")
    if len(data) - len(body) > 2:
        return False
    return not body.translate(None, _ALPHABET)


def _decode_lenient(data: bytes) -> bytes:
    """GLib's decoding for any input, in bulk rather than byte by byte.

    GLib's state machine only looks at sextet-bearing characters, emits one
    group per four of them, and drops a trailing partial group. Within a
    group, '=' is the sextet 0; a '=' in third place suppresses the group's
    second byte and a '=' in fourth place suppresses its third byte. So: keep
    the sextet characters, cut to whole groups, decode with '=' read as 'A'
    (also 0), then delete the suppressed bytes.
    """
    sextets = data.translate(None, _GLIB_SKIPPED)
    sextets = sextets[: len(sextets) - len(sextets) % 4]
    decoded = binascii.a2b_base64(sextets.replace(b"=", b"A"))
    if b"=" not in sextets:
        return decoded
    # '=' positions are found in increasing order, so the byte indices to
    # drop come out sorted and distinct; copy the runs between them.
    out = bytearray()
    start = 0
    pos = sextets.find(b"=")
    while pos >= 0:
        place = pos % 4
        if place >= 2:
            # Third character -> second byte of the group; fourth -> third.
            index = pos // 4 * 3 + place - 1
            out += decoded[start:index]
            start = index + 1
        pos = sextets.find(b"=", pos + 1)
    out += decoded[start:]
    return bytes(out)
