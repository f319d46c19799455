"""``qomhost-vhost-user-crypto`` with real QEMU 7.2 as its frontend.

QEMU connects through ``-chardev socket,path=S -object
cryptodev-vhost-user,chardev=...``. The backend runs with ``-v`` and logs
every message it receives; the tests check QEMU's handshake in order
(``reference/qemu-semantics.md`` §5.3), that QEMU stays up and answers
QMP, that ``object-del`` gives the backend an EOF after which it serves
the next QEMU, and QEMU's own failure when asked for more queues than
the backend offers. Also the backend program conventions: capabilities,
usage errors, ``--fd``, SIGTERM.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from hostproc import (
    Process,
    Processes,
    Program,
    QmpConn,
    connect_unix,
    program,
    run_qmp_stdio,
    venv_tool,
    wait_until,
)
from qomhost.vhost_user.protocol import (
    FRONTEND,
    U64,
    Empty,
    Request,
    VhostUserDecoder,
)

pytestmark = pytest.mark.interop

BACKEND_NAME = "qomhost-vhost-user-crypto"

#: QEMU 7.2's messages for queue 0 with what the backend offers (MQ, REPLY_ACK,
#: SLAVE_REQ, CRYPTO_SESSION, CONFIGURE_MEM_SLOTS, STATUS)
QUEUE0 = [
    "GET_FEATURES",
    "GET_PROTOCOL_FEATURES",
    "SET_PROTOCOL_FEATURES",
    "GET_QUEUE_NUM",
    "GET_MAX_MEM_SLOTS",
    "SET_SLAVE_REQ_FD",
    "SET_OWNER",
    "GET_FEATURES",
    "SET_VRING_CALL",
    "SET_VRING_ERR",
]
#: and for each further queue (GET_MAX_MEM_SLOTS is asked again for each)
QUEUE_N = [
    "GET_FEATURES",
    "GET_PROTOCOL_FEATURES",
    "SET_PROTOCOL_FEATURES",
    "GET_MAX_MEM_SLOTS",
    "GET_FEATURES",
    "SET_VRING_CALL",
    "SET_VRING_ERR",
]


def backend_program() -> Program:
    return Program(BACKEND_NAME, venv_tool(BACKEND_NAME))


def start_backend(procs: Processes, *args: str, queues: int = 1) -> tuple[Process, Path]:
    path = procs.workdir / "crypto.sock"
    proc = procs.start(
        backend_program(),
        ["--socket-path", str(path), "--queues", str(queues), "-v", *args],
        base=False,
    )
    proc.wait_listening(path)
    return proc, path


def received(log: str, conn: str = "conn1") -> list[tuple[str, int | None]]:
    """(request name, ring index or None) of each message ``conn`` received, in order."""
    out: list[tuple[str, int | None]] = []
    for match in re.finditer(rf"{conn}: <- (\w+) \(\d+\)(?:.* index=(\d+))?", log):
        out.append((match.group(1), None if match.group(2) is None else int(match.group(2))))
    return out


def expected(queues: int) -> list[tuple[str, int | None]]:
    ring = {"SET_VRING_CALL", "SET_VRING_ERR"}
    out: list[tuple[str, int | None]] = []
    for i in range(queues):
        for name in QUEUE0 if i == 0 else QUEUE_N:
            out.append((name, i if name in ring else None))
    return out


def qemu_args(path: Path, *object_opts: str) -> list[str]:
    opts = ",".join(("cryptodev-vhost-user,id=cv0,chardev=c0", *object_opts))
    return ["-chardev", f"socket,id=c0,path={path}", "-object", opts]


@pytest.mark.parametrize("queues", [1, 2])
def test_qemu_handshake(procs: Processes, queues: int) -> None:
    backend, path = start_backend(procs, queues=2)
    run = run_qmp_stdio(
        procs,
        program("qemu"),
        ["-qmp", "stdio", *qemu_args(path, f"queues={queues}")],
        [{"execute": "qom-get", "arguments": {"path": "/objects/cv0", "property": "queues"}}],
    )
    assert run.status == 0, run.stderr
    replies = [m for m in run.messages if "return" in m or "error" in m]
    assert replies == [{"return": {}}, {"return": queues}, {"return": {}}], run.messages
    # nothing to warn about: CONFIG is not offered, so QEMU has nothing to drop
    assert run.stderr == ""
    log = backend.wait_stderr("conn1: frontend disconnected")
    assert received(log) == expected(queues), log
    # the negotiated set QEMU sent back: what was offered, masked by QEMU
    assert "SET_PROTOCOL_FEATURES (16) value=0x1a0a9" in log
    assert "SET_SLAVE_REQ_FD (21) flags=0x9" in log  # REPLY_ACK in use
    assert backend.running()


def test_object_del_then_object_add_then_a_new_qemu(procs: Processes) -> None:
    backend, path = start_backend(procs)
    qmp_path = procs.workdir / "qmp.sock"
    qemu = procs.start(
        program("qemu"), ["-qmp", f"unix:{qmp_path},server=on,wait=off", *qemu_args(path)]
    )
    with QmpConn.unix(qmp_path) as qmp:
        qmp.greet()
        queues = qmp.execute("qom-get", {"path": "/objects/cv0", "property": "queues"})
        assert queues == {"return": 1}
        chardev = qmp.execute("qom-get", {"path": "/objects/cv0", "property": "chardev"})
        assert chardev == {"return": "c0"}
        # QEMU stays up with the backend attached
        assert qmp.execute("query-status")["return"]["status"] in ("running", "prelaunch")
        # object-del cleans the vhost device up: QEMU 7.2 closes the
        # backend-request channel, the chardev (and so the socket) stays
        assert qmp.execute("object-del", {"id": "cv0"}) == {"return": {}}
        backend.wait_stderr("conn1: the frontend closed the backend-request channel")
        assert qemu.running()
        assert "conn1: frontend disconnected" not in backend.stderr()
        # a new object on the same chardev starts over on the same connection
        added = qmp.execute(
            "object-add", {"qom-type": "cryptodev-vhost-user", "id": "cv1", "chardev": "c0"}
        )
        assert added == {"return": {}}
        queues = qmp.execute("qom-get", {"path": "/objects/cv1", "property": "queues"})
        assert queues == {"return": 1}
        assert qmp.execute("quit") == {"return": {}}
    assert qemu.wait() == 0
    log = backend.wait_stderr("conn1: frontend disconnected")
    assert received(log) == expected(1) + expected(1), log
    # the backend serves the next QEMU from scratch
    run = run_qmp_stdio(
        procs,
        program("qemu"),
        ["-qmp", "stdio", *qemu_args(path)],
        [{"execute": "qom-get", "arguments": {"path": "/objects/cv0", "property": "queues"}}],
    )
    assert run.status == 0, run.stderr
    log = backend.wait_stderr("conn2: frontend disconnected")
    assert received(log, "conn2") == expected(1)
    assert "closed:" not in log  # no connection ended in an error
    assert backend.running()


def test_more_queues_than_offered(procs: Processes) -> None:
    backend, path = start_backend(procs, queues=2)
    run = run_qmp_stdio(procs, program("qemu"), ["-qmp", "stdio", *qemu_args(path, "queues=3")])
    assert run.status == 1
    # QEMU 7.2 prints the number the backend supports, not the one asked for
    assert "you are asking more queues than supported: 2" in run.stderr
    backend.wait_stderr("conn1: frontend disconnected")
    assert backend.running()


def test_sigterm_removes_the_socket(procs: Processes) -> None:
    backend, path = start_backend(procs)
    conn = connect_unix(path)  # an idle frontend does not hold the exit up
    try:
        backend.wait_stderr("conn1: frontend connected")
        backend.popen.send_signal(signal.SIGTERM)
        assert backend.wait() == 0
    finally:
        conn.close()
    assert not path.exists()


def test_sigint_too(procs: Processes) -> None:
    backend, path = start_backend(procs)
    backend.popen.send_signal(signal.SIGINT)
    assert backend.wait() == 0
    assert not path.exists()
    assert "Traceback" not in backend.stderr()


def test_print_capabilities() -> None:
    out = subprocess.run(
        [venv_tool(BACKEND_NAME), "--print-capabilities", "--no-such-option"],
        capture_output=True,
        check=True,
    )
    caps = json.loads(out.stdout)
    assert caps == {"type": "crypto", "features": ["aes-cbc", "aes-ctr", "aes-ecb", "aes-xts"]}


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "one of --socket-path and --fd is required"),
        (["--socket-path", "a", "--fd", "3"], "not allowed with argument"),
        (["--socket-path", "a", "--queues", "0"], "--queues must be between 1 and 256, not 0"),
        (["--socket-path", "a", "--queues", "x"], "invalid int value: 'x'"),
        (["--socket-path", "a", "--max-sessions", "0"], "--max-sessions must be at least 1, not 0"),
        (["--socket-path", "a", "--poll-max-ns", "-1"], "--poll-max-ns must not be negative"),
        (["--socket-path", "a", "--poll-shrink", "-2"], "--poll-shrink must not be negative"),
        (["--socket-path", "a", "--bogus"], "unrecognized arguments: --bogus"),
        (["--fd", "999"], "--fd 999: Bad file descriptor"),
        (["--socket-path", "/nonexistent/dir/s"], "cannot listen on /nonexistent/dir/s"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    out = subprocess.run([venv_tool(BACKEND_NAME), *args], capture_output=True, text=True)
    assert out.returncode == 1, out
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def run_with_fd(args: list[str], fd: int) -> subprocess.Popen[bytes]:
    """Start the backend with ``fd`` inherited (hostproc's processes inherit none)."""
    return subprocess.Popen(
        [venv_tool(BACKEND_NAME), *args],
        pass_fds=[fd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_fd_not_a_socket(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as f:
        fd = f.fileno()
        out = subprocess.run(
            [venv_tool(BACKEND_NAME), "--fd", str(fd)],
            capture_output=True,
            text=True,
            pass_fds=[fd],
        )
    assert out.returncode == 1
    assert f"--fd {fd}: not a socket" in out.stderr


def test_fd_listening(procs: Processes) -> None:
    path = procs.workdir / "inherited.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    backend = run_with_fd(["--fd", str(listener.fileno()), "-v"], listener.fileno())
    listener.close()
    try:
        run = run_qmp_stdio(procs, program("qemu"), ["-qmp", "stdio", *qemu_args(path)])
        assert run.status == 0, run.stderr
        run = run_qmp_stdio(procs, program("qemu"), ["-qmp", "stdio", *qemu_args(path)])
        assert run.status == 0, run.stderr
        assert backend.poll() is None  # a listening fd keeps serving
        backend.send_signal(signal.SIGTERM)
        _out, err = backend.communicate(timeout=10)
    finally:
        if backend.poll() is None:
            backend.kill()
            backend.wait()
    assert backend.returncode == 0
    log = err.decode()
    assert received(log, "conn1") == expected(1)
    assert received(log, "conn2") == expected(1)


def test_fd_connected_ends_with_its_frontend() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    backend = run_with_fd(["--fd", str(theirs.fileno()), "--queues", "4"], theirs.fileno())
    theirs.close()
    try:
        ours.settimeout(10)
        ours.sendall(Empty(Request.GET_QUEUE_NUM).encode())
        (reply,) = VhostUserDecoder(role=FRONTEND).feed(ours.recv(64))
        assert reply == U64(Request.GET_QUEUE_NUM, 4, 0x5)
        ours.close()
        _out, err = backend.communicate(timeout=10)
    finally:
        ours.close()
        if backend.poll() is None:
            backend.kill()
            backend.wait()
    assert backend.returncode == 0, err


def test_many_frontends_side_by_side(procs: Processes) -> None:
    backend, path = start_backend(procs)
    conns = [connect_unix(path) for _ in range(3)]
    try:
        for conn in conns:
            conn.settimeout(10)
            conn.sendall(Empty(Request.GET_QUEUE_NUM).encode())
        for conn in conns:
            (reply,) = VhostUserDecoder(role=FRONTEND).feed(conn.recv(64))
            assert reply == U64(Request.GET_QUEUE_NUM, 1, 0x5)
        wait_until(lambda: "conn3: frontend connected" in backend.stderr(), "third connection")
    finally:
        for conn in conns:
            conn.close()
