"""QEMU's JSON dialect: parsing, QMP stream splitting and output.

QEMU 7.2 reads JSON through a byte-level lexer, a "streamer" that groups
tokens into top-level values by counting brackets, and a parser that turns
one group into a QObject.  Its dialect differs from RFC 8259 in ways that
clients can see:

* strings may also be single-quoted, and ``\\'`` is a valid escape;
* input is *modified* UTF-8: ``C0 80`` is U+0000, noncharacters, surrogates
  and overlong forms are rejected;
* integers stay integers within int64 or uint64 range, other numbers are
  doubles (``-9223372036854775809`` becomes ``-9.2233720368547758e+18``);
* every malformed input has one specific message (``JSON parse error, ...``),
  and after an error the lexer skips input until something that looks like
  a resynchronisation point (a structural character or a control byte);
* a message may nest at most 1024 brackets, hold at most 2**21 tokens and
  64 MiB of token text.

Output (``qobject_to_json``) escapes everything outside printable ASCII as
``\\uXXXX`` with upper-case hex, prints doubles with ``%.17g`` and walks
dictionaries in QDict's hash-table order, not insertion order.

Python values stand for QObjects: ``dict`` (QDict, insertion order is the
QDict insertion order), ``list`` (QList), ``str`` (QString; U+0000 is kept
as ``"\\x00"``, see :func:`to_c_bytes`), ``int``/``float`` (QNum), ``bool``
(QBool) and ``None`` (QNull).

Public API: :func:`parse_json`, :class:`JsonStreamParser`, :func:`dump_json`,
:func:`qdict_order` and :func:`to_c_bytes`.
"""

from __future__ import annotations

from itertools import repeat

from qomhost.errors import JsonParseError

# Start-up imports neither ``typing`` nor ``re``: either would cost a large
# share of a whole qomhost start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Callable, Iterable, Iterator
    from typing import AnyStr, Final

__all__ = [
    "MAX_NESTING",
    "MAX_TOKEN_COUNT",
    "MAX_TOKEN_SIZE",
    "JsonStreamParser",
    "dump_json",
    "parse_json",
    "qdict_order",
    "to_c_bytes",
]

#: Most bytes one token, and all tokens of one message together, may hold.
MAX_TOKEN_SIZE: Final = 64 << 20
#: Most tokens one message may hold.
MAX_TOKEN_COUNT: Final = 2 << 20
#: Most open brackets and braces one message may have at a time.
MAX_NESTING: Final = 1 << 10

_INT64_MIN: Final = -(1 << 63)
_UINT64_LIMIT: Final = 1 << 64

# ---------------------------------------------------------------------------
# Lexer tables
#
# Lexer states.  START is the only state between tokens; RECOVERY skips input
# after an error.
(
    _START,
    _RECOVERY,
    _DQ,
    _DQ_ESC,
    _SQ,
    _SQ_ESC,
    _ZERO,
    _SIGN,
    _DIGITS,
    _MANTISSA,
    _MANTISSA_DIGITS,
    _EXP_E,
    _EXP_SIGN,
    _EXP_DIGITS,
    _KEYWORD,
) = range(15)

# Token types.
(
    _LCURLY,
    _RCURLY,
    _LSQUARE,
    _RSQUARE,
    _COLON,
    _COMMA,
    _INTEGER,
    _FLOAT,
    _WORD,
    _STRING,
    _OVERSIZE,  # a token cut off because it grew beyond MAX_TOKEN_SIZE
) = range(1, 12)

# Table entries: a state number (< 16) means "append the byte and go there";
# the others are actions.
_EMIT: Final = 16  # + type: append the byte, the token is complete
_LOOK: Final = 32  # + type: the token ended *before* this byte, look at it again
_ERR: Final = 48  # append the byte and report the token as stray
_RESYNC: Final = 49  # leave recovery, look at this byte again in START

_DIGIT_BYTES: Final = b"0123456789"
_WS_BYTES: Final = b" \t\r\n"
_STRUCTURAL: Final = {
    ord("{"): _LCURLY,
    ord("}"): _RCURLY,
    ord("["): _LSQUARE,
    ord("]"): _RSQUARE,
    ord(":"): _COLON,
    ord(","): _COMMA,
}


