"""QEMU's JSON dialect, live: the same bytes through QEMU 7.2 and through qomhost.

One QMP session on stdio gets a list of malformed and odd inputs; each reply
QEMU sends is reduced to the error description it carries (or ``<object>``
for a well-formed command), and :class:`~qomhost.qapi.json.JsonStreamParser`
with the same minimal mapping must give the same list, fed at once and fed
byte by byte.  Whole texts are checked the same way through
``-object '<text>'``.

Each input is followed by ``\\xff\\n``: a byte that is an error in every lexer
state, then a line end that leaves recovery, so every input starts from a
clean state however it ended, and the connection must survive all of it.

Without ``qemu-system-x86_64`` the tests are skipped, except when the
environment variable ``CI`` is ``true``: then they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from qomhost.errors import JsonParseError
from qomhost.qapi.json import JsonStreamParser, dump_json, parse_json

pytestmark = pytest.mark.differential

QEMU = "qemu-system-x86_64"
BASE_ARGS = ["-machine", "none", "-nodefaults", "-display", "none"]
MUST_BE_OBJECT = "QMP input must be a JSON object"
RESYNC = b"\xff\n"

INPUTS: list[bytes] = [
    b'{"execute":"query-status"}',
    b"{'execute':'query-status'}",
    b'{"execute":"query-status",}',
    b'{"execute" "query-status"}',
    b'{"execute":"query-status" "id":1}',
    b'{"execute":"query-status","id":1,"id":2}',
    b"{1:2}",
    b"[1 2]",
    b"[1,]",
    b"[1}]",
    b'{"a":[}]}',
    b"{]",
    b"}",
    b"]]",
    b"garbage",
    b"garbage{",
    b"TRUE {}",
    b"1 2 3",
    b'"str" null true',
    b"-",
    b"01",
    b"0e5",
    b"1.",
    b"1.5.",
    b"1e+",
    b"%d",
    b'"a\tb"',
    b'"a\x01b" {}',
    b'"ab\x00cd"',
    b"\x00{}",
    b"\x80{}",
    b"\xc3\xa9\xc3\xa9",
    b"\xfe\xfe",
    b'{"id":"a\xc0\x80b"}',
    b'{"id":"a\xc3(b"}',
    b'{"id":"\xef\xbf\xbf"}',
    b'{"id":"\xed\xa0\x80"}',
    b'{"id":"\\q"}',
    b'{"id":"\\u12"}',
    b'{"id":"\\ud800"}',
    b'{"id":"\\ud800\\u0041"}',
    b'{"id":"\\ud83d\\ude00"}',
    b'{"id":"\\uFDD0"}',
    b"{'id':'\\'\"'}",
    b'{"execute":"query-status"}}{"execute":"query-status"}',
    b'{"a": [1, {"b"',
    b"[" * 1025 + b"]" * 1025,
    b"[" * 2100,
]


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if path is None:
        reason = f"{QEMU} is not installed: the differential tests need QEMU 7.2"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true, so this is an error)", pytrace=False)
        print(f"skipping: {reason}")
        pytest.skip(reason)
    return path


def describe(item: object) -> str:
    """The minimal QMP reply mapping: what a result turns into."""
    if isinstance(item, JsonParseError):
        # As QEMU prints it: through the JSON writer (stray bytes become U+FFFD).
        return str(json.loads(dump_json(item.desc)))
    if isinstance(item, dict):
        return "<object>"
    return MUST_BE_OBJECT


def describe_reply(reply: dict[str, object]) -> str:
    error = reply.get("error")
    if isinstance(error, dict):
        desc = str(error["desc"])
        if desc.startswith("JSON ") or desc == MUST_BE_OBJECT:
            return desc
    return "<object>"


def qemu_replies(stream: bytes) -> list[str]:
    script = b'{"execute":"qmp_capabilities"}\n' + stream + b'{"execute":"quit"}\n'
    proc = subprocess.run(
        [qemu_binary(), *BASE_ARGS, "-qmp", "stdio"],
        input=script,
        capture_output=True,
        timeout=60,
        check=False,
    )
    replies = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    # Drop the greeting, the capabilities reply, events and quit's reply.
    described = [describe_reply(r) for r in replies[2:] if "event" not in r]
    assert described[-1:] == ["<object>"], proc.stdout
    return described[:-1]


def our_replies(stream: bytes, chunk: int | None = None) -> list[str]:
    parser = JsonStreamParser()
    step = chunk or max(len(stream), 1)
    items = [
        i for pos in range(0, len(stream), step) for i in parser.feed(stream[pos : pos + step])
    ]
    return [describe(item) for item in items]


def test_qmp_stream_matches_qemu() -> None:
    stream = b"".join(data + RESYNC for data in INPUTS)
    expected = qemu_replies(stream)
    assert our_replies(stream) == expected
    assert our_replies(stream, chunk=1) == expected


WHOLE_TEXTS: list[str] = [
    '{"qom-type":"secret","id":"s","data":"x",}',
    '{"qom-type":"secret","id":"s","data":"x"} {}',
    '{"qom-type":"secret","id":"s","data":"x"} 1.',
    '{"qom-type":"secret","id":"s","data":"x"',
    '{"qom-type":"secret","id":"s","data":"x',
    '{"qom-type":"secret","id":"s","data":-',
    '{"qom-type":"secret","id":"s","data":tru',
    '{"qom-type":"secret","id":"s","data":"\\ud800"}',
    '{"qom-type":"secret","id":"s","id":"t","data":"x"}',
    "{1",
]


@pytest.mark.parametrize("text", WHOLE_TEXTS)
def test_object_option_matches_qemu(text: str) -> None:
    proc = subprocess.run(
        [qemu_binary(), *BASE_ARGS, "-object", text],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    with pytest.raises(JsonParseError) as info:
        parse_json(text)
    assert proc.stderr == f"{QEMU}: -object {text}: {info.value.desc}\n"
    assert proc.returncode == 1
