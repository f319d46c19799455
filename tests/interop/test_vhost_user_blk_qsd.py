"""qomhost's generic vhost-user frontend and virtqueues drive a real device:
qemu-storage-daemon's vhost-user-blk export (libvhost-user underneath).

The frontend is the one ``cryptodev-vhost-user`` uses -- :class:`VhostDev`'s
handshake, start and stop, run by a :class:`Channel` over a client socket
chardev -- with guest memory in memfds and split virtqueues
(:class:`DriverVirtqueue`). virtio-blk requests go through every queue;
what they write is checked in the image file itself, and what they read
against bytes put in the file before the daemon started.
"""

from __future__ import annotations

import os
import random
import select
import struct
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from hostproc import TIMEOUT, short_tmpdir
from peers import StartQsd, StorageDaemon
from qomhost.aio.context import AioContext
from qomhost.chardev.socket import ChardevSocket, SocketAddress
from qomhost.vhost_user.frontend import Channel, Conversation, Ring, VhostDev
from qomhost.vhost_user.memory import GuestAllocator, GuestMemory
from qomhost.vhost_user.protocol import Config, Message, ProtocolFeature, Request
from qomhost.vhost_user.virtqueue import (
    VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
    DriverVirtqueue,
    VirtqueueFull,
)

SECTOR = 512

VIRTIO_F_VERSION_1 = 32
VIRTIO_BLK_F_SEG_MAX = 2
VIRTIO_BLK_F_BLK_SIZE = 6
VIRTIO_BLK_F_FLUSH = 9
VIRTIO_BLK_F_MQ = 12

VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8
VIRTIO_BLK_ID_BYTES = 20

VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2

#: struct virtio_blk_outhdr {le32 type; le32 reserved; le64 sector}
OUTHDR = struct.Struct("<IIQ")
#: struct virtio_blk_config up to num_queues (60 bytes in all)
BLK_CONFIG_SIZE = 60

QUEUE_SIZE = 64
IMAGE_SIZE = 1 << 20


