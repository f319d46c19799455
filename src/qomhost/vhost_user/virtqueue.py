"""Split virtqueues (virtio 1.x, specification section 2.7), from either side.

A split virtqueue is three little-endian structures in guest memory::

    descriptor table  num x {u64 addr, u32 len, u16 flags, u16 next}     (16-byte aligned)
    available ring    u16 flags, u16 idx, u16 ring[num], u16 used_event  (driver writes)
    used ring         u16 flags, u16 idx, {u32 id, u32 len}[num],
                      u16 avail_event                                    (device writes)

The *driver* (a guest, or qomhost's vhost-user frontend) puts the head of a
descriptor chain in the available ring and bumps ``avail->idx``; the
*device* (a vhost-user backend) takes it, reads the device-readable
buffers, fills the device-writable ones, and hands the head back through
the used ring. Indices are free-running 16-bit counters; the slot is the
index modulo ``num``. :class:`DriverVirtqueue` is the driver's end,
:class:`DeviceVirtqueue` the device's; both work on a
:class:`~qomhost.vhost_user.memory.GuestMemory`, normally in two processes.

Memory ordering
---------------
The two ends share memory without locks, so the order in which stores
become visible is the protocol: a ring entry must be visible before the
index that publishes it, and an index must be read before the entries it
covers. This module assumes x86-64 (TSO): stores become visible in
program order and loads are not reordered with other loads. Every
publish therefore writes the entries first and the index last, and every
consumer reads the index first.

A 16-bit field the other end may read at any moment (flags, ``idx``,
``used_event``, ``avail_event``) is stored with one 16-bit store, through
a ``memoryview`` cast to ``"H"`` (native order, little-endian here), and
never with ``struct.pack_into``: that one clears its target before it
writes the value, so the other end could read 0 in between -- an avail
index gone back to 0 is a broken ring ("Guest moved used index from N
to 0"), a used index at 0 a device returning what it never had, an event
index at 0 a lost notification. ``struct`` stays for what is written
before it is published (descriptors, ring entries, used elements).

The one reordering TSO does allow -- a load passing an earlier store --
matters where an end publishes something and then reads the other end's
notification state (``used_event``/``avail_event``/flags). There
:func:`full_barrier` issues a locked instruction, which x86 treats as a
full fence, as C code would with ``smp_mb()``.

A malformed ring or chain is the driver's fault, not the device's: the
device raises :class:`VirtqueueError` (texts as libvhost-user's) and never
crashes or loops forever, whatever bytes are in guest memory.
"""

from __future__ import annotations

import re
import struct
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import NoReturn

from qomhost.errors import QemuError
from qomhost.vhost_user import protocol
from qomhost.vhost_user.memory import GuestAllocator, GuestMemory, GuestMemoryError

__all__ = [
    "MAX_QUEUE_SIZE",
    "VIRTIO_F_VERSION_1",
    "VIRTIO_RING_F_EVENT_IDX",
    "VIRTIO_RING_F_INDIRECT_DESC",
    "VIRTQ_DESC_F_INDIRECT",
    "VIRTQ_DESC_F_NEXT",
    "VIRTQ_DESC_F_WRITE",
    "VRING_AVAIL_F_NO_INTERRUPT",
    "VRING_USED_F_NO_NOTIFY",
    "DescriptorChain",
    "DeviceVirtqueue",
    "DriverVirtqueue",
    "LazyChain",
    "VirtqueueError",
    "VirtqueueFull",
    "full_barrier",
    "vring_need_event",
    "vring_sizes",
]

#: descriptor flags: the chain continues at ``next``; the device writes this
#: buffer; the buffer is a table of descriptors
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
#: available ring flag: the driver needs no used-buffer notification
VRING_AVAIL_F_NO_INTERRUPT = 1
#: used ring flag: the device needs no available-buffer notification (kick)
VRING_USED_F_NO_NOTIFY = 1

#: feature bits
VIRTIO_RING_F_INDIRECT_DESC = 28
VIRTIO_RING_F_EVENT_IDX = 29
VIRTIO_F_VERSION_1 = 32

#: the largest queue a split virtqueue can have
MAX_QUEUE_SIZE = 32768

_DESC = struct.Struct("<QIHH")
_DESC_SIZE = _DESC.size
_ELEM = struct.Struct("<II")
_U16_MASK = 0xFFFF
# an event index this far from the current one means "not for a long while":
# with event idx there is no flag to say "never"
_FAR = 0x8000
_U32_LIMIT = 1 << 32

# Reading an indirect table without a Python loop: the low byte of each
# descriptor's flags becomes one letter (r/w: readable/writable with NEXT,
# R/W: the same ending the chain, x: INDIRECT), and a well-formed chain is
# a prefix matching r*(R|w*W). Linux fills its tables in order (next =
# i + 1), which two byte-string comparisons confirm; anything else goes
# the descriptor-by-descriptor way, which also words the errors.
_FLAG_CLASS = bytes(ord("x") if k & VIRTQ_DESC_F_INDIRECT else b"RrWw"[k & 3] for k in range(256))
_TABLE_CHAIN = re.compile(rb"(r*)(?:R|w*W)")
_NEXT_LO = bytes((i + 1) & 0xFF for i in range(MAX_QUEUE_SIZE))
_NEXT_HI = bytes((i + 1) >> 8 for i in range(MAX_QUEUE_SIZE))
# the shortcut reads fields through native-order casts
_NATIVE_LE = sys.byteorder == "little"
# tables up to this many descriptors are walked one by one all the same
_SHORT_TABLE = 4
# Tables of up to this many descriptors (Linux's virtio-crypto requests up
# to a page: header, IV, source, destination, status) are read in one
# unpack, and a chain filled in order is recognised by its flags (one dict
# lookup: each well-formed sequence maps to its split) and its links.
_SMALL_TABLE = 8
_SMALL_DESCS = {n: struct.Struct("<" + "QIHH" * n) for n in range(1, _SMALL_TABLE + 1)}


