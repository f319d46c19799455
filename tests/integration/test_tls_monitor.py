"""Monitors over TLS with ``tls-authz``, against QEMU 7.2.

Each scenario starts qomhost and ``qemu-system-x86_64`` with the same command
line::

    -object tls-creds-x509,id=tls0,dir=SERVER,endpoint=server,verify-peer=on
    -object authz-...,id=auth0,...
    -chardev socket,id=m,host=127.0.0.1,port=P,server=on,wait=off,tls-creds=tls0,tls-authz=auth0
    -mon chardev=m,mode=control

(QEMU 7.2 refuses ``tls-creds`` on a unix socket, so these are TCP), plays
the same clients against both with Python's :mod:`ssl`, and compares what
the clients saw, byte for byte, and what was printed on stderr. The
certificates come from the ``openssl`` CLI (``tests/tlspki.py``).

QEMU 7.2 reads a TLS record's bytes one at a time and leaves the end of the
newest record unread until another record arrives, so a command is only
answered once something follows it. :class:`TlsQmp` sends a one-space
record after each command, which both programs skip as JSON whitespace.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from hostproc import (
    TIMEOUT,
    ConnectionClosed,
    Processes,
    QmpConn,
    free_tcp_port,
    program,
    without_version,
)
from tlspki import Pki, json_object, listen_tcp, make_pki, server_context, tls_connect

KINDS = ("qomhost", "qemu")

SIMPLE = "authz-simple"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class TlsQmp(QmpConn):
    """A QMP client on a TLS socket; each message is followed by a one-space record."""

    def send(self, message: dict[str, Any] | bytes) -> None:
        super().send(message)
        self.sock.sendall(b" ")


def authz_simple(identity: str) -> dict[str, object]:
    return {"qom-type": SIMPLE, "id": "auth0", "identity": identity}


def server_args(
    pki: Pki,
    port: int,
    authz: dict[str, object] | None,
    *,
    verify_peer: str = "on",
    mode: str = "control",
) -> list[str]:
    args = [
        "-object",
        f"tls-creds-x509,id=tls0,dir={pki.server},endpoint=server,verify-peer={verify_peer}",
    ]
    chardev = f"socket,id=m,host=127.0.0.1,port={port},server=on,wait=off,tls-creds=tls0"
    if authz is not None:
        args += ["-object", json_object(authz)]
        chardev += ",tls-authz=auth0"
    return [*args, "-chardev", chardev, "-mon", f"chardev=m,mode={mode}"]


Visit = list[object]


def visit(
    pki: Pki,
    port: int,
    client: str | None,
    commands: Sequence[dict[str, Any]] = ({"execute": "qmp_capabilities"},),
    *,
    tls12: bool = False,
) -> Visit:
    """What client ``client`` sees: ``["closed", bytes]`` if it is dropped before
    the greeting, else the greeting (version masked), each reply, and the exact
    bytes of those replies."""
    with TlsQmp(tls_connect(pki, port, client, tls12)) as conn:
        try:
            greeting = conn.recv()
        except ConnectionClosed:
            return ["closed", conn.raw]
        seen: Visit = [without_version(greeting)]
        for command in commands:
            conn.send(command)
            seen.append(conn.reply())
        seen.append(conn.raw[1:])
        return seen


def run_both(
    procs: Processes, args_for: Callable[[int], list[str]], scenario: Callable[[int], object]
) -> dict[str, tuple[object, str]]:
    """Run ``scenario(port)`` against each program started with ``args_for(port)``;
    returns ``{kind: (scenario result, stderr with the program name masked)}``."""
    results: dict[str, tuple[object, str]] = {}
    for kind in KINDS:
        prog = program(kind)
        port = free_tcp_port()
        proc = procs.start(prog, args_for(port))
        try:
            outcome = scenario(port)
        finally:
            proc.stop()
        results[kind] = (outcome, prog.masked(proc.stderr()))
    return results


def assert_same(results: dict[str, tuple[object, str]]) -> object:
    """qomhost saw and printed what QEMU did; returns what QEMU's clients saw."""
    assert results["qomhost"] == results["qemu"]
    return results["qemu"][0]


