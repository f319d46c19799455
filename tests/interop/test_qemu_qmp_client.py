"""The official ``qemu.qmp`` client library and ``qmp-shell`` against qomhost.

``qemu.qmp`` (0.0.6) is what QEMU's own test suites and tools use to drive QMP.
Each test runs the client against ``qomhost`` with a QMP unix socket
(``-qmp unix:PATH,server=on,wait=off``) and, in the same test, against
``qemu-system-x86_64`` with the same arguments, then compares what the client
saw. The version numbers in the greeting are the only masked difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

from hostproc import (
    TIMEOUT,
    Process,
    Processes,
    Program,
    QmpConn,
    child_env,
    program,
    venv_tool,
    without_version,
)

pytestmark = pytest.mark.interop

SECRET_ARGS = ("-object", "secret,id=sec0,data=hunter2", "-object", "secret,id=key0,data=k,,ey")


def start_qmp_socket(procs: Processes, prog: Program, *extra: str) -> tuple[Process, Path]:
    """Start ``prog`` with a QMP unix socket and the test secrets; wait for the socket."""
    path = procs.workdir / f"{prog.name}.qmp"
    proc = procs.start(prog, ["-qmp", f"unix:{path},server=on,wait=off", *SECRET_ARGS, *extra])
    proc.wait_listening(path)
    return proc, path


def error_of(exc: ExecuteError) -> tuple[str, str]:
    """QEMU's error class and description as the client reports them."""
    return exc.error_class, str(exc)


async def async_session(path: Path) -> dict[str, Any]:
    """A scripted ``QMPClient`` session; returns what the client observed."""
    seen: dict[str, Any] = {}
    client = QMPClient("qomhost-test")
    await asyncio.wait_for(client.connect(str(path)), TIMEOUT)
    try:
        assert client.greeting is not None
        seen["greeting"] = without_version(client.greeting._asdict())

        async def run(cmd: str, args: dict[str, object] | None = None, oob: bool = False) -> Any:
            try:
                return await asyncio.wait_for(client.execute(cmd, args, oob=oob), TIMEOUT)
            except ExecuteError as exc:
                return error_of(exc)

        seen["qom-get data"] = await run("qom-get", {"path": "/objects/sec0", "property": "data"})
        seen["qom-get comma"] = await run("qom-get", {"path": "/objects/key0", "property": "data"})
        seen["qom-get loaded"] = await run(
            "qom-get", {"path": "/objects/sec0", "property": "loaded"}
        )
        seen["object-add"] = await run(
            "object-add", {"qom-type": "secret", "id": "s1", "data": "eA==", "format": "base64"}
        )
        seen["qom-get format"] = await run("qom-get", {"path": "/objects/s1", "property": "format"})
        seen["object-add dup"] = await run(
            "object-add", {"qom-type": "secret", "id": "s1", "data": "x"}
        )
        seen["object-add no data"] = await run("object-add", {"qom-type": "secret", "id": "s2"})
        seen["qom-get missing"] = await run(
            "qom-get", {"path": "/objects/nope", "property": "data"}
        )
        seen["unknown command"] = await run("no-such-command")
        # The client enabled "oob" during negotiation, so exec-oob is accepted as
        # a request; the command itself is not allowed out of band.
        seen["exec-oob"] = await run("qom-list-types", oob=True)
        seen["hmp qom-get"] = await run(
            "human-monitor-command", {"command-line": "qom-get /objects/s1 data"}
        )
        seen["hmp error"] = await run(
            "human-monitor-command", {"command-line": "object_add secret,id=s3"}
        )
        seen["hmp object_del"] = await run(
            "human-monitor-command", {"command-line": "object_del s1"}
        )
        seen["qom-list /objects"] = sorted(
            item["name"] for item in await run("qom-list", {"path": "/objects"})
        )
        seen["quit"] = await run("quit")
        event = await asyncio.wait_for(client.events.get(), TIMEOUT)
        seen["event"] = (event["event"], event["data"])
    finally:
        # The server closes the connection after quit; the client may see EOF
        # before disconnect() runs (qemu.machine suppresses it the same way).
        with contextlib.suppress(EOFError, ConnectionResetError):
            await asyncio.wait_for(client.disconnect(), TIMEOUT)
    return seen


