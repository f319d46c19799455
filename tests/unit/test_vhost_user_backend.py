"""The sans-I/O vhost-user backend state machine (``vhost_user.backend``).

Requests are fed as QEMU 7.2 sends them (``reference/qemu-semantics.md``
§5.3 and ``reference/guest-e2e.md`` §4.3), decoded from bytes by the
real codec; descriptors are real eventfds and memfds, guest memory is
real shared memory and rings are driven by the real driver-side
virtqueue.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostproc import own_fds
from qomhost.vhost_user.backend import (
    CORE_PROTOCOL_FEATURES,
    VIRTIO_F_EVENT_IDX,
    VhostUserBackend,
    VhostUserDevice,
    Vring,
    describe,
)
from qomhost.vhost_user.memory import GuestAllocator, GuestMemory
from qomhost.vhost_user.protocol import (
    BACKEND,
    FLAGS_NEED_REPLY,
    FLAGS_REPLY,
    U64,
    Config,
    CryptoSession,
    Empty,
    MemoryRegion,
    MemReg,
    MemTable,
    Message,
    ProtocolFeature,
    Request,
    SlaveReqFd,
    VhostUserDecoder,
    VhostUserProtocolError,
    VringAddr,
    VringFile,
    VringState,
)
from qomhost.vhost_user.virtqueue import DriverVirtqueue, VirtqueueError

F_PROTOCOL_FEATURES = 1 << 30
CONFIG_BIT = 1 << ProtocolFeature.CONFIG


class EchoDevice(VhostUserDevice):
    """A small real device: copies what it reads into what it may write."""

    type_name = "echo"
    features = 1 << 32
    protocol_features = CONFIG_BIT

    def __init__(self, num_queues: int = 2) -> None:
        self.num_queues = num_queues
        self.events: list[tuple[str, int]] = []
        self.resets = 0
        self.config_space = bytearray(range(16))

    def on_ring_ready(self, vring: Vring) -> None:
        self.events.append(("ready", vring.index))

    def on_ring_stopped(self, vring: Vring) -> None:
        self.events.append(("stopped", vring.index))

    def process_ring(self, vring: Vring, limit: int) -> int:
        queue = vring.queue
        assert queue is not None
        served = 0
        while served < limit:
            chain = queue.pop()
            if chain is None:
                break
            data = chain.read_all()[: chain.writable_len]
            chain.write(0, data)
            queue.push(chain.head, len(data))
            served += 1
        return served

    def get_config(self, offset: int, size: int) -> bytes | None:
        if offset + size > len(self.config_space):
            return None
        return bytes(self.config_space[offset : offset + size])

    def set_config(self, offset: int, data: bytes, flags: int) -> bool:
        if offset + len(data) > len(self.config_space):
            return False
        self.config_space[offset : offset + len(data)] = data
        return True

    def reset(self) -> None:
        self.resets += 1


class Listener:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, int | None]] = []

    def ring_started(self, vring: Vring) -> None:
        self.events.append(("started", vring.index, vring.kick_fd))

    def ring_stopping(self, vring: Vring) -> None:
        self.events.append(("stopping", vring.index, vring.kick_fd))

    def slave_channel(self, fd: int | None) -> None:
        self.events.append(("slave", -1, fd))


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def decode(msg: Message) -> Message:
    """``msg`` as the backend's decoder reads it from the wire."""
    items = VhostUserDecoder(role=BACKEND).feed(msg.encode(), msg.fds)
    assert len(items) == 1 and isinstance(items[0], Message), items
    return items[0]


def shared_table(memory: GuestMemory, flags: int = 0x1) -> MemTable:
    """The frontend's SET_MEM_TABLE with duplicated fds (the backend closes what it gets)."""
    table = memory.mem_table(flags)
    return MemTable(
        tuple(
            MemoryRegion(
                r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset, os.dup(r.fd)
            )
            for r in table.regions
        ),
        flags,
    )


@pytest.fixture
def device() -> EchoDevice:
    return EchoDevice()


@pytest.fixture
def backend(device: EchoDevice) -> Iterator[VhostUserBackend]:
    before = own_fds()
    be = VhostUserBackend(device, listener=Listener())
    yield be
    be.close()
    assert own_fds() <= before, "the backend leaked descriptors"


