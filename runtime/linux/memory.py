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

Bookkeeping is by range, never by page: the mappings are an interval map (sorted, disjoint
``Mapping`` records — start, end, guest permissions, name, file offset — found by bisection,
split and merged by ``map``, ``unmap`` and ``protect``), and a mapping's permissions reach
the guest view in one host ``mprotect``. So a 64 GiB mapping costs what a 4 KiB one does:
one record, one call, and no host memory until its pages are written (the memfd is sparse).
The pages holding translated code (PROT_CODE) are a set of page numbers beside the map.
``pages`` remains as a read-only per-page view (``mem.pages.get(pn).prot``) for code that
thinks in pages; walking it walks every mapped page.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import logging
import os
from collections.abc import Mapping as Mapping_
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
_COPY_CHUNK = 8 << 20             # file and memory copies go in pieces of at most this

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




@dataclass(frozen=True)
class Page:
    """What one mapped guest page is: its guest permissions (plus PROT_CODE) and its
    mapping's name. A snapshot made on request: change permissions with ``protect``."""

    prot: int
    name: str = ""


_PAGE_RECORDS: dict[tuple[int, str], Page] = {}


def _page_record(prot: int, name: str) -> Page:
    """The (shared, immutable) Page for these permissions and name."""
    p = _PAGE_RECORDS.get((prot, name))
    if p is None:
        if len(_PAGE_RECORDS) > 4096:
            _PAGE_RECORDS.clear()
        p = _PAGE_RECORDS[(prot, name)] = Page(prot, name)
    return p


@dataclass
class Mapping:
    """One record of the interval map: guest addresses [start, end), the guest permissions,
    the name, and for a file mapping the file offset ``start`` shows (None: anonymous)."""

    start: int
    end: int
    prot: int
    name: str = ""
    offset: int | None = None

    @property
    def size(self) -> int:
        return self.end - self.start

    def continued_by(self, other: "Mapping") -> bool:
        """True if ``other`` starts where this ends and is the same kind of mapping (same
        permissions and name, and for file mappings the next file bytes): they merge."""
        if other.start != self.end or other.prot != self.prot or other.name != self.name:
            return False
        if self.offset is None or other.offset is None:
            return self.offset is None and other.offset is None
        return other.offset == self.offset + self.size

    def at(self, addr: int) -> int | None:
        """The file offset guest ``addr`` (inside the mapping) shows, or None."""
        return None if self.offset is None else self.offset + (addr - self.start)


class PageMap(Mapping_):
    """The mapped pages as a read-only mapping page number -> ``Page``, computed from the
    interval map. Lookups cost a bisection; iterating walks every mapped page, so code
    that may meet huge mappings uses ``GuestMemory.mappings()`` or ``regions()``."""

    __slots__ = ("_mem",)

    def __init__(self, mem: "GuestMemory") -> None:
        self._mem = mem

    def get(self, pn, default=None):
        mem = self._mem
        m = mem._find(pn << PAGE_SHIFT) if isinstance(pn, int) and pn >= 0 else None
        if m is None:
            return default
        return _page_record(m.prot | (PROT_CODE if pn in mem._code else 0), m.name)

    def __getitem__(self, pn: int) -> Page:
        p = self.get(pn)
        if p is None:
            raise KeyError(pn)
        return p

    def __contains__(self, pn) -> bool:
        return isinstance(pn, int) and pn >= 0 and self._mem._find(pn << PAGE_SHIFT) is not None

    def __iter__(self) -> Iterator[int]:
        for m in list(self._mem._maps):
            yield from range(m.start >> PAGE_SHIFT, m.end >> PAGE_SHIFT)

    def __len__(self) -> int:
        return self._mem.mapped_size >> PAGE_SHIFT

    def items(self):                                   # one walk, not a lookup per page
        code = self._mem._code
        for m in list(self._mem._maps):
            for pn in range(m.start >> PAGE_SHIFT, m.end >> PAGE_SHIFT):
                yield pn, _page_record(m.prot | (PROT_CODE if pn in code else 0), m.name)

    def values(self):
        return (p for _pn, p in self.items())


