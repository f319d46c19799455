"""virtio-crypto constants and request layouts, and vhost-user crypto sessions.

All fields are little-endian, as in the virtio specification and QEMU 7.2's
``standard-headers/linux/virtio_crypto.h``.

**Control queue.** A driver creates a session by sending a 72-byte
:class:`CtrlRequest` (a 16-byte header and a 56-byte union) followed by the
cipher key and, for chained MAC sessions, the auth key; the device answers
in a 16-byte :class:`SessionInput` (``session_id``, ``status``). Destroying
a session is a control request naming the id; the device answers one
status byte.

**Data queues.** A 72-byte :class:`DataRequest` (a 24-byte header and a
48-byte union) says which session and how long the IV, source and
destination are; the buffers follow in separate descriptors, and the last
byte the device writes is the status.

**vhost-user sessions.** When the device is served over vhost-user, the
frontend turns a control request into ``CREATE_CRYPTO_SESSION`` whose
payload is QEMU's internal session struct copied raw. That struct changed
twice, so a backend sees one of three layouts (:data:`LAYOUT_QEMU72`,
:data:`LAYOUT_LEGACY`, :data:`LAYOUT_QEMU81`);
:func:`detect_session_layout` tells them apart, :func:`decode_session`
reads any of them, and :func:`encode_session_reply` answers in the
layout asked.

Errors are :class:`VirtioCryptoError`, carrying the virtio-crypto status a
device would report (``BADMSG`` for malformed input).
"""

from __future__ import annotations

import struct

from qomhost._record import FrozenRecord
from qomhost.errors import QemuError

__all__ = [
    "CTRL_REQUEST_SIZE",
    "DATA_REQUEST_SIZE",
    "LAYOUT_LEGACY",
    "LAYOUT_QEMU72",
    "LAYOUT_QEMU81",
    "AeadAlgo",
    "AkcipherAlgo",
    "AsymSessionInfo",
    "ChainOrder",
    "CipherAlgo",
    "CryptoConfig",
    "CtrlHeader",
    "CtrlRequest",
    "DataHeader",
    "DataRequest",
    "DestroySession",
    "HashAlgo",
    "HashMode",
    "MacAlgo",
    "Op",
    "Opcode",
    "Service",
    "SessionInput",
    "SessionRequest",
    "Status",
    "SymChainData",
    "SymChainSession",
    "SymCipherData",
    "SymCipherSession",
    "SymOp",
    "SymSessionInfo",
    "VirtioCryptoError",
    "decode_session",
    "detect_session_layout",
    "encode_session",
    "encode_session_reply",
    "session_reply_id",
]


def _opcode(service: int, op: int) -> int:
    return (service << 8) | op


class Service:
    """Service numbers (bit positions in the config's ``crypto_services``)."""

    CIPHER = 0
    HASH = 1
    MAC = 2
    AEAD = 3
    AKCIPHER = 4


class Opcode:
    """Request opcodes: ``(service << 8) | op``."""

    CIPHER_CREATE_SESSION = _opcode(Service.CIPHER, 0x02)
    CIPHER_DESTROY_SESSION = _opcode(Service.CIPHER, 0x03)
    HASH_CREATE_SESSION = _opcode(Service.HASH, 0x02)
    HASH_DESTROY_SESSION = _opcode(Service.HASH, 0x03)
    MAC_CREATE_SESSION = _opcode(Service.MAC, 0x02)
    MAC_DESTROY_SESSION = _opcode(Service.MAC, 0x03)
    AEAD_CREATE_SESSION = _opcode(Service.AEAD, 0x02)
    AEAD_DESTROY_SESSION = _opcode(Service.AEAD, 0x03)
    AKCIPHER_CREATE_SESSION = _opcode(Service.AKCIPHER, 0x04)
    AKCIPHER_DESTROY_SESSION = _opcode(Service.AKCIPHER, 0x05)
    CIPHER_ENCRYPT = _opcode(Service.CIPHER, 0x00)
    CIPHER_DECRYPT = _opcode(Service.CIPHER, 0x01)
    HASH = _opcode(Service.HASH, 0x00)
    MAC = _opcode(Service.MAC, 0x00)
    AEAD_ENCRYPT = _opcode(Service.AEAD, 0x00)
    AEAD_DECRYPT = _opcode(Service.AEAD, 0x01)
    AKCIPHER_ENCRYPT = _opcode(Service.AKCIPHER, 0x00)
    AKCIPHER_DECRYPT = _opcode(Service.AKCIPHER, 0x01)
    AKCIPHER_SIGN = _opcode(Service.AKCIPHER, 0x02)
    AKCIPHER_VERIFY = _opcode(Service.AKCIPHER, 0x03)


