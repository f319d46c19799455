"""Split virtqueues (``vhost_user.virtqueue``), driver and device on real shared memory.

The driver's end works on guest memory as allocated by a frontend; the
device's end on a second mapping of the same memfds, made as a backend
makes it from ``SET_MEM_TABLE`` -- two real mappings, as two processes
would have.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qomhost.vhost_user.memory import PAGE_SIZE, GuestAllocator, GuestMemory
from qomhost.vhost_user.protocol import Request
from qomhost.vhost_user.virtqueue import (
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    VRING_AVAIL_F_NO_INTERRUPT,
    VRING_USED_F_NO_NOTIFY,
    DescriptorChain,
    DeviceVirtqueue,
    DriverVirtqueue,
    LazyChain,
    VirtqueueError,
    VirtqueueFull,
    vring_need_event,
    vring_sizes,
)

MEM_SIZE = 1 << 20
DESC = struct.Struct("<QIHH")
U16 = struct.Struct("<H")


class Pair:
    """A driver and a device on one queue, over two mappings of one memory."""

    def __init__(self, num: int = 8, *, event_idx: bool = False, indirect: bool = False) -> None:
        self.mem = GuestMemory.allocate(MEM_SIZE, regions=2)
        self.backend_mem = self.mem.mirror()
        self.alloc = GuestAllocator(self.mem)
        self.driver = DriverVirtqueue(
            self.mem, self.alloc, num, event_idx=event_idx, indirect=indirect
        )
        self.device = DeviceVirtqueue.from_vring_addr(
            self.backend_mem, self.driver.vring_addr(0), num, event_idx=event_idx
        )

    def buffer(self, data: bytes | int) -> tuple[int, int]:
        """A buffer in guest memory: filled with ``data``, or ``data`` zero bytes."""
        size = data if isinstance(data, int) else len(data)
        gpa = self.alloc.alloc(size)
        self.mem.write(gpa, bytes(size) if isinstance(data, int) else data)
        return gpa, size

    def close(self) -> None:
        self.backend_mem.close()
        self.mem.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


def serve_reverse(device: DeviceVirtqueue) -> int:
    """A toy device: answer each request with its bytes reversed (as many as fit)."""
    served = 0
    while (chain := device.pop()) is not None:
        answer = chain.read_all()[::-1][: chain.writable_len]
        chain.write(0, answer)
        device.push(chain.head, len(answer))
        served += 1
    return served


# --- layout ---------------------------------------------------------------------------------


def test_vring_sizes() -> None:
    assert vring_sizes(256) == (4096, 6 + 512, 6 + 2048)
    assert vring_sizes(1) == (16, 8, 14)


@pytest.mark.parametrize("num", [0, 3, 100, 65536])
def test_queue_size_must_be_a_power_of_two(pair: Pair, num: int) -> None:
    text = f"Invalid queue size {num}: must be a power of 2 up to 32768"
    with pytest.raises(VirtqueueError, match=text):
        DriverVirtqueue(pair.mem, pair.alloc, num)
    with pytest.raises(VirtqueueError, match=text):
        DeviceVirtqueue(pair.backend_mem, num, 0, 0, 0)


def test_rings_are_where_vring_addr_says(pair: Pair) -> None:
    addr = pair.driver.vring_addr(3)
    assert addr.request == Request.SET_VRING_ADDR
    assert addr.index == 3
    assert addr.desc_user_addr == pair.mem.gpa_to_uva(pair.driver.desc_gpa)
    assert addr.avail_user_addr == pair.driver.avail_uva
    assert addr.used_user_addr == pair.driver.used_uva
    assert addr.log_guest_addr == pair.driver.used_gpa
    assert pair.driver.desc_gpa % 16 == 0
    assert pair.driver.avail_gpa % 2 == 0
    assert pair.driver.used_gpa % 4 == 0


def test_device_rejects_rings_outside_memory(pair: Pair) -> None:
    with pytest.raises(VirtqueueError, match=r"^Invalid vring_addr message: user address 0x10\+"):
        DeviceVirtqueue(pair.backend_mem, 8, 0x10, pair.driver.avail_uva, pair.driver.used_uva)


# --- round trips ----------------------------------------------------------------------------


def test_request_and_response(pair: Pair) -> None:
    request = pair.buffer(b"hello, device")
    response = pair.buffer(13)
    assert not pair.device.has_available()
    head = pair.driver.add([request], [response], token="req-1")
    assert pair.driver.num_free == 6
    assert pair.driver.kick_needed()
    assert pair.device.has_available()

    chain = pair.device.pop()
    assert chain is not None
    assert chain.head == head
    assert (chain.readable_len, chain.writable_len) == (13, 13)
    assert chain.read_all() == b"hello, device"
    assert pair.device.pop() is None
    chain.write(0, b"ecived ,olleh")
    pair.device.push(chain.head, 13)
    assert pair.device.should_notify()

    assert pair.driver.get_used() == [("req-1", 13)]
    assert pair.mem.read(*response) == b"ecived ,olleh"
    assert pair.driver.num_free == 8
    assert pair.driver.get_used() == []
    assert pair.device.last_avail_idx == 1


def test_chain_views_are_guest_memory_itself(pair: Pair) -> None:
    request = pair.buffer(b"abc")
    response = pair.buffer(4)
    pair.driver.add([request], [response], None)
    chain = pair.device.pop()
    assert chain is not None
    chain.writable[0][:] = b"zero"
    assert pair.mem.read(*response) == b"zero"
    pair.mem.write(request[0], b"x")
    assert bytes(chain.readable[0]) == b"xbc"


def test_many_requests_in_order(pair: Pair) -> None:
    for round_ in range(5):
        buffers = [(pair.buffer(bytes([round_, i]) * 3), pair.buffer(6)) for i in range(4)]
        for i, (out, in_) in enumerate(buffers):
            pair.driver.add([out], [in_], token=i)
        with pytest.raises(VirtqueueFull, match="virtqueue full: 2 descriptors needed, 0 free"):
            pair.driver.add([pair.buffer(1)], [pair.buffer(1)], token="extra")
        assert serve_reverse(pair.device) == 4
        assert pair.driver.get_used() == [(i, 6) for i in range(4)]
        for i, (_out, in_) in enumerate(buffers):
            assert pair.mem.read(*in_) == bytes([i, round_]) * 3


def test_readable_only_and_writable_only_chains(pair: Pair) -> None:
    pair.driver.add([pair.buffer(b"a"), pair.buffer(b"bc")], [], "out")
    pair.driver.add([], [pair.buffer(2), pair.buffer(3)], "in")
    first = pair.device.pop()
    second = pair.device.pop()
    assert first is not None and second is not None
    assert (first.read_all(), first.writable_len) == (b"abc", 0)
    assert (second.readable_len, second.writable_len) == (0, 5)
    second.write(1, b"wxyz")
    pair.device.push_many([(first.head, 0), (second.head, 5)])
    assert pair.driver.get_used() == [("out", 0), ("in", 5)]


def test_add_rejects_empty_and_bad_lengths(pair: Pair) -> None:
    with pytest.raises(VirtqueueError, match="a request needs at least one buffer"):
        pair.driver.add([], [], None)
    with pytest.raises(VirtqueueError, match="invalid buffer length 0"):
        pair.driver.add([(0, 0)], [], None)
    with pytest.raises(VirtqueueError, match="invalid buffer length 4294967296"):
        pair.driver.add([], [(0, 1 << 32)], None)
    assert pair.driver.num_free == 8


def test_virtqueue_full_leaves_the_queue_unchanged() -> None:
    p = Pair(num=4)
    try:
        p.driver.add([p.buffer(1), p.buffer(1)], [p.buffer(1)], "three")
        with pytest.raises(VirtqueueFull, match="2 descriptors needed, 1 free"):
            p.driver.add([p.buffer(1)], [p.buffer(1)], "two")
        assert p.driver.num_free == 1
        assert p.driver.in_flight == 1
        p.driver.add([p.buffer(b"!")], [], "one")
        assert serve_reverse(p.device) == 2
        assert [token for token, _ in p.driver.get_used()] == ["three", "one"]
        assert p.driver.num_free == 4
    finally:
        p.close()


# --- descriptor chains ----------------------------------------------------------------------


def test_chain_write_and_read_across_segments() -> None:
    a, b, c = bytearray(3), bytearray(2), bytearray(4)
    chain = DescriptorChain(
        0,
        [memoryview(b"0123"), memoryview(b"45")],
        [memoryview(a), memoryview(b), memoryview(c)],
        6,
        9,
    )
    chain.write(2, b"ABCDE")
    assert (a, b, c) == (bytearray(b"\0\0A"), bytearray(b"BC"), bytearray(b"DE\0\0"))
    chain.write(8, b"Z")
    assert c == bytearray(b"DE\0Z")
    with pytest.raises(VirtqueueError, match="2 bytes at offset 8 do not fit the 9 writable"):
        chain.write(8, b"ZZ")
    buf = bytearray(5)
    assert chain.read_into(buf) == 5
    assert buf == b"01234"
    big = bytearray(10)
    assert chain.read_into(big) == 6
    assert chain.read_all() == b"012345"


def test_buffer_across_a_region_boundary_is_split(pair: Pair) -> None:
    boundary = pair.mem.regions[1].guest_phys_addr
    pair.mem.write(boundary - 3, b"crossing")
    pair.driver.add([(boundary - 3, 8)], [(boundary - 2, 4)], None)
    chain = pair.device.pop()
    assert chain is not None
    assert [bytes(v) for v in chain.readable] == [b"cro", b"ssing"]
    assert [v.nbytes for v in chain.writable] == [2, 2]
    assert chain.read_all() == b"crossing"
    chain.write(0, b"WXYZ")
    assert pair.mem.read(boundary - 3, 8) == b"cWXYZing"


# --- indirect descriptors -------------------------------------------------------------------


def test_indirect_chain_takes_one_descriptor() -> None:
    p = Pair(indirect=True)
    try:
        before = p.alloc.available
        bufs = [p.buffer(b"head"), p.buffer(b"er"), p.buffer(3), p.buffer(2)]
        used_by_buffers = before - p.alloc.available
        p.driver.add(bufs[:2], bufs[2:], "indirect")
        assert p.driver.num_free == 7
        desc = p.mem.view(p.driver.desc_gpa, 16)
        _addr, length, flags, _next = DESC.unpack_from(desc)
        assert (length, flags) == (4 * 16, VIRTQ_DESC_F_INDIRECT)
        chain = p.device.pop()
        assert chain is not None
        assert chain.read_all() == b"header"
        assert [v.nbytes for v in chain.writable] == [3, 2]
        chain.write(0, b"redae")
        p.device.push(chain.head, 5)
        assert p.driver.get_used() == [("indirect", 5)]
        assert p.mem.read(*bufs[2]) + p.mem.read(*bufs[3]) == b"redae"
        # the table (room for 4 descriptors) stays with its descriptor for reuse
        assert p.alloc.available == before - used_by_buffers - 64
        p.driver.add(bufs[:1], bufs[2:], "again")
        assert p.alloc.available == before - used_by_buffers - 64
        chain = p.device.pop()
        assert chain is not None
        assert (chain.read_all(), chain.writable_len) == (b"head", 5)
        p.device.push(chain.head, 0)
        assert p.driver.get_used() == [("again", 0)]
        # a single buffer needs no table
        p.driver.add([bufs[0]], [], "direct")
        _addr, length, flags, _next = DESC.unpack_from(desc)
        assert (length, flags) == (4, 0)
    finally:
        p.close()


def test_indirect_falls_back_to_a_direct_chain_when_memory_runs_out() -> None:
    p = Pair(indirect=True)
    try:
        bufs = [p.buffer(1), p.buffer(1)]
        while True:  # exhaust the allocator
            try:
                p.alloc.alloc(16, 1)
            except Exception:
                break
        p.driver.add(bufs[:1], bufs[1:], "direct")
        assert p.driver.num_free == 6
        chain = p.device.pop()
        assert chain is not None
        assert (chain.readable_len, chain.writable_len) == (1, 1)
    finally:
        p.close()


# --- malformed rings: the device reports, never crashes ---------------------------------------


class Ring:
    """Writes a driver's side by hand, for the device to choke on."""

    def __init__(self, pair: Pair) -> None:
        self.mem = pair.mem
        self.desc = pair.mem.view(pair.driver.desc_gpa, vring_sizes(8)[0])
        self.avail = pair.mem.view(pair.driver.avail_gpa, vring_sizes(8)[1])
        self.data = pair.alloc.alloc(4096)

    def set(self, i: int, addr: int, length: int, flags: int = 0, nxt: int = 0) -> None:
        DESC.pack_into(self.desc, 16 * i, addr, length, flags, nxt)

    def publish(self, *heads: int, idx: int | None = None) -> None:
        for k, head in enumerate(heads):
            U16.pack_into(self.avail, 4 + 2 * k, head)
        U16.pack_into(self.avail, 2, len(heads) if idx is None else idx)


