"""RV64I: the base integer instruction set (user level)."""

from dbtlab.ir.builder import MASK64
from dbtlab.translator import families as F
from dbtlab.translator.families import sem

ENCODINGS = """
# -- upper immediates and jumps
lui      rd imm20                                  6..2=0x0D 1..0=3
auipc    rd imm20                                  6..2=0x05 1..0=3
jal      rd jimm20                                 6..2=0x1B 1..0=3
jalr     rd rs1 imm12                   14..12=0   6..2=0x19 1..0=3
# -- branches
beq      rs1 rs2 bimm12                 14..12=0   6..2=0x18 1..0=3
bne      rs1 rs2 bimm12                 14..12=1   6..2=0x18 1..0=3
blt      rs1 rs2 bimm12                 14..12=4   6..2=0x18 1..0=3
bge      rs1 rs2 bimm12                 14..12=5   6..2=0x18 1..0=3
bltu     rs1 rs2 bimm12                 14..12=6   6..2=0x18 1..0=3
bgeu     rs1 rs2 bimm12                 14..12=7   6..2=0x18 1..0=3
# -- loads and stores
lb       rd rs1 imm12                   14..12=0   6..2=0x00 1..0=3
lh       rd rs1 imm12                   14..12=1   6..2=0x00 1..0=3
lw       rd rs1 imm12                   14..12=2   6..2=0x00 1..0=3
ld       rd rs1 imm12                   14..12=3   6..2=0x00 1..0=3
lbu      rd rs1 imm12                   14..12=4   6..2=0x00 1..0=3
lhu      rd rs1 imm12                   14..12=5   6..2=0x00 1..0=3
lwu      rd rs1 imm12                   14..12=6   6..2=0x00 1..0=3
sb       rs1 rs2 simm12                 14..12=0   6..2=0x08 1..0=3
sh       rs1 rs2 simm12                 14..12=1   6..2=0x08 1..0=3
sw       rs1 rs2 simm12                 14..12=2   6..2=0x08 1..0=3
sd       rs1 rs2 simm12                 14..12=3   6..2=0x08 1..0=3
# -- register-immediate
addi     rd rs1 imm12                   14..12=0   6..2=0x04 1..0=3
slti     rd rs1 imm12                   14..12=2   6..2=0x04 1..0=3
sltiu    rd rs1 imm12                   14..12=3   6..2=0x04 1..0=3
xori     rd rs1 imm12                   14..12=4   6..2=0x04 1..0=3
ori      rd rs1 imm12                   14..12=6   6..2=0x04 1..0=3
andi     rd rs1 imm12                   14..12=7   6..2=0x04 1..0=3
slli     rd rs1 shamt6      31..26=0x00 14..12=1   6..2=0x04 1..0=3
srli     rd rs1 shamt6      31..26=0x00 14..12=5   6..2=0x04 1..0=3
srai     rd rs1 shamt6      31..26=0x10 14..12=5   6..2=0x04 1..0=3
# -- register-register
add      rd rs1 rs2         31..25=0x00 14..12=0   6..2=0x0C 1..0=3
sub      rd rs1 rs2         31..25=0x20 14..12=0   6..2=0x0C 1..0=3
sll      rd rs1 rs2         31..25=0x00 14..12=1   6..2=0x0C 1..0=3
slt      rd rs1 rs2         31..25=0x00 14..12=2   6..2=0x0C 1..0=3
sltu     rd rs1 rs2         31..25=0x00 14..12=3   6..2=0x0C 1..0=3
xor      rd rs1 rs2         31..25=0x00 14..12=4   6..2=0x0C 1..0=3
srl      rd rs1 rs2         31..25=0x00 14..12=5   6..2=0x0C 1..0=3
sra      rd rs1 rs2         31..25=0x20 14..12=5   6..2=0x0C 1..0=3
or       rd rs1 rs2         31..25=0x00 14..12=6   6..2=0x0C 1..0=3
and      rd rs1 rs2         31..25=0x00 14..12=7   6..2=0x0C 1..0=3
# -- 32-bit word operations
addiw    rd rs1 imm12                   14..12=0   6..2=0x06 1..0=3
slliw    rd rs1 shamt5      31..25=0x00 14..12=1   6..2=0x06 1..0=3
srliw    rd rs1 shamt5      31..25=0x00 14..12=5   6..2=0x06 1..0=3
sraiw    rd rs1 shamt5      31..25=0x20 14..12=5   6..2=0x06 1..0=3
addw     rd rs1 rs2         31..25=0x00 14..12=0   6..2=0x0E 1..0=3
subw     rd rs1 rs2         31..25=0x20 14..12=0   6..2=0x0E 1..0=3
sllw     rd rs1 rs2         31..25=0x00 14..12=1   6..2=0x0E 1..0=3
srlw     rd rs1 rs2         31..25=0x00 14..12=5   6..2=0x0E 1..0=3
sraw     rd rs1 rs2         31..25=0x20 14..12=5   6..2=0x0E 1..0=3
# -- ordering and system (fence's fm/pred/succ/rs1/rd are ignored: one hart)
fence    fm pred succ rs1 rd            14..12=0   6..2=0x03 1..0=3
ecall    31..20=0x000 19..15=0 14..12=0 11..7=0    6..2=0x1C 1..0=3
ebreak   31..20=0x001 19..15=0 14..12=0 11..7=0    6..2=0x1C 1..0=3
"""


