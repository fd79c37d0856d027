"""The stencil library as data: machine code and holes, extracted once from an object file.

``compile_library`` runs LLVM once (O2, static relocation model, small code model, for the
host CPU) on the stencil module and reads the object file with pyelftools:

* each ``st_*`` function becomes a ``Stencil``: its bytes, and a *patch list* of
  (offset, how, what, addend) read from its relocations;
* relocations name a hole symbol (``H<n>``: write the hole's value), ``H_cont`` (the
  continuation: the next stencil of the block), a constant-pool section (``.rodata.*``:
  copied next to the code), or a host function LLVM calls (``round``: reached through a
  trampoline in the code buffer);
* a stencil whose last instruction is the ``jmp H_cont`` drops it when another stencil
  follows: the blocks fall through.

The library is plain data (``to_bytes``/``from_bytes``, versioned and checksummed), so a
process loads it from the persistent cache without LLVM. Nothing here knows an ISA: the
front end supplies the module text and the hole expressions.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import time
import zlib
from dataclasses import dataclass, field

FORMAT = "dbtlab-stencils"
VERSION = 1

# relocation types (x86-64 psABI)
R_64, R_PC32, R_32, R_32S, R_PLT32 = 1, 2, 10, 11, 4
_JMP_REL32 = 0xE9


class LibraryError(Exception):
    """A stencil library that cannot be used (damaged, another version, another host)."""


@dataclass
class Stencil:
    name: str
    code: bytes
    #: (offset in code, relocation type, target, addend); target: "H<n>" hole symbol,
    #: "H_cont", "sec:<section>" (constant pool) or "fn:<name>" (host function)
    patches: list[tuple[int, int, str, int]] = field(default_factory=list)
    #: the code ends with a 5-byte ``jmp H_cont`` that a following stencil makes redundant
    tail_jump: bool = False


@dataclass
class Library:
    key: str                                   # what it was generated for
    stencils: dict[str, Stencil]
    data: dict[str, bytes]                     # constant-pool sections by name
    meta: dict                                 # front-end data (forms, holes), JSON-able
    seconds: float = 0.0                       # generation + compilation time

    # ---- serialisation ----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        doc = {"format": FORMAT, "version": VERSION, "key": self.key, "meta": self.meta,
               "seconds": self.seconds,
               "data": {k: v.hex() for k, v in self.data.items()},
               "stencils": {n: [s.code.hex(), s.patches, s.tail_jump]
                            for n, s in self.stencils.items()}}
        body = zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)
        return hashlib.sha256(body).digest() + body

    @staticmethod
    def from_bytes(blob: bytes, key: str | None = None) -> "Library":
        if len(blob) < 32 or hashlib.sha256(blob[32:]).digest() != blob[:32]:
            raise LibraryError("stencil library is damaged (checksum mismatch)")
        try:
            doc = json.loads(zlib.decompress(blob[32:]))
        except (zlib.error, ValueError) as e:
            raise LibraryError(f"stencil library is unreadable: {e}") from None
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise LibraryError(f"not a {FORMAT} v{VERSION} file")
        if key is not None and doc["key"] != key:
            raise LibraryError("stencil library was made for another translator or host")
        st = {n: Stencil(n, bytes.fromhex(c), [tuple(p) for p in pl], tj)
              for n, (c, pl, tj) in doc["stencils"].items()}
        return Library(doc["key"], st, {k: bytes.fromhex(v) for k, v in doc["data"].items()},
                       doc["meta"], doc.get("seconds", 0.0))


def compile_object(ir_text: str) -> bytes:
    """O2 for the host CPU, static relocations, small code model: holes become 32- or
    64-bit absolute relocations, the continuation a 32-bit relative jump."""
    import llvmlite.binding as llvm

    from dbtlab.ir.jit import host_cpu, init_llvm
    init_llvm()
    llvm.initialize_native_asmparser()        # the 64-bit holes' movabs is inline asm
    cpu, features = host_cpu()
    tm = llvm.Target.from_default_triple().create_target_machine(
        cpu=cpu, features=features, opt=2, reloc="static", codemodel="small")
    mod = llvm.parse_assembly(ir_text)
    mod.triple = llvm.get_process_triple()
    mod.verify()
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=2))
    pb.getModulePassManager().run(mod, pb)
    return tm.emit_object(mod)


def extract(obj: bytes) -> tuple[dict[str, Stencil], dict[str, bytes]]:
    """Stencils and constant-pool sections from an ELF object (one .text section)."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.relocation import RelocationSection

    elf = ELFFile(io.BytesIO(obj))
    text_idx = next(i for i, s in enumerate(elf.iter_sections()) if s.name == ".text")
    text = elf.get_section(text_idx).data()
    symtab = elf.get_section_by_name(".symtab")
    funcs = []
    for sym in symtab.iter_symbols():
        if sym["st_info"]["type"] == "STT_FUNC" and sym["st_shndx"] == text_idx:
            funcs.append((sym["st_value"], sym["st_size"], sym.name))
    funcs.sort()
    relocs: list[tuple[int, int, str, int]] = []
    data: dict[str, bytes] = {}
    for sec in elf.iter_sections():
        if not isinstance(sec, RelocationSection) or sec["sh_info"] != text_idx:
            continue
        for r in sec.iter_relocations():
            sym = symtab.get_symbol(r["r_info_sym"])
            name, addend = sym.name, r["r_addend"]
            if sym["st_shndx"] not in ("SHN_UNDEF", "SHN_ABS"):
                target_sec = elf.get_section(sym["st_shndx"])
                if target_sec.name == ".text":
                    raise LibraryError(f"a stencil refers into .text at {r['r_offset']:#x}")
                data.setdefault(target_sec.name, target_sec.data())
                target, addend = f"sec:{target_sec.name}", addend + sym["st_value"]
            elif name == "H_cont" or (name.startswith("H") and name[1:].isdigit()):
                target = name
            else:
                target = f"fn:{name}"
            relocs.append((r["r_offset"], r["r_info_type"], target, addend))
    relocs.sort()
    stencils: dict[str, Stencil] = {}
    for start, size, name in funcs:
        code = text[start:start + size]
        pl = [(off - start, typ, tgt, add) for off, typ, tgt, add in relocs
              if start <= off < start + size]
        tail = (size >= 5 and code[-5] == _JMP_REL32 and
                any(off == size - 4 and tgt == "H_cont" for off, _, tgt, _ in pl))
        for off, typ, tgt, _ in pl:
            if typ not in (R_64, R_PC32, R_32, R_32S, R_PLT32):
                raise LibraryError(f"{name}: relocation type {typ} at +{off:#x}")
        stencils[name] = Stencil(name, bytes(code), pl, tail)
    return stencils, data


def build(ir_text: str, key: str, meta: dict) -> Library:
    t0 = time.perf_counter()
    stencils, data = extract(compile_object(ir_text))
    return Library(key, stencils, data, meta, time.perf_counter() - t0)


def pack_u32(buf: bytearray, off: int, v: int) -> None:
    struct.pack_into("<I", buf, off, v & 0xFFFFFFFF)
