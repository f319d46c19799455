"""``cryptodev-vhost-user``: crypto work done by another process, over vhost-user.

``-chardev socket,id=c0,path=S -object cryptodev-vhost-user,id=cv0,chardev=c0,queues=N``
connects to a vhost-user crypto backend (``qomhost-vhost-user-crypto``,
DPDK's ``vhost_crypto``, ...) through the socket chardev ``c0``.

As in QEMU 7.2:

* ``chardev`` is mandatory and looked up when the object is completed
  (``Device 'nope' not found``, class DeviceNotFound; ``Device 'c0' is in
  use`` when something else is attached to it); it cannot be changed
  afterwards (``Property 'chardev' can no longer be set``) and reads back
  as the chardev's label.
* The handshake (:mod:`qomhost.vhost_user.frontend`) runs whenever the
  chardev opens: at once, inside ``complete()``, if the socket is already
  connected; later for a server chardev or a client with ``reconnect=``.
  Each of the ``queues`` data queues is a vhost device of its own with one
  virtqueue, handshaken in turn. A backend offering fewer queues
  (``you are asking more queues than supported: N``) or failing the
  handshake ends the program with status 1, as QEMU does; a library host
  (no ``fatal`` hook) gets the error from ``complete()`` instead, or, for a
  later connection, a device that stays not ready.
* When the backend goes away the device is not ready; with ``reconnect=``
  the handshake runs again when it comes back, and the sessions of the
  old connection are gone (using one says so).
* ``queues`` from 64 on is refused (QEMU 7.2 aborts on an assertion when
  the chardev opens; see ``docs/compatibility.md``).

**On an iothread** (a qomhost extension, from Python only, so that
nothing QEMU shows changes: ``-object cryptodev-vhost-user,help`` and
``qom-list`` stay QEMU's)::

    io = host.add_object("iothread", "io1")
    dev = host.add_object("cryptodev-vhost-user", "cv0", chardev="c0")
    dev.set_iothread(io)

moves the data queues' completions to the iothread's loop: its call
eventfds are watched there, and while that loop busy-polls (``poll-max-ns``)
it reads the used rings itself and tells the backend not to signal. The
iothread is then in use (``object-del`` refuses it) until the device is
deleted or moved back with ``set_iothread(None)``. The vhost-user
conversation itself (handshake, sessions) stays on the main loop, as
QEMU's control plane does for devices on iothreads.

Sessions are created and closed with ``CREATE_CRYPTO_SESSION`` (QEMU 7.2's
632-byte layout; the reply is always awaited, a negative id is ``Bad
session id: <n>``) and ``CLOSE_CRYPTO_SESSION`` (no reply). The Python API
is :mod:`qomhost.objects.cryptodev.base`'s.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from qomhost.cryptodev.virtio_crypto import (
    LAYOUT_QEMU72,
    CipherAlgo,
    CryptoConfig,
    HashAlgo,
    Op,
    Opcode,
    Service,
    Status,
    SymSessionInfo,
    encode_session,
    session_reply_id,
)
from qomhost.errors import DEVICE_NOT_FOUND, ObjectError
from qomhost.objects.cryptodev.base import (
    MAX_CRYPTO_QUEUE_NUM,
    CryptoDevBackend,
    CryptoDevError,
    PendingRequests,
    Session,
)
from qomhost.qapi.schema import STR, Member
from qomhost.qom.object import Object, ObjectProperty

if TYPE_CHECKING:
    import concurrent.futures

    from qomhost.aio.context import AioContext
    from qomhost.chardev.base import Chardev
    from qomhost.objects.cryptodev.datapath import DataPath
    from qomhost.objects.iothread import IOThread
    from qomhost.vhost_user.frontend import Channel, VhostDev

__all__ = ["CryptoDevBackendVhostUser"]

log = logging.getLogger("qomhost.cryptodev")

MAX_CIPHER_KEY_LEN = 64
MAX_AUTH_KEY_LEN = 512


def _log_report(line: str) -> None:
    log.error("%s", line)


def _set_chardev(obj: Any, value: object) -> None:
    assert isinstance(value, str)
    if obj.completed:
        raise ObjectError("Property 'chardev' can no longer be set")
    obj.chardev_name = value


def _get_chardev(obj: Any) -> object:
    chardev = obj.chardev
    return chardev.label if chardev is not None else ""


class CryptoDevBackendVhostUser(CryptoDevBackend):
    """``cryptodev-vhost-user``: a vhost-user frontend for a crypto backend."""

    MEMBERS: ClassVar[tuple[Member, ...]] = (Member("chardev", STR, optional=False),)

    #: QEMU 7.2 asserts ``queues < MAX_CRYPTO_QUEUE_NUM`` when the chardev opens
    queue_limit = MAX_CRYPTO_QUEUE_NUM - 1

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.chardev_name: str | None = None
        self.chardev: Chardev | None = None
        self.completed = False
        #: set by the host before complete(): find a chardev by label
        self.find_chardev: Callable[[str], Object | None] = lambda _label: None
        #: QEMU's error_report: one line each (the command line prints them)
        self.report: Callable[[str], None] = _log_report
        #: QEMU's exit(1) after a fatal report; None in a library host
        self.fatal: Callable[[], None] | None = None
        self.channel: Channel | None = None
        self.devs: list[VhostDev] = []
        self._ready = False
        #: the reason the device is not ready, once it failed
        self.error: str | None = None
        #: the data queues (started on the first request of a connection)
        self.datapath: DataPath | None = None
        #: seconds a data request may take
        self.request_timeout = 10.0
        #: the iothread the data queues' completions run on (None: the main loop)
        self.iothread: IOThread | None = None

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        return [
            ObjectProperty("chardev", "string", getter=_get_chardev, setter=_set_chardev, kind=STR)
        ]

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def data_context(self) -> AioContext | None:
        """The loop that reads the data queues' completions."""
        if self.iothread is not None:
            return self.iothread.context
        return self.context

    # --- placement -------------------------------------------------------------------
    def set_iothread(self, iothread: IOThread | None) -> None:
        """Run the data path on ``iothread`` (None: back to the main loop).

        May be called at any time; requests in flight complete on whichever
        loop sees them. The iothread is in use until the device leaves it.
        """
        old = self.iothread
        if iothread is old:
            return
        if iothread is not None:
            iothread.attach(self)
        self.iothread = iothread
        datapath = self.datapath
        context = self.data_context
        if datapath is not None and context is not None:
            datapath.move_to(context)
        if old is not None:
            old.detach(self)

    # --- creation -------------------------------------------------------------------
    def complete(self) -> None:
        from qomhost.chardev.base import Chardev
        from qomhost.vhost_user.frontend import Channel

        name = self.chardev_name
        if name is None:
            raise ObjectError("Parameter 'chardev' expects a valid character device")
        chardev = self.find_chardev(name)
        if chardev is None:
            raise ObjectError(f"Device '{name}' not found", DEVICE_NOT_FOUND)
        assert isinstance(chardev, Chardev)
        if chardev.frontend is not None:
            raise ObjectError(f"Device '{name}' is in use")
        assert self.context is not None
        self.completed = True
        self.chardev = chardev
        self.channel = Channel(chardev, self.context, on_open=self._opened, on_close=self._closed)
        chardev.attach(self.context, self.channel)
        if self.error is not None and self.fatal is None:
            # A library host: the handshake failed inside complete().
            error = self.error
            self.finalize()
            raise ObjectError(error)

    def _opened(self) -> None:
        """The backend connected: handshake every queue, as QEMU's OPENED event does."""
        from qomhost.vhost_user.frontend import VhostDev, VhostUserError

        assert self.channel is not None
        channel = self.channel
        self._drop_devs()
        self.error = None
        for i in range(self.queues):
            dev = VhostDev(i, 1, warn=self._warn, backend_channel=channel.backend_channel)
            self.devs.append(dev)
            try:
                channel.run(dev.init())
            except VhostUserError as err:
                self._fail([*err.lines, f"failed to init vhost_crypto for queue {i}"])
                return
            if i == 0 and self.queues > dev.max_queues:
                self._fail([f"you are asking more queues than supported: {dev.max_queues}"])
                return
        self.capabilities = CryptoConfig(
            status=Status.S_HW_READY,
            max_dataqueues=self.queues,
            crypto_services=(1 << Service.CIPHER) | (1 << Service.HASH) | (1 << Service.MAC),
            cipher_algo_l=1 << CipherAlgo.AES_CBC,
            hash_algo=1 << HashAlgo.SHA1,
            max_cipher_key_len=MAX_CIPHER_KEY_LEN,
            max_auth_key_len=MAX_AUTH_KEY_LEN,
            max_size=(1 << 64) - 1,
        )
        from qomhost.objects.cryptodev.datapath import DataPath

        context = self.data_context
        assert context is not None
        self.datapath = DataPath(channel, list(self.devs), context, self._datapath_failed)
        self._ready = True

    def _warn(self, text: str) -> None:
        self.report(f"warning: {text}")

    def _fail(self, lines: list[str]) -> None:
        for line in lines:
            self.report(line)
        self.error = lines[-1]
        if self.fatal is not None:
            self.fatal()
        # A library host keeps running: drop the connection, stay not ready.
        self._ready = False
        if self.chardev is not None:
            self.chardev.disconnect()

    def _closed(self) -> None:
        """The backend went away: its sessions are gone; not ready."""
        # Sessions first: a caller who sees the device not ready must also
        # be told that its old sessions are gone, not merely "not ready".
        self._forget_sessions()
        self._ready = False
        self._drop_devs()

    def _datapath_failed(self, text: str) -> None:
        """A ring was found broken: the backend cannot be trusted any more."""
        log.error("%s: %s; disconnecting", self.name, text)
        chardev = self.chardev
        if chardev is None:
            return
        if self.iothread is None or self.context is None:
            chardev.disconnect()
        else:
            # Called on the iothread; the chardev belongs to the main loop.
            self.context.schedule(chardev.disconnect)

    def _drop_devs(self) -> None:
        datapath, self.datapath = self.datapath, None
        if datapath is not None:
            # An iothread's handlers must be gone before it may be deleted;
            # at host shut-down the iothread may have been finalised first.
            iothread = self.iothread
            datapath.close(
                wait=iothread is not None,
                loop_gone=iothread is not None and iothread.context is None,
            )
        for dev in self.devs:
            dev.close()
        self.devs.clear()

    def finalize(self) -> None:
        if self._ready and self.datapath is not None:
            self.datapath.stop_rings()
        self._ready = False
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        self._drop_devs()
        self._forget_sessions()
        if self.iothread is not None:
            self.iothread.detach(self)
            self.iothread = None

    # --- sessions -------------------------------------------------------------------
    def _run(self, what: str, conversation: Any) -> Any:
        from qomhost.vhost_user.frontend import VhostUserError

        if self.channel is None or not self._ready:
            raise CryptoDevError(f"cryptodev backend '{self.name}' is not ready")
        try:
            return self.channel.run(conversation)
        except VhostUserError as err:
            raise CryptoDevError(f"{err.desc} ({what} failed)") from None

    def _create_session(self, info: SymSessionInfo) -> int:
        dev = self.devs[0]
        payload = encode_session(info, LAYOUT_QEMU72)
        reply = self._run("create session", dev.create_crypto_session(payload))
        session_id = session_reply_id(reply, LAYOUT_QEMU72)
        if session_id < 0:
            raise CryptoDevError(f"Bad session id: {session_id}")
        return session_id

    def _close_session(self, session_id: int) -> None:
        self._run("close session", self.devs[0].close_crypto_session(session_id))

    # --- requests -------------------------------------------------------------------
    def _submit(
        self, session: Session, iv: bytes, data: bytes, queue: int | None
    ) -> concurrent.futures.Future[bytes]:
        datapath = self.datapath
        if datapath is None or not self._ready:
            raise CryptoDevError(f"cryptodev backend '{self.name}' is not ready")
        opcode = Opcode.CIPHER_ENCRYPT if session.op == Op.ENCRYPT else Opcode.CIPHER_DECRYPT
        return datapath.submit(opcode, session.info.cipher_alg, session.id, iv, data, queue)

    def _cipher(self, session: Session, iv: bytes, data: bytes, queue: int | None) -> bytes:
        import concurrent.futures

        if not data:
            return b""
        future = self._submit(session, iv, data, queue)
        context = self.data_context
        assert context is not None
        if context.thread_id not in (None, threading.get_native_id()):
            try:
                return future.result(self.request_timeout)
            except concurrent.futures.TimeoutError:
                raise CryptoDevError(
                    f"no answer from the vhost-user backend in {self.request_timeout:g} s"
                ) from None
        # On the loop's own thread nobody else would read the completion:
        # run the loop here until it arrives (or the backend goes away).
        deadline = context.call_later(self.request_timeout, lambda: None)
        try:
            while not future.done():
                context.run_once(blocking=True)
                if context.clock() >= deadline.deadline:
                    break
        finally:
            deadline.cancel()
        if not future.done():
            raise CryptoDevError(
                f"no answer from the vhost-user backend in {self.request_timeout:g} s"
            )
        return future.result()

    def _cipher_many(
        self,
        session: Session,
        items: list[tuple[bytes, bytes]],
        queue: int | None,
        out: Sequence[bytearray | memoryview] | None = None,
    ) -> list[bytes]:
        if self._on_data_thread():
            # On the loop's own thread: one request at a time, each waited
            # for by running the loop here.
            self._datapath()
            return super()._cipher_many(session, items, queue, out)
        return self._send_many(session, items, queue, out)()

    def _submit_many(
        self,
        session: Session,
        items: list[tuple[bytes, bytes]],
        queue: int | None,
        out: Sequence[bytearray | memoryview],
    ) -> PendingRequests:
        if self._on_data_thread():
            self._cipher_many(session, items, queue, out)
            return PendingRequests()
        return PendingRequests(self._send_many(session, items, queue, out))

    def _on_data_thread(self) -> bool:
        """Whether this thread runs the data loop (or the loop runs nowhere yet),
        so that a request can be waited for only by running the loop here."""
        context = self.data_context
        return context is not None and context.thread_id in (None, threading.get_native_id())

    def _datapath(self) -> DataPath:
        datapath = self.datapath
        if datapath is None or not self._ready:
            raise CryptoDevError(f"cryptodev backend '{self.name}' is not ready")
        return datapath

    def _send_many(
        self,
        session: Session,
        items: list[tuple[bytes, bytes]],
        queue: int | None,
        out: Sequence[bytearray | memoryview] | None,
    ) -> Callable[[], list[bytes]]:
        """Make ``items`` available (from a thread other than the data loop's);
        the function that waits for their results."""
        datapath = self._datapath()
        context = self.data_context
        assert context is not None
        sent = [i for i, (_iv, data) in enumerate(items) if data]  # empty ones are not sent
        targets = None if out is None else [memoryview(out[i]).cast("B") for i in sent]
        opcode = Opcode.CIPHER_ENCRYPT if session.op == Op.ENCRYPT else Opcode.CIPHER_DECRYPT
        batch = datapath.submit_many(
            opcode,
            session.info.cipher_alg,
            session.id,
            items if len(sent) == len(items) else [items[i] for i in sent],
            queue,
            context.batch_limit(),
            targets,
        )
        timeout = self.request_timeout + len(items) * 0.001

        def wait() -> list[bytes]:
            try:
                results = batch.wait(timeout)
            except TimeoutError:
                raise CryptoDevError(
                    f"no answer from the vhost-user backend in {self.request_timeout:g} s"
                ) from None
            if len(sent) == len(items):
                return results
            found = iter(results)
            return [next(found) if data else b"" for _iv, data in items]

        return wait

    async def _cipher_async(
        self, session: Session, iv: bytes, data: bytes, queue: int | None
    ) -> bytes:
        import asyncio

        if not data:
            return b""
        future = self._submit(session, iv, data, queue)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.request_timeout)
        except TimeoutError:
            raise CryptoDevError(
                f"no answer from the vhost-user backend in {self.request_timeout:g} s"
            ) from None
