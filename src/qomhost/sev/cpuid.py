"""The host's CPUID, as QEMU's ``host_cpuid()`` reads it.

QEMU runs the ``cpuid`` instruction itself; so does this module, from a page
of machine code mapped executable (Python has no other way to run one
instruction). If the page cannot be mapped (a hardened kernel refusing
``PROT_EXEC``), ``/dev/cpu/0/cpuid`` is read instead, and on hosts that are
not x86-64 every register reads 0, which is what CPUID reports for SEV on a
CPU without it.
"""

from __future__ import annotations

import ctypes
import os
import struct

__all__ = ["host_cpuid", "sev_cbitpos", "sev_reduced_phys_bits"]

# void cpuid(uint32_t leaf, uint32_t subleaf, uint32_t out[4]), System V ABI:
#   push rbx; mov r8, rdx; mov eax, edi; mov ecx, esi; cpuid;
#   mov [r8], eax; mov [r8+4], ebx; mov [r8+8], ecx; mov [r8+12], edx;
#   pop rbx; ret
_CODE = bytes.fromhex("53 4989d0 89f8 89f1 0fa2 418900 41895804 41894808 4189500c 5b c3")

_func: object = None


def _load() -> object:
    """The callable machine code, or ``False`` when it cannot be mapped."""
    global _func
    if _func is None:
        import mmap

        try:
            page = mmap.mmap(
                -1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
            )
        except (OSError, ValueError):
            _func = False
            return _func
        page.write(_CODE)
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        proto = ctypes.CFUNCTYPE(
            None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)
        )
        func = proto(address)
        # The mapping must live as long as the function.
        func._page = page  # type: ignore[attr-defined]
        _func = func
    return _func


def host_cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
    """``(eax, ebx, ecx, edx)`` of CPUID ``leaf``/``subleaf`` on this CPU."""
    if os.uname().machine not in ("x86_64", "amd64", "AMD64"):
        return 0, 0, 0, 0
    func = _load()
    if func is not False:
        out = (ctypes.c_uint32 * 4)()
        func(leaf, subleaf, out)  # type: ignore[operator]
        return out[0], out[1], out[2], out[3]
    # The cpuid driver answers a read at offset (subleaf << 32 | leaf).
    try:
        fd = os.open("/dev/cpu/0/cpuid", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return 0, 0, 0, 0
    try:
        data = os.pread(fd, 16, (subleaf << 32) | leaf)
    finally:
        os.close(fd)
    eax, ebx, ecx, edx = struct.unpack("<4I", data)
    return eax, ebx, ecx, edx


def sev_cbitpos() -> int:
    """The C-bit position, CPUID 0x8000001F EBX[5:0] (0 without SEV)."""
    return host_cpuid(0x8000001F)[1] & 0x3F


def sev_reduced_phys_bits() -> int:
    """The physical-address reduction, CPUID 0x8000001F EBX[11:6]."""
    return (host_cpuid(0x8000001F)[1] >> 6) & 0x3F
