"""Run one command line against QEMU 7.2 and qomhost and compare what they print.

A :class:`Case` is a command line (everything after the program name), the lines
to send on stdin, and optional files to create first.  :func:`run_pair` runs it
against both programs at the same time and :func:`compare` returns the
differences, after the masking described in ``README.md``:

* stderr: the program names ``qemu-system-x86_64`` and ``qomhost`` become ``PROG``;
* stdout: event ``timestamp`` values, the QMP greeting's ``version`` numbers and
  ``package`` string, ``thread-id`` integers, HMP ``thread_id=N`` values and the
  version in the HMP banner are replaced textually, so the byte-level comparison
  still covers key order, spacing and line endings;
* anything else only through a case's ``normalize`` hook.

Nothing here knows what QEMU answers: every expectation is QEMU itself.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

QEMU_NAME = "qemu-system-x86_64"
QOMHOST_NAME = "qomhost"

#: Seconds each program may run for one case.
TIMEOUT = float(os.environ.get("QOMHOST_DIFF_TIMEOUT", "10"))

#: Placeholder for the temporary directory in args, script lines and file contents.
TMP = "{tmp}"

QUIT = '{"execute":"quit"}'

#: One line of stdin: a JSON text or HMP command line (str), an object that is
#: serialised with ``json.dumps`` (dict), or raw bytes sent verbatim.  A newline
#: is added after each item.
ScriptItem = str | bytes | Mapping[str, object]


@dataclass(frozen=True)
class Outcome:
    """What one program did: its exit status and everything it printed."""

    status: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    #: Set when the program could not be started at all.
    error: str | None = None
    elapsed: float = 0.0


#: A normalize hook gets each program's outcome (stderr already has ``PROG``) and
#: returns the outcome to compare.  It must treat both programs the same way.
Normalizer = Callable[[Outcome], Outcome]


@dataclass(frozen=True)
class Case:
    """One differential test: the same command line and stdin for both programs."""

    name: str
    args: tuple[str, ...]
    script: tuple[ScriptItem, ...] = ()
    #: Append ``{"execute":"quit"}`` to the script.  ``None`` means: yes when a QMP
    #: monitor is on stdio (``-qmp stdio``, ``-qmp-pretty stdio`` or ``-mon`` on a
    #: stdio chardev).
    quit: bool | None = None
    #: Files created in the temporary directory before the run; ``{tmp}/name`` in
    #: args and script lines refers to them.
    files: Mapping[str, bytes] = field(default_factory=dict)
    #: Deliberate, documented differences are removed here; see README.md.
    normalize: Normalizer | None = None
    #: Why the case exists or what is special about it (shown by record.py).
    note: str = ""

    def wants_quit(self) -> bool:
        return uses_qmp_on_stdio(self.args) if self.quit is None else self.quit

    def stdin_bytes(self, tmpdir: str) -> bytes:
        items: list[ScriptItem] = list(self.script)
        if self.wants_quit():
            items.append(QUIT)
        out = bytearray()
        for item in items:
            if isinstance(item, bytes):
                out += item.replace(TMP.encode(), tmpdir.encode())
            elif isinstance(item, str):
                out += item.replace(TMP, tmpdir).encode()
            else:
                out += json.dumps(dict(item)).replace(TMP, tmpdir).encode()
            out += b"\n"
        return bytes(out)

    def argv(self, tmpdir: str) -> list[str]:
        return [a.replace(TMP, tmpdir) for a in self.args]


def uses_qmp_on_stdio(args: Sequence[str]) -> bool:
    """True when the command line puts a QMP monitor on stdin/stdout."""
    stdio_chardevs: set[str] = set()
    for opt, val in itertools.pairwise(args):
        if opt in ("-qmp", "-qmp-pretty") and val == "stdio":
            return True
        if opt == "-chardev" and val.startswith("stdio,"):
            for part in val.split(",")[1:]:
                if part.startswith("id="):
                    stdio_chardevs.add(part[3:])
    for opt, val in itertools.pairwise(args):
        if opt == "-mon":
            parts = dict(p.partition("=")[::2] for p in val.split(","))
            if parts.get("mode") == "control" and parts.get("chardev") in stdio_chardevs:
                return True
    return False


def split_lines(data: bytes) -> list[bytes]:
    """Split after each ``\\n`` (kept out of the line); a final partial line is kept."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


