"""Option strings run through QEMU 7.2 and through :mod:`qomhost.qapi.opts`.

Each case starts the real program, lets it parse an option string, and
compares what it printed on stderr (warnings, the error, its hint) with
the text qomhost produces for the same string. Lines are rebuilt with
QEMU's ``program: option: `` prefix so that whole lines are compared.

Without the QEMU binaries the tests are skipped with a reason, except when
the environment variable ``CI`` is ``true``: then they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence

import pytest

from qomhost.errors import OptsError
from qomhost.qapi.opts import (
    OptsList,
    OptType,
    keyval_object_help,
    keyval_value_to,
    opts_list_value_to,
    opts_value_to,
    parse_keyval,
    parse_qemu_opts,
    qemu_opts_object_help,
)

pytestmark = pytest.mark.differential

SYSTEM = "qemu-system-x86_64"
QSD = "qemu-storage-daemon"

_QMP_QUIT = b'{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed, and CI needs the differential tests")
        pytest.skip(f"{name} is not installed: differential tests need QEMU 7.2")
    return path


def _run(argv: Sequence[str], stdin: bytes = _QMP_QUIT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        input=stdin.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _system_argv(*args: str, monitor: bool = True) -> list[str]:
    qemu = _binary(SYSTEM)
    qmp = ["-qmp", "stdio"] if monitor else []
    return [qemu, "-machine", "none", "-nodefaults", "-display", "none", *qmp, *args]


def run_system(*args: str, monitor: bool = True) -> subprocess.CompletedProcess[str]:
    """qemu-system-x86_64 with nothing but the given options.

    The QMP monitor on stdio lets a run that parses fine quit at once;
    without it, only runs that exit by themselves (help, errors) may be made.
    """
    return _run(_system_argv(*args, monitor=monitor), _QMP_QUIT if monitor else b"")


def run_qsd(*args: str, monitor: bool = True) -> subprocess.CompletedProcess[str]:
    """qemu-storage-daemon, with a QMP monitor on stdio unless told otherwise.

    Without the monitor nothing else writes to stdout, but the daemon only
    stops by itself when the options make it exit (help, errors).
    """
    qsd = _binary(QSD)
    if not monitor:
        return _run([qsd, *args], b"")
    return _run([qsd, "--chardev", "stdio,id=c", "--monitor", "c", *args])


def run_hmp(command: str) -> str:
    """The text an HMP command prints, through QMP's human-monitor-command."""
    script = (
        '{"execute":"qmp_capabilities"}\n'
        + json.dumps({"execute": "human-monitor-command", "arguments": {"command-line": command}})
        + '\n{"execute":"quit"}\n'
    )
    proc = _run(_system_argv(), script.encode())
    for line in proc.stdout.splitlines():
        reply = json.loads(line)
        if isinstance(reply.get("return"), str):
            return str(reply["return"])
    raise AssertionError(f"no HMP output in {proc.stdout!r}")


def cli_lines(
    program: str,
    location: str,
    warnings: Sequence[str] = (),
    error: OptsError | None = None,
) -> str:
    """stderr as QEMU prints these warnings and this error for an option."""
    out = []
    for warning in warnings:
        first, _, rest = warning.partition("\n")
        out.append(f"{program}: {location}: warning: {first}\n")
        if rest:
            out.append(rest + "\n")
    if error is not None:
        out.append(f"{program}: {location}: {error.desc}\n")
        if error.hint:
            out.append(error.hint + "\n")
    return "".join(out)


def _error_of(func: object, *args: object, **kwargs: object) -> OptsError:
    assert callable(func)
    with pytest.raises(OptsError) as info:
        func(*args, **kwargs)
    return info.value


# --- qemu-system-x86_64: QemuOpts and the opts visitor ---------------------------

# (-object string, kind, option name): the string fails on converting that
# option's value; the expected message comes from opts_value_to().
OPTS_VALUE_ERRORS = [
    ("iothread,id=io,poll-max-ns=1k", "int64", "poll-max-ns"),
    ("iothread,id=io,poll-max-ns=08", "int64", "poll-max-ns"),
    ("iothread,id=io,poll-max-ns=9223372036854775808", "int64", "poll-max-ns"),
    ("sev-guest,id=sg,reduced-phys-bits=1,cbitpos=-5", "uint32", "cbitpos"),
    ("sev-guest,id=sg,reduced-phys-bits=1,cbitpos=4294967296", "uint32", "cbitpos"),
    ("secret_keyring,id=sk,serial=2147483648", "int32", "serial"),
    ("sev-guest,id=sg,reduced-phys-bits=1,kernel-hashes=xyz", "bool", "kernel-hashes"),
    ("sev-guest,id=sg,reduced-phys-bits=1,kernel-hashes=ON", "bool", "kernel-hashes"),
    ("memory-backend-ram,id=m,size=1.5", "size", "size"),
    ("memory-backend-ram,id=m,size=16E", "size", "size"),
    ("memory-backend-ram,id=m,size=0x1p3", "size", "size"),
]


