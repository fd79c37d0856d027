"""An independent IEEE 754 / RISC-V F and D reference for the directed tests.

Written from the ISA manual's rules with exact rational arithmetic (``fractions``), sharing
no code with ``dbtlab.ir.softfloat``: every result is the exact value rounded once, in the
given rounding mode, to the destination format, with tininess detected after rounding
(RISC-V), the flags the manual prescribes (NV DZ OF UF NX; UF only when tiny and inexact)
and the canonical NaN for every NaN result. Only what the directed tests need.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction as Q

NX, UF, OF, DZ, NV = 1, 2, 4, 8, 16
RNE, RTZ, RDN, RUP, RMM = 0, 1, 2, 3, 4
M64 = (1 << 64) - 1

# format: (exponent bits, fraction bits)
_FMT = {32: (8, 23), 64: (11, 52)}
CNAN = {32: 0x7FC00000, 64: 0x7FF8000000000000}
SIGN = {32: 1 << 31, 64: 1 << 63}
INF = {32: 0x7F800000, 64: 0x7FF0000000000000}
BOX = 0xFFFFFFFF00000000


# -- bit patterns ------------------------------------------------------------------------

def f32(v: float) -> int:
    """binary32 pattern of a Python float (must be exactly representable or it rounds)."""
    return struct.unpack("<I", struct.pack("<f", v))[0]


def f64(v: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", v))[0]


def bits(v: float, fmt: int) -> int:
    return f32(v) if fmt == 32 else f64(v)


def box(b32: int) -> int:
    """A single NaN-boxed in a 64-bit f register."""
    return BOX | (b32 & 0xFFFFFFFF)


def exact(q: Q | int, fmt: int) -> int:
    """Pattern of an exactly representable rational (asserts exactness)."""
    r, fl = round_q(Q(q) < 0, abs(Q(q)), fmt, RNE)
    assert fl == 0, f"{q} is not exact in binary{fmt}"
    return r


def _params(fmt: int):
    e, m = _FMT[fmt]
    bias = (1 << (e - 1)) - 1
    return e, m, bias, 1 - bias, bias     # ebits, mbits, bias, emin, emax


def classify(b: int, fmt: int) -> tuple[str, bool, Q | None]:
    """('zero'|'sub'|'norm'|'inf'|'snan'|'qnan', negative, exact value or None)."""
    e, m, bias, emin, _ = _params(fmt)
    neg = bool(b >> (fmt - 1) & 1)
    ef = (b >> m) & ((1 << e) - 1)
    frac = b & ((1 << m) - 1)
    if ef == (1 << e) - 1:
        if frac == 0:
            return "inf", neg, None
        return ("qnan" if frac >> (m - 1) else "snan"), neg, None
    if ef == 0:
        if frac == 0:
            return "zero", neg, Q(0)
        v = Q(frac) * Q(2) ** (emin - m)
        return "sub", neg, -v if neg else v
    v = Q(frac | (1 << m)) * Q(2) ** (ef - bias - m)
    return "norm", neg, -v if neg else v


def is_nan(b: int, fmt: int) -> bool:
    return classify(b, fmt)[0] in ("snan", "qnan")


def is_snan(b: int, fmt: int) -> bool:
    return classify(b, fmt)[0] == "snan"


# -- rounding ----------------------------------------------------------------------------

def _floor_log2(a: Q) -> int:
    e = a.numerator.bit_length() - a.denominator.bit_length()
    while Q(2) ** e > a:
        e -= 1
    while Q(2) ** (e + 1) <= a:
        e += 1
    return e


def round_int(a: Q, neg: bool, rm: int) -> int:
    """Round the magnitude ``a`` >= 0 of a value with sign ``neg`` to an integer magnitude."""
    fl = a.numerator // a.denominator
    fr = a - fl
    if fr == 0:
        return fl
    half = Q(1, 2)
    if rm == RNE:
        return fl + 1 if fr > half or (fr == half and fl & 1) else fl
    if rm == RMM:
        return fl + 1 if fr >= half else fl
    if rm == RTZ:
        return fl
    if rm == RDN:
        return fl + 1 if neg else fl
    if rm == RUP:
        return fl if neg else fl + 1
    raise ValueError(rm)


def _pack(neg: bool, ef: int, frac: int, fmt: int) -> int:
    _, m, _, _, _ = _params(fmt)
    return (int(neg) << (fmt - 1)) | (ef << m) | frac


def max_finite(neg: bool, fmt: int) -> int:
    e, m, _, _, _ = _params(fmt)
    return _pack(neg, (1 << e) - 2, (1 << m) - 1, fmt)


def inf(neg: bool, fmt: int) -> int:
    return INF[fmt] | (SIGN[fmt] if neg else 0)


def zero(neg: bool, fmt: int) -> int:
    return SIGN[fmt] if neg else 0


def round_q(neg: bool, a: Q, fmt: int, rm: int) -> tuple[int, int]:
    """Round the exact magnitude ``a`` >= 0 (sign ``neg``) to ``fmt``: (bits, flags)."""
    if a == 0:
        return zero(neg, fmt), 0
    e, m, bias, emin, emax = _params(fmt)
    ea = _floor_log2(a)
    # tininess after rounding: round to the precision with an unbounded exponent range
    n = round_int(a / Q(2) ** (ea - m), neg, rm)
    tiny = Q(n) * Q(2) ** (ea - m) < Q(2) ** emin
    eq = max(ea, emin)
    n = round_int(a / Q(2) ** (eq - m), neg, rm)
    inexact = Q(n) * Q(2) ** (eq - m) != a
    if n == 1 << (m + 1):          # carried into the next binade
        n >>= 1
        eq += 1
    flags = NX if inexact else 0
    if eq > emax:
        flags |= OF | NX
        to_inf = rm in (RNE, RMM) or (rm == RUP and not neg) or (rm == RDN and neg)
        return (inf(neg, fmt) if to_inf else max_finite(neg, fmt)), flags
    if tiny and inexact:
        flags |= UF
    if n < 1 << m:                 # subnormal (or rounded to zero)
        return _pack(neg, 0, n, fmt), flags
    return _pack(neg, eq + bias, n - (1 << m), fmt), flags


def round_value(v: Q, fmt: int, rm: int, zero_neg: bool = False) -> tuple[int, int]:
    """Round a signed exact value; an exact zero gets the sign ``zero_neg``."""
    if v == 0:
        return zero(zero_neg, fmt), 0
    return round_q(v < 0, abs(v), fmt, rm)


# -- arithmetic --------------------------------------------------------------------------

def _nan_result(fmt: int, *ops: int, invalid: bool = False) -> tuple[int, int]:
    nv = invalid or any(is_snan(o, fmt) for o in ops)
    return CNAN[fmt], NV if nv else 0


def _add_exact(xn: bool, x: Q, yn: bool, y: Q, rm: int, fmt: int) -> tuple[int, int]:
    """x + y of finite values (x, y carry their signs; xn/yn are the signs of zeros)."""
    s = x + y
    if s == 0:
        if x == 0 and y == 0 and xn == yn:
            return zero(xn, fmt), 0
        return zero(rm == RDN, fmt), 0
    return round_q(s < 0, abs(s), fmt, rm)


def add(fmt: int, a: int, b: int, rm: int, negate_b: bool = False) -> tuple[int, int]:
    ka, na, va = classify(a, fmt)
    kb, nb, vb = classify(b, fmt)
    if negate_b:
        nb = not nb
        vb = -vb if vb is not None else None
    if "snan" in (ka, kb) or "qnan" in (ka, kb):
        return _nan_result(fmt, a, b)
    if ka == "inf" and kb == "inf":
        return (inf(na, fmt), 0) if na == nb else _nan_result(fmt, invalid=True)
    if ka == "inf":
        return inf(na, fmt), 0
    if kb == "inf":
        return inf(nb, fmt), 0
    return _add_exact(na, va, nb, vb, rm, fmt)


def sub(fmt, a, b, rm):
    return add(fmt, a, b, rm, negate_b=True)


def mul(fmt: int, a: int, b: int, rm: int) -> tuple[int, int]:
    ka, na, va = classify(a, fmt)
    kb, nb, vb = classify(b, fmt)
    if "snan" in (ka, kb) or "qnan" in (ka, kb):
        return _nan_result(fmt, a, b)
    neg = na != nb
    if "inf" in (ka, kb):
        if "zero" in (ka, kb):
            return _nan_result(fmt, invalid=True)
        return inf(neg, fmt), 0
    p = va * vb
    if p == 0:
        return zero(neg, fmt), 0
    return round_q(neg, abs(p), fmt, rm)


def div(fmt: int, a: int, b: int, rm: int) -> tuple[int, int]:
    ka, na, va = classify(a, fmt)
    kb, nb, vb = classify(b, fmt)
    if "snan" in (ka, kb) or "qnan" in (ka, kb):
        return _nan_result(fmt, a, b)
    neg = na != nb
    if ka == "inf":
        return (_nan_result(fmt, invalid=True) if kb == "inf" else (inf(neg, fmt), 0))
    if kb == "inf":
        return zero(neg, fmt), 0
    if kb == "zero":
        return (_nan_result(fmt, invalid=True) if ka == "zero" else (inf(neg, fmt), DZ))
    if ka == "zero":
        return zero(neg, fmt), 0
    return round_q(neg, abs(va / vb), fmt, rm)


def sqrt(fmt: int, a: int, rm: int) -> tuple[int, int]:
    ka, na, va = classify(a, fmt)
    if ka in ("snan", "qnan"):
        return _nan_result(fmt, a)
    if ka == "zero":
        return a, 0                       # sqrt(-0) = -0
    if na:
        return _nan_result(fmt, invalid=True)
    if ka == "inf":
        return a, 0
    _, m, _, _, _ = _params(fmt)
    k = max(0, m + 8 - _floor_log2(va) // 2)   # at least m+8 fraction bits in r
    big = va * Q(4) ** k
    r = math.isqrt(big.numerator // big.denominator)
    if Q(r * r) == big:
        val = Q(r) / Q(2) ** k
    else:   # the root lies strictly inside (r, r+1): r+1/2 rounds the same way
        val = (Q(r) + Q(1, 2)) / Q(2) ** k
    return round_q(False, val, fmt, rm)


def fma(fmt: int, a: int, b: int, c: int, rm: int, neg_prod: bool = False,
        neg_add: bool = False) -> tuple[int, int]:
    """(±a*b) ± c rounded once. inf*0 raises NV even when c is a quiet NaN."""
    ka, na, va = classify(a, fmt)
    kb, nb, vb = classify(b, fmt)
    kc, nc, vc = classify(c, fmt)
    if neg_add:
        nc = not nc
        vc = -vc if vc is not None else None
    inf_zero = {ka, kb} == {"inf", "zero"}
    if any(k in ("snan", "qnan") for k in (ka, kb, kc)):
        return _nan_result(fmt, a, b, c, invalid=inf_zero)
    if inf_zero:
        return _nan_result(fmt, invalid=True)
    pn = (na != nb) != neg_prod
    if "inf" in (ka, kb):
        if kc == "inf" and nc != pn:
            return _nan_result(fmt, invalid=True)
        return inf(pn, fmt), 0
    if kc == "inf":
        return inf(nc, fmt), 0
    p = va * vb
    if neg_prod:
        p = -p
    return _add_exact(pn, p, nc, vc, rm, fmt)


# -- conversions, comparisons, classification --------------------------------------------

def cvt_ff(b: int, src: int, dst: int, rm: int) -> tuple[int, int]:
    k, n, v = classify(b, src)
    if k in ("snan", "qnan"):
        return _nan_result(dst, invalid=(k == "snan"))
    if k == "inf":
        return inf(n, dst), 0
    if k == "zero":
        return zero(n, dst), 0
    return round_q(n, abs(v), dst, rm)


def from_int(n: int, fmt: int, rm: int) -> tuple[int, int]:
    return round_value(Q(n), fmt, rm)


def to_int(b: int, fmt: int, width: int, signed: bool, rm: int) -> tuple[int, int]:
    """fcvt.{w,wu,l,lu}: (64-bit rd value, flags). Out of range and NaN saturate with NV
    (NaN and +inf to the maximum); W results are sign-extended to 64 bits."""
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    k, neg, v = classify(b, fmt)
    if k in ("snan", "qnan"):
        r, fl = hi, NV
    elif k == "inf":
        r, fl = (lo if neg else hi), NV
    else:
        mag = round_int(abs(v), neg, rm)
        r = -mag if neg else mag
        if r < lo:
            r, fl = lo, NV
        elif r > hi:
            r, fl = hi, NV
        else:
            fl = NX if Q(r) != v else 0
    r &= (1 << width) - 1
    if width == 32 and r >> 31:
        r |= 0xFFFFFFFF00000000
    return r & M64, fl


def _ordered(b: int, fmt: int) -> Q:
    """The value of a non-NaN pattern with the infinities beyond every finite value."""
    k, neg, v = classify(b, fmt)
    if k == "inf":
        return Q(-1 if neg else 1) * Q(2) ** 5000
    return v


def compare(pred: str, a: int, b: int, fmt: int) -> tuple[int, int]:
    """feq (quiet: NV only for sNaN), flt/fle (NV for any NaN): (0/1, flags)."""
    if is_nan(a, fmt) or is_nan(b, fmt):
        if pred == "eq":
            return 0, NV if (is_snan(a, fmt) or is_snan(b, fmt)) else 0
        return 0, NV
    va, vb = _ordered(a, fmt), _ordered(b, fmt)
    return int({"eq": va == vb, "lt": va < vb, "le": va <= vb}[pred]), 0


def minmax(is_max: bool, a: int, b: int, fmt: int) -> tuple[int, int]:
    """fmin/fmax (ISA manual >= 2.2): one NaN -> the other operand, two -> canonical NaN,
    NV for any sNaN, -0 < +0."""
    fl = NV if (is_snan(a, fmt) or is_snan(b, fmt)) else 0
    an, bn = is_nan(a, fmt), is_nan(b, fmt)
    if an and bn:
        return CNAN[fmt], fl
    if an:
        return b, fl
    if bn:
        return a, fl
    key_a = (_ordered(a, fmt), 0 if a >> (fmt - 1) else 1)      # -0 before +0
    key_b = (_ordered(b, fmt), 0 if b >> (fmt - 1) else 1)
    pick_a = key_a >= key_b if is_max else key_a <= key_b
    return (a if pick_a else b), fl


CLASS_BITS = {("inf", True): 0, ("norm", True): 1, ("sub", True): 2, ("zero", True): 3,
              ("zero", False): 4, ("sub", False): 5, ("norm", False): 6, ("inf", False): 7}


def fclass(b: int, fmt: int) -> int:
    k, neg, _ = classify(b, fmt)
    if k == "snan":
        return 1 << 8
    if k == "qnan":
        return 1 << 9
    return 1 << CLASS_BITS[(k, neg)]


def unbox(r: int) -> int:
    """How a 64-bit f register reads as a single: not NaN-boxed -> canonical NaN."""
    return r & 0xFFFFFFFF if r >> 32 == 0xFFFFFFFF else CNAN[32]
