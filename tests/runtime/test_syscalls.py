"""The syscall layer, called directly through handle_syscall on a loaded fixture program
with a synthetic CPUState: results, memory effects, errno conventions, strace lines."""

from __future__ import annotations

import errno
import io
import logging
import os
import struct
from pathlib import Path

import pytest

from dbtlab.ir.state import CPUState
from dbtlab.runtime.errors import DbtError
from dbtlab.runtime.linux.loader import StartConfig, load_elf
from dbtlab.runtime.linux.memory import PROT_EXEC, PROT_READ, PROT_WRITE, GuestMemory
from dbtlab.runtime.linux.process import Process
from dbtlab.runtime.linux.syscalls import NAMES, NUMBERS, TABLE, handle_syscall
from dbtlab.runtime.linux.syscalls.info import pack_utsname

FIX = Path(__file__).resolve().parents[1] / "fixtures"
STATIC = str(FIX / "rv64_static")
SCRATCH = 0x20000000          # a RW scratch area the tests put arguments in
AT_FDCWD = -100
RW = PROT_READ | PROT_WRITE


class Guest:
    """A loaded program, its Process and a CPUState, plus a bump allocator in SCRATCH."""

    def __init__(self, **proc_kw) -> None:
        self.mem = GuestMemory()
        cfg = StartConfig(argv=["prog", "x"], env=["A=1"], uid=1000, gid=1000)
        self.prog = load_elf(self.mem, STATIC, cfg)
        self.mem.map(SCRATCH, 0x10000, RW, "scratch")
        self.proc = Process(self.mem, self.prog, cfg, **proc_kw)
        self.cpu = CPUState()
        self.next = SCRATCH

    def call(self, nr: int | str, *args: int) -> int:
        if isinstance(nr, str):
            nr = NUMBERS[nr]
        self.cpu.x[17] = nr
        for i in range(6):
            self.cpu.x[10 + i] = (args[i] if i < len(args) else 0) & (2**64 - 1)
        handle_syscall(self.proc, self.cpu)
        r = self.cpu.x[10]
        return r - 2**64 if r >> 63 else r

    def alloc(self, data: bytes | int) -> int:
        if isinstance(data, int):
            data = bytes(data)
        a = self.next
        self.next = (a + len(data) + 15) & ~15
        self.mem.write(a, data)
        return a

    def cstr(self, s: str | bytes) -> int:
        return self.alloc((s.encode() if isinstance(s, str) else s) + b"\0")

    def close(self) -> None:
        self.proc.close()
        self.mem.close()


@pytest.fixture
def g():
    guest = Guest()
    yield guest
    guest.close()


