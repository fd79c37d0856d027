"""Directed tests of the integer instructions: RV64I ALU, upper immediates, control
transfer, RV64M, and the compressed integer forms, on every accelerator.

Expected values are Python arithmetic written from the ISA manual's definitions (or
constants worked out by hand), never our engines' output. Most checks are batched: one
program per test (see directed_kit.Case).
"""

from __future__ import annotations

from tests.ir.directed_kit import (CODE_BASE, DATA_BASE, M64, Asm, Case, check_cases, covers,
                                   ins, run, s64, sext32, u64)

MIN64, MAX64 = 1 << 63, (1 << 63) - 1
ONES = M64

# Operand values that sit on every signed/unsigned boundary of 64 and 32 bits.
VALUES = [0, 1, 2, ONES, ONES - 1, MAX64, MIN64, MIN64 + 1, 0x7FFFFFFF, 0x80000000,
          0xFFFFFFFF, 0xFFFFFFFF80000000, 0x123456789ABCDEF0, 0xFEDCBA9876543210]
SHIFTS = [0, 1, 31, 32, 33, 63, 64, 64 + 31, ONES]     # counts are taken mod 64 (or 32)


def _shamt(b: int, bits: int = 64) -> int:
    return b & (bits - 1)


# ISA manual definitions, as Python
RR = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "sll": lambda a, b: a << _shamt(b),
    "slt": lambda a, b: int(s64(a) < s64(b)),
    "sltu": lambda a, b: int(a < b),
    "xor": lambda a, b: a ^ b,
    "srl": lambda a, b: a >> _shamt(b),
    "sra": lambda a, b: s64(a) >> _shamt(b),
    "or": lambda a, b: a | b,
    "and": lambda a, b: a & b,
    "addw": lambda a, b: sext32(a + b),
    "subw": lambda a, b: sext32(a - b),
    "sllw": lambda a, b: sext32((a & 0xFFFFFFFF) << _shamt(b, 32)),
    "srlw": lambda a, b: sext32((a & 0xFFFFFFFF) >> _shamt(b, 32)),
    "sraw": lambda a, b: sext32(s64(sext32(a)) >> _shamt(b, 32)),
}
RI = {  # immediate forms: same rule with the sign-extended 12-bit immediate
    "addi": "add", "slti": "slt", "sltiu": "sltu", "xori": "xor", "ori": "or", "andi": "and",
    "slli": "sll", "srli": "srl", "srai": "sra", "addiw": "addw", "slliw": "sllw",
    "srliw": "srlw", "sraiw": "sraw",
}


def _rr_pairs(op: str) -> list[tuple[int, int]]:
    if op in ("sll", "srl", "sra", "sllw", "srlw", "sraw"):
        return [(a, s) for a in (1, ONES, MIN64, 0x80000000, 0x123456789ABCDEF0,
                                 0xFFFFFFFF7FFFFFFF) for s in SHIFTS]
    return [(a, b) for a in VALUES for b in VALUES[::2]] + [(a, a) for a in VALUES]


@covers("add", "sub", "sll", "slt", "sltu", "xor", "srl", "sra", "or", "and",
        "addw", "subw", "sllw", "srlw", "sraw")
def test_register_register(accel):
    cases = []
    for op, fn in RR.items():
        for a, b in _rr_pairs(op):
            cases.append(Case(ins(op, rd=3, rs1=1, rs2=2), {"x3": u64(fn(a, b))},
                              xin={1: a, 2: b}, label=f"{op} {a:#x} {b:#x}"))
    check_cases(accel, cases)


IMMS = [0, 1, -1, 2047, -2048, 0x7FF, 0x555, -0x556]


@covers("addi", "slti", "sltiu", "xori", "ori", "andi", "slli", "srli", "srai",
        "addiw", "slliw", "srliw", "sraiw")
