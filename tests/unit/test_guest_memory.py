"""Guest memory in memfds (``vhost_user.memory``): real mappings, no mocks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostproc import own_fds
from qomhost.vhost_user.memory import (
    PAGE_SIZE,
    GuestAllocator,
    GuestMemory,
    GuestMemoryError,
)
from qomhost.vhost_user.protocol import (
    FLAGS_NEED_REPLY,
    MemoryRegion,
    MemTable,
    Request,
    VhostUserDecoder,
)


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    mem = GuestMemory.allocate(1 << 20, regions=2, base_gpa=0x100000)
    yield mem
    mem.close()


# --- allocate -------------------------------------------------------------------------------


def test_allocate_lays_regions_out_contiguously(memory: GuestMemory) -> None:
    first, second = memory.regions
    assert first.guest_phys_addr == 0x100000
    assert first.memory_size + second.memory_size == 1 << 20
    assert second.guest_phys_addr == first.gpa_end
    assert memory.size == 1 << 20
    for region in memory.regions:
        assert region.fd >= 0
        assert region.mmap_offset == 0
        assert region.userspace_addr % PAGE_SIZE == 0
        assert region.view.nbytes == region.memory_size
        assert os.readlink(f"/proc/self/fd/{region.fd}").startswith("/memfd:qomhost-guest")


def test_userspace_addr_is_the_real_mapping_address(memory: GuestMemory) -> None:
    import ctypes

    memory.write(0x100010, b"\xaa\xbb")
    uva = memory.gpa_to_uva(0x100010)
    assert ctypes.string_at(uva, 2) == b"\xaa\xbb"


def test_size_is_rounded_to_pages() -> None:
    with GuestMemory.allocate(1) as mem:
        assert mem.size == PAGE_SIZE


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"size": 0}, "guest memory size must be positive, not 0"),
        ({"size": PAGE_SIZE, "regions": 2}, "1 pages of guest memory cannot be split into 2"),
        ({"size": PAGE_SIZE, "regions": 9}, "guest memory needs 1 to 8 regions, not 9"),
        ({"size": PAGE_SIZE, "base_gpa": 0x123}, "invalid guest memory base address 0x123"),
    ],
)
def test_allocate_rejects(kwargs: dict[str, int], text: str) -> None:
    with pytest.raises(GuestMemoryError, match=text):
        GuestMemory.allocate(**kwargs)


def test_memfds_are_sealed_against_resizing(memory: GuestMemory) -> None:
    with pytest.raises(OSError):
        os.ftruncate(memory.regions[0].fd, 0)


# --- lookups --------------------------------------------------------------------------------


def test_view_is_zero_copy(memory: GuestMemory) -> None:
    view = memory.view(0x100100, 4)
    view[:] = b"abcd"
    assert memory.read(0x100100, 4) == b"abcd"
    memory.write(0x100101, b"X")
    assert bytes(view) == b"aXcd"


def test_view_by_user_address(memory: GuestMemory) -> None:
    second = memory.regions[1]
    uva = second.userspace_addr + 8
    memory.view_uva(uva, 3)[:] = b"uva"
    assert memory.read(second.guest_phys_addr + 8, 3) == b"uva"
    assert memory.uva_to_gpa(uva) == second.guest_phys_addr + 8
    assert memory.gpa_to_uva(second.guest_phys_addr + 8) == uva


@pytest.mark.parametrize(
    ("gpa", "length"),
    [(0x1000, 64), (0xFFFFF, 2), (0x200000, 1), (0x100000, -1), (-8, 4), (0x1FFFFF, 2)],
)
def test_view_outside_memory(memory: GuestMemory, gpa: int, length: int) -> None:
    with pytest.raises(GuestMemoryError, match=rf"guest address {gpa:#x}\+{length} is outside"):
        memory.view(gpa, length)


def test_view_must_not_cross_regions_but_views_split(memory: GuestMemory) -> None:
    boundary = memory.regions[0].gpa_end
    with pytest.raises(GuestMemoryError, match="is outside guest memory"):
        memory.view(boundary - 2, 4)
    memory.write(boundary - 2, b"1234")
    parts = memory.views(boundary - 2, 4)
    assert [bytes(p) for p in parts] == [b"12", b"34"]
    assert memory.read(boundary - 2, 4) == b"1234"
    assert memory.view(boundary, 2).tobytes() == b"34"


def test_zero_length_view_at_a_valid_address(memory: GuestMemory) -> None:
    assert memory.view(0x100000, 0).nbytes == 0
    assert memory.views(0x100000, 0) == [memory.view(0x100000, 0)]


def test_translation_outside_memory(memory: GuestMemory) -> None:
    with pytest.raises(GuestMemoryError, match="guest address 0x10 is outside"):
        memory.gpa_to_uva(0x10)
    with pytest.raises(GuestMemoryError, match="user address 0x10 is outside"):
        memory.uva_to_gpa(0x10)


# --- the memory table -----------------------------------------------------------------------


def test_mem_table_is_the_set_mem_table_message(memory: GuestMemory) -> None:
    table = memory.mem_table(FLAGS_NEED_REPLY)
    assert table.request == Request.SET_MEM_TABLE
    assert table.flags == FLAGS_NEED_REPLY
    assert table.fds == tuple(r.fd for r in memory.regions)
    assert [(r.guest_phys_addr, r.memory_size, r.userspace_addr) for r in table.regions] == [
        (r.guest_phys_addr, r.memory_size, r.userspace_addr) for r in memory.regions
    ]
    # what the backend decodes from the bytes is the same table
    (decoded,) = VhostUserDecoder().feed(table.encode(), list(table.fds))
    assert decoded == table


def test_two_mappings_of_the_same_memory(memory: GuestMemory) -> None:
    with memory.mirror() as peer:
        assert [r.userspace_addr for r in peer.regions] == [
            r.userspace_addr for r in memory.regions
        ]
        assert all(r.fd == -1 for r in peer.regions)
        memory.write(0x100000, b"front")
        assert peer.read(0x100000, 5) == b"front"
        peer.write(0x1FFFF0, b"back")
        assert memory.read(0x1FFFF0, 4) == b"back"
        # different mappings, the same user addresses for translation
        assert peer.view(0x100000, 1).tobytes() == b"f"
        with pytest.raises(GuestMemoryError, match="no fds to send"):
            peer.mem_table()


def table_of(memfd: int, *regions: tuple[int, int, int, int]) -> MemTable:
    return MemTable(tuple(MemoryRegion(g, n, u, o, os.dup(memfd)) for g, n, u, o in regions))


@pytest.fixture
def memfd() -> Iterator[int]:
    fd = os.memfd_create("test", os.MFD_CLOEXEC)
    os.ftruncate(fd, 4 * PAGE_SIZE)
    os.pwrite(fd, bytes(range(256)) * (4 * PAGE_SIZE // 256), 0)
    yield fd
    os.close(fd)


def test_map_table_with_unaligned_offsets(memfd: int) -> None:
    before = own_fds()
    table = table_of(memfd, (0, 0x800, 0x7000, 0x10), (0x800, 0x1000, 0x9000, 0x1801))
    with GuestMemory.map_table(table) as mem:
        assert mem.read(0, 4) == bytes([0x10, 0x11, 0x12, 0x13])
        assert mem.read(0x800, 2) == bytes([0x01, 0x02])
        assert mem.read(0x7FE, 4) == bytes([0x0E, 0x0F, 0x01, 0x02])
        with mem.view_uva(0x9000, 1) as view:
            first = bytes(view)
        assert first == b"\x01"
        mem.write(0x800, b"\xff")
        assert os.pread(memfd, 1, 0x1801) == b"\xff"
    # the received fds were closed once mapped
    assert own_fds() == before - set(table.fds)


@pytest.mark.parametrize(
    ("regions", "text"),
    [
        ((), "memory table has no regions"),
        (((0, 0, 0, 0),), "memory region at guest address 0x0 has invalid size 0"),
        (((0, 0x2000, 0, 0), (0x1000, 0x1000, 0x10000, 0)), "overlap at guest address 0x1000"),
        (((0, 0x1000, 0, 0), (0x1000, 0x1000, 0x800, 0)), "overlap at user address 0x800"),
        (((0, 5 * PAGE_SIZE, 0, 0),), "beyond the end of its 16384-byte file"),
        (((0, 0x1000, 0, 3 * PAGE_SIZE + 1),), "ends at offset 16385"),
    ],
)
def test_map_table_rejects_and_closes_fds(
    memfd: int, regions: tuple[tuple[int, int, int, int], ...], text: str
) -> None:
    before = own_fds()
    with pytest.raises(GuestMemoryError, match=text):
        GuestMemory.map_table(table_of(memfd, *regions))
    assert own_fds() == before


def test_map_table_failure_leaves_nothing_mapped(memfd: int) -> None:
    def maps() -> int:
        with open("/proc/self/maps") as f:
            return sum("/memfd:test" in line for line in f)

    before = maps()
    # the second region fails after the first one was mapped
    with pytest.raises(GuestMemoryError, match="beyond the end"):
        GuestMemory.map_table(table_of(memfd, (0, 0x1000, 0, 0), (0x1000, 0x1000, 0x1000, 0x4000)))
    assert maps() == before


def test_map_table_of_a_bad_fd() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    with pytest.raises(GuestMemoryError, match="cannot map memory region at guest address 0x0"):
        GuestMemory.map_table(MemTable((MemoryRegion(0, 0x1000, 0, 0, fd),)))


def test_another_process_sees_the_same_bytes(memory: GuestMemory) -> None:
    region = memory.regions[1]
    memory.write(region.guest_phys_addr + 16, b"from the parent")
    child = textwrap.dedent(
        f"""
        from qomhost.vhost_user.memory import GuestMemory
        from qomhost.vhost_user.protocol import MemoryRegion, MemTable
        table = MemTable((MemoryRegion({region.guest_phys_addr}, {region.memory_size},
                                       {region.userspace_addr}, 0, {region.fd}),))
        with GuestMemory.map_table(table) as mem:
            print(mem.read({region.guest_phys_addr + 16}, 15).decode())
            mem.write({region.guest_phys_addr + 64}, b"from the child")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", child],
        pass_fds=[region.fd],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out == "from the parent\n"
    assert memory.read(region.guest_phys_addr + 64, 14) == b"from the child"


