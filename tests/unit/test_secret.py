"""The ``secret`` object through ``Host().add_object``: loading, base64,
AES-256-CBC decryption with a key secret, every error text, the padding
quirks, the properties afterwards, and that payloads never show.

Error texts and results are QEMU 7.2's (``object-add`` on
``qemu-system-x86_64``; see ``reference/qemu-semantics.md`` §2.3-2.5).
Ciphertexts are made here with ``cryptography`` directly, without
qomhost's own AES helper.
"""

from __future__ import annotations

import base64
import logging
import traceback
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from qomhost import Host
from qomhost.errors import GENERIC_ERROR, QemuError
from qomhost.objects.secret import SecretBytes
from qomhost.qom.object import Container
from qomhost.testing import QmpTestClient

KEY = bytes(range(1, 33))
KEY_B64 = base64.b64encode(KEY).decode()
IV = bytes(range(100, 116))
IV_B64 = base64.b64encode(IV).decode()


def encrypt_blocks(plaintext: bytes, key: bytes = KEY, iv: bytes = IV) -> bytes:
    """AES-256-CBC over whole blocks, no padding added."""
    assert len(plaintext) % 16 == 0
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(plaintext) + encryptor.finalize()


def pkcs7(data: bytes) -> bytes:
    pad = 16 - len(data) % 16
    return data + bytes([pad]) * pad


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def host() -> Host:
    h = Host()
    h.create_machine()
    h.add_object("secret", "k", data=KEY_B64, format="base64")
    h.add_object("secret", "k31", data=b64(KEY[:31]), format="base64")
    h.objects_root().add_child("c", Container("container"))
    return h


def load(host: Host, **props: object) -> bytes:
    """Create secret ``s`` and return its payload."""
    host.add_object("secret", "s", **props)
    return host.secret_bytes("s")


def failure(host: Host, **props: object) -> str:
    """Create secret ``s``, which must fail and leave nothing; return the message."""
    with pytest.raises(QemuError) as info:
        host.add_object("secret", "s", **props)
    assert info.value.error_class == GENERIC_ERROR
    assert host.lookup_object("s") is None
    return info.value.desc


# --- loading the input ------------------------------------------------------------------


def test_data(host: Host) -> None:
    assert load(host, data="letmein") == b"letmein"


def test_empty_data_is_loaded(host: Host) -> None:
    assert load(host, data="") == b""
    assert host.lookup_object("s").get_property("loaded") is True  # type: ignore[union-attr]


def test_data_is_utf8_and_nul_is_c0_80(host: Host) -> None:
    assert load(host, data="caf\u00e9 \U0001f600") == "caf\u00e9 \U0001f600".encode()
    host.del_object("s")
    # JSON's \u0000 is stored as C0 80 (modified UTF-8), as QEMU does.
    assert load(host, data="a\x00b") == b"a\xc0\x80b"
    qmp = QmpTestClient(host, negotiate=True)
    assert qmp.execute("qom-get", path="/objects/s", property="data") == {"return": "a\x00b"}


