"""Directed tests of the F and D extensions on every accelerator: each arithmetic operation
in every rounding mode (static 0-4 and dynamic through frm 0-4) with operands that round
differently per mode, every exception flag (UF only when tiny and inexact), canonical NaNs,
NaN-boxing, signalling vs quiet NaNs in comparisons, fmin/fmax per the current ISA manual,
fclass, the conversions with their saturation rules, and the illegal rounding modes.

Expected values come from ``ieee_ref`` (exact rational arithmetic written from the ISA
manual, sharing nothing with dbtlab.ir.softfloat) or are written down by hand.
"""

from __future__ import annotations

from fractions import Fraction as Q

import pytest

from dbtlab.translator.decode import decode, encode
from tests.ir import ieee_ref as R
from tests.ir.directed_kit import (FCSR, FFLAGS, M64, Asm, Case, check_cases,
                                   check_precise_stops, covers, ins, run)
from tests.ir.ieee_ref import DZ, NV, NX, OF, UF, box

FMTS = (32, 64)
SFX = {32: "s", 64: "d"}
MODES = (R.RNE, R.RTZ, R.RDN, R.RUP, R.RMM)
DYN = 7
#: (static rm field, frm) pairs: every static mode and every valid mode through frm
RM_VARIANTS = [(rm, None) for rm in MODES] + [(DYN, frm) for frm in MODES]


def reg(b: int, fmt: int) -> int:
    """The f-register value holding format-``fmt`` bits (singles NaN-boxed)."""
    return box(b) if fmt == 32 else b


class V:
    """Named operand patterns of one format."""

    def __init__(self, fmt: int) -> None:
        e, m = R._FMT[fmt]
        self.fmt = fmt
        self.m = m
        self.u = Q(1, 2 ** m)                    # ulp of 1.0
        self.emin = 2 - (1 << (e - 1))
        self.minn = R.exact(Q(2) ** self.emin, fmt)
        self.mins = R.exact(Q(2) ** (self.emin - m), fmt)
        self.maxf = R.max_finite(False, fmt)
        self.inf, self.ninf = R.inf(False, fmt), R.inf(True, fmt)
        self.zero, self.nzero = 0, R.SIGN[fmt]
        self.qnan = R.CNAN[fmt]
        self.qnan_p = R.CNAN[fmt] | 0x1234                 # quiet NaN with a payload
        self.snan = R.INF[fmt] | 1
        self.snan_n = R.INF[fmt] | R.SIGN[fmt] | 0x5       # negative signalling NaN
        self.tenth = R.round_q(False, Q(1, 10), fmt, R.RNE)[0]
        self.fifth = R.round_q(False, Q(1, 5), fmt, R.RNE)[0]

    def __call__(self, q) -> int:
        """Pattern of an exactly representable value."""
        return R.exact(Q(q), self.fmt)

    def neg(self, b: int) -> int:
        return b ^ R.SIGN[self.fmt]


def arith_operands(fmt: int) -> dict[str, list[tuple[int, ...]]]:
    v = V(fmt)
    u, h = v.u, v.u / 2
    one = v(1)
    big_sub = v(Q(2) ** v.emin - Q(2) ** (v.emin - v.m))           # largest subnormal
    minn_1u = v((1 + u) * Q(2) ** v.emin)
    two_m1 = v(Q(2) ** (v.m + 1))
    fused = (v(1 + u), v(1 - u))
    return {
        "add": [(one, v(h)), (v(1 + u), v(h)), (one, v(3 * u / 4)), (v(-1), v(-h)),
                (one, v(-u / 4)), (v.tenth, v.fifth), (v.maxf, v.maxf), (v.maxf, v.neg(v.maxf)),
                (v.mins, v.neg(v.mins)), (v.nzero, v.nzero), (v.zero, v.nzero),
                (v.inf, v.ninf), (one, v.snan), (v.qnan_p, one), (v.minn, v.neg(v.mins)),
                (v(-1 - u), v(-3 * h / 2)), (v.inf, one)],
        "sub": [(one, v(-h)), (one, v(h)), (one, v(3 * u / 8)), (v(-1), v(h)),
                (v.tenth, v.fifth), (v.inf, v.inf), (one, one), (v.neg(v.maxf), v.maxf),
                (v.nzero, v.zero), (v.qnan, v.snan_n), (v.minn, big_sub)],
        "mul": [(v(1 + u), v(1 + u)), (v(1 + 3 * u), v(1.5)), (v(1 + u), v(1.5)),
                (v(-1 - 3 * u), v(1.5)), (v.tenth, v(3)), (v.maxf, v(2)),
                (v.neg(v.maxf), v(1 + u)), (v.minn, v(0.5)), (minn_1u, v(0.5)),
                (v.mins, v(0.5)), (v.mins, v(-0.5)), (v.zero, v.inf), (v.ninf, v(-2)),
                (v.nzero, v(3)), (v.snan, v.qnan), (big_sub, v(1 + u))],
        "div": [(one, v(3)), (v(2), v(3)), (v(-1), v(3)), (v(-2), v(3)), (one, v(10)),
                (one, v.zero), (v(-1), v.zero), (v.zero, v.zero), (v.inf, v.ninf),
                (v.minn, two_m1), (v.neg(v.minn), two_m1), (v.minn, v(3)),
                (v.maxf, v(0.5)), (one, v.inf), (v.snan, one), (v.nzero, v(5)),
                (v.inf, v.zero)],
        "sqrt": [(v(2),), (v(3),), (v(0.5),), (v(4),), (v.nzero,), (v(-1),), (v.mins,),
                 (v(2 * Q(2) ** (v.emin - v.m)),), (v.maxf,), (v.inf,), (v.ninf,),
                 (v.qnan_p,), (v.snan,), (v(10),), (v(1 + u),), (big_sub,)],
        "fma": [fused + (v(-1),), fused + (one,), (v(2), v(3), one), (one, one, v(h)),
                (one, one, v(-h)), (v(1 + u), v(1 + u), v(-1 - 2 * u)),
                (v.tenth, v(10), v(-1)), (v.inf, v.zero, v.qnan), (v.zero, v.inf, one),
                (v.inf, one, v.ninf), (v.zero, one, v.nzero), (v.maxf, v(2), v.neg(v.maxf)),
                (v.minn, v(0.5), v.neg(v.mins)), (v.snan, one, one), (v(3), v(5), v.qnan_p),
                (v(1 + 3 * u), v(1.5), v.zero), (v(-1), v(1 + u), v(-h))],
    }


