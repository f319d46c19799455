"""A real Linux guest drives ``qomhost-vhost-user-crypto`` through QEMU 7.2.

Debian's kernel boots under QEMU 7.2 (TCG) with ``-device virtio-crypto-pci``
on ``-object cryptodev-vhost-user``, whose chardev connects straight to
``qomhost-vhost-user-crypto``; the guest's own ``virtio_crypto`` driver, its
crypto self-tests and AF_ALG are the client (``tests/guestvm.py`` builds the
guest, ``tests/guest/`` holds its ``/init`` and the AF_ALG program).

Each test is one or two boots with many checks; each prints
``guest <scenario>: N passed, N failed`` and fails if any check did.

Two things a Linux guest cannot or QEMU 7.2 will not do, and what is
checked instead:

* The driver refuses a key of a length AES does not have before it asks
  for a session, so no bad key length reaches the backend from a Linux
  guest: ``setkey`` with 17 bytes is checked to give EINVAL without a
  session request. The backend's refusal (a negative session id) is met
  through its session limit instead (``--max-sessions``): the guest's
  ``setkey`` then fails with EINVAL and the backend keeps serving.
* After the backend is killed and restarted, QEMU 7.2 reconnects
  (``reconnect=``) and repeats the handshake, but it cannot stop that
  device any more: ``system_reset`` or ``quit`` makes it stop a vhost
  device it never started and it crashes (SIGSEGV in the unmap of a ring
  it never mapped). So the QEMU that lost its backend is checked up to the
  reconnect and then killed, and a new boot checks that the restarted
  backend serves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from guestvm import (
    VIRTIO_AES_CBC,
    Guest,
    GuestKernel,
    GuestUnavailable,
    build_afalg,
    build_initrd,
    expected_enc_fields,
    fields,
    guest_busybox,
    guest_kernel,
    qemu_program,
    vhost_user_crypto_args,
)
from hostproc import Process, Processes, Program, missing, venv_tool

pytestmark = pytest.mark.interop

BACKEND_NAME = "qomhost-vhost-user-crypto"

#: a boot to the first guest line takes ~10 s on a quiet 2-core machine under TCG
BOOT_TIMEOUT = 150.0

#: sessions the backend allows in the main boot: three keyed transforms
#: (an encrypt and a decrypt session each) fit, the fourth's decrypt
#: session is refused
MAX_SESSIONS = 7

#: (length, offset into a page of the guest's buffers)
ENC_CASES = [
    (16, 0),
    (2048, 0),
    (4096, 0),
    (65536, 0),
    (16, 4088),  # 16 bytes over a page boundary, 8 on each side
    (4096, 2048),
    (8192, 4032),
    (8192, 4001),  # segments that are not whole cipher blocks
]


@dataclass
class GuestFiles:
    kernel: GuestKernel
    busybox: Path
    afalg: Path

    def initrd(self, plan: str, dest: Path) -> Path:
        return build_initrd(self.kernel, self.busybox, self.afalg, plan, dest)


@pytest.fixture(scope="module")
def guest_files() -> GuestFiles:
    try:
        qemu_program()
        return GuestFiles(guest_kernel(), guest_busybox(), build_afalg())
    except GuestUnavailable as exc:
        missing(str(exc))


@dataclass
class Checks:
    """Named checks, counted; the summary goes to the terminal."""

    scenario: str
    results: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: object = "") -> bool:
        self.results.append((name, bool(ok), "" if ok else str(detail)))
        return bool(ok)

    def summary(self) -> str:
        passed = sum(ok for _, ok, _ in self.results)
        lines = [f"guest {self.scenario}: {passed} passed, {len(self.results) - passed} failed"]
        lines += [f"  FAILED {name}: {detail}" for name, ok, detail in self.results if not ok]
        return "\n".join(lines)

    def assert_all(self) -> None:
        """Fail the test if any check failed (the summary is printed at teardown)."""
        assert all(ok for _, ok, _ in self.results), self.summary()


@pytest.fixture
def checks(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Iterator[Checks]:
    collected = Checks(request.node.name.removeprefix("test_"))
    yield collected
    with capsys.disabled():
        print("\n" + collected.summary())


def start_backend(procs: Processes, socket_path: Path, *args: str) -> Process:
    proc = procs.start(
        Program(BACKEND_NAME, venv_tool(BACKEND_NAME)),
        ["--socket-path", str(socket_path), "-v", *args],
        base=False,
    )
    proc.wait_listening(socket_path)
    return proc


@dataclass
class SessionLog:
    created: list[int]
    closed: list[int]
    refused: int
    unknown_closes: int


def session_log(log: str) -> SessionLog:
    return SessionLog(
        created=[int(n) for n in re.findall(r"session (\d+) created", log)],
        closed=[int(n) for n in re.findall(r"session (\d+) closed", log)],
        refused=len(re.findall(r"session refused", log)),
        unknown_closes=len(re.findall(r"close of unknown session", log)),
    )


def check_driver(c: Checks, guest: Guest, after: int = 0, prefix: str = "") -> None:
    """The driver registered its algorithm and the kernel's self-test passed."""
    ready = guest.wait_line(r"^crypto-done", BOOT_TIMEOUT, after)
    if not c.check(f"{prefix}guest booted and loaded virtio_crypto", ready, guest.serial()[-3000:]):
        return
    assert ready is not None
    entries = [
        fields(line) for line in guest.matching(r"^crypto ") if f"driver={VIRTIO_AES_CBC}" in line
    ]
    c.check(f"{prefix}/proc/crypto has {VIRTIO_AES_CBC}", entries, guest.matching(r"^crypto "))
    c.check(
        f"{prefix}{VIRTIO_AES_CBC} selftest: passed",
        entries and entries[-1].get("selftest") == "passed",
        entries,
    )
    failures = [line for line in guest.matching(r"^dmesg") if re.search(r"alg: .*(fail|err)", line)]
    c.check(f"{prefix}no self-test failure in the guest's log", not failures, failures)


