"""The sans-I/O vhost-user codec (``vhost_user.protocol``).

Hand-written bytes are what QEMU 7.2's frontend sends during the
cryptodev-vhost-user handshake (``reference/qemu-semantics.md`` §5.3).
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qomhost.vhost_user.protocol import (
    BACKEND,
    BACKEND_REQ,
    FLAGS_NEED_REPLY,
    FLAGS_REPLY,
    FRONTEND,
    U64,
    BackendReq,
    BackendRequest,
    Config,
    CryptoSession,
    Empty,
    Header,
    MemoryRegion,
    MemReg,
    MemTable,
    Message,
    ProtocolFeature,
    Request,
    SlaveReqFd,
    VhostUserDecoder,
    VhostUserProtocolError,
    VringAddr,
    VringFile,
    VringState,
    check_reply,
    decode_message,
    fd_count,
    request_name,
)

REQUESTS: list[Message] = [
    Empty(Request.GET_FEATURES),
    Empty(Request.GET_PROTOCOL_FEATURES),
    Empty(Request.SET_OWNER),
    Empty(Request.RESET_OWNER),
    Empty(Request.GET_QUEUE_NUM),
    Empty(Request.GET_MAX_MEM_SLOTS),
    Empty(Request.GET_STATUS),
    U64(Request.SET_FEATURES, 1 << 30),
    U64(Request.SET_PROTOCOL_FEATURES, 0x80A9),
    U64(Request.SET_STATUS, 0x0F, FLAGS_NEED_REPLY),
    U64(Request.CLOSE_CRYPTO_SESSION, 7),
    VringState(Request.SET_VRING_NUM, 0, 128),
    VringState(Request.SET_VRING_BASE, 1, 0),
    VringState(Request.GET_VRING_BASE, 1, 0),
    VringState(Request.SET_VRING_ENABLE, 0, 1),
    VringAddr(0, 0x7F0000001000, 0x7F0000002000, 0x7F0000003000, 0, 0),
    VringAddr(3, 1, 2, 3, log_guest_addr=0x1000, ring_flags=1),
    VringFile(Request.SET_VRING_KICK, 0, 10),
    VringFile(Request.SET_VRING_CALL, 1, 11),
    VringFile(Request.SET_VRING_ERR, 2, 12),
    VringFile(Request.SET_VRING_CALL, 3, None),
    MemTable(()),
    MemTable(
        (
            MemoryRegion(0, 0x100000, 0x7F0000000000, 0, 20),
            MemoryRegion(0x100000, 0x200000, 0x7F0000100000, 0x1000, 21),
        )
    ),
    SlaveReqFd(30, FLAGS_NEED_REPLY),
    MemReg(Request.ADD_MEM_REG, MemoryRegion(0, 0x100000, 0x7F0000000000, 0, 22)),
    MemReg(Request.REM_MEM_REG, MemoryRegion(0, 0x100000, 0x7F0000000000, 0, -1)),
    Config(Request.GET_CONFIG, 0, bytes(56)),
    Config(Request.SET_CONFIG, 4, b"\x01\x02\x03\x04", config_flags=1),
    CryptoSession(bytes(632)),
    CryptoSession(bytes(range(256)) * 4 + bytes(48)),
]

REPLIES: list[Message] = [
    U64(Request.GET_FEATURES, 1 << 30, FLAGS_REPLY),
    U64(Request.GET_PROTOCOL_FEATURES, 0x1829F, FLAGS_REPLY),
    U64(Request.GET_QUEUE_NUM, 2, FLAGS_REPLY),
    U64(Request.GET_MAX_MEM_SLOTS, 509, FLAGS_REPLY),
    U64(Request.GET_STATUS, 0x0F, FLAGS_REPLY),
    U64(Request.SET_SLAVE_REQ_FD, 0, FLAGS_REPLY),  # a REPLY_ACK
    U64(Request.SET_STATUS, 1, FLAGS_REPLY),
    VringState(Request.GET_VRING_BASE, 0, 42, FLAGS_REPLY),
    Config(Request.GET_CONFIG, 0, bytes(range(56)), flags=FLAGS_REPLY),
    CryptoSession(b"\x05" + bytes(631), FLAGS_REPLY),
]


@pytest.mark.parametrize("msg", REQUESTS, ids=repr)
def test_request_round_trip(msg: Message) -> None:
    data = msg.encode()
    assert decode_message(data, msg.fds, BACKEND) == msg
    assert fd_count(msg.request, data[12:]) == len(msg.fds)
    decoder = VhostUserDecoder(BACKEND)
    assert decoder.feed(data, msg.fds) == [msg]
    assert decoder.pending == 0 and decoder.eof() is None


@pytest.mark.parametrize("msg", REPLIES, ids=repr)
def test_reply_round_trip(msg: Message) -> None:
    data = msg.encode()
    assert decode_message(data, (), FRONTEND) == msg
    assert VhostUserDecoder(FRONTEND).feed(data) == [msg]
    assert msg.is_reply and not msg.need_reply


def test_qemu_bytes() -> None:
    assert Empty(Request.GET_FEATURES).encode() == bytes.fromhex("01000000 01000000 00000000")
    assert U64(Request.SET_PROTOCOL_FEATURES, 0x80A9).encode() == bytes.fromhex(
        "10000000 01000000 08000000 a980000000000000"
    )
    call = VringFile(Request.SET_VRING_CALL, 1, 9)
    assert call.encode() == bytes.fromhex("0d000000 01000000 08000000 0100000000000000")
    assert call.fds == (9,)
    poll = VringFile(Request.SET_VRING_KICK, 2, None)
    assert poll.encode() == bytes.fromhex("0c000000 01000000 08000000 0201000000000000")
    assert poll.fds == ()
    ack = SlaveReqFd(4, FLAGS_NEED_REPLY)
    assert ack.encode() == bytes.fromhex("15000000 09000000 00000000") and ack.need_reply
    assert VringState(Request.SET_VRING_NUM, 0, 256).encode() == bytes.fromhex(
        "08000000 01000000 08000000 00000000 00010000"
    )
    addr = VringAddr(1, 0x1000, 0x2000, 0x3000, 0x4000, 1)
    assert addr.encode() == bytes.fromhex(
        "09000000 01000000 28000000 01000000 01000000"
        "0010000000000000 0020000000000000 0030000000000000 0040000000000000"
    )
    table = MemTable((MemoryRegion(0x10, 0x20, 0x30, 0x40, 5),))
    assert table.encode() == bytes.fromhex(
        "05000000 01000000 28000000 01000000 00000000"
        "1000000000000000 2000000000000000 3000000000000000 4000000000000000"
    )
    # the reply to GET_FEATURES a backend with protocol features sends
    reply = bytes.fromhex("01000000 05000000 08000000 0000004000000000")
    assert decode_message(reply, (), FRONTEND) == U64(Request.GET_FEATURES, 1 << 30, FLAGS_REPLY)
    assert Header.decode(reply) == Header(1, 5, 8)
    assert Header(1, 5, 8).encode() == reply[:12]


def test_vring_file_in_decoder() -> None:
    data = bytes.fromhex("0d000000 01000000 08000000 0300000000000000")
    assert VhostUserDecoder().feed(data, [17]) == [VringFile(Request.SET_VRING_CALL, 3, 17)]


def test_constants() -> None:
    assert Request.CREATE_CRYPTO_SESSION == 26 and Request.GET_STATUS == 40
    assert request_name(26) == "CREATE_CRYPTO_SESSION" and request_name(99) == "UNKNOWN(99)"
    assert ProtocolFeature.CRYPTO_SESSION == 7 and ProtocolFeature.STATUS == 16
    assert ProtocolFeature.MASK == 0x1FFFF


def test_messages_are_frozen() -> None:
    msg = U64(Request.SET_FEATURES, 1)
    with pytest.raises(AttributeError):
        msg.value = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        msg.other = 2  # type: ignore[attr-defined]
    assert hash(msg) == hash(U64(Request.SET_FEATURES, 1))
    assert msg != Empty(Request.SET_FEATURES)


def _hdr(request: int, flags: int, payload: bytes) -> bytes:
    return struct.pack("<III", request, flags, len(payload)) + payload


BACKEND_ERRORS = [
    (_hdr(1, 0x5, b""), [], "Invalid flags 0x5 in request 1"),
    (_hdr(1, 0x2, b""), [], "Invalid flags 0x2"),
    (_hdr(1, 0x101, b""), [], "Invalid flags 0x101"),
    (
        struct.pack("<III", 26, 1, 5000),
        [],
        "Error: too big message request: 26, size: vmsg->size: 5000, "
        "while sizeof(vmsg->payload) = 1072",
    ),
    (_hdr(99, 1, b""), [], "Unhandled request: 99"),
    (_hdr(Request.SET_LOG_BASE, 1, bytes(16)), [3], "Unhandled request: 6"),
    (_hdr(2, 1, bytes(4)), [], "Invalid size 4 for SET_FEATURES (2): expected 8"),
    (_hdr(1, 1, bytes(8)), [], "Invalid size 8 for GET_FEATURES (1): expected 0"),
    (_hdr(9, 1, bytes(32)), [], "Invalid vring_addr message"),
    (_hdr(13, 1, bytes(8)), [], "Invalid fds in request: 13"),
    (_hdr(13, 1, bytes(8)), [4, 5], "Invalid fds in request: 13"),
    (_hdr(13, 1, b"\x00\x01" + bytes(6)), [4], "Invalid fds in request: 13"),
    (_hdr(3, 1, b""), [4], "Invalid fds in request: 3"),
    (_hdr(21, 1, b""), [], "Invalid backend_req_fd message (0 fd's)"),
    (_hdr(5, 1, struct.pack("<II", 9, 0) + bytes(9 * 32)), [], "Invalid number of memory"),
    (_hdr(5, 1, struct.pack("<II", 1, 0)), [4], "Invalid size 8 for SET_MEM_TABLE (5)"),
    (_hdr(5, 1, struct.pack("<II", 1, 0) + bytes(32)), [], "Invalid fds in request: 5"),
    (_hdr(24, 1, struct.pack("<III", 0, 300, 0) + bytes(300)), [], "Invalid config size 300"),
    (_hdr(25, 1, struct.pack("<III", 0, 4, 0)), [], "Invalid config size 4"),
    (_hdr(26, 1, bytes(600)), [], "Invalid size 600 for CREATE_CRYPTO_SESSION (26)"),
]


@pytest.mark.parametrize(("data", "fds", "text"), BACKEND_ERRORS)
def test_backend_errors(data: bytes, fds: list[int], text: str) -> None:
    with pytest.raises(VhostUserProtocolError) as info:
        decode_message(data, fds, BACKEND)
    assert info.value.desc.startswith(text)
    assert info.value.fds == tuple(fds)
    decoder = VhostUserDecoder(BACKEND)
    out = decoder.feed(data, fds)
    assert len(out) == 1 and isinstance(out[0], VhostUserProtocolError)
    assert out[0].desc.startswith(text) and decoder.closed


FRONTEND_ERRORS = [
    (_hdr(1, 0x4, bytes(8)), "Failed to read msg header. Flags 0x4 instead of 0x5."),
    (_hdr(1, 0x1, bytes(8)), "Failed to read msg header. Flags 0x1 instead of 0x5."),
    (_hdr(1, 0xD, bytes(8)), "Failed to read msg header. Flags 0xd instead of 0x5."),
    (
        struct.pack("<III", 26, 5, 1072),
        "Failed to read msg header. Size 1072 exceeds the maximum 632.",
    ),
]

#: replies with a good header but a payload their request's replies cannot have:
#: decoded raw, then refused by check_reply as QEMU refuses them (request number first)
ODD_REPLIES = [
    (_hdr(1, 5, bytes(4)), 1, "Received bad msg size."),
    (_hdr(11, 5, bytes(16)), 11, "Received bad msg size."),
    (_hdr(26, 5, bytes(100)), 26, "Received bad msg size."),
    (_hdr(77, 5, bytes(8)), 1, "Received unexpected msg type. Expected 1 received 77"),
    (_hdr(15, 5, bytes(4)), 1, "Received unexpected msg type. Expected 1 received 15"),
    (_hdr(24, 5, bytes(13)), 24, "Received bad msg size."),
]


@pytest.mark.parametrize(("data", "text"), FRONTEND_ERRORS)
def test_frontend_errors(data: bytes, text: str) -> None:
    with pytest.raises(VhostUserProtocolError, match="^" + text.replace(".", r"\.") + "$"):
        decode_message(data, (), FRONTEND)
    out = VhostUserDecoder(FRONTEND).feed(data)
    assert len(out) == 1 and isinstance(out[0], VhostUserProtocolError) and out[0].desc == text


@pytest.mark.parametrize(("data", "sent", "text"), ODD_REPLIES)
def test_odd_replies_fail_the_check_as_in_qemu(data: bytes, sent: int, text: str) -> None:
    (reply,) = VhostUserDecoder(FRONTEND).feed(data)
    assert isinstance(reply, Message) and reply.encode() == data
    expect = {11: VringState, 24: Config, 26: CryptoSession}.get(sent, U64)
    with pytest.raises(VhostUserProtocolError, match="^" + text.replace(".", r"\.") + "$"):
        check_reply(reply, sent, expect=expect)


def test_reply_carrying_fds_is_refused() -> None:
    with pytest.raises(VhostUserProtocolError, match="Invalid fds in reply"):
        decode_message(_hdr(1, 5, bytes(8)), [3], FRONTEND)


def test_check_reply() -> None:
    reply = U64(Request.GET_FEATURES, 0, FLAGS_REPLY)
    check_reply(reply, Request.GET_FEATURES)
    with pytest.raises(
        VhostUserProtocolError, match=r"^Received unexpected msg type\. Expected 15 received 1$"
    ):
        check_reply(reply, Request.GET_PROTOCOL_FEATURES)
    with pytest.raises(VhostUserProtocolError, match="Received bad msg size"):
        check_reply(VringState(11, 0, 0, FLAGS_REPLY), 11)
    check_reply(VringState(11, 0, 0, FLAGS_REPLY), 11, u64=False)


def test_decoder_stream() -> None:
    msgs = [REQUESTS[0], REQUESTS[18], REQUESTS[22], REQUESTS[8]]
    decoder = VhostUserDecoder()
    out: list[object] = []
    for msg in msgs:
        data = msg.encode()
        out += decoder.feed(data[:5], msg.fds)
        out += decoder.feed(data[5:])
    assert out == msgs


def test_decoder_closes_after_error_and_hands_back_fds() -> None:
    decoder = VhostUserDecoder()
    good = Empty(Request.SET_OWNER).encode()
    out = decoder.feed(good + _hdr(13, 1, bytes(8)) + good, [])
    assert out[0] == Empty(Request.SET_OWNER)
    assert isinstance(out[1], VhostUserProtocolError) and len(out) == 2
    again = decoder.feed(good, [8])
    assert len(again) == 1 and isinstance(again[0], VhostUserProtocolError)
    assert again[0].fds == (8,)


def test_fds_go_to_the_message_their_chunk_ends_in() -> None:
    # one large read: two fd-less messages, then the SET_VRING_CALL whose
    # send carried the eventfd (the kernel stops the read after that send)
    call = VringFile(Request.SET_VRING_CALL, 0, 17)
    stream = Empty(Request.SET_OWNER).encode() + Empty(Request.GET_FEATURES).encode()
    stream += call.encode()
    assert VhostUserDecoder().feed(stream, [17]) == [
        Empty(Request.SET_OWNER),
        Empty(Request.GET_FEATURES),
        call,
    ]
    # the read ended inside the second message of a chunk that began with another
    kick = VringFile(Request.SET_VRING_KICK, 1, 18)
    decoder = VhostUserDecoder()
    data = Empty(Request.SET_OWNER).encode() + kick.encode()
    assert decoder.feed(data[:15], [18]) == [Empty(Request.SET_OWNER)]
    assert decoder.feed(data[15:]) == [kick]
    # fds for two messages in one chunk cannot be told apart: refused, all handed back
    both = VringFile(Request.SET_VRING_CALL, 1, 21).encode() + kick.encode()
    (err,) = VhostUserDecoder().feed(both, [21, 18])
    assert isinstance(err, VhostUserProtocolError) and err.fds == (21, 18)
    # fds with no bytes at a message boundary belong to nothing
    (err,) = VhostUserDecoder().feed(b"", [5])
    assert isinstance(err, VhostUserProtocolError) and err.fds == (5,)


def test_mem_reg_bytes() -> None:
    add = MemReg(Request.ADD_MEM_REG, MemoryRegion(0x10, 0x20, 0x30, 0x40, 5), FLAGS_NEED_REPLY)
    data = add.encode()
    assert data == bytes.fromhex(
        "25000000 09000000 28000000 0000000000000000"
        "1000000000000000 2000000000000000 3000000000000000 4000000000000000"
    )
    assert add.fds == (5,) and fd_count(Request.ADD_MEM_REG, data[12:]) == 1
    rem_bytes = bytes([38]) + data[1:]
    rem = decode_message(rem_bytes, (), BACKEND)
    assert rem == MemReg(
        Request.REM_MEM_REG, MemoryRegion(0x10, 0x20, 0x30, 0x40, -1), FLAGS_NEED_REPLY
    )
    # REM_MEM_REG should come without an fd, but one is taken (to be closed)
    assert decode_message(rem_bytes, [9], BACKEND).fds == (9,)
    with pytest.raises(VhostUserProtocolError, match="at most 1 should be sent") as exc:
        decode_message(rem_bytes, [9, 10], BACKEND)
    assert exc.value.fds == (9, 10)
    with pytest.raises(VhostUserProtocolError, match="ADD_MEM_REG received 0 fds"):
        decode_message(data, (), BACKEND)
    with pytest.raises(VhostUserProtocolError, match="Invalid size 32 for ADD_MEM_REG"):
        decode_message(data[:4] + data[4:8] + bytes([32, 0, 0, 0]) + data[20:], [5], BACKEND)
    with pytest.raises(ValueError):
        MemReg(Request.SET_MEM_TABLE, add.region)


def test_eof_reports_truncation() -> None:
    decoder = VhostUserDecoder()
    assert decoder.feed(b"\x01\x00\x00", [6]) == []
    err = decoder.eof()
    assert err is not None and err.desc == "Failed to read msg header. Read 3 instead of 12."
    assert err.fds == (6,)
    decoder = VhostUserDecoder()
    decoder.feed(U64(Request.SET_FEATURES, 1).encode()[:15])
    err = decoder.eof()
    assert err is not None and err.desc == "Failed to read msg payload. Read 3 instead of 8."
    with pytest.raises(VhostUserProtocolError, match="Read 3 instead of 12"):
        decode_message(b"abc")
    with pytest.raises(VhostUserProtocolError, match="Read 0 instead of 8"):
        decode_message(_hdr(2, 1, bytes(8))[:12])


def test_bad_role() -> None:
    with pytest.raises(ValueError, match="role"):
        VhostUserDecoder("middle")


# --- fuzzing -------------------------------------------------------------------------------


def _feed_chunks(
    role: str, chunks: list[tuple[bytes, list[int]]]
) -> list[Message | VhostUserProtocolError]:
    decoder = VhostUserDecoder(role)
    out: list[Message | VhostUserProtocolError] = []
    for data, fds in chunks:
        if decoder.closed:
            break
        out += decoder.feed(data, fds)
    if (err := decoder.eof()) is not None:
        out.append(err)
    return out


def _summary(out: list[Message | VhostUserProtocolError]) -> list[object]:
    return [(type(x).__name__, x.desc) if isinstance(x, Exception) else x for x in out]


def _handed_back(role: str, chunks: list[tuple[bytes, list[int]]]) -> list[int]:
    """The fds errors hand back when every chunk is fed, even after the first error.

    Which error hands an fd back depends on whether its chunk came before
    or after the fault, so only the total is the same however the stream
    was cut.
    """
    decoder = VhostUserDecoder(role)
    errors = [
        x for data, fds in chunks for x in decoder.feed(data, fds) if isinstance(x, Exception)
    ]
    if (err := decoder.eof()) is not None:
        errors.append(err)
    return sorted(fd for err in errors for fd in err.fds)


def _check(out: list[Message | VhostUserProtocolError]) -> None:
    for i, item in enumerate(out):
        assert isinstance(item, Message | VhostUserProtocolError)
        if isinstance(item, VhostUserProtocolError):
            assert i == len(out) - 1


@st.composite
def streams(draw: st.DrawFn, role: str) -> tuple[bytes, list[tuple[int, list[int]]], bool]:
    """Sends of valid, mutated and random messages, each with its fds.

    Returns the bytes, (offset, fds) of each send, and whether every send
    is exactly one message (no size changed, nothing cut short), as real
    senders do.
    """
    pool = REQUESTS if role == BACKEND else REPLIES
    data = bytearray()
    fd_at: list[tuple[int, list[int]]] = []
    aligned = True
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["valid", "mutated", "random"]))
        if kind == "random":
            body = draw(st.binary(max_size=80))
            fds = draw(st.lists(st.integers(0, 1000), max_size=3))
            aligned = False
        else:
            msg = draw(st.sampled_from(pool))
            body = msg.encode()
            fds = list(msg.fds)
            if kind == "mutated":
                buf = bytearray(body)
                for _ in range(draw(st.integers(1, 3))):
                    pos = draw(st.integers(0, len(buf) - 1))
                    buf[pos] = draw(st.integers(0, 255))
                if draw(st.booleans()):
                    buf = buf[: draw(st.integers(0, len(buf)))]
                aligned &= len(buf) == len(body) and buf[8:12] == body[8:12]
                body = bytes(buf)
                fds = draw(st.sampled_from([fds, [], [*fds, 99]]))
        fd_at.append((len(data), fds))
        data += body
    return bytes(data), fd_at, aligned


def _chunked(
    data: bytes, fd_at: list[tuple[int, list[int]]], cuts: list[int]
) -> list[tuple[bytes, list[int]]]:
    """What ``recvmsg`` returns for these sends, with reads also ending at ``cuts``.

    As Linux does on a unix stream socket: a read that reaches an
    fd-carrying send takes its fds and stops at that send's end, so it may
    begin with earlier sends' bytes. An empty send's fds are never delivered.
    """
    ends = [pos for pos, _ in fd_at[1:]] + [len(data)]
    sends = [(pos, end, fds) for (pos, fds), end in zip(fd_at, ends, strict=True)]
    stops = {end for pos, end, fds in sends if fds and end > pos}
    points = sorted({0, len(data), *stops, *(c % (len(data) + 1) for c in cuts)})
    chunks = []
    for a, b in itertools.pairwise(points):
        fds = [fd for pos, end, sent in sends if a <= pos < b and end > pos for fd in sent]
        chunks.append((data[a:b], fds))
    return chunks


@pytest.mark.parametrize("role", [BACKEND, FRONTEND])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fuzz_chunking_is_irrelevant(role: str, data: st.DataObject) -> None:
    stream, fd_at, aligned = data.draw(streams(role))
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=8))
    whole = _feed_chunks(role, _chunked(stream, fd_at, []))
    split = _feed_chunks(role, _chunked(stream, fd_at, cuts))
    bytewise = _feed_chunks(role, _chunked(stream, fd_at, list(range(len(stream)))))
    for out in (whole, split, bytewise):
        _check(out)
    if aligned:
        # a send that spans two messages leaves its fds' owner to where the
        # reads end; one message per send, as real senders do, never does
        assert _summary(whole) == _summary(split) == _summary(bytewise)
    handed_back = {
        tuple(_handed_back(role, _chunked(stream, fd_at, c)))
        for c in ([], cuts, list(range(len(stream))))
    }
    assert len(handed_back) == 1
    if len(fd_at) == 1 and len(whole) == 1 and not isinstance(whole[0], Exception):
        # a single complete message decodes the same way on its own
        assert decode_message(stream, fd_at[0][1], role) == whole[0]


@pytest.mark.parametrize("role", [BACKEND, FRONTEND])
@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(
        st.tuples(st.binary(max_size=64), st.lists(st.integers(0, 100), max_size=4)),
        max_size=6,
    )
)
def test_fuzz_random_bytes(role: str, chunks: list[tuple[bytes, list[int]]]) -> None:
    out = _feed_chunks(role, chunks)
    _check(out)
    # every fd ends up in a message or handed back for closing, even after the decoder closed
    decoder = VhostUserDecoder(role)
    results: list[Message | VhostUserProtocolError] = []
    for data, fds in chunks:
        results += decoder.feed(data, fds)
    if (err := decoder.eof()) is not None:
        results.append(err)
    seen = [fd for x in results for fd in x.fds]
    assert sorted(seen) == sorted(fd for _, fds in chunks for fd in fds)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120), fds=st.lists(st.integers(0, 9), max_size=3))
def test_fuzz_decode_message(data: bytes, fds: list[int]) -> None:
    for role in (BACKEND, FRONTEND):
        try:
            msg = decode_message(data, fds, role)
        except VhostUserProtocolError as exc:
            assert exc.fds == tuple(fds)
        else:
            assert msg.encode() == data and msg.fds == tuple(fds)


def test_backend_request_channel_role() -> None:
    decoder = VhostUserDecoder(BACKEND_REQ)
    area = struct.pack("<QQQ", 0, 4096, 0)
    data = struct.pack("<III", BackendRequest.VRING_HOST_NOTIFIER_MSG, 0x9, 24) + area
    (msg,) = decoder.feed(data, [7])
    assert msg == BackendReq(BackendRequest.VRING_HOST_NOTIFIER_MSG, area, (7,), 0x9)
    assert msg.need_reply and msg.fds == (7,) and msg.encode() == data
    # any flags are taken (QEMU 7.2 checks none); only the size is bounded
    assert decoder.feed(struct.pack("<III", 99, 0xFF, 0)) == [BackendReq(99, b"", (), 0xFF)]
    (err,) = decoder.feed(struct.pack("<III", 2, 1, 633), [8])
    assert isinstance(err, VhostUserProtocolError) and err.fds == (8,)
    assert err.desc == "Failed to read msg header. Size 633 exceeds the maximum 632."
