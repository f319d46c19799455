"""A real Linux guest under QEMU 7.2 (TCG) whose virtio-crypto driver is the client.

Shared by ``tests/interop/test_guest_virtio_crypto.py`` and
``benchmarks/guest_crypto.py``; nothing here needs pytest.

* :func:`guest_kernel` takes Debian's kernel image package (the one
  ``linux-image-amd64`` depends on) with ``apt-get download``, unpacks it
  with ``dpkg -x`` into a staging directory and keeps only ``vmlinuz`` and
  the modules the guest loads, in ``.cache/guest-kernel/<package>/``
  (git-ignored). Nothing is installed on the host.
* :func:`guest_busybox` does the same with ``busybox-static``.
* :func:`build_initrd` writes a gzip'd newc initramfs: busybox, ``/init``
  (``tests/guest/init.sh``), the modules, ``/afalg`` (``tests/guest/afalg.c``
  compiled with ``gcc -static``) and ``/plan``, the shell lines a scenario
  runs once the driver is up.
* :class:`Guest` runs ``qemu-system-x86_64`` with guest RAM in shared memory
  (``memory-backend-memfd,share=on``), the serial console on a pipe, and a
  QMP socket; it collects the ``QG ...`` lines the guest prints.
* :func:`reference` is the host's answer for an ``afalg enc`` line, from
  ``openssl enc -aes-256-cbc -nopad``.

A missing tool or package raises :class:`GuestUnavailable` with the reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
GUEST_SRC = Path(__file__).resolve().parent / "guest"

#: overrides the cache directory (default: ``.cache/`` at the top of the repository)
CACHE_ENV = "QOMHOST_TEST_CACHE"

#: the modules the guest loads, in dependency order (the package ships no
#: modules.dep: depmod runs only when it is installed). AF_ALG comes first:
#: the kernel checks a module's signature with the best ``pkcs1pad(rsa)`` it
#: has, and once virtio_crypto is loaded on QEMU's builtin backend (which
#: offers RSA but cannot do the raw RSA the check needs) that is the
#: device's, unless its self-test failed; with self-tests off every later
#: module is then rejected ("Key was rejected by service").
MODULES = (
    "crypto/af_alg",
    "crypto/algif_skcipher",
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci",
    "crypto/crypto_engine",
    "drivers/crypto/virtio/virtio_crypto",
)

#: the driver name that selects the virtio-crypto driver (``cbc(aes)`` would
#: fall back to the generic software cipher if the virtio one failed its self-test)
VIRTIO_AES_CBC = "virtio_crypto_aes_cbc"

KEY = bytes(range(32))
IV = bytes(range(16))

QEMU = "qemu-system-x86_64"


class GuestUnavailable(Exception):
    """The guest cannot be built or run here; the message says why."""


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else REPO / ".cache"


def _run(argv: Sequence[str], *, cwd: Path | None = None, timeout: float = 300) -> str:
    try:
        result = subprocess.run(
            list(argv),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
    except FileNotFoundError:
        raise GuestUnavailable(f"{argv[0]} is not installed") from None
    if result.returncode != 0:
        raise GuestUnavailable(
            f"{' '.join(argv)} failed with exit status {result.returncode}:\n"
            + result.stdout.strip()
        )
    return result.stdout


@contextlib.contextmanager
def _locked(cache_dir: Path, name: str) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------------------------- Debian packages


_apt_updated = False


def _apt_cache(args: Sequence[str], pattern: str) -> re.Match[str] | None:
    """``apt-cache ARGS`` searched for ``pattern``. As root, apt's package
    lists are fetched once (``apt-get update``) when the answer is missing:
    a fresh container may have none."""
    global _apt_updated
    while True:
        try:
            match = re.search(pattern, _run(["apt-cache", *args], timeout=60))
        except GuestUnavailable:
            match = None
        if match is not None or _apt_updated or os.geteuid() != 0:
            return match
        _apt_updated = True
        _run(["apt-get", "update", "-qq"], timeout=600)


def _kernel_package() -> str:
    """The kernel image package ``linux-image-amd64`` currently depends on."""
    match = _apt_cache(["depends", "linux-image-amd64"], r"Depends: (linux-image-[\w.+-]+)")
    if match is None:
        raise GuestUnavailable("apt-cache knows no linux-image-amd64 (run apt-get update?)")
    return match.group(1)


def _download_and_unpack(package: str, staging: Path) -> Path:
    """``apt-get download PACKAGE`` into ``staging`` and ``dpkg -x`` it; the root."""
    debs = staging / "debs"
    debs.mkdir()
    _run(["apt-get", "download", "-q", package], cwd=debs)
    found = list(debs.glob(f"{package}_*.deb"))
    if len(found) != 1:
        raise GuestUnavailable(f"apt-get download {package} left {found} in {debs}")
    root = staging / "root"
    _run(["dpkg", "-x", str(found[0]), str(root)])
    found[0].unlink()
    return root


@dataclass(frozen=True)
class GuestKernel:
    """An unpacked Debian kernel: ``vmlinuz`` and the modules the guest needs."""

    package: str
    vmlinuz: Path
    modules: Path  #: a directory of ``NAME.ko`` files

    @property
    def version(self) -> str:
        return self.package.removeprefix("linux-image-")


def _cached(cache: Path, pattern: str) -> Path | None:
    ready = sorted(p.parent for p in cache.glob(pattern))
    return ready[-1] if ready else None


def guest_kernel(cache_dir: Path | None = None) -> GuestKernel:
    """Debian's current amd64 kernel, fetched once into the cache.

    Without apt's package lists, the newest kernel already in the cache
    serves.
    """
    cache = (default_cache_dir() if cache_dir is None else cache_dir) / "guest-kernel"
    try:
        package = _kernel_package()
    except GuestUnavailable:
        cached = _cached(cache, "*/.ready")
        if cached is None:
            raise
        package = cached.name
    target = cache / package
    if not (target / ".ready").exists():
        with _locked(cache, "kernel"):
            if not (target / ".ready").exists():
                _fetch_kernel(package, target)
    return GuestKernel(package, target / "vmlinuz", target / "modules")


def _fetch_kernel(package: str, target: Path) -> None:
    version = package.removeprefix("linux-image-")
    staging = Path(tempfile.mkdtemp(prefix=".kernel-", dir=target.parent))
    try:
        root = _download_and_unpack(package, staging)
        keep = staging / "keep"
        (keep / "modules").mkdir(parents=True)
        shutil.copy(root / "boot" / f"vmlinuz-{version}", keep / "vmlinuz")
        shutil.copy(root / "boot" / f"config-{version}", keep / "config")
        tree = root / "lib" / "modules" / version / "kernel"
        for module in MODULES:
            candidates = list(tree.glob(module + ".ko*"))
            if not candidates:
                raise GuestUnavailable(f"{package} has no module {module}")
            _unpack_module(candidates[0], keep / "modules" / (Path(module).name + ".ko"))
        (keep / ".ready").write_text(package + "\n")
        shutil.rmtree(target, ignore_errors=True)
        keep.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack_module(source: Path, dest: Path) -> None:
    if source.suffix == ".ko":
        shutil.copy(source, dest)
    elif source.suffix == ".xz":
        import lzma

        dest.write_bytes(lzma.decompress(source.read_bytes()))
    elif source.suffix == ".gz":
        dest.write_bytes(gzip.decompress(source.read_bytes()))
    else:
        raise GuestUnavailable(f"cannot unpack the module {source}")


def guest_busybox(cache_dir: Path | None = None) -> Path:
    """A static busybox from Debian's ``busybox-static``, fetched once into the cache."""
    cache = (default_cache_dir() if cache_dir is None else cache_dir) / "guest-busybox"
    try:
        match = _apt_cache(["policy", "busybox-static"], r"Candidate: ([^(\s]\S*)")
        if match is None:
            raise GuestUnavailable("apt-cache knows no busybox-static (run apt-get update?)")
        key = re.sub(r"[^\w.+-]", "_", match.group(1))
    except GuestUnavailable:
        cached = _cached(cache, "*/busybox")
        if cached is None:
            raise
        key = cached.name
    target = cache / key
    if not (target / "busybox").exists():
        with _locked(cache, "busybox"):
            if not (target / "busybox").exists():
                staging = Path(tempfile.mkdtemp(prefix=".busybox-", dir=cache))
                try:
                    root = _download_and_unpack("busybox-static", staging)
                    target.mkdir(parents=True, exist_ok=True)
                    tmp = target / "busybox.tmp"
                    shutil.copy(root / "bin" / "busybox", tmp)
                    tmp.rename(target / "busybox")
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
    return target / "busybox"


