"""Firmware images for SEV tests: any payload, with an OVMF footer table.

Real OVMF builds with a kernel hashes area (``OvmfPkg/AmdSev``) are rarely
at hand; measurements only depend on the image's bytes and its footer
table, so a test can build the image it needs::

    image = build_firmware(2 << 20, hashes_area=(0x80A000, 0x400))
    launch_digest(write_to(tmp, image), kernel=...)
"""

from __future__ import annotations

import hashlib
import struct

from qomhost.sev.ovmf import (
    OVMF_TABLE_FOOTER_GUID,
    SEV_ES_RESET_BLOCK_GUID,
    SEV_HASH_TABLE_RV_GUID,
    SEV_SECRET_GUID,
    guid_bytes,
)

__all__ = ["build_firmware", "footer_table", "table_entry"]

#: what the last 32 bytes of an image hold in OVMF (the reset vector area)
_RESET_VECTOR = bytes.fromhex("90" * 16 + "e9" + "00" * 15)


def table_entry(guid: str, data: bytes) -> bytes:
    """One footer-table entry: data, u16 length of the whole entry, GUID."""
    return data + struct.pack("<H", len(data) + 18) + guid_bytes(guid)


def footer_table(entries: list[tuple[str, bytes]]) -> bytes:
    """A footer table (entries first to last, then the footer entry), without
    the 32 bytes that follow it."""
    body = b"".join(table_entry(guid, data) for guid, data in entries)
    return body + struct.pack("<H", len(body) + 18) + guid_bytes(OVMF_TABLE_FOOTER_GUID)


def build_firmware(
    size: int,
    hashes_area: tuple[int, int] | None = None,
    secret_area: tuple[int, int] | None = (0x80B000, 0x1000),
    reset_block: int | None = 0x80B004,
    extra: list[tuple[str, bytes]] | None = None,
    with_table: bool = True,
    seed: bytes = b"qomhost",
) -> bytes:
    """An image of ``size`` bytes: deterministic filler, then OVMF's table.

    ``hashes_area`` is the ``(base, size)`` of the kernel hashes table entry
    (none when ``None``); ``extra`` adds entries as given; with
    ``with_table=False`` the image has no footer table at all.
    """
    entries: list[tuple[str, bytes]] = []
    if reset_block is not None:
        entries.append((SEV_ES_RESET_BLOCK_GUID, struct.pack("<I", reset_block)))
    if secret_area is not None:
        entries.append((SEV_SECRET_GUID, struct.pack("<II", *secret_area)))
    if hashes_area is not None:
        entries.append((SEV_HASH_TABLE_RV_GUID, struct.pack("<II", *hashes_area)))
    entries += extra or []
    tail = (footer_table(entries) if with_table else b"") + _RESET_VECTOR
    if size < len(tail):
        raise ValueError(f"an image of {size} bytes cannot hold a {len(tail)}-byte table")
    filler = bytearray()
    block = hashlib.sha256(seed).digest()
    while len(filler) < size - len(tail):
        block = hashlib.sha256(block).digest()
        filler += block * 128
    return bytes(filler[: size - len(tail)]) + tail
