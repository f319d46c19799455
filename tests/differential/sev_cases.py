"""Differential cases for ``sev-guest``, the machine's ``memory-encryption``, the
KVM start-up checks and the SEV QMP/HMP commands (issue 6).

Kept apart from ``cases.py`` (which includes them in ``CASES``) so that the SEV
table can grow without touching everyone's file. QEMU is the expectation, as
everywhere: nothing here states an answer.

This host has ``/dev/kvm`` but no SEV, so QEMU gets as far as ``sev_kvm_init``
with ``-accel kvm``; a host without ``/dev/kvm`` stops earlier, and both programs
say so alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace

from harness import Case, Normalizer, Outcome, ScriptItem
from script import BASE, CAPS, QMP, ex, get, hmc, qset
from script import objects as objs

SEV = "/objects/sev0"
#: the seed's object
SEED = "sev-guest,id=sev0,cbitpos=47,reduced-phys-bits=5"
#: passes every check this host can make before opening the SEV device
OK = "sev-guest,id=sev0,reduced-phys-bits=1"
PROPS = (
    "sev-device",
    "dh-cert-file",
    "session-file",
    "kernel-hashes",
    "policy",
    "handle",
    "cbitpos",
    "reduced-phys-bits",
)


def qmp(
    name: str,
    *script: ScriptItem,
    specs: Iterable[str] = (),
    args: tuple[str, ...] = QMP,
    files: Mapping[str, bytes] | None = None,
    normalize: Normalizer | None = None,
    note: str = "",
) -> Case:
    return Case(
        name,
        (*args, *objs(specs)),
        (CAPS, *script),
        files=files or {},
        normalize=normalize,
        note=note,
    )


def every_prop(path: str = SEV) -> tuple[ScriptItem, ...]:
    return tuple(get(path, p) for p in PROPS)


# --------------------------------------------------------------------------- the object

OBJECT = [
    qmp("sev-seed", ex("qom-list", path=SEV), *every_prop(), specs=(SEED,)),
    qmp(
        "sev-all-props",
        *every_prop(),
        specs=(
            "sev-guest,id=sev0,sev-device=/dev/nope,dh-cert-file=dh.b64,session-file=s.b64,"
            "policy=0x5,handle=7,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on",
        ),
    ),
    qmp("sev-missing-rpb", specs=("sev-guest,id=sev0",)),
    qmp("sev-missing-rpb-json", specs=('{"qom-type":"sev-guest","id":"sev0"}',)),
    qmp("sev-policy-negative", specs=(OK + ",policy=-1",)),
    qmp("sev-policy-2p32", specs=(OK + ",policy=4294967296",)),
    qmp("sev-policy-max", get(SEV, "policy"), specs=(OK + ",policy=4294967295",)),
    qmp("sev-policy-hex", get(SEV, "policy"), specs=(OK + ",policy=0x30005",)),
    qmp("sev-cbitpos-text", specs=("sev-guest,id=sev0,reduced-phys-bits=1,cbitpos=abc",)),
    qmp("sev-rpb-text", specs=("sev-guest,id=sev0,reduced-phys-bits=x",)),
    qmp("sev-kernel-hashes-bad", specs=(OK + ",kernel-hashes=maybe",)),
    qmp("sev-kernel-hashes-short", get(SEV, "kernel-hashes"), specs=(OK + ",kernel-hashes",)),
    qmp("sev-bogus-key", specs=(OK + ",bogus=1",)),
    qmp("sev-bad-id", specs=("sev-guest,id=1sev,reduced-phys-bits=1",)),
    qmp(
        "sev-json-types",
        specs=('{"qom-type":"sev-guest","id":"sev0","reduced-phys-bits":1,"policy":"1"}',),
    ),
    qmp(
        "sev-json-bool",
        specs=('{"qom-type":"sev-guest","id":"sev0","reduced-phys-bits":1,"kernel-hashes":1}',),
    ),
    qmp(
        "sev-json-ok",
        *every_prop(),
        specs=(
            '{"qom-type":"sev-guest","id":"sev0","reduced-phys-bits":1,"kernel-hashes":true,'
            '"policy":7,"sev-device":""}',
        ),
    ),
    Case("sev-help", ("-object", "sev-guest,help")),
    Case("sev-help-anywhere", ("-object", "sev-guest,id=x,help")),
    Case("sev-cgs-help", ("-object", "confidential-guest-support,help")),
    qmp(
        "sev-qmp-object-add",
        ex("object-add", qom_type="sev-guest", id="sev0"),
        ex("object-add", qom_type="sev-guest", id="sev0", reduced_phys_bits=-1),
        ex("object-add", qom_type="sev-guest", id="sev0", reduced_phys_bits=1, handle=2**32),
        ex("object-add", qom_type="sev-guest", id="sev0", reduced_phys_bits=1, cbitpos=True),
        ex("object-add", qom_type="sev-guest", id="sev0", reduced_phys_bits=1, extra=1),
        ex("object-add", qom_type="sev-guest", id="sev0", reduced_phys_bits=1, policy=3),
        ex("object-add", qom_type="sev-guest", id="sev0", reduced_phys_bits=1),
        ex("qom-list", path=SEV),
        *every_prop(),
        ex("object-add", qom_type="confidential-guest-support", id="c"),
        ex("object-del", id="sev0"),
        ex("qom-list", path="/objects"),
    ),
    qmp(
        "sev-qom-set",
        qset(SEV, "policy", 0x5),
        qset(SEV, "policy", -1),
        qset(SEV, "policy", "1"),
        qset(SEV, "handle", 9),
        qset(SEV, "cbitpos", 4294967295),
        qset(SEV, "reduced-phys-bits", 4294967296),
        qset(SEV, "sev-device", "/dev/x"),
        qset(SEV, "sev-device", None),
        qset(SEV, "kernel-hashes", True),
        qset(SEV, "kernel-hashes", "on"),
        qset(SEV, "dh-cert-file", "f"),
        qset(SEV, "type", "x"),
        qset(SEV, "nope", 1),
        *every_prop(),
        specs=(OK,),
    ),
    qmp(
        "sev-qom-list-properties",
        ex("qom-list-properties", typename="sev-guest"),
        ex("qom-list-properties", typename="confidential-guest-support"),
    ),
    qmp(
        "sev-qom-list-types",
        ex("qom-list-types", implements="confidential-guest-support"),
        ex("qom-list-types", implements="confidential-guest-support", abstract=True),
    ),
    qmp(
        "sev-hmp",
        hmc("object_add sev-guest,id=h"),
        hmc("object_add sev-guest,id=h,reduced-phys-bits=2,policy=0x7,kernel-hashes=on"),
        hmc("object_add sev-guest,help"),
        hmc("qom-list /objects/h"),
        hmc("qom-get /objects/h policy"),
        hmc("qom-set /objects/h policy 0x10"),
        hmc("qom-set /objects/h policy -1"),
        hmc("qom-set /objects/h handle x"),
        hmc("qom-get /objects/h policy"),
        hmc("info qom-tree /objects"),
        hmc("object_del h"),
    ),
]

# --------------------------------------------------------------------------- hooks

_FW_ERROR = re.compile(rb"fw_error='-?\d+: [^']*'")


def mask_fw_error(outcome: Outcome) -> Outcome:
    """QEMU prints an uninitialised firmware code when the ioctl itself fails
    (``docs/compatibility.md``); only that number and its text are masked."""
    return replace(outcome, stderr=_FW_ERROR.sub(b"fw_error='N: ...'", outcome.stderr))


_CGS_ASSERT = b"Assertion `machine->cgs->ready' failed."
_CGS_REFUSED = b"needs the KVM accelerator (-accel kvm)"


def cgs_without_kvm(outcome: Outcome) -> Outcome:
    """QEMU 7.2 aborts on an assertion when a memory-encryption object meets TCG;
    qomhost refuses with a message and status 1 (``docs/compatibility.md``).
    Both become the same marker; what came before on stderr is still compared."""
    lines = outcome.stderr.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if _CGS_ASSERT in line or _CGS_REFUSED in line:
            stderr = b"".join(lines[:i]) + b"<memory encryption without KVM refused>\n"
            return replace(outcome, status=1, stderr=stderr, stdout=b"")
    return outcome


def both(*hooks: Normalizer) -> Normalizer:
    def hook(outcome: Outcome) -> Outcome:
        for h in hooks:
            outcome = h(outcome)
        return outcome

    return hook


# --------------------------------------------------------------------------- machine, accelerator

KVM = ("-accel", "kvm")
ME = "none,memory-encryption=sev0"


def machine(
    name: str,
    machine_opts: str,
    *extra: str,
    specs: Iterable[str] = (OK,),
    script: tuple[ScriptItem, ...] = (),
    normalize: Normalizer | None = None,
    note: str = "",
) -> Case:
    args = ("-nodefaults", "-display", "none", "-qmp", "stdio", "-machine", machine_opts)
    return qmp(
        name,
        *script,
        specs=specs,
        args=(*args, *extra),
        normalize=both(mask_fw_error, cgs_without_kvm, *([normalize] if normalize else [])),
        note=note,
    )


MACHINE = [
    machine("sev-kvm-seed", "q35,memory-encryption=sev0", *KVM, specs=(SEED,)),
    machine("sev-kvm-seed-none", ME, *KVM, specs=(SEED,)),
    machine("sev-kvm-cgs", "q35,confidential-guest-support=sev0", *KVM, specs=(SEED,)),
    machine("sev-kvm-legacy-accel", "q35,memory-encryption=sev0,accel=kvm", specs=(SEED,)),
    machine("sev-kvm-rpb-0", ME, *KVM, specs=("sev-guest,id=sev0,reduced-phys-bits=0",)),
    machine("sev-kvm-cbitpos-big", ME, *KVM, specs=(OK + ",cbitpos=4294967295",)),
    machine("sev-kvm-no-device", ME, *KVM),
    machine("sev-kvm-es-no-device", "q35,memory-encryption=sev0", *KVM, specs=(OK + ",policy=4",)),
    machine("sev-kvm-device-missing-dir", ME, *KVM, specs=(OK + ",sev-device=/nonexistent/sev",)),
    machine("sev-kvm-device-dir", ME, *KVM, specs=(OK + ",sev-device=/tmp",)),
    machine("sev-kvm-device-empty", ME, *KVM, specs=(OK + ",sev-device=",)),
    machine(
        "sev-kvm-device-not-sev",
        ME,
        *KVM,
        specs=(OK + ",sev-device=/dev/null",),
        note="PLATFORM_STATUS on a device that is not /dev/sev: the ioctl fails",
    ),
    machine("sev-kvm-fallback", ME, *KVM, "-accel", "tcg"),
    machine("sev-kvm-fallback-legacy", "none,memory-encryption=sev0,accel=kvm:tcg"),
    machine("sev-tcg-q35", "q35,memory-encryption=sev0", "-accel", "tcg", specs=(SEED,)),
    machine("sev-tcg-none", ME, "-accel", "tcg"),
    machine("sev-tcg-default", ME),
    machine("sev-me-unknown", "q35,memory-encryption=nope", "-accel", "tcg", specs=()),
    machine("sev-me-unknown-kvm", "none,memory-encryption=nope", *KVM),
    machine("sev-me-not-cgs", "none,memory-encryption=s", *KVM, specs=("secret,id=s,data=x",)),
    machine("sev-cgs-unknown", "none,confidential-guest-support=nope", *KVM),
    machine(
        "sev-cgs-not-cgs", "none,confidential-guest-support=s", *KVM, specs=("secret,id=s,data=x",)
    ),
    machine("sev-me-before-objects-error", ME, *KVM, specs=("sev-guest,id=sev0",)),
    machine(
        "sev-me-object-set-error-first",
        "none,memory-encryption=nope,usb=maybe",
        *KVM,
        specs=("secret,id=s",),
        note="early objects are created before the machine's options are applied",
    ),
    machine("accel-kvm-plain", "none", *KVM, specs=()),
    machine("accel-help", "none", "-accel", "help", specs=()),
    machine("accel-unknown", "none", "-accel", "nope", specs=()),
    machine("accel-kvm-bogus", "none", "-accel", "kvm,bogus=1", specs=()),
    machine("accel-kvm-help-opt", "none", "-accel", "kvm,help", specs=()),
    machine("accel-kvm-irqchip-bad", "none", "-accel", "kvm,kernel-irqchip=x", specs=()),
    machine("accel-tcg-thread-bad", "none", "-accel", "tcg,thread=x", specs=()),
    machine("accel-both-forms", "none,accel=kvm", *KVM, specs=()),
]

# --------------------------------------------------------------------------- QMP and HMP

SEV_QUERIES: tuple[ScriptItem, ...] = (
    ex("query-sev"),
    ex("query-sev-capabilities"),
    ex("query-sev-launch-measure"),
    ex("query-sev-attestation-report", mnonce="AAAAAAAAAAAAAAAAAAAAAA=="),
    ex("query-sev-attestation-report", mnonce="x"),
    ex("query-sev-attestation-report"),
    ex("query-sev-attestation-report", mnonce=1),
    ex("sev-inject-launch-secret", packet_header="aGVhZGVy", secret="c2VjcmV0"),
    ex("sev-inject-launch-secret", packet_header="aGVhZGVy", secret="c2VjcmV0", gpa=4096),
    ex("sev-inject-launch-secret", packet_header="", secret=""),
    ex("sev-inject-launch-secret", secret="x"),
    ex("sev-inject-launch-secret", packet_header="x"),
    ex("sev-inject-launch-secret", packet_header="x", secret="y", gpa=-1),
    ex("sev-inject-launch-secret", packet_header="x", secret="y", gpa="0"),
    ex("query-sev", arguments_extra=1),
    hmc("info sev"),
    hmc("help info sev"),
)

QUERIES = [
    qmp("sev-qmp-tcg", *SEV_QUERIES),
    qmp("sev-qmp-tcg-object", *SEV_QUERIES, specs=(SEED,)),
    qmp("sev-qmp-kvm", *SEV_QUERIES, args=(*QMP, *KVM)),
    qmp("sev-qmp-kvm-object", *SEV_QUERIES, specs=(OK,), args=(*QMP, *KVM)),
    qmp("sev-qmp-tcg-explicit", ex("query-sev-capabilities"), args=(*QMP, "-accel", "tcg")),
    Case(
        "sev-hmp-info",
        (*BASE, "-monitor", "stdio", *KVM),
        ("info sev", "quit"),
    ),
]

SEV_CASES: list[Case] = [*OBJECT, *MACHINE, *QUERIES]

__all__ = ["SEV_CASES"]
