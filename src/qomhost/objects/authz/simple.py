"""``authz-simple``: exactly one identity is allowed.

The comparison is an exact, case-sensitive string comparison
(``g_str_equal``): no glob, no normalisation of distinguished names. The
identity is read at every check, so ``qom-set`` takes effect at once.

On the command line a distinguished name's commas are doubled::

    -object authz-simple,id=auth0,identity=CN=laptop.example.com,,O=Example Org,,L=London
"""

from __future__ import annotations

from qomhost.errors import ObjectError
from qomhost.objects.authz.base import QAuthZ
from qomhost.qapi.schema import STR, Member
from qomhost.qom.object import ObjectProperty, field_property

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar

__all__ = ["QAuthZSimple"]


class QAuthZSimple(QAuthZ):
    """``authz-simple``: allow ``identity`` and no one else."""

    MEMBERS: ClassVar[tuple[Member, ...]] = (Member("identity", STR, optional=False),)

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.identity: str | None = None

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        return [field_property("identity", "identity", STR)]

    def complete(self) -> None:
        if self.identity is None:
            raise ObjectError("The 'identity' property must be set")

    def check(self, identity: str) -> bool:
        return self.identity is not None and self.identity == identity
