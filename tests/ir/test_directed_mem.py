"""Directed tests of memory access: every load and store width (compressed and FP forms
included), sign/zero extension, misaligned accesses (allowed in Linux user mode, also across
a page boundary), precise faults, and the A extension (LR/SC, every AMO, misaligned and
read-only atomics), on every accelerator.

Memory layout (runtime.bare): code at CODE_BASE (r-x), a 16 KiB data window at DATA_BASE
(rw-), nothing mapped below it or after DATA_END. Expected memory contents are computed by
applying the stores to a Python bytearray.
"""

from __future__ import annotations

import pytest

from dbtlab.ir.state import FAULT_FETCH, FAULT_LOAD, FAULT_MISALIGNED, FAULT_STORE
from dbtlab.runtime.linux.memory import PROT_READ
from tests.ir.directed_kit import (CODE_BASE, DATA_BASE, DATA_END, M64, PAGE, SCRATCH, Asm,
                                   Case, check_cases, check_precise_stops, covers, ins, machine,
                                   pattern_state, run, sext32, snapshot, u64)

SCRATCH_SIZE = DATA_END - SCRATCH           # 8 KiB; a page boundary at SCRATCH + PAGE
BOUNDARY = SCRATCH + PAGE


def _pattern(n: int) -> bytes:
    """Bytes with and without the top bit set, none repeating within 256."""
    return bytes(((i * 37) ^ (i >> 8) * 11 ^ 0x80) & 0xFF for i in range(n))


SCRATCH_BYTES = _pattern(SCRATCH_SIZE)


def _mem(addr: int, n: int, signed: bool) -> int:
    off = addr - SCRATCH
    return u64(int.from_bytes(SCRATCH_BYTES[off:off + n], "little", signed=signed))


LOADS = {"lb": (1, True), "lbu": (1, False), "lh": (2, True), "lhu": (2, False),
         "lw": (4, True), "lwu": (4, False), "ld": (8, True)}


@covers("lb", "lbu", "lh", "lhu", "lw", "lwu", "ld")
def test_loads_widths_extension_misalignment(accel):
    """Every width at every misalignment 0..7, both signs of the top byte, positive and
    negative offsets, and straddling the page boundary inside the data window."""
    cases = []
    for op, (n, signed) in LOADS.items():
        for base in (SCRATCH + 0x100, SCRATCH + 0x141, BOUNDARY - 8):
            for mis in range(8):
                addr = base + mis
                for imm in (0, 5, -3):
                    cases.append(Case(ins(op, rd=5, rs1=6, imm=imm),
                                      {"x5": _mem(addr, n, signed)}, xin={6: addr - imm},
                                      label=f"{op} @{addr:#x} imm {imm}"))
        # rd == rs1
        cases.append(Case(ins(op, rd=6, rs1=6, imm=-2048), {"x6": _mem(BOUNDARY - 1, n, signed)},
                          xin={6: BOUNDARY - 1 + 2048}, label=f"{op} rd == rs1"))
    # the pattern has bytes of both signs: make sure sign extension was really exercised
    assert {SCRATCH_BYTES[k] >> 7 for k in range(0x100, 0x108)} == {0, 1}
    check_cases(accel, cases, scratch=SCRATCH_BYTES)


