"""``AioContext``: an event loop built like QEMU's ``util/aio-posix.c``.

One context runs in one thread. It offers what QEMU's offers:

* **fd handlers** -- a read and/or write callback per file descriptor,
  multiplexed with ``epoll``; a handler may also have a *poll* callback
  (``io_poll``) that checks memory without a system call (say, a
  virtqueue index) and returns True when there is work;
* **event notifiers** -- eventfds with such handlers
  (:meth:`AioContext.set_event_notifier`);
* **bottom halves** -- callbacks scheduled from any thread, run once on the
  loop's next iteration (the loop is woken through an eventfd);
* **timers** -- callbacks at a monotonic deadline;
* **adaptive polling** -- before blocking in ``epoll``, the loop busy-waits
  on the poll callbacks for up to ``poll_ns``, a window that grows and
  shrinks with QEMU's algorithm (:meth:`AioContext.adjust_polling`). As in
  QEMU with the epoll fd monitor, polling happens only while every handler
  has a poll callback. Unlike QEMU's, this poller holds a lock, the GIL, so
  every ``poll_yield_ns`` it yields (:mod:`qomhost.aio.gil`) to let another
  thread of the process (say, the one that writes the next request) run;
* **poll begin/end** -- a handler may also have ``io_poll_begin`` and
  ``io_poll_end``: the loop calls the first when it starts busy-polling and
  the second when it stops to block, so that the handler can tell its peer
  not to send notifications while they would be wasted (as virtio sets
  ``VRING_USED_F_NO_NOTIFY``). Polling stays started across iterations that
  keep finding work. After ``io_poll_end`` the loop polls every handler once
  more (QEMU's ``poll_set_started``): work published before the peer saw
  notifications re-enabled is found then, not left waiting for a kick that
  was never sent;
* a **thread pool** for blocking work (:meth:`AioContext.run_in_executor`),
  sized by ``thread-pool-min``/``thread-pool-max``.

The main loop is one ``AioContext``; each iothread runs another. A
callback that raises is logged and the loop goes on.
"""

from __future__ import annotations

import _thread
import itertools
import os
import select
import time

from qomhost.aio.gil import GilYield

# The main loop is created at every start-up: no typing, dataclasses,
# logging, threading or concurrent.futures here until they are needed.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable
    from typing import Any, TypeVar

    from qomhost.aio.threadpool import ThreadPool

    T = TypeVar("T")

__all__ = ["AioContext", "EventNotifier", "FdHandler", "Timer", "epoll_only"]

#: the first growth step of the polling window, as in QEMU
POLL_FIRST_STEP_NS = 4000
#: linux-aio's batch size when ``aio-max-batch`` is 0
DEFAULT_MAX_BATCH = 32
#: how often a busy-polling loop yields the GIL and the CPU (``poll_yield_ns``)
POLL_YIELD_NS = 4000


def epoll_only() -> bool:
    """The ``io_poll`` of an fd that only ``epoll`` can watch (a socket, a pipe).

    A handler without ``io_poll`` turns polling off for the whole context
    while it is registered, as QEMU's does; one with this callback lets the
    loop poll the others, and its fd is seen when a window ends or, while
    polling keeps finding work (the loop then skips its wait), by a
    non-blocking epoll once per ``poll-max-ns``. For fds whose events can
    wait that long: a control socket beside the rings it controls. The
    loop never calls it.
    """
    return False


class FdHandler:
    """Callbacks for one file descriptor.

    ``io_poll`` checks for work without a system call (True means progress
    is possible); ``io_poll_ready`` runs when it found work;
    ``io_poll_begin``/``io_poll_end`` bracket the loop's busy-polling;
    ``polling`` is True between the two calls.
    """

    __slots__ = (
        "fd",
        "io_poll",
        "io_poll_begin",
        "io_poll_end",
        "io_poll_ready",
        "on_read",
        "on_write",
        "polling",
    )

    def __init__(
        self,
        fd: int,
        on_read: Callable[[], None] | None,
        on_write: Callable[[], None] | None,
        io_poll: Callable[[], bool] | None = None,
        io_poll_ready: Callable[[], None] | None = None,
        io_poll_begin: Callable[[], None] | None = None,
        io_poll_end: Callable[[], None] | None = None,
    ) -> None:
        self.fd = fd
        self.on_read = on_read
        self.on_write = on_write
        self.io_poll = io_poll
        self.io_poll_ready = io_poll_ready
        self.io_poll_begin = io_poll_begin
        self.io_poll_end = io_poll_end
        self.polling = False

    def begin(self) -> None:
        """Call ``io_poll_begin`` unless polling already began for this handler."""
        if not self.polling:
            self.polling = True
            if self.io_poll_begin is not None:
                _call(self.io_poll_begin, "poll begin", self.fd)

    def end(self) -> None:
        """Call ``io_poll_end`` if polling began for this handler."""
        if self.polling:
            self.polling = False
            if self.io_poll_end is not None:
                _call(self.io_poll_end, "poll end", self.fd)


