"""``secret``: passwords and keys given inline, in a file, or AES-256-CBC encrypted.

A secret's payload is loaded once, when the object is completed:

1. the input bytes come from ``data`` (a string) or ``file``;
2. with ``keyid`` they are ciphertext (base64 when ``format=base64``),
   decrypted with the 32-byte key held by the secret called ``keyid`` and
   the base64 ``iv``; ``format`` then applies to the ciphertext only;
3. otherwise ``format=base64`` decodes them with QEMU's lenient decoder.

Changing a property afterwards changes what ``qom-get`` shows and nothing
else, as in QEMU. The payload itself is held in a :class:`SecretBytes`,
whose ``repr`` never shows it, and is never logged.

Library use::

    host.add_object("secret", "sec0", data="letmein")
    host.secret_bytes("sec0")   # b'letmein'
"""

from __future__ import annotations

from qomhost.errors import ObjectError, QemuError
from qomhost.gfile import read_file_contents
from qomhost.qapi.schema import BOOL, INT32, STR, EnumKind, Member
from qomhost.qom.object import Object, ObjectProperty, field_property

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar

__all__ = [
    "SECRET_FORMAT",
    "Secret",
    "SecretBytes",
    "SecretCommon",
    "SecretKeyring",
    "lookup_secret",
]

SECRET_FORMAT = EnumKind("QCryptoSecretFormat", ("raw", "base64"))

AES_KEY_LEN = 32
AES_BLOCK = 16


class SecretBytes(bytes):
    """Secret payload bytes that never show themselves in a repr or a traceback."""

    def __repr__(self) -> str:
        return f"<SecretBytes: {len(self)} bytes>"

    __str__ = __repr__


class SecretCommon(Object):
    """``secret_common``: the abstract parent of every secret type."""

    MEMBERS: ClassVar[tuple[Member, ...]] = (
        # 7.2's QAPI schema still lists "loaded"; QOM refuses to set it.
        Member("loaded", BOOL),
        Member("format", SECRET_FORMAT),
        Member("keyid", STR),
        Member("iv", STR),
    )

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.format = "raw"
        self.keyid: str | None = None
        self.iv: str | None = None
        self.rawdata: SecretBytes | None = None
        #: how to find another secret by id (set by the host before complete)
        self.lookup: Callable[[str], Object | None] = lambda _id: None

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        def set_format(obj: Any, value: object) -> None:
            obj.format = value

        return [
            ObjectProperty("loaded", "bool", getter=lambda obj: obj.rawdata is not None),
            ObjectProperty(
                "format",
                SECRET_FORMAT.qom_type,
                getter=lambda obj: obj.format,
                setter=set_format,
                kind=SECRET_FORMAT,
            ),
            field_property("keyid", "keyid", STR),
            field_property("iv", "iv", STR),
        ]

    def load_input(self) -> bytes:
        """The raw input bytes, before decryption or decoding (per subtype)."""
        raise NotImplementedError

    def complete(self) -> None:
        # Every intermediate form of the payload is a SecretBytes, so that
        # not even a traceback printed with its locals can show it.
        data = SecretBytes(self.load_input())
        if self.keyid is not None:
            data = self._decrypt(data)
        elif self.format == "base64":
            from qomhost.crypto.qbase64 import qbase64_decode

            data = SecretBytes(qbase64_decode(data))
        self.rawdata = data

    def _decrypt(self, ciphertext: bytes) -> SecretBytes:
        from qomhost.crypto.qbase64 import qbase64_decode

        assert self.keyid is not None
        key = lookup_secret(self.lookup, self.keyid)
        if len(key) != AES_KEY_LEN:
            raise ObjectError("Key should be 32 bytes in length")
        if self.iv is None:
            raise ObjectError("IV is required to decrypt secret")
        iv = qbase64_decode(_c_string(self.iv))
        if len(iv) != AES_BLOCK:
            raise ObjectError(f"IV should be 16 bytes in length not {len(iv)}")
        if self.format == "base64":
            ciphertext = SecretBytes(qbase64_decode(ciphertext))
        if len(ciphertext) % AES_BLOCK:
            raise ObjectError(
                f"Length {len(ciphertext)} must be a multiple of block size {AES_BLOCK}"
            )
        from qomhost.crypto.aes import aes256_cbc_decrypt

        plaintext = SecretBytes(aes256_cbc_decrypt(key, iv, ciphertext))
        # QEMU's padding check: only the count is checked, never the padding
        # bytes themselves, and a count of zero is accepted. An empty
        # ciphertext has no last byte; it is treated as a count of zero.
        pad = plaintext[-1] if plaintext else 0
        if pad > AES_BLOCK or pad > len(ciphertext):
            raise ObjectError(f"Incorrect number of padding bytes ({pad}) found on decrypted data")
        return SecretBytes(plaintext[: len(plaintext) - pad])


