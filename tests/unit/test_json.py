"""QEMU's JSON dialect: parse_json, JsonStreamParser, dump_json, qdict_order.

Expected strings were observed on QEMU 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18):
QMP errors by feeding the input to ``qemu-system-x86_64 -qmp stdio`` after
``qmp_capabilities``, whole-text errors with ``-object '<text>'`` and
``qemu-img info 'json:<text>'``, and output by echoing values as a command's
``id`` (compact with ``-qmp``, pretty with ``-qmp-pretty``).
``tests/differential/test_json_qemu.py`` re-checks a selection live.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qomhost.errors import JsonParseError
from qomhost.qapi.json import (
    MAX_NESTING,
    MAX_TOKEN_COUNT,
    MAX_TOKEN_SIZE,
    JsonStreamParser,
    dump_json,
    parse_json,
    qdict_order,
    to_c_bytes,
)


class ExactParser(JsonStreamParser):
    """The byte-by-byte model alone, without the accelerated paths."""

    _plain_objects = False
    _byte_runs = False


def outcome(items: list[object | JsonParseError]) -> list[object]:
    """Results in a comparable form (errors compare by identity otherwise)."""
    return [("error", i.desc) if isinstance(i, JsonParseError) else ("value", i) for i in items]


def feed_all(data: bytes, parser: JsonStreamParser | None = None) -> list[object]:
    return outcome((parser or JsonStreamParser()).feed(data))


def parse_error(text: str | bytes) -> str:
    with pytest.raises(JsonParseError) as info:
        parse_json(text)
    return info.value.desc


# --- parse_json: values ----------------------------------------------------------

VALUES: list[tuple[str | bytes, object]] = [
    ('{"a": 1, "b": [true, false, null]}', {"a": 1, "b": [True, False, None]}),
    ("{'execute':'query-status'}", {"execute": "query-status"}),
    ("'it\"s'", 'it"s'),
    ('"\\\'"', "'"),
    ("'\\''", "'"),
    ('"\\"\\\\\\/\\b\\f\\n\\r\\t"', '"\\/\b\f\n\r\t'),
    ('"\\u0041\\u00e9\\u00E9"', "Aéé"),
    ('"\\ud83d\\ude00"', "\U0001f600"),
    ('"a\\u0000b"', "a\x00b"),
    (b'"a\xc0\x80b"', "a\x00b"),  # modified UTF-8 NUL
    (b'"\xf0\x9f\x98\x80"', "\U0001f600"),
    ('"\x7f"', "\x7f"),
    ("  [ ]\t\r\n", []),
    ("{}", {}),
    ("-0", 0),
    ("1E2", 100.0),
    ("0.5e-3", 0.0005),
    ("9223372036854775807", 9223372036854775807),
    ("-9223372036854775808", -9223372036854775808),
    ("18446744073709551615", 18446744073709551615),
    # Beyond uint64 (or below int64) numbers become doubles.
    ("18446744073709551616", 1.8446744073709552e19),
    ("-9223372036854775809", -9.2233720368547758e18),
    ("123456789012345678901234567890", 1.2345678901234568e29),
    ("1" * 5000, math.inf),
    ("1e400", math.inf),
    ("-1e400", -math.inf),
    ("1e-400", 0.0),
    # The text ends at the first NUL, as a C string does.
    ('{"a": 1}\x00garbage', {"a": 1}),
]


@pytest.mark.parametrize(("text", "expected"), VALUES)
def test_parse_values(text: str | bytes, expected: object) -> None:
    value = parse_json(text)
    assert value == expected
    assert type(value) is type(expected)


def test_dict_keeps_insertion_order() -> None:
    value = parse_json('{"z": 1, "a": 2, "m": 3}')
    assert isinstance(value, dict)
    assert list(value) == ["z", "a", "m"]


# --- parse_json: errors (-object '<text>' and qemu-img 'json:<text>') ---------------

WHOLE_TEXT_ERRORS: list[tuple[str | bytes, str]] = [
    ("", "Expecting a JSON value"),
    ("   ", "Expecting a JSON value"),
    ("{} {}", "Expecting at most one JSON value"),
    ("1 x", "Expecting at most one JSON value"),
    ('{"a":1}}', "Expecting at most one JSON value"),
    ('{"a":1}]', "Expecting at most one JSON value"),
    ('{"a":1} TRUE', "Expecting at most one JSON value"),
    ('{"a":1} 1.', "Expecting at most one JSON value"),
    ('{"qom-type":"secret","id":"s","data":"x",}', "JSON parse error, expecting value"),
    ('{"qom-type":"secret","id":"s","data":"x"', "JSON parse error, premature EOI"),
    ("{", "JSON parse error, premature EOI"),
    ("{ ", "JSON parse error, premature EOI"),
    ('{"a"', "JSON parse error, premature EOI"),
    ('{"a":', "JSON parse error, premature EOI"),
    ('{"a":1,', "JSON parse error, premature EOI"),
    ('{"a":[1,2', "JSON parse error, premature EOI"),
    ("{1", "JSON parse error, key is not a string in object"),
    ('{"a":1,"a":2', "JSON parse error, duplicate key"),
    ('{"a":1 "b"', "JSON parse error, expected separator in dict"),
    ('{"a', "JSON parse error, stray '\"a'"),
    ("{'a", "JSON parse error, stray ''a'"),
    ('{"a":"b\\', "JSON parse error, stray '\"b\\'"),
    ('{"a":1.', "JSON parse error, stray '1.'"),
    ('{"a":-', "JSON parse error, stray '-'"),
    ('{"a":tru', "JSON parse error, invalid keyword 'tru'"),
    ("garbage", "JSON parse error, invalid keyword 'garbage'"),
]


@pytest.mark.parametrize(("text", "message"), WHOLE_TEXT_ERRORS)
def test_parse_errors(text: str | bytes, message: str) -> None:
    assert parse_error(text) == message


# --- stream: what QEMU's QMP monitor answers, reply by reply ---------------------

QMP_INPUT_MUST_BE_OBJECT = "QMP input must be a JSON object"


def qmp_replies(data: bytes) -> list[str]:
    """Our results mapped the way QEMU turns them into replies: the error
    ``desc``, QMP's complaint about a non-object, or ``<object>``."""
    replies = []
    for item in JsonStreamParser().feed(data):
        if isinstance(item, JsonParseError):
            replies.append(item.desc)
        elif isinstance(item, dict):
            replies.append("<object>")
        else:
            replies.append(QMP_INPUT_MUST_BE_OBJECT)
    return replies


