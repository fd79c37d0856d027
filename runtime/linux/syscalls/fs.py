"""Files: open/read/write/stat and friends. Guest paths are host paths (like qemu-riscv64
without -L), relative ones resolved against the guest's cwd, except that the guest sees its
own /proc/self (and /proc/<its pid>, /proc/thread-self, /dev/fd, /dev/std*), synthesized
here: maps, smaps, mem (its own memory at guest addresses), fd (its own descriptors), exe,
cwd, root, auxv, cmdline, environ, comm, stat, status. dbtlab's own /proc/<pid>, and every
other process's, does not exist for the guest (``common.lookup`` walks every path), so no
host descriptor and no host memory is reachable by name; descriptors are reached only
through the guest's table (``Process.fds``).

ioctl answers ENOTTY for everything, even on a terminal: the guest never thinks it has a
tty, so its stdio is fully buffered as when piped, and output is the same however dbtlab is
run (qemu-riscv64 behaves this way under a pipe)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import stat as S
import struct
from types import SimpleNamespace

from dbtlab.ir.abi import GuestFault
from dbtlab.runtime.linux.memory import PAGE_SIZE, prot_str
from dbtlab.runtime.linux.process import SIGPIPE, FileDesc, Process, SyscallError
from dbtlab.runtime.linux.syscalls.common import (AT_EACCESS, AT_EMPTY_PATH, AT_FDCWD,
                                            AT_NO_AUTOMOUNT, AT_REMOVEDIR,
                                            AT_SYMLINK_FOLLOW, AT_SYMLINK_NOFOLLOW,
                                            MAX_RW_COUNT, PROC_FILES, PROC_LINKS, E,
                                            ProcEntry, access_ok, fd_link_text, host_fd_of,
                                            lookup, read_path, read_path_maybe_empty,
                                            read_struct, readable_prefix, resolve, syscall,
                                            user_span, write_struct, writable_prefix)

# ---- open flags (asm-generic values, used by riscv64) --------------------------------------
O_ACCMODE, O_RDONLY, O_WRONLY, O_RDWR = 3, 0, 1, 2
O_CREAT, O_EXCL, O_NOCTTY, O_TRUNC, O_APPEND = 0o100, 0o200, 0o400, 0o1000, 0o2000
O_NONBLOCK, O_DSYNC, O_ASYNC, O_DIRECT, O_LARGEFILE = 0o4000, 0o10000, 0o20000, 0o40000, 0o100000
O_DIRECTORY, O_NOFOLLOW, O_NOATIME, O_CLOEXEC = 0o200000, 0o400000, 0o1000000, 0o2000000
__O_SYNC, O_PATH, __O_TMPFILE = 0o4000000, 0o10000000, 0o20000000

#: guest bit -> host bit (the host's values may differ, e.g. on aarch64)
_OFLAG_MAP = [
    (O_CREAT, os.O_CREAT), (O_EXCL, os.O_EXCL), (O_NOCTTY, os.O_NOCTTY),
    (O_TRUNC, os.O_TRUNC), (O_APPEND, os.O_APPEND), (O_NONBLOCK, os.O_NONBLOCK),
    (O_DSYNC, os.O_DSYNC), (O_ASYNC, getattr(os, "O_ASYNC", 0)),
    (O_DIRECT, getattr(os, "O_DIRECT", 0)), (O_DIRECTORY, os.O_DIRECTORY),
    (O_NOFOLLOW, os.O_NOFOLLOW), (O_NOATIME, getattr(os, "O_NOATIME", 0)),
    (__O_SYNC, os.O_SYNC & ~os.O_DSYNC), (O_PATH, getattr(os, "O_PATH", 0)),
    (__O_TMPFILE, getattr(os, "O_TMPFILE", 0) & ~os.O_DIRECTORY),
]
OFLAG_NAMES = [(O_CREAT, "O_CREAT"), (O_EXCL, "O_EXCL"), (O_NOCTTY, "O_NOCTTY"),
               (O_TRUNC, "O_TRUNC"), (O_APPEND, "O_APPEND"), (O_NONBLOCK, "O_NONBLOCK"),
               (O_DSYNC, "O_DSYNC"), (O_ASYNC, "O_ASYNC"), (O_DIRECT, "O_DIRECT"),
               (O_LARGEFILE, "O_LARGEFILE"), (O_DIRECTORY, "O_DIRECTORY"),
               (O_NOFOLLOW, "O_NOFOLLOW"), (O_NOATIME, "O_NOATIME"),
               (O_CLOEXEC, "O_CLOEXEC"), (__O_SYNC, "__O_SYNC"), (O_PATH, "O_PATH"),
               (__O_TMPFILE, "__O_TMPFILE")]


def host_oflags(flags: int) -> int:
    out = flags & O_ACCMODE
    for g, h in _OFLAG_MAP:
        if flags & g:
            out |= h
    return out | os.O_CLOEXEC            # dbtlab never execs: host fds never leak


def guest_oflags(host: int) -> int:
    """F_GETFL: host status flags in guest values (always with O_LARGEFILE, as a 64-bit
    kernel reports it)."""
    out = (host & O_ACCMODE) | O_LARGEFILE
    for g, h in _OFLAG_MAP:
        if h and host & h == h and g not in (O_CREAT, O_EXCL, O_NOCTTY, O_TRUNC,
                                              O_DIRECTORY, O_NOFOLLOW, __O_TMPFILE):
            out |= g
    return out


# ---- the 128-byte asm-generic struct stat, and statx ---------------------------------------
_STAT = struct.Struct("<QQIIIIQQqiiqqQqQqQII")
assert _STAT.size == 128


def pack_stat(st: os.stat_result) -> bytes:
    return _STAT.pack(st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid,
                      st.st_rdev, 0, st.st_size, st.st_blksize, 0, st.st_blocks,
                      st.st_atime_ns // 10**9, st.st_atime_ns % 10**9,
                      st.st_mtime_ns // 10**9, st.st_mtime_ns % 10**9,
                      st.st_ctime_ns // 10**9, st.st_ctime_ns % 10**9, 0, 0)


STATX_BASIC_STATS = 0x7FF
_STATX = struct.Struct("<IIQIIIHHQQQQ" + "qIi" * 4 + "IIIIQ" + "104x")
assert _STATX.size == 256


def pack_statx(st: os.stat_result) -> bytes:
    ts = []
    for ns in (st.st_atime_ns, 0, st.st_ctime_ns, st.st_mtime_ns):   # atime btime ctime mtime
        ts += [ns // 10**9, ns % 10**9, 0]
    return _STATX.pack(STATX_BASIC_STATS, st.st_blksize, 0, st.st_nlink, st.st_uid,
                       st.st_gid, st.st_mode & 0xFFFF, 0, st.st_ino, st.st_size,
                       st.st_blocks, 0, *ts, os.major(st.st_rdev), os.minor(st.st_rdev),
                       os.major(st.st_dev), os.minor(st.st_dev), 0)


def _fake_stat(size: int, mode: int = S.S_IFREG | 0o444, nlink: int = 1) -> SimpleNamespace:
    """stat of a synthesized /proc file: by default a read-only regular file of size 0,
    like procfs."""
    return SimpleNamespace(st_dev=0, st_ino=0, st_mode=mode, st_nlink=nlink,
                           st_uid=0, st_gid=0, st_rdev=0, st_size=size, st_blksize=1024,
                           st_blocks=0, st_atime_ns=0, st_mtime_ns=0, st_ctime_ns=0)


# ---- synthesized /proc/self files ----------------------------------------------------------
def proc_maps(proc: Process) -> bytes:
    lines = []
    for start, end, prot, name, _host in proc.mem.regions():
        path = {"": ""}.get(name, name)
        if name and not name.startswith("[") and name == os.path.basename(proc.program.path):
            path = proc.exe_path
        lines.append(f"{start:08x}-{end:08x} {prot_str(prot)}p 00000000 00:00 0"
                     + (f"{'':10}{path}" if path else ""))
    return ("\n".join(lines) + "\n").encode()


def proc_smaps(proc: Process) -> bytes:
    """/proc/self/smaps: each mapping's maps line and its sizes (every page counted as
    resident; nothing is shared or swapped)."""
    out = []
    for line, (start, end, prot, _name, _host) in zip(proc_maps(proc).decode().splitlines(),
                                                        proc.mem.regions()):
        kb = (end - start) // 1024
        out.append(line)
        for key, v in (("Size", kb), ("KernelPageSize", 4), ("MMUPageSize", 4), ("Rss", kb),
                       ("Pss", kb), ("Shared_Clean", 0), ("Shared_Dirty", 0),
                       ("Private_Clean", 0), ("Private_Dirty", kb), ("Referenced", kb),
                       ("Anonymous", kb), ("Swap", 0), ("Locked", 0)):
            out.append(f"{key + ':':<16}{v:>8} kB")
        flags = [f for bit, f in ((1, "rd"), (2, "wr"), (4, "ex")) if prot & bit]
        out.append("VmFlags: " + " ".join(flags + ["mr", "mw", "me"]) + " ")
    return ("\n".join(out) + "\n").encode() if out else b""


def _vm_kb(proc: Process) -> int:
    return sum(end - start for start, end, *_ in proc.mem.regions()) // 1024


def proc_stat(proc: Process) -> bytes:
    """/proc/self/stat: the 52 fields, with the guest's ids, state R and its sizes."""
    vsize = _vm_kb(proc) * 1024
    f = [proc.pid, f"({proc.comm})", "R", proc.ppid, proc.pid, proc.pid, 0, -1, 0x400000,
         0, 0, 0, 0, proc.cpu_ns() // 10_000_000, 0, 0, 0, 20, 0, 1, 0, 0, vsize,
         vsize // PAGE_SIZE, (1 << 64) - 1, 0, 0, proc.program.stack_range[1], 0, 0, 0, 0,
         0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0, 0, proc.brk_start, 0, 0, 0, 0, 0]
    return (" ".join(str(x) for x in f) + "\n").encode()


