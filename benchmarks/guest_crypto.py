"""Guest AF_ALG throughput through virtio-crypto: three backends, one run.

A Linux guest (Debian's kernel under QEMU 7.2, TCG, one vCPU; the same
guest as ``tests/interop/test_guest_virtio_crypto.py``) encrypts through
AF_ALG bound to ``virtio_crypto_aes_cbc`` for a fixed time at 2 KiB and
64 KiB, first in one process (one request in flight), then in four side by
side (the driver keeps several in flight), against:

* ``qomhost-vhost-user-crypto`` (vhost-user, ``vectors=0``), with its default
  polling window and with ``--poll-max-ns 1000000``;
* QEMU's own ``cryptodev-backend-builtin`` (in QEMU's process);
* DPDK 22.11's ``vhost_crypto`` example (vhost-user), at 2 KiB in one
  process only: it refuses larger requests, and loses track of its used
  ring with several in flight. QEMU 7.2 cannot drive it unaided, so a small
  relay in between rewrites the session payload into the layout DPDK
  reads and sends the ``SET_VRING_ENABLE`` and ``SET_STATUS(DRIVER_OK)``
  QEMU never sends. DPDK's worker busy-polls; both its lcores share the
  first CPU.

Every device uses INTx (``vectors=0``: QEMU 7.2 under TCG crashes with a
vhost-user device and MSI-X), so all three take the same interrupt path.
The guest's self-tests are off (DPDK fails them). Each boot measures all
sizes; the backends take turns round by round. Usage::

    .venv/bin/python benchmarks/guest_crypto.py                         # 3 rounds of 5 s, ~7 min
    .venv/bin/python benchmarks/guest_crypto.py --rounds 1 --seconds 1  # smoke run, ~45 s

Guest-side numbers: the guest's clock under TCG runs at the host's pace,
but the vCPU is emulated, so the figures are for comparing backends with
each other in one run, not with a host or a KVM guest.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from _common import ROOT, VENV_BIN, log, median, table

sys.path.insert(0, str(ROOT / "tests"))

import guestvm
import peers
from qomhost.cryptodev.virtio_crypto import (
    LAYOUT_LEGACY,
    decode_session,
    encode_session,
)

KIB = 1024
#: (request size, guest processes encrypting side by side)
Case = tuple[int, int]
JOBS = 4
CASES: tuple[Case, ...] = ((2 * KIB, 1), (64 * KIB, 1), (2 * KIB, JOBS), (64 * KIB, JOBS))
#: DPDK's vhost_crypto refuses requests over 2 KiB (and never completes them),
#: and with several requests in flight the guest soon finds a used entry
#: that is not a chain's head ("dataq.0:id 0 is not a head!", EIO)
DPDK_CASES: tuple[Case, ...] = ((2 * KIB, 1),)
#: the long polling window of the second qomhost column: a guest that sends one
#: request at a time sends the next some 100-200 us after the last answer, past
#: the default window, which then shrinks to 0
LONG_POLL_NS = 1_000_000
QOMHOST = "qomhost-vhost-user-crypto"
QOMHOST_POLLING = f"qomhost, --poll-max-ns {LONG_POLL_NS}"
BUILTIN = "QEMU builtin"
DPDK = "DPDK vhost_crypto"
BACKENDS = (QOMHOST, QOMHOST_POLLING, BUILTIN, DPDK)
#: the arguments each qomhost column gives qomhost-vhost-user-crypto
QOMHOST_ARGS = {QOMHOST: [], QOMHOST_POLLING: ["--poll-max-ns", str(LONG_POLL_NS)]}

# vhost-user requests the relay looks at
_SET_VRING_KICK = 12
_SET_VRING_ENABLE = 18
_CREATE_CRYPTO_SESSION = 26
_SET_STATUS = 39
_HEADER = struct.Struct("<III")
_VERSION = 0x1
_DRIVER_OK_STATUS = 0xF  # ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK


# --------------------------------------------------------------------------- DPDK relay


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _recv_message(sock: socket.socket) -> tuple[bytes, bytes, list[int]]:
    """One vhost-user message: (header, payload, fds)."""
    data, fds, _flags, _addr = socket.recv_fds(sock, _HEADER.size, 8)
    if not data:
        raise EOFError
    header = data + _recv_exact(sock, _HEADER.size - len(data))
    _request, _flags2, size = _HEADER.unpack(header)
    return header, _recv_exact(sock, size) if size else b"", list(fds)


def _send_message(sock: socket.socket, header: bytes, payload: bytes, fds: list[int]) -> None:
    if fds:
        socket.send_fds(sock, [header + payload], fds)
    else:
        sock.sendall(header + payload)


class Qemu72DpdkRelay:
    """Sits between QEMU 7.2 (which connects to ``listen_path``) and DPDK's socket.

    Passes every message through, except: a CREATE_CRYPTO_SESSION payload is
    rewritten from QEMU 7.2's layout into the legacy one DPDK reads (its
    reply, the id at offset 0, goes back as it is), and after ring 0's
    SET_VRING_KICK the relay sends DPDK the SET_VRING_ENABLE and
    SET_STATUS(DRIVER_OK) that QEMU 7.2 never sends for a crypto device.
    """

    def __init__(self, listen_path: Path, backend_path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(listen_path))
        self.listener.listen(1)
        self.backend_path = backend_path
        self._thread = threading.Thread(target=self._serve, name="relay", daemon=True)
        self._stop = False
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            front, _ = self.listener.accept()
            back = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            back.connect(str(self.backend_path))
            with front, back:
                while not self._stop:
                    ready, _, _ = select.select([front, back], [], [], 0.2)
                    if front in ready:
                        self._forward(front, back, from_qemu=True)
                    if back in ready:
                        self._forward(back, front, from_qemu=False)

    def _forward(self, src: socket.socket, dst: socket.socket, *, from_qemu: bool) -> None:
        header, payload, fds = _recv_message(src)
        request, flags, _size = _HEADER.unpack(header)
        if from_qemu and request == _CREATE_CRYPTO_SESSION:
            payload = encode_session(decode_session(payload).info, LAYOUT_LEGACY)
            header = _HEADER.pack(request, flags, len(payload))
        try:
            _send_message(dst, header, payload, fds)
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if from_qemu and request == _SET_VRING_KICK and payload[:1] == b"\0":
            dst.sendall(_HEADER.pack(_SET_VRING_ENABLE, _VERSION, 8) + struct.pack("<II", 0, 1))
            dst.sendall(
                _HEADER.pack(_SET_STATUS, _VERSION, 8) + struct.pack("<Q", _DRIVER_OK_STATUS)
            )

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        self._thread.join(5)


# --------------------------------------------------------------------------- runs


@dataclass
class Files:
    kernel: guestvm.GuestKernel
    busybox: Path
    afalg: Path


def _plan(cases: tuple[Case, ...], seconds: float) -> str:
    lines = []
    for size, jobs in cases:
        lines.append(f'echo "QG case len={size} jobs={jobs}"')
        bench = f"/afalg bench {guestvm.VIRTIO_AES_CBC} {size} {seconds}"
        lines.append(" ".join([f"{bench} &"] * jobs) + " wait")
    return "\n".join(lines) + "\n"


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    rate: float  #: bytes per second, all guest processes together
    requests: int
    backend_cpu: float | None  #: the backend process's CPU seconds meanwhile


def _boot(
    files: Files,
    workdir: Path,
    device_args: list[str],
    cases: tuple[Case, ...],
    seconds: float,
    backend_pid: int | None = None,
) -> dict[Case, Measured]:
    """One boot measuring ``cases`` in order."""
    initrd = guestvm.build_initrd(
        files.kernel, files.busybox, files.afalg, _plan(cases, seconds), workdir / "initrd.gz"
    )
    boot_timeout = 180.0
    case_timeout = 60 + 2 * seconds
    out: dict[Case, Measured] = {}
    with guestvm.Guest(
        files.kernel, initrd, workdir, device_args, append="cryptomgr.notests=1"
    ) as guest:

        def failed(why: str) -> RuntimeError:
            return RuntimeError(
                f"boot in {workdir} failed: {why}\n{guest.stderr()}\n{guest.serial()[-3000:]}"
            )

        at = 0
        for case in cases:
            size, jobs = case
            found = guest.wait_line(rf"^case len={size} jobs={jobs}$", boot_timeout, at)
            if found is None:
                raise failed(f"no start of {case}")
            at = found[0] + 1
            cpu0 = _cpu_seconds(backend_pid) if backend_pid else None
            runs = []
            for _ in range(jobs):
                found = guest.wait_line(r"^afalg (bench|error)", case_timeout, at)
                if found is None or "error" in found[1]:
                    # a guest that got an error may hang on its next request
                    raise failed(f"{case}: {found}")
                at = found[0] + 1
                runs.append(guestvm.fields(found[1]))
            cpu1 = _cpu_seconds(backend_pid) if backend_pid else None
            total = sum(int(f["ops"]) * int(f["len"]) for f in runs)
            out[case] = Measured(
                rate=total / (max(int(f["ns"]) for f in runs) / 1e9),
                requests=sum(int(f["ops"]) for f in runs),
                backend_cpu=None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
            )
        status = guest.wait(case_timeout)
        if status != 0:
            raise failed(f"QEMU exit status {status}")
    return out


@contextlib.contextmanager
def _qomhost_backend(workdir: Path, extra: list[str]) -> Iterator[tuple[list[str], int]]:
    path = workdir / "qomhost.sock"
    proc = subprocess.Popen(
        [str(VENV_BIN / "qomhost-vhost-user-crypto"), "--socket-path", str(path), *extra],
        stderr=open(workdir / "qomhost.log", "wb"),  # noqa: SIM115 -- the child owns it
    )
    try:
        deadline = time.monotonic() + 30
        while not path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"qomhost-vhost-user-crypto did not start: {proc.returncode}")
            time.sleep(0.05)
        yield guestvm.vhost_user_crypto_args(path), proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def _dpdk_backend(workdir: Path, program: Path) -> Iterator[list[str]]:
    dpdk_path = workdir / "dpdk.sock"
    relay_path = workdir / "relay.sock"
    # the peer prints its log's tail when it stops (for pytest): keep stdout for the table
    with (
        contextlib.redirect_stdout(sys.stderr),
        peers.dpdk_vhost_crypto(program, dpdk_path, log_path=workdir / "dpdk.log"),
    ):
        relay = Qemu72DpdkRelay(relay_path, dpdk_path)
        try:
            yield guestvm.vhost_user_crypto_args(relay_path)
        finally:
            relay.close()


@dataclass
class GuestCryptoResult:
    seconds: float
    #: backend -> case -> bytes per second, one per round
    rates: dict[str, dict[Case, list[float]]] = field(default_factory=dict)
    #: qomhost column -> case -> the backend process's CPU seconds per request,
    #: one per round
    cpu: dict[str, dict[Case, list[float]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def markdown(self) -> str:
        def cell(backend: str, case: Case) -> str:
            values = self.rates.get(backend, {}).get(case)
            if not values:
                return "-"
            return f"{median(values) / 1e6:.1f} MB/s"

        rows = []
        for case in CASES:
            size, jobs = case
            row = [f"{size // KIB} KiB", str(jobs)]
            row += [cell(backend, case) for backend in BACKENDS]
            builtin = self.rates.get(BUILTIN, {}).get(case)
            for ours in (self.rates.get(b, {}).get(case) for b in QOMHOST_ARGS):
                row.append(f"{median(ours) / median(builtin):.2f}x" if ours and builtin else "-")
            for backend in QOMHOST_ARGS:
                cpu = self.cpu.get(backend, {}).get(case)
                row.append(f"{median(cpu) * 1e6:.0f} us" if cpu else "-")
            rows.append(row)
        rounds = max((len(v) for r in self.rates.values() for v in r.values()), default=0)
        head = [
            "request",
            "guest processes",
            *BACKENDS,
            "qomhost / builtin",
            "polling / builtin",
            "qomhost CPU per request",
            "polling CPU per request",
        ]
        text = table(head, rows)
        text += (
            f"\n\nGuest AF_ALG `{guestvm.VIRTIO_AES_CBC}` (AES-256-CBC encrypt; each guest "
            f"process one request at a time) for {self.seconds:g} s per row; all processes' "
            f"bytes together; medians of {rounds} round(s), one boot per backend per round. "
            "The last two columns are the backend process's user and system CPU time while "
            "the row ran, divided by the requests served. The polling column is "
            f"qomhost-vhost-user-crypto with `--poll-max-ns {LONG_POLL_NS}` (busy-polling "
            "its ring for up to 1 ms after each request, as DPDK's worker polls all the "
            "time); the first has the default window, 32 768 ns."
        )
        lines = []
        for backend in QOMHOST_ARGS:
            cells = []
            for case in CASES:
                ratios = self.paired(backend, case)
                if ratios:
                    size, jobs = case
                    listed = ", ".join(f"{r:.2f}" for r in ratios)
                    cells.append(f"{size // KIB} KiB x{jobs}: {listed}")
            if cells:
                lines.append(f"- {backend} / {BUILTIN}, round by round: " + "; ".join(cells))
        if lines:
            text += (
                "\n\nThe same ratios within each round (the backends of a round run minutes "
                "apart, the rounds further apart; how fast this shared host runs the guest "
                "drifts by tens of per cent between them):\n\n" + "\n".join(lines)
            )
        for backend, why in self.skipped.items():
            text += f"\n{backend}: not measured ({why})."
        return text

    def paired(self, backend: str, case: Case) -> list[float]:
        """``backend``'s rate over the builtin backend's in each round."""
        ours = self.rates.get(backend, {}).get(case, [])
        builtin = self.rates.get(BUILTIN, {}).get(case, [])
        return [a / b for a, b in zip(ours, builtin, strict=False) if b]


def run(
    rounds: int = 3,
    seconds: float = 5.0,
    backends: tuple[str, ...] = BACKENDS,
    qomhost_args: tuple[str, ...] = (),
) -> GuestCryptoResult:
    files = Files(guestvm.guest_kernel(), guestvm.guest_busybox(), guestvm.build_afalg())
    result = GuestCryptoResult(seconds)
    try:
        dpdk_program: Path | None = peers.build_dpdk_vhost_crypto()
    except peers.PeerUnavailable as exc:
        dpdk_program = None
        result.skipped[DPDK] = str(exc).splitlines()[0]
    for i in range(rounds):
        order = [b for b in BACKENDS if b in backends]
        order = order[i % len(order) :] + order[: i % len(order)]
        for backend in order:
            if backend in result.skipped:
                continue
            with tempfile.TemporaryDirectory(prefix="gc", dir="/tmp") as tmp:
                workdir = Path(tmp)
                if backend in QOMHOST_ARGS:
                    extra = QOMHOST_ARGS[backend] + list(qomhost_args)
                    with _qomhost_backend(workdir, extra) as (args, pid):
                        measured = _boot(files, workdir, args, CASES, seconds, pid)
                elif backend == BUILTIN:
                    args = guestvm.builtin_crypto_args()
                    args[-1] += ",vectors=0"
                    measured = _boot(files, workdir, args, CASES, seconds)
                else:
                    assert dpdk_program is not None
                    with _dpdk_backend(workdir, dpdk_program) as args:
                        measured = _boot(files, workdir, args, DPDK_CASES, seconds)
            for case, m in measured.items():
                result.rates.setdefault(backend, {}).setdefault(case, []).append(m.rate)
                if m.backend_cpu is not None:
                    per_request = m.backend_cpu / max(m.requests, 1)
                    result.cpu.setdefault(backend, {}).setdefault(case, []).append(per_request)
            log(
                f"guest_crypto: round {i + 1} {backend}: "
                + ", ".join(
                    f"{s // KIB} KiB x{j} {m.rate / 1e6:.1f} MB/s" for (s, j), m in measured.items()
                )
            )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="boots per backend (3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per size (5)")
    parser.add_argument(
        "--backend",
        action="append",
        choices=BACKENDS,
        help="measure only this backend (repeatable; default: all)",
    )
    parser.add_argument(
        "--qomhost-arg",
        action="append",
        default=[],
        help="an extra argument for qomhost-vhost-user-crypto (repeatable)",
    )
    args = parser.parse_args()
    backends = tuple(args.backend or BACKENDS)
    result = run(args.rounds, args.seconds, backends, tuple(args.qomhost_arg))
    sys.stdout.write(result.markdown() + "\n")


if __name__ == "__main__":
    main()