def _chain_flags(count: int, split: int) -> tuple[int, ...]:
    """The flags of a chain of ``count`` descriptors filled in order, the
    first ``split`` readable: NEXT on all but the last, WRITE after ``split``."""
    flags = [VIRTQ_DESC_F_NEXT] * split + [VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE] * (count - split)
    flags[-1] &= ~VIRTQ_DESC_F_NEXT
    return tuple(flags)


_SMALL_SHAPES = {
    _chain_flags(n, split): split for n in range(1, _SMALL_TABLE + 1) for split in range(n + 1)
}
_SMALL_LINKS = {n: tuple(range(1, n)) for n in range(1, _SMALL_TABLE + 1)}
# how many large tables a queue remembers having walked (_walk_large)
_WALKED_TABLES = 16
# a table of two descriptors, readable then writable (the qomhost crypto
# frontend's requests, and a common shape for small virtio requests), read
# in one unpack
_PAIR = struct.Struct("<QIHHQIHH")

#: a walked chain: its descriptors' addresses and lengths, how many are
#: readable, how many in all, and the readable and writable bytes
_Walked = tuple[list[int], list[int], int, int, int, int]


def _pair(table: memoryview) -> _Walked | None:
    """The two-descriptor table shape :meth:`DeviceVirtqueue._walk_pair` takes
    (a readable descriptor with NEXT to 1, then a readable or writable one
    ending the chain, neither empty), walked; ``None`` for any other. Whether
    the buffers lie in guest memory is the caller's to check."""
    a0, l0, f0, n0, a1, l1, f1, _n1 = _PAIR.unpack_from(table)
    if f0 != VIRTQ_DESC_F_NEXT or n0 != 1 or (f1 and f1 != VIRTQ_DESC_F_WRITE) or not l0 or not l1:
        return None
    if f1:
        return [a0, a1], [l0, l1], 1, 2, l0, l1
    return [a0, a1], [l0, l1], 2, 2, l0 + l1, 0


class VirtqueueError(QemuError):
    """A malformed ring or descriptor chain, or a queue used wrongly."""


class VirtqueueFull(VirtqueueError):
    """Not enough free descriptors for the request: wait for used buffers."""


def vring_sizes(num: int) -> tuple[int, int, int]:
    """Bytes of the descriptor table, available ring and used ring for ``num`` entries.

    The ring sizes include the event-index fields (``used_event`` at the end
    of the available ring, ``avail_event`` at the end of the used ring).
    """
    return _DESC_SIZE * num, 6 + 2 * num, 6 + _ELEM.size * num


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """The event-index rule: did moving an index from ``old_idx`` to ``new_idx``
    pass ``event_idx``? (All three are 16-bit ring indices.)"""
    return (new_idx - event_idx - 1) & _U16_MASK < (new_idx - old_idx) & _U16_MASK


_fence = threading.Lock()


def full_barrier() -> None:
    """Order earlier stores before later loads, across processes.

    Taking an uncontended lock is an atomic read-modify-write, a locked
    instruction on x86, which no load or store crosses.
    """
    with _fence:
        pass


def _check_num(num: int) -> None:
    if not 0 < num <= MAX_QUEUE_SIZE or num & (num - 1):
        raise VirtqueueError(
            f"Invalid queue size {num}: must be a power of 2 up to {MAX_QUEUE_SIZE}"
        )