def proc_status(proc: Process) -> bytes:
    """/proc/self/status: the usual keys with the guest's identity and signal masks."""
    ign = sum(1 << (s - 1) for s, (h, _f, _m) in proc.sigactions.items() if h == 1)
    cgt = sum(1 << (s - 1) for s, (h, _f, _m) in proc.sigactions.items() if h > 1)
    pnd = sum(1 << (s - 1) for s in proc.pending)
    kb = _vm_kb(proc)
    rows = [("Name", proc.comm), ("Umask", f"{proc.umask:04o}"), ("State", "R (running)"),
            ("Tgid", proc.pid), ("Ngid", 0), ("Pid", proc.pid), ("PPid", proc.ppid),
            ("TracerPid", 0), ("Uid", f"{proc.uid}\t{proc.euid}\t{proc.euid}\t{proc.euid}"),
            ("Gid", f"{proc.gid}\t{proc.egid}\t{proc.egid}\t{proc.egid}"),
            ("FDSize", 64), ("Groups", ""), ("VmPeak", f"{kb:8} kB"), ("VmSize", f"{kb:8} kB"),
            ("VmRSS", f"{kb:8} kB"), ("Threads", 1), ("SigQ", "0/0"),
            ("SigPnd", f"{0:016x}"), ("ShdPnd", f"{pnd:016x}"),
            ("SigBlk", f"{proc.sigmask:016x}"), ("SigIgn", f"{ign:016x}"),
            ("SigCgt", f"{cgt:016x}")]
    return "".join(f"{k}:\t{v}\n" for k, v in rows).encode()


def _synth(proc: Process, what: str) -> bytes | None:
    if what == "maps":
        return proc_maps(proc)
    if what == "smaps":
        return proc_smaps(proc)
    if what == "stat":
        return proc_stat(proc)
    if what == "status":
        return proc_status(proc)
    if what == "mounts":                  # the mount table is the host's (/etc/mtab)
        try:
            with open("/proc/self/mounts", "rb") as f:
                return f.read()
        except OSError:
            return b""
    if what == "cmdline":
        return b"".join(os.fsencode(a) + b"\0" for a in proc.argv)
    if what == "environ":
        return b"".join(os.fsencode(a) + b"\0" for a in proc.envp)
    if what == "auxv":
        return b"".join(struct.pack("<QQ", t, v & (2**64 - 1)) for t, v in proc.auxv)
    if what == "comm":
        return proc.comm.encode() + b"\n"
    return None


