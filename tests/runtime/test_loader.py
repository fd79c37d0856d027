"""ELF loader: segments, permissions, the initial stack, static-PIE, symbols, every error.

Fixtures are tiny freestanding programs built by tests/fixtures/build.sh; error cases that
need odd files (big-endian, ET_REL, truncated, shared pages) use ELF images built here."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from dbtlab.runtime.errors import DbtError, LoadError
from dbtlab.runtime.linux.loader import (AT_CLKTCK, AT_EGID, AT_ENTRY, AT_EUID, AT_EXECFN,
                                   AT_FLAGS, AT_GID, AT_HWCAP, AT_NULL, AT_PAGESZ, AT_PHDR,
                                   AT_PHENT, AT_PHNUM, AT_RANDOM, AT_SECURE, AT_UID, AT_BASE,
                                   DEFAULT_MMAP_TOP, DEFAULT_PIE_BASE, DEFAULT_STACK_TOP,
                                   StartConfig, load_elf)
from dbtlab.runtime.linux.memory import (ADDR_LIMIT, PROT_EXEC, PROT_READ, PROT_WRITE, GuestFault,
                                   GuestMemory)

FIX = Path(__file__).resolve().parents[1] / "fixtures"
STATIC = str(FIX / "rv64_static")
PIE = str(FIX / "rv64_static_pie")
GNU = str(FIX / "rv64_static_gnu")
R, RW, RX, RWX = PROT_READ, PROT_READ | PROT_WRITE, PROT_READ | PROT_EXEC, 7


@pytest.fixture
def mem():
    m = GuestMemory()
    yield m
    m.close()


def cfg(**kw) -> StartConfig:
    kw.setdefault("uid", 1234)
    kw.setdefault("gid", 5678)
    return StartConfig(**kw)


def prot_at(mem: GuestMemory, addr: int) -> int:
    return mem.pages[addr >> 12].prot & 7


def parse_stack(mem: GuestMemory, sp: int):
    """Read argc, argv, envp and auxv back from the initial stack, like a libc would."""
    q = lambda a: mem.load(a, 8)  # noqa: E731
    argc = q(sp)
    argv_ptrs = [q(sp + 8 + 8 * i) for i in range(argc)]
    assert q(sp + 8 + 8 * argc) == 0
    p = sp + 16 + 8 * argc
    envp_ptrs = []
    while q(p):
        envp_ptrs.append(q(p))
        p += 8
    p += 8
    auxv = []
    while True:
        t, v = q(p), q(p + 8)
        auxv.append((t, v))
        p += 16
        if t == AT_NULL:
            break
    s = lambda a: mem.read_cstring(a).decode()  # noqa: E731
    return argc, [s(a) for a in argv_ptrs], [s(a) for a in envp_ptrs], auxv, argv_ptrs, p


# ---- synthetic ELF images ------------------------------------------------------------------
def make_elf(phdrs, body: bytes = b"", *, e_type=2, entry=0x10000, machine=243, cls=2,
             data=1, phentsize=56, shoff=0, shnum=0) -> bytes:
    """A minimal ELF64 image: header, program headers at 64, then body (file offsets in
    phdrs are absolute). phdrs: (type, flags, offset, vaddr, filesz, memsz)."""
    bo = "<" if data == 1 else ">"
    ident = b"\x7fELF" + bytes([cls, data, 1, 0]) + bytes(8)
    hdr = ident + struct.pack(bo + "HHIQQQIHHHHHH", e_type, machine, 1, entry, 64, shoff, 0,
                              64, phentsize, len(phdrs), 64, shnum, 0)
    ph = b"".join(struct.pack(bo + "IIQQQQQQ", t, f, o, v, v, fs, ms, 0x1000)
                  for t, f, o, v, fs, ms in phdrs)
    head = hdr + ph
    assert len(head) <= 0x100
    return head + bytes(0x100 - len(head)) + body


def write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


# ---- static ET_EXEC ------------------------------------------------------------------------
def test_static_segments_and_permissions(mem):
    prog = load_elf(mem, STATIC, cfg())
    # lld layout: R at 0x1000000 (headers, rodata), RX at 0x1001000, RW 0x1002000-0x1005000
    assert [(s, e, p) for s, e, p, _n, _h in mem.regions()] == [
        (0x1000000, 0x1001000, R), (0x1001000, 0x1002000, RX), (0x1002000, 0x1005000, RW),
        (DEFAULT_STACK_TOP - (8 << 20), DEFAULT_STACK_TOP, RW)]
    assert prog.segments == [(0x1000000, 0x21C, R), (0x100121C, 0x50, RX),
                             (0x1002270, 0x2008, RW)]
    assert prog.elf_type == 2 and prog.load_bias == 0
    assert prog.entry == 0x100121C
    assert prog.brk_start == 0x1005000           # the page after the end of .bss
    data = Path(STATIC).read_bytes()
    # file bytes, including the ELF header at the start of the first page
    assert mem.peek(0x1000000, 64) == data[:64]
    assert mem.peek(0x100121C, 0x50) == data[0x21C:0x26C]
    # .data initialised, .bss zero
    assert mem.load(prog.address_of("counter"), 8) == 0x11223344
    assert mem.peek(prog.address_of("greeting"), 4) == b"hi\n\0"
    scratch = prog.address_of("scratch")
    assert mem.peek(scratch, 8192) == bytes(8192)
    # permissions are enforced for the guest
    with pytest.raises(GuestFault):
        mem.write(0x1000000, b"x")
    with pytest.raises(GuestFault):
        mem.fetch(0x1002270, 2)
    assert mem.fetch(prog.entry, 2)


def test_initial_stack_layout(mem):
    c = cfg(argv=["prog", "first arg", ""], env=["A=1", "HOME=/nowhere"],
            exec_path="/bin/prog")
    prog = load_elf(mem, STATIC, c)
    sp = prog.sp
    assert sp % 16 == 0
    argc, argv, envp, auxv, argv_ptrs, end = parse_stack(mem, sp)
    assert argc == 3 and argv == ["prog", "first arg", ""]
    assert envp == ["A=1", "HOME=/nowhere"]
    assert auxv == prog.auxv
    a = dict(auxv)
    assert [t for t, _ in auxv] == [AT_HWCAP, AT_PAGESZ, AT_CLKTCK, AT_PHDR, AT_PHENT,
                                    AT_PHNUM, AT_BASE, AT_FLAGS, AT_ENTRY, AT_UID, AT_EUID,
                                    AT_GID, AT_EGID, AT_SECURE, AT_RANDOM, AT_EXECFN, AT_NULL]
    assert a[AT_PHDR] == 0x1000040 and a[AT_PHENT] == 56 and a[AT_PHNUM] == 7
    assert a[AT_PAGESZ] == 4096 and a[AT_CLKTCK] == 100
    assert a[AT_BASE] == 0 and a[AT_FLAGS] == 0 and a[AT_SECURE] == 0
    assert a[AT_ENTRY] == prog.entry
    assert (a[AT_UID], a[AT_EUID], a[AT_GID], a[AT_EGID]) == (1234, 1234, 5678, 5678)
    assert a[AT_HWCAP] == 0x112D          # I M A F D C
    assert mem.peek(a[AT_RANDOM], 16) == bytes(range(16))
    assert mem.read_cstring(a[AT_EXECFN]) == b"/bin/prog"
    # Linux order from the top: 8 zero bytes, execfn, env strings, argv strings, random
    top = DEFAULT_STACK_TOP
    assert mem.peek(top - 8, 8) == bytes(8)
    assert a[AT_EXECFN] + len("/bin/prog") + 1 == top - 8
    assert argv_ptrs == sorted(argv_ptrs)
    assert a[AT_RANDOM] + 16 == argv_ptrs[0]
    blob = mem.peek(argv_ptrs[0], top - 8 - argv_ptrs[0])
    assert blob == b"prog\0first arg\0\0A=1\0HOME=/nowhere\0/bin/prog\0"
    assert end <= a[AT_RANDOM]
    # the memory above the stack top is not mapped; the stack is not executable
    assert not mem.is_mapped(top, 4096)
    assert prot_at(mem, sp) == RW and not prog.exec_stack
    assert prog.stack_range == (top - (8 << 20), top)


def test_defaults_and_determinism():
    c = cfg()
    assert c.stack_top == 0x3FFFFFF000 and c.stack_size == 8 << 20
    assert c.random_bytes == bytes(range(16))
    assert c.pie_base == DEFAULT_PIE_BASE == 0x2AAAAAA000
    assert c.mmap_top == DEFAULT_MMAP_TOP == 0x3FF8000000
    assert c.mmap_top <= c.stack_top - c.stack_size
    snaps = []
    for _ in range(2):
        m = GuestMemory()
        prog = load_elf(m, STATIC, cfg(argv=["a", "b"], env=["X=y"]))
        lo = prog.sp & ~0xFFF
        snaps.append((prog.sp, prog.auxv, m.peek(lo, DEFAULT_STACK_TOP - lo),
                      [m.peek(s, e - s) for s, e, *_ in m.regions() if e <= 0x2000000]))
        m.close()
    assert snaps[0] == snaps[1]


def test_argv_defaults_to_program_path(mem):
    prog = load_elf(mem, STATIC, cfg())
    argc, argv, envp, *_ = parse_stack(mem, prog.sp)
    assert argc == 1 and argv == [STATIC] and envp == []
    assert prog.execfn == STATIC
    assert prog.exe_path == os.path.realpath(STATIC)


def test_random_bytes_and_custom_stack(mem):
    rnd = bytes(range(100, 116))
    prog = load_elf(mem, STATIC, cfg(random_bytes=rnd, stack_top=0x2000000000,
                                     stack_size=1 << 20))
    a = dict(prog.auxv)
    assert mem.peek(a[AT_RANDOM], 16) == rnd
    assert 0x2000000000 - (1 << 20) < prog.sp < 0x2000000000
    assert mem.is_mapped(0x2000000000 - (1 << 20), 1 << 20)


def test_static_pie_loads_at_pie_base(mem):
    prog = load_elf(mem, PIE, cfg())
    bias = 0x2AAAAAA000
    assert prog.elf_type == 3 and prog.load_bias == bias
    a = dict(prog.auxv)
    assert a[AT_PHDR] == bias + 0x40          # PT_PHDR, relocated
    assert a[AT_ENTRY] == prog.entry == bias + 0x130C
    assert prog.symbol_at(prog.entry) == ("_start", 0)
    assert mem.load(prog.address_of("counter"), 8) == 0x11223344
    assert prot_at(mem, bias) == R and prot_at(mem, bias + 0x1000) == RX
    assert prot_at(mem, bias + 0x2000) == RW
    assert prog.brk_start == bias + 0x6000
    m2 = GuestMemory()
    try:
        p2 = load_elf(m2, PIE, cfg(pie_base=0x40000000))
        assert p2.load_bias == 0x40000000 and p2.entry == 0x4000130C
    finally:
        m2.close()


def test_gnu_static_without_pt_phdr(mem):
    prog = load_elf(mem, GNU, cfg())
    data = Path(GNU).read_bytes()
    phoff = struct.unpack_from("<Q", data, 32)[0]
    # AT_PHDR from the first PT_LOAD covering e_phoff (offset 0 at 0x10000)
    assert dict(prog.auxv)[AT_PHDR] == 0x10000 + phoff
    assert mem.peek(0x10000 + phoff, 56 * prog.phnum) == data[phoff:phoff + 56 * prog.phnum]
    assert prot_at(mem, 0x10000) == RX and prot_at(mem, 0x11000) == RW


def test_symbols(mem):
    prog = load_elf(mem, STATIC, cfg())
    assert prog.symbols[prog.entry] == "_start"
    assert prog.symbol_at(prog.entry) == ("_start", 0)
    assert prog.symbol_at(prog.entry + 4) == ("_start", 4)
    entry_fn = prog.address_of("entry")
    assert prog.symbol_at(entry_fn + 6) == ("entry", 6)
    assert prog.symbol_at(0x1000) is None                 # below every symbol
    scratch = prog.address_of("scratch")
    assert prog.symbol_at(scratch + 8191) == ("scratch", 8191)
    assert prog.symbol_at(scratch + 8192) is None         # past the sized symbol


# ---- page sharing, stacks, odd layouts (synthetic images) ----------------------------------
def test_segments_sharing_a_page_get_union_permissions(tmp_path, mem):
    code = b"\x13\x00\x00\x00" * 4                       # nops at 0x10100
    rw = b"DATA"
    body = code + rw                                      # code at 0x100, data at 0x110
    img = make_elf([(1, 5, 0x100, 0x10100, 16, 16),      # R X
                    (1, 6, 0x110, 0x10110, 4, 0x40)],    # RW, bss to 0x10150
                   body, entry=0x10100)
    path = write(tmp_path, "shared", img)
    prog = load_elf(mem, path, cfg())
    assert prot_at(mem, 0x10000) == RWX
    assert [(s, e) for s, e, *_ in mem.regions()][0] == (0x10000, 0x11000)
    assert mem.peek(0x10100, 16) == code and mem.peek(0x10110, 4) == rw
    assert mem.peek(0x10114, 0x1000 - 0x114) == bytes(0x1000 - 0x114)
    assert mem.peek(0x10000, 64) == img[:64]              # file page as mmap shows it
    assert prog.brk_start == 0x11000


def test_exec_stack_and_tls(tmp_path, mem):
    img = make_elf([(1, 5, 0, 0x10000, 0x100, 0x100),
                    (7, 4, 0x80, 0x10080, 0x10, 0x20),         # PT_TLS
                    (0x6474E551, 7, 0, 0, 0, 0)],              # PT_GNU_STACK RWX
                   b"", entry=0x10000)
    prog = load_elf(mem, write(tmp_path, "xs", img), cfg())
    assert prog.exec_stack and prot_at(mem, prog.sp) == RWX
    assert prog.tls == (0x10080, 0x10, 0x20, 0x1000)


def test_stack_too_small_for_arguments(mem):
    with pytest.raises(LoadError, match="arguments and environment too large for the 4 KiB"):
        load_elf(mem, STATIC, cfg(stack_size=4096, argv=["x" * 5000]))


# ---- errors --------------------------------------------------------------------------------
def err(path: str, **kw) -> str:
    m = GuestMemory()
    try:
        with pytest.raises(LoadError) as e:
            load_elf(m, path, cfg(**kw))
    finally:
        m.close()
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, DbtError)
    return msg


def test_error_missing_and_unreadable(tmp_path):
    assert err(str(tmp_path / "nope")) == f"{tmp_path / 'nope'}: no such file"
    assert err(str(tmp_path)) == f"{tmp_path}: is a directory, not a program"


def test_error_not_elf(tmp_path):
    p = write(tmp_path, "text", b"hello world\n")
    assert err(p) == f"{p}: not an ELF file"
    p = write(tmp_path, "empty", b"")
    assert err(p) == f"{p}: not an ELF file"
    p = write(tmp_path, "script", b"#!/bin/sh\necho hi\n")
    assert err(p) == f"{p}: a script, not an ELF program"


def test_error_other_architectures(tmp_path):
    x86 = str(FIX / "x86_64_static")
    assert err(x86) == (f"{x86}: not a RISC-V program (x86-64 ELF); dbtlab runs RISC-V "
                        "RV64 Linux programs")
    p = write(tmp_path, "arm", make_elf([(1, 5, 0, 0x10000, 0x100, 0x100)], machine=183))
    assert "not a RISC-V program (AArch64 ELF)" in err(p)
    p = write(tmp_path, "odd", make_elf([(1, 5, 0, 0x10000, 0x100, 0x100)], machine=9999))
    assert "not a RISC-V program (machine type 9999 ELF)" in err(p)


def test_error_rv32():
    rv32 = str(FIX / "rv32_static")
    assert err(rv32) == (f"{rv32}: 32-bit RISC-V ELF (RV32); only 64-bit RISC-V (RV64) "
                         "programs are supported")


def test_error_big_endian(tmp_path):
    p = write(tmp_path, "be", make_elf([(1, 5, 0, 0x10000, 0x100, 0x100)], data=2))
    assert err(p) == f"{p}: big-endian ELF; RISC-V Linux programs are little-endian"


def test_error_dynamic():
    dyn = str(FIX / "rv64_dynamic")
    assert err(dyn) == (f"{dyn}: dynamically linked (program interpreter "
                        "/lib/ld-linux-riscv64-lp64d.so.1); dbtlab runs static executables "
                        "only: link with -static")


def test_error_not_executable(tmp_path):
    p = write(tmp_path, "obj.o", make_elf([], e_type=1))
    assert err(p) == (f"{p}: a relocatable object file (ET_REL), not an executable; "
                      "link it first")
    p = write(tmp_path, "core", make_elf([(1, 5, 0, 0x10000, 0x100, 0x100)], e_type=4))
    assert err(p) == f"{p}: a core dump, not an executable"
    p = write(tmp_path, "lib.so", make_elf([(1, 5, 0, 0, 0x100, 0x100)], e_type=3, entry=0))
    assert err(p) == f"{p}: a shared library (ET_DYN with no entry point), not an executable"
    p = write(tmp_path, "weird", make_elf([(1, 5, 0, 0, 0x100, 0x100)], e_type=7))
    assert err(p) == f"{p}: not an executable (ELF type 7)"


def test_error_malformed_and_truncated(tmp_path):
    good = Path(STATIC).read_bytes()
    p = write(tmp_path, "t20", good[:40])
    assert err(p) == f"{p}: truncated ELF header (40 bytes)"
    p = write(tmp_path, "t100", good[:100])
    assert err(p) == (f"{p}: truncated ELF: program headers extend past the end of the "
                      "file (100 bytes)")
    p = write(tmp_path, "t600", good[:0x250])
    assert err(p) == (f"{p}: truncated ELF: segment 2 extends past the end of the file "
                      "(0x26c > 0x250 bytes)")
    p = write(tmp_path, "noph", make_elf([]))
    assert err(p) == f"{p}: malformed ELF: no program headers"
    p = write(tmp_path, "phsz", make_elf([(1, 5, 0, 0x10000, 0x100, 0x100)], phentsize=32))
    assert err(p) == f"{p}: malformed ELF: program header size 32 (expected 56)"
    p = write(tmp_path, "noload", make_elf([(4, 4, 0, 0, 0, 0)]))
    assert err(p) == f"{p}: malformed ELF: no loadable (PT_LOAD) segments"
    p = write(tmp_path, "fsz", make_elf([(1, 5, 0, 0x10000, 0x100, 0x10)]))
    assert err(p) == (f"{p}: malformed ELF: segment 0 has file size 0x100 larger than its "
                      "memory size 0x10")
    bad = bytearray(good)
    bad[4] = 9
    p = write(tmp_path, "class9", bytes(bad))
    assert err(p) == f"{p}: malformed ELF header (class 9, data encoding 1)"


def test_garbage_section_headers_only_lose_symbols(tmp_path, caplog):
    """Linux never reads sections: a broken section table is a warning, not an error."""
    img = make_elf([(1, 5, 0, 0x10000, 0x100, 0x100)], entry=0x10000, shoff=0x80, shnum=50)
    m = GuestMemory()
    try:
        prog = load_elf(m, write(tmp_path, "badsh", img), cfg())
    finally:
        m.close()
    assert prog.symbols == {} and prog.symbol_at(0x10000) is None
    assert "cannot read the symbol table" in caplog.text


def test_error_segment_outside_address_space(tmp_path):
    p = write(tmp_path, "high", make_elf([(1, 5, 0, ADDR_LIMIT - 0x1000, 0x100, 0x2000)],
                                         entry=ADDR_LIMIT - 0x1000))
    assert err(p) == (f"{p}: segment 0 at 0x3ffffff000-0x4000001000 is outside the guest "
                      "address space (addresses must be below 0x4000000000)")
    p = write(tmp_path, "huge", make_elf([(1, 5, 0, 1 << 60, 0x100, 0x100)], entry=1 << 60))
    assert "is outside the guest address space" in err(p)
    p = write(tmp_path, "onstack", make_elf([(1, 5, 0, 0x3FFF800000, 0x100, 0x100)],
                                            entry=0x3FFF800000))
    assert err(p) == (f"{p}: segment 0 at 0x3fff800000-0x3fff800100 overlaps the stack "
                      "(0x3fff7ff000-0x3ffffff000)")


@pytest.mark.parametrize("path", [STATIC, PIE, GNU])
def test_symbols_agree_with_pyelftools(path, mem):
    from elftools.elf.elffile import ELFFile
    prog = load_elf(mem, path, cfg())
    ref: dict[int, set[str]] = {}
    with open(path, "rb") as f:
        for s in ELFFile(f).get_section_by_name(".symtab").iter_symbols():
            if s["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT") and s["st_value"] \
                    and s["st_shndx"] != "SHN_UNDEF":
                ref.setdefault(s["st_value"] + prog.load_bias, set()).add(s.name)
    assert ref and set(prog.symbols) == set(ref)
    assert all(prog.symbols[a] in names for a, names in ref.items())
