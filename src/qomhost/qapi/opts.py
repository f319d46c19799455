"""QEMU's two ``key=value,...`` option syntaxes, as pure functions.

QEMU 7.2 parses option strings in two different ways, and the two disagree
on almost every corner case, so both are reproduced here exactly:

**QemuOpts** (:func:`parse_qemu_opts`, :class:`OptsList`) is what
``qemu-system-* -object``, ``-chardev``, ``-mon`` and ``-name`` use.

* A flat list of ``(key, value)`` string pairs; duplicates are kept and the
  last one wins when a value is looked up (:meth:`QemuOptsResult.as_dict`).
* ``,,`` in a value is a literal comma, also in the implied first value.
* With an implied key (``qom-type`` for ``-object``), a first element
  without ``=`` is that key's value: ``secret,id=s`` means
  ``qom-type=secret,id=s``.
* Any later element without ``=`` is a flag: ``key`` means ``key=on`` and
  anything starting with ``no`` means the rest ``=off`` (``nodelay`` is
  ``delay=off``, ``no`` is ``''=off``). Both warn (see
  :attr:`QemuOptsResult.warnings`), except a bare ``help``/``?``.
* Syntax never fails: ``=x`` is the key ``''``, a lone ``,`` in a key
  position is the flag ``''``. Unknown keys are rejected later (by the opts
  visitor for ``-object``, or by :class:`OptsList` when it has a ``desc``).
* ``id`` is taken out of the pairs by :class:`OptsList`, which checks its
  form and uniqueness per option group (``Duplicate ID 'a' for object``).
  It is found by a *second* scan of the string that has no implied key, so
  the first id wins and a first element ``id`` or a later ``noid`` sets it.

**keyval** (:func:`parse_keyval`) is what HMP ``object_add``,
``qemu-storage-daemon --object`` and ``qemu-img --object`` use.

* Dotted keys build nested dicts; all-digit fragments build lists
  (``rules.0.match=x`` gives ``{"rules": [{"match": "x"}]}``).
* ``,,`` is a literal comma in values, but the implied first value ends at
  the first ``,`` and cannot be escaped.
* Every key needs ``=``; keys are QAPI names; the last duplicate wins.
* A bare ``help`` or ``?`` element anywhere asks for help.

The scalar conversions that follow parsing are :func:`opts_value_to`
(the opts visitor, for ``-object``), :func:`opts_list_value_to` (its list
mode with ranges such as ``cpu-affinity=0-3``), :func:`qemu_opt_value_to`
(QemuOpts' own typed options, for ``-chardev`` and friends) and
:func:`keyval_value_to` (the keyval input visitor). They follow glibc's
``strtoll``/``strtoull``/``strtod`` and QEMU's ``qemu_strtosz`` to the
character, including their quirks.

Every function here raises only :class:`~qomhost.errors.OptsError` for bad
input, with QEMU's exact message (and hint, where QEMU prints one).
"""

from __future__ import annotations

from qomhost._record import Record
from qomhost.errors import OptsError

# Command-line parsing runs at every start-up: no typing, re or decimal here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Literal, TypeAlias

__all__ = [
    "ID_HINT",
    "SIZE_HINT",
    "HelpRequest",
    "KeyvalDict",
    "KeyvalValue",
    "OptType",
    "OptsList",
    "QemuOptsResult",
    "id_wellformed",
    "is_help_option",
    "keyval_object_help",
    "keyval_value_to",
    "opts_list_value_to",
    "opts_value_to",
    "parse_keyval",
    "parse_qemu_opts",
    "qemu_opt_value_to",
    "qemu_opts_object_help",
]

#: The hint QEMU prints under ``Parameter 'id' expects an identifier``.
ID_HINT = "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."

#: The hint QEMU prints under a bad QemuOpts size value.
SIZE_HINT = (
    "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
    "and exabytes, respectively."
)

KeyvalValue: TypeAlias = "str | dict[str, KeyvalValue] | list[KeyvalValue]"

#: The value types of a typed QemuOpts option (QEMU's ``QemuOptType``).
OptType: TypeAlias = 'Literal["string", "bool", "number", "size"]'

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1
_INT_MAX = 2**31 - 1

# C's isspace() in the C locale; Python's str.isspace() accepts far more.
_C_SPACE = frozenset(" \t\n\v\f\r")
_ALPHA = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGITS = frozenset("0123456789")
_ALNUM = _ALPHA | _DIGITS
_QAPI_TAIL = _ALNUM | frozenset("-_")
_RFQDN = _ALNUM | frozenset("-.")

_ID_TAIL = _ALNUM | frozenset("._-")

# The ranged integer kinds: C type name used in range errors, bounds, and
# whether the visitor reads them through its int64 or its uint64 entry.
_INT_KINDS: dict[str, tuple[str, int, int, bool]] = {
    "int8": ("int8_t", -(2**7), 2**7 - 1, True),
    "int16": ("int16_t", -(2**15), 2**15 - 1, True),
    "int32": ("int32_t", -(2**31), 2**31 - 1, True),
    "int64": ("int64_t", _INT64_MIN, _INT64_MAX, True),
    "uint8": ("uint8_t", 0, 2**8 - 1, False),
    "uint16": ("uint16_t", 0, 2**16 - 1, False),
    "uint32": ("uint32_t", 0, 2**32 - 1, False),
    "uint64": ("uint64_t", 0, _UINT64_MAX, False),
}

