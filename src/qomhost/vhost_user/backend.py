"""The backend end of vhost-user, without I/O.

:class:`VhostUserBackend` is the state machine a vhost-user backend runs
for one connection. Feed it the requests a ``BACKEND``
:class:`~qomhost.vhost_user.protocol.VhostUserDecoder` produced; it
answers with the reply messages to send and keeps the state the
frontend set up: features, protocol features, owner, the memory table
(mapped into this process, whole with ``SET_MEM_TABLE`` or a region at a
time with ``ADD_MEM_REG``/``REM_MEM_REG``, which QEMU 7.2 uses once
``CONFIGURE_MEM_SLOTS`` is negotiated), and per ring its size, addresses,
base index, kick/call/err eventfds and enable flag::

    backend = VhostUserBackend(device)
    for msg in decoder.feed(data, fds):
        if isinstance(msg, VhostUserProtocolError):
            ...                          # close the connection
        for reply in backend.handle(msg):
            send(reply.encode())         # replies carry no fds

Whatever a device does with its rings lives in a
:class:`VhostUserDevice`: which virtio features it offers, its queue
count and config space, the requests only it understands (crypto
sessions), and the work it does when a ring is kicked. The same core
therefore serves any device type.

**When a ring runs.** A ring is *live* (a
:class:`~qomhost.vhost_user.virtqueue.DeviceVirtqueue` exists and the
device is told :meth:`VhostUserDevice.on_ring_ready`) once the memory
table is mapped and the ring has a size, addresses, a kick eventfd and a
call eventfd -- whether or not ``SET_VRING_ENABLE`` ever came. The
specification says a ring starts disabled once protocol features are
negotiated, but QEMU 7.2's ``cryptodev-vhost-user`` never enables its
rings and never sends ``SET_STATUS(DRIVER_OK)``; a backend that waited
for either would never serve a guest. Only an explicit
``SET_VRING_ENABLE`` with 0 pauses a ring. ``GET_VRING_BASE`` stops it,
answers the next avail index, and closes its kick and call eventfds, as
libvhost-user does; the frontend sends new ones to restart it.

**Descriptors.** :meth:`VhostUserBackend.handle` owns the fds of every
message it is given, accepted or not: it keeps them (and closes the one
each replaces) or closes them at once. :meth:`VhostUserBackend.close`
closes everything when the connection ends.

**Errors.** Anything the frontend gets wrong -- a ring index out of
range, a ring size that is not a power of two, a memory region that
cannot be mapped, ring addresses outside guest memory, a request no one
handles -- raises :class:`~qomhost.vhost_user.protocol.VhostUserProtocolError`
and nothing else; the connection is then closed and the backend's other
connections go on.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Protocol

from qomhost.vhost_user.memory import GuestMemory, GuestMemoryError
from qomhost.vhost_user.protocol import (
    F_PROTOCOL_FEATURES,
    FLAGS_REPLY,
    MAX_MEM_REGIONS,
    U64,
    Config,
    MemReg,
    MemTable,
    Message,
    ProtocolFeature,
    Request,
    SlaveReqFd,
    VhostUserProtocolError,
    VringAddr,
    VringFile,
    VringState,
    request_name,
)
from qomhost.vhost_user.virtqueue import (
    MAX_QUEUE_SIZE,
    VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
    DeviceVirtqueue,
    VirtqueueError,
    full_barrier,
)

__all__ = [
    "VIRTIO_F_EVENT_IDX",
    "VIRTIO_F_INDIRECT_DESC",
    "VIRTIO_F_VERSION_1",
    "RingListener",
    "VhostUserBackend",
    "VhostUserDevice",
    "Vring",
    "describe",
]

log = logging.getLogger("qomhost.vhost_user.backend")

#: virtio transport feature bits a backend may offer
VIRTIO_F_INDIRECT_DESC = VIRTIO_RING_F_INDIRECT_DESC
VIRTIO_F_EVENT_IDX = VIRTIO_RING_F_EVENT_IDX

#: the largest split ring the virtio specification allows
MAX_RING_SIZE = MAX_QUEUE_SIZE

#: protocol features the core itself implements, whatever the device
CORE_PROTOCOL_FEATURES = (
    (1 << ProtocolFeature.MQ)
    | (1 << ProtocolFeature.REPLY_ACK)
    | (1 << ProtocolFeature.SLAVE_REQ)
    | (1 << ProtocolFeature.RESET_DEVICE)
    | (1 << ProtocolFeature.CONFIGURE_MEM_SLOTS)
    | (1 << ProtocolFeature.STATUS)
)


#: ``map_memory(table)``: map a SET_MEM_TABLE's regions into this process
MapMemory = Callable[[MemTable], GuestMemory]


class Vring:
    """What the frontend told the backend about one ring.

    ``kick_fd``/``call_fd``/``err_fd`` are eventfds owned by the backend
    (``None``: not sent, or sent as "no fd"). ``queue`` is the live
    virtqueue, ``None`` while the ring is stopped. ``enabled`` is
    ``None`` until a ``SET_VRING_ENABLE`` arrives.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.num = 0
        self.desc_addr = 0
        self.avail_addr = 0
        self.used_addr = 0
        self.log_addr = 0
        self.addr_flags = 0
        self.has_addr = False
        #: the next avail index to process when the ring (re)starts
        self.base = 0
        self.kick_fd: int | None = None
        self.kick_set = False
        self.call_fd: int | None = None
        self.call_set = False
        self.err_fd: int | None = None
        self.enabled: bool | None = None
        self.queue: DeviceVirtqueue | None = None
        #: the avail_event field (as one u16, stored in one access: see
        #: :mod:`~qomhost.vhost_user.virtqueue`), written by the backend although EVENT_IDX
        #: was not negotiated (see :meth:`rearm`)
        self.avail_event: memoryview | None = None
        #: between :meth:`poll_begin` and :meth:`poll_end`: the loop reads the
        #: avail index itself, so the driver is asked not to kick
        self.polling = False

    @property
    def started(self) -> bool:
        return self.queue is not None

    def poll_begin(self) -> None:
        """The loop busy-polls this ring: ask the driver not to kick.

        QEMU's ``virtio_queue_set_notification(vq, 0)`` from its host
        notifier's ``io_poll_begin``. ``avail_event`` is moved half the
        index space ahead, out of reach of the requests a window can see,
        for a driver that uses EVENT_IDX without the backend being told.
        """
        self.polling = True
        queue = self.queue
        if queue is None:
            return
        queue.set_notification(False)
        if self.avail_event is not None:
            self.avail_event[0] = (queue.last_avail_idx + 0x8000) & 0xFFFF

    def poll_end(self) -> None:
        """The loop stops polling to block: ask for kicks again.

        The loop polls the ring once more after this, for a request the
        driver made available before it saw kicks wanted.
        """
        self.polling = False
        self.rearm()

    def rearm(self) -> bool:
        """Ask for a kick at the next request; True if one is already waiting.

        Call it when the ring has been drained. Whatever the driver made
        available between the last pop and the request for a kick brings
        no kick, hence the check after it. While the loop polls the ring
        no kick is wanted: it only says whether more is waiting.
        """
        queue = self.queue
        if queue is None:
            return False
        if self.polling:
            return queue.has_available()
        queue.set_notification(True)
        if self.avail_event is not None:
            self.avail_event[0] = queue.last_avail_idx
            full_barrier()
        return queue.has_available()

    def notify(self) -> None:
        """Signal the call eventfd (the frontend injects the guest interrupt)."""
        if self.call_fd is not None:
            try:
                os.eventfd_write(self.call_fd, 1)
            except OSError as exc:  # the frontend closed its end: nothing to tell
                log.debug("vring %d: call eventfd: %s", self.index, exc)

    def __repr__(self) -> str:
        return (
            f"Vring(index={self.index}, num={self.num}, started={self.started}, "
            f"kick_fd={self.kick_fd}, call_fd={self.call_fd}, enabled={self.enabled})"
        )


