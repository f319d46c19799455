"""``authz-list-file`` (also ``authz-listfile``): an ``authz-list`` kept in a JSON file.

The file holds the properties of an ``authz-list``::

    {"policy": "deny",
     "rules": [{"match": "fred", "policy": "allow", "format": "exact"},
               {"match": "*.example.com", "policy": "allow", "format": "glob"}]}

Properties: ``filename`` (mandatory) and ``refresh`` (default on: reload
when the file changes). Creation does what QEMU's ``complete()`` does, in
its order and with its messages: ``filename not provided``; the load
(``Unable to read '%s': %s``, QEMU's JSON errors such as ``Expecting a
JSON value``, ``File '%s' must contain a JSON object``, then each key set
on a new ``authz-list`` in QEMU's hash order, so an unknown key is
``Property 'authz-list.x' not found``); and with ``refresh`` only,
``Filename must be an absolute path`` (the directory part is ``.``),
``Path has no trailing filename component`` and the inotify set-up.

Refreshing
----------
The file's directory is watched with inotify
(:class:`~qomhost.aio.filemonitor.FileMonitor`) on the host's main loop.
What counts as "the file was written" is where qomhost departs from QEMU
7.2, which reloads on every create and modify event and so, while a file
is rewritten in place, reads it truncated or half-written and denies
everyone until the next event:

* a file written in place is reloaded when its writer closes it
  (``IN_CLOSE_WRITE``), never in between;
* a file renamed over the name (``IN_MOVED_TO``, the atomic way) is
  reloaded at once;
* a file that *appears* (``IN_CREATE``: hard link, or the first step of
  delete-and-create) is loaded if it already parses; if not, it is being
  written, and its close decides;
* the file being deleted or renamed away changes nothing: the last rules
  stay in force, as in QEMU;
* a file that is invalid once written (after its close or rename) denies
  everyone and the reason is logged -- fail closed, as in QEMU -- until a
  valid file arrives. Before that, it is read once more
  (:data:`CONFIRM_DELAY` later), because a writer may already have
  reopened and truncated it: the kernel reports a truncation only just
  after it happened. If the file changed meanwhile, its writer's close
  decides instead;
* events that arrive together are handled with one reload.

A reload builds and compiles the new ``authz-list`` completely before it
replaces the old one in one assignment, so a check never sees half a rule
set. As in QEMU, changing ``filename`` later makes the next reload read the
new path while the watch stays where it was, and ``refresh`` has no effect
after creation.
"""

from __future__ import annotations

from qomhost.aio.filemonitor import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
)
from qomhost.errors import ObjectError, QemuError
from qomhost.objects.authz.base import QAuthZ, logger
from qomhost.objects.authz.list import Decision, QAuthZList
from qomhost.qapi.schema import BOOL, STR, Member
from qomhost.qom.object import ObjectProperty

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from qomhost.aio.context import AioContext, Timer
    from qomhost.aio.filemonitor import FileEvent, FileMonitor

__all__ = [
    "CONFIRM_DELAY",
    "QAuthZListFile",
    "g_path_get_basename",
    "g_path_get_dirname",
    "load_list_file",
]

#: seconds between finding a just-written file invalid and denying everyone,
#: in which a writer that already reopened the file shows itself
CONFIRM_DELAY = 0.05


def g_path_get_dirname(path: str) -> str:
    """GLib's ``g_path_get_dirname`` on POSIX: ``"x"`` -> ``"."``, ``"/x"`` -> ``"/"``."""
    slash = path.rfind("/")
    if slash < 0:
        return "."
    while slash > 0 and path[slash] == "/":
        slash -= 1
    return path[: slash + 1]


def g_path_get_basename(path: str) -> str:
    """GLib's ``g_path_get_basename``: trailing slashes ignored, ``""`` -> ``"."``."""
    if not path:
        return "."
    last = len(path) - 1
    while last >= 0 and path[last] == "/":
        last -= 1
    if last < 0:
        return "/"
    base = path.rfind("/", 0, last + 1)
    return path[base + 1 : last + 1]


def load_list_file(filename: str) -> QAuthZList:
    """Read ``filename`` into a new, anonymous ``authz-list`` (``qauthz_list_file_load``).

    Raises :class:`~qomhost.errors.QemuError` with QEMU's message.
    """
    from qomhost.gfile import read_file_contents
    from qomhost.qapi.json import parse_json, qdict_order

    try:
        content = read_file_contents(filename)
    except OSError as exc:
        raise ObjectError(f"Unable to read '{filename}': {exc}") from None
    value = parse_json(content)
    if not isinstance(value, dict):
        raise ObjectError(f"File '{filename}' must contain a JSON object")
    authz = QAuthZList("authz-list")
    # As user_creatable_add_type does: each key is set, in QDict order,
    # through the property's setter.
    for key in qdict_order(value):
        authz.set_property_json(key, value[key])
    authz.complete()
    return authz