def test_file(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "secret.bin"
    path.write_bytes(b"\x00\xffbinary\nsecret\x00")
    assert load(host, file=str(path)) == b"\x00\xffbinary\nsecret\x00"


def test_empty_file(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert load(host, file=str(path)) == b""


def test_file_and_data_are_exclusive(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"x")
    assert failure(host, data="x", file=str(path)) == "'file' and 'data' are mutually exclusive"
    # checked before the file is even read
    assert failure(host, data="x", file="/nonexistent/x") == (
        "'file' and 'data' are mutually exclusive"
    )


def test_unreadable_file(host: Host, tmp_path: Path) -> None:
    assert failure(host, file="/nonexistent/x") == (
        "Unable to read /nonexistent/x: Failed to open file \u201c/nonexistent/x\u201d: "
        "No such file or directory"
    )
    assert failure(host, file=str(tmp_path)) == (
        f"Unable to read {tmp_path}: Error reading file \u201c{tmp_path}\u201d: Is a directory"
    )


def test_neither_file_nor_data(host: Host) -> None:
    assert failure(host) == "Either 'file' or 'data' must be provided"
    assert failure(host, format="base64", iv="x") == "Either 'file' or 'data' must be provided"


# --- base64 without a key ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("QUJD", b"ABC"),
        ("QUJDRA", b"ABC"),
        ("QUJDRA==", b"ABCD"),
        ("QU=JD", b"A\t"),
        ("hunter2", b"\x86\xe9\xed"),
        ("QUJD\nREVG", b"ABCDEF"),
        ("Q", b""),
        ("QQ=", b""),
        ("", b""),
        ("====", b"\x00"),
        ("QUJD====QUJD", b"ABC\x00ABC"),
        ("=QUJD", b"\x01\x05\x09"),
    ],
)
def test_base64_is_glibs_lenient_decoder(host: Host, text: str, expected: bytes) -> None:
    assert load(host, data=text, format="base64") == expected


@pytest.mark.parametrize("text", ["QUJ D", "QUJD\r\n", "QUJD\t", "QUJD!", "caf\u00e9"])
def test_base64_invalid_characters(host: Host, text: str) -> None:
    assert failure(host, data=text, format="base64") == "Base64 data contains invalid characters"


def test_base64_nul_in_data_is_an_invalid_character(host: Host) -> None:
    # data's NUL became C0 80, which is outside the alphabet
    assert failure(host, data="QU\x00JD", format="base64") == (
        "Base64 data contains invalid characters"
    )


