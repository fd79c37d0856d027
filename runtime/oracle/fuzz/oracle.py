"""Deviations of the unicorn oracle that need the fuzzer's machinery to check: each with
the spec rule it breaks and an exact check.

``runtime.deviations.explain`` is always asked first. These are consulted only when it
finds nothing, only for the unicorn side of a pair, and only with known deviations
excused. Each check states exactly what unicorn computes and compares the oracle's state
after the instruction with that, field by field (registers, fcsr, reservation, exit and
the whole scratch window): nothing is masked. Where unicorn's result needs computing, the
instruction is re-executed on the reference interpreter from a modified state (for
example with the single-precision inputs as unicorn reads them).

``runtime/oracle/deviations.py`` lists the deviations decidable from the register states alone (the
whole-program difftest uses those too); these need the reservation, the scratch window or
a re-execution, which only the fuzzer's runner has. Each is reproduced on its own by
``tests/runtime/test_fuzz.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dbtlab.ir.state import EXIT_BUDGET, EXIT_FAULT, EXIT_ILLEGAL, FAULT_MISALIGNED
from dbtlab.runtime.oracle.deviations import BOX, M32, _single_sources, _WRITES_SINGLE
from dbtlab.translator.insn import Insn

M64 = (1 << 64) - 1


@dataclass(frozen=True)
class Supplement:
    name: str
    rule: str
    #: (insn, before, ref_after, oracle_after, emulate) -> bool; the snapshots are
    #: ``runner.Snap``; emulate(snap, budget) runs the reference interpreter from a state
    check: Callable
    ends_case: bool = False          # the reference stops here (the oracle went on)


def _same_but(a, b) -> bool:
    """Equal states (exits compared by reason and fault, not by instruction count: the
    emulation runs one instruction, the probe many)."""
    return a.regs == b.regs and a.res == b.res and a.window == b.window \
        and a.exit[0] == b.exit[0] and a.exit[2:] == b.exit[2:]


def _unboxed_input_any_result(insn: Insn, before, ref_after, orc_after, emulate) -> bool:
    """unicorn reads an improperly NaN-boxed single operand as its low 32 bits, whatever
    the destination (deviations.explain covers f destinations only)."""
    srcs = _single_sources(insn)
    arch = before.arch()
    bad = [r for r in srcs if arch["f"][r] & BOX != BOX]
    if not bad:
        return False
    orig = {r: arch["f"][r] for r in bad}
    for r in bad:
        arch["f"][r] = BOX | (arch["f"][r] & M32)
    want = emulate(before.with_regs(arch), 1)
    w = want.arch()
    f_dest = insn.name in _WRITES_SINGLE or insn.name == "fcvt.d.s"
    for r, val in orig.items():          # the inputs themselves are unchanged
        if not (f_dest and r == insn.rd):
            w["f"][r] = val
    want = want.with_regs(w)
    if _same_but(want, orc_after):
        return True
    if insn.name in _WRITES_SINGLE:      # and the result is not NaN-boxed either
        w["f"][insn.rd] &= M32
        return _same_but(want.with_regs(w), orc_after)
    return False


def _fma_nv_and_unboxed(insn: Insn, before, ref_after, orc_after, emulate) -> bool:
    """Two known deviations on one single-precision fused multiply-add: NV missing for
    inf × 0 + qNaN, and the result not NaN-boxed (explain() checks them one at a time)."""
    from dbtlab.runtime.oracle.deviations import KNOWN_DEVIATIONS
    fma = next(d for d in KNOWN_DEVIATIONS if d.name == "fma-inf-zero-qnan")
    if not insn.name.endswith(".s") or not fma.applies(insn, before.arch()):
        return False
    want = ref_after.arch()
    if not want["fflags"] & 0x10:
        return False
    want["fflags"] &= ~0x10 & 0x1F
    want["f"][insn.rd] &= M32
    return _same_but(ref_after.with_regs(want), orc_after)


def _fmv_w_x_copies(insn: Insn, before, ref_after, orc_after, emulate) -> bool:
    """unicorn's fmv.w.x copies all 64 bits of rs1 into the f register."""
    if insn.name != "fmv.w.x":
        return False
    want = ref_after.arch()
    want["f"][insn.rd] = before.arch()["x"][insn.rs1] & M64
    return _same_but(ref_after.with_regs(want), orc_after)


def reserved_c_nop(word: int) -> bool:
    """The reserved 16-bit encodings unicorn executes as no-ops: quadrant 0 with
    funct3=100, and quadrant 1 funct3=100 with bit 12 set, funct2=11 and bits 6..5 = 10
    or 11 (the slots Zcb later filled; measured over all 65536 words)."""
    return word & 0xE003 == 0x8000 or word & 0xFC63 in (0x9C41, 0x9C61)