def qemu_handshake(backend: VhostUserBackend, queues: int = 2) -> list[tuple[int, Message]]:
    """QEMU 7.2's cryptodev-vhost-user handshake for ``queues`` queues; (request, reply) pairs."""
    out: list[tuple[int, Message]] = []

    def send(msg: Message) -> None:
        for reply in backend.handle(decode(msg)):
            out.append((msg.request, reply))

    for index in range(queues):
        send(Empty(Request.GET_FEATURES))
        send(Empty(Request.GET_PROTOCOL_FEATURES))
        offered = [r for q, r in out if q == Request.GET_PROTOCOL_FEATURES][-1]
        assert isinstance(offered, U64)
        # QEMU masks with (1 << 17) - 1 and drops CONFIG for crypto
        acked = offered.value & ProtocolFeature.MASK & ~CONFIG_BIT
        send(U64(Request.SET_PROTOCOL_FEATURES, acked))
        if index == 0:
            send(Empty(Request.GET_QUEUE_NUM))
        if acked >> ProtocolFeature.CONFIGURE_MEM_SLOTS & 1:
            send(Empty(Request.GET_MAX_MEM_SLOTS))  # for every queue, as QEMU 7.2 asks
        if index == 0:
            a, b = socket.socketpair()
            b.close()
            send(SlaveReqFd(a.detach(), FLAGS_NEED_REPLY))
            send(Empty(Request.SET_OWNER))
        send(Empty(Request.GET_FEATURES))
        send(VringFile(Request.SET_VRING_CALL, index, eventfd()))
        send(VringFile(Request.SET_VRING_ERR, index, eventfd()))
    return out


def test_qemu_72_handshake_replies(backend: VhostUserBackend) -> None:
    replies = qemu_handshake(backend)
    assert [q for q, _ in replies] == [
        Request.GET_FEATURES,
        Request.GET_PROTOCOL_FEATURES,
        Request.GET_QUEUE_NUM,
        Request.GET_MAX_MEM_SLOTS,
        Request.SET_SLAVE_REQ_FD,  # the REPLY_ACK
        Request.GET_FEATURES,
        Request.GET_FEATURES,
        Request.GET_PROTOCOL_FEATURES,
        Request.GET_MAX_MEM_SLOTS,
        Request.GET_FEATURES,
    ]
    for _request, reply in replies:
        assert reply.flags == FLAGS_REPLY  # QEMU accepts exactly 0x5
        assert isinstance(reply, U64)
    features, protocol, queue_num, slots, ack = (r.value for _, r in replies[:5])  # type: ignore[attr-defined]
    assert features == (1 << 32) | F_PROTOCOL_FEATURES
    assert protocol == CORE_PROTOCOL_FEATURES | CONFIG_BIT
    for bit in ("MQ", "REPLY_ACK", "SLAVE_REQ", "CONFIGURE_MEM_SLOTS", "STATUS"):
        assert protocol >> getattr(ProtocolFeature, bit) & 1, bit
    assert (queue_num, slots, ack) == (2, 8, 0)
    # the exact bytes QEMU reads for GET_FEATURES
    assert replies[0][1].encode() == struct.pack("<IIIQ", 1, 5, 8, features)
    assert backend.owner
    assert backend.reply_ack
    assert backend.slave_req_fd is not None
    assert all(v.call_fd is not None and v.err_fd is not None for v in backend.vrings)
    assert not any(v.started for v in backend.vrings)


def test_need_reply_without_reply_ack_gets_no_answer(backend: VhostUserBackend) -> None:
    assert backend.handle(U64(Request.SET_FEATURES, 0, FLAGS_NEED_REPLY)) == []
    backend.handle(U64(Request.SET_PROTOCOL_FEATURES, 1 << ProtocolFeature.REPLY_ACK))
    assert backend.handle(U64(Request.SET_FEATURES, 0, FLAGS_NEED_REPLY)) == [
        U64(Request.SET_FEATURES, 0, FLAGS_REPLY)
    ]
    # a request with its own reply gets that, not an ack besides
    assert backend.handle(Empty(Request.GET_QUEUE_NUM, FLAGS_NEED_REPLY)) == [
        U64(Request.GET_QUEUE_NUM, 2, FLAGS_REPLY)
    ]