# The opts visitor expands a range "a-b" only while it has fewer than this
# many elements.
_RANGE_MAX = 65536

_TRUE_WORDS = frozenset(("on", "yes", "true", "y"))
_FALSE_WORDS = frozenset(("off", "no", "false", "n"))

_EINVAL = 22
_ERANGE = 34


def _c_string(text: str) -> str:
    """What C code sees of ``text``: everything before the first NUL."""
    nul = text.find("\0")
    return text if nul < 0 else text[:nul]


def is_help_option(text: str) -> bool:
    """True for the two spellings QEMU takes as a help request: ``help``, ``?``."""
    return text in ("help", "?")


def id_wellformed(ident: str) -> bool:
    """QEMU's rule for ids: an ASCII letter, then letters, digits, ``-._``."""
    return bool(ident) and ident[0] in _ALPHA and all(c in _ID_TAIL for c in ident[1:])


def _key_end(text: str, pos: int) -> int:
    """The index of the first ``=`` or ``,`` from ``pos``, else ``len(text)``."""
    equals = text.find("=", pos)
    comma = text.find(",", pos)
    if equals < 0:
        return len(text) if comma < 0 else comma
    return equals if comma < 0 or equals < comma else comma


def _param_expects(name: str, what: str) -> OptsError:
    return OptsError(f"Parameter '{name}' expects {what}")


# --- C number parsing ---------------------------------------------------------


_BASE_DIGITS = {
    8: frozenset("01234567"),
    10: _DIGITS,
    16: frozenset("0123456789abcdefABCDEF"),
}
_TOO_BIG = 2**200


def _strto(text: str, pos: int, base: int) -> tuple[int, int, bool]:
    """glibc's ``strto[u]ll`` digit scan from ``pos``.

    Returns ``(signed magnitude, end index, converted)``; when nothing was
    converted the end index is ``pos``, as C sets ``*endptr = nptr``.
    Range is the caller's business.
    """
    n = len(text)
    i = pos
    while i < n and text[i] in _C_SPACE:
        i += 1
    negative = False
    if i < n and text[i] in "+-":
        negative = text[i] == "-"
        i += 1
    if base in (0, 16) and text[i : i + 2] in ("0x", "0X"):
        # The prefix only counts when a hex digit follows; otherwise the
        # "0" alone is the number and the end is the "x".
        if i + 2 < n and text[i + 2] in _BASE_DIGITS[16]:
            base = 16
            i += 2
        else:
            return 0, i + 1, True
    elif base == 0:
        base = 8 if text[i : i + 1] == "0" else 10
    start = i
    digits = _BASE_DIGITS[base]
    while i < n and text[i] in digits:
        i += 1
    if i == start:
        return 0, pos, False
    significant = text[start:i].lstrip("0")
    # Anything this long is out of every range; this also keeps int() away
    # from its limit on decimal digit strings.
    value = int(significant or "0", base) if len(significant) <= 40 else _TOO_BIG
    return (-value if negative else value), i, True


def _strtoll(text: str, pos: int = 0, base: int = 0) -> tuple[int, int, int]:
    """``strtoll``: ``(value, end, errno)``; errno is 0 or ERANGE."""
    value, end, _ = _strto(text, pos, base)
    if value > _INT64_MAX:
        return _INT64_MAX, end, _ERANGE
    if value < _INT64_MIN:
        return _INT64_MIN, end, _ERANGE
    return value, end, 0


def _strtoull(text: str, pos: int = 0, base: int = 0) -> tuple[int, int, int]:
    """``strtoull``: a minus sign negates modulo 2**64, as C does."""
    value, end, _ = _strto(text, pos, base)
    if abs(value) > _UINT64_MAX:
        return _UINT64_MAX, end, _ERANGE
    return value % 2**64, end, 0


def _qemu_strtou64(text: str, base: int) -> tuple[int, int, int]:
    """``qemu_strtou64`` with an end pointer: ``(value, end, -errno)``.

    No conversion is EINVAL with the end at the start.
    """
    value, end, err = _strtoull(text, 0, base)
    if end == 0 and err == 0:
        return value, 0, -_EINVAL
    return value, end, -err


def _int64_strict(text: str) -> int | None:
    """``qemu_strtoi64(text, NULL, 0)``: the whole string, in range."""
    value, end, err = _strtoll(text)
    if err or end == 0 or end != len(text):
        return None
    return value


def _uint64_strict(text: str) -> int | None:
    """``qemu_strtou64(text, NULL, 0)``: negative numbers wrap, as in C."""
    value, end, err = _strtoull(text)
    if err or end == 0 or end != len(text):
        return None
    return value


