"""The SEV guest policy (``GCTX.POLICY``, AMD SEV API section 3): 32 bits,
encoded and decoded.

Bits 0-5 are flags the firmware enforces for the guest's life; bits 16-23
and 24-31 are the minimum firmware API version (major, minor) the guest
may run on; bits 6-15 are reserved and must be zero::

    >>> describe_policy(0x5)
    '0x00000005: NODBG, ES'
    >>> encode_policy(["NODBG", "NOKS"], api_major=1, api_minor=52)
    872480771
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "POLICY_FLAGS",
    "SEV_POLICY_DOMAIN",
    "SEV_POLICY_ES",
    "SEV_POLICY_NODBG",
    "SEV_POLICY_NOKS",
    "SEV_POLICY_NOSEND",
    "SEV_POLICY_SEV",
    "PolicyError",
    "decode_policy",
    "describe_policy",
    "encode_policy",
    "parse_policy",
]

SEV_POLICY_NODBG = 0x1
SEV_POLICY_NOKS = 0x2
SEV_POLICY_ES = 0x4
SEV_POLICY_NOSEND = 0x8
SEV_POLICY_DOMAIN = 0x10
SEV_POLICY_SEV = 0x20
_RESERVED = 0xFFC0

#: (name, bit, meaning), in bit order
POLICY_FLAGS: tuple[tuple[str, int, str], ...] = (
    ("NODBG", SEV_POLICY_NODBG, "debugging the guest is not allowed"),
    ("NOKS", SEV_POLICY_NOKS, "sharing keys with other guests is not allowed"),
    ("ES", SEV_POLICY_ES, "SEV-ES is required"),
    ("NOSEND", SEV_POLICY_NOSEND, "sending the guest to another platform is not allowed"),
    ("DOMAIN", SEV_POLICY_DOMAIN, "the guest must not be sent outside the domain"),
    ("SEV", SEV_POLICY_SEV, "the guest must not be sent to a platform without SEV"),
)


class PolicyError(ValueError):
    """A policy that cannot be encoded or parsed."""


def decode_policy(policy: int) -> dict[str, object]:
    """The policy's parts: ``flags`` (names), ``api-major``, ``api-minor``, ``reserved``."""
    if not 0 <= policy <= 0xFFFFFFFF:
        raise PolicyError(f"policy {policy} is not a 32-bit value")
    return {
        "policy": policy,
        "flags": [name for name, bit, _ in POLICY_FLAGS if policy & bit],
        "api-major": (policy >> 16) & 0xFF,
        "api-minor": (policy >> 24) & 0xFF,
        "reserved": policy & _RESERVED,
    }


def encode_policy(flags: Iterable[str] = (), api_major: int = 0, api_minor: int = 0) -> int:
    """The policy word for flag names (any case) and a minimum API version."""
    bits = {name: bit for name, bit, _ in POLICY_FLAGS}
    policy = 0
    for flag in flags:
        bit = bits.get(flag.strip().upper())
        if bit is None:
            raise PolicyError(f"unknown policy flag '{flag}' (known: {', '.join(bits)})")
        policy |= bit
    for name, value in (("api-major", api_major), ("api-minor", api_minor)):
        if not 0 <= value <= 0xFF:
            raise PolicyError(f"{name} {value} is not in 0..255")
    return policy | api_major << 16 | api_minor << 24


def describe_policy(policy: int) -> str:
    """One line for a person: the value in hex and what it means."""
    parts = decode_policy(policy)
    flags = parts["flags"]
    assert isinstance(flags, list)
    words = list(flags)
    if parts["api-major"] or parts["api-minor"]:
        words.append(f"API >= {parts['api-major']}.{parts['api-minor']}")
    if parts["reserved"]:
        words.append(f"reserved bits 0x{parts['reserved']:x} set")
    return f"0x{policy:08x}: {', '.join(words) if words else 'no restrictions'}"


def parse_policy(text: str) -> int:
    """A policy given as a number (``5``, ``0x5``) or as flags (``NODBG,ES``,
    optionally with ``API=1.52``)."""
    text = text.strip()
    try:
        value = int(text, 0)
    except ValueError:
        pass
    else:
        decode_policy(value)
        return value
    flags: list[str] = []
    major = minor = 0
    for word in filter(None, (w.strip() for w in text.replace("|", ",").split(","))):
        if word.upper().startswith("API="):
            try:
                major_text, _, minor_text = word[4:].partition(".")
                major, minor = int(major_text), int(minor_text or "0")
            except ValueError:
                raise PolicyError(f"bad API version '{word[4:]}' (want MAJOR.MINOR)") from None
        else:
            flags.append(word)
    return encode_policy(flags, major, minor)
