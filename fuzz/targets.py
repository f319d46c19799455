"""The fuzz targets: one function per parser that takes untrusted input.

Each target takes the fuzzer's bytes, drives one parser with them and lets
through only the error types that parser documents (the ``ALLOWED`` tuple
beside it). Anything else escaping is a crash; anything that makes a
target run longer than the runner's timeout is a hang. Some targets also
check a property of the output (the QMP target, that every reply is valid
JSON and no command failed with an internal error).

``SEEDS`` gives each target a few well-formed inputs to start from, so the
fuzzer spends its time near valid input instead of rediscovering it.

The module imports qomhost lazily, inside each target's setup, so that the
runner can import it first and instrument qomhost's code as it loads.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
import tempfile
from collections.abc import Callable

__all__ = ["SEEDS", "TARGETS", "setup"]


def _text(data: bytes) -> str:
    # argv and monitor input reach Python as str; undecodable bytes as
    # surrogates, as the interpreter decodes the command line.
    return data.decode("utf-8", "surrogateescape")


class _InternalErrors(logging.Handler):
    """Collects log records that report an unexpected exception."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


_internal = _InternalErrors()


def _check_no_internal_errors() -> None:
    if _internal.records:
        record = _internal.records[0]
        _internal.records.clear()
        assert record.exc_info is not None
        raise AssertionError(f"internal error logged: {record.getMessage()}") from record.exc_info[
            1
        ]


# --- -object (QemuOpts and JSON) and object_add (keyval and JSON) ----------------
def object_options(data: bytes) -> None:
    from qomhost.cli.objectopts import parse_object_cli, parse_object_keyval
    from qomhost.errors import QemuError
    from qomhost.qapi.opts import OptsList

    if not data:
        return
    text = _text(data[1:])
    try:
        if data[0] & 1:
            parse_object_keyval(text)
        else:
            parse_object_cli(text, OptsList("object", "qom-type"), [])
    except QemuError:
        pass


# --- QMP: the JSON stream and request checks, then every command -------------------
def qmp_stream(data: bytes) -> None:
    """The sans-I/O half alone, fast enough for a million runs."""
    from qomhost.errors import JsonParseError
    from qomhost.monitor.qmp.protocol import BadRequest, QmpProtocol, Request

    if not data:
        return
    protocol = QmpProtocol()
    protocol.oob_enabled = bool(data[0] & 1)
    step = (data[0] >> 1) or len(data)
    body = data[1:]
    answered = 0
    for start in range(0, len(body), step):
        for value in protocol.receive_data(body[start : start + step]):
            request = protocol.check(value)
            answered += 1
            if answered > 4:
                # Each stray byte is an error of its own; printing a hundred
                # identical replies would only slow the fuzzer down.
                continue
            if isinstance(request, BadRequest):
                protocol.error_reply(request.error, request.id)
            else:
                assert isinstance(request, Request)
                protocol.reply(request.arguments, request.id)
            if not isinstance(value, JsonParseError):
                # A parsed value can be printed back in QEMU's dialect.
                protocol.encode({"return": value})


_NEGOTIATE = b'{"execute": "qmp_capabilities"}'


def qmp(data: bytes) -> None:
    from qomhost.host import Host
    from qomhost.monitor.qmp.server import QmpMonitor
    from qomhost.testing.qmp import MemoryChardev, decode_messages

    if not data:
        return
    host = Host()
    try:
        chardev = MemoryChardev()
        QmpMonitor(host, chardev)
        chardev.open()
        # The first byte chooses whether to negotiate and how to cut the
        # input into reads: the stream parser must not care where reads end.
        if data[0] & 1:
            chardev.feed(_NEGOTIATE)
        step = (data[0] >> 1) or len(data)
        body = data[1:]
        for start in range(0, len(body), step):
            chardev.feed(body[start : start + step])
        output = chardev.take_output().decode("ascii")
        chardev.close()
    finally:
        host.close()
    _check_no_internal_errors()
    messages, rest = decode_messages(output)
    assert not rest.strip(), f"QMP output is not JSON: {rest[:200]!r}"
    for message in messages:
        assert message.keys() & {"QMP", "return", "error", "event"}, message


