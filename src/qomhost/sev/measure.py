"""SEV launch digests and launch measurements, for guest owners.

The firmware keeps a running SHA-256 over everything the VMM encrypts into
the guest before it runs, the launch digest (``GCTX.LD``). For an SEV guest
that QEMU 7.2 starts, that is the firmware image, then (with
``kernel-hashes=on`` and ``-kernel``) the padded kernel hashes table
(:mod:`qomhost.sev.hashes`). SEV-ES guests add each vCPU's VMSA, which is
not computed here.

``LAUNCH_MEASURE`` (AMD SEV API, section 6.5) gives the owner, through
``query-sev-launch-measure``, 48 bytes: ``MEASURE ‖ MNONCE``, where ::

    MEASURE = HMAC-SHA-256(key=TIK,
                           0x04 ‖ API_MAJOR ‖ API_MINOR ‖ BUILD ‖ POLICY (u32 LE)
                           ‖ LD ‖ MNONCE)

and ``TIK`` is the transport integrity key the owner's session blob set up.
An owner who computes the same value knows the platform ran exactly the
expected firmware, kernel, initrd and command line under that policy.

Library use::

    digest = launch_digest("OVMF.amdsev.fd", kernel="vmlinuz", append="console=ttyS0")
    measure = launch_measure(digest.digest, tik, 1, 52, 21, 0x1, mnonce)
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading

from qomhost.sev.hashes import HASHES_TABLE_SIZE, build_hashes_table, cmdline_bytes, sha256_file
from qomhost.sev.ovmf import SEV_HASH_TABLE_RV_GUID, OvmfTable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "LAUNCH_MEASURE_CONTEXT",
    "LaunchDigest",
    "MeasureError",
    "check_inputs",
    "launch_digest",
    "launch_measure",
    "measurement_blob",
    "split_blob",
]

#: the first byte of the HMAC input (the context of LAUNCH_MEASURE)
LAUNCH_MEASURE_CONTEXT = 0x04
MNONCE_SIZE = 16
TIK_SIZE = 16
BLOB_SIZE = 32 + MNONCE_SIZE


class MeasureError(ValueError):
    """The inputs cannot be measured; the text is QEMU's where QEMU has one."""


class LaunchDigest:
    """A launch digest and what went into it.

    ``digest`` is ``GCTX.LD``; ``table`` the kernel hashes table measured
    after the firmware (``None`` without a kernel), with the three input
    hashes it holds.
    """

    __slots__ = (
        "cmdline_hash",
        "digest",
        "firmware_hash",
        "firmware_state",
        "initrd_hash",
        "kernel_hash",
        "table",
    )

    def __init__(
        self,
        digest: bytes,
        firmware_hash: bytes,
        table: bytes | None = None,
        kernel_hash: bytes | None = None,
        initrd_hash: bytes | None = None,
        cmdline_hash: bytes | None = None,
    ) -> None:
        self.digest = digest
        self.firmware_hash = firmware_hash
        self.table = table
        self.kernel_hash = kernel_hash
        self.initrd_hash = initrd_hash
        self.cmdline_hash = cmdline_hash
        #: the running hash after the firmware, to measure other tables after it
        self.firmware_state: Any = None

    def with_table(self, table: bytes) -> bytes:
        """The launch digest had this table been measured after the firmware."""
        if self.firmware_state is None:
            raise ValueError("this digest did not keep the firmware's hash state")
        state = self.firmware_state.copy()
        state.update(table)
        return bytes(state.digest())

    def __repr__(self) -> str:
        return f"LaunchDigest({self.digest.hex()})"


def check_inputs(kernel: str | None, initrd: str | None, append: str | None) -> None:
    """QEMU's own refusals: ``-initrd`` and ``-append`` need ``-kernel``."""
    if kernel is None:
        if initrd is not None:
            raise MeasureError("-initrd only allowed with -kernel option")
        if append is not None:
            raise MeasureError("-append only allowed with -kernel option")


def _hashes_area(firmware: str) -> tuple[int, int]:
    table = OvmfTable.from_file(firmware)
    area = table.area(SEV_HASH_TABLE_RV_GUID)
    if area is None:
        raise MeasureError("SEV: kernel specified but guest firmware has no hashes table GUID")
    base, size = area
    if not base or size < HASHES_TABLE_SIZE:
        raise MeasureError(
            f"SEV: guest firmware hashes table area is invalid (base=0x{base:x} size=0x{size:x})"
        )
    return base, size


