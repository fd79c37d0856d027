"""Guest memory: one guest address space, shared by every accelerator.

The guest's 2**ADDR_BITS bytes of address space are backed by one sparse ``memfd`` that is
mapped twice into the host (QEMU linux-user's "guest_base", with a second view):

* the *guest view* carries the guest's permissions (host ``mprotect``): translated code
  accesses guest address ``a`` at ``guest_base + a`` with no software check at all. An
  access the guest may not make faults in the host; the LLVM accelerator's signal handler
  turns that into a precise guest exit (see ``dbtlab.ir.hostfault``). Pages holding
  translated code are write-protected in this view, so stores to them are caught
  (self-modifying code) exactly as QEMU does with ``page_unprotect``;
* the *host view* is always read-write. Python (the interpreter, the loader, syscalls)
  reads and writes through it after checking the guest permissions itself, and unicorn
  maps it directly (zero copy).

Guest addresses are confined to ``[0, 2**ADDR_BITS)``; anything else faults. No guest
address can reach host memory outside the two views.
"""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterator

from dbtlab.ir.abi import (ADDR_BITS, ADDR_LIMIT, GUARD_SIZE, PAGE_MASK, PAGE_SHIFT,  # noqa: F401
                          PAGE_SIZE, GuestFault)
from dbtlab.ir.state import FAULT_FETCH, FAULT_LOAD, FAULT_STORE  # noqa: F401

log = logging.getLogger(__name__)


PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
PROT_CODE = 8                     # page holds translated code (not a guest permission)
PROT_MASK = PROT_READ | PROT_WRITE | PROT_EXEC

_MAP_SHARED, _MAP_NORESERVE = 0x01, 0x4000
_HOST_NONE, _HOST_READ, _HOST_RW = 0, 1, 3
_MADV_REMOVE = 9

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_MAP_FAILED = ctypes.c_void_p(-1).value


def page_align_up(n: int) -> int:
    return (n + PAGE_SIZE - 1) & PAGE_MASK


def prot_str(p: int) -> str:
    return ("r" if p & PROT_READ else "-") + ("w" if p & PROT_WRITE else "-") + \
        ("x" if p & PROT_EXEC else "-")




@dataclass
class Page:
    """A mapped guest page: its guest permissions (plus PROT_CODE) and mapping name."""

    prot: int
    name: str = ""


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