# --- HMP: line editor, argument parser and commands ---------------------------------
def hmp(data: bytes) -> None:
    from qomhost.host import Host
    from qomhost.monitor.hmp_server import HmpMonitor
    from qomhost.testing.qmp import MemoryChardev

    host = Host()
    try:
        chardev = MemoryChardev()
        HmpMonitor(host, chardev)
        chardev.open()
        chardev.feed(data + b"\r")
        chardev.close()
    finally:
        host.close()
    _check_no_internal_errors()


# --- vhost-user: both ends' decoders ------------------------------------------------
def _vhost_user(role: str, data: bytes) -> None:
    from qomhost.vhost_user.protocol import Message, VhostUserDecoder, decode_message

    if not data:
        return
    decoder = VhostUserDecoder(role)
    # First byte: read size (1..128) and whether each read carries two fds.
    step = (data[0] & 0x7F) + 1
    with_fds = bool(data[0] & 0x80)
    body = data[1:]
    fd = 1000
    for start in range(0, len(body), step):
        fds = (fd, fd + 1) if with_fds else ()
        fd += len(fds)
        for item in decoder.feed(body[start : start + step], fds):
            if isinstance(item, Message):
                # What was decoded can be sent again and reads back the same.
                again = decode_message(item.encode(), item.fds, role)
                assert again == item, (item, again)
    decoder.eof()


def vhost_user_backend(data: bytes) -> None:
    from qomhost.vhost_user.protocol import BACKEND

    _vhost_user(BACKEND, data)


def vhost_user_frontend(data: bytes) -> None:
    from qomhost.vhost_user.protocol import FRONTEND

    _vhost_user(FRONTEND, data)


# --- virtio-crypto: session payloads and data requests in the backend ---------------
_crypto_device: object = None


def _crypto_setup() -> object:
    """A device with one session of each cipher mode (ids 0..4)."""
    global _crypto_device
    if _crypto_device is None:
        from qomhost.cryptodev.device import VhostUserCryptoDevice
        from qomhost.cryptodev.virtio_crypto import (
            CipherAlgo,
            Op,
            SymOp,
            SymSessionInfo,
            encode_session,
        )

        device = VhostUserCryptoDevice()
        for algo, key in (
            (CipherAlgo.AES_CBC, bytes(range(16))),
            (CipherAlgo.AES_CTR, bytes(range(32))),
            (CipherAlgo.AES_ECB, bytes(range(24))),
            (CipherAlgo.AES_XTS, bytes(range(64))),
            (CipherAlgo.AES_CBC, bytes(range(32))),
        ):
            direction = Op.ENCRYPT if algo != CipherAlgo.AES_CBC or len(key) == 16 else 0
            info = SymSessionInfo(algo, key, direction, SymOp.CIPHER)
            assert device.create_session(encode_session(info)) >= 0
        _crypto_device = device
    return _crypto_device


