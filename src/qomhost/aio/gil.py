"""How a busy-polling loop lets the other threads of its process have the GIL.

QEMU's iothread polls without holding a lock. A Python poller holds the
GIL, and a thread of the same process that the loop is waiting for (the one
that will write the next request, or read the last answer) needs it to run.
Letting go of the GIL for a moment is not enough: a waiting thread on
another CPU is woken when the lock is released, but waking takes
microseconds, and by then the poller has taken the lock again; the waiter
finds it taken and goes back to sleep, and CPython forces a switch only
after a whole switch interval (5 ms) without one. So the waiter runs when
it happens to win the lock at one of the releases, or when the window ends.

:class:`GilYield` is called by the polling loop every ``poll_yield_ns``:

* it always calls ``sched_yield()``, which hands the CPU, and with it the
  GIL, to a thread waiting on the poller's own CPU;
* while a thread on another CPU has recently taken the GIL from the poller
  (*contended*: within :data:`CONTENDED_NS` of the last such hand-over), it
  also *pauses*: a computation that releases the GIL for long enough
  (:data:`PAUSE_NS`) for a waiter on another CPU to wake and take the lock;
* uncontended, it pauses only once per :data:`PROBE_NS` of polling, to find
  out whether such a thread is waiting, so that a loop whose peers are
  other processes keeps 99.8 % of its polling time; and never while the
  process has no other Python thread.

A thread took the GIL if the yield or the pause took clearly longer than it
takes alone (:data:`HANDOVER_NS` more than the fastest seen) and the poller
left its CPU meanwhile (``/proc/thread-self/schedstat`` counts the times a
thread is switched in). A poller that never left its CPU lost the time to
the hypervisor, which runs other guests on the same physical CPU, or to an
interrupt: no thread of this process was involved. Where the thread that
took the GIL ran tells what it needs. If the poller spent the extra time
waiting for a CPU (its run-queue wait, from the same file), a thread on its
own CPU ran: the yields serve it, and pauses would only keep the CPU from
it. If the poller slept instead, it waited for the GIL, held by a thread on
another CPU: that one needs the pauses. Around a pause the figures are read
before and after; a yield is compared with the last reading, as reading them
at every yield would cost a tenth of the polling.
"""

from __future__ import annotations

import _thread
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CONTENDED_NS",
    "HANDOVER_NS",
    "PAUSE_NS",
    "PROBE_NS",
    "GilYield",
    "SchedStat",
    "gil_free_pause",
]

#: how long a pause lets go of the GIL: longer than a sleeping thread takes
#: to wake on another CPU on a busy virtual machine
PAUSE_NS = 10_000
#: how much longer than alone a yield or a pause must take to count as a
#: hand-over (another thread held the GIL meanwhile: its work and the poller's
#: own wake-up when the lock comes back take longer than this; an interrupt,
#: or a pause slowed by a neighbour on a shared machine, mostly less)
HANDOVER_NS = 10_000
#: uncontended, pause once per this much polling (0.2 % of the time); as long
#: as CPython's switch interval, after which a waiter would force a switch
#: if releases did not keep restarting its wait
PROBE_NS = 5_000_000
#: how long after a hand-over to another CPU the poller pauses at every yield
CONTENDED_NS = 5_000_000

#: the buffer checksummed by a pause, sized on first use
_pause_buffer: bytes | None = None


def gil_free_pause() -> None:
    """Compute for about :data:`PAUSE_NS` without the GIL.

    ``zlib.crc32`` releases the GIL for inputs over 5 KiB; one call, not a
    loop of short ones, so that the lock stays free for the whole pause.
    Sleeping would not do: a timer wake-up takes far longer than a pause.
    """
    global _pause_buffer
    import zlib

    if _pause_buffer is None:
        _pause_buffer = _calibrated_buffer(zlib.crc32)
    zlib.crc32(_pause_buffer)


def _calibrated_buffer(crc32: Callable[[bytes], int]) -> bytes:
    """A buffer whose checksum takes about :data:`PAUSE_NS` on this machine."""
    sample = bytes(64 * 1024)
    best = min(_timed(crc32, sample) for _ in range(5))
    size = len(sample) * PAUSE_NS // max(best, 1)
    return bytes(max(8 * 1024, min(size, 1024 * 1024)))


