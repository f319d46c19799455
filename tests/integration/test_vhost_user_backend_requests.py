"""Backend requests on the backend-request channel, from a real backend socket.

The test is the backend: it answers the frontend's handshake with
SLAVE_REQ and REPLY_ACK, takes the socket end that comes with
SET_SLAVE_REQ_FD, and sends requests on it as a backend would (QEMU 7.2's
numbering: IOTLB_MSG, CONFIG_CHANGE_MSG, VRING_HOST_NOTIFIER_MSG and an
unknown one). The frontend runs on a loop in its own thread, as in a host.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostproc import TIMEOUT, own_fds, short_tmpdir
from qomhost.aio.context import AioContext
from qomhost.chardev.socket import ChardevSocket, SocketAddress
from qomhost.vhost_user.frontend import Channel, VhostDev
from qomhost.vhost_user.protocol import (
    BACKEND,
    FLAGS_REPLY,
    U64,
    BackendRequest,
    ProtocolFeature,
    Request,
    SlaveReqFd,
    VhostUserDecoder,
)

PROTOCOL = (1 << ProtocolFeature.SLAVE_REQ) | (1 << ProtocolFeature.REPLY_ACK)
HANDSHAKE_REPLIES = [
    U64(Request.GET_FEATURES, 1 << 30, FLAGS_REPLY),
    U64(Request.GET_PROTOCOL_FEATURES, PROTOCOL, FLAGS_REPLY),
    U64(Request.SET_SLAVE_REQ_FD, 0, FLAGS_REPLY),
    U64(Request.GET_FEATURES, 1 << 30, FLAGS_REPLY),
]


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.context = AioContext("frontend")
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(tmp / "be.sock"))
        listener.listen(1)
        self.chardev = ChardevSocket("chardev-socket")
        self.chardev.label = "c0"
        self.chardev.address = SocketAddress(path=str(tmp / "be.sock"))
        self.chardev.open()
        self.peer, _ = listener.accept()
        listener.close()
        self.peer.settimeout(TIMEOUT)
        self.peer.sendall(b"".join(m.encode() for m in HANDSHAKE_REPLIES))
        self.channel = Channel(self.chardev, self.context, reply_timeout=TIMEOUT)
        self.reports: list[str] = []
        self.dev = VhostDev(0, 1, backend_channel=self.channel.backend_channel)
        self.chardev.attach(self.context, self.channel)
        self.thread.start()
        while self.context.thread_id is None:
            pass
        self.channel.run(self.dev.init())
        self.slave = self._take_slave_end()
        self.slave.settimeout(TIMEOUT)
        (self.handler,) = self.channel.backend_channels
        self.handler.report = self.reports.append

    def _run(self) -> None:
        self.context.thread_id = threading.get_native_id()
        while not self.stop:
            self.context.run_once()

    def _take_slave_end(self) -> socket.socket:
        decoder = VhostUserDecoder(BACKEND)
        while True:
            data, fds, _flags, _addr = socket.recv_fds(self.peer, 4096, 8)
            assert data, "the frontend hung up"
            for msg in decoder.feed(data, fds):
                if isinstance(msg, SlaveReqFd):
                    return socket.socket(fileno=msg.fd)
                for fd in msg.fds:  # type: ignore[union-attr]
                    os.close(fd)

    def request(
        self, request: int, flags: int, payload: bytes = b"", fds: tuple[int, ...] = ()
    ) -> None:
        data = struct.pack("<III", request, flags, len(payload)) + payload
        if fds:
            socket.send_fds(self.slave, [data], list(fds))
        else:
            self.slave.sendall(data)

    def reply(self) -> tuple[int, int, int, int]:
        data = b""
        while len(data) < 20:
            more = self.slave.recv(20 - len(data))
            assert more, "the frontend closed the backend-request channel"
            data += more
        request, flags, size, value = struct.unpack("<IIIQ", data)
        return request, flags, size, value

    def close(self) -> None:
        self.slave.close()
        self.dev.close()
        self.context.submit(self.channel.close).result(TIMEOUT)
        self.context.submit(self.chardev.finalize).result(TIMEOUT)
        self.stop = True
        self.context.notify()
        self.thread.join(TIMEOUT)
        self.context.close()
        self.peer.close()


@pytest.fixture
def setup() -> Iterator[Setup]:
    before = own_fds()
    with short_tmpdir() as tmp:
        s = Setup(tmp)
        try:
            yield s
        finally:
            s.close()
    assert own_fds() == before, "descriptors leaked"


def test_requests_are_answered_and_refused(setup: Setup) -> None:
    # QEMU 7.2 answers NEED_REPLY with the request's flags as a reply's, u64 1: refused
    setup.request(BackendRequest.CONFIG_CHANGE_MSG, 0x9)
    assert setup.reply() == (BackendRequest.CONFIG_CHANGE_MSG, 0x5, 8, 1)
    iotlb_miss = struct.pack("<QQQBB6x", 0x1000, 0, 0, 1, 1)
    setup.request(BackendRequest.IOTLB_MSG, 0x9, iotlb_miss)
    assert setup.reply() == (BackendRequest.IOTLB_MSG, 0x5, 8, 1)
    # an unknown request, and requests without NEED_REPLY, get no answer
    setup.request(17, 0x1, b"\x00" * 8)
    setup.request(BackendRequest.CONFIG_CHANGE_MSG, 0x1)
    setup.request(BackendRequest.CONFIG_CHANGE_MSG, 0x9)
    assert setup.reply() == (BackendRequest.CONFIG_CHANGE_MSG, 0x5, 8, 1)
    # other flag bits are echoed as QEMU echoes them
    setup.request(42, 0xD)
    assert setup.reply() == (42, 0x5, 8, 1)
    assert setup.reports == [
        "No config_ops or vhost_dev_config_notifier",
        "vhost-user IOTLB message without an IOMMU: refused",
        "Received unexpected msg type: 17.",
        "No config_ops or vhost_dev_config_notifier",
        "No config_ops or vhost_dev_config_notifier",
        "Received unexpected msg type: 42.",
    ]
    assert setup.channel.connected


def test_a_host_notifier_fd_is_closed(setup: Setup) -> None:
    before = own_fds()
    notifier = os.eventfd(0)
    area = struct.pack("<QQQ", 0, 4096, 0)
    setup.request(BackendRequest.VRING_HOST_NOTIFIER_MSG, 0x9, area, (notifier,))
    os.close(notifier)
    assert setup.reply() == (BackendRequest.VRING_HOST_NOTIFIER_MSG, 0x5, 8, 1)
    assert own_fds() == before  # the frontend's copy went too
    assert setup.reports == []  # QEMU refuses it silently


def test_a_malformed_request_closes_only_that_channel(setup: Setup) -> None:
    setup.request(BackendRequest.CONFIG_CHANGE_MSG, 0x9, b"\x00" * 700)
    assert setup.slave.recv(100) == b""
    assert setup.reports == ["Failed to read msg header. Size 700 exceeds the maximum 632."]
    assert setup.channel.connected  # the main connection goes on
    setup.peer.sendall(U64(Request.GET_FEATURES, 1 << 30, FLAGS_REPLY).encode())

    def features() -> object:
        reply = yield from setup.dev._u64(Request.GET_FEATURES)
        return reply

    assert setup.channel.run(features()) == 1 << 30  # type: ignore[arg-type]
