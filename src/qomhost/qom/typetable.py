"""Every QOM type qomhost knows, as data.

This is the single table of type names: ``-object help``, ``qom-list-types``,
the option parsers and ``add_object`` all read it. Implementing modules are
named, not imported, so that start-up imports only the code of the types
that are actually used.
"""

from __future__ import annotations

from qomhost.qom.object import TypeInfo, types

__all__ = ["USER_CREATABLE"]

USER_CREATABLE = "user-creatable"

_TYPES = (
    TypeInfo("object", None, impl="qomhost.qom.object:Object", abstract=True),
    TypeInfo("interface", None, abstract=True),
    TypeInfo(USER_CREATABLE, "interface", abstract=True),
    TypeInfo("container", "object", impl="qomhost.qom.object:Container"),
    TypeInfo("machine", "object", impl="qomhost.objects.machine:Machine", abstract=True),
    TypeInfo("none-machine", "machine", impl="qomhost.objects.machine:NoneMachine"),
    TypeInfo("chardev", "object", impl="qomhost.chardev.base:Chardev", abstract=True),
    TypeInfo("chardev-fd", "chardev", abstract=True),
    TypeInfo("chardev-stdio", "chardev-fd", impl="qomhost.chardev.stdio:ChardevStdio"),
    TypeInfo("chardev-socket", "chardev", impl="qomhost.chardev.socket:ChardevSocket"),
    # What QEMU puts under /machine/unattached for -machine none; qomhost
    # emulates no memory or buses, so these are plain tree nodes.
    TypeInfo("memory-region", "object"),
    TypeInfo("bus", "object", abstract=True),
    TypeInfo("System", "bus"),
    TypeInfo(
        "event-loop-base",
        "object",
        impl="qomhost.objects.iothread:EventLoopBase",
        abstract=True,
        interfaces=(USER_CREATABLE,),
    ),
    TypeInfo("iothread", "event-loop-base", impl="qomhost.objects.iothread:IOThread"),
    TypeInfo("main-loop", "event-loop-base", impl="qomhost.objects.iothread:MainLoop"),
    TypeInfo(
        "secret_common",
        "object",
        impl="qomhost.objects.secret:SecretCommon",
        abstract=True,
        interfaces=(USER_CREATABLE,),
    ),
    TypeInfo("secret", "secret_common", impl="qomhost.objects.secret:Secret"),
    TypeInfo("secret_keyring", "secret_common", impl="qomhost.objects.secret:SecretKeyring"),
    # As in QEMU, "authz" is not user-creatable itself; each concrete type is.
    TypeInfo("authz", "object", impl="qomhost.objects.authz.base:QAuthZ", abstract=True),
    TypeInfo(
        "authz-simple",
        "authz",
        impl="qomhost.objects.authz.simple:QAuthZSimple",
        interfaces=(USER_CREATABLE,),
    ),
    TypeInfo(
        "authz-list",
        "authz",
        impl="qomhost.objects.authz.list:QAuthZList",
        interfaces=(USER_CREATABLE,),
    ),
    TypeInfo(
        "authz-list-file",
        "authz",
        impl="qomhost.objects.authz.listfile:QAuthZListFile",
        interfaces=(USER_CREATABLE,),
    ),
    # The name QEMU's QAPI schema and manual use for authz-list-file (QEMU
    # 7.2 accepts neither name; see docs/compatibility.md). It is a type of
    # its own in this one table, deriving from authz-list-file and adding
    # nothing, so every parser and the registry accept it alike.
    TypeInfo("authz-listfile", "authz-list-file"),
    TypeInfo(
        "authz-pam",
        "authz",
        impl="qomhost.objects.authz.pam:QAuthZPAM",
        interfaces=(USER_CREATABLE,),
    ),
    # Not abstract in QEMU 7.2: object-add creates one, which serves nothing.
    TypeInfo(
        "cryptodev-backend",
        "object",
        impl="qomhost.objects.cryptodev.base:CryptoDevBackend",
        interfaces=(USER_CREATABLE,),
    ),
    TypeInfo(
        "cryptodev-backend-builtin",
        "cryptodev-backend",
        impl="qomhost.objects.cryptodev.builtin:CryptoDevBackendBuiltin",
    ),
    TypeInfo(
        "cryptodev-vhost-user",
        "cryptodev-backend",
        impl="qomhost.objects.cryptodev.vhost_user:CryptoDevBackendVhostUser",
        late=True,
    ),
    # As in QEMU, "tls-creds" is abstract and not user-creatable itself.
    TypeInfo("tls-creds", "object", impl="qomhost.objects.tls:QCryptoTLSCreds", abstract=True),
    TypeInfo(
        "tls-creds-x509",
        "tls-creds",
        impl="qomhost.objects.tls:QCryptoTLSCredsX509",
        interfaces=(USER_CREATABLE,),
    ),
    TypeInfo(
        "confidential-guest-support",
        "object",
        impl="qomhost.objects.sev:ConfidentialGuestSupport",
        abstract=True,
    ),
    TypeInfo(
        "sev-guest",
        "confidential-guest-support",
        impl="qomhost.objects.sev:SevGuest",
        interfaces=(USER_CREATABLE,),
    ),
)

for _info in _TYPES:
    types.register(_info)
