"""The frontend's reply path against a hostile vhost-user backend, fuzzed.

A real unix socket connects a :class:`~qomhost.vhost_user.frontend.Channel`
(over a socket chardev) to a "backend" that is only the test: it puts its
replies in the socket before the frontend asks anything -- good ones up to
some point, then arbitrary bytes, a reply cut short, one with the wrong
flags, the wrong request number or size, an oversized header, or fds
attached where no reply carries any -- and then hangs up or goes silent.

Whatever it sends, a conversation either succeeds or fails with one of the
texts QEMU 7.2 prints (or, where QEMU would wait forever or accept, one of
qomhost's own); the connection is then dropped; nothing hangs longer than
the reply timeout; and no descriptor is left open.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostproc import own_fds, short_tmpdir
from qomhost.aio.context import AioContext
from qomhost.chardev.socket import ChardevSocket, SocketAddress
from qomhost.errors import QemuError
from qomhost.host import Host
from qomhost.objects.cryptodev.base import CryptoDevError
from qomhost.objects.cryptodev.vhost_user import CryptoDevBackendVhostUser
from qomhost.vhost_user.frontend import Channel, VhostDev, VhostUserError
from qomhost.vhost_user.protocol import (
    FLAGS_REPLY,
    U64,
    CryptoSession,
    ProtocolFeature,
    Request,
)

#: what the backend offers: enough for every reply kind of the handshake
PROTOCOL = (
    (1 << ProtocolFeature.MQ)
    | (1 << ProtocolFeature.REPLY_ACK)
    | (1 << ProtocolFeature.SLAVE_REQ)
    | (1 << ProtocolFeature.CRYPTO_SESSION)
    | (1 << ProtocolFeature.CONFIGURE_MEM_SLOTS)
)
#: the good replies, in the order QEMU 7.2's handshake (then one session) reads them
GOOD = [
    U64(Request.GET_FEATURES, 1 << 30, FLAGS_REPLY),
    U64(Request.GET_PROTOCOL_FEATURES, PROTOCOL, FLAGS_REPLY),
    U64(Request.GET_QUEUE_NUM, 1, FLAGS_REPLY),
    U64(Request.GET_MAX_MEM_SLOTS, 8, FLAGS_REPLY),
    U64(Request.SET_SLAVE_REQ_FD, 0, FLAGS_REPLY),  # the REPLY_ACK
    U64(Request.GET_FEATURES, 1 << 30, FLAGS_REPLY),
    CryptoSession(bytes(632), FLAGS_REPLY),
]
REPLY_TIMEOUT = 0.2

#: the first line of every failure: QEMU's texts, then qomhost's where QEMU
#: has none (it waits forever for a reply, and never checks a reply's fds)
TEXTS = re.compile(
    "|".join(
        [
            r"Failed to read msg header\. Flags 0x[0-9a-f]+ instead of 0x5\.",
            r"Failed to read msg header\. Size \d+ exceeds the maximum 632\.",
            r"Failed to read msg header\. Read -1 instead of 12\. Original request \d+\.",
            r"Received unexpected msg type\. Expected \d+ received \d+",
            r"Received bad msg size\.",
            r"Received bad msg ack for request \d+: \d+",
            r"Failed to write msg\. Wrote -1 instead of \d+\.",
            r"vhost-user trying to send unhandled ioctl",
            r"No reply to vhost-user request \d+ in 0\.2 s",
            r"Invalid fds in reply to request: \d+",
        ]
    )
)


#: failures of a well-formed reply's check: the stream is still in step,
#: and the connection stays up (as in QEMU, whose caller decides)
CHECKS = re.compile(
    r"Received unexpected msg type\. Expected \d+ received \d+|Received bad msg size\."
    r"|Received bad msg ack for request \d+: \d+|vhost-user trying to send unhandled ioctl"
)


@pytest.fixture(scope="module")
def listener() -> Iterator[tuple[socket.socket, str]]:
    with short_tmpdir() as tmp:
        path = str(Path(tmp) / "hostile.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(4)
        try:
            yield sock, path
        finally:
            sock.close()


@st.composite
def bad_replies(draw: st.DrawFn) -> tuple[int, bytes, int, bool]:
    """(how many good replies first, the bad bytes, fds to attach, hang or hang up)."""
    good = draw(st.integers(0, len(GOOD) - 1))
    right = GOOD[good].encode()
    kind = draw(
        st.sampled_from(["random", "truncated", "flags", "oversized", "request", "size", "fds"])
    )
    nfds = 0
    if kind == "random":
        data = draw(st.binary(max_size=700))
    elif kind == "truncated":
        data = right[: draw(st.integers(0, len(right) - 1))]
    elif kind == "flags":
        flags = draw(st.integers(0, 0xFFFFFFFF).filter(lambda f: f != FLAGS_REPLY))
        data = right[:4] + struct.pack("<I", flags) + right[8:]
    elif kind == "oversized":
        size = draw(st.integers(633, 0xFFFFFFFF))
        data = right[:8] + struct.pack("<I", size) + draw(st.binary(max_size=700))
    elif kind == "request":
        request = draw(st.integers(0, 0xFFFFFFFF).filter(lambda r: r != GOOD[good].request))
        data = struct.pack("<I", request) + right[4:]
    elif kind == "size":
        payload = draw(st.binary(max_size=632).filter(lambda p: len(p) != len(right) - 12))
        data = right[:8] + struct.pack("<I", len(payload)) + payload
    else:
        data = right
        nfds = draw(st.integers(1, 3))
    return good, data, nfds, draw(st.booleans())


def run_against(listener: tuple[socket.socket, str], script: tuple[int, bytes, int, bool]) -> None:
    good, data, nfds, hang = script
    server, path = listener
    context = AioContext("hostile")
    chardev = ChardevSocket("chardev-socket")
    chardev.label = "hostile"
    chardev.address = SocketAddress(path=path)
    chardev.open()
    peer, _ = server.accept()
    dev = VhostDev(0, 1)
    channel = Channel(chardev, context, reply_timeout=REPLY_TIMEOUT)
    try:
        peer.sendall(b"".join(m.encode() for m in GOOD[:good]))
        if nfds:
            fds = [os.eventfd(0) for _ in range(nfds)]
            socket.send_fds(peer, [data], fds)
            for fd in fds:
                os.close(fd)  # the frontend has its own copies now
        else:
            peer.sendall(data)
        if not hang:
            peer.shutdown(socket.SHUT_WR)
        dev.backend_channel = channel.backend_channel
        chardev.attach(context, channel)
        started = time.monotonic()
        try:
            channel.run(dev.init())
            if good == len(GOOD) - 1:
                channel.run(dev.create_crypto_session(bytes(632)))
        except VhostUserError as err:
            assert TEXTS.fullmatch(err.lines[0]), err.lines
            if not CHECKS.fullmatch(err.lines[0]):
                # the stream cannot be read on: a malformed reply, or none
                assert not channel.connected, "the connection outlived a broken stream"
        else:
            assert channel.connected
        assert time.monotonic() - started < 10 * REPLY_TIMEOUT + 1
    finally:
        dev.close()
        channel.close()
        chardev.finalize()
        peer.close()
        context.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=bad_replies())
def test_hostile_replies(
    listener: tuple[socket.socket, str], script: tuple[int, bytes, int, bool]
) -> None:
    before = own_fds()
    run_against(listener, script)
    assert own_fds() == before, "descriptors leaked"


@pytest.mark.parametrize("hang", [False, True])
def test_a_reply_with_fds_in_a_good_stream(listener: tuple[socket.socket, str], hang: bool) -> None:
    """Good replies first, then the GET_QUEUE_NUM reply carrying two fds."""
    before = own_fds()
    run_against(listener, (2, GOOD[2].encode(), 2, hang))
    assert own_fds() == before


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=bad_replies().filter(lambda script: not script[3]))
def test_hostile_backend_and_the_cryptodev_object(
    listener: tuple[socket.socket, str], script: tuple[int, bytes, int, bool]
) -> None:
    """A library host: the object is not made, or it fails the session and,
    if the connection went with it, is not ready."""
    good, data, nfds, _hang = script
    server, path = listener
    before = own_fds()
    host = Host()
    peer: socket.socket | None = None
    try:
        chardev = ChardevSocket("chardev-socket")
        chardev.label = "c0"
        chardev.address = SocketAddress(path=path)
        chardev.open()
        host.add_chardev(chardev, "c0")
        peer, _ = server.accept()
        peer.sendall(b"".join(m.encode() for m in GOOD[:good]))
        fds = [os.eventfd(0) for _ in range(nfds)]
        if fds:
            socket.send_fds(peer, [data], fds)
        else:
            peer.sendall(data)
        for fd in fds:
            os.close(fd)
        peer.shutdown(socket.SHUT_WR)
        try:
            dev = host.add_object("cryptodev-vhost-user", "cv0", chardev="c0")
        except QemuError as err:
            assert re.fullmatch(
                r"failed to init vhost_crypto for queue 0"
                r"|you are asking more queues than supported: \d+",
                err.desc,
            ), err.desc
            assert host.lookup_object("cv0") is None
            return
        assert isinstance(dev, CryptoDevBackendVhostUser)
        try:
            dev.create_session("aes-128-cbc", key=bytes(16))
        except CryptoDevError as err:
            text = err.desc.removesuffix(" (create session failed)")
            assert TEXTS.fullmatch(text) or re.fullmatch(
                r"Bad session id: -\d+|cryptodev backend 'cv0' is not ready", text
            ), err.desc
            if not chardev.is_open:
                assert not dev.ready
    finally:
        host.close()
        if peer is not None:
            peer.close()
    assert own_fds() == before, "descriptors leaked"
