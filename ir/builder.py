"""The abstract builder that instruction semantics are written against.

A semantics function (``dbtlab.translator.rv64i.addi`` and friends) receives a builder and
a decoded instruction and describes what the instruction does by calling builder methods.
Two lowerings implement the *primitives* below:

* ``dbtlab.ir.interp.InterpBuilder`` computes at once with Python ints (the reference
  interpreter: set a breakpoint in any semantics function and step through it);
* ``dbtlab.ir.llvm_emit.LLVMBuilder`` emits LLVM IR text for the JIT.

Everything above the primitives — the x0 rule, NaN-boxing, FP classification, the
fcvt saturation rules — is written once here or in the semantics, so the two engines can
disagree about how to run an instruction, never about what it means.

Conventions:

* integer values are 64 bits wide; booleans are a separate kind produced by ``icmp``,
  ``fcmp`` and the ``b*`` operations, turned into 0/1 by ``bool_to_int``;
* FP values travel as raw bit patterns in 64-bit values (a single in the low 32 bits);
* primitives never fault on their operands: ``sdiv`` and friends require a nonzero,
  non-overflowing divisor, which the semantics guarantee with ``select``;
* register writes within an instruction are seen by later reads in the same instruction; a
  fault anywhere in the instruction rolls all of them back (precise exceptions);
* ``rm`` arguments are a static rounding mode 0..4 or ``RM_DYN`` (read frm at run time; an
  invalid frm makes the instruction illegal).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

Value = Any   # an int (interpreter) or an SSA name (LLVM); opaque to semantics
Bool = Any

RM_RNE, RM_RTZ, RM_RDN, RM_RUP, RM_RMM, RM_DYN = 0, 1, 2, 3, 4, 7
RM_NAMES = {0: "rne", 1: "rtz", 2: "rdn", 3: "rup", 4: "rmm", 7: "dyn"}

# fflags bits
FLAG_NX, FLAG_UF, FLAG_OF, FLAG_DZ, FLAG_NV = 1, 2, 4, 8, 16

CANONICAL_NAN = {32: 0x7FC00000, 64: 0x7FF8000000000000}
FP_SIGN = {32: 1 << 31, 64: 1 << 63}
FP_EXP_MASK = {32: 0x7F800000, 64: 0x7FF0000000000000}
FP_FRAC_MASK = {32: (1 << 23) - 1, 64: (1 << 52) - 1}
FP_QUIET_BIT = {32: 1 << 22, 64: 1 << 51}

# CSR numbers the user-level ISA defines
CSR_FFLAGS, CSR_FRM, CSR_FCSR = 0x001, 0x002, 0x003
CSR_CYCLE, CSR_TIME, CSR_INSTRET = 0xC00, 0xC01, 0xC02
CSR_NAMES = {CSR_FFLAGS: "fflags", CSR_FRM: "frm", CSR_FCSR: "fcsr", CSR_CYCLE: "cycle",
             CSR_TIME: "time", CSR_INSTRET: "instret"}
READ_ONLY_CSRS = frozenset({CSR_CYCLE, CSR_TIME, CSR_INSTRET})

MASK64 = (1 << 64) - 1


class Builder(ABC):
    """Primitives (abstract) plus the architectural rules built on them (concrete)."""

    #: guest address of the instruction being described, and of the next one
    pc: int
    next_pc: int

    # ---- integer primitives --------------------------------------------------------------
    @abstractmethod
    def const(self, v: int) -> Value: ...

    @abstractmethod
    def binop(self, op: str, x: Value, y: Value) -> Value:
        """op in add sub mul and or xor shl lshr ashr (shift counts taken mod 64),
        udiv sdiv urem srem (divisor nonzero and no signed overflow),
        mulh mulhu mulhsu (high 64 bits of the 128-bit product)."""

    @abstractmethod
    def icmp(self, pred: str, x: Value, y: Value) -> Bool:
        """pred in eq ne lt ltu ge geu."""

    @abstractmethod
    def select(self, c: Bool, x: Value, y: Value) -> Value: ...

    @abstractmethod
    def sext(self, x: Value, bits: int) -> Value:
        """Sign-extend the low ``bits`` bits of x to 64."""

    @abstractmethod
    def zext(self, x: Value, bits: int) -> Value:
        """Keep the low ``bits`` bits of x."""

    @abstractmethod
    def bool_to_int(self, c: Bool) -> Value: ...

    @abstractmethod
    def bop(self, op: str, c: Bool, d: Bool | None = None) -> Bool:
        """Boolean and/or/not (``d`` unused for not)."""

    # ---- state primitives ----------------------------------------------------------------
    @abstractmethod
    def _read_x(self, r: int) -> Value: ...

    @abstractmethod
    def _write_x(self, r: int, v: Value) -> None: ...

    @abstractmethod
    def read_f(self, r: int) -> Value:
        """Raw 64-bit pattern of f[r]."""

    @abstractmethod
    def write_f(self, r: int, v: Value) -> None:
        """Raw 64-bit pattern to f[r]."""

    @abstractmethod
    def read_field(self, name: str) -> Value:
        """A non-FP scalar of the CPU state (res_addr, res_val, res_valid)."""

    @abstractmethod
    def write_field(self, name: str, v: Value) -> None: ...

    @abstractmethod
    def read_csr(self, csr: int) -> Value:
        """fflags, frm, fcsr, cycle, time, instret (the semantics check legality)."""

    @abstractmethod
    def write_csr(self, csr: int, v: Value) -> None:
        """fflags, frm, fcsr only."""

    # ---- memory --------------------------------------------------------------------------
    @abstractmethod
    def load(self, addr: Value, size: int, signed: bool, for_write: bool = False) -> Value:
        """Load 1/2/4/8 bytes; misaligned accesses work; faults are precise. ``for_write``:
        the read half of a read-modify-write (AMO), which faults as a store would."""

    @abstractmethod
    def store(self, addr: Value, v: Value, size: int) -> None: ...

    @abstractmethod
    def cmpxchg(self, cond: Bool, addr: Value, expected: Value, new: Value,
                size: int) -> Bool:
        """If ``cond``: access addr for writing (faulting as a store would) and, if its
        ``size`` bytes equal the low bytes of ``expected``, store ``new`` there.
        Returns whether the store happened."""

    @abstractmethod
    def check_aligned(self, addr: Value, size: int) -> None:
        """Fault with a misaligned-atomic fault unless addr is a multiple of size."""

    # ---- control -------------------------------------------------------------------------
    @abstractmethod
    def jump(self, target: Value) -> None:
        """Unconditional transfer; ends the instruction."""

    @abstractmethod
    def branch(self, cond: Bool, target: int) -> None:
        """Conditional direct transfer to a static target; falls through otherwise."""

    @abstractmethod
    def trap(self, kind: str) -> None:
        """kind in ecall ebreak illegal fence.i: leave to the runtime at this instruction
        (fence.i: after it)."""

    # ---- floating point ------------------------------------------------------------------
    @abstractmethod
    def fop(self, op: str, fmt: int, args: tuple[Value, ...], rm: int) -> Value:
        """IEEE 754 add sub mul div sqrt fma (fma: a*b+c) on ``fmt``-bit patterns, correctly
        rounded in ``rm``; exception flags accrue into fflags; a NaN result is canonical."""

    @abstractmethod
    def fcvt_ff(self, x: Value, src: int, dst: int, rm: int) -> Value:
        """Convert between binary32 and binary64 (flags accrue, NaN results canonical)."""

    @abstractmethod
    def fcvt_if(self, x: Value, signed: bool, fmt: int, rm: int) -> Value:
        """Convert a 64-bit integer (signed or unsigned) to ``fmt`` (flags accrue)."""

    @abstractmethod
    def fround(self, x: Value, fmt: int, rm: int) -> Value:
        """Round to an integral value in the same format. Raises NV for a signalling NaN
        and nothing else (no inexact); a NaN result is canonical."""

    @abstractmethod
    def ftoi(self, x: Value, fmt: int, signed: bool) -> Value:
        """Convert an integral, in-range value exactly to a 64-bit integer. Any other input
        gives an unspecified result (the semantics select around it)."""

    @abstractmethod
    def fcmp(self, pred: str, x: Value, y: Value, fmt: int, signaling: bool) -> Bool:
        """pred in eq lt le (ordered); NV for a signalling NaN, or any NaN if signaling."""

    @abstractmethod
    def fflags_or(self, flags: Value) -> None:
        """Accrue explicitly computed exception flags."""

    # ---- architectural rules, written once -----------------------------------------------
    def add(self, x, y): return self.binop("add", x, y)
    def sub(self, x, y): return self.binop("sub", x, y)
    def and_(self, x, y): return self.binop("and", x, y)
    def or_(self, x, y): return self.binop("or", x, y)
    def xor(self, x, y): return self.binop("xor", x, y)
    def shl(self, x, y): return self.binop("shl", x, y)
    def lshr(self, x, y): return self.binop("lshr", x, y)
    def ashr(self, x, y): return self.binop("ashr", x, y)
    def eq(self, x, y): return self.icmp("eq", x, y)
    def ne(self, x, y): return self.icmp("ne", x, y)

    def rx(self, r: int) -> Value:
        """x[r]; x0 reads as zero."""
        return self.const(0) if r == 0 else self._read_x(r)

    def wx(self, r: int, v: Value) -> None:
        """x[r] = v; writes to x0 are discarded."""
        if r != 0:
            self._write_x(r, v)

    def rf32(self, r: int) -> Value:
        """f[r] as a single: a value not NaN-boxed reads as the canonical NaN."""
        bits = self.read_f(r)
        boxed = self.eq(self.lshr(bits, self.const(32)), self.const(0xFFFFFFFF))
        return self.select(boxed, self.zext(bits, 32), self.const(CANONICAL_NAN[32]))

    def wf32(self, r: int, v: Value) -> None:
        """f[r] = single v, NaN-boxed."""
        self.write_f(r, self.or_(self.zext(v, 32), self.const(0xFFFFFFFF00000000)))

    def rfmt(self, r: int, fmt: int) -> Value:
        return self.rf32(r) if fmt == 32 else self.read_f(r)

    def wfmt(self, r: int, v: Value, fmt: int) -> None:
        if fmt == 32:
            self.wf32(r, v)
        else:
            self.write_f(r, v)

    def f_is_nan(self, x: Value, fmt: int) -> Bool:
        mag = self.and_(x, self.const(FP_SIGN[fmt] - 1))
        return self.icmp("ltu", self.const(FP_EXP_MASK[fmt]), mag)

    def f_is_snan(self, x: Value, fmt: int) -> Bool:
        quiet = self.ne(self.and_(x, self.const(FP_QUIET_BIT[fmt])), self.const(0))
        return self.bop("and", self.f_is_nan(x, fmt), self.bop("not", quiet))

    def f_is_neg(self, x: Value, fmt: int) -> Bool:
        return self.ne(self.and_(x, self.const(FP_SIGN[fmt])), self.const(0))
