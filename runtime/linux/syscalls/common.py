"""The syscall registry and helpers shared by the syscall families.

A handler is registered with ``@syscall(nr, name, argument kinds, ret=kind)``. The argument
kinds say how the raw 64-bit register is converted before the handler sees it (an ``int``
argument is the low 32 bits, signed, as the C prototype makes it) and how strace prints it.
Handlers return the result (>= 0) or raise ``SyscallError(errno)``; a ``GuestFault`` becomes
-EFAULT and a host ``OSError`` its errno, in ``handle_syscall``.
"""

from __future__ import annotations

import errno as E
import os
import struct
from dataclasses import dataclass
from typing import Callable

from dbtlab.ir.abi import ADDR_LIMIT, GuestFault
from dbtlab.ir.state import FAULT_LOAD, FAULT_STORE
from dbtlab.runtime.linux.memory import PROT_READ, PROT_WRITE, GuestMemory
from dbtlab.runtime.linux.process import FileDesc, Process, SyscallError

__all__ = ["SyscallError", "Syscall", "TABLE", "syscall", "E"]

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_SYMLINK_FOLLOW = 0x400
AT_NO_AUTOMOUNT = 0x800
AT_EMPTY_PATH = 0x1000
AT_EACCESS = 0x200
PATH_MAX = 4096
MAX_RW_COUNT = 0x7FFFF000          # Linux: INT_MAX & PAGE_MASK


@dataclass(frozen=True)
class Syscall:
    nr: int
    name: str
    handler: Callable[..., int]
    args: tuple[str, ...]           # argument kinds (see _CONVERT)
    ret: str = "int"                # "int", "ptr" (hex result), "none" (does not return)
    post: Callable | None = None    # strace: extra text after the result, e.g. a timespec


TABLE: dict[int, Syscall] = {}


def syscall(nr: int, name: str, args: tuple[str, ...] = (), ret: str = "int",
            post: Callable | None = None) -> Callable:
    def deco(fn: Callable[..., int]) -> Callable[..., int]:
        if nr in TABLE:
            raise ValueError(f"syscall {nr} registered twice ({TABLE[nr].name}, {name})")
        TABLE[nr] = Syscall(nr, name, fn, tuple(args), ret, post)
        return fn
    return deco


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _u32(v: int) -> int:
    return v & 0xFFFFFFFF


def _s64(v: int) -> int:
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >> 63 else v


def _u64(v: int) -> int:
    return v & 0xFFFFFFFFFFFFFFFF


#: argument kind -> register conversion
_CONVERT: dict[str, Callable[[int], int]] = {
    "fd": _s32, "dirfd": _s32, "int": _s32, "sig": _s32, "clock": _s32, "whence": _s32,
    "atflags": _s32, "pid": _s32, "how": _s32, "which": _s32,
    "uint": _u32, "oflags": _u32, "mode": _u32, "prot": _u32, "mapflags": _u32,
    "ioctl": _u32, "futexop": _s32, "fcntl": _s32, "hex32": _u32, "rflags": _u32,
    "long": _s64, "off": _s64,
    "ulong": _u64, "size": _u64, "ptr": _u64, "addr": _u64, "timespec": _u64, "str": _u64, "hex": _u64, "optr": _u64,
}


def convert(kind: str, value: int) -> int:
    return _CONVERT.get(kind, _u64)(value)


# ---- guest buffers -------------------------------------------------------------------------
def access_ok(addr: int, n: int) -> bool:
    """Linux's access_ok: [addr, addr+n) lies inside the user address space and does not
    wrap. It says nothing about what is mapped there."""
    return 0 <= n <= ADDR_LIMIT and 0 <= addr <= ADDR_LIMIT - n


def accessible_prefix(mem: GuestMemory, addr: int, n: int, need: int) -> int:
    """How many of the n bytes at addr the guest may access with ``need`` (PROT_READ or
    PROT_WRITE): the copy a syscall makes stops at the first page it may not touch."""
    if n <= 0:
        return 0
    try:
        mem.check(addr, n, need, FAULT_STORE if need & PROT_WRITE else FAULT_LOAD)
    except GuestFault as f:
        return max(0, min(n, f.addr - addr))
    return n


def writable_prefix(mem: GuestMemory, addr: int, n: int) -> int:
    return accessible_prefix(mem, addr, n, PROT_WRITE)


def readable_prefix(mem: GuestMemory, addr: int, n: int) -> int:
    return accessible_prefix(mem, addr, n, PROT_READ)