def test_status_and_max_mem_slots(backend: VhostUserBackend) -> None:
    assert backend.handle(Empty(Request.GET_STATUS)) == [U64(Request.GET_STATUS, 0, FLAGS_REPLY)]
    backend.handle(U64(Request.SET_STATUS, 0x8))
    assert backend.handle(Empty(Request.GET_STATUS)) == [U64(Request.GET_STATUS, 8, FLAGS_REPLY)]
    assert backend.handle(Empty(Request.GET_MAX_MEM_SLOTS)) == [
        U64(Request.GET_MAX_MEM_SLOTS, 8, FLAGS_REPLY)
    ]
    with pytest.raises(VhostUserProtocolError, match="Invalid device status"):
        backend.handle(U64(Request.SET_STATUS, 0x100))


def test_config_goes_to_the_device(backend: VhostUserBackend, device: EchoDevice) -> None:
    reply = backend.handle(Config(Request.GET_CONFIG, 4, bytes(4)))
    assert reply == [Config(Request.GET_CONFIG, 4, bytes([4, 5, 6, 7]), 0, FLAGS_REPLY)]
    # out of range: an empty answer, which a frontend reads as failure
    assert backend.handle(Config(Request.GET_CONFIG, 14, bytes(4))) == [
        Config(Request.GET_CONFIG, 14, b"", 0, FLAGS_REPLY)
    ]
    backend.handle(U64(Request.SET_PROTOCOL_FEATURES, 1 << ProtocolFeature.REPLY_ACK))
    assert backend.handle(Config(Request.SET_CONFIG, 0, b"\xff", flags=FLAGS_NEED_REPLY)) == [
        U64(Request.SET_CONFIG, 0, FLAGS_REPLY)
    ]
    assert device.config_space[0] == 0xFF
    assert backend.handle(Config(Request.SET_CONFIG, 16, b"\xff", flags=FLAGS_NEED_REPLY)) == [
        U64(Request.SET_CONFIG, 1, FLAGS_REPLY)
    ]


def test_features_must_have_been_offered(backend: VhostUserBackend) -> None:
    with pytest.raises(VhostUserProtocolError, match="not offered: 0x1"):
        backend.handle(U64(Request.SET_FEATURES, 1))
    with pytest.raises(VhostUserProtocolError, match="not offered: 0x100"):
        backend.handle(U64(Request.SET_PROTOCOL_FEATURES, 1 << ProtocolFeature.PAGEFAULT))
    backend.handle(U64(Request.SET_FEATURES, F_PROTOCOL_FEATURES))
    assert backend.acked_features == F_PROTOCOL_FEATURES


def test_unknown_request_is_a_protocol_error(backend: VhostUserBackend) -> None:
    # the echo device does not do crypto sessions
    with pytest.raises(VhostUserProtocolError, match="Unhandled request: CREATE_CRYPTO_SESSION"):
        backend.handle(CryptoSession(bytes(632)))


@pytest.mark.parametrize(
    "msg, text",
    [
        (VringState(Request.SET_VRING_NUM, 2, 8), "Invalid vring index: 2"),
        (VringState(Request.SET_VRING_NUM, 0, 0), "Invalid vring size 0"),
        (VringState(Request.SET_VRING_NUM, 0, 12), "Invalid vring size 12"),
        (VringState(Request.SET_VRING_NUM, 0, 65536), "Invalid vring size 65536"),
        (VringState(Request.SET_VRING_BASE, 0, 65536), "Invalid vring base 65536"),
        (VringState(Request.SET_VRING_ENABLE, 0, 2), "Invalid SET_VRING_ENABLE value 2"),
        (VringState(Request.GET_VRING_BASE, 7, 0), "Invalid vring index: 7"),
    ],
)
def test_bad_ring_requests(backend: VhostUserBackend, msg: Message, text: str) -> None:
    with pytest.raises(VhostUserProtocolError, match=text):
        backend.handle(msg)


