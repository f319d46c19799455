"""Guest memory as shared memory, mapped by both ends of a vhost-user socket.

A vhost-user frontend keeps the guest's RAM in file-backed shared memory
(here one ``memfd`` per region) and sends the regions' fds with
``SET_MEM_TABLE``; the backend maps the same files and so sees the same
bytes. Three address spaces name those bytes:

* the *guest physical address* (GPA): what descriptors in a virtqueue hold;
* the *frontend user address* (UVA): where the frontend mapped the region in
  its own process, which ``SET_VRING_ADDR`` uses for the rings;
* the offset into the region's file (``mmap_offset``).

:class:`GuestMemory` is that memory on either side: :meth:`GuestMemory.allocate`
creates it (frontend), :meth:`GuestMemory.map_table` maps a received
``SET_MEM_TABLE`` (backend). Both give zero-copy ``memoryview`` slices by
GPA or UVA. :class:`GuestAllocator` hands out buffers inside it, as a
guest driver would.

    >>> mem = GuestMemory.allocate(1 << 20)
    >>> peer = mem.mirror()          # what map_table(mem.mem_table()) maps in a backend
    >>> mem.write(0x100, b"hello")
    >>> bytes(peer.view(0x100, 5))
    b'hello'
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import mmap
import os
import stat
import threading
from collections.abc import Sequence

from qomhost._record import FrozenRecord
from qomhost.errors import QemuError
from qomhost.vhost_user import protocol

__all__ = [
    "PAGE_SIZE",
    "GuestAllocator",
    "GuestMemory",
    "GuestMemoryError",
    "MappedRegion",
]

PAGE_SIZE = mmap.PAGESIZE

_PROT_RW = mmap.PROT_READ | mmap.PROT_WRITE
# the frontend never resizes its regions; sealing the size means a backend
# that mapped them can never be sent SIGBUS by a later ftruncate
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
_U64_LIMIT = 1 << 64
_bisect = bisect.bisect_right


class GuestMemoryError(QemuError):
    """A guest address or memory table that cannot be used, or memory that ran out."""


class MappedRegion(FrozenRecord):
    """One mapped region: where it is in each address space, and its bytes.

    ``fd`` is the frontend's memfd, or -1 on the backend side, which
    closes the fds it received once they are mapped. ``view`` is a
    writable ``memoryview`` of the ``memory_size`` bytes; it is released by
    :meth:`GuestMemory.close`. Equality, hashing and ``repr`` use the
    addresses only, never the bytes.
    """

    __slots__ = ("fd", "guest_phys_addr", "memory_size", "mmap_offset", "userspace_addr", "view")
    _fields = ("guest_phys_addr", "memory_size", "userspace_addr", "mmap_offset", "fd")
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    mmap_offset: int
    fd: int
    view: memoryview

    def __init__(
        self,
        guest_phys_addr: int,
        memory_size: int,
        userspace_addr: int,
        mmap_offset: int,
        fd: int,
        view: memoryview,
    ) -> None:
        self._init(guest_phys_addr, memory_size, userspace_addr, mmap_offset, fd)
        object.__setattr__(self, "view", view)

    @property
    def gpa_end(self) -> int:
        """The first guest physical address after the region."""
        return self.guest_phys_addr + self.memory_size

    @property
    def uva_end(self) -> int:
        """The first frontend user address after the region."""
        return self.userspace_addr + self.memory_size


def _outside(addr: int, length: int | None, space: str = "guest") -> GuestMemoryError:
    where = f"{addr:#x}" if length is None else f"{addr:#x}+{length}"
    return GuestMemoryError(f"{space} address {where} is outside guest memory")


class GuestMemory:
    """Guest RAM in shared memory, as one to eight mapped regions.

    Build it with :meth:`allocate` (frontend) or :meth:`map_table`
    (backend). Lookups are safe from several threads; :meth:`close` must
    not race with them.

    The views it returns point straight into the shared mapping: a store
    through one is seen by the other process without any copy. Python's
    buffer protocol keeps a mapping alive while a view into it exists, so
    :meth:`close` can never leave a dangling view: it releases the views
    it owns, and a mapping that callers still hold views into is unmapped
    when the last of those views goes away.
    """

    def __init__(self, regions: tuple[MappedRegion, ...], maps: tuple[mmap.mmap, ...]) -> None:
        """Take ownership of ``regions`` and their mappings; use the class methods instead."""
        #: counts changes of the layout (a region added or removed, memory
        #: closed): what was checked against an older one must be checked again
        self.generation = 0
        self._index(regions, maps)
        self._lock = threading.Lock()
        self._closed = False

    def _index(self, regions: Sequence[MappedRegion], maps: Sequence[mmap.mmap]) -> None:
        self.generation += 1
        order = sorted(range(len(regions)), key=lambda i: regions[i].guest_phys_addr)
        self.regions: tuple[MappedRegion, ...] = tuple(regions[i] for i in order)
        self._maps: tuple[mmap.mmap, ...] = tuple(maps[i] for i in order)
        # flat lists for the lookups on the data path (no attribute chains)
        self._gpa_starts = [r.guest_phys_addr for r in self.regions]
        self._gpa_sizes = [r.memory_size for r in self.regions]
        self._gpa_views = [r.view for r in self.regions]
        # the region of the last lookup: a request's buffers are mostly in one
        self._hint = 0
        by_uva = sorted(self.regions, key=lambda r: r.userspace_addr)
        self._uva_regions = tuple(by_uva)
        self._uva_starts = [r.userspace_addr for r in by_uva]

    # --- construction ------------------------------------------------------------------

    @classmethod
    def allocate(
        cls,
        size: int,
        *,
        regions: int = 1,
        base_gpa: int = 0,
        name: str = "qomhost-guest",
    ) -> GuestMemory:
        """Create ``size`` bytes of guest memory (rounded up to whole pages).

        The memory is split into ``regions`` regions, each its own memfd,
        contiguous in guest physical addresses from ``base_gpa``. A
        region's ``userspace_addr`` is the real address of its mapping in
        this process, as QEMU reports it.
        """
        if size <= 0:
            raise GuestMemoryError(f"guest memory size must be positive, not {size}")
        if not 1 <= regions <= protocol.MAX_MEM_REGIONS:
            raise GuestMemoryError(
                f"guest memory needs 1 to {protocol.MAX_MEM_REGIONS} regions, not {regions}"
            )
        pages = -(-size // PAGE_SIZE)
        if pages < regions:
            raise GuestMemoryError(
                f"{pages} pages of guest memory cannot be split into {regions} regions"
            )
        if base_gpa < 0 or base_gpa % PAGE_SIZE or base_gpa + pages * PAGE_SIZE > _U64_LIMIT:
            raise GuestMemoryError(f"invalid guest memory base address {base_gpa:#x}")
        # ctypes only here: a backend never needs the address of its own mappings
        import ctypes

        made: list[MappedRegion] = []
        maps: list[mmap.mmap] = []
        fds: list[int] = []
        gpa = base_gpa
        try:
            for i in range(regions):
                length = (pages // regions + (i < pages % regions)) * PAGE_SIZE
                fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
                fds.append(fd)
                os.ftruncate(fd, length)
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
                mm = mmap.mmap(fd, length, mmap.MAP_SHARED, _PROT_RW)
                maps.append(mm)
                # from_buffer exports the mapping only while the ctypes object lives
                anchor = ctypes.c_char.from_buffer(mm)
                uva = ctypes.addressof(anchor)
                del anchor
                made.append(MappedRegion(gpa, length, uva, 0, fd, memoryview(mm)))
                gpa += length
        except OSError as exc:
            _unmap(made, maps)
            for fd in fds:
                os.close(fd)
            raise GuestMemoryError(f"cannot allocate guest memory: {exc.strerror}") from None
        return cls(tuple(made), tuple(maps))

    @classmethod
    def map_table(cls, table: protocol.MemTable) -> GuestMemory:
        """Map the regions of a received ``SET_MEM_TABLE`` (backend side).

        Takes ownership of the table's fds: they are closed once mapped,
        and also when mapping fails. On failure nothing stays mapped.

        :raises GuestMemoryError: an empty or overlapping table, a region
            beyond its file's end, or a failed ``mmap``.
        """
        made: list[MappedRegion] = []
        maps: list[mmap.mmap] = []
        try:
            _check_table(table.regions)
            for region in table.regions:
                mm, view = _map_region(region)
                maps.append(mm)
                made.append(
                    MappedRegion(
                        region.guest_phys_addr,
                        region.memory_size,
                        region.userspace_addr,
                        region.mmap_offset,
                        -1,
                        view,
                    )
                )
        except GuestMemoryError:
            _unmap(made, maps)
            raise
        finally:
            for fd in set(table.fds):
                try:
                    os.close(fd)
                except OSError:
                    pass
        return cls(tuple(made), tuple(maps))

    def mirror(self) -> GuestMemory:
        """A second, independent mapping of the same memory, as a backend maps it.

        Equivalent to :meth:`map_table` on :meth:`mem_table` with duplicated
        fds: two real mappings of the same files, in this process. Tests and
        in-process peers use it in place of a second process.
        """
        table = self.mem_table()
        dups: list[int] = []
        try:
            for fd in table.fds:
                dups.append(os.dup(fd))
        except OSError as exc:
            for fd in dups:
                os.close(fd)
            raise GuestMemoryError(f"cannot share guest memory: {exc.strerror}") from None
        regions = tuple(
            protocol.MemoryRegion(
                r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset, fd
            )
            for r, fd in zip(table.regions, dups, strict=True)
        )
        return GuestMemory.map_table(protocol.MemTable(regions))

    # --- one region at a time (CONFIGURE_MEM_SLOTS) --------------------------------------

    def add_region(self, region: protocol.MemoryRegion) -> None:
        """Map one more region, as ``ADD_MEM_REG`` asks (backend side).

        Takes ownership of ``region.fd``, as :meth:`map_table` does. Like
        every change to the regions, this must not race with lookups: the
        backend makes it from the thread that serves its rings.

        :raises GuestMemoryError: the region overlaps one already mapped
            (in guest or user addresses), or cannot be mapped.
        """
        try:
            self._check_open()
            _check_table((*self._table_regions(), region))
            mm, view = _map_region(region)
        finally:
            with contextlib.suppress(OSError):
                os.close(region.fd)
        added = MappedRegion(
            region.guest_phys_addr,
            region.memory_size,
            region.userspace_addr,
            region.mmap_offset,
            -1,
            view,
        )
        self._index((*self.regions, added), (*self._maps, mm))

    def remove_region(self, guest_phys_addr: int, memory_size: int, userspace_addr: int) -> None:
        """Unmap the region ``REM_MEM_REG`` names by its addresses and size.

        Views into it that callers still hold keep its mapping alive until
        they go, as with :meth:`close`.

        :raises GuestMemoryError: no region has those addresses and size.
        """
        self._check_open()
        key = (guest_phys_addr, memory_size, userspace_addr)
        found = [
            i
            for i, r in enumerate(self.regions)
            if (r.guest_phys_addr, r.memory_size, r.userspace_addr) == key
        ]
        if not found:
            raise GuestMemoryError(
                f"no memory region at guest address {guest_phys_addr:#x} "
                f"(size {memory_size:#x}, user address {userspace_addr:#x})"
            )
        i = found[0]
        gone, gone_map = self.regions[i], self._maps[i]
        self._index(self.regions[:i] + self.regions[i + 1 :], self._maps[:i] + self._maps[i + 1 :])
        _unmap((gone,), (gone_map,))
        if gone.fd >= 0:
            os.close(gone.fd)

    def _table_regions(self) -> tuple[protocol.MemoryRegion, ...]:
        return tuple(
            protocol.MemoryRegion(
                r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset, r.fd
            )
            for r in self.regions
        )

    # --- the message ---------------------------------------------------------------------

    def mem_table(self, flags: int = protocol.FLAGS_REQUEST) -> protocol.MemTable:
        """The ``SET_MEM_TABLE`` message describing this memory, with its fds.

        The fds stay owned by this object: send them, do not close them.
        """
        self._check_open()
        if any(r.fd < 0 for r in self.regions):
            raise GuestMemoryError("guest memory mapped from a table has no fds to send")
        return protocol.MemTable(
            tuple(
                protocol.MemoryRegion(
                    r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset, r.fd
                )
                for r in self.regions
            ),
            flags,
        )

    # --- lookups ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Total bytes over all regions."""
        return sum(r.memory_size for r in self.regions)

    @property
    def closed(self) -> bool:
        return self._closed

    def _region_at(self, gpa: int) -> MappedRegion | None:
        i = bisect.bisect_right(self._gpa_starts, gpa) - 1
        if i < 0:
            return None
        region = self.regions[i]
        return region if gpa < region.gpa_end else None

    def _uva_region_at(self, uva: int) -> MappedRegion | None:
        i = bisect.bisect_right(self._uva_starts, uva) - 1
        if i < 0:
            return None
        region = self._uva_regions[i]
        return region if uva < region.uva_end else None

    def _find(self, gpa: int) -> int:
        """The index of the region that may hold ``gpa`` (-1: below every region)."""
        i = self._hint
        starts = self._gpa_starts
        if i < len(starts):
            start = gpa - starts[i]
            if 0 <= start < self._gpa_sizes[i]:
                return i
        i = _bisect(starts, gpa) - 1
        if i >= 0:
            self._hint = i
        return i

    def contains(self, gpa: int, length: int) -> bool:
        """All of ``length`` bytes at ``gpa`` lie in one region (and memory is open)."""
        i = self._find(gpa)
        if i < 0 or length < 0 or self._closed:
            return False
        start = gpa - self._gpa_starts[i]
        return start < self._gpa_sizes[i] and length <= self._gpa_sizes[i] - start

    def check(self, gpa: int, length: int) -> None:
        """Succeed if :meth:`views` of the same bytes would.

        :raises GuestMemoryError: the text :meth:`views` raises.
        """
        if not self.contains(gpa, length):
            self.views(gpa, length)

    def store_byte(self, gpa: int, value: int) -> None:
        """Store one byte at ``gpa`` without making a view.

        :raises GuestMemoryError: ``gpa`` is outside guest memory.
        """
        i = self._find(gpa)
        if i >= 0 and not self._closed:
            start = gpa - self._gpa_starts[i]
            if start < self._gpa_sizes[i]:
                self._gpa_views[i][start] = value
                return
        self._check_open()
        raise _outside(gpa, 1)

    def view(self, gpa: int, length: int) -> memoryview:
        """``length`` bytes at guest address ``gpa``, without copying.

        :raises GuestMemoryError: unless the bytes lie inside one region.
        """
        i = self._find(gpa)
        if i >= 0:
            start = gpa - self._gpa_starts[i]
            size = self._gpa_sizes[i]
            if start < size and 0 <= length <= size - start and not self._closed:
                return self._gpa_views[i][start : start + length]
        self._check_open()
        raise _outside(gpa, length)

    def view_uva(self, uva: int, length: int) -> memoryview:
        """Like :meth:`view`, by frontend user address (as ``SET_VRING_ADDR`` gives them)."""
        region = self._uva_region_at(uva)
        if region is None or length < 0 or uva + length > region.uva_end or self._closed:
            self._check_open()
            raise _outside(uva, length, "user")
        start = uva - region.userspace_addr
        return region.view[start : start + length]

    def views(self, gpa: int, length: int) -> list[memoryview]:
        """``length`` bytes at ``gpa`` as one view per region they cross.

        A guest buffer may straddle two regions that are adjacent in guest
        physical addresses but mapped apart; this splits it where they meet.

        :raises GuestMemoryError: when any byte is outside guest memory.
        """
        i = self._find(gpa)
        if i >= 0:
            start = gpa - self._gpa_starts[i]
            size = self._gpa_sizes[i]
            if start < size and 0 <= length <= size - start and not self._closed:
                return [self._gpa_views[i][start : start + length]]
        region = self._region_at(gpa)
        out: list[memoryview] = []
        addr, left = gpa, length
        while True:
            if region is None or length < 0 or self._closed:
                self._check_open()
                raise _outside(gpa, length)
            start = addr - region.guest_phys_addr
            take = min(left, region.memory_size - start)
            out.append(region.view[start : start + take])
            addr += take
            left -= take
            if not left:
                return out
            region = self._region_at(addr)

    def uva_to_gpa(self, uva: int) -> int:
        """The guest physical address of frontend user address ``uva``."""
        region = self._uva_region_at(uva)
        if region is None:
            raise _outside(uva, None, "user")
        return uva - region.userspace_addr + region.guest_phys_addr

    def gpa_to_uva(self, gpa: int) -> int:
        """The frontend user address of guest physical address ``gpa``."""
        region = self._region_at(gpa)
        if region is None:
            raise _outside(gpa, None)
        return gpa - region.guest_phys_addr + region.userspace_addr

    def read(self, gpa: int, length: int) -> bytes:
        """A copy of ``length`` bytes at ``gpa`` (they may span adjacent regions)."""
        parts = self.views(gpa, length)
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``gpa`` (it may span adjacent regions)."""
        src = memoryview(data).cast("B")
        pos = 0
        for part in self.views(gpa, src.nbytes):
            part[:] = src[pos : pos + part.nbytes]
            pos += part.nbytes

    # --- lifetime ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise GuestMemoryError("guest memory is closed")

    def close(self) -> None:
        """Unmap the regions and close the fds; calling it again does nothing.

        Views handed out earlier keep their own mapping alive until they
        are released or collected; nothing is unmapped under them.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.generation += 1
        _unmap(self.regions, self._maps)
        self._maps = ()
        for region in self.regions:
            if region.fd >= 0:
                os.close(region.fd)

    def __enter__(self) -> GuestMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self.regions)} regions"
        return f"<GuestMemory {self.size} bytes, {state}>"