#: create-session opcodes of the symmetric services
SYM_CREATE_OPCODES = frozenset(
    {
        Opcode.CIPHER_CREATE_SESSION,
        Opcode.HASH_CREATE_SESSION,
        Opcode.MAC_CREATE_SESSION,
        Opcode.AEAD_CREATE_SESSION,
    }
)
DESTROY_OPCODES = frozenset(
    {
        Opcode.CIPHER_DESTROY_SESSION,
        Opcode.HASH_DESTROY_SESSION,
        Opcode.MAC_DESTROY_SESSION,
        Opcode.AEAD_DESTROY_SESSION,
        Opcode.AKCIPHER_DESTROY_SESSION,
    }
)


class Status:
    """Request status codes."""

    OK = 0
    ERR = 1
    BADMSG = 2
    NOTSUPP = 3
    INVSESS = 4
    NOSPC = 5
    KEY_REJECTED = 6

    #: config ``status`` bit: the device is ready
    S_HW_READY = 1


class CipherAlgo:
    NO_CIPHER = 0
    ARC4 = 1
    AES_ECB = 2
    AES_CBC = 3
    AES_CTR = 4
    DES_ECB = 5
    DES_CBC = 6
    THREE_DES_ECB = 7
    THREE_DES_CBC = 8
    THREE_DES_CTR = 9
    KASUMI_F8 = 10
    SNOW3G_UEA2 = 11
    AES_F8 = 12
    AES_XTS = 13
    ZUC_EEA3 = 14


class HashAlgo:
    NO_HASH = 0
    MD5 = 1
    SHA1 = 2
    SHA_224 = 3
    SHA_256 = 4
    SHA_384 = 5
    SHA_512 = 6
    SHA3_224 = 7
    SHA3_256 = 8
    SHA3_384 = 9
    SHA3_512 = 10
    SHA3_SHAKE128 = 11
    SHA3_SHAKE256 = 12


class MacAlgo:
    NO_MAC = 0
    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    HMAC_SHA_224 = 3
    HMAC_SHA_256 = 4
    HMAC_SHA_384 = 5
    HMAC_SHA_512 = 6
    CMAC_3DES = 25
    CMAC_AES = 26
    KASUMI_F9 = 27
    SNOW3G_UIA2 = 28
    GMAC_AES = 41
    GMAC_TWOFISH = 42
    CBCMAC_AES = 49
    CBCMAC_KASUMI_F9 = 50
    XCBC_AES = 53


class AeadAlgo:
    NO_AEAD = 0
    GCM = 1
    CCM = 2
    CHACHA20_POLY1305 = 3


class AkcipherAlgo:
    NO_AKCIPHER = 0
    RSA = 1
    DSA = 2
    ECDSA = 3


class Op:
    """Direction of a cipher session (``op`` / ``direction``)."""

    ENCRYPT = 1
    DECRYPT = 2


class SymOp:
    """``op_type`` of a symmetric session or request."""

    NONE = 0
    CIPHER = 1
    ALGORITHM_CHAINING = 2


class ChainOrder:
    HASH_THEN_CIPHER = 1
    CIPHER_THEN_HASH = 2


class HashMode:
    """How a chained session authenticates: plain hash, or MAC with an auth key."""

    PLAIN = 1
    AUTH = 2
    NESTED = 3


class VirtioCryptoError(QemuError):
    """Malformed or unsupported virtio-crypto input.

    :param status: the virtio-crypto status a device answers with.
    """

    def __init__(self, desc: str, status: int = Status.BADMSG) -> None:
        super().__init__(desc)
        self.status = status


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise VirtioCryptoError(f"virtio-crypto {what} too short: {len(data)} < {size} bytes")


# --- control queue -----------------------------------------------------------------------

CTRL_HEADER_SIZE = 16
CTRL_UNION_SIZE = 56
CTRL_REQUEST_SIZE = CTRL_HEADER_SIZE + CTRL_UNION_SIZE

_CTRL_HDR = struct.Struct("<IIII")
# cipher_session_para {algo, keylen, op, padding}
_CIPHER_PARA = struct.Struct("<IIII")
# alg_chain_session_para: order, hash_mode, cipher para, hash/mac union, aad_len, padding
_CHAIN_PARA = struct.Struct("<II16sIII4sII")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")


class CtrlHeader(FrozenRecord):
    """``virtio_crypto_ctrl_header``: what the control request is about."""

    __slots__ = ("algo", "flag", "opcode", "queue_id")
    _fields = ("opcode", "algo", "flag", "queue_id")
    opcode: int
    algo: int
    flag: int
    queue_id: int

    def __init__(self, opcode: int, algo: int = 0, flag: int = 0, queue_id: int = 0) -> None:
        self._init(opcode, algo, flag, queue_id)

    def encode(self) -> bytes:
        return _CTRL_HDR.pack(self.opcode, self.algo, self.flag, self.queue_id)


class SymCipherSession(FrozenRecord):
    """A cipher-only symmetric session: algorithm, key, direction."""

    __slots__ = ("algo", "key", "op")
    _fields = ("algo", "key", "op")
    algo: int
    key: bytes
    op: int

    def __init__(self, algo: int, key: bytes, op: int) -> None:
        self._init(algo, bytes(key), op)

    def __repr__(self) -> str:
        # keys never appear in logs or tracebacks
        return f"SymCipherSession(algo={self.algo}, key=<{len(self.key)} bytes>, op={self.op})"


