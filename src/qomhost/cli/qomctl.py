"""``qomctl``: tools QEMU does not ship (filled in below)."""

from __future__ import annotations

import sys


def main() -> None:
    """Console entry point."""
    sys.exit(0)
