"""The frontend end of vhost-user: QEMU 7.2's side of the conversation.

Two layers, as elsewhere in qomhost:

* :class:`VhostDev` is the protocol without I/O. A frontend has one per
  *vhost device*: virtqueues ``vq_index .. vq_index + nvqs - 1`` served by
  one backend connection (a crypto backend has one per data queue, each
  with one virtqueue; a vhost-user-blk frontend has one with all its
  queues). Its conversations are generators that yield the
  :class:`~qomhost.vhost_user.protocol.Message` to send and are sent back
  the reply, when :func:`expects_reply` says one comes::

      dev = VhostDev(vq_index=0, nvqs=1)
      conv = dev.init()
      msg = conv.send(None)             # Empty(GET_FEATURES)
      msg = conv.send(U64(GET_FEATURES, 1 << 30, FLAGS_REPLY))
      ...                               # until StopIteration

  Conversations: :meth:`VhostDev.init` (QEMU's ``vhost_dev_init`` with
  ``vhost_user_backend_init``: the handshake), :meth:`VhostDev.start`
  (features, memory table, rings, enable), :meth:`VhostDev.stop` and the
  crypto session messages. Failures raise :class:`VhostUserError`, whose
  ``lines`` are what QEMU prints, in order.

* :class:`Channel` runs conversations over a socket chardev. It is the
  chardev's frontend (``chr_opened``/``chr_read``/``chr_closed``), decodes
  replies as they arrive on the loop, and lets any thread run a
  conversation: a caller on the loop's own thread (or when no loop runs,
  as during ``complete()``) waits by reading the socket itself, as QEMU
  does; another thread waits for the loop to deliver the reply. One
  conversation runs at a time. When the connection closes, the
  conversation waiting fails with QEMU's read error.

The handshake is QEMU 7.2's, message for message (``GET_FEATURES``, then
with protocol features ``GET_PROTOCOL_FEATURES``, ``SET_PROTOCOL_FEATURES``
(masked with QEMU's known bits, ``CONFIG`` dropped for devices without a
config space, with QEMU's warning), ``GET_QUEUE_NUM`` (MQ, first device
only), ``GET_MAX_MEM_SLOTS`` (CONFIGURE_MEM_SLOTS), ``SET_SLAVE_REQ_FD``
(SLAVE_REQ, first device only, acknowledged with REPLY_ACK), then
``SET_OWNER`` (first device only), ``GET_FEATURES`` and, per virtqueue,
``SET_VRING_CALL`` and ``SET_VRING_ERR`` with an eventfd each). Replies
must have flags 0x5 exactly.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, TypeVar

from qomhost._record import FrozenRecord
from qomhost.errors import QemuError
from qomhost.vhost_user.protocol import (
    F_PROTOCOL_FEATURES,
    FLAGS_NEED_REPLY,
    FLAGS_REQUEST,
    FRONTEND,
    HEADER_SIZE,
    U64,
    CryptoSession,
    Empty,
    MemReg,
    MemTable,
    Message,
    ProtocolFeature,
    Request,
    SlaveReqFd,
    VhostUserDecoder,
    VhostUserProtocolError,
    VringAddr,
    VringFile,
    VringState,
    check_reply,
    close_fds,
)

if TYPE_CHECKING:
    from qomhost.aio.context import AioContext
    from qomhost.chardev.base import Chardev
    from qomhost.vhost_user.backend_channel import BackendChannel

__all__ = [
    "Channel",
    "ChannelError",
    "Conversation",
    "Ring",
    "VhostDev",
    "VhostUserError",
    "expects_reply",
]

T = TypeVar("T")

#: a conversation: yields requests, is sent replies (or None), returns a result
Conversation = Generator[Message, Message | None, T]

#: the protocol features QEMU 7.2 knows; it masks what a backend offers with this
PROTOCOL_FEATURE_MASK = ProtocolFeature.MASK
#: VHOST_USER_F_PROTOCOL_FEATURES as a feature mask
F_PROTOCOL_FEATURES_MASK = 1 << F_PROTOCOL_FEATURES

_REPLY_REQUESTS = frozenset(
    {
        Request.GET_FEATURES,
        Request.GET_PROTOCOL_FEATURES,
        Request.GET_QUEUE_NUM,
        Request.GET_MAX_MEM_SLOTS,
        Request.GET_STATUS,
        Request.GET_VRING_BASE,
        Request.GET_CONFIG,
        Request.CREATE_CRYPTO_SESSION,
    }
)


def expects_reply(msg: Message) -> bool:
    """Whether the frontend reads a reply after sending ``msg``.

    GET requests have one; so has CREATE_CRYPTO_SESSION (QEMU waits for it
    although it does not set NEED_REPLY), and any request sent with
    NEED_REPLY gets a REPLY_ACK.
    """
    return msg.request in _REPLY_REQUESTS or msg.need_reply


class VhostUserError(QemuError):
    """A conversation failed. ``lines`` is what QEMU reports, first to last."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__(lines[-1])
        self.lines = list(lines)

    def chain(self, *more: str) -> VhostUserError:
        """This error with QEMU's next lines appended (the caller's context)."""
        return VhostUserError([*self.lines, *more])


