"""``aio-max-batch`` as batching handlers see it (``AioContext.batch_limit``)."""

from __future__ import annotations

from qomhost.aio.context import DEFAULT_MAX_BATCH
from qomhost.host import Host


def test_batch_limit_follows_aio_max_batch() -> None:
    host = Host()
    io = host.add_object("iothread", "io1")
    try:
        assert io.context is not None
        # 0 means the engine's own default, as linux-aio's 32 in QEMU.
        assert io.context.batch_limit() == DEFAULT_MAX_BATCH == 32
        assert io.context.batch_limit(default=8) == 8
        io.set_property_json("aio-max-batch", 5)
        assert io.context.batch_limit() == 5
        io.set_property_string("aio-max-batch", "0x10")
        assert io.context.batch_limit(default=8) == 16
    finally:
        host.del_object("io1")


def test_main_loop_sets_the_main_context() -> None:
    host = Host()
    host.add_object("main-loop", "ml", aio_max_batch=7)
    assert host.context.batch_limit() == 7