def e(message: str) -> str:
    return "JSON parse error, " + message


# Each input is followed by a newline, as it was when sent to QEMU.
QMP_CASES: list[tuple[bytes, list[str]]] = [
    (b'{"execute":"query-status",}', [e("expecting value")]),
    (b'{"execute" "x"}', [e("missing : in object pair")]),
    (b'{"execute":"x" "y":1}', [e("expected separator in dict")]),
    (b"[1 2]", [e("expected separator in list")]),
    (b"[1,]", [e("expecting value")]),
    (b"{1:2}", [e("key is not a string in object")]),
    (b'{"a":1,"a":2}', [e("duplicate key")]),
    (b"garbage", [e("invalid keyword 'garbage'")]),
    (b"nul", [e("invalid keyword 'nul'")]),
    (b"}", [e("expecting value")]),
    (b"]", [e("expecting value")]),
    (b":", [e("expecting value")]),
    (b",", [e("expecting value")]),
    (b"{,}", [e("expecting value")]),
    (b'{"a":}', [e("expecting value")]),
    (b'{"a"}', [e("missing : in object pair")]),
    (b"[,]", [e("expecting value")]),
    (b"{]", [e("expecting value")]),
    (b"[}", [e("expecting value")]),
    (b'{"execute":"x\\q"}', [e("invalid escape sequence in string")]),
    (b'{"execute":"\\ud800"}', [e("\\ud800 is not a valid Unicode character")]),
    (b'{"execute":"\\ud800\\u0041"}', [e("\\ud800 is not a valid Unicode character")]),
    (b'{"execute":"\\udc00"}', [e("\\udc00 is not a valid Unicode character")]),
    (b'{"id":"\\ud83f\\udfff"}', [e("\\ud83f\\udfff is not a valid Unicode character")]),
    (b'{"id":"\\uFDD0"}', [e("\\uFDD0 is not a valid Unicode character")]),
    (b'{"id":"\\uFFFE"}', [e("\\uFFFE is not a valid Unicode character")]),
    (b'"\\u12"', [e('\\u12" is not a valid Unicode character')]),
    (b'{"execute":"x\xc3\x28"}', [e("invalid UTF-8 sequence in string")]),
    (b'{"execute":"x\xef\xbf\xbf"}', [e("invalid UTF-8 sequence in string")]),
    (b'{"id":"a\xc1\x81b"}', [e("invalid UTF-8 sequence in string")]),  # overlong
    (b'{"id":"a\xed\xa0\x80b"}', [e("invalid UTF-8 sequence in string")]),  # surrogate
    (b'{"id":"a\xf4\x90\x80\x80b"}', [e("invalid UTF-8 sequence in string")]),  # > U+10FFFF
    (b'{"id":"a\xf8\x88\x80\x80\x80b"}', [e("invalid UTF-8 sequence in string")]),
    (b"1", [QMP_INPUT_MUST_BE_OBJECT]),
    (b'"str"', [QMP_INPUT_MUST_BE_OBJECT]),
    (b"null", [QMP_INPUT_MUST_BE_OBJECT]),
    (b"0", [QMP_INPUT_MUST_BE_OBJECT]),
    # Lexical errors: the token so far plus the offending byte, which may be
    # the newline.  Recovery then skips to the next line or structural byte.
    (b"TRUE", [e("stray 'T'")]),
    (b"-", [e("stray '-\n'")]),
    (b"01", [e("stray '01'")]),
    (b"1.", [e("stray '1.\n'")]),
    (b"1e", [e("stray '1e\n'")]),
    (b'"a\tb"', [e("stray '\"a\t'")]),
    (b'"a\x01b"', [e("stray '\"a\x01'")]),
    (b"\x80", [e("stray '\udc80'")]),  # QMP shows it as \uFFFD
    (b"\xc3\xa9", [e("stray '\udcc3'")]),  # the A9 is skipped in recovery
    (b'\x00{"execute":"query-status"}', [e("stray ''"), "<object>"]),
    (b'"ab\x00cd"{"execute":"query-status"}', [e("stray '\"ab'"), "<object>"]),
    (b'TRUE {"execute":"query-status"}', [e("stray 'T'"), "<object>"]),
    (b'TRUE\n{"execute":"query-status"}', [e("stray 'T'"), "<object>"]),
    (b'\x80{"execute":"query-status"}', [e("stray '\udc80'"), "<object>"]),
    (b'\xfe{"execute":"query-status"}', [e("stray '\udcfe'"), "<object>"]),
    (
        b'"\\u12"{"execute":"query-status"}',
        [e('\\u12" is not a valid Unicode character'), "<object>"],
    ),
    # A message ends as soon as its brackets balance or close too much.
    (b'{"execute":"query-status",}{"execute":"query-status"}', [e("expecting value"), "<object>"]),
    (b"{'execute':'query-status'}", ["<object>"]),
    (b'{"execute":"query-status"}}', ["<object>", e("expecting value")]),
    (b"[1}]", [e("expected separator in list"), e("expecting value")]),
    (b'{"a":[}]}', [e("expecting value"), e("expecting value")]),
    # The keyword ends at '['; the rest stays open and waits for more input.
    (b'abc[{"execute":"query-status"}', [e("invalid keyword 'abc'")]),
]


