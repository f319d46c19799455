"""The Linux kernel key retention service, through its system calls.

glibc has no wrappers for ``add_key(2)`` and ``keyctl(2)`` (libkeyutils
does, but it is not always installed), so they are called through
``syscall(2)`` with ctypes. Key serials are ``int32``; the negative ones
are the special keyrings (:data:`KEY_SPEC_SESSION_KEYRING` and friends).

Payloads read here land in a ``bytearray`` that :func:`read_key` wipes
after copying it into the caller's result, so that the only copy left is
the one the caller owns (and is expected to wipe in turn).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

__all__ = [
    "KEY_SPEC_PROCESS_KEYRING",
    "KEY_SPEC_SESSION_KEYRING",
    "KEY_SPEC_THREAD_KEYRING",
    "KEY_SPEC_USER_KEYRING",
    "KEY_SPEC_USER_SESSION_KEYRING",
    "PERM_POSSESSOR_ALL_USER_READ",
    "KeyringError",
    "add_key",
    "join_session_keyring",
    "keyring_id",
    "link_key",
    "read_key",
    "revoke_key",
    "search_key",
    "set_permissions",
    "unlink_key",
    "wipe",
]

KEY_SPEC_THREAD_KEYRING = -1
KEY_SPEC_PROCESS_KEYRING = -2
KEY_SPEC_SESSION_KEYRING = -3
KEY_SPEC_USER_KEYRING = -4
KEY_SPEC_USER_SESSION_KEYRING = -5

_KEYCTL_REVOKE = 3
_KEYCTL_LINK = 8
_KEYCTL_SETPERM = 5
_KEYCTL_UNLINK = 9
_KEYCTL_SEARCH = 10
_KEYCTL_READ = 11
_KEYCTL_GET_KEYRING_ID = 0
_KEYCTL_JOIN_SESSION_KEYRING = 1

#: (add_key, keyctl) system call numbers per machine
_SYSCALLS = {
    "x86_64": (248, 250),
    "aarch64": (217, 219),
    "i386": (286, 288),
    "i686": (286, 288),
    "ppc64le": (269, 271),
    "s390x": (278, 280),
    "riscv64": (217, 219),
}


class KeyringError(OSError):
    """A key operation failed; ``errno`` and ``strerror`` are the kernel's."""


def _numbers() -> tuple[int, int]:
    machine = platform.machine()
    try:
        return _SYSCALLS[machine]
    except KeyError:
        raise KeyringError(errno.ENOSYS, f"no keyring system calls known for {machine}") from None


_libc: ctypes.CDLL | None = None


def _syscall(*args: object) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    result = int(_libc.syscall(*args))
    if result < 0:
        err = ctypes.get_errno()
        raise KeyringError(err, os.strerror(err))
    return result


def _keyctl(op: int, *args: object) -> int:
    return _syscall(ctypes.c_long(_numbers()[1]), ctypes.c_long(op), *args)


def read_key(serial: int) -> bytearray:
    """The payload of key ``serial`` (``KEYCTL_READ``), as QEMU reads it.

    The size is asked first; the key may grow between the two calls, so
    the read is repeated until the buffer was large enough.
    """
    size = _keyctl(_KEYCTL_READ, ctypes.c_long(serial), None, ctypes.c_size_t(0))
    while True:
        buf = (ctypes.c_char * max(size, 1))()
        try:
            got = _keyctl(_KEYCTL_READ, ctypes.c_long(serial), buf, ctypes.c_size_t(size))
            if got <= size:
                return bytearray(buf.raw[:got])
            size = got
        finally:
            ctypes.memset(buf, 0, len(buf))


def add_key(
    description: str,
    payload: bytes,
    keyring: int = KEY_SPEC_SESSION_KEYRING,
    key_type: str = "user",
) -> int:
    """Create (or update) a key in ``keyring``; returns its serial."""
    return _syscall(
        ctypes.c_long(_numbers()[0]),
        key_type.encode(),
        description.encode(),
        payload,
        ctypes.c_size_t(len(payload)),
        ctypes.c_long(keyring),
    )


def search_key(description: str, keyring: int, key_type: str = "user") -> int | None:
    """The serial of the ``key_type`` key called ``description`` in ``keyring``
    (searched recursively, as ``request_key`` would), or None."""
    try:
        return _keyctl(
            _KEYCTL_SEARCH, ctypes.c_long(keyring), key_type.encode(), description.encode(), 0
        )
    except KeyringError as exc:
        if exc.errno in (errno.ENOKEY, errno.EKEYREVOKED, errno.EKEYEXPIRED):
            return None
        raise


def revoke_key(serial: int) -> None:
    """Revoke a key: reading it fails with EKEYREVOKED from now on."""
    _keyctl(_KEYCTL_REVOKE, ctypes.c_long(serial))


#: view, read, search for the key's possessor and for its user (all of
#: setattr/link/write stay with the possessor): what another process of the
#: same user needs to read the key without possessing it
PERM_POSSESSOR_ALL_USER_READ = 0x3F0B0000


def set_permissions(serial: int, perm: int) -> None:
    """``KEYCTL_SETPERM``: who may view, read, write, search, link, setattr."""
    _keyctl(_KEYCTL_SETPERM, ctypes.c_long(serial), ctypes.c_ulong(perm))


def link_key(serial: int, keyring: int) -> None:
    """Link a key into another keyring as well."""
    _keyctl(_KEYCTL_LINK, ctypes.c_long(serial), ctypes.c_long(keyring))


def unlink_key(serial: int, keyring: int = KEY_SPEC_SESSION_KEYRING) -> None:
    """Remove a key from ``keyring`` (the key goes when nothing links it)."""
    _keyctl(_KEYCTL_UNLINK, ctypes.c_long(serial), ctypes.c_long(keyring))


def keyring_id(special: int) -> int:
    """The serial a special keyring id stands for, creating nothing.

    A process without a session keyring of its own gets the user-session
    keyring for ``KEY_SPEC_SESSION_KEYRING`` here, where ``add_key`` given
    the special id would make it a new, private session keyring that dies
    with it.
    """
    return _keyctl(_KEYCTL_GET_KEYRING_ID, ctypes.c_long(special), ctypes.c_long(0))


def join_session_keyring(name: str | None = None) -> int:
    """Give this process a new session keyring (anonymous when ``name`` is None).

    Children inherit it, so keys added there are visible to programs this
    process starts, and to nothing else.
    """
    return _keyctl(_KEYCTL_JOIN_SESSION_KEYRING, name.encode() if name is not None else None)


def wipe(buf: bytearray) -> None:
    """Overwrite a buffer we own, so a decoded payload does not linger."""
    buf[:] = bytes(len(buf))