def test_register_immediate(accel):
    cases = []
    for op, base in RI.items():
        if op in ("slli", "srli", "srai"):
            imms = [0, 1, 31, 32, 63]
        elif op in ("slliw", "srliw", "sraiw"):
            imms = [0, 1, 15, 31]
        else:
            imms = IMMS
        srcs = VALUES[:: 1 if op.startswith(("s", "addiw")) else 2]
        for a in srcs:
            for imm in imms:
                want = RR[base](a, u64(imm))
                cases.append(Case(ins(op, rd=5, rs1=6, imm=imm), {"x5": u64(want)},
                                  xin={6: a}, label=f"{op} {a:#x} {imm}"))
    check_cases(accel, cases)


@covers("addi", "sltiu", "srai", "sraiw", "addiw", "sra", "slt", "sltu", "srliw", "sllw")
def test_alu_hand_values(accel):
    """A few results worked out by hand, independent of the Python rules above."""
    c = [
        Case(ins("addi", rd=5, rs1=6, imm=-1), {"x5": 0}, xin={6: 1}, label="1 + -1"),
        Case(ins("sltiu", rd=5, rs1=6, imm=-1), {"x5": 1}, xin={6: 0xFFFFFFFFFFFFFFFE},
             label="sltiu compares against 2**64-1"),
        Case(ins("sltiu", rd=5, rs1=6, imm=-1), {"x5": 0}, xin={6: ONES}, label="max"),
        Case(ins("srai", rd=5, rs1=6, imm=63), {"x5": ONES}, xin={6: MIN64}),
        Case(ins("sraiw", rd=5, rs1=6, imm=31), {"x5": ONES}, xin={6: 0x80000000}),
        Case(ins("sraiw", rd=5, rs1=6, imm=0), {"x5": 0x7FFFFFFF},
             xin={6: 0xFFFFFFFF7FFFFFFF}, label="sraiw 0 is sext.w"),
        Case(ins("addiw", rd=5, rs1=6, imm=1), {"x5": 0xFFFFFFFF80000000},
             xin={6: 0x7FFFFFFF}),
        Case(ins("addiw", rd=5, rs1=6, imm=0), {"x5": 0xFFFFFFFF87654321},
             xin={6: 0x1234567887654321}, label="sext.w"),
        Case(ins("srliw", rd=5, rs1=6, imm=0), {"x5": 0xFFFFFFFF80000000},
             xin={6: 0x80000000}, label="srliw by 0 still sign-extends"),
        Case(ins("sllw", rd=5, rs1=6, rs2=7), {"x5": 0xFFFFFFFF80000000},
             xin={6: 1, 7: 31 + 64}, label="sllw uses 5 bits of rs2"),
        Case(ins("sra", rd=5, rs1=6, rs2=7), {"x5": 0xFFFFFFFFFFFFFFFC},
             xin={6: 0xFFFFFFFFFFFFFFF0, 7: 0x102}, label="sra uses 6 bits of rs2"),
        Case(ins("slt", rd=5, rs1=6, rs2=7), {"x5": 1}, xin={6: MIN64, 7: MAX64}),
        Case(ins("sltu", rd=5, rs1=6, rs2=7), {"x5": 0}, xin={6: MIN64, 7: MAX64}),
        Case(ins("slt", rd=5, rs1=6, rs2=7), {"x5": 0}, xin={6: 5, 7: 5}),
    ]
    check_cases(accel, c)


