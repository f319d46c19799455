"""``query-iothreads``: the iothreads under ``/objects`` and their tuning."""

from __future__ import annotations

from qomhost.monitor.commands import CommandContext, command

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def iothread_infos(ctx: CommandContext) -> list[dict[str, object]]:
    """One entry per iothread that is a direct child of ``/objects``.

    The order is that of ``/objects``' property table, as in QEMU (a GLib
    hash table's order, not creation order).
    """
    from qomhost.objects.iothread import IOThread

    return [
        obj.info() for _id, obj in ctx.host.objects_root().children() if isinstance(obj, IOThread)
    ]


@command("query-iothreads")
def query_iothreads(ctx: CommandContext, args: dict[str, Any]) -> object:
    """List iothreads with their OS thread ids and polling parameters."""
    return iothread_infos(ctx)