@pytest.fixture
def ring(pair: Pair) -> Ring:
    return Ring(pair)


def pop_error(pair: Pair) -> str:
    with pytest.raises(VirtqueueError) as info:
        pair.device.pop()
    return info.value.desc


def test_avail_index_too_far_ahead(pair: Pair, ring: Ring) -> None:
    ring.publish(0, idx=9)
    assert pop_error(pair) == "Guest moved used index from 0 to 9"
    assert pair.device.last_avail_idx == 0


def test_head_out_of_range(pair: Pair, ring: Ring) -> None:
    ring.publish(8)
    assert pop_error(pair) == "Guest says index 8 is available"


def test_zero_length_buffer(pair: Pair, ring: Ring) -> None:
    ring.set(0, ring.data, 0)
    ring.publish(0)
    assert pop_error(pair) == "virtio: zero sized buffers are not allowed"


def test_buffer_outside_memory(pair: Pair, ring: Ring) -> None:
    ring.set(0, MEM_SIZE - 8, 16)
    ring.publish(0)
    assert pop_error(pair) == (
        "virtio: invalid address for buffers: guest address 0xffff8+16 is outside guest memory"
    )


def test_readable_after_writable(pair: Pair, ring: Ring) -> None:
    ring.set(0, ring.data, 4, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1)
    ring.set(1, ring.data, 4)
    ring.publish(0)
    assert pop_error(pair) == "Incorrect order for descriptors"


