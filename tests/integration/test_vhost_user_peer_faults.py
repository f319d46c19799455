"""vhost-user peers that die: the backend, then the frontend, killed with SIGKILL.

``qomhost-vhost-user-crypto`` serves a ``cryptodev-vhost-user`` device with
:data:`QUEUES` data queues, and requests are in flight on every queue (two
threads per queue, 64 KiB each) when a peer is killed:

* the backend: every caller gets a ``CryptoDevError`` within a second of
  the kill and no thread hangs; a new backend is started on the same path
  and the device, created with ``reconnect=1``, comes back by itself and
  ciphers correctly on every queue;
* the frontend (a process of its own): the backend goes on serving, and a
  new frontend ciphers correctly on every queue.

``make test`` runs 3 rounds of each; ``make soak`` (``QOMHOST_SOAK=1``) 100,
and prints the slowest failure and reconnection times.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cryptodev_vhost_user import BACKEND, LoopHost, cbc

from qmpload import soak
from qomhost.objects.cryptodev.base import CryptoDevError

QUEUES = 3
#: callers per queue while the peer is killed
PER_QUEUE = 2
ROUNDS = 100 if soak() else 3
SIZE = 65536

#: a frontend process: ciphers on every queue from threads until killed
FRONTEND = """
import sys, threading, time
from qomhost.host import Host
from qomhost.chardev.socket import ChardevSocket, SocketAddress

path, queues = sys.argv[1], int(sys.argv[2])
host = Host()
sock = ChardevSocket("chardev-socket")
sock.address = SocketAddress(path=path)
sock.label = "c0"
sock.open()
host.add_chardev(sock, "c0")
dev = host.add_object("cryptodev-vhost-user", "cv0", chardev="c0", queues=queues)
session = dev.create_session("aes-256-cbc", key=bytes(32))

def loop():
    host.context.thread_id = threading.get_native_id()
    while True:
        host.context.run_once()

threading.Thread(target=loop, daemon=True).start()
while host.context.thread_id == threading.get_native_id():
    time.sleep(0.001)
started = threading.Semaphore(0)

def work(queue):
    dev.encrypt(session, bytes(16), bytes(65536), queue=queue)
    started.release()
    while True:
        dev.encrypt(session, bytes(16), bytes(65536), queue=queue)

for queue in range(queues):
    threading.Thread(target=work, args=(queue,), daemon=True).start()
for queue in range(queues):
    started.acquire()
print("running", flush=True)
threading.Event().wait()
"""


def start_backend(path: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([BACKEND, "--socket-path", path, "--queues", str(QUEUES)])
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        assert proc.poll() is None, "the backend exited"
        assert time.monotonic() < deadline, "the backend did not listen"
        time.sleep(0.01)
    return proc


def check_every_queue(dev: Any) -> None:
    """A fresh session ciphers correctly on every queue."""
    key = os.urandom(32)
    with dev.create_session("aes-256-cbc", key=key) as session:
        for queue in range(QUEUES):
            iv, data = os.urandom(16), os.urandom(4096)
            assert dev.encrypt(session, iv, data, queue=queue) == cbc(key, iv, data)


def kill_mid_request(dev: Any, backend: subprocess.Popen[bytes]) -> float:
    """Kill ``backend`` while every queue has callers waiting; check that each
    caller fails within a second and none hangs. Returns the slowest failure's delay."""
    session = dev.create_session("aes-256-cbc", key=bytes(32))
    failed: list[float] = []
    running = threading.Semaphore(0)

    def caller(queue: int) -> None:
        try:
            dev.encrypt(session, bytes(16), bytes(SIZE), queue=queue)
            running.release()
            while True:
                dev.encrypt(session, bytes(16), bytes(SIZE), queue=queue)
        except CryptoDevError:
            failed.append(time.monotonic())

    callers = [
        threading.Thread(target=caller, args=(q,), daemon=True)
        for q in range(QUEUES)
        for _ in range(PER_QUEUE)
    ]
    for t in callers:
        t.start()
    for _ in callers:
        assert running.acquire(timeout=10), "requests did not flow"
    time.sleep(0.05)
    killed = time.monotonic()
    backend.send_signal(signal.SIGKILL)
    backend.wait()
    for t in callers:
        t.join(5)
    assert not any(t.is_alive() for t in callers), "a caller hangs"
    assert len(failed) == len(callers)
    delay = max(failed) - killed
    assert delay < 1.0
    return delay


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "crypto.sock")


def test_backend_killed_mid_request_then_back(socket_path: str) -> None:
    if not os.path.exists(BACKEND):
        pytest.skip("qomhost-vhost-user-crypto is not installed")
    backend = start_backend(socket_path)
    loophost = LoopHost()
    worst_failure = worst_return = 0.0
    try:
        loophost.chardev(socket_path, reconnect=1)
        dev = loophost.device(queues=QUEUES)
        loophost.start()
        for _round in range(ROUNDS):
            worst_failure = max(worst_failure, kill_mid_request(dev, backend))
            backend = start_backend(socket_path)
            restarted = time.monotonic()
            deadline = restarted + 10
            while not dev.ready:
                assert time.monotonic() < deadline, "the device did not come back"
                time.sleep(0.01)
            worst_return = max(worst_return, time.monotonic() - restarted)
            check_every_queue(dev)
    finally:
        loophost.close()
        backend.kill()
        backend.wait()
    print(
        f"\nbackend SIGKILLed {ROUNDS} times with {QUEUES * PER_QUEUE} requests in flight on"
        f" {QUEUES} queues: slowest caller failure {worst_failure * 1e3:.0f} ms after the kill,"
        f" slowest reconnection {worst_return:.2f} s after the restart (reconnect=1)"
    )


def test_frontend_killed_mid_request_backend_serves_on(socket_path: str) -> None:
    if not os.path.exists(BACKEND):
        pytest.skip("qomhost-vhost-user-crypto is not installed")
    backend = start_backend(socket_path)
    try:
        for _round in range(ROUNDS):
            front = subprocess.Popen(
                [sys.executable, "-c", FRONTEND, socket_path, str(QUEUES)],
                stdout=subprocess.PIPE,
            )
            assert front.stdout is not None
            assert front.stdout.readline() == b"running\n"
            time.sleep(0.05)
            front.send_signal(signal.SIGKILL)
            front.wait()
            front.stdout.close()
            assert backend.poll() is None, "the backend died with its frontend"
            loophost = LoopHost()
            try:
                loophost.chardev(socket_path)
                dev = loophost.device(queues=QUEUES)
                loophost.start()
                check_every_queue(dev)
            finally:
                loophost.close()
    finally:
        backend.kill()
        backend.wait()
    print(
        f"\nfrontend process SIGKILLed {ROUNDS} times with {QUEUES} requests in flight on"
        f" {QUEUES} queues: one backend process served a new frontend correctly each time"
    )
