"""The real vhost-user peers of ``tests/peers.py`` answer real traffic.

* DPDK's vhost_crypto completes real QEMU 7.2's ``cryptodev-vhost-user``
  handshake, which proves the backend fixture is a working peer before
  qomhost's own frontend is pointed at it.
* the same backend serves qomhost's generic frontend pieces (``VhostDev``
  over a socket chardev, memfd guest memory, a driver virtqueue): sessions,
  then AES-256-CBC requests whose output equals ``cryptography``'s. This is
  the recipe DPDK 22.11 needs: ``SET_STATUS`` with ``DRIVER_OK`` after the
  rings start, the pre-7.1 (``legacy``) session layout, indirect descriptors.
* qemu-storage-daemon's vhost-user-blk export answers qomhost's own
  vhost-user codec over a raw socket: features, protocol features, queue
  number and the virtio-blk config space.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hostproc import TIMEOUT, Processes, connect_unix, program, run_qmp_stdio
from peers import PeerProcess, StartQsd, StorageDaemon
from qomhost.aio.context import AioContext
from qomhost.chardev.socket import ChardevSocket, SocketAddress
from qomhost.cryptodev.virtio_crypto import (
    LAYOUT_LEGACY,
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
from qomhost.vhost_user.frontend import Channel, Conversation, Ring, VhostDev
from qomhost.vhost_user.memory import GuestAllocator, GuestMemory
from qomhost.vhost_user.protocol import (
    FRONTEND,
    U64,
    Config,
    Empty,
    Message,
    ProtocolFeature,
    Request,
    VhostUserDecoder,
    VhostUserProtocolError,
)
from qomhost.vhost_user.virtqueue import DriverVirtqueue

F_PROTOCOL_FEATURES = 1 << 30
F_VERSION_1 = 1 << 32
VIRTIO_BLK_F_MQ = 1 << 12
FLAGS_NEED_REPLY = 0x9

#: struct virtio_blk_config is 60 bytes; capacity (u64) at 0, num_queues (u16) at 34
BLK_CONFIG_SIZE = 60


class RawFrontend:
    """Blocking request/reply over a unix socket with qomhost's codec, nothing more."""

    def __init__(self, path: str) -> None:
        self.sock = connect_unix(path)
        self.sock.settimeout(TIMEOUT)
        self.decoder = VhostUserDecoder(role=FRONTEND)
        self._ready: list[Message] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, msg: Message) -> None:
        if msg.fds:
            socket.send_fds(self.sock, [msg.encode()], list(msg.fds))
        else:
            self.sock.sendall(msg.encode())

    def recv(self) -> Message:
        while not self._ready:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 4096, 8)
            assert data, "the backend closed the connection"
            for item in self.decoder.feed(data, fds):
                if isinstance(item, VhostUserProtocolError):
                    raise item
                self._ready.append(item)
        return self._ready.pop(0)

    def call(self, msg: Message) -> Message:
        self.send(msg)
        reply = self.recv()
        assert reply.request == msg.request, (reply, msg)
        assert reply.is_reply
        return reply

    def get_u64(self, request: int) -> int:
        reply = self.call(Empty(request))
        assert isinstance(reply, U64), reply
        return reply.value


# --------------------------------------------------------------------------- DPDK vhost_crypto


def test_qemu_cryptodev_vhost_user_handshake_with_dpdk(
    procs: Processes, dpdk_crypto: PeerProcess
) -> None:
    qemu = program("qemu")
    run = run_qmp_stdio(
        procs,
        qemu,
        [
            "-qmp",
            "stdio",
            "-chardev",
            f"socket,id=c0,path={dpdk_crypto.socket}",
            "-object",
            "cryptodev-vhost-user,id=cv0,chardev=c0",
        ],
        [{"execute": "qom-get", "arguments": {"path": "/objects/cv0", "property": "queues"}}],
    )
    assert run.status == 0, run.stderr
    replies = [m for m in run.messages if "return" in m or "error" in m]
    assert replies == [{"return": {}}, {"return": 1}, {"return": {}}], run.messages
    # QEMU drops PROTOCOL_F_CONFIG, which DPDK offers, and says so
    assert "backend supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not" in run.stderr
    dpdk_crypto.assert_running()
    log = dpdk_crypto.wait_log("read message VHOST_USER_SET_VRING_ERR")
    seen = re.findall(r"read message (VHOST_USER_\w+)", log)
    assert seen[:9] == [
        "VHOST_USER_GET_FEATURES",
        "VHOST_USER_GET_PROTOCOL_FEATURES",
        "VHOST_USER_SET_PROTOCOL_FEATURES",
        "VHOST_USER_GET_QUEUE_NUM",
        "VHOST_USER_SET_SLAVE_REQ_FD",
        "VHOST_USER_SET_OWNER",
        "VHOST_USER_GET_FEATURES",
        "VHOST_USER_SET_VRING_CALL",
        "VHOST_USER_SET_VRING_ERR",
    ], log


