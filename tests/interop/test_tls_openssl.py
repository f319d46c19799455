"""TLS monitors with the ``openssl`` CLI as the peer: ``s_client`` and ``s_server``.

``openssl s_client -cert ... -key ...`` connects to a QMP monitor behind
``tls-creds``/``tls-authz``: the allowed certificate gets the greeting and
answers, a denied one gets nothing. ``openssl s_server -Verify 1`` is the
server a client chardev connects to, with its ``endpoint=client``
credentials. Each runs against qomhost and ``qemu-system-x86_64`` with the
same command line, and what ``openssl`` printed is compared.

``s_client`` sends what it reads from its standard input as one record per
read; the lines are written a moment apart, and a last whitespace line lets
QEMU 7.2 finish the record before it (see ``tests/integration/test_tls_monitor.py``).
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from typing import IO

import pytest

from hostproc import TIMEOUT, Processes, free_tcp_port, need_tool, program, wait_until
from tlspki import Pki, json_object, make_pki

pytestmark = pytest.mark.interop

KINDS = ("qomhost", "qemu")

#: the gap between two lines written to s_client, so that each is its own record
GAP = 0.2


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Collector:
    """Reads a pipe in the background so that waiting never blocks on it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.data = b""
        self._stream = stream
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while chunk := self._stream.read1(4096):  # type: ignore[attr-defined]
            self.data += chunk

    def wait_for(self, count: int, what: bytes = b"\r\n") -> bytes:
        wait_until(lambda: self.data.count(what) >= count, f"{count} x {what!r} from openssl")
        return self.data

    def join(self) -> bytes:
        self._thread.join(TIMEOUT)
        return self.data


def listening(port: int) -> bool:
    """Whether something listens on TCP port ``port`` (from /proc/net/tcp)."""
    with open("/proc/net/tcp", encoding="ascii") as f:
        next(f)
        return any(
            int(fields[1].split(":")[1], 16) == port and fields[3] == "0A"
            for fields in (line.split() for line in f)
        )


def mask(data: bytes) -> bytes:
    """The greeting's version numbers and package, which differ by design."""
    data = re.sub(rb'"package": "[^"]*"', b'"package": ""', data)
    return re.sub(rb'"(major|minor|micro)": \d+', rb'"\1": 0', data)


def server_args(pki: Pki, port: int, identity: str) -> list[str]:
    authz = {"qom-type": "authz-simple", "id": "auth0", "identity": identity}
    return [
        "-object",
        f"tls-creds-x509,id=tls0,dir={pki.server},endpoint=server,verify-peer=on",
        "-object",
        json_object(authz),
        "-chardev",
        f"socket,id=m,host=127.0.0.1,port={port},server=on,wait=off,tls-creds=tls0,tls-authz=auth0",
        "-mon",
        "chardev=m,mode=control",
    ]


def s_client(pki: Pki, port: int, client: str, lines: list[bytes], replies: int) -> bytes:
    """Run ``openssl s_client`` as ``client``; returns its standard output."""
    d = pki.client(client)
    wait_until(lambda: listening(port), f"a listener on port {port}")
    proc = subprocess.Popen(
        [
            need_tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}",
            "-CAfile", str(pki.ca_cert), "-verify_return_error",
            "-cert", str(d / "client-cert.pem"), "-key", str(d / "client-key.pem"),
            "-quiet",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    out = Collector(proc.stdout)
    try:
        if not replies:
            # Refused: the server closes the connection and s_client exits.
            proc.wait(TIMEOUT)
            return out.join()
        out.wait_for(1)
        for line in lines:
            proc.stdin.write(line + b"\n")
            proc.stdin.flush()
            time.sleep(GAP)
        proc.stdin.write(b" \n")
        proc.stdin.flush()
        return out.wait_for(1 + replies)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)


@pytest.mark.parametrize("client", ["fred", "bob"])
def test_s_client_allowed_and_denied(procs: Processes, pki: Pki, client: str) -> None:
    """fred (allowed by ``authz-simple``) gets the greeting and two answers; bob's
    connection is closed before anything is written."""
    lines = [b'{"execute":"qmp_capabilities"}', b'{"execute":"query-name"}']
    replies = 2 if client == "fred" else 0
    seen: dict[str, tuple[bytes, str]] = {}
    for kind in KINDS:
        prog = program(kind)
        port = free_tcp_port()
        proc = procs.start(prog, server_args(pki, port, pki.dn["fred"]))
        try:
            printed = mask(s_client(pki, port, client, lines, replies))
        finally:
            proc.stop()
        seen[kind] = (printed, prog.masked(proc.stderr()))
    assert seen["qomhost"] == seen["qemu"]
    if client == "fred":
        assert seen["qemu"][0] == (
            b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 0}, '
            b'"package": ""}, "capabilities": ["oob"]}}\r\n'
            b'{"return": {}}\r\n{"return": {}}\r\n'
        )
    else:
        assert seen["qemu"][0] == b""


def test_s_server_is_greeted_by_a_client_chardev(procs: Processes, pki: Pki) -> None:
    """A client chardev with fred's ``endpoint=client`` credentials connects to
    ``openssl s_server -Verify 1`` (which demands a client certificate), checks the
    server's certificate and host name, and the QMP greeting arrives."""
    openssl = need_tool("openssl")
    seen: dict[str, bytes] = {}
    for kind in KINDS:
        port = free_tcp_port()
        server = subprocess.Popen(
            [
                openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1",
                "-cert", str(pki.server / "server-cert.pem"),
                "-key", str(pki.server / "server-key.pem"),
                "-CAfile", str(pki.ca_cert), "-Verify", "1", "-verify_return_error", "-quiet",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert server.stdout is not None
        out = Collector(server.stdout)
        try:
            wait_until(lambda port=port: listening(port), "s_server listening")
            proc = procs.start(
                program(kind),
                [
                    "-object",
                    f"tls-creds-x509,id=tlsc,dir={pki.client('fred')},endpoint=client",
                    "-chardev",
                    f"socket,id=c,host=127.0.0.1,port={port},tls-creds=tlsc",
                    "-mon",
                    "chardev=c,mode=control",
                ],
            )
            seen[kind] = mask(out.wait_for(1))
            proc.stop()
        finally:
            server.kill()
            server.wait(TIMEOUT)
    assert seen["qomhost"] == seen["qemu"]
    assert seen["qemu"].startswith(b'{"QMP": {"version": ')