def virtio_crypto(data: bytes) -> None:
    from qomhost.cryptodev.device import VhostUserCryptoDevice, _serve
    from qomhost.cryptodev.virtio_crypto import (
        CtrlRequest,
        DataRequest,
        VirtioCryptoError,
        decode_session,
    )
    from qomhost.vhost_user.virtqueue import DescriptorChain

    if len(data) < 2:
        return
    device = _crypto_setup()
    assert isinstance(device, VhostUserCryptoDevice)
    mode, body = data[0], data[1:]
    if mode & 3 == 0:
        # CREATE_CRYPTO_SESSION: the device answers every payload with an id
        # or -status; the session it made (if any) is closed again.
        session_id = device.create_session(body)
        if session_id >= 0:
            device.sessions.close(session_id)
        try:
            decode_session(body)
        except VirtioCryptoError:
            pass
        return
    if mode & 3 == 1:
        for decode in (CtrlRequest.decode, DataRequest.decode):
            try:
                decode(body)
            except VirtioCryptoError:
                pass
        return
    # A data request: the body is cut into device-readable buffers at the
    # offsets the next bytes give, followed by writable buffers.
    cuts = sorted(set(body[:4]))
    rest = body[4:]
    readable: list[memoryview] = []
    last = 0
    for cut in cuts:
        cut = min(cut, len(rest))
        readable.append(memoryview(bytearray(rest[last:cut])))
        last = cut
    readable.append(memoryview(bytearray(rest[last:])))
    writable_size = (mode >> 2) * 4
    writable = [memoryview(bytearray(writable_size)), memoryview(bytearray(mode & 0x3C))]
    chain = DescriptorChain(
        0,
        readable,
        writable,
        sum(p.nbytes for p in readable),
        sum(p.nbytes for p in writable),
    )
    try:
        _serve(device.sessions, chain)
    except VirtioCryptoError:
        pass


# --- authz-list-file: the rule file and the decisions it makes -----------------------
_rule_file = os.path.join(
    "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
    f"qomhost-fuzz-rules-{os.getpid()}.json",
)


def authz_rules(data: bytes) -> None:
    from qomhost.errors import QemuError
    from qomhost.objects.authz.listfile import load_list_file

    # Bytes after the last NUL are identities to decide on, one per line.
    content, _, identities = data.rpartition(b"\0") if b"\0" in data else (data, b"", b"")
    with open(_rule_file, "wb") as f:
        f.write(content)
    try:
        authz = load_list_file(_rule_file)
    except QemuError:
        return
    for identity in _text(identities).split("\n")[:8]:
        authz.is_allowed(identity)


# --- SEV: the OVMF footer table ---------------------------------------------------------
def ovmf_table(data: bytes) -> None:
    from qomhost.sev.ovmf import SEV_HASH_TABLE_RV_GUID, OvmfTable, OvmfTableError

    try:
        table = OvmfTable(data)
        for guid, _entry in table.entries():
            table.find(guid)
            table.area(guid)
        table.area(SEV_HASH_TABLE_RV_GUID)
    except OvmfTableError:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "object-options": object_options,
    "qmp-stream": qmp_stream,
    "qmp": qmp,
    "hmp": hmp,
    "vhost-user-backend": vhost_user_backend,
    "vhost-user-frontend": vhost_user_frontend,
    "virtio-crypto": virtio_crypto,
    "authz-rules": authz_rules,
    "ovmf-table": ovmf_table,
}


def _qmp_seeds() -> list[bytes]:
    commands = [
        {"execute": "query-version"},
        {"execute": "object-add", "arguments": {"qom-type": "secret", "id": "s", "data": "x"}},
        {
            "execute": "object-add",
            "arguments": {
                "qom-type": "authz-list",
                "id": "a",
                "rules": [{"match": "fred", "policy": "allow", "format": "exact"}],
            },
        },
        {"execute": "qom-list", "arguments": {"path": "/objects"}},
        {"execute": "qom-get", "arguments": {"path": "/machine", "property": "type"}},
        {
            "execute": "qom-set",
            "arguments": {"path": "/objects/a", "property": "policy", "value": "allow"},
        },
        {"execute": "object-del", "arguments": {"id": "s"}, "id": 1},
        {"execute": "qom-list-properties", "arguments": {"typename": "secret"}},
        {"execute": "human-monitor-command", "arguments": {"command-line": "info qom-tree"}},
        {"exec-oob": "query-name", "id": "x"},
    ]
    return [b"\x01" + json.dumps(c).encode() for c in commands] + [
        b"\x05{'execute': 'qom-list', 'arguments': {'path': '/'}}[1,2]{\"a\":1.5e3}"
    ]


