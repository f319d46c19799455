"""Differential cases for ``cryptodev-backend``, ``cryptodev-backend-builtin`` and
``cryptodev-vhost-user`` (issue 5): properties, defaults, help, QAPI and QOM
errors, ``queues`` at run time, the ``chardev`` property and chardev lookup.

Kept apart from ``cases.py`` (which includes them in ``CASES``). QEMU is the
expectation, as everywhere: nothing here states an answer.

The vhost-user objects here use a server chardev that nobody connects to
(``wait=off``), so the object is created and no handshake runs; what QEMU sends
once a backend connects is compared by ``test_vhost_user_handshake.py``, which
needs a backend in the test. Socket paths are in each program's own ``{tmp}``
and never printed; a client chardev whose peer is absent uses a fixed path
that does not exist, because QEMU prints it.

Not compared, because QEMU 7.2 crashes (see ``docs/compatibility.md``):
``queues`` from 64 on for ``cryptodev-vhost-user`` (an assertion when the
chardev opens or closes) and from 65 on for the builtin backend (a
segmentation fault after its error message).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from harness import Case, Normalizer, Outcome, ScriptItem, restrict_named_list
from script import BASE, CAPS, QMP, add, ex, get, hmc, qset

#: a server chardev nobody connects to: the object is created, no handshake runs
SRV = "socket,id=c0,path={tmp}/c0.sock,server=on,wait=off"
SRV1 = "socket,id=c1,path={tmp}/c1.sock,server=on,wait=off"
#: a client chardev whose peer does not exist (the path is printed by both)
ABSENT = "/nonexistent-qomdiff/cryptodev.sock"
B = "/objects/b"
V = "/objects/v"
CB = "/objects/cb"
CRYPTO_TYPES = ("cryptodev-backend", "cryptodev-backend-builtin", "cryptodev-vhost-user")


def qmp(
    name: str,
    *script: ScriptItem,
    objs: Iterable[str] = (),
    chardevs: Iterable[str] = (),
    note: str = "",
    normalize: Normalizer | None = None,
) -> Case:
    """``-chardev``s and ``-object``s under a QMP monitor, then ``script``."""
    args: list[str] = list(QMP)
    for spec in chardevs:
        args += ["-chardev", spec]
    for spec in objs:
        args += ["-object", spec]
    return Case(name, tuple(args), (CAPS, *script), note=note, normalize=normalize)


def drop_late_connect_report(outcome: Outcome) -> Outcome:
    """With ``reconnect``, a client chardev's first failed attempt is reported
    when the main loop hears of it, which may come before or after a quick
    ``quit``, in either program: that line is left out of the comparison."""
    lines = outcome.stderr.splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(b"PROG: Unable to connect character")]
    return replace(outcome, stderr=b"".join(kept))


def bare(name: str, *args: str, note: str = "") -> Case:
    """No monitor: the program must exit by itself (help, or a failed creation)."""
    return Case(name, (*BASE, *args), note=note)


def state(path: str, *props: str) -> tuple[ScriptItem, ...]:
    return (ex("qom-list", path=path), *(get(path, p) for p in props))


HELP = [
    *(bare(f"cryptodev-help-{t}", "-object", f"{t},help") for t in CRYPTO_TYPES),
    bare("cryptodev-help-question-mark", "-object", "cryptodev-vhost-user,?"),
    qmp(
        "cryptodev-help-hmp-object-add",
        *(hmc(f"object_add {t},help") for t in CRYPTO_TYPES),
    ),
]

CLI = [
    qmp(
        "cryptodev-cli-defaults",
        *state(B, "type", "queues"),
        *state(CB, "type", "queues"),
        *state(V, "type", "queues", "chardev"),
        chardevs=(SRV,),
        objs=(
            "cryptodev-backend,id=b",
            "cryptodev-backend-builtin,id=cb",
            "cryptodev-vhost-user,id=v,chardev=c0",
        ),
    ),
    qmp(
        "cryptodev-cli-queues",
        get(B, "queues"),
        get(V, "queues"),
        chardevs=(SRV,),
        objs=("cryptodev-backend,id=b,queues=7", "cryptodev-vhost-user,id=v,chardev=c0,queues=3"),
    ),
    qmp(
        "cryptodev-cli-vhost-user-queues-63",
        get(V, "queues"),
        chardevs=(SRV,),
        objs=("cryptodev-vhost-user,id=v,chardev=c0,queues=63",),
        note="the largest number QEMU 7.2 survives",
    ),
    qmp(
        "cryptodev-cli-queues-hex",
        get(B, "queues"),
        objs=("cryptodev-backend,id=b,queues=0x10",),
    ),
    bare("cryptodev-cli-builtin-two-queues", "-object", "cryptodev-backend-builtin,id=cb,queues=2"),
    bare("cryptodev-cli-builtin-64-queues", "-object", "cryptodev-backend-builtin,id=cb,queues=64"),
    bare(
        "cryptodev-cli-builtin-queues-zero", "-object", "cryptodev-backend-builtin,id=cb,queues=0"
    ),
    bare("cryptodev-cli-base-queues-zero", "-object", "cryptodev-backend,id=b,queues=0"),
    bare("cryptodev-cli-queues-negative", "-object", "cryptodev-backend,id=b,queues=-1"),
    bare("cryptodev-cli-queues-too-big", "-object", "cryptodev-backend,id=b,queues=4294967296"),
    bare("cryptodev-cli-queues-not-a-number", "-object", "cryptodev-backend,id=b,queues=two"),
    bare("cryptodev-cli-queues-empty", "-object", "cryptodev-backend,id=b,queues="),
    bare("cryptodev-cli-builtin-chardev", "-object", "cryptodev-backend-builtin,id=cb,chardev=c0"),
    bare("cryptodev-cli-vhost-user-no-chardev", "-object", "cryptodev-vhost-user,id=v"),
    bare(
        "cryptodev-cli-vhost-user-unknown-chardev",
        "-object",
        "cryptodev-vhost-user,id=v,chardev=nope",
    ),
    bare("cryptodev-cli-vhost-user-empty-chardev", "-object", "cryptodev-vhost-user,id=v,chardev="),
    bare(
        "cryptodev-cli-vhost-user-queues-zero",
        "-chardev",
        "socket,id=c0,path={tmp}/c0.sock,server=on,wait=off",
        "-object",
        "cryptodev-vhost-user,id=v,chardev=c0,queues=0",
    ),
    bare(
        "cryptodev-cli-vhost-user-chardev-in-use",
        "-chardev",
        SRV,
        "-object",
        "cryptodev-vhost-user,id=v,chardev=c0",
        "-object",
        "cryptodev-vhost-user,id=w,chardev=c0",
    ),
    qmp(
        "cryptodev-cli-vhost-user-monitor-chardev",
        objs=("cryptodev-vhost-user,id=v,chardev=compat_monitor0",),
        note="the QMP monitor's own chardev is in use; QEMU prints nothing on stdout",
    ),
    bare(
        "cryptodev-cli-vhost-user-client-absent",
        "-chardev",
        f"socket,id=c0,path={ABSENT}",
        "-object",
        "cryptodev-vhost-user,id=v,chardev=c0",
    ),
    qmp(
        "cryptodev-cli-vhost-user-client-reconnect-absent",
        *state(V, "queues", "chardev"),
        chardevs=(f"socket,id=c0,path={ABSENT},reconnect=60",),
        objs=("cryptodev-vhost-user,id=v,chardev=c0",),
        note="non-fatal: the object is created and waits for the backend",
        normalize=drop_late_connect_report,
    ),
    qmp(
        "cryptodev-cli-vhost-user-before-chardev",
        get(V, "chardev"),
        objs=("cryptodev-vhost-user,id=v,chardev=c0",),
        chardevs=(SRV,),
        note="created late, after every chardev, whatever the order on the command line",
    ),
    bare(
        "cryptodev-cli-json",
        "-object",
        '{"qom-type":"cryptodev-vhost-user","id":"v","chardev":"nope","queues":2}',
    ),
    bare(
        "cryptodev-cli-json-queues-string",
        "-object",
        '{"qom-type":"cryptodev-backend","id":"b","queues":"2"}',
    ),
    bare(
        "cryptodev-cli-json-chardev-int",
        "-object",
        '{"qom-type":"cryptodev-vhost-user","id":"v","chardev":1}',
    ),
    bare(
        "cryptodev-cli-json-no-chardev",
        "-object",
        '{"qom-type":"cryptodev-vhost-user","id":"v"}',
    ),
]

QMP_CASES = [
    qmp(
        "cryptodev-qmp-object-add",
        add("cryptodev-backend", "b"),
        add("cryptodev-backend-builtin", "cb", queues=1),
        add("cryptodev-vhost-user", "v", chardev="c0", queues=2),
        *state(B, "queues"),
        *state(CB, "queues"),
        *state(V, "queues", "chardev"),
        chardevs=(SRV,),
    ),
    qmp(
        "cryptodev-qmp-object-add-errors",
        add("cryptodev-vhost-user", "v"),
        add("cryptodev-vhost-user", "v", chardev="nope"),
        add("cryptodev-vhost-user", "v", chardev=""),
        add("cryptodev-vhost-user", "v", chardev=1),
        add("cryptodev-vhost-user", "v", chardev="compat_monitor0"),
        add("cryptodev-vhost-user", "v", chardev="c0", queues=0),
        add("cryptodev-vhost-user", "v", chardev="c0", queues=-1),
        add("cryptodev-vhost-user", "v", chardev="c0", queues="2"),
        add("cryptodev-vhost-user", "v", chardev="c0", queues=4294967296),
        add("cryptodev-vhost-user", "v", chardev="c0", queues=1.5),
        add("cryptodev-vhost-user", "v", chardev="c0", bogus=1),
        add("cryptodev-backend-builtin", "cb", queues=2),
        add("cryptodev-backend-builtin", "cb", queues=0),
        add("cryptodev-backend-builtin", "cb", chardev="c0"),
        add("cryptodev-backend", "b", queues=0),
        ex("qom-list", path="/objects"),
        chardevs=(SRV,),
        note="nothing is left behind by a failed creation",
    ),
    qmp(
        "cryptodev-qmp-chardev-in-use",
        add("cryptodev-vhost-user", "v", chardev="c0"),
        add("cryptodev-vhost-user", "w", chardev="c0"),
        add("cryptodev-vhost-user", "w", chardev="c1"),
        get("/objects/w", "chardev"),
        ex("object-del", id="v"),
        add("cryptodev-vhost-user", "v2", chardev="c0"),
        get("/objects/v2", "chardev"),
        chardevs=(SRV, SRV1),
        note="deleting the object frees its chardev",
    ),
    qmp(
        "cryptodev-qmp-queues-at-run-time",
        qset(CB, "queues", 4),
        get(CB, "queues"),
        qset(CB, "queues", 0),
        get(CB, "queues"),
        qset(V, "queues", 5),
        get(V, "queues"),
        qset(V, "queues", 0),
        qset(B, "queues", 0),
        qset(B, "queues", 4294967295),
        get(B, "queues"),
        qset(B, "queues", -1),
        qset(B, "queues", 4294967296),
        qset(B, "queues", "1"),
        qset(B, "queues", None),
        qset(CB, "queues", 1),
        chardevs=(SRV,),
        objs=(
            "cryptodev-backend,id=b",
            "cryptodev-backend-builtin,id=cb",
            "cryptodev-vhost-user,id=v,chardev=c0",
        ),
        note="a live builtin backend takes any number: nothing is re-initialised",
    ),
    qmp(
        "cryptodev-qmp-chardev-property",
        get(V, "chardev"),
        qset(V, "chardev", "c0"),
        qset(V, "chardev", "c1"),
        qset(V, "chardev", 1),
        get(V, "chardev"),
        get(V, "type"),
        qset(V, "type", "x"),
        get(V, "nope"),
        chardevs=(SRV, SRV1),
        objs=("cryptodev-vhost-user,id=v,chardev=c0",),
    ),
    qmp(
        "cryptodev-qmp-object-del",
        ex("object-del", id="b"),
        ex("object-del", id="cb"),
        ex("object-del", id="v"),
        ex("qom-list", path="/objects"),
        add("cryptodev-vhost-user", "v", chardev="c0"),
        chardevs=(SRV,),
        objs=(
            "cryptodev-backend,id=b",
            "cryptodev-backend-builtin,id=cb",
            "cryptodev-vhost-user,id=v,chardev=c0",
        ),
    ),
    qmp(
        "cryptodev-qmp-list-properties",
        *(ex("qom-list-properties", typename=t) for t in CRYPTO_TYPES),
    ),
    Case(
        "cryptodev-qmp-list-types",
        (*QMP,),
        (
            CAPS,
            ex("qom-list-types", implements="cryptodev-backend"),
            ex("qom-list-types", implements="cryptodev-backend", abstract=True),
        ),
        normalize=restrict_named_list(("object", *CRYPTO_TYPES)),
    ),
    qmp(
        "cryptodev-hmp",
        hmc("object_add cryptodev-vhost-user,id=x,chardev=c0,queues=2"),
        hmc("object_add cryptodev-vhost-user,id=y,chardev=c0"),
        hmc("object_add cryptodev-backend-builtin,id=z,queues=2"),
        hmc("qom-get /objects/x chardev"),
        hmc("qom-get /objects/x queues"),
        hmc("qom-set /objects/x queues 0x10"),
        hmc("qom-get /objects/x queues"),
        hmc("qom-set /objects/x queues 0"),
        hmc("qom-set /objects/x queues abc"),
        hmc("qom-set /objects/x chardev c0"),
        hmc("qom-list /objects/x"),
        hmc("info qom-tree /objects"),
        hmc("object_del x"),
        chardevs=(SRV,),
    ),
]

CRYPTODEV_CASES: list[Case] = [*HELP, *CLI, *QMP_CASES]
