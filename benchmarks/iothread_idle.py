"""What an idle polling iothread costs a CPU-bound main thread.

The iothread has one poll handler that never finds work (an event notifier
whose poll callback returns False), and a kicker process sets that
notifier's eventfd, so the loop keeps waking up. Each trial has two phases:

1. **busy** (the main thread sleeps): kicks every ``BUSY_PERIOD_US`` µs, so
   every wait is short and QEMU's algorithm grows the polling window to
   ``poll-max-ns``;
2. **idle**: kicks at about 1 kHz while the main thread runs a pure-Python
   loop; its iterations are counted in slices of ``SLICE_S`` seconds, and
   the iothread's ``poll_ns`` is read after each slice.

A wait longer than ``poll-max-ns`` shrinks the window (``poll-shrink`` 0:
back to 0), so the window an idle loop keeps should fall back to 0 and the
main thread should run as fast as beside a blocking loop. ``poll-shrink=1``
never shrinks: those rows show what the adaptation saves. The time a woken
iothread waits for the GIL counts as waiting too, which is why even a
window longer than the 1 ms between kicks shrinks: the main thread lets go
of the GIL only every switch interval (5 ms).

The reference row is the same iothread with no handler at all.

Usage: ``.venv/bin/python benchmarks/iothread_idle.py [--trials 5] [--seconds 0.5]``
"""

from __future__ import annotations

import argparse
import subprocess
import threading
import time
from dataclasses import dataclass, field

from _common import VENV_PYTHON, log, median, read_steal, steal_percent, table

from qomhost.aio.context import POLL_YIELD_NS, EventNotifier
from qomhost.host import Host
from qomhost.objects.iothread import IOTHREAD_POLL_MAX_NS_DEFAULT, IOThread

BUSY_S = 0.2
BUSY_PERIOD_US = 20
IDLE_PERIOD_S = 0.001
SLICE_S = 0.025
#: times (ms into the idle phase) at which the table shows the window
SHOWN_MS = (0, 1, 2, 5, 10, 100, 400)

KICKER = """
import os, sys, time
fd, busy, busy_period, idle_period = int(sys.argv[1]), *map(float, sys.argv[2:5])
sys.stdin.buffer.read(1)
clock = time.perf_counter
end = clock() + busy
due = clock()
while True:
    now = clock()
    if now >= end:
        break
    if now >= due:
        os.eventfd_write(fd, 1)
        due += busy_period
while True:
    os.eventfd_write(fd, 1)
    time.sleep(idle_period)
"""


@dataclass(frozen=True)
class Variant:
    """An iothread setting; ``poll_max_ns`` None: no handler on the iothread."""

    name: str
    poll_max_ns: int | None
    poll_shrink: int = 0
    yield_ns: int = POLL_YIELD_NS


VARIANTS = (
    Variant("reference: iothread without handlers", None),
    Variant("poll-max-ns=0 (blocking)", 0),
    Variant(f"poll-max-ns={IOTHREAD_POLL_MAX_NS_DEFAULT} (default)", IOTHREAD_POLL_MAX_NS_DEFAULT),
    Variant(
        f"poll-max-ns={IOTHREAD_POLL_MAX_NS_DEFAULT}, poll-shrink=1 (never shrinks)",
        IOTHREAD_POLL_MAX_NS_DEFAULT,
        1,
    ),
    Variant("poll-max-ns=1000000", 1_000_000),
    Variant("poll-max-ns=1000000, poll-shrink=1 (never shrinks)", 1_000_000, 1),
    Variant("poll-max-ns=1000000, poll-shrink=1, no GIL yield", 1_000_000, 1, 0),
    Variant("poll-max-ns=10000000", 10_000_000),
    Variant("poll-max-ns=10000000, no GIL yield", 10_000_000, 0, 0),
)


def spin(seconds: float) -> int:
    """Iterations of a pure-Python loop in ``seconds``."""
    clock = time.perf_counter
    end = clock() + seconds
    count = 0
    x = 1
    while True:
        for _ in range(500):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        count += 500
        if clock() >= end:
            return count


