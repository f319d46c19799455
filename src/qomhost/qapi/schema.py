"""QAPI scalar kinds and the way each front end turns input into them.

QEMU checks a value twice on its way to an object: the QAPI layer gives it a
type (from JSON, from a QemuOpts string, from a keyval string), and then the
QOM property setter takes the typed value. Each front end words its errors
differently, so a :class:`Kind` knows how to accept a value from each of them:

* ``from_json``   -- the strict QObject input visitor (QMP, ``-object '{...}'``)
* ``from_string`` -- the string input visitor (HMP ``qom-set`` without ``-j``)
* ``from_opts``   -- the opts visitor (``-object a=b`` on the qemu command line)
* ``from_keyval`` -- the keyval visitor (HMP ``object_add``)

Every conversion returns a plain Python value (``str``, ``bool``, ``int``,
``list``, ``dict``) or raises :class:`~qomhost.errors.QemuError`.
"""

from __future__ import annotations

from qomhost._record import Record
from qomhost.errors import QemuError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Callable, Mapping, Sequence
    from typing import TypeVar

    V = TypeVar("V")

__all__ = [
    "ANY",
    "BOOL",
    "INT32",
    "INT64",
    "STR",
    "UINT32",
    "UINT64",
    "EnumKind",
    "Kind",
    "ListKind",
    "Member",
    "ScalarKind",
    "StructKind",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

_INT_RANGES = {
    "int64": (INT64_MIN, INT64_MAX, "int64_t"),
    "int32": (-(2**31), 2**31 - 1, "int32_t"),
    "uint64": (0, UINT64_MAX, "uint64_t"),
    "uint32": (0, 2**32 - 1, "uint32_t"),
}


def _type_error(name: str, expected: str) -> QemuError:
    return QemuError(f"Invalid parameter type for '{name}', expected: {expected}")


def _value_error(name: str, expected: str) -> QemuError:
    return QemuError(f"Parameter '{name}' expects {expected}")


# strtoll/strtoull with base 0, as qemu_strtoi64() uses them: optional
# leading whitespace and sign, then 0x.., 0.. (octal) or decimal, and the
# whole string must be consumed. Compiled on first use.
_C_INTEGER: re.Pattern[str] | None = None


def parse_c_integer(text: str) -> int | None:
    """Parse ``text`` as C's ``strtoll(text, &end, 0)`` with ``*end == 0``.

    Returns ``None`` when the text is not one complete integer. Range is
    not checked here.
    """
    global _C_INTEGER
    if _C_INTEGER is None:
        import re

        _C_INTEGER = re.compile(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
    m = _C_INTEGER.fullmatch(text)
    if m is None:
        return None
    digits = m.group(2)
    if digits[:2] in ("0x", "0X"):
        value = int(digits[2:], 16)
    elif len(digits) > 1 and digits[0] == "0":
        value = int(digits, 8)
    else:
        value = int(digits)
    return -value if m.group(1) == "-" else value


class Kind(Record):
    """How a QAPI member or QOM property value is typed and converted."""

    #: the name QEMU's ``qom-list`` shows for a property of this kind
    qom_type: str

    def from_json(self, name: str, value: object) -> object:
        """Accept a value from the strict JSON (QObject) input visitor."""
        return value

    def from_string(self, name: str, text: str) -> object:
        """Accept a value from the string input visitor (HMP ``qom-set``)."""
        raise QemuError(f"Parameter '{name}' expects a scalar value")

    def from_opts(self, name: str, text: str) -> object:
        """Accept a value from the opts visitor (``-object`` on the command line)."""
        return self.from_string(name, text)

    def from_keyval(self, name: str, text: str) -> object:
        """Accept a value from the keyval input visitor (HMP ``object_add``)."""
        return self.from_string(name, text)


class ScalarKind(Kind):
    """``str``, ``bool`` and the fixed-width integers."""

    _fields = ("name", "qom_type")

    def __init__(self, name: str, qom_type: str = "any") -> None:
        self.name = name
        self.qom_type = qom_type

    def from_json(self, name: str, value: object) -> object:
        kind = self.name
        if kind == "str":
            if not isinstance(value, str):
                raise _type_error(name, "string")
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise _type_error(name, "boolean")
            return value
        if kind == "any":
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            if kind.startswith("int"):
                raise _type_error(name, "integer")
            # QEMU's unsigned visitor words a non-number as a bad value.
            raise _value_error(name, "uint64")
        lo, hi, c_name = _INT_RANGES[kind]
        if kind.startswith("int"):
            # QNum holds int64 or uint64; only the former is an "integer".
            if not INT64_MIN <= value <= INT64_MAX:
                raise _type_error(name, "integer")
            if not lo <= value <= hi:
                raise _value_error(name, c_name)
            return value
        # Unsigned members accept negative int64 numbers, which wrap.
        if value < 0:
            if value < INT64_MIN:
                raise _value_error(name, "uint64")
            value += 2**64
        if value > UINT64_MAX:
            raise _value_error(name, "uint64")
        if value > hi:
            raise _value_error(name, c_name)
        return value

    def from_string(self, name: str, text: str) -> object:
        kind = self.name
        if kind in ("str", "any"):
            return text
        if kind == "bool":
            if text in ("on", "yes", "true"):
                return True
            if text in ("off", "no", "false"):
                return False
            raise _value_error(name, "boolean")
        value = parse_c_integer(text)
        lo, hi, c_name = _INT_RANGES[kind]
        base = "int64" if kind.startswith("int") else "uint64"
        if value is None:
            raise _value_error(name, base)
        if base == "int64":
            if not INT64_MIN <= value <= INT64_MAX:
                raise _value_error(name, "int64")
        else:
            # strtoull accepts a sign and wraps negative numbers.
            if value < 0:
                if -value > UINT64_MAX:
                    raise _value_error(name, "uint64")
                value = (value + 2**64) % 2**64
            if value > UINT64_MAX:
                raise _value_error(name, "uint64")
        if not lo <= value <= hi:
            raise _value_error(name, c_name)
        return value

    def from_opts(self, name: str, text: str) -> object:
        from qomhost.qapi.opts import opts_value_to

        return opts_value_to(self.name, name, text)

    def from_keyval(self, name: str, text: str) -> object:
        from qomhost.qapi.opts import keyval_value_to

        return keyval_value_to(self.name, name, text)


STR = ScalarKind("str", "string")
BOOL = ScalarKind("bool", "bool")
INT64 = ScalarKind("int64", "int")
INT32 = ScalarKind("int32", "int32_t")
UINT32 = ScalarKind("uint32", "uint32")
UINT64 = ScalarKind("uint64", "uint64")
ANY = ScalarKind("any", "any")


class EnumKind(Kind):
    """A QAPI enum: the value is one of ``values`` given by name."""

    _fields = ("qom_type", "values")

    def __init__(self, qom_type: str, values: tuple[str, ...]) -> None:
        self.qom_type = qom_type
        self.values = values

    def _check(self, name: str, value: str) -> str:
        if value not in self.values:
            raise QemuError(f"Parameter '{name}' does not accept value '{value}'")
        return value

    def from_json(self, name: str, value: object) -> object:
        if not isinstance(value, str):
            raise _type_error(name, "string")
        return self._check(name, value)

    def from_string(self, name: str, text: str) -> object:
        return self._check(name, text)

    def from_opts(self, name: str, text: str) -> object:
        return self._check(name, text)

    def from_keyval(self, name: str, text: str) -> object:
        return self._check(name, text)


class Member(Record):
    """One member of a QAPI struct: name, kind, and whether it is mandatory."""

    __slots__ = ("kind", "name", "optional")
    _fields = ("name", "kind", "optional")

    def __init__(self, name: str, kind: Kind, optional: bool = True) -> None:
        self.name = name
        self.kind = kind
        self.optional = optional


class StructKind(Kind):
    """A QAPI struct, visited member by member in schema order."""

    _fields = ("qom_type", "members")

    def __init__(self, qom_type: str, members: tuple[Member, ...] = ()) -> None:
        self.qom_type = qom_type
        self.members = members

    def from_json(self, name: str, value: object) -> object:
        if not isinstance(value, dict):
            raise _type_error(name, "object")
        return visit_struct_json(self.members, value, prefix=f"{name}.")


class ListKind(Kind):
    """A QAPI list of ``element`` values; the QOM type names the element."""

    _fields = ("qom_type", "element")

    def __init__(self, qom_type: str, element: Kind) -> None:
        self.qom_type = qom_type
        self.element = element

    def from_json(self, name: str, value: object) -> object:
        if not isinstance(value, list):
            raise _type_error(name, "array")
        return [self.element.from_json(f"{name}[{i}]", item) for i, item in enumerate(value)]


def first_unvisited(insert_order: Sequence[str], visited: set[str]) -> str | None:
    """The unknown member QEMU names: the first left in its GLib hash table.

    QEMU's input visitors put a struct's keys into a ``GHashTable`` (in
    ``insert_order``), remove each one a member visit consumes, and report
    the first key still there in the table's iteration order.
    """
    from qomhost.qom.ghash import GHashOrder

    if all(key in visited for key in insert_order):
        return None
    table = GHashOrder()
    for key in insert_order:
        table.insert(key)
    for key in insert_order:
        if key in visited:
            table.remove(key)
    return table.keys()[0]


def visit_struct_json(
    members: Sequence[Member],
    args: dict[str, object],
    prefix: str = "",
    visited: Sequence[str] = (),
) -> dict[str, object]:
    """Check ``args`` against ``members`` as QEMU's strict input visitor does.

    Members are visited in schema order, so the first bad member in that
    order is the one reported; members the schema does not know are
    reported only after every known member was accepted. ``visited``
    names keys the caller already consumed (``qom-type`` and ``id``).
    """
    out: dict[str, object] = {}
    for member in members:
        if member.name in args:
            out[member.name] = member.kind.from_json(prefix + member.name, args[member.name])
        elif not member.optional:
            raise QemuError(f"Parameter '{prefix}{member.name}' is missing")
    if len(out) + len(visited) < len(args):
        from qomhost.qapi.json import qdict_order

        unknown = first_unvisited(qdict_order(args), set(out) | set(visited))
        if unknown is not None:
            raise QemuError(f"Parameter '{prefix}{unknown}' is unexpected")
    return out


def visit_struct_strings(
    members: Sequence[Member],
    args: Mapping[str, V],
    convert: Callable[[Kind, str, V], object],
    insert_order: Sequence[str],
    unexpected: Callable[[str], QemuError],
    visited: Sequence[str] = (),
) -> dict[str, object]:
    """Like :func:`visit_struct_json` for string values (opts and keyval).

    ``convert(kind, name, value)`` picks the front end's conversion (keyval
    values may also be nested dicts and lists built from dotted keys),
    ``insert_order`` is the order the front end's visitor put the keys in
    its hash table, and ``unexpected(key)`` builds its error for an
    unknown key.
    """
    out: dict[str, object] = {}
    for member in members:
        if member.name in args:
            out[member.name] = convert(member.kind, member.name, args[member.name])
        elif not member.optional:
            raise QemuError(f"Parameter '{member.name}' is missing")
    unknown = first_unvisited(insert_order, set(out) | set(visited))
    if unknown is not None:
        raise unexpected(unknown)
    return out
