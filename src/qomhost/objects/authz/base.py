"""``authz``: the abstract parent of every authorization type.

A subclass implements :meth:`QAuthZ.check`, which answers for one identity
and raises :class:`~qomhost.errors.QemuError` when it cannot decide (PAM
could not start, say). :meth:`QAuthZ.is_allowed` is what a service calls:
an error is logged and counts as a denial, so a broken check never lets
anyone in.

As in QEMU, ``authz`` itself is not user-creatable (its concrete types
are) and has no properties; no authz type vetoes ``object-del``, so a
service that still names a deleted object gets ``Cannot find QAuthZ
object ID ...`` on its next check.
"""

from __future__ import annotations

from qomhost.errors import ObjectError, QemuError
from qomhost.qom.object import Object

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

    from qomhost.host import Host

__all__ = ["QAuthZ", "authz_is_allowed_by_id", "logger", "lookup_authz"]


def logger() -> logging.Logger:
    """The ``qomhost.authz`` logger (``logging`` is imported only when something is logged)."""
    import logging

    return logging.getLogger("qomhost.authz")


class QAuthZ(Object):
    """``authz``: decides whether an identity may use a service."""

    def check(self, identity: str) -> bool:
        """Whether ``identity`` is allowed; raises ``QemuError`` if that cannot be told."""
        raise NotImplementedError

    def is_allowed(self, identity: str) -> bool:
        """Whether ``identity`` is allowed. An error is logged and means no."""
        try:
            return self.check(identity)
        except QemuError as err:
            logger().warning("%s: %s", self.canonical_path(), err.desc)
            return False


def lookup_authz(host: Host, authz_id: str) -> QAuthZ:
    """The authz object ``authz_id`` under ``/objects``, with QEMU's errors."""
    obj = host.lookup_object(authz_id)
    if obj is None:
        raise ObjectError(f"Cannot find QAuthZ object ID {authz_id}")
    if not isinstance(obj, QAuthZ):
        raise ObjectError(f"Object '{authz_id}' is not a QAuthZ subclass")
    return obj


def authz_is_allowed_by_id(host: Host, authz_id: str, identity: str) -> bool:
    """``qauthz_is_allowed_by_id``: look the object up and ask it.

    Raises :class:`~qomhost.errors.ObjectError` when there is no object
    ``authz_id`` (``Cannot find QAuthZ object ID %s``) or it is not an
    authorization object (``Object '%s' is not a QAuthZ subclass``), and
    the object's own error when it cannot decide; a plain denial is
    ``False``.
    """
    return lookup_authz(host, authz_id).check(identity)
