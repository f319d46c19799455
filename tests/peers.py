"""Real vhost-user peers for the frontend tests: DPDK's vhost_crypto and
qemu-storage-daemon's vhost-user-blk export.

Shared by ``tests/interop`` (its ``conftest.py`` re-exports the fixtures at the
bottom of this module); the context managers work without pytest too, e.g. from
a benchmark.

* :func:`build_dpdk_vhost_crypto` builds DPDK's ``vhost_crypto`` example from
  the source Debian's ``dpdk-doc`` ships, against ``libdpdk-dev``, into a cache
  directory keyed by a hash of the sources and the DPDK version (~1 s, once).
* :func:`dpdk_vhost_crypto` runs it as a vhost-user crypto backend listening on
  a unix socket (one data queue, ``crypto_aesni_mb`` software crypto, no
  hugepages, no PCI), and always kills it and removes its runtime files.
* :func:`qemu_storage_daemon_blk` runs ``qemu-storage-daemon`` exporting a raw
  file as a vhost-user-blk device on a unix socket, with a QMP monitor.

A peer that cannot be built or started raises :class:`PeerUnavailable`; the
fixtures turn that into a skip with the reason, or a failure under ``CI=true``
(:func:`hostproc.missing`).

DPDK 22.11's vhost_crypto has quirks a frontend must meet (see
``reference/guest-e2e.md`` section 4): it answers CREATE/CLOSE_CRYPTO_SESSION
only once the device is *ready* (ring addresses, kick, ``SET_VRING_ENABLE 1``
and, since it negotiates ``PROTOCOL_F_STATUS``, ``SET_STATUS`` with
``DRIVER_OK``); it reads the session payload in the pre-7.1 QEMU layout (with a
leading ``op_code``: ``virtio_crypto.LAYOUT_LEGACY``); it accepts only indirect
descriptor heads; it refuses (and retries forever) requests over 2048 bytes of
data; and the used length it reports is not the bytes written (17 for a first
16-byte request, 0 for later ones). ``tests/interop/test_vhost_user_peers.py``
(``CryptoDriver``) shows the whole working sequence.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from hostproc import TIMEOUT, child_env, missing, short_tmpdir, unix_listening, wait_until

REPO = Path(__file__).resolve().parent.parent

#: where Debian's dpdk-doc puts the example's source
DPDK_VHOST_CRYPTO_SOURCE = Path("/usr/share/dpdk/examples/vhost_crypto")

#: overrides the cache directory (default: ``.cache/`` at the top of the repository)
CACHE_ENV = "QOMHOST_TEST_CACHE"

#: the name of the built program inside the build directory
DPDK_VHOST_CRYPTO_PROGRAM = "build/vhost-crypto-shared"

#: a DPDK backend logging in a loop (a refused request is retried forever) is cut here
LOG_CAP = 10 * 1024 * 1024

QSD_NAME = "qemu-storage-daemon"


class PeerUnavailable(Exception):
    """A peer cannot be built or started here; the message says why."""


def default_cache_dir() -> Path:
    """``$QOMHOST_TEST_CACHE``, else ``<repo>/.cache`` (git-ignored)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else REPO / ".cache"


# --------------------------------------------------------------------------- DPDK build


def _pkg_config(*args: str) -> str:
    try:
        out = subprocess.run(
            ["pkg-config", *args], capture_output=True, text=True, check=True, timeout=TIMEOUT
        )
    except FileNotFoundError:
        raise PeerUnavailable("pkg-config is not installed (Debian package pkg-config)") from None
    except subprocess.CalledProcessError as exc:
        raise PeerUnavailable(
            f"pkg-config {' '.join(args)} failed: {exc.stderr.strip()} (is libdpdk-dev installed?)"
        ) from None
    return out.stdout.strip()


