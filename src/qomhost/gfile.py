"""Reading files with the messages GLib's ``g_file_get_contents`` gives.

QEMU reads secrets, authz rule files and TLS credentials through GLib, so
its errors quote GLib: ``Failed to open file “/x”: No such file or
directory``. Objects that read files call :func:`read_file_contents`.
"""

from __future__ import annotations

import os

__all__ = ["read_file_contents"]


def read_file_contents(path: str) -> bytes:
    """Read a whole file, failing with GLib's ``g_file_get_contents`` wording."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(f"Failed to open file “{path}”: {os.strerror(exc.errno or 0)}") from None
    try:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError as exc:
                raise OSError(
                    f"Error reading file “{path}”: {os.strerror(exc.errno or 0)}"
                ) from None
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)
