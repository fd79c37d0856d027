"""Memory: brk, mmap, munmap, mprotect, mremap, madvise, riscv_flush_icache.

Mappings are made in GuestMemory (page granular, zero-filled, bookkept by range: their size
costs nothing until pages are written). File mappings are copies of the file's bytes taken
at mmap time (private semantics), made straight into guest memory and only where the file
has data (holes and the part past its end stay zero, untouched), so mapping a huge sparse
file is cheap. A shared writable file mapping is accepted but its writes never reach the
file (warned once). Pages past the end of a mapped file read as zero instead of raising
SIGBUS. ``/dev/zero`` maps as anonymous memory; other devices, FIFOs, sockets and
directories cannot be mapped (ENODEV, as Linux).

Limits are Linux's: a mapping must fit in the 2**38-byte address space, and the mapped total
may not exceed RLIMIT_AS (unlimited by default; the guest sets it with setrlimit/prlimit64).
Failures are ENOMEM, and a brk that cannot grow returns the old break, as the kernel's does.
A file mapping whose data would not fit in the host's available memory is ENOMEM too (the
copy is real memory; Linux's overcommit check refuses such mappings the same way)."""

from __future__ import annotations

import os
import stat

from dbtlab.runtime.linux.memory import (ADDR_LIMIT, PAGE_MASK, PAGE_SIZE, PROT_EXEC, PROT_READ,
                                   PROT_WRITE, file_extents, page_align_up)
from dbtlab.runtime.linux.process import RLIM_INFINITY, RLIMIT_AS, Process, SyscallError
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


# ---- limits --------------------------------------------------------------------------------
def _may_expand(proc: Process, grow: int) -> bool:
    """Linux's may_expand_vm: the mapped total may grow by ``grow`` bytes under RLIMIT_AS."""
    limit = proc.rlimits.get(RLIMIT_AS, (RLIM_INFINITY, RLIM_INFINITY))[0]
    return limit == RLIM_INFINITY or proc.mem.mapped_size + grow <= limit


def _mapped_in(proc: Process, addr: int, size: int) -> int:
    """Bytes of [addr, addr+size) already mapped (a MAP_FIXED mapping replaces them)."""
    return sum(m.size for m in proc.mem.mappings(addr, addr + size))