class QAuthZListFile(QAuthZ):
    """``authz-list-file``: the rules of an ``authz-list`` file, reloaded on change."""

    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("filename", STR, optional=False),
        Member("refresh", BOOL),
    )

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.filename: str | None = None
        self.refresh = True
        #: the loaded rules; ``None`` after a failed reload (deny everyone)
        self.list: QAuthZList | None = None
        #: the loop the file monitor runs on (the host's main loop)
        self.context: AioContext | None = None
        self._monitor: FileMonitor | None = None
        self._watched_name: str | None = None
        #: the second look at a file that was invalid when its writer closed it
        self._confirm: Timer | None = None
        #: how many times the file was (re)loaded, successfully or not
        self.generation = 0

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        def get_filename(obj: Any) -> object:
            return "" if obj.filename is None else obj.filename

        def set_filename(obj: Any, value: object) -> None:
            obj.filename = value

        def get_refresh(obj: Any) -> object:
            return obj.refresh

        def set_refresh(obj: Any, value: object) -> None:
            obj.refresh = value

        return [
            ObjectProperty(
                "filename", "string", getter=get_filename, setter=set_filename, kind=STR
            ),
            ObjectProperty("refresh", "bool", getter=get_refresh, setter=set_refresh, kind=BOOL),
        ]

    def complete(self) -> None:
        if self.filename is None:
            raise ObjectError("filename not provided")
        self.list = load_list_file(self.filename)
        self.generation += 1
        if not self.refresh:
            return
        from qomhost.aio.filemonitor import FileMonitor, FileMonitorError

        if self.context is None:
            raise ObjectError("Unable to initialize inotify: no event loop to run it on")
        try:
            monitor = FileMonitor(self.context)
        except FileMonitorError as exc:
            raise ObjectError(str(exc.strerror)) from None
        try:
            directory = g_path_get_dirname(self.filename)
            if directory == ".":
                raise ObjectError("Filename must be an absolute path")
            basename = g_path_get_basename(self.filename)
            if basename == ".":
                raise ObjectError("Path has no trailing filename component")
            self._watched_name = basename
            try:
                monitor.add_watch(directory, basename, self._on_events)
            except FileMonitorError as exc:
                raise ObjectError(str(exc.strerror)) from None
        except BaseException:
            monitor.close()
            raise
        self._monitor = monitor

    def finalize(self) -> None:
        if self._confirm is not None:
            self._confirm.cancel()
            self._confirm = None
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None

    # --- refreshing -------------------------------------------------------------
    def _on_events(self, events: list[FileEvent]) -> None:
        masks = 0
        # Whether the last writer is done: a write after the last close or
        # rename means another writer is at work, and its close will come.
        settled = True
        for event in events:
            masks |= event.mask
            if event.mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
                settled = True
            elif event.mask & (IN_MODIFY | IN_CREATE):
                settled = False
        if masks & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_Q_OVERFLOW):
            # A writer is done (or events were lost): this content counts,
            # unless the file is being written again already.
            self._load(fail_closed=settled, confirm_later=True)
        elif masks & IN_CREATE:
            # A new file: complete if it came by link, empty if it is about
            # to be written; in that case its close will decide.
            self._load(fail_closed=False, confirm_later=False)
        if masks & (IN_DELETE | IN_MOVED_FROM) and not masks & (IN_MOVED_TO | IN_CREATE):
            logger().info(
                "%s: %s went away; its last rules stay in force", self._who(), self.filename
            )
        if masks & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
            logger().warning(
                "%s: the directory of %s went away; the file is no longer watched",
                self._who(),
                self.filename,
            )

    def reload(self, fail_closed: bool = True) -> bool:
        """Load the file again and put its rules in force; True if it was valid.

        When the file is invalid and ``fail_closed`` is true, every identity
        is denied from now on, and the reason is logged (QEMU's behaviour);
        otherwise the rules in force stay.
        """
        return self._load(fail_closed, confirm_later=False)

    def _load(self, fail_closed: bool, confirm_later: bool) -> bool:
        """:meth:`reload`; with ``confirm_later``, an invalid file is read once more
        after :data:`CONFIRM_DELAY` before it denies everyone."""
        assert self.filename is not None
        if self._confirm is not None:
            self._confirm.cancel()
            self._confirm = None
        try:
            fresh = load_list_file(self.filename)
        except QemuError as err:
            if not fail_closed or self._written_again():
                # Still (or again) being written: its writer's close decides.
                logger().debug("%s: not loaded yet: %s", self._who(), err.desc)
                return False
            if confirm_later and self.context is not None:
                # The kernel reports a truncation just after it happened: a
                # writer that reopened the file a moment ago may not show yet.
                self._confirm = self.context.call_later(CONFIRM_DELAY, self._confirm_invalid)
                logger().debug("%s: %s; reading it again shortly", self._who(), err.desc)
                return False
            self.list = None
            self.generation += 1
            logger().error(
                "%s: %s; denying every identity until it is fixed", self._who(), err.desc
            )
            return False
        self.list = fresh
        self.generation += 1
        logger().info("%s: loaded %d rules from %s", self._who(), len(fresh.rules), self.filename)
        return True

    def _confirm_invalid(self) -> None:
        self._confirm = None
        if not self._written_again():
            self._load(fail_closed=True, confirm_later=False)

    def _written_again(self) -> bool:
        """Whether the file changed after the events being handled (a new writer).

        A writer that truncated or wrote the file before it was read has its
        events queued by then, so what was read may be its unfinished work.
        """
        if self._monitor is None:
            return False
        changes = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_Q_OVERFLOW
        return any(e.mask & changes for e in self._monitor.pending(self._watched_name))

    def _who(self) -> str:
        return f"{self.type_name} '{self.name}'" if self.name else self.type_name

    # --- deciding ---------------------------------------------------------------
    def check(self, identity: str) -> bool:
        authz = self.list
        if authz is None:
            return False
        return authz.check(identity)

    def decide(self, identity: str) -> Decision:
        """Like :meth:`is_allowed`, and says which rule decided.

        With no valid file loaded, the answer is a denial with neither a
        rule nor a default policy behind it: ``Decision(False, None, None)``.
        """
        authz = self.list
        if authz is None:
            return Decision(False, None, None)
        return authz.decide(identity)
