"""``cryptodev-vhost-user`` as a library object, over real sockets.

Against a :class:`~qomhost.testing.vhost_user.RecordingBackend`: what the
session messages look like, and how the device behaves when the backend
goes away and comes back. Against ``qomhost-vhost-user-crypto`` (a real
backend process): NIST SP 800-38A vectors and random data on every queue,
checked against ``cryptography``; requests from many threads at once;
asyncio; a backend killed mid-run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from peers import crypto_backend
from qomhost.chardev.socket import ChardevSocket, SocketAddress
from qomhost.cryptodev.virtio_crypto import CipherAlgo, Op, decode_session
from qomhost.errors import QemuError
from qomhost.host import Host
from qomhost.objects.cryptodev.base import CryptoDevError
from qomhost.objects.cryptodev.vhost_user import CryptoDevBackendVhostUser
from qomhost.testing.vhost_user import RecordingBackend
from qomhost.vhost_user.protocol import ProtocolFeature as PF
from qomhost.vhost_user.protocol import Request

BACKEND = str(Path(sys.executable).parent / "qomhost-vhost-user-crypto")
#: data queues the backend offers and the device uses
QUEUES = 3

# NIST SP 800-38A, F.2.1 (CBC-AES128) and F.2.5 (CBC-AES256)
NIST_IV = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
NIST_PT = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172a"
    "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef"
    "f69f2445df4f9b17ad2b417be66c3710"
)
NIST = {
    "aes-128-cbc": (
        bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"),
        bytes.fromhex(
            "7649abac8119b246cee98e9b12e9197d"
            "5086cb9b507219ee95db113a917678b2"
            "73bed6b8e3c1743b7116e69e22229516"
            "3ff1caa1681fac09120eca307586e1a7"
        ),
    ),
    "aes-256-cbc": (
        bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"),
        bytes.fromhex(
            "f58c4c04d6e5f1ba779eabfb5f7bfbd6"
            "9cfc4e967edb808d679f777bc6702c7d"
            "39f23369a9d9bacfa530e26304231461"
            "b2eb05e2c39be9fcda6c19078c6a9d1b"
        ),
    ),
}


def cbc(key: bytes, iv: bytes, data: bytes, encrypt: bool = True) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(data) + ctx.finalize()


class LoopHost:
    """A library Host whose main loop runs in a thread of its own."""

    def __init__(self) -> None:
        self.host = Host()
        self.thread: threading.Thread | None = None

    def chardev(self, path: str, reconnect: int = 0) -> ChardevSocket:
        sock = ChardevSocket("chardev-socket")
        sock.address = SocketAddress(path=path)
        sock.reconnect = reconnect
        sock.label = "c0"
        sock.open()
        self.host.add_chardev(sock, "c0")
        return sock

    def device(self, queues: int = 1) -> CryptoDevBackendVhostUser:
        dev = self.host.add_object("cryptodev-vhost-user", "cv0", chardev="c0", queues=queues)
        assert isinstance(dev, CryptoDevBackendVhostUser)
        return dev

    def start(self) -> None:
        """Run the loop in a thread (from now on, it owns the chardev)."""
        context = self.host.context

        def run() -> None:
            context.thread_id = threading.get_native_id()
            while self.host.shutdown_reason is None:
                context.run_once()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        while context.thread_id == threading.get_native_id():
            time.sleep(0.001)

    def call(self, fn: object) -> object:
        """Run ``fn`` on the loop and wait (loop-owned state, such as object-del)."""
        assert callable(fn)
        return self.host.context.submit(fn).result(10)

    def close(self) -> None:
        if self.thread is not None:
            self.host.context.schedule(lambda: self.host.request_shutdown("host-qmp-quit"))
            self.thread.join(10)
        else:
            self.host.close()


@pytest.fixture
def loophost() -> Iterator[LoopHost]:
    lh = LoopHost()
    yield lh
    lh.close()


# --- against the recording backend ------------------------------------------------------


def test_session_messages(tmp_path: Path, loophost: LoopHost) -> None:
    path = str(tmp_path / "vu.sock")
    with RecordingBackend(path, protocol_features=1 << PF.CRYPTO_SESSION, session_ids=[7]) as be:
        loophost.chardev(path)
        dev = loophost.device()
        assert dev.ready
        key = bytes(range(32))
        session = dev.create_session("aes-256-cbc", key=key, op="decrypt")
        assert session.id == 7 and session.op == Op.DECRYPT
        assert not dev.can_be_deleted()
        session.close()
        assert dev.can_be_deleted()
        be.wait_for(lambda got: got[-1].request == Request.CLOSE_CRYPTO_SESSION)
        create, close = be.received[-2:]
        assert create.summary() == (Request.CREATE_CRYPTO_SESSION, 0x1, 632, 0)
        request = decode_session(create.payload)
        assert request.info.cipher_alg == CipherAlgo.AES_CBC
        assert request.info.key == key and request.info.direction == Op.DECRYPT
        assert close.summary() == (Request.CLOSE_CRYPTO_SESSION, 0x1, 8, 0)
        assert close.u64 == 7
        assert "key" not in repr(session) or "<32 bytes>" in repr(session)


def test_bad_session_id(tmp_path: Path, loophost: LoopHost) -> None:
    path = str(tmp_path / "vu.sock")
    with RecordingBackend(path, protocol_features=1 << PF.CRYPTO_SESSION, session_ids=[-3]):
        loophost.chardev(path)
        dev = loophost.device()
        with pytest.raises(CryptoDevError, match=r"^Bad session id: -3$"):
            dev.create_session("aes-128-cbc", key=bytes(16))
        assert dev.sessions() == []


def test_no_crypto_session_feature(tmp_path: Path, loophost: LoopHost) -> None:
    path = str(tmp_path / "vu.sock")
    with RecordingBackend(path, protocol_features=0):
        loophost.chardev(path)
        dev = loophost.device()
        with pytest.raises(CryptoDevError, match="vhost-user trying to send unhandled ioctl"):
            dev.create_session("aes-128-cbc", key=bytes(16))


def test_handshake_failure_in_library(tmp_path: Path, loophost: LoopHost) -> None:
    """No fatal hook: complete() raises, nothing is left behind."""
    path = str(tmp_path / "vu.sock")
    with RecordingBackend(path, reply_flags=0x4):
        loophost.chardev(path)
        with pytest.raises(QemuError, match="failed to init vhost_crypto for queue 0"):
            loophost.device()
        assert loophost.host.lookup_object("cv0") is None


def test_disconnect_and_reconnect(tmp_path: Path, loophost: LoopHost) -> None:
    path = str(tmp_path / "vu.sock")
    features = (1 << PF.CRYPTO_SESSION) | (1 << PF.MQ)
    with RecordingBackend(path, protocol_features=features, queue_num=2) as be:
        loophost.chardev(path, reconnect=1)
        dev = loophost.device(queues=2)
        session = dev.create_session("aes-128-cbc", key=bytes(16))
        loophost.start()
        be.hang_up()
        deadline = time.monotonic() + 1
        while dev.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not dev.ready
        with pytest.raises(CryptoDevError, match="is gone: the backend of 'cv0' was restarted"):
            dev.encrypt(session, bytes(16), bytes(16))
        assert be.wait_for(lambda _got: dev.ready, timeout=5)
        # The whole handshake ran again, for both queues.
        again = [m.name for m in be.received if m.connection == 1]
        assert again.count("SET_OWNER") == 1 and again.count("SET_VRING_CALL") == 2
        fresh = dev.create_session("aes-128-cbc", key=bytes(16))
        assert fresh.id == 1
        session.close()  # harmless
        fresh.close()


# --- against qomhost-vhost-user-crypto ---------------------------------------------------


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    path = str(tmp_path / "crypto.sock")
    with crypto_backend(path, QUEUES) as proc:
        yield path, proc


def test_nist_and_random_on_every_queue(backend: tuple[str, object], loophost: LoopHost) -> None:
    path, _proc = backend
    loophost.chardev(path)
    dev = loophost.device(queues=QUEUES)
    loophost.start()
    for name, (key, expected) in NIST.items():
        with (
            dev.create_session(name, key=key, op="encrypt") as enc,
            dev.create_session(name, key=key, op="decrypt") as dec,
        ):
            for queue in range(QUEUES):
                assert dev.encrypt(enc, NIST_IV, NIST_PT, queue=queue) == expected
                assert dev.decrypt(dec, NIST_IV, expected, queue=queue) == NIST_PT
    key = os.urandom(32)
    with dev.create_session("aes-256-cbc", key=key) as enc:
        for queue in range(QUEUES):
            for size in (16, 4096, 65536):
                iv, data = os.urandom(16), os.urandom(size)
                assert dev.encrypt(enc, iv, data, queue=queue) == cbc(key, iv, data)


def test_on_the_loop_thread(backend: tuple[str, object], loophost: LoopHost) -> None:
    """No loop running: the caller's thread reads the completions itself."""
    path, _proc = backend
    loophost.chardev(path)
    dev = loophost.device()
    key, expected = NIST["aes-256-cbc"]
    with dev.create_session("aes-256-cbc", key=key) as session:
        assert dev.encrypt(session, NIST_IV, NIST_PT) == expected


