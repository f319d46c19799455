"""The SEV kernel structures, byte for byte, against the layouts of Linux's
``psp-sev.h`` and ``kvm.h`` (sizes, offsets, packing and ioctl numbers)."""

from __future__ import annotations

import ctypes
import os
import struct

import pytest

from qomhost.sev import ioctl
from qomhost.sev.cpuid import host_cpuid, sev_cbitpos


def raw(obj: ctypes.Structure) -> bytes:
    return bytes(memoryview(obj).cast("B"))


def test_ioctl_numbers() -> None:
    assert ioctl.SEV_ISSUE_CMD == 0xC0105300
    assert ioctl.KVM_MEMORY_ENCRYPT_OP == 0xC008AEBA
    assert ioctl.KVM_MEMORY_ENCRYPT_REG_REGION == 0x8010AEBB
    assert ioctl.KVM_MEMORY_ENCRYPT_UNREG_REGION == 0x8010AEBC


def test_sev_issue_cmd_is_packed() -> None:
    cmd = ioctl.SevIssueCmd(cmd=1, data=0x1122334455667788, error=0xAABBCCDD)
    assert raw(cmd) == struct.pack("<IQI", 1, 0x1122334455667788, 0xAABBCCDD)
    assert ctypes.sizeof(cmd) == 16


def test_platform_status_layout() -> None:
    wire = struct.pack("<BBBIBI", 1, 52, 2, 0x100, 21, 7)
    status = ioctl.SevUserDataStatus.from_buffer_copy(wire)
    assert (status.api_major, status.api_minor, status.state) == (1, 52, 2)
    assert (status.flags, status.build, status.guest_count) == (0x100, 21, 7)
    assert raw(status) == wire and len(wire) == 12


def test_pdh_cert_export_and_get_id2() -> None:
    pdh = ioctl.SevUserDataPdhCertExport(
        pdh_cert_address=1, pdh_cert_len=2, cert_chain_address=3, cert_chain_len=4
    )
    assert raw(pdh) == struct.pack("<QIQI", 1, 2, 3, 4)
    get_id = ioctl.SevUserDataGetId2(address=5, length=64)
    assert raw(get_id) == struct.pack("<QI", 5, 64)


def test_kvm_sev_cmd_is_aligned() -> None:
    cmd = ioctl.KvmSevCmd(id=6, data=0x1000, error=3, sev_fd=9)
    assert raw(cmd) == struct.pack("<I4xQII", 6, 0x1000, 3, 9)
    assert ioctl.KvmSevCmd.data.offset == 8
    assert ioctl.KvmSevCmd.sev_fd.offset == 20


@pytest.mark.parametrize(
    ("cls", "values", "layout"),
    [
        (ioctl.KvmSevLaunchStart, (1, 2, 3, 4, 5, 6), "<IIQI4xQI4x"),
        (ioctl.KvmSevLaunchUpdateData, (7, 8), "<QI4x"),
        (ioctl.KvmSevLaunchMeasure, (9, 48), "<QI4x"),
        (ioctl.KvmSevLaunchSecret, (1, 2, 3, 4, 5, 6), "<QI4xQI4xQI4x"),
        (ioctl.KvmEncRegion, (0x100000, 0x200000), "<QQ"),
    ],
)
def test_kvm_launch_structs(
    cls: type[ctypes.Structure], values: tuple[int, ...], layout: str
) -> None:
    names = [f[0] for f in cls._fields_]
    obj = cls(**dict(zip(names, values, strict=True)))
    assert raw(obj) == struct.pack(layout, *values)


def test_attestation_report_layout() -> None:
    report = ioctl.KvmSevAttestationReport(uaddr=0x2000, len=0x4A0)
    report.mnonce[:] = list(range(16))
    assert raw(report) == bytes(range(16)) + struct.pack("<QI4x", 0x2000, 0x4A0)


def test_fw_error_to_str() -> None:
    assert ioctl.fw_error_to_str(0) == ""
    assert ioctl.fw_error_to_str(7) == "Policy is not allowed"
    assert ioctl.fw_error_to_str(24) == "Part-specific integrity check failure"
    assert ioctl.fw_error_to_str(25) == "unknown error"
    assert ioctl.fw_error_to_str(-1) == "unknown error"


def test_platform_status_on_a_device_that_is_not_sev() -> None:
    fd = os.open(os.devnull, os.O_RDWR)
    try:
        ret, fw_error, _status = ioctl.sev_platform_status(fd)
    finally:
        os.close(fd)
    assert ret == -1
    assert fw_error == 0


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="CPUID is x86")
def test_cpuid_vendor_and_cbitpos() -> None:
    _eax, ebx, ecx, edx = host_cpuid(0)
    vendor = struct.pack("<3I", ebx, edx, ecx)
    assert vendor in (b"AuthenticAMD", b"GenuineIntel", b"HygonGenuine", b"KVMKVMKVM\0\0\0")
    assert 0 <= sev_cbitpos() < 64