def test_fds_of_a_refused_request_are_closed(backend: VhostUserBackend) -> None:
    fd = eventfd()
    with pytest.raises(VhostUserProtocolError, match="Invalid vring index: 9"):
        backend.handle(VringFile(Request.SET_VRING_KICK, 9, fd))
    assert not is_open(fd)


def test_replaced_fds_are_closed(backend: VhostUserBackend) -> None:
    first, second = eventfd(), eventfd()
    backend.handle(VringFile(Request.SET_VRING_CALL, 0, first))
    backend.handle(VringFile(Request.SET_VRING_CALL, 0, second))
    assert not is_open(first) and is_open(second)
    backend.close()
    assert not is_open(second)
    with pytest.raises(VhostUserProtocolError, match="already closed"):
        backend.handle(Empty(Request.GET_FEATURES))


def test_a_bad_memory_table_is_refused_and_its_fds_closed(backend: VhostUserBackend) -> None:
    fd = os.memfd_create("short")
    os.ftruncate(fd, 4096)
    table = MemTable((MemoryRegion(0, 1 << 20, 0x7F0000000000, 0, fd),))
    with pytest.raises(VhostUserProtocolError, match="Failed to map the memory table"):
        backend.handle(table)
    assert not is_open(fd)
    assert backend.memory is None


class Frontend:
    """The driver's side of two rings in real shared memory, as QEMU would set them up."""

    def __init__(
        self, size: int = 1 << 20, num: int = 16, event_idx: bool = False, regions: int = 1
    ) -> None:
        self.memory = GuestMemory.allocate(size, regions=regions)
        self.alloc = GuestAllocator(self.memory)
        self.num = num
        self.queues = [
            DriverVirtqueue(self.memory, self.alloc, num, event_idx=event_idx) for _ in range(2)
        ]
        self.kicks = [eventfd() for _ in range(2)]
        self.calls = [eventfd() for _ in range(2)]

    def start_ring(self, backend: VhostUserBackend, index: int) -> None:
        """guest-e2e §4.3: NUM, BASE, ADDR, KICK, CALL -- no ENABLE, no DRIVER_OK."""
        backend.handle(decode(VringState(Request.SET_VRING_NUM, index, self.num)))
        backend.handle(decode(VringState(Request.SET_VRING_BASE, index, 0)))
        backend.handle(decode(self.queues[index].vring_addr(index)))
        backend.handle(decode(VringFile(Request.SET_VRING_KICK, index, os.dup(self.kicks[index]))))
        backend.handle(decode(VringFile(Request.SET_VRING_CALL, index, os.dup(self.calls[index]))))

    def request(self, index: int, data: bytes) -> tuple[int, int]:
        src = self.alloc.alloc(len(data))
        dst = self.alloc.alloc(len(data))
        self.memory.write(src, data)
        self.queues[index].add([(src, len(data))], [(dst, len(data))], dst)
        return src, dst

    def close(self) -> None:
        for fd in self.kicks + self.calls:
            os.close(fd)
        for queue in self.queues:
            queue.release()  # its views would keep the mapping (and an fd) alive
        self.memory.close()


@pytest.fixture
def frontend() -> Iterator[Frontend]:
    fe = Frontend()
    yield fe
    fe.close()


def test_qemu_72_device_start_makes_the_ring_live_without_enable(
    backend: VhostUserBackend, device: EchoDevice, frontend: Frontend
) -> None:
    qemu_handshake(backend, 1)
    backend.handle(decode(U64(Request.SET_FEATURES, F_PROTOCOL_FEATURES)))
    backend.handle(decode(Empty(Request.GET_STATUS)))
    backend.handle(decode(U64(Request.SET_STATUS, 0x8)))
    ack = backend.handle(decode(shared_table(frontend.memory, FLAGS_NEED_REPLY)))
    assert ack == [U64(Request.SET_MEM_TABLE, 0, FLAGS_REPLY)]
    frontend.start_ring(backend, 0)
    vring = backend.vrings[0]
    assert vring.started and vring.enabled is None
    assert device.events == [("ready", 0)]
    assert backend.listener.events == [  # type: ignore[union-attr]
        ("slave", -1, backend.slave_req_fd),
        ("started", 0, vring.kick_fd),
    ]
    # the ring works: one request in, its echo out
    _src, dst = frontend.request(0, b"hello, ring")
    assert device.process_ring(vring, 32) == 1
    assert frontend.memory.read(dst, 11) == b"hello, ring"
    assert frontend.queues[0].get_used() == [(dst, 11)]
    # guest power-off: GET_VRING_BASE answers the next avail index and stops the ring
    kick, call = vring.kick_fd, vring.call_fd
    assert backend.handle(decode(VringState(Request.GET_VRING_BASE, 0, 0))) == [
        VringState(Request.GET_VRING_BASE, 0, 1, FLAGS_REPLY)
    ]
    assert not vring.started and vring.kick_fd is None and vring.call_fd is None
    assert kick is not None and not is_open(kick)
    assert call is not None and not is_open(call)
    assert device.events == [("ready", 0), ("stopped", 0)]