class DescriptorChain:
    """One request as the device sees it: its head and its buffers.

    ``readable`` and ``writable`` are views straight into guest memory, in
    chain order (a buffer that crosses a region boundary is several
    views). Reading them copies nothing until asked to.
    """

    __slots__ = ("head", "readable", "readable_len", "writable", "writable_len")

    def __init__(
        self,
        head: int,
        readable: list[memoryview],
        writable: list[memoryview],
        readable_len: int,
        writable_len: int,
    ) -> None:
        self.head = head
        self.readable = readable
        self.writable = writable
        self.readable_len = readable_len
        self.writable_len = writable_len

    def read_all(self) -> bytes:
        """A copy of all device-readable bytes, in order."""
        if len(self.readable) == 1:
            return bytes(self.readable[0])
        return b"".join(self.readable)

    def read_into(self, buf: bytearray | memoryview) -> int:
        """Copy device-readable bytes into ``buf`` until either runs out; return the count."""
        dest = memoryview(buf).cast("B")
        pos = 0
        for part in self.readable:
            take = min(part.nbytes, dest.nbytes - pos)
            dest[pos : pos + take] = part[:take]
            pos += take
            if pos == dest.nbytes:
                break
        return pos

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``offset`` in the device-writable buffers, across segments."""
        src = memoryview(data).cast("B")
        if offset < 0 or offset + src.nbytes > self.writable_len:
            raise VirtqueueError(
                f"{src.nbytes} bytes at offset {offset} do not fit the "
                f"{self.writable_len} writable bytes of the chain at {self.head}"
            )
        pos = 0
        for part in self.writable:
            if offset >= part.nbytes:
                offset -= part.nbytes
                continue
            take = min(part.nbytes - offset, src.nbytes - pos)
            part[offset : offset + take] = src[pos : pos + take]
            pos += take
            offset = 0
            if pos == src.nbytes:
                break

    def __repr__(self) -> str:
        return (
            f"<DescriptorChain head={self.head} readable={self.readable_len} "
            f"writable={self.writable_len}>"
        )


class LazyChain:
    """One request as :meth:`DeviceVirtqueue.pop_lazy` gives it: checked, not mapped.

    The whole chain has been walked and checked as :meth:`DeviceVirtqueue.pop`
    checks it (order, loops, sizes, every address inside guest memory), but
    no view exists until asked for: :meth:`readable_views` and
    :meth:`writable_views` map just the bytes a device needs. Linux hands a
    crypto device its whole AF_ALG scatterlists, hundreds of pages of which
    a request uses a few; mapping them all would cost more than the cipher.
    """

    __slots__ = (
        "_addrs",
        "_count",
        "_lens",
        "_memory",
        "_split",
        "_views",
        "head",
        "readable_len",
        "writable_len",
    )

    def __init__(
        self,
        memory: GuestMemory,
        head: int,
        walked: _Walked,
        views: tuple[memoryview, memoryview] | None = None,
    ) -> None:
        self._memory = memory
        # a two-buffer chain's buffers, mapped whole while it was checked
        self._views = views
        self.head = head
        # descriptors [0, split) are readable, [split, count) writable;
        # readable_len and writable_len: the bytes in each part
        (
            self._addrs,
            self._lens,
            self._split,
            self._count,
            self.readable_len,
            self.writable_len,
        ) = walked

    @property
    def descriptors(self) -> tuple[int, int]:
        """How many descriptors are readable and writable."""
        return self._split, self._count - self._split

    def readable_views(self, offset: int, length: int) -> list[memoryview]:
        """Views of readable bytes ``offset`` to ``offset + length`` (fewer if the
        readable part ends first). Neighbouring buffers that are contiguous in
        guest memory come as one view."""
        return self._map(0, self._split, offset, length)

    def writable_views(self, offset: int, length: int) -> list[memoryview]:
        """As :meth:`readable_views`, in the device-writable part."""
        views = self._views
        if views is not None and self._split == 1:
            last = views[1]
            if offset >= last.nbytes or length <= 0:
                return []
            return [last[offset : offset + length]]
        return self._map(self._split, self._count, offset, length)

    def first_readable(self) -> memoryview | None:
        """The first readable buffer whole (up to a region's end), or None.

        One mapping for a request whose driver put it all in one buffer.
        """
        if self._views is not None:
            return self._views[0]
        if not self._split:
            return None
        views = self._map(0, 1, 0, self._lens[0])
        return views[0]

    def read(self, offset: int, length: int) -> bytes:
        """A copy of readable bytes ``offset`` to ``offset + length`` (or fewer)."""
        views = self._map(0, self._split, offset, length)
        if len(views) == 1:
            return bytes(views[0])
        return b"".join(views)

    def set_last_byte(self, value: int) -> bool:
        """Store ``value`` in the last writable byte (a virtio status, as a rule);
        False if the chain has no writable byte."""
        last = self._count - 1
        if last < self._split:
            return False
        if self._views is not None:
            self._views[1][-1] = value
            return True
        try:
            self._memory.store_byte(self._addrs[last] + self._lens[last] - 1, value)
        except GuestMemoryError as exc:  # memory gone since the chain was checked
            raise VirtqueueError(f"virtio: invalid address for buffers: {exc.desc}") from None
        return True

    def _map(self, first: int, stop: int, offset: int, length: int) -> list[memoryview]:
        addrs, lens = self._addrs, self._lens
        i = first
        while i < stop and offset >= lens[i]:
            offset -= lens[i]
            i += 1
        if i == stop or length <= 0:
            return []
        out: list[memoryview] = []
        start = end = -1
        try:
            if length <= lens[i] - offset:  # the common case: one buffer holds it
                return self._memory.views(addrs[i] + offset, length)
            while i < stop and length > 0:
                addr = addrs[i] + offset
                take = lens[i] - offset
                if take > length:
                    take = length
                offset = 0
                if addr == end:
                    end += take
                else:
                    if end > start:
                        out += self._memory.views(start, end - start)
                    start, end = addr, addr + take
                length -= take
                i += 1
            if end > start:
                out += self._memory.views(start, end - start)
        except GuestMemoryError as exc:  # memory gone since the chain was checked
            raise VirtqueueError(f"virtio: invalid address for buffers: {exc.desc}") from None
        return out

    def __repr__(self) -> str:
        readable, writable = self.descriptors
        return (
            f"<LazyChain head={self.head} readable={readable} descriptors "
            f"writable={writable} descriptors>"
        )


class DeviceVirtqueue:
    """The device's end of a split virtqueue (what a vhost-user backend runs).

    :param desc_uva, avail_uva, used_uva: where the rings are, as frontend
        user addresses (``SET_VRING_ADDR``).
    :param event_idx: ``VIRTIO_RING_F_EVENT_IDX`` was negotiated.
    :param last_avail_idx: where to start (``SET_VRING_BASE``).

    Not thread-safe: one thread pops and pushes.
    """

    def __init__(
        self,
        memory: GuestMemory,
        num: int,
        desc_uva: int,
        avail_uva: int,
        used_uva: int,
        *,
        event_idx: bool = False,
        last_avail_idx: int = 0,
    ) -> None:
        _check_num(num)
        desc_size, avail_size, used_size = vring_sizes(num)
        if not event_idx:
            # without event idx the trailing event fields need not be mapped
            avail_size -= 2
            used_size -= 2
        try:
            self._desc = memory.view_uva(desc_uva, desc_size)
            self._avail = memory.view_uva(avail_uva, avail_size)
            self._used = memory.view_uva(used_uva, used_size)
        except GuestMemoryError as exc:
            raise VirtqueueError(f"Invalid vring_addr message: {exc.desc}") from None
        self.memory = memory
        self.num = num
        self.event_idx = event_idx
        # the rings' 16-bit fields, each read and stored in one access
        self._avail16 = self._avail.cast("H")
        self._used16 = self._used.cast("H")
        #: the next available-ring index to take; GET_VRING_BASE answers it
        self.last_avail_idx = last_avail_idx & _U16_MASK
        #: the used-ring index the device writes next, from the ring itself
        self.used_idx: int = self._used16[1]
        self._mask = num - 1
        # in 16-bit units: used_event in the avail ring, avail_event in the used ring
        self._used_event_at = 2 + num
        self._avail_event_at = (4 + _ELEM.size * num) // 2
        self._notification = True
        # the used index at the last notification, for the event-idx rule
        self._signalled_used = 0
        self._signalled_valid = False
        # large indirect tables walked lately, by their bytes, for the memory
        # layout of that generation (see _walk_large)
        self._walked: dict[bytes, _Walked] = {}
        self._walked_generation = memory.generation

    @classmethod
    def from_vring_addr(
        cls,
        memory: GuestMemory,
        addr: protocol.VringAddr,
        num: int,
        last_avail_idx: int = 0,
        *,
        event_idx: bool = False,
    ) -> DeviceVirtqueue:
        """The queue that ``SET_VRING_NUM``/``BASE``/``ADDR`` describe."""
        return cls(
            memory,
            num,
            addr.desc_user_addr,
            addr.avail_user_addr,
            addr.used_user_addr,
            event_idx=event_idx,
            last_avail_idx=last_avail_idx,
        )

    def _avail_idx(self) -> int:
        idx: int = self._avail16[1]
        return idx

    def has_available(self) -> bool:
        """The driver has made a chain available that :meth:`pop` has not taken.

        Cheap enough for a poll handler: one 16-bit load.
        """
        return self._avail_idx() != self.last_avail_idx

    def pop(self) -> DescriptorChain | None:
        """Take the next available chain, or ``None`` when there is none.

        :raises VirtqueueError: the ring or the chain is malformed. The
            chain's slot has then been consumed; like QEMU and
            libvhost-user, treat the queue as broken.
        """
        head = self._take()
        if head < 0:
            return None
        addrs, lens, split, count, readable_len, writable_len = self._walk(head)
        views = self.memory.views
        readable: list[memoryview] = []
        writable: list[memoryview] = []
        try:
            for i in range(split):
                readable += views(addrs[i], lens[i])
            for i in range(split, count):
                writable += views(addrs[i], lens[i])
        except GuestMemoryError as exc:
            raise VirtqueueError(f"virtio: invalid address for buffers: {exc.desc}") from None
        return DescriptorChain(head, readable, writable, readable_len, writable_len)

    def pop_lazy(self) -> LazyChain | None:
        """Like :meth:`pop`, checking the same, but mapping nothing yet: see
        :class:`LazyChain`."""
        head = self._take()
        if head < 0:
            return None
        addr, length, flags, _next = _DESC.unpack_from(self._desc, _DESC_SIZE * head)
        if flags == VIRTQ_DESC_F_INDIRECT and length == 2 * _DESC_SIZE:
            # a two-buffer request (the qomhost crypto frontend's): checked
            # and mapped at once, each buffer a single view
            found = self._pair_views(self._indirect_table(addr, length))
            if found is not None:
                return LazyChain(self.memory, head, found[0], found[1])
        return LazyChain(self.memory, head, self._walk(head))

    def _take(self) -> int:
        """The head of the next available chain, or -1."""
        avail_idx = self._avail_idx()
        last = self.last_avail_idx
        if avail_idx == last:
            return -1
        if (avail_idx - last) & _U16_MASK > self.num:
            # QEMU's and libvhost-user's wording, although it is the avail index
            raise VirtqueueError(f"Guest moved used index from {last} to {avail_idx}")
        # the index was read above, so the entry it covers is complete
        head: int = self._avail16[2 + (last & self._mask)]
        self.last_avail_idx = (last + 1) & _U16_MASK
        if self.event_idx and self._notification:
            self._used16[self._avail_event_at] = self.last_avail_idx
        if head >= self.num:
            raise VirtqueueError(f"Guest says index {head} is available")
        return head

    def _walk(self, head: int) -> _Walked:
        """Check the chain at ``head``; its descriptors' addresses and lengths,
        how many are readable (they come first), how many there are, and the
        bytes in the readable and in the writable ones."""
        table = self._desc
        limit = self.num
        addr, length, flags, nxt = _DESC.unpack_from(table, _DESC_SIZE * head)
        indirect = bool(flags & VIRTQ_DESC_F_INDIRECT)
        if indirect:
            if not length or length % _DESC_SIZE or length // _DESC_SIZE > MAX_QUEUE_SIZE:
                raise VirtqueueError("Invalid size for indirect buffer table")
            table = self._indirect_table(addr, length)
            limit = length // _DESC_SIZE
            if limit == 2:
                walked = self._walk_pair(table)
                if walked is not None:
                    return walked
            # a table of a few descriptors costs less the plain way
            if limit > _SHORT_TABLE:
                if limit <= _SMALL_TABLE:
                    walked = self._walk_small(table, limit)
                else:
                    walked = self._walk_large(table)
                if walked is not None:
                    return walked
            addr, length, flags, nxt = _DESC.unpack_from(table, 0)
        check = self.memory.check
        addrs: list[int] = []
        lens: list[int] = []
        split = -1
        count = readable_len = writable_len = 0
        while True:
            if flags & VIRTQ_DESC_F_INDIRECT:
                raise VirtqueueError(
                    "Nested indirect descriptor" if indirect else "Indirect descriptor in a chain"
                )
            if not length:
                raise VirtqueueError("virtio: zero sized buffers are not allowed")
            try:
                check(addr, length)
            except GuestMemoryError as exc:
                raise VirtqueueError(f"virtio: invalid address for buffers: {exc.desc}") from None
            if flags & VIRTQ_DESC_F_WRITE:
                if split < 0:
                    split = count
                writable_len += length
            elif split >= 0:
                raise VirtqueueError("Incorrect order for descriptors")
            else:
                readable_len += length
            addrs.append(addr)
            lens.append(length)
            count += 1
            # more descriptors than the table holds means the chain loops
            if count > limit:
                raise VirtqueueError("Looped descriptor")
            if not flags & VIRTQ_DESC_F_NEXT:
                split = count if split < 0 else split
                return addrs, lens, split, count, readable_len, writable_len
            if nxt >= limit:
                raise VirtqueueError(f"Desc next is {nxt}")
            addr, length, flags, nxt = _DESC.unpack_from(table, _DESC_SIZE * nxt)

    def _pair_views(
        self, table: memoryview
    ) -> tuple[_Walked, tuple[memoryview, memoryview]] | None:
        """:meth:`_walk_pair`, with a view of each buffer; ``None`` as it."""
        walked = _pair(table)
        if walked is None:
            return None
        (a0, a1), (l0, l1) = walked[0], walked[1]
        try:
            views = self.memory.view(a0, l0), self.memory.view(a1, l1)
        except GuestMemoryError:
            return None  # the walk one by one says what is wrong
        return walked, views

    def _walk_pair(self, table: memoryview) -> _Walked | None:
        """:meth:`_walk` for a table of two descriptors, a readable one with
        NEXT to 1 and a readable or writable one ending the chain, each in
        one region: one unpack, no loop. ``None`` for anything else (the
        descriptor-by-descriptor way then gives the same answer or the error)."""
        walked = _pair(table)
        if walked is None:
            return None
        (a0, a1), (l0, l1) = walked[0], walked[1]
        if not self.memory.contains(a0, l0) or not self.memory.contains(a1, l1):
            return None
        return walked

    def _walk_small(self, table: memoryview, count: int) -> _Walked | None:
        """:meth:`_walk` for a table of ``count`` (up to :data:`_SMALL_TABLE`)
        descriptors that is one chain filled in order, with no loop in Python;
        ``None`` for anything else."""
        fields = _SMALL_DESCS[count].unpack_from(table)
        split = _SMALL_SHAPES.get(fields[2::4])
        if split is None or fields[3:-4:4] != _SMALL_LINKS[count]:
            return None
        return self._in_one_region(list(fields[0::4]), list(fields[1::4]), split)

    def _walk_large(self, table: memoryview) -> _Walked | None:
        """:meth:`_walk_table` for a table of more than :data:`_SMALL_TABLE`
        descriptors, remembering the last :data:`_WALKED_TABLES` results.

        Linux hands over a request's whole scatterlists (a 64 KiB request:
        275 descriptors), and a process's AF_ALG requests come back to the
        same pages, so the same tables recur a few ring slots apart: a copy
        and a lookup cost a twentieth of the walk. A table is walked from
        its copy, which is the key, and what was walked holds only for the
        memory layout it was checked against.
        """
        if not _NATIVE_LE:
            return None
        key = bytes(table)
        walked_tables = self._walked
        if self._walked_generation != self.memory.generation:
            walked_tables.clear()
            self._walked_generation = self.memory.generation
        walked = walked_tables.get(key)
        if walked is None:
            walked = self._walk_table(memoryview(key))
            if walked is not None:
                if len(walked_tables) >= _WALKED_TABLES:
                    del walked_tables[next(iter(walked_tables))]  # the oldest
                walked_tables[key] = walked
        return walked

    def _walk_table(self, table: memoryview) -> _Walked | None:
        """:meth:`_walk` for an indirect table filled in order, with no loop in
        Python; ``None`` when the table is not such a well-formed one."""
        kinds = bytes(table[12::_DESC_SIZE]).translate(_FLAG_CLASS)
        found = _TABLE_CHAIN.match(kinds)
        if found is None:
            return None
        count = found.end()
        links = _DESC_SIZE * (count - 1)
        if links and (
            bytes(table[14:links:_DESC_SIZE]) != _NEXT_LO[: count - 1]
            or bytes(table[15:links:_DESC_SIZE]) != _NEXT_HI[: count - 1]
        ):
            return None
        split = found.end(1)
        if kinds[count - 1] == ord("R"):
            split = count
        addrs: list[int] = table.cast("Q")[0 : 2 * count : 2].tolist()
        return self._in_one_region(addrs, table.cast("I")[2 : 4 * count : 4].tolist(), split)

    def _in_one_region(self, addrs: list[int], lens: list[int], split: int) -> _Walked | None:
        """The walked chain of these buffers, the first ``split`` readable, if
        none is empty and one region holds them all; ``None`` otherwise (the
        walk one by one then says what is wrong, or maps buffers that
        straddle regions).

        One region holding the lowest start and the highest possible end
        holds every buffer: one check instead of one per buffer.
        """
        if 0 in lens:
            return None
        low = min(addrs)
        if not self.memory.contains(low, max(addrs) + max(lens) - low):
            return None
        readable_len = sum(lens[:split])
        return addrs, lens, split, len(lens), readable_len, sum(lens) - readable_len

    def _indirect_table(self, addr: int, length: int) -> memoryview:
        try:
            parts = self.memory.views(addr, length)
        except GuestMemoryError as exc:
            raise VirtqueueError(f"Invalid indirect buffer table: {exc.desc}") from None
        # a table split by a region boundary is rare: copy it whole
        return parts[0] if len(parts) == 1 else memoryview(b"".join(parts))

    def push(self, head: int, written: int) -> None:
        """Return chain ``head`` to the driver, with ``written`` bytes filled in."""
        self.push_many(((head, written),))

    def push_many(self, completions: Iterable[tuple[int, int]]) -> None:
        """Return several chains at once: all used entries, then one index store."""
        used = self._used
        idx = old = self.used_idx
        for head, written in completions:
            if not 0 <= head < self.num or not 0 <= written < _U32_LIMIT:
                raise VirtqueueError(f"Invalid used element: id {head}, len {written}")
            _ELEM.pack_into(used, 4 + _ELEM.size * (idx & self._mask), head, written)
            idx = (idx + 1) & _U16_MASK
        if idx == old:
            return
        self._used16[1] = idx
        self.used_idx = idx
        # the last notified index fell out of the window the event rule can
        # compare against: the next check must notify
        behind = (idx - self._signalled_used) & _U16_MASK
        if behind >= _FAR:
            behind -= 1 << 16
        if behind < (idx - old) & _U16_MASK:
            self._signalled_valid = False

    def should_notify(self) -> bool:
        """After pushes: must the driver be notified (the call eventfd written)?

        Without event idx, unless the driver set ``VRING_AVAIL_F_NO_INTERRUPT``;
        with it, when the used index passed the driver's ``used_event``
        since the last notification.
        """
        # the used index just stored must be visible before the driver's
        # state is read, or both ends could decide not to act
        full_barrier()
        if not self.event_idx:
            flags: int = self._avail16[0]
            return not flags & VRING_AVAIL_F_NO_INTERRUPT
        valid = self._signalled_valid
        old = self._signalled_used
        new = self._signalled_used = self.used_idx
        self._signalled_valid = True
        event: int = self._avail16[self._used_event_at]
        return not valid or vring_need_event(event, new, old)

    def set_notification(self, enabled: bool) -> None:
        """Ask the driver to kick (``True``) or not to bother (``False``).

        After enabling, check :meth:`has_available` again: a chain made
        available just before the driver saw the change brings no kick.
        """
        self._notification = enabled
        if self.event_idx:
            event = self._avail_idx() if enabled else (self.last_avail_idx + _FAR) & _U16_MASK
            self._used16[self._avail_event_at] = event
        else:
            flags: int = self._used16[0]
            if enabled:
                flags &= ~VRING_USED_F_NO_NOTIFY
            else:
                flags |= VRING_USED_F_NO_NOTIFY
            self._used16[0] = flags
        if enabled:
            full_barrier()

    def __repr__(self) -> str:
        return (
            f"<DeviceVirtqueue num={self.num} last_avail_idx={self.last_avail_idx} "
            f"used_idx={self.used_idx}>"
        )


class DriverVirtqueue:
    """The driver's end of a split virtqueue, with rings in guest memory.

    The rings are allocated from ``allocator``; send :meth:`vring_addr`
    (with ``SET_VRING_NUM`` ``num``) to the device. Requests are
    ``(gpa, length)`` buffers, device-readable ones first; each carries a
    token that :meth:`get_used` hands back when the device is done.

    :param event_idx: ``VIRTIO_RING_F_EVENT_IDX`` was negotiated.
    :param indirect: ``VIRTIO_RING_F_INDIRECT_DESC`` was negotiated: a
        request of several buffers then takes one descriptor and a table.

    Not thread-safe: callers serialise :meth:`add` and :meth:`get_used`.
    """

    def __init__(
        self,
        memory: GuestMemory,
        allocator: GuestAllocator,
        num: int,
        *,
        event_idx: bool = False,
        indirect: bool = False,
    ) -> None:
        _check_num(num)
        self.memory = memory
        self.num = num
        self.event_idx = event_idx
        self.indirect = indirect
        self._allocator = allocator
        gpas: list[int] = []
        try:
            # a cache line each, so the driver's and the device's stores
            # never share one
            for size in vring_sizes(num):
                gpas.append(allocator.alloc(size, 64))
        except GuestMemoryError:
            for gpa in gpas:
                allocator.free(gpa)
            raise
        self.desc_gpa, self.avail_gpa, self.used_gpa = gpas
        self._desc = memory.view(self.desc_gpa, vring_sizes(num)[0])
        self._avail = memory.view(self.avail_gpa, vring_sizes(num)[1])
        self._used = memory.view(self.used_gpa, vring_sizes(num)[2])
        for ring in (self._desc, self._avail, self._used):
            ring[:] = bytes(ring.nbytes)
        # the rings' 16-bit fields, each read and stored in one access
        self._avail16 = self._avail.cast("H")
        self._used16 = self._used.cast("H")
        self._mask = num - 1
        # in 16-bit units: used_event in the avail ring, avail_event in the used ring
        self._used_event_at = 2 + num
        self._avail_event_at = (4 + _ELEM.size * num) // 2
        # free descriptors as a stack; the ring itself is never trusted for it
        self._free = list(range(num - 1, -1, -1))
        # per head: the descriptors it holds (None when not in flight), its
        # token and how many bytes the device may write
        self._chains: list[list[int] | None] = [None] * num
        self._tokens: list[object] = [None] * num
        self._in_len = [0] * num
        # indirect tables stay with the descriptor that points to them and are
        # reused, so a request costs no trip through the allocator
        self._table_gpa = [0] * num
        self._table_view: list[memoryview | None] = [None] * num
        self._in_flight = 0
        self._avail_idx = 0
        self._last_used = 0
        self._num_added = 0
        self._avail_flags = 0
        self._callbacks = True
        # completions taken from a ring found broken, handed out by detach_all
        self._orphans: list[object] = []
        #: why the device's used ring was rejected, once it was
        self.broken: str | None = None

    # --- addresses -----------------------------------------------------------------------

    @property
    def desc_uva(self) -> int:
        return self.memory.gpa_to_uva(self.desc_gpa)

    @property
    def avail_uva(self) -> int:
        return self.memory.gpa_to_uva(self.avail_gpa)

    @property
    def used_uva(self) -> int:
        return self.memory.gpa_to_uva(self.used_gpa)

    def vring_addr(self, index: int) -> protocol.VringAddr:
        """The ``SET_VRING_ADDR`` message for this queue as ring ``index``.

        ``log_guest_addr`` is the used ring's guest address, as QEMU sends it.
        """
        return protocol.VringAddr(
            index, self.desc_uva, self.used_uva, self.avail_uva, log_guest_addr=self.used_gpa
        )

    @property
    def num_free(self) -> int:
        """Descriptors not in use by requests in flight."""
        return len(self._free)

    @property
    def in_flight(self) -> int:
        """Requests made available and not yet returned by :meth:`get_used`."""
        return self._in_flight

    # --- requests ------------------------------------------------------------------------

    def add(
        self,
        out: Sequence[tuple[int, int]],
        in_: Sequence[tuple[int, int]],
        token: object,
    ) -> int:
        """Make a request available: ``out`` buffers for the device to read,
        then ``in_`` buffers for it to write; return the chain's head.

        :raises VirtqueueFull: too few free descriptors; nothing was added.
        """
        if self.broken is not None:
            raise VirtqueueError(f"virtqueue is broken: {self.broken}")
        buffers = [*out, *in_]
        total = len(buffers)
        if not total:
            raise VirtqueueError("a request needs at least one buffer")
        for _gpa, length in buffers:
            if not 0 < length < _U32_LIMIT:
                raise VirtqueueError(f"invalid buffer length {length}")
        n_out = len(out)
        table = None
        if self.indirect and total > 1 and self._free:
            table = self._indirect_table(self._free[-1], total)
        needed = 1 if table is not None else total
        if needed > len(self._free):
            raise VirtqueueFull(
                f"virtqueue full: {needed} descriptors needed, {len(self._free)} free"
            )
        if table is not None:
            self._write_chain(table, buffers, n_out, range(total))
            head = self._free.pop()
            _DESC.pack_into(
                self._desc,
                _DESC_SIZE * head,
                self._table_gpa[head],
                _DESC_SIZE * total,
                VIRTQ_DESC_F_INDIRECT,
                0,
            )
            ids = [head]
        else:
            ids = self._free[-total:]
            del self._free[-total:]
            self._write_chain(self._desc, buffers, n_out, ids)
            head = ids[0]
        return self._publish(head, ids, token, sum(length for _gpa, length in in_))

    def add_two(self, out_gpa: int, out_len: int, in_gpa: int, in_len: int, token: object) -> int:
        """:meth:`add` of one device-readable and one device-writable buffer
        (``add(((out_gpa, out_len),), ((in_gpa, in_len),), token)``): with
        indirect descriptors, the table is written in one pack."""
        free = self._free
        if (
            not self.indirect
            or not free
            or self.broken is not None
            or not 0 < out_len < _U32_LIMIT
            or not 0 < in_len < _U32_LIMIT
        ):
            return self.add(((out_gpa, out_len),), ((in_gpa, in_len),), token)
        head = free[-1]
        table = self._table_view[head]
        if table is None:
            table = self._indirect_table(head, 2)
            if table is None:
                return self.add(((out_gpa, out_len),), ((in_gpa, in_len),), token)
        _PAIR.pack_into(
            table, 0, out_gpa, out_len, VIRTQ_DESC_F_NEXT, 1, in_gpa, in_len, VIRTQ_DESC_F_WRITE, 0
        )
        free.pop()
        _DESC.pack_into(
            self._desc,
            _DESC_SIZE * head,
            self._table_gpa[head],
            2 * _DESC_SIZE,
            VIRTQ_DESC_F_INDIRECT,
            0,
        )
        return self._publish(head, [head], token, in_len)

    def _publish(self, head: int, ids: list[int], token: object, in_len: int) -> int:
        """Record the chain written at ``head`` (its descriptors ``ids``) and
        make it available; ``head``."""
        self._chains[head] = ids
        self._tokens[head] = token
        self._in_len[head] = in_len
        self._in_flight += 1
        # the chain and the ring entry first, then the index that publishes them
        avail16 = self._avail16
        idx = self._avail_idx
        avail16[2 + (idx & self._mask)] = head
        idx = self._avail_idx = (idx + 1) & _U16_MASK
        avail16[1] = idx
        self._num_added += 1
        return head

    def _indirect_table(self, head: int, total: int) -> memoryview | None:
        """The table for a ``total``-buffer request at ``head``, grown if too small;
        ``None`` when guest memory has no room (the request then goes direct)."""
        table = self._table_view[head]
        if table is not None and table.nbytes >= _DESC_SIZE * total:
            return table
        if total > MAX_QUEUE_SIZE:
            return None
        capacity = max(4, 1 << (total - 1).bit_length())
        try:
            gpa = self._allocator.alloc(_DESC_SIZE * capacity, _DESC_SIZE)
        except GuestMemoryError:
            return None  # as Linux does: fall back to a direct chain
        if table is not None:
            table.release()
            self._allocator.free(self._table_gpa[head])
        table = self._table_view[head] = self.memory.view(gpa, _DESC_SIZE * capacity)
        self._table_gpa[head] = gpa
        return table

    @staticmethod
    def _write_chain(
        table: memoryview, buffers: list[tuple[int, int]], n_out: int, ids: Sequence[int]
    ) -> None:
        last = len(buffers) - 1
        for k, (gpa, length) in enumerate(buffers):
            flags = VIRTQ_DESC_F_WRITE if k >= n_out else 0
            nxt = 0
            if k < last:
                flags |= VIRTQ_DESC_F_NEXT
                nxt = ids[k + 1]
            _DESC.pack_into(table, _DESC_SIZE * ids[k], gpa, length, flags, nxt)

    def kick_needed(self) -> bool:
        """After adds: must the device be notified (the kick eventfd written)?

        Without event idx, unless the device set ``VRING_USED_F_NO_NOTIFY``;
        with it, when the available index passed the device's
        ``avail_event`` since the last check.
        """
        # the available index must be visible before the device's state is read
        full_barrier()
        added = self._num_added
        self._num_added = 0
        if not self.event_idx:
            flags: int = self._used16[0]
            return not flags & VRING_USED_F_NO_NOTIFY
        if added >= _FAR:
            return True
        new = self._avail_idx
        event: int = self._used16[self._avail_event_at]
        return vring_need_event(event, new, (new - added) & _U16_MASK)

    def get_used(self) -> list[tuple[object, int]]:
        """``(token, written)`` for each request the device has returned, in order.

        Frees their descriptors. With event idx and callbacks enabled, asks
        for a notification at the next used entry.

        :raises VirtqueueError: the device returned something it was never
            given, or said it wrote more than the buffers hold. The queue
            is then broken; :meth:`detach_all` gives back every token.
        """
        if self.broken is not None:
            raise VirtqueueError(f"virtqueue is broken: {self.broken}")
        used = self._used
        used_idx: int = self._used16[1]
        last = self._last_used
        pending = (used_idx - last) & _U16_MASK
        done: list[tuple[object, int]] = []
        if pending > self._in_flight:
            self._break(
                f"used index moved from {last} to {used_idx} "
                f"with {self._in_flight} requests in flight",
                done,
            )
        for _ in range(pending):
            head, written = _ELEM.unpack_from(used, 4 + _ELEM.size * (last & self._mask))
            if head >= self.num or self._chains[head] is None:
                self._break(f"id {head} is not a head", done)
            if written > self._in_len[head]:
                self._break(
                    f"used len {written} is larger than in buflen {self._in_len[head]}", done
                )
            done.append((self._detach(head), written))
            last = (last + 1) & _U16_MASK
        self._last_used = last
        if self.event_idx and self._callbacks:
            self._avail16[self._used_event_at] = last
        return done

    def has_used(self) -> bool:
        """The device has returned requests that :meth:`get_used` has not taken.

        Cheap enough for a poll handler: one 16-bit load, no lock. An answer
        that is stale by the time the caller acts only delays the work.
        """
        return bool(self._used16[1] != self._last_used)

    def used_since_rearm(self) -> bool:
        """After :meth:`get_used` with callbacks on: did more used entries arrive?

        :meth:`get_used` moves ``used_event`` to the next entry it expects,
        but the device may have read the old value and returned an entry
        in between, deciding that it needs no notification. As a Linux
        driver re-checks after ``virtqueue_enable_cb``, call this (a full
        barrier and one load) and take the used entries again while it
        says True. Without event idx, or with callbacks off, it is False:
        the device then notifies on every batch, or nobody waits for it.
        """
        if not self.event_idx or not self._callbacks:
            return False
        full_barrier()
        return bool(self._used16[1] != self._last_used)

    def _detach(self, head: int) -> object:
        ids = self._chains[head]
        assert ids is not None
        self._chains[head] = None
        self._free += ids
        token = self._tokens[head]
        self._tokens[head] = None
        self._in_flight -= 1
        return token

    def _break(self, reason: str, done: list[tuple[object, int]]) -> NoReturn:
        self.broken = reason
        self._orphans += [token for token, _written in done]
        raise VirtqueueError(f"virtqueue is broken: {reason}")

    def detach_all(self) -> list[object]:
        """Take back every request in flight (the device is gone or broken); their tokens.

        Frees all descriptors. The rings are not reset: a device that
        resumes on them must be given a fresh queue.
        """
        tokens = self._orphans
        self._orphans = []
        for head in range(self.num):
            if self._chains[head] is not None:
                tokens.append(self._detach(head))
        return tokens

    # --- notifications -------------------------------------------------------------------

    def enable_callbacks(self) -> bool:
        """Ask for used-buffer notifications again.

        Returns ``True`` if used entries arrived meanwhile: they brought no
        notification, so call :meth:`get_used` now.
        """
        self._callbacks = True
        if self.event_idx:
            self._avail16[self._used_event_at] = self._last_used
        else:
            self._avail_flags &= ~VRING_AVAIL_F_NO_INTERRUPT
            self._avail16[0] = self._avail_flags
        full_barrier()
        return bool(self._used16[1] != self._last_used)

    def disable_callbacks(self) -> None:
        """Tell the device that used-buffer notifications are not needed (a hint)."""
        self._callbacks = False
        if self.event_idx:
            # the spec wants flags 0 with event idx: push the event far away instead
            self._avail16[self._used_event_at] = (self._last_used + _FAR) & _U16_MASK
        else:
            self._avail_flags |= VRING_AVAIL_F_NO_INTERRUPT
            self._avail16[0] = self._avail_flags

    # --- lifetime ------------------------------------------------------------------------

    def release(self) -> None:
        """Give the rings and any indirect tables back to the allocator.

        The queue is unusable afterwards; stop the device first.
        """
        if self.broken == "released":
            return
        self.detach_all()
        self._avail16.release()
        self._used16.release()
        self._desc.release()
        self._avail.release()
        self._used.release()
        for gpa in (self.desc_gpa, self.avail_gpa, self.used_gpa):
            self._allocator.free(gpa)
        for head, table in enumerate(self._table_view):
            if table is not None:
                table.release()
                self._allocator.free(self._table_gpa[head])
        self._table_view = [None] * self.num
        self.broken = "released"

    def __repr__(self) -> str:
        return (
            f"<DriverVirtqueue num={self.num} free={len(self._free)} in_flight={self._in_flight}>"
        )
