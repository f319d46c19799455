"""Monitors over real sockets, and the process around them (signals, daemonizing).

Each behaviour runs against qomhost and, as the reference, against
``qemu-system-x86_64`` with the same arguments (the ``kind`` parameter); a
test that compares the two byte for byte runs both itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostproc import (
    TIMEOUT,
    Process,
    Processes,
    Program,
    QmpConn,
    connect_unix,
    free_tcp_port,
    pid_alive,
    program,
    unix_listening,
    wait_until,
    without_timestamp,
)

KINDS = ["qomhost", "qemu"]

#: requests each client writes in one go (QEMU stops reading while 8 are queued)
PIPELINED = 30

SHUTDOWN_QUIT = {"event": "SHUTDOWN", "data": {"guest": False, "reason": "host-qmp-quit"}}
SHUTDOWN_SIGNAL = {"event": "SHUTDOWN", "data": {"guest": False, "reason": "host-signal"}}


def qmp_unix(path: Path) -> list[str]:
    return ["-qmp", f"unix:{path},server=on,wait=off"]


def start(procs: Processes, kind: str, *args: str) -> tuple[Program, Process]:
    prog = program(kind)
    return prog, procs.start(prog, list(args))


# --------------------------------------------------------------------------- several monitors


@pytest.mark.parametrize("kind", KINDS)
def test_several_monitors_serve_clients_at_once(procs: Processes, kind: str) -> None:
    """Two unix QMP monitors and one TCP monitor serve three clients at the same time,
    on one object tree: an object added through one is seen through the others."""
    a, b = procs.workdir / "a.qmp", procs.workdir / "b.qmp"
    port = free_tcp_port()
    _prog, proc = start(
        procs, kind, *qmp_unix(a), *qmp_unix(b), "-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off"
    )
    proc.wait_listening(a)
    proc.wait_listening(b)
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(conn)
            for conn in (QmpConn.unix(a), QmpConn.unix(b), QmpConn.tcp("127.0.0.1", port))
        ]
        # Every client has its greeting before any of them says anything.
        greetings = [client.recv() for client in clients]
        assert all("QMP" in g for g in greetings)
        for client in clients:
            assert client.execute("qmp_capabilities") == {"return": {}}

        add = {"qom-type": "secret", "id": "s0", "data": "from-a"}
        assert clients[0].execute("object-add", add) == {"return": {}}
        get = {"path": "/objects/s0", "property": "data"}
        assert clients[1].execute("qom-get", get) == {"return": "from-a"}
        assert clients[2].execute("object-del", {"id": "s0"}) == {"return": {}}
        assert clients[0].execute("qom-get", get) == {
            "error": {"class": "DeviceNotFound", "desc": "Device '/objects/s0' not found"}
        }
        # Bursts of requests written at once on every connection before any reply is
        # read: each is answered once, in order, on its own connection.
        for c, client in enumerate(clients):
            client.send(
                b"".join(
                    json.dumps({"execute": "query-name", "id": [c, n]}).encode()
                    for n in range(PIPELINED)
                )
            )
        for c, client in enumerate(clients):
            for n in range(PIPELINED):
                assert client.reply() == {"return": {}, "id": [c, n]}

        assert clients[2].execute("quit") == {"return": {}}
        assert proc.wait() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_quit_sends_shutdown_to_every_negotiated_client(procs: Processes, kind: str) -> None:
    """``quit`` from one client: SHUTDOWN reaches every client that negotiated
    capabilities (unix and TCP alike) before the reply; a client still in
    negotiation gets nothing; then every connection closes and the program exits 0."""
    paths = [procs.workdir / f"m{n}.qmp" for n in range(3)]
    port = free_tcp_port()
    args = [arg for path in paths for arg in qmp_unix(path)]
    _prog, proc = start(procs, kind, *args, "-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off")
    for path in paths:
        proc.wait_listening(path)
    with contextlib.ExitStack() as stack:
        negotiated = [
            stack.enter_context(conn)
            for conn in (
                QmpConn.unix(paths[0]),
                QmpConn.unix(paths[1]),
                QmpConn.tcp("127.0.0.1", port),
            )
        ]
        for client in negotiated:
            client.greet()
        pending = stack.enter_context(QmpConn.unix(paths[2]))
        assert "QMP" in pending.recv()

        asker = negotiated[1]
        asker.send({"execute": "quit", "id": "bye"})
        assert without_timestamp(asker.recv()) == SHUTDOWN_QUIT
        assert asker.recv() == {"return": {}, "id": "bye"}
        for client in (negotiated[0], negotiated[2]):
            assert without_timestamp(client.recv()) == SHUTDOWN_QUIT
        assert proc.wait() == 0
        for client in negotiated:
            assert client.wait_closed() == b""
        assert pending.wait_closed() == b""


# --------------------------------------------------------------------------- HMP and pretty QMP

#: bytes sent to the HMP monitor, one command at a time
HMP_COMMANDS = [
    b"object_add secret,id=s0,data=hi\r",
    b"qom-get /objects/s0 data\r",
    b"qom-list /objects\n",
    b"object_add secret,id=s1\r",
    b"nope\r",
]


def hmp_transcript(path: Path) -> list[bytes]:
    """Everything the HMP monitor on ``path`` sends: the banner, then what follows each
    command of :data:`HMP_COMMANDS` up to the next prompt."""
    sock = connect_unix(path)
    sock.settimeout(TIMEOUT)
    chunks: list[bytes] = []
    buf = b""

    def until_prompt() -> bytes:
        nonlocal buf
        while b"(qemu) " not in buf:
            data = sock.recv(65536)
            assert data, f"HMP connection closed; got {buf!r}"
            buf += data
        head, _, buf = buf.partition(b"(qemu) ")
        return head + b"(qemu) "

    try:
        chunks.append(until_prompt())
        for command in HMP_COMMANDS:
            sock.sendall(command)
            chunks.append(until_prompt())
        sock.sendall(b"quit\r")
        while data := sock.recv(65536):
            buf += data
        chunks.append(buf)
    finally:
        sock.close()
    return chunks


def echo(line: bytes) -> bytes:
    """What QEMU's readline sends back while ``line`` is typed, one character at a time."""
    out = b""
    for n in range(1, len(line) + 1):
        out += line[:n] + b"\x1b[K"
        if n < len(line):
            out += b"\x1b[D" * n
    return out


