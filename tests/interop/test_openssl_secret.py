"""AES-256-CBC secrets made with the real ``openssl`` CLI, as QEMU's documentation says.

The recipe (from the user's document, QEMU's ``-object secret`` manual)::

    openssl rand -base64 32 > key.b64
    KEY=$(base64 -d key.b64 | hexdump -v -e '/1 "%02X"')
    openssl rand -base64 16 > iv.b64
    IV=$(base64 -d iv.b64 | hexdump -v -e '/1 "%02X"')
    SECRET=$(printf "letmein" | openssl enc -aes-256-cbc -a -K $KEY -iv $IV)
    qemu-system-x86_64 \\
        -object secret,id=secmaster0,format=base64,file=key.b64 \\
        -object secret,id=sec0,keyid=secmaster0,format=base64,data=$SECRET,iv=$(<iv.b64)

is run by bash exactly so; the library, the ``qomhost`` command line and
``qemu-system-x86_64`` then get the same values. Wrong keys and IVs are chosen
deterministically with ``openssl enc -d -nopad`` as the oracle for the last
decrypted byte, which is all QEMU's padding check looks at.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hostproc import (
    TIMEOUT,
    Processes,
    Program,
    StdioRun,
    need_tool,
    normalized,
    program,
    run_qmp_stdio,
)
from qomhost.errors import QemuError
from qomhost.host import Host

pytestmark = pytest.mark.interop

SHELL_PRELUDE = "set -eu\n"

RECIPE = (
    SHELL_PRELUDE
    + r"""openssl rand -base64 32 > key.b64
KEY=$(base64 -d key.b64 | hexdump -v -e '/1 "%02X"')
openssl rand -base64 16 > iv.b64
IV=$(base64 -d iv.b64 | hexdump -v -e '/1 "%02X"')
SECRET=$(printf "letmein" | openssl enc -aes-256-cbc -a -K $KEY -iv $IV)
"""
)

#: the recipe's command line, run by bash with the program's name as argv[0]
COMMAND_LINE = r"""
exec -a "$PROG_NAME" "$PROG_PATH" -machine none -nodefaults -display none -qmp stdio \
    -object secret,id=secmaster0,format=base64,file=key.b64 \
    -object secret,id=sec0,keyid=secmaster0,format=base64,data=$SECRET,iv=$(<iv.b64)