def test_async_client_session_matches_qemu(procs: Processes) -> None:
    """QMPClient connects, negotiates (with OOB), runs commands, gets QEMU's errors as
    ExecuteError, uses human-monitor-command, and receives SHUTDOWN on quit — the same
    observations as with QEMU."""
    qomhost = program("qomhost")
    proc, path = start_qmp_socket(procs, qomhost)
    seen = asyncio.run(async_session(path))
    assert proc.wait() == 0
    assert proc.stderr() == ""

    assert seen["greeting"]["QMP"]["capabilities"] == ["oob"]
    assert seen["qom-get data"] == "hunter2"
    assert seen["qom-get comma"] == "k,ey"
    assert seen["qom-get loaded"] is True
    assert seen["object-add"] == {}
    assert seen["qom-get format"] == "base64"
    assert seen["object-add dup"] == (
        "GenericError",
        "attempt to add duplicate property 's1' to object (type 'container')",
    )
    assert seen["object-add no data"] == (
        "GenericError",
        "Either 'file' or 'data' must be provided",
    )
    assert seen["qom-get missing"] == ("DeviceNotFound", "Device '/objects/nope' not found")
    assert seen["unknown command"] == (
        "CommandNotFound",
        "The command no-such-command has not been found",
    )
    assert seen["exec-oob"] == ("GenericError", "The command qom-list-types does not support OOB")
    assert seen["hmp qom-get"] == '"eA=="\r\n'
    assert seen["hmp error"] == "Error: Either 'file' or 'data' must be provided\r\n"
    assert seen["hmp object_del"] == ""
    assert seen["qom-list /objects"] == ["key0", "sec0", "type"]
    assert seen["quit"] == {}
    assert seen["event"] == ("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})

    qemu = program("qemu")
    qproc, qpath = start_qmp_socket(procs, qemu)
    assert asyncio.run(async_session(qpath)) == seen
    assert qproc.wait() == 0


def legacy_session(path: Path) -> dict[str, Any]:
    """A scripted session with the synchronous ``QEMUMonitorProtocol``."""
    seen: dict[str, Any] = {}
    qmp = QEMUMonitorProtocol(str(path))
    qmp.settimeout(TIMEOUT)
    try:
        greeting = qmp.connect()
        assert greeting is not None
        seen["greeting"] = without_version(greeting)
        seen["qom-get"] = qmp.cmd("qom-get", path="/objects/sec0", property="data")
        seen["object-add"] = qmp.cmd("object-add", **{"qom-type": "secret", "id": "s1", "data": ""})
        seen["loaded"] = qmp.cmd("qom-get", path="/objects/s1", property="loaded")
        try:
            qmp.cmd("object-del", id="nope")
        except ExecuteError as exc:
            seen["object-del"] = error_of(exc)
        # cmd_raw returns the reply without raising; cmd_obj sends any object.
        seen["raw error"] = qmp.cmd_raw("qom-set", {"path": "/objects/s1", "property": "loaded"})
        seen["obj"] = qmp.cmd_obj({"execute": "qom-get", "arguments": {"path": "/objects/s1"}})
        seen["no events yet"] = qmp.get_events()
        seen["quit"] = qmp.cmd_raw("quit")
        event = qmp.pull_event(wait=TIMEOUT)
        assert event is not None
        seen["event"] = (event["event"], event["data"])
    finally:
        with contextlib.suppress(EOFError, ConnectionResetError):
            qmp.close()
    return seen


def test_sync_legacy_client_matches_qemu(procs: Processes) -> None:
    """The synchronous QEMUMonitorProtocol shim works against qomhost as against QEMU:
    greeting, cmd/cmd_raw/cmd_obj replies, ExecuteError, and events."""
    proc, path = start_qmp_socket(procs, program("qomhost"))
    seen = legacy_session(path)
    assert proc.wait() == 0

    assert seen["qom-get"] == "hunter2"
    assert seen["object-add"] == {}
    assert seen["loaded"] is True
    assert seen["object-del"] == ("GenericError", "object 'nope' not found")
    assert seen["raw error"] == {
        "error": {"class": "GenericError", "desc": "Parameter 'value' is missing"}
    }
    assert seen["obj"] == {
        "error": {"class": "GenericError", "desc": "Parameter 'property' is missing"}
    }
    assert seen["no events yet"] == []
    assert seen["quit"] == {"return": {}}
    assert seen["event"] == ("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})

    qproc, qpath = start_qmp_socket(procs, program("qemu"))
    assert legacy_session(qpath) == seen
    assert qproc.wait() == 0


@pytest.mark.parametrize("kind", ["qomhost", "qemu"])
def test_legacy_client_accepts_monitor_connection(procs: Processes, kind: str) -> None:
    """With ``server=True`` the client listens and the program connects to it through a
    client chardev (``-chardev socket,path=P -mon chardev=..,mode=control``), as
    qemu.machine drives QEMU."""
    prog = program(kind)
    path = procs.workdir / "client.qmp"
    qmp = QEMUMonitorProtocol(str(path), server=True)
    try:
        proc = procs.start(
            prog,
            [
                *("-name", "guest0"),
                *("-chardev", f"socket,id=mon0,path={path}"),
                *("-mon", "chardev=mon0,mode=control"),
            ],
        )
        greeting = qmp.accept(timeout=TIMEOUT)
        assert greeting["QMP"]["capabilities"] == ["oob"]
        qmp.settimeout(TIMEOUT)
        assert qmp.cmd("query-name") == {"name": "guest0"}
        assert qmp.cmd("qom-get", path="/chardevs/mon0", property="connected") is True
        assert qmp.cmd_raw("quit") == {"return": {}}
        event = qmp.pull_event(wait=TIMEOUT)
        assert event is not None and event["event"] == "SHUTDOWN"
    finally:
        with contextlib.suppress(EOFError, ConnectionResetError):
            qmp.close()
    assert proc.wait() == 0
    assert proc.stderr() == ""


SHELL_INPUT = """\
qom-get path=/objects/sec0 property=data
object-add qom-type=secret id=s1 data=abc format=raw
qom-get path=/objects/s1 property=format
qom-list path=/objects/s1
qom-get path=/objects/nope property=data
object-add qom-type=secret id=s2
object-add qom-type=secret id=s3 data=abc format=hex
qom-set path=/objects/s1 property=loaded value=false
human-monitor-command command-line=qom-list
this-is-not-a-command
"""


def run_qmp_shell(workdir: Path, path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """Pipe :data:`SHELL_INPUT` into ``qmp-shell`` connected to ``path``."""
    return subprocess.run(
        [venv_tool("qmp-shell"), *flags, str(path)],
        input=SHELL_INPUT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        # qmp-shell keeps its history in $HOME.
        env=child_env(HOME=str(workdir)),
    )


def mask_shell(stdout: str) -> str:
    """qmp-shell's banner shows the QEMU version, which differs by design."""
    return "\n".join(
        "Connected to QEMU X" if line.startswith("Connected to QEMU ") else line
        for line in stdout.split("\n")
    )


def quit_over_qmp(path: Path) -> None:
    """Connect once more (the shell has left) and quit."""
    with QmpConn.unix(path) as conn:
        conn.greet()
        assert conn.execute("quit") == {"return": {}}
        conn.wait_closed()


def test_qmp_shell_through_a_pipe_matches_qemu(procs: Processes) -> None:
    """qmp-shell's ``cmd key=value`` lines piped on stdin print the same replies from
    qomhost as from QEMU."""
    proc, path = start_qmp_socket(procs, program("qomhost"))
    out = run_qmp_shell(procs.workdir, path)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    prompt = "(QEMU) "
    lines = out.stdout.split("\n")
    assert lines[:3] == ["Welcome to the QMP low-level shell!", "Connected to QEMU 7.2.0", ""]
    replies = [line.removeprefix(prompt) for line in lines[3:]]
    assert replies[0] == '{"return": "hunter2"}'
    assert replies[1] == '{"return": {}}'
    assert replies[2] == '{"return": "raw"}'
    assert replies[4] == (
        '{"error": {"class": "DeviceNotFound", "desc": "Device \'/objects/nope\' not found"}}'
    )
    assert replies[5] == (
        '{"error": {"class": "GenericError", "desc": "Either \'file\' or \'data\' must be'
        ' provided"}}'
    )
    assert replies[6] == (
        '{"error": {"class": "GenericError", "desc": "Parameter \'format\' does not accept'
        " value 'hex'\"}}"
    )
    assert replies[7] == (
        '{"error": {"class": "GenericError", "desc": "Property \'secret.loaded\' is not writable"}}'
    )
    assert replies[9] == (
        '{"error": {"class": "CommandNotFound", "desc": "The command this-is-not-a-command'
        ' has not been found"}}'
    )
    quit_over_qmp(path)
    assert proc.wait() == 0

    qproc, qpath = start_qmp_socket(procs, program("qemu"))
    qout = run_qmp_shell(procs.workdir, qpath)
    assert qout.returncode == 0, qout.stderr
    assert mask_shell(out.stdout) == mask_shell(qout.stdout)
    quit_over_qmp(qpath)
    assert qproc.wait() == 0


def test_qmp_shell_pretty_matches_qemu(procs: Processes) -> None:
    """``qmp-shell -p`` (indented, sorted replies) prints the same text for both."""
    outputs = []
    for kind in ("qomhost", "qemu"):
        proc, path = start_qmp_socket(procs, program(kind))
        out = run_qmp_shell(procs.workdir, path, "-p")
        assert out.returncode == 0, out.stderr
        quit_over_qmp(path)
        assert proc.wait() == 0
        outputs.append(mask_shell(out.stdout))
    assert '    "return": "hunter2"\n' in outputs[0]
    assert outputs[0] == outputs[1]