def user_span(proc: Process, buf: int, count: int, *, writable: bool,
              limit: int = MAX_RW_COUNT) -> int:
    """How many bytes of the guest buffer [buf, buf+count) a syscall transfers, sized as
    Linux does: EFAULT before anything is copied when the whole range is not inside the
    user address space (access_ok on the full count); then at most ``limit`` bytes and only
    the accessible prefix (a copy that faults part-way returns what it copied); EFAULT when
    not even the first byte is accessible. 0 for a count of 0."""
    if not access_ok(buf, count):
        raise SyscallError(E.EFAULT)
    n = min(count, limit)
    if n == 0:
        return 0
    n = accessible_prefix(proc.mem, buf, n, PROT_WRITE if writable else PROT_READ)
    if n == 0:
        raise SyscallError(E.EFAULT)
    return n


def read_path(proc: Process, addr: int) -> str:
    """A NUL-terminated path from the guest: EFAULT if unreadable, ENAMETOOLONG if longer
    than PATH_MAX, ENOENT if empty."""
    b = proc.mem.read_cstring(addr, PATH_MAX + 1)
    if len(b) >= PATH_MAX:
        raise SyscallError(E.ENAMETOOLONG)
    if not b:
        raise SyscallError(E.ENOENT)
    return os.fsdecode(b)


def read_path_maybe_empty(proc: Process, addr: int) -> str:
    b = proc.mem.read_cstring(addr, PATH_MAX + 1)
    if len(b) >= PATH_MAX:
        raise SyscallError(E.ENAMETOOLONG)
    return os.fsdecode(b)


def proc_self_path(proc: Process, path: str) -> str | None:
    """'exe', 'maps', ... if path names /proc/self/<x> or /proc/<our pid>/<x>."""
    for prefix in ("/proc/self/", f"/proc/{proc.pid}/", "/proc/thread-self/"):
        if path.startswith(prefix):
            return path[len(prefix):]
    return None


def host_proc_path(proc: Process, path: str) -> str:
    """/proc/<guest pid>[/...] names the host's /proc/self[/...] (the guest's pid is not
    the host's): so path walks like realpath("/proc/self/exe") work component by component."""
    base = f"/proc/{proc.pid}"
    if path == base or path.startswith(base + "/"):
        return "/proc/self/." + path[len(base):]
    return path


def resolve(proc: Process, dirfd: int, path: str) -> tuple[str, int | None]:
    """Host (path, dir_fd) for a guest (dirfd, path): absolute paths as they are, relative
    ones against the guest's cwd (AT_FDCWD) or the host descriptor behind dirfd."""
    if path.startswith("/"):
        return host_proc_path(proc, path), None
    if dirfd == AT_FDCWD:
        return os.path.join(proc.cwd, path), None
    d = proc.get_fd(dirfd)
    if d.host_fd is None:
        raise SyscallError(E.ENOTDIR)
    return path, d.host_fd


def write_struct(proc: Process, addr: int, fmt: str, *values) -> None:
    proc.mem.write(addr, struct.pack(fmt, *values))


def read_struct(proc: Process, addr: int, fmt: str) -> tuple:
    return struct.unpack(fmt, proc.mem.read(addr, struct.calcsize(fmt)))


def host_fd_of(proc: Process, fd: int) -> tuple[FileDesc, int]:
    """The FileDesc and its host descriptor; EBADF/EINVAL for synthesized files."""
    d = proc.get_fd(fd)
    if d.host_fd is None:
        raise SyscallError(E.EINVAL)
    return d, d.host_fd


def timespec_ns(proc: Process, addr: int) -> int:
    """A struct timespec (16 bytes) as ns; EINVAL if tv_nsec is out of range."""
    sec, nsec = read_struct(proc, addr, "<qq")
    if not 0 <= nsec < 1_000_000_000 or sec < 0:
        raise SyscallError(E.EINVAL)
    return sec * 1_000_000_000 + nsec


KTIME_MAX = (1 << 63) - 1


def sleep_for(proc: Process, ns: int) -> None:
    """Let ns of guest time pass. As Linux saturates times at KTIME_MAX, no clock goes past
    it: a longer sleep ends there (in virtual time; on the host's clock it never ends)."""
    proc.sleep_ns(min(ns, max(0, KTIME_MAX - proc.clock_ns(0))))


def write_timespec(proc: Process, addr: int, ns: int) -> None:
    write_struct(proc, addr, "<qq", ns // 1_000_000_000, ns % 1_000_000_000)
