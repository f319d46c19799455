"""``qomhost``: QEMU's command line for objects, chardevs and monitors.

It accepts the flags QEMU 7.2 accepts for what qomhost does, so that a
test can run the same command line against both. Processing follows
QEMU's phases:

1. every option is checked to exist and to have its argument;
2. options are parsed in order (``-object`` strings are checked against
   the type's schema; these errors carry the ``-option arg:`` location);
3. the machine is created, then the *early* objects, then chardevs and
   monitors (errors carry the location of their option), then the *late*
   objects such as ``cryptodev-vhost-user``;
4. the main loop runs until ``quit`` or a signal.
"""

from __future__ import annotations

import _thread
import os
import sys

from qomhost.errors import QemuError

# Start-up speed is a goal (QEMU answers in a few tens of milliseconds), so
# this module avoids typing, dataclasses and threading, and uses _signal:
# ``signal`` builds enums, which costs as much as the rest of a start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable
    from typing import NoReturn
else:
    import _signal

__all__ = ["main"]

# name -> takes an argument
_OPTIONS: dict[str, bool] = {
    "object": True,
    "chardev": True,
    "qmp": True,
    "qmp-pretty": True,
    "mon": True,
    "monitor": True,
    "machine": True,
    "M": True,
    "accel": True,
    "nodefaults": False,
    "display": True,
    "S": False,
    "daemonize": False,
    "pidfile": True,
    "name": True,
    "version": False,
    "h": False,
    "help": False,
}

_USAGE = """\
usage: {prog} [options]

qomhost runs QEMU's user-creatable objects (-object) with QMP and HMP
monitors, accepting QEMU 7.2's flags for them.

-object TYPE,id=ID[,prop=value][,...] | -object '{{JSON}}'
                create an object; '-object help' lists the types and
                '-object TYPE,help' their properties
-chardev socket,id=ID,path=PATH[,server=on|off][,wait=on|off][,reconnect=N]
-chardev socket,id=ID,host=HOST,port=PORT[,server=on|off][,wait=on|off][,reconnect=N]
        [,tls-creds=ID[,tls-authz=ID]]
-chardev stdio,id=ID
                create a character device
-qmp DEV        QMP monitor on DEV (stdio, unix:PATH[,server=on,wait=off],
                tcp:HOST:PORT[,server=on,wait=off])
-qmp-pretty DEV like -qmp, with pretty-printed replies
-monitor DEV    HMP monitor on DEV
-mon chardev=ID[,mode=control|readline][,pretty=on|off]
                monitor on an existing chardev
-machine none[,prop=value]
                the (empty) machine; other machine types are not emulated
                (q35 and pc are accepted with memory-encryption=ID, to run
                SEV's start-up checks)
-accel tcg|kvm[,prop=value]
                the accelerator; kvm runs the checks of a sev-guest bound
                with -machine ...,memory-encryption=ID
-name NAME[,debug-threads=on|off]
                name of this instance (query-name)
-nodefaults     accepted (qomhost creates no default devices)
-display none   accepted (qomhost has no display)
-S              accepted (there are no vCPUs to start)
-daemonize      detach once start-up has succeeded
-pidfile FILE   write the process id to FILE
-version        show the version
-h              show this help
"""


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _Fatal(BaseException):
    """An object's fatal error at run time (QEMU's exit(1)): a BaseException,
    so that it leaves the event loop, which logs and survives Exceptions."""


def _stderr(text: str) -> None:
    """Write to standard error as bytes: an argument's bytes that were not
    UTF-8 (kept by Python as surrogate escapes) go out as they came in."""
    buffer = getattr(sys.stderr, "buffer", None)
    if buffer is None:  # replaced by a text stream (tests, embedding)
        sys.stderr.write(text)
        return
    sys.stderr.flush()
    buffer.write(text.encode("utf-8", "surrogateescape"))
    buffer.flush()


class _Reporter:
    """Prints QEMU-style diagnostics: ``prog: [location: ]message``."""

    def __init__(self, prog: str, location: str | None = None) -> None:
        self.prog = prog
        self.location = location

    def _prefix(self) -> str:
        return f"{self.prog}: {self.location}: " if self.location else f"{self.prog}: "

    def error(self, message: str, hint: str | None = None) -> None:
        _stderr(self._prefix() + message + "\n")
        if hint:
            _stderr(hint + "\n")

    def warn(self, message: str) -> None:
        _stderr(self._prefix() + "warning: " + message + "\n")

    def fail(self, err: QemuError) -> NoReturn:
        self.error(err.desc, err.hint)
        raise _Exit(1)


