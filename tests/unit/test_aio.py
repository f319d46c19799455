"""``AioContext``: fd handlers, bottom halves, timers and QEMU's adaptive polling.

The polling rule is QEMU 7.2's ``aio_poll`` (``util/aio-posix.c``): after
each wait of ``block_ns``, the window ``poll_ns`` stays put when the wait
was within it, is shrunk (divided by ``poll-shrink``, or reset to 0) when
the wait was longer than ``poll-max-ns``, and otherwise grows (first to
4000 ns, then times ``poll-grow``, 2 by default) up to ``poll-max-ns``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator

import pytest

from qomhost.aio.context import POLL_FIRST_STEP_NS, AioContext, EventNotifier
from qomhost.aio.gil import GilYield, SchedStat


class StepClock:
    """A ``monotonic_ns`` stand-in: a fixed time that moves only when told,
    or by ``step`` on every read."""

    def __init__(self, step: int = 0) -> None:
        self.now = 1_000_000_000
        self.step = step

    def __call__(self) -> int:
        self.now += self.step
        return self.now


@pytest.fixture
def ctx() -> Iterator[AioContext]:
    context = AioContext("test")
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


# --- fd handlers -----------------------------------------------------------------------------


def test_read_handler_on_a_pipe(ctx: AioContext, pipe: tuple[int, int]) -> None:
    r, w = pipe
    got: list[bytes] = []
    ctx.set_fd_handler(r, lambda: got.append(os.read(r, 100)))
    assert ctx.run_once(blocking=False) is False
    assert got == []
    os.write(w, b"hello")
    assert ctx.run_once() is True
    assert got == [b"hello"]
    # forgotten handlers are not called
    ctx.set_fd_handler(r, None)
    os.write(w, b"more")
    assert ctx.run_once(blocking=False) is False
    assert got == [b"hello"]
    assert os.read(r, 100) == b"more"


def test_write_handler(ctx: AioContext, pipe: tuple[int, int]) -> None:
    _r, w = pipe
    calls: list[str] = []
    ctx.set_fd_handler(w, None, lambda: calls.append("writable"))
    assert ctx.run_once(blocking=False) is True
    assert calls == ["writable"]
    ctx.set_fd_handler(w, None, None)
    ctx.run_once(blocking=False)
    assert calls == ["writable"]


def test_handler_replaced_from_its_own_callback(ctx: AioContext, pipe: tuple[int, int]) -> None:
    r, w = pipe
    calls: list[str] = []

    def second() -> None:
        calls.append("second")
        os.read(r, 100)

    def first() -> None:
        calls.append("first")
        os.read(r, 100)
        ctx.set_fd_handler(r, second)

    ctx.set_fd_handler(r, first)
    os.write(w, b"a")
    ctx.run_once()
    os.write(w, b"b")
    ctx.run_once()
    assert calls == ["first", "second"]


def test_hangup_is_delivered_as_readable(ctx: AioContext) -> None:
    r, w = os.pipe()
    got: list[bytes] = []
    try:
        ctx.set_fd_handler(r, lambda: got.append(os.read(r, 100)))
        os.close(w)
        ctx.run_once()
        assert got == [b""]
        ctx.set_fd_handler(r, None)
    finally:
        os.close(r)


# --- bottom halves -----------------------------------------------------------------------------


def test_bottom_half_runs_once_on_the_next_iteration(ctx: AioContext) -> None:
    calls: list[int] = []
    ctx.schedule(lambda: calls.append(1))
    ctx.schedule(lambda: calls.append(2))
    assert ctx.run_once() is True
    assert calls == [1, 2]
    assert ctx.run_once(blocking=False) is False
    assert calls == [1, 2]


def test_bottom_half_scheduled_by_a_bottom_half_runs_next_time(ctx: AioContext) -> None:
    calls: list[str] = []
    ctx.schedule(lambda: (calls.append("a"), ctx.schedule(lambda: calls.append("b"))))
    ctx.run_once()
    assert calls == ["a"]
    ctx.run_once()
    assert calls == ["a", "b"]


def test_bottom_half_scheduled_by_the_loop_itself_writes_no_eventfd(ctx: AioContext) -> None:
    """The loop looks at its bottom halves before it waits, so one it schedules
    while running a handler costs no eventfd write and no extra wake-up."""
    calls: list[str] = []
    reader, writer = os.pipe()
    try:
        os.write(writer, b"x")

        def on_read() -> None:
            os.read(reader, 1)
            # this one runs in the same iteration, the one it schedules in the next
            ctx.schedule(lambda: (calls.append("bh"), ctx.schedule(lambda: calls.append("next"))))

        ctx.set_fd_handler(reader, on_read)
        ctx.run_once()
        assert calls == ["bh"]
        with pytest.raises(BlockingIOError):  # nothing was written to wake the loop
            os.eventfd_read(ctx._notify_fd)
        start = time.monotonic()
        ctx.run_once(blocking=True)  # does not wait: a bottom half is due
        assert calls == ["bh", "next"]
        assert time.monotonic() - start < 1
        # bottom halves from the loop and from elsewhere meanwhile both run
        ctx.schedule(lambda: calls.append("again"))
        threading.Thread(target=ctx.schedule, args=(lambda: calls.append("thread"),)).start()
        while len(calls) < 4:
            ctx.run_once(blocking=True)
        assert sorted(calls[2:]) == ["again", "thread"]
    finally:
        ctx.set_fd_handler(reader, None)
        os.close(reader)
        os.close(writer)


def test_bottom_half_from_another_thread_wakes_a_blocked_loop(ctx: AioContext) -> None:
    ran: list[str] = []
    # If the wake-up were lost, the watchdog would end the wait instead.
    watchdog = threading.Timer(10, lambda: ctx.schedule(lambda: ran.append("watchdog")))
    watchdog.start()
    sender = threading.Timer(0.05, lambda: ctx.schedule(lambda: ran.append("bh")))
    sender.start()
    try:
        start = time.monotonic()
        while not ran:
            ctx.run_once(blocking=True)
        assert ran == ["bh"]
        assert time.monotonic() - start < 5
    finally:
        watchdog.cancel()
        sender.join()


def test_bottom_halves_from_many_threads(ctx: AioContext) -> None:
    seen: list[tuple[int, int]] = []

    def producer(n: int) -> None:
        for i in range(50):
            ctx.schedule(lambda i=i: seen.append((n, i)))

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while len(seen) < 200:
        ctx.run_once(blocking=False)
    for n in range(4):
        assert [i for m, i in seen if m == n] == list(range(50))


def test_submit_returns_a_future(ctx: AioContext) -> None:
    result: list[object] = []

    def worker() -> None:
        result.append(ctx.submit(lambda: 6 * 7).result(timeout=10))

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 10
    while not result and time.monotonic() < deadline:
        ctx.run_once(blocking=False)
        time.sleep(0.001)
    thread.join()
    assert result == [42]


def test_a_failing_callback_is_logged_and_the_loop_goes_on(
    ctx: AioContext, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    ctx.schedule(boom)
    ctx.schedule(lambda: calls.append("after"))
    with caplog.at_level(logging.ERROR, logger="qomhost.aio"):
        ctx.run_once()
    assert calls == ["after"]
    assert "boom" in caplog.text


# --- timers ---------------------------------------------------------------------------------------


def test_timers_fire_in_deadline_order_and_cancel(ctx: AioContext) -> None:
    clock = StepClock()
    ctx.clock = clock
    fired: list[str] = []
    ctx.call_later(0.003, lambda: fired.append("3ms"))
    ctx.call_later(0.001, lambda: fired.append("1ms"))
    ctx.call_later(0.002, lambda: fired.append("2ms"))
    cancelled = ctx.call_later(0.0015, lambda: fired.append("cancelled"))
    ctx.call_later(0.001, lambda: fired.append("1ms, second"))
    cancelled.cancel()
    ctx.run_once(blocking=False)
    assert fired == []
    clock.now += 1_500_000
    ctx.run_once(blocking=False)
    assert fired == ["1ms", "1ms, second"]
    clock.now += 10_000_000
    ctx.run_once(blocking=False)
    assert fired == ["1ms", "1ms, second", "2ms", "3ms"]


def test_a_blocking_wait_ends_at_the_next_timer(ctx: AioContext) -> None:
    fired: list[float] = []
    start = time.monotonic()
    ctx.call_later(0.02, lambda: fired.append(time.monotonic()))
    while not fired:
        ctx.run_once(blocking=True)
    assert fired[0] - start >= 0.015
    assert fired[0] - start < 5


def test_only_cancelled_timers_mean_no_deadline(ctx: AioContext) -> None:
    ctx.call_later(0.001, lambda: None).cancel()
    ran: list[str] = []
    sender = threading.Timer(0.03, lambda: ctx.schedule(lambda: ran.append("bh")))
    sender.start()
    start = time.monotonic()
    # the cancelled timer must not end the wait early
    assert ctx.run_once(blocking=True) is True
    assert ran == ["bh"]
    assert time.monotonic() - start >= 0.02
    sender.join()


# --- adaptive polling -------------------------------------------------------------------------


def _sequence(ctx: AioContext, blocks: list[int]) -> list[int]:
    out = []
    for block in blocks:
        ctx.adjust_polling(block)
        out.append(ctx.poll_ns)
    return out


def test_polling_starts_at_zero() -> None:
    ctx = AioContext()
    try:
        assert (ctx.poll_ns, ctx.poll_max_ns, ctx.poll_grow, ctx.poll_shrink) == (0, 0, 0, 0)
    finally:
        ctx.close()


def test_growth_with_the_default_factor_and_the_clamp(ctx: AioContext) -> None:
    ctx.set_poll_params(20000, 0, 0)
    assert ctx.poll_ns == 0
    assert _sequence(ctx, [1000, 5000, 9000, 17000]) == [POLL_FIRST_STEP_NS, 8000, 16000, 20000]
    assert POLL_FIRST_STEP_NS == 4000


def test_block_equal_to_max_leaves_the_window(ctx: AioContext) -> None:
    ctx.set_poll_params(20000, 0, 0)
    assert _sequence(ctx, [20000]) == [0]
    assert _sequence(ctx, [100, 20000, 20000]) == [4000, 4000, 4000]


def test_sweet_spot_leaves_the_window(ctx: AioContext) -> None:
    ctx.set_poll_params(100000, 0, 0)
    _sequence(ctx, [1, 5000])
    assert ctx.poll_ns == 8000
    assert _sequence(ctx, [0, 1, 7999, 8000]) == [8000] * 4


def test_shrink_to_zero_without_a_shrink_factor(ctx: AioContext) -> None:
    ctx.set_poll_params(20000, 0, 0)
    assert _sequence(ctx, [1, 5000, 9000, 17000, 20001]) == [4000, 8000, 16000, 20000, 0]
    # and it starts over from the first step
    assert _sequence(ctx, [1]) == [4000]


def test_grow_and_shrink_factors(ctx: AioContext) -> None:
    ctx.set_poll_params(100000, 3, 4)
    assert _sequence(ctx, [1, 4001, 12001, 36001]) == [4000, 12000, 36000, 100000]
    # divided by 4 each time, in integer arithmetic, down to 0
    assert _sequence(ctx, [10**9] * 10) == [25000, 6250, 1562, 390, 97, 24, 6, 1, 0, 0]


def test_a_max_below_the_first_step(ctx: AioContext) -> None:
    ctx.set_poll_params(1000, 0, 0)
    assert _sequence(ctx, [10, 999, 999]) == [1000, 1000, 1000]


def test_poll_max_zero_disables_adjustment(ctx: AioContext) -> None:
    ctx.set_poll_params(0, 2, 2)
    assert _sequence(ctx, [0, 1, 4000, 10**9]) == [0, 0, 0, 0]
    ctx.poll_ns = 5000
    assert _sequence(ctx, [10**9]) == [5000]


def test_new_parameters_restart_the_window(ctx: AioContext) -> None:
    ctx.set_poll_params(100000, 0, 0)
    _sequence(ctx, [1, 5000])
    assert ctx.poll_ns == 8000
    ctx.set_poll_params(200000, 0, 0)
    assert ctx.poll_ns == 0


class _Polled:
    """An event notifier with a poll callback that reports work on call ``ready_on``."""

    def __init__(self, ctx: AioContext, ready_on: int | None) -> None:
        self.notifier = EventNotifier()
        self.polls = 0
        self.ready_on = ready_on
        self.events: list[str] = []
        ctx.set_event_notifier(
            self.notifier,
            lambda: self.events.append("event"),
            self.poll,
            lambda: self.events.append("poll-ready"),
        )

    def poll(self) -> bool:
        self.polls += 1
        return self.ready_on is not None and self.polls >= self.ready_on


def test_poll_handlers_run_during_the_window(ctx: AioContext) -> None:
    clock = StepClock(step=1000)
    ctx.clock = clock
    ctx.set_poll_params(100000, 0, 0)
    polled = _Polled(ctx, ready_on=3)
    try:
        # No window yet: the loop waits in epoll (the notifier is set) and
        # the short wait grows the window to its first step.
        polled.notifier.set()
        assert ctx.run_once() is True
        assert polled.events == ["event"]
        assert polled.polls == 0
        assert ctx.poll_ns == POLL_FIRST_STEP_NS
        # Now the poll callback finds work on its third call, within the
        # 4000 ns window: no system call wait, the ready callback runs.
        assert ctx.run_once() is True
        assert polled.events == ["event", "poll-ready"]
        assert polled.polls == 3
        # the iteration took no longer than the window: the sweet spot
        assert ctx.poll_ns == POLL_FIRST_STEP_NS
        # A window with no work: polled for the whole window, then the wait,
        # which ends later than the window, so the window grows.
        polled.ready_on = None
        polled.polls = 0
        polled.notifier.set()
        ctx.run_once()
        assert polled.events[-1] == "event"
        assert 3 <= polled.polls <= 5  # 4000 ns at 1000 ns per clock read
        assert ctx.poll_ns == 8000
    finally:
        ctx.set_event_notifier(polled.notifier, None)
        polled.notifier.close()


def test_a_long_wait_shrinks_the_window(ctx: AioContext) -> None:
    # each clock read is 0.6 ms later: any iteration takes longer than the max
    ctx.clock = StepClock(step=600_000)
    ctx.set_poll_params(100000, 0, 2)
    ctx.poll_ns = 50000
    ctx.run_once(blocking=False)
    assert ctx.poll_ns == 25000
    ctx.run_once(blocking=False)
    assert ctx.poll_ns == 12500


def test_no_polling_when_a_handler_cannot_poll(ctx: AioContext, pipe: tuple[int, int]) -> None:
    r, w = pipe
    ctx.set_poll_params(100000, 0, 0)
    ctx.poll_ns = 50000
    polled = _Polled(ctx, ready_on=1)
    try:
        ctx.set_fd_handler(r, lambda: os.read(r, 100))
        os.write(w, b"x")
        ctx.run_once()
        assert polled.polls == 0
        # without the pipe handler, polling is back
        ctx.set_fd_handler(r, None)
        ctx.poll_ns = 50000
        ctx.run_once()
        assert polled.polls == 1
        assert polled.events == ["poll-ready"]
    finally:
        ctx.set_event_notifier(polled.notifier, None)
        polled.notifier.close()


def test_no_polling_without_a_max(ctx: AioContext) -> None:
    polled = _Polled(ctx, ready_on=1)
    try:
        ctx.set_poll_params(0, 0, 0)
        ctx.poll_ns = 0
        polled.notifier.set()
        ctx.run_once()
        assert polled.polls == 0
        assert polled.events == ["event"]
    finally:
        ctx.set_event_notifier(polled.notifier, None)
        polled.notifier.close()


def test_close_twice(ctx: AioContext) -> None:
    ctx.close()
    ctx.close()


def test_polling_yields_the_gil_every_poll_yield_ns(ctx: AioContext) -> None:
    """A busy-polling window lets other threads run: a yield about every
    ``poll_yield_ns``, and never with ``poll_yield_ns = 0``."""
    yields: list[int] = []
    ctx.gil_yield = GilYield(sched_yield=lambda: yields.append(1), pause=lambda: None)
    ctx.clock = StepClock(step=1000)
    ctx.set_poll_params(100000, 0, 0)
    polled = _Polled(ctx, ready_on=None)
    try:
        ctx.run_once(blocking=False)  # take the wake-up set_poll_params sent
        ctx.poll_ns = 40000
        polled.notifier.set()
        ctx.run_once()
        # 40 us of polling at 1 us per clock read, a yield every 4 us
        # (the first also pauses: one more clock read)
        assert 7 <= len(yields) <= 11
        yields.clear()
        ctx.poll_yield_ns = 0
        ctx.poll_ns = 40000
        polled.notifier.set()
        ctx.run_once()
        assert yields == []
    finally:
        ctx.set_event_notifier(polled.notifier, None)
        polled.notifier.close()


@pytest.mark.parametrize("placement", ["one CPU", "two CPUs"])
def test_a_polling_window_does_not_starve_a_thread_waiting_for_the_gil(
    ctx: AioContext, placement: str
) -> None:
    """While the loop busy-polls a handler that never finds work, a thread
    that sleeps and wakes again and again (and needs the GIL each time it
    wakes) makes progress within the window, whether it shares the loop's
    CPU (the yield hands the CPU over) or has another one (the pauses hand
    the GIL over). Without them it could wait for the window to end."""
    cpus = sorted(os.sched_getaffinity(0))
    loop_cpu = cpus[0] if placement == "one CPU" or len(cpus) == 1 else cpus[1]
    schedstat = SchedStat()
    if loop_cpu != cpus[0]:
        # Where a hand-over went is known here (the threads are pinned
        # apart), and its reading from the run queue, which other processes
        # on a busy host blur, is tested in test_gil.py: the loop sees its
        # real switches, and no time queued.
        def switches_only() -> tuple[int, int] | None:
            stat = schedstat()
            return None if stat is None else (0, stat[1])

        ctx.gil_yield = GilYield(schedstat=switches_only)
    window_ns = 20_000_000_000
    ctx.set_poll_params(window_ns, 0, 0)
    polled = _Polled(ctx, ready_on=None)
    window_open = threading.Event()
    steps_in_window = 0

    def loop() -> None:
        os.sched_setaffinity(0, {loop_cpu})
        ctx.run_once(blocking=False)  # take the wake-up set_poll_params sent
        ctx.poll_ns = window_ns
        window_open.set()
        ctx.run_once()  # polls until notify() ends the window
        window_open.clear()

    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[0]})
    thread = threading.Thread(target=loop)
    thread.start()
    try:
        assert window_open.wait(10)
        polls_before = polled.polls
        for _ in range(20):
            time.sleep(0.002)  # lets go of the GIL; wants it back after 2 ms
            if window_open.is_set():
                steps_in_window += 1
        polls_during = polled.polls - polls_before
    finally:
        ctx.notify()
        thread.join(30)
        os.sched_setaffinity(0, mine)
        ctx.set_event_notifier(polled.notifier, None)
        polled.notifier.close()
        schedstat.close()
    assert not thread.is_alive()
    assert steps_in_window == 20
    assert polls_during > 0  # the loop kept polling meanwhile
    if placement == "two CPUs" and loop_cpu != cpus[0]:
        # the thread on the other CPU took the GIL in the loop's pauses
        assert ctx.gil_yield.contended_until > 0