# --- close ----------------------------------------------------------------------------------


def test_close_is_idempotent_and_closes_fds() -> None:
    before = own_fds()
    mem = GuestMemory.allocate(2 * PAGE_SIZE, regions=2)
    assert len(own_fds() - before) >= 2
    mem.close()
    mem.close()
    assert mem.closed
    assert own_fds() == before
    with pytest.raises(GuestMemoryError, match="guest memory is closed"):
        mem.view(0, 1)
    with pytest.raises(GuestMemoryError, match="guest memory is closed"):
        mem.read(0, 1)
    # the released view refuses access instead of touching unmapped memory
    with pytest.raises(ValueError):
        bytes(mem.regions[0].view)


def test_close_keeps_outstanding_views_valid() -> None:
    mem = GuestMemory.allocate(PAGE_SIZE)
    view = mem.view(8, 4)
    mem.close()
    view[:] = b"safe"
    assert bytes(view) == b"safe"


# --- one region at a time (ADD_MEM_REG / REM_MEM_REG) ------------------------------------


def _dup_region(memory: GuestMemory, i: int) -> MemoryRegion:
    r = memory.regions[i]
    return MemoryRegion(
        r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset, os.dup(r.fd)
    )


def test_regions_added_and_removed_one_at_a_time(memory: GuestMemory) -> None:
    before = own_fds()
    peer = GuestMemory.map_table(MemTable((_dup_region(memory, 1),)))
    try:
        second = memory.regions[1].guest_phys_addr
        memory.write(second - 4, b"acrossit")
        with pytest.raises(GuestMemoryError, match="outside guest memory"):
            peer.read(second - 4, 8)
        peer.add_region(_dup_region(memory, 0))
        assert [r.guest_phys_addr for r in peer.regions] == [0x100000, second]
        assert peer.read(second - 4, 8) == b"acrossit"
        assert peer.view_uva(memory.regions[0].userspace_addr, 2) == b"\x00\x00"
        # the same region again, or one overlapping it in user addresses
        with pytest.raises(GuestMemoryError, match="overlap at guest address"):
            peer.add_region(_dup_region(memory, 1))
        r = memory.regions[0]
        fd = os.dup(r.fd)
        with pytest.raises(GuestMemoryError, match="overlap at user address"):
            peer.add_region(MemoryRegion(0x40000000, PAGE_SIZE, r.userspace_addr, 0, fd))
        with pytest.raises(GuestMemoryError, match="no memory region at guest address 0x100000"):
            peer.remove_region(0x100000, r.memory_size, r.userspace_addr + PAGE_SIZE)
        kept = peer.view(second, 8)
        peer.remove_region(second, memory.regions[1].memory_size, memory.regions[1].userspace_addr)
        assert len(peer.regions) == 1
        with pytest.raises(GuestMemoryError, match="outside guest memory"):
            peer.view(second, 1)
        assert bytes(kept[:4]) == b"ssit"  # a view taken before stays mapped
        del kept
    finally:
        peer.close()
    assert own_fds() == before
    with pytest.raises(GuestMemoryError, match="guest memory is closed"):
        peer.add_region(_dup_region(memory, 1))
    assert own_fds() == before  # the fd of a refused region is closed too