class SymChainSession(FrozenRecord):
    """A cipher chained with a hash (``hash_mode`` PLAIN) or a MAC (AUTH, with auth key)."""

    __slots__ = (
        "aad_len",
        "alg_chain_order",
        "auth_key",
        "cipher_algo",
        "cipher_key",
        "hash_algo",
        "hash_mode",
        "hash_result_len",
        "op",
    )
    _fields = (
        "alg_chain_order",
        "hash_mode",
        "cipher_algo",
        "cipher_key",
        "op",
        "hash_algo",
        "hash_result_len",
        "auth_key",
        "aad_len",
    )
    alg_chain_order: int
    hash_mode: int
    cipher_algo: int
    cipher_key: bytes
    op: int
    hash_algo: int
    hash_result_len: int
    auth_key: bytes
    aad_len: int

    def __init__(
        self,
        alg_chain_order: int,
        hash_mode: int,
        cipher_algo: int,
        cipher_key: bytes,
        op: int,
        hash_algo: int,
        hash_result_len: int,
        auth_key: bytes = b"",
        aad_len: int = 0,
    ) -> None:
        self._init(
            alg_chain_order,
            hash_mode,
            cipher_algo,
            bytes(cipher_key),
            op,
            hash_algo,
            hash_result_len,
            bytes(auth_key),
            aad_len,
        )

    def __repr__(self) -> str:
        return (
            f"SymChainSession(order={self.alg_chain_order}, hash_mode={self.hash_mode}, "
            f"cipher_algo={self.cipher_algo}, cipher_key=<{len(self.cipher_key)} bytes>, "
            f"op={self.op}, hash_algo={self.hash_algo}, "
            f"hash_result_len={self.hash_result_len}, "
            f"auth_key=<{len(self.auth_key)} bytes>, aad_len={self.aad_len})"
        )


class DestroySession(FrozenRecord):
    """Destroy the session ``session_id``."""

    __slots__ = ("session_id",)
    _fields = ("session_id",)
    session_id: int

    def __init__(self, session_id: int) -> None:
        self._init(session_id)


CtrlBody = SymCipherSession | SymChainSession | DestroySession | bytes


class CtrlRequest(FrozenRecord):
    """A control request and the keys that follow it.

    ``body`` is a :class:`SymCipherSession` or :class:`SymChainSession` for
    ``CIPHER_CREATE_SESSION``, a :class:`DestroySession` for the destroy
    opcodes, and the raw 56-byte union for anything else (hash, MAC, AEAD
    and akcipher sessions, which QEMU 7.2 does not serve as stand-alone
    sessions, or a symmetric session with ``op_type`` NONE).
    """

    __slots__ = ("body", "header")
    _fields = ("header", "body")
    header: CtrlHeader
    body: CtrlBody

    def __init__(self, header: CtrlHeader, body: CtrlBody) -> None:
        if isinstance(body, bytes | bytearray) and len(body) != CTRL_UNION_SIZE:
            raise ValueError(f"a raw control union is {CTRL_UNION_SIZE} bytes, not {len(body)}")
        self._init(header, bytes(body) if isinstance(body, bytearray) else body)

    @classmethod
    def create_cipher(cls, algo: int, key: bytes, op: int, queue_id: int = 0) -> CtrlRequest:
        """The request a driver sends for a cipher session."""
        return cls(
            CtrlHeader(Opcode.CIPHER_CREATE_SESSION, algo, 0, queue_id),
            SymCipherSession(algo, key, op),
        )

    @classmethod
    def destroy(cls, session_id: int, queue_id: int = 0) -> CtrlRequest:
        return cls(
            CtrlHeader(Opcode.CIPHER_DESTROY_SESSION, 0, 0, queue_id),
            DestroySession(session_id),
        )

    def encode(self) -> bytes:
        """The request's out-buffers: 72 bytes, then cipher key, then auth key."""
        body = self.body
        if isinstance(body, SymCipherSession):
            para = _CIPHER_PARA.pack(body.algo, len(body.key), body.op, 0)
            union = para.ljust(48, b"\0") + _U32.pack(SymOp.CIPHER) + bytes(4)
            keys = body.key
        elif isinstance(body, SymChainSession):
            cipher = _CIPHER_PARA.pack(body.cipher_algo, len(body.cipher_key), body.op, 0)
            chain = _CHAIN_PARA.pack(
                body.alg_chain_order,
                body.hash_mode,
                cipher,
                body.hash_algo,
                body.hash_result_len,
                len(body.auth_key),
                b"",
                body.aad_len,
                0,
            )
            union = chain + _U32.pack(SymOp.ALGORITHM_CHAINING) + bytes(4)
            keys = body.cipher_key + body.auth_key
        elif isinstance(body, DestroySession):
            union = _U64.pack(body.session_id).ljust(CTRL_UNION_SIZE, b"\0")
            keys = b""
        else:
            union, keys = body, b""
        return self.header.encode() + union + keys

    @classmethod
    def decode(cls, data: bytes) -> CtrlRequest:
        """Read a request from its out-buffers (72 bytes plus the keys).

        :raises VirtioCryptoError: short input, or keys of the wrong length
            (``BADMSG``).
        """
        _need(data, CTRL_REQUEST_SIZE, "control request")
        header = CtrlHeader(*_CTRL_HDR.unpack_from(data))
        union = bytes(data[CTRL_HEADER_SIZE:CTRL_REQUEST_SIZE])
        rest = bytes(data[CTRL_REQUEST_SIZE:])
        body: CtrlBody
        if header.opcode in DESTROY_OPCODES:
            body = DestroySession(_U64.unpack_from(union)[0])
            want = 0
        elif header.opcode == Opcode.CIPHER_CREATE_SESSION:
            op_type = _U32.unpack_from(union, 48)[0]
            if op_type == SymOp.CIPHER:
                algo, keylen, op, _ = _CIPHER_PARA.unpack_from(union)
                want = keylen
                body = SymCipherSession(algo, rest[:keylen], op)
            elif op_type == SymOp.ALGORITHM_CHAINING:
                order, mode, cipher, halgo, hlen, auth_len, _, aad, _ = _CHAIN_PARA.unpack_from(
                    union
                )
                calgo, keylen, op, _ = _CIPHER_PARA.unpack(cipher)
                if mode != HashMode.AUTH:
                    # the plain hash_param has padding where mac_param has auth_key_len
                    auth_len = 0
                want = keylen + auth_len
                body = SymChainSession(
                    order,
                    mode,
                    calgo,
                    rest[:keylen],
                    op,
                    halgo,
                    hlen,
                    rest[keylen : keylen + auth_len],
                    aad,
                )
            else:
                body, want = union, len(rest)
        else:
            body, want = union, len(rest)
        if len(rest) != want:
            raise VirtioCryptoError(
                f"virtio-crypto control request has {len(rest)} key bytes, expected {want}"
            )
        return cls(header, body)


