"""The SEV commands: ``query-sev``, ``query-sev-capabilities``,
``query-sev-launch-measure``, ``query-sev-attestation-report`` and
``sev-inject-launch-secret``, answering as QEMU 7.2 does.

qomhost never launches an encrypted guest (``docs/compatibility.md``), so
SEV is never active: ``query-sev`` says so and the launch commands give
QEMU's errors for that state. ``query-sev-capabilities`` asks the platform
for real when KVM runs and the kernel's KVM has SEV.
"""

from __future__ import annotations

from qomhost.errors import CommandError
from qomhost.monitor.commands import CommandContext, command
from qomhost.qapi.schema import STR, UINT64, Member

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["sev_info"]

#: ``query-sev`` while SEV is not active
_DISABLED = {
    "enabled": False,
    "api-major": 0,
    "api-minor": 0,
    "build-id": 0,
    "policy": 0,
    "state": "uninit",
    "handle": 0,
}


def _sev_guest(ctx: CommandContext) -> Any:
    """The running SEV guest's object: always ``None`` in qomhost."""
    from qomhost.objects.sev import SevGuest

    machine = ctx.host.machine
    cgs = getattr(machine, "cgs", None)
    if isinstance(cgs, SevGuest) and cgs.state != "uninit":
        return cgs
    return None


def _kvm_enabled(ctx: CommandContext) -> bool:
    return getattr(ctx.host.machine, "accel", "tcg") == "kvm"


def sev_info(ctx: CommandContext) -> dict[str, object]:
    """``query-sev``'s answer (also what HMP ``info sev`` shows)."""
    sev = _sev_guest(ctx)
    return dict(_DISABLED) if sev is None else sev.info()


@command("query-sev")
def query_sev(ctx: CommandContext, args: dict[str, Any]) -> object:
    """SEV's state for this guest; disabled unless a launch is under way."""
    return sev_info(ctx)


@command("query-sev-capabilities")
def query_sev_capabilities(ctx: CommandContext, args: dict[str, Any]) -> object:
    """The platform's PDH, certificate chain, chip id and C-bit position."""
    if not _kvm_enabled(ctx):
        raise CommandError("KVM not enabled")
    from qomhost.sev.capabilities import kvm_has_sev, sev_capabilities

    if not kvm_has_sev():
        raise CommandError("SEV is not enabled in KVM")
    return sev_capabilities()


@command("query-sev-launch-measure")
def query_sev_launch_measure(ctx: CommandContext, args: dict[str, Any]) -> object:
    """The launch measurement, once the firmware has measured the guest."""
    raise CommandError("SEV launch measurement is not available")


@command("query-sev-attestation-report", (Member("mnonce", STR, optional=False),))
def query_sev_attestation_report(ctx: CommandContext, args: dict[str, Any]) -> object:
    """An attestation report over the guest's launch digest and ``mnonce``."""
    raise CommandError("SEV is not enabled")


@command(
    "sev-inject-launch-secret",
    (
        Member("packet-header", STR, optional=False),
        Member("secret", STR, optional=False),
        Member("gpa", UINT64),
    ),
)
def sev_inject_launch_secret(ctx: CommandContext, args: dict[str, Any]) -> object:
    """Place an owner's secret into the guest before it runs."""
    raise CommandError("SEV not enabled for guest")
