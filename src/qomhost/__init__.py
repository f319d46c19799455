"""qomhost: QEMU's user-creatable object layer (``-object``, QOM, QMP) in Python.

The same command lines that QEMU 7.2 accepts create the same objects, with
the same properties, defaults, errors and QMP answers::

    from qomhost import Host

    host = Host()
    host.add_object("secret", "sec0", data="letmein")
    host.secret_bytes("sec0")                        # b'letmein'
"""

from __future__ import annotations

__all__ = ["Host", "QemuError", "__version__"]

__version__ = "0.1.0"

from qomhost.errors import QemuError

# Not typing.TYPE_CHECKING: importing typing would slow every start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from qomhost.host import Host


def __getattr__(name: str) -> Any:
    # Host pulls in the event loop and type table; import it on first use.
    if name == "Host":
        from qomhost.host import Host

        return Host
    raise AttributeError(name)