def _c_string(text: str) -> bytes:
    """The bytes QEMU holds for a string: UTF-8, NUL as C0 80, cut at NUL."""
    return text.encode("utf-8", "surrogatepass").replace(b"\x00", b"\xc0\x80")


def lookup_secret(lookup: Callable[[str], Object | None], secret_id: str) -> SecretBytes:
    """The payload of the secret ``secret_id`` (``qcrypto_secret_lookup``)."""
    obj = lookup(secret_id)
    if obj is None:
        raise ObjectError(f"No secret with id '{secret_id}'")
    if not isinstance(obj, SecretCommon):
        raise ObjectError(f"Object with id '{secret_id}' is not a secret")
    if obj.rawdata is None:
        raise ObjectError(f"Secret with id '{secret_id}' has no data")
    return obj.rawdata


class Secret(SecretCommon):
    """``secret``: the payload is ``data`` or the contents of ``file``."""

    MEMBERS: ClassVar[tuple[Member, ...]] = (Member("data", STR), Member("file", STR))

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.data: str | None = None
        self.file: str | None = None

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        return [field_property("data", "data", STR), field_property("file", "file", STR)]

    def load_input(self) -> bytes:
        if self.file is not None:
            if self.data is not None:
                raise ObjectError("'file' and 'data' are mutually exclusive")
            try:
                return read_file_contents(self.file)
            except OSError as exc:
                raise ObjectError(f"Unable to read {self.file}: {exc}") from None
        if self.data is not None:
            # QEMU keeps the string as a C string: it ends at the first NUL,
            # and JSON's \u0000 was already stored as C0 80.
            return _c_string(self.data)
        raise ObjectError("Either 'file' or 'data' must be provided")


def secret_as_utf8(payload: bytes, secret_id: str) -> str:
    """The payload as text, as consumers needing a password ask for it."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise QemuError(f"Data from secret {secret_id} is not valid UTF-8") from None


class SecretKeyring(SecretCommon):
    """``secret_keyring``: the payload is the kernel key ``serial``.

    The key is read with ``keyctl(KEYCTL_READ)`` when the object is
    completed; the buffer it was read into is wiped once the payload has
    been taken from it. Negative serials name the special keyrings
    (``-3`` is the session keyring), as QEMU accepts them.
    """

    MEMBERS: ClassVar[tuple[Member, ...]] = (Member("serial", INT32, optional=False),)

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.serial = 0

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        def set_serial(obj: Any, value: object) -> None:
            # QEMU stores the value before complaining about it.
            obj.serial = value
            if value == 0:
                raise QemuError("'serial' should not be equal to 0")

        return [
            ObjectProperty(
                "serial", "int32_t", getter=lambda obj: obj.serial, setter=set_serial, kind=INT32
            )
        ]

    def load_input(self) -> bytes:
        from qomhost.crypto.keyring import KeyringError, read_key, wipe

        try:
            buf = read_key(self.serial)
        except KeyringError as exc:
            raise ObjectError(f"{self._unreadable()}: {exc.strerror}") from None
        if not buf:
            # QEMU refuses an empty payload (an empty keyring reads as one)
            # and words it with whatever errno it last saw: in 7.2 that is
            # always the ENOENT of its start-up file probes.
            raise ObjectError(f"{self._unreadable()}: No such file or directory")
        try:
            return SecretBytes(buf)
        finally:
            wipe(buf)

    def _unreadable(self) -> str:
        return f"Unable to read serial key {self.serial & 0xFFFFFFFF:08x}"
