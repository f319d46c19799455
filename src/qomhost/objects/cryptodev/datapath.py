"""virtio-crypto data requests through a vhost-user backend's virtqueues.

QEMU only forwards a guest's requests; qomhost, having no guest, is the
driver itself. :class:`DataPath` plays the guest's part for a
``cryptodev-vhost-user``:

* guest memory is a memfd (:class:`~qomhost.vhost_user.memory.GuestMemory`)
  shared with the backend through ``SET_MEM_TABLE``; request buffers come
  from a :class:`~qomhost.vhost_user.memory.GuestAllocator`;
* each data queue ``i`` is a :class:`~qomhost.vhost_user.virtqueue.DriverVirtqueue`
  started on vhost device ``i`` (``SET_FEATURES``, ``SET_VRING_*``) with a
  kick eventfd (written when the ring says so) and a call eventfd watched on
  the object's :class:`~qomhost.aio.context.AioContext`, where completions
  are read from the used ring and handed to the waiting callers;
* a request is the 72-byte ``virtio_crypto_op_data_req``, the IV and the
  source (device-readable), then the destination and the status byte
  (device-writable), as a Linux driver lays it out.

:meth:`DataPath.submit` works from any thread and returns a
``concurrent.futures.Future``; many requests may be in flight on every queue.
When the connection closes, every request in flight fails at once with
:class:`~qomhost.objects.cryptodev.base.CryptoDevError`.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import threading
from collections.abc import Callable

from qomhost.cryptodev.virtio_crypto import (
    DATA_REQUEST_SIZE,
    DataHeader,
    DataRequest,
    Status,
    SymCipherData,
)
from qomhost.objects.cryptodev.base import CryptoDevError
from qomhost.vhost_user.frontend import Channel, Ring, VhostDev, VhostUserError
from qomhost.vhost_user.memory import GuestAllocator, GuestMemory
from qomhost.vhost_user.virtqueue import VIRTIO_F_VERSION_1, DriverVirtqueue, VirtqueueError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from qomhost.aio.context import AioContext

__all__ = ["DataPath"]

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

_STATUS_NAMES = {
    value: name for name, value in vars(Status).items() if isinstance(value, int) and name.isupper()
}


class _Request:
    """One request in flight: where its buffers are and who waits for it."""

    __slots__ = ("dst_gpa", "future", "gpa", "length")

    def __init__(self, gpa: int, dst_gpa: int, length: int) -> None:
        self.gpa = gpa
        self.dst_gpa = dst_gpa
        self.length = length
        self.future: concurrent.futures.Future[bytes] = concurrent.futures.Future()


class _Queue:
    """A data queue: its virtqueue, eventfds and requests in flight."""

    def __init__(self, index: int, vq: DriverVirtqueue, slots: int) -> None:
        self.index = index
        self.vq = vq
        self.kick_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.call_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.lock = threading.Lock()
        #: free descriptors, counted in requests
        self.slots = threading.BoundedSemaphore(slots)
        self.pending: set[_Request] = set()


class DataPath:
    """The rings of every data queue, started on first use.

    :param devs: the handshaken vhost devices, one per data queue.
    :param on_failure: called with a message when the rings could not be
        started or a ring was found broken (the caller drops the connection).
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
                # A request takes 1 descriptor with indirect tables, else up to 5.
                queue = _Queue(dev.vq_index, vq, QUEUE_SIZE if indirect else QUEUE_SIZE // 5)
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
        for queue in queues:
            self.context.set_fd_handler(queue.call_fd, self._call_handler(queue))
        self.queues = queues

    # --- requests --------------------------------------------------------------------
    def submit(
        self, opcode: int, algo: int, session_id: int, iv: bytes, data: bytes, queue: int | None
    ) -> concurrent.futures.Future[bytes]:
        """Send one cipher request; the future gets the destination bytes."""
        queues = self._ensure_started()
        if queue is None:
            q = queues[next(self._next) % len(queues)]
        elif 0 <= queue < len(queues):
            q = queues[queue]
        else:
            raise CryptoDevError(f"queue {queue} does not exist (the backend has {len(queues)})")
        assert self.memory is not None and self.allocator is not None
        n = len(data)
        header = DataRequest(
            DataHeader(opcode, algo, session_id),
            SymCipherData(len(iv), n, n),
        ).encode()
        size = DATA_REQUEST_SIZE + len(iv) + 2 * n + 1
        q.slots.acquire()
        try:
            gpa = self.allocator.alloc(size)
        except Exception:
            q.slots.release()
            raise
        iv_gpa = gpa + DATA_REQUEST_SIZE
        src_gpa = iv_gpa + len(iv)
        dst_gpa = src_gpa + n
        status_gpa = dst_gpa + n
        out = [(gpa, DATA_REQUEST_SIZE)]
        if iv:
            out.append((iv_gpa, len(iv)))
        out.append((src_gpa, n))
        request = _Request(gpa, dst_gpa, n)
        with q.lock:
            # Under the queue's lock: close() cannot unmap the memory meanwhile.
            if self.closed:
                q.slots.release()
                raise CryptoDevError("vhost-user backend disconnected")
            memory = self.memory
            memory.write(gpa, header)
            if iv:
                memory.write(iv_gpa, iv)
            memory.write(src_gpa, data)
            memory.write(status_gpa, b"\xff")
            q.pending.add(request)
            q.vq.add(out, [(dst_gpa, n), (status_gpa, 1)], request)
            if q.vq.kick_needed():
                os.eventfd_write(q.kick_fd, 1)
        return request.future

    def _call_handler(self, q: _Queue) -> Callable[[], None]:
        return lambda: self._on_call(q)

    def _on_call(self, q: _Queue) -> None:
        """The backend signalled queue ``q``: complete what it returned."""
        try:
            os.eventfd_read(q.call_fd)
        except BlockingIOError:
            pass
        done: list[_Request] = []
        with q.lock:
            if self.closed:
                return
            try:
                for token, _written in q.vq.get_used():
                    assert isinstance(token, _Request)
                    q.pending.discard(token)
                    done.append(token)
            except VirtqueueError as err:
                broken: str | None = err.desc
            else:
                broken = None
        for request in done:
            self._complete(q, request)
        if broken is not None:
            self.on_failure(f"vhost-user crypto queue {q.index}: {broken}")

    def _complete(self, q: _Queue, request: _Request) -> None:
        memory, allocator = self.memory, self.allocator
        assert memory is not None and allocator is not None
        status = memory.read(request.dst_gpa + request.length, 1)[0]
        result = memory.read(request.dst_gpa, request.length) if status == Status.OK else b""
        allocator.free(request.gpa)
        q.slots.release()
        if status == Status.OK:
            request.future.set_result(result)
        else:
            name = _STATUS_NAMES.get(status, str(status))
            request.future.set_exception(
                CryptoDevError(f"virtio-crypto request failed: status {status} ({name})")
            )

    # --- the end ---------------------------------------------------------------------
    def close(self, reason: str = "vhost-user backend disconnected") -> None:
        """Fail every request in flight and release the rings and memory."""
        with self._start_lock:
            self.closed = True
            queues, self.queues = self.queues, []
        for q in queues:
            with q.lock:
                pending, q.pending = q.pending, set()
            for request in pending:
                request.future.set_exception(CryptoDevError(f"{reason}: request failed"))

        def release() -> None:
            for q in queues:
                self.context.set_fd_handler(q.call_fd, None)
                os.close(q.kick_fd)
                os.close(q.call_fd)

        # The call eventfds are watched by the loop: forget them there.
        if self.context.thread_id in (None, threading.get_native_id()):
            release()
        else:
            self.context.schedule(release)
        if self.memory is not None:
            # Buffers still referenced by views are released with the mapping.
            self.memory.close()
            self.memory = None
            self.allocator = None