# --- the allocator --------------------------------------------------------------------------


def test_allocator_first_fit_and_alignment(memory: GuestMemory) -> None:
    alloc = GuestAllocator(memory)
    assert alloc.available == memory.size
    a = alloc.alloc(10)
    b = alloc.alloc(100, align=4096)
    c = alloc.alloc(1, align=1)
    assert a == 0x100000
    assert b == 0x101000
    assert c == a + 10  # first fit: the gap before b
    assert alloc.available == memory.size - 111
    alloc.free(b)
    assert alloc.alloc(4096, align=4096) == 0x101000


def test_allocator_coalesces_free_blocks() -> None:
    with GuestMemory.allocate(4 * PAGE_SIZE) as mem:
        alloc = GuestAllocator(mem)
        blocks = [alloc.alloc(PAGE_SIZE, align=1) for _ in range(4)]
        with pytest.raises(GuestMemoryError, match="guest memory exhausted: cannot allocate 1 "):
            alloc.alloc(1)
        for gpa in (blocks[0], blocks[2], blocks[1], blocks[3]):
            alloc.free(gpa)
        assert alloc.available == 4 * PAGE_SIZE
        assert alloc.alloc(4 * PAGE_SIZE) == 0


def test_allocator_exhaustion_message() -> None:
    with GuestMemory.allocate(2 * PAGE_SIZE) as mem:
        alloc = GuestAllocator(mem, start_gpa=0x100, size=0x300)
        alloc.alloc(0x100)
        with pytest.raises(
            GuestMemoryError,
            match=r"^guest memory exhausted: cannot allocate 768 bytes aligned to 16 "
            r"\(512 bytes free, largest block 512\)$",
        ):
            alloc.alloc(0x300)


