"""QEMU's error model: an error class plus the exact message text.

QEMU reports every failure as an ``Error`` carrying a QMP error class
(almost always ``GenericError``) and a human-readable description. Some
errors also carry a *hint*, an extra line that the command line and HMP
print but QMP never sends. qomhost keeps the same three fields so that a
failure can be shown byte-for-byte as QEMU shows it on any front end.

Exception tree::

    QemuError                      root of everything qomhost raises on bad input
     ├── JsonParseError            QEMU's JSON dialect could not be parsed
     ├── OptsError                 -object/-chardev option syntax (QemuOpts, keyval)
     ├── CommandError              a QMP command failed (class + desc)
     └── ObjectError               QOM: add/delete/property failures
"""

from __future__ import annotations

__all__ = [
    "COMMAND_NOT_FOUND",
    "DEVICE_NOT_FOUND",
    "GENERIC_ERROR",
    "CommandError",
    "JsonParseError",
    "ObjectError",
    "OptsError",
    "QemuError",
]

GENERIC_ERROR = "GenericError"
COMMAND_NOT_FOUND = "CommandNotFound"
DEVICE_NOT_FOUND = "DeviceNotFound"


class QemuError(Exception):
    """An error as QEMU reports it.

    :param desc: the message, exactly as QEMU words it.
    :param error_class: the QMP error class (``GenericError`` by default).
    :param hint: an extra line shown on the command line and in HMP only.
    """

    def __init__(
        self, desc: str, error_class: str = GENERIC_ERROR, hint: str | None = None
    ) -> None:
        super().__init__(desc)
        self.desc = desc
        self.error_class = error_class
        self.hint = hint

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.desc!r}, error_class={self.error_class!r})"

    def to_qmp(self) -> dict[str, str]:
        """The ``error`` member of a QMP reply (hints are never sent)."""
        return {"class": self.error_class, "desc": self.desc}


class JsonParseError(QemuError):
    """Input in QEMU's JSON dialect was malformed (``JSON parse error, ...``)."""


class OptsError(QemuError):
    """A ``key=value,...`` option string was malformed or had a bad key."""


class CommandError(QemuError):
    """A monitor command failed."""


class ObjectError(QemuError):
    """Creating, deleting or accessing a QOM object or property failed."""
