"""HMP command lines through ``run_hmp_command``, compared with QEMU 7.2.

Every expected output below is what ``human-monitor-command`` returned on
``qemu-system-x86_64 -machine none`` after ``object-add`` of a secret ``s``
with ``data=abc``, for the same command line (``\\r\\n`` line ends included).
``data/qemu-7.2-hmp-help*.txt`` hold QEMU's ``help`` and ``help info``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qomhost import Host
from qomhost.monitor.hmp import HMP_COMMANDS, INFO_COMMANDS, run_hmp_command
from qomhost.testing import QmpTestClient

DATA = Path(__file__).parent / "data"
QEMU_HELP = (DATA / "qemu-7.2-hmp-help.txt").read_text().replace("\n", "\r\n")
QEMU_HELP_INFO = (DATA / "qemu-7.2-hmp-help-info.txt").read_text().replace("\n", "\r\n")


@pytest.fixture
def host() -> Host:
    h = Host()
    h.create_machine()
    h.add_object("secret", "s", data="abc")
    return h


def try_help(cmd: str) -> str:
    return f'Try "help {cmd}" for more information\r\n'


def string_expected(cmd: str) -> str:
    return f"{cmd}: string expected\r\n" + try_help(cmd)


def extraneous(name: str, typed: str | None = None) -> str:
    return f"{name}: extraneous characters at the end of line\r\n" + try_help(typed or name)


# --- words and quoted strings ----------------------------------------------------------

WORDS = [
    ("qom-get /objects/s data", '"abc"\r\n'),
    ('qom-get "/objects/s" "data"', '"abc"\r\n'),
    ("\tqom-get\t/objects\ttype", '"container"\r\n'),
    ("   qom-get   /objects/s    data   ", '"abc"\r\n'),
    # the command name ends at a '/'
    ("qom-get/objects/s data", '"abc"\r\n'),
    ("qom-list/objects", "type (string)\r\ns (child<secret>)\r\n"),
    ("info qom-tree/objects", "/objects (container)\r\n  /s (secret)\r\n"),
    # escapes inside double quotes
    ('qom-get "/obj\\nects" data', "Error: Device '/obj\r\nects' not found\r\n"),
    ('qom-get "/objects\\\\" type', "Error: Device '/objects\\' not found\r\n"),
    ('qom-get "a\\\'b" type', "Error: Device 'a'b' not found\r\n"),
    ('qom-get "a\\"b" type', "Error: Device 'a\"b' not found\r\n"),
    ('qom-get "a\\rb" type', "Error: Device 'a\rb' not found\r\n"),
    # single quotes are ordinary characters; a quote inside a word too
    ("qom-get '/objects' type", "Error: Device ''/objects'' not found\r\n"),
    ('qom-get /objects"x" type', "Error: Device '/objects\"x\"' not found\r\n"),
    ('qom-get "" type', "Error: Device '' not found\r\n"),
    # a quoted string ends at its quote: what follows is the next argument
    ('qom-get "/objects"x type', extraneous("qom-get")),
    ('qom-get "/objects/s" "data"x', extraneous("qom-get")),
    # missing and extra arguments
    ("qom-get /objects/s data extra", extraneous("qom-get")),
    ("qom-get /objects/s", string_expected("qom-get")),
    ("qom-get", string_expected("qom-get")),
    ("qom-get -j /objects/s data", extraneous("qom-get")),
    ("object_del", string_expected("object_del")),
    ("object_del a b", extraneous("object_del")),
    ("object_add", string_expected("object_add")),
]


@pytest.mark.parametrize(("line", "expected"), WORDS)
def test_words_and_quoted_strings(host: Host, line: str, expected: str) -> None:
    assert run_hmp_command(host, line) == expected


@pytest.mark.parametrize(
    "line", ['qom-get "/objects/s\\x" data', 'qom-get "a\\tb" type', 'qom-get "/objects/s data']
)
def test_bad_quoted_strings(host: Host, line: str) -> None:
    assert run_hmp_command(host, line) == string_expected("qom-get")


# --- S (rest of line) and the -j flag --------------------------------------------------

SEQUENCES = [
    # S takes the rest of the line as it is: spaces, quotes and all
    (
        "qom-set /objects/s data hello   world  ",
        "",
        '"hello   world  "\r\n',
    ),
    ('qom-set /objects/s data "quoted"', "", '"\\"quoted\\""\r\n'),
    ("qom-set /objects/s data a\\nb", "", '"a\\\\nb"\r\n'),
    # -j: the value is JSON
    ('qom-set -j /objects/s data "x\\u00e9"', "", '"x\\u00E9"\r\n'),
    # the flag needs no space after it
    ('qom-set -j/objects/s data "y"', "", '"y"\r\n'),
]


@pytest.mark.parametrize(("line", "output", "after"), SEQUENCES)
def test_qom_set_values(host: Host, line: str, output: str, after: str) -> None:
    assert run_hmp_command(host, line) == output
    assert run_hmp_command(host, "qom-get /objects/s data") == after


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("qom-set /objects/s data", string_expected("qom-set")),
        ("qom-set /objects/s", string_expected("qom-set")),
        ("qom-set -j /objects/s data", string_expected("qom-set")),
        (
            "qom-set -x /objects/s data 1",
            "qom-set: unsupported option -x\r\n" + try_help("qom-set"),
        ),
        (
            "qom-set -j /objects/s data 1",
            "Error: Invalid parameter type for 'data', expected: string\r\n",
        ),
        ("qom-set -j /objects/s data [1", "Error: JSON parse error, premature EOI\r\n"),
        ('qom-set -j /objects/s data "a" "b"', "Error: Expecting at most one JSON value\r\n"),
        (
            'qom-set -j /objects/s data {"a":1}',
            "Error: Invalid parameter type for 'data', expected: string\r\n",
        ),
        (
            'qom-set -j /objects/s format "hex"',
            "Error: Parameter 'format' does not accept value 'hex'\r\n",
        ),
        (
            "qom-set /objects/s format hex",
            "Error: Parameter 'format' does not accept value 'hex'\r\n",
        ),
        ("qom-set /objects/s loaded on", "Error: Property 'secret.loaded' is not writable\r\n"),
        ("qom-set /objects/s nope 1", "Error: Property 'secret.nope' not found\r\n"),
        ("qom-get /objects/s nope", "Error: Property 'secret.nope' not found\r\n"),
    ],
)
def test_qom_set_errors(host: Host, line: str, expected: str) -> None:
    assert run_hmp_command(host, line) == expected
    assert run_hmp_command(host, "qom-get /objects/s data") == '"abc"\r\n'


# --- unknown commands and extraneous characters -------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("nope", "unknown command: 'nope'\r\n"),
        ("nope arg", "unknown command: 'nope'\r\n"),
        ("info nope", "unknown command: 'info nope'\r\n"),
        ("info   nope", "unknown command: 'info   nope'\r\n"),
        ("nope/x", "unknown command: 'nope'\r\n"),
        ("  help  nope", "unknown command: 'nope'\r\n"),
        ("help   info   nope", "unknown command: 'info nope'\r\n"),
        ("info nope extra", "unknown command: 'info nope'\r\n"),
        ("-j", "unknown command: '-j'\r\n"),
        ("info -j", "unknown command: 'info -j'\r\n"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_unknown_commands(host: Host, line: str, expected: str) -> None:
    assert run_hmp_command(host, line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("q extra", extraneous("quit|q", "q")),
        ("quit extra", extraneous("quit|q", "quit")),
        ("  q extra", extraneous("quit|q", "  q")),
        ("info version extra", extraneous("version", "info version")),
        ("info   version extra", extraneous("version", "info   version")),
        ("info qom-tree /objects extra", extraneous("qom-tree", "info qom-tree")),
        ("  qom-get", string_expected("qom-get").replace("help qom-get", "help   qom-get")),
        # the unknown command is quoted from the start of the line, too
        ("  nope", "unknown command: '  nope'\r\n"),
        ("\tnope", "unknown command: '\tnope'\r\n"),
        ("  info nope", "unknown command: '  info nope'\r\n"),
        # the command name ends at '/', even when that leaves it empty
        ("/x", "unknown command: ''\r\n"),
        ("  /x", "unknown command: '  '\r\n"),
        ("info /x", "unknown command: 'info '\r\n"),
        ("help /x", "unknown command: '/x'\r\n"),
    ],
)
def test_the_command_is_quoted_as_typed(host: Host, line: str, expected: str) -> None:
    # QEMU repeats the line from its start up to the end of the command name,
    # leading blanks, "info " and inner spacing included
    assert run_hmp_command(host, line) == expected
    assert host.shutdown_reason is None


# --- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("help qom-get", "qom-get path property -- print QOM property\r\n"),
        ("? qom-get", "qom-get path property -- print QOM property\r\n"),
        ("help   qom-get   ", "qom-get path property -- print QOM property\r\n"),
        ("help qom-get extra", "qom-get path property -- print QOM property\r\n"),
        (
            "help qom-set",
            "qom-set [-j] path property value -- set QOM property.\r\n"
            "\t\t\t-j: the value is specified in json format.\r\n",
        ),
        (
            "help object_add",
            "object_add [qom-type=]type,id=str[,prop=value][,...] -- create QOM object\r\n",
        ),
        ("help object_del", "object_del id -- destroy QOM object\r\n"),
        ("help qom-list", "qom-list path -- list QOM properties\r\n"),
        ("help q", "quit|q  -- quit the emulator\r\n"),
        ("help quit", "quit|q  -- quit the emulator\r\n"),
        ("help ?", "help|? [cmd] -- show the help\r\n"),
        ("help help", "help|? [cmd] -- show the help\r\n"),
        ("help nope", "unknown command: 'nope'\r\n"),
        ("help -j", "unknown command: '-j'\r\n"),
        ("help info nope", "unknown command: 'info nope'\r\n"),
        ("help info qom-tree", "info qom-tree [path] -- show QOM composition tree\r\n"),
        ("help info qom-tree extra", "info qom-tree [path] -- show QOM composition tree\r\n"),
        ("help info version", "info version  -- show the version of QEMU\r\n"),
        ("help info name", "info name  -- show the current VM name\r\n"),
    ],
)
def test_help_for_one_command(host: Host, line: str, expected: str) -> None:
    assert run_hmp_command(host, line) == expected


def _in_qemu_order(text: str, qemu: str) -> None:
    """Each line of ``text`` is in ``qemu``, in the same order."""
    pos = 0
    for line in text.split("\r\n")[:-1]:
        found = qemu.find(line + "\r\n", pos)
        assert found >= 0, f"{line!r} is not where QEMU prints it"
        pos = found + len(line)


def test_help_lists_commands_as_qemu_does(host: Host) -> None:
    text = run_hmp_command(host, "help")
    assert run_hmp_command(host, "?") == text
    assert text.endswith("\r\n")
    _in_qemu_order(text, QEMU_HELP)
    for cmd in HMP_COMMANDS:
        if cmd.sub_table is None:  # "help info" lists the info subcommands instead
            name = cmd.name.split("|")[0]
            assert run_hmp_command(host, f"help {name}") in text


def test_help_info_lists_info_commands_as_qemu_does(host: Host) -> None:
    text = run_hmp_command(host, "help info")
    assert run_hmp_command(host, "info") == text
    _in_qemu_order(text, QEMU_HELP_INFO)
    assert len(text.split("\r\n")) - 1 == len(INFO_COMMANDS)


# --- the commands themselves --------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("object_del nope", "Error: object 'nope' not found\r\n"),
        (
            "object_add secret,id=1x,data=x",
            "Error: Parameter 'id' expects an identifier\r\n"
            "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.\r\n",
        ),
        ("object_add secret,id=s2,data=x,bogus=1", "Error: Parameter 'bogus' is unexpected\r\n"),
        ("object_add secret,id=s2", "Error: Either 'file' or 'data' must be provided\r\n"),
        (
            "object_add secret,help",
            "secret options:\r\n  data=<string>\r\n  file=<string>\r\n"
            "  format=<QCryptoSecretFormat>\r\n  iv=<string>\r\n  keyid=<string>\r\n",
        ),
        ("qom-list /objects", "type (string)\r\ns (child<secret>)\r\n"),
        ("qom-list", "/\r\n"),
        ("qom-list /nope", "Error: Device '/nope' not found\r\n"),
        ('qom-list ""', "Error: Path '' is ambiguous\r\n"),
        ("info qom-tree /nope", "Path '/nope' could not be resolved.\r\n"),
        ("info qom-tree /objects", "/objects (container)\r\n  /s (secret)\r\n"),
        ("qom-get s data", '"abc"\r\n'),
        ("qom-get objects/s data", '"abc"\r\n'),
        ("qom-get //objects//s/ data", '"abc"\r\n'),
        (
            "qom-get /objects/../objects/s data",
            "Error: Device '/objects/../objects/s' not found\r\n",
        ),
        ("info name", ""),
    ],
)
def test_commands(host: Host, line: str, expected: str) -> None:
    assert run_hmp_command(host, line) == expected


def test_object_add_and_del(host: Host) -> None:
    assert run_hmp_command(host, "object_add secret,id=s3,data=x,,y") == ""
    assert run_hmp_command(host, "qom-get /objects/s3 data") == '"x,y"\r\n'
    assert run_hmp_command(host, 'object_add {"qom-type":"secret","id":"s4","data":"j"}') == ""
    assert run_hmp_command(host, "qom-get s4 data") == '"j"\r\n'
    assert run_hmp_command(host, "object_del s") == ""
    assert run_hmp_command(host, "qom-get /objects/s data") == (
        "Error: Device '/objects/s' not found\r\n"
    )


def test_info_name() -> None:
    host = Host(name="vm1")
    assert run_hmp_command(host, "info name") == "vm1\r\n"


def test_quit_requests_shutdown(host: Host) -> None:
    assert run_hmp_command(host, "quit") == ""
    assert host.shutdown_reason == "host-qmp-quit"


def test_human_monitor_command_is_the_same(host: Host) -> None:
    qmp = QmpTestClient(host, negotiate=True)
    for line, expected in WORDS[:10]:
        reply = qmp.execute("human-monitor-command", {"command-line": line})
        assert reply == {"return": expected}
