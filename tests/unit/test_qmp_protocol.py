"""The sans-I/O QMP core (``monitor.qmp.protocol``), and the monitor over it.

Expected bytes are QEMU 7.2's (``qemu-system-x86_64 -machine none -qmp
stdio`` and ``-qmp-pretty stdio``), recorded for the same input.
"""

from __future__ import annotations

import json
import time

import pytest

from qomhost import Host
from qomhost.errors import JsonParseError, QemuError
from qomhost.monitor.qmp.protocol import (
    NO_ID,
    BadRequest,
    QmpProtocol,
    Request,
    check_request,
    encode_event,
    greeting,
)
from qomhost.testing import QmpTestClient


def _error(desc: str, cls: str = "GenericError") -> dict[str, str]:
    return {"class": cls, "desc": desc}


# --- checking the envelope ------------------------------------------------------------------

ENVELOPES = [
    # (input, id echoed or None, QEMU's message); members are checked in
    # QDict order, so with several faults the first in that order is named
    (b'{"id":5,"bogus":1,"execute":1,"arguments":2}', 5, "QMP input member 'bogus' is unexpected"),
    (b'{"arguments":2,"execute":1,"id":5}', 5, "QMP input member 'execute' must be a string"),
    (b'{"execute":1,"bogus":1,"id":5}', 5, "QMP input member 'bogus' is unexpected"),
    (b'{"arguments":[],"bogus":1,"id":5}', 5, "QMP input member 'bogus' is unexpected"),
    (b'{"execute":1,"arguments":2}', None, "QMP input member 'execute' must be a string"),
    (b'{"arguments":2,"execute":1}', None, "QMP input member 'execute' must be a string"),
    (b'{"arguments":2,"bogus":1}', None, "QMP input member 'bogus' is unexpected"),
    (
        b'{"control":1,"arguments":2,"execute":"x"}',
        None,
        "QMP input member 'control' is unexpected",
    ),
    (
        b'{"execute":"x","arguments":[],"zzz":1,"aaa":2}',
        None,
        "QMP input member 'aaa' is unexpected",
    ),
    (b'{"aaa":2,"zzz":1}', None, "QMP input member 'aaa' is unexpected"),
    # exec-oob is an unknown member until oob is enabled
    (b'{"exec-oob":"x","execute":1}', None, "QMP input member 'exec-oob' is unexpected"),
    (
        b'{"execute":"query-name","exec-oob":"x"}',
        None,
        "QMP input member 'exec-oob' is unexpected",
    ),
    (b'{"exec-oob":"query-name","id":7}', 7, "QMP input member 'exec-oob' is unexpected"),
    (b'{"id":1,"arguments":{}}', 1, "QMP input lacks member 'execute'"),
    (b'{"id":5}', 5, "QMP input lacks member 'execute'"),
    (b"{}", None, "QMP input lacks member 'execute'"),
    (b'{"execute":null,"id":"n"}', "n", "QMP input member 'execute' must be a string"),
    (
        b'{"execute":"query-name","arguments":null}',
        None,
        "QMP input member 'arguments' must be an object",
    ),
    (b"[1]", None, "QMP input must be a JSON object"),
    (b'"x"', None, "QMP input must be a JSON object"),
    (b"null", None, "QMP input must be a JSON object"),
    (b"1", None, "QMP input must be a JSON object"),
    (b"garbage", None, "JSON parse error, invalid keyword 'garbage'"),
    (b'{"execute":"query-name",}', None, "JSON parse error, expecting value"),
    (
        b'{"execute":"query-name","arguments":{},"id":1,"id":2}',
        None,
        "JSON parse error, duplicate key",
    ),
]


@pytest.mark.parametrize(("data", "req_id", "message"), ENVELOPES)
def test_envelope_errors(data: bytes, req_id: object, message: str) -> None:
    proto = QmpProtocol()
    # a bare scalar ends only at the next character, as in QEMU's lexer
    [value] = proto.receive_data(data + b"\n")
    request = proto.check(value)
    assert isinstance(request, BadRequest)
    assert request.error.desc == message
    assert request.id == (NO_ID if req_id is None else req_id)


