"""In-memory monitor connections: drive QMP and HMP without sockets.

A :class:`MemoryChardev` is a chardev whose peer is the test itself: the
test feeds it bytes with :meth:`MemoryChardev.feed`, and whatever the
monitor writes is collected for :meth:`MemoryChardev.take_output`. The
clients attach a real monitor to one:

* :class:`QmpTestClient` -- a :class:`~qomhost.monitor.qmp.server.QmpMonitor`;
  QMP commands run synchronously while input is fed, so a reply is there as
  soon as :meth:`QmpTestClient.execute` returns, with no event loop running::

      host = Host()
      qmp = QmpTestClient(host, negotiate=True)
      qmp.execute("object-add", {"qom-type": "secret", "id": "s0", "data": "x"})
      # {'return': {}}

* :class:`HmpTestClient` -- a :class:`~qomhost.monitor.hmp_server.HmpMonitor`,
  with its line editor, prompt and echo::

      hmp = HmpTestClient(host)
      hmp.command("qom-get /objects/s0 data")   # '"x"\\r\\n'

Replies are parsed with the standard library's decoder (plus QEMU's spelling
of non-finite numbers, ``inf`` and ``nan``), not with qomhost's own JSON code,
so that a fault there cannot hide itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qomhost.chardev.base import Chardev
from qomhost.monitor.hmp_server import PROMPT, HmpMonitor
from qomhost.monitor.qmp.server import QmpMonitor

if TYPE_CHECKING:
    from types import TracebackType

    from qomhost.host import Host

__all__ = [
    "HmpTestClient",
    "MemoryChardev",
    "QmpProtocolError",
    "QmpTestClient",
    "decode_messages",
]


class MemoryChardev(Chardev):
    """A chardev connected to the test instead of a file descriptor.

    It starts closed; :meth:`open` makes the peer appear (the frontend hears
    ``chr_opened``), :meth:`feed` delivers bytes to the frontend, and
    :meth:`close` makes the peer leave. Writes while closed are dropped,
    as on a real chardev with nobody connected.

    The chardev is not placed under ``/chardevs``; use
    :meth:`~qomhost.host.Host.add_chardev` to put it there.
    """

    def __init__(self, type_name: str = "chardev") -> None:
        super().__init__(type_name)
        self._output = bytearray()

    def open(self) -> None:
        """Connect the (test) peer."""
        if not self.is_open:
            self._opened()

    def close(self) -> None:
        """Disconnect the peer; queued output is discarded."""
        self._closed()
        self._output.clear()

    def disconnect(self) -> None:
        self.close()

    def feed(self, data: bytes) -> None:
        """Deliver ``data`` to the frontend, as if the peer had sent it."""
        if not self.is_open:
            raise RuntimeError("feeding a chardev that is not open")
        self._received(bytes(data))

    def write(self, data: bytes) -> None:
        if self.is_open:
            self._output += data

    def take_output(self) -> bytes:
        """Everything written since the last call."""
        out = bytes(self._output)
        self._output.clear()
        return out


class QmpProtocolError(Exception):
    """The monitor did not answer as a QMP server must."""


# QEMU prints non-finite doubles with printf's "%.17g": inf, -inf, nan, -nan.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|-?\b(?:inf|nan)\b')
_CONSTANTS = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN", "-nan": "NaN"}


def _standard_json(text: str) -> str:
    def fix(m: re.Match[str]) -> str:
        return _CONSTANTS.get(m.group(), m.group())

    return _TOKENS.sub(fix, text)


_DECODER = json.JSONDecoder()


def decode_messages(data: str) -> tuple[list[dict[str, Any]], str]:
    """Split monitor output into JSON objects; returns ``(messages, rest)``.

    ``rest`` is an incomplete message at the end, if any.
    """
    messages: list[dict[str, Any]] = []
    pos = 0
    while True:
        while pos < len(data) and data[pos] in " \t\r\n":
            pos += 1
        if pos == len(data):
            return messages, ""
        try:
            value, end = _DECODER.raw_decode(data, pos)
        except json.JSONDecodeError:
            fixed = _standard_json(data[pos:])
            try:
                value, end = _DECODER.raw_decode(fixed)
            except json.JSONDecodeError:
                return messages, data[pos:]
            data, pos = fixed, 0
        if not isinstance(value, dict):
            raise QmpProtocolError(f"monitor sent a non-object: {data[pos:end]!r}")
        messages.append(value)
        pos = end


class QmpTestClient:
    """A QMP client connected to a real :class:`QmpMonitor` of ``host``.

    On construction the monitor sends its greeting (kept in
    :attr:`greeting`). With ``negotiate=True`` the client also runs
    ``qmp_capabilities``. Events that arrive are collected in
    :attr:`events`, in order; replies are returned by the call that caused
    them.

    :param pretty: attach the monitor as ``-qmp-pretty`` would.
    """

    def __init__(self, host: Host, *, negotiate: bool = False, pretty: bool = False) -> None:
        self.host = host
        self.chardev = MemoryChardev()
        self._events: list[dict[str, Any]] = []
        self._unclaimed: list[dict[str, Any]] = []
        #: the raw bytes of everything the monitor has written
        self.transcript = bytearray()
        self._pending = ""
        self.monitor = QmpMonitor(host, self.chardev, pretty=pretty)
        #: the greeting message (``{"QMP": {...}}``)
        self.greeting: dict[str, Any] = self._connect()
        if negotiate:
            self.negotiate()

    def _connect(self) -> dict[str, Any]:
        self.chardev.open()
        received = self._collect()
        if len(received) != 1 or "QMP" not in received[0]:
            raise QmpProtocolError(f"expected a greeting, got {received!r}")
        return received[0]

    def reconnect(self) -> None:
        """Disconnect and connect again: a new session that starts with a greeting."""
        self.chardev.close()
        self._pending = ""
        self._unclaimed = []
        self.greeting = self._connect()

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event received so far, oldest first (the list may be cleared)."""
        self._unclaimed += self._collect()
        return self._events

    def _collect(self) -> list[dict[str, Any]]:
        out = self.chardev.take_output()
        self.transcript += out
        try:
            text = out.decode("ascii")
        except UnicodeDecodeError:
            raise QmpProtocolError(f"monitor output is not ASCII: {out!r}") from None
        messages, self._pending = decode_messages(self._pending + text)
        replies: list[dict[str, Any]] = []
        for message in messages:
            if "event" in message:
                self._events.append(message)
            else:
                replies.append(message)
        return replies

    def send_raw(self, data: bytes) -> list[dict[str, Any]]:
        """Send bytes as they are; return the replies (not events) they caused."""
        self.chardev.feed(data)
        replies, self._unclaimed = self._unclaimed + self._collect(), []
        return replies

    def request(self, message: Mapping[str, object]) -> dict[str, Any]:
        """Send one request object (serialised by ``json``); return its only reply."""
        replies = self.send_raw(json.dumps(message).encode("ascii"))
        if len(replies) != 1:
            raise QmpProtocolError(f"expected one reply, got {replies!r}")
        return replies[0]

    def execute(
        self, command: str, arguments: Mapping[str, object] | None = None, /, **kwargs: object
    ) -> dict[str, Any]:
        """Run ``command``; return its reply (``{"return": ...}`` or ``{"error": ...}``).

        Arguments come as a mapping, or as keywords with ``_`` standing for
        ``-`` (``execute("qom-get", path="/objects/s", property="data")``).
        """
        args: dict[str, object] = dict(arguments or {})
        args.update({key.replace("_", "-"): value for key, value in kwargs.items()})
        message: dict[str, object] = {"execute": command}
        if args:
            message["arguments"] = args
        return self.request(message)

    def negotiate(self) -> None:
        """Run ``qmp_capabilities``; raise :class:`QmpProtocolError` if it fails."""
        reply = self.execute("qmp_capabilities")
        if reply != {"return": {}}:
            raise QmpProtocolError(f"qmp_capabilities failed: {reply!r}")

    def close(self) -> None:
        """Disconnect; the monitor forgets this session."""
        self.chardev.close()
        if self.monitor in self.host.qmp_monitors:
            self.host.qmp_monitors.remove(self.monitor)

    def __enter__(self) -> QmpTestClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class HmpTestClient:
    """A terminal connected to a real :class:`HmpMonitor` of ``host``.

    :attr:`banner` holds what the monitor printed on connection (the
    version line and the first prompt). :meth:`send_keys` returns exactly what
    the monitor sends back (echo, redraws, output, prompts);
    :meth:`command` runs one line and returns only the command's output.
    All text uses the monitor's ``\\r\\n`` line ends.
    """

    def __init__(self, host: Host) -> None:
        self.host = host
        self.chardev = MemoryChardev()
        self.monitor = HmpMonitor(host, self.chardev)
        self.chardev.open()
        #: what the monitor printed when the terminal connected
        self.banner = self._collect()

    def _collect(self) -> str:
        return self.chardev.take_output().decode("utf-8", "surrogateescape")

    def send_keys(self, data: bytes | str) -> str:
        """Send keystrokes; return everything the monitor sent back."""
        raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        self.chardev.feed(raw)
        return self._collect()

    def command(self, line: str) -> str:
        """Type ``line`` and Enter; return the output between the echo and the prompt."""
        if "\r" in line or "\n" in line:
            raise ValueError("one command line at a time")
        text = self.send_keys(line + "\r")
        _echo, newline, output = text.partition("\r\n")
        if not newline:
            raise RuntimeError(f"the monitor did not end the line: {text!r}")
        if output.endswith(PROMPT):
            output = output[: -len(PROMPT)]
        return output

    def close(self) -> None:
        """Disconnect the terminal."""
        self.chardev.close()

    def __enter__(self) -> HmpTestClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