def test_hmp_over_unix_socket_matches_qemu(procs: Processes) -> None:
    """``-chardev socket,...,server=on,wait=off -mon chardev=h,mode=readline``: the banner,
    the prompt, readline's echo and command output with CRLF, byte for byte as QEMU
    (only the version in the banner differs)."""
    transcripts = []
    for kind in KINDS:
        path = procs.workdir / f"{kind}.hmp"
        _prog, proc = start(
            procs,
            kind,
            *("-chardev", f"socket,id=h,path={path},server=on,wait=off"),
            *("-mon", "chardev=h,mode=readline"),
        )
        proc.wait_listening(path)
        transcripts.append(hmp_transcript(path))
        assert proc.wait() == 0
        assert proc.stderr() == ""
    ours, qemus = transcripts

    assert ours[0] == b"QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) "
    assert ours[1] == echo(b"object_add secret,id=s0,data=hi") + b"\r\n(qemu) "
    assert ours[2] == echo(b"qom-get /objects/s0 data") + b'\r\n"hi"\r\n(qemu) '
    assert ours[3].endswith(b"\r\ntype (string)\r\ns0 (child<secret>)\r\n(qemu) ")
    assert ours[4].endswith(b"\r\nError: Either 'file' or 'data' must be provided\r\n(qemu) ")
    assert ours[5] == echo(b"nope") + b"\r\nunknown command: 'nope'\r\n(qemu) "
    assert ours[6] == echo(b"quit") + b"\r\n"

    assert qemus[0] == re.sub(rb"QEMU 7\.2\.0", b"QEMU 7.2.22", ours[0])
    assert ours[1:] == qemus[1:]


