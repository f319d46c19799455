"""A request/response channel in shared memory, as a guest and a device use a virtqueue.

Two single-producer/single-consumer rings of 64-bit words live in one
``memfd`` mapping, and two eventfds carry the kicks:

* the client writes a request into the *request ring*, publishes the new
  head, and kicks the request eventfd -- unless the server said it polls;
* the server notices the request -- by polling the request head (no system
  call) or when the eventfd wakes it -- writes the answer into the *response
  ring*, publishes that head, and kicks the response eventfd if the client
  asked for kicks (a client that busy-waits on the response head does not,
  as a virtio driver sets ``VRING_AVAIL_F_NO_INTERRUPT``).

Every index is a 64-bit word on its own cache line, written by one side
only. A store through the ``memoryview`` is one aligned 8-byte write, and
x86 keeps stores in program order, so a published head never runs ahead of
its slot.

**Skipped kicks.** While the server's loop busy-polls, a kick only costs
the client a system call (~0.4 µs here, as much as the whole polled round
trip). So the server keeps a ``NO_KICK`` word, as a virtio device sets
``VRING_USED_F_NO_NOTIFY``: its ``io_poll_begin`` writes 1, its
``io_poll_end`` writes 0 before the loop polls once more and blocks; the
client, after publishing a head, kicks only if ``NO_KICK`` is 0.

That is a store-then-load on each side (server: ``NO_KICK = 0``, then read
the head; client: write the head, then read ``NO_KICK``), which x86 may
reorder through its store buffers: both loads can see the old values, the
client skips its kick and the server blocks with a request queued -- the
lost wake-up virtio closes with a full barrier on both sides. Python has no
fence. :func:`fence` is the closest thing: an uncontended lock acquire and
release, which CPython (glibc semaphores) performs as atomic
read-modify-writes, and x86 orders those as full barriers. That is an
implementation detail, not a promise, so the server also bounds the cost of
a lost kick: ``io_poll_end`` arms a one-shot re-check :data:`RECHECK_NS`
later (cancelled if polling begins again first), which answers a request it
finds and counts it in :attr:`RingServer.lost_kicks` -- or in
:attr:`RingServer.late_kicks` if the client had decided to kick (it notes
the head in ``KICKED`` first) and the re-check merely came first (the
client was between publishing and kicking, or descheduled there): no
stall. One re-check is enough:
the reorder only hides stores for the moment they sit in a store buffer, so
a client publishing after that reads ``NO_KICK`` 0 and kicks, and a request
that raced the transition is visible by the time the re-check runs. The
benchmark reports every request found that way; a lost kick costs at most
:data:`RECHECK_NS` plus a wake-up.

Run as a program, this module is the client process of
``iothread_latency.py``: it inherits the memfd and both eventfds, makes
``N`` round trips after ``WARM`` unmeasured ones, and prints the round-trip
times (ns, one line, space-separated), the client's own part of each (from
its start to the request sent) on a second line, on a third how many of
the measured requests it kicked, and on a fourth, for each measured request
it slept for, its wake-up: from the server's response kick (the clock the
server left in ``KICKED_AT``) to the client running again
(``ring_client.c`` is the same client in C)::

    python _ring.py MEMFD REQ_FD RESP_FD spin|block N WARM

:func:`busy_poll` is a floor server: the poll callback and the answer in a
bare loop, until the benchmark sets the ``STOP`` word (``ring_server.c`` is
the same in C).
"""

from __future__ import annotations

import _thread
import functools
import mmap
import os
import select
import sys
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

__all__ = [
    "RECHECK_NS",
    "Channel",
    "RingServer",
    "Trips",
    "busy_poll",
    "client_round_trips",
    "fence",
]

SIZE = 4096
#: word indexes (8 words = one 64-byte cache line apart; ring.h has the same for C)
REQ_HEAD = 0  # written by the client
REQ_TAIL = 8  # written by the server
RESP_HEAD = 16  # written by the server
RESP_TAIL = 24  # written by the client
WANT_KICK = 32  # written by the client: 1 = kick the response eventfd
NO_KICK = 40  # written by the server: 1 = its loop polls, no request kick needed
KICKED = 48  # written by the client: the last head it decided to kick for
KICKED_AT = 56  # written by the server: its CLOCK_MONOTONIC (ns) just before a response kick
STOP = 192  # written by the benchmark: 1 = a busy-poll floor server returns (after the slots)
REQ_SLOTS = 64
RESP_SLOTS = 128
SLOTS = 64
MASK = SLOTS - 1
#: how long after ``io_poll_end`` the server looks for a request whose kick
#: was lost; not shorter than the largest ``poll-max-ns`` measured (1 ms), so
#: that the re-check never ends a wait the adaptive rule would judge
#: differently (the wait it ends was already longer than any window)
RECHECK_NS = 1_000_000

