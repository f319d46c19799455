"""QemuOpts and keyval parsing, and the scalar conversions that follow them.

Every row of the tables below was checked against QEMU 7.2.22
(``qemu-system-x86_64``, ``qemu-storage-daemon``, HMP ``object_add``):
the expected values are what QEMU stored (read back with ``qom-get``) and
the expected errors are what it printed, minus the program name and the
option location. ``tests/differential/test_opts_qemu.py`` re-runs a
selection against the installed binaries.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qomhost.errors import OptsError
from qomhost.qapi.json import qdict_order
from qomhost.qapi.opts import (
    ID_HINT,
    SIZE_HINT,
    HelpRequest,
    OptsList,
    OptType,
    id_wellformed,
    is_help_option,
    keyval_object_help,
    keyval_value_to,
    opts_list_value_to,
    opts_value_to,
    parse_keyval,
    parse_qemu_opts,
    qemu_opt_value_to,
    qemu_opts_object_help,
)


def _flag_warning(spelled: str, advice: str) -> str:
    return f"short-form boolean option '{spelled}' deprecated\nPlease use {advice} instead"


# --- QemuOpts syntax (qemu-system-x86_64 -object) ------------------------------

# (input, pairs, id, warnings); the QemuOpts syntax itself never fails.
QEMU_OPTS_CASES: list[tuple[str, list[tuple[str, str]], str | None, list[str]]] = [
    ("", [], None, []),
    ("secret,id=s,data=x,,y", [("qom-type", "secret"), ("id", "s"), ("data", "x,y")], "s", []),
    # ",," ends up in the value; a single comma ends it.
    ("secret,id=s,data=1,,,data=2", [("qom-type", "secret"), ("id", "s"),
                                     ("data", "1,"), ("data", "2")], "s", []),
    ("secret,id=s,data=1,,", [("qom-type", "secret"), ("id", "s"), ("data", "1,")], "s", []),
    ("secret,id=s,data=1,", [("qom-type", "secret"), ("id", "s"), ("data", "1")], "s", []),
    ("secret,id=s,data=", [("qom-type", "secret"), ("id", "s"), ("data", "")], "s", []),
    ("secret,id=s,data=a=b", [("qom-type", "secret"), ("id", "s"), ("data", "a=b")], "s", []),
    # The implied value honours ",," too.
    (",,id=x", [("qom-type", ",id=x")], "x", []),
    ("help,,x", [("qom-type", "help,x")], None, []),
    (",id=x", [("qom-type", ""), ("id", "x")], "x", []),
    ("=x", [("", "x")], None, []),
    ("secret,=x", [("qom-type", "secret"), ("", "x")], None, []),
    ("qom-type=secret,id=s", [("qom-type", "secret"), ("id", "s")], "s", []),
    ("secret=x", [("secret", "x")], None, []),
    # Flags.
    ("secret,id=s,data", [("qom-type", "secret"), ("id", "s"), ("data", "on")], "s",
     [_flag_warning("data", "data=on")]),
    ("secret,id=s,nodata", [("qom-type", "secret"), ("id", "s"), ("data", "off")], "s",
     [_flag_warning("nodata", "data=off")]),
    ("secret,id=s,delay", [("qom-type", "secret"), ("id", "s"), ("delay", "on")], "s",
     [_flag_warning("delay", "nodelay=off")]),
    ("secret,id=s,nodelay", [("qom-type", "secret"), ("id", "s"), ("delay", "off")], "s",
     [_flag_warning("nodelay", "nodelay=on")]),
    ("secret,id=s,no", [("qom-type", "secret"), ("id", "s"), ("", "off")], "s",
     [_flag_warning("no", "=off")]),
    ("secret,id=s,foo,,bar", [("qom-type", "secret"), ("id", "s"), ("foo", "on"), ("", "on"),
                              ("bar", "on")], "s",
     [_flag_warning("foo", "foo=on"), _flag_warning("", "=on"), _flag_warning("bar", "bar=on")]),
    ("secret,HELP", [("qom-type", "secret"), ("HELP", "on")], None,
     [_flag_warning("HELP", "HELP=on")]),
    # help and ? as flags do not warn; nohelp does (and still asks for help).
    ("secret,help", [("qom-type", "secret"), ("help", "on")], None, []),
    ("secret,?", [("qom-type", "secret"), ("?", "on")], None, []),
    ("secret,nohelp", [("qom-type", "secret"), ("help", "off")], None,
     [_flag_warning("nohelp", "help=off")]),
    # The id comes from a second scan without implied key: the first id wins,
    # a first element "id" is the flag id=on there, "noid" is id=off.
    ("secret,id=a,id=b", [("qom-type", "secret"), ("id", "a"), ("id", "b")], "a", []),
    ("id", [("qom-type", "id")], "on", []),
    ("secret,id", [("qom-type", "secret"), ("id", "on")], "on",
     [_flag_warning("id", "id=on")]),
    ("secret,noid,data=x", [("qom-type", "secret"), ("id", "off"), ("data", "x")], "off",
     [_flag_warning("noid", "id=off")]),
    ("y,,id=a", [("qom-type", "y,id=a")], "a", []),
]  # fmt: skip


@pytest.mark.parametrize(("text", "pairs", "ident", "warnings"), QEMU_OPTS_CASES)
def test_qemu_opts_table(
    text: str, pairs: list[tuple[str, str]], ident: str | None, warnings: list[str]
) -> None:
    result = parse_qemu_opts(text, "qom-type")
    assert result.pairs == pairs
    assert result.id == ident
    assert result.warnings == warnings


def test_qemu_opts_last_duplicate_wins() -> None:
    result = parse_qemu_opts("secret,id=s,data=1,format=raw,data=2", "qom-type")
    assert result.get("data") == "2"
    assert result.as_dict() == {"qom-type": "secret", "data": "2", "format": "raw", "id": "s"}
    assert result.get("bogus") is None


def test_qemu_opts_as_dict_uses_extracted_id() -> None:
    assert parse_qemu_opts("secret,id=a,id=b", "qom-type").as_dict() == {
        "qom-type": "secret",
        "id": "a",
    }
    assert "id" not in parse_qemu_opts("secret,data=x", "qom-type").as_dict()


def test_qemu_opts_without_implied_key() -> None:
    result = parse_qemu_opts("secret,data=x", None)
    assert result.pairs == [("secret", "on"), ("data", "x")]
    assert result.warnings == [_flag_warning("secret", "secret=on")]


def test_qemu_opts_stops_at_nul() -> None:
    assert parse_qemu_opts("secret,id=s\0,data=x", "qom-type").pairs == [
        ("qom-type", "secret"),
        ("id", "s"),
    ]


# --- the option group: ids, desc, help -----------------------------------------


def test_optslist_duplicate_id_object() -> None:
    group = OptsList("object", "qom-type")
    group.parse("secret,id=a,data=1")
    with pytest.raises(OptsError) as info:
        group.parse("y,,id=a")
    assert info.value.desc == "Duplicate ID 'a' for object"
    assert "a" in group


def test_optslist_duplicate_id_chardev() -> None:
    chardev = OptsList("chardev", "backend")
    chardev.parse("null,id=a")
    with pytest.raises(OptsError) as info:
        chardev.parse("null,id=a")
    assert info.value.desc == "Duplicate ID 'a' for chardev"


def test_optslist_groups_are_separate() -> None:
    objects = OptsList("object", "qom-type")
    chardevs = OptsList("chardev", "backend")
    objects.parse("secret,id=a,data=1")
    chardevs.parse("null,id=a")


def test_optslist_id_less_entries_never_clash() -> None:
    group = OptsList("object", "qom-type")
    group.parse("secret,data=1")
    group.parse("secret,data=1")


@pytest.mark.parametrize("text", ["secret,id=1x", "secret,id=s,,data=1", "secret,id=", "x,id=a b"])
def test_optslist_bad_id(text: str) -> None:
    with pytest.raises(OptsError) as info:
        OptsList("object", "qom-type").parse(text)
    assert info.value.desc == "Parameter 'id' expects an identifier"
    assert info.value.hint == ID_HINT


def test_optslist_id_checked_before_anything_else() -> None:
    group = OptsList("chardev", "backend", desc={"backend": "string"})
    with pytest.raises(OptsError, match="expects an identifier"):
        group.parse("null,bogus=1,id=1x")


def test_optslist_failed_parse_registers_nothing() -> None:
    group = OptsList("chardev", "backend", desc={"backend": "string"})
    with pytest.raises(OptsError, match="Invalid parameter 'bogus'"):
        group.parse("null,id=a,bogus=1")
    group.parse("null,id=a")


def test_optslist_remove_allows_reuse() -> None:
    group = OptsList("object", "qom-type")
    group.parse("secret,id=a")
    group.remove("a")
    group.parse("secret,id=a")


def test_optslist_merge_lists_refuse_id() -> None:
    name = OptsList("name", "guest", merge_lists=True)
    with pytest.raises(OptsError) as info:
        name.parse("foo,id=x")
    assert info.value.desc == "Invalid parameter 'id'"
    name.parse("foo")
    name.parse("foo")


CHARDEV_DESC: dict[str, OptType] = {
    "backend": "string",
    "path": "string",
    "mux": "bool",
    "reconnect": "number",
    "size": "size",
}

BAD_SIZE = "Parameter 'size' expects a non-negative number below 2^64"

# (input, error or None, hint) for a group with known keys (-chardev).
CHARDEV_CASES: list[tuple[str, str | None, str | None]] = [
    ("null,id=a,bogus=1", "Invalid parameter 'bogus'", None),
    ("null,id=a,?=1", "Invalid parameter '?'", None),
    ("null,id=a,nohelp", "Invalid parameter 'help'", None),
    ("null,id=a,mux", None, None),
    ("null,id=a,mux=yes", None, None),
    ("null,id=a,mux=y", None, None),
    ("null,id=a,mux=xx", "Parameter 'mux' expects 'on' or 'off'", None),
    ("socket,id=a,reconnect=x", "Parameter 'reconnect' expects a number", None),
    ("socket,id=a,reconnect=0x10k", "Parameter 'reconnect' expects a number", None),
    ("socket,id=a,reconnect=-1", None, None),
    (
        "socket,id=a,reconnect=99999999999999999999",
        "Value '99999999999999999999' is too large for parameter 'reconnect'",
        None,
    ),
    ("ringbuf,id=a,size=x", BAD_SIZE, SIZE_HINT),
    ("ringbuf,id=a,size=-1", BAD_SIZE, SIZE_HINT),
    ("ringbuf,id=a,size=1.5", BAD_SIZE, SIZE_HINT),
    ("ringbuf,id=a,size=16E", "Value '16E' is out of range for parameter 'size'", None),
    ("null,id=a,bogus=1,help", "Invalid parameter 'bogus'", None),
]


@pytest.mark.parametrize(("text", "error", "hint"), CHARDEV_CASES)
def test_optslist_with_desc(text: str, error: str | None, hint: str | None) -> None:
    group = OptsList("chardev", "backend", desc=CHARDEV_DESC)
    if error is None:
        group.parse(text)
        return
    with pytest.raises(OptsError) as info:
        group.parse(text)
    assert info.value.desc == error
    assert info.value.hint == hint


def test_optslist_warnings_survive_an_error() -> None:
    group = OptsList("chardev", "backend", desc=CHARDEV_DESC)
    seen: list[str] = []
    with pytest.raises(OptsError, match="Invalid parameter 'help'"):
        group.parse("null,id=a,nohelp", warnings=seen)
    assert seen == [_flag_warning("nohelp", "help=off")]


def test_optslist_hex_size_warning() -> None:
    group = OptsList("chardev", "backend", desc=CHARDEV_DESC)
    result = group.parse("ringbuf,id=a,size=0x10k")
    assert result.warnings == ["Using a multiplier suffix on hex numbers is deprecated: 0x10k"]


@pytest.mark.parametrize("text", ["null,id=a,help,bogus=1", "null,id=a,?", "null,?"])
def test_optslist_help_wanted_with_desc(text: str) -> None:
    group = OptsList("chardev", "backend", desc=CHARDEV_DESC)
    assert group.parse(text).help_wanted
    # Asking for help registers nothing.
    group.parse("null,id=a")


def test_optslist_without_desc_has_no_help_wanted() -> None:
    result = OptsList("object", "qom-type").parse("secret,id=s,help")
    assert not result.help_wanted
    assert result.has_help_opt()


# --- -object help detection (QemuOpts) ------------------------------------------

LIST_ALL = HelpRequest(None, True)

# (input, help request); rows with None go on to create the object.
OBJECT_HELP_CASES: list[tuple[str, HelpRequest | None]] = [
    ("help", LIST_ALL),
    ("?", LIST_ALL),
    ("qom-type=help", LIST_ALL),
    ("qom-type=?", LIST_ALL),
    ("secret,qom-type=help", LIST_ALL),
    ("help,id=x", LIST_ALL),
    ("secret,help", HelpRequest("secret", False)),
    ("secret,?", HelpRequest("secret", False)),
    ("secret,help=foo", HelpRequest("secret", False)),
    ("secret,?=x", HelpRequest("secret", False)),
    ("secret,id=s,help=foo", HelpRequest("secret", False)),
    ("secret,nohelp", HelpRequest("secret", False)),
    ("help,qom-type=secret,?", HelpRequest("secret", False)),
    ("secret,help,,x", HelpRequest("secret", False)),
    ("authz-pam,help", HelpRequest("authz-pam", False)),
    ("can-bus,help", HelpRequest("can-bus", False)),
    ("Help", None),
    ("secret,HELP", None),
    ("help,,x", None),
    # No qom-type: "Parameter 'qom-type' is missing" comes first.
    ("help=1", None),
    ("id=x,help", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "request_"), OBJECT_HELP_CASES)
def test_object_help_qemu_opts(text: str, request_: HelpRequest | None) -> None:
    assert qemu_opts_object_help(parse_qemu_opts(text, "qom-type")) == request_


# --- keyval syntax (qemu-storage-daemon --object, HMP object_add) -------------

# (input, result) for strings QEMU accepts.
KEYVAL_OK: list[tuple[str, dict[str, object]]] = [
    ("", {}),
    ("secret,id=s,data=x,,y", {"qom-type": "secret", "id": "s", "data": "x,y"}),
    ("secret,id=s,data=1,", {"qom-type": "secret", "id": "s", "data": "1"}),
    ("secret,id=s,data=1,,", {"qom-type": "secret", "id": "s", "data": "1,"}),
    ("secret,id=s,data=,", {"qom-type": "secret", "id": "s", "data": ""}),
    ("secret,id=s,data=a=b", {"qom-type": "secret", "id": "s", "data": "a=b"}),
    ("secret,id=s,data=1,data=2,,3", {"qom-type": "secret", "id": "s", "data": "2,3"}),
    ("qom-type=secret,id=s,data=1", {"qom-type": "secret", "id": "s", "data": "1"}),
    ("secret=x", {"secret": "x"}),
    ("helpx", {"qom-type": "helpx"}),
    ("?x", {"qom-type": "?x"}),
    ("qom-type=help", {"qom-type": "help"}),
    ("secret,id=s,help=1", {"qom-type": "secret", "id": "s", "help": "1"}),
    ("secret,id=s,__com.x_y=1", {"qom-type": "secret", "id": "s", "__com.x_y": "1"}),
    ("secret,id=s,x.__a.b_c.d=1", {"qom-type": "secret", "id": "s", "x": {"__a.b_c": {"d": "1"}}}),
    ("secret,id=s,A=1", {"qom-type": "secret", "id": "s", "A": "1"}),
    ("secret,id=s,x.a-b_c=1", {"qom-type": "secret", "id": "s", "x": {"a-b_c": "1"}}),
    (
        "authz-list,id=a,rules.1.match=b,rules.0.match=x,,y,rules.0.match=a,"
        "rules.0.policy=allow,rules.1.policy=deny,rules.1.format=glob",
        {
            "qom-type": "authz-list",
            "id": "a",
            "rules": [
                {"match": "a", "policy": "allow"},
                {"match": "b", "policy": "deny", "format": "glob"},
            ],
        },
    ),
    # "0" and "00" are one element; the later key in QDict order wins.
    ("thread-context,cpu-affinity.0=0,cpu-affinity.00=1",
     {"qom-type": "thread-context", "cpu-affinity": ["1"]}),
    ("thread-context,cpu-affinity.00=0,cpu-affinity.0=1",
     {"qom-type": "thread-context", "cpu-affinity": ["0"]}),
    ("thread-context,cpu-affinity.1=0,cpu-affinity.0=1",
     {"qom-type": "thread-context", "cpu-affinity": ["1", "0"]}),
    ("secret,id=s,x." + "a" * 127 + "=1", {"qom-type": "secret", "id": "s", "x": {"a" * 127: "1"}}),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), KEYVAL_OK)
def test_keyval_ok(text: str, expected: dict[str, object]) -> None:
    result = parse_keyval(text, "qom-type")
    assert result == expected
    assert not result.help_wanted


# (input, error) for strings QEMU rejects while parsing.
KEYVAL_ERRORS: list[tuple[str, str]] = [
    ("=x", "Invalid parameter ''"),
    ("secret,=x", "Invalid parameter ''"),
    ("secret,id=s,=x", "Invalid parameter ''"),
    (",id=x", "Invalid parameter ''"),
    (",,id=x", "Invalid parameter ''"),
    ("secret,,id=s,data=1", "Invalid parameter ''"),
    ("help,,", "Invalid parameter ''"),
    ("secret,id=s,data", "Expected '=' after parameter 'data'"),
    ("secret,id=s,nodata", "Expected '=' after parameter 'nodata'"),
    ("secret,id", "Expected '=' after parameter 'id'"),
    ("help,secret", "Expected '=' after parameter 'secret'"),
    ("secret,helpx", "Expected '=' after parameter 'helpx'"),
    ("secret,nohelp", "Expected '=' after parameter 'nohelp'"),
    ("secret,Help", "Expected '=' after parameter 'Help'"),
    ("a..b=1", "Invalid parameter 'a..b'"),
    ("secret,id=s,a..b=1", "Invalid parameter 'a..b'"),
    ("secret,id=s,a.=1", "Invalid parameter 'a.'"),
    ("secret,id=s,.a=1", "Invalid parameter '.a'"),
    ("secret,.=1", "Invalid parameter '.'"),
    ("secret,id=s,0=1", "Invalid parameter '0'"),
    ("secret,id=s,a.0x=1", "Invalid parameter 'a.0x'"),
    ("secret,id=s,x.0a=1", "Invalid parameter 'x.0a'"),
    ("secret,id=s,x.0.=1", "Invalid parameter 'x.0.'"),
    ("secret,id=s,a b=1", "Invalid parameter 'a b'"),
    ("secret,id=s,a.-1=1", "Invalid parameter 'a.-1'"),
    ("secret,id=s,_a=1", "Invalid parameter '_a'"),
    ("secret,?x", "Invalid parameter '?x'"),
    ("secret,id=s,a=1,a.b=2", "Parameters 'a.*' used inconsistently"),
    ("secret,id=s,a.b=1,a=2", "Parameters 'a.*' used inconsistently"),
    ("secret,id=s,a.b=1,a.b.c=2", "Parameters 'a.b.*' used inconsistently"),
    ("secret,id=s,a.0=1,a.b=2", "Parameters 'a.*' used inconsistently"),
    ("secret,id=s,x.a=1,x.0=1", "Parameters 'x.*' used inconsistently"),
    ("secret,id=s,x.0=1,x.0.a=1", "Parameters 'x.0.*' used inconsistently"),
    ("secret,id=s,a.1=1", "Parameter 'a.0' missing"),
    ("secret,id=s,a.0=1,a.2=1", "Parameter 'a.1' missing"),
    ("secret,id=s,a.99999999999=1", "Parameter 'a.0' missing"),
    # Errors are found in QDict order, not command-line order.
    ("secret,id=s,x.1=1,y.1=1", "Parameter 'x.0' missing"),
    ("secret,id=s,y.1=1,x.1=1", "Parameter 'x.0' missing"),
    ("secret,id=s,b.1=1,x.1=1", "Parameter 'x.0' missing"),
    ("secret,id=s,x.1=1,b.1=1", "Parameter 'x.0' missing"),
    # List errors are found even when help was asked for.
    ("secret,help,a..b=1", "Invalid parameter 'a..b'"),
    ("secret,help,a.1=2", "Parameter 'a.0' missing"),
    ("secret,id=s," + "a" * 128 + "=1", "Parameter '" + "a" * 128 + "' is too long"),
    ("secret,id=s,x." + "a" * 128 + "=1", "Parameter fragment '" + "a" * 128 + "' is too long"),
    ("secret,id=s," + "a" * 128 + ".x=1", "Parameter fragment '" + "a" * 128 + "' is too long"),
]


@pytest.mark.parametrize(("text", "error"), KEYVAL_ERRORS)
def test_keyval_errors(text: str, error: str) -> None:
    with pytest.raises(OptsError) as info:
        parse_keyval(text, "qom-type")
    assert info.value.desc == error


# (input, help request) for keyval --object strings.
KEYVAL_HELP_CASES: list[tuple[str, HelpRequest | None]] = [
    ("help", LIST_ALL),
    ("?", LIST_ALL),
    ("help,id=x", LIST_ALL),
    ("id=x,help", LIST_ALL),
    ("secret,help", HelpRequest("secret", True)),
    ("secret,?", HelpRequest("secret", True)),
    ("secret,help,id=s", HelpRequest("secret", True)),
    ("secret,help,", HelpRequest("secret", True)),
    ("authz-pam,help", HelpRequest("authz-pam", True)),
    ("qom-type.a=1,help", LIST_ALL),
    ("secret,help=1", None),
    ("qom-type=help", None),
    ("qom-type=?", None),
    ("help=secret", None),
]


@pytest.mark.parametrize(("text", "request_"), KEYVAL_HELP_CASES)
def test_object_help_keyval(text: str, request_: HelpRequest | None) -> None:
    assert keyval_object_help(parse_keyval(text, "qom-type")) == request_


def test_keyval_help_not_available() -> None:
    with pytest.raises(OptsError) as info:
        parse_keyval("a=1,help", allow_help=False)
    assert info.value.desc == "Help is not available for this option"
    assert parse_keyval("a=1,help=2", allow_help=False) == {"a": "1", "help": "2"}


def test_keyval_without_implied_key() -> None:
    with pytest.raises(OptsError, match="Expected '=' after parameter 'secret'"):
        parse_keyval("secret,id=s")


def test_keyval_stops_at_nul() -> None:
    assert parse_keyval("a=1\0,b", None) == {"a": "1"}


def test_keyval_keeps_command_line_order() -> None:
    assert list(parse_keyval("y=1,x=2,b=3", None)) == ["y", "x", "b"]


def test_qdict_order() -> None:
    # Bucket numbers: "0" 110, "x" 134, "00" 147, "y" 241, "b" 340.
    assert qdict_order(["b", "y", "00", "x", "0"]) == ["0", "x", "00", "y", "b"]
    assert qdict_order([]) == []


# --- opts visitor conversions (qemu-system-x86_64 -object) ---------------------

INT64_EXPECTS = "Parameter 'poll-max-ns' expects an int64 value"
UINT64_EXPECTS = "Parameter 'cbitpos' expects a uint64 value"
BOOL_EXPECTS = "Parameter 'kernel-hashes' expects 'on' or 'off'"
SIZE_EXPECTS = "Parameter 'size' expects a size value"

# (kind, name, text, value or error)
OPTS_VALUE_CASES: list[tuple[str, str, str, object]] = [
    ("int64", "poll-max-ns", "10", 10),
    ("int64", "poll-max-ns", "0x10", 16),
    ("int64", "poll-max-ns", "0X1f", 31),
    ("int64", "poll-max-ns", "010", 8),
    ("int64", "poll-max-ns", " 5", 5),
    ("int64", "poll-max-ns", "\t7", 7),
    ("int64", "poll-max-ns", "\n7", 7),
    ("int64", "poll-max-ns", "\v7", 7),
    ("int64", "poll-max-ns", "+5", 5),
    ("int64", "poll-max-ns", "-5", -5),
    ("int64", "poll-max-ns", " -0x10", -16),
    ("int64", "poll-max-ns", "9223372036854775807", 2**63 - 1),
    ("int64", "poll-max-ns", "-9223372036854775808", -(2**63)),
    ("int64", "poll-max-ns", "08", INT64_EXPECTS),
    ("int64", "poll-max-ns", "5 ", INT64_EXPECTS),
    ("int64", "poll-max-ns", "", INT64_EXPECTS),
    ("int64", "poll-max-ns", "0x", INT64_EXPECTS),
    ("int64", "poll-max-ns", "1k", INT64_EXPECTS),
    ("int64", "poll-max-ns", "1e3", INT64_EXPECTS),
    ("int64", "poll-max-ns", "- 5", INT64_EXPECTS),
    ("int64", "poll-max-ns", "+-5", INT64_EXPECTS),
    ("int64", "poll-max-ns", "0b1", INT64_EXPECTS),
    ("int64", "poll-max-ns", "00x1", INT64_EXPECTS),
    ("int64", "poll-max-ns", "9223372036854775808", INT64_EXPECTS),
    ("int64", "poll-max-ns", "-9223372036854775809", INT64_EXPECTS),
    ("uint32", "cbitpos", "10", 10),
    ("uint32", "cbitpos", "0x10", 16),
    ("uint32", "cbitpos", "010", 8),
    ("uint32", "cbitpos", " 5", 5),
    ("uint32", "cbitpos", "+5", 5),
    ("uint32", "cbitpos", " +0x10", 16),
    ("uint32", "cbitpos", "4294967295", 2**32 - 1),
    ("uint32", "cbitpos", "-5", UINT64_EXPECTS),
    ("uint32", "cbitpos", " -5", UINT64_EXPECTS),
    ("uint32", "cbitpos", "-0", UINT64_EXPECTS),
    ("uint32", "cbitpos", "", UINT64_EXPECTS),
    ("uint32", "cbitpos", "0x", UINT64_EXPECTS),
    ("uint32", "cbitpos", "1k", UINT64_EXPECTS),
    ("uint32", "cbitpos", "5 ", UINT64_EXPECTS),
    ("uint32", "cbitpos", "18446744073709551616", UINT64_EXPECTS),
    ("uint32", "cbitpos", "-18446744073709551615", UINT64_EXPECTS),
    ("uint32", "cbitpos", "4294967296", "Parameter 'cbitpos' expects uint32_t"),
    ("uint32", "cbitpos", "18446744073709551615", "Parameter 'cbitpos' expects uint32_t"),
    ("int32", "serial", "-5", -5),
    ("int32", "serial", "0x7fffffff", 2**31 - 1),
    ("int32", "serial", "-2147483648", -(2**31)),
    ("int32", "serial", "2147483648", "Parameter 'serial' expects int32_t"),
    ("int32", "serial", "-2147483649", "Parameter 'serial' expects int32_t"),
    ("int32", "serial", "9223372036854775808", "Parameter 'serial' expects an int64 value"),
    ("int32", "serial", "x", "Parameter 'serial' expects an int64 value"),
    ("bool", "kernel-hashes", "on", True),
    ("bool", "kernel-hashes", "yes", True),
    ("bool", "kernel-hashes", "true", True),
    ("bool", "kernel-hashes", "y", True),
    ("bool", "kernel-hashes", "off", False),
    ("bool", "kernel-hashes", "no", False),
    ("bool", "kernel-hashes", "false", False),
    ("bool", "kernel-hashes", "n", False),
    ("bool", "kernel-hashes", "ON", BOOL_EXPECTS),
    ("bool", "kernel-hashes", "Yes", BOOL_EXPECTS),
    ("bool", "kernel-hashes", "1", BOOL_EXPECTS),
    ("bool", "kernel-hashes", "0", BOOL_EXPECTS),
    ("bool", "kernel-hashes", "", BOOL_EXPECTS),
    ("bool", "kernel-hashes", "xyz", BOOL_EXPECTS),
    ("bool", "kernel-hashes", " on", BOOL_EXPECTS),
    ("bool", "kernel-hashes", "on ", BOOL_EXPECTS),
    ("str", "data", "x,y", "x,y"),
    ("str", "data", "", ""),
    ("size", "size", "1M", 1 << 20),
    ("size", "size", "1m", 1 << 20),
    ("size", "size", "1k", 1024),
    ("size", "size", "1K", 1024),
    ("size", "size", "1g", 1 << 30),
    ("size", "size", "1b", 1),
    ("size", "size", "1B", 1),
    ("size", "size", "1.5k", 1536),
    ("size", "size", "0.5k", 512),
    ("size", "size", "1.k", 1024),
    ("size", "size", "1.", 1),
    ("size", "size", "1.0", 1),
    ("size", "size", "0x1000", 4096),
    ("size", "size", "0x1b", 27),
    ("size", "size", " 0x10", 16),
    ("size", "size", "010", 10),
    ("size", "size", " 4k", 4096),
    ("size", "size", "+4k", 4096),
    ("size", "size", "1.0000000000000000001k", 1024),
    ("size", "size", "1.0000000000000000000000000000001b", 1),
    # The fraction rounds to 1.0, which QEMU's conversion turns into 0.
    ("size", "size", "1.99999999999999999999k", 1024),
    ("size", "size", "1.9999999999k", 2048),
    ("size", "size", "0.9999999999999999999999k", 0),
    ("size", "size", "0.0001k", 0),
    # A fraction strtod cannot represent makes QEMU skip one more character.
    ("size", "size", "1.5e-400xk", 1024),
    ("size", "size", "1.5e-400x", 1),
    ("size", "size", "1.5e999xk", 1024),
    ("size", "size", "1.5e999xb", 1),
    ("size", "size", "1." + "0" * 330 + "1x", 1),
    ("size", "size", "1." + "0" * 330 + "1xk", 1024),
    ("size", "size", "1." + "0" * 300 + "1k", 1024),
    ("size", "size", "1." + "0" * 330, 1),
    ("size", "size", "1." + "0" * 300 + "1x", SIZE_EXPECTS),
    ("size", "size", "1.5", SIZE_EXPECTS),
    ("size", "size", "0.5", SIZE_EXPECTS),
    ("size", "size", "0.5b", SIZE_EXPECTS),
    ("size", "size", "1.5b", SIZE_EXPECTS),
    ("size", "size", "-1", SIZE_EXPECTS),
    ("size", "size", "1.5e3k", SIZE_EXPECTS),
    ("size", "size", "1.5e5", SIZE_EXPECTS),
    ("size", "size", "1.5E3k", SIZE_EXPECTS),
    ("size", "size", "1.5e+k", SIZE_EXPECTS),
    ("size", "size", "16E", SIZE_EXPECTS),
    ("size", "size", "16384P", SIZE_EXPECTS),
    ("size", "size", "17179869183.99999999999G", SIZE_EXPECTS),
    ("size", "size", "4kB", SIZE_EXPECTS),
    ("size", "size", "", SIZE_EXPECTS),
    ("size", "size", "0x", SIZE_EXPECTS),
    ("size", "size", "0xk", SIZE_EXPECTS),
    ("size", "size", "0x.5k", SIZE_EXPECTS),
    ("size", "size", "0x10.5", SIZE_EXPECTS),
    ("size", "size", "1 k", SIZE_EXPECTS),
    ("size", "size", "18446744073709551616", SIZE_EXPECTS),
    ("size", "size", "99999999999999999999k", SIZE_EXPECTS),
    ("size", "size", "0x1ffffffffffffffff", SIZE_EXPECTS),
    ("size", "size", ".5k", SIZE_EXPECTS),
    ("size", "size", "1..5k", SIZE_EXPECTS),
    ("size", "size", "1.5.k", SIZE_EXPECTS),
    ("size", "size", "k", SIZE_EXPECTS),
    ("size", "size", "1kk", SIZE_EXPECTS),
    ("size", "size", "nan", SIZE_EXPECTS),
    ("size", "size", "inf", SIZE_EXPECTS),
    ("size", "size", "1.-5k", SIZE_EXPECTS),
    ("size", "size", "1.+5k", SIZE_EXPECTS),
    ("size", "size", "1. 5k", SIZE_EXPECTS),
    ("size", "size", "1.0x5k", SIZE_EXPECTS),
]


@pytest.mark.parametrize(("kind", "name", "text", "expected"), OPTS_VALUE_CASES)
def test_opts_value_to(kind: str, name: str, text: str, expected: object) -> None:
    if isinstance(expected, str) and kind != "str":
        with pytest.raises(OptsError) as info:
            opts_value_to(kind, name, text)
        assert info.value.desc == expected
    else:
        value = opts_value_to(kind, name, text)
        assert value == expected
        assert type(value) is type(expected)


# Sizes verified through values too large to read back: QEMU accepted them
# and failed only when allocating the memory.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1e", 1 << 60),
        ("1E", 1 << 60),
        ("1P", 1 << 50),
        ("1T", 1 << 40),
        ("15E", 15 << 60),
        ("1.5e", 3 << 59),
        ("16383P", 16383 << 50),
        ("15.9999999999E", 18446744073594259456),
        ("18446744073709551615", 2**64 - 1),
        ("18446744073709551615B", 2**64 - 1),
    ],
)
def test_opts_size_large(text: str, expected: int) -> None:
    assert opts_value_to("size", "size", text) == expected


@pytest.mark.parametrize(
    ("text", "value"), [("0x10k", 16384), ("0x1p3", None), ("0x10", 16), ("1k", 1024)]
)
def test_size_hex_suffix_warning(text: str, value: int | None) -> None:
    warnings: list[str] = []
    if value is None:
        with pytest.raises(OptsError, match="expects a size value"):
            opts_value_to("size", "size", text, warnings)
    else:
        assert opts_value_to("size", "size", text, warnings) == value
    expected = f"Using a multiplier suffix on hex numbers is deprecated: {text}"
    assert warnings == ([expected] if text.startswith("0x") and text != "0x10" else [])


RANGE_EXPECTS = "Parameter 'cpu-affinity' expects a uint64 value or range"

# (texts, values or error) for a uint16 list option on the command line.
OPTS_LIST_CASES: list[tuple[list[str], object]] = [
    (["0-1"], [0, 1]),
    (["1", "0"], [1, 0]),
    (["1-1"], [1]),
    ([" 0- 1"], [0, 1]),
    (["0-+1"], [0, 1]),
    (["0x0-0x1"], [0, 1]),
    (["0-65535"], list(range(65536))),
    (["0-65536"], RANGE_EXPECTS),
    (["0--1"], RANGE_EXPECTS),
    (["0-1x"], RANGE_EXPECTS),
    (["x"], RANGE_EXPECTS),
    (["1-0"], RANGE_EXPECTS),
    (["-1"], RANGE_EXPECTS),
    (["0-"], RANGE_EXPECTS),
    (["70000"], "Parameter 'null' expects uint16_t"),
    (["65535-65536"], "Parameter 'null' expects uint16_t"),
]


@pytest.mark.parametrize(("texts", "expected"), OPTS_LIST_CASES)
def test_opts_list_value_to(texts: list[str], expected: object) -> None:
    if isinstance(expected, str):
        with pytest.raises(OptsError) as info:
            opts_list_value_to("uint16", "cpu-affinity", texts)
        assert info.value.desc == expected
    else:
        assert opts_list_value_to("uint16", "cpu-affinity", texts) == expected


def test_opts_list_signed_ranges() -> None:
    assert opts_list_value_to("int64", "x", ["-5--3", "7"]) == [-5, -4, -3, 7]
    with pytest.raises(OptsError) as info:
        opts_list_value_to("int64", "x", ["1--3"])
    assert info.value.desc == "Parameter 'x' expects an int64 value or range"
    assert opts_list_value_to("str", "x", ["a", "b"]) == ["a", "b"]


# --- keyval visitor conversions --------------------------------------------------

INTEGER_EXPECTS = "Parameter 'poll-max-ns' expects integer"

# (kind, name, path, text, value or error)
KEYVAL_VALUE_CASES: list[tuple[str, str | None, str | None, str, object]] = [
    ("int64", "poll-max-ns", None, "10", 10),
    ("int64", "poll-max-ns", None, "0x10", 16),
    ("int64", "poll-max-ns", None, "010", 8),
    ("int64", "poll-max-ns", None, " 5", 5),
    ("int64", "poll-max-ns", None, "\t7", 7),
    ("int64", "poll-max-ns", None, "+5", 5),
    ("int64", "poll-max-ns", None, "-5", -5),
    ("int64", "poll-max-ns", None, " -0x10", -16),
    ("int64", "poll-max-ns", None, "9223372036854775807", 2**63 - 1),
    ("int64", "poll-max-ns", None, "08", INTEGER_EXPECTS),
    ("int64", "poll-max-ns", None, "5 ", INTEGER_EXPECTS),
    ("int64", "poll-max-ns", None, "", INTEGER_EXPECTS),
    ("int64", "poll-max-ns", None, "0x", INTEGER_EXPECTS),
    ("int64", "poll-max-ns", None, "1k", INTEGER_EXPECTS),
    ("int64", "poll-max-ns", None, "00x1", INTEGER_EXPECTS),
    ("int64", "poll-max-ns", None, "9223372036854775808", INTEGER_EXPECTS),
    ("int64", "poll-max-ns", None, "-9223372036854775809", INTEGER_EXPECTS),
    ("int32", "serial", None, "-5", -5),
    ("int32", "serial", None, "2147483648", "Parameter 'serial' expects int32_t"),
    ("int32", "serial", None, "-2147483649", "Parameter 'serial' expects int32_t"),
    ("int32", "serial", None, "x", "Parameter 'serial' expects integer"),
    ("int32", "serial", None, "0x", "Parameter 'serial' expects integer"),
    ("uint32", "cbitpos", None, "10", 10),
    ("uint32", "cbitpos", None, "-1", "Parameter 'cbitpos' expects uint32_t"),
    ("uint32", "cbitpos", None, "4294967296", "Parameter 'cbitpos' expects uint32_t"),
    ("uint32", "cbitpos", None, "18446744073709551616", "Parameter 'cbitpos' expects integer"),
    ("uint32", "cbitpos", None, "x", "Parameter 'cbitpos' expects integer"),
    # List elements: parse errors name the path, range errors name 'null'.
    ("uint16", None, "cpu-affinity.0", "1", 1),
    ("uint16", None, "cpu-affinity.0", "-18446744073709551615", 1),
    ("uint16", None, "cpu-affinity.0", "-1", "Parameter 'null' expects uint16_t"),
    ("uint16", None, "cpu-affinity.0", "65536", "Parameter 'null' expects uint16_t"),
    ("uint16", None, "cpu-affinity.0", "70000", "Parameter 'null' expects uint16_t"),
    ("uint16", None, "cpu-affinity.0", "18446744073709551615", "Parameter 'null' expects uint16_t"),
    ("uint16", None, "cpu-affinity.0", "x", "Parameter 'cpu-affinity.0' expects integer"),
    (
        "uint16",
        None,
        "cpu-affinity.0",
        "18446744073709551616",
        "Parameter 'cpu-affinity.0' expects integer",
    ),
    (
        "uint16",
        None,
        "cpu-affinity.0",
        "-18446744073709551616",
        "Parameter 'cpu-affinity.0' expects integer",
    ),
    ("bool", "kernel-hashes", None, "on", True),
    ("bool", "kernel-hashes", None, "yes", True),
    ("bool", "kernel-hashes", None, "true", True),
    ("bool", "kernel-hashes", None, "y", True),
    ("bool", "kernel-hashes", None, "off", False),
    ("bool", "kernel-hashes", None, "no", False),
    ("bool", "kernel-hashes", None, "false", False),
    ("bool", "kernel-hashes", None, "n", False),
    ("bool", "kernel-hashes", None, "ON", BOOL_EXPECTS),
    ("bool", "kernel-hashes", None, "1", BOOL_EXPECTS),
    ("bool", "kernel-hashes", None, "", BOOL_EXPECTS),
    ("bool", "kernel-hashes", None, "xyz", BOOL_EXPECTS),
    ("bool", "verify-peer", None, "xyz", "Parameter 'verify-peer' expects 'on' or 'off'"),
    ("size", "size", None, "1k", 1024),
    ("size", "size", None, "1.k", 1024),
    ("size", "size", None, "0x10k", 16384),
    ("size", "size", None, "1.5", "Parameter 'size' expects size"),
    ("size", "size", None, "x", "Parameter 'size' expects size"),
    ("size", "size", None, "-1", "Parameter 'size' expects size"),
    ("size", "size", None, "16E", "Parameter 'size' expects size"),
    ("str", "data", None, "x,y", "x,y"),
]


@pytest.mark.parametrize(("kind", "name", "path", "text", "expected"), KEYVAL_VALUE_CASES)
def test_keyval_value_to(
    kind: str, name: str | None, path: str | None, text: str, expected: object
) -> None:
    if isinstance(expected, str) and kind != "str":
        with pytest.raises(OptsError) as info:
            keyval_value_to(kind, name, text, path=path)
        assert info.value.desc == expected
    else:
        value = keyval_value_to(kind, name, text, path=path)
        assert value == expected
        assert type(value) is type(expected)


def test_keyval_size_warning() -> None:
    warnings: list[str] = []
    assert keyval_value_to("size", "size", "0x10k", warnings=warnings) == 16384
    assert warnings == ["Using a multiplier suffix on hex numbers is deprecated: 0x10k"]


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        opts_value_to("float", "x", "1")
    with pytest.raises(ValueError):
        keyval_value_to("float", "x", "1")


def test_qemu_opt_value_to() -> None:
    assert qemu_opt_value_to("number", "reconnect", "-1") == 2**64 - 1
    assert qemu_opt_value_to("number", "reconnect", "0x10") == 16
    assert qemu_opt_value_to("bool", "mux", "yes") is True
    assert qemu_opt_value_to("size", "size", "1k") == 1024
    assert qemu_opt_value_to("string", "path", "a,b") == "a,b"
    with pytest.raises(OptsError, match="expects a number"):
        qemu_opt_value_to("number", "reconnect", "99999999999999999999x")


def test_small_helpers() -> None:
    assert is_help_option("help")
    assert is_help_option("?")
    assert not is_help_option("HELP")
    assert id_wellformed("a-b.c_d")
    assert id_wellformed("x..")
    assert not id_wellformed("_a")
    assert not id_wellformed("é")


# --- properties ---------------------------------------------------------------------

# Text rich in the characters the parsers care about.
_SYNTAX = st.text(alphabet=st.sampled_from(list(",=.?_-0123456789hlpnoxaZ \t\0é")), max_size=40)
_ANY_TEXT = st.one_of(st.text(max_size=60), _SYNTAX)
_KINDS = ["str", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
          "uint64", "size", "any"]  # fmt: skip


@settings(max_examples=400)
@given(_ANY_TEXT, st.sampled_from([None, "qom-type"]))
def test_qemu_opts_never_fails(text: str, implied: str | None) -> None:
    result = parse_qemu_opts(text, implied)
    for key, value in result.pairs:
        assert isinstance(key, str)
        assert isinstance(value, str)
    qemu_opts_object_help(result)


@settings(max_examples=400)
@given(_ANY_TEXT)
def test_optslist_raises_only_opts_error(text: str) -> None:
    group = OptsList("chardev", "backend", desc=CHARDEV_DESC)
    try:
        group.parse(text)
    except OptsError:
        pass


@settings(max_examples=400)
@given(_ANY_TEXT, st.sampled_from([None, "qom-type"]))
def test_keyval_raises_only_opts_error(text: str, implied: str | None) -> None:
    try:
        result = parse_keyval(text, implied)
    except OptsError:
        return
    keyval_object_help(result)


@settings(max_examples=400)
@given(st.sampled_from(_KINDS), st.one_of(st.text(max_size=30), _SYNTAX))
def test_value_conversions_raise_only_opts_error(kind: str, text: str) -> None:
    for convert in (opts_value_to, keyval_value_to):
        try:
            convert(kind, "x", text)
        except OptsError:
            pass
    if kind in ("int64", "uint64", "uint16"):
        try:
            opts_list_value_to(kind, "x", [text])
        except OptsError:
            pass


_NAME = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
_VALUE = st.text(max_size=12).map(lambda s: s.replace("\0", ""))


@given(st.dictionaries(_NAME, _VALUE, max_size=6))
def test_keyval_round_trip(flat: dict[str, str]) -> None:
    text = ",".join(f"{k}={v.replace(',', ',,')}" for k, v in flat.items())
    assert parse_keyval(text, None) == flat


@given(st.lists(st.tuples(_NAME, _VALUE), max_size=6))
def test_qemu_opts_round_trip(pairs: list[tuple[str, str]]) -> None:
    text = ",".join(f"{k}={v.replace(',', ',,')}" for k, v in pairs)
    assert parse_qemu_opts(text, None).pairs == pairs


@given(st.lists(st.tuples(st.integers(0, 3), _VALUE), min_size=1, max_size=8))
def test_keyval_lists_and_last_duplicate(entries: list[tuple[int, str]]) -> None:
    text = ",".join(f"l.{i}.v={v.replace(',', ',,')}" for i, v in entries)
    last: dict[int, str] = {}
    for i, v in entries:
        last[i] = v
    indexes = sorted(last)
    try:
        result = parse_keyval(text, None)
    except OptsError as err:
        missing = next(i for i in range(len(indexes) + 1) if i not in last)
        assert err.desc == f"Parameter 'l.{missing}' missing"
        return
    assert indexes == list(range(len(indexes)))
    assert result == {"l": [{"v": last[i]} for i in indexes]}


def test_long_input() -> None:
    big = ",".join(f"key{i}=value,,{i}" for i in range(20000))
    assert len(parse_qemu_opts("secret," + big, "qom-type").pairs) == 20001
    assert len(parse_keyval("secret," + big, "qom-type")) == 20001
    # Numbers far beyond Python's int() digit limit are just out of range.
    with pytest.raises(OptsError, match="expects a size value"):
        opts_value_to("size", "size", "1" * 100000)
    with pytest.raises(OptsError, match="expects integer"):
        keyval_value_to("int64", "x", "9" * 100000)
    assert opts_value_to("size", "size", "0" * 100000 + "1k") == 1024
    with pytest.raises(OptsError, match=r"Parameter 'a\.0' missing"):
        parse_keyval("a." + "9" * 127 + "=1")
