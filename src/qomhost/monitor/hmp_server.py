"""An HMP monitor on a chardev: line editing, prompt, and command output."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qomhost.monitor.hmp import complete_command_line, run_hmp_command
from qomhost.monitor.readline import LineEditor

if TYPE_CHECKING:
    from qomhost.chardev.base import Chardev
    from qomhost.host import Host

__all__ = ["HmpMonitor"]

PROMPT = "(qemu) "


class HmpMonitor:
    """Serves the human monitor on ``chardev``, echoing as QEMU's readline does."""

    def __init__(self, host: Host, chardev: Chardev) -> None:
        self.host = host
        self.chardev = chardev
        self.editor = LineEditor(PROMPT, complete_command_line)
        chardev.attach(host.context, self)

    def _print(self, text: str) -> None:
        self.chardev.write(text.replace("\n", "\r\n").encode("utf-8", "surrogateescape"))

    def chr_opened(self) -> None:
        from qomhost.host import QEMU_VERSION

        v = QEMU_VERSION
        self.editor = LineEditor(PROMPT, complete_command_line)
        self._print(
            f"QEMU {v['major']}.{v['minor']}.{v['micro']} monitor - "
            "type 'help' for more information\n"
        )
        self._print(PROMPT)

    def chr_read(self, data: bytes) -> None:
        for echo, line in self.editor.feed_iter(data):
            if echo:
                self.chardev.write(echo.replace(b"\n", b"\r\n"))
            if line is None:
                continue
            output = run_hmp_command(self.host, line)
            if output:
                self.chardev.write(output.encode("utf-8", "surrogateescape"))
            if self.host.shutdown_reason is not None:
                return
            self._print(PROMPT)

    def chr_closed(self) -> None:
        self.editor = LineEditor(PROMPT, complete_command_line)
