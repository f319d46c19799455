"""No secret's plaintext in logs, error texts, reprs or QMP errors.

Representative flows run with the ``qomhost`` logger at DEBUG and every log
record captured (messages and tracebacks), and so is everything the process
prints. Each secret has a plaintext used nowhere else, and afterwards that
plaintext, in any of the spellings a leak could take (text, ``bytes`` repr,
hex), is looked for in all of it.

The flows: ``secret`` with ``data=``, ``file=`` and base64, AES-256-CBC
encrypted secrets and their key; ``secret_keyring`` payloads (when the
kernel lets this process make keys); cryptodev session keys, through the
builtin backend and through the vhost-user backend device's session
messages. Successful and failing paths both: wrong IVs, bad base64,
duplicate ids, unknown properties, refused sessions. Replies that are meant
to return a secret (``qom-get`` of ``data``, as in QEMU) are not searched;
their errors are. ``authz-pam`` has no passwords to leak: it does PAM account
management only.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from qomhost import Host
from qomhost.crypto.aes import aes256_cbc_encrypt
from qomhost.errors import QemuError
from qomhost.monitor.hmp import run_hmp_command
from qomhost.testing.qmp import QmpTestClient

PLAIN = {
    "data": "Pl41n-data-5c1d9",
    "file": "Pl41n-file-0e7b2",
    "base64": "Pl41n-b64-93aa1",
    "encrypted": "Pl41n-encrypted-77f0c",
    "hmp": "Pl41n-hmp-4412e",
    "keyring": "Pl41n-keyring-d0d0",
}
#: 32-byte AES keys, as raw bytes
AES_KEY = b"K3y-for-aes-256-cbc-0123456789ab"
SESSION_KEY = b"S3ss10n-key-abcdef"[:16]


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # tracebacks included


@pytest.fixture
def captured() -> Iterator[_Capture]:
    handler = _Capture()
    logger = logging.getLogger("qomhost")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)
        logger.setLevel(old_level)


def spellings(secret: bytes) -> list[str]:
    """How a plaintext could show: as text, in a bytes repr, as hex."""
    return [secret.decode("latin-1"), repr(secret)[2:-1], secret.hex()]


def assert_clean(texts: list[str], secrets: list[bytes]) -> None:
    haystack = "\n".join(texts)
    for secret in secrets:
        for spelling in spellings(secret):
            assert spelling not in haystack, f"{secret!r} leaked as {spelling!r}"


def qmp_errors(qmp: QmpTestClient, command: str, arguments: dict[str, object]) -> list[str]:
    reply = qmp.execute(command, arguments)
    return [repr(reply["error"])] if "error" in reply else []


def test_secrets_never_leak(
    tmp_path: Path, captured: _Capture, capfd: pytest.CaptureFixture[str]
) -> None:
    texts: list[str] = []
    host = Host()
    qmp = QmpTestClient(host, negotiate=True)
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(PLAIN["file"])
    iv = bytes(range(16))
    ciphertext = aes256_cbc_encrypt(AES_KEY, iv, PLAIN["encrypted"].encode())
    b64 = base64.b64encode
    adds: list[dict[str, object]] = [
        {"qom-type": "secret", "id": "plain", "data": PLAIN["data"]},
        {"qom-type": "secret", "id": "file", "file": str(secret_file)},
        {"qom-type": "secret", "id": "b64", "data": b64(PLAIN["base64"].encode()).decode(),
         "format": "base64"},
        {"qom-type": "secret", "id": "key", "data": b64(AES_KEY).decode(), "format": "base64"},
        {"qom-type": "secret", "id": "enc", "data": b64(ciphertext).decode(), "format": "base64",
         "keyid": "key", "iv": b64(iv).decode()},
    ]  # fmt: skip
    failing: list[dict[str, object]] = [
        # duplicate id, wrong IV, IV of the wrong size, key missing, bad base64,
        # an unknown property next to the data, a file that is not there
        {"qom-type": "secret", "id": "plain", "data": PLAIN["data"]},
        {"qom-type": "secret", "id": "bad-iv", "data": b64(ciphertext).decode(),
         "format": "base64", "keyid": "key", "iv": b64(bytes(16)).decode()},
        {"qom-type": "secret", "id": "short-iv", "data": b64(ciphertext).decode(),
         "format": "base64", "keyid": "key", "iv": b64(b"x").decode()},
        {"qom-type": "secret", "id": "no-key", "data": PLAIN["data"], "keyid": "nokey",
         "iv": b64(iv).decode()},
        {"qom-type": "secret", "id": "bad-b64", "data": PLAIN["data"] + "!", "format": "base64"},
        {"qom-type": "secret", "id": "extra", "data": PLAIN["data"], "bogus": 1},
        {"qom-type": "secret", "id": "nofile", "file": str(tmp_path / "missing")},
        {"qom-type": "secret", "id": "wrongkey", "data": b64(ciphertext).decode(),
         "format": "base64", "keyid": "plain", "iv": b64(iv).decode()},
    ]  # fmt: skip
    for arguments in adds:
        assert qmp.execute("object-add", arguments) == {"return": {}}
    for arguments in failing:
        texts += qmp_errors(qmp, "object-add", arguments)
    # (a wrong IV may still decrypt to something with valid padding)
    assert len(texts) >= len(failing) - 1
    texts += qmp_errors(qmp, "qom-set", {"path": "/objects/plain", "property": "data",
                                         "value": PLAIN["data"]})  # fmt: skip
    texts += qmp_errors(qmp, "qom-get", {"path": "/objects/enc", "property": "nope"})
    assert host.secret_bytes("enc") == PLAIN["encrypted"].encode()
    assert host.secret_bytes("file") == PLAIN["file"].encode()

    # HMP: object_add with the secret on the command line, failing and not.
    for line in (
        f"object_add secret,id=hmp,data={PLAIN['hmp']}",
        f"object_add secret,id=hmp,data={PLAIN['hmp']}",
        f"object_add secret,id=hmp2,data={PLAIN['hmp']},nope=1",
        f"object_add secret,id=hmp3,data={PLAIN['hmp']},keyid=key,iv=AAAA",
    ):
        texts.append(run_hmp_command(host, line))

    # reprs and str of everything that holds a secret
    for ident in ("plain", "file", "b64", "key", "enc", "hmp"):
        obj = host.lookup_object(ident)
        texts += [repr(obj), str(obj)]
        texts += [repr(host.secret_bytes(ident)), str(host.secret_bytes(ident))]

    texts += keyring_flows(host)
    texts += cryptodev_flows(host)
    host.close()

    out, err = capfd.readouterr()
    secrets = [p.encode() for p in PLAIN.values()] + [AES_KEY, SESSION_KEY]
    assert_clean([*texts, *captured.lines, out, err], secrets)
    assert captured.lines, "nothing was logged: the capture is not working"


def keyring_flows(host: Host) -> list[str]:
    """``secret_keyring`` with a real kernel key, if keys can be made here."""
    from qomhost.crypto import keyring

    try:
        keyring.join_session_keyring()
        serial = keyring.add_key("qomhost-hygiene", PLAIN["keyring"].encode())
    except OSError:
        return []
    texts: list[str] = []
    try:
        host.add_object("secret_keyring", "kr", serial=serial)
        assert host.secret_bytes("kr") == PLAIN["keyring"].encode()
        texts += [repr(host.lookup_object("kr")), repr(host.secret_bytes("kr"))]
        for props in ({"serial": serial, "format": "base64"},
                      {"serial": serial, "keyid": "key", "iv": "AAAA"}):  # fmt: skip
            try:
                host.add_object("secret_keyring", "kr-bad", **props)
            except QemuError as err:
                texts += [str(err), repr(err)]
    finally:
        keyring.revoke_key(serial)
    return texts


def cryptodev_flows(host: Host) -> list[str]:
    """Session keys through the builtin backend and the vhost-user backend device."""
    from qomhost.cryptodev.device import VhostUserCryptoDevice
    from qomhost.cryptodev.virtio_crypto import CipherAlgo, Op, SymSessionInfo, encode_session

    texts: list[str] = []
    backend = host.add_object("cryptodev-backend-builtin", "cd")
    session = backend.create_session("aes-128-cbc", SESSION_KEY, "encrypt")  # type: ignore[attr-defined]
    texts += [repr(session), str(session), repr(backend)]
    backend.encrypt(session, bytes(16), bytes(32))  # type: ignore[attr-defined]
    for bad in ({"cipher": "aes-128-cbc", "key": SESSION_KEY + b"x"},
                {"cipher": "nope", "key": SESSION_KEY}):  # fmt: skip
        try:
            backend.create_session(op="encrypt", **bad)  # type: ignore[attr-defined]
        except (QemuError, ValueError) as err:
            texts += [str(err), repr(err)]
    try:
        backend.decrypt(session, bytes(16), bytes(32))  # type: ignore[attr-defined]
    except (QemuError, ValueError) as err:
        texts += [str(err), repr(err)]
    backend.close_session(session)  # type: ignore[attr-defined]

    device = VhostUserCryptoDevice()
    info = SymSessionInfo(CipherAlgo.AES_CBC, SESSION_KEY, Op.ENCRYPT)
    texts += [repr(info), str(info)]
    session_id = device.create_session(encode_session(info))
    assert session_id >= 0
    texts += [repr(device.sessions.get(session_id))]
    # the vhost-user message that carries the key, as a log or traceback shows it
    from qomhost.vhost_user.backend import describe
    from qomhost.vhost_user.protocol import BACKEND, CryptoSession, decode_message

    message = CryptoSession(encode_session(info))
    texts += [repr(message), str(message), describe(message)]
    texts += [repr(decode_message(message.encode(), role=BACKEND))]
    refused = bytearray(encode_session(info))
    refused[8:12] = (99).to_bytes(4, "little")  # an unknown algorithm: refused
    device.create_session(bytes(refused))
    device.reset()
    return texts


def test_the_capture_would_see_a_leak(captured: _Capture) -> None:
    """The checks above are not vacuous: a plaintext logged is found."""
    logging.getLogger("qomhost.test").debug("oops %s", PLAIN["data"])
    with pytest.raises(AssertionError, match="leaked"):
        assert_clean(captured.lines, [PLAIN["data"].encode()])
    with pytest.raises(AssertionError, match="leaked"):
        assert_clean([repr(SESSION_KEY)], [SESSION_KEY])
    assert os.environ.get("QOMHOST_NO_SUCH") is None
