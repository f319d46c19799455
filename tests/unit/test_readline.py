"""The HMP line editor's echo, compared byte for byte with QEMU 7.2.

QEMU's readline redraws the line after every key (cursor back with
``ESC [ D``, the whole line, ``ESC [ K``), and scripts reading a monitor
see those bytes. Each expected value below is what ``qemu-system-x86_64
-machine none -monitor stdio`` wrote after its first prompt when the keys
(then Enter) arrived on a pipe. Commands were chosen whose output does not
depend on the version (``qom-list`` prints ``/``; ``info name`` nothing).
"""

from __future__ import annotations

import pytest

from qomhost import Host
from qomhost.monitor.readline import LineEditor
from qomhost.testing import HmpTestClient

QOM_LIST_ENTERED = (
    b"q\x1b[K\x1b[Dqo\x1b[K\x1b[D\x1b[Dqom\x1b[K\x1b[D\x1b[D\x1b[Dqom-\x1b[K"
    b"\x1b[D\x1b[D\x1b[D\x1b[Dqom-l\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-li"
    b"\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-lis\x1b[K\x1b[D\x1b[D"
    b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-list\x1b[K\r\n/\r\n(qemu) "
)
MATCHING = [
    pytest.param(
        b"abc",
        b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\r\nunknown command: 'abc'\r\n(qemu) ",
        id="typing",
    ),
    pytest.param(
        b"abc\x7f",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[Dab"
            b"\x1b[K\r\nunknown command: 'ab'\r\n(qemu) "
        ),
        id="backspace",
    ),
    pytest.param(
        b"abc\x08",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[Dab"
            b"\x1b[K\r\nunknown command: 'ab'\r\n(qemu) "
        ),
        id="ctrl-h",
    ),
    pytest.param(
        b"\x7f\x7fa", b"a\x1b[K\r\nunknown command: 'a'\r\n(qemu) ", id="backspace at start"
    ),
    pytest.param(
        b"abc\x1b[D\x1b[DX",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[DaXbc\x1b[K"
            b"\x1b[D\x1b[D\r\nunknown command: 'aXbc'\r\n(qemu) "
        ),
        id="left and insert",
    ),
    pytest.param(
        b"abc\x1b[D\x1b[D\x1b[C",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[C\r\n"
            b"unknown command: 'abc'\r\n(qemu) "
        ),
        id="right",
    ),
    pytest.param(
        b"\x1b[Dab\x1b[C",
        b"a\x1b[K\x1b[Dab\x1b[K\r\nunknown command: 'ab'\r\n(qemu) ",
        id="left at start, right at end",
    ),
    pytest.param(
        b"abc\x01X\x05Y",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[DXabc\x1b[K"
            b"\x1b[D\x1b[D\x1b[D\x1b[C\x1b[C\x1b[C\x1b[D\x1b[D\x1b[D\x1b[DXabcY"
            b"\x1b[K\r\nunknown command: 'XabcY'\r\n(qemu) "
        ),
        id="ctrl-a, ctrl-e",
    ),
    pytest.param(
        b"abc\x1b[D\x1b[D\x04",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[Dac\x1b[K"
            b"\x1b[D\r\nunknown command: 'ac'\r\n(qemu) "
        ),
        id="ctrl-d",
    ),
    pytest.param(
        b"abc\x1b[D\x1b[D\x1b[3~",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[Dac\x1b[K"
            b"\x1b[D\r\nunknown command: 'ac'\r\n(qemu) "
        ),
        id="delete key",
    ),
    pytest.param(
        b"ab\x04\x1b[3~",
        b"a\x1b[K\x1b[Dab\x1b[K\r\nunknown command: 'ab'\r\n(qemu) ",
        id="delete at end",
    ),
    pytest.param(
        b"abc\x1b[1~X\x1b[4~Y",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[DXabc\x1b[K"
            b"\x1b[D\x1b[D\x1b[D\x1b[C\x1b[C\x1b[C\x1b[D\x1b[D\x1b[D\x1b[DXabcY"
            b"\x1b[K\r\nunknown command: 'XabcY'\r\n(qemu) "
        ),
        id="home and end keys",
    ),
    pytest.param(
        b"abc\x1bOHX\x1bOFY",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[DXabc\x1b[K"
            b"\x1b[D\x1b[D\x1b[D\x1b[C\x1b[C\x1b[C\x1b[D\x1b[D\x1b[D\x1b[DXabcY"
            b"\x1b[K\r\nunknown command: 'XabcY'\r\n(qemu) "
        ),
        id="ss3 home and end",
    ),
    pytest.param(
        b"qom-get abc def\x17",
        (
            b"q\x1b[K\x1b[Dqo\x1b[K\x1b[D\x1b[Dqom\x1b[K\x1b[D\x1b[D\x1b[Dqom-\x1b[K"
            b"\x1b[D\x1b[D\x1b[D\x1b[Dqom-g\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-ge"
            b"\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-get\x1b[K\x1b[D\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-get \x1b[K\x1b[D\x1b[D\x1b[D\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[Dqom-get a\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[Dqom-get ab\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-get abc\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-get abc \x1b[K\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D"
            b"\x1b[Dqom-get abc d\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-get abc de\x1b[K\x1b[D\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D"
            b"\x1b[Dqom-get abc def\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-get abc \x1b[K\r\n"
            b'qom-get: string expected\r\nTry "help qom-get" for more information\r\n'
            b"(qemu) "
        ),
        id="ctrl-w",
    ),
    pytest.param(
        b"ab\x1bxc",
        b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\r\nunknown command: 'abc'\r\n(qemu) ",
        id="esc then a letter",
    ),
    pytest.param(
        b"ab\x1b[Zc",
        b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\r\nunknown command: 'abc'\r\n(qemu) ",
        id="unknown csi",
    ),
    pytest.param(
        b"ab\x1b[12Dc",
        b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dacb\x1b[K\x1b[D\r\nunknown command: 'acb'\r\n(qemu) ",
        id="csi count is not a repeat",
    ),
    pytest.param(
        b"abc\x1b[D\x1b[2~X",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[DabXc\x1b[K"
            b"\x1b[D\r\nunknown command: 'abXc'\r\n(qemu) "
        ),
        id="insert key",
    ),
    pytest.param(
        b"abc\x15\x01\x0b\x00",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[D\r\n"
            b"unknown command: 'abc'\r\n(qemu) "
        ),
        id="ignored controls",
    ),
    pytest.param(
        b"a\xffb",
        b"a\x1b[K\x1b[Da\xff\x1b[K\x1b[D\x1b[Da\xffb\x1b[K\r\nunknown command: 'a\xffb'\r\n(qemu) ",
        id="high byte",
    ),
    pytest.param(b"\r\r", b"\r\n(qemu) \r\n(qemu) \r\n(qemu) ", id="empty lines"),
    pytest.param(
        b"qom-list\r\n", QOM_LIST_ENTERED + b"\r\n(qemu) \r\n(qemu) ", id="crlf is two lines"
    ),
    pytest.param(b"qom-list\n", QOM_LIST_ENTERED + b"\r\n(qemu) ", id="lf"),
    pytest.param(
        b"qom-list\rinfo name\r\x1b[A\x1b[A",
        QOM_LIST_ENTERED
        + (
            b"i\x1b[K\x1b[Din\x1b[K\x1b[D\x1b[Dinf\x1b[K\x1b[D\x1b[D\x1b[Dinfo\x1b[K"
            b"\x1b[D\x1b[D\x1b[D\x1b[Dinfo \x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dinfo n"
            b"\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dinfo na\x1b[K\x1b[D\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dinfo nam\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[Dinfo name\x1b[K\r\n(qemu) info name\x1b[K\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-list\x1b[K\r\n/\r\n"
            b"(qemu) "
        ),
        id="history up",
    ),
    pytest.param(
        b"qom-list\r\x1b[A\x1b[A\x1b[A",
        QOM_LIST_ENTERED + b"qom-list\x1b[K\r\n/\r\n(qemu) ",
        id="history up past the top",
    ),
    pytest.param(
        b"qom-list\r\x1b[A\x1b[B",
        QOM_LIST_ENTERED
        + b"qom-list\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[K\r\n(qemu) ",
        id="history down to a blank line",
    ),
    pytest.param(b"\x1b[B\x1b[A", b"\r\n(qemu) ", id="history down from the start"),
    pytest.param(
        b"qom-list\rqom-list\r\x1b[A\x1b[A",
        QOM_LIST_ENTERED
        + (
            b"q\x1b[K\x1b[Dqo\x1b[K\x1b[D\x1b[Dqom\x1b[K\x1b[D\x1b[D\x1b[Dqom-\x1b[K"
            b"\x1b[D\x1b[D\x1b[D\x1b[Dqom-l\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-li"
            b"\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-lis\x1b[K\x1b[D\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-list\x1b[K\r\n/\r\n(qemu) qom-list"
            b"\x1b[K\r\n/\r\n(qemu) "
        ),
        id="history keeps repeats once",
    ),
    pytest.param(
        b"qom-list\rinfo name\r\x1b[A\x1b[A\x7f\x7f\x1b[B",
        QOM_LIST_ENTERED
        + (
            b"i\x1b[K\x1b[Din\x1b[K\x1b[D\x1b[Dinf\x1b[K\x1b[D\x1b[D\x1b[Dinfo\x1b[K"
            b"\x1b[D\x1b[D\x1b[D\x1b[Dinfo \x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dinfo n"
            b"\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dinfo na\x1b[K\x1b[D\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dinfo nam\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[Dinfo name\x1b[K\r\n(qemu) info name\x1b[K\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-list\x1b[K\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-lis\x1b[K\x1b[D\x1b[D"
            b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dqom-li\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D"
            b"\x1b[D\x1b[Dinfo name\x1b[K\r\n(qemu) "
        ),
        id="history edit then down",
    ),
]
DIFFERENT = [
    pytest.param(
        b"\xc3\xa9\x7f",
        (
            b"\xc3\x1b[K\x1b[D\xc3\xa9\x1b[K\x1b[D\x1b[D\xc3\x1b[K\r\n"
            b"unknown command: '\xc3'\r\n(qemu) "
        ),
        id="utf-8 backspace",
    ),
    pytest.param(
        b"a\xc3\xa9\x1b[Db",
        (
            b"a\x1b[K\x1b[Da\xc3\x1b[K\x1b[D\x1b[Da\xc3\xa9\x1b[K\x1b[D\x1b[D"
            b"\x1b[Da\xc3b\xa9\x1b[K\x1b[D\r\nunknown command: 'a\xc3b\xa9'\r\n"
            b"(qemu) "
        ),
        id="utf-8 left and insert",
    ),
    pytest.param(
        b"abc\x9bDX",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[DabXc\x1b[K"
            b"\x1b[D\r\nunknown command: 'abXc'\r\n(qemu) "
        ),
        id="c1 csi",
    ),
    pytest.param(b"qom-list\r\x10", QOM_LIST_ENTERED + b"\r\n(qemu) ", id="ctrl-p"),
    pytest.param(
        b"qom-list\r\x1b[A\x0e", QOM_LIST_ENTERED + b"qom-list\x1b[K\r\n/\r\n(qemu) ", id="ctrl-n"
    ),
    pytest.param(
        b"qom-list\r\x1b[F",
        QOM_LIST_ENTERED + b"qom-list\x1b[K\r\n/\r\n(qemu) ",
        id="csi F is history up",
    ),
    pytest.param(
        b"qom-list\r\x1b[A\x1b[E",
        QOM_LIST_ENTERED
        + b"qom-list\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[K\r\n(qemu) ",
        id="csi E is history down",
    ),
    pytest.param(
        b"abc\x1b[HX",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[DabcX"
            b"\x1b[K\r\nunknown command: 'abcX'\r\n(qemu) "
        ),
        id="csi H does nothing",
    ),
    pytest.param(
        b"abc\x1b[D\x1b[FX",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[DabXc\x1b[K"
            b"\x1b[D\r\nunknown command: 'abXc'\r\n(qemu) "
        ),
        id="csi F does not move",
    ),
    pytest.param(b"qom-list\r\x1bOA", QOM_LIST_ENTERED + b"\r\n(qemu) ", id="ss3 A does nothing"),
    pytest.param(
        b"abc\x1b[7~X",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[DabcX"
            b"\x1b[K\r\nunknown command: 'abcX'\r\n(qemu) "
        ),
        id="csi 7~ does nothing",
    ),
    pytest.param(
        b"abc\x1b[D\x1b[D\x1b[8~X",
        (
            b"a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Dabc\x1b[K\x1b[D\x1b[D\x1b[DaXbc\x1b[K"
            b"\x1b[D\x1b[D\r\nunknown command: 'aXbc'\r\n(qemu) "
        ),
        id="csi 8~ does nothing",
    ),
    pytest.param(
        b"qom-l\t",
        (
            b"q\x1b[K\x1b[Dqo\x1b[K\x1b[D\x1b[Dqom\x1b[K\x1b[D\x1b[D\x1b[Dqom-\x1b[K"
            b"\x1b[D\x1b[D\x1b[D\x1b[Dqom-l\x1b[K\x1b[D\x1b[D\x1b[D\x1b[D"
            b"\x1b[Dqom-list \x1b[K\r\n/\r\n(qemu) "
        ),
        id="tab completes a command",
    ),
]


@pytest.fixture
def host() -> Host:
    h = Host()
    h.create_machine()
    return h


def test_banner(host: Host) -> None:
    client = HmpTestClient(host)
    assert client.banner == "QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) "


@pytest.mark.parametrize(("keys", "expected"), MATCHING)
def test_echo_matches_qemu(host: Host, keys: bytes, expected: bytes) -> None:
    client = HmpTestClient(host)
    out = client.send_keys(keys + b"\r")
    assert out.encode("utf-8", "surrogateescape") == expected


@pytest.mark.parametrize(("keys", "expected"), MATCHING)
def test_echo_does_not_depend_on_how_input_is_split(
    host: Host, keys: bytes, expected: bytes
) -> None:
    client = HmpTestClient(host)
    out = "".join(client.send_keys(keys[i : i + 1]) for i in range(len(keys)))
    out += client.send_keys(b"\r")
    assert out.encode("utf-8", "surrogateescape") == expected


@pytest.mark.parametrize(("keys", "expected"), DIFFERENT)
def test_echo_of_keys_qemu_treats_its_own_way(host: Host, keys: bytes, expected: bytes) -> None:
    client = HmpTestClient(host)
    out = client.send_keys(keys + b"\r")
    assert out.encode("utf-8", "surrogateescape") == expected


def test_command_returns_only_the_output(host: Host) -> None:
    client = HmpTestClient(host)
    assert client.command("qom-list") == "/\r\n"
    assert client.command("nope") == "unknown command: 'nope'\r\n"
    assert client.command("") == ""
    host.add_object("secret", "s", data="x")
    assert client.command("qom-get /objects/s data") == '"x"\r\n'


def test_history_is_per_connection(host: Host) -> None:
    first = HmpTestClient(host)
    first.command("qom-list")
    second = HmpTestClient(host)
    # ESC [ A recalls nothing on a new terminal
    assert second.send_keys(b"\x1b[A\r") == "\r\n(qemu) "


def test_quit_prints_no_prompt(host: Host) -> None:
    client = HmpTestClient(host)
    assert client.send_keys(b"quit\r").endswith("quit\x1b[K\r\n")
    assert host.shutdown_reason == "host-qmp-quit"


def test_line_editor_yields_lines_and_echo() -> None:
    editor = LineEditor()
    # the monitor turns "\n" into "\r\n" when it prints the echo
    pieces = editor.feed_iter(b"ab\rc")
    assert pieces == [
        (b"a\x1b[K\x1b[Dab\x1b[K\n", "ab"),
        (b"c\x1b[K", None),
    ]
    assert editor.feed_iter(b"\x7f\n") == [(b"\x1b[D\x1b[K\n", "")]
    assert editor.history == [b"ab"]