# --------------------------------------------------------------------------- initramfs


def build_afalg(cache_dir: Path | None = None) -> Path:
    """``tests/guest/afalg.c`` built with ``gcc -static``, cached by its source's hash."""
    cache = (default_cache_dir() if cache_dir is None else cache_dir) / "guest-afalg"
    source = GUEST_SRC / "afalg.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    program = cache / f"afalg-{digest}"
    if program.exists():
        return program
    if shutil.which("gcc") is None:
        raise GuestUnavailable("gcc is not installed (Debian package build-essential)")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".afalg-{os.getpid()}"
    _run(["gcc", "-static", "-O2", "-Wall", "-Werror", "-o", str(tmp), str(source)])
    tmp.rename(program)
    return program


class _Cpio:
    """A newc ("070701") cpio archive, as the kernel unpacks an initramfs."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        fields = (
            self._ino,
            mode,
            0,
            0,
            1,
            0,
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(name) + 1,
            0,
        )
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._out += header + name.encode() + b"\0"
        self._out += b"\0" * (-len(self._out) % 4)
        self._out += data
        self._out += b"\0" * (-len(self._out) % 4)

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        self._out += b"\0" * (-len(self._out) % 512)
        return bytes(self._out)


def build_initrd(kernel: GuestKernel, busybox: Path, afalg: Path, plan: str, dest: Path) -> Path:
    """Write the gzip'd initramfs to ``dest``: ``/init`` runs ``plan`` (shell lines)."""
    cpio = _Cpio()
    for directory in ("bin", "dev", "lib", "lib/modules", "proc", "sys", "tmp"):
        cpio.directory(directory)
    cpio.char_device("dev/console", 5, 1)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.file("init", (GUEST_SRC / "init.sh").read_bytes(), 0o755)
    cpio.file("afalg", afalg.read_bytes(), 0o755)
    names = [Path(m).name for m in MODULES]
    cpio.file("modules.order", ("\n".join(names) + "\n").encode())
    for name in names:
        cpio.file(f"lib/modules/{name}.ko", (kernel.modules / f"{name}.ko").read_bytes())
    cpio.file("plan", plan.encode())
    dest.write_bytes(gzip.compress(cpio.finish(), compresslevel=1))
    return dest


