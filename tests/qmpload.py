"""A QMP load generator: many clients, each checking every reply it gets.

Shared by ``tests/integration/test_qmp_load.py`` (small, in ``make test``)
and its full-size run in ``make soak``.

Each client owns a few objects named after its number and runs a fixed
cycle of :data:`CYCLE` commands (``qom-set``/``qom-get`` of its own
iothread's ``poll-max-ns``, ``object-add``/``qom-get``/``object-del`` of its
own secret and a short-lived iothread, ``query-iothreads``, and two commands
that fail). Every request carries an ``id``: a reply must have the id of the
command sent last, so a lost, doubled or reordered reply is caught, and its
body must be the one a client alone would get (:func:`expected`). One command
is outstanding per client; its round trip is its latency.

A worker drives many clients from one thread with ``selectors``; a run
spreads the clients over worker processes (:func:`run_load`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import selectors
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: commands in one client's cycle
CYCLE = 10


def _address(spec: str) -> tuple[int, Any]:
    """``unix:PATH`` or ``tcp:HOST:PORT`` to a socket family and address."""
    kind, _, rest = spec.partition(":")
    if kind == "unix":
        return socket.AF_UNIX, rest
    host, _, port = rest.rpartition(":")
    return socket.AF_INET, (host, int(port))


def command(client: int, n: int) -> dict[str, Any]:
    """The ``n``-th command of ``client``."""
    k = n // CYCLE
    own, secret, temp = f"l{client}", f"s{client}", f"t{client}"
    step = n % CYCLE
    cmd: dict[str, Any]
    if step == 0:
        path = f"/objects/{own}"
        cmd = {
            "execute": "qom-set",
            "arguments": {"path": path, "property": "poll-max-ns", "value": k},
        }
    elif step == 1:
        cmd = {
            "execute": "qom-get",
            "arguments": {"path": f"/objects/{own}", "property": "poll-max-ns"},
        }
    elif step == 2:
        args = {"qom-type": "secret", "id": secret, "data": f"d{client}-{k}"}
        cmd = {"execute": "object-add", "arguments": args}
    elif step == 3:
        cmd = {
            "execute": "qom-get",
            "arguments": {"path": f"/objects/{secret}", "property": "data"},
        }
    elif step == 4:
        cmd = {"execute": "query-iothreads"}
    elif step == 5:
        cmd = {"execute": "object-del", "arguments": {"id": secret}}
    elif step == 6:
        cmd = {"execute": "object-add", "arguments": {"qom-type": "iothread", "id": temp}}
    elif step == 7:
        cmd = {"execute": "object-del", "arguments": {"id": temp}}
    elif step == 8:
        # Deleted just before: the error a client alone gets too.
        cmd = {"execute": "object-del", "arguments": {"id": secret}}
    else:
        cmd = {
            "execute": "qom-get",
            "arguments": {"path": f"/objects/{secret}", "property": "data"},
        }
    cmd["id"] = n
    return cmd


def expected(client: int, n: int) -> Any:
    """The reply body (``return`` value or ``error``) a lone client gets, or
    ``None`` for ``query-iothreads`` (checked by :func:`_check`)."""
    k = n // CYCLE
    step = n % CYCLE
    if step == 1:
        return {"return": k}
    if step == 3:
        return {"return": f"d{client}-{k}"}
    if step == 4:
        return None
    if step == 8:
        return {"error": {"class": "GenericError", "desc": f"object 's{client}' not found"}}
    if step == 9:
        return {
            "error": {"class": "DeviceNotFound", "desc": f"Device '/objects/s{client}' not found"}
        }
    return {"return": {}}


def _check(client: int, n: int, reply: dict[str, Any]) -> str | None:
    """What is wrong with ``reply`` to command ``n``, or None."""
    if reply.get("id") != n:
        return f"client {client}: reply {reply!r} where the reply to {n} was due"
    body = {key: value for key, value in reply.items() if key != "id"}
    want = expected(client, n)
    if want is None:
        threads = body.get("return")
        if not isinstance(threads, list) or not any(t.get("id") == f"l{client}" for t in threads):
            return f"client {client}: query-iothreads without l{client}: {body!r}"
        return None
    if body != want:
        return f"client {client}: command {command(client, n)!r} got {body!r}, expected {want!r}"
    return None


@dataclass
class Result:
    """What one worker saw."""

    commands: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class _Client:
    def __init__(self, number: int, spec: str) -> None:
        family, addr = _address(spec)
        self.number = number
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(addr)
        if family == socket.AF_INET:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.n = -1
        self.sent_at = 0.0

    def line(self) -> bytes:
        """One whole line, blocking (set-up only)."""
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"client {self.number}: closed during set-up")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def setup(self) -> None:
        if b'"QMP"' not in self.line():
            raise ConnectionError(f"client {self.number}: no greeting")
        for message in (
            {"execute": "qmp_capabilities"},
            {
                "execute": "object-add",
                "arguments": {"qom-type": "iothread", "id": f"l{self.number}"},
            },
        ):
            self.sock.sendall(json.dumps(message).encode())
            reply = json.loads(self.line())
            if reply != {"return": {}}:
                raise ConnectionError(f"client {self.number}: {message} -> {reply}")

    def teardown(self) -> None:
        self.sock.setblocking(True)
        message = {"execute": "object-del", "arguments": {"id": f"l{self.number}"}}
        self.sock.sendall(json.dumps(message).encode())
        reply = json.loads(self.line())
        self.sock.close()
        if reply != {"return": {}}:
            raise ConnectionError(f"client {self.number}: {message} -> {reply}")

    def send_next(self) -> None:
        self.n += 1
        self.sent_at = time.perf_counter()
        self.sock.sendall(json.dumps(command(self.number, self.n)).encode())


def drive(specs: Sequence[tuple[int, str]], count: int) -> Result:
    """Run ``count`` commands on each client; ``specs`` are (client number,
    address) pairs. Each client connects, negotiates and adds its own
    iothread first, and deletes it and disconnects at the end."""
    result = Result()
    clients = [_Client(number, spec) for number, spec in specs]
    for client in clients:
        client.setup()
    _run(clients, count, result)
    for client in clients:
        client.teardown()
    return result


def _run(clients: list[_Client], count: int, result: Result) -> Result:
    sel = selectors.DefaultSelector()
    for client in clients:
        client.sock.setblocking(False)
        sel.register(client.sock, selectors.EVENT_READ, client)
        client.send_next()
    active = len(clients)
    while active:
        events = sel.select(30)
        if not events:
            result.errors.append("no reply within 30 s")
            break
        for key, _mask in events:
            client = key.data
            try:
                data = client.sock.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                result.errors.append(f"client {client.number}: server closed the connection")
                sel.unregister(client.sock)
                active -= 1
                continue
            client.buf += data
            while b"\r\n" in client.buf:
                line, client.buf = client.buf.split(b"\r\n", 1)
                reply = json.loads(line)
                if "event" in reply:
                    continue
                result.latencies.append(time.perf_counter() - client.sent_at)
                result.commands += 1
                problem = _check(client.number, client.n, reply)
                if problem is not None and len(result.errors) < 20:
                    result.errors.append(problem)
                if client.n + 1 < count:
                    client.sock.setblocking(True)
                    client.send_next()
                    client.sock.setblocking(False)
                else:
                    sel.unregister(client.sock)
                    active -= 1
    sel.close()
    return result


def _worker(specs: Sequence[tuple[int, str]], count: int, queue: Any) -> None:
    try:
        res = drive(specs, count)
    except Exception as exc:  # reported to the parent, which fails the run
        res = Result(errors=[f"worker failed: {exc!r}"])
    queue.put(res)


def run_load(addresses: Sequence[str], count: int, workers: int = 1) -> tuple[Result, float]:
    """``count`` commands on each address (client ``i`` on ``addresses[i]``),
    the clients split over ``workers`` processes (1: this thread). Returns the
    merged result and the wall-clock seconds."""
    specs = list(enumerate(addresses))
    start = time.perf_counter()
    if workers <= 1:
        return drive(specs, count), time.perf_counter() - start
    # Not fork: a child would inherit whatever sockets other threads of the
    # caller hold at that moment (a test's vanishing client), keeping them
    # open on the server's side until the child exits.
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    parts = [specs[i::workers] for i in range(workers)]
    children = [ctx.Process(target=_worker, args=(part, count, queue)) for part in parts]
    for child in children:
        child.start()
    merged = Result()
    for _ in children:
        res = queue.get(timeout=3600)
        merged.commands += res.commands
        merged.latencies += res.latencies
        merged.errors += res.errors
    elapsed = time.perf_counter() - start
    for child in children:
        child.join()
    return merged, elapsed


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def soak() -> bool:
    """Whether this is the full-size run (``make soak`` sets ``QOMHOST_SOAK=1``)."""
    return os.environ.get("QOMHOST_SOAK") == "1"
