"""Request latency through an iothread's poll handler, across processes and in-process.

The server is a handler on a loop; the client sends one request at a time
over the shared-memory rings of :mod:`_ring` and waits for the answer:

* **qomhost**: ``Host().add_object("iothread", ...)``, the handler registered
  with ``set_event_notifier(notifier, on_event, io_poll=pending,
  io_poll_ready=serve_polled)``, where ``pending`` reads the request head (no
  system call); the client kicks every request, as the set-up of the goal
  says. One row also passes ``io_poll_begin=poll_begin, io_poll_end=poll_end``,
  which set and clear the ring's ``NO_KICK`` word, so that the client does not
  kick while the loop polls (as virtio's ``VRING_USED_F_NO_NOTIFY``; :mod:`_ring`
  explains the lost-wake-up race, the fence and the 1 ms re-check that
  bounds a lost kick). ``poll-max-ns`` 0 is a blocking loop; otherwise
  QEMU's adaptive window decides how long the loop polls before it blocks.
  Every ``poll_yield_ns`` (4 µs) of polling the loop yields the CPU and, when
  another thread of the process is seen to need it, pauses without the GIL
  (:mod:`qomhost.aio.gil`). "sched_yield only" rows keep the yields but take
  out the pauses (what the loop did before they existed); "no GIL yield" rows
  set ``AioContext.poll_yield_ns = 0`` (the poller then holds the GIL for the
  whole window).
* **asyncio** and **uvloop** (if installed: ``pip install -e '.[bench]'``):
  an event loop in its own thread waiting on the request eventfd with
  ``loop.add_reader``.
* **floors** (cross-process only): loops that do nothing but poll the ring
  and never block, so the client never kicks them: the same handler called
  by a bare Python ``while`` loop in a thread (:func:`_ring.busy_poll`), and
  ``ring_server.c``, a C process. Against the first, what qomhost's loop
  adds to a polled answer shows; against the second, what Python costs; and
  both say whether the goal's bound is within reach on this machine at all.

**Cross-process**: the client is another process (the venv Python running
``_ring.py``) that inherits the memfd and both eventfds. It either
busy-waits on the response head (``spin``: the server sends no response
kick, as a virtio driver that polls its used ring) or blocks in epoll on
the response eventfd (``block``); either kicks the request eventfd only
while ``NO_KICK`` is 0 (always, but in the one row that sets it). **In-process**:
the client is this process's main thread (``block`` only: a spinning client
would hold the GIL the handler needs), with the two threads where the
scheduler puts them, pinned to one CPU, and pinned to two (``PLACEMENTS``):
a polling loop hands the GIL to a thread on its own CPU by yielding the CPU,
to one on the other CPU by pausing long enough for that thread to wake and
take the lock (a yield alone lets it go for too short a moment). The
scheduler seldom moves a thread during a trial, so the "as scheduled" trials
start, in turn, from both placements (``AS_SCHEDULED_STARTS``), and the
table says where each trial ended.

Each trial is ``N`` round trips after ``WARM`` unmeasured ones; trials of
all variants are interleaved, and each figure is the median over trials of
the per-trial p50 / p99.

Usage: ``.venv/bin/python benchmarks/iothread_latency.py [--trials 11] [--round-trips 1500]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib.metadata
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import ROOT, VENV_PYTHON, log, median, read_steal, steal_percent, table
from _ring import (
    NO_KICK,
    RECHECK_NS,
    STOP,
    Channel,
    RingServer,
    Trips,
    busy_poll,
    client_round_trips,
)

from qomhost.aio.context import POLL_YIELD_NS, EventNotifier
from qomhost.aio.gil import GilYield
from qomhost.host import Host
from qomhost.objects.iothread import IOTHREAD_POLL_MAX_NS_DEFAULT, IOThread

#: the cross-process clients: the same protocol in Python and in C
PYTHON_CLIENT = (VENV_PYTHON, str(ROOT / "benchmarks" / "_ring.py"))
C_CLIENT_SOURCE = ROOT / "benchmarks" / "ring_client.c"
C_SERVER_SOURCE = ROOT / "benchmarks" / "ring_server.c"
WARM = 300
#: polling windows measured besides 0 and the default
LARGE_WINDOWS = (100_000, 1_000_000)


def _no_pause() -> None:
    """A pause that never lets go of the GIL (and so never sees a hand-over)."""


class QomhostServer:
    """One qomhost iothread; each trial sets its polling parameters anew."""

    def __init__(self) -> None:
        self.host = Host()
        obj = self.host.add_object("iothread", "bench-io", poll_max_ns=0)
        assert isinstance(obj, IOThread) and obj.context is not None
        self.iothread = obj
        self.context = obj.context

    @property
    def thread_id(self) -> int:
        """The iothread's native thread id."""
        return self.iothread.thread_id

    def configure(self, poll_max_ns: int, gil: str) -> None:
        """Set ``poll-max-ns`` as ``qom-set`` does (the window restarts at 0),
        and how the loop lets go of the GIL (``Variant.gil``), afresh."""
        self.context.poll_yield_ns = 0 if gil == "none" else POLL_YIELD_NS
        # between trials the loop has no handler, so it does not poll and
        # the old yield is not in use
        self.context.gil_yield.close()
        self.context.gil_yield = GilYield() if gil == "pauses" else GilYield(pause=_no_pause)
        self.host.set_property_json(self.iothread, "poll-max-ns", poll_max_ns)

    def attach(
        self, notifier: EventNotifier, server: RingServer, channel: Channel, no_kick: bool = True
    ) -> None:
        """Register the handler in the iothread; without ``no_kick``, with no
        ``io_poll_begin``/``io_poll_end`` (the client then always kicks)."""
        ctx = self.context
        ctx.submit(
            lambda: ctx.set_event_notifier(
                notifier,
                server.on_event,
                io_poll=server.pending,
                io_poll_ready=server.serve_polled,
                io_poll_begin=server.poll_begin if no_kick else None,
                io_poll_end=server.poll_end if no_kick else None,
            )
        ).result(10)

    def detach(self, notifier: EventNotifier, server: RingServer) -> None:
        """Unregister it (which ends its polling) and cancel its re-check."""
        ctx = self.context

        def detach() -> None:
            ctx.set_event_notifier(notifier, None)
            server.stop()

        ctx.submit(detach).result(10)

    def close(self) -> None:
        """Stop the iothread."""
        self.host.close()