class VhostUserDevice:
    """A device type served by :class:`VhostUserBackend`; subclass and override.

    The class attributes say what the device offers; the methods are
    called by the core, always from the thread that runs the connection.
    """

    #: the ``type`` of ``--print-capabilities`` (vhost-user.json's VHostUserBackendType)
    type_name = "unknown"
    #: virtio feature bits offered (``F_PROTOCOL_FEATURES`` is added by the core)
    features = 0
    #: protocol feature bits offered besides :data:`CORE_PROTOCOL_FEATURES`
    protocol_features = 0
    #: how many rings the frontend may use (the GET_QUEUE_NUM answer)
    num_queues = 1
    #: the GET_MAX_MEM_SLOTS answer
    max_mem_slots = MAX_MEM_REGIONS

    def get_config(self, offset: int, size: int) -> bytes | None:
        """``size`` bytes of config space at ``offset``, or ``None`` if there are none."""
        return None

    def set_config(self, offset: int, data: bytes, flags: int) -> bool:
        """Write config space; False refuses."""
        return False

    def handle_request(self, msg: Message) -> list[Message] | None:
        """A request the core does not know (CREATE_CRYPTO_SESSION, ...).

        Returns the replies (``[]``: handled, no reply), or ``None`` if the
        device does not handle it either, which is a protocol error.
        Raise :class:`VhostUserProtocolError` for a malformed one.
        """
        return None

    def on_ring_ready(self, vring: Vring) -> None:
        """``vring`` went live: ``vring.queue`` is ready to pop from."""

    def on_ring_stopped(self, vring: Vring) -> None:
        """``vring`` is about to stop; its queue is still there to finish with."""

    def process_ring(self, vring: Vring, limit: int) -> int:
        """Serve up to ``limit`` requests from ``vring.queue``; how many were served.

        Called when the ring is kicked, and again while it returns
        ``limit`` (more may be waiting). The caller notifies the driver.
        """
        return 0

    def reset(self) -> None:
        """The connection ended or the device was reset: forget per-connection state."""


