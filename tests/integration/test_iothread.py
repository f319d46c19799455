"""iothreads for real: OS threads of a running qomhost, and their event loops in-process.

The differential suite compares what QEMU and qomhost *print* about iothreads,
with thread ids masked. Here the ids are checked against the kernel
(``/proc/<pid>/task``), creation and deletion are checked not to leak threads
or descriptors, and the loop of an iothread is driven through
:class:`~qomhost.host.Host`: work placed with ``submit`` and ``run_in_executor``,
polling parameters changed at run time with ``qom-set``, poll callbacks run
inside the busy-polling window, and the asyncio bridge.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

import pytest

from qomhost.aio.context import AioContext, EventNotifier
from qomhost.errors import QemuError
from qomhost.host import Host
from qomhost.monitor.commands import dispatch
from qomhost.objects.iothread import IOThread

QOMHOST = Path(sys.executable).parent / "qomhost"
BASE_ARGS = ("-machine", "none", "-nodefaults", "-display", "none")

#: upper bound, in seconds, for any single wait
TIMEOUT = 10.0


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)


# --------------------------------------------------------------------------- a qomhost process


class QmpFailed(AssertionError):
    """A QMP command answered with an error."""

    def __init__(self, error: dict[str, str]) -> None:
        super().__init__(f"{error['class']}: {error['desc']}")
        self.error = error


class StdioQmp:
    """A qomhost process with its QMP monitor on stdin/stdout."""

    def __init__(self, workdir: Path, *args: str) -> None:
        if not (QOMHOST.is_file() and os.access(QOMHOST, os.X_OK)):
            pytest.fail(f"qomhost is not installed next to {sys.executable}", pytrace=False)
        self._stderr: IO[bytes] = (workdir / "stderr").open("wb")
        self.proc = subprocess.Popen(
            [str(QOMHOST), *BASE_ARGS, "-qmp", "stdio", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=workdir,
        )
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        self._buf = b""
        assert "QMP" in self._message()
        self.execute("qmp_capabilities")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _message(self) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                raise AssertionError(f"no QMP message within {TIMEOUT:g} s ({self._buf!r})")
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise AssertionError(f"qomhost closed its stdout ({self._buf!r})")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def execute(self, command: str, **arguments: object) -> Any:
        """Run ``command`` (``_`` in argument names becomes ``-``); its ``return`` value."""
        message: dict[str, object] = {"execute": command}
        if arguments:
            message["arguments"] = {k.replace("_", "-"): v for k, v in arguments.items()}
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()
        while True:
            reply = self._message()
            if "event" in reply:
                continue
            if "error" in reply:
                raise QmpFailed(reply["error"])
            return reply["return"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.execute("quit")
                self.proc.wait(TIMEOUT)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._selector.close()
        self._stderr.close()


@pytest.fixture
def qomhost_qmp(tmp_path: Path) -> Iterator[StdioQmp]:
    """A running ``qomhost -machine none ... -qmp stdio``."""
    qmp = StdioQmp(tmp_path)
    try:
        yield qmp
    finally:
        qmp.close()


def tasks(pid: int) -> set[int]:
    """The thread ids of process ``pid``."""
    return {int(name) for name in os.listdir(f"/proc/{pid}/task")}


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def add_iothread(qmp: StdioQmp, ident: str, **props: object) -> None:
    assert qmp.execute("object-add", qom_type="iothread", id=ident, **props) == {}


_HMP_THREAD_ID = re.compile(r"^(\S+):\r\n  thread_id=(\d+)\r$", re.M)


def test_thread_ids_are_threads_of_the_process(tmp_path: Path) -> None:
    qmp = StdioQmp(tmp_path, "-object", "iothread,id=cli1")
    try:
        add_iothread(qmp, "io1")
        add_iothread(qmp, "io2", poll_max_ns=0)
        infos = qmp.execute("query-iothreads")
        ids = {info["id"]: info["thread-id"] for info in infos}
        assert set(ids) == {"cli1", "io1", "io2"}
        assert len(set(ids.values())) == 3, ids
        for ident, tid in ids.items():
            assert tid != qmp.pid, f"{ident} reports the main thread"
            status = Path(f"/proc/{qmp.pid}/task/{tid}/status").read_text()
            assert f"\nTgid:\t{qmp.pid}\n" in status, (ident, tid)
        assert set(ids.values()) <= tasks(qmp.pid)

        # HMP shows the same numbers (the differential suite masks them).
        text = qmp.execute("human-monitor-command", command_line="info iothreads")
        assert {name: int(tid) for name, tid in _HMP_THREAD_ID.findall(text)} == ids

        # Deleting an iothread ends its thread.
        qmp.execute("object-del", id="io1")
        wait_until(lambda: ids["io1"] not in tasks(qmp.pid), "io1's thread to end")
        assert {ids["cli1"], ids["io2"]} <= tasks(qmp.pid)
    finally:
        qmp.close()


def test_object_add_del_does_not_leak_threads_or_fds(qomhost_qmp: StdioQmp) -> None:
    qmp = qomhost_qmp
    pid = qmp.pid
    threads_before = len(tasks(pid))
    fds_before = open_fds(pid)

    add_iothread(qmp, "probe")
    assert len(tasks(pid)) == threads_before + 1
    qmp.execute("object-del", id="probe")
    wait_until(lambda: len(tasks(pid)) == threads_before, "the probe thread to end")

    for i in range(200):
        add_iothread(qmp, f"io{i}", poll_max_ns=i * 1000)
        assert qmp.execute("object-del", id=f"io{i}") == {}
    assert qmp.execute("query-iothreads") == []
    wait_until(lambda: len(tasks(pid)) == threads_before, "the thread count to settle")
    assert open_fds(pid) == fds_before

    # Several alive at once, then all deleted.
    for i in range(20):
        add_iothread(qmp, f"m{i}")
    assert len(tasks(pid)) == threads_before + 20
    for i in range(20):
        qmp.execute("object-del", id=f"m{i}")
    wait_until(lambda: len(tasks(pid)) == threads_before, "the thread count to settle")
    assert open_fds(pid) == fds_before


# --------------------------------------------------------------------------- in-process


@pytest.fixture
def host() -> Iterator[Host]:
    h = Host()
    try:
        yield h
    finally:
        h.close()


def qmp_call(host: Host, command: str, **arguments: object) -> object:
    """A QMP command run in-process, as a monitor would run it."""
    args = {k.replace("_", "-"): v for k, v in arguments.items()}
    return dispatch(host.command_context(), command, args)


def iothread(host: Host, ident: str = "io1", **props: object) -> tuple[IOThread, AioContext]:
    obj = host.add_object("iothread", ident, **props)
    assert isinstance(obj, IOThread)
    assert obj.context is not None
    return obj, obj.context


def in_loop(ctx: AioContext, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in the loop's thread and wait for its result."""
    return ctx.submit(fn).result(TIMEOUT)


