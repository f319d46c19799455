"""A request/response channel in shared memory, as a guest and a device use a virtqueue.

Two single-producer/single-consumer rings of 64-bit words live in one
``memfd`` mapping, and two eventfds carry the kicks:

* the client writes a request into the *request ring*, publishes the new
  head, and kicks the request eventfd;
* the server notices the request -- by polling the request head (no system
  call) or when the eventfd wakes it -- writes the answer into the *response
  ring*, publishes that head, and kicks the response eventfd if the client
  asked for kicks (a client that busy-waits on the response head does not,
  as a virtio driver sets ``VRING_AVAIL_F_NO_INTERRUPT``).

Every index is a 64-bit word on its own cache line, written by one side
only. A store through the ``memoryview`` is one aligned 8-byte write, and
x86 keeps stores in program order, so a published head never runs ahead of
its slot.

Run as a program, this module is the client process of
``iothread_latency.py``: it inherits the memfd and both eventfds, makes
``N`` round trips after ``WARM`` unmeasured ones, and prints the round-trip
times (ns, one line, space-separated) on stdout::

    python _ring.py MEMFD REQ_FD RESP_FD spin|block N WARM
"""

from __future__ import annotations

import mmap
import os
import select
import sys
import time
from typing import Protocol

__all__ = ["Channel", "RingServer", "client_round_trips"]

SIZE = 4096
#: word indexes (8 words = one 64-byte cache line apart)
REQ_HEAD = 0  # written by the client
REQ_TAIL = 8  # written by the server
RESP_HEAD = 16  # written by the server
RESP_TAIL = 24  # written by the client
WANT_KICK = 32  # written by the client: 1 = kick the response eventfd
REQ_SLOTS = 64
RESP_SLOTS = 128
SLOTS = 64
MASK = SLOTS - 1


class Window(Protocol):
    """Something with a polling window: an ``AioContext``."""

    poll_ns: int


class Channel:
    """The shared mapping and both eventfds, on the server's side."""

    def __init__(self, req_fd: int) -> None:
        #: the request eventfd (the server's :class:`EventNotifier` owns it)
        self.req_fd = req_fd
        self.resp_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.memfd = os.memfd_create("qomhost-bench-ring", os.MFD_CLOEXEC)
        os.ftruncate(self.memfd, SIZE)
        self.map = mmap.mmap(self.memfd, SIZE)
        self.words = memoryview(self.map).cast("Q")

    def fds(self) -> tuple[int, int, int]:
        """What a client process inherits: memfd, request and response eventfds."""
        return self.memfd, self.req_fd, self.resp_fd

    def close(self) -> None:
        """Unmap and close what this side created (not the request eventfd)."""
        self.words.release()
        self.map.close()
        os.close(self.memfd)
        os.close(self.resp_fd)


class RingServer:
    """The server half: answers each request with its own value.

    :meth:`pending` is the poll callback (one memory read);
    :meth:`on_polled` and :meth:`on_event` take every queued request, count
    how the request was noticed, and note the loop's window if a probe is
    given.
    """

    __slots__ = (
        "by_event",
        "by_poll",
        "req_fd",
        "resp_fd",
        "resp_head",
        "tail",
        "window",
        "windows",
        "words",
    )

    def __init__(self, channel: Channel, window: Window | None = None) -> None:
        self.words = channel.words
        self.req_fd = channel.req_fd
        self.resp_fd = channel.resp_fd
        self.tail = 0
        self.resp_head = 0
        self.by_poll = 0
        self.by_event = 0
        #: the serving loop, whose window is noted at each answer
        self.window = window
        #: ``window.poll_ns`` at each answer
        self.windows: list[int] = []

    def pending(self) -> bool:
        """Whether a request is queued (no system call)."""
        return self.words[REQ_HEAD] != self.tail

    def on_polled(self) -> None:
        """The loop's poll callback found work."""
        if self._serve():
            self.by_poll += 1

    def on_event(self) -> None:
        """The request eventfd woke the loop (the loop has read it)."""
        if self._serve():
            self.by_event += 1

    def on_readable(self) -> None:
        """``add_reader`` callback for asyncio loops: read the eventfd, then serve."""
        try:
            os.eventfd_read(self.req_fd)
        except BlockingIOError:
            pass
        self.on_event()

    def _serve(self) -> bool:
        words = self.words
        head = words[REQ_HEAD]
        tail = self.tail
        if head == tail:
            return False
        resp = self.resp_head
        while tail != head:
            words[RESP_SLOTS + (resp & MASK)] = words[REQ_SLOTS + (tail & MASK)]
            tail += 1
            resp += 1
        words[RESP_HEAD] = resp
        if words[WANT_KICK]:
            os.eventfd_write(self.resp_fd, 1)
        words[REQ_TAIL] = tail
        self.tail = tail
        self.resp_head = resp
        if self.window is not None:
            self.windows.append(self.window.poll_ns)
        return True


def client_round_trips(
    words: memoryview, req_fd: int, resp_fd: int, style: str, n: int, warm: int
) -> list[int]:
    """Make ``warm + n`` round trips; the times of the last ``n``, in ns.

    ``style`` is ``spin`` (busy-wait on the response head, no response
    kicks) or ``block`` (wait in epoll for the response eventfd).
    """
    spin = style == "spin"
    words[WANT_KICK] = 0 if spin else 1
    ep = select.epoll()
    ep.register(resp_fd, select.EPOLLIN)
    now = time.perf_counter_ns
    kick = os.eventfd_write
    head = words[REQ_HEAD]
    resp_tail = words[RESP_TAIL]
    rtts = [0] * n
    try:
        for i in range(-warm, n):
            t0 = now()
            words[REQ_SLOTS + (head & MASK)] = i & 0xFFFF
            head += 1
            words[REQ_HEAD] = head
            kick(req_fd, 1)
            if spin:
                while words[RESP_HEAD] == resp_tail:
                    pass
            else:
                while words[RESP_HEAD] == resp_tail:
                    ep.poll(-1)
                    try:
                        os.eventfd_read(resp_fd)
                    except BlockingIOError:
                        pass
            t1 = now()
            if words[RESP_SLOTS + (resp_tail & MASK)] != i & 0xFFFF:
                raise RuntimeError("wrong answer")
            resp_tail += 1
            words[RESP_TAIL] = resp_tail
            if i >= 0:
                rtts[i] = t1 - t0
    finally:
        ep.close()
    return rtts


def _main(argv: list[str]) -> None:
    memfd, req_fd, resp_fd = (int(x) for x in argv[:3])
    style, n, warm = argv[3], int(argv[4]), int(argv[5])
    with mmap.mmap(memfd, SIZE) as mapping:
        words = memoryview(mapping).cast("Q")
        rtts = client_round_trips(words, req_fd, resp_fd, style, n, warm)
        words.release()
    sys.stdout.write(" ".join(map(str, rtts)) + "\n")


if __name__ == "__main__":
    _main(sys.argv[1:])
