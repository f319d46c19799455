"""Creating and deleting user-creatable objects, in QEMU's order of checks.

Two layers, as in QEMU:

* The QAPI layer (:func:`visit_object_options`) checks ``qom-type`` and
  ``id`` and the type's members (presence, JSON type, enum values,
  unknown members) and yields typed values. Each front end (QMP JSON,
  QemuOpts, keyval) converts its own input with its own wording.
* The QOM layer (:func:`add_object`) then creates the object:

  1. the id must be an identifier;
  2. the type must exist, be user-creatable, and not be abstract;
  3. the object is created and each property set, in QDict order;
  4. it is added under ``/objects`` (duplicate ids fail here);
  5. ``complete()`` runs.

  Any failure removes what was created, so nothing is left half-made.
"""

from __future__ import annotations

from qomhost.errors import ObjectError, QemuError
from qomhost.qapi.opts import ID_HINT, id_wellformed
from qomhost.qapi.schema import STR, Member, visit_struct_json
from qomhost.qom.object import Object, types
from qomhost.qom.typetable import USER_CREATABLE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from qomhost.qom.object import TypeInfo

__all__ = [
    "ID_HINT",
    "add_object",
    "creatable_types",
    "del_object",
    "id_wellformed",
    "members_for",
    "new_object",
    "type_help",
    "types_help",
    "visit_object_options",
]


def bad_id_error() -> ObjectError:
    return ObjectError("Parameter 'id' expects an identifier", hint=ID_HINT)


def creatable_types() -> list[TypeInfo]:
    """Concrete user-creatable types, sorted as ``-object help`` lists them."""
    found = [info for info in types if not info.abstract and types.is_a(info.name, USER_CREATABLE)]
    return sorted(found, key=lambda info: info.name.lower())


def qapi_type_names() -> set[str]:
    """The names QAPI's ``ObjectType`` enum accepts (plus the listfile alias)."""
    names = {info.name for info in creatable_types()}
    return names


# --- the QAPI layer ----------------------------------------------------------


def members_for(type_name: str) -> tuple[Member, ...]:
    """The QAPI members of a type's ``*Properties`` struct, base members first."""
    return types.impl(type_name).members


def check_qom_type(value: object) -> str:
    """Check a ``qom-type`` value against the ``ObjectType`` enum."""
    if not isinstance(value, str):
        raise QemuError("Invalid parameter type for 'qom-type', expected: string")
    if value not in qapi_type_names():
        raise QemuError(f"Parameter 'qom-type' does not accept value '{value}'")
    return value


def visit_object_options(args: Mapping[str, object]) -> tuple[str, str, dict[str, object]]:
    """Check ``object-add`` style JSON arguments; return ``(type, id, props)``.

    ``props`` holds the members that were given, typed, in schema order.
    """
    if "qom-type" not in args:
        raise QemuError("Parameter 'qom-type' is missing")
    type_name = check_qom_type(args["qom-type"])
    if "id" not in args:
        raise QemuError("Parameter 'id' is missing")
    ident = STR.from_json("id", args["id"])
    assert isinstance(ident, str)
    # qom-type and id were consumed above; the members never include them.
    props = visit_struct_json(members_for(type_name), dict(args), visited=("qom-type", "id"))
    return type_name, ident, props


# --- the QOM layer -----------------------------------------------------------


def new_object(type_name: str) -> Object:
    """``object_new``: an instance of a concrete type, initialised."""
    impl = types.impl(type_name)
    return impl.cls(type_name)


def add_object(
    objects_root: Callable[[], Object],
    type_name: str,
    ident: str,
    props: Mapping[str, object],
    prepare: Callable[[Object], None] | None = None,
) -> Object:
    """``user_creatable_add_type``: create, configure, attach and complete.

    ``objects_root`` returns ``/objects`` (created on first use, as in
    QEMU); ``prepare`` lets the host give the new object what it needs
    (e.g. a way to look up other objects) before its properties are set.
    """
    if not id_wellformed(ident):
        raise bad_id_error()
    info = types.info(type_name)
    if info is None:
        raise ObjectError(f"invalid object type: {type_name}")
    if not types.is_a(type_name, USER_CREATABLE):
        raise ObjectError(f"object type '{type_name}' isn't supported by object-add")
    if info.abstract:
        raise ObjectError(f"object type '{type_name}' is abstract")
    obj = new_object(type_name)
    if prepare is not None:
        prepare(obj)
    try:
        from qomhost.qapi.json import qdict_order

        for name in qdict_order(props):
            obj.set_property(name, props[name])
        root = objects_root()
        root.add_child(ident, obj)
    except BaseException:
        obj.finalize()
        raise
    try:
        obj.complete()
    except BaseException:
        root.remove_child(ident)
        obj.finalize()
        raise
    return obj


def del_object(objects_root: Callable[[], Object], ident: str) -> Object:
    """``user_creatable_del``: veto check, then unparent and finalise."""
    root = objects_root()
    obj = root.child(ident)
    if obj is None:
        raise ObjectError(f"object '{ident}' not found")
    if not obj.can_be_deleted():
        raise ObjectError(f"object '{ident}' is in use, can not be deleted")
    root.remove_child(ident)
    obj.finalize()
    return obj


# --- help ----------------------------------------------------------------------


def types_help() -> str:
    """``-object help``: the list of user-creatable types."""
    lines = ["List of user creatable objects:"]
    lines.extend(f"  {info.name}" for info in creatable_types())
    return "\n".join(lines) + "\n"


def property_help_line(name: str, qom_type: str, description: str | None, default: object) -> str:
    """One ``  name=<type>  - description (default: json)`` line."""
    from qomhost.qom.object import NO_DEFAULT

    line = f"  {name}=<{qom_type}>"
    has_default = default is not NO_DEFAULT
    if description or has_default:
        line = line.ljust(24) + " - "
    if description:
        line += description
    if has_default:
        from qomhost.qapi.json import dump_json

        line += f" (default: {dump_json(default)})"
    return line


def type_help(type_name: str) -> str | None:
    """``-object TYPE,help``; ``None`` when there is no such type."""
    if type_name not in types or types.info(type_name) is None:
        return None
    lines = []
    seen: set[str] = set()
    for prop in types.class_properties(type_name):
        if prop.setter is None or prop.name in seen:
            continue
        seen.add(prop.name)
        lines.append(property_help_line(prop.name, prop.type, prop.description, prop.default))
    if not lines:
        return f"There are no options for {type_name}.\n"
    lines.sort()
    return f"{type_name} options:\n" + "\n".join(lines) + "\n"