@pytest.fixture
def captured():
    """A Guest whose stdout/stderr are pipes the test reads."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    guest = Guest(stdout=w1, stderr=w2)
    yield guest, r1, r2
    guest.close()
    for fd in (r1, w1, r2, w2):
        os.close(fd)


# ---- the table -----------------------------------------------------------------------------
def test_numbers_follow_asm_generic():
    expect = {"io_setup": 0, "getcwd": 17, "dup": 23, "dup3": 24, "fcntl": 25, "ioctl": 29,
              "mkdirat": 34, "unlinkat": 35, "faccessat": 48, "openat": 56, "close": 57,
              "getdents64": 61, "lseek": 62, "read": 63, "write": 64, "readv": 65,
              "writev": 66, "pread64": 67, "pwrite64": 68, "readlinkat": 78,
              "newfstatat": 79, "fstat": 80, "exit": 93, "exit_group": 94,
              "set_tid_address": 96, "futex": 98, "set_robust_list": 99, "nanosleep": 101,
              "clock_gettime": 113, "clock_getres": 114, "sched_getaffinity": 123,
              "kill": 129, "tgkill": 131, "rt_sigaction": 134, "rt_sigprocmask": 135,
              "uname": 160, "gettimeofday": 169, "getpid": 172, "getuid": 174,
              "geteuid": 175, "getgid": 176, "getegid": 177, "gettid": 178, "sysinfo": 179,
              "brk": 214, "munmap": 215, "mremap": 216, "mmap": 222, "mprotect": 226,
              "madvise": 233, "riscv_flush_icache": 259, "prlimit64": 261,
              "renameat2": 276, "getrandom": 278, "membarrier": 283, "statx": 291,
              "rseq": 293, "ftruncate": 46, "clone": 220, "execve": 221}
    for name, nr in expect.items():
        assert NUMBERS[name] == nr, name
    for nr, sc in TABLE.items():
        assert NAMES[nr] == sc.name, (nr, sc.name)


# ---- write / read --------------------------------------------------------------------------
def test_write_and_writev_to_captured_fds(captured):
    g, r1, r2 = captured
    buf = g.alloc(b"hello\n")
    assert g.call("write", 1, buf, 6) == 6
    assert os.read(r1, 100) == b"hello\n"
    a, b = g.alloc(b"ab"), g.alloc(b"cde")
    iov = g.alloc(struct.pack("<QQQQQQ", a, 2, 0, 0, b, 3))
    assert g.call("writev", 2, iov, 3) == 5
    assert os.read(r2, 100) == b"abcde"
    assert g.call("write", 1, buf, 0) == 0
    assert g.call("write", 7, buf, 1) == -errno.EBADF
    # bad buffers: EFAULT, nothing written
    assert g.call("write", 1, 0x1234000, 4) == -errno.EFAULT
    assert g.call("writev", 1, 0x1234000, 1) == -errno.EFAULT
    # a buffer running into unmapped memory writes the readable prefix (short write)
    end = SCRATCH + 0x10000
    assert g.call("write", 1, end - 3, 100) == 3
    assert len(os.read(r1, 100)) == 3


def test_stdio_close_does_not_close_host_fd(captured):
    g, r1, _ = captured
    w1 = g.proc.fds[1].host_fd
    assert g.call("close", 1) == 0
    assert g.call("close", 1) == -errno.EBADF
    os.fstat(w1)                                      # still open on the host
    buf = g.alloc(b"x")
    assert g.call("write", 1, buf, 1) == -errno.EBADF


def test_file_open_read_lseek_fstat_close(g, tmp_path):
    f = tmp_path / "data.txt"
    f.write_bytes(b"0123456789abcdef")
    path = g.cstr(str(f))
    fd = g.call("openat", AT_FDCWD, path, 0, 0)
    assert fd == 3
    buf = g.alloc(64)
    assert g.call("read", fd, buf, 4) == 4 and g.mem.read(buf, 4) == b"0123"
    assert g.call("lseek", fd, 10, 0) == 10
    assert g.call("read", fd, buf, 64) == 6 and g.mem.read(buf, 6) == b"abcdef"
    assert g.call("read", fd, buf, 64) == 0
    assert g.call("lseek", fd, -3, 2) == 13
    assert g.call("lseek", fd, 0, 9) == -errno.EINVAL
    assert g.call("pread64", fd, buf, 3, 1) == 3 and g.mem.read(buf, 3) == b"123"
    assert g.call("lseek", fd, 0, 1) == 13            # pread leaves the offset alone
    st = g.alloc(128)
    assert g.call("fstat", fd, st) == 0
    (dev, ino, mode, nlink, uid, gid, rdev, _p, size, blksize, _p2, blocks, at, atn, mt, mtn,
     ct, ctn, _u4, _u5) = struct.unpack("<QQIIIIQQqiiqqQqQqQII", g.mem.read(st, 128))
    hst = os.stat(f)
    assert (ino, mode, size, nlink) == (hst.st_ino, hst.st_mode, 16, 1)
    assert mt * 10**9 + mtn == hst.st_mtime_ns
    # read into an unwritable buffer: EFAULT (text page is read-only)
    assert g.call("lseek", fd, 0, 0) == 0
    assert g.call("read", fd, g.prog.entry & ~0xFFF, 4) == -errno.EFAULT
    assert g.call("close", fd) == 0
    assert g.call("close", fd) == -errno.EBADF
    assert g.call("read", fd, buf, 1) == -errno.EBADF
    # lowest free descriptor is reused
    assert g.call("openat", AT_FDCWD, path, 0, 0) == 3


def test_openat_errors_and_efault(g, tmp_path):
    assert g.call("openat", AT_FDCWD, g.cstr("/nonexistent/x"), 0, 0) == -errno.ENOENT
    assert g.call("openat", AT_FDCWD, 0, 0, 0) == -errno.EFAULT
    assert g.call("openat", AT_FDCWD, 0xDEAD0000, 0, 0) == -errno.EFAULT
    assert g.call("openat", AT_FDCWD, g.cstr(""), 0, 0) == -errno.ENOENT
    assert g.call("openat", AT_FDCWD, g.cstr("a" * 5000), 0, 0) == -errno.ENAMETOOLONG
    assert g.call("openat", 42, g.cstr("rel"), 0, 0) == -errno.EBADF
    (tmp_path / "f").write_text("x")
    p = g.cstr(str(tmp_path / "f"))
    # O_CREAT|O_EXCL on an existing file
    assert g.call("openat", AT_FDCWD, p, 0o100 | 0o200 | 1, 0o644) == -errno.EEXIST
    # O_DIRECTORY on a file
    assert g.call("openat", AT_FDCWD, p, 0o200000, 0) == -errno.ENOTDIR


def test_create_write_pwrite_ftruncate_rename_unlink(g, tmp_path):
    p = g.cstr(str(tmp_path / "new"))
    fd = g.call("openat", AT_FDCWD, p, 0o100 | 0o1000 | 2, 0o600)   # O_CREAT|O_TRUNC|O_RDWR
    assert fd >= 3
    assert g.call("write", fd, g.alloc(b"hello world"), 11) == 11
    assert g.call("pwrite64", fd, g.alloc(b"J"), 1, 0) == 1
    assert g.call("ftruncate", fd, 5) == 0
    assert g.call("close", fd) == 0
    assert (tmp_path / "new").read_bytes() == b"Jello"
    assert os.stat(tmp_path / "new").st_mode & 0o777 == 0o600
    q = g.cstr(str(tmp_path / "renamed"))
    assert g.call("renameat2", AT_FDCWD, p, AT_FDCWD, q, 0) == 0
    assert (tmp_path / "renamed").exists() and not (tmp_path / "new").exists()
    assert g.call("faccessat", AT_FDCWD, q, 4) == 0
    assert g.call("faccessat", AT_FDCWD, p, 0) == -errno.ENOENT
    d = g.cstr(str(tmp_path / "dir"))
    assert g.call("mkdirat", AT_FDCWD, d, 0o755) == 0
    assert g.call("unlinkat", AT_FDCWD, d, 0) in (-errno.EISDIR, -errno.EPERM)
    assert g.call("unlinkat", AT_FDCWD, d, 0x200) == 0
    assert g.call("unlinkat", AT_FDCWD, q, 0) == 0
    assert not (tmp_path / "renamed").exists()


def test_relative_paths_use_guest_cwd_and_dirfd(g, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_bytes(b"in sub")
    assert g.call("chdir", g.cstr(str(tmp_path))) == 0
    buf = g.alloc(256)
    n = g.call("getcwd", buf, 256)
    assert g.mem.read(buf, n) == os.fsencode(os.path.realpath(tmp_path)) + b"\0"
    assert g.call("getcwd", buf, 3) == -errno.ERANGE
    fd = g.call("openat", AT_FDCWD, g.cstr("sub/f"), 0, 0)
    assert fd >= 3 and g.call("read", fd, buf, 10) == 6
    dfd = g.call("openat", AT_FDCWD, g.cstr("sub"), 0o200000, 0)   # O_DIRECTORY
    fd2 = g.call("openat", dfd, g.cstr("f"), 0, 0)
    assert g.call("read", fd2, buf, 10) == 6 and g.mem.read(buf, 6) == b"in sub"
    assert g.call("read", dfd, buf, 10) == -errno.EISDIR
    assert g.call("chdir", g.cstr("sub/f")) == -errno.ENOTDIR
    assert g.call("fchdir", dfd) == 0
    assert g.proc.cwd == os.path.realpath(tmp_path / "sub")


def test_newfstatat_statx_and_empty_path(g, tmp_path):
    f = tmp_path / "s"
    f.write_bytes(b"12345")
    p = g.cstr(str(f))
    st = g.alloc(256)
    assert g.call("newfstatat", AT_FDCWD, p, st, 0) == 0
    assert struct.unpack_from("<q", g.mem.read(st, 128), 48)[0] == 5
    fd = g.call("openat", AT_FDCWD, p, 0, 0)
    empty = g.cstr("")
    assert g.call("newfstatat", fd, empty, st, 0) == -errno.ENOENT
    assert g.call("newfstatat", fd, empty, st, 0x1000) == 0        # AT_EMPTY_PATH
    assert struct.unpack_from("<q", g.mem.read(st, 128), 48)[0] == 5
    assert g.call("newfstatat", AT_FDCWD, p, st, 0x4) == -errno.EINVAL
    assert g.call("newfstatat", AT_FDCWD, p, 0x1234000, 0) == -errno.EFAULT
    assert g.call("statx", AT_FDCWD, p, 0, 0x7FF, st) == 0
    raw = g.mem.read(st, 256)
    mask, blksize = struct.unpack_from("<II", raw, 0)
    hst = os.stat(f)
    assert mask == 0x7FF and blksize == hst.st_blksize
    assert struct.unpack_from("<H", raw, 28)[0] == hst.st_mode
    assert struct.unpack_from("<QQ", raw, 32) == (hst.st_ino, 5)
    assert struct.unpack_from("<qI", raw, 112) == (hst.st_mtime_ns // 10**9,
                                                   hst.st_mtime_ns % 10**9)
    assert struct.unpack_from("<II", raw, 136) == (os.major(hst.st_dev), os.minor(hst.st_dev))


def test_readlinkat_proc_self_exe_and_proc_files(g):
    buf = g.alloc(4096)
    n = g.call("readlinkat", AT_FDCWD, g.cstr("/proc/self/exe"), buf, 4096)
    assert g.mem.read(buf, n) == os.fsencode(os.path.realpath(STATIC))
    assert g.call("readlinkat", AT_FDCWD, g.cstr("/proc/self/exe"), buf, 4) == 4
    assert g.call("readlinkat", AT_FDCWD, g.cstr("/proc/1000/exe"), buf, 4096) == n
    assert g.call("readlinkat", AT_FDCWD, g.cstr("/proc/self/exe"), buf, 0) == -errno.EINVAL
    fd = g.call("openat", AT_FDCWD, g.cstr("/proc/self/maps"), 0, 0)
    assert fd >= 3
    n = g.call("read", fd, buf, 4096)
    maps = g.mem.read(buf, n).decode()
    assert "01001000-01002000 r-xp 00000000 00:00 0" in maps
    assert os.path.realpath(STATIC) in maps
    assert "3fff7ff000-3ffffff000 rw-p" in maps and "[stack]" in maps
    assert g.call("close", fd) == 0
    fd = g.call("openat", AT_FDCWD, g.cstr("/proc/self/cmdline"), 0, 0)
    assert g.mem.read(buf, g.call("read", fd, buf, 100)) == b"prog\0x\0"
    # /proc/self/exe opens the program itself
    fd = g.call("openat", AT_FDCWD, g.cstr("/proc/self/exe"), 0, 0)
    assert g.call("read", fd, buf, 4) == 4 and g.mem.read(buf, 4) == b"\x7fELF"


def test_getdents64_lists_directory(g, tmp_path):
    for name in ("a", "bb", "ccc"):
        (tmp_path / name).write_text(name)
    fd = g.call("openat", AT_FDCWD, g.cstr(str(tmp_path)), 0o200000, 0)
    buf = g.alloc(4096)
    names = set()
    while True:
        n = g.call("getdents64", fd, buf, 4096)
        assert n >= 0
        if n == 0:
            break
        raw = g.mem.read(buf, n)
        off = 0
        while off < n:
            ino, doff, reclen, dtype = struct.unpack_from("<QqHB", raw, off)
            names.add(raw[off + 19:off + reclen].split(b"\0")[0].decode())
            off += reclen
    assert names == {".", "..", "a", "bb", "ccc"}
    file_fd = g.call("openat", AT_FDCWD, g.cstr(str(tmp_path / "a")), 0, 0)
    assert g.call("getdents64", file_fd, buf, 4096) == -errno.ENOTDIR


def test_dup_dup3_fcntl_pipe2(captured):
    g, r1, _ = captured
    fd = g.call("dup", 1)
    assert fd == 3
    assert g.call("write", fd, g.alloc(b"via dup"), 7) == 7
    assert os.read(r1, 100) == b"via dup"
    assert g.call("dup3", 1, 10, 0o2000000) == 10
    assert g.call("fcntl", 10, 1, 0) == 1                     # F_GETFD: FD_CLOEXEC
    assert g.call("fcntl", 3, 2, 1) == 0 and g.call("fcntl", 3, 1, 0) == 1
    assert g.call("dup3", 1, 1, 0) == -errno.EINVAL
    assert g.call("fcntl", 1, 0, 20) == 20                    # F_DUPFD >= 20
    assert g.call("fcntl", 1, 3, 0) & 3 == 1                  # F_GETFL: O_WRONLY pipe end
    assert g.call("fcntl", 99, 3, 0) == -errno.EBADF
    fds = g.alloc(8)
    assert g.call("pipe2", fds, 0) == 0
    rd, wr = struct.unpack("<ii", g.mem.read(fds, 8))
    assert g.call("write", wr, g.alloc(b"ping"), 4) == 4
    buf = g.alloc(8)
    assert g.call("read", rd, buf, 8) == 4 and g.mem.read(buf, 4) == b"ping"
    assert g.call("lseek", rd, 0, 0) == -errno.ESPIPE
    assert g.call("pipe2", 0x1234000, 0) == -errno.EFAULT


def test_ioctl_is_never_a_tty(g):
    assert g.call("ioctl", 1, 0x5413, g.alloc(8)) == -errno.ENOTTY     # TIOCGWINSZ
    assert g.call("ioctl", 0, 0x5401, g.alloc(64)) == -errno.ENOTTY    # TCGETS
    assert g.call("ioctl", 55, 0x5413, 0) == -errno.EBADF


def test_broken_pipe_kills_with_sigpipe():
    r, w = os.pipe()
    os.close(r)
    g = Guest(stdout=w)
    try:
        assert g.call("write", 1, g.alloc(b"x"), 1) == -errno.EPIPE
        assert g.proc.killed_by == 13
    finally:
        g.close()
        os.close(w)


# ---- memory --------------------------------------------------------------------------------
def test_brk_grow_and_shrink(g):
    start = g.prog.brk_start
    assert g.call("brk", 0) == start
    assert g.call("brk", start + 0x2345) == start + 0x2345
    assert g.mem.is_mapped(start, 0x3000) and not g.mem.is_mapped(start + 0x3000, 1)
    assert g.mem.pages[start >> 12].prot & 7 == RW
    g.mem.write(start + 0x2000, b"heap")
    assert g.call("brk", 0) == start + 0x2345
    assert g.call("brk", start + 0x1000) == start + 0x1000
    assert not g.mem.is_mapped(start + 0x1000, 1) and g.mem.is_mapped(start, 0x1000)
    assert g.call("brk", start - 0x1000) == start + 0x1000     # below start: unchanged
    # growing into an existing mapping fails (returns the old break)
    g.mem.map(start + 0x10000, 0x1000, RW)
    assert g.call("brk", start + 0x20000) == start + 0x1000
    assert g.call("brk", start) == start
    assert not g.mem.is_mapped(start, 1)


def test_mmap_anonymous_top_down_and_munmap(g):
    top = g.proc.mmap_top
    a = g.call("mmap", 0, 8192, 3, 0x22, -1, 0)                # PRIVATE|ANONYMOUS
    assert a == top - 8192
    b = g.call("mmap", 0, 100, 1, 0x22, -1, 0)
    assert b == a - 4096
    assert g.mem.pages[b >> 12].prot & 7 == PROT_READ
    assert g.mem.read(a, 8192) == bytes(8192)
    g.mem.write(a, b"x")
    assert g.call("munmap", a, 8192) == 0
    assert not g.mem.is_mapped(a, 1)
    assert g.call("mmap", 0, 4096, 3, 0x22, -1, 0) == top - 4096   # first fit from the top
    assert g.call("munmap", a + 1, 4096) == -errno.EINVAL
    assert g.call("munmap", a, 0) == -errno.EINVAL
    assert g.call("munmap", 0x30000000, 4096) == 0             # unmapped range: fine
    assert g.call("mmap", 0, 0, 3, 0x22, -1, 0) == -errno.EINVAL
    assert g.call("mmap", 0, 4096, 3, 0x20, -1, 0) == -errno.EINVAL  # neither SHARED nor PRIVATE
    assert g.call("mmap", 0, 4096, 3, 0x22, -1, 123) == -errno.EINVAL
    assert g.call("mmap", 0, 1 << 40, 3, 0x22, -1, 0) == -errno.ENOMEM
    assert g.call("mmap", 0, 4096, 3, 0x02, 77, 0) == -errno.EBADF


def test_mmap_fixed_noreplace_and_hint(g):
    fixed = 0x30000000
    assert g.call("mmap", fixed, 0x3000, 3, 0x32, -1, 0) == fixed      # MAP_FIXED
    g.mem.write(fixed, b"old")
    assert g.call("mmap", fixed, 0x1000, 1, 0x32, -1, 0) == fixed      # replaces
    assert g.mem.read(fixed, 3) == bytes(3)
    assert g.mem.pages[fixed >> 12].prot & 7 == PROT_READ
    assert g.mem.pages[(fixed >> 12) + 1].prot & 7 == RW
    assert g.call("mmap", fixed, 0x1000, 3, 0x100022, -1, 0) == -errno.EEXIST
    assert g.call("mmap", fixed + 0x3000, 0x1000, 3, 0x100022, -1, 0) == fixed + 0x3000
    assert g.call("mmap", fixed + 1, 0x1000, 3, 0x32, -1, 0) == -errno.EINVAL
    assert g.call("mmap", (1 << 38) - 0x1000, 0x2000, 3, 0x32, -1, 0) == -errno.ENOMEM
    # a free hint is used (page-aligned up); a taken one is not
    assert g.call("mmap", 0x40000123, 0x1000, 3, 0x22, -1, 0) == 0x40001000
    h = g.call("mmap", fixed, 0x1000, 3, 0x22, -1, 0)
    assert h != fixed and h == g.proc.mmap_top - 0x1000


def test_mmap_file(g, tmp_path):
    f = tmp_path / "m"
    f.write_bytes(b"A" * 4096 + b"B" * 100)
    fd = g.call("openat", AT_FDCWD, g.cstr(str(f)), 0, 0)
    a = g.call("mmap", 0, 8192, 1, 0x02, fd, 0)                       # PRIVATE, R
    assert g.mem.read(a, 4) == b"AAAA" and g.mem.read(a + 4096, 101) == b"B" * 100 + b"\0"
    b = g.call("mmap", 0, 100, 1, 0x02, fd, 4096)
    assert g.mem.read(b, 3) == b"BBB"
    assert g.call("mmap", 0, 4096, 3, 0x01, fd, 0) == -errno.EACCES    # SHARED+W on O_RDONLY


def test_mprotect(g):
    a = g.call("mmap", 0, 0x3000, 3, 0x22, -1, 0)
    assert g.call("mprotect", a + 0x1000, 0x1000, 1) == 0
    assert [g.mem.pages[(a >> 12) + i].prot & 7 for i in range(3)] == [RW, PROT_READ, RW]
    assert g.call("mprotect", a, 0x1000, 5) == 0
    assert g.mem.pages[a >> 12].prot & 7 == PROT_READ | PROT_EXEC
    assert g.call("mprotect", a + 1, 0x1000, 1) == -errno.EINVAL
    assert g.call("mprotect", a, 0x1000, 0x40) == -errno.EINVAL
    assert g.call("mprotect", a, 0x4000, 1) == -errno.ENOMEM          # runs past the end
    assert g.call("mprotect", a, 0, 1) == 0
    assert g.call("mprotect", a + 0x1000, 1, 0) == 0                   # PROT_NONE
    assert g.mem.pages[(a >> 12) + 1].prot & 7 == 0


def test_mremap(g):
    a = g.call("mmap", 0, 0x3000, 3, 0x22, -1, 0)
    g.mem.write(a, b"keep me")
    # shrink in place
    assert g.call("mremap", a, 0x3000, 0x1000, 0, 0) == a
    assert g.mem.is_mapped(a, 0x1000) and not g.mem.is_mapped(a + 0x1000, 1)
    # grow in place (the space above is free)
    assert g.call("mremap", a, 0x1000, 0x2000, 0, 0) == a
    assert g.mem.is_mapped(a, 0x2000) and g.mem.read(a, 7) == b"keep me"
    # blocked above: without MAYMOVE ENOMEM, with MAYMOVE it moves, contents kept
    g.mem.map(a + 0x2000, 0x1000, PROT_READ)
    assert g.call("mremap", a, 0x2000, 0x4000, 0, 0) == -errno.ENOMEM
    g.call("mprotect", a + 0x1000, 0x1000, 1)
    b = g.call("mremap", a, 0x2000, 0x4000, 1, 0)
    assert b != a and b > 0
    assert g.mem.read(b, 7) == b"keep me" and not g.mem.is_mapped(a, 1)
    assert [g.mem.pages[(b >> 12) + i].prot & 7 for i in range(4)] == \
        [RW, PROT_READ, PROT_READ, PROT_READ]
    # MREMAP_FIXED
    c = g.call("mremap", b, 0x1000, 0x1000, 3, 0x50000000)
    assert c == 0x50000000 and g.mem.read(c, 7) == b"keep me"
    assert g.call("mremap", 0x60000000, 0x1000, 0x2000, 1, 0) == -errno.EFAULT
    assert g.call("mremap", c + 1, 0x1000, 0x2000, 1, 0) == -errno.EINVAL
    assert g.call("mremap", c, 0x1000, 0x2000, 2, 0x7000000) == -errno.EINVAL   # FIXED w/o MAYMOVE


def test_madvise_dontneed_zeroes(g):
    a = g.call("mmap", 0, 0x2000, 3, 0x22, -1, 0)
    g.mem.write(a, b"dirty")
    assert g.call("madvise", a, 0x2000, 4) == 0
    assert g.mem.read(a, 5) == bytes(5)
    assert g.call("madvise", a + 1, 0x1000, 4) == -errno.EINVAL
    assert g.call("madvise", 0x60000000, 0x1000, 4) == -errno.ENOMEM


def test_riscv_flush_icache_calls_hook(g):
    seen = []
    g.proc.icache_flush = lambda s, e: seen.append((s, e))
    assert g.call("riscv_flush_icache", 0x1000, 0x2000, 0) == 0
    assert seen == [(0x1000, 0x2000)]


# ---- EFAULT and ENOSYS ---------------------------------------------------------------------
def test_bad_pointers_give_efault(g):
    bad = 0x1234000
    ro = g.prog.entry & ~0xFFF                   # mapped, not writable
    assert g.call("clock_gettime", 1, bad) == -errno.EFAULT
    assert g.call("uname", ro) == -errno.EFAULT
    assert g.call("read", 0, bad, 10) == -errno.EFAULT
    assert g.call("rt_sigaction", 6, bad, 0, 8) == -errno.EFAULT
    assert g.call("fstat", 1, bad) == -errno.EFAULT
    assert g.call("getrandom", bad, 16, 0) == -errno.EFAULT
    assert g.call("nanosleep", bad, 0) == -errno.EFAULT
    assert g.call("futex", bad, 0, 0, 0, 0, 0) == -errno.EFAULT


def test_unknown_syscall_enosys_warns_once(g, caplog):
    with caplog.at_level(logging.WARNING):
        assert g.call(220) == -errno.ENOSYS                   # clone
        assert g.call(220) == -errno.ENOSYS
        assert g.call(4000) == -errno.ENOSYS
        assert g.call(4000) == -errno.ENOSYS
    msgs = [r.getMessage() for r in caplog.records if "unsupported syscall" in r.getMessage()]
    assert msgs == ["unsupported syscall 220 (clone): returning -ENOSYS",
                    "unsupported syscall 4000 (syscall_4000): returning -ENOSYS"]
    assert g.call("rseq", 0, 32, 0, 0) == -errno.ENOSYS      # known, silently unsupported


# ---- identity and info ---------------------------------------------------------------------
def test_identity(g):
    assert g.call("getpid") == 1000 and g.call("gettid") == 1000
    assert g.call("getppid") == 999
    assert (g.call("getuid"), g.call("geteuid"), g.call("getgid"), g.call("getegid")) == \
        (1000, 1000, 1000, 1000)
    assert g.call("set_tid_address", 0x1234) == 1000
    assert g.call("set_robust_list", 0x1000, 24) == 0
    assert g.call("set_robust_list", 0x1000, 16) == -errno.EINVAL
    mask = g.alloc(128)
    assert g.call("sched_getaffinity", 0, 128, mask) == 8
    assert g.mem.load(mask, 8) == 1
    assert g.call("sched_getaffinity", 0, 4, mask) == -errno.EINVAL
    assert g.call("sched_getaffinity", 4242, 128, mask) == -errno.ESRCH


def test_uname(g):
    buf = g.alloc(390)
    assert g.call("uname", buf) == 0
    raw = g.mem.read(buf, 390)
    fields = [raw[i * 65:(i + 1) * 65].split(b"\0")[0].decode() for i in range(6)]
    assert fields == ["Linux", "dbtlab", "6.1.0-dbtlab",
                      "#1 SMP PREEMPT_DYNAMIC Thu Jan  1 00:00:00 UTC 2026", "riscv64",
                      "(none)"]
    assert raw == pack_utsname()


def test_prlimit_and_sysinfo(g):
    old = g.alloc(16)
    assert g.call("prlimit64", 0, 3, 0, old) == 0                # RLIMIT_STACK
    assert struct.unpack("<QQ", g.mem.read(old, 16)) == (8 << 20, 2**64 - 1)
    new = g.alloc(struct.pack("<QQ", 1 << 20, 2**64 - 1))
    assert g.call("prlimit64", 0, 3, new, old) == 0
    assert g.call("prlimit64", 0, 3, 0, old) == 0
    assert struct.unpack("<QQ", g.mem.read(old, 16))[0] == 1 << 20
    assert g.call("prlimit64", 0, 99, 0, old) == -errno.EINVAL
    assert g.call("prlimit64", 77, 3, 0, old) == -errno.ESRCH
    assert g.call("getrlimit", 7, old) == 0
    assert struct.unpack("<QQ", g.mem.read(old, 16)) == (1024, 1048576)
    si = g.alloc(112)
    assert g.call("sysinfo", si) == 0
    vals = struct.unpack("<q3Q6QH6xQQI4x", g.mem.read(si, 112))
    assert vals[4] == 8 << 30 and vals[10] == 1 and vals[13] == 1


def test_getrandom_seeded_and_deterministic():
    outs = []
    for _ in range(2):
        g = Guest()
        try:
            a = g.alloc(40)
            assert g.call("getrandom", a, 40, 0) == 40
            b = g.alloc(8)
            assert g.call("getrandom", b, 8, 1) == 8
            outs.append((g.mem.read(a, 40), g.mem.read(b, 8)))
            assert g.call("getrandom", a, 8, 0x80) == -errno.EINVAL
        finally:
            g.close()
    assert outs[0] == outs[1] and outs[0][0][:8] != outs[0][1]


# ---- time ----------------------------------------------------------------------------------
def test_virtual_clock_is_a_function_of_instret():
    g = Guest(time_mode="virtual", ns_per_insn=2.0)
    try:
        insns = [0]
        g.proc.instret_source = lambda: insns[0]
        ts = g.alloc(16)

        def now(clock: int) -> int:
            assert g.call("clock_gettime", clock, ts) == 0
            s, ns = struct.unpack("<qq", g.mem.read(ts, 16))
            return s * 10**9 + ns

        assert now(0) == 1767225600 * 10**9                  # 2026-01-01T00:00:00Z
        assert now(1) == 1000 * 10**9
        assert now(2) == 0
        insns[0] = 1_500_000_000
        assert now(1) == 1000 * 10**9 + 3 * 10**9
        assert now(2) == 3 * 10**9
        # nanosleep advances guest time without sleeping
        req = g.alloc(struct.pack("<qq", 5, 250))
        assert g.call("nanosleep", req, 0) == 0
        assert now(1) == 1008 * 10**9 + 250
        assert now(2) == 3 * 10**9                            # CPU time did not move
        tv = g.alloc(16)
        assert g.call("gettimeofday", tv, 0) == 0
        assert struct.unpack("<qq", g.mem.read(tv, 16)) == (1767225608, 0)
        assert g.call("clock_gettime", 99, ts) == -errno.EINVAL
        assert g.call("clock_getres", 1, ts) == 0
        assert struct.unpack("<qq", g.mem.read(ts, 16)) == (0, 1)
        bad = g.alloc(struct.pack("<qq", 0, 10**9))
        assert g.call("nanosleep", bad, 0) == -errno.EINVAL
        abs_req = g.alloc(struct.pack("<qq", 1010, 0))
        assert g.call("clock_nanosleep", 1, 1, abs_req, 0) == 0   # TIMER_ABSTIME
        assert now(1) == 1010 * 10**9
    finally:
        g.close()


def test_host_clock_moves():
    g = Guest(time_mode="host")
    try:
        ts = g.alloc(16)
        assert g.call("clock_gettime", 0, ts) == 0
        s, _ = struct.unpack("<qq", g.mem.read(ts, 16))
        import time
        assert abs(s - time.time()) < 5
    finally:
        g.close()


# ---- futex, signals ------------------------------------------------------------------------
def test_futex_single_thread(g):
    word = g.alloc(struct.pack("<I", 7))
    assert g.call("futex", word, 1 | 128, 1, 0, 0, 0) == 0               # WAKE_PRIVATE
    assert g.call("futex", word, 0 | 128, 6, 0, 0, 0) == -errno.EAGAIN   # value changed
    g.proc.time_mode = "virtual"
    timeout = g.alloc(struct.pack("<qq", 0, 1000))
    assert g.call("futex", word, 0, 7, timeout, 0, 0) == -errno.ETIMEDOUT
    assert g.proc.slept_ns == 1000
    with pytest.raises(DbtError, match="guest deadlock: futex wait"):
        g.call("futex", word, 0, 7, 0, 0, 0)
    assert g.call("futex", word + 1, 1, 1, 0, 0, 0) == -errno.EINVAL


def test_rt_sigaction_records_and_returns_old(g):
    act = g.alloc(struct.pack("<QQQ", 0x1234, 0x4000000, 0x5))
    old = g.alloc(24)
    assert g.call("rt_sigaction", 10, act, old, 8) == 0
    assert g.mem.read(old, 24) == bytes(24)
    assert g.call("rt_sigaction", 10, 0, old, 8) == 0
    assert struct.unpack("<QQQ", g.mem.read(old, 24)) == (0x1234, 0x4000000, 5)
    assert g.call("rt_sigaction", 9, act, 0, 8) == -errno.EINVAL         # SIGKILL
    assert g.call("rt_sigaction", 10, act, 0, 16) == -errno.EINVAL
    assert g.call("rt_sigaction", 65, act, 0, 8) == -errno.EINVAL


def test_abort_kills_with_sigabrt(g):
    assert g.call("tgkill", 1000, 1000, 6) == 0
    assert g.proc.killed_by == 6 and g.proc.exit_status is None


def test_blocked_signal_is_delivered_on_unblock(g):
    """musl's raise(): block all, tkill, restore the mask -> dies at the restore."""
    full = g.alloc(struct.pack("<Q", 2**64 - 1))
    old = g.alloc(8)
    assert g.call("rt_sigprocmask", 0, full, old, 8) == 0
    assert g.call("tkill", 1000, 6) == 0
    assert g.proc.killed_by is None and g.proc.pending == {6}
    assert g.call("rt_sigprocmask", 2, old, 0, 8) == 0
    assert g.proc.killed_by == 6


