"""Family helpers: the shared shapes that keep each instruction's semantics to a line or two.

Every helper takes the builder ``b`` and the decoded instruction ``i``. Python ``if`` is only
ever used on decoded fields (register numbers, immediates, static rounding modes), never on
run-time values: those go through ``b.select`` so every lowering can follow them.
"""

from __future__ import annotations

import struct
from typing import Callable

from dbtlab.ir.builder import (CANONICAL_NAN, CSR_NAMES, FLAG_NV, FLAG_NX, FP_EXP_MASK,
                               FP_FRAC_MASK, FP_QUIET_BIT, FP_SIGN, MASK64, READ_ONLY_CSRS,
                               Builder)
from dbtlab.translator.insn import Insn

# -- registry -------------------------------------------------------------------------------

SEMANTICS: dict[str, Callable[[Builder, Insn], None]] = {}


def sem(*names: str):
    """Register a function as the semantics of the named instruction(s)."""
    def deco(fn):
        for n in names:
            if n in SEMANTICS:
                raise ValueError(f"semantics for {n} defined twice")
            SEMANTICS[n] = fn
        return fn
    return deco


# -- integer --------------------------------------------------------------------------------

def rr(b: Builder, i: Insn, op: str) -> None:
    """rd = rs1 op rs2."""
    b.wx(i.rd, b.binop(op, b.rx(i.rs1), b.rx(i.rs2)))


def ri(b: Builder, i: Insn, op: str) -> None:
    """rd = rs1 op imm."""
    b.wx(i.rd, b.binop(op, b.rx(i.rs1), b.const(i.imm)))


def set_if(b: Builder, i: Insn, pred: str, rhs) -> None:
    """rd = (rs1 pred rhs) ? 1 : 0."""
    b.wx(i.rd, b.bool_to_int(b.icmp(pred, b.rx(i.rs1), rhs)))


# 32-bit word operations: extend the operands as the operation needs, compute in 64 bits,
# sign-extend the low word of the result.
WORD_EXT = {"add": "", "sub": "", "mul": "", "shl": "", "lshr": "z", "ashr": "s",
            "sdiv": "s", "srem": "s", "udiv": "z", "urem": "z"}


def word(b: Builder, op: str, x, y, result: Callable | None = None):
    ext = WORD_EXT[op]
    if ext == "s":
        x = b.sext(x, 32)
    elif ext == "z":
        x = b.zext(x, 32)
    if op in ("shl", "lshr", "ashr"):
        y = b.and_(y, b.const(31))
    elif ext == "s":
        y = b.sext(y, 32)
    elif ext == "z":
        y = b.zext(y, 32)
    v = result(x, y) if result else b.binop(op, x, y)
    return b.sext(v, 32)


def rr_w(b: Builder, i: Insn, op: str) -> None:
    b.wx(i.rd, word(b, op, b.rx(i.rs1), b.rx(i.rs2)))


def ri_w(b: Builder, i: Insn, op: str) -> None:
    b.wx(i.rd, word(b, op, b.rx(i.rs1), b.const(i.imm)))


def div(b: Builder, x, y, signed: bool, rem: bool):
    """RISC-V division: x/0 = -1 (all ones), x%0 = x, MIN/-1 = MIN, MIN%-1 = 0.
    The divisor is replaced by 1 where the hardware result is defined without dividing,
    so the primitive never sees a zero or overflowing divisor."""
    zero = b.eq(y, b.const(0))
    bad = zero
    if signed:
        ovf = b.bop("and", b.eq(x, b.const(1 << 63)), b.eq(y, b.const(MASK64)))
        bad = b.bop("or", zero, ovf)
    ysafe = b.select(bad, b.const(1), y)
    op = ("s" if signed else "u") + ("rem" if rem else "div")
    q = b.binop(op, x, ysafe)
    return b.select(zero, x if rem else b.const(MASK64), q)


# -- control --------------------------------------------------------------------------------

def branch(b: Builder, i: Insn, pred: str) -> None:
    b.branch(b.icmp(pred, b.rx(i.rs1), b.rx(i.rs2)), (b.pc + i.imm) & MASK64)


# -- memory ---------------------------------------------------------------------------------

def address(b: Builder, i: Insn):
    return b.add(b.rx(i.rs1), b.const(i.imm)) if i.imm else b.rx(i.rs1)


def load(b: Builder, i: Insn, size: int, signed: bool) -> None:
    b.wx(i.rd, b.load(address(b, i), size, signed))


def store(b: Builder, i: Insn, size: int) -> None:
    b.store(address(b, i), b.rx(i.rs2), size)


# -- atomics --------------------------------------------------------------------------------

def load_reserved(b: Builder, i: Insn, size: int) -> None:
    addr = b.rx(i.rs1)
    b.check_aligned(addr, size)
    v = b.load(addr, size, True)
    b.write_field("res_addr", addr)
    b.write_field("res_val", v)
    b.write_field("res_valid", b.const(1))
    b.wx(i.rd, v)


