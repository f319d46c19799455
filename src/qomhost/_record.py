"""A light stand-in for frozen dataclasses on the start-up path.

``dataclasses`` imports ``inspect`` and compiles code for every class it
decorates, which costs more than QEMU's whole start-up takes. A
:class:`Record` subclass names its fields in ``_fields`` and writes its
own ``__init__``; it gets equality, hashing and a ``repr`` from them.
"""

from __future__ import annotations

__all__ = ["FrozenRecord", "Record"]


class Record:
    """Value semantics (``==``, ``hash``, ``repr``) over the fields in ``_fields``."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({args})"


class FrozenRecord(Record):
    """A :class:`Record` whose fields cannot be rebound after ``__init__``
    (which sets them with :meth:`_init`)."""

    __slots__ = ()

    def _init(self, *values: object) -> None:
        for name, value in zip(self._fields, values, strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")