def test_many_threads(backend: tuple[str, object], loophost: LoopHost) -> None:
    path, _proc = backend
    loophost.chardev(path)
    dev = loophost.device(queues=QUEUES)
    loophost.start()
    key = os.urandom(32)
    session = dev.create_session("aes-256-cbc", key=key)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for i in range(50):
                iv, data = os.urandom(16), os.urandom(16 * (1 + (seed * 7 + i) % 300))
                assert dev.encrypt(session, iv, data) == cbc(key, iv, data)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
    session.close()


def test_asyncio(backend: tuple[str, object], loophost: LoopHost) -> None:
    path, _proc = backend
    loophost.chardev(path)
    dev = loophost.device(queues=2)
    loophost.start()
    key = os.urandom(16)

    async def main() -> None:
        enc = dev.create_session("aes-128-cbc", key=key)
        items = [(os.urandom(16), os.urandom(1024)) for _ in range(64)]
        results = await asyncio.gather(*(dev.encrypt_async(enc, iv, d) for iv, d in items))
        assert results == [cbc(key, iv, d) for iv, d in items]
        enc.close()

    asyncio.run(main())


def test_backend_killed_mid_run(
    backend: tuple[str, subprocess.Popen[bytes]], loophost: LoopHost
) -> None:
    path, proc = backend
    loophost.chardev(path)
    dev = loophost.device(queues=2)
    loophost.start()
    session = dev.create_session("aes-256-cbc", key=os.urandom(32))
    failures: list[float] = []
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                dev.encrypt(session, os.urandom(16), os.urandom(65536))
            except CryptoDevError:
                failures.append(time.monotonic())
                return

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    killed = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    for t in threads:
        t.join(5)
    stop.set()
    assert len(failures) == 4
    assert max(failures) - killed < 1.0
    assert not dev.ready
    with pytest.raises(CryptoDevError, match=r"is not ready|is gone"):
        dev.encrypt(session, bytes(16), bytes(16))


