"""Test doubles for code that uses qomhost, as ``trio.testing`` is for trio.

* :mod:`qomhost.testing.qmp` -- an in-memory chardev and QMP/HMP clients
  attached to real monitors of a :class:`~qomhost.host.Host`, with no
  sockets and no event loop.
"""

from qomhost.testing.qmp import HmpTestClient, MemoryChardev, QmpProtocolError, QmpTestClient

__all__ = ["HmpTestClient", "MemoryChardev", "QmpProtocolError", "QmpTestClient"]
