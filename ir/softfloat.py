"""Exact IEEE 754 binary32/binary64 arithmetic in pure Python, with RISC-V conventions.

The reference interpreter implements the FP primitives of ``dbtlab.ir.builder`` with this
module, so it is written to be obviously right rather than fast: every operation unpacks
its operands to ``(sign, integer significand, exponent)``, computes the exact result with
Python integers (division and square root keep enough extra bits plus a sticky bit), and
hands it to one shared :func:`_round_pack` that knows every rounding mode, subnormals,
overflow and underflow.

Conventions (those of the RISC-V F/D extensions):

* operands and results are raw bit patterns (``int``): 32-bit for binary32, 64-bit for
  binary64 (bits above ``fmt`` are ignored, so a NaN-boxed single may be passed as is);
  ``fmt`` is 32 or 64;
* ``rm`` is a static RISC-V rounding mode: 0 RNE, 1 RTZ, 2 RDN, 3 RUP, 4 RMM (ties away
  from zero); the caller resolves the dynamic mode 7 from frm;
* every function returns ``(result, flags)`` with fflags bits NX=1 UF=2 OF=4 DZ=8 NV=16
  (compare: ``(bool, flags)``; to_int_exact raises nothing and returns the bare pattern);
* a NaN result is always the canonical NaN; a signalling NaN operand raises NV;
* tininess is detected after rounding and UF is raised only for a tiny *inexact* result;
  an overflow raises OF|NX and gives infinity or the largest finite number per ``rm``.
"""

from __future__ import annotations

from math import isqrt

from dbtlab.ir.builder import (FLAG_DZ, FLAG_NV, FLAG_NX, FLAG_OF, FLAG_UF, MASK64,
                               RM_RDN, RM_RMM, RM_RNE, RM_RTZ, RM_RUP)

__all__ = ["add", "sub", "mul", "div", "sqrt", "fma", "cvt_ff", "cvt_from_int",
           "round_to_integral", "to_int_exact", "compare", "ARITH"]


class _Fmt:
    """Constants of one binary interchange format."""

    __slots__ = ("bits", "mbits", "p", "bias", "emin", "qmin", "sign", "exp_mask",
                 "frac_mask", "quiet", "nan", "inf", "max_finite", "hidden", "mask")

    def __init__(self, bits: int, ebits: int) -> None:
        self.bits = bits
        self.mbits = bits - 1 - ebits             # stored fraction bits
        self.p = self.mbits + 1                   # precision
        self.bias = (1 << (ebits - 1)) - 1
        self.emin = 1 - self.bias                 # exponent of the smallest normal
        self.qmin = self.emin - self.mbits        # exponent of the smallest subnormal
        self.sign = 1 << (bits - 1)
        self.exp_mask = ((1 << ebits) - 1) << self.mbits
        self.frac_mask = (1 << self.mbits) - 1
        self.quiet = 1 << (self.mbits - 1)
        self.nan = self.exp_mask | self.quiet     # canonical NaN
        self.inf = self.exp_mask
        self.max_finite = self.exp_mask - 1
        self.hidden = 1 << self.mbits
        self.mask = (1 << bits) - 1


_FMTS = {32: _Fmt(32, 8), 64: _Fmt(64, 11)}

# operand kinds returned by _decode
_ZERO, _FINITE, _INF, _QNAN, _SNAN = 0, 1, 2, 3, 4


def _decode(x: int, F: _Fmt) -> tuple[int, int, int, int]:
    """(kind, sign, sig, exp) with value = (-1)**sign * sig * 2**exp for finite values."""
    sign = 1 if x & F.sign else 0
    e = (x & F.exp_mask) >> F.mbits
    frac = x & F.frac_mask
    if e == 0:
        if frac == 0:
            return _ZERO, sign, 0, 0
        return _FINITE, sign, frac, F.qmin
    if x & F.exp_mask == F.exp_mask:
        if frac == 0:
            return _INF, sign, 0, 0
        return (_QNAN if frac & F.quiet else _SNAN), sign, 0, 0
    return _FINITE, sign, frac | F.hidden, e - F.bias - F.mbits


