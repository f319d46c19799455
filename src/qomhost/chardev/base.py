"""Character devices: byte streams that monitors and devices attach to.

A :class:`Chardev` is a QOM object under ``/chardevs`` with at most one
*frontend* (a monitor, a vhost-user device) that it tells about opening,
incoming bytes and closing. Output is buffered and written when the fd is
writable, so a slow reader never blocks the loop. Past
:data:`OUTPUT_HIGH_WATER` unread bytes the chardev stops reading the peer's
input until its output has drained, so a client that sends commands but
never reads the replies is held back by its own socket buffers instead of
growing this process (QEMU 7.2 keeps reading and buffers without limit); a
peer that lets :data:`MAX_OUTPUT_BUFFER` pile up all the same (events, one
huge reply) is disconnected.
"""

from __future__ import annotations

import os

from qomhost.qom.object import Object

# No typing or logging at run time (start-up cost); CharFrontend is a
# Protocol to the type checker and a plain class at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Protocol

    from qomhost.aio.context import AioContext
else:
    Protocol = object

__all__ = ["MAX_OUTPUT_BUFFER", "OUTPUT_HIGH_WATER", "CharFrontend", "Chardev"]


def _log() -> logging.Logger:
    import logging

    return logging.getLogger("qomhost.chardev")


#: a peer that lets more than this pile up unread is disconnected
MAX_OUTPUT_BUFFER = 64 << 20
#: past this much unread output the peer's input is not read until it drains
#: (what one read of input can produce on top stays far below the bound above)
OUTPUT_HIGH_WATER = 1 << 20


class CharFrontend(Protocol):
    """What a chardev tells the object attached to it."""

    def chr_opened(self) -> None:
        """The other end is there (a client connected, or stdio opened)."""

    def chr_read(self, data: bytes) -> None:
        """Bytes arrived."""

    def chr_closed(self) -> None:
        """The other end went away."""

    # Optional: ``chr_drained()``, called when output that had piled up (and
    # paused the input) has all been written.


class Chardev(Object):
    """``chardev``: the abstract character device."""

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.label = ""
        self.context: AioContext | None = None
        self.frontend: CharFrontend | None = None
        self._out = bytearray()
        self._out_fd = -1
        self.is_open = False
        #: input is not being read because output piled up
        self.input_paused = False
        #: input is not being read because the frontend asked (hold_input)
        self.input_held = False

    def attach(self, context: AioContext, frontend: CharFrontend) -> None:
        """Connect ``frontend``; it hears ``chr_opened`` now if already open."""
        self.context = context
        self.frontend = frontend
        self.start()
        if self.is_open:
            frontend.chr_opened()

    def start(self) -> None:
        """Begin reading (called when a frontend attaches)."""

    #: whether :meth:`hold_input` works: input arrives from the loop's fd
    #: handler, which can be turned off (not so for a chardev that is fed
    #: synchronously, such as :class:`qomhost.testing.qmp.MemoryChardev`)
    can_hold_input = False

    def hold_input(self, on: bool) -> None:
        """Stop (or resume) reading the peer's input at the frontend's
        request: a monitor with requests still queued, as QEMU suspends one."""
        if on != self.input_held:
            self.input_held = on
            self._watch_output(bool(self._out))

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the peer; dropped when nobody is connected."""
        if not self.is_open:
            return
        self._write_raw(data)

    def _write_raw(self, data: bytes) -> None:
        """Queue bytes for the fd as they are, open or not (a TLS handshake
        writes before the frontend hears that the peer is there)."""
        if self._out_fd < 0:
            return
        if not self._out:
            try:
                sent = os.write(self._out_fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.disconnect()
                return
            if sent == len(data):
                return
            data = data[sent:]
        self._out += data
        if len(self._out) > MAX_OUTPUT_BUFFER:
            _log().warning("%s: peer is not reading its output; disconnecting", self.label)
            self.disconnect()
            return
        if len(self._out) > OUTPUT_HIGH_WATER:
            self.input_paused = True
        self._watch_output(True)

    def _watch_output(self, on: bool) -> None:
        """Ask for (or stop asking for) a writable callback on the output fd,
        and for a readable one unless :attr:`input_paused`."""

    def _flush(self) -> None:
        while self._out:
            try:
                sent = os.write(self._out_fd, self._out)
            except BlockingIOError:
                return
            except OSError:
                self.disconnect()
                return
            del self._out[:sent]
        # Drained: the peer's input is read again, and the frontend goes on
        # with input it had received before the pause.
        was_paused, self.input_paused = self.input_paused, False
        self._watch_output(False)
        drained = getattr(self.frontend, "chr_drained", None)
        if was_paused and drained is not None:
            drained()

    def flush_blocking(self) -> None:
        """Write out whatever is queued, waiting if needed (at exit)."""
        if self._out_fd < 0 or not self._out:
            return
        os.set_blocking(self._out_fd, True)
        try:
            while self._out:
                sent = os.write(self._out_fd, self._out)
                del self._out[:sent]
        except OSError:
            self._out.clear()
        self.input_paused = False

    def disconnect(self) -> None:
        """Drop the current peer."""

    def _opened(self) -> None:
        self.is_open = True
        if self.frontend is not None:
            self.frontend.chr_opened()

    def _closed(self) -> None:
        was_open = self.is_open
        self.is_open = False
        self._out.clear()
        self.input_paused = self.input_held = False
        if was_open and self.frontend is not None:
            self.frontend.chr_closed()

    def _received(self, data: bytes) -> None:
        if self.frontend is not None:
            self.frontend.chr_read(data)
