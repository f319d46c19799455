"""``chardev-socket``: a unix or TCP stream socket, as server or client.

As in QEMU, a server accepts one peer at a time (others wait in the
listen backlog until it leaves), ``wait=on`` makes start-up block until the
first peer connects, and a client with ``reconnect=N`` retries every ``N``
seconds after a failed connect or a disconnect. Received file descriptors
(``SCM_RIGHTS``) are kept for the frontend to take with :meth:`take_fds`.

With ``tls_creds`` (``-chardev socket,...,tls-creds=ID[,tls-authz=ID]``,
TCP only) each connection first runs a TLS handshake on the loop
(:mod:`qomhost.chardev.tls`). The frontend hears of the peer only once the
handshake is over and, on a server, the client's certificate has passed
``verify-peer`` and the ``tls-authz`` object: a refused client is
disconnected before the monitor writes a byte, and the reason is logged on
``qomhost.chardev`` at INFO level (QEMU 7.2 prints nothing).
"""

from __future__ import annotations

import array
import os
import socket

from qomhost._record import Record
from qomhost.chardev.base import Chardev
from qomhost.errors import QemuError
from qomhost.qom.object import ObjectProperty

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from qomhost.chardev.tls import Authorize, TlsCredentials, TlsSession

__all__ = ["ChardevSocket", "SocketAddress"]

_MAX_FDS = 16
#: ancillary buffer for the most file descriptors one message may carry
_ANC_SPACE = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)


class SocketAddress(Record):
    """A unix path, or a TCP host and port (with its family once bound)."""

    __slots__ = ("family", "host", "path", "port")
    _fields = ("path", "host", "port", "family")

    def __init__(
        self,
        path: str | None = None,
        host: str | None = None,
        port: str | None = None,
        family: str | None = None,
    ) -> None:
        self.path = path
        self.host = host
        self.port = port
        #: "ipv4" or "ipv6" for an address read back from a bound socket
        self.family = family

    def to_qapi(self) -> dict[str, object]:
        if self.path is not None:
            return {"path": self.path, "type": "unix"}
        address: dict[str, object] = {"host": self.host, "port": self.port}
        if self.family is not None:
            address[self.family] = True
        address["type"] = "inet"
        return address

    def describe(self) -> str:
        """``unix:PATH`` or ``tcp:HOST:PORT``, as QEMU names the address."""
        if self.path is not None:
            return f"unix:{self.path}"
        return f"tcp:{self.host}:{self.port}"

    def target(self) -> str:
        return self.path if self.path is not None else f"{self.host}:{self.port}"


#: the mode of a listening unix socket's file (before the umask)
UNIX_SOCKET_MODE = 0o600