def _parse_uint(text: str, pos: int) -> tuple[int, int] | None:
    """QEMU's ``parse_uint`` (base 0): like strtoull but refusing a sign ``-``.

    Returns ``(value, end)`` or ``None``; trailing text is allowed here.
    """
    value, end, err = _strtoull(text, pos)
    if err or end == pos:
        return None
    i = pos
    while i < len(text) and text[i] in _C_SPACE:
        i += 1
    if text[i : i + 1] == "-":
        return None
    return value, end


_DBL_MIN = 2.2250738585072014e-308
_INF = float("inf")


def _strtod_fraction(text: str, pos: int) -> tuple[float, int, int]:
    """glibc ``strtod`` at ``text[pos] == '.'``, as ``qemu_strtod_finite`` reports it.

    Returns ``(value, end, -errno)``: EINVAL (end = ``pos``) when no digit
    follows the dot, ERANGE when the value overflows or underflows.
    """
    n = len(text)
    i = pos + 1
    while i < n and text[i] in _DIGITS:
        i += 1
    if i == pos + 1:
        return 0.0, pos, -_EINVAL
    # An exponent is consumed only when at least one digit follows it.
    if i < n and text[i] in "eE":
        j = i + 1
        if j < n and text[j] in "+-":
            j += 1
        k = j
        while k < n and text[k] in _DIGITS:
            k += 1
        if k > j:
            i = k
    literal = text[pos:i]
    value = float(literal)
    if value == _INF:
        return value, i, -_ERANGE
    mantissa = literal[1:].partition("e")[0].partition("E")[0]
    # glibc reports underflow for a nonzero input whose result is zero or
    # subnormal and inexact.
    if value < _DBL_MIN and mantissa.strip("0"):
        import decimal

        if value == 0.0 or decimal.Decimal(literal) != decimal.Decimal(value):
            return value, i, -_ERANGE
    return value, i, 0


# Binary unit suffixes, either case; anything else is "no suffix".
_SUFFIX_MUL = {c: 1 << (10 * i) for i, u in enumerate("BKMGTPE") for c in (u, u.lower())}


def _strtosz(text: str, warnings: list[str] | None) -> tuple[int, int]:
    """``qemu_strtosz(text, NULL, &result)``: ``(result, -errno)``.

    Decimal integers with an optional fraction (which then needs a unit
    suffix), hex integers, and a case-insensitive binary suffix among
    ``B K M G T P E``. A suffix on a hex number is accepted with a
    deprecation warning, appended to ``warnings``.
    """
    n = len(text)
    value, end, ret = _qemu_strtou64(text, 10)
    frac = 0
    if ret == 0 and "-" in text[:end]:
        end, ret = 0, -_EINVAL
    if ret == 0:
        hex_number = False
        nxt = text[end : end + 1]
        if value == 0 and nxt in ("x", "X"):
            value, end, ret = _qemu_strtou64(text, 16)
            if ret == 0 and text[end : end + 1] == ".":
                end, ret = 0, -_EINVAL
            hex_number = True
        elif nxt == ".":
            fvalue, fend, fret = _strtod_fraction(text, end)
            if fret:
                # QEMU steps one character past whatever strtod stopped at,
                # and forgets the error.
                end = fend + 1
            elif "e" in text[end:fend] or "E" in text[end:fend]:
                end, ret = 0, -_EINVAL
            else:
                end = fend
                scaled = fvalue * 2.0**64
                # (uint64_t) of exactly 2**64, as x86-64 code computes it.
                frac = int(scaled) if scaled < 2.0**64 else 0
        if ret == 0:
            c = text[end] if end < n else ""
            mul = _SUFFIX_MUL.get(c, -1)
            if mul > 0:
                if hex_number and warnings is not None:
                    warnings.append(
                        f"Using a multiplier suffix on hex numbers is deprecated: {text}"
                    )
                end += 1
            else:
                mul = 1
            if mul == 1:
                if frac:
                    end, ret = 0, -_EINVAL
            else:
                product = frac * mul
                total = value * mul + (product >> 64) + ((product & _UINT64_MAX) >> 63)
                if total > _UINT64_MAX:
                    ret = -_ERANGE
                else:
                    value = total
    if end < n:
        ret = -_EINVAL
    return value, ret


def _qapi_bool(text: str) -> bool | None:
    if text in _TRUE_WORDS:
        return True
    if text in _FALSE_WORDS:
        return False
    return None


# --- scalar conversion after parsing ------------------------------------------


def _range_checked(kind: str, name: str | None, value: int) -> int:
    c_type, lo, hi, _ = _INT_KINDS[kind]
    if not lo <= value <= hi:
        raise _param_expects(name if name is not None else "null", c_type)
    return value