def check_enc(c: Checks, guest: Guest, length: int, offset: int, timeout: float = 60) -> None:
    pattern = rf"^afalg (enc name={VIRTIO_AES_CBC} len={length} off={offset} |error)"
    found = guest.wait_line(pattern, timeout)
    name = f"AF_ALG {VIRTIO_AES_CBC} {length} B at page offset {offset} = openssl, decrypts back"
    if found is None:
        c.check(name, False, f"no line within {timeout:g} s: {guest.serial()[-2000:]}")
        return
    got = fields(found[1])
    want = expected_enc_fields(length)
    c.check(name, all(got.get(k) == v for k, v in want.items()), f"got {found[1]}, want {want}")


def enc_plan(cases: list[tuple[int, int]]) -> str:
    return "".join(f"/afalg enc {VIRTIO_AES_CBC} {n} {off}\n" for n, off in cases)


def test_guest_drives_backend(
    guest_files: GuestFiles, procs: Processes, workdir: Path, checks: Checks
) -> None:
    """One boot: self-tests, AF_ALG against openssl, refused sessions, clean power-off."""
    c = checks
    plan = (
        enc_plan(ENC_CASES)
        + f"/afalg key {VIRTIO_AES_CBC} 17\n"
        + f"/afalg fill {VIRTIO_AES_CBC} {MAX_SESSIONS + 1}\n"
        + enc_plan([(4096, 0)])
    )
    socket_path = workdir / "crypto.sock"
    backend = start_backend(procs, socket_path, "--max-sessions", str(MAX_SESSIONS))
    initrd = guest_files.initrd(plan, workdir / "initrd.gz")
    with Guest(guest_files.kernel, initrd, workdir, vhost_user_crypto_args(socket_path)) as guest:
        check_driver(c, guest)
        for length, offset in ENC_CASES:
            check_enc(c, guest, length, offset)

        key = guest.wait_line(r"^afalg key ", 60)
        c.check("setkey with a 17-byte key gives EINVAL", key and "result=EINVAL" in key[1], key)
        fill = guest.wait_line(r"^afalg fill ", 60)
        after_fill = session_log(backend.stderr())
        fill_fields = fields(fill[1]) if fill else {}
        c.check(
            f"--max-sessions {MAX_SESSIONS}: {MAX_SESSIONS // 2} transforms keyed, "
            "then setkey fails with EINVAL",
            fill_fields.get("keyed") == str(MAX_SESSIONS // 2)
            and fill_fields.get("result") == "EINVAL",
            fill,
        )
        # one refusal, the full table's: the 17-byte key never reached the
        # backend (it would have been refused too)
        c.check("the backend refused one session", after_fill.refused == 1, after_fill)
        c.check(
            "QEMU reports the negative session id",
            "Bad session id: -" in guest.stderr(),
            guest.stderr(),
        )
        fill_at = fill[0] if fill else 0
        again = guest.wait_line(rf"^afalg (enc name={VIRTIO_AES_CBC} len=4096 |error)", 60, fill_at)
        want = expected_enc_fields(4096)
        c.check(
            "the backend serves after refusing a session",
            again and all(fields(again[1]).get(k) == v for k, v in want.items()),
            again,
        )

        status = guest.wait(BOOT_TIMEOUT)
        c.check("QEMU exits 0 at the guest's power-off", status == 0, (status, guest.stderr()))
        c.check(
            "the guest ran its whole plan", guest.matching(r"^plan-done"), guest.serial()[-2000:]
        )
        unexpected = [
            line
            for line in guest.stderr().splitlines()
            if line.strip() and "Bad session id" not in line
        ]
        c.check("QEMU printed no other error", not unexpected, unexpected)

    log = backend.stderr()
    sessions = session_log(log)
    c.check(
        "sessions created and closed in balance",
        sessions.created and sorted(sessions.created) == sorted(sessions.closed),
        f"{len(sessions.created)} created, {len(sessions.closed)} closed",
    )
    c.check("no close of an unknown session", sessions.unknown_closes == 0, sessions)
    c.check(
        "every session came in QEMU 7.2's 632-byte layout",
        log.count("(qemu-7.2 layout,") == len(sessions.created),
        log[-3000:],
    )
    c.check("the backend is still running", backend.running(), log[-3000:])
    c.check("the backend logged no traceback", "Traceback" not in log, log[-3000:])
    c.assert_all()


def test_guest_backend_killed_and_restarted(
    guest_files: GuestFiles, procs: Processes, workdir: Path, checks: Checks
) -> None:
    """The backend killed mid-run: QEMU reports it and stays up; reconnects to the
    restarted backend; the restarted backend serves a new boot (one without
    indirect descriptors and event indexes)."""
    c = checks
    plan = enc_plan([(4096, 0)]) + f"/afalg loop {VIRTIO_AES_CBC} 4096\n"
    socket_path = workdir / "crypto.sock"
    first = start_backend(procs, socket_path)
    initrd = guest_files.initrd(plan, workdir / "initrd.gz")
    qemu_args = vhost_user_crypto_args(socket_path, reconnect=1)
    run1 = workdir / "run1"
    run1.mkdir()
    with Guest(guest_files.kernel, initrd, run1, qemu_args) as guest:
        check_driver(c, guest, prefix="boot 1: ")
        check_enc(c, guest, 4096, 0)
        looping = guest.wait_line(r"^afalg loop .* n=", 60)
        if not c.check("boot 1: the guest keeps the backend busy", looping, guest.serial()[-2000:]):
            c.assert_all()
        first.popen.kill()
        first.popen.wait(30)
        reported = _wait(lambda: "vhost" in guest.stderr() or not guest.running(), 30)
        c.check("QEMU reports the lost backend", reported and guest.running(), guest.stderr())
        status = guest.qmp("query-status")
        c.check(
            "QEMU keeps running without its backend (QMP query-status)",
            status and '"running"' in status[0],
            (status, guest.stderr()),
        )

        second = start_backend(procs, socket_path)
        handshake = _wait(lambda: "SET_VRING_ERR" in second.stderr(), 30)
        c.check(
            "QEMU reconnects (reconnect=1) and repeats the handshake",
            handshake,
            second.stderr()[-2000:],
        )
        c.check("QEMU is still up after the reconnect", guest.running(), guest.stderr())
        # QEMU 7.2 cannot stop the reconnected device (see the module's docstring)
        guest.close()

    run2 = workdir / "run2"
    run2.mkdir()
    plan2 = enc_plan([(16, 0), (65536, 0), (8192, 4001)])
    initrd2 = guest_files.initrd(plan2, workdir / "initrd2.gz")
    # and without indirect descriptors or event indexes this time: requests
    # then come as chains of direct descriptors, and every kick counts
    qemu_args2 = vhost_user_crypto_args(
        socket_path, reconnect=1, device_opts="indirect_desc=off,event_idx=off"
    )
    with Guest(guest_files.kernel, initrd2, run2, qemu_args2) as guest2:
        check_driver(c, guest2, prefix="boot 2: ")
        for length, offset in ((16, 0), (65536, 0), (8192, 4001)):
            check_enc(c, guest2, length, offset)
        status2 = guest2.wait(BOOT_TIMEOUT)
        c.check("boot 2: QEMU exits 0 at power-off", status2 == 0, (status2, guest2.stderr()))
    log = second.stderr()
    sessions = session_log(log)
    c.check(
        "boot 2: sessions created and closed in balance",
        sessions.created and sorted(sessions.created) == sorted(sessions.closed),
        f"{len(sessions.created)} created, {len(sessions.closed)} closed",
    )
    c.check("the restarted backend is still running", second.running(), log[-3000:])
    c.check("the restarted backend logged no traceback", "Traceback" not in log, log[-3000:])
    c.assert_all()


def _wait(predicate: object, timeout: float) -> bool:
    import time

    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
