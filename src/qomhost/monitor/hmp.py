"""HMP, the human monitor: command lines in, text out, as QEMU prints it.

Commands are parsed with QEMU's argument rules (a word or a quoted
string per ``s`` argument, the rest of the line for ``S``, ``-x`` flags),
and output uses ``\\r\\n`` line ends, on a monitor chardev and in
``human-monitor-command`` replies alike. Errors print as ``Error: <text>``
followed by the hint line, if any.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qomhost.errors import QemuError

if TYPE_CHECKING:
    from qomhost.host import Host

__all__ = ["HMP_COMMANDS", "INFO_COMMANDS", "run_hmp_command"]


class _Output:
    """Collects what a command prints, turning ``\\n`` into ``\\r\\n``."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def print(self, text: str) -> None:
        self.parts.append(text.replace("\n", "\r\n"))

    def error(self, err: QemuError) -> None:
        self.print(f"Error: {err.desc}\n")
        if err.hint:
            self.print(err.hint + "\n")

    def text(self) -> str:
        return "".join(self.parts)


Handler = Callable[["Host", _Output, dict[str, object]], None]


@dataclass(frozen=True)
class HmpCommand:
    """One HMP command: name (with ``|aliases``), argument spec, help."""

    name: str
    args_type: str
    params: str
    help: str
    handler: Handler | None = None
    sub_table: tuple[HmpCommand, ...] | None = None

    def matches(self, word: str) -> bool:
        return word in self.name.split("|")


class _ParseFailed(Exception):
    pass


def _is_space(ch: str) -> bool:
    return ch in " \t\n\v\f\r"


def _process_printf(text: str | bytes) -> None:
    """Print to the process's standard output, not to the monitor.

    QEMU's argument parser reports bad quoting with plain ``printf``, so
    the text never reaches the monitor (or a ``human-monitor-command``
    reply); it only shows on a terminal that happens to be stdout. It is
    written as bytes: the line may hold bytes that are not UTF-8 (kept as
    surrogates), and ``printf`` writes them as they came.
    """
    import sys

    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    sys.stdout.flush()
    stream = getattr(sys.stdout, "buffer", None)
    if stream is not None:
        stream.write(data)
        stream.flush()
    else:  # a text-only stdout (captured, say)
        sys.stdout.write(data.decode("utf-8", "replace"))
        sys.stdout.flush()


def _get_str(line: str, pos: int, out: _Output) -> tuple[str, int] | None:
    """One word or double-quoted string, as QEMU's ``get_str``."""
    while pos < len(line) and _is_space(line[pos]):
        pos += 1
    if pos >= len(line):
        return None
    chars: list[str] = []
    if line[pos] == '"':
        pos += 1
        while pos < len(line) and line[pos] != '"':
            if line[pos] == "\\":
                pos += 1
                esc = line[pos] if pos < len(line) else ""
                pos += 1
                mapped = {"n": "\n", "r": "\r", "\\": "\\", "'": "'", '"': '"'}.get(esc)
                if mapped is None:
                    # printf's %c: the first byte of what follows the backslash
                    code = esc.encode("utf-8", "surrogateescape")[:1]
                    _process_printf(b"unsupported escape code: '\\" + code + b"'\n")
                    return None
                chars.append(mapped)
            else:
                chars.append(line[pos])
                pos += 1
        if pos >= len(line):
            _process_printf("unterminated string\n")
            return None
        pos += 1
    else:
        while pos < len(line) and not _is_space(line[pos]):
            chars.append(line[pos])
            pos += 1
    return "".join(chars), pos


