"""qbase64_decode and the GLib base64 routines, checked against libglib itself."""

from __future__ import annotations

import base64
import ctypes
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qomhost.crypto.qbase64 import glib_base64_decode, glib_base64_encode, qbase64_decode
from qomhost.errors import GENERIC_ERROR, QemuError

# -- the GLib oracle -----------------------------------------------------------


class _GLibBase64:
    """``g_base64_decode`` / ``g_base64_encode`` from the system libglib."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        lib.g_base64_decode.restype = ctypes.c_void_p
        lib.g_base64_decode.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)]
        lib.g_base64_encode.restype = ctypes.c_void_p
        lib.g_base64_encode.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        lib.g_free.restype = None
        lib.g_free.argtypes = [ctypes.c_void_p]

    def decode(self, text: bytes) -> bytes:
        out_len = ctypes.c_size_t()
        ptr = self._lib.g_base64_decode(text, ctypes.byref(out_len))
        # An empty result is still a real allocation (never NULL).
        assert ptr is not None
        try:
            return ctypes.string_at(ptr, out_len.value)
        finally:
            self._lib.g_free(ptr)

    def encode(self, data: bytes) -> str:
        ptr = self._lib.g_base64_encode(data, len(data))
        assert ptr is not None
        try:
            return ctypes.string_at(ptr).decode("ascii")
        finally:
            self._lib.g_free(ptr)


def _load_glib() -> _GLibBase64 | None:
    try:
        return _GLibBase64(ctypes.CDLL("libglib-2.0.so.0"))
    except OSError:
        return None


_GLIB = _load_glib()


@pytest.fixture(scope="module")
def glib() -> _GLibBase64:
    if _GLIB is None:
        if os.environ.get("CI") == "true":
            pytest.fail("libglib-2.0.so.0 is required in CI")
        pytest.skip("libglib-2.0.so.0 not available")
    return _GLIB


# -- a literal model of GLib's decoder, for the tests without libglib ---------

_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_RANK = {c: i for i, c in enumerate(_B64_CHARS)}
_RANK[ord("=")] = 0


def _model_decode(text: bytes) -> bytes:
    """GLib's state machine, one input byte at a time (C-string semantics)."""
    out = bytearray()
    count = 0
    acc = 0
    last = [0, 0]
    for c in text.split(b"\0", 1)[0]:
        rank = _RANK.get(c)
        if rank is None:
            continue
        last[1], last[0] = last[0], c
        acc = ((acc << 6) | rank) & 0xFFFFFFFF
        count += 1
        if count == 4:
            out.append((acc >> 16) & 0xFF)
            if last[1] != ord("="):
                out.append((acc >> 8) & 0xFF)
            if last[0] != ord("="):
                out.append(acc & 0xFF)
            count = 0
    return bytes(out)


# -- strategies ----------------------------------------------------------------

# Mostly base64 text, with '=' and '\n' often and a few bytes GLib skips
# (space, CR, tab, punctuation, high bytes). No NUL: the oracle takes C strings.
_TEXT_BYTE = st.one_of(
    st.sampled_from(list(_B64_CHARS)),
    st.sampled_from(list(b"==\n")),
    st.sampled_from(list(b" \r\t-_.!~\x01\x7f\x80\xc3\xff")),
)
_LENIENT_TEXT = st.lists(_TEXT_BYTE, max_size=64).map(bytes)
# Canonical text, including encodings whose last character has non-zero
# unused bits (e.g. "QR==").
_CANONICAL_TEXT = st.builds(
    lambda body, tail: body + tail,
    st.lists(st.sampled_from(list(_B64_CHARS)), max_size=16).map(
        lambda cs: bytes(cs[: len(cs) - len(cs) % 4])
    ),
    st.one_of(
        st.just(b""),
        st.tuples(st.sampled_from(list(_B64_CHARS)), st.sampled_from(list(_B64_CHARS))).map(
            lambda t: bytes(t) + b"=="
        ),
        st.lists(st.sampled_from(list(_B64_CHARS)), min_size=3, max_size=3).map(
            lambda cs: bytes(cs) + b"="
        ),
    ),
)


# -- the reference table ---------------------------------------------------------

