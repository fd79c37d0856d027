"""Known deviations of the unicorn oracle from the RISC-V specification: the one list that
both the lockstep difftest (``runtime/oracle/difftest.py``) and the differential fuzzer
(``runtime/oracle/fuzz/runner.py``) consult, through the one function :func:`explain`.

unicorn 2.1.4 (QEMU 5 inside) disagrees with the ISA manual — and with dbtlab — in exactly
these cases. They are deviations from the spec, not our truth: a comparison excuses *only*
an instruction that meets a deviation's exact condition, counts it, says so in its report,
and repairs the oracle's state (the fields the deviation names become the reference's) so
that the runs stay comparable. Nothing else is masked; in particular no register class is
ignored.

Each entry has a name, the spec rule unicorn breaks, the exact condition under which the
difference is excused (in words; ``check`` is that condition in code) and the fields its
repair copies from the reference. Conditions are decided from one instruction and three
:class:`State` values — the state before it (equal on both engines), the reference's after
it and the oracle's after it — whichever tool produced them: registers, fcsr, the LR/SC
reservation, the memory the tool compares and how the instruction ended. A condition that
needs what the spec would compute from a modified state (e.g. with the single inputs boxed)
re-executes that one register-only instruction on the interpreter (:func:`emulate`).

Each entry is reproduced on its own by tests (``tests/runtime/test_deviations.py``:
crafted state pairs fed to both consumers; ``tests/runtime/test_unicorn.py`` and
``tests/runtime/test_fuzz.py``: the instruction run on unicorn and on the interpreter).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from dbtlab.ir.builder import CANONICAL_NAN
from dbtlab.ir.state import EXIT_BUDGET, EXIT_EBREAK, EXIT_ECALL, EXIT_FAULT, EXIT_ILLEGAL, \
    FAULT_MISALIGNED
from dbtlab.translator.insn import Insn

BOX = 0xFFFFFFFF00000000
M32 = 0xFFFFFFFF
M64 = (1 << 64) - 1
NV = 0x10


# single-precision instructions by the f registers they read as singles, and those that
# write a single result (both straight from the F extension's instruction list)
_READ1 = {"fsqrt.s", "fclass.s", "fcvt.w.s", "fcvt.wu.s", "fcvt.l.s", "fcvt.lu.s", "fcvt.d.s"}
_READ2 = {"fadd.s", "fsub.s", "fmul.s", "fdiv.s", "fsgnj.s", "fsgnjn.s", "fsgnjx.s",
          "fmin.s", "fmax.s", "feq.s", "flt.s", "fle.s"}
_READ3 = {"fmadd.s", "fmsub.s", "fnmsub.s", "fnmadd.s"}
_WRITES_SINGLE = (_READ2 - {"feq.s", "flt.s", "fle.s"}) | _READ3 | {
    "fsqrt.s", "fcvt.s.w", "fcvt.s.wu", "fcvt.s.l", "fcvt.s.lu", "fcvt.s.d", "fmv.w.x"}
_FP = _READ1 | _READ2 | _READ3 | _WRITES_SINGLE | {
    n.replace(".s", ".d") for n in _READ2 | _READ3 | {"fsqrt.s", "fclass.s"}} | {
    "fcvt.w.d", "fcvt.wu.d", "fcvt.l.d", "fcvt.lu.d", "fcvt.d.w", "fcvt.d.wu", "fcvt.d.l",
    "fcvt.d.lu", "fmv.x.d", "fmv.d.x", "fmv.x.w", "flw", "fld", "fsw", "fsd"}
_SINGLE_OPS = frozenset(_READ1 | _READ2 | _READ3 | _WRITES_SINGLE)
_FMA = ("fmadd.", "fmsub.", "fnmsub.", "fnmadd.")


# ---- the states compared --------------------------------------------------------------

@dataclass(frozen=True)
class State:
    """One engine's architectural state around one instruction, as both tools see it."""

    x: tuple[int, ...]
    f: tuple[int, ...]
    pc: int
    fflags: int
    frm: int
    res: tuple = ()            # (address, value) while an LR/SC reservation is held
    mem: object = None         # the memory the tool compares (equal iff memory agrees)
    trap: tuple | None = None  # None: the instruction retired; else ("fault", kind, addr),
    #                            ("illegal", word), ("ecall",), ("ebreak",) or ("exit", status)

    def but(self, **kw) -> "State":
        """This state with some fields replaced (lists are taken as tuples)."""
        for k in ("x", "f"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return dataclasses.replace(self, **kw)


def trap_of_exit(reason: int, fault_kind: int = 0, fault_addr: int = 0, word: int = 0):
    """The :attr:`State.trap` of an accelerator's exit after one instruction."""
    if reason == EXIT_BUDGET:
        return None
    if reason == EXIT_FAULT:
        return ("fault", fault_kind, fault_addr)
    if reason == EXIT_ILLEGAL:
        return ("illegal", word)
    return {EXIT_ECALL: ("ecall",), EXIT_EBREAK: ("ebreak",)}.get(reason, ("exit", reason))


# ---- re-execution on the interpreter --------------------------------------------------

_EMU = None


def emulate(insn: Insn, s: State) -> State:
    """The interpreter's state after running ``insn`` (which must not access memory) from
    ``s``; memory and reservation are ``s``'s."""
    global _EMU
    if insn.name not in _FP or insn.name in ("flw", "fld", "fsw", "fsd"):
        raise ValueError(f"emulate runs register-only instructions, not {insn.mnemonic}")
    if _EMU is None:
        from dbtlab.runtime.oracle.bare import CODE_BASE, BareMachine
        _EMU = (BareMachine(bytes(4), accel="interp", data_size=0), CODE_BASE)
    m, base = _EMU
    m.mem.poke(base, insn.word.to_bytes(insn.length, "little"))
    cpu = m.cpu
    for i, v in enumerate(s.x):
        cpu.x[i] = v if i else 0
    for i, v in enumerate(s.f):
        cpu.f[i] = v
    cpu.pc, cpu.fflags, cpu.frm = base, s.fflags, s.frm
    ex = m.accel.run(1)
    trap = trap_of_exit(ex.reason, ex.fault_kind, ex.fault_addr, ex.word)
    pc = s.pc + (cpu.pc - base) if trap is None else s.pc
    return s.but(x=[0] + list(cpu.x)[1:], f=list(cpu.f), pc=pc & M64, fflags=cpu.fflags,
                 frm=cpu.frm, trap=trap)


# ---- FP helpers -----------------------------------------------------------------------

def _fmt(insn: Insn) -> int:
    return 32 if insn.name.endswith(".s") else 64


def _is_snan(bits: int, fmt: int) -> bool:
    if fmt == 32:
        b = bits & M32
        return (b & 0x7F800000) == 0x7F800000 and bool(b & 0x7FFFFF) and not b & 0x400000
    return ((bits & 0x7FF0000000000000) == 0x7FF0000000000000 and bool(bits & (1 << 52) - 1)
            and not bits & (1 << 51))


def _is_nan(bits: int, fmt: int) -> bool:
    if fmt == 32:
        b = bits & M32
        return (b & 0x7F800000) == 0x7F800000 and bool(b & 0x7FFFFF)
    return (bits & 0x7FF0000000000000) == 0x7FF0000000000000 and bool(bits & (1 << 52) - 1)


def _unbox(bits: int) -> int:
    return bits & M32 if bits & BOX == BOX else CANONICAL_NAN[32]


def _single_sources(insn: Insn) -> list[int]:
    """f registers an instruction reads as singles (NaN-boxing applies to them)."""
    n = insn.name
    if n in _READ1:
        return [insn.rs1]
    if n in _READ2:
        return [insn.rs1, insn.rs2]
    if n in _READ3:
        return [insn.rs1, insn.rs2, insn.rs3]
    return []


def _fminmax_snan_inputs(insn: Insn, before: State) -> bool:
    if insn.name not in ("fmin.s", "fmax.s", "fmin.d", "fmax.d"):
        return False
    fmt = _fmt(insn)
    a, b = before.f[insn.rs1], before.f[insn.rs2]
    if fmt == 32:
        a, b = _unbox(a), _unbox(b)
    sa, sb = _is_snan(a, fmt), _is_snan(b, fmt)
    return (sa and not _is_nan(b, fmt)) or (sb and not _is_nan(a, fmt))


def _fma_inf_zero_qnan_inputs(insn: Insn, before: State) -> bool:
    if not insn.name.startswith(_FMA):
        return False
    fmt = _fmt(insn)
    a, b, c = before.f[insn.rs1], before.f[insn.rs2], before.f[insn.rs3]
    if fmt == 32:
        a, b, c = _unbox(a), _unbox(b), _unbox(c)
    mag = (1 << (fmt - 1)) - 1
    inf = 0x7F800000 if fmt == 32 else 0x7FF0000000000000
    a, b = a & mag, b & mag
    return ((a == inf and b == 0) or (a == 0 and b == inf)) and _is_nan(c, fmt) \
        and not _is_snan(c, fmt)


def _unboxed_inputs(insn: Insn, before: State) -> list[int]:
    return [r for r in _single_sources(insn) if before.f[r] & BOX != BOX]


# ---- the conditions -------------------------------------------------------------------
# Each: (insn, before, ref_after, oracle_after) -> bool, asked only when the two after
# states differ.

def _fp_result_only(insn: Insn, ref: State, orc: State) -> bool:
    """An FP instruction after which at most f[rd] and fflags differ."""
    if insn.name not in _FP or ref.x != orc.x or ref.pc != orc.pc or ref.frm != orc.frm \
            or ref.res != orc.res or ref.trap != orc.trap or ref.mem != orc.mem:
        return False
    rd = insn.rd
    return ref.f[:rd] == orc.f[:rd] and ref.f[rd + 1:] == orc.f[rd + 1:]


def _c_fminmax_snan(insn, before, ref, orc) -> bool:
    return _fp_result_only(insn, ref, orc) and _fminmax_snan_inputs(insn, before)


def _c_single_not_boxed(insn, before, ref, orc) -> bool:
    if insn.name not in _WRITES_SINGLE or not _fp_result_only(insn, ref, orc) or \
            ref.fflags != orc.fflags:
        return False
    r, o = ref.f[insn.rd], orc.f[insn.rd]
    return r != o and r & BOX == BOX and o >> 32 == 0 and (r & M32) == (o & M32)


def _c_unboxed_input(insn, before, ref, orc) -> bool:
    return _fp_result_only(insn, ref, orc) and bool(_unboxed_inputs(insn, before))


def _c_fma_nv(insn, before, ref, orc) -> bool:
    return _fp_result_only(insn, ref, orc) and ref.f == orc.f and \
        _fma_inf_zero_qnan_inputs(insn, before) and ref.fflags == orc.fflags | NV


def _c_unboxed_input_any_result(insn, before, ref, orc) -> bool:
    bad = _unboxed_inputs(insn, before)
    if not bad:
        return False
    f = list(before.f)
    for r in bad:
        f[r] = BOX | (f[r] & M32)          # unicorn reads the low word as it is
    want = emulate(insn, before.but(f=f, mem=ref.mem))
    f_dest = insn.name in _WRITES_SINGLE or insn.name == "fcvt.d.s"
    wf = list(want.f)
    for r in bad:                          # the inputs themselves are unchanged
        if not (f_dest and r == insn.rd):
            wf[r] = before.f[r]
    want = want.but(f=wf)
    if want == orc:
        return True
    if insn.name in _WRITES_SINGLE:        # and the result is not NaN-boxed either
        wf[insn.rd] &= M32
        return want.but(f=wf) == orc
    return False


def _c_fma_nv_and_not_boxed(insn, before, ref, orc) -> bool:
    if not insn.name.endswith(".s") or not _fma_inf_zero_qnan_inputs(insn, before) or \
            not ref.fflags & NV:
        return False
    f = list(ref.f)
    f[insn.rd] &= M32
    return ref.but(f=f, fflags=ref.fflags & ~NV & 0x1F) == orc


def _c_fmv_w_x_copies(insn, before, ref, orc) -> bool:
    if insn.name != "fmv.w.x":
        return False
    f = list(ref.f)
    f[insn.rd] = before.x[insn.rs1] & M64
    return ref.but(f=f) == orc


def reserved_c_nop(word: int) -> bool:
    """The reserved 16-bit encodings unicorn executes as no-ops: quadrant 0 with
    funct3=100, and quadrant 1 funct3=100 with bit 12 set, funct2=11 and bits 6..5 = 10
    or 11 (the slots Zcb later filled; measured over all 65536 words)."""
    return word & 0xE003 == 0x8000 or word & 0xFC63 in (0x9C41, 0x9C61)


def _c_reserved_c_nop(insn, before, ref, orc) -> bool:
    if not (insn.is_illegal and insn.length == 2 and reserved_c_nop(insn.word)):
        return False
    if not ref.trap or ref.trap[0] != "illegal":
        return False
    # the reference wrote nothing, so its memory is the memory before the instruction
    return before.but(pc=(before.pc + 2) & M64, mem=ref.mem, trap=None) == orc


def _c_sc_misaligned(insn, before, ref, orc) -> bool:
    if insn.name not in ("sc.w", "sc.d"):
        return False
    addr = before.x[insn.rs1]
    size = 4 if insn.name == "sc.w" else 8
    if not addr & (size - 1) or (before.res and before.res[0] == addr):
        return False
    if not ref.trap or ref.trap[:2] != ("fault", FAULT_MISALIGNED):
        return False
    x = list(before.x)
    if insn.rd:
        x[insn.rd] = 1
    return before.but(x=x, pc=(before.pc + insn.length) & M64, res=(), mem=ref.mem,
                      trap=None) == orc


def _c_sc_writes_yet_fails(insn, before, ref, orc) -> bool:
    if insn.name not in ("sc.w", "sc.d") or not insn.rd:
        return False
    size = 4 if insn.name == "sc.w" else 8
    addr = before.x[insn.rs1]
    if not before.res or before.res[0] != addr or addr & (size - 1):
        return False
    held = before.res[1] & M64
    word = held & ((1 << 8 * size) - 1)
    if size == 4 and word >> 31:
        word |= M64 ^ M32                  # unicorn's sign-extended memory word
    if word == held:                       # same-size pair: no deviation possible
        return False
    if ref.x[insn.rd] != 0 or ref.trap is not None:     # the reference succeeded (stored)
        return False
    x = list(ref.x)
    x[insn.rd] = 1
    return ref.but(x=x) == orc


# ---- the list ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Deviation:
    name: str
    rule: str                  # the spec rule the oracle breaks
    condition: str             # exactly when the difference is excused (``check`` in code)
    repair: tuple[str, ...]    # State fields the oracle takes from the reference
    check: Callable            # (insn, before, ref_after, oracle_after) -> bool
    ends_run: bool = False     # the reference's run ends here (it trapped), the oracle's not

    def __str__(self) -> str:
        return self.name


_REGS_ONLY = "only f[rd] and fflags differ (pc, x, frm, reservation, memory, trap agree)"

KNOWN_DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        "fminmax-snan",
        "fmin/fmax with one signalling-NaN input return the other operand (and raise NV) "
        "(F: 'If only one operand is a NaN, the result is the non-NaN operand'); unicorn "
        "returns the canonical NaN",
        f"fmin/fmax.s/.d, exactly one input (as the spec unboxes it) is a signalling NaN "
        f"and the other no NaN; {_REGS_ONLY}", ("f", "fflags"), _c_fminmax_snan),
    Deviation(
        "single-not-nan-boxed",
        "single-precision results are NaN-boxed: the upper 32 bits of the f register are "
        "all 1s (D: NaN boxing of narrower values); unicorn leaves them 0 for arithmetic "
        "results",
        "an instruction writing a single result; only f[rd] differs: the reference's is "
        "boxed, the oracle's upper word is 0 and the low words agree", ("f",),
        _c_single_not_boxed),
    Deviation(
        "unboxed-single-input",
        "a single-precision operand that is not properly NaN-boxed reads as the canonical "
        "NaN (D: NaN boxing); unicorn uses its low 32 bits",
        f"a single-precision instruction with an f input whose upper word is not all 1s; "
        f"{_REGS_ONLY}", ("f", "fflags"), _c_unboxed_input),
    Deviation(
        "fma-inf-zero-qnan",
        "fused multiply-add sets NV when the multiplicands are infinity and zero, even if "
        "the addend is a quiet NaN (F: fused multiply-add); unicorn does not",
        "fmadd/fmsub/fnmsub/fnmadd with multiplicands inf and 0 (either order) and a quiet "
        "NaN addend; only fflags differ, by NV set on the reference alone", ("fflags",),
        _c_fma_nv),
    Deviation(
        "unboxed-single-input-x",
        "a single-precision operand that is not properly NaN-boxed reads as the canonical "
        "NaN (D: NaN boxing); unicorn uses its low 32 bits also when the result goes to an "
        "x register (fclass.s, feq/flt/fle.s, fcvt.*.s)",
        "a single-precision instruction with an f input whose upper word is not all 1s; "
        "the oracle's state is exactly the interpreter's from the same state with those "
        "inputs boxed (their low words kept), the result possibly not boxed",
        ("x", "f", "fflags"), _c_unboxed_input_any_result),
    Deviation(
        "fma-inf-zero-qnan+single-not-nan-boxed",
        "both rules of fma-inf-zero-qnan and single-not-nan-boxed on one fmadd.s-family "
        "instruction",
        "fmadd.s family meeting fma-inf-zero-qnan's inputs, NV set on the reference; the "
        "oracle's state is the reference's with NV clear and f[rd]'s upper word 0",
        ("f", "fflags"), _c_fma_nv_and_not_boxed),
    Deviation(
        "fmv.w.x-copies-64-bits",
        "fmv.w.x NaN-boxes the single it moves (D: NaN boxing); unicorn copies all 64 bits "
        "of rs1 into the f register",
        "fmv.w.x; the oracle's state is the reference's with f[rd] = x[rs1]", ("f",),
        _c_fmv_w_x_copies),
    Deviation(
        "reserved-compressed-nop",
        "reserved 16-bit encodings raise illegal-instruction (C: 'reserved'); unicorn "
        "executes quadrant 0 funct3=100 and the c.subw/c.addw row's funct2=10/11 slots as "
        "no-ops",
        "one of those words (reserved_c_nop); the reference raised illegal-instruction, "
        "the oracle's state is the state before with pc + 2", (), _c_reserved_c_nop,
        ends_run=True),
    Deviation(
        "sc-misaligned-no-fault",
        "a misaligned SC raises address-misaligned (A: 'an address-misaligned exception is "
        "raised'; Linux: SIGBUS); unicorn fails it (rd = 1) without a fault when its "
        "address holds no reservation",
        "sc.w/sc.d at a misaligned address holding no reservation; the reference faulted "
        "misaligned, the oracle's state is the state before with rd = 1, pc advanced and "
        "no reservation", (), _c_sc_misaligned, ends_run=True),
    Deviation(
        "sc-writes-yet-fails",
        "an SC either succeeds, writing memory and zero to rd, or fails, writing no memory "
        "and nonzero to rd (A: store-conditional); after lr.d, unicorn's sc.w stores when "
        "the low word matches but sets rd = 1 unless the doubleword is the word's sign "
        "extension (QEMU compares its cmpxchg result, sign-extended, with the whole "
        "reserved value)",
        "sc.w/sc.d with rd != x0 at the aligned reserved address, the reserved value not "
        "its own low word's (sign-)extension, the reference succeeded; the oracle's state "
        "is the reference's with rd = 1 (memory agrees: both stored)", ("x",),
        _c_sc_writes_yet_fails),
)

