"""RV64A: load-reserved/store-conditional and atomic memory operations."""

from dbtlab.translator import families as F
from dbtlab.translator.families import sem

ENCODINGS = """
lr.w       rd rs1 aq rl  24..20=0   31..27=0x02 14..12=2 6..2=0x0B 1..0=3
sc.w       rd rs1 rs2 aq rl         31..27=0x03 14..12=2 6..2=0x0B 1..0=3
amoswap.w  rd rs1 rs2 aq rl         31..27=0x01 14..12=2 6..2=0x0B 1..0=3
amoadd.w   rd rs1 rs2 aq rl         31..27=0x00 14..12=2 6..2=0x0B 1..0=3
amoxor.w   rd rs1 rs2 aq rl         31..27=0x04 14..12=2 6..2=0x0B 1..0=3
amoand.w   rd rs1 rs2 aq rl         31..27=0x0C 14..12=2 6..2=0x0B 1..0=3
amoor.w    rd rs1 rs2 aq rl         31..27=0x08 14..12=2 6..2=0x0B 1..0=3
amomin.w   rd rs1 rs2 aq rl         31..27=0x10 14..12=2 6..2=0x0B 1..0=3
amomax.w   rd rs1 rs2 aq rl         31..27=0x14 14..12=2 6..2=0x0B 1..0=3
amominu.w  rd rs1 rs2 aq rl         31..27=0x18 14..12=2 6..2=0x0B 1..0=3
amomaxu.w  rd rs1 rs2 aq rl         31..27=0x1C 14..12=2 6..2=0x0B 1..0=3
lr.d       rd rs1 aq rl  24..20=0   31..27=0x02 14..12=3 6..2=0x0B 1..0=3
sc.d       rd rs1 rs2 aq rl         31..27=0x03 14..12=3 6..2=0x0B 1..0=3
amoswap.d  rd rs1 rs2 aq rl         31..27=0x01 14..12=3 6..2=0x0B 1..0=3
amoadd.d   rd rs1 rs2 aq rl         31..27=0x00 14..12=3 6..2=0x0B 1..0=3
amoxor.d   rd rs1 rs2 aq rl         31..27=0x04 14..12=3 6..2=0x0B 1..0=3
amoand.d   rd rs1 rs2 aq rl         31..27=0x0C 14..12=3 6..2=0x0B 1..0=3
amoor.d    rd rs1 rs2 aq rl         31..27=0x08 14..12=3 6..2=0x0B 1..0=3
amomin.d   rd rs1 rs2 aq rl         31..27=0x10 14..12=3 6..2=0x0B 1..0=3
amomax.d   rd rs1 rs2 aq rl         31..27=0x14 14..12=3 6..2=0x0B 1..0=3
amominu.d  rd rs1 rs2 aq rl         31..27=0x18 14..12=3 6..2=0x0B 1..0=3
amomaxu.d  rd rs1 rs2 aq rl         31..27=0x1C 14..12=3 6..2=0x0B 1..0=3
"""

_OPS = {
    "swap": lambda b, old, src: src,
    "add": lambda b, old, src: b.add(old, src),
    "xor": lambda b, old, src: b.xor(old, src),
    "and": lambda b, old, src: b.and_(old, src),
    "or": lambda b, old, src: b.or_(old, src),
}
_MINMAX = {"min": "lt", "max": "ge", "minu": "ltu", "maxu": "geu"}


@sem("lr.w")
def lr_w(b, i): F.load_reserved(b, i, 4)
@sem("lr.d")
def lr_d(b, i): F.load_reserved(b, i, 8)
@sem("sc.w")
def sc_w(b, i): F.store_conditional(b, i, 4)
@sem("sc.d")
def sc_d(b, i): F.store_conditional(b, i, 8)


def _register_amos():
    for suffix, size in (("w", 4), ("d", 8)):
        for op, fn in _OPS.items():
            sem(f"amo{op}.{suffix}")(lambda b, i, fn=fn, size=size: F.amo(b, i, size, fn))
        for op, pred in _MINMAX.items():
            sem(f"amo{op}.{suffix}")(
                lambda b, i, f=F.amo_minmax(pred, size), size=size: F.amo(b, i, size, f))


_register_amos()