# --------------------------------------------------------------------------- reference


def reference_ciphertext(length: int) -> bytes:
    """``openssl enc -aes-256-cbc -nopad`` of afalg's plaintext (byte i = i & 0xff)."""
    plaintext = bytes(i & 0xFF for i in range(length))
    try:
        result = subprocess.run(
            ["openssl", "enc", "-aes-256-cbc", "-nopad", "-K", KEY.hex(), "-iv", IV.hex()],
            input=plaintext,
            capture_output=True,
            timeout=60,
            check=True,
        )
    except FileNotFoundError:
        raise GuestUnavailable("openssl is not installed (Debian package openssl)") from None
    return result.stdout


def fnv1a64(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def expected_enc_fields(length: int) -> dict[str, str]:
    """What an ``afalg enc`` line must say for ``length`` bytes."""
    ct = reference_ciphertext(length)
    return {
        "len": str(length),
        "ct": ct[:32].hex(),
        "tail": ct[-16:].hex() if length >= 16 else ct.hex(),
        "fnv": f"{fnv1a64(ct):016x}",
        "rt": "ok",
    }


def fields(line: str) -> dict[str, str]:
    """``key=value`` words of a guest line."""
    return dict(word.split("=", 1) for word in line.split() if "=" in word)


# --------------------------------------------------------------------------- QEMU


def qemu_program() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise GuestUnavailable(f"{QEMU} is not installed (Debian package qemu-system-x86)")
    return path


def vhost_user_crypto_args(
    socket_path: Path, *, reconnect: int | None = None, device_opts: str = ""
) -> list[str]:
    """QEMU arguments for a virtio-crypto device on a vhost-user backend at ``socket_path``.

    ``vectors=0``: QEMU 7.2 under TCG crashes once the guest unmasks an
    MSI-X vector of a vhost-user virtio-crypto device (it indexes a KVM
    irqfd table that TCG never allocates), so the device uses INTx.
    ``device_opts`` adds ``-device`` options (``indirect_desc=off``).
    """
    chardev = f"socket,id=vc0,path={socket_path}"
    if reconnect is not None:
        chardev += f",reconnect={reconnect}"
    return [
        "-chardev",
        chardev,
        "-object",
        "cryptodev-vhost-user,id=cd0,chardev=vc0",
        "-device",
        "virtio-crypto-pci,id=crypto0,cryptodev=cd0,vectors=0"
        + (f",{device_opts}" if device_opts else ""),
    ]


def builtin_crypto_args() -> list[str]:
    """QEMU arguments for a virtio-crypto device on QEMU's own builtin backend."""
    return [
        "-object",
        "cryptodev-backend-builtin,id=cd0",
        "-device",
        "virtio-crypto-pci,id=crypto0,cryptodev=cd0",
    ]


class Guest:
    """A running QEMU with the test guest; ``lines`` are the guest's ``QG`` lines so far.

    :param device_args: the crypto device (:func:`vhost_user_crypto_args` or
        :func:`builtin_crypto_args`).
    :param append: extra kernel command-line words (``cryptomgr.notests=1``).
    :param no_reboot: a guest reset ends QEMU (off when the test resets
        the guest itself through QMP, which ``-no-reboot`` would turn into
        an exit).
    """

    def __init__(
        self,
        kernel: GuestKernel,
        initrd: Path,
        workdir: Path,
        device_args: Sequence[str],
        *,
        append: str = "",
        memory_mb: int = 256,
        no_reboot: bool = True,
    ) -> None:
        self.workdir = workdir
        self.qmp_path = workdir / "qmp.sock"
        self.serial_path = workdir / "serial.log"
        self.stderr_path = workdir / "qemu.stderr"
        cmdline = "console=ttyS0 quiet panic=-1 " + append
        self.argv = [
            qemu_program(),
            "-machine",
            "q35,memory-backend=mem",
            "-accel",
            "tcg",
            "-m",
            f"{memory_mb}M",
            "-object",
            f"memory-backend-memfd,id=mem,size={memory_mb}M,share=on",
            "-display",
            "none",
            "-nodefaults",
            "-serial",
            "stdio",
            "-kernel",
            str(kernel.vmlinuz),
            "-initrd",
            str(initrd),
            "-append",
            cmdline.strip(),
            "-qmp",
            f"unix:{self.qmp_path},server=on,wait=off",
            *(["-no-reboot"] if no_reboot else []),
            *device_args,
        ]
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 -- closed in close()
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,
        )
        assert self.popen.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self.popen.stdout,), name="guest serial", daemon=True
        )
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        with open(self.serial_path, "wb") as log:
            for raw in stream:
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace").replace("\r", "").rstrip("\n")
                start = line.find("QG ")
                if start >= 0:
                    with self._cond:
                        self.lines.append((time.monotonic() - self.started, line[start + 3 :]))
                        self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    # --- the guest's output ---------------------------------------------------
    def wait_line(self, pattern: str, timeout: float, after: int = 0) -> tuple[int, str] | None:
        """The first line from index ``after`` matching the regex ``pattern``
        (``(index, line)``), or None after ``timeout`` s or once QEMU exited."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(after, len(self.lines)):
                    if regex.search(self.lines[i][1]):
                        return i, self.lines[i][1]
                after = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.popen.poll() is not None and not self._reader.is_alive()
                ):
                    return None
                self._cond.wait(min(remaining, 0.2))

    def matching(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        with self._cond:
            return [line for _, line in self.lines if regex.search(line)]

    def send_line(self, text: str = "") -> None:
        """Type a line on the guest's serial console."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(text.encode() + b"\n")
        self.popen.stdin.flush()

    def stderr(self) -> str:
        return self.stderr_path.read_bytes().decode("utf-8", "replace")

    def serial(self) -> str:
        return self.serial_path.read_bytes().decode("utf-8", "replace").replace("\r", "")

    # --- QEMU -------------------------------------------------------------------
    def qmp(self, *commands: str) -> list[str]:
        """Run QMP commands (no arguments) on a fresh connection; the raw replies."""
        import json

        replies: list[str] = []
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(str(self.qmp_path))
            stream = sock.makefile("rwb")
            stream.readline()  # greeting
            for command in ("qmp_capabilities", *commands):
                stream.write(json.dumps({"execute": command}).encode() + b"\n")
                stream.flush()
                while True:
                    reply = stream.readline().decode()
                    if not reply:
                        return replies
                    if '"event"' not in reply:
                        break
                if command != "qmp_capabilities":
                    replies.append(reply.strip())
        return replies

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int | None:
        """QEMU's exit status, or None if it is still running after ``timeout`` s."""
        try:
            status = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(10)
        return status

    def close(self) -> None:
        """Kill QEMU if it still runs; always reaps it."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(30)
        self._reader.join(10)
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        self._stderr.close()

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
