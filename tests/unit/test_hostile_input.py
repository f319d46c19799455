"""Hostile input to the monitors: nesting, oversized messages, endless lines.

QEMU's limits are kept with QEMU's texts: 1024 open brackets per message,
2**21 tokens and 64 MiB of token text (``JSON ... limit exceeded``), 4095
bytes of HMP line. Past the size and count limits qomhost also closes the
QMP connection (docs/compatibility.md says why). Whatever arrives, nothing
recurses, nothing but the documented errors comes out, and no buffer grows
past its limit. The figures are in docs/reliability.md.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qomhost import Host
from qomhost.errors import JsonParseError
from qomhost.monitor.qmp.server import QmpMonitor
from qomhost.monitor.readline import MAX_LINE, LineEditor
from qomhost.qapi.json import MAX_NESTING, MAX_TOKEN_SIZE, JsonStreamParser, parse_json
from qomhost.testing.qmp import MemoryChardev, decode_messages

NESTING = "JSON nesting depth limit exceeded"

brackets = st.lists(st.sampled_from(["[", "]", "{", "}", "1", ",", '"a":', " "]), max_size=3000)


@settings(max_examples=25, deadline=None)
@given(parts=brackets, depth=st.integers(0, 100_000), opener=st.sampled_from(["[", "{"]))
def test_any_nesting_gives_values_or_parse_errors(
    parts: list[str], depth: int, opener: str
) -> None:
    """Any mix of brackets, as deep as 100 000, comes out as values and
    ``JsonParseError`` only: never a ``RecursionError``."""
    data = (opener * depth + "".join(parts)).encode()
    for chunked in (False, True):
        parser = JsonStreamParser()
        step = 4093 if chunked else len(data) or 1
        out = [v for i in range(0, len(data), step) for v in parser.feed(data[i : i + step])]
        out += parser.flush()
        for value in out:
            assert isinstance(value, (JsonParseError, dict, list, int, str)), value
        if depth > MAX_NESTING:
            assert isinstance(out[0], JsonParseError) and out[0].desc == NESTING


@settings(max_examples=30, deadline=None)
@given(depth=st.integers(MAX_NESTING + 1, 200_000), opener=st.sampled_from(["[", "{"]))
def test_deep_text_is_refused_with_qemus_message(depth: int, opener: str) -> None:
    """A whole text (``-object '{...}'``, a rule file) nested too deep: QEMU's message."""
    with pytest.raises(JsonParseError) as failure:
        parse_json(opener * depth)
    assert failure.value.desc == NESTING


def monitor() -> tuple[Host, MemoryChardev]:
    host = Host()
    chardev = MemoryChardev()
    QmpMonitor(host, chardev)
    chardev.open()
    chardev.take_output()
    chardev.feed(b'{"execute": "qmp_capabilities"}')
    chardev.take_output()
    return host, chardev


def replies(chardev: MemoryChardev) -> list[dict[str, object]]:
    messages, rest = decode_messages(chardev.take_output().decode())
    assert not rest.strip()
    return messages


@pytest.mark.parametrize("cut", [1 << 20, 4 << 20])
def test_oversized_string_closes_the_connection(cut: int) -> None:
    """A string past 64 MiB: QEMU's error, then the connection is closed, so the
    tail of the string (here a ``quit``) is never read as input."""
    host, chardev = monitor()
    data = b'{"execute": "query-name", "arguments": {"x": "' + b"a" * (MAX_TOKEN_SIZE + 5)
    data += b'"}}{"execute": "quit"}'
    sent = 0
    seen: list[dict[str, object]] = []
    while sent < len(data) and chardev.is_open:
        chardev.feed(data[sent : sent + cut])
        sent += cut
        if chardev.is_open:
            seen += replies(chardev)
    assert seen == []
    assert not chardev.is_open
    assert host.shutdown_reason is None
    # MemoryChardev drops output on close; the error went out just before.
    chardev.open()
    chardev.take_output()
    chardev.feed(b'{"execute": "qmp_capabilities"}{"execute": "query-name"}')
    assert replies(chardev) == [{"return": {}}, {"return": {}}]
    host.close()


def test_oversized_string_error_is_sent_before_closing() -> None:
    host, chardev = monitor()
    written: list[bytes] = []
    original = chardev.write

    def record(data: bytes) -> None:
        written.append(data)
        original(data)

    chardev.write = record  # type: ignore[method-assign]
    chardev.feed(b'["' + b"a" * (MAX_TOKEN_SIZE + 1) + b'"]')
    assert written == [
        b'{"error": {"class": "GenericError", "desc": "JSON token size limit exceeded"}}\r\n'
    ]
    assert not chardev.is_open
    host.close()


def test_too_many_tokens_closes_the_connection() -> None:
    host, chardev = monitor()
    data = b"[" + b"1," * (2 << 20) + b"1]"
    for start in range(0, len(data), 1 << 16):  # as a socket delivers it
        if chardev.is_open:
            chardev.feed(data[start : start + (1 << 16)])
    assert not chardev.is_open
    host.close()


def test_nesting_errors_keep_the_connection_as_in_qemu() -> None:
    host, chardev = monitor()
    chardev.feed(b"[" * 5000 + b"\n")
    chardev.feed(b"]" * 5000 + b'{"execute": "query-name"}')
    out = replies(chardev)
    assert out[0] == {"error": {"class": "GenericError", "desc": NESTING}}
    assert out[-1] == {"return": {}}
    assert chardev.is_open
    host.close()


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(0, 12_000),
    keys=st.lists(st.sampled_from([b"\x1b[D", b"\x1b[C", b"\x01", b"\x05", b"\x7f"]), max_size=5),
)
def test_hmp_line_stops_at_4095_bytes(length: int, keys: list[bytes]) -> None:
    """QEMU's editor holds 4095 bytes; the rest of a longer line is dropped
    without echo, so neither the buffer nor the redraw grows with the input."""
    editor = LineEditor()
    echo = bytearray()
    for piece in (b"x" * length, *keys, b"y" * 100):
        for out, line in editor.feed_iter(piece):
            echo += out
            assert line is None
        assert len(editor.buf) <= MAX_LINE
    [(_echo, line)] = editor.feed_iter(b"\r")
    assert line is not None and len(line) <= MAX_LINE
    if not keys:
        assert line == ("x" * length + "y" * 100)[:MAX_LINE]
    # Once full, a byte costs no echo at all.
    full = LineEditor()
    full.feed_iter(b"z" * MAX_LINE)
    assert full.feed_iter(b"z" * 1000) == []
    assert MAX_LINE == 4095