DT_DIR, DT_REG, DT_LNK = 4, 8, 10
_PROC_DIRS = ("", "fd", "task")


def _proc_dir_entries(proc: Process, rest: str) -> tuple[tuple[str, int], ...]:
    """(name, d_type) of a synthesized directory, without "." and ".."."""
    if rest == "fd":
        return tuple((str(n), DT_LNK) for n in sorted(proc.fds))
    if rest == "task":
        return ((str(proc.tid), DT_DIR),)
    return tuple(sorted([("fd", DT_DIR), ("task", DT_DIR)]
                        + [(n, DT_REG) for n in PROC_FILES]
                        + [(n, DT_LNK) for n in PROC_LINKS]))


def _proc_path(proc: Process, rest: str) -> str:
    return f"/proc/{proc.pid}" + (f"/{rest}" if rest else "")


def _proc_stat(proc: Process, ent: ProcEntry):
    """stat (or lstat, for a link not followed) of an entry of the guest's /proc."""
    if ent.link is not None:
        return _fake_stat(0, S.S_IFLNK | 0o777)
    if ent.rest in _PROC_DIRS:
        return _fake_stat(0, S.S_IFDIR | 0o555, 2)
    if ent.rest.startswith("fd/"):
        return _desc_stat(proc.fds[int(ent.rest[3:])])
    if ent.rest == "mem":
        return _fake_stat(0, S.S_IFREG | 0o600)
    return _fake_stat(0)


def _desc_stat(d: FileDesc):
    if d.host_fd is not None:
        return os.fstat(d.host_fd)
    if d.special == "dir":
        return _fake_stat(0, S.S_IFDIR | 0o555, 2)
    if d.special == "mem":
        return _fake_stat(0, S.S_IFREG | 0o600)
    return _fake_stat(0)


def _open_proc(proc: Process, ent: ProcEntry, flags: int) -> int:
    """openat of an entry of the guest's /proc: a synthesized descriptor, or for fd/<n> a
    new open of what the guest's descriptor n is (as Linux reopens through the link)."""
    cl = bool(flags & O_CLOEXEC)
    acc = flags & O_ACCMODE
    if ent.link is not None:                          # O_NOFOLLOW on a link
        raise SyscallError(E.ELOOP)
    rest = ent.rest
    if rest.startswith("fd/"):
        d = proc.fds[int(rest[3:])]
        if d.host_fd is not None:
            # the guest's own descriptor, reopened through dbtlab's link to it
            hfd = os.open(f"/proc/self/fd/{d.host_fd}", host_oflags(flags),
                          0o666 & ~proc.umask)
            try:
                is_dir = S.S_ISDIR(os.fstat(hfd).st_mode)
            except OSError:
                is_dir = False
            return proc.alloc_fd(FileDesc(hfd, d.path, flags, cloexec=cl, is_dir=is_dir))
        if d.special == "dir" and acc != O_RDONLY:
            raise SyscallError(E.EISDIR)
        if d.data is not None and acc != O_RDONLY:
            raise SyscallError(E.EACCES)
        return proc.alloc_fd(FileDesc(None, d.path, flags, cloexec=cl, data=d.data,
                                      special=d.special, is_dir=d.is_dir))
    path = _proc_path(proc, rest)
    if rest in _PROC_DIRS:
        if acc != O_RDONLY:
            raise SyscallError(E.EISDIR)
        return proc.alloc_fd(FileDesc(None, path, flags, cloexec=cl, special="dir",
                                      is_dir=True))
    if flags & O_DIRECTORY:
        raise SyscallError(E.ENOTDIR)
    if rest == "mem":
        return proc.alloc_fd(FileDesc(None, path, flags, cloexec=cl, special="mem"))
    if acc != O_RDONLY:
        raise SyscallError(E.EACCES)
    return proc.alloc_fd(FileDesc(None, path, flags, cloexec=cl, data=_synth(proc, rest)))


# ---- /proc/self/mem: the guest's memory at guest addresses ---------------------------------
def _mem_rw(proc: Process, addr: int, n: int, data: bytes | None) -> bytes | int:
    """Read (data None) or write n bytes of guest memory at addr, page by page, as
    /proc/<pid>/mem does: any mapped page whatever its protection (Linux's FOLL_FORCE);
    stops at the first unmapped page; EIO if that is the first one."""
    out = bytearray()
    done = 0
    while done < n:
        a = addr + done
        k = min(n - done, PAGE_SIZE - (a & (PAGE_SIZE - 1)))
        try:
            if data is None:
                out += proc.mem.peek(a, k)
            else:
                proc.mem.poke(a, data[done:done + k])
        except GuestFault:
            break
        done += k
    if done == 0 and n:
        raise SyscallError(E.EIO)
    return bytes(out) if data is None else done


# ---- reading and writing -------------------------------------------------------------------
def _readable(d: FileDesc) -> None:
    if d.synthetic and d.flags & O_ACCMODE == O_WRONLY:
        raise SyscallError(E.EBADF)


def _read(proc: Process, d: FileDesc, n: int) -> bytes:
    _readable(d)
    if d.special == "mem":
        out = _mem_rw(proc, d.pos, n, None)
        d.pos += len(out)
        return out
    if d.data is not None:
        out = d.data[d.pos:d.pos + n]
        d.pos += len(out)
        return out
    if d.host_fd is None:
        raise SyscallError(E.EISDIR if d.is_dir else E.EINVAL)
    return os.read(d.host_fd, n)


def _pread(proc: Process, d: FileDesc, n: int, offset: int) -> bytes:
    _readable(d)
    if d.special == "mem":
        return _mem_rw(proc, offset, n, None)
    if d.data is not None:
        return d.data[offset:offset + n]
    if d.host_fd is None:
        raise SyscallError(E.EISDIR if d.is_dir else E.EINVAL)
    return os.pread(d.host_fd, n, offset)


