"""``authz-pam``: ask PAM whether an account may use a service.

A check is what QEMU's ``qauthz_pam_is_allowed`` does: ``pam_start(service,
identity)`` with an all-zero ``struct pam_conv`` (there is nobody to
converse with), ``pam_acct_mgmt(PAM_SILENT)``, ``pam_end``. Only the
``account`` lines of ``/etc/pam.d/<service>`` take part; nothing is
authenticated. Failures are QEMU's errors, ``Unable to start PAM
transaction: %s`` and ``Unable to authorize user '%s': %s``, logged by
:meth:`~qomhost.objects.authz.base.QAuthZ.is_allowed` and counted as a
denial.

libpam is reached through ``ctypes``. It is loaded with ``RTLD_GLOBAL`` and
its functions are then looked up in the process's global scope
(``ctypes.CDLL(None)``), not in the library's own handle. In production
that finds libpam all the same; under ``LD_PRELOAD=libpam_wrapper.so`` it
finds the wrapper, which is how PAM is tested without touching the
system's configuration (python-pam and pamela resolve through the handle
and so bypass the wrapper). PAM modules may block (a network directory),
and, as in QEMU, a check waits for them.

Debian's QEMU 7.2 is built without ``authz-pam`` (``invalid object type:
authz-pam``); qomhost has it.
"""

from __future__ import annotations

from qomhost.errors import ObjectError
from qomhost.objects.authz.base import QAuthZ
from qomhost.qapi.schema import STR, Member
from qomhost.qom.object import ObjectProperty, field_property

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["PAM_SILENT", "PAM_SUCCESS", "PamDenied", "QAuthZPAM", "pam_account_check"]

PAM_SUCCESS = 0
PAM_SILENT = 0x8000

_pam: Any = None
#: ``struct pam_conv``, defined with the binding
_pam_conv: Any = None


def _library() -> Any:
    """libpam's functions, resolved through the global scope (see the module doc)."""
    global _pam, _pam_conv
    if _pam is None:
        import ctypes
        import ctypes.util

        try:
            ctypes.CDLL("libpam.so.0", mode=ctypes.RTLD_GLOBAL)
        except OSError:
            name = ctypes.util.find_library("pam")
            try:
                ctypes.CDLL(name or "libpam.so", mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                raise ObjectError(f"Unable to load libpam: {exc}") from None
        lib = ctypes.CDLL(None)

        class PamConv(ctypes.Structure):
            _fields_ = [("conv", ctypes.c_void_p), ("appdata_ptr", ctypes.c_void_p)]

        handle_p = ctypes.POINTER(ctypes.c_void_p)
        lib.pam_start.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.POINTER(PamConv),
            handle_p,
        ]
        lib.pam_start.restype = ctypes.c_int
        lib.pam_acct_mgmt.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.pam_acct_mgmt.restype = ctypes.c_int
        lib.pam_end.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.pam_end.restype = ctypes.c_int
        lib.pam_strerror.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.pam_strerror.restype = ctypes.c_char_p
        _pam_conv = PamConv
        _pam = lib
    return _pam


class PamDenied(ObjectError):
    """PAM's account stack refused the user (``Unable to authorize user ...``).

    A plain denial, as opposed to PAM not working at all.
    """


def _strerror(lib: Any, handle: object, code: int) -> str:
    text = lib.pam_strerror(handle, code)
    return "" if text is None else bytes(text).decode("utf-8", "replace")


def _c_string(text: str) -> bytes:
    # A C string ends at its first NUL: that is what PAM would see.
    return text.encode("utf-8", "surrogateescape").split(b"\0", 1)[0]


def pam_account_check(service: str, user: str) -> None:
    """Run PAM's account stack of ``service`` for ``user``; raise if it refuses.

    Raises :class:`PamDenied` when the account is refused and
    :class:`~qomhost.errors.ObjectError` when PAM cannot be asked, with
    QEMU's messages.
    """
    import ctypes

    lib = _library()
    conv = _pam_conv()  # all zero: no conversation function
    handle = ctypes.c_void_p()
    ret = lib.pam_start(_c_string(service), _c_string(user), ctypes.byref(conv), handle)
    if ret != PAM_SUCCESS:
        raise ObjectError(f"Unable to start PAM transaction: {_strerror(lib, None, ret)}")
    try:
        ret = lib.pam_acct_mgmt(handle, PAM_SILENT)
        # QEMU asks for the text after pam_end(), from a freed handle;
        # Linux-PAM ignores the handle, so asking first gives the same text.
        reason = _strerror(lib, handle, ret) if ret != PAM_SUCCESS else ""
    finally:
        lib.pam_end(handle, ret)
    if ret != PAM_SUCCESS:
        raise PamDenied(f"Unable to authorize user '{user}': {reason}")


class QAuthZPAM(QAuthZ):
    """``authz-pam``: allowed when PAM's account management of ``service`` says so."""

    MEMBERS: ClassVar[tuple[Member, ...]] = (Member("service", STR, optional=False),)

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.service: str | None = None

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        return [field_property("service", "service", STR)]

    def complete(self) -> None:
        if self.service is None:
            raise ObjectError("The 'service' property must be set")

    def check(self, identity: str) -> bool:
        assert self.service is not None
        pam_account_check(self.service, identity)
        return True
