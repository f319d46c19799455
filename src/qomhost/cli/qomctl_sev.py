"""``qomctl sev``: launch measurements and policies for SEV guest owners.

``measure`` prints the launch digest of a guest QEMU 7.2 would start with
this firmware (and ``-kernel``/``-initrd``/``-append`` with
``kernel-hashes=on``); given the TIK, the platform's API version and build,
the policy and the nonce, also the measurement ``query-sev-launch-measure``
should return::

    $ qomctl sev measure --ovmf OVMF.amdsev.fd --kernel vmlinuz --append 'console=ttyS0'
    $ qomctl sev measure --ovmf OVMF.fd --tik tik.bin --api-major 1 --api-minor 52 \\
          --build 21 --policy NODBG --nonce 00112233445566778899aabbccddeeff

``verify`` checks a ``query-sev-launch-measure`` answer and, on a mismatch,
says which input to suspect; ``policy`` encodes and decodes policies. Every
input is printed with the result.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from qomhost.sev.measure import LaunchDigest

__all__ = ["add_sev_parser"]


def _out(label: str, value: str) -> None:
    sys.stdout.write(f"{label}: {value}\n")


def _digest(args: argparse.Namespace) -> LaunchDigest:
    """Compute and print the launch digest and every input that went into it."""
    import os

    from qomhost.sev.measure import launch_digest

    digest = launch_digest(args.ovmf, args.kernel, args.initrd, args.append)
    size = os.path.getsize(args.ovmf)
    _out("firmware", f"{args.ovmf} ({size} bytes, sha256 {digest.firmware_hash.hex()})")
    if digest.table is not None:
        assert digest.kernel_hash is not None and digest.initrd_hash is not None
        assert digest.cmdline_hash is not None
        _out("kernel", f"{args.kernel} (sha256 {digest.kernel_hash.hex()})")
        initrd = args.initrd if args.initrd is not None else "none"
        _out("initrd", f"{initrd} (sha256 {digest.initrd_hash.hex()})")
        append = json.dumps(args.append) if args.append is not None else "none"
        _out("append", f"{append} (sha256 with its NUL {digest.cmdline_hash.hex()})")
        _out("kernel hashes table", f"{len(digest.table)} bytes, measured after the firmware")
    else:
        _out("kernel hashes", "none (no --kernel)")
    _out("launch digest", digest.digest.hex())
    return digest


def _read_tik(path: str) -> bytes:
    from qomhost.sev.measure import TIK_SIZE, MeasureError

    with open(path, "rb") as f:
        tik = f.read()
    if len(tik) != TIK_SIZE:
        raise MeasureError(
            f"{path}: a TIK is {TIK_SIZE} bytes (sevctl's *_tik.bin), not {len(tik)}"
        )
    return tik


def _policy(text: str) -> int:
    from qomhost.sev.policy import PolicyError, parse_policy

    try:
        return parse_policy(text)
    except PolicyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _byte(text: str) -> int:
    value = int(text, 0)
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"{text} is not in 0..255")
    return value


def _platform(args: argparse.Namespace) -> tuple[bytes, int]:
    """Print and return the TIK and policy; refuse what cannot be computed."""
    from qomhost.sev.measure import MeasureError
    from qomhost.sev.policy import SEV_POLICY_ES, describe_policy

    missing = [
        flag
        for flag, value in (
            ("--api-major", args.api_major),
            ("--api-minor", args.api_minor),
            ("--build", args.build),
        )
        if value is None
    ]
    if missing:
        raise MeasureError(f"{', '.join(missing)} needed with --tik (query-sev shows them)")
    if args.policy & SEV_POLICY_ES:
        raise MeasureError(
            f"policy {describe_policy(args.policy)}: an SEV-ES launch digest includes "
            "the vCPUs' VMSAs, which qomctl does not compute"
        )
    tik = _read_tik(args.tik)
    _out("tik", f"{args.tik} (16 bytes)")
    _out("api version", f"{args.api_major}.{args.api_minor}")
    _out("build", str(args.build))
    _out("policy", describe_policy(args.policy))
    return tik, args.policy


def cmd_measure(args: argparse.Namespace) -> int:
    """Print the launch digest and, with --tik, the expected measurement."""
    from qomhost.sev.measure import MNONCE_SIZE, MeasureError, launch_measure, measurement_blob

    if args.tik is None:
        _digest(args)
        return 0
    if args.nonce is None:
        raise MeasureError(
            "--nonce needed with --tik (the last 16 bytes of query-sev-launch-measure)"
        )
    try:
        mnonce = bytes.fromhex(args.nonce)
    except ValueError:
        raise MeasureError(f"--nonce {args.nonce!r} is not hexadecimal") from None
    if len(mnonce) != MNONCE_SIZE:
        raise MeasureError(f"--nonce must be {MNONCE_SIZE} bytes, not {len(mnonce)}")
    tik, policy = _platform(args)
    _out("nonce", mnonce.hex())
    digest = _digest(args)
    measure = launch_measure(
        digest.digest, tik, args.api_major, args.api_minor, args.build, policy, mnonce
    )
    _out("measurement", measure.hex())
    blob = base64.b64encode(measurement_blob(measure, mnonce)).decode()
    _out("query-sev-launch-measure", json.dumps({"data": blob}))
    return 0


def _read_blob(text: str) -> bytes:
    """A measurement as base64, as QMP's ``{"data": ...}`` reply, or ``@FILE`` of either."""
    from qomhost.sev.measure import MeasureError

    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as f:
            text = f.read()
    text = text.strip()
    if text.startswith("{"):
        reply = json.loads(text)
        reply = reply.get("return", reply)
        text = reply["data"]
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise MeasureError("the measurement is not base64") from None