def _build_table() -> list[list[int]]:
    table = [[_ERR] * 256 for _ in range(15)]

    def put(state: int, chars: Iterable[int], action: int) -> None:
        for c in chars:
            table[state][c] = action

    def terminal(state: int, token: int) -> None:
        # Any byte not listed later ends the token without being part of it.
        put(state, range(256), _LOOK + token)

    put(_START, _WS_BYTES, _START)
    for c, token in _STRUCTURAL.items():
        table[_START][c] = _EMIT + token
    put(_START, b'"', _DQ)
    put(_START, b"'", _SQ)
    put(_START, b"0", _ZERO)
    put(_START, b"123456789", _DIGITS)
    put(_START, b"-", _SIGN)
    put(_START, range(ord("a"), ord("z") + 1), _KEYWORD)

    # Recovery stops at line ends and other control bytes (except tab), at
    # bytes that never occur in UTF-8, and at structural characters.
    put(_RECOVERY, range(256), _RESYNC)
    put(_RECOVERY, range(0x20, 0xFE), _RECOVERY)
    put(_RECOVERY, b"\t", _RECOVERY)
    put(_RECOVERY, b"{}[]:,", _RESYNC)

    # Strings accept any byte 0x20..0xFD; decoding is left to the parser.
    for body, esc, quote in ((_DQ, _DQ_ESC, b'"'), (_SQ, _SQ_ESC, b"'")):
        put(body, range(0x20, 0xFE), body)
        put(body, b"\\", esc)
        put(body, quote, _EMIT + _STRING)
        put(esc, range(0x20, 0xFE), body)

    # Numbers.  A leading zero takes no exponent: "0e1" is "0" then "e1".
    terminal(_ZERO, _INTEGER)
    put(_ZERO, _DIGIT_BYTES, _ERR)
    put(_ZERO, b".", _MANTISSA)
    put(_SIGN, b"0", _ZERO)
    put(_SIGN, b"123456789", _DIGITS)
    terminal(_DIGITS, _INTEGER)
    put(_DIGITS, _DIGIT_BYTES, _DIGITS)
    put(_DIGITS, b"eE", _EXP_E)
    put(_DIGITS, b".", _MANTISSA)
    put(_MANTISSA, _DIGIT_BYTES, _MANTISSA_DIGITS)
    terminal(_MANTISSA_DIGITS, _FLOAT)
    put(_MANTISSA_DIGITS, _DIGIT_BYTES, _MANTISSA_DIGITS)
    put(_MANTISSA_DIGITS, b"eE", _EXP_E)
    put(_EXP_E, b"+-", _EXP_SIGN)
    put(_EXP_E, _DIGIT_BYTES, _EXP_DIGITS)
    put(_EXP_SIGN, _DIGIT_BYTES, _EXP_DIGITS)
    terminal(_EXP_DIGITS, _FLOAT)
    put(_EXP_DIGITS, _DIGIT_BYTES, _EXP_DIGITS)

    # Any run of lower-case letters is a keyword; the parser judges it.
    terminal(_KEYWORD, _WORD)
    put(_KEYWORD, range(ord("a"), ord("z") + 1), _KEYWORD)
    return table


# The exact path's table and patterns are built on first use (see
# _prepare_exact): well-formed QMP input and output never need them.
_TABLE: list[list[int]]
# Runs of bytes that keep the lexer in the same state, matched in one go for
# speed; the byte after a run goes through the table.
_RUNS: dict[int, re.Pattern[bytes]]
_RECOVERY_RUN: re.Pattern[bytes]
_WS_RUN: re.Pattern[bytes]
# Complete string tokens, for the common case of a string inside one chunk.
_DQ_TOKEN: re.Pattern[bytes]
_SQ_TOKEN: re.Pattern[bytes]
_NONCHAR_RE: re.Pattern[str]
_HEX4: re.Pattern[bytes]
_NOT_PLAIN_RE: re.Pattern[str]
_ESCAPE_RE: re.Pattern[str]
_SURROGATE_RE: re.Pattern[str]
_exact_ready = False


