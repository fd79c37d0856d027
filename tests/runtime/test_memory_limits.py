"""Huge memory costs nothing until it is used, and limits are Linux's.

Guest programs (tests/fixtures/src/bigbss.c, bigmem.c) with a 4 GiB .bss, a 64 GiB
anonymous mmap, brk +64 GiB and a 64 GiB file mapping run to their expected output with
little host memory (each in a fresh interpreter, so its peak RSS is its own); the errno
cases match Linux's; the loader refuses files that are not regular files in one line, and
reads only what the program headers name. The interval map behind GuestMemory is checked
against a page-by-page model on random operations."""

from __future__ import annotations

import errno
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from dbtlab.ir.state import FAULT_LOAD, FAULT_STORE
from dbtlab.runtime.errors import LoadError
from dbtlab.runtime.linux.loader import StartConfig, load_elf
from dbtlab.runtime.linux.memory import (PAGE_SIZE, PROT_CODE, PROT_EXEC, PROT_READ, PROT_WRITE,
                                         GuestFault, GuestMemory)
from tests.runtime.test_syscalls import Guest

FIX = Path(__file__).resolve().parents[1] / "fixtures"
BIGBSS = str(FIX / "bigbss")
BIGMEM = str(FIX / "bigmem")
TINY = str(FIX / "rv64_static")
GIB = 1 << 30
RW = PROT_READ | PROT_WRITE
#: generous bound on what a huge case may add to the peak RSS of running a tiny program
RSS_GROWTH_LIMIT = 200 << 20