TABLE = [
    (b"QUJD", b"ABC"),
    (b"QUJDRA", b"ABC"),
    (b"QUJDRA==", b"ABCD"),
    (b"QU=JD", b"A\t"),
    (b"hunter2", bytes.fromhex("86e9ed")),
    (b"QUJD\nREVG", b"ABCDEF"),
    (b"Q", b""),
    (b"QQ", b""),
    (b"QQ=", b""),
    (b"", b""),
    (b"====", b"\x00"),
    (b"QUJD====QUJD", b"ABC\x00ABC"),
    (b"=QUJD", bytes.fromhex("010509")),
]


@pytest.mark.parametrize(("text", "expected"), TABLE)
def test_reference_table(text: bytes, expected: bytes) -> None:
    assert qbase64_decode(text) == expected
    assert glib_base64_decode(text) == expected
    assert _model_decode(text) == expected


@pytest.mark.parametrize(("text", "expected"), TABLE)
def test_reference_table_against_glib(glib: _GLibBase64, text: bytes, expected: bytes) -> None:
    assert glib.decode(text) == expected


# -- QEMU's wrapper checks -------------------------------------------------------


@pytest.mark.parametrize(
    "text", [b"QUJ D", b"QUJD\r\n", b"\tQUJD", b"QUJD-", b"QUJD_", b"QU\xc3\xa9", b"\xff"]
)
def test_invalid_characters(text: bytes) -> None:
    with pytest.raises(QemuError) as info:
        qbase64_decode(text)
    assert info.value.desc == "Base64 data contains invalid characters"
    assert info.value.error_class == GENERIC_ERROR
    assert str(info.value) == "Base64 data contains invalid characters"


@pytest.mark.parametrize("text", [b"\0", b"QUJD\0", b"QU\0JD", b"Q \0", b"\0 "])
def test_embedded_nul_checked_first(text: bytes) -> None:
    with pytest.raises(QemuError) as info:
        qbase64_decode(text)
    assert info.value.desc == "Base64 data contains embedded NUL characters"
    assert info.value.error_class == GENERIC_ERROR


def test_newlines_allowed() -> None:
    assert qbase64_decode(b"\nQU\nJD\n\n") == b"ABC"
    assert qbase64_decode(b"\n") == b""


def test_glib_decode_stops_at_nul() -> None:
    assert glib_base64_decode(b"QUJD\0REVG") == b"ABC"
    assert glib_base64_decode(b"\0QUJD") == b""


@given(_LENIENT_TEXT)
def test_qbase64_accepts_exactly_qemus_set(text: bytes) -> None:
    allowed = set(_B64_CHARS + b"=\n")
    if all(c in allowed for c in text):
        assert qbase64_decode(text) == _model_decode(text)
    else:
        with pytest.raises(QemuError, match=r"^Base64 data contains invalid characters$"):
            qbase64_decode(text)


# -- both code paths agree with the literal model --------------------------------


@given(_LENIENT_TEXT)
def test_lenient_path_matches_model(text: bytes) -> None:
    assert glib_base64_decode(text) == _model_decode(text)


@given(_CANONICAL_TEXT)
def test_canonical_path_matches_model(text: bytes) -> None:
    assert glib_base64_decode(text) == _model_decode(text)


@given(st.binary(max_size=64))
def test_round_trip(data: bytes) -> None:
    text = glib_base64_encode(data)
    assert text == base64.b64encode(data).decode("ascii")
    assert qbase64_decode(text.encode("ascii")) == data


def test_large_wrapped_input() -> None:
    data = bytes(range(256)) * 40
    wrapped = base64.encodebytes(data)  # 76-column lines, trailing newline
    assert qbase64_decode(wrapped) == data
    assert glib_base64_decode(wrapped) == _model_decode(wrapped)


# -- against the real libglib ------------------------------------------------------


@settings(max_examples=500)
@given(_LENIENT_TEXT)
def test_decode_matches_glib(glib: _GLibBase64, text: bytes) -> None:
    assert glib_base64_decode(text) == glib.decode(text)


@given(_CANONICAL_TEXT)
def test_canonical_decode_matches_glib(glib: _GLibBase64, text: bytes) -> None:
    assert glib_base64_decode(text) == glib.decode(text)


@given(st.binary(max_size=80))
def test_encode_matches_glib(glib: _GLibBase64, data: bytes) -> None:
    assert glib_base64_encode(data) == glib.encode(data)