@dataclass
class Sample:
    """One trial of the idle phase.

    ``rates``: main-thread iterations/s per slice; ``windows``: the
    iothread's ``poll_ns`` at each of its wake-ups, as ``(ns since the idle
    phase began, poll_ns)``, starting with the window when it began.
    """

    rates: list[float]
    windows: list[tuple[int, int]]
    wakeups: int
    seconds: float
    #: shares of the idle phase: main thread on a CPU, runnable but waiting
    #: for a CPU, neither (waiting for the GIL); iothread on a CPU
    main_running: float
    main_runqueue: float
    main_gil: float
    io_running: float

    def window_at(self, ms: float) -> int:
        """The window ``ms`` milliseconds into the idle phase."""
        value = self.windows[0][1]
        for t, poll_ns in self.windows:
            if t > ms * 1e6:
                break
            value = poll_ns
        return value


def schedstat(tid: int) -> tuple[int, int]:
    """(ns on a CPU, ns runnable waiting for one) of a thread of this process."""
    with open(f"/proc/self/task/{tid}/schedstat", encoding="ascii") as f:
        run, wait, _ = f.read().split()
    return int(run), int(wait)


def trial(host: Host, io: IOThread, variant: Variant, seconds: float) -> Sample:
    """Busy phase, then the measured idle phase."""
    ctx = io.context
    assert ctx is not None
    notifier = EventNotifier()
    clock = time.monotonic_ns
    seen: list[tuple[int, int]] = []

    def on_event() -> None:
        # after the wait: the window as the algorithm has just set it
        seen.append((clock(), ctx.poll_ns))

    main_tid = threading.get_native_id()
    ctx.poll_yield_ns = variant.yield_ns
    if variant.poll_max_ns is not None:
        host.set_property_json(io, "poll-shrink", variant.poll_shrink)
        host.set_property_json(io, "poll-max-ns", variant.poll_max_ns)
        ctx.submit(
            lambda: ctx.set_event_notifier(notifier, on_event, io_poll=lambda: False)
        ).result(10)
    argv = [VENV_PYTHON, "-c", KICKER, str(notifier.fd), str(BUSY_S)]
    argv += [str(BUSY_PERIOD_US / 1e6), str(IDLE_PERIOD_S)]
    kicker = subprocess.Popen(argv, stdin=subprocess.PIPE, pass_fds=(notifier.fd,))
    try:
        time.sleep(0.1)  # the kicker's start-up, before the busy phase
        assert kicker.stdin is not None
        kicker.stdin.write(b"g")
        kicker.stdin.flush()
        time.sleep(BUSY_S)
        idle_start = clock()
        window = ctx.poll_ns
        main0, io0 = schedstat(main_tid), schedstat(io.thread_id)
        rates = []
        for _ in range(round(seconds / SLICE_S)):
            start = time.perf_counter()
            n = spin(SLICE_S)
            rates.append(n / (time.perf_counter() - start))
        idle_end = clock()
        main1, io1 = schedstat(main_tid), schedstat(io.thread_id)
    finally:
        kicker.kill()
        kicker.wait()
        if variant.poll_max_ns is not None:
            ctx.submit(lambda: ctx.set_event_notifier(notifier, None)).result(10)
        notifier.close()
    idle = [(t - idle_start, w) for t, w in seen if idle_start <= t <= idle_end]
    wall = idle_end - idle_start
    running, runqueue = main1[0] - main0[0], main1[1] - main0[1]
    return Sample(
        rates,
        [(0, window), *idle],
        len(idle),
        wall / 1e9,
        running / wall,
        runqueue / wall,
        max(0.0, 1 - (running + runqueue) / wall),
        (io1[0] - io0[0]) / wall,
    )


