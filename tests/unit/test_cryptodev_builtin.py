"""``cryptodev-backend-builtin`` and the Python API every crypto backend shares."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from qomhost.cryptodev.virtio_crypto import CipherAlgo, CryptoConfig, MacAlgo, Op
from qomhost.errors import QemuError
from qomhost.host import Host
from qomhost.objects.cryptodev.base import CryptoDevBackend, CryptoDevError
from qomhost.objects.cryptodev.builtin import CryptoDevBackendBuiltin

IV = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
PT = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)
# NIST SP 800-38A F.2.1, F.2.3, F.2.5 (CBC) and F.5.5 (CTR-AES256)
VECTORS = [
    (
        "aes-128-cbc",
        "2b7e151628aed2a6abf7158809cf4f3c",
        IV,
        "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2"
        "73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7",
    ),
    (
        "aes-192-cbc",
        "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b",
        IV,
        "4f021db243bc633d7178183a9fa071e8b4d9ada9ad7dedf4e5e738763f69145a"
        "571b242012fb7ae07fa9baac3df102e008b0e27988598881d920a9e64f5615cd",
    ),
    (
        "aes-256-cbc",
        "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
        IV,
        "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d"
        "39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b",
    ),
    (
        "aes-256-ctr",
        "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"),
        "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
        "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6",
    ),
]


@pytest.fixture
def host() -> Host:
    h = Host()
    yield h
    h.close()


def builtin(host: Host) -> CryptoDevBackendBuiltin:
    dev = host.add_object("cryptodev-backend-builtin", "cb0")
    assert isinstance(dev, CryptoDevBackendBuiltin)
    return dev


@pytest.mark.parametrize(("cipher", "key", "iv", "ct"), VECTORS, ids=[v[0] for v in VECTORS])
def test_nist_vectors(host: Host, cipher: str, key: str, iv: bytes, ct: str) -> None:
    dev = builtin(host)
    with dev.create_session(cipher, bytes.fromhex(key), "encrypt") as enc:
        assert dev.encrypt(enc, iv, PT).hex() == ct
    with dev.create_session(cipher, bytes.fromhex(key), "decrypt") as dec:
        assert dev.decrypt(dec, iv, bytes.fromhex(ct)) == PT


@pytest.mark.parametrize("cipher", ["aes-128-ecb", "aes-256-xts", "aes-128-xts"])
def test_other_modes_against_cryptography(host: Host, cipher: str) -> None:
    dev = builtin(host)
    key_len = {"aes-128-ecb": 16, "aes-256-xts": 64, "aes-128-xts": 32}[cipher]
    key, iv, data = os.urandom(key_len), os.urandom(16), os.urandom(4096)
    mode = modes.ECB() if cipher.endswith("ecb") else modes.XTS(iv)
    ctx = Cipher(algorithms.AES(key), mode).encryptor()
    with dev.create_session(cipher, key) as session:
        assert dev.encrypt(session, iv, data) == ctx.update(data) + ctx.finalize()


def test_capabilities_as_qemu_advertises(host: Host) -> None:
    dev = builtin(host)
    assert dev.ready
    assert dev.capabilities == CryptoConfig(
        status=1,
        max_dataqueues=1,
        crypto_services=0x17,
        cipher_algo_l=1 << 3,
        hash_algo=1 << 2,
        akcipher_algo=1 << 1,
        max_cipher_key_len=64,
        max_auth_key_len=512,
        max_size=(1 << 63) - 1 - 80,
    )


def test_qemu_errors(host: Host) -> None:
    dev = builtin(host)
    with pytest.raises(CryptoDevError, match=r"^Unsupported key length :20$"):
        dev.create_session(CipherAlgo.AES_CBC, bytes(20))
    with pytest.raises(CryptoDevError, match=r"^Unsupported cipher alg :8$"):
        dev.create_session(CipherAlgo.THREE_DES_CBC, bytes(24))
    with pytest.raises(
        CryptoDevError, match=r"^virtio-crypto length of cipher key is too big: 65$"
    ):
        dev.create_session(CipherAlgo.AES_CBC, bytes(65))
    with pytest.raises(CryptoDevError, match=r"^Unsupported optype :2$"):
        dev.create_session("aes-128-cbc", bytes(16), mac=MacAlgo.HMAC_SHA1, auth_key=b"k")
    with dev.create_session("aes-128-cbc", bytes(16)) as s:
        with pytest.raises(CryptoDevError, match=r"^Expected IV size 16 not 8$"):
            dev.encrypt(s, bytes(8), bytes(16))
        with pytest.raises(
            CryptoDevError, match=r"^Length 17 must be a multiple of block size 16$"
        ):
            dev.encrypt(s, IV, bytes(17))
        with pytest.raises(CryptoDevError, match="is for encryption"):
            dev.decrypt(s, IV, bytes(16))


def test_argument_errors(host: Host) -> None:
    dev = builtin(host)
    with pytest.raises(CryptoDevError, match="unknown cipher 'aes-cbc'"):
        dev.create_session("aes-cbc", bytes(16))
    with pytest.raises(CryptoDevError, match="aes-256-cbc needs a 32-byte key, not 16 bytes"):
        dev.create_session("aes-256-cbc", bytes(16))
    with pytest.raises(CryptoDevError, match="op must be"):
        dev.create_session("aes-128-cbc", bytes(16), "sideways")


def test_256_sessions(host: Host) -> None:
    dev = builtin(host)
    sessions = [dev.create_session("aes-128-cbc", bytes(16)) for _ in range(256)]
    assert [s.id for s in sessions] == list(range(256))
    with pytest.raises(CryptoDevError, match=r"^Total number of sessions created exceeds 256$"):
        dev.create_session("aes-128-cbc", bytes(16))
    sessions[5].close()
    assert dev.create_session("aes-128-cbc", bytes(16)).id == 5


def test_in_use_while_sessions_are_open(host: Host) -> None:
    dev = builtin(host)
    session = dev.create_session("aes-128-cbc", bytes(16), op=Op.DECRYPT)
    with pytest.raises(QemuError, match=r"^object 'cb0' is in use, can not be deleted$"):
        host.del_object("cb0")
    session.close()
    session.close()
    with pytest.raises(CryptoDevError, match="is closed"):
        dev.decrypt(session, IV, bytes(16))
    host.del_object("cb0")


def test_one_queue_only(host: Host) -> None:
    with pytest.raises(QemuError, match=r"^Only support one queue in cryptdov-builtin backend$"):
        host.add_object("cryptodev-backend-builtin", "cb0", queues=65)
    assert host.lookup_object("cb0") is None


def test_base_type_serves_nothing(host: Host) -> None:
    dev = host.add_object("cryptodev-backend", "b0")
    assert isinstance(dev, CryptoDevBackend) and not dev.ready
    with pytest.raises(CryptoDevError, match="is not ready"):
        dev.create_session("aes-128-cbc", bytes(16))


def test_key_never_in_repr(host: Host) -> None:
    dev = builtin(host)
    key = b"K" * 32
    session = dev.create_session("aes-256-cbc", key)
    assert "KKKK" not in repr(session) and "<32 bytes>" in repr(session)


def test_async_and_threads(host: Host) -> None:
    dev = builtin(host)
    key = os.urandom(32)
    session = dev.create_session("aes-256-cbc", key)
    stop = threading.Event()

    def loop() -> None:
        assert host.context is not None
        while not stop.is_set():
            host.context.run_once(blocking=False)

    async def main() -> list[bytes]:
        return await asyncio.gather(*(dev.encrypt_async(session, IV, PT) for _ in range(16)))

    runner = threading.Thread(target=loop)
    runner.start()
    try:
        results = asyncio.run(main())
    finally:
        stop.set()
        runner.join()
    assert set(results) == {dev.encrypt(session, IV, PT)}
