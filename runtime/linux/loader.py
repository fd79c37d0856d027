"""ELF loader: a static RV64 Linux executable into a GuestMemory, with the initial stack.

What Linux's ``load_elf_binary`` does for a static program, made deterministic:

* Static ``ET_EXEC`` programs load at their link addresses. Static-PIE programs (``ET_DYN``
  without ``PT_INTERP``) load at ``StartConfig.pie_base``: by default 0x2AAAAAA000, which is
  Linux's ``ELF_ET_DYN_BASE`` for an Sv39 riscv64 process (2/3 of TASK_SIZE = 2**38, page
  aligned) without address-space randomisation — the riscv64 analogue of x86-64's familiar
  0x555555554000.
* ``PT_LOAD`` segments are mapped page-granular: a page's permissions are the union of the
  permissions of every segment touching it (what Linux's successive MAP_FIXED mappings of
  the shared file page effectively give), its bytes come from the file exactly as a file
  mapping would show them (including the file bytes before ``p_vaddr`` in the first page),
  and everything from ``p_vaddr + p_filesz`` to the end of the segment's last page is zero.
* The stack is ``[stack_top - stack_size, stack_top)``, read/write (plus execute only if
  ``PT_GNU_STACK`` asks for it), named ``[stack]``. The default top, 0x3FFFFFF000, is the
  last page boundary below 2**38 with one unmapped guard page above it.
* The initial stack is built like Linux's ``create_elf_tables``: from the top, an 8-byte
  zero end marker, the AT_EXECFN string, the environment strings, the argument strings
  (so argv[0]'s text is lowest), the 16 AT_RANDOM bytes, then — 16-byte aligned — argc,
  argv[], NULL, envp[], NULL and the auxv pairs in Linux's order. No vDSO is provided
  (like qemu-riscv64 7.2), so libc makes real clock_gettime syscalls.

Everything is a function of the file and the ``StartConfig``: the same inputs give
byte-identical memory and registers, which differential runs across engines depend on.
"""

from __future__ import annotations

import bisect
import logging
import os
import stat
import struct
from dataclasses import dataclass, field

from dbtlab.runtime.errors import LoadError
from dbtlab.runtime.linux.memory import (ADDR_LIMIT, PAGE_MASK, PAGE_SIZE, PROT_EXEC, PROT_READ,
                                   PROT_WRITE, GuestMemory, page_align_up)

log = logging.getLogger(__name__)

# ---- ELF constants ---------------------------------------------------------------------
ET_REL, ET_EXEC, ET_DYN, ET_CORE = 1, 2, 3, 4
PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE, PT_PHDR, PT_TLS = 1, 2, 3, 4, 6, 7
PT_GNU_STACK = 0x6474E551
PF_X, PF_W, PF_R = 1, 2, 4
EM_RISCV = 243

# auxv types (include/uapi/linux/auxvec.h)
AT_NULL, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_BASE, AT_FLAGS, AT_ENTRY = 0, 3, 4, 5, 6, 7, 8, 9
AT_UID, AT_EUID, AT_GID, AT_EGID, AT_PLATFORM, AT_HWCAP, AT_CLKTCK = 11, 12, 13, 14, 15, 16, 17
AT_SECURE, AT_RANDOM, AT_HWCAP2, AT_EXECFN, AT_SYSINFO_EHDR, AT_MINSIGSTKSZ = 23, 25, 26, 31, 33, 51

AT_NAMES = {AT_NULL: "AT_NULL", AT_PHDR: "AT_PHDR", AT_PHENT: "AT_PHENT", AT_PHNUM: "AT_PHNUM",
            AT_PAGESZ: "AT_PAGESZ", AT_BASE: "AT_BASE", AT_FLAGS: "AT_FLAGS",
            AT_ENTRY: "AT_ENTRY", AT_UID: "AT_UID", AT_EUID: "AT_EUID", AT_GID: "AT_GID",
            AT_EGID: "AT_EGID", AT_HWCAP: "AT_HWCAP", AT_CLKTCK: "AT_CLKTCK",
            AT_SECURE: "AT_SECURE", AT_RANDOM: "AT_RANDOM", AT_EXECFN: "AT_EXECFN"}