def _in_threads(*jobs: Callable[[], bytes]) -> list[bytes]:
    """Run each job in its own thread (hashing releases the GIL); their results."""
    results: list[bytes | BaseException] = [b""] * len(jobs)

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except BaseException as exc:  # re-raised in the caller's thread
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(1, len(jobs))]
    for t in threads:
        t.start()
    run(0)
    for t in threads:
        t.join()
    out: list[bytes] = []
    for r in results:
        if isinstance(r, BaseException):
            raise r
        out.append(r)
    return out


def launch_digest(
    firmware: str,
    kernel: str | None = None,
    initrd: str | None = None,
    append: str | None = None,
) -> LaunchDigest:
    """``GCTX.LD`` for an SEV (not SEV-ES) guest started by QEMU 7.2 with
    ``-bios firmware`` (or it as pflash) and, optionally, ``-kernel``,
    ``-initrd``, ``-append`` with ``kernel-hashes=on``.

    Raises :class:`MeasureError` with QEMU's text when QEMU would refuse
    (a firmware without a usable hashes table, ``-initrd`` without
    ``-kernel``) and :class:`OSError` for unreadable files.
    """
    check_inputs(kernel, initrd, append)
    if kernel is not None:
        _hashes_area(firmware)
    ld = hashlib.sha256()

    def firmware_job() -> bytes:
        with open(firmware, "rb") as f:
            digest = hashlib.file_digest(f, lambda: ld)
        return digest.digest()

    if kernel is None:
        firmware_hash = firmware_job()
        result = LaunchDigest(ld.digest(), firmware_hash)
        result.firmware_state = ld.copy()
        return result
    # The firmware, kernel and initrd are hashed at the same time; the
    # table (which needs the last two) then continues the firmware's hash.
    firmware_hash, kernel_hash, initrd_hash = _in_threads(
        firmware_job, lambda: sha256_file(kernel), lambda: sha256_file(initrd)
    )
    cmdline_hash = hashlib.sha256(cmdline_bytes(append)).digest()
    table = build_hashes_table(kernel_hash, initrd_hash, cmdline_hash)
    state = ld.copy()
    ld.update(table)
    result = LaunchDigest(ld.digest(), firmware_hash, table, kernel_hash, initrd_hash, cmdline_hash)
    result.firmware_state = state
    return result


def launch_measure(
    ld: bytes,
    tik: bytes,
    api_major: int,
    api_minor: int,
    build: int,
    policy: int,
    mnonce: bytes,
) -> bytes:
    """``MEASURE``: the 32-byte HMAC the firmware computes at LAUNCH_MEASURE."""
    if len(ld) != 32:
        raise MeasureError(f"the launch digest must be 32 bytes, not {len(ld)}")
    if len(tik) != TIK_SIZE:
        raise MeasureError(f"the TIK must be {TIK_SIZE} bytes, not {len(tik)}")
    if len(mnonce) != MNONCE_SIZE:
        raise MeasureError(f"the nonce must be {MNONCE_SIZE} bytes, not {len(mnonce)}")
    for name, value in (("api-major", api_major), ("api-minor", api_minor), ("build", build)):
        if not 0 <= value <= 0xFF:
            raise MeasureError(f"{name} {value} is not in 0..255")
    if not 0 <= policy <= 0xFFFFFFFF:
        raise MeasureError(f"policy {policy} is not a 32-bit value")
    message = (
        struct.pack("<BBBBI", LAUNCH_MEASURE_CONTEXT, api_major, api_minor, build, policy)
        + ld
        + mnonce
    )
    return hmac.new(tik, message, hashlib.sha256).digest()


def measurement_blob(measure: bytes, mnonce: bytes) -> bytes:
    """The 48 bytes ``query-sev-launch-measure`` returns (base64): MEASURE ‖ MNONCE."""
    return measure + mnonce


def split_blob(blob: bytes) -> tuple[bytes, bytes]:
    """``(measure, mnonce)`` of a ``query-sev-launch-measure`` blob."""
    if len(blob) != BLOB_SIZE:
        raise MeasureError(f"a launch measurement is {BLOB_SIZE} bytes, not {len(blob)}")
    return blob[:32], blob[32:]
