"""``cryptodev-vhost-user`` on an iothread, against ``qomhost-vhost-user-crypto``.

Real iothreads (``host.add_object("iothread", ...)``, OS threads running
their own loops) and the real backend program: completions run on the
iothread, its busy-polling reads the used rings with the backend's calls
turned off, batches of requests come back right, the iothread is in use
while the device is on it, and the device can move between loops with
requests flowing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from peers import crypto_backend
from qomhost.chardev.socket import ChardevSocket, SocketAddress
from qomhost.cryptodev.virtio_crypto import Opcode
from qomhost.errors import QemuError
from qomhost.host import Host
from qomhost.objects.cryptodev.vhost_user import CryptoDevBackendVhostUser
from qomhost.objects.iothread import IOThread

BACKEND = str(Path(sys.executable).parent / "qomhost-vhost-user-crypto")
QUEUES = 2


def cbc(key: bytes, iv: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[str]:
    """The backend program listening on a socket of its own."""
    path = str(tmp_path / "crypto.sock")
    with crypto_backend(path, QUEUES):
        yield path


@pytest.fixture
def host() -> Iterator[Host]:
    # The main loop does not run: the handshake and the sessions are read
    # by the calling thread, as when no loop runs yet.
    h = Host()
    yield h
    h.close()


def device(host: Host, path: str) -> CryptoDevBackendVhostUser:
    sock = ChardevSocket("chardev-socket")
    sock.address = SocketAddress(path=path)
    sock.label = "c0"
    sock.open()
    host.add_chardev(sock, "c0")
    dev = host.add_object("cryptodev-vhost-user", "cv0", chardev="c0", queues=QUEUES)
    assert isinstance(dev, CryptoDevBackendVhostUser)
    return dev


def iothread(host: Host, name: str = "io1", **props: object) -> IOThread:
    io = host.add_object("iothread", name, **props)
    assert isinstance(io, IOThread)
    return io


def test_completions_run_on_the_iothread(socket_path: str, host: Host) -> None:
    io = iothread(host, poll_max_ns=0)
    dev = device(host, socket_path)
    dev.set_iothread(io)
    assert dev.data_context is io.context
    key = os.urandom(32)
    with dev.create_session("aes-256-cbc", key=key) as session:
        for queue in range(QUEUES):
            for size in (16, 4096, 65536):
                iv, data = os.urandom(16), os.urandom(size)
                assert dev.encrypt(session, iv, data, queue=queue) == cbc(key, iv, data)
        assert dev.datapath is not None
        threads: list[int] = []
        future = dev.datapath.submit(
            Opcode.CIPHER_ENCRYPT, session.info.cipher_alg, session.id, bytes(16), bytes(32), 0
        )
        future.add_done_callback(lambda _f: threads.append(threading.get_native_id()))
        assert future.result(10) == cbc(key, bytes(16), bytes(32))
        assert threads == [io.thread_id]
        # without polling, every completion came with a call
        assert dev.datapath.polled == 0
        assert dev.datapath.notified == 3 * QUEUES + 1


def test_iothread_in_use_while_the_device_is_on_it(socket_path: str, host: Host) -> None:
    io = iothread(host)
    dev = device(host, socket_path)
    dev.set_iothread(io)
    session = dev.create_session("aes-128-cbc", key=bytes(16))
    assert dev.encrypt(session, bytes(16), bytes(16)) == cbc(bytes(16), bytes(16), bytes(16))
    with pytest.raises(QemuError, match="io1"):
        host.del_object("io1")
    session.close()
    host.del_object("cv0")
    # the device's call eventfds are gone from the iothread's loop
    assert io.context is not None
    assert io.context.submit(lambda: len(io.context._handlers)).result(10) == 0  # type: ignore[union-attr]
    host.del_object("io1")


def test_batches_with_polling(socket_path: str, host: Host) -> None:
    """A polling iothread finds completions in the used ring, with calls off."""
    io = iothread(host, poll_max_ns=2_000_000, aio_max_batch=8)
    dev = device(host, socket_path)
    dev.set_iothread(io)
    key = os.urandom(32)
    with dev.create_session("aes-256-cbc", key=key) as session:
        items = [(os.urandom(16), os.urandom(16 * (1 + i % 64))) for i in range(200)]
        for _ in range(10):
            assert dev.encrypt_many(session, items) == [cbc(key, iv, d) for iv, d in items]
        assert dev.encrypt_many(session, []) == []
        with_empty = [(bytes(16), b""), *items[:3]]
        assert dev.encrypt_many(session, with_empty) == [b""] + [
            cbc(key, iv, d) for iv, d in items[:3]
        ]
        datapath = dev.datapath
        assert datapath is not None
        assert datapath.polled + datapath.notified == 2003
        assert datapath.polled > 0


def test_batches_larger_than_the_rings(socket_path: str, host: Host) -> None:
    io = iothread(host, aio_max_batch=64)
    dev = device(host, socket_path)
    dev.set_iothread(io)
    key = os.urandom(32)
    with (
        dev.create_session("aes-256-cbc", key=key) as enc,
        dev.create_session("aes-256-cbc", key=key, op="decrypt") as dec,
    ):
        # 700 requests of 64 KiB: more than two rings hold, and more than
        # guest memory holds at once
        items = [(os.urandom(16), os.urandom(65536)) for _ in range(700)]
        out = dev.encrypt_many(enc, items)
        assert out == [cbc(key, iv, d) for iv, d in items]
        assert dev.decrypt_many(dec, [(iv, c) for (iv, _d), c in zip(items, out, strict=True)]) == [
            d for _iv, d in items
        ]


def test_moving_between_loops(socket_path: str, host: Host) -> None:
    io1 = iothread(host, "io1")
    io2 = iothread(host, "io2", poll_max_ns=0)
    dev = device(host, socket_path)
    key = os.urandom(32)
    session = dev.create_session("aes-256-cbc", key=key)
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while not stop.is_set():
                items = [(os.urandom(16), os.urandom(1024)) for _ in range(16)]
                assert dev.encrypt_many(session, items) == [cbc(key, iv, d) for iv, d in items]
        except BaseException as exc:
            errors.append(exc)

    dev.set_iothread(io1)
    # The first request starts the rings over the vhost-user socket, which
    # only this thread reads (the main loop does not run).
    assert dev.encrypt(session, bytes(16), bytes(16)) == cbc(key, bytes(16), bytes(16))
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for target in (io2, io1, io2):
        time.sleep(0.2)
        dev.set_iothread(target)
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[0]
    assert dev.iothread is io2
    host.del_object("io1")
    with pytest.raises(QemuError, match="io2"):
        host.del_object("io2")
    # back to the main loop (which does not run: the caller reads completions)
    dev.set_iothread(None)
    assert dev.encrypt(session, bytes(16), bytes(16)) == cbc(key, bytes(16), bytes(16))
    host.del_object("io2")
    session.close()


def test_host_close_with_the_device_on_an_iothread(socket_path: str) -> None:
    """Host.close finalises the iothread (created first) before the device."""
    host = Host()
    io = iothread(host)
    dev = device(host, socket_path)
    dev.set_iothread(io)
    session = dev.create_session("aes-256-cbc", key=bytes(32))
    assert dev.encrypt(session, bytes(16), bytes(16)) == cbc(bytes(32), bytes(16), bytes(16))
    started = time.monotonic()
    host.close()
    assert time.monotonic() - started < 2


def test_batches_into_caller_buffers(socket_path: str, host: Host) -> None:
    io = iothread(host)
    dev = device(host, socket_path)
    dev.set_iothread(io)
    key = os.urandom(32)
    with dev.create_session("aes-256-cbc", key=key) as session:
        out = [bytearray(65536) for _ in range(40)]
        for size in (16, 4096, 65536):
            items = [(os.urandom(16), os.urandom(size)) for _ in range(40)]
            dev.encrypt_many_into(session, items, out)
            for (iv, data), target in zip(items, out, strict=True):
                assert bytes(target[:size]) == cbc(key, iv, data)
        with pytest.raises(QemuError, match="output buffer 1 is smaller"):
            dev.encrypt_many_into(
                session, [(bytes(16), bytes(32))] * 2, [bytearray(32), bytearray(16)]
            )
        with pytest.raises(QemuError, match="2 requests but 1 output buffers"):
            dev.encrypt_many_into(session, [(bytes(16), bytes(32))] * 2, [bytearray(32)])


def test_pipelined_groups(socket_path: str, host: Host) -> None:
    """submit_many_into keeps several groups in flight; each waited for in turn."""
    io = iothread(host, aio_max_batch=8)
    dev = device(host, socket_path)
    dev.set_iothread(io)
    key = os.urandom(32)
    depth, group = 4, 24
    with (
        dev.create_session("aes-256-cbc", key=key) as enc_session,
        dev.create_session("aes-256-cbc", key=key, op="decrypt") as dec_session,
    ):
        outs = [[bytearray(4096) for _ in range(group)] for _ in range(depth)]
        sent: list[tuple[list[tuple[bytes, bytes]], list[bytearray], object]] = []
        for round_ in range(3 * depth):
            if len(sent) == depth:
                items, out, pending = sent.pop(0)
                pending.wait()  # type: ignore[attr-defined]
                for (iv, data), target in zip(items, out, strict=True):
                    assert bytes(target[: len(data)]) == cbc(key, iv, data)
            out = outs[round_ % depth]
            items = [(os.urandom(16), os.urandom(16 * (1 + i % 256))) for i in range(group)]
            sent.append((items, out, dev.submit_many_into(enc_session, items, out)))
        for items, out, pending in sent:
            pending.wait()  # type: ignore[attr-defined]
            pending.wait()  # type: ignore[attr-defined]  # a second wait returns at once
            for (iv, data), target in zip(items, out, strict=True):
                assert bytes(target[: len(data)]) == cbc(key, iv, data)
        # the session's direction decides
        iv, data = os.urandom(16), os.urandom(64)
        back = [bytearray(64)]
        dev.submit_many_into(dec_session, [(iv, cbc(key, iv, data))], back).wait()
        assert bytes(back[0]) == data
