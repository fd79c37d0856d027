"""The LLVM accelerator's own machinery: exact instruction budgets, chaining on and off,
self-modifying code and invalidation, precise host faults, optimisation levels."""

from __future__ import annotations

import pytest

import dbtlab
from dbtlab.runtime.oracle.bare import CODE_BASE, DATA_BASE, BareMachine
from dbtlab.runtime.config import RunConfig
from dbtlab.runtime.machine import Machine
from dbtlab.runtime.linux.memory import PROT_EXEC, PROT_READ, PROT_WRITE
from dbtlab.translator.decode import encode
from tests.conftest import ACCELS, GUESTS

HELLO = str(GUESTS / "bin/hello")
SHA = str(GUESTS / "bin/sha256")


def _state_after(accel: str, program: str, args: list[str], n: int):
    m = Machine(program, [program, *args], config=RunConfig(accel=accel, max_insns=n),
                stdout=open("/dev/null", "w").fileno())
    try:
        res = m.run()
        return res.stopped, m.instret, m.cpu.arch()
    finally:
        m.close()


@pytest.mark.parametrize("n", [1, 2, 3, 17, 100, 1001, 5000])
def test_max_insns_is_exact_and_engines_agree(n):
    runs = {a: _state_after(a, HELLO, ["x"], n) for a in ACCELS}
    for stopped, instret, _ in runs.values():
        assert stopped and instret == n
    states = [s for _, _, s in runs.values()]
    assert all(s == states[0] for s in states)


def test_nochain_gives_the_same_results_without_chain_exits():
    chained = dbtlab.run(SHA, ["2048", "2"], accel="llvm")
    plain = dbtlab.run(SHA, ["2048", "2"], accel="llvm", debug=frozenset({"nochain"}))
    assert plain.stdout == chained.stdout and plain.instret == chained.instret
    assert plain.stats["links"] == 0 and "chain" not in plain.stats["exits"]
    assert chained.stats["links"] > 0


def test_exits_are_counted_by_reason():
    r = dbtlab.run(SHA, ["2048", "2"], accel="llvm")
    ex = r.stats["exits"]
    assert ex["ecall"] >= 5 and ex["miss"] > 10
    # a block reports itself hot once at most (at DBTLAB_REGIONS=1: every block, once)
    assert ex.get("hot", 0) <= r.stats["blocks"]
    # the dispatcher stays native otherwise: LLVM modules link their batch's edges at once,
    # a stencil block's edge goes through Python once (to translate or link its target)
    assert sum(ex.values()) - ex.get("hot", 0) < 300 + 3 * r.stats.get("stencil_blocks", 0)


@pytest.mark.parametrize("opt", [1, 2])
def test_optimised_blocks_give_the_same_results(opt):
    base = dbtlab.run(SHA, ["2048", "2"], accel="llvm")
    r = dbtlab.run(SHA, ["2048", "2"], accel="llvm", opt_level=opt)
    assert (r.stdout, r.status, r.instret) == (base.stdout, base.status, base.instret)


# ---- self-modifying code ------------------------------------------------------------

RWX = PROT_READ | PROT_WRITE | PROT_EXEC


def _li(rd: int, value: int) -> list[int]:
    """lui+addiw materialising a 32-bit value."""
    lo = ((value & 0xFFF) ^ 0x800) - 0x800
    hi = (value - lo) & 0xFFFFFFFF
    hi = hi - (1 << 32) if hi >> 31 else hi
    return [encode("lui", rd=rd, imm=hi), encode("addiw", rd=rd, rs1=rd, imm=lo)]