def opts_value_to(
    kind: str, name: str, text: str, warnings: list[str] | None = None
) -> int | bool | str:
    """Convert one ``-object`` option value as QEMU's opts visitor does.

    :param kind: ``str``, ``bool``, ``int8``..``int64``, ``uint8``..``uint64``,
        ``size`` or ``any`` (returned unchanged).
    :param name: the option name, used in error messages.
    :param warnings: deprecation warnings (hex numbers with a size suffix)
        are appended here, if given.
    :raises OptsError: with QEMU's wording, e.g.
        ``Parameter 'poll-max-ns' expects an int64 value``,
        ``Parameter 'cbitpos' expects a uint64 value``,
        ``Parameter 'cbitpos' expects uint32_t`` (out of range),
        ``Parameter 'x' expects 'on' or 'off'``,
        ``Parameter 'size' expects a size value``.

    Signed kinds take ``strtoll(text, 0)``: C whitespace and a sign may
    lead, ``0x``/``0X`` is hex and a leading ``0`` octal, nothing may
    trail. Unsigned kinds take the same but refuse a ``-``. Booleans take
    ``on yes true y`` and ``off no false n``, case-sensitively.
    """
    if kind in ("str", "any"):
        return text
    if kind == "bool":
        flag = _qapi_bool(text)
        if flag is None:
            raise _param_expects(name, "'on' or 'off'")
        return flag
    if kind == "size":
        value, ret = _strtosz(text, warnings)
        if ret:
            raise _param_expects(name, "a size value")
        return value
    if kind not in _INT_KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if _INT_KINDS[kind][3]:
        signed = _int64_strict(text)
        if signed is None:
            raise _param_expects(name, "an int64 value")
        return _range_checked(kind, name, signed)
    parsed = _parse_uint(text, 0)
    if parsed is None or parsed[1] != len(text):
        raise _param_expects(name, "a uint64 value")
    return _range_checked(kind, name, parsed[0])


def _opts_list_element(kind: str, name: str, text: str) -> list[int]:
    signed = _INT_KINDS[kind][3]
    what = "an int64 value or range" if signed else "a uint64 value or range"
    if signed:
        first, end, err = _strtoll(text)
        if err or end == 0:
            raise _param_expects(name, what)
        if end == len(text):
            return [first]
        if text[end] != "-":
            raise _param_expects(name, what)
        last, end2, err2 = _strtoll(text, end + 1)
        if (
            err2
            or end2 == end + 1
            or end2 != len(text)
            or last < first
            or not (first > _INT64_MAX - _RANGE_MAX or last < first + _RANGE_MAX)
        ):
            raise _param_expects(name, what)
        return list(range(first, last + 1))
    parsed = _parse_uint(text, 0)
    if parsed is None:
        raise _param_expects(name, what)
    first, end = parsed
    if end == len(text):
        return [first]
    if text[end] != "-":
        raise _param_expects(name, what)
    parsed2 = _parse_uint(text, end + 1)
    if parsed2 is None or parsed2[1] != len(text):
        raise _param_expects(name, what)
    last = parsed2[0]
    if last < first or last - first >= _RANGE_MAX:
        raise _param_expects(name, what)
    return list(range(first, last + 1))


def opts_list_value_to(
    kind: str, name: str, texts: Iterable[str], warnings: list[str] | None = None
) -> list[int | bool | str]:
    """Convert the repeated values of a list option, as the opts visitor does.

    On the qemu command line a list is given by repeating its key
    (``cpu-affinity=0,cpu-affinity=2``); integer elements may also be
    inclusive ranges ``a-b`` of fewer than 65536 values (``0-3``).
    Errors read ``Parameter 'cpu-affinity' expects a uint64 value or range``
    (``an int64 value or range`` for signed kinds), and an element out of
    its C type's range gives ``Parameter 'null' expects uint16_t``:
    list elements have no name.
    """
    out: list[int | bool | str] = []
    for text in texts:
        if kind in _INT_KINDS:
            out.extend(_range_checked(kind, None, v) for v in _opts_list_element(kind, name, text))
        else:
            out.append(opts_value_to(kind, name, text, warnings))
    return out


def keyval_value_to(
    kind: str,
    name: str | None,
    text: str,
    *,
    path: str | None = None,
    warnings: list[str] | None = None,
) -> int | bool | str:
    """Convert one keyval leaf string as QEMU's keyval input visitor does.

    :param kind: as for :func:`opts_value_to`.
    :param name: the member name; ``None`` for a list element. Range errors
        (``Parameter 'serial' expects int32_t``) use it, and show ``'null'``
        for list elements.
    :param path: the dotted path of the value (``cpu-affinity.0``), used by
        the other errors; defaults to ``name``.
    :raises OptsError: ``Parameter 'poll-max-ns' expects integer``,
        ``Parameter 'x' expects 'on' or 'off'``, ``Parameter 'size' expects
        size``, or a range error.

    Integers are ``strtoll``/``strtoull`` with base 0 over the whole string;
    unsigned kinds accept a minus sign and wrap it as C does (``-1`` is
    2**64-1, which a narrower kind then rejects as out of range).
    """
    where = path if path is not None else (name if name is not None else "null")
    if kind in ("str", "any"):
        return text
    if kind == "bool":
        flag = _qapi_bool(text)
        if flag is None:
            raise _param_expects(where, "'on' or 'off'")
        return flag
    if kind == "size":
        value, ret = _strtosz(text, warnings)
        if ret:
            raise _param_expects(where, "size")
        return value
    if kind not in _INT_KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    number = _int64_strict(text) if _INT_KINDS[kind][3] else _uint64_strict(text)
    if number is None:
        raise _param_expects(where, "integer")
    return _range_checked(kind, name, number)


