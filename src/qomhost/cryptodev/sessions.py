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


def _set_iv(
    encrypt: bool, ctx: CipherContext, ecb: CipherContext | None, last: bytes, iv: bytes
) -> None:
    """Make the CBC context ``ctx``, whose chaining value is ``last`` (the
    last ciphertext block it saw), continue as if freshly made with ``iv``.

    Decrypting, the chaining value becomes the last ciphertext block fed
    in, so feeding ``iv`` (and dropping the block that comes out) sets it.
    Encrypting, it becomes the last block put out: feeding
    ``D(iv) xor last`` puts out ``E(D(iv) xor last xor last) = iv``
    (``ecb`` is the session's AES decryptor for ``D``).
    """
    if encrypt:
        assert ecb is not None
        ctx.update(
            (int.from_bytes(ecb.update(iv), "little") ^ int.from_bytes(last, "little")).to_bytes(
                AES_BLOCK, "little"
            )
        )
    else:
        ctx.update(iv)


def _check_set_iv() -> bool:
    """Whether a CBC context taken on with :func:`_set_iv` gives what a new one
    gives (this ``cryptography`` and OpenSSL chain across ``update`` calls
    and hold nothing back, as they do)."""
    try:
        aes = algorithms.AES(bytes(range(32)))
        ecb = Cipher(aes, modes.ECB()).decryptor()
        data = bytes(range(48))
        for encrypt in (True, False):
            first = Cipher(aes, modes.CBC(bytes(16)))
            ctx = first.encryptor() if encrypt else first.decryptor()
            out = ctx.update(data)
            last = out[-AES_BLOCK:] if encrypt else data[-AES_BLOCK:]
            for iv in (bytes(range(1, 17)), bytes(range(7, 23))):
                _set_iv(encrypt, ctx, ecb, last, iv)
                fresh = Cipher(aes, modes.CBC(iv))
                want = (fresh.encryptor() if encrypt else fresh.decryptor()).update(data)
                if ctx.update(data) != want:
                    return False
                last = want[-AES_BLOCK:] if encrypt else data[-AES_BLOCK:]
    except Exception:
        return False
    return True


_SET_IV = _check_set_iv()


class CipherSession:
    """One cipher session: what each data request of it does.

    ``direction`` is :data:`Op.ENCRYPT` or :data:`Op.DECRYPT`, or 0 when
    the session leaves it to each request's opcode. The key is never
    shown in ``repr``.
    """

    __slots__ = (
        "_algorithm",
        "_ecb",
        "_kept",
        "algo",
        "aligned",
        "direction",
        "iv_len",
        "name",
    )

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
        # CBC contexts kept between requests, by direction, with the last
        # ciphertext block each saw; and the AES decryptor _set_iv needs
        self._kept: dict[bool, tuple[CipherContext, bytes]] = {}
        self._ecb: CipherContext | None = None

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

    @property
    def keeps_contexts(self) -> bool:
        """:meth:`take_context` and :meth:`keep_context` may be used (CBC)."""
        return _SET_IV and self.algo == CipherAlgo.AES_CBC

    def take_context(self, encrypt: bool, iv: bytes) -> CipherContext:
        """A CBC context for one request: the one kept from an earlier request
        set to ``iv``, else a new one. Give it back with :meth:`keep_context`
        once the request is done, or drop it (a failed request).

        A session's key schedule is made once, as QEMU's own backend keeps
        one cipher per session and only sets each request's IV: a new
        context costs 3 us, a fifth of serving a 4 KiB request.

        :raises VirtioCryptoError: (``BADMSG``) an IV of the wrong length.
        """
        kept = self._kept.pop(encrypt, None)
        if kept is None or len(iv) != AES_BLOCK:
            return self.context(encrypt, iv)
        ctx, last = kept
        if encrypt and self._ecb is None:
            self._ecb = Cipher(self._algorithm, modes.ECB()).decryptor()
        _set_iv(encrypt, ctx, self._ecb, last, iv)
        return ctx

    def keep_context(self, encrypt: bool, ctx: CipherContext, last: bytes) -> None:
        """Keep ``ctx`` (from :meth:`take_context`, used for whole blocks) for
        the next request; ``last`` is the last ciphertext block it saw."""
        self._kept[encrypt] = (ctx, last)

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
