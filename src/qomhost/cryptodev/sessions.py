"""Symmetric cipher sessions of a crypto device, done with ``cryptography``.

A session binds an algorithm, a key and a direction once; data requests
then name it by id. :class:`SessionTable` hands out the ids and keeps the
sessions of one device (for a vhost-user backend: of one connection, since
a frontend that reconnects starts afresh).

Supported: AES in CBC, CTR, ECB and XTS modes, with the key lengths
OpenSSL accepts for each (16/24/32 bytes; 32/64 for XTS, which is two
keys). Anything else is refused when the session is created, with the
virtio-crypto status a device reports: ``NOTSUPP`` for an algorithm or
operation it does not do, ``ERR`` for a key the cipher rejects, ``NOSPC``
when the table is full.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from qomhost.cryptodev.virtio_crypto import (
    AsymSessionInfo,
    CipherAlgo,
    Op,
    Status,
    SymOp,
    SymSessionInfo,
    VirtioCryptoError,
)

__all__ = [
    "DEFAULT_MAX_SESSIONS",
    "SUPPORTED_CIPHERS",
    "CipherSession",
    "SessionTable",
]

#: how many sessions one table holds (DPDK's vhost_crypto allows 1024 too)
DEFAULT_MAX_SESSIONS = 1024

AES_BLOCK = 16

#: virtio-crypto cipher id -> (name, key lengths, IV length, block-aligned data)
SUPPORTED_CIPHERS: dict[int, tuple[str, frozenset[int], int, bool]] = {
    CipherAlgo.AES_CBC: ("aes-cbc", frozenset({16, 24, 32}), AES_BLOCK, True),
    CipherAlgo.AES_CTR: ("aes-ctr", frozenset({16, 24, 32}), AES_BLOCK, False),
    CipherAlgo.AES_ECB: ("aes-ecb", frozenset({16, 24, 32}), 0, True),
    CipherAlgo.AES_XTS: ("aes-xts", frozenset({32, 64}), AES_BLOCK, False),
}


def _fast_contexts() -> dict[bool, Callable[[algorithms.AES, modes.Mode], CipherContext]] | None:
    """OpenSSL's context constructors without ``Cipher``'s checks, if this
    ``cryptography`` has them where 42-50 keep them.

    ``Cipher(...).encryptor()`` spends about 1.5 us of its 3.3 us on type
    checks that :class:`CipherSession` has already made once (algorithm,
    key) or makes itself (IV length): a tenth of what serving a small
    request costs. The constructors are not public API, so they are used
    only when found and when they encrypt a known block as ``Cipher`` does.
    """
    try:
        from cryptography.hazmat.primitives.ciphers import base

        rust = base.rust_openssl.ciphers  # type: ignore[attr-defined]
        fast = {True: rust.create_encryption_ctx, False: rust.create_decryption_ctx}
        key, iv, block = bytes(range(16)), bytes(16), bytes(range(16, 32))
        want = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor().update(block)
        got = fast[True](algorithms.AES(key), modes.CBC(iv)).update(block)
        back = fast[False](algorithms.AES(key), modes.CBC(iv)).update(got)
    except Exception:
        return None
    if got != want or back != block:
        return None
    return fast


_FAST_CONTEXTS = _fast_contexts()


class CipherSession:
    """One cipher session: what each data request of it does.

    ``direction`` is :data:`Op.ENCRYPT` or :data:`Op.DECRYPT`, or 0 when
    the session leaves it to each request's opcode. The key is never
    shown in ``repr``.
    """

    __slots__ = ("_algorithm", "algo", "aligned", "direction", "iv_len", "name")

    def __init__(self, algo: int, key: bytes, direction: int) -> None:
        spec = SUPPORTED_CIPHERS.get(algo)
        if spec is None:
            raise VirtioCryptoError(f"unsupported cipher algorithm {algo}", Status.NOTSUPP)
        name, key_lens, iv_len, aligned = spec
        if len(key) not in key_lens:
            raise VirtioCryptoError(
                f"invalid key length {len(key)} for {name} "
                f"(expected {'/'.join(map(str, sorted(key_lens)))})",
                Status.ERR,
            )
        if direction not in (0, Op.ENCRYPT, Op.DECRYPT):
            raise VirtioCryptoError(f"invalid cipher direction {direction}", Status.BADMSG)
        try:
            # XTS checks its key here (OpenSSL refuses two equal halves)
            self._algorithm = algorithms.AES(key)
            if algo == CipherAlgo.AES_XTS:
                Cipher(self._algorithm, modes.XTS(bytes(AES_BLOCK))).encryptor()
        except ValueError as exc:
            raise VirtioCryptoError(f"{name} key rejected: {exc}", Status.ERR) from None
        self.algo = algo
        self.name = name
        self.direction = direction
        self.iv_len = iv_len
        #: data must be a whole number of AES blocks
        self.aligned = aligned

    def __repr__(self) -> str:
        return f"CipherSession({self.name}, direction={self.direction})"

    @property
    def streaming(self) -> bool:
        """Data may be fed in pieces (XTS must see a data unit in one call)."""
        return self.algo != CipherAlgo.AES_XTS

    @property
    def slack(self) -> int:
        """Bytes ``update_into`` needs past its output (a block minus one, but CTR none)."""
        return 0 if self.algo == CipherAlgo.AES_CTR else AES_BLOCK - 1

    def context(self, encrypt: bool, iv: bytes) -> CipherContext:
        """A fresh encryptor or decryptor for one request.

        :raises VirtioCryptoError: (``BADMSG``) an IV of the wrong length.
        """
        mode: modes.Mode
        if self.algo == CipherAlgo.AES_ECB:
            mode = modes.ECB()
        else:
            if len(iv) != self.iv_len:
                raise VirtioCryptoError(
                    f"{self.name} needs a {self.iv_len}-byte IV, not {len(iv)} bytes"
                )
            if self.algo == CipherAlgo.AES_CBC:
                mode = modes.CBC(iv)
            elif self.algo == CipherAlgo.AES_CTR:
                mode = modes.CTR(iv)
            else:
                mode = modes.XTS(iv)
        if _FAST_CONTEXTS is not None:
            return _FAST_CONTEXTS[encrypt](self._algorithm, mode)
        cipher: Cipher[modes.Mode] = Cipher(self._algorithm, mode)
        if encrypt:
            return cipher.encryptor()  # type: ignore[misc]
        return cipher.decryptor()  # type: ignore[misc]

    def check_length(self, length: int) -> None:
        """:raises VirtioCryptoError: (``ERR``, as QEMU's own backend answers) a
        length the mode cannot take."""
        if self.aligned and length % AES_BLOCK:
            raise VirtioCryptoError(
                f"{self.name} data length {length} is not a multiple of {AES_BLOCK}", Status.ERR
            )
        if self.algo == CipherAlgo.AES_XTS and length < AES_BLOCK:
            raise VirtioCryptoError(
                f"{self.name} needs at least {AES_BLOCK} bytes, not {length}", Status.ERR
            )

    def crypt(self, encrypt: bool, iv: bytes, data: bytes) -> bytes:
        """Encrypt or decrypt ``data`` in one call (the simple, copying way)."""
        self.check_length(len(data))
        ctx = self.context(encrypt, iv)
        return ctx.update(data) + ctx.finalize()


class SessionTable:
    """The sessions of one device, by id (ids count up from 0 and are never reused).

    :param max_sessions: creating more fails with ``NOSPC``.
    """

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        self.max_sessions = max_sessions
        self._sessions: dict[int, CipherSession] = {}
        self._next_id = 0
        #: how many sessions were created and closed, for logs and tests
        self.created = 0
        self.closed = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def get(self, session_id: int) -> CipherSession | None:
        return self._sessions.get(session_id)

    def create(self, info: SymSessionInfo | AsymSessionInfo) -> int:
        """Create a session; its id.

        :raises VirtioCryptoError: with the status to report.
        """
        if isinstance(info, AsymSessionInfo):
            raise VirtioCryptoError("asymmetric sessions are not supported", Status.NOTSUPP)
        if info.op_type != SymOp.CIPHER:
            raise VirtioCryptoError(
                f"symmetric op_type {info.op_type} is not supported (cipher only)",
                Status.NOTSUPP,
            )
        if len(self._sessions) >= self.max_sessions:
            raise VirtioCryptoError(
                f"too many sessions (at most {self.max_sessions})", Status.NOSPC
            )
        session = CipherSession(info.cipher_alg, info.key, info.direction)
        session_id = self._next_id
        self._next_id += 1
        self._sessions[session_id] = session
        self.created += 1
        return session_id

    def close(self, session_id: int) -> bool:
        """Forget a session; False if there was none with that id."""
        if self._sessions.pop(session_id, None) is None:
            return False
        self.closed += 1
        return True

    def clear(self) -> None:
        """Forget every session (the ids keep counting)."""
        self.closed += len(self._sessions)
        self._sessions.clear()
