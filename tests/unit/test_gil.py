"""``GilYield``: when a busy-polling loop pauses to hand the GIL over.

Driven with a fake clock: the stand-ins for ``sched_yield()`` and the pause
move it by what the case needs (a yield or a pause that took longer than
alone, the poller having left its CPU meanwhile, means another thread held
the GIL), and a fake scheduling reading says whether the poller was switched
out at all, and whether it spent that time waiting for a CPU (a thread on
its own CPU ran) or asleep (it waited for the GIL, held on another CPU).
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
import zlib

from qomhost.aio import gil
from qomhost.aio.gil import CONTENDED_NS, HANDOVER_NS, PAUSE_NS, PROBE_NS, GilYield, SchedStat

YIELD_EVERY_NS = 4_000
YIELD_NS = 1_000
SLOW = HANDOVER_NS + 1


class FakeHost:
    """A clock, a ``sched_yield``, a pause and a run-queue reading that take
    and tell what they are told."""

    def __init__(self) -> None:
        self.now = 1_000_000_000
        self.yield_ns = YIELD_NS
        self.pause_ns = PAUSE_NS
        self.pauses: list[int] = []  # the clock at each pause
        #: what the next yield or pause spends in the run queue
        self.queued_ns = 0
        self.waited: int | None = 0
        #: times the poller was switched in; a slow yield or pause switches
        #: it out and in again, unless its time is stolen
        self.switches = 0
        self.stolen = False
        #: other Python threads in the process
        self.threads = 1

    def clock(self) -> int:
        return self.now

    def _spend(self, ns: int, alone_ns: int) -> None:
        self.now += ns
        if self.waited is not None:
            self.waited += self.queued_ns
        if ns > alone_ns and not self.stolen:
            self.switches += 1

    def sched_yield(self) -> None:
        self._spend(self.yield_ns, YIELD_NS)

    def pause(self) -> None:
        self.pauses.append(self.now)
        self._spend(self.pause_ns, PAUSE_NS)

    def schedstat(self) -> tuple[int, int] | None:
        return None if self.waited is None else (self.waited, self.switches)

    def other_threads(self) -> int:
        return self.threads

    def gil_yield(self) -> GilYield:
        """A ``GilYield`` on this host."""
        return GilYield(self.sched_yield, self.pause, self.schedstat, self.other_threads)

    def poll_for(self, gil_yield: GilYield, ns: int) -> None:
        """Poll as the loop does: a yield every ``YIELD_EVERY_NS``, until ``ns`` passed."""
        end = self.now + ns
        while self.now < end:
            self.now += YIELD_EVERY_NS
            self.now = gil_yield(self.now, self.clock)

    def one_yield(
        self,
        gil_yield: GilYield,
        yield_ns: int = YIELD_NS,
        pause_ns: int = PAUSE_NS,
        queued_ns: int = 0,
        stolen: bool = False,
    ) -> None:
        """One yield, after a full probe period: it probes (pauses)."""
        self.yield_ns, self.pause_ns, self.queued_ns = yield_ns, pause_ns, queued_ns
        self.stolen = stolen
        self.now += PROBE_NS
        self.now = gil_yield(self.now, self.clock)
        self.yield_ns, self.pause_ns, self.queued_ns = YIELD_NS, PAUSE_NS, 0
        self.stolen = False


def make() -> tuple[FakeHost, GilYield]:
    host = FakeHost()
    gil_yield = host.gil_yield()
    host.poll_for(gil_yield, 100_000)  # the fastest yield and pause known
    assert gil_yield.contended_until == 0
    return host, gil_yield


def test_uncontended_it_pauses_once_per_probe_period() -> None:
    host, gil_yield = make()
    before = len(host.pauses)
    host.poll_for(gil_yield, 10 * PROBE_NS)
    assert 9 <= len(host.pauses) - before <= 11
    pauses = host.pauses[before:]
    gaps = [b - a for a, b in itertools.pairwise(pauses)]
    assert all(PROBE_NS <= gap <= PROBE_NS + 2 * YIELD_EVERY_NS + PAUSE_NS for gap in gaps)


def test_the_first_yield_probes() -> None:
    host = FakeHost()
    gil_yield = host.gil_yield()
    host.now = gil_yield(host.now, host.clock)
    assert len(host.pauses) == 1


def test_a_hand_over_to_another_cpu_in_a_pause_makes_every_yield_pause_for_a_while() -> None:
    host, gil_yield = make()
    host.one_yield(gil_yield, pause_ns=PAUSE_NS + SLOW)  # slept: the GIL was on another CPU
    assert gil_yield.contended_until == host.now + CONTENDED_NS
    before = len(host.pauses)
    contended_at = host.now
    host.poll_for(gil_yield, CONTENDED_NS)
    during = [t for t in host.pauses[before:] if t < contended_at + CONTENDED_NS]
    # every yield paused while contended
    assert len(during) >= CONTENDED_NS // (YIELD_EVERY_NS + YIELD_NS + PAUSE_NS) - 1
    # then back to probing
    after = len(host.pauses)
    host.poll_for(gil_yield, 3 * PROBE_NS)
    assert len(host.pauses) - after <= 4


def test_a_slow_yield_asleep_is_a_hand_over_to_another_cpu() -> None:
    """The poller slept through a yield: it waited for the GIL, which a
    thread on another CPU had won in the moment the yield let it go."""
    host, gil_yield = make()
    host.now += PROBE_NS
    host.now = gil_yield(host.now, host.clock)  # a probe: a reading to compare with
    host.one_yield(gil_yield, yield_ns=YIELD_NS + SLOW)
    assert gil_yield.contended_until == host.now + CONTENDED_NS


def test_run_queue_time_before_a_pause_does_not_count() -> None:
    """Only the run-queue time of the pause itself says where its extra time
    went: time queued earlier (say, in a yield) does not."""
    host, gil_yield = make()
    host.yield_ns, host.queued_ns = YIELD_NS + 3 * SLOW, 3 * SLOW
    host.now = gil_yield(host.now, host.clock)  # a slow yield, queued
    host.yield_ns, host.queued_ns = YIELD_NS, 0
    host.one_yield(gil_yield, pause_ns=PAUSE_NS + SLOW)  # a slow pause, asleep
    assert gil_yield.contended_until == host.now + CONTENDED_NS


def test_a_hand_over_on_this_cpu_needs_no_pauses() -> None:
    """The extra time was spent waiting for the CPU: a thread on this CPU
    ran; it needs the CPU the yields give, not pauses, which keep it."""
    host, gil_yield = make()
    host.one_yield(gil_yield, yield_ns=YIELD_NS + 2 * SLOW, queued_ns=2 * SLOW)
    host.one_yield(gil_yield, pause_ns=PAUSE_NS + 2 * SLOW, queued_ns=SLOW + 1)
    assert gil_yield.contended_until == 0
    before = len(host.pauses)
    host.poll_for(gil_yield, PROBE_NS // 2)
    assert len(host.pauses) == before


def test_time_taken_while_the_poller_kept_its_cpu_is_no_hand_over() -> None:
    """A slow yield or pause that never switched the poller out lost its
    time to the hypervisor or an interrupt: no thread took the GIL, and on
    a shared host that happens all the time."""
    host, gil_yield = make()
    host.one_yield(gil_yield, yield_ns=YIELD_NS + 5 * SLOW, stolen=True)
    host.one_yield(gil_yield, pause_ns=PAUSE_NS + 5 * SLOW, stolen=True)
    assert gil_yield.contended_until == 0
    before = len(host.pauses)
    host.poll_for(gil_yield, PROBE_NS // 2)
    assert len(host.pauses) == before


def test_without_run_queue_figures_a_slow_pause_counts_and_a_slow_yield_does_not() -> None:
    host, gil_yield = make()
    host.waited = None
    host.one_yield(gil_yield, yield_ns=YIELD_NS + SLOW)
    assert gil_yield.contended_until == 0
    host.one_yield(gil_yield, pause_ns=PAUSE_NS + SLOW)
    assert gil_yield.contended_until == host.now + CONTENDED_NS


def test_alone_in_its_process_it_never_pauses() -> None:
    """No other Python thread: nobody to hand the GIL to, nothing to probe
    for, whatever the yields take."""
    host, gil_yield = make()
    host.threads = 0
    before = len(host.pauses)
    host.one_yield(gil_yield, yield_ns=YIELD_NS + SLOW)
    host.poll_for(gil_yield, 3 * PROBE_NS)
    assert len(host.pauses) == before
    host.threads = 1
    host.poll_for(gil_yield, PROBE_NS)
    assert len(host.pauses) > before


def test_each_hand_over_extends_contention() -> None:
    host, gil_yield = make()
    for _ in range(5):
        host.one_yield(gil_yield, pause_ns=PAUSE_NS + SLOW)
        host.poll_for(gil_yield, CONTENDED_NS // 2)
        assert gil_yield.contended_until > host.now


def test_a_uniformly_slow_host_is_not_contention() -> None:
    """Judged against the fastest yield and pause seen, not fixed figures."""
    host = FakeHost()
    gil_yield = host.gil_yield()
    host.yield_ns = 3 * HANDOVER_NS
    host.pause_ns = 5 * PAUSE_NS
    host.poll_for(gil_yield, 5 * PROBE_NS)
    assert gil_yield.contended_until == 0
    assert len(host.pauses) <= 6


def test_schedstat_is_the_calling_threads() -> None:
    reading = SchedStat()
    try:
        mine = reading()
        assert mine is not None and min(mine) >= 0
        theirs: list[tuple[int, int] | None] = []
        thread = threading.Thread(target=lambda: theirs.append(reading()))
        thread.start()
        thread.join(10)
        theirs_now = theirs[0]
        assert theirs_now is not None and min(theirs_now) >= 0
        time.sleep(0.001)  # switched out, and in again
        # this thread's own figures again (the other thread is gone)
        again = reading()
        assert again is not None
        assert again[0] >= mine[0]
        assert again[1] > mine[1]
    finally:
        reading.close()
        reading.close()


def test_the_pause_is_one_call_that_lets_go_of_the_gil() -> None:
    """The buffer is over zlib's 5 KiB threshold for releasing the GIL, and
    another thread runs Python code while the pauses go on."""
    gil.gil_free_pause()
    assert gil._pause_buffer is not None
    assert 8 * 1024 <= len(gil._pause_buffer) <= 1024 * 1024
    zlib.crc32(gil._pause_buffer)
    stop = threading.Event()
    pauses = 0

    def pauser() -> None:
        nonlocal pauses
        while not stop.is_set():
            gil.gil_free_pause()
            pauses += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)  # no forced switch: only the pauses let go
    thread = threading.Thread(target=pauser)
    try:
        thread.start()
        while not pauses:
            time.sleep(0.001)
        asleep = time.monotonic()
        time.sleep(0.01)  # lets go of the GIL; needs it back to return
        woke = time.monotonic()
        stop.set()
    finally:
        thread.join(30)
        sys.setswitchinterval(interval)
    # a pauser that held the GIL would keep it until the switch interval forced it out
    assert woke - asleep < 2.5