class AsyncioServer:
    """An asyncio-compatible loop running forever in its own thread."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.loop = factory()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    @property
    def thread_id(self) -> int:
        """The loop thread's native thread id."""
        assert self.thread.native_id is not None
        return self.thread.native_id

    def _in_loop(self, fn: Callable[[], object]) -> None:
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            fn()
            done.set_result(None)

        self.loop.call_soon_threadsafe(run)
        done.result(10)

    def attach(
        self, notifier: EventNotifier, server: RingServer, channel: Channel, no_kick: bool = True
    ) -> None:
        """``add_reader`` on the request eventfd (no polling: the client always kicks)."""
        self._in_loop(lambda: self.loop.add_reader(notifier.fd, server.on_readable))

    def detach(self, notifier: EventNotifier, server: RingServer) -> None:
        """``remove_reader``."""
        self._in_loop(lambda: self.loop.remove_reader(notifier.fd))

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class NoWindow:
    """What the bare loop gives the handler in place of an ``AioContext``:
    a window of 0, so that the handler notes one at each answer as it does
    on qomhost's loop and the two compare like with like."""

    poll_ns = 0

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Any:
        """Never called: the bare loop never stops polling (no ``io_poll_end``)."""
        raise NotImplementedError


class PythonFloor:
    """A floor: the handler's poll callback called by a bare Python loop
    (:func:`_ring.busy_poll`) in a thread of its own, one per trial."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.context = NoWindow()

    def attach(
        self, notifier: EventNotifier, server: RingServer, channel: Channel, no_kick: bool = True
    ) -> None:
        """Start polling (``NO_KICK`` is set for good: the loop never blocks)."""
        self.thread = threading.Thread(target=busy_poll, args=(server,), daemon=True)
        self.thread.start()

    def detach(self, notifier: EventNotifier, server: RingServer) -> None:
        """Stop the loop and join its thread."""
        server.words[STOP] = 1
        if self.thread is not None:
            self.thread.join(10)
            self.thread = None

    def close(self) -> None:
        """Nothing outlives a trial."""


class CFloor:
    """A floor: ``ring_server.c``, a C process that only busy-polls the ring."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = tuple(command)
        self.process: subprocess.Popen[str] | None = None

    def attach(
        self, notifier: EventNotifier, server: RingServer, channel: Channel, no_kick: bool = True
    ) -> None:
        """Start the process on the channel's mapping and response eventfd;
        return once it polls (it has set ``NO_KICK``)."""
        fds = (channel.memfd, channel.resp_fd)
        self.process = subprocess.Popen(
            [*self.command, *map(str, fds)], pass_fds=fds, stdout=subprocess.PIPE, text=True
        )
        while not channel.words[NO_KICK]:
            if self.process.poll() is not None:
                raise RuntimeError("ring_server exited before it polled")
            time.sleep(0.001)

    def detach(self, notifier: EventNotifier, server: RingServer) -> None:
        """Stop the process and check that it answered."""
        server.words[STOP] = 1
        assert self.process is not None
        out, _ = self.process.communicate(timeout=10)
        self.process = None
        if not int(out):
            raise RuntimeError("ring_server answered nothing")

    def close(self) -> None:
        """Nothing outlives a trial."""


