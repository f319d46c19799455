"""virtio-crypto data requests through a vhost-user backend's virtqueues.

QEMU only forwards a guest's requests; qomhost, having no guest, is the
driver itself. :class:`DataPath` plays the guest's part for a
``cryptodev-vhost-user``:

* guest memory is a memfd (:class:`~qomhost.vhost_user.memory.GuestMemory`)
  shared with the backend through ``SET_MEM_TABLE``; request buffers come
  from a :class:`~qomhost.vhost_user.memory.GuestAllocator` and are kept by
  their queue for the next request of the same size class, so a steady
  stream of requests costs no allocator trip;
* each data queue ``i`` is a :class:`~qomhost.vhost_user.virtqueue.DriverVirtqueue`
  started on vhost device ``i`` (``SET_FEATURES``, ``SET_VRING_*``) with a
  kick eventfd (written when the ring says so, once per batch) and a call
  eventfd watched on an :class:`~qomhost.aio.context.AioContext` (the
  object's main loop, or an iothread's: :meth:`DataPath.move_to`), where
  completions are read from the used ring and handed to the waiting callers;
* the call eventfd's handler has a poll handler (the used index) with
  ``io_poll_begin``/``io_poll_end``: while the loop busy-polls the used
  ring, the backend is asked not to signal (``VRING_AVAIL_F_NO_INTERRUPT``,
  or ``used_event`` pushed away with event idx), as a virtio driver does;
* a request is two buffers: the 72-byte ``virtio_crypto_op_data_req``, the
  IV and the source (device-readable), then the destination and the status
  byte (device-writable). virtio 1.x devices may not assume any framing
  (``VIRTIO_F_ANY_LAYOUT`` is implied by ``VERSION_1``); fewer descriptors
  mean less work at both ends.

:meth:`DataPath.submit` works from any thread and returns a
``concurrent.futures.Future``; :meth:`DataPath.submit_many` sends a batch
with one kick and returns a :class:`Batch` to wait on. Many requests may be
in flight on every queue. When the connection closes, every request in
flight fails at once with
:class:`~qomhost.objects.cryptodev.base.CryptoDevError`.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import struct
import threading
from collections.abc import Callable, Sequence

from qomhost.cryptodev.virtio_crypto import DATA_REQUEST_SIZE, Status, SymOp
from qomhost.objects.cryptodev.base import CryptoDevError
from qomhost.vhost_user.frontend import Channel, Ring, VhostDev, VhostUserError
from qomhost.vhost_user.memory import GuestAllocator, GuestMemory, GuestMemoryError
from qomhost.vhost_user.virtqueue import VIRTIO_F_VERSION_1, DriverVirtqueue, VirtqueueError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from qomhost.aio.context import AioContext

__all__ = ["Batch", "DataPath"]

log = logging.getLogger("qomhost.cryptodev")

VIRTIO_RING_F_INDIRECT_DESC = 28
VIRTIO_RING_F_EVENT_IDX = 29
#: the virtio features qomhost's driver can use, offered to the backend
DRIVER_FEATURES = (
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VIRTIO_RING_F_EVENT_IDX)
)
#: ring size of each data queue
QUEUE_SIZE = 256
#: guest memory for rings and request buffers (pages are only used when touched)
MEMORY_SIZE = 64 << 20
#: descriptors a request takes without indirect tables
DESCRIPTORS_PER_REQUEST = 2
#: how long a submitter waits for room in a full ring
FULL_RING_TIMEOUT_S = 10.0

#: ``virtio_crypto_op_data_req`` of a plain cipher request: opcode, algo,
#: session_id, (flag, padding), iv_len, src_data_len, dst_data_len,
#: (padding), op_type, (padding). Packed straight into guest memory: no
#: records and no bytes object per request (unit tests check it against
#: DataRequest.encode).
CIPHER_REQUEST = struct.Struct("<IIQ8xIII28xI4x")

_STATUS_NAMES = {
    value: name for name, value in vars(Status).items() if isinstance(value, int) and name.isupper()
}


def _status_error(status: int) -> CryptoDevError:
    name = _STATUS_NAMES.get(status, str(status))
    return CryptoDevError(f"virtio-crypto request failed: status {status} ({name})")


def size_class(size: int) -> int:
    """The buffer size a request of ``size`` bytes gets (so buffers can be reused):
    a power of two up to 4 KiB, then whole 4 KiB pages."""
    if size <= 4096:
        return 1 << (size - 1).bit_length() if size > 64 else 64
    return -(-size // 4096) * 4096


class _Buffer:
    """A request buffer in guest memory, reused by its queue."""

    __slots__ = ("gpa", "size", "view")

    def __init__(self, gpa: int, size: int, view: memoryview) -> None:
        self.gpa = gpa
        self.size = size
        self.view = view


class Batch:
    """Requests waited for together; results in submission order.

    :meth:`wait` returns the destination bytes of every request, or
    raises the first failure.
    """

    __slots__ = ("_done", "_lock", "error", "left", "results")

    def __init__(self, count: int) -> None:
        self.results: list[bytes] = [b""] * count
        self.left = count
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        if not count:
            self._done.set()

    def _finish(self, index: int, result: bytes | None, error: BaseException | None) -> None:
        self._finish_many([(index, result, error)])

    def _finish_many(self, finished: list[tuple[int, bytes | None, BaseException | None]]) -> None:
        """:meth:`_finish` of several requests, under one lock."""
        with self._lock:
            results = self.results
            for index, result, error in finished:
                if error is not None:
                    if self.error is None:
                        self.error = error
                else:
                    assert result is not None
                    results[index] = result
            self.left -= len(finished)
            if self.left:
                return
        self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> list[bytes]:
        """The results; :class:`TimeoutError` if they are not all there in ``timeout`` s."""
        if not self._done.wait(timeout):
            raise TimeoutError
        if self.error is not None:
            raise self.error
        return self.results


class _Request:
    """One request in flight: its buffer and who waits for it."""

    __slots__ = ("batch", "buffer", "dst", "future", "index", "length", "target")

    def __init__(
        self,
        buffer: _Buffer,
        dst: int,
        length: int,
        future: concurrent.futures.Future[bytes] | None,
        batch: Batch | None,
        index: int,
    ) -> None:
        self.buffer = buffer
        self.dst = dst
        self.length = length
        self.future = future
        self.batch = batch
        self.index = index
        #: where the caller wants the result (None: a new bytes object)
        self.target: memoryview | None = None

    def finish(self, result: bytes | None, error: BaseException | None = None) -> None:
        if self.batch is not None:
            self.batch._finish(self.index, result, error)
        elif self.future is not None:
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)  # type: ignore[arg-type]


class _Queue:
    """A data queue: its virtqueue, eventfds, buffers and requests in flight."""

    def __init__(self, index: int, vq: DriverVirtqueue, per_request: int) -> None:
        self.index = index
        self.vq = vq
        self.kick_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.call_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.lock = threading.Lock()
        #: submitters waiting for free descriptors wait on this
        self.space = threading.Condition(self.lock)
        self.waiting = 0
        #: descriptors one request takes
        self.per_request = per_request
        #: free request buffers by size class
        self.buffers: dict[int, list[_Buffer]] = {}
        self.pending: set[_Request] = set()
        #: requests completed so far (a waiter for memory watches it move)
        self.returned = 0


class DataPath:
    """The rings of every data queue, started on first use.

    :param devs: the handshaken vhost devices, one per data queue.
    :param context: the loop that reads completions (see :meth:`move_to`).
    :param on_failure: called with a message when a ring was found broken
        (the caller drops the connection). It runs on ``context``'s thread.
    """

    def __init__(
        self,
        channel: Channel,
        devs: list[VhostDev],
        context: AioContext,
        on_failure: Callable[[str], None] = lambda _text: None,
    ) -> None:
        self.channel = channel
        self.devs = devs
        self.context = context
        self.on_failure = on_failure
        self.memory: GuestMemory | None = None
        self.allocator: GuestAllocator | None = None
        self.queues: list[_Queue] = []
        self._start_lock = threading.Lock()
        self._next = itertools.count()
        self.closed = False
        #: completions found by busy-polling the used ring, and by a call
        #: notification (how well io_poll_begin/end saves the backend's
        #: eventfd writes and our wake-ups)
        self.polled = 0
        self.notified = 0

    # --- starting ------------------------------------------------------------------
    def _ensure_started(self) -> list[_Queue]:
        if self.queues:
            return self.queues
        with self._start_lock:
            if self.closed:
                raise CryptoDevError("vhost-user backend disconnected")
            if not self.queues:
                self._start()
        return self.queues

    def _start(self) -> None:
        memory = GuestMemory.allocate(MEMORY_SIZE, name="qomhost-cryptodev")
        allocator = GuestAllocator(memory)
        queues: list[_Queue] = []
        try:
            for dev in self.devs:
                offered = dev.backend_features & DRIVER_FEATURES
                indirect = bool(offered & (1 << VIRTIO_RING_F_INDIRECT_DESC))
                vq = DriverVirtqueue(
                    memory,
                    allocator,
                    QUEUE_SIZE,
                    event_idx=bool(offered & (1 << VIRTIO_RING_F_EVENT_IDX)),
                    indirect=indirect,
                )
                queue = _Queue(dev.vq_index, vq, 1 if indirect else DESCRIPTORS_PER_REQUEST)
                queues.append(queue)
                ring = Ring(
                    dev.vq_index,
                    QUEUE_SIZE,
                    vq.desc_uva,
                    vq.avail_uva,
                    vq.used_uva,
                    queue.kick_fd,
                    queue.call_fd,
                    log=vq.used_gpa,
                )
                self.channel.run(dev.start(offered, memory.mem_table(), [ring]))
        except (VhostUserError, VirtqueueError) as err:
            for queue in queues:
                os.close(queue.kick_fd)
                os.close(queue.call_fd)
            memory.close()
            raise CryptoDevError(f"cannot start the data queues: {err.desc}") from None
        self.memory, self.allocator = memory, allocator
        context = self.context
        for queue in queues:
            _run_on(context, lambda q=queue: self._watch(q, context))  # type: ignore[misc]
        self.queues = queues

    def _watch(self, q: _Queue, context: AioContext) -> None:
        """Watch ``q``'s call eventfd on ``context``, with its poll handler."""
        vq = q.vq

        def io_poll() -> bool:
            # no lock: a stale answer only delays the work by one iteration
            return not self.closed and vq.has_used()

        context.set_fd_handler(
            q.call_fd,
            lambda: self._on_call(q),
            None,
            io_poll,
            lambda: self._collect(q, polled=True),
            io_poll_begin=lambda: self._set_callbacks(q, False),
            io_poll_end=lambda: self._set_callbacks(q, True),
        )

    def move_to(self, context: AioContext) -> None:
        """Read completions on ``context`` from now on (the iothread the object is on).

        Requests in flight are not disturbed: a completion signalled
        meanwhile leaves the call eventfd readable, and the new loop sees it.
        """
        with self._start_lock:
            old, self.context = self.context, context
            if old is context:
                return
            for q in self.queues:
                _run_on(old, lambda q=q: old.set_fd_handler(q.call_fd, None))  # type: ignore[misc]
                _run_on(context, lambda q=q: self._watch(q, context))  # type: ignore[misc]

    # --- requests --------------------------------------------------------------------
    def _queue(self, queue: int | None) -> _Queue:
        queues = self._ensure_started()
        if queue is None:
            return queues[next(self._next) % len(queues)]
        if 0 <= queue < len(queues):
            return queues[queue]
        raise CryptoDevError(f"queue {queue} does not exist (the backend has {len(queues)})")

    def submit(
        self, opcode: int, algo: int, session_id: int, iv: bytes, data: bytes, queue: int | None
    ) -> concurrent.futures.Future[bytes]:
        """Send one cipher request; the future gets the destination bytes."""
        future: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        self._send(opcode, algo, session_id, ((iv, data),), self._queue(queue), future, None)
        return future

    def submit_many(
        self,
        opcode: int,
        algo: int,
        session_id: int,
        items: Sequence[tuple[bytes, bytes]],
        queue: int | None,
        batch: int,
        out: Sequence[memoryview] | None = None,
    ) -> Batch:
        """Send ``(iv, data)`` requests in groups of ``batch``, one kick per group.

        Groups go to the queues in turn (or all to ``queue``); each is made
        available at once, so the backend takes it in one batch. Blocks
        while a ring is full. Returns the :class:`Batch` to wait on. With
        ``out`` (byte views, one per request, each large enough), results
        are copied there and the batch's results are empty: no memory is
        allocated per result.
        """
        waiter = Batch(len(items))
        batch = max(1, min(batch, QUEUE_SIZE))
        for start in range(0, len(items), batch):
            q = self._queue(queue)
            self._send(
                opcode, algo, session_id, items[start : start + batch], q, None, waiter, start, out
            )
        return waiter

    def _send(
        self,
        opcode: int,
        algo: int,
        session_id: int,
        items: Sequence[tuple[bytes, bytes]],
        q: _Queue,
        future: concurrent.futures.Future[bytes] | None,
        batch: Batch | None,
        first: int = 0,
        out: Sequence[memoryview] | None = None,
    ) -> None:
        """Make ``items`` available on ``q`` and kick once (if the ring asks for it)."""
        pack_into = CIPHER_REQUEST.pack_into
        vq = q.vq
        need = q.per_request
        header = DATA_REQUEST_SIZE
        with q.lock:
            index = first
            for iv, data in items:
                n = len(data)
                iv_len = len(iv)
                src = header + iv_len
                dst = src + n
                size = dst + n + 1
                if self.closed:
                    raise CryptoDevError("vhost-user backend disconnected")
                if vq.num_free < need:
                    self._wait(q, lambda: vq.num_free >= need, "a request")
                buffer = self._buffer(q, size)
                view = buffer.view
                pack_into(view, 0, opcode, algo, session_id, iv_len, n, n, SymOp.CIPHER)
                if iv_len:
                    view[header:src] = iv
                view[src:dst] = data
                view[dst + n] = 0xFF
                gpa = buffer.gpa
                request = _Request(buffer, dst, n, future, batch, index)
                if out is not None:
                    request.target = out[index]
                q.pending.add(request)
                vq.add_two(gpa, dst, gpa + dst, n + 1, request)
                index += 1
            if vq.kick_needed():
                os.eventfd_write(q.kick_fd, 1)

    def _wait(self, q: _Queue, ready: Callable[[], object], what: str) -> None:
        """Wait (with ``q.lock`` held by the caller) until the backend has returned
        enough requests on ``q`` for ``ready()`` to be true."""
        if self.context.thread_id == threading.get_native_id():
            # Only this thread would read the completions that make room.
            raise CryptoDevError(f"vhost-user crypto queue {q.index}: no room for {what}")
        # What is already available must reach the backend before we sleep.
        if q.vq.kick_needed():
            os.eventfd_write(q.kick_fd, 1)
        q.waiting += 1
        try:
            while not ready() and not self.closed:
                if not q.space.wait(FULL_RING_TIMEOUT_S):
                    raise CryptoDevError(
                        f"vhost-user crypto queue {q.index}: no room for {what} "
                        f"in {FULL_RING_TIMEOUT_S:g} s"
                    )
        finally:
            q.waiting -= 1
        if self.closed:
            raise CryptoDevError("vhost-user backend disconnected")

    def _buffer(self, q: _Queue, size: int) -> _Buffer:
        """A buffer of at least ``size`` bytes for ``q`` (call with ``q.lock`` held)."""
        cls = size_class(size)
        memory, allocator = self.memory, self.allocator
        assert memory is not None and allocator is not None
        while True:
            free = q.buffers.get(cls)
            if free:
                return free.pop()
            try:
                gpa = allocator.alloc(cls, 64)
            except GuestMemoryError as err:
                if q.buffers:
                    # Give back the buffers kept for other sizes and try again.
                    for kept in q.buffers.values():
                        for buffer in kept:
                            buffer.view.release()
                            allocator.free(buffer.gpa)
                    q.buffers.clear()
                    continue
                if not q.pending:
                    raise CryptoDevError(f"no room for a {size}-byte request: {err.desc}") from None
                # Wait for requests in flight to bring their buffers back.
                self._wait(q, _returned_since(q, q.returned), f"a {size}-byte request")
                continue
            return _Buffer(gpa, cls, memory.view(gpa, cls))

    # --- completions -------------------------------------------------------------------
    def _on_call(self, q: _Queue) -> None:
        """The backend signalled queue ``q``."""
        try:
            os.eventfd_read(q.call_fd)
        except BlockingIOError:
            pass
        self._collect(q)

    def _set_callbacks(self, q: _Queue, enabled: bool) -> None:
        """io_poll_begin/end: the loop stopped or started busy-polling the used ring."""
        with q.lock:
            if self.closed:
                return
            if enabled:
                q.vq.enable_callbacks()  # the loop polls once more after this
            else:
                q.vq.disable_callbacks()

    def _collect(self, q: _Queue, polled: bool = False) -> None:
        """Complete what the backend returned on ``q``."""
        done: list[tuple[_Request, bytes | int]] = []
        used: list[tuple[object, int]] = []
        broken: str | None = None
        with q.lock:
            if self.closed:
                return
            vq = q.vq
            try:
                used += vq.get_used()
                # An entry returned while used_event moved brings no call.
                while vq.used_since_rearm():
                    used += vq.get_used()
            except VirtqueueError as err:
                broken = err.desc
            buffers = q.buffers
            pending = q.pending
            for token, _written in used:
                assert isinstance(token, _Request)
                pending.discard(token)
                buffer = token.buffer
                view = buffer.view
                dst = token.dst
                n = token.length
                status = view[dst + n]
                if status != Status.OK:
                    done.append((token, status))
                elif token.target is None:
                    done.append((token, bytes(view[dst : dst + n])))
                else:
                    # Into the caller's buffer: fresh memory for a large
                    # result costs a page fault per page, more than the copy.
                    token.target[:n] = view[dst : dst + n]
                    done.append((token, b""))
                free = buffers.get(buffer.size)
                if free is None:
                    buffers[buffer.size] = [buffer]
                else:
                    free.append(buffer)
            q.returned += len(used)
            if used and q.waiting:
                q.space.notify_all()
        if polled:
            self.polled += len(done)
        else:
            self.notified += len(done)
        # the requests of one batch come back together: one lock for them
        batch: Batch | None = None
        finished: list[tuple[int, bytes | None, BaseException | None]] = []
        value: bytes | None
        error: BaseException | None
        for request, result in done:
            if isinstance(result, bytes):
                value, error = result, None
            else:
                value, error = None, _status_error(result)
            owner = request.batch
            if owner is None:
                request.finish(value, error)
                continue
            if owner is not batch:
                if batch is not None:
                    batch._finish_many(finished)
                batch, finished = owner, []
            finished.append((request.index, value, error))
        if batch is not None:
            batch._finish_many(finished)
        if broken is not None:
            self.on_failure(f"vhost-user crypto queue {q.index}: {broken}")

    # --- the end ---------------------------------------------------------------------
    def stop_rings(self) -> None:
        """Stop every started ring as QEMU's ``vhost_dev_stop`` does
        (SET_VRING_ENABLE 0, GET_VRING_BASE), before the rings' memory goes
        away, so the backend stops reading them first. A backend that
        cannot be talked to any more is not waited for."""
        with self._start_lock:
            started = bool(self.queues) and not self.closed
        if not started:
            return
        for dev in self.devs:
            if not dev.started:
                continue
            try:
                self.channel.run(dev.stop([dev.vq_index]))
            except VhostUserError as err:
                log.warning("cannot stop vhost-user crypto queue %d: %s", dev.vq_index, err.desc)
                return

    def close(
        self,
        reason: str = "vhost-user backend disconnected",
        *,
        wait: bool = False,
        loop_gone: bool = False,
    ) -> None:
        """Fail every request in flight and release the rings and memory.

        The call eventfds are forgotten on the loop that watches them; with
        ``wait`` this returns only once that is done (an iothread must not
        be left with handlers of an object that is going away). With
        ``loop_gone`` that loop was already closed (an iothread finalised
        first when a host shuts down): the eventfds are just closed.
        """
        with self._start_lock:
            self.closed = True
            queues, self.queues = self.queues, []
            context = self.context
        error = CryptoDevError(f"{reason}: request failed")
        for q in queues:
            with q.lock:
                pending, q.pending = q.pending, set()
                q.space.notify_all()
            for request in pending:
                request.finish(None, error)

        def release() -> None:
            for q in queues:
                if not loop_gone:
                    context.set_fd_handler(q.call_fd, None)
                os.close(q.kick_fd)
                os.close(q.call_fd)

        if loop_gone:
            release()
        elif queues:
            _run_on(context, release, wait=wait)
        if self.memory is not None:
            # Buffers still referenced by views are released with the mapping.
            self.memory.close()
            self.memory = None
            self.allocator = None


def _returned_since(q: _Queue, returned: int) -> Callable[[], bool]:
    """A test for :meth:`DataPath._wait`: has ``q`` completed anything since?"""
    return lambda: q.returned != returned


def _run_on(context: AioContext, fn: Callable[[], None], *, wait: bool = True) -> None:
    """Run ``fn`` on ``context``'s thread: now if that is this thread (or no
    thread runs it yet), else as a bottom half, waited for if ``wait``."""
    if context.thread_id in (None, threading.get_native_id()):
        fn()
        return
    future = context.submit(fn)
    if wait:
        try:
            future.result(FULL_RING_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            log.error("%s did not run a request of the crypto data path", context.name)