def test_the_ring_restarts_where_it_stopped(
    backend: VhostUserBackend, device: EchoDevice, frontend: Frontend
) -> None:
    backend.handle(shared_table(frontend.memory))
    frontend.start_ring(backend, 1)
    for i in range(3):
        frontend.request(1, bytes([i]) * 4)
    assert device.process_ring(backend.vrings[1], 2) == 2
    reply = backend.handle(VringState(Request.GET_VRING_BASE, 1, 0))
    assert reply == [VringState(Request.GET_VRING_BASE, 1, 2, FLAGS_REPLY)]
    frontend.start_ring(backend, 1)  # QEMU sends SET_VRING_BASE 0 again; we honour it
    assert backend.vrings[1].queue is not None
    assert backend.vrings[1].queue.last_avail_idx == 0
    backend.handle(VringState(Request.GET_VRING_BASE, 1, 0))
    backend.handle(VringState(Request.SET_VRING_BASE, 1, 2))
    backend.handle(VringFile(Request.SET_VRING_KICK, 1, eventfd()))
    backend.handle(VringFile(Request.SET_VRING_CALL, 1, eventfd()))
    assert device.process_ring(backend.vrings[1], 32) == 1
    assert len(frontend.queues[1].get_used()) == 3


def test_enable_zero_pauses_and_one_resumes(
    backend: VhostUserBackend, device: EchoDevice, frontend: Frontend
) -> None:
    backend.handle(shared_table(frontend.memory))
    frontend.start_ring(backend, 0)
    backend.handle(VringState(Request.SET_VRING_ENABLE, 0, 0))
    assert not backend.vrings[0].started
    assert backend.vrings[0].kick_fd is not None  # paused, not torn down
    backend.handle(VringState(Request.SET_VRING_ENABLE, 0, 1))
    assert backend.vrings[0].started
    assert device.events == [("ready", 0), ("stopped", 0), ("ready", 0)]


def test_a_new_memory_table_restarts_live_rings(
    backend: VhostUserBackend, device: EchoDevice, frontend: Frontend
) -> None:
    backend.handle(shared_table(frontend.memory))
    frontend.start_ring(backend, 0)
    old = backend.memory
    backend.handle(shared_table(frontend.memory))
    assert old is not None and old.closed
    assert backend.vrings[0].started
    assert device.events == [("ready", 0), ("stopped", 0), ("ready", 0)]


def mem_regs(memory: GuestMemory, request: int, flags: int = 0x1) -> list[MemReg]:
    """One ADD_MEM_REG (or REM_MEM_REG) per region, fds duplicated for ADD."""
    return [
        MemReg(
            request,
            MemoryRegion(
                r.guest_phys_addr,
                r.memory_size,
                r.userspace_addr,
                r.mmap_offset,
                os.dup(r.fd) if request == Request.ADD_MEM_REG else -1,
            ),
            flags,
        )
        for r in memory.regions
    ]