@dataclass(frozen=True)
class Variant:
    """A server and its settings."""

    name: str
    kind: str  # "qomhost", "asyncio", "uvloop", or a floor: "python-floor", "c-floor"
    poll_max_ns: int = 0
    #: how the polling loop lets go of the GIL: "pauses" (the default: yields,
    #: and pauses while another thread needs the GIL), "yield" (yields only),
    #: "none" (``poll_yield_ns`` 0)
    gil: str = "pauses"
    no_kick: bool = False  # io_poll_begin/io_poll_end tell the client not to kick

    @property
    def polls(self) -> bool:
        """Whether this setting is a qomhost loop that busy-polls."""
        return self.kind == "qomhost" and self.poll_max_ns > 0

    @property
    def floor(self) -> bool:
        """Whether this is a bare busy-poll loop, not an event loop (cross-process only)."""
        return self.kind.endswith("floor")

    @property
    def blocks(self) -> bool:
        """Whether this is an event loop that blocks: what the goal measures against."""
        return not (self.polls or self.floor)


@dataclass
class Sample:
    """One trial: percentiles of its round trips, and how the server found the work."""

    p50_us: float
    p99_us: float
    polled: float  # share of answers whose request was found by polling
    window_ns: float | None  # median poll_ns at the answers (qomhost only)
    own_us: float  # p50 of the client's own part of a round trip (up to sent)
    kicked: float  # share of measured requests the client kicked
    lost_kicks: int  # requests found by the server's re-check, not kicked
    late_kicks: int  # ... kicked, but the kick came after the re-check
    #: in-process: whether the client and the server's thread were last on
    #: the same CPU when the trial ended
    one_cpu: bool | None = None
    #: in-process: how often the scheduler moved either thread to another CPU
    #: during the trial (None where the kernel does not say)
    migrations: int | None = None
    #: p50 of the client's wake-ups (from the server's response kick to the
    #: client running again), over the requests it slept for; None if none
    wake_us: float | None = None


def variants(uvloop_ok: bool) -> list[Variant]:
    """Every server setting, blocking ones first."""
    out = [
        Variant("qomhost iothread, poll-max-ns=0 (blocking)", "qomhost"),
        Variant("asyncio, add_reader (blocking)", "asyncio"),
    ]
    if uvloop_ok:
        out.append(Variant("uvloop, add_reader (blocking)", "uvloop"))
    for window in (IOTHREAD_POLL_MAX_NS_DEFAULT, *LARGE_WINDOWS):
        label = f"{window} (default)" if window == IOTHREAD_POLL_MAX_NS_DEFAULT else str(window)
        out.append(Variant(f"qomhost iothread, poll-max-ns={label}", "qomhost", window))
    for window in LARGE_WINDOWS:
        out.append(
            Variant(
                f"qomhost iothread, poll-max-ns={window}, sched_yield only",
                "qomhost",
                window,
                gil="yield",
            )
        )
    for window in (IOTHREAD_POLL_MAX_NS_DEFAULT, *LARGE_WINDOWS):
        out.append(
            Variant(
                f"qomhost iothread, poll-max-ns={window}, no GIL yield",
                "qomhost",
                window,
                gil="none",
            )
        )
    # the effect of skipped kicks: the default window, the client not kicking
    # while the loop polls
    out.append(
        Variant(
            f"qomhost iothread, poll-max-ns={IOTHREAD_POLL_MAX_NS_DEFAULT}, "
            "client skips kicks while polled",
            "qomhost",
            IOTHREAD_POLL_MAX_NS_DEFAULT,
            no_kick=True,
        )
    )
    out.append(Variant("floor: the same handler, bare Python busy-poll loop", "python-floor"))
    out.append(Variant("floor: C busy-poll loop (`ring_server.c`)", "c-floor"))
    return out