@sem("lui")
def lui(b, i): b.wx(i.rd, b.const(i.imm & MASK64))
@sem("auipc")
def auipc(b, i): b.wx(i.rd, b.const((b.pc + i.imm) & MASK64))


@sem("jal")
def jal(b, i):
    b.wx(i.rd, b.const(b.next_pc))
    b.jump(b.const((b.pc + i.imm) & MASK64))


@sem("jalr")
def jalr(b, i):
    target = b.and_(F.address(b, i), b.const(MASK64 - 1))   # computed before rd is written
    b.wx(i.rd, b.const(b.next_pc))
    b.jump(target)


@sem("beq")
def beq(b, i): F.branch(b, i, "eq")
@sem("bne")
def bne(b, i): F.branch(b, i, "ne")
@sem("blt")
def blt(b, i): F.branch(b, i, "lt")
@sem("bge")
def bge(b, i): F.branch(b, i, "ge")
@sem("bltu")
def bltu(b, i): F.branch(b, i, "ltu")
@sem("bgeu")
def bgeu(b, i): F.branch(b, i, "geu")


@sem("lb")
def lb(b, i): F.load(b, i, 1, True)
@sem("lh")
def lh(b, i): F.load(b, i, 2, True)
@sem("lw")
def lw(b, i): F.load(b, i, 4, True)
@sem("ld")
def ld(b, i): F.load(b, i, 8, True)
@sem("lbu")
def lbu(b, i): F.load(b, i, 1, False)
@sem("lhu")
def lhu(b, i): F.load(b, i, 2, False)
@sem("lwu")
def lwu(b, i): F.load(b, i, 4, False)
@sem("sb")
def sb(b, i): F.store(b, i, 1)
@sem("sh")
def sh(b, i): F.store(b, i, 2)
@sem("sw")
def sw(b, i): F.store(b, i, 4)
@sem("sd")
def sd(b, i): F.store(b, i, 8)


@sem("addi")
def addi(b, i): F.ri(b, i, "add")
@sem("slti")
def slti(b, i): F.set_if(b, i, "lt", b.const(i.imm))
@sem("sltiu")
def sltiu(b, i): F.set_if(b, i, "ltu", b.const(i.imm))
@sem("xori")
def xori(b, i): F.ri(b, i, "xor")
@sem("ori")
def ori(b, i): F.ri(b, i, "or")
@sem("andi")
def andi(b, i): F.ri(b, i, "and")
@sem("slli")
def slli(b, i): F.ri(b, i, "shl")
@sem("srli")
def srli(b, i): F.ri(b, i, "lshr")
@sem("srai")
def srai(b, i): F.ri(b, i, "ashr")

@sem("add")
def add(b, i): F.rr(b, i, "add")
@sem("sub")
def sub(b, i): F.rr(b, i, "sub")
@sem("sll")
def sll(b, i): F.rr(b, i, "shl")
@sem("slt")
def slt(b, i): F.set_if(b, i, "lt", b.rx(i.rs2))
@sem("sltu")
def sltu(b, i): F.set_if(b, i, "ltu", b.rx(i.rs2))
@sem("xor")
def xor(b, i): F.rr(b, i, "xor")
@sem("srl")
def srl(b, i): F.rr(b, i, "lshr")
@sem("sra")
def sra(b, i): F.rr(b, i, "ashr")
@sem("or")
def or_(b, i): F.rr(b, i, "or")
@sem("and")
def and_(b, i): F.rr(b, i, "and")

@sem("addiw")
def addiw(b, i): F.ri_w(b, i, "add")
@sem("slliw")
def slliw(b, i): F.ri_w(b, i, "shl")
@sem("srliw")
def srliw(b, i): F.ri_w(b, i, "lshr")
@sem("sraiw")
def sraiw(b, i): F.ri_w(b, i, "ashr")
@sem("addw")
def addw(b, i): F.rr_w(b, i, "add")
@sem("subw")
def subw(b, i): F.rr_w(b, i, "sub")
@sem("sllw")
def sllw(b, i): F.rr_w(b, i, "shl")
@sem("srlw")
def srlw(b, i): F.rr_w(b, i, "lshr")
@sem("sraw")
def sraw(b, i): F.rr_w(b, i, "ashr")


@sem("fence")
def fence(b, i): pass     # one hart, no devices: ordering is already total
@sem("ecall")
def ecall(b, i): b.trap("ecall")
@sem("ebreak")
def ebreak(b, i): b.trap("ebreak")