def test_ignored_default_ignored_and_handled_signals(g, caplog):
    ign = g.alloc(struct.pack("<QQQ", 1, 0, 0))                          # SIG_IGN
    assert g.call("rt_sigaction", 15, ign, 0, 8) == 0
    assert g.call("kill", 1000, 15) == 0 and g.proc.killed_by is None
    assert g.call("kill", 1000, 17) == 0 and g.proc.killed_by is None   # SIGCHLD: ignore
    assert g.call("kill", 1000, 0) == 0
    handler = g.alloc(struct.pack("<QQQ", 0x1000, 0, 0))
    assert g.call("rt_sigaction", 6, handler, 0, 8) == 0
    with caplog.at_level(logging.WARNING):
        assert g.call("kill", 1000, 6) == 0
    assert g.proc.killed_by is None and "handler at 0x1000 not run" in caplog.text
    assert g.call("kill", 4242, 6) == -errno.ESRCH
    assert g.call("tgkill", 1000, 1, 6) == -errno.ESRCH
    assert g.call("kill", 1000, 99) == -errno.EINVAL


def test_exit_group_sets_status(g):
    g.cpu.x[10] = 0
    assert g.call("exit_group", 0x1FF) == 0x1FF        # a0 is left alone: no return
    assert g.proc.exit_status == 0xFF
    g2 = Guest()
    try:
        g2.call("exit", 3)
        assert g2.proc.exit_status == 3 and g2.proc.done
    finally:
        g2.close()