class RingListener(Protocol):
    """Told when rings start and stop and when the backend-request channel
    changes; the I/O layer watches those fds with it. Each call comes
    before the fd it replaces is closed."""

    def ring_started(self, vring: Vring) -> None: ...

    def ring_stopping(self, vring: Vring) -> None: ...

    def slave_channel(self, fd: int | None) -> None: ...


def _close(fd: int | None) -> None:
    if fd is None:
        return
    try:
        os.close(fd)
    except OSError:
        pass


def describe(msg: Message) -> str:
    """A one-line account of a message for logs: ``SET_VRING_CALL (13) index=0 fd=7``.

    Payloads that may hold secrets (crypto session keys) or much data
    (config space) are given by size only.
    """
    head = f"{request_name(msg.request)} ({msg.request})"
    if msg.flags & ~0x1:
        head += f" flags=0x{msg.flags:x}"
    if isinstance(msg, U64):
        return f"{head} value=0x{msg.value:x}"
    if isinstance(msg, VringState):
        return f"{head} index={msg.index} num={msg.num}"
    if isinstance(msg, VringFile):
        return f"{head} index={msg.index} fd={msg.fd}"
    if isinstance(msg, VringAddr):
        return (
            f"{head} index={msg.index} desc=0x{msg.desc_user_addr:x} "
            f"avail=0x{msg.avail_user_addr:x} used=0x{msg.used_user_addr:x}"
        )
    if isinstance(msg, MemTable):
        regions = " ".join(
            f"[gpa=0x{r.guest_phys_addr:x} size=0x{r.memory_size:x}]" for r in msg.regions
        )
        return f"{head} {regions}"
    if isinstance(msg, Config):
        return f"{head} offset={msg.offset} size={len(msg.data)}"
    if isinstance(msg, SlaveReqFd):
        return f"{head} fd={msg.fd}"
    size = len(msg.payload())
    return f"{head} size={size}" if size else head


def _reply(request: int, value: int) -> U64:
    return U64(request, value, FLAGS_REPLY)