@dataclass
class IdleResult:
    """Samples per variant."""

    trials: int
    seconds: float
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    steal: float = 0.0

    def _med(self, v: Variant, attr: str) -> float:
        return median([getattr(s, attr) for s in self.samples[v.name]])

    def markdown(self) -> str:
        """Rates, where the main thread's time went, wake-ups, the window over time."""
        blocking = median([median(s.rates) for s in self.samples[VARIANTS[1].name]])
        header = [
            "iothread",
            "main Miter/s",
            "vs blocking",
            "main waits for the GIL",
            "main waits for a CPU",
            "iothread on a CPU",
            "wake-ups/s",
        ]
        header += [f"poll_ns at {ms} ms" for ms in SHOWN_MS]
        rows = []
        for v in VARIANTS:
            samples = self.samples[v.name]
            rate = median([median(s.rates) for s in samples])
            row = [
                v.name,
                f"{rate / 1e6:.2f}",
                f"{rate / blocking:.3f}",
                f"{100 * self._med(v, 'main_gil'):.1f} %",
                f"{100 * self._med(v, 'main_runqueue'):.1f} %",
                f"{100 * self._med(v, 'io_running'):.1f} %",
            ]
            if v.poll_max_ns is None:
                row += ["–"] * (1 + len(SHOWN_MS))
            else:
                row.append(f"{median([s.wakeups / s.seconds for s in samples]):,.0f}")
                row += [f"{median([s.window_at(ms) for s in samples]):,.0f}" for ms in SHOWN_MS]
            rows.append(row)
        note = (
            f"{self.trials} interleaved trials; each: {BUSY_S:g} s of kicks every "
            f"{BUSY_PERIOD_US} µs with the main thread asleep (the window grows), then "
            f"{self.seconds:g} s of kicks at ~{1 / IDLE_PERIOD_S:.0f} Hz with the main thread "
            f"counting iterations of a pure-Python loop in {SLICE_S * 1000:g} ms slices. Rate: "
            "median over trials of the median slice. The shares of the idle phase come from "
            "`/proc/self/task/TID/schedstat`: time on a CPU, time runnable but waiting for a "
            "CPU (other processes), and the rest, which for this CPU-bound thread is waiting "
            "for the GIL: that share is what the iothread costs the main thread (Miter/s also "
            "moves with the host's speed). Wake-ups: the iothread's, per second of the idle "
            "phase; a woken iothread waits for the GIL until the main thread's switch interval "
            "(5 ms) ends, hence fewer than the kicks. `poll_ns at "
            "t`: the window t ms into the idle phase. All figures are medians over trials; "
            f"steal time during the run {self.steal:.1f} %."
        )
        gil = {v.name: 100 * self._med(v, "main_gil") for v in VARIANTS}
        base = gil[VARIANTS[1].name]
        adaptive = [gil[v.name] for v in VARIANTS[2:] if v.poll_shrink == 0 and v.yield_ns]
        worst = max(VARIANTS[2:], key=lambda v: gil[v.name])
        summary = (
            f"- main thread waiting for the GIL: {base:.1f} % beside the blocking loop; "
            f"{min(adaptive):.1f}–{max(adaptive):.1f} % beside the adaptive windows "
            f"(poll-shrink 0, GIL yield on); worst: {gil[worst.name]:.1f} % with "
            f"{worst.name}"
        )
        return note + "\n\n" + table(header, rows) + "\n\n" + summary


def run(trials: int = 5, seconds: float = 0.5) -> IdleResult:
    """Measure every variant, trials interleaved."""
    host = Host()
    obj = host.add_object("iothread", "bench-idle", poll_max_ns=0)
    assert isinstance(obj, IOThread)
    result = IdleResult(trials, seconds)
    try:
        before = read_steal()
        for t in range(trials):
            order = VARIANTS[t % len(VARIANTS) :] + VARIANTS[: t % len(VARIANTS)]
            for v in order:
                result.samples.setdefault(v.name, []).append(trial(host, obj, v, seconds))
            log(f"iothread_idle: {t + 1}/{trials} trials")
        result.steal = steal_percent(before, read_steal())
    finally:
        host.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="interleaved trials (5)")
    parser.add_argument("--seconds", type=float, default=0.5, help="idle phase length (0.5)")
    args = parser.parse_args()
    print(run(args.trials, args.seconds).markdown())


if __name__ == "__main__":
    main()