def _prepare_exact() -> None:
    """Build the lexer table and compile the patterns of the exact paths."""
    global _TABLE, _RUNS, _RECOVERY_RUN, _WS_RUN, _DQ_TOKEN, _SQ_TOKEN, _NONCHAR_RE, _HEX4
    global _NOT_PLAIN_RE, _ESCAPE_RE, _SURROGATE_RE, _exact_ready
    import re

    _TABLE = _build_table()
    body = rb"[^%(q)s\\\x00-\x1f\xfe\xff]*(?:\\[\x20-\xfd][^%(q)s\\\x00-\x1f\xfe\xff]*)*"
    dq_body = body % {b"q": b'"'}
    sq_body = body % {b"q": b"'"}
    _RUNS = {
        _DQ: re.compile(dq_body),
        _SQ: re.compile(sq_body),
        _DIGITS: re.compile(rb"[0-9]*"),
        _MANTISSA_DIGITS: re.compile(rb"[0-9]*"),
        _EXP_DIGITS: re.compile(rb"[0-9]*"),
        _KEYWORD: re.compile(rb"[a-z]*"),
    }
    _RECOVERY_RUN = re.compile(rb"[^\x00-\x08\x0a-\x1f\xfe\xff{}\[\]:,]*")
    _WS_RUN = re.compile(rb"[ \t\r\n]*")
    _DQ_TOKEN = re.compile(b'"' + dq_body + b'"')
    _SQ_TOKEN = re.compile(b"'" + sq_body + b"'")
    _NONCHAR_RE = re.compile("[" + "".join(_NONCHARACTERS) + "]")
    _HEX4 = re.compile(rb"[0-9a-fA-F]{4}")
    # Escapes of surrogates (pairs included) and noncharacters, and a number
    # that starts with a zero and has an exponent: these take the exact path.
    _NOT_PLAIN_RE = re.compile(
        r"\\u(?:[dD][89a-fA-F]|[fF][dD][dDeE]|[fF][fF][fF][eEfF])|(?<=[-\[:, \t\r\n])0[eE]"
    )
    _ESCAPE_RE = re.compile('[\x00-\x1f"\\\\\x7f-\U0010ffff]')
    _SURROGATE_RE = re.compile("[\ud800-\udfff]")
    _exact_ready = True


def _run_end(pattern: re.Pattern[AnyStr], data: AnyStr, pos: int) -> int:
    """Where the (possibly empty) run that ``pattern`` matches at ``pos`` ends."""
    m = pattern.match(data, pos)
    return m.end() if m else pos


# ---------------------------------------------------------------------------
# Token values


def _err(message: str) -> JsonParseError:
    return JsonParseError("JSON parse error, " + message)


def _c_text(raw: bytes | bytearray) -> str:
    """Token text as a C string: cut at NUL, raw bytes kept via surrogateescape."""
    return bytes(raw).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


_NONCHARACTERS: Final = [chr(c) for c in range(0xFDD0, 0xFDF0)] + [
    chr(plane << 16 | low) for plane in range(17) for low in (0xFFFE, 0xFFFF)
]
_NONCHAR_SET: Final = frozenset(_NONCHARACTERS)

_SIMPLE_ESCAPES: Final = {
    ord('"'): '"',
    ord("'"): "'",
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}


def _valid_codepoint(cp: int) -> bool:
    """What modified UTF-8 can encode: no surrogates, noncharacters or cp > 0x10FFFF."""
    return (
        0 <= cp <= 0x10FFFF
        and not 0xD800 <= cp <= 0xDFFF
        and not 0xFDD0 <= cp <= 0xFDEF
        and (cp & 0xFFFE) != 0xFFFE
    )


def _decode_raw(raw: bytes) -> str:
    """Unescaped string bytes, which must be valid modified UTF-8."""
    if raw.isascii():
        return raw.decode("ascii")
    # C0 80 is the only overlong form allowed.  C0 never continues a
    # sequence, so replacing it first cannot change how the rest decodes.
    try:
        text = raw.replace(b"\xc0\x80", b"\0").decode("utf-8")
    except UnicodeDecodeError:
        raise _err("invalid UTF-8 sequence in string") from None
    if _NONCHAR_RE.search(text):
        raise _err("invalid UTF-8 sequence in string")
    return text


def _hex4(body: bytes, pos: int) -> int:
    m = _HEX4.match(body, pos)
    return int(m.group(), 16) if m else -1


def _decode_string(token: bytes) -> str:
    """The value of a complete string token (quotes included)."""
    body = token[1:-1]
    backslash = body.find(b"\\")
    if backslash < 0:
        return _decode_raw(body)
    parts = []
    pos = 0
    while backslash >= 0:
        parts.append(_decode_raw(body[pos:backslash]))
        kind = body[backslash + 1]  # the lexer never ends a string after a lone backslash
        simple = _SIMPLE_ESCAPES.get(kind)
        if simple is not None:
            parts.append(simple)
            pos = backslash + 2
        elif kind == ord("u"):
            cp = _hex4(body, backslash + 2)
            pos = backslash + 6
            if 0xD800 <= cp <= 0xDBFF and body[pos : pos + 2] == b"\\u":
                low = _hex4(body, pos + 2)
                if 0xDC00 <= low <= 0xDFFF:
                    cp = 0x10000 + ((cp & 0x3FF) << 10 | (low & 0x3FF))
                    pos += 6
                else:
                    cp = -1
            if not _valid_codepoint(cp):
                # QEMU quotes the escape as written, up to the end of the token.
                shown = _c_text(token[backslash + 1 : pos + 1])
                raise _err(f"{shown} is not a valid Unicode character")
            parts.append(chr(cp))
        else:
            raise _err("invalid escape sequence in string")
        backslash = body.find(b"\\", pos)
    parts.append(_decode_raw(body[pos:]))
    return "".join(parts)


