"""The HMP line editor, echoing keystrokes exactly as QEMU's readline does.

QEMU's monitor echoes what it receives and redraws the edited line after
every byte: it moves the cursor back over the old text (``ESC [ D``),
prints the whole line and clears the rest (``ESC [ K``). Scripts that
read a monitor on a pipe see those bytes, so qomhost sends the same ones.
Like QEMU's, the editor works on bytes (a UTF-8 character is several),
knows the same keys and no others, keeps the same history, and completes
command names on Tab.

:class:`LineEditor` is sans-I/O: :meth:`LineEditor.feed_iter` takes input
bytes and returns ``(echo, line)`` pieces: what to send back before each
completed line (the command's output goes between them).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["LineEditor"]

_LEFT = b"\033[D"
_RIGHT = b"\033[C"
_CLEAR_EOL = b"\033[K"
#: QEMU keeps this many history entries
MAX_HISTORY = 64
#: the longest line QEMU's editor holds; further bytes are dropped unechoed
#: (READLINE_CMD_BUF_SIZE), which also keeps a hostile client from growing
#: the buffer, and the redraw after each byte, without bound
MAX_LINE = 4095

_NORMAL, _ESC, _CSI, _SS3 = range(4)

#: given the text before the cursor: (length of the word being completed, candidates)
Completer = Callable[[str], tuple[int, list[str]]]


def _is_space(byte: int) -> bool:
    return byte in b" \t\n\v\f\r"


class LineEditor:
    """One monitor's edit buffer, cursor and history.

    :param prompt: printed again after a list of completions.
    :param completer: finds completions for the text before the cursor.
    """

    def __init__(self, prompt: str = "(qemu) ", completer: Completer | None = None) -> None:
        self.prompt = prompt
        self.completer = completer
        self.buf = bytearray()
        self.cursor = 0
        self._shown = bytearray()
        self._shown_cursor = 0
        self._state = _NORMAL
        self._esc_param = 0
        self.history: list[bytes] = []
        #: the history entry being shown, or -1 for a new line
        self._hist_entry = -1

    def feed_iter(self, data: bytes) -> list[tuple[bytes, str | None]]:
        """Process input; return ``(echo, completed line or None)`` pieces in order."""
        pieces: list[tuple[bytes, str | None]] = []
        out = bytearray()
        for byte in data:
            line = self._key(byte, out)
            if line is not None:
                pieces.append((bytes(out), line))
                out = bytearray()
        if out:
            pieces.append((bytes(out), None))
        return pieces

    def _key(self, byte: int, out: bytearray) -> str | None:
        state = self._state
        if state == _ESC:
            if byte == ord("["):
                self._state, self._esc_param = _CSI, 0
            elif byte == ord("O"):
                self._state, self._esc_param = _SS3, 0
            else:
                self._state = _NORMAL
        elif state == _CSI:
            self._csi(byte)
        elif state == _SS3:
            self._state = _NORMAL
            if byte == ord("F"):
                self.cursor = len(self.buf)
            elif byte == ord("H"):
                self.cursor = 0
        elif byte in (10, 13):
            return self._enter(out)
        else:
            self._normal(byte, out)
        self._redraw(out)
        return None

    def _normal(self, byte: int, out: bytearray) -> None:
        if byte == 1:
            self.cursor = 0
        elif byte == 4:
            self._delete()
        elif byte == 5:
            self.cursor = len(self.buf)
        elif byte == 9:
            self._complete(out)
        elif byte == 23:
            self._backward_word()
        elif byte == 27:
            self._state = _ESC
        elif byte in (8, 127):
            if self.cursor > 0:
                self.cursor -= 1
                del self.buf[self.cursor]
        elif byte == 155:
            self._state, self._esc_param = _CSI, 0
        elif byte >= 32 and len(self.buf) < MAX_LINE:
            self.buf.insert(self.cursor, byte)
            self.cursor += 1

    def _csi(self, byte: int) -> None:
        if ord("0") <= byte <= ord("9"):
            self._esc_param = self._esc_param * 10 + byte - ord("0")
            return
        self._state = _NORMAL
        if byte in b"AF":
            self._history_up()
        elif byte in b"BE":
            self._history_down()
        elif byte == ord("C"):
            self.cursor = min(self.cursor + 1, len(self.buf))
        elif byte == ord("D"):
            self.cursor = max(self.cursor - 1, 0)
        elif byte == ord("~"):
            if self._esc_param == 1:
                self.cursor = 0
            elif self._esc_param == 3:
                self._delete()
            elif self._esc_param == 4:
                self.cursor = len(self.buf)

    def _enter(self, out: bytearray) -> str:
        line = bytes(self.buf)
        self._hist_add(line)
        out += b"\n"
        self.buf, self.cursor = bytearray(), 0
        self._shown, self._shown_cursor = bytearray(), 0
        return line.decode("utf-8", "surrogateescape")

    def _delete(self) -> None:
        if self.cursor < len(self.buf):
            del self.buf[self.cursor]

    def _backward_word(self) -> None:
        if self.cursor == 0:
            return
        start = self.cursor - 1
        while start >= 0 and _is_space(self.buf[start]):
            start -= 1
        while start >= 0 and not _is_space(self.buf[start]):
            start -= 1
        start += 1
        del self.buf[start : self.cursor]
        self.cursor = start

    # --- history, as QEMU keeps it -----------------------------------------
    def _hist_add(self, line: bytes) -> None:
        if not line:
            return
        if line in self.history:
            # An entry used again moves to the end.
            self.history.remove(line)
        elif len(self.history) == MAX_HISTORY:
            del self.history[0]
        self.history.append(line)
        self._hist_entry = -1

    def _history_up(self) -> None:
        if self._hist_entry == 0:
            return
        if self._hist_entry == -1:
            self._hist_entry = len(self.history)
        self._hist_entry -= 1
        if self._hist_entry >= 0:
            self.buf = bytearray(self.history[self._hist_entry])
            self.cursor = len(self.buf)

    def _history_down(self) -> None:
        if self._hist_entry == -1:
            return
        self._hist_entry += 1
        if self._hist_entry < len(self.history):
            self.buf = bytearray(self.history[self._hist_entry])
        else:
            self.buf = bytearray()
            self._hist_entry = -1
        self.cursor = len(self.buf)

    # --- completion -----------------------------------------------------------
    def _complete(self, out: bytearray) -> None:
        if self.completer is None:
            return
        before = bytes(self.buf[: self.cursor]).decode("utf-8", "surrogateescape")
        index, candidates = self.completer(before)
        if not candidates:
            return
        if len(candidates) == 1:
            word = candidates[0].encode("utf-8", "surrogateescape")
            self._insert(word[index:])
            if word and not word.endswith(b"/"):
                self._insert(b" ")
            return
        words = sorted(c.encode("utf-8", "surrogateescape") for c in candidates)
        prefix = words[0]
        for word in words[1:]:
            while not word.startswith(prefix):
                prefix = prefix[:-1]
        out += b"\n"
        self._insert(prefix[index:])
        width = min(max(max(len(w) for w in words) + 2, 10), 80)
        columns = 80 // width
        for i, word in enumerate(words):
            out += word.ljust(width)
            if (i + 1) % columns == 0 or i == len(words) - 1:
                out += b"\n"
        out += self.prompt.encode()
        # The prompt starts a fresh line: the whole buffer is drawn again.
        self._shown, self._shown_cursor = bytearray(), 0

    def _insert(self, data: bytes) -> None:
        # byte by byte in QEMU, each dropped once the line is full
        data = data[: MAX_LINE - len(self.buf)]
        self.buf[self.cursor : self.cursor] = data
        self.cursor += len(data)

    def _redraw(self, out: bytearray) -> None:
        if self.buf != self._shown:
            out += _LEFT * self._shown_cursor
            out += self.buf
            out += _CLEAR_EOL
            self._shown = bytearray(self.buf)
            self._shown_cursor = len(self.buf)
        if self.cursor != self._shown_cursor:
            delta = self.cursor - self._shown_cursor
            out += _RIGHT * delta if delta > 0 else _LEFT * -delta
            self._shown_cursor = self.cursor
