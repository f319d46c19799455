"""qomhost and QEMU as real processes, and a raw QMP client for talking to them.

Shared by ``tests/integration`` and ``tests/interop`` (their ``conftest.py``
puts this directory on ``sys.path`` and re-exports the fixtures).

* :func:`program` names a program to run: ``"qomhost"`` is the one next to the
  running interpreter, ``"qemu"`` is ``qemu-system-x86_64`` from ``PATH``.  A
  missing QEMU (or any other tool found with :func:`need_tool`) skips the test
  with the reason, or fails it when ``CI=true``.
* :class:`Processes` starts programs with stderr in a file (so nothing can
  block on a full pipe) and kills whatever is still running at teardown.
* :class:`QmpConn` speaks QMP over a connected socket byte-exactly: it reads
  whole JSON values (pretty-printed ones too) and keeps events aside.

Every wait is bounded by :data:`TIMEOUT`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

QEMU_NAME = "qemu-system-x86_64"
QOMHOST_NAME = "qomhost"

#: the arguments every test starts both programs with
BASE_ARGS: tuple[str, ...] = ("-machine", "none", "-nodefaults", "-display", "none")

#: upper bound, in seconds, for any single wait
TIMEOUT = 10.0

#: the environment variable that turns "tool missing" from a skip into a failure
CI_VAR = "CI"

VENV_BIN = Path(sys.executable).parent


def in_ci() -> bool:
    """Whether missing third-party programs are an error rather than a skip."""
    return os.environ.get(CI_VAR) == "true"


def missing(reason: str) -> NoReturn:
    """Skip the current test with ``reason``, or fail it under ``CI=true``."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true, so this is an error)", pytrace=False)
    pytest.skip(reason)


def need_tool(name: str) -> str:
    """The path of ``name`` on ``PATH``; skips (or fails in CI) when absent."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed (not found on PATH)")
    return path


def venv_tool(name: str) -> str:
    """A console script of this virtual environment (``qomhost``, ``qmp-shell``)."""
    path = VENV_BIN / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{name} is not installed next to {sys.executable}", pytrace=False)
    return str(path)


@dataclass(frozen=True)
class Program:
    """A program to start: ``name`` is its ``argv[0]`` (and its message prefix)."""

    name: str
    path: str

    @property
    def is_qemu(self) -> bool:
        return self.name == QEMU_NAME

    def masked(self, text: str) -> str:
        """``text`` with this program's name, where it starts a line, written as ``PROG``."""
        return re.sub(rf"(?m)^{re.escape(self.name)}:", "PROG:", text)


