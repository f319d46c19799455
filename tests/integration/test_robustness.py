"""Random and mangled input never breaks qomhost.

* ``-object`` strings, from a grammar of keys, values, commas and JSON
  fragments, mutated and mixed with random text, go through the real
  command-line code (:func:`qomhost.cli.qomhost.run`, in this process, and
  the ``qomhost`` program for a few): no traceback, exit status 0 or 1, and
  an error is one ``qomhost: ...`` line (after any warnings), plus perhaps
  a hint line.
* QMP byte streams (valid commands with bytes flipped, cut or inserted,
  random JSON, deep nesting, huge strings, invalid UTF-8), fed to a real
  monitor in random pieces: no exception and no internal error, the same
  replies however the stream is split, and afterwards the monitor still
  answers ``qmp_capabilities`` and ``query-name``.
* The same streams against a ``qomhost -qmp unix:...`` process over a
  socket: it stays up, answers, and writes no traceback to stderr.

In-process runs end with ``-mon chardev=nope``: once the objects are
created, that option fails with a known message instead of entering the
main loop, so success is visible as that message.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qomhost.host
from qomhost.cli.qomhost import run
from qomhost.qapi.opts import ID_HINT, SIZE_HINT
from qomhost.testing import QmpTestClient
from qomhost.testing.qmp import decode_messages

QOMHOST = str(Path(sys.executable).parent / "qomhost")
BASE_ARGS = ["-machine", "none", "-nodefaults", "-display", "none"]
SENTINEL = ["-mon", "chardev=nope"]
SENTINEL_ERROR = 'qomhost: -mon chardev=nope: chardev "nope" not found\n'
HINTS = (ID_HINT + "\n", SIZE_HINT + "\n")
FEW = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
MANY = settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))

# --- -object strings ------------------------------------------------------------------------

TYPES = ["secret", "iothread", "main-loop", "secret_common", "container", "authz-simple", "x"]
KEYS = [
    "qom-type",
    "id",
    "data",
    "file",
    "format",
    "keyid",
    "iv",
    "loaded",
    "help",
    "?",
    "bogus",
    "poll-max-ns",
    "poll-grow",
    "poll-shrink",
    "aio-max-batch",
    "thread-pool-min",
    "thread-pool-max",
    "rules.0.match",
    "",
    "ID",
]
VALUES = [
    "secret",
    "iothread",
    "s",
    "s0",
    "1x",
    "_a",
    "raw",
    "base64",
    "on",
    "off",
    "yes",
    "hex",
    "",
    "AAAA",
    "QUJD",
    "ZGF0YQ==",
    "MDEyMzQ1Njc4OWFiY2RlZg==",
    "0x10",
    "-1",
    "0",
    "100000",
    "18446744073709551616",
    "9223372036854775808",
    "1k",
    "help",
    "?",
    "{",
    "null",
    "/nonexistent/secret",
    "/",
]

text = st.text(max_size=12)
value = st.one_of(st.sampled_from(VALUES), text)
# A member name with NUL is left out: see test_member_names_with_nul (unit tests).
key = st.one_of(st.sampled_from(KEYS), text.filter(lambda s: "\x00" not in s))


@st.composite
def idents(draw: st.DrawFn) -> str:
    """Mostly good ids, a few bad ones."""
    if draw(st.integers(0, 9)) < 8:
        return draw(st.sampled_from(["s", "s0", "io0", "k"]))
    return draw(st.one_of(st.sampled_from(["1x", "_a", "", "a b", "a/b"]), text))


# property values that are often right for the property
GOOD_VALUES: dict[str, list[str]] = {
    "data": ["x", "letmein", "", "QUJD", "a,b"],
    "file": ["/nonexistent/secret", "/", "/etc/hostname"],
    "format": ["raw", "base64", "hex", ""],
    "keyid": ["s", "s0", "io0", "nokey"],
    "iv": ["MDEyMzQ1Njc4OWFiY2RlZg==", "AAAA", "!!"],
    "poll-max-ns": ["0", "100000", "-1", "0x10", "1k", "18446744073709551616"],
    "poll-grow": ["0", "2", "-1"],
    "poll-shrink": ["0", "2"],
    "aio-max-batch": ["0", "64", "x"],
    "thread-pool-min": ["0", "4", "64"],
    "thread-pool-max": ["0", "4", "64"],
    "loaded": ["on", "off"],
}


@st.composite
def prop(draw: st.DrawFn) -> tuple[str, str | None]:
    """A key and a value (``None`` for a bare key)."""
    if draw(st.integers(0, 5)):
        name = draw(st.sampled_from(sorted(GOOD_VALUES)))
        choice = draw(st.integers(0, 9))
        if choice < 8:
            return name, draw(st.sampled_from(GOOD_VALUES[name]))
        if choice < 8:
            return name, None
        return name, draw(value)
    return draw(key), draw(st.one_of(st.none(), value))


@st.composite
def opts_strings(draw: st.DrawFn) -> str:
    """``type,id=...,key=value,...``: mostly well-formed, with doubled commas,
    bare keys, empty parts and help requests."""
    parts: list[str] = []
    choice = draw(st.integers(0, 9))
    if choice < 7:
        parts.append(draw(st.sampled_from(["secret", "secret", "iothread", "main-loop"])))
    elif choice < 8:
        parts.append("qom-type=" + draw(st.one_of(st.sampled_from(TYPES), text)))
    elif choice < 9:
        parts.append(draw(st.one_of(st.sampled_from([*TYPES, "help", "?"]), text)))
    rest: list[str] = []
    if draw(st.integers(0, 9)) < 9:
        rest.append("id=" + draw(idents()))
    if parts[:1] == ["secret"] and draw(st.integers(0, 9)) < 7:
        rest.append("data=" + draw(st.sampled_from(GOOD_VALUES["data"])).replace(",", ",,"))
    for _ in range(draw(st.integers(0, 3))):
        name, v = draw(prop())
        if v is None:
            rest.append(name)
        else:
            rest.append(f"{name}={v.replace(',', ',,')}")
    if draw(st.integers(0, 14)) == 0:
        rest.append(draw(st.sampled_from(["help", "help=x", "?", "", ",", "=x"])))
    parts += draw(st.permutations(rest))
    return ",".join(parts)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(VALUES),
    text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def json_object_strings(draw: st.DrawFn) -> str:
    """``-object '{...}'``: mostly the right types, sometimes not."""
    obj: dict[str, object] = {}
    if draw(st.integers(0, 9)) < 8:
        obj["qom-type"] = draw(
            st.one_of(st.sampled_from(["secret", "iothread", "main-loop"]), json_values)
        )
    if draw(st.integers(0, 9)) < 9:
        obj["id"] = draw(idents()) if draw(st.integers(0, 9)) < 9 else draw(json_values)
    if obj.get("qom-type") == "secret" and draw(st.integers(0, 9)) < 7:
        obj["data"] = draw(st.sampled_from(GOOD_VALUES["data"]))
    for _ in range(draw(st.integers(0, 3))):
        name, v = draw(prop())
        if draw(st.integers(0, 5)) == 0 or v is None:
            obj[name] = draw(json_values)
        elif v.lstrip("-").isdecimal() and v.isascii():
            obj[name] = int(v)
        elif v in ("on", "off"):
            obj[name] = v == "on"
        else:
            obj[name] = v
    return json.dumps(obj, ensure_ascii=draw(st.booleans()))


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """``base`` with a few random cuts, insertions and replacements."""
    s = draw(base)
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(s)))
        op = draw(st.sampled_from(["cut", "insert", "replace", "truncate"]))
        if op == "cut":
            s = s[:pos] + s[pos + draw(st.integers(1, 4)) :]
        elif op == "insert":
            s = s[:pos] + draw(st.sampled_from([",", ",,", "=", "{", "}", '"', "\\"])) + s[pos:]
        elif op == "replace":
            s = s[:pos] + draw(st.characters()) + s[pos + 1 :]
        else:
            s = s[:pos]
    return s


object_args = st.one_of(
    opts_strings(),
    json_object_strings(),
    mutated(opts_strings()),
    mutated(json_object_strings()),
    text,
    st.text(),
)

_WARNING = re.compile(
    r"warning: short-form boolean option '(.*?)' deprecated\nPlease use \1=o(?:n|ff) instead\n",
    re.DOTALL,
)


def check_cli_output(args: list[str], status: int, out: str, err: str) -> None:
    """The contract of the command line, for ``-object`` arguments ``args``."""
    assert "Traceback" not in err and "Traceback" not in out, err
    assert status in (0, 1), (status, err)
    # Warnings come first, each with the location of its option.
    for arg in args:
        prefix = f"qomhost: -object {arg}: "
        while err.startswith(prefix) and _WARNING.match(err, len(prefix)):
            err = err[_WARNING.match(err, len(prefix)).end() :]  # type: ignore[union-attr]
    if status == 0:
        assert err == ""
        assert out != ""  # help text
        return
    assert out == ""
    assert err.startswith("qomhost: "), err
    for hint in HINTS:
        if err.endswith("\n" + hint):
            err = err[: -len(hint)]
            break
    assert err.endswith("\n")
    if not any("\n" in arg or "\r" in arg for arg in args):
        assert err.count("\n") == 1, err


class _Hosts:
    """Records the hosts ``run`` creates, to release them after each run."""

    def __init__(self) -> None:
        self.made: list[qomhost.host.Host] = []
        made = self.made

        class RecordingHost(qomhost.host.Host):
            def __init__(self, name: str | None = None) -> None:
                super().__init__(name)
                made.append(self)

        self.cls = RecordingHost

    def close_all(self) -> None:
        while self.made:
            self.made.pop().close()


@pytest.fixture(scope="module")
def hosts() -> Iterator[_Hosts]:
    recorder = _Hosts()
    patch = pytest.MonkeyPatch()
    patch.setattr(qomhost.host, "Host", recorder.cls)
    try:
        yield recorder
    finally:
        patch.undo()
        recorder.close_all()


def run_in_process(hosts: _Hosts, objects: list[str]) -> tuple[int, str, str]:
    argv = list(BASE_ARGS)
    for arg in objects:
        argv += ["-object", arg]
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = run(argv + SENTINEL, "qomhost")
    finally:
        hosts.close_all()
    return status, out.getvalue(), err.getvalue()


@MANY
@given(st.lists(object_args, min_size=1, max_size=3))
def test_object_strings_in_process(hosts: _Hosts, objects: list[str]) -> None:
    status, out, err = run_in_process(hosts, objects)
    check_cli_output(objects, status, out, err)


@pytest.mark.parametrize(
    ("objects", "expected"),
    [
        (["secret,id=s,data=x"], (1, "", SENTINEL_ERROR)),
        (["help"], (0, None, "")),
        (["secret,id=1x,data=x"], (1, "", None)),
        (['{"qom-type":"secret","id":"s","data":"x"}'], (1, "", SENTINEL_ERROR)),
        (["secret,id=s,data"], (1, "", None)),
    ],
)
def test_object_string_examples(
    hosts: _Hosts, objects: list[str], expected: tuple[int, str | None, str | None]
) -> None:
    status, out, err = run_in_process(hosts, objects)
    check_cli_output(objects, status, out, err)
    assert status == expected[0]
    if expected[1] is not None:
        assert out == expected[1]
    if expected[2] is not None:
        assert err == expected[2]


@FEW
@given(st.lists(object_args, min_size=1, max_size=2))
def test_object_strings_in_the_program(objects: list[str]) -> None:
    # an argv cannot carry NUL; everything else goes
    objects = [arg.replace("\x00", "") for arg in objects]
    argv = [QOMHOST, *BASE_ARGS]
    for arg in objects:
        argv += ["-object", arg]
    proc = subprocess.run(
        argv + SENTINEL,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    out = proc.stdout.decode("utf-8", "surrogateescape")
    err = proc.stderr.decode("utf-8", "surrogateescape")
    check_cli_output(objects, proc.returncode, out, err)


# --- QMP byte streams ---------------------------------------------------------------------------

COMMANDS: list[dict[str, object]] = [
    {"execute": "qmp_capabilities"},
    {"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}},
    {"execute": "query-name"},
    {"execute": "query-version", "id": 1},
    {"execute": "query-commands"},
    {"execute": "qom-list", "arguments": {"path": "/objects"}},
    {"execute": "qom-list", "arguments": {"path": ""}},
    {"execute": "qom-get", "arguments": {"path": "/machine", "property": "type"}},
    {"execute": "object-add", "arguments": {"qom-type": "secret", "id": "s0", "data": "x"}},
    {
        "execute": "object-add",
        "arguments": {"qom-type": "secret", "id": "s1", "data": "QUJD", "format": "base64"},
    },
    {"execute": "object-add", "arguments": {"qom-type": "iothread", "id": "io0"}},
    {"execute": "object-del", "arguments": {"id": "s0"}},
    {"execute": "object-del", "arguments": {"id": "io0"}},
    {
        "execute": "qom-set",
        "arguments": {"path": "/objects/s0", "property": "data", "value": "y"},
    },
    {"execute": "human-monitor-command", "arguments": {"command-line": "info qom-tree"}},
    {"execute": "human-monitor-command", "arguments": {"command-line": "qom-list /objects"}},
    {"execute": "qom-list-types", "arguments": {"abstract": True}},
    {"execute": "qom-list-properties", "arguments": {"typename": "secret"}},
    {"exec-oob": "query-name", "id": "oob"},
]


@st.composite
def commands(draw: st.DrawFn) -> bytes:
    """A valid-looking request: from the pool, with random ids and arguments."""
    message = dict(draw(st.sampled_from(COMMANDS)))
    if draw(st.booleans()):
        message["id"] = draw(json_values)
    if draw(st.integers(0, 4)) == 0:
        message["arguments"] = draw(st.dictionaries(key, json_values, max_size=3))
    if draw(st.integers(0, 6)) == 0:
        message = {
            "execute": "human-monitor-command",
            "arguments": {"command-line": draw(hmp_lines)},
        }
    return json.dumps(message, ensure_ascii=draw(st.booleans())).encode()


# HMP lines that cannot stop the host ("q", "quit")
def _hmp_command_word(line: str) -> str:
    """The command an HMP line runs (QEMU's get_command_name)."""
    line = line.lstrip(" \t\n\v\f\r")
    end = 0
    while end < len(line) and line[end] not in " \t\n\v\f\r/":
        end += 1
    return line[:end]


hmp_lines = st.one_of(
    st.sampled_from(
        [
            "info qom-tree",
            "qom-list /",
            'qom-get "/objects',
            "object_add secret,id=h,data=x",
            "object_del h",
            "help",
            "qom-set -j /objects/s0 data [",
            "info",
        ]
    ),
    st.text(max_size=20),
).filter(lambda line: _hmp_command_word(line) not in ("q", "quit"))

SPECIAL = [
    b"[" * 1100,
    b"{" * 1100,
    b'{"a":' * 1100,
    b"]" * 50,
    b"}" * 50,
    b'{"execute":"query-name","id":"' + b"a" * (1 << 20) + b'"}',
    b'"' + "\u00e9".encode() * 200000 + b'"',
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xf8\x88\x80\x80\x80",
    b"\xfe",
    b"\xff",
    b"\x00",
    b"'",
    b'"\\u',
    b'"\\ud800"',
    b"1e99999",
    b"-",
    b"tru",
    b"\x1b[A",
    b"\r\n",
]


@st.composite
def mutated_bytes(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        if op == "flip" and pos < len(data):
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "insert":
            data[pos:pos] = draw(st.one_of(st.binary(max_size=4), st.sampled_from(SPECIAL[7:])))
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


stream_parts = st.one_of(
    commands(),
    commands(),
    commands(),
    commands(),
    mutated_bytes(commands()),
    mutated_bytes(commands()),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.sampled_from(SPECIAL),
    st.binary(max_size=40),
    st.text(max_size=30).map(lambda s: s.encode()),
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A byte stream (mostly starting with negotiation) and the places to split it at."""
    parts = draw(st.lists(stream_parts, min_size=1, max_size=8))
    if draw(st.integers(0, 9)) < 8:
        parts.insert(0, b'{"execute": "qmp_capabilities"}')
    sep = draw(st.sampled_from([b"", b"\n", b" ", b"\r\n"]))
    data = sep.join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return data, cuts


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _stable(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "timestamp"}


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def error_log() -> Iterator[_ErrorLog]:
    handler = _ErrorLog()
    logger = logging.getLogger("qomhost")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


RESYNC = b"\xff\n"


def check_replies(replies: list[dict[str, Any]]) -> None:
    for reply in replies:
        assert set(reply) in ({"return"}, {"return", "id"}, {"error"}, {"error", "id"}), reply
        if "error" in reply:
            error = reply["error"]
            assert set(error) == {"class", "desc"}, reply
            assert isinstance(error["desc"], str) and isinstance(error["class"], str)
            assert not error["desc"].startswith("internal error"), reply


def check_still_answers(client: QmpTestClient) -> None:
    client.send_raw(RESYNC)
    caps = client.execute("qmp_capabilities")
    assert caps == {"return": {}} or caps == {
        "error": {
            "class": "CommandNotFound",
            "desc": "Capabilities negotiation is already complete, command ignored",
        }
    }
    assert client.execute("query-name") == {"return": {}}


def _feed(pieces: list[bytes]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    host = qomhost.host.Host()
    try:
        client = QmpTestClient(host)
        replies: list[dict[str, Any]] = []
        for piece in pieces:
            replies += client.send_raw(piece)
        events = [_stable(e) for e in client.events]
        stopped = host.shutdown_reason is not None
        if not stopped:
            check_still_answers(client)
        return replies, events, stopped
    finally:
        host.close()


@MANY
@given(streams())
def test_qmp_streams_in_memory(stream: tuple[bytes, list[int]]) -> None:
    data, cuts = stream
    with error_log() as log:
        whole = _feed([data])
        split = _feed(_pieces(data, cuts))
    assert [r.getMessage() for r in log.records] == []
    check_replies(whole[0])
    # QEMU's lexer takes one byte at a time: the split cannot matter
    assert split == whole


@given(st.lists(commands(), min_size=1, max_size=8), st.data())
@MANY
def test_each_complete_request_gets_one_reply(requests: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(requests)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    replies, _events, _stopped = _feed(_pieces(stream, cuts))
    assert len(replies) == len(requests)
    check_replies(replies)


# --- a real process over a socket ----------------------------------------------------------------


class _Server:
    def __init__(self, tmp: Path) -> None:
        self.path = str(tmp / "qmp.sock")
        self.stderr_path = tmp / "stderr.txt"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [QOMHOST, *BASE_ARGS, "-qmp", f"unix:{self.path},server=on,wait=off"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        deadline = time.monotonic() + 10
        while not os.path.exists(self.path):
            assert self.proc.poll() is None, self.stderr()
            assert time.monotonic() < deadline, "qomhost did not create its socket"
            time.sleep(0.01)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    srv = _Server(tmp_path_factory.mktemp("robustness"))
    try:
        yield srv
    finally:
        srv.stop()


class _Conn:
    """A raw QMP connection to the server."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(15)
        self.sock.connect(path)
        self.pending = ""
        self.seq = 0
        self.greeting = self.read_until(lambda message: "QMP" in message)[-1]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until(self, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Messages up to and including the first one ``done`` accepts."""
        got: list[dict[str, Any]] = []
        while True:
            messages, self.pending = decode_messages(self.pending)
            for i, message in enumerate(messages):
                if done(message):
                    assert not messages[i + 1 :], "a message nobody asked for"
                    return got + messages[: i + 1]
            got += messages
            chunk = self.sock.recv(1 << 16)
            assert chunk, "qomhost closed the connection"
            self.pending += chunk.decode("ascii")

    def request(self, command: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Send ``command`` with a fresh id; return what came before its reply, and the reply."""
        self.seq += 1
        req_id = f"check-{self.seq}"
        self.send(json.dumps({"execute": command, "id": req_id}).encode())
        *before, reply = self.read_until(lambda message: message.get("id") == req_id)
        del reply["id"]
        return before, reply

    def execute(self, command: str) -> dict[str, Any]:
        before, reply = self.request(command)
        assert before == []
        return reply

    def close(self) -> None:
        self.sock.close()


@FEW
@given(streams())
def test_qmp_streams_over_a_socket(server: _Server, stream: tuple[bytes, list[int]]) -> None:
    data, cuts = stream
    conn = _Conn(server.path)
    try:
        assert "QMP" in conn.greeting
        for piece in _pieces(data, cuts):
            conn.send(piece)
        conn.send(RESYNC)
        # everything the stream caused, then the answer to this request
        replies, _reply = conn.request("query-name")
        check_replies([r for r in replies if "event" not in r])
        caps = conn.execute("qmp_capabilities")
        assert caps == {"return": {}} or caps["error"]["class"] == "CommandNotFound"
        assert conn.execute("query-name") == {"return": {}}
    finally:
        conn.close()
    assert server.proc.poll() is None, server.stderr()
    assert "Traceback" not in server.stderr()


def test_server_survived(server: _Server) -> None:
    conn = _Conn(server.path)
    try:
        conn.execute("qmp_capabilities")
        assert conn.execute("query-name") == {"return": {}}
    finally:
        conn.close()
    assert server.proc.poll() is None
    err = server.stderr()
    assert "Traceback" not in err
    assert "Error" not in err


# --- bytes that are not UTF-8 in arguments ---------------------------------------------------


def test_invalid_utf8_in_a_value(hosts: _Hosts) -> None:
    # Python hands such argv bytes over as lone surrogates (surrogateescape)
    status, out, err = run_in_process(hosts, ["secret,id=s,data=\udcff"])
    assert (status, out, err) == (1, "", SENTINEL_ERROR)


def test_invalid_utf8_in_a_key(hosts: _Hosts) -> None:
    arg = "secret,id=s,data=x,\udcff=1"
    status, out, err = run_in_process(hosts, [arg])
    assert (status, out, err) == (1, "", f"qomhost: -object {arg}: Invalid parameter '\udcff'\n")


def test_messages_carry_the_argument_bytes() -> None:
    # QEMU: the lexer stops at the first byte of 'é', and the message holds that byte
    proc = subprocess.run(
        [QOMHOST, *BASE_ARGS, "-object", os.fsdecode(b"{\xc3\xa9")],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    assert proc.returncode == 1
    assert proc.stderr == b"qomhost: -object {\xc3\xa9: JSON parse error, stray '\xc3'\n"
