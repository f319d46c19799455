"""The HMP line editor, echoing keystrokes exactly as QEMU's readline does.

QEMU's monitor echoes what it receives and redraws the edited line after
every key: it moves the cursor back over the old text (``ESC [ D``),
prints the whole line and clears the rest (``ESC [ K``). Scripts that
read a monitor on a pipe see those bytes, so qomhost sends the same ones.

:class:`LineEditor` is sans-I/O: :meth:`LineEditor.feed_iter` takes input
bytes and returns ``(echo, line)`` pieces: what to send back before each
completed line (the command's output goes between them).
"""

from __future__ import annotations

__all__ = ["LineEditor"]

_LEFT = "\033[D"
_RIGHT = "\033[C"
_CLEAR_EOL = "\033[K"

_NORMAL, _ESC, _CSI, _SS3 = range(4)


class LineEditor:
    """One monitor's edit buffer, cursor and history."""

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.cursor = 0
        self._shown: list[str] = []
        self._shown_cursor = 0
        self._state = _NORMAL
        self._esc_param = 0
        self.history: list[str] = []
        self._hist_index = -1

    def feed_iter(self, data: bytes) -> list[tuple[str, str | None]]:
        """Process input; return ``(echo, completed line or None)`` pieces in order."""
        pieces: list[tuple[str, str | None]] = []
        out: list[str] = []
        for ch in data.decode("utf-8", "surrogateescape"):
            line = self._key(ch, out)
            if line is not None:
                pieces.append(("".join(out), line))
                out = []
        if out:
            pieces.append(("".join(out), None))
        return pieces

    def _key(self, ch: str, out: list[str]) -> str | None:
        code = ord(ch)
        if self._state == _ESC:
            if ch == "[":
                self._state, self._esc_param = _CSI, 0
            elif ch == "O":
                self._state, self._esc_param = _SS3, 0
            else:
                self._state = _NORMAL
            return None
        if self._state in (_CSI, _SS3):
            if self._state == _CSI and ch.isdigit():
                self._esc_param = self._esc_param * 10 + int(ch)
                return None
            self._state = _NORMAL
            self._escape(ch, out)
            return None
        if code in (10, 13):
            line = "".join(self.buf)
            if line and (not self.history or self.history[-1] != line):
                self.history.append(line)
            self._hist_index = -1
            out.append("\n")
            self.buf, self.cursor = [], 0
            self._shown, self._shown_cursor = [], 0
            return line
        if code == 27:
            self._state = _ESC
        elif code == 1:
            self.cursor = 0
        elif code == 5:
            self.cursor = len(self.buf)
        elif code == 4:
            if self.cursor < len(self.buf):
                del self.buf[self.cursor]
        elif code in (8, 127):
            if self.cursor > 0:
                self.cursor -= 1
                del self.buf[self.cursor]
        elif code == 23:
            self._backward_word()
        elif code == 16:
            self._history(-1)
        elif code == 14:
            self._history(1)
        elif code >= 32:
            self.buf.insert(self.cursor, ch)
            self.cursor += 1
        self._redraw(out)
        return None

    def _escape(self, ch: str, out: list[str]) -> None:
        if ch == "D" and self.cursor > 0:
            self.cursor -= 1
        elif ch == "C" and self.cursor < len(self.buf):
            self.cursor += 1
        elif ch == "A":
            self._history(-1)
        elif ch == "B":
            self._history(1)
        elif ch in "HF" or (ch == "~" and self._esc_param in (1, 4, 7, 8)):
            home = ch == "H" or self._esc_param in (1, 7)
            self.cursor = 0 if home else len(self.buf)
        elif ch == "~" and self._esc_param == 3 and self.cursor < len(self.buf):
            del self.buf[self.cursor]
        self._redraw(out)

    def _backward_word(self) -> None:
        start = self.cursor
        while start > 0 and self.buf[start - 1] == " ":
            start -= 1
        while start > 0 and self.buf[start - 1] != " ":
            start -= 1
        del self.buf[start : self.cursor]
        self.cursor = start

    def _history(self, step: int) -> None:
        if not self.history:
            return
        if self._hist_index == -1:
            if step > 0:
                return
            self._hist_index = len(self.history) - 1
        else:
            self._hist_index += step
            if self._hist_index < 0:
                self._hist_index = 0
            elif self._hist_index >= len(self.history):
                self._hist_index = -1
                self.buf, self.cursor = [], 0
                return
        self.buf = list(self.history[self._hist_index])
        self.cursor = len(self.buf)

    def _redraw(self, out: list[str]) -> None:
        if self.buf != self._shown:
            out.append(_LEFT * self._shown_cursor)
            out.append("".join(self.buf))
            out.append(_CLEAR_EOL)
            self._shown = list(self.buf)
            self._shown_cursor = len(self.buf)
        if self.cursor != self._shown_cursor:
            delta = self.cursor - self._shown_cursor
            out.append(_RIGHT * delta if delta > 0 else _LEFT * -delta)
            self._shown_cursor = self.cursor