@covers("c.lw", "c.ld", "c.lwsp", "c.ldsp", "flw", "fld", "c.fld", "c.fldsp")
def test_compressed_and_fp_loads(accel):
    cases = []
    for k in range(4):
        a = SCRATCH + 0x200 + 4 * k
        cases.append(Case(ins("c.lw", rd=9, rs1=10, imm=4 * k), {"x9": _mem(a, 4, True)},
                          xin={10: SCRATCH + 0x200}, label=f"c.lw {k}"))
        cases.append(Case(ins("c.lwsp", rd=20, imm=4 * k + 240), {"x20": _mem(a + 240, 4, True)},
                          xin={2: SCRATCH + 0x200}, label=f"c.lwsp {k}"))
        a = SCRATCH + 0x300 + 8 * k
        cases.append(Case(ins("c.ld", rd=15, rs1=8, imm=8 * k), {"x15": _mem(a, 8, True)},
                          xin={8: SCRATCH + 0x300}, label=f"c.ld {k}"))
        cases.append(Case(ins("c.ldsp", rd=1, imm=8 * k + 248), {"x1": _mem(a + 248, 8, True)},
                          xin={2: SCRATCH + 0x300}, label=f"c.ldsp {k}"))
        cases.append(Case(ins("c.fld", rd=8, rs1=11, imm=8 * k), {"f8": _mem(a, 8, True)},
                          xin={11: SCRATCH + 0x300}, label=f"c.fld {k}"))
        cases.append(Case(ins("c.fldsp", rd=31, imm=8 * k + 8), {"f31": _mem(a + 8, 8, True)},
                          xin={2: SCRATCH + 0x300}, label=f"c.fldsp {k}"))
    # largest offsets of the compressed forms
    cases += [
        Case(ins("c.lw", rd=9, rs1=10, imm=124), {"x9": _mem(SCRATCH + 124, 4, True)},
             xin={10: SCRATCH}, label="c.lw 124"),
        Case(ins("c.ld", rd=9, rs1=10, imm=248), {"x9": _mem(SCRATCH + 248, 8, True)},
             xin={10: SCRATCH}, label="c.ld 248"),
        Case(ins("c.lwsp", rd=9, imm=252), {"x9": _mem(SCRATCH + 252, 4, True)},
             xin={2: SCRATCH}, label="c.lwsp 252"),
        Case(ins("c.ldsp", rd=9, imm=504), {"x9": _mem(SCRATCH + 504, 8, True)},
             xin={2: SCRATCH}, label="c.ldsp 504"),
        Case(ins("c.fldsp", rd=9, imm=504), {"f9": _mem(SCRATCH + 504, 8, True)},
             xin={2: SCRATCH}, label="c.fldsp 504"),
    ]
    # flw NaN-boxes the raw bits (even a signalling-NaN pattern); fld loads raw bits;
    # both also work misaligned and across the page boundary
    for addr in (SCRATCH + 0x40, SCRATCH + 0x43, BOUNDARY - 2):
        cases.append(Case(ins("flw", rd=3, rs1=5, imm=0),
                          {"f3": 0xFFFFFFFF00000000 | _mem(addr, 4, False)},
                          xin={5: addr}, label=f"flw @{addr:#x}"))
        cases.append(Case(ins("fld", rd=4, rs1=5, imm=-16), {"f4": _mem(addr, 8, False)},
                          xin={5: addr + 16}, label=f"fld @{addr:#x}"))
    check_cases(accel, cases, scratch=SCRATCH_BYTES)


STORE_WIDTH = {"sb": 1, "sh": 2, "sw": 4, "sd": 8, "c.sw": 4, "c.sd": 8, "c.swsp": 4,
               "c.sdsp": 8, "fsw": 4, "fsd": 8, "c.fsd": 8, "c.fsdsp": 8}
SP_FORMS = ("c.swsp", "c.sdsp", "c.fsdsp")
FP_STORES = ("fsw", "fsd", "c.fsd", "c.fsdsp")


@covers("sb", "sh", "sw", "sd", "c.sw", "c.sd", "c.swsp", "c.sdsp", "fsw", "fsd", "c.fsd",
        "c.fsdsp")
def test_stores_widths_and_misalignment(accel):
    """Stores write exactly their low bytes, at every misalignment and across the page
    boundary; FP stores write raw bits (fsw: the low 32, boxed or not)."""
    V = 0x8877665544332211
    x = {5: V, 6: SCRATCH, 7: BOUNDARY, 2: SCRATCH + 0x800, 8: SCRATCH + 0x400,
         9: 0xA5A5A5A5A5A5A5A5, 15: 0x0F0F0F0F0F0F0F0F}
    f = {1: 0xFFFFFFFF3FC00001,          # a boxed single
         2: 0x000000007F800001,          # not boxed: fsw still stores the raw low 32 bits
         8: 0x0123456789ABCDEF, 9: 0xFEDCBA9876543210}
    a = Asm()
    expect = bytearray(SCRATCH_BYTES)           # stores land on non-zero bytes

    def store(op, rs1, imm, rs2):
        n = STORE_WIDTH[op]
        value = (f if op in FP_STORES else x).get(rs2, 0)
        if op in SP_FORMS:
            assert rs1 == 2
            a(op, rs2=rs2, imm=imm)
        else:
            a(op, rs1=rs1, rs2=rs2, imm=imm)
        off = x[rs1] + imm - SCRATCH
        expect[off:off + n] = (value & ((1 << (8 * n)) - 1)).to_bytes(n, "little")

    off = 0
    for op in ("sb", "sh", "sw", "sd"):
        for mis in range(8):                     # every misalignment, in its own window
            store(op, 6, off + mis, 5)
            off += 16
    # straddling the page boundary, in sequence (later stores overwrite earlier ones
    # exactly as in the Python model)
    store("sh", 7, -1, 5)
    store("sw", 7, -3, 9)
    store("sd", 7, -5, 5)
    store("sd", 7, 3, 9)
    store("fsw", 7, -2, 1)
    store("fsd", 7, -6 + 64, 9)
    store("sb", 7, -2048, 5)                     # extreme offsets
    store("sd", 7, 2047 - 7, 5)
    # compressed stores: x8..x15 for the primed forms, x2 for the sp forms
    store("c.sw", 8, 124, 9)
    store("c.sd", 8, 248, 9)
    store("c.sw", 8, 0, 15)
    store("c.sd", 8, 16, 15)
    store("c.swsp", 2, 252, 5)
    store("c.sdsp", 2, 504, 5)
    store("c.swsp", 2, 4, 0)                     # x0 as the source stores zeros
    store("c.sdsp", 2, 16, 0)
    # FP stores
    store("fsw", 6, 0x600, 1)
    store("fsw", 6, 0x605, 2)
    store("fsd", 6, 0x611, 8)
    store("c.fsd", 8, 200, 9)
    store("c.fsdsp", 2, 496, 8)
    a.ecall()
    r = run(accel, a, x=x, f=f, data=bytes(SCRATCH - DATA_BASE) + SCRATCH_BYTES)
    assert r.why == "ecall"
    got = r.data[SCRATCH - DATA_BASE:]
    diff = [f"{SCRATCH + i:#x}: {got[i]:#04x} != {expect[i]:#04x}"
            for i in range(SCRATCH_SIZE) if got[i] != expect[i]]
    assert not diff, "\n".join(diff[:40])
    assert r.x[5] == V and r.f[2] == f[2]          # sources untouched
    assert sum(1 for p, q in zip(expect, SCRATCH_BYTES) if p != q) > 200


