"""A context's pool of worker threads for blocking work.

Like QEMU's ``util/thread-pool.c``: workers are started on demand up to
``maximum``, at least ``minimum`` are kept, and an idle worker above the
minimum leaves after a while. Lowering ``maximum`` makes the surplus
workers leave as soon as they are idle, so no more than ``maximum`` jobs
run at once from then on (jobs already running finish). Results come back
as futures.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["ThreadPool"]

log = logging.getLogger("qomhost.aio.threadpool")

T = TypeVar("T")

#: how long a worker above the minimum waits for work before leaving
IDLE_TIMEOUT_S = 10.0

_Job = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]


class ThreadPool:
    """Workers for one :class:`~qomhost.aio.context.AioContext`."""

    def __init__(self, name: str, minimum: int, maximum: int) -> None:
        self.name = name
        self.minimum = minimum
        self.maximum = maximum
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = 0
        self._idle = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.resize(minimum, maximum)

    @property
    def workers(self) -> int:
        """How many worker threads exist now."""
        with self._lock:
            return self._workers

    def resize(self, minimum: int, maximum: int) -> None:
        """Change the bounds; starts workers to reach the new minimum."""
        with self._lock:
            self.minimum, self.maximum = minimum, maximum
            while self._workers < minimum:
                self._spawn_locked()
            surplus = self._workers - maximum
        # Wake idle workers so that the surplus ones leave (QEMU signals its
        # request_cond once per surplus thread); busy ones leave when done.
        for _ in range(surplus):
            self._jobs.put(None)

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Queue ``fn(*args)``; a worker runs it."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._stopping:
                raise RuntimeError("thread pool is shut down")
            if self._idle == 0 and self._workers < self.maximum:
                self._spawn_locked()
        self._jobs.put((future, fn, args))
        return future

    def _spawn_locked(self) -> None:
        self._workers += 1
        thread = threading.Thread(target=self._worker, name=f"worker {self.name}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _worker(self) -> None:
        while True:
            with self._lock:
                if self._workers > self.maximum:  # the maximum was lowered
                    self._workers -= 1
                    return
                self._idle += 1
            try:
                job = self._jobs.get(timeout=IDLE_TIMEOUT_S)
            except queue.Empty:
                job = None
                timed_out = True
            else:
                timed_out = False
            with self._lock:
                self._idle -= 1
                if job is None:
                    if self._stopping or (timed_out and self._workers > self.minimum):
                        self._workers -= 1
                        return
                    continue
            future, fn, args = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)

    def shutdown(self) -> None:
        """Stop every worker once queued work is done, and wait for them."""
        with self._lock:
            self._stopping = True
            count = self._workers
            threads = list(self._threads)
        for _ in range(count):
            self._jobs.put(None)
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join(timeout=5)
