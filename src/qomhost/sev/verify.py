"""Checking a guest's launch measurement against what its owner expects.

A measurement is one HMAC over every input, so a mismatch cannot say by
itself which input differs. :func:`verify_measurement` therefore tries the
usual suspects one at a time (the kernel hashes left out, no initrd,
another policy, another firmware API version or build) and names each one
that reproduces the platform's value; if none does, the difference is in
the TIK or in the bytes of the firmware, kernel, initrd or command line.
"""

from __future__ import annotations

import hashlib
import hmac

from qomhost.sev.hashes import build_hashes_table
from qomhost.sev.measure import LaunchDigest, launch_measure, split_blob
from qomhost.sev.policy import POLICY_FLAGS, describe_policy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Matcher = Callable[[bytes, int, int, int, int], bool]

__all__ = ["UNEXPLAINED", "Verdict", "verify_measurement"]

UNEXPLAINED = (
    "no single input explains it: the TIK, or the bytes of the firmware, kernel, "
    "initrd or command line, differ (a measurement cannot tell which)"
)
_EMPTY = hashlib.sha256(b"").digest()
_FLAG_BITS = sum(bit for _name, bit, _text in POLICY_FLAGS)


class Verdict:
    """The outcome: ``ok``, the expected and received MEASURE, and ``suspects``
    (sentences naming what reproduces the received value)."""

    __slots__ = ("expected", "ok", "received", "suspects")

    def __init__(self, ok: bool, expected: bytes, received: bytes, suspects: list[str]) -> None:
        self.ok = ok
        self.expected = expected
        self.received = received
        self.suspects = suspects


def verify_measurement(
    blob: bytes,
    digest: LaunchDigest,
    tik: bytes,
    api_major: int,
    api_minor: int,
    build: int,
    policy: int,
) -> Verdict:
    """Compare a ``query-sev-launch-measure`` blob with the expected inputs."""
    received, mnonce = split_blob(blob)

    def matches(ld: bytes, major: int, minor: int, bld: int, pol: int) -> bool:
        value = launch_measure(ld, tik, major, minor, bld, pol, mnonce)
        return hmac.compare_digest(value, received)

    expected = launch_measure(digest.digest, tik, api_major, api_minor, build, policy, mnonce)
    if hmac.compare_digest(expected, received):
        return Verdict(True, expected, received, [])
    suspects: list[str] = []
    version = (api_major, api_minor, build)
    if digest.table is not None:
        if matches(digest.firmware_hash, *version, policy):
            suspects.append(
                "the kernel hashes: the guest was measured without them "
                "(kernel-hashes=off, or no -kernel)"
            )
        assert digest.kernel_hash is not None and digest.cmdline_hash is not None
        if digest.initrd_hash != _EMPTY and digest.firmware_state is not None:
            table = build_hashes_table(digest.kernel_hash, _EMPTY, digest.cmdline_hash)
            if matches(digest.with_table(table), *version, policy):
                suspects.append("the initrd: the guest was started without one")
    for flags in range(_FLAG_BITS + 1):
        other = (policy & ~_FLAG_BITS) | flags
        if other != policy and matches(digest.digest, *version, other):
            suspects.append(f"the policy: the guest runs with {describe_policy(other)}")
    if not suspects:
        suspects += _other_firmware(digest.digest, version, policy, matches)
    return Verdict(False, expected, received, suspects)


def _other_firmware(
    ld: bytes, version: tuple[int, int, int], policy: int, matches: Matcher
) -> list[str]:
    """Another SEV firmware version or build (2^18 HMACs, a fraction of a second)."""
    for major in range(4):
        for minor in range(256):
            for build in range(256):
                if (major, minor, build) != version and matches(ld, major, minor, build, policy):
                    return [
                        f"the platform's firmware: API {major}.{minor} build {build} "
                        "(query-sev shows it)"
                    ]
    return []