def test_dpdk_vhost_crypto_answers_the_codec(dpdk_crypto: PeerProcess) -> None:
    conn = RawFrontend(str(dpdk_crypto.socket))
    try:
        features = conn.get_u64(Request.GET_FEATURES)
        protocol = conn.get_u64(Request.GET_PROTOCOL_FEATURES)
        assert features & (F_PROTOCOL_FEATURES | F_VERSION_1) == F_PROTOCOL_FEATURES | F_VERSION_1
        assert protocol >> ProtocolFeature.CRYPTO_SESSION & 1
        conn.send(U64(Request.SET_PROTOCOL_FEATURES, protocol & ProtocolFeature.MASK))
        assert conn.get_u64(Request.GET_QUEUE_NUM) >= 1
    finally:
        conn.close()
    dpdk_crypto.assert_running()


VIRTIO_RING_F_INDIRECT_DESC = 1 << 28
VIRTIO_RING_F_EVENT_IDX = 1 << 29
#: VIRTIO_CONFIG_S_ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK
STATUS_DRIVER_OK = 0xF


class CryptoDriver:
    """qomhost's generic frontend pieces as a virtio-crypto driver of one data queue."""

    def __init__(self, socket_path: Path) -> None:
        self.context = AioContext("crypto-test")
        self.chardev = ChardevSocket("chardev-socket")
        self.chardev.label = "c0"
        self.chardev.address = SocketAddress(path=str(socket_path))
        self.chardev.open()
        self.channel = Channel(self.chardev, self.context, reply_timeout=TIMEOUT)
        self.chardev.attach(self.context, self.channel)
        self.dev = VhostDev(0, 1, backend_channel=self.channel.backend_channel)
        self.channel.run(self.dev.init())
        self.memory = GuestMemory.allocate(1 << 20)
        self.allocator = GuestAllocator(self.memory)
        features = F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX
        self.vq = DriverVirtqueue(self.memory, self.allocator, 64, event_idx=True, indirect=True)
        self.kick = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.call = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        ring = Ring(
            0, 64, self.vq.desc_uva, self.vq.avail_uva, self.vq.used_uva, self.kick, self.call
        )
        self.channel.run(self.dev.start(features, self.memory.mem_table(), [ring]))

        # DPDK waits for DRIVER_OK (it negotiates PROTOCOL_F_STATUS) before the
        # device is ready, and only a ready device handles session messages
        def set_status() -> Conversation[None]:
            yield U64(Request.SET_STATUS, STATUS_DRIVER_OK)

        self.channel.run(set_status())

    def create_session(self, key: bytes, direction: int) -> int:
        info = SymSessionInfo(CipherAlgo.AES_CBC, key, direction)
        payload = encode_session(info, LAYOUT_LEGACY)
        session_id = session_reply_id(
            self.channel.run(self.dev.create_crypto_session(payload)), LAYOUT_LEGACY
        )
        assert session_id >= 0, session_id
        return session_id

    def cipher(self, session_id: int, opcode: int, iv: bytes, data: bytes) -> bytes:
        memory, alloc = self.memory, self.allocator
        request = DataRequest(
            DataHeader(opcode, CipherAlgo.AES_CBC, session_id),
            SymCipherData(len(iv), len(data), len(data)),
        ).encode()
        out = []
        for part in (request, iv, data):
            gpa = alloc.alloc(len(part))
            memory.write(gpa, part)
            out.append((gpa, len(part)))
        dst = alloc.alloc(len(data))
        status = alloc.alloc(1)
        memory.write(status, b"\xff")
        self.vq.add(out, [(dst, len(data)), (status, 1)], "request")
        if self.vq.kick_needed():
            os.eventfd_write(self.kick, 1)
        deadline = time.monotonic() + TIMEOUT
        while not (done := self.vq.get_used()):
            assert time.monotonic() < deadline, "DPDK did not complete the request"
            time.sleep(0.0005)
        ((token, written),) = done
        # DPDK 22.11's used length is not the bytes written: 17 for a first 16-byte
        # request, then 0 for every later one, whatever its size
        assert token == "request" and written <= len(data) + 1, done
        assert memory.read(status, 1)[0] == Status.OK
        result = memory.read(dst, len(data))
        for gpa, _length in out:
            alloc.free(gpa)
        alloc.free(dst)
        alloc.free(status)
        return result

    def close(self) -> None:
        self.channel.close()
        self.dev.close()
        self.chardev.finalize()
        self.vq.release()
        os.close(self.kick)
        os.close(self.call)
        self.memory.close()
        self.context.close()


