"""RV64M: integer multiplication and division."""

from dbtlab.translator import families as F
from dbtlab.translator.families import sem

ENCODINGS = """
mul      rd rs1 rs2         31..25=0x01 14..12=0   6..2=0x0C 1..0=3
mulh     rd rs1 rs2         31..25=0x01 14..12=1   6..2=0x0C 1..0=3
mulhsu   rd rs1 rs2         31..25=0x01 14..12=2   6..2=0x0C 1..0=3
mulhu    rd rs1 rs2         31..25=0x01 14..12=3   6..2=0x0C 1..0=3
div      rd rs1 rs2         31..25=0x01 14..12=4   6..2=0x0C 1..0=3
divu     rd rs1 rs2         31..25=0x01 14..12=5   6..2=0x0C 1..0=3
rem      rd rs1 rs2         31..25=0x01 14..12=6   6..2=0x0C 1..0=3
remu     rd rs1 rs2         31..25=0x01 14..12=7   6..2=0x0C 1..0=3
mulw     rd rs1 rs2         31..25=0x01 14..12=0   6..2=0x0E 1..0=3
divw     rd rs1 rs2         31..25=0x01 14..12=4   6..2=0x0E 1..0=3
divuw    rd rs1 rs2         31..25=0x01 14..12=5   6..2=0x0E 1..0=3
remw     rd rs1 rs2         31..25=0x01 14..12=6   6..2=0x0E 1..0=3
remuw    rd rs1 rs2         31..25=0x01 14..12=7   6..2=0x0E 1..0=3
"""


def _div(b, i, signed, rem):
    b.wx(i.rd, F.div(b, b.rx(i.rs1), b.rx(i.rs2), signed, rem))


def _div_w(b, i, signed, rem):
    op = ("s" if signed else "u") + ("rem" if rem else "div")
    b.wx(i.rd, F.word(b, op, b.rx(i.rs1), b.rx(i.rs2),
                      lambda x, y: F.div(b, x, y, signed, rem)))


@sem("mul")
def mul(b, i): F.rr(b, i, "mul")
@sem("mulh")
def mulh(b, i): F.rr(b, i, "mulh")
@sem("mulhsu")
def mulhsu(b, i): F.rr(b, i, "mulhsu")
@sem("mulhu")
def mulhu(b, i): F.rr(b, i, "mulhu")
@sem("div")
def div(b, i): _div(b, i, True, False)
@sem("divu")
def divu(b, i): _div(b, i, False, False)
@sem("rem")
def rem(b, i): _div(b, i, True, True)
@sem("remu")
def remu(b, i): _div(b, i, False, True)
@sem("mulw")
def mulw(b, i): F.rr_w(b, i, "mul")
@sem("divw")
def divw(b, i): _div_w(b, i, True, False)
@sem("divuw")
def divuw(b, i): _div_w(b, i, False, False)
@sem("remw")
def remw(b, i): _div_w(b, i, True, True)
@sem("remuw")
def remuw(b, i): _div_w(b, i, False, True)