def _write(proc: Process, d: FileDesc, data: bytes, offset: int | None = None) -> int:
    """Write to d at its position, or at offset (pwrite)."""
    if d.synthetic:
        if d.special != "mem" or d.flags & O_ACCMODE == O_RDONLY:
            raise SyscallError(E.EBADF)
        n = _mem_rw(proc, d.pos if offset is None else offset, len(data), data)
        if offset is None:
            d.pos += n
        return n
    try:
        if offset is not None:
            return os.pwrite(d.host_fd, data, offset)
        return os.write(d.host_fd, data)
    except BrokenPipeError:
        proc.send_signal(SIGPIPE)
        raise SyscallError(E.EPIPE)


def _check_dir(d: FileDesc) -> None:
    if d.is_dir:
        raise SyscallError(E.EISDIR)


def _buffer_span(proc: Process, buf: int, count: int, *, writable: bool) -> int:
    """How many bytes of a guest buffer a read or write transfers (``user_span``)."""
    return user_span(proc, buf, count, writable=writable)


@syscall(63, "read", ("fd", "ptr", "size"))
def sys_read(proc: Process, fd: int, buf: int, count: int) -> int:
    d = proc.get_fd(fd)
    _check_dir(d)
    n = _buffer_span(proc, buf, count, writable=True)
    if n == 0:
        return 0
    data = _read(proc, d, n)
    proc.mem.write(buf, data)
    return len(data)


@syscall(64, "write", ("fd", "ptr", "size"))
def sys_write(proc: Process, fd: int, buf: int, count: int) -> int:
    d = proc.get_fd(fd)
    n = _buffer_span(proc, buf, count, writable=False)
    if n == 0:
        return 0
    return _write(proc, d, proc.mem.read(buf, n))


def _iovecs(proc: Process, iov: int, iovcnt: int) -> list[tuple[int, int]]:
    if iovcnt < 0 or iovcnt > 1024:
        raise SyscallError(E.EINVAL)
    if iovcnt == 0:
        return []
    raw = proc.mem.read(iov, 16 * iovcnt)
    vecs = list(struct.iter_unpack("<QQ", raw))
    for _base, ln in vecs:
        if ln >> 63:                                  # a negative ssize_t
            raise SyscallError(E.EINVAL)
    for base, ln in vecs:                             # access_ok on every segment
        if not access_ok(base, ln):
            raise SyscallError(E.EFAULT)
    return vecs


@syscall(65, "readv", ("fd", "ptr", "int"))
def sys_readv(proc: Process, fd: int, iov: int, iovcnt: int) -> int:
    d = proc.get_fd(fd)
    _check_dir(d)
    vecs = _iovecs(proc, iov, iovcnt)
    # the writable prefix of the scatter list bounds what may be read
    room = 0
    for base, ln in vecs:
        w = writable_prefix(proc.mem, base, min(ln, MAX_RW_COUNT))
        room += w
        if w < ln:
            break
    room = min(room, MAX_RW_COUNT)
    if room == 0:
        if sum(ln for _, ln in vecs) == 0:
            return 0
        raise SyscallError(E.EFAULT)
    data = _read(proc, d, room)
    pos = 0
    for base, ln in vecs:
        if pos >= len(data):
            break
        k = min(ln, len(data) - pos)
        proc.mem.write(base, data[pos:pos + k])
        pos += k
    return len(data)


@syscall(66, "writev", ("fd", "ptr", "int"))
def sys_writev(proc: Process, fd: int, iov: int, iovcnt: int) -> int:
    d = proc.get_fd(fd)
    vecs = _iovecs(proc, iov, iovcnt)
    chunks = []
    for base, ln in vecs:
        ln = min(ln, MAX_RW_COUNT)
        r = readable_prefix(proc.mem, base, ln)
        if r:
            chunks.append(proc.mem.read(base, r))
        if r < ln:
            if not chunks:
                raise SyscallError(E.EFAULT)
            break
    data = b"".join(chunks)[:MAX_RW_COUNT]
    if not data:
        return 0
    return _write(proc, d, data)


@syscall(67, "pread64", ("fd", "ptr", "size", "off"))
def sys_pread64(proc: Process, fd: int, buf: int, count: int, offset: int) -> int:
    d = proc.get_fd(fd)
    _check_dir(d)
    if offset < 0:
        raise SyscallError(E.EINVAL)
    n = _buffer_span(proc, buf, count, writable=True)
    if n == 0:
        return 0
    data = _pread(proc, d, n, offset)
    proc.mem.write(buf, data)
    return len(data)


@syscall(68, "pwrite64", ("fd", "ptr", "size", "off"))
def sys_pwrite64(proc: Process, fd: int, buf: int, count: int, offset: int) -> int:
    d = proc.get_fd(fd)
    if offset < 0:
        raise SyscallError(E.EINVAL)
    if d.synthetic and d.special != "mem":
        raise SyscallError(E.EBADF if d.data is not None else E.EISDIR)
    n = _buffer_span(proc, buf, count, writable=False)
    if n == 0:
        return 0
    return _write(proc, d, proc.mem.read(buf, n), offset)


@syscall(62, "lseek", ("fd", "off", "whence"))
def sys_lseek(proc: Process, fd: int, offset: int, whence: int) -> int:
    d = proc.get_fd(fd)
    if d.special == "mem":                    # guest addresses: unsigned, no end
        if whence not in (0, 1):
            raise SyscallError(E.EINVAL)
        d.pos = ((d.pos if whence else 0) + offset) & ((1 << 64) - 1)
        return d.pos
    if d.special == "dir":
        if whence != 0 or offset != 0:
            raise SyscallError(E.EINVAL)
        d.pos = 0
        return 0
    if d.data is not None:
        base = {0: 0, 1: d.pos, 2: len(d.data)}.get(whence)
        if base is None or base + offset < 0:
            raise SyscallError(E.EINVAL)
        d.pos = base + offset
        return d.pos
    if whence not in (0, 1, 2, 3, 4):
        raise SyscallError(E.EINVAL)
    return os.lseek(d.host_fd, offset, whence)