@covers("add", "addi", "lui", "auipc", "jal", "ld", "mul", "sub")
def test_x0(accel):
    """Writes to x0 are discarded (whatever the instruction); x0 reads as zero."""
    a = Asm()
    a("addi", rd=0, rs1=0, imm=5)
    a("add", rd=0, rs1=1, rs2=1)
    a("lui", rd=0, imm=0x12345000)
    a("auipc", rd=0, imm=0x1000)
    a("ld", rd=0, rs1=2, imm=0)
    a("mul", rd=0, rs1=1, rs2=1)
    a("jal", rd=0, imm=4)                      # x0 as link register: plain jump
    a("add", rd=10, rs1=0, rs2=0)              # x0 as both sources
    a("sub", rd=11, rs1=0, rs2=1)              # 0 - x1
    a("addi", rd=12, rs1=0, imm=-7)            # li
    a("add", rd=13, rs1=1, rs2=0)              # mv
    a.ecall()
    r = run(accel, a, x={1: 0x1234, 2: DATA_BASE, 10: 99}, data=(0xAB).to_bytes(8, "little"))
    assert r.why == "ecall" and r.exit.executed == 11
    assert r.x[0] == 0
    assert (r.x[10], r.x[11], r.x[12], r.x[13]) == (0, u64(-0x1234), u64(-7), 0x1234)


@covers("lui", "auipc")
def test_upper_immediates(accel):
    a = Asm()
    a("lui", rd=5, imm=-4096)                  # 0xFFFFF000 -> sign-extended
    a("lui", rd=6, imm=-(1 << 31))             # 0x80000000 -> 0xFFFFFFFF80000000
    a("lui", rd=7, imm=0x7FFFF000)
    a("lui", rd=8, imm=0x1000)
    pc_auipc = a.pc
    a("auipc", rd=9, imm=0)
    a("auipc", rd=10, imm=-0x1000)
    a("auipc", rd=11, imm=0x7FFFF000)
    a("auipc", rd=12, imm=-(1 << 31))
    a.ecall()
    r = run(accel, a)
    assert r.why == "ecall"
    assert r.x[5] == 0xFFFFFFFFFFFFF000
    assert r.x[6] == 0xFFFFFFFF80000000
    assert r.x[7] == 0x7FFFF000
    assert r.x[8] == 0x1000
    assert r.x[9] == pc_auipc == CODE_BASE + 16
    assert r.x[10] == pc_auipc + 4 - 0x1000
    assert r.x[11] == pc_auipc + 8 + 0x7FFFF000
    assert r.x[12] == u64(pc_auipc + 12 - (1 << 31))


# -- M -------------------------------------------------------------------------------------

def _tdiv(a: int, b: int) -> int:
    """Division rounding toward zero (C / RISC-V), on Python ints."""
    q = abs(a) // abs(b)
    return -q if (a < 0) != (b < 0) else q


def _s32(v: int) -> int:
    return s64(sext32(v))


def _div(a, b):
    a, b = s64(a), s64(b)
    if b == 0:
        return -1
    if a == -(1 << 63) and b == -1:
        return a
    return _tdiv(a, b)


def _rem(a, b):
    a, b = s64(a), s64(b)
    if b == 0:
        return a
    if a == -(1 << 63) and b == -1:
        return 0
    return a - b * _tdiv(a, b)


def _divw(a, b):
    a, b = _s32(a), _s32(b)
    if b == 0:
        return -1
    if a == -(1 << 31) and b == -1:
        return a
    return sext32(_tdiv(a, b))


def _remw(a, b):
    a, b = _s32(a), _s32(b)
    if b == 0:
        return sext32(a)
    if a == -(1 << 31) and b == -1:
        return 0
    return sext32(a - b * _tdiv(a, b))


