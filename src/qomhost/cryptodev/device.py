"""A virtio-crypto device served over vhost-user: sessions and the data queues.

:class:`VhostUserCryptoDevice` plugs into
:class:`~qomhost.vhost_user.backend.VhostUserBackend`. QEMU keeps the
virtio-crypto control queue for itself and turns session requests into
``CREATE_CRYPTO_SESSION``/``CLOSE_CRYPTO_SESSION`` messages; the data
queues are the backend's rings (vhost-user ring ``i`` is data queue
``i``).

**Sessions.** A ``CREATE_CRYPTO_SESSION`` payload may come in any of the
three layouts (QEMU 7.2's 632 bytes, the legacy layout with a leading
``op_code`` that DPDK and older QEMU use, QEMU 8.1+'s 1072 bytes); the
reply is the same struct in the same layout with the session id, or a
negative id (``-status``) when the session cannot be made -- a bad key
length, an algorithm not supported, a malformed payload.

**Data requests.** Each chain popped from a data ring reads, in its
driver-readable part, the 72-byte ``virtio_crypto_op_data_req``, the IV
and the source; its device-writable part takes the destination, and its
last byte is the status. Any of these may be split over several
descriptors and pages. The cipher runs straight from the guest's source
buffers into its destination buffers (``update_into``), with no copy
when the segments line up on cipher blocks, which they do for page-sized
scatterlists and for single buffers. Every popped request is completed
with a used entry, whatever went wrong with it: a request left pending
hangs the guest driver that sent it.
"""

from __future__ import annotations

import logging
import struct

from cryptography.hazmat.primitives.ciphers import CipherContext

from qomhost.cryptodev.sessions import AES_BLOCK, SUPPORTED_CIPHERS, CipherSession, SessionTable
from qomhost.cryptodev.virtio_crypto import (
    DATA_REQUEST_SIZE,
    CryptoConfig,
    Op,
    Opcode,
    Service,
    Status,
    SymOp,
    VirtioCryptoError,
    decode_session,
    encode_session_reply,
)
from qomhost.vhost_user.backend import (
    VIRTIO_F_EVENT_IDX,
    VIRTIO_F_INDIRECT_DESC,
    VIRTIO_F_VERSION_1,
    VhostUserDevice,
    Vring,
)
from qomhost.vhost_user.protocol import (
    FLAGS_REPLY,
    U64,
    CryptoSession,
    Message,
    ProtocolFeature,
    Request,
)
from qomhost.vhost_user.virtqueue import LazyChain, VirtqueueError

__all__ = ["CAPABILITY_FEATURES", "VhostUserCryptoDevice", "serve_request"]

log = logging.getLogger("qomhost.cryptodev.device")

#: what ``--print-capabilities`` lists: the ciphers this device does
CAPABILITY_FEATURES = tuple(name for name, *_ in SUPPORTED_CIPHERS.values())

_CIPHER_OPS = {Opcode.CIPHER_ENCRYPT: True, Opcode.CIPHER_DECRYPT: False}

#: ``virtio_crypto_op_data_req`` read as a cipher request: opcode, algo,
#: session_id, (flag, padding), iv_len, src_data_len, dst_data_len,
#: (padding), op_type, (padding) -- the layout DataRequest.decode reads,
#: in one struct call without building records, which matters at a few
#: microseconds a request (tests check that the two agree)
_CIPHER_REQUEST = struct.Struct("<IIQ8xIII28xI4x")


def _scatter(data: bytes | memoryview, parts: list[memoryview]) -> None:
    pos = 0
    for part in parts:
        n = part.nbytes
        part[:] = data[pos : pos + n]
        pos += n


#: the largest request whose result goes through a device's scratch buffer;
#: a larger one gets a buffer of its own for the time it takes
SCRATCH_LIMIT = 1 << 20