def test_submit_runs_in_the_iothread(host: Host) -> None:
    io, ctx = iothread(host)
    tid = in_loop(ctx, threading.get_native_id)
    assert tid == io.thread_id == ctx.thread_id
    assert tid != threading.get_native_id()
    infos = qmp_call(host, "query-iothreads")
    assert isinstance(infos, list)
    assert infos[0]["thread-id"] == tid

    def boom() -> None:
        raise ValueError("from the iothread")

    with pytest.raises(ValueError, match="from the iothread"):
        ctx.submit(boom).result(TIMEOUT)
    assert in_loop(ctx, lambda: 6 * 7) == 42


class SteppingClock:
    """A clock for the loop: each reading is ``step`` ns after the previous one.

    With no poll callbacks the loop reads its clock twice per iteration, so
    every wait then lasts exactly ``step`` ns, whatever the machine does.
    """

    def __init__(self) -> None:
        self.now = 0
        self.step = 0

    def __call__(self) -> int:
        self.now += self.step
        return self.now


def grow_window(ctx: AioContext) -> int:
    """Grow the polling window to 8000 ns, then keep it there.

    A wait longer than poll-max-ns empties the window (poll-shrink is 0);
    waits of 1000 ns grow ``poll_ns`` from 0 to the first step, 4000; waits
    of 5000 ns grow it once more, to 8000; waits of 0 ns stay inside the
    window, so ``poll_ns`` holds until something resets it.
    """
    assert ctx.poll_shrink == 0 and ctx.poll_max_ns > 8000
    clock = SteppingClock()
    in_loop(ctx, lambda: setattr(ctx, "clock", clock))
    for step, target in ((ctx.poll_max_ns + 1, 0), (1000, 4000), (5000, 8000)):
        clock.step = step
        deadline = time.monotonic() + TIMEOUT
        while in_loop(ctx, lambda: ctx.poll_ns) != target:
            assert time.monotonic() < deadline, f"poll_ns does not reach {target}"
    clock.step = 0
    grown: int = in_loop(ctx, lambda: ctx.poll_ns)
    return grown


