"""``qomctl cryptodev``: standard input through ``qomhost-vhost-user-crypto`` gives
the bytes ``openssl enc -nopad`` gives, on every queue, for short and long inputs
(several chained requests), and refuses what openssl would pad.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
OPENSSL = shutil.which("openssl")
QUEUES = 2
KEY = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"
IV = "000102030405060708090a0b0c0d0e0f"


def need(tool: str | None, name: str) -> str:
    if tool is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed")
    return tool


@pytest.fixture(scope="module")
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = str(tmp_path_factory.mktemp("vu") / "crypto.sock")
    proc = subprocess.Popen(
        [str(BIN / "qomhost-vhost-user-crypto"), "--socket-path", path, "--queues", str(QUEUES)]
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        assert proc.poll() is None and time.monotonic() < deadline, "the backend did not start"
        time.sleep(0.02)
    yield path
    proc.kill()
    proc.wait()


def qomctl(op: str, path: str, data: bytes, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(BIN / "qomctl"), "cryptodev", op, "--socket", path, "--key", KEY, *extra],
        input=data,
        capture_output=True,
        timeout=60,
    )


def openssl(cipher: str, data: bytes, decrypt: bool = False) -> bytes:
    tool = need(OPENSSL, "openssl")
    args = [tool, "enc", f"-{cipher}", "-nopad", "-K", KEY, "-iv", IV]
    if decrypt:
        args.append("-d")
    return subprocess.run(args, input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize("size", [16, 4096, 3 * (1 << 20) + 48])
@pytest.mark.parametrize("queue", [None, *range(QUEUES)])
def test_cbc_like_openssl(socket_path: str, size: int, queue: int | None) -> None:
    data = os.urandom(size)
    extra = ["--iv", IV] + ([] if queue is None else ["--queue", str(queue)])
    enc = qomctl("encrypt", socket_path, data, *extra)
    assert enc.returncode == 0, enc.stderr
    assert enc.stdout == openssl("aes-256-cbc", data)
    dec = qomctl("decrypt", socket_path, enc.stdout, *extra)
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout == data


def test_ctr_long_input(socket_path: str) -> None:
    data = os.urandom(2 * (1 << 20) + 5)
    out = qomctl("encrypt", socket_path, data, "--cipher", "aes-256-ctr", "--iv", IV)
    assert out.returncode == 0, out.stderr
    assert out.stdout == openssl("aes-256-ctr", data)


def test_not_whole_blocks(socket_path: str) -> None:
    out = qomctl("encrypt", socket_path, b"x" * 17, "--iv", IV)
    assert out.returncode == 1 and out.stdout == b""
    assert b"input is 17 bytes, not a multiple of the 16-byte block size" in out.stderr


def test_too_many_queues(socket_path: str) -> None:
    out = qomctl("encrypt", socket_path, bytes(16), "--iv", IV, "--queue", str(QUEUES))
    assert out.returncode == 1
    assert out.stderr == f"qomctl: you are asking more queues than supported: {QUEUES}\n".encode()


def test_no_backend(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.sock")
    out = qomctl("encrypt", path, bytes(16), "--iv", IV)
    assert out.returncode == 1
    assert out.stderr == (
        f"qomctl: Failed to connect to '{path}': No such file or directory\n".encode()
    )
