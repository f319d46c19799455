"""The real vhost-user peers of ``tests/peers.py`` answer real traffic.

* DPDK's vhost_crypto completes real QEMU 7.2's ``cryptodev-vhost-user``
  handshake, which proves the backend fixture is a working peer before
  qomhost's own frontend is pointed at it.
* qemu-storage-daemon's vhost-user-blk export answers qomhost's own
  vhost-user codec over a raw socket: features, protocol features, queue
  number and the virtio-blk config space.
"""

from __future__ import annotations

import re
import socket
import struct

from hostproc import TIMEOUT, Processes, connect_unix, program, run_qmp_stdio
from peers import PeerProcess, StartQsd, StorageDaemon
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