def test_memory_region_by_region_as_qemu_72_starts_the_device(
    backend: VhostUserBackend, device: EchoDevice
) -> None:
    frontend = Frontend(size=1 << 20, regions=2)
    try:
        qemu_handshake(backend, 1)
        backend.handle(decode(U64(Request.SET_FEATURES, F_PROTOCOL_FEATURES)))
        adds = mem_regs(frontend.memory, Request.ADD_MEM_REG, FLAGS_NEED_REPLY)
        for add in adds:
            assert backend.handle(decode(add)) == [U64(Request.ADD_MEM_REG, 0, FLAGS_REPLY)]
        assert backend.memory is not None and len(backend.memory.regions) == 2
        frontend.start_ring(backend, 0)
        vring = backend.vrings[0]
        assert vring.started
        # a request whose buffers straddle the two regions
        boundary = frontend.memory.regions[1].guest_phys_addr
        data = os.urandom(256)
        frontend.memory.write(boundary - 128, data)
        dst = frontend.alloc.alloc(256)
        frontend.queues[0].add([(boundary - 128, 256)], [(dst, 256)], dst)
        assert device.process_ring(vring, 8) == 1
        assert frontend.memory.read(dst, 256) == data
        # the rings' region goes away and comes back: the ring waits for it
        rings_in = [
            r for r in frontend.memory.regions if r.userspace_addr <= vring.desc_addr < r.uva_end
        ]
        (rem,) = [
            m
            for m in mem_regs(frontend.memory, Request.REM_MEM_REG)
            if m.region.userspace_addr == rings_in[0].userspace_addr
        ]
        backend.handle(decode(rem))
        assert not vring.started and len(backend.memory.regions) == 1
        r = rings_in[0]
        fd = os.dup(r.fd)
        region = MemoryRegion(r.guest_phys_addr, r.memory_size, r.userspace_addr, 0, fd)
        backend.handle(decode(MemReg(Request.ADD_MEM_REG, region)))
        assert vring.started and vring.queue is not None and vring.queue.last_avail_idx == 1
    finally:
        frontend.close()


def test_bad_memory_regions_are_refused_and_their_fds_closed(
    backend: VhostUserBackend, frontend: Frontend
) -> None:
    (add,) = mem_regs(frontend.memory, Request.ADD_MEM_REG)
    backend.handle(add)
    (again,) = mem_regs(frontend.memory, Request.ADD_MEM_REG)
    with pytest.raises(VhostUserProtocolError, match="overlap"):
        backend.handle(again)
    assert not is_open(again.region.fd)
    fd = os.dup(frontend.memory.regions[0].fd)
    other = MemoryRegion(0x40000000, 4096, 0x10000, 0, fd)
    with pytest.raises(VhostUserProtocolError, match="no memory region at guest address"):
        backend.handle(MemReg(Request.REM_MEM_REG, other))
    assert not is_open(fd)
    backend.device.max_mem_slots = 1
    fd = os.dup(frontend.memory.regions[0].fd)
    with pytest.raises(VhostUserProtocolError, match="all 1 memory slots are in use"):
        backend.handle(MemReg(Request.ADD_MEM_REG, MemoryRegion(0x40000000, 4096, 0x10000, 0, fd)))
    assert not is_open(fd)


def test_ring_addresses_outside_memory(backend: VhostUserBackend, frontend: Frontend) -> None:
    backend.handle(shared_table(frontend.memory))
    backend.handle(VringState(Request.SET_VRING_NUM, 0, 16))
    backend.handle(VringAddr(0, 0x1000, 0x2000, 0x3000))
    with pytest.raises(VhostUserProtocolError, match="vring 0: Invalid vring_addr message"):
        backend.handle(VringFile(Request.SET_VRING_KICK, 0, eventfd()))
        backend.handle(VringFile(Request.SET_VRING_CALL, 0, eventfd()))


def test_rearm_keeps_avail_event_without_event_idx(
    backend: VhostUserBackend, device: EchoDevice
) -> None:
    # the guest negotiated EVENT_IDX with QEMU; the backend was never told
    fe = Frontend(event_idx=True)
    try:
        backend.handle(shared_table(fe.memory))
        fe.start_ring(backend, 0)
        vring = backend.vrings[0]
        assert not backend.event_idx and vring.avail_event is not None
        fe.request(0, b"one")
        assert fe.queues[0].kick_needed()  # avail_event 0 covers the first
        assert device.process_ring(vring, 32) == 1
        assert vring.rearm() is False
        fe.request(0, b"two")
        # without the rearm the guest would think no kick is needed (event still 0)
        assert fe.queues[0].kick_needed()
        assert vring.rearm() is True
    finally:
        backend.close()
        fe.close()


