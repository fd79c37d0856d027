"""Translation-block formation, following QEMU's rules.

A block starts at a guest PC and extends over straight-line instructions. It ends:

* after a control transfer (jal, jalr, branches), ecall, ebreak, fence.i or an illegal
  instruction (the semantics of these end the block: the emitter stops there);
* before an instruction that starts on another page than the block's first instruction,
  so a block never depends on two pages' translations being valid... except that an
  instruction straddling a page boundary is allowed as the last one (its block is then
  registered on both pages);
* after ``max_insns`` instructions;
* before an instruction whose fetch would fault (that fault belongs to whoever jumps there).

A block never starts at an odd pc: with the C extension instructions are 2-byte aligned,
and fetching from an odd address is the instruction-address-misaligned exception
(``FAULT_FETCH_MISALIGNED`` at the pc). No RV64GC control transfer produces one (branch
and jal offsets are even, jalr clears bit 0): only a pc set from outside can be odd.

The cache key of a block is (pc, limit): the translator specialises on nothing else — in
user mode XLEN, the extensions and the privilege level never change, and the dynamic
rounding mode is checked at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from dbtlab.ir.abi import PAGE_SHIFT, GuestFault
from dbtlab.ir.state import FAULT_FETCH_MISALIGNED
from dbtlab.translator.insn import Insn

#: instructions whose semantics always leave the block
TERMINATORS = frozenset({"jal", "jalr", "beq", "bne", "blt", "bge", "bltu", "bgeu",
                         "ecall", "ebreak", "fence.i", "illegal"})


@dataclass
class GuestBlock:
    """The guest side of a translation block."""

    pc: int
    insns: list[tuple[int, Insn]] = field(default_factory=list)
    limit: int | None = None          # instruction limit for a truncated variant
    fetch_fault: bool = False         # stopped because the next fetch faults

    @property
    def end(self) -> int:
        """Address just after the last instruction."""
        if not self.insns:
            return self.pc
        pc, insn = self.insns[-1]
        return pc + insn.length

    @property
    def pages(self) -> set[int]:
        return {p >> PAGE_SHIFT for pc, i in self.insns for p in (pc, pc + i.length - 1)}

    @property
    def size(self) -> int:
        return self.end - self.pc

    def code_bytes(self) -> bytes:
        return b"".join(i.word.to_bytes(i.length, "little") for _, i in self.insns)


def pages_of(blocks) -> set[int]:
    """Every page some instruction of these blocks occupies."""
    out: set[int] = set()
    for b in blocks:
        out |= b.pages
    return out


def form_block(fetch: Callable[[int], Insn], pc: int, max_insns: int) -> GuestBlock:
    """Decode the candidate instructions of the block at pc. ``fetch`` decodes the
    instruction at an address or raises GuestFault. The first fetch's fault propagates
    (the block cannot exist); later ones end the block before that instruction. An odd
    pc raises GuestFault(FAULT_FETCH_MISALIGNED, pc)."""
    if pc & 1:
        raise GuestFault(FAULT_FETCH_MISALIGNED, pc)
    blk = GuestBlock(pc)
    page = pc >> PAGE_SHIFT
    a = pc
    while len(blk.insns) < max_insns:
        if a >> PAGE_SHIFT != page:
            break
        try:
            insn = fetch(a)
        except GuestFault:
            if not blk.insns:
                raise
            blk.fetch_fault = True
            break
        blk.insns.append((a, insn))
        if insn.name in TERMINATORS:
            break
        a = (a + insn.length) & 0xFFFFFFFFFFFFFFFF
    return blk