@covers("lw", "ld", "lhu", "c.lw")
def test_code_page_is_readable(accel):
    a = Asm()
    a("lw", rd=5, rs1=6, imm=0)
    a("lhu", rd=7, rs1=6, imm=2)
    a("ld", rd=8, rs1=6, imm=0)
    a("c.lw", rd=9, rs1=10, imm=4)
    a.ecall()
    code = a.build()
    r = run(accel, a, x={6: CODE_BASE, 10: CODE_BASE})
    assert r.why == "ecall"
    assert r.x[5] == sext32(int.from_bytes(code[0:4], "little"))
    assert r.x[7] == int.from_bytes(code[2:4], "little")
    assert r.x[8] == int.from_bytes(code[0:8], "little")
    assert r.x[9] == sext32(int.from_bytes(code[4:8], "little"))


# -- precise faults ------------------------------------------------------------------------

UNMAPPED = DATA_END + 0x100        # nothing is mapped after the data window
FCSR_BEFORE = (0x15, 3)            # fflags, frm: a fault must not touch them either


def check_precise_faults(accel, steps, regs: dict[int, int], data: bytes = b"") -> None:
    """Each (insn, fault kind, address) step must stop with exactly that fault and change
    nothing (see directed_kit.check_precise_stops)."""
    check_precise_stops(accel, [(i, "fault", k, a) for i, k, a in steps], regs, data=data,
                        fflags=FCSR_BEFORE[0], frm=FCSR_BEFORE[1])


# base registers for the fault tests
FAULT_REGS = {1: UNMAPPED, 3: DATA_BASE, 4: DATA_END - 4, 2: UNMAPPED - 256, 8: 0,
              9: u64(-16), 10: DATA_END - 1, 11: 1 << 38, 12: CODE_BASE}


@covers("lb", "lh", "lw", "ld", "lbu", "lhu", "lwu", "flw", "fld", "c.lw", "c.ld", "c.lwsp",
        "c.ldsp", "c.fld", "c.fldsp")
def test_load_faults_are_precise(accel):
    """Loads from unmapped memory (after and before the window, page 0, beyond the guest
    address space, wrapping around 2**64, straddling into an unmapped page: the first
    unmapped byte is the fault address) change nothing; rd == rs1 keeps its value."""
    L = FAULT_LOAD
    steps = [
        (ins("lb", rd=13, rs1=1, imm=0), L, UNMAPPED),
        (ins("lbu", rd=13, rs1=3, imm=-1), L, DATA_BASE - 1),
        (ins("lh", rd=13, rs1=1, imm=2047), L, UNMAPPED + 2047),
        (ins("lhu", rd=10, rs1=10, imm=0), L, DATA_END),       # rd == rs1, straddling
        (ins("lw", rd=13, rs1=4, imm=2), L, DATA_END),
        (ins("lwu", rd=13, rs1=11, imm=0), L, 1 << 38),        # beyond the address space
        (ins("ld", rd=4, rs1=4, imm=0), L, DATA_END),          # rd == rs1, straddling
        (ins("ld", rd=14, rs1=9, imm=0), L, u64(-16)),         # top of the address space
        (ins("ld", rd=14, rs1=9, imm=20), L, 4),               # wraps around to page 0
        (ins("ld", rd=14, rs1=0, imm=-8), L, u64(-8)),         # rs1 = x0
        (ins("flw", rd=5, rs1=1, imm=0), L, UNMAPPED),
        (ins("fld", rd=6, rs1=4, imm=1), L, DATA_END),
        (ins("c.lw", rd=9, rs1=8, imm=4), L, 4),
        (ins("c.ld", rd=10, rs1=8, imm=8), L, 8),
        (ins("c.lwsp", rd=15, imm=252), L, UNMAPPED - 256 + 252),
        (ins("c.ldsp", rd=2, imm=256), L, UNMAPPED),           # rd == sp
        (ins("c.fld", rd=9, rs1=10, imm=0), L, DATA_END),
        (ins("c.fldsp", rd=1, imm=8), L, UNMAPPED - 248),
    ]
    check_precise_faults(accel, steps, FAULT_REGS)