def test_looped_chain(pair: Pair, ring: Ring) -> None:
    ring.set(0, ring.data, 4, VIRTQ_DESC_F_NEXT, 1)
    ring.set(1, ring.data, 4, VIRTQ_DESC_F_NEXT, 0)
    ring.publish(0)
    assert pop_error(pair) == "Looped descriptor"


def test_next_out_of_range(pair: Pair, ring: Ring) -> None:
    ring.set(0, ring.data, 4, VIRTQ_DESC_F_NEXT, 8)
    ring.publish(0)
    assert pop_error(pair) == "Desc next is 8"


def test_indirect_table_sizes(pair: Pair, ring: Ring) -> None:
    for length in (0, 17, 16 * 32769):
        ring.set(0, ring.data, length, VIRTQ_DESC_F_INDIRECT)
        ring.publish(0, idx=pair.device.last_avail_idx + 1)
        assert pop_error(pair) == "Invalid size for indirect buffer table"


def test_indirect_table_outside_memory(pair: Pair, ring: Ring) -> None:
    ring.set(0, MEM_SIZE, 32, VIRTQ_DESC_F_INDIRECT)
    ring.publish(0)
    assert pop_error(pair).startswith("Invalid indirect buffer table: guest address 0x100000+32")


def test_nested_indirect(pair: Pair, ring: Ring) -> None:
    table = ring.data + 2048
    DESC.pack_into(pair.mem.view(table, 32), 0, ring.data, 4, VIRTQ_DESC_F_NEXT, 1)
    DESC.pack_into(pair.mem.view(table, 32), 16, table, 32, VIRTQ_DESC_F_INDIRECT, 0)
    ring.set(0, table, 32, VIRTQ_DESC_F_INDIRECT)
    ring.publish(0)
    assert pop_error(pair) == "Nested indirect descriptor"


def test_indirect_in_a_direct_chain(pair: Pair, ring: Ring) -> None:
    ring.set(0, ring.data, 4, VIRTQ_DESC_F_NEXT, 1)
    ring.set(1, ring.data, 32, VIRTQ_DESC_F_INDIRECT)
    ring.publish(0)
    assert pop_error(pair) == "Indirect descriptor in a chain"


def test_indirect_chain_looping_inside_its_table(pair: Pair, ring: Ring) -> None:
    table = pair.mem.view(ring.data + 1024, 32)
    DESC.pack_into(table, 0, ring.data, 4, VIRTQ_DESC_F_NEXT, 1)
    DESC.pack_into(table, 16, ring.data, 4, VIRTQ_DESC_F_NEXT, 0)
    ring.set(0, ring.data + 1024, 32, VIRTQ_DESC_F_INDIRECT)
    ring.publish(0)
    assert pop_error(pair) == "Looped descriptor"


def test_an_indirect_table_across_regions_is_read_whole(pair: Pair) -> None:
    boundary = pair.mem.regions[1].guest_phys_addr
    table = bytearray(32)
    DESC.pack_into(table, 0, boundary - 100, 4, VIRTQ_DESC_F_NEXT, 1)
    DESC.pack_into(table, 16, boundary + 100, 2, VIRTQ_DESC_F_WRITE, 0)
    pair.mem.write(boundary - 8, table)
    pair.mem.write(boundary - 100, b"data")
    ring = Ring(pair)
    ring.set(0, boundary - 8, 32, VIRTQ_DESC_F_INDIRECT)
    ring.publish(0)
    chain = pair.device.pop()
    assert chain is not None
    assert (chain.read_all(), chain.writable_len) == (b"data", 2)


ring_bytes = st.binary(min_size=16 * 8, max_size=16 * 8)
avail_bytes = st.binary(min_size=4 + 2 * 8, max_size=4 + 2 * 8)
# descriptors that mostly point into memory, so chains get followed deep
descriptor = st.tuples(
    st.one_of(st.integers(0, MEM_SIZE + 64), st.integers(0, 2**64 - 1)),
    st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),
    st.integers(0, 0xFFFF) | st.integers(0, 7),
    st.integers(0, 0xFFFF) | st.integers(0, 9),
)


def drain(device: DeviceVirtqueue) -> None:
    """Pop until empty or an error; only VirtqueueError may come out."""
    for _ in range(device.num + 1):
        try:
            chain = device.pop()
        except VirtqueueError:
            return
        if chain is None:
            return
        assert chain.readable_len + chain.writable_len > 0
        assert sum(v.nbytes for v in chain.readable) == chain.readable_len
        assert sum(v.nbytes for v in chain.writable) == chain.writable_len
    raise AssertionError("the device popped more chains than the ring holds")


@pytest.fixture(scope="module")
def fuzz_pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


_fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_fuzz
@given(desc=ring_bytes, avail=avail_bytes, base=st.integers(0, 0xFFFF))
def test_fuzz_raw_ring_bytes(fuzz_pair: Pair, desc: bytes, avail: bytes, base: int) -> None:
    p = fuzz_pair
    p.mem.write(p.driver.desc_gpa, desc)
    p.mem.write(p.driver.avail_gpa, avail)
    device = DeviceVirtqueue.from_vring_addr(p.backend_mem, p.driver.vring_addr(0), 8, base)
    drain(device)