# --------------------------------------------------------------------------- programs


@dataclass(frozen=True)
class Program:
    """How to start one side: ``argv0`` is what the program sees as its name."""

    argv0: str
    executable: str | None
    #: Why ``executable`` is None.
    missing: str = ""


def find_qemu() -> Program:
    override = os.environ.get("QEMU_BIN")
    path = override or shutil.which(QEMU_NAME)
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return Program(QEMU_NAME, path)
    where = f"QEMU_BIN={override} is not an executable" if override else "not found on PATH"
    return Program(QEMU_NAME, None, f"{QEMU_NAME} is not installed ({where})")


def find_qomhost() -> Program:
    """``$QOMHOST_BIN``, else ``qomhost`` next to the running Python, else on PATH."""
    candidates: list[str] = []
    override = os.environ.get("QOMHOST_BIN")
    if override:
        candidates.append(override)
    else:
        candidates.append(str(Path(sys.executable).parent / QOMHOST_NAME))
        on_path = shutil.which(QOMHOST_NAME)
        if on_path:
            candidates.append(on_path)
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return Program(QOMHOST_NAME, path)
    return Program(QOMHOST_NAME, None, f"qomhost not found (looked at {', '.join(candidates)})")


#: the environment when the harness was imported: copying os.environ from
#: a worker thread races with pytest, which sets and removes
#: PYTEST_CURRENT_TEST around every test (a KeyError mid-copy)
_ENVIRON = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


def child_env() -> dict[str, str]:
    env = dict(_ENVIRON)
    env["LC_ALL"] = "C.UTF-8"
    return env


def run_program(program: Program, case: Case, tmpdir: str, timeout: float = TIMEOUT) -> Outcome:
    """Run one program on ``case`` with its files in ``tmpdir``.

    stdin is written at once and stays open until the program exits: QEMU ignores
    EOF on a QMP monitor, but an early EOF would discard queued commands.
    """
    if program.executable is None:
        return Outcome(None, b"", b"", error=program.missing)
    data = case.stdin_bytes(tmpdir)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            [program.argv0, *case.argv(tmpdir)],
            executable=program.executable,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmpdir,
            env=child_env(),
        )
    except OSError as exc:
        return Outcome(None, b"", b"", error=f"cannot start {program.executable}: {exc}")
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    chunks: dict[str, bytes] = {}

    def drain(name: str, stream: IO[bytes]) -> None:
        chunks[name] = stream.read()

    def feed() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except OSError:  # the program exited (or closed stdin) before reading everything
            pass

    threads = [
        threading.Thread(target=drain, args=("out", proc.stdout), daemon=True),
        threading.Thread(target=drain, args=("err", proc.stderr), daemon=True),
        threading.Thread(target=feed, daemon=True),
    ]
    for t in threads:
        t.start()
    timed_out = False
    try:
        status: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        status = proc.wait()
    elapsed = time.monotonic() - start
    try:
        proc.stdin.close()
    except OSError:
        pass
    for t in threads:
        t.join(timeout=5)
    proc.stdout.close()
    proc.stderr.close()
    return Outcome(
        status=None if timed_out else status,
        stdout=chunks.get("out", b""),
        stderr=chunks.get("err", b""),
        timed_out=timed_out,
        elapsed=elapsed,
    )


def make_tmpdir(case: Case) -> tempfile.TemporaryDirectory[str]:
    tmp = tempfile.TemporaryDirectory(prefix="qomdiff-")
    for name, content in case.files.items():
        Path(tmp.name, name).write_bytes(content.replace(TMP.encode(), tmp.name.encode()))
    return tmp


@dataclass(frozen=True)
class Pair:
    qemu: Outcome
    qomhost: Outcome


def _untmp(outcome: Outcome, tmpdir: str) -> Outcome:
    """Write the temporary directory as ``{tmp}`` again, so runs can be compared."""
    path = tmpdir.encode()
    return replace(
        outcome,
        stdout=outcome.stdout.replace(path, TMP.encode()),
        stderr=outcome.stderr.replace(path, TMP.encode()),
    )


