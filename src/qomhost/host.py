"""The host process: the object tree, the main loop, and the monitors.

:class:`Host` is what ``qomhost`` runs and what library users create::

    from qomhost import Host

    host = Host()
    host.add_object("secret", "sec0", data="letmein")
    host.secret_bytes("sec0")        # b'letmein'

It owns the QOM root (``/``) with ``/machine``, ``/chardevs`` and, once
the first object needs it, ``/objects``; the main :class:`AioContext`;
and the QMP and HMP monitors attached to chardevs.
"""

from __future__ import annotations

import _thread

import qomhost.qom.typetable  # noqa: F401  (fills the type table)
from qomhost.aio.context import AioContext
from qomhost.errors import QemuError
from qomhost.qom.object import Container, Object, types
from qomhost.qom.user_creatable import (
    add_object,
    del_object,
    new_object,
    visit_object_options,
)

# Not typing.TYPE_CHECKING, and logging only when something is logged: both
# imports would cost a large share of a qomhost start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from qomhost.chardev.base import Chardev
    from qomhost.monitor.commands import CommandContext
    from qomhost.monitor.qmp.server import QmpMonitor

__all__ = ["PACKAGE", "QEMU_VERSION", "Host"]

#: the QEMU release whose behaviour qomhost reproduces
QEMU_VERSION: Mapping[str, int] = {"major": 7, "minor": 2, "micro": 0}
#: what the QMP greeting and ``query-version`` name as the package
PACKAGE = "qomhost 0.1.0"


def _log_report(line: str) -> None:
    import logging

    logging.getLogger("qomhost.host").error("%s", line)


