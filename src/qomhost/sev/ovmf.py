"""The GUIDed table at the end of an OVMF image, read as QEMU 7.2 reads it.

OVMF ends with a table of ``(data, u16 length, GUID)`` entries that tell the
VMM where things are (the SEV-ES reset vector, the kernel hashes area, the
launch secret area). Its own GUID sits 48 bytes before the end of the image
(the last 32 bytes are the reset vector), with the table's total length in
the u16 just before it; the entries run backwards from there, each ending in
its GUID, with its length (data included) just before the GUID.

Like QEMU (``pc_system_parse_ovmf_flash`` and ``pc_system_ovmf_table_find``):

* an image without the footer GUID simply has no table;
* a total length that does not fit the image is reported
  (``OVMF table has invalid size N``) and the image has no table;
* a lookup walks from the end and stops at the first entry whose length is
  shorter than its own header or longer than what remains, so a corrupt
  entry hides everything before it.
"""

from __future__ import annotations

import uuid

__all__ = [
    "OVMF_TABLE_FOOTER_GUID",
    "SEV_ES_RESET_BLOCK_GUID",
    "SEV_HASH_TABLE_RV_GUID",
    "SEV_SECRET_GUID",
    "OvmfTable",
    "OvmfTableError",
    "guid_bytes",
]

OVMF_TABLE_FOOTER_GUID = "96b582de-1fb2-45f7-baea-a366c55a082d"
SEV_HASH_TABLE_RV_GUID = "7255371f-3a3b-4b04-927b-1da6efa8d454"
SEV_ES_RESET_BLOCK_GUID = "00f771de-1a7e-4fcb-890e-68c77e2fb44e"
SEV_SECRET_GUID = "4c2eb361-7d9b-4cc3-8081-127c90d3d294"

#: GUID then u16 length
_HEADER = 18
#: the footer GUID ends this many bytes before the end of the image
_FOOTER_END = 32


class OvmfTableError(ValueError):
    """The image's table is malformed (``desc`` is QEMU's message)."""


def guid_bytes(guid: str) -> bytes:
    """A GUID as firmware stores it (Microsoft layout, little-endian fields)."""
    return uuid.UUID(guid).bytes_le


class OvmfTable:
    """The footer table of one firmware image.

    ``warning`` holds QEMU's message when the table's size was invalid.
    """

    __slots__ = ("_table", "warning")

    def __init__(self, image: bytes | memoryview) -> None:
        self.warning: str | None = None
        self._table = b""
        view = memoryview(image)
        size = len(view)
        footer = size - _FOOTER_END - 16
        if footer < 2 or bytes(view[footer : footer + 16]) != guid_bytes(OVMF_TABLE_FOOTER_GUID):
            return
        length_at = footer - 2
        total = int.from_bytes(view[length_at:footer], "little") - _HEADER
        if total < 0 or total > length_at:
            self.warning = f"OVMF table has invalid size {total}"
            return
        self._table = bytes(view[length_at - total : length_at])

    @classmethod
    def from_file(cls, path: str) -> OvmfTable:
        """Read only the end of the image at ``path`` (the table is at most 64 KiB)."""
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            tail = min(size, 0x10000 + _HEADER + _FOOTER_END)
            f.seek(size - tail)
            data = f.read(tail)
        return cls(data)

    def __bool__(self) -> bool:
        return bool(self._table)

    def _walk(self) -> list[tuple[str, int, int]]:
        """``(guid, start, end)`` of each reachable entry's data, from the end."""
        found: list[tuple[str, int, int]] = []
        end = len(self._table)
        while end >= _HEADER:
            guid = str(uuid.UUID(bytes_le=self._table[end - 16 : end]))
            length = int.from_bytes(self._table[end - _HEADER : end - 16], "little")
            if length < _HEADER or length > end:
                break
            found.append((guid, end - length, end - _HEADER))
            end -= length
        return found

    def entries(self) -> list[tuple[str, bytes]]:
        """``(guid, data)`` of every entry QEMU can reach, from the end backwards."""
        return [(guid, self._table[start:stop]) for guid, start, stop in self._walk()]

    def find(self, guid: str) -> bytes | None:
        """The data of the entry ``guid`` (the last one in the image), or ``None``."""
        guid = str(uuid.UUID(guid))
        for entry_guid, start, stop in self._walk():
            if entry_guid == guid:
                return self._table[start:stop]
        return None

    def area(self, guid: str) -> tuple[int, int] | None:
        """An entry holding ``{u32 base; u32 size}``, such as the hashes table area.

        As in QEMU, the 8 bytes are read from the start of the entry's data
        whatever its length (a short entry's own length and GUID follow it).
        """
        guid = str(uuid.UUID(guid))
        for entry_guid, start, _stop in self._walk():
            if entry_guid == guid:
                raw = self._table[start : start + 8]
                return int.from_bytes(raw[0:4], "little"), int.from_bytes(raw[4:8], "little")
        return None