def run_one(program: Program, case: Case) -> Outcome:
    """Run one program on ``case`` in a fresh temporary directory."""
    with make_tmpdir(case) as tmpdir:
        return _untmp(run_program(program, case, tmpdir), tmpdir)


def run_pair(case: Case, qemu: Program, qomhost: Program) -> Pair:
    """Run both programs concurrently, in the same temporary directory."""
    with make_tmpdir(case) as tmpdir:
        result: dict[str, Outcome] = {}
        failure: list[BaseException] = []

        def side() -> None:
            try:
                result["qomhost"] = run_program(qomhost, case, tmpdir)
            except BaseException as exc:  # re-raised below, in the test's thread
                failure.append(exc)

        other = threading.Thread(target=side)
        other.start()
        result["qemu"] = run_program(qemu, case, tmpdir)
        other.join()
        if failure:
            raise failure[0]
        return Pair(_untmp(result["qemu"], tmpdir), _untmp(result["qomhost"], tmpdir))


class Runner:
    """Runs cases in the background so that the suite uses every core.

    ``prefetch`` queues cases; ``get`` waits for one (running it now if it was not
    queued).
    """

    def __init__(self, qemu: Program, qomhost: Program, workers: int | None = None) -> None:
        self.qemu = qemu
        self.qomhost = qomhost
        self._pool = ThreadPoolExecutor(max_workers=workers or max(2, os.cpu_count() or 2))
        # Keyed by identity: tables written elsewhere may reuse a case name.
        self._futures: dict[int, tuple[Case, Future[Pair]]] = {}
        self._lock = threading.Lock()

    def _submit(self, case: Case) -> Future[Pair]:
        with self._lock:
            entry = self._futures.get(id(case))
            if entry is None:
                entry = (case, self._pool.submit(run_pair, case, self.qemu, self.qomhost))
                self._futures[id(case)] = entry
            return entry[1]

    def prefetch(self, cases: Iterable[Case]) -> None:
        for case in cases:
            self._submit(case)

    def get(self, case: Case) -> Pair:
        return self._submit(case).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- masking

_PROG_RE = re.compile(rb"\b(?:qemu-system-x86_64|qomhost)\b")

# Each pattern allows the whitespace of both the compact and the pretty layout.
#: ``"timestamp": {"seconds": N, "microseconds": N}`` in events.
_TIMESTAMP_RE = re.compile(
    rb'("timestamp":\s*\{\s*"seconds":\s*)(-?\d+)(,\s*"microseconds":\s*)(-?\d+)'
)
#: The greeting's ``"version": {"qemu": {"micro": N, "minor": N, "major": N}, "package": S}``.
_GREETING_RE = re.compile(
    rb'(\{\s*"QMP":\s*\{\s*"version":\s*\{\s*"qemu":\s*\{\s*"micro":\s*)(-?\d+)'
    rb'(,\s*"minor":\s*)(-?\d+)'
    rb'(,\s*"major":\s*)(-?\d+)'
    rb'(\s*\},\s*"package":\s*)("(?:[^"\\]|\\.)*")'
)
_THREAD_ID_RE = re.compile(rb'("thread-id":\s*)(-?\d+)(?![\d.eE])')
#: ``thread_id=N`` in HMP ``info iothreads`` text (on a monitor or inside a
#: ``human-monitor-command`` reply string).
_HMP_THREAD_ID_RE = re.compile(rb"(\bthread_id=)(-?\d+)")
_HMP_BANNER_RE = re.compile(rb"^QEMU \S+ monitor - type 'help' for more information", re.M)


def mask_stdout(data: bytes) -> bytes:
    """Replace the values that legitimately differ between runs or programs."""
    data = _TIMESTAMP_RE.sub(rb'\1"<seconds>"\3"<microseconds>"', data)
    data = _GREETING_RE.sub(rb'\1"<micro>"\3"<minor>"\5"<major>"\7"<package>"', data)
    data = _THREAD_ID_RE.sub(rb'\1"<int>"', data)
    data = _HMP_THREAD_ID_RE.sub(rb"\1<int>", data)
    return _HMP_BANNER_RE.sub(rb"QEMU <version> monitor - type 'help' for more information", data)