class Host:
    """A qomhost instance: objects, event loop and monitors.

    :param name: the VM name, as ``-name`` sets it (``query-name``).
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.context = AioContext("main-loop")
        self.context.thread_id = _thread.get_native_id()
        self.root: Object = Container("container")
        self.machine: Object | None = None
        self.chardevs = Container("container")
        self.root.add_child("chardevs", self.chardevs)
        self.qmp_monitors: list[QmpMonitor] = []
        self.shutdown_reason: str | None = None
        self._on_object_deleted: list[Callable[[str], None]] = []
        #: how objects report an error at run time, one line each (QEMU's
        #: error_report); the command line prints ``prog: line``, a library
        #: host logs it
        self.report: Callable[[str], None] = _log_report
        #: what follows a fatal report (QEMU exits with status 1); None in a
        #: library host, where the object fails instead
        self.fatal: Callable[[], None] | None = None

    # --- the tree ---------------------------------------------------------------
    def create_machine(self, type_name: str = "none-machine") -> Object:
        """Create ``/machine`` (``-machine none``)."""
        machine = new_object(type_name)
        self.root.add_child("machine", machine)
        self.machine = machine
        return machine

    def objects_root(self) -> Object:
        """``/objects``, created the first time anything asks for it, as in QEMU."""
        found = self.root.child("objects")
        if found is None:
            found = Container("container")
            self.root.add_child("objects", found)
        return found

    def lookup_object(self, ident: str) -> Object | None:
        """The object with id ``ident`` (a direct child of ``/objects``)."""
        return self.objects_root().child(ident)

    def _prepare(self, obj: Object) -> None:
        """Give a new object what it may need from the host before ``complete()``."""
        if types.is_a(obj.type_name, "secret_common"):
            from qomhost.objects.secret import SecretCommon

            assert isinstance(obj, SecretCommon)
            obj.lookup = self.lookup_object
        elif types.is_a(obj.type_name, "main-loop"):
            from qomhost.objects.iothread import MainLoop

            assert isinstance(obj, MainLoop)
            obj.main_context = self.context

            def another_exists() -> bool:
                return any(
                    isinstance(other, MainLoop) and other is not obj
                    for _id, other in self.objects_root().children()
                )

            obj.another_exists = another_exists
        elif types.is_a(obj.type_name, "tls-creds-x509"):
            from qomhost.objects.tls import QCryptoTLSCredsX509

            assert isinstance(obj, QCryptoTLSCredsX509)
            # To find the secret named by passwordid.
            obj.lookup = self.lookup_object
        elif types.is_a(obj.type_name, "cryptodev-backend"):
            from qomhost.objects.cryptodev.base import CryptoDevBackend

            assert isinstance(obj, CryptoDevBackend)
            obj.context = self.context
            if types.is_a(obj.type_name, "cryptodev-vhost-user"):
                from qomhost.objects.cryptodev.vhost_user import CryptoDevBackendVhostUser

                assert isinstance(obj, CryptoDevBackendVhostUser)
                obj.find_chardev = self.chardevs.child
                obj.report = lambda line: self.report(line)
                obj.fatal = self.fatal
        elif types.is_a(obj.type_name, "authz-list-file"):
            from qomhost.objects.authz.listfile import QAuthZListFile

            assert isinstance(obj, QAuthZListFile)
            # Its file monitor runs on the main loop, as QEMU's does.
            obj.context = self.context

    # --- object creation --------------------------------------------------------
    def add_object(self, qom_type: str, ident: str, **props: Any) -> Object:
        """Create an object as ``object-add`` would.

        Property names may be spelt with underscores (``poll_max_ns``) or as
        QEMU spells them (pass a dict with ``**{"poll-max-ns": 0}``).
        Raises :class:`~qomhost.errors.QemuError` with QEMU's message.
        """
        args: dict[str, object] = {"qom-type": qom_type, "id": ident}
        args.update({key.replace("_", "-"): value for key, value in props.items()})
        return self.object_add(args)

    def object_add(self, args: Mapping[str, object]) -> Object:
        """``object-add`` with JSON arguments (QAPI checks, then QOM)."""
        type_name, ident, typed = visit_object_options(args)
        return self.create_object(type_name, ident, typed)

    def create_object(self, type_name: str, ident: str, props: Mapping[str, object]) -> Object:
        """The QOM half of object creation, with already-typed properties."""
        return add_object(self.objects_root, type_name, ident, props, self._prepare)

    def object_add_keyval(self, text: str) -> str | None:
        """HMP ``object_add``: a keyval string, or a JSON object.

        Returns help text when the string asked for help, else ``None``.
        """
        from qomhost.cli.objectopts import parse_object_keyval

        parsed = parse_object_keyval(text)
        if isinstance(parsed, str):
            return parsed
        type_name, ident, typed = parsed
        self.create_object(type_name, ident, typed)
        return None

    def del_object(self, ident: str) -> None:
        """``object-del``: refuse if the object is in use, else remove it."""
        del_object(self.objects_root, ident)
        for callback in self._on_object_deleted:
            callback(ident)

    def on_object_deleted(self, callback: Callable[[str], None]) -> None:
        """Be told the id of each object ``object-del`` removes."""
        self._on_object_deleted.append(callback)

    def set_property_json(self, obj: Object, name: str, value: object) -> None:
        """``qom-set``: set a property from a JSON value."""
        obj.set_property_json(name, value)

    def set_property_string(self, obj: Object, name: str, text: str) -> None:
        """HMP ``qom-set``: set a property from a string."""
        obj.set_property_string(name, text)

    def secret_bytes(self, ident: str) -> bytes:
        """The loaded payload of the secret ``ident``."""
        from qomhost.objects.secret import lookup_secret

        return lookup_secret(self.lookup_object, ident)

    # --- chardevs and monitors ---------------------------------------------------
    def add_chardev(self, chardev: Chardev, ident: str) -> None:
        """Put a chardev under ``/chardevs``."""
        chardev.label = ident
        self.chardevs.add_child(ident, chardev)

    def command_context(self, monitor: QmpMonitor | None = None) -> CommandContext:
        from qomhost.monitor.commands import CommandContext

        return CommandContext(self, monitor)

    def emit_event(self, name: str, data: dict[str, object] | None = None) -> None:
        """Send an event to every QMP monitor past capabilities negotiation."""
        from qomhost.monitor.qmp.protocol import encode_event

        message = encode_event(name, data)
        for monitor in self.qmp_monitors:
            monitor.send_event(message)

    # --- running -------------------------------------------------------------------
    def request_shutdown(self, reason: str) -> None:
        """Stop the main loop after the current work; emits ``SHUTDOWN``."""
        if self.shutdown_reason is None:
            self.shutdown_reason = reason
            self.emit_event("SHUTDOWN", {"guest": False, "reason": reason})
            self.context.notify()

    def run(self) -> None:
        """Run the main loop until a shutdown is requested, then clean up."""
        try:
            while self.shutdown_reason is None:
                self.context.run_once()
        finally:
            self.close()

    def close(self) -> None:
        """Finalise every object, flush the monitors, release the loop."""
        objects = self.root.child("objects")
        if objects is not None:
            for ident, _obj in list(objects.children()):
                try:
                    objects.remove_child(ident).finalize()
                except QemuError as err:
                    import logging

                    logging.getLogger("qomhost.host").warning("finalising %s: %s", ident, err.desc)
        for ident, _chr in list(self.chardevs.children()):
            chardev = self.chardevs.remove_child(ident)
            chardev.finalize()
        self.context.close()