class ChannelError(VhostUserError):
    """The socket failed: a write, a read, or a malformed reply."""


def write_failed(msg: Message) -> ChannelError:
    """QEMU's text for a message that could not be written."""
    size = HEADER_SIZE + len(msg.payload())
    return ChannelError([f"Failed to write msg. Wrote -1 instead of {size}."])


def read_failed(request: int) -> ChannelError:
    """QEMU's text for a reply that never came (the connection closed)."""
    return ChannelError(
        [
            f"Failed to read msg header. Read -1 instead of {HEADER_SIZE}. "
            f"Original request {request}."
        ]
    )


class Ring(FrozenRecord):
    """One virtqueue to start: its index, size, ring addresses (frontend
    user addresses), kick and call eventfds, first available index, and the
    used ring's guest address (``log_guest_addr``, which QEMU always sends)."""

    __slots__ = ("avail", "base", "call_fd", "desc", "index", "kick_fd", "log", "num", "used")
    _fields = ("index", "num", "desc", "avail", "used", "kick_fd", "call_fd", "base", "log")
    index: int
    num: int
    desc: int
    avail: int
    used: int
    kick_fd: int
    call_fd: int
    base: int
    log: int

    def __init__(
        self,
        index: int,
        num: int,
        desc: int,
        avail: int,
        used: int,
        kick_fd: int,
        call_fd: int,
        base: int = 0,
        log: int = 0,
    ) -> None:
        self._init(index, num, desc, avail, used, kick_fd, call_fd, base, log)


def _eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