def _timed(crc32: Callable[[bytes], int], data: bytes) -> int:
    start = time.perf_counter_ns()
    crc32(data)
    return time.perf_counter_ns() - start


class SchedStat:
    """The calling thread's scheduling figures so far: (time spent runnable
    but not running in ns, times switched in to run).

    Read from ``/proc/thread-self/schedstat``, whose descriptor is kept open
    (a read is one ``pread``) and reopened if another thread calls. None
    where the kernel does not say.
    """

    __slots__ = ("_fd", "_thread")

    def __init__(self) -> None:
        self._fd = -1
        self._thread = 0

    def __call__(self) -> tuple[int, int] | None:
        thread = _thread.get_ident()
        if thread != self._thread:
            self.close()
            try:
                self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            self._thread = thread
        try:
            _running, waiting, switched_in = os.pread(self._fd, 64, 0).split()[:3]
            return int(waiting), int(switched_in)
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Close the descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._thread = 0


class GilYield:
    """The polling loop's yield: ``sched_yield()``, and a pause when it helps.

    ``sched_yield``, ``pause``, ``schedstat`` (a :class:`SchedStat`
    reading) and ``other_threads`` (how many other Python threads the
    process has) are parameters so that tests can drive the decisions with a
    fake clock.
    """

    __slots__ = (
        "_fastest_pause",
        "_fastest_yield",
        "_next_probe",
        "_stat",
        "contended_until",
        "other_threads",
        "pause",
        "sched_yield",
        "schedstat",
    )

    def __init__(
        self,
        sched_yield: Callable[[], None] = os.sched_yield,
        pause: Callable[[], None] = gil_free_pause,
        schedstat: Callable[[], tuple[int, int] | None] | None = None,
        other_threads: Callable[[], int] = _thread._count,
    ) -> None:
        self.sched_yield = sched_yield
        self.pause = pause
        # _thread._count(): running threads but the main one; whether or
        # not this is the main thread, that is how many others there are
        self.other_threads = other_threads
        self.schedstat = SchedStat() if schedstat is None else schedstat
        #: the loop's clock until which every yield pauses
        self.contended_until = 0
        self._fastest_yield = 1 << 62
        self._fastest_pause = 1 << 62
        # the first yield probes
        self._next_probe = 0
        # the scheduling figures at the last reading
        self._stat: tuple[int, int] | None = None

    def __call__(self, now: int, clock: Callable[[], int]) -> int:
        """Yield at ``now``, the loop's last read of ``clock``; return the clock after."""
        self.sched_yield()
        after = clock()
        took = after - now
        if took < self._fastest_yield:
            self._fastest_yield = took
        elif took - self._fastest_yield > HANDOVER_NS:
            # Perhaps a thread ran: on this CPU, which the yields serve,
            # unless the poller slept meanwhile. The figures are compared
            # with the last reading, not one taken before this yield (too
            # dear at every yield): a switch or time queued since then
            # counts as this yield's, and, unknown, this CPU is the likelier.
            if self.other_threads() and self._slept(
                took - self._fastest_yield, self._stat, unknown=False
            ):
                self.contended_until = after + CONTENDED_NS
            return after
        if after >= self.contended_until and after < self._next_probe:
            return after
        if not self.other_threads():
            return after  # nobody to hand the GIL to
        self._stat = before = self.schedstat()
        self.pause()
        end = clock()
        took = end - after
        if took < self._fastest_pause:
            self._fastest_pause = took
        elif took - self._fastest_pause > HANDOVER_NS and self._slept(
            took - self._fastest_pause, before, unknown=True
        ):
            self.contended_until = end + CONTENDED_NS
        self._next_probe = end + PROBE_NS
        return end

    def _slept(self, extra_ns: int, before: tuple[int, int] | None, unknown: bool) -> bool:
        """Whether the poller, its figures ``before`` as given, was switched
        out since and spent most of ``extra_ns`` asleep (waiting for the
        GIL, held on another CPU) rather than in the run queue; ``unknown``
        where the kernel does not say."""
        self._stat = now = self.schedstat()
        if before is None or now is None:
            return unknown
        waited, switched_in = now[0] - before[0], now[1] - before[1]
        if not switched_in:
            return False  # it kept its CPU: the time was taken from under it
        return waited * 2 < extra_ns

    def close(self) -> None:
        """Release what the scheduling reading holds."""
        if isinstance(self.schedstat, SchedStat):
            self.schedstat.close()
