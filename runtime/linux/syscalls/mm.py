"""Memory: brk, mmap, munmap, mprotect, mremap, madvise, riscv_flush_icache.

Mappings are made in GuestMemory (page granular, zero-filled); file mappings are copies of
the file's bytes taken at mmap time (private semantics). A shared writable file mapping is
accepted but its writes never reach the file (warned once). Pages past the end of a mapped
file read as zero instead of raising SIGBUS."""

from __future__ import annotations

import os

from dbtlab.runtime.linux.memory import (ADDR_LIMIT, PAGE_MASK, PAGE_SIZE, PROT_EXEC, PROT_READ,
                                   PROT_WRITE, page_align_up)
from dbtlab.runtime.linux.process import Process, SyscallError
from dbtlab.runtime.linux.syscalls.common import E, syscall

PROT_SEM, PROT_GROWSDOWN, PROT_GROWSUP = 0x8, 0x01000000, 0x02000000
MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE, MAP_TYPE = 1, 2, 3, 0xF
MAP_FIXED, MAP_ANONYMOUS, MAP_GROWSDOWN, MAP_DENYWRITE = 0x10, 0x20, 0x100, 0x800
MAP_EXECUTABLE, MAP_LOCKED, MAP_NORESERVE, MAP_POPULATE = 0x1000, 0x2000, 0x4000, 0x8000
MAP_NONBLOCK, MAP_STACK, MAP_HUGETLB, MAP_SYNC = 0x10000, 0x20000, 0x40000, 0x80000
MAP_FIXED_NOREPLACE, MAP_UNINITIALIZED = 0x100000, 0x4000000
MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP = 1, 2, 4

PROT_NAMES = [(PROT_READ, "PROT_READ"), (PROT_WRITE, "PROT_WRITE"), (PROT_EXEC, "PROT_EXEC"),
              (PROT_SEM, "PROT_SEM"), (PROT_GROWSDOWN, "PROT_GROWSDOWN"),
              (PROT_GROWSUP, "PROT_GROWSUP")]
MAP_NAMES = [(MAP_FIXED, "MAP_FIXED"), (MAP_ANONYMOUS, "MAP_ANONYMOUS"),
             (MAP_GROWSDOWN, "MAP_GROWSDOWN"), (MAP_DENYWRITE, "MAP_DENYWRITE"),
             (MAP_EXECUTABLE, "MAP_EXECUTABLE"), (MAP_LOCKED, "MAP_LOCKED"),
             (MAP_NORESERVE, "MAP_NORESERVE"), (MAP_POPULATE, "MAP_POPULATE"),
             (MAP_NONBLOCK, "MAP_NONBLOCK"), (MAP_STACK, "MAP_STACK"),
             (MAP_HUGETLB, "MAP_HUGETLB"), (MAP_SYNC, "MAP_SYNC"),
             (MAP_FIXED_NOREPLACE, "MAP_FIXED_NOREPLACE"),
             (MAP_UNINITIALIZED, "MAP_UNINITIALIZED")]
MAP_TYPE_NAMES = {MAP_SHARED: "MAP_SHARED", MAP_PRIVATE: "MAP_PRIVATE",
                  MAP_SHARED_VALIDATE: "MAP_SHARED_VALIDATE"}


# ---- brk -----------------------------------------------------------------------------------
@syscall(214, "brk", ("addr",), ret="ptr")
def sys_brk(proc: Process, addr: int) -> int:
    """Linux semantics: returns the (new or unchanged) break, never an error."""
    cur = proc.brk
    if addr < proc.brk_start:
        return cur
    old_top, new_top = page_align_up(cur), page_align_up(addr)
    if new_top > old_top:
        size = new_top - old_top
        if new_top > ADDR_LIMIT or not proc.is_free(old_top, size):
            return cur
        proc.mem.map(old_top, size, PROT_READ | PROT_WRITE, "[heap]")
    elif new_top < old_top:
        proc.mem.unmap(new_top, old_top - new_top)
    proc.brk = addr
    return addr


# ---- mmap family ---------------------------------------------------------------------------
def _prot_ok(prot: int) -> int:
    return prot & (PROT_READ | PROT_WRITE | PROT_EXEC)


