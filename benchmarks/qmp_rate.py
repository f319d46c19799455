"""QMP round-trip rate over unix sockets: ``qom-get /objects/sec0 data``.

qomhost and QEMU run side by side, each with the same command line::

    PROG -machine none -nodefaults -display none \\
         -object secret,id=sec0,data=letmein,format=raw \\
         -qmp unix:DIR/PROG-0.sock,server=on,wait=off  ... (one per client)

A client is a raw blocking socket: it reads the greeting, negotiates
capabilities, then sends one command, reads until the reply line, and
repeats, counting round trips for T seconds. A socket chardev serves one
client at a time, so N parallel clients (N processes) use N monitors.

Trials alternate between the programs; each figure is the median of K
trials, in round trips per second.

Usage: ``.venv/bin/python benchmarks/qmp_rate.py [--seconds 2] [--trials 5] [--clients 2,8]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event

from _common import QOMHOST, log, median, qemu_binary, read_steal, steal_percent, table

REQUEST = b'{"execute": "qom-get", "arguments": {"path": "/objects/sec0", "property": "data"}}\n'
EXPECTED = b'{"return": "letmein"}\r\n'
OBJECTS = ["-object", "secret,id=sec0,data=letmein,format=raw"]


class Client:
    """A raw QMP client on one unix socket."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.reader = self.sock.makefile("rb")
        greeting = self.reader.readline()
        if b'"QMP"' not in greeting:
            raise RuntimeError(f"{path}: no greeting: {greeting!r}")
        self.sock.sendall(b'{"execute": "qmp_capabilities"}\n')
        reply = self.reader.readline()
        if not reply.startswith(b'{"return"'):
            raise RuntimeError(f"{path}: capabilities refused: {reply!r}")

    def reply(self) -> bytes:
        """The next reply line, skipping events."""
        while True:
            line = self.reader.readline()
            if not line:
                raise RuntimeError("server closed the connection")
            if not line.startswith(b'{"timestamp"'):
                return line

    def run(self, seconds: float) -> float:
        """Round trips per second over ``seconds``."""
        self.sock.sendall(REQUEST)
        if self.reply() != EXPECTED:
            raise RuntimeError("unexpected reply to qom-get")
        send, readline = self.sock.sendall, self.reader.readline
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            send(REQUEST)
            # Nothing sends events here, so every line must be this reply.
            if readline() != EXPECTED:
                raise RuntimeError("unexpected reply to qom-get")
            count += 1
            if not count & 63 and time.perf_counter() >= deadline:
                break
        return count / (time.perf_counter() - start)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _client_process(
    path: str, seconds: float, go: Event, results: multiprocessing.Queue[float]
) -> None:
    client = Client(path)
    go.wait()
    results.put(client.run(seconds))
    client.close()


def parallel(paths: list[str], seconds: float) -> float:
    """Total round trips per second of one client process per path."""
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    results: multiprocessing.Queue[float] = ctx.Queue()
    procs = [ctx.Process(target=_client_process, args=(p, seconds, go, results)) for p in paths]
    for proc in procs:
        proc.start()
    time.sleep(0.3)  # let every client connect and negotiate
    go.set()
    rates = [results.get(timeout=seconds + 30) for _ in procs]
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"client process failed with status {proc.exitcode}")
    return sum(rates)


def sequential(path: str, seconds: float) -> float:
    """Round trips per second of one client in this process."""
    client = Client(path)
    try:
        return client.run(seconds)
    finally:
        client.close()


class Server:
    """A program serving QMP on ``count`` unix sockets."""

    def __init__(self, name: str, program: str, directory: str, count: int) -> None:
        self.name = name
        self.paths = [os.path.join(directory, f"{name}-{i}.sock") for i in range(count)]
        argv = [program, "-machine", "none", "-nodefaults", "-display", "none", *OBJECTS]
        for path in self.paths:
            argv += ["-qmp", f"unix:{path},server=on,wait=off"]
        self.argv = argv
        # Kept aside (both programs report the SIGTERM that ends them); they
        # print nothing else, so the pipe cannot fill up.
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        for path in self.paths:
            while not os.path.exists(path):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    _, err = self.proc.communicate()
                    raise RuntimeError(f"{name} did not create {path}: {err.decode()}")
                time.sleep(0.01)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=10)


@dataclass
class RateResult:
    """Samples per program and load, in round trips per second."""

    seconds: float
    trials: int
    clients: list[int]
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    steal: float = 0.0

    def loads(self) -> list[str]:
        return ["1 client"] + [f"{n} clients" for n in self.clients]

    def markdown(self) -> str:
        """Medians per load and the qomhost/QEMU ratio."""
        header = ["load", "QEMU req/s", "qomhost req/s", "qomhost / QEMU"]
        rows = []
        for load in self.loads():
            q = median(self.samples["qemu"][load])
            ours = self.samples["qomhost"][load]
            h = median(ours)
            spread = f" ({min(ours):,.0f}..{max(ours):,.0f})"
            rows.append([load, f"{q:,.0f}", f"{h:,.0f}{spread}", f"{h / q:.2f}"])
        note = (
            f"Median of {self.trials} trials of {self.seconds:g} s each (qomhost range in "
            f"brackets); steal time during the run {self.steal:.1f} %."
        )
        return note + "\n\n" + table(header, rows)


def run(seconds: float = 2.0, trials: int = 5, clients: tuple[int, ...] = (2, 8)) -> RateResult:
    """Measure both programs, alternating trials."""
    result = RateResult(seconds, trials, list(clients))
    sockets = max((1, *clients))
    directory = tempfile.mkdtemp(prefix="qmp-rate.")
    servers = []
    try:
        servers = [
            Server("qemu", qemu_binary(), directory, sockets),
            Server("qomhost", QOMHOST, directory, sockets),
        ]
        for server in servers:
            sequential(server.paths[0], 0.3)  # warm up
            result.samples[server.name] = {load: [] for load in result.loads()}
        before = read_steal()
        for trial in range(trials):
            for server in servers if trial % 2 == 0 else servers[::-1]:
                samples = result.samples[server.name]
                samples["1 client"].append(sequential(server.paths[0], seconds))
                for n in clients:
                    samples[f"{n} clients"].append(parallel(server.paths[:n], seconds))
            log(f"qmp_rate: {trial + 1}/{trials} trials")
        result.steal = steal_percent(before, read_steal())
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of a trial (2)")
    parser.add_argument("--trials", type=int, default=5, help="trials per program and load (5)")
    parser.add_argument("--clients", default="2,8", help="parallel client counts (2,8)")
    args = parser.parse_args()
    clients = tuple(int(n) for n in args.clients.split(",") if n)
    print(run(args.seconds, args.trials, clients).markdown())


if __name__ == "__main__":
    main()