@covers("sb", "sh", "sw", "sd", "fsw", "fsd", "c.sw", "c.sd", "c.swsp", "c.sdsp", "c.fsd",
        "c.fsdsp")
def test_store_faults_are_precise(accel):
    """Stores to unmapped memory and to the read-only code page fault at the exact address
    and write nothing, not even the mapped part of a straddling store."""
    S = FAULT_STORE
    steps = [
        (ins("sb", rs1=1, rs2=5, imm=0), S, UNMAPPED),
        (ins("sh", rs1=3, rs2=5, imm=-2), S, DATA_BASE - 2),
        (ins("sh", rs1=10, rs2=5, imm=0), S, DATA_END),        # straddling: nothing written
        (ins("sw", rs1=4, rs2=5, imm=1), S, DATA_END),
        (ins("sd", rs1=4, rs2=5, imm=0), S, DATA_END),
        (ins("sd", rs1=11, rs2=5, imm=-8), S, (1 << 38) - 8),
        (ins("sd", rs1=9, rs2=5, imm=16), S, 0),               # wraps to page 0
        (ins("sw", rs1=12, rs2=5, imm=4), S, CODE_BASE + 4),   # the code page is r-x
        (ins("sb", rs1=12, rs2=0, imm=0), S, CODE_BASE),
        (ins("sd", rs1=12, rs2=5, imm=0x40), S, CODE_BASE + 0x40),
        (ins("fsw", rs1=1, rs2=3, imm=0), S, UNMAPPED),
        (ins("fsd", rs1=12, rs2=3, imm=8), S, CODE_BASE + 8),
        (ins("fsd", rs1=4, rs2=3, imm=-1), S, DATA_END),
        (ins("c.sw", rs1=8, rs2=9, imm=0), S, 0),
        (ins("c.sd", rs1=12, rs2=9, imm=0), S, CODE_BASE),
        (ins("c.swsp", rs2=9, imm=4), S, UNMAPPED - 252),
        (ins("c.sdsp", rs2=2, imm=256), S, UNMAPPED),
        (ins("c.fsd", rs1=15, rs2=9, imm=0), S, DATA_END),     # straddling
        (ins("c.fsdsp", rs2=9, imm=8), S, UNMAPPED - 248),
    ]
    regs = dict(FAULT_REGS)
    regs[15] = DATA_END - 2
    check_precise_faults(accel, steps, regs, data=bytes(range(256)) * 64)


@covers("addi", "sd", "ld", "fadd.d", "fsd")
def test_fault_in_the_middle_of_a_block(accel):
    """The instructions before the faulting one keep their effects (registers, memory,
    fflags); the faulting one and those after it have none; executed counts the former."""
    a = Asm()
    a("addi", rd=5, rs1=0, imm=123)
    a("sd", rs1=6, rs2=5, imm=8)
    a("fadd.d", rd=1, rs1=2, rs2=3, rm=0)        # 1 + 2**-60: inexact
    fault_pc = a.pc
    a("ld", rd=7, rs1=8, imm=0)
    a("addi", rd=9, rs1=0, imm=1)
    a("fsd", rs1=6, rs2=1, imm=16)
    a.ecall()
    x, f = pattern_state()
    x.update({6: DATA_BASE, 8: UNMAPPED})
    f.update({2: 0x3FF0000000000000, 3: 0x3C30000000000000})
    r = run(accel, a, x=x, f=f, data=bytes(32))
    assert (r.why, r.exit.fault_kind, r.exit.fault_addr) == ("fault", FAULT_LOAD, UNMAPPED)
    assert r.pc == fault_pc and r.exit.executed == 3
    assert r.x[5] == 123 and r.mem(DATA_BASE + 8) == 123
    assert r.f[1] == 0x3FF0000000000000 and r.fflags == 1
    assert r.x[7] == x[7] and r.x[9] == x[9] and r.mem(DATA_BASE + 16) == 0
    assert [r.x[k] for k in range(32) if k not in (5,)] == \
        [0] + [x[k] for k in range(1, 32) if k != 5]