class SessionInput(FrozenRecord):
    """``virtio_crypto_session_input``: the device's answer to a create request."""

    __slots__ = ("session_id", "status")
    _fields = ("session_id", "status")
    session_id: int
    status: int

    SIZE = 16
    _STRUCT = struct.Struct("<QII")

    def __init__(self, session_id: int, status: int = Status.OK) -> None:
        self._init(session_id, status)

    def encode(self) -> bytes:
        return self._STRUCT.pack(self.session_id, self.status, 0)

    @classmethod
    def decode(cls, data: bytes) -> SessionInput:
        _need(data, cls.SIZE, "session input")
        session_id, status, _ = cls._STRUCT.unpack_from(data)
        return cls(session_id, status)


# --- data queues -------------------------------------------------------------------------

DATA_HEADER_SIZE = 24
DATA_UNION_SIZE = 48
DATA_REQUEST_SIZE = DATA_HEADER_SIZE + DATA_UNION_SIZE

_DATA_HDR = struct.Struct("<IIQII")
_CIPHER_DATA = struct.Struct("<IIII")
_CHAIN_DATA = struct.Struct("<IIIIIIIIII")


class DataHeader(FrozenRecord):
    """``virtio_crypto_op_header``: opcode, algorithm and the session to use."""

    __slots__ = ("algo", "flag", "opcode", "session_id")
    _fields = ("opcode", "algo", "session_id", "flag")
    opcode: int
    algo: int
    session_id: int
    flag: int

    def __init__(self, opcode: int, algo: int, session_id: int, flag: int = 0) -> None:
        self._init(opcode, algo, session_id, flag)

    def encode(self) -> bytes:
        return _DATA_HDR.pack(self.opcode, self.algo, self.session_id, self.flag, 0)


class SymCipherData(FrozenRecord):
    """Lengths of a cipher request's IV, source and destination buffers."""

    __slots__ = ("dst_data_len", "iv_len", "src_data_len")
    _fields = ("iv_len", "src_data_len", "dst_data_len")
    iv_len: int
    src_data_len: int
    dst_data_len: int

    def __init__(self, iv_len: int, src_data_len: int, dst_data_len: int) -> None:
        self._init(iv_len, src_data_len, dst_data_len)


class SymChainData(FrozenRecord):
    """Lengths and offsets of a chained (cipher + hash/MAC) request."""

    __slots__ = (
        "aad_len",
        "cipher_start_src_offset",
        "dst_data_len",
        "hash_result_len",
        "hash_start_src_offset",
        "iv_len",
        "len_to_cipher",
        "len_to_hash",
        "src_data_len",
    )
    _fields = (
        "iv_len",
        "src_data_len",
        "dst_data_len",
        "cipher_start_src_offset",
        "len_to_cipher",
        "hash_start_src_offset",
        "len_to_hash",
        "aad_len",
        "hash_result_len",
    )
    iv_len: int
    src_data_len: int
    dst_data_len: int
    cipher_start_src_offset: int
    len_to_cipher: int
    hash_start_src_offset: int
    len_to_hash: int
    aad_len: int
    hash_result_len: int

    def __init__(
        self,
        iv_len: int,
        src_data_len: int,
        dst_data_len: int,
        cipher_start_src_offset: int,
        len_to_cipher: int,
        hash_start_src_offset: int,
        len_to_hash: int,
        aad_len: int,
        hash_result_len: int,
    ) -> None:
        self._init(
            iv_len,
            src_data_len,
            dst_data_len,
            cipher_start_src_offset,
            len_to_cipher,
            hash_start_src_offset,
            len_to_hash,
            aad_len,
            hash_result_len,
        )


