"""sev/: the OVMF footer table, the kernel hashes table, launch digests,
launch measurements (checked against an HMAC computed here from the AMD SEV
API's fields, by hand) and guest policies."""

from __future__ import annotations

import hashlib
import struct
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qomhost.sev.hashes import (
    HASHES_TABLE_SIZE,
    build_hashes_table,
    cmdline_bytes,
    sha256_file,
)
from qomhost.sev.measure import (
    MeasureError,
    launch_digest,
    launch_measure,
    measurement_blob,
    split_blob,
)
from qomhost.sev.ovmf import SEV_HASH_TABLE_RV_GUID, SEV_SECRET_GUID, OvmfTable, guid_bytes
from qomhost.sev.policy import (
    PolicyError,
    decode_policy,
    describe_policy,
    encode_policy,
    parse_policy,
)
from qomhost.testing.sev_firmware import build_firmware, footer_table, table_entry

AREA = (0x80A000, 0x400)

# --- OVMF footer table ------------------------------------------------------------


def test_guid_bytes_are_microsoft_layout() -> None:
    assert guid_bytes("9438d606-4f22-4cc9-b479-a793d411fd21") == bytes.fromhex(
        "06d63894224fc94cb479a793d411fd21"
    )


def test_table_found_and_entries_walked_from_the_end() -> None:
    image = build_firmware(64 * 1024, hashes_area=AREA)
    table = OvmfTable(image)
    assert table and table.warning is None
    guids = [guid for guid, _ in table.entries()]
    assert guids[0] == SEV_HASH_TABLE_RV_GUID
    assert table.area(SEV_HASH_TABLE_RV_GUID) == AREA
    assert table.area(SEV_SECRET_GUID) == (0x80B000, 0x1000)


def test_no_footer_means_no_table() -> None:
    table = OvmfTable(build_firmware(8192, with_table=False))
    assert not table and table.warning is None
    assert table.find(SEV_HASH_TABLE_RV_GUID) is None


def test_invalid_total_size_is_reported_as_qemu_does() -> None:
    image = bytearray(build_firmware(4096))
    footer_len_at = len(image) - 32 - 16 - 2
    image[footer_len_at : footer_len_at + 2] = struct.pack("<H", 5)
    table = OvmfTable(bytes(image))
    assert not table and table.warning == "OVMF table has invalid size -13"


def test_corrupt_entry_hides_everything_before_it() -> None:
    good = table_entry(SEV_SECRET_GUID, b"\1" * 8)
    bad = b"\0" * 8 + struct.pack("<H", 3) + guid_bytes(SEV_HASH_TABLE_RV_GUID)
    later = table_entry("00000000-0000-0000-0000-000000000001", b"x")
    body = good + bad + later
    tail = (
        body
        + struct.pack("<H", len(body) + 18)
        + guid_bytes("96b582de-1fb2-45f7-baea-a366c55a082d")
    )
    table = OvmfTable(b"\xff" * 100 + tail + b"\0" * 32)
    assert [g for g, _ in table.entries()] == ["00000000-0000-0000-0000-000000000001"]
    assert table.find(SEV_SECRET_GUID) is None


def test_first_match_from_the_end_wins() -> None:
    entries = [(SEV_HASH_TABLE_RV_GUID, struct.pack("<II", 1, 2))]
    image = build_firmware(4096, hashes_area=AREA, extra=entries)
    assert OvmfTable(image).area(SEV_HASH_TABLE_RV_GUID) == (1, 2)


def test_debian_ovmf_has_an_empty_hashes_area() -> None:
    path = "/usr/share/OVMF/OVMF_CODE.fd"
    if not Path(path).exists():
        pytest.skip("Debian's ovmf package is not installed")
    assert OvmfTable.from_file(path).area(SEV_HASH_TABLE_RV_GUID) == (0, 0)


_guids = st.uuids().map(str)
_entries = st.lists(st.tuples(_guids, st.binary(max_size=40)), max_size=8)