# ---- strace --------------------------------------------------------------------------------
def test_strace_lines(tmp_path):
    out = io.StringIO()
    g = Guest(strace=True, strace_stream=out, time_mode="virtual")
    try:
        (tmp_path / "h").write_text("x")
        g.call("brk", 0)
        g.call("openat", AT_FDCWD, g.cstr(str(tmp_path / "h")), 0o100000, 0)
        g.call("openat", AT_FDCWD, g.cstr("/nonexistent"), 0, 0)
        g.call("openat", AT_FDCWD, g.cstr(f"{tmp_path}/x\n\"q"), 0o1102, 0o644)
        g.call("mmap", 0, 8192, 3, 0x22, -1, 0)
        g.call("ioctl", 1, 0x5413, 0x3ffffff6a8)
        g.call("clock_gettime", 1, g.alloc(16))
        g.call("rt_sigprocmask", 0, 0, 0, 8)
        g.call("newfstatat", 1, g.cstr(""), g.alloc(128), 0x1000)
        g.call("futex", 0x1000, 129, 1, 0, 0, 0)
        g.call(220, 17, 0, -1)
        g.call("tgkill", 1000, 1000, 6)
        g2 = g.call("exit_group", 3)
        del g2
    finally:
        g.close()
    lines = out.getvalue().splitlines()
    brk = g.prog.brk_start
    assert lines[0] == f"1000 brk(NULL) = {brk:#018x}"
    assert lines[1] == f'1000 openat(AT_FDCWD,"{tmp_path}/h",O_RDONLY|O_LARGEFILE) = 3'
    assert lines[2] == ('1000 openat(AT_FDCWD,"/nonexistent",O_RDONLY) = -1 errno=2 '
                        '(No such file or directory)')
    assert lines[3] == (f'1000 openat(AT_FDCWD,"{tmp_path}/x\\n\\"q",'
                        'O_RDWR|O_CREAT|O_TRUNC,0644) = 4')
    assert lines[4] == ("1000 mmap(NULL,8192,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,"
                        "-1,0) = 0x0000003ff7ffe000")
    assert lines[5] == ("1000 ioctl(1,TIOCGWINSZ,0x3ffffff6a8) = -1 errno=25 "
                        "(Inappropriate ioctl for device)")
    assert lines[6].startswith("1000 clock_gettime(CLOCK_MONOTONIC,0x") and \
        lines[6].endswith(" = 0 ({tv_sec = 1000,tv_nsec = 0})")
    assert lines[7] == "1000 rt_sigprocmask(SIG_BLOCK,NULL,NULL,8) = 0"
    assert lines[8].startswith('1000 newfstatat(1,"",0x') and \
        lines[8].endswith(",AT_EMPTY_PATH) = 0")
    assert lines[9] == "1000 futex(0x1000,FUTEX_WAKE|FUTEX_PRIVATE_FLAG,1,NULL,NULL,0) = 0"
    assert lines[10] == ("1000 clone(17,0,-1,0,0,0) = -1 errno=38 (Function not implemented)")
    assert lines[11] == "1000 tgkill(1000,1000,SIGABRT) = 0"
    assert lines[12] == ("--- SIGABRT {si_signo=SIGABRT, si_code=SI_TKILL, si_pid=1000, "
                         "si_uid=1000} ---")
    assert lines[13] == "+++ killed by SIGABRT +++"
    assert lines[14] == "1000 exit_group(3)"
    assert len(lines) == 15, lines[14:]