DataBody = SymCipherData | SymChainData | bytes


class DataRequest(FrozenRecord):
    """``virtio_crypto_op_data_req``: 72 bytes in front of a data request's buffers.

    ``body`` is :class:`SymCipherData` or :class:`SymChainData` for the
    cipher opcodes, and the raw 48-byte union otherwise.
    """

    __slots__ = ("body", "header")
    _fields = ("header", "body")
    header: DataHeader
    body: DataBody

    def __init__(self, header: DataHeader, body: DataBody) -> None:
        if isinstance(body, bytes | bytearray) and len(body) != DATA_UNION_SIZE:
            raise ValueError(f"a raw data union is {DATA_UNION_SIZE} bytes, not {len(body)}")
        self._init(header, bytes(body) if isinstance(body, bytearray) else body)

    def encode(self) -> bytes:
        body = self.body
        if isinstance(body, SymCipherData):
            para = _CIPHER_DATA.pack(body.iv_len, body.src_data_len, body.dst_data_len, 0)
            union = para.ljust(40, b"\0") + _U32.pack(SymOp.CIPHER) + bytes(4)
        elif isinstance(body, SymChainData):
            para = _CHAIN_DATA.pack(*body._values(), 0)
            union = para + _U32.pack(SymOp.ALGORITHM_CHAINING) + bytes(4)
        else:
            union = body
        return self.header.encode() + union

    @classmethod
    def decode(cls, data: bytes) -> DataRequest:
        """Read the 72-byte request (trailing bytes are the buffers and are ignored)."""
        _need(data, DATA_REQUEST_SIZE, "data request")
        opcode, algo, session_id, flag, _ = _DATA_HDR.unpack_from(data)
        header = DataHeader(opcode, algo, session_id, flag)
        union = bytes(data[DATA_HEADER_SIZE:DATA_REQUEST_SIZE])
        body: DataBody = union
        if opcode in (Opcode.CIPHER_ENCRYPT, Opcode.CIPHER_DECRYPT):
            op_type = _U32.unpack_from(union, 40)[0]
            if op_type == SymOp.CIPHER:
                body = SymCipherData(*_CIPHER_DATA.unpack_from(union)[:3])
            elif op_type == SymOp.ALGORITHM_CHAINING:
                body = SymChainData(*_CHAIN_DATA.unpack_from(union)[:9])
        return cls(header, body)


# --- config space ------------------------------------------------------------------------


class CryptoConfig(FrozenRecord):
    """``virtio_crypto_config``, the device's 56-byte config space."""

    __slots__ = (
        "aead_algo",
        "akcipher_algo",
        "cipher_algo_h",
        "cipher_algo_l",
        "crypto_services",
        "hash_algo",
        "mac_algo_h",
        "mac_algo_l",
        "max_auth_key_len",
        "max_cipher_key_len",
        "max_dataqueues",
        "max_size",
        "status",
    )
    _fields = (
        "status",
        "max_dataqueues",
        "crypto_services",
        "cipher_algo_l",
        "cipher_algo_h",
        "hash_algo",
        "mac_algo_l",
        "mac_algo_h",
        "aead_algo",
        "max_cipher_key_len",
        "max_auth_key_len",
        "akcipher_algo",
        "max_size",
    )
    status: int
    max_dataqueues: int
    crypto_services: int
    cipher_algo_l: int
    cipher_algo_h: int
    hash_algo: int
    mac_algo_l: int
    mac_algo_h: int
    aead_algo: int
    max_cipher_key_len: int
    max_auth_key_len: int
    akcipher_algo: int
    max_size: int

    SIZE = 56
    _STRUCT = struct.Struct("<12IQ")

    def __init__(
        self,
        status: int = 0,
        max_dataqueues: int = 0,
        crypto_services: int = 0,
        cipher_algo_l: int = 0,
        cipher_algo_h: int = 0,
        hash_algo: int = 0,
        mac_algo_l: int = 0,
        mac_algo_h: int = 0,
        aead_algo: int = 0,
        max_cipher_key_len: int = 0,
        max_auth_key_len: int = 0,
        akcipher_algo: int = 0,
        max_size: int = 0,
    ) -> None:
        self._init(
            status,
            max_dataqueues,
            crypto_services,
            cipher_algo_l,
            cipher_algo_h,
            hash_algo,
            mac_algo_l,
            mac_algo_h,
            aead_algo,
            max_cipher_key_len,
            max_auth_key_len,
            akcipher_algo,
            max_size,
        )

    def encode(self) -> bytes:
        return self._STRUCT.pack(*self._values())

    @classmethod
    def decode(cls, data: bytes) -> CryptoConfig:
        if len(data) != cls.SIZE:
            raise VirtioCryptoError(f"virtio-crypto config is {cls.SIZE} bytes, not {len(data)}")
        return cls(*cls._STRUCT.unpack(data))


