"""``io_poll_begin``/``io_poll_end``: telling a peer when its notifications are wasted.

QEMU's ``util/aio-posix.c`` calls each poll handler's ``io_poll_begin`` when
the loop starts busy-polling and ``io_poll_end`` when it stops to block; a
virtqueue handler uses them to set and clear ``VRING_USED_F_NO_NOTIFY``, so
that the guest skips its kick while the device polls anyway. Polling stays
started across iterations that find work, ends when a window runs out, when
the iteration may not wait (``timeout`` 0) or when the window is 0, and
after the ends every handler is polled once more (``poll_set_started``):
work published just before the peer saw notifications re-enabled was never
kicked, and only that last poll finds it.

The loop runs on a fake clock (1 µs per read, so a 4 µs window is four
polls) with real eventfds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from qomhost.aio.context import AioContext, EventNotifier

WINDOW_NS = 4000


class StepClock:
    """A ``monotonic_ns`` stand-in that moves 1 µs on every read."""

    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        self.now += 1000
        return self.now


class Ring:
    """A queue in memory and its peer, which kicks only when asked to.

    The peer publishes a request (``publish``) and sets the notifier unless
    the loop said it polls (``no_kick``), as a virtio driver reads
    ``VRING_USED_F_NO_NOTIFY``. Everything the handler sees goes to ``log``.
    """

    def __init__(self, log: list[str], name: str = "") -> None:
        self.notifier = EventNotifier()
        self.log = log
        self.name = name
        self.head = 0
        self.tail = 0
        self.no_kick = False
        self.kicks = 0

    def publish(self) -> None:
        self.head += 1
        if not self.no_kick:
            self.kicks += 1
            self.notifier.set()

    def poll(self) -> bool:
        self.log.append(f"{self.name}poll")
        return self.head != self.tail

    def ready(self) -> None:
        self.tail = self.head
        self.log.append(f"{self.name}ready")

    def event(self) -> None:
        self.tail = self.head
        self.log.append(f"{self.name}event")

    def begin(self) -> None:
        self.log.append(f"{self.name}begin")
        self.no_kick = True

    def end(self) -> None:
        self.log.append(f"{self.name}end")
        self.no_kick = False

    def register(
        self,
        ctx: AioContext,
        begin: Callable[[], None] | None = None,
        end: Callable[[], None] | None = None,
    ) -> None:
        ctx.set_event_notifier(
            self.notifier,
            self.event,
            self.poll,
            self.ready,
            io_poll_begin=begin or self.begin,
            io_poll_end=end or self.end,
        )


def compact(log: list[str]) -> list[str]:
    """The log with each run of identical entries (a window's polls) kept once."""
    return [entry for i, entry in enumerate(log) if i == 0 or log[i - 1] != entry]


@pytest.fixture
def ctx() -> Iterator[AioContext]:
    context = AioContext("test")
    context.clock = StepClock()
    # grow 1 and shrink 1 pin the window wherever a test puts it
    context.set_poll_params(100_000, 1, 1)
    context.run_once(blocking=False)  # take the wake-up set_poll_params sent
    context.poll_ns = WINDOW_NS
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def log() -> list[str]:
    return []


@pytest.fixture
def ring(ctx: AioContext, log: list[str]) -> Iterator[Ring]:
    r = Ring(log)
    r.register(ctx)
    try:
        yield r
    finally:
        ctx.set_event_notifier(r.notifier, None)
        r.notifier.close()


def take(log: list[str]) -> list[str]:
    """The compacted log so far; the log starts over."""
    out = compact(log)
    log.clear()
    return out


# --- transitions -----------------------------------------------------------------------------


def test_polling_begins_once_and_stays_started_while_it_finds_work(
    ctx: AioContext, ring: Ring, log: list[str]
) -> None:
    ring.publish()  # notifications are on: the peer kicks
    assert ring.kicks == 1
    assert ctx.run_once() is True
    assert take(log) == ["begin", "poll", "ready"]
    # Still polling: the next request is not kicked, and no second begin.
    assert ring.no_kick is True
    ring.publish()
    assert ring.kicks == 1
    assert ctx.run_once() is True
    assert take(log) == ["poll", "ready"]
    # A window without work: end, one more poll, then the wait, which finds
    # the first (now stale) kick.
    assert ctx.run_once() is True
    assert take(log) == ["poll", "end", "poll", "event"]
    assert ring.no_kick is False


def test_a_window_of_four_polls_then_end_and_one_more(
    ctx: AioContext, ring: Ring, log: list[str]
) -> None:
    ring.notifier.set()  # so that the wait ends
    ctx.run_once()
    assert log == ["begin", "poll", "poll", "poll", "poll", "end", "poll", "event"]


def test_an_iteration_that_may_not_wait_ends_polling(
    ctx: AioContext, ring: Ring, log: list[str]
) -> None:
    ring.publish()
    ctx.run_once()
    assert take(log) == ["begin", "poll", "ready"]
    # timeout 0 leaves no window (QEMU: max_ns = 0): polling ends at once
    ctx.run_once(blocking=False)
    assert take(log) == ["end", "poll", "event"]
    # and a second one has nothing to end, nor polls
    ctx.run_once(blocking=False)
    assert take(log) == []


def test_a_zero_window_ends_polling(ctx: AioContext, ring: Ring, log: list[str]) -> None:
    ring.publish()
    ctx.run_once()
    assert take(log) == ["begin", "poll", "ready"]
    ctx.set_poll_params(0, 0, 0)  # qom-set poll-max-ns 0; wakes the loop
    ctx.run_once()
    assert take(log) == ["end", "poll", "event"]
    ring.publish()
    assert ring.kicks == 2
    ctx.run_once()
    assert take(log) == ["event"]


def test_a_wake_up_while_polling_keeps_polling_started(ctx: AioContext, log: list[str]) -> None:
    r = Ring(log)
    polls = 0

    def poll_then_notify() -> bool:
        nonlocal polls
        polls += 1
        if polls == 2:
            ctx.notify()  # another thread's aio_notify, in the middle of the window
        return r.poll()

    ctx.set_event_notifier(
        r.notifier, r.event, poll_then_notify, r.ready, io_poll_begin=r.begin, io_poll_end=r.end
    )
    try:
        r.head = 1
        ctx.run_once()
        assert take(log) == ["begin", "poll", "ready"]
        assert ctx.run_once() is False
        # QEMU's own notifier is a poll handler that made progress: no end
        assert take(log) == ["poll"] and r.no_kick is True
    finally:
        ctx.set_event_notifier(r.notifier, None)
        r.notifier.close()


def test_a_bottom_half_ends_polling(ctx: AioContext, ring: Ring, log: list[str]) -> None:
    ring.head = 1
    ctx.run_once()
    take(log)
    ran: list[str] = []
    # a scheduled bottom half leaves no time to wait (QEMU: timeout 0, max_ns 0)
    ctx.schedule(lambda: ran.append("bh"))
    assert ctx.run_once() is True
    assert ran == ["bh"]
    assert take(log) == ["end", "poll"] and ring.no_kick is False


# --- the lost wake-up ------------------------------------------------------------------------


def test_work_published_just_before_notifications_return_is_found(
    ctx: AioContext, ring: Ring, log: list[str]
) -> None:
    """The peer publishes after the window's last poll but still sees
    ``no_kick``: no kick comes. The poll after ``io_poll_end`` finds it;
    without that poll the loop would block until the watchdog's notify."""

    def end_racing_the_peer() -> None:
        if ring.head == 0:
            ring.publish()  # too late for the window, too early to kick
        ring.end()

    ctx.set_event_notifier(ring.notifier, None)
    ring.register(ctx, end=end_racing_the_peer)
    watchdog = threading.Timer(5, ctx.notify)
    watchdog.start()
    try:
        start = time.monotonic()
        assert ctx.run_once() is True
        assert time.monotonic() - start < 4
    finally:
        watchdog.cancel()
    assert ring.kicks == 0
    assert ring.notifier.test_and_clear() is False
    assert take(log) == ["begin", "poll", "end", "poll", "ready"]
    assert ring.tail == ring.head == 1


def test_a_peer_thread_that_skips_kicks_is_always_answered() -> None:
    """Real clock, real thread: the peer publishes, then kicks only if the
    loop is not polling; every request must be answered, whichever
    transition it lands on (a lost one would time out)."""
    ctx = AioContext("peer-test")
    ctx.set_poll_params(20_000, 0, 0)
    log: list[str] = []
    ring = Ring(log)
    answered = threading.Semaphore(0)
    stop = False

    def ready() -> None:
        while ring.tail != ring.head:
            ring.tail += 1
            answered.release()

    def event() -> None:
        ready()

    ctx.set_event_notifier(
        ring.notifier,
        event,
        lambda: ring.head != ring.tail,
        ready,
        io_poll_begin=ring.begin,
        io_poll_end=ring.end,
    )

    def loop() -> None:
        while not stop:
            ctx.run_once()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        for i in range(600):
            ring.publish()
            assert answered.acquire(timeout=5), f"request {i} was never answered"
            if i % 3 == 0:
                time.sleep(50e-6)  # let some windows run out
    finally:
        stop = True
        ctx.notify()
        thread.join(10)
        ctx.set_event_notifier(ring.notifier, None)
        ring.notifier.close()
        ctx.close()
    assert not thread.is_alive()


# --- handlers without the callbacks, and several handlers --------------------------------------


def test_handlers_without_the_callbacks_poll_as_before(ctx: AioContext, log: list[str]) -> None:
    plain = Ring(log, "plain-")
    # the positional form every existing caller uses
    ctx.set_event_notifier(plain.notifier, plain.event, plain.poll, plain.ready)
    with_callbacks = Ring(log, "cb-")
    with_callbacks.register(ctx)
    try:
        plain.publish()
        assert ctx.run_once() is True
        assert take(log) == ["cb-begin", "plain-poll", "plain-ready"]
        plain.notifier.set()
        ctx.run_once()
        # every handler is polled once more after the ends, as in QEMU
        polls = ["plain-poll", "cb-poll"]
        last = ["plain-poll", "cb-end", "cb-poll"]
        assert take(log) == [*polls * 4, *last, "plain-event"]
    finally:
        for r in (plain, with_callbacks):
            ctx.set_event_notifier(r.notifier, None)
            r.notifier.close()


def test_begin_and_end_without_io_poll_are_never_called(ctx: AioContext, log: list[str]) -> None:
    r = Ring(log)
    ctx.set_event_notifier(r.notifier, r.event, io_poll_begin=r.begin, io_poll_end=r.end)
    try:
        r.publish()
        ctx.run_once()
        assert take(log) == ["event"]
    finally:
        ctx.set_event_notifier(r.notifier, None)
        r.notifier.close()


def test_registration_and_removal_while_polling_keep_begin_and_end_paired(
    ctx: AioContext, log: list[str]
) -> None:
    a, b, c = Ring(log, "a-"), Ring(log, "b-"), Ring(log, "c-")
    a.register(ctx)
    b.register(ctx)
    try:
        a.publish()
        ctx.run_once()
        assert take(log) == ["a-begin", "b-begin", "a-poll", "a-ready"]
        # a handler added while the loop polls begins at once
        c.register(ctx)
        assert take(log) == ["c-begin"]
        # a removed one ends (later QEMU does this; 7.2 left it polling)
        ctx.set_event_notifier(a.notifier, None)
        assert take(log) == ["a-end"] and a.no_kick is False
        # a replaced one ends, and the new registration begins
        b.register(ctx)
        assert take(log) == ["b-end", "b-begin"]
        ctx.run_once(blocking=False)
        assert take(log) == ["c-end", "c-poll", "b-end", "b-poll"]
    finally:
        for r in (a, b, c):
            ctx.set_event_notifier(r.notifier, None)
            r.notifier.close()
    assert take(log) == []  # nothing was polling any more


def test_removing_the_last_poll_handler_stops_polling(ctx: AioContext, log: list[str]) -> None:
    a = Ring(log, "a-")
    a.register(ctx)
    a.publish()
    ctx.run_once()
    ctx.set_event_notifier(a.notifier, None)
    assert take(log) == ["a-begin", "a-poll", "a-ready", "a-end"]
    # a new handler is not begun until the loop polls again
    b = Ring(log, "b-")
    b.register(ctx)
    try:
        assert take(log) == []
        b.publish()
        ctx.run_once()
        assert take(log) == ["b-begin", "b-poll", "b-ready"]
    finally:
        ctx.set_event_notifier(b.notifier, None)
        a.notifier.close()
        b.notifier.close()


# --- failures ---------------------------------------------------------------------------------


def _boom() -> None:
    raise RuntimeError("boom")


def test_a_failing_begin_is_logged_and_polling_goes_on(
    ctx: AioContext, ring: Ring, log: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    ctx.set_event_notifier(ring.notifier, None)
    ring.register(ctx, begin=_boom)
    ring.head = 1  # work waiting, no kick
    with caplog.at_level(logging.ERROR, logger="qomhost.aio"):
        assert ctx.run_once() is True
    assert take(log) == ["poll", "ready"]
    assert "poll begin raised" in caplog.text and "boom" in caplog.text


def test_a_failing_end_is_logged_and_the_last_poll_still_runs(
    ctx: AioContext, ring: Ring, log: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    def end_then_fail() -> None:
        ring.head += 1  # published while notifications were off: no kick
        ring.end()
        raise RuntimeError("boom")

    ctx.set_event_notifier(ring.notifier, None)
    ring.register(ctx, end=end_then_fail)
    with caplog.at_level(logging.ERROR, logger="qomhost.aio"):
        assert ctx.run_once() is True
    assert take(log) == ["begin", "poll", "end", "poll", "ready"]
    assert "poll end raised" in caplog.text
    # the loop goes on: the next request begins polling again
    ring.head += 1
    assert ctx.run_once() is True
    assert take(log) == ["begin", "poll", "ready"]


def test_a_failing_poll_is_logged_and_the_loop_goes_on(
    ctx: AioContext, ring: Ring, log: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def poll_fails_once() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return ring.poll()

    ctx.set_event_notifier(ring.notifier, None)
    ctx.set_event_notifier(
        ring.notifier,
        ring.event,
        poll_fails_once,
        ring.ready,
        io_poll_begin=ring.begin,
        io_poll_end=ring.end,
    )
    ring.head = 1
    with caplog.at_level(logging.ERROR, logger="qomhost.aio"):
        assert ctx.run_once() is True
    assert take(log) == ["begin", "poll", "ready"]
    assert "poll handler raised" in caplog.text


# --- fds only epoll can watch ------------------------------------------------------------------


def test_an_epoll_only_handler_lets_the_loop_poll_the_others(
    ctx: AioContext, ring: Ring, log: list[str]
) -> None:
    """A socket beside a ring: epoll_only keeps polling on, and the socket is served."""
    import os

    from qomhost.aio.context import epoll_only

    read_fd, write_fd = os.pipe()
    seen: list[bytes] = []
    try:
        ctx.set_fd_handler(read_fd, lambda: seen.append(os.read(read_fd, 100)), io_poll=epoll_only)
        ring.publish()
        assert ctx.run_once() is True
        # polled, not woken: the ring's handler is still a poller
        assert take(log) == ["begin", "poll", "ready"]
        os.write(write_fd, b"x")
        ctx.run_once()
        # the window ran out (the pipe is never polled), then epoll saw it,
        # with the kick the first request brought before polling began
        assert take(log) == ["poll", "end", "poll", "event"]
        assert seen == [b"x"]
        # a handler without io_poll turns polling off for the context
        ctx.set_fd_handler(read_fd, lambda: seen.append(os.read(read_fd, 100)))
        ring.publish()
        assert ring.kicks == 2  # not polling: the peer kicked
        ctx.run_once()
        assert take(log) == ["event"]
    finally:
        ctx.set_fd_handler(read_fd, None)
        os.close(read_fd)
        os.close(write_fd)


def test_a_ring_that_always_has_work_does_not_starve_an_epoll_only_fd(
    ctx: AioContext, ring: Ring, log: list[str]
) -> None:
    """Polling that keeps finding work skips the wait (as QEMU's does); the
    epoll-only fds are looked at anyway once per poll-max-ns (100 µs here,
    a hundred reads of the fake clock)."""
    import os

    from qomhost.aio.context import epoll_only

    read_fd, write_fd = os.pipe()
    seen: list[bytes] = []
    try:
        ctx.set_fd_handler(read_fd, lambda: seen.append(os.read(read_fd, 100)), io_poll=epoll_only)
        os.write(write_fd, b"x")
        iterations = 0
        while not seen:
            ring.publish()
            assert ctx.run_once() is True
            iterations += 1
            assert iterations <= 100, "the fd was never looked at"
        assert seen == [b"x"]
        assert "end" not in log  # polling never stopped
    finally:
        ctx.set_fd_handler(read_fd, None)
        os.close(read_fd)
        os.close(write_fd)


# --- keep_polling: the iterations of a loop without the trip out of run_once -------------------


class EagerRing(Ring):
    """A peer that publishes its next request as soon as one is answered,
    ``left`` times; with the last it also sets the notifier, so that the
    loop's wait after the window returns."""

    def __init__(self, log: list[str], left: int) -> None:
        super().__init__(log)
        self.left = left

    def ready(self) -> None:
        super().ready()
        if self.left:
            self.left -= 1
            self.publish()
            if not self.left:
                self.notifier.set()


@pytest.mark.parametrize("keep", [False, True])
def test_keep_polling_goes_through_the_same_iterations(
    ctx: AioContext, log: list[str], keep: bool
) -> None:
    """The same polls, answers, window and end either way; with keep_polling
    one call runs them all, without it one call per answer."""
    ring = EagerRing(log, 3)
    ring.register(ctx)
    try:
        ring.publish()
        calls = 0
        while ring.left or ring.head != ring.tail:
            ctx.run_once(keep_polling=keep)
            calls += 1
        assert calls == (1 if keep else 4)
        if not keep:
            ctx.run_once()  # the window with nothing in it
        window = ["poll"] * (WINDOW_NS // 1000)
        assert log == ["begin", *["poll", "ready"] * 4, *window, "end", "poll", "event"]
        assert ctx.poll_ns == WINDOW_NS  # grow 1 and shrink 1: nothing moved it
    finally:
        ctx.set_event_notifier(ring.notifier, None)
        ring.notifier.close()


def test_keep_polling_returns_for_a_bottom_half(ctx: AioContext, log: list[str]) -> None:
    ring = EagerRing(log, 3)
    ran: list[int] = []

    def ready() -> None:
        EagerRing.ready(ring)
        if ring.left == 1:
            ctx.schedule(lambda: ran.append(ring.left))

    ring.ready = ready  # type: ignore[method-assign]
    ring.register(ctx)
    try:
        ring.publish()
        assert ctx.run_once(keep_polling=True) is True
        # two answers, then the bottom half ended the iterations and ran
        assert log.count("ready") == 2
        assert ran == [1]
    finally:
        ctx.set_event_notifier(ring.notifier, None)
        ring.notifier.close()


@pytest.mark.parametrize("change", ["timer", "handler", "handler without io_poll"])
def test_keep_polling_returns_for_a_change_made_by_a_handler(
    ctx: AioContext, log: list[str], change: str
) -> None:
    """A timer or a registration made by the answer ends the iterations, so
    that the next one sees it (a timeout, another handler, polling off)."""
    ring = EagerRing(log, 3)
    other = EventNotifier()
    fired: list[str] = []

    def ready() -> None:
        EagerRing.ready(ring)
        if ring.left != 1:
            return
        if change == "timer":
            ctx.call_later(0, lambda: fired.append("timer"))
        elif change == "handler":
            ctx.set_event_notifier(other, lambda: None, io_poll=lambda: False)
        else:
            ctx.set_event_notifier(other, lambda: None)

    ring.ready = ready  # type: ignore[method-assign]
    ring.register(ctx)
    try:
        ring.publish()
        assert ctx.run_once(keep_polling=True) is True
        # two answers, then the change ended the iterations
        assert log.count("ready") == 2
        if change == "timer":
            assert fired == ["timer"]
    finally:
        ctx.set_event_notifier(other, None)
        other.close()
        ctx.set_event_notifier(ring.notifier, None)
        ring.notifier.close()