@_fuzz
@given(
    descs=st.lists(descriptor, min_size=8, max_size=8),
    table=st.lists(descriptor, min_size=0, max_size=6),
    heads=st.lists(st.integers(0, 9), min_size=1, max_size=8),
    indirect_at=st.integers(0, 8),
)
def test_fuzz_structured_chains(
    fuzz_pair: Pair,
    descs: list[tuple[int, int, int, int]],
    table: list[tuple[int, int, int, int]],
    heads: list[int],
    indirect_at: int,
) -> None:
    p = fuzz_pair
    table_gpa = MEM_SIZE // 2
    for i, (addr, length, flags, nxt) in enumerate(table):
        p.mem.write(table_gpa + 16 * i, DESC.pack(addr, length, flags, nxt))
    desc_view = p.mem.view(p.driver.desc_gpa, 16 * 8)
    for i, fields in enumerate(descs):
        DESC.pack_into(desc_view, 16 * i, *fields)
    if indirect_at < 8:
        DESC.pack_into(
            desc_view, 16 * indirect_at, table_gpa, 16 * len(table), VIRTQ_DESC_F_INDIRECT, 0
        )
    avail = p.mem.view(p.driver.avail_gpa, 4 + 2 * 8)
    for k, head in enumerate(heads):
        U16.pack_into(avail, 4 + 2 * k, head)
    U16.pack_into(avail, 2, len(heads))
    device = DeviceVirtqueue.from_vring_addr(p.backend_mem, p.driver.vring_addr(0), 8)
    drain(device)


# --- lazy chains: checked like pop(), mapped on demand -----------------------------------------


def indirect_request(p: Pair, descs: list[tuple[int, int, int]]) -> None:
    """Publish one request as an indirect table filled in order, as Linux fills it:
    ``(addr, length, flags)`` with NEXT and next = i + 1 on all but the last."""
    table = bytearray()
    for i, (addr, length, flags) in enumerate(descs):
        last = i == len(descs) - 1
        table += DESC.pack(addr, length, flags | (0 if last else VIRTQ_DESC_F_NEXT), i + 1)
    gpa = p.alloc.alloc(len(table))
    p.mem.write(gpa, table)
    desc = p.mem.view(p.driver.desc_gpa, 16)
    DESC.pack_into(desc, 0, gpa, len(table), VIRTQ_DESC_F_INDIRECT, 0)
    avail = p.mem.view(p.driver.avail_gpa, 4 + 2 * 8)
    idx = U16.unpack_from(avail, 2)[0]
    U16.pack_into(avail, 4 + 2 * (idx % 8), 0)
    U16.pack_into(avail, 2, (idx + 1) & 0xFFFF)


def test_lazy_chain_maps_only_what_is_asked(pair: Pair) -> None:
    page = PAGE_SIZE
    pages = [pair.alloc.alloc(page, page) for _ in range(6)]
    status = pair.alloc.alloc(1)
    for k, gpa in enumerate(pages):
        pair.mem.write(gpa, bytes([k]) * page)
    # pages 0 and 1 are neighbours in guest memory when the allocator made them so
    descs = [(pages[0], page, 0), (pages[1], page, 0), (pages[2], page, 0)]
    descs += [(pages[3], page, VIRTQ_DESC_F_WRITE), (pages[4], page, VIRTQ_DESC_F_WRITE)]
    descs += [(status, 1, VIRTQ_DESC_F_WRITE)]
    indirect_request(pair, descs)
    chain = pair.device.pop_lazy()
    assert isinstance(chain, LazyChain)
    assert chain.descriptors == (3, 3)
    assert (chain.readable_len, chain.writable_len) == (3 * page, 2 * page + 1)
    views = chain.readable_views(page - 2, 4)
    assert b"".join(views) == b"\0\0\1\1"
    if pages[1] == pages[0] + page:
        assert len(views) == 1  # contiguous buffers come as one view
    assert chain.read(3 * page - 1, 10) == b"\2"  # the readable part ends first
    assert chain.readable_views(3 * page, 1) == []
    dst = chain.writable_views(page - 1, 2)
    assert [v.nbytes for v in dst] == [1, 1] or [v.nbytes for v in dst] == [2]
    for v in dst:
        v[:] = b"D" * v.nbytes
    assert chain.set_last_byte(0x42)
    assert pair.mem.read(pages[3] + page - 1, 1) + pair.mem.read(pages[4], 1) == b"DD"
    assert pair.mem.read(status, 1) == b"\x42"


def test_lazy_chain_without_writable_part(pair: Pair) -> None:
    gpa = pair.alloc.alloc(8)
    pair.mem.write(gpa, b"readonly")
    indirect_request(pair, [(gpa, 4, 0), (gpa + 4, 4, 0)])
    chain = pair.device.pop_lazy()
    assert chain is not None
    assert chain.descriptors == (2, 0)
    assert chain.read(0, 100) == b"readonly"
    assert not chain.set_last_byte(1)
    assert chain.writable_views(0, 1) == []


def test_lazy_chain_across_a_region_boundary(pair: Pair) -> None:
    boundary = pair.mem.regions[1].guest_phys_addr
    pair.mem.write(boundary - 3, b"crossing")
    indirect_request(pair, [(boundary - 3, 8, 0), (boundary - 2, 4, VIRTQ_DESC_F_WRITE)])
    chain = pair.device.pop_lazy()
    assert chain is not None
    assert [bytes(v) for v in chain.readable_views(0, 8)] == [b"cro", b"ssing"]
    assert [v.nbytes for v in chain.writable_views(0, 4)] == [2, 2]
    chain.set_last_byte(ord("!"))
    assert pair.mem.read(boundary - 3, 8) == b"cros!ing"  # the writable buffer's last byte


