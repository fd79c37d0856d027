"""The guest stays inside its own process: a syscall given a buffer size no user range
can have fails with EFAULT before it copies anything, as Linux's access_ok makes it, and
hostile syscall arguments never raise out of the syscall layer. Single syscalls are
checked through handle_syscall on a live machine."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest

from dbtlab.ir.abi import ADDR_LIMIT
from dbtlab.ir.state import CPUState
from dbtlab.runtime.config import RunConfig
from dbtlab.runtime.linux.memory import PROT_READ, PROT_WRITE
from dbtlab.runtime.linux.syscalls import NUMBERS, handle_syscall
from dbtlab.runtime.machine import Machine

FIX = Path(__file__).resolve().parents[1] / "fixtures"
TINY = str(FIX / "rv64_static")
AT_FDCWD = -100
O_RDONLY, O_RDWR, O_CREAT, O_DIRECTORY = 0, 2, 0o100, 0o200000
SCRATCH = 0x20000000
M64 = (1 << 64) - 1


# ---- single syscalls on a live machine --------------------------------------------------------
class Live:
    """A Machine on the tiny fixture (not run), its Process, and a RW scratch area; calls
    go through handle_syscall as an ecall does."""

    def __init__(self, tmp: Path, *, stdio: tuple[int, int, int] | None = None) -> None:
        kw = {}
        if stdio is not None:
            kw = {"stdin": stdio[0], "stdout": stdio[1], "stderr": stdio[2]}
        self.m = Machine(TINY, [TINY], config=RunConfig(accel="interp", time_mode="virtual"),
                         **kw)
        self.proc = self.m.proc
        self.mem = self.m.mem
        self.mem.map(SCRATCH, 0x10000, PROT_READ | PROT_WRITE, "scratch")
        self.proc.cwd = str(tmp)
        self.cpu = CPUState()
        self.next = SCRATCH

    def call(self, nr: int | str, *args: int) -> int:
        if isinstance(nr, str):
            nr = NUMBERS[nr]
        self.cpu.x[17] = nr
        for i in range(6):
            self.cpu.x[10 + i] = (args[i] if i < len(args) else 0) & M64
        handle_syscall(self.proc, self.cpu)
        r = self.cpu.x[10]
        return r - (1 << 64) if r >> 63 else r

    def alloc(self, data: bytes | int) -> int:
        if isinstance(data, int):
            data = bytes(data)
        a = self.next
        self.next = (a + len(data) + 15) & ~15
        self.mem.write(a, data)
        return a

    def cstr(self, s: str) -> int:
        return self.alloc(s.encode() + b"\0")

    def open(self, path: str, flags: int = O_RDONLY, dirfd: int = AT_FDCWD) -> int:
        return self.call("openat", dirfd, self.cstr(path), flags, 0o644)

    def read_all(self, fd: int) -> bytes:
        buf = self.alloc(0x4000)
        out = b""
        while (n := self.call("read", fd, buf, 0x4000)) > 0:
            out += self.mem.read(buf, n)
        assert n == 0
        return out

    def close(self) -> None:
        self.m.close()


@pytest.fixture
def live(tmp_path):
    g = Live(tmp_path)
    yield g
    g.close()


@pytest.mark.parametrize("count", [M64, 1 << 63, ADDR_LIMIT])
def test_huge_counts_fault_before_anything_is_copied(live, tmp_path, count):
    """access_ok on the whole range: a buffer on the stack with a count that runs past
    2**38 is EFAULT and the stack is untouched (before: read copied up to 2 GiB over the
    stack, getrandom up to 32 MiB)."""
    (tmp_path / "f").write_bytes(b"y" * 100000)
    f = live.open(str(tmp_path / "f"), O_RDWR)
    hi = live.m.program.stack_range[1]
    buf = hi - 0x3000
    before = live.mem.read(buf, hi - buf)
    iov = live.alloc(struct.pack("<QQ", buf, count & ((1 << 63) - 1) or 1 << 62))
    for nr, args in (("read", (f, buf, count)), ("write", (f, buf, count)),
                     ("pread64", (f, buf, count, 0)), ("pwrite64", (f, buf, count, 0)),
                     ("readv", (f, iov, 1)), ("writev", (f, iov, 1)),
                     ("getrandom", (buf, count, 0))):
        assert live.call(nr, *args) == -errno.EFAULT, nr
    d = live.open(str(tmp_path), O_DIRECTORY)
    assert live.call("getdents64", d, buf, 0xFFFFFFFF) == -errno.EFAULT
    assert live.mem.read(buf, hi - buf) == before
    assert os.path.getsize(tmp_path / "f") == 100000


def test_counts_inside_the_address_space_copy_the_accessible_prefix(live, tmp_path):
    (tmp_path / "f").write_bytes(b"z" * 10000)
    f = live.open(str(tmp_path / "f"), O_RDWR)
    end = SCRATCH + 0x10000
    assert live.call("read", f, end - 100, 1 << 37) == 100            # stops at the hole
    assert live.call("pwrite64", f, end - 100, 1 << 37, 0) == 100
    assert live.call("read", f, end, 10) == -errno.EFAULT
    assert live.call("read", f, 0, 0) == 0
    assert live.call("read", f, ADDR_LIMIT, 0) == 0
    assert live.call("read", f, ADDR_LIMIT + 1, 0) == -errno.EFAULT
    iov = live.alloc(struct.pack("<QQ", SCRATCH, (1 << 63) + 5))
    assert live.call("readv", f, iov, 1) == -errno.EINVAL


def test_getcwd_copies_the_path_and_nothing_more(live, tmp_path):
    cwd = str(tmp_path).encode() + b"\0"
    buf = live.alloc(b"Z" * (len(cwd) + 64))
    for size in (len(cwd), 1 << 63, M64):
        assert live.call("getcwd", buf, size) == len(cwd)
        assert live.mem.read(buf, len(cwd) + 64) == cwd + b"Z" * 64
    assert live.call("getcwd", buf, len(cwd) - 1) == -errno.ERANGE
    assert live.call("getcwd", 0, len(cwd)) == -errno.EFAULT


def test_clocks_saturate_after_the_longest_sleeps(live):
    """Sleeps of the largest timespec twice over: virtual time stops at KTIME_MAX, as
    Linux saturates times, and the clocks still fit their structs (before: gettimeofday
    raised struct.error out of the syscall layer)."""
    ts = live.alloc(struct.pack("<qq", (1 << 63) - 1, 999_999_999))
    assert live.call("nanosleep", ts, 0) == 0
    assert live.call("clock_nanosleep", 1, 0, ts, 0) == 0
    tv = live.alloc(16)
    assert live.call("gettimeofday", tv, 0) == 0
    assert struct.unpack("<qq", live.mem.read(tv, 16)) == (9223372036, 854775)
    assert live.call("clock_gettime", 0, tv) == 0
    assert struct.unpack("<qq", live.mem.read(tv, 16)) == (9223372036, 854775807)
