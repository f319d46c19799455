"""Pieces of the ``cryptodev-vhost-user`` data path that need no backend.

The request header packed straight into guest memory must be the bytes
``DataRequest.encode`` gives; request buffers come in reusable size
classes; a :class:`Batch` hands back results in submission order, or the
first failure.
"""

from __future__ import annotations

import threading

import pytest

from qomhost.cryptodev.virtio_crypto import (
    DATA_REQUEST_SIZE,
    DataHeader,
    DataRequest,
    Opcode,
    SymCipherData,
    SymOp,
)
from qomhost.objects.cryptodev.base import CryptoDevError
from qomhost.objects.cryptodev.datapath import CIPHER_REQUEST, Batch, size_class


@pytest.mark.parametrize(
    ("opcode", "algo", "session", "iv_len", "length"),
    [
        (Opcode.CIPHER_ENCRYPT, 3, 0, 16, 16),
        (Opcode.CIPHER_DECRYPT, 3, (1 << 64) - 1, 0, 65536),
        (Opcode.CIPHER_ENCRYPT, 5, 7, 16, (1 << 32) - 1),
    ],
)
def test_header_is_data_request_encode(
    opcode: int, algo: int, session: int, iv_len: int, length: int
) -> None:
    buf = bytearray(b"\xaa" * DATA_REQUEST_SIZE)
    CIPHER_REQUEST.pack_into(buf, 0, opcode, algo, session, iv_len, length, length, SymOp.CIPHER)
    expected = DataRequest(
        DataHeader(opcode, algo, session), SymCipherData(iv_len, length, length)
    ).encode()
    assert CIPHER_REQUEST.size == DATA_REQUEST_SIZE
    assert bytes(buf) == expected


def test_size_classes() -> None:
    assert size_class(1) == 64
    assert size_class(64) == 64
    assert size_class(65) == 128
    assert size_class(217) == 256  # a 64-byte request
    assert size_class(4096) == 4096
    assert size_class(4097) == 8192
    assert size_class(8281) == 12288  # a 4 KiB request: whole pages from here
    assert size_class(131161) == 135168  # a 64 KiB request
    for size in range(1, 20000, 37):
        assert size_class(size) >= size


def test_batch_results_in_order() -> None:
    batch = Batch(3)
    assert not batch.done()
    batch._finish(2, b"c", None)
    batch._finish(0, b"a", None)
    with pytest.raises(TimeoutError):
        batch.wait(0.01)
    threading.Thread(target=batch._finish, args=(1, b"b", None)).start()
    assert batch.wait(10) == [b"a", b"b", b"c"]
    assert Batch(0).wait(0) == []


def test_batch_raises_the_first_failure() -> None:
    batch = Batch(3)
    batch._finish(0, None, CryptoDevError("first"))
    batch._finish(1, None, CryptoDevError("second"))
    batch._finish(2, b"x", None)
    with pytest.raises(CryptoDevError, match="first"):
        batch.wait(1)


def test_batch_finish_many() -> None:
    batch = Batch(4)
    batch._finish_many([(3, b"d", None), (1, b"b", None)])
    assert not batch.done()
    batch._finish_many([(0, b"a", None), (2, b"c", None)])
    assert batch.wait(0) == [b"a", b"b", b"c", b"d"]
    failing = Batch(3)
    failing._finish_many([(0, None, CryptoDevError("first")), (1, b"x", None)])
    failing._finish_many([(2, None, CryptoDevError("second"))])
    with pytest.raises(CryptoDevError, match="first"):
        failing.wait(0)


def test_builtin_encrypt_many_is_one_request_after_the_other() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from qomhost.host import Host

    host = Host()
    try:
        dev = host.add_object("cryptodev-backend-builtin", "cb0")
        key = bytes(range(32))
        items = [(bytes([i]) * 16, bytes([i]) * 32 * (i + 1)) for i in range(5)]
        with dev.create_session("aes-256-cbc", key=key) as session:  # type: ignore[attr-defined]
            out = dev.encrypt_many(session, items)  # type: ignore[attr-defined]
        for (iv, data), result in zip(items, out, strict=True):
            enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
            assert result == enc.update(data) + enc.finalize()
    finally:
        host.close()


def test_builtin_encrypt_many_into() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from qomhost.host import Host

    host = Host()
    try:
        dev = host.add_object("cryptodev-backend-builtin", "cb0")
        key = bytes(range(32))
        out = [bytearray(64) for _ in range(3)]
        items = [(bytes([i]) * 16, bytes([i]) * 32) for i in range(3)]
        with dev.create_session("aes-256-cbc", key=key) as session:  # type: ignore[attr-defined]
            dev.encrypt_many_into(session, items, out)  # type: ignore[attr-defined]
        for (iv, data), target in zip(items, out, strict=True):
            enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
            assert bytes(target[:32]) == enc.update(data) + enc.finalize()
            assert bytes(target[32:]) == bytes(32)
    finally:
        host.close()


def test_builtin_submit_many_into_is_done_at_once() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from qomhost.host import Host

    host = Host()
    try:
        dev = host.add_object("cryptodev-backend-builtin", "cb0")
        key = bytes(range(32))
        out = [bytearray(32) for _ in range(3)]
        items = [(bytes([i]) * 16, bytes([i]) * 32) for i in range(3)]
        with dev.create_session("aes-256-cbc", key=key) as session:  # type: ignore[attr-defined]
            pending = dev.submit_many_into(session, items, out)  # type: ignore[attr-defined]
            for (iv, data), target in zip(items, out, strict=True):
                enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
                assert bytes(target) == enc.update(data) + enc.finalize()
            pending.wait()
    finally:
        host.close()