def store_conditional(b: Builder, i: Insn, size: int) -> None:
    """Succeeds if the reservation covers addr and memory's ``size`` bytes still hold the
    low bytes of what the LR read: QEMU's rule for when to store. (For sc.w after lr.d QEMU
    then reports failure unless the doubleword is its low word sign-extended — a write
    that reports failure, which the spec forbids; see runtime/oracle/deviations.py.)"""
    addr = b.rx(i.rs1)
    b.check_aligned(addr, size)
    held = b.bop("and", b.ne(b.read_field("res_valid"), b.const(0)),
                 b.eq(b.read_field("res_addr"), addr))
    ok = b.cmpxchg(held, addr, b.read_field("res_val"), b.rx(i.rs2), size)
    b.write_field("res_valid", b.const(0))
    b.wx(i.rd, b.select(ok, b.const(0), b.const(1)))


def amo(b: Builder, i: Insn, size: int, op: Callable) -> None:
    """rd = mem[rs1]; mem[rs1] = op(rd, rs2) (a single hart: no other observer)."""
    addr = b.rx(i.rs1)
    b.check_aligned(addr, size)
    old = b.load(addr, size, True, for_write=True)
    b.store(addr, op(b, old, b.rx(i.rs2)), size)
    b.wx(i.rd, old)


def amo_minmax(pred: str, size: int) -> Callable:
    def op(b: Builder, old, src):
        if size == 4:   # compare as 32-bit values
            ext = b.zext if pred in ("ltu", "geu") else b.sext
            lhs, rhs = ext(old, 32), ext(src, 32)
        else:
            lhs, rhs = old, src
        return b.select(b.icmp(pred, lhs, rhs), old, src)
    return op


# -- CSRs -----------------------------------------------------------------------------------

def csr_op(b: Builder, i: Insn, op: str, src, writes: bool) -> None:
    """csrrw / csrrs / csrrc and their immediate forms."""
    if i.csr not in CSR_NAMES or (writes and i.csr in READ_ONLY_CSRS):
        b.trap("illegal")
        return
    reads = op != "w" or i.rd != 0
    old = b.read_csr(i.csr) if reads else None
    if writes:
        if op == "w":
            new = src
        elif op == "s":
            new = b.or_(old, src)
        else:
            new = b.and_(old, b.xor(src, b.const(MASK64)))
        b.write_csr(i.csr, new)
    if reads:
        b.wx(i.rd, old)


# -- floating point -------------------------------------------------------------------------

def fp_bits(value: float, fmt: int) -> int:
    """The bit pattern of a Python float in ``fmt`` (exact for the constants we use)."""
    if fmt == 32:
        return struct.unpack("<I", struct.pack("<f", value))[0]
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def fp_arith(b: Builder, i: Insn, op: str, fmt: int) -> None:
    n = 1 if op == "sqrt" else 2
    args = tuple(b.rfmt(r, fmt) for r in (i.rs1, i.rs2)[:n])
    b.wfmt(i.rd, b.fop(op, fmt, args, i.rm), fmt)


def fp_fma(b: Builder, i: Insn, fmt: int, neg_product: bool, neg_addend: bool) -> None:
    """fmadd/fmsub/fnmsub/fnmadd: one rounding of (±rs1*rs2 ± rs3)."""
    sign = b.const(FP_SIGN[fmt])
    x, y, z = b.rfmt(i.rs1, fmt), b.rfmt(i.rs2, fmt), b.rfmt(i.rs3, fmt)
    if neg_product:
        x = b.xor(x, sign)
    if neg_addend:
        z = b.xor(z, sign)
    b.wfmt(i.rd, b.fop("fma", fmt, (x, y, z), i.rm), fmt)


def fp_sign_inject(b: Builder, i: Insn, fmt: int, mode: str) -> None:
    sign = b.const(FP_SIGN[fmt])
    x, y = b.rfmt(i.rs1, fmt), b.rfmt(i.rs2, fmt)
    s = b.and_(y, sign)
    if mode == "n":
        s = b.xor(s, sign)
    elif mode == "x":
        s = b.xor(s, b.and_(x, sign))
    b.wfmt(i.rd, b.or_(b.and_(x, b.const(FP_SIGN[fmt] - 1)), s), fmt)


def fp_minmax(b: Builder, i: Insn, fmt: int, is_max: bool) -> None:
    """IEEE 754-2019 minimumNumber/maximumNumber: a NaN operand yields the other operand,
    two NaNs the canonical NaN, -0 < +0; a signalling NaN raises NV."""
    x, y = b.rfmt(i.rs1, fmt), b.rfmt(i.rs2, fmt)
    xn, yn = b.f_is_nan(x, fmt), b.f_is_nan(y, fmt)
    if is_max:
        better = b.fcmp("lt", y, x, fmt, False)
        tie_pick_x = b.bop("not", b.f_is_neg(x, fmt))
    else:
        better = b.fcmp("lt", x, y, fmt, False)
        tie_pick_x = b.f_is_neg(x, fmt)
    tie = b.fcmp("eq", x, y, fmt, False)
    pick_x = b.bop("or", better, b.bop("and", tie, tie_pick_x))
    r = b.select(pick_x, x, y)
    r = b.select(yn, x, r)
    r = b.select(xn, y, r)
    r = b.select(b.bop("and", xn, yn), b.const(CANONICAL_NAN[fmt]), r)
    snan = b.bop("or", b.f_is_snan(x, fmt), b.f_is_snan(y, fmt))
    b.fflags_or(b.select(snan, b.const(FLAG_NV), b.const(0)))
    b.wfmt(i.rd, r, fmt)


