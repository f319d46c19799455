"""The platform's SEV capabilities, as ``query-sev-capabilities`` reports them.

The PDH certificate and its chain come from ``SEV_PDH_CERT_EXPORT`` and the
chip id from ``SEV_GET_ID2``; each is asked twice, as QEMU asks: first with
zero lengths, which the firmware answers with ``INVALID_LEN`` and the sizes
it needs, then with buffers of those sizes. QEMU opens ``/dev/sev`` itself
here, whatever the ``sev-device`` of the guest says.
"""

from __future__ import annotations

import base64
import ctypes
import os

from qomhost.errors import CommandError
from qomhost.sev.ioctl import (
    SEV_ISSUE_CMD,
    SevIssueCmd,
    SevUserCmd,
    SevUserDataGetId2,
    SevUserDataPdhCertExport,
    fw_error_to_str,
    sev_ioctl,
)

__all__ = ["SEV_RET_INVALID_LEN", "kvm_has_sev", "sev_capabilities"]

SEV_RET_INVALID_LEN = 4
DEFAULT_SEV_DEVICE = "/dev/sev"
#: QEMU 7.2 reports this, not the host's CPUID value
REDUCED_PHYS_BITS = 1


def kvm_has_sev() -> bool:
    """Whether the kernel's KVM offers SEV (``kvm_amd``'s ``sev`` parameter)."""
    try:
        with open("/sys/module/kvm_amd/parameters/sev", "rb") as f:
            return f.read().strip() in (b"Y", b"1")
    except OSError:
        return False


def _issue(fd: int, cmd: int, data: ctypes.Structure) -> tuple[int, int]:
    arg = SevIssueCmd(cmd=cmd, data=ctypes.addressof(data))
    return sev_ioctl(fd, SEV_ISSUE_CMD, arg), int(arg.error)


def _pdh_export(fd: int) -> tuple[bytes, bytes]:
    export = SevUserDataPdhCertExport()
    for attempt in range(2):
        ret, err = _issue(fd, SevUserCmd.PDH_CERT_EXPORT, export)
        if ret < 0 and not (attempt == 0 and err == SEV_RET_INVALID_LEN):
            raise CommandError(
                f"SEV: Failed to export PDH cert ret={ret} fw_err={err} ({fw_error_to_str(err)})"
            )
        if attempt == 0:
            pdh = ctypes.create_string_buffer(export.pdh_cert_len)
            chain = ctypes.create_string_buffer(export.cert_chain_len)
            export.pdh_cert_address = ctypes.addressof(pdh)
            export.cert_chain_address = ctypes.addressof(chain)
    return pdh.raw[: export.pdh_cert_len], chain.raw[: export.cert_chain_len]


def _cpu0_id(fd: int) -> bytes:
    get_id = SevUserDataGetId2()
    for attempt in range(2):
        ret, err = _issue(fd, SevUserCmd.GET_ID2, get_id)
        if ret < 0 and not (attempt == 0 and err == SEV_RET_INVALID_LEN):
            raise CommandError(
                f"SEV: Failed to get ID ret={ret} fw_err={err} ({fw_error_to_str(err)})"
            )
        if attempt == 0:
            buf = ctypes.create_string_buffer(get_id.length)
            get_id.address = ctypes.addressof(buf)
    return buf.raw[: get_id.length]


def sev_capabilities() -> dict[str, object]:
    """``query-sev-capabilities``'s answer from this host's SEV firmware."""
    from qomhost.sev.cpuid import sev_cbitpos

    try:
        fd = os.open(DEFAULT_SEV_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise CommandError(
            f"SEV: Failed to open {DEFAULT_SEV_DEVICE}: {os.strerror(exc.errno or 0)}"
        ) from None
    try:
        pdh, chain = _pdh_export(fd)
        cpu0_id = _cpu0_id(fd)
    finally:
        os.close(fd)
    return {
        "pdh": base64.b64encode(pdh).decode(),
        "cert-chain": base64.b64encode(chain).decode(),
        "cpu0-id": base64.b64encode(cpu0_id).decode(),
        "cbitpos": sev_cbitpos(),
        "reduced-phys-bits": REDUCED_PHYS_BITS,
    }