def cmd_verify(args: argparse.Namespace) -> int:
    """Check a measurement; exit 0 when it matches, 1 when it does not."""
    from qomhost.sev.measure import split_blob
    from qomhost.sev.verify import UNEXPLAINED, verify_measurement

    blob = _read_blob(args.measurement)
    _measure, mnonce = split_blob(blob)
    tik, policy = _platform(args)
    _out("nonce", f"{mnonce.hex()} (from the measurement)")
    digest = _digest(args)
    verdict = verify_measurement(
        blob, digest, tik, args.api_major, args.api_minor, args.build, policy
    )
    _out("expected measurement", verdict.expected.hex())
    _out("received measurement", verdict.received.hex())
    if verdict.ok:
        sys.stdout.write("OK: the measurement matches\n")
        return 0
    sys.stdout.write("MISMATCH\n")
    for suspect in verdict.suspects or [UNEXPLAINED]:
        sys.stdout.write(f"suspect {suspect}\n")
    return 1


def cmd_policy(args: argparse.Namespace) -> int:
    """Decode a policy given as a number, or encode one given as flags."""
    from qomhost.sev.policy import POLICY_FLAGS, PolicyError, decode_policy, parse_policy

    try:
        policy = parse_policy(args.policy)
    except PolicyError as exc:
        sys.stderr.write(f"qomctl: {exc}\n")
        return 2
    parts = decode_policy(policy)
    flags = parts["flags"]
    assert isinstance(flags, list)
    _out("policy", f"0x{policy:08x} ({policy})")
    for name, bit, text in POLICY_FLAGS:
        mark = "x" if name in flags else " "
        sys.stdout.write(f"  [{mark}] {name:<6} 0x{bit:02x}  {text}\n")
    sys.stdout.write(f"  minimum firmware API: {parts['api-major']}.{parts['api-minor']}\n")
    if parts["reserved"]:
        sys.stdout.write(f"  reserved bits set (must be 0): 0x{parts['reserved']:x}\n")
    _out("-object", f"sev-guest,...,policy=0x{policy:x}")
    return 0


def _inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ovmf", required=True, metavar="FILE", help="the firmware image (-bios)")
    p.add_argument("--kernel", metavar="FILE", help="-kernel (measured with kernel-hashes=on)")
    p.add_argument("--initrd", metavar="FILE", help="-initrd")
    p.add_argument("--append", metavar="CMDLINE", help="-append")


def _platform_args(p: argparse.ArgumentParser, tik_required: bool) -> None:
    p.add_argument("--tik", metavar="FILE", required=tik_required, help="the 16-byte TIK")
    p.add_argument("--api-major", type=_byte, metavar="N", help="firmware API major (query-sev)")
    p.add_argument("--api-minor", type=_byte, metavar="N", help="firmware API minor (query-sev)")
    p.add_argument("--build", type=_byte, metavar="N", help="firmware build id (query-sev)")
    p.add_argument(
        "--policy",
        type=_policy,
        default=0x1,
        metavar="POLICY",
        help="guest policy: a number or flags such as NODBG,NOKS (default: 0x1, QEMU's)",
    )


def add_sev_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``qomctl sev ...`` to qomctl's command table."""
    sev = sub.add_parser("sev", help="SEV launch digests, measurements and policies")
    ops = sev.add_subparsers(dest="op", required=True)
    measure = ops.add_parser(
        "measure",
        help="print the launch digest (and with --tik, the measurement)",
        description="The SEV launch digest of a guest QEMU 7.2 starts with these inputs.",
    )
    _inputs(measure)
    _platform_args(measure, tik_required=False)
    measure.add_argument("--nonce", metavar="HEX", help="the 16-byte MNONCE, in hex")
    measure.set_defaults(func=cmd_measure)
    verify = ops.add_parser(
        "verify",
        help="check a query-sev-launch-measure answer against the expected inputs",
        epilog="Exit status: 0 match, 1 mismatch or error.",
    )
    _inputs(verify)
    _platform_args(verify, tik_required=True)
    verify.add_argument(
        "--measurement",
        required=True,
        metavar="BASE64|JSON|@FILE",
        help="the data of query-sev-launch-measure, its JSON reply, or @FILE holding either",
    )
    verify.set_defaults(func=cmd_verify)
    policy = ops.add_parser(
        "policy",
        help="decode a policy number, or encode flags (NODBG,NOKS,ES,NOSEND,DOMAIN,SEV,API=M.N)",
    )
    policy.add_argument("policy", metavar="POLICY", help="e.g. 0x5, or NODBG,ES,API=1.52")
    policy.set_defaults(func=cmd_policy)