BY_NAME = {d.name: d for d in KNOWN_DEVIATIONS}


def explain(insn: Insn, before: State, ref_after: State, oracle_after: State) -> Deviation | None:
    """The known deviation that accounts for *all* differences between the reference and
    the oracle after executing ``insn`` from ``before`` (the first in list order whose
    condition holds), or None."""
    if ref_after == oracle_after:
        return None
    for dev in KNOWN_DEVIATIONS:
        if dev.check(insn, before, ref_after, oracle_after):
            return dev
    return None


def repair(dev: Deviation, ref_after: State, oracle_after: State) -> State:
    """The oracle's state after ``dev`` is repaired: the fields it names taken from the
    reference (for every deviation that does not end the run, the reference's state)."""
    return oracle_after.but(**{k: getattr(ref_after, k) for k in dev.repair})


def may_deviate(insn: Insn | None, before: State | None = None) -> bool:
    """Can ``insn`` meet a known deviation (from ``before``, if known)? The tools run such
    instructions one at a time, so that each deviation is attributed to exactly one."""
    if insn is None:
        return False
    name = insn.name
    if name in _SINGLE_OPS or name in ("sc.w", "sc.d"):
        return True
    if insn.is_illegal:
        return insn.length == 2 and reserved_c_nop(insn.word)
    if name in ("fmin.d", "fmax.d"):
        return before is None or _fminmax_snan_inputs(insn, before)
    if name.startswith(_FMA):
        return before is None or _fma_inf_zero_qnan_inputs(insn, before)
    return False