class GuestMemory:
    """The guest address space."""

    def __init__(self) -> None:
        self.pages: dict[int, Page] = {}
        self._fd = os.memfd_create("dbtlab-guest", getattr(os, "MFD_CLOEXEC", 1))
        os.ftruncate(self._fd, ADDR_LIMIT + GUARD_SIZE)
        self.host_base = _libc.mmap(None, ADDR_LIMIT, _HOST_RW, _MAP_SHARED | _MAP_NORESERVE,
                                    self._fd, 0)
        self.guest_base = _libc.mmap(None, ADDR_LIMIT + GUARD_SIZE, _HOST_NONE,
                                     _MAP_SHARED | _MAP_NORESERVE, self._fd, 0)
        if _MAP_FAILED in (self.host_base, self.guest_base) or None in (self.host_base,
                                                                      self.guest_base):
            raise MemoryError("could not reserve the guest address space")
        self._view = memoryview((ctypes.c_char * ADDR_LIMIT).from_address(self.host_base)
                                ).cast("B")
        #: called with (event, addr, size, prot, host) on map/unmap/protect
        self.map_listeners: list[Callable[[str, int, int, int, int], None]] = []
        #: called with (page_number) when a page holding translated code is written
        self.code_write_listeners: list[Callable[[int], None]] = []
        #: when a set, every page written from Python is added to it (difftest)
        self.write_log: set[int] | None = None
        # one bit per guest page: readable / writable-and-not-code. Second-tier code checks
        # them so that it never faults in the host (one extra zero byte for the guard).
        nbytes = (ADDR_LIMIT >> PAGE_SHIFT) // 8 + 1
        self.read_bits = (ctypes.c_uint8 * nbytes)()
        self.write_bits = (ctypes.c_uint8 * nbytes)()

    # ---- host views ----------------------------------------------------------------------
    def host_address(self, addr: int) -> int:
        """Address of guest ``addr`` in the read-write host view."""
        return self.host_base + addr

    @staticmethod
    def _set_bits(bits, pn: int, n: int, on: bool) -> None:
        """Set or clear bits pn .. pn+n-1 (whole bytes at once where possible)."""
        end = pn + n
        while pn < end and pn & 7:
            bits[pn >> 3] = (bits[pn >> 3] | (1 << (pn & 7))) if on else \
                (bits[pn >> 3] & ~(1 << (pn & 7)))
            pn += 1
        whole = (end - pn) >> 3
        if whole:
            ctypes.memset(ctypes.addressof(bits) + (pn >> 3), 0xFF if on else 0, whole)
            pn += whole << 3
        while pn < end:
            bits[pn >> 3] = (bits[pn >> 3] | (1 << (pn & 7))) if on else \
                (bits[pn >> 3] & ~(1 << (pn & 7)))
            pn += 1

    def _guest_view_protect(self, pn: int, npages: int, prot: int) -> None:
        self._set_bits(self.read_bits, pn, npages, bool(prot & PROT_READ))
        self._set_bits(self.write_bits, pn, npages,
                       bool(prot & PROT_WRITE) and not prot & PROT_CODE)
        host = _HOST_NONE
        if prot & PROT_READ:
            host = _HOST_READ
        if prot & PROT_WRITE and not prot & PROT_CODE:
            host = _HOST_RW           # x86 cannot express write-only: W implies R here
        _check(_libc.mprotect(self.guest_base + (pn << PAGE_SHIFT), npages << PAGE_SHIFT, host),
               "mprotect")

    def _guest_view_sync(self, pns) -> None:
        """Apply the guest permissions of pages to the guest view, in runs."""
        run_start = run_prot = None
        n = 0
        for pn in sorted(pns):
            p = self.pages.get(pn)
            prot = p.prot if p else 0
            if run_start is not None and pn == run_start + n and prot == run_prot:
                n += 1
                continue
            if run_start is not None:
                self._guest_view_protect(run_start, n, run_prot)
            run_start, run_prot, n = pn, prot, 1
        if run_start is not None:
            self._guest_view_protect(run_start, n, run_prot)

    # ---- mapping -------------------------------------------------------------------------
    @staticmethod
    def _check_range(addr: int, size: int) -> None:
        if addr & (PAGE_SIZE - 1) or size <= 0 or size & (PAGE_SIZE - 1):
            raise ValueError(f"unaligned range {addr:#x}+{size:#x}")
        if addr < 0 or addr + size > ADDR_LIMIT:
            raise ValueError(f"range {addr:#x}+{size:#x} outside the guest address space")

    def map(self, addr: int, size: int, prot: int, name: str = "") -> None:
        """Map zero-filled pages (replacing any already there, like MAP_FIXED)."""
        self._check_range(addr, size)
        first, n = addr >> PAGE_SHIFT, size >> PAGE_SHIFT
        if any(pn in self.pages for pn in range(first, first + n)):
            self.unmap(addr, size)
        for pn in range(first, first + n):
            self.pages[pn] = Page(prot & PROT_MASK, name)
        self._guest_view_protect(first, n, prot & PROT_MASK)
        for fn in self.map_listeners:
            fn("map", addr, size, prot & PROT_MASK, self.host_base + addr)

    def unmap(self, addr: int, size: int) -> None:
        """Unmap pages; their contents are discarded (a later map reads zeros)."""
        self._check_range(addr, size)
        first, n = addr >> PAGE_SHIFT, size >> PAGE_SHIFT
        hit = False
        for pn in range(first, first + n):
            p = self.pages.pop(pn, None)
            if p is not None:
                hit = True
                if p.prot & PROT_CODE:
                    self._notify_code(pn)
        if hit:
            self._guest_view_protect(first, n, 0)
            _check(_libc.madvise(self.host_base + addr, size, _MADV_REMOVE), "madvise")
            for fn in self.map_listeners:
                fn("unmap", addr, size, 0, 0)

    def protect(self, addr: int, size: int, prot: int) -> None:
        """Change permissions; every page in the range must be mapped (else KeyError)."""
        self._check_range(addr, size)
        pns = range(addr >> PAGE_SHIFT, (addr + size) >> PAGE_SHIFT)
        if not all(pn in self.pages for pn in pns):
            raise KeyError("unmapped page in range")
        for pn in pns:
            p = self.pages[pn]
            p.prot = (p.prot & PROT_CODE) | (prot & PROT_MASK)
        self._guest_view_sync(pns)
        for fn in self.map_listeners:
            fn("protect", addr, size, prot & PROT_MASK, 0)

    def is_mapped(self, addr: int, size: int) -> bool:
        return all(pn in self.pages for pn in
                   range(addr >> PAGE_SHIFT, (addr + size + PAGE_SIZE - 1) >> PAGE_SHIFT))

    def is_free(self, addr: int, size: int) -> bool:
        if addr < 0 or addr + size > ADDR_LIMIT:
            return False
        return not any(pn in self.pages for pn in
                       range(addr >> PAGE_SHIFT, (addr + size + PAGE_SIZE - 1) >> PAGE_SHIFT))

    def regions(self) -> Iterator[tuple[int, int, int, str, int]]:
        """Maximal runs of pages with equal permissions and name:
        (start, end, prot, name, host address of start)."""
        run = None
        for pn in sorted(self.pages):
            p = self.pages[pn]
            a = pn << PAGE_SHIFT
            if run and run[1] == a and run[2] == p.prot & PROT_MASK and run[3] == p.name:
                run[1] = a + PAGE_SIZE
                continue
            if run:
                yield tuple(run)
            run = [a, a + PAGE_SIZE, p.prot & PROT_MASK, p.name, self.host_base + a]
        if run:
            yield tuple(run)

    # ---- translated-code tracking --------------------------------------------------------
    def mark_code(self, pn: int) -> None:
        """The page now holds translated code: write-protect it in the guest view."""
        p = self.pages.get(pn)
        if p is not None and not p.prot & PROT_CODE:
            p.prot |= PROT_CODE
            if p.prot & PROT_WRITE:
                self._guest_view_protect(pn, 1, p.prot)

    def unmark_code(self, pn: int) -> None:
        p = self.pages.get(pn)
        if p is not None and p.prot & PROT_CODE:
            p.prot &= ~PROT_CODE
            if p.prot & PROT_WRITE:
                self._guest_view_protect(pn, 1, p.prot)

    def _notify_code(self, pn: int) -> None:
        for fn in list(self.code_write_listeners):
            fn(pn)

    # ---- access from Python --------------------------------------------------------------
    def _page(self, addr: int, need: int, kind: int) -> Page:
        p = self.pages.get(addr >> PAGE_SHIFT) if 0 <= addr < ADDR_LIMIT else None
        if p is None or not p.prot & need:
            raise GuestFault(kind, addr)
        return p

    def check(self, addr: int, n: int, need: int, kind: int) -> None:
        """Fault at the first byte of [addr, addr+n) that lacks ``need``."""
        a, end = addr, addr + n
        while a < end:
            self._page(a, need, kind)
            a = (a & PAGE_MASK) + PAGE_SIZE

    def read(self, addr: int, n: int, *, need: int = PROT_READ, kind: int = FAULT_LOAD) -> bytes:
        """Read n bytes; faults at the first byte that may not be read."""
        if n <= 0:
            return b""
        self.check(addr, n, need, kind)
        return bytes(self._view[addr:addr + n])

    def write(self, addr: int, data: bytes) -> None:
        """Write bytes; every page is checked before anything is written."""
        n = len(data)
        if n == 0:
            return
        self.check(addr, n, PROT_WRITE, FAULT_STORE)
        self._view[addr:addr + n] = data
        self._written(addr, n)

    def _written(self, addr: int, n: int) -> None:
        if self.write_log is not None:
            self.write_log.update(range(addr >> PAGE_SHIFT, ((addr + n - 1) >> PAGE_SHIFT) + 1))
        for pn in range(addr >> PAGE_SHIFT, ((addr + n - 1) >> PAGE_SHIFT) + 1):
            p = self.pages.get(pn)
            if p is not None and p.prot & PROT_CODE:
                self._notify_code(pn)

    def load(self, addr: int, size: int) -> int:
        """Unsigned little-endian load of 1, 2, 4 or 8 bytes."""
        p = self.pages.get(addr >> PAGE_SHIFT) if 0 <= addr < ADDR_LIMIT else None
        if p is not None and p.prot & PROT_READ and (addr & (PAGE_SIZE - 1)) + size <= PAGE_SIZE:
            return int.from_bytes(self._view[addr:addr + size], "little")
        return int.from_bytes(self.read(addr, size), "little")

    def store(self, addr: int, size: int, value: int) -> None:
        p = self.pages.get(addr >> PAGE_SHIFT) if 0 <= addr < ADDR_LIMIT else None
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        if p is not None and p.prot & (PROT_WRITE | PROT_CODE) == PROT_WRITE \
                and (addr & (PAGE_SIZE - 1)) + size <= PAGE_SIZE:
            self._view[addr:addr + size] = data
            if self.write_log is not None:
                self.write_log.add(addr >> PAGE_SHIFT)
            return
        self.write(addr, data)

    def load_for_write(self, addr: int, size: int) -> int:
        """Load that needs write permission (the read half of an atomic read-modify-write)."""
        return int.from_bytes(self.read(addr, size, need=PROT_WRITE, kind=FAULT_STORE), "little")

    def fetch(self, addr: int, n: int) -> bytes:
        """Instruction fetch: needs execute permission."""
        return self.read(addr, n, need=PROT_EXEC, kind=FAULT_FETCH)

    def read_cstring(self, addr: int, limit: int = 4096) -> bytes:
        out = bytearray()
        while len(out) < limit:
            self._page(addr, PROT_READ, FAULT_LOAD)
            end = (addr & PAGE_MASK) + PAGE_SIZE
            chunk = bytes(self._view[addr:end])
            z = chunk.find(b"\0")
            if z >= 0:
                out += chunk[:z]
                return bytes(out[:limit])
            out += chunk
            addr = end
        return bytes(out[:limit])

    # ---- privileged access (loader, kernel side) -----------------------------------------
    def poke(self, addr: int, data: bytes) -> None:
        """Write ignoring permissions (the loader filling read-only segments)."""
        if not data:
            return
        if not self.is_mapped(addr, len(data)):
            a = addr
            while a < addr + len(data):
                if (a >> PAGE_SHIFT) not in self.pages:
                    raise GuestFault(FAULT_STORE, max(a, addr))
                a = (a & PAGE_MASK) + PAGE_SIZE
        self._view[addr:addr + len(data)] = data
        self._written(addr, len(data))

    def peek(self, addr: int, n: int) -> bytes:
        """Read ignoring permissions (snapshots, debuggers, messages)."""
        if n <= 0:
            return b""
        a = addr
        while a < addr + n:
            if not 0 <= a < ADDR_LIMIT or (a >> PAGE_SHIFT) not in self.pages:
                raise GuestFault(FAULT_LOAD, max(a, addr))
            a = (a & PAGE_MASK) + PAGE_SIZE
        return bytes(self._view[addr:addr + n])

    def restore_raw(self, addr: int, data: bytes) -> None:
        """Put back bytes a store overwrote (undoing part of a region); the bytes were
        there before, so translations stay valid and no one is notified."""
        self._view[addr:addr + len(data)] = data

    def page_bytes(self, pn: int) -> memoryview:
        if pn not in self.pages:
            raise KeyError(pn)
        return self._view[pn << PAGE_SHIFT:(pn + 1) << PAGE_SHIFT]

    def close(self) -> None:
        """Release the address space (host memory and views)."""
        if self._fd < 0:
            return
        self.pages.clear()
        self._view.release()
        _libc.munmap(self.host_base, ADDR_LIMIT)
        _libc.munmap(self.guest_base, ADDR_LIMIT + GUARD_SIZE)
        os.close(self._fd)
        self._fd = -1

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:   # interpreter shutdown
            pass
