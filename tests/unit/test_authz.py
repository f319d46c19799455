"""The authorization objects through ``Host``: properties, defaults, QEMU's errors,
first-match decisions, the ``rules`` setter, the list helpers, the lookup helper
and ``qomctl authz check``.

Error texts are QEMU 7.2's (``qemu-system-x86_64`` with ``-object``, ``object-add``,
``qom-set`` and HMP ``object_add``; see ``reference/qemu-semantics.md`` §3). Where
qomhost deliberately differs (a failed ``qom-set rules`` keeps the old rules;
QemuOpts ``rules=<policy>`` is an error instead of an abort), the test says so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from qomhost import Host
from qomhost.cli.objectopts import parse_object_cli, parse_object_keyval
from qomhost.cli.qomctl import main as qomctl_main
from qomhost.errors import QemuError
from qomhost.objects.authz.base import QAuthZ, authz_is_allowed_by_id, lookup_authz
from qomhost.objects.authz.list import Decision, QAuthZList, Rule
from qomhost.objects.authz.listfile import (
    QAuthZListFile,
    g_path_get_basename,
    g_path_get_dirname,
)
from qomhost.qapi.opts import OptsList
from qomhost.qom.user_creatable import creatable_types, new_object, type_help
from qomhost.testing import QmpTestClient

DN = "C=GB,O=Example Org,CN=laptop.example.com"


@pytest.fixture
def host() -> Host:
    return Host()


def error_of(fn: object, *args: object, **kwargs: object) -> str:
    assert callable(fn)
    with pytest.raises(QemuError) as info:
        fn(*args, **kwargs)
    return info.value.desc


def qom_get(host: Host, path: str, prop: str) -> object:
    with QmpTestClient(host, negotiate=True) as qmp:
        reply = qmp.execute("qom-get", path=path, property=prop)
    assert "return" in reply, reply
    return reply["return"]


def qom_set(host: Host, path: str, prop: str, value: object) -> dict[str, object]:
    with QmpTestClient(host, negotiate=True) as qmp:
        return qmp.execute("qom-set", path=path, property=prop, value=value)


# --- types ----------------------------------------------------------------------------


def test_types_and_aliases() -> None:
    names = [info.name for info in creatable_types()]
    for name in ("authz-simple", "authz-list", "authz-list-file", "authz-listfile", "authz-pam"):
        assert name in names
    # As in QEMU, the abstract base is not user-creatable.
    assert "authz" not in names
    assert type_help("authz-list") == (
        "authz-list options:\n  policy=<QAuthZListPolicy>\n  rules=<QAuthZListRule>\n"
    )
    assert type_help("authz-listfile") == (
        "authz-listfile options:\n  filename=<string>\n  refresh=<bool>\n"
    )
    assert type_help("authz-pam") == "authz-pam options:\n  service=<string>\n"
    assert type_help("authz") == "There are no options for authz.\n"


def test_abstract_base_refused(host: Host) -> None:
    assert error_of(host.add_object, "authz", "a") == (
        "Parameter 'qom-type' does not accept value 'authz'"
    )


# --- authz-simple ---------------------------------------------------------------------


def test_simple_exact_and_case_sensitive(host: Host) -> None:
    authz = host.add_object("authz-simple", "a", identity=DN)
    assert isinstance(authz, QAuthZ)
    assert authz.is_allowed(DN)
    assert not authz.is_allowed(DN.lower())
    assert not authz.is_allowed(DN + " ")
    assert not authz.is_allowed("C=GB,O=Example Org,CN=*")
    assert qom_get(host, "/objects/a", "identity") == DN


def test_simple_identity_change_takes_effect(host: Host) -> None:
    authz = host.add_object("authz-simple", "a", identity="fred")
    assert qom_set(host, "/objects/a", "identity", "bob") == {"return": {}}
    assert authz.is_allowed("bob") and not authz.is_allowed("fred")
    assert qom_set(host, "/objects/a", "identity", None)["error"] == {
        "class": "GenericError",
        "desc": "Invalid parameter type for 'identity', expected: string",
    }


def test_simple_command_line_commas(host: Host) -> None:
    spec = parse_object_cli(
        "authz-simple,id=a,identity=C=GB,,O=Example Org,,CN=x", OptsList("object", "qom-type"), []
    )
    assert not isinstance(spec, str)
    authz = host.create_object(spec.type_name, spec.ident, spec.props)
    assert authz.is_allowed("C=GB,O=Example Org,CN=x")


def test_simple_errors(host: Host) -> None:
    assert error_of(host.add_object, "authz-simple", "a") == "Parameter 'identity' is missing"
    assert error_of(host.add_object, "authz-simple", "a", identity=1) == (
        "Invalid parameter type for 'identity', expected: string"
    )
    obj = new_object("authz-simple")
    assert error_of(obj.complete) == "The 'identity' property must be set"
    assert host.lookup_object("a") is None


# --- authz-list -------------------------------------------------------------------------

RULES = [
    {"match": "fred", "policy": "allow", "format": "exact"},
    {"match": "*.example.com", "policy": "deny", "format": "glob"},
    {"match": "bob", "policy": "allow"},
    {"match": "*", "policy": "allow", "format": "glob"},
]


def test_list_defaults(host: Host) -> None:
    authz = host.add_object("authz-list", "a")
    assert qom_get(host, "/objects/a", "policy") == "deny"
    assert qom_get(host, "/objects/a", "rules") == []
    assert not authz.is_allowed("anyone")
    assert isinstance(authz, QAuthZList)
    assert authz.decide("anyone") == Decision(False, None, None)


def test_list_first_match_wins(host: Host) -> None:
    authz = host.add_object("authz-list", "a", policy="deny", rules=RULES[:3])
    assert isinstance(authz, QAuthZList)
    assert authz.is_allowed("fred")
    assert not authz.is_allowed("www.example.com")
    assert authz.is_allowed("bob")
    assert not authz.is_allowed("Bob")  # exact is case-sensitive
    assert not authz.is_allowed("eve")  # default policy
    d = authz.decide("www.example.com")
    assert (d.allowed, d.index, d.rule) == (False, 1, Rule("*.example.com", "deny", "glob"))
    host.lookup_object("a").set_property_json("policy", "allow")
    assert authz.is_allowed("eve")


def test_list_format_omitted_means_exact_and_reads_back_omitted(host: Host) -> None:
    authz = host.add_object(
        "authz-list",
        "a",
        rules=[
            {"match": "a*", "policy": "allow"},
            {"match": "b*", "policy": "allow", "format": "glob"},
        ],
    )
    assert not authz.is_allowed("ab")
    assert authz.is_allowed("a*")
    assert authz.is_allowed("bc")
    assert qom_get(host, "/objects/a", "rules") == [
        {"match": "a*", "policy": "allow"},
        {"match": "b*", "policy": "allow", "format": "glob"},
    ]


def test_list_getter_key_order_is_qemus(host: Host) -> None:
    host.add_object("authz-list", "a", rules=RULES[1:3])
    with QmpTestClient(host, negotiate=True) as qmp:
        raw = qmp.send_raw(
            b'{"execute":"qom-get","arguments":{"path":"/objects/a","property":"rules"}}'
        )
    assert raw == [
        {
            "return": [
                {"format": "glob", "policy": "deny", "match": "*.example.com"},
                {"policy": "allow", "match": "bob"},
            ]
        }
    ]


def test_list_glob_is_glib_not_fnmatch(host: Host) -> None:
    authz = host.add_object(
        "authz-list",
        "a",
        rules=[
            {"match": "lab[1]*", "policy": "allow", "format": "glob"},
            {"match": "caf?", "policy": "allow", "format": "glob"},
        ],
    )
    assert authz.is_allowed("lab[1]x") and not authz.is_allowed("lab1x")
    assert authz.is_allowed("café")


def test_list_rules_replaced_at_run_time(host: Host) -> None:
    authz = host.add_object("authz-list", "a", rules=RULES[:1])
    assert authz.is_allowed("fred")
    assert qom_set(host, "/objects/a", "rules", RULES[2:3]) == {"return": {}}
    assert not authz.is_allowed("fred") and authz.is_allowed("bob")
    assert qom_set(host, "/objects/a", "rules", []) == {"return": {}}
    assert not authz.is_allowed("bob")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            [{"match": "x", "policy": "allow"}, {"match": "y"}],
            "Parameter 'rules[1].policy' is missing",
        ),
        ([{"policy": "allow"}], "Parameter 'rules[0].match' is missing"),
        ([{"match": "x", "policy": "maybe"}], "Parameter 'policy' does not accept value 'maybe'"),
        (
            [{"match": "x", "policy": "allow", "format": "regex"}],
            "Parameter 'format' does not accept value 'regex'",
        ),
        (
            [{"match": "x", "policy": "allow", "extra": 1}],
            "Parameter 'rules[0].extra' is unexpected",
        ),
        (
            [{"match": "x", "policy": "allow", "bogus": 1, "zz": 2}],
            "Parameter 'rules[0].bogus' is unexpected",
        ),
        ({"match": "x"}, "Invalid parameter type for 'rules', expected: array"),
        ("x", "Invalid parameter type for 'rules', expected: array"),
        (None, "Invalid parameter type for 'rules', expected: array"),
        ([1], "Invalid parameter type for 'rules[0]', expected: object"),
        (
            [{"match": 1, "policy": "allow"}],
            "Invalid parameter type for 'rules[0].match', expected: string",
        ),
        (
            [{"match": "x", "policy": 1}],
            "Invalid parameter type for 'rules[0].policy', expected: string",
        ),
        (
            [{"match": "x", "policy": "allow", "format": None}],
            "Invalid parameter type for 'rules[0].format', expected: string",
        ),
    ],
)
def test_list_failed_rules_set_keeps_previous_rules(
    host: Host, value: object, message: str
) -> None:
    authz = host.add_object("authz-list", "a", rules=RULES[:1])
    reply = qom_set(host, "/objects/a", "rules", value)
    assert reply == {"error": {"class": "GenericError", "desc": message}}
    # QEMU 7.2 is left with an empty list here; qomhost keeps the old one.
    assert qom_get(host, "/objects/a", "rules") == RULES[:1]
    assert authz.is_allowed("fred")
    # object-add words it the same way and creates nothing.
    assert error_of(host.add_object, "authz-list", "b", rules=value) == message
    assert host.lookup_object("b") is None


def test_list_policy_errors(host: Host) -> None:
    host.add_object("authz-list", "a", policy="allow")
    assert qom_set(host, "/objects/a", "policy", "maybe")["error"]["desc"] == (
        "Parameter 'policy' does not accept value 'maybe'"
    )
    assert qom_set(host, "/objects/a", "policy", 1)["error"]["desc"] == (
        "Invalid parameter type for 'policy', expected: string"
    )
    assert qom_get(host, "/objects/a", "policy") == "allow"
    # Members are checked in schema order: policy before rules.
    assert error_of(host.add_object, "authz-list", "b", rules=[{}], policy="maybe") == (
        "Parameter 'policy' does not accept value 'maybe'"
    )


def test_list_hmp_qom_set_string(host: Host) -> None:
    authz = host.add_object("authz-list", "a", rules=RULES[:1])
    obj = host.lookup_object("a")
    assert obj is not None
    # QEMU 7.2 crashes (string visitor on a struct); qomhost refuses.
    assert "qom-set -j" in error_of(obj.set_property_string, "rules", "x")
    assert authz.is_allowed("fred")
    obj.set_property_string("policy", "allow")
    assert qom_get(host, "/objects/a", "policy") == "allow"


# --- front ends ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("authz-list,id=b,rules.0.match=x", "Parameter 'rules.0.policy' is missing"),
        (
            "authz-list,id=b,rules.0.match=x,rules.0.policy=maybe",
            "Parameter 'policy' does not accept value 'maybe'",
        ),
        (
            "authz-list,id=b,rules.0.match=x,rules.0.policy=allow,rules.0.format=regex",
            "Parameter 'format' does not accept value 'regex'",
        ),
        (
            "authz-list,id=b,rules.0.match=x,rules.0.policy=allow,rules.0.bogus=1",
            "Parameter 'rules.0.bogus' is unexpected",
        ),
        ("authz-list,id=b,rules.1.match=x,rules.1.policy=allow", "Parameter 'rules.0' missing"),
        ("authz-list,id=b,rules=x", "Invalid parameter type for 'rules', expected: array"),
        ("authz-list,id=b,rules.match=x", "Invalid parameter type for 'rules', expected: array"),
        ("authz-list,id=b,rules.0=x", "Invalid parameter type for 'rules.0', expected: object"),
        (
            "authz-list,id=b,rules.0.match.x=1,rules.0.policy=allow",
            "Parameters 'rules.0.match.*' are unexpected",
        ),
        ("authz-list,id=b,policy.x=allow", "Parameters 'policy.*' are unexpected"),
        ("authz-simple,id=b,identity.x=1", "Parameters 'identity.*' are unexpected"),
        (
            "authz-list,id=b,rules.0=a,rules.0.policy=allow",
            "Parameters 'rules.0.*' used inconsistently",
        ),
        ("authz-simple,id=b", "Parameter 'identity' is missing"),
    ],
)
def test_keyval_errors(host: Host, text: str, message: str) -> None:
    assert error_of(host.object_add_keyval, text) == message


def test_keyval_dotted_rules(host: Host) -> None:
    host.object_add_keyval(
        "authz-list,id=a,rules.0.match=a,,b,rules.0.policy=allow,rules.0.format=glob,"
        "rules.1.match=*,rules.1.policy=deny,policy=allow"
    )
    assert qom_get(host, "/objects/a", "rules") == [
        {"match": "a,b", "policy": "allow", "format": "glob"},
        {"match": "*", "policy": "deny"},
    ]
    assert qom_get(host, "/objects/a", "policy") == "allow"
    assert parse_object_keyval("authz-list,help") == (
        "authz-list options:\n  policy=<QAuthZListPolicy>\n  rules=<QAuthZListRule>\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("authz-list,id=a,rules.0.match=x", "Invalid parameter 'rules.0.match'"),
        ("authz-list,id=a,rules.0=x", "Invalid parameter 'rules.0'"),
        ("authz-list,id=a,rules=x", "Parameter 'policy' does not accept value 'x'"),
        ("authz-list,id=a,rules=x,rules=y", "Parameter 'policy' does not accept value 'x'"),
        ("authz-list,id=a,rules=", "Parameter 'policy' does not accept value ''"),
        (
            "authz-list,id=a,policy=maybe,rules=x",
            "Parameter 'policy' does not accept value 'maybe'",
        ),
        # QEMU 7.2 aborts on an assertion here.
        ("authz-list,id=a,rules=allow", "Invalid parameter 'rules'"),
        ("authz-listfile,id=a", "Parameter 'filename' is missing"),
        (
            "authz-listfile,id=a,filename=/x,refresh=maybe",
            "Parameter 'refresh' expects 'on' or 'off'",
        ),
        ("authz-pam,id=a", "Parameter 'service' is missing"),
        ("authz,id=a", "Parameter 'qom-type' does not accept value 'authz'"),
    ],
)
def test_command_line_errors(text: str, message: str) -> None:
    assert error_of(parse_object_cli, text, OptsList("object", "qom-type"), []) == message


# --- the C-API-like helpers --------------------------------------------------------------


def test_append_insert_delete(host: Host) -> None:
    authz = host.add_object("authz-list", "a")
    assert isinstance(authz, QAuthZList)
    assert authz.append_rule("a", "allow") == 0
    assert authz.append_rule("b", "deny", "glob") == 1
    assert authz.insert_rule("c", "allow", "exact", 0) == 0
    assert authz.insert_rule("d", "allow", "exact", 2) == 2
    assert authz.insert_rule("e", "allow", "exact", 99) == 4
    assert [r.match for r in authz.rules] == ["c", "a", "d", "b", "e"]
    # The helpers always record the format.
    assert qom_get(host, "/objects/a", "rules")[0] == {
        "match": "c",
        "policy": "allow",
        "format": "exact",
    }
    authz.append_rule("a", "deny")
    assert authz.delete_rule("a") == 1
    assert [r.match for r in authz.rules] == ["c", "d", "b", "e", "a"]
    assert authz.delete_rule("nope") == -1
    assert authz.is_allowed("d")
    authz.delete_rule("d")
    assert not authz.is_allowed("d")
    empty = host.add_object("authz-list", "b")
    assert isinstance(empty, QAuthZList)
    assert empty.insert_rule("x", "allow", "exact", 5) == 0
    with pytest.raises(ValueError):
        empty.append_rule("x", "maybe")


def test_compiled_and_plain_decisions_agree(host: Host) -> None:
    authz = host.add_object("authz-list", "a", rules=RULES)
    assert isinstance(authz, QAuthZList)
    for identity in ("fred", "bob", "x.example.com", "", "example.com", "FRED"):
        assert authz.decide(identity) == authz.decide_plain(identity)


# --- authz-list-file (without inotify; see tests/integration) -----------------------------


def write(path: Path, value: object) -> str:
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return str(path)


def test_list_file_loads(host: Host, tmp_path: Path) -> None:
    name = write(tmp_path / "acl.json", {"policy": "allow", "rules": RULES[1:2]})
    authz = host.add_object("authz-list-file", "a", filename=name, refresh=False)
    assert not authz.is_allowed("www.example.com") and authz.is_allowed("eve")
    assert qom_get(host, "/objects/a", "filename") == name
    assert qom_get(host, "/objects/a", "refresh") is False
    assert qom_get(host, "/objects/a", "type") == "authz-list-file"
    alias = host.add_object("authz-listfile", "b", filename=name, refresh=False)
    assert isinstance(alias, QAuthZListFile)
    assert qom_get(host, "/objects/b", "type") == "authz-listfile"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "Expecting a JSON value"),
        (" \n", "Expecting a JSON value"),
        ("{} {}", "Expecting at most one JSON value"),
        ('{"policy": "allow",}', "JSON parse error, expecting value"),
        ("[]", "File '{name}' must contain a JSON object"),
        ('"x"', "File '{name}' must contain a JSON object"),
        ('{"x": 1}', "Property 'authz-list.x' not found"),
        ('{"policy": 1}', "Invalid parameter type for 'policy', expected: string"),
        ('{"policy": "maybe"}', "Parameter 'policy' does not accept value 'maybe'"),
        ('{"rules": [{"match": "a"}]}', "Parameter 'rules[0].policy' is missing"),
    ],
)
def test_list_file_load_errors(host: Host, tmp_path: Path, content: str, message: str) -> None:
    name = write(tmp_path / "acl.json", content)
    assert error_of(host.add_object, "authz-list-file", "a", filename=name) == message.format(
        name=name
    )
    assert host.lookup_object("a") is None


def test_list_file_errors_in_qemus_order(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = str(tmp_path / "nope.json")
    assert error_of(host.add_object, "authz-list-file", "a", filename=missing) == (
        f"Unable to read '{missing}': Failed to open file “{missing}”: No such file or directory"
    )
    assert error_of(host.add_object, "authz-list-file", "a", filename=str(tmp_path)) == (
        f"Unable to read '{tmp_path}': Error reading file “{tmp_path}”: Is a directory"
    )
    # The path checks come after a successful load, and only with refresh.
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "acl.json", {})
    assert error_of(host.add_object, "authz-list-file", "a", filename="acl.json") == (
        "Filename must be an absolute path"
    )
    host.add_object("authz-list-file", "a", filename="acl.json", refresh=False)
    obj = new_object("authz-list-file")
    assert error_of(obj.complete) == "filename not provided"


@pytest.mark.parametrize(
    ("path", "dirname", "basename"),
    [
        ("x", ".", "x"),
        ("/x", "/", "x"),
        ("/a/b/", "/a/b", "b"),
        ("a//b", "a", "b"),
        ("/", "/", "/"),
        ("", ".", "."),
        ("/a/.", "/a", "."),
        ("sub/x.json", "sub", "x.json"),
    ],
)
def test_glib_path_functions(path: str, dirname: str, basename: str) -> None:
    assert g_path_get_dirname(path) == dirname
    assert g_path_get_basename(path) == basename


# --- authz-pam (without PAM; see tests/interop) ----------------------------------------------


def test_pam_service_required(host: Host) -> None:
    assert error_of(host.add_object, "authz-pam", "a") == "Parameter 'service' is missing"
    assert error_of(new_object("authz-pam").complete) == "The 'service' property must be set"
    host.add_object("authz-pam", "a", service="qomhost-test")
    assert qom_get(host, "/objects/a", "service") == "qomhost-test"


# --- lookup ----------------------------------------------------------------------------------


def test_lookup_by_id(host: Host) -> None:
    host.add_object("authz-simple", "a", identity="fred")
    host.add_object("secret", "s", data="x")
    assert authz_is_allowed_by_id(host, "a", "fred")
    assert not authz_is_allowed_by_id(host, "a", "bob")
    assert error_of(authz_is_allowed_by_id, host, "nope", "fred") == (
        "Cannot find QAuthZ object ID nope"
    )
    assert error_of(authz_is_allowed_by_id, host, "s", "fred") == (
        "Object 's' is not a QAuthZ subclass"
    )
    assert isinstance(lookup_authz(host, "a"), QAuthZ)
    host.del_object("a")
    assert error_of(lookup_authz, host, "a") == "Cannot find QAuthZ object ID a"


class _Broken(QAuthZ):
    def check(self, identity: str) -> bool:
        raise QemuError("cannot tell")


def test_is_allowed_logs_errors_and_denies(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="qomhost.authz"):
        assert _Broken("authz").is_allowed("fred") is False
    assert "cannot tell" in caplog.text


# --- qomctl authz check ---------------------------------------------------------------------


def run_qomctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        qomctl_main(["authz", "check", *argv])
    out, err = capsys.readouterr()
    assert isinstance(info.value.code, int)
    return info.value.code, out, err


def test_qomctl_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    name = write(tmp_path / "acl.json", {"rules": RULES[:2]})
    assert run_qomctl(capsys, f"authz-list-file,id=a,filename={name}", "fred") == (
        0,
        'allow: rule 0 matched (match "fred", format exact, policy allow)\n',
        "",
    )
    assert run_qomctl(capsys, f"authz-listfile,id=a,filename={name}", "a.example.com") == (
        1,
        'deny: rule 1 matched (match "*.example.com", format glob, policy deny)\n',
        "",
    )
    assert run_qomctl(capsys, '{"qom-type":"authz-list","id":"a"}', "x") == (
        1,
        "deny: no rule matched; default policy deny\n",
        "",
    )
    assert run_qomctl(capsys, "authz-simple,id=a,identity=fred", "fred")[0] == 0
    assert run_qomctl(capsys, "authz-list,id=a,policy=maybe", "x") == (
        2,
        "",
        "qomctl: Parameter 'policy' does not accept value 'maybe'\n",
    )
    assert run_qomctl(capsys, "secret,id=a,data=x", "x") == (
        2,
        "",
        "qomctl: Object 'a' is not a QAuthZ subclass\n",
    )