@pytest.mark.parametrize(("data", "req_id", "message"), ENVELOPES)
def test_envelope_error_replies(data: bytes, req_id: object, message: str) -> None:
    client = QmpTestClient(Host(), negotiate=True)
    expected: dict[str, object] = {"error": _error(message)}
    if req_id is not None:
        expected["id"] = req_id
    assert client.send_raw(data + b"\n") == [expected]


def test_error_reply_bytes_put_id_first() -> None:
    # QEMU's QDict order: "id" before "error", but "return" before "id".
    client = QmpTestClient(Host(), negotiate=True)
    client.send_raw(b'{"id":5,"bogus":1}')
    client.send_raw(b'{"execute":"query-name","id":1}')
    assert bytes(client.transcript).endswith(
        b'{"id": 5, "error": {"class": "GenericError", '
        b'"desc": "QMP input member \'bogus\' is unexpected"}}\r\n'
        b'{"return": {}, "id": 1}\r\n'
    )


@pytest.mark.parametrize(
    ("request_text", "name"),
    [
        (b'{"execute":"query-name","arguments":{"\\u0000":null}}', "\u0000"),
        (b'{"execute":"qmp_capabilities","arguments":{"\\u0000":null}}', "\u0000"),
        (b'{"execute":"qom-list","arguments":{"path":"/","a\\u0000b":1}}', "a\u0000b"),
        (
            b'{"execute":"object-add","arguments":'
            b'{"qom-type":"secret","id":"s","data":"x","\\u0000":1}}',
            "\u0000",
        ),
    ],
)
def test_member_names_with_nul(request_text: bytes, name: str) -> None:
    # QEMU 7.2: {"error": {"class": "GenericError", "desc": "Parameter '\u0000' is unexpected"}}
    client = QmpTestClient(Host())
    if b"qmp_capabilities" not in request_text:
        client.negotiate()
    assert client.send_raw(request_text) == [{"error": _error(f"Parameter '{name}' is unexpected")}]


def test_member_names_with_nul_in_the_envelope() -> None:
    client = QmpTestClient(Host(), negotiate=True)
    assert client.send_raw(b'{"execute":"query-name","\\u0000":1}') == [
        {"error": _error("QMP input member '\u0000' is unexpected")}
    ]
    assert client.send_raw(b'{"execute":"query-name","id":{"\\u0000":1}}') == [
        {"return": {}, "id": {"\u0000": 1}}
    ]


def test_check_request_accepts_a_request() -> None:
    request = check_request({"arguments": {"a": 1}, "execute": "x", "id": [1]}, False)
    assert request == Request("x", {"a": 1}, [1], False)
    assert check_request({"execute": "x"}, False) == Request("x", {}, NO_ID, False)


def test_exec_oob_once_enabled() -> None:
    assert check_request({"exec-oob": "x", "id": 1}, True) == Request("x", {}, 1, True)
    clash = check_request({"execute": "x", "exec-oob": "y"}, True)
    assert isinstance(clash, BadRequest)
    assert clash.error.desc == "QMP input member 'execute' clashes with 'exec-oob'"
    bad = check_request({"exec-oob": 1}, True)
    assert isinstance(bad, BadRequest)
    assert bad.error.desc == "QMP input member 'exec-oob' must be a string"


def test_exec_oob_of_a_command_without_oob_support() -> None:
    client = QmpTestClient(Host())
    assert client.execute("qmp_capabilities", enable=["oob"]) == {"return": {}}
    assert client.send_raw(b'{"exec-oob":"query-name","id":1}') == [
        {"id": 1, "error": _error("The command query-name does not support OOB")}
    ]
    assert client.send_raw(b'{"exec-oob":"query-name","execute":"x"}') == [
        {"error": _error("QMP input member 'execute' clashes with 'exec-oob'")}
    ]


# --- ids ------------------------------------------------------------------------------------