@covers("ld", "addi", "bne")
def test_fault_in_a_loop_after_iterations(accel):
    """A fault in a block that already ran (translated and chained) twice: executed and
    the registers count exactly the completed instructions."""
    a = Asm()
    a.label("loop")
    a("addi", rd=10, rs1=10, imm=1)
    fault_pc = a.pc
    a("ld", rd=7, rs1=8, imm=0)
    a("addi", rd=8, rs1=8, imm=0x7F8)
    a("addi", rd=8, rs1=8, imm=8)
    a("bne", rs1=8, rs2=0, imm="loop")
    a.ecall()
    r = run(accel, a, x={8: DATA_END - 0x1000, 7: 0x77})
    assert (r.why, r.exit.fault_kind, r.exit.fault_addr) == ("fault", FAULT_LOAD, DATA_END)
    assert r.pc == fault_pc
    assert r.x[10] == 3 and r.x[8] == DATA_END and r.x[7] == 0
    assert r.exit.executed == 2 * 5 + 1


@covers("jalr", "jal")
def test_fetch_faults(accel):
    """Jumping to unmapped or non-executable memory: the jump completes (its link is
    written), then the fetch faults at the target, which is the reported pc."""
    for target, link_insn in ((UNMAPPED, "jalr"), (DATA_BASE + 0x10, "jalr"),
                              (DATA_BASE, "jal")):
        a = Asm()
        a("addi", rd=6, rs1=0, imm=1)
        jpc = a.pc
        if link_insn == "jalr":
            a("jalr", rd=1, rs1=5, imm=0)
        else:
            a("jal", rd=1, imm=DATA_BASE - jpc)
        a.ecall()
        r = run(accel, a, x={5: target})
        assert (r.why, r.exit.fault_kind, r.exit.fault_addr) == ("fault", FAULT_FETCH, target)
        assert r.pc == target and r.x[1] == jpc + 4 and r.x[6] == 1
        assert r.exit.executed == 2


# -- A: LR/SC ------------------------------------------------------------------------------

@covers("lr.w", "sc.w", "lr.d", "sc.d")
def test_lr_sc(accel):
    """SC succeeds (rd = 0, stores) only with a reservation on its address; it fails
    (rd = 1, no store) with no reservation, after another SC (every SC ends the
    reservation), and at another address. LR.W sign-extends."""
    A, B = DATA_BASE + 0x100, DATA_BASE + 0x200
    a = Asm()
    a("lr.w", rd=10, rs1=5, aq=0, rl=0)             # x10 = sext(mem[A])
    a("sc.w", rd=11, rs1=5, rs2=6, aq=0, rl=0)      # success
    a("sc.w", rd=12, rs1=5, rs2=7, aq=0, rl=0)      # sc after sc: fails
    a("sc.d", rd=13, rs1=8, rs2=6, aq=0, rl=0)      # no reservation: fails
    a("lr.d", rd=14, rs1=8, aq=1, rl=1)
    a("sc.d", rd=15, rs1=9, rs2=6, aq=0, rl=0)      # wrong address: fails
    a("sc.d", rd=16, rs1=8, rs2=6, aq=0, rl=0)      # the failed SC ended it: fails
    a("lr.d", rd=17, rs1=8, aq=0, rl=0)
    a("sc.d", rd=18, rs1=8, rs2=7, aq=1, rl=1)      # success
    a("lr.w", rd=19, rs1=20, aq=0, rl=0)            # lr.w to a positive word
    a("sc.w", rd=20, rs1=20, rs2=7, aq=0, rl=0)     # rd == rs1: success, rd = 0
    a.ecall()
    data = bytearray(0x400)
    data[0x100:0x108] = (0x1111111180000001).to_bytes(8, "little")
    data[0x200:0x210] = (0x0123456789ABCDEF).to_bytes(8, "little") * 2
    data[0x300:0x308] = (0x2222222212345678).to_bytes(8, "little")
    x = {5: A, 6: 0xAAAAAAAABBBBBBBB, 7: 0xCCCCCCCCDDDDDDDD, 8: B, 9: B + 8,
         20: DATA_BASE + 0x300}
    r = run(accel, a, x=x, data=bytes(data))
    assert r.why == "ecall"
    assert r.x[10] == 0xFFFFFFFF80000001
    assert (r.x[11], r.x[12], r.x[13]) == (0, 1, 1)
    assert r.mem(A) == 0x11111111BBBBBBBB               # sc.w stored the low word only
    assert r.x[14] == 0x0123456789ABCDEF
    assert (r.x[15], r.x[16]) == (1, 1)
    assert r.mem(B + 8) == 0x0123456789ABCDEF            # the failed SCs stored nothing
    assert (r.x[17], r.x[18]) == (0x0123456789ABCDEF, 0)
    assert r.mem(B) == 0xCCCCCCCCDDDDDDDD
    assert r.x[19] == 0x12345678 and r.x[20] == 0
    assert r.mem(DATA_BASE + 0x300) == 0x22222222DDDDDDDD
    assert r.res_valid == 0