def test_qmp_pretty_matches_qemu(procs: Processes) -> None:
    """``-qmp-pretty``: greeting, replies (with an ``id``), errors and events are indented
    JSON with CRLF line ends, exactly as QEMU prints them."""
    raws = []
    for kind in KINDS:
        path = procs.workdir / f"{kind}.qmp"
        _prog, proc = start(procs, kind, "-qmp-pretty", f"unix:{path},server=on,wait=off")
        proc.wait_listening(path)
        with QmpConn.unix(path) as conn:
            conn.greet()
            conn.send({"execute": "qom-list", "arguments": {"path": "/chardevs"}, "id": [1, "x"]})
            conn.reply()
            conn.execute("qom-get", {"path": "/nope", "property": "x"})
            conn.send(b"{'execute': 'quit'}")
            conn.reply()
            conn.wait_closed()
        assert proc.wait() == 0
        raws.append(conn.raw)
    ours, qemus = raws

    assert ours[1] == b'{\r\n    "return": {\r\n    }\r\n}\r\n'
    assert ours[3] == (
        b'{\r\n    "error": {\r\n        "class": "DeviceNotFound",\r\n'
        b'        "desc": "Device \'/nope\' not found"\r\n    }\r\n}\r\n'
    )
    assert ours[4].startswith(b'{\r\n    "timestamp": {\r\n        "seconds": ')

    def masked(raw: bytes) -> bytes:
        raw = re.sub(rb'"(seconds|microseconds|micro)": \d+', rb'"\1": 0', raw)
        return re.sub(rb'"package": "[^"]*"', b'"package": ""', raw)

    assert [masked(r) for r in ours] == [masked(r) for r in qemus]


# --------------------------------------------------------------------------- signals

#: a process that signals ``argv[1]`` with ``argv[2]``, then waits for stdin to close
SENDER_CODE = "import os, sys\nos.kill(int(sys.argv[1]), int(sys.argv[2]))\nsys.stdin.read()\n"

#: the sender's argv[0], which differs from its executable's name (its ``comm``)
SENDER_ARGV0 = "qh-signal-sender"


def signal_from_helper(proc: Process, signo: int) -> int:
    """Signal ``proc`` from a helper that stays alive until ``proc`` has exited (so
    its /proc entry can be read); returns the helper's pid."""
    sender = subprocess.Popen(
        [SENDER_ARGV0, "-c", SENDER_CODE, str(proc.pid), str(signo)],
        executable=sys.executable,
        stdin=subprocess.PIPE,
    )
    try:
        proc.wait()
    finally:
        assert sender.stdin is not None
        sender.stdin.close()
        sender.wait(TIMEOUT)
    return sender.pid


TERMINATING = re.compile(
    r"(?P<prog>[\w-]+): terminating on signal 15 from pid (?P<pid>\d+) \((?P<name>.*)\)\n"
)


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_shuts_down_cleanly(procs: Processes, kind: str) -> None:
    """SIGTERM: the negotiated client gets SHUTDOWN with reason ``host-signal``, the
    program prints ``PROG: terminating on signal 15 from pid N (...)`` naming the
    sender's pid, and exits 0."""
    path = procs.workdir / "m.qmp"
    prog, proc = start(procs, kind, *qmp_unix(path))
    proc.wait_listening(path)
    with QmpConn.unix(path) as conn:
        conn.greet()
        sender = signal_from_helper(proc, signal.SIGTERM)
        assert without_timestamp(conn.event("SHUTDOWN")) == SHUTDOWN_SIGNAL
        assert conn.wait_closed() == b""
    assert proc.wait() == 0
    match = TERMINATING.fullmatch(proc.stderr())
    assert match is not None, proc.stderr()
    assert match["prog"] == prog.name
    assert int(match["pid"]) == sender


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_names_the_sender_by_argv0(procs: Processes, kind: str) -> None:
    """QEMU names the signal's sender by its argv[0] (qemu_get_pid_name reads
    /proc/PID/cmdline), not by its comm."""
    path = procs.workdir / "m.qmp"
    _prog, proc = start(procs, kind, *qmp_unix(path))
    proc.wait_listening(path)
    with QmpConn.unix(path) as conn:
        conn.greet()  # the main loop runs: start-up is over
        signal_from_helper(proc, signal.SIGTERM)
    match = TERMINATING.fullmatch(proc.stderr())
    assert match is not None, proc.stderr()
    assert match["name"] == SENDER_ARGV0


# --------------------------------------------------------------------------- daemonize


def pidfile_args(pidfile: Path) -> list[str]:
    return ["-pidfile", str(pidfile)]


def read_pid(pidfile: Path) -> int:
    text = pidfile.read_text()
    assert re.fullmatch(r"\d+\n", text), text
    return int(text)


