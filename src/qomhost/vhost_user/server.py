"""vhost-user backend connections on an :class:`~qomhost.aio.context.AioContext`.

The I/O around :class:`~qomhost.vhost_user.backend.VhostUserBackend`:

* :class:`VhostUserConnection` serves one connected unix socket. Bytes and
  ``SCM_RIGHTS`` fds from each ``recvmsg`` go into a ``BACKEND`` decoder, each
  request into the backend, the replies back out. Each live ring's kick
  eventfd is a handler on the same loop: a kick makes the device serve
  up to ``aio-max-batch`` requests (:meth:`AioContext.batch_limit`), then
  the call eventfd is signalled once for the batch if the driver wants
  to hear of it. A malformed request closes this connection only.
  On a loop that polls (``poll-max-ns`` not 0) each live ring is also a
  poll handler, as QEMU's virtqueue host notifiers are: the loop reads
  the avail index itself for the polling window, with the driver asked
  not to kick (``VRING_USED_F_NO_NOTIFY``, and ``avail_event`` moved out
  of reach), and a request found that way is served without a wake-up.
  The socket and the backend-request channel are watched by ``epoll``
  only, but do not stop the loop from polling the rings: a message waits
  at most for the window to end.
* :class:`VhostUserServer` listens on a unix socket (or takes an
  inherited listening or connected fd) and serves each frontend that
  connects with a device of its own, so a frontend that leaves takes its
  state with it and the next one starts afresh.
* :class:`BackendThread` runs a server on a loop in a thread of its own,
  for tests and for programs that embed a backend::

      with BackendThread(VhostUserCryptoDevice, path="/tmp/vu.sock") as backend:
          ...   # connect a frontend to backend.path

Everything except :class:`BackendThread`'s methods runs in the loop's
thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import stat
import threading
from collections.abc import Callable

from qomhost.aio.context import AioContext, epoll_only
from qomhost.vhost_user.backend import (
    VhostUserBackend,
    VhostUserDevice,
    Vring,
    describe,
)
from qomhost.vhost_user.protocol import (
    BACKEND,
    MAX_MEM_REGIONS,
    Message,
    VhostUserDecoder,
    VhostUserProtocolError,
    close_fds,
)
from qomhost.vhost_user.virtqueue import DeviceVirtqueue, VirtqueueError

__all__ = ["BackendThread", "VhostUserConnection", "VhostUserServer"]

log = logging.getLogger("qomhost.vhost_user.server")

#: fds accepted per recvmsg: no message carries more than a memory table's
#: 8; room for more lets an oversized batch be seen (and refused), not cut
RECV_MAX_FDS = 2 * MAX_MEM_REGIONS
#: bytes asked for per recvmsg: a burst of small requests in one read
RECV_SIZE = 1 << 16
#: a frontend that does not read its replies for this long is dropped
SEND_TIMEOUT_S = 10.0

DeviceFactory = Callable[[], VhostUserDevice]


class VhostUserConnection:
    """One frontend on a connected unix socket.

    :param sock: the connected socket (this object owns it).
    :param device: the device it serves (owned too: reset when it ends).
    :param on_closed: called once, with this connection, when it ends.
    """

    _ids = 0

    def __init__(
        self,
        sock: socket.socket,
        device: VhostUserDevice,
        context: AioContext,
        on_closed: Callable[[VhostUserConnection], None] | None = None,
    ) -> None:
        VhostUserConnection._ids += 1
        self.name = f"conn{VhostUserConnection._ids}"
        self.sock = sock
        self.device = device
        self.context = context
        self.on_closed = on_closed
        self.decoder = VhostUserDecoder(role=BACKEND)
        self.backend = VhostUserBackend(device, listener=self)
        #: why the connection ended: None while open, "" for a clean EOF
        self.close_reason: str | None = None
        self._slave_fd: int | None = None
        sock.setblocking(False)

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    def start(self) -> None:
        """Start reading requests (call from the loop's thread)."""
        log.info("%s: frontend connected", self.name)
        self.context.set_fd_handler(self.sock.fileno(), self._on_readable, io_poll=epoll_only)

    def close(self, reason: str = "") -> None:
        """End the connection: stop the rings, drop every fd, close the socket."""
        if self.close_reason is not None:
            return
        self.close_reason = reason
        # fds of a message not yet complete
        error = self.decoder.eof()
        if error is not None:
            close_fds(error.fds)
        self.context.set_fd_handler(self.sock.fileno(), None)
        self.backend.close()
        self.sock.close()
        if reason:
            log.warning("%s: closed: %s", self.name, reason)
        else:
            log.info("%s: frontend disconnected", self.name)
        if self.on_closed is not None:
            self.on_closed(self)

    # --- requests -----------------------------------------------------------
    def _on_readable(self) -> None:
        # Reads of any size: the decoder gives each fd to the message its
        # chunk ends in, which is where the kernel stops a read that
        # reaches an fd-carrying send.
        while self.close_reason is None:
            try:
                data, fds, flags, _addr = socket.recv_fds(
                    self.sock,
                    RECV_SIZE,
                    RECV_MAX_FDS,
                    socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT,
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.close(f"recvmsg: {exc.strerror or exc}")
                return
            if flags & socket.MSG_CTRUNC:
                close_fds(fds)
                self.close("Too many file descriptors in one message")
                return
            if not data:
                close_fds(fds)
                self._eof()
                return
            items = self.decoder.feed(data, fds)
            for i, item in enumerate(items):
                if isinstance(item, VhostUserProtocolError):
                    close_fds(item.fds)
                    self.close(item.desc)
                elif self.close_reason is None:
                    self._handle(item)
                if self.close_reason is not None:
                    # what came after the request that ended the connection
                    for rest in items[i + 1 :]:
                        close_fds(rest.fds)
                    return

    def _eof(self) -> None:
        error = self.decoder.eof()
        if error is not None:
            close_fds(error.fds)
            self.close(error.desc)
        else:
            self.close()

    def _handle(self, msg: Message) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info("%s: <- %s", self.name, describe(msg))
        try:
            replies = self.backend.handle(msg)
        except VhostUserProtocolError as exc:
            self.close(exc.desc)
            return
        if not replies:
            return
        if log.isEnabledFor(logging.INFO):
            for reply in replies:
                log.info("%s: -> %s", self.name, describe(reply))
        try:
            self._send_all(b"".join(reply.encode() for reply in replies))
        except OSError as exc:
            self.close(f"sendmsg: {exc.strerror or exc}")

    def _send_all(self, data: bytes) -> None:
        """Send a reply, waiting for room if need be.

        Replies are a few bytes and a frontend reads each before it sends
        on, so this waits only on a frontend that stopped reading, which
        is dropped after :data:`SEND_TIMEOUT_S`.
        """
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                poller = select.poll()
                poller.register(self.sock.fileno(), select.POLLOUT)
                if not poller.poll(SEND_TIMEOUT_S * 1000):
                    raise TimeoutError(0, "the frontend does not read its replies") from None

    # --- rings --------------------------------------------------------------
    def ring_started(self, vring: Vring) -> None:
        """Watch the kick eventfd; serve what the driver queued before we looked."""
        assert vring.kick_fd is not None
        queue = vring.queue
        assert queue is not None
        self.context.set_fd_handler(
            vring.kick_fd,
            lambda: self._on_kick(vring),
            io_poll=queue.has_available,
            io_poll_ready=lambda: self._service(vring, queue),
            io_poll_begin=vring.poll_begin,
            io_poll_end=vring.poll_end,
        )
        self.context.schedule(lambda: self._service(vring, queue))

    def ring_stopping(self, vring: Vring) -> None:
        if vring.kick_fd is not None:
            self.context.set_fd_handler(vring.kick_fd, None)

    def slave_channel(self, fd: int | None) -> None:
        """Watch the backend-request channel: its EOF means the device is gone."""
        if self._slave_fd is not None:
            self.context.set_fd_handler(self._slave_fd, None)
        self._slave_fd = fd
        if fd is not None:
            self.context.set_fd_handler(fd, lambda: self._on_slave_readable(fd), io_poll=epoll_only)

    def _on_slave_readable(self, fd: int) -> None:
        # Nothing is expected here (this backend sends no requests), so
        # readable means the frontend closed its end.
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data or fd != self._slave_fd:
            return
        log.info("%s: the frontend closed the backend-request channel: device reset", self.name)
        self.backend.device_gone()

    def _on_kick(self, vring: Vring) -> None:
        fd = vring.kick_fd
        if fd is None:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.eventfd_read(fd)
        self._service(vring, vring.queue)

    def _service(self, vring: Vring, queue: DeviceVirtqueue | None) -> None:
        """Serve one batch; notify once; come back later if there may be more."""
        if self.closed or queue is None or vring.queue is not queue:
            return  # the ring stopped or restarted since this was scheduled
        limit = self.context.batch_limit()
        try:
            served = self.device.process_ring(vring, limit)
        except VirtqueueError as exc:
            # the driver broke its ring: as libvhost-user, give up on the device
            self.close(f"vring {vring.index}: {exc.desc}")
            return
        except Exception as exc:
            # A device bug must not take the other rings and connections down.
            log.exception("%s: vring %d", self.name, vring.index)
            self.close(f"device error on vring {vring.index}: {exc}")
            return
        if served and queue.should_notify():
            vring.notify()
        if served >= limit or vring.rearm():
            # More is waiting: let requests, other rings and other
            # connections in before the next batch.
            self.context.schedule(lambda: self._service(vring, queue))


class VhostUserServer:
    """Serves every frontend that connects, each with a fresh device.

    :param device_factory: makes the device for a new connection.
    :param path: listen on this unix socket path (created; removed by
        :meth:`close`; a stale socket file there is replaced).
    :param sock: or serve this socket: a listening one is accepted from,
        a connected one is served as the only connection.
    """

    def __init__(
        self,
        device_factory: DeviceFactory,
        context: AioContext,
        *,
        path: str | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        if (path is None) == (sock is None):
            raise ValueError("give exactly one of path and sock")
        self.device_factory = device_factory
        self.context = context
        self.path = path
        self.connections: list[VhostUserConnection] = []
        #: connections served so far, closed ones included
        self.served = 0
        #: called with each connection once it has ended
        self.on_connection_closed: Callable[[VhostUserConnection], None] | None = None
        self._listener: socket.socket | None = None
        self._connected: socket.socket | None = None
        if sock is not None:
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            if listening:
                self._listener = sock
            else:
                self._connected = sock
        self._closed = False

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        """Bind (for a path) and start serving; call from the loop's thread.

        :raises OSError: the path cannot be bound.
        """
        if self.path is not None:
            self._listener = _listen_unix(self.path)
        if self._listener is not None:
            self._listener.setblocking(False)
            self.context.set_fd_handler(
                self._listener.fileno(), self._on_accept, io_poll=epoll_only
            )
            log.info("listening on %s", self.path or f"fd {self._listener.fileno()}")
        if self._connected is not None:
            sock, self._connected = self._connected, None
            self._serve(sock)

    def _on_accept(self) -> None:
        if self._listener is None:
            return
        try:
            sock, _addr = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("accept: %s", exc)
            return
        self._serve(sock)

    def _serve(self, sock: socket.socket) -> None:
        os.set_inheritable(sock.fileno(), False)
        conn = VhostUserConnection(sock, self.device_factory(), self.context, self._closed_conn)
        self.connections.append(conn)
        self.served += 1
        conn.start()

    def _closed_conn(self, conn: VhostUserConnection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
        if self.on_connection_closed is not None:
            self.on_connection_closed(conn)

    def close(self) -> None:
        """Drop every connection, stop listening and remove the socket file."""
        if self._closed:
            return
        self._closed = True
        for conn in list(self.connections):
            conn.close()
        if self._listener is not None:
            self.context.set_fd_handler(self._listener.fileno(), None)
            self._listener.close()
            self._listener = None
            if self.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        if self._connected is not None:
            self._connected.close()
            self._connected = None


def _listen_unix(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode) and not _in_use(path):
            # a socket left by a backend that did not exit cleanly
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    return sock


def _in_use(path: str) -> bool:
    """Whether something still listens on the unix socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


class BackendThread:
    """A :class:`VhostUserServer` on its own loop in its own thread.

    :param device_factory: makes each connection's device.
    :param path: the unix socket to listen on.
    :param aio_max_batch: the loop's ``aio-max-batch`` (0: its default).

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    :attr:`server` may be inspected through :meth:`call`, which runs a
    function in the loop's thread.
    """

    def __init__(self, device_factory: DeviceFactory, path: str, *, aio_max_batch: int = 0) -> None:
        self.path = path
        self.context = AioContext("vhost-user-backend")
        self.context.aio_max_batch = aio_max_batch
        self.server = VhostUserServer(device_factory, self.context, path=path)
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> BackendThread:
        """Listen on :attr:`path` (before returning) and serve in a new thread."""
        self.server.start()
        self._thread = threading.Thread(target=self._run, name="vhost-user-backend", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping:
            self.context.run_once(keep_polling=True)

    def call(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` in the loop's thread and return its result."""
        return self.context.submit(fn).result()

    def stop(self) -> None:
        """Close every connection and the socket; end the thread."""
        if self._thread is None:
            return
        self.call(self.server.close)
        self._stopping = True
        self.context.notify()
        self._thread.join()
        self._thread = None
        self.context.close()

    def __enter__(self) -> BackendThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