"""

#: QMP questions whose answers both programs must give identically
QUERIES: list[dict[str, Any]] = [
    {"execute": "qom-get", "arguments": {"path": "/objects/sec0", "property": prop}}
    for prop in ("loaded", "format", "keyid", "iv", "data")
] + [{"execute": "qom-get", "arguments": {"path": "/objects/secmaster0", "property": "file"}}]


@dataclass(frozen=True)
class Recipe:
    """What the recipe left behind: files in ``workdir`` and its shell variables."""

    workdir: Path
    key_hex: str
    iv_hex: str
    secret: str

    @property
    def key(self) -> bytes:
        return bytes.fromhex(self.key_hex)

    @property
    def iv(self) -> bytes:
        return bytes.fromhex(self.iv_hex)

    @property
    def iv_b64(self) -> str:
        """``$(<iv.b64)``: the file without its trailing newline."""
        return (self.workdir / "iv.b64").read_text().rstrip("\n")


def bash(script: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``script`` with bash; its stdout."""
    result = subprocess.run(
        [need_tool("bash"), "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def recipe(workdir: Path) -> Recipe:
    """The seed document's recipe, run by bash with the real openssl, base64, hexdump."""
    for tool in ("openssl", "base64", "hexdump"):
        need_tool(tool)
    out = bash(RECIPE + 'printf "%s\\n%s\\n%s\\n" "$KEY" "$IV" "$SECRET"\n', workdir)
    key_hex, iv_hex, secret = out.split("\n")[:3]
    made = Recipe(workdir, key_hex, iv_hex, secret)
    assert len(made.key) == 32 and len(made.iv) == 16
    assert base64.b64decode((workdir / "key.b64").read_text()) == made.key
    return made


def openssl(*args: str, data: bytes) -> bytes:
    """Run ``openssl`` with ``data`` on stdin; its stdout."""
    result = subprocess.run(
        [need_tool("openssl"), *args], input=data, capture_output=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def encrypt(key: bytes, iv: bytes, plaintext: bytes, *flags: str) -> bytes:
    """``openssl enc -aes-256-cbc`` (PKCS#7 padding) with ``flags`` such as ``-a``."""
    return openssl("enc", "-aes-256-cbc", *flags, "-K", key.hex(), "-iv", iv.hex(), data=plaintext)


def raw_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """``openssl enc -d -nopad``: the decrypted blocks, padding and all."""
    return openssl(
        "enc", "-d", "-aes-256-cbc", "-nopad", "-K", key.hex(), "-iv", iv.hex(), data=ciphertext
    )


def library_host(workdir: Path, **sec0: Any) -> Host:
    """A Host with ``key.b64`` as secmaster0 and ``sec0`` (options ``sec0``) under it."""
    host = Host()
    host.add_object("secret", "secmaster0", format="base64", file=str(workdir / "key.b64"))
    host.add_object("secret", "sec0", keyid="secmaster0", **sec0)
    return host


def library(workdir: Path, **sec0: Any) -> bytes:
    """sec0's payload as the library loads it."""
    return library_host(workdir, **sec0).secret_bytes("sec0")


def run_both(
    procs: Processes, args: list[str], queries: list[dict[str, Any]] = QUERIES
) -> tuple[StdioRun, StdioRun]:
    """The same ``-object`` arguments through qomhost and QEMU with QMP on stdio."""
    runs = [
        run_qmp_stdio(procs, program(kind), ["-qmp", "stdio", *args], queries)
        for kind in ("qomhost", "qemu")
    ]
    return runs[0], runs[1]


def assert_same(qomhost: StdioRun, qemu: StdioRun) -> None:
    """Same exit status, same stderr (program name masked), same QMP answers."""
    assert qomhost.status == qemu.status
    assert program_masked(qomhost.stderr, "qomhost") == program_masked(qemu.stderr, "qemu")
    assert normalized(qomhost.messages) == normalized(qemu.messages)


def program_masked(text: str, kind: str) -> str:
    name = "qomhost" if kind == "qomhost" else "qemu-system-x86_64"
    return text.replace(f"{name}: ", "PROG: ")


def secret_args(**sec0: str) -> list[str]:
    """``-object`` arguments: the recipe's master key, then ``sec0`` with ``sec0``'s options."""
    options = ",".join(f"{key}={value}" for key, value in sec0.items())
    return [
        "-object",
        "secret,id=secmaster0,format=base64,file=key.b64",
        "-object",
        f"secret,id=sec0,keyid=secmaster0,{options}",
    ]


def test_recipe_decrypts_with_the_library(recipe: Recipe) -> None:
    """(a) Host().add_object with the recipe's values yields b"letmein"."""
    payload = library(recipe.workdir, format="base64", data=recipe.secret, iv=recipe.iv_b64)
    assert payload == b"letmein"
    # The same ciphertext, checked independently with openssl itself.
    ciphertext = base64.b64decode(recipe.secret)
    assert openssl(
        "enc", "-d", "-aes-256-cbc", "-K", recipe.key_hex, "-iv", recipe.iv_hex, data=ciphertext
    ) == (b"letmein")


def test_recipe_command_line_qomhost_and_qemu(recipe: Recipe, procs: Processes) -> None:
    """(b) The recipe's own command line, expanded by bash, starts qomhost and QEMU alike:
    both load sec0 and give the same QMP answers."""
    runs: list[StdioRun] = []
    bash_prog = Program("bash", need_tool("bash"))
    for kind in ("qomhost", "qemu"):
        prog = program(kind)
        script = (
            SHELL_PRELUDE
            + f"KEY={recipe.key_hex}\nIV={recipe.iv_hex}\nSECRET={recipe.secret}\n"
            + f"PROG_NAME={prog.name}\nPROG_PATH={prog.path}\n"
            + COMMAND_LINE
        )
        runs.append(run_qmp_stdio(procs, bash_prog, ["-c", script], QUERIES, base=False))
    qomhost, qemu = runs
    assert qomhost.status == 0, qomhost.stderr
    assert qomhost.stderr == ""
    replies = [m["return"] for m in qomhost.messages[2:8]]
    assert replies == [True, "base64", "secmaster0", recipe.iv_b64, recipe.secret, "key.b64"]
    assert_same(qomhost, qemu)


def test_multi_line_openssl_output(recipe: Recipe, procs: Processes) -> None:
    """(c) A long plaintext: ``openssl enc -a`` wraps its base64 at 64 columns, and QEMU's
    decoder accepts the newlines, in data= and in a file (with its final newline)."""
    plaintext = b"correct horse battery staple; " * 7
    wrapped = encrypt(recipe.key, recipe.iv, plaintext, "-a")
    lines = wrapped.decode().rstrip("\n").split("\n")
    assert len(lines) > 2 and all(len(line) == 64 for line in lines[:-1])
    (recipe.workdir / "secret.b64").write_bytes(wrapped)
    data = wrapped.decode().rstrip("\n")  # what $(...) keeps: the inner newlines

    assert library(recipe.workdir, format="base64", data=data, iv=recipe.iv_b64) == plaintext
    in_file = str(recipe.workdir / "secret.b64")
    assert library(recipe.workdir, format="base64", file=in_file, iv=recipe.iv_b64) == plaintext
    for source in ({"data": data}, {"file": "secret.b64"}):
        qomhost, qemu = run_both(procs, secret_args(format="base64", iv=recipe.iv_b64, **source))
        assert qomhost.status == 0, qomhost.stderr
        assert qomhost.messages[2] == {"return": True}
        assert_same(qomhost, qemu)


def test_raw_binary_ciphertext_file(recipe: Recipe, procs: Processes) -> None:
    """(d) Binary ciphertext (``openssl enc`` without ``-a``) in a file, ``format=raw``.

    The plaintext is itself a 32-byte key, so a second secret encrypted under it
    proves on both command lines that sec0 decrypted to exactly those bytes."""
    inner_key = hashlib.sha256(b"inner key").digest()
    (recipe.workdir / "secret.bin").write_bytes(encrypt(recipe.key, recipe.iv, inner_key))
    in_file = str(recipe.workdir / "secret.bin")
    assert library(recipe.workdir, format="raw", file=in_file, iv=recipe.iv_b64) == inner_key

    inner_iv = hashlib.sha256(b"inner iv").digest()[:16]
    inner = encrypt(inner_key, inner_iv, b"letmein", "-a").decode().strip()
    args = [
        *secret_args(format="raw", file="secret.bin", iv=recipe.iv_b64),
        "-object",
        "secret,id=sec1,keyid=sec0,format=base64,"
        f"data={inner},iv={base64.b64encode(inner_iv).decode()}",
    ]
    qomhost, qemu = run_both(procs, args)
    assert qomhost.status == 0, qomhost.stderr
    assert qomhost.messages[2] == {"return": True}
    assert_same(qomhost, qemu)

    host = library_host(recipe.workdir, format="raw", file=in_file, iv=recipe.iv_b64)
    host.add_object(
        "secret",
        "sec1",
        keyid="sec0",
        format="base64",
        data=inner,
        iv=base64.b64encode(inner_iv).decode(),
    )
    assert host.secret_bytes("sec1") == b"letmein"


def seeded(label: str, size: int) -> Iterator[bytes]:
    """Deterministic candidate keys or IVs: sha256 of ``label`` and a counter."""
    for n in itertools.count():
        yield hashlib.sha256(f"{label}-{n}".encode()).digest()[:size]


def pick(candidates: Iterator[bytes], accept: Callable[[bytes], bool], limit: int = 200) -> bytes:
    """The first candidate ``accept`` likes (fails after ``limit`` tries)."""
    for candidate in itertools.islice(candidates, limit):
        if accept(candidate):
            return candidate
    raise AssertionError(f"no candidate in {limit} tries")


def padding_error(pad: int) -> str:
    return f"Incorrect number of padding bytes ({pad}) found on decrypted data"


def test_wrong_key_padding_error_matches_qemu(recipe: Recipe, procs: Processes) -> None:
    """(e) A wrong master key whose last decrypted byte exceeds 16: QEMU's padding error,
    with the same text and exit status from qomhost (CLI) and the library."""
    ciphertext = base64.b64decode(recipe.secret)
    wrong = pick(seeded("wrong-key", 32), lambda k: raw_decrypt(k, recipe.iv, ciphertext)[-1] > 16)
    pad = raw_decrypt(wrong, recipe.iv, ciphertext)[-1]
    (recipe.workdir / "key.b64").write_text(base64.b64encode(wrong).decode() + "\n")

    qomhost, qemu = run_both(
        procs, secret_args(format="base64", data=recipe.secret, iv=recipe.iv_b64)
    )
    assert qomhost.status == 1
    assert qomhost.stderr == f"qomhost: {padding_error(pad)}\n"
    assert qemu.messages == [] and qomhost.messages == []
    assert_same(qomhost, qemu)
    with pytest.raises(QemuError) as failure:
        library(recipe.workdir, format="base64", data=recipe.secret, iv=recipe.iv_b64)
    assert failure.value.desc == padding_error(pad)


def test_wrong_key_undetected_matches_qemu(recipe: Recipe, procs: Processes) -> None:
    """(e) A wrong key whose last decrypted byte happens to be 1..16 passes QEMU's check
    (only the count is checked): QEMU loads garbage, and so does qomhost."""
    ciphertext = base64.b64decode(recipe.secret)
    wrong = pick(
        seeded("lucky-key", 32), lambda k: 1 <= raw_decrypt(k, recipe.iv, ciphertext)[-1] <= 16
    )
    plain = raw_decrypt(wrong, recipe.iv, ciphertext)
    (recipe.workdir / "key.b64").write_text(base64.b64encode(wrong).decode() + "\n")

    qomhost, qemu = run_both(
        procs, secret_args(format="base64", data=recipe.secret, iv=recipe.iv_b64)
    )
    assert qomhost.status == 0, qomhost.stderr
    assert_same(qomhost, qemu)
    payload = library(recipe.workdir, format="base64", data=recipe.secret, iv=recipe.iv_b64)
    assert payload == plain[: len(plain) - plain[-1]]


def test_wrong_iv_padding_error_matches_qemu(recipe: Recipe, procs: Processes) -> None:
    """(e) A wrong IV on the one-block "letmein" ciphertext garbles the padding byte;
    for an IV where it exceeds 16, qomhost fails exactly as QEMU does."""
    ciphertext = base64.b64decode(recipe.secret)
    assert len(ciphertext) == 16
    wrong = pick(seeded("wrong-iv", 16), lambda v: raw_decrypt(recipe.key, v, ciphertext)[-1] > 16)
    pad = raw_decrypt(recipe.key, wrong, ciphertext)[-1]
    wrong_b64 = base64.b64encode(wrong).decode()

    qomhost, qemu = run_both(procs, secret_args(format="base64", data=recipe.secret, iv=wrong_b64))
    assert qomhost.status == 1
    assert qomhost.stderr == f"qomhost: {padding_error(pad)}\n"
    assert_same(qomhost, qemu)
    with pytest.raises(QemuError) as failure:
        library(recipe.workdir, format="base64", data=recipe.secret, iv=wrong_b64)
    assert failure.value.desc == padding_error(pad)


def test_wrong_iv_on_multi_block_is_accepted_like_qemu(recipe: Recipe, procs: Processes) -> None:
    """(e) QEMU cannot detect a wrong IV on a multi-block ciphertext.

    In CBC the IV only enters the first block; the last block, which holds the
    padding, decrypts correctly, so QEMU's padding check passes and QEMU loads a
    payload whose first 16 bytes are garbage. qomhost must accept it too (same
    status and answers) and the library must return the same garbled payload."""
    plaintext = b"a passphrase that spans three AES blocks"
    ciphertext = encrypt(recipe.key, recipe.iv, plaintext)
    assert len(ciphertext) == 48
    data = base64.b64encode(ciphertext).decode()
    wrong = next(seeded("other-iv", 16))
    wrong_b64 = base64.b64encode(wrong).decode()

    qomhost, qemu = run_both(procs, secret_args(format="base64", data=data, iv=wrong_b64))
    assert qomhost.status == 0, qomhost.stderr
    assert qomhost.messages[2] == {"return": True}
    assert_same(qomhost, qemu)

    payload = library(recipe.workdir, format="base64", data=data, iv=wrong_b64)
    assert payload[16:] == plaintext[16:]
    assert payload[:16] != plaintext[:16]
    assert payload == raw_decrypt(recipe.key, wrong, ciphertext)[: len(plaintext)]
