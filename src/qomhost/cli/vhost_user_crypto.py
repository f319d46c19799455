"""``qomhost-vhost-user-crypto``: a vhost-user virtio-crypto backend program.

It follows the "Backend program conventions" of QEMU's
``docs/interop/vhost-user.rst``::

    qomhost-vhost-user-crypto --socket-path /run/vu-crypto.sock [--queues 2] [-v]
    qomhost-vhost-user-crypto --fd 3          # an inherited unix socket
    qomhost-vhost-user-crypto --print-capabilities

* ``--socket-path PATH`` listens there; every frontend that connects is
  served, one after another or side by side, each with its own sessions.
* ``--fd N`` uses an inherited unix socket: a listening one is accepted
  from; a connected one is the only frontend, and the program ends when
  it leaves.
* ``--print-capabilities`` prints ``{"type": "crypto", "features": [...]}``
  (the ciphers) on standard output and exits, ignoring everything else.
* ``--queues N`` is the number of data queues offered (default 1);
  a frontend asking for more fails (QEMU: "you are asking more queues
  than supported").
* ``--max-sessions N`` bounds the sessions one frontend may hold at once
  (default 1024): one more is refused with a negative session id, which
  a guest sees as a failed ``setkey``.
* ``--poll-max-ns NS``, ``--poll-grow N``, ``--poll-shrink N`` tune the
  loop's adaptive polling as an iothread's properties do (default 32768,
  0, 0; ``--poll-max-ns 0`` never polls): while the window lasts the
  rings' avail indexes are read without a system call and the driver is
  asked not to kick, so a request that comes soon after the last is
  served without a wake-up.
* ``-v`` logs each vhost-user message, ``-vv`` more.

SIGTERM and SIGINT end it cleanly: connections closed, socket file
removed, exit status 0. A usage error exits with status 1 and a message.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main"]

PROG = "qomhost-vhost-user-crypto"
#: SET_VRING_KICK/CALL/ERR carry the ring index in 8 bits
MAX_QUEUES = 256
#: sessions per frontend unless --max-sessions says otherwise
DEFAULT_MAX_SESSIONS = 1024
#: as an iothread's on Linux: the window is adaptive, so an idle ring costs
#: nothing once it has shrunk back to 0
DEFAULT_POLL_MAX_NS = 32768


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # exit status 1, not argparse's 2: the conventions want one failure code
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def _parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="vhost-user virtio-crypto backend (AES-CBC/CTR/ECB/XTS with cryptography)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--socket-path", metavar="PATH", help="listen on this unix socket")
    where.add_argument("--fd", metavar="FDNUM", type=int, help="use this inherited unix socket")
    parser.add_argument(
        "--queues",
        metavar="N",
        type=int,
        default=1,
        help=f"data queues offered (1-{MAX_QUEUES}, default 1)",
    )
    parser.add_argument(
        "--max-sessions",
        metavar="N",
        type=int,
        default=DEFAULT_MAX_SESSIONS,
        help=f"sessions one frontend may hold at once (default {DEFAULT_MAX_SESSIONS})",
    )
    parser.add_argument(
        "--aio-max-batch",
        metavar="N",
        type=int,
        default=0,
        help="requests served per kick before others get a turn (0: default 32)",
    )
    parser.add_argument(
        "--poll-max-ns",
        metavar="NS",
        type=int,
        default=DEFAULT_POLL_MAX_NS,
        help="longest window for busy-polling the rings before blocking, as an "
        f"iothread's (0: never poll; default {DEFAULT_POLL_MAX_NS})",
    )
    parser.add_argument(
        "--poll-grow",
        metavar="N",
        type=int,
        default=0,
        help="factor the window grows by (0: doubles)",
    )
    parser.add_argument(
        "--poll-shrink",
        metavar="N",
        type=int,
        default=0,
        help="divisor the window shrinks by (0: back to 0)",
    )
    parser.add_argument(
        "--print-capabilities", action="store_true", help="print capabilities as JSON and exit"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log messages (-vv: more)"
    )
    return parser


def capabilities() -> dict[str, object]:
    """What ``--print-capabilities`` prints (vhost-user.json's VHostUserBackendCapabilities)."""
    from qomhost.cryptodev.device import CAPABILITY_FEATURES

    return {"type": "crypto", "features": list(CAPABILITY_FEATURES)}


def _inherited_socket(fd: int) -> socket.socket:
    try:
        os.fstat(fd)
    except OSError as exc:
        raise SystemExit(f"{PROG}: --fd {fd}: {exc.strerror}") from None
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        raise SystemExit(f"{PROG}: --fd {fd}: not a socket") from None
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise SystemExit(f"{PROG}: --fd {fd}: not a unix stream socket")
    return sock


def _setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    root = logging.getLogger("qomhost")
    root.addHandler(handler)
    levels = (logging.WARNING, logging.INFO, logging.DEBUG)
    root.setLevel(levels[min(verbose, len(levels) - 1)])


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT (or, with a connected ``--fd``, until the frontend leaves)."""
    from qomhost.aio.context import AioContext
    from qomhost.cryptodev.device import VhostUserCryptoDevice
    from qomhost.vhost_user.server import VhostUserConnection, VhostUserServer

    queues: int = args.queues
    max_sessions: int = args.max_sessions

    def device() -> VhostUserCryptoDevice:
        return VhostUserCryptoDevice(num_queues=queues, max_sessions=max_sessions)

    context = AioContext("vhost-user-crypto")
    context.aio_max_batch = args.aio_max_batch
    context.set_poll_params(args.poll_max_ns, args.poll_grow, args.poll_shrink)
    if args.fd is not None:
        server = VhostUserServer(device, context, sock=_inherited_socket(args.fd))
    else:
        server = VhostUserServer(device, context, path=args.socket_path)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        context.notify()

    def ended(_conn: VhostUserConnection) -> None:
        nonlocal stopping
        if not server.listening:
            stopping = True  # the inherited connected socket was the only frontend

    server.on_connection_closed = ended
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.start()
    except OSError as exc:
        where = args.socket_path or f"fd {args.fd}"
        sys.stderr.write(f"{PROG}: cannot listen on {where}: {exc.strerror or exc}\n")
        return 1
    try:
        while not stopping:
            context.run_once(keep_polling=True)
    finally:
        server.close()
        context.close()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--print-capabilities" in argv:
        # the conventions: print, exit, and ignore every other option
        sys.stdout.write(json.dumps(capabilities()) + "\n")
        sys.exit(0)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.socket_path is None and args.fd is None:
        parser.error("one of --socket-path and --fd is required")
    if not 1 <= args.queues <= MAX_QUEUES:
        parser.error(f"--queues must be between 1 and {MAX_QUEUES}, not {args.queues}")
    if args.max_sessions < 1:
        parser.error(f"--max-sessions must be at least 1, not {args.max_sessions}")
    if args.aio_max_batch < 0:
        parser.error(f"--aio-max-batch must not be negative, not {args.aio_max_batch}")
    for option in ("poll_max_ns", "poll_grow", "poll_shrink"):
        value = getattr(args, option)
        if value < 0:
            flag = "--" + option.replace("_", "-")
            parser.error(f"{flag} must not be negative, not {value}")
    if args.socket_path == "":
        parser.error("--socket-path must not be empty")
    _setup_logging(args.verbose)
    sys.exit(run(args))