@covers("lr.d", "sc.d", "lr.w", "sc.w", "jal", "beq")
def test_lr_sc_across_blocks_and_runs(accel):
    """The reservation lives in the architectural state: it survives block boundaries and
    runs split by the budget (one instruction per run included)."""
    A = DATA_BASE + 0x40
    a = Asm()
    a("lr.d", rd=10, rs1=5, aq=0, rl=0)
    a("jal", rd=0, imm=4)
    a("sc.d", rd=11, rs1=5, rs2=6, aq=0, rl=0)      # success
    a("lr.w", rd=12, rs1=5, aq=0, rl=0)
    a("beq", rs1=0, rs2=0, imm=4)
    a("sc.w", rd=13, rs1=7, rs2=6, aq=0, rl=0)      # another address: fails
    a("jal", rd=0, imm=4)
    a("sc.w", rd=14, rs1=5, rs2=0, aq=0, rl=0)      # reservation gone: fails
    a.ecall()
    for budgets in ([10 ** 6], [1] * 20, [2, 3, 10 ** 6]):
        with machine(accel, a, x={5: A, 6: 0x1122334455667788, 7: A + 4},
                     data=bytes(0x40) + (0x0000000180000000).to_bytes(8, "little")) as m:
            for b in budgets:
                ex = m.run(b)
                if ex.name != "budget":
                    break
            r = snapshot(m, ex)
        assert r.why == "ecall", budgets
        assert (r.x[10], r.x[11], r.x[13], r.x[14]) == (0x0000000180000000, 0, 1, 1), budgets
        assert r.x[12] == 0x55667788 and r.mem(A) == 0x1122334455667788, budgets


AMO_OPS = ("swap", "add", "xor", "and", "or", "min", "max", "minu", "maxu")


def _amo_ref(op: str, old: int, src: int, bits: int) -> int:
    m = (1 << bits) - 1
    old, src = old & m, src & m

    def sg(v):
        return v - (1 << bits) if v >> (bits - 1) else v
    return {
        "swap": src, "add": (old + src) & m, "xor": old ^ src, "and": old & src,
        "or": old | src, "min": old if sg(old) <= sg(src) else src,
        "max": old if sg(old) >= sg(src) else src, "minu": min(old, src),
        "maxu": max(old, src),
    }[op]


AMO_PAIRS = [(0x80000000, 1), (1, 0x80000000), (0x7FFFFFFF, 0xFFFFFFFF),
             (0xFFFFFFFF, 0x7FFFFFFF), (0x123456789ABCDEF0, 0x0FEDCBA987654321),
             (1 << 63, (1 << 63) - 1), ((1 << 63) - 1, 1 << 63), (M64, 0),
             (0x00000005FFFFFFFF, 0xABCDEF0000000001), (7, 7)]


@covers(*[f"amo{op}.{s}" for op in AMO_OPS for s in "wd"])
def test_amos(accel):
    """rd = the old memory value (.w: sign-extended 32 bits), memory = op(old, rs2);
    .w compares and combines only the low 32 bits of rs2 and leaves the upper word of
    memory alone; min/max are signed, minu/maxu unsigned."""
    cases = []
    scratch = bytearray()
    for op in AMO_OPS:
        for suffix, bits in (("w", 32), ("d", 64)):
            for mem0, src in AMO_PAIRS:
                addr = SCRATCH + len(scratch)
                scratch += mem0.to_bytes(8, "little")
                new = _amo_ref(op, mem0, src, bits)
                if bits == 32:
                    rd = sext32(mem0)
                    mem1 = (mem0 & ~0xFFFFFFFF) | new
                else:
                    rd, mem1 = mem0, new
                cases.append(Case([ins(f"amo{op}.{suffix}", rd=7, rs1=5, rs2=6, aq=0, rl=0),
                                   ins("ld", rd=8, rs1=5, imm=0)],
                                  {"x7": rd, "x8": mem1}, xin={5: addr, 6: src},
                                  label=f"amo{op}.{suffix} mem {mem0:#x} src {src:#x}"))
    # rd == rs2 and rd == rs1: the old value lands in rd after both were read
    scratch += (0x100).to_bytes(8, "little") * 2
    cases.append(Case([ins("amoadd.d", rd=6, rs1=5, rs2=6, aq=1, rl=0),
                       ins("ld", rd=8, rs1=5, imm=0)], {"x6": 0x100, "x8": 0x105},
                      xin={5: SCRATCH + len(scratch) - 16, 6: 5}, label="amoadd rd == rs2"))
    cases.append(Case([ins("amoswap.w", rd=5, rs1=5, rs2=6, aq=0, rl=1),
                       ins("ld", rd=8, rs1=9, imm=0)], {"x5": 0x100, "x8": 0xFFFFFFFF},
                      xin={5: SCRATCH + len(scratch) - 8, 6: M64,
                           9: SCRATCH + len(scratch) - 8}, label="amoswap.w rd == rs1"))
    assert len(scratch) <= SCRATCH_SIZE
    check_cases(accel, cases, scratch=bytes(scratch))
    # the hand-checked corners of signedness the Python model must also get right
    assert _amo_ref("min", 0x80000000, 1, 32) == 0x80000000
    assert _amo_ref("minu", 0x80000000, 1, 32) == 1
    assert _amo_ref("max", 0x7FFFFFFF, 0xFFFFFFFF, 32) == 0x7FFFFFFF
    assert _amo_ref("maxu", 0x7FFFFFFF, 0xFFFFFFFF, 32) == 0xFFFFFFFF


