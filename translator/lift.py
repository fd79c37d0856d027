"""Lifting: walk guest blocks and run each instruction's semantics against a lowering's
builder (QEMU's translator loop, which lives in target/, not in tcg/).

The lowerings in ``dbtlab.ir`` know no ISA and no block structure: they offer a builder per
block or region function and a few calls around each instruction. This module is the one
place that knows which RISC-V instructions may leave a block part-way, which ones the JIT
hands to the interpreter, and how a block or a region is walked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dbtlab.ir.builder import RM_DYN, RM_RMM
from dbtlab.ir.jit import source_version
from dbtlab.ir.llvm_emit import BlockCode, LLVMBuilder, ModuleEmitter, Slot
from dbtlab.ir.region_emit import (MAX_REGION_BLOCKS, MAX_REGION_INSNS,  # noqa: F401 (used
                                   begin_region, end_region)        # by region formation)
from dbtlab.translator.block import GuestBlock, pages_of
from dbtlab.translator.insn import Insn

#: keys the persistent cache: every file of the front end and of the lowering shapes the code
TRANSLATOR_VERSION = source_version(__package__)


#: conversions to integer round with llvm.round (ties away) natively; the others are exact
_RMM_NATIVE = frozenset({"fcvt.w.s", "fcvt.wu.s", "fcvt.l.s", "fcvt.lu.s", "fcvt.w.d",
                         "fcvt.wu.d", "fcvt.l.d", "fcvt.lu.d", "fcvt.d.s", "fcvt.d.w",
                         "fcvt.d.wu"})

#: instructions that can leave the block part-way (host fault, misaligned atomic): the
#: block's completed writes are stored before them
_MEMORY = frozenset({"lb", "lh", "lw", "ld", "lbu", "lhu", "lwu", "sb", "sh", "sw", "sd",
                     "flw", "fld", "fsw", "fsd", "lr.w", "lr.d", "sc.w", "sc.d"})


def _has_rm(insn: Insn) -> bool:
    return insn.enc is not None and any(f.name == "rm" for f in insn.enc.operands)


def needs_interpreter(insn: Insn) -> bool:
    """Instructions the JIT hands to the interpreter: a static round-to-nearest-max-magnitude
    mode, which x86 cannot do in hardware (rare: compilers emit dynamic modes)."""
    return insn.rm == RM_RMM and insn.name not in _RMM_NATIVE and _has_rm(insn)


def may_leave(insn: Insn) -> bool:
    """Can this instruction exit the block before completing? Memory accesses (host
    faults), atomics, FP with a dynamic rounding mode (invalid frm or RMM: interpreter),
    static RMM (interpreter)."""
    name = insn.name
    if name in _MEMORY or name.startswith("amo"):
        return True
    return insn.rm == RM_DYN and _has_rm(insn) or needs_interpreter(insn)


def lift_insn(b: LLVMBuilder, k: int, pc: int, insn: Insn) -> None:
    """Instruction k of the block being emitted, at guest ``pc``."""
    b.begin_insn(k, pc, insn.length, insn.word, may_leave(insn))
    if needs_interpreter(insn):
        b.interpret_one()
        return
    insn.sem(b, insn)
    b.end_insn()


def _lift_insns(b: LLVMBuilder, blk: GuestBlock) -> list:
    """Emit blk's instructions up to the first that ends the block; returns those kept."""
    kept = []
    for k, (pc, insn) in enumerate(blk.insns):
        kept.append((pc, insn))
        lift_insn(b, k, pc, insn)
        if b.terminated:
            break
    return kept


def lift_block(mod: ModuleEmitter, blk: GuestBlock) -> BlockCode:
    """Emit one first-tier block function; truncates blk.insns at the first instruction
    that ends it."""
    fname = f"b{blk.pc:x}" + (f"_n{blk.limit}" if blk.limit else "") + f"_{mod.name}"
    b = mod.begin_block(fname, blk)
    blk.insns = _lift_insns(b, blk)
    return mod.end_block(b, len(blk.insns), blk.end)


@dataclass
class _BlockView:
    """What the builder's exits read from ``code.block`` (a region has no limit)."""

    limit: None = None


@dataclass
class RegionCode:
    """What the emitter produced for a region."""

    name: str
    entry: int
    blocks: list[GuestBlock]
    table_index: int = 0
    slots: list[Slot] = field(default_factory=list)
    successors: list[int] = field(default_factory=list)
    block: _BlockView = field(default_factory=_BlockView)
    id: int = 0

    def block_of(self, pc: int) -> GuestBlock | None:
        """The region block holding the instruction at pc (host-fault rewind)."""
        for b in self.blocks:
            if any(p == pc for p, _ in b.insns):
                return b
        return None

    @property
    def guest_insns(self) -> int:
        return sum(len(b.insns) for b in self.blocks)

    @property
    def pages(self) -> set[int]:
        return pages_of(self.blocks)


def lift_region(mod: ModuleEmitter, entry: int, blocks: list[GuestBlock],
                block_ids: list[int] | None = None) -> RegionCode:
    """Emit one region function into ``mod``. ``blocks`` are decoded guest blocks; the
    one at ``entry`` is where the region is entered. ``block_ids``: their first-tier ids,
    so that profiles keep counting them."""
    code = RegionCode(f"r{entry:x}_{mod.name}", entry, blocks)
    b = begin_region(mod, code, [blk.pc for blk in blocks], block_ids)
    for idx, blk in enumerate(blocks):
        b.begin_region_block(idx, blk.pc, len(blk.insns), block_ids[idx] if block_ids else 0)
        _lift_insns(b, blk)
        if not b.terminated:
            b.goto(blk.end)
    end_region(mod, b)
    return code