def test_base64_file_with_nul(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "nul"
    path.write_bytes(b"QUJD\x00QUJD")
    assert failure(host, file=str(path), format="base64") == (
        "Base64 data contains embedded NUL characters"
    )
    path.write_bytes(b"QUJD\nQUJD\n")
    assert load(host, file=str(path), format="base64") == b"ABCABC"


def test_iv_is_ignored_without_keyid(host: Host) -> None:
    assert load(host, data="plain", iv="garbage!") == b"plain"


# --- AES-256-CBC with a key secret ---------------------------------------------------------


def test_decrypt_base64_ciphertext(host: Host) -> None:
    ciphertext = encrypt_blocks(pkcs7(b"letmein"))
    assert load(host, data=b64(ciphertext), format="base64", keyid="k", iv=IV_B64) == b"letmein"


def test_plaintext_is_not_base64_decoded_again(host: Host) -> None:
    ciphertext = encrypt_blocks(pkcs7(b"QUJD"))
    assert load(host, data=b64(ciphertext), format="base64", keyid="k", iv=IV_B64) == b"QUJD"


def test_decrypt_raw_ciphertext_from_a_file(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "cipher.bin"
    path.write_bytes(encrypt_blocks(pkcs7(b"from a file")))
    assert load(host, file=str(path), keyid="k", iv=IV_B64) == b"from a file"


def test_key_from_a_file_and_from_a_decrypted_secret(host: Host, tmp_path: Path) -> None:
    key2 = bytes(range(200, 232))
    path = tmp_path / "key"
    path.write_bytes(key2)
    host.add_object("secret", "kf", file=str(path))
    # a key that is itself encrypted with "k": its 32-byte plaintext is the key
    host.add_object(
        "secret", "kd", data=b64(encrypt_blocks(pkcs7(key2))), format="base64", keyid="k", iv=IV_B64
    )
    assert host.secret_bytes("kd") == key2
    ciphertext = b64(encrypt_blocks(pkcs7(b"two levels"), key=key2))
    assert load(host, data=ciphertext, format="base64", keyid="kf", iv=IV_B64) == b"two levels"
    host.del_object("s")
    assert load(host, data=ciphertext, format="base64", keyid="kd", iv=IV_B64) == b"two levels"


def test_key_secret_created_later_is_not_found(host: Host) -> None:
    assert failure(host, data="", keyid="later", iv=IV_B64) == "No secret with id 'later'"


def test_decrypted_payload_is_secret_bytes(host: Host) -> None:
    ciphertext = encrypt_blocks(pkcs7(b"letmein"))
    payload = load(host, data=b64(ciphertext), format="base64", keyid="k", iv=IV_B64)
    assert isinstance(payload, SecretBytes)
    assert "letmein" not in repr(payload)


@pytest.mark.parametrize(
    ("plaintext", "expected"),
    [
        # a count of zero removes nothing
        (b"A" * 15 + b"\x00", b"A" * 15 + b"\x00"),
        # 16 removes the whole block
        (b"\x10" * 16, b""),
        (b"B" * 16 + b"\x10" * 16, b"B" * 16),
        # the padding bytes themselves are never checked
        (b"B" * 16 + b"x" * 14 + b"\x09\x02", b"B" * 16 + b"x" * 14),
        (b"C" * 15 + b"\x01", b"C" * 15),
        (b"D" * 16 + b"\xff" * 15 + b"\x10", b"D" * 16),
    ],
)
def test_padding_quirks(host: Host, plaintext: bytes, expected: bytes) -> None:
    data = b64(encrypt_blocks(plaintext))
    assert load(host, data=data, format="base64", keyid="k", iv=IV_B64) == expected


def test_empty_ciphertext_is_an_empty_secret(host: Host) -> None:
    assert load(host, data="", format="base64", keyid="k", iv=IV_B64) == b""
    host.del_object("s")
    assert load(host, data="", keyid="k", iv=IV_B64) == b""
    host.del_object("s")
    # a partial base64 group decodes to nothing, too
    assert load(host, data="QQ", format="base64", keyid="k", iv=IV_B64) == b""


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"keyid": "nokey"}, "No secret with id 'nokey'"),
        ({"keyid": "c"}, "Object with id 'c' is not a secret"),
        ({"keyid": "s", "iv": IV_B64}, "Secret with id 's' has no data"),
        ({"keyid": "k31", "iv": IV_B64}, "Key should be 32 bytes in length"),
        ({"keyid": "k"}, "IV is required to decrypt secret"),
        ({"keyid": "k", "iv": "AAAA"}, "IV should be 16 bytes in length not 3"),
        ({"keyid": "k", "iv": ""}, "IV should be 16 bytes in length not 0"),
        ({"keyid": "k", "iv": b64(bytes(17))}, "IV should be 16 bytes in length not 17"),
        ({"keyid": "k", "iv": "!!"}, "Base64 data contains invalid characters"),
        ({"keyid": "k", "iv": IV_B64 + " "}, "Base64 data contains invalid characters"),
        # the order of checks: key before IV before ciphertext
        ({"keyid": "nokey", "iv": "!!", "data": "!!"}, "No secret with id 'nokey'"),
        ({"keyid": "k31", "data": "!!"}, "Key should be 32 bytes in length"),
        ({"keyid": "k", "iv": "AAAA", "data": "!!"}, "IV should be 16 bytes in length not 3"),
        (
            {"keyid": "k", "iv": IV_B64, "data": "QUJ D", "format": "base64"},
            "Base64 data contains invalid characters",
        ),
        (
            {"keyid": "k", "iv": IV_B64, "data": "QUJD", "format": "base64"},
            "Length 3 must be a multiple of block size 16",
        ),
        (
            {"keyid": "k", "iv": IV_B64, "data": "abc"},
            "Length 3 must be a multiple of block size 16",
        ),
        (
            {"keyid": "k", "iv": IV_B64, "data": b64(bytes(17)), "format": "base64"},
            "Length 17 must be a multiple of block size 16",
        ),
        (
            {"keyid": "k", "iv": IV_B64, "data": b64(encrypt_blocks(b"C" * 15 + b"\xa7"))},
            # without format=base64 the base64 text itself is the ciphertext
            "Length 24 must be a multiple of block size 16",
        ),
        (
            {
                "keyid": "k",
                "iv": IV_B64,
                "format": "base64",
                "data": b64(encrypt_blocks(b"C" * 15 + b"\xa7")),
            },
            "Incorrect number of padding bytes (167) found on decrypted data",
        ),
        (
            {
                "keyid": "k",
                "iv": IV_B64,
                "format": "base64",
                "data": b64(encrypt_blocks(b"C" * 15 + b"\x11")),
            },
            "Incorrect number of padding bytes (17) found on decrypted data",
        ),
        (
            {
                "keyid": "k",
                "iv": IV_B64,
                "format": "base64",
                "data": b64(encrypt_blocks(pkcs7(b"x"), key=bytes(32))),
            },
            None,  # a wrong key gives garbage; the message depends on its last byte
        ),
    ],
)
def test_decryption_errors(host: Host, props: dict[str, object], message: str | None) -> None:
    props = {"data": "", **props}
    if message is None:
        ciphertext = base64.b64decode(str(props["data"]))
        wrong = Cipher(algorithms.AES(KEY), modes.CBC(IV)).decryptor().update(ciphertext)
        pad = wrong[-1]
        if pad <= 16:
            assert load(host, **props) == wrong[: len(wrong) - pad]
            return
        message = f"Incorrect number of padding bytes ({pad}) found on decrypted data"
    assert failure(host, **props) == message


