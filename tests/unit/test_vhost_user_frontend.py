"""The frontend's conversations without sockets: the messages QEMU 7.2 sends.

The expected sequences were recorded from QEMU 7.2 with a Python backend
(``tests/differential/test_vhost_user_handshake.py`` compares the two live).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from qomhost.vhost_user.frontend import (
    ChannelError,
    Conversation,
    Ring,
    VhostDev,
    VhostUserError,
    expects_reply,
    read_failed,
)
from qomhost.vhost_user.protocol import (
    FLAGS_REPLY,
    U64,
    MemoryRegion,
    MemTable,
    Message,
    Request,
    VringState,
)

R = Request


def drive(
    conv: Conversation[object], answer: Callable[[Message], Message | None]
) -> tuple[list[Message], object]:
    """Run ``conv``, answering each request that wants a reply with ``answer``."""
    sent: list[Message] = []
    reply: Message | None = None
    try:
        msg = conv.send(None)
        while True:
            sent.append(msg)
            reply = answer(msg) if expects_reply(msg) else None
            msg = conv.send(reply)
    except StopIteration as stop:
        return sent, stop.value


def backend(features: int = 1 << 30, protocol: int = 0, queues: int = 1, slots: int = 8):
    def answer(msg: Message) -> Message | None:
        value = {
            R.GET_FEATURES: features,
            R.GET_PROTOCOL_FEATURES: protocol,
            R.GET_QUEUE_NUM: queues,
            R.GET_MAX_MEM_SLOTS: slots,
        }.get(msg.request, 0)
        return U64(msg.request, value, FLAGS_REPLY)

    return answer


def summary(sent: list[Message]) -> list[tuple[str, int, int, int]]:
    from qomhost.vhost_user.protocol import request_name

    return [(request_name(m.request), m.flags, len(m.payload()), len(m.fds)) for m in sent]


@pytest.fixture
def fds() -> list[int]:
    made: list[int] = []
    yield made
    for fd in made:
        os.close(fd)


def channel_fd(made: list[int]) -> Callable[[], int]:
    def make() -> int:
        fd = os.eventfd(0)
        made.append(fd)
        return fd

    return make


def test_qemu_sequence_all_features_queue_0_and_1(fds: list[int]) -> None:
    warnings: list[str] = []
    answer = backend(protocol=0x28AA9, queues=4)
    dev0 = VhostDev(0, 1, warn=warnings.append, backend_channel=channel_fd(fds))
    sent, _ = drive(dev0.init(), answer)
    assert summary(sent) == [
        ("GET_FEATURES", 1, 0, 0),
        ("GET_PROTOCOL_FEATURES", 1, 0, 0),
        ("SET_PROTOCOL_FEATURES", 1, 8, 0),
        ("GET_QUEUE_NUM", 1, 0, 0),
        ("GET_MAX_MEM_SLOTS", 1, 0, 0),
        ("SET_SLAVE_REQ_FD", 9, 0, 1),
        ("SET_OWNER", 1, 0, 0),
        ("GET_FEATURES", 1, 0, 0),
        ("SET_VRING_CALL", 1, 8, 1),
        ("SET_VRING_ERR", 1, 8, 1),
    ]
    assert sent[2].payload() == bytes.fromhex("a988000000000000")
    assert dev0.max_queues == 4 and dev0.max_mem_slots == 8
    assert warnings == [
        "vhost-user backend supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not."
    ]
    dev1 = VhostDev(1, 1, warn=warnings.append, backend_channel=channel_fd(fds))
    sent, _ = drive(dev1.init(), answer)
    assert [s[0] for s in summary(sent)] == [
        "GET_FEATURES",
        "GET_PROTOCOL_FEATURES",
        "SET_PROTOCOL_FEATURES",
        "GET_MAX_MEM_SLOTS",
        "GET_FEATURES",
        "SET_VRING_CALL",
        "SET_VRING_ERR",
    ]
    assert sent[-1].payload() == (1).to_bytes(8, "little")
    dev0.close()
    dev1.close()


def test_without_protocol_features() -> None:
    dev = VhostDev(0, 1)
    sent, _ = drive(dev.init(), backend(features=0))
    assert [s[0] for s in summary(sent)] == [
        "GET_FEATURES",
        "SET_OWNER",
        "GET_FEATURES",
        "SET_VRING_CALL",
        "SET_VRING_ERR",
    ]
    dev.close()


def test_wrong_reply_type() -> None:
    dev = VhostDev(0, 1)

    def answer(msg: Message) -> Message:
        return U64(R.GET_PROTOCOL_FEATURES, 0, FLAGS_REPLY)

    with pytest.raises(VhostUserError) as info:
        drive(dev.init(), answer)
    assert info.value.lines == [
        "Received unexpected msg type. Expected 1 received 15",
        "vhost_backend_init failed: Protocol error",
    ]


@pytest.mark.parametrize(
    ("failing", "lines"),
    [
        (R.GET_FEATURES, ["vhost_backend_init failed: Protocol error"]),
        (R.SET_OWNER, ["vhost_set_owner failed: Invalid argument"]),
        (
            R.SET_VRING_CALL,
            [
                "vhost_set_vring_call failed: Invalid argument (22)",
                "Failed to initialize virtqueue 0: Invalid argument",
            ],
        ),
    ],
)
def test_failures_are_chained_as_qemu_prints_them(failing: int, lines: list[str]) -> None:
    """The driver throws the I/O error in; the stage adds QEMU's next lines."""
    dev = VhostDev(0, 1)
    conv = dev.init()
    answer = backend(features=0)
    msg = conv.send(None)
    with pytest.raises(VhostUserError) as info:
        while True:
            if msg.request == failing:
                msg = conv.throw(read_failed(msg.request))
            else:
                msg = conv.send(answer(msg) if expects_reply(msg) else None)
    assert info.value.lines[1:] == lines
    dev.close()


