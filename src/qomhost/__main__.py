"""``python -m qomhost``: the same as the ``qomhost`` command."""

import sys

from qomhost.cli.qomhost import main

# Messages are prefixed with the program name, as QEMU does with its argv[0].
sys.argv[0] = "qomhost"
main()