def mask_stderr(data: bytes) -> bytes:
    return _PROG_RE.sub(b"PROG", data)


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Prepared:
    """An outcome after masking and normalisation: what is compared."""

    status: int | None
    timed_out: bool
    error: str | None
    stderr: bytes
    stdout: list[bytes]


def prepare(outcome: Outcome, case: Case) -> Prepared:
    out = replace(outcome, stderr=mask_stderr(outcome.stderr))
    if case.normalize is not None and out.error is None:
        out = case.normalize(out)
    return Prepared(
        status=out.status,
        timed_out=out.timed_out,
        error=out.error,
        stderr=out.stderr,
        stdout=split_lines(mask_stdout(out.stdout)),
    )


def _parse(line: bytes) -> object:
    try:
        return json.loads(line)
    except ValueError:
        return _NOT_JSON


_NOT_JSON = object()


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_NAMES = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def visible(line: bytes) -> str:
    """The line as text, with control characters and invalid UTF-8 escaped."""
    text = line.decode("utf-8", "backslashreplace")
    return _CONTROL_RE.sub(lambda m: _CONTROL_NAMES.get(m[0], f"\\x{ord(m[0]):02x}"), text)


def _show(lines: Sequence[bytes]) -> list[str]:
    return [visible(line) for line in lines]


def _diff(label: str, expected: Sequence[bytes], actual: Sequence[bytes]) -> str:
    body = difflib.unified_diff(
        _show(expected), _show(actual), f"{label} (QEMU)", f"{label} (qomhost)", lineterm="", n=2
    )
    return "\n".join(body)


def compare(qemu: Outcome, qomhost: Outcome, case: Case) -> list[str]:
    """Differences between the two outcomes, each a readable paragraph; [] when equal."""
    if qemu.error is not None:
        return [f"QEMU could not be run: {qemu.error}"]
    if qomhost.error is not None:
        return [f"qomhost could not be run: {qomhost.error}"]
    q = prepare(qemu, case)
    h = prepare(qomhost, case)
    problems: list[str] = []
    if q.timed_out:
        problems.append(f"QEMU did not exit within {TIMEOUT:g}s: the case itself is wrong")
    if h.timed_out:
        problems.append(f"qomhost did not exit within {TIMEOUT:g}s (QEMU exited {q.status})")
    elif q.status != h.status:
        problems.append(f"exit status: QEMU {q.status}, qomhost {h.status}")
    if q.stderr != h.stderr:
        problems.append(
            "stderr differs:\n" + _diff("stderr", split_lines(q.stderr), split_lines(h.stderr))
        )
    if q.stdout != h.stdout:
        notes: list[str] = []
        for i, (a, b) in enumerate(zip(q.stdout, h.stdout, strict=False)):
            if a == b:
                continue
            pa, pb = _parse(a), _parse(b)
            if pa is not _NOT_JSON and pa == pb:
                notes.append(
                    f"stdout line {i + 1} is the same JSON value but a different text "
                    "(key order, spacing, escaping or line ending)"
                )
        if len(q.stdout) != len(h.stdout):
            notes.append(
                f"stdout has {len(q.stdout)} lines from QEMU, {len(h.stdout)} from qomhost"
            )
        problems.append("stdout differs:\n" + _diff("stdout", q.stdout, h.stdout))
        problems.extend(notes)
    return problems


def describe(case: Case, pair: Pair, tmp_hint: str = "{tmp}") -> str:
    """A header for failure messages: the command line and the script."""
    lines = [f"case {case.name}: {QEMU_NAME} {' '.join(_quote(a) for a in case.args)}"]
    if case.note:
        lines.append(f"  note: {case.note}")
    stdin = case.stdin_bytes(tmp_hint)
    for line in split_lines(stdin):
        lines.append(f"  stdin> {visible(line)}")
    lines.append(f"  QEMU {pair.qemu.elapsed:.2f}s, qomhost {pair.qomhost.elapsed:.2f}s")
    return "\n".join(lines)


