"""RV64F: single-precision floating point (NaN-boxed in the 64-bit f registers)."""

from dbtlab.translator import families as F
from dbtlab.translator.families import sem

ENCODINGS = """
flw       rd rs1 imm12                        14..12=2 6..2=0x01 1..0=3
fsw       rs1 rs2 simm12                      14..12=2 6..2=0x09 1..0=3
fmadd.s   rd rs1 rs2 rs3 rm       26..25=0             6..2=0x10 1..0=3
fmsub.s   rd rs1 rs2 rs3 rm       26..25=0             6..2=0x11 1..0=3
fnmsub.s  rd rs1 rs2 rs3 rm       26..25=0             6..2=0x12 1..0=3
fnmadd.s  rd rs1 rs2 rs3 rm       26..25=0             6..2=0x13 1..0=3
fadd.s    rd rs1 rs2 rm      31..27=0x00 26..25=0      6..2=0x14 1..0=3
fsub.s    rd rs1 rs2 rm      31..27=0x01 26..25=0      6..2=0x14 1..0=3
fmul.s    rd rs1 rs2 rm      31..27=0x02 26..25=0      6..2=0x14 1..0=3
fdiv.s    rd rs1 rs2 rm      31..27=0x03 26..25=0      6..2=0x14 1..0=3
fsqrt.s   rd rs1 rm 24..20=0 31..27=0x0B 26..25=0      6..2=0x14 1..0=3
fsgnj.s   rd rs1 rs2         31..27=0x04 26..25=0 14..12=0 6..2=0x14 1..0=3
fsgnjn.s  rd rs1 rs2         31..27=0x04 26..25=0 14..12=1 6..2=0x14 1..0=3
fsgnjx.s  rd rs1 rs2         31..27=0x04 26..25=0 14..12=2 6..2=0x14 1..0=3
fmin.s    rd rs1 rs2         31..27=0x05 26..25=0 14..12=0 6..2=0x14 1..0=3
fmax.s    rd rs1 rs2         31..27=0x05 26..25=0 14..12=1 6..2=0x14 1..0=3
fcvt.w.s  rd rs1 rm 24..20=0 31..27=0x18 26..25=0      6..2=0x14 1..0=3
fcvt.wu.s rd rs1 rm 24..20=1 31..27=0x18 26..25=0      6..2=0x14 1..0=3
fcvt.l.s  rd rs1 rm 24..20=2 31..27=0x18 26..25=0      6..2=0x14 1..0=3
fcvt.lu.s rd rs1 rm 24..20=3 31..27=0x18 26..25=0      6..2=0x14 1..0=3
fmv.x.w   rd rs1    24..20=0 31..27=0x1C 26..25=0 14..12=0 6..2=0x14 1..0=3
fclass.s  rd rs1    24..20=0 31..27=0x1C 26..25=0 14..12=1 6..2=0x14 1..0=3
feq.s     rd rs1 rs2         31..27=0x14 26..25=0 14..12=2 6..2=0x14 1..0=3
flt.s     rd rs1 rs2         31..27=0x14 26..25=0 14..12=1 6..2=0x14 1..0=3
fle.s     rd rs1 rs2         31..27=0x14 26..25=0 14..12=0 6..2=0x14 1..0=3
fcvt.s.w  rd rs1 rm 24..20=0 31..27=0x1A 26..25=0      6..2=0x14 1..0=3
fcvt.s.wu rd rs1 rm 24..20=1 31..27=0x1A 26..25=0      6..2=0x14 1..0=3
fcvt.s.l  rd rs1 rm 24..20=2 31..27=0x1A 26..25=0      6..2=0x14 1..0=3
fcvt.s.lu rd rs1 rm 24..20=3 31..27=0x1A 26..25=0      6..2=0x14 1..0=3
fmv.w.x   rd rs1    24..20=0 31..27=0x1E 26..25=0 14..12=0 6..2=0x14 1..0=3
"""


@sem("flw")
def flw(b, i): F.fp_load(b, i, 32)
@sem("fsw")
def fsw(b, i): F.fp_store(b, i, 32)
@sem("fmadd.s")
def fmadd_s(b, i): F.fp_fma(b, i, 32, False, False)
@sem("fmsub.s")
def fmsub_s(b, i): F.fp_fma(b, i, 32, False, True)
@sem("fnmsub.s")
def fnmsub_s(b, i): F.fp_fma(b, i, 32, True, False)
@sem("fnmadd.s")
def fnmadd_s(b, i): F.fp_fma(b, i, 32, True, True)
@sem("fadd.s")
def fadd_s(b, i): F.fp_arith(b, i, "add", 32)
@sem("fsub.s")
def fsub_s(b, i): F.fp_arith(b, i, "sub", 32)
@sem("fmul.s")
def fmul_s(b, i): F.fp_arith(b, i, "mul", 32)
@sem("fdiv.s")
def fdiv_s(b, i): F.fp_arith(b, i, "div", 32)
@sem("fsqrt.s")
def fsqrt_s(b, i): F.fp_arith(b, i, "sqrt", 32)
@sem("fsgnj.s")
def fsgnj_s(b, i): F.fp_sign_inject(b, i, 32, "")
@sem("fsgnjn.s")
def fsgnjn_s(b, i): F.fp_sign_inject(b, i, 32, "n")
@sem("fsgnjx.s")
def fsgnjx_s(b, i): F.fp_sign_inject(b, i, 32, "x")
@sem("fmin.s")
def fmin_s(b, i): F.fp_minmax(b, i, 32, False)
@sem("fmax.s")
def fmax_s(b, i): F.fp_minmax(b, i, 32, True)
@sem("fcvt.w.s")
def fcvt_w_s(b, i): F.fp_to_int(b, i, 32, 32, True)
@sem("fcvt.wu.s")
def fcvt_wu_s(b, i): F.fp_to_int(b, i, 32, 32, False)
@sem("fcvt.l.s")
def fcvt_l_s(b, i): F.fp_to_int(b, i, 32, 64, True)
@sem("fcvt.lu.s")
def fcvt_lu_s(b, i): F.fp_to_int(b, i, 32, 64, False)
@sem("fmv.x.w")
def fmv_x_w(b, i): F.fp_move_to_x(b, i, 32)
@sem("fclass.s")
def fclass_s(b, i): F.fp_classify(b, i, 32)
@sem("feq.s")
def feq_s(b, i): F.fp_compare(b, i, 32, "eq")
@sem("flt.s")
def flt_s(b, i): F.fp_compare(b, i, 32, "lt")
@sem("fle.s")
def fle_s(b, i): F.fp_compare(b, i, 32, "le")
@sem("fcvt.s.w")
def fcvt_s_w(b, i): F.int_to_fp(b, i, 32, 32, True)
@sem("fcvt.s.wu")
def fcvt_s_wu(b, i): F.int_to_fp(b, i, 32, 32, False)
@sem("fcvt.s.l")
def fcvt_s_l(b, i): F.int_to_fp(b, i, 32, 64, True)
@sem("fcvt.s.lu")
def fcvt_s_lu(b, i): F.int_to_fp(b, i, 32, 64, False)
@sem("fmv.w.x")
def fmv_w_x(b, i): F.fp_move_from_x(b, i, 32)
