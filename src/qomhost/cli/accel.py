"""``-accel`` (and ``-machine accel=``): starting an accelerator, as QEMU 7.2 does.

qomhost runs no vCPUs, so an accelerator matters for what QEMU checks when
it starts one: KVM opens ``/dev/kvm`` and, when the machine has a
``sev-guest`` bound with ``memory-encryption=``, runs SEV's start-up checks
(:mod:`qomhost.sev.launch`). The accelerators are tried in order; the
first that starts is used, as in QEMU (``falling back to tcg``).
"""

from __future__ import annotations

import os

from qomhost.errors import QemuError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from qomhost.objects.machine import Machine

    #: report(location or None, message)
    Report = Callable[[str | None, str], None]

__all__ = ["ACCELERATORS", "ACCEL_HELP", "AccelSpec", "configure_accelerators"]

ACCELERATORS = ("tcg", "kvm")
ACCEL_HELP = "Accelerators supported in QEMU binary:\ntcg\nkvm\n"
# The properties each accelerator object takes here, and their values.
_PROPERTIES: dict[str, dict[str, tuple[str, ...] | None]] = {
    "tcg": {"thread": ("single", "multi"), "tb-size": None},
    "kvm": {"kernel-irqchip": ("on", "off", "split")},
}
KVM_DEVICE = "/dev/kvm"


class AccelSpec:
    """One accelerator to try: its name, options and where it was given."""

    __slots__ = ("location", "name", "options")

    def __init__(self, name: str, options: dict[str, str], location: str | None) -> None:
        self.name = name
        self.options = options
        self.location = location


class _InitFailed(Exception):
    def __init__(self, message: str | None, errno: int, report: str | None = None) -> None:
        self.message = message
        self.errno = errno
        self.report = report


def _check_options(spec: AccelSpec) -> None:
    known = _PROPERTIES[spec.name]
    for key, value in spec.options.items():
        if key not in known:
            raise QemuError(f"Property '{spec.name}-accel.{key}' not found")
        allowed = known[key]
        if allowed is not None and value not in allowed:
            if key == "thread":
                raise QemuError(f"Invalid 'thread' setting {value}")
            raise QemuError(f"Parameter '{key}' does not accept value '{value}'")


def _kvm_init(spec: AccelSpec, machine: Machine) -> None:
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        errno = exc.errno or 0
        raise _InitFailed(
            f"Could not access KVM kernel module: {os.strerror(errno)}", errno
        ) from None
    os.close(fd)
    from qomhost.objects.sev import SevGuest

    if isinstance(machine.cgs, SevGuest):
        from qomhost.sev.launch import SevInitError

        irqchip = spec.options.get("kernel-irqchip", "on") != "off"
        try:
            machine.cgs.kvm_init(irqchip)
        except SevInitError as err:
            # QEMU's kvm_init returns -1, which it prints as -EPERM.
            import errno as errno_mod

            raise _InitFailed(err.desc, errno_mod.EPERM, err.report) from None
        machine.cgs.ready = True


def configure_accelerators(
    machine: Machine, specs: Sequence[AccelSpec], report: Report
) -> str | None:
    """Start the first accelerator of ``specs`` that works; its name, or ``None``.

    Failures are reported as QEMU reports them; a bad option is reported,
    then raised as :class:`~qomhost.errors.QemuError` (fatal, as in QEMU).
    """
    failed = False
    for spec in specs:
        if spec.name not in ACCELERATORS:
            failed = True
            report(spec.location, f"invalid accelerator {spec.name}")
            continue
        try:
            _check_options(spec)
        except QemuError as err:
            report(spec.location, err.desc)
            raise
        try:
            if spec.name == "kvm":
                _kvm_init(spec, machine)
        except _InitFailed as err:
            failed = True
            if err.report is not None:
                report(spec.location, err.report)
            if err.message is not None:
                report(spec.location, err.message)
            report(spec.location, f"failed to initialize {spec.name}: {os.strerror(err.errno)}")
            continue
        machine.accel = spec.name
        if failed:
            report(None, f"falling back to {spec.name}")
        return spec.name
    if not failed:
        report(None, "no accelerator found")
    return None
