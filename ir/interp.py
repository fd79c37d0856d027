"""The interpreter lowering: the builder primitives computed at once on Python ints.

Running a semantics function against an ``InterpBuilder`` *is* executing the instruction.
This is the reference engine: slow, simple, and steppable in a debugger (put a breakpoint
in ``dbtlab.translator.rv64i.addi`` and run ``dbtlab run --accel interp``).

Register writes are journalled per instruction so that a fault anywhere in the instruction
leaves the architectural state exactly as it was before it (precise exceptions).
"""

from __future__ import annotations

from dbtlab.ir import softfloat as sf
from dbtlab.ir.builder import (CSR_CYCLE, CSR_FCSR, CSR_FFLAGS, CSR_FRM, CSR_INSTRET, CSR_TIME,
                               MASK64, RM_DYN, Builder)
from dbtlab.ir.state import FAULT_MISALIGNED
from dbtlab.ir.abi import GuestFault

M64 = MASK64
SIGN64 = 1 << 63


class Trap(Exception):
    """ecall / ebreak / illegal / fence.i raised by an instruction's semantics."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _s64(v: int) -> int:
    return v - (1 << 64) if v & SIGN64 else v


class InterpBuilder(Builder):
    """Executes primitives on an architectural state held in Python lists."""

    def __init__(self, mem) -> None:
        self.mem = mem
        self.x = [0] * 32
        self.f = [0] * 32
        self.fflags = 0
        self.frm = 0
        self.fields = {"res_addr": 0, "res_val": 0, "res_valid": 0}
        self.instret = 0          # instructions retired before the current one
        self.pc = 0
        self.next_pc = 0
        self.target: int | None = None   # set by jump/branch
        self.journal: list = []

    # ---- integer ---------------------------------------------------------------------
    def const(self, v):
        return v & M64

    def binop(self, op, x, y):
        if op == "add":
            return (x + y) & M64
        if op == "sub":
            return (x - y) & M64
        if op == "and":
            return x & y
        if op == "or":
            return x | y
        if op == "xor":
            return x ^ y
        if op == "shl":
            return (x << (y & 63)) & M64
        if op == "lshr":
            return x >> (y & 63)
        if op == "ashr":
            return (_s64(x) >> (y & 63)) & M64
        if op == "mul":
            return (x * y) & M64
        if op == "mulh":
            return ((_s64(x) * _s64(y)) >> 64) & M64
        if op == "mulhu":
            return (x * y) >> 64
        if op == "mulhsu":
            return ((_s64(x) * y) >> 64) & M64
        if op == "udiv":
            return x // y
        if op == "urem":
            return x % y
        if op in ("sdiv", "srem"):
            a, b = _s64(x), _s64(y)
            q = abs(a) // abs(b)
            if (a < 0) != (b < 0):
                q = -q
            return (q if op == "sdiv" else a - q * b) & M64
        raise ValueError(f"unknown binop {op}")

    def icmp(self, pred, x, y):
        if pred == "eq":
            return x == y
        if pred == "ne":
            return x != y
        if pred == "ltu":
            return x < y
        if pred == "geu":
            return x >= y
        if pred == "lt":
            return (x ^ SIGN64) < (y ^ SIGN64)
        if pred == "ge":
            return (x ^ SIGN64) >= (y ^ SIGN64)
        raise ValueError(f"unknown icmp {pred}")

    def select(self, c, x, y):
        return x if c else y

    def sext(self, x, bits):
        x &= (1 << bits) - 1
        return (x - (1 << bits)) & M64 if x >> (bits - 1) else x

    def zext(self, x, bits):
        return x & ((1 << bits) - 1)

    def bool_to_int(self, c):
        return 1 if c else 0

    def bop(self, op, c, d=None):
        if op == "and":
            return bool(c and d)
        if op == "or":
            return bool(c or d)
        return not c

    # ---- state -----------------------------------------------------------------------
    def _read_x(self, r):
        return self.x[r]

    def _write_x(self, r, v):
        self.journal.append((self.x, r, self.x[r]))
        self.x[r] = v

    def read_f(self, r):
        return self.f[r]

    def write_f(self, r, v):
        self.journal.append((self.f, r, self.f[r]))
        self.f[r] = v

    def read_field(self, name):
        return self.fields[name]

    def write_field(self, name, v):
        self.journal.append((self.fields, name, self.fields[name]))
        self.fields[name] = v & M64

    def _set_fp(self, fflags=None, frm=None):
        self.journal.append(("fp", self.fflags, self.frm))
        if fflags is not None:
            self.fflags = fflags & 0x1F
        if frm is not None:
            self.frm = frm & 7

    def read_csr(self, csr):
        if csr == CSR_FFLAGS:
            return self.fflags
        if csr == CSR_FRM:
            return self.frm
        if csr == CSR_FCSR:
            return (self.frm << 5) | self.fflags
        if csr in (CSR_CYCLE, CSR_TIME, CSR_INSTRET):
            return self.instret & M64
        raise ValueError(f"unsupported CSR {csr:#x}")

    def write_csr(self, csr, v):
        if csr == CSR_FFLAGS:
            self._set_fp(fflags=v)
        elif csr == CSR_FRM:
            self._set_fp(frm=v)
        elif csr == CSR_FCSR:
            self._set_fp(fflags=v, frm=v >> 5)
        else:
            raise ValueError(f"unsupported CSR write {csr:#x}")

    def rollback(self) -> None:
        """Undo this instruction's register writes (it faulted)."""
        for entry in reversed(self.journal):
            if entry[0] == "fp":
                self.fflags, self.frm = entry[1], entry[2]
            else:
                entry[0][entry[1]] = entry[2]
        self.journal.clear()

    # ---- memory ----------------------------------------------------------------------
    def load(self, addr, size, signed, for_write=False):
        v = self.mem.load_for_write(addr, size) if for_write else self.mem.load(addr, size)
        return self.sext(v, 8 * size) if signed and size < 8 else v

    def store(self, addr, v, size):
        self.mem.store(addr, size, v)

    def cmpxchg(self, cond, addr, expected, new, size):
        if not cond:
            return False
        cur = self.mem.load_for_write(addr, size)
        if cur != expected & ((1 << (8 * size)) - 1):
            return False
        self.mem.store(addr, size, new)
        return True

    def check_aligned(self, addr, size):
        if addr & (size - 1):
            raise GuestFault(FAULT_MISALIGNED, addr)

    # ---- control ---------------------------------------------------------------------
    def jump(self, target):
        self.target = target

    def branch(self, cond, target):
        if cond:
            self.target = target

    def trap(self, kind):
        raise Trap(kind)

    # ---- floating point --------------------------------------------------------------
    def _rm(self, rm):
        if rm == RM_DYN:
            rm = self.frm
        if rm > 4:
            raise Trap("illegal")
        return rm

    def _accrue(self, res):
        v, fl = res
        if fl:
            self._set_fp(fflags=self.fflags | fl)
        return v

    def fop(self, op, fmt, args, rm):
        rm = self._rm(rm)
        if op == "fma":
            return self._accrue(sf.fma(fmt, args[0], args[1], args[2], rm))
        if op == "sqrt":
            return self._accrue(sf.sqrt(fmt, args[0], rm))
        return self._accrue(getattr(sf, op)(fmt, args[0], args[1], rm))

    def fcvt_ff(self, x, src, dst, rm):
        return self._accrue(sf.cvt_ff(x, src, dst, self._rm(rm)))

    def fcvt_if(self, x, signed, fmt, rm):
        return self._accrue(sf.cvt_from_int(x, signed, fmt, self._rm(rm)))

    def fround(self, x, fmt, rm):
        return self._accrue(sf.round_to_integral(x, fmt, self._rm(rm)))

    def ftoi(self, x, fmt, signed):
        return sf.to_int_exact(x, fmt, signed)

    def fcmp(self, pred, x, y, fmt, signaling):
        return self._accrue(sf.compare(pred, x, y, fmt, signaling))

    def fflags_or(self, flags):
        if flags:
            self._set_fp(fflags=self.fflags | flags)