def _vhost_user_seeds() -> list[bytes]:
    hdr = struct.Struct("<III")
    return [
        b"\x7f" + hdr.pack(1, 1, 0),
        b"\x7f" + hdr.pack(2, 1, 8) + struct.pack("<Q", 1 << 32),
        b"\xff" + hdr.pack(5, 1, 40) + struct.pack("<II4Q", 1, 0, 0, 4096, 0, 0),
        b"\x7f" + hdr.pack(9, 1, 8) + struct.pack("<II", 0, 256),
        b"\x7f" + hdr.pack(26, 1, 632) + bytes(632),
        b"\x7f" + hdr.pack(15, 5, 8) + struct.pack("<Q", 0x3F),
    ]


def _crypto_seeds() -> list[bytes]:
    from qomhost.cryptodev.virtio_crypto import (
        LAYOUT_LEGACY,
        LAYOUT_QEMU81,
        CipherAlgo,
        Op,
        SymOp,
        SymSessionInfo,
        encode_session,
    )

    info = SymSessionInfo(CipherAlgo.AES_CBC, bytes(16), Op.ENCRYPT)
    request = struct.pack("<IIQ8xIII28xI4x", 0x300, 0, 0, 16, 32, 32, SymOp.CIPHER)
    return [
        b"\x00" + encode_session(info),
        b"\x00" + encode_session(info, LAYOUT_LEGACY),
        b"\x00" + encode_session(info, LAYOUT_QEMU81),
        b"\x01" + request,
        b"\x26" + bytes([72, 88, 100, 110]) + request + bytes(16) + bytes(32),
    ]


SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "object-options": lambda: [
        b"\x00secret,id=s0,data=letmein,format=raw",
        b"\x00iothread,id=io1,poll-max-ns=100000",
        b'\x00{"qom-type": "authz-simple", "id": "a", "identity": "fred"}',
        b"\x01authz-list,id=a,rules.0.match=fred,rules.0.policy=allow,policy=deny",
        b"\x01secret,id=s,data=x,keyid=k,iv=aaaa,format=base64",
        b"\x00sev-guest,id=sev0,cbitpos=47,reduced-phys-bits=1,policy=0x1",
        b"\x00cryptodev-vhost-user,id=c,chardev=ch,queues=2",
        b"\x00help",
        b"\x01secret,help",
    ],
    "qmp-stream": _qmp_seeds,
    "qmp": _qmp_seeds,
    "hmp": lambda: [
        b"info qom-tree",
        b"object_add secret,id=s,data=x\rqom-get /objects/s type",
        b'qom-set /machine "x y" 1',
        b"help info",
        b"info\t\x1b[A\x1b[D\x7f",
    ],
    "vhost-user-backend": _vhost_user_seeds,
    "vhost-user-frontend": _vhost_user_seeds,
    "virtio-crypto": _crypto_seeds,
    "authz-rules": lambda: [
        b'{"rules": [{"match": "fred", "policy": "allow", "format": "exact"},'
        b' {"match": "bob*", "policy": "allow", "format": "glob"}], "policy": "deny"}'
        b"\0fred\nbobby\nalice",
        b'{"policy": "allow"}\0x',
        b'{"rules": [{"match": "*a?*b*", "policy": "deny", "format": "glob"}]}\0aaab',
    ],
    "ovmf-table": lambda: _ovmf_seeds(),
}


def _ovmf_seeds() -> list[bytes]:
    from qomhost.testing.sev_firmware import build_firmware

    return [
        build_firmware(256),
        build_firmware(256, hashes_area=(0x80C000, 0x400)),
        build_firmware(256, with_table=False),
    ]


def setup() -> None:
    """Prepare the process for fuzzing: logging captured, stdout quiet."""
    root = logging.getLogger("qomhost")
    root.addHandler(_internal)
    root.setLevel(logging.ERROR)
    root.propagate = False
    # HMP prints bad quoting on the process's stdout, as QEMU does; keep the
    # fuzzer's own output readable.
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
