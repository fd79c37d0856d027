"""Directed tests of the system instructions on every accelerator: Zicsr on the FP CSRs and
the user counters, illegal CSR accesses, fence / fence.i, ebreak, illegal and reserved
encodings (compressed included); and the check that the directed tests together cover
every instruction of the decoder's TABLE.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

from dbtlab.ir.state import EXIT_ILLEGAL
from dbtlab.runtime.linux.memory import PROT_EXEC, PROT_READ, PROT_WRITE
from dbtlab.translator.decode import BY_NAME, TABLE, decode, encode
from tests.ir import directed_kit as K
from tests.ir.directed_kit import (CODE_BASE, CYCLE, FCSR, FFLAGS, FRM, INSTRET, TIME, Asm,
                                   check_precise_stops, covers, ins, machine, run)


@covers("csrrw", "csrrs", "csrrc", "csrrwi", "csrrsi", "csrrci")
def test_fp_csrs_read_modify_write(accel):
    """Each instruction returns the old value and writes old|src, old&~src or src, masked to
    the CSR's width (fflags 5 bits, frm 3, fcsr 8); rs1 = x0 or uimm = 0 for csrrs/csrrc
    means no write; csrrw with rd = x0 writes without reading. Values worked by hand."""
    a = Asm()
    steps = [  # (instruction, rd, expected old value)
        (ins("csrrw", rd=10, rs1=5, csr=FFLAGS), 10, 0x15),       # fflags = 0xFF & 0x1F
        (ins("csrrs", rd=11, rs1=0, csr=FFLAGS), 11, 0x1F),
        (ins("csrrc", rd=12, rs1=6, csr=FFLAGS), 12, 0x1F),       # clear 0x3 -> 0x1C
        (ins("csrrs", rd=13, rs1=7, csr=FFLAGS), 13, 0x1C),       # set 0x1 -> 0x1D
        (ins("csrrwi", rd=14, imm=2, csr=FFLAGS), 14, 0x1D),      # -> 0x02
        (ins("csrrsi", rd=15, imm=0x11, csr=FFLAGS), 15, 0x02),   # -> 0x13
        (ins("csrrci", rd=16, imm=0x3, csr=FFLAGS), 16, 0x13),    # -> 0x10
        (ins("csrrsi", rd=17, imm=0, csr=FFLAGS), 17, 0x10),      # no write
        (ins("csrrci", rd=18, imm=0, csr=FFLAGS), 18, 0x10),      # no write
        (ins("csrrw", rd=19, rs1=8, csr=FRM), 19, 3),             # frm = 0xFC & 7 = 4
        (ins("csrrs", rd=20, rs1=0, csr=FRM), 20, 4),
        (ins("csrrwi", rd=21, imm=1, csr=FRM), 21, 4),            # -> 1
        (ins("csrrsi", rd=22, imm=6, csr=FRM), 22, 1),            # -> 7
        (ins("csrrci", rd=23, imm=5, csr=FRM), 23, 7),            # -> 2
        (ins("csrrs", rd=24, rs1=0, csr=FCSR), 24, (2 << 5) | 0x10),
        (ins("csrrw", rd=25, rs1=9, csr=FCSR), 25, 0x50),         # fcsr = 0xFF
        (ins("csrrs", rd=26, rs1=0, csr=FRM), 26, 7),
        (ins("csrrc", rd=27, rs1=28, csr=FCSR), 27, 0xFF),        # clear 0xE1 -> 0x1E
        (ins("csrrs", rd=29, rs1=0, csr=FRM), 29, 0),
        (ins("csrrsi", rd=1, imm=1, csr=FCSR), 1, 0x1E),          # -> 0x1F
        (ins("csrrc", rd=2, rs1=0, csr=FCSR), 2, 0x1F),           # no write
        (ins("csrrw", rd=0, rs1=7, csr=FCSR), None, None),        # write only: fcsr = 1
        (ins("csrrs", rd=3, rs1=0, csr=FFLAGS), 3, 0x01),
        (ins("csrrwi", rd=0, imm=0x1F, csr=FRM), None, None),     # frm = 0x1F & 7 = 7
        (ins("csrrwi", rd=4, imm=0x0A, csr=FFLAGS), 4, 0x01),     # fflags = 0x0A
    ]
    for insn, _, _ in steps:
        a(insn[0], **insn[1])
    a.ecall()
    x = {5: 0xFF, 6: 0x3, 7: 0x1, 8: 0xFFFFFFFFFFFFFFFC, 9: 0xFFFFFFFF, 28: 0xE1}
    r = run(accel, a, x=x, fflags=0x15, frm=3)
    assert r.why == "ecall" and r.exit.executed == len(steps)
    got = {rd: r.x[rd] for _, rd, _ in steps if rd is not None}
    want = {rd: v for _, rd, v in steps if rd is not None}
    assert got == want
    assert (r.frm, r.fflags) == (7, 0x0A)
    assert r.x[5:10] == [0xFF, 0x3, 0x1, 0xFFFFFFFFFFFFFFFC, 0xFFFFFFFF]   # sources intact


@covers("csrrs", "csrrsi", "csrrci", "csrrc", "addi", "c.addi", "bne", "fadd.d")
def test_counters(accel):
    """instret reads the number of instructions retired before the reading instruction,
    across runs split by the budget, blocks, loops and instructions the JIT hands to the
    interpreter; cycle and time are readable and do not go backwards."""
    a = Asm()
    a("addi", rd=5, rs1=0, imm=1)
    a("addi", rd=5, rs1=5, imm=1)
    a("addi", rd=5, rs1=5, imm=1)
    a("csrrs", rd=10, rs1=0, csr=INSTRET)           # 3
    a("c.addi", rd=5, imm=1)
    a("csrrsi", rd=11, imm=0, csr=INSTRET)          # 5
    a("csrrs", rd=12, rs1=0, csr=CYCLE)
    a("csrrs", rd=13, rs1=0, csr=TIME)
    a("addi", rd=6, rs1=0, imm=4)
    a.label("loop")
    a("addi", rd=6, rs1=6, imm=-1)
    a("bne", rs1=6, rs2=0, imm="loop")              # 8 instructions in the loop
    a("csrrci", rd=14, imm=0, csr=INSTRET)          # 9 + 8 = 17
    a("fadd.d", rd=1, rs1=2, rs2=3, rm=4)           # static RMM: the JIT's interpreter exit
    a("csrrc", rd=15, rs1=0, csr=INSTRET)           # 19
    a("csrrs", rd=16, rs1=0, csr=CYCLE)
    a("csrrs", rd=17, rs1=0, csr=TIME)
    a("csrrs", rd=18, rs1=0, csr=INSTRET)           # 22
    a.ecall()
    for budgets in ([10 ** 6], [4, 3, 1, 7, 10 ** 6], [1] * 40):
        with machine(accel, a) as m:
            for b in budgets:
                ex = m.run(b)
                if ex.name != "budget":
                    break
            assert ex.name == "ecall" and m.instret == 23, (budgets, ex)
            x = list(m.cpu.x)
        assert (x[10], x[11], x[14], x[15], x[18]) == (3, 5, 17, 19, 22), budgets
        assert x[16] >= x[12] and x[17] >= x[13], budgets


@covers("fence", "fence.i", "addi")
def test_fences(accel):
    """fence (any pred/succ/fm, e.g. fence.tso) and fence.i are accepted and do nothing
    visible besides ordering; execution goes on after them."""
    a = Asm()
    a("addi", rd=5, rs1=0, imm=1)
    a("fence", fm=0, pred=0xF, succ=0xF, rs1=0, rd=0)
    a("fence", fm=8, pred=0x3, succ=0x3, rs1=0, rd=0)        # fence.tso
    a("fence", fm=0, pred=0x1, succ=0x2, rs1=0, rd=0)
    a("fence.i", imm=0, rs1=0, rd=0)
    a("addi", rd=5, rs1=5, imm=1)
    a("fence.i", imm=0, rs1=0, rd=0)
    a("fence.i", imm=0, rs1=0, rd=0)
    a("addi", rd=5, rs1=5, imm=1)
    a.ecall()
    r = run(accel, a)
    assert r.why == "ecall" and r.exit.executed == 9 and r.x[5] == 3


@covers("fence.i", "sw", "addi")
def test_fence_i_after_modifying_code(accel):
    """Code that rewrites an instruction ahead of it and executes fence.i runs the new
    instruction (a writable code page, as a JIT guest would map it)."""
    a = Asm()
    a("sw", rs1=6, rs2=7, imm=0)                    # x6 = address of 'target'
    a("fence.i", imm=0, rs1=0, rd=0)
    a.label("target")
    a("addi", rd=10, rs1=0, imm=1)
    a.ecall()
    a.build()
    new = encode("addi", rd=10, rs1=0, imm=2)
    r = run(accel, a, x={6: a.addr("target"), 7: new},
            code_prot=PROT_READ | PROT_WRITE | PROT_EXEC)
    assert r.why == "ecall" and r.x[10] == 2 and r.exit.executed == 3


# -- stops ---------------------------------------------------------------------------------

@covers("ebreak", "c.ebreak")
def test_ebreak(accel):
    """ebreak and c.ebreak stop the run at themselves, after the instructions before."""
    for name in ("ebreak", "c.ebreak"):
        a = Asm()
        a("addi", rd=5, rs1=0, imm=7)
        a("c.addi", rd=5, imm=1)
        pc = a.pc
        a(name)
        a("addi", rd=5, rs1=0, imm=0)
        a.ecall()
        r = run(accel, a)
        assert (r.why, r.pc, r.exit.executed, r.x[5]) == ("ebreak", pc, 2, 8), name


@covers("ecall", "c.addi")
def test_ecall(accel):
    a = Asm()
    a("c.addi", rd=10, imm=3)
    a.ecall()
    r = run(accel, a, x={10: 4, 17: 93})
    assert (r.why, r.pc, r.exit.executed, r.x[10], r.x[17]) == ("ecall", CODE_BASE + 2, 1, 7,
                                                                93)


#: reserved compressed encodings, worked out by hand from the RVC tables
RESERVED_RVC = {
    "all-zero parcel (c.addi4spn x8, 0)": 0x0000,
    "c.addi4spn with imm 0 (rd' = x9)": 0x0004,
    "c.lui x5 with imm 0": 0x6281,
    "c.addi16sp with imm 0": 0x6101,
    "c.addiw rd = x0": 0x2005,
    "c.lwsp rd = x0": 0x4002,
    "c.ldsp rd = x0": 0x6002,
    "c.jr rs1 = x0": 0x8002,
}
ILLEGAL_32 = {
    "all ones": 0xFFFFFFFF,
    "custom-0 opcode": 0x0000000B,
    "add with funct7 = 2": 0x04000033,
    "mret": 0x30200073,
    "sret": 0x10200073,
    "ecall with rd = x1": 0x000000F3,
    "slli with funct6 = 1": 0x04001013,
    "fadd.q (Q is not in RV64GC)": 0x06000053,
    "lr.w with rs2 != 0": 0x1015202F,
    "csrrw with an unused funct3 (4)": 0x00004073,
}


#: each reserved compressed word, the same word with the reserved field made legal, the
#: mnemonic that then decodes, and the operands with which the encoder refuses it
RVC_NEIGHBOURS = [
    (0x0004, 0x0004 | 1 << 6, "c.addi4spn", dict(rd=9, imm=0)),    # nzuimm[2] = bit 6
    (0x6281, 0x6281 | 1 << 2, "c.lui", dict(rd=5, imm=0)),         # nzimm[12] = bit 2
    (0x6101, 0x6101 | 1 << 6, "c.addi16sp", dict(imm=0)),          # nzimm[4] = bit 6
    (0x2005, 0x2005 | 1 << 7, "c.addiw", dict(rd=0, imm=1)),       # rd = x1
    (0x4002, 0x4002 | 1 << 7, "c.lwsp", dict(rd=0, imm=0)),
    (0x6002, 0x6002 | 1 << 7, "c.ldsp", dict(rd=0, imm=0)),
    (0x8002, 0x8002 | 1 << 7, "c.jr", dict(rs1=0)),
]


def test_reserved_encodings_decode_as_illegal():
    """The hand-written words are what their names say: made legal in the reserved field
    they decode as the instruction; as written they decode as illegal, and the encoder
    refuses to produce them."""
    for word, legal, name, ops in RVC_NEIGHBOURS:
        assert decode(legal).mnemonic == name, hex(legal)
        with pytest.raises(ValueError):
            encode(name, **ops)
    for w in list(RESERVED_RVC.values()) + list(ILLEGAL_32.values()):
        assert decode(w).is_illegal, hex(w)


def test_illegal_and_reserved_encodings_stop_precisely(accel):
    """Each stops the run with an illegal-instruction exit at its own pc (2-byte aligned
    after compressed code too), the word in the exit, and nothing changed."""
    steps = [(w, "illegal", 0, 0) for w in RESERVED_RVC.values()]
    steps += [(w, "illegal", 0, 0) for w in ILLEGAL_32.values()]
    check_precise_stops(accel, steps)


def test_illegal_after_compressed_code(accel):
    a = Asm()
    a("c.li", rd=5, imm=1)
    pc = a.pc
    a.word(0xFFFFFFFF)
    a.ecall()
    r = run(accel, a)
    assert (r.why, r.pc, r.exit.executed, r.exit.word, r.x[5]) == \
        ("illegal", CODE_BASE + 2, 1, 0xFFFFFFFF, 1)
    assert r.exit.reason == EXIT_ILLEGAL and pc == CODE_BASE + 2


def test_illegal_csr_accesses(accel):
    """An unknown CSR (machine-level mstatus, RV32-only cycleh, hpmcounter3), any write to
    a read-only counter, even of a value that changes nothing (csrrs with a nonzero rs1
    register holding 0), stops with an illegal-instruction exit and changes nothing."""
    steps = [
        (ins("csrrs", rd=5, rs1=0, csr=0x300), "illegal", 0, 0),      # mstatus
        (ins("csrrw", rd=5, rs1=6, csr=0x300), "illegal", 0, 0),
        (ins("csrrs", rd=5, rs1=0, csr=0xC80), "illegal", 0, 0),      # cycleh: RV32 only
        (ins("csrrs", rd=5, rs1=0, csr=0x7C0), "illegal", 0, 0),
        (ins("csrrw", rd=5, rs1=6, csr=CYCLE), "illegal", 0, 0),
        (ins("csrrw", rd=0, rs1=0, csr=INSTRET), "illegal", 0, 0),
        (ins("csrrwi", rd=5, imm=0, csr=TIME), "illegal", 0, 0),
        (ins("csrrs", rd=5, rs1=7, csr=CYCLE), "illegal", 0, 0),      # x7 = 0, still a write
        (ins("csrrc", rd=5, rs1=7, csr=INSTRET), "illegal", 0, 0),
        (ins("csrrsi", rd=5, imm=1, csr=TIME), "illegal", 0, 0),
        (ins("csrrci", rd=5, imm=4, csr=CYCLE), "illegal", 0, 0),
    ]
    check_precise_stops(accel, steps, {7: 0})


# -- coverage ------------------------------------------------------------------------------

def test_every_instruction_has_a_directed_test():
    """The mnemonics the directed tests declare (and, when they run, prove they executed)
    are exactly the decoder's TABLE: a new instruction needs a directed test."""
    import tests.ir as pkg
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name.startswith("test_directed_"):
            importlib.import_module(f"tests.ir.{mod.name}")
    table = {e.name for e in TABLE}
    assert table == set(BY_NAME)
    missing = sorted(table - K.COVERAGE.keys())
    assert not missing, f"no directed test covers: {missing}"
    assert set(K.COVERAGE) <= table
    assert len(table) == len(TABLE) >= 190
