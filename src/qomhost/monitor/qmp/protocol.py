"""QMP without I/O: bytes in, requests out; replies and events to bytes.

This module contains no networking code at all. A :class:`QmpProtocol`
is fed whatever bytes arrived (:meth:`QmpProtocol.receive_data`) and
returns the complete inputs found so far -- requests, or errors for input
that was not a valid request. The caller runs the requests and turns
results back into bytes with :meth:`QmpProtocol.reply`,
:meth:`QmpProtocol.error_reply` and :func:`encode_event`.

QMP input is a stream of JSON values, not of lines: clients such as
``qemu.qmp`` send no newline after a command. Each value is checked the
way QEMU's ``qmp_dispatch`` checks it, member by member in QDict order,
so that when a request has several faults the one QEMU names is named.
"""

from __future__ import annotations

import time

from qomhost._record import Record
from qomhost.errors import JsonParseError, QemuError
from qomhost.qapi.json import JsonStreamParser, dump_json, qdict_order

__all__ = ["NO_ID", "QmpProtocol", "Request", "encode_event", "greeting"]

#: the ``id`` of a request that had none
NO_ID: object = object()


class Request(Record):
    """A well-formed QMP request."""

    __slots__ = ("arguments", "command", "id", "oob")
    _fields = ("command", "arguments", "id", "oob")

    def __init__(
        self, command: str, arguments: dict[str, object], id: object = NO_ID, oob: bool = False
    ) -> None:
        self.command = command
        self.arguments = arguments
        self.id = id
        self.oob = oob


class BadRequest(Record):
    """Input that is not a valid request; answered with ``error``."""

    __slots__ = ("error", "id")
    _fields = ("error", "id")

    def __init__(self, error: QemuError, id: object = NO_ID) -> None:
        self.error = error
        self.id = id


def check_request(value: object, allow_oob: bool) -> Request | BadRequest:
    """Validate one parsed JSON value as QEMU's ``qmp_dispatch`` does."""
    if not isinstance(value, dict):
        return BadRequest(QemuError("QMP input must be a JSON object"))
    req_id = value.get("id", NO_ID)
    exec_key: str | None = None
    for key in qdict_order(value):
        member = value[key]
        if key == "execute" or (key == "exec-oob" and allow_oob):
            if not isinstance(member, str):
                return BadRequest(QemuError(f"QMP input member '{key}' must be a string"), req_id)
            if exec_key is not None:
                return BadRequest(
                    QemuError("QMP input member 'execute' clashes with 'exec-oob'"), req_id
                )
            exec_key = key
        elif key == "arguments":
            if not isinstance(member, dict):
                return BadRequest(
                    QemuError("QMP input member 'arguments' must be an object"), req_id
                )
        elif key != "id":
            return BadRequest(QemuError(f"QMP input member '{key}' is unexpected"), req_id)
    if exec_key is None:
        return BadRequest(QemuError("QMP input lacks member 'execute'"), req_id)
    command = value[exec_key]
    arguments = value.get("arguments", {})
    assert isinstance(command, str) and isinstance(arguments, dict)
    return Request(command, arguments, req_id, exec_key == "exec-oob")


class QmpProtocol:
    """The protocol state of one QMP connection.

    :param pretty: format output as ``-qmp-pretty`` does.
    """

    def __init__(self, pretty: bool = False) -> None:
        self._parser = JsonStreamParser()
        self.pretty = pretty
        #: set once ``qmp_capabilities`` succeeded
        self.negotiated = False
        self.oob_enabled = False

    def receive_data(self, data: bytes) -> list[object | JsonParseError]:
        """Feed bytes; return each complete JSON value (or its parse error)."""
        return self._parser.feed(data)

    def check(self, value: object | JsonParseError) -> Request | BadRequest:
        """Turn one received value into a request, with the current OOB setting."""
        if isinstance(value, JsonParseError):
            return BadRequest(value)
        return check_request(value, self.oob_enabled)

    def encode(self, message: dict[str, object]) -> bytes:
        """One message as it goes on the wire: QEMU's monitor ends lines with CRLF."""
        text = dump_json(message, pretty=self.pretty) + "\n"
        return text.replace("\n", "\r\n").encode("ascii")

    def reply(self, result: object, req_id: object = NO_ID) -> bytes:
        """A ``return`` reply carrying the request's ``id``."""
        message: dict[str, object] = {"return": result}
        if req_id is not NO_ID:
            message["id"] = req_id
        return self.encode(message)

    def error_reply(self, error: QemuError, req_id: object = NO_ID) -> bytes:
        """An ``error`` reply; hints are never sent over QMP."""
        message: dict[str, object] = {"error": error.to_qmp()}
        if req_id is not NO_ID:
            message["id"] = req_id
        return self.encode(message)


def greeting(version: dict[str, object], package: str) -> dict[str, object]:
    """The greeting a server sends first."""
    return {"QMP": {"version": {"qemu": version, "package": package}, "capabilities": ["oob"]}}


def encode_event(name: str, data: dict[str, object] | None = None) -> dict[str, object]:
    """An event message stamped with the current wall-clock time."""
    now = time.time_ns() // 1000
    message: dict[str, object] = {
        "timestamp": {"seconds": now // 1_000_000, "microseconds": now % 1_000_000},
        "event": name,
    }
    if data is not None:
        message["data"] = data
    return message
