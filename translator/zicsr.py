"""Zicsr: CSR access. User mode sees fflags, frm, fcsr and the counters cycle, time,
instret (read-only); any other CSR, or a write to a read-only one, is illegal."""

from dbtlab.translator import families as F
from dbtlab.translator.families import sem

ENCODINGS = """
csrrw    rd rs1 csr        14..12=1 6..2=0x1C 1..0=3
csrrs    rd rs1 csr        14..12=2 6..2=0x1C 1..0=3
csrrc    rd rs1 csr        14..12=3 6..2=0x1C 1..0=3
csrrwi   rd zimm5 csr      14..12=5 6..2=0x1C 1..0=3
csrrsi   rd zimm5 csr      14..12=6 6..2=0x1C 1..0=3
csrrci   rd zimm5 csr      14..12=7 6..2=0x1C 1..0=3
"""


@sem("csrrw")
def csrrw(b, i): F.csr_op(b, i, "w", b.rx(i.rs1), True)
@sem("csrrs")
def csrrs(b, i): F.csr_op(b, i, "s", b.rx(i.rs1), i.rs1 != 0)
@sem("csrrc")
def csrrc(b, i): F.csr_op(b, i, "c", b.rx(i.rs1), i.rs1 != 0)
@sem("csrrwi")
def csrrwi(b, i): F.csr_op(b, i, "w", b.const(i.imm), True)
@sem("csrrsi")
def csrrsi(b, i): F.csr_op(b, i, "s", b.const(i.imm), i.imm != 0)
@sem("csrrci")
def csrrci(b, i): F.csr_op(b, i, "c", b.const(i.imm), i.imm != 0)