class VhostDev:
    """One vhost device's side of the protocol, without I/O.

    :param vq_index: the first virtqueue's index on the connection.
    :param nvqs: how many virtqueues the device has.
    :param config_space: the device has a config space (keeps the CONFIG
        protocol feature; without it QEMU drops CONFIG with a warning).
    :param warn: called with each warning QEMU would print.
    :param new_eventfd: makes the eventfds sent with SET_VRING_CALL/ERR.
    :param backend_channel: makes the socket end sent with SET_SLAVE_REQ_FD.
    """

    def __init__(
        self,
        vq_index: int = 0,
        nvqs: int = 1,
        *,
        config_space: bool = False,
        warn: Callable[[str], None] = lambda _text: None,
        new_eventfd: Callable[[], int] = _eventfd,
        backend_channel: Callable[[], int] | None = None,
    ) -> None:
        self.vq_index = vq_index
        self.nvqs = nvqs
        self.config_space = config_space
        self.warn = warn
        self.new_eventfd = new_eventfd
        self.backend_channel = backend_channel
        #: what the backend answered to GET_FEATURES (the second time)
        self.backend_features = 0
        #: the negotiated protocol features (0 without F_PROTOCOL_FEATURES)
        self.protocol_features = 0
        #: GET_QUEUE_NUM's answer (1 without MQ)
        self.max_queues = 1
        self.max_mem_slots = 0
        #: eventfds QEMU keeps per virtqueue until the device starts
        self.call_fds: list[int] = []
        self.err_fds: list[int] = []
        self.started = False

    # --- state -----------------------------------------------------------------
    def has_protocol_feature(self, bit: int) -> bool:
        return bool(self.protocol_features & (1 << bit))

    @property
    def first(self) -> bool:
        """The device of virtqueue 0: only it sends the one-time requests
        (SET_OWNER, GET_QUEUE_NUM, the memory table, SET_SLAVE_REQ_FD)."""
        return self.vq_index == 0

    def close(self) -> None:
        """Release the eventfds (after the connection closed, or at the end)."""
        for fd in (*self.call_fds, *self.err_fds):
            os.close(fd)
        self.call_fds.clear()
        self.err_fds.clear()
        self.started = False

    # --- conversations ------------------------------------------------------------
    def _u64(self, request: int) -> Conversation[int]:
        reply = yield Empty(request)
        assert reply is not None
        try:
            check_reply(reply, request)
        except VhostUserProtocolError as exc:
            raise ChannelError([exc.desc]) from None
        assert isinstance(reply, U64)
        return reply.value

    def _ack(self, msg: Message) -> Conversation[None]:
        """Send ``msg``; with NEED_REPLY, read and check its REPLY_ACK."""
        reply = yield msg
        if not msg.need_reply:
            return
        assert reply is not None
        try:
            check_reply(reply, msg.request)
        except VhostUserProtocolError as exc:
            raise ChannelError([exc.desc]) from None
        assert isinstance(reply, U64)
        if reply.value != 0:
            raise ChannelError([f"Received bad msg ack for request {msg.request}: {reply.value}"])

    def _backend_init(self) -> Conversation[None]:
        features = yield from self._u64(Request.GET_FEATURES)
        self.backend_features = features
        self.protocol_features = 0
        if not features & F_PROTOCOL_FEATURES_MASK:
            return
        offered = yield from self._u64(Request.GET_PROTOCOL_FEATURES)
        offered &= PROTOCOL_FEATURE_MASK
        config = 1 << ProtocolFeature.CONFIG
        if not self.config_space and offered & config:
            self.warn("vhost-user backend supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not.")
            offered &= ~config
        elif self.config_space and not offered & config:
            raise ChannelError(
                [
                    "vhost-user device expecting VHOST_USER_PROTOCOL_F_CONFIG but the "
                    "vhost-user backend does not support it."
                ]
            )
        yield U64(Request.SET_PROTOCOL_FEATURES, offered)
        self.protocol_features = offered
        if self.first and self.has_protocol_feature(ProtocolFeature.MQ):
            self.max_queues = yield from self._u64(Request.GET_QUEUE_NUM)
        if self.has_protocol_feature(ProtocolFeature.CONFIGURE_MEM_SLOTS):
            self.max_mem_slots = yield from self._u64(Request.GET_MAX_MEM_SLOTS)
        if (
            self.first
            and self.has_protocol_feature(ProtocolFeature.SLAVE_REQ)
            and self.backend_channel is not None
        ):
            flags = self._ack_flags()
            yield from self._ack(SlaveReqFd(self.backend_channel(), flags))

    def _ack_flags(self) -> int:
        """Flags of a request QEMU wants acknowledged, when REPLY_ACK allows it."""
        if self.has_protocol_feature(ProtocolFeature.REPLY_ACK):
            return FLAGS_NEED_REPLY
        return FLAGS_REQUEST

    def init(self) -> Conversation[None]:
        """The handshake (``vhost_dev_init``); raises :class:`VhostUserError`."""
        self.close()
        self.max_queues = 1
        try:
            yield from self._backend_init()
        except VhostUserError as err:
            raise err.chain("vhost_backend_init failed: Protocol error") from None
        if self.first:
            try:
                yield Empty(Request.SET_OWNER)
            except VhostUserError as err:
                raise err.chain("vhost_set_owner failed: Invalid argument") from None
        try:
            self.backend_features = yield from self._u64(Request.GET_FEATURES)
        except VhostUserError as err:
            raise err.chain("vhost_get_features failed: Protocol error") from None
        for i in range(self.nvqs):
            index = self.vq_index + i
            for request, fds, name in (
                (Request.SET_VRING_CALL, self.call_fds, "vhost_set_vring_call"),
                (Request.SET_VRING_ERR, self.err_fds, "vhost_set_vring_err"),
            ):
                fd = self.new_eventfd()
                fds.append(fd)
                try:
                    yield VringFile(request, index, fd)
                except VhostUserError as err:
                    raise err.chain(
                        f"{name} failed: Invalid argument (22)",
                        f"Failed to initialize virtqueue {i}: Invalid argument",
                    ) from None

    def start(
        self, features: int, memory: MemTable | None, rings: Sequence[Ring]
    ) -> Conversation[None]:
        """Start the rings: SET_FEATURES (``features`` the backend offered,
        plus F_PROTOCOL_FEATURES when negotiated), the memory (first device
        only: SET_MEM_TABLE, or with CONFIGURE_MEM_SLOTS one ADD_MEM_REG per
        region, as QEMU 7.2; each acknowledged with REPLY_ACK), then per ring
        SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK,
        SET_VRING_CALL, and SET_VRING_ENABLE 1 when protocol features are on.
        """
        acked = features & self.backend_features
        if self.backend_features & F_PROTOCOL_FEATURES_MASK:
            acked |= F_PROTOCOL_FEATURES_MASK
        yield U64(Request.SET_FEATURES, acked)
        if memory is not None and self.first:
            if self.has_protocol_feature(ProtocolFeature.CONFIGURE_MEM_SLOTS):
                for region in memory.regions:
                    yield from self._ack(MemReg(Request.ADD_MEM_REG, region, self._ack_flags()))
            else:
                yield from self._ack(MemTable(memory.regions, self._ack_flags()))
        for ring in rings:
            yield VringState(Request.SET_VRING_NUM, ring.index, ring.num)
            yield VringState(Request.SET_VRING_BASE, ring.index, ring.base)
            yield VringAddr(ring.index, ring.desc, ring.used, ring.avail, ring.log)
            yield VringFile(Request.SET_VRING_KICK, ring.index, ring.kick_fd)
            yield VringFile(Request.SET_VRING_CALL, ring.index, ring.call_fd)
        if self.backend_features & F_PROTOCOL_FEATURES_MASK:
            for ring in rings:
                yield VringState(Request.SET_VRING_ENABLE, ring.index, 1)
        self.started = True

    def stop(self, indexes: Sequence[int]) -> Conversation[list[int]]:
        """Stop the rings: SET_VRING_ENABLE 0 (with protocol features), then
        GET_VRING_BASE for each; returns the backend's next available index per ring."""
        if self.backend_features & F_PROTOCOL_FEATURES_MASK:
            for index in indexes:
                yield VringState(Request.SET_VRING_ENABLE, index, 0)
        bases = []
        for index in indexes:
            reply = yield VringState(Request.GET_VRING_BASE, index, 0)
            assert reply is not None
            try:
                check_reply(reply, Request.GET_VRING_BASE, expect=VringState)
            except VhostUserProtocolError as exc:
                raise ChannelError([exc.desc]) from None
            assert isinstance(reply, VringState)
            bases.append(reply.num)
        self.started = False
        return bases

    # --- crypto sessions --------------------------------------------------------------
    def create_crypto_session(self, payload: bytes) -> Conversation[bytes]:
        """CREATE_CRYPTO_SESSION: returns the reply payload (the caller reads the id)."""
        if not self.has_protocol_feature(ProtocolFeature.CRYPTO_SESSION):
            raise VhostUserError(["vhost-user trying to send unhandled ioctl"])
        reply = yield CryptoSession(payload)
        assert reply is not None
        try:
            check_reply(reply, Request.CREATE_CRYPTO_SESSION, expect=CryptoSession)
        except VhostUserProtocolError as exc:
            raise ChannelError([exc.desc]) from None
        assert isinstance(reply, CryptoSession)
        return reply.session

    def close_crypto_session(self, session_id: int) -> Conversation[None]:
        """CLOSE_CRYPTO_SESSION: no reply is read, as in QEMU."""
        if not self.has_protocol_feature(ProtocolFeature.CRYPTO_SESSION):
            raise VhostUserError(["vhost-user trying to send unhandled ioctl"])
        yield U64(Request.CLOSE_CRYPTO_SESSION, session_id & ((1 << 64) - 1))