class BlkRequest:
    """One virtio-blk request in guest memory: header, data, status byte."""

    def __init__(
        self, allocator: GuestAllocator, kind: int, sector: int, length: int, data: bytes = b""
    ) -> None:
        self.allocator = allocator
        memory = allocator.memory
        self.kind = kind
        self.length = length
        self.header = allocator.alloc(OUTHDR.size)
        memory.write(self.header, OUTHDR.pack(kind, 0, sector))
        self.data = allocator.alloc(length) if length else 0
        if data:
            memory.write(self.data, data)
        self.status = allocator.alloc(1)
        memory.write(self.status, b"\xff")

    def buffers(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(device-readable, device-writable) buffers."""
        out = [(self.header, OUTHDR.size)]
        in_ = [(self.status, 1)]
        if self.length:
            if self.kind == VIRTIO_BLK_T_OUT:
                out.append((self.data, self.length))
            else:
                in_.insert(0, (self.data, self.length))
        return out, in_

    def result(self) -> tuple[int, bytes]:
        memory = self.allocator.memory
        data = memory.read(self.data, self.length) if self.kind != VIRTIO_BLK_T_OUT else b""
        return memory.read(self.status, 1)[0], data

    def free(self) -> None:
        for gpa in (self.header, self.data, self.status):
            if gpa:
                self.allocator.free(gpa)


class BlkFrontend:
    """A virtio-blk driver on qomhost's vhost-user frontend, one virtqueue per queue."""

    def __init__(
        self, socket_path: Path, num_queues: int, *, event_idx: bool, indirect: bool
    ) -> None:
        self.context = AioContext("blk-test")
        self.chardev = ChardevSocket("chardev-socket")
        self.chardev.label = "blk0"
        self.chardev.address = SocketAddress(path=str(socket_path))
        self.chardev.open()
        self.channel = Channel(self.chardev, self.context, reply_timeout=TIMEOUT)
        self.chardev.attach(self.context, self.channel)
        self.dev = VhostDev(
            0, num_queues, config_space=True, backend_channel=self.channel.backend_channel
        )
        self.channel.run(self.dev.init())
        # two regions: qsd offers CONFIGURE_MEM_SLOTS, so each is an ADD_MEM_REG
        self.memory = GuestMemory.allocate(1 << 20, regions=2)
        self.allocator = GuestAllocator(self.memory)
        self.queues: list[DriverVirtqueue] = []
        self.kick_fds: list[int] = []
        self.call_fds: list[int] = []
        self.event_idx = event_idx
        self.indirect = indirect
        self.started = False

    def config(self) -> bytes:
        def get_config() -> Conversation[Message]:
            reply = yield Config(Request.GET_CONFIG, 0, bytes(BLK_CONFIG_SIZE))
            assert reply is not None
            return reply

        reply = self.channel.run(get_config())
        assert isinstance(reply, Config), reply
        return reply.data

    def start(self) -> int:
        """SET_FEATURES .. SET_VRING_ENABLE for every queue; returns the features acked."""
        features = (
            1 << VIRTIO_F_VERSION_1
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_BLK_SIZE
            | 1 << VIRTIO_BLK_F_FLUSH
            | 1 << VIRTIO_BLK_F_MQ
        )
        if self.event_idx:
            features |= 1 << VIRTIO_RING_F_EVENT_IDX
        if self.indirect:
            features |= 1 << VIRTIO_RING_F_INDIRECT_DESC
        rings = []
        for index in range(self.dev.nvqs):
            vq = DriverVirtqueue(
                self.memory,
                self.allocator,
                QUEUE_SIZE,
                event_idx=self.event_idx,
                indirect=self.indirect,
            )
            self.queues.append(vq)
            kick = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            call = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.kick_fds.append(kick)
            self.call_fds.append(call)
            rings.append(
                Ring(index, QUEUE_SIZE, vq.desc_uva, vq.avail_uva, vq.used_uva, kick, call)
            )
        self.channel.run(self.dev.start(features, self.memory.mem_table(), rings))
        self.started = True
        return features & self.dev.backend_features

    def submit(self, queue: int, requests: Sequence[BlkRequest]) -> None:
        vq = self.queues[queue]
        for request in requests:
            out, in_ = request.buffers()
            vq.add(out, in_, request)
        if vq.kick_needed():
            os.eventfd_write(self.kick_fds[queue], 1)

    def wait(self, queue: int, count: int) -> list[tuple[object, int]]:
        """The next ``count`` completions on ``queue``, in the device's order."""
        vq = self.queues[queue]
        call = self.call_fds[queue]
        poller = select.poll()
        poller.register(call, select.POLLIN)
        done: list[tuple[object, int]] = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            done += vq.get_used()
            if len(done) >= count:
                return done
            left = deadline - time.monotonic()
            assert left > 0, f"{len(done)} of {count} requests completed on queue {queue}"
            # A notification may be suppressed (event idx); poll the ring again anyway.
            if poller.poll(min(100, int(left * 1000) + 1)):
                os.eventfd_read(call)

    def run(self, queue: int, requests: Sequence[BlkRequest]) -> list[tuple[int, bytes, int]]:
        """Submit ``requests`` together; (status, data read, bytes written) each, in order."""
        self.submit(queue, requests)
        written = dict((id(token), n) for token, n in self.wait(queue, len(requests)))
        results = []
        for request in requests:
            status, data = request.result()
            results.append((status, data, written[id(request)]))
            request.free()
        return results

    def request(
        self, queue: int, kind: int, sector: int, length: int = 0, data: bytes = b""
    ) -> tuple[int, bytes, int]:
        (result,) = self.run(queue, [BlkRequest(self.allocator, kind, sector, length, data)])
        return result

    def stop(self) -> list[int]:
        bases = self.channel.run(self.dev.stop(range(self.dev.nvqs)))
        self.started = False
        return bases

    def close(self) -> None:
        self.channel.close()
        self.dev.close()
        self.chardev.finalize()
        for vq in self.queues:
            vq.release()
        for fd in (*self.kick_fds, *self.call_fds):
            os.close(fd)
        self.memory.close()
        self.context.close()


@pytest.fixture
def image() -> Iterator[Path]:
    """A raw image whose every sector starts with its own number (and is random after)."""
    rng = random.Random(7)
    with short_tmpdir() as directory:
        path = directory / "disk.img"
        with open(path, "wb") as f:
            for sector in range(IMAGE_SIZE // SECTOR):
                f.write(struct.pack("<Q", sector) + rng.randbytes(SECTOR - 8))
        yield path


def read_image(daemon: StorageDaemon, sector: int, count: int) -> bytes:
    with open(daemon.image, "rb") as f:
        return os.pread(f.fileno(), count * SECTOR, sector * SECTOR)


@pytest.fixture(params=[(True, True), (False, False)], ids=["event_idx+indirect", "plain"])
def blk(
    request: pytest.FixtureRequest, start_qsd_blk: StartQsd, image: Path
) -> Iterator[tuple[BlkFrontend, StorageDaemon]]:
    event_idx, indirect = request.param
    daemon = start_qsd_blk(image=image, num_queues=2)
    frontend = BlkFrontend(daemon.socket, 2, event_idx=event_idx, indirect=indirect)
    try:
        yield frontend, daemon
    finally:
        frontend.close()
    daemon.assert_running()


def test_handshake_config_and_features(blk: tuple[BlkFrontend, StorageDaemon]) -> None:
    frontend, daemon = blk
    assert frontend.dev.max_queues == 2
    config = frontend.config()
    (capacity,) = struct.unpack_from("<Q", config, 0)
    (num_queues,) = struct.unpack_from("<H", config, 34)
    assert capacity == daemon.size // SECTOR
    assert num_queues == 2
    # the memory then goes as one ADD_MEM_REG per region, as QEMU 7.2 sends it
    assert frontend.dev.has_protocol_feature(ProtocolFeature.CONFIGURE_MEM_SLOTS)
    acked = frontend.start()
    assert acked >> VIRTIO_F_VERSION_1 & 1
    assert acked >> VIRTIO_RING_F_EVENT_IDX & 1 == frontend.event_idx
    assert acked >> VIRTIO_RING_F_INDIRECT_DESC & 1 == frontend.indirect
    assert frontend.stop() == [0, 0]


def test_read_write_on_every_queue(blk: tuple[BlkFrontend, StorageDaemon]) -> None:
    frontend, daemon = blk
    frontend.start()
    rng = random.Random(42)
    counts = [0, 0]
    for queue in range(2):
        # reads: what was put in the file before the daemon started
        for sector, count in ((0, 1), (17, 3), (IMAGE_SIZE // SECTOR - 8, 8)):
            status, data, written = frontend.request(queue, VIRTIO_BLK_T_IN, sector, count * SECTOR)
            counts[queue] += 1
            assert status == VIRTIO_BLK_S_OK
            assert written == count * SECTOR + 1
            assert data == read_image(daemon, sector, count)
            assert struct.unpack_from("<Q", data)[0] == sector

        # writes land in the file, and read back the same through the queue
        base = 100 + 50 * queue
        payloads = {base + 4 * k: rng.randbytes(SECTOR * (k + 1)) for k in range(4)}
        results = frontend.run(
            queue,
            [
                BlkRequest(frontend.allocator, VIRTIO_BLK_T_OUT, sector, len(data), data)
                for sector, data in payloads.items()
            ],
        )
        counts[queue] += len(payloads)
        assert [(status, written) for status, _data, written in results] == [
            (VIRTIO_BLK_S_OK, 1)
        ] * len(payloads)
        for sector, data in payloads.items():
            assert read_image(daemon, sector, len(data) // SECTOR) == data
            status, back, _written = frontend.request(queue, VIRTIO_BLK_T_IN, sector, len(data))
            counts[queue] += 1
            assert (status, back) == (VIRTIO_BLK_S_OK, data)

        status, _data, _written = frontend.request(queue, VIRTIO_BLK_T_FLUSH, 0)
        counts[queue] += 1
        assert status == VIRTIO_BLK_S_OK

    # GET_VRING_BASE: where each queue's next request would be
    assert frontend.stop() == counts


def test_many_requests_in_flight(blk: tuple[BlkFrontend, StorageDaemon]) -> None:
    """Several times more writes than the ring holds, keeping it full on both queues."""
    frontend, daemon = blk
    frontend.start()
    rng = random.Random(3)
    sectors = rng.sample(range(IMAGE_SIZE // SECTOR), 3 * QUEUE_SIZE)
    expected = {sector: rng.randbytes(SECTOR) for sector in sectors}
    pending = [list(sectors[queue::2]) for queue in range(2)]
    completed = [0, 0]
    in_flight = [0, 0]
    most = [0, 0]
    deadline = time.monotonic() + 4 * TIMEOUT
    while any(pending) or any(in_flight):
        assert time.monotonic() < deadline, (completed, in_flight)
        for queue in range(2):
            vq = frontend.queues[queue]
            added = False
            while pending[queue]:
                sector = pending[queue][-1]
                request = BlkRequest(
                    frontend.allocator, VIRTIO_BLK_T_OUT, sector, SECTOR, expected[sector]
                )
                out, in_ = request.buffers()
                try:
                    vq.add(out, in_, request)
                except VirtqueueFull:
                    request.free()
                    break
                pending[queue].pop()
                in_flight[queue] += 1
                added = True
            most[queue] = max(most[queue], in_flight[queue])
            if added and vq.kick_needed():
                os.eventfd_write(frontend.kick_fds[queue], 1)
            for token, written in vq.get_used():
                assert isinstance(token, BlkRequest)
                assert (token.result()[0], written) == (VIRTIO_BLK_S_OK, 1)
                token.free()
                in_flight[queue] -= 1
                completed[queue] += 1
        time.sleep(0.0005)
    assert completed == [len(sectors[0::2]), len(sectors[1::2])]
    # the ring really was full at some point: all descriptors (or heads) in use
    full = QUEUE_SIZE if frontend.indirect else QUEUE_SIZE // 3
    assert most == [full, full]
    for sector, data in expected.items():
        assert read_image(daemon, sector, 1) == data


def test_errors(blk: tuple[BlkFrontend, StorageDaemon]) -> None:
    frontend, _daemon = blk
    frontend.start()
    last = IMAGE_SIZE // SECTOR
    for queue in range(2):
        # past the end, and straddling it
        assert frontend.request(queue, VIRTIO_BLK_T_IN, last, SECTOR)[0] == VIRTIO_BLK_S_IOERR
        assert (
            frontend.request(queue, VIRTIO_BLK_T_IN, last - 1, 2 * SECTOR)[0] == VIRTIO_BLK_S_IOERR
        )
        assert (
            frontend.request(queue, VIRTIO_BLK_T_OUT, last, SECTOR, bytes(SECTOR))[0]
            == VIRTIO_BLK_S_IOERR
        )
        # an unknown request type
        assert frontend.request(queue, 0x7F, 0, SECTOR)[0] == VIRTIO_BLK_S_UNSUPP


def test_get_id(blk: tuple[BlkFrontend, StorageDaemon]) -> None:
    frontend, _daemon = blk
    frontend.start()
    status, data, _written = frontend.request(0, VIRTIO_BLK_T_GET_ID, 0, VIRTIO_BLK_ID_BYTES)
    assert status == VIRTIO_BLK_S_OK
    assert data.rstrip(b"\0") == b"vhost_user_blk"


def test_read_only_export_refuses_writes(start_qsd_blk: StartQsd, image: Path) -> None:
    daemon = start_qsd_blk(image=image, num_queues=1, writable=False)
    frontend = BlkFrontend(daemon.socket, 1, event_idx=True, indirect=True)
    try:
        frontend.start()
        before = read_image(daemon, 5, 1)
        status, _data, _written = frontend.request(0, VIRTIO_BLK_T_OUT, 5, SECTOR, b"\x55" * SECTOR)
        assert status == VIRTIO_BLK_S_IOERR
        assert read_image(daemon, 5, 1) == before
        assert frontend.request(0, VIRTIO_BLK_T_IN, 5, SECTOR)[:2] == (VIRTIO_BLK_S_OK, before)
    finally:
        frontend.close()
