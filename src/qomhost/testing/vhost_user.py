"""A scripted vhost-user backend that records what a frontend sends.

:class:`RecordingBackend` listens on a unix socket in a thread of its own,
answers the requests that need an answer with values the test chose
(features, protocol features, queue count, session ids, ...), and writes
down every message it received as a :class:`Received` (request number,
header flags, payload and how many file descriptors came with it). It
does no device work: it is the peer for tests of a frontend's
conversation, such as comparing what QEMU 7.2 and qomhost send for the
same command line::

    with RecordingBackend(path, protocol_features=1 << 7) as backend:
        ...  # start a frontend that connects to ``path``
        backend.wait_for(lambda got: len(got) >= 6)
    [m.name for m in backend.received]
    # ['GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES', ...]

Messages are read raw, not through :mod:`qomhost.vhost_user.protocol`, so
that a fault in the codec cannot hide itself from a test that uses both.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType

from qomhost._record import FrozenRecord
from qomhost.vhost_user.protocol import F_PROTOCOL_FEATURES, Request, request_name

__all__ = ["Received", "RecordingBackend"]

_HDR = struct.Struct("<III")
_U64 = struct.Struct("<Q")
_REPLY = 0x5
_NEED_REPLY = 0x8
_U64_ANSWERS = (
    Request.GET_FEATURES,
    Request.GET_PROTOCOL_FEATURES,
    Request.GET_QUEUE_NUM,
    Request.GET_MAX_MEM_SLOTS,
)


class Received(FrozenRecord):
    """One message as it arrived: ``connection`` counts accepted peers from 0."""

    __slots__ = ("connection", "flags", "nfds", "payload", "request")
    _fields = ("connection", "request", "flags", "payload", "nfds")
    connection: int
    request: int
    flags: int
    payload: bytes
    nfds: int

    def __init__(self, connection: int, request: int, flags: int, payload: bytes, nfds: int):
        self._init(connection, request, flags, bytes(payload), nfds)

    @property
    def name(self) -> str:
        return request_name(self.request)

    @property
    def u64(self) -> int:
        """The payload read as one u64 (index of SET_VRING_CALL, a feature set, ...)."""
        value: int = _U64.unpack_from(self.payload)[0]
        return value

    def summary(self) -> tuple[int, int, int, int]:
        """``(request, flags, size, nfds)``: what is compared between two frontends."""
        return (self.request, self.flags, len(self.payload), self.nfds)


class RecordingBackend:
    """A vhost-user backend on ``path`` that answers as told and records everything.

    :param features: the GET_FEATURES answer (default: bit 30, protocol features).
    :param protocol_features: the GET_PROTOCOL_FEATURES answer.
    :param queue_num: the GET_QUEUE_NUM answer.
    :param max_mem_slots: the GET_MAX_MEM_SLOTS answer.
    :param session_ids: answers to CREATE_CRYPTO_SESSION, in turn (default
        0, 1, 2, ...); a negative id reports failure.
    :param reply_flags: header flags of every answer (0x5 is right).
    :param close_after: hang up after this many messages of a connection.
    """

    def __init__(
        self,
        path: str,
        *,
        features: int = 1 << F_PROTOCOL_FEATURES,
        protocol_features: int = 0,
        queue_num: int = 1,
        max_mem_slots: int = 8,
        session_ids: list[int] | None = None,
        reply_flags: int = _REPLY,
        close_after: int | None = None,
    ) -> None:
        self.path = path
        self.features = features
        self.protocol_features = protocol_features
        self.queue_num = queue_num
        self.max_mem_slots = max_mem_slots
        self.session_ids = list(session_ids) if session_ids is not None else None
        self.reply_flags = reply_flags
        self.close_after = close_after
        self.received: list[Received] = []
        self.connections = 0
        self._next_session = 0
        self._cond = threading.Condition()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._listener.bind(path)
        self._listener.listen(4)
        self._peer: socket.socket | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._serve, name="vhost-user recorder", daemon=True)
        self._thread.start()

    # --- control --------------------------------------------------------------------
    def __enter__(self) -> RecordingBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening and drop the current peer."""
        self._stop = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.hang_up()
        self._thread.join(5)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def hang_up(self) -> None:
        """Close the current connection (the frontend sees the backend go away)."""
        peer = self._peer
        if peer is not None:
            with contextlib.suppress(OSError):
                peer.shutdown(socket.SHUT_RDWR)

    def wait_for(self, done: Callable[[list[Received]], bool], timeout: float = 10.0) -> bool:
        """Wait until ``done(received)`` holds; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done(self.received):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def settle(self, quiet: float = 0.3, timeout: float = 10.0) -> list[Received]:
        """Wait until nothing has arrived for ``quiet`` seconds; all messages so far."""
        deadline = time.monotonic() + timeout
        count = -1
        while time.monotonic() < deadline:
            with self._cond:
                if len(self.received) == count:
                    break
                count = len(self.received)
            time.sleep(quiet)
        with self._cond:
            return list(self.received)

    # --- the connection -----------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop:
            try:
                peer, _addr = self._listener.accept()
            except OSError:
                return
            self._peer = peer
            try:
                self._converse(peer, self.connections)
            except OSError:
                pass
            finally:
                self._peer = None
                peer.close()
                with self._cond:
                    self.connections += 1
                    self._cond.notify_all()

    def _recv_exact(self, peer: socket.socket, size: int, fds: list[int]) -> bytes | None:
        data = b""
        space = socket.CMSG_SPACE(16 * 4)
        while len(data) < size:
            chunk, anc, _flags, _addr = peer.recvmsg(size - len(data), space)
            if not chunk:
                return None
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = array.array("i")
                    got.frombytes(raw[: len(raw) - len(raw) % 4])
                    fds.extend(got)
            data += chunk
        return data

    def _converse(self, peer: socket.socket, connection: int) -> None:
        # Descriptors are kept open until the connection ends: closing the
        # backend-request socket at once would show the frontend an EOF there.
        kept: list[int] = []
        try:
            self._converse_on(peer, connection, kept)
        finally:
            for fd in kept:
                os.close(fd)

    def _converse_on(self, peer: socket.socket, connection: int, kept: list[int]) -> None:
        count = 0
        while True:
            fds: list[int] = []
            head = self._recv_exact(peer, _HDR.size, fds)
            if head is None:
                kept.extend(fds)
                return
            request, flags, size = _HDR.unpack(head)
            payload = self._recv_exact(peer, size, fds) if size else b""
            kept.extend(fds)
            if payload is None:
                return
            with self._cond:
                self.received.append(Received(connection, request, flags, payload, len(fds)))
                self._cond.notify_all()
            count += 1
            answer = self._answer(request, flags, payload)
            if answer is not None:
                peer.sendall(_HDR.pack(request, self.reply_flags, len(answer)) + answer)
            if self.close_after is not None and count >= self.close_after:
                return

    def _answer(self, request: int, flags: int, payload: bytes) -> bytes | None:
        if request in _U64_ANSWERS:
            value = {
                Request.GET_FEATURES: self.features,
                Request.GET_PROTOCOL_FEATURES: self.protocol_features,
                Request.GET_QUEUE_NUM: self.queue_num,
                Request.GET_MAX_MEM_SLOTS: self.max_mem_slots,
            }[request]
            return _U64.pack(value)
        if request == Request.CREATE_CRYPTO_SESSION:
            if self.session_ids:
                session_id = self.session_ids.pop(0)
            else:
                session_id = self._next_session
                self._next_session += 1
            return struct.pack("<q", session_id) + payload[8:]
        if request == Request.GET_VRING_BASE:
            return payload[:4] + bytes(4)
        if flags & _NEED_REPLY:
            return _U64.pack(0)
        return None