def _number(text: str) -> int | float:
    """QNum semantics: int64, else uint64, else double (as strtod rounds)."""
    if len(text) <= 20:  # longer digit strings are out of range anyway
        value = int(text)
        if _INT64_MIN <= value < _UINT64_LIMIT:
            return value
    return float(text)


_KEYWORDS: Final[dict[bytes, object]] = {b"true": True, b"false": False, b"null": None}

# ---------------------------------------------------------------------------
# Parser: one streamer group of tokens to a value


def _parse_tokens(tokens: list[tuple[int, bytes]]) -> object:
    """Parse the tokens of one message; the first error found is the one raised.

    The grammar is walked with an explicit stack, so nesting costs no Python
    recursion.  Messages and their order follow QEMU's recursive parser: e.g.
    a duplicate key is only reported after its value parsed fine.
    """
    count = len(tokens)
    pos = 0
    # Open containers: [list] or [dict, key-or-None]; a dict frame whose key
    # is None is waiting for a key.
    stack: list[list[object]] = []
    value: object = None
    while True:
        # Parse a value, or open a container and go on with its first member.
        if pos == count:
            raise _err("premature EOI")
        kind, text = tokens[pos]
        pos += 1
        if kind in (_LCURLY, _LSQUARE):
            if pos == count:
                raise _err("premature EOI")
            closer = _RCURLY if kind == _LCURLY else _RSQUARE
            if tokens[pos][0] != closer:
                stack.append([{}, None] if kind == _LCURLY else [[]])
                continue
            pos += 1
            value = {} if kind == _LCURLY else []
        elif kind == _STRING:
            value = _decode_string(text)
        elif kind == _INTEGER:
            value = _number(text.decode("ascii"))
        elif kind == _FLOAT:
            value = float(text)
        elif kind == _WORD:
            if text not in _KEYWORDS:
                raise _err(f"invalid keyword '{text.decode('ascii')}'")
            value = _KEYWORDS[text]
        else:
            raise _err("expecting value")

        # Hand the value to the containers it completes.  Each container
        # checks the value before looking at the token after it.
        while stack:
            frame = stack[-1]
            container = frame[0]
            if isinstance(container, list):
                container.append(value)
                kind = _next_kind(tokens, pos)
                pos += 1
                if kind == _COMMA:
                    break
                if kind != _RSQUARE:
                    raise _err("expected separator in list")
            else:
                assert isinstance(container, dict)
                key = frame[1]
                if key is None:
                    if not isinstance(value, str):
                        raise _err("key is not a string in object")
                    if _next_kind(tokens, pos) != _COLON:
                        raise _err("missing : in object pair")
                    pos += 1
                    frame[1] = value
                    break
                assert isinstance(key, str)
                if key in container:
                    raise _err("duplicate key")
                container[key] = value
                frame[1] = None
                kind = _next_kind(tokens, pos)
                pos += 1
                if kind == _COMMA:
                    break
                if kind != _RCURLY:
                    raise _err("expected separator in dict")
            stack.pop()
            value = container
        else:
            return value


def _next_kind(tokens: list[tuple[int, bytes]], pos: int) -> int:
    if pos == len(tokens):
        raise _err("premature EOI")
    return tokens[pos][0]


# ---------------------------------------------------------------------------
# Fast path: complete, plain RFC 8259 objects go through the C json module.


class _NotPlain(Exception):
    """The text is standard JSON, but QEMU would treat it differently."""