# --------------------------------------------------------------------------- server side


def test_allowed_client_is_served_and_every_other_is_dropped(procs: Processes, pki: Pki) -> None:
    """With ``authz-simple`` allowing fred: fred gets the greeting and runs commands;
    bob (another DN), a client without a certificate, one with an expired
    certificate and one signed by another CA are each dropped with no byte of
    monitor output; the listener takes the next client each time."""
    commands = [
        {"execute": "qmp_capabilities"},
        {"execute": "query-name"},
        {"execute": "qom-get", "arguments": {"path": "/objects/tls0", "property": "loaded"}},
        {"execute": "qom-get", "arguments": {"path": "/chardevs/m", "property": "connected"}},
        {"execute": "qom-get", "arguments": {"path": "/objects/auth0", "property": "identity"}},
    ]

    def scenario(port: int) -> list[Visit]:
        return [
            visit(pki, port, "bob"),
            visit(pki, port, "fred", commands),
            visit(pki, port, None),
            visit(pki, port, "expired"),
            visit(pki, port, "rogue"),
            visit(pki, port, "fred"),
        ]

    seen = assert_same(
        run_both(procs, lambda port: server_args(pki, port, authz_simple(pki.dn["fred"])), scenario)
    )
    assert isinstance(seen, list)
    bob, fred, nocert, expired, rogue, fred_again = seen
    for dropped in (bob, nocert, expired, rogue):
        assert dropped == ["closed", []]
    assert fred[1:-1] == [
        {"return": {}},
        {"return": {}},
        {"return": True},
        {"return": True},
        {"return": pki.dn["fred"]},
    ]
    assert fred_again[1] == {"return": {}}


@pytest.mark.parametrize("client", ["tricky", "multi"])
def test_distinguished_names_are_spelt_as_qemu_spells_them(
    procs: Processes, pki: Pki, client: str
) -> None:
    """A DN with RFC 4514's special characters (``, + " < > ; #``) and an e-mail
    address, and one with a multi-valued RDN: the identity in ``tls-authz`` must be
    GnuTLS's spelling, and both programs let the client in with exactly that."""
    from qomhost.crypto.x509dn import subject_dn

    pem = (pki.client(client) / "client-cert.pem").read_text()
    assert subject_dn(ssl.PEM_cert_to_DER_cert(pem)) == pki.dn[client]

    def scenario(port: int) -> list[Visit]:
        return [visit(pki, port, client), visit(pki, port, "fred")]

    seen = assert_same(
        run_both(procs, lambda port: server_args(pki, port, authz_simple(pki.dn[client])), scenario)
    )
    assert isinstance(seen, list)
    assert seen[0][1] == {"return": {}}
    assert seen[1] == ["closed", []]


def test_authz_list_glob_rules_decide(procs: Processes, pki: Pki) -> None:
    """``authz-list`` with glob rules, first match wins: bob is denied by name,
    every other Example Org member is allowed, anyone else falls to the default
    deny."""
    authz = {
        "qom-type": "authz-list",
        "id": "auth0",
        "policy": "deny",
        "rules": [
            {"match": "*,CN=bob", "policy": "deny", "format": "glob"},
            {"match": "*O=Example Org,*", "policy": "allow", "format": "glob"},
        ],
    }

    def scenario(port: int) -> list[object]:
        return [visit(pki, port, name)[0] for name in ("fred", "bob", "multi", "tricky")]

    seen = assert_same(run_both(procs, lambda port: server_args(pki, port, authz), scenario))
    assert seen == [
        {"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 0}, "package": ""},
                 "capabilities": ["oob"]}},
        "closed",
        {"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 0}, "package": ""},
                 "capabilities": ["oob"]}},
        "closed",
    ]  # fmt: skip