def qemu_opt_value_to(
    kind: OptType,
    name: str,
    text: str,
    warnings: list[str] | None = None,
) -> int | bool | str:
    """Convert a value of a typed QemuOpts option (``-chardev``, ``-name``...).

    These checks run while the string is parsed, unlike the opts visitor's.

    * ``bool``: as :func:`opts_value_to`.
    * ``number``: ``strtoull`` base 0 over the whole string (``-1`` wraps);
      ``Parameter 'x' expects a number``, or when too big
      ``Value '99999999999999999999' is too large for parameter 'x'``.
    * ``size``: ``qemu_strtosz``; ``Parameter 'x' expects a non-negative
      number below 2^64`` with :data:`SIZE_HINT`, or when too big
      ``Value '16E' is out of range for parameter 'x'``.
    """
    if kind == "string":
        return text
    if kind == "bool":
        return opts_value_to("bool", name, text)
    if kind == "number":
        value, end, err = _strtoull(text)
        if end == 0:
            raise _param_expects(name, "a number")
        if end != len(text):
            raise _param_expects(name, "a number")
        if err:
            raise OptsError(f"Value '{text}' is too large for parameter '{name}'")
        return value
    if kind == "size":
        value, ret = _strtosz(text, warnings)
        if ret == -_ERANGE:
            raise OptsError(f"Value '{text}' is out of range for parameter '{name}'")
        if ret:
            raise OptsError(
                f"Parameter '{name}' expects a non-negative number below 2^64", hint=SIZE_HINT
            )
        return value
    raise ValueError(f"unknown kind {kind!r}")


# --- QemuOpts -----------------------------------------------------------------


def _opt_value(text: str, pos: int) -> tuple[str, int]:
    """A value from ``pos`` to the first single comma; ``,,`` is a comma."""
    parts: list[str] = []
    n = len(text)
    while True:
        comma = text.find(",", pos)
        if comma < 0:
            parts.append(text[pos:])
            return "".join(parts), n
        if comma + 1 < n and text[comma + 1] == ",":
            parts.append(text[pos : comma + 1])
            pos = comma + 2
            continue
        parts.append(text[pos:comma])
        return "".join(parts), comma


class _Element:
    __slots__ = ("help", "name", "value", "warning")

    def __init__(self, name: str, value: str, help: bool, warning: str | None) -> None:
        self.name = name
        self.value = value
        self.help = help
        self.warning = warning


def _opts_element(text: str, pos: int, firstname: str | None) -> tuple[_Element, int]:
    """One ``name=value`` (or implied value, or flag) starting at ``pos``.

    Returns the element and the position of the next one.
    """
    key_end = _key_end(text, pos)
    is_help = False
    warning: str | None = None
    if key_end == len(text) or text[key_end] == ",":
        if firstname is not None:
            name = firstname
            value, end = _opt_value(text, pos)
        else:
            name = text[pos:key_end]
            end = key_end
            prefix = ""
            if name.startswith("no"):
                name, value, prefix = name[2:], "off", "no"
            else:
                value = "on"
                is_help = is_help_option(name)
            if not is_help:
                # "delay" is the one flag whose advice names the other spelling.
                if name == "delay":
                    advice = f"nodelay={'on' if prefix else 'off'}"
                else:
                    advice = f"{name}={value}"
                warning = (
                    f"short-form boolean option '{prefix}{name}' deprecated\n"
                    f"Please use {advice} instead"
                )
    else:
        name = text[pos:key_end]
        value, end = _opt_value(text, key_end + 1)
    if end < len(text):
        end += 1
    return _Element(name, value, is_help, warning), end


def _opts_find_id(text: str) -> str | None:
    """The id as QEMU finds it: the first ``id`` in a scan without implied key."""
    pos = 0
    while pos < len(text):
        element, pos = _opts_element(text, pos, None)
        if element.name == "id":
            return element.value
    return None