class Timer:
    """A one-shot callback at ``deadline`` (``time.monotonic_ns`` clock).

    Timers order by ``(deadline, seq)``.
    """

    __slots__ = ("callback", "cancelled", "deadline", "seq")

    def __init__(
        self, deadline: int, seq: int, callback: Callable[[], None], cancelled: bool = False
    ) -> None:
        self.deadline = deadline
        self.seq = seq
        self.callback = callback
        self.cancelled = cancelled

    def __lt__(self, other: Timer) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)

    def cancel(self) -> None:
        """Stop the timer from firing."""
        self.cancelled = True


class EventNotifier:
    """An eventfd, QEMU's ``EventNotifier``: one side sets, the other tests."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def set(self) -> None:
        """Signal the notifier (from any thread or process holding the fd)."""
        os.eventfd_write(self.fd, 1)

    def test_and_clear(self) -> bool:
        """Whether it was set since the last call; clears it."""
        try:
            return os.eventfd_read(self.fd) > 0
        except BlockingIOError:
            return False

    def close(self) -> None:
        os.close(self.fd)


def _log_exception(what: str) -> None:
    """Log the exception being handled (call it from an ``except`` block)."""
    import logging  # only now: it is slow to import

    logging.getLogger("qomhost.aio").exception("%s raised", what)


def _call(callback: Callable[[], object], what: str, fd: int = -1) -> None:
    """Run a callback; an exception is logged, never fatal to the loop."""
    try:
        callback()
    except Exception:
        _log_exception(f"fd {fd} {what}" if fd >= 0 else what)


class AioContext:
    """An event loop for one thread. ``schedule``/``notify`` are safe from any thread."""

    def __init__(self, name: str = "main-loop") -> None:
        self.name = name
        self._epoll = select.epoll()
        self._handlers: dict[int, FdHandler] = {}
        self._poll_disable_cnt = 0
        #: handlers registered with :func:`epoll_only`, and the clock when
        #: epoll last looked at the fds (a loop that keeps finding work by
        #: polling skips the wait, so those fds are looked at explicitly)
        self._epoll_only_cnt = 0
        self._epolled_at = 0
        self._poll_handlers: list[FdHandler] = []
        #: (io_poll, io_poll_ready) of each handler in ``_poll_handlers``
        self._pollers: tuple[tuple[Callable[[], bool], Callable[[], None] | None], ...] = ()
        #: between the poll handlers' io_poll_begin and io_poll_end (QEMU's
        #: ``ctx->poll_started``)
        self._poll_started = False
        #: the clock when polling found work (0: it did not), for the window
        self._polled_at = 0
        #: io_poll_ready callbacks of work found by the poll after io_poll_end
        self._ready: list[Callable[[], None] | None] = []
        self._bh: list[Callable[[], None]] = []
        self._bh_lock = _thread.allocate_lock()
        self._timers: list[Timer] = []
        #: bumped by every change that a polling window kept open after
        #: finding work must not miss: a registration, a bottom half, a
        #: timer (see _try_poll); one comparison per answer instead of one
        #: per kind of change
        self._changes = 0
        self._seq = itertools.count()
        self._notify_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._notified = False
        # the loop's thread while it runs handlers (else 0): a bottom half it
        # schedules then needs no wake-up, as the loop looks at its bottom
        # halves before it waits (QEMU's aio_notify writes only while
        # ctx->notify_me says the loop may be waiting)
        self._dispatching = 0
        #: set by notify(); ends a busy-polling window at once, as the poll
        #: callback of QEMU's ctx->notifier does (``ctx->notified``)
        self._kicked = False
        self._epoll.register(self._notify_fd, select.EPOLLIN)
        #: adaptive polling state (QEMU's ctx->poll_ns and parameters)
        self.poll_ns = 0
        self.poll_max_ns = 0
        self.poll_grow = 0
        self.poll_shrink = 0
        #: while busy-polling, yield this often (ns; 0: never). Not a QEMU
        #: parameter: QEMU's poller holds no lock, but a Python one holds
        #: the GIL, and a thread of this process that the loop is waiting
        #: for (the one that will write the next request) could not run
        #: until the window ends. Yielding lets it run; the time it runs
        #: counts as waiting in the window arithmetic, so a contended GIL
        #: also shrinks the window.
        self.poll_yield_ns = POLL_YIELD_NS
        #: the yield: ``sched_yield()``, and a pause without the GIL while
        #: another thread is seen to need it (see :mod:`qomhost.aio.gil`)
        self.gil_yield = GilYield()
        self.aio_max_batch = 0
        self.thread_pool_min = 0
        self.thread_pool_max = 64
        self._pool: ThreadPool | None = None
        self.clock: Callable[[], int] = time.monotonic_ns
        #: the native id of the thread running this context, once known
        self.thread_id: int | None = None
        self._closed = False

    # --- registration -------------------------------------------------------
    def set_fd_handler(
        self,
        fd: int,
        on_read: Callable[[], None] | None,
        on_write: Callable[[], None] | None = None,
        io_poll: Callable[[], bool] | None = None,
        io_poll_ready: Callable[[], None] | None = None,
        *,
        io_poll_begin: Callable[[], None] | None = None,
        io_poll_end: Callable[[], None] | None = None,
    ) -> None:
        """Watch ``fd``; with both callbacks ``None`` the fd is forgotten.

        A handler without ``io_poll`` disables polling for the whole
        context while it is registered, because only a real wait can tell
        when its fd is ready (QEMU's ``poll_disable_cnt``).

        ``io_poll_begin`` runs when the loop starts busy-polling,
        ``io_poll_end`` when it stops polling to block (both are ignored
        without ``io_poll``). Between them the handler's peer need not
        notify the fd: the loop is reading the memory ``io_poll`` reads.
        ``io_poll_end`` must re-enable the notifications before it returns;
        the loop then calls ``io_poll`` once more, so that work published
        before the peer saw them re-enabled is not missed. The two always
        alternate, beginning with ``io_poll_begin``: a handler registered
        while the loop polls gets ``io_poll_begin`` at once, and one
        removed or replaced while the loop polls gets ``io_poll_end``
        (QEMU 7.2 skips both; later QEMU calls ``io_poll_end`` on removal,
        after a guest was found hanging with notifications left off).
        """
        mask = (select.EPOLLIN if on_read else 0) | (select.EPOLLOUT if on_write else 0)
        self._changes += 1
        old = self._handlers.pop(fd, None)
        if old is not None:
            self._forget(old)
            if mask:
                self._epoll.modify(fd, mask)
            else:
                self._epoll.unregister(fd)
        elif mask:
            self._epoll.register(fd, mask)
        if mask:
            handler = FdHandler(
                fd, on_read, on_write, io_poll, io_poll_ready, io_poll_begin, io_poll_end
            )
            self._handlers[fd] = handler
            if io_poll is None:
                self._poll_disable_cnt += 1
            elif io_poll is epoll_only:
                self._epoll_only_cnt += 1
            else:
                self._poll_handlers.append(handler)
                self._update_pollers()
                if self._poll_started:
                    handler.begin()

    def _forget(self, handler: FdHandler) -> None:
        if handler.io_poll is None:
            self._poll_disable_cnt -= 1
            return
        if handler.io_poll is epoll_only:
            self._epoll_only_cnt -= 1
            return
        self._poll_handlers.remove(handler)
        self._update_pollers()
        handler.end()
        if not self._poll_handlers:
            self._poll_started = False

    def _update_pollers(self) -> None:
        self._pollers = tuple(
            (handler.io_poll, handler.io_poll_ready)
            for handler in self._poll_handlers
            if handler.io_poll is not None
        )

    def set_event_notifier(
        self,
        notifier: EventNotifier,
        on_event: Callable[[], None] | None,
        io_poll: Callable[[], bool] | None = None,
        io_poll_ready: Callable[[], None] | None = None,
        *,
        io_poll_begin: Callable[[], None] | None = None,
        io_poll_end: Callable[[], None] | None = None,
    ) -> None:
        """Run ``on_event`` when ``notifier`` is set (``aio_set_event_notifier``).

        With ``io_poll``, the loop can notice work by polling, before the
        notifier is even set; ``io_poll_ready`` (default: ``on_event``)
        then runs. ``io_poll_begin``/``io_poll_end`` tell when the peer may
        skip setting the notifier (QEMU's ``aio_set_event_notifier_poll``;
        see :meth:`set_fd_handler`).
        """
        if on_event is None:
            self.set_fd_handler(notifier.fd, None)
            return

        def on_read() -> None:
            notifier.test_and_clear()
            on_event()

        self.set_fd_handler(
            notifier.fd,
            on_read,
            None,
            io_poll,
            io_poll_ready or on_event,
            io_poll_begin=io_poll_begin,
            io_poll_end=io_poll_end,
        )

    def schedule(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once in this context's thread (a bottom half)."""
        with self._bh_lock:
            self._bh.append(callback)
            self._changes += 1
            if self._notified:
                return
            self._notified = True
        if self._dispatching and self._dispatching == _thread.get_ident():
            return
        self.notify()

    def notify(self) -> None:
        """Wake the loop if it is blocked or busy-polling (``aio_notify``)."""
        self._kicked = True
        try:
            os.eventfd_write(self._notify_fd, 1)
        except OSError:  # closed while shutting down
            pass

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` after ``delay_s`` seconds (call from the loop's thread)."""
        import heapq

        timer = Timer(self.clock() + int(delay_s * 1e9), next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        self._changes += 1
        return timer

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``fn`` in this context's thread; a future for its result."""
        import concurrent.futures

        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self.schedule(run)
        return future

    # --- parameters ---------------------------------------------------------
    def set_poll_params(self, max_ns: int, grow: int, shrink: int) -> None:
        """Change the polling parameters; the window restarts from 0."""
        self.poll_max_ns = max_ns
        self.poll_grow = grow
        self.poll_shrink = shrink
        self.poll_ns = 0
        self.notify()

    def set_aio_params(self, max_batch: int) -> None:
        """Set ``aio-max-batch`` (0: the engine's default)."""
        self.aio_max_batch = max_batch
        self.notify()

    def batch_limit(self, default: int = DEFAULT_MAX_BATCH) -> int:
        """How many queued requests a batching handler takes at once."""
        return self.aio_max_batch or default

    def set_thread_pool_params(self, minimum: int, maximum: int) -> None:
        """Resize the worker pool. Raises ``ValueError`` for QEMU's bad pairs."""
        if minimum > maximum or maximum <= 0 or minimum < 0 or max(minimum, maximum) > 2**31 - 1:
            raise ValueError("bad thread-pool-min/thread-pool-max values")
        self.thread_pool_min = minimum
        self.thread_pool_max = maximum
        if self._pool is not None:
            self._pool.resize(minimum, maximum)

    def run_in_executor(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Run blocking ``fn(*args)`` on this context's worker pool."""
        if self._pool is None:
            from qomhost.aio.threadpool import ThreadPool

            self._pool = ThreadPool(self.name, self.thread_pool_min, self.thread_pool_max)
        return self._pool.submit(fn, *args)

    # --- the loop -----------------------------------------------------------
    def _timeout_ns(self) -> int:
        """-1 for no deadline, else ns until the next timer or bottom half."""
        if self._bh:
            return 0
        if not self._timers:
            return -1
        import heapq

        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return -1
        return max(0, self._timers[0].deadline - self.clock())

    def _try_poll(
        self, timeout_ns: int, start: int | None = None, keep: bool = False
    ) -> tuple[bool, int, int | None]:
        """QEMU's ``try_poll_mode``: busy-poll if the window allows, else stop polling.

        Returns (progress, what is left of ``timeout_ns``; 0 after progress,
        where the last window began: ``start`` unless ``keep`` began others)
        Work found while polling is dispatched at once -- its latency is
        what polling is for -- and :attr:`_polled_at` keeps the time of the
        last clock read, so that the window arithmetic, as QEMU's, counts
        polling but not dispatching. Work found by the poll after
        ``io_poll_end`` waits in :attr:`_ready` for :meth:`run_once`.

        The window is counted from ``start`` (default: now). Every
        ``poll_yield_ns`` of polling the loop yields the CPU and the GIL
        (:attr:`gil_yield`); time spent yielded counts as polling time, so
        QEMU's window arithmetic sees it as part of the wait.

        With ``keep``, work found while nothing else is due (no bottom half,
        timer, wake-up, or epoll-only fd to look at) does not end the call:
        a new window starts at once, as the next ``aio_poll`` would start
        it. That iteration would adjust nothing (the work came within the
        window) and dispatch nothing, so the sequence is QEMU's, without
        the trip out of and back into the loop.
        """
        pollers = self._pollers
        if not pollers:
            return False, timeout_ns, start
        max_ns = self.poll_ns if timeout_ns < 0 else min(timeout_ns, self.poll_ns)
        if max_ns and not self._poll_disable_cnt:
            if not self._poll_started:
                self._poll_set_started(True)
            clock = self.clock
            if start is None:
                start = clock()
            now = start
            deadline = start + max_ns
            yield_ns = self.poll_yield_ns
            next_yield = start + yield_ns if yield_ns > 0 else deadline
            gil_yield = self.gil_yield
            # One handler is the common case (a virtqueue on its iothread):
            # it gets a path of its own, without the loop over handlers and
            # the call through _call, which shortens the time between two
            # looks at the ring. As in QEMU, one poll per clock read.
            only = len(pollers) == 1
            only_poll, only_ready = pollers[0]
            # keep polling after a hit only if the window is all there is:
            # then no bottom half or timer is due and polling is on, and
            # until something changes (_changes) only a wake-up, the window's
            # parameters or an epoll-only fd's turn can end the iterations
            keep = keep and timeout_ns < 0
            changes = self._changes
            while True:
                if self._kicked:
                    # A bottom half, a parameter change or a stop request:
                    # stop polling and let the non-blocking wait collect the
                    # eventfd. QEMU's own notifier is a poll handler whose
                    # progress this is, so polling stays started.
                    self._kicked = False
                    return False, 0, start
                found = False
                if only:
                    try:  # free in 3.11 until raised
                        found = only_poll()
                    except Exception:
                        _log_exception("poll handler")
                    if found and only_ready is not None:
                        try:
                            only_ready()
                        except Exception:
                            _log_exception("poll ready handler")
                else:
                    for io_poll, io_poll_ready in pollers:
                        try:
                            found = io_poll()
                        except Exception:
                            _log_exception("poll handler")
                            found = False
                        if found:
                            if io_poll_ready is not None:
                                _call(io_poll_ready, "poll ready handler")
                            break
                if found:
                    poll_ns = self.poll_ns
                    if not (
                        keep
                        and poll_ns
                        and self._changes == changes
                        and not self._kicked
                        and not (self._epoll_only_cnt and self._epoll_only_due(now))
                    ):
                        self._polled_at = now
                        return True, 0, start
                    start = now = clock()
                    deadline = start + poll_ns
                    next_yield = start + yield_ns if yield_ns > 0 else deadline
                    continue
                now = clock()
                if now >= deadline:
                    break
                if now >= next_yield:
                    now = gil_yield(now, clock)
                    next_yield = now + yield_ns
            if timeout_ns > 0:
                timeout_ns = max(0, timeout_ns - (now - start))
        if self._poll_started:
            ready = self._poll_set_started(False)
            if ready:
                self._ready = ready
                return True, 0, start
        return False, timeout_ns, start

    def _epoll_only_due(self, now: int) -> bool:
        """Whether the epoll-only fds are to be looked at (once per poll-max-ns)."""
        return bool(self._epoll_only_cnt) and now - self._epolled_at >= self.poll_max_ns

    def _poll_set_started(self, started: bool) -> list[Callable[[], None] | None]:
        """Call every poll handler's ``io_poll_begin`` or ``io_poll_end``.

        After the ends, each handler is polled once more: a peer that
        published work just before it could see notifications re-enabled
        sent none, and nothing else would find that work before the next
        window. Returns the ``io_poll_ready`` callbacks of those that have
        work.
        """
        # Callbacks may add or remove handlers: a removed one gets its end
        # from set_fd_handler, an added one its begin if polling started.
        self._poll_started = started
        ready: list[Callable[[], None] | None] = []
        for handler in tuple(self._poll_handlers):
            if self._handlers.get(handler.fd) is not handler:
                continue  # removed by an earlier callback of this pass
            if started:
                handler.begin()
                continue
            handler.end()
            if handler.io_poll is None or self._handlers.get(handler.fd) is not handler:
                continue
            try:
                found = handler.io_poll()
            except Exception:
                _log_exception(f"fd {handler.fd} poll handler")
                continue
            if found:
                ready.append(handler.io_poll_ready)
        return ready

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

    def run_once(self, blocking: bool = True, keep_polling: bool = False) -> bool:
        """One iteration (``aio_poll``): wait, then dispatch. True if work was done.

        ``keep_polling`` is for a caller that calls this in a loop (an
        iothread, a backend program): while polling keeps finding work and
        nothing else is due, the iterations run without returning (see
        :meth:`_try_poll`), which shortens the time from one answer to the
        next look at the ring. A :meth:`notify` ends them.
        """
        polling = self.poll_max_ns != 0
        start = self.clock() if polling else None
        timeout = self._timeout_ns() if blocking else 0
        progress, timeout, window_start = self._try_poll(timeout, start, keep_polling)
        if start is not None:
            start = window_start
        events: list[tuple[int, int]] = []
        if not progress:
            wait = -1.0 if timeout < 0 else timeout / 1e9
            try:
                events = self._epoll.poll(wait)
            except InterruptedError:
                events = []
            if start is not None:
                self._epolled_at = start
        elif start is not None and self._epoll_only_due(start):
            # Polling keeps finding work, so the wait is skipped (as in QEMU);
            # the epoll-only fds are looked at anyway, once per poll-max-ns,
            # or a busy ring would starve its control socket.
            self._epolled_at = start
            events = self._epoll.poll(0)
        if start is not None:
            block_ns = (self._polled_at or self.clock()) - start
            if block_ns > self.poll_ns:  # else the sweet spot: nothing to adjust
                self.adjust_polling(block_ns)
        self._polled_at = 0
        self._dispatching = _thread.get_ident()
        try:
            if self._ready:
                ready, self._ready = self._ready, []
                for io_poll_ready in ready:
                    if io_poll_ready is not None:
                        _call(io_poll_ready, "poll ready handler")
            if events or self._bh or self._timers:
                progress = self._dispatch(events) or progress
        finally:
            self._dispatching = 0
        return progress

    def _dispatch(self, events: list[tuple[int, int]]) -> bool:
        progress = False
        for fd, mask in events:
            if fd == self._notify_fd:
                self._kicked = False
                try:
                    os.eventfd_read(self._notify_fd)
                except BlockingIOError:
                    pass
                continue
            handler = self._handlers.get(fd)
            if handler is None:
                continue
            if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and handler.on_read:
                _call(handler.on_read, "read handler", fd)
                progress = True
            # The read callback may have removed or replaced the handler.
            handler = self._handlers.get(fd)
            if handler is not None and mask & select.EPOLLOUT and handler.on_write:
                _call(handler.on_write, "write handler", fd)
                progress = True
        progress |= self._run_bottom_halves()
        if self._timers:
            import heapq

            now = self.clock()
            while self._timers and (self._timers[0].cancelled or self._timers[0].deadline <= now):
                timer = heapq.heappop(self._timers)
                if not timer.cancelled:
                    _call(timer.callback, "timer")
                    progress = True
        return progress

    def _run_bottom_halves(self) -> bool:
        with self._bh_lock:
            if not self._bh:
                self._notified = False
                return False
            pending, self._bh = self._bh, []
            self._notified = False
        for callback in pending:
            _call(callback, "bottom half")
        return True

    def close(self) -> None:
        """Release the epoll and eventfd descriptors and stop the worker pool."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown()
        self.gil_yield.close()
        self._epoll.close()
        os.close(self._notify_fd)
