"""Socket chardevs under a QMP monitor: server and client mode, reconnect, ``wait=on``.

Every behaviour runs against qomhost and, as the reference, against
``qemu-system-x86_64`` (the ``kind`` parameter).  The test plays the other end
with plain sockets: a client of a server chardev, or the server a client
chardev connects to.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hostproc import (
    TIMEOUT,
    Process,
    Processes,
    Program,
    QmpConn,
    accept,
    free_tcp_port,
    listen_unix,
    program,
    unix_listening,
)

KINDS = ["qomhost", "qemu"]

NEGOTIATE_FIRST = {
    "error": {
        "class": "CommandNotFound",
        "desc": "Expecting capabilities negotiation with 'qmp_capabilities'",
    }
}

#: how long "nothing happens" is watched for
QUIET = 1.3


def start(procs: Processes, kind: str, *args: str) -> tuple[Program, Process]:
    prog = program(kind)
    return prog, procs.start(prog, list(args))


@dataclass
class Peer:
    """The server a client chardev connects to: a listening unix socket at ``path``."""

    path: Path
    listener: socket.socket

    def accept(self, timeout: float = TIMEOUT) -> socket.socket | None:
        return accept(self.listener, timeout)


@pytest.fixture
def peer(workdir: Path) -> Iterator[Peer]:
    """A listening unix socket for a client chardev; closed after the test."""
    path = workdir / "peer.sock"
    with listen_unix(path) as listener:
        yield Peer(path, listener)


def client_monitor(path: Path, options: str = "") -> list[str]:
    """A QMP monitor on a client chardev ``c`` that connects to ``path``."""
    return ["-chardev", f"socket,id=c,path={path}{options}", "-mon", "chardev=c,mode=control"]


# --------------------------------------------------------------------------- server mode


@pytest.mark.parametrize("transport", ["unix", "tcp"])
@pytest.mark.parametrize("kind", KINDS)
def test_server_serves_one_client_at_a_time(procs: Processes, kind: str, transport: str) -> None:
    """A server chardev talks to one client; a second one waits (connected, but without
    a greeting) until the first leaves, then starts from a fresh negotiation.

    ``-S``: a client that connects while QEMU 7.2 is still starting was seen to
    get the ``RESUME`` event of the machine's start before its greeting (once, on
    a loaded machine); with the machine left stopped there is no such event."""
    if transport == "unix":
        path = procs.workdir / "s.qmp"
        _prog, proc = start(procs, kind, "-S", "-qmp", f"unix:{path},server=on,wait=off")
        proc.wait_listening(path)

        def connect() -> QmpConn:
            return QmpConn.unix(path)
    else:
        port = free_tcp_port()
        _prog, proc = start(procs, kind, "-S", "-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off")

        def connect() -> QmpConn:
            return QmpConn.tcp("127.0.0.1", port)

    with connect() as first:
        first.greet()
        with connect() as second:
            assert second.silent_for(0.3)
            assert first.execute("query-name") == {"return": {}}
            first.close()

            assert "QMP" in second.recv()
            assert second.execute("query-name") == NEGOTIATE_FIRST
            assert second.execute("qmp_capabilities") == {"return": {}}
            assert second.execute("quit") == {"return": {}}
    assert proc.wait() == 0


# --------------------------------------------------------------------------- client mode


@pytest.mark.parametrize("kind", KINDS)
def test_client_connects_and_greets(procs: Processes, kind: str, peer: Peer) -> None:
    """``-chardev socket,id=c,path=P -mon chardev=c,mode=control`` connects to the test's
    server at start-up and sends the greeting; the monitor works over it."""
    path = peer.path
    _prog, proc = start(procs, kind, *client_monitor(path))
    conn = peer.accept()
    assert conn is not None, proc.stderr()
    with QmpConn(conn) as qmp:
        qmp.greet()
        reply = qmp.execute("qom-get", {"path": "/chardevs/c", "property": "connected"})
        assert reply == {"return": True}
        assert qmp.execute("quit") == {"return": {}}
    assert proc.wait() == 0
    assert proc.stderr() == ""


@pytest.mark.parametrize("kind", KINDS)
def test_client_reconnects_after_the_server_drops_it(
    procs: Processes, kind: str, peer: Peer
) -> None:
    """With ``reconnect=1`` the client chardev connects again about a second after the
    server closed the connection, and the new connection starts with a new greeting."""
    path = peer.path
    _prog, proc = start(procs, kind, *client_monitor(path, ",reconnect=1"))
    conn = peer.accept()
    assert conn is not None, proc.stderr()
    QmpConn(conn).greet()
    dropped = time.monotonic()
    conn.close()

    again = peer.accept(timeout=QUIET + 2)
    assert again is not None, f"no reconnection; stderr: {proc.stderr()}"
    delay = time.monotonic() - dropped
    assert 0.5 < delay < QUIET + 2
    with QmpConn(again) as qmp:
        assert "QMP" in qmp.recv()
        assert qmp.execute("query-name") == NEGOTIATE_FIRST
        assert qmp.execute("qmp_capabilities") == {"return": {}}
        assert qmp.execute("quit") == {"return": {}}
    assert proc.wait() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_client_without_reconnect_stays_disconnected(
    procs: Processes, kind: str, peer: Peer
) -> None:
    """Without ``reconnect`` nothing further happens after the server drops the client:
    no new connection, and the program keeps running."""
    path = peer.path
    _prog, proc = start(procs, kind, *client_monitor(path))
    conn = peer.accept()
    assert conn is not None, proc.stderr()
    QmpConn(conn).greet()
    conn.close()
    assert peer.accept(timeout=QUIET) is None
    assert proc.running()
    assert proc.stderr() == ""


@pytest.mark.parametrize("kind", KINDS)
def test_client_with_absent_peer_fails(procs: Processes, kind: str, workdir: Path) -> None:
    """A client chardev whose server does not exist, without ``reconnect``: QEMU's
    message, with the option as location, and exit status 1."""
    path = workdir / "absent.sock"
    prog, proc = start(procs, kind, *client_monitor(path))
    assert proc.wait() == 1
    assert proc.stderr() == (
        f"{prog.name}: -chardev socket,id=c,path={path}: "
        f"Failed to connect to '{path}': No such file or directory\n"
    )


def unable_to_connect(prog: Program, path: Path) -> str:
    return (
        f"{prog.name}: Unable to connect character device c: "
        f"Failed to connect to '{path}': No such file or directory\n"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_client_with_absent_peer_and_reconnect_keeps_trying(
    procs: Processes, kind: str, workdir: Path
) -> None:
    """With ``reconnect=1`` an absent server is reported (``Unable to connect character
    device c: ...``), the program keeps running, and it connects once the server
    appears."""
    path = workdir / "late.sock"
    prog, proc = start(procs, kind, *client_monitor(path, ",reconnect=1"))
    proc.wait_stderr("Unable to connect")
    assert unable_to_connect(prog, path) in proc.stderr()
    assert proc.running()

    with listen_unix(path) as listener:
        conn = accept(listener, timeout=QUIET + 2)
        assert conn is not None, proc.stderr()
        with QmpConn(conn) as qmp:
            qmp.greet()
            assert qmp.execute("quit") == {"return": {}}
    assert proc.wait() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_client_with_absent_peer_and_reconnect_reports_once(
    procs: Processes, kind: str, workdir: Path
) -> None:
    """The ``Unable to connect`` report is the only thing on stderr, printed once
    although later attempts fail too."""
    path = workdir / "late.sock"
    prog, proc = start(procs, kind, *client_monitor(path, ",reconnect=1"))
    proc.wait_stderr("Unable to connect")
    time.sleep(1.2)  # reconnect=1: at least one more failed attempt
    assert proc.running()
    assert proc.stderr() == unable_to_connect(prog, path)


# --------------------------------------------------------------------------- wait=on


def waiting_line(prog: Program, option: str, path: Path) -> str:
    return (
        f"{prog.name}: {option}: info: QEMU waiting for connection on: "
        f"disconnected:unix:{path},server=on\n"
    )


@pytest.mark.parametrize("form", ["chardev", "qmp"])
def test_server_wait_on_blocks_start_up(procs: Processes, form: str) -> None:
    """``server=on`` with the default ``wait=on``: start-up stops at that chardev, with
    QEMU's ``info: QEMU waiting for connection on: ...`` line, until a client connects;
    monitors defined later do not exist before that. The line is QEMU's, byte for
    byte."""
    lines: dict[str, str] = {}
    for kind in KINDS:
        home = procs.workdir / kind
        home.mkdir()
        path, later = home / "w.sock", home / "later.sock"
        if form == "chardev":
            option = f"socket,id=c,path={path},server=on"
            args = ["-chardev", option, "-mon", "chardev=c,mode=control"]
            location = f"-chardev {option}"
        else:
            option = f"unix:{path},server=on"
            args = ["-qmp", option]
            location = f"-qmp {option}"
        prog, proc = start(procs, kind, *args, "-qmp", f"unix:{later},server=on,wait=off")
        stderr = proc.wait_stderr("waiting for connection")
        assert stderr == waiting_line(prog, location, path)
        lines[kind] = prog.masked(stderr.replace(str(home), "DIR"))
        proc.wait_listening(path)
        time.sleep(0.3)  # time in which an unblocked start-up would have gone on
        assert not later.exists() and not unix_listening(later)

        with QmpConn.unix(path) as first:
            first.greet()
            proc.wait_listening(later)
            with QmpConn.unix(later) as second:
                second.greet()
            assert first.execute("quit") == {"return": {}}
        assert proc.wait() == 0
    assert lines["qomhost"] == lines["qemu"]


@pytest.mark.parametrize(
    ("kind", "host", "shown"),
    [
        ("qomhost", "127.0.0.1", "127.0.0.1"),
        ("qemu", "127.0.0.1", "127.0.0.1"),
        ("qomhost", "", "0.0.0.0"),
        ("qemu", "", "0.0.0.0"),
    ],
)
def test_tcp_wait_line_shows_the_bound_address(
    procs: Processes, kind: str, host: str, shown: str
) -> None:
    """For a TCP server waiting for its first client, the ``waiting for connection``
    line names the numeric address the socket is bound to."""
    port = free_tcp_port()
    option = f"tcp:{host}:{port},server=on"
    prog, proc = start(procs, kind, "-qmp", option)
    stderr = proc.wait_stderr("waiting for connection")
    assert stderr == (
        f"{prog.name}: -qmp {option}: info: QEMU waiting for connection on: "
        f"disconnected:tcp:{shown}:{port},server=on\n"
    )


@pytest.mark.parametrize("host", ["127.0.0.1", ""])
def test_tcp_server_addr_property_matches_qemu(procs: Processes, host: str) -> None:
    """``qom-get /chardevs/ID addr`` of a listening TCP chardev is the bound address as
    QEMU reports it, key order included."""
    port = free_tcp_port()
    replies: list[bytes] = []
    for kind in KINDS:
        path = procs.workdir / f"{kind}.qmp"
        _prog, proc = start(
            procs,
            kind,
            *("-qmp", f"unix:{path},server=on,wait=off"),
            *("-chardev", f"socket,id=t,host={host},port={port},server=on,wait=off"),
        )
        proc.wait_listening(path)
        with QmpConn.unix(path) as conn:
            conn.greet()
            conn.execute("qom-get", {"path": "/chardevs/t", "property": "addr"})
            replies.append(conn.raw[-1])
            assert conn.execute("quit") == {"return": {}}
        assert proc.wait() == 0
    assert replies[0] == replies[1]