def _pairs_hook(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _NotPlain  # duplicate key: an error for QEMU
    return result


def _reject_constant(name: str) -> object:
    raise _NotPlain  # NaN, Infinity


class _PlainContext:
    """The settings ``_json.make_scanner`` reads, as ``json.JSONDecoder`` holds them."""

    strict = True
    object_hook = None
    object_pairs_hook = staticmethod(_pairs_hook)
    parse_float = float
    parse_int = staticmethod(_number)
    parse_constant = staticmethod(_reject_constant)


# The C scanner itself: the ``json`` package would import ``re``. In 3.11 the
# scanner reports a syntax error as SystemError unless ``json.decoder`` was
# imported; either way the text is not plain and takes the exact path.
_scan_once: Callable[[str, int], tuple[object, int]]
try:
    from _json import make_scanner as _make_scanner
except ImportError:  # pragma: no cover - CPython always has _json
    from json.scanner import make_scanner as _make_scanner
_scan_once = _make_scanner(_PlainContext)  # type: ignore[arg-type]
_PLAIN_ERRORS: Final = (ValueError, RecursionError, StopIteration, SystemError, _NotPlain)
_WS_CHARS: Final = " \t\r\n"
# Messages up to this size cannot reach the token count or size limits.
_PLAIN_MAX_LEN: Final = MAX_TOKEN_COUNT


def _max_depth(segment: str) -> int:
    """The deepest nesting of brackets in plain (ASCII) JSON text.

    QEMU limits the depth, not the number, of open brackets; counting them
    is a cheap first filter that a long list of small objects (an authz
    rule file) fails, so such text is measured properly before it is sent
    down the slow exact path. Strings are cut out first: escaped
    backslashes and quotes go, then everything but brackets and quotes,
    then whatever lies between two quotes.
    """
    import re
    from itertools import accumulate

    raw = segment.encode("ascii").replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = re.sub(rb'"[^"]*"', b"", raw.translate(None, _NOT_STRUCTURAL))
    return max(accumulate(1 if c in b"{[" else -1 for c in skeleton), default=0)


_NOT_STRUCTURAL = bytes(c for c in range(256) if c not in b'{}[]"')


def _maybe_not_plain(segment: str) -> bool:
    """Whether ``_NOT_PLAIN_RE`` could match; prepares it if so."""
    if "\\u" not in segment and "0e" not in segment and "0E" not in segment:
        return False
    if not _exact_ready:
        _prepare_exact()
    return True


# ---------------------------------------------------------------------------
# Streamer


class JsonStreamParser:
    """Split a byte stream into top-level JSON values as QEMU's QMP monitor does.

    Sans-I/O: :meth:`feed` takes whatever bytes arrived and returns every
    value completed by them, in order, each either the parsed value or the
    :class:`~qomhost.errors.JsonParseError` QEMU reports for it.  Partial
    input stays buffered.  Values need not be objects or end with a newline.

    As in QEMU, a value ends as soon as its brackets balance (or close more
    than they opened), an error throws away the message so far, and after a
    lexical error (``stray '...'``) input is skipped up to the next
    structural character, control byte or ``0xFE``/``0xFF`` byte.

    Complete plain objects are parsed with the standard library's decoder
    when that gives the same result; everything else goes through an exact
    model of QEMU's lexer and parser.
    """

    # Switches for tests that compare the accelerated paths with the exact one.
    _plain_objects = True
    _byte_runs = True

    def __init__(self) -> None:
        self._state = _START
        self._token = bytearray()  # the lexer's token so far
        self._tokens: list[tuple[int, bytes]] = []  # the streamer's message so far
        self._token_size = 0
        self._braces = 0
        self._brackets = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[object | JsonParseError]:
        """Consume ``data``; return the values (or errors) it completed."""
        data = bytes(data)
        out: list[object | JsonParseError] = []
        pos = 0
        text: str | None = None
        while pos < len(data):
            if self._plain_objects and self._state == _START and not self._tokens:
                if text is None:
                    text = data.decode("latin-1")  # one char per byte: same offsets
                pos = self._feed_plain(text, pos, out)
                if pos == len(data):
                    break
            pos = self._feed_exact(data, pos, out)
        return out

    def flush(self) -> list[object | JsonParseError]:
        """End of input: finish a pending token and parse what is left.

        QEMU does this for a complete text (``-object '{...}'``, rule
        files), never for a QMP connection.
        """
        out: list[object | JsonParseError] = []
        if not _exact_ready:
            _prepare_exact()
        state = self._state
        while state != _START:
            action = _TABLE[state][0]  # as if a NUL byte followed, without taking it
            if action >= _RESYNC:
                state = _START
            elif action == _ERR:
                self._emit(_err(f"stray '{_c_text(self._token)}'"), out)
                state = _RECOVERY
            else:
                self._push(action - _LOOK, bytes(self._token), out)
                state = _START
            self._token.clear()
        self._state = _START
        if self._tokens:
            self._emit(self._parse(), out)
        return out

    # -- fast path ---------------------------------------------------------

    def _feed_plain(self, text: str, pos: int, out: list[object | JsonParseError]) -> int:
        """Take complete plain objects at ``pos``; return where that stopped."""
        end = len(text)
        while True:
            while pos < end and text[pos] in _WS_CHARS:
                pos += 1
            if pos == end or text[pos] != "{":
                return pos
            try:
                value, stop = _scan_once(text, pos)
            except _PLAIN_ERRORS:
                return pos
            if stop - pos > _PLAIN_MAX_LEN:
                return pos
            segment = text[pos:stop]
            if (
                (
                    segment.count("{") + segment.count("[") > MAX_NESTING
                    and _max_depth(segment) > MAX_NESTING
                )
                or not segment.isascii()  # then latin-1 decoding was wrong
                or (_maybe_not_plain(segment) and _NOT_PLAIN_RE.search(segment))
            ):
                return pos
            out.append(value)
            pos = stop

    # -- exact path ----------------------------------------------------------

    def _feed_exact(self, data: bytes, pos: int, out: list[object | JsonParseError]) -> int:
        """Lex from ``pos`` until the end of ``data``, or until a value was
        completed and nothing is pending (the fast path may take over then).
        """
        if not _exact_ready:
            _prepare_exact()
        end = len(data)
        token = self._token
        state = self._state
        runs = self._byte_runs
        produced = len(out)
        while pos < end:
            if state == _START:
                if len(out) > produced and not self._tokens:
                    break
                byte = data[pos]
                if runs:
                    if byte in _WS_BYTES:
                        pos = _run_end(_WS_RUN, data, pos)
                        continue
                    if byte == 0x22 or byte == 0x27:
                        m = (_DQ_TOKEN if byte == 0x22 else _SQ_TOKEN).match(data, pos)
                        if m is not None and m.end() - pos <= MAX_TOKEN_SIZE + 1:
                            self._push(_STRING, m.group(), out)
                            pos = m.end()
                            continue
            elif state == _RECOVERY and runs:
                pos = _run_end(_RECOVERY_RUN, data, pos)
                if pos == end:
                    break
            action = _TABLE[state][data[pos]]
            if action < _EMIT:
                pos += 1
                if action in (_START, _RECOVERY):
                    state = action
                    continue
                token.append(data[pos - 1])
                state = action
                run = _RUNS.get(state) if runs else None
                if run is not None:
                    stop = _run_end(run, data, pos)
                    # Take no more than the byte that makes the token too long.
                    stop = min(stop, pos + MAX_TOKEN_SIZE + 1 - len(token))
                    token += data[pos:stop]
                    pos = stop
                if len(token) > MAX_TOKEN_SIZE:
                    self._push(_OVERSIZE, bytes(token), out)
                    token.clear()
                    state = _START
            elif action < _LOOK:
                token.append(data[pos])
                pos += 1
                self._push(action - _EMIT, bytes(token), out)
                token.clear()
                state = _START
            elif action < _ERR:
                self._push(action - _LOOK, bytes(token), out)
                token.clear()
                state = _START
            elif action == _ERR:
                token.append(data[pos])
                pos += 1
                self._emit(_err(f"stray '{_c_text(token)}'"), out)
                token.clear()
                state = _RECOVERY
            else:
                state = _START
        self._state = state
        return pos

    def _push(self, kind: int, text: bytes, out: list[object | JsonParseError]) -> None:
        """The streamer: add a token, and parse the message once it is complete."""
        if kind == _LCURLY:
            self._braces += 1
        elif kind == _RCURLY:
            self._braces -= 1
        elif kind == _LSQUARE:
            self._brackets += 1
        elif kind == _RSQUARE:
            self._brackets -= 1
        # The limits are checked before the token joins the message, which is
        # dropped together with the offending token.
        if self._token_size + len(text) + 1 > MAX_TOKEN_SIZE:
            self._emit(JsonParseError("JSON token size limit exceeded"), out)
        elif len(self._tokens) + 1 > MAX_TOKEN_COUNT:
            self._emit(JsonParseError("JSON token count limit exceeded"), out)
        elif self._braces + self._brackets > MAX_NESTING:
            self._emit(JsonParseError("JSON nesting depth limit exceeded"), out)
        else:
            self._tokens.append((kind, text))
            self._token_size += len(text)
            if (self._braces > 0 or self._brackets > 0) and (
                self._braces >= 0 and self._brackets >= 0
            ):
                return
            self._emit(self._parse(), out)

    def _parse(self) -> object:
        try:
            return _parse_tokens(self._tokens)
        except JsonParseError as error:
            return error

    def _emit(self, result: object, out: list[object | JsonParseError]) -> None:
        self._tokens = []
        self._token_size = 0
        self._braces = 0
        self._brackets = 0
        out.append(result)


# ---------------------------------------------------------------------------
# Whole texts


def _to_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def to_c_bytes(s: str) -> bytes:
    """``s`` as QEMU holds it in memory: UTF-8, with U+0000 as ``C0 80``.

    Lone surrogates U+DC80..U+DCFF (Python's ``surrogateescape``) become the
    raw bytes they stand for.
    """
    return _to_bytes(s).replace(b"\0", b"\xc0\x80")


_NO_VALUE: Final = object()


def parse_json(text: str | bytes) -> object:
    """Parse exactly one JSON value, as ``qobject_from_json`` does.

    This is how ``-object '{...}'`` and JSON files are read.  Raises
    :class:`~qomhost.errors.JsonParseError` with QEMU's message.  As in C,
    the text ends at the first NUL character.
    """
    data = _to_bytes(text) if isinstance(text, str) else bytes(text)
    data = data.split(b"\0", 1)[0]
    parser = JsonStreamParser()
    result: object = _NO_VALUE
    error: JsonParseError | None = None
    for item in parser.feed(data) + parser.flush():
        if result is not _NO_VALUE:
            result = _NO_VALUE
            error = JsonParseError("Expecting at most one JSON value")
        if error is not None:
            continue
        if isinstance(item, JsonParseError):
            error = item
        else:
            result = item
    if error is not None:
        raise error
    if result is _NO_VALUE:
        raise JsonParseError("Expecting a JSON value")
    return result


# ---------------------------------------------------------------------------
# Output


def _tdb_bucket(key: str) -> int:
    """QDict's bucket for ``key``: the TDB hash of its C bytes, mod 512."""
    raw = to_c_bytes(key)
    value = (0x238F13AF * len(raw)) & 0xFFFFFFFF
    for i, c in enumerate(raw):
        value = (value + (c << (i * 5 % 24))) & 0xFFFFFFFF
    return ((1103515243 * value + 12345) & 0xFFFFFFFF) % 512


_ORDER_CACHE: dict[tuple[str, ...], tuple[str, ...]] = {}
_ORDER_CACHE_MAX: Final = 4096


def _qdict_order(keys: tuple[str, ...]) -> tuple[str, ...]:
    order = _ORDER_CACHE.get(keys)
    if order is None:
        first: dict[str, int] = {}
        for index, key in enumerate(keys):
            first.setdefault(key, index)  # a re-inserted key keeps its place
        # Buckets in order; within one, the newest entry is at the list head.
        order = tuple(sorted(first, key=lambda k: (_tdb_bucket(k), -first[k])))
        if len(_ORDER_CACHE) >= _ORDER_CACHE_MAX:
            _ORDER_CACHE.clear()
        _ORDER_CACHE[keys] = order
    return order


def qdict_order(keys: Iterable[str]) -> list[str]:
    """The order in which QEMU iterates a QDict whose keys were inserted in
    the order given (a repeated key keeps its first place).

    QDict is a hash table of 512 buckets; iteration goes through the buckets
    in order and through each bucket from the most recently inserted key.
    """
    return list(_qdict_order(tuple(keys)))


_SHORT_ESCAPES: Final = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _escape_codepoint(cp: int) -> str:
    if cp < 0 or chr(cp) in _NONCHAR_SET or 0xD800 <= cp <= 0xDFFF:
        cp = 0xFFFD  # QEMU cannot decode these and prints the replacement character
    if cp > 0xFFFF:
        cp -= 0x10000
        return f"\\u{0xD800 + (cp >> 10):04X}\\u{0xDC00 + (cp & 0x3FF):04X}"
    return f"\\u{cp:04X}"


def _escape_match(m: re.Match[str]) -> str:
    char = m.group()
    return _SHORT_ESCAPES.get(char) or _escape_codepoint(ord(char))


def _mod_utf8_codepoints(raw: bytes) -> Iterator[int]:
    """Decode like QEMU's ``mod_utf8_codepoint``: -1 for each bad sequence."""
    pos, end = 0, len(raw)
    while pos < end:
        byte = raw[pos]
        pos += 1
        if byte < 0x80:
            yield byte
            continue
        if byte >= 0xFE or not byte & 0x40:
            yield -1  # impossible byte, or a continuation byte out of place
            continue
        length = 2
        while byte & (0x80 >> length):
            length += 1
        cp = byte & ((0x80 >> length) - 1)
        for _ in range(length - 1):
            if pos == end or raw[pos] & 0xC0 != 0x80:
                cp = -1
                break
            cp = cp << 6 | raw[pos] & 0x3F
            pos += 1
        if cp >= 0:
            shortest = (0x80, 0x800, 0x10000, 0x200000, 0x4000000)[length - 2]
            overlong = cp < shortest and not (cp == 0 and length == 2)
            if overlong or not _valid_codepoint(cp):
                cp = -1
        yield cp


def _quote(s: str) -> str:
    # Printable ASCII without quote or backslash is what _ESCAPE_RE leaves alone.
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'
    if not _exact_ready:
        _prepare_exact()
    if _SURROGATE_RE.search(s) is None:
        return '"' + _ESCAPE_RE.sub(_escape_match, s) + '"'
    # Lone surrogates stand for bytes that are not valid UTF-8: decode those
    # bytes the way QEMU would.
    parts = []
    for cp in _mod_utf8_codepoints(to_c_bytes(s)):
        char = chr(cp) if cp >= 0 else ""
        if char and 0x20 <= cp < 0x7F and char not in _SHORT_ESCAPES:
            parts.append(char)
        else:
            parts.append(_SHORT_ESCAPES.get(char) or _escape_codepoint(cp))
    return '"' + "".join(parts) + '"'


def _scalar(value: object) -> str:
    if isinstance(value, str):
        return _quote(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        if _INT64_MIN <= value < _UINT64_LIMIT:
            return str(int(value))
        value = float(value)  # what QEMU would hold after parsing such a number
    if isinstance(value, float):
        if value != value:  # NaN
            import math

            return "-nan" if math.copysign(1.0, value) < 0 else "nan"
        return f"{float(value):.17g}"
    raise TypeError(f"cannot serialise {type(value).__name__} as JSON")


_INDENTS: list[str] = ["\n"]


def _indent(depth: int) -> str:
    while len(_INDENTS) <= depth:
        _INDENTS.append("\n" + "    " * len(_INDENTS))
    return _INDENTS[depth]


def _dump_flat(value: dict[str, object]) -> str | None:
    """Compact text of a dict of scalars and empty containers, else None.

    Most QMP replies look like that (``{"return": {}}``); this skips the
    general walk in :func:`dump_json`.
    """
    parts = []
    for key in _qdict_order(tuple(value)):
        item = value[key]
        if isinstance(item, (dict, list, tuple)):
            if item:
                return None
            text = "{}" if isinstance(item, dict) else "[]"
        else:
            text = _scalar(item)
        parts.append(_quote(key) + ": " + text)
    return "{" + ", ".join(parts) + "}"


def dump_json(value: object, pretty: bool = False) -> str:
    """Serialise ``value`` exactly as ``qobject_to_json`` (or, with
    ``pretty``, ``qobject_to_json_pretty``) does.

    Compact form separates with ``", "`` and ``": "``.  The pretty form puts
    every member on its own line, indented by four spaces per level, with
    the closing bracket on a line of its own, even for an empty container
    (``{`` newline ``}``).  Dict members come in :func:`qdict_order`.  No
    trailing newline is added.
    """
    if not isinstance(value, (dict, list, tuple)):
        return _scalar(value)
    if not pretty and type(value) is dict:
        flat = _dump_flat(value)
        if flat is not None:
            return flat
    out: list[str] = []
    append = out.append
    # Each level: the iterator over its remaining (key, value) members and
    # its closing bracket.  A key of None marks a list element.
    stack: list[tuple[Iterator[tuple[str | None, object]], str]] = []
    members: Iterator[tuple[str | None, object]] = iter(((None, value),))
    first = True
    while True:
        for key, item in members:
            depth = len(stack)
            if not first:
                append(",")
                append(_indent(depth) if pretty else " ")
            elif pretty and depth:
                append(_indent(depth))
            first = False
            if key is not None:
                append(_quote(key))
                append(": ")
            if isinstance(item, dict):
                append("{")
                stack.append((members, "}"))
                order = _qdict_order(tuple(item))
                members = zip(order, map(item.__getitem__, order), strict=True)
            elif isinstance(item, (list, tuple)):
                append("[")
                stack.append((members, "]"))
                members = zip(repeat(None), item)
            else:
                append(_scalar(item))
                continue
            first = True
            break
        else:
            if not stack:
                return "".join(out)
            members, closer = stack.pop()
            if pretty:
                append(_indent(len(stack)))
            append(closer)
            first = False
