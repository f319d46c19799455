"""Start-up imports only what the command line needs.

A Python process starts in about half the time QEMU takes; the modules it
imports decide the rest (``benchmarks/startup.py`` measures it). These
tests pin the import set, not any timing: each runs qomhost in a fresh
interpreter through the QMP greeting, ``qmp_capabilities`` and ``quit``,
then lists the slow standard modules that got imported.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

#: slow to import, and needed by no plain start-up
HEAVY = (
    "argparse",
    "asyncio",
    "concurrent.futures",
    "cryptography",
    "dataclasses",
    "decimal",
    "enum",
    "inspect",
    "json",
    "logging",
    "re",
    "socket",
    "ssl",
    "threading",
    "typing",
)

_PROBE = """
import os, sys
from qomhost.cli import qomhost as cli
status = cli.run(sys.argv[1:], "qomhost")
heavy = [m for m in {heavy!r} if m in sys.modules]
os.write(2, ("HEAVY " + " ".join(heavy) + "\\n").encode())
os._exit(status)
"""

_QMP = b'{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'
_BASE = ["-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio"]


def heavy_imports(*args: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """The modules of ``heavy`` that a qomhost run with ``args`` imported."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=heavy), *args],
        input=_QMP,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout.count(b'"return"') == 2, proc.stdout
    line = proc.stderr.decode().strip().splitlines()[-1]
    assert line.startswith("HEAVY"), proc.stderr
    return line.split()[1:]


def test_plain_secret_imports_nothing_heavy() -> None:
    assert heavy_imports(*_BASE, "-object", "secret,id=sec0,data=letmein,format=raw") == []


def test_no_objects_imports_nothing_heavy() -> None:
    assert heavy_imports(*_BASE) == []


@pytest.mark.parametrize("fmt", ["raw", "base64"])
def test_unencrypted_secret_formats_need_no_cryptography(fmt: str) -> None:
    data = "bGV0bWVpbg==" if fmt == "base64" else "letmein"
    assert heavy_imports(*_BASE, "-object", f"secret,id=s,data={data},format={fmt}") == []


def test_encrypted_secret_imports_cryptography() -> None:
    # AES-256-CBC of b"letmein" (PKCS#7) with key bytes 0..31 and IV bytes 100..115.
    key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    iv = "ZGVmZ2hpamtsbW5vcHFycw=="
    found = heavy_imports(
        *_BASE,
        "-object",
        f"secret,id=key0,data={key},format=base64",
        "-object",
        f"secret,id=sec1,data=f9c+ku0dXvAnAY2gMCb0Lw==,keyid=key0,iv={iv},format=base64",
        heavy=("cryptography", "asyncio", "argparse", "ssl"),
    )
    assert found == ["cryptography"]