IDS = [
    (b"1", b"1"),
    (b'"x"', b'"x"'),
    (b"null", b"null"),
    (b"true", b"true"),
    (b"false", b"false"),
    (b"1.5", b"1.5"),
    (b"-0.0", b"-0"),
    (b"1e400", b"inf"),
    (b"18446744073709551615", b"18446744073709551615"),
    (b"18446744073709551616", b"1.8446744073709552e+19"),
    (b"-9223372036854775809", b"-9.2233720368547758e+18"),
    (b"[1,{}]", b"[1, {}]"),
    (b'[1,{"a":[]}]', b'[1, {"a": []}]'),
    (b'{"z":1,"a":2,"m":[null]}', b'{"a": 2, "z": 1, "m": [null]}'),
    (b'"caf\\u00e9 \\ud83d\\ude00"', b'"caf\\u00E9 \\uD83D\\uDE00"'),
    (b'"\\u0000"', b'"\\u0000"'),
    (b'"a\\/b\\b\\f\\n\\r\\t\\u001f\\u007f"', b'"a/b\\b\\f\\n\\r\\t\\u001F\\u007F"'),
    (b"'single'", b'"single"'),
]


@pytest.mark.parametrize(("sent", "echoed"), IDS)
def test_ids_of_every_json_type_are_echoed(sent: bytes, echoed: bytes) -> None:
    client = QmpTestClient(Host(), negotiate=True)
    start = len(client.transcript)
    client.send_raw(b'{"execute":"query-name","id":' + sent + b"}")
    assert bytes(client.transcript[start:]) == b'{"return": {}, "id": ' + echoed + b"}\r\n"
    # and on an error reply
    start = len(client.transcript)
    client.send_raw(b'{"execute":"nope","id":' + sent + b"}")
    assert bytes(client.transcript[start:]) == (
        b'{"id": ' + echoed + b', "error": {"class": "CommandNotFound", '
        b'"desc": "The command nope has not been found"}}\r\n'
    )


def test_id_is_echoed_before_negotiation() -> None:
    client = QmpTestClient(Host())
    assert client.send_raw(b'{"execute":"query-name","id":{"k":[1]}}') == [
        {
            "id": {"k": [1]},
            "error": _error(
                "Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound"
            ),
        }
    ]


# --- output ---------------------------------------------------------------------------------


def test_replies_end_in_crlf() -> None:
    proto = QmpProtocol()
    assert proto.reply({}) == b'{"return": {}}\r\n'
    assert proto.reply([1, "a"], req_id="x") == b'{"return": [1, "a"], "id": "x"}\r\n'
    assert proto.error_reply(QemuError("boom"), 3) == (
        b'{"id": 3, "error": {"class": "GenericError", "desc": "boom"}}\r\n'
    )
    # hints are never sent over QMP
    assert proto.error_reply(QemuError("boom", hint="hint text")) == (
        b'{"error": {"class": "GenericError", "desc": "boom"}}\r\n'
    )
    # a string with a newline is escaped, so one message is one line
    line = proto.reply("a\nb")
    assert line.count(b"\r\n") == 1 and line.endswith(b"\r\n")


def test_pretty_mode_matches_qemu() -> None:
    proto = QmpProtocol(pretty=True)
    assert proto.reply({}) == b'{\r\n    "return": {\r\n    }\r\n}\r\n'
    assert proto.reply({}, [1, {"a": []}]) == (
        b'{\r\n    "return": {\r\n    },\r\n    "id": [\r\n        1,\r\n        {\r\n'
        b'            "a": [\r\n            ]\r\n        }\r\n    ]\r\n}\r\n'
    )
    assert proto.error_reply(
        QemuError("The command nope has not been found", "CommandNotFound"), {"b": {}}
    ) == (
        b'{\r\n    "id": {\r\n        "b": {\r\n        }\r\n    },\r\n    "error": {\r\n'
        b'        "class": "CommandNotFound",\r\n'
        b'        "desc": "The command nope has not been found"\r\n    }\r\n}\r\n'
    )


def test_pretty_monitor() -> None:
    client = QmpTestClient(Host(), pretty=True, negotiate=True)
    assert client.execute("query-name") == {"return": {}}
    assert bytes(client.transcript).endswith(b'{\r\n    "return": {\r\n    }\r\n}\r\n')
    assert bytes(client.transcript).startswith(b'{\r\n    "QMP": {\r\n        "version": {\r\n')


def test_greeting() -> None:
    message = greeting({"major": 7, "minor": 2, "micro": 0}, "pkg")
    assert QmpProtocol().encode(message) == (
        b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, '
        b'"package": "pkg"}, "capabilities": ["oob"]}}\r\n'
    )
    client = QmpTestClient(Host())
    assert client.greeting["QMP"]["capabilities"] == ["oob"]
    assert set(client.greeting["QMP"]["version"]["qemu"]) == {"major", "minor", "micro"}