@covers("lr.w", "sc.w", "lr.d", "sc.d", "amoadd.w", "amoswap.d", "amomaxu.d", "amoor.w",
        "amominu.w")
def test_misaligned_atomics_fault(accel):
    """LR/SC/AMOs need natural alignment: a misaligned one stops with FAULT_MISALIGNED at
    its address and changes nothing (Linux: SIGBUS)."""
    MIS = FAULT_MISALIGNED
    B = DATA_BASE + 0x100
    steps = [
        (ins("lr.w", rd=13, rs1=20, aq=0, rl=0), MIS, B + 2),
        (ins("sc.w", rd=13, rs1=20, rs2=5, aq=0, rl=0), MIS, B + 2),
        (ins("amoadd.w", rd=13, rs1=21, rs2=5, aq=0, rl=0), MIS, B + 1),
        (ins("amoor.w", rd=21, rs1=21, rs2=5, aq=0, rl=0), MIS, B + 1),    # rd == rs1
        (ins("amominu.w", rd=13, rs1=22, rs2=5, aq=0, rl=0), MIS, B + 6),
        (ins("lr.d", rd=13, rs1=23, aq=0, rl=0), MIS, B + 4),
        (ins("sc.d", rd=13, rs1=23, rs2=5, aq=0, rl=0), MIS, B + 4),
        (ins("amoswap.d", rd=13, rs1=23, rs2=5, aq=0, rl=0), MIS, B + 4),
        (ins("amomaxu.d", rd=13, rs1=21, rs2=5, aq=0, rl=0), MIS, B + 1),
    ]
    regs = {20: B + 2, 21: B + 1, 22: B + 6, 23: B + 4}
    check_precise_faults(accel, steps, regs, data=bytes(range(256)) * 2)


@covers("amoadd.w", "amoswap.d", "amoxor.d", "amomin.w")
def test_atomics_to_read_only_memory_fault(accel):
    """An AMO needs write permission even though it reads first: on the r-x code page
    it faults as a store at its address."""
    S = FAULT_STORE
    steps = [
        (ins("amoadd.w", rd=13, rs1=12, rs2=5, aq=0, rl=0), S, CODE_BASE),
        (ins("amoswap.d", rd=12, rs1=12, rs2=5, aq=0, rl=0), S, CODE_BASE),
        (ins("amoxor.d", rd=13, rs1=14, rs2=5, aq=0, rl=0), S, CODE_BASE + 8),
        (ins("amomin.w", rd=0, rs1=14, rs2=0, aq=0, rl=0), S, CODE_BASE + 8),
    ]
    check_precise_faults(accel, steps, {12: CODE_BASE, 14: CODE_BASE + 8})


@covers("lr.w", "sc.w")
def test_sc_to_read_only_memory_faults(accel):
    """LR.W may read the code page; the SC that would then store there faults."""
    a = Asm()
    a("lr.w", rd=10, rs1=12, aq=0, rl=0)
    sc_pc = a.pc
    a("sc.w", rd=11, rs1=12, rs2=5, aq=0, rl=0)
    a.ecall()
    code = a.build()
    r = run(accel, a, x={12: CODE_BASE, 5: 0, 11: 0x99})
    assert r.x[10] == sext32(int.from_bytes(code[:4], "little"))
    assert (r.why, r.exit.fault_kind, r.exit.fault_addr) == ("fault", FAULT_STORE, CODE_BASE)
    assert r.pc == sc_pc and r.x[11] == 0x99 and r.exit.executed == 1


