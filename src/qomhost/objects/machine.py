"""``/machine``: the machine object, as ``-machine none`` has it.

qomhost emulates no hardware, so the machine is the object QEMU builds for
``-machine none``: its class properties (settable with ``-machine
none,key=value`` and ``qom-set``), and the ``peripheral``,
``peripheral-anon`` and ``unattached`` containers. The memory regions and
system bus under ``unattached`` are plain nodes (``docs/compatibility.md``).
"""

from __future__ import annotations

from qomhost.errors import DEVICE_NOT_FOUND, ObjectError
from qomhost.qapi.schema import BOOL, INT64, STR, Kind
from qomhost.qom.object import (
    Container,
    Object,
    ObjectProperty,
    link_property,
    resolve_path,
    types,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["CGS_TYPE", "Machine", "NoneMachine"]

CGS_TYPE = "confidential-guest-support"

# (name, QOM type, kind or None for read-only structured values, default, description)
_PROPERTIES: tuple[tuple[str, str, Kind | None, object, str], ...] = (
    ("kernel", "string", STR, "", "Linux kernel image file"),
    ("initrd", "string", STR, "", "Linux initial ramdisk file"),
    ("append", "string", STR, "", "Linux kernel command line"),
    ("dtb", "string", STR, "", "Linux kernel device tree file"),
    ("dumpdtb", "string", STR, "", "Dump current dtb to a file and quit"),
    ("phandle-start", "int", INT64, 0, "The first phandle ID we may generate dynamically"),
    (
        "dt-compatible",
        "string",
        STR,
        "",
        'Overrides the "compatible" property of the dt root node',
    ),
    ("dump-guest-core", "bool", BOOL, True, "Include guest memory in a core dump"),
    ("mem-merge", "bool", BOOL, True, "Enable/disable memory merge support"),
    ("usb", "bool", BOOL, False, "Set on/off to enable/disable usb"),
    ("graphics", "bool", BOOL, True, "Set on/off to enable/disable graphics emulation"),
    ("firmware", "string", STR, "", "Firmware image"),
    ("suppress-vmdesc", "bool", BOOL, False, "Set on to disable self-describing migration"),
    ("boot", "BootConfiguration", None, {"order": ""}, "Boot configuration"),
    (
        "smp",
        "SMPConfiguration",
        None,
        {
            "cpus": 1,
            "maxcpus": 1,
            "threads": 1,
            "cores": 1,
            "dies": 1,
            "sockets": 1,
            "clusters": 1,
        },
        "CPU topology",
    ),
    ("memory", "MemorySizeConfiguration", None, {"size": 0}, "Memory size configuration"),
    (
        "memory-backend",
        "link<memory-backend>",
        None,
        "",
        "Set RAM backendValid value is ID of hostmem based backend",
    ),
    (
        "confidential-guest-support",
        "link<confidential-guest-support>",
        None,
        "",
        "Set confidential guest scheme to support",
    ),
    ("memory-encryption", "string", STR, "", "Set memory encryption object to use"),
)


def _property(name: str, qom_type: str, kind: Kind | None, description: str) -> ObjectProperty:
    def get(obj: Any) -> object:
        return obj.values[name]

    def set_(obj: Any, value: object) -> None:
        obj.values[name] = value

    if kind is None:
        return ObjectProperty(name, qom_type, getter=get, description=description)
    return ObjectProperty(
        name, qom_type, getter=get, setter=set_, kind=kind, description=description
    )


def _cgs_link(description: str) -> ObjectProperty:
    """``confidential-guest-support``: a link set by path, checked by type."""

    def set_(obj: Any, value: object) -> None:
        assert isinstance(value, str)
        obj.set_cgs(obj.resolve_link(value, "confidential-guest-support", CGS_TYPE))

    prop = link_property("confidential-guest-support", CGS_TYPE, lambda obj: obj.cgs)
    prop.setter = set_
    prop.kind = STR
    prop.description = description
    return prop


def _memory_encryption(description: str) -> ObjectProperty:
    """``memory-encryption``: the old spelling, an id under ``/objects``."""

    def get(obj: Any) -> object:
        return obj.cgs.name if obj.cgs is not None else ""

    def set_(obj: Any, value: object) -> None:
        assert isinstance(value, str)
        objects = obj.parent.child("objects") if obj.parent is not None else None
        found = objects.child(value) if objects is not None else None
        if found is None:
            raise ObjectError(f"No such memory encryption object '{value}'")
        obj.set_cgs(
            obj.resolve_link(found.canonical_path(), "confidential-guest-support", CGS_TYPE)
        )

    return ObjectProperty(
        "memory-encryption", "string", getter=get, setter=set_, kind=STR, description=description
    )


class Machine(Object):
    """``machine``: the abstract machine with its generic properties.

    ``cgs`` is the confidential-guest-support object (such as a
    ``sev-guest``) that ``memory-encryption=`` or ``confidential-guest-support=``
    bound; ``accel`` names the accelerator the command line started.
    """

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.values: dict[str, object] = {
            name: default for name, _t, _k, default, _d in _PROPERTIES
        }
        self.cgs: Object | None = None
        self.accel = "tcg"
        self.add_child("peripheral-anon", Container("container"))
        self.add_child("peripheral", Container("container"))

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        special = {"confidential-guest-support": _cgs_link, "memory-encryption": _memory_encryption}
        return [
            special[name](description)
            if name in special
            else _property(name, qom_type, kind, description)
            for name, qom_type, kind, _default, description in _PROPERTIES
        ]

    def set_cgs(self, cgs: Object | None) -> None:
        """Bind (or, with ``None``, unbind) the confidential-guest-support object."""
        self.cgs = cgs

    def resolve_link(self, path: str, name: str, target_type: str) -> Object | None:
        """Resolve a link property's new value as QEMU's link setter does."""
        if not path:
            return None
        root: Object = self
        while root.parent is not None:
            root = root.parent
        found, ambiguous = resolve_path(root, path)
        if found is not None and types.is_a(found.type_name, target_type):
            return found
        if ambiguous:
            raise ObjectError(f"Path '{path}' is ambiguous")
        if found is not None:
            raise ObjectError(f"Invalid parameter type for '{name}', expected: {target_type}")
        raise ObjectError(f"Device '{path}' not found", DEVICE_NOT_FOUND)

    def realize(self) -> None:
        """Machine init: the ``unattached`` container appears, with the
        system memory, I/O and bus nodes QEMU puts there."""
        from qomhost.qom.user_creatable import new_object

        unattached = Container("container")
        self.add_child("unattached", unattached)
        for name, type_name in (
            ("system[0]", "memory-region"),
            ("io[0]", "memory-region"),
            ("sysbus", "System"),
        ):
            unattached.add_child(name, new_object(type_name))


class NoneMachine(Machine):
    """``none-machine``: an empty machine, as ``-machine none`` creates."""