def program(kind: str) -> Program:
    """``"qomhost"`` or ``"qemu"``; QEMU missing means skip (fail in CI)."""
    if kind == "qomhost":
        return Program(QOMHOST_NAME, venv_tool(QOMHOST_NAME))
    if kind == "qemu":
        return Program(QEMU_NAME, need_tool(QEMU_NAME))
    raise ValueError(kind)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C.UTF-8"
    env.update(extra)
    return env


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def unix_listening(path: str | Path) -> bool:
    """Whether a socket is listening on the unix path ``path`` (from /proc/net/unix)."""
    target = str(path)
    with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
        next(f)
        for line in f:
            fields = line.split()
            # Flags 00010000 is __SO_ACCEPTCON: listen() has been called.
            if len(fields) >= 8 and fields[7] == target and int(fields[3], 16) & 0x10000:
                return True
    return False


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (QEMU needs a fixed port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def short_tmpdir() -> Iterator[Path]:
    """A fresh directory under /tmp with a short name (unix socket paths are limited)."""
    path = Path(tempfile.mkdtemp(prefix="qh", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Process:
    """A started program; stderr goes to a file that can be read at any time.

    With ``broken_stderr`` stderr is instead a pipe whose reading end is closed
    at once, so every write to it fails with ``EPIPE``.
    """

    def __init__(
        self,
        prog: Program,
        args: Sequence[str],
        workdir: Path,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout: int | IO[bytes] | None = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
        broken_stderr: bool = False,
    ) -> None:
        self.program = prog
        self.args = list(args)
        fd, name = tempfile.mkstemp(prefix="stderr-", dir=workdir)
        self._stderr_path = Path(name)
        with os.fdopen(fd, "wb") as err:
            self.popen = subprocess.Popen(
                [prog.name, *self.args],
                executable=prog.path,
                cwd=workdir,
                stdin=stdin,
                stdout=stdout,
                stderr=subprocess.PIPE if broken_stderr else err,
                env=env or child_env(),
            )
        if self.popen.stderr is not None:
            self.popen.stderr.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr(self) -> str:
        """Everything written to stderr so far."""
        return self._stderr_path.read_bytes().decode("utf-8", "replace")

    def wait_stderr(self, text: str, timeout: float = TIMEOUT) -> str:
        """Wait until ``text`` appears on stderr; returns all of stderr."""
        wait_until(lambda: text in self.stderr(), f"{text!r} on stderr", timeout)
        return self.stderr()

    def wait_listening(self, path: str | Path, timeout: float = TIMEOUT) -> None:
        """Wait until the program listens on the unix socket ``path``."""
        wait_until(
            lambda: unix_listening(path) or not self.running(), f"a listener on {path}", timeout
        )
        assert self.running(), f"{self.program.name} exited early:\n{self.stderr()}"

    def wait(self, timeout: float = TIMEOUT) -> int:
        """The exit status; fails the test if the process does not exit in time."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"{self.program.name} did not exit within {timeout:g} s; stderr:\n{self.stderr()}"
            ) from None

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        """Kill the process if it is still running and reap it."""
        if self.popen.poll() is None:
            self.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(TIMEOUT)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class Processes:
    """Starts programs for one test and kills them all at teardown.

    ``workdir`` is a short directory under /tmp where sockets and files live.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._procs: list[Process] = []
        self._pids: list[tuple[int, str]] = []

    def start(
        self,
        prog: Program,
        args: Sequence[str],
        *,
        base: bool = True,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout: int | IO[bytes] | None = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
        broken_stderr: bool = False,
    ) -> Process:
        """Start ``prog`` with :data:`BASE_ARGS` (unless ``base=False``) and ``args``."""
        full = [*BASE_ARGS, *args] if base else list(args)
        proc = Process(
            prog,
            full,
            self.workdir,
            stdin=stdin,
            stdout=stdout,
            env=env,
            broken_stderr=broken_stderr,
        )
        self._procs.append(proc)
        return proc

    def adopt(self, pid: int, marker: str) -> None:
        """Also kill ``pid`` at teardown (a daemon), if its command line contains ``marker``."""
        self._pids.append((pid, marker))

    def close(self) -> None:
        for proc in self._procs:
            proc.stop()
        for pid, marker in self._pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short per-test directory under /tmp for sockets and files."""
    with short_tmpdir() as path:
        yield path


@pytest.fixture
def procs(workdir: Path) -> Iterator[Processes]:
    """Start qomhost/QEMU processes; all are killed when the test ends."""
    registry = Processes(workdir)
    try:
        yield registry
    finally:
        registry.close()


@dataclass(frozen=True)
class StdioRun:
    """What a run with ``-qmp stdio`` produced."""

    status: int
    messages: list[dict[str, Any]]
    stderr: str


def run_qmp_stdio(
    procs: Processes,
    prog: Program,
    args: Sequence[str],
    commands: Sequence[dict[str, Any]] = (),
    *,
    base: bool = True,
    timeout: float = TIMEOUT,
) -> StdioRun:
    """Run ``prog`` with ``args`` (which put QMP on stdio), negotiate, send ``commands``
    and ``quit``; stdin stays open until the program exits, as a terminal would."""
    fd, name = tempfile.mkstemp(prefix="stdout-", dir=procs.workdir)
    with os.fdopen(fd, "wb") as out:
        proc = procs.start(prog, args, base=base, stdin=subprocess.PIPE, stdout=out)
    script = [{"execute": "qmp_capabilities"}, *commands, {"execute": "quit"}]
    assert proc.popen.stdin is not None
    # A program that fails at start-up may be gone before reading anything.
    with contextlib.suppress(BrokenPipeError):
        proc.popen.stdin.write(b"".join(json.dumps(c).encode() + b"\n" for c in script))
        proc.popen.stdin.flush()
    status = proc.wait(timeout)
    data = Path(name).read_bytes()
    messages = [json.loads(line) for line in data.splitlines() if line.strip()]
    return StdioRun(status, messages, proc.stderr())


def normalized(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with the greeting's version and the events' timestamps blanked."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if "QMP" in message:
            out.append(without_version(message))
        elif "event" in message:
            out.append(without_timestamp(message))
        else:
            out.append(message)
    return out


# --------------------------------------------------------------------------- sockets


def connect_unix(path: str | Path, timeout: float = TIMEOUT) -> socket.socket:
    """Connect to a unix socket, retrying until the server has created it."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def connect_tcp(host: str, port: int, timeout: float = TIMEOUT) -> socket.socket:
    """Connect over TCP, retrying until the server listens."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection((host, port), timeout=timeout)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def listen_unix(path: str | Path) -> socket.socket:
    """A listening unix socket (the peer of a client chardev)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(4)
    return sock


def accept(listener: socket.socket, timeout: float = TIMEOUT) -> socket.socket | None:
    """The next connection, or ``None`` if nobody connects within ``timeout``."""
    listener.settimeout(timeout)
    try:
        conn, _addr = listener.accept()
    except TimeoutError:
        return None
    conn.settimeout(None)
    return conn


class ConnectionClosed(AssertionError):
    """The peer closed the connection while a message was expected."""


class QmpConn:
    """A raw QMP client on a connected socket.

    Messages are read as whole JSON values from the byte stream, so both
    one-line and ``-qmp-pretty`` output work; :attr:`raw` keeps the exact bytes
    of each message (including the trailing ``\\r\\n``).  Events that arrive
    while waiting for a reply are kept in :attr:`events`.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""
        self.events: list[dict[str, Any]] = []
        self.raw: list[bytes] = []

    @classmethod
    def unix(cls, path: str | Path, timeout: float = TIMEOUT) -> QmpConn:
        return cls(connect_unix(path, timeout))

    @classmethod
    def tcp(cls, host: str, port: int, timeout: float = TIMEOUT) -> QmpConn:
        return cls(connect_tcp(host, port, timeout))

    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False at EOF. Raises TimeoutError past ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            return False
        self._buf += data
        return True

    def _take(self) -> dict[str, Any] | None:
        text = self._buf.decode("utf-8", "surrogateescape")
        stripped = text.lstrip()
        if not stripped:
            return None
        try:
            value, end = json.JSONDecoder().raw_decode(stripped)
        except json.JSONDecodeError:
            return None
        # Wait for the line end the value is followed by, so raw[] is exact.
        rest = stripped[end:]
        if not rest.startswith("\r\n"):
            return None
        consumed = len(text) - len(stripped) + end + 2
        raw = text[:consumed].encode("utf-8", "surrogateescape")
        self._buf = self._buf[len(raw) :]
        self.raw.append(raw)
        assert isinstance(value, dict), value
        return value

    def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next message, whatever it is."""
        deadline = time.monotonic() + timeout
        while True:
            message = self._take()
            if message is not None:
                return message
            try:
                more = self._fill(deadline)
            except TimeoutError:
                raise AssertionError(
                    f"no QMP message within {timeout:g} s (buffered: {self._buf!r})"
                ) from None
            if not more:
                raise ConnectionClosed(f"connection closed (buffered: {self._buf!r})")

    def send(self, message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.sock.sendall(data)

    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """Send a command and return its reply (``return`` or ``error``)."""
        message: dict[str, Any] = {"execute": command}
        if arguments is not None:
            message["arguments"] = arguments
        self.send(message)
        return self.reply(timeout)

    def reply(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next non-event message; events met on the way go to :attr:`events`."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(deadline - time.monotonic(), 0.001))
            if "event" in message:
                self.events.append(message)
            else:
                return message

    def greet(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Read the greeting and negotiate capabilities; returns the greeting."""
        greeting = self.recv(timeout)
        assert "QMP" in greeting, greeting
        assert self.execute("qmp_capabilities", timeout=timeout) == {"return": {}}
        return greeting

    def event(self, name: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The first event called ``name`` (already received or arriving)."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev["event"] == name:
                    self.events.remove(ev)
                    return ev
            message = self.recv(max(deadline - time.monotonic(), 0.001))
            if "event" in message:
                self.events.append(message)

    def silent_for(self, seconds: float) -> bool:
        """True if nothing at all arrives (and the peer does not close) for ``seconds``."""
        if self._buf:
            return False
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        except (ConnectionResetError, BrokenPipeError):
            return False
        self._buf += data
        return False

    def wait_closed(self, timeout: float = TIMEOUT) -> bytes:
        """Read until the peer closes; returns whatever arrived meanwhile."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            raise AssertionError(f"peer did not close within {timeout:g} s") from None
        data, self._buf = self._buf, b""
        return data

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> QmpConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def without_version(greeting: dict[str, Any]) -> dict[str, Any]:
    """A greeting with the version and package blanked (they differ by design)."""
    version = greeting["QMP"]["version"]
    return {
        "QMP": {
            "version": {"qemu": dict.fromkeys(version["qemu"], 0), "package": ""},
            "capabilities": greeting["QMP"]["capabilities"],
        }
    }


def without_timestamp(event: dict[str, Any]) -> dict[str, Any]:
    """An event with its timestamp removed."""
    return {key: value for key, value in event.items() if key != "timestamp"}


#: the kinds of fd that qomhost's own code opens: sockets, eventfds, memfds
_OWN_KINDS = ("socket:", "anon_inode:[eventfd]", "/memfd:")


def own_fds() -> set[int]:
    """This process's sockets, eventfds and memfds, for leak checks.

    Other kinds are left out on purpose: the pipes of the programs that the
    differential suite runs in background threads meanwhile come and go on
    their own, and would make a before/after comparison flaky.
    """
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue
        if target.startswith(_OWN_KINDS):
            fds.add(int(name))
    return fds