class _ChardevPlan:
    def __init__(self, ident: str, location: str, backend: str, opts: dict[str, str]) -> None:
        self.ident = ident
        self.location = location
        self.backend = backend
        self.opts = opts


class _MonitorPlan:
    def __init__(self, chardev: str, location: str, mode: str, pretty: bool) -> None:
        self.chardev = chardev
        self.location = location
        self.mode = mode
        self.pretty = pretty


class _Plan:
    def __init__(self) -> None:
        self.objects: list[tuple[str, object]] = []
        self.chardevs: list[_ChardevPlan] = []
        self.monitors: list[_MonitorPlan] = []
        self.machine: str | None = None
        self.machine_location = ""
        #: (location, value) of each -accel
        self.accels: list[tuple[str, str]] = []
        self.name: str | None = None
        self.daemonize = False
        self.pidfile: str | None = None


def _split_argv(argv: list[str], rep: _Reporter) -> list[tuple[str, str | None]]:
    """First pass: every option must exist and have its argument."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            # QEMU treats a bare argument as a disk image and opens it first.
            rep.location = arg
            if not os.path.exists(arg):
                rep.fail(QemuError(f"Could not open '{arg}': No such file or directory"))
            rep.fail(QemuError("disk images are not supported: qomhost emulates no devices"))
        name = arg[2:] if arg.startswith("--") else arg[1:]
        if name not in _OPTIONS:
            rep.error(f"{arg}: invalid option")
            raise _Exit(1)
        value: str | None = None
        if _OPTIONS[name]:
            if i >= len(argv):
                rep.error(f"{arg}: requires an argument")
                raise _Exit(1)
            value = argv[i]
            i += 1
        out.append((name, value))
    return out


def _legacy_chardev(text: str) -> tuple[str, dict[str, str]] | None:
    """QEMU's old ``-qmp``/``-monitor`` device syntax to chardev options."""
    from qomhost.qapi.opts import parse_qemu_opts

    if text == "stdio":
        return "stdio", {}
    if text.startswith("unix:"):
        rest = text[5:]
        path, _, opts = rest.partition(",")
        parsed = parse_qemu_opts(opts).as_dict() if opts else {}
        return "socket", {"path": path, **parsed}
    if text.startswith("tcp:"):
        rest = text[4:]
        addr, _, opts = rest.partition(",")
        host, _, port = addr.rpartition(":")
        parsed = parse_qemu_opts(opts).as_dict() if opts else {}
        return "socket", {"host": host, "port": port, **parsed}
    return None


_TLS_KEYS = {"tls-creds", "tls-authz"}
_CHARDEV_KEYS = {
    "socket": {
        "path",
        "host",
        "port",
        "server",
        "wait",
        "reconnect",
        "nodelay",
        "ipv4",
        "ipv6",
        *_TLS_KEYS,
    },
    # QEMU's -chardev options are one list for every backend, so stdio takes
    # (and ignores) the TLS keys too.
    "stdio": {"signal", *_TLS_KEYS},
}