ARITH = {
    "fadd": ("add", lambda f, a, b, rm: R.add(f, a, b, rm)),
    "fsub": ("sub", lambda f, a, b, rm: R.sub(f, a, b, rm)),
    "fmul": ("mul", lambda f, a, b, rm: R.mul(f, a, b, rm)),
    "fdiv": ("div", lambda f, a, b, rm: R.div(f, a, b, rm)),
    "fsqrt": ("sqrt", lambda f, a, rm: R.sqrt(f, a, rm)),
    "fmadd": ("fma", lambda f, a, b, c, rm: R.fma(f, a, b, c, rm)),
    "fmsub": ("fma", lambda f, a, b, c, rm: R.fma(f, a, b, c, rm, neg_add=True)),
    "fnmsub": ("fma", lambda f, a, b, c, rm: R.fma(f, a, b, c, rm, neg_prod=True)),
    "fnmadd": ("fma", lambda f, a, b, c, rm: R.fma(f, a, b, c, rm, neg_prod=True,
                                                   neg_add=True)),
}


def _operands_regs(n: int) -> dict:
    return dict(list({"rs1": 1, "rs2": 2, "rs3": 3}.items())[:n])


def arith_cases(fmt: int) -> tuple[list[Case], dict]:
    """Every operation on its operands in every static mode and every mode through frm;
    operands whose result is the same in all modes (NaNs, infinities, exact results) run
    in two variants only (static RNE, dynamic RDN)."""
    cases = []
    per_mode: dict[tuple[str, tuple], dict[int, tuple[int, int]]] = {}
    opnds = arith_operands(fmt)
    for op, (kind, ref) in ARITH.items():
        name = f"{op}.{SFX[fmt]}"
        for args in opnds[kind]:
            res = {mode: ref(fmt, *args, mode) for mode in MODES}
            per_mode[(op, args)] = res
            variants = RM_VARIANTS if len(set(res.values())) > 1 else [(0, None), (DYN, 2)]
            for rm, frm in variants:
                want, fl = res[frm if rm == DYN else rm]
                cases.append(Case(ins(name, rd=4, rm=rm, **_operands_regs(len(args))),
                                  {"f4": reg(want, fmt), "flags": fl},
                                  fin={i + 1: reg(a, fmt) for i, a in enumerate(args)},
                                  frm=frm, label=f"{name} rm={rm} frm={frm} "
                                  + " ".join(f"{a:#x}" for a in args)))
    return cases, per_mode


@covers(*[f"{op}.{s}" for op in ARITH for s in "sd"])
def test_arithmetic_in_every_rounding_mode(accel):
    for fmt in FMTS:
        cases, per_mode = arith_cases(fmt)
        # the operands discriminate: every pair of modes gives different results for some
        # operands of every operation (sqrt can neither tie nor be negative and inexact,
        # so RNE/RMM and RTZ/RDN coincide for it)
        for op in ARITH:
            for m1 in MODES:
                for m2 in MODES:
                    if m1 >= m2 or (op == "fsqrt" and {m1, m2} in ({R.RNE, R.RMM},
                                                                   {R.RTZ, R.RDN})):
                        continue
                    assert any(r[m1][0] != r[m2][0]
                               for (o, _), r in per_mode.items() if o == op), \
                        f"{op}: no operand tells mode {m1} from {m2}"
        # and every exception flag is expected somewhere
        seen = 0
        for c in cases:
            seen |= c.expect["flags"]
        assert seen == NV | DZ | OF | UF | NX
        check_cases(accel, cases)


@covers("fmul.s", "fmul.d", "fmadd.s", "fmadd.d", "fdiv.s", "fdiv.d")
def test_underflow_only_when_tiny_and_inexact(accel):
    """UF needs tininess, detected after rounding as RISC-V specifies, AND inexactness.
    The flags are written by hand; the reference must agree with them too."""
    check_cases(accel, [c for fmt in FMTS for c in _underflow_cases(fmt)])


