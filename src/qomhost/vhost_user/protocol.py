"""The vhost-user wire protocol without I/O.

Every vhost-user message is a 12-byte little-endian header followed by
``size`` bytes of payload::

    u32 request     which message (Request.GET_FEATURES, ...)
    u32 flags       bits 0-1: version, always 1; 0x4 REPLY; 0x8 NEED_REPLY
    u32 size        payload length

A frontend sends requests with ``flags`` 0x1, or 0x9 when it wants a
REPLY_ACK (only once ``ProtocolFeature.REPLY_ACK`` is negotiated). A
backend answers with ``flags`` exactly 0x5 -- QEMU rejects anything else.
File descriptors (memory regions, eventfds, the backend request channel)
are not in the bytes: the sender attaches them with ``SCM_RIGHTS`` to the
``sendmsg`` that carries the message. On a unix stream socket a
``recvmsg`` that reaches an fd-carrying send stops at its end, so the fds
come with a chunk whose *last* byte belongs to their message -- though
the same chunk may begin with earlier messages that carry none.

Messages are small immutable values, one class per payload shape; the
``request`` field says which message it is::

    >>> msg = VringFile(Request.SET_VRING_CALL, index=0, fd=7)
    >>> msg.encode().hex(), msg.fds
    ('0d00000001000000080000000000000000000000', (7,))

:class:`VhostUserDecoder` turns a byte stream plus the fds that came with
it into messages. It is built for one end of the socket: a ``BACKEND``
decoder reads requests, a ``FRONTEND`` decoder reads replies (the two
need different payloads for the same request number, e.g. ``GET_FEATURES``
is empty as a request and a u64 as a reply). A malformed message is
reported as a :class:`VhostUserProtocolError` carrying the text QEMU or
libvhost-user prints for the same fault; the stream cannot be
resynchronised after one, so the connection must then be closed.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from qomhost._record import FrozenRecord
from qomhost.errors import QemuError

__all__ = [
    "BACKEND",
    "BACKEND_REQ",
    "FRONTEND",
    "HEADER_SIZE",
    "MAX_MEM_REGIONS",
    "U64",
    "BackendReq",
    "BackendRequest",
    "Config",
    "CryptoSession",
    "Empty",
    "Header",
    "MemReg",
    "MemTable",
    "MemoryRegion",
    "Message",
    "ProtocolFeature",
    "RawReply",
    "Request",
    "SlaveReqFd",
    "VhostUserDecoder",
    "VhostUserProtocolError",
    "VringAddr",
    "VringFile",
    "VringState",
    "check_reply",
    "close_fds",
    "decode_message",
    "fd_count",
]

HEADER_SIZE = 12

#: the version in flags bits 0-1
VERSION = 0x1
VERSION_MASK = 0x3
#: set in every reply
REPLY = 0x4
#: the frontend wants a REPLY_ACK (u64, 0 = success) to this request
NEED_REPLY = 0x8

#: flags of a plain request, a request wanting an ack, and a reply
FLAGS_REQUEST = VERSION
FLAGS_NEED_REPLY = VERSION | NEED_REPLY
FLAGS_REPLY = VERSION | REPLY

#: the virtio feature bit (in GET_FEATURES) that says protocol features exist
F_PROTOCOL_FEATURES = 30

#: SET_VRING_KICK/CALL/ERR payload: the ring index, and "no fd: poll instead"
VRING_IDX_MASK = 0xFF
VRING_NOFD_MASK = 0x100

#: SET_MEM_TABLE carries at most this many regions (one fd each)
MAX_MEM_REGIONS = 8
#: ADD_MEM_REG/REM_MEM_REG payload: u64 padding, then one region
MEM_REG_SIZE = 40
#: GET/SET_CONFIG: the largest config space, and the fixed part before it
MAX_CONFIG_SIZE = 256
CONFIG_HDR_SIZE = 12

#: CREATE_CRYPTO_SESSION payload sizes: QEMU up to 8.0 (and DPDK), and 8.1+
CRYPTO_SESSION_SIZE = 632
CRYPTO_SESSION_SIZE_ASYM = 1072

#: the largest payload QEMU 7.2's frontend reads (its payload union)
FRONTEND_MAX_PAYLOAD = CRYPTO_SESSION_SIZE
#: the largest payload a backend accepts: the 8.1+ crypto session
BACKEND_MAX_PAYLOAD = CRYPTO_SESSION_SIZE_ASYM

#: decoder roles: the end of the socket the decoder sits at. BACKEND_REQ is
#: the frontend's end of the backend-request channel (SET_SLAVE_REQ_FD),
#: where the backend sends requests of its own numbering (BackendRequest).
FRONTEND = "frontend"
BACKEND = "backend"
BACKEND_REQ = "backend-req"


class Request:
    """Message numbers (QEMU 7.2's ``VhostUserRequest``).

    Plain ints in a namespace: ``enum`` costs more to import than this
    whole module, and the numbers go straight into ``struct``.
    """

    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SEND_RARP = 19
    NET_SET_MTU = 20
    SET_SLAVE_REQ_FD = 21
    IOTLB_MSG = 22
    SET_VRING_ENDIAN = 23
    GET_CONFIG = 24
    SET_CONFIG = 25
    CREATE_CRYPTO_SESSION = 26
    CLOSE_CRYPTO_SESSION = 27
    POSTCOPY_ADVISE = 28
    POSTCOPY_LISTEN = 29
    POSTCOPY_END = 30
    GET_INFLIGHT_FD = 31
    SET_INFLIGHT_FD = 32
    GPU_SET_SOCKET = 33
    RESET_DEVICE = 34
    VRING_KICK = 35
    GET_MAX_MEM_SLOTS = 36
    ADD_MEM_REG = 37
    REM_MEM_REG = 38
    SET_STATUS = 39
    GET_STATUS = 40


class BackendRequest:
    """Requests a backend sends on the backend-request channel (QEMU 7.2's
    ``VhostUserSlaveRequest``); a separate numbering from :class:`Request`."""

    IOTLB_MSG = 1
    CONFIG_CHANGE_MSG = 2
    VRING_HOST_NOTIFIER_MSG = 3


#: request number -> name, for messages and logs
REQUEST_NAMES: dict[int, str] = {
    value: name
    for name, value in vars(Request).items()
    if not name.startswith("_") and isinstance(value, int)
}


def request_name(request: int) -> str:
    """``GET_FEATURES`` for 1; ``UNKNOWN(n)`` for numbers QEMU 7.2 does not define."""
    return REQUEST_NAMES.get(request, f"UNKNOWN({request})")


class ProtocolFeature:
    """Bit numbers of the protocol features (GET/SET_PROTOCOL_FEATURES), QEMU 7.2."""

    MQ = 0
    LOG_SHMFD = 1
    RARP = 2
    REPLY_ACK = 3
    NET_MTU = 4
    SLAVE_REQ = 5
    CROSS_ENDIAN = 6
    CRYPTO_SESSION = 7
    PAGEFAULT = 8
    CONFIG = 9
    SLAVE_SEND_FD = 10
    HOST_NOTIFIER = 11
    INFLIGHT_SHMFD = 12
    RESET_DEVICE = 13
    INBAND_NOTIFICATIONS = 14
    CONFIGURE_MEM_SLOTS = 15
    STATUS = 16

    #: QEMU 7.2 masks what a backend offers with this before answering
    MASK = (1 << 17) - 1


class VhostUserProtocolError(QemuError):
    """A malformed vhost-user message; the connection must be closed.

    :param fds: descriptors that arrived but belong to no delivered message.
        The decoder never closes descriptors itself (it does no I/O); whoever
        owns the socket closes these.
    """

    def __init__(self, desc: str, fds: tuple[int, ...] = ()) -> None:
        super().__init__(desc)
        self.fds = fds


_HDR = struct.Struct("<III")
_U64 = struct.Struct("<Q")
_STATE = struct.Struct("<II")
_ADDR = struct.Struct("<IIQQQQ")
_REGION = struct.Struct("<QQQQ")
_MEM_HDR = struct.Struct("<II")
_CONFIG_HDR = struct.Struct("<III")


class Header(FrozenRecord):
    """The 12-byte header in front of every message."""

    __slots__ = ("flags", "request", "size")
    _fields = ("request", "flags", "size")
    request: int
    flags: int
    size: int

    def __init__(self, request: int, flags: int, size: int) -> None:
        self._init(request, flags, size)

    def encode(self) -> bytes:
        return _HDR.pack(self.request, self.flags, self.size)

    @classmethod
    def decode(cls, data: bytes) -> Header:
        """The header at the start of ``data`` (at least 12 bytes)."""
        return cls(*_HDR.unpack_from(data))


class Message(FrozenRecord):
    """Base of all messages: ``request`` number and header ``flags``.

    Subclasses add the payload fields and implement :meth:`payload`.
    """

    __slots__ = ("flags", "request")
    request: int
    flags: int

    @property
    def need_reply(self) -> bool:
        """The sender wants a REPLY_ACK."""
        return bool(self.flags & NEED_REPLY)

    @property
    def is_reply(self) -> bool:
        return bool(self.flags & REPLY)

    @property
    def fds(self) -> tuple[int, ...]:
        """The descriptors sent with this message, in order."""
        return ()

    def payload(self) -> bytes:
        raise NotImplementedError

    def encode(self) -> bytes:
        """Header and payload, ready for ``sendmsg`` (send :attr:`fds` with them)."""
        body = self.payload()
        return _HDR.pack(self.request, self.flags, len(body)) + body


class Empty(Message):
    """A message without payload: GET_FEATURES, SET_OWNER, GET_QUEUE_NUM, ..."""

    __slots__ = ()
    _fields = ("request", "flags")

    def __init__(self, request: int, flags: int = FLAGS_REQUEST) -> None:
        self._init(request, flags)

    def payload(self) -> bytes:
        return b""


class U64(Message):
    """A u64 payload.

    Requests: SET_FEATURES, SET_PROTOCOL_FEATURES, SET_STATUS,
    CLOSE_CRYPTO_SESSION (the session id). Replies (``flags=FLAGS_REPLY``):
    GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS,
    GET_STATUS, and the REPLY_ACK to any request (0 = success).
    """

    __slots__ = ("value",)
    _fields = ("request", "flags", "value")
    value: int

    def __init__(self, request: int, value: int, flags: int = FLAGS_REQUEST) -> None:
        self._init(request, flags, value)

    def payload(self) -> bytes:
        return _U64.pack(self.value)


class VringState(Message):
    """``{u32 index, u32 num}``: SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE and its reply."""

    __slots__ = ("index", "num")
    _fields = ("request", "flags", "index", "num")
    index: int
    num: int

    def __init__(self, request: int, index: int, num: int, flags: int = FLAGS_REQUEST) -> None:
        self._init(request, flags, index, num)

    def payload(self) -> bytes:
        return _STATE.pack(self.index, self.num)


class VringAddr(Message):
    """SET_VRING_ADDR: where the rings are, as frontend user-space addresses.

    ``flags_addr`` bit 0 asks the backend to log used-ring writes to
    ``log_guest_addr`` (dirty logging for migration).
    """

    __slots__ = (
        "avail_user_addr",
        "desc_user_addr",
        "index",
        "log_guest_addr",
        "ring_flags",
        "used_user_addr",
    )
    _fields = (
        "request",
        "flags",
        "index",
        "ring_flags",
        "desc_user_addr",
        "used_user_addr",
        "avail_user_addr",
        "log_guest_addr",
    )
    index: int
    ring_flags: int
    desc_user_addr: int
    used_user_addr: int
    avail_user_addr: int
    log_guest_addr: int

    def __init__(
        self,
        index: int,
        desc_user_addr: int,
        used_user_addr: int,
        avail_user_addr: int,
        log_guest_addr: int = 0,
        ring_flags: int = 0,
        flags: int = FLAGS_REQUEST,
    ) -> None:
        self._init(
            Request.SET_VRING_ADDR,
            flags,
            index,
            ring_flags,
            desc_user_addr,
            used_user_addr,
            avail_user_addr,
            log_guest_addr,
        )

    def payload(self) -> bytes:
        return _ADDR.pack(
            self.index,
            self.ring_flags,
            self.desc_user_addr,
            self.used_user_addr,
            self.avail_user_addr,
            self.log_guest_addr,
        )


class VringFile(Message):
    """SET_VRING_KICK/CALL/ERR: an eventfd for ring ``index``.

    ``fd=None`` sets bit 8 of the payload and sends no descriptor: the
    other end must poll the ring instead of waiting on an eventfd.
    """

    __slots__ = ("fd", "index")
    _fields = ("request", "flags", "index", "fd")
    index: int
    fd: int | None

    def __init__(
        self, request: int, index: int, fd: int | None, flags: int = FLAGS_REQUEST
    ) -> None:
        self._init(request, flags, index, fd)

    @property
    def fds(self) -> tuple[int, ...]:
        return () if self.fd is None else (self.fd,)

    def payload(self) -> bytes:
        nofd = VRING_NOFD_MASK if self.fd is None else 0
        return _U64.pack((self.index & VRING_IDX_MASK) | nofd)


class MemoryRegion(FrozenRecord):
    """One region of guest memory and the fd that maps it.

    The backend maps ``memory_size`` bytes of ``fd`` from ``mmap_offset``;
    the frontend addresses the same bytes as ``userspace_addr`` (used in
    SET_VRING_ADDR) and the guest as ``guest_phys_addr`` (used in
    descriptors).
    """

    __slots__ = ("fd", "guest_phys_addr", "memory_size", "mmap_offset", "userspace_addr")
    _fields = ("guest_phys_addr", "memory_size", "userspace_addr", "mmap_offset", "fd")
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    mmap_offset: int
    fd: int

    def __init__(
        self,
        guest_phys_addr: int,
        memory_size: int,
        userspace_addr: int,
        mmap_offset: int,
        fd: int,
    ) -> None:
        self._init(guest_phys_addr, memory_size, userspace_addr, mmap_offset, fd)


class MemTable(Message):
    """SET_MEM_TABLE: ``{u32 nregions, u32 padding, regions[nregions]}``, one fd each.

    Like QEMU, only the used regions are sent: the payload is
    ``8 + 32 * nregions`` bytes.
    """

    __slots__ = ("regions",)
    _fields = ("request", "flags", "regions")
    regions: tuple[MemoryRegion, ...]

    def __init__(self, regions: tuple[MemoryRegion, ...], flags: int = FLAGS_REQUEST) -> None:
        self._init(Request.SET_MEM_TABLE, flags, tuple(regions))

    @property
    def fds(self) -> tuple[int, ...]:
        return tuple(region.fd for region in self.regions)

    def payload(self) -> bytes:
        parts = [_MEM_HDR.pack(len(self.regions), 0)]
        for r in self.regions:
            parts.append(
                _REGION.pack(r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset)
            )
        return b"".join(parts)


class MemReg(Message):
    """ADD_MEM_REG / REM_MEM_REG: ``{u64 padding, one region}``, 40 bytes.

    With ``ProtocolFeature.CONFIGURE_MEM_SLOTS`` the frontend sends its
    memory one region at a time instead of a whole ``SET_MEM_TABLE``
    (QEMU 7.2 does so even for the first table). ADD_MEM_REG carries the
    region's fd. REM_MEM_REG names the region by its guest address, user
    address and size; the specification says it carries no fd, but
    accepts one for the sake of senders that attach it anyway, so
    ``region.fd`` is -1 when none came.
    """

    __slots__ = ("region",)
    _fields = ("request", "flags", "region")
    region: MemoryRegion

    def __init__(self, request: int, region: MemoryRegion, flags: int = FLAGS_REQUEST) -> None:
        if request not in (Request.ADD_MEM_REG, Request.REM_MEM_REG):
            raise ValueError(f"MemReg is for ADD_MEM_REG or REM_MEM_REG, not {request}")
        self._init(request, flags, region)

    @property
    def fds(self) -> tuple[int, ...]:
        return () if self.region.fd < 0 else (self.region.fd,)

    def payload(self) -> bytes:
        r = self.region
        return _U64.pack(0) + _REGION.pack(
            r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset
        )


class SlaveReqFd(Message):
    """SET_SLAVE_REQ_FD: the socket on which the backend may send requests back."""

    __slots__ = ("fd",)
    _fields = ("request", "flags", "fd")
    fd: int

    def __init__(self, fd: int, flags: int = FLAGS_REQUEST) -> None:
        self._init(Request.SET_SLAVE_REQ_FD, flags, fd)

    @property
    def fds(self) -> tuple[int, ...]:
        return (self.fd,)

    def payload(self) -> bytes:
        return b""


class Config(Message):
    """GET/SET_CONFIG and the GET_CONFIG reply: ``{u32 offset, u32 size, u32 flags, data}``.

    ``config_flags`` is the message's own flags field (1 = writable, 2 =
    migration), distinct from the header's ``flags``.
    """

    __slots__ = ("config_flags", "data", "offset")
    _fields = ("request", "flags", "offset", "config_flags", "data")
    offset: int
    config_flags: int
    data: bytes

    def __init__(
        self,
        request: int,
        offset: int,
        data: bytes,
        config_flags: int = 0,
        flags: int = FLAGS_REQUEST,
    ) -> None:
        self._init(request, flags, offset, config_flags, bytes(data))

    def payload(self) -> bytes:
        return _CONFIG_HDR.pack(self.offset, len(self.data), self.config_flags) + self.data


class CryptoSession(Message):
    """CREATE_CRYPTO_SESSION request or reply, payload kept as bytes.

    The payload's layout depends on the frontend's QEMU version;
    :mod:`qomhost.cryptodev.virtio_crypto` tells the layouts apart and
    decodes them.
    """

    __slots__ = ("session",)
    _fields = ("request", "flags", "session")
    session: bytes

    def __init__(self, session: bytes, flags: int = FLAGS_REQUEST) -> None:
        self._init(Request.CREATE_CRYPTO_SESSION, flags, bytes(session))

    def __repr__(self) -> str:
        # The payload holds the session's cipher and auth keys.
        return f"CryptoSession(flags={self.flags}, session=<{len(self.session)} bytes>)"

    def payload(self) -> bytes:
        return self.session


class BackendReq(Message):
    """A request on the backend-request channel, payload kept as bytes.

    What each request means, and how the frontend answers it, is
    :mod:`qomhost.vhost_user.backend_channel`'s business; the codec only
    frames it and keeps the fds that came with it.
    """

    __slots__ = ("data", "sent_fds")
    _fields = ("request", "flags", "data", "sent_fds")
    data: bytes
    sent_fds: tuple[int, ...]

    def __init__(
        self,
        request: int,
        data: bytes = b"",
        fds: tuple[int, ...] = (),
        flags: int = FLAGS_REQUEST,
    ) -> None:
        self._init(request, flags, bytes(data), tuple(fds))

    @property
    def fds(self) -> tuple[int, ...]:
        return self.sent_fds

    def payload(self) -> bytes:
        return self.data


class RawReply(Message):
    """A reply whose payload has no shape its request's replies can have.

    The ``FRONTEND`` decoder gives these instead of failing, because QEMU
    reads any reply of a valid header and only then checks it, request
    number first: :func:`check_reply` reports one with QEMU's text
    (``Received unexpected msg type...`` or ``Received bad msg size.``).
    """

    __slots__ = ("data",)
    _fields = ("request", "flags", "data")
    data: bytes

    def __init__(self, request: int, data: bytes, flags: int = FLAGS_REPLY) -> None:
        self._init(request, flags, bytes(data))

    def payload(self) -> bytes:
        return self.data


# --- decoding ----------------------------------------------------------------------------

#: requests whose reply is a u64 (besides REPLY_ACKs)
_U64_REPLIES = frozenset(
    {
        Request.GET_FEATURES,
        Request.GET_PROTOCOL_FEATURES,
        Request.GET_QUEUE_NUM,
        Request.GET_MAX_MEM_SLOTS,
        Request.GET_STATUS,
    }
)
_EMPTY_REQUESTS = frozenset(
    {
        Request.GET_FEATURES,
        Request.SET_OWNER,
        Request.RESET_OWNER,
        Request.GET_PROTOCOL_FEATURES,
        Request.GET_QUEUE_NUM,
        Request.GET_MAX_MEM_SLOTS,
        Request.GET_STATUS,
        Request.RESET_DEVICE,
    }
)
_U64_REQUESTS = frozenset(
    {
        Request.SET_FEATURES,
        Request.SET_PROTOCOL_FEATURES,
        Request.SET_STATUS,
        Request.CLOSE_CRYPTO_SESSION,
    }
)
_STATE_REQUESTS = frozenset(
    {
        Request.SET_VRING_NUM,
        Request.SET_VRING_BASE,
        Request.GET_VRING_BASE,
        Request.SET_VRING_ENABLE,
    }
)
_FILE_REQUESTS = frozenset({Request.SET_VRING_KICK, Request.SET_VRING_CALL, Request.SET_VRING_ERR})
_SESSION_SIZES = (CRYPTO_SESSION_SIZE, CRYPTO_SESSION_SIZE_ASYM)


def _bad_size(header: Header, expected: str) -> VhostUserProtocolError:
    return VhostUserProtocolError(
        f"Invalid size {header.size} for {request_name(header.request)} "
        f"({header.request}): expected {expected}"
    )


def close_fds(fds: Sequence[int]) -> None:
    """Close fds that came with a message nobody keeps (one already closed is fine)."""
    import os

    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def fd_count(request: int, payload: bytes) -> int:
    """How many descriptors a request with this payload must arrive with.

    The count can depend on the payload (SET_MEM_TABLE: one per region;
    SET_VRING_KICK/CALL/ERR: none when bit 8 says "poll"). Replies carry
    none. A payload too short to tell gives 0; decoding reports its size.
    REM_MEM_REG should carry none, and a decoder also accepts one.
    """
    if request == Request.SET_MEM_TABLE:
        if len(payload) < _MEM_HDR.size:
            return 0
        nregions: int = _MEM_HDR.unpack_from(payload)[0]
        return min(nregions, MAX_MEM_REGIONS)
    if request in _FILE_REQUESTS:
        if len(payload) != _U64.size:
            return 0
        return 0 if _U64.unpack(payload)[0] & VRING_NOFD_MASK else 1
    if request in (Request.SET_SLAVE_REQ_FD, Request.ADD_MEM_REG):
        return 1
    return 0


def _decode_request(header: Header, payload: bytes, fds: tuple[int, ...]) -> Message:
    req, flags, size = header.request, header.flags, header.size
    want = fd_count(req, payload)
    if req not in REQUEST_NAMES or req in (Request.SET_LOG_BASE, Request.SET_LOG_FD):
        raise VhostUserProtocolError(f"Unhandled request: {req}")
    if req in _EMPTY_REQUESTS:
        if size != 0:
            raise _bad_size(header, "0")
        msg: Message = Empty(req, flags)
    elif req in _U64_REQUESTS:
        if size != _U64.size:
            raise _bad_size(header, "8")
        msg = U64(req, _U64.unpack(payload)[0], flags)
    elif req in _STATE_REQUESTS:
        if size != _STATE.size:
            raise _bad_size(header, "8")
        index, num = _STATE.unpack(payload)
        msg = VringState(req, index, num, flags)
    elif req == Request.SET_VRING_ADDR:
        if size != _ADDR.size:
            raise VhostUserProtocolError("Invalid vring_addr message")
        index, ring_flags, desc, used, avail, log = _ADDR.unpack(payload)
        msg = VringAddr(index, desc, used, avail, log, ring_flags, flags)
    elif req in _FILE_REQUESTS:
        if size != _U64.size:
            raise _bad_size(header, "8")
        u64 = _U64.unpack(payload)[0]
        if len(fds) != want:
            raise VhostUserProtocolError(f"Invalid fds in request: {req}")
        msg = VringFile(req, u64 & VRING_IDX_MASK, fds[0] if fds else None, flags)
    elif req == Request.SET_MEM_TABLE:
        if size < _MEM_HDR.size:
            raise _bad_size(header, "8 + 32 * nregions")
        nregions = _MEM_HDR.unpack_from(payload)[0]
        if nregions > MAX_MEM_REGIONS:
            raise VhostUserProtocolError(
                f"Invalid number of memory regions: {nregions} (at most {MAX_MEM_REGIONS})"
            )
        if size != _MEM_HDR.size + nregions * _REGION.size:
            raise _bad_size(header, f"{_MEM_HDR.size + nregions * _REGION.size}")
        if len(fds) != nregions:
            raise VhostUserProtocolError(f"Invalid fds in request: {req}")
        regions = []
        for i in range(nregions):
            gpa, length, uaddr, offset = _REGION.unpack_from(
                payload, _MEM_HDR.size + i * _REGION.size
            )
            regions.append(MemoryRegion(gpa, length, uaddr, offset, fds[i]))
        msg = MemTable(tuple(regions), flags)
    elif req == Request.SET_SLAVE_REQ_FD:
        if size != 0:
            raise _bad_size(header, "0")
        if len(fds) != 1:
            raise VhostUserProtocolError(f"Invalid backend_req_fd message ({len(fds)} fd's)")
        msg = SlaveReqFd(fds[0], flags)
    elif req in (Request.GET_CONFIG, Request.SET_CONFIG):
        msg = _decode_config(header, payload)
    elif req in (Request.ADD_MEM_REG, Request.REM_MEM_REG):
        if size != MEM_REG_SIZE:
            raise _bad_size(header, f"{MEM_REG_SIZE}")
        # REM_MEM_REG: none expected, one tolerated (the backend closes it)
        allowed = (want, 1) if req == Request.REM_MEM_REG else (want,)
        if len(fds) not in allowed:
            raise VhostUserProtocolError(
                f"{request_name(req)} received {len(fds)} fds - "
                f"{'at most' if len(allowed) > 1 else 'only'} {max(allowed)} should be sent"
            )
        want = len(fds)
        gpa, length, uaddr, offset = _REGION.unpack_from(payload, _U64.size)
        msg = MemReg(req, MemoryRegion(gpa, length, uaddr, offset, fds[0] if fds else -1), flags)
    elif req == Request.CREATE_CRYPTO_SESSION:
        if size not in _SESSION_SIZES:
            raise _bad_size(header, f"{CRYPTO_SESSION_SIZE} or {CRYPTO_SESSION_SIZE_ASYM}")
        msg = CryptoSession(payload, flags)
    else:
        raise VhostUserProtocolError(f"Unhandled request: {req}")
    if len(fds) != want:
        raise VhostUserProtocolError(f"Invalid fds in request: {req}")
    return msg


def _decode_config(header: Header, payload: bytes) -> Config:
    if header.size < CONFIG_HDR_SIZE:
        raise _bad_size(header, f"at least {CONFIG_HDR_SIZE}")
    offset, length, config_flags = _CONFIG_HDR.unpack_from(payload)
    if length > MAX_CONFIG_SIZE or header.size != CONFIG_HDR_SIZE + length:
        raise VhostUserProtocolError(
            f"Invalid config size {length} in a {header.size}-byte "
            f"{request_name(header.request)} message"
        )
    return Config(header.request, offset, payload[CONFIG_HDR_SIZE:], config_flags, header.flags)


def _decode_reply(header: Header, payload: bytes, fds: tuple[int, ...]) -> Message:
    req = header.request
    if fds:
        raise VhostUserProtocolError(f"Invalid fds in reply to request: {req}")
    if req == Request.GET_VRING_BASE and header.size == _STATE.size:
        index, num = _STATE.unpack(payload)
        return VringState(req, index, num, header.flags)
    if req == Request.GET_CONFIG and header.size >= CONFIG_HDR_SIZE:
        offset, length, config_flags = _CONFIG_HDR.unpack_from(payload)
        if header.size == CONFIG_HDR_SIZE + length:
            return Config(req, offset, payload[CONFIG_HDR_SIZE:], config_flags, header.flags)
    if req == Request.CREATE_CRYPTO_SESSION and header.size in _SESSION_SIZES:
        return CryptoSession(payload, header.flags)
    if header.size == _U64.size and req in REQUEST_NAMES:
        # the u64 replies to GET_*, and the REPLY_ACK any request may get
        return U64(req, _U64.unpack(payload)[0], header.flags)
    return RawReply(req, payload, header.flags)


def _check_header(header: Header, role: str, max_payload: int) -> None:
    if role == BACKEND_REQ:
        # QEMU 7.2 checks only the size of what a backend sends it
        if header.size > max_payload:
            raise VhostUserProtocolError(
                f"Failed to read msg header. Size {header.size} exceeds the maximum {max_payload}."
            )
        return
    if role == FRONTEND:
        # QEMU's vhost_user_read_header: a reply's flags are exactly 0x5
        if header.flags != FLAGS_REPLY:
            raise VhostUserProtocolError(
                f"Failed to read msg header. Flags 0x{header.flags:x} instead of 0x{FLAGS_REPLY:x}."
            )
        if header.size > max_payload:
            raise VhostUserProtocolError(
                f"Failed to read msg header. Size {header.size} exceeds the maximum {max_payload}."
            )
        return
    if header.flags & VERSION_MASK != VERSION or header.flags & ~(VERSION_MASK | NEED_REPLY):
        raise VhostUserProtocolError(
            f"Invalid flags 0x{header.flags:x} in request {header.request}: "
            f"expected version 0x{VERSION:x}, optionally with NEED_REPLY 0x{NEED_REPLY:x}"
        )
    if header.size > max_payload:
        raise VhostUserProtocolError(
            f"Error: too big message request: {header.request}, size: vmsg->size: "
            f"{header.size}, while sizeof(vmsg->payload) = {max_payload}"
        )


def decode_message(
    data: bytes,
    fds: list[int] | tuple[int, ...] = (),
    role: str = BACKEND,
    max_payload: int | None = None,
) -> Message:
    """Decode exactly one complete message (header and payload) and its fds.

    :param role: ``BACKEND`` to read a request, ``FRONTEND`` to read a reply.
    :raises VhostUserProtocolError: for any malformed input; its ``fds``
        are the given descriptors, which then belong to no message.
    """
    fds = tuple(fds)
    limit = _max_payload(role, max_payload)
    try:
        if len(data) < HEADER_SIZE:
            raise VhostUserProtocolError(
                f"Failed to read msg header. Read {len(data)} instead of {HEADER_SIZE}."
            )
        header = Header.decode(data)
        _check_header(header, role, limit)
        if len(data) != HEADER_SIZE + header.size:
            raise VhostUserProtocolError(
                f"Failed to read msg payload. Read {len(data) - HEADER_SIZE} instead of "
                f"{header.size}."
            )
        return _decode_body(header, bytes(data[HEADER_SIZE:]), fds, role)
    except VhostUserProtocolError as exc:
        raise VhostUserProtocolError(exc.desc, fds) from None


def _decode_body(header: Header, payload: bytes, fds: tuple[int, ...], role: str) -> Message:
    if role == BACKEND_REQ:
        return BackendReq(header.request, payload, fds, header.flags)
    if role == FRONTEND:
        return _decode_reply(header, payload, fds)
    return _decode_request(header, payload, fds)


def _max_payload(role: str, max_payload: int | None) -> int:
    if role not in (FRONTEND, BACKEND, BACKEND_REQ):
        raise ValueError(f"role must be {FRONTEND!r}, {BACKEND!r} or {BACKEND_REQ!r}, not {role!r}")
    if max_payload is not None:
        return max_payload
    return BACKEND_MAX_PAYLOAD if role == BACKEND else FRONTEND_MAX_PAYLOAD


def check_reply(
    reply: Message, request: int, u64: bool = True, expect: type[Message] | None = None
) -> None:
    """Check that ``reply`` answers ``request`` as QEMU's frontend checks it.

    The request number first, then the payload's shape, as QEMU 7.2 does.

    :param u64: the request expects a u64 reply (GET_FEATURES, REPLY_ACK, ...).
    :param expect: or this message class (``VringState`` for GET_VRING_BASE, ...).
    :raises VhostUserProtocolError: with QEMU's text.
    """
    if reply.request != request:
        raise VhostUserProtocolError(
            f"Received unexpected msg type. Expected {request} received {reply.request}"
        )
    shape = expect if expect is not None else U64 if u64 else None
    if shape is not None and not isinstance(reply, shape):
        raise VhostUserProtocolError("Received bad msg size.")


class VhostUserDecoder:
    """Split a stream of bytes and fds into messages, for one end of a socket.

    :param role: ``BACKEND`` decodes the requests a backend receives;
        ``FRONTEND`` decodes the replies a frontend receives;
        ``BACKEND_REQ`` the requests a frontend receives on the
        backend-request channel (as :class:`BackendReq`, fds attached).
    :param max_payload: the largest payload accepted (default: QEMU 7.2's
        632 for a frontend, 1072 for a backend, enough for QEMU 8.1+'s
        crypto sessions).

    Feed it what each ``recvmsg`` returned, in order: the bytes and the
    fds that came with them. Reads may be of any size -- one message at a
    time, or large chunks holding several.

    :meth:`feed` never raises for bad input. It returns the messages
    completed so far; when the input is malformed, the list ends with a
    :class:`VhostUserProtocolError` and the decoder is *closed*: the byte
    stream cannot be resynchronised, so the caller closes the connection.
    Feeding a closed decoder returns a fresh error that hands back the fds.

    **Which message owns the fds.** The fds of one ``feed`` belong to the
    message that the chunk's *last* byte belongs to. That is what the
    kernel guarantees on a unix stream socket: a ``recvmsg`` that reaches
    a send carrying ``SCM_RIGHTS`` takes that send's fds and stops at the
    end of it (or earlier, when the read buffer is full), so the chunk may
    start with earlier fd-less messages but ends inside the message the
    fds were sent with. QEMU, libvhost-user and DPDK send each message,
    fds included, with one ``sendmsg``. A sender that packs fds for two
    messages into one ``sendmsg`` cannot be told apart from one that sends
    too many for one message; both are refused. Each message must get the
    number of fds it needs (:func:`fd_count`), else it is an error.
    """

    def __init__(self, role: str = BACKEND, max_payload: int | None = None) -> None:
        self.role = role
        self.max_payload = _max_payload(role, max_payload)
        self._buffer = bytearray()
        #: stream offset of the buffer's first byte (the current message's start)
        self._offset = 0
        #: (stream offset of the last byte of the chunk that brought them, fds)
        self._fd_chunks: list[tuple[int, list[int]]] = []
        self._header: Header | None = None
        #: the error that closed the decoder, if any
        self.error: VhostUserProtocolError | None = None

    @property
    def closed(self) -> bool:
        return self.error is not None

    @property
    def pending(self) -> int:
        """Bytes received of a message not yet complete."""
        return len(self._buffer)

    def _queued_fds(self) -> list[int]:
        return [fd for _, fds in self._fd_chunks for fd in fds]

    def feed(
        self, data: bytes, fds: list[int] | tuple[int, ...] = ()
    ) -> list[Message | VhostUserProtocolError]:
        """Add ``data`` (and the fds received with it); return what completed."""
        if self.error is not None:
            return [
                VhostUserProtocolError("Connection already failed: " + self.error.desc, tuple(fds))
            ]
        self._buffer += data
        out: list[Message | VhostUserProtocolError] = []
        try:
            if fds:
                if not self._buffer:
                    # a stream socket delivers fds only with bytes
                    raise VhostUserProtocolError(
                        f"Received {len(fds)} fds without a message", tuple(fds)
                    )
                self._fd_chunks.append((self._offset + len(self._buffer) - 1, list(fds)))
            while True:
                msg = self._next()
                if msg is None:
                    break
                out.append(msg)
        except VhostUserProtocolError as exc:
            stray = (*exc.fds, *self._queued_fds())
            self.error = VhostUserProtocolError(exc.desc, stray)
            self._fd_chunks = []
            self._buffer = bytearray()
            out.append(self.error)
        return out

    def _next(self) -> Message | None:
        if self._header is None:
            if len(self._buffer) < HEADER_SIZE:
                return None
            header = Header.decode(bytes(self._buffer[:HEADER_SIZE]))
            _check_header(header, self.role, self.max_payload)
            self._header = header
        header = self._header
        end = HEADER_SIZE + header.size
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[HEADER_SIZE:end])
        del self._buffer[:end]
        self._offset += end
        # the fds of every chunk that ended inside this message are its own;
        # chunks that ended later belong to later messages
        fds: list[int] = []
        while self._fd_chunks and self._fd_chunks[0][0] < self._offset:
            fds += self._fd_chunks.pop(0)[1]
        self._header = None
        try:
            return _decode_body(header, payload, tuple(fds), self.role)
        except VhostUserProtocolError as exc:
            raise VhostUserProtocolError(exc.desc, tuple(fds)) from None

    def eof(self) -> VhostUserProtocolError | None:
        """The peer closed: report a truncated message (and its fds), if any."""
        if self.error is not None:
            return None
        if not self._buffer and not self._fd_chunks:
            return None
        if self._header is None:
            desc = f"Failed to read msg header. Read {len(self._buffer)} instead of {HEADER_SIZE}."
        else:
            desc = (
                f"Failed to read msg payload. Read {len(self._buffer) - HEADER_SIZE} instead of "
                f"{self._header.size}."
            )
        self.error = VhostUserProtocolError(desc, tuple(self._queued_fds()))
        self._fd_chunks = []
        self._buffer = bytearray()
        return self.error