_RUNNER = r"""
import json, resource, sys
import dbtlab
r = dbtlab.run(sys.argv[1], sys.argv[2:], accel="interp")
print(json.dumps({"stdout": r.stdout.decode(), "status": r.status, "message": r.message,
                  "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def _run_fresh(*args: str) -> dict:
    """Run a guest program with dbtlab in a fresh interpreter: its result and peak RSS."""
    p = subprocess.run([sys.executable, "-c", _RUNNER, *args], capture_output=True,
                       text=True, timeout=600, cwd=Path(__file__).resolve().parents[2],
                       check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def base_rss() -> int:
    r = _run_fresh(TINY)
    assert r["stdout"] == "hi\n"
    return r["maxrss"]


def _check_small(r: dict, base_rss: int) -> None:
    assert r["maxrss"] - base_rss < RSS_GROWTH_LIMIT, (r["maxrss"], base_rss)


# ---- huge programs -------------------------------------------------------------------------
def test_4gib_bss_is_reserved_lazily(base_rss):
    r = _run_fresh(BIGBSS)
    assert (r["stdout"], r["status"]) == ("bss 4 GiB: 1 2 3\n", 0), r["message"]
    _check_small(r, base_rss)


def test_64gib_anonymous_mmap(base_rss):
    r = _run_fresh(BIGMEM, "mmap", "64")
    assert (r["stdout"], r["status"]) == ("mmap 64 GiB: 1 2 3 0\nmunmap: 0\n", 0)
    _check_small(r, base_rss)


def test_brk_grows_by_64gib(base_rss):
    r = _run_fresh(BIGMEM, "brk", "64")
    assert (r["stdout"], r["status"]) == ("brk +64 GiB: 5 0 7\nshrink: 1\n", 0)
    _check_small(r, base_rss)


@pytest.fixture
def sparse_64gib(tmp_path) -> Path:
    """A 64 GiB sparse file with 'A' at 1 GiB and 'Z' at 3 GiB - 1."""
    path = tmp_path / "sparse"
    try:
        with open(path, "wb") as f:
            f.truncate(64 * GIB)
            f.seek(GIB)
            f.write(b"A")
            f.seek(3 * GIB - 1)
            f.write(b"Z")
    except OSError as e:                  # pragma: no cover - a file system without
        pytest.skip(f"cannot make a 64 GiB sparse file here: {e}")   # sparse files
    return path


def test_64gib_file_mmap(base_rss, sparse_64gib):
    r = _run_fresh(BIGMEM, "file", str(sparse_64gib), "64")
    assert (r["stdout"], r["status"]) == ("file 64 GiB: 0 65 0\n", 0), r["message"]
    _check_small(r, base_rss)


def test_limits_give_linux_errnos():
    """What qemu-riscv64 cannot show (it maps the guest into the host's address space and
    passes RLIMIT_AS to the host) is what Linux on an Sv39 riscv64 machine does."""
    r = _run_fresh(BIGMEM, "limits")
    assert r["stdout"].splitlines() == [
        "RLIMIT_AS: unlimited",
        "mmap 1 TiB: Out of memory",                    # more than the address space
        "mmap 200 GiB: ok",
        "mmap another 200 GiB: Out of memory",          # does not fit beside the first
        "brk +1 TiB keeps the break: 1",
        "setrlimit: 0",
        "RLIMIT_AS: 1024 MiB",
        "mmap 2 GiB under a 1 GiB limit: Out of memory",
        "mmap 64 MiB under a 1 GiB limit: ok",
        "brk +2 GiB keeps the break: 1",
        "brk +1 MiB moves the break: 1",
    ]


# ---- syscalls, directly ------------------------------------------------------------------
@pytest.fixture
def g():
    guest = Guest()
    yield guest
    guest.close()


def _open(g, path: str, flags: int = 0) -> int:
    fd = g.call("openat", -100, g.cstr(path), flags, 0)
    assert fd >= 0, fd
    return fd


def test_mmap_of_a_huge_sparse_file_copies_only_its_data(g, sparse_64gib):
    fd = _open(g, str(sparse_64gib))
    a = g.call("mmap", 0, 64 * GIB, PROT_READ, 0x02, fd, 0)             # MAP_PRIVATE
    assert a > 0
    assert g.mem.data_ranges(a, 64 * GIB) == [(a + GIB, a + GIB + PAGE_SIZE),
                                              (a + 3 * GIB - PAGE_SIZE, a + 3 * GIB)]
    assert g.mem.read(a + GIB - 1, 2) == b"\0A" and g.mem.read(a + 3 * GIB - 1, 1) == b"Z"
    # at an offset, shorter than the file, and past its end
    b = g.call("mmap", 0, 8192, PROT_READ, 0x02, fd, GIB)
    assert g.mem.read(b, 2) == b"A\0"
    c = g.call("mmap", 0, 3 * GIB, PROT_READ, 0x02, fd, 62 * GIB)
    assert c > 0 and g.mem.read(c + 3 * GIB - 1, 1) == b"\0"
    assert g.call("lseek", fd, 0, 1) == 0                    # the file offset is untouched


def test_mmap_of_devices_fifos_and_directories(g, tmp_path):
    a = g.call("mmap", 0, 16 * GIB, RW, 0x02, _open(g, "/dev/zero"), 0)
    assert a > 0 and g.mem.load(a + 8 * GIB, 8) == 0
    g.mem.store(a + 8 * GIB, 8, 7)
    assert g.call("mmap", 0, 4096, PROT_READ, 0x02, _open(g, "/dev/urandom"), 0) == -errno.ENODEV
    assert g.call("mmap", 0, 4096, PROT_READ, 0x02, _open(g, str(tmp_path), 0o200000),
                  0) == -errno.ENODEV                                   # O_DIRECTORY
    os.mkfifo(tmp_path / "fifo")
    fifo = _open(g, str(tmp_path / "fifo"), 0o4000)                     # O_NONBLOCK
    assert g.call("mmap", 0, 4096, PROT_READ, 0x02, fifo, 0) == -errno.ENODEV


def test_address_space_and_rlimit_as(g):
    top = 1 << 38
    assert g.call("mmap", 0, top + 4096, RW, 0x22, -1, 0) == -errno.ENOMEM
    assert g.call("mmap", top - 0x2000, 0x3000, RW, 0x32, -1, 0) == -errno.ENOMEM   # FIXED
    a = g.call("mmap", 0, 200 * GIB, RW, 0x22, -1, 0)
    assert a > 0
    assert g.call("mmap", 0, 100 * GIB, RW, 0x22, -1, 0) == -errno.ENOMEM
    assert g.call("munmap", a, 200 * GIB) == 0
    # RLIMIT_AS: unlimited by default; then the mapped total may not pass it
    old = g.alloc(16)
    assert g.call("prlimit64", 0, 9, 0, old) == 0
    assert struct.unpack("<QQ", g.mem.read(old, 16)) == (2**64 - 1, 2**64 - 1)
    mapped = g.mem.mapped_size
    lim = g.alloc(struct.pack("<QQ", mapped + 64 * PAGE_SIZE, 2**64 - 1))
    assert g.call("prlimit64", 0, 9, lim, 0) == 0
    assert g.call("mmap", 0, 65 * PAGE_SIZE, RW, 0x22, -1, 0) == -errno.ENOMEM
    b = g.call("mmap", 0, 60 * PAGE_SIZE, RW, 0x22, -1, 0)
    assert b > 0
    # MAP_FIXED over mapped pages only counts what it adds
    assert g.call("mmap", b, 64 * PAGE_SIZE, RW, 0x32, -1, 0) == b
    assert g.call("mmap", b, 65 * PAGE_SIZE, RW, 0x32, -1, 0) == -errno.ENOMEM
    brk = g.call("brk", 0)
    assert g.call("brk", brk + GIB) == brk                     # the old break, as Linux
    assert g.call("mremap", b, 64 * PAGE_SIZE, 65 * PAGE_SIZE, 1, 0) == -errno.ENOMEM
    assert g.call("munmap", b, 64 * PAGE_SIZE) == 0
    assert g.call("brk", brk + 16 * PAGE_SIZE) == brk + 16 * PAGE_SIZE


def test_huge_mremap_and_madvise_touch_only_written_pages(g):
    a = g.call("mmap", 0, 32 * GIB, RW, 0x22, -1, 0)
    g.mem.store(a + 16 * GIB, 8, 0x1122334455667788)
    g.mem.store(a + 32 * GIB - 8, 8, 5)
    g.call("mprotect", a + GIB, GIB, PROT_READ)
    b = g.call("mremap", a, 32 * GIB, 40 * GIB, 1, 0)                   # MAYMOVE
    assert b > 0 and b != a
    assert g.mem.load(b + 16 * GIB, 8) == 0x1122334455667788
    assert g.mem.load(b + 32 * GIB - 8, 8) == 5
    assert g.mem.pages[(b + GIB) >> 12].prot == PROT_READ
    assert g.mem.pages[(b + 39 * GIB) >> 12].prot == RW
    assert g.mem.is_free(a, 32 * GIB)
    assert len(g.mem.data_ranges(b, 40 * GIB)) == 2
    assert g.call("madvise", b, 40 * GIB, 4) == 0                       # MADV_DONTNEED
    assert g.mem.load(b + 16 * GIB, 8) == 0 and g.mem.data_ranges(b, 16 * GIB) == []


# ---- the loader ----------------------------------------------------------------------------
def _load_error(path: str) -> str:
    mem = GuestMemory()
    try:
        with pytest.raises(LoadError) as e:
            load_elf(mem, path, StartConfig())
    finally:
        mem.close()
    return str(e.value)


def test_loader_refuses_what_is_not_a_regular_file(tmp_path):
    assert _load_error("/dev/zero") == "/dev/zero: a character device, not a program file"
    assert _load_error("/dev/urandom") == \
        "/dev/urandom: a character device, not a program file"
    os.mkfifo(tmp_path / "fifo")                 # opening it for reading would block
    assert _load_error(str(tmp_path / "fifo")) == \
        f"{tmp_path / 'fifo'}: a FIFO (named pipe), not a program file"
    assert _load_error(str(tmp_path)) == f"{tmp_path}: is a directory, not a program"


def test_cli_refuses_a_fifo_in_one_line(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    r = subprocess.run([sys.executable, "-m", "dbtlab.runtime.cli", "run",
                        str(tmp_path / "fifo")], capture_output=True, text=True, timeout=120,
                       check=False)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == f"dbtlab: {tmp_path / 'fifo'}: a FIFO (named pipe), not a program file\n"


def _elf_with_segment(path: Path, *, offset: int, filesz: int, memsz: int,
                      size: int | None = None) -> None:
    """A minimal RV64 ET_EXEC with one RW PT_LOAD at 0x10000 (entry there too)."""
    eh = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, b"", 2, 243, 1,
                     0x10000, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 1, 7, offset, 0x10000, 0x10000, filesz, memsz, 0x1000)
    with open(path, "wb") as f:
        f.write(eh + ph)
        f.seek(offset)
        f.write(b"\x6f\x00\x00\x00" * 4)             # j . (the segment's first bytes)
        if size is not None:
            f.truncate(size)


def test_loader_reads_only_the_segments(tmp_path):
    # a 4 GiB sparse file whose one segment is 16 bytes at 0x1000 and a 4 GiB .bss
    big = tmp_path / "big"
    _elf_with_segment(big, offset=0x1000, filesz=16, memsz=4 * GIB, size=4 * GIB)
    mem = GuestMemory()
    try:
        prog = load_elf(mem, str(big), StartConfig())
        assert mem.data_ranges(0x10000, 4 * GIB) == [(0x10000, 0x11000)]   # nothing else
        assert mem.read(0x10000, 4) == b"\x6f\x00\x00\x00"
        assert mem.read(0x10000 + 4 * GIB - 8, 8) == bytes(8)
        assert prog.brk_start == 0x10000 + 4 * GIB
        assert next((m.start, m.end) for m in mem.mappings()) == (0x10000, 0x10000 + 4 * GIB)
    finally:
        mem.close()
    # a segment that claims more file than there is
    short = tmp_path / "short"
    _elf_with_segment(short, offset=0x1000, filesz=0x2000, memsz=0x2000)
    assert _load_error(str(short)) == (f"{short}: truncated ELF: segment 0 extends past the "
                                       "end of the file (0x3000 > 0x1010 bytes)")


def test_loader_zeroes_what_a_later_segment_owns(tmp_path):
    """A later segment's zero fill wins over an earlier segment's bytes, on whole pages
    too (as Linux's successive MAP_FIXED mappings); permissions are the union."""
    path = tmp_path / "overlap"
    eh = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, b"", 2, 243, 1,
                     0x10000, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x10000, 0x10000, 0x3000, 0x3000, 0x1000)
    ph += struct.pack("<IIQQQQQQ", 1, 6, 0x1800, 0x11800, 0x11800, 0, 0x1000, 0x1000)
    path.write_bytes((eh + ph).ljust(0x3000, b"\xAA"))
    mem = GuestMemory()
    try:
        load_elf(mem, str(path), StartConfig())
        assert mem.peek(0x117F8, 8) == b"\xAA" * 8             # before the second segment
        assert mem.peek(0x11800, 0x1800) == bytes(0x1800)         # its zeros, to 0x13000
        assert [r[:3] for r in mem.regions()][:2] == [(0x10000, 0x11000, PROT_READ | PROT_EXEC),
                                                     (0x11000, 0x13000, 7)]
    finally:
        mem.close()


