"""Differential cases for ``secret_keyring`` (issue 7).

The keys are real: importing this module gives the test process a fresh,
anonymous session keyring (children inherit it, nothing else sees it) and
adds the keys the cases name by serial; they are revoked at exit. QEMU is
the expectation, as everywhere: nothing here states an answer.
"""

from __future__ import annotations

import atexit
import base64
import sys
from collections.abc import Iterable
from pathlib import Path

from harness import Case, ScriptItem
from script import CAPS, QMP, ex, get
from script import objects as objs

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from qomhost.crypto.keyring import (
    KEY_SPEC_SESSION_KEYRING,
    add_key,
    join_session_keyring,
    revoke_key,
)

S = "/objects/s"

# The same vectors as cases.py (made once with the openssl CLI).
KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()
IV_B64 = "oKGio6SlpqeoqaqrrK2urw=="
CT_LETMEIN = "agVmoiJU2NXwRs1MV6hdaQ=="

join_session_keyring()
_made: list[int] = []


def _key(description: str, payload: bytes, key_type: str = "user") -> int:
    serial = add_key(description, payload, KEY_SPEC_SESSION_KEYRING, key_type)
    _made.append(serial)
    return serial


@atexit.register
def _remove_keys() -> None:
    for serial in _made:
        try:
            revoke_key(serial)
        except OSError:
            pass


TEXT = _key("qomhost-text", b"hunter2")
RAW_KEY = _key("qomhost-raw-key", KEY)
B64_KEY = _key("qomhost-b64-key", KEY_B64.encode())
CIPHERTEXT = _key("qomhost-ciphertext", base64.b64decode(CT_LETMEIN))
BAD_B64 = _key("qomhost-bad-b64", b"not*base64")
NUL_B64 = _key("qomhost-nul-b64", b"aGVs\0bG8=")
BIG = _key("qomhost-big", bytes(range(256)) * 100)
EMPTY_RING = _key("qomhost-empty-ring", b"", key_type="keyring")
REVOKED = _key("qomhost-revoked", b"gone")
revoke_key(REVOKED)
#: no such key: serials are random 31-bit numbers, so one just made and
#: revoked is the surest unused one; a small serial is almost never in use
MISSING = 12345


def qmp(name: str, *script: ScriptItem, specs: Iterable[str] = (), note: str = "") -> Case:
    return Case(name, (*QMP, *objs(specs)), (CAPS, *script), note=note)


def state(path: str = S) -> tuple[ScriptItem, ...]:
    return tuple(get(path, p) for p in ("serial", "format", "keyid", "iv", "loaded"))


def ring(serial: int | str, extra: str = "", id_: str = "s") -> str:
    return f"secret_keyring,id={id_},serial={serial}{extra}"


#: decrypts "letmein" only when ``k`` holds exactly KEY
USE_AS_KEY = f"secret,id=u,data={CT_LETMEIN},format=base64,keyid=k,iv={IV_B64}"