@pytest.mark.parametrize("kind", KINDS)
def test_daemonize_with_pidfile(procs: Processes, kind: str) -> None:
    """``-daemonize -pidfile F``: the parent exits 0 only once the monitor listens, F
    holds the daemon's pid, QMP works, and ``quit`` ends the daemon and removes F."""
    path, pidfile = procs.workdir / "d.qmp", procs.workdir / "d.pid"
    _prog, parent = start(procs, kind, *qmp_unix(path), "-daemonize", "-pidfile", str(pidfile))
    assert parent.wait() == 0
    assert parent.stderr() == ""
    # Ready means ready: no waiting after the parent has gone.
    assert unix_listening(path)
    pid = read_pid(pidfile)
    procs.adopt(pid, str(pidfile))
    assert pid != parent.pid and pid_alive(pid)
    assert str(pidfile).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()

    with QmpConn.unix(path) as conn:
        conn.greet()
        assert conn.execute("qom-list", {"path": "/chardevs"})["return"][0]["name"] == "type"
        assert conn.execute("quit") == {"return": {}}
        assert conn.wait_closed() == b""
    wait_until(lambda: not pid_alive(pid), f"daemon {pid} to exit")
    assert not pidfile.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_daemonize_parent_waits_for_a_wait_on_server(procs: Processes, kind: str) -> None:
    """With a ``server=on`` (``wait=on``) monitor, start-up is not over until a client
    connects: the parent prints the ``waiting for connection`` line and exits 0 only
    after the first client has connected, which then gets the greeting."""
    path, pidfile = procs.workdir / "d.qmp", procs.workdir / "d.pid"
    option = f"unix:{path},server=on"
    prog, parent = start(procs, kind, "-qmp", option, "-daemonize", *pidfile_args(pidfile))
    assert parent.wait_stderr("waiting for connection") == (
        f"{prog.name}: -qmp {option}: info: QEMU waiting for connection on: "
        f"disconnected:unix:{path},server=on\n"
    )
    time.sleep(0.3)  # time in which a parent that does not wait would have exited
    assert parent.running()
    with QmpConn.unix(path) as conn:
        assert parent.wait() == 0
        pid = read_pid(pidfile)
        procs.adopt(pid, str(pidfile))
        conn.greet()
        assert conn.execute("quit") == {"return": {}}
        assert conn.wait_closed() == b""
    wait_until(lambda: not pid_alive(pid), f"daemon {pid} to exit")
    assert not pidfile.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_daemonize_failed_start_removes_pidfile(procs: Processes, kind: str) -> None:
    """A start-up error after the pidfile was written: exit 1 with QEMU's message, and
    the pidfile is removed again, as QEMU's exit notifier does."""
    pidfile = procs.workdir / "f.pid"
    prog, parent = start(
        procs, kind, "-daemonize", "-pidfile", str(pidfile), "-object", "secret,id=s"
    )
    assert parent.wait() == 1
    assert parent.stderr() == f"{prog.name}: Either 'file' or 'data' must be provided\n"
    assert not pidfile.exists()


def test_daemonize_refuses_qmp_on_stdio(procs: Processes) -> None:
    """``-daemonize -qmp stdio`` fails before forking with QEMU's message and status 1."""
    outcomes = []
    for kind in KINDS:
        prog, proc = start(procs, kind, "-daemonize", "-qmp", "stdio")
        outcomes.append((proc.wait(), prog.masked(proc.stderr())))
    assert outcomes[0] == (1, "PROG: -qmp stdio: cannot use stdio with -daemonize\n")
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("kind", KINDS)
def test_unix_socket_removed_at_exit(procs: Processes, kind: str) -> None:
    """After ``quit`` the server's unix socket path no longer exists."""
    path = procs.workdir / "m.qmp"
    _prog, proc = start(procs, kind, *qmp_unix(path))
    proc.wait_listening(path)
    with QmpConn.unix(path) as conn:
        conn.greet()
        conn.execute("quit")
        conn.wait_closed()
    assert proc.wait() == 0
    assert not os.path.exists(path)