@pytest.mark.parametrize(("text", "kind", "name"), OPTS_VALUE_ERRORS)
def test_object_value_errors(text: str, kind: str, name: str) -> None:
    parsed = parse_qemu_opts(text, "qom-type")
    value = parsed.get(name)
    assert value is not None
    warnings = list(parsed.warnings)
    error = _error_of(opts_value_to, kind, name, value, warnings)
    proc = run_system("-object", text)
    assert proc.returncode == 1
    assert proc.stderr == cli_lines(SYSTEM, f"-object {text}", warnings, error)


def test_object_list_range_error() -> None:
    text = "thread-context,id=tc,cpu-affinity=0-65536"
    error = _error_of(opts_list_value_to, "uint16", "cpu-affinity", ["0-65536"])
    proc = run_system("-object", text)
    assert proc.stderr == cli_lines(SYSTEM, f"-object {text}", error=error)


@pytest.mark.parametrize(
    "text",
    [
        "secret,id=s,data",
        "secret,noid,data=x",
        "sev-guest,id=sg,reduced-phys-bits=1,nokernel-hashes",
    ],
)
def test_object_flag_warnings(text: str) -> None:
    parsed = parse_qemu_opts(text, "qom-type")
    assert parsed.warnings
    proc = run_system("-object", text)
    assert proc.returncode == 0
    assert proc.stderr == cli_lines(SYSTEM, f"-object {text}", parsed.warnings)


@pytest.mark.parametrize("text", ["secret,id=s,delay", "secret,id=s,foo,,bar", "secret,id=s,no"])
def test_object_flag_warnings_before_visitor_error(text: str) -> None:
    # The visitor then rejects the odd key; the warnings before it are ours.
    parsed = parse_qemu_opts(text, "qom-type")
    proc = run_system("-object", text)
    assert proc.returncode == 1
    assert proc.stderr.startswith(cli_lines(SYSTEM, f"-object {text}", parsed.warnings))


@pytest.mark.parametrize(
    "args",
    [
        ["-object", "secret,id=1x"],
        ["-object", "secret,id=s,,data=1"],
        ["-object", "secret,id=a,data=1", "-object", "y,,id=a"],
        ["-object", "secret,id=on,data=1", "-object", "id"],
        ["-object", "secret,id=x,data=1", "-object", ",,id=x"],
        ["-chardev", "null,id=a", "-chardev", "null,id=a"],
        ["-object", "secret,id=a,data=1", "-object", "secret,id=a,data=1"],
    ],
)
def test_option_group_ids(args: list[str]) -> None:
    groups = {"-object": OptsList("object", "qom-type"), "-chardev": OptsList("chardev", "backend")}
    pairs = list(zip(args[::2], args[1::2], strict=True))
    for option, text in pairs[:-1]:
        groups[option].parse(text)
    option, text = pairs[-1]
    error = _error_of(groups[option].parse, text)
    proc = run_system(*args)
    assert proc.returncode == 1
    assert proc.stderr == cli_lines(SYSTEM, f"{option} {text}", error=error)


CHARDEV_DESC: dict[str, OptType] = {
    "backend": "string",
    "path": "string",
    "mux": "bool",
    "reconnect": "number",
    "size": "size",
}


@pytest.mark.parametrize(
    "text",
    [
        "null,id=a,bogus=1",
        "null,id=a,mux=xx",
        "null,id=a,nohelp",
        "socket,id=a,reconnect=x,path=/nonexistent",
        "socket,id=a,reconnect=99999999999999999999,path=/nonexistent",
        "ringbuf,id=a,size=x",
        "ringbuf,id=a,size=16E",
    ],
)
def test_chardev_typed_options(text: str) -> None:
    warnings: list[str] = []
    group = OptsList("chardev", "backend", desc=CHARDEV_DESC)
    error = _error_of(group.parse, text, warnings=warnings)
    proc = run_system("-chardev", text)
    assert proc.returncode == 1
    assert proc.stderr == cli_lines(SYSTEM, f"-chardev {text}", warnings, error)


def test_merged_group_refuses_id() -> None:
    error = _error_of(OptsList("name", "guest", merge_lists=True).parse, "foo,id=x")
    proc = run_system("-name", "foo,id=x")
    assert proc.stderr == cli_lines(SYSTEM, "-name foo,id=x", error=error)


def test_value_with_commas_reaches_the_object() -> None:
    text = "secret,id=s,data=x,,y,,,data=2,,3"
    expected = parse_qemu_opts(text, "qom-type").as_dict()["data"]
    script = (
        '{"execute":"qmp_capabilities"}\n'
        '{"execute":"qom-get","arguments":{"path":"/objects/s","property":"data"}}\n'
        '{"execute":"quit"}\n'
    )
    proc = _run(_system_argv("-object", text), script.encode())
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {"return": expected} in replies