class ChardevSocket(Chardev):
    """A stream socket chardev. Configure with :meth:`configure`, then :meth:`open`."""

    can_hold_input = True

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.address = SocketAddress()
        self.server = False
        self.wait = True
        self.reconnect = 0
        self.nodelay = False
        self._listener: socket.socket | None = None
        self._sock: socket.socket | None = None
        self._fds: list[int] = []
        self._reconnect_timer: Any = None
        self._finalized = False
        #: TLS credentials (``tls-creds``), and the ``tls-authz`` check: it
        #: gets a client's DN and looks the authz object up each time, as QEMU does
        self.tls_creds: TlsCredentials | None = None
        self.tls_authorize: Authorize | None = None
        self._tls: TlsSession | None = None
        #: why the last TLS peer was refused (also logged)
        self.tls_failure: str | None = None

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        return [
            ObjectProperty("addr", "SocketAddress", getter=lambda obj: obj.address.to_qapi()),
            # Connected once the frontend has the peer: after TLS, if any.
            ObjectProperty("connected", "bool", getter=lambda obj: obj.is_open),
        ]

    # --- set-up ---------------------------------------------------------------
    def open(self) -> None:
        """Listen or connect, as configured. Errors are QEMU's."""
        if self.server:
            self._listen()
        else:
            try:
                self._connect()
            except QemuError as err:
                if not self.reconnect:
                    raise
                # Reported once, by whoever opened the chardev (as QEMU does).
                self.connect_failed_message = (
                    f"Unable to connect character device {self.label}: {err.desc}"
                )

    connect_failed_message: str | None = None

    def _family(self) -> tuple[int, object]:
        if self.address.path is not None:
            return socket.AF_UNIX, self.address.path
        host = self.address.host or "0.0.0.0"
        try:
            infos = socket.getaddrinfo(
                host, self.address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except socket.gaierror as exc:
            raise QemuError(
                f"address resolution failed for {host}:{self.address.port}: {exc.strerror}"
            ) from None
        family, _type, _proto, _name, sockaddr = infos[0]
        return family, sockaddr

    def _listen(self) -> None:
        family, addr = self._family()
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            if family == socket.AF_UNIX:
                assert isinstance(addr, str)
                try:
                    os.unlink(addr)
                except FileNotFoundError:
                    pass
                # Anyone who can connect can run every monitor command, so the
                # socket is private (QEMU leaves it to the umask, usually 0755:
                # docs/compatibility.md). The bound file takes the socket's
                # mode, set before bind so there is no window without it.
                os.fchmod(sock.fileno(), UNIX_SOCKET_MODE)
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)  # type: ignore[arg-type]
            sock.listen(1)
        except OSError as exc:
            sock.close()
            raise QemuError(
                f"Failed to bind socket to {self.address.target()}: {os.strerror(exc.errno or 0)}"
                if family == socket.AF_UNIX
                else f"Failed to bind socket: {os.strerror(exc.errno or 0)}"
            ) from None
        if family != socket.AF_UNIX:
            # QEMU shows the address the listener is bound to (an empty host
            # becomes 0.0.0.0, port 0 the port the kernel chose).
            bound_host, bound_port = sock.getsockname()[:2]
            name = "ipv6" if family == socket.AF_INET6 else "ipv4"
            self.address = SocketAddress(host=bound_host, port=str(bound_port), family=name)
        sock.setblocking(False)
        self._listener = sock

    def wait_for_peer(self) -> None:
        """Block until the first peer connects (``server=on,wait=on``)."""
        assert self._listener is not None
        self._listener.setblocking(True)
        try:
            conn, _addr = self._listener.accept()
        finally:
            self._listener.setblocking(False)
        self._attach_peer(conn)

    def _connect(self) -> None:
        family, addr = self._family()
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(addr)  # type: ignore[arg-type]
        except OSError as exc:
            sock.close()
            raise QemuError(
                f"Failed to connect to '{self.address.target()}': {os.strerror(exc.errno or 0)}"
            ) from None
        self._attach_peer(sock)

    def _attach_peer(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if self.nodelay and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._out_fd = sock.fileno()
        if self.context is not None:
            self.context.set_fd_handler(sock.fileno(), self._on_readable)
        if self.tls_creds is not None:
            self._start_tls()
        else:
            self._opened()

    # --- TLS ------------------------------------------------------------------
    def _start_tls(self) -> None:
        from qomhost.chardev.tls import TlsError, TlsSession, tls_context

        creds = self.tls_creds
        assert creds is not None
        try:
            # QEMU makes a new session for each peer, reading the
            # credentials' endpoint, verify-peer and priority again.
            if creds.endpoint != ("server" if self.server else "client"):
                raise TlsError("Credentials endpoint doesn't match session")
            context = tls_context(creds, self.server)
            self._tls = TlsSession(context, self.server, self.address.host)
        except (TlsError, OSError) as exc:
            self._tls_refused(exc.desc if isinstance(exc, TlsError) else str(exc))
            return
        self._tls_handshake()

    def _tls_handshake(self) -> None:
        import ssl

        from qomhost.chardev.tls import TlsError, check_peer, check_server

        session = self._tls
        assert session is not None
        try:
            done = session.handshake()
        except ssl.SSLError as exc:
            # The alert OpenSSL queued is not sent: QEMU just closes.
            self._tls_refused(f"TLS handshake failed: {exc.reason or exc}")
            return
        self._write_raw(session.pending())
        if not done:
            return
        assert self.tls_creds is not None
        try:
            if self.server:
                check_peer(session, self.tls_creds, self.tls_authorize)
            else:
                check_server(session, self.tls_creds, self.address.host)
        except TlsError as err:
            self._tls_refused(err.desc)
            return
        self._opened()
        # Records that came with the last handshake flight.
        if self._tls is session:
            self._tls_deliver()

    def _tls_deliver(self) -> None:
        import ssl

        session = self._tls
        assert session is not None
        try:
            data = session.read()
        except ssl.SSLError as exc:
            self._tls_refused(f"TLS read failed: {exc.reason or exc}")
            return
        self._write_raw(session.pending())
        if data:
            self._received(data)
        if session.closed and self._tls is session:
            self.disconnect()

    def _tls_refused(self, reason: str) -> None:
        from qomhost.chardev.base import _log

        self.tls_failure = reason
        _log().info("chardev %s: %s", self.label, reason)
        self.disconnect()

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the peer (encrypted on a TLS connection)."""
        if not self.is_open:
            return
        if self._tls is not None:
            import ssl

            try:
                data = self._tls.encrypt(data)
            except ssl.SSLError:
                self.disconnect()
                return
        self._write_raw(data)

    # --- running --------------------------------------------------------------
    def start(self) -> None:
        assert self.context is not None
        if self._sock is not None:
            self.context.set_fd_handler(self._sock.fileno(), self._on_readable)
        elif self._listener is not None:
            self.context.set_fd_handler(self._listener.fileno(), self._on_accept)
        elif self.reconnect and not self.server:
            self._schedule_reconnect()

    def _on_accept(self) -> None:
        assert self._listener is not None and self.context is not None
        try:
            conn, _addr = self._listener.accept()
        except BlockingIOError:
            return
        # One peer at a time: stop accepting until this one leaves.
        self.context.set_fd_handler(self._listener.fileno(), None)
        self._attach_peer(conn)

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data, ancdata, _flags, _addr = sock.recvmsg(1 << 16, _ANC_SPACE)
        except BlockingIOError:
            return
        except OSError:
            data, ancdata = b"", []
        if ancdata:
            fds = array.array("i")
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            for fd in fds:
                os.set_inheritable(fd, False)
                self._fds.append(fd)
        if not data:
            self.disconnect()
            return
        if self._tls is not None:
            self._tls.receive(data)
            if self._tls.established:
                self._tls_deliver()
            else:
                self._tls_handshake()
            return
        self._received(data)

    def wait_readable(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the peer, then read as the loop would.

        For a frontend that must have an answer before it returns, such as
        vhost-user, which QEMU also reads synchronously: what arrives goes
        to the frontend's ``chr_read`` (or ``chr_closed``) as usual. Call it
        only from the thread that runs this chardev's loop. False when
        nothing arrived in time or nobody is connected.
        """
        sock = self._sock
        if sock is None:
            return False
        import select

        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        if not poller.poll(max(0, int(timeout * 1000))):
            return False
        self._on_readable()
        return True

    def take_fds(self) -> list[int]:
        """File descriptors received so far; the caller now owns them."""
        fds, self._fds = self._fds, []
        return fds

    def send_with_fds(self, data: bytes, fds: list[int]) -> None:
        """Send ``data`` with ``fds`` attached (blocking; used for small messages)."""
        if self._sock is None:
            raise OSError("not connected")
        self.flush_blocking()
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        self._sock.setblocking(True)
        try:
            self._sock.sendmsg([data], anc if fds else [])
        finally:
            self._sock.setblocking(False)

    def _watch_output(self, on: bool) -> None:
        if self.context is None or self._sock is None:
            return
        reader = None if self.input_paused or self.input_held else self._on_readable
        # A paused peer that hangs up is noticed when its output fails to go.
        self.context.set_fd_handler(self._sock.fileno(), reader, self._flush if on else None)

    def disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self._tls = None
        if self.context is not None:
            self.context.set_fd_handler(sock.fileno(), None)
        self._out_fd = -1
        sock.close()
        for fd in self.take_fds():
            os.close(fd)
        self._closed()
        if self._finalized:
            return
        if self._listener is not None and self.context is not None:
            self.context.set_fd_handler(self._listener.fileno(), self._on_accept)
        elif self.reconnect:
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self.context is not None and not self._finalized:
            self._reconnect_timer = self.context.call_later(self.reconnect, self._try_reconnect)

    def _try_reconnect(self) -> None:
        self._reconnect_timer = None
        if self._sock is not None or self._finalized:
            return
        try:
            self._connect()
        except QemuError:
            self._schedule_reconnect()

    def describe(self) -> str:
        """The ``filename`` QEMU shows for this chardev."""
        state = "" if self.is_open else "disconnected:"
        suffix = ",server=on" if self.server else ""
        return f"{state}{self.address.describe()}{suffix}"

    def finalize(self) -> None:
        self._finalized = True
        if self._reconnect_timer is not None:
            self._reconnect_timer.cancel()
        self.flush_blocking()
        self.disconnect()
        if self._listener is not None:
            if self.context is not None:
                self.context.set_fd_handler(self._listener.fileno(), None)
            self._listener.close()
            self._listener = None
            if self.address.path is not None:
                # A listening unix socket leaves with its listener, as in QEMU.
                try:
                    os.unlink(self.address.path)
                except OSError:
                    pass
