"""``qomctl secret``: what it prints is accepted by QEMU 7.2 itself.

``encrypt`` must produce ``-object`` arguments that real QEMU loads (the
point of the tool), ``decrypt`` must agree with ``openssl enc -d``, and
failures must carry QEMU's messages.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
QEMU = shutil.which("qemu-system-x86_64")
OPENSSL = shutil.which("openssl")


def need(tool: str | None, name: str) -> str:
    if tool is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed")
    return tool


def qomctl(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(BIN / "qomctl"), *args], cwd=cwd, input=stdin, capture_output=True, timeout=30
    )


def qemu_loads(args: list[str], cwd: Path, secret_id: str) -> bool:
    """Start QEMU with ``args`` and ask whether the secret loaded."""
    qemu = need(QEMU, "qemu-system-x86_64")
    script = (
        '{"execute":"qmp_capabilities"}\n'
        f'{{"execute":"qom-get","arguments":{{"path":"/objects/{secret_id}","property":"loaded"}}}}\n'
        '{"execute":"quit"}\n'
    )
    out = subprocess.run(
        [qemu, "-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio", *args],
        cwd=cwd,
        input=script.encode(),
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr.decode()
    return b'{"return": true}' in out.stdout


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    result = qomctl("secret", "new-key", cwd=tmp_path)
    assert result.returncode == 0
    path = tmp_path / "key.b64"
    path.write_bytes(result.stdout)
    assert len(base64.b64decode(result.stdout)) == 32
    return path


def test_encrypt_output_loads_in_qemu(tmp_path: Path, keyfile: Path) -> None:
    result = qomctl(
        "secret", "encrypt", "--key-file", "key.b64", "--id", "sec0", "--data", "letmein",
        "--with-key", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "-object secret,id=secmaster0,format=base64,file=key.b64"
    assert lines[1].startswith("-object secret,id=sec0,keyid=secmaster0,format=base64,data=")
    args = [word for line in lines for word in shlex.split(line)]
    assert qemu_loads(args, tmp_path, "sec0")


def test_encrypt_json_form_loads_in_qemu(tmp_path: Path, keyfile: Path) -> None:
    result = qomctl(
        "secret", "encrypt", "--key-file", "key.b64", "--json", "--with-key", cwd=tmp_path,
        stdin=b"a password, with a comma",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    args: list[str] = []
    for line in result.stdout.decode().splitlines():
        flag, _, value = line.partition(" ")
        args += [flag, value]
    assert qemu_loads(args, tmp_path, "sec0")


def test_decrypt_round_trip_and_openssl(tmp_path: Path, keyfile: Path) -> None:
    openssl = need(OPENSSL, "openssl")
    plaintext = bytes(range(256)) * 3
    (tmp_path / "plain.bin").write_bytes(plaintext)
    enc = qomctl("secret", "encrypt", "--key-file", "key.b64", "--file", "plain.bin", cwd=tmp_path)
    assert enc.returncode == 0, enc.stderr
    fields = dict(
        item.split("=", 1) for item in enc.stdout.decode().split()[1].split(",") if "=" in item
    )
    dec = qomctl(
        "secret", "decrypt", "--key-file", "key.b64", "--iv", fields["iv"],
        "--data", fields["data"], cwd=tmp_path,
    )  # fmt: skip
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout == plaintext
    key_hex = base64.b64decode(keyfile.read_bytes()).hex()
    iv_hex = base64.b64decode(fields["iv"]).hex()
    ref = subprocess.run(
        [openssl, "enc", "-d", "-aes-256-cbc", "-a", "-A", "-K", key_hex, "-iv", iv_hex],
        input=fields["data"].encode(),
        capture_output=True,
        timeout=30,
    )
    assert ref.returncode == 0, ref.stderr
    assert ref.stdout == plaintext


def test_decrypt_errors_are_qemus(tmp_path: Path, keyfile: Path) -> None:
    dec = qomctl(
        "secret", "decrypt", "--key-file", "key.b64", "--iv", "AAAA", "--data", "AAAA",
        cwd=tmp_path,
    )  # fmt: skip
    assert dec.returncode == 1
    assert dec.stderr == b"qomctl: IV should be 16 bytes in length not 3\n"
    (tmp_path / "short.b64").write_text(base64.b64encode(b"x" * 16).decode())
    enc = qomctl("secret", "encrypt", "--key-file", "short.b64", "--data", "x", cwd=tmp_path)
    assert enc.returncode == 1
    assert enc.stderr == b"qomctl: Key should be 32 bytes in length\n"
    missing = qomctl("secret", "encrypt", "--key-file", "nope", "--data", "x", cwd=tmp_path)
    assert missing.returncode == 1
    assert (
        missing.stderr
        == (
            "qomctl: Unable to read nope: Failed to open file “nope”: No such file or directory\n"
        ).encode()
    )
