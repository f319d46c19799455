"""``cryptodev-backend``: the parent of every crypto backend, and their Python API.

In QEMU a crypto backend serves a virtio-crypto device: the guest creates
sessions (an algorithm, a direction and a key, bound once) and then sends
data requests naming a session. qomhost has no guest, so the same two steps
are offered to Python, identically on every backend::

    dev = host.add_object("cryptodev-backend-builtin", "cb0")
    with dev.create_session("aes-256-cbc", key=key, op="encrypt") as session:
        ciphertext = dev.encrypt(session, iv, plaintext)
    # or, in a coroutine: await dev.encrypt_async(session, iv, plaintext)

* :meth:`CryptoDevBackend.create_session` ``(cipher, key, op, *, hash=...,
  hash_result_len=..., mac=..., auth_key=..., aad_len=..., chain_order=...)``
  returns a :class:`Session`. ``cipher`` is a name such as ``"aes-256-cbc"``
  (the key must then have that size), or a
  :class:`~qomhost.cryptodev.virtio_crypto.CipherAlgo` number (any size the
  algorithm takes); ``op`` is ``"encrypt"``/``"decrypt"`` or an
  :class:`~qomhost.cryptodev.virtio_crypto.Op`. ``hash``/``mac`` (numbers,
  :class:`HashAlgo`/:class:`MacAlgo`) make an algorithm-chaining session,
  as virtio-crypto defines it; only backends that offer chaining accept it.
* :meth:`Session.close` (or leaving the ``with`` block) destroys it.
* :meth:`CryptoDevBackend.encrypt` / :meth:`CryptoDevBackend.decrypt`
  ``(session, iv, data, *, queue=None) -> bytes`` run one request; the
  session's direction must match. No padding is added or removed: block
  modes need whole blocks.
* :meth:`CryptoDevBackend.encrypt_many` / :meth:`decrypt_many`
  ``(session, items, *, queue=None) -> list[bytes]`` run many ``(iv, data)``
  requests at once, results in order. A backend that queues its work
  (``cryptodev-vhost-user``) has them all in flight together, in batches of
  its loop's ``aio-max-batch``, so the peer serves several per notification.
  :meth:`encrypt_many_into` / :meth:`decrypt_many_into` write the results
  into buffers the caller provides (and may reuse), so large requests cost
  no fresh memory per result.
* :meth:`CryptoDevBackend.submit_many_into` ``(session, items, out, *,
  queue=None) -> PendingRequests`` sends the same requests (in the
  session's direction) and returns at once; ``pending.wait()`` returns
  once every result is in ``out``. A caller that keeps several such groups
  in flight keeps a queuing backend busy while it prepares the next group
  (one group waited for, the next sent): the two ends work at the same
  time instead of in turn. Other backends do the work before returning.
* :meth:`CryptoDevBackend.encrypt_async` / :meth:`decrypt_async`: the same,
  awaited from asyncio; the work is done on the object's
  :class:`~qomhost.aio.context.AioContext` (through
  :mod:`qomhost.aio.asyncio_bridge`), never on the caller's event loop.
* :attr:`CryptoDevBackend.ready` and :attr:`CryptoDevBackend.capabilities`
  (a :class:`~qomhost.cryptodev.virtio_crypto.CryptoConfig`, the config
  space QEMU would show the guest).

Every failure is a :class:`CryptoDevError` (a
:class:`~qomhost.errors.QemuError`) with QEMU's text where QEMU has one.
A backend with open sessions is *in use*: ``object-del`` refuses it, as
QEMU refuses while a virtio-crypto device uses it.

``queues`` (uint32, default 1) is settable at any time; as in QEMU nothing
is re-initialised, so a change counts only for a backend not yet complete.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, ClassVar

from qomhost.cryptodev.virtio_crypto import (
    ChainOrder,
    CipherAlgo,
    CryptoConfig,
    HashMode,
    Op,
    SymOp,
    SymSessionInfo,
)
from qomhost.errors import ObjectError, QemuError
from qomhost.qapi.schema import UINT32, Member
from qomhost.qom.object import Object, ObjectProperty

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType

    from qomhost.aio.context import AioContext

__all__ = [
    "CIPHERS",
    "CryptoDevBackend",
    "CryptoDevError",
    "PendingRequests",
    "Session",
    "cipher_session_info",
]

#: QEMU's MAX_CRYPTO_QUEUE_NUM: the size of a backend's per-queue tables
MAX_CRYPTO_QUEUE_NUM = 64

#: cipher names -> (algorithm, key length); "aes-256-xts" is two AES-256 keys
CIPHERS: dict[str, tuple[int, int]] = {}
for _mode, _algo in (
    ("ecb", CipherAlgo.AES_ECB),
    ("cbc", CipherAlgo.AES_CBC),
    ("ctr", CipherAlgo.AES_CTR),
):
    for _bits in (128, 192, 256):
        CIPHERS[f"aes-{_bits}-{_mode}"] = (_algo, _bits // 8)
CIPHERS["aes-128-xts"] = (CipherAlgo.AES_XTS, 32)
CIPHERS["aes-256-xts"] = (CipherAlgo.AES_XTS, 64)

_OPS = {"encrypt": Op.ENCRYPT, "decrypt": Op.DECRYPT}
_CHAIN_ORDERS = {
    "hash-then-cipher": ChainOrder.HASH_THEN_CIPHER,
    "cipher-then-hash": ChainOrder.CIPHER_THEN_HASH,
}


class CryptoDevError(QemuError):
    """A session or request failed (QEMU's text where QEMU reports one)."""


class PendingRequests:
    """Requests sent by :meth:`CryptoDevBackend.submit_many_into`.

    :meth:`wait` returns once every result is in its output buffer (the
    buffers must not be touched before), or raises :class:`CryptoDevError`
    for the first request that failed.
    """

    __slots__ = ("_wait",)

    def __init__(self, wait: Callable[[], object] | None = None) -> None:
        self._wait = wait

    def wait(self) -> None:
        """Wait for every request (again: returns at once)."""
        wait, self._wait = self._wait, None
        if wait is not None:
            wait()


def _checked(
    items: Sequence[tuple[bytes, bytes]], out: Sequence[bytearray | memoryview]
) -> list[tuple[bytes, bytes]]:
    """``items`` as bytes, once each output buffer is known to be large enough."""
    if len(out) != len(items):
        raise CryptoDevError(f"{len(items)} requests but {len(out)} output buffers")
    for i, ((_iv, data), target) in enumerate(zip(items, out, strict=True)):
        if memoryview(target).nbytes < len(data):
            raise CryptoDevError(f"output buffer {i} is smaller than its {len(data)} bytes")
    return [(bytes(iv), bytes(data)) for iv, data in items]


def cipher_session_info(
    cipher: str | int,
    key: bytes,
    op: str | int,
    *,
    hash: int | None = None,
    hash_result_len: int = 0,
    mac: int | None = None,
    auth_key: bytes = b"",
    aad_len: int = 0,
    chain_order: str | int = "cipher-then-hash",
) -> SymSessionInfo:
    """The virtio-crypto session a :meth:`~CryptoDevBackend.create_session` call asks for."""
    if isinstance(cipher, str):
        found = CIPHERS.get(cipher.lower())
        if found is None:
            raise CryptoDevError(f"unknown cipher '{cipher}' (known: {', '.join(sorted(CIPHERS))})")
        algo, key_len = found
        if len(key) != key_len:
            raise CryptoDevError(f"{cipher} needs a {key_len}-byte key, not {len(key)} bytes")
    else:
        algo = int(cipher)
    direction = _OPS.get(op, 0) if isinstance(op, str) else int(op)
    if direction not in (Op.ENCRYPT, Op.DECRYPT):
        raise CryptoDevError(f"op must be 'encrypt' or 'decrypt', not {op!r}")
    if hash is not None and mac is not None:
        raise CryptoDevError("a session chains a hash or a MAC, not both")
    if hash is None and mac is None:
        return SymSessionInfo(algo, bytes(key), direction)
    order = _CHAIN_ORDERS.get(chain_order, 0) if isinstance(chain_order, str) else chain_order
    if order not in (ChainOrder.HASH_THEN_CIPHER, ChainOrder.CIPHER_THEN_HASH):
        raise CryptoDevError(f"unknown chain order {chain_order!r}")
    return SymSessionInfo(
        algo,
        bytes(key),
        direction,
        op_type=SymOp.ALGORITHM_CHAINING,
        hash_alg=int(hash if hash is not None else mac),  # type: ignore[arg-type]
        hash_result_len=hash_result_len,
        auth_key=bytes(auth_key) if mac is not None else b"",
        aad_len=aad_len,
        hash_mode=HashMode.AUTH if mac is not None else HashMode.PLAIN,
        alg_chain_order=order,
    )


class Session:
    """A symmetric session on one backend; close it when done (or use ``with``).

    ``id`` is the backend's session id. A session does not survive its
    backend's connection: after a vhost-user backend reconnects, old
    sessions raise :class:`CryptoDevError` saying they are gone.
    """

    def __init__(
        self, backend: CryptoDevBackend, session_id: int, info: SymSessionInfo, epoch: int
    ):
        self.backend = backend
        self.id = session_id
        self.info = info
        #: the backend connection this session belongs to
        self.epoch = epoch
        self.closed = False

    @property
    def op(self) -> int:
        """:data:`Op.ENCRYPT` or :data:`Op.DECRYPT`."""
        return self.info.direction

    def close(self) -> None:
        """Destroy the session in the backend (idempotent)."""
        self.backend.close_session(self)

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        # The key never shows (SymSessionInfo's repr gives its length only).
        state = "closed" if self.closed else "open"
        return f"<Session {self.id} on {self.backend.name or '?'} ({state}) {self.info!r}>"


def _set_queues(obj: Any, value: object) -> None:
    assert isinstance(value, int)
    if value == 0 or (obj.queue_limit is not None and value > obj.queue_limit):
        # QEMU names the concrete type in this message.
        raise ObjectError(f"Property '{obj.type_name}.queues' doesn't take value '{value}'")
    obj.queues = value


class CryptoDevBackend(Object):
    """``cryptodev-backend``: instantiable in QEMU 7.2, but serves nothing.

    Subclasses implement :meth:`_create_session`, :meth:`_close_session`
    and :meth:`_cipher`; this class keeps the session table and checks the
    requests common to every backend.
    """

    MEMBERS: ClassVar[tuple[Member, ...]] = (Member("queues", UINT32),)

    #: the largest ``queues`` the setter takes (None: any uint32; see
    #: cryptodev-vhost-user, where QEMU 7.2 aborts from 64 on)
    queue_limit: int | None = None

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.queues = 1
        #: the config space a virtio-crypto device would show for this backend
        self.capabilities = CryptoConfig()
        #: the host's main loop (set before complete); async work runs there
        self.context: AioContext | None = None
        self._sessions: dict[int, Session] = {}
        self._lock = threading.Lock()
        #: bumped whenever the backend loses its sessions (a reconnect)
        self._epoch = 0

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        return [
            ObjectProperty(
                "queues", "uint32", getter=lambda obj: obj.queues, setter=_set_queues, kind=UINT32
            )
        ]

    # --- state ------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Whether requests can be served now (``cryptodev_backend_is_ready``)."""
        return False

    def can_be_deleted(self) -> bool:
        with self._lock:
            return not self._sessions

    def sessions(self) -> list[Session]:
        """The sessions open now."""
        with self._lock:
            return list(self._sessions.values())

    def _forget_sessions(self) -> None:
        """The backend lost every session (its peer went away)."""
        with self._lock:
            self._epoch += 1
            for session in self._sessions.values():
                session.closed = True
            self._sessions.clear()

    # --- sessions -----------------------------------------------------------------
    def create_session(
        self,
        cipher: str | int = "aes-256-cbc",
        key: bytes = b"",
        op: str | int = "encrypt",
        **chain: Any,
    ) -> Session:
        """Create a symmetric session (see the module docstring for the arguments)."""
        info = cipher_session_info(cipher, key, op, **chain)
        if not self.ready:
            raise CryptoDevError(f"cryptodev backend '{self.name}' is not ready")
        # The checks virtio-crypto makes before it asks the backend.
        caps = self.capabilities
        if len(info.key) > caps.max_cipher_key_len:
            raise CryptoDevError(f"virtio-crypto length of cipher key is too big: {len(info.key)}")
        if len(info.auth_key) > caps.max_auth_key_len:
            raise CryptoDevError(
                f"virtio-crypto length of auth key is too big: {len(info.auth_key)}"
            )
        epoch = self._epoch
        session_id = self._create_session(info)
        session = Session(self, session_id, info, epoch)
        with self._lock:
            if epoch != self._epoch:
                # The backend restarted meanwhile: the id names nothing.
                session.closed = True
                raise CryptoDevError(f"cryptodev backend '{self.name}' restarted; session is gone")
            self._sessions[session_id] = session
        return session

    def close_session(self, session: Session) -> None:
        """Destroy ``session`` (closing a closed session does nothing)."""
        with self._lock:
            if session.closed or self._sessions.get(session.id) is not session:
                session.closed = True
                return
            del self._sessions[session.id]
            session.closed = True
        if session.epoch == self._epoch and self.ready:
            self._close_session(session.id)

    def _check_session(self, session: Session, op: int) -> None:
        if session.backend is not self:
            raise CryptoDevError(f"session {session.id} belongs to another backend")
        if session.closed:
            if session.epoch != self._epoch:
                raise CryptoDevError(
                    f"session {session.id} is gone: the backend of '{self.name}' was restarted"
                )
            raise CryptoDevError(f"session {session.id} is closed")
        if session.op != op:
            want = "encryption" if session.op == Op.ENCRYPT else "decryption"
            raise CryptoDevError(f"session {session.id} is for {want}")
        if session.info.op_type != SymOp.CIPHER:
            raise CryptoDevError("only plain cipher requests can be sent (no hash or MAC)")

    # --- requests -------------------------------------------------------------------
    def encrypt(
        self, session: Session, iv: bytes, data: bytes, *, queue: int | None = None
    ) -> bytes:
        """Encrypt ``data`` with ``session`` (an encrypting session) and ``iv``."""
        self._check_session(session, Op.ENCRYPT)
        return self._cipher(session, bytes(iv), bytes(data), queue)

    def decrypt(
        self, session: Session, iv: bytes, data: bytes, *, queue: int | None = None
    ) -> bytes:
        """Decrypt ``data`` with ``session`` (a decrypting session) and ``iv``."""
        self._check_session(session, Op.DECRYPT)
        return self._cipher(session, bytes(iv), bytes(data), queue)

    def encrypt_many(
        self,
        session: Session,
        items: Iterable[tuple[bytes, bytes]],
        *,
        queue: int | None = None,
    ) -> list[bytes]:
        """Encrypt every ``(iv, data)`` of ``items``; the results in order."""
        self._check_session(session, Op.ENCRYPT)
        return self._cipher_many(session, [(bytes(iv), bytes(d)) for iv, d in items], queue)

    def decrypt_many(
        self,
        session: Session,
        items: Iterable[tuple[bytes, bytes]],
        *,
        queue: int | None = None,
    ) -> list[bytes]:
        """Decrypt every ``(iv, data)`` of ``items``; the results in order."""
        self._check_session(session, Op.DECRYPT)
        return self._cipher_many(session, [(bytes(iv), bytes(d)) for iv, d in items], queue)

    def encrypt_many_into(
        self,
        session: Session,
        items: Sequence[tuple[bytes, bytes]],
        out: Sequence[bytearray | memoryview],
        *,
        queue: int | None = None,
    ) -> None:
        """:meth:`encrypt_many`, each result written to the start of ``out[i]``."""
        self._check_session(session, Op.ENCRYPT)
        self._cipher_many(session, _checked(items, out), queue, out)

    def decrypt_many_into(
        self,
        session: Session,
        items: Sequence[tuple[bytes, bytes]],
        out: Sequence[bytearray | memoryview],
        *,
        queue: int | None = None,
    ) -> None:
        """:meth:`decrypt_many`, each result written to the start of ``out[i]``."""
        self._check_session(session, Op.DECRYPT)
        self._cipher_many(session, _checked(items, out), queue, out)

    def submit_many_into(
        self,
        session: Session,
        items: Sequence[tuple[bytes, bytes]],
        out: Sequence[bytearray | memoryview],
        *,
        queue: int | None = None,
    ) -> PendingRequests:
        """:meth:`encrypt_many_into` or :meth:`decrypt_many_into` (as the
        session's direction says), without waiting: the results are in
        ``out`` once the returned :class:`PendingRequests` is waited for."""
        self._check_session(session, session.op)
        return self._submit_many(session, _checked(items, out), queue, out)

    def encrypt_async(
        self, session: Session, iv: bytes, data: bytes, *, queue: int | None = None
    ) -> Coroutine[Any, Any, bytes]:
        """:meth:`encrypt`, awaited from asyncio."""
        self._check_session(session, Op.ENCRYPT)
        return self._cipher_async(session, bytes(iv), bytes(data), queue)

    def decrypt_async(
        self, session: Session, iv: bytes, data: bytes, *, queue: int | None = None
    ) -> Coroutine[Any, Any, bytes]:
        """:meth:`decrypt`, awaited from asyncio."""
        self._check_session(session, Op.DECRYPT)
        return self._cipher_async(session, bytes(iv), bytes(data), queue)

    # --- what each backend implements ------------------------------------------------
    def _create_session(self, info: SymSessionInfo) -> int:
        raise CryptoDevError(f"cryptodev backend '{self.name}' is not ready")

    def _close_session(self, session_id: int) -> None:
        """Destroy a session in the backend."""

    def _cipher(self, session: Session, iv: bytes, data: bytes, queue: int | None) -> bytes:
        raise CryptoDevError(f"cryptodev backend '{self.name}' is not ready")

    def _cipher_many(
        self,
        session: Session,
        items: list[tuple[bytes, bytes]],
        queue: int | None,
        out: Sequence[bytearray | memoryview] | None = None,
    ) -> list[bytes]:
        """By default one request after the other."""
        results = [self._cipher(session, iv, data, queue) for iv, data in items]
        if out is not None:
            for result, target in zip(results, out, strict=True):
                memoryview(target).cast("B")[: len(result)] = result
        return results

    def _submit_many(
        self,
        session: Session,
        items: list[tuple[bytes, bytes]],
        queue: int | None,
        out: Sequence[bytearray | memoryview],
    ) -> PendingRequests:
        """By default the work is done before this returns."""
        self._cipher_many(session, items, queue, out)
        return PendingRequests()

    async def _cipher_async(
        self, session: Session, iv: bytes, data: bytes, queue: int | None
    ) -> bytes:
        """By default: :meth:`_cipher` on the worker pool of the object's loop."""
        from qomhost.aio.asyncio_bridge import run_in_executor

        if self.context is None:
            raise CryptoDevError(f"cryptodev backend '{self.name}' has no event loop")
        return await run_in_executor(self.context, self._cipher, session, iv, data, queue)