class QemuOptsResult(Record):
    """A parsed QemuOpts string.

    :ivar pairs: every ``(key, value)`` in order, duplicates and ``id``
        pairs included; flags appear as ``(key, "on")``/``(key, "off")``.
    :ivar id: the id QEMU extracts (the first ``id``, found by a scan
        without implied key), or ``None``.
    :ivar warnings: QEMU's warnings, in order. Each is the text after
        ``warning:``; a second line, when present, is printed as is:
        ``"short-form boolean option 'data' deprecated\\nPlease use data=on instead"``.
    :ivar help_wanted: a bare ``help``/``?`` stopped parsing (only for an
        :class:`OptsList` with a ``desc``, which then prints its option list).
    """

    _fields = ("pairs", "id", "warnings", "help_wanted")

    def __init__(
        self,
        pairs: list[tuple[str, str]],
        id: str | None = None,
        warnings: list[str] | None = None,
        help_wanted: bool = False,
    ) -> None:
        self.pairs = pairs
        self.id = id
        self.warnings: list[str] = [] if warnings is None else warnings
        self.help_wanted = help_wanted

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def get(self, key: str) -> str | None:
        """The value of ``key`` as QEMU looks it up: the last one given."""
        for name, value in reversed(self.pairs):
            if name == key:
                return value
        return None

    def as_dict(self) -> dict[str, str]:
        """Keys to values, the last duplicate winning, with ``id`` as extracted.

        This is what the opts visitor sees: ``id`` pairs are replaced by
        :attr:`id`.
        """
        out: dict[str, str] = {}
        for name, value in self.pairs:
            if name != "id":
                out[name] = value
        if self.id is not None:
            out["id"] = self.id
        return out

    def has_help_opt(self) -> bool:
        """True when any key is ``help`` or ``?``, whatever its value."""
        return any(is_help_option(name) for name, _ in self.pairs)


def _parse_opts(
    text: str,
    firstname: str | None,
    desc: Mapping[str, OptType] | None,
    warnings: list[str],
) -> QemuOptsResult:
    result = QemuOptsResult(pairs=[], warnings=warnings)
    pos = 0
    while pos < len(text):
        element, pos = _opts_element(text, pos, firstname)
        firstname = None
        if element.warning is not None:
            warnings.append(element.warning)
        if desc is not None and element.help:
            result.help_wanted = True
            return result
        result.pairs.append((element.name, element.value))
        if desc is not None and element.name != "id":
            kind = desc.get(element.name)
            if kind is None:
                raise OptsError(f"Invalid parameter '{element.name}'")
            qemu_opt_value_to(kind, element.name, element.value, warnings)
    return result


def parse_qemu_opts(text: str, implied_key: str | None = None) -> QemuOptsResult:
    """Parse a QemuOpts string as ``-object`` does (any key accepted).

    This never fails: every string means something to QemuOpts. Checks of
    the id and of keys belong to the option group (:class:`OptsList`) and
    to the visitor that reads the values.

    >>> r = parse_qemu_opts("secret,id=s,data=x,,y,data", "qom-type")
    >>> r.as_dict()
    {'qom-type': 'secret', 'data': 'on', 'id': 's'}
    >>> r.warnings
    ["short-form boolean option 'data' deprecated\\nPlease use data=on instead"]
    """
    text = _c_string(text)
    result = _parse_opts(text, implied_key, None, [])
    result.id = _opts_find_id(text)
    return result


class OptsList:
    """An option group (QEMU's ``QemuOptsList``): ``object``, ``chardev``...

    It remembers the ids parsed so far, as QEMU does for the life of the
    process, and applies the group's checks in QEMU's order:

    1. the id (found as :attr:`QemuOptsResult.id` describes): groups that
       merge their options refuse it (``Invalid parameter 'id'``); others
       need an identifier (``Parameter 'id' expects an identifier`` with
       :data:`ID_HINT`) not seen before (``Duplicate ID 'a' for object``);
    2. then the elements in order; with a ``desc`` (key to ``string``,
       ``bool``, ``number`` or ``size``), unknown keys give
       ``Invalid parameter 'x'``, values are checked by
       :func:`qemu_opt_value_to`, and a bare ``help``/``?`` stops parsing
       with :attr:`QemuOptsResult.help_wanted` set.

    A string that fails, or that asks for help, registers nothing.

    :param name: the group name used in messages (``object``, ``chardev``).
    :param implied_key: the key of a first element without ``=``.
    :param merge_lists: the group has a single, id-less set of options
        (``-name``, ``-machine`` in older QEMUs).
    :param desc: the known keys and their types; ``None`` accepts any key
        (``object``).
    """

    def __init__(
        self,
        name: str,
        implied_key: str | None = None,
        *,
        merge_lists: bool = False,
        desc: Mapping[str, OptType] | None = None,
    ) -> None:
        self.name = name
        self.implied_key = implied_key
        self.merge_lists = merge_lists
        self.desc = dict(desc) if desc is not None else None
        self._ids: set[str] = set()

    def parse(
        self, text: str, *, permit_abbrev: bool = True, warnings: list[str] | None = None
    ) -> QemuOptsResult:
        """Parse ``text`` into this group and register its id.

        :param permit_abbrev: honour the implied key (QEMU passes true for
            the command-line options).
        :param warnings: if given, warnings are appended here as they
            occur, so that those printed before an error are not lost.
        :raises OptsError: for the id checks and, with a ``desc``, for keys
            and values.
        """
        text = _c_string(text)
        ident = _opts_find_id(text)
        if self.merge_lists:
            if ident is not None:
                raise OptsError("Invalid parameter 'id'")
        elif ident is not None:
            if not id_wellformed(ident):
                raise OptsError("Parameter 'id' expects an identifier", hint=ID_HINT)
            if ident in self._ids:
                raise OptsError(f"Duplicate ID '{ident}' for {self.name}")
        firstname = self.implied_key if permit_abbrev else None
        collected: list[str] = []
        try:
            result = _parse_opts(text, firstname, self.desc, collected)
        finally:
            if warnings is not None:
                warnings.extend(collected)
        result.id = ident
        if not result.help_wanted and ident is not None and not self.merge_lists:
            self._ids.add(ident)
        return result

    def __contains__(self, ident: object) -> bool:
        return ident in self._ids

    def remove(self, ident: str) -> None:
        """Forget ``ident``, as QEMU does when ``object-del`` removes an object."""
        self._ids.discard(ident)