def _quote(arg: str) -> str:
    if re.fullmatch(r"[\w,=./:{}@%+-]+", arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


# --------------------------------------------------------------------------- normalisers
# Deliberate differences.  Each hook is applied to both programs' outcomes.


def _map_lines(outcome: Outcome, fn: Callable[[bytes], bytes | None]) -> Outcome:
    kept: list[bytes] = []
    for line in outcome.stdout.split(b"\n"):
        new = fn(line)
        if new is not None:
            kept.append(new)
    return replace(outcome, stdout=b"\n".join(kept))


def _reserialise(line: bytes, value: object) -> bytes:
    """QEMU's compact JSON spacing; keeps key order and a trailing ``\\r``."""
    end = b"\r" if line.endswith(b"\r") else b""
    return json.dumps(value).encode() + end


#: Appended by normalisers to a reply they rewrote although its text was not in
#: QEMU's layout, so that the comparison still fails on it.
NOT_QEMU_LAYOUT = b"  <- this reply was not written in QEMU's JSON layout"


def _rewrite(line: bytes, value: dict[str, object], original: object) -> bytes:
    """``value`` in QEMU's layout; marked when ``original`` was not written so."""
    new = _reserialise(line, value)
    if _reserialise(line, original) != line:
        new += NOT_QEMU_LAYOUT
    return new


def restrict_named_list(names: Iterable[str]) -> Normalizer:
    """Keep only the entries ``{"name": N, ...}`` with N in ``names`` in every
    ``{"return": [...]}`` reply (``query-commands``, ``qom-list-types``).

    qomhost implements fewer types and commands than QEMU by design; the order
    and the text of the entries that remain are still compared.
    """
    allowed = frozenset(names)

    def keep(line: bytes) -> bytes:
        value = _parse(line)
        if not isinstance(value, dict):
            return line
        items = value.get("return")
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and "name" in i for i in items
        ):
            return line
        original = json.loads(line)
        value["return"] = [i for i in items if i["name"] in allowed]
        return _rewrite(line, value, original)

    def hook(outcome: Outcome) -> Outcome:
        return _map_lines(outcome, keep)

    return hook


def restrict_type_list(names: Iterable[str]) -> Normalizer:
    """Keep only the ``  <type>`` lines for ``names`` in ``-object help`` output."""
    allowed = frozenset(n.encode() for n in names)

    def keep(line: bytes) -> bytes | None:
        if line.startswith(b"  ") and line.strip() not in allowed:
            return None
        return line

    def hook(outcome: Outcome) -> Outcome:
        return _map_lines(outcome, keep)

    return hook


_QUERY_VERSION_RE = re.compile(
    rb'(\{\s*"return":\s*\{\s*"qemu":\s*\{\s*"micro":\s*)(-?\d+)'
    rb'(,\s*"minor":\s*)(-?\d+)'
    rb'(,\s*"major":\s*)(-?\d+)'
    rb'(\s*\},\s*"package":\s*)("(?:[^"\\]|\\.)*")'
)


def mask_query_version(outcome: Outcome) -> Outcome:
    """``query-version`` names QEMU's version and package; qomhost has its own.
    Masked like the greeting, textually."""
    masked = _QUERY_VERSION_RE.sub(
        rb'\1"<micro>"\3"<minor>"\5"<major>"\7"<package>"', outcome.stdout
    )
    return replace(outcome, stdout=masked)


_VERSION_LINE_RE = re.compile(rb"^QEMU emulator version \d+\.\d+\.\d+\b.*$")


def first_line_shape(outcome: Outcome) -> Outcome:
    """For ``-version``: only ``QEMU emulator version X.Y.Z ...`` on the first line."""
    first = outcome.stdout.split(b"\n", 1)[0]
    shape = b"QEMU emulator version <version>" if _VERSION_LINE_RE.match(first) else first
    return replace(outcome, stdout=shape + b"\n")


def drop_stdout(outcome: Outcome) -> Outcome:
    """For ``-h``: the help text lists options qomhost does not have."""
    return replace(outcome, stdout=b"")
