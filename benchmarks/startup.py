"""Start-up benchmark: from exec to the reply to ``quit``.

Each program gets the same command line::

    PROG -machine none -nodefaults -display none -qmp stdio -object secret,...

and on stdin ``{"execute":"qmp_capabilities"}`` and ``{"execute":"quit"}``.
The clock stops when the second ``return`` reply has been read (the exit
that follows is timed too). Two command lines are measured: a plain
secret, and the plain secret plus an AES-256-CBC encrypted secret with
its key secret (which makes qomhost import ``cryptography``).

All variants run interleaved, round after round, so that drift on a shared
host hits each of them alike; the order rotates every round. The reference
lines are the venv Python doing nothing and importing ``asyncio``.

Usage: ``.venv/bin/python benchmarks/startup.py [--rounds 30]``
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from _common import (
    QOMHOST,
    ROOT,
    VENV_PYTHON,
    WORK,
    log,
    median,
    p90,
    python_env,
    qemu_binary,
    read_steal,
    steal_percent,
    table,
)

QMP_INPUT = b'{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'
BASE = ["-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio"]
PLAIN = ["-object", "secret,id=sec0,data=letmein,format=raw"]

# A fixed key and IV, so that every run decrypts the same thing.
_KEY = bytes(range(32))
_IV = bytes(range(100, 116))


def _encrypted_objects() -> list[str]:
    """``-object`` options for a key secret and a secret encrypted with it."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    plaintext = b"letmein-but-encrypted"
    pad = 16 - len(plaintext) % 16
    encryptor = Cipher(algorithms.AES(_KEY), modes.CBC(_IV)).encryptor()
    ciphertext = encryptor.update(plaintext + bytes([pad]) * pad) + encryptor.finalize()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return [
        "-object",
        f"secret,id=key0,data={b64(_KEY)},format=base64",
        "-object",
        f"secret,id=sec1,data={b64(ciphertext)},keyid=key0,iv={b64(_IV)},format=base64",
    ]


@dataclass(frozen=True)
class Variant:
    """One program invocation to time."""

    name: str
    argv: list[str]
    #: whether it speaks QMP (else it is timed to its exit)
    qmp: bool
    #: the program this one is compared with, if any
    peer: str | None = None
    #: the environment (None: inherit ours)
    env: dict[str, str] | None = None


@dataclass
class Sample:
    """Milliseconds to the reply to ``quit`` (or to exit) and to exit."""

    reply: list[float] = field(default_factory=list)
    exit: list[float] = field(default_factory=list)


UNCACHED_SRC = WORK / "src-uncached"


def _copy_sources() -> None:
    """A copy of the package that is never byte-compiled (for the uncached line)."""
    shutil.rmtree(UNCACHED_SRC, ignore_errors=True)
    shutil.copytree(
        ROOT / "src" / "qomhost",
        UNCACHED_SRC / "qomhost",
        ignore=shutil.ignore_patterns("__pycache__", ".mypy_cache"),
    )


def variants(qemu: str) -> list[Variant]:
    """Every program and command line the benchmark times."""
    env = python_env()
    encrypted = PLAIN + _encrypted_objects()
    out: list[Variant] = []
    for label, objects in (("plain secret", PLAIN), ("+ AES secret", encrypted)):
        ref = f"qemu-system-x86_64, {label}"
        out.append(Variant(ref, [qemu, *BASE, *objects], True))
        out.append(
            Variant(
                f"qomhost (console script), {label}",
                [QOMHOST, *BASE, *objects],
                True,
                ref,
                env,
            )
        )
        out.append(
            Variant(
                f"python -m qomhost, {label}",
                [VENV_PYTHON, "-m", "qomhost", *BASE, *objects],
                True,
                ref,
                env,
            )
        )
    first = out[0].name
    uncached = env | {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(UNCACHED_SRC)}
    out.append(
        Variant(
            "python -m qomhost, plain secret, own modules not byte-compiled",
            [VENV_PYTHON, "-m", "qomhost", *BASE, *PLAIN],
            True,
            first,
            uncached,
        )
    )
    out.append(Variant("venv python -c pass", [VENV_PYTHON, "-c", "pass"], False, first, env))
    out.append(
        Variant(
            "venv python -c 'import asyncio'",
            [VENV_PYTHON, "-c", "import asyncio"],
            False,
            first,
            env,
        )
    )
    return out


def run_once(variant: Variant) -> tuple[float, float]:
    """Start the program, feed it the QMP script; (ms to the quit reply, ms to exit)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        variant.argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=variant.env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    if variant.qmp:
        proc.stdin.write(QMP_INPUT)
    proc.stdin.close()
    reply = 0.0
    output = b""
    if variant.qmp:
        fd = proc.stdout.fileno()
        while output.count(b'"return"') < 2:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            output += chunk
        reply = time.perf_counter() - start
    output += proc.stdout.read()
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    proc.wait()
    done = time.perf_counter() - start
    if proc.returncode != 0 or (variant.qmp and output.count(b'"return"') != 2):
        raise SystemExit(
            f"{variant.name}: status {proc.returncode}, stdout {output[:300]!r}, "
            f"stderr {stderr[:300]!r}"
        )
    return (reply if variant.qmp else done) * 1e3, done * 1e3


@dataclass
class StartupResult:
    """Per-variant samples, and the conditions they were taken in."""

    rounds: int
    variants: list[Variant]
    samples: dict[str, Sample]
    steal: float

    def markdown(self) -> str:
        """The result table: medians, p90 and the ratio to QEMU with the same objects."""
        rows = []
        for v in self.variants:
            s = self.samples[v.name]
            ratio = 1.0 if v.peer is None else median(s.reply) / median(self.samples[v.peer].reply)
            rows.append(
                [
                    v.name,
                    f"{median(s.reply):.1f}",
                    f"{p90(s.reply):.1f}",
                    f"{median(s.exit):.1f}",
                    f"{ratio:.2f}",
                ]
            )
        header = ["variant", "median ms", "p90 ms", "median ms to exit", "ratio to QEMU"]
        note = (
            f"{self.rounds} interleaved rounds; steal time during the run {self.steal:.1f} %. "
            "QMP lines are timed to the reply to `quit` and compared with QEMU given the same "
            "objects; the last lines (no QMP) are timed to exit and compared with QEMU's "
            "plain-secret line."
        )
        return note + "\n\n" + table(header, rows)


def run(rounds: int = 30, warmup: int = 2) -> StartupResult:
    """Time every variant ``rounds`` times, interleaved."""
    qemu = qemu_binary()
    _copy_sources()
    todo = variants(qemu)
    samples = {v.name: Sample() for v in todo}
    for _ in range(warmup):
        for v in todo:
            run_once(v)
    before = read_steal()
    for r in range(rounds):
        shift = r % len(todo)
        for v in todo[shift:] + todo[:shift]:
            reply, done = run_once(v)
            samples[v.name].reply.append(reply)
            samples[v.name].exit.append(done)
        if (r + 1) % 10 == 0:
            log(f"startup: {r + 1}/{rounds} rounds")
    return StartupResult(rounds, todo, samples, steal_percent(before, read_steal()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (30)")
    args = parser.parse_args()
    print(run(args.rounds).markdown())


if __name__ == "__main__":
    main()