def _parse_args(cmd: HmpCommand, line: str, pos: int, out: _Output) -> dict[str, object]:
    """Parse the arguments after the command name per ``cmd.args_type``."""
    args: dict[str, object] = {}
    spec = cmd.args_type
    for item in filter(None, spec.split(",")) if spec else ():
        key, _, typ = item.partition(":")
        optional = typ.endswith("?")
        typ = typ.rstrip("?")
        while pos < len(line) and _is_space(line[pos]):
            pos += 1
        if typ.startswith("-"):
            flag = typ[1:]
            if pos + 1 < len(line) and line[pos] == "-":
                if line[pos + 1] != flag:
                    out.print(f"{cmd.name}: unsupported option -{line[pos + 1]}\n")
                    raise _ParseFailed
                args[key] = True
                pos += 2
            continue
        if optional and pos >= len(line):
            continue
        if typ == "S":
            if pos >= len(line):
                out.print(f"{cmd.name}: string expected\n")
                raise _ParseFailed
            args[key] = line[pos:]
            pos = len(line)
            continue
        got = _get_str(line, pos, out)
        if got is None:
            out.print(f"{cmd.name}: string expected\n")
            raise _ParseFailed
        args[key], pos = got
    while pos < len(line) and _is_space(line[pos]):
        pos += 1
    if pos < len(line):
        out.print(f"{cmd.name}: extraneous characters at the end of line\n")
        raise _ParseFailed
    return args


def _command_word(line: str, pos: int) -> tuple[str, int, int]:
    while pos < len(line) and _is_space(line[pos]):
        pos += 1
    start = pos
    while pos < len(line) and line[pos] != "/" and not _is_space(line[pos]):
        pos += 1
    return line[start:pos], start, pos


def _try_help(line: str, start: int, end: int, out: _Output) -> None:
    """QEMU's hint after a parse error: the line as typed, up to the command name
    (``Try "help info iothreads"``, leading blanks and inner spacing kept)."""
    out.print(f'Try "help {line[start:end]}" for more information\n')


def _run(
    host: Host,
    line: str,
    pos: int,
    table: tuple[HmpCommand, ...],
    out: _Output,
    quote_from: int | None = None,
) -> None:
    """Find the command at ``pos`` in ``table`` and run it.

    A command with a sub-table (``info``) hands the rest of the line to it;
    messages then quote the line from where the outer command began
    (``quote_from``), as QEMU's do.
    """
    if quote_from is None:
        quote_from = pos
    word, start, end = _command_word(line, pos)
    if start >= len(line):  # a blank line; "/x" is an unknown command ''
        return
    cmd = next((c for c in table if c.matches(word)), None)
    if cmd is None:
        out.print(f"unknown command: '{line[quote_from:end]}'\n")
        return
    rest = end
    while rest < len(line) and _is_space(line[rest]):
        rest += 1
    if cmd.sub_table is not None and rest < len(line):
        _run(host, line, rest, cmd.sub_table, out, quote_from)
        return
    try:
        args = _parse_args(cmd, line, end, out)
    except _ParseFailed:
        _try_help(line, quote_from, end, out)
        return
    assert cmd.handler is not None
    try:
        cmd.handler(host, out, args)
    except QemuError as err:
        out.error(err)


def complete_command_line(before: str) -> tuple[int, list[str]]:
    """Tab completion of command names (and ``info`` subcommands).

    Returns the length of the word being completed and the names that
    start with it, aliases included, as QEMU's monitor offers them.
    """
    words = before.split()
    if before[-1:].isspace() or not words:
        words.append("")
    table: tuple[HmpCommand, ...] = HMP_COMMANDS
    while len(words) > 1:
        cmd = next((c for c in table if c.matches(words[0])), None)
        if cmd is None or cmd.sub_table is None:
            return 0, []
        table = cmd.sub_table
        words = words[1:]
    word = words[0]
    names = [name for cmd in table for name in cmd.name.split("|") if name.startswith(word)]
    return len(word), names


def run_hmp_command(host: Host, line: str) -> str:
    """Run one HMP command line and return its output (``\\r\\n`` line ends)."""
    out = _Output()
    _run(host, line, 0, HMP_COMMANDS, out)
    return out.text()