# ---- opening and closing -------------------------------------------------------------------
class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_SYS_OPENAT2 = 437                    # the same number on every Linux architecture
_RESOLVE_NO_MAGICLINKS = 0x02
_openat2_missing = False
_PROC_PID_RE = re.compile(r"/(\d+|self|thread-self)(/|$)")
_PROC_SUPER_MAGIC = 0x9FA0


def _host_open(path: str, hflags: int, mode: int) -> int:
    """open on the host, never through a /proc/<pid>/fd-style magic link (openat2 with
    RESOLVE_NO_MAGICLINKS where the kernel has it; ``lookup`` already keeps the guest out
    of every /proc/<pid> it can name)."""
    global _openat2_missing
    if not _openat2_missing:
        tmpfile = getattr(os, "O_TMPFILE", 0)
        creat = hflags & os.O_CREAT or tmpfile and hflags & tmpfile == tmpfile
        how = _OpenHow(hflags, mode if creat else 0, _RESOLVE_NO_MAGICLINKS)
        r = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_long(AT_FDCWD),
                          ctypes.c_char_p(os.fsencode(path)), ctypes.byref(how),
                          ctypes.c_size_t(ctypes.sizeof(how)))
        if r >= 0:
            return r
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            _openat2_missing = True
        elif err != errno.EPERM:      # EPERM may also be a sandbox refusing openat2
            raise OSError(err, os.strerror(err), path)
    return os.open(path, hflags, mode)


def _refuse_host_proc(hfd: int) -> None:
    """Belt and braces: a host descriptor that turns out to be a file under some
    process's /proc/<pid>, in any procfs mount (one ``lookup`` cannot recognise by its
    path), is closed: ENOENT."""
    buf = ctypes.create_string_buffer(256)                # struct statfs; f_type first
    if _libc.fstatfs(hfd, buf) != 0 or \
            ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF != _PROC_SUPER_MAGIC:
        return
    try:
        bad = _PROC_PID_RE.search(os.readlink(f"/proc/self/fd/{hfd}")) is not None
    except OSError:
        bad = True
    if bad:
        os.close(hfd)
        raise SyscallError(E.ENOENT)


@syscall(56, "openat", ("dirfd", "str", "oflags", "mode"))
def sys_openat(proc: Process, dirfd: int, pathname: int, flags: int, mode: int) -> int:
    path = read_path(proc, pathname)
    follow = not flags & O_NOFOLLOW and flags & (O_CREAT | O_EXCL) != O_CREAT | O_EXCL
    target = lookup(proc, dirfd, path, follow)
    if isinstance(target, ProcEntry):
        return _open_proc(proc, target, flags)
    hfd = _host_open(target, host_oflags(flags), mode & ~proc.umask & 0o7777)
    _refuse_host_proc(hfd)
    try:
        is_dir = S.S_ISDIR(os.fstat(hfd).st_mode)
    except OSError:
        is_dir = False
    return proc.alloc_fd(FileDesc(hfd, target, flags, cloexec=bool(flags & O_CLOEXEC),
                                  is_dir=is_dir))


@syscall(57, "close", ("fd",))
def sys_close(proc: Process, fd: int) -> int:
    d = proc.fds.pop(fd, None)
    if d is None:
        raise SyscallError(E.EBADF)
    d.close()
    return 0


@syscall(436, "close_range", ("uint", "uint", "uint"))
def sys_close_range(proc: Process, first: int, last: int, flags: int) -> int:
    if first > last or flags & ~(2 | 4):          # CLOSE_RANGE_UNSHARE, _CLOEXEC
        raise SyscallError(E.EINVAL)
    for fd in [f for f in proc.fds if first <= f <= last]:
        if flags & 4:
            proc.fds[fd].cloexec = True
        else:
            proc.fds.pop(fd).close()
    return 0


def _dup_desc(d: FileDesc, cloexec: bool) -> FileDesc:
    if d.host_fd is None:
        return FileDesc(None, d.path, d.flags, data=d.data, pos=d.pos, cloexec=cloexec,
                        is_dir=d.is_dir, special=d.special, entries=d.entries)
    return FileDesc(os.dup(d.host_fd), d.path, d.flags, cloexec=cloexec, is_dir=d.is_dir)


@syscall(23, "dup", ("fd",))
def sys_dup(proc: Process, fd: int) -> int:
    return proc.alloc_fd(_dup_desc(proc.get_fd(fd), False))


@syscall(24, "dup3", ("fd", "fd", "oflags"))
def sys_dup3(proc: Process, old: int, new: int, flags: int) -> int:
    if old == new or flags & ~O_CLOEXEC:
        raise SyscallError(E.EINVAL)
    d = proc.get_fd(old)
    if new < 0 or new >= proc.rlimits[7][0]:
        raise SyscallError(E.EBADF)
    nd = _dup_desc(d, bool(flags & O_CLOEXEC))
    prev = proc.fds.pop(new, None)
    if prev is not None:
        prev.close()
    proc.fds[new] = nd
    return new


F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL = 0, 1, 2, 3, 4
F_GETLK, F_SETLK, F_SETLKW, F_DUPFD_CLOEXEC = 5, 6, 7, 1030
F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 36, 37, 38
F_GETPIPE_SZ, F_SETPIPE_SZ = 1032, 1031
FCNTL_NAMES = {0: "F_DUPFD", 1: "F_GETFD", 2: "F_SETFD", 3: "F_GETFL", 4: "F_SETFL",
               5: "F_GETLK", 6: "F_SETLK", 7: "F_SETLKW", 1030: "F_DUPFD_CLOEXEC"}