@pytest.mark.parametrize("kind", KINDS)
def test_hmp_and_qmp_monitors_share_one_host(procs: Processes, kind: str) -> None:
    """An object added through ``-monitor`` (HMP) is read through ``-qmp``, and HMP's
    ``quit`` sends SHUTDOWN (reason ``host-qmp-quit``) to the QMP client."""
    qmp_path, hmp_path = procs.workdir / "m.qmp", procs.workdir / "m.hmp"
    _prog, proc = start(
        procs, kind, *qmp_unix(qmp_path), "-monitor", f"unix:{hmp_path},server=on,wait=off"
    )
    proc.wait_listening(qmp_path)
    proc.wait_listening(hmp_path)
    with QmpConn.unix(qmp_path) as qmp:
        qmp.greet()
        hmp = connect_unix(hmp_path)
        hmp.settimeout(TIMEOUT)
        received = b""
        hmp.sendall(b"object_add secret,id=x,data=via-hmp\r")
        while received.count(b"(qemu) ") < 2:
            data = hmp.recv(65536)
            assert data, received
            received += data
        reply = qmp.execute("qom-get", {"path": "/objects/x", "property": "data"})
        assert reply == {"return": "via-hmp"}
        hmp.sendall(b"quit\r")
        assert without_timestamp(qmp.event("SHUTDOWN")) == SHUTDOWN_QUIT
        hmp.close()
    assert proc.wait() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_with_a_closed_stderr_still_exits(procs: Processes, kind: str) -> None:
    """Nobody reading stderr any more (a closed pipe) does not stop SIGTERM from
    shutting the program down with status 0."""
    path = procs.workdir / "m.qmp"
    proc = procs.start(program(kind), qmp_unix(path), broken_stderr=True)
    proc.wait_listening(path)
    with QmpConn.unix(path) as conn:
        conn.greet()  # the main loop runs: start-up is over
        proc.popen.send_signal(signal.SIGTERM)
        event = conn.event("SHUTDOWN", timeout=2)
        assert without_timestamp(event) == SHUTDOWN_SIGNAL
    assert proc.wait(timeout=2) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_pidfile_is_private(procs: Processes, kind: str) -> None:
    """The pidfile is created with mode 0600 (``qemu_write_pidfile``), whatever the
    umask, and holds the pid and a newline."""
    path, pidfile = procs.workdir / "m.qmp", procs.workdir / "p.pid"
    _prog, proc = start(procs, kind, *qmp_unix(path), *pidfile_args(pidfile))
    proc.wait_listening(path)
    assert read_pid(pidfile) == proc.pid
    assert pidfile.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("kind", KINDS)
def test_pidfile_in_use_is_refused(procs: Processes, kind: str) -> None:
    """A second instance with the pidfile of a running one fails with QEMU's ``Cannot
    lock pid file`` message and status 1, leaving the first one's pidfile alone."""
    path, pidfile = procs.workdir / "m.qmp", procs.workdir / "p.pid"
    prog, first = start(procs, kind, *qmp_unix(path), *pidfile_args(pidfile))
    first.wait_listening(path)
    _prog, second = start(procs, kind, *pidfile_args(pidfile))
    status = second.wait(timeout=1.5)
    assert (status, second.stderr()) == (
        1,
        f"{prog.name}: cannot create PID file: Cannot lock pid file: "
        "Resource temporarily unavailable\n",
    )
    assert read_pid(pidfile) == first.pid


@pytest.mark.parametrize("kind", KINDS)
def test_pidfile_that_cannot_be_created(procs: Processes, kind: str) -> None:
    """A pidfile in a missing directory: QEMU's message and status 1."""
    pidfile = procs.workdir / "missing" / "p.pid"
    prog, proc = start(procs, kind, *pidfile_args(pidfile))
    assert proc.wait() == 1
    assert proc.stderr() == (
        f"{prog.name}: cannot create PID file: Could not create '{pidfile}': "
        "No such file or directory\n"
    )


def umask_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError("no Umask in /proc/PID/status")


@pytest.mark.parametrize("kind", KINDS)
def test_daemon_runs_in_root_with_umask_027(procs: Processes, kind: str) -> None:
    """The daemon's working directory is ``/`` and its umask 027, so the QMP socket QEMU
    creates is ``srwxr-x---`` (qomhost's is ``srw-------`` whatever the umask)."""
    path, pidfile = procs.workdir / "d.qmp", procs.workdir / "d.pid"
    _prog, parent = start(procs, kind, *qmp_unix(path), "-daemonize", *pidfile_args(pidfile))
    assert parent.wait() == 0
    pid = read_pid(pidfile)
    procs.adopt(pid, str(pidfile))
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    assert umask_of(pid) == 0o027
    assert path.stat().st_mode & 0o777 == (0o600 if kind == "qomhost" else 0o750)