def test_strace_off_writes_nothing(capsys, g):
    g.call("getpid")
    assert capsys.readouterr().err == ""


def test_proc_self_walks_like_a_guest_pid(g):
    """realpath("/proc/self/exe") reads links component by component."""
    buf = g.alloc(4096)
    assert g.call("readlinkat", AT_FDCWD, g.cstr("/proc"), buf, 4096) == -errno.EINVAL
    n = g.call("readlinkat", AT_FDCWD, g.cstr("/proc/self"), buf, 4096)
    assert g.mem.read(buf, n) == b"1000"
    assert g.call("readlinkat", AT_FDCWD, g.cstr("/proc/1000"), buf, 4096) == -errno.EINVAL
    n = g.call("readlinkat", AT_FDCWD, g.cstr("/proc/1000/exe"), buf, 4096)
    assert g.mem.read(buf, n) == os.fsencode(os.path.realpath(STATIC))
    st = g.alloc(128)
    assert g.call("newfstatat", AT_FDCWD, g.cstr("/proc/1000"), st, 0x100) == 0
    assert struct.unpack_from("<I", g.mem.read(st, 128), 16)[0] & 0o170000 == 0o040000


def test_range_set():
    from dbtlab.runtime.linux.process import RangeSet
    r = RangeSet()
    r.add(0x1000, 0x3000)
    r.add(0x5000, 0x6000)
    r.add(0x3000, 0x4000)                      # adjacent: merged
    assert list(r) == [(0x1000, 0x4000), (0x5000, 0x6000)]
    r.add(0x3800, 0x5800)                      # bridges both
    assert list(r) == [(0x1000, 0x6000)]
    r.remove(0x2000, 0x3000)
    assert list(r) == [(0x1000, 0x2000), (0x3000, 0x6000)]
    r.remove(0x0, 0x1800)
    assert list(r) == [(0x1800, 0x2000), (0x3000, 0x6000)]
    r.remove(0x5000, 0x9000)
    assert list(r) == [(0x1800, 0x2000), (0x3000, 0x5000)]
    assert r.overlaps(0x1F00, 0x2100) and not r.overlaps(0x2000, 0x3000)
    assert r.find_top_down(0x1000, 0, 0x10000) == 0xF000
    assert r.find_top_down(0x1000, 0, 0x5000) == 0x2000
    assert r.find_top_down(0x1800, 0, 0x5000) == 0x0
    assert r.find_top_down(0x1800, 0x100, 0x5000) is None
    assert r.find_top_down(0x800, 0x100, 0x4000) == 0x2800
    assert r.find_top_down(0x800, 0x100, 0x2800) == 0x2000
    assert r.find_top_down(0x800, 0x100, 0x2000) == 0x1000