@covers("sd", "ld", "amoor.d", "lr.d", "sc.d", "sb")
def test_read_only_data_page(accel):
    """On a read-only data page (no translated code there) loads work; stores, AMOs and an
    SC that would store fault as stores at their address; nothing changes."""
    RO = DATA_BASE + PAGE
    a = Asm()
    a("ld", rd=10, rs1=5, imm=8)
    a("lr.d", rd=11, rs1=5, aq=0, rl=0)
    fault_pcs = []
    for name, ops in (("sd", dict(rs1=5, rs2=6, imm=16)), ("sb", dict(rs1=7, rs2=6, imm=0)),
                      ("amoor.d", dict(rd=12, rs1=5, rs2=6, aq=0, rl=0)),
                      ("sc.d", dict(rd=13, rs1=5, rs2=6, aq=0, rl=0))):
        fault_pcs.append((a.pc, name))
        a(name, **ops)
    a.ecall()
    data = bytes(PAGE) + bytes(range(256)) * 16

    def setup(m):
        m.mem.protect(RO, PAGE, PROT_READ)
    with machine(accel, a, x={5: RO, 6: M64, 7: RO - 1 + 0x800, 12: 3, 13: 4},
                 data=data) as m:
        setup(m)
        addrs = {"sd": RO + 16, "sb": RO - 1 + 0x800, "amoor.d": RO, "sc.d": RO}
        for k, (pc, name) in enumerate(fault_pcs):
            ex = m.run(100)
            assert (ex.name, ex.fault_kind, ex.fault_addr, m.cpu.pc) == \
                ("fault", FAULT_STORE, addrs[name], pc), name
            assert ex.executed == (2 if k == 0 else 0), name
            m.cpu.pc = pc + 4
        assert m.run(100).name == "ecall"
        assert m.cpu.x[10] == int.from_bytes(bytes(range(8, 16)), "little")
        assert m.cpu.x[11] == int.from_bytes(bytes(range(8)), "little")
        assert (m.cpu.x[12], m.cpu.x[13]) == (3, 4)
        assert m.mem.peek(DATA_BASE, len(data)) == data


@covers("amoadd.d", "amoswap.w", "amomaxu.w")
def test_atomics_to_unmapped_memory_fault_as_stores(accel):
    """An AMO to unmapped memory raises a store/AMO fault (the ISA has no load fault for
    AMOs; ir/state.py: FAULT_STORE covers 'store (or AMO)')."""
    S = FAULT_STORE
    steps = [
        (ins("amoadd.d", rd=13, rs1=1, rs2=5, aq=0, rl=0), S, UNMAPPED),
        (ins("amoswap.w", rd=13, rs1=8, rs2=5, aq=0, rl=0), S, 0),
        (ins("amomaxu.w", rd=13, rs1=11, rs2=5, aq=0, rl=0), S, 1 << 38),
    ]
    check_precise_faults(accel, steps, FAULT_REGS)


def _straddling_program(first_half_compressed: bool) -> Asm:
    """jal to CODE_BASE + 4094, where either a 4-byte addi straddles the page boundary or
    a c.addi ends the page and the next instruction starts the next page."""
    a = Asm()
    a("jal", rd=0, imm="L")
    while a.pc < CODE_BASE + PAGE - 2:
        a.word(0, size=2)                        # never executed
    a.label("L")
    if first_half_compressed:
        a("c.li", rd=5, imm=5)
    else:
        a("addi", rd=5, rs1=0, imm=5)
    a("c.addi", rd=5, imm=1)
    a.ecall()
    return a


@covers("jal", "addi", "c.addi", "c.li")
def test_instructions_across_a_code_page_boundary(accel):
    """A 4-byte instruction straddling two code pages executes; if the second page is not
    mapped its fetch faults at the page boundary with pc at the instruction."""
    for compressed in (False, True):
        a = _straddling_program(compressed)
        r = run(accel, a)
        assert (r.why, r.x[5], r.exit.executed) == ("ecall", 6, 3), compressed
        r = run(accel, a, setup=lambda m: m.mem.unmap(CODE_BASE + PAGE, PAGE))
        assert (r.why, r.exit.fault_kind, r.exit.fault_addr) == \
            ("fault", FAULT_FETCH, CODE_BASE + PAGE), compressed
        if compressed:     # the c.li on the first page ran; the fetch after it faults
            assert (r.pc, r.x[5], r.exit.executed) == (CODE_BASE + PAGE, 5, 2)
        else:
            assert (r.pc, r.x[5], r.exit.executed) == (CODE_BASE + PAGE - 2, 0, 1)