def test_identity_set_at_run_time_applies_to_the_next_client(procs: Processes, pki: Pki) -> None:
    """``qom-set`` of the authz object's identity over the TLS monitor: the session
    that did it goes on, the next fred is refused and bob is let in."""
    change = {
        "execute": "qom-set",
        "arguments": {"path": "/objects/auth0", "property": "identity", "value": pki.dn["bob"]},
    }

    def scenario(port: int) -> list[Visit]:
        return [
            visit(pki, port, "fred", [{"execute": "qmp_capabilities"}, change]),
            visit(pki, port, "fred"),
            visit(pki, port, "bob"),
        ]

    seen = assert_same(
        run_both(procs, lambda port: server_args(pki, port, authz_simple(pki.dn["fred"])), scenario)
    )
    assert isinstance(seen, list)
    assert seen[0][2] == {"return": {}}
    assert seen[1] == ["closed", []]
    assert seen[2][1] == {"return": {}}


def test_verify_peer_off_checks_no_certificate_and_no_authz(procs: Processes, pki: Pki) -> None:
    """``verify-peer=off``: QEMU neither asks for a valid certificate nor consults
    ``tls-authz``, so a client without a certificate and a denied DN both get in."""

    def scenario(port: int) -> list[object]:
        return [visit(pki, port, None)[1], visit(pki, port, "bob")[1]]

    seen = assert_same(
        run_both(
            procs,
            lambda port: server_args(pki, port, authz_simple("nobody"), verify_peer="off"),
            scenario,
        )
    )
    assert seen == [{"return": {}}, {"return": {}}]


def test_tls12_clients_are_judged_the_same(procs: Processes, pki: Pki) -> None:
    """A client limited to TLS 1.2: the allowed DN is served, a denied one dropped."""

    def scenario(port: int) -> list[Visit]:
        return [visit(pki, port, "fred", tls12=True), visit(pki, port, "bob", tls12=True)]

    seen = assert_same(
        run_both(procs, lambda port: server_args(pki, port, authz_simple(pki.dn["fred"])), scenario)
    )
    assert isinstance(seen, list)
    assert seen[0][1] == {"return": {}}
    assert seen[1] == ["closed", []]


def test_missing_authz_object_denies_everyone(procs: Processes, pki: Pki) -> None:
    """``tls-authz`` naming no object is accepted at start-up; each client is then
    refused (QEMU: ``Cannot find QAuthZ object ID nosuch``)."""

    def args(port: int) -> list[str]:
        return [
            "-object",
            f"tls-creds-x509,id=tls0,dir={pki.server},endpoint=server",
            "-chardev",
            f"socket,id=m,host=127.0.0.1,port={port},server=on,wait=off,"
            "tls-creds=tls0,tls-authz=nosuch",
            "-mon",
            "chardev=m,mode=control",
        ]

    seen = assert_same(run_both(procs, args, lambda port: visit(pki, port, "fred")))
    assert seen == ["closed", []]


def test_hmp_monitor_over_tls(procs: Processes, pki: Pki) -> None:
    """An HMP monitor behind TLS: the banner and prompt, then a command's echo and output."""

    def scenario(port: int) -> bytes:
        with tls_connect(pki, port, "fred") as sock:
            out = read_until(sock, lambda data: data.endswith(b"(qemu) "))
            sock.sendall(b"info name\r")
            sock.sendall(b" ")
            # The second prompt, then the echo of the one-space record.
            return out + read_until(sock, lambda data: data.count(b"(qemu) ") == 1, settle=0.3)

    results = run_both(
        procs,
        lambda port: server_args(pki, port, authz_simple(pki.dn["fred"]), mode="readline"),
        scenario,
    )
    banner = re.compile(rb"QEMU \d+\.\d+\.\d+ monitor")
    masked = {kind: (banner.sub(b"QEMU monitor", out), err) for kind, (out, err) in results.items()}  # type: ignore[arg-type]
    assert masked["qomhost"] == masked["qemu"]
    assert b"type 'help' for more information" in masked["qemu"][0]


def read_until(sock: ssl.SSLSocket, done: Callable[[bytes], bool], settle: float = 0.0) -> bytes:
    """Read until ``done(data)`` (or the peer closes), then for ``settle`` seconds more."""
    data = b""
    while not done(data):
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    if settle:
        sock.settimeout(settle)
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except TimeoutError:
            pass
        sock.settimeout(TIMEOUT)
    return data