def test_machine_runs_fixture_end_to_end():
    """Loader + Process + syscalls under the Machine and the reference interpreter: the
    fixture writes "hi\\n" and exits with argc + its first .bss byte."""
    from dbtlab.runtime.config import RunConfig
    from dbtlab.runtime.machine import Machine
    r, w = os.pipe()
    try:
        with Machine(STATIC, [STATIC, "a", "b"], stdout=w,
                     config=RunConfig(accel="interp", time_mode="virtual")) as m:
            res = m.run()
        assert res.status == 3 and res.signal is None
        assert os.read(r, 100) == b"hi\n"
    finally:
        os.close(r)
        os.close(w)


def test_strace_mapping_addresses_and_timespecs():
    out = io.StringIO()
    g = Guest(strace=True, strace_stream=out, time_mode="virtual")
    try:
        a = g.call("mmap", 0, 4096, 3, 0x22, -1, 0)
        g.call("mprotect", a, 4096, 0)
        g.call("munmap", a, 4096)
        g.call("nanosleep", g.alloc(struct.pack("<qq", 0, 1000000)), 0)
        g.call("brk", g.prog.brk_start + 0x100)
    finally:
        g.close()
    assert out.getvalue().splitlines() == [
        f"1000 mmap(NULL,4096,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0) = {a:#018x}",
        f"1000 mprotect({a:#018x},4096,PROT_NONE) = 0",
        f"1000 munmap({a:#018x},4096) = 0",
        "1000 nanosleep({tv_sec = 0,tv_nsec = 1000000},NULL) = 0",
        f"1000 brk({g.prog.brk_start + 0x100:#018x}) = {g.prog.brk_start + 0x100:#018x}",
    ]