def _parse(argv: list[str], rep: _Reporter) -> _Plan:
    from qomhost.cli.objectopts import parse_object_cli
    from qomhost.qapi.opts import OptsList, parse_qemu_opts

    plan = _Plan()
    object_group = OptsList("object", "qom-type")
    chardev_group = OptsList("chardev", "backend")
    compat = 0
    for name, value in _split_argv(argv, rep):
        location = f"-{name} {value}" if value is not None else f"-{name}"
        rep.location = location
        if name in ("h", "help"):
            sys.stdout.write(_USAGE.format(prog=rep.prog))
            raise _Exit(0)
        if name == "version":
            from qomhost.host import PACKAGE, QEMU_VERSION

            v = QEMU_VERSION
            sys.stdout.write(
                f"QEMU emulator version {v['major']}.{v['minor']}.{v['micro']} ({PACKAGE})\n"
                "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n"
            )
            raise _Exit(0)
        assert value is not None or not _OPTIONS[name]
        try:
            if name == "object":
                assert value is not None
                warnings: list[str] = []
                try:
                    spec = parse_object_cli(value, object_group, warnings)
                finally:
                    for warning in warnings:
                        rep.warn(warning)
                if isinstance(spec, str):
                    sys.stdout.write(spec)
                    raise _Exit(0)
                plan.objects.append((location, spec))
            elif name == "chardev":
                assert value is not None
                result = chardev_group.parse(value)
                backend = result.get("backend")
                if result.id is None:
                    raise QemuError("chardev: no id specified")
                opts = {k: v for k, v in result.as_dict().items() if k not in ("backend", "id")}
                plan.chardevs.append(_ChardevPlan(result.id, location, backend or "", opts))
            elif name in ("qmp", "qmp-pretty", "monitor"):
                assert value is not None
                if value == "none":
                    continue
                legacy = _legacy_chardev(value)
                if legacy is None:
                    rep.error(f"'{value}' is not a valid char driver")
                    rep.error(f"parse error: {value}")
                    raise _Exit(1)
                ident = f"compat_monitor{compat}"
                compat += 1
                backend, opts = legacy
                plan.chardevs.append(_ChardevPlan(ident, location, backend, opts))
                mode = "readline" if name == "monitor" else "control"
                plan.monitors.append(_MonitorPlan(ident, location, mode, name == "qmp-pretty"))
            elif name == "mon":
                assert value is not None
                opts = parse_qemu_opts(value, "chardev").as_dict()
                if "chardev" not in opts:
                    raise QemuError("Parameter 'chardev' is missing")
                mode = opts.get("mode", "readline")
                if mode not in ("control", "readline"):
                    raise QemuError(f"unknown monitor mode '{mode}'")
                pretty = opts.get("pretty", "off") in ("on", "yes", "true")
                plan.monitors.append(_MonitorPlan(opts["chardev"], location, mode, pretty))
            elif name in ("machine", "M"):
                plan.machine = value
                plan.machine_location = location
            elif name == "accel":
                assert value is not None
                if value in ("help", "?"):
                    from qomhost.cli.accel import ACCEL_HELP

                    sys.stdout.write(ACCEL_HELP)
                    raise _Exit(0)
                plan.accels.append((location, value))
            elif name == "name":
                assert value is not None
                opts = parse_qemu_opts(value, "guest").as_dict()
                for key in opts:
                    if key not in ("guest", "process", "debug-threads"):
                        raise QemuError(f"Invalid parameter '{key}'")
                plan.name = opts.get("guest") or None
            elif name == "display":
                if value != "none":
                    raise QemuError(f"display '{value}' is not available: qomhost has no display")
            elif name == "daemonize":
                plan.daemonize = True
            elif name == "pidfile":
                plan.pidfile = value
        except QemuError as err:
            rep.fail(err)
    rep.location = None
    return plan


# x86 machine types qomhost accepts only together with memory-encryption:
# QEMU stops in SEV's start-up checks before it emulates anything.
_SEV_ONLY_MACHINES = ("q35", "pc", "pc-q35-7.2", "pc-i440fx-7.2")


def _unsupported_machine(rep: _Reporter) -> NoReturn:
    rep.error("unsupported machine type")
    _stderr("Use -machine help to list supported machines\n")
    raise _Exit(1)


def _setup_machine(host: object, plan: _Plan, rep: _Reporter) -> dict[str, object]:
    """Create ``/machine``; returns the options to apply once early objects exist."""
    from qomhost.host import Host
    from qomhost.qapi.opts import parse_keyval

    assert isinstance(host, Host)
    spec = plan.machine or "none"
    try:
        opts = parse_keyval(spec, "type")
    except QemuError as err:
        rep.location = plan.machine_location
        rep.fail(err)
    machine_type = opts.pop("type", "none")
    if machine_type in ("help", "?"):
        sys.stdout.write("Supported machines are:\nnone                 empty machine\n")
        raise _Exit(0)
    if machine_type != "none" and not (
        machine_type in _SEV_ONLY_MACHINES
        and ("memory-encryption" in opts or "confidential-guest-support" in opts)
    ):
        _unsupported_machine(rep)
    host.create_machine("none-machine")
    pending: dict[str, object] = dict(opts)
    pending["type"] = machine_type
    return pending


def _apply_machine_options(host: object, opts: dict[str, object], rep: _Reporter) -> None:
    """Set the ``-machine`` properties (after the early objects, as QEMU does)."""
    from qomhost.host import Host

    assert isinstance(host, Host)
    machine = host.machine
    assert machine is not None
    for key, value in opts.items():
        if key in ("type", "accel"):
            continue
        try:
            if not isinstance(value, str):
                raise QemuError(f"Invalid parameter type for '{key}', expected: string")
            machine.set_property_string(key, value)
        except QemuError as err:
            rep.fail(err)