def fp_compare(b: Builder, i: Insn, fmt: int, pred: str) -> None:
    """feq is a quiet comparison; flt and fle signal on any NaN."""
    x, y = b.rfmt(i.rs1, fmt), b.rfmt(i.rs2, fmt)
    b.wx(i.rd, b.bool_to_int(b.fcmp(pred, x, y, fmt, pred != "eq")))


def fp_classify(b: Builder, i: Insn, fmt: int) -> None:
    """One-hot class: -inf -normal -subnormal -0 +0 +subnormal +normal +inf sNaN qNaN."""
    x = b.rfmt(i.rs1, fmt)
    e = b.and_(x, b.const(FP_EXP_MASK[fmt]))
    frac_zero = b.eq(b.and_(x, b.const(FP_FRAC_MASK[fmt])), b.const(0))
    e_zero = b.eq(e, b.const(0))
    e_max = b.eq(e, b.const(FP_EXP_MASK[fmt]))
    # magnitude class: 0 = inf, 1 = normal, 2 = subnormal, 3 = zero
    k = b.select(e_zero, b.select(frac_zero, b.const(3), b.const(2)), b.const(1))
    k = b.select(e_max, b.const(0), k)
    k = b.select(b.f_is_neg(x, fmt), k, b.sub(b.const(7), k))
    quiet = b.ne(b.and_(x, b.const(FP_QUIET_BIT[fmt])), b.const(0))
    k = b.select(b.bop("and", e_max, b.bop("not", frac_zero)),
                 b.select(quiet, b.const(9), b.const(8)), k)
    b.wx(i.rd, b.shl(b.const(1), k))


def fp_to_int(b: Builder, i: Insn, fmt: int, width: int, signed: bool) -> None:
    """fcvt.{w,wu,l,lu}.{s,d}: round in rm, saturate out-of-range and NaN inputs (NaN and
    too-large give the maximum), raise NV for those and NX for inexact in-range results."""
    x = b.rfmt(i.rs1, fmt)
    r = b.fround(x, fmt, i.rm)
    if signed:
        lo, hi = -float(1 << (width - 1)), float(1 << (width - 1))
        min_v, max_v = -(1 << (width - 1)) & MASK64, (1 << (width - 1)) - 1
    else:
        lo, hi = 0.0, float(1 << width)
        min_v, max_v = 0, (1 << width) - 1
    nan = b.f_is_nan(x, fmt)
    too_big = b.fcmp("le", b.const(fp_bits(hi, fmt)), r, fmt, False)
    too_small = b.fcmp("lt", r, b.const(fp_bits(lo, fmt)), fmt, False)
    invalid = b.bop("or", nan, b.bop("or", too_big, too_small))
    v = b.ftoi(b.select(invalid, b.const(0), r), fmt, signed)
    sat = b.select(too_small, b.const(min_v), b.const(max_v))
    res = b.select(invalid, sat, v)
    if width == 32:
        res = b.sext(res, 32)
    exact = b.fcmp("eq", r, x, fmt, False)
    flags = b.select(invalid, b.const(FLAG_NV), b.select(exact, b.const(0), b.const(FLAG_NX)))
    b.fflags_or(flags)
    b.wx(i.rd, res)


def int_to_fp(b: Builder, i: Insn, fmt: int, width: int, signed: bool) -> None:
    x = b.rx(i.rs1)
    if width == 32:
        x = b.sext(x, 32) if signed else b.zext(x, 32)
    b.wfmt(i.rd, b.fcvt_if(x, signed, fmt, i.rm), fmt)


def fp_load(b: Builder, i: Insn, fmt: int) -> None:
    """flw boxes the loaded single; the bits are not interpreted (NaN payloads kept)."""
    b.wfmt(i.rd, b.load(address(b, i), fmt // 8, False), fmt)


def fp_store(b: Builder, i: Insn, fmt: int) -> None:
    """fsw stores the low 32 bits as they are, boxed or not."""
    b.store(address(b, i), b.read_f(i.rs2), fmt // 8)


def fp_move_to_x(b: Builder, i: Insn, fmt: int) -> None:
    """fmv.x.w sign-extends the low 32 raw bits; fmv.x.d copies."""
    v = b.read_f(i.rs1)
    b.wx(i.rd, b.sext(v, 32) if fmt == 32 else v)


def fp_move_from_x(b: Builder, i: Insn, fmt: int) -> None:
    b.wfmt(i.rd, b.rx(i.rs1), fmt)