def test_object_del_stops_the_rings_first(tmp_path: Path, loophost: LoopHost) -> None:
    """object-del of a device whose rings run stops them as QEMU's vhost_dev_stop
    does (SET_VRING_ENABLE 0, GET_VRING_BASE) before their memory goes away."""
    path = str(tmp_path / "crypto.sock")
    log_path = tmp_path / "backend.log"
    with open(log_path, "wb") as log_file, crypto_backend(path, 2, "-v", stderr=log_file) as proc:
        loophost.chardev(path)
        dev = loophost.device(queues=2)
        loophost.start()
        key, expected = NIST["aes-256-cbc"]
        with dev.create_session("aes-256-cbc", key=key) as session:
            for queue in (0, 1):
                assert dev.encrypt(session, NIST_IV, NIST_PT, queue=queue) == expected
        loophost.call(lambda: loophost.host.del_object("cv0"))
        deadline = time.monotonic() + 10
        while "frontend disconnected" not in (text := log_path.read_text()):
            assert time.monotonic() < deadline, text
            time.sleep(0.02)
        requests = [line.split(": <- ", 1)[1] for line in text.splitlines() if ": <- " in line]
        for index in (0, 1):
            # per ring, as vhost_dev_stop: disabled, then its base asked for
            stop = [r for r in requests if f"index={index} num=0" in r][-2:]
            assert [r.split(" ")[0] for r in stop] == ["SET_VRING_ENABLE", "GET_VRING_BASE"], text
        assert requests.index("CLOSE_CRYPTO_SESSION (27) value=0x0") < len(requests) - 4
        assert proc.poll() is None, "the backend must keep serving"