def _start_accelerator(host: object, plan: _Plan, opts: dict[str, object], rep: _Reporter) -> None:
    """Start the accelerator; a bound ``sev-guest`` is checked by KVM's start."""
    from qomhost.cli.accel import AccelSpec, configure_accelerators
    from qomhost.host import Host
    from qomhost.objects.machine import Machine
    from qomhost.qapi.opts import parse_qemu_opts

    assert isinstance(host, Host) and isinstance(host.machine, Machine)
    machine = host.machine
    specs: list[AccelSpec] = []
    legacy = opts.get("accel")
    if legacy is not None and plan.accels:
        rep.location = None
        rep.fail(QemuError('The -accel and "-machine accel=" options are incompatible'))
    if isinstance(legacy, str):
        specs = [AccelSpec(name, {}, None) for name in legacy.split(":")]
    for location, value in plan.accels:
        try:
            parsed = parse_qemu_opts(value, "accel").as_dict()
        except QemuError as err:
            rep.location = location
            rep.fail(err)
        name = parsed.pop("accel", "")
        specs.append(AccelSpec(name, parsed, location))
    if not specs:
        specs = [AccelSpec("tcg", {}, None)]

    def report(location: str | None, message: str) -> None:
        rep.location = location
        rep.error(message)

    try:
        started = configure_accelerators(machine, specs, report)
    except QemuError:
        raise _Exit(1) from None  # already reported
    rep.location = None
    if started is None:
        raise _Exit(1)
    if machine.cgs is not None and not getattr(machine.cgs, "ready", False):
        # QEMU 7.2 aborts on an assertion here (docs/compatibility.md).
        rep.fail(
            QemuError(
                f"memory encryption object '{machine.cgs.name}' needs the KVM accelerator "
                "(-accel kvm)"
            )
        )
    if opts.get("type", "none") != "none":
        _unsupported_machine(rep)


def _open_chardev(host: object, chr_plan: _ChardevPlan, plan: _Plan, rep: _Reporter) -> None:
    from qomhost.chardev.stdio import ChardevStdio
    from qomhost.host import Host

    assert isinstance(host, Host)
    rep.location = chr_plan.location
    backend, opts = chr_plan.backend, chr_plan.opts
    if backend not in _CHARDEV_KEYS:
        rep.fail(QemuError(f"'{backend}' is not a valid char driver name"))
    for key in opts:
        if key not in _CHARDEV_KEYS[backend]:
            rep.fail(QemuError(f"Invalid parameter '{key}'"))
    if backend == "stdio":
        if any(isinstance(c, ChardevStdio) for _n, c in host.chardevs.children()):
            rep.fail(QemuError("cannot use stdio by multiple character devices"))
        if plan.daemonize:
            rep.fail(QemuError("cannot use stdio with -daemonize"))
        stdio = ChardevStdio("chardev-stdio")
        host.add_chardev(stdio, chr_plan.ident)
        return
    from qomhost.chardev.socket import ChardevSocket, SocketAddress
    from qomhost.qapi.opts import qemu_opt_value_to

    try:

        def flag(key: str, default: bool) -> bool:
            raw = opts.get(key)
            return default if raw is None else bool(qemu_opt_value_to("bool", key, raw))

        path, hostname, port = opts.get("path"), opts.get("host"), opts.get("port")
        if path is not None and hostname is not None:
            raise QemuError("None or one of 'path', 'fd' or 'host' option required.")
        if path is None and hostname is None:
            raise QemuError("Unable to parse FD number ")
        if hostname is not None and port is None:
            raise QemuError("chardev: socket: no port given")
        sock = ChardevSocket("chardev-socket")
        sock.address = SocketAddress(path=path, host=hostname, port=port)
        sock.server = flag("server", False)
        _configure_tls(host, sock, opts.get("tls-creds"), opts.get("tls-authz"))
        sock.wait = flag("wait", True)
        sock.nodelay = flag("nodelay", False)
        reconnect = opts.get("reconnect")
        sock.reconnect = (
            int(qemu_opt_value_to("number", "reconnect", reconnect)) if reconnect else 0
        )
        sock.label = chr_plan.ident
        sock.open()
    except QemuError as err:
        rep.fail(err)
    if sock.connect_failed_message is not None:
        saved, rep.location = rep.location, None
        rep.error(sock.connect_failed_message)
        rep.location = saved
    host.add_chardev(sock, chr_plan.ident)
    if sock.server and sock.wait:
        _stderr(
            f"{rep.prog}: {chr_plan.location}: info: QEMU waiting for connection on: "
            f"{sock.describe()}\n"
        )
        sys.stderr.flush()
        sock.wait_for_peer()