def _source_digest(source: Path, dpdk_version: str) -> str:
    digest = hashlib.sha256(f"dpdk {dpdk_version}\n".encode())
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = path.relative_to(source).as_posix()
        digest.update(f"{rel}\n{path.stat().st_size}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_dpdk_vhost_crypto(
    cache_dir: Path | None = None, source: Path = DPDK_VHOST_CRYPTO_SOURCE
) -> Path:
    """Build DPDK's vhost_crypto example (``make shared``) and return the program's path.

    The build lives in ``cache_dir/dpdk-vhost-crypto-<hash>``, where the hash
    covers the example's sources and libdpdk's version, so a second call (or
    another test process, serialised by a lock file) reuses it.

    :raises PeerUnavailable: the source, pkg-config, libdpdk or a compiler is
        missing, or the build fails (the message carries make's output).
    """
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    if not (source / "main.c").is_file():
        raise PeerUnavailable(
            f"DPDK's vhost_crypto example source is missing ({source}/main.c; "
            "Debian package dpdk-doc)"
        )
    for tool in ("make", "cc"):
        if shutil.which(tool) is None:
            raise PeerUnavailable(f"{tool} is not installed (Debian package build-essential)")
    version = _pkg_config("--modversion", "libdpdk")
    target = cache_dir / f"dpdk-vhost-crypto-{_source_digest(source, version)}"
    program = target / DPDK_VHOST_CRYPTO_PROGRAM
    if os.access(program, os.X_OK):
        return program
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".dpdk-vhost-crypto.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.access(program, os.X_OK):
            return program
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
        try:
            work = staging / "vhost_crypto"
            shutil.copytree(source, work)
            result = subprocess.run(
                ["make", "-s", "-C", str(work), "shared"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=300,
                env=child_env(),
            )
            if result.returncode != 0 or not os.access(work / DPDK_VHOST_CRYPTO_PROGRAM, os.X_OK):
                raise PeerUnavailable(
                    f"building DPDK vhost_crypto (libdpdk {version}) from {source} failed "
                    f"with exit status {result.returncode}:\n{result.stdout.strip()}"
                )
            shutil.rmtree(target, ignore_errors=True)
            work.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return program


# --------------------------------------------------------------------------- processes


class _CappedLog:
    """Drains a child's output into a file, keeping at most ``cap`` bytes.

    A pipe rather than a plain file, so that a backend stuck logging the same
    error at 65,000 lines a second cannot fill the disk; the rest is read and
    dropped so the child never blocks on a full pipe.
    """

    def __init__(self, stream: IO[bytes], path: Path, cap: int = LOG_CAP) -> None:
        self.path = path
        self.cap = cap
        self.dropped = 0
        self._stream = stream
        self._lock = threading.Lock()
        self._file = open(path, "wb")  # noqa: SIM115 -- closed by the drain thread
        self._thread = threading.Thread(target=self._drain, name=f"log {path.name}", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        written = 0
        try:
            while chunk := self._stream.read1(65536):
                with self._lock:
                    room = self.cap - written
                    if room > 0:
                        self._file.write(chunk[:room])
                        self._file.flush()
                        written += min(room, len(chunk))
                    self.dropped += max(0, len(chunk) - max(room, 0))
        finally:
            with self._lock:
                self._file.close()
            self._stream.close()

    def text(self) -> str:
        with self._lock:
            data = self.path.read_bytes()
        return data.decode("utf-8", "replace")

    def join(self, timeout: float = TIMEOUT) -> None:
        self._thread.join(timeout)


def _terminate(popen: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(grace)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(TIMEOUT)


def _print_log(title: str, text: str, lines: int = 60) -> None:
    # pytest shows this only for a failing test ("Captured stdout teardown")
    tail = text.splitlines()[-lines:]
    print(f"----- {title} (last {len(tail)} lines) -----")
    print("\n".join(tail))


@dataclass
class PeerProcess:
    """A running peer: its process, its socket and its output so far."""

    name: str
    socket: Path
    popen: subprocess.Popen[bytes]
    _log: _CappedLog = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def log_path(self) -> Path:
        return self._log.path

    def log(self) -> str:
        """Everything the peer wrote (stdout and stderr, interleaved) so far."""
        return self._log.text()

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait_log(self, text: str, timeout: float = TIMEOUT) -> str:
        """Wait until ``text`` appears in the log; returns the whole log."""
        wait_until(
            lambda: text in self.log() or not self.running(),
            f"{text!r} in {self.name}'s log",
            timeout,
        )
        log = self.log()
        assert text in log, (
            f"{self.name} exited (status {self.popen.returncode}) before {text!r}:\n{log}"
        )
        return log

    def assert_running(self) -> None:
        assert self.running(), (
            f"{self.name} exited with status {self.popen.returncode}:\n{self.log()}"
        )


def _start(
    name: str, argv: list[str], socket_path: Path, log_path: Path, timeout: float
) -> PeerProcess:
    popen = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=child_env(),
        start_new_session=True,
    )
    assert popen.stdout is not None
    peer = PeerProcess(name, socket_path, popen, _CappedLog(popen.stdout, log_path))
    try:
        wait_until(
            lambda: unix_listening(socket_path) or not peer.running(),
            f"{name} to listen on {socket_path}",
            timeout,
        )
        if not peer.running():
            peer._log.join()
            raise PeerUnavailable(
                f"{name} exited with status {popen.returncode} before listening on "
                f"{socket_path}:\n{peer.log()}"
            )
    except BaseException:
        _terminate(popen)
        raise
    return peer


def _stop(peer: PeerProcess) -> None:
    _terminate(peer.popen)
    peer._log.join()
    with contextlib.suppress(FileNotFoundError):
        peer.socket.unlink()


# --------------------------------------------------------------------------- DPDK vhost_crypto


def dpdk_runtime_dir(prefix: str) -> Path:
    """Where DPDK keeps the runtime files (config, mp socket) of ``--file-prefix=prefix``."""
    if os.geteuid() == 0:
        base = Path("/var/run")
    else:
        base = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")
    return base / "dpdk" / prefix


def dpdk_cpu() -> int:
    """The CPU both DPDK lcores are pinned to: the first this process may use.

    The worker lcore busy-polls its CPU; with both lcores on one CPU, the
    others (the second core of a two-core machine) stay free for the test.
    """
    return min(os.sched_getaffinity(0))


@contextlib.contextmanager
def dpdk_vhost_crypto(
    program: Path,
    socket_path: Path,
    *,
    cpu: int | None = None,
    log_path: Path | None = None,
    extra_eal: tuple[str, ...] = (),
    timeout: float = TIMEOUT,
) -> Iterator[PeerProcess]:
    """Run DPDK's vhost_crypto (from :func:`build_dpdk_vhost_crypto`) on ``socket_path``.

    It is a vhost-user *server* for one device with one data queue, doing the
    crypto with the ``crypto_aesni_mb`` software driver::

        vhost-crypto --lcores 0@CPU,1@CPU --no-huge -m 512 --no-pci
            --file-prefix=UNIQUE --vdev crypto_aesni_mb0
            -- --socket-file 1,SOCKET --config "(1,0,0)"

    Yields once the socket listens. The log (default: ``socket_path`` with
    ``.log``) names each vhost-user message as it is read
    (``read message VHOST_USER_...``) and each session (``Session N
    created``). On exit the process is terminated (SIGKILL after 3 s), its
    socket and ``/var/run/dpdk/UNIQUE`` are removed, and the log's tail is
    printed (pytest shows it for a failed test).

    :raises PeerUnavailable: it exited before listening.
    """
    cpu = dpdk_cpu() if cpu is None else cpu
    prefix = f"qomhost-{uuid.uuid4().hex[:12]}"
    log_path = socket_path.with_name(socket_path.name + ".log") if log_path is None else log_path
    argv = [
        str(program),
        "--lcores",
        f"0@{cpu},1@{cpu}",
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        f"--file-prefix={prefix}",
        "--vdev",
        "crypto_aesni_mb0",
        *extra_eal,
        "--",
        "--socket-file",
        f"1,{socket_path}",
        "--config",
        "(1,0,0)",
    ]
    try:
        peer = _start("dpdk-vhost-crypto", argv, socket_path, log_path, timeout)
        try:
            yield peer
        finally:
            _stop(peer)
            _print_log(f"DPDK vhost_crypto log {log_path}", peer.log())
    finally:
        shutil.rmtree(dpdk_runtime_dir(prefix), ignore_errors=True)


# --------------------------------------------------------------------------- qemu-storage-daemon


@dataclass
class StorageDaemon(PeerProcess):
    """A running ``qemu-storage-daemon``: ``socket`` is the vhost-user-blk export."""

    image: Path = Path()
    qmp: Path = Path()
    num_queues: int = 1
    writable: bool = True

    @property
    def size(self) -> int:
        """The image's size in bytes (capacity is ``size // 512`` sectors)."""
        return self.image.stat().st_size


def qsd_program() -> str:
    path = shutil.which(QSD_NAME)
    if path is None:
        raise PeerUnavailable(f"{QSD_NAME} is not installed (Debian package qemu-system-common)")
    return path


@contextlib.contextmanager
def qemu_storage_daemon_blk(
    workdir: Path,
    *,
    size: int = 4 * 1024 * 1024,
    num_queues: int = 1,
    writable: bool = True,
    image: Path | None = None,
    export_opts: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> Iterator[StorageDaemon]:
    """Run ``qemu-storage-daemon`` exporting a raw file as vhost-user-blk.

    ``image`` is used as it is when given; otherwise ``workdir/disk.img`` is
    created sparse with ``size`` bytes. The export listens on
    ``workdir/blk.sock`` and QMP on ``workdir/qsd-qmp.sock``;
    ``export_opts`` adds ``--export`` options (``logical-block-size``, ...).
    The daemon is terminated on exit. A vhost-user-blk export serves one
    frontend at a time, and a new one after it disconnects.

    :raises PeerUnavailable: the program is missing or exited before listening.
    """
    program = qsd_program()
    if image is None:
        image = workdir / "disk.img"
        with open(image, "wb") as f:
            f.truncate(size)
    socket_path = workdir / "blk.sock"
    qmp_path = workdir / "qsd-qmp.sock"
    export = {
        "type": "vhost-user-blk",
        "id": "exp0",
        "node-name": "disk0",
        "addr.type": "unix",
        "addr.path": str(socket_path),
        "writable": "on" if writable else "off",
        "num-queues": str(num_queues),
        **(export_opts or {}),
    }
    argv = [
        program,
        "--blockdev",
        f"driver=file,node-name=file0,filename={image}",
        "--blockdev",
        "driver=raw,node-name=disk0,file=file0",
        "--export",
        ",".join(f"{key}={value}" for key, value in export.items()),
        "--chardev",
        f"socket,id=qmp0,path={qmp_path},server=on,wait=off",
        "--monitor",
        "chardev=qmp0",
    ]
    base = _start(QSD_NAME, argv, socket_path, workdir / "qsd.log", timeout)
    daemon = StorageDaemon(
        base.name, base.socket, base.popen, base._log, image, qmp_path, num_queues, writable
    )
    try:
        yield daemon
    finally:
        _stop(daemon)
        _print_log(f"{QSD_NAME} log", daemon.log())


# --------------------------------------------------------------------------- pytest fixtures


def _available(build: Callable[[], Path]) -> Path:
    try:
        return build()
    except PeerUnavailable as exc:
        missing(str(exc))


@pytest.fixture(scope="session")
def dpdk_vhost_crypto_program() -> Path:
    """The built DPDK vhost_crypto program; skips (fails if ``CI=true``) when it cannot be built."""
    return _available(build_dpdk_vhost_crypto)


StartDpdk = Callable[..., PeerProcess]
StartQsd = Callable[..., StorageDaemon]


@pytest.fixture
def start_dpdk_vhost_crypto(dpdk_vhost_crypto_program: Path) -> Iterator[StartDpdk]:
    """``start(socket_path=None, **kwargs) -> PeerProcess``: a DPDK vhost_crypto backend.

    ``kwargs`` go to :func:`dpdk_vhost_crypto`; without ``socket_path`` each
    call gets a fresh short directory. Every backend started is stopped at
    teardown.
    """
    with contextlib.ExitStack() as stack:

        def start(socket_path: Path | None = None, **kwargs: object) -> PeerProcess:
            if socket_path is None:
                socket_path = stack.enter_context(short_tmpdir()) / "crypto.sock"
            manager = dpdk_vhost_crypto(dpdk_vhost_crypto_program, socket_path, **kwargs)
            try:
                return stack.enter_context(manager)
            except PeerUnavailable as exc:
                missing(str(exc))

        yield start


@pytest.fixture
def dpdk_crypto(start_dpdk_vhost_crypto: StartDpdk) -> PeerProcess:
    """One running DPDK vhost_crypto backend; connect to ``dpdk_crypto.socket``."""
    return start_dpdk_vhost_crypto()


@pytest.fixture
def start_qsd_blk() -> Iterator[StartQsd]:
    """``start(**kwargs) -> StorageDaemon``: a qemu-storage-daemon vhost-user-blk export.

    ``kwargs`` go to :func:`qemu_storage_daemon_blk` (``size``, ``num_queues``,
    ``writable``, ``image``, ``export_opts``); without ``workdir`` each call
    gets a fresh short directory. Every daemon started is stopped at teardown.
    """
    with contextlib.ExitStack() as stack:

        def start(workdir: Path | None = None, **kwargs: object) -> StorageDaemon:
            if workdir is None:
                workdir = stack.enter_context(short_tmpdir())
            try:
                return stack.enter_context(qemu_storage_daemon_blk(workdir, **kwargs))
            except PeerUnavailable as exc:
                missing(str(exc))

        yield start


@pytest.fixture
def qsd_blk(start_qsd_blk: StartQsd) -> StorageDaemon:
    """One running vhost-user-blk export: a 4 MiB zeroed image, 2 queues, writable."""
    return start_qsd_blk(num_queues=2)


# --- qomhost's own backend program ------------------------------------------------------

#: the backend program installed next to the running Python
CRYPTO_BACKEND = str(Path(sys.executable).parent / "qomhost-vhost-user-crypto")


@contextlib.contextmanager
def crypto_backend(
    path: str, queues: int = 1, *args: str, stderr: IO[bytes] | int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``qomhost-vhost-user-crypto --socket-path PATH --queues N ARGS`` until the
    block ends (then killed); waits until it listens."""
    if not os.path.exists(CRYPTO_BACKEND):
        raise PeerUnavailable(f"{CRYPTO_BACKEND} is not installed (pip install -e .)")
    proc = subprocess.Popen(
        [CRYPTO_BACKEND, "--socket-path", path, "--queues", str(queues), *args], stderr=stderr
    )
    try:
        wait_until(
            lambda: os.path.exists(path) or proc.poll() is not None,
            f"{CRYPTO_BACKEND} listening on {path}",
        )
        assert proc.poll() is None, "the backend exited"
        yield proc
    finally:
        proc.kill()
        proc.wait()
