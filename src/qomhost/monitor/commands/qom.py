"""QOM commands: object-add/del and the qom-* family."""

from __future__ import annotations

from qomhost.errors import DEVICE_NOT_FOUND, CommandError, QemuError
from qomhost.monitor.commands import CommandContext, command
from qomhost.qapi.schema import ANY, BOOL, STR, Member
from qomhost.qom.object import ObjectProperty, require_path, resolve_path, types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


@command("object-add", boxed=True)
def object_add(ctx: CommandContext, args: dict[str, Any]) -> object:
    """Create a user-creatable object (``ObjectOptions`` flattened)."""
    ctx.host.object_add(args)
    return {}


@command("object-del", [Member("id", STR, optional=False)])
def object_del(ctx: CommandContext, args: dict[str, Any]) -> object:
    """Delete an object from ``/objects``."""
    ctx.host.del_object(args["id"])
    return {}


def _info(prop: ObjectProperty, with_description: bool) -> dict[str, object]:
    entry: dict[str, object] = {"name": prop.name, "type": prop.type}
    if with_description and prop.description is not None:
        entry["description"] = prop.description
    return entry


@command("qom-list", [Member("path", STR, optional=False)])
def qom_list(ctx: CommandContext, args: dict[str, Any]) -> object:
    """List the properties of the object at ``path``."""
    path = args["path"]
    obj, ambiguous = resolve_path(ctx.host.root, path)
    if ambiguous:
        raise QemuError(f"Path '{path}' is ambiguous")
    if obj is None:
        raise CommandError(f"Device '{path}' not found", DEVICE_NOT_FOUND)
    # QEMU builds the list by prepending, so it comes out reversed.
    return [_info(prop, False) for prop in reversed(list(obj.properties()))]


@command("qom-get", [Member("path", STR, optional=False), Member("property", STR, optional=False)])
def qom_get(ctx: CommandContext, args: dict[str, Any]) -> object:
    """Read one property."""
    obj = require_path(ctx.host.root, args["path"])
    return obj.get_property(args["property"])


@command(
    "qom-set",
    [
        Member("path", STR, optional=False),
        Member("property", STR, optional=False),
        Member("value", ANY, optional=False),
    ],
)
def qom_set(ctx: CommandContext, args: dict[str, Any]) -> object:
    """Write one property; the value is checked strictly against its type."""
    obj = require_path(ctx.host.root, args["path"])
    ctx.host.set_property_json(obj, args["property"], args["value"])
    return {}


def _type_rank() -> dict[str, int]:
    from qomhost.qom.type_order import QEMU_TYPE_ORDER

    return {name: i for i, name in enumerate(QEMU_TYPE_ORDER)}


@command("qom-list-types", [Member("implements", STR), Member("abstract", BOOL)])
def qom_list_types(ctx: CommandContext, args: dict[str, Any]) -> object:
    """List types, optionally those implementing ``implements``."""
    implements = args.get("implements")
    with_abstract = args.get("abstract", False)
    if implements is not None and implements not in types:
        return []
    rank = _type_rank()
    result = []
    for info in sorted(types, key=lambda i: (rank.get(i.name, len(rank)), i.name)):
        if info.abstract and not with_abstract:
            continue
        if implements is not None and not types.is_a(info.name, implements):
            continue
        entry: dict[str, object] = {"name": info.name}
        if info.abstract:
            entry["abstract"] = True
        if info.parent is not None:
            entry["parent"] = info.parent
        result.append(entry)
    return result


@command("qom-list-properties", [Member("typename", STR, optional=False)])
def qom_list_properties(ctx: CommandContext, args: dict[str, Any]) -> object:
    """List the properties of a type; a concrete type is instantiated to see them all."""
    from qomhost.qom.user_creatable import new_object

    name = args["typename"]
    info = types.info(name)
    if info is None:
        raise CommandError(f"Class '{name}' not found", DEVICE_NOT_FOUND)
    if not types.is_a(name, "object"):
        raise QemuError("Parameter 'typename' expects a QOM type")
    if info.abstract:
        props = list(types.class_properties(name))
    else:
        obj = new_object(name)
        try:
            props = list(obj.properties())
        finally:
            obj.finalize()
    return [_info(prop, True) for prop in reversed(props)]
