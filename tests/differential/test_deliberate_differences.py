"""Where qomhost differs from QEMU 7.2 on purpose, checked against QEMU itself.

Each test runs the same command line and QMP script on both programs and
asserts QEMU's (documented) misbehaviour and qomhost's sane result, so that
``docs/compatibility.md`` stays true for both sides.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

QEMU = shutil.which("qemu-system-x86_64")
QOMHOST = str(Path(sys.executable).parent / "qomhost")
BASE = ("-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio")


def replies(program: str, objects: list[str], script: list[dict[str, object]]) -> list[object]:
    """The ``return``/``error`` replies to ``script`` (events and greeting dropped)."""
    args = [program, *BASE]
    for obj in objects:
        args += ["-object", obj]
    lines = [{"execute": "qmp_capabilities"}, *script, {"execute": "quit"}]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    out = subprocess.run(args, input=text.encode(), capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    result = []
    for raw in out.stdout.splitlines():
        message = json.loads(raw)
        if "return" in message:
            result.append(message["return"])
        elif "error" in message:
            result.append(message["error"]["desc"])
    return result[1:-1]  # without qmp_capabilities and quit


@pytest.fixture
def qemu() -> str:
    if QEMU is None:
        if os.environ.get("CI") == "true":
            pytest.fail("qemu-system-x86_64 is not installed")
        pytest.skip("qemu-system-x86_64 is not installed")
    return QEMU


def qset(path: str, prop: str, value: object) -> dict[str, object]:
    return {"execute": "qom-set", "arguments": {"path": path, "property": prop, "value": value}}


def qget(path: str, prop: str) -> dict[str, object]:
    return {"execute": "qom-get", "arguments": {"path": path, "property": prop}}


BAD_PAIR = "bad thread-pool-min/thread-pool-max values"


@pytest.mark.parametrize(("obj", "path"), [("iothread,id=io1", "/objects/io1"),
                                           ("main-loop,id=ml", "/objects/ml")])  # fmt: skip
def test_refused_thread_pool_values_are_not_kept(qemu: str, obj: str, path: str) -> None:
    script = [
        qset(path, "thread-pool-min", 100),
        qget(path, "thread-pool-min"),
        qset(path, "aio-max-batch", 5),
        qget(path, "aio-max-batch"),
        qset(path, "thread-pool-min", 0),
        qset(path, "thread-pool-max", 0),
        qget(path, "thread-pool-max"),
    ]
    # QEMU keeps the refused 100 and, while it is stored, refuses aio-max-batch
    # too (yet keeps that value as well); the same happens with max 0.
    assert replies(qemu, [obj], script) == [
        BAD_PAIR, 100, BAD_PAIR, 5, {}, BAD_PAIR, 0,
    ]  # fmt: skip
    # qomhost refuses with the same words and keeps what the loop uses.
    assert replies(QOMHOST, [obj], script) == [
        BAD_PAIR, 0, {}, 5, {}, BAD_PAIR, 64,
    ]  # fmt: skip


def test_refused_pair_over_hmp(qemu: str) -> None:
    script = [
        {"execute": "human-monitor-command", "arguments": {"command-line": line}}
        for line in (
            "qom-set /objects/io1 thread-pool-max 0x0",
            "qom-get /objects/io1 thread-pool-max",
        )
    ]
    assert replies(qemu, ["iothread,id=io1"], script) == [f"Error: {BAD_PAIR}\r\n", "0\r\n"]
    assert replies(QOMHOST, ["iothread,id=io1"], script) == [f"Error: {BAD_PAIR}\r\n", "64\r\n"]


def test_keyring_ciphertext_in_base64(qemu: str) -> None:
    """QEMU 7.2 cannot decrypt a keyring secret given as base64 ciphertext.

    Its keyring payload has no NUL after it, and the base64 decoder used on
    the way to decryption insists on one; qomhost decodes and decrypts.
    """
    from keyring_cases import CT_LETMEIN, IV_B64, KEY_B64, _key

    serial = _key("qomhost-b64-ciphertext", CT_LETMEIN.encode())
    key = f"secret,id=k,data={KEY_B64},format=base64"
    script = [
        {
            "execute": "object-add",
            "arguments": {
                "qom-type": "secret_keyring",
                "id": "s",
                "serial": serial,
                "format": "base64",
                "keyid": "k",
                "iv": IV_B64,
            },
        },
        qget("/objects/s", "loaded"),
    ]
    assert replies(qemu, [key], script) == [
        "Base64 data is not NUL terminated",
        "Device '/objects/s' not found",
    ]
    assert replies(QOMHOST, [key], script) == [{}, True]
