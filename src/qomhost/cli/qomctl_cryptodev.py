"""``qomctl cryptodev encrypt|decrypt``: a vhost-user crypto backend as a filter.

Standard input goes through a ``cryptodev-vhost-user`` frontend connected
to the backend listening at ``--socket`` (``qomhost-vhost-user-crypto``,
DPDK's ``vhost_crypto``, ...), and the result goes to standard output::

    $ qomctl cryptodev encrypt --socket /run/vu-crypto.sock --cipher aes-256-cbc \\
          --key 603deb10...14dff4 --iv 000102...0e0f < plain.bin > cipher.bin

The same bytes as ``openssl enc -aes-256-cbc -nopad -K KEY -iv IV``: no
padding is added or removed, so for a block mode (CBC, ECB) the input must
be a whole number of 16-byte blocks, else it is refused (status 1) before
anything is sent. ``--queue N`` sends every request on data queue ``N``
(the device then asks the backend for ``N + 1`` queues). Long inputs go
as several requests of at most ``--chunk`` bytes, chained as the mode
requires (CBC: the last ciphertext block is the next IV; CTR: the counter
moves on), so the output is that of one request; XTS input is one data
unit and goes in one request.

Any failure (no backend, a refused handshake, a refused session, a request
the backend failed) prints ``qomctl: <reason>`` and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys

from qomhost.errors import QemuError

__all__ = ["add_cryptodev_parser", "cmd_cryptodev"]

BLOCK = 16
#: the default request size for long inputs
CHUNK = 1 << 20


class _Fatal(Exception):
    """The device reported a fatal error (already printed)."""


def _hex(name: str, text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise QemuError(f"--{name} must be hexadecimal digits") from None


def _chunks(
    mode: str, iv: bytes, data: bytes, chunk: int, encrypt: bool
) -> list[tuple[bytes, bytes]]:
    """``(iv, piece)`` requests whose outputs, joined, are that of one request."""
    if mode == "xts" or len(data) <= chunk:
        return [(iv, data)]
    chunk -= chunk % BLOCK
    out: list[tuple[bytes, bytes]] = []
    counter = int.from_bytes(iv, "big")
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        out.append((iv, piece))
        if mode == "cbc" and not encrypt:
            iv = piece[-BLOCK:]
        elif mode == "ctr":
            counter = (counter + len(piece) // BLOCK) % (1 << 128)
            iv = counter.to_bytes(BLOCK, "big")
        # CBC encryption chains on the output, filled in as it is produced.
    return out


def cmd_cryptodev(args: argparse.Namespace) -> int:
    """Run stdin through the backend at ``--socket``; write the result to stdout."""
    from qomhost.objects.cryptodev.base import CIPHERS

    cipher = args.cipher.lower()
    if cipher not in CIPHERS:
        raise QemuError(f"unknown cipher '{args.cipher}' (known: {', '.join(sorted(CIPHERS))})")
    mode = cipher.rsplit("-", 1)[1]
    key, iv = _hex("key", args.key), _hex("iv", args.iv or "")
    encrypt = args.op == "encrypt"
    data = sys.stdin.buffer.read()
    if mode in ("cbc", "ecb") and len(data) % BLOCK:
        raise QemuError(
            f"input is {len(data)} bytes, not a multiple of the {BLOCK}-byte block size "
            f"({cipher} without padding, as openssl enc -nopad)"
        )
    if mode != "ecb" and len(iv) != BLOCK:
        raise QemuError(f"--iv must be {BLOCK} bytes ({2 * BLOCK} hexadecimal digits) for {cipher}")
    if args.queue is not None and args.queue < 0:
        raise QemuError("--queue must not be negative")
    sys.stdout.buffer.write(_run(args.socket, cipher, mode, key, iv, data, encrypt, args))
    sys.stdout.buffer.flush()
    return 0


def _run(
    path: str,
    cipher: str,
    mode: str,
    key: bytes,
    iv: bytes,
    data: bytes,
    encrypt: bool,
    args: argparse.Namespace,
) -> bytes:
    from qomhost.chardev.socket import ChardevSocket, SocketAddress
    from qomhost.host import Host
    from qomhost.objects.cryptodev.base import CryptoDevBackend

    host = Host()

    def report(line: str) -> None:
        sys.stderr.write(f"qomctl: {line}\n")

    def fatal() -> None:
        raise _Fatal

    host.report = report
    host.fatal = fatal
    try:
        sock = ChardevSocket("chardev-socket")
        sock.address = SocketAddress(path=path)
        sock.label = "cryptodev"
        sock.open()
        host.add_chardev(sock, "cryptodev")
        queues = 1 if args.queue is None else args.queue + 1
        try:
            dev = host.add_object(
                "cryptodev-vhost-user", "cryptodev0", chardev="cryptodev", queues=queues
            )
        except _Fatal:
            raise SystemExit(1) from None
        assert isinstance(dev, CryptoDevBackend)
        op = "encrypt" if encrypt else "decrypt"
        run = dev.encrypt if encrypt else dev.decrypt
        out = bytearray()
        with dev.create_session(cipher, key=key, op=op) as session:
            for piece_iv, piece in _chunks(mode, iv, data, args.chunk, encrypt):
                if mode == "cbc" and encrypt and out:
                    piece_iv = bytes(out[-BLOCK:])
                out += run(session, piece_iv, piece, queue=args.queue)
        return bytes(out)
    finally:
        host.close()


def add_cryptodev_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``qomctl cryptodev encrypt|decrypt``."""
    group = sub.add_parser(
        "cryptodev", help="encrypt or decrypt standard input through a vhost-user crypto backend"
    )
    ops = group.add_subparsers(dest="op", required=True)
    for op in ("encrypt", "decrypt"):
        p = ops.add_parser(
            op,
            help=f"{op} standard input to standard output (no padding)",
            description=f"{op.capitalize()} standard input through the vhost-user crypto "
            "backend at --socket, as a cryptodev-vhost-user device would, and write the "
            "result to standard output. No padding: block modes need whole 16-byte blocks.",
            epilog="Exit status: 0 done, 1 any failure (the reason is printed).",
        )
        p.add_argument("--socket", required=True, metavar="PATH", help="the backend's unix socket")
        p.add_argument("--cipher", default="aes-256-cbc", help="e.g. aes-256-cbc, aes-128-ctr")
        p.add_argument("--key", required=True, metavar="HEX", help="the key, in hexadecimal")
        p.add_argument("--iv", metavar="HEX", help="the IV (CTR: the initial counter block)")
        p.add_argument("--queue", type=int, metavar="N", help="use data queue N (default: 0)")
        p.add_argument(
            "--chunk", type=int, default=CHUNK, metavar="BYTES", help="largest request size"
        )
        p.set_defaults(func=cmd_cryptodev)