@settings(max_examples=300, deadline=None)
@given(_entries, st.binary(max_size=64))
def test_fuzz_round_trip(entries: list[tuple[str, bytes]], filler: bytes) -> None:
    image = filler + footer_table(entries) + b"\0" * 32
    table = OvmfTable(image)
    assert table.entries() == list(reversed(entries))
    for guid, _data in entries:
        # the entry nearest the end of the image wins, as in QEMU
        assert table.find(guid) == next(d for g, d in reversed(entries) if g == guid)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400), st.binary(min_size=0, max_size=120))
def test_fuzz_garbage_never_raises(prefix: bytes, table_bytes: bytes) -> None:
    footer = guid_bytes("96b582de-1fb2-45f7-baea-a366c55a082d")
    for image in (prefix, prefix + table_bytes + footer + bytes(32)):
        table = OvmfTable(image)
        for guid, data in table.entries():
            assert uuid.UUID(guid)
            assert isinstance(data, bytes)
        table.area(SEV_HASH_TABLE_RV_GUID)


# --- the hashes table -----------------------------------------------------------------


def test_hashes_table_layout() -> None:
    k, i, c = (bytes([n]) * 32 for n in (1, 2, 3))
    table = build_hashes_table(k, i, c)
    assert len(table) == HASHES_TABLE_SIZE == 176
    assert table[:16] == bytes.fromhex("06d63894224fc94cb479a793d411fd21")
    assert struct.unpack_from("<H", table, 16) == (168,)
    assert table[18:34] == bytes.fromhex("d82dd09720bd944caa78e7714d36ab2a")
    assert struct.unpack_from("<H", table, 34) == (50,)
    assert table[36:68] == c
    assert table[68:84] == bytes.fromhex("31f7ba442f3ad74b9af141e29169781d")
    assert table[86:118] == i
    assert table[118:134] == bytes.fromhex("3794e74dd2ab7f42b835d5b172d2045b")
    assert table[136:168] == k
    assert table[168:] == bytes(8)


def test_cmdline_and_empty_initrd_hashes() -> None:
    assert hashlib.sha256(cmdline_bytes(None)).hexdigest() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert cmdline_bytes("console=ttyS0") == b"console=ttyS0\0"
    assert sha256_file(None).hex().startswith("e3b0c442")


# --- launch digest ------------------------------------------------------------------------


def _files(tmp_path: Path, **contents: bytes) -> dict[str, str]:
    out = {}
    for name, data in contents.items():
        path = tmp_path / name
        path.write_bytes(data)
        out[name] = str(path)
    return out


def test_digest_of_firmware_alone_is_its_sha256(tmp_path: Path) -> None:
    image = build_firmware(32 * 1024)
    f = _files(tmp_path, fw=image)
    result = launch_digest(f["fw"])
    assert result.digest == hashlib.sha256(image).digest()
    assert result.table is None


def test_digest_with_kernel_appends_the_table(tmp_path: Path) -> None:
    image = build_firmware(32 * 1024, hashes_area=AREA)
    f = _files(tmp_path, fw=image, k=b"kernel" * 1000, i=b"initrd" * 500)
    result = launch_digest(f["fw"], kernel=f["k"], initrd=f["i"], append="ro quiet")
    table = build_hashes_table(
        hashlib.sha256(b"kernel" * 1000).digest(),
        hashlib.sha256(b"initrd" * 500).digest(),
        hashlib.sha256(b"ro quiet\0").digest(),
    )
    assert result.table == table
    assert result.digest == hashlib.sha256(image + table).digest()


