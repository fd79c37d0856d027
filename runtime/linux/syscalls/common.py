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
import stat as S
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


# ---- paths: the host's file system, with the guest's own /proc ----------------------------
#: the files of the guest's /proc/<pid> (the directories are "", "fd" and "task")
PROC_FILES = frozenset({"maps", "smaps", "mem", "auxv", "cmdline", "environ", "comm",
                        "stat", "status", "mounts"})
#: the links of the guest's /proc/<pid> besides fd/<n>
PROC_LINKS = frozenset({"exe", "cwd", "root"})
#: host paths that are links into /proc/self
_DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
              "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
MAX_SYMLINKS = 40


@dataclass(frozen=True)
class ProcEntry:
    """A name in the guest's own /proc/<pid>, which dbtlab synthesizes: ``rest`` is ""
    for the directory itself, then "maps", "fd", "fd/3", "task", "task/1000", ...; ``link``
    is the text of the symbolic link the path names when the last component was not
    followed ("/proc/self" -> "1000", "/proc/self/exe" -> the program)."""

    rest: str
    link: str | None = None


def fd_link_text(proc: Process, d: FileDesc) -> str:
    """What readlink("/proc/self/fd/N") shows for the guest's descriptor d: the host's
    name for the file behind it ("/tmp/x", "pipe:[1234]"), else the synthesized path."""
    if d.host_fd is not None:
        try:
            return os.readlink(f"/proc/self/fd/{d.host_fd}")
        except OSError:
            pass
    return d.path


def _view_rest(proc: Process, parts: list[str]) -> list[str]:
    """Components under /proc/<guest pid>, with task/<tid>/ folded onto the process."""
    rest = parts[2:]
    if rest[:2] == ["task", str(proc.tid)]:
        rest = rest[2:]
    return rest


def _classify(proc: Process, cur: list[str]) -> tuple[str, str, str | None]:
    """What the absolute path ``cur`` (components) is in the guest's view:
    ("host", "", None) a host path; ("view", rest, None) a directory or file of the guest's
    /proc/<pid>; ("link", rest, target) a symbolic link (target: its text; for fd/<n> the
    descriptor's number). ENOENT for any other process's /proc/<pid> (dbtlab's own
    among them) and for names the guest's /proc/<pid> does not have."""
    if len(cur) == 2 and cur[0] == "dev" and cur[1] in _DEV_LINKS:
        return "link", "", _DEV_LINKS[cur[1]]
    if len(cur) < 2 or cur[0] != "proc":
        return "host", "", None
    who = cur[1]
    if who == "self":
        return "link", "", str(proc.pid)
    if who == "thread-self":
        return "link", "", f"{proc.pid}/task/{proc.tid}"
    if who != str(proc.pid):
        if who.isdigit():
            raise SyscallError(E.ENOENT)
        return "host", "", None
    rest = _view_rest(proc, cur)
    key = "/".join(rest)
    if not rest or key in ("fd", "task") or key in PROC_FILES:
        return "view", key, None
    if key == f"task/{proc.tid}":
        return "view", "", None
    if len(rest) == 1 and key in PROC_LINKS:
        target = {"exe": proc.exe_path, "cwd": proc.cwd, "root": "/"}[key]
        return "link", key, target
    if len(rest) == 2 and rest[0] == "fd" and rest[1].isdigit() and \
            str(int(rest[1])) == rest[1] and int(rest[1]) in proc.fds:
        return "link", key, rest[1]
    if rest[0] in PROC_FILES or rest[0] in PROC_LINKS and len(rest) > 1:
        raise SyscallError(E.ENOTDIR)
    raise SyscallError(E.ENOENT)


def _dir_base(proc: Process, dirfd: int) -> str:
    """The directory a relative path starts from."""
    if dirfd == AT_FDCWD:
        return proc.cwd
    d = proc.get_fd(dirfd)
    if not d.is_dir:
        raise SyscallError(E.ENOTDIR)
    if d.host_fd is None:
        return d.path
    return fd_link_text(proc, d)


def lookup(proc: Process, dirfd: int, path: str, follow: bool = True) -> str | ProcEntry:
    """Resolve a guest path the way the kernel walks it, component by component, and say
    what it names: a host path (str, absolute, its symbolic links already replaced by
    their targets, the last one only when ``follow``) or an entry of the guest's own
    /proc/<pid> (``ProcEntry``). /proc/self, /proc/thread-self, /proc/<guest pid>,
    /dev/fd and /dev/std{in,out,err} lead into the guest's /proc; any other
    /proc/<number> (dbtlab's own process, its workers, anyone else) is ENOENT, however
    it is reached (through links, "..", a dirfd, the cwd). So the host never follows a
    link into a /proc/<pid> of its own, and no host descriptor or host memory is reachable
    by name. A component that does not exist or cannot be searched ends the walk: the host
    reports that error on the path as it stands."""
    cur = [] if path.startswith("/") else [c for c in _dir_base(proc, dirfd).split("/") if c]
    pending = list(reversed(path.split("/")))
    links = 0
    kind, rest, _ = _classify(proc, cur)
    while pending:
        c = pending.pop()
        if c in ("", "."):
            continue
        if c == "..":
            if cur:
                cur.pop()
            kind, rest, _ = _classify(proc, cur)
            continue
        cur.append(c)
        last = not pending
        kind, rest, target = _classify(proc, cur)
        if kind == "host":
            hpath = "/" + "/".join(cur)
            try:
                st = os.lstat(hpath)
            except (OSError, ValueError):
                pending.reverse()
                return "/".join([hpath] + pending)
            if not S.S_ISLNK(st.st_mode) or last and not follow:
                continue
            target = os.readlink(hpath)
        elif kind == "view":
            continue
        elif last and not follow:                      # a link of the guest's /proc
            if rest.startswith("fd/"):
                target = fd_link_text(proc, proc.fds[int(target)])
            return ProcEntry(rest, link=target)
        elif rest.startswith("fd/"):
            d = proc.fds[int(target)]
            if all(x in ("", ".") for x in pending) and not (pending and not d.is_dir):
                return ProcEntry(rest)                 # the descriptor itself
            if not d.is_dir:
                raise SyscallError(E.ENOTDIR)
            target = d.path if d.host_fd is None else fd_link_text(proc, d)
        links += 1
        if links > MAX_SYMLINKS:
            raise SyscallError(E.ELOOP)
        cur.pop()
        if target.startswith("/"):
            cur = []
        pending.extend(reversed(target.split("/")))
    if kind == "view":
        return ProcEntry(rest)
    return "/" + "/".join(cur) + ("/" if cur and path.endswith("/") else "")


def resolve(proc: Process, dirfd: int, path: str, follow: bool = True) -> tuple[str, None]:
    """The host path for a guest (dirfd, path) that is to be changed or created on the
    host (mkdir, unlink, rename, chmod, truncate, ...): EACCES inside the guest's /proc,
    except that /proc/self/fd/<n> names the file behind the guest's descriptor n."""
    t = lookup(proc, dirfd, path, follow)
    if isinstance(t, ProcEntry):
        d = proc.fds.get(int(t.rest[3:])) if t.rest.startswith("fd/") and t.link is None \
            else None
        if d is None or d.host_fd is None:
            raise SyscallError(E.EACCES)
        return f"/proc/self/fd/{d.host_fd}", None      # the guest's own file, by its link
    return t, None


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