def _round_int(sig: int, shift: int, sign: int, rm: int) -> tuple[int, bool]:
    """Round sig * 2**-shift (shift > 0) to an integer in rm: (rounded, inexact)."""
    kept = sig >> shift
    rem = sig & ((1 << shift) - 1)
    if rem == 0:
        return kept, False
    if rm == RM_RNE:
        half = 1 << (shift - 1)
        up = rem > half or (rem == half and kept & 1)
    elif rm == RM_RTZ:
        up = False
    elif rm == RM_RDN:
        up = sign
    elif rm == RM_RUP:
        up = not sign
    elif rm == RM_RMM:
        up = rem >= 1 << (shift - 1)
    else:
        raise ValueError(f"invalid static rounding mode {rm}")
    return kept + 1 if up else kept, True


def _round_pack(sign: int, sig: int, exp: int, F: _Fmt, rm: int) -> tuple[int, int]:
    """Round the exact value (-1)**sign * sig * 2**exp into format F.

    A caller with an inexact intermediate passes ``sig = 2*q + sticky`` (with q carrying at
    least p+1 bits, so the rounding point lies above the sticky bit): the odd low bit then
    stands for "strictly between q and q+1", which rounds exactly like the true value.
    sig == 0 gives a zero of the given sign (callers pick the sign of exact zeros).
    """
    if sig == 0:
        return (F.sign if sign else 0), 0
    mbits = F.mbits
    top = exp + sig.bit_length() - 1            # exponent of the leading bit (unbounded)
    q = top - mbits                             # exponent of the last kept bit
    if q < F.qmin:
        q = F.qmin                              # subnormal range: fixed quantum
    shift = q - exp
    flags = 0
    if shift <= 0:
        kept = sig << -shift
    else:
        kept, inexact = _round_int(sig, shift, sign, rm)
        if inexact:
            flags = FLAG_NX
            # Tininess after rounding: would the result, rounded to p bits with an
            # unbounded exponent, still lie below 2**emin?
            if top < F.emin:
                if top < F.emin - 1:
                    flags |= FLAG_UF
                else:                           # one binade below: does it round up?
                    unb, _ = _round_int(sig, shift - 1, sign, rm) if shift > 1 else (sig, 0)
                    if unb >> F.p == 0:
                        flags |= FLAG_UF
    # (biased exponent - 1) << mbits plus the significand with its hidden bit: a carry out
    # of the significand, or a subnormal rounding up to the smallest normal, bumps the
    # exponent by itself.
    mag = ((q - F.qmin) << mbits) + kept
    if mag >= F.exp_mask:
        flags |= FLAG_OF | FLAG_NX
        to_inf = rm == RM_RNE or rm == RM_RMM or (rm == RM_RUP and not sign) or \
            (rm == RM_RDN and sign)
        mag = F.inf if to_inf else F.max_finite
    return (F.sign | mag if sign else mag), flags


def _nan_result(F: _Fmt, *kinds: int) -> tuple[int, int]:
    return F.nan, (FLAG_NV if _SNAN in kinds else 0)


def _sum(F: _Fmt, ps: int, psig: int, pexp: int, cs: int, csig: int, cexp: int,
         rm: int) -> tuple[int, int]:
    """Round (-1)**ps*psig*2**pexp + (-1)**cs*csig*2**cexp (finite, exact) once."""
    if psig == 0 and csig == 0:
        zs = ps if ps == cs else (1 if rm == RM_RDN else 0)
        return (F.sign if zs else 0), 0
    if psig == 0:
        return _round_pack(cs, csig, cexp, F, rm)
    if csig == 0:
        return _round_pack(ps, psig, pexp, F, rm)
    # Let the p-term be the one with the higher leading bit. If the other one lies wholly
    # below every rounding boundary near the p-term, only its sign matters: replace it by
    # a tiny value of the same sign (keeps the integers small when exponents are far apart).
    ptop = pexp + psig.bit_length()
    ctop = cexp + csig.bit_length()
    if ptop < ctop:
        ps, psig, pexp, cs, csig, cexp = cs, csig, cexp, ps, psig, pexp
        ptop, ctop = ctop, ptop
    # p-term and the rounding boundaries of any result within a binade below it are
    # multiples of 2**e0; a c-term below 2**e0 never crosses one of them.
    e0 = min(pexp, ptop - F.p - 4)
    if ctop <= e0:
        csig, cexp = 1, e0 - 1
    if pexp < cexp:
        ps, psig, pexp, cs, csig, cexp = cs, csig, cexp, ps, psig, pexp
    gap = pexp - cexp                           # now pexp >= cexp
    v = (-psig if ps else psig) * (1 << gap) + (-csig if cs else csig)
    if v == 0:
        return (F.sign if rm == RM_RDN else 0), 0
    if v < 0:
        return _round_pack(1, -v, cexp, F, rm)
    return _round_pack(0, v, cexp, F, rm)