KEYRING_CASES = [
    qmp("keyring-basic", *state(), ex("qom-list", path=S), specs=(ring(TEXT),)),
    qmp("keyring-serial-zero", specs=(ring(0),)),
    qmp("keyring-serial-missing", specs=("secret_keyring,id=s",)),
    qmp("keyring-serial-too-big", specs=(ring(2**31),)),
    qmp("keyring-serial-too-small", specs=(ring(-(2**31) - 1),)),
    qmp("keyring-serial-text", specs=(ring("abc"),)),
    qmp("keyring-serial-hex-missing", specs=(ring(hex(MISSING)),)),
    qmp("keyring-serial-hex", get(S, "serial"), specs=(ring(hex(TEXT)),)),
    qmp("keyring-no-such-key", specs=(ring(MISSING),)),
    qmp("keyring-revoked", specs=(ring(REVOKED),)),
    qmp("keyring-empty-keyring", specs=(ring(EMPTY_RING),)),
    qmp(
        "keyring-negative-serial",
        specs=(ring(-100),),
        note="no special keyring has this id: the kernel refuses it",
    ),
    qmp(
        "keyring-session-keyring",
        get(S, "serial"),
        get(S, "loaded"),
        specs=(ring(-3),),
        note="a keyring reads as the list of its keys' serials",
    ),
    qmp("keyring-big-payload", get(S, "loaded"), specs=(ring(BIG),)),
    qmp(
        "keyring-raw-key-works-as-aes-key",
        get("/objects/u", "loaded"),
        specs=(ring(RAW_KEY, id_="k"), USE_AS_KEY),
    ),
    qmp(
        "keyring-base64-key-works-as-aes-key",
        get("/objects/u", "loaded"),
        specs=(ring(B64_KEY, ",format=base64", id_="k"), USE_AS_KEY),
    ),
    qmp(
        "keyring-text-is-not-a-key",
        specs=(ring(TEXT, id_="k"), USE_AS_KEY),
    ),
    qmp(
        "keyring-text-base64-decoded-leniently",
        get("/objects/u", "loaded"),
        specs=(ring(TEXT, ",format=base64", id_="k"), USE_AS_KEY),
        note="'hunter2' decodes to 4 bytes, which is not a key",
    ),
    qmp("keyring-bad-base64", specs=(ring(BAD_B64, ",format=base64"),)),
    qmp("keyring-nul-in-base64", specs=(ring(NUL_B64, ",format=base64"),)),
    qmp(
        "keyring-raw-ciphertext",
        *state(),
        specs=(
            f"secret,id=k,data={KEY_B64},format=base64",
            ring(CIPHERTEXT, f",keyid=k,iv={IV_B64}"),
        ),
    ),
    qmp(
        "keyring-ciphertext-no-iv",
        specs=(f"secret,id=k,data={KEY_B64},format=base64", ring(CIPHERTEXT, ",keyid=k")),
    ),
    qmp("keyring-ciphertext-no-key", specs=(ring(CIPHERTEXT, f",keyid=k,iv={IV_B64}"),)),
    qmp(
        "keyring-qmp",
        ex("object-add", qom_type="secret_keyring", id="s"),
        ex("object-add", qom_type="secret_keyring", id="s", serial=0),
        ex("object-add", qom_type="secret_keyring", id="s", serial=2**31),
        ex("object-add", qom_type="secret_keyring", id="s", serial="5"),
        ex("object-add", qom_type="secret_keyring", id="s", serial=MISSING),
        ex("object-add", qom_type="secret_keyring", id="s", serial=REVOKED),
        ex("object-add", qom_type="secret_keyring", id="s", serial=TEXT, data="x"),
        ex("object-add", qom_type="secret_keyring", id="s", serial=TEXT, format="hex"),
        ex("qom-list", path="/objects"),
        ex("object-add", qom_type="secret_keyring", id="s", serial=TEXT),
        *state(),
        ex("qom-set", path=S, property="serial", value=0),
        get(S, "serial"),
        ex("qom-set", path=S, property="serial", value=MISSING),
        get(S, "serial"),
        get(S, "loaded"),
        ex("object-del", id="s"),
        ex("qom-list", path="/objects"),
    ),
    qmp(
        "keyring-hmp",
        ex("human-monitor-command", command_line=f"object_add {ring(TEXT)}"),
        ex("human-monitor-command", command_line=f"object_add {ring(0, id_='t')}"),
        ex("human-monitor-command", command_line=f"object_add {ring(MISSING, id_='t')}"),
        ex("human-monitor-command", command_line="object_add secret_keyring,help"),
        ex("human-monitor-command", command_line="qom-get /objects/s serial"),
        ex("human-monitor-command", command_line="object_del s"),
    ),
    qmp(
        "keyring-properties",
        ex("qom-list-properties", typename="secret_keyring"),
        ex("qom-list-properties", typename="secret_common"),
    ),
    Case("keyring-help", ("-object", "secret_keyring,help")),
    qmp(
        "keyring-json",
        *state(),
        specs=(f'{{"qom-type":"secret_keyring","id":"s","serial":{TEXT},"format":"raw"}}',),
    ),
    qmp(
        "keyring-json-string-serial",
        specs=(f'{{"qom-type":"secret_keyring","id":"s","serial":"{TEXT}"}}',),
    ),
]