def _run_cipher(
    session: CipherSession,
    ctx: CipherContext,
    src: list[memoryview],
    dst: list[memoryview],
    scratch: bytearray | None = None,
    keep: bool = False,
) -> bytes:
    """Cipher ``src`` into ``dst`` (the same total length).

    One buffer each way (the qomhost frontend's requests, a small guest
    request): straight from the source into the destination. Otherwise
    (a guest's pages) the source is joined, enciphered in one call into
    ``scratch`` and scattered: one cipher call and two copies in C cost less
    than a cipher call per page, each of which would also need its last
    block apart (``update_into`` wants room for a block more than it
    writes). The copy also makes in-place requests safe.

    With ``keep`` the context is not finalised (the session keeps it for
    its next request) and the last block it put out is returned, taken from
    this process's own output, never read back from guest memory.
    """
    slack = session.slack
    last = b""
    if len(src) == 1 and len(dst) == 1 and session.streaming:
        # the bulk straight through; the last block, which has no room
        # after it for the slack, through a copy
        s_part, d_part = src[0], dst[0]
        if slack:
            bulk = s_part.nbytes - AES_BLOCK
            if bulk > 0:
                ctx.update_into(s_part[:bulk], d_part[: bulk + slack])
            else:
                bulk = 0
            last = ctx.update(s_part[bulk:])
            d_part[bulk:] = last
        else:
            ctx.update_into(s_part, d_part)
    else:
        data = src[0] if len(src) == 1 else b"".join(src)
        size = len(data)
        room = size + AES_BLOCK
        if scratch is None or room > SCRATCH_LIMIT:
            out = ctx.update(data)
            _scatter(out, dst)
            last = out[-AES_BLOCK:]
        else:
            if len(scratch) < room:
                # grown in steps, in place (no view of it outlives a request)
                scratch.extend(bytes(max(room, 2 * len(scratch)) - len(scratch)))
            ctx.update_into(data, scratch)
            with memoryview(scratch) as out_view:
                _scatter(out_view[:size], dst)
                if keep:
                    last = bytes(out_view[size - AES_BLOCK : size])
    if keep:
        return last
    ctx.finalize()
    return b""


def serve_request(
    sessions: SessionTable, chain: LazyChain, scratch: bytearray | None = None
) -> int:
    """Carry out one data request; the status written (if there was room for it).

    The status byte is the last byte of the chain's writable part; a chain
    without one gets nothing written. ``scratch``, if given, is where a
    request of several segments is enciphered before it is scattered.
    """
    try:
        status = _serve(sessions, chain, scratch)
    except VirtioCryptoError as exc:
        log.debug("data request %d: %s", chain.head, exc.desc)
        status = exc.status
    except VirtqueueError:
        raise
    except Exception as exc:  # OpenSSL refused (overlapping buffers, ...)
        log.debug("data request %d: %s", chain.head, exc)
        status = Status.ERR
    chain.set_last_byte(status)
    return status


def _serve(sessions: SessionTable, chain: LazyChain, scratch: bytearray | None) -> int:
    # Only what the header asks for is mapped: Linux sends its whole
    # scatterlists, of which a request reads and writes a few pages.
    writable_len = chain.writable_len
    if writable_len < 1:
        raise VirtioCryptoError("data request has no room for its status")
    # the qomhost frontend sends header, IV and source in one buffer; Linux
    # one each
    first = chain.first_readable()
    if first is not None and first.nbytes >= DATA_REQUEST_SIZE:
        fields = _CIPHER_REQUEST.unpack_from(first)
    else:
        header = chain.read(0, DATA_REQUEST_SIZE)
        if len(header) < DATA_REQUEST_SIZE:
            raise VirtioCryptoError(f"data request header is {len(header)} bytes, not 72")
        fields = _CIPHER_REQUEST.unpack(header)
    opcode, _algo, session_id, iv_len, length, dst_len, op_type = fields
    if opcode not in _CIPHER_OPS:
        raise VirtioCryptoError(f"unsupported data opcode 0x{opcode:x}", Status.NOTSUPP)
    if op_type != SymOp.CIPHER:
        raise VirtioCryptoError("only plain cipher requests are supported", Status.NOTSUPP)
    session = sessions.get(session_id)
    if session is None:
        raise VirtioCryptoError(f"no session {session_id}", Status.INVSESS)
    if dst_len != length:
        raise VirtioCryptoError("sym request src len is different from dst len")
    readable_len = chain.readable_len
    if readable_len < DATA_REQUEST_SIZE + iv_len + length:
        raise VirtioCryptoError(
            f"data request reads {readable_len} bytes, needs {DATA_REQUEST_SIZE + iv_len + length}"
        )
    if writable_len < length + 1:
        raise VirtioCryptoError(
            f"data request has {writable_len} writable bytes, needs {length + 1}"
        )
    session.check_length(length)
    at = DATA_REQUEST_SIZE + iv_len
    if first is not None and first.nbytes >= at + length:
        iv = bytes(first[DATA_REQUEST_SIZE:at])
        src = [first[at : at + length]]
    else:
        iv = chain.read(DATA_REQUEST_SIZE, iv_len)
        src = chain.readable_views(at, length)
    if not session.iv_len:
        iv = b""  # ECB takes no IV: one the driver sent anyway is skipped
    # The session's direction decides, as in QEMU's own backend; the
    # opcode only when the session left it open.
    encrypt = session.direction == Op.ENCRYPT if session.direction else _CIPHER_OPS[opcode]
    if session.keeps_contexts:
        # CBC: the session's own context, set to this IV (no new key
        # schedule); given back only once the request went through
        ctx = session.take_context(encrypt, iv)
        if length:
            last = _run_cipher(session, ctx, src, chain.writable_views(0, length), scratch, True)
            session.keep_context(encrypt, ctx, last)
        return Status.OK
    ctx = session.context(encrypt, iv)
    if length:
        dst = chain.writable_views(0, length)
        _run_cipher(session, ctx, src, dst, scratch)
    return Status.OK