@pytest.mark.parametrize(
    ("prop", "value", "attr"),
    [
        ("poll-max-ns", 50_000_000, "poll_max_ns"),
        ("poll-grow", 3, "poll_grow"),
        ("poll-shrink", 2, "poll_shrink"),
    ],
)
def test_qom_set_poll_param_applies_at_once_and_restarts_the_window(
    host: Host, prop: str, value: int, attr: str
) -> None:
    _io, ctx = iothread(host, poll_max_ns=10**9)
    assert (ctx.poll_max_ns, ctx.poll_grow, ctx.poll_shrink) == (10**9, 0, 0)
    assert grow_window(ctx) == 8000

    assert qmp_call(host, "qom-set", path="/objects/io1", property=prop, value=value) == {}
    assert getattr(ctx, attr) == value
    # The next iteration already starts from an empty window.
    assert in_loop(ctx, lambda: ctx.poll_ns) == 0
    assert qmp_call(host, "qom-get", path="/objects/io1", property=prop) == value

    # A rejected value changes nothing.
    with pytest.raises(QemuError, match="value must be in range"):
        qmp_call(host, "qom-set", path="/objects/io1", property=prop, value=-1)
    assert getattr(ctx, attr) == value


def test_seed_example_reaches_the_running_loop(host: Host) -> None:
    _io, ctx = iothread(host, "iothread1")
    assert ctx.poll_max_ns == 32768
    assert grow_window(ctx) == 8000
    line = "qom-set /objects/iothread1 poll-max-ns 100000"
    assert qmp_call(host, "human-monitor-command", command_line=line) == ""
    assert ctx.poll_max_ns == 100000
    assert in_loop(ctx, lambda: ctx.poll_ns) == 0
    text = qmp_call(host, "human-monitor-command", command_line="info iothreads")
    assert isinstance(text, str)
    assert "  poll-max-ns=100000\r\n" in text


def test_raising_callbacks_are_logged_and_the_loop_goes_on(
    host: Host, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="qomhost.aio")
    io, ctx = iothread(host)

    def boom() -> None:
        raise RuntimeError("boom")

    notifier = EventNotifier()
    try:
        in_loop(ctx, lambda: ctx.set_event_notifier(notifier, boom))
        ctx.schedule(boom)
        notifier.set()
        in_loop(ctx, lambda: ctx.call_later(0, boom))

        def logged() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.name == "qomhost.aio"
                and r.exc_info is not None
                and isinstance(r.exc_info[1], RuntimeError)
            ]

        wait_until(lambda: len(logged()) >= 3, "three logged failures")
        messages = logged()
        assert "bottom half raised" in messages
        assert f"fd {notifier.fd} read handler raised" in messages
        assert "timer raised" in messages

        # The loop is still running and still dispatching the fd.
        assert io.thread is not None and io.thread.is_alive()
        assert in_loop(ctx, lambda: "alive") == "alive"
        notifier.set()
        wait_until(lambda: len(logged()) >= 4, "the notifier to fire again")
    finally:
        in_loop(ctx, lambda: ctx.set_event_notifier(notifier, None))
        notifier.close()