@syscall(222, "mmap", ("addr", "size", "prot", "mapflags", "fd", "off"), ret="ptr")
def sys_mmap(proc: Process, addr: int, length: int, prot: int, flags: int, fd: int,
             offset: int) -> int:
    if length == 0 or offset & (PAGE_SIZE - 1) or offset < 0:
        raise SyscallError(E.EINVAL)
    kind = flags & MAP_TYPE
    if kind not in (MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE):
        raise SyscallError(E.EINVAL)
    size = page_align_up(length)
    if size > ADDR_LIMIT:
        raise SyscallError(E.ENOMEM)
    data = b""
    name = ""
    if not flags & MAP_ANONYMOUS:
        d = proc.get_fd(fd)
        acc = d.flags & 3
        if acc == 1:                                       # O_WRONLY
            raise SyscallError(E.EACCES)
        if kind != MAP_PRIVATE and prot & PROT_WRITE and acc != 2:
            raise SyscallError(E.EACCES)
        if d.data is not None:
            data = d.data[offset:offset + length]
        elif d.host_fd is not None:
            data = os.pread(d.host_fd, length, offset)
        if kind != MAP_PRIVATE and prot & PROT_WRITE:
            proc.warn_once(("mmap-shared", d.path), "shared writable mapping of %s: guest "
                           "writes will not reach the file", d.path)
        name = d.path
    if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
        if addr & (PAGE_SIZE - 1):
            raise SyscallError(E.EINVAL)
        if addr + size > ADDR_LIMIT:
            raise SyscallError(E.ENOMEM)
        if flags & MAP_FIXED_NOREPLACE and not proc.is_free(addr, size):
            raise SyscallError(E.EEXIST)
        start = addr
    else:
        start = proc.find_free(size, addr)
        if start is None:
            raise SyscallError(E.ENOMEM)
    proc.mem.map(start, size, _prot_ok(prot), name)
    if data:
        proc.mem.poke(start, data)
    return start


@syscall(215, "munmap", ("addr", "size"))
def sys_munmap(proc: Process, addr: int, length: int) -> int:
    if addr & (PAGE_SIZE - 1) or length == 0:
        raise SyscallError(E.EINVAL)
    size = page_align_up(length)
    if addr + size > ADDR_LIMIT:
        raise SyscallError(E.EINVAL)
    proc.mem.unmap(addr, size)
    return 0


@syscall(226, "mprotect", ("addr", "size", "prot"))
def sys_mprotect(proc: Process, addr: int, length: int, prot: int) -> int:
    if addr & (PAGE_SIZE - 1):
        raise SyscallError(E.EINVAL)
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM | PROT_GROWSDOWN | PROT_GROWSUP):
        raise SyscallError(E.EINVAL)
    if length == 0:
        return 0
    size = page_align_up(length)
    if addr + size > ADDR_LIMIT or not proc.mem.is_mapped(addr, size):
        raise SyscallError(E.ENOMEM)
    proc.mem.protect(addr, size, _prot_ok(prot))
    return 0


def _page_prot_runs(proc: Process, addr: int, size: int) -> list[tuple[int, int, int]]:
    """(offset, length, prot) runs of equal permissions in a mapped range."""
    runs: list[list[int]] = []
    for off in range(0, size, PAGE_SIZE):
        prot = proc.mem.pages[(addr + off) >> 12].prot & 7
        if runs and runs[-1][2] == prot:
            runs[-1][1] += PAGE_SIZE
        else:
            runs.append([off, PAGE_SIZE, prot])
    return [tuple(r) for r in runs]


def _move(proc: Process, old: int, old_size: int, new: int, new_size: int,
          keep_old: bool) -> None:
    """Move a mapping: copy the pages' bytes and permissions, extend with zero pages of the
    last page's permissions, then unmap (or, for DONTUNMAP, zero) the old range."""
    mem = proc.mem
    keep = min(old_size, new_size)
    runs = _page_prot_runs(proc, old, keep)
    name = mem.pages[old >> 12].name
    data = mem.peek(old, keep)
    last_prot = runs[-1][2]
    if old_size < new_size:
        runs.append((old_size, new_size - old_size, last_prot))
    mem.map(new, new_size, runs[0][2], name)
    for off, ln, prot in runs[1:]:
        if prot != runs[0][2]:
            mem.protect(new + off, ln, prot)
    mem.poke(new, data)
    old_runs = _page_prot_runs(proc, old, old_size)
    mem.unmap(old, old_size)
    if keep_old:
        mem.map(old, old_size, old_runs[0][2], name)
        for off, ln, prot in old_runs[1:]:
            mem.protect(old + off, ln, prot)