# --- help requests -------------------------------------------------------------


class HelpRequest(Record):
    """What an ``-object`` string asks for instead of an object.

    :ivar type_name: ``None`` to list every creatable type (``List of user
        creatable objects:``); else the type whose options to print.
    :ivar list_if_unknown: what to do when ``type_name`` is not a QOM type:
        keyval front ends list all types (``True``); ``qemu-system -object``
        ignores the request and goes on to create the object (``False``),
        which then fails in the QAPI layer.

    Any known QOM class name gets its options printed, creatable or not
    (``container,help`` prints ``There are no options for container.``).
    """

    __slots__ = ("list_if_unknown", "type_name")
    _fields = ("type_name", "list_if_unknown")

    def __init__(self, type_name: str | None, list_if_unknown: bool) -> None:
        self.type_name = type_name
        self.list_if_unknown = list_if_unknown


def qemu_opts_object_help(result: QemuOptsResult) -> HelpRequest | None:
    """The help request in a ``qemu-system -object`` string, if any.

    ``qom-type`` is the last one given. ``help``/``?`` as its value lists
    all types (so ``help``, ``?`` and ``qom-type=help`` do); otherwise any
    key ``help`` or ``?``, whatever its value (``help=foo``, even a flag
    ``nohelp``), asks for that type's options. With no ``qom-type`` there is
    no help: the caller reports ``Parameter 'qom-type' is missing``.
    """
    type_name = result.get("qom-type")
    if type_name is None:
        return None
    if is_help_option(type_name):
        return HelpRequest(None, True)
    if result.has_help_opt():
        return HelpRequest(type_name, False)
    return None


def keyval_object_help(args: KeyvalDict) -> HelpRequest | None:
    """The help request in a keyval ``--object`` string, if any.

    Help is asked by a bare ``help`` or ``?`` element anywhere (not by
    ``help=x`` nor by ``qom-type=help``). It shows the options of
    ``qom-type`` when that is a known type, and the type list otherwise.
    """
    if not args.help_wanted:
        return None
    type_name = args.get("qom-type")
    return HelpRequest(type_name if isinstance(type_name, str) else None, True)


# --- keyval ---------------------------------------------------------------------


class KeyvalDict(dict[str, KeyvalValue]):
    """The dict :func:`parse_keyval` returns, plus whether help was asked for."""

    help_wanted: bool = False


def _qapi_name_len(key: str, pos: int, end: int) -> int:
    """Length of the QAPI name at ``key[pos:end]``, 0 if there is none.

    A name is a letter then letters, digits, ``-`` and ``_``, optionally
    after a downstream prefix ``__RFQDN_`` whose RFQDN may contain dots.
    """
    p = pos
    if p < end and key[p] == "_":
        p += 1
        if p >= end or key[p] != "_":
            return 0
        p += 1
        while p < end and key[p] in _RFQDN:
            p += 1
        if p >= end or key[p] != "_":
            return 0
        p += 1
    if p >= end or key[p] not in _ALPHA:
        return 0
    p += 1
    while p < end and key[p] in _QAPI_TAIL:
        p += 1
    return p - pos


def _index_len(key: str, pos: int, end: int) -> int:
    """Length of the run of digits at ``key[pos:end]`` (a list index)."""
    p = pos
    while p < end and key[p] in _DIGITS:
        p += 1
    return p - pos


def _key_to_index(key: str) -> int:
    """A fragment's list index (capped at INT_MAX), or -1 if not all digits."""
    if not key or not all(c in _DIGITS for c in key):
        return -1
    significant = key.lstrip("0")
    return min(int(significant or "0"), _INT_MAX) if len(significant) <= 10 else _INT_MAX


_Node: TypeAlias = "dict[str, _Node] | str"


def _keyval_put(
    cur: dict[str, _Node], fragment: str, value: str | None, key: str, upto: int
) -> dict[str, _Node] | None:
    """Make ``cur[fragment]`` a dict (``value`` None) or the string ``value``."""
    old = cur.get(fragment)
    if old is not None:
        if isinstance(old, dict) == (value is not None):
            raise OptsError(f"Parameters '{key[:upto]}.*' used inconsistently")
        if value is None:
            assert isinstance(old, dict)
            return old
    if value is None:
        new: dict[str, _Node] = {}
        cur[fragment] = new
        return new
    cur[fragment] = value
    return None


