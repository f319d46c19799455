"""Run every benchmark and rewrite ``benchmarks/RESULTS.md``.

Usage (from the repository root)::

    .venv/bin/python benchmarks/run.py          # about 10 minutes, 5 of them guest boots
    .venv/bin/python benchmarks/run.py --rounds 10 --trials 2 --seconds 1 \
        --guest-rounds 1 --guest-seconds 1      # quick look

Nothing else should run meanwhile: the benchmarks time processes, and on a
shared VM even the reference moves. Only ratios within one run mean much.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import subprocess
import sys
from pathlib import Path

import authz
import cryptodev
import guest_crypto
import iothread_idle
import iothread_latency
import qmp_rate
import sev_measure
import startup
from _common import (
    QOMHOST,
    ROOT,
    VENV_PYTHON,
    load_average,
    log,
    machine_facts,
    python_env,
    table,
)

RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def import_profile(runs: int = 7, limit: int = 12) -> str:
    """What qomhost imports on its way to the quit reply (``-X importtime``).

    Each module's time is its minimum over ``runs`` runs, which filters out
    the moments another process had the CPU.
    """
    argv = [VENV_PYTHON, "-X", "importtime", QOMHOST, *startup.BASE, *startup.PLAIN]
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    for _ in range(runs):
        proc = subprocess.run(
            argv, input=startup.QMP_INPUT, capture_output=True, env=python_env(), check=True
        )
        for line in proc.stderr.decode().splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            us_own, us_total, name = line[len("import time:") :].split("|")
            name = name.strip()
            own[name] = min(own.get(name, 1 << 62), int(us_own))
            total[name] = min(total.get(name, 1 << 62), int(us_total))
    ours = sum(us for name, us in own.items() if name.startswith("qomhost"))
    head = (
        f"{len(own)} modules imported, {sum(1 for n in own if n.startswith('qomhost'))} of them "
        f"qomhost's. Own import time, minimum of {runs} runs (`-X importtime` inflates it): "
        f"{sum(own.values()) / 1000:.1f} ms in all, {ours / 1000:.1f} ms in qomhost's modules. "
        "The largest:"
    )
    top = sorted(own.items(), key=lambda item: item[1], reverse=True)[:limit]
    body = table(
        ["module", "own µs", "with its imports µs"],
        [[name, str(us), str(total[name])] for name, us in top],
    )
    return head + "\n\n" + body


def iothread_section(
    latency: iothread_latency.LatencyResult, idle: iothread_idle.IdleResult
) -> list[str]:
    """The iothread section: request latency through a poll handler, idle cost."""
    return [
        "## iothreads: request latency through a poll handler, and the cost of polling",
        "",
        "Measured by `.venv/bin/python benchmarks/iothread_latency.py` and "
        "`.venv/bin/python benchmarks/iothread_idle.py` (their docstrings describe the "
        "set-ups; uvloop comes with `.venv/bin/pip install -e '.[bench]'`). The machine has "
        "2 vCPUs shared with other tenants: how fast a sleeping thread wakes changes by 5× "
        "from minute to minute (the kernel's and the hypervisor's own idle polling), so "
        "only ratios between rows of one run mean much.",
        "",
        "The client writes a request into a shared-memory ring and kicks an eventfd; the "
        "server, a poll handler on an iothread "
        "(`set_event_notifier(notifier, on_event, io_poll=<reads the ring head>)`) or an "
        "asyncio/uvloop `add_reader` callback, answers through a second ring (and kicks a "
        'second eventfd if the client sleeps). In the "client skips kicks while polled" '
        "row the handler also has `io_poll_begin`/`io_poll_end`, which keep a `NO_KICK` "
        "word set while the iothread polls, and the client skips its kick meanwhile, as a "
        "virtio driver reading `VRING_USED_F_NO_NOTIFY` does. Every 4 µs of polling the "
        "loop calls `sched_yield()`, which lets go of the GIL and the CPU, and while "
        "another thread of the process is seen to need the GIL it also pauses without it "
        'for about 10 µs (`qomhost.aio.gil`); "sched_yield only" rows take out the pauses, '
        '"no GIL yield" rows both (`AioContext.poll_yield_ns = 0`). The `spin` client '
        "busy-waits for the answer, so its round trip is its own part (writing, publishing and "
        "kicking, measured apart: no server can answer faster) and the server's reaction: "
        "that is what the goal (polling p50 at most 0.2× the best blocking loop's) is "
        "about. The `block` client checks the ring once and then sleeps in epoll; whenever "
        "the answer is not there yet, its round trip includes its own wake-up, which no "
        "server can remove. The client runs in Python (`_ring.py`) and, with the same "
        "protocol, in C (`ring_client.c`), whose own part is the kick's system call alone. "
        'The two "floor" rows are loops that only poll the ring and never block (so the '
        "client never kicks): the same handler called by a bare Python loop, and a C loop "
        "(`ring_server.c`); they show what qomhost's event loop adds to a polled answer, "
        "what Python costs, and whether the goal's bound is within reach here at all. "
        "In-process, the client thread and the server's thread run where the scheduler "
        "puts them, pinned to one CPU, and pinned to one CPU each: a thread on the "
        "poller's CPU gets the GIL with the CPU, one on the other CPU needs the pauses. "
        "The scheduler seldom moves either thread during a trial, so a trial left to it "
        'would run where the trial before left the threads; the "as scheduled" trials '
        "therefore start, in turn, on one CPU and on two "
        f"({iothread_latency.SETTLE_ROUND_TRIPS} unmeasured round trips pinned), and the "
        "table counts the trials that ended with both threads on one CPU: a blocking "
        "pair is seldom runnable at once and often stays on one CPU, while a polling loop "
        "keeps its CPU busy, and when its client wakes beside it the load balancer moves "
        "one of the two to the idle CPU.",
        "",
        "### Round trips",
        "",
        latency.markdown(),
        "",
        "### An idle polling iothread beside a CPU-bound main thread",
        "",
        idle.markdown(),
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="start-up rounds (30)")
    parser.add_argument("--seconds", type=float, default=2.0, help="QMP trial length (2)")
    parser.add_argument("--trials", type=int, default=5, help="QMP trials (5)")
    parser.add_argument("--clients", default="2,8", help="parallel QMP clients (2,8)")
    parser.add_argument("--latency-trials", type=int, default=9, help="iothread latency trials (9)")
    parser.add_argument(
        "--round-trips", type=int, default=1500, help="iothread round trips per trial (1500)"
    )
    parser.add_argument("--idle-trials", type=int, default=5, help="idle iothread trials (5)")
    parser.add_argument("--crypto-rounds", type=int, default=5, help="cryptodev rounds (5)")
    parser.add_argument("--sev-rounds", type=int, default=7, help="SEV measurement rounds (7)")
    parser.add_argument(
        "--guest-rounds", type=int, default=3, help="guest AF_ALG boots per backend (3)"
    )
    parser.add_argument(
        "--guest-seconds", type=float, default=5.0, help="guest AF_ALG seconds per size (5)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="file to write")
    args = parser.parse_args()
    clients = tuple(int(n) for n in args.clients.split(",") if n)

    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    command = shlex.join([".venv/bin/python", script, *sys.argv[1:]])
    facts = machine_facts()
    started = datetime.datetime.now(datetime.UTC)

    load_before = load_average()
    log("startup ...")
    start = startup.run(args.rounds)
    log("qmp_rate ...")
    rate = qmp_rate.run(args.seconds, args.trials, clients)
    log("authz ...")
    authz_result = authz.run()
    log("iothread latency ...")
    latency = iothread_latency.run(args.latency_trials, args.round_trips)
    log("idle iothread ...")
    idle = iothread_idle.run(args.idle_trials)
    log("cryptodev ...")
    crypto_result = cryptodev.run(args.crypto_rounds)
    log("guest_crypto ...")
    guest_result = guest_crypto.run(args.guest_rounds, args.guest_seconds)
    log("sev_measure ...")
    sev_result = sev_measure.run(args.sev_rounds)
    log("import profile ...")
    imports = import_profile()
    load_after = load_average()

    text = "\n".join(
        [
            "# Benchmark results",
            "",
            f"Written by `{command}` (run from the repository root), started "
            f"{started:%Y-%m-%d %H:%M} UTC. Rerun that command to refresh this file; "
            "compare ratios, not absolute numbers, between runs.",
            "",
            "## Machine",
            "",
            *facts.lines(),
            f"- load average (1 min) before / after the run: {load_before} / {load_after}",
            "",
            "## Start-up: exec to the reply to `quit`",
            "",
            "`PROG -machine none -nodefaults -display none -qmp stdio` with "
            "`-object secret,id=sec0,data=letmein,format=raw` (plain secret), or that plus "
            "a 32-byte key secret and an AES-256-CBC encrypted secret using it "
            "(`keyid=key0,iv=...,format=base64`), which makes qomhost import "
            "`cryptography`. Stdin: `qmp_capabilities`, then `quit`; both `return` "
            "replies are checked. Python runs with its bytecode cache on (under "
            "`benchmarks/.work/`), as an installed package has it, except in the line "
            "that says otherwise.",
            "",
            start.markdown(),
            "",
            "## QMP round trips: `qom-get /objects/sec0 data`",
            "",
            "Both programs run at once with the plain secret and one "
            "`-qmp unix:PATH,server=on,wait=off` per client. A raw socket client sends one "
            "command and reads the reply line before the next; N clients are N processes "
            "on N monitors.",
            "",
            rate.markdown(),
            "",
            "## authz: `authz-list` decisions, rebuilds and `authz-list-file` refresh",
            "",
            "In-process, by `.venv/bin/python benchmarks/authz.py` (its docstring describes "
            "the rules and identities).",
            "",
            authz_result.markdown(),
            "",
            *iothread_section(latency, idle),
            "## cryptodev: AES-256-CBC through vhost-user, against in-process",
            "",
            "By `.venv/bin/python benchmarks/cryptodev.py` (its docstring describes the "
            "ways): `cryptodev-vhost-user` on an iothread, with `qomhost-vhost-user-crypto` "
            "as a separate process or on a thread of this process, one request at a time "
            "and batched (`encrypt_many`), against `cryptodev-backend-builtin` and "
            "`cryptography` called directly.",
            "",
            crypto_result.markdown(),
            "",
            "## Guest AF_ALG through virtio-crypto",
            "",
            "A Linux guest under QEMU 7.2 encrypting through its `virtio_crypto` driver, "
            "by `.venv/bin/python benchmarks/guest_crypto.py` (its docstring describes the "
            "guest and the backends).",
            "",
            guest_result.markdown(),
            "",
            "## SEV launch measurement: qomhost against sev-snp-measure",
            "",
            "In-process and as commands, by `.venv/bin/python benchmarks/sev_measure.py`.",
            "",
            sev_result.markdown(),
            "",
            "## Where qomhost's start-up goes",
            "",
            imports,
            "",
        ]
    )
    args.output.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
