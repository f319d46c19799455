"""virtio-crypto layouts and vhost-user crypto session payloads (``cryptodev.virtio_crypto``).

Offsets are those of QEMU 7.2's headers (``reference/qemu-semantics.md``
§5.3-5.4) and of DPDK's ``VhostUserCryptoSessionParam``.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qomhost.cryptodev.virtio_crypto import (
    LAYOUT_LEGACY,
    LAYOUT_QEMU72,
    LAYOUT_QEMU81,
    AkcipherAlgo,
    AsymSessionInfo,
    ChainOrder,
    CipherAlgo,
    CryptoConfig,
    CtrlHeader,
    CtrlRequest,
    DataHeader,
    DataRequest,
    DestroySession,
    HashAlgo,
    HashMode,
    MacAlgo,
    Op,
    Opcode,
    SessionInput,
    SessionRequest,
    Status,
    SymChainData,
    SymChainSession,
    SymCipherData,
    SymOp,
    SymSessionInfo,
    VirtioCryptoError,
    decode_session,
    detect_session_layout,
    encode_session,
    encode_session_reply,
    session_reply_id,
)

KEY = bytes(range(32))


def test_constants() -> None:
    assert Opcode.CIPHER_CREATE_SESSION == 0x0002
    assert Opcode.AKCIPHER_CREATE_SESSION == 0x0404
    assert Opcode.AEAD_DECRYPT == 0x0301 and Opcode.AKCIPHER_VERIFY == 0x0403
    assert CipherAlgo.AES_CBC == 3 and CipherAlgo.AES_XTS == 13
    assert MacAlgo.XCBC_AES == 53 and HashAlgo.SHA1 == 2
    assert Status.KEY_REJECTED == 6 and AkcipherAlgo.ECDSA == 3


def test_cipher_create_session_bytes() -> None:
    req = CtrlRequest.create_cipher(CipherAlgo.AES_CBC, KEY, Op.ENCRYPT, queue_id=1)
    data = req.encode()
    assert len(data) == 72 + 32
    assert data[:16] == struct.pack("<IIII", 0x0002, 3, 0, 1)
    assert data[16:32] == struct.pack("<IIII", 3, 32, 1, 0)
    assert data[32:64] == bytes(32)
    assert data[64:72] == struct.pack("<II", SymOp.CIPHER, 0)
    assert data[72:] == KEY
    assert CtrlRequest.decode(data) == req
    assert "00010203" not in repr(req) and "32 bytes" in repr(req)


def test_chain_create_session_round_trip() -> None:
    body = SymChainSession(
        ChainOrder.CIPHER_THEN_HASH,
        HashMode.AUTH,
        CipherAlgo.AES_CBC,
        KEY[:16],
        Op.DECRYPT,
        MacAlgo.HMAC_SHA_256,
        32,
        b"k" * 20,
        aad_len=0,
    )
    req = CtrlRequest(CtrlHeader(Opcode.CIPHER_CREATE_SESSION, CipherAlgo.AES_CBC), body)
    data = req.encode()
    assert len(data) == 72 + 16 + 20
    assert struct.unpack_from("<II", data, 16) == (2, 2)
    assert struct.unpack_from("<III", data, 16 + 24) == (MacAlgo.HMAC_SHA_256, 32, 20)
    assert struct.unpack_from("<I", data, 16 + 48) == (SymOp.ALGORITHM_CHAINING,)
    assert CtrlRequest.decode(data) == req
    plain = SymChainSession(1, HashMode.PLAIN, 3, KEY, 1, HashAlgo.SHA_256, 32)
    req = CtrlRequest(CtrlHeader(Opcode.CIPHER_CREATE_SESSION, 3), plain)
    assert CtrlRequest.decode(req.encode()) == req


def test_destroy_and_raw_bodies() -> None:
    req = CtrlRequest.destroy(0x1122334455)
    data = req.encode()
    assert data == struct.pack("<IIII", 0x0003, 0, 0, 0) + struct.pack("<Q", 0x1122334455) + bytes(
        48
    )
    assert CtrlRequest.decode(data).body == DestroySession(0x1122334455)
    raw = CtrlRequest(CtrlHeader(Opcode.HASH_CREATE_SESSION, 2), bytes(range(56)))
    assert CtrlRequest.decode(raw.encode()) == raw
    with pytest.raises(ValueError):
        CtrlRequest(CtrlHeader(0), b"short")


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (bytes(71), "control request too short"),
        (CtrlRequest.create_cipher(3, KEY, 1).encode()[:-1], "has 31 key bytes, expected 32"),
        (CtrlRequest.destroy(1).encode() + b"x", "has 1 key bytes, expected 0"),
    ],
)
def test_ctrl_errors(data: bytes, text: str) -> None:
    with pytest.raises(VirtioCryptoError, match=text) as info:
        CtrlRequest.decode(data)
    assert info.value.status == Status.BADMSG


def test_session_input() -> None:
    data = SessionInput(7, Status.OK).encode()
    assert data == struct.pack("<QII", 7, 0, 0)
    assert SessionInput.decode(data) == SessionInput(7)
    with pytest.raises(VirtioCryptoError):
        SessionInput.decode(bytes(15))


def test_data_requests() -> None:
    req = DataRequest(
        DataHeader(Opcode.CIPHER_ENCRYPT, CipherAlgo.AES_CBC, 5), SymCipherData(16, 64, 64)
    )
    data = req.encode()
    assert len(data) == 72
    assert data[:24] == struct.pack("<IIQII", 0, 3, 5, 0, 0)
    assert data[24:40] == struct.pack("<IIII", 16, 64, 64, 0)
    assert data[64:72] == struct.pack("<II", 1, 0)
    assert DataRequest.decode(data + b"payload follows") == req
    chain = DataRequest(
        DataHeader(Opcode.CIPHER_DECRYPT, 3, 9, 1), SymChainData(16, 64, 64, 0, 64, 0, 64, 0, 32)
    )
    assert struct.unpack_from("<I", chain.encode(), 64) == (2,)
    assert DataRequest.decode(chain.encode()) == chain
    raw = DataRequest(DataHeader(Opcode.HASH, 2, 1), bytes(range(48)))
    assert DataRequest.decode(raw.encode()) == raw
    with pytest.raises(VirtioCryptoError):
        DataRequest.decode(bytes(71))


def test_config() -> None:
    config = CryptoConfig(
        status=1, max_dataqueues=2, crypto_services=1, cipher_algo_l=1 << 3, max_size=1 << 32
    )
    data = config.encode()
    assert len(data) == 56
    assert data[:12] == struct.pack("<III", 1, 2, 1)
    assert data[48:] == struct.pack("<Q", 1 << 32)
    assert CryptoConfig.decode(data) == config
    with pytest.raises(VirtioCryptoError):
        CryptoConfig.decode(data[:-1])


# --- vhost-user session payloads -----------------------------------------------------------

CBC = SymSessionInfo(CipherAlgo.AES_CBC, KEY, Op.ENCRYPT)
ECB_DEC = SymSessionInfo(CipherAlgo.AES_ECB, KEY[:16], Op.DECRYPT)
HMAC_CHAIN = SymSessionInfo(
    CipherAlgo.AES_CBC,
    KEY,
    Op.ENCRYPT,
    SymOp.ALGORITHM_CHAINING,
    MacAlgo.HMAC_SHA1,
    20,
    b"a" * 64,
    0,
    HashMode.AUTH,
    ChainOrder.CIPHER_THEN_HASH,
)


def qemu72_bytes() -> bytes:
    """What QEMU 7.2 sends for an AES-256-CBC encrypt session, host pointers included."""
    head = struct.pack("<q6I4B", 0, 3, 32, 0, 0, 0, 0, 1, 1, 0, 0)
    pointers = struct.pack("<4xQQ", 0x5555DEADBEEF, 0x5555CAFEF00D)
    return head + pointers + KEY.ljust(64, b"\0") + bytes(512)


def test_qemu72_layout_bytes() -> None:
    data = qemu72_bytes()
    assert len(data) == 632
    assert detect_session_layout(data) == LAYOUT_QEMU72
    decoded = decode_session(data)
    assert decoded == SessionRequest(LAYOUT_QEMU72, 0, Opcode.CIPHER_CREATE_SESSION, CBC)
    encoded = encode_session(CBC)
    # identical except for the host pointers, which are sent as zero
    assert encoded[:40] == data[:40] and encoded[56:] == data[56:]
    assert encoded[40:56] == bytes(16)


def test_legacy_layout_bytes() -> None:
    data = encode_session(ECB_DEC, LAYOUT_LEGACY, op_code=Opcode.CIPHER_CREATE_SESSION)
    assert len(data) == 632
    assert struct.unpack_from("<qI6I4B", data) == (0, 2, 2, 16, 0, 0, 0, 0, 1, 2, 0, 0)
    assert data[56:72] == KEY[:16]
    assert detect_session_layout(data) == LAYOUT_LEGACY
    # AES_ECB is 2, as is the op_code at the same offset: content still decides
    assert detect_session_layout(encode_session(ECB_DEC)) == LAYOUT_QEMU72
    assert decode_session(data).info == ECB_DEC


def test_qemu81_layout_bytes() -> None:
    data = encode_session(CBC, LAYOUT_QEMU81, session_id=0)
    assert len(data) == 1072
    assert struct.unpack_from("<Q", data) == (Opcode.CIPHER_CREATE_SESSION,)
    assert struct.unpack_from("<6I4B", data, 8) == (3, 32, 0, 0, 0, 0, 1, 1, 0, 0)
    assert data[56:88] == KEY
    assert detect_session_layout(data) == LAYOUT_QEMU81
    asym = AsymSessionInfo(AkcipherAlgo.RSA, 2, b"DER" * 100, padding_algo=1, hash_algo=6)
    data = encode_session(asym, LAYOUT_QEMU81, op_code=Opcode.AKCIPHER_CREATE_SESSION)
    assert struct.unpack_from("<QIII", data) == (0x0404, 1, 2, 300)
    assert struct.unpack_from("<II", data, 32) == (1, 6)
    assert data[40:340] == b"DER" * 100
    assert decode_session(data) == SessionRequest(
        LAYOUT_QEMU81, 0, Opcode.AKCIPHER_CREATE_SESSION, asym
    )
    with pytest.raises(VirtioCryptoError, match="asymmetric"):
        encode_session(asym, LAYOUT_QEMU72)


@pytest.mark.parametrize("layout", [LAYOUT_QEMU72, LAYOUT_LEGACY, LAYOUT_QEMU81])
@pytest.mark.parametrize("info", [CBC, ECB_DEC, HMAC_CHAIN], ids=["cbc", "ecb", "chain"])
def test_session_round_trip_and_reply(layout: str, info: SymSessionInfo) -> None:
    op = Opcode.CIPHER_CREATE_SESSION
    data = encode_session(info, layout, op_code=op)
    assert detect_session_layout(data) == layout
    assert decode_session(data) == SessionRequest(layout, 0, op, info)
    assert decode_session(data, layout) == decode_session(data)
    for session_id in (5, -Status.NOTSUPP):
        reply = encode_session_reply(data, session_id)
        assert len(reply) == len(data)
        assert session_reply_id(reply, layout) == session_id


def test_reply_positions() -> None:
    assert encode_session_reply(bytes(632), -2)[:8] == struct.pack("<q", -2)
    assert encode_session_reply(bytes(1072), 9)[1064:] == struct.pack("<q", 9)
    with pytest.raises(VirtioCryptoError):
        encode_session_reply(bytes(100), 1)


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (bytes(100), "is 100 bytes"),
        (bytes(632), "unknown layout"),
        (b"\xff" * 632, "unknown layout"),
    ],
)
def test_detect_errors(data: bytes, text: str) -> None:
    with pytest.raises(VirtioCryptoError, match=text):
        detect_session_layout(data)


def test_key_size_errors() -> None:
    with pytest.raises(VirtioCryptoError, match="Unsupported cipher key size") as info:
        encode_session(SymSessionInfo(3, bytes(65), 1))
    assert info.value.status == Status.NOTSUPP
    bad = bytearray(encode_session(CBC, LAYOUT_QEMU81))
    struct.pack_into("<I", bad, 12, 65)
    with pytest.raises(VirtioCryptoError, match="Unsupported cipher key size"):
        decode_session(bytes(bad))
    struct.pack_into("<II", bad, 12, 32, 0)
    struct.pack_into("<I", bad, 24, 513)
    with pytest.raises(VirtioCryptoError, match="Unsupported auth key size"):
        decode_session(bytes(bad))
    asym = bytearray(1072)
    struct.pack_into("<QIII", asym, 0, 0x0404, 1, 1, 1025)
    with pytest.raises(VirtioCryptoError, match="Unsupported asymmetric key size"):
        decode_session(bytes(asym))


# --- fuzzing -------------------------------------------------------------------------------


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for pos, value in edits:
        if buf:
            buf[pos % len(buf)] = value
    return bytes(buf if cut is None else buf[:cut])


@settings(max_examples=400, deadline=None)
@given(
    base=st.sampled_from(
        [
            encode_session(CBC),
            encode_session(HMAC_CHAIN, LAYOUT_LEGACY),
            encode_session(ECB_DEC, LAYOUT_QEMU81),
            qemu72_bytes(),
            bytes(1072),
        ]
    ),
    edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 1100),
)
def test_fuzz_session_payloads(base: bytes, edits: list[tuple[int, int]], cut: int | None) -> None:
    data = _mutate(base, edits, cut)
    try:
        layout = detect_session_layout(data)
        decoded = decode_session(data)
    except VirtioCryptoError:
        return
    assert decoded.layout == layout
    reply = encode_session_reply(data, 3)
    assert session_reply_id(reply, layout) == 3


@settings(max_examples=400, deadline=None)
@given(
    base=st.sampled_from(
        [
            CtrlRequest.create_cipher(3, KEY, 1).encode(),
            CtrlRequest(CtrlHeader(2, 3), SymChainSession(1, 2, 3, KEY, 1, 2, 20, b"x")).encode(),
            CtrlRequest.destroy(4).encode(),
            DataRequest(DataHeader(0, 3, 1), SymCipherData(16, 32, 32)).encode(),
        ]
    ),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 120),
    noise=st.binary(max_size=100),
)
def test_fuzz_requests(
    base: bytes, edits: list[tuple[int, int]], cut: int | None, noise: bytes
) -> None:
    for data in (_mutate(base, edits, cut), noise):
        try:
            ctrl = CtrlRequest.decode(data)
        except VirtioCryptoError:
            pass
        else:
            assert CtrlRequest.decode(ctrl.encode()) == ctrl
        try:
            req = DataRequest.decode(data)
        except VirtioCryptoError:
            pass
        else:
            assert DataRequest.decode(req.encode()) == req
