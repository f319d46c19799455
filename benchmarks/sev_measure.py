"""SEV launch digest: qomhost against sev-snp-measure, in the same run.

The inputs are the issue's: a 2 MiB firmware image with a kernel hashes
table, a 30 MiB kernel and a 60 MiB initrd (random bytes; the digest does
not care what they hold). Two ways are timed, alternating round by round:

* in-process: ``qomhost.sev.measure.launch_digest`` against
  ``sevsnpmeasure.guest.sev_calc_launch_digest``, both called from this
  process (the files are in the page cache after a first warm-up round);
* command line: ``qomctl sev measure`` against ``sev-snp-measure --mode sev``,
  each a fresh process, start-up included.

Every round checks that both give the same digest. Usage::

    .venv/bin/python benchmarks/sev_measure.py             # 7 rounds, ~30 s
    .venv/bin/python benchmarks/sev_measure.py --rounds 2  # smoke run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import log, median, python_env, table

from qomhost.sev.measure import launch_digest
from qomhost.testing.sev_firmware import build_firmware

BIN = Path(sys.executable).parent
MIB = 1 << 20
SIZES = {"firmware": 2 * MIB, "kernel": 30 * MIB, "initrd": 60 * MIB}
APPEND = "console=ttyS0 root=/dev/vda1 ro"


class SevMeasureResult:
    """Per way of running: the two programs' median seconds and their ratio."""

    def __init__(self, rows: dict[str, tuple[list[float], list[float]]], rounds: int) -> None:
        self.rows = rows
        self.rounds = rounds

    def markdown(self) -> str:
        lines = []
        for name, (ours, peer) in self.rows.items():
            m_ours, m_peer = median(ours), median(peer)
            lines.append(
                [
                    name,
                    f"{m_ours * 1000:.0f} ms",
                    f"{m_peer * 1000:.0f} ms",
                    f"{m_peer / m_ours:.2f}x",
                ]
            )
        head = ["launch digest (2 MiB firmware, 30 MiB kernel, 60 MiB initrd)"]
        head += ["qomhost (median)", "sev-snp-measure (median)", "qomhost faster by"]
        return table(head, lines) + f"\n\n{self.rounds} rounds; the digests were equal in each."


def _make_inputs(directory: Path) -> dict[str, str]:
    paths = {}
    for name, size in SIZES.items():
        data = (
            build_firmware(size, hashes_area=(0x80A000, 0x400))
            if name == "firmware"
            else os.urandom(size)
        )
        path = directory / name
        path.write_bytes(data)
        paths[name] = str(path)
    return paths


def _timed(fn: Callable[[], str]) -> tuple[float, str]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def run(rounds: int = 7) -> SevMeasureResult:
    """Time both programs both ways; raise if a digest ever differs."""
    from sevsnpmeasure.guest import sev_calc_launch_digest

    peer_cli = str(BIN / "sev-snp-measure")
    with tempfile.TemporaryDirectory(prefix="sev-bench-") as tmp:
        f = _make_inputs(Path(tmp))
        ours_cli = [str(BIN / "qomctl"), "sev", "measure", "--ovmf", f["firmware"]]
        ours_cli += ["--kernel", f["kernel"], "--initrd", f["initrd"], "--append", APPEND]
        peer_argv = [peer_cli, "--mode", "sev", "--output-format", "hex", "--ovmf", f["firmware"]]
        peer_argv += ["--kernel", f["kernel"], "--initrd", f["initrd"], "--append", APPEND]
        env = python_env()

        def ours_lib() -> str:
            return launch_digest(f["firmware"], f["kernel"], f["initrd"], APPEND).digest.hex()

        def peer_lib() -> str:
            return bytes(
                sev_calc_launch_digest(f["firmware"], f["kernel"], f["initrd"], APPEND)
            ).hex()

        def ours_proc() -> str:
            out = subprocess.run(ours_cli, capture_output=True, text=True, env=env, check=True)
            line = next(x for x in out.stdout.splitlines() if x.startswith("launch digest: "))
            return line.split(": ", 1)[1]

        def peer_proc() -> str:
            out = subprocess.run(peer_argv, capture_output=True, text=True, env=env, check=True)
            return out.stdout.strip()

        ways = {
            "in-process": (ours_lib, peer_lib),
            "command line (a process each)": (ours_proc, peer_proc),
        }
        rows: dict[str, tuple[list[float], list[float]]] = {w: ([], []) for w in ways}
        for name, (ours, peer) in ways.items():
            ours(), peer()  # warm-up: page cache and imports
            for i in range(rounds):
                # Alternate who goes first, so neither always meets a warmer cache.
                pair = [(0, ours), (1, peer)] if i % 2 == 0 else [(1, peer), (0, ours)]
                digests: dict[int, str] = {}
                for slot, fn in pair:
                    seconds, digests[slot] = _timed(fn)
                    rows[name][slot].append(seconds)
                if digests[0] != digests[1]:
                    raise AssertionError(f"{name}: digests differ: {digests}")
            log(f"sev_measure: {name} done")
        return SevMeasureResult(rows, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per way (7)")
    args = parser.parse_args()
    sys.stdout.write(run(args.rounds).markdown() + "\n")


if __name__ == "__main__":
    main()