# ---- arithmetic -----------------------------------------------------------------------------

def add(fmt: int, a: int, b: int, rm: int) -> tuple[int, int]:
    """a + b, correctly rounded; inf - inf is invalid; exact zero sums are +0 (-0 in RDN)
    unless both operands are zeros of the same sign."""
    F = _FMTS[fmt]
    ka, sa, ma, ea = _decode(a, F)
    kb, sb, mb, eb = _decode(b, F)
    if ka >= _QNAN or kb >= _QNAN:
        return _nan_result(F, ka, kb)
    if ka == _INF or kb == _INF:
        if ka == _INF and kb == _INF and sa != sb:
            return F.nan, FLAG_NV
        s = sa if ka == _INF else sb
        return (F.sign | F.inf if s else F.inf), 0
    return _sum(F, sa, ma, ea, sb, mb, eb, rm)


def sub(fmt: int, a: int, b: int, rm: int) -> tuple[int, int]:
    """a - b: a + (-b) (negating a NaN keeps it a NaN of the same kind)."""
    return add(fmt, a, b ^ _FMTS[fmt].sign, rm)


def mul(fmt: int, a: int, b: int, rm: int) -> tuple[int, int]:
    """a * b, correctly rounded; inf * 0 is invalid; the sign is always sa xor sb."""
    F = _FMTS[fmt]
    ka, sa, ma, ea = _decode(a, F)
    kb, sb, mb, eb = _decode(b, F)
    if ka >= _QNAN or kb >= _QNAN:
        return _nan_result(F, ka, kb)
    s = sa ^ sb
    if ka == _INF or kb == _INF:
        if ka == _ZERO or kb == _ZERO:
            return F.nan, FLAG_NV
        return (F.sign | F.inf if s else F.inf), 0
    return _round_pack(s, ma * mb, ea + eb, F, rm)


def div(fmt: int, a: int, b: int, rm: int) -> tuple[int, int]:
    """a / b, correctly rounded; 0/0 and inf/inf are invalid; finite nonzero / 0 raises DZ
    and gives a signed infinity."""
    F = _FMTS[fmt]
    ka, sa, ma, ea = _decode(a, F)
    kb, sb, mb, eb = _decode(b, F)
    if ka >= _QNAN or kb >= _QNAN:
        return _nan_result(F, ka, kb)
    s = sa ^ sb
    inf = F.sign | F.inf if s else F.inf
    zero = F.sign if s else 0
    if ka == _INF:
        return (F.nan, FLAG_NV) if kb == _INF else (inf, 0)
    if kb == _INF:
        return zero, 0
    if kb == _ZERO:
        return (F.nan, FLAG_NV) if ka == _ZERO else (inf, FLAG_DZ)
    if ka == _ZERO:
        return zero, 0
    # quotient with at least p+2 bits, then the remainder as a sticky bit
    k = F.p + 2 + mb.bit_length() - ma.bit_length()
    if k < 0:
        k = 0
    q, r = divmod(ma << k, mb)
    return _round_pack(s, (q << 1) | (r != 0), ea - eb - k - 1, F, rm)


def sqrt(fmt: int, a: int, rm: int) -> tuple[int, int]:
    """Square root, correctly rounded; sqrt(-0) = -0, sqrt of anything below zero
    (including -inf) is invalid."""
    F = _FMTS[fmt]
    ka, sa, ma, ea = _decode(a, F)
    if ka >= _QNAN:
        return _nan_result(F, ka)
    if ka == _ZERO:
        return (F.sign if sa else 0), 0
    if sa:
        return F.nan, FLAG_NV
    if ka == _INF:
        return F.inf, 0
    if ea & 1:                                  # make the exponent even
        ma <<= 1
        ea -= 1
    # scale by 4**k so the integer root has at least p+2 bits
    k = (2 * (F.p + 2) - ma.bit_length()) // 2 + 1
    if k < 0:
        k = 0
    n = ma << (2 * k)
    r = isqrt(n)
    return _round_pack(0, (r << 1) | (r * r != n), (ea >> 1) - k - 1, F, rm)


