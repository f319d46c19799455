"""``AioContext``: an event loop built like QEMU's ``util/aio-posix.c``.

One context runs in one thread. It offers what QEMU's offers:

* **fd handlers** -- a read and/or write callback per file descriptor,
  multiplexed with ``epoll``;
* **bottom halves** -- callbacks scheduled from any thread, run once on the
  loop's next iteration (the loop is woken through an eventfd);
* **timers** -- callbacks at a monotonic deadline;
* **poll handlers** -- callables that check memory without a system call
  (say, a virtqueue index); they are run while the loop busy-waits for at
  most ``poll_ns``, before it blocks in ``epoll``. The window adapts with
  QEMU's algorithm (see :meth:`AioContext.adjust_polling`).

The main loop is one ``AioContext``; each iothread runs another.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["AioContext", "FdHandler", "PollHandler", "Timer"]

log = logging.getLogger("qomhost.aio")

#: the first growth step of the polling window, as in QEMU
POLL_FIRST_STEP_NS = 4000


@dataclass(eq=False)
class FdHandler:
    """Callbacks for one file descriptor."""

    fd: int
    on_read: Callable[[], None] | None
    on_write: Callable[[], None] | None


@dataclass(eq=False)
class PollHandler:
    """A check that needs no system call; returns True when it made progress."""

    poll: Callable[[], bool]
    on_ready: Callable[[], None]


@dataclass(order=True)
class Timer:
    """A one-shot callback at ``deadline`` (``time.monotonic_ns`` clock)."""

    deadline: int
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        """Stop the timer from firing."""
        self.cancelled = True


class AioContext:
    """An event loop for one thread. Safe to call ``schedule`` from any thread."""

    def __init__(self, name: str = "main-loop") -> None:
        self.name = name
        self._epoll = select.epoll()
        self._handlers: dict[int, FdHandler] = {}
        self._bh: deque[Callable[[], None]] = deque()
        self._bh_lock = threading.Lock()
        self._timers: list[Timer] = []
        self._seq = itertools.count()
        self._notify_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._notified = False
        self._epoll.register(self._notify_fd, select.EPOLLIN)
        self._poll_handlers: list[PollHandler] = []
        #: adaptive polling state (QEMU's ctx->poll_ns and parameters)
        self.poll_ns = 0
        self.poll_max_ns = 0
        self.poll_grow = 0
        self.poll_shrink = 0
        self.aio_max_batch = 0
        self.clock: Callable[[], int] = time.monotonic_ns
        self.thread_id: int | None = None
        self._closed = False

    # --- registration -------------------------------------------------------
    def set_fd_handler(
        self,
        fd: int,
        on_read: Callable[[], None] | None,
        on_write: Callable[[], None] | None = None,
    ) -> None:
        """Watch ``fd``; with both callbacks ``None`` the fd is forgotten."""
        mask = (select.EPOLLIN if on_read else 0) | (select.EPOLLOUT if on_write else 0)
        if fd in self._handlers:
            if mask:
                self._epoll.modify(fd, mask)
                self._handlers[fd] = FdHandler(fd, on_read, on_write)
            else:
                self._epoll.unregister(fd)
                del self._handlers[fd]
        elif mask:
            self._epoll.register(fd, mask)
            self._handlers[fd] = FdHandler(fd, on_read, on_write)

    def add_poll_handler(self, handler: PollHandler) -> None:
        """Run ``handler.poll`` while the loop polls; ``on_ready`` on progress."""
        self._poll_handlers.append(handler)

    def remove_poll_handler(self, handler: PollHandler) -> None:
        self._poll_handlers.remove(handler)

    def schedule(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once in this context's thread (a bottom half)."""
        with self._bh_lock:
            self._bh.append(callback)
            if self._notified:
                return
            self._notified = True
        self.notify()

    def notify(self) -> None:
        """Wake the loop if it is blocked (``aio_notify``)."""
        try:
            os.eventfd_write(self._notify_fd, 1)
        except OSError:  # closed while shutting down
            pass

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` after ``delay_s`` seconds (call from the loop's thread)."""
        timer = Timer(self.clock() + int(delay_s * 1e9), next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def set_poll_params(self, max_ns: int, grow: int, shrink: int) -> None:
        """Change the polling parameters; the window restarts from 0."""
        self.poll_max_ns = max_ns
        self.poll_grow = grow
        self.poll_shrink = shrink
        self.poll_ns = 0
        self.notify()

    # --- the loop -----------------------------------------------------------
    def _timeout_ns(self) -> int:
        """-1 for no deadline, else ns until the next timer or bottom half."""
        if self._bh:
            return 0
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return -1
        return max(0, self._timers[0].deadline - self.clock())

    def _try_poll(self, timeout_ns: int) -> tuple[bool, int]:
        """Busy-poll for up to ``min(timeout, poll_ns)``; returns (progress, timeout)."""
        if not self._poll_handlers or self.poll_ns == 0 or timeout_ns == 0:
            return False, timeout_ns
        max_ns = self.poll_ns if timeout_ns < 0 else min(timeout_ns, self.poll_ns)
        start = self.clock()
        while True:
            for handler in self._poll_handlers:
                if handler.poll():
                    handler.on_ready()
                    return True, 0
            elapsed = self.clock() - start
            if elapsed >= max_ns:
                break
        if timeout_ns > 0:
            timeout_ns = max(0, timeout_ns - elapsed)
        return False, timeout_ns

    def adjust_polling(self, block_ns: int) -> None:
        """QEMU's adaptive polling rule, applied after each wait.

        Grow the window when the wait ended after the window but within
        ``poll_max_ns``; shrink it when the wait was longer than
        ``poll_max_ns``; leave it alone in the sweet spot.
        """
        if self.poll_max_ns == 0:
            return
        if block_ns <= self.poll_ns:
            return
        if block_ns > self.poll_max_ns:
            self.poll_ns = self.poll_ns // self.poll_shrink if self.poll_shrink else 0
        elif self.poll_ns < self.poll_max_ns and block_ns < self.poll_max_ns:
            grow = self.poll_grow or 2
            grown = self.poll_ns * grow if self.poll_ns else POLL_FIRST_STEP_NS
            self.poll_ns = min(grown, self.poll_max_ns)

    def run_once(self, blocking: bool = True) -> bool:
        """One iteration (``aio_poll``): wait, then dispatch. True if work was done."""
        start = self.clock() if self.poll_max_ns else 0
        timeout = self._timeout_ns() if blocking else 0
        progress, timeout = self._try_poll(timeout)
        events: list[tuple[int, int]] = []
        if timeout != 0 or not progress:
            wait = -1.0 if timeout < 0 else timeout / 1e9
            try:
                events = self._epoll.poll(wait)
            except InterruptedError:
                events = []
        if self.poll_max_ns:
            self.adjust_polling(self.clock() - start)
        return self._dispatch(events) or progress

    def _dispatch(self, events: list[tuple[int, int]]) -> bool:
        progress = False
        for fd, mask in events:
            if fd == self._notify_fd:
                try:
                    os.eventfd_read(self._notify_fd)
                except BlockingIOError:
                    pass
                continue
            handler = self._handlers.get(fd)
            if handler is None:
                continue
            if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and handler.on_read:
                handler.on_read()
                progress = True
            # The read callback may have removed or replaced the handler.
            handler = self._handlers.get(fd)
            if handler is not None and mask & select.EPOLLOUT and handler.on_write:
                handler.on_write()
                progress = True
        progress |= self._run_bottom_halves()
        now = self.clock()
        while self._timers and (self._timers[0].cancelled or self._timers[0].deadline <= now):
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()
                progress = True
        return progress

    def _run_bottom_halves(self) -> bool:
        with self._bh_lock:
            if not self._bh:
                self._notified = False
                return False
            pending, self._bh = self._bh, deque()
            self._notified = False
        for callback in pending:
            callback()
        return True

    def close(self) -> None:
        """Release the epoll and eventfd descriptors."""
        if self._closed:
            return
        self._closed = True
        self._epoll.close()
        os.close(self._notify_fd)
