"""Files: open/read/write/stat and friends. Guest paths are host paths (like qemu-riscv64
without -L), relative ones resolved against the guest's cwd; a few /proc/self files are
synthesized (exe -> the program, maps -> the guest's mappings, cmdline, environ, auxv).

ioctl answers ENOTTY for everything, even on a terminal: the guest never thinks it has a
tty, so its stdio is fully buffered as when piped, and output is the same however dbtlab is
run (qemu-riscv64 behaves this way under a pipe)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import stat as S
import struct
from types import SimpleNamespace

from dbtlab.runtime.linux.memory import PAGE_SIZE, prot_str
from dbtlab.runtime.linux.process import SIGPIPE, FileDesc, Process, SyscallError
from dbtlab.runtime.linux.syscalls.common import (AT_EACCESS, AT_EMPTY_PATH, AT_FDCWD,
                                            AT_NO_AUTOMOUNT, AT_REMOVEDIR,
                                            AT_SYMLINK_FOLLOW, AT_SYMLINK_NOFOLLOW,
                                            MAX_RW_COUNT, E, access_ok, host_fd_of,
                                            proc_self_path, read_path, read_path_maybe_empty,
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


def _fake_stat(size: int) -> SimpleNamespace:
    """stat of a synthesized /proc file: a read-only regular file of size 0, like procfs."""
    return SimpleNamespace(st_dev=0, st_ino=0, st_mode=S.S_IFREG | 0o444, st_nlink=1,
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


def _synth(proc: Process, what: str) -> bytes | None:
    if what == "maps":
        return proc_maps(proc)
    if what == "cmdline":
        return b"".join(os.fsencode(a) + b"\0" for a in proc.argv)
    if what == "environ":
        return b"".join(os.fsencode(a) + b"\0" for a in proc.envp)
    if what == "auxv":
        return b"".join(struct.pack("<QQ", t, v & (2**64 - 1)) for t, v in proc.auxv)
    if what == "comm":
        return proc.comm.encode() + b"\n"
    return None


def _special(proc: Process, path: str) -> str:
    """Rewrite /proc/self/exe to the program's path (for open and stat)."""
    what = proc_self_path(proc, path)
    if what == "exe":
        return proc.exe_path
    return path


# ---- reading and writing -------------------------------------------------------------------
def _read(proc: Process, d: FileDesc, n: int) -> bytes:
    if d.data is not None:
        out = d.data[d.pos:d.pos + n]
        d.pos += len(out)
        return out
    return os.read(d.host_fd, n)


def _write(proc: Process, d: FileDesc, data: bytes) -> int:
    if d.data is not None:
        raise SyscallError(E.EBADF)
    try:
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
    if d.data is not None:
        data = d.data[offset:offset + n]
    else:
        data = os.pread(d.host_fd, n, offset)
    proc.mem.write(buf, data)
    return len(data)


@syscall(68, "pwrite64", ("fd", "ptr", "size", "off"))
def sys_pwrite64(proc: Process, fd: int, buf: int, count: int, offset: int) -> int:
    d, hfd = host_fd_of(proc, fd)
    if offset < 0:
        raise SyscallError(E.EINVAL)
    n = _buffer_span(proc, buf, count, writable=False)
    if n == 0:
        return 0
    return os.pwrite(hfd, proc.mem.read(buf, n), offset)


@syscall(62, "lseek", ("fd", "off", "whence"))
def sys_lseek(proc: Process, fd: int, offset: int, whence: int) -> int:
    d = proc.get_fd(fd)
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
@syscall(56, "openat", ("dirfd", "str", "oflags", "mode"))
def sys_openat(proc: Process, dirfd: int, pathname: int, flags: int, mode: int) -> int:
    path = read_path(proc, pathname)
    what = proc_self_path(proc, path)
    if what is not None and what != "exe":
        data = _synth(proc, what)
        if data is not None:
            if flags & O_ACCMODE != O_RDONLY:
                raise SyscallError(E.EACCES)
            return proc.alloc_fd(FileDesc(None, path, flags, data=data,
                                          cloexec=bool(flags & O_CLOEXEC)))
    path = _special(proc, path)
    hpath, dir_fd = resolve(proc, dirfd, path)
    hfd = os.open(hpath, host_oflags(flags), mode & ~proc.umask & 0o7777, dir_fd=dir_fd)
    try:
        is_dir = S.S_ISDIR(os.fstat(hfd).st_mode)
    except OSError:
        is_dir = False
    full = hpath if dir_fd is None else _fd_path(proc, dirfd, path)
    return proc.alloc_fd(FileDesc(hfd, full, flags, cloexec=bool(flags & O_CLOEXEC),
                                  is_dir=is_dir))


def _fd_path(proc: Process, dirfd: int, path: str) -> str:
    base = proc.fds[dirfd].path
    return os.path.join(base, path)


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
        return FileDesc(None, d.path, d.flags, data=d.data, pos=d.pos, cloexec=cloexec)
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
            return os.stat(proc.cwd)
        d = proc.get_fd(dirfd)
        if d.data is not None:
            return _fake_stat(0)
        return os.fstat(d.host_fd)
    what = proc_self_path(proc, path)
    if what is not None and what != "exe" and _synth(proc, what) is not None:
        return _fake_stat(0)
    if what == "exe" and not follow:
        return os.lstat(proc.exe_path)       # (a symlink in real procfs; close enough)
    path = _special(proc, path)
    hpath, dir_fd = resolve(proc, dirfd, path)
    return os.stat(hpath, dir_fd=dir_fd, follow_symlinks=follow)