def _keyval_one(
    root: dict[str, _Node], text: str, pos: int, implied_key: str | None
) -> tuple[int, bool]:
    """Parse the element at ``pos``; returns the next position and help flag."""
    n = len(text)
    stop = _key_end(text, pos)
    length = stop - pos
    implied_value: str | None = None
    next_pos = 0
    if length and stop < n and text[stop] == "=":
        key = text[pos:stop]
    elif length:
        if text[pos:stop] in ("help", "?"):
            return (stop + 1 if stop < n else stop), True
        if implied_key is not None:
            implied_value = text[pos:stop]
            next_pos = stop + 1 if stop < n else stop
            key = implied_key
        else:
            key = text[pos:stop]
    else:
        key = ""
    key_end = len(key)

    cur = root
    s = 0
    fragment = ""
    while True:
        if s != 0 and key[s : s + 1] in _DIGITS:
            flen = _index_len(key, s, key_end)
        else:
            flen = _qapi_name_len(key, s, key_end)
        if not flen or (s + flen < key_end and key[s + flen] != "."):
            raise OptsError(f"Invalid parameter '{key}'")
        if flen >= 128:
            where = " fragment" if s != 0 or s + flen != key_end else ""
            raise OptsError(f"Parameter{where} '{key[s : s + flen]}' is too long")
        if s != 0:
            sub = _keyval_put(cur, fragment, None, key, s - 1)
            assert sub is not None
            cur = sub
        fragment = key[s : s + flen]
        s += flen
        if s >= key_end:
            break
        s += 1

    if implied_value is not None:
        value = implied_value
    else:
        after = pos + key_end
        if after >= n or text[after] != "=":
            raise OptsError(f"Expected '=' after parameter '{key}'")
        value, next_pos = _opt_value(text, after + 1)
        if next_pos < n:
            next_pos += 1
    _keyval_put(cur, fragment, value, key, key_end)
    return next_pos, False


def _keyval_listify(cur: dict[str, _Node], prefix: str) -> KeyvalValue:
    """Turn dicts whose keys are all list indexes into lists, depth first.

    Walks in QDict order, so that the first error QEMU would report is
    the one reported.
    """
    # Imported here: keyval also parses -machine on every start-up.
    from qomhost.qapi.json import qdict_order

    out: dict[str, KeyvalValue] = {}
    has_index = has_member = False
    for key in qdict_order(cur):
        if _key_to_index(key) >= 0:
            has_index = True
        else:
            has_member = True
        child = cur[key]
        out[key] = _keyval_listify(child, f"{prefix}{key}.") if isinstance(child, dict) else child
    if has_index and has_member:
        raise OptsError(f"Parameters '{prefix}*' used inconsistently")
    if not has_index:
        # Keep the command line's order for the caller; qdict_order()
        # recovers QEMU's when it matters.
        return {key: out[key] for key in cur}
    elements: dict[int, KeyvalValue] = {}
    max_index = -1
    for key, value in out.items():
        index = _key_to_index(key)
        max_index = max(max_index, index)
        if index < len(cur):
            # Distinct keys such as "0" and "00" can name the same element;
            # the later one in QDict order wins.
            elements[index] = value
    for i in range(min(len(cur) + 1, max_index + 1)):
        if i not in elements:
            raise OptsError(f"Parameter '{prefix}{i}' missing")
    return [elements[i] for i in range(len(elements))]


def parse_keyval(
    text: str, implied_key: str | None = None, *, allow_help: bool = True
) -> KeyvalDict:
    """Parse a keyval string into nested dicts and lists of strings.

    :param implied_key: the key of a first element without ``=``
        (``qom-type`` for ``--object``); its value ends at the first comma.
    :param allow_help: when false, a help request is an error
        (``Help is not available for this option``), as for options
        without help.
    :returns: a :class:`KeyvalDict`; its ``help_wanted`` is set when a bare
        ``help`` or ``?`` element was present (see :func:`keyval_object_help`).
    :raises OptsError: ``Invalid parameter 'a..b'``, ``Expected '=' after
        parameter 'data'``, ``Parameters 'a.*' used inconsistently``,
        ``Parameter 'a.0' missing``, ``Parameter 'x' is too long``,
        ``Parameter fragment 'x' is too long``.

    >>> parse_keyval("authz-list,id=a,rules.0.match=x,,y", "qom-type")
    {'qom-type': 'authz-list', 'id': 'a', 'rules': [{'match': 'x,y'}]}
    """
    text = _c_string(text)
    root: dict[str, _Node] = {}
    help_wanted = False
    pos = 0
    while pos < len(text):
        pos, is_help = _keyval_one(root, text, pos, implied_key)
        help_wanted = help_wanted or is_help
        implied_key = None
    if help_wanted and not allow_help:
        raise OptsError("Help is not available for this option")
    tree = _keyval_listify(root, "")
    assert isinstance(tree, dict)
    result = KeyvalDict(tree)
    result.help_wanted = help_wanted
    return result
