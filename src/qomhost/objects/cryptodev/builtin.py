"""``cryptodev-backend-builtin``: the crypto work done in process.

QEMU's builtin backend runs the ciphers itself (with its own crypto
library); qomhost's uses OpenSSL through ``cryptography``. It has exactly
one queue (``Only support one queue in cryptdov-builtin backend``, QEMU's
typo kept), at most 256 sessions, and QEMU's session checks: AES in ECB,
CBC, CTR and XTS mode with 16-, 24- or 32-byte keys (XTS: 32 or 64), plain
cipher sessions only. It advertises what QEMU advertises (AES-CBC, SHA1,
RSA; services cipher, hash, MAC, akcipher), although, like QEMU's, its
sessions take the other AES modes too.

Library use (the API is :mod:`qomhost.objects.cryptodev.base`'s)::

    dev = host.add_object("cryptodev-backend-builtin", "cb0")
    with dev.create_session("aes-256-cbc", key=key) as session:
        dev.encrypt(session, iv, data)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qomhost.cryptodev.virtio_crypto import (
    AkcipherAlgo,
    CipherAlgo,
    CryptoConfig,
    HashAlgo,
    Service,
    Status,
    SymOp,
    SymSessionInfo,
)
from qomhost.errors import ObjectError
from qomhost.objects.cryptodev.base import CryptoDevBackend, CryptoDevError, Session

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    _Mode = (
        modes.ModeWithInitializationVector | modes.ModeWithNonce | modes.ModeWithTweak | modes.ECB
    )

__all__ = ["CryptoDevBackendBuiltin"]

#: QEMU's builtin session table size
MAX_NUM_SESSIONS = 256
MAX_CIPHER_KEY_LEN = 64
MAX_AUTH_KEY_LEN = 512
#: LONG_MAX less the size of QEMU's per-request bookkeeping struct (80 bytes
#: on x86_64), as the builtin backend advertises it
MAX_SIZE = (1 << 63) - 1 - 80
AES_BLOCK = 16

_AES_KEY_LENS = (16, 24, 32)
_MODES = {CipherAlgo.AES_ECB, CipherAlgo.AES_CBC, CipherAlgo.AES_CTR, CipherAlgo.AES_XTS}


class _BuiltinSession:
    """What the builtin backend keeps per session: the algorithm and the key."""

    __slots__ = ("algo", "key")

    def __init__(self, algo: int, key: bytes) -> None:
        self.algo = algo
        self.key = key

    def cipher(self, iv: bytes) -> Cipher[_Mode]:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        mode: _Mode
        if self.algo == CipherAlgo.AES_ECB:
            mode = modes.ECB()
        elif self.algo == CipherAlgo.AES_CBC:
            mode = modes.CBC(iv)
        elif self.algo == CipherAlgo.AES_CTR:
            mode = modes.CTR(iv)
        else:
            mode = modes.XTS(iv)
        return Cipher(algorithms.AES(self.key), mode)


class CryptoDevBackendBuiltin(CryptoDevBackend):
    """``cryptodev-backend-builtin``: AES sessions run with ``cryptography``."""

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self._table: list[_BuiltinSession | None] = [None] * MAX_NUM_SESSIONS
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    def complete(self) -> None:
        if self.queues != 1:
            raise ObjectError("Only support one queue in cryptdov-builtin backend")
        self.capabilities = CryptoConfig(
            status=Status.S_HW_READY,
            max_dataqueues=self.queues,
            crypto_services=(1 << Service.CIPHER)
            | (1 << Service.HASH)
            | (1 << Service.MAC)
            | (1 << Service.AKCIPHER),
            cipher_algo_l=1 << CipherAlgo.AES_CBC,
            hash_algo=1 << HashAlgo.SHA1,
            akcipher_algo=1 << AkcipherAlgo.RSA,
            max_cipher_key_len=MAX_CIPHER_KEY_LEN,
            max_auth_key_len=MAX_AUTH_KEY_LEN,
            max_size=MAX_SIZE,
        )
        self._ready = True

    def finalize(self) -> None:
        self._ready = False
        self._table = [None] * MAX_NUM_SESSIONS

    # --- sessions -------------------------------------------------------------------
    def _create_session(self, info: SymSessionInfo) -> int:
        if info.op_type != SymOp.CIPHER:
            raise CryptoDevError(f"Unsupported optype :{info.op_type}")
        with self._lock:
            index = next((i for i, s in enumerate(self._table) if s is None), None)
            if index is None:
                raise CryptoDevError(f"Total number of sessions created exceeds {MAX_NUM_SESSIONS}")
            if info.cipher_alg not in _MODES:
                raise CryptoDevError(f"Unsupported cipher alg :{info.cipher_alg}")
            key_len = len(info.key)
            if info.cipher_alg == CipherAlgo.AES_XTS:
                valid = key_len in (32, 64)
            else:
                valid = key_len in _AES_KEY_LENS
            if not valid:
                raise CryptoDevError(f"Unsupported key length :{key_len}")
            self._table[index] = _BuiltinSession(info.cipher_alg, info.key)
        return index

    def _close_session(self, session_id: int) -> None:
        with self._lock:
            self._table[session_id] = None

    # --- requests -------------------------------------------------------------------
    def _cipher(self, session: Session, iv: bytes, data: bytes, queue: int | None) -> bytes:
        if queue not in (None, 0):
            raise CryptoDevError(f"queue {queue} does not exist (the builtin backend has 1)")
        entry = self._table[session.id]
        if entry is None:
            raise CryptoDevError(f"session {session.id} is closed")
        if entry.algo != CipherAlgo.AES_ECB and len(iv) != AES_BLOCK:
            raise CryptoDevError(f"Expected IV size {AES_BLOCK} not {len(iv)}")
        if entry.algo in (CipherAlgo.AES_ECB, CipherAlgo.AES_CBC) and len(data) % AES_BLOCK:
            raise CryptoDevError(f"Length {len(data)} must be a multiple of block size {AES_BLOCK}")
        context = entry.cipher(iv)
        worker = context.encryptor() if session.op == 1 else context.decryptor()
        try:
            return worker.update(data) + worker.finalize()
        except ValueError as exc:  # XTS: shorter than one block
            raise CryptoDevError(str(exc)) from None