#: where the in-process trials run the client (this process's main thread) and
#: the server's loop thread (see the module's docstring): (CPUs of the two, or
#: None: where the scheduler puts them; what it means)
PLACEMENTS: dict[str, tuple[tuple[int, int] | None, str]] = {
    "as scheduled": (None, "both threads where the scheduler puts them"),
    "one CPU": ((0, 0), "both threads pinned to the first CPU"),
    "two CPUs": ((0, 1), "the client pinned to the first CPU, the server's thread to the second"),
}


#: where the "as scheduled" trials start, in turn: the two threads are pinned
#: there for :data:`SETTLE_ROUND_TRIPS` unmeasured round trips, then let go.
#: The scheduler seldom moves either thread during a trial, so without this
#: the placement would be the one the previous trial left: after a
#: cross-process trial against a polling loop, whose thread kept its CPU
#: while the client process ran on the other, the main thread wakes on
#: the other CPU; after a blocking loop, often on the same one. Each row would
#: then measure a different placement.
AS_SCHEDULED_STARTS: tuple[tuple[int, int], ...] = ((0, 0), (0, 1))
SETTLE_ROUND_TRIPS = 50


@contextlib.contextmanager
def pinned(server_tid: int, cpus: tuple[int, int] | None) -> Iterator[None]:
    """Run this thread and ``server_tid`` on ``cpus`` (client's, server's) for
    the block; ``None``: leave them be."""
    if cpus is None:
        yield
        return
    mine, theirs = os.sched_getaffinity(0), os.sched_getaffinity(server_tid)
    os.sched_setaffinity(0, {cpus[0]})
    os.sched_setaffinity(server_tid, {cpus[1]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)
        os.sched_setaffinity(server_tid, theirs)


def last_cpu(tid: int) -> int:
    """The CPU thread ``tid`` of this process last ran on (``/proc``'s "processor")."""
    with open(f"/proc/self/task/{tid}/stat", "rb") as f:
        # the fields after the command name, which may hold spaces, start at
        # the third; "processor" is the 39th
        return int(f.read().rsplit(b")", 1)[1].split()[36])


def migrations(tid: int) -> int | None:
    """How often thread ``tid`` of this process has moved to another CPU so far."""
    try:
        with open(f"/proc/self/task/{tid}/sched") as f:
            for line in f:
                if line.startswith("se.nr_migrations"):
                    return int(line.split()[-1])
    except OSError:
        pass
    return None


def _moves(tids: Sequence[int]) -> int | None:
    """:func:`migrations` of these threads together."""
    counts = [migrations(tid) for tid in tids]
    return None if None in counts else sum(c for c in counts if c is not None)


def build_c(source: Path, directory: Path) -> tuple[str]:
    """Compile ``source`` into ``directory``; its command."""
    binary = directory / source.stem
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(source)], check=True)
    return (str(binary),)


def _percentile(sorted_values: list[int], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))] / 1000