# --- command handlers ------------------------------------------------------------


def _help_line(cmd: HmpCommand, prefix: str = "") -> str:
    return f"{prefix}{cmd.name} {cmd.params} -- {cmd.help}\n"


def _hmp_help(host: Host, out: _Output, args: dict[str, object]) -> None:
    name = args.get("name")
    if name is None:
        for cmd in HMP_COMMANDS:
            out.print(_help_line(cmd))
        return
    assert isinstance(name, str)
    words = name.split()
    found = next((c for c in HMP_COMMANDS if c.matches(words[0])), None)
    if found is None:
        out.print(f"unknown command: '{words[0]}'\n")
        return
    cmd = found
    if cmd.sub_table is not None:
        if len(words) == 1:
            for sub in cmd.sub_table:
                out.print(_help_line(sub, "info "))
            return
        sub_cmd = next((c for c in cmd.sub_table if c.matches(words[1])), None)
        if sub_cmd is None:
            out.print(f"unknown command: '{words[0]} {words[1]}'\n")
            return
        out.print(_help_line(sub_cmd, "info "))
        return
    out.print(_help_line(cmd))


def _hmp_info_help(host: Host, out: _Output, args: dict[str, object]) -> None:
    for sub in INFO_COMMANDS:
        out.print(_help_line(sub, "info "))


def _hmp_qom_list(host: Host, out: _Output, args: dict[str, object]) -> None:
    from qomhost.monitor.commands.qom import qom_list

    path = args.get("path")
    if path is None:
        out.print("/\n")
        return
    result = qom_list(host.command_context(), {"path": path})
    assert isinstance(result, list)
    for entry in result:
        out.print(f"{entry['name']} ({entry['type']})\n")


def _hmp_qom_get(host: Host, out: _Output, args: dict[str, object]) -> None:
    from qomhost.monitor.commands.qom import qom_get
    from qomhost.qapi.json import dump_json

    value = qom_get(host.command_context(), args)
    out.print(dump_json(value, pretty=True) + "\n")


def _hmp_qom_set(host: Host, out: _Output, args: dict[str, object]) -> None:
    from qomhost.qom.object import resolve_path

    path, prop, value = args["path"], args["property"], args["value"]
    assert isinstance(path, str) and isinstance(prop, str) and isinstance(value, str)
    if args.get("json"):
        from qomhost.monitor.commands.qom import qom_set
        from qomhost.qapi.json import parse_json

        qom_set(
            host.command_context(), {"path": path, "property": prop, "value": parse_json(value)}
        )
        return
    obj, ambiguous = resolve_path(host.root, path)
    if obj is None:
        from qomhost.errors import DEVICE_NOT_FOUND

        raise QemuError(f"Device '{path}' not found", DEVICE_NOT_FOUND)
    if ambiguous:
        out.print(f"Warning: Path '{path}' is ambiguous\n")
    host.set_property_string(obj, prop, value)


def _hmp_object_add(host: Host, out: _Output, args: dict[str, object]) -> None:
    text = args["object"]
    assert isinstance(text, str)
    help_text = host.object_add_keyval(text)
    if help_text is not None:
        out.print(help_text)


def _hmp_object_del(host: Host, out: _Output, args: dict[str, object]) -> None:
    ident = args["id"]
    assert isinstance(ident, str)
    host.del_object(ident)


def _hmp_quit(host: Host, out: _Output, args: dict[str, object]) -> None:
    host.request_shutdown("host-qmp-quit")


def _hmp_info_version(host: Host, out: _Output, args: dict[str, object]) -> None:
    from qomhost.host import PACKAGE, QEMU_VERSION

    v = QEMU_VERSION
    out.print(f"{v['major']}.{v['minor']}.{v['micro']}{PACKAGE}\n")


def _hmp_info_name(host: Host, out: _Output, args: dict[str, object]) -> None:
    if host.name is not None:
        out.print(f"{host.name}\n")