class EventIdxEchoDevice(EchoDevice):
    features = EchoDevice.features | (1 << VIRTIO_F_EVENT_IDX)


def test_event_idx_acked() -> None:
    be = VhostUserBackend(EventIdxEchoDevice())
    fe = Frontend(event_idx=True)
    try:
        be.handle(U64(Request.SET_FEATURES, 1 << VIRTIO_F_EVENT_IDX))
        be.handle(shared_table(fe.memory))
        fe.start_ring(be, 0)
        assert be.vrings[0].queue is not None and be.vrings[0].queue.event_idx
        assert be.vrings[0].avail_event is None
    finally:
        be.close()
        fe.close()


def test_reset_device_keeps_the_connection(
    backend: VhostUserBackend, device: EchoDevice, frontend: Frontend
) -> None:
    qemu_handshake(backend, 1)
    backend.handle(shared_table(frontend.memory))
    frontend.start_ring(backend, 0)
    protocol = backend.acked_protocol_features
    backend.handle(Empty(Request.RESET_DEVICE))
    assert backend.memory is None and not backend.vrings[0].started
    assert backend.acked_protocol_features == protocol and backend.owner
    assert backend.slave_req_fd is not None and is_open(backend.slave_req_fd)
    assert device.resets == 1


def test_close_releases_everything(device: EchoDevice, frontend: Frontend) -> None:
    before = own_fds()
    be = VhostUserBackend(device)
    qemu_handshake(be)
    be.handle(shared_table(frontend.memory))
    frontend.start_ring(be, 0)
    frontend.start_ring(be, 1)
    assert own_fds() > before
    memory = be.memory
    be.close()
    assert own_fds() == before
    assert memory is not None and memory.closed
    assert device.resets == 1
    be.reopen()
    assert be.handle(Empty(Request.GET_QUEUE_NUM)) == [U64(Request.GET_QUEUE_NUM, 2, FLAGS_REPLY)]


def test_describe_hides_session_keys() -> None:
    text = describe(CryptoSession(b"\x00" * 56 + b"SECRETKEY".ljust(576, b"\0")))
    assert text == "CREATE_CRYPTO_SESSION (26) size=632"
    assert describe(VringFile(Request.SET_VRING_CALL, 1, 9)) == "SET_VRING_CALL (13) index=1 fd=9"
    assert describe(U64(Request.GET_FEATURES, 5, FLAGS_REPLY)).endswith("flags=0x5 value=0x5")


# --------------------------------------------------------------------------- fuzzing

RING = st.integers(0, 3)

# Strategies draw recipes; the test body makes the real fds, so that none is
# made for examples hypothesis generates and then drops.
Recipe = tuple[str, tuple[object, ...]]