def _check_table(regions: tuple[protocol.MemoryRegion, ...]) -> None:
    if not regions:
        raise GuestMemoryError("memory table has no regions")
    for space, key in (("guest", "guest_phys_addr"), ("user", "userspace_addr")):
        spans = sorted((getattr(r, key), r.memory_size) for r in regions)
        end = 0
        for start, length in spans:
            if length <= 0 or start + length > _U64_LIMIT:
                raise GuestMemoryError(
                    f"memory region at {space} address {start:#x} has invalid size {length}"
                )
            if start < end:
                raise GuestMemoryError(f"memory regions overlap at {space} address {start:#x}")
            end = start + length


def _map_region(region: protocol.MemoryRegion) -> tuple[mmap.mmap, memoryview]:
    # mmap wants a page-aligned offset; QEMU may send any offset, so map
    # from the page below it and slice the difference off
    aligned = region.mmap_offset - region.mmap_offset % PAGE_SIZE
    skip = region.mmap_offset - aligned
    where = f"memory region at guest address {region.guest_phys_addr:#x}"
    try:
        st = os.fstat(region.fd)
        # a region past the end of its file would fault (SIGBUS) when touched
        if stat.S_ISREG(st.st_mode) and st.st_size < region.mmap_offset + region.memory_size:
            raise GuestMemoryError(
                f"{where} ends at offset {region.mmap_offset + region.memory_size}, "
                f"beyond the end of its {st.st_size}-byte file"
            )
        mm = mmap.mmap(
            region.fd, skip + region.memory_size, mmap.MAP_SHARED, _PROT_RW, offset=aligned
        )
    except (OSError, ValueError, OverflowError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise GuestMemoryError(f"cannot map {where}: {text}") from None
    return mm, memoryview(mm)[skip : skip + region.memory_size]


def _unmap(regions: Sequence[MappedRegion], maps: Sequence[mmap.mmap]) -> None:
    for region in regions:
        region.view.release()
    for mm in maps:
        try:
            mm.close()
        except BufferError:
            # a caller still holds a view: the mapping goes when that view does
            pass


class GuestAllocator:
    """Hands out buffers inside guest memory, as a guest driver's allocator would.

    First fit over a free list kept sorted by address, with neighbours
    merged on :meth:`free`. No block ever crosses a region boundary, so a
    ring or a buffer from here is always one view. Thread-safe.

    :param start_gpa: the first address to manage (default: the lowest).
    :param size: how many bytes from there (default: to the end of memory).
    """

    def __init__(
        self, memory: GuestMemory, start_gpa: int | None = None, size: int | None = None
    ) -> None:
        self.memory = memory
        lo = memory.regions[0].guest_phys_addr if start_gpa is None else start_gpa
        hi = memory.regions[-1].gpa_end if size is None else lo + size
        if hi <= lo:
            raise GuestMemoryError(f"allocator range {lo:#x}+{hi - lo} is empty")
        self._lock = threading.Lock()
        #: free blocks as parallel sorted lists of start addresses and sizes
        self._starts: list[int] = []
        self._sizes: list[int] = []
        #: allocated address -> size
        self._used: dict[int, int] = {}
        #: addresses where a region ends: blocks never merge across them
        self._fences: set[int] = set()
        addr = lo
        while addr < hi:
            region = memory._region_at(addr)
            if region is None:
                raise _outside(lo, hi - lo)
            end = min(hi, region.gpa_end)
            self._starts.append(addr)
            self._sizes.append(end - addr)
            self._fences.add(end)
            addr = end

    @property
    def available(self) -> int:
        """Free bytes (possibly in several blocks)."""
        with self._lock:
            return sum(self._sizes)

    def alloc(self, size: int, align: int = 16) -> int:
        """Reserve ``size`` bytes aligned to ``align`` (a power of two); return their GPA.

        :raises GuestMemoryError: when no free block is large enough.
        """
        if size <= 0:
            raise GuestMemoryError(f"cannot allocate {size} bytes of guest memory")
        if align <= 0 or align & (align - 1):
            raise GuestMemoryError(f"alignment {align} is not a power of two")
        with self._lock:
            for i, (start, length) in enumerate(zip(self._starts, self._sizes, strict=True)):
                addr = -(-start // align) * align
                pad = addr - start
                if pad + size > length:
                    continue
                tail = length - pad - size
                # keep the alignment gap and the tail as free blocks
                del self._starts[i], self._sizes[i]
                if tail:
                    self._starts.insert(i, addr + size)
                    self._sizes.insert(i, tail)
                if pad:
                    self._starts.insert(i, start)
                    self._sizes.insert(i, pad)
                self._used[addr] = size
                return addr
            largest = max(self._sizes, default=0)
            free = sum(self._sizes)
        raise GuestMemoryError(
            f"guest memory exhausted: cannot allocate {size} bytes aligned to {align} "
            f"({free} bytes free, largest block {largest})"
        )

    def free(self, gpa: int) -> None:
        """Return the block that :meth:`alloc` gave at ``gpa``."""
        with self._lock:
            size = self._used.pop(gpa, None)
            if size is None:
                raise GuestMemoryError(f"guest address {gpa:#x} was not allocated")
            i = bisect.bisect_left(self._starts, gpa)
            start, end = gpa, gpa + size
            if i < len(self._starts) and self._starts[i] == end and end not in self._fences:
                end += self._sizes[i]
                del self._starts[i], self._sizes[i]
            if (
                i
                and self._starts[i - 1] + self._sizes[i - 1] == start
                and start not in self._fences
            ):
                i -= 1
                start = self._starts[i]
                del self._starts[i], self._sizes[i]
            self._starts.insert(i, start)
            self._sizes.insert(i, end - start)