@syscall(80, "fstat", ("fd", "ptr"))
def sys_fstat(proc: Process, fd: int, buf: int) -> int:
    d = proc.get_fd(fd)
    st = _fake_stat(0) if d.data is not None else os.fstat(d.host_fd)
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
    if proc_self_path(proc, path) == "exe":
        target = proc.exe_path
    elif path.rstrip("/") == "/proc/self":
        target = str(proc.pid)                     # the guest's pid, not the host's
    elif path.rstrip("/") == "/proc/thread-self":
        target = f"{proc.pid}/task/{proc.tid}"
    else:
        hpath, dir_fd = resolve(proc, dirfd, path)
        target = os.readlink(hpath, dir_fd=dir_fd)
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
    _stat_path(proc, dirfd, path, flags)     # ENOENT, ENOTDIR, ... as the host says
    if mode == 0 or path == "":
        return 0
    path = _special(proc, path)
    hpath, dir_fd = resolve(proc, dirfd, path)
    if not os.access(hpath, mode, dir_fd=dir_fd, effective_ids=bool(flags & AT_EACCESS),
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


@syscall(49, "chdir", ("str",))
def sys_chdir(proc: Process, pathname: int) -> int:
    path = read_path(proc, pathname)
    hpath, _ = resolve(proc, AT_FDCWD, path)
    if not S.S_ISDIR(os.stat(hpath).st_mode):
        raise SyscallError(E.ENOTDIR)
    if not os.access(hpath, os.X_OK):
        raise SyscallError(E.EACCES)
    proc.cwd = os.path.realpath(hpath)
    return 0


@syscall(50, "fchdir", ("fd",))
def sys_fchdir(proc: Process, fd: int) -> int:
    d = proc.get_fd(fd)
    if not d.is_dir:
        raise SyscallError(E.ENOTDIR)
    proc.cwd = os.path.realpath(d.path)
    return 0


@syscall(34, "mkdirat", ("dirfd", "str", "mode"))
def sys_mkdirat(proc: Process, dirfd: int, pathname: int, mode: int) -> int:
    hpath, dir_fd = resolve(proc, dirfd, read_path(proc, pathname))
    os.mkdir(hpath, mode & ~proc.umask & 0o7777, dir_fd=dir_fd)
    return 0


@syscall(35, "unlinkat", ("dirfd", "str", "atflags"))
def sys_unlinkat(proc: Process, dirfd: int, pathname: int, flags: int) -> int:
    if flags & ~AT_REMOVEDIR:
        raise SyscallError(E.EINVAL)
    hpath, dir_fd = resolve(proc, dirfd, read_path(proc, pathname))
    if flags & AT_REMOVEDIR:
        os.rmdir(hpath, dir_fd=dir_fd)
    else:
        os.unlink(hpath, dir_fd=dir_fd)
    return 0


@syscall(36, "symlinkat", ("str", "dirfd", "str"))
def sys_symlinkat(proc: Process, target: int, dirfd: int, linkpath: int) -> int:
    t = read_path(proc, target)
    hpath, dir_fd = resolve(proc, dirfd, read_path(proc, linkpath))
    os.symlink(t, hpath, dir_fd=dir_fd)
    return 0


@syscall(37, "linkat", ("dirfd", "str", "dirfd", "str", "atflags"))
def sys_linkat(proc: Process, olddirfd: int, oldpath: int, newdirfd: int, newpath: int,
               flags: int) -> int:
    if flags & ~(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
        raise SyscallError(E.EINVAL)
    src, sfd = resolve(proc, olddirfd, read_path(proc, oldpath))
    dst, dfd = resolve(proc, newdirfd, read_path(proc, newpath))
    os.link(src, dst, src_dir_fd=sfd, dst_dir_fd=dfd,
            follow_symlinks=bool(flags & AT_SYMLINK_FOLLOW))
    return 0


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@syscall(276, "renameat2", ("dirfd", "str", "dirfd", "str", "uint"))
def sys_renameat2(proc: Process, olddirfd: int, oldpath: int, newdirfd: int, newpath: int,
                  flags: int) -> int:
    src, sfd = resolve(proc, olddirfd, read_path(proc, oldpath))
    dst, dfd = resolve(proc, newdirfd, read_path(proc, newpath))
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
        target, dir_fd = resolve(proc, dirfd, path)
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
    d, hfd = host_fd_of(proc, fd)
    if not d.is_dir:
        raise SyscallError(E.ENOTDIR)
    if _getdents64 is None:
        raise SyscallError(E.ENOSYS)
    if not access_ok(dirp, count):
        raise SyscallError(E.EFAULT)
    want = min(count, 1 << 20)
    n = writable_prefix(proc.mem, dirp, want)
    if n == 0:
        raise SyscallError(E.EFAULT if want else E.EINVAL)
    buf = ctypes.create_string_buffer(n)
    r = _getdents64(hfd, buf, n)
    if r < 0:
        err = ctypes.get_errno()
        # the first record did not fit in the accessible part: Linux faults on it
        raise SyscallError(E.EFAULT if err == E.EINVAL and n < want else err)
    proc.mem.write(dirp, buf.raw[:r])
    return r


@syscall(71, "sendfile", ("fd", "fd", "ptr", "size"))
def sys_sendfile(proc: Process, out_fd: int, in_fd: int, offset: int, count: int) -> int:
    din = proc.get_fd(in_fd)
    dout = proc.get_fd(out_fd)
    count = min(count, MAX_RW_COUNT, 1 << 24)
    if offset:
        off = read_struct(proc, offset, "<q")[0]
        data = din.data[off:off + count] if din.data is not None else \
            os.pread(din.host_fd, count, off)
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
