#!/usr/bin/env python3
"""Run the differential cases against QEMU only and print what QEMU does.

    .venv/bin/python tests/differential/record.py                 # every case
    .venv/bin/python tests/differential/record.py 'secret-aes-*'  # by name (glob)
    .venv/bin/python tests/differential/record.py --masked        # as compared
    .venv/bin/python tests/differential/record.py --repeat 3      # check determinism
    .venv/bin/python tests/differential/record.py --list

Output lines are Python byte-string reprs without the quotes, so ``\\r`` and
escape sequences are visible.  ``{tmp}`` stands for the case's temporary
directory.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import CASES
from harness import (
    QEMU_NAME,
    Case,
    Outcome,
    Prepared,
    find_qemu,
    prepare,
    run_one,
    split_lines,
    visible,
)


def render(case: Case, outcome: Outcome, masked: bool) -> str:
    out = [f"=== {case.name}", f"$ {QEMU_NAME} {' '.join(case.args)}"]
    if case.note:
        out.append(f"# {case.note}")
    for name in case.files:
        out.append(f"# file {{tmp}}/{name}: {case.files[name]!r}")
    for line in split_lines(case.stdin_bytes("{tmp}")):
        out.append(f"stdin> {visible(line)}")
    if outcome.error is not None:
        out.append(f"ERROR {outcome.error}")
        return "\n".join(out)
    if masked:
        prepared = prepare(outcome, case)
        stdout, stderr = prepared.stdout, split_lines(prepared.stderr)
    else:
        stdout, stderr = split_lines(outcome.stdout), split_lines(outcome.stderr)
    status = "TIMEOUT" if outcome.timed_out else str(outcome.status)
    out.append(f"exit {status}  ({outcome.elapsed:.2f}s)")
    out.extend(f"stdout> {visible(line)}" for line in stdout)
    out.extend(f"stderr> {visible(line)}" for line in stderr)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("patterns", nargs="*", help="case name globs (default: all)")
    parser.add_argument("--masked", action="store_true", help="print output as compared")
    parser.add_argument("--repeat", type=int, default=1, help="run N times, report changes")
    parser.add_argument("--list", action="store_true", help="only list case names")
    parser.add_argument("--jobs", type=int, default=4, help="cases run in parallel")
    opts = parser.parse_args(argv)

    cases = [
        c
        for c in CASES
        if not opts.patterns or any(fnmatch.fnmatch(c.name, p) for p in opts.patterns)
    ]
    if opts.list:
        print("\n".join(c.name for c in cases))
        return 0
    qemu = find_qemu()
    if qemu.executable is None:
        print(qemu.missing, file=sys.stderr)
        return 2

    with ThreadPoolExecutor(max_workers=opts.jobs) as pool:
        runs = [list(pool.map(lambda c: run_one(qemu, c), cases)) for _ in range(opts.repeat)]

    bad = 0
    for i, case in enumerate(cases):
        first = runs[0][i]
        print(render(case, first, opts.masked))
        if first.timed_out or first.error is not None:
            bad += 1
        reference: Prepared = prepare(first, case)
        for again in runs[1:]:
            other = prepare(again[i], case)
            if other != reference:
                bad += 1
                print(f"!!! {case.name}: a later run differs (after masking):")
                print(render(case, again[i], masked=True))
                break
        print()
    print(f"{len(cases)} cases, {bad} timed out, failed to start or were not deterministic")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