def _seek(fd: int, pos: int, whence: int) -> int | None:
    """lseek, None at ENXIO (no data, or no hole, after pos)."""
    try:
        return os.lseek(fd, pos, whence)
    except OSError as e:
        if e.errno == errno.ENXIO:
            return None
        raise


def file_extents(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """The ranges of [start, end) of host file ``fd`` that hold data (SEEK_DATA/SEEK_HOLE;
    holes and the part past the end of the file read as zero). The file position is left
    as it was. A file system without hole support reports everything up to EOF as data."""
    out: list[tuple[int, int]] = []
    if start >= end:
        return out
    saved = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        pos = start
        while pos < end:
            try:
                ds = _seek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                size = os.fstat(fd).st_size
                if min(end, size) > pos:
                    out.append((pos, min(end, size)))
                break
            if ds is None or ds >= end:
                break
            de = _seek(fd, ds, os.SEEK_HOLE)
            de = end if de is None else min(de, end)
            if de <= ds:
                break
            out.append((ds, de))
            pos = de
    finally:
        os.lseek(fd, saved, os.SEEK_SET)
    return out

def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


class GuestMemory:
    """The guest address space."""

    def __init__(self) -> None:
        # the interval map: mapping records sorted by start, and their starts (for bisect)
        self._maps: list[Mapping] = []
        self._starts: list[int] = []
        self._last: Mapping | None = None          # the record the last lookup found
        self._code: set[int] = set()               # pages holding translated code
        #: bytes mapped in all (Linux's total_vm, which RLIMIT_AS limits)
        self.mapped_size = 0
        #: per-page view of the map (page number -> Page); see PageMap
        self.pages = PageMap(self)
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
        # them so that it never faults in the host (one extra zero byte for the guard); the
        # Python fast paths (load, store) read them too.
        nbytes = (ADDR_LIMIT >> PAGE_SHIFT) // 8 + 1
        self.read_bits = (ctypes.c_uint8 * nbytes)()
        self.write_bits = (ctypes.c_uint8 * nbytes)()
        self._rbits = memoryview(self.read_bits).cast("B")
        self._wbits = memoryview(self.write_bits).cast("B")

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
        """Give pages pn .. pn+npages-1 the permissions ``prot`` in the guest view (one
        host mprotect, whatever the size)."""
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

    # ---- the interval map ----------------------------------------------------------------
    def _find(self, addr: int) -> Mapping | None:
        """The mapping holding guest ``addr``, or None."""
        m = self._last
        if m is not None and m.start <= addr < m.end:
            return m
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            m = self._maps[i]
            if addr < m.end:
                self._last = m
                return m
        return None

    def _overlaps(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self._starts, end) - 1    # the last record starting before end
        return i >= 0 and self._maps[i].end > start

    def _split(self, addr: int) -> None:
        """Make ``addr`` a record boundary (split the record that spans it)."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0:
            return
        m = self._maps[i]
        if m.start < addr < m.end:
            self._maps.insert(i + 1, Mapping(addr, m.end, m.prot, m.name, m.at(addr)))
            self._starts.insert(i + 1, addr)
            m.end = addr

    def _carve(self, start: int, end: int) -> tuple[int, int]:
        """Split at start and end; the records inside [start, end) are _maps[i:j]."""
        self._split(start)
        self._split(end)
        self._last = None
        return (bisect.bisect_left(self._starts, start), bisect.bisect_left(self._starts, end))

    def _merge(self, i: int, j: int) -> None:
        """Merge mergeable neighbours among records i-1 .. j."""
        k = max(i - 1, 0)
        last = min(j, len(self._maps) - 1)
        while k < last:
            a, b = self._maps[k], self._maps[k + 1]
            if a.continued_by(b):
                a.end = b.end
                del self._maps[k + 1]
                del self._starts[k + 1]
                last -= 1
            else:
                k += 1
        self._last = None

    def _code_in(self, first: int, end: int) -> list[int]:
        """The code pages among pages first .. end-1, in order."""
        if end - first <= 64:
            return [pn for pn in range(first, end) if pn in self._code]
        return sorted(pn for pn in self._code if first <= pn < end)

    # ---- mapping -------------------------------------------------------------------------
    @staticmethod
    def _check_range(addr: int, size: int) -> None:
        if addr & (PAGE_SIZE - 1) or size <= 0 or size & (PAGE_SIZE - 1):
            raise ValueError(f"unaligned range {addr:#x}+{size:#x}")
        if addr < 0 or addr + size > ADDR_LIMIT:
            raise ValueError(f"range {addr:#x}+{size:#x} outside the guest address space")

    def map(self, addr: int, size: int, prot: int, name: str = "",
            offset: int | None = None) -> None:
        """Map zero-filled pages (replacing any already there, like MAP_FIXED). ``offset``
        records the file offset a file mapping starts at (the caller copies the bytes)."""
        self._check_range(addr, size)
        if self._overlaps(addr, addr + size):
            self.unmap(addr, size)
        prot &= PROT_MASK
        i = bisect.bisect_left(self._starts, addr)
        self._maps.insert(i, Mapping(addr, addr + size, prot, name, offset))
        self._starts.insert(i, addr)
        self._merge(i, i + 1)
        self.mapped_size += size
        self._guest_view_protect(addr >> PAGE_SHIFT, size >> PAGE_SHIFT, prot)
        for fn in self.map_listeners:
            fn("map", addr, size, prot, self.host_base + addr)

    def unmap(self, addr: int, size: int) -> None:
        """Unmap pages; their contents are discarded (a later map reads zeros)."""
        self._check_range(addr, size)
        end = addr + size
        if not self._overlaps(addr, end):
            return
        i, j = self._carve(addr, end)
        gone = self._maps[i:j]
        del self._maps[i:j]
        del self._starts[i:j]
        self.mapped_size -= sum(m.size for m in gone)
        first, n = addr >> PAGE_SHIFT, size >> PAGE_SHIFT
        code = self._code_in(first, first + n)
        for pn in code:
            self._notify_code(pn)
        self._code.difference_update(code)
        self._guest_view_protect(first, n, 0)
        for m in gone:
            _check(_libc.madvise(self.host_base + m.start, m.size, _MADV_REMOVE), "madvise")
        for fn in self.map_listeners:
            fn("unmap", addr, size, 0, 0)

    def protect(self, addr: int, size: int, prot: int) -> None:
        """Change permissions; every page in the range must be mapped (else KeyError)."""
        self._check_range(addr, size)
        if not self.is_mapped(addr, size):
            raise KeyError("unmapped page in range")
        prot &= PROT_MASK
        i, j = self._carve(addr, addr + size)
        for m in self._maps[i:j]:
            m.prot = prot
        self._merge(i, j)
        first, n = addr >> PAGE_SHIFT, size >> PAGE_SHIFT
        self._guest_view_protect(first, n, prot)
        if prot & PROT_WRITE:
            for pn in self._code_in(first, first + n):     # translated code stays protected
                self._guest_view_protect(pn, 1, prot | PROT_CODE)
        for fn in self.map_listeners:
            fn("protect", addr, size, prot, 0)

    def is_mapped(self, addr: int, size: int) -> bool:
        """Every page touching [addr, addr+size) is mapped."""
        a = (addr >> PAGE_SHIFT) << PAGE_SHIFT
        end = (addr + size + PAGE_SIZE - 1) & PAGE_MASK
        while a < end:
            m = self._find(a) if a >= 0 else None
            if m is None:
                return False
            a = m.end
        return True

    def is_free(self, addr: int, size: int) -> bool:
        """No page touching [addr, addr+size) is mapped, and the range is in the address
        space."""
        if addr < 0 or addr + size > ADDR_LIMIT:
            return False
        a = (addr >> PAGE_SHIFT) << PAGE_SHIFT
        end = (addr + size + PAGE_SIZE - 1) & PAGE_MASK
        return a >= end or not self._overlaps(a, end)

    def mappings(self, start: int = 0, end: int = ADDR_LIMIT) -> list[Mapping]:
        """Copies of the mapping records meeting [start, end), clipped to it, in address
        order (adjacent records differ in permissions, name or file offset)."""
        out = []
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        for m in self._maps[i:]:
            if m.start >= end:
                break
            if m.end <= start:
                continue
            lo, hi = max(m.start, start), min(m.end, end)
            out.append(Mapping(lo, hi, m.prot, m.name, m.at(lo)))
        return out

    def regions(self) -> Iterator[tuple[int, int, int, str, int]]:
        """Maximal runs of mapped memory with equal permissions and name:
        (start, end, prot, name, host address of start)."""
        run = None
        for m in list(self._maps):
            if run and run[1] == m.start and run[2] == m.prot and run[3] == m.name:
                run[1] = m.end
                continue
            if run:
                yield tuple(run)
            run = [m.start, m.end, m.prot, m.name, self.host_base + m.start]
        if run:
            yield tuple(run)

    def data_ranges(self, addr: int, size: int) -> list[tuple[int, int]]:
        """The parts of [addr, addr+size) (page-granular) that hold host memory, i.e. were
        ever written since they were mapped: everything else reads as zero. Found in the
        memfd (SEEK_DATA), so a huge, mostly untouched mapping costs a few calls."""
        return file_extents(self._fd, max(addr, 0), min(addr + size, ADDR_LIMIT))

    # ---- translated-code tracking --------------------------------------------------------
    def mark_code(self, pn: int) -> None:
        """The page now holds translated code: write-protect it in the guest view."""
        if pn in self._code:
            return
        m = self._find(pn << PAGE_SHIFT) if pn >= 0 else None
        if m is not None:
            self._code.add(pn)
            if m.prot & PROT_WRITE:
                self._guest_view_protect(pn, 1, m.prot | PROT_CODE)

    def unmark_code(self, pn: int) -> None:
        if pn not in self._code:
            return
        self._code.discard(pn)
        m = self._find(pn << PAGE_SHIFT)
        if m is not None and m.prot & PROT_WRITE:
            self._guest_view_protect(pn, 1, m.prot)

    def _notify_code(self, pn: int) -> None:
        for fn in list(self.code_write_listeners):
            fn(pn)

    # ---- access from Python --------------------------------------------------------------
    def _page(self, addr: int, need: int, kind: int) -> Mapping:
        """The mapping holding addr if it grants ``need``; else a fault at addr."""
        m = self._find(addr) if 0 <= addr < ADDR_LIMIT else None
        if m is None or not m.prot & need:
            raise GuestFault(kind, addr)
        return m

    def check(self, addr: int, n: int, need: int, kind: int) -> None:
        """Fault at the first byte of [addr, addr+n) that lacks ``need``."""
        a, end = addr, addr + n
        while a < end:
            a = self._page(a, need, kind).end

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
        first, end = addr >> PAGE_SHIFT, ((addr + n - 1) >> PAGE_SHIFT) + 1
        if self.write_log is not None:
            self.write_log.update(range(first, end))
        if self._code:
            for pn in self._code_in(first, end):
                self._notify_code(pn)

    def load(self, addr: int, size: int) -> int:
        """Unsigned little-endian load of 1, 2, 4 or 8 bytes."""
        pn = addr >> PAGE_SHIFT
        if 0 <= addr < ADDR_LIMIT and (addr & (PAGE_SIZE - 1)) + size <= PAGE_SIZE \
                and self._rbits[pn >> 3] >> (pn & 7) & 1:
            return int.from_bytes(self._view[addr:addr + size], "little")
        return int.from_bytes(self.read(addr, size), "little")

    def store(self, addr: int, size: int, value: int) -> None:
        pn = addr >> PAGE_SHIFT
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        # the write bit: writable and not holding translated code
        if 0 <= addr < ADDR_LIMIT and (addr & (PAGE_SIZE - 1)) + size <= PAGE_SIZE \
                and self._wbits[pn >> 3] >> (pn & 7) & 1:
            self._view[addr:addr + size] = data
            if self.write_log is not None:
                self.write_log.add(pn)
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
    def _check_mapped(self, addr: int, n: int, kind: int) -> None:
        """Fault (``kind``) at the first byte of [addr, addr+n) that is not mapped."""
        a, end = addr, addr + n
        while a < end:
            m = self._find(a) if 0 <= a < ADDR_LIMIT else None
            if m is None:
                raise GuestFault(kind, a)
            a = m.end

    def poke(self, addr: int, data: bytes) -> None:
        """Write ignoring permissions (the loader filling read-only segments)."""
        if not data:
            return
        self._check_mapped(addr, len(data), FAULT_STORE)
        self._view[addr:addr + len(data)] = data
        self._written(addr, len(data))

    def zero(self, addr: int, size: int) -> None:
        """Zero [addr, addr+size) ignoring permissions. Whole pages are given back to the
        host (one madvise), so zeroing a huge range costs no memory; only pages that held
        data count as written."""
        if size <= 0:
            return
        self._check_mapped(addr, size, FAULT_STORE)
        end = addr + size
        lo, hi = page_align_up(addr), end & PAGE_MASK
        if lo >= hi:
            self.poke(addr, bytes(size))
            return
        if addr < lo:
            self.poke(addr, bytes(lo - addr))
        if self.write_log is not None or self._code:
            for a, b in self.data_ranges(lo, hi - lo):
                self._written(a, b - a)
        _check(_libc.madvise(self.host_base + lo, hi - lo, _MADV_REMOVE), "madvise")
        if hi < end:
            self.poke(hi, bytes(end - hi))

    def poke_file(self, addr: int, fd: int, offset: int, length: int) -> int:
        """Copy ``length`` bytes of host file ``fd`` from ``offset`` to guest ``addr``,
        ignoring permissions, straight into guest memory in bounded chunks (no copy of the
        file in Python). Only the file's data is copied: holes and whatever lies past the
        end of the file are skipped, so the destination must already read as zero (a fresh
        mapping, or ``zero`` first). Returns the bytes of file data copied; host errors
        raise OSError."""
        if length <= 0:
            return 0
        self._check_mapped(addr, length, FAULT_STORE)
        done = 0
        for ds, de in file_extents(fd, offset, offset + length):
            pos = ds
            while pos < de:
                n = min(_COPY_CHUNK, de - pos)
                dst = addr + (pos - offset)
                got = os.preadv(fd, [self._view[dst:dst + n]], pos)
                if got <= 0:                  # the file shrank meanwhile: the rest is zero
                    return done
                self._written(dst, got)
                done += got
                pos += got
        return done

    def copy_within(self, src: int, dst: int, size: int) -> None:
        """Copy guest memory [src, src+size) to dst ignoring permissions (mremap). Only the
        source's written parts are copied: the destination must already read as zero."""
        self._check_mapped(src, size, FAULT_LOAD)
        self._check_mapped(dst, size, FAULT_STORE)
        for a, b in self.data_ranges(src, size):
            pos = a
            while pos < b:
                n = min(_COPY_CHUNK, b - pos)
                d = dst + (pos - src)
                self._view[d:d + n] = self._view[pos:pos + n]
                self._written(d, n)
                pos += n

    def peek(self, addr: int, n: int) -> bytes:
        """Read ignoring permissions (snapshots, debuggers, messages)."""
        if n <= 0:
            return b""
        self._check_mapped(addr, n, FAULT_LOAD)
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
        self._maps.clear()
        self._starts.clear()
        self._code.clear()
        self._last = None
        self.mapped_size = 0
        self._rbits.release()
        self._wbits.release()
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