@pytest.mark.parametrize(
    ("area", "message"),
    [
        (None, "SEV: kernel specified but guest firmware has no hashes table GUID"),
        ((0, 0x400), "SEV: guest firmware hashes table area is invalid (base=0x0 size=0x400)"),
        (
            (0x1000, 0xAF),
            "SEV: guest firmware hashes table area is invalid (base=0x1000 size=0xaf)",
        ),
    ],
)
def test_kernel_needs_a_usable_hashes_area(
    tmp_path: Path, area: tuple[int, int] | None, message: str
) -> None:
    f = _files(tmp_path, fw=build_firmware(8192, hashes_area=area), k=b"k")
    with pytest.raises(MeasureError) as err:
        launch_digest(f["fw"], kernel=f["k"])
    assert str(err.value) == message


def test_initrd_and_append_need_a_kernel(tmp_path: Path) -> None:
    f = _files(tmp_path, fw=build_firmware(8192, hashes_area=AREA), i=b"i")
    with pytest.raises(MeasureError, match=r"^-initrd only allowed with -kernel option$"):
        launch_digest(f["fw"], initrd=f["i"])
    with pytest.raises(MeasureError, match=r"^-append only allowed with -kernel option$"):
        launch_digest(f["fw"], append="x")


# --- launch measurement ---------------------------------------------------------------------


def _hmac_sha256_by_hand(key: bytes, message: bytes) -> bytes:
    """RFC 2104 written out, so that the check does not reuse hmac.new."""
    block = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block) + message).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in block) + inner).digest()


@settings(max_examples=50, deadline=None)
@given(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=16, max_size=16),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 2**32 - 1),
    st.binary(min_size=16, max_size=16),
)
def test_measure_is_the_spec_hmac(
    ld: bytes, tik: bytes, major: int, minor: int, build: int, policy: int, mnonce: bytes
) -> None:
    # AMD SEV API 6.5.1: 0x04 || API_MAJOR || API_MINOR || BUILD || POLICY || LD || MNONCE
    fields = bytes([0x04, major, minor, build]) + policy.to_bytes(4, "little") + ld + mnonce
    expected = _hmac_sha256_by_hand(tik, fields)
    measure = launch_measure(ld, tik, major, minor, build, policy, mnonce)
    assert measure == expected
    assert split_blob(measurement_blob(measure, mnonce)) == (measure, mnonce)


def test_measure_rejects_bad_sizes() -> None:
    with pytest.raises(MeasureError, match="TIK must be 16 bytes"):
        launch_measure(bytes(32), bytes(15), 1, 0, 0, 1, bytes(16))
    with pytest.raises(MeasureError, match="nonce must be 16 bytes"):
        launch_measure(bytes(32), bytes(16), 1, 0, 0, 1, bytes(17))
    with pytest.raises(MeasureError, match="48 bytes"):
        split_blob(bytes(47))


# --- policy ---------------------------------------------------------------------------------


def test_policy_decode_and_describe() -> None:
    assert decode_policy(0x34010005) == {
        "policy": 0x34010005,
        "flags": ["NODBG", "ES"],
        "api-major": 1,
        "api-minor": 52,
        "reserved": 0,
    }
    assert describe_policy(1) == "0x00000001: NODBG"
    assert describe_policy(0) == "0x00000000: no restrictions"
    assert describe_policy(0x40) == "0x00000040: reserved bits 0x40 set"


def test_policy_encode_and_parse() -> None:
    assert encode_policy(["nodbg", "NOKS", "sev"]) == 0x23
    assert parse_policy("0x5") == 5
    assert parse_policy("NODBG|ES,API=1.52") == 0x34010005
    with pytest.raises(PolicyError, match="unknown policy flag 'FOO'"):
        parse_policy("FOO")
    with pytest.raises(PolicyError):
        encode_policy([], api_major=256)


@given(st.integers(0, 2**32 - 1))
def test_policy_round_trip(policy: int) -> None:
    parts = decode_policy(policy)
    flags = parts["flags"]
    assert isinstance(flags, list)
    major, minor, reserved = parts["api-major"], parts["api-minor"], parts["reserved"]
    assert isinstance(major, int) and isinstance(minor, int) and isinstance(reserved, int)
    assert encode_policy(flags, major, minor) | reserved == policy
