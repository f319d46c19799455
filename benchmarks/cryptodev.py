"""AES-256-CBC through ``cryptodev-vhost-user``, against doing it in process.

Requests of 64 B, 4 KiB and 64 KiB, timed in the same run, alternating
way by way within each round:

* ``cryptography`` directly: a new CBC encryptor per request (the IV
  changes every time), ``update`` and ``finalize``;
* ``cryptodev-backend-builtin``: ``dev.encrypt(session, iv, data)``;
* ``cryptodev-vhost-user`` on an iothread, with ``qomhost-vhost-user-crypto``
  as a separate process, and with the same backend on a thread of this
  process (``BackendThread``), three ways:

  - *one at a time*: ``dev.encrypt`` per request, a round trip each;
  - *batched*: ``dev.encrypt_many_into`` of :data:`IN_FLIGHT` requests,
    made available in groups of the iothread's ``aio-max-batch`` with one
    kick each, waited for as a whole before the next call. Inside a call
    the backend serves the first group while the caller writes the second,
    but between calls the two ends take turns: the caller waits for the
    last result, the backend for the next request;
  - *pipelined*: ``dev.submit_many_into`` of groups of ``aio-max-batch``
    requests, :data:`DEPTH` groups in flight; the caller waits for the
    oldest group and sends the next into the output buffers it freed, so
    the backend always has a queued group while the caller writes one
    (:data:`PASS_GROUPS` groups per pass, the pipeline drained at the end
    of each pass). This is how a program with a stream of requests would
    use the device; it needs a second CPU to gain anything, since the two
    ends then run at once: on one CPU a row costs the sum of the two
    processes' CPU per request, on two the larger of them.

  Results go to output buffers reused from call to call (``encrypt_many``
  makes a new bytes object per result, and at 64 KiB glibc gives the
  memory of a dropped batch back to the kernel, so every new result faults
  its pages in again, which costs more than the rest of the request).

The rows with the backend on a thread of this process share one GIL with
the caller and the iothread: nothing there runs at once, so pipelining
cannot help them (they show what the in-process backend costs).

Each figure is the median over rounds of requests per second (and MB/s of
plaintext); the ratio is to ``cryptography`` directly in the same round.
A second table gives, per request, the CPU time of this process (caller
and iothread), of the backend process (``/proc/PID/stat``, 10 ms ticks)
and the wall time: what bounds a row. With two free CPUs a pipelined row
is as fast as its busier process (the backend's Python per request, on
top of the cipher, is then the limit); on a machine whose other work
leaves one CPU, it costs the sum. The one-at-a-time rows are bound by
wake-ups, not CPU work: three sleeping threads are woken in turn per
request, which costs a lot more on an idle virtual machine than on a busy
one. The iothread's polling (``poll-max-ns`` 32768, the default) finds
almost no completions: the backend signals once per group, and a group of
4 KiB requests takes some 400 us to serve, far beyond the window; a window
that long would spend, busy-polling, the CPU the backend needs on a
two-CPU machine, so the default is kept.

The machine's 1-minute load average is printed with the results: the two
processes of the vhost-user rows want two CPUs. Usage::

    .venv/bin/python benchmarks/cryptodev.py                # ~50 s
    .venv/bin/python benchmarks/cryptodev.py --rounds 2 --seconds 0.1   # smoke run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import load_average, log, median, python_env, table
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from qomhost.chardev.socket import ChardevSocket, SocketAddress
from qomhost.cryptodev.device import VhostUserCryptoDevice
from qomhost.host import Host
from qomhost.objects.cryptodev.base import (
    CryptoDevBackend,
    CryptoDevError,
    PendingRequests,
    Session,
)
from qomhost.objects.cryptodev.vhost_user import CryptoDevBackendVhostUser
from qomhost.objects.iothread import IOThread
from qomhost.vhost_user.server import BackendThread

BACKEND = str(Path(sys.executable).parent / "qomhost-vhost-user-crypto")
SIZES = (64, 4096, 65536)
#: requests per encrypt_many call in the batched rows
IN_FLIGHT = 64
#: the iothread's (and the in-process backend's) aio-max-batch
MAX_BATCH = 32
#: groups of MAX_BATCH requests the pipelined rows keep in flight
DEPTH = 4
#: groups each pipelined pass sends (the pipeline fills and drains once per pass)
PASS_GROUPS = 32
KEY = bytes(range(32))

#: a way of encrypting: items -> how many requests it encrypted
Way = Callable[[list[tuple[bytes, bytes]]], int]


def _direct(items: list[tuple[bytes, bytes]]) -> int:
    aes = algorithms.AES(KEY)
    for iv, data in items:
        enc = Cipher(aes, modes.CBC(iv)).encryptor()
        enc.update(data)
        enc.finalize()
    return len(items)


def _one_by_one(dev: CryptoDevBackend, session: Session) -> Way:
    def way(items: list[tuple[bytes, bytes]]) -> int:
        encrypt = dev.encrypt
        for iv, data in items:
            encrypt(session, iv, data)
        return len(items)

    return way


def _batched(dev: CryptoDevBackend, session: Session) -> Way:
    out = [bytearray(max(SIZES)) for _ in range(IN_FLIGHT)]

    def way(items: list[tuple[bytes, bytes]]) -> int:
        for start in range(0, len(items), IN_FLIGHT):
            chunk = items[start : start + IN_FLIGHT]
            dev.encrypt_many_into(session, chunk, out[: len(chunk)])
        return len(items)

    return way


def _pipelined(dev: CryptoDevBackend, session: Session) -> Way:
    """:data:`PASS_GROUPS` groups of :data:`MAX_BATCH` requests through
    ``submit_many_into``, :data:`DEPTH` of them in flight: the oldest is
    waited for, then the next sent into the output buffers it freed."""
    outs = [[bytearray(max(SIZES)) for _ in range(MAX_BATCH)] for _ in range(DEPTH)]

    def way(items: list[tuple[bytes, bytes]]) -> int:
        groups = [items[i : i + MAX_BATCH] for i in range(0, len(items), MAX_BATCH)]
        in_flight: deque[PendingRequests] = deque()
        done = 0
        for n in range(PASS_GROUPS):
            if len(in_flight) == DEPTH:
                in_flight.popleft().wait()
            group = groups[n % len(groups)]
            in_flight.append(dev.submit_many_into(session, group, outs[n % DEPTH][: len(group)]))
            done += len(group)
        while in_flight:
            in_flight.popleft().wait()
        return done

    return way


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _rate(
    way: Way, items: list[tuple[bytes, bytes]], seconds: float, backend: int
) -> tuple[float, float, float]:
    """``way`` over ``items`` again and again for ``seconds``: requests per
    second, and the CPU time per request (us) of this process and of the
    process ``backend``."""
    done = 0
    cpu0 = os.times()
    back0 = _cpu_seconds(backend)
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        done += way(items)
        now = time.perf_counter()
        if now >= deadline:
            break
    cpu1 = os.times()
    back1 = _cpu_seconds(backend)
    here = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return done / (now - start), 1e6 * here / done, 1e6 * (back1 - back0) / done


@dataclass
class CryptodevResult:
    """Requests per second per (way, size), one sample per round."""

    rounds: int
    seconds: float
    rates: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    ratios: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    load_before: str = ""
    load_after: str = ""
    polled: float = 0.0
    #: CPU us per request: this process, the backend process
    cpu: dict[tuple[str, int], list[tuple[float, float]]] = field(default_factory=dict)

    def markdown(self) -> str:
        """Rates, MB/s and the ratio to ``cryptography`` per size, then the goals."""
        header = ["way"]
        for size in SIZES:
            label = _size_label(size)
            header += [f"{label} req/s", f"{label} MB/s", f"{label} vs direct"]
        names = list(dict.fromkeys(name for name, _size in self.rates))
        rows = []
        for name in names:
            row = [name]
            for size in SIZES:
                rate = median(self.rates[(name, size)])
                ratio = median(self.ratios[(name, size)])
                row += [f"{rate:,.0f}", f"{rate * size / 1e6:,.1f}", f"{ratio:.2f}"]
            rows.append(row)
        best = {
            size: max(
                median(self.ratios[(name, size)]) for name in names if name.startswith("vhost-user")
            )
            for size in SIZES
        }
        cpu_header = ["way"] + [
            f"{_size_label(size)} {what}" for size in SIZES for what in ("here", "backend", "wall")
        ]
        cpu_rows = []
        for name in names:
            if "backend thread" in name:
                continue  # its backend is in this process
            row = [name]
            for size in SIZES:
                samples = self.cpu[(name, size)]
                here = median([h for h, _b in samples])
                back = median([b for _h, b in samples])
                wall = 1e6 / median(self.rates[(name, size)])
                row += [f"{here:.1f}", f"{back:.1f}" if back else "-", f"{wall:.1f}"]
            cpu_rows.append(row)
        return "\n".join(
            [
                table(header, rows),
                "",
                "CPU time per request (us; medians over rounds) of this process (the caller, "
                "the iothread) and of the backend process, with the wall time per request. "
                "Two free CPUs can bring a vhost-user row's wall time down to the larger of "
                "the two CPU figures, one CPU only to their sum:",
                "",
                table(cpu_header, cpu_rows),
                "",
                f"Medians of {self.rounds} rounds of {self.seconds:g} s per way and size; "
                "the ratio is to `cryptography` directly, measured in the same round. "
                f"Load average (1 min) before / after: {self.load_before} / {self.load_after}. "
                f"Batched rows: {IN_FLIGHT} requests per `encrypt_many_into`, `aio-max-batch` "
                f"{MAX_BATCH}; pipelined rows: groups of {MAX_BATCH} through "
                f"`submit_many_into`, {DEPTH} in flight; {100 * self.polled:.0f} % of the "
                "vhost-user completions were found by the iothread's polling, "
                "the rest came with a call.",
                "",
                f"Goal (issue 5): through vhost-user at least 0.80 of direct at 64 KiB "
                f"(best here: {best[65536]:.2f}) and 0.50 at 4 KiB (best here: {best[4096]:.2f}).",
            ]
        )


def _size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


class _Frontend:
    """A library host with an iothread and a ``cryptodev-vhost-user`` on it."""

    def __init__(self, path: str, label: str) -> None:
        self.host = Host()
        io = self.host.add_object("iothread", f"io-{label}", aio_max_batch=MAX_BATCH)
        assert isinstance(io, IOThread)
        sock = ChardevSocket("chardev-socket")
        sock.address = SocketAddress(path=path)
        sock.label = f"c-{label}"
        sock.open()
        self.host.add_chardev(sock, sock.label)
        dev = self.host.add_object("cryptodev-vhost-user", f"cv-{label}", chardev=sock.label)
        assert isinstance(dev, CryptoDevBackendVhostUser)
        dev.set_iothread(io)
        self.dev = dev
        self.session = dev.create_session("aes-256-cbc", key=KEY)
        # start the rings here: the main loop does not run, this thread reads
        dev.encrypt(self.session, bytes(16), bytes(16))

    def close(self) -> None:
        try:
            self.session.close()
        except CryptoDevError as err:
            # The backend may have dropped the connection; say so and go on
            # (it once did now and then, reading a half-written avail index).
            log(f"cryptodev: closing the session failed: {err.desc}")
        self.host.close()


def _wait_for(path: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("qomhost-vhost-user-crypto did not start")
        time.sleep(0.01)


def run(rounds: int = 5, seconds: float = 0.3) -> CryptodevResult:
    """Time every way at every size, ``rounds`` times, alternating ways."""
    result = CryptodevResult(rounds, seconds, load_before=load_average())
    with tempfile.TemporaryDirectory(prefix="qomhost-cryptodev-") as tmp:
        prog_path = os.path.join(tmp, "prog.sock")
        proc = subprocess.Popen([BACKEND, "--socket-path", prog_path], env=python_env())
        thread_path = os.path.join(tmp, "thread.sock")
        backend = BackendThread(VhostUserCryptoDevice, thread_path, aio_max_batch=MAX_BATCH)
        frontends: list[_Frontend] = []
        try:
            _wait_for(prog_path, proc)
            backend.start()
            host = Host()
            builtin = host.add_object("cryptodev-backend-builtin", "cb0")
            assert isinstance(builtin, CryptoDevBackend)
            b_session = builtin.create_session("aes-256-cbc", key=KEY)
            prog = _Frontend(prog_path, "prog")
            frontends.append(prog)
            inproc = _Frontend(thread_path, "thread")
            frontends.append(inproc)
            ways: dict[str, Way] = {
                "cryptography directly": _direct,
                "cryptodev-backend-builtin": _one_by_one(builtin, b_session),
                "vhost-user, backend process, one at a time": _one_by_one(prog.dev, prog.session),
                "vhost-user, backend process, batched": _batched(prog.dev, prog.session),
                "vhost-user, backend process, pipelined": _pipelined(prog.dev, prog.session),
                "vhost-user, backend thread, one at a time": _one_by_one(
                    inproc.dev, inproc.session
                ),
                "vhost-user, backend thread, batched": _batched(inproc.dev, inproc.session),
                "vhost-user, backend thread, pipelined": _pipelined(inproc.dev, inproc.session),
            }
            for size in SIZES:
                items = [(os.urandom(16), os.urandom(size)) for _ in range(IN_FLIGHT)]
                for way in ways.values():
                    way(items)  # warm-up: buffers allocated, code paths taken
                for i in range(rounds):
                    order = list(ways.items())
                    if i % 2:
                        order.reverse()
                    runs = {name: _rate(way, items, seconds, proc.pid) for name, way in order}
                    direct = runs["cryptography directly"][0]
                    for name, (rate, here, back) in runs.items():
                        result.rates.setdefault((name, size), []).append(rate)
                        result.ratios.setdefault((name, size), []).append(rate / direct)
                        result.cpu.setdefault((name, size), []).append((here, back))
                log(f"cryptodev: {_size_label(size)} done")
            polled = notified = 0
            for fe in frontends:
                datapath = fe.dev.datapath
                if datapath is not None:
                    polled += datapath.polled
                    notified += datapath.notified
            result.polled = polled / max(1, polled + notified)
            b_session.close()
            host.close()
        finally:
            for fe in frontends:
                fe.close()
            backend.stop()
            proc.terminate()
            proc.wait(10)
    result.load_after = load_average()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per size (5)")
    parser.add_argument("--seconds", type=float, default=0.3, help="seconds per way (0.3)")
    args = parser.parse_args()
    sys.stdout.write(run(args.rounds, args.seconds).markdown() + "\n")


if __name__ == "__main__":
    main()