M = {
    "mul": lambda a, b: a * b,
    "mulh": lambda a, b: (s64(a) * s64(b)) >> 64,
    "mulhsu": lambda a, b: (s64(a) * b) >> 64,
    "mulhu": lambda a, b: (a * b) >> 64,
    "div": _div,
    "divu": lambda a, b: ONES if b == 0 else a // b,
    "rem": _rem,
    "remu": lambda a, b: a if b == 0 else a % b,
    "mulw": lambda a, b: sext32(a * b),
    "divw": _divw,
    "divuw": lambda a, b: ONES if b & 0xFFFFFFFF == 0 else
    sext32((a & 0xFFFFFFFF) // (b & 0xFFFFFFFF)),
    "remw": _remw,
    "remuw": lambda a, b: sext32(a) if b & 0xFFFFFFFF == 0 else
    sext32((a & 0xFFFFFFFF) % (b & 0xFFFFFFFF)),
}

M_VALUES = [0, 1, ONES, 2, ONES - 1, 7, u64(-7), MAX64, MIN64, 0x7FFFFFFF, 0x80000000,
            0xFFFFFFFF80000000, 0xFFFFFFFF, 0x100000000, 0x123456789ABCDEF0]


@covers(*M)
def test_multiply_divide(accel):
    cases = []
    for op, fn in M.items():
        for a in M_VALUES:
            for b in M_VALUES[::2] + [0, 0x100000000, ONES]:
                cases.append(Case(ins(op, rd=3, rs1=1, rs2=2), {"x3": u64(fn(a, b))},
                                  xin={1: a, 2: b}, label=f"{op} {a:#x} {b:#x}"))
    check_cases(accel, cases)


@covers("div", "divu", "rem", "remu", "divw", "divuw", "remw", "remuw", "mulh", "mulhsu",
        "mulhu", "mul", "mulw")
def test_multiply_divide_spec_table(accel):
    """The ISA manual's table of division special cases, and signed extremes of the
    multiplies, as hand-written constants."""
    X = 0x0123456789ABCDEF
    t = [
        ("div", X, 0, ONES), ("divu", X, 0, ONES), ("rem", X, 0, X), ("remu", X, 0, X),
        ("div", MIN64, ONES, MIN64), ("rem", MIN64, ONES, 0),
        ("divw", X, 0, ONES), ("divuw", X, 0, ONES),
        ("remw", X, 0, 0xFFFFFFFF89ABCDEF), ("remuw", X, 0, 0xFFFFFFFF89ABCDEF),
        ("remw", 0x12345678, 0xFFFFFFFF00000000, 0x12345678),     # divisor's low word is 0
        ("divw", 0x80000000, ONES, 0xFFFFFFFF80000000), ("remw", 0x80000000, ONES, 0),
        ("divw", 0x1234567880000000, 0xABCDEF00FFFFFFFF, 0xFFFFFFFF80000000),
        ("divuw", 0xFFFFFFFF00000007, 0x100000002, 3),
        ("div", u64(-7), 2, u64(-3)), ("rem", u64(-7), 2, u64(-1)),
        ("div", 7, u64(-2), u64(-3)), ("rem", 7, u64(-2), 1),
        ("divu", u64(-7), 2, 0x7FFFFFFFFFFFFFFC), ("remu", u64(-7), 2, 1),
        ("mulh", MIN64, MIN64, 0x4000000000000000),
        ("mulh", MIN64, MAX64, 0xC000000000000000),
        ("mulh", ONES, ONES, 0), ("mulhu", ONES, ONES, ONES - 1),
        ("mulhsu", ONES, ONES, ONES), ("mulhsu", MIN64, ONES, 0x8000000000000000),
        ("mulhsu", 1, ONES, 0), ("mul", MIN64, ONES, MIN64),
        ("mulw", 0x10000, 0x10000, 0), ("mulw", 0x7FFFFFFF, 2, 0xFFFFFFFFFFFFFFFE),
        ("mulw", 0xFFFFFFFF00000003, 0x1234567800000005, 15),
    ]
    cases = [Case(ins(op, rd=3, rs1=1, rs2=2), {"x3": want}, xin={1: a, 2: b},
                  label=f"{op} {a:#x} {b:#x}") for op, a, b, want in t]
    check_cases(accel, cases)


# -- control -------------------------------------------------------------------------------

BRANCH = {
    "beq": lambda a, b: a == b, "bne": lambda a, b: a != b,
    "blt": lambda a, b: s64(a) < s64(b), "bge": lambda a, b: s64(a) >= s64(b),
    "bltu": lambda a, b: a < b, "bgeu": lambda a, b: a >= b,
}
BRANCH_PAIRS = [(0, 0), (1, 2), (2, 1), (ONES, 1), (1, ONES), (MIN64, MAX64), (MAX64, MIN64),
                (MIN64, MIN64), (ONES, ONES), (0x80000000, 0x7FFFFFFF)]


@covers("beq", "bne", "blt", "bge", "bltu", "bgeu", "c.beqz", "c.bnez")
def test_branches_taken_and_not(accel):
    """x3 = 1 if the branch skipped the instruction after it, else 0."""
    cases = []
    for op, fn in BRANCH.items():
        for a, b in BRANCH_PAIRS:
            cases.append(Case([ins("addi", rd=3, rs1=0, imm=1),
                               ins(op, rs1=1, rs2=2, imm=8),
                               ins("addi", rd=3, rs1=0, imm=0)],
                              {"x3": int(fn(a, b))}, xin={1: a, 2: b},
                              label=f"{op} {a:#x} {b:#x}"))
    for op, fn in (("c.beqz", lambda a: a == 0), ("c.bnez", lambda a: a != 0)):
        for a in (0, 1, ONES, MIN64, 0x100000000):
            cases.append(Case([ins("c.li", rd=9, imm=1),
                               ins(op, rs1=8, imm=4),
                               ins("c.li", rd=9, imm=0)],
                              {"x9": int(fn(a))}, xin={8: a}, label=f"{op} {a:#x}"))
    check_cases(accel, cases)
    assert sum(int(BRANCH[op](a, b)) for op in BRANCH for a, b in BRANCH_PAIRS) > 20


@covers("bne", "blt", "c.bnez", "c.beqz", "addi", "c.addi")
def test_backward_branches_loop(accel):
    a = Asm()
    a("addi", rd=5, rs1=0, imm=10)
    a.label("loop1")
    a("addi", rd=6, rs1=6, imm=3)
    a("addi", rd=5, rs1=5, imm=-1)
    a("bne", rs1=5, rs2=0, imm="loop1")
    a("addi", rd=8, rs1=0, imm=5)
    a.label("loop2")
    a("c.addi", rd=9, imm=7)
    a("c.addi", rd=8, imm=-1)
    a("c.bnez", rs1=8, imm="loop2")
    a("addi", rd=10, rs1=0, imm=-3)
    a.label("loop3")
    a("addi", rd=10, rs1=10, imm=1)
    a("blt", rs1=10, rs2=0, imm="loop3")
    a("c.beqz", rs1=8, imm="end")             # forward, taken
    a("addi", rd=11, rs1=0, imm=1)            # skipped
    a.label("end")
    a.ecall()
    r = run(accel, a)
    assert r.why == "ecall"
    assert (r.x[5], r.x[6], r.x[8], r.x[9], r.x[10], r.x[11]) == (0, 30, 0, 35, 0, 0)
    assert r.exit.executed == 1 + 30 + 1 + 15 + 1 + 6 + 1


@covers("jal", "jalr", "c.j", "c.jr", "c.jalr")
def test_jumps_and_links(accel):
    """Link values (pc+4, pc+2 for compressed), targets, bit 0 of jalr cleared, rd == rs1,
    negative offsets. Every skipped instruction would set x20."""
    a = Asm()
    j1 = a.pc
    a("jal", rd=4, imm="L1")
    a("addi", rd=20, rs1=0, imm=1)
    a.label("L1")
    a("jal", rd=0, imm="L2")
    a("addi", rd=20, rs1=0, imm=2)
    a.label("back")                            # reached by a backward jal
    a("addi", rd=21, rs1=0, imm=1)
    j3 = a.pc
    a("jalr", rd=7, rs1=5, imm=0)             # x5 = L3 + 1: bit 0 is cleared
    a("addi", rd=20, rs1=0, imm=3)
    a.label("L2")
    j2 = a.pc
    a("jal", rd=3, imm="back")
    a("addi", rd=20, rs1=0, imm=4)
    a.label("L3")
    j4 = a.pc
    a("jalr", rd=8, rs1=6, imm=100)           # x6 = L4 - 100
    a("addi", rd=20, rs1=0, imm=5)
    a.label("L4")
    j5 = a.pc
    a("jalr", rd=9, rs1=9, imm=-4)            # rd == rs1: target from the old x9 (L5 + 4)
    a("addi", rd=20, rs1=0, imm=6)
    a.label("L5")
    j6 = a.pc
    a("c.jalr", rs1=10)                        # x10 = L6
    a("addi", rd=20, rs1=0, imm=7)
    a.label("L6")
    a("c.jr", rs1=11)                          # x11 = L7
    a("addi", rd=20, rs1=0, imm=8)
    a.label("L7")
    a("c.j", imm="L8")
    a("c.li", rd=20, imm=9)
    a.label("L8")
    j9 = a.pc
    a("jalr", rd=12, rs1=12, imm=0)           # rd == rs1 again, no offset (x12 = L9)
    a("addi", rd=20, rs1=0, imm=10)
    a.label("L9")
    a.ecall()
    a.build()
    x = {5: a.addr("L3") + 1, 6: a.addr("L4") - 100, 9: a.addr("L5") + 4,
         10: a.addr("L6"), 11: a.addr("L7"), 12: a.addr("L9")}
    r = run(accel, a, x=x)
    assert r.why == "ecall", r.exit
    assert r.x[20] == 0 and r.x[21] == 1
    assert r.x[4] == j1 + 4
    assert r.x[3] == j2 + 4
    assert r.x[7] == j3 + 4
    assert r.x[8] == j4 + 4
    assert r.x[9] == j5 + 4
    assert r.x[1] == j6 + 2                    # c.jalr links ra = pc + 2
    assert r.x[12] == j9 + 4
    assert r.pc == a.addr("L9")
    assert r.exit.executed == 11


@covers("c.jalr")
def test_c_jalr_rs1_is_ra(accel):
    """c.jalr ra: the target is the old ra, then ra = pc + 2."""
    a = Asm()
    a("c.jalr", rs1=1)
    a("c.li", rd=20, imm=1)                    # skipped
    a.label("T")
    a.ecall()
    a.build()
    r = run(accel, a, x={1: a.addr("T")})
    assert r.why == "ecall" and r.x[20] == 0 and r.x[1] == CODE_BASE + 2


# -- compressed integer forms --------------------------------------------------------------

@covers("c.addi", "c.addiw", "c.li", "c.addi16sp", "c.lui", "c.srli", "c.srai", "c.andi",
        "c.sub", "c.xor", "c.or", "c.and", "c.subw", "c.addw", "c.slli", "c.mv", "c.add",
        "c.addi4spn")
def test_compressed_alu(accel):
    A, B = 0x123456789ABCDEF0, 0xFFFFFFFF80000001
    t = [
        (ins("c.addi", rd=8, imm=-32), {8: A}, "x8", A - 32),
        (ins("c.addi", rd=15, imm=31), {15: ONES}, "x15", 30),
        (ins("c.addi", rd=0, imm=0), {}, "x0", 0),                      # c.nop
        (ins("c.addiw", rd=8, imm=1), {8: 0x7FFFFFFF}, "x8", 0xFFFFFFFF80000000),
        (ins("c.addiw", rd=20, imm=0), {20: A}, "x20", 0xFFFFFFFF9ABCDEF0),  # sext.w
        (ins("c.addiw", rd=9, imm=-1), {9: 0}, "x9", ONES),
        (ins("c.li", rd=21, imm=-32), {21: A}, "x21", u64(-32)),
        (ins("c.li", rd=21, imm=31), {21: A}, "x21", 31),
        (ins("c.addi16sp", imm=-512), {2: 0x10000}, "x2", 0x10000 - 512),
        (ins("c.addi16sp", imm=496), {2: 0x10000}, "x2", 0x10000 + 496),
        (ins("c.addi4spn", rd=8, imm=1020), {2: 0x10000}, "x8", 0x10000 + 1020),
        (ins("c.addi4spn", rd=15, imm=4), {2: ONES}, "x15", 3),
        (ins("c.lui", rd=10, imm=-4096), {10: 5}, "x10", 0xFFFFFFFFFFFFF000),
        (ins("c.lui", rd=10, imm=0x1F000), {10: 5}, "x10", 0x1F000),
        (ins("c.lui", rd=10, imm=-(1 << 17)), {10: 5}, "x10", 0xFFFFFFFFFFFE0000),
        (ins("c.srli", rd=8, imm=63), {8: MIN64}, "x8", 1),
        (ins("c.srli", rd=8, imm=32), {8: A}, "x8", A >> 32),
        (ins("c.srli", rd=8, imm=1), {8: ONES}, "x8", MAX64),
        (ins("c.srai", rd=9, imm=63), {9: MIN64}, "x9", ONES),
        (ins("c.srai", rd=9, imm=4), {9: A}, "x9", A >> 4),
        (ins("c.srai", rd=9, imm=33), {9: 0xFEDCBA9876543210}, "x9",
         u64(s64(0xFEDCBA9876543210) >> 33)),
        (ins("c.andi", rd=10, imm=-16), {10: ONES}, "x10", u64(-16)),
        (ins("c.andi", rd=10, imm=15), {10: A}, "x10", 0),
        (ins("c.andi", rd=10, imm=0x1F), {10: 0x3F}, "x10", 0x1F),
        (ins("c.sub", rd=8, rs2=9), {8: 0, 9: 1}, "x8", ONES),
        (ins("c.xor", rd=8, rs2=9), {8: A, 9: ONES}, "x8", A ^ ONES),
        (ins("c.or", rd=8, rs2=9), {8: A, 9: B}, "x8", A | B),
        (ins("c.and", rd=8, rs2=9), {8: A, 9: B}, "x8", A & B),
        (ins("c.subw", rd=8, rs2=9), {8: 0x80000000, 9: 1}, "x8", 0x7FFFFFFF),
        (ins("c.subw", rd=8, rs2=9), {8: 0, 9: 0x80000000}, "x8", 0xFFFFFFFF80000000),
        (ins("c.addw", rd=8, rs2=9), {8: 0x7FFFFFFF, 9: 0x100000001}, "x8",
         0xFFFFFFFF80000000),
        (ins("c.slli", rd=20, imm=63), {20: 3}, "x20", MIN64),
        (ins("c.slli", rd=20, imm=1), {20: A}, "x20", u64(A << 1)),
        (ins("c.mv", rd=22, rs2=23), {22: 1, 23: A}, "x22", A),
        (ins("c.add", rd=22, rs2=23), {22: ONES, 23: 2}, "x22", 1),
    ]
    cases = [Case(i, {out: want}, xin=xin, label=f"{i[0]} {i[1]}") for i, xin, out, want in t]
    check_cases(accel, cases)


@covers("c.li", "c.mv", "c.add", "c.slli", "c.lui")
def test_compressed_hints_with_rd_zero(accel):
    """HINT encodings (rd = x0) execute as no-ops and never write x0."""
    a = Asm()
    a("c.li", rd=0, imm=5)
    a("c.mv", rd=0, rs2=5)
    a("c.add", rd=0, rs2=5)
    a("c.slli", rd=0, imm=3)
    a("c.lui", rd=0, imm=0x1000)
    a("add", rd=6, rs1=0, rs2=0)
    a.ecall()
    r = run(accel, a, x={5: 77, 6: 1})
    assert r.why == "ecall" and r.exit.executed == 6
    assert r.x[0] == 0 and r.x[5] == 77 and r.x[6] == 0


def test_reference_division_helper():
    """The test's own rounding-toward-zero helper (sanity)."""
    assert _tdiv(-7, 2) == -3 and _tdiv(7, -2) == -3 and _tdiv(-7, -2) == 3
    assert u64(_rem(u64(-7), 2)) == u64(-1)

