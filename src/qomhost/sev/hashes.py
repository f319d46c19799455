"""The SEV kernel hashes table, byte for byte as QEMU 7.2 builds it.

With ``kernel-hashes=on`` and ``-kernel``, QEMU writes SHA-256 hashes of the
command line, the initrd and the kernel into an area the firmware reserved
(named in its footer table, :mod:`qomhost.sev.ovmf`); the firmware checks
what it loads against them, and the area is measured with the firmware.

The table (packed, little-endian) is a header entry whose length covers
the whole table, then one entry per input, each ``GUID, u16 length, hash``;
168 bytes, zero-padded to 176 (a multiple of 16) as QEMU's
``PaddedSevHashTable`` is. The inputs, as QEMU hashes them:

* command line: the ``-append`` text with its terminating NUL (just
  ``b"\\0"`` without ``-append``);
* initrd: the file (the empty string without ``-initrd``);
* kernel: the whole bzImage as read (QEMU hashes its setup part and the
  rest, unmodified, one after the other).
"""

from __future__ import annotations

import hashlib
import struct

from qomhost.sev.ovmf import guid_bytes

__all__ = [
    "HASHES_TABLE_SIZE",
    "SEV_CMDLINE_ENTRY_GUID",
    "SEV_HASH_TABLE_HEADER_GUID",
    "SEV_INITRD_ENTRY_GUID",
    "SEV_KERNEL_ENTRY_GUID",
    "build_hashes_table",
    "cmdline_bytes",
    "sha256_file",
]

SEV_HASH_TABLE_HEADER_GUID = "9438d606-4f22-4cc9-b479-a793d411fd21"
SEV_CMDLINE_ENTRY_GUID = "97d02dd8-bd20-4c94-aa78-e7714d36ab2a"
SEV_INITRD_ENTRY_GUID = "44baf731-3a2f-4bd7-9af1-41e29169781d"
SEV_KERNEL_ENTRY_GUID = "4de79437-abd2-427f-b835-d5b172d2045b"

_ENTRY = struct.Struct("<16sH32s")  # 50 bytes
_HEADER = struct.Struct("<16sH")  # 18 bytes
_TABLE_LEN = _HEADER.size + 3 * _ENTRY.size  # 168
#: the padded table QEMU measures
HASHES_TABLE_SIZE = (_TABLE_LEN + 15) & ~15  # 176


def cmdline_bytes(append: str | bytes | None) -> bytes:
    """The command line as QEMU hashes it: its bytes and a terminating NUL."""
    if append is None:
        return b"\0"
    if isinstance(append, str):
        append = append.encode("utf-8", "surrogateescape")
    return append + b"\0"


def sha256_file(path: str | None) -> bytes:
    """SHA-256 of a whole file (of nothing when ``path`` is ``None``).

    The file is streamed through a fixed buffer, never held whole; hashlib
    releases the GIL meanwhile, so several files hash in parallel threads.
    """
    if path is None:
        return hashlib.sha256(b"").digest()
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def build_hashes_table(kernel_hash: bytes, initrd_hash: bytes, cmdline_hash: bytes) -> bytes:
    """The padded 176-byte table for three SHA-256 digests."""
    for name, digest in (
        ("kernel", kernel_hash),
        ("initrd", initrd_hash),
        ("cmdline", cmdline_hash),
    ):
        if len(digest) != 32:
            raise ValueError(f"{name} hash must be 32 bytes, not {len(digest)}")
    table = b"".join(
        (
            _HEADER.pack(guid_bytes(SEV_HASH_TABLE_HEADER_GUID), _TABLE_LEN),
            _ENTRY.pack(guid_bytes(SEV_CMDLINE_ENTRY_GUID), _ENTRY.size, cmdline_hash),
            _ENTRY.pack(guid_bytes(SEV_INITRD_ENTRY_GUID), _ENTRY.size, initrd_hash),
            _ENTRY.pack(guid_bytes(SEV_KERNEL_ENTRY_GUID), _ENTRY.size, kernel_hash),
        )
    )
    return table.ljust(HASHES_TABLE_SIZE, b"\0")