@pytest.mark.parametrize(("data", "replies"), QMP_CASES)
def test_qmp_stream(data: bytes, replies: list[str]) -> None:
    assert qmp_replies(data + b"\n") == replies


def test_stray_byte_is_shown_as_replacement_character() -> None:
    (error,) = JsonStreamParser().feed(b"\x80\n")
    assert isinstance(error, JsonParseError)
    reply = dump_json({"error": error.to_qmp()})
    assert (
        reply
        == '{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\uFFFD\'"}}'
    )


def test_no_newline_needed() -> None:
    parser = JsonStreamParser()
    assert parser.feed(b'{"execute": "qmp_capabilities"}') == [{"execute": "qmp_capabilities"}]
    assert parser.feed(b'{"execute": "query-status"}{"exec') == [{"execute": "query-status"}]
    assert parser.feed(b'ute": "quit"}') == [{"execute": "quit"}]


def test_partial_input_is_kept() -> None:
    parser = JsonStreamParser()
    assert parser.feed(b'{"a": [1, 2') == []
    assert parser.feed(b"3") == []  # a number may go on
    assert parser.feed(b"], 'b': tr") == []
    assert parser.feed(b"ue}") == [{"a": [1, 23], "b": True}]


def test_flush_finishes_pending_input() -> None:
    parser = JsonStreamParser()
    assert parser.feed(b"12") == []
    assert outcome(parser.flush()) == [("value", 12)]
    assert parser.feed(b"[1,") == []
    assert outcome(parser.flush()) == [("error", e("premature EOI"))]
    assert parser.feed(b'"abc') == []
    assert outcome(parser.flush()) == [("error", e("stray '\"abc'"))]
    assert parser.flush() == []


