"""QEMU 7.2's start-up checks for an SEV guest (``sev_kvm_init``).

They run when the KVM accelerator starts with a ``sev-guest`` bound to the
machine, in QEMU's order, and the first that fails stops start-up with
QEMU's message:

1. ``cbitpos`` must equal the host's C-bit position (CPUID 0x8000001F);
2. ``reduced-phys-bits`` must be at least 1;
3. the SEV device must open read-write;
4. ``SEV_PLATFORM_STATUS`` must succeed (its API version and build are kept);
5. an SEV-ES policy needs an in-kernel irqchip and a platform with SEV-ES;
6. ``dh-cert-file`` and ``session-file`` must be readable (they are
   base64-decoded as LAUNCH_START would send them).

QEMU then asks KVM to initialise SEV on the VM and starts the launch;
qomhost runs no VM, so it stops after step 6 (``docs/compatibility.md``).
"""

from __future__ import annotations

import os

from qomhost.errors import QemuError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from qomhost.objects.sev import SevGuest

__all__ = ["SEV_POLICY_ES", "SevInitError", "load_launch_blob", "sev_kvm_init"]

SEV_POLICY_ES = 0x4


class SevInitError(QemuError):
    """A start-up check failed; ``desc`` is QEMU's message (with its prefix).

    ``report`` is a line QEMU prints on its own before the error, if any.
    """

    report: str | None = None


def _c_int(value: int) -> int:
    """A uint32 printed with ``%d``, as QEMU prints these fields."""
    value &= 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value


def load_launch_blob(path: str) -> bytes:
    """Read a guest owner's base64 file and decode it as QEMU does (``g_base64_decode``).

    Raises :class:`SevInitError` with QEMU's ``SEV: Failed to read`` text.
    """
    from qomhost.crypto.qbase64 import glib_base64_decode
    from qomhost.gfile import read_file_contents

    try:
        text = read_file_contents(path)
    except OSError as exc:
        raise SevInitError(f"SEV: Failed to read '{path}' ({exc})") from None
    return glib_base64_decode(text)


def sev_kvm_init(sev: SevGuest, irqchip: bool = True) -> None:
    """Check ``sev`` against this host as QEMU does before a launch.

    On success the platform's ``api_major``, ``api_minor`` and ``build_id``
    are stored on ``sev``. Raises :class:`SevInitError` otherwise.
    """
    from qomhost.sev.cpuid import sev_cbitpos

    host_cbitpos = sev_cbitpos()
    if host_cbitpos != sev.cbitpos:
        raise SevInitError(
            f"sev_kvm_init: cbitpos check failed, host '{host_cbitpos}' "
            f"requested '{_c_int(sev.cbitpos)}'"
        )
    if sev.reduced_phys_bits < 1:
        raise SevInitError(
            "sev_kvm_init: reduced_phys_bits check failed, it should be >=1, "
            f"requested '{_c_int(sev.reduced_phys_bits)}'"
        )
    device = sev.sev_device or ""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise SevInitError(
            f"sev_kvm_init: Failed to open {device} '{os.strerror(exc.errno or 0)}'"
        ) from None
    try:
        from qomhost.sev.ioctl import (
            SEV_STATUS_FLAGS_CONFIG_ES,
            fw_error_to_str,
            sev_platform_status,
        )

        ret, fw_error, status = sev_platform_status(fd)
        if ret:
            # QEMU prints whatever the error field holds; when the ioctl
            # fails before reaching the firmware QEMU's is uninitialised,
            # ours is 0 (docs/compatibility.md).
            raise SevInitError(
                f"sev_kvm_init: failed to get platform status ret={ret} "
                f"fw_error='{fw_error}: {fw_error_to_str(fw_error)}'"
            )
        sev.build_id = status.build
        sev.api_major = status.api_major
        sev.api_minor = status.api_minor
        if sev.policy & SEV_POLICY_ES:
            if not irqchip:
                raise SevInitError("sev_kvm_init: SEV-ES guests require in-kernel irqchip support")
            if not status.flags & SEV_STATUS_FLAGS_CONFIG_ES:
                raise SevInitError(
                    "sev_kvm_init: guest policy requires SEV-ES, but host SEV-ES "
                    "support unavailable"
                )
        for path in (sev.dh_cert_file, sev.session_file):
            if path:
                try:
                    load_launch_blob(path)
                except SevInitError as err:
                    failed = SevInitError("sev_kvm_init: failed to create encryption context")
                    failed.report = err.desc
                    raise failed from None
    finally:
        os.close(fd)