class Gauge:
    """Counts jobs running at once; each job waits for ``gate``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.gate = threading.Event()

    def job(self) -> int:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            assert self.gate.wait(TIMEOUT)
        finally:
            with self.lock:
                self.running -= 1
        return threading.get_native_id()

    def fill(self, ctx: AioContext, jobs: int, limit: int) -> list[Future[int]]:
        """Submit ``jobs`` one at a time, each once the previous one runs (up to
        ``limit``), so the pool starts a worker whenever none is idle."""
        self.gate.clear()
        self.peak = 0
        futures: list[Future[int]] = []
        for i in range(jobs):
            futures.append(ctx.run_in_executor(self.job))
            if i < limit:
                self.wait_running(i + 1)
        time.sleep(0.2)  # give any extra worker the chance to show up
        return futures

    def wait_running(self, count: int) -> None:
        wait_until(lambda: self.running == count, f"{count} jobs to run")

    def finish(self, futures: list[Future[int]]) -> set[int]:
        self.gate.set()
        return {f.result(TIMEOUT) for f in futures}


def test_run_in_pool_respects_thread_pool_max(host: Host) -> None:
    io, ctx = iothread(host, thread_pool_max=3)
    gauge = Gauge()

    futures = gauge.fill(ctx, 8, 3)
    assert (gauge.running, gauge.peak) == (3, 3)
    workers = gauge.finish(futures)
    assert gauge.peak == 3
    assert len(workers) <= 3
    assert threading.get_native_id() not in workers
    assert io.thread_id not in workers

    # Lowered at run time: the surplus workers leave.
    qmp_call(host, "qom-set", path="/objects/io1", property="thread-pool-max", value=1)
    futures = gauge.fill(ctx, 4, 1)
    assert (gauge.running, gauge.peak) == (1, 1)
    gauge.finish(futures)

    # Raised again.
    qmp_call(host, "qom-set", path="/objects/io1", property="thread-pool-max", value=5)
    futures = gauge.fill(ctx, 7, 5)
    assert (gauge.running, gauge.peak) == (5, 5)
    gauge.finish(futures)

    # A rejected pair is not kept (QEMU 7.2 stores it) and the pool keeps its sizes.
    with pytest.raises(QemuError, match="bad thread-pool-min/thread-pool-max values"):
        qmp_call(host, "qom-set", path="/objects/io1", property="thread-pool-max", value=0)
    assert qmp_call(host, "qom-get", path="/objects/io1", property="thread-pool-max") == 5
    assert ctx.thread_pool_max == 5
    futures = gauge.fill(ctx, 6, 5)
    assert gauge.peak == 5
    gauge.finish(futures)


def test_main_loop_object_sizes_the_main_pool(host: Host) -> None:
    host.add_object("main-loop", "ml", thread_pool_max=2)
    assert host.context.thread_pool_max == 2
    gauge = Gauge()
    futures = gauge.fill(host.context, 4, 2)
    assert (gauge.running, gauge.peak) == (2, 2)
    gauge.finish(futures)
    with pytest.raises(QemuError, match="object 'ml' is in use, can not be deleted"):
        host.del_object("ml")


def test_attach_blocks_object_del_until_detach(host: Host) -> None:
    io, ctx = iothread(host)
    user = object()
    assert io.attach(user) is ctx

    with pytest.raises(QemuError) as err:
        host.del_object("io1")
    assert err.value.desc == "object 'io1' is in use, can not be deleted"
    with pytest.raises(QemuError) as err:
        qmp_call(host, "object-del", id="io1")
    assert err.value.desc == "object 'io1' is in use, can not be deleted"
    infos = qmp_call(host, "query-iothreads")
    assert isinstance(infos, list)
    assert [info["id"] for info in infos] == ["io1"]
    assert in_loop(ctx, lambda: "still running") == "still running"

    io.detach(user)
    thread = io.thread
    assert thread is not None
    host.del_object("io1")
    assert qmp_call(host, "query-iothreads") == []
    assert not thread.is_alive()
    assert io.context is None


class Polled:
    """An event notifier whose poll callback checks a flag, as a virtqueue
    handler checks an index in guest memory: no system call, no eventfd."""

    def __init__(self, ctx: AioContext) -> None:
        self.ctx = ctx
        self.notifier = EventNotifier()
        self.work = threading.Event()
        self.polls = 0
        self.ready: list[int] = []
        self.events: list[int] = []
        in_loop(
            ctx,
            lambda: ctx.set_event_notifier(
                self.notifier, self.on_event, io_poll=self.poll, io_poll_ready=self.on_ready
            ),
        )

    def poll(self) -> bool:
        self.polls += 1
        return self.work.is_set()

    def on_ready(self) -> None:
        self.work.clear()
        self.ready.append(threading.get_native_id())

    def on_event(self) -> None:
        self.events.append(threading.get_native_id())

    def close(self) -> None:
        in_loop(self.ctx, lambda: self.ctx.set_event_notifier(self.notifier, None))
        self.notifier.close()


def test_poll_handler_runs_in_the_window_without_the_notifier(host: Host) -> None:
    io, ctx = iothread(host, poll_max_ns=10**10, poll_grow=1000)
    polled = Polled(ctx)
    try:
        # Wake-ups 10 ms apart grow the window: 4 us, 4 ms, 4 s. (A wait
        # shorter than the window is the sweet spot and grows nothing, so
        # back-to-back wake-ups would stall at 4 ms.)
        deadline = time.monotonic() + TIMEOUT
        while in_loop(ctx, lambda: ctx.poll_ns) < 10**9:
            assert time.monotonic() < deadline, "the polling window does not grow"
            time.sleep(0.01)
        # A wake-up ends the busy-polling window at once (aio_notify).
        start = time.monotonic()
        in_loop(ctx, lambda: None)
        assert time.monotonic() - start < 1.0

        polled.work.set()
        wait_until(lambda: bool(polled.ready), "the poll callback to find the work")
        assert polled.ready == [io.thread_id]
        assert polled.events == []
        assert polled.notifier.test_and_clear() is False  # never set

        # poll-max-ns=0 at run time: no more polling.
        qmp_call(host, "qom-set", path="/objects/io1", property="poll-max-ns", value=0)
        in_loop(ctx, lambda: None)
        count = polled.polls
        polled.work.set()
        time.sleep(0.2)
        assert polled.polls == count
        assert len(polled.ready) == 1
    finally:
        polled.close()


def test_poll_max_ns_zero_never_polls(host: Host) -> None:
    io, ctx = iothread(host, poll_max_ns=0)
    polled = Polled(ctx)
    try:
        for _ in range(20):
            in_loop(ctx, lambda: None)
        polled.work.set()
        time.sleep(0.2)
        assert polled.polls == 0
        assert polled.ready == []
        # Only the eventfd brings the work in.
        polled.notifier.set()
        wait_until(lambda: bool(polled.events), "the notifier's read handler")
        assert polled.events == [io.thread_id]
        assert polled.polls == 0
        assert ctx.poll_ns == 0
    finally:
        polled.close()


# --------------------------------------------------------------------------- asyncio


def test_asyncio_bridge_from_the_main_thread(host: Host, caplog: pytest.LogCaptureFixture) -> None:
    from qomhost.aio.asyncio_bridge import run_in_executor, run_on, wait_readable

    caplog.set_level(logging.ERROR, logger="qomhost.aio")
    io, ctx = iothread(host, thread_pool_max=2)
    read_fd, write_fd = os.pipe()

    async def scenario() -> None:
        main = threading.get_native_id()

        assert await run_on(ctx, threading.get_native_id) == io.thread_id
        total, worker = await run_in_executor(
            ctx, lambda a, b: (a + b, threading.get_native_id()), 2, 3
        )
        assert total == 5
        assert worker not in (main, io.thread_id)
        with pytest.raises(ZeroDivisionError):
            await run_on(ctx, lambda: 1 // 0)

        # Both awaited at once: the asyncio loop is not blocked meanwhile.
        gate = threading.Event()
        blocked = asyncio.ensure_future(run_in_executor(ctx, gate.wait, TIMEOUT))
        ticks = 0
        while ticks < 3:
            await asyncio.sleep(0.01)
            ticks += 1
        assert not blocked.done()
        gate.set()
        assert await blocked is True

        # wait_readable: the iothread's epoll watches the fd.
        waiter = asyncio.ensure_future(wait_readable(ctx, read_fd))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        threading.Timer(0.02, os.write, (write_fd, b"x")).start()
        await asyncio.wait_for(waiter, TIMEOUT)
        assert os.read(read_fd, 1) == b"x"

        # A wait that is given up on leaves nothing registered (its clean-up is
        # a bottom half, done once the next one has run), so the fd can be
        # closed and its number reused for another file and another wait.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(wait_readable(ctx, read_fd), 0.05)
        await run_on(ctx, lambda: None)
        new_read, new_write = os.pipe()
        os.dup2(new_read, read_fd)  # closes the old pipe's read end
        os.close(new_read)
        try:
            waiter = asyncio.ensure_future(wait_readable(ctx, read_fd))
            await asyncio.sleep(0.02)
            os.write(new_write, b"z")
            await asyncio.wait_for(waiter, TIMEOUT)
        finally:
            os.close(new_write)

    try:
        asyncio.run(scenario())
        assert [r.getMessage() for r in caplog.records if r.name == "qomhost.aio"] == []
    finally:
        os.close(read_fd)
        os.close(write_fd)