def test_segment_permissions_sweep_matches_a_page_union():
    """The loader's sweep gives each page the union of the segments on it, in maximal
    runs, as the per-page dict it replaces did."""
    from dbtlab.runtime.linux.loader import _runs
    rng = random.Random(5)
    for _ in range(2000):
        spans = []
        for _ in range(rng.randrange(1, 6)):
            start = rng.randrange(40) * PAGE_SIZE
            spans.append((start, start + rng.randrange(10) * PAGE_SIZE,
                          rng.choice([1, 2, 3, 4, 5, 7])))
        union: dict[int, int] = {}
        for start, end, prot in spans:
            for pn in range(start // PAGE_SIZE, end // PAGE_SIZE):
                union[pn] = union.get(pn, 0) | prot
        want: list[list[int]] = []
        for pn in sorted(union):
            if want and want[-1][1] == pn * PAGE_SIZE and want[-1][2] == union[pn]:
                want[-1][1] += PAGE_SIZE
            else:
                want.append([pn * PAGE_SIZE, (pn + 1) * PAGE_SIZE, union[pn]])
        assert _runs(spans) == [tuple(w) for w in want], spans


# ---- the interval map against a page-by-page model ---------------------------------------
class _Model:
    """The old representation: one record per page."""

    def __init__(self) -> None:
        self.pages: dict[int, tuple[int, str]] = {}

    def map(self, pn: int, n: int, prot: int, name: str) -> None:
        for p in range(pn, pn + n):
            self.pages[p] = (prot, name)

    def unmap(self, pn: int, n: int) -> None:
        for p in range(pn, pn + n):
            self.pages.pop(p, None)

    def protect(self, pn: int, n: int, prot: int) -> bool:
        if not all(p in self.pages for p in range(pn, pn + n)):
            return False
        for p in range(pn, pn + n):
            self.pages[p] = (prot, self.pages[p][1])
        return True

    def regions(self) -> list[tuple[int, int, int, str]]:
        out: list[list] = []
        for pn in sorted(self.pages):
            prot, name = self.pages[pn]
            if out and out[-1][1] == pn and out[-1][2:] == [prot, name]:
                out[-1][1] += 1
            else:
                out.append([pn, pn + 1, prot, name])
        return [(a * PAGE_SIZE, b * PAGE_SIZE, p, n) for a, b, p, n in out]


def _random_ops(seed: int, count: int) -> None:
    rng = random.Random(seed)
    mem, model = GuestMemory(), _Model()
    base = 0x100000                                    # pages 0x100 .. 0x100 + 96
    try:
        for _ in range(count):
            pn = 0x100 + rng.randrange(96)
            n = rng.randrange(1, 12)
            op = rng.random()
            prot = rng.choice([0, PROT_READ, RW, PROT_READ | PROT_EXEC, 7])
            if op < 0.4:
                name = rng.choice(["a", "b"])
                mem.map(pn * PAGE_SIZE, n * PAGE_SIZE, prot, name)
                model.map(pn, n, prot, name)
            elif op < 0.6:
                mem.unmap(pn * PAGE_SIZE, n * PAGE_SIZE)
                model.unmap(pn, n)
            elif op < 0.85:
                ok = model.protect(pn, n, prot)
                if ok:
                    mem.protect(pn * PAGE_SIZE, n * PAGE_SIZE, prot)
                else:
                    with pytest.raises(KeyError):
                        mem.protect(pn * PAGE_SIZE, n * PAGE_SIZE, prot)
            else:
                mem.mark_code(pn)
            assert [r[:4] for r in mem.regions()] == model.regions()
            assert mem.mapped_size == len(model.pages) * PAGE_SIZE
            for p in range(0xFF, 0x100 + 110):
                a = p * PAGE_SIZE
                want = model.pages.get(p)
                got = mem.pages.get(p)
                assert (got.prot & 7, got.name) == want if want else got is None
                assert mem.is_mapped(a, PAGE_SIZE) == (want is not None)
                readable = bool(want and want[0] & PROT_READ)
                assert bool(mem.read_bits[p >> 3] >> (p & 7) & 1) == readable
                writable = bool(want and want[0] & PROT_WRITE and not got.prot & PROT_CODE)
                assert bool(mem.write_bits[p >> 3] >> (p & 7) & 1) == writable
                if want is None:
                    with pytest.raises(GuestFault) as e:
                        mem.peek(a, 1)
                    assert e.value.addr == a
            lo = base + rng.randrange(96 * PAGE_SIZE)
            span = rng.randrange(1, 5 * PAGE_SIZE)
            bad = next((p for p in range(lo >> 12, ((lo + span - 1) >> 12) + 1)
                        if not model.pages.get(p, (0,))[0] & PROT_WRITE), None)
            if bad is None:
                mem.check(lo, span, PROT_WRITE, FAULT_STORE)
            else:
                with pytest.raises(GuestFault) as e:
                    mem.check(lo, span, PROT_WRITE, FAULT_STORE)
                assert e.value.addr == max(lo, bad * PAGE_SIZE)
            assert mem.is_free(lo, span) == all(
                p not in model.pages for p in range(lo >> 12, ((lo + span - 1) >> 12) + 1))
    finally:
        mem.close()


def test_interval_map_matches_a_page_model():
    _random_ops(1, 300)


@pytest.mark.slow
def test_interval_map_matches_a_page_model_long():
    for seed in range(2, 40):
        _random_ops(seed, 2000)


def test_code_pages_stay_write_protected_across_protect_and_unmap():
    mem = GuestMemory()
    code_writes = []
    mem.code_write_listeners.append(code_writes.append)
    try:
        mem.map(0x10000, 16 * GIB, RW, "big")
        mem.mark_code(0x10 + 5)
        assert mem.pages[0x15].prot == RW | PROT_CODE
        assert not mem.write_bits[0x15 >> 3] >> (0x15 & 7) & 1
        mem.protect(0x10000, 16 * GIB, 7)                         # one range, code kept
        assert mem.pages[0x15].prot == 7 | PROT_CODE
        assert not mem.write_bits[0x15 >> 3] >> (0x15 & 7) & 1
        assert mem.write_bits[0x16 >> 3] >> (0x16 & 7) & 1
        mem.write(0x15008, b"x")                                  # a write to code: noticed
        assert code_writes == [0x15]
        mem.unmap(0x10000, 16 * GIB)                              # unmapping code: noticed
        assert code_writes == [0x15, 0x15] and mem.mapped_size == 0
        with pytest.raises(GuestFault) as e:
            mem.read(0x15000, 1)
        assert e.value.kind == FAULT_LOAD
    finally:
        mem.close()
