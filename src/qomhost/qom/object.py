"""QOM objects, classes and properties.

This mirrors QEMU's ``qom/object.c``:

* A *type* is data (:class:`TypeInfo`): name, parent, abstract, interfaces,
  and the properties its ``class_init`` registers. The Python class that
  implements a type is looked up lazily, so listing types imports nothing.
* An :class:`Object` has *instance* properties (added while it is
  initialised, or later, like ``child<>`` properties of a container) on top
  of the *class* properties of its type and every ancestor. The split is
  visible to users: ``-object T,help`` shows class properties only, while
  ``qom-list`` shows both.
* Property tables are GLib hash tables in QEMU, and their iteration order is
  what ``qom-list`` and friends print. :class:`~qomhost.qom.ghash.GHashOrder`
  reproduces that order exactly.
"""

from __future__ import annotations

import sys

from qomhost._record import Record
from qomhost.errors import DEVICE_NOT_FOUND, ObjectError
from qomhost.qapi.schema import ANY, Kind, Member
from qomhost.qom.ghash import GHashOrder

# No typing or dataclasses at run time: this module is on every start-up path.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, ClassVar

    Getter = Callable[[Any], object]
    Setter = Callable[[Any, object], None]

__all__ = [
    "NO_DEFAULT",
    "Object",
    "ObjectProperty",
    "TypeInfo",
    "TypeRegistry",
    "field_property",
    "types",
]

#: Marker for a property that has no default value to show in help.
NO_DEFAULT: Any = object()


class ObjectProperty:
    """One QOM property: a name, a QOM type string and its accessors.

    ``kind`` says how input is converted before the setter sees it; the
    setter receives an already-typed Python value and may reject it with
    the type's own message. ``target`` gives the object a ``child<>`` or
    ``link<>`` property points to.
    """

    __slots__ = (
        "default",
        "description",
        "getter",
        "is_child",
        "kind",
        "name",
        "setter",
        "target",
        "type",
    )

    def __init__(
        self,
        name: str,
        type: str,
        getter: Getter | None = None,
        setter: Setter | None = None,
        kind: Kind = ANY,
        description: str | None = None,
        default: object = NO_DEFAULT,
        target: Callable[[Any], Object | None] | None = None,
        is_child: bool = False,
    ) -> None:
        self.name = name
        self.type = type
        self.getter = getter
        self.setter = setter
        self.kind = kind
        self.description = description
        self.default = default
        self.target = target
        self.is_child = is_child

    def __repr__(self) -> str:
        return f"ObjectProperty(name={self.name!r}, type={self.type!r})"


class TypeInfo(Record):
    """A QOM type as data.

    ``impl`` is ``"module:Class"`` for the Python class implementing the
    type; it is imported only when an instance or the type's property
    list is needed. ``members`` is the type's own QAPI ``*Properties``
    struct (members of ancestors come first, as in QAPI ``base:``); it is
    ``None`` for types that are not created through ``-object``.
    """

    __slots__ = ("abstract", "impl", "interfaces", "late", "name", "parent")
    _fields = ("name", "parent", "impl", "abstract", "interfaces", "late")

    def __init__(
        self,
        name: str,
        parent: str | None,
        impl: str | None = None,
        abstract: bool = False,
        interfaces: tuple[str, ...] = (),
        late: bool = False,
    ) -> None:
        self.name = name
        self.parent = parent
        self.impl = impl
        self.abstract = abstract
        self.interfaces = interfaces
        #: created after chardevs on the qemu command line (``object_create_late``)
        self.late = late


class _TypeImpl:
    """A type once its class has been initialised (``type_initialize``)."""

    __slots__ = ("cls", "info", "members", "order", "parent", "properties")

    def __init__(
        self,
        info: TypeInfo,
        cls: type[Object],
        parent: _TypeImpl | None,
        properties: dict[str, ObjectProperty],
        order: GHashOrder,
        members: tuple[Member, ...],
    ) -> None:
        self.info = info
        self.cls = cls
        self.parent = parent
        self.properties = properties
        self.order = order
        self.members = members