@syscall(25, "fcntl", ("fd", "fcntl", "hex"))
def sys_fcntl(proc: Process, fd: int, cmd: int, arg: int) -> int:
    d = proc.get_fd(fd)
    if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        lowest = arg & 0xFFFFFFFF
        if lowest >= proc.rlimits[7][0]:
            raise SyscallError(E.EINVAL)
        return proc.alloc_fd(_dup_desc(d, cmd == F_DUPFD_CLOEXEC), lowest)
    if cmd == F_GETFD:
        return 1 if d.cloexec else 0
    if cmd == F_SETFD:
        d.cloexec = bool(arg & 1)
        return 0
    if cmd == F_GETFL:
        if d.host_fd is None:
            return (d.flags & O_ACCMODE) | O_LARGEFILE
        import fcntl as _fcntl
        return guest_oflags(_fcntl.fcntl(d.host_fd, _fcntl.F_GETFL))
    if cmd == F_SETFL:
        if d.host_fd is None:
            return 0
        import fcntl as _fcntl
        keep = O_APPEND | O_NONBLOCK | O_ASYNC | O_DIRECT | O_NOATIME
        cur = _fcntl.fcntl(d.host_fd, _fcntl.F_GETFL)
        hmask = host_oflags(keep) & ~os.O_CLOEXEC
        _fcntl.fcntl(d.host_fd, _fcntl.F_SETFL,
                     (cur & ~hmask) | (host_oflags(arg & keep) & ~os.O_CLOEXEC))
        return 0
    if cmd in (F_GETLK, F_OFD_GETLK):
        # one process: no lock ever conflicts -> l_type = F_UNLCK (2)
        proc.mem.write(arg, struct.pack("<h", 2))
        return 0
    if cmd in (F_SETLK, F_SETLKW, F_OFD_SETLK, F_OFD_SETLKW):
        proc.mem.read(arg, 32)
        return 0
    if cmd == F_GETPIPE_SZ:
        return 65536
    raise SyscallError(E.EINVAL)


@syscall(59, "pipe2", ("ptr", "oflags"))
def sys_pipe2(proc: Process, fds: int, flags: int) -> int:
    if flags & ~(O_CLOEXEC | O_NONBLOCK | O_DIRECT):
        raise SyscallError(E.EINVAL)
    if not writable_prefix(proc.mem, fds, 8) == 8:
        raise SyscallError(E.EFAULT)
    r, w = os.pipe2(host_oflags(flags & (O_NONBLOCK | O_DIRECT)))
    cl = bool(flags & O_CLOEXEC)
    gr = proc.alloc_fd(FileDesc(r, "pipe:[r]", O_RDONLY, cloexec=cl))
    try:
        gw = proc.alloc_fd(FileDesc(w, "pipe:[w]", O_WRONLY, cloexec=cl))
    except SyscallError:
        proc.fds.pop(gr).close()
        raise
    write_struct(proc, fds, "<ii", gr, gw)
    return 0


@syscall(29, "ioctl", ("fd", "ioctl", "hex"))
def sys_ioctl(proc: Process, fd: int, request: int, arg: int) -> int:
    proc.get_fd(fd)
    raise SyscallError(E.ENOTTY)


# ---- metadata ------------------------------------------------------------------------------
def _stat_path(proc: Process, dirfd: int, path: str, flags: int) -> os.stat_result:
    follow = not flags & AT_SYMLINK_NOFOLLOW
    if path == "":
        if not flags & AT_EMPTY_PATH:
            raise SyscallError(E.ENOENT)
        if dirfd == AT_FDCWD:
            return _stat_path(proc, dirfd, ".", flags & ~AT_EMPTY_PATH)
        return _desc_stat(proc.get_fd(dirfd))
    target = lookup(proc, dirfd, path, follow)
    if isinstance(target, ProcEntry):
        return _proc_stat(proc, target)
    return os.stat(target, follow_symlinks=follow)


@syscall(80, "fstat", ("fd", "ptr"))
def sys_fstat(proc: Process, fd: int, buf: int) -> int:
    st = _desc_stat(proc.get_fd(fd))
    proc.mem.write(buf, pack_stat(st))
    return 0


@syscall(79, "newfstatat", ("dirfd", "str", "ptr", "atflags"))
def sys_newfstatat(proc: Process, dirfd: int, pathname: int, buf: int, flags: int) -> int:
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT):
        raise SyscallError(E.EINVAL)
    path = read_path_maybe_empty(proc, pathname)
    st = _stat_path(proc, dirfd, path, flags)
    proc.mem.write(buf, pack_stat(st))
    return 0


@syscall(291, "statx", ("dirfd", "str", "atflags", "hex32", "ptr"))
def sys_statx(proc: Process, dirfd: int, pathname: int, flags: int, mask: int, buf: int) -> int:
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT | 0x6000):
        raise SyscallError(E.EINVAL)          # 0x6000: AT_STATX_SYNC_TYPE
    if mask & 0x80000000:                     # STATX__RESERVED
        raise SyscallError(E.EINVAL)
    path = read_path_maybe_empty(proc, pathname)
    st = _stat_path(proc, dirfd, path, flags)
    proc.mem.write(buf, pack_statx(st))
    return 0


@syscall(78, "readlinkat", ("dirfd", "str", "ptr", "int"))
def sys_readlinkat(proc: Process, dirfd: int, pathname: int, buf: int, bufsiz: int) -> int:
    if bufsiz <= 0:
        raise SyscallError(E.EINVAL)
    path = read_path(proc, pathname)
    found = lookup(proc, dirfd, path, follow=False)
    if isinstance(found, ProcEntry):
        if found.link is None:
            raise SyscallError(E.EINVAL)
        target = found.link
    else:
        target = os.readlink(found)
    b = os.fsencode(target)[:bufsiz]
    proc.mem.write(buf, b)
    return len(b)


@syscall(48, "faccessat", ("dirfd", "str", "int"))
def sys_faccessat(proc: Process, dirfd: int, pathname: int, mode: int) -> int:
    return _access(proc, dirfd, pathname, mode, 0)


@syscall(439, "faccessat2", ("dirfd", "str", "int", "atflags"))
def sys_faccessat2(proc: Process, dirfd: int, pathname: int, mode: int, flags: int) -> int:
    return _access(proc, dirfd, pathname, mode, flags)