# mostly well-formed tables in Linux's order, so that the shortcut is taken
# as often as the careful walk; some broken in each way the walk checks
table_descriptor = st.tuples(
    st.one_of(
        st.integers(0, MEM_SIZE // 2 - 64),
        st.integers(MEM_SIZE // 2 - 64, MEM_SIZE + 64),
        st.integers(0, 2**64 - 1),
    ),
    st.one_of(st.integers(1, 64), st.integers(0, 2), st.integers(0, 2**32 - 1)),
    st.sampled_from([0, 0, 0, 2, 2, 2, 4, 0x100, 0x102, 0xFFF8, 1]),
    st.one_of(st.none(), st.integers(0, 0xFFFF) | st.integers(0, 9)),
)


@_fuzz
@given(descs=st.lists(table_descriptor, min_size=1, max_size=12), tail=st.integers(0, 3))
def test_fuzz_lazy_chain_agrees_with_pop(
    fuzz_pair: Pair, descs: list[tuple[int, int, int, int | None]], tail: int
) -> None:
    """pop_lazy accepts exactly what pop accepts, with the same error, and sees
    the same bytes: whether it took its shortcut or walked the table."""
    p = fuzz_pair
    table_gpa = MEM_SIZE // 2 + 1024
    table = bytearray()
    for i, (addr, length, flags, nxt) in enumerate(descs):
        # None: Linux's order (NEXT on all but the last, next = i + 1)
        if nxt is None:
            flags |= VIRTQ_DESC_F_NEXT if i < len(descs) - 1 else 0
            nxt = i + 1
        table += DESC.pack(addr, length, flags, nxt)
    table += bytes(16 * tail)  # a table may be longer than its chain
    p.mem.write(table_gpa, table)
    desc_view = p.mem.view(p.driver.desc_gpa, 16 * 8)
    DESC.pack_into(desc_view, 0, table_gpa, len(table), VIRTQ_DESC_F_INDIRECT, 0)
    avail = p.mem.view(p.driver.avail_gpa, 4 + 2 * 8)
    U16.pack_into(avail, 4, 0)
    U16.pack_into(avail, 2, 1)
    results = []
    for lazy in (False, True):
        device = DeviceVirtqueue.from_vring_addr(p.backend_mem, p.driver.vring_addr(0), 8)
        try:
            chain = device.pop_lazy() if lazy else device.pop()
        except VirtqueueError as exc:
            results.append(("error", exc.desc))
            continue
        assert chain is not None
        if isinstance(chain, LazyChain):
            readable = chain.read(0, chain.readable_len)
            writable = sum(v.nbytes for v in chain.writable_views(0, chain.writable_len))
        else:
            readable, writable = chain.read_all(), sum(v.nbytes for v in chain.writable)
        results.append(("chain", chain.readable_len, chain.writable_len, readable, writable))
    assert results[0] == results[1]


@st.composite
def chain_table(draw: st.DrawFn) -> list[tuple[int, int, int, int | None]]:
    """A well-formed chain in Linux's order (readable, then writable, in
    memory), sometimes with one descriptor swapped for an arbitrary one."""
    count = draw(st.integers(1, 12))
    split = draw(st.integers(0, count))
    descs: list[tuple[int, int, int, int | None]] = [
        (
            draw(st.integers(0, MEM_SIZE // 2 - 64)),
            draw(st.integers(1, 64)),
            0 if i < split else VIRTQ_DESC_F_WRITE,
            None,
        )
        for i in range(count)
    ]
    if draw(st.booleans()):
        descs[draw(st.integers(0, count - 1))] = draw(table_descriptor)
    return descs


@_fuzz
@given(
    descs=st.lists(table_descriptor, min_size=1, max_size=12) | chain_table(),
    tail=st.integers(0, 3),
)
def test_fuzz_table_shortcuts_as_the_long_way(
    fuzz_pair: Pair, descs: list[tuple[int, int, int, int | None]], tail: int
) -> None:
    """Every shortcut for indirect tables (two descriptors, a small table in one
    unpack, a longer one without a loop) gives what the walk one by one
    gives: the same descriptors, or the same error."""
    p = fuzz_pair
    table_gpa = MEM_SIZE // 2 + 1024
    table = bytearray()
    for i, (addr, length, flags, nxt) in enumerate(descs):
        if nxt is None:
            flags |= VIRTQ_DESC_F_NEXT if i < len(descs) - 1 else 0
            nxt = i + 1
        table += DESC.pack(addr, length, flags, nxt)
    table += bytes(16 * tail)
    p.mem.write(table_gpa, table)
    desc_view = p.mem.view(p.driver.desc_gpa, 16 * 8)
    DESC.pack_into(desc_view, 0, table_gpa, len(table), VIRTQ_DESC_F_INDIRECT, 0)
    avail = p.mem.view(p.driver.avail_gpa, 4 + 2 * 8)
    U16.pack_into(avail, 4, 0)
    U16.pack_into(avail, 2, 1)
    results: list[object] = []
    for shortcuts in (True, False):
        device = DeviceVirtqueue.from_vring_addr(p.backend_mem, p.driver.vring_addr(0), 8)
        if not shortcuts:
            device._walk_pair = lambda _table: None  # type: ignore[method-assign]
            device._walk_small = lambda _table, _count: None  # type: ignore[method-assign]
            device._walk_table = lambda _table: None  # type: ignore[method-assign]
        try:
            results.append(device._walk(device._take()))
        except VirtqueueError as exc:
            results.append(exc.desc)
    assert results[0] == results[1]


def test_small_table_shortcut_is_taken(pair: Pair) -> None:
    """Linux's five-descriptor crypto request is read in one unpack."""
    header, iv, src = pair.buffer(b"h" * 72), pair.buffer(b"i" * 16), pair.buffer(b"s" * 64)
    dst, status = pair.buffer(64), pair.buffer(1)
    indirect_request(
        pair,
        [
            (header[0], 72, 0),
            (iv[0], 16, 0),
            (src[0], 64, 0),
            (dst[0], 64, VIRTQ_DESC_F_WRITE),
            (status[0], 1, VIRTQ_DESC_F_WRITE),
        ],
    )
    table = pair.device._indirect_table(*_first_table(pair))
    assert pair.device._walk_small(table, 5) == (
        [header[0], iv[0], src[0], dst[0], status[0]],
        [72, 16, 64, 64, 1],
        3,
        5,
        152,
        65,
    )


def _large_table(base: int, count: int = 12) -> list[tuple[int, int, int]]:
    """A chain of ``count`` 8-byte buffers from ``base``, readable then writable:
    more than the small-table shortcut takes."""
    return [(base + 64 * i, 8, 0 if i < count // 2 else VIRTQ_DESC_F_WRITE) for i in range(count)]


def test_large_tables_are_walked_once_while_they_recur(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same table in later requests (each a new copy, as Linux allocates
    them) is not walked again; another table is."""
    walks: list[int] = []
    walk = DeviceVirtqueue._walk_table

    def counted(self: DeviceVirtqueue, table: memoryview) -> object:
        walks.append(len(table))
        return walk(self, table)

    monkeypatch.setattr(DeviceVirtqueue, "_walk_table", counted)
    base = pair.alloc.alloc(64 * 16)
    chains = []
    for descs in (
        _large_table(base),
        _large_table(base),
        _large_table(base + 8),
        _large_table(base),
    ):
        indirect_request(pair, descs)
        chain = pair.device.pop_lazy()
        assert chain is not None
        chains.append((chain.descriptors, chain.readable_len, chain.writable_len))
    assert walks == [16 * 12, 16 * 12]
    assert chains == [((6, 6), 48, 48)] * 4


def test_walked_tables_are_checked_again_when_memory_changes(pair: Pair) -> None:
    """Once the region holding a remembered table's buffers is gone, the same
    table is refused as a queue that never saw it refuses it."""
    region = pair.backend_mem.regions[1]
    descs = _large_table(region.guest_phys_addr + 4096)
    indirect_request(pair, descs)
    assert pair.device.pop_lazy() is not None
    generation = pair.backend_mem.generation
    pair.backend_mem.remove_region(
        region.guest_phys_addr, region.memory_size, region.userspace_addr
    )
    assert pair.backend_mem.generation > generation
    indirect_request(pair, descs)
    fresh = DeviceVirtqueue.from_vring_addr(pair.backend_mem, pair.driver.vring_addr(0), 8)
    fresh.last_avail_idx = pair.device.last_avail_idx
    with pytest.raises(VirtqueueError) as want:
        fresh.pop_lazy()
    with pytest.raises(VirtqueueError) as got:
        pair.device.pop_lazy()
    assert got.value.desc == want.value.desc
    assert "invalid address for buffers" in got.value.desc


# --- wrap-around of the 16-bit indices --------------------------------------------------------


@pytest.mark.parametrize("event_idx", [False, True])
def test_indices_wrap_around(event_idx: bool) -> None:
    p = Pair(event_idx=event_idx)
    try:
        out = [p.buffer(bytes([i]) * 2) for i in range(4)]
        ins = [p.buffer(2) for _ in range(4)]
        kicks = notifies = 0
        for step in range((1 << 16) // 4 + 3):
            for i in range(4):
                p.driver.add([out[i]], [ins[i]], (step, i))
            kicks += p.driver.kick_needed()
            assert serve_reverse(p.device) == 4
            notifies += p.device.should_notify()
            assert p.driver.get_used() == [((step, i), 2) for i in range(4)]
        assert p.device.last_avail_idx == ((1 << 16) + 12) & 0xFFFF == 12
        assert p.device.used_idx == 12
        assert p.mem.read(*ins[3]) == b"\x03\x03"
        # every batch found the other end waiting, through the wrap as well
        assert kicks == notifies == (1 << 16) // 4 + 3
    finally:
        p.close()


def test_device_starts_at_vring_base(pair: Pair, ring: Ring) -> None:
    ring.set(0, ring.data, 4)
    ring.set(1, ring.data, 8)
    U16.pack_into(ring.avail, 4 + 2 * (0xFFFF % 8), 0)
    U16.pack_into(ring.avail, 4, 1)
    U16.pack_into(ring.avail, 2, 1)  # two entries: at 0xffff and at 0 after the wrap
    device = DeviceVirtqueue.from_vring_addr(pair.backend_mem, pair.driver.vring_addr(0), 8, 0xFFFF)
    first, second = device.pop(), device.pop()
    assert first is not None and second is not None
    assert (first.readable_len, second.readable_len) == (4, 8)
    assert device.pop() is None
    assert device.last_avail_idx == 1


# --- notifications --------------------------------------------------------------------------


def test_no_interrupt_and_no_notify_flags(pair: Pair) -> None:
    pair.device.set_notification(False)
    assert U16.unpack_from(pair.mem.view(pair.driver.used_gpa, 2))[0] == VRING_USED_F_NO_NOTIFY
    pair.driver.add([pair.buffer(b"x")], [], 1)
    assert not pair.driver.kick_needed()
    pair.device.set_notification(True)
    pair.driver.add([pair.buffer(b"y")], [], 2)
    assert pair.driver.kick_needed()

    pair.driver.disable_callbacks()
    assert U16.unpack_from(pair.mem.view(pair.driver.avail_gpa, 2))[0] == (
        VRING_AVAIL_F_NO_INTERRUPT
    )
    assert serve_reverse(pair.device) == 2
    assert not pair.device.should_notify()
    # the race check: entries arrived while callbacks were off
    assert pair.driver.enable_callbacks()
    assert pair.device.should_notify()
    assert len(pair.driver.get_used()) == 2
    assert not pair.driver.enable_callbacks()


@pytest.fixture
def event_pair() -> Iterator[Pair]:
    p = Pair(event_idx=True)
    yield p
    p.close()


def used_event(p: Pair) -> int:
    return int(U16.unpack_from(p.mem.view(p.driver.avail_gpa + 4 + 2 * 8, 2))[0])


def avail_event(p: Pair) -> int:
    return int(U16.unpack_from(p.mem.view(p.driver.used_gpa + 4 + 8 * 8, 2))[0])


def set_used_event(p: Pair, value: int) -> None:
    U16.pack_into(p.mem.view(p.driver.avail_gpa + 4 + 2 * 8, 2), 0, value)


def set_avail_event(p: Pair, value: int) -> None:
    U16.pack_into(p.backend_mem.view(p.driver.used_gpa + 4 + 8 * 8, 2), 0, value)


def spec_need_event(event: int, new: int, old: int) -> bool:
    """The virtio specification's vring_need_event, with C's u16 arithmetic."""
    return ((new - event - 1) & 0xFFFF) < ((new - old) & 0xFFFF)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_vring_need_event_is_the_spec_formula(event: int, new: int, old: int) -> None:
    assert vring_need_event(event, new, old) == spec_need_event(event, new, old)


def test_need_event_examples() -> None:
    assert vring_need_event(0, 1, 0)  # the entry the other end waited for
    assert not vring_need_event(5, 3, 0)  # not there yet
    assert vring_need_event(5, 8, 3)  # passed in one batch
    assert not vring_need_event(2, 5, 3)  # passed before this batch
    assert vring_need_event(0xFFFF, 2, 0xFFFE)  # across the wrap


@settings(max_examples=80, deadline=None)
@given(batches=st.lists(st.tuples(st.integers(1, 8), st.integers(0, 0xFFFF)), max_size=12))
def test_device_notifies_by_the_used_event_rule(batches: list[tuple[int, int]]) -> None:
    p = Pair(event_idx=True)
    try:
        buf = p.buffer(b"z")
        signalled: int | None = None
        for count, event in batches:
            for i in range(count):
                p.driver.add([buf], [], i)
            while (chain := p.device.pop()) is not None:
                p.device.push(chain.head, 0)
            p.driver.get_used()
            set_used_event(p, event)  # what a driver chose to wait for
            new = p.device.used_idx
            expected = signalled is None or spec_need_event(event, new, signalled)
            assert p.device.should_notify() == expected
            signalled = new
    finally:
        p.close()


@settings(max_examples=80, deadline=None)
@given(batches=st.lists(st.tuples(st.integers(1, 8), st.integers(0, 0xFFFF)), max_size=12))
def test_driver_kicks_by_the_avail_event_rule(batches: list[tuple[int, int]]) -> None:
    p = Pair(event_idx=True)
    try:
        buf = p.buffer(b"z")
        for count, event in batches:
            set_avail_event(p, event)  # what a device chose to wait for
            old = p.device.last_avail_idx
            for i in range(count):
                p.driver.add([buf], [], i)
            new = (old + count) & 0xFFFF
            assert p.driver.kick_needed() == spec_need_event(event, new, old)
            while (chain := p.device.pop()) is not None:
                p.device.push(chain.head, 0)
            p.driver.get_used()
    finally:
        p.close()


def test_event_idx_fields_follow_the_queues(event_pair: Pair) -> None:
    p = event_pair
    buf = p.buffer(b"q")
    for i in range(3):
        p.driver.add([buf], [], i)
    assert p.driver.kick_needed()  # avail_event 0 was passed
    chain = p.device.pop()
    assert chain is not None
    p.device.push(chain.head, 0)
    assert avail_event(p) == 1  # the device wants a kick for the next entry
    assert not p.driver.kick_needed()  # no adds since the last check
    p.driver.add([buf], [], 3)
    assert not p.driver.kick_needed()  # entry 3 was added, the device waits for 1: passed
    serve_reverse(p.device)
    assert avail_event(p) == 4
    p.device.should_notify()
    p.driver.get_used()
    assert used_event(p) == 4  # the driver wants a call at the next used entry
    p.driver.add([buf], [], 4)
    assert p.driver.kick_needed()
    serve_reverse(p.device)
    assert p.device.should_notify()


def test_event_idx_suppression(event_pair: Pair) -> None:
    p = event_pair
    buf = p.buffer(b"q")
    p.device.set_notification(False)
    for i in range(8):
        p.driver.add([buf], [], i)
        assert not p.driver.kick_needed()
    p.driver.disable_callbacks()
    assert serve_reverse(p.device) == 8
    # the first check after start always notifies; later ones are suppressed
    p.device.should_notify()
    assert p.driver.enable_callbacks()
    p.driver.get_used()
    p.driver.disable_callbacks()
    p.driver.add([buf], [], 9)
    serve_reverse(p.device)
    assert not p.device.should_notify()
    p.device.set_notification(True)
    assert avail_event(p) == 9
    p.driver.add([buf], [], 10)
    assert p.driver.kick_needed()


# --- the driver distrusts the device ----------------------------------------------------------


def bad_used(p: Pair, head: int, length: int, idx: int = 1) -> None:
    used = p.backend_mem.view(p.driver.used_gpa, vring_sizes(8)[2])
    struct.pack_into("<II", used, 4, head, length)
    U16.pack_into(used, 2, idx)


@pytest.mark.parametrize(
    ("head", "length", "idx", "text"),
    [
        (5, 0, 1, "id 5 is not a head"),
        (99, 0, 1, "id 99 is not a head"),
        (None, 3, 1, "used len 3 is larger than in buflen 2"),
        (None, 0, 3, "used index moved from 0 to 3 with 1 requests in flight"),
    ],
)
def test_driver_rejects_a_bad_used_ring(
    pair: Pair, head: int | None, length: int, idx: int, text: str
) -> None:
    real_head = pair.driver.add([pair.buffer(b"x")], [pair.buffer(2)], "victim")
    bad_used(pair, real_head if head is None else head, length, idx)
    with pytest.raises(VirtqueueError, match=f"^virtqueue is broken: {text}$"):
        pair.driver.get_used()
    assert pair.driver.broken == text
    with pytest.raises(VirtqueueError, match="virtqueue is broken"):
        pair.driver.add([pair.buffer(b"x")], [], "later")
    assert pair.driver.detach_all() == ["victim"]
    assert pair.driver.num_free == 8


def test_completions_before_a_bad_entry_are_not_lost(pair: Pair) -> None:
    for token in ("a", "b"):
        pair.driver.add([pair.buffer(b"x")], [], token)
    first = pair.device.pop()
    assert first is not None
    pair.device.push(first.head, 0)
    used = pair.backend_mem.view(pair.driver.used_gpa, vring_sizes(8)[2])
    struct.pack_into("<II", used, 12, 7, 0)
    U16.pack_into(used, 2, 2)
    with pytest.raises(VirtqueueError, match="id 7 is not a head"):
        pair.driver.get_used()
    assert sorted(pair.driver.detach_all()) == ["a", "b"]


def test_detach_all_and_release() -> None:
    p = Pair(indirect=True)
    try:
        p.driver.add([p.buffer(1), p.buffer(1)], [], "pending")
        p.driver.add([p.buffer(1)], [p.buffer(1), p.buffer(1), p.buffer(1), p.buffer(1)], "big")
        assert p.driver.detach_all() == ["pending", "big"]
        assert p.driver.num_free == 8
        assert p.driver.in_flight == 0
        p.driver.release()
        p.driver.release()
        # only the seven 1-byte buffers are still allocated: rings and tables are back
        assert p.alloc.available == MEM_SIZE - 7
        with pytest.raises(VirtqueueError, match="virtqueue is broken: released"):
            p.driver.add([p.buffer(1)], [], "after")
    finally:
        p.close()


def test_device_rejects_bad_used_elements(pair: Pair) -> None:
    with pytest.raises(VirtqueueError, match="Invalid used element: id 8, len 0"):
        pair.device.push(8, 0)
    with pytest.raises(VirtqueueError, match="Invalid used element: id 0, len -1"):
        pair.device.push(0, -1)


def test_rings_that_do_not_fit_take_nothing() -> None:
    with GuestMemory.allocate(PAGE_SIZE) as mem:
        alloc = GuestAllocator(mem)
        DriverVirtqueue(mem, alloc, 64)
        left = alloc.available
        # the descriptor table fits, the rings after it do not
        with pytest.raises(Exception, match="guest memory exhausted"):
            DriverVirtqueue(mem, alloc, 128)
        assert alloc.available == left


def test_has_used_and_the_used_event_race() -> None:
    """An entry returned after the driver read the used index, but before it
    moved used_event, brings no notification: used_since_rearm finds it."""
    p = Pair(event_idx=True)
    try:
        assert not p.driver.has_used()
        for token in ("a", "b"):
            p.driver.add([p.buffer(b"x")], [p.buffer(1)], token)
        first = p.device.pop()
        assert first is not None
        p.device.push(first.head, 1)
        assert p.device.should_notify()
        assert p.driver.has_used()
        # the device returns the second entry while used_event is still 0 ...
        second = p.device.pop()
        assert second is not None
        p.device.push(second.head, 1)
        assert not p.device.should_notify()
        # ... and the driver, having read the index before that, takes one
        # entry; the second brought no call, and the re-check sees it
        used_view = p.driver._used
        struct.pack_into("<H", used_view, 2, 1)
        assert [token for token, _ in p.driver.get_used()] == ["a"]
        struct.pack_into("<H", used_view, 2, 2)
        assert p.driver.used_since_rearm()
        assert [token for token, _ in p.driver.get_used()] == ["b"]
        assert not p.driver.used_since_rearm()
        assert not p.driver.has_used()
        # with callbacks off nobody waits for a call: no re-check needed
        p.driver.disable_callbacks()
        assert not p.driver.used_since_rearm()
    finally:
        p.close()


pair_descriptor = st.tuples(
    st.one_of(st.integers(0, MEM_SIZE + 64), st.sampled_from([MEM_SIZE - 8, 2**64 - 8])),
    st.one_of(st.integers(0, 64), st.sampled_from([MEM_SIZE, 2**32 - 1])),
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 0x100, 0x101, 0xFFFF]),
    st.sampled_from([0, 1, 2, 0xFFFF]),
)


# half the time the shape the shortcut takes (readable with NEXT to 1, then
# readable or writable), with addresses and lengths still anywhere
_pair_shape = st.tuples(
    st.tuples(pair_descriptor.map(lambda d: d[:2]), st.just((VIRTQ_DESC_F_NEXT, 1))),
    st.tuples(pair_descriptor.map(lambda d: d[:2]), st.sampled_from([(0, 0), (2, 7)])),
).map(lambda ds: [(*a, *b) for a, b in ds])


@_fuzz
@given(descs=st.lists(pair_descriptor, min_size=2, max_size=2) | _pair_shape)
def test_fuzz_two_descriptor_tables_as_the_long_way(
    fuzz_pair: Pair, descs: list[tuple[int, int, int, int]]
) -> None:
    """The shortcut for two-descriptor tables gives what the walk one by one gives."""
    p = fuzz_pair
    table_gpa = MEM_SIZE // 2 + 2048
    p.mem.write(table_gpa, b"".join(DESC.pack(*fields) for fields in descs))
    desc_view = p.mem.view(p.driver.desc_gpa, 16 * 8)
    DESC.pack_into(desc_view, 0, table_gpa, 32, VIRTQ_DESC_F_INDIRECT, 0)
    avail = p.mem.view(p.driver.avail_gpa, 4 + 2 * 8)
    U16.pack_into(avail, 4, 0)
    U16.pack_into(avail, 2, 1)
    results: list[object] = []
    lazy: list[object] = []
    for shortcut in (True, False):
        device = DeviceVirtqueue.from_vring_addr(p.backend_mem, p.driver.vring_addr(0), 8)
        if not shortcut:
            device._walk_pair = lambda _table: None  # type: ignore[method-assign]
            device._pair_views = lambda _table: None  # type: ignore[method-assign]
        try:
            results.append(device._walk(device._take()))
        except VirtqueueError as exc:
            results.append(exc.desc)
        device.last_avail_idx = 0
        try:
            chain = device.pop_lazy()
        except VirtqueueError as exc:
            lazy.append(exc.desc)
            continue
        assert chain is not None
        first = chain.first_readable()
        writable = chain.writable_views(3, 40)
        lazy.append(
            (
                chain.readable_len,
                chain.writable_len,
                chain.descriptors,
                None if first is None else (first.nbytes, bytes(first[:8])),
                [v.nbytes for v in writable],
                chain.read(0, 70),
                [v.nbytes for v in chain.writable_views(0, chain.writable_len + 5)],
                chain.writable_views(chain.writable_len, 1),
                _last_byte_lands(chain),
            )
        )
    assert results[0] == results[1]
    assert lazy[0] == lazy[1]


def test_two_descriptor_table_shortcut_is_taken(pair: Pair) -> None:
    src, dst = pair.buffer(b"abcd"), pair.buffer(8)
    indirect_request(pair, [(src[0], 4, 0), (dst[0], 8, VIRTQ_DESC_F_WRITE)])
    assert pair.device._walk_pair(pair.device._indirect_table(*_first_table(pair))) == (
        [src[0], dst[0]],
        [4, 8],
        1,
        2,
        4,
        8,
    )
    chain = pair.device.pop_lazy()
    assert chain is not None and chain.read(0, 4) == b"abcd" and chain.writable_len == 8


def _first_table(p: Pair) -> tuple[int, int]:
    addr, length, _flags, _next = DESC.unpack_from(p.mem.view(p.driver.desc_gpa, 16))
    return addr, length


@pytest.mark.parametrize("indirect", [True, False])
def test_add_two_is_add_of_one_buffer_each_way(indirect: bool) -> None:
    """add_two writes the rings and tables add writes, and the device reads the same."""
    pairs = [Pair(indirect=indirect), Pair(indirect=indirect)]
    try:
        for round_ in range(3):  # tables are reused from round to round
            for use_two, p in zip((False, True), pairs, strict=True):
                for k in range(4):  # 8 descriptors without tables
                    out, in_ = 0x1000 + 64 * k, 0x8000 + 128 * k + round_
                    if use_two:
                        head = p.driver.add_two(out, 48 + k, in_, 17 + k, ("t", k))
                    else:
                        head = p.driver.add(((out, 48 + k),), ((in_, 17 + k),), ("t", k))
                    assert head >= 0
            a, b = pairs
            assert bytes(a.mem.view(a.driver.desc_gpa, 16 * 8)) == bytes(
                b.mem.view(b.driver.desc_gpa, 16 * 8)
            )
            assert bytes(a.mem.view(a.driver.avail_gpa, 4 + 2 * 8)) == bytes(
                b.mem.view(b.driver.avail_gpa, 4 + 2 * 8)
            )
            seen = []
            for p in pairs:
                chains = []
                while (chain := p.device.pop_lazy()) is not None:
                    chains.append(
                        (chain.head, chain.descriptors, chain.readable_len, chain.writable_len)
                    )
                    p.device.push(chain.head, 1)
                seen.append((chains, p.driver.get_used()))
            assert seen[0] == seen[1]
        with pytest.raises(VirtqueueError, match="invalid buffer length 0"):
            pairs[1].driver.add_two(0x1000, 0, 0x2000, 1, None)
    finally:
        for p in pairs:
            p.close()


def _last_byte_lands(chain: LazyChain) -> tuple[bool, int | None]:
    """set_last_byte's answer, and where its byte went (the last writable one);
    the byte it overwrote is put back (a buffer may lie on the rings)."""
    views = chain.writable_views(0, chain.writable_len)
    old = views[-1][-1] if views else 0
    ok = chain.set_last_byte(0xA5)
    if not ok:
        return ok, None
    last = views[-1][-1]
    views[-1][-1] = old
    return ok, last
