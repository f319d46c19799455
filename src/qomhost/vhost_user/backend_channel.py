"""The frontend's end of the backend-request channel (``SET_SLAVE_REQ_FD``).

With ``ProtocolFeature.SLAVE_REQ`` the frontend hands the backend one end
of a socketpair, on which the backend may send requests of its own
(:class:`~qomhost.vhost_user.protocol.BackendRequest`): an IOTLB miss, a
config space change, a host notifier area for a ring. QEMU 7.2 reads
them as they come and, when the request has ``NEED_REPLY``, answers with
the request's flags turned into a reply's and a u64: 0 when it handled
the request, 1 when it did not.

qomhost's frontends use no IOMMU, no config space notifier and no host
notifiers, so every request is refused -- but read, answered and its fds
closed, so a backend that asks is never left waiting.

:func:`answer` is the decision without I/O; :class:`BackendChannel`
watches the socket on an :class:`~qomhost.aio.context.AioContext`. As in
QEMU, a malformed message, a failed reply or the backend closing its end
closes the channel; the main connection is not affected.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from qomhost.vhost_user.protocol import (
    BACKEND_REQ,
    NEED_REPLY,
    REPLY,
    U64,
    BackendReq,
    BackendRequest,
    VhostUserDecoder,
    VhostUserProtocolError,
    close_fds,
)

if TYPE_CHECKING:
    from qomhost.aio.context import AioContext

__all__ = ["BackendChannel", "answer"]

log = logging.getLogger("qomhost.vhost_user.backend_channel")

#: fds accepted with one read: a host notifier carries one; room for more
#: lets a backend that sends too many be seen and its fds closed
RECV_MAX_FDS = 8


def answer(msg: BackendReq) -> tuple[U64 | None, str | None]:
    """How the frontend answers ``msg``: (the reply, if one is due; the error QEMU prints).

    The reply is a u64, 0 for success and 1 for failure, with the
    request's header flags minus ``NEED_REPLY`` plus ``REPLY``, as QEMU
    7.2 writes it. Every request is refused here; the error line is
    QEMU's where it prints one.
    """
    if msg.request == BackendRequest.IOTLB_MSG:
        # No device of ours sets VIRTIO_F_IOMMU_PLATFORM: there is no
        # IOTLB to look anything up in.
        error: str | None = "vhost-user IOTLB message without an IOMMU: refused"
    elif msg.request == BackendRequest.CONFIG_CHANGE_MSG:
        error = "No config_ops or vhost_dev_config_notifier"
    elif msg.request == BackendRequest.VRING_HOST_NOTIFIER_MSG:
        # QEMU refuses silently unless HOST_NOTIFIER was negotiated, which
        # qomhost's frontends never do.
        error = None
    else:
        error = f"Received unexpected msg type: {msg.request}."
    reply = None
    if msg.flags & NEED_REPLY:
        reply = U64(msg.request, 1, (msg.flags & ~NEED_REPLY) | REPLY)
    return reply, error


class BackendChannel:
    """Read and answer backend requests on ``sock`` (the frontend's end).

    :param sock: this object owns it from now on.
    :param context: the loop whose thread reads it.
    :param report: called with each line QEMU would print.
    """

    def __init__(
        self,
        sock: socket.socket,
        context: AioContext | None,
        report: Callable[[str], None] = log.warning,
    ) -> None:
        self.sock = sock
        self.context = context
        self.report = report
        self.decoder = VhostUserDecoder(BACKEND_REQ)
        #: requests read so far (number, flags), newest last, for logs and tests
        self.handled: list[tuple[int, int]] = []
        self.closed = False
        self._lock = threading.Lock()
        sock.setblocking(False)
        if context is not None:
            on_loop = context.thread_id in (None, threading.get_native_id())
            if on_loop:
                self._watch()
            else:
                context.schedule(self._watch)

    def _watch(self) -> None:
        with self._lock:
            if self.closed or self.context is None:
                return
            self.context.set_fd_handler(self.sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        while not self.closed:
            try:
                data, fds, flags, _addr = socket.recv_fds(
                    self.sock,
                    1 << 12,
                    RECV_MAX_FDS,
                    socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT,
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.close(f"Failed to read from the backend-request channel: {exc}")
                return
            if flags & socket.MSG_CTRUNC:
                close_fds(fds)
                self.close("Too many file descriptors from the backend-request channel")
                return
            if not data:
                close_fds(fds)
                error = self.decoder.eof()
                if error is not None:
                    close_fds(error.fds)
                self.close(error.desc if error is not None else None)
                return
            for item in self.decoder.feed(data, fds):
                if isinstance(item, VhostUserProtocolError):
                    close_fds(item.fds)
                    self.close(item.desc)
                    return
                assert isinstance(item, BackendReq)
                self._handle(item)
                if self.closed:
                    return

    def _handle(self, msg: BackendReq) -> None:
        self.handled.append((msg.request, msg.flags))
        # the frontend uses none of the fds a request may carry
        close_fds(msg.fds)
        reply, error = answer(msg)
        if error is not None:
            self.report(error)
        if reply is None:
            return
        data = reply.encode()
        try:
            sent = self.sock.send(data)
        except OSError:
            sent = -1
        if sent != len(data):
            self.close(f"Failed to send msg reply to slave. Wrote {sent} instead of {len(data)}.")

    def close(self, reason: str | None = None) -> None:
        """Stop watching and close the socket (the backend sees EOF)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        if reason:
            self.report(reason)
        context = self.context
        if context is None or context.thread_id in (None, threading.get_native_id()):
            self._finish()
        else:
            # the loop's thread owns the handler (it may be running it now)
            context.schedule(self._finish)

    def _finish(self) -> None:
        if self.context is not None and self.sock.fileno() >= 0:
            self.context.set_fd_handler(self.sock.fileno(), None)
        self.sock.close()
        error = self.decoder.eof()
        if error is not None:
            close_fds(error.fds)
