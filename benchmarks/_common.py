"""Shared helpers for the benchmarks: paths, statistics, machine facts, tables.

The benchmarks compare qomhost with ``qemu-system-x86_64`` measured in the
same run; absolute numbers on a shared VM drift, ratios within one run are
what counts.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
VENV_PYTHON = str(VENV_BIN / "python")
QOMHOST = str(VENV_BIN / "qomhost")
QEMU_NAME = "qemu-system-x86_64"
#: scratch space (ignored by git)
WORK = ROOT / "benchmarks" / ".work"


def qemu_binary() -> str:
    """The QEMU to compare with: ``$QEMU_BIN``, else ``qemu-system-x86_64`` on PATH."""
    found = os.environ.get("QEMU_BIN") or shutil.which(QEMU_NAME)
    if not found:
        raise SystemExit(f"{QEMU_NAME} not found on PATH (set QEMU_BIN)")
    return found


def python_env(*, bytecode_cache: bool = True) -> dict[str, str]:
    """The environment for Python children.

    By default bytecode is cached under :data:`WORK` (as an installed package
    has it compiled), whatever ``PYTHONDONTWRITEBYTECODE`` says here.
    """
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(WORK / "pycache")
    return env


def median(values: Sequence[float]) -> float:
    """The median of ``values``."""
    return statistics.median(values)


def p90(values: Sequence[float]) -> float:
    """The 90th percentile (the median of one value is that value)."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10)[-1]


def read_steal() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs from ``/proc/stat``."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    steal = fields[7] if len(fields) > 7 else 0
    return steal, sum(fields[:8])


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of CPU time the hypervisor stole between two :func:`read_steal` calls."""
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else 0.0


def load_average() -> str:
    """The 1-minute load average, as ``/proc/loadavg`` gives it."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return f.read().split()[0]
    except OSError:
        return "unknown"


def cpu_model() -> str:
    """The first ``model name`` in ``/proc/cpuinfo``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "unknown"


@dataclass(frozen=True)
class MachineFacts:
    """What the numbers were measured on."""

    nproc: int
    cpu: str
    kernel: str
    python: str
    qemu: str

    def lines(self) -> list[str]:
        """One ``- key: value`` Markdown line per fact."""
        return [
            f"- nproc: {self.nproc}",
            f"- CPU: {self.cpu}",
            f"- kernel: {self.kernel}",
            f"- Python (venv): {self.python}",
            f"- QEMU: {self.qemu}",
        ]


def machine_facts() -> MachineFacts:
    """Collect :class:`MachineFacts` for this host."""
    return MachineFacts(
        nproc=os.cpu_count() or 0,
        cpu=cpu_model(),
        kernel=platform.release(),
        python=_first_line([VENV_PYTHON, "-VV"]),
        qemu=_first_line([qemu_binary(), "--version"]),
    )


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def log(message: str) -> None:
    """Progress output, kept off stdout so that stdout is only the result."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