# e_machine names for the "not RISC-V" message
_MACHINES = {2: "SPARC", 3: "x86 (i386)", 4: "m68k", 8: "MIPS", 20: "PowerPC",
             21: "PowerPC64", 22: "s390", 40: "ARM", 42: "SuperH", 43: "SPARC64",
             50: "IA-64", 62: "x86-64", 183: "AArch64", 243: "RISC-V", 258: "LoongArch"}

TASK_SIZE = ADDR_LIMIT                       # Sv39: user addresses are below 2**38
DEFAULT_STACK_TOP = 0x3FFFFFF000
DEFAULT_STACK_SIZE = 8 << 20
#: Linux ELF_ET_DYN_BASE for riscv64 Sv39, page-aligned (no randomisation)
DEFAULT_PIE_BASE = ((TASK_SIZE // 3) * 2) & PAGE_MASK
#: Linux's no-randomisation mmap_base: TASK_SIZE minus the minimum 128 MiB stack gap
DEFAULT_MMAP_TOP = TASK_SIZE - (128 << 20)
#: 'I', 'M', 'A', 'F', 'D', 'C' -> bit (letter - 'A'), as Linux's riscv ELF_HWCAP
RV64GC_HWCAP = sum(1 << (ord(c) - ord("A")) for c in "IMAFDC")   # 0x112d
DEFAULT_RANDOM = bytes(range(16))


def _host_uid() -> int:
    return os.getuid()


def _host_gid() -> int:
    return os.getgid()


@dataclass
class StartConfig:
    """How the process starts. Defaults are deterministic except uid/gid, which are the
    host's (like qemu-riscv64) so that the host's permission checks agree with what the
    guest is told; pass fixed values for runs that must not depend on the user."""

    argv: list[str] = field(default_factory=list)     # empty: [program path]
    env: list[str] = field(default_factory=list)      # "K=V"; empty by default
    stack_top: int = DEFAULT_STACK_TOP
    stack_size: int = DEFAULT_STACK_SIZE
    random_bytes: bytes = DEFAULT_RANDOM               # the 16 AT_RANDOM bytes
    exec_path: str | None = None     # AT_EXECFN and /proc/self/exe (default: program path)
    pie_base: int = DEFAULT_PIE_BASE
    hwcap: int = RV64GC_HWCAP
    mmap_top: int = DEFAULT_MMAP_TOP
    uid: int = field(default_factory=_host_uid)
    gid: int = field(default_factory=_host_gid)


@dataclass
class LoadedProgram:
    """The result of loading: where things are, for the Machine, syscalls and analysis."""

    path: str
    entry: int
    sp: int
    brk_start: int
    phdr: int
    phnum: int
    phent: int
    load_bias: int
    elf_type: int
    auxv: list[tuple[int, int]]
    segments: list[tuple[int, int, int]]     # (vaddr, memsz, prot), load bias applied
    symbols: dict[int, str]
    argv: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    execfn: str = ""
    exe_path: str = ""            # what readlink("/proc/self/exe") returns
    stack_range: tuple[int, int] = (0, 0)
    exec_stack: bool = False
    random_addr: int = 0
    tls: tuple[int, int, int, int] | None = None   # (vaddr, filesz, memsz, align)
    _sym_addrs: list[int] = field(default_factory=list, repr=False)
    _sym_sizes: dict[int, int] = field(default_factory=dict, repr=False)

    def symbol_at(self, addr: int) -> tuple[str, int] | None:
        """(name, offset) of the symbol containing addr (nearest preceding one if it has
        no size), or None."""
        if not self._sym_addrs or len(self._sym_addrs) != len(self.symbols):
            self._sym_addrs = sorted(self.symbols)
        i = bisect.bisect_right(self._sym_addrs, addr) - 1
        if i < 0:
            return None
        a = self._sym_addrs[i]
        size = self._sym_sizes.get(a, 0)
        if size and addr - a >= size:
            return None
        return self.symbols[a], addr - a

    def address_of(self, name: str) -> int | None:
        """Address of a symbol by name (first match), or None."""
        for a, n in self.symbols.items():
            if n == name:
                return a
        return None


# ---- parsing ---------------------------------------------------------------------------
@dataclass
class _Phdr:
    index: int
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int
    align: int


def _prot(flags: int) -> int:
    return ((PROT_READ if flags & PF_R else 0) | (PROT_WRITE if flags & PF_W else 0)
            | (PROT_EXEC if flags & PF_X else 0))


_MAX_SYMTAB = 256 << 20        # symbol and string tables larger than this are not read


class _ElfFile:
    """An open program file: only its headers and the parts the program headers name are
    ever read, so its size does not matter."""

    def __init__(self, path: str, fd: int, size: int) -> None:
        self.path, self.fd, self.size = path, fd, size

    def read(self, offset: int, n: int) -> bytes:
        """Bytes [offset, offset+n) of the file (fewer at its end)."""
        n = max(0, min(n, self.size - offset))
        if n == 0:
            return b""
        try:
            return os.pread(self.fd, n, offset)
        except OSError as e:
            raise LoadError(f"{self.path}: cannot read: {e.strerror or e}") from None


_NOT_A_FILE = [(stat.S_ISDIR, "is a directory, not a program"),
               (stat.S_ISCHR, "a character device, not a program file"),
               (stat.S_ISBLK, "a block device, not a program file"),
               (stat.S_ISFIFO, "a FIFO (named pipe), not a program file"),
               (stat.S_ISSOCK, "a socket, not a program file")]


def _printable(raw: bytes, limit: int = 256) -> str:
    """File bytes quoted in a one-line message: control characters escaped, cut at limit."""
    text = raw.decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256
                   else f"\\u{ord(c):04x}" for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


def _not_regular(path: str, mode: int) -> LoadError:
    for test, what in _NOT_A_FILE:
        if test(mode):
            return LoadError(f"{path}: {what}")
    return LoadError(f"{path}: not a regular file, not a program file")


def _open_program(path: str) -> _ElfFile:
    """Open the program for reading: only a regular file (execve refuses anything else,
    and reading a device or a FIFO would never end or block)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        # O_NONBLOCK: should the path turn into a FIFO meanwhile, open does not wait
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise LoadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LoadError(f"{path}: is a directory, not a program") from None
    except OSError as e:
        raise LoadError(f"{path}: cannot read: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _not_regular(path, st.st_mode)
    return _ElfFile(path, fd, st.st_size)


def _check_header(path: str, data: bytes, size: int) -> tuple[int, int, int, int, int]:
    """Validate the ELF header (``data``: the file's first 64 bytes or all of a shorter
    file; ``size``: the file's size); return (e_type, e_entry, e_phoff, e_phentsize,
    e_phnum)."""
    if len(data) < 4 or data[:4] != b"\x7fELF":
        if data[:2] == b"#!":
            raise LoadError(f"{path}: a script, not an ELF program")
        raise LoadError(f"{path}: not an ELF file")
    if len(data) < 20:
        raise LoadError(f"{path}: truncated ELF header ({len(data)} bytes)")
    ei_class, ei_data = data[4], data[5]
    if ei_class not in (1, 2) or ei_data not in (1, 2):
        raise LoadError(f"{path}: malformed ELF header (class {ei_class}, data encoding "
                        f"{ei_data})")
    bo = "<" if ei_data == 1 else ">"
    machine = struct.unpack_from(bo + "H", data, 18)[0]
    if machine != EM_RISCV:
        what = _MACHINES.get(machine, f"machine type {machine}")
        raise LoadError(f"{path}: not a RISC-V program ({what} ELF); dbtlab runs RISC-V "
                        "RV64 Linux programs")
    if ei_class == 1:
        raise LoadError(f"{path}: 32-bit RISC-V ELF (RV32); only 64-bit RISC-V (RV64) "
                        "programs are supported")
    if ei_data != 1:
        raise LoadError(f"{path}: big-endian ELF; RISC-V Linux programs are little-endian")
    if len(data) < 64:
        raise LoadError(f"{path}: truncated ELF header ({len(data)} bytes)")
    (e_type, _m, _v, e_entry, e_phoff, _shoff, _flags, _ehsize, e_phentsize, e_phnum,
     ) = struct.unpack_from("<HHIQQQIHHH", data, 16)
    if e_type == ET_REL:
        raise LoadError(f"{path}: a relocatable object file (ET_REL), not an executable; "
                        "link it first")
    if e_type == ET_CORE:
        raise LoadError(f"{path}: a core dump, not an executable")
    if e_type not in (ET_EXEC, ET_DYN):
        raise LoadError(f"{path}: not an executable (ELF type {e_type})")
    if e_phnum == 0:
        raise LoadError(f"{path}: malformed ELF: no program headers")
    if e_phentsize != 56:
        raise LoadError(f"{path}: malformed ELF: program header size {e_phentsize} "
                        "(expected 56)")
    if e_phoff + e_phnum * 56 > size:
        raise LoadError(f"{path}: truncated ELF: program headers extend past the end of "
                        f"the file ({size} bytes)")
    return e_type, e_entry, e_phoff, e_phentsize, e_phnum


def _parse_phdrs(data: bytes, phnum: int) -> list[_Phdr]:
    """The program headers, from their bytes (``data``: phnum entries of 56 bytes)."""
    out = []
    for i in range(phnum):
        (p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, p_align
         ) = struct.unpack_from("<IIQQQQQQ", data, 56 * i)
        out.append(_Phdr(i, p_type, p_flags, p_offset, p_vaddr, p_filesz, p_memsz, p_align))
    return out


def _read_symbols(f: _ElfFile, head: bytes, bias: int
                  ) -> tuple[dict[int, str], dict[int, int]]:
    """FUNC and OBJECT symbols from .symtab (else .dynsym), parsed directly (pyelftools
    takes ~0.1 ms per symbol; debug builds have tens of thousands). Only the section
    headers and the two tables are read. An unreadable symbol table is not fatal — Linux
    never looks at sections — so it only logs a warning."""
    path = f.path
    syms: dict[int, str] = {}
    sizes: dict[int, int] = {}
    try:
        shoff, = struct.unpack_from("<Q", head, 40)
        shentsize, shnum = struct.unpack_from("<HH", head, 58)
        if shoff == 0 or shnum == 0:
            return syms, sizes
        if shentsize != 64 or shoff + 64 * shnum > f.size:
            raise ValueError("section headers outside the file")
        table = f.read(shoff, 64 * shnum)
        shdrs = [struct.unpack_from("<IIQQQQIIQQ", table, 64 * i) for i in range(shnum)]
        tab = next((h for h in shdrs if h[1] == 2), None) or \
            next((h for h in shdrs if h[1] == 11), None)          # SHT_SYMTAB, SHT_DYNSYM
        if tab is None:
            return syms, sizes
        _n, _t, _f, _a, off, size, link, _i, _al, entsize = tab
        if entsize != 24 or off + size > f.size or link >= shnum:
            raise ValueError("bad symbol table section")
        str_off, str_size = shdrs[link][4], shdrs[link][5]
        if str_off + str_size > f.size:
            raise ValueError("bad string table section")
        if size > _MAX_SYMTAB or str_size > _MAX_SYMTAB:
            raise ValueError(f"symbol table larger than {_MAX_SYMTAB >> 20} MiB")
        strtab = f.read(str_off, str_size)
        symdata = f.read(off, size - size % 24)
        rank: dict[int, int] = {}
        for name_off, info, _other, shndx, value, ssize in struct.iter_unpack(
                "<IBBHQQ", symdata):
            typ, bind = info & 0xF, info >> 4
            if typ not in (1, 2) or value == 0 or shndx == 0:      # OBJECT, FUNC; defined
                continue
            end = strtab.find(b"\0", name_off)
            if name_off >= len(strtab) or end <= name_off:
                continue
            name = strtab[name_off:end].decode("utf-8", "replace")
            a = value + bias
            # prefer functions over objects, global over local, at one address
            r = (2 if typ == 2 else 0) + (1 if bind != 0 else 0)
            if a not in syms or r > rank[a]:
                syms[a], sizes[a], rank[a] = name, ssize, r
    except (struct.error, ValueError) as e:
        log.warning("%s: cannot read the symbol table (%s); continuing without symbols",
                    path, e)
        return {}, {}
    return syms, sizes


# ---- loading ---------------------------------------------------------------------------
def load_elf(mem: GuestMemory, path: str, cfg: StartConfig) -> LoadedProgram:
    """Load a static RV64 executable into ``mem`` and build its initial stack.

    Raises ``LoadError`` (one line, naming the file) for anything Linux would refuse or
    that dbtlab does not support (dynamic linking, other architectures, 32-bit, files
    that are not regular files). Only the headers and the segments' file bytes are read,
    and zero-filled memory (``.bss``) costs nothing, whatever its size."""
    f = _open_program(path)
    try:
        return _load(mem, f, cfg)
    finally:
        os.close(f.fd)


def _load(mem: GuestMemory, f: _ElfFile, cfg: StartConfig) -> LoadedProgram:
    path = f.path
    head = f.read(0, 64)
    e_type, e_entry, e_phoff, e_phentsize, e_phnum = _check_header(path, head, f.size)
    phdrs = _parse_phdrs(f.read(e_phoff, 56 * e_phnum), e_phnum)

    for p in phdrs:
        if p.type == PT_INTERP:
            raw = f.read(p.offset, min(p.filesz, 4096)) if p.offset < f.size else b""
            interp = _printable(raw.split(b"\0")[0])
            raise LoadError(f"{path}: dynamically linked (program interpreter {interp}); "
                            "dbtlab runs static executables only: link with -static")

    loads = [p for p in phdrs if p.type == PT_LOAD and p.memsz > 0]
    if not loads:
        raise LoadError(f"{path}: malformed ELF: no loadable (PT_LOAD) segments")
    if e_type == ET_DYN and e_entry == 0:
        raise LoadError(f"{path}: a shared library (ET_DYN with no entry point), not an "
                        "executable")
    for p in loads:
        if p.filesz > p.memsz:
            raise LoadError(f"{path}: malformed ELF: segment {p.index} has file size "
                            f"{p.filesz:#x} larger than its memory size {p.memsz:#x}")
        if p.offset + p.filesz > f.size:
            raise LoadError(f"{path}: truncated ELF: segment {p.index} extends past the end "
                            f"of the file ({p.offset + p.filesz:#x} > {f.size:#x} bytes)")

    load_bias = 0
    if e_type == ET_DYN:
        load_bias = (cfg.pie_base - min(p.vaddr for p in loads)) & PAGE_MASK
        load_bias &= (1 << 64) - 1

    _check_config(path, cfg)
    stack_lo = cfg.stack_top - cfg.stack_size
    # page permissions: union over the segments touching each page
    spans = []
    segments = []
    for p in loads:
        lo = p.vaddr + load_bias
        hi = lo + p.memsz
        if lo < 0 or hi > ADDR_LIMIT or hi < lo:
            raise LoadError(f"{path}: segment {p.index} at {lo:#x}-{hi:#x} is outside the "
                            f"guest address space (addresses must be below {ADDR_LIMIT:#x})")
        if lo < cfg.stack_top and hi > stack_lo:
            raise LoadError(f"{path}: segment {p.index} at {lo:#x}-{hi:#x} overlaps the stack "
                            f"({stack_lo:#x}-{cfg.stack_top:#x})")
        prot = _prot(p.flags)
        segments.append((lo, p.memsz, prot))
        spans.append((lo & PAGE_MASK, page_align_up(hi), prot))

    name = os.path.basename(path)
    for start, end, prot in _runs(spans):
        mem.map(start, end - start, prot, name)

    # contents, in program-header order (later segments win on a shared page, as with
    # Linux's successive MAP_FIXED file mappings). The memory is fresh, so it reads as
    # zero except where an earlier segment put something: only there is it zeroed again.
    written = _Spans()
    for p in loads:
        lo = p.vaddr + load_bias
        page_lo = lo & PAGE_MASK
        if (p.vaddr - p.offset) % PAGE_SIZE == 0 and p.offset >= lo - page_lo:
            src = p.offset - (lo - page_lo)     # the file page, as mmap would show it
            dst = page_lo
        else:
            src, dst = p.offset, lo
        file_end = lo + p.filesz
        zero_end = page_align_up(lo + p.memsz)
        for a, b in written.overlapping(dst, zero_end):   # earlier segments' bytes
            mem.zero(a, b - a)
        if file_end > dst:
            try:
                mem.poke_file(dst, f.fd, src, file_end - dst)
            except OSError as e:
                raise LoadError(f"{path}: cannot read: {e.strerror or e}") from None
        written.add(dst, zero_end)

    exec_stack = any(p.type == PT_GNU_STACK and p.flags & PF_X for p in phdrs)
    tls = next(((p.vaddr + load_bias, p.filesz, p.memsz, p.align)
                for p in phdrs if p.type == PT_TLS), None)

    phdr_addr = _phdr_address(phdrs, loads, e_phoff, load_bias)
    brk_start = page_align_up(max(p.vaddr + p.memsz for p in loads) + load_bias)
    entry = e_entry + load_bias

    stack_prot = PROT_READ | PROT_WRITE | (PROT_EXEC if exec_stack else 0)
    mem.map(stack_lo, cfg.stack_size, stack_prot, "[stack]")

    argv = list(cfg.argv) if cfg.argv else [path]
    env = list(cfg.env)
    execfn = cfg.exec_path if cfg.exec_path is not None else path
    if cfg.exec_path is not None and os.path.isabs(cfg.exec_path):
        exe_path = cfg.exec_path
    else:
        exe_path = os.path.realpath(path)

    auxv_head = [
        (AT_HWCAP, cfg.hwcap), (AT_PAGESZ, PAGE_SIZE), (AT_CLKTCK, 100),
        (AT_PHDR, phdr_addr), (AT_PHENT, e_phentsize), (AT_PHNUM, e_phnum),
        (AT_BASE, 0), (AT_FLAGS, 0), (AT_ENTRY, entry),
        (AT_UID, cfg.uid), (AT_EUID, cfg.uid), (AT_GID, cfg.gid), (AT_EGID, cfg.gid),
        (AT_SECURE, 0),
    ]
    sp, auxv, random_addr = _build_stack(mem, path, cfg, argv, env, execfn, auxv_head)

    syms, sizes = _read_symbols(f, head, load_bias)
    prog = LoadedProgram(path=path, entry=entry, sp=sp, brk_start=brk_start, phdr=phdr_addr,
                         phnum=e_phnum, phent=e_phentsize, load_bias=load_bias,
                         elf_type=e_type, auxv=auxv, segments=segments, symbols=syms,
                         argv=argv, env=env, execfn=execfn, exe_path=exe_path,
                         stack_range=(stack_lo, cfg.stack_top), exec_stack=exec_stack,
                         random_addr=random_addr, tls=tls)
    prog._sym_sizes = sizes
    log.debug("loaded %s: entry %#x sp %#x bias %#x brk %#x", path, entry, sp, load_bias,
              brk_start)
    return prog


def _check_config(path: str, cfg: StartConfig) -> None:
    if cfg.stack_top & (PAGE_SIZE - 1) or cfg.stack_size & (PAGE_SIZE - 1) \
            or cfg.stack_size <= 0 or cfg.stack_top > ADDR_LIMIT \
            or cfg.stack_top - cfg.stack_size < 0:
        raise LoadError(f"{path}: bad stack configuration (top {cfg.stack_top:#x}, size "
                        f"{cfg.stack_size:#x}): both must be page-aligned and below "
                        f"{ADDR_LIMIT:#x}")
    if len(cfg.random_bytes) != 16:
        raise LoadError(f"{path}: AT_RANDOM needs exactly 16 bytes, got "
                        f"{len(cfg.random_bytes)}")


class _Spans:
    """Disjoint sorted [start, end) ranges, merged as they are added."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def overlapping(self, a: int, b: int) -> list[tuple[int, int]]:
        """The parts of [a, b) already covered."""
        i = bisect.bisect_right(self.ends, a)
        out = []
        while i < len(self.starts) and self.starts[i] < b:
            out.append((max(a, self.starts[i]), min(b, self.ends[i])))
            i += 1
        return out

    def add(self, a: int, b: int) -> None:
        i = bisect.bisect_left(self.ends, a)
        j = bisect.bisect_right(self.starts, b)
        if i < j:
            a, b = min(a, self.starts[i]), max(b, self.ends[j - 1])
        self.starts[i:j] = [a]
        self.ends[i:j] = [b]


def _runs(spans: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Page-aligned (start, end, prot) spans, possibly overlapping, as maximal disjoint
    runs of equal permissions, each page getting the union of the spans covering it.
    A sweep over the spans' ends: the cost does not depend on their sizes."""
    events = sorted(e for start, end, prot in spans if start < end
                    for e in ((start, 1, prot), (end, -1, prot)))
    depth = 0
    count = {PROT_READ: 0, PROT_WRITE: 0, PROT_EXEC: 0}
    out: list[list[int]] = []
    i = 0
    while i < len(events):
        at = events[i][0]
        while i < len(events) and events[i][0] == at:
            _at, delta, prot = events[i]
            depth += delta
            for bit in count:
                if prot & bit:
                    count[bit] += delta
            i += 1
        if depth == 0 or i == len(events):
            continue
        prot = sum(bit for bit, n in count.items() if n)
        nxt = events[i][0]
        if out and out[-1][1] == at and out[-1][2] == prot:
            out[-1][1] = nxt
        else:
            out.append([at, nxt, prot])
    return [tuple(r) for r in out]


def _phdr_address(phdrs: list[_Phdr], loads: list[_Phdr], phoff: int, bias: int) -> int:
    """AT_PHDR: PT_PHDR if present, else the address of e_phoff inside the PT_LOAD whose
    file range covers it (glibc static binaries have no PT_PHDR), as Linux computes it."""
    for p in phdrs:
        if p.type == PT_PHDR:
            return p.vaddr + bias
    for p in loads:
        if p.offset <= phoff < p.offset + p.filesz:
            return p.vaddr + (phoff - p.offset) + bias
    first = loads[0]
    return first.vaddr - first.offset + phoff + bias


def _build_stack(mem: GuestMemory, path: str, cfg: StartConfig, argv: list[str],
                 env: list[str], execfn: str, auxv_head: list[tuple[int, int]]
                 ) -> tuple[int, list[tuple[int, int]], int]:
    """Write strings, random bytes and the argc/argv/envp/auxv block; return
    (sp, auxv, random_addr)."""
    top = cfg.stack_top
    p = top - 8                                   # zero end marker (Linux: vm_end - 8)
    blob = bytearray()

    def push_string(s: str) -> int:
        nonlocal p
        b = os.fsencode(s) + b"\0"
        p -= len(b)
        blob[0:0] = b
        return p

    execfn_addr = push_string(execfn)
    env_addrs = [push_string(s) for s in reversed(env)][::-1]
    argv_addrs = [push_string(s) for s in reversed(argv)][::-1]
    strings_lo = p
    p -= 16
    random_addr = p

    auxv = auxv_head + [(AT_RANDOM, random_addr), (AT_EXECFN, execfn_addr), (AT_NULL, 0)]
    items = (len(argv) + 1) + (len(env) + 1) + 1 + 2 * len(auxv)
    sp = (p - 8 * items) & ~15
    if sp < top - cfg.stack_size + PAGE_SIZE:
        raise LoadError(f"{path}: arguments and environment too large for the "
                        f"{cfg.stack_size >> 10} KiB stack")

    words = [len(argv), *argv_addrs, 0, *env_addrs, 0]
    for t, v in auxv:
        words += [t, v]
    block = struct.pack(f"<{len(words)}Q", *(w & 0xFFFFFFFFFFFFFFFF for w in words))
    mem.poke(sp, block)
    gap = random_addr - (sp + len(block))
    if gap:
        mem.poke(sp + len(block), bytes(gap))
    mem.poke(random_addr, cfg.random_bytes)
    mem.poke(strings_lo, bytes(blob))
    mem.poke(top - 8, bytes(8))
    return sp, auxv, random_addr