def _hmp_info_qom_tree(host: Host, out: _Output, args: dict[str, object]) -> None:
    from qomhost.qom.object import resolve_path

    path = args.get("path", "/machine")
    assert isinstance(path, str)
    obj, _ambiguous = resolve_path(host.root, path)
    if obj is None:
        out.print(f"Path '{path}' could not be resolved.\n")
        return
    _print_tree(out, obj, "" if obj is host.root else (obj.name or ""), 0)


def _print_tree(out: _Output, obj: object, name: str, indent: int) -> None:
    from qomhost.qom.object import Object

    assert isinstance(obj, Object)
    out.print(f"{' ' * indent}/{name} ({obj.type_name})\n")
    for child_name, child in sorted(obj.children(), key=lambda item: item[0]):
        _print_tree(out, child, child_name, indent + 2)


def _hmp_info_iothreads(host: Host, out: _Output, args: dict[str, object]) -> None:
    from qomhost.monitor.commands.iothread import iothread_infos

    for info in iothread_infos(host.command_context()):
        out.print(f"{info['id']}:\n")
        out.print(f"  thread_id={info['thread-id']}\n")
        for key in ("poll-max-ns", "poll-grow", "poll-shrink", "aio-max-batch"):
            out.print(f"  {key}={info[key]}\n")


def _hmp_info_sev(host: Host, out: _Output, args: dict[str, object]) -> None:
    from qomhost.monitor.commands.sev import sev_info
    from qomhost.sev.policy import SEV_POLICY_NODBG, SEV_POLICY_NOKS

    info = sev_info(host.command_context())
    if not info["enabled"]:
        out.print("SEV is not enabled\n")
        return
    policy = info["policy"]
    assert isinstance(policy, int)
    out.print(f"handle: {info['handle']}\n")
    out.print(f"state: {info['state']}\n")
    out.print(f"build: {info['build-id']}\n")
    out.print(f"api version: {info['api-major']}.{info['api-minor']}\n")
    out.print(f"debug: {'off' if policy & SEV_POLICY_NODBG else 'on'}\n")
    out.print(f"key-sharing: {'off' if policy & SEV_POLICY_NOKS else 'on'}\n")


INFO_COMMANDS: tuple[HmpCommand, ...] = (
    HmpCommand("iothreads", "", "", "show iothreads", _hmp_info_iothreads),
    HmpCommand("name", "", "", "show the current VM name", _hmp_info_name),
    HmpCommand("qom-tree", "path:s?", "[path]", "show QOM composition tree", _hmp_info_qom_tree),
    HmpCommand("sev", "", "", "show SEV information", _hmp_info_sev),
    HmpCommand("version", "", "", "show the version of QEMU", _hmp_info_version),
)

HMP_COMMANDS: tuple[HmpCommand, ...] = (
    HmpCommand("help|?", "name:S?", "[cmd]", "show the help", _hmp_help),
    HmpCommand(
        "info",
        "item:s?",
        "[subcommand]",
        "show various information about the system state",
        _hmp_info_help,
        sub_table=INFO_COMMANDS,
    ),
    HmpCommand(
        "object_add",
        "object:S",
        "[qom-type=]type,id=str[,prop=value][,...]",
        "create QOM object",
        _hmp_object_add,
    ),
    HmpCommand("object_del", "id:s", "id", "destroy QOM object", _hmp_object_del),
    HmpCommand("qom-get", "path:s,property:s", "path property", "print QOM property", _hmp_qom_get),
    HmpCommand("qom-list", "path:s?", "path", "list QOM properties", _hmp_qom_list),
    HmpCommand(
        "qom-set",
        "json:-j,path:s,property:s,value:S",
        "[-j] path property value",
        "set QOM property.\n\t\t\t-j: the value is specified in json format.",
        _hmp_qom_set,
    ),
    HmpCommand("quit|q", "", "", "quit the emulator", _hmp_quit),
)
