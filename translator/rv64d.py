"""RV64D: double-precision floating point and the conversions between formats."""

from dbtlab.translator import families as F
from dbtlab.translator.families import sem

ENCODINGS = """
fld       rd rs1 imm12                        14..12=3 6..2=0x01 1..0=3
fsd       rs1 rs2 simm12                      14..12=3 6..2=0x09 1..0=3
fmadd.d   rd rs1 rs2 rs3 rm       26..25=1             6..2=0x10 1..0=3
fmsub.d   rd rs1 rs2 rs3 rm       26..25=1             6..2=0x11 1..0=3
fnmsub.d  rd rs1 rs2 rs3 rm       26..25=1             6..2=0x12 1..0=3
fnmadd.d  rd rs1 rs2 rs3 rm       26..25=1             6..2=0x13 1..0=3
fadd.d    rd rs1 rs2 rm      31..27=0x00 26..25=1      6..2=0x14 1..0=3
fsub.d    rd rs1 rs2 rm      31..27=0x01 26..25=1      6..2=0x14 1..0=3
fmul.d    rd rs1 rs2 rm      31..27=0x02 26..25=1      6..2=0x14 1..0=3
fdiv.d    rd rs1 rs2 rm      31..27=0x03 26..25=1      6..2=0x14 1..0=3
fsqrt.d   rd rs1 rm 24..20=0 31..27=0x0B 26..25=1      6..2=0x14 1..0=3
fsgnj.d   rd rs1 rs2         31..27=0x04 26..25=1 14..12=0 6..2=0x14 1..0=3
fsgnjn.d  rd rs1 rs2         31..27=0x04 26..25=1 14..12=1 6..2=0x14 1..0=3
fsgnjx.d  rd rs1 rs2         31..27=0x04 26..25=1 14..12=2 6..2=0x14 1..0=3
fmin.d    rd rs1 rs2         31..27=0x05 26..25=1 14..12=0 6..2=0x14 1..0=3
fmax.d    rd rs1 rs2         31..27=0x05 26..25=1 14..12=1 6..2=0x14 1..0=3
fcvt.w.d  rd rs1 rm 24..20=0 31..27=0x18 26..25=1      6..2=0x14 1..0=3
fcvt.wu.d rd rs1 rm 24..20=1 31..27=0x18 26..25=1      6..2=0x14 1..0=3
fcvt.l.d  rd rs1 rm 24..20=2 31..27=0x18 26..25=1      6..2=0x14 1..0=3
fcvt.lu.d rd rs1 rm 24..20=3 31..27=0x18 26..25=1      6..2=0x14 1..0=3
fmv.x.d   rd rs1    24..20=0 31..27=0x1C 26..25=1 14..12=0 6..2=0x14 1..0=3
fclass.d  rd rs1    24..20=0 31..27=0x1C 26..25=1 14..12=1 6..2=0x14 1..0=3
feq.d     rd rs1 rs2         31..27=0x14 26..25=1 14..12=2 6..2=0x14 1..0=3
flt.d     rd rs1 rs2         31..27=0x14 26..25=1 14..12=1 6..2=0x14 1..0=3
fle.d     rd rs1 rs2         31..27=0x14 26..25=1 14..12=0 6..2=0x14 1..0=3
fcvt.d.w  rd rs1 rm 24..20=0 31..27=0x1A 26..25=1      6..2=0x14 1..0=3
fcvt.d.wu rd rs1 rm 24..20=1 31..27=0x1A 26..25=1      6..2=0x14 1..0=3
fcvt.d.l  rd rs1 rm 24..20=2 31..27=0x1A 26..25=1      6..2=0x14 1..0=3
fcvt.d.lu rd rs1 rm 24..20=3 31..27=0x1A 26..25=1      6..2=0x14 1..0=3
fmv.d.x   rd rs1    24..20=0 31..27=0x1E 26..25=1 14..12=0 6..2=0x14 1..0=3
fcvt.s.d    rd rs1 rm 24..20=1 31..27=0x08 26..25=0      6..2=0x14 1..0=3
fcvt.d.s    rd rs1 rm 24..20=0 31..27=0x08 26..25=1      6..2=0x14 1..0=3
"""


