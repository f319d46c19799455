"""Monitor control commands: negotiation, quit, version, names, HMP passthrough."""

from __future__ import annotations

from qomhost.errors import COMMAND_NOT_FOUND, CommandError, QemuError
from qomhost.monitor.commands import COMMANDS, CommandContext, command
from qomhost.qapi.schema import STR, ListKind, Member, ScalarKind

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_CAPABILITY = ScalarKind("any")


@command("qmp_capabilities", [Member("enable", ListKind("QMPCapability", _CAPABILITY))])
def qmp_capabilities(ctx: CommandContext, args: dict[str, Any]) -> object:
    """Leave capabilities negotiation; optionally enable ``oob``."""
    monitor = ctx.monitor
    if monitor is not None and monitor.protocol.negotiated:
        raise CommandError(
            "Capabilities negotiation is already complete, command ignored", COMMAND_NOT_FOUND
        )
    enable = args.get("enable", [])
    for cap in enable:
        if not isinstance(cap, str):
            raise QemuError("Invalid parameter type for 'enable[0]', expected: string")
        if cap != "oob":
            # QEMU's visitor names the list element "null" here.
            raise QemuError(f"Parameter 'null' does not accept value '{cap}'")
    if monitor is not None:
        monitor.protocol.negotiated = True
        monitor.protocol.oob_enabled = "oob" in enable
    return {}


@command("quit")
def quit_(ctx: CommandContext, args: dict[str, Any]) -> object:
    """Shut the host down after replying; ``SHUTDOWN`` is sent first."""
    ctx.host.request_shutdown("host-qmp-quit")
    return {}


@command("query-version")
def query_version(ctx: CommandContext, args: dict[str, Any]) -> object:
    """The QEMU version qomhost is compatible with, and qomhost's package."""
    from qomhost.host import PACKAGE, QEMU_VERSION

    return {"qemu": dict(QEMU_VERSION), "package": PACKAGE}


@command("query-name")
def query_name(ctx: CommandContext, args: dict[str, Any]) -> object:
    """The ``-name`` of this host, if one was given."""
    if ctx.host.name is None:
        return {}
    return {"name": ctx.host.name}


@command("query-commands")
def query_commands(ctx: CommandContext, args: dict[str, Any]) -> object:
    """Every command, in the relative order QEMU lists them."""
    from qomhost.monitor.commands.order import QEMU_COMMAND_ORDER

    rank = {name: i for i, name in enumerate(QEMU_COMMAND_ORDER)}
    names = sorted(COMMANDS, key=lambda n: (rank.get(n, len(rank)), n))
    return [{"name": name} for name in names]


@command(
    "human-monitor-command",
    [Member("command-line", STR, optional=False), Member("cpu-index", ScalarKind("int64"))],
)
def human_monitor_command(ctx: CommandContext, args: dict[str, Any]) -> object:
    """Run an HMP command line and return what it printed."""
    from qomhost.monitor.hmp import run_hmp_command

    if "cpu-index" in args:
        # There are no CPUs to select (the machine is "none").
        raise QemuError("Parameter 'cpu-index' expects a CPU number")
    return run_hmp_command(ctx.host, args["command-line"])