def _configure_tls(host: object, sock: object, creds_id: str | None, authz_id: str | None) -> None:
    """``tls-creds``/``tls-authz`` of a socket chardev, checked in QEMU's order."""
    from qomhost.chardev.socket import ChardevSocket
    from qomhost.host import Host

    assert isinstance(host, Host) and isinstance(sock, ChardevSocket)
    if creds_id is not None:
        from qomhost.objects.tls import QCryptoTLSCreds, QCryptoTLSCredsX509

        creds = host.lookup_object(creds_id)
        if creds is None:
            raise QemuError(f"No TLS credentials with id '{creds_id}'")
        if not isinstance(creds, QCryptoTLSCreds):
            raise QemuError(f"Object with id '{creds_id}' is not TLS credentials")
        creds.check_endpoint("server" if sock.server else "client")
        if sock.address.path is not None:
            raise QemuError("'tls_creds' option is incompatible with 'unix' address type")
        assert isinstance(creds, QCryptoTLSCredsX509)
        sock.tls_creds = creds
    if authz_id is not None and creds_id is None:
        raise QemuError("'tls_authz' option requires 'tls_creds' option")
    if authz_id is not None:

        def authorize(dn: str) -> bool:
            # By id at each check: the object may be replaced or deleted meanwhile.
            from qomhost.objects.authz.base import authz_is_allowed_by_id

            return authz_is_allowed_by_id(host, authz_id, dn)

        sock.tls_authorize = authorize


def _create_objects(host: object, plan: _Plan, rep: _Reporter, late: bool) -> None:
    from qomhost.cli.objectopts import ObjectSpec
    from qomhost.host import Host
    from qomhost.qom.object import types

    assert isinstance(host, Host)
    rep.location = None
    for _location, spec in plan.objects:
        assert isinstance(spec, ObjectSpec)
        info = types.info(spec.type_name)
        if info is None or info.late != late:
            continue
        try:
            host.create_object(spec.type_name, spec.ident, spec.props)
        except QemuError as err:
            rep.fail(err)


def _start_monitors(host: object, plan: _Plan, rep: _Reporter) -> None:
    from qomhost.host import Host

    assert isinstance(host, Host)
    for mon in plan.monitors:
        chardev = host.chardevs.child(mon.chardev)
        if chardev is None:
            rep.location = mon.location
            rep.fail(QemuError(f'chardev "{mon.chardev}" not found'))
        from qomhost.chardev.base import Chardev

        assert isinstance(chardev, Chardev)
        exposed = _exposed_address(chardev)
        if exposed is not None:
            rep.location = mon.location
            rep.warn(
                f"monitor on {exposed} accepts connections from the network without TLS: "
                "anyone who connects controls this process"
            )
            rep.location = None
        if mon.mode == "control":
            from qomhost.monitor.qmp.server import QmpMonitor

            QmpMonitor(host, chardev, pretty=mon.pretty)
        else:
            from qomhost.monitor.hmp_server import HmpMonitor

            HmpMonitor(host, chardev)


def _exposed_address(chardev: object) -> str | None:
    """The address of a TCP listener that is neither loopback nor TLS, or None.

    QEMU says nothing; qomhost warns, because a monitor is full control of
    the process and plain TCP on a reachable address gives it to anyone.
    """
    import sys

    if "qomhost.chardev.socket" not in sys.modules:
        # No socket chardev exists; a stdio-only start-up stays without the
        # socket module (tests/unit/test_startup_imports.py).
        return None
    from qomhost.chardev.socket import ChardevSocket

    if not isinstance(chardev, ChardevSocket) or not chardev.server:
        return None
    address = chardev.address
    if address.path is not None or chardev.tls_creds is not None:
        return None
    import ipaddress

    try:
        if ipaddress.ip_address((address.host or "").split("%")[0]).is_loopback:
            return None
    except ValueError:
        pass  # not an address literal: assume it is reachable
    return address.describe()


