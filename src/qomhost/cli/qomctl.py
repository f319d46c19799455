"""``qomctl``: tools around QEMU's objects that QEMU itself does not ship.

``qomctl secret encrypt`` does what libvirt does for every password it
hands to QEMU: encrypt it with AES-256-CBC under a master key secret and a
fresh random IV, and print the ready ``-object secret,...`` arguments::

    $ qomctl secret new-key > key.b64
    $ qomctl secret encrypt --key-file key.b64 --id sec0 --data letmein --with-key
    -object secret,id=secmaster0,format=base64,file=key.b64
    -object secret,id=sec0,keyid=secmaster0,format=base64,data=...,iv=...

With ``--to-keyring DESCRIPTION`` the ciphertext is not printed at all: it
goes into a new key in the kernel keyring, and the arguments name it::

    $ qomctl secret encrypt --key-file key.b64 --data letmein --to-keyring vm1-disk
    -object secret_keyring,id=sec0,keyid=secmaster0,format=raw,serial=...,iv=...

``qomctl secret decrypt`` runs QEMU's own loading path (the same code as
the ``secret`` object, so the same checks and messages) and writes the
plaintext to standard output.

``qomctl authz check`` creates an authorization object from the same
``-object`` argument QEMU would get (QemuOpts or JSON) and asks it about
one identity, saying which rule decided::

    $ qomctl authz check authz-list-file,id=acl0,filename=/etc/qemu/vnc.acl.json \
          'CN=laptop.example.com,O=Example Org'
    allow: rule 2 matched (match "CN=*.example.com,*", format glob, policy allow)

With ``--cert`` the identity is a TLS client certificate's distinguished
name, written as QEMU writes it for ``tls-authz`` (GnuTLS's spelling, in the
certificate's own order), and printed first::

    $ qomctl authz check authz-simple,id=a,identity=CN=fred --cert client-cert.pem
    identity: C=GB,L=London,O=Example Org,CN=fred
    deny: the allowed identity is "CN=fred"

It exits with 0 when the identity is allowed, 1 when it is denied, and 2
when the object cannot be created (QEMU's message is printed) or cannot
decide.

``qomctl sev measure``, ``verify`` and ``policy`` are for owners of AMD SEV
guests: the launch digest and measurement QEMU 7.2's guest should report,
a check of the one it did report, and policies by name
(:mod:`qomhost.cli.qomctl_sev`).

``qomctl cryptodev encrypt|decrypt --socket PATH --cipher aes-256-cbc --key HEX
--iv HEX [--queue N]`` runs standard input through a vhost-user crypto backend,
as a ``cryptodev-vhost-user`` device would, and writes the result (no padding,
as ``openssl enc -nopad``) to standard output (:mod:`qomhost.cli.qomctl_cryptodev`).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Sequence

from qomhost.errors import QemuError

__all__ = ["main"]


def _escape_opt(value: str) -> str:
    """Escape a QemuOpts value: a comma is written twice."""
    return value.replace(",", ",,")


def _load_key(path: str, key_format: str) -> bytes:
    from qomhost.host import Host

    host = Host()
    host.add_object("secret", "key", file=path, format=key_format)
    return host.secret_bytes("key")


def _read_plaintext(args: argparse.Namespace) -> bytes:
    if args.data is not None:
        data: bytes = args.data.encode("utf-8", "surrogateescape")
        return data
    if args.file is not None:
        with open(args.file, "rb") as f:
            return f.read()
    return sys.stdin.buffer.read()


def cmd_new_key(args: argparse.Namespace) -> int:
    """Print a random 32-byte master key, base64-encoded."""
    sys.stdout.write(base64.b64encode(os.urandom(32)).decode("ascii") + "\n")
    return 0


def cmd_encrypt(args: argparse.Namespace) -> int:
    """Encrypt a secret under the master key and print the -object arguments.

    With ``--to-keyring`` the ciphertext goes into a new kernel key and the
    arguments are those of a ``secret_keyring`` naming it: raw bytes,
    because QEMU 7.2 cannot decrypt a keyring secret given in base64.
    """
    from qomhost.crypto.aes import aes256_cbc_encrypt

    key = _load_key(args.key_file, args.key_format)
    if len(key) != 32:
        raise QemuError("Key should be 32 bytes in length")
    plaintext = _read_plaintext(args)
    iv = os.urandom(16)
    raw = aes256_cbc_encrypt(key, iv, plaintext)
    obj: dict[str, object] = {"qom-type": "secret", "id": args.id, "keyid": args.key_id}
    if args.to_keyring is not None:
        obj["qom-type"] = "secret_keyring"
        obj["format"] = "raw"
        obj["serial"] = _store_in_keyring(args.to_keyring, args.keyring, raw)
    else:
        obj["format"] = "base64"
        obj["data"] = base64.b64encode(raw).decode("ascii")
    obj["iv"] = base64.b64encode(iv).decode("ascii")
    objects: list[dict[str, object]] = []
    if args.with_key:
        objects.append(
            {
                "qom-type": "secret",
                "id": args.key_id,
                "format": args.key_format,
                "file": args.key_file,
            }
        )
    objects.append(obj)
    for spec in objects:
        sys.stdout.write(f"-object {_object_arg(spec, args.json)}\n")
    return 0


def _object_arg(spec: dict[str, object], as_json: bool) -> str:
    """One ``-object`` argument, as JSON or as QemuOpts (type first)."""
    if as_json:
        import json

        return json.dumps(spec)
    rest = [f"{k}={_escape_opt(str(v))}" for k, v in spec.items() if k != "qom-type"]
    return ",".join([str(spec["qom-type"]), *rest])


def _store_in_keyring(description: str, keyring: str, payload: bytes) -> int:
    """Add a ``user`` key holding ``payload``; returns its serial.

    A key in the user keyring is made readable by the user's other
    processes (QEMU need not possess it); one in the session keyring is
    left to this session's processes.
    """
    from qomhost.crypto.keyring import (
        KEY_SPEC_SESSION_KEYRING,
        KEY_SPEC_USER_KEYRING,
        PERM_POSSESSOR_ALL_USER_READ,
        KeyringError,
        add_key,
        keyring_id,
        link_key,
        search_key,
        set_permissions,
        unlink_key,
    )

    try:
        session = keyring_id(KEY_SPEC_SESSION_KEYRING)
        ring = keyring_id(KEY_SPEC_USER_KEYRING) if keyring == "user" else session
        # add_key would silently replace the payload of a key of that name,
        # which may be another guest's secret.
        existing = search_key(description, ring)
        if existing is not None:
            raise QemuError(
                f"The {keyring} keyring already has a key '{description}' (serial {existing})"
            )
        # The key is made in the session keyring, which this process
        # possesses, so that its permissions may still be changed; only then
        # does it move to the user keyring (which a session need not link).
        serial = add_key(description, payload, session)
        if ring != session:
            try:
                set_permissions(serial, PERM_POSSESSOR_ALL_USER_READ)
                link_key(serial, ring)
            finally:
                unlink_key(serial, session)
    except KeyringError as exc:
        raise QemuError(
            f"Unable to add key '{description}' to the {keyring} keyring: {exc.strerror}"
        ) from None
    return serial


def cmd_decrypt(args: argparse.Namespace) -> int:
    """Decrypt as QEMU would load the secret, and write the plaintext."""
    from qomhost.host import Host

    host = Host()
    host.add_object("secret", "key", file=args.key_file, format=args.key_format)
    data = args.data if args.data is not None else None
    props: dict[str, object] = {"keyid": "key", "iv": args.iv, "format": args.format}
    if data is not None:
        props["data"] = data
    elif args.file is not None:
        props["file"] = args.file
    else:
        props["data"] = sys.stdin.buffer.read().decode("ascii", "replace")
    host.add_object("secret", "secret", **props)
    sys.stdout.buffer.write(host.secret_bytes("secret"))
    sys.stdout.buffer.flush()
    return 0


#: ``qomctl authz check`` exit statuses
AUTHZ_ALLOW, AUTHZ_DENY, AUTHZ_ERROR = 0, 1, 2


def _quoted(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def _authz_verdict(obj: object, identity: str) -> tuple[bool, str]:
    """Ask ``obj`` about ``identity``: ``(allowed, why)``."""
    from qomhost.objects.authz.list import QAuthZList
    from qomhost.objects.authz.listfile import QAuthZListFile
    from qomhost.objects.authz.pam import PamDenied, QAuthZPAM
    from qomhost.objects.authz.simple import QAuthZSimple

    if isinstance(obj, (QAuthZList, QAuthZListFile)):
        if isinstance(obj, QAuthZListFile) and obj.list is None:
            return False, f"no valid rules loaded from {obj.filename}"
        decision = obj.decide(identity)
        rule = decision.rule
        if rule is None or decision.index is None:
            policy = "allow" if decision.allowed else "deny"
            return decision.allowed, f"no rule matched; default policy {policy}"
        fmt = rule.format or "exact"
        return decision.allowed, (
            f"rule {decision.index} matched "
            f"(match {_quoted(rule.match)}, format {fmt}, policy {rule.policy})"
        )
    if isinstance(obj, QAuthZSimple):
        if obj.check(identity):
            return True, "the identity is the allowed one"
        return False, f"the allowed identity is {_quoted(obj.identity or '')}"
    if isinstance(obj, QAuthZPAM):
        try:
            obj.check(identity)
        except PamDenied as err:
            return False, err.desc
        return True, f"PAM account management of service {_quoted(obj.service or '')} passed"
    from qomhost.objects.authz.base import QAuthZ

    assert isinstance(obj, QAuthZ)
    allowed = obj.check(identity)
    return allowed, type(obj).__name__


def _certificate_identity(path: str) -> str:
    """The subject of the first certificate in a PEM (or DER) file, as QEMU's
    TLS code hands it to ``tls-authz``."""
    import ssl

    from qomhost.crypto.x509dn import subject_dn

    with open(path, "rb") as f:
        data = f.read()
    if b"-----BEGIN CERTIFICATE-----" in data:
        start = data.index(b"-----BEGIN CERTIFICATE-----")
        end = data.find(b"-----END CERTIFICATE-----", start)
        data = ssl.PEM_cert_to_DER_cert(data[start : end + 25].decode("ascii"))
    return subject_dn(data)


def cmd_authz_check(args: argparse.Namespace) -> int:
    """Create the authz object described by ``args.object`` and ask it about the identity."""
    from qomhost.cli.objectopts import parse_object_cli
    from qomhost.host import Host
    from qomhost.objects.authz.base import QAuthZ
    from qomhost.qapi.opts import OptsList

    identity = args.identity
    if args.cert is not None:
        try:
            identity = _certificate_identity(args.cert)
        except OSError as exc:
            sys.stderr.write(f"qomctl: {args.cert}: {exc.strerror}\n")
            return AUTHZ_ERROR
        except ValueError as exc:  # not a certificate, or a name GnuTLS cannot write
            sys.stderr.write(f"qomctl: {args.cert}: {exc}\n")
            return AUTHZ_ERROR
        sys.stdout.write(f"identity: {identity}\n")
    host = Host()
    try:
        warnings: list[str] = []
        spec = parse_object_cli(args.object, OptsList("object", "qom-type"), warnings)
        for warning in warnings:
            sys.stderr.write(f"qomctl: warning: {warning}\n")
        if isinstance(spec, str):
            sys.stdout.write(spec)
            return 0
        obj = host.create_object(spec.type_name, spec.ident, spec.props)
        if not isinstance(obj, QAuthZ):
            raise QemuError(f"Object '{spec.ident}' is not a QAuthZ subclass")
        allowed, why = _authz_verdict(obj, identity)
    except QemuError as err:
        sys.stderr.write(f"qomctl: {err.desc}\n")
        if err.hint:
            sys.stderr.write(err.hint + "\n")
        return AUTHZ_ERROR
    finally:
        host.close()
    sys.stdout.write(f"{'allow' if allowed else 'deny'}: {why}\n")
    return AUTHZ_ALLOW if allowed else AUTHZ_DENY


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qomctl", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="group", required=True)
    secret = sub.add_parser("secret", help="encrypt and decrypt QEMU secrets")
    ops = secret.add_subparsers(dest="op", required=True)

    new_key = ops.add_parser("new-key", help="print a random base64 master key")
    new_key.set_defaults(func=cmd_new_key)

    def key_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--key-file", required=True, help="the master key file")
        p.add_argument(
            "--key-format",
            choices=("base64", "raw"),
            default="base64",
            help="how the key file is encoded (default: base64)",
        )

    enc = ops.add_parser("encrypt", help="print -object arguments for an encrypted secret")
    key_args(enc)
    enc.add_argument("--id", default="sec0", help="id of the new secret (default: sec0)")
    enc.add_argument(
        "--key-id", default="secmaster0", help="id of the key secret (default: secmaster0)"
    )
    src = enc.add_mutually_exclusive_group()
    src.add_argument("--data", help="the plaintext (default: standard input)")
    src.add_argument("--file", help="read the plaintext from a file")
    enc.add_argument("--with-key", action="store_true", help="also print the key's -object")
    enc.add_argument("--json", action="store_true", help="print the JSON form of -object")
    enc.add_argument(
        "--to-keyring",
        metavar="DESCRIPTION",
        help="store the ciphertext in a new kernel key and print secret_keyring arguments",
    )
    enc.add_argument(
        "--keyring",
        choices=("session", "user"),
        default="session",
        help="the keyring that gets the key (default: session)",
    )
    enc.set_defaults(func=cmd_encrypt)

    dec = ops.add_parser("decrypt", help="decrypt a secret as QEMU would load it")
    key_args(dec)
    dec.add_argument("--iv", required=True, help="the base64 IV")
    dec.add_argument(
        "--format",
        choices=("base64", "raw"),
        default="base64",
        help="encoding of the ciphertext (default: base64)",
    )
    dsrc = dec.add_mutually_exclusive_group()
    dsrc.add_argument("--data", help="the ciphertext (default: standard input)")
    dsrc.add_argument("--file", help="read the ciphertext from a file")
    dec.set_defaults(func=cmd_decrypt)

    authz = sub.add_parser("authz", help="ask authorization objects about an identity")
    authz_ops = authz.add_subparsers(dest="op", required=True)
    check = authz_ops.add_parser(
        "check",
        help="allow or deny one identity, and say which rule decided",
        description="Create the object as -object OBJECT-OPTIONS would and ask it "
        "about IDENTITY. Prints 'allow: ...' or 'deny: ...' with the deciding rule.",
        epilog="Exit status: 0 allowed, 1 denied, 2 error (QEMU's message is printed).",
    )
    check.add_argument(
        "object",
        metavar="OBJECT-OPTIONS",
        help="an -object argument, e.g. authz-list-file,id=a,filename=/etc/acl.json, or JSON",
    )
    check.add_argument("identity", metavar="IDENTITY", nargs="?", help="e.g. a certificate's DN")
    check.add_argument(
        "--cert",
        metavar="FILE",
        help="take IDENTITY from this PEM certificate's subject, as QEMU's TLS code writes it",
    )
    check.set_defaults(func=cmd_authz_check, check_parser=check)
    from qomhost.cli.qomctl_sev import add_sev_parser

    add_sev_parser(sub)
    from qomhost.cli.qomctl_cryptodev import add_cryptodev_parser

    add_cryptodev_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    args = _parser().parse_args(argv)
    check_parser = getattr(args, "check_parser", None)
    if check_parser is not None and (args.identity is None) == (args.cert is None):
        check_parser.error("give IDENTITY or --cert FILE (one of them)")
    try:
        status = args.func(args)
    except QemuError as err:
        sys.stderr.write(f"qomctl: {err.desc}\n")
        status = 1
    except ValueError as err:  # qomhost.sev's MeasureError and PolicyError
        sys.stderr.write(f"qomctl: {err}\n")
        status = 1
    except OSError as err:
        sys.stderr.write(f"qomctl: {err.filename or ''}: {err.strerror}\n")
        status = 1
    sys.exit(status)
