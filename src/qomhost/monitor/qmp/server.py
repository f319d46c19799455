"""A QMP monitor on a chardev: the protocol core wired to the main loop."""

from __future__ import annotations

from collections import deque

from qomhost.errors import COMMAND_NOT_FOUND, JsonParseError, QemuError
from qomhost.monitor.commands import check_oob, dispatch
from qomhost.monitor.qmp.protocol import BadRequest, QmpProtocol, greeting

TYPE_CHECKING = False
if TYPE_CHECKING:
    from qomhost.chardev.base import Chardev
    from qomhost.host import Host

__all__ = ["QmpMonitor"]

_NEGOTIATE = "Expecting capabilities negotiation with 'qmp_capabilities'"

#: requests one monitor runs per turn of the main loop when its chardev can
#: hold input back: the rest wait for the next turn, with no more input read
#: meanwhile, so a client that pipelines thousands of commands does not keep
#: the other monitors' clients waiting (QEMU runs one request per turn and
#: stops reading a monitor that has 8 queued)
_BATCH = 8

#: errors after which the rest of the stream cannot be trusted (see chr_read)
_OVERSIZED = frozenset({"JSON token size limit exceeded", "JSON token count limit exceeded"})


class QmpMonitor:
    """Serves QMP to whoever is connected to ``chardev``.

    Each new connection starts in capabilities-negotiation mode with a
    fresh protocol state, as in QEMU.

    Requests are run in order from a queue. While the chardev holds back a
    client's input because its replies pile up unread
    (:attr:`~qomhost.chardev.base.Chardev.input_paused`), requests already
    received wait in the queue too, so what one read of input adds to the
    output stays small whatever the replies weigh; they run once the output
    has drained (``chr_drained``). On a chardev that can hold input back,
    a turn of the loop runs at most ``_BATCH`` requests of one client.
    """

    def __init__(self, host: Host, chardev: Chardev, pretty: bool = False) -> None:
        self.host = host
        self.chardev = chardev
        self.pretty = pretty
        self.protocol = QmpProtocol(pretty)
        self._pending: deque[object] = deque()
        self._next_turn_scheduled = False
        self._commands = host.command_context(self)
        host.qmp_monitors.append(self)
        chardev.attach(host.context, self)

    # --- CharFrontend ---------------------------------------------------------
    def chr_opened(self) -> None:
        from qomhost.host import PACKAGE, QEMU_VERSION

        self.protocol = QmpProtocol(self.pretty)
        self._pending.clear()
        self.chardev.write(self.protocol.encode(greeting(dict(QEMU_VERSION), PACKAGE)))

    def chr_read(self, data: bytes) -> None:
        self._pending.extend(self.protocol.receive_data(data))
        self._run_pending()

    def chr_drained(self) -> None:
        """The client has read its output: run the requests that waited."""
        self._run_pending()

    def chr_closed(self) -> None:
        self.protocol = QmpProtocol(self.pretty)
        self._pending.clear()

    def _run_pending(self) -> None:
        pending = self._pending
        budget = _BATCH if self.chardev.can_hold_input else -1
        while pending and not self.chardev.input_paused:
            if self.host.shutdown_reason is not None:
                # QEMU leaves the main loop at once; queued requests go unanswered.
                return
            if budget == 0:
                if not self._next_turn_scheduled:
                    self._next_turn_scheduled = True
                    self.host.context.schedule(self._next_turn)
                break
            budget -= 1
            item = pending.popleft()
            self._handle(item)
            if isinstance(item, JsonParseError) and item.desc in _OVERSIZED:
                # QEMU answers and reads on, lexing the rest of the oversized
                # message afresh: a string's tail then becomes input of its
                # own, commands hidden in it run, and errors quote up to
                # 64 MiB of it back. The peer is cut off instead (on stdio,
                # which cannot be closed, the rest of this read is dropped).
                pending.clear()
                self.chardev.disconnect()
                return
        if self.chardev.can_hold_input:
            # More input only once what came is done.
            self.chardev.hold_input(bool(pending))

    def _next_turn(self) -> None:
        self._next_turn_scheduled = False
        self._run_pending()

    # --- requests ----------------------------------------------------------------
    def _handle(self, item: object) -> None:
        request = self.protocol.check(item)
        if isinstance(request, BadRequest):
            self.chardev.write(self.protocol.error_reply(request.error, request.id))
            return
        negotiating = not self.protocol.negotiated
        try:
            if negotiating and request.command != "qmp_capabilities":
                raise QemuError(_NEGOTIATE, COMMAND_NOT_FOUND)
            if request.oob:
                check_oob(request.command)
            result = dispatch(self._commands, request.command, request.arguments)
        except QemuError as failure:
            error = failure
            if negotiating and failure.error_class == COMMAND_NOT_FOUND:
                error = QemuError(_NEGOTIATE, COMMAND_NOT_FOUND)
            self.chardev.write(self.protocol.error_reply(error, request.id))
            return
        except Exception:
            import logging  # only now: it is slow to import

            logging.getLogger("qomhost.monitor.qmp").exception("command %s failed", request.command)
            internal = QemuError(f"internal error running {request.command}")
            self.chardev.write(self.protocol.error_reply(internal, request.id))
            return
        self.chardev.write(self.protocol.reply(result, request.id))

    def send_event(self, message: dict[str, object]) -> None:
        """Send an event, if this connection has negotiated capabilities."""
        if self.protocol.negotiated and self.chardev.is_open:
            self.chardev.write(self.protocol.encode(message))