def _watch_signals(on_signal: Callable[[int, int], None]) -> None:
    """Deliver SIGINT/SIGTERM/SIGHUP with the sender's pid, as QEMU reports it."""
    sigs = {_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP}
    _signal.pthread_sigmask(_signal.SIG_BLOCK, sigs)

    def wait() -> None:
        while True:
            info = _signal.sigwaitinfo(sigs)
            on_signal(info.si_signo, info.si_pid)

    # A bare thread: it blocks in sigwaitinfo() and dies with the process.
    _thread.start_new_thread(wait, ())


def _pid_name(pid: int) -> str:
    """The sender's name as QEMU prints it: its ``argv[0]``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    except OSError:
        return "unknown"


def _write_pidfile(path: str) -> int:
    """Create, lock and fill the pidfile as QEMU does; returns the fd, kept open.

    The file is created mode 0600 and locked, so a second instance given
    the same pidfile fails instead of taking it over.
    """
    import fcntl

    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise QemuError(f"Could not create '{path}': {os.strerror(exc.errno or 0)}") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise QemuError(f"Cannot lock pid file: {os.strerror(exc.errno or 0)}") from None
        # Make sure the file locked is still the one at ``path``.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _daemonize() -> int:
    """Fork; the parent waits for the child's verdict. Returns the pipe's write end.

    As QEMU's ``os_daemonize``: a new session, a second fork, umask 027,
    and the terminal job-control signals ignored.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_fd)
        status = os.read(read_fd, 1)
        os._exit(0 if status == b"\0" else 1)
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.umask(0o027)
    for signo in (_signal.SIGTSTP, _signal.SIGTTOU, _signal.SIGTTIN):
        _signal.signal(signo, _signal.SIG_IGN)
    return write_fd


def _daemon_ready(write_fd: int) -> None:
    """Start-up succeeded: leave the working directory, tell the parent, drop stdio."""
    os.chdir("/")
    os.write(write_fd, b"\0")
    os.close(write_fd)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _fatal() -> NoReturn:
    raise _Fatal


def run(argv: list[str], prog: str) -> int:
    """Run qomhost with ``argv`` (without the program name); returns the exit status."""
    from qomhost.host import Host

    rep = _Reporter(prog)
    pidfile: str | None = None
    try:
        plan = _parse(argv, rep)
        ready_fd = _daemonize() if plan.daemonize else None
        if plan.pidfile is not None:
            try:
                _write_pidfile(plan.pidfile)
            except QemuError as err:
                rep.error(f"cannot create PID file: {err.desc}")
                raise _Exit(1) from None
            # Removed at exit, whatever the exit, as QEMU's exit notifier does;
            # by its real path, since a daemon changes directory.
            pidfile = os.path.realpath(plan.pidfile)
        host = Host(plan.name)
        host.report = lambda line: _stderr(f"{prog}: {line}\n")
        host.fatal = _fatal
        machine_opts = _setup_machine(host, plan, rep)
        _create_objects(host, plan, rep, late=False)
        for chr_plan in plan.chardevs:
            _open_chardev(host, chr_plan, plan, rep)
        rep.location = None
        _apply_machine_options(host, machine_opts, rep)
        _start_accelerator(host, plan, machine_opts, rep)
        # As QEMU does: late objects first, then the monitors, so that a
        # vhost-user handshake that fails ends the program before a monitor
        # has greeted anybody.
        _create_objects(host, plan, rep, late=True)
        _start_monitors(host, plan, rep)
        assert host.machine is not None
        from qomhost.objects.machine import Machine

        assert isinstance(host.machine, Machine)
        host.machine.realize()

        def on_signal(signo: int, pid: int) -> None:
            who = f" from pid {pid} ({_pid_name(pid)})" if pid else ""
            try:
                _stderr(f"{prog}: terminating on signal {signo}{who}\n")
            except OSError:  # nobody reads standard error any more
                pass
            host.context.schedule(lambda: host.request_shutdown("host-signal"))

        _watch_signals(on_signal)
        if ready_fd is not None:
            _daemon_ready(ready_fd)
        host.run()
        return 0
    except _Exit as done:
        sys.stdout.flush()
        return done.status
    except _Fatal:
        sys.stdout.flush()
        return 1
    finally:
        if pidfile is not None:
            try:
                os.unlink(pidfile)
            except OSError:
                pass


def main() -> NoReturn:
    """Console entry point."""
    prog = os.path.basename(sys.argv[0]) or "qomhost"
    status = run(sys.argv[1:], prog)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
