"""Fixtures for tests that start qomhost, QEMU and other real peers as processes
(see ``tests/hostproc.py`` and, for the vhost-user backends, ``tests/peers.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent.parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from hostproc import procs, workdir  # noqa: E402
from peers import (  # noqa: E402
    dpdk_crypto,
    dpdk_vhost_crypto_program,
    qsd_blk,
    start_dpdk_vhost_crypto,
    start_qsd_blk,
)

__all__ = [
    "dpdk_crypto",
    "dpdk_vhost_crypto_program",
    "procs",
    "qsd_blk",
    "start_dpdk_vhost_crypto",
    "start_qsd_blk",
    "workdir",
]