def test_events() -> None:
    before = time.time()
    event = encode_event("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
    text = QmpProtocol().encode(event)
    assert text.startswith(b'{"timestamp": {"seconds": ')
    assert text.endswith(
        b'"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}\r\n'
    )
    stamp = json.loads(text)["timestamp"]
    assert before - 1 <= stamp["seconds"] <= time.time() + 1
    assert 0 <= stamp["microseconds"] < 1_000_000
    assert "data" not in encode_event("STOP")


def test_events_go_to_negotiated_monitors_only() -> None:
    host = Host()
    waiting = QmpTestClient(host)
    ready = QmpTestClient(host, negotiate=True)
    assert ready.execute("quit") == {"return": {}}
    assert [e["event"] for e in ready.events] == ["SHUTDOWN"]
    assert waiting.events == []
    # QEMU sends SHUTDOWN before the reply to quit
    assert bytes(ready.transcript).index(b'"SHUTDOWN"') < bytes(ready.transcript).rindex(
        b'{"return": {}}'
    )


# --- the stream -----------------------------------------------------------------------------


def test_input_is_a_json_stream_not_lines() -> None:
    proto = QmpProtocol()
    assert proto.receive_data(b'{"execute":') == []
    assert proto.receive_data(b' "a"}{"execute": "b"} {"exe') == [
        {"execute": "a"},
        {"execute": "b"},
    ]
    assert proto.receive_data(b'cute": "c"}') == [{"execute": "c"}]


def test_parse_errors_come_back_in_order() -> None:
    proto = QmpProtocol()
    items = proto.receive_data(b'{"execute":"a"} ] {"execute":"b"}')
    assert items[0] == {"execute": "a"}
    assert isinstance(items[1], JsonParseError)
    assert items[-1] == {"execute": "b"}


def test_every_split_gives_the_same_replies() -> None:
    stream = (
        b'{"execute":"qmp_capabilities"}{"execute":"query-name","id":"\\u00e9"}'
        b'garbage{"id":1}\n[1]{"execute":"nope"}'
    )
    whole = QmpTestClient(Host())
    expected = whole.send_raw(stream)
    assert len(expected) == 6
    for cut in range(1, len(stream)):
        client = QmpTestClient(Host())
        got = client.send_raw(stream[:cut]) + client.send_raw(stream[cut:])
        assert got == expected, cut


def test_negotiation_state() -> None:
    client = QmpTestClient(Host())
    assert client.execute("query-name") == {
        "error": _error(
            "Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound"
        )
    }
    # an unknown command before negotiation gets the same answer
    assert client.execute("nope") == client.execute("query-name")
    assert client.execute("qmp_capabilities", enable=["foo"]) == {
        "error": _error("Parameter 'null' does not accept value 'foo'")
    }
    assert client.execute("qmp_capabilities") == {"return": {}}
    assert client.execute("qmp_capabilities") == {
        "error": _error(
            "Capabilities negotiation is already complete, command ignored", "CommandNotFound"
        )
    }
    assert client.execute("nope") == {
        "error": _error("The command nope has not been found", "CommandNotFound")
    }
    assert client.execute("query-name", x=1) == {"error": _error("Parameter 'x' is unexpected")}


def test_reconnect_starts_a_new_session() -> None:
    host = Host(name="vm")
    client = QmpTestClient(host, negotiate=True)
    client.send_raw(b'{"execute":"query-name"')  # left incomplete
    client.reconnect()
    assert "QMP" in client.greeting
    # negotiation again, and the half-sent command is gone
    assert client.execute("query-name")["error"]["class"] == "CommandNotFound"
    client.negotiate()
    assert client.execute("query-name") == {"return": {"name": "vm"}}


def test_closed_client_gets_no_events() -> None:
    host = Host()
    client = QmpTestClient(host, negotiate=True)
    client.close()
    host.emit_event("STOP")
    assert client.events == []
    assert client.chardev.take_output() == b""


def test_qemu_json_dialect_in_requests() -> None:
    client = QmpTestClient(Host(name="vm"), negotiate=True)
    assert client.send_raw(b"{'execute':'query-name'}") == [{"return": {"name": "vm"}}]