@st.composite
def requests(draw: st.DrawFn) -> Recipe:
    kind = draw(st.sampled_from(range(15)))
    flags = draw(st.sampled_from([0x1, 0x9]))
    if kind == 0:
        req = draw(
            st.sampled_from(
                [
                    Request.GET_FEATURES,
                    Request.GET_PROTOCOL_FEATURES,
                    Request.SET_OWNER,
                    Request.RESET_OWNER,
                    Request.RESET_DEVICE,
                    Request.GET_QUEUE_NUM,
                    Request.GET_MAX_MEM_SLOTS,
                    Request.GET_STATUS,
                ]
            )
        )
        return "empty", (req, flags)
    if kind == 1:
        req = draw(st.sampled_from([Request.SET_FEATURES, Request.SET_PROTOCOL_FEATURES]))
        value = draw(st.sampled_from([0, F_PROTOCOL_FEATURES, 0xFFFF, 1 << 32, 0x80A9, 1 << 63]))
        return "u64", (req, value, flags)
    if kind == 2:
        return "u64", (Request.SET_STATUS, draw(st.integers(0, 0x1FF)), flags)
    if kind in (3, 4):
        req = draw(
            st.sampled_from(
                [
                    Request.SET_VRING_NUM,
                    Request.SET_VRING_BASE,
                    Request.GET_VRING_BASE,
                    Request.SET_VRING_ENABLE,
                ]
            )
        )
        num = draw(st.sampled_from([0, 1, 2, 8, 16, 100, 65536]))
        return "state", (req, draw(RING), num, flags)
    if kind == 5:
        addrs = [draw(st.sampled_from([0, 0x1000, 0x2000, 0x3000, 1 << 40])) for _ in range(3)]
        return "addr", (draw(RING), *addrs)
    if kind in (6, 7, 8):
        req = draw(
            st.sampled_from([Request.SET_VRING_KICK, Request.SET_VRING_CALL, Request.SET_VRING_ERR])
        )
        return "file", (req, draw(RING), draw(st.booleans()), flags)
    if kind == 9:
        return "mem", (
            draw(st.sampled_from([0, 4096, 1 << 16])),
            draw(st.sampled_from([0, 0x1000])),
            draw(st.sampled_from([0, 4096, 1 << 16, 1 << 20])),
            draw(st.sampled_from([0, 0x1000, 0x7F0000000000])),
            draw(st.sampled_from([0, 4096, 123])),
            flags,
        )
    if kind == 10:
        return "slave", (flags,)
    if kind == 11:
        req = draw(st.sampled_from([Request.GET_CONFIG, Request.SET_CONFIG]))
        return "config", (req, draw(st.integers(0, 20)), draw(st.integers(0, 20)), flags)
    if kind == 12:
        return "session", (flags,)
    if kind == 14:
        return "memreg", (
            draw(st.sampled_from([Request.ADD_MEM_REG, Request.REM_MEM_REG])),
            draw(st.sampled_from([0, 4096, 1 << 16])),
            draw(st.sampled_from([0, 0x1000, 0x10000])),
            draw(st.sampled_from([0, 4096, 1 << 16])),
            draw(st.sampled_from([0, 0x1000, 0x7F0000000000])),
            draw(st.booleans()),
            flags,
        )
    return "u64", (Request.CLOSE_CRYPTO_SESSION, draw(st.integers(0, 3)), flags)


def build(recipe: Recipe) -> Message:
    kind, args = recipe
    a: list[Any] = list(args)
    if kind == "empty":
        return Empty(*a)
    if kind == "u64":
        return U64(*a)
    if kind == "state":
        return VringState(*a)
    if kind == "addr":
        return VringAddr(*a)
    if kind == "file":
        req, index, nofd, flags = a
        return VringFile(req, index, None if nofd else eventfd(), flags)
    if kind == "mem":
        file_size, gpa, size, uva, offset, flags = a
        fd = os.memfd_create("fuzz", os.MFD_CLOEXEC)
        os.ftruncate(fd, file_size)
        return MemTable((MemoryRegion(gpa, size, uva, offset, fd),), flags)
    if kind == "memreg":
        req, file_size, gpa, size, uva, with_fd, flags = a
        fd = -1
        if with_fd or req == Request.ADD_MEM_REG:
            fd = os.memfd_create("fuzz", os.MFD_CLOEXEC)
            os.ftruncate(fd, file_size)
        return MemReg(req, MemoryRegion(gpa, size, uva, 0, fd), flags)
    if kind == "slave":
        return SlaveReqFd(eventfd(), *a)
    if kind == "config":
        req, offset, size, flags = a
        return Config(req, offset, bytes(size), flags=flags)
    return CryptoSession(bytes(632), *a)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests(), max_size=25))
def test_random_sequences_only_raise_protocol_errors(recipes: list[Recipe]) -> None:
    before = own_fds()
    backend = VhostUserBackend(EchoDevice())
    try:
        for recipe in recipes:
            msg = build(recipe)
            if backend.closed:
                for fd in msg.fds:
                    os.close(fd)
                continue
            try:
                replies = backend.handle(msg)
            except VhostUserProtocolError:
                backend.close()
                continue
            for reply in replies:
                assert reply.flags == FLAGS_REPLY
                reply.encode()
            try:
                for vring in backend.vrings:
                    if vring.started:
                        backend.device.process_ring(vring, 4)
                        vring.rearm()
            except VirtqueueError:
                backend.close()  # what the server does with a broken ring
    finally:
        backend.close()
    assert own_fds() == before
