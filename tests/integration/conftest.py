"""Fixtures for tests that start qomhost and QEMU as real processes (see ``tests/hostproc.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent.parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from hostproc import procs, workdir  # noqa: E402

__all__ = ["procs", "workdir"]
