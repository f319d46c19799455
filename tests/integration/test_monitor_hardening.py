"""Monitors against hostile or careless use, over real sockets.

* Oversized QMP input is refused with QEMU's error and the connection closed,
  and the process does not grow from one such message to the next (RSS
  read from ``/proc``).
* An HMP line longer than QEMU's 4095 bytes is cut where QEMU cuts it.
* Listening unix sockets are private (0600); QEMU leaves them to the umask.
* A TCP monitor that anyone on the network can reach, without TLS, is
  warned about; loopback and unix monitors are not.
* ``-daemonize`` with a pidfile another instance holds fails as in QEMU.

Figures from these runs are in docs/reliability.md.
"""

from __future__ import annotations

import os
import re
import socket
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
    program,
    wait_until,
)

KINDS = ["qomhost", "qemu"]
MIB = 1 << 20


def start(procs: Processes, kind: str, *args: str) -> tuple[Program, Process]:
    prog = program(kind)
    return prog, procs.start(prog, list(args))


def qmp_unix(path: Path) -> list[str]:
    return ["-qmp", f"unix:{path},server=on,wait=off"]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def send_and_expect_close(path: Path, payload: bytes) -> dict[str, object]:
    """Send ``payload`` on a fresh negotiated connection; the one reply, then EOF."""
    conn = QmpConn.unix(path)
    conn.greet()
    try:
        conn.sock.sendall(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed before all of it was read: the point
    reply = conn.recv(timeout=60)
    conn.wait_closed(timeout=60)
    conn.close()
    return reply


def test_oversized_qmp_input_closes_without_growth(procs: Processes) -> None:
    """A 70 MiB string and a 3 Mi-token array, three times each: QEMU's error,
    the connection closed, the next client served, and RSS after the last round
    within 32 MiB of after the one before (the peak is bounded by QEMU's
    limits). Keeping either input would add more than that each round; the
    first rounds may still settle the allocator's free lists (34 MiB between
    the first two was seen once)."""
    path = procs.workdir / "m.qmp"
    _prog, proc = start(procs, "qomhost", *qmp_unix(path))
    proc.wait_listening(path)
    string = b'{"execute": "query-name", "arguments": {"x": "' + b"a" * (70 * MIB)
    string += b'"}}{"execute": "quit"}'
    tokens = b"[" + b"1," * (3 * MIB) + b"1]"
    size_error = {"error": {"class": "GenericError", "desc": "JSON token size limit exceeded"}}
    count_error = {"error": {"class": "GenericError", "desc": "JSON token count limit exceeded"}}
    after = []
    for _round in range(3):
        assert send_and_expect_close(path, string) == size_error
        assert send_and_expect_close(path, tokens) == count_error
        # A chardev serves one client at a time: the next one is served.
        with QmpConn.unix(path) as conn:
            conn.greet()
            assert conn.execute("query-name") == {"return": {}}
        after.append(rss_kib(proc.pid))
    assert proc.running()
    assert after[2] - after[1] < 32 * 1024, after
    assert rss_kib(proc.pid, "VmHWM") < 512 * 1024


@pytest.mark.parametrize("kind", KINDS)
def test_long_hmp_line_is_cut_at_4095_bytes(procs: Processes, kind: str) -> None:
    path = procs.workdir / "m.hmp"
    _prog, proc = start(procs, kind, "-monitor", f"unix:{path},server=on,wait=off")
    proc.wait_listening(path)
    sock = connect_unix(path)
    sock.sendall(b"a" * 5000 + b"\r")
    seen = b""
    sock.settimeout(TIMEOUT)
    while b"unknown command" not in seen or not seen.endswith(b"(qemu) "):
        chunk = sock.recv(1 << 20)
        assert chunk, "monitor closed"
        seen += chunk
    sock.close()
    match = re.search(rb"unknown command: '(a*)'", seen)
    assert match is not None and len(match.group(1)) == 4095


@pytest.mark.parametrize("kind", KINDS)
def test_unix_monitor_socket_mode(procs: Processes, kind: str) -> None:
    """qomhost: 0600 whatever the umask; QEMU: 0777 less the umask (0022 here)."""
    path = procs.workdir / "m.qmp"
    _prog, proc = start(procs, kind, *qmp_unix(path))
    proc.wait_listening(path)
    mode = path.stat().st_mode & 0o777
    if kind == "qomhost":
        assert mode == 0o600
    else:
        umask = os.umask(0)
        os.umask(umask)
        assert mode == 0o777 & ~umask


def warnings_of(procs: Processes, *monitor: str) -> str:
    _prog, proc = start(procs, "qomhost", *monitor)
    # The chardev listens before its monitor starts (and warns): a greeting
    # says the monitor runs, so any warning was written before it.
    port = int(monitor[1].rsplit(":", 1)[1].split(",")[0])
    wait_until(lambda: _greeted(port), f"a QMP greeting on port {port}")
    proc.stop()
    return proc.stderr()


def _greeted(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            return sock.recv(4096).startswith(b'{"QMP"')
    except OSError:
        return False


def test_tcp_monitor_reachable_from_the_network_is_warned_about(procs: Processes) -> None:
    port = free_tcp_port()
    text = warnings_of(procs, "-qmp", f"tcp:0.0.0.0:{port},server=on,wait=off")
    assert text.startswith(
        f"qomhost: -qmp tcp:0.0.0.0:{port},server=on,wait=off: warning: monitor on "
        f"tcp:0.0.0.0:{port} accepts connections from the network without TLS: "
        "anyone who connects controls this process\n"
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_tcp_monitor_is_not_warned_about(procs: Processes, host: str) -> None:
    port = free_tcp_port()
    text = warnings_of(procs, "-qmp", f"tcp:{host}:{port},server=on,wait=off")
    assert "warning" not in text


@pytest.mark.parametrize("kind", KINDS)
def test_daemonize_with_a_locked_pidfile_is_refused(procs: Processes, kind: str) -> None:
    """``-daemonize -pidfile F`` while another instance holds F: QEMU's message on
    the parent's stderr, status 1, and the first instance's pidfile untouched."""
    path, pidfile = procs.workdir / "m.qmp", procs.workdir / "p.pid"
    prog, first = start(procs, kind, *qmp_unix(path), "-pidfile", str(pidfile))
    first.wait_listening(path)
    _prog, second = start(procs, kind, "-daemonize", "-pidfile", str(pidfile))
    assert second.wait() == 1
    assert second.stderr() == (
        f"{prog.name}: cannot create PID file: Cannot lock pid file: "
        "Resource temporarily unavailable\n"
    )
    assert int(pidfile.read_text().strip()) == first.pid
    assert first.running()