_fence_lock = _thread.allocate_lock()
_acquire = _fence_lock.acquire
_release = _fence_lock.release


def fence() -> None:
    """A full memory barrier on x86, as far as CPython gives one (see above)."""
    _acquire()
    _release()


class Cancellable(Protocol):
    """A timer: :class:`qomhost.aio.context.Timer`."""

    def cancel(self) -> None: ...


class Loop(Protocol):
    """The serving loop: an ``AioContext`` (its window, and a timer)."""

    poll_ns: int

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Cancellable: ...


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
    :attr:`serve_polled` and :meth:`on_event` take every queued request, count
    how the request was noticed, and note the loop's window if it is given.
    :meth:`poll_begin` and :meth:`poll_end` are the loop's ``io_poll_begin``
    and ``io_poll_end``: they set and clear ``NO_KICK`` (the re-check after
    ``poll_end`` needs the loop).
    """

    __slots__ = (
        "by_event",
        "by_poll",
        "late_kicks",
        "loop",
        "lost_kicks",
        "recheck",
        "req_fd",
        "resp_fd",
        "resp_head",
        "serve_polled",
        "tail",
        "windows",
        "words",
    )

    def __init__(self, channel: Channel, loop: Loop | None = None) -> None:
        self.words = channel.words
        self.req_fd = channel.req_fd
        self.resp_fd = channel.resp_fd
        self.tail = 0
        self.resp_head = 0
        self.by_poll = 0
        self.by_event = 0
        #: requests found by the re-check after ``poll_end`` that the client
        #: did not kick: the race was lost (a stall of up to RECHECK_NS)
        self.lost_kicks = 0
        #: ... and those whose kick was still on its way
        self.late_kicks = 0
        #: the serving loop, whose window is noted at each answer
        self.loop = loop
        #: ``loop.poll_ns`` at each answer
        self.windows: list[int] = []
        #: the armed re-check, if any
        self.recheck: Cancellable | None = None
        #: the ``io_poll_ready`` callback (the poll callback found work): the
        #: answer, counted as polled, with no Python call in between
        self.serve_polled: Callable[[], None] = functools.partial(self._serve, True)

    def poll_begin(self) -> None:
        """``io_poll_begin``: the loop polls the head, the client need not kick."""
        self.words[NO_KICK] = 1
        if self.recheck is not None:
            self.recheck.cancel()
            self.recheck = None

    def poll_end(self) -> None:
        """``io_poll_end``: kicks are needed again, from before the loop's last poll."""
        self.words[NO_KICK] = 0
        fence()  # the store before the loop's last read of the head
        if self.loop is not None and self.recheck is None:
            self.recheck = self.loop.call_later(RECHECK_NS / 1e9, self._recheck)

    def _recheck(self) -> None:
        self.recheck = None
        head = self.words[REQ_HEAD]
        if head == self.tail:
            return
        late = self.words[KICKED] >= head
        self._serve()
        if late:
            self.late_kicks += 1
        else:
            self.lost_kicks += 1

    @property
    def rechecked(self) -> int:
        """Requests the re-check answered, kicked or not."""
        return self.lost_kicks + self.late_kicks

    def stop(self) -> None:
        """Cancel the re-check (call in the loop's thread, after unregistering)."""
        if self.recheck is not None:
            self.recheck.cancel()
            self.recheck = None

    def pending(self) -> bool:
        """Whether a request is queued (no system call)."""
        return self.words[REQ_HEAD] != self.tail

    def on_event(self) -> None:
        """The request eventfd woke the loop (the loop has read it)."""
        self._serve(False)

    def on_readable(self) -> None:
        """``add_reader`` callback for asyncio loops: read the eventfd, then serve."""
        try:
            os.eventfd_read(self.req_fd)
        except BlockingIOError:
            pass
        self.on_event()

    def _serve(self, polled: bool | None = None) -> None:
        """Answer every queued request; count it in :attr:`by_poll` or
        :attr:`by_event` if ``polled`` is True or False."""
        words = self.words
        head = words[REQ_HEAD]
        tail = self.tail
        if head == tail:
            return
        resp = self.resp_head
        while tail != head:
            words[RESP_SLOTS + (resp & MASK)] = words[REQ_SLOTS + (tail & MASK)]
            tail += 1
            resp += 1
        words[RESP_HEAD] = resp
        if words[WANT_KICK]:
            words[KICKED_AT] = time.perf_counter_ns()  # CLOCK_MONOTONIC, as the client's
            os.eventfd_write(self.resp_fd, 1)
        words[REQ_TAIL] = tail
        self.tail = tail
        self.resp_head = resp
        if polled:
            self.by_poll += 1
        elif polled is not None:
            self.by_event += 1
        if self.loop is not None:
            self.windows.append(self.loop.poll_ns)