def _host_available() -> int | None:
    """The host's MemAvailable in bytes (None if unknown)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# ---- brk -----------------------------------------------------------------------------------
@syscall(214, "brk", ("addr",), ret="ptr")
def sys_brk(proc: Process, addr: int) -> int:
    """Linux semantics: returns the (new or unchanged) break, never an error: a break that
    cannot move (no room, RLIMIT_AS) stays where it was."""
    cur = proc.brk
    if addr < proc.brk_start:
        return cur
    old_top, new_top = page_align_up(cur), page_align_up(addr)
    if new_top > old_top:
        size = new_top - old_top
        if new_top > ADDR_LIMIT or not proc.is_free(old_top, size) \
                or not _may_expand(proc, size):
            return cur
        proc.mem.map(old_top, size, PROT_READ | PROT_WRITE, "[heap]")
    elif new_top < old_top:
        proc.mem.unmap(new_top, old_top - new_top)
    proc.brk = addr
    return addr


# ---- mmap family ---------------------------------------------------------------------------
def _prot_ok(prot: int) -> int:
    return prot & (PROT_READ | PROT_WRITE | PROT_EXEC)


_DEV_ZERO = os.makedev(1, 5)


def _file_source(proc: Process, fd: int, kind: int, prot: int, offset: int, length: int):
    """What a file mapping shows: ("data", bytes) for a synthesized file, ("file", host fd,
    data bytes to copy) for a regular file, ("zero",) for /dev/zero. Raises EBADF, EACCES,
    ENODEV (not mappable) and ENOMEM (the copy would not fit in the host's memory)."""
    d = proc.get_fd(fd)
    acc = d.flags & 3
    if acc == 1:                                       # O_WRONLY
        raise SyscallError(E.EACCES)
    if kind != MAP_PRIVATE and prot & PROT_WRITE and acc != 2:
        raise SyscallError(E.EACCES)
    if d.is_dir or getattr(d, "special", "") == "dir":
        raise SyscallError(E.ENODEV)
    if kind != MAP_PRIVATE and prot & PROT_WRITE:
        proc.warn_once(("mmap-shared", d.path), "shared writable mapping of %s: guest "
                       "writes will not reach the file", d.path)
    if d.data is not None:
        return ("data", d.data[offset:offset + length])
    if d.host_fd is None:
        return ("zero",)
    st = os.fstat(d.host_fd)
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == _DEV_ZERO:
        return ("zero",)
    if not stat.S_ISREG(st.st_mode):
        raise SyscallError(E.ENODEV)
    if st.st_size == 0:                 # a pseudo-file (procfs): its size says nothing
        return ("stream", d.host_fd)
    end = min(offset + length, st.st_size)
    data = sum(b - a for a, b in file_extents(d.host_fd, offset, end)) if end > offset else 0
    avail = _host_available()
    if avail is not None and data > avail:
        raise SyscallError(E.ENOMEM)
    return ("file", d.host_fd, data)


def _fill(proc: Process, start: int, source, offset: int, length: int) -> None:
    """Put a file mapping's bytes in place (the mapping is fresh: it reads as zero)."""
    mem = proc.mem
    if source[0] == "data":
        mem.poke(start, source[1])
    elif source[0] == "file":
        mem.poke_file(start, source[1], offset, length)
    elif source[0] == "stream":                        # read until EOF, a MiB at a time
        pos = 0
        while pos < length:
            chunk = os.pread(source[1], min(1 << 20, length - pos), offset + pos)
            if not chunk:
                break
            mem.poke(start + pos, chunk)
            pos += len(chunk)


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
    source = ("zero",)
    name = ""
    if not flags & MAP_ANONYMOUS:
        source = _file_source(proc, fd, kind, prot, offset, length)
        name = proc.get_fd(fd).path
    if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
        if addr & (PAGE_SIZE - 1):
            raise SyscallError(E.EINVAL)
        if addr + size > ADDR_LIMIT:
            raise SyscallError(E.ENOMEM)
        if flags & MAP_FIXED_NOREPLACE and not proc.is_free(addr, size):
            raise SyscallError(E.EEXIST)
        start = addr
        replaced = _mapped_in(proc, start, size)
    else:
        start = proc.find_free(size, addr)
        if start is None:
            raise SyscallError(E.ENOMEM)
        replaced = 0
    if not _may_expand(proc, size - replaced):
        raise SyscallError(E.ENOMEM)
    proc.mem.map(start, size, _prot_ok(prot), name,
                 offset if source[0] != "zero" else None)
    if source[0] != "zero":
        try:
            _fill(proc, start, source, offset, length)
        except (OSError, MemoryError):
            proc.mem.unmap(start, size)
            raise SyscallError(E.ENOMEM) from None
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


def _move(proc: Process, old: int, old_size: int, new: int, new_size: int,
          keep_old: bool) -> None:
    """Move a mapping: its records (permissions, names, file offsets) and written bytes,
    extended with zero pages like its last page, then unmap (or, for DONTUNMAP, zero) the
    old range."""
    mem = proc.mem
    keep = min(old_size, new_size)
    parts = mem.mappings(old, old + old_size)
    last = parts[-1]
    for m in parts:
        if m.start >= old + keep:
            break
        end = min(m.end, old + keep)
        mem.map(new + (m.start - old), end - m.start, m.prot, m.name, m.offset)
    if old_size < new_size:
        mem.map(new + old_size, new_size - old_size, last.prot, last.name,
                last.at(last.end))
    mem.copy_within(old, new, keep)
    mem.unmap(old, old_size)
    if keep_old:
        for m in parts:
            mem.map(m.start, m.size, m.prot, m.name, m.offset)


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
    grow = new_size if keep_old else max(new_size - old_size, 0)
    if flags & MREMAP_FIXED:
        grow -= _mapped_in(proc, new_addr, new_size) if new_addr + new_size <= ADDR_LIMIT else 0
    if not _may_expand(proc, grow):
        raise SyscallError(E.ENOMEM)
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
            last = proc.mem.mappings(tail - PAGE_SIZE, tail)[0]
            proc.mem.map(tail, extra, last.prot, last.name, last.at(tail))
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
        proc.mem.zero(addr, size)
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
