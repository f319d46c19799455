"""Watching files through their directory with inotify, on an :class:`AioContext`.

This is QEMU's ``QFileMonitor`` (``util/filemonitor-inotify.c``): the
*directory* is watched, because the ways tools replace a file -- renaming a
new file over it, deleting it and creating it again -- would end a watch on
the file itself. Events are filtered by file name and handed to a callback
on the loop's thread, in batches: everything one ``read()`` of the inotify
descriptor returned, so a callback can act once on a burst of events.

inotify is reached through ``ctypes`` (``inotify_init1``,
``inotify_add_watch``, ``inotify_rm_watch`` from the C library); the
descriptor is an ordinary fd handler of the context.

::

    monitor = FileMonitor(context)
    monitor.add_watch("/etc/qemu", "acl.json", lambda events: ...)
    ...
    monitor.close()
"""

from __future__ import annotations

import os
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from qomhost.aio.context import AioContext

__all__ = [
    "IN_ATTRIB",
    "IN_CLOSE_WRITE",
    "IN_CREATE",
    "IN_DELETE",
    "IN_DELETE_SELF",
    "IN_IGNORED",
    "IN_MODIFY",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_MOVE_SELF",
    "IN_Q_OVERFLOW",
    "FileEvent",
    "FileMonitor",
    "FileMonitorError",
]

# <sys/inotify.h>
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

#: what a directory watch asks for: QEMU's set (create, modify, delete,
#: moves, attributes) plus close-after-write and the directory's own end
DEFAULT_MASK = (
    IN_CREATE
    | IN_MODIFY
    | IN_DELETE
    | IN_MOVED_TO
    | IN_MOVED_FROM
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


class FileMonitorError(OSError):
    """inotify could not be set up; ``str()`` is QEMU's message."""


class FileEvent:
    """One inotify event: the ``IN_*`` bits and the file name (``""`` for the directory)."""

    __slots__ = ("mask", "name")

    def __init__(self, mask: int, name: str) -> None:
        self.mask = mask
        self.name = name

    def __repr__(self) -> str:
        return f"FileEvent(mask={self.mask:#x}, name={self.name!r})"


_libc = None


def _c_library() -> object:
    global _libc
    if _libc is None:
        import ctypes

        lib = ctypes.CDLL(None, use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_init1.restype = ctypes.c_int
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        lib.inotify_add_watch.restype = ctypes.c_int
        lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.inotify_rm_watch.restype = ctypes.c_int
        _libc = lib
    return _libc


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


class _Watch:
    __slots__ = ("callback", "filename", "wd")

    def __init__(
        self, wd: int, filename: str | None, callback: Callable[[list[FileEvent]], None]
    ) -> None:
        self.wd = wd
        self.filename = filename
        self.callback = callback


class FileMonitor:
    """An inotify instance whose events are read by ``context``'s loop.

    Raises :class:`FileMonitorError` (``Unable to initialize inotify: ...``)
    when the kernel refuses an instance.
    """

    def __init__(self, context: AioContext) -> None:
        lib: Any = _c_library()
        fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = _errno()
            raise FileMonitorError(err, f"Unable to initialize inotify: {os.strerror(err)}")
        self.fd: int = fd
        self.context = context
        self._watches: dict[int, list[_Watch]] = {}
        #: events read from the kernel and not yet handed to the watches
        self._backlog: list[tuple[int, FileEvent]] = []
        self._dispatch_pending = False
        context.set_fd_handler(fd, self._on_readable)

    def add_watch(
        self,
        dirpath: str,
        filename: str | None,
        callback: Callable[[list[FileEvent]], None],
        mask: int = DEFAULT_MASK,
    ) -> int:
        """Watch ``dirpath``; ``callback`` gets the events about ``filename``.

        With ``filename`` ``None`` every event in the directory is passed
        on. Events about the directory itself (``IN_DELETE_SELF``,
        ``IN_MOVE_SELF``, ``IN_IGNORED``, ``IN_Q_OVERFLOW``) always are, with
        an empty name. Returns the inotify watch descriptor. Raises
        :class:`FileMonitorError` with QEMU's ``Unable to watch '%s': %s``.
        """
        lib: Any = _c_library()
        wd = lib.inotify_add_watch(self.fd, os.fsencode(dirpath), mask | IN_ONLYDIR)
        if wd < 0:
            err = _errno()
            raise FileMonitorError(err, f"Unable to watch '{dirpath}': {os.strerror(err)}")
        self._watches.setdefault(wd, []).append(_Watch(wd, filename, callback))
        return int(wd)

    def remove_watch(self, wd: int) -> None:
        """Stop watching the directory ``wd`` (every callback registered on it)."""
        if self._watches.pop(wd, None) is not None and self.fd >= 0:
            lib: Any = _c_library()
            lib.inotify_rm_watch(self.fd, wd)

    def _read(self) -> None:
        """Move every event the kernel has queued into the backlog."""
        while self.fd >= 0:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            pos = 0
            while pos + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, pos)
                raw = data[pos + _HEADER.size : pos + _HEADER.size + length]
                pos += _HEADER.size + length
                name = os.fsdecode(raw.rstrip(b"\0"))
                self._backlog.append((wd, FileEvent(mask, name)))

    def _on_readable(self) -> None:
        self._read()
        self._dispatch()

    def _dispatch(self) -> None:
        self._dispatch_pending = False
        backlog, self._backlog = self._backlog, []
        batches: dict[int, list[FileEvent]] = {}
        for wd, event in backlog:
            if event.mask & IN_Q_OVERFLOW:
                # Events were lost: tell every watch, as an event without a name.
                for known in self._watches:
                    batches.setdefault(known, []).append(event)
            else:
                batches.setdefault(wd, []).append(event)
        for wd, events in batches.items():
            for watch in list(self._watches.get(wd, ())):
                mine = [e for e in events if not e.name or watch.filename in (None, e.name)]
                if mine:
                    watch.callback(mine)
            if any(e.mask & IN_IGNORED for e in events):
                # The kernel dropped the watch (the directory went away).
                self._watches.pop(wd, None)

    def pending(self, filename: str | None = None) -> list[FileEvent]:
        """Events that happened since the current batch was read, not yet handed out.

        A callback can use this to learn whether the file changed again
        while it was acting on the batch (say, reading the file). The
        events are still delivered, on the loop's next iteration. With
        ``filename``, only events about it and about the directory itself.
        """
        self._read()
        if self._backlog and not self._dispatch_pending:
            self._dispatch_pending = True
            self.context.schedule(self._dispatch)
        return [
            event
            for _wd, event in self._backlog
            if filename is None or not event.name or event.name == filename
        ]

    def close(self) -> None:
        """Remove every watch and release the inotify descriptor."""
        if self.fd < 0:
            return
        self.context.set_fd_handler(self.fd, None)
        os.close(self.fd)
        self.fd = -1
        self._watches.clear()
        self._backlog.clear()