@sem("fld")
def fld(b, i): F.fp_load(b, i, 64)
@sem("fsd")
def fsd(b, i): F.fp_store(b, i, 64)
@sem("fmadd.d")
def fmadd_d(b, i): F.fp_fma(b, i, 64, False, False)
@sem("fmsub.d")
def fmsub_d(b, i): F.fp_fma(b, i, 64, False, True)
@sem("fnmsub.d")
def fnmsub_d(b, i): F.fp_fma(b, i, 64, True, False)
@sem("fnmadd.d")
def fnmadd_d(b, i): F.fp_fma(b, i, 64, True, True)
@sem("fadd.d")
def fadd_d(b, i): F.fp_arith(b, i, "add", 64)
@sem("fsub.d")
def fsub_d(b, i): F.fp_arith(b, i, "sub", 64)
@sem("fmul.d")
def fmul_d(b, i): F.fp_arith(b, i, "mul", 64)
@sem("fdiv.d")
def fdiv_d(b, i): F.fp_arith(b, i, "div", 64)
@sem("fsqrt.d")
def fsqrt_d(b, i): F.fp_arith(b, i, "sqrt", 64)
@sem("fsgnj.d")
def fsgnj_d(b, i): F.fp_sign_inject(b, i, 64, "")
@sem("fsgnjn.d")
def fsgnjn_d(b, i): F.fp_sign_inject(b, i, 64, "n")
@sem("fsgnjx.d")
def fsgnjx_d(b, i): F.fp_sign_inject(b, i, 64, "x")
@sem("fmin.d")
def fmin_d(b, i): F.fp_minmax(b, i, 64, False)
@sem("fmax.d")
def fmax_d(b, i): F.fp_minmax(b, i, 64, True)
@sem("fcvt.w.d")
def fcvt_w_d(b, i): F.fp_to_int(b, i, 64, 32, True)
@sem("fcvt.wu.d")
def fcvt_wu_d(b, i): F.fp_to_int(b, i, 64, 32, False)
@sem("fcvt.l.d")
def fcvt_l_d(b, i): F.fp_to_int(b, i, 64, 64, True)
@sem("fcvt.lu.d")
def fcvt_lu_d(b, i): F.fp_to_int(b, i, 64, 64, False)
@sem("fmv.x.d")
def fmv_x_d(b, i): F.fp_move_to_x(b, i, 64)
@sem("fclass.d")
def fclass_d(b, i): F.fp_classify(b, i, 64)
@sem("feq.d")
def feq_d(b, i): F.fp_compare(b, i, 64, "eq")
@sem("flt.d")
def flt_d(b, i): F.fp_compare(b, i, 64, "lt")
@sem("fle.d")
def fle_d(b, i): F.fp_compare(b, i, 64, "le")
@sem("fcvt.d.w")
def fcvt_d_w(b, i): F.int_to_fp(b, i, 64, 32, True)
@sem("fcvt.d.wu")
def fcvt_d_wu(b, i): F.int_to_fp(b, i, 64, 32, False)
@sem("fcvt.d.l")
def fcvt_d_l(b, i): F.int_to_fp(b, i, 64, 64, True)
@sem("fcvt.d.lu")
def fcvt_d_lu(b, i): F.int_to_fp(b, i, 64, 64, False)
@sem("fmv.d.x")
def fmv_d_x(b, i): F.fp_move_from_x(b, i, 64)
@sem("fcvt.s.d")
def fcvt_s_d(b, i): b.wf32(i.rd, b.fcvt_ff(b.read_f(i.rs1), 64, 32, i.rm))
@sem("fcvt.d.s")
def fcvt_d_s(b, i): b.write_f(i.rd, b.fcvt_ff(b.rf32(i.rs1), 32, 64, i.rm))
