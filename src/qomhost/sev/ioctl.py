"""The kernel interfaces of AMD SEV, as ctypes structures and ioctl numbers.

Two devices are involved:

* ``/dev/sev`` (``linux/psp-sev.h``): platform commands through
  ``SEV_ISSUE_CMD``, whose argument names a command and points at that
  command's data; the firmware's status code comes back in ``error``.
* a KVM VM fd (``linux/kvm.h``): guest commands through
  ``KVM_MEMORY_ENCRYPT_OP`` with a :class:`KvmSevCmd`, which also carries
  the ``/dev/sev`` fd.

The layouts are the kernel's: the ``/dev/sev`` user structures are packed,
the KVM ones naturally aligned. ``tests/unit/test_sev_ioctl.py`` checks
every one byte for byte.
"""

from __future__ import annotations

import ctypes

__all__ = [
    "KVM_MEMORY_ENCRYPT_OP",
    "KVM_MEMORY_ENCRYPT_REG_REGION",
    "KVM_MEMORY_ENCRYPT_UNREG_REGION",
    "SEV_ISSUE_CMD",
    "SEV_STATUS_FLAGS_CONFIG_ES",
    "KvmEncRegion",
    "KvmSevAttestationReport",
    "KvmSevCmd",
    "KvmSevCmdId",
    "KvmSevLaunchMeasure",
    "KvmSevLaunchSecret",
    "KvmSevLaunchStart",
    "KvmSevLaunchUpdateData",
    "SevIssueCmd",
    "SevUserCmd",
    "SevUserDataGetId2",
    "SevUserDataPdhCertExport",
    "SevUserDataStatus",
    "fw_error_to_str",
    "sev_ioctl",
    "sev_platform_status",
]

_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, kind: int, nr: int, size: int) -> int:
    """Linux's ``_IOC()``: direction, size, type and number in one word."""
    return (direction << 30) | (size << 16) | (kind << 8) | nr


def _iowr(kind: int, nr: int, size: int) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, kind, nr, size)


def _ior(kind: int, nr: int, size: int) -> int:
    return _ioc(_IOC_READ, kind, nr, size)


# --- /dev/sev ------------------------------------------------------------------


class SevUserCmd:
    """``enum sev_cmd`` of ``psp-sev.h``: the ``cmd`` of :class:`SevIssueCmd`."""

    FACTORY_RESET = 0
    PLATFORM_STATUS = 1
    PEK_GEN = 2
    PEK_CSR = 3
    PDH_GEN = 4
    PDH_CERT_EXPORT = 5
    PEK_CERT_IMPORT = 6
    GET_ID = 7
    GET_ID2 = 8


class SevIssueCmd(ctypes.LittleEndianStructure):
    """``struct sev_issue_cmd`` (packed, 16 bytes)."""

    _pack_ = 1
    _fields_ = (("cmd", ctypes.c_uint32), ("data", ctypes.c_uint64), ("error", ctypes.c_uint32))


class SevUserDataStatus(ctypes.LittleEndianStructure):
    """``struct sev_user_data_status`` (packed, 12 bytes): PLATFORM_STATUS's answer."""

    _pack_ = 1
    _fields_ = (
        ("api_major", ctypes.c_uint8),
        ("api_minor", ctypes.c_uint8),
        ("state", ctypes.c_uint8),
        ("flags", ctypes.c_uint32),
        ("build", ctypes.c_uint8),
        ("guest_count", ctypes.c_uint32),
    )


class SevUserDataPdhCertExport(ctypes.LittleEndianStructure):
    """``struct sev_user_data_pdh_cert_export`` (packed, 24 bytes)."""

    _pack_ = 1
    _fields_ = (
        ("pdh_cert_address", ctypes.c_uint64),
        ("pdh_cert_len", ctypes.c_uint32),
        ("cert_chain_address", ctypes.c_uint64),
        ("cert_chain_len", ctypes.c_uint32),
    )


class SevUserDataGetId2(ctypes.LittleEndianStructure):
    """``struct sev_user_data_get_id2`` (packed, 12 bytes)."""

    _pack_ = 1
    _fields_ = (("address", ctypes.c_uint64), ("length", ctypes.c_uint32))


SEV_ISSUE_CMD = _iowr(ord("S"), 0x0, ctypes.sizeof(SevIssueCmd))
#: PLATFORM_STATUS ``flags``: the platform can run SEV-ES guests
SEV_STATUS_FLAGS_CONFIG_ES = 0x0100

# --- KVM ----------------------------------------------------------------------


class KvmSevCmdId:
    """``enum sev_cmd_id`` of ``kvm.h``: the ``id`` of :class:`KvmSevCmd`."""

    INIT = 0
    ES_INIT = 1
    LAUNCH_START = 2
    LAUNCH_UPDATE_DATA = 3
    LAUNCH_UPDATE_VMSA = 4
    LAUNCH_SECRET = 5
    LAUNCH_MEASURE = 6
    LAUNCH_FINISH = 7
    SEND_START = 8
    SEND_UPDATE_DATA = 9
    SEND_UPDATE_VMSA = 10
    SEND_FINISH = 11
    RECEIVE_START = 12
    RECEIVE_UPDATE_DATA = 13
    RECEIVE_UPDATE_VMSA = 14
    RECEIVE_FINISH = 15
    GUEST_STATUS = 16
    DBG_DECRYPT = 17
    DBG_ENCRYPT = 18
    CERT_EXPORT = 19
    GET_ATTESTATION_REPORT = 20
    SEND_CANCEL = 21


