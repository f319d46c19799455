"""``iothread`` and ``main-loop``: event loops that work can be placed on.

Both derive from ``event-loop-base``, which owns ``aio-max-batch``,
``thread-pool-min`` and ``thread-pool-max``. An ``iothread`` is a real OS
thread running its own :class:`~qomhost.aio.context.AioContext` with
QEMU's adaptive polling (``poll-max-ns``, ``poll-grow``, ``poll-shrink``);
``main-loop`` tunes the host's main context and can exist only once.

Setting a property at run time reaches the running loop at once, as in
QEMU: any ``poll-*`` change restarts the polling window from zero. A
thread-pool value the running loop refuses is not kept (QEMU 7.2 keeps
it in the object; see ``docs/compatibility.md``).

Work is placed on an iothread with :meth:`IOThread.attach`; while anything
is attached, ``object-del`` refuses to delete it (QEMU 7.2 allows it and
leaves the user dangling; see ``docs/compatibility.md``).

Library use::

    io = host.add_object("iothread", "io1", poll_max_ns=100000)
    io.context.submit(lambda: 42).result()     # runs in the iothread
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from qomhost.aio.context import AioContext
from qomhost.errors import ObjectError
from qomhost.qapi.schema import INT64, Member
from qomhost.qom.object import Object, ObjectProperty

__all__ = ["IOTHREAD_POLL_MAX_NS_DEFAULT", "EventLoopBase", "IOThread", "MainLoop"]

log = logging.getLogger("qomhost.iothread")

#: QEMU's default polling window limit on POSIX hosts
IOTHREAD_POLL_MAX_NS_DEFAULT = 32768
#: QEMU's default thread-pool-max
THREAD_POOL_MAX_DEFAULT = 64
INT64_MAX = 2**63 - 1


def _int64_param(name: str, attr: str, apply: str) -> ObjectProperty:
    """An int64 property that rejects negatives, stores, then applies.

    If the running loop refuses the new value (a bad thread-pool pair),
    the previous value is put back. QEMU 7.2 keeps the rejected value in
    the object, where ``qom-get`` shows it and where it makes every later
    set of ``aio-max-batch`` fail too (``docs/compatibility.md``).
    """

    def get(obj: Any) -> object:
        return getattr(obj, attr)

    def set_(obj: Any, value: object) -> None:
        assert isinstance(value, int)
        if value < 0:
            raise ObjectError(f"{name} value must be in range [0, {INT64_MAX}]")
        old = getattr(obj, attr)
        setattr(obj, attr, value)
        try:
            getattr(obj, apply)()
        except ObjectError:
            setattr(obj, attr, old)
            raise

    return ObjectProperty(name, "int", getter=get, setter=set_, kind=INT64)


class EventLoopBase(Object):
    """``event-loop-base``: batch size and worker-pool bounds of a loop."""

    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("aio-max-batch", INT64),
        Member("thread-pool-min", INT64),
        Member("thread-pool-max", INT64),
    )

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.aio_max_batch = 0
        self.thread_pool_min = 0
        self.thread_pool_max = THREAD_POOL_MAX_DEFAULT
        #: the loop, once the object is complete
        self.context: AioContext | None = None

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        return [
            _int64_param("aio-max-batch", "aio_max_batch", "update_params"),
            _int64_param("thread-pool-min", "thread_pool_min", "update_params"),
            _int64_param("thread-pool-max", "thread_pool_max", "update_params"),
        ]

    def update_params(self) -> None:
        """Apply batch and pool settings to the running loop (none yet: no-op)."""
        if self.context is None:
            return
        self.context.set_aio_params(self.aio_max_batch)
        try:
            self.context.set_thread_pool_params(self.thread_pool_min, self.thread_pool_max)
        except ValueError as exc:
            raise ObjectError(str(exc)) from None


class IOThread(EventLoopBase):
    """``iothread``: an OS thread running its own event loop."""

    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("poll-max-ns", INT64),
        Member("poll-grow", INT64),
        Member("poll-shrink", INT64),
    )

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.poll_max_ns = IOTHREAD_POLL_MAX_NS_DEFAULT
        self.poll_grow = 0
        self.poll_shrink = 0
        self.thread: threading.Thread | None = None
        self.thread_id = -1
        self._stopping = False
        self._users: set[object] = set()
        self._started = threading.Event()

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        return [
            _int64_param("poll-max-ns", "poll_max_ns", "update_poll_params"),
            _int64_param("poll-grow", "poll_grow", "update_poll_params"),
            _int64_param("poll-shrink", "poll_shrink", "update_poll_params"),
        ]

    def update_poll_params(self) -> None:
        """Hand the poll parameters to the running loop; the window restarts."""
        if self.context is not None:
            self.context.set_poll_params(self.poll_max_ns, self.poll_grow, self.poll_shrink)

    def complete(self) -> None:
        context = AioContext(f"IO {self.name}")
        context.set_poll_params(self.poll_max_ns, self.poll_grow, self.poll_shrink)
        context.set_aio_params(self.aio_max_batch)
        try:
            context.set_thread_pool_params(self.thread_pool_min, self.thread_pool_max)
        except ValueError as exc:
            context.close()
            raise ObjectError(str(exc)) from None
        self.context = context
        self.thread = threading.Thread(target=self._run, name=f"IO {self.name}", daemon=True)
        self.thread.start()
        # As QEMU does, wait until the thread has published its id.
        self._started.wait()

    def _run(self) -> None:
        context = self.context
        assert context is not None
        self.thread_id = threading.get_native_id()
        context.thread_id = self.thread_id
        self._started.set()
        while not self._stopping:
            context.run_once(keep_polling=True)

    # --- placing work -------------------------------------------------------
    def attach(self, user: object) -> AioContext:
        """Place ``user`` on this iothread; returns the loop to register on."""
        assert self.context is not None
        self._users.add(user)
        return self.context

    def detach(self, user: object) -> None:
        """``user`` no longer runs on this iothread."""
        self._users.discard(user)

    def can_be_deleted(self) -> bool:
        return not self._users

    def finalize(self) -> None:
        """Stop the loop, join the thread, release the context."""
        context, thread = self.context, self.thread
        if context is None or thread is None:
            return
        self._stopping = True
        context.notify()
        if thread is not threading.current_thread():
            thread.join()
        context.close()
        self.context = None
        self.thread = None

    def info(self) -> dict[str, object]:
        """This iothread's ``query-iothreads`` entry."""
        return {
            "id": self.name,
            "thread-id": self.thread_id,
            "poll-max-ns": self.poll_max_ns,
            "poll-grow": self.poll_grow,
            "poll-shrink": self.poll_shrink,
            "aio-max-batch": self.aio_max_batch,
        }


class MainLoop(EventLoopBase):
    """``main-loop``: the host's main loop, tuned as an object; only one may exist."""

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        #: set by the host before any property: its main loop, and a way
        #: to tell whether another ``main-loop`` object already exists
        self.main_context: AioContext | None = None
        self.another_exists: Callable[[], bool] = lambda: False

    def update_params(self) -> None:
        # Unlike an iothread's, the main loop exists before the object is
        # complete, so every set is applied (and checked) at once.
        self.context = self.main_context
        super().update_params()

    def complete(self) -> None:
        if self.another_exists():
            raise ObjectError("only one main-loop instance allowed")
        self.update_params()

    def can_be_deleted(self) -> bool:
        return False
