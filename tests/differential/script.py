"""What the case tables are made of: command lines and QMP script lines.

Shared by ``cases.py`` and the tables of their own (``sev_cases.py``,
``cryptodev_cases.py``, ``keyring_cases.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

BASE = ("-machine", "none", "-nodefaults", "-display", "none")
QMP = (*BASE, "-qmp", "stdio")
HMP = (*BASE, "-monitor", "stdio")
CAPS: Mapping[str, object] = {"execute": "qmp_capabilities"}
CAPS_OOB: Mapping[str, object] = {"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}


def ex(command: str, /, **arguments: object) -> dict[str, object]:
    """``{"execute": command, "arguments": {...}}``; ``_`` in argument names becomes ``-``."""
    msg: dict[str, object] = {"execute": command}
    if arguments:
        msg["arguments"] = {k.replace("_", "-"): v for k, v in arguments.items()}
    return msg


def with_id(msg: Mapping[str, object], id_: object) -> dict[str, object]:
    return {**msg, "id": id_}


def get(path: str, prop: str) -> dict[str, object]:
    return ex("qom-get", path=path, property=prop)


def qset(path: str, prop: str, value: object) -> dict[str, object]:
    return ex("qom-set", path=path, property=prop, value=value)


def qlist(path: str) -> dict[str, object]:
    return ex("qom-list", path=path)


def add(qom_type: str, id_: str, **props: object) -> dict[str, object]:
    return ex("object-add", qom_type=qom_type, id=id_, **props)


def hmc(line: str) -> dict[str, object]:
    """``human-monitor-command``: HMP through QMP."""
    return ex("human-monitor-command", command_line=line)


def objects(specs: Iterable[str]) -> tuple[str, ...]:
    """``-object`` options for each of ``specs``."""
    out: list[str] = []
    for spec in specs:
        out += ["-object", spec]
    return tuple(out)