class TypeRegistry:
    """The table of QOM types, the single source of type names.

    Both the option parsers and ``add_object`` consult this table, so a
    type name can never be accepted by one and rejected by the other.
    """

    def __init__(self) -> None:
        self._infos: dict[str, TypeInfo] = {}
        self._impls: dict[str, _TypeImpl] = {}

    def register(self, info: TypeInfo) -> None:
        """Add a type. Its parent must be registered first."""
        if info.name in self._infos:
            raise ValueError(f"type {info.name!r} registered twice")
        if info.parent is not None and info.parent not in self._infos:
            raise ValueError(f"type {info.name!r}: unknown parent {info.parent!r}")
        self._infos[info.name] = info

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __iter__(self) -> Iterator[TypeInfo]:
        return iter(self._infos.values())

    def info(self, name: str) -> TypeInfo | None:
        """The :class:`TypeInfo` called ``name``, or ``None``."""
        return self._infos.get(name)

    def ancestors(self, name: str) -> list[str]:
        """``name`` and its parents up to ``object``, most derived first."""
        chain: list[str] = []
        info = self._infos.get(name)
        while info is not None:
            chain.append(info.name)
            info = self._infos.get(info.parent) if info.parent else None
        return chain

    def is_a(self, name: str, ancestor: str) -> bool:
        """Whether type ``name`` is ``ancestor``, derives from it or implements it."""
        for type_name in self.ancestors(name):
            if type_name == ancestor:
                return True
            info = self._infos[type_name]
            for iface in info.interfaces:
                if ancestor in self.ancestors(iface):
                    return True
        return False

    def is_abstract(self, name: str) -> bool:
        info = self._infos[name]
        return info.abstract

    def impl(self, name: str) -> _TypeImpl:
        """The initialised type: its class, class properties and QAPI members."""
        found = self._impls.get(name)
        if found is not None:
            return found
        info = self._infos[name]
        parent = self.impl(info.parent) if info.parent else None
        if info.impl is not None:
            module_name, _, cls_name = info.impl.partition(":")
            __import__(module_name)
            cls: type[Object] = getattr(sys.modules[module_name], cls_name)
        else:
            cls = parent.cls if parent else Object
        props: dict[str, ObjectProperty] = {}
        order = GHashOrder()
        if info.impl is not None and "class_properties" in cls.__dict__:
            for prop in cls.class_properties():
                props[prop.name] = prop
                order.insert(prop.name)
        members = (parent.members if parent else ()) + (
            tuple(cls.__dict__.get("MEMBERS", ())) if info.impl is not None else ()
        )
        found = _TypeImpl(info, cls, parent, props, order, members)
        self._impls[name] = found
        return found

    def find_class_property(self, name: str, prop: str) -> ObjectProperty | None:
        """Look ``prop`` up in the class tables of ``name`` and its ancestors."""
        impl: _TypeImpl | None = self.impl(name)
        while impl is not None:
            found = impl.properties.get(prop)
            if found is not None:
                return found
            impl = impl.parent
        return None

    def class_properties(self, name: str) -> Iterator[ObjectProperty]:
        """Class properties in QEMU's iteration order (most derived class first)."""
        impl: _TypeImpl | None = self.impl(name)
        while impl is not None:
            for key in impl.order:
                yield impl.properties[key]
            impl = impl.parent


#: The process-wide type table, filled by :mod:`qomhost.qom.typetable`.
types = TypeRegistry()


class Object:
    """A QOM object.

    Subclasses implement one QOM type each. They declare their class
    properties in a ``class_properties()`` classmethod and, when
    user-creatable, their QAPI members in ``MEMBERS``. ``__init__`` plays
    the part of ``instance_init`` (parents first, via ``super()``).
    """

    MEMBERS: ClassVar[tuple[Member, ...]] = ()

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        self.parent: Object | None = None
        self.name: str | None = None
        self._props: dict[str, ObjectProperty] = {}
        self._prop_order = GHashOrder()

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        """The properties the ``object`` class registers: just ``type``."""
        return [ObjectProperty("type", "string", getter=lambda obj: obj.type_name)]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.type_name} at {self.canonical_path()}>"

    # --- lifecycle hooks -------------------------------------------------
    def complete(self) -> None:
        """``UserCreatable.complete``: called once every property is set."""

    def can_be_deleted(self) -> bool:
        """``UserCreatable.can_be_deleted``: veto ``object-del``."""
        return True

    def finalize(self) -> None:
        """Release what the object holds (threads, sockets, memory)."""

    # --- properties --------------------------------------------------------
    def add_property(self, prop: ObjectProperty) -> None:
        """Add an instance property (``object_property_add``)."""
        if self.find_property(prop.name) is not None:
            raise ObjectError(
                f"attempt to add duplicate property '{prop.name}' to object "
                f"(type '{self.type_name}')"
            )
        self._props[prop.name] = prop
        self._prop_order.insert(prop.name)

    def del_property(self, name: str) -> None:
        """Remove an instance property (``object_property_del``)."""
        del self._props[name]
        self._prop_order.remove(name)

    def find_property(self, name: str) -> ObjectProperty | None:
        """An instance property, else a class property of this type or above."""
        prop = self._props.get(name)
        if prop is not None:
            return prop
        return types.find_class_property(self.type_name, name)

    def properties(self) -> Iterator[ObjectProperty]:
        """Every property in QEMU's iteration order: instance, then classes."""
        for key in self._prop_order:
            yield self._props[key]
        yield from types.class_properties(self.type_name)

    def _require(self, name: str) -> ObjectProperty:
        prop = self.find_property(name)
        if prop is None:
            raise ObjectError(f"Property '{self.type_name}.{name}' not found")
        return prop

    def get_property(self, name: str) -> object:
        """``object_property_get``: the property's value as a JSON value."""
        prop = self._require(name)
        if prop.getter is None:
            raise ObjectError(f"Property '{self.type_name}.{name}' is not readable")
        return prop.getter(self)

    def set_property(self, name: str, value: object) -> None:
        """``object_property_set`` with an already-typed value."""
        prop = self._require(name)
        if prop.setter is None:
            raise ObjectError(f"Property '{self.type_name}.{name}' is not writable")
        prop.setter(self, value)

    def set_property_json(self, name: str, value: object) -> None:
        """Set from a JSON value, strictly typed (QMP ``qom-set``)."""
        prop = self._require(name)
        if prop.setter is None:
            raise ObjectError(f"Property '{self.type_name}.{name}' is not writable")
        prop.setter(self, prop.kind.from_json(name, value))

    def set_property_string(self, name: str, text: str) -> None:
        """Set from a string (HMP ``qom-set`` without ``-j``)."""
        prop = self._require(name)
        if prop.setter is None:
            raise ObjectError(f"Property '{self.type_name}.{name}' is not writable")
        prop.setter(self, prop.kind.from_string(name, text))

    # --- the composition tree ----------------------------------------------
    def add_child(self, name: str, child: Object) -> None:
        """Add ``child`` as ``child<type>`` property ``name`` (takes ownership)."""
        if self.find_property(name) is not None:
            raise ObjectError(
                f"attempt to add duplicate property '{name}' to object (type '{self.type_name}')"
            )
        self.add_property(
            ObjectProperty(
                name,
                f"child<{child.type_name}>",
                getter=lambda _obj: child.canonical_path(),
                target=lambda _obj: child,
                is_child=True,
            )
        )
        child.parent = self
        child.name = name

    def remove_child(self, name: str) -> Object:
        """Unparent the child called ``name`` and return it."""
        prop = self._props[name]
        assert prop.is_child and prop.target is not None
        child = prop.target(self)
        assert child is not None
        self.del_property(name)
        child.parent = None
        child.name = None
        return child

    def children(self) -> Iterator[tuple[str, Object]]:
        """``(name, child)`` pairs in QEMU's iteration order."""
        for key in self._prop_order:
            prop = self._props[key]
            if prop.is_child and prop.target is not None:
                child = prop.target(self)
                if child is not None:
                    yield key, child

    def child(self, name: str) -> Object | None:
        """The object a ``child<>`` or ``link<>`` property called ``name`` points to."""
        prop = self.find_property(name)
        if prop is None or prop.target is None:
            return None
        return prop.target(self)

    def canonical_path(self) -> str:
        """The absolute path, e.g. ``/objects/sec0``; ``/`` for the root."""
        parts: list[str] = []
        obj: Object | None = self
        while obj is not None and obj.parent is not None:
            assert obj.name is not None
            parts.append(obj.name)
            obj = obj.parent
        return "/" + "/".join(reversed(parts))