# --- properties after creation ---------------------------------------------------------------


def test_qom_get_shows_what_was_given(host: Host) -> None:
    data = b64(encrypt_blocks(pkcs7(b"letmein")))
    host.add_object("secret", "s", data=data, format="base64", keyid="k", iv=IV_B64)
    qmp = QmpTestClient(host, negotiate=True)

    def get(prop: str) -> object:
        reply = qmp.execute("qom-get", path="/objects/s", property=prop)
        assert "return" in reply, reply
        return reply["return"]

    # data is never shown decoded or decrypted
    assert get("data") == data
    assert get("format") == "base64"
    assert get("keyid") == "k"
    assert get("iv") == IV_B64
    assert get("file") == ""
    assert get("loaded") is True
    assert get("type") == "secret"


def test_unset_strings_read_as_empty(host: Host) -> None:
    host.add_object("secret", "s", data="x")
    obj = host.lookup_object("s")
    assert obj is not None
    assert obj.get_property("keyid") == ""
    assert obj.get_property("iv") == ""
    assert obj.get_property("file") == ""
    assert obj.get_property("format") == "raw"


def test_qom_set_changes_the_property_not_the_payload(host: Host) -> None:
    host.add_object("secret", "s", data="QUJD")
    qmp = QmpTestClient(host, negotiate=True)
    for prop, value in [
        ("data", "changed"),
        ("format", "base64"),
        ("keyid", "k"),
        ("iv", "new-iv"),
        ("file", "/nonexistent"),
    ]:
        assert qmp.execute("qom-set", path="/objects/s", property=prop, value=value) == {
            "return": {}
        }
        assert qmp.execute("qom-get", path="/objects/s", property=prop) == {"return": value}
    # complete() is never run again
    assert host.secret_bytes("s") == b"QUJD"


def test_qom_set_errors(host: Host) -> None:
    host.add_object("secret", "s", data="x")
    qmp = QmpTestClient(host, negotiate=True)

    def set_error(prop: str, value: object) -> str:
        reply = qmp.execute("qom-set", path="/objects/s", property=prop, value=value)
        assert reply["error"]["class"] == "GenericError"
        desc = reply["error"]["desc"]
        assert isinstance(desc, str)
        return desc

    assert set_error("loaded", False) == "Property 'secret.loaded' is not writable"
    assert set_error("format", "hex") == "Parameter 'format' does not accept value 'hex'"
    assert set_error("data", None) == "Invalid parameter type for 'data', expected: string"
    assert set_error("data", 1) == "Invalid parameter type for 'data', expected: string"
    assert set_error("type", "x") == "Property 'secret.type' is not writable"
    assert set_error("nope", "x") == "Property 'secret.nope' not found"
    assert host.secret_bytes("s") == b"x"