class VhostUserBackend:
    """One connection's vhost-user state, driven by decoded requests.

    :param device: what the rings are for.
    :param map_memory: maps a memory table and takes ownership of its fds
        (closing them, also when it fails); default
        ``GuestMemory.map_table``.
    :param listener: told when rings start and stop.
    """

    def __init__(
        self,
        device: VhostUserDevice,
        *,
        map_memory: MapMemory = GuestMemory.map_table,
        listener: RingListener | None = None,
    ) -> None:
        self.device = device
        self.listener = listener
        self._map_memory = map_memory
        #: virtio features and protocol features this backend offers
        self.features_offered = device.features | (1 << F_PROTOCOL_FEATURES)
        self.protocol_features_offered = (
            CORE_PROTOCOL_FEATURES | device.protocol_features
        ) & ProtocolFeature.MASK
        self._handlers: dict[int, Callable[[Message], list[Message]]] = {
            Request.GET_FEATURES: self._get_features,
            Request.SET_FEATURES: self._set_features,
            Request.GET_PROTOCOL_FEATURES: self._get_protocol_features,
            Request.SET_PROTOCOL_FEATURES: self._set_protocol_features,
            Request.SET_OWNER: self._set_owner,
            Request.RESET_OWNER: self._reset_device,
            Request.RESET_DEVICE: self._reset_device,
            Request.GET_QUEUE_NUM: self._get_queue_num,
            Request.GET_MAX_MEM_SLOTS: self._get_max_mem_slots,
            Request.SET_MEM_TABLE: self._set_mem_table,
            Request.ADD_MEM_REG: self._add_mem_reg,
            Request.REM_MEM_REG: self._rem_mem_reg,
            Request.SET_VRING_NUM: self._set_vring_num,
            Request.SET_VRING_ADDR: self._set_vring_addr,
            Request.SET_VRING_BASE: self._set_vring_base,
            Request.GET_VRING_BASE: self._get_vring_base,
            Request.SET_VRING_KICK: self._set_vring_file,
            Request.SET_VRING_CALL: self._set_vring_file,
            Request.SET_VRING_ERR: self._set_vring_file,
            Request.SET_VRING_ENABLE: self._set_vring_enable,
            Request.SET_SLAVE_REQ_FD: self._set_slave_req_fd,
            Request.SET_STATUS: self._set_status,
            Request.GET_STATUS: self._get_status,
            Request.GET_CONFIG: self._get_config,
            Request.SET_CONFIG: self._set_config,
        }
        self._init_state()

    def _init_state(self) -> None:
        self.acked_features = 0
        self.acked_protocol_features = 0
        self.owner = False
        self.status = 0
        self.memory: GuestMemory | None = None
        self.slave_req_fd: int | None = None
        self.vrings = [Vring(i) for i in range(self.device.num_queues)]
        self.closed = False

    # --- public -------------------------------------------------------------
    @property
    def reply_ack(self) -> bool:
        """REPLY_ACK was negotiated: NEED_REPLY requests get a u64 answer."""
        return bool(self.acked_protocol_features & (1 << ProtocolFeature.REPLY_ACK))

    @property
    def event_idx(self) -> bool:
        """The frontend acked VIRTIO_F_EVENT_IDX."""
        return bool(self.acked_features & (1 << VIRTIO_F_EVENT_IDX))

    def handle(self, msg: Message) -> list[Message]:
        """Apply one request; the replies to send, in order.

        Takes ownership of ``msg.fds`` (kept, or closed).

        :raises VhostUserProtocolError: the request is invalid here; the
            connection must be closed (call :meth:`close`).
        """
        if self.closed:
            for fd in msg.fds:
                _close(fd)
            raise VhostUserProtocolError("Connection already closed")
        handler = self._handlers.get(msg.request)
        try:
            if handler is not None:
                replies = handler(msg)
            else:
                device_replies = self.device.handle_request(msg)
                if device_replies is None:
                    raise VhostUserProtocolError(
                        f"Unhandled request: {request_name(msg.request)} ({msg.request})"
                    )
                replies = device_replies
        except VhostUserProtocolError as exc:
            raise VhostUserProtocolError(exc.desc) from None
        finally:
            # Handlers adopt an fd only once the request is known good; a
            # refused request's go. Memory regions' fds are the memory
            # handlers' own to close, whatever happens.
            if not isinstance(msg, MemTable | MemReg):
                for fd in msg.fds:
                    if not self._owns(fd):
                        _close(fd)
        if msg.need_reply and self.reply_ack and not replies:
            replies = [_reply(msg.request, 0)]
        return replies

    def close(self) -> None:
        """The connection is gone: stop every ring, close every fd, unmap memory.

        The state is then as new (a backend object can serve the next
        connection), except that :meth:`handle` refuses further requests
        until :meth:`reopen`.
        """
        self._teardown()
        self.closed = True

    def reopen(self) -> None:
        """Serve a new connection with fresh state (after :meth:`close`)."""
        self._teardown()
        self.closed = False

    def device_gone(self) -> None:
        """The frontend tore its device down but keeps the connection.

        QEMU closes the backend-request channel when it cleans a vhost
        device up, and ``object-del`` of a ``cryptodev-vhost-user`` does
        only that: the chardev, and so the socket, stay. A later
        ``object-add`` on the same chardev starts the handshake over on
        this connection, so everything but the connection is dropped.
        """
        if not self.closed:
            self._teardown()

    # --- internals ----------------------------------------------------------
    def _teardown(self) -> None:
        for vring in self.vrings:
            self._stop(vring)
            for fd in (vring.kick_fd, vring.call_fd, vring.err_fd):
                _close(fd)
        self._unmap()
        self._set_slave(None)
        self.device.reset()
        self._init_state()

    def _set_slave(self, fd: int | None) -> None:
        old, self.slave_req_fd = self.slave_req_fd, fd
        if old != fd and self.listener is not None:
            self.listener.slave_channel(fd)
        if old != fd:
            _close(old)

    def _owns(self, fd: int) -> bool:
        if fd == self.slave_req_fd:
            return True
        return any(fd in (v.kick_fd, v.call_fd, v.err_fd) for v in self.vrings)

    def _vring(self, index: int) -> Vring:
        if not 0 <= index < len(self.vrings):
            raise VhostUserProtocolError(
                f"Invalid vring index: {index} (the backend has {len(self.vrings)} queues)"
            )
        return self.vrings[index]

    def _unmap(self) -> None:
        memory, self.memory = self.memory, None
        if memory is not None:
            try:
                memory.close()
            except Exception:  # a still-exported view: the mapping goes with the GC
                log.exception("unmapping guest memory")

    def _start(self, vring: Vring) -> None:
        """Make ``vring`` live if it has everything it needs."""
        if (
            vring.started
            or self.memory is None
            or vring.enabled is False
            or not vring.has_addr
            or vring.num == 0
            or vring.kick_fd is None
            or not vring.call_set
        ):
            return
        try:
            queue = DeviceVirtqueue(
                self.memory,
                vring.num,
                vring.desc_addr,
                vring.avail_addr,
                vring.used_addr,
                event_idx=self.event_idx,
                last_avail_idx=vring.base,
            )
        except VirtqueueError as exc:  # addresses outside guest memory and the like
            raise VhostUserProtocolError(f"vring {vring.index}: {exc.desc}") from None
        vring.avail_event = None
        if not self.event_idx:
            # QEMU 7.2 never passes the guest's EVENT_IDX on (SET_FEATURES
            # carries bit 30 alone), yet the guest may use it and then kicks
            # only when the index passes avail_event. The field is always
            # there in a split ring and unused without EVENT_IDX, so keeping
            # it current costs nothing and loses no kick either way.
            with contextlib.suppress(GuestMemoryError):
                vring.avail_event = self.memory.view_uva(
                    vring.used_addr + 4 + 8 * vring.num, 2
                ).cast("H")
        vring.queue = queue
        self.device.on_ring_ready(vring)
        if self.listener is not None:
            self.listener.ring_started(vring)
        log.debug("vring %d started at avail index %d", vring.index, vring.base)

    def _stop(self, vring: Vring) -> None:
        queue = vring.queue
        if queue is None:
            return
        if self.listener is not None:
            self.listener.ring_stopping(vring)
        self.device.on_ring_stopped(vring)
        vring.base = queue.last_avail_idx
        vring.queue = None
        vring.avail_event = None
        log.debug("vring %d stopped at avail index %d", vring.index, vring.base)

    def _restart(self, vring: Vring, change: Callable[[], None]) -> None:
        """Apply ``change`` to a ring, stopping it around the change if it was live."""
        self._stop(vring)
        change()
        self._start(vring)

    # --- handlers -----------------------------------------------------------
    def _get_features(self, msg: Message) -> list[Message]:
        return [_reply(msg.request, self.features_offered)]

    def _set_features(self, msg: Message) -> list[Message]:
        assert isinstance(msg, U64)
        extra = msg.value & ~self.features_offered
        if extra:
            raise VhostUserProtocolError(
                f"SET_FEATURES acks features that were not offered: 0x{extra:x}"
            )
        changed = (msg.value ^ self.acked_features) & (1 << VIRTIO_F_EVENT_IDX)
        self.acked_features = msg.value
        if changed:
            # live rings follow the new notification scheme
            for vring in self.vrings:
                if vring.started:
                    self._restart(vring, lambda: None)
        return []

    def _get_protocol_features(self, msg: Message) -> list[Message]:
        return [_reply(msg.request, self.protocol_features_offered)]

    def _set_protocol_features(self, msg: Message) -> list[Message]:
        assert isinstance(msg, U64)
        extra = msg.value & ~self.protocol_features_offered
        if extra:
            raise VhostUserProtocolError(
                f"SET_PROTOCOL_FEATURES acks protocol features that were not offered: 0x{extra:x}"
            )
        self.acked_protocol_features = msg.value
        return []

    def _set_owner(self, msg: Message) -> list[Message]:
        self.owner = True
        return []

    def _reset_device(self, msg: Message) -> list[Message]:
        # Keep what belongs to the connection (negotiated protocol features,
        # owner), drop what belongs to the device's run.
        protocol, owner, slave = self.acked_protocol_features, self.owner, self.slave_req_fd
        self.slave_req_fd = None
        self._teardown()
        self.acked_protocol_features, self.owner, self.slave_req_fd = protocol, owner, slave
        return []

    def _get_queue_num(self, msg: Message) -> list[Message]:
        return [_reply(msg.request, len(self.vrings))]

    def _get_max_mem_slots(self, msg: Message) -> list[Message]:
        return [_reply(msg.request, self.device.max_mem_slots)]

    def _set_mem_table(self, msg: Message) -> list[Message]:
        assert isinstance(msg, MemTable)
        live = [vring for vring in self.vrings if vring.started]
        for vring in live:
            self._stop(vring)
        self._unmap()
        try:
            self.memory = self._map_memory(msg)
        except Exception as exc:
            raise VhostUserProtocolError(f"Failed to map the memory table: {exc}") from None
        for vring in self.vrings:
            self._start(vring)
        return []

    def _add_mem_reg(self, msg: Message) -> list[Message]:
        # QEMU 7.2 sends even its first memory table this way once
        # CONFIGURE_MEM_SLOTS is negotiated, one ADD_MEM_REG per region.
        assert isinstance(msg, MemReg)
        region = msg.region
        try:
            used = 0 if self.memory is None else len(self.memory.regions)
            if used >= self.device.max_mem_slots:
                raise VhostUserProtocolError(
                    f"ADD_MEM_REG: all {self.device.max_mem_slots} memory slots are in use"
                )
            if self.memory is None:
                self.memory = self._map_memory(MemTable((region,)))
            else:
                self.memory.add_region(region)
        except GuestMemoryError as exc:
            raise VhostUserProtocolError(f"Failed to add a memory region: {exc.desc}") from None
        except VhostUserProtocolError:
            _close(region.fd)
            raise
        except Exception as exc:
            raise VhostUserProtocolError(f"Failed to add a memory region: {exc}") from None
        # Live rings keep their views; the others may now have all they need.
        self._start_what_can(self.vrings)
        return []

    def _rem_mem_reg(self, msg: Message) -> list[Message]:
        assert isinstance(msg, MemReg)
        region = msg.region
        _close(region.fd if region.fd >= 0 else None)
        if self.memory is None:
            raise VhostUserProtocolError("REM_MEM_REG: no memory is mapped")
        live = [vring for vring in self.vrings if vring.started]
        for vring in live:
            self._stop(vring)
        try:
            self.memory.remove_region(
                region.guest_phys_addr, region.memory_size, region.userspace_addr
            )
        except GuestMemoryError as exc:
            raise VhostUserProtocolError(f"Failed to remove a memory region: {exc.desc}") from None
        finally:
            self._start_what_can(live)
        return []

    def _start_what_can(self, vrings: list[Vring]) -> None:
        """Start the rings whose addresses are mapped; leave the others stopped.

        Regions come and go one message at a time, so a ring may be
        outside memory between a REM_MEM_REG and the ADD_MEM_REG that
        brings its region back; it starts once they are all there.
        """
        for vring in vrings:
            try:
                self._start(vring)
            except VhostUserProtocolError as exc:
                log.debug("vring %d waits for its memory: %s", vring.index, exc.desc)

    def _set_vring_num(self, msg: Message) -> list[Message]:
        assert isinstance(msg, VringState)
        vring = self._vring(msg.index)
        num = msg.num
        if num == 0 or num > MAX_RING_SIZE or num & (num - 1):
            raise VhostUserProtocolError(
                f"Invalid vring size {num} for vring {msg.index}: "
                f"a power of 2 up to {MAX_RING_SIZE}"
            )

        def change() -> None:
            vring.num = num

        self._restart(vring, change)
        return []

    def _set_vring_addr(self, msg: Message) -> list[Message]:
        assert isinstance(msg, VringAddr)
        vring = self._vring(msg.index)

        def change() -> None:
            vring.desc_addr = msg.desc_user_addr
            vring.avail_addr = msg.avail_user_addr
            vring.used_addr = msg.used_user_addr
            vring.log_addr = msg.log_guest_addr
            vring.addr_flags = msg.ring_flags
            vring.has_addr = True

        self._restart(vring, change)
        return []

    def _set_vring_base(self, msg: Message) -> list[Message]:
        assert isinstance(msg, VringState)
        vring = self._vring(msg.index)
        if msg.num > 0xFFFF:
            raise VhostUserProtocolError(f"Invalid vring base {msg.num} for vring {msg.index}")

        def change() -> None:
            vring.base = msg.num

        self._restart(vring, change)
        return []

    def _get_vring_base(self, msg: Message) -> list[Message]:
        assert isinstance(msg, VringState)
        vring = self._vring(msg.index)
        self._stop(vring)
        _close(vring.kick_fd)
        _close(vring.call_fd)
        vring.kick_fd = vring.call_fd = None
        vring.kick_set = vring.call_set = False
        return [VringState(msg.request, msg.index, vring.base, FLAGS_REPLY)]

    def _set_vring_file(self, msg: Message) -> list[Message]:
        assert isinstance(msg, VringFile)
        vring = self._vring(msg.index)
        if msg.request == Request.SET_VRING_KICK:

            def change() -> None:
                _close(vring.kick_fd)
                vring.kick_fd, vring.kick_set = msg.fd, True

            self._restart(vring, change)
        elif msg.request == Request.SET_VRING_CALL:
            # The notifier reads call_fd each time: no need to stop the ring.
            _close(vring.call_fd)
            vring.call_fd, vring.call_set = msg.fd, True
            # Signalled once at once, as libvhost-user does: a frontend
            # (QEMU, qomhost) sends the ring's real call fd after its kick fd,
            # and whatever the ring served in between was signalled on the
            # fd this one replaces, which nobody reads any more. A spurious
            # interrupt costs the driver a look at its used ring; a lost one
            # leaves its requests waiting for ever.
            vring.notify()
            self._start(vring)
        else:
            _close(vring.err_fd)
            vring.err_fd = msg.fd
        return []

    def _set_vring_enable(self, msg: Message) -> list[Message]:
        assert isinstance(msg, VringState)
        vring = self._vring(msg.index)
        if msg.num not in (0, 1):
            raise VhostUserProtocolError(
                f"Invalid SET_VRING_ENABLE value {msg.num} for vring {msg.index}"
            )
        vring.enabled = bool(msg.num)
        if vring.enabled:
            self._start(vring)
        else:
            self._stop(vring)
        return []

    def _set_slave_req_fd(self, msg: Message) -> list[Message]:
        assert isinstance(msg, SlaveReqFd)
        self._set_slave(msg.fd)
        return []

    def _set_status(self, msg: Message) -> list[Message]:
        assert isinstance(msg, U64)
        if msg.value > 0xFF:
            raise VhostUserProtocolError(f"Invalid device status 0x{msg.value:x}")
        self.status = msg.value
        return []

    def _get_status(self, msg: Message) -> list[Message]:
        return [_reply(msg.request, self.status)]

    def _get_config(self, msg: Message) -> list[Message]:
        assert isinstance(msg, Config)
        data = self.device.get_config(msg.offset, len(msg.data))
        if data is None or len(data) != len(msg.data):
            # an empty answer tells the frontend the read failed
            data = b""
        return [Config(msg.request, msg.offset, data, msg.config_flags, FLAGS_REPLY)]

    def _set_config(self, msg: Message) -> list[Message]:
        assert isinstance(msg, Config)
        ok = self.device.set_config(msg.offset, msg.data, msg.config_flags)
        if msg.need_reply and self.reply_ack:
            return [_reply(msg.request, 0 if ok else 1)]
        return []
