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

from collections.abc import Iterable, Mapping

from harness import Case, Normalizer, ScriptItem

BASE = ("-machine", "none", "-nodefaults", "-display", "none")
QMP = (*BASE, "-qmp", "stdio")
CAPS: Mapping[str, object] = {"execute": "qmp_capabilities"}
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


def ex(command: str, /, **arguments: object) -> dict[str, object]:
    msg: dict[str, object] = {"execute": command}
    if arguments:
        msg["arguments"] = {k.replace("_", "-"): v for k, v in arguments.items()}
    return msg


def get(path: str, prop: str) -> dict[str, object]:
    return ex("qom-get", path=path, property=prop)


def qset(path: str, prop: str, value: object) -> dict[str, object]:
    return ex("qom-set", path=path, property=prop, value=value)


def hmc(line: str) -> dict[str, object]:
    return ex("human-monitor-command", command_line=line)


def objs(specs: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for spec in specs:
        out += ["-object", spec]
    return tuple(out)


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

SEV_CASES: list[Case] = [*OBJECT]

__all__ = ["SEV_CASES"]