@pytest.fixture
def crypto_driver(dpdk_crypto: PeerProcess) -> Iterator[CryptoDriver]:
    driver = CryptoDriver(dpdk_crypto.socket)
    try:
        yield driver
    finally:
        driver.close()


def test_dpdk_vhost_crypto_aes_cbc_through_the_generic_frontend(
    dpdk_crypto: PeerProcess, crypto_driver: CryptoDriver
) -> None:
    key, iv = os.urandom(32), os.urandom(16)
    encrypt = crypto_driver.create_session(key, Op.ENCRYPT)
    decrypt = crypto_driver.create_session(key, Op.DECRYPT)
    assert encrypt != decrypt
    dpdk_crypto.wait_log(f"Session {decrypt} created")
    # DPDK refuses (and retries forever) sources over 2048 bytes
    for length in (16, 64, 1024, 2048):
        plain = os.urandom(length)
        enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        expected = enc.update(plain) + enc.finalize()
        assert crypto_driver.cipher(encrypt, Opcode.CIPHER_ENCRYPT, iv, plain) == expected
        assert crypto_driver.cipher(decrypt, Opcode.CIPHER_DECRYPT, iv, expected) == plain
    for session_id in (encrypt, decrypt):
        crypto_driver.channel.run(crypto_driver.dev.close_crypto_session(session_id))
    dpdk_crypto.wait_log(f"Session {decrypt} deleted")
    dpdk_crypto.assert_running()


# --------------------------------------------------------------------------- qemu-storage-daemon


def handshake(conn: RawFrontend) -> tuple[int, int]:
    features = conn.get_u64(Request.GET_FEATURES)
    assert features & F_PROTOCOL_FEATURES
    protocol = conn.get_u64(Request.GET_PROTOCOL_FEATURES)
    conn.send(U64(Request.SET_PROTOCOL_FEATURES, protocol & ProtocolFeature.MASK))
    return features, protocol


def get_blk_config(conn: RawFrontend) -> bytes:
    reply = conn.call(Config(Request.GET_CONFIG, 0, bytes(BLK_CONFIG_SIZE)))
    assert isinstance(reply, Config), reply
    assert reply.offset == 0
    assert len(reply.data) == BLK_CONFIG_SIZE
    return reply.data


def test_qsd_blk_handshake_and_config(qsd_blk: StorageDaemon) -> None:
    conn = RawFrontend(str(qsd_blk.socket))
    try:
        features, protocol = handshake(conn)
        assert features & F_VERSION_1
        assert features & VIRTIO_BLK_F_MQ
        for bit in (ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG):
            assert protocol >> bit & 1, (bit, hex(protocol))
        assert conn.get_u64(Request.GET_QUEUE_NUM) == qsd_blk.num_queues == 2

        config = get_blk_config(conn)
        (capacity,) = struct.unpack_from("<Q", config, 0)
        (num_queues,) = struct.unpack_from("<H", config, 34)
        assert capacity == qsd_blk.size // 512 == 8192
        assert num_queues == 2

        # libvhost-user refuses a legacy (pre-VERSION_1) driver; with REPLY_ACK
        # negotiated the SET_FEATURES is acknowledged with 0
        acked = conn.call(
            U64(
                Request.SET_FEATURES,
                F_VERSION_1 | F_PROTOCOL_FEATURES | VIRTIO_BLK_F_MQ,
                FLAGS_NEED_REPLY,
            )
        )
        assert isinstance(acked, U64) and acked.value == 0
    finally:
        conn.close()
    qsd_blk.assert_running()


def test_qsd_blk_config_follows_the_options(start_qsd_blk: StartQsd) -> None:
    daemon = start_qsd_blk(size=1 << 20, num_queues=4, export_opts={"logical-block-size": "4096"})
    conn = RawFrontend(str(daemon.socket))
    try:
        handshake(conn)
        assert conn.get_u64(Request.GET_QUEUE_NUM) == 4
        config = get_blk_config(conn)
        capacity, _size_max, _seg_max = struct.unpack_from("<QII", config, 0)
        (blk_size,) = struct.unpack_from("<I", config, 20)
        (num_queues,) = struct.unpack_from("<H", config, 34)
        # capacity is always in 512-byte sectors, whatever the block size
        assert (capacity, blk_size, num_queues) == ((1 << 20) // 512, 4096, 4)
    finally:
        conn.close()


def test_qsd_blk_serves_a_second_frontend_after_the_first(qsd_blk: StorageDaemon) -> None:
    for _ in range(2):
        conn = RawFrontend(str(qsd_blk.socket))
        try:
            handshake(conn)
            assert conn.get_u64(Request.GET_QUEUE_NUM) == 2
        finally:
            conn.close()
    qsd_blk.assert_running()