# --- limits ----------------------------------------------------------------------


def test_nesting_limit() -> None:
    # 1024 levels are fine; the 1025th bracket is an error and is dropped, so
    # each closing bracket after it is an error of its own.
    assert qmp_replies(b"[" * 1024 + b"]" * 1024) == [QMP_INPUT_MUST_BE_OBJECT]
    replies = qmp_replies(b"[" * 1025 + b"]" * 1025)
    assert replies == ["JSON nesting depth limit exceeded"] + [e("expecting value")] * 1025
    # The count starts again after an error: 3000 brackets give two errors
    # and leave 950 open.
    replies = qmp_replies(b"[" * 3000 + b"]" * 3000)
    assert replies.count("JSON nesting depth limit exceeded") == 2
    assert replies.count(QMP_INPUT_MUST_BE_OBJECT) == 1
    assert replies.count(e("expecting value")) == 2050
    assert MAX_NESTING == 1024


def test_deep_nesting_never_recurses() -> None:
    assert qmp_replies(b"[" * 100_000) == ["JSON nesting depth limit exceeded"] * 97
    assert parse_error("[" * 100_000) == "JSON nesting depth limit exceeded"
    assert parse_error("{" * 100_000) == "JSON nesting depth limit exceeded"
    deep = parse_json('{"a":' * 1000 + "1" + "}" * 1000)
    assert dump_json(deep).count("{") == 1000
    nested: list[object] = []
    for _ in range(50_000):
        nested = [nested]
    assert dump_json(nested) == "[" * 50_001 + "]" * 50_001


def test_token_count_limit() -> None:
    # [[], 1, 1, ..., 1]: 2**21 tokens are fine, one more is an error.
    ok = b"[[]," + b"1," * 1048573 + b"1]"
    assert qmp_replies(ok) == [QMP_INPUT_MUST_BE_OBJECT]
    too_many = b"[[]," + b"1," * 1048574 + b"1]"
    assert qmp_replies(too_many) == ["JSON token count limit exceeded", e("expecting value")]
    assert MAX_TOKEN_COUNT == 2 << 20


def test_token_size_limit() -> None:
    # ["aaa"]: the tokens' total size plus one must stay within 64 MiB.
    def message(n: int) -> bytes:
        return b'["' + b"a" * n + b'"]'

    assert qmp_replies(message(67108859)) == [QMP_INPUT_MUST_BE_OBJECT]
    assert qmp_replies(message(67108860)) == ["JSON token size limit exceeded"]
    assert qmp_replies(message(67108861)) == [
        "JSON token size limit exceeded",
        e("expecting value"),
    ]
    assert MAX_TOKEN_SIZE == 64 << 20


