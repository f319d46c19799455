"""From an ``-object`` or ``object_add`` string to a checked object spec.

``qemu-system -object`` takes QemuOpts (``secret,id=s,data=x``) or, when
the string starts with ``{``, JSON. HMP ``object_add`` takes keyval or
JSON. Each is checked against the QAPI schema of its type here, with the
wording of the visitor QEMU uses for that syntax; the object itself is
created later (:meth:`qomhost.host.Host.create_object`).
"""

from __future__ import annotations

from qomhost._record import Record
from qomhost.errors import OptsError, QemuError
from qomhost.qapi.opts import (
    HelpRequest,
    OptsList,
    keyval_object_help,
    parse_keyval,
    qemu_opts_object_help,
)
from qomhost.qapi.schema import EnumKind, Kind, ScalarKind, visit_struct_strings
from qomhost.qom.user_creatable import (
    check_qom_type,
    members_for,
    type_help,
    types_help,
    visit_object_options,
)

__all__ = ["ObjectSpec", "parse_object_cli", "parse_object_keyval"]


class ObjectSpec(Record):
    """An object to create: type, id, typed properties in schema order."""

    __slots__ = ("ident", "props", "type_name")
    _fields = ("type_name", "ident", "props")

    def __init__(self, type_name: str, ident: str, props: dict[str, object]) -> None:
        self.type_name = type_name
        self.ident = ident
        self.props = props


def help_text(request: HelpRequest) -> str | None:
    """The text a help request prints, or ``None`` to carry on creating."""
    if request.type_name is None:
        return types_help()
    text = type_help(request.type_name)
    if text is None and request.list_if_unknown:
        return types_help()
    return text


def _visit_json_text(text: str) -> ObjectSpec:
    from qomhost.qapi.json import parse_json

    value = parse_json(text)
    if not isinstance(value, dict):
        raise QemuError("Invalid parameter type for 'null', expected: object")
    type_name, ident, props = visit_object_options(value)
    return ObjectSpec(type_name, ident, props)


def parse_object_cli(text: str, group: OptsList, warnings: list[str]) -> ObjectSpec | str:
    """Parse one ``qemu-system -object`` argument: a spec, or help text.

    Errors raised here are parse-time errors (QEMU prints them with the
    ``-object ...:`` location). For the QemuOpts form the id was already
    checked; for JSON it is checked when the object is created.
    """
    if text.startswith("{"):
        return _visit_json_text(text)
    result = group.parse(text, warnings=warnings)
    type_name = result.get("qom-type")
    if type_name is None:
        raise QemuError("Parameter 'qom-type' is missing")
    request = qemu_opts_object_help(result)
    if request is not None:
        shown = help_text(request)
        if shown is not None:
            group.remove(result.id or "")
            return shown
    check_qom_type(type_name)
    if result.id is None:
        raise QemuError("Parameter 'id' is missing")
    values = result.as_dict()
    # The opts visitor's table holds each key once, in first-seen order,
    # with the id added last.
    order = list(dict.fromkeys(name for name, _ in result.pairs if name != "id"))
    order.append("id")

    def convert(kind: Kind, name: str, value: str) -> object:
        from_list = getattr(kind, "from_opts_list", None)
        if from_list is not None:
            # A list member takes every repetition of its key, in order.
            texts = [text for key, text in result.pairs if key == name]
            return from_list(name, texts)
        return kind.from_opts(name, value)

    props = visit_struct_strings(
        members_for(type_name),
        values,
        convert,
        order,
        lambda key: OptsError(f"Invalid parameter '{key}'"),
        visited=("qom-type", "id"),
    )
    return ObjectSpec(type_name, result.id, props)


def parse_object_keyval(text: str) -> tuple[str, str, dict[str, object]] | str:
    """Parse an HMP ``object_add`` argument: ``(type, id, props)`` or help text."""
    if text.startswith("{"):
        spec = _visit_json_text(text)
        return spec.type_name, spec.ident, spec.props
    args = parse_keyval(text, "qom-type")
    request = keyval_object_help(args)
    if request is not None:
        shown = help_text(request)
        if shown is not None:
            return shown
    from qomhost.qapi.json import qdict_order

    if "qom-type" not in args:
        raise QemuError("Parameter 'qom-type' is missing")
    raw_type = args["qom-type"]
    if not isinstance(raw_type, str):
        raise QemuError("Invalid parameter type for 'qom-type', expected: string")
    type_name = check_qom_type(raw_type)
    if "id" not in args:
        raise QemuError("Parameter 'id' is missing")
    ident = args["id"]
    if not isinstance(ident, str):
        raise QemuError("Invalid parameter type for 'id', expected: string")

    def convert(kind: Kind, name: str, value: object) -> object:
        if isinstance(value, str):
            return kind.from_keyval(name, value)
        return keyval_tree_to(kind, name, value)

    props = visit_struct_strings(
        members_for(type_name),
        args,
        convert,
        qdict_order(args),
        lambda key: QemuError(f"Parameter '{key}' is unexpected"),
        visited=("qom-type", "id"),
    )
    return type_name, ident, props


def keyval_tree_to(kind: Kind, name: str, value: object) -> object:
    """A member given with dotted keys (a nested dict or list) by the keyval visitor.

    A kind that can take such a value has ``from_keyval_tree``; for a
    scalar, QEMU's keyval visitor says ``Parameters 'name.*' are
    unexpected``.
    """
    from_tree = getattr(kind, "from_keyval_tree", None)
    if from_tree is not None:
        return from_tree(name, value)
    if isinstance(kind, (ScalarKind, EnumKind)):
        raise QemuError(f"Parameters '{name}.*' are unexpected")
    return kind.from_json(name, value)