# --- vhost-user CREATE_CRYPTO_SESSION payloads -------------------------------------------

#: QEMU 7.1-8.0: ``{i64 session_id; SymSessionInfo; key[64]; auth_key[512]}``, 632 bytes
LAYOUT_QEMU72 = "qemu-7.2"
#: QEMU up to 7.0 and DPDK's ``VhostUserCryptoSessionParam``: as 7.2 but with a
#: u32 ``op_code`` after ``session_id``, taken from what was padding; still 632 bytes
LAYOUT_LEGACY = "legacy"
#: QEMU 8.1+: ``{u64 op_code; union {sym | asym}; i64 session_id}``, 1072 bytes
LAYOUT_QEMU81 = "qemu-8.1"

SESSION_SIZE = 632
SESSION_SIZE_QEMU81 = 1072
MAX_CIPHER_KEY = 64
MAX_AUTH_KEY = 512
MAX_ASYM_KEY = 1024

# cipher_alg, key_len, hash_alg, hash_result_len, auth_key_len, aad_len; op_type,
# direction, hash_mode, alg_chain_order
_SYM_FIELDS = struct.Struct("<6I4B")
# the host pointers QEMU copies along are meaningless to the peer; sent as zero
_KEY_OFFSET = 56
_AUTH_KEY_OFFSET = 120
_ASYM_FIELDS = struct.Struct("<III4xQII")  # algo, keytype, keylen, key pointer, rsa params
_ASYM_KEY_OFFSET = 40
_QEMU81_ID_OFFSET = 1064


class SymSessionInfo(FrozenRecord):
    """A symmetric session as vhost-user carries it (QEMU's ``SymSessionInfo``)."""

    __slots__ = (
        "aad_len",
        "alg_chain_order",
        "auth_key",
        "cipher_alg",
        "direction",
        "hash_alg",
        "hash_mode",
        "hash_result_len",
        "key",
        "op_type",
    )
    _fields = (
        "cipher_alg",
        "key",
        "hash_alg",
        "hash_result_len",
        "auth_key",
        "aad_len",
        "op_type",
        "direction",
        "hash_mode",
        "alg_chain_order",
    )
    cipher_alg: int
    key: bytes
    hash_alg: int
    hash_result_len: int
    auth_key: bytes
    aad_len: int
    op_type: int
    direction: int
    hash_mode: int
    alg_chain_order: int

    def __init__(
        self,
        cipher_alg: int,
        key: bytes,
        direction: int,
        op_type: int = SymOp.CIPHER,
        hash_alg: int = 0,
        hash_result_len: int = 0,
        auth_key: bytes = b"",
        aad_len: int = 0,
        hash_mode: int = 0,
        alg_chain_order: int = 0,
    ) -> None:
        self._init(
            cipher_alg,
            bytes(key),
            hash_alg,
            hash_result_len,
            bytes(auth_key),
            aad_len,
            op_type,
            direction,
            hash_mode,
            alg_chain_order,
        )

    def __repr__(self) -> str:
        return (
            f"SymSessionInfo(cipher_alg={self.cipher_alg}, key=<{len(self.key)} bytes>, "
            f"direction={self.direction}, op_type={self.op_type}, hash_alg={self.hash_alg}, "
            f"hash_result_len={self.hash_result_len}, "
            f"auth_key=<{len(self.auth_key)} bytes>, aad_len={self.aad_len}, "
            f"hash_mode={self.hash_mode}, alg_chain_order={self.alg_chain_order})"
        )

    def _pack_fields(self) -> bytes:
        return _SYM_FIELDS.pack(
            self.cipher_alg,
            len(self.key),
            self.hash_alg,
            self.hash_result_len,
            len(self.auth_key),
            self.aad_len,
            self.op_type,
            self.direction,
            self.hash_mode,
            self.alg_chain_order,
        )


class AsymSessionInfo(FrozenRecord):
    """An asymmetric session (QEMU 8.1+ layout only)."""

    __slots__ = ("algo", "hash_algo", "key", "keytype", "padding_algo")
    _fields = ("algo", "keytype", "key", "padding_algo", "hash_algo")
    algo: int
    keytype: int
    key: bytes
    padding_algo: int
    hash_algo: int

    def __init__(
        self, algo: int, keytype: int, key: bytes, padding_algo: int = 0, hash_algo: int = 0
    ) -> None:
        self._init(algo, keytype, bytes(key), padding_algo, hash_algo)

    def __repr__(self) -> str:
        return (
            f"AsymSessionInfo(algo={self.algo}, keytype={self.keytype}, "
            f"key=<{len(self.key)} bytes>, padding_algo={self.padding_algo}, "
            f"hash_algo={self.hash_algo})"
        )