def test_legacy_qmp_option_takes_tls_creds(procs: Processes, pki: Pki) -> None:
    """``-qmp tcp:HOST:PORT,server=on,wait=off,tls-creds=tls0`` works as the
    ``-chardev`` form does (here without ``tls-authz``: any verified client)."""

    def args(port: int) -> list[str]:
        return [
            "-object",
            f"tls-creds-x509,id=tls0,dir={pki.server},endpoint=server",
            "-qmp",
            f"tcp:127.0.0.1:{port},server=on,wait=off,tls-creds=tls0",
        ]

    def scenario(port: int) -> list[Visit]:
        return [visit(pki, port, "bob"), visit(pki, port, None)]

    seen = assert_same(run_both(procs, args, scenario))
    assert isinstance(seen, list)
    assert seen[0][1] == {"return": {}}
    assert seen[1] == ["closed", []]


def test_refusal_is_logged_not_printed(procs: Processes, pki: Pki, workdir: Path) -> None:
    """QEMU prints nothing when it drops a refused client (the stderr comparisons
    above); qomhost logs QEMU's reason on ``qomhost.chardev`` at INFO level."""
    port = free_tcp_port()
    launcher = (
        "import logging\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')\n"
        "from qomhost.cli.qomhost import main\n"
        "main()\n"
    )
    args = [
        "-machine", "none", "-nodefaults", "-display", "none",
        *server_args(pki, port, authz_simple(pki.dn["fred"])),
    ]  # fmt: skip
    stderr = workdir / "log"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", launcher, *args], stderr=err, stdin=subprocess.DEVNULL
        )
    try:
        assert visit(pki, port, "bob") == ["closed", []]
        assert visit(pki, port, None) == ["closed", []]
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
    log = stderr.read_text()
    assert f"qomhost.chardev: chardev m: TLS x509 authz check for {pki.dn['bob']} is denied" in log
    assert "qomhost.chardev: chardev m: No certificate peers" in log


# --------------------------------------------------------------------------- client side


def serve_once(listener: socket.socket, ctx: ssl.SSLContext) -> list[object]:
    """Accept one connection and run TLS as its server: the client certificate's
    subject and everything received before the client stops talking, or why the
    handshake failed."""
    listener.settimeout(TIMEOUT)
    conn, _addr = listener.accept()
    conn.settimeout(TIMEOUT)
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
    except (ssl.SSLError, OSError) as exc:
        conn.close()
        return ["handshake failed", type(exc).__name__]
    with tls:
        subject = tls.getpeercert()["subject"] if tls.getpeercert() else None
        tls.settimeout(2)
        data = b""
        try:
            while not data.endswith(b"\r\n"):
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (TimeoutError, ssl.SSLError, OSError):
            pass
        return [subject, re.sub(rb'"package": "[^"]*"|\d+', b"#", data)]


@pytest.mark.parametrize("server_dir", ["server", "elsewhere"])
def test_client_chardev_runs_tls_as_client(procs: Processes, pki: Pki, server_dir: str) -> None:
    """A client chardev with ``endpoint=client`` credentials connects to a TLS server
    (the test), presents its certificate, checks the server's and, once it is
    verified, greets it. A server whose certificate names another host than the one
    connected to (``Certificate does not match the hostname 127.0.0.1``) is dropped
    after the handshake, before any output."""
    directory = pki.server if server_dir == "server" else pki.elsewhere
    results: dict[str, object] = {}
    for kind in KINDS:
        listener, port = listen_tcp()
        with listener:
            outcome: list[object] = []
            server = threading.Thread(
                target=lambda out, sock: out.extend(serve_once(sock, server_context(directory))),
                args=(outcome, listener),
            )
            server.start()
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
            server.join(TIMEOUT + 3)
            proc.stop()
            results[kind] = (outcome, program(kind).masked(proc.stderr()))
    assert results["qomhost"] == results["qemu"]
    outcome = results["qemu"][0]  # type: ignore[index]
    if server_dir == "server":
        assert outcome[0] is not None and (("commonName", "fred"),) in outcome[0]
        assert outcome[1].startswith(b'{"QMP":')
    else:
        assert outcome[1] == b""
