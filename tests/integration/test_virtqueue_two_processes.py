"""A split virtqueue driven from two processes at once, as a frontend and a backend drive it.

The driver's end runs here and the device's end in a child process on its
own mapping of the same memfd, both as fast as they can, so each end
reads the indices the other is storing at that very moment. Every 16-bit
index store must be one store: ``struct.pack_into`` clears its target
before it writes, and the device then now and then read an available
index of 0 ("Guest moved used index from N to 0", which made
``qomhost-vhost-user-crypto`` drop its frontend mid-run) and the driver a
used index of 0. With the stores of the ``flags`` case below, one end or
the other saw it within two seconds, run after run; with single stores
neither ever does.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from qomhost.vhost_user.memory import GuestAllocator, GuestMemory
from qomhost.vhost_user.virtqueue import DriverVirtqueue, VirtqueueError, VirtqueueFull

SECONDS = 2.0
NUM = 256

# The device: pop and return every chain at once until the driver raises the
# stop word; print how many it served, or the error that broke the ring.
DEVICE = """
import sys
from qomhost.vhost_user.memory import GuestMemory
from qomhost.vhost_user.protocol import MemoryRegion, MemTable
from qomhost.vhost_user.virtqueue import DeviceVirtqueue, VirtqueueError

fd, size, uva, num, desc, avail, used, event_idx, stop = (int(a) for a in sys.argv[1:])
mem = GuestMemory.map_table(MemTable((MemoryRegion(0, size, uva, 0, fd),)))
queue = DeviceVirtqueue(mem, num, desc, avail, used, event_idx=bool(event_idx))
flag = mem.view(stop, 8).cast("Q")
served = 0
try:
    while True:
        chain = queue.pop()
        if chain is None:
            if flag[0]:
                break
            queue.set_notification(served & 1 == 0)
            continue
        queue.push(chain.head, chain.writable_len)
        queue.should_notify()
        served += 1
except VirtqueueError as exc:
    print(f"device: {exc.desc} after {served} requests")
    sys.exit(1)
print(served)
"""


@pytest.mark.parametrize("event_idx", [False, True], ids=["flags", "event-idx"])
def test_indices_are_never_seen_half_written(event_idx: bool) -> None:
    with GuestMemory.allocate(1 << 20, name="qomhost-test-vq") as mem:
        alloc = GuestAllocator(mem)
        driver = DriverVirtqueue(mem, alloc, NUM, event_idx=event_idx)
        stop = alloc.alloc(8, 8)
        buf = alloc.alloc(64)
        region = mem.regions[0]
        args = [
            region.fd,
            region.memory_size,
            region.userspace_addr,
            NUM,
            driver.desc_uva,
            driver.avail_uva,
            driver.used_uva,
            int(event_idx),
            stop,
        ]
        child = subprocess.Popen(
            [sys.executable, "-c", DEVICE, *map(str, args)],
            pass_fds=(region.fd,),
            stdout=subprocess.PIPE,
            text=True,
        )
        completed = 0
        error = None
        try:
            deadline = time.monotonic() + SECONDS
            while time.monotonic() < deadline:
                try:
                    while True:
                        driver.add([(buf, 16)], [(buf + 16, 16)], None)
                except VirtqueueFull:
                    pass
                driver.kick_needed()
                completed += len(driver.get_used())
                if completed & 1:
                    driver.disable_callbacks()
                else:
                    driver.enable_callbacks()
        except VirtqueueError as exc:
            error = f"driver: {exc.desc} after {completed} requests"
        finally:
            mem.view(stop, 8).cast("Q")[0] = 1
            out, _ = child.communicate(timeout=30)
        assert error is None
        assert child.returncode == 0, out
        served = int(out)
        # the device really worked along, many times round the 16-bit indices
        assert served >= completed > 10_000