class SessionRequest(FrozenRecord):
    """A decoded CREATE_CRYPTO_SESSION payload.

    ``op_code`` is the create opcode the layout carries; QEMU 7.2's layout
    has none, and a cipher session is assumed.
    """

    __slots__ = ("info", "layout", "op_code", "session_id")
    _fields = ("layout", "session_id", "op_code", "info")
    layout: str
    session_id: int
    op_code: int
    info: SymSessionInfo | AsymSessionInfo

    def __init__(
        self, layout: str, session_id: int, op_code: int, info: SymSessionInfo | AsymSessionInfo
    ) -> None:
        self._init(layout, session_id, op_code, info)


def _check_keys(info: SymSessionInfo | AsymSessionInfo) -> None:
    if isinstance(info, AsymSessionInfo):
        if len(info.key) > MAX_ASYM_KEY:
            raise VirtioCryptoError("Unsupported asymmetric key size", Status.NOTSUPP)
        return
    if len(info.key) > MAX_CIPHER_KEY:
        raise VirtioCryptoError("Unsupported cipher key size", Status.NOTSUPP)
    if len(info.auth_key) > MAX_AUTH_KEY:
        raise VirtioCryptoError("Unsupported auth key size", Status.NOTSUPP)


def _pack_sym(info: SymSessionInfo) -> bytes:
    """SymSessionInfo, key and auth_key: the 624 bytes after session_id/op_code."""
    fields = info._pack_fields()  # 28 bytes
    head = fields + bytes(4 + 16)  # padding, then the two host pointers, zeroed
    return head + info.key.ljust(MAX_CIPHER_KEY, b"\0") + info.auth_key.ljust(MAX_AUTH_KEY, b"\0")


def encode_session(
    info: SymSessionInfo | AsymSessionInfo,
    layout: str = LAYOUT_QEMU72,
    session_id: int = 0,
    op_code: int = Opcode.CIPHER_CREATE_SESSION,
) -> bytes:
    """A CREATE_CRYPTO_SESSION payload in ``layout``.

    :raises VirtioCryptoError: a key too long for the layout's buffers, or
        an asymmetric session in a layout without room for one.
    """
    _check_keys(info)
    if layout == LAYOUT_QEMU81:
        if isinstance(info, AsymSessionInfo):
            body = _ASYM_FIELDS.pack(
                info.algo, info.keytype, len(info.key), 0, info.padding_algo, info.hash_algo
            ) + info.key.ljust(MAX_ASYM_KEY, b"\0")
        else:
            body = _pack_sym(info)
        body = body.ljust(_QEMU81_ID_OFFSET - 8, b"\0")
        return _U64.pack(op_code) + body + _I64.pack(session_id)
    if isinstance(info, AsymSessionInfo):
        raise VirtioCryptoError(
            f"asymmetric sessions need the {LAYOUT_QEMU81} layout", Status.NOTSUPP
        )
    sym = _pack_sym(info)
    if layout == LAYOUT_QEMU72:
        return _I64.pack(session_id) + sym
    if layout == LAYOUT_LEGACY:
        # op_code took the first 4 bytes of what became padding before the pointers
        return _I64.pack(session_id) + _U32.pack(op_code) + sym[:28] + sym[32:]
    raise ValueError(f"unknown session layout {layout!r}")


def _plausible_sym(fields: tuple[int, ...]) -> bool:
    cipher_alg, key_len, _hash_alg, _hlen, auth_key_len, _aad, op_type, direction = fields[:8]
    return (
        op_type in (SymOp.CIPHER, SymOp.ALGORITHM_CHAINING)
        and direction in (0, Op.ENCRYPT, Op.DECRYPT)
        and cipher_alg <= CipherAlgo.ZUC_EEA3
        and key_len <= MAX_CIPHER_KEY
        and auth_key_len <= MAX_AUTH_KEY
    )


def detect_session_layout(payload: bytes) -> str:
    """Which layout a CREATE_CRYPTO_SESSION payload is in.

    1072 bytes is QEMU 8.1+. 632 bytes is either QEMU 7.1-8.0 or the legacy
    layout; they differ only in the 28 bytes of fields after ``session_id``,
    shifted by 4. The legacy layout has a symmetric create opcode at 8 and
    ``op_type`` (1 or 2) at 36; QEMU 7.2 has ``op_type`` at 32 and zero
    padding at 36-39 (QEMU zero-fills the struct). The two tests exclude
    each other, so a payload that passes neither is refused rather than
    guessed at.

    :raises VirtioCryptoError: (``BADMSG``) for any other size or content.
    """
    if len(payload) == SESSION_SIZE_QEMU81:
        return LAYOUT_QEMU81
    if len(payload) != SESSION_SIZE:
        raise VirtioCryptoError(
            f"vhost-user crypto session payload is {len(payload)} bytes, "
            f"expected {SESSION_SIZE} or {SESSION_SIZE_QEMU81}"
        )
    qemu72 = _plausible_sym(_SYM_FIELDS.unpack_from(payload, 8)) and payload[36:40] == bytes(4)
    legacy = _U32.unpack_from(payload, 8)[0] in SYM_CREATE_OPCODES and _plausible_sym(
        _SYM_FIELDS.unpack_from(payload, 12)
    )
    if qemu72 and not legacy:
        return LAYOUT_QEMU72
    if legacy and not qemu72:
        return LAYOUT_LEGACY
    raise VirtioCryptoError("vhost-user crypto session payload in an unknown layout")