def fma(fmt: int, a: int, b: int, c: int, rm: int) -> tuple[int, int]:
    """a * b + c with a single rounding. inf * 0 is invalid even when c is a quiet NaN (a
    RISC-V requirement); inf + -inf between product and addend is invalid; an exact zero
    result follows the addition rule with the product's sign sa xor sb."""
    F = _FMTS[fmt]
    ka, sa, ma, ea = _decode(a, F)
    kb, sb, mb, eb = _decode(b, F)
    kc, sc, mc, ec = _decode(c, F)
    inf_zero = (ka == _INF and kb == _ZERO) or (ka == _ZERO and kb == _INF)
    if ka >= _QNAN or kb >= _QNAN or kc >= _QNAN:
        flags = FLAG_NV if (inf_zero or _SNAN in (ka, kb, kc)) else 0
        return F.nan, flags
    if inf_zero:
        return F.nan, FLAG_NV
    ps = sa ^ sb
    if ka == _INF or kb == _INF:
        if kc == _INF and sc != ps:
            return F.nan, FLAG_NV
        return (F.sign | F.inf if ps else F.inf), 0
    if kc == _INF:
        return (F.sign | F.inf if sc else F.inf), 0
    return _sum(F, ps, ma * mb, ea + eb, sc, mc, ec, rm)


#: the arithmetic operations by the names ``Builder.fop`` uses; each is called as
#: ``ARITH[op](fmt, *operands, rm)``
ARITH = {"add": add, "sub": sub, "mul": mul, "div": div, "sqrt": sqrt, "fma": fma}


# ---- conversions ----------------------------------------------------------------------------

def cvt_ff(x: int, src: int, dst: int, rm: int) -> tuple[int, int]:
    """Convert between binary32 and binary64 (fcvt.d.s exact, fcvt.s.d rounds in rm);
    a NaN becomes the canonical NaN of dst, NV for a signalling one."""
    S, D = _FMTS[src], _FMTS[dst]
    k, s, m, e = _decode(x, S)
    if k >= _QNAN:
        return _nan_result(D, k)
    if k == _INF:
        return (D.sign | D.inf if s else D.inf), 0
    return _round_pack(s, m, e, D, rm)        # m == 0 gives the signed zero


def cvt_from_int(v: int, signed: bool, fmt: int, rm: int) -> tuple[int, int]:
    """Convert the 64-bit pattern v, read as int64 (signed) or uint64, to fmt in rm."""
    v &= MASK64
    s = 0
    if signed and v >> 63:
        v = (1 << 64) - v
        s = 1
    return _round_pack(s, v, 0, _FMTS[fmt], rm)  # zero gives +0


def round_to_integral(x: int, fmt: int, rm: int) -> tuple[int, int]:
    """Round to an integral value in the same format (the first step of fcvt to integer).
    NV only for a signalling NaN and no inexact flag; the sign is kept, so -0.3 gives -0."""
    F = _FMTS[fmt]
    k, s, m, e = _decode(x, F)
    if k >= _QNAN:
        return _nan_result(F, k)
    if k != _FINITE or e >= 0:
        return x & F.mask, 0                    # zero, infinity or already integral
    n, _ = _round_int(m, -e, s, rm)
    r, _ = _round_pack(s, n, 0, F, rm)          # exact: n <= 2**p (zero keeps the sign)
    return r, 0


def to_int_exact(x: int, fmt: int, signed: bool) -> int:
    """The 64-bit pattern of an integral, in-range value (two's complement if negative).
    The one function without flags, so it returns the bare pattern: rounding, range and
    NaN checks belong to the semantics (fcvt), which select around other inputs. Those
    still give a defined pattern, never an exception: the value truncated toward zero
    modulo 2**64, or 0 for NaN and infinities."""
    k, s, m, e = _decode(x, _FMTS[fmt])
    if k != _FINITE:
        return 0
    n = m << e if e >= 0 else m >> -e
    return (-n if s else n) & MASK64


def compare(pred: str, x: int, y: int, fmt: int, signaling: bool) -> tuple[bool, int]:
    """Ordered comparison (pred in eq lt le); -0 == +0; any NaN makes it false. A quiet
    comparison (feq) raises NV only for a signalling NaN, a signalling one (flt, fle) for
    any NaN."""
    F = _FMTS[fmt]
    mx, my = x & (F.sign - 1), y & (F.sign - 1)
    if mx > F.exp_mask or my > F.exp_mask:
        snan = (mx > F.exp_mask and not x & F.quiet) or (my > F.exp_mask and not y & F.quiet)
        return False, (FLAG_NV if signaling or snan else 0)
    kx = -mx if x & F.sign else mx
    ky = -my if y & F.sign else my
    if pred == "eq":
        return kx == ky, 0
    if pred == "lt":
        return kx < ky, 0
    if pred == "le":
        return kx <= ky, 0
    raise ValueError(f"unknown comparison {pred!r}")