@syscall(216, "mremap", ("addr", "size", "size", "hex", "addr"), ret="ptr")
def sys_mremap(proc: Process, old: int, old_size: int, new_size: int, flags: int,
               new_addr: int) -> int:
    if old & (PAGE_SIZE - 1) or flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP):
        raise SyscallError(E.EINVAL)
    if flags & (MREMAP_FIXED | MREMAP_DONTUNMAP) and not flags & MREMAP_MAYMOVE:
        raise SyscallError(E.EINVAL)
    old_size, new_size = page_align_up(old_size), page_align_up(new_size)
    if new_size == 0 or old_size == 0:
        raise SyscallError(E.EINVAL)       # old_size 0 only duplicates shared mappings
    if flags & MREMAP_DONTUNMAP and old_size != new_size:
        raise SyscallError(E.EINVAL)
    if new_size > ADDR_LIMIT or old + old_size > ADDR_LIMIT:
        raise SyscallError(E.EINVAL)
    if not proc.mem.is_mapped(old, old_size):
        raise SyscallError(E.EFAULT)
    keep_old = bool(flags & MREMAP_DONTUNMAP)
    if flags & MREMAP_FIXED:
        if new_addr & (PAGE_SIZE - 1) or new_addr + new_size > ADDR_LIMIT:
            raise SyscallError(E.EINVAL)
        if new_addr < old + old_size and old < new_addr + new_size:
            raise SyscallError(E.EINVAL)
        _move(proc, old, old_size, new_addr, new_size, keep_old)
        return new_addr
    if new_size <= old_size and not keep_old:
        if new_size < old_size:
            proc.mem.unmap(old + new_size, old_size - new_size)
        return old
    if not keep_old:
        extra = new_size - old_size
        tail = old + old_size
        if tail + extra <= ADDR_LIMIT and proc.is_free(tail, extra):
            last = proc.mem.pages[(tail - PAGE_SIZE) >> 12]
            proc.mem.map(tail, extra, last.prot & 7, last.name)
            return old
    if not flags & MREMAP_MAYMOVE:
        raise SyscallError(E.ENOMEM)
    dst = proc.find_free(new_size)
    if dst is None:
        raise SyscallError(E.ENOMEM)
    _move(proc, old, old_size, dst, new_size, keep_old)
    return dst


MADV_DONTNEED, MADV_FREE, MADV_REMOVE = 4, 8, 9


@syscall(233, "madvise", ("addr", "size", "int"))
def sys_madvise(proc: Process, addr: int, length: int, advice: int) -> int:
    if addr & (PAGE_SIZE - 1) or length >> 63:
        raise SyscallError(E.EINVAL)
    if length == 0:
        return 0
    size = page_align_up(length)
    if not proc.mem.is_mapped(addr, size):
        raise SyscallError(E.ENOMEM)
    if advice in (MADV_DONTNEED, MADV_REMOVE):
        # private anonymous memory reads back as zero after DONTNEED; file-backed pages
        # would show the file again, but ours are copies: zero is the closest
        zero = bytes(PAGE_SIZE)
        for a in range(addr, addr + size, PAGE_SIZE):
            if any(proc.mem.page_bytes(a >> 12)):
                proc.mem.poke(a, zero)
    return 0


@syscall(227, "msync", ("ptr", "size", "int"))
def sys_msync(proc: Process, addr: int, length: int, flags: int) -> int:
    if addr & (PAGE_SIZE - 1) or flags & ~7 or (flags & 1 and flags & 4):
        raise SyscallError(E.EINVAL)
    if length and not proc.mem.is_mapped(addr, page_align_up(length)):
        raise SyscallError(E.ENOMEM)
    return 0


@syscall(228, "mlock", ("ptr", "size"))
def sys_mlock(proc: Process, addr: int, length: int) -> int:
    start = addr & PAGE_MASK
    if length and not proc.mem.is_mapped(start, page_align_up(addr + length) - start):
        raise SyscallError(E.ENOMEM)
    return 0


@syscall(229, "munlock", ("ptr", "size"))
def sys_munlock(proc: Process, addr: int, length: int) -> int:
    return sys_mlock(proc, addr, length)


@syscall(230, "mlockall", ("int",))
def sys_mlockall(proc: Process, flags: int) -> int:
    return 0


@syscall(231, "munlockall", ())
def sys_munlockall(proc: Process) -> int:
    return 0


@syscall(259, "riscv_flush_icache", ("ptr", "ptr", "ulong"))
def sys_riscv_flush_icache(proc: Process, start: int, end: int, flags: int) -> int:
    if flags & ~1:                                # SYS_RISCV_FLUSH_ICACHE_LOCAL
        raise SyscallError(E.EINVAL)
    if proc.icache_flush is not None:
        proc.icache_flush(start, end)
    return 0