def _underflow_cases(fmt: int) -> list[Case]:
    v = V(fmt)
    s, emin, m = SFX[fmt], v.emin, v.m
    k = emin - m - 2                       # x*y = -2**k, both factors normal
    x, y = v(-Q(2) ** (k // 2)), v(Q(2) ** (k - k // 2))
    largest_sub = v(Q(2) ** emin - Q(2) ** (emin - m))
    rows = [
        # exact subnormal result: tiny but exact -> no flag at all
        ("fmul", 0, (v.minn, v(0.5)), 0, v(Q(2) ** (emin - 1))),
        # inexact subnormal result -> UF | NX
        ("fdiv", 0, (v.minn, v(3)), UF | NX, None),
        ("fmul", 0, (v.mins, v(0.5)), UF | NX, 0),          # a tie to even: +0
        ("fmul", 4, (v.mins, v(0.5)), UF | NX, v.mins),     # RMM: away from zero
        # exact 2**emin * (1 - 2**-(m+2)) is tiny before rounding, but rounded to m+1 bits
        # with an unbounded exponent it is 2**emin: not tiny after rounding -> NX only
        ("fmadd", 0, (x, y, v.minn), NX, v.minn),
        # rounding down instead gives a tiny result -> UF | NX, the largest subnormal
        ("fmadd", 1, (x, y, v.minn), UF | NX, largest_sub),
        ("fmadd", 2, (x, y, v.minn), UF | NX, largest_sub),
        ("fmadd", 3, (x, y, v.minn), NX, v.minn),
    ]
    cases = []
    for op, rm, args, flags, want in rows:
        ref = ARITH[op][1](fmt, *args, rm)
        assert ref[1] == flags and (want is None or ref[0] == want), (op, rm, ref)
        cases.append(Case(ins(f"{op}.{s}", rd=4, rm=rm, **_operands_regs(len(args))),
                          {"f4": reg(ref[0], fmt), "flags": flags},
                          fin={i + 1: reg(a, fmt) for i, a in enumerate(args)},
                          label=f"{op}.{s} rm={rm}"))
    return cases


@covers("fmadd.d", "fmsub.d", "fnmsub.d", "fnmadd.d", "fmadd.s", "fmsub.s", "fnmsub.s",
        "fnmadd.s", "fmul.d", "fadd.d")
def test_fused_multiply_add_signs_and_single_rounding(accel):
    """Hand-written: fmadd = a*b+c, fmsub = a*b-c, fnmsub = -(a*b)+c, fnmadd = -(a*b)-c;
    (1+2**-52)*(1-2**-52)-1 is exactly -2**-104 fused, but 0 (inexact) as fmul then fadd."""
    d, f = R.f64, lambda v: box(R.f32(v))
    two, three, one = d(2.0), d(3.0), d(1.0)
    cases = [Case(ins(op + ".d", rd=4, rs1=1, rs2=2, rs3=3, rm=0), {"f4": d(want), "flags": 0},
                  fin={1: two, 2: three, 3: one}, label=op)
             for op, want in (("fmadd", 7.0), ("fmsub", 5.0), ("fnmsub", -5.0),
                              ("fnmadd", -7.0))]
    cases += [Case(ins(op + ".s", rd=4, rs1=1, rs2=2, rs3=3, rm=0), {"f4": f(want), "flags": 0},
                   fin={1: f(2.0), 2: f(-3.0), 3: f(0.5)}, label=op + ".s")
              for op, want in (("fmadd", -5.5), ("fmsub", -6.5), ("fnmsub", 6.5),
                               ("fnmadd", 5.5))]
    a, b = d(1 + 2.0 ** -52), d(1 - 2.0 ** -52)
    cases.append(Case(ins("fmadd.d", rd=4, rs1=1, rs2=2, rs3=3, rm=0),
                      {"f4": d(-2.0 ** -104), "flags": 0}, fin={1: a, 2: b, 3: d(-1.0)},
                      label="fused"))
    cases.append(Case([ins("fmul.d", rd=4, rs1=1, rs2=2, rm=0),
                       ins("fadd.d", rd=4, rs1=4, rs2=3, rm=0)],
                      {"f4": 0, "flags": NX}, fin={1: a, 2: b, 3: d(-1.0)},
                      label="separately rounded"))
    a, b = f(1 + 2.0 ** -23), f(1 - 2.0 ** -23)
    cases.append(Case(ins("fmadd.s", rd=4, rs1=1, rs2=2, rs3=3, rm=0),
                      {"f4": f(-2.0 ** -46), "flags": 0}, fin={1: a, 2: b, 3: f(-1.0)},
                      label="fused single"))
    # inf * 0 + qNaN: invalid even though the addend is a quiet NaN
    cases.append(Case(ins("fmadd.d", rd=4, rs1=1, rs2=2, rs3=3, rm=0),
                      {"f4": R.CNAN[64], "flags": NV},
                      fin={1: R.INF[64], 2: 0, 3: R.CNAN[64]}, label="inf*0+qNaN"))
    cases.append(Case(ins("fnmadd.s", rd=4, rs1=1, rs2=2, rs3=3, rm=0),
                      {"f4": box(R.CNAN[32]), "flags": NV},
                      fin={1: box(R.SIGN[32]), 2: box(R.INF[32]), 3: box(0x7FC01234)},
                      label="-0*inf+qNaN single"))
    check_cases(accel, cases)


# -- flags ---------------------------------------------------------------------------------

@covers("fdiv.d", "fadd.s", "fsqrt.d", "fmul.d", "fcvt.s.d")
def test_fflags_accrue_and_stick(accel):
    """Flags OR into fflags and stay until software clears them; an operation raising
    nothing leaves them alone."""
    a = Asm()
    a("csrrs", rd=10, rs1=0, csr=FFLAGS)           # NV from the initial state
    a("fdiv.d", rd=4, rs1=1, rs2=0, rm=0)          # 1/0: DZ
    a("csrrs", rd=11, rs1=0, csr=FFLAGS)
    a("fadd.s", rd=5, rs1=2, rs2=3, rm=0)          # inexact: NX
    a("csrrs", rd=12, rs1=0, csr=FFLAGS)
    a("fmul.d", rd=6, rs1=1, rs2=1, rm=0)          # exact: nothing
    a("fsqrt.d", rd=7, rs1=1, rm=0)                # exact: nothing
    a("csrrs", rd=13, rs1=0, csr=FFLAGS)
    a("fcvt.s.d", rd=8, rs1=9, rm=0)               # overflow: OF | NX
    a("csrrs", rd=14, rs1=0, csr=FCSR)
    a.ecall()
    f = {0: 0, 1: R.f64(1.0), 2: box(R.f32(1.0)), 3: box(R.f32(2.0 ** -30)),
         9: R.f64(1e300)}
    r = run(accel, a, f=f, fflags=NV, frm=2)
    assert r.why == "ecall"
    assert (r.x[10], r.x[11], r.x[12], r.x[13]) == (NV, NV | DZ, NV | DZ | NX, NV | DZ | NX)
    assert r.x[14] == (2 << 5) | NV | DZ | NX | OF
    assert r.fflags == NV | DZ | NX | OF and r.frm == 2
    assert r.f[4] == R.inf(False, 64) and r.f[5] == box(R.f32(1.0))
    assert r.f[8] == box(R.INF[32])


# -- NaN-boxing ----------------------------------------------------------------------------

NOT_BOXED = 0x000000003F800000         # 1.0f with the upper half not all ones
HALF_BOXED = 0xFFFFFFFE3F800000
SNAN_BOXED = box(0x7F800001)
CN32 = box(R.CNAN[32])


@covers("fadd.s", "fmadd.s", "fsgnj.s", "fsgnjn.s", "fcvt.d.s", "fmv.x.w", "fmv.w.x",
        "feq.s", "flt.s", "fle.s", "fclass.s", "fcvt.w.s", "fmin.s", "fmax.s", "fsqrt.s")
def test_nan_boxing(accel):
    """A single not properly NaN-boxed in an f register reads as the canonical NaN (a
    quiet NaN: no NV) for arithmetic, sign injection, comparisons, fclass and
    conversions; fmv.x.w moves the raw low 32 bits; fmv.w.x boxes. (flw boxing and fsw
    storing raw bits: test_directed_mem.)"""
    one = box(R.f32(1.0))
    t = [
        (ins("fadd.s", rd=4, rs1=1, rs2=2, rm=0), {1: NOT_BOXED, 2: one}, "f4", CN32, 0),
        (ins("fadd.s", rd=4, rs1=1, rs2=2, rm=0), {1: HALF_BOXED, 2: one}, "f4", CN32, 0),
        (ins("fsqrt.s", rd=4, rs1=1, rm=0), {1: NOT_BOXED}, "f4", CN32, 0),
        (ins("fmadd.s", rd=4, rs1=1, rs2=2, rs3=3, rm=0), {1: one, 2: one, 3: NOT_BOXED},
         "f4", CN32, 0),
        (ins("fsgnj.s", rd=4, rs1=1, rs2=2), {1: NOT_BOXED, 2: one}, "f4", CN32, 0),
        (ins("fsgnjn.s", rd=4, rs1=1, rs2=2), {1: NOT_BOXED, 2: one}, "f4",
         box(0xFFC00000), 0),
        (ins("fsgnj.s", rd=4, rs1=1, rs2=2), {1: one, 2: 0x00000000BF800000}, "f4", one, 0),
        (ins("fcvt.d.s", rd=4, rs1=1, rm=0), {1: NOT_BOXED}, "f4", R.CNAN[64], 0),
        (ins("fmv.x.w", rd=5, rs1=1), {1: NOT_BOXED}, "x5", 0x3F800000, 0),
        (ins("fmv.x.w", rd=5, rs1=1), {1: 0x12345678BF800000}, "x5", 0xFFFFFFFFBF800000, 0),
        (ins("feq.s", rd=5, rs1=1, rs2=1), {1: NOT_BOXED}, "x5", 0, 0),
        (ins("flt.s", rd=5, rs1=1, rs2=2), {1: NOT_BOXED, 2: one}, "x5", 0, NV),
        (ins("fle.s", rd=5, rs1=2, rs2=1), {1: HALF_BOXED, 2: one}, "x5", 0, NV),
        (ins("fclass.s", rd=5, rs1=1), {1: NOT_BOXED}, "x5", 1 << 9, 0),
        (ins("fclass.s", rd=5, rs1=1), {1: 0x7F800001}, "x5", 1 << 9, 0),   # unboxed sNaN
        (ins("fcvt.w.s", rd=5, rs1=1, rm=1), {1: NOT_BOXED}, "x5", 0x7FFFFFFF, NV),
        (ins("fmin.s", rd=4, rs1=1, rs2=2), {1: NOT_BOXED, 2: one}, "f4", one, 0),
        (ins("fmax.s", rd=4, rs1=1, rs2=2), {1: NOT_BOXED, 2: HALF_BOXED}, "f4", CN32, 0),
        # the boxed single whose bits are a signalling NaN is a real sNaN
        (ins("fadd.s", rd=4, rs1=1, rs2=2, rm=0), {1: SNAN_BOXED, 2: one}, "f4", CN32, NV),
    ]
    cases = [Case(i, {out: want, "flags": fl}, fin=fin, label=f"{i[0]} {fin}")
             for i, fin, out, want, fl in t]
    # fmv.w.x boxes the low 32 bits of x whatever the upper ones, and keeps NaN payloads
    for xv in (0xDEADBEEF3F800000, 0x00000000FF800001, 0xFFFFFFFF7FC00001):
        cases.append(Case(ins("fmv.w.x", rd=4, rs1=5), {"f4": box(xv), "flags": 0},
                          xin={5: xv}, label=f"fmv.w.x {xv:#x}"))
    check_cases(accel, cases)


# -- sign injection, moves -----------------------------------------------------------------

SGNJ = {"fsgnj": lambda a, b, s: (a & ~s) | (b & s),
        "fsgnjn": lambda a, b, s: (a & ~s) | (~b & s),
        "fsgnjx": lambda a, b, s: a ^ (b & s)}


@covers(*[f"{op}.{s}" for op in SGNJ for s in "sd"], "fmv.x.d", "fmv.d.x", "fmv.x.w",
        "fmv.w.x")
def test_sign_injection_and_moves(accel):
    """Sign injection is a bit operation: NaN payloads (even signalling) kept, no flags;
    fmv moves raw bits."""
    cases = []
    for fmt in FMTS:
        v = V(fmt)
        sgn = R.SIGN[fmt]
        xs = [v(1.5), v(-1.5), v.qnan_p, v.snan, v.snan_n, v.nzero, v.inf]
        ys = [v(2), v(-2), v.neg(v.qnan), v.zero]
        for op, fn in SGNJ.items():
            for a in xs:
                for b in ys:
                    cases.append(Case(ins(f"{op}.{SFX[fmt]}", rd=4, rs1=1, rs2=2),
                                      {"f4": reg(fn(a, b, sgn), fmt), "flags": 0},
                                      fin={1: reg(a, fmt), 2: reg(b, fmt)},
                                      label=f"{op}.{SFX[fmt]} {a:#x} {b:#x}"))
        # rs1 == rs2: fsgnj is fmv, fsgnjn fneg, fsgnjx fabs
        a = v(-3)
        for op, want in (("fsgnj", a), ("fsgnjn", v(3)), ("fsgnjx", v(3))):
            cases.append(Case(ins(f"{op}.{SFX[fmt]}", rd=4, rs1=1, rs2=1),
                              {"f4": reg(want, fmt)}, fin={1: reg(a, fmt)},
                              label=f"{op}.{SFX[fmt]} rs1 == rs2"))
    for b in (0x7FF0000000000001, 0x8000000000000000, 0x0123456789ABCDEF):
        cases.append(Case(ins("fmv.x.d", rd=5, rs1=1), {"x5": b, "flags": 0}, fin={1: b}))
        cases.append(Case(ins("fmv.d.x", rd=4, rs1=5), {"f4": b, "flags": 0}, xin={5: b}))
    cases.append(Case(ins("fmv.x.w", rd=5, rs1=1), {"x5": 0xFFFFFFFF80000001, "flags": 0},
                      fin={1: box(0x80000001)}))
    cases.append(Case(ins("fmv.x.w", rd=5, rs1=1), {"x5": 0x7F800001, "flags": 0},
                      fin={1: box(0x7F800001)}))
    cases.append(Case(ins("fmv.w.x", rd=4, rs1=5), {"f4": box(0x80000000)},
                      xin={5: 0x80000000}))
    check_cases(accel, cases)
    assert SGNJ["fsgnjn"](0x3F800000, 0x3F800000, 1 << 31) == 0xBF800000   # sanity


# -- comparisons, min/max, classification --------------------------------------------------

def _pairs(v: V) -> list[tuple[int, int]]:
    one, two = v(1), v(2)
    return [(one, two), (two, one), (one, one), (v.nzero, v.zero), (v.zero, v.nzero),
            (v.qnan, one), (one, v.qnan_p), (v.snan, one), (one, v.snan_n), (v.qnan, v.qnan),
            (v.snan, v.qnan), (v.snan, v.snan), (v.ninf, v.inf), (v.inf, v.inf),
            (v.mins, v.zero), (v(-1), v(-2)), (v.nzero, v.nzero), (v.neg(v.mins), v.nzero),
            (v.maxf, v.inf), (v.neg(v.qnan), v(-1))]


@covers(*[f"{op}.{s}" for op in ("feq", "flt", "fle") for s in "sd"])
def test_comparisons(accel):
    """feq is quiet (NV only for a signalling NaN), flt and fle signal on any NaN; every
    comparison with a NaN is false; -0 == +0."""
    cases = []
    for fmt in FMTS:
        for a, b in _pairs(V(fmt)):
            for op in ("eq", "lt", "le"):
                want, fl = R.compare(op, a, b, fmt)
                cases.append(Case(ins(f"f{op}.{SFX[fmt]}", rd=5, rs1=1, rs2=2),
                                  {"x5": want, "flags": fl},
                                  fin={1: reg(a, fmt), 2: reg(b, fmt)},
                                  label=f"f{op}.{SFX[fmt]} {a:#x} {b:#x}"))
    # hand-written: quiet NaN, signalling NaN
    assert R.compare("eq", R.CNAN[64], R.f64(1.0), 64) == (0, 0)
    assert R.compare("eq", R.INF[64] | 1, R.f64(1.0), 64) == (0, NV)
    assert R.compare("lt", R.CNAN[64], R.f64(1.0), 64) == (0, NV)
    assert R.compare("le", R.SIGN[64], 0, 64) == (1, 0)
    check_cases(accel, cases)


@covers("fmin.s", "fmax.s", "fmin.d", "fmax.d")
def test_min_max(accel):
    """ISA manual (F 2.2 on): with one NaN the result is the other operand (NV if it was
    signalling), with two NaNs the canonical NaN; -0 is less than +0."""
    cases = []
    for fmt in FMTS:
        v = V(fmt)
        for a, b in _pairs(v):
            for op in ("min", "max"):
                want, fl = R.minmax(op == "max", a, b, fmt)
                cases.append(Case(ins(f"f{op}.{SFX[fmt]}", rd=4, rs1=1, rs2=2),
                                  {"f4": reg(want, fmt), "flags": fl},
                                  fin={1: reg(a, fmt), 2: reg(b, fmt)},
                                  label=f"f{op}.{SFX[fmt]} {a:#x} {b:#x}"))
        # hand-written expectations for the rules that matter most
        one = v(1)
        assert R.minmax(False, v.snan, one, fmt) == (one, NV)
        assert R.minmax(True, one, v.qnan_p, fmt) == (one, 0)
        assert R.minmax(False, v.qnan_p, v.snan, fmt) == (v.qnan, NV)
        assert R.minmax(False, v.zero, v.nzero, fmt) == (v.nzero, 0)
        assert R.minmax(True, v.nzero, v.zero, fmt) == (v.zero, 0)
    check_cases(accel, cases)


@covers("fclass.s", "fclass.d")
def test_fclass_all_ten_classes(accel):
    cases = []
    for fmt in FMTS:
        v = V(fmt)
        classes = [(v.ninf, 0), (v(-1), 1), (v.neg(v.mins), 2), (v.nzero, 3), (v.zero, 4),
                   (v.mins, 5), (v(1), 6), (v.inf, 7), (v.snan, 8), (v.qnan, 9),
                   (v.neg(v.maxf), 1), (v.neg(v.minn - 1), 2),
                   (v.snan_n, 8), (v.neg(v.qnan_p), 9), (v.minn, 6),
                   (v.minn - 1, 5)]
        for b, k in classes:
            assert R.fclass(b, fmt) == 1 << k
            cases.append(Case(ins(f"fclass.{SFX[fmt]}", rd=5, rs1=1),
                              {"x5": 1 << k, "flags": 0}, fin={1: reg(b, fmt)},
                              label=f"fclass.{SFX[fmt]} {b:#x}"))
    assert {c.expect["x5"] for c in cases} == {1 << k for k in range(10)}
    check_cases(accel, cases)


# -- conversions ---------------------------------------------------------------------------

TO_INT = {"w": (32, True), "wu": (32, False), "l": (64, True), "lu": (64, False)}


def _to_int_inputs(fmt: int) -> list[int]:
    """Specials, halves (ties), values just inside and outside every range."""
    v = V(fmt)
    qs = [Q(0), Q(-1, 2), Q(1, 2), Q(3, 2), Q(5, 2), Q(-3, 2), Q(-5, 2), Q(-9, 10), Q(7, 10),
          Q(-1), Q(1), Q(2) ** 31, -Q(2) ** 31, Q(2) ** 31 - 1, -Q(2) ** 31 - 1,
          Q(2) ** 31 - Q(1, 2), Q(2) ** 32, Q(2) ** 32 - 1, Q(2) ** 32 - Q(1, 2),
          -Q(2) ** 31 - Q(1, 2), Q(2) ** 63, -Q(2) ** 63, Q(2) ** 64, Q(2) ** 63 - 2 ** 10,
          Q(2) ** 64 - 2 ** 11, Q(10) ** 10, -Q(10) ** 10, Q(123456, 1000)]
    out = [v.qnan, v.snan, v.neg(v.qnan_p), v.inf, v.ninf, v.nzero, v.maxf, v.neg(v.maxf),
           v.mins]
    for q in qs:
        b, fl = R.round_value(q, fmt, R.RNE)
        if fl == 0:                          # exactly representable in this format
            out.append(b)
    return out


@covers(*[f"fcvt.{i}.{s}" for i in TO_INT for s in "sd"])
def test_fcvt_float_to_int(accel):
    """Round in the mode, then saturate: NaN and too large give the maximum, too small the
    minimum, with NV (and no NX); in range and inexact gives NX. W results are
    sign-extended, also for wu."""
    cases = []
    for fmt in FMTS:
        for b in _to_int_inputs(fmt):
            for it, (width, signed) in TO_INT.items():
                res = {m: R.to_int(b, fmt, width, signed, m) for m in MODES}
                variants = RM_VARIANTS if len(set(res.values())) > 1 else [(1, None), (DYN, 3)]
                for rm, frm in variants:
                    want, fl = res[frm if rm == DYN else rm]
                    name = f"fcvt.{it}.{SFX[fmt]}"
                    cases.append(Case(ins(name, rd=5, rs1=1, rm=rm),
                                      {"x5": want, "flags": fl}, fin={1: reg(b, fmt)},
                                      frm=frm, label=f"{name} rm={rm} frm={frm} {b:#x}"))
    # hand-written corners the reference must reproduce
    d = R.f64
    assert R.to_int(R.CNAN[64], 64, 32, True, 0) == (0x7FFFFFFF, NV)
    assert R.to_int(R.CNAN[64], 64, 64, False, 0) == (M64, NV)
    assert R.to_int(R.INF[64] | R.SIGN[64], 64, 32, True, 0) == (0xFFFFFFFF80000000, NV)
    assert R.to_int(R.INF[64] | R.SIGN[64], 64, 64, False, 0) == (0, NV)
    assert R.to_int(d(-0.5), 64, 32, False, R.RTZ) == (0, NX)
    assert R.to_int(d(-0.5), 64, 32, False, R.RDN) == (0, NV)
    assert R.to_int(d(-0.5), 64, 32, True, R.RMM) == (M64, NX)
    assert R.to_int(d(-0.5), 64, 32, True, R.RNE) == (0, NX)
    assert R.to_int(d(2.5), 64, 64, True, R.RNE) == (2, NX)
    assert R.to_int(d(2.5), 64, 64, True, R.RMM) == (3, NX)
    assert R.to_int(d(3e9), 64, 32, False, R.RNE) == (0xFFFFFFFFB2D05E00, 0)
    assert R.to_int(d(2.0 ** 32), 64, 32, False, R.RNE) == (M64, NV)
    assert R.to_int(d(2.0 ** 63), 64, 64, True, R.RNE) == ((1 << 63) - 1, NV)
    assert R.to_int(d(-2.0 ** 63), 64, 64, True, R.RNE) == (1 << 63, 0)
    check_cases(accel, cases)


FROM_INT = {"w": lambda x: s32(x), "wu": lambda x: x & 0xFFFFFFFF,
            "l": lambda x: x - (1 << 64) if x >> 63 else x, "lu": lambda x: x}


def s32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >> 31 else x


FROM_INT_X = [0, 1, M64, 2 ** 24 + 1, 2 ** 24 + 3, (2 ** 24 + 1) * 2 ** 8 + 0x80 - 0,
              (-(2 ** 24 + 1)) & M64, 2 ** 53 + 1, 2 ** 53 + 3, (-(2 ** 53 + 1)) & M64,
              2 ** 63 - 1, 2 ** 63, M64 - 1, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF,
              0x1234567800000003, 0xFFFFFFFF00000000 | (2 ** 24 + 1), 0x00000001_FFFFFFFF,
              2 ** 31 - 63, 123456789, (-123456789) & M64]


@covers(*[f"fcvt.{s}.{i}" for i in FROM_INT for s in "sd"])
def test_fcvt_int_to_float(accel):
    """The W forms take the low 32 bits of rs1 (signed or unsigned) whatever the upper
    ones; the result is correctly rounded in every mode (2**24+1 to single and 2**53+1
    to double are ties)."""
    cases = []
    for fmt in FMTS:
        for it, conv in FROM_INT.items():
            for xv in FROM_INT_X:
                n = conv(xv)
                res = {m: R.from_int(n, fmt, m) for m in MODES}
                variants = RM_VARIANTS if len(set(res.values())) > 1 else [(2, None), (DYN, 0)]
                for rm, frm in variants:
                    want, fl = res[frm if rm == DYN else rm]
                    name = f"fcvt.{SFX[fmt]}.{it}"
                    cases.append(Case(ins(name, rd=4, rs1=5, rm=rm),
                                      {"f4": reg(want, fmt), "flags": fl}, xin={5: xv},
                                      frm=frm, label=f"{name} rm={rm} frm={frm} {xv:#x}"))
    # hand-written: the ties named in the test's docstring
    assert R.from_int(2 ** 53 + 1, 64, R.RNE) == (R.f64(2.0 ** 53), NX)
    assert R.from_int(2 ** 53 + 1, 64, R.RUP) == (R.f64(2.0 ** 53 + 2), NX)
    assert R.from_int(2 ** 53 + 1, 64, R.RMM) == (R.f64(2.0 ** 53 + 2), NX)
    assert R.from_int(-(2 ** 53 + 1), 64, R.RDN) == (R.f64(-2.0 ** 53 - 2), NX)
    assert R.from_int(2 ** 24 + 1, 32, R.RNE) == (R.f32(2.0 ** 24), NX)
    assert R.from_int(2 ** 24 + 3, 32, R.RNE) == (R.f32(2.0 ** 24 + 4), NX)
    assert R.from_int(2 ** 24 + 1, 32, R.RTZ) == (R.f32(2.0 ** 24), NX)
    assert R.from_int(2 ** 64 - 1, 32, R.RNE) == (R.f32(2.0 ** 64), NX)
    check_cases(accel, cases)


@covers("fcvt.s.d", "fcvt.d.s")
def test_fcvt_between_formats(accel):
    """fcvt.s.d rounds (overflow, underflow, ties per mode); fcvt.d.s is exact; both turn
    every NaN into the canonical NaN, raising NV only for a signalling one."""
    d = R.f64
    doubles = [d(1 / 3), d(-1 / 3), d(1e300), d(-1e300), d(1e-300), d(-1e-300),
               d(1 + 2 ** -24), d(1 + 3 * 2 ** -24), d(-(1 + 2 ** -24)), d(3.4028234663852886e38),
               d(3.4028235677973366e38), d(2.0 ** -149), d(2.0 ** -150), d(3 * 2.0 ** -151),
               d(2.0 ** -126 * (1 - 2 ** -25)), R.CNAN[64] | 0x1234, R.INF[64] | 1,
               R.INF[64], R.SIGN[64], d(0.1)]
    cases = []
    for b in doubles:
        res = {m: R.cvt_ff(b, 64, 32, m) for m in MODES}
        variants = RM_VARIANTS if len(set(res.values())) > 1 else [(0, None), (DYN, 1)]
        for rm, frm in variants:
            want, fl = res[frm if rm == DYN else rm]
            cases.append(Case(ins("fcvt.s.d", rd=4, rs1=1, rm=rm),
                              {"f4": box(want), "flags": fl}, fin={1: b}, frm=frm,
                              label=f"fcvt.s.d rm={rm} frm={frm} {b:#x}"))
    singles = [R.f32(0.1), R.f32(-2.5), 0x00000001, 0x80000001, 0x7F7FFFFF, R.INF[32],
               0x7F800001, 0xFFC01234, 0x7FC00000, 0x80000000]
    for b in singles:
        for rm, frm in ((0, None), (1, None), (4, None), (DYN, 2), (DYN, 4)):
            want, fl = R.cvt_ff(b, 32, 64, R.RNE)
            cases.append(Case(ins("fcvt.d.s", rd=4, rs1=1, rm=rm), {"f4": want, "flags": fl},
                              fin={1: box(b)}, frm=frm, label=f"fcvt.d.s rm={rm} {b:#x}"))
    # hand-written
    assert R.cvt_ff(d(1e300), 64, 32, R.RNE) == (R.INF[32], OF | NX)
    assert R.cvt_ff(d(1e300), 64, 32, R.RTZ) == (0x7F7FFFFF, OF | NX)
    assert R.cvt_ff(d(1e-300), 64, 32, R.RUP) == (1, UF | NX)
    assert R.cvt_ff(d(-1e-300), 64, 32, R.RNE) == (0x80000000, UF | NX)
    assert R.cvt_ff(0x7F800001, 32, 64, R.RNE) == (R.CNAN[64], NV)
    assert R.cvt_ff(0xFFC01234, 32, 64, R.RNE) == (R.CNAN[64], 0)
    check_cases(accel, cases)


# -- rounding-mode legality ----------------------------------------------------------------

def test_reserved_static_rounding_modes_are_illegal(accel):
    """rm = 5 and 6 are reserved: the instruction decodes as illegal and stops the run
    at it, with nothing changed."""
    steps = []
    for name, ops in (("fadd.s", dict(rd=4, rs1=1, rs2=2)),
                      ("fmadd.d", dict(rd=4, rs1=1, rs2=2, rs3=3)),
                      ("fcvt.w.d", dict(rd=5, rs1=1)), ("fcvt.d.s", dict(rd=4, rs1=1)),
                      ("fsqrt.s", dict(rd=4, rs1=1)), ("fcvt.s.d", dict(rd=4, rs1=1)),
                      ("fcvt.d.w", dict(rd=4, rs1=5)), ("fnmsub.s", dict(rd=4, rs1=1, rs2=2,
                                                                         rs3=3)),
                      ("fcvt.lu.s", dict(rd=5, rs1=1)), ("fcvt.s.l", dict(rd=4, rs1=5))):
        for rm in (5, 6):
            steps.append(((name, dict(ops, rm=rm)), "illegal", 0, 0))
    # the same encodings with rm = 7 are legal instructions
    for (name, ops), _, _, _ in steps:
        assert decode(encode(name, **ops)).is_illegal
        assert not decode(encode(name, **dict(ops, rm=7))).is_illegal
    check_precise_stops(accel, steps, fflags=0, frm=0)


@pytest.mark.parametrize("frm", [5, 6, 7])
@covers("fadd.d", "fmul.s", "fsqrt.d", "fmadd.s", "fcvt.w.s", "fcvt.d.w", "fcvt.d.s",
        "fcvt.s.l", "fcvt.lu.d", "fdiv.s", "fcvt.s.d", "fnmadd.d")
def test_dynamic_rounding_with_invalid_frm_is_illegal(accel, frm):
    """With frm = 5, 6 or 7 an instruction using the dynamic mode is illegal (even an exact
    conversion); the run stops at it with nothing changed."""
    steps = [((name, dict(ops, rm=7)), "illegal", 0, 0) for name, ops in (
        ("fadd.d", dict(rd=4, rs1=1, rs2=2)), ("fmul.s", dict(rd=4, rs1=1, rs2=2)),
        ("fsqrt.d", dict(rd=4, rs1=1)), ("fmadd.s", dict(rd=4, rs1=1, rs2=2, rs3=3)),
        ("fcvt.w.s", dict(rd=5, rs1=1)), ("fcvt.d.w", dict(rd=4, rs1=5)),
        ("fcvt.d.s", dict(rd=4, rs1=1)), ("fcvt.s.l", dict(rd=4, rs1=5)),
        ("fcvt.lu.d", dict(rd=5, rs1=1)), ("fdiv.s", dict(rd=4, rs1=1, rs2=2)),
        ("fcvt.s.d", dict(rd=4, rs1=1)), ("fnmadd.d", dict(rd=4, rs1=1, rs2=2, rs3=3)))]
    check_precise_stops(accel, steps, fflags=0x3, frm=frm)


@covers("fsgnj.d", "fmin.s", "feq.d", "fclass.s", "fmv.x.d", "fmv.w.x", "fsgnjx.s",
        "fmax.d", "fle.s")
def test_instructions_without_rounding_ignore_invalid_frm(accel):
    """Instructions with no rm field run normally whatever frm holds."""
    one, two = R.f64(1.0), R.f64(2.0)
    o32, t32 = box(R.f32(1.0)), box(R.f32(2.0))
    cases = [
        Case(ins("fsgnj.d", rd=4, rs1=1, rs2=2), {"f4": one}, fin={1: one, 2: two}),
        Case(ins("fmin.s", rd=4, rs1=1, rs2=2), {"f4": o32}, fin={1: o32, 2: t32}),
        Case(ins("fmax.d", rd=4, rs1=1, rs2=2), {"f4": two}, fin={1: one, 2: two}),
        Case(ins("feq.d", rd=5, rs1=1, rs2=2), {"x5": 0}, fin={1: one, 2: two}),
        Case(ins("fle.s", rd=5, rs1=1, rs2=2), {"x5": 1}, fin={1: o32, 2: t32}),
        Case(ins("fclass.s", rd=5, rs1=1), {"x5": 1 << 6}, fin={1: o32}),
        Case(ins("fmv.x.d", rd=5, rs1=1), {"x5": two}, fin={1: two}),
        Case(ins("fmv.w.x", rd=4, rs1=5), {"f4": o32}, xin={5: R.f32(1.0)}),
        Case(ins("fsgnjx.s", rd=4, rs1=1, rs2=2), {"f4": o32}, fin={1: o32, 2: t32}),
    ]
    for frm in (5, 7):
        check_cases(accel, cases, frm=frm)
