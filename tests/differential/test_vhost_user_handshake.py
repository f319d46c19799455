"""What ``-object cryptodev-vhost-user`` sends to its backend: QEMU 7.2 against qomhost.

A :class:`~qomhost.testing.vhost_user.RecordingBackend` listens on a unix
socket, answers as a scenario says (features, protocol features, queue count,
reply flags, hanging up) and records every message. Each scenario runs the
same command line (``-chardev socket,path=... -object
cryptodev-vhost-user,...``) under QEMU 7.2 and under qomhost, each with a
backend of its own, and the two recordings must be equal: request numbers,
header flags, payload sizes, descriptor counts, and the payloads whose bytes
mean something (feature sets and ring indexes; not the REPLY_ACK'd fd
numbers). Exit status, standard error and the number of lines on standard
output must be equal too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qomhost.testing.vhost_user import Received, RecordingBackend
from qomhost.vhost_user.protocol import ProtocolFeature as PF
from qomhost.vhost_user.protocol import Request

QEMU = os.environ.get("QEMU_BIN") or shutil.which("qemu-system-x86_64")
QOMHOST = os.environ.get("QOMHOST_BIN") or str(Path(sys.executable).parent / "qomhost")
BASE = ("-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio")
#: payloads compared byte for byte: the rest carry fds or addresses
MEANINGFUL = {Request.SET_PROTOCOL_FEATURES, Request.SET_VRING_CALL, Request.SET_VRING_ERR}

pytestmark = pytest.mark.skipif(QEMU is None, reason="QEMU 7.2 (qemu-system-x86_64) not found")


def bits(*numbers: int) -> int:
    return sum(1 << n for n in numbers)


@dataclass(frozen=True)
class Scenario:
    name: str
    queues: int = 1
    backend: dict[str, object] = field(default_factory=dict)
    chardev: str = ""
    #: hang up after the handshake once, and expect this many connections
    connections: int = 1


SCENARIOS = [
    Scenario("crypto-session-only", backend={"protocol_features": bits(PF.CRYPTO_SESSION)}),
    Scenario("no-protocol-features", backend={"features": 0}),
    Scenario(
        "all-features-two-queues",
        queues=2,
        backend={
            "protocol_features": 0x28AA9,  # MQ, REPLY_ACK, SLAVE_REQ, CRYPTO, CONFIG, 11, 15, 17
            "queue_num": 4,
        },
    ),
    Scenario(
        "slave-req-without-reply-ack",
        queues=2,
        backend={"protocol_features": bits(PF.MQ, PF.SLAVE_REQ, PF.CRYPTO_SESSION), "queue_num": 2},
    ),
    Scenario(
        "three-queues-mem-slots",
        queues=3,
        backend={
            "protocol_features": bits(PF.MQ, PF.CRYPTO_SESSION, PF.CONFIGURE_MEM_SLOTS),
            "queue_num": 8,
        },
    ),
    Scenario(
        "more-queues-than-supported",
        queues=3,
        backend={"protocol_features": bits(PF.MQ, PF.CRYPTO_SESSION), "queue_num": 2},
    ),
    Scenario(
        "two-queues-without-mq",
        queues=2,
        backend={"protocol_features": bits(PF.CRYPTO_SESSION)},
    ),
    Scenario(
        "config-warning",
        backend={"protocol_features": bits(PF.CONFIG, PF.CRYPTO_SESSION, PF.LOG_SHMFD)},
    ),
    Scenario("reply-flags-wrong", backend={"reply_flags": 0x4}),
    Scenario("reply-flags-need-reply", backend={"reply_flags": 0xD}),
    Scenario(
        "reconnect",
        backend={"protocol_features": bits(PF.CRYPTO_SESSION, PF.MQ), "queue_num": 2},
        queues=2,
        chardev=",reconnect=1",
        connections=2,
    ),
]


@dataclass
class Run:
    status: int | None
    stderr: str
    stdout_lines: int
    received: list[Received]


def run(program: str, scenario: Scenario) -> Run:
    with tempfile.TemporaryDirectory(prefix="qomvu-") as tmp:
        path = f"{tmp}/vhost-user.sock"
        with RecordingBackend(path, **scenario.backend) as backend:  # type: ignore[arg-type]
            args = [
                program,
                *BASE,
                "-chardev",
                f"socket,id=c0,path={path}{scenario.chardev}",
                "-object",
                f"cryptodev-vhost-user,id=cv0,chardev=c0,queues={scenario.queues}",
            ]
            proc = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            assert proc.stdin is not None
            proc.stdin.write(b'{"execute":"qmp_capabilities"}\n')
            proc.stdin.flush()
            # The first message may take a while on a busy machine; a quiet
            # spell only counts once the program has begun to talk.
            backend.wait_for(lambda got: bool(got), timeout=10)
            backend.settle()
            for connection in range(1, scenario.connections):
                backend.hang_up()
                # The next connection comes about a second later; its
                # handshake ends with SET_VRING_ERR for the last queue (a
                # quiet spell alone is no proof on a busy machine).
                backend.wait_for(
                    lambda got, c=connection: (
                        sum(1 for m in got if m.connection == c and m.name == "SET_VRING_ERR")
                        >= scenario.queues
                    ),
                    timeout=10,
                )
                backend.settle()
            try:
                out, err = proc.communicate(b'{"execute":"quit"}\n', timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            time.sleep(0.05)
            received = list(backend.received)
    name = os.path.basename(program)
    return Run(
        proc.returncode,
        err.decode().replace(name, "PROG"),
        len(out.splitlines()),
        received,
    )


def view(messages: list[Received]) -> list[tuple[object, ...]]:
    return [
        (m.connection, m.name, hex(m.flags), len(m.payload), m.nfds)
        + ((m.payload.hex(),) if m.request in MEANINGFUL else ())
        for m in messages
    ]


@pytest.mark.differential
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_handshake_same_as_qemu(scenario: Scenario) -> None:
    assert QEMU is not None
    qemu = run(QEMU, scenario)
    ours = run(QOMHOST, scenario)
    assert view(ours.received) == view(qemu.received)
    assert ours.received, "the backend should have been contacted"
    assert (ours.status, ours.stderr) == (qemu.status, qemu.stderr)
    assert ours.stdout_lines == qemu.stdout_lines