class VhostUserCryptoDevice(VhostUserDevice):
    """virtio-crypto (cipher service, AES) for a vhost-user backend; one per connection.

    :param num_queues: data queues offered (GET_QUEUE_NUM).
    :param max_sessions: sessions one connection may hold.
    """

    type_name = "crypto"
    features = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_F_INDIRECT_DESC) | (1 << VIRTIO_F_EVENT_IDX)
    protocol_features = 1 << ProtocolFeature.CRYPTO_SESSION

    def __init__(self, num_queues: int = 1, max_sessions: int = 1024) -> None:
        if num_queues < 1:
            raise ValueError(f"a crypto device needs at least one data queue, not {num_queues}")
        self.num_queues = num_queues
        self.sessions = SessionTable(max_sessions)
        #: data requests served, and how many of those failed, per status
        self.requests = 0
        self.errors: dict[int, int] = {}
        # where requests of several segments are enciphered (grown on demand)
        self._scratch = bytearray()

    # --- config -------------------------------------------------------------
    def config(self) -> CryptoConfig:
        """The virtio-crypto config space this device would show a driver."""
        cipher_bits = 0
        for algo in SUPPORTED_CIPHERS:
            cipher_bits |= 1 << algo
        return CryptoConfig(
            status=Status.S_HW_READY,
            max_dataqueues=self.num_queues,
            crypto_services=1 << Service.CIPHER,
            cipher_algo_l=cipher_bits & 0xFFFFFFFF,
            cipher_algo_h=cipher_bits >> 32,
            max_cipher_key_len=64,
            max_size=(1 << 64) - 1,
        )

    def get_config(self, offset: int, size: int) -> bytes | None:
        data = self.config().encode()
        if offset < 0 or offset + size > len(data):
            return None
        return data[offset : offset + size]

    # --- sessions -----------------------------------------------------------
    def handle_request(self, msg: Message) -> list[Message] | None:
        if msg.request == Request.CREATE_CRYPTO_SESSION:
            assert isinstance(msg, CryptoSession)
            session_id = self.create_session(msg.session)
            return [CryptoSession(encode_session_reply(msg.session, session_id), FLAGS_REPLY)]
        if msg.request == Request.CLOSE_CRYPTO_SESSION:
            assert isinstance(msg, U64)
            closed = self.sessions.close(msg.value)
            if closed:
                log.info("session %d closed", msg.value)
            else:
                log.warning("close of unknown session %d", msg.value)
            if msg.need_reply:
                return [U64(msg.request, 0 if closed else 1, FLAGS_REPLY)]
            return []
        return None

    def create_session(self, payload: bytes) -> int:
        """Create a session from a CREATE_CRYPTO_SESSION payload; its id, or ``-status``."""
        try:
            request = decode_session(payload)
            session_id = self.sessions.create(request.info)
        except VirtioCryptoError as exc:
            log.warning("session refused: %s", exc.desc)
            return -exc.status
        log.info(
            "session %d created (%s layout, %s)",
            session_id,
            request.layout,
            self.sessions.get(session_id),
        )
        return session_id

    # --- data queues --------------------------------------------------------
    def process_ring(self, vring: Vring, limit: int) -> int:
        queue = vring.queue
        if queue is None:
            return 0
        sessions = self.sessions
        done: list[tuple[int, int]] = []
        try:
            while len(done) < limit:
                chain = queue.pop_lazy()
                if chain is None:
                    break
                status = serve_request(sessions, chain, self._scratch)
                if status:
                    self.errors[status] = self.errors.get(status, 0) + 1
                done.append((chain.head, chain.writable_len))
        finally:
            # one used-index store for the whole batch, even if a later chain
            # turned out malformed
            queue.push_many(done)
            self.requests += len(done)
        return len(done)

    def reset(self) -> None:
        if len(self.sessions):
            log.info("dropping %d sessions", len(self.sessions))
        self.sessions.clear()