def test_oversized_token_is_cut() -> None:
    # The lexer cuts a token at 64 MiB + 1 bytes and lexes the rest afresh.
    data = b'"' + b"a" * (MAX_TOKEN_SIZE + 5) + b'"\n{"execute":"quit"}'
    expected = [
        "JSON token size limit exceeded",
        e("invalid keyword 'aaaaa'"),
        e("stray '\"\n'"),
        "<object>",
    ]
    assert qmp_replies(data) == expected
    parser = JsonStreamParser()
    chunks = [data[i : i + 1_000_000] for i in range(0, len(data), 1_000_000)]
    assert [r for chunk in chunks for r in feed_all(chunk, parser)][-1] == (
        "value",
        {"execute": "quit"},
    )


# --- dump_json -----------------------------------------------------------------------

DUMPS: list[tuple[object, str]] = [
    ({"return": {}}, '{"return": {}}'),
    ([1, 2], "[1, 2]"),
    ([], "[]"),
    (None, "null"),
    (True, "true"),
    (False, "false"),
    ("x", '"x"'),
    # QDict order: "minor" and "micro" share bucket 225, newest first.
    ({"major": 7, "minor": 2, "micro": 22}, '{"micro": 22, "minor": 2, "major": 7}'),
    (
        {
            "id": "iothread1",
            "thread-id": 1,
            "poll-max-ns": 32768,
            "poll-grow": 0,
            "poll-shrink": 0,
            "aio-max-batch": 0,
        },
        '{"poll-shrink": 0, "thread-id": 1, "aio-max-batch": 0, "poll-grow": 0, '
        '"poll-max-ns": 32768, "id": "iothread1"}',
    ),
    (
        {"return": {"running": True, "singlestep": False, "status": "running"}, "id": 1},
        '{"return": {"status": "running", "singlestep": false, "running": true}, "id": 1}',
    ),
    (
        '\u00e9\U0001f600 / \x7f \x01 \b\f\n\r\t " \\ \x00 x',
        '"\\u00E9\\uD83D\\uDE00 / \\u007F \\u0001 \\b\\f\\n\\r\\t \\" \\\\ \\u0000 x"',
    ),
    ("'", '"\'"'),
    (
        [0.1, 1.0, 1e300, -0.0, 18446744073709551615, 1.8446744073709552e19],
        "[0.10000000000000001, 1, 1.0000000000000001e+300, -0, 18446744073709551615, "
        "1.8446744073709552e+19]",
    ),
    (
        [-9223372036854775808, -9.2233720368547758e18, 1.5e-7, 1e20, 100.0],
        "[-9223372036854775808, -9.2233720368547758e+18, 1.4999999999999999e-07, 1e+20, 100]",
    ),
    ([math.inf, -math.inf, 5e-324, 0.0], "[inf, -inf, 4.9406564584124654e-324, 0]"),
    # QEMU cannot decode noncharacters or stray bytes and prints U+FFFD.
    ("\uffff\ufdd0\U0001fffe", '"\\uFFFD\\uFFFD\\uFFFD"'),
    ("a\udcc3(b", '"a\\uFFFD(b"'),
    ("\udced\udca0\udc80", '"\\uFFFD"'),  # an encoded surrogate is one bad sequence
    ("\udcc0\udc80", '"\\u0000"'),  # C0 80
]


@pytest.mark.parametrize(("value", "text"), DUMPS)
def test_dump(value: object, text: str) -> None:
    assert dump_json(value) == text


def test_dump_pretty() -> None:
    # Verified with -qmp-pretty (which ends lines with \r\n on the wire).
    value = [{}, [], {"a": {}, "b": [[]], "c": [1, {"x": None}]}, "s", 1.5, True]
    assert dump_json(value, pretty=True) == (
        "[\n"
        "    {\n"
        "    },\n"
        "    [\n"
        "    ],\n"
        "    {\n"
        '        "a": {\n'
        "        },\n"
        '        "b": [\n'
        "            [\n"
        "            ]\n"
        "        ],\n"
        '        "c": [\n'
        "            1,\n"
        "            {\n"
        '                "x": null\n'
        "            }\n"
        "        ]\n"
        "    },\n"
        '    "s",\n'
        "    1.5,\n"
        "    true\n"
        "]"
    )
    assert dump_json({"return": {}}, pretty=True) == '{\n    "return": {\n    }\n}'
    assert dump_json({}, pretty=True) == "{\n}"
    assert dump_json(32768, pretty=True) == "32768"  # HMP qom-get prints this + "\r\n"
    assert dump_json("abc", pretty=True) == '"abc"'


