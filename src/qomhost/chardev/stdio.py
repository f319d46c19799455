"""``chardev-stdio``: the process's standard input and output."""

from __future__ import annotations

import errno
import os

from qomhost.chardev.base import Chardev

__all__ = ["ChardevStdio"]


class ChardevStdio(Chardev):
    """Reads fd 0 and writes fd 1.

    epoll refuses regular files and ``/dev/null``; standard input redirected
    from one is read from a bottom half instead, which is equivalent since
    such a file is always readable.
    """

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self._in_fd = 0
        self._out_fd = 1
        self._polled = False
        self.is_open = True

    def start(self) -> None:
        assert self.context is not None
        os.set_blocking(self._in_fd, False)
        try:
            self.context.set_fd_handler(self._in_fd, self._on_readable)
            self._polled = True
        except OSError as exc:
            if exc.errno != errno.EPERM:
                raise
            self.context.schedule(self._read_file)

    def _read_chunk(self) -> bytes | None:
        try:
            return os.read(self._in_fd, 1 << 16)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def _on_readable(self) -> None:
        data = self._read_chunk()
        if data is None:
            return
        if not data:
            # End of input: QEMU stops reading but keeps running.
            assert self.context is not None
            self.context.set_fd_handler(self._in_fd, None)
            self._polled = False
            return
        self._received(data)

    def _read_file(self) -> None:
        data = self._read_chunk()
        if data:
            self._received(data)
            assert self.context is not None
            self.context.schedule(self._read_file)

    def _watch_output(self, on: bool) -> None:
        # Standard output is written synchronously: QEMU blocks on it too,
        # and a pipe reader is always this process's parent or a test.
        if on:
            self.flush_blocking()

    def finalize(self) -> None:
        if self._polled and self.context is not None:
            self.context.set_fd_handler(self._in_fd, None)
            self._polled = False
