"""``secret_keyring`` with real kernel keys, and ``qomctl secret encrypt --to-keyring``.

The module joins a fresh anonymous session keyring first, so the keys it
adds are visible to this process and its children only, and revokes them
afterwards. The differential cases compare the same keys with QEMU 7.2.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qomhost.crypto import keyring
from qomhost.errors import QemuError
from qomhost.host import Host
from qomhost.objects.secret import SecretKeyring

KEY = bytes(range(32))
IV = bytes(range(0xA0, 0xB0))
CT_LETMEIN = base64.b64decode("agVmoiJU2NXwRs1MV6hdaQ==")
BIN = Path(sys.executable).parent
_RINGS = {"session": keyring.KEY_SPEC_SESSION_KEYRING, "user": keyring.KEY_SPEC_USER_KEYRING}


@pytest.fixture(scope="module", autouse=True)
def own_session_keyring() -> None:
    keyring.join_session_keyring()


@pytest.fixture
def make_key() -> Iterator[object]:
    made: list[int] = []

    def make(payload: bytes, description: str = "qomhost-test") -> int:
        serial = keyring.add_key(description, payload)
        made.append(serial)
        return serial

    yield make
    for serial in made:
        try:
            keyring.revoke_key(serial)
        except OSError:
            pass


def test_payload_read_from_the_kernel(make_key) -> None:  # type: ignore[no-untyped-def]
    host = Host()
    host.add_object("secret_keyring", "s", serial=make_key(b"hunter2"))
    assert host.secret_bytes("s") == b"hunter2"


def test_base64_payload(make_key) -> None:  # type: ignore[no-untyped-def]
    host = Host()
    host.add_object("secret_keyring", "s", serial=make_key(b"aGVsbG8="), format="base64")
    assert host.secret_bytes("s") == b"hello"


@pytest.mark.parametrize("fmt", ["raw", "base64"])
def test_decrypted_with_a_key_secret(make_key, fmt: str) -> None:  # type: ignore[no-untyped-def]
    payload = CT_LETMEIN if fmt == "raw" else base64.b64encode(CT_LETMEIN)
    host = Host()
    host.add_object("secret", "k", data=base64.b64encode(KEY).decode(), format="base64")
    host.add_object(
        "secret_keyring",
        "s",
        serial=make_key(payload),
        keyid="k",
        iv=base64.b64encode(IV).decode(),
        format=fmt,
    )
    assert host.secret_bytes("s") == b"letmein"


def test_errors_leave_nothing(make_key) -> None:  # type: ignore[no-untyped-def]
    host = Host()
    gone = make_key(b"x")
    keyring.revoke_key(gone)
    with pytest.raises(
        QemuError, match=f"Unable to read serial key {gone:08x}: Key has been revoked"
    ):
        host.add_object("secret_keyring", "s", serial=gone)
    with pytest.raises(QemuError, match="'serial' should not be equal to 0"):
        host.add_object("secret_keyring", "s", serial=0)
    assert host.lookup_object("s") is None


def test_the_read_buffer_is_wiped(make_key, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    buffers: list[bytearray] = []
    real_read = keyring.read_key

    def keep(serial: int) -> bytearray:
        buf = real_read(serial)
        buffers.append(buf)
        return buf

    monkeypatch.setattr(keyring, "read_key", keep)
    host = Host()
    host.add_object("secret_keyring", "s", serial=make_key(b"hunter2"))
    assert host.secret_bytes("s") == b"hunter2"
    assert buffers == [bytearray(7)]


def test_payload_never_shown(make_key) -> None:  # type: ignore[no-untyped-def]
    host = Host()
    host.add_object("secret_keyring", "s", serial=make_key(b"hunter2"))
    obj = host.lookup_object("s")
    assert isinstance(obj, SecretKeyring)
    for text in (repr(obj.rawdata), str(obj.rawdata), repr(obj)):
        assert "hunter2" not in text


def test_special_keyring_ids_are_read() -> None:
    # The session keyring reads as the list of its keys' serials (4 bytes each).
    serial = keyring.add_key("qomhost-listed", b"x")
    try:
        host = Host()
        host.add_object("secret_keyring", "s", serial=keyring.KEY_SPEC_SESSION_KEYRING)
        listed = host.secret_bytes("s")
        assert serial.to_bytes(4, "little", signed=True) in [
            listed[i : i + 4] for i in range(0, len(listed), 4)
        ]
    finally:
        keyring.revoke_key(serial)


def _qomctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "qomctl"), *args], capture_output=True, text=True, timeout=30, check=False
    )


def _load_with(program: str, object_args: list[str]) -> subprocess.CompletedProcess[bytes]:
    script = (
        b'{"execute":"qmp_capabilities"}\n'
        b'{"execute":"qom-get","arguments":{"path":"/objects/sec0","property":"loaded"}}\n'
        b'{"execute":"quit"}\n'
    )
    argv = [program, "-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio"]
    return subprocess.run(argv + object_args, input=script, capture_output=True, timeout=30)


@pytest.mark.parametrize("ring", ["session", "user"])
def test_qomctl_encrypt_to_keyring(tmp_path: Path, ring: str) -> None:
    key_file = tmp_path / "key.b64"
    key_file.write_text(base64.b64encode(KEY).decode())
    name = f"qomhost-test-{uuid.uuid4()}"
    out = _qomctl(
        "secret", "encrypt", "--key-file", str(key_file), "--data", "letmein",
        "--to-keyring", name, "--keyring", ring, "--with-key",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and "letmein" not in out.stdout
    spec = lines[1].removeprefix("-object ")
    assert spec.startswith("secret_keyring,id=sec0,keyid=secmaster0,format=raw,serial=")
    serial = int(dict(kv.split("=", 1) for kv in spec.split(",")[1:])["serial"])
    try:
        object_args = [w for line in lines for w in line.split(" ", 1)]
        host = Host()
        host.add_object("secret", "secmaster0", file=str(key_file), format="base64")
        host.object_add_keyval(spec)
        assert host.secret_bytes("sec0") == b"letmein"
        programs = [str(BIN / "qomhost")]
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is not None:
            programs.append(qemu)
        elif os.environ.get("CI") == "true":
            pytest.fail("qemu-system-x86_64 is not installed")
        for program in programs:
            run = _load_with(program, object_args)
            assert run.returncode == 0, (program, run.stderr)
            assert b'{"return": true}' in run.stdout, (program, run.stdout)
        again = _qomctl(
            "secret", "encrypt", "--key-file", str(key_file), "--data", "other",
            "--to-keyring", name, "--keyring", ring,
        )  # fmt: skip
        assert again.returncode == 1
        assert again.stderr == (
            f"qomctl: The {ring} keyring already has a key '{name}' (serial {serial})\n"
        )
    finally:
        if ring == "session":
            keyring.revoke_key(serial)
        # This process does not possess a user-keyring key: it can only
        # take it out of the keyring, which is what makes the key go away.
        keyring.unlink_key(serial, _RINGS[ring])