# --- the I/O: conversations over a socket chardev ---------------------------------------


def _on_thread(context: AioContext | None) -> bool:
    """Whether the caller runs on ``context``'s thread (or no loop runs it yet)."""
    return context is None or context.thread_id in (None, threading.get_native_id())


class Channel:
    """Conversations over a socket chardev; the chardev's frontend.

    :param on_open: called (on the loop) when a backend connects; the
        handshake goes there.
    :param on_close: called (on the loop) when it goes away.
    :param reply_timeout: seconds to wait for one reply before giving up
        (QEMU waits forever; a backend that never answers would hang it).
    """

    def __init__(
        self,
        chardev: Chardev,
        context: AioContext,
        *,
        on_open: Callable[[], None] = lambda: None,
        on_close: Callable[[], None] = lambda: None,
        reply_timeout: float = 10.0,
    ) -> None:
        self.chardev = chardev
        self.context = context
        self.on_open = on_open
        self.on_close = on_close
        self.reply_timeout = reply_timeout
        self._decoder = VhostUserDecoder(FRONTEND)
        self._replies: deque[Message] = deque()
        self._cond = threading.Condition()
        self._lock = threading.Lock()
        #: counts connections; a waiter fails when it changes under it
        self.generation = 0
        self.connected = False
        self._failure: str | None = None
        #: the backend-request channels handed out on this connection
        self.backend_channels: list[BackendChannel] = []
        self._sent_ends: list[socket.socket] = []

    # --- chardev events (on the loop) ---------------------------------------------------
    def chr_opened(self) -> None:
        with self._cond:
            self.generation += 1
            self.connected = True
            self._failure = None
            self._drop_decoder()
            self._replies.clear()
        self.on_open()

    def _drop_decoder(self) -> None:
        """A fresh decoder; close the fds of a reply the old one never finished."""
        error = self._decoder.eof()
        if error is not None:
            close_fds(error.fds)
        self._decoder = VhostUserDecoder(FRONTEND)

    def chr_read(self, data: bytes) -> None:
        take_fds = getattr(self.chardev, "take_fds", None)
        fds: list[int] = take_fds() if take_fds is not None else []
        for item in self._decoder.feed(data, fds):
            if isinstance(item, VhostUserProtocolError):
                close_fds(item.fds)
                with self._cond:
                    self._failure = item.desc
                    self._cond.notify_all()
                # The stream cannot be read past a malformed message.
                self.chardev.disconnect()
                return
            with self._cond:
                self._replies.append(item)
                self._cond.notify_all()

    def chr_closed(self) -> None:
        with self._cond:
            self.connected = False
            self._drop_decoder()
            self._cond.notify_all()
        self._close_backend_channels()
        self.on_close()

    # --- the backend request channel -------------------------------------------------------
    def backend_channel(self) -> int:
        """A socketpair for SET_SLAVE_REQ_FD: the backend's end goes in the message.

        Our end is read on this channel's loop by a
        :class:`~qomhost.vhost_user.backend_channel.BackendChannel`, which
        answers every backend request (refusing them all: qomhost's
        frontends have no IOMMU, config notifier or host notifiers). It
        stays open while the connection lasts, so the backend sees it close
        only when the device goes.
        """
        from qomhost.vhost_user.backend_channel import BackendChannel

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.backend_channels.append(BackendChannel(ours, self.context))
        self._sent_ends.append(theirs)
        return theirs.fileno()

    def _close_backend_channels(self) -> None:
        for channel in self.backend_channels:
            channel.close()
        for sock in self._sent_ends:
            sock.close()
        self.backend_channels.clear()
        self._sent_ends.clear()

    # --- running conversations ---------------------------------------------------------
    def run(self, conversation: Conversation[T]) -> T:
        """Run ``conversation`` to its end; thread-safe, one at a time.

        :raises VhostUserError: what QEMU would report; a closed
            connection shows as QEMU's read or write error.
        """
        self._acquire()
        try:
            return self._drive(conversation)
        finally:
            self._lock.release()

    def _acquire(self) -> None:
        if not _on_thread(self.context):
            self._lock.acquire()
            return
        # On the loop's thread another thread's conversation may be waiting
        # for a reply that only this thread can read: keep reading meanwhile.
        while not self._lock.acquire(timeout=0.001):
            self._pump(0)

    def _pump(self, timeout: float) -> None:
        """Read what the peer sent, on the loop's thread (QEMU's blocking read)."""
        wait_readable = getattr(self.chardev, "wait_readable", None)
        if wait_readable is None:
            time.sleep(timeout)
            return
        wait_readable(timeout)

    def _drive(self, conversation: Conversation[T]) -> T:
        generation = self.generation
        try:
            msg = conversation.send(None)
            while True:
                try:
                    self._send(msg, generation)
                    reply = (
                        self._await_reply(msg.request, generation) if expects_reply(msg) else None
                    )
                except ChannelError as err:
                    msg = conversation.throw(err)
                    continue
                msg = conversation.send(reply)
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            conversation.close()
            for sock in self._sent_ends:
                sock.close()
            self._sent_ends.clear()

    def _send(self, msg: Message, generation: int) -> None:
        if not self.connected or generation != self.generation:
            raise write_failed(msg)
        send_with_fds = getattr(self.chardev, "send_with_fds", None)
        if send_with_fds is None:
            # Only a socket chardev carries descriptors; QEMU checks that
            # before every message, whether it has descriptors or not.
            raise ChannelError(["Failed to set msg fds."])
        try:
            send_with_fds(msg.encode(), list(msg.fds))
        except OSError:
            raise write_failed(msg) from None

    def _await_reply(self, request: int, generation: int) -> Message:
        deadline = time.monotonic() + self.reply_timeout
        pump = _on_thread(self.context)
        while True:
            with self._cond:
                # Replies decoded before a malformed one answer their own
                # requests first; QEMU, reading one reply per request,
                # would fail only at the bad one.
                if self._replies and generation == self.generation:
                    return self._replies.popleft()
                if self._failure is not None:
                    raise ChannelError([self._failure])
                if not self.connected or generation != self.generation:
                    raise read_failed(request)
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if not pump:
                    self._cond.wait(left)
                    continue
            self._pump(left)
        # A late reply would be taken for the next request's: the stream is
        # out of step for good, so the connection goes.
        self._hang_up()
        raise ChannelError(
            [f"No reply to vhost-user request {request} in {self.reply_timeout:g} s"]
        )

    def _hang_up(self) -> None:
        if _on_thread(self.context) or self.context is None:
            self.chardev.disconnect()
        else:
            self.context.schedule(self.chardev.disconnect)

    def close(self) -> None:
        """Detach from the chardev and drop the connection (``object-del``)."""
        if self.chardev.frontend is self:
            self.chardev.frontend = None
        self.chardev.disconnect()
        with self._cond:
            self.connected = False
            self._cond.notify_all()
        self._close_backend_channels()