def test_allocations_never_cross_regions(memory: GuestMemory) -> None:
    alloc = GuestAllocator(memory)
    boundary = memory.regions[0].gpa_end
    first = alloc.alloc(boundary - 0x100000 - 8, align=1)
    second = alloc.alloc(16)
    assert second == boundary
    alloc.free(first)
    alloc.free(second)
    # free blocks on either side of a region boundary stay apart
    with pytest.raises(GuestMemoryError, match="exhausted"):
        alloc.alloc(memory.size)


@pytest.mark.parametrize(
    ("size", "align", "text"),
    [(0, 16, "cannot allocate 0 bytes"), (8, 3, "alignment 3 is not a power of two")],
)
def test_allocator_rejects(memory: GuestMemory, size: int, align: int, text: str) -> None:
    with pytest.raises(GuestMemoryError, match=text):
        GuestAllocator(memory).alloc(size, align)


def test_allocator_free_of_unknown_address(memory: GuestMemory) -> None:
    with pytest.raises(GuestMemoryError, match="guest address 0x100000 was not allocated"):
        GuestAllocator(memory).free(0x100000)


def test_allocator_range_outside_memory(memory: GuestMemory) -> None:
    with pytest.raises(GuestMemoryError, match="is outside guest memory"):
        GuestAllocator(memory, start_gpa=0, size=0x1000)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(1, 3000), st.sampled_from([1, 8, 16, 64, 4096])),
        max_size=60,
    )
)
def test_allocator_never_overlaps_and_returns_everything(
    ops: list[tuple[bool, int, int]],
) -> None:
    with GuestMemory.allocate(4 * PAGE_SIZE, regions=2) as mem:
        alloc = GuestAllocator(mem)
        live: dict[int, int] = {}
        for do_free, size, align in ops:
            if do_free and live:
                gpa = min(live)
                alloc.free(gpa)
                del live[gpa]
                continue
            try:
                gpa = alloc.alloc(size, align)
            except GuestMemoryError:
                continue
            assert gpa % align == 0
            assert len(mem.views(gpa, size)) == 1
            for other, length in live.items():
                assert gpa + size <= other or other + length <= gpa
            live[gpa] = size
        assert alloc.available == mem.size - sum(live.values())
        for gpa in list(live):
            alloc.free(gpa)
        assert alloc.available == mem.size
        for region in mem.regions:
            assert alloc.alloc(region.memory_size, align=1) == region.guest_phys_addr