def busy_poll(server: RingServer) -> None:
    """A floor: call ``server``'s poll callback and answer, in a loop with
    nothing else in it, until the ``STOP`` word is set.

    It never blocks, so it sets ``NO_KICK`` for good (the client need not
    kick) and holds the GIL but for CPython's forced switches: about the
    least a Python server's round trip with this handler takes, against
    which an event loop's own cost shows (run it in a thread of its own).
    """
    words = server.words
    pending = server.pending
    serve = server.serve_polled
    words[NO_KICK] = 1
    while True:
        if pending():
            serve()
        elif words[STOP]:
            return


class Trips(NamedTuple):
    """What a client measured: per request of the last ``n``, the round trip
    and the client's own part of it (ns), how many it kicked, and its
    wake-ups."""

    rtts: list[int]
    #: from the start to the request sent (written, published, kicked): no
    #: server can answer in less
    own: list[int]
    kicks: int
    #: per request the client slept for: from the server's response kick to
    #: the client running again (its epoll wait returned, and, in-process, it
    #: has the GIL back): a part of the round trip no server can shorten
    wakes: list[int]


def client_round_trips(
    words: memoryview, req_fd: int, resp_fd: int, style: str, n: int, warm: int
) -> Trips:
    """Make ``warm + n`` round trips and say what they took.

    ``style`` is ``spin`` (busy-wait on the response head, no response
    kicks) or ``block`` (wait in epoll for the response eventfd). Either
    skips the request kick while the server's ``NO_KICK`` is set.
    """
    spin = style == "spin"
    words[WANT_KICK] = 0 if spin else 1
    ep = select.epoll()
    ep.register(resp_fd, select.EPOLLIN)
    now = time.perf_counter_ns
    kick = os.eventfd_write
    acquire, release = _acquire, _release  # fence(), without the call
    head = words[REQ_HEAD]
    resp_tail = words[RESP_TAIL]
    rtts = [0] * n
    own = [0] * n
    wakes: list[int] = []
    kicks = 0
    try:
        for i in range(-warm, n):
            t0 = now()
            words[REQ_SLOTS + (head & MASK)] = i & 0xFFFF
            head += 1
            words[REQ_HEAD] = head
            acquire()  # the head store before the NO_KICK load
            release()
            if not words[NO_KICK]:
                words[KICKED] = head
                kick(req_fd, 1)
                if i >= 0:
                    kicks += 1
            sent = now()
            if spin:
                while words[RESP_HEAD] == resp_tail:
                    pass
            else:
                woke = 0
                while words[RESP_HEAD] == resp_tail:
                    ep.poll(-1)
                    woke = now()
                    try:
                        os.eventfd_read(resp_fd)
                    except BlockingIOError:
                        pass
                if woke and i >= 0:
                    wakes.append(woke - words[KICKED_AT])
            t1 = now()
            if words[RESP_SLOTS + (resp_tail & MASK)] != i & 0xFFFF:
                raise RuntimeError("wrong answer")
            resp_tail += 1
            words[RESP_TAIL] = resp_tail
            if i >= 0:
                rtts[i] = t1 - t0
                own[i] = sent - t0
    finally:
        ep.close()
    return Trips(rtts, own, kicks, wakes)


def _main(argv: list[str]) -> None:
    memfd, req_fd, resp_fd = (int(x) for x in argv[:3])
    style, n, warm = argv[3], int(argv[4]), int(argv[5])
    with mmap.mmap(memfd, SIZE) as mapping:
        words = memoryview(mapping).cast("Q")
        trips = client_round_trips(words, req_fd, resp_fd, style, n, warm)
        words.release()
    for values in (trips.rtts, trips.own):
        sys.stdout.write(" ".join(map(str, values)) + "\n")
    sys.stdout.write(f"{trips.kicks}\n")
    sys.stdout.write(" ".join(map(str, trips.wakes)) + "\n")


if __name__ == "__main__":
    _main(sys.argv[1:])
