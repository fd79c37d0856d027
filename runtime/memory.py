"""Guest memory: pages of host memory with guest permissions, shared by every accelerator.

Guest pages live in anonymous host mappings made with libc ``mmap``; a guest page maps to
exactly one host page. Three views of the same bytes exist:

* Python (interpreter, loader, syscalls) goes through ``read``/``write``/``load``/``store``,
  which check permissions and raise ``GuestFault`` like the hardware would;
* translated code walks a native two-level page table (``page_table_address``) whose
  entries are ``host_page | perms``, through a TLB the LLVM accelerator keeps;
* unicorn maps the very same host pages with ``mem_map_ptr`` (zero copy).

Guest addresses are confined to ``[0, 2**ADDR_BITS)``; any address outside, unmapped, or
without the needed permission faults. No guest address can reach host memory outside the
guest's own pages.

Pages holding translated code carry the CODE bit: writes to them (from Python or from
translated code, which never gets a write-TLB entry for them) notify the code listeners so
translations can be invalidated.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap as _mmap
from dataclasses import dataclass
from typing import Callable, Iterator

log = logging.getLogger(__name__)

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)
ADDR_BITS = 38                    # Sv39 user half: guest addresses are below 2**38
ADDR_LIMIT = 1 << ADDR_BITS
L2_BITS = 13
L1_BITS = ADDR_BITS - PAGE_SHIFT - L2_BITS
L1_SIZE = 1 << L1_BITS
L2_SIZE = 1 << L2_BITS

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
PROT_CODE = 8                     # page holds translated code (not a guest permission)
PROT_MASK = PROT_READ | PROT_WRITE | PROT_EXEC

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


def page_align_up(n: int) -> int:
    return (n + PAGE_SIZE - 1) & PAGE_MASK


def prot_str(p: int) -> str:
    return ("r" if p & PROT_READ else "-") + ("w" if p & PROT_WRITE else "-") + \
        ("x" if p & PROT_EXEC else "-")


class GuestFault(Exception):
    """A guest access the hardware would refuse. ``kind`` is a FAULT_* from ir.state."""

    def __init__(self, kind: int, addr: int) -> None:
        super().__init__(kind, addr)
        self.kind = kind
        self.addr = addr


# fault kinds, mirrored from dbtlab.ir.state to keep this module free of ir imports
FAULT_LOAD, FAULT_STORE, FAULT_FETCH = 1, 2, 3


class HostBlock:
    """One anonymous host mapping backing a run of guest pages; freed when none is left."""

    __slots__ = ("addr", "size", "view", "live")

    def __init__(self, size: int) -> None:
        addr = _libc.mmap(None, size, _mmap.PROT_READ | _mmap.PROT_WRITE,
                          _mmap.MAP_PRIVATE | _mmap.MAP_ANONYMOUS | getattr(_mmap, "MAP_NORESERVE", 0),
                          -1, 0)
        if addr in (None, _MAP_FAILED):
            raise MemoryError(f"host mmap of {size} bytes failed (errno {ctypes.get_errno()})")
        self.addr = addr
        self.size = size
        self.view = memoryview((ctypes.c_char * size).from_address(addr)).cast("B")
        self.live = size // PAGE_SIZE

    def release_page(self) -> None:
        self.live -= 1
        if self.live == 0:
            self.view.release()
            _libc.munmap(self.addr, self.size)
            self.addr = 0


@dataclass
class Page:
    """A mapped guest page: where its bytes are on the host, and its permissions."""

    block: HostBlock
    offset: int        # byte offset of the page within block
    prot: int
    name: str = ""

    @property
    def host(self) -> int:
        return self.block.addr + self.offset


class GuestMemory:
    """The guest address space."""

    def __init__(self) -> None:
        self.pages: dict[int, Page] = {}
        self._l1 = (ctypes.c_uint64 * L1_SIZE)()
        self._l2: dict[int, ctypes.Array] = {}
        #: called with (event, addr, size, prot, host) on map/unmap/protect
        self.map_listeners: list[Callable[[str, int, int, int, int], None]] = []
        #: called with (page_number) when a page holding translated code is written
        self.code_write_listeners: list[Callable[[int], None]] = []

    # ---- native page table ---------------------------------------------------------------
    @property
    def page_table_address(self) -> int:
        return ctypes.addressof(self._l1)

    def _pt_set(self, pn: int, entry: int) -> None:
        i1, i2 = pn >> L2_BITS, pn & (L2_SIZE - 1)
        l2 = self._l2.get(i1)
        if l2 is None:
            if not entry:
                return
            l2 = self._l2[i1] = (ctypes.c_uint64 * L2_SIZE)()
            self._l1[i1] = ctypes.addressof(l2)
        l2[i2] = entry

    def _pt_sync(self, pn: int) -> None:
        p = self.pages.get(pn)
        self._pt_set(pn, (p.host | p.prot) if p else 0)

    def pt_entry(self, pn: int) -> int:
        l2 = self._l2.get(pn >> L2_BITS)
        return l2[pn & (L2_SIZE - 1)] if l2 is not None else 0

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
        if any(pn in self.pages for pn in range(addr >> PAGE_SHIFT, (addr + size) >> PAGE_SHIFT)):
            self.unmap(addr, size)
        block = HostBlock(size)
        for k in range(size >> PAGE_SHIFT):
            pn = (addr >> PAGE_SHIFT) + k
            self.pages[pn] = Page(block, k << PAGE_SHIFT, prot & PROT_MASK, name)
            self._pt_sync(pn)
        for fn in self.map_listeners:
            fn("map", addr, size, prot & PROT_MASK, block.addr)

    def unmap(self, addr: int, size: int) -> None:
        self._check_range(addr, size)
        hit = False
        for pn in range(addr >> PAGE_SHIFT, (addr + size) >> PAGE_SHIFT):
            p = self.pages.pop(pn, None)
            if p is not None:
                hit = True
                if p.prot & PROT_CODE:
                    self._notify_code(pn)
                self._pt_set(pn, 0)
                p.block.release_page()
        if hit:
            for fn in self.map_listeners:
                fn("unmap", addr, size, 0, 0)

    def protect(self, addr: int, size: int, prot: int) -> None:
        """Change permissions; every page in the range must be mapped (else ENOMEM)."""
        self._check_range(addr, size)
        pns = range(addr >> PAGE_SHIFT, (addr + size) >> PAGE_SHIFT)
        if not all(pn in self.pages for pn in pns):
            raise KeyError("unmapped page in range")
        for pn in pns:
            p = self.pages[pn]
            p.prot = (p.prot & PROT_CODE) | (prot & PROT_MASK)
            self._pt_sync(pn)
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
        """Maximal runs of pages with equal permissions, name and contiguous host memory:
        (start, end, prot, name, host_addr)."""
        run = None
        for pn in sorted(self.pages):
            p = self.pages[pn]
            a = pn << PAGE_SHIFT
            if run and run[1] == a and run[2] == p.prot & PROT_MASK and run[3] == p.name \
                    and run[4] + (a - run[0]) == p.host:
                run[1] = a + PAGE_SIZE
                continue
            if run:
                yield tuple(run)
            run = [a, a + PAGE_SIZE, p.prot & PROT_MASK, p.name, p.host]
        if run:
            yield tuple(run)

    # ---- translated-code tracking --------------------------------------------------------
    def mark_code(self, pn: int) -> None:
        p = self.pages.get(pn)
        if p is not None and not p.prot & PROT_CODE:
            p.prot |= PROT_CODE
            self._pt_sync(pn)

    def unmark_code(self, pn: int) -> None:
        p = self.pages.get(pn)
        if p is not None and p.prot & PROT_CODE:
            p.prot &= ~PROT_CODE
            self._pt_sync(pn)

    def _notify_code(self, pn: int) -> None:
        for fn in self.code_write_listeners:
            fn(pn)

    # ---- access from Python --------------------------------------------------------------
    def _page(self, addr: int, need: int, kind: int) -> Page:
        p = self.pages.get(addr >> PAGE_SHIFT) if 0 <= addr < ADDR_LIMIT else None
        if p is None or not p.prot & need:
            raise GuestFault(kind, addr)
        return p

    def read(self, addr: int, n: int, *, need: int = PROT_READ, kind: int = FAULT_LOAD) -> bytes:
        """Read n bytes; faults at the first byte that may not be read."""
        out = bytearray()
        while n > 0:
            p = self._page(addr, need, kind)
            off = addr & (PAGE_SIZE - 1)
            k = min(n, PAGE_SIZE - off)
            o = p.offset + off
            out += p.block.view[o:o + k]
            addr += k
            n -= k
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        """Write bytes; every page is checked before anything is written."""
        n = len(data)
        a = addr
        pages = []
        while n > 0:
            p = self._page(a, PROT_WRITE, FAULT_STORE)
            off = a & (PAGE_SIZE - 1)
            k = min(n, PAGE_SIZE - off)
            pages.append((p, off, k, a))
            a += k
            n -= k
        pos = 0
        for p, off, k, a in pages:
            o = p.offset + off
            p.block.view[o:o + k] = data[pos:pos + k]
            pos += k
            if p.prot & PROT_CODE:
                self._notify_code(a >> PAGE_SHIFT)

    def load(self, addr: int, size: int) -> int:
        """Unsigned little-endian load of 1, 2, 4 or 8 bytes."""
        p = self.pages.get(addr >> PAGE_SHIFT) if 0 <= addr < ADDR_LIMIT else None
        off = addr & (PAGE_SIZE - 1)
        if p is not None and p.prot & PROT_READ and off + size <= PAGE_SIZE:
            o = p.offset + off
            return int.from_bytes(p.block.view[o:o + size], "little")
        return int.from_bytes(self.read(addr, size), "little")

    def store(self, addr: int, size: int, value: int) -> None:
        p = self.pages.get(addr >> PAGE_SHIFT) if 0 <= addr < ADDR_LIMIT else None
        off = addr & (PAGE_SIZE - 1)
        if p is not None and p.prot & (PROT_WRITE | PROT_CODE) == PROT_WRITE \
                and off + size <= PAGE_SIZE:
            o = p.offset + off
            p.block.view[o:o + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
            return
        self.write(addr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def load_for_write(self, addr: int, size: int) -> int:
        """Load that needs write permission (the read half of an atomic read-modify-write)."""
        return int.from_bytes(self.read(addr, size, need=PROT_WRITE, kind=FAULT_STORE), "little")

    def fetch(self, addr: int, n: int) -> bytes:
        """Instruction fetch: needs execute permission."""
        return self.read(addr, n, need=PROT_EXEC, kind=FAULT_FETCH)

    def read_cstring(self, addr: int, limit: int = 4096) -> bytes:
        out = bytearray()
        while len(out) < limit:
            p = self._page(addr, PROT_READ, FAULT_LOAD)
            off = addr & (PAGE_SIZE - 1)
            chunk = bytes(p.block.view[p.offset + off:p.offset + PAGE_SIZE])
            z = chunk.find(b"\0")
            if z >= 0:
                out += chunk[:z]
                return bytes(out[:limit])
            out += chunk
            addr += len(chunk)
        return bytes(out[:limit])

    # ---- privileged access (loader, kernel side) -----------------------------------------
    def poke(self, addr: int, data: bytes) -> None:
        """Write ignoring permissions (the loader filling read-only segments)."""
        pos = 0
        while pos < len(data):
            p = self.pages.get(addr >> PAGE_SHIFT)
            if p is None:
                raise GuestFault(FAULT_STORE, addr)
            off = addr & (PAGE_SIZE - 1)
            k = min(len(data) - pos, PAGE_SIZE - off)
            p.block.view[p.offset + off:p.offset + off + k] = data[pos:pos + k]
            if p.prot & PROT_CODE:
                self._notify_code(addr >> PAGE_SHIFT)
            pos += k
            addr += k

    def peek(self, addr: int, n: int) -> bytes:
        """Read ignoring permissions (snapshots, debuggers)."""
        return self.read(addr, n, need=PROT_MASK | PROT_CODE)

    def page_bytes(self, pn: int) -> memoryview:
        p = self.pages[pn]
        return p.block.view[p.offset:p.offset + PAGE_SIZE]

    def close(self) -> None:
        """Unmap everything (host memory is returned)."""
        for pn in list(self.pages):
            p = self.pages.pop(pn)
            p.block.release_page()
        self._l2.clear()
        ctypes.memset(self._l1, 0, ctypes.sizeof(self._l1))