def test_start_and_stop(fds: list[int]) -> None:
    dev = VhostDev(0, 1, backend_channel=channel_fd(fds))
    drive(dev.init(), backend(features=(1 << 30) | (1 << 32), protocol=1 << 3))
    kick, call = os.eventfd(0), os.eventfd(0)
    fds += [kick, call]
    table = MemTable((MemoryRegion(0, 1 << 20, 0x7F0000000000, 0, kick),))
    ring = Ring(0, 256, 0x7F0000001000, 0x7F0000002000, 0x7F0000003000, kick, call, log=0x3000)
    sent, _ = drive(dev.start((1 << 32) | (1 << 28), table, [ring]), backend())
    assert summary(sent) == [
        ("SET_FEATURES", 1, 8, 0),
        ("SET_MEM_TABLE", 9, 40, 1),
        ("SET_VRING_NUM", 1, 8, 0),
        ("SET_VRING_BASE", 1, 8, 0),
        ("SET_VRING_ADDR", 1, 40, 0),
        ("SET_VRING_KICK", 1, 8, 1),
        ("SET_VRING_CALL", 1, 8, 1),
        ("SET_VRING_ENABLE", 1, 8, 0),
    ]
    # the backend did not offer bit 28, and bit 30 goes back when negotiated
    assert sent[0].payload() == ((1 << 32) | (1 << 30)).to_bytes(8, "little")

    def base(msg: Message) -> Message:
        assert isinstance(msg, VringState)
        return VringState(R.GET_VRING_BASE, msg.index, 17, FLAGS_REPLY)

    sent, bases = drive(dev.stop([0]), base)
    assert [s[0] for s in summary(sent)] == ["SET_VRING_ENABLE", "GET_VRING_BASE"]
    assert bases == [17]
    dev.close()


def test_start_with_configure_mem_slots_adds_each_region(fds: list[int]) -> None:
    # QEMU 7.2 sends no SET_MEM_TABLE once CONFIGURE_MEM_SLOTS (bit 15) is
    # negotiated: one ADD_MEM_REG per region, each acknowledged (REPLY_ACK)
    dev = VhostDev(0, 1, backend_channel=channel_fd(fds))
    drive(dev.init(), backend(features=(1 << 30) | (1 << 32), protocol=(1 << 3) | (1 << 15)))
    kick, call, mem0, mem1 = (os.eventfd(0) for _ in range(4))
    fds += [kick, call, mem0, mem1]
    table = MemTable(
        (
            MemoryRegion(0, 1 << 20, 0x7F0000000000, 0, mem0),
            MemoryRegion(1 << 20, 1 << 20, 0x7F0000100000, 0, mem1),
        )
    )
    ring = Ring(0, 256, 0x7F0000001000, 0x7F0000002000, 0x7F0000003000, kick, call)
    sent, _ = drive(dev.start(1 << 32, table, [ring]), backend())
    assert summary(sent)[:4] == [
        ("SET_FEATURES", 1, 8, 0),
        ("ADD_MEM_REG", 9, 40, 1),
        ("ADD_MEM_REG", 9, 40, 1),
        ("SET_VRING_NUM", 1, 8, 0),
    ]
    assert [m.fds for m in sent[1:3]] == [(mem0,), (mem1,)]
    dev.close()


def test_crypto_session_needs_the_feature() -> None:
    dev = VhostDev(0, 1)
    drive(dev.init(), backend(features=0))
    with pytest.raises(VhostUserError, match="vhost-user trying to send unhandled ioctl"):
        drive(dev.create_crypto_session(bytes(632)), backend())
    dev.close()


def test_channel_error_is_a_vhost_user_error() -> None:
    assert issubclass(ChannelError, VhostUserError)
    assert read_failed(1).lines == [
        "Failed to read msg header. Read -1 instead of 12. Original request 1."
    ]