class KvmSevCmd(ctypes.LittleEndianStructure):
    """``struct kvm_sev_cmd`` (24 bytes; ``data`` is 8-aligned)."""

    _fields_ = (
        ("id", ctypes.c_uint32),
        ("data", ctypes.c_uint64),
        ("error", ctypes.c_uint32),
        ("sev_fd", ctypes.c_uint32),
    )


class KvmEncRegion(ctypes.LittleEndianStructure):
    """``struct kvm_enc_region``: guest RAM to pin for encryption."""

    _fields_ = (("addr", ctypes.c_uint64), ("size", ctypes.c_uint64))


class KvmSevLaunchStart(ctypes.LittleEndianStructure):
    """``struct kvm_sev_launch_start`` (40 bytes)."""

    _fields_ = (
        ("handle", ctypes.c_uint32),
        ("policy", ctypes.c_uint32),
        ("dh_uaddr", ctypes.c_uint64),
        ("dh_len", ctypes.c_uint32),
        ("session_uaddr", ctypes.c_uint64),
        ("session_len", ctypes.c_uint32),
    )


class KvmSevLaunchUpdateData(ctypes.LittleEndianStructure):
    """``struct kvm_sev_launch_update_data`` (16 bytes)."""

    _fields_ = (("uaddr", ctypes.c_uint64), ("len", ctypes.c_uint32))


class KvmSevLaunchSecret(ctypes.LittleEndianStructure):
    """``struct kvm_sev_launch_secret`` (48 bytes)."""

    _fields_ = (
        ("hdr_uaddr", ctypes.c_uint64),
        ("hdr_len", ctypes.c_uint32),
        ("guest_uaddr", ctypes.c_uint64),
        ("guest_len", ctypes.c_uint32),
        ("trans_uaddr", ctypes.c_uint64),
        ("trans_len", ctypes.c_uint32),
    )


class KvmSevLaunchMeasure(ctypes.LittleEndianStructure):
    """``struct kvm_sev_launch_measure`` (16 bytes)."""

    _fields_ = (("uaddr", ctypes.c_uint64), ("len", ctypes.c_uint32))


class KvmSevAttestationReport(ctypes.LittleEndianStructure):
    """``struct kvm_sev_attestation_report`` (32 bytes)."""

    _fields_ = (
        ("mnonce", ctypes.c_uint8 * 16),
        ("uaddr", ctypes.c_uint64),
        ("len", ctypes.c_uint32),
    )


_KVMIO = 0xAE
KVM_MEMORY_ENCRYPT_OP = _iowr(_KVMIO, 0xBA, ctypes.sizeof(ctypes.c_ulong))
KVM_MEMORY_ENCRYPT_REG_REGION = _ior(_KVMIO, 0xBB, ctypes.sizeof(KvmEncRegion))
KVM_MEMORY_ENCRYPT_UNREG_REGION = _ior(_KVMIO, 0xBC, ctypes.sizeof(KvmEncRegion))

# --- firmware status codes ----------------------------------------------------

# The AMD SEV API's status codes, as QEMU 7.2 words them (index = code).
_FW_ERRORS = (
    "",
    "Platform state is invalid",
    "Guest state is invalid",
    "Platform configuration is invalid",
    "Buffer too small",
    "Platform is already owned",
    "Certificate is invalid",
    "Policy is not allowed",
    "Guest is not active",
    "Invalid address",
    "Bad signature",
    "Bad measurement",
    "ASID is already owned",
    "Invalid ASID",
    "WBINVD is required",
    "DF_FLUSH is required",
    "Guest handle is invalid",
    "Invalid command",
    "Guest is active",
    "Hardware error",
    "Hardware unsafe",
    "Feature not supported",
    "Invalid parameter",
    "Required firmware resource depleted",
    "Part-specific integrity check failure",
)


def fw_error_to_str(code: int) -> str:
    """The text QEMU prints for firmware status ``code``."""
    if 0 <= code < len(_FW_ERRORS):
        return _FW_ERRORS[code]
    return "unknown error"


# --- calls -----------------------------------------------------------------------

_libc: ctypes.CDLL | None = None


def sev_ioctl(fd: int, request: int, arg: ctypes._CData) -> int:
    """``ioctl(fd, request, &arg)``; returns its result (-1 on failure, errno kept)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    func = _libc.ioctl
    func.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
    func.restype = ctypes.c_int
    return int(func(fd, request, ctypes.addressof(arg)))


def sev_platform_status(fd: int) -> tuple[int, int, SevUserDataStatus]:
    """Issue PLATFORM_STATUS on an open ``/dev/sev``: ``(ret, fw_error, status)``.

    ``ret`` is the ioctl's result (-1 on failure, with ``ctypes.get_errno()``
    set); ``fw_error`` the firmware status code the kernel wrote back.
    """
    status = SevUserDataStatus()
    cmd = SevIssueCmd(cmd=SevUserCmd.PLATFORM_STATUS, data=ctypes.addressof(status))
    ret = sev_ioctl(fd, SEV_ISSUE_CMD, cmd)
    return ret, int(cmd.error), status