def _access(proc: Process, dirfd: int, pathname: int, mode: int, flags: int) -> int:
    if mode & ~7 or flags & ~(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise SyscallError(E.EINVAL)
    path = read_path_maybe_empty(proc, pathname)
    _stat_path(proc, dirfd, path, flags)          # ENOENT, ENOTDIR, ... as the host says
    if mode == 0 or path == "":
        return 0
    target = lookup(proc, dirfd, path, not flags & AT_SYMLINK_NOFOLLOW)
    if isinstance(target, ProcEntry):
        rest = target.rest
        if rest.startswith("fd/"):
            return 0                                  # what the guest itself opened
        if mode & 2 and rest != "mem" or mode & 1 and rest not in _PROC_DIRS:
            raise SyscallError(E.EACCES)
        return 0
    if not os.access(target, mode, effective_ids=bool(flags & AT_EACCESS),
                     follow_symlinks=not flags & AT_SYMLINK_NOFOLLOW):
        raise SyscallError(E.EACCES)
    return 0


@syscall(17, "getcwd", ("ptr", "size"))
def sys_getcwd(proc: Process, buf: int, size: int) -> int:
    """The copy is the path and its NUL, never more, whatever size says (ERANGE if it does
    not fit); no access_ok on size, as in Linux."""
    b = os.fsencode(proc.cwd) + b"\0"
    if size < len(b):
        raise SyscallError(E.ERANGE)
    proc.mem.write(buf, b)
    return len(b)


def _set_cwd_dir(proc: Process, d: FileDesc) -> None:
    if not d.is_dir:
        raise SyscallError(E.ENOTDIR)
    proc.cwd = d.path if d.host_fd is None else os.path.normpath(fd_link_text(proc, d))


@syscall(49, "chdir", ("str",))
def sys_chdir(proc: Process, pathname: int) -> int:
    target = lookup(proc, AT_FDCWD, read_path(proc, pathname))
    if isinstance(target, ProcEntry):
        if target.rest in _PROC_DIRS:
            proc.cwd = _proc_path(proc, target.rest)
            return 0
        if target.rest.startswith("fd/"):
            _set_cwd_dir(proc, proc.fds[int(target.rest[3:])])
            return 0
        raise SyscallError(E.ENOTDIR)
    if not S.S_ISDIR(os.stat(target).st_mode):
        raise SyscallError(E.ENOTDIR)
    if not os.access(target, os.X_OK):
        raise SyscallError(E.EACCES)
    proc.cwd = os.path.normpath(target)
    return 0


@syscall(50, "fchdir", ("fd",))
def sys_fchdir(proc: Process, fd: int) -> int:
    _set_cwd_dir(proc, proc.get_fd(fd))
    return 0


@syscall(34, "mkdirat", ("dirfd", "str", "mode"))
def sys_mkdirat(proc: Process, dirfd: int, pathname: int, mode: int) -> int:
    hpath, dir_fd = resolve(proc, dirfd, read_path(proc, pathname), follow=False)
    os.mkdir(hpath, mode & ~proc.umask & 0o7777, dir_fd=dir_fd)
    return 0


@syscall(35, "unlinkat", ("dirfd", "str", "atflags"))
def sys_unlinkat(proc: Process, dirfd: int, pathname: int, flags: int) -> int:
    if flags & ~AT_REMOVEDIR:
        raise SyscallError(E.EINVAL)
    hpath, dir_fd = resolve(proc, dirfd, read_path(proc, pathname), follow=False)
    if flags & AT_REMOVEDIR:
        os.rmdir(hpath, dir_fd=dir_fd)
    else:
        os.unlink(hpath, dir_fd=dir_fd)
    return 0


@syscall(36, "symlinkat", ("str", "dirfd", "str"))
def sys_symlinkat(proc: Process, target: int, dirfd: int, linkpath: int) -> int:
    t = read_path(proc, target)
    hpath, dir_fd = resolve(proc, dirfd, read_path(proc, linkpath), follow=False)
    os.symlink(t, hpath, dir_fd=dir_fd)
    return 0


@syscall(37, "linkat", ("dirfd", "str", "dirfd", "str", "atflags"))
def sys_linkat(proc: Process, olddirfd: int, oldpath: int, newdirfd: int, newpath: int,
               flags: int) -> int:
    if flags & ~(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
        raise SyscallError(E.EINVAL)
    src, sfd = resolve(proc, olddirfd, read_path(proc, oldpath),
                       follow=bool(flags & AT_SYMLINK_FOLLOW))
    dst, dfd = resolve(proc, newdirfd, read_path(proc, newpath), follow=False)
    os.link(src, dst, src_dir_fd=sfd, dst_dir_fd=dfd,
            follow_symlinks=bool(flags & AT_SYMLINK_FOLLOW))
    return 0


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ctypes.c_long


@syscall(276, "renameat2", ("dirfd", "str", "dirfd", "str", "uint"))
def sys_renameat2(proc: Process, olddirfd: int, oldpath: int, newdirfd: int, newpath: int,
                  flags: int) -> int:
    src, sfd = resolve(proc, olddirfd, read_path(proc, oldpath), follow=False)
    dst, dfd = resolve(proc, newdirfd, read_path(proc, newpath), follow=False)
    if flags == 0:
        os.rename(src, dst, src_dir_fd=sfd, dst_dir_fd=dfd)
        return 0
    if flags & ~7:
        raise SyscallError(E.EINVAL)
    fn = getattr(_libc, "renameat2", None)
    if fn is None:
        raise SyscallError(E.ENOSYS)
    r = fn(sfd if sfd is not None else AT_FDCWD, os.fsencode(src),
           dfd if dfd is not None else AT_FDCWD, os.fsencode(dst), flags)
    if r < 0:
        raise SyscallError(ctypes.get_errno())
    return 0


@syscall(46, "ftruncate", ("fd", "off"))
def sys_ftruncate(proc: Process, fd: int, length: int) -> int:
    d, hfd = host_fd_of(proc, fd)
    if length < 0:
        raise SyscallError(E.EINVAL)
    os.ftruncate(hfd, length)
    return 0


@syscall(45, "truncate", ("str", "off"))
def sys_truncate(proc: Process, pathname: int, length: int) -> int:
    hpath, _ = resolve(proc, AT_FDCWD, read_path(proc, pathname))
    if length < 0:
        raise SyscallError(E.EINVAL)
    os.truncate(hpath, length)
    return 0


@syscall(52, "fchmod", ("fd", "mode"))
def sys_fchmod(proc: Process, fd: int, mode: int) -> int:
    d, hfd = host_fd_of(proc, fd)
    os.chmod(hfd, mode & 0o7777)
    return 0


@syscall(53, "fchmodat", ("dirfd", "str", "mode"))
def sys_fchmodat(proc: Process, dirfd: int, pathname: int, mode: int) -> int:
    hpath, dir_fd = resolve(proc, dirfd, read_path(proc, pathname))
    os.chmod(hpath, mode & 0o7777, dir_fd=dir_fd)
    return 0


@syscall(82, "fsync", ("fd",))
def sys_fsync(proc: Process, fd: int) -> int:
    d = proc.get_fd(fd)
    if d.host_fd is not None and d.owned:
        os.fsync(d.host_fd)
    return 0


@syscall(83, "fdatasync", ("fd",))
def sys_fdatasync(proc: Process, fd: int) -> int:
    return sys_fsync(proc, fd)


@syscall(88, "utimensat", ("dirfd", "str", "ptr", "atflags"))
def sys_utimensat(proc: Process, dirfd: int, pathname: int, times: int, flags: int) -> int:
    UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
    if pathname:
        path = read_path(proc, pathname)
        target, dir_fd = resolve(proc, dirfd, path, follow=not flags & AT_SYMLINK_NOFOLLOW)
    else:
        d, target = host_fd_of(proc, dirfd)
        dir_fd = None
    st = os.stat(target, dir_fd=dir_fd) if isinstance(target, str) else os.fstat(target)
    now = proc.clock_ns(0)
    if times:
        (asec, ansec, msec, mnsec) = read_struct(proc, times, "<qqqq")
        pick = []
        for sec, nsec, old in ((asec, ansec, st.st_atime_ns), (msec, mnsec, st.st_mtime_ns)):
            pick.append(now if nsec == UTIME_NOW else old if nsec == UTIME_OMIT
                        else sec * 10**9 + nsec)
    else:
        pick = [now, now]
    kw = {"dir_fd": dir_fd} if isinstance(target, str) else {}
    if isinstance(target, str):
        kw["follow_symlinks"] = not flags & AT_SYMLINK_NOFOLLOW
    os.utime(target, ns=tuple(pick), **kw)
    return 0


_getdents64 = getattr(_libc, "getdents64", None)
if _getdents64 is not None:
    _getdents64.restype = ctypes.c_ssize_t
    _getdents64.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]


@syscall(61, "getdents64", ("fd", "ptr", "uint"))
def sys_getdents64(proc: Process, fd: int, dirp: int, count: int) -> int:
    """The host kernel's linux_dirent64 records are the same on every architecture, so
    the host's answer is passed through unchanged."""
    d = proc.get_fd(fd)
    if not d.is_dir:
        raise SyscallError(E.ENOTDIR)
    if not access_ok(dirp, count):
        raise SyscallError(E.EFAULT)
    want = min(count, 1 << 20)
    n = writable_prefix(proc.mem, dirp, want)
    if n == 0:
        raise SyscallError(E.EFAULT if want else E.EINVAL)
    if d.host_fd is None:
        raw = _synth_dirents(proc, d, n)
    else:
        if _getdents64 is None:
            raise SyscallError(E.ENOSYS)
        buf = ctypes.create_string_buffer(n)
        r = _getdents64(d.host_fd, buf, n)
        if r < 0:
            err = ctypes.get_errno()
            # the first record did not fit in the accessible part: Linux faults on it
            raise SyscallError(E.EFAULT if err == E.EINVAL and n < want else err)
        raw = buf.raw[:r]
    proc.mem.write(dirp, raw)
    return len(raw)


def _synth_dirents(proc: Process, d: FileDesc, n: int) -> bytes:
    """linux_dirent64 records of a synthesized directory from entry d.pos on, as many as
    fit in n bytes (EINVAL if not even one does). The listing is taken at the first read
    (and after a rewind), as procfs lists /proc/self/fd when it is read."""
    if d.pos == 0:
        rest = d.path[len(f"/proc/{proc.pid}"):].lstrip("/")
        d.entries = (((".", DT_DIR), ("..", DT_DIR))
                     + _proc_dir_entries(proc, rest))
    out = bytearray()
    while d.pos < len(d.entries):
        name, dtype = d.entries[d.pos]
        nb = name.encode() + b"\0"
        reclen = (19 + len(nb) + 7) & ~7
        if len(out) + reclen > n:
            if not out:
                raise SyscallError(E.EINVAL)
            break
        out += struct.pack("<QqHB", 0x1000 + d.pos, d.pos + 1, reclen, dtype)
        out += nb.ljust(reclen - 19, b"\0")
        d.pos += 1
    return bytes(out)


@syscall(71, "sendfile", ("fd", "fd", "ptr", "size"))
def sys_sendfile(proc: Process, out_fd: int, in_fd: int, offset: int, count: int) -> int:
    din = proc.get_fd(in_fd)
    dout = proc.get_fd(out_fd)
    if din.is_dir:
        raise SyscallError(E.EINVAL)
    count = min(count, MAX_RW_COUNT, 1 << 24)
    if offset:
        off = read_struct(proc, offset, "<q")[0]
        if off < 0:
            raise SyscallError(E.EINVAL)
        data = _pread(proc, din, count, off)
    else:
        data = _read(proc, din, count)
    n = _write(proc, dout, data) if data else 0
    if offset:
        write_struct(proc, offset, "<q", off + n)
    elif n < len(data) and din.host_fd is not None:
        os.lseek(din.host_fd, n - len(data), 1)
    return n


@syscall(166, "umask", ("mode",))
def sys_umask(proc: Process, mask: int) -> int:
    old = proc.umask
    proc.umask = mask & 0o777
    return old


@syscall(81, "sync", ())
def sys_sync(proc: Process) -> int:
    return 0


__all__ = ["pack_stat", "pack_statx", "host_oflags", "guest_oflags", "proc_maps",
           "OFLAG_NAMES", "FCNTL_NAMES", "PAGE_SIZE"]