def _reserved_c_nop(insn: Insn, before, ref_after, orc_after, emulate) -> bool:
    """unicorn executes some reserved compressed encodings as no-ops."""
    if not (insn.is_illegal and insn.length == 2 and reserved_c_nop(insn.word)):
        return False
    if ref_after.exit[0] != EXIT_ILLEGAL:
        return False
    want = before.arch()
    want["pc"] = (want["pc"] + 2) & M64
    b = before.with_regs(want)
    return b.regs == orc_after.regs and b.res == orc_after.res and \
        b.window == orc_after.window and orc_after.exit[0] == EXIT_BUDGET


def _sc_misaligned(insn: Insn, before, ref_after, orc_after, emulate) -> bool:
    """unicorn fails a misaligned SC whose address holds no reservation (rd = 1) instead
    of raising address-misaligned."""
    if insn.name not in ("sc.w", "sc.d"):
        return False
    a = before.arch()
    addr = a["x"][insn.rs1]
    size = 4 if insn.name == "sc.w" else 8
    if not addr & (size - 1):
        return False
    if before.res and before.res[1] == addr:
        return False
    if ref_after.exit[0] != EXIT_FAULT or ref_after.exit[2] != FAULT_MISALIGNED:
        return False
    if insn.rd:
        a["x"][insn.rd] = 1
    a["pc"] = (a["pc"] + insn.length) & M64
    b = before.with_regs(a)
    return b.regs == orc_after.regs and orc_after.res == () and \
        b.window == orc_after.window and orc_after.exit[0] == EXIT_BUDGET


def _sc_writes_yet_fails(insn: Insn, before, ref_after, orc_after, emulate) -> bool:
    """unicorn stores on a mixed-size SC (sc.w after lr.d) whose low bytes match, then
    reports failure because its flag compares the sign-extended word with the whole
    doubleword the LR read: everything as on the reference except rd = 1."""
    if insn.name not in ("sc.w", "sc.d") or not insn.rd:
        return False
    size = 4 if insn.name == "sc.w" else 8
    a = before.arch()
    addr = a["x"][insn.rs1]
    if not before.res or before.res[1] != addr or addr & (size - 1):
        return False
    held = before.res[2] & M64
    word = held & ((1 << 8 * size) - 1)
    if size == 4 and word >> 31:
        word |= M64 ^ M32                     # unicorn's sign-extended memory word
    if word == held:                          # same-size pair: no deviation possible
        return False
    want = ref_after.arch()
    if want["x"][insn.rd] != 0:               # the reference succeeded (and stored)
        return False
    want["x"][insn.rd] = 1
    return _same_but(ref_after.with_regs(want), orc_after)


SUPPLEMENT: tuple[Supplement, ...] = (
    Supplement("unboxed-single-input-x",
               "a single-precision operand that is not properly NaN-boxed reads as the "
               "canonical NaN (D: NaN boxing); unicorn uses its low 32 bits also when the "
               "result goes to an x register (fclass.s, feq/flt/fle.s, fcvt.*.s), which "
               "deviations.explain does not cover", _unboxed_input_any_result),
    Supplement("fma-inf-zero-qnan+single-not-nan-boxed",
               "both rules of fma-inf-zero-qnan and single-not-nan-boxed on one fmadd.s-"
               "family instruction", _fma_nv_and_unboxed),
    Supplement("fmv.w.x-copies-64-bits",
               "fmv.w.x NaN-boxes the single it moves (D: NaN boxing); unicorn copies all "
               "64 bits of rs1 into the f register (deviations.py assumes zero upper bits)",
               _fmv_w_x_copies),
    Supplement("reserved-compressed-nop",
               "reserved 16-bit encodings raise illegal-instruction (C: 'reserved'); "
               "unicorn executes quadrant 0 funct3=100 and the c.subw/c.addw row's "
               "funct2=10/11 slots as no-ops", _reserved_c_nop, ends_case=True),
    Supplement("sc-misaligned-no-fault",
               "a misaligned SC raises address-misaligned (A: 'an address-misaligned "
               "exception is raised'; Linux: SIGBUS); unicorn fails it (rd = 1) without a "
               "fault when its address holds no reservation", _sc_misaligned, ends_case=True),
    Supplement("sc-writes-yet-fails",
               "an SC either succeeds, writing memory and zero to rd, or fails, writing "
               "no memory and nonzero to rd (A: store-conditional); after lr.d, unicorn's sc.w stores when "
               "the low word matches but sets rd = 1 unless the doubleword is the word's "
               "sign extension (QEMU compares its cmpxchg result, sign-extended, with the "
               "whole reserved value)", _sc_writes_yet_fails),
)


def explain_more(insn: Insn, before, ref_after, orc_after, emulate) -> Supplement | None:
    for s in SUPPLEMENT:
        if s.check(insn, before, ref_after, orc_after, emulate):
            return s
    return None