def field_property(name: str, attr: str, kind: Kind) -> ObjectProperty:
    """A read-write property kept in the attribute ``attr``.

    This is QEMU's ``object_class_property_add_str``/``_bool``: the QOM type
    is the kind's, and a string never set (``None``) reads back as ``""``.
    """

    def get(obj: Any) -> object:
        value = getattr(obj, attr)
        return "" if value is None else value

    def set_(obj: Any, value: object) -> None:
        setattr(obj, attr, value)

    return ObjectProperty(name, kind.qom_type, getter=get, setter=set_, kind=kind)


class Container(Object):
    """``container``: a plain node of the composition tree."""


def link_property(
    name: str, target_type: str, target: Callable[[Any], Object | None]
) -> ObjectProperty:
    """A read-only ``link<T>`` property whose getter shows the target's path."""

    def get(obj: Any) -> object:
        found = target(obj)
        return found.canonical_path() if found is not None else ""

    return ObjectProperty(name, f"link<{target_type}>", getter=get, target=target)


# --- paths ---------------------------------------------------------------


def resolve_path(root: Object, path: str) -> tuple[Object | None, bool]:
    """Resolve a QOM path as ``object_resolve_path`` does.

    Returns ``(object, ambiguous)``. An absolute path walks ``child<>`` and
    ``link<>`` properties from the root, ignoring empty components; ``..``
    has no meaning. A partial path matches any object whose path ends
    with its components and must be unique.
    """
    parts = path.split("/") if path else []
    if parts and parts[0] == "":
        return _resolve_abs(root, parts[1:]), False
    state = [False]
    found = _resolve_partial(root, parts, state)
    if state[0]:
        return None, True
    return found, False


def _resolve_abs(obj: Object | None, parts: list[str]) -> Object | None:
    for part in parts:
        if obj is None:
            return None
        if part == "":
            continue
        obj = obj.child(part)
    return obj


def _resolve_partial(parent: Object, parts: list[str], ambiguous: list[bool]) -> Object | None:
    found = _resolve_abs(parent, parts)
    for _name, child in parent.children():
        sub = _resolve_partial(child, parts, ambiguous)
        if sub is not None:
            if found is not None:
                ambiguous[0] = True
                return None
            found = sub
        if ambiguous[0]:
            return None
    return found


def require_path(root: Object, path: str) -> Object:
    """Resolve ``path`` or raise QEMU's ``Device '<path>' not found``."""
    found, _ambiguous = resolve_path(root, path)
    if found is None:
        raise ObjectError(f"Device '{path}' not found", DEVICE_NOT_FOUND)
    return found
