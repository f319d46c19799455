"""Awaiting work on an :class:`~qomhost.aio.context.AioContext` from asyncio.

This module imports :mod:`asyncio`, which the host itself never does
(importing it costs more than QEMU's whole start-up); library code that
lives in asyncio imports it when it needs it::

    from qomhost.aio.asyncio_bridge import run_on, run_in_executor

    io = host.add_object("iothread", "io1")
    value = await run_on(io.context, lambda: compute_in_iothread())
    data = await run_in_executor(io.context, blocking_read, path)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from qomhost.aio.context import AioContext

__all__ = ["run_in_executor", "run_on", "wait_readable"]

T = TypeVar("T")


async def run_on(context: AioContext, fn: Callable[[], T]) -> T:
    """Run ``fn()`` in ``context``'s thread and await its result."""
    return await asyncio.wrap_future(context.submit(fn))


async def run_in_executor(context: AioContext, fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn(*args)`` on ``context``'s worker pool and await it."""
    return await asyncio.wrap_future(context.run_in_executor(fn, *args))


async def wait_readable(context: AioContext, fd: int) -> None:
    """Wait until ``context``'s loop sees ``fd`` readable (once)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    fired = False

    def wake() -> None:
        if not done.done():  # cancelled meanwhile
            done.set_result(None)

    def ready() -> None:
        nonlocal fired
        fired = True
        context.set_fd_handler(fd, None)
        loop.call_soon_threadsafe(wake)

    context.schedule(lambda: context.set_fd_handler(fd, ready))
    try:
        await done
    finally:
        # Cancelling the wait cancels ``done`` too, so only ``fired`` tells
        # whether the handler is still registered.
        if not fired:
            context.schedule(lambda: context.set_fd_handler(fd, None))