def _unpack_sym(payload: bytes, fields_at: int, keys_at: int) -> SymSessionInfo:
    cipher_alg, key_len, hash_alg, hlen, auth_len, aad, op_type, direction, mode, order = (
        _SYM_FIELDS.unpack_from(payload, fields_at)
    )
    if key_len > MAX_CIPHER_KEY:
        raise VirtioCryptoError("Unsupported cipher key size", Status.NOTSUPP)
    if auth_len > MAX_AUTH_KEY:
        raise VirtioCryptoError("Unsupported auth key size", Status.NOTSUPP)
    key = payload[keys_at : keys_at + key_len]
    auth_at = keys_at + MAX_CIPHER_KEY
    auth_key = payload[auth_at : auth_at + auth_len]
    return SymSessionInfo(
        cipher_alg, key, direction, op_type, hash_alg, hlen, auth_key, aad, mode, order
    )


def decode_session(payload: bytes, layout: str | None = None) -> SessionRequest:
    """Read a CREATE_CRYPTO_SESSION payload (layout detected when not given).

    :raises VirtioCryptoError: bad size, unknown layout, or key lengths
        beyond the buffers (the latter with ``NOTSUPP``, as QEMU 8.1 answers).
    """
    payload = bytes(payload)
    if layout is None:
        layout = detect_session_layout(payload)
    expected = SESSION_SIZE_QEMU81 if layout == LAYOUT_QEMU81 else SESSION_SIZE
    if layout not in (LAYOUT_QEMU72, LAYOUT_LEGACY, LAYOUT_QEMU81):
        raise ValueError(f"unknown session layout {layout!r}")
    if len(payload) != expected:
        raise VirtioCryptoError(
            f"{layout} crypto session payload is {expected} bytes, not {len(payload)}"
        )
    if layout == LAYOUT_QEMU72:
        info = _unpack_sym(payload, 8, _KEY_OFFSET)
        return SessionRequest(
            layout, _I64.unpack_from(payload)[0], Opcode.CIPHER_CREATE_SESSION, info
        )
    if layout == LAYOUT_LEGACY:
        info = _unpack_sym(payload, 12, _KEY_OFFSET)
        return SessionRequest(
            layout, _I64.unpack_from(payload)[0], _U32.unpack_from(payload, 8)[0], info
        )
    op_code = _U64.unpack_from(payload)[0]
    session_id = _I64.unpack_from(payload, _QEMU81_ID_OFFSET)[0]
    if op_code == Opcode.AKCIPHER_CREATE_SESSION:
        algo, keytype, keylen, _ptr, padding_algo, hash_algo = _ASYM_FIELDS.unpack_from(payload, 8)
        if keylen > MAX_ASYM_KEY:
            raise VirtioCryptoError("Unsupported asymmetric key size", Status.NOTSUPP)
        key = payload[_ASYM_KEY_OFFSET : _ASYM_KEY_OFFSET + keylen]
        asym = AsymSessionInfo(algo, keytype, key, padding_algo, hash_algo)
        return SessionRequest(layout, session_id, op_code, asym)
    return SessionRequest(layout, session_id, op_code, _unpack_sym(payload, 8, _KEY_OFFSET))


def encode_session_reply(request_payload: bytes, session_id: int) -> bytes:
    """The reply payload: the request's struct with ``session_id`` filled in.

    A negative ``session_id`` reports failure (QEMU prints ``Bad session
    id: <n>`` and fails the guest's request); backends conventionally send
    ``-status``. The id goes where the request's layout keeps it.

    :raises VirtioCryptoError: the request payload has a size no layout has.
    """
    out = bytearray(request_payload)
    if len(out) == SESSION_SIZE_QEMU81:
        _I64.pack_into(out, _QEMU81_ID_OFFSET, session_id)
    elif len(out) == SESSION_SIZE:
        _I64.pack_into(out, 0, session_id)
    else:
        raise VirtioCryptoError(
            f"vhost-user crypto session payload is {len(out)} bytes, "
            f"expected {SESSION_SIZE} or {SESSION_SIZE_QEMU81}"
        )
    return bytes(out)


def session_reply_id(reply_payload: bytes, layout: str) -> int:
    """The session id a backend answered, read where ``layout`` keeps it."""
    offset = _QEMU81_ID_OFFSET if layout == LAYOUT_QEMU81 else 0
    _need(reply_payload, offset + 8, "session reply")
    session_id: int = _I64.unpack_from(reply_payload, offset)[0]
    return session_id
