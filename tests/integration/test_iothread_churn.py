"""iothreads added and deleted over and over while the process is busy.

One QMP client adds an iothread (with polling parameters), changes one of
them with ``qom-set``, reads it back and deletes it, cycle after cycle,
while QMP load clients (``tests/qmpload.py``, whose cycle adds and deletes
iothreads of its own) run on other monitors. Afterwards the process has as
many threads (``/proc/PID/task``) and open fds (``/proc/PID/fd``) as before.

``make test`` runs 100 cycles next to 4 load clients; ``make soak``
(``QOMHOST_SOAK=1``) 1 000 next to 8.
"""

from __future__ import annotations

import os
import threading
import time

from hostproc import Processes, QmpConn, program, wait_until
from qmpload import Result, run_load, soak

CYCLES = 1000 if soak() else 100
LOAD_CLIENTS = 8 if soak() else 4


def counts(pid: int) -> tuple[int, int]:
    """(threads, open fds) of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def settled(pid: int) -> tuple[int, int]:
    """:func:`counts` once two readings 0.2 s apart agree."""
    last = counts(pid)
    while True:
        time.sleep(0.2)
        now = counts(pid)
        if now == last:
            return now
        last = now


def test_add_del_cycles_under_load_leak_nothing(procs: Processes) -> None:
    paths = [procs.workdir / f"m{i}.sock" for i in range(LOAD_CLIENTS + 1)]
    args = [a for p in paths for a in ("-qmp", f"unix:{p},server=on,wait=off")]
    proc = procs.start(program("qomhost"), args)
    proc.wait_listening(paths[-1])
    # Warm up: a first client and iothread start whatever the process starts
    # once (a helper thread of its own comes up after the listeners).
    with QmpConn.unix(paths[0]) as qmp:
        qmp.greet()
        assert qmp.execute("object-add", {"qom-type": "iothread", "id": "w"}) == {"return": {}}
        assert qmp.execute("object-del", {"id": "w"}) == {"return": {}}
    before = settled(proc.pid)

    load_done = threading.Event()
    load_result: list[Result] = []

    def load() -> None:
        specs = [f"unix:{p}" for p in paths[1:]]
        # Long enough to outlast the cycles; stopped by its count, not a clock.
        result, _seconds = run_load(specs, 20 * CYCLES)
        load_result.append(result)
        load_done.set()

    loader = threading.Thread(target=load)
    started = time.monotonic()
    with QmpConn.unix(paths[0]) as qmp:
        qmp.greet()
        loader.start()
        for i in range(CYCLES):
            ident = f"churn{i}"
            args_add = {"qom-type": "iothread", "id": ident, "poll-max-ns": i, "poll-grow": 2}
            assert qmp.execute("object-add", args_add) == {"return": {}}
            path = f"/objects/{ident}"
            set_args = {"path": path, "property": "poll-shrink", "value": i % 7}
            assert qmp.execute("qom-set", set_args) == {"return": {}}
            get_args = {"path": path, "property": "poll-shrink"}
            assert qmp.execute("qom-get", get_args) == {"return": i % 7}
            assert qmp.execute("object-del", {"id": ident}) == {"return": {}}
        churned = time.monotonic() - started
        under_load = not load_done.is_set()
        loader.join(600)
        assert load_result, "the load did not finish"
        result = load_result[0]
        assert result.errors == [], result.errors
        assert qmp.execute("query-iothreads") == {"return": []}
    wait_until(lambda: counts(proc.pid) == before, f"threads and fds back to {before}")
    print(
        f"\n{CYCLES} iothread add/del cycles in {churned:.1f} s next to {LOAD_CLIENTS} QMP load"
        f" clients ({'still running' if under_load else 'finished first'});"
        f" threads and fds before and after: {before}"
    )
    assert under_load, "the load ended before the cycles did"
