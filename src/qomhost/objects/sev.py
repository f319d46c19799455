"""``sev-guest``: the launch settings of a guest whose memory AMD SEV encrypts.

As in QEMU 7.2 the object checks nothing when it is created (it has no
``complete()``); its settings are used when a machine names it with
``memory-encryption=`` (or ``confidential-guest-support=``) and the KVM
accelerator starts: :meth:`SevGuest.kvm_init` then runs QEMU's checks in
QEMU's order (see :mod:`qomhost.sev.launch`).

The four settings a guest owner gives up front (``sev-device``,
``dh-cert-file``, ``session-file``, ``kernel-hashes``) are class
properties; ``policy``, ``handle``, ``cbitpos`` and ``reduced-phys-bits``
are added per instance, which is why ``-object sev-guest,help`` lists only
the first four while ``qom-list`` shows all eight.

Library use::

    sev = host.add_object("sev-guest", "sev0", cbitpos=47, reduced_phys_bits=1)
    sev.policy          # 1: NODBG
"""

from __future__ import annotations

from qomhost.qapi.schema import BOOL, STR, UINT32, Member
from qomhost.qom.object import Object, ObjectProperty, field_property

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["DEFAULT_GUEST_POLICY", "DEFAULT_SEV_DEVICE", "ConfidentialGuestSupport", "SevGuest"]

DEFAULT_SEV_DEVICE = "/dev/sev"
#: NODBG: the owner must opt in to a debuggable guest
DEFAULT_GUEST_POLICY = 0x1


class ConfidentialGuestSupport(Object):
    """``confidential-guest-support``: the abstract parent of memory-encryption schemes.

    ``ready`` becomes true once the accelerator has set the scheme up.
    """

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.ready = False


class SevGuest(ConfidentialGuestSupport):
    """``sev-guest``: AMD SEV settings for one guest."""

    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("sev-device", STR),
        Member("dh-cert-file", STR),
        Member("session-file", STR),
        Member("policy", UINT32),
        Member("handle", UINT32),
        Member("cbitpos", UINT32),
        Member("reduced-phys-bits", UINT32, optional=False),
        Member("kernel-hashes", BOOL),
    )

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.sev_device: str | None = DEFAULT_SEV_DEVICE
        self.dh_cert_file: str | None = None
        self.session_file: str | None = None
        self.kernel_hashes = False
        self.policy = DEFAULT_GUEST_POLICY
        self.handle = 0
        self.cbitpos = 0
        self.reduced_phys_bits = 0
        #: what the platform reported at start-up (``SEV_PLATFORM_STATUS``)
        self.api_major = 0
        self.api_minor = 0
        self.build_id = 0
        #: ``SevState`` name; ``uninit`` until a launch starts
        self.state = "uninit"
        # Added per instance (QEMU's object_property_add_uint32_ptr), in
        # QEMU's order, which decides qom-list's order.
        for name, attr in (
            ("policy", "policy"),
            ("handle", "handle"),
            ("cbitpos", "cbitpos"),
            ("reduced-phys-bits", "reduced_phys_bits"),
        ):
            self.add_property(field_property(name, attr, UINT32))

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        props = [
            field_property("sev-device", "sev_device", STR),
            field_property("dh-cert-file", "dh_cert_file", STR),
            field_property("session-file", "session_file", STR),
            field_property("kernel-hashes", "kernel_hashes", BOOL),
        ]
        for prop, text in zip(
            props,
            (
                "SEV device to use",
                "guest owners DH certificate (encoded with base64)",
                "guest owners session parameters (encoded with base64)",
                "add kernel hashes to guest firmware for measured Linux boot",
            ),
            strict=True,
        ):
            prop.description = text
        return props

    def kvm_init(self, irqchip: bool = True) -> None:
        """QEMU's ``sev_kvm_init``: check the settings against this host.

        Raises :class:`~qomhost.sev.launch.SevInitError` with QEMU's message
        for the first check that fails. ``irqchip`` says whether the
        accelerator has an in-kernel interrupt controller (SEV-ES needs one).
        """
        from qomhost.sev.launch import sev_kvm_init

        sev_kvm_init(self, irqchip)

    def info(self) -> dict[str, Any]:
        """This guest's ``query-sev`` answer once SEV is active."""
        return {
            "enabled": True,
            "api-major": self.api_major,
            "api-minor": self.api_minor,
            "build-id": self.build_id,
            "policy": self.policy,
            "state": self.state,
            "handle": self.handle,
        }