def trial(
    servers: dict[str, Any],
    variant: Variant,
    style: str,
    in_process: bool,
    round_trips: int,
    client: Sequence[str] = PYTHON_CLIENT,
) -> Sample:
    """One client run against one server setting; ``client``: the cross-process
    client's command, to which the fds and the run's parameters are added."""
    server = servers[variant.kind]
    if isinstance(server, QomhostServer):
        server.configure(variant.poll_max_ns, variant.gil)
    notifier = EventNotifier()
    channel = Channel(notifier.fd)
    loop = getattr(server, "context", None)  # where the handler notes the window
    handler = RingServer(channel, loop)
    server.attach(notifier, handler, channel, variant.no_kick)
    one_cpu = moved = None
    try:
        if in_process:
            threads = (threading.get_native_id(), server.thread_id)
            before = _moves(threads)
            trips = client_round_trips(
                channel.words, notifier.fd, channel.resp_fd, style, round_trips, WARM
            )
            after = _moves(threads)
            one_cpu = last_cpu(threads[0]) == last_cpu(threads[1])
            if before is not None and after is not None:
                moved = after - before
        else:
            fds = channel.fds()
            argv = [*client, *map(str, fds), style]
            argv += [str(round_trips), str(WARM)]
            out = subprocess.run(
                argv, pass_fds=fds, capture_output=True, text=True, check=True, timeout=120
            ).stdout
            times, own, kicked, woke = out.split("\n")[:4]
            trips = Trips(
                [int(x) for x in times.split()],
                [int(x) for x in own.split()],
                int(kicked),
                [int(x) for x in woke.split()],
            )
    finally:
        server.detach(notifier, handler)
        notifier.close()
        channel.close()
    rtts, own_times, wakes = sorted(trips.rtts), sorted(trips.own), sorted(trips.wakes)
    answered = handler.by_poll + handler.by_event + handler.rechecked
    windows = sorted(handler.windows)
    return Sample(
        _percentile(rtts, 0.5),
        _percentile(rtts, 0.99),
        handler.by_poll / answered if answered else 0.0,
        float(windows[len(windows) // 2]) if windows else None,
        _percentile(own_times, 0.5),
        trips.kicks / round_trips,
        handler.lost_kicks,
        handler.late_kicks,
        one_cpu,
        moved,
        _percentile(wakes, 0.5) if wakes else None,
    )


@dataclass
class LatencyResult:
    """Samples per (variant name, client style) for both set-ups."""

    trials: int
    round_trips: int
    variants: list[Variant]
    uvloop_note: str
    #: by (variant name, client style, client language)
    cross: dict[tuple[str, str, str], list[Sample]] = field(default_factory=dict)
    #: the in-process placements measured (keys of PLACEMENTS)
    placements: list[str] = field(default_factory=list)
    #: by (variant name, placement of the two threads: see PLACEMENTS)
    inproc: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)
    steal: float = 0.0

    @staticmethod
    def _med(samples: list[Sample], attr: str) -> float:
        return median([getattr(s, attr) for s in samples])

    @staticmethod
    def _wake(samples: list[Sample]) -> str:
        values = [s.wake_us for s in samples if s.wake_us is not None]
        return f"{median(values):.1f}" if values else "–"

    @staticmethod
    def _window(samples: list[Sample]) -> str:
        values = [s.window_ns for s in samples if s.window_ns is not None]
        return f"{median(values):,.0f}" if values else "–"

    @staticmethod
    def _kicked(samples: list[Sample]) -> str:
        return f"{100 * median([s.kicked for s in samples]):.0f} %"

    def stalls(self) -> str:
        """Requests the server's re-check answered (lost and late kicks), by row."""
        runs = [
            (f"{name} ({style}, {language} client)", samples)
            for (name, style, language), samples in self.cross.items()
        ]
        runs += [
            (f"{name} (in-process, {placement})", samples)
            for (name, placement), samples in self.inproc.items()
        ]
        requests = sum(len(samples) for _, samples in runs) * self.round_trips
        recheck = f"the server's re-check ({RECHECK_NS // 1000} µs after it stopped polling)"
        lines = []
        for attr, what in (
            ("lost_kicks", "not kicked (the lost-wake-up race was lost)"),
            ("late_kicks", "kicked, but the re-check came first (no stall)"),
        ):
            counts = {label: sum(getattr(s, attr) for s in samples) for label, samples in runs}
            total = sum(counts.values())
            which = "; ".join(f"{label}: {n}" for label, n in counts.items() if n)
            lines.append(
                f"- requests found by {recheck}, {what}: "
                + (f"**{total}** of {requests:,} ({which})" if total else f"none of {requests:,}")
            )
        return "\n".join(lines)

    def best_blocking(self, samples: dict[str, list[Sample]]) -> tuple[str, float]:
        """The blocking loop with the lowest median p50: (name, p50 µs)."""
        blocking = [v.name for v in self.variants if v.blocks]
        name = min(blocking, key=lambda n: self._med(samples[n], "p50_us"))
        return name, self._med(samples[name], "p50_us")

    def cross_markdown(self, language: str) -> str:
        """The cross-process table of one client and the goal lines."""
        styles = ("spin", "block")
        cross = {
            (name, style): samples
            for (name, style, lang), samples in self.cross.items()
            if lang == language
        }
        best = {
            s: self.best_blocking({v.name: cross[v.name, s] for v in self.variants}) for s in styles
        }
        header = ["server"]
        for style in styles:
            header += [
                f"{style}: p50 µs",
                "p99 µs",
                "p50 / best blocking",
                "by polling",
                "window ns",
                "kicked",
            ]
        header.append("block: client wake µs")
        rows = []
        for v in self.variants:
            row = [v.name]
            for style in styles:
                samples = cross[v.name, style]
                p50 = self._med(samples, "p50_us")
                row += [
                    f"{p50:.1f}",
                    f"{self._med(samples, 'p99_us'):.1f}",
                    f"{p50 / best[style][1]:.2f}",
                    f"{100 * self._med(samples, 'polled'):.0f} %" if v.polls else "–",
                    self._window(samples) if v.polls else "–",
                    self._kicked(samples),
                ]
            row.append(self._wake(cross[v.name, "block"]))
            rows.append(row)
        default = next(
            v.name for v in self.variants if v.poll_max_ns == IOTHREAD_POLL_MAX_NS_DEFAULT
        )
        blocking = [v.name for v in self.variants if v.blocks]
        # each trial's best blocking p50: ratios within a trial, whose
        # variants ran minutes apart at most
        best_range = {
            style: [min(cross[b, style][t].p50_us for b in blocking) for t in range(self.trials)]
            for style in styles
        }
        lines = []
        for style in styles:
            name, p50 = best[style]
            ours = self._med(cross[default, style], "p50_us")
            paired = [
                sample.p50_us / trial_best
                for sample, trial_best in zip(cross[default, style], best_range[style], strict=True)
            ]
            lines.append(
                f"- {style} client: best blocking loop is {name.split(',')[0]} at {p50:.1f} µs "
                f"(per trial {min(best_range[style]):.1f}–{max(best_range[style]):.1f} µs); "
                "default polling "
                f"window {ours:.1f} µs = **{ours / p50:.2f}×** "
                f"({'meets' if ours <= 0.2 * p50 else 'misses'} the 0.2× goal); within each "
                f"trial {min(paired):.2f}–{max(paired):.2f}×, in "
                f"{sum(r <= 0.2 for r in paired)} of {len(paired)} trials at most 0.2×"
            )
        # the client's own part, where it kicks every request: the least any
        # server's round trip can be
        own = self._med(cross[default, "spin"], "own_us")
        floor = own / best["spin"][1]
        lines.append(
            f"- the {language} client's own part of a request (from its start to the request "
            f"sent, the kick included): {own:.2f} µs at the median, **{floor:.2f}×** the best "
            "blocking loop for the spin client: no server it kicks can answer faster"
        )
        lines.append(self._floors(cross, best_range["spin"]))
        return table(header, rows) + "\n\n" + "\n".join(lines)

    def _floors(self, cross: dict[tuple[str, str], list[Sample]], best: list[float]) -> str:
        """The spin client's round trip with the bare loops and with qomhost's
        loop with the same (skipped) kicks, each trial against the goal's
        bound in that trial (``best``: its best blocking loop's p50)."""

        def spin(name: str) -> tuple[str, int]:
            samples = cross[name, "spin"]
            ratios = [s.p50_us / b for s, b in zip(samples, best, strict=True)]
            text = (
                f"{min(ratios):.2f}–{max(ratios):.2f}× "
                f"({self._med(samples, 'p50_us'):.2f} µs at the median)"
            )
            return text, sum(r <= 0.2 for r in ratios)

        names = {v.kind: v.name for v in self.variants if v.floor}
        ours = next(v.name for v in self.variants if v.no_kick)
        c_text, _ = spin(names["c-floor"])
        python_text, python_met = spin(names["python-floor"])
        ours_text, ours_met = spin(ours)
        extra = sorted(
            a.p50_us - b.p50_us
            for a, b in zip(cross[ours, "spin"], cross[names["python-floor"], "spin"], strict=True)
        )
        return (
            "- floors, spin client (it skips its kick, as the floors never block), each trial "
            f"against its best blocking loop: a C loop that only polls answers in {c_text}; a "
            f"bare Python loop polling the same handler in {python_text}, at most 0.2× in "
            f"{python_met} of {len(best)} trials; qomhost's default window with skipped kicks "
            f"in {ours_text}, at most 0.2× in {ours_met}. qomhost's loop minus the bare loop, "
            f"per trial: {median(extra):+.2f} µs at the median ({extra[0]:+.2f} to "
            f"{extra[-1]:+.2f})"
        )

    def inproc_markdown(self, placement: str) -> str:
        """The in-process table of one placement of the threads, and the goal lines."""
        inproc = {name: v for (name, where), v in self.inproc.items() if where == placement}
        header = ["server", "p50 µs", "p99 µs", "p50 / blocking", "p99 / blocking"]
        header += ["by polling", "window ns", "kicked", "client wake µs", "on one CPU"]
        b50 = self._med(inproc[self.variants[0].name], "p50_us")
        b99 = self._med(inproc[self.variants[0].name], "p99_us")
        labels = {
            "pauses": "as they are (yields and pauses)",
            "yield": "with sched_yield only",
            "none": "without the GIL yield",
        }
        rows = []
        ratios: dict[str, list[tuple[float, float]]] = {gil: [] for gil in labels}
        for v in self.variants:
            if v.floor:
                continue
            samples = inproc[v.name]
            p50 = self._med(samples, "p50_us")
            p99 = self._med(samples, "p99_us")
            if v.polls and not v.no_kick:
                ratios[v.gil].append((p50 / b50, p99 / b99))
            rows.append(
                [
                    v.name,
                    f"{p50:.1f}",
                    f"{p99:.1f}",
                    f"{p50 / b50:.2f}",
                    f"{p99 / b99:.2f}",
                    f"{100 * self._med(samples, 'polled'):.0f} %" if v.polls else "–",
                    self._window(samples) if v.polls else "–",
                    self._kicked(samples),
                    self._wake(samples),
                    f"{sum(bool(s.one_cpu) for s in samples)} of {len(samples)}",
                ]
            )

        def span(values: list[float]) -> str:
            return f"{min(values):.2f}–{max(values):.2f}×"

        lines = [
            f"- polling windows {label}, against qomhost's blocking loop: "
            f"p50 {span([r[0] for r in ratios[gil]])}, "
            f"p99 {span([r[1] for r in ratios[gil]])}"
            for gil, label in labels.items()
            if ratios[gil]
        ]
        if PLACEMENTS[placement][0] is None:
            lines.append(self._by_placement(inproc))
        return table(header, rows) + "\n\n" + "\n".join(lines)

    def _by_placement(self, inproc: dict[str, list[Sample]]) -> str:
        """qomhost's rows as they are, their trials split by where the two
        threads were at the end, each against the blocking loop's trials
        that ended the same way: like compared with like."""
        rows = [
            v for v in self.variants if v.kind == "qomhost" and v.gil == "pauses" and not v.no_kick
        ]
        blocking = rows[0]

        def p50(name: str, one_cpu: bool) -> tuple[float, int] | None:
            chosen = [s for s in inproc[name] if bool(s.one_cpu) == one_cpu]
            return (self._med(chosen, "p50_us"), len(chosen)) if chosen else None

        def part(v: Variant, one_cpu: bool) -> str:
            ours = p50(v.name, one_cpu)
            if ours is None:
                return "–"
            text = f"{ours[0]:.1f} µs ({ours[1]}"
            base = p50(blocking.name, one_cpu)
            if v is not blocking and base is not None:
                text += f", {ours[0] / base[0]:.2f}×"
            return text + ")"

        line = (
            "- by where the two threads were when the trial ended, p50 on one CPU | on two "
            "(trials, and the ratio to the blocking loop's trials that ended the same way): "
            + "; ".join(
                f"{v.name.removeprefix('qomhost iothread, ')} {part(v, True)} | {part(v, False)}"
                for v in rows
            )
        )
        moves = [s.migrations for samples in inproc.values() for s in samples]
        if None not in moves:
            line += (
                f". The scheduler moved a thread to the other CPU {sum(m for m in moves if m)} "
                f"times during these {len(moves)} trials, in {sum(1 for m in moves if m)} of "
                "them (`se.nr_migrations`)"
            )
        return line

    def markdown(self) -> str:
        """Both tables."""
        note = (
            f"{self.trials} interleaved trials of {self.round_trips} round trips (after {WARM} "
            f"unmeasured) per row; medians over trials of each trial's p50 / p99; steal time "
            f'during the run {self.steal:.1f} %. "by polling": share of requests the handler '
            'found through its poll callback rather than the eventfd; "window": the median '
            f'`poll_ns` when answering; "kicked": the share of requests the client kicked '
            '(in the "skips kicks" row it skips the kick while the server\'s loop polls); '
            '"client wake": the p50 over the requests a `block` client slept for of the time '
            "from the server's response kick to the client running again (in-process, with "
            "the GIL), a part of the round trip no server can shorten; "
            '"on one CPU" (in-process): the trials at whose end the client and the '
            "server's thread were last on the same CPU. "
            f"{self.uvloop_note}"
        )
        return "\n\n".join(
            [
                note,
                "**Cross-process, Python client** (another process running `_ring.py`):",
                self.cross_markdown("Python"),
                "**Cross-process, C client** (another process running `ring_client.c`, the same "
                "client compiled with `gcc -O2`, as a guest's driver or a DPDK application is "
                "compiled code; its spin loop has the `pause` a driver's `cpu_relax()` has):",
                self.cross_markdown("C"),
                *(
                    part
                    for placement in self.placements
                    for part in (
                        f"**In-process, {placement}** (client: the main thread, `block` "
                        f"style; {PLACEMENTS[placement][1]}):",
                        self.inproc_markdown(placement),
                    )
                ),
                '**Skipped kicks** (the "skips kicks" rows; the client skips its kick while '
                "the server's loop polls, see `benchmarks/_ring.py`):",
                self.stalls(),
            ]
        )


def run(trials: int = 11, round_trips: int = 1500) -> LatencyResult:
    """Measure every variant, both set-ups, trials interleaved."""
    servers: dict[str, Any] = {"qomhost": QomhostServer(), "python-floor": PythonFloor()}
    import asyncio

    servers["asyncio"] = AsyncioServer(asyncio.new_event_loop)
    try:
        import uvloop

        servers["uvloop"] = AsyncioServer(uvloop.new_event_loop)
        note = f"uvloop {importlib.metadata.version('uvloop')}."
    except ImportError:
        note = "uvloop is not installed (`pip install -e '.[bench]'`): no uvloop row."
    chosen = variants("uvloop" in servers)
    result = LatencyResult(trials, round_trips, chosen, note)
    allowed = os.sched_getaffinity(0)
    result.placements = [
        name for name, (cpus, _why) in PLACEMENTS.items() if cpus is None or set(cpus) <= allowed
    ]
    starts = [cpus for cpus in AS_SCHEDULED_STARTS if set(cpus) <= allowed]
    build = tempfile.TemporaryDirectory(prefix="qomhost-bench-")
    try:
        clients = {"Python": PYTHON_CLIENT, "C": build_c(C_CLIENT_SOURCE, Path(build.name))}
        servers["c-floor"] = CFloor(build_c(C_SERVER_SOURCE, Path(build.name)))
        before = read_steal()
        for t in range(trials):
            # rotate the order so that drift on a shared host hits every variant alike
            order = chosen[t % len(chosen) :] + chosen[: t % len(chosen)]
            for v in order:
                for language, client in clients.items():
                    for style in ("spin", "block"):
                        sample = trial(servers, v, style, False, round_trips, client)
                        result.cross.setdefault((v.name, style, language), []).append(sample)
                if v.floor:
                    continue  # a bare loop would hold the GIL the client needs
                tid = servers[v.kind].thread_id
                for placement in result.placements:
                    cpus = PLACEMENTS[placement][0]
                    if cpus is None and starts:
                        # where the threads start is otherwise left by what
                        # ran before (see AS_SCHEDULED_STARTS)
                        with pinned(tid, starts[t % len(starts)]):
                            trial(servers, v, "block", True, SETTLE_ROUND_TRIPS)
                    with pinned(tid, cpus):
                        sample = trial(servers, v, "block", True, round_trips)
                    result.inproc.setdefault((v.name, placement), []).append(sample)
            log(f"iothread_latency: {t + 1}/{trials} trials")
        result.steal = steal_percent(before, read_steal())
    finally:
        for server in servers.values():
            server.close()
        build.cleanup()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=11, help="interleaved trials (11)")
    parser.add_argument("--round-trips", type=int, default=1500, help="per trial (1500)")
    args = parser.parse_args()
    print(run(args.trials, args.round_trips).markdown())


if __name__ == "__main__":
    main()
