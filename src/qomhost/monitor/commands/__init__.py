"""QMP commands: a table of names, argument schemas and handlers.

Each command module registers its commands with :func:`command`. A
handler receives the :class:`CommandContext` and the arguments already
checked against the command's schema (missing, unexpected and mistyped
arguments are reported with QEMU's wording before the handler runs).
"""

from __future__ import annotations

from qomhost.errors import COMMAND_NOT_FOUND, CommandError
from qomhost.qapi.schema import Member, visit_struct_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from qomhost.host import Host
    from qomhost.monitor.qmp.server import QmpMonitor

    Handler = Callable[["CommandContext", dict[str, Any]], object]

__all__ = ["COMMANDS", "Command", "CommandContext", "check_oob", "command", "dispatch"]


class CommandContext:
    """What a command can reach: the host and the monitor that asked."""

    __slots__ = ("host", "monitor")

    def __init__(self, host: Host, monitor: QmpMonitor | None) -> None:
        self.host = host
        self.monitor = monitor


class Command:
    """A QMP command: its argument schema and handler.

    ``boxed`` commands take their arguments unchecked (the handler does
    its own checking, as ``object-add`` does with the ``ObjectOptions``
    union). ``no_success_response`` commands send nothing on success.
    """

    __slots__ = ("allow_preconfig", "boxed", "handler", "members", "name")

    def __init__(
        self,
        name: str,
        members: tuple[Member, ...],
        handler: Handler,
        boxed: bool = False,
        allow_preconfig: bool = True,
    ) -> None:
        self.name = name
        self.members = members
        self.handler = handler
        self.boxed = boxed
        self.allow_preconfig = allow_preconfig


COMMANDS: dict[str, Command] = {}


def command(
    name: str, members: Sequence[Member] = (), *, boxed: bool = False
) -> Callable[[Handler], Handler]:
    """Register a handler as the QMP command ``name``."""

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(name, tuple(members), handler, boxed)
        return handler

    return register


def check_oob(name: str) -> None:
    """Refuse ``exec-oob`` of a command that cannot run out of band.

    None of qomhost's commands can (QEMU 7.2 allows it only for a few
    migration and yank commands).
    """
    _load()
    if name not in COMMANDS:
        raise CommandError(f"The command {name} has not been found", COMMAND_NOT_FOUND)
    raise CommandError(f"The command {name} does not support OOB")


def dispatch(ctx: CommandContext, name: str, arguments: dict[str, object]) -> object:
    """Run command ``name``; unknown commands raise ``CommandNotFound``."""
    _load()
    cmd = COMMANDS.get(name)
    if cmd is None:
        raise CommandError(f"The command {name} has not been found", COMMAND_NOT_FOUND)
    args = arguments if cmd.boxed else visit_struct_json(cmd.members, arguments)
    return cmd.handler(ctx, args)


_loaded = False


def _load() -> None:
    global _loaded
    if not _loaded:
        from qomhost.monitor.commands import control, iothread, qom, sev  # noqa: F401

        _loaded = True