# (string, known QOM type?) -> the first line QEMU prints, or None when it
# goes on to fail instead.
@pytest.mark.parametrize(
    ("text", "known"),
    [
        ("help", True),
        ("qom-type=?", True),
        ("secret,help=foo", True),
        ("secret,nohelp", True),
        ("authz-pam,help", False),
    ],
)
def test_object_help_detection(text: str, known: bool) -> None:
    request = qemu_opts_object_help(parse_qemu_opts(text, "qom-type"))
    assert request is not None
    proc = run_system("-object", text, monitor=False)
    if request.type_name is None:
        assert proc.stdout.startswith("List of user creatable objects:\n")
    elif known:
        assert proc.stdout.startswith(f"{request.type_name} options:\n")
    else:
        assert not request.list_if_unknown
        assert proc.returncode == 1


# --- qemu-storage-daemon: keyval and the keyval visitor ---------------------------

KEYVAL_PARSE_ERRORS = [
    "=x",
    ",,id=x",
    "secret,id=s,data",
    "secret,id=s,a..b=1",
    "secret,?x",
    "secret,id=s,a=1,a.b=2",
    "secret,id=s,a.b=1,a.b.c=2",
    "secret,id=s,b.1=1,x.1=1",
    "secret,id=s,a.0=1,a.2=1",
    "secret,help,a.1=2",
    "secret,id=s,x." + "a" * 128 + "=1",
]


@pytest.mark.parametrize("text", KEYVAL_PARSE_ERRORS)
def test_keyval_parse_errors(text: str) -> None:
    error = _error_of(parse_keyval, text, "qom-type")
    proc = run_qsd("--object", text)
    assert proc.returncode == 1
    assert proc.stderr == cli_lines(QSD, f"--object {text}", error=error)


# (--object string, kind, member name, dotted path)
KEYVAL_VALUE_ERRORS = [
    ("iothread,id=io,poll-max-ns=1k", "int64", "poll-max-ns", "poll-max-ns"),
    ("iothread,id=io,poll-max-ns=5 ", "int64", "poll-max-ns", "poll-max-ns"),
    ("secret_keyring,id=sk,serial=2147483648", "int32", "serial", "serial"),
    ("tls-creds-anon,id=t,verify-peer=xyz", "bool", "verify-peer", "verify-peer"),
    ("thread-context,id=tc,cpu-affinity.0=70000", "uint16", None, "cpu-affinity.0"),
    ("thread-context,id=tc,cpu-affinity.0=-1", "uint16", None, "cpu-affinity.0"),
    ("thread-context,id=tc,cpu-affinity.0=x", "uint16", None, "cpu-affinity.0"),
]


@pytest.mark.parametrize(("text", "kind", "name", "path"), KEYVAL_VALUE_ERRORS)
def test_keyval_value_errors(text: str, kind: str, name: str | None, path: str) -> None:
    node: object = parse_keyval(text, "qom-type")
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
    assert isinstance(node, str)
    error = _error_of(keyval_value_to, kind, name, node, path=path)
    proc = run_qsd("--object", text)
    assert proc.returncode == 1
    assert proc.stderr == cli_lines(QSD, f"--object {text}", error=error)


@pytest.mark.parametrize(
    ("text", "known"),
    [("help", True), ("id=x,help", True), ("secret,?", True), ("authz-pam,help", False)],
)
def test_keyval_help_detection(text: str, known: bool) -> None:
    request = keyval_object_help(parse_keyval(text, "qom-type"))
    assert request is not None
    # The monitor's greeting could come before the help text on stdout.
    proc = run_qsd("--object", text, monitor=False)
    assert proc.returncode == 0
    if request.type_name is None or not known:
        assert request.list_if_unknown
        assert proc.stdout.startswith("List of user creatable objects:\n")
    else:
        assert proc.stdout.startswith(f"{request.type_name} options:\n")


# --- HMP object_add: keyval inside qemu-system ------------------------------------


@pytest.mark.parametrize(
    ("args", "kind", "name"),
    [
        ("memory-backend-ram,id=m,size=1.5", "size", "size"),
        ("memory-backend-ram,id=m,size=0x1p3", "size", "size"),
        ("sev-guest,id=sg,reduced-phys-bits=1,cbitpos=-1", "uint32", "cbitpos"),
        ("sev-guest,id=sg,reduced-phys-bits=1,kernel-hashes=1", "bool", "kernel-hashes"),
    ],
)
def test_hmp_object_add_values(args: str, kind: str, name: str) -> None:
    value = parse_keyval(args, "qom-type")[name]
    assert isinstance(value, str)
    warnings: list[str] = []
    error = _error_of(keyval_value_to, kind, name, value, warnings=warnings)
    expected = "".join(f"warning: {w}\r\n" for w in warnings) + f"Error: {error.desc}\r\n"
    assert run_hmp(f"object_add {args}") == expected


def test_hmp_object_add_parse_error() -> None:
    error = _error_of(parse_keyval, "secret,id=s,x.1=1,b.1=1", "qom-type")
    assert run_hmp("object_add secret,id=s,x.1=1,b.1=1") == f"Error: {error.desc}\r\n"
