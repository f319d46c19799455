"""``qomctl sev``: launch digests against ``sev-snp-measure --mode sev`` (PyPI), on
firmware images built here (with and without a kernel hashes table) and on
Debian's OVMF, and full measurements against an HMAC computed with the
``cryptography`` package from the AMD SEV API's fields."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, hmac

from qomhost.testing.sev_firmware import build_firmware

BIN = Path(sys.executable).parent
DEBIAN_OVMF = Path("/usr/share/OVMF/OVMF_CODE.fd")
AREA = (0x80A000, 0x400)


def need_peer() -> str:
    peer = shutil.which("sev-snp-measure", path=str(BIN)) or shutil.which("sev-snp-measure")
    if peer is None:
        if os.environ.get("CI") == "true":
            pytest.fail("sev-snp-measure is not installed (pip install -e .[test])")
        pytest.skip("sev-snp-measure is not installed")
    return peer


def peer_digest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need_peer(), "--mode", "sev", "--output-format", "hex", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def qomctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "qomctl"), "sev", *args], capture_output=True, text=True, timeout=60
    )


def field(out: str, label: str) -> str:
    for line in out.splitlines():
        if line.startswith(label + ": "):
            return line[len(label) + 2 :]
    raise AssertionError(f"no {label!r} line in:\n{out}")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("sev")
    made = {
        "hashes": build_firmware(2 << 20, hashes_area=AREA),
        "no-hashes": build_firmware(1 << 20, hashes_area=None),
        "no-table": build_firmware(256 << 10, with_table=False),
        "kernel": os.urandom(3 << 20),
        "initrd": os.urandom(1 << 20),
    }
    out = {}
    for name, data in made.items():
        path = tmp / name
        path.write_bytes(data)
        out[name] = str(path)
    return out


CASES = {
    "firmware-only": ("hashes", ()),
    "kernel": ("hashes", ("kernel",)),
    "kernel-initrd": ("hashes", ("kernel", "initrd")),
    "kernel-append": ("hashes", ("kernel", "append")),
    "kernel-initrd-append": ("hashes", ("kernel", "initrd", "append")),
    "no-hashes-firmware-only": ("no-hashes", ()),
    "no-table-firmware-only": ("no-table", ()),
}


def _args(files: dict[str, str], firmware: str, parts: tuple[str, ...]) -> list[str]:
    args = ["--ovmf", files[firmware]]
    for part in parts:
        if part == "append":
            args += ["--append", "console=ttyS0 root=/dev/vda1 ünïcode"]
        else:
            args += [f"--{part}", files[part]]
    return args


@pytest.mark.parametrize("case", CASES)
def test_digest_equals_sev_snp_measure(files: dict[str, str], case: str) -> None:
    firmware, parts = CASES[case]
    args = _args(files, firmware, parts)
    peer = peer_digest(*args)
    assert peer.returncode == 0, peer.stderr
    ours = qomctl("measure", *args)
    assert ours.returncode == 0, ours.stderr
    assert field(ours.stdout, "launch digest") == peer.stdout.strip()


@pytest.mark.parametrize("firmware", ["no-hashes", "no-table"])
def test_kernel_without_hashes_table_both_refuse(files: dict[str, str], firmware: str) -> None:
    args = _args(files, firmware, ("kernel",))
    assert peer_digest(*args).returncode != 0
    ours = qomctl("measure", *args)
    assert ours.returncode == 1
    assert ours.stderr == (
        "qomctl: SEV: kernel specified but guest firmware has no hashes table GUID\n"
    )


def test_debian_ovmf(files: dict[str, str]) -> None:
    if not DEBIAN_OVMF.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's ovmf package is not installed")
        pytest.skip("Debian's ovmf package is not installed")
    peer = peer_digest("--ovmf", str(DEBIAN_OVMF))
    assert peer.returncode == 0, peer.stderr
    ours = qomctl("measure", "--ovmf", str(DEBIAN_OVMF))
    assert field(ours.stdout, "launch digest") == peer.stdout.strip()
    # Its hashes table entry is there but empty: both refuse a kernel, ours in QEMU's words.
    assert peer_digest("--ovmf", str(DEBIAN_OVMF), "--kernel", files["kernel"]).returncode != 0
    ours = qomctl("measure", "--ovmf", str(DEBIAN_OVMF), "--kernel", files["kernel"])
    assert ours.returncode == 1
    assert "hashes table area is invalid (base=0x0 size=0x0)" in ours.stderr


def _spec_measure(
    ld: bytes, tik: bytes, major: int, minor: int, build: int, policy: int, mnonce: bytes
) -> bytes:
    mac = hmac.HMAC(tik, hashes.SHA256())
    mac.update(bytes([0x04, major, minor, build]))
    mac.update(policy.to_bytes(4, "little"))
    mac.update(ld)
    mac.update(mnonce)
    return mac.finalize()


def test_full_measurement_and_verify(files: dict[str, str], tmp_path: Path) -> None:
    tik_path = tmp_path / "guest_tik.bin"
    tik = bytes(range(16, 32))
    tik_path.write_bytes(tik)
    mnonce = bytes.fromhex("00112233445566778899aabbccddeeff")
    args = _args(files, "hashes", ("kernel", "initrd", "append"))
    peer = peer_digest(*args)
    ld = bytes.fromhex(peer.stdout.strip())
    platform = ["--tik", str(tik_path), "--api-major", "1", "--api-minor", "52", "--build", "21"]
    ours = qomctl("measure", *args, *platform, "--policy", "NODBG,NOKS", "--nonce", mnonce.hex())
    assert ours.returncode == 0, ours.stderr
    expected = _spec_measure(ld, tik, 1, 52, 21, 0x3, mnonce)
    assert field(ours.stdout, "measurement") == expected.hex()
    assert field(ours.stdout, "policy") == "0x00000003: NODBG, NOKS"
    blob = base64.b64encode(expected + mnonce).decode()

    ok = qomctl("verify", *args, *platform, "--policy", "3", "--measurement", blob)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK: the measurement matches" in ok.stdout

    wrong_policy = qomctl("verify", *args, *platform, "--measurement", blob)
    assert wrong_policy.returncode == 1
    assert "suspect the policy: the guest runs with 0x00000003: NODBG, NOKS" in wrong_policy.stdout

    # Measured without the kernel hashes: the LD is the firmware's hash alone.
    bare = _spec_measure(
        hashlib.sha256(Path(files["hashes"]).read_bytes()).digest(), tik, 1, 52, 21, 0x3, mnonce
    )
    reply = json.dumps({"return": {"data": base64.b64encode(bare + mnonce).decode()}})
    no_hashes = qomctl("verify", *args, *platform, "--policy", "3", "--measurement", reply)
    assert no_hashes.returncode == 1
    assert "suspect the kernel hashes" in no_hashes.stdout

    other_tik = _spec_measure(ld, bytes(16), 1, 52, 21, 0x3, mnonce)
    unexplained = qomctl(
        "verify",
        *args,
        *platform,
        "--policy",
        "3",
        "--measurement",
        base64.b64encode(other_tik + mnonce).decode(),
    )
    assert unexplained.returncode == 1
    assert "no single input explains it" in unexplained.stdout


def test_policy_command() -> None:
    out = qomctl("policy", "NODBG,ES,API=1.52")
    assert out.returncode == 0
    assert field(out.stdout, "policy") == "0x34010005 (872480773)"
    assert "  [x] ES " in out.stdout and "  [ ] NOKS " in out.stdout
    assert "minimum firmware API: 1.52" in out.stdout
    bad = qomctl("policy", "NOPE")
    assert bad.returncode == 2 and "unknown policy flag 'NOPE'" in bad.stderr


def test_es_policy_is_refused(files: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "tik").write_bytes(bytes(16))
    out = qomctl(
        "measure",
        "--ovmf",
        files["hashes"],
        "--tik",
        str(tmp_path / "tik"),
        "--api-major",
        "1",
        "--api-minor",
        "0",
        "--build",
        "0",
        "--policy",
        "5",
        "--nonce",
        "00" * 16,
    )
    assert out.returncode == 1
    assert "SEV-ES launch digest includes the vCPUs' VMSAs" in out.stderr
