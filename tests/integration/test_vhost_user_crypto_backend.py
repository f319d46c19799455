"""The vhost-user crypto backend over real unix sockets (``vhost_user.server``).

A :class:`~qomhost.vhost_user.server.BackendThread` serves
:class:`~qomhost.cryptodev.device.VhostUserCryptoDevice` on a socket; the
test is the frontend, written with the codec and the driver-side
virtqueue only: it sends QEMU 7.2's messages over the socket with
``SCM_RIGHTS``, puts requests on rings in shared memory, kicks real
eventfds and waits on the call eventfds.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hostproc import TIMEOUT, short_tmpdir
from qomhost.cryptodev.device import VhostUserCryptoDevice
from qomhost.cryptodev.virtio_crypto import (
    CipherAlgo,
    DataHeader,
    DataRequest,
    Op,
    Opcode,
    Status,
    SymCipherData,
    SymSessionInfo,
    encode_session,
    session_reply_id,
)
from qomhost.vhost_user.memory import GuestAllocator, GuestMemory
from qomhost.vhost_user.protocol import (
    FLAGS_NEED_REPLY,
    FRONTEND,
    U64,
    CryptoSession,
    Empty,
    Message,
    ProtocolFeature,
    Request,
    VhostUserDecoder,
    VhostUserProtocolError,
    VringFile,
    VringState,
)
from qomhost.vhost_user.server import BackendThread
from qomhost.vhost_user.virtqueue import VRING_USED_F_NO_NOTIFY, DriverVirtqueue

F_PROTOCOL_FEATURES = 1 << 30


class Frontend:
    """A frontend on a real socket, doing what QEMU 7.2 does, with rings of its own."""

    def __init__(self, path: str, queues: int = 1, num: int = 64) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(TIMEOUT)
        self.decoder = VhostUserDecoder(role=FRONTEND)
        self.memory = GuestMemory.allocate(4 << 20)
        self.alloc = GuestAllocator(self.memory)
        self.num = num
        self.queues = [
            DriverVirtqueue(self.memory, self.alloc, num, indirect=True) for _ in range(queues)
        ]
        self.kicks = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(queues)]
        self.calls = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(queues)]

    def close(self) -> None:
        self.sock.close()
        for fd in self.kicks + self.calls:
            os.close(fd)
        for queue in self.queues:
            queue.release()
        self.memory.close()

    def send(self, msg: Message) -> None:
        if msg.fds:
            socket.send_fds(self.sock, [msg.encode()], list(msg.fds))
        else:
            self.sock.sendall(msg.encode())

    def recv(self) -> Message:
        while True:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 4096, 8)
            if not data:
                raise EOFError("the backend closed the connection")
            items = self.decoder.feed(data, fds)
            if items:
                (item,) = items
                if isinstance(item, VhostUserProtocolError):
                    raise item
                return item

    def call(self, msg: Message) -> Message:
        self.send(msg)
        reply = self.recv()
        assert reply.request == msg.request and reply.flags == 0x5, reply
        return reply

    def u64(self, request: int) -> int:
        reply = self.call(Empty(request))
        assert isinstance(reply, U64)
        return reply.value

    def handshake(self) -> None:
        """Object creation (qemu-semantics §5.3) then device start (guest-e2e §4.3)."""
        assert self.u64(Request.GET_FEATURES) & F_PROTOCOL_FEATURES
        protocol = self.u64(Request.GET_PROTOCOL_FEATURES) & ProtocolFeature.MASK
        self.send(U64(Request.SET_PROTOCOL_FEATURES, protocol))
        assert self.u64(Request.GET_QUEUE_NUM) >= len(self.queues)
        self.send(Empty(Request.SET_OWNER))
        self.send(U64(Request.SET_FEATURES, F_PROTOCOL_FEATURES))
        table = self.memory.mem_table(FLAGS_NEED_REPLY)
        assert self.call(table) == U64(Request.SET_MEM_TABLE, 0, 0x5)
        for i, queue in enumerate(self.queues):
            self.send(VringState(Request.SET_VRING_NUM, i, self.num))
            self.send(VringState(Request.SET_VRING_BASE, i, 0))
            self.send(queue.vring_addr(i))
            self.send(VringFile(Request.SET_VRING_KICK, i, self.kicks[i]))
            self.send(VringFile(Request.SET_VRING_CALL, i, self.calls[i]))

    def create_session(self, algo: int, key: bytes, op: int) -> int:
        reply = self.call(CryptoSession(encode_session(SymSessionInfo(algo, key, op))))
        assert isinstance(reply, CryptoSession)
        return session_reply_id(reply.session, "qemu-7.2")

    def submit(self, queue: int, session: int, iv: bytes, data: bytes) -> tuple[int, int]:
        header = DataRequest(
            DataHeader(Opcode.CIPHER_ENCRYPT, CipherAlgo.AES_CBC, session),
            SymCipherData(len(iv), len(data), len(data)),
        ).encode()
        out = self.alloc.alloc(72 + len(iv) + len(data))
        self.memory.write(out, header + iv + data)
        dst = self.alloc.alloc(len(data) + 1)
        self.queues[queue].add([(out, 72 + len(iv) + len(data))], [(dst, len(data) + 1)], dst)
        return dst, dst + len(data)

    def kick(self, queue: int) -> None:
        if self.queues[queue].kick_needed():
            os.eventfd_write(self.kicks[queue], 1)

    def wait_used(self, queue: int, count: int) -> list[tuple[object, int]]:
        done: list[tuple[object, int]] = []
        while len(done) < count:
            ready, _, _ = select.select([self.calls[queue]], [], [], TIMEOUT)
            assert ready, f"no call notification ({len(done)} of {count} completed)"
            os.eventfd_read(self.calls[queue])
            done += self.queues[queue].get_used()
        return done


def aes_cbc(key: bytes, iv: bytes, data: bytes) -> bytes:
    ctx = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return ctx.update(data) + ctx.finalize()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with short_tmpdir() as path:
        yield path


@pytest.fixture
def backend(sock_dir: Path) -> Iterator[BackendThread]:
    path = str(sock_dir / "vu.sock")
    with BackendThread(lambda: VhostUserCryptoDevice(num_queues=2), path) as thread:
        yield thread
    assert not os.path.exists(path), "the socket file outlived the backend"


def test_requests_on_every_queue(backend: BackendThread) -> None:
    fe = Frontend(backend.path, queues=2)
    try:
        fe.handshake()
        key = os.urandom(32)
        sid = fe.create_session(CipherAlgo.AES_CBC, key, Op.ENCRYPT)
        assert sid == 0
        for queue in (0, 1):
            expected = {}
            for _ in range(40):
                iv, data = os.urandom(16), os.urandom(4096)
                dst, status = fe.submit(queue, sid, iv, data)
                expected[dst] = (status, aes_cbc(key, iv, data))
            fe.kick(queue)
            used = fe.wait_used(queue, 40)
            assert sorted(token for token, _ in used) == sorted(expected)  # type: ignore[type-var]
            for dst, (status, ct) in expected.items():
                assert fe.memory.read(status, 1)[0] == Status.OK
                assert fe.memory.read(dst, 4096) == ct
    finally:
        fe.close()


def test_more_than_a_batch_per_kick(sock_dir: Path) -> None:
    path = str(sock_dir / "b.sock")
    with BackendThread(VhostUserCryptoDevice, path, aio_max_batch=4) as thread:
        fe = Frontend(thread.path, num=128)
        try:
            fe.handshake()
            sid = fe.create_session(CipherAlgo.AES_CBC, bytes(16), Op.ENCRYPT)
            for _ in range(100):
                fe.submit(0, sid, bytes(16), bytes(64))
            fe.kick(0)
            assert len(fe.wait_used(0, 100)) == 100
        finally:
            fe.close()


def test_a_bad_message_closes_only_its_connection(backend: BackendThread) -> None:
    good = Frontend(backend.path)
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        good.handshake()
        sid = good.create_session(CipherAlgo.AES_CBC, bytes(32), Op.ENCRYPT)
        bad.connect(backend.path)
        bad.settimeout(TIMEOUT)
        # flags 0x4 (a reply) where a request belongs
        bad.sendall(b"\x01\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00")
        assert bad.recv(100) == b""  # closed by the backend
        dst, status = good.submit(0, sid, bytes(16), bytes(32))
        good.kick(0)
        good.wait_used(0, 1)
        assert good.memory.read(status, 1)[0] == Status.OK
        assert good.memory.read(dst, 32) == aes_cbc(bytes(32), bytes(16), bytes(32))
    finally:
        bad.close()
        good.close()


def test_the_next_frontend_starts_afresh(backend: BackendThread) -> None:
    first = Frontend(backend.path)
    try:
        first.handshake()
        assert first.create_session(CipherAlgo.AES_CBC, bytes(16), Op.ENCRYPT) == 0
        first.submit(0, 0, bytes(16), bytes(16))
        # gone mid-request, without a kick or GET_VRING_BASE
    finally:
        first.close()
    second = Frontend(backend.path)
    try:
        second.handshake()
        # sessions died with the connection that made them
        _dst, status = second.submit(0, 0, bytes(16), bytes(16))
        second.kick(0)
        second.wait_used(0, 1)
        assert second.memory.read(status, 1)[0] == Status.INVSESS
        assert second.create_session(CipherAlgo.AES_CBC, bytes(16), Op.ENCRYPT) == 0
    finally:
        second.close()
    assert backend.call(lambda: backend.server.served) == 2


def test_requests_queued_before_the_kick_fd_are_served(backend: BackendThread) -> None:
    fe = Frontend(backend.path)
    try:
        fe.handshake()
        sid = fe.create_session(CipherAlgo.AES_CBC, bytes(16), Op.ENCRYPT)
        fe.send(VringState(Request.GET_VRING_BASE, 0, 0))
        base = fe.recv()
        assert base == VringState(Request.GET_VRING_BASE, 0, 0, 0x5)
        fe.submit(0, sid, bytes(16), bytes(16))  # while the ring is stopped
        # the backend closed its copies of both eventfds when the ring stopped
        for fd in (fe.calls[0], fe.kicks[0]):
            os.close(fd)
        fe.calls[0] = os.eventfd(0, os.EFD_NONBLOCK)
        fe.kicks[0] = os.eventfd(0, os.EFD_NONBLOCK)
        fe.send(VringFile(Request.SET_VRING_KICK, 0, fe.kicks[0]))
        fe.send(VringFile(Request.SET_VRING_CALL, 0, fe.calls[0]))
        assert len(fe.wait_used(0, 1)) == 1  # no kick was sent
    finally:
        fe.close()


def test_a_burst_read_at_once_keeps_each_fd_with_its_message(backend: BackendThread) -> None:
    # While the backend's loop is held, the whole device start queues up in
    # its socket: fd-less requests and fd-carrying ones in separate sends.
    # Its reads then return fd-less requests together with a later
    # request's fds, and every fd must still reach the right request.
    fe = Frontend(backend.path)
    held, release = threading.Event(), threading.Event()
    try:
        assert fe.u64(Request.GET_FEATURES) & F_PROTOCOL_FEATURES
        fe.u64(Request.GET_PROTOCOL_FEATURES)
        backend.context.submit(lambda: (held.set(), release.wait(TIMEOUT)))
        assert held.wait(TIMEOUT)
        fe.send(Empty(Request.SET_OWNER))
        fe.send(U64(Request.SET_FEATURES, F_PROTOCOL_FEATURES))
        fe.send(fe.memory.mem_table())
        fe.send(VringState(Request.SET_VRING_NUM, 0, fe.num))
        fe.send(VringState(Request.SET_VRING_BASE, 0, 0))
        fe.send(fe.queues[0].vring_addr(0))
        fe.send(VringFile(Request.SET_VRING_KICK, 0, fe.kicks[0]))
        fe.send(VringFile(Request.SET_VRING_ERR, 0, None))
        fe.send(VringFile(Request.SET_VRING_CALL, 0, fe.calls[0]))
        fe.send(Empty(Request.GET_QUEUE_NUM))
        release.set()
        assert fe.recv() == U64(Request.GET_QUEUE_NUM, 2, 0x5)
        key = os.urandom(32)
        sid = fe.create_session(CipherAlgo.AES_CBC, key, Op.ENCRYPT)
        dst, status = fe.submit(0, sid, bytes(16), bytes(64))
        fe.kick(0)
        fe.wait_used(0, 1)
        assert fe.memory.read(status, 1)[0] == Status.OK
        assert fe.memory.read(dst, 64) == aes_cbc(key, bytes(16), bytes(64))
    finally:
        release.set()
        fe.close()


def test_a_new_call_fd_is_signalled_at_once(backend: BackendThread) -> None:
    """QEMU sends a ring's real call fd after its kick fd; what the ring served
    in between was signalled on the fd it replaced, so the new one is
    signalled once (as libvhost-user does) and no completion goes unseen."""
    fe = Frontend(backend.path)
    placeholder = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        assert fe.u64(Request.GET_FEATURES) & F_PROTOCOL_FEATURES
        fe.send(U64(Request.SET_PROTOCOL_FEATURES, fe.u64(Request.GET_PROTOCOL_FEATURES)))
        fe.send(Empty(Request.SET_OWNER))
        # object creation: the masked notifier stands in for the call fd
        fe.send(VringFile(Request.SET_VRING_CALL, 0, placeholder))
        sid = fe.create_session(CipherAlgo.AES_CBC, bytes(16), Op.ENCRYPT)
        fe.send(U64(Request.SET_FEATURES, F_PROTOCOL_FEATURES))
        assert fe.call(fe.memory.mem_table(FLAGS_NEED_REPLY)) == U64(Request.SET_MEM_TABLE, 0, 0x5)
        # a request already on the ring when it starts: served at once
        dst, status = fe.submit(0, sid, bytes(16), bytes(32))
        fe.send(VringState(Request.SET_VRING_NUM, 0, fe.num))
        fe.send(VringState(Request.SET_VRING_BASE, 0, 0))
        fe.send(fe.queues[0].vring_addr(0))
        fe.send(VringFile(Request.SET_VRING_KICK, 0, fe.kicks[0]))
        assert select.select([placeholder], [], [], TIMEOUT)[0], "served, signalled"
        fe.send(VringFile(Request.SET_VRING_CALL, 0, fe.calls[0]))
        assert len(fe.wait_used(0, 1)) == 1
        assert fe.memory.read(status, 1)[0] == Status.OK
        assert fe.memory.read(dst, 32) == aes_cbc(bytes(16), bytes(16), bytes(32))
    finally:
        os.close(placeholder)
        fe.close()


def test_a_polling_backend_asks_for_no_kicks_and_serves_without_them(sock_dir: Path) -> None:
    """While its loop polls the ring the backend sets VRING_USED_F_NO_NOTIFY
    (and moves avail_event out of reach, for a driver that uses EVENT_IDX
    unannounced); the driver skips its kicks and every request is answered.
    When the loop stops polling, kicks are asked for again."""
    path = str(sock_dir / "p.sock")
    with BackendThread(VhostUserCryptoDevice, path) as thread:
        ctx = thread.context

        def poll_long() -> None:
            # a window of 10 s that never grows or shrinks
            ctx.set_poll_params(20_000_000_000, 1, 1)
            ctx.poll_ns = 10_000_000_000

        thread.call(poll_long)
        fe = Frontend(thread.path)
        try:
            fe.handshake()
            key = os.urandom(32)
            sid = fe.create_session(CipherAlgo.AES_CBC, key, Op.ENCRYPT)
            queue = fe.queues[0]
            used = queue._used16  # the device's flags and avail_event, as the driver sees them
            event_at = queue._avail_event_at
            deadline = time.monotonic() + TIMEOUT
            while not used[0] & VRING_USED_F_NO_NOTIFY:
                assert time.monotonic() < deadline, "the backend never started polling"
                time.sleep(0.001)
            assert used[event_at] == 0x8000
            for n in range(1, 21):
                iv, data = os.urandom(16), os.urandom(256)
                dst, status = fe.submit(0, sid, iv, data)
                assert not queue.kick_needed()
                fe.kick(0)  # sends nothing
                deadline = time.monotonic() + TIMEOUT
                while not queue.has_used():
                    assert time.monotonic() < deadline, f"request {n} never answered"
                    time.sleep(0.0001)
                assert queue.get_used() == [(dst, len(data) + 1)]
                assert fe.memory.read(status, 1)[0] == Status.OK
                assert fe.memory.read(dst, len(data)) == aes_cbc(key, iv, data)
            # polling ends: kicks wanted again, avail_event at the next request
            thread.call(lambda: ctx.set_poll_params(0, 0, 0))
            deadline = time.monotonic() + TIMEOUT
            while used[0] & VRING_USED_F_NO_NOTIFY:
                assert time.monotonic() < deadline, "the backend still polls"
                time.sleep(0.001)
            assert used[event_at] == 20
            fe.submit(0, sid, bytes(16), bytes(16))
            assert queue.kick_needed()
        finally:
            fe.close()
