"""Glob patterns as QEMU's ``authz-list`` matches them: GLib's ``g_pattern_match_simple``.

The pattern language is small and unusual, and it is *not* :mod:`fnmatch`:

* ``*`` matches any run of characters, including none;
* ``?`` matches exactly one character -- one Unicode code point, which is
  one UTF-8 character, not one byte (``caf?`` matches ``café``);
* every other character matches only itself: ``[`` is not a class
  (``lab[1]*`` matches ``lab[1]x`` and not ``lab1x``) and ``\\`` escapes
  nothing (``a\\*`` matches ``a\\x``);
* the whole string must match, and case matters.

Two implementations live here, and the tests hold them to the real GLib:

:func:`g_pattern_match_simple`
    A line-by-line port of GLib 2.74's ``gpattern.c`` (pattern
    canonicalisation, the match-type shortcuts, the length pre-check and the
    recursive ``g_pattern_ph_match``), working on code points. It is the
    reference: slow, and obviously the same as QEMU.

:func:`compile_glob`
    Turns a pattern into a matcher closure once, for the decision path. The
    pattern is cut at each ``*`` into *segments*; since ``?`` and literals
    each match exactly one code point, every segment has a fixed length.
    The first segment must sit at the start of the string, the last at the
    end, and each one in between is found leftmost, left to right (for
    globs, the leftmost placement of a segment never loses a match that a
    later one would find). That needs no backtracking, so no pattern can
    make a decision slow, and the common shapes -- ``exact``, ``prefix*``,
    ``*suffix``, ``pre*suf`` -- become a single string comparison.

Both take ``str``; an identity is a string of code points, as the UTF-8 C
string QEMU holds.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "anchored_literal",
    "compile_glob",
    "g_pattern_match_simple",
    "has_wildcards",
    "literal_prefix",
]

# GLib's match types (gpattern.c), chosen by g_pattern_spec_new.
_MATCH_ALL = 0  # "*A?A*"
_MATCH_ALL_TAIL = 1  # "*A?AA": matched reversed
_MATCH_HEAD = 2  # "AAAA*"
_MATCH_TAIL = 3  # "*AAAA"
_MATCH_EXACT = 4  # "AAAAA"

_G_MAXUINT = 2**32 - 1


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _spec_new(pattern: str) -> tuple[int, str, int, int]:
    """``g_pattern_spec_new``: ``(match_type, pattern, min_length, max_length)``.

    Lengths are in UTF-8 bytes, as GLib counts them. Runs of ``*`` collapse
    to one, and ``?`` that precede a ``*`` move behind it (``?*x`` becomes
    ``*?x``, which matches the same strings).
    """
    out: list[str] = []
    min_length = max_length = 0
    hw_pos = tw_pos = hj_pos = tj_pos = -1
    follows_wildcard = False
    pending_jokers = 0
    i = 0  # position in the canonical pattern, counted in code points here
    for ch in pattern:
        if ch == "*":
            if follows_wildcard:
                continue
            follows_wildcard = True
            if hw_pos < 0:
                hw_pos = i
            tw_pos = i
        elif ch == "?":
            pending_jokers += 1
            min_length += 1
            max_length += 4  # the longest UTF-8 character
            continue
        else:
            while pending_jokers:
                out.append("?")
                if hj_pos < 0:
                    hj_pos = i
                tj_pos = i
                pending_jokers -= 1
                i += 1
            follows_wildcard = False
            width = _utf8_len(ch)
            min_length += width
            max_length += width
        out.append(ch)
        i += 1
    while pending_jokers:
        out.append("?")
        if hj_pos < 0:
            hj_pos = i
        tj_pos = i
        pending_jokers -= 1
        i += 1
    canon = "".join(out)
    seen_joker = hj_pos >= 0
    seen_wildcard = hw_pos >= 0
    more_wildcards = seen_wildcard and hw_pos != tw_pos
    if seen_wildcard:
        max_length = _G_MAXUINT
    if not seen_joker and not more_wildcards:
        if canon[:1] == "*":
            return _MATCH_TAIL, canon[1:], min_length, max_length
        if canon[-1:] == "*":
            return _MATCH_HEAD, canon[:-1], min_length, max_length
        if not seen_wildcard:
            return _MATCH_EXACT, canon, min_length, max_length
    length = len(canon)
    tw_dist = length - 1 - tw_pos
    tj_dist = length - 1 - tj_pos
    if seen_wildcard:
        match_type = _MATCH_ALL_TAIL if tw_dist > hw_pos else _MATCH_ALL
    else:
        match_type = _MATCH_ALL_TAIL if tj_dist > hj_pos else _MATCH_ALL
    if match_type == _MATCH_ALL_TAIL:
        canon = canon[::-1]  # g_utf8_strreverse: by characters
    return match_type, canon, min_length, max_length


def _ph_match(pattern: str, p: int, string: str, s: int, wildcard_reached: list[bool]) -> bool:
    """``g_pattern_ph_match`` from ``pattern[p:]`` against ``string[s:]``."""
    plen, slen = len(pattern), len(string)
    while p < plen:
        ch = pattern[p]
        p += 1
        if ch == "?":
            if s >= slen:
                return False
            s += 1
        elif ch == "*":
            wildcard_reached[0] = True
            while True:
                ch = pattern[p] if p < plen else ""
                p += 1
                if ch == "?":
                    if s >= slen:
                        return False
                    s += 1
                if ch not in ("*", "?"):
                    break
            if not ch:
                return True
            while True:
                next_wildcard_reached = [False]
                while True:
                    if s >= slen:
                        return False
                    if string[s] == ch:
                        break
                    s += 1
                s += 1
                if _ph_match(pattern, p, string, s, next_wildcard_reached):
                    return True
                if next_wildcard_reached[0]:
                    # The text up to the next '*' matched here and the rest
                    # did not: starting further right cannot help.
                    return False
                if s >= slen:
                    break
        else:
            if s < slen and ch == string[s]:
                s += 1
            else:
                return False
    return s >= slen


def g_pattern_match_simple(pattern: str, string: str) -> bool:
    """Whether ``string`` matches ``pattern``, exactly as GLib 2.74 decides.

    >>> g_pattern_match_simple("caf?", "café")
    True
    >>> g_pattern_match_simple("lab[1]*", "lab1x")
    False
    """
    match_type, canon, min_length, max_length = _spec_new(pattern)
    length = _utf8_len(string)
    if length < min_length or length > max_length:
        return False
    if match_type == _MATCH_ALL:
        return _ph_match(canon, 0, string, 0, [False])
    if match_type == _MATCH_ALL_TAIL:
        return _ph_match(canon, 0, string[::-1], 0, [False])
    if match_type == _MATCH_HEAD:
        return string.startswith(canon)
    if match_type == _MATCH_TAIL:
        return string.endswith(canon)
    return string == canon


# --- the compiled form ---------------------------------------------------------


def has_wildcards(pattern: str) -> bool:
    """Whether ``pattern`` contains ``*`` or ``?`` (otherwise it is a plain string)."""
    return "*" in pattern or "?" in pattern


def literal_prefix(pattern: str) -> str:
    """The text before the first wildcard: every match starts with it."""
    cut = len(pattern)
    for wildcard in ("*", "?"):
        at = pattern.find(wildcard)
        if 0 <= at < cut:
            cut = at
    return pattern[:cut]


def anchored_literal(pattern: str) -> tuple[bool, int, str] | None:
    """The longest literal run every match has at a fixed distance from one end.

    Returns ``(from_end, distance, literal)``: every string the pattern
    matches has ``literal`` starting ``distance`` code points after its
    start (``from_end`` false), or ending ``distance`` code points before
    its end (``from_end`` true). Only the text before the first ``*`` and
    after the last one is anchored like that (``?`` matches exactly one
    code point, so runs after a ``?`` are too). ``None`` when neither end
    has a literal, as for ``*``, ``?*`` or ``*abc*``.

    >>> anchored_literal("?admin3*")
    (False, 1, 'admin3')
    >>> anchored_literal("svc-*-9.example")
    (True, 0, '-9.example')
    """
    star = pattern.find("*")
    head = pattern if star < 0 else pattern[:star]
    best: tuple[bool, int, str] | None = None
    size = 0
    if "?" not in head:
        if head:
            best, size = (False, 0, head), len(head)
    else:
        at = 0
        for run in head.split("?"):
            if len(run) > size:
                best, size = (False, at, run), len(run)
            at += len(run) + 1
    if star < 0:
        return best
    tail = pattern[pattern.rfind("*") + 1 :]
    if len(tail) <= size:
        return best
    if "?" not in tail:
        return True, 0, tail
    at = 0
    for run in reversed(tail.split("?")):
        if len(run) > size:
            best, size = (True, at, run), len(run)
        at += len(run) + 1
    return best


class _Segment:
    """A piece of pattern between two ``*``: literals and ``?``, fixed length.

    ``pieces`` are the literal runs with their offsets; the ``?`` are the
    gaps between them.
    """

    __slots__ = ("length", "pieces")

    def __init__(self, text: str) -> None:
        self.length = len(text)
        pieces: list[tuple[int, str]] = []
        start = -1
        for i, ch in enumerate(text):
            if ch == "?":
                if start >= 0:
                    pieces.append((start, text[start:i]))
                    start = -1
            elif start < 0:
                start = i
        if start >= 0:
            pieces.append((start, text[start:]))
        self.pieces: Sequence[tuple[int, str]] = tuple(pieces)

    def match_at(self, string: str, pos: int) -> bool:
        """Whether the segment matches ``string`` at ``pos`` (room is checked by the caller)."""
        return all(string.startswith(lit, pos + off) for off, lit in self.pieces)

    def find(self, string: str, start: int, end: int) -> int:
        """The leftmost ``pos >= start`` where the segment matches within ``string[:end]``."""
        last = end - self.length  # the last position the segment fits at
        if start > last:
            return -1
        if not self.pieces:
            return start
        off0, lit0 = self.pieces[0]
        rest = self.pieces[1:]
        while start <= last:
            hit = string.find(lit0, start + off0, last + off0 + len(lit0))
            if hit < 0:
                return -1
            pos = hit - off0
            if all(string.startswith(lit, pos + off) for off, lit in rest):
                return pos
            start = pos + 1
        return -1


def compile_glob(pattern: str) -> Callable[[str], bool]:
    """A function deciding ``g_pattern_match_simple(pattern, s)`` for any ``s``.

    Compiling is cheap (no regular expression is built), and a decision
    never backtracks.
    """
    # Collapse runs of '*': "a**b" and "a*b" match the same strings.
    while "**" in pattern:
        pattern = pattern.replace("**", "*")
    if "?" not in pattern:
        if "*" not in pattern:
            return pattern.__eq__
        parts = pattern.split("*")
        if len(parts) == 2:
            head, tail = parts
            if not head and not tail:
                return _always
            if not tail:
                return lambda s: s.startswith(head)
            if not head:
                return lambda s: s.endswith(tail)
            need = len(head) + len(tail)
            return lambda s: len(s) >= need and s.startswith(head) and s.endswith(tail)
    segments = [_Segment(text) for text in pattern.split("*")]
    head_seg = segments[0]
    if len(segments) == 1:
        # Only '?' wildcards: one fixed-length segment covering the string.
        return lambda s: len(s) == head_seg.length and head_seg.match_at(s, 0)
    tail_seg = segments[-1]
    middle = segments[1:-1]
    minimum = sum(seg.length for seg in segments)

    def match(s: str) -> bool:
        n = len(s)
        if n < minimum or not head_seg.match_at(s, 0):
            return False
        end = n - tail_seg.length
        if not tail_seg.match_at(s, end):
            return False
        pos = head_seg.length
        for seg in middle:
            found = seg.find(s, pos, end)
            if found < 0:
                return False
            pos = found + seg.length
        return True

    return match


def _always(_s: str) -> bool:
    return True