def test_loaded_cannot_be_given(host: Host) -> None:
    for value in (True, False):
        assert failure(host, data="x", loaded=value) == "Property 'secret.loaded' is not writable"


def test_qapi_errors(host: Host) -> None:
    assert failure(host, data=1) == "Invalid parameter type for 'data', expected: string"
    assert failure(host, data="x", format="hex") == (
        "Parameter 'format' does not accept value 'hex'"
    )
    assert failure(host, data="x", bogus=1) == "Parameter 'bogus' is unexpected"


# --- payloads never show ---------------------------------------------------------------------


def test_secret_bytes_repr_and_str_hide_the_payload() -> None:
    payload = SecretBytes(b"hunter2")
    for text in (repr(payload), str(payload), f"{payload}", f"{payload!r}", repr([payload])):
        assert "hunter2" not in text
        assert "7 bytes" in text
    assert payload == b"hunter2"
    assert bytes(payload) == b"hunter2"


def test_object_repr_hides_the_payload(host: Host) -> None:
    host.add_object("secret", "s", data=b64(b"hunter2"), format="base64")
    obj = host.lookup_object("s")
    assert "hunter2" not in repr(obj)
    assert "aHVudGVyMg" not in repr(obj)
    assert "hunter2" not in repr(host.secret_bytes("s"))


PLAINTEXT = "Tr0ub4dor&3 horse staple"


def _failures(host: Host, tmp_path: Path) -> list[QemuError]:
    """Failed secrets whose plaintext was in hand when they failed."""
    errors: list[QemuError] = []
    # a file with the secret, not valid base64
    path = tmp_path / "bad64"
    path.write_text(PLAINTEXT)
    # a correct key and ciphertext, but a last byte that is no padding count
    unpadded = PLAINTEXT.encode()[:16]
    assert unpadded[-1] > 16
    cases: list[dict[str, object]] = [
        {"file": str(path), "format": "base64"},
        {"data": b64(encrypt_blocks(unpadded)), "format": "base64", "keyid": "k", "iv": IV_B64},
    ]
    del unpadded  # this frame is in the tracebacks; only qomhost's frames are under test
    for props in cases:
        with pytest.raises(QemuError) as info:
            host.add_object("secret", "s", **props)
        errors.append(info.value)
    return errors


def test_traceback_of_a_failed_secret_has_no_plaintext(
    host: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for error in _failures(host, tmp_path):
        text = "".join(traceback.format_exception(error))
        assert PLAINTEXT[:16] not in text
        assert "Tr0ub4dor" not in text
    assert "Tr0ub4dor" not in caplog.text


def test_traceback_with_locals_of_a_failed_secret_has_no_plaintext(
    host: Host, tmp_path: Path
) -> None:
    for error in _failures(host, tmp_path):
        text = "".join(
            traceback.TracebackException.from_exception(error, capture_locals=True).format()
        )
        assert "Tr0ub4dor" not in text


def test_qmp_error_reply_has_no_plaintext(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "bad64"
    path.write_text(PLAINTEXT)
    qmp = QmpTestClient(host, negotiate=True)
    reply = qmp.execute(
        "object-add", {"qom-type": "secret", "id": "s", "file": str(path), "format": "base64"}
    )
    assert reply == {
        "error": {"class": "GenericError", "desc": "Base64 data contains invalid characters"}
    }
    assert b"Tr0ub4dor" not in bytes(qmp.transcript)