def test_dump_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        dump_json({"a": object()})


def test_qdict_order() -> None:
    assert qdict_order(["major", "minor", "micro"]) == ["micro", "minor", "major"]
    assert qdict_order(["major", "micro", "minor"]) == ["minor", "micro", "major"]
    assert qdict_order(["return", "id"]) == ["return", "id"]
    assert qdict_order(["id", "error"]) == ["id", "error"]
    # A key inserted again keeps its place.
    assert qdict_order(["minor", "micro", "minor"]) == ["micro", "minor"]
    assert qdict_order([]) == []


def test_to_c_bytes() -> None:
    assert to_c_bytes("a\x00b") == b"a\xc0\x80b"
    assert to_c_bytes("caf\u00e9") == b"caf\xc3\xa9"
    assert to_c_bytes("\udc80") == b"\x80"


# --- properties ------------------------------------------------------------------------

_NONCHARACTERS = {*range(0xFDD0, 0xFDF0)} | {
    plane << 16 | low for plane in range(17) for low in (0xFFFE, 0xFFFF)
}
_text = st.text(
    st.characters(exclude_categories=["Cs"]).filter(lambda c: ord(c) not in _NONCHARACTERS),
    max_size=8,
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=5),
    max_leaves=20,
)


@given(json_values, st.booleans())
def test_round_trip(value: object, pretty: bool) -> None:
    text = dump_json(value, pretty=pretty)
    assert text.isascii()
    assert parse_json(text) == value
    # The standard library reads the same value, floats aside ("inf" etc.).
    assert json.loads(text) == value


@given(json_values)
def test_stream_of_dumped_values(value: object) -> None:
    text = dump_json({"execute": "x", "arguments": {"v": value}}).encode()
    assert feed_all(text * 3) == [("value", {"execute": "x", "arguments": {"v": value}})] * 3


# Pieces that reach every lexer state and error path.
_ATOMS = [
    b"{", b"}", b"[", b"]", b":", b",", b'"a"', b"'b'", b'"', b"'", b"\\", b"\\u", b"0041",
    b"d800", b"\\udc00", b"1", b"0", b"-", b".", b"e", b"E", b"+", b"true", b"nul", b"x",
    b"T", b" ", b"\n", b"\t", b"\x00", b"\x01", b"\x80", b"\xc3\xa9", b"\xc0\x80", b"\xfe",
    b"\xff", b"\xef\xbf\xbf", b"%", b"12345678901234567890123", b'"k":', b"\\'", b'\\"',
    b'{"execute":"query-status"}', b"{'a': [1, 2.5e3, null]}", b"1.5e3",
]  # fmt: skip
streams = st.lists(st.sampled_from(_ATOMS), max_size=30).map(b"".join) | st.binary(max_size=60)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(streams, st.lists(st.integers(min_value=0), max_size=10))
def test_chunking_does_not_matter(data: bytes, cuts: list[int]) -> None:
    whole = JsonStreamParser()
    expected = feed_all(data, whole) + outcome(whole.flush())
    chunked = JsonStreamParser()
    got = [r for chunk in _split(data, cuts) for r in feed_all(chunk, chunked)]
    assert got + outcome(chunked.flush()) == expected


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(streams)
def test_accelerated_paths_match_exact_model(data: bytes) -> None:
    exact = ExactParser()
    expected = [r for i in range(len(data)) for r in feed_all(data[i : i + 1], exact)]
    assert feed_all(data) == expected


@given(st.binary(max_size=200))
def test_feed_never_raises(data: bytes) -> None:
    parser = JsonStreamParser()
    for item in parser.feed(data) + parser.flush():
        if isinstance(item, JsonParseError):
            assert item.desc.startswith("JSON ")


@given(streams)
def test_parse_json_raises_only_json_errors(data: bytes) -> None:
    try:
        parse_json(data)
    except JsonParseError:
        pass