@pytest.mark.parametrize("accel", ACCELS)
def test_store_into_the_running_block_takes_effect(accel):
    """The store rewrites an instruction later in its own block; the new one runs."""
    new = encode("addi", rd=10, rs1=0, imm=42)
    code = (_li(5, new) +                                   # t0 = new instruction
            [encode("auipc", rd=6, imm=0),                  # t1 = address of this insn
             encode("sw", rs1=6, rs2=5, imm=12),            # overwrite insn at t1+12
             encode("addi", rd=11, rs1=0, imm=1),
             encode("addi", rd=10, rs1=0, imm=7),           # <- t1+12: becomes a0 = 42
             encode("ecall")])
    m = BareMachine(code, accel=accel, code_prot=RWX)
    try:
        ex = m.run()
        assert ex.name == "ecall"
        assert (m.cpu.x[10], m.cpu.x[11]) == (42, 1)
        assert ex.executed == len(code) - 1
    finally:
        m.close()


@pytest.mark.parametrize("accel", ACCELS)
def test_code_rewritten_between_runs(accel):
    """A loop whose body is patched from Python (as a syscall or loader would): the chained,
    translated old body must not run again."""
    body = CODE_BASE + 8
    code = [encode("addi", rd=10, rs1=0, imm=0),
            encode("addi", rd=11, rs1=0, imm=5),
            encode("addi", rd=10, rs1=10, imm=1),           # body: a0 += 1
            encode("addi", rd=11, rs1=11, imm=-1),
            encode("bne", rs1=11, rs2=0, imm=-8),
            encode("ecall")]
    m = BareMachine(code, accel=accel, code_prot=RWX)
    try:
        assert m.run().name == "ecall" and m.cpu.x[10] == 5
        m.mem.write(body, encode("addi", rd=10, rs1=10, imm=100).to_bytes(4, "little"))
        m.cpu.pc = CODE_BASE
        assert m.run().name == "ecall" and m.cpu.x[10] == 500
        if accel == "llvm":
            assert m.accel.stats.invalidated >= 1
    finally:
        m.close()


# ---- precise faults ------------------------------------------------------------------

@pytest.mark.parametrize("accel", ACCELS)
def test_fault_in_the_middle_of_a_block_is_precise(accel):
    code = [encode("addi", rd=10, rs1=0, imm=1),
            encode("addi", rd=11, rs1=0, imm=2),
            encode("ld", rd=12, rs1=13, imm=8),       # a3 points at unmapped memory
            encode("addi", rd=14, rs1=0, imm=3),
            encode("ecall")]
    m = BareMachine(code, accel=accel)
    try:
        m.cpu.x[12] = 77
        m.cpu.x[13] = 0x200000
        ex = m.run()
        assert (ex.name, ex.fault_addr, ex.executed) == ("fault", 0x200008, 2)
        assert m.cpu.pc == CODE_BASE + 8
        assert (m.cpu.x[10], m.cpu.x[11], m.cpu.x[12], m.cpu.x[14]) == (1, 2, 77, 0)
    finally:
        m.close()


@pytest.mark.parametrize("accel", ACCELS)
def test_store_to_read_only_memory_faults_without_writing(accel):
    code = [encode("addi", rd=5, rs1=0, imm=9), encode("sd", rs1=6, rs2=5, imm=0),
            encode("ecall")]
    m = BareMachine(code, accel=accel)
    try:
        m.cpu.x[6] = CODE_BASE
        ex = m.run()
        assert (ex.name, ex.fault_addr, m.cpu.pc, m.cpu.x[5]) == ("fault", CODE_BASE,
                                                                  CODE_BASE + 4, 9)
        assert m.mem.peek(CODE_BASE, 4) == code[0].to_bytes(4, "little")
    finally:
        m.close()


@pytest.mark.parametrize("accel", ACCELS)
def test_addresses_beyond_the_address_space_fault(accel):
    code = [encode("lb", rd=10, rs1=11, imm=0), encode("ecall")]
    for addr in (1 << 38, (1 << 64) - 8, DATA_BASE + (1 << 40)):
        m = BareMachine(code, accel=accel)
        try:
            m.cpu.x[11] = addr
            ex = m.run()
            assert (ex.name, ex.fault_addr) == ("fault", addr)
        finally:
            m.close()
